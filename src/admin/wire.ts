/**
 * Protocol encoding of admin results.
 *
 * Differences from pgpool (deliberate):
 *  - RowDescription columns have type oid 25 (text); pgpool sends 0. Values are
 *    text either way; 25 lets drivers that map by oid (JDBC, node-postgres,
 *    asyncpg) return strings instead of failing on an unknown type 0.
 *  - Exactly one RowDescription per result (Debian's 4.3.5 sends two for
 *    pool_version/pool_processes; fixed in 4.3.10+).
 *  - No ReadyForQuery here: the caller appends it with the session's real
 *    transaction status (pgpool hard-codes 'I' even inside a transaction).
 *  - Extended protocol: pgpool does not intercept admin commands there (they go
 *    to PostgreSQL and fail); pgrelay can answer them. The pieces below let the
 *    session answer Parse ('1'), Bind ('2'), Describe (RowDescription or NoData)
 *    and Execute (DataRows, then CommandComplete or PortalSuspended when the
 *    row limit stops early).
 */
import { BE } from '../protocol/constants.js';
import { commandComplete, dataRow, errorResponse, noticeResponse, rowDescription } from '../protocol/messages.js';
import type { AdminResult } from './result.js';

/** Type oid of every admin column: text. */
export const ADMIN_COLUMN_TYPE_OID = 25;

function bare(type: number): Buffer {
  const b = Buffer.allocUnsafe(5);
  b[0] = type;
  b.writeUInt32BE(4, 1);
  return b;
}

const PARSE_COMPLETE = bare(BE.ParseComplete);
const BIND_COMPLETE = bare(BE.BindComplete);
const NO_DATA = bare(BE.NoData);
const PORTAL_SUSPENDED = bare(BE.PortalSuspended);
const CLOSE_COMPLETE = bare(BE.CloseComplete);

export function parseComplete(): Buffer {
  return PARSE_COMPLETE;
}
export function bindComplete(): Buffer {
  return BIND_COMPLETE;
}
export function noData(): Buffer {
  return NO_DATA;
}
export function portalSuspended(): Buffer {
  return PORTAL_SUSPENDED;
}
export function closeComplete(): Buffer {
  return CLOSE_COMPLETE;
}

/** NoticeResponse messages of the result (empty buffer when none). */
export function noticesFor(result: AdminResult): Buffer {
  if (result.kind === 'error' || !result.notices || result.notices.length === 0) return Buffer.alloc(0);
  return Buffer.concat(result.notices.map((n) => noticeResponse(n)));
}

/** Describe's answer: RowDescription for a row result, NoData otherwise (also for errors: the error comes at Execute). */
export function rowDescriptionFor(result: AdminResult): Buffer {
  return result.kind === 'rows' ? rowDescription(result.columns, ADMIN_COLUMN_TYPE_OID) : NO_DATA;
}

/** All DataRows of the result (empty for non-row results). */
export function dataRowsFor(result: AdminResult): Buffer {
  if (result.kind !== 'rows') return Buffer.alloc(0);
  return Buffer.concat(result.rows.map((r) => dataRow(r)));
}

/** CommandComplete with the result's tag; for an error result, its ErrorResponse. */
export function commandCompleteFor(result: AdminResult): Buffer {
  return result.kind === 'error' ? errorResponse(result.error) : commandComplete(result.tag);
}

export interface EncodedRows {
  /** DataRows, then CommandComplete (done) or PortalSuspended (more rows left). */
  buf: Buffer;
  /** Index of the next row to send (== rows.length when done). */
  next: number;
  done: boolean;
}

/**
 * Execute with a row limit: rows [fromRow, fromRow+maxRows) (maxRows 0 = all),
 * followed by CommandComplete when the last row was sent, else PortalSuspended.
 * The tag is `SELECT <rows sent by this Execute>`, as PostgreSQL reports
 * for the Execute that completes a portal. Notices go before the first row.
 * Non-row results: their CommandComplete/ErrorResponse (with notices first).
 */
export function encodeRows(result: AdminResult, fromRow: number, maxRows: number): EncodedRows {
  if (result.kind !== 'rows')
    return { buf: Buffer.concat([noticesFor(result), commandCompleteFor(result)]), next: 0, done: true };
  const total = result.rows.length;
  const start = Math.max(0, Math.min(fromRow, total));
  const end = maxRows > 0 ? Math.min(total, start + maxRows) : total;
  const parts: Buffer[] = [];
  if (start === 0) parts.push(noticesFor(result));
  for (let i = start; i < end; i++) parts.push(dataRow(result.rows[i]!));
  const done = end >= total;
  parts.push(done ? commandComplete(`SELECT ${end - start}`) : PORTAL_SUSPENDED);
  return { buf: Buffer.concat(parts), next: end, done };
}

export interface EncodeOptions {
  /**
   * false: simple Query reply. true: Execute reply of the extended protocol
   * (no ParseComplete/BindComplete; RowDescription only with `describe`).
   */
  extended: boolean;
  /** Extended protocol: include the Describe answer (RowDescription / NoData) first. */
  describe?: boolean;
}

/**
 * Backend messages answering an admin result, without ReadyForQuery:
 * simple protocol: NoticeResponse*, RowDescription, DataRow*, CommandComplete
 * (or NoticeResponse*, CommandComplete / ErrorResponse).
 */
export function encodeAdminResult(result: AdminResult, opts: EncodeOptions): Buffer {
  const parts: Buffer[] = [];
  if (opts.extended && opts.describe) parts.push(rowDescriptionFor(result));
  parts.push(noticesFor(result));
  if (result.kind === 'rows') {
    if (!opts.extended) parts.push(rowDescription(result.columns, ADMIN_COLUMN_TYPE_OID));
    for (const r of result.rows) parts.push(dataRow(r));
  }
  parts.push(commandCompleteFor(result));
  return Buffer.concat(parts);
}
