/**
 * The streaming-replication check (pgpool's sr_check worker): every
 * sr_check_period, over persistent connections, each node's recovery state, LSN
 * and WAL receiver, and the primary's pg_stat_replication. From them: the
 * replication delay and state of each standby (for load balancing and SHOW
 * pool_nodes), log_standby_delay, detach_false_primary, late primary detection
 * and auto_failback. The decisions are replication.ts; this file does the I/O
 * and acts on them.
 */
import type { DecisionAuthority } from './authority.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { type CheckAccess, srQueryTimeoutMs } from './check-access.js';
import { parseLsn } from '../protocol/lsn.js';
import { CheckConnection, type CheckCredentials, type Row } from './conn.js';
import type { ClusterEvents, SrCheckEvent, SrCheckNodeInfo } from './events.js';
import type { FailoverRunner } from './failover-runner.js';
import { attemptTimeoutMs, healthAttempt } from './health.js';
import type { NodeMarks } from './node-marks.js';
import { isLive, type NodeState, type NodeTable } from './nodes.js';
import {
  falsePrimaries,
  latePrimary,
  mayFailBack,
  type NodeSample,
  noAnswer,
  nodeSample,
  nodesNotInRecovery,
  PRIMARY_REPLICATION,
  standbyDelayLog,
  standbyReplication,
} from './replication.js';
import type { ClusterTasks } from './tasks.js';

const SR_NODE_SQL =
  'SELECT pg_catalog.pg_is_in_recovery() AS rec, ' +
  '(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END)::text AS lsn, ' +
  'w.status AS wr_status, w.sender_host AS wr_host, w.sender_port::text AS wr_port ' +
  'FROM (SELECT 1) AS one LEFT JOIN (SELECT status, sender_host, sender_port FROM pg_catalog.pg_stat_wal_receiver LIMIT 1) AS w ON true';
const SR_PRIMARY_SQL =
  'SELECT application_name, state, sync_state, (EXTRACT(EPOCH FROM replay_lag) * 1000000)::bigint::text AS lag_us FROM pg_catalog.pg_stat_replication';

/** Warnings about false primaries repeat at most this often. */
const FALSE_PRIMARY_WARN_MS = 60_000;

export class SrCheck {
  private readonly conns = new Map<number, CheckConnection>();
  private falsePrimaryWarnedAt = 0;

  constructor(
    private readonly nodes: NodeTable,
    private readonly getConfig: () => Config,
    private readonly log: Logger,
    private readonly tasks: ClusterTasks,
    private readonly events: ClusterEvents,
    private readonly access: CheckAccess,
    private readonly failover: FailoverRunner,
    private readonly marks: NodeMarks,
    private readonly authority: DecisionAuthority,
  ) {}

  async loop(): Promise<void> {
    while (!this.tasks.stopped) {
      const period = this.getConfig().sr_check_period;
      if (period <= 0) {
        this.closeAll(false);
        await this.tasks.sleep(1000);
        continue;
      }
      const t0 = Date.now();
      try {
        await this.once();
      } catch (e) {
        this.log.error({ err: (e as Error).stack ?? String(e) }, 'sr check cycle failed');
      }
      await this.tasks.sleep(Math.max(0, period * 1000 - (Date.now() - t0)));
    }
  }

  /** Close the persistent connections (`hard`: destroy the sockets without Terminate). */
  closeAll(hard: boolean): void {
    for (const c of this.conns.values()) c.close(hard);
    this.conns.clear();
  }

  /** One sr check cycle. */
  async once(): Promise<SrCheckEvent> {
    const t0 = Date.now();
    const cfg = this.getConfig();
    const cred = this.access.srCredentials(cfg);
    const timeout = srQueryTimeoutMs(cfg);
    const nodes = this.nodes.all();
    const samples = await this.sample(nodes, cred, timeout, cfg.auto_failback);
    if (this.tasks.stopped) return { primary: this.nodes.primaryId, durationMs: Date.now() - t0, nodes: [] };

    // With coordination only the leader changes the node state (the others apply what it publishes).
    const decides = this.authority.decides();
    const notInRecovery = nodesNotInRecovery(nodes, samples);
    if (notInRecovery.length > 1 && decides)
      this.handleFalsePrimaries(notInRecovery, samples, cfg.detach_false_primary);
    if (this.nodes.primaryId < 0 && !this.failover.inProgress && decides) {
      const p = latePrimary(nodes, notInRecovery);
      if (p) this.nodes.setPrimary(p.id, 'sr check found a node not in recovery');
    }

    const primary = this.nodes.primaryNode();
    const pSample = primary ? samples.get(primary.id) : undefined;
    const primaryLsn = parseLsn(pSample?.lsn);
    let repl: Row[] = [];
    if (primary && pSample?.ok) {
      try {
        repl = await this.query(primary, cred, SR_PRIMARY_SQL, timeout);
      } catch (e) {
        this.log.debug({ node: primary.id, err: (e as Error).message }, 'sr check: pg_stat_replication query failed');
      }
    }
    const info: SrCheckNodeInfo[] = [];
    for (const n of nodes) {
      const s = samples.get(n.id);
      if (primary && n.id === primary.id) {
        this.nodes.setReplication(n.id, PRIMARY_REPLICATION);
      } else if (n.status !== 'unused') {
        this.nodes.setReplication(n.id, standbyReplication(n, s, primaryLsn, repl));
        // Read-your-writes checks start from this position (session/read-your-writes.ts).
        const replayed = s?.ok && s.inRecovery === true ? parseLsn(s.lsn) : undefined;
        if (replayed !== undefined && isLive(n.status)) this.nodes.noteReplayPosition(n.id, replayed);
        if (isLive(n.status) && primary && s?.ok) {
          const line = standbyDelayLog(n, primary.id, cfg);
          if (line) this.log.info(line.fields, line.message);
        }
      }
      info.push({
        id: n.id,
        status: n.status,
        inRecovery: s?.inRecovery ?? null,
        lsn: s?.lsn ?? null,
        delayBytes: n.delayBytes,
        delaySeconds: n.delaySeconds,
        replicationState: n.replicationState,
        replicationSyncState: n.replicationSyncState,
      });
    }

    if (cfg.auto_failback && primary && !this.failover.inProgress && decides)
      await this.autoFailback(primary, samples, cfg);

    const ev: SrCheckEvent = { primary: this.nodes.primaryId, durationMs: Date.now() - t0, nodes: info };
    this.events.emit('srcheck', ev);
    return ev;
  }

  /** The node query on every live node (and on down ones for auto_failback); others lose their connection. */
  private async sample(
    nodes: readonly NodeState[],
    cred: CheckCredentials,
    timeout: number,
    wantDown: boolean,
  ): Promise<Map<number, NodeSample>> {
    const samples = new Map<number, NodeSample>();
    await Promise.all(
      nodes.map(async (n) => {
        const live = isLive(n.status);
        if (!live && !(wantDown && n.status === 'down')) {
          const c = this.conns.get(n.id);
          if (c) {
            c.close();
            this.conns.delete(n.id);
          }
          return;
        }
        try {
          samples.set(n.id, nodeSample((await this.query(n, cred, SR_NODE_SQL, timeout))[0]));
        } catch (e) {
          if (live) this.log.debug({ node: n.id, err: (e as Error).message }, 'sr check: node did not answer');
          samples.set(n.id, noAnswer());
        }
      }),
    );
    return samples;
  }

  private async query(n: NodeState, cred: CheckCredentials, sql: string, timeoutMs: number): Promise<Row[]> {
    let c = this.conns.get(n.id);
    if (c?.dead) {
      this.conns.delete(n.id);
      c = undefined;
    }
    if (!c) {
      c = await CheckConnection.open(n, cred, timeoutMs, 'pgrelay sr check');
      if (this.tasks.stopped) {
        c.close(true);
        throw new Error('stopped');
      }
      this.conns.set(n.id, c);
    }
    try {
      return await c.query(sql, timeoutMs);
    } catch (e) {
      c.close(true);
      this.conns.delete(n.id);
      throw e;
    }
  }

  private warnFalsePrimary(fields: Record<string, unknown>, message: string): void {
    if (Date.now() - this.falsePrimaryWarnedAt > FALSE_PRIMARY_WARN_MS) this.log.warn(fields, message);
    this.falsePrimaryWarnedAt = Date.now();
  }

  /** Several live nodes answer pg_is_in_recovery() = false: keep the one the streaming standbys follow. */
  private handleFalsePrimaries(cands: NodeState[], samples: Map<number, NodeSample>, detach: boolean): void {
    const v = falsePrimaries(this.nodes.all(), cands, samples);
    if ('votes' in v) {
      this.warnFalsePrimary(
        { nodes: cands.map((c) => c.id), votes: Object.fromEntries(v.votes) },
        'several primaries have streaming standbys; cannot tell the true primary, nothing detached',
      );
      return;
    }
    const { keep, falsePrimaries: others } = v;
    if (others.length === 0) return;
    if (!detach) {
      this.warnFalsePrimary(
        { primary: keep, falsePrimaries: others },
        'false primary detected (detach_false_primary is off)',
      );
      return;
    }
    if (
      this.nodes.primaryId !== keep &&
      !this.failover.inProgress &&
      this.nodes.primaryId >= 0 &&
      others.includes(this.nodes.primaryId)
    ) {
      // Our primary is the false one: switch the view before detaching it.
      this.nodes.setPrimary(keep, 'detach_false_primary: the standbys follow this node');
    }
    this.log.warn({ primary: keep, detached: others }, 'detach_false_primary: detaching false primary node(s)');
    const reason = `false primary (standbys follow node ${keep})`;
    this.tasks.track(this.tasks.serial(() => this.failover.degenerate(others, reason)));
  }

  /** auto_failback: a down standby that streams from the current primary comes back. */
  private async autoFailback(primary: NodeState, samples: Map<number, NodeSample>, cfg: Config): Promise<void> {
    for (const n of this.nodes.all()) {
      if (!mayFailBack(n, samples.get(n.id), primary, this.marks, cfg.auto_failback_interval, Date.now())) continue;
      const hc = this.access.healthConfig(n.id);
      try {
        await healthAttempt(n, this.access.healthCredentials(hc), attemptTimeoutMs(hc));
      } catch {
        continue;
      }
      const why = this.marks.followDetached.has(n.id)
        ? 'auto_failback: streaming from the new primary after follow_primary_command'
        : 'auto_failback: streaming from the primary again';
      await this.tasks.serial(() => this.failover.failback(n.id, why));
    }
  }
}
