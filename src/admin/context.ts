/**
 * What the admin engine reads: the calling session, the node table, sessions,
 * cached connections, counters and the operations it may run, as plain data
 * and callbacks. services.ts wires it to the live NodeTable, SessionRegistry,
 * ConnectionCache and ClusterManager; unit tests pass plain objects.
 */
import type { NodeState } from '../cluster/nodes.js';
import type { ParamValue } from '../config/params.js';
import type { Config } from '../config/types.js';
import type { StopMode } from './commands.js';

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
  /** pool_mode = transaction: waiting for a connection of a server pool. */
  readonly waitingForPool?: boolean;
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
  promoteNode?(node: number, switchover: boolean, gracefully: boolean): Promise<void> | void;
  /** Online recovery (pcp_recovery_node): 1st stage script, remote start, wait, attach. */
  recoverNode?(node: number): Promise<void> | void;
  reload?(): Promise<void> | void;
  stop?(mode: StopMode): Promise<void> | void;
}

/**
 * Per-session PGPOOL SET values (parameter name → value); owned by the session,
 * mutated by the engine, cleared when the session ends (pgpool resets them in
 * backend_cleanup). Only parameters with context 'session'.
 */
export type SessionParamOverlay = Map<string, ParamValue>;

/** One pgrelay instance of a coordinated cluster (SHOW pgrelay_instances). */
export interface AdminInstance {
  name: string;
  host: string;
  port: number;
  version: string;
  /** connecting | member | leader | lost (this instance), member | leader (others). */
  state: string;
  leader: boolean;
  self: boolean;
  /** held / lost: whether the instance holds its etcd lease. */
  lease: string;
  /** ms since epoch */
  started: number;
}

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
  /** coordination = etcd: the coordinated instances (SHOW pgrelay_instances); absent = this instance alone. */
  instances?(): AdminInstance[];
  /** Clock (ms since epoch); default Date.now. */
  now?: () => number;
}
