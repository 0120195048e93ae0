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
export function formatReplicationDelay(node: AdminNode, isPrimary: boolean, cfg: Config): string {
  if (cfg.delay_threshold_by_time > 0) {
    const s = isPrimary ? 0 : Math.max(0, node.delaySeconds);
    return `${f6(s)} ${s >= 2 ? 'seconds' : 'second'}`;
  }
  return isPrimary ? '0' : int(Math.max(0, node.delayBytes));
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
