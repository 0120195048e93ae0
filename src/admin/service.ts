/**
 * Glue between sessions and the admin engine: recognises admin commands in a
 * session's statement text (cheaply, on every Query/Parse) and runs them against
 * the live process state. Also keeps the per-node statement counters behind
 * SHOW pool_nodes (select_cnt) and SHOW pool_backend_stats.
 */
import type { Config } from '../config/types.js';
import type { NodeTable } from '../cluster/nodes.js';
import type { ConnectionCache } from '../pool/cache.js';
import type { BackendConnection } from '../pool/connector.js';
import type { Classification } from '../router/classifier.js';
import { type AdminCommand, mayBeAdminCommand, parseAdminCommand } from './commands.js';
import type {
  AdminContext,
  AdminInstance,
  AdminOperations,
  AdminSessionInfo,
  HealthCheckStats,
  NodeStatementCounters,
  ProbeResult,
  SessionParamOverlay,
} from './context.js';
import { executeAdmin } from './engine.js';
import type { AdminResult } from './result.js';

export interface AdminRequest {
  run(): Promise<AdminResult>;
  /** It returns no rows: a Describe answers NoData without running it. */
  noRows?: boolean;
  /** Refused in an aborted transaction (25P02), as PostgreSQL refuses all but its end. */
  refusedWhenAborted?: boolean;
}

/** The session asking: who it is, its PGPOOL SET values and its load-balance node. */
export interface AdminCaller {
  readonly user: string;
  readonly adminParams: SessionParamOverlay;
  readonly lbNodeId: number;
}

export interface AdminServiceDeps {
  config(): Config;
  nodes: NodeTable;
  cache: ConnectionCache;
  /** pool_mode = transaction: the server pools (their idle connections are listed with the cached ones). */
  pools?: { idleConnections(): Iterable<BackendConnection> };
  registry: { all(): Iterable<AdminSessionInfo> };
  version: string;
  startedAt: number;
  healthStats?(nodeId: number): HealthCheckStats | undefined;
  probe?(nodeId: number): Promise<ProbeResult>;
  ops?: AdminOperations;
  instances?(): AdminInstance[];
}

function zeroCounters(): NodeStatementCounters {
  return {
    select_cnt: 0,
    insert_cnt: 0,
    update_cnt: 0,
    delete_cnt: 0,
    ddl_cnt: 0,
    other_cnt: 0,
    panic_cnt: 0,
    fatal_cnt: 0,
    error_cnt: 0,
  };
}

export class AdminService {
  private readonly counters: NodeStatementCounters[] = [];

  constructor(private readonly deps: AdminServiceDeps) {}

  /** Count a statement sent to a node, by pgpool's statement kinds. */
  countStatement(nodeId: number, cls: Classification): void {
    const c = (this.counters[nodeId] ??= zeroCounters());
    switch (cls.kind) {
      case 'select':
        c.select_cnt++;
        break;
      case 'insert':
        c.insert_cnt++;
        break;
      case 'update':
        c.update_cnt++;
        break;
      case 'delete':
        c.delete_cnt++;
        break;
      case 'create':
        c.ddl_cnt++;
        break;
      default:
        c.other_cnt++;
    }
  }

  /** Count an error a node reported, by severity. */
  countError(nodeId: number, severity: string): void {
    const c = (this.counters[nodeId] ??= zeroCounters());
    if (severity === 'PANIC') c.panic_cnt++;
    else if (severity === 'FATAL') c.fatal_cnt++;
    else c.error_cnt++;
  }

  /** An admin request for `sql` from `session`, or undefined when it is ordinary SQL. */
  request(session: AdminCaller, sql: string): AdminRequest | undefined {
    if (!mayBeAdminCommand(sql)) return undefined;
    const cmd = parseAdminCommand(sql);
    if (!cmd) return undefined;
    return { run: () => executeAdmin(cmd, this.context(session)) };
  }

  /**
   * Run a command for a caller authenticated elsewhere (the PCP port, against
   * pcp.conf): an administrator whatever admin_users says, with no session.
   */
  executeTrusted(cmd: AdminCommand, user: string): Promise<AdminResult> {
    return executeAdmin(cmd, this.context({ user, adminParams: new Map(), lbNodeId: -1 }, { isAdminUser: () => true }));
  }

  /**
   * The live process state as the admin engine reads it, for `caller`. The SQL
   * admin commands and the dashboard's JSON API both read through it: one
   * source for what SHOW pool_nodes, pool_pools… and /api/* report.
   */
  context(caller: AdminCaller, over: Partial<AdminContext> = {}): AdminContext {
    const d = this.deps;
    return {
      config: d.config(),
      user: caller.user,
      sessionParams: caller.adminParams,
      nodes: d.nodes.all(),
      primaryId: d.nodes.primaryId,
      counters: (id) => this.counters[id],
      healthStats: d.healthStats,
      loadBalanceNode: caller.lbNodeId,
      probe: d.probe,
      sessions: () => d.registry.all(),
      cachedConnections: () =>
        [...d.cache.entries(), ...(d.pools?.idleConnections() ?? [])].map((c) => ({
          nodeId: c.nodeId,
          pid: c.pid,
          params: c.startup,
          createdAt: c.createdAt,
          releasedAt: c.releasedAt,
          useCount: c.useCount,
        })),
      version: d.version,
      processStartedAt: d.startedAt,
      ops: d.ops,
      ...(d.instances ? { instances: d.instances } : {}),
      ...over,
    };
  }

  /** Statement counters of a node (undefined = none counted yet). */
  nodeCounters(nodeId: number): Readonly<NodeStatementCounters> | undefined {
    return this.counters[nodeId];
  }
}
