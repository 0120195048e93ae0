/**
 * The client-facing listener: accepts connections, reads the start-up packet
 * (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage), admits the client
 * within num_init_children and hands it to a Session. Also owns the periodic
 * upkeep (the janitor): connection_life_time and client_idle_limit.
 */
import net from 'node:net';
import type { Config } from './config/types.js';
import type { Logger } from './log.js';
import { CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SQLSTATE, SSL_REQUEST_CODE } from './protocol/constants.js';
import { PgError, errorResponse, negotiateProtocolVersion, parseStartupParams } from './protocol/messages.js';
import { ConnectionCache } from './pool/cache.js';
import type { BackendSecret } from './pool/connector.js';
import { Session, SessionRegistry, type SessionContext } from './session/session.js';
import { NodeTable } from './cluster/nodes.js';
import { ClientGate } from './session/gate.js';

/** PostgreSQL's limit on a start-up packet (MAX_STARTUP_PACKET_LENGTH). */
const MAX_STARTUP_PACKET = 10000;
const N = Buffer.from('N');

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
  readonly registry = new SessionRegistry();
  readonly gate: ClientGate;
  private readonly servers: net.Server[] = [];
  private janitor: NodeJS.Timeout | undefined;
  /** Sockets still in start-up (not yet sessions). */
  private readonly starting = new Set<net.Socket>();
  private readonly sessions = new Set<Session>();
  private stopping = false;
  private readonly secretFn: (user: string) => BackendSecret | undefined;

  constructor(opts: RelayOptions) {
    this.cfg = opts.config;
    this.log = opts.log;
    this.nodes = opts.nodes ?? new NodeTable(opts.config.backends);
    this.cache = new ConnectionCache(cacheLimits(opts.config));
    this.gate = new ClientGate(opts.config.num_init_children);
    this.secretFn = opts.backendSecret ?? (() => undefined);
  }

  config(): Config {
    return this.cfg;
  }

  backendSecret(user: string): BackendSecret | undefined {
    return this.secretFn(user);
  }

  /** Replace the configuration (reload). Only reloadable settings take effect. */
  setConfig(c: Config): void {
    this.cfg = c;
    this.cache.setLimits(cacheLimits(c));
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
        server.listen({ host, port: this.cfg.port, backlog: Math.max(64, this.cfg.num_init_children * this.cfg.listen_backlog_multiplier) }, () => {
          server.removeListener('error', reject);
          resolve();
        });
      });
      server.on('error', (e) => this.log.error({ err: e.message }, 'listener error'));
      const a = server.address() as net.AddressInfo;
      bound.push({ host: a.address, port: a.port });
      this.servers.push(server);
    }
    this.janitor = setInterval(() => this.upkeep(), 1000);
    this.janitor.unref();
    this.log.info({ listen: bound }, 'pgrelay accepting connections');
    return bound;
  }

  /**
   * Stop accepting; let sessions finish for up to `graceMs`, then close them.
   * Cached connections are closed.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const s of this.starting) s.destroy();
    this.gate.rejectAll();
    const deadline = Date.now() + graceMs;
    while (this.sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const s of [...this.sessions]) s.fatal(new PgError(SQLSTATE.adminShutdown, 'terminating connection due to administrator command', 'FATAL', 'pgrelay is shutting down.'));
    // Give resets of clean sessions a moment to finish, then drop the cache.
    await new Promise((r) => setTimeout(r, 50));
    this.cache.closeAll();
    if (this.janitor) clearInterval(this.janitor);
    this.log.info('pgrelay stopped');
  }

  private upkeep(): void {
    this.cache.sweep();
    const limit = this.cfg.client_idle_limit;
    if (limit > 0) {
      const now = Date.now();
      for (const s of this.sessions) {
        if (!s.busy && now - s.lastActivity >= limit * 1000) {
          s.log.info({ client_idle_limit: limit }, 'closing idle client');
          s.fatal(new PgError(SQLSTATE.idleSessionTimeout, `terminating connection due to client_idle_limit: idle for more than ${limit} s`));
        }
      }
    }
  }

  // ---- start-up

  private accept(socket: net.Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    this.starting.add(socket);
    const remote = `${socket.remoteAddress ?? ''}:${socket.remotePort ?? ''}`;
    let buf: Buffer = Buffer.alloc(0);
    let negotiatedSsl = false;
    let finished = false;
    const timer = setTimeout(() => {
      this.refuse(socket, new PgError(SQLSTATE.protocolViolation, `no complete start-up packet within authentication_timeout (${this.cfg.authentication_timeout} s)`));
    }, Math.max(1, this.cfg.authentication_timeout) * 1000);

    const cleanup = (): void => {
      finished = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      this.starting.delete(socket);
    };
    socket.on('error', (e) => this.log.debug({ remote, err: e.message }, 'client socket error during start-up'));
    socket.once('close', () => {
      if (!finished) cleanup();
    });

    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (!finished && buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (len < 8 || len > MAX_STARTUP_PACKET) {
          cleanup();
          this.refuse(socket, new PgError(SQLSTATE.protocolViolation, `invalid length of startup packet (${len} bytes)`));
          return;
        }
        if (buf.length < len) return;
        const packet = buf.subarray(0, len);
        buf = buf.subarray(len);
        const code = packet.readUInt32BE(4);
        if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
          if (negotiatedSsl || len !== 8) {
            cleanup();
            this.refuse(socket, new PgError(SQLSTATE.protocolViolation, 'unexpected SSL or GSS negotiation request'));
            return;
          }
          negotiatedSsl = true;
          socket.write(N);
          continue;
        }
        if (code === CANCEL_REQUEST_CODE) {
          cleanup();
          if (len === 16) this.handleCancel(packet.readInt32BE(8), packet.readInt32BE(12), remote);
          socket.destroy();
          return;
        }
        cleanup();
        if (buf.length > 0) socket.unshift(buf);
        this.startup(socket, packet, code, remote);
        return;
      }
    };
    socket.on('data', onData);
  }

  private handleCancel(pid: number, secret: number, remote: string): void {
    const s = this.registry.find(pid, secret);
    if (!s) {
      this.log.info({ remote, pid }, 'invalid cancel key');
      return;
    }
    s.cancel();
  }

  private startup(socket: net.Socket, packet: Buffer, version: number, remote: string): void {
    const major = version >>> 16;
    const minor = version & 0xffff;
    if (major !== 3) {
      this.refuse(socket, new PgError(SQLSTATE.featureNotSupported, `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`));
      return;
    }
    const parsed = parseStartupParams(packet, 8, packet.length);
    if (parsed instanceof PgError) {
      this.refuse(socket, parsed);
      return;
    }
    const params = new Map<string, string>();
    const unrecognized: string[] = [];
    for (const [k, v] of parsed) {
      if (k.startsWith('_pq_.')) unrecognized.push(k);
      else params.set(k, v);
    }
    if (minor > 0 || unrecognized.length > 0) socket.write(negotiateProtocolVersion(0, unrecognized));
    const user = params.get('user');
    if (!user) {
      this.refuse(socket, new PgError(SQLSTATE.invalidAuthorizationSpecification, 'no PostgreSQL user name specified in startup packet'));
      return;
    }
    if (!params.has('database')) params.set('database', user);
    if (params.has('replication') && params.get('replication') !== 'false' && params.get('replication') !== 'off' && params.get('replication') !== '0') {
      this.refuse(socket, new PgError(SQLSTATE.featureNotSupported, 'replication connections are not supported through pgrelay', 'FATAL', undefined, 'Connect to the PostgreSQL server directly for replication.'));
      return;
    }
    void this.admit(socket, params, remote);
  }

  private async admit(socket: net.Socket, params: Map<string, string>, remote: string): Promise<void> {
    const cfg = this.cfg;
    const reserved = cfg.reserved_connections;
    if (reserved > 0 && this.gate.active >= cfg.num_init_children - reserved) {
      this.refuse(socket, new PgError(SQLSTATE.tooManyConnections, 'Sorry, too many clients already'));
      return;
    }
    let closedWhileWaiting = false;
    const onClose = (): void => {
      closedWhileWaiting = true;
    };
    socket.once('close', onClose);
    socket.on('error', () => undefined);
    const ok = await this.gate.acquire(cfg.client_queue_timeout * 1000, () => closedWhileWaiting);
    socket.removeListener('close', onClose);
    if (!ok) {
      if (!closedWhileWaiting)
        this.refuse(
          socket,
          new PgError(
            SQLSTATE.tooManyConnections,
            `sorry, too many clients already: all ${cfg.num_init_children} session slots (num_init_children) stayed busy for client_queue_timeout (${cfg.client_queue_timeout} s)`,
            'FATAL',
            undefined,
            'Retry later, or raise num_init_children (and the backends\' max_connections).',
          ),
        );
      return;
    }
    if (closedWhileWaiting || socket.destroyed || this.stopping) {
      this.gate.release();
      socket.destroy();
      return;
    }
    const session = new Session(this, socket, params, remote);
    this.sessions.add(session);
    if (cfg.log_connections) session.log.info({ remote, application_name: session.applicationName }, 'connection received');
    const startedAt = Date.now();
    await session.start(() => {
      this.sessions.delete(session);
      this.gate.release();
      if (this.cfg.log_disconnections) session.log.info({ remote, durationMs: Date.now() - startedAt }, 'disconnection');
    });
  }

  private refuse(socket: net.Socket, err: PgError): void {
    if (!socket.destroyed && socket.writable) socket.end(errorResponse(err.toFields()));
    socket.setTimeout(2000, () => socket.destroy());
    this.starting.delete(socket);
  }
}

function cacheLimits(c: Config): { maxPerKey: number; maxIdleTotal: number; lifeTimeSec: number } {
  return { maxPerKey: c.max_pool, maxIdleTotal: Math.max(1, c.max_pool * c.num_init_children), lifeTimeSec: c.connection_life_time };
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
