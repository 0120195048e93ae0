/**
 * Periodic upkeep, once a second: the connection cache drops connections idle
 * longer than connection_life_time, and clients idle longer than
 * client_idle_limit (global, or per session with PGPOOL SET) are closed.
 */
import type { Config } from '../config/types.js';
import { SQLSTATE } from '../protocol/constants.js';
import { PgError } from '../protocol/messages.js';
import type { ConnectionCache } from '../pool/cache.js';
import type { Session } from '../session/session.js';

export interface JanitorOptions {
  config: () => Config;
  cache: ConnectionCache;
  /** pool_mode = transaction: idle pooled connections past server_idle_timeout are closed. */
  pools: { sweep(): number };
  sessions: Iterable<Session>;
}

export class Janitor {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: JanitorOptions) {}

  start(): void {
    this.timer = setInterval(() => this.upkeep(), 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private upkeep(): void {
    this.opts.cache.sweep();
    this.opts.pools.sweep();
    const global = this.opts.config().client_idle_limit;
    const now = Date.now();
    for (const s of this.opts.sessions) {
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
}
