/**
 * What a session needs from the process around it (implemented by the Relay in
 * server.ts, with the hooks services.ts wires to the cluster manager, the admin
 * engine and the metrics), and the small interfaces the session's parts share.
 */
import type { AdminCaller, AdminRequest } from '../admin/service.js';
import type { BackendSecret } from '../auth/backend.js';
import type { ConnectionCache } from '../pool/cache.js';
import type { BackendConnection } from '../pool/connector.js';
import type { ServerPools } from '../pool/server-pool.js';
import type { StatementNames } from './pooled-statements.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import type { NodeTable } from '../cluster/nodes.js';
import type { Classification, Router } from '../router/router.js';
import type { SessionRegistry } from './registry.js';
import type { WriteHorizon } from './write-horizon.js';

export interface SessionContext<S = unknown> {
  config(): Config;
  readonly nodes: NodeTable;
  readonly cache: ConnectionCache;
  /** pool_mode = transaction: the server pools connections are lent from per transaction. */
  readonly pools: ServerPools<BackendConnection>;
  /** pool_mode = transaction: pgrelay's names of prepared statements on pooled connections. */
  readonly statementNames: StatementNames;
  readonly router: Router;
  readonly log: Logger;
  readonly registry: SessionRegistry<S>;
  backendSecret(user: string): BackendSecret | undefined;
  /** Read-your-writes across sessions: the newest acknowledged write position (read-your-writes.ts). */
  readonly horizon: WriteHorizon;
  /** What the rest of pgrelay does for sessions (services.ts wires it; no-ops until then). */
  readonly services: SessionServices;
}

/** The services around the relay, as sessions use them. */
export interface SessionServices {
  /** Count a statement routed to a node (SHOW pool_nodes select_cnt, pool_backend_stats, metrics). */
  countStatement(nodeId: number, cls: Classification): void;
  /** A backend reported an error (SHOW pool_backend_stats, metrics). */
  countError(nodeId: number, severity: string, sqlstate: string): void;
  /**
   * A backend connection of a client session failed (failover_on_backend_error): the node
   * is checked. Resolves true when it was failed over.
   */
  reportBackendError(nodeId: number, kind: 'connect' | 'io' | 'shutdown'): Promise<boolean>;
  /** Wait (bounded) for a primary during a failover; resolves with its id or -1. */
  waitForPrimary(timeoutMs: number): Promise<number>;
  /** An admin command (SHOW pool_*, PGPOOL …) for this session, or undefined if `sql` is not one. */
  adminCommand(caller: AdminCaller, sql: string): AdminRequest | undefined;
  /** Traffic and connection counters (Prometheus). */
  readonly metrics: TrafficCounters;
}

/** The counters a session feeds (implemented by metrics/metrics.ts PgrelayMetrics). */
export interface TrafficCounters {
  clientBytesIn(n: number): void;
  clientBytesOut(n: number): void;
  backendBytesIn(nodeId: number, n: number): void;
  backendBytesOut(nodeId: number, n: number): void;
  backendConnectionOpened(nodeId: number): void;
  clientConnected(): void;
  slotWait(seconds: number): void;
  /** A WAL position was read for read-your-writes: a write's on the primary, or a standby's replay position. */
  positionRead(kind: 'write' | 'replay'): void;
  /** A read checked by read-your-writes ran on a standby or was moved to the primary, after waiting `waitedSeconds`. */
  readYourWrites(where: 'standby' | 'primary', waitedSeconds: number): void;
  /** pool_mode = transaction: a client waited this long for a pooled backend connection. */
  poolWait(seconds: number): void;
  /** pool_mode = transaction: a session keeps its backends for good (`reason`). */
  pinned(reason: string): void;
}

const ignore = (): void => undefined;

/** Services that do nothing: a relay that runs without the cluster manager, admin engine or metrics. */
export const NO_SESSION_SERVICES: SessionServices = {
  countStatement: ignore,
  countError: ignore,
  reportBackendError: () => Promise.resolve(false),
  waitForPrimary: () => Promise.resolve(-1),
  adminCommand: () => undefined,
  metrics: {
    clientBytesIn: ignore,
    clientBytesOut: ignore,
    backendBytesIn: ignore,
    backendBytesOut: ignore,
    backendConnectionOpened: ignore,
    clientConnected: ignore,
    slotWait: ignore,
    positionRead: ignore,
    readYourWrites: ignore,
    poolWait: ignore,
    pinned: ignore,
  },
};

/** Why the client's messages wait: only the matching event lets them continue. */
export type WaitReason =
  | 'replies'
  | 'catalog'
  | 'both'
  | 'admin'
  | 'connect'
  | 'backpressure'
  | 'cancel'
  | 'lsn'
  /** pool_mode = transaction: backend connections from the server pools. */
  | 'pool'
  /** A message whose wait ended while it was being handled, presented again on the next turn (session.ts resumeLost). */
  | 'requeue';
