/**
 * A recording TCP forwarder for the path pgrelay → PostgreSQL: pgrelay is
 * configured with the tap's port as backend_port, the tap forwards every byte
 * unchanged to the real server and keeps a copy of both directions per
 * connection, so a test can prove what went over the wire (e.g. that nothing
 * but an SSLRequest and TLS records was ever sent in clear). It does not
 * answer anything itself: the server behind it is the real one.
 */
import net from 'node:net';

export interface TapConnection {
  /** Bytes pgrelay sent to the server, in order. */
  toServer: Buffer;
  /** Bytes the server sent to pgrelay, in order. */
  toClient: Buffer;
  closed: boolean;
}

/**
 * Where the message whose text starts at `at` in `d` begins: a Query ('Q', its length, the
 * text) or a Parse ('P', its length, the statement name and '\0', the text); -1 otherwise.
 */
function statementStart(d: Buffer, at: number): number {
  if (at >= 5 && d[at - 5] === 0x51) return at - 5;
  if (at < 6 || d[at - 1] !== 0) return -1;
  // Statement names are short (PostgreSQL's are at most 63 bytes).
  for (let p = at - 6; p >= 0 && p >= at - 70; p--) if (d[p] === 0x50 && d.indexOf(0, p + 5) === at - 1) return p;
  return -1;
}

/** Idle sockets are destroyed after this long, so a forgotten tap cannot keep a test process alive. */
const IDLE_TIMEOUT_MS = 300_000;

export class Wiretap {
  readonly connections: TapConnection[] = [];
  /** Connections whose bytes to the server are held back (holdFromStatement), with what was held. */
  readonly holding = new Map<TapConnection, Buffer>();
  private readonly sockets = new Set<net.Socket>();
  /** Both sockets of each open connection (for cut). */
  private readonly pairs = new Map<TapConnection, net.Socket[]>();
  /** Text of the Query message from which bytes to the server are held, if set. */
  private holdSql: Buffer | undefined;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /** Listen on 127.0.0.1 (a free port) and forward to target. */
  static async start(target: { host: string; port: number }): Promise<Wiretap> {
    let tap: Wiretap | undefined;
    const server = net.createServer((client) => tap?.accept(client, target));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('Wiretap: no TCP address');
    tap = new Wiretap(server, addr.port);
    return tap;
  }

  private accept(client: net.Socket, target: { host: string; port: number }): void {
    const rec: TapConnection = { toServer: Buffer.alloc(0), toClient: Buffer.alloc(0), closed: false };
    this.connections.push(rec);
    const upstream = net.connect(target);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setTimeout(IDLE_TIMEOUT_MS, () => s.destroy());
      s.on('error', () => undefined);
    }
    this.pairs.set(rec, [client, upstream]);
    const end = (): void => {
      this.pairs.delete(rec);
      rec.closed = true;
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('data', (d: Buffer) => {
      rec.toServer = Buffer.concat([rec.toServer, d]);
      const held = this.holding.get(rec);
      if (held !== undefined) {
        this.holding.set(rec, Buffer.concat([held, d]));
        return;
      }
      const at = this.holdSql === undefined ? -1 : d.indexOf(this.holdSql);
      const from = at < 0 ? -1 : statementStart(d, at);
      if (from >= 0) {
        this.holdSql = undefined;
        this.holding.set(rec, Buffer.from(d.subarray(from)));
        upstream.write(d.subarray(0, from));
        return;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      rec.toClient = Buffer.concat([rec.toClient, d]);
      client.write(d);
    });
  }

  /**
   * From the next simple Query (or Parse) whose text starts with `sql`, on any
   * connection, hold back everything pgrelay sends to the server on that connection: the
   * server never sees that statement (pgrelay waits for its reply). Only that one: later ones
   * pass. The message is recognised when its header and text arrive in one chunk (pgrelay
   * writes each message whole). `holding` shows which connections are held.
   */
  holdFromStatement(sql: string): void {
    this.holdSql = Buffer.from(sql);
  }

  /** Send what is held to the servers and hold nothing more (see holdFromStatement). */
  release(): void {
    this.holdSql = undefined;
    for (const [rec, held] of this.holding) {
      this.holding.delete(rec);
      this.pairs.get(rec)?.[1].write(held);
    }
  }

  /**
   * Break the open connections that `which` selects, both ways at once, as a network
   * failure would: pgrelay sees its connection close with no message from the server.
   * Returns how many were cut.
   */
  cut(which: (c: TapConnection) => boolean): number {
    let n = 0;
    for (const [rec, sockets] of this.pairs) {
      if (!which(rec)) continue;
      for (const s of sockets) s.destroy();
      n++;
    }
    return n;
  }

  /** Forget what was recorded so far (connections still open keep recording into their old entries). */
  clear(): void {
    this.connections.length = 0;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** PostgreSQL's SSLRequest: length 8, code 80877103. */
export const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/**
 * Why `bytes` (what a client sent to a PostgreSQL server) is not "an SSLRequest
 * followed by nothing but TLS records", or undefined when it is. TLS records
 * are checked by their framing (content type 20–23, protocol major version 3,
 * length at most 2^14 + 2048); a last record cut short by a close is allowed.
 */
export function clearTextProblem(bytes: Buffer): string | undefined {
  if (bytes.length < SSL_REQUEST.length || !bytes.subarray(0, SSL_REQUEST.length).equals(SSL_REQUEST))
    return `does not start with an SSLRequest: ${bytes.subarray(0, 16).toString('hex')}`;
  let p = SSL_REQUEST.length;
  while (p < bytes.length) {
    if (bytes.length - p < 5) return `truncated TLS record header at byte ${p}`;
    const type = bytes[p];
    const major = bytes[p + 1];
    const len = bytes.readUInt16BE(p + 3);
    if (type < 20 || type > 23 || major !== 3 || len > 16384 + 2048)
      return `not a TLS record at byte ${p}: ${bytes.subarray(p, p + 24).toString('hex')} (${JSON.stringify(bytes.subarray(p, p + 24).toString('latin1'))})`;
    p += 5 + len;
  }
  return undefined;
}
