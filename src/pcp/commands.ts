/**
 * What the PCP port answers, request by request, in pgpool 4.3's reply formats
 * and with pgpool's error messages. Every answer comes from the admin engine
 * (src/admin): reports are the rows of SHOW pool_nodes / pool_pools /
 * pool_status / pool_health_check_stats, operations are the same ATTACH,
 * DETACH, PROMOTE, RECOVERY NODE, RELOAD and STOP commands the SQL admin
 * interface runs, so PCP and SQL share one implementation.
 *
 * Mapping onto pgrelay, which has no child processes: a PCP "process" is a
 * client session (its virtual pid) or, for cached idle backend connections,
 * the pgrelay process — as in SHOW pool_pools.
 */
import type { AdminCommand, StopMode } from '../admin/commands.js';
import type { AdminResult } from '../admin/result.js';
import { normalisedWeights } from '../admin/result.js';
import type { NodeState } from '../cluster/nodes.js';
import {
  atoi,
  bodyStrings,
  commandComplete,
  errorPacket,
  type PcpError,
  parsePromoteBody,
  poolStatusArraySize,
  stringPacket,
} from './codec.js';

/** C's RAND_MAX: pgpool keeps backend weights scaled by it and pcp_node_info divides by it. */
const RAND_MAX = 2147483647;

/** pgpool's BACKEND_STATUS numbers (pcp_node_info's status field). */
const STATUS_CODE: Readonly<Record<NodeState['status'], number>> = { unused: 0, waiting: 1, up: 2, down: 3 };
/** pgpool's SERVER_ROLE numbers in streaming replication. */
const ROLE_PRIMARY = 2;
const ROLE_STANDBY = 3;

export type PcpNode = Pick<
  NodeState,
  | 'id'
  | 'host'
  | 'port'
  | 'weight'
  | 'status'
  | 'lastStatusChange'
  | 'delayBytes'
  | 'replicationState'
  | 'replicationSyncState'
>;

export interface PcpCommandDeps {
  /** Run an admin command as an administrator (the PCP user is authenticated by pcp.conf). */
  run(cmd: AdminCommand, user: string): Promise<AdminResult>;
  nodes(): readonly PcpNode[];
  primaryId(): number;
}

/** A request pgpool answers with FATAL: the connection closes after the error. */
export class PcpFatal extends Error {
  constructor(readonly error: PcpError) {
    super(error.message);
  }
}

export interface PcpReply {
  packets: Buffer[];
  /** Runs after the packets are written (stop: answer first, then stop). */
  after?: () => void;
}

function err(message: string, detail?: string): PcpReply {
  return { packets: [errorPacket({ severity: 'ERROR', message, detail })] };
}

function ok(type: string): PcpReply {
  return { packets: [commandComplete(type)] };
}

/** The admin engine's rows, or a PCP error built from its error. */
function rowsOf(r: AdminResult): { columns: string[]; rows: string[][] } | { error: string } {
  if (r.kind === 'rows') return r;
  if (r.kind === 'error') return { error: r.error.detail ? `${r.error.message} (${r.error.detail})` : r.error.message };
  return { columns: [], rows: [] };
}

function adminError(r: AdminResult): string | undefined {
  if (r.kind !== 'error') return undefined;
  return r.error.detail ? `${r.error.message}. ${r.error.detail}` : r.error.message;
}

const STOP_MODES: Readonly<Record<string, StopMode>> = { s: 'smart', f: 'fast', i: 'immediate' };

export async function runPcpCommand(type: string, body: Buffer, user: string, d: PcpCommandDeps): Promise<PcpReply> {
  const arg = bodyStrings(body)[0] ?? '';
  const nodes = d.nodes();
  const validNode = (id: number): boolean => id >= 0 && id < nodes.length && nodes[id]!.status !== 'unused';
  switch (type) {
    case 'L':
      return { packets: [stringPacket('l', 'CommandComplete', String(nodes.length))] };

    case 'I': {
      const id = atoi(arg);
      if (id !== -1 && !validNode(id)) return err('informing node info failed', `invalid node ID : ${id}`);
      const show = rowsOf(await d.run({ kind: 'show', target: 'pool_nodes' }, user));
      if ('error' in show) return err('informing node info failed', show.error);
      const col = (name: string): number => show.columns.indexOf(name);
      const weights = normalisedWeights(nodes);
      const primary = d.primaryId();
      const ids = id === -1 ? nodes.filter((n) => n.status !== 'unused').map((n) => n.id) : [id];
      const out = [stringPacket('i', 'ArraySize', String(ids.length))];
      for (const i of ids) {
        const n = nodes[i]!;
        const row = show.rows.find((r) => r[col('node_id')] === String(i)) ?? [];
        out.push(
          stringPacket(
            'i',
            'NodeInfo',
            n.host,
            String(n.port),
            String(STATUS_CODE[n.status]),
            '0',
            row[col('pg_status')] ?? 'unknown',
            ((weights[i] ?? 0) * RAND_MAX).toFixed(6),
            String(i === primary ? ROLE_PRIMARY : ROLE_STANDBY),
            row[col('pg_role')] ?? 'unknown',
            String(Math.max(0, Math.trunc(n.delayBytes))),
            n.replicationState,
            n.replicationSyncState,
            String(Math.floor(n.lastStatusChange / 1000)),
          ),
        );
      }
      out.push(commandComplete('i'));
      return { packets: out };
    }

    case 'H': {
      const id = atoi(arg);
      if (id < 0 || id > nodes.length) return err('informing health check stats info failed', `invalid node ID ${id}`);
      const show = rowsOf(await d.run({ kind: 'show', target: 'pool_health_check_stats' }, user));
      if ('error' in show) return err('informing health check stats info failed', show.error);
      const row = show.rows.find((r) => r[0] === String(id));
      if (!row) return err('informing health check stats info failed', `stats data for node ID ${id} does not exist`);
      return { packets: [stringPacket('h', 'CommandComplete', ...row)] };
    }

    case 'N': {
      const show = rowsOf(await d.run({ kind: 'show', target: 'pool_pools' }, user));
      if ('error' in show) return err('informing process count failed', show.error);
      const pids = [...new Set(show.rows.map((r) => r[0]!))];
      return { packets: [stringPacket('n', 'CommandComplete', String(pids.length), ...pids)] };
    }

    case 'P': {
      const pid = atoi(arg);
      const show = rowsOf(await d.run({ kind: 'show', target: 'pool_pools' }, user));
      if ('error' in show) return err('informing process info failed', show.error);
      const rows = pid === 0 ? show.rows : show.rows.filter((r) => r[0] === String(pid));
      if (pid !== 0 && rows.length === 0) return err('informing process info failed', `invalid process ID : ${arg}`);
      return {
        packets: [
          stringPacket('p', 'ArraySize', String(rows.length)),
          ...rows.map((r) => stringPacket('p', 'ProcessInfo', ...r)),
          commandComplete('p'),
        ],
      };
    }

    case 'B': {
      const show = rowsOf(await d.run({ kind: 'show', target: 'pool_status' }, user));
      if ('error' in show) return err('processing status request failed', show.error);
      return {
        packets: [
          poolStatusArraySize(show.rows.length),
          ...show.rows.map((r) => stringPacket('b', 'ProcessConfig', r[0] ?? '', r[1] ?? '', r[2] ?? '')),
          commandComplete('b'),
        ],
      };
    }

    case 'W':
      // pgrelay has no watchdog: pgpool's answer when use_watchdog is off.
      return err('PCP: informing watchdog info failed', 'watchdog is not enabled');

    case 'C': {
      const id = atoi(arg);
      const e = adminError(await d.run({ kind: 'attach_node', node: id }, user));
      return e ? err('attach node failed', e) : ok('c');
    }

    case 'D':
    case 'd': {
      const id = atoi(arg);
      if (!validNode(id))
        return err(`invalid degenerate backend request, node id : ${id} status: [0] is not valid for failover`);
      const e = adminError(await d.run({ kind: 'detach_node', node: id, gracefully: type === 'd' }, user));
      return e ? err('detach node failed', e) : ok('d');
    }

    case 'J':
    case 'j': {
      const { node, switchover } = parsePromoteBody(body);
      if (!validNode(node)) return err('could not process promote request', `node id ${node} is not valid`);
      if (node === d.primaryId())
        throw new PcpFatal({
          severity: 'FATAL',
          message: 'invalid promote request',
          detail: `specified node is already primary node, can't promote node id ${node}`,
        });
      // 'j' (-g): first wait until the sessions using the primary have ended, as pgpool waits for its clients.
      const e = adminError(await d.run({ kind: 'promote_node', node, switchover, gracefully: type === 'j' }, user));
      return e ? err('promote node failed', e) : ok('d');
    }

    case 'O': {
      const id = atoi(arg);
      if (!validNode(id)) return err('process recovery request failed', `node id ${id} is not valid`);
      if (id === d.primaryId() && (nodes[id]!.status === 'up' || nodes[id]!.status === 'waiting'))
        return err('process recovery request failed', 'primary server cannot be recovered by online recovery.');
      const e = adminError(await d.run({ kind: 'recovery_node', node: id }, user));
      return e ? err('process recovery request failed', e) : ok('c');
    }

    case 'Z': {
      const e = adminError(await d.run({ kind: 'reload' }, user));
      return e ? err('process reload config request failed', e) : ok('z');
    }

    case 'T':
    case 't': {
      const m = body.length > 0 ? String.fromCharCode(body[0]!) : '';
      const mode = STOP_MODES[m];
      if (!mode) return err('PCP: error while processing shutdown request', `invalid shutdown mode "${m}"`);
      return {
        packets: [commandComplete('t')],
        after: () => void d.run({ kind: 'stop', mode }, user),
      };
    }

    case 'A': {
      const [name = ''] = bodyStrings(body);
      return err(
        'PCP: set configuration parameter failed',
        `invalid parameter "${name}" (pgrelay has none settable by PCP)`,
      );
    }

    case 'F':
      // pgpool: "stop online recovery" request, no answer.
      return { packets: [] };

    default:
      throw new PcpFatal({
        severity: 'FATAL',
        message: 'PCP processing request',
        detail: `unknown PCP packet type "${type}"`,
      });
  }
}
