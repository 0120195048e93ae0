/**
 * The proxy's authentication service: owns the loaded pool_hba.conf and
 * pool_passwd (loaded at start, re-read on reload), authenticates each client
 * (src/auth/frontend.ts) and says what its session logs into the backends with.
 *
 * With pool_hba off the client is asked for what the primary asks for: the
 * method is learned by a probe login, one per user, at most
 * MAX_CONCURRENT_PROBES at a time, cached briefly (./method-probe.ts).
 * A clear-text password pgrelay cannot check itself is checked by logging into
 * the primary with it; that connection then goes into the cache for the session.
 *
 * SCRAM salts and the verifiers derived from clear-text pool_passwd entries come
 * from one ScramSecrets per process (./scram-secrets.ts), refreshed on reload.
 */
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import type { NodeTable } from '../cluster/nodes.js';
import { SQLSTATE } from '../protocol/constants.js';
import { PgError } from '../protocol/messages.js';
import { isCacheableDatabase, type ConnectionCache } from '../pool/cache.js';
import { connectBackend, probeAuthMethod, type ConnectOptions } from '../pool/connector.js';
import type { BackendAuthMethod, BackendSecret } from './backend.js';
import { loadPoolPasswd, secretFromPassword } from './credentials.js';
import { authenticateClient, type AuthSuccess, type ClientInfo } from './frontend.js';
import { loadHba, reloadHba, type HbaRule } from './hba.js';
import { type Departure, MethodProbes } from './method-probe.js';
import type { PoolPasswd } from './passwd.js';
import { ScramSecrets } from './scram-secrets.js';

export interface AuthenticatorOptions {
  config: () => Config;
  log: Logger;
  /** Where the primary is (probes and password checks go there). */
  nodes: NodeTable;
  /** Receives the connection opened to check a client's password. */
  cache: ConnectionCache;
  /** Frontend TLS is configured (pool_hba.conf hostssl records are valid). */
  ssl: boolean;
  /** Replaces pool_passwd as the source of the backends' passwords. */
  backendSecret?: (user: string) => BackendSecret | undefined;
}

export class Authenticator {
  /** pool_hba.conf rules (enable_pool_hba = on), else undefined. */
  private hbaRules: HbaRule[] | undefined;
  private passwd: PoolPasswd | undefined;
  /** pool_hba off: the primary's method, learned by bounded, shared probes. */
  private readonly probes = new MethodProbes({ probe: (params) => this.probePrimary(params) });
  /** The secret key of SCRAM mock salts and the verifiers derived from clear-text entries: made at start-up. */
  private readonly scram = new ScramSecrets();

  /** Why pool_hba.conf could not be loaded at start (pgrelay refuses to start then). */
  hbaStartupError: string | undefined;

  constructor(private readonly opts: AuthenticatorOptions) {
    this.load(true);
  }

  /**
   * Re-read pool_hba.conf (when enable_pool_hba is on) and pool_passwd, as on
   * SIGHUP. A file that fails to load keeps the previous rules/entries (logged).
   */
  reload(): { ok: boolean; errors: string[] } {
    return this.load(false);
  }

  /** The loaded pool_passwd (undefined when pool_passwd = ''). */
  poolPasswd(): PoolPasswd | undefined {
    return this.passwd;
  }

  /** What a session logs into the backends with when client authentication gave it nothing better. */
  backendSecret(user: string): BackendSecret | undefined {
    if (this.opts.backendSecret) return this.opts.backendSecret(user);
    return secretFromPassword(this.passwd?.getPasswordFor(user));
  }

  /**
   * Run the exchange with a client after its StartupMessage. On success returns
   * the secret for its backends (the caller sends AuthenticationOk); on failure
   * the client got its FATAL error and the result is undefined.
   */
  authenticate(client: ClientInfo): Promise<AuthSuccess | undefined> {
    const socket = client.socket;
    // A client that leaves (or is cut off by authentication_timeout) stops waiting for a probe.
    const departure: Departure = {
      gone: () => socket.destroyed,
      onLeave: (leave) => {
        socket.once('close', leave);
        return () => socket.removeListener('close', leave);
      },
    };
    return authenticateClient(client, {
      config: this.opts.config(),
      log: this.opts.log,
      hba: this.hbaRules,
      passwd: this.passwd,
      scram: this.scram,
      backendMethod: (params) => this.probes.method(params, departure),
      verifyWithBackend: (params, secret) => this.verifyWithBackend(params, secret),
    });
  }

  private load(initial: boolean): { ok: boolean; errors: string[] } {
    const cfg = this.opts.config();
    const log = this.opts.log;
    const errors: string[] = [];
    this.probes.clear();
    if (cfg.enable_pool_hba) {
      const onWarning = (w: { file: string; line: number; message: string }): void =>
        log.warn({ file: w.file, line: w.line }, w.message);
      if (initial || this.hbaRules === undefined) {
        try {
          this.hbaRules = loadHba(cfg.hba_file, { ssl: this.opts.ssl, onWarning });
        } catch (e) {
          errors.push((e as Error).message);
          if (initial) this.hbaStartupError = (e as Error).message;
          log.error(
            { err: (e as Error).message },
            'could not load pool_hba.conf: every connection is rejected until it is fixed and reloaded',
          );
          this.hbaRules = [];
        }
      } else {
        const r = reloadHba(cfg.hba_file, this.hbaRules, { ssl: this.opts.ssl, onWarning });
        if (!r.ok) {
          const msg = r.errors.map((x) => `${x.file}:${x.line}: ${x.message}`).join('; ');
          errors.push(msg);
          log.error({ err: msg }, 'pool_hba.conf not reloaded: keeping the previous rules');
        }
        this.hbaRules = r.rules;
      }
    } else {
      this.hbaRules = undefined;
    }
    try {
      const p = loadPoolPasswd(cfg);
      for (const w of p?.warnings ?? []) log.warn({ pool_passwd: cfg.pool_passwd }, w);
      this.passwd = p;
      void this.scram.refresh(clearTextEntries(p));
    } catch (e) {
      errors.push((e as Error).message);
      log.error(
        { err: (e as Error).message, pool_passwd: cfg.pool_passwd },
        initial ? 'could not read pool_passwd' : 'pool_passwd not reloaded: keeping the previous entries',
      );
    }
    if (!initial && errors.length === 0)
      log.info(
        { enable_pool_hba: cfg.enable_pool_hba, rules: this.hbaRules?.length, users: this.passwd?.entries.length ?? 0 },
        'authentication files reloaded',
      );
    return { ok: errors.length === 0, errors };
  }

  /** A login to the primary with a client's start-up parameters; undefined while there is no primary. */
  private atPrimary(params: Map<string, string>): ConnectOptions | undefined {
    const node = this.opts.nodes.primaryNode();
    if (!node) return undefined;
    const connectTimeoutMs = this.opts.config().connect_timeout;
    return { nodeId: node.id, host: node.host, port: node.port, params, connectTimeoutMs };
  }

  /** One probe login to the primary with a client's start-up parameters (MethodProbes decides when). */
  private probePrimary(params: Map<string, string>): Promise<BackendAuthMethod> {
    const primary = this.atPrimary(params);
    if (!primary) return Promise.reject(noPrimary());
    return probeAuthMethod(primary);
  }

  /** Check a clear-text password pgrelay cannot check itself by logging into the primary with it. */
  private async verifyWithBackend(params: Map<string, string>, secret: BackendSecret): Promise<PgError | undefined> {
    const primary = this.atPrimary(params);
    if (!primary) return noPrimary();
    try {
      const conn = await connectBackend({ ...primary, secret: () => secret });
      if (this.opts.config().connection_cache && isCacheableDatabase(params.get('database') ?? ''))
        this.opts.cache.put(conn);
      else conn.close();
      return undefined;
    } catch (e) {
      return e instanceof PgError ? e : new PgError(SQLSTATE.connectionFailure, (e as Error).message);
    }
  }
}

/** The clear-text passwords of a pool_passwd (TEXT, AES, plain), by user: what SCRAM verifiers are derived from. */
function clearTextEntries(p: PoolPasswd | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of p?.entries ?? []) {
    if (out.has(e.user)) continue; // the first line of a user counts (PoolPasswd.get)
    const pw = p?.getPasswordFor(e.user);
    if (pw?.kind === 'plain') out.set(e.user, pw.password);
  }
  return out;
}

function noPrimary(): PgError {
  return new PgError(
    SQLSTATE.cannotConnectNow,
    'no primary node is available',
    'FATAL',
    undefined,
    'pgrelay is searching for the primary; retry shortly.',
  );
}
