/**
 * Failover and failback as pgpool's failover() does them, once the decision is
 * made: nodes go down, failover_command runs per failed node, a new primary is
 * searched (or given, for promote), follow_primary_command runs for the other
 * nodes; failback attaches a node (status waiting) and runs failback_command.
 * Callers run these inside ClusterTasks.serial(). The choices themselves are
 * failover-plan.ts.
 */
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import type { ClusterEvents, CommandEvent, FailoverDoneEvent, FailoverStartEvent } from './events.js';
import { type CommandResult, expandPlaceholders, placeholderNode, runShellCommand } from './failover.js';
import { followPrimaryTargets, planFailover } from './failover-plan.js';
import type { NodeMarks } from './node-marks.js';
import { isLive, type NodeTable } from './nodes.js';
import type { PrimarySearch } from './primary-search.js';
import type { ClusterTasks } from './tasks.js';

export interface FailoverOptions {
  /** pcp_promote_node: the node to promote (%m of failover_command). */
  promoteId?: number;
  /** The new primary is known (pcp_promote_node without -s): no search. */
  fixedPrimary?: number;
  /** Do not run failover_command. */
  skipFailoverCommand?: boolean;
  /** Go on even when no node fails (promote with no current primary). */
  force?: boolean;
}

export class FailoverRunner {
  private running = false;

  constructor(
    private readonly nodes: NodeTable,
    private readonly getConfig: () => Config,
    private readonly log: Logger,
    private readonly tasks: ClusterTasks,
    private readonly events: ClusterEvents,
    private readonly search: PrimarySearch,
    private readonly marks: NodeMarks,
    private readonly commandTimeoutMs: number,
  ) {}

  /** True from the moment a primary fails until the new primary is known (or the search gave up). */
  get inProgress(): boolean {
    return this.running;
  }

  private async runCommand(
    kind: CommandEvent['kind'],
    template: string,
    nodeId: number,
    newMainId: number,
    oldMainId: number,
    oldPrimaryId: number,
  ): Promise<CommandResult | undefined> {
    if (!template.trim() || this.tasks.stopped) return undefined;
    const node = this.nodes.get(nodeId);
    if (!node) return undefined;
    const newMain = newMainId >= 0 ? this.nodes.get(newMainId) : undefined;
    const oldPrimary = oldPrimaryId >= 0 ? this.nodes.get(oldPrimaryId) : undefined;
    const command = expandPlaceholders(template, {
      node: placeholderNode(node),
      newMain: newMain ? placeholderNode(newMain) : undefined,
      oldMainId,
      oldPrimary: oldPrimary ? placeholderNode(oldPrimary) : undefined,
    });
    this.log.info({ node: nodeId, kind, command }, `executing ${kind}`);
    const r = await runShellCommand(command, this.commandTimeoutMs);
    const fields = {
      node: nodeId,
      kind,
      code: r.code,
      signal: r.signal,
      timedOut: r.timedOut,
      durationMs: r.durationMs,
      stdout: r.stdout.trim().slice(0, 4000),
      stderr: r.stderr.trim().slice(0, 4000),
    };
    if (r.code === 0) this.log.info(fields, `${kind} finished`);
    else this.log.error(fields, r.timedOut ? `${kind} timed out and was killed` : `${kind} failed`);
    this.events.emit('command', { ...r, kind, node: nodeId });
    return r;
  }

  /**
   * Mark `ids` down and do what pgpool's failover() does. Runs inside serial().
   */
  async degenerate(ids: number[], reason: string, o: FailoverOptions = {}): Promise<void> {
    if (this.tasks.stopped) return;
    const cfg = this.getConfig();
    const { failed, oldPrimary, oldMain, newMain, primaryFailed } = planFailover(
      this.nodes.all(),
      this.nodes.primaryId,
      ids,
      o,
    );
    if (failed.length === 0 && !o.force) return;
    const t0 = Date.now();
    const failedSet = new Set(failed);
    const start: FailoverStartEvent = { failed, reason, oldPrimary, primaryFailed };
    if (primaryFailed) this.running = true;
    this.events.emit('failover-start', start);
    this.log.warn(
      { failed, reason, oldPrimary, newMain },
      primaryFailed
        ? 'failover: primary node going down'
        : `failover: node${failed.length > 1 ? 's' : ''} ${failed.join(',')} going down`,
    );
    for (const id of failed) this.nodes.setStatus(id, 'down', reason);
    if (oldPrimary >= 0 && failedSet.has(oldPrimary)) this.nodes.setPrimary(-1, reason);

    let newPrimary = this.nodes.primaryId;
    try {
      if (!o.skipFailoverCommand)
        for (const id of failed)
          await this.runCommand('failover_command', cfg.failover_command, id, newMain, oldMain, oldPrimary);
      if (primaryFailed) {
        if (o.fixedPrimary !== undefined) newPrimary = o.fixedPrimary;
        else {
          // Nothing promotes a standby without failover_command: if the failed primary
          // answers again while the others are searched (it only stalled or restarted), it is
          // taken back. With no live node left the failover ends at once; the health check
          // loop takes the node back when it answers (HealthMonitor.reclaim).
          const reclaim =
            !cfg.failover_command.trim() && !o.skipFailoverCommand
              ? () => this.takeBack(oldPrimary, 'the failed primary answers again and no command promoted another node')
              : undefined;
          const live = this.nodes.all().filter((n) => isLive(n.status));
          newPrimary =
            live.length === 0
              ? -1
              : await this.search.repeat(cfg.search_primary_node_timeout, undefined, 'search', reclaim);
        }
        if (newPrimary >= 0)
          this.nodes.setPrimary(newPrimary, o.fixedPrimary !== undefined ? reason : 'primary search after failover');
        else
          this.log.error(
            { timeout: cfg.search_primary_node_timeout },
            'failover: no new primary found; writes fail until one appears (the sr check keeps looking)',
          );

        // follow_primary_command: pgpool detaches every node but the new primary and runs the command once per node.
        if (newPrimary >= 0 && cfg.follow_primary_command.trim()) {
          const { follow, detach } = followPrimaryTargets(this.nodes.all(), newPrimary);
          for (const id of detach) {
            this.marks.followDetached.add(id);
            this.nodes.setStatus(id, 'down', `detached for follow_primary_command (new primary: node ${newPrimary})`);
          }
          this.tasks.track(
            (async () => {
              for (const id of follow)
                await this.runCommand(
                  'follow_primary_command',
                  cfg.follow_primary_command,
                  id,
                  newPrimary,
                  oldMain,
                  oldPrimary,
                );
            })(),
          );
        }
      }
    } finally {
      if (primaryFailed) this.running = false;
      const done: FailoverDoneEvent = { ...start, newPrimary: this.nodes.primaryId, durationMs: Date.now() - t0 };
      this.log.info({ failed, oldPrimary, newPrimary: done.newPrimary, durationMs: done.durationMs }, 'failover done');
      this.events.emit('failover-done', done);
    }
  }

  /**
   * No primary is known: if down node `id` answers as a primary (and an operator did not
   * detach it), attach it again; resolves with the primary then known, or -1. Inside serial().
   */
  async takeBack(id: number, reason: string): Promise<number> {
    const n = this.nodes.get(id);
    if (!n || n.status !== 'down' || this.marks.operatorDetached.has(id) || this.nodes.primaryId >= 0) return -1;
    if (!(await this.search.answersAsPrimary(n))) return -1;
    this.log.warn(
      { node: id },
      `node ${id} is down but answers as the primary and no other primary is known: taking it back`,
    );
    await this.failback(id, reason);
    return this.nodes.primaryId;
  }

  /** Attach a down node (status waiting) and run failback_command. Runs inside serial(). */
  async failback(id: number, reason: string): Promise<void> {
    const n = this.nodes.get(id);
    if (n?.status !== 'down') return;
    const cfg = this.getConfig();
    const oldMain = this.nodes.mainNodeId();
    this.marks.lastFailback.set(id, Date.now());
    this.marks.followDetached.delete(id);
    this.nodes.setStatus(id, 'waiting', reason);
    await this.runCommand(
      'failback_command',
      cfg.failback_command,
      id,
      this.nodes.mainNodeId(),
      oldMain,
      this.nodes.primaryId,
    );
    if (this.nodes.primaryId < 0 || n.config.always_primary) {
      const p = await this.search.round();
      if (p >= 0 && p !== this.nodes.primaryId) this.nodes.setPrimary(p, `primary search after attaching node ${id}`);
    }
  }
}
