/**
 * The server pools of pool_mode = transaction: backend connections per
 * (node, user, database, start-up parameters) key, lent to a client session for one
 * transaction (or autocommit statement, or extended-protocol batch up to Sync) and
 * given back when it ends.
 *
 * Limits (PgBouncer's names): `default_pool_size` connections per key, plus
 * `reserve_pool_size` more for a client that waited `reserve_pool_timeout`;
 * `max_db_connections` per (node, database) and `max_user_connections` per (node, user)
 * across keys (an idle connection of another key is closed to make room, as PgBouncer
 * does). Clients wait in one FIFO queue per key; a freed connection goes to the oldest
 * waiter of its key, room for a new connection to the oldest waiter that fits. A
 * waiter gives up after `query_wait_timeout`. `server_lifetime` closes connections at
 * release once they are that old, `server_idle_timeout` idle ones (`sweep`).
 *
 * Pure accounting over `PooledConnection`s: opening is the caller's (`open`), so unit
 * tests drive it with fake connections (test/unit/server-pool.test.ts).
 */

/** What the pool needs of a backend connection (BackendConnection satisfies it). */
export interface PooledConnection {
  readonly cacheKey: string;
  /** What the server reported at start-up (ParameterStatus), the same for every connection of a key. */
  readonly startupReport: ReadonlyMap<string, string>;
  readonly nodeId: number;
  readonly createdAt: number;
  releasedAt: number;
  readonly dead: boolean;
  close(): void;
}

export interface PoolLimits {
  poolSize: number;
  /** 0 = no limit. */
  maxDbConnections: number;
  /** 0 = no limit. */
  maxUserConnections: number;
  reserveSize: number;
  reserveTimeoutMs: number;
  /** 0 = no limit. */
  idleTimeoutMs: number;
  /** 0 = no limit. */
  lifetimeMs: number;
}

/** The limits that may differ per (database, user) (database_pool_settings, user_pool_settings). */
export type KeyLimits = Pick<PoolLimits, 'poolSize' | 'reserveSize' | 'maxDbConnections' | 'maxUserConnections'>;

/** Who a pool's connections belong to. */
export interface PoolKey {
  key: string;
  nodeId: number;
  user: string;
  database: string;
}

/** Start-up reports kept (one per pool key): see ServerPools.remember. */
const MAX_REPORTS = 10_000;

/** Why an `acquire` failed without a connection. */
export class PoolWaitTimeout extends Error {
  constructor(readonly waitedMs: number) {
    super(`no server connection became free in ${Math.round(waitedMs / 1000)} s`);
  }
}

export class PoolClosed extends Error {
  constructor() {
    super('the pool was closed');
  }
}

/** The node went down while a client waited for a connection to it (`nodeDown`), or while one was being made. */
export class PoolNodeDown extends Error {
  constructor(readonly nodeId: number) {
    super(`backend node ${nodeId} went down while a connection to it was awaited`);
  }
}

/**
 * Who asked for a connection (`request`): told once, on a later microtask (never inside
 * the call that asked, nor inside another session's `release`), either way.
 */
export interface PoolRequest<C> {
  lent(c: C): void;
  failed(e: unknown): void;
}

interface Waiter<C> {
  since: number;
  /** When it gives up (query_wait_timeout; Infinity: never). */
  deadline: number;
  /** When it may use the reserve pool (Infinity: no reserve pool, or it may already). */
  reserveAt: number;
  /** Waited reserve_pool_timeout: may use the reserve pool. */
  reserve: boolean;
  pool: Pool<C>;
  /** What opens a connection for it when it is given room for one. */
  open: () => Promise<C>;
  req: PoolRequest<C>;
}

const RESOLVED = Promise.resolve();

/** A delivery's `req` once told (keeps no session alive). */
const NOBODY: PoolRequest<never> = { lent: () => undefined, failed: () => undefined };

/** An answer waiting for the microtask that gives it (`deliver`). */
interface Delivery<C> {
  req: PoolRequest<C>;
  c: C | undefined;
  err: unknown;
}

/** setTimeout's longest delay (a longer one fires at once). */
const MAX_DELAY_MS = 2 ** 31 - 1;

interface Pool<C> {
  readonly id: PoolKey;
  /** Idle connections, the most recently released last. */
  idle: C[];
  /** Lent to sessions, or being opened for one. */
  active: number;
  waiters: Array<Waiter<C>>;
  /** Clients served since start, and the time they waited in total (ms). */
  served: number;
  waitedMs: number;
}

/** A pool's numbers (SHOW pool_pools, metrics). */
export interface PoolStats extends PoolKey {
  active: number;
  idle: number;
  waiting: number;
  /** How long the oldest waiter has waited (ms; 0 when none). */
  maxWaitMs: number;
}

export class ServerPools<C extends PooledConnection> {
  private readonly pools = new Map<string, Pool<C>>();
  /** Connections (active + idle) per node + database, per node + user. */
  private readonly perDb = new Map<string, number>();
  private readonly perUser = new Map<string, number>();
  /** The start-up report of the last connection opened per key (a new client of that key is told it). */
  private readonly reports = new Map<string, ReadonlyMap<string, string>>();
  /** The default isolation the last connection asked per key started with (see noteStartupIsolation). */
  private readonly isolations = new Map<string, string>();
  private closed = false;
  /**
   * One timer for every waiter's deadline and reserve time, set for the earliest (`timerAt`):
   * a waiter costs no timer of its own (most are served within milliseconds).
   */
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;

  constructor(
    private limits: PoolLimits,
    /** Called with how long each client waited (ms), served or not. */
    private readonly onWait?: (ms: number) => void,
    /** Limits of one (database, user) where they differ from `limits`. */
    private perKey?: (database: string, user: string) => KeyLimits,
  ) {}

  setLimits(l: PoolLimits, perKey?: (database: string, user: string) => KeyLimits): void {
    this.limits = l;
    this.perKey = perKey;
    this.wake();
  }

  /** The limits of the pools of `id`'s database and user. */
  limitsOf(id: Pick<PoolKey, 'database' | 'user'>): PoolLimits {
    return this.perKey ? { ...this.limits, ...this.perKey(id.database, id.user) } : this.limits;
  }

  /**
   * A connection for `id`: an idle one, or room to open one (`open`, counted from now),
   * or a place in the queue. Rejects with PoolWaitTimeout after `timeoutMs` (0 = never),
   * or with the error `open` failed with.
   */
  acquire(id: PoolKey, open: () => Promise<C>, timeoutMs: number, now = Date.now()): Promise<C> {
    return new Promise<C>((resolve, reject) =>
      this.request(id, open, timeoutMs, { lent: resolve, failed: reject }, now),
    );
  }

  /**
   * `acquire` for a caller that keeps its own `req` (no promise, no closure per call: the
   * path of nearly every transaction of a busy pool). `req` is told on a later microtask.
   */
  request(id: PoolKey, open: () => Promise<C>, timeoutMs: number, req: PoolRequest<C>, now = Date.now()): void {
    if (this.closed) {
      this.deliver(req, undefined, new PoolClosed());
      return;
    }
    const pool = this.poolFor(id);
    const got = pool.waiters.length === 0 ? this.tryTake(pool, false) : undefined;
    if (got !== undefined) {
      pool.served++;
      this.onWait?.(0);
      this.give(req, got, pool, open);
      return;
    }
    const w: Waiter<C> = {
      since: now,
      deadline: timeoutMs > 0 ? now + timeoutMs : Number.POSITIVE_INFINITY,
      reserveAt: this.limitsOf(id).reserveSize > 0 ? now + this.limits.reserveTimeoutMs : Number.POSITIVE_INFINITY,
      reserve: false,
      pool,
      open,
      req,
    };
    pool.waiters.push(w);
    this.setTimer(Math.min(w.deadline, w.reserveAt));
  }

  /** Give `req` the connection `got`, or open one for it in the room it got. */
  private give(req: PoolRequest<C>, got: C | 'open', pool: Pool<C>, open: () => Promise<C>): void {
    if (got !== 'open') this.deliver(req, got, undefined);
    else
      this.openFor(pool.id, pool, open).then(
        (c) => req.lent(c),
        (e: unknown) => req.failed(e),
      );
  }

  /**
   * Answers to give on the next microtask: `deliveryCount` of `deliveries`, objects reused
   * from one microtask to the next (two arrays taking turns), none allocated once warm.
   */
  private deliveries: Array<Delivery<C>> = [];
  private spareDeliveries: Array<Delivery<C>> = [];
  private deliveryCount = 0;

  /** Tell `req` on the next microtask (one for every answer given meanwhile). */
  private deliver(req: PoolRequest<C>, c: C | undefined, err: unknown): void {
    const i = this.deliveryCount++;
    const d = this.deliveries[i];
    if (d === undefined) this.deliveries.push({ req, c, err });
    else {
      d.req = req;
      d.c = c;
      d.err = err;
    }
    // A resolved promise's reaction: queueMicrotask allocates an async resource per call.
    if (i === 0) void RESOLVED.then(this.runDeliveries);
  }

  private readonly runDeliveries = (): void => {
    const ds = this.deliveries;
    const n = this.deliveryCount;
    // Answers given while these are told go to the other array, on a microtask of their own.
    this.deliveries = this.spareDeliveries;
    this.deliveryCount = 0;
    this.spareDeliveries = ds;
    for (let i = 0; i < n; i++) {
      const d = ds[i];
      const { req, c, err } = d;
      d.req = NOBODY;
      d.c = undefined;
      d.err = undefined;
      try {
        if (c !== undefined) req.lent(c);
        else req.failed(err);
      } catch (e) {
        // One caller's fault is reported as a promise's would be; the others are still told.
        void Promise.reject(e);
      }
    }
  };

  /**
   * `acquire` without waiting: an idle connection, or room to open one (`open`), when no
   * client waits for the pool; undefined (nothing taken) when the caller would have to queue.
   * For a session that already holds connections of other pools: waiting while holding them
   * could make two sessions wait for each other (see Backends.openLater).
   */
  acquireNow(id: PoolKey, open: () => Promise<C>): Promise<C> | undefined {
    if (this.closed) return undefined;
    const pool = this.poolFor(id);
    const got = pool.waiters.length === 0 ? this.tryTake(pool, false) : undefined;
    if (got === undefined) {
      this.prune();
      return undefined;
    }
    pool.served++;
    this.onWait?.(0);
    return got === 'open' ? this.openFor(id, pool, open) : Promise.resolve(got);
  }

  private async openFor(id: PoolKey, pool: Pool<C>, open: () => Promise<C>): Promise<C> {
    try {
      const c = await open();
      this.remember(id.key, c.startupReport);
      return c;
    } catch (e) {
      this.forget(pool);
      throw e;
    }
  }

  /**
   * The idle connection `takeIdle(id)` would lend now without waiting: none when a client
   * already waits for that pool (it comes first), when none is idle, or when the one to be
   * lent is dead (`acquire` then sorts it out). Lets a session take several connections at
   * once, or none (see Backends.checkoutNow).
   */
  idleFor(id: PoolKey): C | undefined {
    if (this.closed) return undefined;
    const pool = this.pools.get(id.key);
    if (pool === undefined || pool.waiters.length > 0) return undefined;
    const c = pool.idle[pool.idle.length - 1];
    return c === undefined || c.dead ? undefined : c;
  }

  /**
   * Lend `c` itself if it is idle in its pool (a client takes back the connection its last
   * unit of work used: Backends.takeLastUnit); false when it is not (lent out, closed).
   * No client waits for a pool that has an idle connection, so no one is passed over.
   */
  takeIdleConnection(c: C): boolean {
    if (this.closed) return false;
    const pool = this.pools.get(c.cacheKey);
    const i = pool === undefined ? -1 : pool.idle.indexOf(c);
    if (pool === undefined || i < 0 || c.dead) return false;
    pool.idle.splice(i, 1);
    pool.active++;
    pool.served++;
    this.onWait?.(0);
    return true;
  }

  /** Lend the connection `idleFor(id)` returned (as `acquire` lends an idle one). */
  takeIdle(id: PoolKey): C {
    const pool = this.pools.get(id.key) as Pool<C>;
    const c = pool.idle.pop() as C;
    pool.active++;
    pool.served++;
    this.onWait?.(0);
    return c;
  }

  /**
   * Take back a connection lent by `acquire`. `reusable`: idle and clean (no
   * transaction, nothing outstanding); otherwise, or past server_lifetime, it is closed.
   */
  release(c: C, reusable: boolean, now = Date.now()): void {
    const pool = this.pools.get(c.cacheKey);
    if (!pool) {
      c.close();
      return;
    }
    const l = this.limits;
    if (!reusable || c.dead || this.closed || (l.lifetimeMs > 0 && now - c.createdAt >= l.lifetimeMs)) {
      c.close();
      this.forget(pool);
      return;
    }
    c.releasedAt = now;
    const w = pool.waiters.shift();
    if (w) {
      this.serve(w, c, now);
      return;
    }
    pool.active--;
    pool.idle.push(c);
    this.wake();
  }

  /** A connection lent by `acquire` was lost or closed by its session: its place is free. */
  lost(c: C): void {
    const pool = this.pools.get(c.cacheKey);
    if (pool) this.forget(pool);
  }

  /** Close idle connections past server_idle_timeout, and dead ones. Returns how many. */
  sweep(now = Date.now()): number {
    const idle = this.limits.idleTimeoutMs;
    let n = 0;
    for (const pool of this.pools.values()) {
      for (let i = pool.idle.length - 1; i >= 0; i--) {
        const c = pool.idle[i];
        if (c.dead || (idle > 0 && now - c.releasedAt >= idle)) {
          pool.idle.splice(i, 1);
          this.uncount(pool.id);
          c.close();
          n++;
        }
      }
    }
    if (n > 0) this.wake();
    this.prune();
    return n;
  }

  /** Close the idle connections to a node (down, failover), or all; with `final`, refuse further use. */
  closeIdle(nodeId?: number, final = false): void {
    if (final) this.closed = true;
    for (const pool of this.pools.values()) {
      for (let i = pool.idle.length - 1; i >= 0; i--) {
        if (nodeId !== undefined && pool.idle[i].nodeId !== nodeId) continue;
        const c = pool.idle[i];
        pool.idle.splice(i, 1);
        this.uncount(pool.id);
        c.close();
      }
      if (final) for (const w of pool.waiters.splice(0)) this.deliver(w.req, undefined, new PoolClosed());
    }
    if (final) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
    } else this.wake();
  }

  /**
   * A node went down (failover, detach): close its idle connections, and fail the clients
   * waiting for its pools with PoolNodeDown (the connections they wait for may never come
   * back, and if they did they would lead to a node out of service: the caller takes the
   * connections of the node that serves now instead). Connections lent out stay with their
   * sessions until given back (then closed by `release` if dead, else idle until swept).
   */
  nodeDown(nodeId: number): void {
    this.closeIdle(nodeId);
    for (const pool of this.pools.values()) {
      if (pool.id.nodeId !== nodeId) continue;
      for (const w of pool.waiters.splice(0)) this.deliver(w.req, undefined, new PoolNodeDown(nodeId));
    }
    this.prune();
  }

  /** Every pool's numbers. */
  stats(now = Date.now()): PoolStats[] {
    const out: PoolStats[] = [];
    for (const p of this.pools.values())
      out.push({
        ...p.id,
        active: p.active,
        idle: p.idle.length,
        waiting: p.waiters.length,
        maxWaitMs: p.waiters.length > 0 ? now - p.waiters[0].since : 0,
      });
    return out;
  }

  /** What a connection of `key` reported at start-up, once one was opened (among the last MAX_REPORTS keys). */
  startupReport(key: string): ReadonlyMap<string, string> | undefined {
    const r = this.reports.get(key);
    if (r !== undefined && this.reports.size > MAX_REPORTS / 2) {
      // Used now: the newest (only when forgetting may come near; most processes have a few keys).
      this.reports.delete(key);
      this.reports.set(key, r);
    }
    return r;
  }

  /**
   * Keep `report` for `key`. Bounded: clients that send a start-up parameter of their own
   * with a new value each time get a pool (a key) of their own each time; the least
   * recently used report goes (its next client opens a connection at start-up).
   */
  private remember(key: string, report: ReadonlyMap<string, string>): void {
    this.reports.delete(key);
    this.reports.set(key, report);
    if (this.reports.size > MAX_REPORTS) this.reports.delete(this.reports.keys().next().value as string);
  }

  /**
   * A connection of `key` started with `default_transaction_isolation` = `level` (its
   * database's and role's default): a new client of that key is told it before it takes a
   * connection. Bounded as the reports are.
   */
  noteStartupIsolation(key: string, level: string): void {
    if (this.isolations.get(key) === level) return;
    this.isolations.delete(key);
    this.isolations.set(key, level);
    if (this.isolations.size > MAX_REPORTS) this.isolations.delete(this.isolations.keys().next().value as string);
  }

  /** What `noteStartupIsolation` last noted for `key`, if anything. */
  startupIsolationOf(key: string): string | undefined {
    return this.isolations.get(key);
  }

  /** The idle connections of every pool. */
  *idleConnections(): Iterable<C> {
    for (const p of this.pools.values()) yield* p.idle;
  }

  /** Connections per node (active + idle). */
  connectionsOn(nodeId: number): number {
    let n = 0;
    for (const p of this.pools.values()) if (p.id.nodeId === nodeId) n += p.active + p.idle.length;
    return n;
  }

  /** Clients waiting in all pools. */
  get waiting(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.waiters.length;
    return n;
  }

  // ---------------------------------------------------------------- internals

  private poolFor(id: PoolKey): Pool<C> {
    let p = this.pools.get(id.key);
    if (!p) {
      p = { id, idle: [], active: 0, waiters: [], served: 0, waitedMs: 0 };
      this.pools.set(id.key, p);
    }
    return p;
  }

  /** An idle connection, 'open' when there is room for a new one, or undefined. */
  private tryTake(pool: Pool<C>, reserve: boolean): C | 'open' | undefined {
    while (pool.idle.length > 0) {
      const c = pool.idle.pop() as C;
      if (!c.dead) {
        pool.active++;
        return c;
      }
      this.uncount(pool.id);
    }
    if (!this.roomFor(pool, reserve)) return undefined;
    pool.active++;
    this.count(pool.id);
    return 'open';
  }

  /** May `pool` open one more connection (closing an idle one of another pool if that is what stands in the way)? */
  private roomFor(pool: Pool<C>, reserve: boolean): boolean {
    const l = this.limitsOf(pool.id);
    const total = pool.active + pool.idle.length;
    if (total >= l.poolSize + (reserve ? l.reserveSize : 0)) return false;
    const id = pool.id;
    const dbKey = `${id.nodeId}\u0000${id.database}`;
    const userKey = `${id.nodeId}\u0000${id.user}`;
    if (l.maxDbConnections > 0 && (this.perDb.get(dbKey) ?? 0) >= l.maxDbConnections) {
      if (!this.closeIdleOf(pool, (o) => o.nodeId === id.nodeId && o.database === id.database)) return false;
    }
    if (l.maxUserConnections > 0 && (this.perUser.get(userKey) ?? 0) >= l.maxUserConnections) {
      if (!this.closeIdleOf(pool, (o) => o.nodeId === id.nodeId && o.user === id.user)) return false;
    }
    return true;
  }

  /** Close the connection idle the longest in another pool matching `match`; false if none. */
  private closeIdleOf(except: Pool<C>, match: (k: PoolKey) => boolean): boolean {
    let best: Pool<C> | undefined;
    for (const p of this.pools.values()) {
      if (p === except || p.idle.length === 0 || !match(p.id)) continue;
      if (!best || p.idle[0].releasedAt < best.idle[0].releasedAt) best = p;
    }
    if (!best) return false;
    const c = best.idle.shift() as C;
    this.uncount(best.id);
    c.close();
    return true;
  }

  private serve(w: Waiter<C>, c: C | 'open', now: number): void {
    const waited = now - w.since;
    w.pool.served++;
    w.pool.waitedMs += waited;
    this.onWait?.(waited);
    this.give(w.req, c, w.pool, w.open);
  }

  /** Hand freed room to waiters, oldest first across pools. */
  private wake(): void {
    if (this.closed || !this.anyWaiting()) return;
    for (;;) {
      // The oldest waiter of each pool, oldest first, until one can be served.
      const order = [...this.pools.values()]
        .map((p) => p.waiters[0])
        .filter((w): w is Waiter<C> => w !== undefined)
        .sort((a, b) => a.since - b.since);
      let served = false;
      for (const w of order) {
        const got = this.tryTake(w.pool, w.reserve);
        if (got === undefined) continue;
        w.pool.waiters.shift();
        this.serve(w, got, Date.now());
        served = true;
        break;
      }
      if (!served) return;
    }
  }

  /** Does a client wait in any pool (without building the list `wake` sorts)? */
  private anyWaiting(): boolean {
    for (const p of this.pools.values()) if (p.waiters.length > 0) return true;
    return false;
  }

  /** Have `onTimer` run at `at` (ms since the epoch) unless it runs sooner already. */
  private setTimer(at: number): void {
    if (at >= this.timerAt || this.closed) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.onTimer, Math.min(MAX_DELAY_MS, Math.max(0, at - Date.now())));
    // The waiters' client sockets keep the process alive, not their deadlines.
    this.timer.unref();
  }

  /** Waiters past query_wait_timeout give up; those past reserve_pool_timeout may use the reserve pool. */
  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    let reserve = false;
    for (const pool of this.pools.values()) {
      const ws = pool.waiters;
      for (let i = 0; i < ws.length; ) {
        const w = ws[i];
        if (w.deadline <= now) {
          ws.splice(i, 1);
          this.onWait?.(now - w.since);
          this.deliver(w.req, undefined, new PoolWaitTimeout(now - w.since));
          continue;
        }
        if (w.reserveAt <= now) {
          w.reserve = true;
          w.reserveAt = Number.POSITIVE_INFINITY;
          reserve = true;
        }
        next = Math.min(next, w.deadline, w.reserveAt);
        i++;
      }
    }
    if (reserve) this.wake();
    // A timer that fired a little early (the loop's clock) is set again for what remains.
    this.setTimer(next);
  };

  /** One active connection of `pool` is gone. */
  private forget(pool: Pool<C>): void {
    pool.active--;
    this.uncount(pool.id);
    this.wake();
  }

  private count(id: PoolKey): void {
    const d = `${id.nodeId}\u0000${id.database}`;
    const u = `${id.nodeId}\u0000${id.user}`;
    this.perDb.set(d, (this.perDb.get(d) ?? 0) + 1);
    this.perUser.set(u, (this.perUser.get(u) ?? 0) + 1);
  }

  private uncount(id: PoolKey): void {
    const d = `${id.nodeId}\u0000${id.database}`;
    const u = `${id.nodeId}\u0000${id.user}`;
    const dn = (this.perDb.get(d) ?? 1) - 1;
    const un = (this.perUser.get(u) ?? 1) - 1;
    if (dn <= 0) this.perDb.delete(d);
    else this.perDb.set(d, dn);
    if (un <= 0) this.perUser.delete(u);
    else this.perUser.set(u, un);
  }

  /** Forget empty pools nobody uses. */
  private prune(): void {
    for (const [k, p] of this.pools)
      if (p.active === 0 && p.idle.length === 0 && p.waiters.length === 0) this.pools.delete(k);
  }
}
