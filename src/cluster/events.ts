/**
 * What the ClusterManager tells its listeners (services.ts: metrics, cache
 * clean-up, logs; tests): one event per health check, sr check cycle, failover,
 * node going down or coming back, and operator command run.
 */
import type { EventEmitter } from 'node:events';
import type { CommandResult } from './failover.js';
import type { NodeState } from './nodes.js';

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
  /** Coordination: node state decided by the leader was applied. */
  'shared-state': [];
}

/** How the manager's parts emit events without knowing the manager. */
export type ClusterEvents = Pick<EventEmitter<ClusterManagerEvents>, 'emit'>;
