/**
 * Messages pgrelay writes itself (to clients, as a server) and the few it decodes
 * (start-up packets, error fields, query text). Messages pgrelay sends to
 * PostgreSQL as a client are built with pg-protocol's `serialize`.
 */
import { BE, SQLSTATE } from './constants.js';

export type Severity = 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';

export interface ErrorFields {
  severity: Severity;
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** A protocol-level failure pgrelay reports to its client: a value, not an exception. */
export class PgError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly severity: Severity = 'FATAL',
    readonly detail?: string,
    readonly hint?: string,
  ) {
    super(message);
  }
  toFields(): ErrorFields {
    return { severity: this.severity, code: this.code, message: this.message, detail: this.detail, hint: this.hint };
  }
}

function header(type: number, bodyLen: number): Buffer {
  const b = Buffer.allocUnsafe(5 + bodyLen);
  b[0] = type;
  b.writeUInt32BE(4 + bodyLen, 1);
  return b;
}

function noticeLike(type: number, f: ErrorFields): Buffer {
  const parts: Array<[string, string]> = [
    ['S', f.severity],
    ['V', f.severity],
    ['C', f.code],
    ['M', f.message],
  ];
  if (f.detail) parts.push(['D', f.detail]);
  if (f.hint) parts.push(['H', f.hint]);
  let len = 1;
  for (const [, v] of parts) len += 1 + Buffer.byteLength(v) + 1;
  const b = header(type, len);
  let o = 5;
  for (const [k, v] of parts) {
    b[o++] = k.charCodeAt(0);
    o += b.write(v, o);
    b[o++] = 0;
  }
  b[o] = 0;
  return b;
}

export function errorResponse(f: ErrorFields): Buffer {
  return noticeLike(BE.ErrorResponse, f);
}

export function noticeResponse(f: ErrorFields): Buffer {
  return noticeLike(BE.NoticeResponse, f);
}

export function authenticationOk(): Buffer {
  const b = header(BE.Authentication, 4);
  b.writeInt32BE(0, 5);
  return b;
}

/** Authentication request with a code and optional payload (md5 salt, SASL data). */
export function authenticationRequest(code: number, payload?: Buffer): Buffer {
  const n = payload ? payload.length : 0;
  const b = header(BE.Authentication, 4 + n);
  b.writeInt32BE(code, 5);
  if (payload) payload.copy(b, 9);
  return b;
}

export function parameterStatus(name: string, value: string): Buffer {
  const b = header(BE.ParameterStatus, Buffer.byteLength(name) + Buffer.byteLength(value) + 2);
  let o = 5;
  o += b.write(name, o);
  b[o++] = 0;
  o += b.write(value, o);
  b[o] = 0;
  return b;
}

export function backendKeyData(pid: number, secret: number): Buffer {
  const b = header(BE.BackendKeyData, 8);
  b.writeInt32BE(pid | 0, 5);
  b.writeInt32BE(secret | 0, 9);
  return b;
}

const READY: Record<number, Buffer> = {};
export function readyForQuery(status: number): Buffer {
  let b = READY[status];
  if (!b) {
    b = header(BE.ReadyForQuery, 1);
    b[5] = status;
    READY[status] = b;
  }
  return b;
}

export function commandComplete(tag: string): Buffer {
  const b = header(BE.CommandComplete, Buffer.byteLength(tag) + 1);
  const o = 5 + b.write(tag, 5);
  b[o] = 0;
  return b;
}

/** ParameterDescription of parameters of these type OIDs, then NoData: a Describe of a statement that returns no rows. */
export function describedWithoutRows(types: readonly number[]): Buffer {
  const t = header(BE.ParameterDescription, 2 + 4 * types.length);
  t.writeInt16BE(types.length, 5);
  for (let i = 0; i < types.length; i++) t.writeUInt32BE(types[i] ?? 0, 7 + 4 * i);
  return Buffer.concat([t, header(BE.NoData, 0)]);
}

/**
 * NegotiateProtocolVersion: the newest protocol version pgrelay speaks, as PostgreSQL
 * sends it (the whole version, 3.0 = 196608, whatever the documentation's "newest minor
 * version" suggests: drivers read it as major << 16 | minor), and the `_pq_.` options it
 * did not recognise.
 */
export function negotiateProtocolVersion(version: number, unrecognized: string[]): Buffer {
  let len = 8;
  for (const u of unrecognized) len += Buffer.byteLength(u) + 1;
  const b = header(BE.NegotiateProtocolVersion, len);
  b.writeInt32BE(version, 5);
  b.writeInt32BE(unrecognized.length, 9);
  let o = 13;
  for (const u of unrecognized) {
    o += b.write(u, o);
    b[o++] = 0;
  }
  return b;
}

/** RowDescription for text columns (type oid 25 unless `typeOid` given, as pgpool uses 0). */
export function rowDescription(columns: string[], typeOid = 25): Buffer {
  let len = 2;
  for (const c of columns) len += Buffer.byteLength(c) + 1 + 18;
  const b = header(BE.RowDescription, len);
  b.writeInt16BE(columns.length, 5);
  let o = 7;
  for (const c of columns) {
    o += b.write(c, o);
    b[o++] = 0;
    b.writeInt32BE(0, o); // table oid
    b.writeInt16BE(0, o + 4); // column attnum
    b.writeInt32BE(typeOid, o + 6);
    b.writeInt16BE(-1, o + 10); // typlen
    b.writeInt32BE(-1, o + 12); // typmod
    b.writeInt16BE(0, o + 16); // text format
    o += 18;
  }
  return b;
}

export function dataRow(values: Array<string | null>): Buffer {
  let len = 2;
  for (const v of values) len += 4 + (v === null ? 0 : Buffer.byteLength(v));
  const b = header(BE.DataRow, len);
  b.writeInt16BE(values.length, 5);
  let o = 7;
  for (const v of values) {
    if (v === null) {
      b.writeInt32BE(-1, o);
      o += 4;
    } else {
      const n = b.write(v, o + 4);
      b.writeInt32BE(n, o);
      o += 4 + n;
    }
  }
  return b;
}

/** Read a NUL-terminated string at `pos`; returns [value, position after the NUL] or undefined if none. */
export function readCString(buf: Buffer, pos: number, end: number): [string, number] | undefined {
  const z = buf.indexOf(0, pos);
  if (z < 0 || z >= end) return undefined;
  return [buf.toString('utf8', pos, z), z + 1];
}

/**
 * Call `fn` for each parameter of a Bind body that `numbers` names (1-based) and that is
 * not NULL: its number, whether it is in binary format, and its bytes' range. Stops at a
 * truncated or malformed body.
 */
function forBindParameters(
  buf: Buffer,
  start: number,
  end: number,
  numbers: readonly number[],
  fn: (binary: boolean, from: number, to: number) => void,
): void {
  const portal = readCString(buf, start, end);
  const stmt = portal && readCString(buf, portal[1], end);
  if (!stmt) return;
  let p = stmt[1];
  if (p + 2 > end) return;
  const nFormats = buf.readInt16BE(p);
  const formats = p + 2;
  p += 2 + 2 * nFormats;
  if (p + 2 > end) return;
  const n = buf.readInt16BE(p);
  p += 2;
  for (let i = 1; i <= n && p + 4 <= end; i++) {
    const len = buf.readInt32BE(p);
    p += 4;
    if (len < 0) continue;
    if (p + len > end) return;
    if (numbers.includes(i)) {
      const f = nFormats === 0 ? 0 : formats + 2 * (nFormats === 1 ? 0 : i - 1);
      fn(f !== 0 && f + 2 <= end && buf.readInt16BE(f) === 1, p, p + len);
    }
    p += len;
  }
}

/**
 * Values of some parameters of a Bind body (`numbers`: 1-based), decoded as UTF-8 text
 * (a text parameter reads the same in both formats); NULL, missing or malformed ones are
 * left out.
 */
export function bindParameterTexts(buf: Buffer, start: number, end: number, numbers: readonly number[]): string[] {
  const out: string[] = [];
  forBindParameters(buf, start, end, numbers, (_binary, from, to) => out.push(buf.toString('utf8', from, to)));
  return out;
}

/**
 * The integer values of the Bind parameters `numbers` names (1-based), in text or binary
 * (2-, 4- or 8-byte) format; NULLs, non-integers and truncated values are left out.
 */
export function bindParameterIntegers(buf: Buffer, start: number, end: number, numbers: readonly number[]): number[] {
  const out: number[] = [];
  forBindParameters(buf, start, end, numbers, (binary, from, to) => {
    const len = to - from;
    let v: number | undefined;
    if (!binary) {
      const text = buf.toString('latin1', from, to).trim();
      v = /^[+-]?\d+$/.test(text) ? Number(text) : undefined;
    } else if (len === 2) v = buf.readInt16BE(from);
    else if (len === 4) v = buf.readInt32BE(from);
    else if (len === 8) v = Number(buf.readBigInt64BE(from));
    if (v !== undefined && Number.isSafeInteger(v)) out.push(v);
  });
  return out;
}

/** The parameter types of a Parse message from `at` (after the query string); undefined if malformed. */
export function parseParamTypes(buf: Buffer, at: number, end: number): number[] | undefined {
  if (at + 2 > end) return undefined;
  const n = buf.readInt16BE(at);
  if (n < 0 || at + 2 + 4 * n > end) return undefined;
  const types: number[] = [];
  for (let i = 0; i < n; i++) types.push(buf.readUInt32BE(at + 2 + 4 * i));
  return types;
}

/** The parameter format and parameter counts of a Bind message from `at` (after the statement name). */
export function bindCounts(buf: Buffer, at: number, end: number): { formats: number; params: number } | undefined {
  if (at + 2 > end) return undefined;
  const formats = buf.readInt16BE(at);
  const p = at + 2 + 2 * formats;
  if (formats < 0 || p + 2 > end) return undefined;
  return { formats, params: buf.readInt16BE(p) };
}

/** A ParameterStatus message's name and value (body from `start` to `end`), or undefined when malformed. */
export function decodeParameterStatus(buf: Buffer, start: number, end: number): [string, string] | undefined {
  const k = readCString(buf, start, end);
  const v = k && readCString(buf, k[1], end);
  return k && v ? [k[0], v[0]] : undefined;
}

/** The values of a DataRow body, as text (null for SQL NULL). Stops at a truncated value. */
export function decodeDataRow(buf: Buffer, start: number, end: number): Array<string | null> {
  const n = buf.readInt16BE(start);
  const out: Array<string | null> = [];
  let p = start + 2;
  for (let i = 0; i < n && p + 4 <= end; i++) {
    const len = buf.readInt32BE(p);
    p += 4;
    if (len < 0) out.push(null);
    else {
      out.push(buf.toString('utf8', p, Math.min(p + len, end)));
      p += len;
    }
  }
  return out;
}

/** The column names of a RowDescription body. */
export function decodeColumnNames(buf: Buffer, start: number, end: number): string[] {
  const n = buf.readInt16BE(start);
  const out: string[] = [];
  let p = start + 2;
  for (let i = 0; i < n; i++) {
    const c = readCString(buf, p, end);
    if (!c) break;
    out.push(c[0]);
    p = c[1] + 18;
  }
  return out;
}

/**
 * An ErrorResponse or NoticeResponse (`msg`: type, length, fields) whose texts say
 * `"to"` where they said `"from"` (a prepared statement's name, as PostgreSQL quotes it).
 */
export function renamedInText(msg: Buffer, from: string, to: string): Buffer {
  const fields = msg.toString('utf8', 5).split(`"${from}"`).join(`"${to}"`);
  const b = header(msg[0], Buffer.byteLength(fields));
  b.write(fields, 5);
  return b;
}

/** Decode ErrorResponse/NoticeResponse fields of a body. Unknown field types are kept by letter. */
export function parseErrorFields(buf: Buffer, start: number, end: number): Record<string, string> {
  const out: Record<string, string> = {};
  let p = start;
  while (p < end && buf[p] !== 0) {
    const k = String.fromCharCode(buf[p]);
    const z = buf.indexOf(0, p + 1);
    if (z < 0 || z >= end) break;
    out[k] = buf.toString('utf8', p + 1, z);
    p = z + 1;
  }
  return out;
}

export interface StartupPacket {
  kind: 'startup';
  version: number;
  params: Map<string, string>;
}

/**
 * Parse a StartupMessage body (after the 4-byte length and 4-byte version).
 * Returns an error for a malformed parameter list.
 */
export function parseStartupParams(buf: Buffer, start: number, end: number): Map<string, string> | PgError {
  const params = new Map<string, string>();
  let p = start;
  while (p < end) {
    if (buf[p] === 0) {
      if (p !== end - 1)
        return new PgError(
          SQLSTATE.protocolViolation,
          'invalid startup packet layout: expected terminator as last byte',
        );
      return params;
    }
    const k = readCString(buf, p, end);
    if (!k) break;
    const v = readCString(buf, k[1], end);
    if (!v)
      return new PgError(
        SQLSTATE.protocolViolation,
        `invalid startup packet layout: missing value for parameter "${k[0]}"`,
      );
    params.set(k[0], v[0]);
    p = v[1];
  }
  return new PgError(SQLSTATE.protocolViolation, 'invalid startup packet layout: expected terminator as last byte');
}
