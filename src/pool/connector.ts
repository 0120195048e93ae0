/**
 * Opens a backend connection to PostgreSQL as a client: TCP connect (bounded by
 * connect_timeout), TLS negotiation, StartupMessage with the client's parameters,
 * whatever authentication the server asks for (answered by src/auth/backend.ts),
 * then ParameterStatus/BackendKeyData until the first ReadyForQuery. The result
 * is a `BackendConnection` ready to be handed to a session or kept in the
 * connection cache.
 */
import net from 'node:net';
import tls from 'node:tls';
import { serialize } from 'pg-protocol';
import { BE, SQLSTATE } from '../protocol/constants.js';
import { PgError, decodeParameterStatus, parseErrorFields } from '../protocol/messages.js';
import { addBackendPid, removeBackendPid } from './backend-pids.js';
import { backendTlsOptions, type BackendTls } from '../tls.js';
import type { ServerStatements } from '../session/pooled-statements.js';
import { type AuthStep, BackendAuthExchange, type BackendAuthMethod, type BackendSecret } from '../auth/backend.js';

let defaultBackendTls: BackendTls = { mode: 'disable' };

/** Process-wide TLS policy for backend connections (from ssl / backend_ssl_mode); set by the Relay. */
export function setDefaultBackendTls(b: BackendTls): void {
  defaultBackendTls = b;
}

export function getDefaultBackendTls(): BackendTls {
  return defaultBackendTls;
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
  /** TLS policy (default: the process-wide one, setDefaultBackendTls). */
  tls?: BackendTls;
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
  /** The connection is TLS-encrypted. */
  ssl = false;
  /** How the backend authenticated this connection. */
  authMethod: BackendAuthMethod = 'trust';
  /** Client sessions that have used it (pgpool's pool_counter). */
  useCount = 0;
  /** Start-up parameters it was opened with (user, database, …). */
  startup: ReadonlyMap<string, string> = new Map();
  /**
   * default_transaction_isolation as the backend started (its role's, database's and
   * start-up options' default, which RESET and DISCARD ALL return to); undefined until asked.
   */
  startupIsolation: string | undefined;
  /** The ParameterStatus values the server reported at start-up (`params` follows later changes). */
  startupReport: ReadonlyMap<string, string> = new Map();
  /**
   * pool_mode = transaction: the session settings (SET/RESET statements) in effect on it,
   * as the last session that used it had them (see Backends.checkout); DIRTY_SETTINGS when unknown.
   */
  settings: readonly string[] = [];
  /**
   * pool_mode = transaction: the start-up settings of that session applied with SET
   * (pool/startup-settings.ts; the connection was opened without them).
   */
  startupSettings: ReadonlyMap<string, string> = new Map();
  /** pool_mode = transaction: names of pgrelay's prepared statements on it (session/pooled-statements.ts). */
  statements: ServerStatements | undefined;
  /** pool_mode = transaction: the client statement its unnamed prepared statement was parsed for. */
  unnamed: object | undefined;
  /**
   * pool_mode = transaction: statements prepared on it under a client's own name, to tell
   * that client PostgreSQL's 42P05 for its second Parse; deallocated at the next checkout.
   */
  strays: Set<string> | undefined;
  /**
   * pool_mode = transaction: the link the last session used it through, taken over by the
   * next one when nothing of the last is left on it (session/backends.ts linkTo,
   * BackendLink.adopt; `unknown` here: the pool does not depend on the session).
   */
  link: unknown;
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
    addBackendPid(pid, nodeId);
    socket.once('close', () => {
      this.dead = true;
      removeBackendPid(pid, nodeId);
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

/**
 * Close a connection whose server is still running something of ours that nobody will read
 * (a client left in the middle of a result). A Terminate would wait behind the rest of the
 * result, and `end()` only half-closes: the server goes on sending into a socket still open
 * for reading. Destroyed, the socket is closed for good; the kernel resets what the server
 * sends next, its write fails and the backend ends as it would for a vanished client.
 */
export function abortConnection(conn: BackendConnection): void {
  conn.dead = true;
  if (!conn.socket.destroyed) conn.socket.destroy();
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
  return runStartup(opts, false) as Promise<BackendConnection>;
}

/**
 * Which authentication method the backend asks for first for this start-up
 * (user, database): opens a connection, reads the first Authentication request
 * and closes it (pool_hba off: pgrelay relays the primary's method to the client).
 * Rejects with the server's error when it refuses the start-up itself (no
 * pg_hba.conf entry, unknown database...).
 */
export function probeAuthMethod(opts: ConnectOptions): Promise<BackendAuthMethod> {
  return runStartup(opts, true) as Promise<BackendAuthMethod>;
}

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

function runStartup(opts: ConnectOptions, probe: boolean): Promise<BackendConnection | BackendAuthMethod> {
  return new Promise((resolve, reject) => {
    const user = opts.params.get('user') ?? '';
    const tlsPolicy = opts.tls ?? defaultBackendTls;
    const wantTls = tlsPolicy.mode !== 'disable' && !opts.host.startsWith('/');
    const raw = net.connect(connectTarget(opts.host, opts.port));
    raw.setNoDelay(true);
    /** The socket the protocol runs on: raw, or the TLS socket over it. */
    let socket: net.Socket = raw;
    let tlsSocket: tls.TLSSocket | undefined;
    let done = false;
    let buf: Buffer = Buffer.alloc(0);
    let pid = 0;
    let secretKey = 0;
    const params = new Map<string, string>();
    /** Created once the protocol starts (TLS or not is known then). */
    let auth: BackendAuthExchange | undefined;
    const where = `backend node ${opts.nodeId} (${opts.host}:${opts.port})`;

    const timer = setTimeout(
      () => {
        fail(
          new PgError(
            SQLSTATE.sqlclientUnableToEstablish,
            `could not connect to ${where}: timeout after ${opts.connectTimeoutMs} ms`,
          ),
        );
      },
      opts.connectTimeoutMs > 0 ? opts.connectTimeoutMs : 2 ** 31 - 1,
    );

    function cleanup(): void {
      clearTimeout(timer);
      raw.removeListener('data', onSslAnswer);
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      raw.removeListener('error', onError);
      raw.removeListener('close', onClose);
    }
    function fail(err: PgError): void {
      if (done) return;
      done = true;
      cleanup();
      socket.on('error', () => undefined);
      raw.on('error', () => undefined);
      socket.destroy();
      raw.destroy();
      reject(err);
    }
    function onError(e: Error): void {
      fail(new PgError(SQLSTATE.sqlclientUnableToEstablish, `could not connect to ${where}: ${e.message}`));
    }
    function onClose(): void {
      fail(new PgError(SQLSTATE.connectionFailure, `${where} closed the connection during start-up`));
    }
    function probed(m: BackendAuthMethod): void {
      done = true;
      cleanup();
      socket.on('error', () => undefined);
      raw.on('error', () => undefined);
      if (m === 'trust') socket.end(TERMINATE);
      else socket.end();
      socket.setTimeout(2000, () => socket.destroy());
      resolve(m);
    }

    function onAuth(body: Buffer): void {
      const step = auth?.answer(body);
      // SCRAM's PBKDF2 runs off the event loop: the answer comes later (the server waits for it).
      if (step instanceof Promise) step.then((s) => !done && onStep(s));
      else onStep(step);
    }
    function onStep(step: AuthStep): void {
      if (step instanceof PgError) return fail(step);
      if (step === undefined) return;
      if ('probed' in step) return probed(step.probed);
      socket.write(step.send);
    }

    function onMessage(type: number, body: Buffer): void {
      switch (type) {
        case BE.Authentication:
          return onAuth(body);
        case BE.ParameterStatus: {
          const r = decodeParameterStatus(body, 0, body.length);
          if (r !== undefined) params.set(r[0], r[1]);
          return;
        }
        case BE.BackendKeyData:
          pid = body.readInt32BE(0);
          secretKey = body.readInt32BE(4);
          return;
        case BE.ErrorResponse: {
          const f = parseErrorFields(body, 0, body.length);
          const sev = f.V ?? f.S ?? 'FATAL';
          return fail(
            new PgError(
              f.C ?? SQLSTATE.connectionFailure,
              f.M ?? 'backend rejected the connection',
              sev === 'ERROR' ? 'FATAL' : (sev as 'FATAL'),
              f.D,
              f.H,
            ),
          );
        }
        case BE.NoticeResponse:
        case BE.NegotiateProtocolVersion:
          return;
        case BE.ReadyForQuery: {
          if (probe) return probed('trust');
          done = true;
          cleanup();
          const conn = new BackendConnection(
            socket,
            opts.nodeId,
            opts.host,
            opts.port,
            pid,
            secretKey,
            params,
            cacheKeyFor(opts.nodeId, opts.params),
          );
          conn.startup = opts.params;
          conn.startupReport = new Map(params);
          conn.txStatus = body[0];
          conn.ssl = tlsSocket !== undefined;
          conn.authMethod = auth?.method ?? 'trust';
          buf = Buffer.alloc(0);
          resolve(conn);
          return;
        }
        default:
          return fail(
            new PgError(
              SQLSTATE.protocolViolation,
              `unexpected message type 0x${type.toString(16)} from backend node ${opts.nodeId} during start-up`,
            ),
          );
      }
    }

    function onData(chunk: Buffer): void {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (!done && buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (len < 4 || len > 1 << 24)
          return fail(
            new PgError(SQLSTATE.protocolViolation, `invalid message length from backend node ${opts.nodeId}`),
          );
        if (buf.length < 1 + len) break;
        const type = buf[0];
        const body = buf.subarray(5, 1 + len);
        buf = buf.subarray(1 + len);
        onMessage(type, body);
      }
    }

    function startProtocol(): void {
      const t = tlsSocket;
      auth = new BackendAuthExchange({
        nodeId: opts.nodeId,
        user,
        secret: () => opts.secret?.(user),
        tls: t ? { peerCertificate: () => t.getPeerCertificate()?.raw } : undefined,
        probe,
      });
      socket.on('data', onData);
      socket.on('error', onError);
      socket.on('close', onClose);
      socket.write(startupMessage(opts.params));
    }

    function onSslAnswer(chunk: Buffer): void {
      raw.removeListener('data', onSslAnswer);
      const answer = chunk[0];
      if (chunk.length > 1) {
        // CVE-2021-23222: nothing may follow the server's one-byte answer.
        return fail(
          new PgError(SQLSTATE.protocolViolation, `received unencrypted data after SSL response from ${where}`),
        );
      }
      if (answer === 0x53 /* S */) {
        raw.removeListener('error', onError);
        raw.removeListener('close', onClose);
        raw.on('error', () => undefined);
        const t = tls.connect(backendTlsOptions(raw, opts.host, tlsPolicy));
        tlsSocket = t;
        socket = t;
        const onTlsError = (e: Error): void => {
          fail(new PgError(SQLSTATE.sqlclientUnableToEstablish, `could not establish TLS with ${where}: ${e.message}`));
        };
        t.once('error', onTlsError);
        t.once('secureConnect', () => {
          t.removeListener('error', onTlsError);
          if (!done) startProtocol();
        });
        return;
      }
      if (answer === 0x4e /* N */) {
        if (tlsPolicy.mode !== 'prefer') {
          return fail(
            new PgError(
              SQLSTATE.sqlclientUnableToEstablish,
              `${where} does not support SSL, but backend_ssl_mode is ${tlsPolicy.mode}`,
            ),
          );
        }
        raw.removeListener('error', onError);
        raw.removeListener('close', onClose);
        return startProtocol();
      }
      return fail(
        new PgError(
          SQLSTATE.protocolViolation,
          `invalid response to SSL negotiation from ${where}: 0x${(answer ?? 0).toString(16)}`,
        ),
      );
    }

    raw.on('error', onError);
    raw.on('close', onClose);
    raw.once('connect', () => {
      if (done) return;
      if (wantTls) {
        raw.on('data', onSslAnswer);
        raw.write(SSL_REQUEST);
        return;
      }
      raw.removeListener('error', onError);
      raw.removeListener('close', onClose);
      startProtocol();
    });
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
    // connect_timeout = 0 means none; a cancel still must not wait forever.
    const t = setTimeout(() => s.destroy(), timeoutMs > 0 ? timeoutMs : 10_000);
    s.once('connect', () => s.end(serialize.cancel(pid, secret)));
    s.once('error', () => undefined);
    s.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
