/**
 * The choices pgpool's failover() makes, decided before anything changes and
 * without I/O: which nodes go down, whether the primary is among them, the old
 * and new main node (%M, %m), and which nodes follow_primary_command runs for.
 * failover-runner.ts carries them out.
 */
import { newMainCandidate } from './failover.js';
import { isLive, mainNodeId, type NodeState } from './nodes.js';

export interface FailoverPlan {
  /** The requested nodes that are live: the ones that go down. */
  failed: number[];
  oldPrimary: number;
  oldMain: number;
  /** %m of failover_command. */
  newMain: number;
  /** The primary goes down or is replaced: a new primary must be found or set. */
  primaryFailed: boolean;
}

/** What a failover of `ids` does, decided before anything changes. */
export function planFailover(
  nodes: ReadonlyArray<Pick<NodeState, 'id' | 'status'>>,
  primaryId: number,
  ids: readonly number[],
  o: { promoteId?: number; fixedPrimary?: number },
): FailoverPlan {
  const failed = ids.filter((id) => {
    const s = nodes.find((n) => n.id === id)?.status;
    return s !== undefined && isLive(s);
  });
  const failedSet = new Set(failed);
  const primaryFailed =
    (primaryId >= 0 && failedSet.has(primaryId)) || o.fixedPrimary !== undefined || o.promoteId !== undefined;
  return {
    failed,
    oldPrimary: primaryId,
    oldMain: mainNodeId(nodes),
    newMain: newMainCandidate(nodes, failedSet, o.promoteId),
    primaryFailed,
  };
}

/**
 * follow_primary_command as pgpool runs it: once for every used node but the
 * new primary (`follow`); those not already down are detached first (`detach`).
 */
export function followPrimaryTargets(
  nodes: ReadonlyArray<Pick<NodeState, 'id' | 'status'>>,
  newPrimary: number,
): { follow: number[]; detach: number[] } {
  const follow: number[] = [];
  const detach: number[] = [];
  for (const n of nodes) {
    if (n.id === newPrimary || n.status === 'unused') continue;
    if (n.status !== 'down') detach.push(n.id);
    follow.push(n.id);
  }
  return { follow, detach };
}
