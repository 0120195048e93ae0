/**
 * Driver conformance (issue 12): run one scenario against three targets and
 * require the same observable outcome from each.
 *
 * - `direct`: the primary itself (what the driver does against PostgreSQL);
 * - `lb-off`: pgrelay with load_balance_mode = off (everything on the primary);
 * - `lb-on`: pgrelay with load balancing on and weight 0 on the primary, 1 on
 *   every standby, so that whatever pgrelay balances surely runs on a standby.
 *
 * A scenario is a function of the target that returns a plain, normalised value
 * (rows, SQLSTATEs, the parameters the driver ended up with, whether the
 * connection is usable afterwards: never pids, times or ports). `conform()` runs
 * it once per target, the three at once (one after another with `sequential`,
 * for a scenario whose targets share state), each under a hard deadline (a hang
 * becomes the outcome `{ threw: 'timed out …' }` and the other targets still
 * run), closes whatever the runs left open, and then asserts that each pgrelay
 * target produced the direct outcome: one soft assertion per target, whose
 * message names it, so a run reports both targets' differences.
 * `CONFORM_DEBUG=1` prints every target's outcome and run time on stderr.
 *
 * Also here: node-postgres clients that record every ParameterStatus the driver
 * receives, a psql child with a handle (for signals), node children that must
 * exit by themselves, and the servers' view (pg_stat_activity, WAL replay) over
 * one probe connection per node kept for the file.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { expect } from 'vitest';
import pg from 'pg';
import { type DevCluster, killChildOnExit } from '../../dev/devcluster.js';
import { closeAllClients, nodeClient, withTimeout } from './clients.js';
import { pgTool, scrubPgEnv } from './env.js';
import { type ConfValue, type ProxyHandle, pgEnv, startProxy } from './proxy.js';
import {
  type BackendMessage,
  PROTOCOL_3_0,
  RawClient,
  type StartupResult,
  cancelRequest,
  closeAllRaw,
  errorFields,
  startupMessage,
} from './raw.js';
import { pollUntil } from './wait.js';

export type TargetName = 'direct' | 'lb-off' | 'lb-on';

export interface ConformanceTarget {
  readonly name: TargetName;
  /** The name as an SQL identifier part: direct, lb_off, lb_on. */
  readonly tag: string;
  readonly host: string;
  readonly port: number;
  /** pgrelay behind this target; undefined for `direct`. */
  readonly proxy: ProxyHandle | undefined;
}

export interface StartTargetsOptions {
  /** pgpool.conf keys for both pgrelays (e.g. pool_hba, pool_passwd). */
  config?: Record<string, ConfValue>;
  /** Bound of each pgrelay's start (default 30 s: two start at once, on a machine other test files load). */
  startTimeoutMs?: number;
}

/** The three targets of a file: the primary, and two pgrelays started for it. */
export class Targets {
  private constructor(
    readonly cluster: DevCluster,
    readonly list: readonly ConformanceTarget[],
  ) {}

  static async start(cluster: DevCluster, opts: StartTargetsOptions = {}): Promise<Targets> {
    const primary = cluster.node(cluster.primaryId);
    // Weight 0 on the primary, 1 on each standby: a balanced read never runs on the primary.
    const weights: Record<string, ConfValue> = {};
    for (const n of cluster.nodes) weights[`backend_weight${n.id}`] = n.id === cluster.primaryId ? 0 : 1;
    const [off, on] = await Promise.all([
      startProxy({
        cluster,
        config: { load_balance_mode: false, ...(opts.config ?? {}) },
        startTimeoutMs: opts.startTimeoutMs ?? 30_000,
      }),
      startProxy({
        cluster,
        config: { load_balance_mode: true, ...weights, ...(opts.config ?? {}) },
        startTimeoutMs: opts.startTimeoutMs ?? 30_000,
      }),
    ]);
    return new Targets(cluster, [
      { name: 'direct', tag: 'direct', host: primary.host, port: primary.port, proxy: undefined },
      { name: 'lb-off', tag: 'lb_off', host: off.host, port: off.port, proxy: off },
      { name: 'lb-on', tag: 'lb_on', host: on.host, port: on.port, proxy: on },
    ]);
  }

  get(name: TargetName): ConformanceTarget {
    const t = this.list.find((x) => x.name === name);
    if (!t) throw new Error(`no target ${name}`);
    return t;
  }

  /** Stop both pgrelays; close the probe connections to the nodes. */
  async stop(): Promise<void> {
    await Promise.all([...this.list.map((t) => t.proxy?.stop()), closeProbes()]);
  }
}

/** What a scenario run that threw (or timed out) becomes: its error, as text. */
export interface Threw {
  threw: string;
}

export type Outcome<T> = T | Threw;

export interface ConformOptions<T> {
  /** Hard bound of one target's run (default 20 s). */
  timeoutMs?: number;
  /**
   * Run the targets one after another, closing each run's leftovers before the
   * next starts, instead of all three at once. For a scenario whose targets
   * share state one target's run changes (ALTER DATABASE / ROLE … SET on the
   * file's database and role): everything else uses per-target tables, channels
   * and application_names, so that its runs are independent.
   */
  sequential?: boolean;
  /**
   * Assertions on the direct outcome: the scenario shows against PostgreSQL
   * itself what it claims to (a scenario that proves nothing directly would make
   * the comparison empty).
   */
  direct?: (outcome: T) => void;
}

/**
 * `SQLSTATE: message` of a driver error (node-postgres, postgres.js; a
 * postgres.js error code such as CONNECTION_CLOSED too), or its message. The
 * address a driver puts in a connection error is the target's, so it is
 * replaced by HOST:PORT.
 */
export function describeError(e: unknown): string {
  if (e !== null && typeof e === 'object') {
    const o = e as { code?: unknown; message?: unknown };
    const msg = (typeof o.message === 'string' ? o.message : String(e)).replace(
      /\b\d{1,3}(\.\d{1,3}){3}:\d+\b/g,
      'HOST:PORT',
    );
    return typeof o.code === 'string' && /^[0-9A-Z_]{5,}$/.test(o.code) ? `${o.code}: ${msg}` : msg;
  }
  return String(e);
}

/** The SQLSTATE of a driver error, or its message when it has none. */
export function errorCode(e: unknown): string {
  if (e !== null && typeof e === 'object') {
    const o = e as { code?: unknown; message?: unknown };
    if (typeof o.code === 'string' && /^[0-9A-Z]{5}$/.test(o.code)) return o.code;
    if (typeof o.message === 'string') return o.message;
  }
  return String(e);
}

/** Run `p`; its value as `{ ok: value }` or its error as `{ error: 'SQLSTATE: message' }`. */
export async function settle<T>(p: Promise<T>): Promise<{ ok: T } | { error: string }> {
  try {
    return { ok: await p };
  } catch (e) {
    return { error: describeError(e) };
  }
}

/** Closers of whatever a run opened besides the tracked clients (clients.ts) and raw sockets (raw.ts). */
const runClosers = new Set<() => Promise<void> | void>();

/** Register a closer run after the current target's run (also when it timed out). */
export function onRunEnd(fn: () => Promise<void> | void): void {
  runClosers.add(fn);
}

/** Close everything a run opened: tracked pg / postgres.js clients, raw sockets, registered closers. */
export async function closeRun(): Promise<void> {
  closeAllRaw();
  const closers = [...runClosers];
  runClosers.clear();
  await Promise.all(
    closers.map(async (c) => withTimeout(Promise.resolve(c()), 10_000, 'a run closer').catch(() => undefined)),
  );
  await closeLivePg();
  await closeAllClients();
}

/**
 * Run `scenario` against every target (in order: direct, lb-off, lb-on), then
 * require every outcome to equal the direct one. Resolves with the outcomes.
 */
export async function conform<T>(
  targets: Targets,
  scenario: (t: ConformanceTarget) => Promise<T>,
  opts: ConformOptions<T> = {},
): Promise<Record<TargetName, Outcome<T>>> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const out: Partial<Record<TargetName, Outcome<T>>> = {};
  const run = async (t: ConformanceTarget): Promise<void> => {
    const t0 = Date.now();
    try {
      // A copy taken now: the clean-up after the run must not change what it observed (arrays a
      // client keeps appending to, e.g. errors caused by terminating leftovers).
      out[t.name] = snapshot(await withTimeout(scenario(t), timeoutMs, `the scenario against ${t.name}`));
    } catch (e) {
      out[t.name] = { threw: describeError(e) };
    }
    // CONFORM_DEBUG=1: each target's run time and outcome on stderr (for writing and checking scenarios).
    if (process.env.CONFORM_DEBUG)
      process.stderr.write(`[conform] ${t.name}: ${Date.now() - t0} ms ${JSON.stringify(out[t.name], jsonSafe)}\n`);
  };
  if (opts.sequential) {
    for (const t of targets.list) {
      try {
        await run(t);
      } finally {
        await closeRun();
      }
    }
  } else {
    try {
      await Promise.all(targets.list.map(run));
    } finally {
      await closeRun();
    }
  }
  const all = out as Record<TargetName, Outcome<T>>;
  const direct = all.direct;
  if (isThrew(direct)) throw new Error(`the scenario failed directly against PostgreSQL (a test bug): ${direct.threw}`);
  opts.direct?.(direct);
  // One assertion per pgrelay target, each naming its target; soft, so that both are reported.
  expect.soft(all['lb-off'], 'lb-off (through pgrelay, load balancing off) differs from direct').toEqual(direct);
  expect.soft(all['lb-on'], 'lb-on (through pgrelay, load balancing on, 0:1:1) differs from direct').toEqual(direct);
  return all;
}

function snapshot<T>(v: T): T {
  try {
    return structuredClone(v);
  } catch {
    return JSON.parse(JSON.stringify(v, jsonSafe)) as T;
  }
}

function jsonSafe(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? `${v}n` : v;
}

function isThrew(v: unknown): v is Threw {
  return v !== null && typeof v === 'object' && typeof (v as { threw?: unknown }).threw === 'string';
}

// ---------------------------------------------------------------------------
// node-postgres with the ParameterStatus messages it received

export interface RecordedPg {
  client: pg.Client;
  /** Every ParameterStatus (name, value) the driver received, in order, start-up included. */
  statuses: Array<[string, string]>;
  /** How many of `statuses` arrived during start-up. */
  startupStatuses: number;
  /** Notifications received (channel, payload, and whether the sender pid is the BackendKeyData pid). */
  notifications: Array<{ channel: string; payload: string; fromOwnPid: boolean }>;
  /** NoticeResponses: `SEVERITY SQLSTATE: message`. */
  notices: string[];
  /** Errors the client emitted outside a query (e.g. a FATAL while idle): their SQLSTATE or message. */
  errors: string[];
  ended: boolean;
}

const livePg = new Set<pg.Client>();

/** End a node-postgres client, bounded: destroys the socket if end() does not finish within timeoutMs. */
export async function endPgBounded(c: pg.Client, timeoutMs = 3000): Promise<void> {
  livePg.delete(c);
  await Promise.race([
    c.end().catch(() => undefined),
    new Promise<void>((r) =>
      setTimeout(() => {
        c.connection.stream.destroy();
        r();
      }, timeoutMs),
    ),
  ]);
}

/**
 * A connected node-postgres client that records ParameterStatus, notifications
 * and background errors. Closed after the run (conform) if the scenario did not.
 */
export async function recordedPg(t: { host: string; port: number }, opts: pg.ClientConfig = {}): Promise<RecordedPg> {
  const client = new pg.Client({
    host: t.host,
    port: t.port,
    user: 'postgres',
    database: 'postgres',
    connectionTimeoutMillis: 10_000,
    query_timeout: 30_000,
    ...opts,
  });
  const rec: RecordedPg = {
    client,
    statuses: [],
    startupStatuses: 0,
    notifications: [],
    notices: [],
    errors: [],
    ended: false,
  };
  client.connection.on('parameterStatus', (m: { parameterName: string; parameterValue: string }) => {
    rec.statuses.push([m.parameterName, m.parameterValue]);
  });
  client.on('notification', (n) =>
    rec.notifications.push({ channel: n.channel, payload: n.payload ?? '', fromOwnPid: n.processId === pidOf(client) }),
  );
  client.on('notice', (n) => rec.notices.push(`${n.severity ?? ''} ${n.code ?? ''}: ${n.message}`));
  // An 'error' without a listener would crash the worker (a FATAL while idle).
  client.on('error', (e) => rec.errors.push(errorCode(e)));
  client.on('end', () => {
    rec.ended = true;
  });
  livePg.add(client);
  try {
    await client.connect();
  } catch (e) {
    await endPgBounded(client);
    throw e;
  }
  rec.startupStatuses = rec.statuses.length;
  return rec;
}

async function closeLivePg(): Promise<void> {
  await Promise.all([...livePg].map((c) => endPgBounded(c)));
}

/** The pid node-postgres got in BackendKeyData. */
export function pidOf(c: pg.Client): number {
  return (c as unknown as { processID: number }).processID;
}

/** The cancel secret node-postgres got in BackendKeyData. */
export function secretOf(c: pg.Client): number {
  return (c as unknown as { secretKey: number }).secretKey;
}

/** Rows of one query as arrays of text (null stays null): comparable across targets. */
export async function textRows(c: pg.Client, text: string, values?: unknown[], extended = false): Promise<unknown[][]> {
  return (await exec(c, text, { values, extended })).rows;
}

export interface ExecResult {
  command: string;
  rowCount: number | null;
  rows: unknown[][];
}

export interface ExecOptions {
  values?: unknown[];
  /** Extended protocol even without values (node-postgres' queryMode: 'extended'). */
  extended?: boolean;
  /** A named (prepared once per connection) statement. */
  name?: string;
}

/** One statement with every value as text: command tag, row count, rows as arrays. */
export async function exec(c: pg.Client, text: string, opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await c.query({
    text,
    values: opts.values,
    name: opts.name,
    rowMode: 'array',
    queryMode: opts.extended ? 'extended' : undefined,
    types: { getTypeParser: () => (v: string) => v },
  } as pg.QueryArrayConfig);
  return { command: r.command, rowCount: r.rowCount, rows: r.rows };
}

/** The single value of a one-row, one-column query, as text. */
export async function scalar(c: pg.Client, text: string, values?: unknown[], extended = false): Promise<unknown> {
  const rows = await textRows(c, text, values, extended);
  return rows[0]?.[0];
}

// ---------------------------------------------------------------------------
// the servers' view, over one node-postgres connection per node kept for the file
// (a psql child per probe costs a fork and exec, hundreds of milliseconds on a loaded machine)

const probeSets = new Map<DevCluster, Map<number, Promise<pg.Client>>>();

/** The file's probe connection to node `id` (connected on first use; closed by closeProbes). */
function probeClient(cluster: DevCluster, id: number): Promise<pg.Client> {
  let set = probeSets.get(cluster);
  if (!set) {
    set = new Map();
    probeSets.set(cluster, set);
  }
  let c = set.get(id);
  if (!c) {
    c = nodeClient(cluster, cluster.node(id), 'conform-probe');
    set.set(id, c);
    // A failed connect is not kept: the next probe tries again.
    c.catch(() => set.delete(id));
  }
  return c;
}

/**
 * Run one query on node `id` over the file's probe connection; rows with their
 * values as node-postgres parses them. A probe connection that failed is
 * dropped, so the next call reconnects.
 */
export async function nodeQuery<R extends Record<string, unknown> = Record<string, unknown>>(
  cluster: DevCluster,
  id: number,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const p = probeClient(cluster, id);
  const c = await p;
  try {
    return (await c.query<R>(sql, params)).rows;
  } catch (e) {
    // An SQL error leaves the connection usable; anything else (a closed or timed-out connection) does not.
    if (!(e instanceof Error && 'code' in e && typeof (e as { code: unknown }).code === 'string')) {
      if (probeSets.get(cluster)?.get(id) === p) probeSets.get(cluster)?.delete(id);
      await endPgBounded(c);
    }
    throw e;
  }
}

/** Close every probe connection (Targets.stop does). */
export async function closeProbes(): Promise<void> {
  const all = [...probeSets.values()].flatMap((m) => [...m.values()]);
  probeSets.clear();
  await Promise.all(all.map((p) => p.then((c) => endPgBounded(c)).catch(() => undefined)));
}

/**
 * Until every standby has replayed the primary's current WAL position (what
 * DevCluster.waitForCatchup waits for, over the probe connections). Throws at
 * once when a standby's replay is paused: it cannot catch up, and skipping it
 * would let a read run on a node that lacks the writes.
 */
export async function waitReplayed(cluster: DevCluster, timeoutMs = 60_000): Promise<void> {
  const [{ lsn }] = await nodeQuery<{ lsn: string }>(
    cluster,
    cluster.primaryId,
    'SELECT pg_current_wal_lsn()::text AS lsn',
  );
  const sql = `SELECT pg_is_in_recovery() AS rec,
      CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause,
      CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() >= $1::pg_lsn END AS done`;
  await Promise.all(
    cluster.standbys.map(async (n) => {
      const deadline = Date.now() + timeoutMs;
      let last = 'no probe completed';
      for (;;) {
        let row: { rec: boolean; pause: string | null; done: boolean | null } | undefined;
        try {
          [row] = await nodeQuery<{ rec: boolean; pause: string | null; done: boolean | null }>(cluster, n.id, sql, [
            lsn,
          ]);
          last = JSON.stringify(row);
        } catch (e) {
          last = describeError(e);
        }
        if (row && !row.rec) return;
        if (row?.pause && row.pause !== 'not paused')
          throw new Error(`waitReplayed: node${n.id}'s WAL replay is ${row.pause}; it cannot replay up to ${lsn}`);
        if (row?.done) return;
        if (Date.now() >= deadline)
          throw new Error(
            `waitReplayed: timed out after ${timeoutMs} ms waiting for node${n.id} to replay up to ${lsn}; last: ${last}`,
          );
        await new Promise((r) => setTimeout(r, 10));
      }
    }),
  );
}

export interface ActiveBackend {
  node: number;
  pid: number;
}

/**
 * Wait until some node shows a backend of `applicationName` in state active whose
 * query matches `queryLike` (an SQL LIKE pattern); resolves with where it runs.
 * Polls over the probe connections (a psql per probe is too slow on a loaded
 * machine to catch a statement of a few seconds).
 */
export async function waitActive(
  cluster: DevCluster,
  applicationName: string,
  queryLike: string,
  timeoutMs = 15_000,
): Promise<ActiveBackend> {
  const sql = `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE $2 LIMIT 1`;
  const hit = await pollUntil(
    async () => {
      const per = await Promise.all(
        cluster.nodes.map(async (n) => ({
          node: n.id,
          rows: await nodeQuery<{ pid: number }>(cluster, n.id, sql, [applicationName, queryLike]),
        })),
      );
      const found = per.find((p) => p.rows.length > 0);
      return found ? { node: found.node, pid: found.rows[0].pid } : undefined;
    },
    (v) => v !== undefined,
    { what: `a backend of ${applicationName} running ${queryLike}`, timeoutMs, intervalMs: 10 },
  );
  return hit as ActiveBackend;
}

/** Terminate every backend of `applicationName` on every node (clean-up of a scenario's leftovers). */
export async function terminateApp(cluster: DevCluster, applicationName: string): Promise<void> {
  await Promise.all(
    cluster.nodes.map((n) =>
      nodeQuery(
        cluster,
        n.id,
        'SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
        [applicationName],
      ).catch(() => undefined),
    ),
  );
}

/** An SQL string literal. */
export function lit(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/**
 * Wait until pgrelay behind `t` holds an idle cached connection of (user,
 * database) on the primary (on lb-on also one on a standby) — or, given
 * `backendPids`, until exactly those backend connections are idle in its cache,
 * and each of `cachedOrEnded` is either idle in its cache or has ended (pgrelay
 * closed it instead) — so that the next session of that key surely reuses what
 * pgrelay keeps. Resolves at once for `direct`.
 */
export async function waitCached(
  targets: Targets,
  t: ConformanceTarget,
  user: string,
  database: string,
  opts: { backendPids?: number[]; cachedOrEnded?: number[]; timeoutMs?: number } = {},
): Promise<void> {
  if (!t.proxy) return;
  const cluster = targets.cluster;
  const wantStandby = t.name === 'lb-on';
  const admin = await recordedPg(t, { application_name: 'conform-cache-probe' });
  try {
    await pollUntil(
      async () => {
        const rows = (await admin.client.query<Record<string, string>>('SHOW pool_pools')).rows.filter(
          (r) => r.status === 'Wait for connection' && r.username === user && r.database === database,
        );
        const idle = rows.map((r) => ({ node: Number(r.backend_id), pid: Number(r.pool_backendpid) }));
        let ok: boolean;
        if (opts.backendPids || opts.cachedOrEnded) {
          const pids = new Set(idle.map((r) => r.pid));
          ok = (opts.backendPids ?? []).every((p) => pids.has(p));
          const notCached = (opts.cachedOrEnded ?? []).filter((p) => !pids.has(p));
          if (ok && notCached.length > 0) ok = (await livePids(cluster, notCached)).length === 0;
        } else {
          const nodes = new Set(idle.map((r) => r.node));
          ok = nodes.has(cluster.primaryId) && (!wantStandby || [...nodes].some((n) => n !== cluster.primaryId));
        }
        // The idle connections go into the timeout message.
        return { ok, idle };
      },
      (v) => v.ok,
      {
        what: `pgrelay (${t.name}) to cache ${opts.backendPids || opts.cachedOrEnded ? `backend pids ${(opts.backendPids ?? []).join(', ')}${opts.cachedOrEnded ? ` (and cache or close ${opts.cachedOrEnded.join(', ')})` : ''}` : 'a connection'} of ${user}@${database}`,
        timeoutMs: opts.timeoutMs ?? 15_000,
      },
    );
  } finally {
    await endPgBounded(admin.client);
  }
}

/** The pids one query returns on each node (`SELECT pid …` with `params`), over the probe connections. */
async function pidsOnEveryNode(cluster: DevCluster, sql: string, params: unknown[]): Promise<Record<number, number[]>> {
  const per = await Promise.all(
    cluster.nodes.map(
      async (n) => [n.id, (await nodeQuery<{ pid: number }>(cluster, n.id, sql, params)).map((x) => x.pid)] as const,
    ),
  );
  return Object.fromEntries(per);
}

/** Those of `pids` still running on some node. */
export async function livePids(cluster: DevCluster, pids: number[]): Promise<number[]> {
  const per = await pidsOnEveryNode(cluster, 'SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])', [pids]);
  return Object.values(per).flat();
}

/**
 * Pids of the client backends of `applicationName` on every node: what a live
 * session holds, so what pgrelay may cache after it (on lb-on a session that
 * read only on the primary, e.g. a serializable one, holds no standby backend).
 */
export async function sessionBackendPids(
  cluster: DevCluster,
  applicationName: string,
): Promise<{ primary: number[]; standbys: number[] }> {
  const per = await pidsOnEveryNode(
    cluster,
    `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND backend_type = 'client backend'`,
    [applicationName],
  );
  const pids = (id: number): number[] => per[id] ?? [];
  return {
    primary: pids(cluster.primaryId),
    standbys: cluster.nodes.filter((n) => n.id !== cluster.primaryId).flatMap((n) => pids(n.id)),
  };
}

/** Pids of the client backends of `applicationName` on the primary (what pgrelay may cache after the session). */
export async function primaryBackendPids(cluster: DevCluster, applicationName: string): Promise<number[]> {
  const rows = await nodeQuery<{ pid: number }>(
    cluster,
    cluster.primaryId,
    `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND backend_type = 'client backend'`,
    [applicationName],
  );
  return rows.map((r) => r.pid);
}

// ---------------------------------------------------------------------------
// children: psql with a handle, node scripts that must exit by themselves

const liveChildren = new Set<ChildProcess>();

function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = scrubPgEnv({ ...process.env });
  env.LC_ALL = 'C.UTF-8';
  env.LANG = 'C.UTF-8';
  delete env.LANGUAGE;
  return { ...env, ...extra };
}

export interface ChildHandle {
  child: ChildProcess;
  pid: number;
  /** Everything written to stdout / stderr so far. */
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (null when killed) once the process ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  write: (s: string) => void;
  endInput: () => void;
  /** Resolves when stdout matches. */
  waitStdout: (re: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
}

/** Spawn a program with a hard deadline (SIGKILL after hardTimeoutMs), tracked until it exits. */
export function spawnChild(
  file: string,
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string; hardTimeoutMs?: number } = {},
): ChildHandle {
  const child = spawn(file, args, {
    env: childEnv(opts.env ?? {}),
    cwd: opts.cwd,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  liveChildren.add(child);
  const cancelWatchdog = child.pid !== undefined ? killChildOnExit(child.pid) : () => undefined;
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => {
    out += d;
    for (const w of [...waiters]) w();
  });
  child.stderr?.on('data', (d: string) => (err += d));
  child.stdin?.on('error', () => undefined);
  const hard = setTimeout(() => child.kill('SIGKILL'), opts.hardTimeoutMs ?? 60_000);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(hard);
      liveChildren.delete(child);
      cancelWatchdog();
      for (const w of [...waiters]) w();
      resolve({ code, signal });
    });
    child.once('error', (e) => {
      err += `\n[spawn error] ${e.message}`;
    });
  });
  onRunEnd(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return {
    child,
    pid: child.pid ?? -1,
    stdout: () => out,
    stderr: () => err,
    exited,
    write: (s) => {
      if (child.stdin && !child.stdin.destroyed) child.stdin.write(s);
    },
    endInput: () => child.stdin?.end(),
    waitStdout: (re, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const m = re.exec(out);
          if (m) {
            done();
            resolve(m);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            done();
            reject(new Error(`process exited before printing ${String(re)}; stdout: ${out}; stderr: ${err}`));
          }
        };
        const t = setTimeout(() => {
          done();
          reject(
            new Error(`timed out after ${timeoutMs} ms waiting for ${String(re)}; stdout: ${out}; stderr: ${err}`),
          );
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(t);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
  };
}

/** psql -X (PG_BIN's) against a target, reading its script from stdin (-f -) unless args say otherwise. */
export function spawnPsql(
  t: { port: number },
  args: string[],
  opts: { applicationName?: string; database?: string; user?: string; hardTimeoutMs?: number } = {},
): ChildHandle {
  return spawnChild(pgTool('psql'), ['-X', ...args], {
    env: {
      ...pgEnv(t.port, { database: opts.database, user: opts.user }),
      PGAPPNAME: opts.applicationName ?? 'conform-psql',
    },
    hardTimeoutMs: opts.hardTimeoutMs,
  });
}

/**
 * Whether a process is blocked reading file descriptor `fd` (Linux:
 * /proc/<pid>/syscall starts with the read syscall's number and the fd).
 */
export function blockedReading(pid: number, fd = 0): boolean {
  try {
    const f = fs.readFileSync(`/proc/${pid}/syscall`, 'utf8').trim().split(/\s+/);
    // read(2) is syscall 0 on x86-64, 63 on arm64.
    return f[0] === (process.arch === 'arm64' ? '63' : '0') && Number(f[1]) === fd;
  } catch {
    return false;
  }
}

/** Kill every child still running (afterAll safety net). */
export function killAllChildren(): void {
  for (const c of liveChildren) c.kill('SIGKILL');
}

/** A unique suffix for names of a file: `${file}_${pid}`. */
export function uniqueName(file: string): string {
  return `${file}_${process.pid}`;
}

// ---------------------------------------------------------------------------
// raw protocol

/** A seeded xorshift32 generator of numbers in [0, 1): the same seed, the same script. */
export function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

export interface RawSession {
  raw: RawClient;
  /** BackendKeyData: pid and the secret (its first 4 bytes), and the secret's length. */
  pid: number;
  secret: number;
  secretLength: number;
  startup: StartupResult;
}

/** A raw session on a target (start-up as `params`, protocol `version`); throws unless it got ReadyForQuery. */
export async function rawSession(
  t: { host: string; port: number },
  params: Record<string, string>,
  version = PROTOCOL_3_0,
): Promise<RawSession> {
  const raw = await RawClient.connect(t.port, t.host);
  raw.send(startupMessage({ user: 'postgres', database: 'postgres', ...params }, version));
  const startup = await raw.readStartupReply(10_000);
  if (!startup.ok) throw new Error(`start-up failed: ${JSON.stringify(startup.error)}`);
  const k = startup.messages.find((m) => m.type === 'K');
  return { raw, pid: startup.pid, secret: startup.secret, secretLength: k ? k.body.length - 4 : 0, startup };
}

/**
 * Send a CancelRequest to a target and wait until the server closed that
 * connection (PostgreSQL closes it once it has signalled the backend; libpq's
 * PQcancel and pgjdbc wait for that close too).
 */
export async function sendCancel(t: { host: string; port: number }, pid: number, secret: number): Promise<void> {
  const c = await RawClient.connect(t.port, t.host);
  try {
    // Drivers keep the key as unsigned (postgres.js) or signed (node-postgres) 32-bit numbers.
    c.send(cancelRequest(pid | 0, secret | 0));
    if (!(await c.waitClosed(10_000))) throw new Error('the CancelRequest connection was not closed within 10 s');
  } finally {
    c.destroy();
  }
}

/** Message types of a reply, as one string ('12TDDsZ'). */
export function typesOf(msgs: BackendMessage[]): string {
  return msgs.map((m) => m.type).join('');
}

/** `SQLSTATE: message` of every ErrorResponse among msgs. */
export function errorsOf(msgs: BackendMessage[]): string[] {
  return msgs
    .filter((m) => m.type === 'E')
    .map((m) => {
      const f = errorFields(m.body);
      return `${f.S ?? ''} ${f.C ?? ''}: ${f.M ?? ''}`;
    });
}

/** What a conformance file creates on the primary: a 100-row table, a table per target, a role owning a database. */
export interface ConformanceFixtures {
  /** The 100-row table (id, v). */
  table: string;
  /** Per-target tables are `<prefix>_w_<tag>`. */
  prefix: string;
  database: string;
  role: string;
  /** The targets' tags. */
  tags: readonly string[];
}

/** SQL creating the fixtures (dropping leftovers of an earlier run first). */
export function createFixturesSql(f: ConformanceFixtures): string {
  return `DROP TABLE IF EXISTS ${f.table};
     CREATE TABLE ${f.table} AS SELECT g AS id, 'v' || g AS v FROM generate_series(1, 100) g;
     ${f.tags.map((tag) => `DROP TABLE IF EXISTS ${f.prefix}_w_${tag}; CREATE TABLE ${f.prefix}_w_${tag} (id int, v text);`).join('\n')}
     DROP DATABASE IF EXISTS ${f.database};
     DROP ROLE IF EXISTS ${f.role};
     CREATE ROLE ${f.role} LOGIN;
     CREATE DATABASE ${f.database} OWNER ${f.role};`;
}

/** SQL dropping the fixtures. */
export function dropFixturesSql(f: ConformanceFixtures): string {
  return `DROP TABLE IF EXISTS ${f.table}; ${f.tags.map((tag) => `DROP TABLE IF EXISTS ${f.prefix}_w_${tag};`).join(' ')}
       DROP DATABASE IF EXISTS ${f.database} WITH (FORCE); DROP ROLE IF EXISTS ${f.role};`;
}
