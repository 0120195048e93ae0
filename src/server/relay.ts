/**
 * The proxy process's client side in one object: configuration, node table,
 * connection cache, router and session registry (what every Session runs in:
 * it implements SessionContext), and the path of a client through
 * listener.ts → startup.ts → auth/ → admission.ts, with the janitor's upkeep.
 */
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { SQLSTATE } from '../protocol/constants.js';
import { PgError } from '../protocol/messages.js';
import { ConnectionCache } from '../pool/cache.js';
import { type BackendConnection, setDefaultBackendTls } from '../pool/connector.js';
import { poolSettingsOf } from '../pool/pool-settings.js';
import { type KeyLimits, type PoolLimits, ServerPools } from '../pool/server-pool.js';
import { StatementNames } from '../session/pooled-statements.js';
import type { BackendSecret } from '../auth/backend.js';
import { Authenticator } from '../auth/authenticator.js';
import { backendTlsFromConfig, buildServerTls, type ServerTls } from '../tls.js';
import { NO_SESSION_SERVICES, type SessionContext, type SessionServices } from '../session/context.js';
import { SessionRegistry } from '../session/registry.js';
import { WriteHorizon } from '../session/write-horizon.js';
import type { Session } from '../session/session.js';
import { NodeTable } from '../cluster/nodes.js';
import { Router } from '../router/router.js';
import { Admission, type ClientGates } from './admission.js';
import { Janitor } from './janitor.js';
import { Listener } from './listener.js';
import { Startup } from './startup.js';

export interface RelayOptions {
  config: Config;
  log: Logger;
  nodes?: NodeTable;
  backendSecret?: (user: string) => BackendSecret | undefined;
}

export class Relay implements SessionContext<Session> {
  private cfg: Config;
  readonly log: Logger;
  readonly nodes: NodeTable;
  readonly cache: ConnectionCache;
  readonly pools: ServerPools<BackendConnection>;
  readonly statementNames = new StatementNames();
  readonly router: Router;
  readonly registry = new SessionRegistry<Session>();
  readonly horizon = new WriteHorizon();
  readonly auth: Authenticator;
  private readonly serverTls: ServerTls | undefined;
  private readonly listener: Listener;
  private readonly startup: Startup;
  private readonly admission: Admission;
  private readonly janitor: Janitor;
  private stopping = false;

  /** Set by src/services.ts (cluster manager, admin commands, statistics, metrics). */
  services: SessionServices = NO_SESSION_SERVICES;

  constructor(opts: RelayOptions) {
    this.cfg = opts.config;
    this.log = opts.log;
    this.nodes = opts.nodes ?? new NodeTable(opts.config.backends);
    this.cache = new ConnectionCache(cacheLimits(opts.config));
    this.pools = new ServerPools<BackendConnection>(
      poolLimits(opts.config),
      (ms) => this.services.metrics.poolWait(ms / 1000),
      keyLimits(opts.config),
    );
    this.router = new Router(opts.config, this.nodes);
    // Write positions read before a new primary belong to another WAL history.
    this.nodes.on('primary', () => this.horizon.newPrimary());
    this.serverTls = frontendTls(opts.config, this.log);
    applyBackendTls(opts.config, this.log);
    const config = (): Config => this.cfg;
    const stopping = (): boolean => this.stopping;
    this.auth = new Authenticator({
      config,
      log: this.log,
      nodes: this.nodes,
      cache: this.cache,
      ssl: this.serverTls !== undefined,
      backendSecret: opts.backendSecret,
    });
    this.admission = new Admission({ context: this, stopping });
    this.startup = new Startup({
      config,
      log: this.log,
      serverTls: this.serverTls,
      auth: this.auth,
      registry: this.registry,
      stopping,
      admit: (socket, params, remote, secret, input) =>
        void this.admission.admit(socket, params, remote, secret, input),
    });
    this.listener = new Listener({ config, log: this.log, onConnection: (s, local) => this.startup.accept(s, local) });
    this.janitor = new Janitor({ config, cache: this.cache, pools: this.pools, sessions: this.admission.sessions });
  }

  /** Frontend TLS is configured (SSLRequest answered 'S'). */
  get tlsEnabled(): boolean {
    return this.serverTls !== undefined;
  }

  /** The client slots (num_init_children, max_client_conn). */
  get gate(): ClientGates {
    return this.admission.gate;
  }

  /**
   * Re-read pool_hba.conf (when enable_pool_hba is on) and pool_passwd, as on
   * SIGHUP. Call after setConfig() so enable_pool_hba / hba_file changes apply.
   */
  reloadAuth(): { ok: boolean; errors: string[] } {
    return this.auth.reload();
  }

  /** pool_hba.conf failed to load at start (enable_pool_hba = on): the error, naming file:line. */
  get hbaStartupError(): string | undefined {
    return this.auth.hbaStartupError;
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
    this.pools.setLimits(poolLimits(c), keyLimits(c));
  }

  /** Accepting clients (listening and not stopping). */
  get listening(): boolean {
    return this.listener.bound && !this.stopping;
  }

  get activeSessions(): number {
    return this.admission.sessions.size;
  }

  async listen(): Promise<Array<{ host: string; port: number }>> {
    const bound = await this.listener.listen();
    this.janitor.start();
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
    this.listener.close();
    this.startup.abortAll();
    this.gate.rejectAll();
    const sessions = this.admission.sessions;
    const deadline = Date.now() + graceMs;
    while (sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const s of [...sessions])
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
    this.pools.closeIdle(undefined, true);
    this.janitor.stop();
    this.log.info('pgrelay stopped');
  }
}

/** The frontend TLS context (ssl = on), or undefined: TLS off, or the certificate could not be loaded (logged). */
function frontendTls(config: Config, log: Logger): ServerTls | undefined {
  let tls: ServerTls | undefined;
  try {
    tls = buildServerTls(config);
  } catch (e) {
    log.error(
      { err: (e as Error).message, ssl_cert: config.ssl_cert, ssl_key: config.ssl_key },
      'could not load the SSL certificate or key: frontend TLS disabled',
    );
    tls = undefined;
  }
  if (config.ssl && (!config.ssl_key || !config.ssl_cert))
    log.warn('ssl = on but ssl_key or ssl_cert is empty: frontend TLS disabled');
  return tls;
}

/** The process-wide TLS policy for backend connections; an unreadable backend_ssl_root_cert leaves Node's CA store. */
function applyBackendTls(config: Config, log: Logger): void {
  try {
    setDefaultBackendTls(backendTlsFromConfig(config));
  } catch (e) {
    log.error(
      { err: (e as Error).message, backend_ssl_root_cert: config.backend_ssl_root_cert },
      'could not read backend_ssl_root_cert',
    );
    setDefaultBackendTls({
      mode: config.backend_ssl_mode === 'prefer' && !config.ssl ? 'disable' : (config.backend_ssl_mode as 'disable'),
    });
  }
}

function cacheLimits(c: Config): { maxPerKey: number; maxIdleTotal: number; lifeTimeSec: number } {
  return {
    maxPerKey: c.max_pool,
    maxIdleTotal: Math.max(1, c.max_pool * c.num_init_children),
    lifeTimeSec: c.connection_life_time,
  };
}

/** database_pool_settings, user_pool_settings: the limits of one (database, user). */
function keyLimits(c: Config): ((database: string, user: string) => KeyLimits) | undefined {
  const settings = poolSettingsOf(c);
  // None configured: every pool has the global limits.
  if (settings.databases.size === 0 && settings.users.size === 0) return undefined;
  return (database, user) => {
    const s = settings.for(database, user);
    return {
      poolSize: s.pool_size,
      reserveSize: s.reserve_pool_size,
      maxDbConnections: s.max_db_connections,
      maxUserConnections: s.max_user_connections,
    };
  };
}

function poolLimits(c: Config): PoolLimits {
  return {
    poolSize: c.default_pool_size,
    maxDbConnections: c.max_db_connections,
    maxUserConnections: c.max_user_connections,
    reserveSize: c.reserve_pool_size,
    reserveTimeoutMs: c.reserve_pool_timeout * 1000,
    idleTimeoutMs: c.server_idle_timeout * 1000,
    lifetimeMs: c.server_lifetime * 1000,
  };
}
