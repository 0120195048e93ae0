/**
 * The admin command engine: answers SHOW pool_* and PGPOOL SHOW/SET/RESET the
 * way pgpool-II 4.3 does (same columns, same value formats, same errors), plus
 * pgrelay's node operations (ATTACH/DETACH/PROMOTE NODE, RELOAD, STOP).
 *
 * Pure apart from the callbacks in AdminContext: everything it reports comes
 * from the context, so the lead wires it to the NodeTable, SessionRegistry,
 * ConnectionCache and counters, and unit tests pass plain objects.
 *
 * Mapping of pgpool's per-child rows onto pgrelay (which has no child processes):
 *  - pool_pid: for a client session, the session's virtual pid (the pid pgrelay
 *    sends the client in BackendKeyData, the key of cancel requests). For a
 *    cached idle backend connection, the pgrelay process pid (the process owns
 *    the cache).
 *  - SHOW pool_processes: one row per session (database/username of the
 *    session, backend_connection_time/pool_counter of its first backend
 *    connection, status Idle / Idle in transaction / Execute command), then one
 *    row per cached idle connection (start_time = pgrelay start, status
 *    'Wait for connection', database/username of the cached connection), like a
 *    pgpool child that holds a pooled connection and waits for a client.
 *  - SHOW pool_pools (4.3's 17 columns): for each session one row per configured
 *    backend node (pool_id 0, backend_id = node id); nodes the session has no
 *    connection to get empty database/username/times, version 0/0, backend pid 0
 *    and pool_connected 0, as a pgpool slot without that backend. Then one row
 *    per cached idle connection (pool_pid = process pid, pool_id = running
 *    index, client fields empty, client_disconnection_time = when it went back
 *    to the cache, pool_connected 0, status 'Wait for connection').
 */
import type { NodeState } from '../cluster/nodes.js';
import type { Config } from '../config/types.js';
import { findParamDef, type ParamDef, type ParamValue } from '../config/params.js';
import { backendFlagString, parseParamValue } from '../config/values.js';
import type { ErrorFields } from '../protocol/messages.js';
import { SQLSTATE } from '../protocol/constants.js';
import { describeAdminCommand, type AdminCommand, type StopMode } from './commands.js';
import { formatParam, showParamRows } from './show-config.js';

// ---------------------------------------------------------------------------
// Context

/**
 * One backend node as SHOW pool_nodes needs it. `weight` is the raw configured
 * weight; the engine normalises over all nodes as pgpool does.
 */
export type AdminNode = Pick<
  NodeState,
  | 'id'
  | 'host'
  | 'port'
  | 'weight'
  | 'status'
  | 'role'
  | 'lastStatusChange'
  | 'delayBytes'
  | 'delaySeconds'
  | 'replicationState'
  | 'replicationSyncState'
>;

/** Per-node statement counters since start (pgpool's shared-memory statistics). */
export interface NodeStatementCounters {
  select_cnt: number;
  insert_cnt: number;
  update_cnt: number;
  delete_cnt: number;
  ddl_cnt: number;
  other_cnt: number;
  panic_cnt: number;
  fatal_cnt: number;
  error_cnt: number;
}

/**
 * Health-check statistics of one node (pgpool's POOL_HEALTH_CHECK_STATISTICS).
 * Times are ms since epoch, 0 = never happened. Durations in ms.
 * The cluster code's `healthStats(id)` is expected to return this shape.
 */
export interface HealthCheckStats {
  totalCount: number;
  successCount: number;
  failCount: number;
  /** Checks skipped because the node was already down. */
  skipCount: number;
  /** Retries over all checks. */
  retryCount: number;
  maxRetryCount: number;
  /** Sum of the durations of the checks that ran (not skipped), ms. */
  totalDurationMs: number;
  maxDurationMs: number;
  minDurationMs: number;
  lastHealthCheck: number;
  lastSuccessfulHealthCheck: number;
  lastSkipHealthCheck: number;
  lastFailedHealthCheck: number;
}

/** A backend connection as seen by the admin reports. `BackendConnection` (pool/connector.ts) satisfies it. */
export interface AdminBackendConnection {
  readonly nodeId: number;
  /** PostgreSQL backend pid. */
  readonly pid: number;
  /** Start-up / reported parameters; `user` and `database` are read for cached connections. */
  readonly params?: ReadonlyMap<string, string>;
  /** ms since epoch */
  readonly createdAt: number;
  /** When it last went back to the cache (ms since epoch, 0 = never). */
  readonly releasedAt: number;
  /** How many client sessions have used it (pgpool's pool_counter); 0/absent if unknown. */
  readonly useCount?: number;
}

/** A client session. `Session` (session/session.ts) satisfies it. */
export interface AdminSessionInfo {
  /** The virtual pid given to the client in BackendKeyData. */
  readonly pid: number;
  readonly user: string;
  readonly database: string;
  /** ms since epoch */
  readonly startedAt: number;
  /** ReadyForQuery status byte: 'I', 'T' or 'E'. */
  readonly txStatus: number;
  /** A request is being executed on a backend. */
  readonly busy?: boolean;
  /** Last client activity (ms since epoch), for client_idle_duration. */
  readonly lastActivity?: number;
  readonly backendConnections: readonly AdminBackendConnection[];
}

export interface ProbeResult {
  up: boolean;
  /** pg_is_in_recovery() when known. */
  inRecovery?: boolean;
}

/** Optional node operations (pgrelay extensions); a rejection becomes an ERROR reply. */
export interface AdminOperations {
  attachNode?(node: number): Promise<void> | void;
  detachNode?(node: number, gracefully: boolean): Promise<void> | void;
  promoteNode?(node: number, switchover: boolean): Promise<void> | void;
  reload?(): Promise<void> | void;
  stop?(mode: StopMode): Promise<void> | void;
}

/**
 * Per-session PGPOOL SET values (parameter name → value); owned by the session,
 * mutated by the engine, cleared when the session ends (pgpool resets them in
 * backend_cleanup). Only parameters with context 'session'.
 */
export type SessionParamOverlay = Map<string, ParamValue>;

export interface AdminContext {
  /** The current configuration (without session overrides). */
  config: Config;
  /** The calling session's user (for admin_users). */
  user: string;
  /**
   * Whether `user` is an admin. Default: `config.admin_users.includes(user)`.
   * SHOW/PGPOOL SHOW/SET/RESET are open to everyone while admin_users is empty
   * (pgpool has no restriction); node operations, RELOAD and STOP always need
   * an admin user (42501 otherwise).
   */
  isAdminUser?: (user: string) => boolean;
  sessionParams: SessionParamOverlay;
  /** All configured nodes, by id (index = node id). */
  nodes: readonly AdminNode[];
  /** Current primary node id, -1 if none. */
  primaryId: number;
  /** Statement counters of a node; undefined = all zero. */
  counters(nodeId: number): NodeStatementCounters | undefined;
  /** Health-check statistics of a node; undefined = never checked (zeros, empty times). */
  healthStats?(nodeId: number): HealthCheckStats | undefined;
  /** The calling session's load-balance node id (-1 if none). */
  loadBalanceNode: number;
  /**
   * Live check for pg_status/pg_role (SHOW pool_nodes). Called only for nodes
   * whose health_check_period > 0, in parallel, each bounded by probeTimeoutMs
   * (a timeout counts as down). Absent = 'unknown'.
   */
  probe?(nodeId: number): Promise<ProbeResult>;
  /** Default min(connect_timeout, 3000) ms. */
  probeTimeoutMs?: number;
  sessions(): Iterable<AdminSessionInfo>;
  cachedConnections(): Iterable<AdminBackendConnection>;
  /** pgrelay's version (package.json). */
  version: string;
  /** pgrelay process pid (default process.pid). */
  processPid?: number;
  /** pgrelay start time, ms since epoch. */
  processStartedAt: number;
  ops?: AdminOperations;
  /** Clock (ms since epoch); default Date.now. */
  now?: () => number;
}

export type AdminResult =
  | { kind: 'rows'; columns: string[]; rows: string[][]; tag: string; notices?: ErrorFields[] }
  | { kind: 'command'; tag: string; notices?: ErrorFields[] }
  | { kind: 'error'; error: ErrorFields };

/**
 * pgpool version pgrelay's reports are compatible with. SHOW pool_version
 * answers `<PGPOOL_COMPAT_VERSION> (pgrelay <version>)`: pgpool's
 * `<version> (<codename>)` shape, with a version number that tools which pick
 * columns by pgpool version (e.g. pgpool2_exporter) parse as 4.3 — the column
 * sets pgrelay reproduces.
 */
export const PGPOOL_COMPAT_VERSION = '4.3.0';

// ---------------------------------------------------------------------------
// Formatting helpers

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** strftime("%F %T") in local time; '' for 0/undefined. */
export function formatTimestamp(ms: number | undefined): string {
  if (!ms) return '';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** C's %f. */
function f6(x: number): string {
  return Number.isFinite(x) ? x.toFixed(6) : '0.000000';
}

function int(x: number | undefined): string {
  return String(Math.trunc(x ?? 0));
}

/** Normalised load-balance weight of each node (over all configured nodes, as pgpool). */
export function normalisedWeights(nodes: readonly AdminNode[]): number[] {
  let sum = 0;
  for (const n of nodes) sum += n.weight > 0 ? n.weight : 0;
  return nodes.map((n) => (sum > 0 && n.weight > 0 ? n.weight / sum : 0));
}

/** pgpool's get_config() enum numbering (SHOW pool_status prints enums as numbers). */
const ENUM_NUMBERS: Record<string, Record<string, number>> = {
  disable_load_balance_on_write: { off: 1, transaction: 2, trans_transaction: 3, always: 4, dml_adaptive: 5 },
  backend_clustering_mode: {
    streaming_replication: 1,
    native_replication: 2,
    logical_replication: 3,
    slony: 4,
    raw: 5,
    snapshot_isolation: 6,
  },
};

/**
 * SHOW pool_status (pgpool-II's SHOW POOL_STATUS): the global parameters as item/value/description
 * with booleans and enums as numbers, then per backend its hostname, port,
 * normalised weight (%f), data directory, status, standby delay, flag and
 * application name.
 */
export function showPoolStatus(ctx: AdminContext, cfg: Config): AdminResult {
  const rows: string[][] = [];
  const all = showParamRows(cfg, 'all') ?? [];
  for (const r of all) {
    if (r.item.startsWith('backend_') || /^health_check_\w+\d+$/.test(r.item)) continue;
    let v = r.value;
    const nums = ENUM_NUMBERS[r.item];
    if (nums && v in nums) v = String(nums[v]);
    else if (v === 'on') v = '1';
    else if (v === 'off') v = '0';
    rows.push([r.item, v, r.description]);
  }
  const weights = normalisedWeights(ctx.nodes);
  for (let i = 0; i < ctx.nodes.length; i++) {
    const n = ctx.nodes[i]!;
    const b = cfg.backends[i];
    const flag = backendFlagString(b ?? { allow_to_failover: true, always_primary: false });
    rows.push([`backend_hostname${i}`, n.host, `backend #${i} hostname`]);
    rows.push([`backend_port${i}`, String(n.port), `backend #${i} port number`]);
    rows.push([`backend_weight${i}`, (weights[i] ?? 0).toFixed(6), `weight of backend #${i}`]);
    rows.push([`backend_data_directory${i}`, b?.data_directory ?? '', `data directory for backend #${i}`]);
    rows.push([`backend_status${i}`, n.status, `status of backend #${i}`]);
    rows.push([
      `standby_delay${i}`,
      String(Math.max(0, Math.round(n.delayBytes ?? 0))),
      `standby delay of backend #${i}`,
    ]);
    rows.push([`backend_flag${i}`, flag, `backend #${i} flag`]);
    rows.push([`backend_application_name${i}`, b?.application_name ?? '', `application_name for backend #${i}`]);
  }
  return { kind: 'rows', columns: ['item', 'value', 'description'], rows, tag: `SELECT ${rows.length}` };
}

/** replication_delay as pgpool 4.4+ prints it: bytes, or seconds when delay_threshold_by_time > 0. */
export function formatReplicationDelay(node: AdminNode, isPrimary: boolean, cfg: Config): string {
  if (cfg.delay_threshold_by_time > 0) {
    const s = isPrimary ? 0 : Math.max(0, node.delaySeconds);
    return `${f6(s)} ${s >= 2 ? 'seconds' : 'second'}`;
  }
  return isPrimary ? '0' : int(Math.max(0, node.delayBytes));
}

function err(code: string, message: string, extra: Partial<ErrorFields> = {}): AdminResult {
  return { kind: 'error', error: { severity: 'ERROR', code, message, ...extra } };
}

function rowsResult(columns: string[], rows: string[][], notices?: ErrorFields[]): AdminResult {
  const r: AdminResult = { kind: 'rows', columns, rows, tag: `SELECT ${rows.length}` };
  if (notices && notices.length > 0) r.notices = notices;
  return r;
}

const TX_IDLE = 0x49;

function sessionStatus(s: AdminSessionInfo): string {
  if (s.busy) return 'Execute command';
  return s.txStatus === TX_IDLE ? 'Idle' : 'Idle in transaction';
}

// ---------------------------------------------------------------------------
// Session parameters

/** Config with the session's PGPOOL SET values applied (the config itself when there are none). */
export function effectiveConfig(config: Config, overlay: ReadonlyMap<string, ParamValue>): Config {
  if (overlay.size === 0) return config;
  const c: Record<string, unknown> = { ...config };
  for (const [k, v] of overlay) c[k] = v;
  return c as unknown as Config;
}

/** A parameter definition for SET/RESET: plain name, or an indexed one (backend_weight0). */
function lookupParam(name: string): ParamDef | undefined {
  const d = findParamDef(name);
  if (d) return d;
  const m = /^([a-z_]+?)\d+$/.exec(name);
  if (!m) return undefined;
  const a = findParamDef(m[1]!);
  return a && a.scope !== 'global' ? a : undefined;
}

function sessionParamCheck(name: string): { def: ParamDef } | { fail: AdminResult } {
  const def = lookupParam(name);
  if (!def) return { fail: err(SQLSTATE.internalError, `unrecognized configuration parameter "${name}"`) };
  if (def.context !== 'session' || def.scope !== 'global') {
    return { fail: err(SQLSTATE.internalError, `invalid Context, value for parameter "${name}" cannot be changed`) };
  }
  return { def };
}

function pgpoolSet(ctx: AdminContext, name: string, value: string | null): AdminResult {
  const chk = sessionParamCheck(name);
  if ('fail' in chk) return chk.fail;
  const d = chk.def;
  if (value === null) {
    ctx.sessionParams.delete(d.name);
    return { kind: 'command', tag: 'SET' };
  }
  const r = parseParamValue(d, value, name);
  if ('error' in r) {
    // pgpool's wording for booleans; the loader's wording (with the accepted range) otherwise
    return err(SQLSTATE.internalError, d.kind === 'bool' ? `parameter "${name}" requires a Boolean value` : r.error);
  }
  ctx.sessionParams.set(d.name, r.value);
  return { kind: 'command', tag: 'SET' };
}

function pgpoolReset(ctx: AdminContext, name: string): AdminResult {
  if (name === 'all') {
    ctx.sessionParams.clear();
    return { kind: 'command', tag: 'RESET' };
  }
  const chk = sessionParamCheck(name);
  if ('fail' in chk) return chk.fail;
  ctx.sessionParams.delete(chk.def.name);
  return { kind: 'command', tag: 'SET' };
}

function pgpoolShow(cfg: Config, name: string): AdminResult {
  const rows = showParamRows(cfg, name);
  if (rows)
    return rowsResult(
      ['item', 'value', 'description'],
      rows.map((r) => [r.item, r.value, r.description]),
    );
  const v = formatParam(cfg, name);
  if (v === undefined) return err(SQLSTATE.internalError, `config variable "${name}" not found`);
  return rowsResult([name], [[v]]);
}

// ---------------------------------------------------------------------------
// SHOW pool_*

export const POOL_NODES_COLUMNS = [
  'node_id',
  'hostname',
  'port',
  'status',
  'pg_status',
  'lb_weight',
  'role',
  'pg_role',
  'select_cnt',
  'load_balance_node',
  'replication_delay',
  'replication_state',
  'replication_sync_state',
  'last_status_change',
];

export const POOL_BACKEND_STATS_COLUMNS = [
  'node_id',
  'hostname',
  'port',
  'status',
  'role',
  'select_cnt',
  'insert_cnt',
  'update_cnt',
  'delete_cnt',
  'ddl_cnt',
  'other_cnt',
  'panic_cnt',
  'fatal_cnt',
  'error_cnt',
];

export const POOL_HEALTH_CHECK_STATS_COLUMNS = [
  'node_id',
  'hostname',
  'port',
  'status',
  'role',
  'last_status_change',
  'total_count',
  'success_count',
  'fail_count',
  'skip_count',
  'retry_count',
  'average_retry_count',
  'max_retry_count',
  'max_duration',
  'min_duration',
  'average_duration',
  'last_health_check',
  'last_successful_health_check',
  'last_skip_health_check',
  'last_failed_health_check',
];

export const POOL_POOLS_COLUMNS = [
  'pool_pid',
  'start_time',
  'client_connection_count',
  'pool_id',
  'backend_id',
  'database',
  'username',
  'backend_connection_time',
  'client_connection_time',
  'client_disconnection_time',
  'client_idle_duration',
  'majorversion',
  'minorversion',
  'pool_counter',
  'pool_backendpid',
  'pool_connected',
  'status',
];

export const POOL_PROCESSES_COLUMNS = [
  'pool_pid',
  'start_time',
  'client_connection_count',
  'database',
  'username',
  'backend_connection_time',
  'pool_counter',
  'status',
];

export const POOL_CACHE_COLUMNS = [
  'num_cache_hits',
  'num_selects',
  'cache_hit_ratio',
  'num_hash_entries',
  'used_hash_entries',
  'num_cache_entries',
  'used_cache_entries_size',
  'free_cache_entries_size',
  'fragment_cache_entries_size',
];

function hostname(n: AdminNode): string {
  return n.host === '' ? '/tmp' : n.host;
}

function roleOf(ctx: AdminContext, n: AdminNode): string {
  return n.id === ctx.primaryId ? 'primary' : 'standby';
}

function healthCheckPeriod(cfg: Config, nodeId: number): number {
  return (cfg.health_check_per_node[nodeId] ?? cfg.health_check).period;
}

function probeWithTimeout(probe: (id: number) => Promise<ProbeResult>, id: number, ms: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ up: false }), ms);
    let p: Promise<ProbeResult>;
    try {
      p = probe(id);
    } catch {
      clearTimeout(timer);
      resolve({ up: false });
      return;
    }
    p.then(
      (r) => {
        clearTimeout(timer);
        resolve(r);
      },
      () => {
        clearTimeout(timer);
        resolve({ up: false });
      },
    );
  });
}

export async function showPoolNodes(ctx: AdminContext, cfg: Config): Promise<AdminResult> {
  const weights = normalisedWeights(ctx.nodes);
  const timeout = ctx.probeTimeoutMs ?? Math.max(100, Math.min(cfg.connect_timeout, 3000));
  const probes = await Promise.all(
    ctx.nodes.map((n) =>
      ctx.probe && n.status !== 'unused' && healthCheckPeriod(cfg, n.id) > 0
        ? probeWithTimeout(ctx.probe, n.id, timeout)
        : Promise.resolve(undefined),
    ),
  );
  const rows = ctx.nodes.map((n, i) => {
    const isPrimary = n.id === ctx.primaryId;
    const p = probes[i];
    const pgStatus = p === undefined ? 'unknown' : p.up ? 'up' : 'down';
    const pgRole =
      p?.up && cfg.sr_check_period > 0 && p.inRecovery !== undefined
        ? p.inRecovery
          ? 'standby'
          : 'primary'
        : 'unknown';
    return [
      String(n.id),
      hostname(n),
      String(n.port),
      n.status,
      pgStatus,
      f6(weights[i]!),
      roleOf(ctx, n),
      pgRole,
      int(ctx.counters(n.id)?.select_cnt),
      n.id === ctx.loadBalanceNode ? 'true' : 'false',
      formatReplicationDelay(n, isPrimary, cfg),
      isPrimary ? '' : n.replicationState,
      isPrimary ? '' : n.replicationSyncState,
      formatTimestamp(n.lastStatusChange),
    ];
  });
  return rowsResult(POOL_NODES_COLUMNS, rows);
}

export function showPoolBackendStats(ctx: AdminContext): AdminResult {
  const rows = ctx.nodes.map((n) => {
    const c = ctx.counters(n.id);
    return [
      String(n.id),
      hostname(n),
      String(n.port),
      n.status,
      roleOf(ctx, n),
      int(c?.select_cnt),
      int(c?.insert_cnt),
      int(c?.update_cnt),
      int(c?.delete_cnt),
      int(c?.ddl_cnt),
      int(c?.other_cnt),
      int(c?.panic_cnt),
      int(c?.fatal_cnt),
      int(c?.error_cnt),
    ];
  });
  return rowsResult(POOL_BACKEND_STATS_COLUMNS, rows);
}

export function showPoolHealthCheckStats(ctx: AdminContext): AdminResult {
  const rows = ctx.nodes.map((n) => {
    const s = ctx.healthStats?.(n.id);
    const ran = s ? s.totalCount - s.skipCount : 0;
    return [
      String(n.id),
      hostname(n),
      String(n.port),
      n.status,
      roleOf(ctx, n),
      formatTimestamp(n.lastStatusChange),
      int(s?.totalCount),
      int(s?.successCount),
      int(s?.failCount),
      int(s?.skipCount),
      int(s?.retryCount),
      f6(s && ran > 0 ? s.retryCount / ran : 0),
      int(s?.maxRetryCount),
      int(s?.maxDurationMs),
      int(s?.minDurationMs),
      f6(s && ran > 0 ? s.totalDurationMs / ran : 0),
      formatTimestamp(s?.lastHealthCheck),
      formatTimestamp(s?.lastSuccessfulHealthCheck),
      formatTimestamp(s?.lastSkipHealthCheck),
      formatTimestamp(s?.lastFailedHealthCheck),
    ];
  });
  return rowsResult(POOL_HEALTH_CHECK_STATS_COLUMNS, rows);
}

function connUser(c: AdminBackendConnection): string {
  return c.params?.get('user') ?? '';
}

function connDatabase(c: AdminBackendConnection): string {
  return c.params?.get('database') ?? connUser(c);
}

export function showPoolPools(ctx: AdminContext): AdminResult {
  const now = (ctx.now ?? Date.now)();
  const rows: string[][] = [];
  for (const s of ctx.sessions()) {
    const status = sessionStatus(s);
    const idle = s.lastActivity && !s.busy ? String(Math.max(0, Math.floor((now - s.lastActivity) / 1000))) : '0';
    for (const n of ctx.nodes) {
      const c = s.backendConnections.find((b) => b.nodeId === n.id);
      rows.push([
        String(s.pid),
        formatTimestamp(s.startedAt),
        '1',
        '0',
        String(n.id),
        c ? s.database : '',
        c ? s.user : '',
        c ? formatTimestamp(c.createdAt) : '',
        c ? formatTimestamp(s.startedAt) : '',
        '',
        c ? idle : '0',
        c ? '3' : '0',
        '0',
        c ? int(c.useCount) : '0',
        c ? String(c.pid) : '0',
        c ? '1' : '0',
        status,
      ]);
    }
  }
  const ppid = String(ctx.processPid ?? process.pid);
  const pstart = formatTimestamp(ctx.processStartedAt);
  let slot = 0;
  for (const c of ctx.cachedConnections()) {
    rows.push([
      ppid,
      pstart,
      '0',
      String(slot++),
      String(c.nodeId),
      connDatabase(c),
      connUser(c),
      formatTimestamp(c.createdAt),
      '',
      formatTimestamp(c.releasedAt),
      '0',
      '3',
      '0',
      int(c.useCount),
      String(c.pid),
      '0',
      'Wait for connection',
    ]);
  }
  return rowsResult(POOL_POOLS_COLUMNS, rows);
}

export function showPoolProcesses(ctx: AdminContext): AdminResult {
  const rows: string[][] = [];
  for (const s of ctx.sessions()) {
    const c = s.backendConnections[0];
    rows.push([
      String(s.pid),
      formatTimestamp(s.startedAt),
      '1',
      s.database,
      s.user,
      c ? formatTimestamp(c.createdAt) : '',
      c ? int(c.useCount) : '',
      sessionStatus(s),
    ]);
  }
  const ppid = String(ctx.processPid ?? process.pid);
  const pstart = formatTimestamp(ctx.processStartedAt);
  for (const c of ctx.cachedConnections()) {
    rows.push([
      ppid,
      pstart,
      '0',
      connDatabase(c),
      connUser(c),
      formatTimestamp(c.createdAt),
      int(c.useCount),
      'Wait for connection',
    ]);
  }
  return rowsResult(POOL_PROCESSES_COLUMNS, rows);
}

export function showPoolCache(): AdminResult {
  return rowsResult(POOL_CACHE_COLUMNS, [['0', '0', '0.00', '0', '0', '0', '0', '0', '0']]);
}

export function showPoolVersion(ctx: AdminContext): AdminResult {
  return rowsResult(['pool_version'], [[`${PGPOOL_COMPAT_VERSION} (pgrelay ${ctx.version})`]]);
}

// ---------------------------------------------------------------------------
// Node operations

async function runOp(tag: string, op: (() => Promise<void> | void) | undefined, what: string): Promise<AdminResult> {
  if (!op) return err(SQLSTATE.featureNotSupported, `${what} is not supported by this pgrelay instance`);
  try {
    await op();
    return { kind: 'command', tag };
  } catch (e) {
    const code =
      typeof (e as { code?: unknown }).code === 'string' && /^[0-9A-Z]{5}$/.test((e as { code: string }).code)
        ? (e as { code: string }).code
        : SQLSTATE.internalError;
    return err(code, `${what} failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function checkNode(ctx: AdminContext, node: number): AdminResult | undefined {
  if (node >= 0 && node < ctx.nodes.length && ctx.nodes[node]!.status !== 'unused') return undefined;
  return err(SQLSTATE.invalidParameterValue, `invalid node id ${node}`, {
    detail:
      ctx.nodes.length > 0 ? `Configured nodes are 0..${ctx.nodes.length - 1}.` : 'No backend node is configured.',
  });
}

// ---------------------------------------------------------------------------
// Entry point

function isAdmin(ctx: AdminContext): boolean {
  return ctx.isAdminUser ? ctx.isAdminUser(ctx.user) : ctx.config.admin_users.includes(ctx.user);
}

function denied(ctx: AdminContext, cmd: AdminCommand): AdminResult {
  return err(SQLSTATE.insufficientPrivilege, `permission denied for ${describeAdminCommand(cmd)}`, {
    detail: `User "${ctx.user}" is not listed in admin_users.`,
    hint:
      ctx.config.admin_users.length === 0
        ? 'Node operations, RELOAD and STOP require admin_users to be set.'
        : undefined,
  });
}

/** Answer one admin command. Never throws (failures are `{ kind: 'error' }`). */
export async function executeAdmin(cmd: AdminCommand, ctx: AdminContext): Promise<AdminResult> {
  if (cmd.kind === 'syntax_error') {
    return err(
      SQLSTATE.syntaxError,
      cmd.near === '' ? 'syntax error at end of input' : `syntax error at or near "${cmd.near}"`,
    );
  }
  const privileged =
    cmd.kind === 'attach_node' ||
    cmd.kind === 'detach_node' ||
    cmd.kind === 'promote_node' ||
    cmd.kind === 'reload' ||
    cmd.kind === 'stop';
  const admin = isAdmin(ctx);
  if (privileged ? !admin : ctx.config.admin_users.length > 0 && !admin) return denied(ctx, cmd);

  const cfg = effectiveConfig(ctx.config, ctx.sessionParams);
  try {
    switch (cmd.kind) {
      case 'show':
        switch (cmd.target) {
          case 'pool_nodes':
            return await showPoolNodes(ctx, cfg);
          case 'pool_version':
            return showPoolVersion(ctx);
          case 'pool_status':
            return showPoolStatus(ctx, cfg);
          case 'pool_pools':
            return showPoolPools(ctx);
          case 'pool_processes':
            return showPoolProcesses(ctx);
          case 'pool_backend_stats':
            return showPoolBackendStats(ctx);
          case 'pool_health_check_stats':
            return showPoolHealthCheckStats(ctx);
          case 'pool_cache':
            return showPoolCache();
        }
        break;
      case 'pgpool_show':
        return pgpoolShow(cfg, cmd.name);
      case 'pgpool_set':
        return pgpoolSet(ctx, cmd.name, cmd.value);
      case 'pgpool_reset':
        return pgpoolReset(ctx, cmd.name);
      case 'cache_delete':
        // pgrelay has no query cache: pgpool's reply for a query that is not cached.
        return {
          kind: 'command',
          tag: 'SET',
          notices: [
            { severity: 'NOTICE', code: '00000', message: `query cache does not exist for query: "${cmd.query}"` },
          ],
        };
      case 'attach_node':
        return (
          checkNode(ctx, cmd.node) ??
          (await runOp(
            'ATTACH NODE',
            ctx.ops?.attachNode && (() => ctx.ops!.attachNode!(cmd.node)),
            describeAdminCommand(cmd),
          ))
        );
      case 'detach_node':
        return (
          checkNode(ctx, cmd.node) ??
          (await runOp(
            'DETACH NODE',
            ctx.ops?.detachNode && (() => ctx.ops!.detachNode!(cmd.node, cmd.gracefully)),
            describeAdminCommand(cmd),
          ))
        );
      case 'promote_node':
        return (
          checkNode(ctx, cmd.node) ??
          (await runOp(
            'PROMOTE NODE',
            ctx.ops?.promoteNode && (() => ctx.ops!.promoteNode!(cmd.node, cmd.switchover)),
            describeAdminCommand(cmd),
          ))
        );
      case 'reload':
        return await runOp('RELOAD', ctx.ops?.reload && (() => ctx.ops!.reload!()), 'PGPOOL RELOAD');
      case 'stop':
        return await runOp('STOP', ctx.ops?.stop && (() => ctx.ops!.stop!(cmd.mode)), describeAdminCommand(cmd));
    }
  } catch (e) {
    return err(
      SQLSTATE.internalError,
      `${describeAdminCommand(cmd)} failed: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  return err(SQLSTATE.internalError, 'unknown admin command');
}
