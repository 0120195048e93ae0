/**
 * The connection cache: idle, reset backend connections kept per key
 * (node, user, database, every other start-up parameter) so that the next client
 * with the same key skips PostgreSQL's fork and authentication.
 *
 * pgpool keeps `max_pool` slots per child process; pgrelay has no children, so
 * `max_pool` bounds the idle connections per key and `maxIdleTotal`
 * (num_init_children × max_pool, pgpool's total) bounds them overall. When a bound
 * is hit the connection idle the longest is closed, as pgpool reuses the slot with
 * the oldest close time. `connection_life_time` closes connections idle longer than
 * that many seconds.
 *
 * (generic-pool is not used here: it manages one homogeneous pool with its own
 * factory, while this cache hands over connections authenticated for a specific
 * key and only ever receives connections that a session opened and reset.)
 */
import type { BackendConnection } from './connector.js';

/** Connections to these databases are never cached: holding them blocks CREATE DATABASE. */
const UNCACHEABLE_DATABASES = new Set(['template0', 'template1']);

export function isCacheableDatabase(database: string): boolean {
  return !UNCACHEABLE_DATABASES.has(database);
}

export interface CacheLimits {
  maxPerKey: number;
  maxIdleTotal: number;
  /** Seconds a connection may stay idle in the cache; 0 = no limit. */
  lifeTimeSec: number;
}

/** Connections whose start-up defaults changed (ALTER DATABASE / ALTER ROLE … SET committed). */
export interface DefaultsTarget {
  database?: string;
  user?: string;
  allUsers?: boolean;
}

export class ConnectionCache {
  private readonly idle = new Map<string, BackendConnection[]>();
  private total = 0;
  /** When the defaults of a database, a user, a (user, database) pair or every user last changed (ms). */
  private readonly defaultsChanged = {
    database: new Map<string, number>(),
    user: new Map<string, number>(),
    pair: new Map<string, number>(),
    all: 0,
  };
  hits = 0;
  misses = 0;

  constructor(private limits: CacheLimits) {}

  setLimits(limits: CacheLimits): void {
    this.limits = limits;
  }

  get idleCount(): number {
    return this.total;
  }

  /** Connections being reset on their way into the cache, per key. */
  private readonly resetting = new Map<string, Array<() => void>>();
  private resettingCount = new Map<string, number>();

  /** A connection for `key` is being reset (call `resetDone` when it is cached or closed). */
  resetStarted(key: string): void {
    this.resettingCount.set(key, (this.resettingCount.get(key) ?? 0) + 1);
  }

  resetDone(key: string): void {
    const n = (this.resettingCount.get(key) ?? 1) - 1;
    if (n <= 0) this.resettingCount.delete(key);
    else this.resettingCount.set(key, n);
    const waiters = this.resetting.get(key);
    if (waiters) {
      this.resetting.delete(key);
      for (const w of waiters) w();
    }
  }

  /**
   * Take a cached connection for `key`; when none is idle but one is being reset
   * (its client just left), wait for it up to `waitMs` rather than open a new one —
   * a client that reconnects at once should not pay for a fork.
   */
  async takeOrWait(key: string, waitMs: number): Promise<BackendConnection | undefined> {
    const c = this.take(key);
    if (c || !this.resettingCount.has(key) || waitMs <= 0) return c;
    this.misses--; // counted again below
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, waitMs);
      const list = this.resetting.get(key) ?? [];
      list.push(() => {
        clearTimeout(t);
        resolve();
      });
      this.resetting.set(key, list);
    });
    return this.take(key);
  }

  /**
   * ALTER DATABASE / ALTER ROLE … SET|RESET succeeded: a backend reads its database's and
   * role's defaults when it starts, so connections opened before would keep the old ones
   * across a reset. Those idle now are closed; those in use are closed when released.
   */
  defaultsChangedFor(t: DefaultsTarget, now = Date.now()): void {
    const d = this.defaultsChanged;
    if (t.allUsers) d.all = now;
    else if (t.user !== undefined && t.database !== undefined) d.pair.set(`${t.user}\u0000${t.database}`, now);
    else if (t.user !== undefined) d.user.set(t.user, now);
    else if (t.database !== undefined) d.database.set(t.database, now);
    for (const [key, list] of this.idle) {
      for (let i = list.length - 1; i >= 0; i--) {
        if (!this.outdated(list[i])) continue;
        this.discard(list[i]);
        list.splice(i, 1);
        this.total--;
      }
      if (list.length === 0) this.idle.delete(key);
    }
  }

  /** Opened before the last change of its user's or database's defaults. */
  private outdated(c: BackendConnection): boolean {
    const d = this.defaultsChanged;
    const user = c.startup.get('user') ?? '';
    const database = c.startup.get('database') ?? user;
    const changed = Math.max(
      d.all,
      d.user.get(user) ?? 0,
      d.database.get(database) ?? 0,
      d.pair.get(`${user}\u0000${database}`) ?? 0,
    );
    return c.createdAt <= changed;
  }

  /** Take the most recently released live connection for `key`, if any. */
  take(key: string): BackendConnection | undefined {
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const c = list.pop() as BackendConnection;
      this.total--;
      if (list.length === 0) this.idle.delete(key);
      c.socket.removeListener('close', this.onIdleClose);
      if (!c.dead && !c.socket.destroyed) {
        this.hits++;
        return c;
      }
    }
    this.misses++;
    return undefined;
  }

  /** Keep a reset, idle connection. Returns false if it was closed instead. */
  put(c: BackendConnection): boolean {
    if (c.dead || this.limits.maxPerKey <= 0 || this.outdated(c)) {
      c.close();
      return false;
    }
    c.releasedAt = Date.now();
    let list = this.idle.get(c.cacheKey);
    if (!list) {
      list = [];
      this.idle.set(c.cacheKey, list);
    }
    if (list.length >= this.limits.maxPerKey) {
      const oldest = list.shift() as BackendConnection;
      this.total--;
      this.discard(oldest);
    }
    if (this.total >= this.limits.maxIdleTotal) this.evictOldest();
    list.push(c);
    this.total++;
    c.socket.once('close', this.onIdleClose);
    return true;
  }

  /** Close connections idle past connection_life_time. Called by the janitor. */
  sweep(now = Date.now()): number {
    const life = this.limits.lifeTimeSec;
    let closed = 0;
    for (const [key, list] of this.idle) {
      for (let i = list.length - 1; i >= 0; i--) {
        const c = list[i];
        if (c.dead || (life > 0 && now - c.releasedAt >= life * 1000)) {
          list.splice(i, 1);
          this.total--;
          this.discard(c);
          closed++;
        }
      }
      if (list.length === 0) this.idle.delete(key);
    }
    return closed;
  }

  /** Close every cached connection to a node (node down, failover), or all. */
  closeAll(nodeId?: number): void {
    for (const [key, list] of this.idle) {
      for (let i = list.length - 1; i >= 0; i--) {
        if (nodeId === undefined || list[i].nodeId === nodeId) {
          this.discard(list[i]);
          list.splice(i, 1);
          this.total--;
        }
      }
      if (list.length === 0) this.idle.delete(key);
    }
  }

  /** Snapshot for admin and metrics. */
  entries(): BackendConnection[] {
    const out: BackendConnection[] = [];
    for (const list of this.idle.values()) out.push(...list);
    return out;
  }

  private evictOldest(): void {
    let oldestKey: string | undefined;
    let oldestAt = Infinity;
    for (const [key, list] of this.idle) {
      if (list.length > 0 && list[0].releasedAt < oldestAt) {
        oldestAt = list[0].releasedAt;
        oldestKey = key;
      }
    }
    if (oldestKey === undefined) return;
    const list = this.idle.get(oldestKey) as BackendConnection[];
    const c = list.shift() as BackendConnection;
    this.total--;
    if (list.length === 0) this.idle.delete(oldestKey);
    this.discard(c);
  }

  private discard(c: BackendConnection): void {
    c.socket.removeListener('close', this.onIdleClose);
    c.close();
  }

  /** A cached connection closed by the server: drop it from the cache. */
  private readonly onIdleClose = (): void => {
    this.sweep();
  };
}
