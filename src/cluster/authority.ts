/**
 * Who changes the node state: this instance alone (coordination = off, the
 * LocalAuthority below), or the leader of several instances (coordination =
 * etcd, src/coordination/). The cluster code asks the authority before it
 * decides anything on its own (taking a node back, the sr check's primary and
 * auto_failback choices), hands it the nodes its health checks find failed, and
 * lets it carry node operations to the instance that decides.
 */
import type { OperationResult } from './operations.js';

export type NodeOperation =
  | { op: 'attach'; node: number }
  | { op: 'detach'; node: number }
  | { op: 'promote'; node: number; switchover: boolean };

export interface DecisionAuthority {
  /** True when this instance may change the node state on its own now. */
  decides(): boolean;
  /** A health check of node `id` failed (after its retries): fail it over, or let the instances decide. */
  nodeFailed(id: number, reason: string): Promise<void>;
  /** A health check of node `id` succeeded. */
  nodeOk(id: number): void;
  /** Run a node operation elsewhere; undefined = run it here. */
  forward(op: NodeOperation): Promise<OperationResult> | undefined;
}

/** coordination = off: this instance decides everything, as pgpool without its watchdog. */
export class LocalAuthority implements DecisionAuthority {
  constructor(private readonly failNode: (id: number, reason: string) => Promise<void>) {}
  decides(): boolean {
    return true;
  }
  nodeFailed(id: number, reason: string): Promise<void> {
    return this.failNode(id, reason);
  }
  nodeOk(): void {}
  forward(): undefined {
    return undefined;
  }
}
