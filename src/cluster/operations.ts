/**
 * The operator's node operations (pgpool's pcp_attach_node, pcp_detach_node,
 * pcp_promote_node [-s]), as PGPOOL ATTACH/DETACH/PROMOTE NODE and
 * `pgrelay attach|detach|promote` reach them. Each checks the node, then runs
 * the failover or failback in the cluster's status queue.
 */
import type { Logger } from '../log.js';
import type { FailoverRunner } from './failover-runner.js';
import type { NodeMarks } from './node-marks.js';
import type { NodeState, NodeTable } from './nodes.js';
import type { ClusterTasks } from './tasks.js';

export type ClusterErrorCode =
  | 'NO_SUCH_NODE'
  | 'NODE_UNUSED'
  | 'INVALID_STATE'
  | 'NO_PRIMARY'
  | 'STOPPED'
  | 'TIMEOUT'
  /** Coordination: the instance that decides cannot be reached. */
  | 'UNAVAILABLE';

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

export class NodeOperations {
  constructor(
    private readonly nodes: NodeTable,
    private readonly tasks: ClusterTasks,
    private readonly failover: FailoverRunner,
    private readonly marks: NodeMarks,
    /** How many client sessions use a node (detach waits for none). */
    private readonly sessionsOnNode: (id: number) => number,
    /** How long a graceful detach/promote waits (pgpool: recovery_timeout, read at each wait). */
    private readonly gracefulTimeoutMs: () => number,
    private readonly log: Logger,
  ) {}

  /** pcp_attach_node: the node becomes `waiting` (used → `up`) and failback_command runs. */
  attach(id: number): Promise<OperationResult> {
    const n = this.requireNode(id);
    return this.tasks.serial(async () => {
      this.marks.operatorDetached.delete(id);
      this.marks.followDetached.delete(id);
      if (n.status !== 'down') return this.result(id, false, `node ${id} is already attached (${n.status})`);
      await this.failover.failback(id, 'attached by operator');
      return this.result(id, true, `node ${id} attached`);
    });
  }

  /**
   * pcp_detach_node: the node goes down (failover_command runs; if it was the
   * primary, the primary search and follow_primary_command follow). With
   * gracefully, first wait (up to recovery_timeout) until no session uses the node.
   */
  async detach(id: number, o: { gracefully?: boolean } = {}): Promise<OperationResult> {
    const n = this.requireNode(id);
    if (n.status === 'down') return this.result(id, false, `node ${id} is already down`);
    if (o.gracefully) await this.drain(id);
    this.marks.operatorDetached.add(id);
    await this.tasks.serial(() => this.failover.degenerate([id], 'detached by operator'));
    return this.result(id, true, `node ${id} detached`);
  }

  /**
   * pcp_promote_node. Without switchover only pgrelay's view changes: the node
   * becomes the primary, the old primary is detached, follow_primary_command
   * runs for the other nodes; PostgreSQL is not promoted. With switchover: the
   * current primary is detached and failover_command runs with %m = id (the
   * script promotes it), then the primary search and follow_primary_command.
   */
  async promote(id: number, o: { switchover?: boolean; gracefully?: boolean } = {}): Promise<OperationResult> {
    this.checkPromote(id);
    if (this.nodes.primaryId === id) return this.result(id, false, `node ${id} is already the primary`);
    if (o.gracefully) {
      await this.drainPrimary(id);
      // The cluster may have changed while the sessions ended (a failover, the node went down).
      this.checkPromote(id);
      if (this.nodes.primaryId === id) return this.result(id, false, `node ${id} is already the primary`);
    }
    const old = this.nodes.primaryId;
    if (o.switchover && (old < 0 || !this.nodes.primaryNode()))
      throw new ClusterError(
        'NO_PRIMARY',
        'switchover needs a current primary to detach; use promote without switchover',
      );
    await this.tasks.serial(async () => {
      if (old >= 0 && this.nodes.primaryNode()) {
        if (o.switchover) this.marks.operatorDetached.add(old);
        await this.failover.degenerate(
          [old],
          o.switchover ? `switchover to node ${id}` : `node ${id} promoted by operator`,
          {
            promoteId: id,
            fixedPrimary: o.switchover ? undefined : id,
            skipFailoverCommand: !o.switchover,
          },
        );
      } else {
        await this.failover.degenerate([], `node ${id} promoted by operator`, {
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

  /**
   * promote({gracefully}) (pcp_promote_node -g): wait (up to recovery_timeout) until no session uses the current
   * primary, the node the promote detaches. pgpool waits for all its clients to disconnect
   * and refuses new ones meanwhile; pgrelay waits for the sessions connected to the primary,
   * which is every session that has written or started a transaction there.
   */
  async drainPrimary(id: number): Promise<void> {
    this.checkPromote(id);
    const old = this.nodes.primaryId;
    if (old < 0 || old === id || !this.nodes.primaryNode()) return;
    await this.drain(old, `promote node ${id}`);
  }

  private checkPromote(id: number): void {
    const n = this.requireNode(id);
    if (n.status !== 'up' && n.status !== 'waiting')
      throw new ClusterError('INVALID_STATE', `node ${id} is ${n.status}; only an up or waiting node can be promoted`);
  }

  /**
   * Wait (up to recovery_timeout, as pgpool) until no session uses node `id`; meanwhile new
   * sessions do not read there. `operation` names what waits (for the log and the timeout error).
   */
  async drain(id: number, operation = `detach node ${id}`): Promise<void> {
    const n = this.requireNode(id);
    const timeoutMs = this.gracefulTimeoutMs();
    const deadline = Date.now() + timeoutMs;
    n.draining = true;
    const waiting = this.sessionsOnNode(id);
    if (waiting > 0)
      this.log.info(
        { node: id, sessions: waiting, operation, timeout_ms: timeoutMs },
        `${operation} gracefully: waiting for the sessions using node ${id} to end`,
      );
    try {
      while (this.sessionsOnNode(id) > 0) {
        if (this.tasks.stopped) throw new ClusterError('STOPPED', 'pgrelay is stopping');
        if (Date.now() >= deadline)
          throw new ClusterError(
            'TIMEOUT',
            `node ${id} still has ${this.sessionsOnNode(id)} session(s) after waiting; ${operation} not done`,
          );
        await this.tasks.sleep(200);
      }
    } finally {
      n.draining = false;
    }
  }

  /** Throws the ClusterError an operation on node `id` would (no such node, unused, stopping). */
  check(id: number): void {
    this.requireNode(id);
  }

  private requireNode(id: number): NodeState {
    if (this.tasks.stopped) throw new ClusterError('STOPPED', 'pgrelay is stopping');
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
}
