/**
 * The client-facing listener: accepts connections, reads the start-up packet
 * (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage), admits the client
 * within num_init_children and hands it to a Session. Also owns the periodic
 * upkeep (the janitor): connection_life_time and client_idle_limit.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promises as dns } from 'node:dns';
import type { Config } from './config/types.js';
import type { Logger } from './log.js';
import { CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SQLSTATE, SSL_REQUEST_CODE } from './protocol/constants.js';
import { PgError, errorResponse, negotiateProtocolVersion, parseStartupParams } from './protocol/messages.js';
import { ConnectionCache } from './pool/cache.js';
import { setDefaultBackendTls } from './pool/connector.js';
import type { BackendSecret } from './auth/backend.js';
import type { ClientTlsState } from './auth/frontend.js';
import { Authenticator } from './auth/authenticator.js';
import { backendTlsFromConfig, buildServerTls, upgradeClient, type ServerTls } from './tls.js';
import { Session, SessionRegistry, type SessionContext } from './session/session.js';
import { NodeTable } from './cluster/nodes.js';
import { ClientGate } from './session/gate.js';
import { Router } from './router/router.js';

/** PostgreSQL's limit on a start-up packet (MAX_STARTUP_PACKET_LENGTH). */
const MAX_STARTUP_PACKET = 10000;
const N = Buffer.from('N');
const S = Buffer.from('S');

/** A client between accept() and admission. */
interface Pending {
  raw: net.Socket;
  /** Came in on the Unix-domain socket (pool_hba `local` records; no TLS there, as PostgreSQL). */
  local: boolean;
  /** The socket the protocol runs on (raw, or TLS over it). */
  socket: net.Socket;
  remote: string;
  tls: ClientTlsState | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Start-up ended (admitted, refused, closed or timed out). */
  done: boolean;
  /** The authentication exchange has started. */
  authenticating: boolean;
}

export interface RelayOptions {
  config: Config;
  log: Logger;
  nodes?: NodeTable;
  backendSecret?: (user: string) => BackendSecret | undefined;
}

export class Relay implements SessionContext {
  private cfg: Config;
  readonly log: Logger;
  readonly nodes: NodeTable;
  readonly cache: ConnectionCache;
  readonly router: Router;
  readonly registry = new SessionRegistry();
  readonly gate: ClientGate;
  private readonly servers: net.Server[] = [];
  private janitor: NodeJS.Timeout | undefined;
  /** Sockets still in start-up (not yet sessions). */
  private readonly starting = new Set<net.Socket>();
  private readonly sessions = new Set<Session>();
  private stopping = false;
  readonly auth: Authenticator;
  private serverTls: ServerTls | undefined;

  // Hooks set by src/services.ts (cluster manager, admin commands, statistics, metrics).
  countStatement?: SessionContext['countStatement'];
  countError?: SessionContext['countError'];
  reportBackendError?: SessionContext['reportBackendError'];
  waitForPrimary?: SessionContext['waitForPrimary'];
  adminCommand?: SessionContext['adminCommand'];
  metrics?: SessionContext['metrics'];

  constructor(opts: RelayOptions) {
    this.cfg = opts.config;
    this.log = opts.log;
    this.nodes = opts.nodes ?? new NodeTable(opts.config.backends);
    this.cache = new ConnectionCache(cacheLimits(opts.config));
    this.router = new Router(opts.config, this.nodes);
    this.gate = new ClientGate(opts.config.num_init_children);
    try {
      this.serverTls = buildServerTls(opts.config);
    } catch (e) {
      this.log.error(
        { err: (e as Error).message, ssl_cert: opts.config.ssl_cert, ssl_key: opts.config.ssl_key },
        'could not load the SSL certificate or key: frontend TLS disabled',
      );
      this.serverTls = undefined;
    }
    if (opts.config.ssl && (!opts.config.ssl_key || !opts.config.ssl_cert))
      this.log.warn('ssl = on but ssl_key or ssl_cert is empty: frontend TLS disabled');
    try {
      setDefaultBackendTls(backendTlsFromConfig(opts.config));
    } catch (e) {
      this.log.error(
        { err: (e as Error).message, backend_ssl_root_cert: opts.config.backend_ssl_root_cert },
        'could not read backend_ssl_root_cert',
      );
      setDefaultBackendTls({
        mode:
          opts.config.backend_ssl_mode === 'prefer' && !opts.config.ssl
            ? 'disable'
            : (opts.config.backend_ssl_mode as 'disable'),
      });
    }
    this.auth = new Authenticator({
      config: () => this.cfg,
      log: this.log,
      nodes: this.nodes,
      cache: this.cache,
      ssl: this.serverTls !== undefined,
      backendSecret: opts.backendSecret,
    });
  }

  /** Frontend TLS is configured (SSLRequest answered 'S'). */
  get tlsEnabled(): boolean {
    return this.serverTls !== undefined;
  }

  /**
   * Re-read pool_hba.conf (when enable_pool_hba is on) and pool_passwd, as on
   * SIGHUP. Call after setConfig() so enable_pool_hba / hba_file changes apply.
   */
  reloadAuth(): { ok: boolean; errors: string[] } {
    return this.auth.reload();
  }

  config(): Config {
    return this.cfg;
  }

  backendSecret(user: string): BackendSecret | undefined {
    return this.auth.backendSecret(user);
  }

  /** Replace the configuration (reload). Only reloadable settings take effect. */
  setConfig(c: Config): void {
    this.router.reconfigure(c);
    this.cfg = c;
    this.cache.setLimits(cacheLimits(c));
  }

  /** Accepting clients (listening and not stopping). */
  get listening(): boolean {
    return this.servers.length > 0 && !this.stopping;
  }

  get activeSessions(): number {
    return this.sessions.size;
  }

  async listen(): Promise<Array<{ host: string; port: number }>> {
    const hosts = listenHosts(this.cfg.listen_addresses);
    const bound: Array<{ host: string; port: number }> = [];
    for (const host of hosts) {
      const server = net.createServer({ noDelay: true }, (s) => this.accept(s));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(
          {
            host,
            port: this.cfg.port,
            backlog: Math.max(64, this.cfg.num_init_children * this.cfg.listen_backlog_multiplier),
          },
          () => {
            server.removeListener('error', reject);
            resolve();
          },
        );
      });
      server.on('error', (e) => this.log.error({ err: e.message }, 'listener error'));
      const a = server.address() as net.AddressInfo;
      bound.push({ host: a.address, port: a.port });
      this.servers.push(server);
    }
    const port = bound[0]?.port ?? this.cfg.port;
    for (const dir of this.cfg.unix_socket_directories) {
      const file = path.join(dir, `.s.PGSQL.${port}`);
      try {
        await this.listenUnix(file);
        bound.push({ host: file, port });
      } catch (e) {
        // As PostgreSQL: a socket directory that cannot be used is reported, TCP still serves.
        this.log.warn({ unix_socket: file, err: (e as Error).message }, 'could not listen on the Unix-domain socket');
      }
    }
    this.janitor = setInterval(() => this.upkeep(), 1000);
    this.janitor.unref();
    this.log.info({ listen: bound }, 'pgrelay accepting connections');
    return bound;
  }

  /** Listen on a Unix-domain socket file, replacing a stale one left by a dead process. */
  private async listenUnix(file: string): Promise<void> {
    if (fs.existsSync(file)) {
      const alive = await new Promise<boolean>((resolve) => {
        const probe = net.connect({ path: file });
        probe.once('connect', () => {
          probe.destroy();
          resolve(true);
        });
        probe.once('error', () => resolve(false));
      });
      if (alive) throw new Error(`another server is listening on ${file}`);
      fs.unlinkSync(file);
    }
    const server = net.createServer((s) => this.accept(s, true));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(
        { path: file, backlog: Math.max(64, this.cfg.num_init_children * this.cfg.listen_backlog_multiplier) },
        () => {
          server.removeListener('error', reject);
          resolve();
        },
      );
    });
    server.on('error', (e) => this.log.error({ err: e.message }, 'listener error'));
    fs.chmodSync(file, this.cfg.unix_socket_permissions);
    this.servers.push(server);
  }

  /**
   * Stop accepting; let sessions finish for up to `graceMs`, then close them.
   * Cached connections are closed.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    // Stop accepting now; close()'s callback would wait for every open connection.
    for (const s of this.servers) s.close();
    for (const s of this.starting) s.destroy();
    this.gate.rejectAll();
    const deadline = Date.now() + graceMs;
    while (this.sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const s of [...this.sessions])
      s.fatal(
        new PgError(
          SQLSTATE.adminShutdown,
          'terminating connection due to administrator command',
          'FATAL',
          'pgrelay is shutting down.',
        ),
      );
    // Give resets of clean sessions a moment to finish, then drop the cache.
    await new Promise((r) => setTimeout(r, 50));
    this.cache.closeAll();
    if (this.janitor) clearInterval(this.janitor);
    this.log.info('pgrelay stopped');
  }

  private upkeep(): void {
    this.cache.sweep();
    const global = this.cfg.client_idle_limit;
    const now = Date.now();
    for (const s of this.sessions) {
      // client_idle_limit may be changed per session with PGPOOL SET.
      const own = s.adminParams.get('client_idle_limit');
      const limit = typeof own === 'number' ? own : global;
      if (limit > 0 && !s.busy && now - s.lastActivity >= limit * 1000) {
        s.log.info({ client_idle_limit: limit }, 'closing idle client');
        s.fatal(
          new PgError(
            SQLSTATE.idleSessionTimeout,
            `terminating connection due to client_idle_limit: idle for more than ${limit} s`,
          ),
        );
      }
    }
  }

  // ---- start-up

  /**
   * A new client: SSLRequest / GSSENCRequest / direct TLS / CancelRequest /
   * StartupMessage, then authentication, then admission (a num_init_children
   * slot). The whole sequence up to admission is bounded by
   * authentication_timeout and does not hold a slot, so stalled or half-open
   * clients cannot exhaust them.
   */
  private accept(raw: net.Socket, local = false): void {
    if (this.stopping) {
      raw.destroy();
      return;
    }
    if (!local) {
      raw.setNoDelay(true);
      raw.setKeepAlive(true, 60_000);
    }
    this.starting.add(raw);
    const p: Pending = {
      raw,
      local,
      socket: raw,
      remote: local ? '[local]' : `${raw.remoteAddress ?? ''}:${raw.remotePort ?? ''}`,
      tls: undefined,
      timer: undefined,
      done: false,
      authenticating: false,
    };
    const limit = this.cfg.authentication_timeout;
    if (limit > 0) {
      p.timer = setTimeout(() => {
        if (p.done) return;
        this.log.info(
          { remote: p.remote, authentication_timeout: limit },
          p.authenticating ? 'authentication timed out' : 'no complete start-up packet within authentication_timeout',
        );
        this.refuse(
          p,
          p.authenticating
            ? new PgError(SQLSTATE.queryCanceled, 'canceling authentication due to timeout')
            : new PgError(
                SQLSTATE.protocolViolation,
                `no complete start-up packet within authentication_timeout (${limit} s)`,
              ),
        );
        p.socket.destroy();
      }, limit * 1000);
    }
    raw.on('error', (e) => this.log.debug({ remote: p.remote, err: e.message }, 'client socket error during start-up'));
    raw.once('close', () => this.endStartup(p));
    this.handshake(p).catch((e: unknown) => {
      this.log.error(
        { remote: p.remote, err: e instanceof Error ? (e.stack ?? e.message) : String(e) },
        'start-up failed',
      );
      this.endStartup(p);
      raw.destroy();
    });
  }

  private endStartup(p: Pending): void {
    p.done = true;
    if (p.timer) clearTimeout(p.timer);
    p.timer = undefined;
    this.starting.delete(p.raw);
  }

  private async handshake(p: Pending): Promise<void> {
    let reader = new StartupReader(p.socket);
    let sslAsked = false;
    let gssAsked = false;
    for (;;) {
      const packet = await reader.next();
      if (p.done) {
        reader.detach();
        return;
      }
      if (packet === undefined) return; // closed
      if (typeof packet === 'string') {
        reader.detach();
        return this.refuse(p, new PgError(SQLSTATE.protocolViolation, packet));
      }
      if (packet === DIRECT_TLS) {
        // PostgreSQL 17 sslnegotiation=direct: a TLS ClientHello instead of a start-up packet.
        const leftover = reader.detach();
        if (!this.serverTls || p.local) {
          this.log.info({ remote: p.remote }, 'direct TLS connection refused: ssl is not configured');
          this.endStartup(p);
          p.raw.destroy();
          return;
        }
        p.raw.pause();
        p.raw.unshift(leftover);
        if (!(await this.startTls(p, true))) return;
        sslAsked = true;
        gssAsked = true;
        reader = new StartupReader(p.socket);
        continue;
      }
      const len = packet.length;
      const code = packet.readUInt32BE(4);
      if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
        const isSsl = code === SSL_REQUEST_CODE;
        if (len !== 8 || p.tls || (isSsl ? sslAsked : gssAsked)) {
          reader.detach();
          return this.refuse(p, new PgError(SQLSTATE.protocolViolation, 'unexpected SSL or GSS negotiation request'));
        }
        if (isSsl) sslAsked = true;
        else gssAsked = true;
        if (!isSsl || !this.serverTls || p.local) {
          p.socket.write(N);
          continue;
        }
        const leftover = reader.detach();
        if (leftover.length > 0) {
          // CVE-2021-23214: nothing may be buffered under the TLS handshake.
          return this.refuse(
            p,
            new PgError(
              SQLSTATE.protocolViolation,
              'received unencrypted data after SSL request',
              'FATAL',
              'This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.',
            ),
          );
        }
        p.socket.write(S);
        if (!(await this.startTls(p, false))) return;
        reader = new StartupReader(p.socket);
        continue;
      }
      const leftover = reader.detach();
      if (code === CANCEL_REQUEST_CODE) {
        this.endStartup(p);
        if (len === 16) this.handleCancel(packet.readInt32BE(8), packet.readInt32BE(12), p.remote);
        p.socket.destroy();
        return;
      }
      if (leftover.length > 0) p.socket.unshift(leftover);
      return this.startup(p, packet, code);
    }
  }

  /** TLS handshake on the client socket; false when it failed (the socket is closed). */
  private async startTls(p: Pending, direct: boolean): Promise<boolean> {
    const st = this.serverTls as ServerTls;
    try {
      const limit = this.cfg.authentication_timeout;
      const u = await upgradeClient(p.raw, st, limit > 0 ? limit * 1000 : 60_000);
      p.socket = u.socket;
      p.tls = {
        endPoint: st.endPoint,
        verifiedCN: u.verifiedCN,
        presentedCert: u.presentedCert,
        verifyError: u.verifyError,
      };
      if (direct && u.alpn !== 'postgresql') {
        this.refuse(
          p,
          new PgError(
            SQLSTATE.protocolViolation,
            'received direct SSL connection request without ALPN protocol negotiation extension',
          ),
        );
        return false;
      }
      if (p.done) {
        u.socket.destroy();
        return false;
      }
      return true;
    } catch (e) {
      this.log.info({ remote: p.remote, err: (e as Error).message }, 'TLS handshake with client failed');
      this.endStartup(p);
      p.raw.destroy();
      return false;
    }
  }

  private handleCancel(pid: number, secret: number, remote: string): void {
    const s = this.registry.find(pid, secret);
    if (!s) {
      this.log.info({ remote, pid }, 'invalid cancel key');
      return;
    }
    s.cancel();
  }

  private async startup(p: Pending, packet: Buffer, version: number): Promise<void> {
    const major = version >>> 16;
    const minor = version & 0xffff;
    if (major !== 3) {
      this.refuse(
        p,
        new PgError(
          SQLSTATE.featureNotSupported,
          `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`,
        ),
      );
      return;
    }
    const parsed = parseStartupParams(packet, 8, packet.length);
    if (parsed instanceof PgError) {
      this.refuse(p, parsed);
      return;
    }
    const params = new Map<string, string>();
    const unrecognized: string[] = [];
    for (const [k, v] of parsed) {
      if (k.startsWith('_pq_.')) unrecognized.push(k);
      else params.set(k, v);
    }
    if (minor > 0 || unrecognized.length > 0) p.socket.write(negotiateProtocolVersion(0, unrecognized));
    const user = params.get('user');
    if (!user) {
      this.refuse(
        p,
        new PgError(SQLSTATE.invalidAuthorizationSpecification, 'no PostgreSQL user name specified in startup packet'),
      );
      return;
    }
    if (!params.has('database')) params.set('database', user);
    if (
      params.has('replication') &&
      params.get('replication') !== 'false' &&
      params.get('replication') !== 'off' &&
      params.get('replication') !== '0'
    ) {
      this.refuse(
        p,
        new PgError(
          SQLSTATE.featureNotSupported,
          'replication connections are not supported through pgrelay',
          'FATAL',
          undefined,
          'Connect to the PostgreSQL server directly for replication.',
        ),
      );
      return;
    }
    p.authenticating = true;
    const auth = await this.auth.authenticate({
      socket: p.socket,
      params,
      address: p.local ? undefined : p.raw.remoteAddress,
      local: p.local,
      tls: p.tls,
    });
    if (!auth || p.done || p.socket.destroyed || this.stopping) {
      this.endStartup(p);
      if (auth) p.socket.destroy();
      return;
    }
    this.endStartup(p);
    void this.admit(p.socket, params, p.remote, auth.secret);
  }

  private async admit(
    socket: net.Socket,
    params: Map<string, string>,
    remote: string,
    authSecret: BackendSecret,
  ): Promise<void> {
    const cfg = this.cfg;
    const reserved = cfg.reserved_connections;
    if (reserved > 0 && this.gate.active >= cfg.num_init_children - reserved) {
      this.refuseSocket(socket, new PgError(SQLSTATE.tooManyConnections, 'Sorry, too many clients already'));
      return;
    }
    let closedWhileWaiting = false;
    const onClose = (): void => {
      closedWhileWaiting = true;
    };
    socket.once('close', onClose);
    socket.on('error', () => undefined);
    const waitStart = Date.now();
    const ok = await this.gate.acquire(cfg.client_queue_timeout * 1000, () => closedWhileWaiting);
    socket.removeListener('close', onClose);
    this.metrics?.slotWait((Date.now() - waitStart) / 1000);
    if (!ok) {
      if (!closedWhileWaiting)
        this.refuseSocket(
          socket,
          new PgError(
            SQLSTATE.tooManyConnections,
            `sorry, too many clients already: all ${cfg.num_init_children} session slots (num_init_children) stayed busy for client_queue_timeout (${cfg.client_queue_timeout} s)`,
            'FATAL',
            undefined,
            "Retry later, or raise num_init_children (and the backends' max_connections).",
          ),
        );
      return;
    }
    if (closedWhileWaiting || socket.destroyed || this.stopping) {
      this.gate.release();
      socket.destroy();
      return;
    }
    const session = new Session(this, socket, params, remote, authSecret);
    this.sessions.add(session);
    this.metrics?.clientConnected();
    if (cfg.log_connections) {
      const fields = { remote, application_name: session.applicationName };
      // log_hostname: resolve the client's host name without delaying the session.
      if (cfg.log_hostname && socket.remoteAddress)
        void reverseLookup(socket.remoteAddress).then((hostname) =>
          session.log.info({ ...fields, hostname }, 'connection received'),
        );
      else session.log.info(fields, 'connection received');
    }
    const startedAt = Date.now();
    await session.start(() => {
      this.sessions.delete(session);
      this.gate.release();
      if (this.cfg.log_disconnections)
        session.log.info({ remote, durationMs: Date.now() - startedAt }, 'disconnection');
    });
  }

  private refuse(p: Pending, err: PgError): void {
    this.endStartup(p);
    this.refuseSocket(p.socket, err);
  }

  private refuseSocket(socket: net.Socket, err: PgError): void {
    if (!socket.destroyed && socket.writable) socket.end(errorResponse(err.toFields()));
    socket.setTimeout(2000, () => socket.destroy());
  }
}

const DIRECT_TLS = Symbol('direct-tls');

/**
 * Reads start-up packets (Int32 length, then the rest) from a client socket.
 * next() resolves with a packet, DIRECT_TLS when the stream starts with a TLS
 * handshake record, an error message string for a bad length, or undefined
 * when the socket closed.
 */
class StartupReader {
  private buf: Buffer = Buffer.alloc(0);
  private fresh = true;
  private closed = false;
  private waiter: ((r: Buffer | string | typeof DIRECT_TLS | undefined) => void) | undefined;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    if (socket.destroyed) this.closed = true;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.pump();
  };
  private readonly onClose = (): void => {
    this.closed = true;
    this.pump();
  };

  private pump(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.fresh && this.buf.length >= 1 && this.buf[0] === 0x16) {
      this.waiter = undefined;
      w(DIRECT_TLS);
      return;
    }
    if (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len < 8 || len > MAX_STARTUP_PACKET) {
        this.waiter = undefined;
        w(`invalid length of startup packet (${len} bytes)`);
        return;
      }
      if (this.buf.length >= len) {
        const packet = this.buf.subarray(0, len);
        this.buf = this.buf.subarray(len);
        this.fresh = false;
        this.waiter = undefined;
        w(packet);
        return;
      }
    }
    if (this.closed) {
      this.waiter = undefined;
      w(undefined);
    }
  }

  next(): Promise<Buffer | string | typeof DIRECT_TLS | undefined> {
    return new Promise((resolve) => {
      this.waiter = resolve;
      this.pump();
    });
  }

  /** Stop reading; returns bytes read past the last packet. */
  detach(): Buffer {
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('close', this.onClose);
    const b = this.buf;
    this.buf = Buffer.alloc(0);
    return b;
  }
}

/** Reverse DNS of a client address, '' when it has none or takes longer than a second. */
function reverseLookup(address: string): Promise<string> {
  const ip = address.startsWith('::ffff:') ? address.slice(7) : address;
  return Promise.race([
    dns.reverse(ip).then(
      (names) => names[0] ?? '',
      () => '',
    ),
    new Promise<string>((resolve) => setTimeout(() => resolve(''), 1000).unref()),
  ]);
}

function cacheLimits(c: Config): { maxPerKey: number; maxIdleTotal: number; lifeTimeSec: number } {
  return {
    maxPerKey: c.max_pool,
    maxIdleTotal: Math.max(1, c.max_pool * c.num_init_children),
    lifeTimeSec: c.connection_life_time,
  };
}

/** pgpool's listen_addresses: '*' = all, else a comma-separated list. */
export function listenHosts(v: string): string[] {
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (list.length === 0) return ['127.0.0.1'];
  if (list.includes('*')) return ['::'];
  return list;
}
