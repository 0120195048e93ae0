/**
 * coordination = 'etcd': several pgrelay instances in front of one cluster
 * share one node state and one failover decision through etcd (no home-made
 * consensus; etcd's Raft is the quorum).
 *
 * Each instance, every POLL_MS:
 *  - keeps its lease alive (etcd_lease_ttl) and its member key under it;
 *  - reads everything under the prefix in one request (its round-trip time is
 *    the etcd RTT metric);
 *  - campaigns for the leader key (a create-if-absent transaction under its
 *    lease) when there is none;
 *  - as a follower, applies the leader's node state (key `state`);
 *  - as the leader, publishes its node state, fails a node over once enough
 *    live instances find it down (decisions.ts), and runs the node operations
 *    other instances ask for.
 * Health checks of every instance publish their verdicts (HealthMonitor →
 * nodeFailed/nodeOk). Every write the leader makes is a transaction that
 * compares the leader key's lease with its own: a deposed leader cannot write,
 * and its failover stops at the next step (FailoverOptions.checkpoint), so
 * failover_command / follow_primary_command run at most once.
 *
 * Losing etcd (no keepalive answered within the lease TTL): the instance gives
 * up leadership (if_down_cmd), makes no failover decision (unless
 * failover_when_quorum_exists = off: then it decides alone, as without
 * coordination), keeps serving with the node state it knows, reports not
 * ready after etcd_unreachable_grace, and joins again with a new lease when
 * etcd answers, applying the current state.
 */
import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import { noop } from 'cockatiel';
import { Etcd3, type IKeyValue, type Lease } from 'etcd3';
import type { DecisionAuthority, NodeOperation } from '../cluster/authority.js';
import { runShellCommand } from '../cluster/failover.js';
import type { FailoverStep } from '../cluster/failover-runner.js';
import type { ClusterManager } from '../cluster/manager.js';
import type { NodeTable } from '../cluster/nodes.js';
import { ClusterError, type OperationResult } from '../cluster/operations.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import {
  coordinationReadiness,
  type EtcdKeys,
  etcdKeys,
  etcdPrefix,
  type FailoverRecord,
  type InstanceRow,
  type InstanceState,
  instanceRows,
  type MemberInfo,
  type NodeView,
  nodesToFail,
  type OperationReply,
  type OperationRequest,
  pendingFailover,
  reattached,
  type Verdict,
  viewChanges,
  votesNeeded,
} from './decisions.js';

/** How often each instance reads etcd (state changes reach the others within about this). */
const POLL_MS = 300;
/** How long a node operation asked of the leader may take. */
const OPERATION_TIMEOUT_MS = 120_000;
/** if_up_cmd / if_down_cmd / arping_cmd time limit. */
const IF_COMMAND_TIMEOUT_MS = 30_000;

interface Snapshot {
  members: Map<string, MemberInfo>;
  leader?: { name: string; lease: string };
  view?: NodeView;
  failover?: { rec: FailoverRecord; mod: string };
  failoverMod: string;
  verdicts: Map<number, Map<string, Verdict>>;
  requests: Map<string, OperationRequest>;
  results: Map<string, OperationReply>;
}

export interface CoordinatorStatus {
  state: InstanceState;
  leader: string;
  members: number;
  isLeader: boolean;
  leaseHeld: boolean;
  rttSeconds: number;
  leaseLosses: number;
}

export interface CoordinatorOptions {
  cluster: ClusterManager;
  nodes: NodeTable;
  getConfig: () => Config;
  log: Logger;
  version: string;
}

function parse<T>(kv: IKeyValue): T | undefined {
  try {
    return JSON.parse(kv.value.toString('utf8')) as T;
  } catch {
    return undefined;
  }
}

function endpointUrl(e: string, tls: boolean): string {
  return /^https?:\/\//.test(e) ? e : `${tls ? 'https' : 'http'}://${e}`;
}

export class EtcdCoordinator implements DecisionAuthority {
  private readonly client: Etcd3;
  private readonly keys: EtcdKeys;
  private readonly self: MemberInfo;
  private readonly log: Logger;
  private state: InstanceState = 'connecting';
  private lease: Lease | undefined;
  private leaseId = '';
  /** When the last keepalive (or grant) that succeeded was sent: the lease lives at least TTL from then. */
  private renewedAt = 0;
  private lastKeepaliveTry = 0;
  private unreachableSince: number | undefined = Date.now();
  private lastError = '';
  private members = new Map<string, MemberInfo>();
  private leaderName = '';
  private rtt = 0;
  private leaseLosses = 0;
  /** This instance's verdicts, and what of them etcd holds under the current lease. */
  private readonly myVerdicts = new Map<number, Verdict>();
  private readonly published = new Map<number, boolean>();
  /** Leader: the view must be written again; the last one written. */
  private viewDirty = true;
  private lastView: NodeView | undefined;
  private publishing: Promise<void> = Promise.resolve();
  private deciding = false;
  private recordMod = '0';
  private seq = 0;
  private readonly handled = new Set<string>();
  private readonly pending = new Map<string, (r: OperationReply) => void>();
  private opSeq = 0;
  private stopped = false;
  private loopDone: Promise<void> = Promise.resolve();
  private wake: (() => void) | undefined;
  private readonly tasks = new Set<Promise<unknown>>();
  private readonly onNodes = (): void => this.stateChanged();
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private renewing = false;

  constructor(private readonly o: CoordinatorOptions) {
    const cfg = o.getConfig();
    this.log = o.log.child({ component: 'coordination' });
    this.keys = etcdKeys(etcdPrefix(cfg.etcd_prefix, cfg.cluster_name));
    this.self = {
      name: cfg.instance_name || `${hostname()}:${cfg.port}`,
      host: hostname(),
      port: cfg.port,
      version: o.version,
      state: 'member',
      pid: process.pid,
      startedAt: Date.now(),
    };
    const tls = cfg.etcd_cacert !== '' || cfg.etcd_cert !== '';
    const timeoutMs = this.requestTimeoutMs();
    this.client = new Etcd3({
      hosts: cfg.etcd_endpoints.map((e) => endpointUrl(e, tls)),
      ...(tls
        ? {
            credentials: {
              rootCertificate: cfg.etcd_cacert ? readFileSync(cfg.etcd_cacert) : Buffer.alloc(0),
              ...(cfg.etcd_cert
                ? { certChain: readFileSync(cfg.etcd_cert), privateKey: readFileSync(cfg.etcd_key) }
                : {}),
            },
          }
        : {}),
      ...(cfg.etcd_user ? { auth: { username: cfg.etcd_user, password: cfg.etcd_password } } : {}),
      dialTimeout: timeoutMs,
      // Every call has a deadline; no retries or circuit breaker: the poll loop is the retry.
      defaultCallOptions: () => ({ deadline: new Date(Date.now() + timeoutMs) }),
      faultHandling: { host: () => noop, global: noop },
      // Reconnect quickly once etcd answers again (gRPC's default backoff grows to two minutes).
      grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': 1000 },
    });
  }

  get name(): string {
    return this.self.name;
  }

  // ------------------------------------------------------------------ DecisionAuthority

  decides(): boolean {
    if (this.state === 'leader') return true;
    // Without etcd, failover_when_quorum_exists = off lets this instance decide alone (pgpool's meaning).
    return !this.leaseHeld() && !this.o.getConfig().failover_when_quorum_exists;
  }

  async nodeFailed(id: number, reason: string): Promise<void> {
    const already = this.myVerdicts.get(id)?.ok === false;
    this.myVerdicts.set(id, { ok: false, error: reason, at: Date.now() });
    if (this.decides() && this.state !== 'leader') {
      this.log.warn({ node: id }, 'etcd unreachable and failover_when_quorum_exists = off: failing over alone');
      await this.o.cluster.failNodes([id], reason);
      return;
    }
    if (!already) {
      if (!this.leaseHeld())
        this.log.warn(
          { node: id, reason },
          `health check failed on node ${id}; etcd is unreachable: no failover decision here (the leader decides)`,
        );
      else this.log.info({ node: id }, `health check failed on node ${id}: verdict published, the leader decides`);
    }
    this.flushVerdicts();
    this.poke();
  }

  nodeOk(id: number): void {
    const v = this.myVerdicts.get(id);
    if (v?.ok) return;
    this.myVerdicts.set(id, { ok: true, at: Date.now() });
    this.flushVerdicts();
  }

  forward(op: NodeOperation): Promise<OperationResult> {
    if (!this.leaseHeld())
      return Promise.reject(
        new ClusterError(
          'UNAVAILABLE',
          `etcd is unreachable (${this.lastError || 'no lease'}): node operations are decided by the coordination leader; retry when etcd answers, or on another instance`,
        ),
      );
    if (!this.leaderName || !this.members.has(this.leaderName))
      return Promise.reject(
        new ClusterError('UNAVAILABLE', 'no coordination leader is elected yet; retry in a moment'),
      );
    const id = `${this.self.name.replace(/\//g, '_')}-${process.pid}-${++this.opSeq}-${Date.now()}`;
    const req: OperationRequest = { ...op, from: this.self.name };
    return new Promise<OperationResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ClusterError('TIMEOUT', `the coordination leader did not answer the ${op.op} of node ${op.node}`));
      }, OPERATION_TIMEOUT_MS);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        this.pending.delete(id);
        if (r.ok)
          resolve({ node: op.node, changed: r.changed, status: r.status, primary: r.primary, message: r.message });
        else reject(new ClusterError(r.code as ClusterError['code'], r.message));
      });
      this.client
        .put(this.keys.request(id))
        .value(JSON.stringify(req))
        .lease(this.leaseId)
        .exec()
        .then(
          () => this.poke(),
          (e: unknown) => this.pending.get(id)?.({ ok: false, code: 'UNAVAILABLE', message: `etcd: ${errText(e)}` }),
        );
    });
  }

  // ------------------------------------------------------------------ status

  status(): CoordinatorStatus {
    return {
      state: this.state,
      leader: this.leaderName,
      members: this.members.size,
      isLeader: this.state === 'leader',
      leaseHeld: this.leaseHeld(),
      rttSeconds: this.rtt,
      leaseLosses: this.leaseLosses,
    };
  }

  instances(): InstanceRow[] {
    return instanceRows(this.members, this.leaderName, this.self, this.state);
  }

  readiness(): { ready: boolean; reason?: string } {
    return coordinationReadiness(this.unreachableSince, Date.now(), this.o.getConfig().etcd_unreachable_grace);
  }

  // ------------------------------------------------------------------ life cycle

  /** Start the loops; resolves after the first round (joined, or etcd found unreachable). */
  async start(): Promise<void> {
    this.o.nodes.on('change', this.onNodes);
    this.o.nodes.on('primary', this.onNodes);
    this.o.cluster.on('failover-start', this.onNodes);
    this.o.cluster.on('failover-done', this.onNodes);
    // The lease is renewed every TTL/3 and checked every 100 ms, whatever a round of the poll loop takes.
    this.keepaliveTimer = setInterval(() => this.keepalive(), 100);
    await this.tick();
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.keepaliveTimer);
    this.wake?.();
    await this.loopDone;
    this.o.nodes.removeListener('change', this.onNodes);
    this.o.nodes.removeListener('primary', this.onNodes);
    this.o.cluster.removeListener('failover-start', this.onNodes);
    this.o.cluster.removeListener('failover-done', this.onNodes);
    for (const [, answer] of this.pending) answer({ ok: false, code: 'STOPPED', message: 'pgrelay is stopping' });
    if (this.state === 'leader') await this.interfaceCommands('down', 'pgrelay is stopping');
    // Revoking the lease removes the member and leader keys at once: another instance takes over now.
    if (this.lease) await this.lease.revoke().catch(() => undefined);
    await Promise.race([Promise.allSettled([...this.tasks]), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.client.close();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, POLL_MS);
        function done(): void {
          clearTimeout(t);
          resolve();
        }
        this.wake = done;
      });
      this.wake = undefined;
      if (this.stopped) break;
      await this.tick();
    }
  }

  /** Run the next round now. */
  private poke(): void {
    this.wake?.();
  }

  private track(p: Promise<unknown>): void {
    const q = p.catch((e: unknown) => this.log.error({ err: errText(e) }, 'coordination task failed'));
    this.tasks.add(q);
    void q.finally(() => this.tasks.delete(q));
  }

  private ttlMs(): number {
    return this.o.getConfig().etcd_lease_ttl * 1000;
  }

  private requestTimeoutMs(): number {
    return Math.max(500, Math.min(5000, this.ttlMs() / 3));
  }

  private leaseHeld(): boolean {
    return this.leaseId !== '' && (this.state === 'member' || this.state === 'leader');
  }

  // ------------------------------------------------------------------ one round

  private async tick(): Promise<void> {
    try {
      if (!this.leaseId) await this.join();
      const snap = await this.read();
      this.reachable();
      await this.process(snap);
    } catch (e) {
      this.unreachable(e);
    }
  }

  /** Every 100 ms: renew the lease every TTL/3; give it up before etcd may expire it. */
  private keepalive(): void {
    if (!this.leaseId || this.stopped) return;
    // The lease outlives the last keepalive sent by TTL at least.
    const margin = Math.min(1000, this.ttlMs() / 4);
    if (Date.now() - this.renewedAt > this.ttlMs() - margin) {
      this.loseLease('no keepalive answered within etcd_lease_ttl');
      return;
    }
    if (this.renewing || Date.now() - this.lastKeepaliveTry < this.ttlMs() / 3) return;
    this.renewing = true;
    void this.renew()
      .catch((e: unknown) => this.log.debug({ err: errText(e) }, 'etcd keepalive failed'))
      .finally(() => {
        this.renewing = false;
      });
  }

  private async join(): Promise<void> {
    const lease = this.client.lease(this.o.getConfig().etcd_lease_ttl, { autoKeepAlive: false });
    lease.on('lost', () => undefined);
    const t = Date.now();
    let id: string;
    try {
      id = await lease.grant();
    } catch (e) {
      lease.release();
      throw e;
    }
    this.lease = lease;
    this.leaseId = id;
    this.renewedAt = t;
    this.lastKeepaliveTry = t;
    this.published.clear();
    this.state = 'member';
    this.self.state = 'member';
    await this.putMember();
    this.flushVerdicts();
    this.log.info({ instance: this.self.name, lease: id }, 'joined the coordinated instances (etcd lease granted)');
  }

  private async renew(): Promise<void> {
    const t = Date.now();
    this.lastKeepaliveTry = t;
    const lease = this.lease;
    try {
      await lease?.keepaliveOnce({ deadline: new Date(t + this.requestTimeoutMs()) });
      if (lease === this.lease) this.renewedAt = t;
    } catch (e) {
      if ((e as Error).name === 'EtcdLeaseInvalidError' && lease === this.lease)
        this.loseLease('etcd says the lease expired');
      throw e;
    }
  }

  private async putMember(): Promise<unknown> {
    if (!this.leaseId) return;
    return this.client
      .put(this.keys.member(this.self.name))
      .value(JSON.stringify(this.self))
      .lease(this.leaseId)
      .exec();
  }

  private reachable(): void {
    if (this.unreachableSince !== undefined && this.lastError)
      this.log.info(
        { unreachableMs: Date.now() - this.unreachableSince },
        'etcd reachable again: following the shared node state',
      );
    this.unreachableSince = undefined;
    this.lastError = '';
  }

  private unreachable(e: unknown): void {
    const msg = errText(e);
    if (this.unreachableSince === undefined) {
      this.unreachableSince = Date.now();
      this.log.warn({ err: msg }, 'etcd unreachable: this instance keeps serving with the node state it knows');
    } else if (msg !== this.lastError) this.log.debug({ err: msg }, 'etcd still unreachable');
    this.lastError = msg;
  }

  private loseLease(reason: string): void {
    this.leaseLosses++;
    const wasLeader = this.state === 'leader';
    this.log.warn(
      { instance: this.self.name, wasLeader, reason },
      wasLeader
        ? 'etcd lease lost: giving up leadership, no failover decisions until etcd answers again'
        : 'etcd lease lost: no failover decisions until etcd answers again',
    );
    const lease = this.lease;
    this.lease = undefined;
    try {
      lease?.release();
    } catch {
      // already closed
    }
    this.leaseId = '';
    this.state = 'lost';
    this.published.clear();
    if (wasLeader) this.track(this.interfaceCommands('down', reason));
  }

  private async read(): Promise<Snapshot> {
    const t0 = process.hrtime.bigint();
    const res = await this.client.getAll().prefix(this.keys.leader.slice(0, -'leader'.length)).exec();
    this.rtt = Number(process.hrtime.bigint() - t0) / 1e9;
    const snap: Snapshot = {
      members: new Map(),
      failoverMod: '0',
      verdicts: new Map(),
      requests: new Map(),
      results: new Map(),
    };
    for (const kv of res.kvs) {
      const key = kv.key.toString('utf8');
      if (key === this.keys.leader) snap.leader = { name: kv.value.toString('utf8'), lease: String(kv.lease) };
      else if (key === this.keys.state) snap.view = parse<NodeView>(kv);
      else if (key === this.keys.failover) {
        const rec = parse<FailoverRecord>(kv);
        snap.failoverMod = String(kv.mod_revision);
        if (rec) snap.failover = { rec, mod: String(kv.mod_revision) };
      } else if (key.startsWith(this.keys.members)) {
        const m = parse<MemberInfo>(kv);
        if (m) snap.members.set(m.name, m);
      } else if (key.startsWith(this.keys.verdicts)) {
        const [node, member] = key.slice(this.keys.verdicts.length).split('/', 2);
        const v = parse<Verdict>(kv);
        if (v && member !== undefined && /^\d+$/.test(node ?? '')) {
          let m = snap.verdicts.get(Number(node));
          if (!m) snap.verdicts.set(Number(node), (m = new Map()));
          m.set(member, v);
        }
      } else if (key.startsWith(this.keys.requests)) {
        const r = parse<OperationRequest>(kv);
        if (r) snap.requests.set(key.slice(this.keys.requests.length), r);
      } else if (key.startsWith(this.keys.results)) {
        const r = parse<OperationReply>(kv);
        if (r) snap.results.set(key.slice(this.keys.results.length), r);
      }
    }
    return snap;
  }

  private async process(snap: Snapshot): Promise<void> {
    this.members = snap.members;
    if (this.leaseId && !snap.members.has(this.self.name)) await this.putMember();
    const mine = snap.leader !== undefined && snap.leader.lease === this.leaseId && this.leaseId !== '';
    if (this.state === 'leader' && !mine) this.stepDown('the leader key is no longer held by this instance');
    if (!snap.leader && this.leaseHeld()) await this.campaign(snap);
    else this.leaderName = snap.leader?.name ?? '';

    if (this.state === 'leader') {
      if (this.viewDirty || !snap.view) await this.publishView();
      // While a failover of ours runs, recordMod is the revision of our own last write.
      if (!this.deciding) this.recordMod = snap.failoverMod;
      this.decide(snap);
      this.serveRequests(snap);
    } else if (snap.view) await this.applyView(snap.view);

    for (const [id, answer] of this.pending) {
      const r = snap.results.get(id);
      if (!r) continue;
      answer(r);
      this.track(
        (async () => {
          await this.client.delete().key(this.keys.request(id)).exec();
          await this.client.delete().key(this.keys.result(id)).exec();
        })(),
      );
    }
  }

  // ------------------------------------------------------------------ leadership

  private async campaign(snap: Snapshot): Promise<void> {
    const lease = this.leaseId;
    const res = await this.client
      .if(this.keys.leader, 'Create', '==', 0)
      .then(this.client.put(this.keys.leader).value(this.self.name).lease(lease))
      .commit();
    // Lost meanwhile: the key belongs to a lease this instance no longer holds (it expires with it).
    if (!res.succeeded || lease !== this.leaseId || this.stopped) return;
    this.state = 'leader';
    this.self.state = 'leader';
    this.leaderName = this.self.name;
    this.log.warn({ instance: this.self.name, members: snap.members.size }, 'this instance is now the leader');
    await this.putMember().catch(() => undefined);
    // The shared state is the truth: take it over before deciding anything.
    if (snap.view) await this.applyView(snap.view);
    this.viewDirty = true;
    const pend = pendingFailover(snap.failover?.rec, this.self.name);
    if (pend) this.resume(pend, snap.failover?.mod ?? '0');
    this.track(this.interfaceCommands('up', 'elected leader'));
  }

  private stepDown(reason: string): void {
    this.log.warn({ instance: this.self.name, reason }, 'this instance is no longer the leader');
    this.state = this.leaseId ? 'member' : 'lost';
    this.self.state = 'member';
    if (this.leaseId) this.track(this.putMember());
    this.track(this.interfaceCommands('down', reason));
  }

  /** if_up_cmd + arping_cmd (elected) or if_down_cmd (no longer leader), $_IP_$ = delegate_ip. */
  private async interfaceCommands(which: 'up' | 'down', reason: string): Promise<void> {
    const cfg = this.o.getConfig();
    const cmds = which === 'up' ? [cfg.if_up_cmd, cfg.arping_cmd] : [cfg.if_down_cmd];
    const names = which === 'up' ? ['if_up_cmd', 'arping_cmd'] : ['if_down_cmd'];
    for (let i = 0; i < cmds.length; i++) {
      const tpl = cmds[i]!.trim();
      if (!tpl) continue;
      const command = tpl.replace(/\$_IP_\$/g, cfg.delegate_ip);
      this.log.info({ kind: names[i], command, reason }, `executing ${names[i]}`);
      const r = await runShellCommand(command, IF_COMMAND_TIMEOUT_MS);
      const fields = { kind: names[i], code: r.code, durationMs: r.durationMs, stderr: r.stderr.trim().slice(0, 2000) };
      if (r.code === 0) this.log.info(fields, `${names[i]} finished`);
      else this.log.error(fields, `${names[i]} failed`);
    }
  }

  // ------------------------------------------------------------------ node state

  private stateChanged(): void {
    if (this.state !== 'leader') return;
    this.viewDirty = true;
    this.poke();
  }

  private currentView(): NodeView {
    return {
      primary: this.o.nodes.primaryId,
      failover: this.o.cluster.failoverInProgress,
      nodes: this.o.nodes.all().map((n) => ({ id: n.id, status: n.status })),
      leader: this.self.name,
      at: Date.now(),
    };
  }

  /** Leader: write the node state (only while the leader key is ours). */
  private publishView(): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.state !== 'leader' || !this.leaseId) return;
      this.viewDirty = false;
      const view = this.currentView();
      const res = await this.client
        .if(this.keys.leader, 'Lease', '==', this.leaseId)
        .then(this.client.put(this.keys.state).value(JSON.stringify(view)))
        .commit()
        .catch((e: unknown) => {
          this.viewDirty = true;
          throw e;
        });
      if (!res.succeeded) {
        this.viewDirty = true;
        return;
      }
      // A node attached again starts with no verdicts: the old 'down' ones must not fail it at once.
      for (const id of reattached(this.lastView?.nodes ?? [], view.nodes)) this.forgetVerdicts(id, true);
      this.lastView = view;
    };
    const p = this.publishing.then(run, run);
    this.publishing = p.catch(() => undefined);
    return p;
  }

  private async applyView(view: NodeView): Promise<void> {
    const before = this.o.nodes.all().map((n) => ({ id: n.id, status: n.status }));
    const ch = viewChanges(before, this.o.nodes.primaryId, view);
    const failover = this.state === 'leader' ? false : view.failover;
    if (ch.status.length === 0 && ch.primary === undefined && failover === this.o.cluster.failoverInProgress) return;
    const reason = `shared state from ${view.leader}`;
    await this.o.cluster.applyShared(() => {
      for (const c of ch.status) this.o.nodes.setStatus(c.id, c.to, reason);
      if (ch.primary !== undefined) this.o.nodes.setPrimary(ch.primary, reason);
    }, failover);
    for (const c of ch.status) if (c.to !== 'down') this.forgetVerdicts(c.id, false);
  }

  private forgetVerdicts(id: number, inEtcd: boolean): void {
    this.myVerdicts.delete(id);
    this.published.delete(id);
    if (inEtcd) this.track(this.client.delete().prefix(this.keys.nodeVerdicts(id)).exec());
  }

  private flushVerdicts(): void {
    if (!this.leaseId) return;
    for (const [id, v] of this.myVerdicts) {
      if (this.published.get(id) === v.ok) continue;
      this.published.set(id, v.ok);
      const lease = this.leaseId;
      this.track(
        this.client
          .put(this.keys.verdict(id, this.self.name))
          .value(JSON.stringify(v))
          .lease(lease)
          .exec()
          .catch(() => {
            if (this.published.get(id) === v.ok) this.published.delete(id);
          }),
      );
    }
  }

  // ------------------------------------------------------------------ leader decisions

  private decide(snap: Snapshot): void {
    if (this.deciding || this.o.cluster.failoverInProgress) return;
    const cfg = this.o.getConfig();
    const live = new Set(snap.members.keys());
    const needed = votesNeeded(live.size, cfg);
    const nodes = this.o.nodes.all().map((n) => ({
      id: n.id,
      status: n.status,
      allowFailover: n.config.allow_to_failover,
    }));
    const fail = nodesToFail(nodes, snap.verdicts, live, needed);
    if (fail.length === 0) return;
    const ids = fail.map((f) => f.node);
    const votes = [...new Set(fail.flatMap((f) => f.votes))].sort();
    const reason = `health check failed on ${fail
      .map((f) => `node ${f.node} (${f.votes.length} of ${live.size} instances)`)
      .join(', ')}`;
    this.deciding = true;
    this.log.warn({ nodes: ids, votes, needed, live: live.size }, 'consensus: failing over');
    const rec: FailoverRecord = {
      seq: Date.now() * 1000 + (++this.seq % 1000),
      nodes: ids,
      reason,
      leader: this.self.name,
      phase: 'decided',
      votes,
      at: Date.now(),
    };
    this.track(
      (async () => {
        try {
          if (!(await this.writeRecord(rec))) return;
          await this.o.cluster.failNodes(ids, reason, { checkpoint: (step) => this.checkpoint(rec, step) });
        } finally {
          this.deciding = false;
          this.viewDirty = true;
          this.poke();
        }
      })(),
    );
  }

  /** A new leader finishes the failover a previous leader left: no operator command runs again. */
  private resume(rec: FailoverRecord, mod: string): void {
    this.recordMod = mod;
    this.deciding = true;
    this.log.warn(
      { nodes: rec.nodes, phase: rec.phase, previousLeader: rec.leader },
      'finishing the failover the previous leader left (failover_command / follow_primary_command not run again)',
    );
    const mine: FailoverRecord = { ...rec, leader: this.self.name };
    this.track(
      (async () => {
        try {
          if (!(await this.writeRecord(mine))) return;
          await this.o.cluster.failNodes(rec.nodes, `${rec.reason} (finished by ${this.self.name})`, {
            skipFailoverCommand: true,
            skipFollowPrimaryCommand: true,
            checkpoint: (step) => this.checkpoint(mine, step),
          });
          await this.writeRecord({ ...mine, phase: 'done' });
        } finally {
          this.deciding = false;
          this.viewDirty = true;
          this.poke();
        }
      })(),
    );
  }

  private async checkpoint(rec: FailoverRecord, step: FailoverStep): Promise<void> {
    if (step !== 'done') {
      // Publish the node state of the step before going on (others see the failed nodes down at once).
      this.viewDirty = true;
      await this.publishView().catch(() => undefined);
    }
    const ok = await this.writeRecord({ ...rec, phase: step }).catch(() => false);
    if (!ok && step !== 'done')
      throw new Error(`no longer the coordination leader: failover of node(s) ${rec.nodes.join(',')} stops at ${step}`);
  }

  /** Write the failover record if this instance still leads and nobody wrote it since we read it. */
  private async writeRecord(rec: FailoverRecord): Promise<boolean> {
    if (this.state !== 'leader' || !this.leaseId) return false;
    const res = await this.client
      .if(this.keys.leader, 'Lease', '==', this.leaseId)
      .and(this.keys.failover, 'Mod', '==', this.recordMod)
      .then(this.client.put(this.keys.failover).value(JSON.stringify(rec)))
      .commit();
    if (res.succeeded) this.recordMod = String(res.header.revision);
    else this.log.warn({ nodes: rec.nodes, phase: rec.phase }, 'failover record changed by another leader: stopping');
    return res.succeeded;
  }

  private serveRequests(snap: Snapshot): void {
    for (const [id, req] of snap.requests) {
      if (this.handled.has(id) || snap.results.has(id)) continue;
      this.handled.add(id);
      this.log.info({ op: req.op, node: req.node, from: req.from }, `node operation asked by ${req.from}`);
      this.track(
        (async () => {
          let reply: OperationReply;
          try {
            const c = this.o.cluster;
            const r =
              req.op === 'attach'
                ? await c.attach(req.node)
                : req.op === 'detach'
                  ? await c.detach(req.node)
                  : await c.promote(req.node, { switchover: req.switchover });
            reply = { ok: true, changed: r.changed, status: r.status, primary: r.primary, message: r.message };
          } catch (e) {
            reply = { ok: false, code: e instanceof ClusterError ? e.code : 'INVALID_STATE', message: errText(e) };
          }
          await this.publishView().catch(() => undefined);
          await this.client.put(this.keys.result(id)).value(JSON.stringify(reply)).exec();
        })(),
      );
    }
    // Results nobody waits for any more (the asker's lease, and its request, are gone).
    for (const id of snap.results.keys())
      if (!snap.requests.has(id)) this.track(this.client.delete().key(this.keys.result(id)).exec());
    for (const id of this.handled) if (!snap.requests.has(id)) this.handled.delete(id);
  }
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
