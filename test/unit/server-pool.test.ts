/**
 * The server pools of pool_mode = transaction (src/pool/server-pool.ts) with fake
 * connections: limits per key, per database and per user, FIFO waiting, the reserve
 * pool, query_wait_timeout, server_lifetime and server_idle_timeout.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  type PoolKey,
  type PoolLimits,
  type PooledConnection,
  PoolWaitTimeout,
  ServerPools,
} from '../../src/pool/server-pool.js';

class Fake implements PooledConnection {
  static opened = 0;
  readonly createdAt: number;
  releasedAt = 0;
  dead = false;
  closed = false;
  readonly startupReport = new Map([['server_version', '15.0']]);
  constructor(
    readonly cacheKey: string,
    readonly nodeId: number,
    now = Date.now(),
  ) {
    this.createdAt = now;
    Fake.opened++;
  }
  close(): void {
    this.closed = true;
    this.dead = true;
  }
}

const LIMITS: PoolLimits = {
  poolSize: 2,
  maxDbConnections: 0,
  maxUserConnections: 0,
  reserveSize: 0,
  reserveTimeoutMs: 5000,
  idleTimeoutMs: 0,
  lifetimeMs: 0,
};

function key(user = 'u', database = 'd', nodeId = 0): PoolKey {
  return { key: `${nodeId}/${user}/${database}`, nodeId, user, database };
}

function pools(l: Partial<PoolLimits> = {}): ServerPools<Fake> {
  return new ServerPools<Fake>({ ...LIMITS, ...l });
}

const open = (k: PoolKey) => async () => new Fake(k.key, k.nodeId);

afterEach(() => {
  vi.useRealTimers();
});

describe('ServerPools', () => {
  it('opens up to the pool size, then lends idle connections in FIFO order of the waiters', async () => {
    const p = pools();
    const k = key();
    const a = await p.acquire(k, open(k), 0);
    const b = await p.acquire(k, open(k), 0);
    const order: string[] = [];
    const w1 = p.acquire(k, open(k), 0).then((c) => {
      order.push('w1');
      return c;
    });
    const w2 = p.acquire(k, open(k), 0).then((c) => {
      order.push('w2');
      return c;
    });
    expect(p.stats()[0]).toMatchObject({ active: 2, idle: 0, waiting: 2 });
    p.release(a, true);
    p.release(b, true);
    expect(await w1).toBe(a);
    expect(await w2).toBe(b);
    expect(order).toEqual(['w1', 'w2']);
    p.release(a, true);
    expect(p.stats()[0]).toMatchObject({ active: 1, idle: 1, waiting: 0 });
    // The most recently released is lent first.
    expect(await p.acquire(k, open(k), 0)).toBe(a);
  });

  it('idleFor/takeIdle lend an idle connection at once, never past a waiting client', async () => {
    const p = pools({ poolSize: 1 });
    const k = key();
    expect(p.idleFor(k)).toBeUndefined();
    const a = await p.acquire(k, open(k), 0);
    expect(p.idleFor(k)).toBeUndefined();
    p.release(a, true);
    expect(p.idleFor(k)).toBe(a);
    expect(p.takeIdle(k)).toBe(a);
    expect(p.stats()[0]).toMatchObject({ active: 1, idle: 0, waiting: 0 });
    // A client waits: the connection released goes to it, and idleFor offers nothing meanwhile.
    const w = p.acquire(k, open(k), 0);
    expect(p.idleFor(k)).toBeUndefined();
    p.release(a, true);
    expect(await w).toBe(a);
    p.release(a, true);
    a.dead = true;
    expect(p.idleFor(k)).toBeUndefined();
  });

  it('acquireNow lends or opens without waiting, and takes nothing when the caller would queue', async () => {
    const p = pools({ poolSize: 1 });
    const k = key();
    const a = await p.acquireNow(k, open(k));
    expect(a).toBeInstanceOf(Fake);
    expect(p.acquireNow(k, open(k))).toBeUndefined();
    expect(p.stats()[0]).toMatchObject({ active: 1, idle: 0, waiting: 0 });
    p.release(a as Fake, true);
    expect(await p.acquireNow(k, open(k))).toBe(a);
    // Behind a waiting client it takes nothing, even once the connection is back.
    const w = p.acquire(k, open(k), 0);
    expect(p.acquireNow(k, open(k))).toBeUndefined();
    p.release(a as Fake, true);
    expect(await w).toBe(a);
  });

  it('a connection released unusable is closed and its place goes to a waiter', async () => {
    const p = pools({ poolSize: 1 });
    const k = key();
    const a = await p.acquire(k, open(k), 0);
    const w = p.acquire(k, open(k), 0);
    p.release(a, false);
    expect(a.closed).toBe(true);
    const c = await w;
    expect(c).not.toBe(a);
    expect(p.connectionsOn(0)).toBe(1);
  });

  it('takeIdleConnection lends that very connection when it is idle, and nothing otherwise', async () => {
    const p = pools({ poolSize: 2 });
    const k = key();
    const a = await p.acquire(k, open(k), 0);
    const b = await p.acquire(k, open(k), 0);
    expect(p.takeIdleConnection(a)).toBe(false); // lent out
    p.release(a, true);
    p.release(b, true);
    expect(p.takeIdleConnection(a)).toBe(true);
    expect(p.takeIdleConnection(a)).toBe(false);
    expect(p.stats()[0]).toMatchObject({ active: 1, idle: 1 });
    // The next acquire gets the other one.
    expect(await p.acquire(k, open(k), 0)).toBe(b);
    b.dead = true;
    p.release(b, true);
    expect(p.takeIdleConnection(b)).toBe(false);
  });

  it('gives up after the wait timeout with PoolWaitTimeout', async () => {
    vi.useFakeTimers();
    const p = pools({ poolSize: 1 });
    const k = key();
    await p.acquire(k, open(k), 0);
    const w = p.acquire(k, open(k), 1000).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await w).toBeInstanceOf(PoolWaitTimeout);
    expect(p.waiting).toBe(0);
  });

  it('each waiter gives up at its own deadline, whatever the others wait for (one timer for all)', async () => {
    vi.useFakeTimers();
    const p = pools({ poolSize: 1 });
    const k = key();
    const held = await p.acquire(k, open(k), 0);
    const settled: Record<string, number> = {};
    const t0 = Date.now();
    const watch = (name: string, w: Promise<Fake>) =>
      w.then(
        () => {
          settled[name] = Date.now() - t0;
        },
        (e: unknown) => {
          if (e instanceof PoolWaitTimeout) settled[`${name} timed out`] = Date.now() - t0;
        },
      );
    // First a (1 s), then b (3 s) and c (0.5 s: a shorter query_wait_timeout after a reload).
    void watch('a', p.acquire(k, open(k), 1000));
    await vi.advanceTimersByTimeAsync(100);
    void watch('b', p.acquire(k, open(k), 3000));
    void watch('c', p.acquire(k, open(k), 500));
    await vi.advanceTimersByTimeAsync(1000);
    expect(settled).toEqual({ 'c timed out': 600, 'a timed out': 1000 });
    expect(p.waiting).toBe(1);
    // b is served before its deadline: nothing times out any more.
    p.release(held, true);
    await vi.advanceTimersByTimeAsync(5000);
    expect(settled).toEqual({ 'c timed out': 600, 'a timed out': 1000, b: 1100 });
    expect(p.waiting).toBe(0);
  });

  it('the reserve pool serves a client that waited reserve_pool_timeout', async () => {
    vi.useFakeTimers();
    const p = pools({ poolSize: 1, reserveSize: 1, reserveTimeoutMs: 500 });
    const k = key();
    await p.acquire(k, open(k), 0);
    let got: Fake | undefined;
    void p.acquire(k, open(k), 0).then((c) => {
      got = c;
    });
    await vi.advanceTimersByTimeAsync(400);
    expect(got).toBeUndefined();
    await vi.advanceTimersByTimeAsync(200);
    expect(got).toBeInstanceOf(Fake);
    expect(p.connectionsOn(0)).toBe(2);
  });

  it('max_db_connections counts every user of a database on a node, closing an idle one of another pool', async () => {
    const p = pools({ poolSize: 5, maxDbConnections: 2 });
    const k1 = key('u1');
    const k2 = key('u2');
    const a = await p.acquire(k1, open(k1), 0);
    const b = await p.acquire(k1, open(k1), 0);
    let got: Fake | undefined;
    const w = p.acquire(k2, open(k2), 0).then((c) => {
      got = c;
      return c;
    });
    await Promise.resolve();
    expect(got).toBeUndefined();
    // a goes idle in u1's pool: it is closed to make room for u2.
    p.release(a, true);
    const c = await w;
    expect(a.closed).toBe(true);
    expect(c.cacheKey).toBe(k2.key);
    expect(p.connectionsOn(0)).toBe(2);
    // Another node is not counted.
    const k3 = key('u1', 'd', 1);
    expect(await p.acquire(k3, open(k3), 0)).toBeInstanceOf(Fake);
    p.release(b, true);
  });

  it('max_user_connections counts every database of a user on a node', async () => {
    const p = pools({ poolSize: 5, maxUserConnections: 1 });
    const k1 = key('u', 'd1');
    const k2 = key('u', 'd2');
    const a = await p.acquire(k1, open(k1), 0);
    let got = false;
    void p.acquire(k2, open(k2), 0).then(() => {
      got = true;
    });
    await Promise.resolve();
    expect(got).toBe(false);
    p.release(a, false);
    await new Promise((r) => setTimeout(r, 0));
    expect(got).toBe(true);
  });

  it('limits per database and user (database_pool_settings, user_pool_settings) replace the global ones', async () => {
    const p = new ServerPools<Fake>({ ...LIMITS, poolSize: 5 }, undefined, (database) => ({
      poolSize: database === 'small' ? 1 : 5,
      reserveSize: 0,
      maxDbConnections: 0,
      maxUserConnections: 0,
    }));
    const small = key('u', 'small');
    const big = key('u', 'big');
    await p.acquire(small, open(small), 0);
    let got = false;
    void p.acquire(small, open(small), 0).then(() => {
      got = true;
    });
    for (let i = 0; i < 5; i++) await p.acquire(big, open(big), 0);
    await new Promise((r) => setTimeout(r, 0));
    expect(got).toBe(false);
    expect(p.limitsOf(small).poolSize).toBe(1);
    expect(p.limitsOf(big).poolSize).toBe(5);
    expect(p.stats().find((s) => s.database === 'small')).toMatchObject({ active: 1, waiting: 1 });
  });

  it('server_lifetime closes an old connection at release; server_idle_timeout closes idle ones', async () => {
    const p = pools({ lifetimeMs: 1000, idleTimeoutMs: 5000 });
    const k = key();
    const old = new Fake(k.key, 0, 0);
    const a = await p.acquire(k, async () => old, 0, 0);
    p.release(a, true, 2000);
    expect(old.closed).toBe(true);
    const b = await p.acquire(k, open(k), 0);
    p.release(b, true, b.createdAt + 10);
    expect(p.sweep(b.createdAt + 10 + 4000)).toBe(0);
    expect(p.sweep(b.createdAt + 10 + 5000)).toBe(1);
    expect(b.closed).toBe(true);
    expect(p.connectionsOn(0)).toBe(0);
  });

  it('a failed open frees its place; the start-up report of a key is kept', async () => {
    const p = pools({ poolSize: 1 });
    const k = key();
    await expect(
      p.acquire(
        k,
        async () => {
          throw new Error('refused');
        },
        0,
      ),
    ).rejects.toThrow('refused');
    expect(p.connectionsOn(0)).toBe(0);
    expect(p.startupReport(k.key)).toBeUndefined();
    await p.acquire(k, open(k), 0);
    expect(p.startupReport(k.key)?.get('server_version')).toBe('15.0');
  });
});

describe('ServerPools start-up reports', () => {
  it('remembers the reports of the last 10,000 pool keys, the least recently used forgotten', async () => {
    const p = pools();
    // A client sending a custom setting with a new value each time gets a pool of its own each time.
    for (let i = 0; i < 12_000; i++) {
      const k = key(`u${i}`);
      const c = await p.acquire(k, open(k), 0);
      p.release(c, false);
    }
    expect(p.startupReport(key('u0').key)).toBeUndefined();
    expect(p.startupReport(key('u11999').key)?.get('server_version')).toBe('15.0');
    let kept = 0;
    for (let i = 0; i < 12_000; i++) if (p.startupReport(key(`u${i}`).key) !== undefined) kept++;
    expect(kept).toBe(10_000);
  });
});
