/**
 * Opens a backend connection to PostgreSQL as a client: TCP connect (bounded by
 * connect_timeout), StartupMessage with the client's parameters, whatever
 * authentication the server asks for, then ParameterStatus/BackendKeyData until the
 * first ReadyForQuery. The result is a `BackendConnection` ready to be handed to a
 * session or kept in the connection cache.
 */
import net from 'node:net';
import { serialize } from 'pg-protocol';
import { AuthCode, BE, SQLSTATE } from '../protocol/constants.js';
import { PgError, parseErrorFields, readCString } from '../protocol/messages.js';
import { md5PasswordResponse } from './backend-auth.js';
import { BackendScram } from './backend-auth.js';

/** What the connector may use to answer a backend's password request. */
export interface BackendSecret {
  /** Plain password (works for cleartext, md5 and SCRAM). */
  password?: string;
  /** Stored md5 hash `md5<hex>` (works for md5 only). */
  md5Hash?: string;
}

export interface ConnectOptions {
  nodeId: number;
  host: string;
  port: number;
  /** Startup parameters sent verbatim (user, database, application_name, options, GUCs…). */
  params: Map<string, string>;
  connectTimeoutMs: number;
  /** Called when the server asks for a password; undefined means none is known. */
  secret?: (user: string) => BackendSecret | undefined;
}

let nextConnectionId = 1;

export class BackendConnection {
  readonly id = nextConnectionId++;
  /** Current value of every reported parameter (kept current by the session). */
  readonly params: Map<string, string>;
  txStatus = 0x49; // 'I'
  readonly createdAt = Date.now();
  /** When it last went back into the cache (ms). */
  releasedAt = 0;
  /** Set once the socket closed or errored. */
  dead = false;
  constructor(
    readonly socket: net.Socket,
    readonly nodeId: number,
    readonly host: string,
    readonly port: number,
    readonly pid: number,
    readonly secretKey: number,
    params: Map<string, string>,
    readonly cacheKey: string,
  ) {
    this.params = params;
    socket.once('close', () => {
      this.dead = true;
    });
    // An idle or cached socket may be reset by the server at any time: never let that throw.
    socket.on('error', () => {
      this.dead = true;
    });
  }

  /** Send Terminate and close. Safe to call more than once. */
  close(): void {
    if (this.dead || this.socket.destroyed) {
      this.dead = true;
      return;
    }
    this.dead = true;
    this.socket.end(TERMINATE);
    this.socket.setTimeout(2000, () => this.socket.destroy());
  }
}

const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

/** Start-up message with the given parameters, protocol 3.0, exactly as given (no additions). */
export function startupMessage(params: Map<string, string>): Buffer {
  let len = 4 + 4 + 1;
  for (const [k, v] of params) len += Buffer.byteLength(k) + Buffer.byteLength(v) + 2;
  const b = Buffer.allocUnsafe(len);
  b.writeInt32BE(len, 0);
  b.writeInt32BE(196608, 4);
  let o = 8;
  for (const [k, v] of params) {
    o += b.write(k, o);
    b[o++] = 0;
    o += b.write(v, o);
    b[o++] = 0;
  }
  b[o] = 0;
  return b;
}

export function cacheKeyFor(nodeId: number, params: Map<string, string>): string {
  const parts: string[] = [String(nodeId)];
  const keys = [...params.keys()].sort();
  for (const k of keys) parts.push(k, params.get(k) as string);
  return parts.join('\u0000');
}

/**
 * Connect and authenticate. Rejects with a PgError whose code/message is what the
 * client should see (the server's own error for a rejected start-up, 08001 when the
 * server cannot be reached).
 */
export function connectBackend(opts: ConnectOptions): Promise<BackendConnection> {
  return new Promise((resolve, reject) => {
    const user = opts.params.get('user') ?? '';
    const socket = net.connect(connectTarget(opts.host, opts.port));
    socket.setNoDelay(true);
    let done = false;
    let buf: Buffer = Buffer.alloc(0);
    let pid = 0;
    let secretKey = 0;
    const params = new Map<string, string>();
    let scram: BackendScram | undefined;

    const timer = setTimeout(() => {
      fail(new PgError(SQLSTATE.sqlclientUnableToEstablish, `could not connect to backend node ${opts.nodeId} (${opts.host}:${opts.port}): timeout after ${opts.connectTimeoutMs} ms`));
    }, opts.connectTimeoutMs > 0 ? opts.connectTimeoutMs : 2 ** 31 - 1);

    function cleanup(): void {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
    }
    function fail(err: PgError): void {
      if (done) return;
      done = true;
      cleanup();
      socket.destroy();
      reject(err);
    }
    function onError(e: Error): void {
      fail(new PgError(SQLSTATE.sqlclientUnableToEstablish, `could not connect to backend node ${opts.nodeId} (${opts.host}:${opts.port}): ${e.message}`));
    }
    function onClose(): void {
      fail(new PgError(SQLSTATE.connectionFailure, `backend node ${opts.nodeId} (${opts.host}:${opts.port}) closed the connection during start-up`));
    }
    function needSecret(): BackendSecret | undefined {
      const s = opts.secret?.(user);
      return s;
    }
    function noPassword(kind: string): PgError {
      return new PgError(
        SQLSTATE.invalidPassword,
        `backend node ${opts.nodeId} requested ${kind} authentication for user "${user}" but pgrelay has no password for it`,
        'FATAL',
        undefined,
        'Add the user to pool_passwd (pgrelay passwd) or allow trust authentication from pgrelay in pg_hba.conf.',
      );
    }

    function onMessage(type: number, body: Buffer): void {
      switch (type) {
        case BE.Authentication: {
          const code = body.readInt32BE(0);
          if (code === AuthCode.Ok) return;
          if (code === AuthCode.CleartextPassword) {
            const s = needSecret();
            if (!s?.password) return fail(noPassword('cleartext password'));
            socket.write(serialize.password(s.password));
            return;
          }
          if (code === AuthCode.MD5Password) {
            const s = needSecret();
            const hash = s?.md5Hash ?? undefined;
            if (!s || (!s.password && !hash)) return fail(noPassword('md5'));
            socket.write(serialize.password(md5PasswordResponse(user, body.subarray(4, 8), s.password, hash)));
            return;
          }
          if (code === AuthCode.SASL) {
            const mechs: string[] = [];
            let p = 4;
            while (p < body.length && body[p] !== 0) {
              const r = readCString(body, p, body.length);
              if (!r) break;
              mechs.push(r[0]);
              p = r[1];
            }
            if (!mechs.includes('SCRAM-SHA-256')) return fail(new PgError(SQLSTATE.featureNotSupported, `backend node ${opts.nodeId} offers SASL mechanisms ${mechs.join(', ')}, none supported by pgrelay`));
            const s = needSecret();
            if (!s?.password) return fail(noPassword('SCRAM-SHA-256'));
            scram = new BackendScram(s.password);
            socket.write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirst()));
            return;
          }
          if (code === AuthCode.SASLContinue && scram) {
            const r = scram.serverFirst(body.toString('utf8', 4));
            if (typeof r !== 'string') return fail(r);
            socket.write(serialize.sendSCRAMClientFinalMessage(r));
            return;
          }
          if (code === AuthCode.SASLFinal && scram) {
            const r = scram.serverFinal(body.toString('utf8', 4));
            if (r) return fail(r);
            return;
          }
          return fail(new PgError(SQLSTATE.featureNotSupported, `backend node ${opts.nodeId} requested unsupported authentication method (code ${code})`));
        }
        case BE.ParameterStatus: {
          const k = readCString(body, 0, body.length);
          if (!k) return;
          const v = readCString(body, k[1], body.length);
          if (v) params.set(k[0], v[0]);
          return;
        }
        case BE.BackendKeyData:
          pid = body.readInt32BE(0);
          secretKey = body.readInt32BE(4);
          return;
        case BE.ErrorResponse: {
          const f = parseErrorFields(body, 0, body.length);
          const sev = f.V ?? f.S ?? 'FATAL';
          return fail(new PgError(f.C ?? SQLSTATE.connectionFailure, f.M ?? 'backend rejected the connection', sev === 'ERROR' ? 'FATAL' : (sev as 'FATAL'), f.D, f.H));
        }
        case BE.NoticeResponse:
        case BE.NegotiateProtocolVersion:
          return;
        case BE.ReadyForQuery: {
          done = true;
          cleanup();
          const conn = new BackendConnection(socket, opts.nodeId, opts.host, opts.port, pid, secretKey, params, cacheKeyFor(opts.nodeId, opts.params));
          conn.txStatus = body[0];
          if (buf.length > 0) {
            // The server sent nothing after ReadyForQuery unprompted, except possibly notices; drop them.
            buf = Buffer.alloc(0);
          }
          resolve(conn);
          return;
        }
        default:
          return fail(new PgError(SQLSTATE.protocolViolation, `unexpected message type 0x${type.toString(16)} from backend node ${opts.nodeId} during start-up`));
      }
    }

    function onData(chunk: Buffer): void {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (!done && buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (len < 4 || len > 1 << 24) return fail(new PgError(SQLSTATE.protocolViolation, `invalid message length from backend node ${opts.nodeId}`));
        if (buf.length < 1 + len) break;
        const type = buf[0];
        const body = buf.subarray(5, 1 + len);
        buf = buf.subarray(1 + len);
        onMessage(type, body);
      }
    }

    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.once('connect', () => socket.write(startupMessage(opts.params)));
  });
}

/** pgpool's backend_hostname may be a Unix socket directory (a path starting with '/'). */
export function connectTarget(host: string, port: number): net.NetConnectOpts {
  return host.startsWith('/') ? { path: `${host}/.s.PGSQL.${port}` } : { host, port };
}

/** Send a CancelRequest for (pid, secret) to host:port on a fresh connection. */
export function sendCancel(host: string, port: number, pid: number, secret: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(connectTarget(host, port));
    const t = setTimeout(() => s.destroy(), timeoutMs);
    s.once('connect', () => s.end(serialize.cancel(pid, secret)));
    s.once('error', () => undefined);
    s.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
