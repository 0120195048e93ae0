/**
 * pool_mode = transaction with load balancing (primary weight 0, standbys 1): an autocommit
 * read takes only its load-balance node's connection, not the primary's. With pool size 1
 * and the only primary connection held by another client's open transaction, reads
 * (node-postgres, and 40 pgbench clients) still run, on the standbys, none on the primary;
 * writes and transactions get the primary; pipelined reads and writes (simple and extended)
 * keep their order; a standby backend terminated under a read is replaced by the primary.
 * Read-your-writes in this mode: read-your-writes.test.ts (it pauses replay on its own cluster).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  closeAllClients,
  endPg,
  endSql,
  extendedQuery,
  nodeClient,
  pgClient,
  queryRows,
  sqlClient,
  withTimeout,
} from '../support/clients.js';
import { getCluster } from '../support/cluster.js';
import { type ProxyHandle, pgbenchCounts, runPgbench, startProxy } from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
  closeAllRaw,
  executeMessage,
  firstError,
  flushMessage,
  parseMessage,
  queryMessage,
  summarize,
  syncMessage,
  terminateMessage,
} from '../support/raw.js';
import { nodeOfPort } from '../support/routing.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
const db = `pool_txr_${process.pid}`;
const P = cluster.primaryId;
const [S1, S2] = cluster.nodes.map((n) => n.id).filter((id) => id !== P);
let proxy: ProxyHandle;
let dir: string;

beforeAll(async () => {
  await cluster.psql(P, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await cluster.psql(P, `CREATE DATABASE ${db}`);
  await cluster.psql(
    P,
    'CREATE TABLE rd (id int PRIMARY KEY, v int); INSERT INTO rd SELECT g, g FROM generate_series(1, 1000) g; CREATE TABLE wr (id int, k text)',
    db,
  );
  await cluster.waitForCatchup();
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgrelay-txr-'));
  proxy = await startProxy({
    cluster,
    env: process.env.TXR_TRACE ? { PGRELAY_TRACE: '1' } : undefined,
    config: txrConfig(3),
  });
}, 60_000);

function txrConfig(queryWaitTimeout: number): Record<string, string | number | boolean> {
  return {
    log_min_messages: process.env.TXR_LOG ?? 'warning',
    pool_mode: 'transaction',
    // One connection per node: a client holding the primary's would stop every other one that needs it.
    default_pool_size: 1,
    query_wait_timeout: queryWaitTimeout,
    [`backend_weight${P}`]: 0,
    [`backend_weight${S1}`]: 1,
    [`backend_weight${S2}`]: 1,
    // The holder's transactions run on the primary alone, the readers' reads on S2; others by weight.
    app_name_redirect_preference_list: `holder:primary,reader:${S2}`,
    // Functions are reads and relations need no catalog lookup: no read has to ask the primary first.
    write_function_list: 'nextval',
    check_unlogged_table: false,
    check_temp_table: 'trace',
  };
}

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  const code = await proxy?.stop();
  rmSync(dir, { recursive: true, force: true });
  await cluster.psql(P, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  expect(code).toBe(0);
});

let busyStandbys = 0;

/**
 * `client` (reads drawn to S2) runs `SELECT pg_sleep(30)` until it holds S2's one connection.
 * `done()`: whether it has ended; `cancel()` cancels it from a direct connection and returns
 * the SQLSTATE it ended with.
 */
async function busyStandby(
  client: pg.Client,
): Promise<{ done: () => boolean; cancel: () => Promise<string | undefined> }> {
  // Its own text: a sleep an earlier test left running (its pgrelay stopped) is not counted.
  const SLEEP = `SELECT pg_sleep(30) AS busy_${++busyStandbys}`;
  let ended = false;
  const sleeping = client.query(SLEEP).then(
    () => undefined,
    (e: { code?: string }) => e.code,
  );
  void sleeping.then(() => {
    ended = true;
  });
  await pollUntil(
    // This file's database only: other files run the same statement on the shared cluster's standbys.
    () =>
      cluster.psql(
        S2,
        `SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND query = '${SLEEP}' AND state = 'active'`,
      ),
    (n) => n === '1',
    { what: "the read holding the standby's one connection", timeoutMs: 10_000 },
  );
  return {
    done: () => ended,
    cancel: async () => {
      await cluster.psql(
        S2,
        `SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = '${db}' AND query = '${SLEEP}'`,
      );
      return sleeping;
    },
  };
}

/** A client in an open transaction that wrote: it holds the only primary connection (and no other). */
async function holdPrimary(): Promise<pg.Client> {
  const holder = await pgClient(proxy, { database: db, application_name: 'holder' });
  await holder.query('BEGIN');
  await holder.query("INSERT INTO wr VALUES (0, 'holder')");
  return holder;
}

/** Client backends of the test database on node `id`, other than the holder's, by application_name. */
async function othersOn(id: number): Promise<string[]> {
  const c = await nodeClient(cluster, cluster.node(id));
  try {
    const r = await c.query(
      "SELECT application_name AS a FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND application_name <> 'holder'",
      [db],
    );
    return r.rows.map((x) => x.a as string);
  } finally {
    await c.end();
  }
}

/** pgbench exited 0 with no failed transaction and `processed` transactions (pgrelay's log tail on failure). */
function expectPgbenchClean(
  r: { code: number | null; stdout: string; stderr: string },
  processed: string,
  label: string,
): void {
  const out = `${label}\n${r.stdout.slice(-1500)}\n${r.stderr.slice(-1500)}\n${proxy.logs().slice(-1500)}`;
  expect(r.code, out).toBe(0);
  const counts = pgbenchCounts(r.stdout);
  expect(counts.failed ?? 0, out).toBe(0);
  expect(String(counts.processed), out).toBe(processed);
}

async function selectCounts(): Promise<Map<number, number>> {
  const rows = await queryRows(proxy, 'SHOW pool_nodes', { database: db });
  return new Map(rows.map((r) => [Number(r.node_id), Number(r.select_cnt)]));
}

describe('pool_mode = transaction: autocommit reads take only a standby connection', () => {
  it('a read runs on its standby while another client holds the only primary connection', async () => {
    const holder = await holdPrimary();
    const reader = await pgClient(proxy, { database: db, application_name: 'reader' });
    const r = await withTimeout(
      reader.query('SELECT inet_server_port() AS port, count(*)::int AS n FROM rd'),
      10_000,
      'the read',
    );
    expect(r.rows[0].n).toBe(1000);
    expect(nodeOfPort(cluster, r.rows[0].port as number)).toBe(S2);
    expect(await othersOn(P), 'client backends on the primary besides the holder').toEqual([]);
    await holder.query('COMMIT');
    await Promise.all([endPg(holder), endPg(reader)]);
  });

  it("a write whose read node's pool is busy does not wait for it while holding the primary's connection: its reads go to the primary", async () => {
    // The standby's one connection runs a long read; a writer drawn to that standby takes the
    // primary's connection and, waiting for the standby's while holding it, would stop every
    // other client that needs the primary (up to query_wait_timeout, long here). It runs on
    // the primary alone instead, while the read still runs.
    const own = await startProxy({ cluster, config: txrConfig(120) });
    const sleeper = await pgClient(own, { database: db, application_name: 'reader' });
    const writer = await pgClient(own, { database: db, application_name: 'reader' });
    try {
      const busy = await busyStandby(sleeper);
      await writer.query("INSERT INTO wr VALUES (1, 'busy standby')");
      expect(busy.done(), "the write ran while the standby's connection was busy").toBe(false);
      expect(await cluster.psql(P, "SELECT count(*) FROM wr WHERE k = 'busy standby'", db)).toBe('1');
      expect(await busy.cancel()).toBe('57014');
    } finally {
      await Promise.all([endPg(sleeper), endPg(writer)]);
      await own.stop();
    }
  }, 90_000);

  it("a read waiting for a standby's pool when that standby is detached runs elsewhere at once, never on the detached node", async () => {
    const own = await startProxy({ cluster, config: { ...txrConfig(120), admin_users: 'postgres' } });
    const sleeper = await pgClient(own, { database: db, application_name: 'reader' });
    const waiter = await pgClient(own, { database: db, application_name: 'reader' });
    const admin = await pgClient(own, { database: db, application_name: 'txr-admin' });
    try {
      const busy = await busyStandby(sleeper);
      const read = waiter.query<{ port: number }>('SELECT inet_server_port() AS port');
      await pollUntil(
        async () => (await admin.query<{ status: string }>('SHOW pool_processes')).rows.map((r) => r.status),
        (states) => states.includes('Wait for backend connection'),
        { what: "the read waiting for the standby's one connection", timeoutMs: 10_000 },
      );
      await admin.query(`PGPOOL DETACH NODE ${S2}`);
      const port = await Promise.race([
        read.then((r) => Number(r.rows[0]?.port)),
        new Promise<number>((resolve) => setTimeout(() => resolve(-1), 15_000)),
      ]);
      expect(port, 'the read did not run within 15 s of the detach').not.toBe(-1);
      expect(busy.done(), "the read waited for the detached standby's connection").toBe(false);
      expect(port).not.toBe(cluster.node(S2).port);
      expect(await busy.cancel()).toBe('57014');
      await admin.query(`PGPOOL ATTACH NODE ${S2}`);
    } finally {
      await Promise.all([endPg(sleeper), endPg(waiter), endPg(admin)]);
      await own.stop();
    }
  }, 90_000);

  it('a named COMMIT prepared while the unit held no standby connection is still run on the standby of a later transaction (postgres.js prepares its commit)', async () => {
    // The standby's one connection is busy: a transaction gets the primary's alone, and the
    // client prepares its COMMIT there. In its next transaction the standby is free and takes
    // the mirrored BEGIN: the COMMIT must end the transaction there too, or that backend stays
    // idle in transaction and the session never gives its connections back.
    const own = await startProxy({
      cluster,
      config: { ...txrConfig(120), [`backend_weight${S1}`]: 0, app_name_redirect_preference_list: '' },
    });
    const app = 'txr-named-commit';
    const sleeper = await pgClient(own, { database: db, application_name: 'txr-sleeper' });
    const a = await RawClient.connect(own.port);
    try {
      const busy = await busyStandby(sleeper);
      expect((await a.startup({ user: 'postgres', database: db, application_name: app })).ok).toBe(true);
      const commit = async (parse: boolean): Promise<string> => {
        a.send(
          ...(parse ? [parseMessage('txr_commit', 'COMMIT')] : []),
          bindMessage('', 'txr_commit'),
          executeMessage(''),
          syncMessage(),
        );
        return (await a.collect('Z', 10_000)).map((m) => m.type).join('');
      };
      expect((await a.query('BEGIN')).errors).toEqual([]);
      expect(await commit(true), 'COMMIT prepared and run with the primary alone').toBe('12CZ');
      expect(await busy.cancel()).toBe('57014');
      expect((await a.query('BEGIN')).errors).toEqual([]);
      // The standby's connection takes the session's settings in front of what it runs (not
      // waited for once a server took them): seen there a moment later.
      await pollUntil(
        () => cluster.psql(S2, `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}'`),
        (n) => n === '1',
        { what: 'the standby connection that takes the mirrored BEGIN', timeoutMs: 10_000 },
      );
      expect(await commit(false)).toBe('2CZ');
      expect(
        await cluster.psql(
          S2,
          `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}' AND state LIKE 'idle in transaction%'`,
        ),
        'the standby left in the transaction',
      ).toBe('0');
    } finally {
      a.end();
      await endPg(sleeper);
      await own.stop();
    }
  }, 90_000);

  it('40 pgbench clients (simple protocol, select only) read on the standbys, none on the primary, whose only connection is held', {
    timeout: 60_000,
  }, async () => {
    const script = path.join(dir, 'select.sql');
    writeFileSync(script, '\\set id random(1, 1000)\nSELECT v FROM rd WHERE id = :id;\n');
    const holder = await holdPrimary();
    const before = await selectCounts();
    let peakOnPrimary: string[] = [];
    const run = runPgbench(['-n', '-c', '40', '-j', '2', '-t', '25', '-f', script], {
      port: proxy.port,
      database: db,
      timeoutMs: 45_000,
    });
    let done = false;
    void run.finally(() => {
      done = true;
    });
    while (!done) {
      const on = await othersOn(P);
      if (on.length > peakOnPrimary.length) peakOnPrimary = on;
      await new Promise((r) => setTimeout(r, 50));
    }
    expectPgbenchClean(await run, '1000', 'simple');
    expect(peakOnPrimary, 'client backends on the primary besides the holder').toEqual([]);
    const after = await selectCounts();
    const delta = (id: number): number => (after.get(id) ?? 0) - (before.get(id) ?? 0);
    expect(delta(P)).toBe(0);
    expect(delta(S1) + delta(S2)).toBeGreaterThanOrEqual(1000);
    await holder.query('COMMIT');
    await endPg(holder);
  });

  it('a transaction that writes, and an autocommit write, get the primary', async () => {
    const c = await pgClient(proxy, { database: db, application_name: 'reader' });
    const port = async (sql: string): Promise<number> =>
      nodeOfPort(cluster, (await c.query(sql)).rows[0].port as number);
    expect(await port('SELECT inet_server_port() AS port')).toBe(S2);
    await c.query('BEGIN');
    await c.query("INSERT INTO wr VALUES (1, 'tx')");
    expect(await port('SELECT inet_server_port() AS port FROM wr LIMIT 1')).toBe(P);
    await c.query('COMMIT');
    expect(await port("INSERT INTO wr VALUES (2, 'auto') RETURNING inet_server_port() AS port")).toBe(P);
    await endPg(c);
  });

  it('pipelined reads and writes keep their order: simple Queries, and an extended batch mixing both', async () => {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ user: 'postgres', database: db, application_name: 'reader' });
    expect(st.ok, JSON.stringify(st.error)).toBe(true);
    const PORT = 'SELECT inet_server_port()::text AS port';
    raw.send(
      queryMessage(PORT),
      queryMessage(`INSERT INTO wr VALUES (3, 'pipelined') RETURNING inet_server_port()::text`),
      queryMessage(PORT),
      queryMessage(`SELECT count(*)::text FROM wr WHERE k = 'pipelined'`),
    );
    let zs = 0;
    const simple = await raw.collect((m) => m.type === 'Z' && ++zs === 4, 10_000);
    const rows = summarize(simple);
    expect(rows.errors, JSON.stringify(rows.errors)).toEqual([]);
    // The reads after the insert: read-your-writes (session) sends them to a standby that replayed it, or the primary.
    expect(rows.rows.length, JSON.stringify(rows.rows)).toBe(4);
    expect(rows.rows.slice(0, 2).map((x) => nodeOfPort(cluster, Number(x[0])))).toEqual([S2, P]);
    expect(rows.rows[3]).toEqual(['1']);

    raw.send(
      parseMessage('', PORT),
      bindMessage('', ''),
      executeMessage(''),
      parseMessage('', "INSERT INTO wr VALUES (4, 'batch') RETURNING inet_server_port()::text"),
      bindMessage('', ''),
      executeMessage(''),
      syncMessage(),
    );
    const batch = summarize(await raw.collect('Z', 10_000));
    expect(batch.errors, JSON.stringify(batch.errors)).toEqual([]);
    expect(nodeOfPort(cluster, Number(batch.rows[1][0]))).toBe(P);
    raw.end();
  });

  it('a standby backend terminated under a read that held only that standby: the read is re-sent to the primary', {
    timeout: 30_000,
  }, async () => {
    const c = await pgClient(proxy, { database: db, application_name: 'reader' });
    expect(nodeOfPort(cluster, (await c.query('SELECT inet_server_port() AS port')).rows[0].port as number)).toBe(S2);
    const SLEEPY =
      'SELECT pg_sleep(CASE WHEN pg_is_in_recovery() THEN 30 ELSE 0 END)::text AS slept, inet_server_port() AS port';
    const running = c.query(SLEEPY).then(
      (r) => r.rows,
      (e: Error) => e,
    );
    const pid = await pollUntil(
      () =>
        cluster.psql(
          S2,
          `SELECT pid FROM pg_stat_activity WHERE datname = '${db}' AND application_name = 'reader' AND query = '${SLEEPY}' AND state = 'active'`,
        ),
      (v) => /^\d+$/.test(v),
      { what: 'the read running on the standby' },
    );
    await cluster.psql(S2, `SELECT pg_terminate_backend(${pid})`);
    const rows = await withTimeout(running, 15_000, 'the re-sent read').catch((e: Error) => {
      throw new Error(`${e.message}\n${proxy.logs().slice(-4000)}`);
    });
    expect(rows).toEqual([{ slept: '', port: cluster.node(P).port }]);
    // The session goes on.
    expect((await c.query('SELECT count(*)::int AS n FROM rd')).rows).toEqual([{ n: 1000 }]);
    await endPg(c);
  });
});

describe('pool_mode = transaction: extended-protocol batches that only read take only a standby connection', () => {
  const READ = 'SELECT v, inet_server_port() AS port FROM rd WHERE id = $1';

  it('node-postgres (parameters, a named statement) and postgres.js read on the standby while another client holds the only primary connection', {
    timeout: 30_000,
  }, async () => {
    const c = await pgClient(proxy, { database: db, application_name: 'reader' });
    const sql = sqlClient(proxy, { database: db, connection: { application_name: 'reader' } });
    // postgres.js reads pg_type when it connects: a system catalog, read on the primary (as pgpool-II sends it).
    await sql`SELECT 1`;
    const holder = await holdPrimary();
    const before = await selectCounts();
    const ports: number[] = [];
    for (const id of [1, 2]) {
      const unnamed = await withTimeout(c.query(READ, [id]), 10_000, 'a node-postgres query with parameters');
      const named = await withTimeout(c.query({ name: 'rd_by_id', text: READ, values: [id] }), 10_000, 'a named one');
      // postgres.js describes a new statement first (Parse, Describe, Flush), then binds it (Bind, Execute, Sync).
      const js = await withTimeout(
        sql`SELECT v, inet_server_port() AS port FROM rd WHERE id = ${id}`,
        10_000,
        'postgres.js',
      );
      for (const row of [unnamed.rows[0], named.rows[0], js[0]]) {
        expect(row.v).toBe(id);
        ports.push(row.port as number);
      }
    }
    const plain = await withTimeout(
      sql`SELECT count(*)::int AS n, inet_server_port() AS port FROM rd`,
      10_000,
      'no parameters',
    );
    expect(plain[0].n).toBe(1000);
    ports.push(plain[0].port as number);
    expect(ports.map((p) => nodeOfPort(cluster, p))).toEqual(ports.map(() => S2));
    expect(await othersOn(P), 'client backends on the primary besides the holder').toEqual([]);
    const after = await selectCounts();
    expect((after.get(P) ?? 0) - (before.get(P) ?? 0)).toBe(0);
    await holder.query('COMMIT');
    await Promise.all([endPg(holder), endPg(c), endSql(sql)]);
  });

  it('pgbench -M extended and -M prepared (20 clients, select only) read on the standbys, none on the primary, whose only connection is held', {
    timeout: 60_000,
  }, async () => {
    const script = path.join(dir, 'select-x.sql');
    writeFileSync(script, '\\set id random(1, 1000)\nSELECT v FROM rd WHERE id = :id;\n');
    const holder = await holdPrimary();
    const before = await selectCounts();
    for (const mode of ['extended', 'prepared']) {
      const r = await runPgbench(['-n', '-M', mode, '-c', '20', '-j', '2', '-t', '25', '-f', script], {
        port: proxy.port,
        database: db,
        timeoutMs: 45_000,
      });
      expectPgbenchClean(r, '500', mode);
      expect(await othersOn(P), 'client backends on the primary besides the holder').toEqual([]);
    }
    const after = await selectCounts();
    const delta = (id: number): number => (after.get(id) ?? 0) - (before.get(id) ?? 0);
    expect(delta(P)).toBe(0);
    expect(delta(S1) + delta(S2)).toBeGreaterThanOrEqual(1000);
    await holder.query('COMMIT');
    await endPg(holder);
  });

  it('a named statement parsed in a transaction on the primary runs later in a read-only batch on the standby (prepared there)', {
    timeout: 30_000,
  }, async () => {
    const c = await pgClient(proxy, { database: db, application_name: 'reader' });
    const q = { name: 'rd_port', text: READ };
    await c.query('BEGIN');
    await c.query("INSERT INTO wr VALUES (5, 'named')");
    const inTx = await c.query({ ...q, values: [5] });
    expect(nodeOfPort(cluster, inTx.rows[0].port as number)).toBe(P);
    await c.query('COMMIT');
    await cluster.waitForCatchup();
    // Its write's position is read (read-your-writes) with the primary's connection, before that is held.
    await c.query('SELECT 1');
    const holder = await holdPrimary();
    const r = await withTimeout(c.query({ ...q, values: [6] }), 10_000, 'the named statement on the standby');
    expect(r.rows[0].v).toBe(6);
    expect(nodeOfPort(cluster, r.rows[0].port as number)).toBe(S2);
    await holder.query('COMMIT');
    await Promise.all([endPg(holder), endPg(c)]);
  });

  it('a batch that took only the standby (ended by Flush) and goes on with a write: the write gets the primary once it is free; after an error the rest is skipped up to Sync', {
    timeout: 30_000,
  }, async () => {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ user: 'postgres', database: db, application_name: 'reader' });
    expect(st.ok, JSON.stringify(st.error)).toBe(true);
    const holder = await holdPrimary();
    const PORT = 'SELECT inet_server_port()::text AS port';
    raw.send(parseMessage('', PORT), bindMessage('', ''), executeMessage(''), flushMessage());
    const first = summarize(await raw.collect('C', 10_000));
    expect(first.errors, JSON.stringify(first.errors)).toEqual([]);
    expect(nodeOfPort(cluster, Number(first.rows[0][0]))).toBe(S2);
    raw.send(
      parseMessage('', "INSERT INTO wr VALUES (6, 'after flush') RETURNING inet_server_port()::text"),
      bindMessage('', ''),
      executeMessage(''),
      syncMessage(),
    );
    // The write waits for the primary's connection, which the holder gives back now.
    await holder.query('COMMIT');
    const rest = await raw.collect('Z', 10_000);
    const second = summarize(rest);
    expect(second.errors, JSON.stringify(second.errors)).toEqual([]);
    expect(nodeOfPort(cluster, Number(second.rows[0][0]))).toBe(P);
    expect(rest.filter((m) => m.type === 'Z').length).toBe(1);

    raw.send(parseMessage('', 'SELECT 1/0'), bindMessage('', ''), executeMessage(''), flushMessage());
    expect(firstError(await raw.collect('E', 10_000))?.C).toBe('22012');
    raw.send(
      parseMessage('', "INSERT INTO wr VALUES (7, 'skipped')"),
      bindMessage('', ''),
      executeMessage(''),
      syncMessage(),
    );
    const skipped = await raw.collect('Z', 10_000);
    expect(skipped.map((m) => m.type)).toEqual(['Z']);
    raw.send(queryMessage("SELECT count(*)::text FROM wr WHERE k = 'skipped'"));
    const n = summarize(await raw.collect('Z', 10_000));
    expect(n.rows).toEqual([['0']]);
    raw.end();
    await endPg(holder);
  });

  it('a client that leaves in the middle of a batch that wrote: the next client of that connection does not commit its write', async () => {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ user: 'postgres', database: db, application_name: 'reader' });
    expect(st.ok, JSON.stringify(st.error)).toBe(true);
    raw.send(
      parseMessage('', "INSERT INTO wr VALUES (8, 'left')"),
      bindMessage('', ''),
      executeMessage(''),
      flushMessage(),
    );
    await raw.collect('C', 10_000);
    raw.send(terminateMessage());
    raw.end();
    // The primary's only pooled connection serves the next client's autocommit write.
    const next = await pgClient(proxy, { database: db, application_name: 'holder' });
    await next.query("INSERT INTO wr VALUES (9, 'next')");
    await endPg(next);
    expect(await cluster.psql(P, "SELECT count(*) FROM wr WHERE k = 'left'", db)).toBe('0');
  });
});

describe('pool_mode = transaction: a read-only transaction takes only a standby connection until it needs the primary', () => {
  it('BEGIN READ ONLY … COMMIT (simple protocol) runs on its standby while another client holds the only primary connection', async () => {
    const holder = await holdPrimary();
    const reader = await pgClient(proxy, { database: db, application_name: 'reader' });
    const q = (sql: string) => withTimeout(reader.query(sql), 10_000, sql);
    await q('BEGIN READ ONLY');
    const r = await q('SELECT inet_server_port() AS port, count(*)::int AS n FROM rd');
    expect(r.rows[0].n).toBe(1000);
    expect(nodeOfPort(cluster, r.rows[0].port as number)).toBe(S2);
    expect((await q('SELECT v FROM rd WHERE id = 7')).rows).toEqual([{ v: 7 }]);
    // Savepoints run there too, and reads after them stay there (nothing can have been written).
    await q('SAVEPOINT ro_s');
    expect(nodeOfPort(cluster, (await q('SELECT inet_server_port() AS port')).rows[0].port as number)).toBe(S2);
    await q('ROLLBACK TO SAVEPOINT ro_s');
    await q('RELEASE SAVEPOINT ro_s');
    expect(await othersOn(P), 'client backends on the primary besides the holder').toEqual([]);
    await q('COMMIT');
    // A write in a read-only transaction is refused as PostgreSQL refuses it (on the primary, which it needs).
    await holder.query('COMMIT');
    await q('START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const w = await reader.query("INSERT INTO wr VALUES (1, 'ro')").catch((e: { code?: string }) => e);
    expect(w).toMatchObject({ code: '25006' });
    await expect(reader.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await q('ROLLBACK');
    expect((await q('SELECT count(*)::int AS n FROM wr WHERE k = $$ro$$')).rows).toEqual([{ n: 0 }]);
    await Promise.all([endPg(holder), endPg(reader)]);
  });

  it('a statement for the primary inside it takes the primary connection then, in the same transaction (BEGIN READ ONLY and savepoints given to it first)', async () => {
    const reader = await pgClient(proxy, { database: db, application_name: 'reader' });
    const q = (sql: string) => withTimeout(reader.query(sql), 10_000, sql);
    await q('BEGIN READ ONLY');
    expect(nodeOfPort(cluster, (await q('SELECT inet_server_port() AS port')).rows[0].port as number)).toBe(S2);
    // Run on the standby alone.
    await q('SAVEPOINT ro_a');
    const p = await q(
      "/*NO LOAD BALANCE*/ SELECT inet_server_port() AS port, current_setting('transaction_read_only') AS ro",
    );
    expect(nodeOfPort(cluster, p.rows[0].port as number)).toBe(P);
    expect(p.rows[0].ro).toBe('on');
    // The savepoint taken before the primary joined exists there too.
    await q('ROLLBACK TO SAVEPOINT ro_a');
    await q('COMMIT');
    // Many savepoints on the standby alone: past a bound the primary joins (what it is given stays bounded).
    await q('BEGIN READ ONLY');
    for (let i = 0; i < 70; i++) {
      await q(`SAVEPOINT ro_${i}`);
      if (i % 2 === 1 && i < 10) await q(`RELEASE SAVEPOINT ro_${i}`);
    }
    await q('ROLLBACK TO SAVEPOINT ro_68');
    expect((await q('/*NO LOAD BALANCE*/ SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await q('ROLLBACK TO SAVEPOINT ro_0');
    await expect(reader.query('RELEASE SAVEPOINT ro_3')).rejects.toMatchObject({ code: '3B001' });
    await q('ROLLBACK');
    // Savepoints released and rolled back to on the standby alone: the primary gets those that remain.
    await q('BEGIN READ ONLY');
    await q('SAVEPOINT "Mixed Case"');
    await q('SAVEPOINT b');
    await q('SAVEPOINT c');
    await q('RELEASE b');
    await q('SAVEPOINT d');
    await q('ROLLBACK TO "Mixed Case"');
    expect((await q('/*NO LOAD BALANCE*/ SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
    await expect(reader.query('ROLLBACK TO d')).rejects.toMatchObject({ code: '3B001' });
    await q('ROLLBACK');
    await q('BEGIN READ ONLY');
    await q('SAVEPOINT e');
    expect((await q('/*NO LOAD BALANCE*/ SELECT 3 AS three')).rows).toEqual([{ three: 3 }]);
    await q('RELEASE e');
    await q('COMMIT');
    // A failed read-only transaction stays failed until its ROLLBACK, wherever the next statement would go.
    await q('BEGIN READ ONLY');
    await expect(reader.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
    await expect(reader.query('/*NO LOAD BALANCE*/ SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await q('ROLLBACK');
    expect((await q('SELECT 3 AS x')).rows).toEqual([{ x: 3 }]);
    await endPg(reader);
  });

  it('with default_transaction_read_only on (SET by the client), a plain BEGIN (simple, or unnamed in a batch of reads) is read-only: on its standby alone; off again, on the primary', async () => {
    const holder = await holdPrimary();
    const reader = await pgClient(proxy, { database: db, application_name: 'reader' });
    const q = (sql: string) => withTimeout(reader.query(sql), 10_000, sql);
    await holder.query('COMMIT');
    await q('SET default_transaction_read_only = on');
    await holder.query('BEGIN');
    await holder.query("INSERT INTO wr VALUES (0, 'holder')");
    await q('BEGIN');
    const r = await q('SELECT inet_server_port() AS port');
    expect(nodeOfPort(cluster, r.rows[0].port as number)).toBe(S2);
    await q('COMMIT');
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({
      user: 'postgres',
      database: db,
      application_name: 'reader',
      options: '-c default_transaction_read_only=on',
    });
    expect(st.ok, JSON.stringify(st.error)).toBe(true);
    // Its first unit already: the default is its start-up option's (the report it was told at login).
    raw.send(
      parseMessage('', 'BEGIN'),
      bindMessage('', ''),
      executeMessage(''),
      parseMessage('', 'SELECT inet_server_port()'),
      bindMessage('', ''),
      executeMessage(''),
      syncMessage(),
    );
    const x = summarize(await raw.collect('Z', 10_000));
    expect([x.errors, x.status]).toEqual([[], 'T']);
    expect(nodeOfPort(cluster, Number(x.rows[0][0]))).toBe(S2);
    raw.send(queryMessage('COMMIT'));
    await raw.collect('Z', 10_000);
    raw.end();
    await holder.query('COMMIT');
    // A write in it: the primary joins with the client's BEGIN, read-only there too.
    await q('BEGIN');
    await expect(reader.query("INSERT INTO wr VALUES (2, 'ro')")).rejects.toMatchObject({ code: '25006' });
    await q('ROLLBACK');
    await q('RESET default_transaction_read_only');
    await q('BEGIN');
    await q("INSERT INTO wr VALUES (3, 'rw')");
    await q('ROLLBACK');
    await endPg(holder);
    await endPg(reader);
  });

  it("a role whose default_transaction_read_only is on: a plain BEGIN of its session's first unit of work runs on the standby alone", async () => {
    const role = `${db}_ro`;
    await cluster.psql(P, `DROP ROLE IF EXISTS ${role}; CREATE ROLE ${role} LOGIN SUPERUSER`);
    await cluster.psql(P, `ALTER ROLE ${role} SET default_transaction_read_only = on`);
    await cluster.waitForCatchup();
    // A pgrelay of its own: the role's pooled connections go when it stops (othersOn of the next tests).
    const own = await startProxy({ cluster, config: txrConfig(3) });
    const ofRole = (where: string) =>
      cluster.psql(P, `SELECT count(*) FROM pg_stat_activity WHERE usename = '${role}'${where}`);
    try {
      // Twice: the first session opens connections for the role's pool, the second is told their report at login.
      for (let i = 0; i < 2; i++) {
        const reader = await pgClient(own, { database: db, user: role, application_name: 'reader' });
        const q = (sql: string) => withTimeout(reader.query(sql), 10_000, sql);
        await q('BEGIN');
        const r = await q('SELECT inet_server_port() AS port, count(*)::int AS n FROM rd');
        expect([nodeOfPort(cluster, r.rows[0].port as number), r.rows[0].n], `session ${i}`).toEqual([S2, 1000]);
        expect(
          await ofRole(" AND state LIKE 'idle in transaction%'"),
          `session ${i}: the transaction on the primary too`,
        ).toBe('0');
        await q('COMMIT');
        await endPg(reader);
      }
    } finally {
      await own.stop();
      await pollUntil(
        () => ofRole(''),
        (n) => n === '0',
        { timeoutMs: 10_000, what: "the role's connections closed" },
      ).catch(() => undefined);
      await cluster.psql(P, `DROP OWNED BY ${role}; DROP ROLE IF EXISTS ${role}`, db).catch(() => undefined);
    }
  });

  it('a session whose default isolation is SERIALIZABLE (which a standby refuses): its BEGIN READ ONLY takes the primary as before', async () => {
    const reader = await pgClient(proxy, { database: db, application_name: 'reader' });
    const q = (sql: string) => withTimeout(reader.query(sql), 10_000, sql);
    await q('SET default_transaction_isolation = serializable');
    await q('BEGIN READ ONLY');
    const r = await q("SELECT inet_server_port() AS port, current_setting('transaction_isolation') AS iso");
    expect(r.rows[0].iso).toBe('serializable');
    expect(nodeOfPort(cluster, r.rows[0].port as number)).toBe(P);
    await q('COMMIT');
    await q('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE');
    await q('BEGIN READ ONLY');
    expect((await q('SELECT count(*)::int AS n FROM rd')).rows).toEqual([{ n: 1000 }]);
    await q('COMMIT');
    await endPg(reader);
  });

  it("pgjdbc's way: BEGIN READ ONLY sent with the first query in one extended-protocol batch runs on the standby while the primary's connection is held", async () => {
    const holder = await holdPrimary();
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ user: 'postgres', database: db, application_name: 'reader' });
    expect(st.ok, JSON.stringify(st.error)).toBe(true);
    raw.send(
      parseMessage('', 'BEGIN READ ONLY'),
      bindMessage('', ''),
      executeMessage(''),
      parseMessage('', 'SELECT inet_server_port(), count(*) FROM rd'),
      bindMessage('', ''),
      executeMessage(''),
      syncMessage(),
    );
    const r = summarize(await raw.collect('Z', 10_000));
    expect(r.errors).toEqual([]);
    expect(r.status).toBe('T');
    expect(nodeOfPort(cluster, Number(r.rows[0][0]))).toBe(S2);
    expect(r.rows[0][1]).toBe('1000');
    raw.send(parseMessage('', 'COMMIT'), bindMessage('', ''), executeMessage(''), syncMessage());
    const c = summarize(await raw.collect('Z', 10_000));
    expect([c.errors, c.tags, c.status]).toEqual([[], ['COMMIT'], 'I']);
    expect(await othersOn(P)).toEqual([]);
    raw.end();
    await holder.query('COMMIT');
    await endPg(holder);
  });

  it('its standby connection lost in the middle of it: the client gets an error, never a statement run outside its transaction', async () => {
    const reader = await pgClient(proxy, { database: db, application_name: 'reader' });
    // Only its BEGIN ran, on the standby alone: the transaction is there and nowhere else.
    await reader.query('BEGIN READ ONLY');
    await cluster.psql(
      S2,
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db}' AND application_name = 'reader' AND state = 'idle in transaction'`,
    );
    const after = await withTimeout(
      reader.query('SELECT 1 AS one').then(
        () => 'ran',
        (e: { code?: string }) => e.code ?? 'error',
      ),
      10_000,
      'the next statement',
    );
    expect(after).not.toBe('ran');
    await endPg(reader).catch(() => undefined);
  });

  for (const begin of ['BEGIN', 'BEGIN READ ONLY']) {
    it(`${begin} … PREPARE TRANSACTION, which the primary alone runs and which ends the transaction even when it fails: it ends on the standby too, and the connections go back to the pools`, async () => {
      const reader = await pgClient(proxy, { database: db, application_name: 'reader' });
      const q = (sql: string) => withTimeout(reader.query(sql), 10_000, sql);
      const readerOnS2 = () =>
        cluster.psql(
          S2,
          `SELECT coalesce(string_agg(state, ','), '') FROM pg_stat_activity WHERE datname = '${db}' AND application_name = 'reader'`,
        );
      await q(begin);
      const r = await q('SELECT inet_server_port() AS port');
      expect(nodeOfPort(cluster, r.rows[0].port as number), 'a read before any write: on the standby').toBe(S2);
      expect(await readerOnS2()).toBe('idle in transaction');
      // max_prepared_transactions is 0 on the test cluster: the primary refuses it, and the transaction is over.
      await expect(q("PREPARE TRANSACTION 'txr_ptx'")).rejects.toMatchObject({ code: '55000' });
      // The only primary connection is free: another client's transaction takes it at once.
      const holder = await holdPrimary();
      expect(await readerOnS2(), "the reader's standby connection is out of the transaction").not.toContain(
        'transaction',
      );
      await holder.query('ROLLBACK');
      // (After the holder's: read-your-writes may send this read to the primary, PREPARE TRANSACTION counting as a write.)
      expect((await q('SELECT count(*)::int AS n FROM rd')).rows).toEqual([{ n: 1000 }]);
      await Promise.all([endPg(holder), endPg(reader)]);
    });
  }
});

describe('a default isolation of SERIALIZABLE, which a hot standby refuses', () => {
  const sdb = `${db}_ser`;
  let own: ProxyHandle;

  beforeAll(async () => {
    await cluster.psql(P, `DROP DATABASE IF EXISTS ${sdb} WITH (FORCE)`);
    await cluster.psql(P, `CREATE DATABASE ${sdb}`);
    await cluster.psql(P, 'CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)', sdb);
    await cluster.psql(P, `ALTER DATABASE ${sdb} SET default_transaction_isolation = 'serializable'`);
    await cluster.waitForCatchup();
    own = await startProxy({
      cluster,
      config: {
        log_min_messages: 'warning',
        pool_mode: 'transaction',
        default_pool_size: 2,
        [`backend_weight${P}`]: 0,
        [`backend_weight${S1}`]: 1,
        [`backend_weight${S2}`]: 1,
      },
    });
  }, 60_000);

  afterAll(async () => {
    await own?.stop();
    await cluster.psql(P, `DROP DATABASE IF EXISTS ${sdb} WITH (FORCE)`);
  });

  /** Where a read ran and in which isolation, autocommit, in a transaction, and through the extended protocol. */
  const reads = async (c: pg.Client): Promise<Array<[number, string]>> => {
    const sql = "SELECT inet_server_port() AS port, current_setting('transaction_isolation') AS iso, count(*) FROM t";
    const one = (r: pg.QueryResult): [number, string] => [
      nodeOfPort(cluster, Number(r.rows[0].port)),
      r.rows[0].iso as string,
    ];
    const out = [one(await withTimeout(c.query(sql), 10_000, 'autocommit read'))];
    await c.query('BEGIN');
    out.push(one(await withTimeout(c.query(sql), 10_000, 'read in a transaction')));
    await c.query('COMMIT');
    out.push(one(await withTimeout(extendedQuery(c, sql), 10_000, 'extended read')));
    return out;
  };

  it("the database's default: every session (the first opens connections, the next ones do not) reads on the primary, no standby connection taken", async () => {
    for (let i = 0; i < 4; i++) {
      // A start-up setting of its own: replayed on every connection the session takes.
      const c = await pgClient(own, { database: sdb, application_name: `ser-${i}` });
      expect(await reads(c), `session ${i}`).toEqual([
        [P, 'serializable'],
        [P, 'serializable'],
        [P, 'serializable'],
      ]);
      // A lower default SET by the session: its start-up settings are still replayed first, in SERIALIZABLE.
      await c.query("SET default_transaction_isolation = 'read committed'");
      expect(
        (await reads(c)).map(([node]) => node),
        `session ${i} after its SET`,
      ).toEqual([P, P, P]);
      await endPg(c);
    }
    const onStandbys = await Promise.all(
      [S1, S2].map((id) => cluster.psql(id, `SELECT count(*) FROM pg_stat_activity WHERE datname = '${sdb}'`)),
    );
    expect(onStandbys).toEqual(['0', '0']);
  });

  it("a client's start-up option (options=-c default_transaction_isolation=serializable): its reads run on the primary in that isolation", async () => {
    for (let i = 0; i < 2; i++) {
      const c = await pgClient(own, {
        database: db,
        application_name: `ser-opt-${i}`,
        options: '-c default_transaction_isolation=serializable',
      });
      const sql = "SELECT inet_server_port() AS port, current_setting('transaction_isolation') AS iso";
      const r = await withTimeout(c.query(sql), 10_000, 'autocommit read');
      expect([nodeOfPort(cluster, Number(r.rows[0].port)), r.rows[0].iso], `session ${i}`).toEqual([P, 'serializable']);
      await c.query('BEGIN');
      const t = await withTimeout(c.query(sql), 10_000, 'read in a transaction');
      expect([nodeOfPort(cluster, Number(t.rows[0].port)), t.rows[0].iso]).toEqual([P, 'serializable']);
      await c.query('COMMIT');
      await endPg(c);
    }
  });
});
