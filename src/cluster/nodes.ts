/**
 * The node table: the one owner of each backend's status and role. Everyone else
 * reads `snapshot()`/`get()` or listens to 'change'; only the cluster code (health
 * checks, failover, admin attach/detach) calls the mutators.
 */
import { EventEmitter } from 'node:events';
import type { BackendConfig } from '../config/types.js';

/**
 * pgpool's backend status names (SHOW pool_nodes `status`). pgpool's fifth,
 * `quarantine`, belongs to its watchdog, which pgrelay does not have.
 */
export const NODE_STATUSES = ['up', 'waiting', 'down', 'unused'] as const;
export type NodeStatus = (typeof NODE_STATUSES)[number];
export const NODE_ROLES = ['primary', 'standby'] as const;
export type NodeRole = (typeof NODE_ROLES)[number];

/** Sessions may use a node that is up, or attached and not used yet (waiting). */
export function isLive(status: NodeStatus): boolean {
  return status === 'up' || status === 'waiting';
}

export interface NodeState {
  readonly id: number;
  host: string;
  port: number;
  weight: number;
  status: NodeStatus;
  role: NodeRole;
  /** ms since epoch */
  lastStatusChange: number;
  /** Replication delay as last measured by the sr check. */
  delayBytes: number;
  delaySeconds: number;
  replicationState: string;
  replicationSyncState: string;
  /**
   * WAL position the node had replayed when last asked (sr check, or a session's
   * read-your-writes check); 0n when unknown. Each value was true when read, so it is a
   * lower bound of the node's position; it is forgotten when the node or the primary changes.
   */
  replayPosition: bigint;
  /** A graceful detach is waiting for its sessions: new sessions do not pick it for reads. */
  draining: boolean;
  config: BackendConfig;
}

/** pgpool's "main node": the lowest-id live node not in `excluding` (-1 when none). */
export function mainNodeId(
  nodes: ReadonlyArray<Pick<NodeState, 'id' | 'status'>>,
  excluding: ReadonlySet<number> = new Set(),
): number {
  let best = -1;
  for (const n of nodes) if (isLive(n.status) && !excluding.has(n.id) && (best < 0 || n.id < best)) best = n.id;
  return best;
}

export interface NodeChange {
  id: number;
  from: { status: NodeStatus; role: NodeRole };
  to: { status: NodeStatus; role: NodeRole };
  reason: string;
}

export class NodeTable extends EventEmitter {
  private readonly nodes: NodeState[];
  private primary = -1;

  constructor(backends: BackendConfig[]) {
    super();
    const now = Date.now();
    this.nodes = backends.map((b) => ({
      id: b.id,
      host: b.hostname,
      port: b.port,
      weight: b.weight,
      status: 'waiting' as NodeStatus,
      role: 'standby' as NodeRole,
      lastStatusChange: now,
      delayBytes: 0,
      delaySeconds: 0,
      replicationState: '',
      replicationSyncState: '',
      replayPosition: 0n,
      draining: false,
      config: b,
    }));
  }

  get size(): number {
    return this.nodes.length;
  }

  get primaryId(): number {
    return this.primary;
  }

  get(id: number): NodeState | undefined {
    return this.nodes[id];
  }

  all(): readonly NodeState[] {
    return this.nodes;
  }

  /** The primary if it is usable (up or waiting), else undefined. */
  primaryNode(): NodeState | undefined {
    const n = this.nodes[this.primary];
    return n && isLive(n.status) ? n : undefined;
  }

  setPrimary(id: number, reason: string): void {
    if (id === this.primary) return;
    const old = this.primary;
    this.primary = id;
    // Positions replayed from the old primary say nothing about the new one's WAL.
    for (const n of this.nodes) n.replayPosition = 0n;
    for (const n of this.nodes) {
      const role: NodeRole = n.id === id ? 'primary' : 'standby';
      if (n.role !== role) this.change(n, n.status, role, reason);
    }
    this.emit('primary', { from: old, to: id, reason });
  }

  /** pgpool's main node: the lowest-id live (up or waiting) node, -1 when none. */
  mainNodeId(): number {
    return mainNodeId(this.nodes);
  }

  /**
   * A session started using a node: `waiting` (attached, not used yet, as after
   * pcp_attach_node) becomes `up`, as in pgpool. Sessions may call it on every
   * connect; it does nothing for other statuses.
   */
  markUsed(id: number): void {
    const n = this.nodes[id];
    if (n && n.status === 'waiting') this.change(n, 'up', n.role, 'first session on the node');
  }

  /** Replication fields measured by the sr check (no event; 'srcheck' on the ClusterManager signals a new cycle). */
  setReplication(
    id: number,
    r: Partial<Pick<NodeState, 'delayBytes' | 'delaySeconds' | 'replicationState' | 'replicationSyncState'>>,
  ): void {
    const n = this.nodes[id];
    if (!n) return;
    if (r.delayBytes !== undefined) n.delayBytes = r.delayBytes;
    if (r.delaySeconds !== undefined) n.delaySeconds = r.delaySeconds;
    if (r.replicationState !== undefined) n.replicationState = r.replicationState;
    if (r.replicationSyncState !== undefined) n.replicationSyncState = r.replicationSyncState;
  }

  /** A node's replay position, just read (see NodeState.replayPosition). */
  noteReplayPosition(id: number, lsn: bigint): void {
    const n = this.nodes[id];
    if (n && n.id !== this.primary) n.replayPosition = lsn;
  }

  setStatus(id: number, status: NodeStatus, reason: string): void {
    const n = this.nodes[id];
    if (!n || n.status === status) return;
    this.change(n, status, n.role, reason);
  }

  private change(n: NodeState, status: NodeStatus, role: NodeRole, reason: string): void {
    const ev: NodeChange = { id: n.id, from: { status: n.status, role: n.role }, to: { status, role }, reason };
    n.status = status;
    n.role = role;
    n.replayPosition = 0n;
    n.lastStatusChange = Date.now();
    this.emit('change', ev);
  }
}
