/**
 * Foundation: the connection cache. Reuse is proven by the backend pid
 * (pg_backend_pid()) across reconnects; the reset (ABORT + DISCARD ALL) is
 * proven by what the next client on the same backend can no longer see.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, pgClient, type PgClientOptions } from '../support/clients.js';
import { waitForCached } from '../support/cache-probe.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  closeAllRaw,
  isAlive,
  parseMessage,
  queryMessage,
  sleep,
  syncMessage,
  terminateMessage,
} from '../support/raw.js';

const cluster = getCluster();
const tag = `${process.pid}`;
const role = `relay_cache_role_${tag}`;
const db = `relay_cache_db_${tag}`;
const table = `relay_cache_t_${tag}`;
let proxy: ProxyHandle;

async function backendPid(c: pg.Client): Promise<number> {
  return (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
}

/** Connect, read pg_backend_pid(), run fn, end cleanly (Terminate), wait for the reset. */
async function session<T = void>(
  opts: PgClientOptions,
  fn?: (c: pg.Client, pid: number) => Promise<T>,
): Promise<{ pid: number; value: T | undefined }> {
  const c = await pgClient({ port: proxy.port }, opts);
  const pid = await backendPid(c);
  const value = fn ? await fn(c, pid) : undefined;
  await endPg(c);
  await waitReset(pid);
  return { pid, value };
}

/** A session on pgrelay that reads its cache (SHOW pool_pools); not tracked by closeAllClients. */
let watcher: pg.Client | undefined;

/**
 * Wait until pgrelay has reset backend `pid` and put it idle into its cache, as
 * pgrelay itself reports it (SHOW pool_pools). Throws after 20 s.
 */
async function waitReset(pid: number): Promise<void> {
  if (!watcher) {
    watcher = new pg.Client({
      host: '127.0.0.1',
      port: proxy.port,
      user: 'postgres',
      database: 'postgres',
      application_name: `cache-watcher-${tag}`,
      connectionTimeoutMillis: 10_000,
      query_timeout: 20_000,
    });
    watcher.on('error', () => undefined);
    await watcher.connect();
  }
  await waitForCached(watcher, [pid]);
}

beforeAll(async () => {
  proxy = await startProxy({
    cluster,
    config: { log_min_messages: 'warning', load_balance_mode: false, connection_cache: true, max_pool: 4 },
  });
  await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id int)`);
});

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  if (watcher) await endPg(watcher);
  await proxy?.stop();
  await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  await cluster.psql(cluster.primaryId, `DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
});

describe('connection cache keyed by user, database and start-up parameters', () => {
  it('gives the same backend to the same user/database/parameters over reconnects', async () => {
    const app = `cache-same-${tag}`;
    const pids: number[] = [];
    for (let i = 0; i < 4; i++) pids.push((await session({ application_name: app })).pid);
    expect(new Set(pids).size).toBe(1);
  });

  it('uses a different backend for a different application_name, and keeps both cached', async () => {
    const a = (await session({ application_name: `cache-key-a-${tag}` })).pid;
    const b = (await session({ application_name: `cache-key-b-${tag}` })).pid;
    expect(b).not.toBe(a);
    expect((await session({ application_name: `cache-key-a-${tag}` })).pid).toBe(a);
    expect((await session({ application_name: `cache-key-b-${tag}` })).pid).toBe(b);
  });

  it('uses a different backend for another user and another database', async () => {
    await cluster.psql(cluster.primaryId, `DROP ROLE IF EXISTS ${role}; CREATE ROLE ${role} LOGIN`);
    await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await cluster.psql(cluster.primaryId, `CREATE DATABASE ${db}`);
    const app = `cache-userdb-${tag}`;
    const base = await session(
      { application_name: app },
      async (c) => (await c.query('SELECT current_user AS u, current_database() AS d')).rows[0],
    );
    const other = await session(
      { application_name: app, user: role },
      async (c) => (await c.query('SELECT current_user AS u, current_database() AS d')).rows[0],
    );
    const otherDb = await session(
      { application_name: app, database: db },
      async (c) => (await c.query('SELECT current_user AS u, current_database() AS d')).rows[0],
    );
    expect(base.value).toEqual({ u: 'postgres', d: 'postgres' });
    expect(other.value).toEqual({ u: role, d: 'postgres' });
    expect(otherDb.value).toEqual({ u: 'postgres', d: db });
    expect(new Set([base.pid, other.pid, otherDb.pid]).size).toBe(3);
    // Each is reused for its own key.
    expect((await session({ application_name: app, user: role })).pid).toBe(other.pid);
    expect((await session({ application_name: app, database: db })).pid).toBe(otherDb.pid);
    expect((await session({ application_name: app })).pid).toBe(base.pid);
  });

  it('hands two concurrent clients of one key two backends, and caches both', async () => {
    const app = `cache-two-${tag}`;
    const c1 = await pgClient({ port: proxy.port }, { application_name: app });
    const c2 = await pgClient({ port: proxy.port }, { application_name: app });
    const p1 = await backendPid(c1);
    const p2 = await backendPid(c2);
    expect(p1).not.toBe(p2);
    await endPg(c1);
    await endPg(c2);
    await waitReset(p1);
    await waitReset(p2);
    const d1 = await pgClient({ port: proxy.port }, { application_name: app });
    const d2 = await pgClient({ port: proxy.port }, { application_name: app });
    expect(new Set([await backendPid(d1), await backendPid(d2)])).toEqual(new Set([p1, p2]));
  });
});

describe('reset between clients sharing a cached backend', () => {
  it('keeps a session-level SET for the whole session and does not leak it to the next client', async () => {
    const app = `cache-set-${tag}`;
    const first = await session({ application_name: app }, async (c) => {
      await c.query("SET work_mem = '7MB'");
      await c.query("SET statement_timeout = '123s'");
      await c.query('SET search_path = pg_catalog, public');
      // Still set in later statements, simple and extended protocol.
      const a = (await c.query('SHOW work_mem')).rows[0].work_mem;
      const b = (await c.query({ text: "SELECT current_setting('statement_timeout') AS v, $1::int AS x", values: [1] }))
        .rows[0].v;
      const s = (await c.query('SHOW search_path')).rows[0].search_path;
      return [a, b, s];
    });
    expect(first.value).toEqual(['7MB', '123s', 'pg_catalog, public']);
    const second = await session({ application_name: app }, async (c) => {
      const r = await c.query(
        "SELECT current_setting('work_mem') AS w, current_setting('statement_timeout') AS t, current_setting('search_path') AS s",
      );
      return r.rows[0];
    });
    expect(second.pid).toBe(first.pid);
    expect(second.value).toEqual({ w: '4MB', t: '0', s: '"$user", public' });
  });

  it('reports the reset values of GUC_REPORT parameters (ParameterStatus) to the next client', async () => {
    const app = `cache-report-${tag}`;
    const a = await RawClient.connect(proxy.port);
    const sa = await a.startup({ user: 'postgres', database: 'postgres', application_name: app });
    expect(sa.ok).toBe(true);
    const defaults = {
      TimeZone: sa.parameters.TimeZone,
      DateStyle: sa.parameters.DateStyle,
      application_name: sa.parameters.application_name,
    };
    expect(defaults.application_name).toBe(app);
    const pidA = Number((await a.query('SELECT pg_backend_pid()')).rows[0][0]);
    const set = await a.query(
      "SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'SQL, DMY'; SET application_name = 'renamed'",
    );
    expect(set.errors).toEqual([]);
    a.end();
    await a.waitClosed(3000);
    await waitReset(pidA);

    const b = await RawClient.connect(proxy.port);
    const sb = await b.startup({ user: 'postgres', database: 'postgres', application_name: app });
    expect(sb.ok).toBe(true);
    const q = await b.query(
      "SELECT pg_backend_pid(), current_setting('TimeZone'), current_setting('DateStyle'), current_setting('application_name')",
    );
    expect(Number(q.rows[0][0])).toBe(pidA);
    expect(q.rows[0].slice(1)).toEqual([defaults.TimeZone, defaults.DateStyle, app]);
    expect({
      TimeZone: sb.parameters.TimeZone,
      DateStyle: sb.parameters.DateStyle,
      application_name: sb.parameters.application_name,
    }).toEqual(defaults);
    b.end();
  });

  it('drops temp tables, prepared statements (PREPARE and protocol-level), LISTENs and advisory locks', async () => {
    const app = `cache-objects-${tag}`;
    const lockKey = 770000 + (process.pid % 10000);
    const first = await session({ application_name: app }, async (c) => {
      await c.query('CREATE TEMP TABLE relay_cache_tmp (x int)');
      await c.query('INSERT INTO relay_cache_tmp VALUES (1)');
      await c.query('PREPARE relay_cache_prep AS SELECT 1 AS one');
      const named = await c.query({ name: 'relay_cache_named', text: 'SELECT $1::int AS v', values: [5] });
      expect(named.rows[0].v).toBe(5);
      await c.query('LISTEN relay_cache_chan');
      await c.query('SELECT pg_advisory_lock($1)', [lockKey]);
      const r = await c.query('SELECT count(*)::int AS n FROM pg_prepared_statements');
      return r.rows[0].n as number;
    });
    expect(first.value).toBe(2);

    const second = await session({ application_name: app }, async (c) => {
      const r = await c.query(
        "SELECT to_regclass('pg_temp.relay_cache_tmp') IS NULL AS no_temp, (SELECT count(*)::int FROM pg_prepared_statements) AS prepared, (SELECT count(*)::int FROM pg_listening_channels()) AS listens, (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks",
      );
      // The same names can be created again (no 42P07 / 42P05).
      await c.query('CREATE TEMP TABLE relay_cache_tmp (y text)');
      await c.query('PREPARE relay_cache_prep AS SELECT 2 AS two');
      const named = await c.query({ name: 'relay_cache_named', text: 'SELECT $1::text AS other', values: ['z'] });
      expect(named.rows[0].other).toBe('z');
      return r.rows[0];
    });
    expect(second.pid).toBe(first.pid);
    expect(second.value).toEqual({ no_temp: true, prepared: 0, listens: 0, locks: 0 });
    // The advisory lock is free for another session too.
    const direct = await pgClient({ port: cluster.primary.port });
    expect((await direct.query('SELECT pg_try_advisory_lock($1) AS ok', [lockKey])).rows[0].ok).toBe(true);
    await direct.query('SELECT pg_advisory_unlock($1)', [lockKey]);
  });

  it('drops protocol-level prepared statements made by a raw Parse (extended protocol)', async () => {
    const app = `cache-rawparse-${tag}`;
    const a = await RawClient.connect(proxy.port);
    expect((await a.startup({ user: 'postgres', database: 'postgres', application_name: app })).ok).toBe(true);
    const pidA = Number((await a.query('SELECT pg_backend_pid()')).rows[0][0]);
    a.send(parseMessage('relay_raw_stmt', 'SELECT 1'), syncMessage());
    const r = await a.collect('Z', 5000);
    expect(r.map((m) => m.type).join('')).toBe('1Z');
    a.end();
    await a.waitClosed(3000);
    await waitReset(pidA);
    const b = await RawClient.connect(proxy.port);
    expect((await b.startup({ user: 'postgres', database: 'postgres', application_name: app })).ok).toBe(true);
    const q = await b.query(
      "SELECT pg_backend_pid(), (SELECT count(*) FROM pg_prepared_statements WHERE name = 'relay_raw_stmt')",
    );
    expect(Number(q.rows[0][0])).toBe(pidA);
    expect(q.rows[0][1]).toBe('0');
    b.send(parseMessage('relay_raw_stmt', 'SELECT 2'), syncMessage());
    expect((await b.collect('Z', 5000)).map((m) => m.type).join('')).toBe('1Z');
    b.end();
  });

  it('rolls back a transaction left open by a client that terminates', async () => {
    const app = `cache-opentx-${tag}`;
    const first = await session({ application_name: app }, async (c) => {
      await c.query('BEGIN');
      await c.query(`INSERT INTO ${table} VALUES (42)`);
      await c.query("SET LOCAL work_mem = '9MB'");
    });
    const second = await session({ application_name: app }, async (c) => {
      const r = await c.query(
        `SELECT (SELECT count(*)::int FROM ${table} WHERE id = 42) AS n, current_setting('work_mem') AS w`,
      );
      // The connection is idle (not in a transaction): BEGIN gives no warning, COMMIT works.
      await c.query('BEGIN');
      await c.query('COMMIT');
      return r.rows[0];
    });
    expect(second.pid).toBe(first.pid);
    expect(second.value).toEqual({ n: 0, w: '4MB' });
    expect(await cluster.psql(cluster.primaryId, `SELECT count(*) FROM ${table} WHERE id = 42`)).toBe('0');
  });

  it('rolls back a failed transaction left by a client and reuses the backend', async () => {
    const app = `cache-failedtx-${tag}`;
    const first = await session({ application_name: app }, async (c) => {
      await c.query('BEGIN');
      await expect(c.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
    });
    const second = await session(
      { application_name: app },
      async (c) => (await c.query('SELECT 1 AS one')).rows[0].one as number,
    );
    expect(second.pid).toBe(first.pid);
    expect(second.value).toBe(1);
  });

  it('a client that ends (Terminate) before its reply came: the backend finishes it, is reset and cached', async () => {
    // PostgreSQL flushes an ErrorResponse at once and its ReadyForQuery after; node-postgres
    // rejects the query on the first and may end before the second arrives. Here the raw client
    // sends a failing query inside a transaction and Terminate together, reading nothing.
    const params = { user: 'postgres', database: 'postgres', application_name: `cache-early-${tag}` };
    const raw = await RawClient.connect(proxy.port);
    const start = await raw.startup(params);
    expect(start.ok).toBe(true);
    const pid = start.pid;
    expect((await raw.query('BEGIN')).status).toBe('T');
    raw.send(queryMessage('SELECT pg_sleep(0.3), 1/0'), terminateMessage());
    await raw.waitClosed(10_000);
    await waitReset(pid);
    // The same start-up parameters (the cache key): the same backend, out of its transaction.
    const next = await RawClient.connect(proxy.port);
    expect((await next.startup(params)).pid).toBe(pid);
    const r = await next.query('SELECT 1 AS one');
    expect({ rows: r.rows, status: r.status }).toEqual({ rows: [['1']], status: 'I' });
    next.end();
  });
});

describe('reset of standby links with load balancing on', () => {
  // Weights make the standby the load-balance node of every session, so reads
  // run on a standby link that is cached and reused like the primary's.
  const standby = cluster.standbys[0];
  let lb: ProxyHandle;
  let lbWatcher: pg.Client | undefined;
  beforeAll(async () => {
    const weights: Record<string, number> = {};
    for (const n of cluster.nodes) weights[`backend_weight${n.id}`] = n.id === standby.id ? 1 : 0;
    lb = await startProxy({
      cluster,
      config: {
        log_min_messages: 'warning',
        load_balance_mode: true,
        connection_cache: true,
        max_pool: 4,
        ...weights,
      },
    });
    lbWatcher = new pg.Client({
      host: '127.0.0.1',
      port: lb.port,
      user: 'postgres',
      database: 'postgres',
      application_name: `cache-lb-watcher-${tag}`,
      connectionTimeoutMillis: 10_000,
      query_timeout: 20_000,
    });
    lbWatcher.on('error', () => undefined);
    await lbWatcher.connect();
  });
  afterAll(async () => {
    if (lbWatcher) await endPg(lbWatcher);
    await lb?.stop();
  });

  it('does not leak SET, a custom GUC, application_name, prepared statements or temp tables to the next client (standby and primary)', async () => {
    const app = `cache-lb-${tag}`;
    const defaultWorkMem = await cluster.psql(standby.id, 'SHOW work_mem');
    expect(defaultWorkMem).not.toBe('7MB');
    // A plain SELECT goes to the load-balance node (the standby); the hint sends the same to the primary.
    // (pg_backend_pid() always reads from the primary, whose pid the client's BackendKeyData carries:
    // the standby backend's pid is read on the standby itself, by its application_name.)
    const probe =
      "SELECT inet_server_port() AS port, current_setting('work_mem') AS work_mem, current_setting('application_name') AS app, coalesce(current_setting('myapp.x', true), '') AS x";
    const primaryProbe = `/*NO LOAD BALANCE*/ ${probe}, pg_backend_pid() AS pid, to_regclass('pg_temp.relay_lb_tmp') IS NOT NULL AS temp`;
    const standbyPid = async (name: string): Promise<number> =>
      Number(
        await cluster.psql(
          standby.id,
          `SELECT pid FROM pg_stat_activity WHERE application_name = '${name}' AND backend_type = 'client backend'`,
        ),
      );

    const c1 = await pgClient({ port: lb.port }, { application_name: app });
    await c1.query("SET work_mem = '7MB'");
    await c1.query("SET application_name = 'leaked-app'");
    await c1.query("SET myapp.x = 'leaked'");
    const s1 = (await c1.query(probe)).rows[0];
    // The state is really on the standby link (otherwise this test could not fail).
    expect(s1).toMatchObject({ port: standby.port, work_mem: '7MB', app: 'leaked-app', x: 'leaked' });
    s1.pid = await standbyPid('leaked-app');
    expect(s1.pid).toBeGreaterThan(0);
    const named1 = await c1.query({
      name: 'relay_lb_named',
      text: 'SELECT inet_server_port() AS port, $1::int AS v',
      values: [1],
    });
    expect(named1.rows[0]).toEqual({ port: standby.port, v: 1 });
    await c1.query('CREATE TEMP TABLE relay_lb_tmp (x int)');
    const p1 = (await c1.query(primaryProbe)).rows[0];
    expect(p1).toMatchObject({
      port: cluster.primary.port,
      work_mem: '7MB',
      app: 'leaked-app',
      x: 'leaked',
      temp: true,
    });
    await endPg(c1);
    // Both links were reset and are idle in the cache, as pgrelay reports it.
    await waitForCached(lbWatcher as pg.Client, [s1.pid as number, p1.pid as number]);

    const c2 = await pgClient({ port: lb.port }, { application_name: app });
    const s2 = (await c2.query(probe)).rows[0];
    // Same standby backend (reused from the cache), back to its defaults.
    expect(s2).toEqual({ port: standby.port, work_mem: defaultWorkMem, app, x: '' });
    expect(await standbyPid(app)).toBe(s1.pid);
    // The protocol-level statement is gone from the standby: the same name parses again (no 42P05).
    const named2 = await c2.query({
      name: 'relay_lb_named',
      text: 'SELECT inet_server_port() AS port, $1::text AS other',
      values: ['z'],
    });
    expect(named2.rows[0]).toEqual({ port: standby.port, other: 'z' });
    const p2 = (await c2.query(primaryProbe)).rows[0];
    expect(p2).toEqual({
      port: cluster.primary.port,
      pid: p1.pid,
      work_mem: defaultWorkMem,
      app,
      x: '',
      temp: false,
    });
    // Seen from outside too: the standby backend carries the start-up application_name again (above).
    await endPg(c2);
  });
});

describe('connection_cache = off', () => {
  it('opens a new backend for every client', async () => {
    const p2 = await startProxy({
      cluster,
      config: { log_min_messages: 'warning', load_balance_mode: false, connection_cache: false },
    });
    try {
      const pids: number[] = [];
      for (let i = 0; i < 3; i++) {
        const c = await pgClient({ port: p2.port }, { application_name: `cache-off-${tag}` });
        pids.push(await backendPid(c));
        // No wait: with the cache off the next client must get a new backend at once.
        await endPg(c);
      }
      expect(new Set(pids).size).toBe(3);
      // The released backends are really gone.
      const deadline = Date.now() + 20_000;
      let left = '';
      do {
        left = await cluster.psql(
          cluster.primaryId,
          `SELECT count(*) FROM pg_stat_activity WHERE pid IN (${pids.join(',')})`,
        );
        if (left === '0') break;
        await sleep(100);
      } while (Date.now() < deadline);
      expect(left).toBe('0');
    } finally {
      expect(await p2.stop()).toBe(0);
    }
  });
});

it('pgrelay is still running after the file', () => {
  expect(isAlive(proxy.pid)).toBe(true);
});
