/**
 * Foundation: the client limit (num_init_children) and its bounded queue
 * (client_queue_timeout), and shutdown on SIGTERM / SIGINT with sessions open.
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, pgClient, withTimeout } from '../support/clients.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { RawClient, closeAllRaw, errorFields, isAlive, sleep, startupMessage } from '../support/raw.js';

const cluster = getCluster();
const USER = { user: 'postgres', database: 'postgres', application_name: 'relay-limits' };

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

describe('num_init_children = 2, client_queue_timeout = 2', () => {
  let proxy: ProxyHandle;

  beforeAll(async () => {
    proxy = await startProxy({
      cluster,
      config: {
        log_min_messages: 'warning',
        load_balance_mode: false,
        num_init_children: 2,
        client_queue_timeout: 2,
        reserved_connections: 0,
      },
    });
  });

  afterAll(async () => {
    await closeAllClients();
    expect(await proxy?.stop()).toBe(0);
  });

  async function holdTwo(): Promise<[pg.Client, pg.Client]> {
    const a = await pgClient({ port: proxy.port });
    const b = await pgClient({ port: proxy.port });
    expect((await a.query('SELECT 1 AS v')).rows[0].v).toBe(1);
    expect((await b.query('SELECT 2 AS v')).rows[0].v).toBe(2);
    return [a, b];
  }

  it('makes the 3rd client wait, and lets it in when one leaves', async () => {
    const [a, b] = await holdTwo();
    let admitted = false;
    const t0 = Date.now();
    const third = pgClient({ port: proxy.port }).then((c) => {
      admitted = true;
      return c;
    });
    third.catch(() => undefined);
    await sleep(800);
    expect(admitted).toBe(false);
    await endPg(a);
    const c = await withTimeout(third, 3000, 'the queued client to get in');
    expect(Date.now() - t0).toBeLessThan(2000);
    expect((await c.query('SELECT 3 AS v')).rows[0].v).toBe(3);
    await endPg(b);
    await endPg(c);
  });

  it('refuses the 3rd client with 53300 when both slots stay busy past client_queue_timeout', async () => {
    await holdTwo();
    const raw = await RawClient.connect(proxy.port);
    const t0 = Date.now();
    raw.send(startupMessage(USER));
    const { messages, closed } = await raw.drainUntilClosed(6000);
    const dt = Date.now() - t0;
    expect(closed).toBe(true);
    const errs = messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
    expect(errs).toHaveLength(1);
    expect(errs[0].C).toBe('53300');
    expect(errs[0].V ?? errs[0].S).toBe('FATAL');
    expect(dt).toBeGreaterThan(1500);
    expect(dt).toBeLessThan(4500);
    // node-postgres sees the same SQLSTATE.
    await expect(pgClient({ port: proxy.port })).rejects.toMatchObject({ code: '53300' });
  });

  it('does not give a slot to a queued client that went away', async () => {
    const [a, b] = await holdTwo();
    const gone = await RawClient.connect(proxy.port);
    gone.send(startupMessage(USER));
    await sleep(300);
    gone.destroy();
    await sleep(100);
    await endPg(a);
    // The freed slot goes to the next real client at once.
    const t0 = Date.now();
    const c = await pgClient({ port: proxy.port });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect((await c.query('SELECT 1 AS v')).rows[0].v).toBe(1);
    await endPg(b);
    await endPg(c);
  });

  it('frees both slots when the clients leave, and serves clients one after another', async () => {
    for (let i = 0; i < 6; i++) {
      const c = await pgClient({ port: proxy.port });
      expect((await c.query('SELECT $1::int AS v', [i])).rows[0].v).toBe(i);
      await endPg(c);
    }
    const [a, b] = await holdTwo();
    await endPg(a);
    await endPg(b);
    expect(isAlive(proxy.pid)).toBe(true);
  });
});

describe('shutdown', () => {
  it('SIGTERM: stops accepting, lets the idle session finish, exits 0 soon after it leaves', async () => {
    const proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } });
    try {
      const c = await pgClient({ port: proxy.port });
      expect((await c.query('SELECT 1 AS v')).rows[0].v).toBe(1);
      proxy.kill('SIGTERM');
      await sleep(500);
      // New connections are refused.
      await expect(RawClient.connect(proxy.port, '127.0.0.1', 2000).then((r) => r.destroy())).rejects.toThrow();
      // The open session still works during the grace period.
      expect((await withTimeout(c.query('SELECT 2 AS v'), 3000, 'query during the grace period')).rows[0].v).toBe(2);
      await sleep(500);
      const t0 = Date.now();
      await endPg(c);
      const exit = await withTimeout(proxy.exited, 5000, 'pgrelay to exit after the last session left');
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(exit).toEqual({ code: 0, signal: null });
    } finally {
      await proxy.stop();
    }
  });

  it('SIGINT: closes a session still open when the (5 s) grace period ends with 57P01, exits 0', async () => {
    const proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } });
    try {
      const raw = await RawClient.connect(proxy.port);
      expect((await raw.startup(USER)).ok).toBe(true);
      const t0 = Date.now();
      proxy.kill('SIGINT');
      const { messages, closed } = await raw.drainUntilClosed(9000);
      expect(closed).toBe(true);
      const dt = Date.now() - t0;
      expect(dt).toBeGreaterThan(4000);
      expect(dt).toBeLessThan(8000);
      const errs = messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
      expect(errs.map((e) => e.C)).toEqual(['57P01']);
      const exit = await withTimeout(proxy.exited, 5000, 'pgrelay to exit');
      expect(exit).toEqual({ code: 0, signal: null });
    } finally {
      await proxy.stop();
    }
  });
});
