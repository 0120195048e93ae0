/**
 * README features of the connection cache and of client admission, each with a
 * test that fails when the feature breaks (shared cluster; every test starts its
 * own pgrelay with the setting under test and leaves the nodes alone):
 *
 *  - max_pool: idle cached connections per (node, user, database, start-up
 *    parameters) are bounded;
 *  - connection_life_time: a cached connection idle longer than it is closed,
 *    not handed out again;
 *  - template0/template1 connections are never cached (postgres is);
 *  - client_idle_limit: an idle client is disconnected with 57P05, a busy one
 *    (statement running longer than the limit) is not;
 *  - reserved_connections > 0: the client beyond num_init_children − R gets
 *    53300 "Sorry, too many clients already" at once instead of queueing.
 *
 * The state awaited is read from PostgreSQL (pg_stat_activity on the primary,
 * by the test's own application_name), polled with a deadline. Load balancing
 * is off where only the primary's connections matter.
 */
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { asyncErrors, connect, destroy, until } from '../support/failover.js';
import { startProxy, type ConfValue, type ProxyHandle } from '../support/proxy.js';

const cluster = getCluster();
let proxy: ProxyHandle | undefined;
const open = new Set<pg.Client>();
let seq = 0;

type PgErr = Error & { code?: string };

/** A unique application_name for this file's clients (parallel files share the cluster). */
function appName(what: string): string {
  seq += 1;
  return `feat-${what}-${process.pid}-${seq}`;
}

async function start(config: Record<string, ConfValue>): Promise<ProxyHandle> {
  proxy = await startProxy({ cluster, config: { log_min_messages: 'info', ...config } });
  return proxy;
}

async function client(app: string, opts: Omit<pg.ClientConfig, 'port'> = {}): Promise<pg.Client> {
  const c = await connect((proxy as ProxyHandle).port, { application_name: app, ...opts });
  open.add(c);
  return c;
}

/** End a client cleanly (Terminate), bounded. */
async function end(c: pg.Client): Promise<void> {
  open.delete(c);
  await Promise.race([c.end().catch(() => undefined), new Promise((r) => setTimeout(r, 3000))]);
}

async function backendPid(c: pg.Client): Promise<number> {
  return Number((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
}

/** Backend pids on the primary with this application_name (any database). */
async function pidsOnPrimary(app: string): Promise<number[]> {
  const out = await cluster.psql(
    cluster.primaryId,
    `SELECT pid FROM pg_stat_activity WHERE application_name = '${app}' ORDER BY pid`,
  );
  return out.split('\n').filter(Boolean).map(Number);
}

async function alive(pid: number): Promise<boolean> {
  return (await cluster.psql(cluster.primaryId, `SELECT count(*) FROM pg_stat_activity WHERE pid = ${pid}`)) === '1';
}

/** pgrelay reset backend `pid` and holds it idle (its last statement is the reset's DISCARD ALL). */
async function cached(pid: number): Promise<boolean> {
  return (
    (await cluster.psql(cluster.primaryId, `SELECT state || '|' || query FROM pg_stat_activity WHERE pid = ${pid}`)) ===
    'idle|DISCARD ALL'
  );
}

afterEach(async () => {
  for (const c of open) destroy(c);
  open.clear();
  await proxy?.stop();
  proxy = undefined;
});

describe('connection cache settings (README: Configuration, Differences from pgpool-II)', () => {
  it('max_pool = 2: of 4 backend connections released at once, 2 stay cached (and are reused), the others are closed', async () => {
    await start({ load_balance_mode: false, max_pool: 2, num_init_children: 8 });
    const app = appName('maxpool');
    const clients = await Promise.all([0, 1, 2, 3].map(() => client(app)));
    const pids = await Promise.all(clients.map(backendPid));
    expect(new Set(pids).size).toBe(4);
    expect(await pidsOnPrimary(app)).toEqual([...pids].sort((a, b) => a - b));

    await Promise.all(clients.map(end));
    let left: number[] = [];
    await until(
      async () => (left = await pidsOnPrimary(app)).length === 2,
      15_000,
      'the idle connections of the key to be bounded by max_pool = 2',
    );
    for (const pid of left) expect(pids).toContain(pid);
    await until(async () => (await Promise.all(left.map(cached))).every(Boolean), 10_000, 'both left ones cached');
    // They are the cache: two new clients get exactly them.
    const again = await Promise.all([client(app), client(app)]);
    expect((await Promise.all(again.map(backendPid))).sort((a, b) => a - b)).toEqual(left);
  });

  it('connection_life_time = 3: a cached connection is reused while younger, closed once idle longer, and never handed out again', async () => {
    await start({ load_balance_mode: false, connection_life_time: 3 });
    const app = appName('lifetime');
    const c1 = await client(app);
    const pid = await backendPid(c1);
    await end(c1);
    // Cached: the next client gets the same backend.
    const c2 = await client(app);
    expect(await backendPid(c2)).toBe(pid);
    await end(c2);
    await until(() => cached(pid), 10_000, 'the connection back in the cache');
    const idleSince = Date.now();
    await until(async () => !(await alive(pid)), 20_000, `backend ${pid} closed after connection_life_time`);
    const closedAfter = Date.now() - idleSince;
    process.stderr.write(
      `[features] cached connection closed ${closedAfter} ms after it became idle (life time 3 s)\n`,
    );
    expect(closedAfter, 'closed by age, not at once').toBeGreaterThanOrEqual(2000);
    const c3 = await client(app);
    expect(await backendPid(c3)).not.toBe(pid);
  });

  it('connections to template1 are never cached (they would block CREATE DATABASE); to postgres they are', async () => {
    await start({ load_balance_mode: false });
    const app = appName('template');
    const t1 = await client(app, { database: 'template1' });
    const tpid = await backendPid(t1);
    await end(t1);
    await until(async () => !(await alive(tpid)), 10_000, `the template1 backend ${tpid} closed`);
    const t2 = await client(app, { database: 'template1' });
    expect(await backendPid(t2)).not.toBe(tpid);
    await end(t2);
    await until(async () => (await pidsOnPrimary(app)).length === 0, 10_000, 'no template1 backend left');

    // Control: the same with database postgres stays cached and is reused.
    const p1 = await client(app);
    const ppid = await backendPid(p1);
    await end(p1);
    await until(() => cached(ppid), 10_000, 'the postgres backend cached');
    const p2 = await client(app);
    expect(await backendPid(p2)).toBe(ppid);
    // template0 does not accept connections (datallowconn = false), so only template1 can be tried here.
  });
});

describe('client limits (README: Configuration)', () => {
  it('client_idle_limit = 2: an idle client is disconnected with 57P05; one whose statement runs longer is not', async () => {
    await start({ client_idle_limit: 2 });
    const idle = await client(appName('idle'));
    const busy = await client(appName('busy'));
    await busy.query('SELECT 1');
    await idle.query('SELECT 1');
    const idleFrom = Date.now();
    const busyQuery = busy.query<{ ok: string }>("SELECT pg_sleep(3.5)::text || 'slept' AS ok").then(
      (r) => r.rows,
      (e: PgErr) => e,
    );

    let err: PgErr | undefined;
    await until(
      () => (err = asyncErrors(idle).find((e) => e.code !== undefined)) !== undefined,
      15_000,
      'the idle client to get its FATAL',
    );
    const after = Date.now() - idleFrom;
    process.stderr.write(`[features] idle client disconnected after ${after} ms (client_idle_limit 2 s)\n`);
    expect(err?.code).toBe('57P05');
    expect(err?.message).toBe('terminating connection due to client_idle_limit: idle for more than 2 s');
    expect(after, 'not before it was idle for the limit').toBeGreaterThanOrEqual(1900);

    // The busy client's statement ran 3.5 s (> the limit + the 1 s upkeep period) and it goes on.
    const busyResult = await busyQuery;
    expect(busyResult, busyResult instanceof Error ? `${busyResult.code} ${busyResult.message}` : '').toEqual([
      { ok: 'slept' },
    ]);
    expect((await busy.query('SELECT 2 AS n')).rows).toEqual([{ n: 2 }]);
    expect(asyncErrors(busy)).toEqual([]);
  });

  it('reserved_connections = 1 with num_init_children = 3: the third client gets 53300 at once, a freed slot admits again', async () => {
    // Without reserved_connections the third client would wait up to client_queue_timeout (20 s).
    await start({ num_init_children: 3, reserved_connections: 1, client_queue_timeout: 20 });
    const app = appName('reserved');
    const a = await client(app);
    const b = await client(app);
    await Promise.all([a.query('SELECT 1'), b.query('SELECT 1')]);

    const t0 = Date.now();
    let refused: PgErr | undefined;
    try {
      open.add(await client(app, { connectionTimeoutMillis: 10_000 }));
    } catch (e) {
      refused = e as PgErr;
    }
    const ms = Date.now() - t0;
    expect(refused, 'the third client must be refused').toBeDefined();
    expect(refused?.code, refused?.message).toBe('53300');
    expect(refused?.message).toBe('Sorry, too many clients already');
    expect(ms, 'refused at once, not after queueing').toBeLessThan(5000);

    await end(a);
    await until(
      async () => {
        const c = await client(app, { connectionTimeoutMillis: 5000 });
        await c.query('SELECT 1');
        return true;
      },
      15_000,
      'a client admitted after one left',
    );
    await b.query('SELECT 1');
  });
});
