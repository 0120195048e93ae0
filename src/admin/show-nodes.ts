/**
 * The node reports: SHOW pool_nodes (with a live probe of each node for
 * pg_status/pg_role), SHOW pool_backend_stats (statement counters) and SHOW
 * pool_health_check_stats, one row per configured node, as pgpool 4.3.
 */
import type { Config } from '../config/types.js';
import type { AdminContext, AdminNode, ProbeResult } from './context.js';
import { type AdminResult, f6, formatTimestamp, int, normalisedWeights, rowsResult } from './result.js';

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

function hostname(n: AdminNode): string {
  return n.host === '' ? '/tmp' : n.host;
}

function roleOf(ctx: AdminContext, n: AdminNode): string {
  return n.id === ctx.primaryId ? 'primary' : 'standby';
}

/** The first columns of pool_backend_stats and pool_health_check_stats. */
function nodeCells(ctx: AdminContext, n: AdminNode): string[] {
  return [String(n.id), hostname(n), String(n.port), n.status, roleOf(ctx, n)];
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

/** replication_delay as pgpool 4.4+ prints it: bytes, or seconds when delay_threshold_by_time > 0. */
export function formatReplicationDelay(
  node: Pick<AdminNode, 'delayBytes' | 'delaySeconds'>,
  isPrimary: boolean,
  cfg: Config,
): string {
  if (cfg.delay_threshold_by_time > 0) {
    const s = isPrimary ? 0 : Math.max(0, node.delaySeconds);
    return `${f6(s)} ${s >= 2 ? 'seconds' : 'second'}`;
  }
  return isPrimary ? '0' : int(Math.max(0, node.delayBytes));
}

/**
 * One node as SHOW pool_nodes reports it, as data: the admin command formats it
 * into pgpool's text cells, the dashboard's /api/nodes serialises it as JSON.
 */
export interface PoolNodeReport {
  id: number;
  hostname: string;
  port: number;
  status: AdminNode['status'];
  /** Live probe of the node ('unknown' when not probed: health_check_period 0, unused node). */
  pgStatus: 'up' | 'down' | 'unknown';
  /** Normalised load-balance weight (0..1). */
  weight: number;
  role: 'primary' | 'standby';
  /** What the node itself says (pg_is_in_recovery()); 'unknown' when not probed or sr_check_period = 0. */
  pgRole: 'primary' | 'standby' | 'unknown';
  selectCount: number;
  /** The asking session's load-balance node. */
  loadBalanceNode: boolean;
  /** Replication delay of a standby (0 for the primary), as last measured by the sr check. */
  delayBytes: number;
  delaySeconds: number;
  replicationState: string;
  replicationSyncState: string;
  /** ms since epoch */
  lastStatusChange: number;
}

/** The data of SHOW pool_nodes, one report per configured node, with a live probe of each node. */
export async function poolNodeReports(ctx: AdminContext, cfg: Config): Promise<PoolNodeReport[]> {
  const weights = normalisedWeights(ctx.nodes);
  const timeout = ctx.probeTimeoutMs ?? Math.max(100, Math.min(cfg.connect_timeout, 3000));
  const probes = await Promise.all(
    ctx.nodes.map((n) =>
      ctx.probe && n.status !== 'unused' && healthCheckPeriod(cfg, n.id) > 0
        ? probeWithTimeout(ctx.probe, n.id, timeout)
        : Promise.resolve(undefined),
    ),
  );
  return ctx.nodes.map((n, i): PoolNodeReport => {
    const isPrimary = n.id === ctx.primaryId;
    const p = probes[i];
    return {
      id: n.id,
      hostname: hostname(n),
      port: n.port,
      status: n.status,
      pgStatus: p === undefined ? 'unknown' : p.up ? 'up' : 'down',
      weight: weights[i]!,
      role: isPrimary ? 'primary' : 'standby',
      pgRole:
        p?.up && cfg.sr_check_period > 0 && p.inRecovery !== undefined
          ? p.inRecovery
            ? 'standby'
            : 'primary'
          : 'unknown',
      selectCount: Math.trunc(ctx.counters(n.id)?.select_cnt ?? 0),
      loadBalanceNode: n.id === ctx.loadBalanceNode,
      delayBytes: isPrimary ? 0 : Math.max(0, n.delayBytes),
      delaySeconds: isPrimary ? 0 : Math.max(0, n.delaySeconds),
      replicationState: isPrimary ? '' : n.replicationState,
      replicationSyncState: isPrimary ? '' : n.replicationSyncState,
      lastStatusChange: n.lastStatusChange,
    };
  });
}

/** A report as the text cells of SHOW pool_nodes (POOL_NODES_COLUMNS). */
export function poolNodeCells(r: PoolNodeReport, cfg: Config): string[] {
  return [
    String(r.id),
    r.hostname,
    String(r.port),
    r.status,
    r.pgStatus,
    f6(r.weight),
    r.role,
    r.pgRole,
    int(r.selectCount),
    r.loadBalanceNode ? 'true' : 'false',
    formatReplicationDelay(r, r.role === 'primary', cfg),
    r.replicationState,
    r.replicationSyncState,
    formatTimestamp(r.lastStatusChange),
  ];
}

export async function showPoolNodes(ctx: AdminContext, cfg: Config): Promise<AdminResult> {
  const reports = await poolNodeReports(ctx, cfg);
  return rowsResult(
    POOL_NODES_COLUMNS,
    reports.map((r) => poolNodeCells(r, cfg)),
  );
}

export function showPoolBackendStats(ctx: AdminContext): AdminResult {
  const rows = ctx.nodes.map((n) => {
    const c = ctx.counters(n.id);
    return [
      ...nodeCells(ctx, n),
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
      ...nodeCells(ctx, n),
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
