/**
 * How the cluster code runs its work: loops that sleep between rounds and wake
 * at once on stop, background tasks whose failures are logged (never thrown
 * into a timer), and one queue for everything that changes node status, so
 * that two failovers, or a failover and an attach, never interleave.
 */
import type { Logger } from '../log.js';

export class ClusterTasks {
  private halted = false;
  /** Pending wake-ups of sleeping loops (resolved early by halt()). */
  private readonly sleepers = new Set<() => void>();
  private readonly background = new Set<Promise<unknown>>();
  private serialTail: Promise<unknown> = Promise.resolve();

  constructor(private readonly log: Logger) {}

  get stopped(): boolean {
    return this.halted;
  }

  /** Resolves after `ms`, or at once when stopping. */
  sleep(ms: number): Promise<void> {
    if (this.halted) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(t);
        this.sleepers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, Math.max(0, ms));
      this.sleepers.add(wake);
    });
  }

  /** Run in the background; a rejection is logged. stop() waits for it. */
  track(p: Promise<unknown>): void {
    const q = p.catch((e: unknown) =>
      this.log.error({ err: (e as Error)?.stack ?? String(e) }, 'cluster manager task failed'),
    );
    this.background.add(q);
    void q.finally(() => this.background.delete(q));
  }

  /** Run status-changing work one at a time. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.serialTail.then(fn, fn);
    this.serialTail = run.catch(() => undefined);
    return run;
  }

  /** From now on `stopped` is true and every sleeping loop wakes up. */
  halt(): void {
    this.halted = true;
    for (const wake of [...this.sleepers]) wake();
  }

  /** Wait for the background tasks and `others` to settle, at most 5 s. */
  async drain(others: Iterable<Promise<unknown>>): Promise<void> {
    const all = Promise.allSettled([...this.background, ...others]);
    await Promise.race([all, new Promise((r) => setTimeout(r, 5000).unref())]);
  }
}
