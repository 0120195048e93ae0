/**
 * Admission of an authenticated client: reserved_connections, then a
 * num_init_children slot (max_client_conn with pool_mode = transaction) (ClientGate), waited for at most client_queue_timeout;
 * then its Session runs and gives the slot back when it ends.
 */
import { promises as dns } from 'node:dns';
import type net from 'node:net';
import type { Config, PoolMode } from '../config/types.js';
import { SQLSTATE } from '../protocol/constants.js';
import { PgError } from '../protocol/messages.js';
import type { BackendSecret } from '../auth/backend.js';
import type { SessionContext } from '../session/context.js';
import { ReplicationPassThrough, wantsReplication } from '../session/replication.js';
import { Session } from '../session/session.js';
import { type ClientInput, refuseClient } from '../protocol/client-input.js';
import { poolSettingsOf } from '../pool/pool-settings.js';

export interface AdmissionOptions {
  /** What sessions run in (the Relay). */
  context: SessionContext<Session>;
  /** Shutting down: a client that got a slot is closed instead of starting. */
  stopping: () => boolean;
}

export class Admission {
  readonly gate: ClientGates;
  /** Running sessions. */
  readonly sessions = new Set<Session>();

  constructor(private readonly opts: AdmissionOptions) {
    const cfg = opts.context.config();
    this.gate = new ClientGates(cfg.num_init_children, cfg.max_client_conn);
  }

  private get config(): Config {
    return this.opts.context.config();
  }

  async admit(
    socket: net.Socket,
    params: Map<string, string>,
    remote: string,
    authSecret: BackendSecret,
    input: ClientInput,
  ): Promise<void> {
    const cfg = this.config;
    const reserved = cfg.reserved_connections;
    // pool_mode of the client's database and user (database_pool_settings, user_pool_settings).
    const mode = poolSettingsOf(cfg).for(
      params.get('database') ?? params.get('user') ?? '',
      params.get('user') ?? '',
    ).pool_mode;
    const slots = mode === 'transaction' ? cfg.max_client_conn : cfg.num_init_children;
    const slotName = mode === 'transaction' ? 'max_client_conn' : 'num_init_children';
    this.gate.setLimits(cfg.num_init_children, cfg.max_client_conn);
    const gate = this.gate.for(mode);
    if (reserved > 0 && gate.active >= slots - reserved) {
      refuseClient(socket, new PgError(SQLSTATE.tooManyConnections, 'Sorry, too many clients already'));
      return;
    }
    let closedWhileWaiting = false;
    const onClose = (): void => {
      closedWhileWaiting = true;
    };
    socket.once('close', onClose);
    socket.on('error', () => undefined);
    const waitStart = Date.now();
    const ok = await gate.acquire(cfg.client_queue_timeout * 1000, () => closedWhileWaiting);
    socket.removeListener('close', onClose);
    this.opts.context.services.metrics.slotWait((Date.now() - waitStart) / 1000);
    if (!ok) {
      if (!closedWhileWaiting)
        refuseClient(
          socket,
          new PgError(
            SQLSTATE.tooManyConnections,
            `sorry, too many clients already: all ${slots} session slots (${slotName}) stayed busy for client_queue_timeout (${cfg.client_queue_timeout} s)`,
            'FATAL',
            undefined,
            mode === 'transaction'
              ? 'Retry later, or raise max_client_conn.'
              : "Retry later, or raise num_init_children (and the backends' max_connections).",
          ),
        );
      return;
    }
    if (closedWhileWaiting || socket.destroyed || this.opts.stopping()) {
      gate.release();
      socket.destroy();
      return;
    }
    if (wantsReplication(params)) {
      // Not a session: bytes to and from the primary, holding a slot while they flow.
      this.opts.context.services.metrics.clientConnected();
      await new ReplicationPassThrough(this.opts.context, socket, params, authSecret).start(input, () =>
        gate.release(),
      );
      return;
    }
    const session = new Session(this.opts.context, socket, params, remote, authSecret);
    this.sessions.add(session);
    this.opts.context.services.metrics.clientConnected();
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
    await session.start(input, () => {
      this.sessions.delete(session);
      gate.release();
      if (this.config.log_disconnections)
        session.log.info({ remote, durationMs: Date.now() - startedAt }, 'disconnection');
    });
  }
}

/**
 * The client's host name as the system resolves it (getnameinfo: /etc/hosts, then DNS), like pgpool and
 * PostgreSQL; '' on error or when it takes longer than a second.
 */
function reverseLookup(address: string): Promise<string> {
  const ip = address.startsWith('::ffff:') ? address.slice(7) : address;
  return Promise.race([
    dns.lookupService(ip, 0).then(
      (r) => r.hostname,
      () => '',
    ),
    new Promise<string>((resolve) => setTimeout(() => resolve(''), 1000).unref()),
  ]);
}

/**
 * The client slots: num_init_children for clients in session mode, max_client_conn for
 * those in transaction mode (pool_mode, per database and user with database_pool_settings
 * and user_pool_settings).
 */
export class ClientGates {
  private readonly session: ClientGate;
  private readonly transaction: ClientGate;

  constructor(sessionSlots: number, transactionSlots: number) {
    this.session = new ClientGate(sessionSlots);
    this.transaction = new ClientGate(transactionSlots);
  }

  for(mode: PoolMode): ClientGate {
    return mode === 'transaction' ? this.transaction : this.session;
  }

  setLimits(sessionSlots: number, transactionSlots: number): void {
    this.session.setLimit(sessionSlots);
    this.transaction.setLimit(transactionSlots);
  }

  get waiting(): number {
    return this.session.waiting + this.transaction.waiting;
  }

  longestWaitMs(now = Date.now()): number {
    return Math.max(this.session.longestWaitMs(now), this.transaction.longestWaitMs(now));
  }

  rejectAll(): void {
    this.session.rejectAll();
    this.transaction.rejectAll();
  }
}

/**
 * num_init_children as a counting gate: at most `limit` concurrent sessions; the
 * rest wait in FIFO order for a bounded time (pgpool leaves them in the kernel's
 * listen queue with no bound and no answer).
 */
interface Waiter {
  resolve(ok: boolean): void;
  timer: NodeJS.Timeout | undefined;
  gone: () => boolean;
  /** ms since epoch when the client started waiting. */
  since: number;
}

export class ClientGate {
  active = 0;
  private readonly waiters: Waiter[] = [];

  constructor(private limit: number) {}

  setLimit(n: number): void {
    this.limit = n;
    this.wake();
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** How long the longest-waiting client has waited for a slot, ms (0 when none waits). */
  longestWaitMs(now = Date.now()): number {
    const w = this.waiters[0];
    return w ? Math.max(0, now - w.since) : 0;
  }

  /** Resolves true with a slot taken, false on timeout (`timeoutMs` 0 = wait forever) or shutdown. */
  acquire(timeoutMs: number, gone: () => boolean = () => false): Promise<boolean> {
    if (this.active < this.limit && this.waiters.length === 0) {
      this.active++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const w: Waiter = { resolve, timer: undefined, gone, since: Date.now() };
      if (timeoutMs > 0) {
        w.timer = setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve(false);
        }, timeoutMs);
      }
      this.waiters.push(w);
    });
  }

  release(): void {
    this.active--;
    this.wake();
  }

  rejectAll(): void {
    for (const w of this.waiters.splice(0)) {
      if (w.timer) clearTimeout(w.timer);
      w.resolve(false);
    }
  }

  private wake(): void {
    while (this.active < this.limit && this.waiters.length > 0) {
      const w = this.waiters.shift() as Waiter;
      if (w.timer) clearTimeout(w.timer);
      if (w.gone()) {
        w.resolve(false);
        continue;
      }
      this.active++;
      w.resolve(true);
    }
  }
}
