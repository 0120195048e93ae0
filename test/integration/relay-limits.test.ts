/**
 * Foundation: the client limit (num_init_children) and its bounded queue
 * (client_queue_timeout), and shutdown on SIGTERM / SIGINT with sessions open.
 * Queue states are read from pgrelay's pgrelay_client_sessions{state} gauge,
 * never inferred from elapsed time.
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { freePort } from '../../dev/devcluster.js';
import { closeAllClients, endPg, pgClient, withTimeout } from '../support/clients.js';
import { scrapeMetrics, sampleValue } from '../support/prometheus.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  closeAllRaw,
  closeMessage,
  errorFields,
  isAlive,
  parseMessage,
  queryMessage,
  startupMessage,
  syncMessage,
} from '../support/raw.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
const USER = { user: 'postgres', database: 'postgres', application_name: 'relay-limits' };

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

/** pgrelay_client_sessions{state="active"|"waiting"} of a pgrelay with metrics on `metricsPort`. */
async function sessionGauge(metricsPort: number): Promise<{ active: number; waiting: number }> {
  const m = await scrapeMetrics(metricsPort);
  return {
    active: sampleValue(m, 'pgrelay_client_sessions', { state: 'active' }) ?? Number.NaN,
    waiting: sampleValue(m, 'pgrelay_client_sessions', { state: 'waiting' }) ?? Number.NaN,
  };
}

describe('num_init_children = 2: a bounded queue (client_queue_timeout = 60)', () => {
  // The queue timeout is long so that a queued client is only ever admitted by a slot being freed.
  let proxy: ProxyHandle;
  let metricsPort: number;
  const gauge = (): Promise<{ active: number; waiting: number }> => sessionGauge(metricsPort);
  const waitGauge = (
    pred: (g: { active: number; waiting: number }) => boolean,
    what: string,
  ): Promise<{ active: number; waiting: number }> =>
    pollUntil(gauge, pred, { what: `pgrelay_client_sessions: ${what}` });

  beforeAll(async () => {
    metricsPort = await freePort();
    proxy = await startProxy({
      cluster,
      config: {
        log_min_messages: 'warning',
        load_balance_mode: false,
        num_init_children: 2,
        client_queue_timeout: 60,
        reserved_connections: 0,
        metrics_port: metricsPort,
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
    await waitGauge((g) => g.active === 2 && g.waiting === 0, 'two active, none waiting');
    return [a, b];
  }

  it('makes the 3rd client wait, and lets it in when one leaves', { timeout: 120_000 }, async () => {
    const [a, b] = await holdTwo();
    let admitted = false;
    const third = pgClient({ port: proxy.port }, { connectionTimeoutMillis: 30_000 }).then((c) => {
      admitted = true;
      return c;
    });
    third.catch(() => undefined);
    await waitGauge((g) => g.waiting === 1, 'the 3rd client queued');
    expect(admitted, 'admitted while both slots are held').toBe(false);
    expect((await gauge()).active).toBe(2);
    await endPg(a);
    const c = await withTimeout(third, 20_000, 'the queued client to get in once a slot was freed');
    expect((await c.query('SELECT 3 AS v')).rows[0].v).toBe(3);
    await waitGauge((g) => g.active === 2 && g.waiting === 0, 'b and the 3rd client active, none waiting');
    await endPg(b);
    await endPg(c);
  });

  it('does not give a slot to a queued client that went away', { timeout: 120_000 }, async () => {
    const [a, b] = await holdTwo();
    const gone = await RawClient.connect(proxy.port);
    gone.send(startupMessage(USER));
    // Proof that it is queued, not refused or admitted, before it goes away.
    await waitGauge((g) => g.waiting === 1 && g.active === 2, 'the client queued');
    gone.destroy();
    await endPg(a);
    // The freed slot goes to the next real client: had it been lost to the client that left, this one would
    // wait for client_queue_timeout (60 s) and its connect would time out first.
    const c = await pgClient({ port: proxy.port }, { connectionTimeoutMillis: 20_000 });
    expect((await c.query('SELECT 1 AS v')).rows[0].v).toBe(1);
    await waitGauge((g) => g.active === 2 && g.waiting === 0, 'b and the new client active, nobody waiting');
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
    await waitGauge((g) => g.active === 0 && g.waiting === 0, 'no session left');
    expect(isAlive(proxy.pid)).toBe(true);
  });
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

  it('refuses the 3rd client with 53300 when both slots stay busy past client_queue_timeout', async () => {
    const a = await pgClient({ port: proxy.port });
    const b = await pgClient({ port: proxy.port });
    expect((await a.query('SELECT 1 AS v')).rows[0].v).toBe(1);
    expect((await b.query('SELECT 2 AS v')).rows[0].v).toBe(2);
    const raw = await RawClient.connect(proxy.port);
    const t0 = Date.now();
    raw.send(startupMessage(USER));
    const { messages, closed } = await raw.drainUntilClosed(20_000);
    const dt = Date.now() - t0;
    expect(closed).toBe(true);
    const errs = messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
    expect(errs).toHaveLength(1);
    expect(errs[0].C).toBe('53300');
    expect(errs[0].V ?? errs[0].S).toBe('FATAL');
    expect(dt, 'not before client_queue_timeout').toBeGreaterThan(1500);
    expect(dt, 'client_queue_timeout plus a generous margin').toBeLessThan(15_000);
    // node-postgres sees the same SQLSTATE.
    await expect(pgClient({ port: proxy.port }, { connectionTimeoutMillis: 20_000 })).rejects.toMatchObject({
      code: '53300',
    });
  });
});

describe('shutdown', () => {
  it('SIGTERM: stops accepting, lets the idle session finish, exits 0 soon after it leaves', {
    timeout: 120_000,
  }, async () => {
    const proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } });
    try {
      const c = await pgClient({ port: proxy.port });
      expect((await c.query('SELECT 1 AS v')).rows[0].v).toBe(1);
      proxy.kill('SIGTERM');
      // New connections are refused (as soon as pgrelay has handled the signal).
      await pollUntil(
        () =>
          RawClient.connect(proxy.port, '127.0.0.1', 2000).then(
            (r) => {
              r.destroy();
              return 'accepted';
            },
            () => 'refused',
          ),
        (v) => v === 'refused',
        { what: 'pgrelay to stop accepting connections after SIGTERM' },
      );
      // The open session still works during the grace period.
      expect((await withTimeout(c.query('SELECT 2 AS v'), 10_000, 'query during the grace period')).rows[0].v).toBe(2);
      await endPg(c);
      // It exits once the last session left, well before the 30 s grace period would end.
      const exit = await withTimeout(proxy.exited, 20_000, 'pgrelay to exit after the last session left');
      expect(exit).toEqual({ code: 0, signal: null });
    } finally {
      await proxy.stop();
    }
  });

  it('a second signal during the grace period stops at once (exit 0, the open session is closed)', {
    timeout: 120_000,
  }, async () => {
    const proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } });
    try {
      const raw = await RawClient.connect(proxy.port);
      expect((await raw.startup(USER)).ok).toBe(true);
      proxy.kill('SIGTERM');
      // The first signal began the 30 s smart shutdown; the session is still served.
      await proxy.waitForLog(/"signal":"SIGTERM"[^\n]*shutting down/, 20_000);
      expect((await raw.query('SELECT 1')).rows).toEqual([['1']]);
      const t0 = Date.now();
      proxy.kill('SIGTERM');
      const exit = await withTimeout(proxy.exited, 20_000, 'pgrelay to exit on the second signal');
      expect(exit).toEqual({ code: 0, signal: null });
      expect(Date.now() - t0, 'far sooner than the 30 s grace period').toBeLessThan(20_000);
      await proxy.waitForLog('immediate shutdown', 5_000);
      expect(await raw.waitClosed(10_000), 'the open session is closed').toBe(true);
    } finally {
      await proxy.stop();
    }
  });

  it('SIGINT: closes a session still open when the (5 s) grace period ends with 57P01, exits 0', {
    timeout: 120_000,
  }, async () => {
    const proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } });
    try {
      const raw = await RawClient.connect(proxy.port);
      expect((await raw.startup(USER)).ok).toBe(true);
      const t0 = Date.now();
      proxy.kill('SIGINT');
      const { messages, closed } = await raw.drainUntilClosed(25_000);
      expect(closed).toBe(true);
      const dt = Date.now() - t0;
      expect(dt, 'not before the 5 s grace period').toBeGreaterThan(4000);
      expect(dt, "SIGINT's 5 s, not SIGTERM's 30 s (generous margin)").toBeLessThan(20_000);
      const errs = messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
      expect(errs.map((e) => e.C)).toEqual(['57P01']);
      const exit = await withTimeout(proxy.exited, 15_000, 'pgrelay to exit');
      expect(exit).toEqual({ code: 0, signal: null });
    } finally {
      await proxy.stop();
    }
  });
});

describe('named prepared statements: at most 10,000 per session (pgrelay keeps each one)', () => {
  let session: ProxyHandle;
  let pooled: ProxyHandle;

  beforeAll(async () => {
    [session, pooled] = await Promise.all([
      startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } }),
      startProxy({ cluster, config: { log_min_messages: 'warning', pool_mode: 'transaction', default_pool_size: 2 } }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([session?.stop(), pooled?.stop()]);
  });

  for (const mode of ['session', 'transaction'] as const) {
    it(`pool_mode = ${mode}: the 10,001st open statement ends the session with FATAL 54000; closing one makes room`, async () => {
      const proxy = mode === 'session' ? session : pooled;
      const raw = await RawClient.connect(proxy.port);
      expect((await raw.startup(USER)).ok).toBe(true);
      for (let from = 0; from < 10_000; from += 1000) {
        const batch: Buffer[] = [];
        for (let i = from; i < from + 1000; i++) batch.push(parseMessage(`s${i}`, `SELECT ${i} AS n`));
        raw.send(...batch, syncMessage());
        const got = await raw.collect('Z', 20_000);
        expect(got.map((m) => m.type).join('')).toBe(`${'1'.repeat(1000)}Z`);
      }
      // Closing one makes room for another.
      raw.send(closeMessage('S', 's0'), parseMessage('another', 'SELECT -1 AS n'), syncMessage());
      expect((await raw.collect('Z', 5000)).map((m) => m.type).join('')).toBe('31Z');
      raw.send(parseMessage('one_too_many', 'SELECT -2 AS n'), syncMessage());
      const end = await raw.drainUntilClosed(10_000);
      expect(end.closed).toBe(true);
      expect(end.messages.map((m) => m.type)).toEqual(['E']);
      expect(errorFields(end.messages[0].body)).toMatchObject({
        S: 'FATAL',
        C: '54000',
        M: expect.stringContaining('10,000 prepared statements'),
      });
    }, 120_000);

    it(`pool_mode = ${mode}: statements dropped with SQL DEALLOCATE make room (a driver that deallocates that way never reaches the limit)`, async () => {
      const proxy = mode === 'session' ? session : pooled;
      const raw = await RawClient.connect(proxy.port);
      expect((await raw.startup(USER)).ok).toBe(true);
      for (let round = 0; round < 3; round++) {
        const batch: Buffer[] = [];
        for (let i = 0; i < 4000; i++) batch.push(parseMessage(`r${round}_${i}`, `SELECT ${i} AS n`));
        raw.send(...batch, syncMessage());
        expect((await raw.collect('Z', 20_000)).map((m) => m.type).join('')).toBe(`${'1'.repeat(4000)}Z`);
        const drops: Buffer[] = [];
        for (let i = 0; i < 4000; i++) drops.push(queryMessage(`DEALLOCATE r${round}_${i}`));
        raw.send(...drops);
        let seen = 0;
        const done = await raw.collect((m) => m.type === 'Z' && ++seen === 4000, 20_000);
        expect(done.filter((m) => m.type === 'E').map((m) => errorFields(m.body).M)).toEqual([]);
      }
      const last = await raw.query('SELECT 1');
      expect(last.errors).toEqual([]);
      raw.end();
    }, 120_000);
  }
});
