/**
 * Queries pgrelay runs for itself on a backend connection no session is using:
 * the reset before a connection goes back to the cache, health checks, sr checks
 * and the primary search. (A session's own catalog lookups run on its link, as a
 * capture request of the reply queue, with the same row decoder.)
 *
 * Every call is bounded by a timeout; on timeout, close or a malformed reply it
 * rejects and leaves the connection to the caller, which closes it.
 */
import { BE, FE, TxStatus } from '../protocol/constants.js';
import { DROP, type Drop, type FrameSink, MessageScanner, decodeTable } from '../protocol/framing.js';
import { decodeColumnNames, decodeDataRow, decodeParameterStatus, parseErrorFields } from '../protocol/messages.js';
import type { BackendConnection } from './connector.js';

export interface QueryResult {
  columns: string[];
  rows: Array<Array<string | null>>;
  /** The ErrorResponse fields, when the statement failed. */
  error?: Record<string, string>;
}

export interface QueriesOutcome {
  /** One result per query, in order. */
  results: QueryResult[];
  /** Transaction status after the last query ('I', 'T' or 'E' as a byte). */
  txStatus: number;
}

/** The connection closed, the queries timed out, or the reply stream was malformed. */
export class QueryFailure extends Error {
  constructor(
    message: string,
    readonly reason: 'closed' | 'timeout' | 'malformed',
  ) {
    super(message);
    this.name = 'QueryFailure';
  }
}

const DECODE = decodeTable('ZETDS');

/** A Query message. */
export function queryMessage(sql: string): Buffer {
  const n = Buffer.byteLength(sql);
  const b = Buffer.allocUnsafe(6 + n);
  b[0] = FE.Query;
  b.writeUInt32BE(5 + n, 1);
  b.write(sql, 5);
  b[5 + n] = 0;
  return b;
}

/**
 * Send each of `sqls` as its own Query message, all written at once (so that one
 * failing does not stop the next), and collect every result.
 */
export function runQueries(
  conn: BackendConnection,
  sqls: readonly string[],
  timeoutMs: number,
): Promise<QueriesOutcome> {
  return new Promise((resolve, reject) => {
    const socket = conn.socket;
    const results: QueryResult[] = [];
    let current: QueryResult = { columns: [], rows: [] };
    let finished = false;
    const sink: FrameSink<never> = {
      passAction: DROP,
      onMessage(type, buf, start, end): Drop {
        switch (type) {
          case BE.RowDescription:
            current.columns = decodeColumnNames(buf, start, end);
            break;
          case BE.DataRow:
            current.rows.push(decodeDataRow(buf, start, end));
            break;
          case BE.ErrorResponse:
            current.error = parseErrorFields(buf, start, end);
            break;
          case BE.ParameterStatus: {
            const r = decodeParameterStatus(buf, start, end);
            if (r !== undefined) conn.params.set(r[0], r[1]);
            break;
          }
          case BE.ReadyForQuery:
            conn.txStatus = buf[start];
            results.push(current);
            current = { columns: [], rows: [] };
            if (results.length === sqls.length) done(undefined);
            break;
        }
        return DROP;
      },
      emit() {},
      onFramingError(message) {
        done(new QueryFailure(`malformed reply from node ${conn.nodeId}: ${message}`, 'malformed'));
      },
    };
    const scanner = new MessageScanner<never>(sink, DECODE, 0x7fffffff);
    const onData = (chunk: Buffer): void => {
      scanner.push(chunk);
    };
    const onClose = (): void => done(new QueryFailure(`node ${conn.nodeId} closed the connection`, 'closed'));
    const timer = setTimeout(
      () => done(new QueryFailure(`query on node ${conn.nodeId} timed out after ${timeoutMs} ms`, 'timeout')),
      Math.max(1, timeoutMs),
    );
    function done(err: QueryFailure | undefined): void {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('close', onClose);
      if (err) reject(err);
      else resolve({ results, txStatus: conn.txStatus });
    }
    if (sqls.length === 0) {
      done(undefined);
      return;
    }
    if (conn.dead || socket.destroyed) {
      onClose();
      return;
    }
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.resume();
    socket.write(sqls.length === 1 ? queryMessage(sqls[0]) : Buffer.concat(sqls.map(queryMessage)));
  });
}

/**
 * Run reset_query_list on an idle connection before it goes back to the cache
 * (pgpool runs `ABORT` only when a transaction is open). True when every query
 * succeeded within the timeout and the connection is idle.
 */
export async function resetConnection(
  conn: BackendConnection,
  queries: readonly string[],
  timeoutMs: number,
): Promise<boolean> {
  return (await resetFailure(conn, queries, timeoutMs)) === undefined;
}

/** Like resetConnection; undefined when the reset succeeded, else what went wrong (for the log). */
export async function resetFailure(
  conn: BackendConnection,
  queries: readonly string[],
  timeoutMs: number,
): Promise<string | undefined> {
  const list = queries.filter((q) => !(conn.txStatus === TxStatus.Idle && /^\s*abort\s*$/i.test(q)));
  try {
    const r = await runQueries(conn, list, timeoutMs);
    const failed = r.results.findIndex((x) => x.error !== undefined);
    if (failed >= 0) return `${list[failed]}: ${r.results[failed]?.error?.M ?? 'failed'}`;
    return r.txStatus === TxStatus.Idle ? undefined : 'still in a transaction after the reset';
  } catch (e) {
    return (e as Error).message;
  }
}
