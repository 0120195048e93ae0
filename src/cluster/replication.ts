/**
 * The sr check's decisions, without I/O: what a node's answers say, the
 * replication delay and state of each standby, when log_standby_delay logs,
 * which of several primaries is the true one, the primary nobody announced
 * (late detection), and which down standby auto_failback may bring back.
 * sr-check.ts runs the queries and acts on these answers.
 */
import type { Config } from '../config/types.js';
import { parseLsn } from '../protocol/lsn.js';
import type { Row } from './conn.js';
import type { NodeMarks } from './node-marks.js';
import { isLive, type NodeState } from './nodes.js';

/** One node's answer to the sr check's node query (pg_is_in_recovery, LSN, WAL receiver). */
export interface NodeSample {
  ok: boolean;
  inRecovery: boolean | null;
  lsn: string | null;
  wrStatus: string | null;
  wrHost: string | null;
  wrPort: number | null;
}

export function nodeSample(r: Row | undefined): NodeSample {
  return {
    ok: true,
    inRecovery: r ? r.rec === 't' : null,
    lsn: r?.lsn ?? null,
    wrStatus: r?.wr_status ?? null,
    wrHost: r?.wr_host ?? null,
    wrPort: r?.wr_port ? Number(r.wr_port) : null,
  };
}

export function noAnswer(): NodeSample {
  return { ok: false, inRecovery: null, lsn: null, wrStatus: null, wrHost: null, wrPort: null };
}

export function sameHost(a: string, b: string): boolean {
  const norm = (h: string): string => (h === 'localhost' || h === '::1' ? '127.0.0.1' : h);
  return norm(a) === norm(b);
}

/** A standby streaming from `up` (its WAL receiver's sender host and port). */
function streamsFrom(s: NodeSample | undefined, up: Pick<NodeState, 'host' | 'port'>): boolean {
  return (
    !!s?.ok &&
    s.inRecovery === true &&
    s.wrStatus === 'streaming' &&
    !!s.wrHost &&
    sameHost(up.host, s.wrHost) &&
    up.port === s.wrPort
  );
}

/** Live nodes that answered pg_is_in_recovery() = false. */
export function nodesNotInRecovery(nodes: readonly NodeState[], samples: ReadonlyMap<number, NodeSample>): NodeState[] {
  return nodes.filter((n) => isLive(n.status) && samples.get(n.id)?.ok && samples.get(n.id)?.inRecovery === false);
}

/** No primary is known: a live ALWAYS_PRIMARY node, else the only node not in recovery. */
export function latePrimary(nodes: readonly NodeState[], notInRecovery: readonly NodeState[]): NodeState | undefined {
  const always = nodes.find((n) => isLive(n.status) && n.config.always_primary);
  return always ?? (notInRecovery.length === 1 ? notInRecovery[0] : undefined);
}

/**
 * Several live nodes answer pg_is_in_recovery() = false (`cands`): keep the one
 * the streaming standbys follow (the lowest id when none streams); the others,
 * except ALWAYS_PRIMARY ones, are false primaries. `votes` when the standbys
 * follow more than one of them: then nobody can tell.
 */
export function falsePrimaries(
  nodes: readonly NodeState[],
  cands: readonly NodeState[],
  samples: ReadonlyMap<number, NodeSample>,
): { keep: number; falsePrimaries: number[] } | { votes: Map<number, number> } {
  const votes = new Map<number, number>();
  for (const n of nodes) {
    const s = samples.get(n.id);
    const up = cands.find((c) => streamsFrom(s, c));
    if (up) votes.set(up.id, (votes.get(up.id) ?? 0) + 1);
  }
  let keep: number;
  if (votes.size === 0) keep = cands.map((c) => c.id).sort((a, b) => a - b)[0] as number;
  else if (votes.size === 1) keep = [...votes.keys()][0] as number;
  else return { votes };
  return { keep, falsePrimaries: cands.filter((c) => c.id !== keep && !c.config.always_primary).map((c) => c.id) };
}

export type ReplicationFields = Partial<
  Pick<NodeState, 'delayBytes' | 'delaySeconds' | 'replicationState' | 'replicationSyncState'>
>;

export const PRIMARY_REPLICATION: ReplicationFields = {
  delayBytes: 0,
  delaySeconds: 0,
  replicationState: '',
  replicationSyncState: '',
};

/**
 * A standby's replication fields: state and sync state from its
 * pg_stat_replication row (matched by backend_application_name), delay in bytes
 * from the LSNs (live nodes only), delay in seconds from replay_lag. A field left
 * out keeps its last value.
 */
export function standbyReplication(
  n: NodeState,
  s: NodeSample | undefined,
  primaryLsn: bigint | undefined,
  repl: readonly Row[],
): ReplicationFields {
  const row = n.config.application_name
    ? repl.find((r) => r.application_name === n.config.application_name)
    : undefined;
  const lsn = parseLsn(s?.lsn);
  const upd: ReplicationFields = {
    replicationState: row?.state ?? '',
    replicationSyncState: row?.sync_state ?? '',
  };
  if (isLive(n.status) && primaryLsn !== undefined && lsn !== undefined)
    upd.delayBytes = Number(primaryLsn > lsn ? primaryLsn - lsn : 0n);
  if (row) upd.delaySeconds = row.lag_us ? Number(row.lag_us) / 1e6 : 0;
  return upd;
}

/** log_standby_delay: the line pgpool logs for a standby's delay, or undefined. */
export function standbyDelayLog(
  n: Pick<NodeState, 'id' | 'delayBytes' | 'delaySeconds'>,
  primaryId: number,
  cfg: Pick<Config, 'log_standby_delay' | 'delay_threshold' | 'delay_threshold_by_time'>,
): { fields: Record<string, number>; message: string } | undefined {
  const mode = cfg.log_standby_delay;
  if (mode === 'none') return undefined;
  const byTime = cfg.delay_threshold_by_time > 0;
  const over = byTime
    ? n.delaySeconds * 1000 > cfg.delay_threshold_by_time
    : cfg.delay_threshold > 0 && n.delayBytes > cfg.delay_threshold;
  if (mode === 'if_over_threshold' && !over) return undefined;
  if (mode === 'always' && !over && (byTime ? n.delaySeconds : n.delayBytes) === 0) return undefined;
  if (byTime) {
    const unit = n.delaySeconds >= 2 ? 'seconds' : 'second';
    return {
      fields: { node: n.id, primary: primaryId, delaySeconds: n.delaySeconds },
      message: `Replication of node: ${n.id} is behind ${n.delaySeconds.toFixed(6)} ${unit} from the primary server (node: ${primaryId})`,
    };
  }
  return {
    fields: { node: n.id, primary: primaryId, delayBytes: n.delayBytes },
    message: `Replication of node: ${n.id} is behind ${n.delayBytes} bytes from the primary server (node: ${primaryId})`,
  };
}

/**
 * auto_failback: a down standby that streams from the current primary again
 * (seen in the primary's pg_stat_replication, or in its own WAL receiver) may
 * come back, unless an operator detached it, it is a primary of its own, or it
 * came back less than auto_failback_interval ago.
 */
export function mayFailBack(
  n: NodeState,
  s: NodeSample | undefined,
  primary: NodeState,
  marks: NodeMarks,
  intervalS: number,
  now: number,
): boolean {
  if (n.status !== 'down' || n.id === primary.id || marks.operatorDetached.has(n.id)) return false;
  if (s?.ok && s.inRecovery === false) return false;
  const viaPrimary = n.config.application_name !== '' && n.replicationState === 'streaming';
  if (!viaPrimary && !streamsFrom(s, primary)) return false;
  const last = marks.lastFailback.get(n.id);
  return last === undefined || now - last >= intervalS * 1000;
}
