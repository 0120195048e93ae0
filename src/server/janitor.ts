/**
 * Periodic upkeep, once a second: the connection cache drops connections idle
 * longer than connection_life_time, and clients idle longer than
 * client_idle_limit (global, or per session with PGPOOL SET) are closed, those idle
 * inside a transaction longer than idle_transaction_timeout, and those whose request has
 * been outstanding longer than query_timeout.
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
    const cfg = this.opts.config();
    const global = cfg.client_idle_limit;
    const inTx = cfg.idle_transaction_timeout;
    const queryTimeout = cfg.query_timeout;
    const now = Date.now();
    for (const s of this.opts.sessions) {
      const own = s.adminParams.get('client_idle_limit');
      const limit = typeof own === 'number' ? own : global;
      const idle = now - s.lastActivity;
      if (s.busy) {
        // A request outstanding that long with no request completing and nothing more from the
        // client: a client that stopped reading (it would hold a pool's connection for ever),
        // a server that stopped answering, or a statement running longer than allowed.
        if (queryTimeout > 0 && idle >= queryTimeout * 1000)
          end(
            s,
            { query_timeout: queryTimeout },
            'closing client: request outstanding past query_timeout',
            new PgError(
              SQLSTATE.queryCanceled,
              `terminating connection due to query_timeout: a request was outstanding for more than ${queryTimeout} s`,
              'FATAL',
              undefined,
              'Read results as they come; for long statements raise query_timeout, or use a server-side statement_timeout below it.',
            ),
          );
        continue;
      }
      if (limit > 0 && idle >= limit * 1000)
        end(
          s,
          { client_idle_limit: limit },
          'closing idle client',
          new PgError(
            SQLSTATE.idleSessionTimeout,
            `terminating connection due to client_idle_limit: idle for more than ${limit} s`,
          ),
        );
      // The backend connections it holds (in transaction mode, a pool's) are closed: the transaction rolls back.
      else if (inTx > 0 && idle >= inTx * 1000 && s.inTransaction)
        end(
          s,
          { idle_transaction_timeout: inTx },
          'closing client idle in a transaction',
          new PgError(
            SQLSTATE.idleInTransactionTimeout,
            `terminating connection due to idle_transaction_timeout: idle in a transaction for more than ${inTx} s`,
            'FATAL',
            undefined,
            'Its transaction was rolled back. Commit or roll back transactions promptly; raise idle_transaction_timeout if the application needs longer.',
          ),
        );
    }
  }
}

/** Close a session for the reason `why` (logged with `fields`), telling the client `err`. */
function end(s: Session, fields: Record<string, unknown>, why: string, err: PgError): void {
  s.log.info(fields, why);
  s.fatal(err);
}
