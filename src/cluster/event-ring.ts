/**
 * The recent node events (the dashboard's "events" table and /api/events): an
 * in-memory ring of the last `capacity` detaches, attaches, failovers and
 * promotions, fed by the ClusterManager's events and the node table's primary
 * changes. Lost on restart; the JSON logs keep the full history.
 */
import type { EventEmitter } from 'node:events';
import type { ClusterManagerEvents } from './events.js';
import type { NodeTable } from './nodes.js';

export const NODE_EVENT_KINDS = ['detach', 'attach', 'failover', 'promotion'] as const;
export type NodeEventKind = (typeof NODE_EVENT_KINDS)[number];

export interface RecordedNodeEvent {
  /** Increasing from 1; a client polling with `since` gets only newer events. */
  seq: number;
  /** ms since epoch */
  time: number;
  kind: NodeEventKind;
  /** The node concerned (the new primary for promotions; the failed primary for failovers). */
  node: number;
  /** Why, in words (the status change's reason, the failover's cause). */
  reason: string;
  /** failover: failed nodes, old and new primary, duration. promotion: old primary. */
  detail?: Record<string, number | number[] | boolean>;
}

export class NodeEventRing {
  private readonly ring: RecordedNodeEvent[] = [];
  private seq = 0;

  constructor(
    readonly capacity = 200,
    private readonly now: () => number = Date.now,
  ) {}

  record(e: Omit<RecordedNodeEvent, 'seq' | 'time'>): RecordedNodeEvent {
    const ev: RecordedNodeEvent = { seq: ++this.seq, time: this.now(), ...e };
    this.ring.push(ev);
    if (this.ring.length > this.capacity) this.ring.splice(0, this.ring.length - this.capacity);
    return ev;
  }

  /** Events with seq > since, oldest first. */
  list(since = 0): RecordedNodeEvent[] {
    return this.ring.filter((e) => e.seq > since);
  }

  get lastSeq(): number {
    return this.seq;
  }

  /** Record what the cluster reports from now on. Returns a function that stops listening. */
  follow(cluster: Pick<EventEmitter<ClusterManagerEvents>, 'on' | 'off'>, nodes: NodeTable): () => void {
    const down = (e: ClusterManagerEvents['node-down'][0]): void => {
      this.record({ kind: 'detach', node: e.node, reason: e.reason });
    };
    const up = (e: ClusterManagerEvents['node-up'][0]): void => {
      this.record({ kind: 'attach', node: e.node, reason: e.reason });
    };
    const failover = (e: ClusterManagerEvents['failover-done'][0]): void => {
      // A standby going down is its 'detach' event already; a failover is the primary failing.
      if (!e.primaryFailed) return;
      this.record({
        kind: 'failover',
        node: e.oldPrimary,
        reason: e.reason,
        detail: {
          failed: e.failed,
          oldPrimary: e.oldPrimary,
          newPrimary: e.newPrimary,
          primaryFailed: e.primaryFailed,
          durationMs: Math.round(e.durationMs),
        },
      });
    };
    const primary = (e: { from: number; to: number; reason: string }): void => {
      if (e.to < 0) return;
      this.record({ kind: 'promotion', node: e.to, reason: e.reason, detail: { oldPrimary: e.from } });
    };
    cluster.on('node-down', down);
    cluster.on('node-up', up);
    cluster.on('failover-done', failover);
    nodes.on('primary', primary);
    return () => {
      cluster.off('node-down', down);
      cluster.off('node-up', up);
      cluster.off('failover-done', failover);
      nodes.off('primary', primary);
    };
  }
}
