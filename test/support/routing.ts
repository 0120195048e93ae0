/**
 * Helpers for the routing integration tests: map a backend port to its
 * DevCluster node id, and read pgrelay's per-node statement log
 * (`log_per_node_statement = on`: one JSON line per statement and node, with
 * fields node, backendPid, statement and msg 'statement').
 */
import type { DevCluster } from '../../dev/devcluster.js';
import { endPg, pgClient } from './clients.js';
import type { ProxyHandle } from './proxy.js';

/** DevCluster node id of the backend listening on `port` (throws on an unknown port). */
export function nodeOfPort(cluster: DevCluster, port: number | string | null | undefined): number {
  const p = Number(port);
  const n = cluster.nodes.find((x) => x.port === p);
  if (!n)
    throw new Error(
      `no DevCluster node listens on port ${String(port)} (nodes: ${cluster.nodes.map((x) => `${x.id}=${x.port}`).join(', ')})`,
    );
  return n.id;
}

export interface StatementEntry {
  node: number;
  backendPid: number;
  statement: string;
}

const parsed = new WeakMap<ProxyHandle, { offset: number; entries: StatementEntry[] }>();

/**
 * Every `statement` log line pgrelay wrote so far, in order. pgrelay logs JSON
 * lines to stdout by default; this reads `logs()` (both streams, so that
 * log_destination = 'stderr' works too) line by line, incrementally.
 */
export function statementLog(proxy: ProxyHandle): StatementEntry[] {
  let st = parsed.get(proxy);
  if (!st) {
    st = { offset: 0, entries: [] };
    parsed.set(proxy, st);
  }
  const all = proxy.logs();
  const end = all.lastIndexOf('\n');
  if (end >= st.offset) {
    for (const line of all.slice(st.offset, end).split('\n')) {
      if (!line.includes('"statement"')) continue;
      try {
        const l = JSON.parse(line) as Record<string, unknown>;
        if (l.msg !== 'statement') continue;
        st.entries.push({ node: Number(l.node), backendPid: Number(l.backendPid), statement: String(l.statement) });
      } catch {
        // not JSON
      }
    }
    st.offset = end + 1;
  }
  return st.entries;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let barrierSeq = 0;

/**
 * Make the statement log complete up to now: run a marker SELECT through a new
 * session of `proxy` and wait for its log line; resolves with the marker's
 * index in statementLog(proxy).
 *
 * pgrelay writes a statement's per-node line when it sends the statement to
 * that node, before the reply can reach the client, and all lines go through one
 * ordered stream. So every line of a statement whose reply the test already has
 * comes before the marker's line: reading the entries before the marker misses
 * nothing — unlike waiting some milliseconds, which misses late lines on a
 * loaded machine (e.g. a statement also sent to the wrong node). Needs
 * log_per_node_statement = on.
 */
export async function logBarrier(proxy: ProxyHandle, timeoutMs = 20_000): Promise<number> {
  const marker = `SELECT 'pgrelay-log-barrier-${process.pid}-${++barrierSeq}' AS barrier`;
  const c = await pgClient({ host: proxy.host, port: proxy.port }, { application_name: 'pgrelay-test-barrier' });
  try {
    await c.query(marker);
  } finally {
    await endPg(c);
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = statementLog(proxy).findIndex((e) => e.statement === marker);
    if (i >= 0) return i;
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for the log barrier ${marker} (is log_per_node_statement on?)\n--- logs ---\n${proxy.logs().slice(-3000)}`,
      );
    await sleep(10);
  }
}

/**
 * Nodes on which pgrelay logged `statement` (exact text) among the statement
 * log entries numbered >= `since`, sorted ascending. Waits for the positive
 * evidence (at least `min` entries, default 1; fails after timeoutMs), then for
 * a log barrier, so that an entry for a further node (e.g. a read also sent to
 * the primary) cannot be missed.
 */
export async function nodesOfStatement(
  proxy: ProxyHandle,
  statement: string,
  opts: { since?: number; min?: number; timeoutMs?: number } = {},
): Promise<number[]> {
  const since = opts.since ?? 0;
  const min = opts.min ?? 1;
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const find = (entries: StatementEntry[]): number[] =>
    entries
      .filter((e) => e.statement === statement)
      .map((e) => e.node)
      .sort((a, b) => a - b);
  const deadline = Date.now() + timeoutMs;
  while (find(statementLog(proxy).slice(since)).length < min) {
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${min} log line(s) of ${JSON.stringify(statement)}; have ${JSON.stringify(find(statementLog(proxy).slice(since)))}`,
      );
    await sleep(10);
  }
  const end = await logBarrier(proxy, timeoutMs);
  return find(statementLog(proxy).slice(since, end));
}

/** Counts of statement log entries per node (entries numbered >= since, optionally filtered). */
export function countPerNode(
  entries: StatementEntry[],
  filter: (e: StatementEntry) => boolean = () => true,
): Record<number, number> {
  const c: Record<number, number> = {};
  for (const e of entries) if (filter(e)) c[e.node] = (c[e.node] ?? 0) + 1;
  return c;
}

/**
 * Pearson chi-square goodness-of-fit p-value for observed counts vs expected
 * proportions (upper tail of the chi-square distribution, df = k - 1; exact
 * series for the regularized incomplete gamma function).
 */
export function chiSquareP(observed: number[], proportions: number[]): { chi2: number; df: number; p: number } {
  const n = observed.reduce((a, b) => a + b, 0);
  const sumP = proportions.reduce((a, b) => a + b, 0);
  let chi2 = 0;
  for (let i = 0; i < observed.length; i++) {
    const e = (n * proportions[i]) / sumP;
    chi2 += (observed[i] - e) ** 2 / e;
  }
  const df = observed.length - 1;
  return { chi2, df, p: 1 - lowerRegGamma(df / 2, chi2 / 2) };
}

function lowerRegGamma(s: number, x: number): number {
  if (x <= 0) return 0;
  // Series: P(s,x) = x^s e^-x / Gamma(s+1) * sum x^k / ((s+1)...(s+k))
  let term = 1 / s;
  let sum = term;
  for (let k = 1; k < 1000; k++) {
    term *= x / (s + k);
    sum += term;
    if (term < sum * 1e-15) break;
  }
  return Math.min(1, Math.exp(-x + s * Math.log(x) - logGamma(s)) * sum);
}

function logGamma(z: number): number {
  // Lanczos approximation (g = 7).
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (z < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * z)) - logGamma(1 - z);
  z -= 1;
  let x = c[0];
  for (let i = 1; i < 9; i++) x += c[i] / (z + i);
  const t = z + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(x);
}

/**
 * Length of the statement log with every line written so far included: the
 * index of a fresh log barrier (see logBarrier). Entries [0, result) are
 * complete, whatever the load.
 */
export async function settledLogLength(proxy: ProxyHandle, timeoutMs = 20_000): Promise<number> {
  return logBarrier(proxy, timeoutMs);
}
