/**
 * ClusterManager: everything pgpool's main process, health-check processes and
 * sr_check worker do for a streaming-replication cluster, in one embedded
 * object (no child processes except the operator's commands):
 *
 * - node status persisted in <logdir>/pgpool_status (read at start unless -D);
 * - primary search at start-up and after failover (pg_is_in_recovery() on every
 *   live node about once a second, up to search_primary_node_timeout);
 * - one independent health-check loop per node (connect + authenticate, with
 *   retries); a failing node never delays another, and clients never wait for it;
 * - reportBackendError(): what sessions call when a backend socket fails. Unlike
 *   pgpool, that alone never fails a node over: the node is health-checked at
 *   once (with its retries) and fails over only if the check fails too;
 * - failover (failover_command, primary search, follow_primary_command),
 *   failback (failback_command), attach / detach / promote;
 * - the sr check: persistent connections per node, replication delay in bytes
 *   and seconds, replication state, log_standby_delay, detach_false_primary,
 *   auto_failback, late primary detection.
 *
 * Every status change is logged as JSON `{node, from, to, reason}` with the
 * message 'node status changed'.
 */
import { EventEmitter } from 'node:events';
import type { Config, HealthCheckConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { isLive, mainNodeId, type NodeChange, type NodeState, type NodeTable } from './nodes.js';
import {
  CheckConnection,
  credentials,
  oneShotQuery,
  parseLsn,
  srCheckCredentials,
  type CheckCredentials,
  type Row,
} from './conn.js';
import {
  expandPlaceholders,
  newMainCandidate,
  placeholderNode,
  runShellCommand,
  type CommandResult,
} from './failover.js';
import {
  HealthStatsRecorder,
  healthAttempt,
  attemptTimeoutMs,
  healthCheckWithRetries,
  type HealthCheckResult,
  type HealthStats,
} from './health.js';
import { readStatusFile, statusFilePath, writeStatusFile } from './status-file.js';
import { PoolPasswdCache } from '../auth/credentials.js';

export type BackendErrorKind = 'connect' | 'io' | 'shutdown';

export interface ClusterManagerOptions {
  /** -D / --discard-status: ignore <logdir>/pgpool_status at start. */
  discardStatus?: boolean;
  /** Hard limit for failover/follow_primary/failback commands (default 60 s). */
  commandTimeoutMs?: number;
  /** How long detach({gracefully}) waits for sessions on the node (default 90 s, pgpool's recovery_timeout). */
  gracefulDetachTimeoutMs?: number;
  /** Override the status file path (default <logdir>/pgpool_status). */
  statusFile?: string;
}

export type ClusterErrorCode = 'NO_SUCH_NODE' | 'NODE_UNUSED' | 'INVALID_STATE' | 'NO_PRIMARY' | 'STOPPED' | 'TIMEOUT';

export class ClusterError extends Error {
  constructor(
    readonly code: ClusterErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ClusterError';
  }
}

export interface OperationResult {
  node: number;
  /** False when the node already was in the requested state. */
  changed: boolean;
  status: NodeState['status'];
  /** Primary after the operation (-1 when none). */
  primary: number;
  message: string;
}

// ---- event payloads
export interface HealthCheckEvent {
  node: number;
  ok: boolean;
  durationMs: number;
  retries: number;
  /** 'health check' (periodic), 'backend error' (reportBackendError), 'manual'. */
  trigger: string;
  error?: string;
}
export interface SrCheckNodeInfo {
  id: number;
  status: NodeState['status'];
  inRecovery: boolean | null;
  lsn: string | null;
  delayBytes: number;
  delaySeconds: number;
  replicationState: string;
  replicationSyncState: string;
}
export interface SrCheckEvent {
  primary: number;
  durationMs: number;
  nodes: SrCheckNodeInfo[];
}
export interface FailoverStartEvent {
  failed: number[];
  reason: string;
  oldPrimary: number;
  primaryFailed: boolean;
}
export interface FailoverDoneEvent extends FailoverStartEvent {
  newPrimary: number;
  durationMs: number;
}
export interface CommandEvent extends CommandResult {
  kind: 'failover_command' | 'follow_primary_command' | 'failback_command';
  node: number;
}
export interface NodeEvent {
  node: number;
  reason: string;
}

export interface ClusterManagerEvents {
  healthcheck: [HealthCheckEvent];
  srcheck: [SrCheckEvent];
  'failover-start': [FailoverStartEvent];
  'failover-done': [FailoverDoneEvent];
  'node-down': [NodeEvent];
  'node-up': [NodeEvent];
  command: [CommandEvent];
}

const SEARCH_INTERVAL_MS = 1000;
const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

interface NodeSample {
  ok: boolean;
  inRecovery: boolean | null;
  lsn: string | null;
  wrStatus: string | null;
  wrHost: string | null;
  wrPort: number | null;
}

const SR_NODE_SQL =
  'SELECT pg_catalog.pg_is_in_recovery() AS rec, ' +
  '(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END)::text AS lsn, ' +
  'w.status AS wr_status, w.sender_host AS wr_host, w.sender_port::text AS wr_port ' +
  'FROM (SELECT 1) AS one LEFT JOIN (SELECT status, sender_host, sender_port FROM pg_catalog.pg_stat_wal_receiver LIMIT 1) AS w ON true';
const SR_PRIMARY_SQL =
  'SELECT application_name, state, sync_state, (EXTRACT(EPOCH FROM replay_lag) * 1000000)::bigint::text AS lag_us FROM pg_catalog.pg_stat_replication';

function sameHost(a: string, b: string): boolean {
  const norm = (h: string): string => (h === 'localhost' || h === '::1' ? '127.0.0.1' : h);
  return norm(a) === norm(b);
}

export class ClusterManager extends EventEmitter<ClusterManagerEvents> {
  private readonly statusFile: string;
  private readonly stats: HealthStatsRecorder[];
  private readonly passwd = new PoolPasswdCache();
  private started = false;
  private stopped = false;
  private inProgress = false;
  /** Pending wake-ups of sleeping loops (resolved early by stop()). */
  private readonly sleepers = new Set<() => void>();
  /** Running health checks, one per node (coalesces loop checks and backend-error reports). */
  private readonly inflight = new Map<number, Promise<HealthCheckResult>>();
  /** Node ids an operator detached in this run: never re-attached automatically. */
  private readonly operatorDetached = new Set<number>();
  /** Node ids detached for follow_primary_command. */
  private readonly followDetached = new Set<number>();
  private readonly lastFailback = new Map<number, number>();
  private readonly srConns = new Map<number, CheckConnection>();
  private serialTail: Promise<unknown> = Promise.resolve();
  private readonly background = new Set<Promise<unknown>>();
  private sessionsOnNode: (id: number) => number = () => 0;
  private statusWriteWarned = false;
  private falsePrimaryWarnedAt = 0;
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
    this.statusFile = opts.statusFile ?? statusFilePath(getConfig().logdir);
    this.stats = nodes.all().map(() => new HealthStatsRecorder());
  }

  // ------------------------------------------------------------------ public state

  /** True from the moment a primary fails until the new primary is known (or the search gave up). */
  get failoverInProgress(): boolean {
    return this.inProgress;
  }

  /** SHOW pool_health_check_stats counters of a node. */
  healthStats(id: number): HealthStats | undefined {
    return this.stats[id]?.snapshot();
  }

  /** The session layer tells how many client sessions use a node (for detach({gracefully})). */
  setSessionsOnNode(fn: (id: number) => number): void {
    this.sessionsOnNode = fn;
  }

  /**
   * Resolve with the primary's id once it is known and no failover is in
   * progress, or -1 after timeoutMs. Resolves at once in the normal case.
   */
  waitForPrimary(timeoutMs: number): Promise<number> {
    const ready = (): number => (!this.inProgress && this.nodes.primaryNode() ? this.nodes.primaryId : -1);
    const now = ready();
    if (now >= 0 || timeoutMs <= 0 || this.stopped) return Promise.resolve(now);
    return new Promise((resolve) => {
      const check = (): void => {
        const id = ready();
        if (id >= 0) finish(id);
      };
      const finish = (id: number): void => {
        clearTimeout(timer);
        this.nodes.removeListener('primary', check);
        this.nodes.removeListener('change', check);
        this.removeListener('failover-done', check);
        resolve(id);
      };
      const timer = setTimeout(() => finish(ready()), timeoutMs);
      this.nodes.on('primary', check);
      this.nodes.on('change', check);
      this.on('failover-done', check);
    });
  }

  // ------------------------------------------------------------------ life cycle

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.nodes.on('change', this.onChange);
    this.nodes.on('primary', this.onPrimary);
    this.loadStatusFile();

    // Start-up primary search: the first round now; if no primary yet, keep
    // searching in the background (sessions use waitForPrimary()).
    const answered = new Set<number>();
    const cfg = this.getConfig();
    let primary = await this.searchRound(answered, 'start-up');
    if (primary >= 0) this.nodes.setPrimary(primary, 'primary search at start-up');
    else {
      this.log.warn(
        'no primary found among the backends yet; searching again every second (search_primary_node_timeout)',
      );
      this.track(
        (async () => {
          primary = await this.searchPrimary(cfg.search_primary_node_timeout, answered, 'start-up');
          if (primary >= 0 && this.nodes.primaryId < 0) this.nodes.setPrimary(primary, 'primary search at start-up');
          else if (primary < 0)
            this.log.warn(
              { timeout: cfg.search_primary_node_timeout },
              'find_primary_node: no primary node found; writes fail until one appears (the sr check keeps looking)',
            );
          this.checkUnanswered(answered);
        })(),
      );
    }
    if (primary >= 0) this.checkUnanswered(answered);

    for (const n of this.nodes.all()) this.track(this.healthLoop(n.id));
    this.track(this.srLoop());
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const wake of [...this.sleepers]) wake();
    for (const c of this.srConns.values()) c.close(true);
    this.srConns.clear();
    const all = Promise.allSettled([...this.background, ...this.inflight.values()]);
    await Promise.race([all, new Promise((r) => setTimeout(r, 5000).unref())]);
    this.nodes.removeListener('change', this.onChange);
    this.nodes.removeListener('primary', this.onPrimary);
  }

  // ------------------------------------------------------------------ backend errors

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
    if (!n || this.stopped || n.status === 'down' || n.status === 'unused') return false;
    const cfg = this.getConfig();
    const enabled = kind === 'shutdown' ? cfg.failover_on_backend_shutdown : cfg.failover_on_backend_error;
    if (!enabled) {
      this.log.debug(
        { node: nodeId, kind },
        `backend error on node ${nodeId}: no failover (${kind === 'shutdown' ? 'failover_on_backend_shutdown' : 'failover_on_backend_error'} is off)`,
      );
      return false;
    }
    this.log.info(
      { node: nodeId, kind },
      `backend error on node ${nodeId} (${kind}): checking the node before any failover`,
    );
    try {
      const r = await this.checkNode(nodeId, 'backend error');
      return !r.ok && this.nodes.get(nodeId)?.status === 'down';
    } catch {
      return false;
    }
  }

  /** Run a health check of a node now (shared with any check already running). */
  checkNode(id: number, trigger = 'manual'): Promise<HealthCheckResult> {
    const running = this.inflight.get(id);
    if (running) return running;
    const p = this.doCheck(id, trigger).finally(() => this.inflight.delete(id));
    this.inflight.set(id, p);
    return p;
  }

  // ------------------------------------------------------------------ operations

  /** pcp_attach_node: the node becomes `waiting` (used → `up`) and failback_command runs. */
  attach(id: number): Promise<OperationResult> {
    const n = this.requireNode(id);
    return this.serial(async () => {
      this.operatorDetached.delete(id);
      this.followDetached.delete(id);
      if (n.status !== 'down') return this.result(id, false, `node ${id} is already attached (${n.status})`);
      await this.doFailback(id, 'attached by operator');
      return this.result(id, true, `node ${id} attached`);
    });
  }

  /**
   * pcp_detach_node: the node goes down (failover_command runs; if it was the
   * primary, the primary search and follow_primary_command follow). With
   * gracefully, first wait (up to 90 s) until no session uses the node.
   */
  async detach(id: number, o: { gracefully?: boolean } = {}): Promise<OperationResult> {
    const n = this.requireNode(id);
    if (n.status === 'down') return this.result(id, false, `node ${id} is already down`);
    if (o.gracefully) {
      const deadline = Date.now() + (this.opts.gracefulDetachTimeoutMs ?? 90_000);
      // While waiting, new sessions are not given this node for their reads.
      n.draining = true;
      try {
        while (this.sessionsOnNode(id) > 0) {
          if (this.stopped) throw new ClusterError('STOPPED', 'pgrelay is stopping');
          if (Date.now() >= deadline)
            throw new ClusterError(
              'TIMEOUT',
              `node ${id} still has ${this.sessionsOnNode(id)} session(s) after waiting; not detached`,
            );
          await this.sleep(200);
        }
      } finally {
        n.draining = false;
      }
    }
    this.operatorDetached.add(id);
    await this.serial(() => this.degenerate([id], 'detached by operator'));
    return this.result(id, true, `node ${id} detached`);
  }

  /**
   * pcp_promote_node. Without switchover only pgrelay's view changes: the node
   * becomes the primary, the old primary is detached, follow_primary_command
   * runs for the other nodes; PostgreSQL is not promoted. With switchover: the
   * current primary is detached and failover_command runs with %m = id (the
   * script promotes it), then the primary search and follow_primary_command.
   */
  async promote(id: number, o: { switchover?: boolean } = {}): Promise<OperationResult> {
    const n = this.requireNode(id);
    if (n.status !== 'up' && n.status !== 'waiting')
      throw new ClusterError('INVALID_STATE', `node ${id} is ${n.status}; only an up or waiting node can be promoted`);
    if (this.nodes.primaryId === id) return this.result(id, false, `node ${id} is already the primary`);
    const old = this.nodes.primaryId;
    if (o.switchover && (old < 0 || !this.nodes.primaryNode()))
      throw new ClusterError(
        'NO_PRIMARY',
        'switchover needs a current primary to detach; use promote without switchover',
      );
    await this.serial(async () => {
      if (old >= 0 && this.nodes.primaryNode()) {
        if (o.switchover) this.operatorDetached.add(old);
        await this.degenerate([old], o.switchover ? `switchover to node ${id}` : `node ${id} promoted by operator`, {
          promoteId: id,
          fixedPrimary: o.switchover ? undefined : id,
          skipFailoverCommand: !o.switchover,
        });
      } else {
        await this.degenerate([], `node ${id} promoted by operator`, {
          promoteId: id,
          fixedPrimary: id,
          skipFailoverCommand: true,
          force: true,
        });
      }
    });
    const ok = this.nodes.primaryId === id;
    return this.result(
      id,
      ok,
      ok
        ? `node ${id} is the primary`
        : `node ${id} was not found as primary after the switchover (primary: ${this.nodes.primaryId})`,
    );
  }

  // ------------------------------------------------------------------ internals: status

  private requireNode(id: number): NodeState {
    if (this.stopped) throw new ClusterError('STOPPED', 'pgrelay is stopping');
    const n = Number.isInteger(id) ? this.nodes.get(id) : undefined;
    if (!n)
      throw new ClusterError(
        'NO_SUCH_NODE',
        `node id ${id} does not exist (${this.nodes.size} backend(s) configured: 0..${this.nodes.size - 1})`,
      );
    if (n.status === 'unused') throw new ClusterError('NODE_UNUSED', `node ${id} is not in use`);
    return n;
  }

  private result(id: number, changed: boolean, message: string): OperationResult {
    const n = this.nodes.get(id);
    return { node: id, changed, status: n?.status ?? 'unused', primary: this.nodes.primaryId, message };
  }

  private nodeChanged(ev: NodeChange): void {
    if (ev.from.status !== ev.to.status) {
      const fields = { node: ev.id, from: ev.from.status, to: ev.to.status, role: ev.to.role, reason: ev.reason };
      if (ev.to.status === 'down') this.log.warn(fields, 'node status changed');
      else this.log.info(fields, 'node status changed');
      this.saveStatusFile();
      if (ev.to.status === 'down') this.emit('node-down', { node: ev.id, reason: ev.reason });
      else if (ev.from.status === 'down') this.emit('node-up', { node: ev.id, reason: ev.reason });
    }
    if (ev.from.role !== ev.to.role)
      this.log.info({ node: ev.id, from: ev.from.role, to: ev.to.role, reason: ev.reason }, 'node role changed');
  }

  private loadStatusFile(): void {
    if (this.opts.discardStatus) {
      this.log.info({ file: this.statusFile }, 'discarding the pgpool_status file (-D)');
    } else {
      const st = readStatusFile(this.statusFile);
      if (st) {
        st.forEach((s, id) => {
          if (s === 'down' && this.nodes.get(id))
            this.nodes.setStatus(
              id,
              'down',
              `down in ${this.statusFile} (attach it, or start with -D to discard the file)`,
            );
        });
      }
    }
    this.saveStatusFile();
  }

  private saveStatusFile(): void {
    try {
      writeStatusFile(
        this.statusFile,
        this.nodes.all().map((n) => n.status),
      );
    } catch (e) {
      if (!this.statusWriteWarned)
        this.log.warn({ file: this.statusFile, err: (e as Error).message }, 'could not write the pgpool_status file');
      this.statusWriteWarned = true;
    }
  }

  // ------------------------------------------------------------------ internals: scheduling

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(t);
        this.sleepers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, Math.max(0, ms));
      this.sleepers.add(wake);
    });
  }

  private track(p: Promise<unknown>): void {
    const q = p.catch((e: unknown) =>
      this.log.error({ err: (e as Error)?.stack ?? String(e) }, 'cluster manager task failed'),
    );
    this.background.add(q);
    void q.finally(() => this.background.delete(q));
  }

  /** Run status-changing work one at a time. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.serialTail.then(fn, fn);
    this.serialTail = run.catch(() => undefined);
    return run;
  }

  private hcConfig(id: number): HealthCheckConfig {
    const cfg = this.getConfig();
    return cfg.health_check_per_node[id] ?? cfg.health_check;
  }

  private hcCredentials(hc: HealthCheckConfig): CheckCredentials {
    const cfg = this.getConfig();
    const user = hc.user || cfg.sr_check_user || 'postgres';
    const password = hc.user ? hc.password : cfg.sr_check_password;
    return credentials(cfg, user, password, hc.database, this.passwd.get(cfg));
  }

  // ------------------------------------------------------------------ health check

  private async healthLoop(id: number): Promise<void> {
    while (!this.stopped) {
      const hc = this.hcConfig(id);
      const n = this.nodes.get(id);
      if (hc.period <= 0 || !n || n.status === 'unused') {
        await this.sleep(1000);
        continue;
      }
      const t0 = Date.now();
      if (n.status === 'down') this.stats[id]?.skipped();
      else await this.checkNode(id, 'health check').catch(() => undefined);
      await this.sleep(Math.max(0, hc.period * 1000 - (Date.now() - t0)));
    }
  }

  private async doCheck(id: number, trigger: string): Promise<HealthCheckResult> {
    const n = this.nodes.get(id);
    if (!n) return { ok: false, retries: 0, durationMs: 0, error: 'no such node' };
    const hc = this.hcConfig(id);
    const r = await healthCheckWithRetries(
      n,
      hc,
      this.hcCredentials(hc),
      () => !this.stopped && n.status !== 'down',
      (ms) => this.sleep(ms),
    );
    if (this.stopped || r.error === 'aborted') return r;
    this.stats[id]?.checked(r.ok, r.retries, r.durationMs);
    this.emit('healthcheck', {
      node: id,
      ok: r.ok,
      durationMs: r.durationMs,
      retries: r.retries,
      trigger,
      error: r.error,
    });
    if (r.ok) {
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
    await this.serial(() => this.degenerate([id], `health check failed (${trigger}): ${r.error ?? 'error'}`));
    return r;
  }

  /** Nodes that did not answer the start-up search: a health check with retries decides (and fails them over). */
  private checkUnanswered(answered: Set<number>): void {
    for (const n of this.nodes.all()) {
      if (answered.has(n.id) || n.status === 'down' || n.status === 'unused') continue;
      this.track(this.checkNode(n.id, 'start-up'));
    }
  }

  // ------------------------------------------------------------------ primary search

  /** One round of pg_is_in_recovery() on every live node. Marks answering nodes up. */
  private async searchRound(answered?: Set<number>, phase = 'search'): Promise<number> {
    const cfg = this.getConfig();
    const cred = srCheckCredentials(cfg, this.passwd.get(cfg));
    const live = this.nodes.all().filter((n) => isLive(n.status));
    const always = live.find((n) => n.config.always_primary);
    const timeout = Math.max(1000, Math.min(cfg.connect_timeout > 0 ? cfg.connect_timeout : 10_000, 10_000));
    const res = await Promise.all(
      live.map(async (n) => {
        try {
          const rows = await oneShotQuery(n, cred, 'SELECT pg_catalog.pg_is_in_recovery() AS r', timeout);
          return { n, ok: true, rec: rows[0]?.r === 't' };
        } catch (e) {
          this.log.debug({ node: n.id, err: (e as Error).message }, 'node did not answer the primary search');
          return { n, ok: false, rec: true };
        }
      }),
    );
    for (const r of res) {
      if (!r.ok) continue;
      answered?.add(r.n.id);
      if (phase === 'start-up' && r.n.status === 'waiting')
        this.nodes.setStatus(r.n.id, 'up', 'answered the primary search at start-up');
      if (r.rec) this.log.info({ node: r.n.id }, `find_primary_node: standby node is ${r.n.id}`);
    }
    if (always) return always.id;
    const primaries = res.filter((r) => r.ok && !r.rec && isLive(r.n.status));
    const p = primaries[0]?.n.id ?? -1;
    if (p >= 0) this.log.info({ node: p }, `find_primary_node: primary node is ${p}`);
    if (primaries.length > 1)
      this.log.warn(
        { nodes: primaries.map((x) => x.n.id) },
        'more than one node is not in recovery (false primary?); using the lowest id',
      );
    return p;
  }

  /** pgpool's find_primary_node_repeatedly: about once a second until found or timeoutS (0 = until stop). */
  private async searchPrimary(timeoutS: number, answered?: Set<number>, phase = 'search'): Promise<number> {
    const deadline = timeoutS > 0 ? Date.now() + timeoutS * 1000 : Infinity;
    for (;;) {
      if (this.stopped) return -1;
      const t0 = Date.now();
      const p = await this.searchRound(answered, phase);
      if (p >= 0) return p;
      if (Date.now() >= deadline) return -1;
      if (phase === 'start-up' && this.nodes.primaryId >= 0) return this.nodes.primaryId;
      await this.sleep(Math.max(0, Math.min(SEARCH_INTERVAL_MS - (Date.now() - t0), deadline - Date.now())));
    }
  }

  // ------------------------------------------------------------------ failover / failback

  private async runCommand(
    kind: CommandEvent['kind'],
    template: string,
    nodeId: number,
    newMainId: number,
    oldMainId: number,
    oldPrimaryId: number,
  ): Promise<CommandResult | undefined> {
    if (!template.trim() || this.stopped) return undefined;
    const node = this.nodes.get(nodeId);
    if (!node) return undefined;
    const newMain = newMainId >= 0 ? this.nodes.get(newMainId) : undefined;
    const oldPrimary = oldPrimaryId >= 0 ? this.nodes.get(oldPrimaryId) : undefined;
    const command = expandPlaceholders(template, {
      node: placeholderNode(node),
      newMain: newMain ? placeholderNode(newMain) : undefined,
      oldMainId,
      oldPrimary: oldPrimary ? placeholderNode(oldPrimary) : undefined,
    });
    this.log.info({ node: nodeId, kind, command }, `executing ${kind}`);
    const r = await runShellCommand(command, this.opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
    const fields = {
      node: nodeId,
      kind,
      code: r.code,
      signal: r.signal,
      timedOut: r.timedOut,
      durationMs: r.durationMs,
      stdout: r.stdout.trim().slice(0, 4000),
      stderr: r.stderr.trim().slice(0, 4000),
    };
    if (r.code === 0) this.log.info(fields, `${kind} finished`);
    else this.log.error(fields, r.timedOut ? `${kind} timed out and was killed` : `${kind} failed`);
    this.emit('command', { ...r, kind, node: nodeId });
    return r;
  }

  /**
   * Mark `ids` down and do what pgpool's failover() does. Runs inside serial().
   * fixedPrimary: the new primary is known (pcp_promote_node without -s), no
   * search. skipFailoverCommand: do not run failover_command.
   */
  private async degenerate(
    ids: number[],
    reason: string,
    o: { promoteId?: number; fixedPrimary?: number; skipFailoverCommand?: boolean; force?: boolean } = {},
  ): Promise<void> {
    if (this.stopped) return;
    const cfg = this.getConfig();
    const failed = ids.filter((id) => {
      const s = this.nodes.get(id)?.status;
      return s !== undefined && isLive(s);
    });
    if (failed.length === 0 && !o.force) return;
    const t0 = Date.now();
    const all = this.nodes.all();
    const oldPrimary = this.nodes.primaryId;
    const oldMain = mainNodeId(all);
    const failedSet = new Set(failed);
    const primaryFailed =
      (oldPrimary >= 0 && failedSet.has(oldPrimary)) || o.fixedPrimary !== undefined || o.promoteId !== undefined;
    const newMain = newMainCandidate(all, failedSet, o.promoteId);
    const start: FailoverStartEvent = { failed, reason, oldPrimary, primaryFailed };
    if (primaryFailed) this.inProgress = true;
    this.emit('failover-start', start);
    this.log.warn(
      { failed, reason, oldPrimary, newMain },
      primaryFailed
        ? 'failover: primary node going down'
        : `failover: node${failed.length > 1 ? 's' : ''} ${failed.join(',')} going down`,
    );
    for (const id of failed) this.nodes.setStatus(id, 'down', reason);
    if (oldPrimary >= 0 && failedSet.has(oldPrimary)) this.nodes.setPrimary(-1, reason);

    let newPrimary = this.nodes.primaryId;
    try {
      if (!o.skipFailoverCommand)
        for (const id of failed)
          await this.runCommand('failover_command', cfg.failover_command, id, newMain, oldMain, oldPrimary);
      if (primaryFailed) {
        if (o.fixedPrimary !== undefined) newPrimary = o.fixedPrimary;
        else {
          const live = this.nodes.all().filter((n) => isLive(n.status));
          newPrimary = live.length === 0 ? -1 : await this.searchPrimary(cfg.search_primary_node_timeout);
        }
        if (newPrimary >= 0)
          this.nodes.setPrimary(newPrimary, o.fixedPrimary !== undefined ? reason : 'primary search after failover');
        else
          this.log.error(
            { timeout: cfg.search_primary_node_timeout },
            'failover: no new primary found; writes fail until one appears (the sr check keeps looking)',
          );

        // follow_primary_command: pgpool detaches every node but the new primary and runs the command once per node.
        if (newPrimary >= 0 && cfg.follow_primary_command.trim()) {
          const follow: number[] = [];
          for (const n of this.nodes.all()) {
            if (n.id === newPrimary || n.status === 'unused') continue;
            if (n.status !== 'down') {
              this.followDetached.add(n.id);
              this.nodes.setStatus(
                n.id,
                'down',
                `detached for follow_primary_command (new primary: node ${newPrimary})`,
              );
            }
            follow.push(n.id);
          }
          const oldMainNow = oldMain;
          this.track(
            (async () => {
              for (const id of follow)
                await this.runCommand(
                  'follow_primary_command',
                  cfg.follow_primary_command,
                  id,
                  newPrimary,
                  oldMainNow,
                  oldPrimary,
                );
            })(),
          );
        }
      }
    } finally {
      if (primaryFailed) this.inProgress = false;
      const done: FailoverDoneEvent = { ...start, newPrimary: this.nodes.primaryId, durationMs: Date.now() - t0 };
      this.log.info({ failed, oldPrimary, newPrimary: done.newPrimary, durationMs: done.durationMs }, 'failover done');
      this.emit('failover-done', done);
    }
  }

  /** Attach a down node (status waiting) and run failback_command. Runs inside serial(). */
  private async doFailback(id: number, reason: string): Promise<void> {
    const n = this.nodes.get(id);
    if (n?.status !== 'down') return;
    const cfg = this.getConfig();
    const oldMain = this.nodes.mainNodeId();
    this.lastFailback.set(id, Date.now());
    this.followDetached.delete(id);
    this.nodes.setStatus(id, 'waiting', reason);
    await this.runCommand(
      'failback_command',
      cfg.failback_command,
      id,
      this.nodes.mainNodeId(),
      oldMain,
      this.nodes.primaryId,
    );
    if (this.nodes.primaryId < 0 || n.config.always_primary) {
      const p = await this.searchRound();
      if (p >= 0 && p !== this.nodes.primaryId) this.nodes.setPrimary(p, `primary search after attaching node ${id}`);
    }
  }

  // ------------------------------------------------------------------ sr check

  private async srLoop(): Promise<void> {
    while (!this.stopped) {
      const period = this.getConfig().sr_check_period;
      if (period <= 0) {
        for (const c of this.srConns.values()) c.close();
        this.srConns.clear();
        await this.sleep(1000);
        continue;
      }
      const t0 = Date.now();
      try {
        await this.srCheckOnce();
      } catch (e) {
        this.log.error({ err: (e as Error).stack ?? String(e) }, 'sr check cycle failed');
      }
      await this.sleep(Math.max(0, period * 1000 - (Date.now() - t0)));
    }
  }

  private async srQuery(n: NodeState, cred: CheckCredentials, sql: string, timeoutMs: number): Promise<Row[]> {
    let c = this.srConns.get(n.id);
    if (c?.dead) {
      this.srConns.delete(n.id);
      c = undefined;
    }
    if (!c) {
      c = await CheckConnection.open(n, cred, timeoutMs, 'pgrelay sr check');
      if (this.stopped) {
        c.close(true);
        throw new Error('stopped');
      }
      this.srConns.set(n.id, c);
    }
    try {
      return await c.query(sql, timeoutMs);
    } catch (e) {
      c.close(true);
      this.srConns.delete(n.id);
      throw e;
    }
  }

  /** One sr check cycle (exposed for tests and the admin layer). */
  async srCheckOnce(): Promise<SrCheckEvent> {
    const t0 = Date.now();
    const cfg = this.getConfig();
    const cred = srCheckCredentials(cfg, this.passwd.get(cfg));
    const timeout = Math.max(1000, Math.min(cfg.connect_timeout > 0 ? cfg.connect_timeout : 10_000, 10_000));
    const nodes = this.nodes.all();
    const wantDown = cfg.auto_failback;
    const samples = new Map<number, NodeSample>();
    await Promise.all(
      nodes.map(async (n) => {
        const live = isLive(n.status);
        if (!live && !(wantDown && n.status === 'down')) {
          const c = this.srConns.get(n.id);
          if (c) {
            c.close();
            this.srConns.delete(n.id);
          }
          return;
        }
        try {
          const r = (await this.srQuery(n, cred, SR_NODE_SQL, timeout))[0];
          samples.set(n.id, {
            ok: true,
            inRecovery: r ? r.rec === 't' : null,
            lsn: r?.lsn ?? null,
            wrStatus: r?.wr_status ?? null,
            wrHost: r?.wr_host ?? null,
            wrPort: r?.wr_port ? Number(r.wr_port) : null,
          });
        } catch (e) {
          if (live) this.log.debug({ node: n.id, err: (e as Error).message }, 'sr check: node did not answer');
          samples.set(n.id, { ok: false, inRecovery: null, lsn: null, wrStatus: null, wrHost: null, wrPort: null });
        }
      }),
    );
    if (this.stopped) return { primary: this.nodes.primaryId, durationMs: Date.now() - t0, nodes: [] };

    // Late primary detection / false primaries.
    const notInRecovery = nodes.filter(
      (n) => isLive(n.status) && samples.get(n.id)?.ok && samples.get(n.id)?.inRecovery === false,
    );
    if (notInRecovery.length > 1) this.handleFalsePrimaries(notInRecovery, samples, cfg.detach_false_primary);
    if (this.nodes.primaryId < 0 && !this.inProgress) {
      const always = nodes.find((n) => isLive(n.status) && n.config.always_primary);
      const p = always ?? (notInRecovery.length === 1 ? notInRecovery[0] : undefined);
      if (p) this.nodes.setPrimary(p.id, 'sr check found a node not in recovery');
    }

    const primary = this.nodes.primaryNode();
    const pSample = primary ? samples.get(primary.id) : undefined;
    const primaryLsn = parseLsn(pSample?.lsn);
    let repl: Row[] = [];
    if (primary && pSample?.ok) {
      try {
        repl = await this.srQuery(primary, cred, SR_PRIMARY_SQL, timeout);
      } catch (e) {
        this.log.debug({ node: primary.id, err: (e as Error).message }, 'sr check: pg_stat_replication query failed');
      }
    }
    const byTime = cfg.delay_threshold_by_time > 0;
    const info: SrCheckNodeInfo[] = [];
    for (const n of nodes) {
      const s = samples.get(n.id);
      if (primary && n.id === primary.id) {
        this.nodes.setReplication(n.id, {
          delayBytes: 0,
          delaySeconds: 0,
          replicationState: '',
          replicationSyncState: '',
        });
      } else if (n.status !== 'unused') {
        const row = n.config.application_name
          ? repl.find((r) => r.application_name === n.config.application_name)
          : undefined;
        const lsn = parseLsn(s?.lsn);
        const upd: Parameters<NodeTable['setReplication']>[1] = {
          replicationState: row?.state ?? '',
          replicationSyncState: row?.sync_state ?? '',
        };
        if (isLive(n.status) && primaryLsn !== undefined && lsn !== undefined)
          upd.delayBytes = Number(primaryLsn > lsn ? primaryLsn - lsn : 0n);
        if (row) upd.delaySeconds = row.lag_us ? Number(row.lag_us) / 1e6 : 0;
        this.nodes.setReplication(n.id, upd);
        if (isLive(n.status) && primary && s?.ok) this.logStandbyDelay(n, primary.id, cfg, byTime);
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

    if (cfg.auto_failback && primary && !this.inProgress) await this.autoFailback(primary, samples, cfg);

    const ev: SrCheckEvent = { primary: this.nodes.primaryId, durationMs: Date.now() - t0, nodes: info };
    this.emit('srcheck', ev);
    return ev;
  }

  private logStandbyDelay(n: NodeState, primaryId: number, cfg: Config, byTime: boolean): void {
    const mode = cfg.log_standby_delay;
    if (mode === 'none') return;
    const over = byTime
      ? n.delaySeconds * 1000 > cfg.delay_threshold_by_time
      : cfg.delay_threshold > 0 && n.delayBytes > cfg.delay_threshold;
    if (mode === 'if_over_threshold' && !over) return;
    if (mode === 'always' && !over && (byTime ? n.delaySeconds : n.delayBytes) === 0) return;
    if (byTime) {
      const unit = n.delaySeconds >= 2 ? 'seconds' : 'second';
      this.log.info(
        { node: n.id, primary: primaryId, delaySeconds: n.delaySeconds },
        `Replication of node: ${n.id} is behind ${n.delaySeconds.toFixed(6)} ${unit} from the primary server (node: ${primaryId})`,
      );
    } else {
      this.log.info(
        { node: n.id, primary: primaryId, delayBytes: n.delayBytes },
        `Replication of node: ${n.id} is behind ${n.delayBytes} bytes from the primary server (node: ${primaryId})`,
      );
    }
  }

  /** Several live nodes answer pg_is_in_recovery() = false: keep the one the streaming standbys follow. */
  private handleFalsePrimaries(cands: NodeState[], samples: Map<number, NodeSample>, detach: boolean): void {
    const votes = new Map<number, number>();
    for (const n of this.nodes.all()) {
      const s = samples.get(n.id);
      if (!s?.ok || s.inRecovery !== true || s.wrStatus !== 'streaming' || !s.wrHost) continue;
      const up = cands.find((c) => sameHost(c.host, s.wrHost as string) && c.port === s.wrPort);
      if (up) votes.set(up.id, (votes.get(up.id) ?? 0) + 1);
    }
    let keep: number;
    if (votes.size === 0) keep = cands.map((c) => c.id).sort((a, b) => a - b)[0] as number;
    else if (votes.size === 1) keep = [...votes.keys()][0] as number;
    else {
      if (Date.now() - this.falsePrimaryWarnedAt > 60_000)
        this.log.warn(
          { nodes: cands.map((c) => c.id), votes: Object.fromEntries(votes) },
          'several primaries have streaming standbys; cannot tell the true primary, nothing detached',
        );
      this.falsePrimaryWarnedAt = Date.now();
      return;
    }
    const others = cands.filter((c) => c.id !== keep && !c.config.always_primary).map((c) => c.id);
    if (others.length === 0) return;
    if (!detach) {
      if (Date.now() - this.falsePrimaryWarnedAt > 60_000)
        this.log.warn(
          { primary: keep, falsePrimaries: others },
          'false primary detected (detach_false_primary is off)',
        );
      this.falsePrimaryWarnedAt = Date.now();
      return;
    }
    if (
      this.nodes.primaryId !== keep &&
      !this.inProgress &&
      this.nodes.primaryId >= 0 &&
      others.includes(this.nodes.primaryId)
    ) {
      // Our primary is the false one: switch the view before detaching it.
      this.nodes.setPrimary(keep, 'detach_false_primary: the standbys follow this node');
    }
    this.log.warn({ primary: keep, detached: others }, 'detach_false_primary: detaching false primary node(s)');
    this.track(this.serial(() => this.degenerate(others, `false primary (standbys follow node ${keep})`)));
  }

  /** auto_failback: a down standby that streams from the current primary comes back. */
  private async autoFailback(primary: NodeState, samples: Map<number, NodeSample>, cfg: Config): Promise<void> {
    const repl = new Map<string, string>();
    for (const n of this.nodes.all())
      if (n.config.application_name) repl.set(n.config.application_name, n.replicationState);
    for (const n of this.nodes.all()) {
      if (n.status !== 'down' || n.id === primary.id || this.operatorDetached.has(n.id)) continue;
      const s = samples.get(n.id);
      if (s?.ok && s.inRecovery === false) continue; // a primary of its own: never attach
      const viaPrimary = n.config.application_name !== '' && n.replicationState === 'streaming';
      const viaReceiver =
        !!s?.ok &&
        s.inRecovery === true &&
        s.wrStatus === 'streaming' &&
        !!s.wrHost &&
        sameHost(s.wrHost, primary.host) &&
        s.wrPort === primary.port;
      if (!viaPrimary && !viaReceiver) continue;
      const last = this.lastFailback.get(n.id);
      if (last !== undefined && Date.now() - last < cfg.auto_failback_interval * 1000) continue;
      const hc = this.hcConfig(n.id);
      try {
        await healthAttempt(n, this.hcCredentials(hc), attemptTimeoutMs(hc));
      } catch {
        continue;
      }
      const why = this.followDetached.has(n.id)
        ? 'auto_failback: streaming from the new primary after follow_primary_command'
        : 'auto_failback: streaming from the primary again';
      await this.serial(() => this.doFailback(n.id, why));
    }
  }
}
