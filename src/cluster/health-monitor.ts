/**
 * The health checks of the running cluster: one independent loop per node (a
 * failing node never delays another, and clients never wait for it), checks
 * asked for by sessions whose backend socket failed, and the failover a failed
 * check leads to. One check of a node runs at a time; concurrent requests share
 * it. The check itself (connect + authenticate, with retries) is health.ts.
 */
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import type { DecisionAuthority } from './authority.js';
import type { CheckAccess } from './check-access.js';
import type { ClusterEvents } from './events.js';
import type { FailoverRunner } from './failover-runner.js';
import { type HealthCheckResult, type HealthStats, HealthStatsRecorder, healthCheckWithRetries } from './health.js';
import type { NodeMarks } from './node-marks.js';
import type { NodeTable } from './nodes.js';
import type { PrimarySearch } from './primary-search.js';
import type { ClusterTasks } from './tasks.js';

export type BackendErrorKind = 'connect' | 'io' | 'shutdown';

/** The setting that decides whether a backend error of this kind may lead to a failover. */
export function backendErrorSetting(
  kind: BackendErrorKind,
): 'failover_on_backend_shutdown' | 'failover_on_backend_error' {
  return kind === 'shutdown' ? 'failover_on_backend_shutdown' : 'failover_on_backend_error';
}

export class HealthMonitor {
  private readonly stats: HealthStatsRecorder[];
  /** Running health checks, one per node (coalesces loop checks and backend-error reports). */
  private readonly inflight = new Map<number, Promise<HealthCheckResult>>();

  constructor(
    private readonly nodes: NodeTable,
    private readonly getConfig: () => Config,
    private readonly log: Logger,
    private readonly tasks: ClusterTasks,
    private readonly events: ClusterEvents,
    private readonly access: CheckAccess,
    private readonly failover: FailoverRunner,
    private readonly search: PrimarySearch,
    private readonly marks: NodeMarks,
    private readonly authority: DecisionAuthority,
  ) {
    this.stats = nodes.all().map(() => new HealthStatsRecorder());
  }

  /** SHOW pool_health_check_stats counters of a node. */
  healthStats(id: number): HealthStats | undefined {
    return this.stats[id]?.snapshot();
  }

  /** The checks running now (stop() waits for them). */
  running(): Iterable<Promise<HealthCheckResult>> {
    return this.inflight.values();
  }

  /**
   * The loop of one node: a check every health_check_period. A down node's turn counts
   * as skipped; while no primary is known it is asked whether it is one (see reclaim),
   * every second when health checks are off.
   */
  async loop(id: number): Promise<void> {
    while (!this.tasks.stopped) {
      const hc = this.access.healthConfig(id);
      const n = this.nodes.get(id);
      if (hc.period <= 0 || !n || n.status === 'unused') {
        // Health checks off (pgpool's default): a down node is still asked, while no primary
        // is known, whether it is one — a primary marked down after a backend error (a crash
        // restarts every session) with no live node left would otherwise stay down for good.
        if (n?.status === 'down') await this.reclaimLogged(id);
        await this.tasks.sleep(1000);
        continue;
      }
      const t0 = Date.now();
      if (n.status === 'down') {
        this.stats[id]?.skipped();
        await this.reclaimLogged(id);
      } else await this.check(id, 'health check').catch(() => undefined);
      await this.tasks.sleep(Math.max(0, hc.period * 1000 - (Date.now() - t0)));
    }
  }

  private reclaimLogged(id: number): Promise<void> {
    return this.reclaim(id).catch((e: unknown) =>
      this.log.error({ node: id, err: (e as Error).message }, 'taking a down node back failed'),
    );
  }

  /**
   * No primary is known (its node was marked down, e.g. after a stall, and no other
   * took over): a down node that answers as a primary is taken back, unless an operator
   * detached it or another live node is the primary. Without this a primary that
   * stalled for a few seconds would stay down until a restart with -D.
   */
  private async reclaim(id: number): Promise<void> {
    const n = this.nodes.get(id);
    if (n?.status !== 'down' || this.marks.operatorDetached.has(id)) return;
    if (!this.authority.decides()) return;
    if (this.nodes.primaryId >= 0 || this.failover.inProgress) return;
    if (!(await this.search.answersAsPrimary(n))) return;
    await this.tasks.serial(async () => {
      if (this.nodes.primaryId >= 0 || this.failover.inProgress) return;
      // A live node that became primary meanwhile wins over the down one.
      const live = await this.search.round();
      if (live >= 0) this.nodes.setPrimary(live, 'primary search while no primary was known');
      else await this.failover.takeBack(id, 'down node answers as the primary and no other primary is known');
    });
  }

  /**
   * A client session's backend socket failed on node `nodeId`. With
   * failover_on_backend_error ('connect' / 'io') or failover_on_backend_shutdown
   * ('shutdown': 57P01/57P02 from the backend) the node is health-checked at
   * once, with its retries, and fails over only if that check fails too.
   * Concurrent reports for a node share one check. Resolves true when the node
   * was failed over. Never rejects; sessions need not await it.
   */
  async reportBackendError(nodeId: number, kind: BackendErrorKind): Promise<boolean> {
    const n = this.nodes.get(nodeId);
    if (!n || this.tasks.stopped || n.status === 'down' || n.status === 'unused') return false;
    const setting = backendErrorSetting(kind);
    if (!this.getConfig()[setting]) {
      this.log.debug({ node: nodeId, kind }, `backend error on node ${nodeId}: no failover (${setting} is off)`);
      return false;
    }
    this.log.info(
      { node: nodeId, kind },
      `backend error on node ${nodeId} (${kind}): checking the node before any failover`,
    );
    try {
      const r = await this.check(nodeId, 'backend error');
      return !r.ok && this.nodes.get(nodeId)?.status === 'down';
    } catch {
      return false;
    }
  }

  /** Run a health check of a node now (shared with any check already running). */
  check(id: number, trigger = 'manual'): Promise<HealthCheckResult> {
    const running = this.inflight.get(id);
    if (running) return running;
    const p = this.doCheck(id, trigger).finally(() => this.inflight.delete(id));
    this.inflight.set(id, p);
    return p;
  }

  /** Nodes that did not answer the start-up search: a health check with retries decides (and fails them over). */
  checkUnanswered(answered: Set<number>): void {
    for (const n of this.nodes.all()) {
      if (answered.has(n.id) || n.status === 'down' || n.status === 'unused') continue;
      this.tasks.track(this.check(n.id, 'start-up'));
    }
  }

  private async doCheck(id: number, trigger: string): Promise<HealthCheckResult> {
    const n = this.nodes.get(id);
    if (!n) return { ok: false, retries: 0, durationMs: 0, error: 'no such node' };
    const hc = this.access.healthConfig(id);
    const r = await healthCheckWithRetries(
      n,
      hc,
      this.access.healthCredentials(hc),
      () => !this.tasks.stopped && n.status !== 'down',
      (ms) => this.tasks.sleep(ms),
    );
    if (this.tasks.stopped || r.error === 'aborted') return r;
    this.stats[id]?.checked(r.ok, r.retries, r.durationMs);
    this.events.emit('healthcheck', {
      node: id,
      ok: r.ok,
      durationMs: r.durationMs,
      retries: r.retries,
      trigger,
      error: r.error,
    });
    if (r.ok) {
      this.authority.nodeOk(id);
      if (r.retries > 0)
        this.log.info(
          { node: id, retries: r.retries },
          `health check of node ${id} succeeded after ${r.retries} retr${r.retries === 1 ? 'y' : 'ies'}`,
        );
      return r;
    }
    if (n.status === 'down') return r;
    this.log.warn(
      { node: id, host: n.host, port: n.port, retries: r.retries, err: r.error, trigger },
      `health check failed on node ${id}`,
    );
    if (!n.config.allow_to_failover) {
      this.log.warn({ node: id }, `node ${id} failed but has DISALLOW_TO_FAILOVER: not failing over`);
      return r;
    }
    const reason = `health check failed (${trigger}): ${r.error ?? 'error'}`;
    await this.authority.nodeFailed(id, reason);
    return r;
  }
}
