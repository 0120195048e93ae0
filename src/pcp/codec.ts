/**
 * pgpool's PCP wire format (what pgpool-II 4.3's libpcp and pcp_worker speak).
 *
 * Every packet, both ways: one type byte, a 4-byte big-endian length that
 * counts itself and the body, then the body. Bodies are NUL-terminated strings
 * (except the 4 salt bytes of 'm' and the binary row count of the 'b'
 * ArraySize packet).
 *
 * Client → server: 'M' salt request; 'R' user\0md5\0; 'L' node count;
 * 'I' node id (-1 = all); 'H' health-check stats; 'N' process count;
 * 'P' process info (pid, 0 = all); 'B' pool status; 'W' watchdog info;
 * 'C' attach; 'D'/'d' detach (d = gracefully); 'J'/'j' promote ("<id> \0" + 's'
 * switchover or 'n'); 'O' recovery; 'Z' reload (scope byte); 'T'/'t' stop (mode
 * byte s/f/i; t = whole watchdog cluster); 'A' set parameter; 'F'; 'X' close.
 *
 * Server → client: the lower-case letter of the request with "CommandComplete"
 * or "ArraySize"/row tags, or 'E' (error) / 'N' (notice) with fields like
 * PostgreSQL's ErrorResponse (S severity, C code, M message, D detail). After a
 * FATAL the server closes the connection.
 */

/** pgpool's MAX_PCP_PACKET_LENGTH: longer (or non-positive) lengths end the connection. */
export const MAX_PCP_PACKET_LENGTH = 8192;

export interface PcpPacket {
  type: string;
  body: Buffer;
}

export type PcpReadResult = { kind: 'packet'; packet: PcpPacket } | { kind: 'bad_length'; length: number };

/** Splits the client's byte stream into packets. */
export class PcpReader {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** The next whole packet, a bad length, or undefined when more bytes are needed. */
  next(): PcpReadResult | undefined {
    if (this.buf.length < 5) return undefined;
    const length = this.buf.readInt32BE(1);
    if (length < 4 || length >= MAX_PCP_PACKET_LENGTH) return { kind: 'bad_length', length };
    if (this.buf.length < 1 + length) return undefined;
    const packet = { type: String.fromCharCode(this.buf[0]!), body: Buffer.from(this.buf.subarray(5, 1 + length)) };
    this.buf = this.buf.subarray(1 + length);
    return { kind: 'packet', packet };
  }
}

/** One packet: type, length, body. */
export function packet(type: string, body: Buffer): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.write(type, 0, 'latin1');
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

/** A body of NUL-terminated strings. */
export function cstrings(...parts: readonly string[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(`${p}\0`, 'utf8')));
}

/** A packet whose body is NUL-terminated strings. */
export function stringPacket(type: string, ...parts: readonly string[]): Buffer {
  return packet(type, cstrings(...parts));
}

export const COMMAND_COMPLETE = 'CommandComplete';

export function commandComplete(type: string): Buffer {
  return stringPacket(type, COMMAND_COMPLETE);
}

export type PcpSeverity = 'ERROR' | 'FATAL';

export interface PcpError {
  severity: PcpSeverity;
  message: string;
  detail?: string;
}

/** 'E' packet as pgpool's pcp_worker sends it (SQLSTATE XX000 like pgpool's). */
export function errorPacket(e: PcpError): Buffer {
  const fields = [`S${e.severity}`, 'CXX000', `M${e.message}`];
  if (e.detail) fields.push(`D${e.detail}`);
  return packet('E', Buffer.concat([cstrings(...fields), Buffer.from([0])]));
}

/** pcp_pool_status's 'b' ArraySize packet: the count is a binary int32. */
export function poolStatusArraySize(n: number): Buffer {
  const count = Buffer.alloc(4);
  count.writeInt32BE(n, 0);
  return packet('b', Buffer.concat([cstrings('ArraySize'), count]));
}

/** The NUL-terminated strings of a body (a missing final NUL ends the last one at the end). */
export function bodyStrings(body: Buffer): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === 0) {
      out.push(body.toString('utf8', start, i));
      start = i + 1;
    }
  }
  if (start < body.length) out.push(body.toString('utf8', start));
  return out;
}

/** C's atoi on the first string of a body: leading spaces, sign, digits; 0 when none. */
export function atoi(s: string | undefined): number {
  const m = /^\s*([+-]?\d+)/.exec(s ?? '');
  if (!m) return 0;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : 0;
}

/** The 'J'/'j' body: "<id> \0" then 's' (switchover) or 'n'. */
export function parsePromoteBody(body: Buffer): { node: number; switchover: boolean } {
  const nul = body.indexOf(0);
  const id = body.toString('latin1', 0, nul < 0 ? body.length : nul);
  const option = nul >= 0 && nul + 1 < body.length ? String.fromCharCode(body[nul + 1]!) : 'n';
  return { node: atoi(id), switchover: option === 's' };
}
