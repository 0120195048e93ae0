/**
 * What the cluster code remembers about nodes besides the node table's status
 * and role: why a node went down and when it last came back. Operations and
 * failover write it; auto_failback reads it. The ClusterManager owns the one
 * instance.
 */
export class NodeMarks {
  /** Node ids an operator detached in this run: never re-attached automatically. */
  readonly operatorDetached = new Set<number>();
  /** Node ids detached for follow_primary_command. */
  readonly followDetached = new Set<number>();
  /** When each node was last failed back (ms since epoch): auto_failback waits auto_failback_interval. */
  readonly lastFailback = new Map<number, number>();
}
