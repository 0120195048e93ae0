/**
 * One client's session: from the authenticated start-up to the reset of its backend
 * connections. The session relays protocol messages between the client socket and
 * its backend link(s) with `MessageScanner`, decoding only what decisions need:
 * the client's Query/Parse/Sync/FunctionCall/Terminate, the backend's
 * ReadyForQuery, ErrorResponse and ParameterStatus.
 */
import { randomInt } from 'node:crypto';
import type net from 'node:net';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { BE, FE, SQLSTATE, TxStatus } from '../protocol/constants.js';
import { DROP, MessageScanner, decodeTable, type FrameSink } from '../protocol/framing.js';
import {
  PgError,
  authenticationOk,
  backendKeyData,
  errorResponse,
  parameterStatus,
  parseErrorFields,
  readCString,
  readyForQuery,
} from '../protocol/messages.js';
import type { ConnectionCache } from '../pool/cache.js';
import { cacheKeyFor, connectBackend, sendCancel, type BackendConnection, type BackendSecret } from '../pool/connector.js';
import type { NodeTable } from '../cluster/nodes.js';

/** Everything a session needs from the process around it. */
export interface SessionContext {
  config(): Config;
  readonly nodes: NodeTable;
  readonly cache: ConnectionCache;
  readonly log: Logger;
  readonly registry: SessionRegistry;
  backendSecret(user: string): BackendSecret | undefined;
}

/** Message types the client may send after start-up. */
const VALID_FRONTEND = 'BCdcfDEHFPpQSX';
/** Client messages the session looks into; every other type byte is a protocol violation. */
const CLIENT_DECODE = (() => {
  const t = new Uint8Array(256).fill(1);
  for (const c of 'BCdcfDEHPp') t[c.charCodeAt(0)] = 0;
  return t;
})();
const BACKEND_DECODE = decodeTable('ZES');

/** Scanner actions. */
const TO_PRIMARY = 1;
const TO_CLIENT = 1;

/** Databases whose connections are never cached: holding them blocks CREATE DATABASE. */
const UNCACHEABLE_DATABASES = new Set(['template0', 'template1']);

export class SessionRegistry {
  private readonly byPid = new Map<number, Session>();
  private nextPid = randomInt(1, 1 << 22);

  register(s: Session): { pid: number; secret: number } {
    let pid = this.nextPid++;
    if (this.nextPid >= 0x7fffffff) this.nextPid = 1;
    while (this.byPid.has(pid)) pid = this.nextPid++;
    const secret = randomInt(0, 0x7fffffff);
    this.byPid.set(pid, s);
    return { pid, secret };
  }
  unregister(pid: number): void {
    this.byPid.delete(pid);
  }
  find(pid: number, secret: number): Session | undefined {
    const s = this.byPid.get(pid);
    return s && s.secretKey === secret ? s : undefined;
  }
  all(): IterableIterator<Session> {
    return this.byPid.values();
  }
  get size(): number {
    return this.byPid.size;
  }
}

/** A backend connection as used by one session, with its reply scanner. */
class BackendLink implements FrameSink {
  passAction = TO_CLIENT;
  /** ReadyForQuery messages still expected (one per Query, Sync, FunctionCall sent). */
  pendingReady = 0;
  readonly scanner: MessageScanner;
  /** Set when the server sent a FATAL/PANIC: it will close the connection. */
  fatal = false;
  private pausedClient = false;

  constructor(
    readonly session: Session,
    readonly conn: BackendConnection,
  ) {
    this.scanner = new MessageScanner(this, BACKEND_DECODE, 0x7fffffff);
  }

  onMessage(type: number, buf: Buffer, start: number, end: number): number {
    if (type === BE.ReadyForQuery) {
      this.conn.txStatus = buf[start];
      if (this.pendingReady > 0) this.pendingReady--;
      this.session.onReady(this);
      return this.passAction;
    }
    if (type === BE.ErrorResponse) {
      const f = parseErrorFields(buf, start, end);
      const sev = f.V ?? f.S;
      if (sev === 'FATAL' || sev === 'PANIC') this.fatal = true;
      this.session.onBackendError(this, f);
      return this.passAction;
    }
    // ParameterStatus: keep the connection's view current, for clients that reuse it.
    const k = readCString(buf, start, end);
    if (k) {
      const v = readCString(buf, k[1], end);
      if (v) this.conn.params.set(k[0], v[0]);
    }
    return this.passAction;
  }

  emit(_action: number, bytes: Buffer): void {
    const client = this.session.client;
    if (!client.write(bytes) && !this.pausedClient) {
      this.pausedClient = true;
      this.conn.socket.pause();
      client.once('drain', () => {
        this.pausedClient = false;
        if (!this.session.closed) this.conn.socket.resume();
      });
    }
  }

  onFramingError(message: string): void {
    this.session.log.error({ node: this.conn.nodeId, err: message }, 'invalid data from backend');
    this.conn.socket.destroy();
  }

  readonly onData = (chunk: Buffer): void => {
    this.scanner.push(chunk);
  };
  readonly onClose = (): void => {
    this.session.onBackendClosed(this);
  };

  attach(): void {
    this.conn.socket.on('data', this.onData);
    this.conn.socket.on('close', this.onClose);
  }
  detach(): void {
    this.conn.socket.removeListener('data', this.onData);
    this.conn.socket.removeListener('close', this.onClose);
  }
}

export class Session implements FrameSink {
  readonly pid: number;
  readonly secretKey: number;
  readonly user: string;
  readonly database: string;
  readonly applicationName: string;
  readonly startedAt = Date.now();
  readonly log: Logger;
  passAction = TO_PRIMARY;
  closed = false;
  /** Client sent Terminate: a clean exit, its backend may be reset and cached. */
  private terminated = false;
  private primary: BackendLink | undefined;
  private readonly scanner: MessageScanner;
  /** Last time the client sent something or the session became idle (ms). */
  lastActivity = Date.now();
  private pausedBackend = false;
  private onEnd: (() => void) | undefined;

  constructor(
    readonly ctx: SessionContext,
    readonly client: net.Socket,
    /** Start-up parameters as the client sent them (without _pq_ options). */
    readonly params: Map<string, string>,
    readonly remote: string,
  ) {
    this.user = params.get('user') ?? '';
    this.database = params.get('database') ?? this.user;
    this.applicationName = params.get('application_name') ?? '';
    const k = ctx.registry.register(this);
    this.pid = k.pid;
    this.secretKey = k.secret;
    this.log = ctx.log.child({ session: this.pid, user: this.user, database: this.database });
    this.scanner = new MessageScanner(this, CLIENT_DECODE, ctx.config().max_message_size);
  }

  /** Connect to the backend, answer the client's start-up, start relaying. */
  async start(onEnd: () => void): Promise<void> {
    this.onEnd = onEnd;
    const client = this.client;
    client.on('close', () => this.onClientClosed());
    client.on('error', (e) => this.log.debug({ err: e.message }, 'client socket error'));
    let conn: BackendConnection;
    try {
      conn = await this.acquireBackend();
    } catch (e) {
      const err = e instanceof PgError ? e : new PgError(SQLSTATE.connectionFailure, `could not open a backend connection: ${(e as Error).message}`);
      this.log.warn({ code: err.code, err: err.message }, 'backend connection failed');
      this.fatal(err);
      return;
    }
    if (this.closed || client.destroyed) {
      this.releaseBackend(conn, false);
      this.finish();
      return;
    }
    this.primary = new BackendLink(this, conn);
    this.primary.attach();
    const parts: Buffer[] = [authenticationOk()];
    for (const [k, v] of conn.params) parts.push(parameterStatus(k, v));
    parts.push(backendKeyData(this.pid, this.secretKey), readyForQuery(conn.txStatus));
    client.write(Buffer.concat(parts));
    client.on('data', this.onClientData);
    this.lastActivity = Date.now();
  }

  private async acquireBackend(): Promise<BackendConnection> {
    const node = this.ctx.nodes.primaryNode();
    if (!node) throw new PgError(SQLSTATE.cannotConnectNow, 'no primary node is available', 'FATAL', undefined, 'pgrelay is searching for the primary; retry shortly.');
    const cfg = this.ctx.config();
    const backendParams = this.params;
    const key = cacheKeyFor(node.id, backendParams);
    if (cfg.connection_cache) {
      const cached = this.ctx.cache.take(key);
      if (cached) {
        this.log.debug({ node: node.id, backendPid: cached.pid }, 'reusing cached backend connection');
        return cached;
      }
    }
    const conn = await connectBackend({
      nodeId: node.id,
      host: node.host,
      port: node.port,
      params: backendParams,
      connectTimeoutMs: cfg.connect_timeout,
      secret: (u) => this.ctx.backendSecret(u),
    });
    this.log.debug({ node: node.id, backendPid: conn.pid }, 'new backend connection');
    return conn;
  }

  // ---- client → backend

  private readonly onClientData = (chunk: Buffer): void => {
    this.lastActivity = Date.now();
    this.scanner.push(chunk);
  };

  onMessage(type: number, buf: Buffer, _start: number, _end: number): number {
    switch (type) {
      case FE.Query:
      case FE.Sync:
      case FE.FunctionCall:
        if (this.primary) this.primary.pendingReady++;
        return TO_PRIMARY;
      case FE.Parse:
        return TO_PRIMARY;
      case FE.Terminate:
        this.terminated = true;
        return DROP;
      default:
        this.fatal(new PgError(SQLSTATE.protocolViolation, `invalid frontend message type ${type}${VALID_FRONTEND.includes(String.fromCharCode(type)) ? '' : ` ('${printable(type)}')`}`));
        void buf;
        return DROP;
    }
  }

  emit(_action: number, bytes: Buffer): void {
    const link = this.primary;
    if (!link || this.closed) return;
    const sock = link.conn.socket;
    if (!sock.write(bytes) && !this.pausedBackend) {
      this.pausedBackend = true;
      this.client.pause();
      sock.once('drain', () => {
        this.pausedBackend = false;
        if (!this.closed) this.client.resume();
      });
    }
  }

  onFramingError(message: string, code: 'length' | 'size'): void {
    this.log.warn({ err: message }, 'malformed message from client');
    this.fatal(new PgError(code === 'size' ? SQLSTATE.programLimitExceeded : SQLSTATE.protocolViolation, code === 'size' ? `${message} (max_message_size)` : message));
  }

  // ---- backend → client events

  onReady(_link: BackendLink): void {
    this.lastActivity = Date.now();
  }

  onBackendError(link: BackendLink, f: Record<string, string>): void {
    if (link.fatal) this.log.warn({ node: link.conn.nodeId, code: f.C, err: f.M }, 'backend sent FATAL');
  }

  onBackendClosed(link: BackendLink): void {
    if (this.closed) return;
    if (!link.fatal) {
      this.log.warn({ node: link.conn.nodeId, backendPid: link.conn.pid }, 'backend connection closed unexpectedly');
      this.fatal(new PgError(SQLSTATE.connectionFailure, `server closed the connection unexpectedly (backend node ${link.conn.nodeId} at ${link.conn.host}:${link.conn.port})`, 'FATAL', 'The backend terminated abnormally before or while processing the request.'));
    } else {
      this.close();
    }
  }

  // ---- state for the rest of pgrelay

  /** True while a request is outstanding on any backend. */
  get busy(): boolean {
    return this.primary !== undefined && this.primary.pendingReady > 0;
  }

  get txStatus(): number {
    return this.primary?.conn.txStatus ?? TxStatus.Idle;
  }

  get backendConnections(): BackendConnection[] {
    return this.primary ? [this.primary.conn] : [];
  }

  /** Forward a CancelRequest to each backend running a request of this session. */
  cancel(): void {
    const cfg = this.ctx.config();
    for (const link of [this.primary]) {
      if (!link || link.pendingReady === 0) continue;
      const c = link.conn;
      this.log.info({ node: c.nodeId, backendPid: c.pid }, 'forwarding cancel request');
      void sendCancel(c.host, c.port, c.pid, c.secretKey, cfg.connect_timeout);
    }
  }

  /** Report a FATAL error to the client and end the session. */
  fatal(err: PgError): void {
    if (this.closed) return;
    if (!this.client.destroyed && this.client.writable) this.client.write(errorResponse({ ...err.toFields(), severity: 'FATAL' }));
    this.close();
  }

  /** End the session: close the client, reset or close the backend. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.removeListener('data', this.onClientData);
    if (!this.client.destroyed) this.client.end();
    this.client.setTimeout(2000, () => this.client.destroy());
    const link = this.primary;
    this.primary = undefined;
    if (link) {
      link.detach();
      const clean = this.terminated && link.pendingReady === 0 && !link.fatal && !link.scanner.suspended;
      this.releaseBackend(link.conn, clean);
    }
    this.finish();
  }

  private onClientClosed(): void {
    if (!this.closed) {
      if (!this.terminated) this.log.debug('client closed the connection without Terminate');
      this.close();
    }
  }

  private finish(): void {
    this.closed = true;
    this.ctx.registry.unregister(this.pid);
    const cb = this.onEnd;
    this.onEnd = undefined;
    cb?.();
  }

  /** Reset a backend connection and put it in the cache, or close it. */
  private releaseBackend(conn: BackendConnection, clean: boolean): void {
    const cfg = this.ctx.config();
    if (!clean || !cfg.connection_cache || conn.dead || UNCACHEABLE_DATABASES.has(this.database)) {
      conn.close();
      return;
    }
    resetConnection(conn, cfg.reset_query_list, 10_000).then(
      (ok) => {
        if (ok) this.ctx.cache.put(conn);
        else conn.close();
      },
      () => conn.close(),
    );
  }
}

function printable(type: number): string {
  return type >= 0x20 && type < 0x7f ? String.fromCharCode(type) : `\\x${type.toString(16).padStart(2, '0')}`;
}

/**
 * Run reset_query_list on an idle connection (pgpool: `ABORT` only when not idle),
 * each as its own Query, all written at once. Resolves true when every query
 * succeeded within the timeout.
 */
export function resetConnection(conn: BackendConnection, queries: string[], timeoutMs: number): Promise<boolean> {
  const list = queries.filter((q) => !(conn.txStatus === TxStatus.Idle && /^\s*abort\s*$/i.test(q)));
  if (list.length === 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    let expected = list.length;
    let failed = false;
    const sink: FrameSink = {
      passAction: DROP,
      onMessage(type, buf, start, end) {
        if (type === BE.ReadyForQuery) {
          conn.txStatus = buf[start];
          if (--expected === 0) done(!failed && conn.txStatus === TxStatus.Idle);
        } else if (type === BE.ErrorResponse) {
          failed = true;
        } else {
          const k = readCString(buf, start, end);
          const v = k && readCString(buf, k[1], end);
          if (k && v) conn.params.set(k[0], v[0]);
        }
        return DROP;
      },
      emit() {},
      onFramingError() {
        done(false);
      },
    };
    const scanner = new MessageScanner(sink, BACKEND_DECODE, 0x7fffffff);
    const onData = (c: Buffer): void => {
      scanner.push(c);
    };
    const onClose = (): void => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    let finished = false;
    function done(ok: boolean): void {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      conn.socket.removeListener('data', onData);
      conn.socket.removeListener('close', onClose);
      resolve(ok);
    }
    conn.socket.on('data', onData);
    conn.socket.on('close', onClose);
    conn.socket.resume();
    conn.socket.write(Buffer.concat(list.map(queryMessage)));
  });
}

export function queryMessage(sql: string): Buffer {
  const n = Buffer.byteLength(sql);
  const b = Buffer.allocUnsafe(6 + n);
  b[0] = FE.Query;
  b.writeUInt32BE(5 + n, 1);
  b.write(sql, 5);
  b[5 + n] = 0;
  return b;
}
