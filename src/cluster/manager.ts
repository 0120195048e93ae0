/**
 * ClusterManager: everything pgpool's main process, health-check processes and
 * sr_check worker do for a streaming-replication cluster, in one embedded
 * object (no child processes except the operator's commands). It owns the
 * cluster's node state (the NodeTable and the NodeMarks) and wires the parts
 * that act on it:
 *
 * - status-keeper.ts: node status persisted in <logdir>/pgpool_status (read at
 *   start unless -D);
 * - primary-search.ts: the primary search at start-up and after failover;
 * - health-monitor.ts: one health-check loop per node, and reportBackendError():
 *   what sessions call when a backend socket fails. Unlike pgpool, that alone
 *   never fails a node over: the node is health-checked at once (with its
 *   retries) and fails over only if the check fails too;
 * - failover-runner.ts (decisions in failover-plan.ts): failover
 *   (failover_command, primary search, follow_primary_command) and failback
 *   (failback_command);
 * - operations.ts: attach / detach / promote;
 * - sr-check.ts (decisions in replication.ts): replication delay and state,
 *   log_standby_delay, detach_false_primary, auto_failback, late primary
 *   detection.
 *
 * - authority.ts: who decides. Alone by default; with coordination = etcd
 *   (src/coordination/) the elected leader of the instances decides, the
 *   others publish their health checks and apply the leader's node state
 *   (setAuthority, failNodes, applyShared).
 *
 * Every status change is logged as JSON `{node, from, to, reason}` with the
 * message 'node status changed'.
 */
import { EventEmitter } from 'node:events';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { type DecisionAuthority, LocalAuthority, type NodeOperation } from './authority.js';
import { CheckAccess } from './check-access.js';
import type { ClusterManagerEvents, SrCheckEvent } from './events.js';
import { type FailoverOptions, FailoverRunner } from './failover-runner.js';
import type { HealthCheckResult, HealthStats } from './health.js';
import { type BackendErrorKind, HealthMonitor } from './health-monitor.js';
import { NodeMarks } from './node-marks.js';
import type { NodeChange, NodeTable } from './nodes.js';
import { OnlineRecovery } from './recovery.js';
import { NodeOperations, type OperationResult } from './operations.js';
import { PrimarySearch } from './primary-search.js';
import { SrCheck } from './sr-check.js';
import { statusFilePath } from './status-file.js';
import { StatusKeeper } from './status-keeper.js';
import { ClusterTasks } from './tasks.js';

export interface ClusterManagerOptions {
  /** -D / --discard-status: ignore <logdir>/pgpool_status at start. */
  discardStatus?: boolean;
  /** Hard limit for failover/follow_primary/failback commands (default 60 s). */
  commandTimeoutMs?: number;
  /** How long detach/promote({gracefully}) wait for sessions (default: recovery_timeout, as pgpool). */
  gracefulDetachTimeoutMs?: number;
  /** Override the status file path (default <logdir>/pgpool_status). */
  statusFile?: string;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

export class ClusterManager extends EventEmitter<ClusterManagerEvents> {
  private readonly tasks: ClusterTasks;
  private readonly marks = new NodeMarks();
  private readonly statusFile: StatusKeeper;
  private readonly search: PrimarySearch;
  private readonly failover: FailoverRunner;
  private readonly health: HealthMonitor;
  private readonly sr: SrCheck;
  private readonly ops: NodeOperations;
  private readonly recovery: OnlineRecovery;
  private started = false;
  /** Who decides (LocalAuthority unless setAuthority()); the parts reach it through `gate`. */
  private authority: DecisionAuthority;
  private readonly gate: DecisionAuthority;
  /** Coordination: the leader reported a primary failover in progress. */
  private sharedFailover = false;
  private sessionsOnNode: (id: number) => number = () => 0;
  private readonly onChange = (ev: NodeChange): void => this.nodeChanged(ev);
  private readonly onPrimary = (ev: { from: number; to: number; reason: string }): void => {
    this.log.info(
      { from: ev.from, to: ev.to, node: ev.to, reason: ev.reason },
      ev.to >= 0 ? 'primary node changed' : 'no primary node',
    );
  };

  constructor(
    readonly nodes: NodeTable,
    private readonly getConfig: () => Config,
    private readonly log: Logger,
    private readonly opts: ClusterManagerOptions = {},
  ) {
    super();
    const tasks = new ClusterTasks(log);
    const access = new CheckAccess(getConfig);
    this.tasks = tasks;
    this.statusFile = new StatusKeeper(opts.statusFile ?? statusFilePath(getConfig().logdir), nodes, log);
    this.search = new PrimarySearch(nodes, getConfig, log, tasks, access);
    this.failover = new FailoverRunner(
      nodes,
      getConfig,
      log,
      tasks,
      this,
      this.search,
      this.marks,
      opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
    );
    this.authority = new LocalAuthority((id, reason) => this.failNodes([id], reason));
    this.gate = {
      decides: () => this.authority.decides(),
      nodeFailed: (id, reason) => this.authority.nodeFailed(id, reason),
      nodeOk: (id) => this.authority.nodeOk(id),
      forward: (op) => this.authority.forward(op),
    };
    this.health = new HealthMonitor(
      nodes,
      getConfig,
      log,
      tasks,
      this,
      access,
      this.failover,
      this.search,
      this.marks,
      this.gate,
    );
    this.sr = new SrCheck(nodes, getConfig, log, tasks, this, access, this.failover, this.marks, this.gate);
    this.ops = new NodeOperations(
      nodes,
      tasks,
      this.failover,
      this.marks,
      (id) => this.sessionsOnNode(id),
      () => opts.gracefulDetachTimeoutMs ?? getConfig().recovery_timeout * 1000,
      log,
    );
    this.recovery = new OnlineRecovery(nodes, getConfig, log, tasks, (id) => this.ops.attach(id));
  }

  // ------------------------------------------------------------------ public state

  /** True from the moment a primary fails until the new primary is known (or the search gave up). */
  get failoverInProgress(): boolean {
    return this.failover.inProgress || this.sharedFailover;
  }

  /** Coordination: from now on `a` decides (call before start()). */
  setAuthority(a: DecisionAuthority): void {
    this.authority = a;
  }

  /** Whether this instance decides node state changes now (always, without coordination). */
  get decides(): boolean {
    return this.authority.decides();
  }

  /** Fail nodes over here (the decision is made): pgpool's failover(), in the status queue. */
  failNodes(ids: number[], reason: string, o: FailoverOptions = {}): Promise<void> {
    return this.tasks.serial(() => this.failover.degenerate(ids, reason, o));
  }

  /**
   * Coordination: apply the node state the leader decided (`apply` calls the
   * NodeTable's mutators), in the status queue; `failoverInProgress` tells
   * sessions to wait for the new primary as during a local failover.
   */
  applyShared(apply: () => void, failoverInProgress: boolean): Promise<void> {
    return this.tasks.serial(async () => {
      this.sharedFailover = failoverInProgress;
      apply();
      this.emit('shared-state');
    });
  }

  /** SHOW pool_health_check_stats counters of a node. */
  healthStats(id: number): HealthStats | undefined {
    return this.health.healthStats(id);
  }

  /** The session layer tells how many client sessions use a node (for detach({gracefully})). */
  setSessionsOnNode(fn: (id: number) => number): void {
    this.sessionsOnNode = fn;
  }

  /**
   * Resolve with the primary's id once it is known and no failover is in
   * progress, or -1 after timeoutMs. Resolves at once in the normal case, and
   * at once with -1 when no primary is known and no failover is running: the
   * background search (search_primary_node_timeout) may take minutes, and a
   * client is better told now than after a wait that ends the same way.
   */
  waitForPrimary(timeoutMs: number): Promise<number> {
    const ready = (): number => (!this.failover.inProgress && this.nodes.primaryNode() ? this.nodes.primaryId : -1);
    const now = ready();
    if (now >= 0 || timeoutMs <= 0 || this.tasks.stopped || !this.failoverInProgress) return Promise.resolve(now);
    return new Promise((resolve) => {
      const check = (): void => {
        const id = ready();
        // A failover that ended without a primary ends the wait too.
        if (id >= 0 || !this.failoverInProgress) finish(id);
      };
      const finish = (id: number): void => {
        clearTimeout(timer);
        this.nodes.removeListener('primary', check);
        this.nodes.removeListener('change', check);
        this.removeListener('failover-done', check);
        this.removeListener('shared-state', check);
        resolve(id);
      };
      const timer = setTimeout(() => finish(ready()), timeoutMs);
      this.nodes.on('primary', check);
      this.nodes.on('change', check);
      this.on('failover-done', check);
      this.on('shared-state', check);
    });
  }

  // ------------------------------------------------------------------ life cycle

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.nodes.on('change', this.onChange);
    this.nodes.on('primary', this.onPrimary);
    this.statusFile.load(this.opts.discardStatus ?? false);

    // Start-up primary search: the first round now; if no primary yet, keep
    // searching in the background (sessions use waitForPrimary()).
    const answered = new Set<number>();
    const cfg = this.getConfig();
    let primary = await this.search.round(answered, 'start-up');
    if (primary >= 0) this.nodes.setPrimary(primary, 'primary search at start-up');
    else {
      this.log.warn(
        'no primary found among the backends yet; searching again every second (search_primary_node_timeout)',
      );
      this.tasks.track(
        (async () => {
          primary = await this.search.repeat(cfg.search_primary_node_timeout, answered, 'start-up');
          if (primary >= 0 && this.nodes.primaryId < 0) this.nodes.setPrimary(primary, 'primary search at start-up');
          else if (primary < 0)
            this.log.warn(
              { timeout: cfg.search_primary_node_timeout },
              'find_primary_node: no primary node found; writes fail until one appears (the sr check keeps looking)',
            );
          this.health.checkUnanswered(answered);
        })(),
      );
    }
    if (primary >= 0) this.health.checkUnanswered(answered);

    for (const n of this.nodes.all()) this.tasks.track(this.health.loop(n.id));
    this.tasks.track(this.sr.loop());
  }

  async stop(): Promise<void> {
    if (this.tasks.stopped) return;
    this.tasks.halt();
    this.sr.closeAll(true);
    await this.tasks.drain(this.health.running());
    this.nodes.removeListener('change', this.onChange);
    this.nodes.removeListener('primary', this.onPrimary);
  }

  // ------------------------------------------------------------------ health and sr checks

  /** A client session's backend socket failed on a node: see HealthMonitor.reportBackendError. */
  reportBackendError(nodeId: number, kind: BackendErrorKind): Promise<boolean> {
    return this.health.reportBackendError(nodeId, kind);
  }

  /** Run a health check of a node now (shared with any check already running). */
  checkNode(id: number, trigger = 'manual'): Promise<HealthCheckResult> {
    return this.health.check(id, trigger);
  }

  /** One sr check cycle (exposed for tests and the admin layer). */
  srCheckOnce(): Promise<SrCheckEvent> {
    return this.sr.once();
  }

  // ------------------------------------------------------------------ operations

  /** pcp_attach_node: the node becomes `waiting` (used → `up`) and failback_command runs. */
  attach(id: number): Promise<OperationResult> {
    return this.forwarded({ op: 'attach', node: id }) ?? this.ops.attach(id);
  }

  /** pcp_detach_node; with gracefully, first wait until no session uses the node. */
  async detach(id: number, o: { gracefully?: boolean } = {}): Promise<OperationResult> {
    if (this.authority.decides()) return this.ops.detach(id, o);
    // Coordination, another instance decides: wait for this instance's own sessions here, then ask it.
    if (o.gracefully) await this.ops.drain(id);
    return this.forwarded({ op: 'detach', node: id }) ?? this.ops.detach(id, o);
  }

  /** pcp_promote_node [-s] [-g]; with gracefully, first wait until no session uses the current primary. */
  async promote(id: number, o: { switchover?: boolean; gracefully?: boolean } = {}): Promise<OperationResult> {
    if (this.authority.decides()) return this.ops.promote(id, o);
    // Coordination, another instance decides: wait for this instance's own sessions here, then ask it.
    if (o.gracefully) await this.ops.drainPrimary(id);
    return (
      this.forwarded({ op: 'promote', node: id, switchover: o.switchover ?? false }) ??
      this.ops.promote(id, { switchover: o.switchover })
    );
  }

  private forwarded(op: NodeOperation): Promise<OperationResult> | undefined {
    if (this.authority.decides()) return undefined;
    this.ops.check(op.node);
    return this.authority.forward(op);
  }

  /** pcp_recovery_node: online recovery of a down standby (recovery.ts). */
  recover(id: number): Promise<void> {
    return this.recovery.recover(id);
  }

  // ------------------------------------------------------------------ node state

  private nodeChanged(ev: NodeChange): void {
    if (ev.from.status !== ev.to.status) {
      const fields = { node: ev.id, from: ev.from.status, to: ev.to.status, role: ev.to.role, reason: ev.reason };
      // pgpool_status first: whoever reads the log line (a script, a test) finds the file saying so.
      this.statusFile.save();
      if (ev.to.status === 'down') this.log.warn(fields, 'node status changed');
      else this.log.info(fields, 'node status changed');
      if (ev.to.status === 'down') this.emit('node-down', { node: ev.id, reason: ev.reason });
      else if (ev.from.status === 'down') this.emit('node-up', { node: ev.id, reason: ev.reason });
    }
    if (ev.from.role !== ev.to.role)
      this.log.info({ node: ev.id, from: ev.from.role, to: ev.to.role, reason: ev.reason }, 'node role changed');
  }
}
