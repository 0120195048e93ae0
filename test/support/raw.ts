/**
 * A tiny raw PostgreSQL wire-protocol client for tests that need to send exact
 * bytes (malformed start-ups, lying length fields, CancelRequest, slow readers).
 *
 * Bytes received are kept in one buffer and parsed lazily: `readByte()` takes a
 * single byte (the 'N' answer to SSLRequest / GSSENCRequest), `next()` takes one
 * backend message (type byte + int32 length + body). Every wait has a timeout.
 * `closeAllRaw()` destroys every client still open (call it in afterEach).
 */
import net from 'node:net';
import fs from 'node:fs';

export const PROTOCOL_3_0 = 196608;
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;

export interface BackendMessage {
  /** Type byte as a character ('E', 'Z', ...). */
  type: string;
  /** Value of the length field (includes itself). */
  length: number;
  body: Buffer;
}

const live = new Set<RawClient>();

/** Destroy every RawClient still open. */
export function closeAllRaw(): void {
  for (const c of [...live]) c.destroy();
}

export class RawClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiters = new Set<() => void>();
  closed = false;
  /** Set when the peer closed (or reset) the connection. */
  closedAt: number | null = null;
  error: Error | null = null;
  /** Total bytes received so far. */
  received = 0;

  private constructor(readonly socket: net.Socket) {
    live.add(this);
    socket.on('data', (d: Buffer) => {
      this.received += d.length;
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('error', (e) => {
      this.error = e;
    });
    socket.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
      live.delete(this);
      this.wake();
    });
  }

  static connect(port: number, host = '127.0.0.1', timeoutMs = 5000): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port });
      s.setNoDelay(true);
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error(`RawClient: connect to ${host}:${port} timed out`));
      }, timeoutMs);
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
      s.once('connect', () => {
        clearTimeout(t);
        resolve(new RawClient(s));
      });
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Bytes received and not yet consumed. */
  get pending(): number {
    return this.buf.length;
  }

  send(...bufs: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
  }

  /** Wait until `test()` returns a value other than undefined, the socket closes (undefined) or the timeout (throws). */
  private waitUntil<T>(test: () => T | undefined, timeoutMs: number, what: string): Promise<T | undefined> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        let v: T | undefined;
        try {
          v = test();
        } catch (e) {
          cleanup();
          reject(e as Error);
          return;
        }
        if (v !== undefined) {
          cleanup();
          resolve(v);
        } else if (this.closed) {
          cleanup();
          resolve(undefined);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `RawClient: timed out after ${timeoutMs} ms waiting for ${what} (${this.buf.length} bytes unparsed: ${this.buf.subarray(0, 64).toString('hex')})`,
          ),
        );
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** One raw byte (e.g. 'N' after SSLRequest); undefined if the connection closed first. */
  async readByte(timeoutMs = 5000): Promise<string | undefined> {
    return this.waitUntil(
      () => {
        if (this.buf.length < 1) return undefined;
        const c = String.fromCharCode(this.buf[0]);
        this.buf = this.buf.subarray(1);
        return c;
      },
      timeoutMs,
      'one byte',
    );
  }

  private takeMessage(): BackendMessage | undefined {
    if (this.buf.length < 5) return undefined;
    const length = this.buf.readUInt32BE(1);
    if (length < 4) throw new Error(`RawClient: invalid length ${length} from server (type ${this.buf[0]})`);
    if (this.buf.length < 1 + length) return undefined;
    const m: BackendMessage = {
      type: String.fromCharCode(this.buf[0]),
      length,
      body: this.buf.subarray(5, 1 + length),
    };
    this.buf = this.buf.subarray(1 + length);
    return m;
  }

  /** The next backend message; undefined if the connection closed first; throws on timeout. */
  next(timeoutMs = 5000): Promise<BackendMessage | undefined> {
    return this.waitUntil(() => this.takeMessage(), timeoutMs, 'a message');
  }

  /**
   * Messages up to and including the first one matching `until` (by type or predicate).
   * Resolves early (without a match) if the connection closes; throws on timeout.
   */
  async collect(until: string | ((m: BackendMessage) => boolean), timeoutMs = 5000): Promise<BackendMessage[]> {
    const match = typeof until === 'string' ? (m: BackendMessage) => until.includes(m.type) : until;
    const out: BackendMessage[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`RawClient: timed out collecting messages; got ${out.map((m) => m.type).join('')}`);
      let m: BackendMessage | undefined;
      try {
        m = await this.next(left);
      } catch (e) {
        throw new Error(`${(e as Error).message}; got so far: ${out.map((x) => x.type).join('')}`);
      }
      if (!m) return out;
      out.push(m);
      if (match(m)) return out;
    }
  }

  /** Resolves true when the peer has closed the connection within timeoutMs, false otherwise. */
  waitClosed(timeoutMs = 5000): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters.delete(check);
        resolve(false);
      }, timeoutMs);
      const check = (): void => {
        if (this.closed) {
          clearTimeout(t);
          this.waiters.delete(check);
          resolve(true);
        }
      };
      this.waiters.add(check);
    });
  }

  /**
   * Read everything until the connection closes (or timeoutMs), then return the
   * parsed messages (and whatever unparsable bytes remained).
   */
  async drainUntilClosed(timeoutMs = 5000): Promise<{ messages: BackendMessage[]; closed: boolean; rest: Buffer }> {
    const closed = await this.waitClosed(timeoutMs);
    const messages: BackendMessage[] = [];
    for (;;) {
      let m: BackendMessage | undefined;
      try {
        m = this.takeMessage();
      } catch {
        break;
      }
      if (!m) break;
      messages.push(m);
    }
    return { messages, closed, rest: this.buf };
  }

  /** Start-up (protocol 3.0) and read until ReadyForQuery or ErrorResponse. */
  async startup(params: Record<string, string>, timeoutMs = 10_000): Promise<StartupResult> {
    this.send(startupMessage(params));
    return this.readStartupReply(timeoutMs);
  }

  async readStartupReply(timeoutMs = 10_000): Promise<StartupResult> {
    const msgs = await this.collect('ZE', timeoutMs);
    const res: StartupResult = { messages: msgs, parameters: {}, pid: 0, secret: 0, ok: false };
    for (const m of msgs) {
      if (m.type === 'S') {
        const [k, v] = cstrings(m.body);
        res.parameters[k] = v;
      } else if (m.type === 'K') {
        res.pid = m.body.readInt32BE(0);
        res.secret = m.body.readInt32BE(4);
      } else if (m.type === 'E') {
        res.error = errorFields(m.body);
      } else if (m.type === 'Z') {
        res.ok = true;
      }
    }
    return res;
  }

  /** Simple Query; messages through ReadyForQuery. */
  async query(sql: string, timeoutMs = 10_000): Promise<QueryResult> {
    this.send(queryMessage(sql));
    const msgs = await this.collect('Z', timeoutMs);
    return summarize(msgs);
  }

  end(): void {
    if (!this.socket.destroyed) this.socket.end(terminateMessage());
  }

  destroy(): void {
    this.socket.destroy();
    live.delete(this);
  }
}

export interface StartupResult {
  messages: BackendMessage[];
  parameters: Record<string, string>;
  pid: number;
  secret: number;
  ok: boolean;
  error?: Record<string, string>;
}

export interface QueryResult {
  messages: BackendMessage[];
  /** DataRow values (text), one array per row. */
  rows: Array<Array<string | null>>;
  tags: string[];
  errors: Array<Record<string, string>>;
  /** Transaction status of the final ReadyForQuery ('I', 'T', 'E'), if any. */
  status?: string;
}

export function summarize(msgs: BackendMessage[]): QueryResult {
  const r: QueryResult = { messages: msgs, rows: [], tags: [], errors: [] };
  for (const m of msgs) {
    if (m.type === 'D') r.rows.push(dataRowValues(m.body));
    else if (m.type === 'C') r.tags.push(cstrings(m.body)[0]);
    else if (m.type === 'E') r.errors.push(errorFields(m.body));
    else if (m.type === 'Z') r.status = String.fromCharCode(m.body[0]);
  }
  return r;
}

// ---------------------------------------------------------------------------
// message builders

export function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(5 + body.length);
  b[0] = type.charCodeAt(0);
  b.writeUInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

function cstr(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

/** A start-up packet with an arbitrary version code and parameters. */
export function startupMessage(params: Record<string, string>, version = PROTOCOL_3_0): Buffer {
  const parts: Buffer[] = [int32(version)];
  for (const [k, v] of Object.entries(params)) parts.push(cstr(k), cstr(v));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  return Buffer.concat([int32(4 + body.length), body]);
}

export function sslRequest(): Buffer {
  return Buffer.concat([int32(8), int32(SSL_REQUEST_CODE)]);
}

export function gssencRequest(): Buffer {
  return Buffer.concat([int32(8), int32(GSSENC_REQUEST_CODE)]);
}

export function cancelRequest(pid: number, secret: number): Buffer {
  return Buffer.concat([int32(16), int32(CANCEL_REQUEST_CODE), int32(pid), int32(secret)]);
}

export function queryMessage(sql: string): Buffer {
  return message('Q', cstr(sql));
}

export function parseMessage(name: string, sql: string, paramTypes: number[] = []): Buffer {
  return message('P', Buffer.concat([cstr(name), cstr(sql), int16(paramTypes.length), ...paramTypes.map(int32)]));
}

/** Bind with text parameters and text results. */
export function bindMessage(portal: string, statement: string, params: Array<string | null> = []): Buffer {
  const vals: Buffer[] = [];
  for (const p of params) {
    if (p === null) vals.push(int32(-1));
    else {
      const v = Buffer.from(p, 'utf8');
      vals.push(int32(v.length), v);
    }
  }
  return message(
    'B',
    Buffer.concat([cstr(portal), cstr(statement), int16(0), int16(params.length), ...vals, int16(0)]),
  );
}

export function describeMessage(kind: 'S' | 'P', name: string): Buffer {
  return message('D', Buffer.concat([Buffer.from(kind), cstr(name)]));
}

export function executeMessage(portal = '', maxRows = 0): Buffer {
  return message('E', Buffer.concat([cstr(portal), int32(maxRows)]));
}

export function closeMessage(kind: 'S' | 'P', name: string): Buffer {
  return message('C', Buffer.concat([Buffer.from(kind), cstr(name)]));
}

export function syncMessage(): Buffer {
  return message('S');
}

export function flushMessage(): Buffer {
  return message('H');
}

export function copyDataMessage(data: Buffer | string): Buffer {
  return message('d', typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
}

export function copyDoneMessage(): Buffer {
  return message('c');
}

export function copyFailMessage(reason: string): Buffer {
  return message('f', cstr(reason));
}

export function terminateMessage(): Buffer {
  return message('X');
}

// ---------------------------------------------------------------------------
// parsing

/** Null-terminated strings of a message body. */
export function cstrings(body: Buffer): string[] {
  const out: string[] = [];
  let p = 0;
  while (p < body.length) {
    const z = body.indexOf(0, p);
    if (z < 0) {
      out.push(body.toString('utf8', p));
      break;
    }
    out.push(body.toString('utf8', p, z));
    p = z + 1;
  }
  return out;
}

/** ErrorResponse / NoticeResponse fields by code letter (S, V, C, M, D, H, ...). */
export function errorFields(body: Buffer): Record<string, string> {
  const f: Record<string, string> = {};
  let p = 0;
  while (p < body.length && body[p] !== 0) {
    const code = String.fromCharCode(body[p]);
    const z = body.indexOf(0, p + 1);
    if (z < 0) break;
    f[code] = body.toString('utf8', p + 1, z);
    p = z + 1;
  }
  return f;
}

export function dataRowValues(body: Buffer): Array<string | null> {
  const n = body.readInt16BE(0);
  const out: Array<string | null> = [];
  let p = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(p);
    p += 4;
    if (len < 0) out.push(null);
    else {
      out.push(body.toString('utf8', p, p + len));
      p += len;
    }
  }
  return out;
}

/**
 * A backend message as a client sees it, for comparing transcripts: its type and what it says
 * (`E[code message]`, `C[tag]`, `D[values]`, `Z<status>`, `t[types]`; ParameterStatus as `S`,
 * or `S[name=value]` with `settings`; other messages by their type letter).
 */
export function shownMessage(m: BackendMessage, settings = false): string {
  switch (m.type) {
    case 'E':
    case 'N': {
      const f = errorFields(m.body);
      return `${m.type}[${f.C} ${f.M}]`;
    }
    case 'C':
      return `C[${cstrings(m.body)[0]}]`;
    case 'D':
      return `D[${dataRowValues(m.body).join(',')}]`;
    case 'Z':
      return `Z${m.body.toString()}`;
    case 'S':
      return settings ? `S[${cstrings(m.body).join('=')}]` : 'S';
    case 't': {
      const types: number[] = [];
      for (let i = 0; i < m.body.readInt16BE(0); i++) types.push(m.body.readInt32BE(2 + 4 * i));
      return `t[${types.join(',')}]`;
    }
    default:
      return m.type;
  }
}

/**
 * The replies up to the `readies`-th ReadyForQuery, each as `shownMessage` shows it, space
 * separated; a reply that does not come within `timeoutMs` ends it with `HANG(…)`.
 */
export async function replyTranscript(
  raw: RawClient,
  readies: number,
  settings = false,
  timeoutMs = 10_000,
): Promise<string> {
  const got: string[] = [];
  for (let z = 0; z < readies; ) {
    const m = await raw.next(timeoutMs).catch((e: Error) => {
      got.push(`HANG(${e.message.slice(0, 60)})`);
      return undefined;
    });
    if (!m) break;
    if (m.type === 'Z') z++;
    got.push(shownMessage(m, settings));
  }
  return got.join(' ');
}

/** First ErrorResponse among messages, as fields. */
export function firstError(msgs: BackendMessage[]): Record<string, string> | undefined {
  const e = msgs.find((m) => m.type === 'E');
  return e ? errorFields(e.body) : undefined;
}

// ---------------------------------------------------------------------------
// process helpers

/** VmRSS of a process in bytes (Linux /proc); NaN if unavailable. */
export function rssBytes(pid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(s);
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Whether a process exists (signal 0). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

let cancelBarrierSeq = 0;

/**
 * A barrier for pgrelay's whole log: send a CancelRequest with a key no session
 * has and wait for pgrelay's 'invalid cancel key' line for it. pgrelay logs
 * through one ordered stream and logs that line only after the request arrived,
 * i.e. after anything the test had already seen pgrelay do (close a socket,
 * answer a query); so once the line is in `logs()`, so is every line pgrelay
 * logged for those events. Needs log_min_messages at warning or lower (the
 * line is LOG level).
 */
export async function cancelLogBarrier(
  proxy: { host: string; port: number; logs: () => string },
  timeoutMs = 20_000,
): Promise<void> {
  // A pid no session gets (session ids are positive int32s chosen by pgrelay; this one is negative).
  const pid = -1_000_000 - (process.pid % 100_000) * 100 - (++cancelBarrierSeq % 100);
  const c = await RawClient.connect(proxy.port, proxy.host);
  try {
    c.send(cancelRequest(pid, 0x7eadbeef));
    await c.waitClosed(timeoutMs);
  } finally {
    c.destroy();
  }
  const re = new RegExp(`"pid":${pid}[,}].*invalid cancel key|invalid cancel key.*"pid":${pid}[,}]`);
  const deadline = Date.now() + timeoutMs;
  while (
    !proxy
      .logs()
      .split('\n')
      .some((l) => re.test(l))
  ) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for pgrelay's 'invalid cancel key' line for pid ${pid}`);
    await sleep(10);
  }
}
