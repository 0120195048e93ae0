/**
 * The primary search (pgpool's find_primary_node / find_primary_node_repeatedly):
 * pg_is_in_recovery() on every live node, about once a second, until one answers
 * false or the search times out. choosePrimary() is the decision, without I/O.
 */
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import type { CheckAccess } from './check-access.js';
import { srQueryTimeoutMs } from './check-access.js';
import { oneShotQuery } from './conn.js';
import { isLive, type NodeState, type NodeTable } from './nodes.js';
import type { ClusterTasks } from './tasks.js';

const SEARCH_INTERVAL_MS = 1000;

export interface SearchAnswer {
  node: NodeState;
  /** The node answered. */
  ok: boolean;
  /** pg_is_in_recovery(); true when the node did not answer. */
  inRecovery: boolean;
}

/**
 * The primary after one round: a live node with ALWAYS_PRIMARY (found before the
 * round) wins; else the first answering live node not in recovery (-1 when
 * none). `candidates` lists every node that claimed to be a primary.
 */
export function choosePrimary(
  alwaysPrimary: NodeState | undefined,
  answers: readonly SearchAnswer[],
): { primary: number; candidates: number[] } {
  const candidates = answers.filter((a) => a.ok && !a.inRecovery && isLive(a.node.status)).map((a) => a.node.id);
  if (alwaysPrimary) return { primary: alwaysPrimary.id, candidates };
  return { primary: candidates[0] ?? -1, candidates };
}

export class PrimarySearch {
  constructor(
    private readonly nodes: NodeTable,
    private readonly getConfig: () => Config,
    private readonly log: Logger,
    private readonly tasks: ClusterTasks,
    private readonly access: CheckAccess,
  ) {}

  /** One round of pg_is_in_recovery() on every live node. At start-up, marks answering nodes up. */
  async round(answered?: Set<number>, phase = 'search'): Promise<number> {
    const cfg = this.getConfig();
    const cred = this.access.srCredentials(cfg);
    const live = this.nodes.all().filter((n) => isLive(n.status));
    const always = live.find((n) => n.config.always_primary);
    const timeout = srQueryTimeoutMs(cfg);
    const answers = await Promise.all(
      live.map(async (n): Promise<SearchAnswer> => {
        try {
          const rows = await oneShotQuery(n, cred, 'SELECT pg_catalog.pg_is_in_recovery() AS r', timeout);
          return { node: n, ok: true, inRecovery: rows[0]?.r === 't' };
        } catch (e) {
          this.log.debug({ node: n.id, err: (e as Error).message }, 'node did not answer the primary search');
          return { node: n, ok: false, inRecovery: true };
        }
      }),
    );
    for (const a of answers) {
      if (!a.ok) continue;
      answered?.add(a.node.id);
      if (phase === 'start-up' && a.node.status === 'waiting')
        this.nodes.setStatus(a.node.id, 'up', 'answered the primary search at start-up');
      if (a.inRecovery) this.log.info({ node: a.node.id }, `find_primary_node: standby node is ${a.node.id}`);
    }
    const { primary, candidates } = choosePrimary(always, answers);
    if (always) return primary;
    if (primary >= 0) this.log.info({ node: primary }, `find_primary_node: primary node is ${primary}`);
    if (candidates.length > 1)
      this.log.warn(
        { nodes: candidates },
        'more than one node is not in recovery (false primary?); using the lowest id',
      );
    return primary;
  }

  /** Does `node` answer as a primary (pg_is_in_recovery() = false)? False when it does not answer. */
  async answersAsPrimary(node: NodeState): Promise<boolean> {
    const cfg = this.getConfig();
    try {
      const rows = await oneShotQuery(
        node,
        this.access.srCredentials(cfg),
        'SELECT pg_catalog.pg_is_in_recovery() AS r',
        srQueryTimeoutMs(cfg),
      );
      return rows[0]?.r === 'f';
    } catch (e) {
      this.log.debug({ node: node.id, err: (e as Error).message }, 'down node did not answer');
      return false;
    }
  }

  /**
   * Rounds about once a second until a primary is found or timeoutS passes (0 = until
   * stop). After a round without one, `orElse` may supply it (a node taken back).
   */
  async repeat(
    timeoutS: number,
    answered?: Set<number>,
    phase = 'search',
    orElse?: () => Promise<number>,
  ): Promise<number> {
    const deadline = timeoutS > 0 ? Date.now() + timeoutS * 1000 : Infinity;
    for (;;) {
      if (this.tasks.stopped) return -1;
      const t0 = Date.now();
      const p = await this.round(answered, phase);
      if (p >= 0) return p;
      const other = orElse ? await orElse() : -1;
      if (other >= 0) return other;
      if (Date.now() >= deadline) return -1;
      if (phase === 'start-up' && this.nodes.primaryId >= 0) return this.nodes.primaryId;
      await this.tasks.sleep(Math.max(0, Math.min(SEARCH_INTERVAL_MS - (Date.now() - t0), deadline - Date.now())));
    }
  }
}
