/**
 * Waiting on state instead of sleeping: poll a probe until it holds, with a
 * deadline and the last value in the error. Use it for anything another
 * process does asynchronously (pg_stat_activity, pgrelay's admin views and
 * metrics, log lines); never a fixed sleep as synchronisation.
 */

export interface PollOptions {
  /** What is awaited, for the error message. */
  what: string;
  /** Deadline (default 20 s: generous for a loaded 2-core machine). */
  timeoutMs?: number;
  /** Pause between probes (default 50 ms). */
  intervalMs?: number;
}

/** Probe until accept(value) holds; resolves with that value, rejects after timeoutMs with the last value/error. */
export async function pollUntil<T>(
  probe: () => Promise<T> | T,
  accept: (v: T) => boolean,
  opts: PollOptions,
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  let last: string = 'no probe completed';
  for (;;) {
    try {
      const v = await probe();
      if (accept(v)) return v;
      last = `last value: ${describe(v)}`;
    } catch (e) {
      last = `last error: ${e instanceof Error ? e.message : String(e)}`;
    }
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what}; ${last}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}

function describe(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 2000 ? `${s.slice(0, 2000)}…` : s;
  } catch {
    return String(v);
  }
}
