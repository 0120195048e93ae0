/**
 * The choices of coordination (coordination = 'etcd'), without I/O: what the
 * instances publish in etcd and what each of them, or the leader, decides
 * from a snapshot of it: how many votes a failover needs, which nodes fail
 * over, which node state changes a follower applies, whether a failover left
 * by a previous leader is pending, the SHOW pgrelay_instances rows, and
 * readiness without etcd. coordinator.ts does the I/O.
 */
import type { FailoverStep } from '../cluster/failover-runner.js';
import { isLive, type NodeStatus } from '../cluster/nodes.js';

/** An instance, as it registers itself under its lease (key members/<name>). */
export interface MemberInfo {
  name: string;
  host: string;
  port: number;
  version: string;
  /** 'leader' once elected; 'member' otherwise. */
  state: 'member' | 'leader';
  pid: number;
  /** ms since epoch */
  startedAt: number;
}

/** An instance's last health-check result on a node (key verdicts/<node>/<name>, under its lease). */
export interface Verdict {
  ok: boolean;
  error?: string;
  /** ms since epoch */
  at: number;
}

/** The node state the leader publishes (key state): every instance applies it. */
export interface NodeView {
  primary: number;
  /** A primary failover is in progress (sessions wait for the new primary). */
  failover: boolean;
  nodes: Array<{ id: number; status: NodeStatus }>;
  /** Instance that wrote it. */
  leader: string;
  /** ms since epoch */
  at: number;
}

export type FailoverPhase = 'decided' | FailoverStep;

/** A failover decided by the leader (key failover), rewritten at each step with a revision check. */
export interface FailoverRecord {
  seq: number;
  nodes: number[];
  reason: string;
  leader: string;
  phase: FailoverPhase;
  /** Instances whose verdicts decided it. */
  votes: string[];
  at: number;
}

/** A node operation asked of the leader by another instance (key requests/<id>, under the asker's lease). */
export type OperationRequest =
  | { op: 'attach'; node: number; from: string }
  | { op: 'detach'; node: number; from: string }
  | { op: 'promote'; node: number; switchover: boolean; from: string };

/** The leader's answer (key results/<id>). */
export type OperationReply =
  | { ok: true; changed: boolean; status: NodeStatus; primary: number; message: string }
  | { ok: false; code: string; message: string };

export interface ConsensusSettings {
  failover_require_consensus: boolean;
  enable_consensus_with_half_votes: boolean;
}

/**
 * Down verdicts a failover needs among `live` instances: pgpool's
 * failover_require_consensus (a majority, or half with
 * enable_consensus_with_half_votes); one without it.
 */
export function votesNeeded(live: number, s: ConsensusSettings): number {
  if (!s.failover_require_consensus) return 1;
  if (live <= 0) return 1;
  return s.enable_consensus_with_half_votes ? Math.ceil(live / 2) : Math.floor(live / 2) + 1;
}

export interface FailCandidate {
  node: number;
  /** Live instances that find it down. */
  votes: string[];
}

/**
 * Nodes the leader fails over: live in its view, failover allowed, and found
 * down by at least `needed` of the live instances (verdicts of instances whose
 * lease expired are gone from etcd; those of unknown instances are not counted).
 */
export function nodesToFail(
  nodes: ReadonlyArray<{ id: number; status: NodeStatus; allowFailover: boolean }>,
  verdicts: ReadonlyMap<number, ReadonlyMap<string, Verdict>>,
  liveMembers: ReadonlySet<string>,
  needed: number,
): FailCandidate[] {
  const out: FailCandidate[] = [];
  for (const n of nodes) {
    if (!isLive(n.status) || !n.allowFailover) continue;
    const votes: string[] = [];
    for (const [member, v] of verdicts.get(n.id) ?? []) if (!v.ok && liveMembers.has(member)) votes.push(member);
    if (votes.length >= needed && votes.length > 0) out.push({ node: n.id, votes: votes.sort() });
  }
  return out;
}

export interface ViewChanges {
  status: Array<{ id: number; to: NodeStatus }>;
  /** New primary id (-1: none), when it differs. */
  primary?: number;
}

/**
 * What a follower changes to match the leader's view. `waiting` and `up` are
 * both "attached": a node this instance already used stays `up`; a node the
 * leader has used becomes `up` here too. Unused nodes are left alone.
 */
export function viewChanges(
  local: ReadonlyArray<{ id: number; status: NodeStatus }>,
  localPrimary: number,
  view: NodeView,
): ViewChanges {
  const status: ViewChanges['status'] = [];
  for (const v of view.nodes) {
    const n = local.find((x) => x.id === v.id);
    if (!n || n.status === 'unused' || v.status === 'unused') continue;
    if (v.status === 'down' && n.status !== 'down') status.push({ id: n.id, to: 'down' });
    else if (v.status !== 'down' && n.status === 'down') status.push({ id: n.id, to: v.status });
    else if (v.status === 'up' && n.status === 'waiting') status.push({ id: n.id, to: 'up' });
  }
  const primary = view.primary !== localPrimary && local.some((n) => n.id === view.primary) ? view.primary : undefined;
  if (view.primary < 0 && localPrimary >= 0) return { status, primary: -1 };
  return primary === undefined ? { status } : { status, primary };
}

/** Nodes that went from down to attached between two views (their old verdicts are dropped). */
export function reattached(
  before: ReadonlyArray<{ id: number; status: NodeStatus }>,
  after: ReadonlyArray<{ id: number; status: NodeStatus }>,
): number[] {
  const out: number[] = [];
  for (const a of after) {
    const b = before.find((x) => x.id === a.id);
    if (b && b.status === 'down' && isLive(a.status)) out.push(a.id);
  }
  return out;
}

/**
 * A failover another leader decided and did not finish: the new leader
 * finishes it without running failover_command or follow_primary_command
 * again (an operator command runs at most once; it may have run already).
 */
export function pendingFailover(rec: FailoverRecord | undefined, self: string): FailoverRecord | undefined {
  if (!rec || rec.phase === 'done') return undefined;
  if (rec.leader === self) return undefined;
  return rec;
}

export type InstanceState = 'connecting' | 'member' | 'leader' | 'lost';

export interface InstanceRow {
  name: string;
  host: string;
  port: number;
  version: string;
  state: string;
  leader: boolean;
  /** This instance. */
  self: boolean;
  /** 'held' / 'lost' for this instance; others are listed only while their lease lives. */
  lease: 'held' | 'lost';
  started: number;
}

/** SHOW pgrelay_instances: the registered instances (by name), plus this one when its lease is lost. */
export function instanceRows(
  members: ReadonlyMap<string, MemberInfo>,
  leader: string,
  self: MemberInfo,
  selfState: InstanceState,
): InstanceRow[] {
  const rows: InstanceRow[] = [];
  const held = selfState === 'member' || selfState === 'leader';
  for (const m of members.values())
    rows.push({
      name: m.name,
      host: m.host,
      port: m.port,
      version: m.version,
      state: m.name === self.name ? selfState : m.state,
      leader: m.name === leader,
      self: m.name === self.name,
      lease: m.name === self.name && !held ? 'lost' : 'held',
      started: m.startedAt,
    });
  if (!members.has(self.name))
    rows.push({
      name: self.name,
      host: self.host,
      port: self.port,
      version: self.version,
      state: selfState,
      leader: false,
      self: true,
      lease: held ? 'held' : 'lost',
      started: self.startedAt,
    });
  return rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** /readyz with coordination: not ready once etcd has been unreachable longer than the grace. */
export function coordinationReadiness(
  unreachableSince: number | undefined,
  now: number,
  graceSeconds: number,
): { ready: boolean; reason?: string } {
  if (unreachableSince === undefined) return { ready: true };
  const s = Math.floor((now - unreachableSince) / 1000);
  if (now - unreachableSince <= graceSeconds * 1000) return { ready: true };
  return { ready: false, reason: `etcd unreachable for ${s} s (etcd_unreachable_grace = ${graceSeconds} s)` };
}

/** The etcd key prefix: etcd_prefix, or /pgrelay/<cluster_name>/; always ends with '/'. */
export function etcdPrefix(prefix: string, clusterName: string): string {
  const p = prefix.trim() === '' ? `/pgrelay/${clusterName}/` : prefix.trim();
  return p.endsWith('/') ? p : `${p}/`;
}

/** The keys of one pgrelay cluster under `prefix`. */
export function etcdKeys(prefix: string) {
  return {
    members: `${prefix}members/`,
    member: (name: string) => `${prefix}members/${name}`,
    leader: `${prefix}leader`,
    state: `${prefix}state`,
    failover: `${prefix}failover`,
    verdicts: `${prefix}verdicts/`,
    verdict: (node: number, name: string) => `${prefix}verdicts/${node}/${name}`,
    nodeVerdicts: (node: number) => `${prefix}verdicts/${node}/`,
    requests: `${prefix}requests/`,
    request: (id: string) => `${prefix}requests/${id}`,
    results: `${prefix}results/`,
    result: (id: string) => `${prefix}results/${id}`,
  };
}
export type EtcdKeys = ReturnType<typeof etcdKeys>;
