/**
 * pool_mode = transaction (issue 14): clients hold backend connections only for a
 * transaction. 1,000 pgbench clients through a small pool (server connections per node
 * bounded, read in pg_stat_activity), prepared and extended protocols, node-postgres
 * named statements and postgres.js, SET replay, pinning, cancel, query_wait_timeout.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  closeAllClients,
  endPg,
  endSql,
  extendedQuery,
  nodeClients,
  pgClient,
  queryRows,
  sqlClient,
} from '../support/clients.js';
import { getCluster } from '../support/cluster.js';
import {
  type ConfValue,
  expectPgbenchClean,
  runPgDumpTool,
  runPgbench,
  startProxy,
  type ProxyHandle,
  type RunResult,
} from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
  cancelRequest,
  closeMessage,
  describeMessage,
  errorFields,
  executeMessage,
  parseMessage,
  queryMessage,
  replyTranscript,
  summarize,
  syncMessage,
} from '../support/raw.js';
import { pollUntil } from '../support/wait.js';
import { rawSession } from '../support/conformance.js';

const cluster = getCluster();
/** Sends a read to the primary: it then needs the primary's connection (an autocommit read may take a standby's alone). */
const PRIMARY_HINT = '/*NO LOAD BALANCE*/';
const db = `pool_tx_${process.pid}`;
/** pool 20: the load tests. */
let big: ProxyHandle;
/** pool 1, query_wait_timeout 1 s: sharing one connection is certain; pinning and waiting are seen. */
let tiny: ProxyHandle;

function summary(p: ProxyHandle, r: RunResult): string {
  return `exit ${r.code}${r.timedOut ? ' (timed out)' : ''}\n--- stdout ---\n${r.stdout.slice(-2000)}\n--- stderr ---\n${r.stderr.slice(-3000)}\n--- pgrelay ---\n${p.logs().slice(-3000)}`;
}

function expectClean(p: ProxyHandle, r: RunResult): number {
  return expectPgbenchClean(r, summary(p, r));
}

/** Most client backends of `application_name` seen at once on each node while `during` runs (pg_stat_activity, every 50 ms). */
/** A transaction-mode pgrelay with one connection per node and no load balancing, with `config` on top. */
function poolOfOne(config: Record<string, ConfValue> = {}): Promise<ProxyHandle> {
  return startProxy({
    cluster,
    config: {
      log_min_messages: 'warning',
      pool_mode: 'transaction',
      default_pool_size: 1,
      load_balance_mode: false,
      ...config,
    },
  });
}

async function peakBackends(application: string, during: Promise<unknown>): Promise<number[]> {
  const watchers = await nodeClients(cluster);
  const peaks = cluster.nodes.map(() => 0);
  let done = false;
  const watch = (async () => {
    while (!done) {
      await Promise.all(
        watchers.map(async (c, i) => {
          const r = await c.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND backend_type = 'client backend'",
            [db, application],
          );
          peaks[i] = Math.max(peaks[i], r.rows[0].n as number);
        }),
      );
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  try {
    await during;
  } finally {
    done = true;
    await watch;
    await Promise.all(watchers.map((c) => c.end().catch(() => undefined)));
  }
  return peaks;
}

beforeAll(async () => {
  // Both pgrelays start while the database is made (they do not use it before the tests).
  const common = { log_min_messages: 'warning', pool_mode: 'transaction', max_client_conn: 1200 };
  // Each is stopped by afterAll even if what follows fails.
  const proxies = Promise.all([
    startProxy({ cluster, config: { ...common, default_pool_size: 20 } }).then((p) => {
      big = p;
    }),
    startProxy({
      cluster,
      config: { ...common, log_min_messages: 'info', default_pool_size: 1, query_wait_timeout: 1 },
    }).then((p) => {
      tiny = p;
    }),
  ]);
  proxies.catch(() => undefined); // awaited below
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await cluster.psql(cluster.primaryId, `CREATE DATABASE ${db}`);
  const primary = cluster.node(cluster.primaryId);
  const r = await runPgbench(['-i', '-s', '1', '-q'], {
    host: primary.host,
    port: primary.port,
    password: cluster.superuserPassword ?? undefined,
    database: db,
    timeoutMs: 60_000,
  });
  expect(r.code, r.stderr).toBe(0);
  await cluster.waitForCatchup();
  await proxies;
}, 120_000);

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  const codes = await Promise.all([big?.stop(), tiny?.stop()]);
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  expect(codes).toEqual([0, 0]);
});

describe('pool_mode = transaction', () => {
  it('pgbench -S with 1,000 clients through default_pool_size = 20: at most 20 server connections per node, 0 errors', {
    timeout: 90_000,
  }, async () => {
    // pgbench holds 1,000 sockets: Node raises its soft open-files limit to the hard one, which pgbench inherits.
    const files = Number(execFileSync('/bin/sh', ['-c', 'ulimit -n']).toString().trim());
    expect(files, 'pgbench -c 1000 needs about 1,100 open files: raise the hard limit (ulimit -Hn)').toBeGreaterThan(
      1100,
    );
    // Few transactions per client: the run is about 1,000 clients connected and served at once, not throughput.
    const run = runPgbench(['-S', '-c', '1000', '-j', '2', '-t', '2', '-n'], {
      port: big.port,
      database: db,
      timeoutMs: 60_000,
    });
    const peaks = await peakBackends('pgrelay-test', run);
    const r = await run;
    expectClean(big, r);
    for (const p of peaks) expect(p).toBeLessThanOrEqual(20);
    expect(Math.max(...peaks)).toBeGreaterThan(0);
  });

  for (const mode of ['prepared', 'extended'] as const) {
    it(`pgbench -M ${mode} (simple-update: BEGIN, UPDATE, SELECT, INSERT, END) with 64 clients: 0 errors`, {
      timeout: 60_000,
    }, async () => {
      // 6 transactions per client (384 in all). Each client's statements are prepared in its first
      // transaction and its next five run on whichever connection is free (64 clients, 20
      // connections): the re-preparing on another connection is what is tested, and more
      // transactions only repeat it. simple-update (-N) rather than TPC-B-like: at scale 1 every
      // TPC-B-like transaction updates the one branch row, so they ran one after the other, each
      // holding the row lock across three round trips; that only measured the machine's latency.
      const r = await runPgbench(['-M', mode, '-N', '-c', '64', '-j', '4', '-t', '6', '-n'], {
        port: big.port,
        database: db,
        timeoutMs: 45_000,
      });
      expectClean(big, r);
    });
  }

  it('node-postgres named statements: 20 clients, in and out of transactions, on whichever connection serves them', async () => {
    const clients = await Promise.all(Array.from({ length: 20 }, () => pgClient(big, { database: db })));
    for (let round = 0; round < 3; round++) {
      await Promise.all(
        clients.map(async (c, i) => {
          const shared = await c.query({
            name: 'branch',
            text: 'SELECT bid FROM pgbench_branches WHERE bid = $1',
            values: [1],
          });
          expect(shared.rows).toEqual([{ bid: 1 }]);
          const own = await c.query({ name: `own-${i}`, text: `SELECT $1::int + ${i} AS v`, values: [round] });
          expect(own.rows).toEqual([{ v: round + i }]);
          await c.query('BEGIN');
          const inTx = await c.query({
            name: 'branch',
            text: 'SELECT bid FROM pgbench_branches WHERE bid = $1',
            values: [1],
          });
          expect(inTx.rows).toEqual([{ bid: 1 }]);
          await c.query('COMMIT');
        }),
      );
    }
    // The client's DEALLOCATE acts on its own statement: the name can be prepared again with other text.
    const c = clients[0];
    expect((await c.query('DEALLOCATE "own-0"')).command).toBe('DEALLOCATE');
    const again = await c.query('DEALLOCATE ALL');
    expect(again.command).toBe('DEALLOCATE');
    // …and its statements are prepared again where needed.
    expect((await c.query({ name: 'after-all', text: 'SELECT $1::int AS v', values: [9] })).rows).toEqual([{ v: 9 }]);
    await Promise.all(clients.map((x) => endPg(x)));
  });

  it("DEALLOCATE of a client's statement in the extended protocol (as psycopg 3 sends it with libpq < 17) acts on the client's statement", async () => {
    const raw = await RawClient.connect(tiny.port);
    try {
      expect((await raw.startup({ user: 'postgres', database: db })).ok).toBe(true);
      // (An unnamed statement of the client's exists too: the DEALLOCATE's replaces it.)
      raw.send(
        parseMessage('', 'SELECT 1'),
        parseMessage('_pg3_0', 'SELECT 42 AS v'),
        bindMessage('', '_pg3_0'),
        executeMessage(''),
        syncMessage(),
      );
      expect((await raw.collect('Z', 5000)).map((m) => m.type).join('')).toBe('112DCZ');
      raw.send(
        parseMessage('', 'DEALLOCATE _pg3_0'),
        bindMessage('', ''),
        describeMessage('P', ''),
        executeMessage(''),
        syncMessage(),
      );
      const dealloc = await raw.collect('Z', 5000);
      expect(dealloc.filter((m) => m.type === 'E').map((m) => errorFields(m.body))).toEqual([]);
      expect(dealloc.map((m) => m.type).join('')).toBe('12nCZ');
      // Gone, as in PostgreSQL: a Bind of it fails; the name can be prepared again with other text.
      raw.send(bindMessage('', '_pg3_0'), executeMessage(''), syncMessage());
      const gone = await raw.collect('Z', 5000);
      expect(gone.filter((m) => m.type === 'E').map((m) => errorFields(m.body).C)).toEqual(['26000']);
      raw.send(parseMessage('_pg3_0', 'SELECT 43 AS v'), bindMessage('', '_pg3_0'), executeMessage(''), syncMessage());
      const again = await raw.collect('Z', 5000);
      expect(again.map((m) => m.type).join('')).toBe('12DCZ');
    } finally {
      raw.destroy();
    }
  });

  it('postgres.js (prepares by default) runs its usual flows', async () => {
    const sql = sqlClient(big, { database: db, max: 4, prepare: true });
    const values = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => (await sql`SELECT ${i}::int AS v, current_database() AS d`)[0]),
    );
    values.forEach((r, i) => {
      expect(r).toEqual({ v: i, d: db });
    });
    const inTx = await sql.begin(async (tx) => {
      await tx`CREATE TABLE IF NOT EXISTS pool_tx_js (id int)`;
      await tx`INSERT INTO pool_tx_js VALUES (${1})`;
      return tx`SELECT count(*)::int AS n FROM pool_tx_js`;
    });
    expect(inTx[0].n).toBeGreaterThan(0);
    await sql`DROP TABLE pool_tx_js`;
    await endSql(sql);
  });

  it('SET and RESET of a client are replayed on the connection it gets; another client does not see them', async () => {
    const a = await pgClient(tiny, { database: db });
    const b = await pgClient(tiny, { database: db });
    const show = async (c: pg.Client, what: string): Promise<string> =>
      Object.values((await c.query(`SHOW ${what}`)).rows[0] as Record<string, string>)[0];
    await a.query("SET statement_timeout = '41s'");
    await a.query("SET search_path = 'pool_tx_schema', public");
    // default_pool_size = 1: a and b share the one connection per node.
    expect(await show(b, 'statement_timeout')).toBe('0');
    expect(await show(a, 'statement_timeout')).toBe('41s');
    expect(await show(a, 'search_path')).toBe('pool_tx_schema, public');
    expect(await show(b, 'search_path')).toBe('"$user", public');
    await a.query('RESET statement_timeout');
    expect(await show(a, 'statement_timeout')).toBe('0');
    expect(await show(a, 'search_path')).toBe('pool_tx_schema, public');
    await b.query("SET statement_timeout = '7s'");
    expect(await show(a, 'statement_timeout')).toBe('0');
    expect(await show(b, 'statement_timeout')).toBe('7s');
    await Promise.all([endPg(a), endPg(b)]);
  });

  it("a RESET or DISCARD ALL then a SET of a start-up setting in one pipeline: the SET lasts (pgrelay's restore of the start-up values does not override it), and is reported as directly", async () => {
    const primary = cluster.node(cluster.primaryId);
    const script = async (port: number): Promise<string[]> => {
      const { raw } = await rawSession(
        { host: '127.0.0.1', port },
        { database: db, application_name: 'pool_tx_app', TimeZone: 'Europe/Paris' },
      );
      const out: string[] = [];
      const pipeline = async (reset: string, set: string): Promise<void> => {
        raw.send(
          parseMessage('', reset),
          bindMessage('', ''),
          executeMessage(''),
          parseMessage('', set),
          bindMessage('', ''),
          executeMessage(''),
          syncMessage(),
        );
        out.push(await replyTranscript(raw, 1, true));
      };
      const simple = async (sql: string): Promise<void> => {
        raw.send(queryMessage(sql));
        out.push(await replyTranscript(raw, 1, true));
      };
      try {
        await pipeline('RESET TimeZone', "SET TimeZone = 'Asia/Tokyo'");
        await simple('SHOW TimeZone');
        await pipeline('DISCARD ALL', "SET application_name = 'pool_tx_app2'");
        await simple('SHOW application_name');
        await simple('SHOW TimeZone');
      } finally {
        raw.destroy();
      }
      return out;
    };
    expect(await script(tiny.port)).toEqual(await script(primary.port));
  });

  it('a ROLLBACK skipped after an error in its pipeline leaves the transaction block: its SETs last once it commits after all', async () => {
    const a = await RawClient.connect(tiny.port);
    const b = await pgClient(tiny, { database: db });
    try {
      expect((await a.startup({ user: 'postgres', database: db })).ok).toBe(true);
      for (const sql of ['BEGIN', "SET statement_timeout = '43s'", 'SAVEPOINT sp'])
        expect((await a.query(sql)).errors).toEqual([]);
      // The Bind fails, the server skips the ROLLBACK behind it: the transaction goes on, failed.
      a.send(
        bindMessage('', 'nope'),
        parseMessage('', 'ROLLBACK'),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      );
      expect(summarize(await a.collect('Z', 5000)).status).toBe('E');
      expect((await a.query('ROLLBACK TO SAVEPOINT sp')).status).toBe('T');
      expect((await a.query('COMMIT')).tags).toEqual(['COMMIT']);
      expect((await a.query('SHOW statement_timeout')).rows).toEqual([['43s']]);
      // default_pool_size = 1: b gets the connection a committed its SET on, reset for b.
      expect((await b.query('SHOW statement_timeout')).rows).toEqual([{ statement_timeout: '0' }]);
      expect((await a.query('SHOW statement_timeout')).rows).toEqual([['43s']]);
    } finally {
      a.destroy();
      await endPg(b);
    }
  });

  it('a SET or RESET among several statements of one Query lasts for the session, as on a direct connection', async () => {
    const a = await pgClient(tiny, { database: db, application_name: 'multi-a' });
    const b = await pgClient(tiny, { database: db });
    const settings = async (c: pg.Client) =>
      (
        await c.query(
          "SELECT current_setting('statement_timeout') AS t, current_setting('DateStyle') AS d, current_setting('application_name') AS n",
        )
      ).rows[0];
    const r = await a.query("SET statement_timeout = '42s'; SET DateStyle = 'German'; SELECT 1 AS one");
    expect((r as unknown as pg.QueryResult[]).map((x) => x.command)).toEqual(['SET', 'SET', 'SELECT']);
    // b takes the connections in between (default_pool_size = 1).
    expect(await settings(b)).toEqual({ t: '0', d: 'ISO, MDY', n: 'pgrelay-test' });
    expect(await settings(a)).toEqual({ t: '42s', d: 'German, DMY', n: 'multi-a' });
    await a.query("SELECT 1; RESET statement_timeout; SET application_name = 'multi-b'");
    expect(await settings(b)).toEqual({ t: '0', d: 'ISO, MDY', n: 'pgrelay-test' });
    expect(await settings(a)).toEqual({ t: '0', d: 'German, DMY', n: 'multi-b' });
    await a.query("SET work_mem = '5MB'; RESET ALL");
    expect(await settings(a)).toEqual({ t: '0', d: 'ISO, MDY', n: 'multi-a' });
    // A failed query changes nothing (its statements ran in one implicit transaction).
    await expect(a.query("SET DateStyle = 'SQL'; SELECT 1/0")).rejects.toMatchObject({ code: '22012' });
    expect(await settings(a)).toEqual({ t: '0', d: 'ISO, MDY', n: 'multi-a' });
    await Promise.all([endPg(a), endPg(b)]);
  });

  it('a SET inside a transaction block lasts if the transaction commits, as on a direct connection (ROLLBACK, ROLLBACK TO SAVEPOINT, a failed transaction undo it)', async () => {
    const a = await pgClient(tiny, { database: db });
    const b = await pgClient(tiny, { database: db });
    const settings = async () => {
      // b takes the connections in between (default_pool_size = 1).
      await b.query('SELECT 1');
      const r = await a.query("SELECT current_setting('statement_timeout') AS t, current_setting('DateStyle') AS d");
      return r.rows[0];
    };
    const run = async (...statements: string[]) => {
      for (const q of statements) await a.query(q).catch(() => undefined);
    };
    await run('BEGIN', "SET statement_timeout = '43s'", 'COMMIT');
    expect(await settings()).toEqual({ t: '43s', d: 'ISO, MDY' });
    await run('BEGIN', "SET statement_timeout = '44s'", 'ROLLBACK');
    expect(await settings()).toEqual({ t: '43s', d: 'ISO, MDY' });
    await run(
      'BEGIN',
      'SAVEPOINT s1',
      "SET statement_timeout = '45s'",
      'ROLLBACK TO SAVEPOINT s1',
      "SET DateStyle = 'German'",
      'RELEASE SAVEPOINT s1',
      'COMMIT',
    );
    expect(await settings()).toEqual({ t: '43s', d: 'German, DMY' });
    await run('BEGIN', "SET statement_timeout = '46s'", 'SELECT 1/0', 'COMMIT');
    expect(await settings()).toEqual({ t: '43s', d: 'German, DMY' });
    // A write failing on the primary only: the load-balance node's COMMIT commits the SET there
    // (read at once, on a's load-balance node, before b's use could reset that connection).
    await run('BEGIN', "SET statement_timeout = '49s'", 'INSERT INTO pool_tx_nosuch VALUES (1)', 'COMMIT');
    expect((await a.query("SELECT current_setting('statement_timeout') AS t")).rows[0]).toEqual({ t: '43s' });
    expect(await settings()).toEqual({ t: '43s', d: 'German, DMY' });
    await run('BEGIN', 'SAVEPOINT s2', "SET statement_timeout = '47s'", 'RELEASE SAVEPOINT s2', 'COMMIT');
    expect(await settings()).toEqual({ t: '47s', d: 'German, DMY' });
    await run('BEGIN', "SET statement_timeout = '48s'", 'SAVEPOINT s3', 'SELECT 1/0', 'ROLLBACK TO s3', 'COMMIT');
    expect(await settings()).toEqual({ t: '48s', d: 'German, DMY' });
    expect((await b.query("SELECT current_setting('statement_timeout') AS t")).rows[0]).toEqual({ t: '0' });
    await Promise.all([endPg(a), endPg(b)]);
  });

  it('SET ROLE of a client does not reach the next client of its connection (RESET ALL leaves the role: pgrelay resets it)', async () => {
    const a = await pgClient(tiny, { database: db });
    await a.query('SET ROLE pg_read_all_settings');
    expect((await a.query(`${PRIMARY_HINT} SELECT current_user::text AS u`)).rows).toEqual([
      { u: 'pg_read_all_settings' },
    ]);
    // default_pool_size = 1: b gets the connection a's SET ROLE ran on.
    const b = await pgClient(tiny, { database: db });
    expect((await b.query(`${PRIMARY_HINT} SELECT current_user::text AS u`)).rows).toEqual([{ u: 'postgres' }]);
    expect((await b.query('SELECT current_user::text AS u')).rows).toEqual([{ u: 'postgres' }]);
    expect((await a.query(`${PRIMARY_HINT} SELECT current_user::text AS u`)).rows).toEqual([
      { u: 'pg_read_all_settings' },
    ]);
    await a.query('RESET ROLE');
    await Promise.all([endPg(a), endPg(b)]);
  });

  it("RESET ALL keeps the client's SET ROLE (as PostgreSQL's does): it follows the client to its next connection; DISCARD ALL drops it", async () => {
    const a = await pgClient(tiny, { database: db });
    const who = `${PRIMARY_HINT} SELECT current_user::text AS u`;
    await a.query('SET ROLE pg_read_all_settings');
    await a.query('RESET ALL');
    expect((await a.query(who)).rows).toEqual([{ u: 'pg_read_all_settings' }]);
    // default_pool_size = 1: b takes the connection (reset for it), then a gets it again.
    const b = await pgClient(tiny, { database: db });
    expect((await b.query(who)).rows).toEqual([{ u: 'postgres' }]);
    expect((await a.query(who)).rows).toEqual([{ u: 'pg_read_all_settings' }]);
    await a.query('DISCARD ALL');
    expect((await b.query(who)).rows).toEqual([{ u: 'postgres' }]);
    expect((await a.query(who)).rows).toEqual([{ u: 'postgres' }]);
    await Promise.all([endPg(a), endPg(b)]);
  });

  it('SET SESSION AUTHORIZATION (which resets SET ROLE) then RESET SESSION AUTHORIZATION: the role may be dropped, the session goes on on any connection', async () => {
    const role = `pool_tx_sa_${process.pid}`;
    const a = await pgClient(tiny, { database: db });
    await a.query(`CREATE ROLE ${role}`);
    await a.query('SET ROLE pg_read_all_settings');
    await a.query(`SET SESSION AUTHORIZATION ${role}`);
    const who = `${PRIMARY_HINT} SELECT current_user::text AS u, session_user::text AS s, current_setting('role') AS r`;
    expect((await a.query(who)).rows).toEqual([{ u: role, s: role, r: 'none' }]);
    await a.query('RESET SESSION AUTHORIZATION');
    await a.query(`DROP ROLE ${role}`);
    // default_pool_size = 1: b takes the connection; a's settings are then given to it again.
    const b = await pgClient(tiny, { database: db });
    await b.query(`${PRIMARY_HINT} SELECT 1`);
    expect((await a.query(who)).rows).toEqual([{ u: 'postgres', s: 'postgres', r: 'none' }]);
    expect((await a.query('SELECT current_user::text AS u')).rows).toEqual([{ u: 'postgres' }]);
    await Promise.all([endPg(a), endPg(b)]);
  });

  it('a client that SETs at every request (in and out of transactions) is never pinned for it; it keeps its last values', async () => {
    const a = await pgClient(tiny, { database: db });
    const b = await pgClient(tiny, { database: db });
    for (let i = 1; i <= 70; i++) {
      await a.query(`SET statement_timeout = ${1000 + i}`);
      await a.query('BEGIN');
      await a.query(`SET lock_timeout = ${2000 + i}`);
      await a.query('COMMIT');
    }
    // default_pool_size = 1: b is served (a is not pinned) and sees none of a's settings.
    const other = await b.query(`${PRIMARY_HINT} SELECT current_setting('statement_timeout') AS t`);
    expect(other.rows).toEqual([{ t: '0' }]);
    const r = await a.query(
      `${PRIMARY_HINT} SELECT current_setting('statement_timeout') AS t, current_setting('lock_timeout') AS l`,
    );
    expect(r.rows).toEqual([{ t: '1070ms', l: '2070ms' }]);
    expect(tiny.logs()).not.toMatch(/SET not replayable/);
    await Promise.all([endPg(a), endPg(b)]);
  });

  it("set_config(…, true) with a bound value inside transactions (row-level security's pattern) does not pin the session and does not last", async () => {
    const a = await pgClient(tiny, { database: db });
    const b = await pgClient(tiny, { database: db });
    for (let i = 0; i < 3; i++) {
      await a.query('BEGIN');
      await a.query("SELECT set_config('app.user_id', $1, true)", [`u${i}`]);
      const r = await a.query(`${PRIMARY_HINT} SELECT current_setting('app.user_id') AS u`);
      expect(r.rows).toEqual([{ u: `u${i}` }]);
      await a.query('COMMIT');
      // default_pool_size = 1: b gets the connection (a is not pinned to it) and sees nothing of a's.
      const other = await b.query(`${PRIMARY_HINT} SELECT current_setting('app.user_id', true) AS u`);
      expect(other.rows[0].u ?? '').toBe('');
    }
    expect(tiny.logs()).not.toMatch(/session pinned.*set_config|SET not replayable/);
    await Promise.all([endPg(a), endPg(b)]);
  });

  it('a setting changed inside a DO block or a procedure does not reach the next client of its connection', async () => {
    const a = await pgClient(tiny, { database: db });
    const b = await pgClient(tiny, { database: db });
    const timeout = async (c: pg.Client) =>
      (await c.query(`${PRIMARY_HINT} SELECT current_setting('statement_timeout') AS t`)).rows[0].t;
    await a.query("DO $$ BEGIN PERFORM set_config('statement_timeout', '77s', false); END $$");
    // default_pool_size = 1: b gets the connection the DO block ran on.
    expect(await timeout(b)).toBe('0');
    await a.query(
      "CREATE OR REPLACE PROCEDURE pool_tx_set() LANGUAGE plpgsql AS $$ BEGIN PERFORM set_config('statement_timeout', '78s', false); END $$",
    );
    await a.query('CALL pool_tx_set()');
    expect(await timeout(b)).toBe('0');
    await Promise.all([endPg(a), endPg(b)]);
  });

  it('settings replayed after a reset (a DO block) keep a SET the client ended with a comment', async () => {
    const a = await pgClient(tiny, { database: db });
    const b = await pgClient(tiny, { database: db });
    const name = async (c: pg.Client) =>
      (await c.query(`${PRIMARY_HINT} SELECT current_setting('application_name') AS n`)).rows[0].n;
    await a.query("SET application_name = 'pool-tx-commented' -- the client's comment");
    await a.query("SET statement_timeout = '5min'");
    await a.query('DO $$ BEGIN PERFORM 1; END $$');
    // b takes the reset connection (default_pool_size = 1), then a gets it back: replayed in one Query.
    expect(await name(b)).not.toBe('pool-tx-commented');
    expect(await name(a)).toBe('pool-tx-commented');
    expect((await a.query(`${PRIMARY_HINT} SELECT current_setting('statement_timeout') AS t`)).rows).toEqual([
      { t: '5min' },
    ]);
    await Promise.all([endPg(a), endPg(b)]);
  });

  it("a replay that fails (its SET ROLE's role was dropped) ends the session, and its statement never runs (with another client's settings, or without the role)", async () => {
    const P = cluster.primaryId;
    await cluster.psql(P, 'DROP ROLE IF EXISTS pool_tx_gone; CREATE ROLE pool_tx_gone');
    await cluster.psql(P, 'CREATE TABLE IF NOT EXISTS pool_tx_seen (sp text); GRANT ALL ON pool_tx_seen TO PUBLIC', db);
    const x = await pgClient(tiny, { database: db });
    const a = await pgClient(tiny, { database: db });
    const aErrors: string[] = [];
    a.on('error', (e: Error & { code?: string }) => aErrors.push(e.code ?? e.message));
    try {
      await x.query('SET search_path = pool_tx_xschema, public');
      await a.query('SET ROLE pool_tx_gone');
      await a.query('DO $$ BEGIN PERFORM 1; END $$');
      await cluster.psql(P, 'DROP ROLE pool_tx_gone');
      // default_pool_size = 1: x's settings are on the connection when a gets it.
      await x.query(`${PRIMARY_HINT} SELECT 1`);
      const r = await a.query("INSERT INTO pool_tx_seen VALUES (current_setting('search_path'))").then(
        () => 'ran',
        (e: Error & { code?: string }) => e.code ?? e.message,
      );
      expect(r).not.toBe('ran');
      // A session that set its role waits for its replay: the statement never ran (without
      // the role it would have run with the login user's privileges, or x's settings).
      expect(await cluster.psql(P, 'SELECT coalesce(string_agg(sp, $$|$$), $$none$$) FROM pool_tx_seen', db)).toBe(
        'none',
      );
      // The pool's connection serves on.
      expect((await x.query('SELECT 2 AS v')).rows).toEqual([{ v: 2 }]);
    } finally {
      await Promise.all([endPg(a).catch(() => undefined), endPg(x)]);
      await cluster.psql(P, 'DROP TABLE IF EXISTS pool_tx_seen', db);
    }
  });

  it("a setting changed in the body of a function a query calls does not reach the next client of its connection (a tenant set by a function is not another client's)", async () => {
    const a = await pgClient(tiny, { database: db });
    const b = await pgClient(tiny, { database: db });
    const tenant = async (c: pg.Client) =>
      (await c.query(`${PRIMARY_HINT} SELECT current_setting('app.pool_tx_tenant', true) AS t`)).rows[0].t ?? '';
    await a.query(
      "CREATE OR REPLACE FUNCTION pool_tx_set_tenant(t text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM set_config('app.pool_tx_tenant', t, false); RETURN t; END $$",
    );
    // Simple protocol; default_pool_size = 1: b gets the connection the function ran on.
    expect((await a.query("SELECT pool_tx_set_tenant('acme') AS t")).rows).toEqual([{ t: 'acme' }]);
    expect(await tenant(b)).toBe('');
    // Extended protocol (a parameter), schema-qualified.
    await a.query('SELECT public.pool_tx_set_tenant($1)', ['globex']);
    expect(await tenant(b)).toBe('');
    // Among several statements, and inside a transaction block that commits.
    await a.query("SELECT 1; SELECT pool_tx_set_tenant('initech')");
    expect(await tenant(b)).toBe('');
    await a.query('BEGIN');
    await a.query("SELECT pool_tx_set_tenant('umbrella')");
    await a.query('COMMIT');
    expect(await tenant(b)).toBe('');
    // Through a function whose body calls it (pgrelay looks into the functions it calls too).
    await a.query(
      'CREATE OR REPLACE FUNCTION pool_tx_tenant_via(t text) RETURNS text LANGUAGE sql AS $$ SELECT pool_tx_set_tenant(t) $$',
    );
    expect((await a.query("SELECT pool_tx_tenant_via('hooli') AS t")).rows).toEqual([{ t: 'hooli' }]);
    expect(await tenant(b)).toBe('');
    // Two levels down, through functions pgrelay has not been asked about before.
    await a.query(
      "CREATE OR REPLACE FUNCTION pool_tx_tenant_deep(t text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM set_config('app.pool_tx_tenant', t, false); RETURN t; END $$",
    );
    await a.query(
      'CREATE OR REPLACE FUNCTION pool_tx_tenant_mid(t text) RETURNS text LANGUAGE sql AS $$ SELECT pool_tx_tenant_deep(t) $$',
    );
    await a.query(
      'CREATE OR REPLACE FUNCTION pool_tx_tenant_top(t text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN pool_tx_tenant_mid(t); END $$',
    );
    expect((await a.query("SELECT pool_tx_tenant_top('pied piper') AS t")).rows).toEqual([{ t: 'pied piper' }]);
    expect(await tenant(b)).toBe('');
    await Promise.all([endPg(a), endPg(b)]);
  });

  it('after a column is added, a statement prepared again by its client runs (postgres.js retries by itself; a Close and Parse of the same text), as on a direct connection', async () => {
    // PostgreSQL refuses a prepared statement whose result type changed (0A000 "cached plan
    // must not change result type", at Bind): the client prepares it again. The server
    // statements pgrelay shares between clients must then be prepared again too, not
    // answered from what the connections already have.
    await cluster.psql(
      cluster.primaryId,
      'CREATE TABLE pool_tx_chg (id int, a text); INSERT INTO pool_tx_chg VALUES (1, $$x$$)',
      db,
    );
    // One connection (no load balancing): every statement below is prepared on it.
    const one = await poolOfOne();
    const Q = 'SELECT * FROM pool_tx_chg WHERE id = $1';
    const sql = sqlClient(one, { database: db, prepare: true });
    const raw = await RawClient.connect(one.port);
    try {
      expect((await raw.startup({ user: 'postgres', database: db })).ok).toBe(true);
      const run = async (...pre: Buffer[]) => {
        raw.send(...pre, bindMessage('', 'chg', ['1']), executeMessage(''), syncMessage());
        return summarize(await raw.collect('Z', 10_000));
      };
      expect((await run(parseMessage('chg', Q))).rows).toEqual([['1', 'x']]);
      // postgres.js prepares its statements (a named Parse of the same text).
      const js = () => sql`SELECT * FROM pool_tx_chg WHERE id = ${1}`;
      expect(await js()).toEqual([{ id: 1, a: 'x' }]);
      await cluster.psql(cluster.primaryId, 'ALTER TABLE pool_tx_chg ADD COLUMN b int DEFAULT 7', db);
      // postgres.js prepares it again under a new name when PostgreSQL refuses it.
      expect(await js()).toEqual([{ id: 1, a: 'x', b: 7 }]);
      // The client's statement as it was prepared: refused, as on a direct connection.
      expect((await run()).errors.map((e) => e.C)).toEqual(['0A000']);
      // Closed and prepared again (JDBC's way): it runs.
      const again = await run(closeMessage('S', 'chg'), parseMessage('chg', Q));
      expect(again.errors).toEqual([]);
      expect(again.rows).toEqual([['1', 'x', '7']]);
    } finally {
      raw.end();
      await endSql(sql);
      await one.stop();
      await cluster.psql(cluster.primaryId, 'DROP TABLE IF EXISTS pool_tx_chg', db);
    }
  });

  it('pg_dump -j 2 (its workers import the snapshot the leader exported) and pg_restore -j 2 run through pgrelay with load balancing', {
    timeout: 120_000,
  }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgrelay-dump-'));
    const copy = `${db}_restored`;
    try {
      const dump = await runPgDumpTool('pg_dump', ['-Fd', '-j', '2', '-f', path.join(dir, 'd'), db], {
        port: big.port,
      });
      expect(dump.code, dump.stderr).toBe(0);
      await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${copy}`);
      await cluster.psql(cluster.primaryId, `CREATE DATABASE ${copy}`);
      const restore = await runPgDumpTool('pg_restore', ['-j', '2', '-d', copy, path.join(dir, 'd')], {
        port: big.port,
      });
      expect(restore.code, restore.stderr).toBe(0);
      expect(await cluster.psql(cluster.primaryId, 'SELECT count(*) FROM pgbench_accounts', copy)).toBe('100000');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${copy} WITH (FORCE)`).catch(() => undefined);
    }
  });

  it("lastval() and currval() after an autocommit INSERT: the client's own value on the connection its INSERT used, else 55000 — never another client's", async () => {
    // PHP's PDO::lastInsertId() sends SELECT LASTVAL() after the INSERT, in a unit of work of its own.
    await cluster.psql(
      cluster.primaryId,
      'CREATE TABLE IF NOT EXISTS pool_tx_seq (id serial PRIMARY KEY, who text)',
      db,
    );
    const one = await poolOfOne();
    const a = await pgClient(one, { database: db });
    const b = await pgClient(one, { database: db });
    try {
      const insert = async (c: pg.Client, who: string) =>
        Number((await c.query('INSERT INTO pool_tx_seq (who) VALUES ($1) RETURNING id', [who])).rows[0].id);
      const lastval = async (c: pg.Client) => {
        try {
          return Number((await c.query('SELECT LASTVAL() AS v')).rows[0].v);
        } catch (e) {
          return (e as { code?: string }).code;
        }
      };
      // Its connection untouched since: the client's own value (simple and extended protocol).
      const id = await insert(a, 'a');
      expect(await lastval(a)).toBe(id);
      expect(Number((await a.query("SELECT currval('pool_tx_seq_id_seq') AS v")).rows[0].v)).toBe(id);
      expect(Number((await a.query('SELECT currval($1::regclass) AS v', ['pool_tx_seq_id_seq'])).rows[0].v)).toBe(id);
      // Another client's INSERT ran on that connection since: refused, not b's value.
      await insert(a, 'a');
      const bid = await insert(b, 'b');
      expect(await lastval(a)).toBe('55000');
      expect(await lastval(b)).toBe(bid);
      // In the same Query, or the same transaction, as the INSERT: PostgreSQL answers.
      const [, r] = (await a.query("INSERT INTO pool_tx_seq (who) VALUES ('a'); SELECT lastval() AS v")) as unknown as [
        unknown,
        pg.QueryResult,
      ];
      expect(Number(r.rows[0].v)).toBeGreaterThan(bid);
      await a.query('BEGIN');
      const tid = await insert(a, 'a');
      expect(await lastval(a)).toBe(tid);
      await a.query('COMMIT');
      // A client that never called nextval: refused too (PostgreSQL: 55000 lastval is not yet defined).
      const c = await pgClient(one, { database: db });
      expect(await lastval(c)).toBe('55000');
      await endPg(c);
      // In a transaction block of their own (no INSERT or nextval() in it): the client's value
      // on its connection untouched since, else PostgreSQL's 55000 — never another client's.
      const own = await insert(a, 'a');
      await a.query('BEGIN');
      expect(await lastval(a)).toBe(own);
      await a.query('COMMIT');
      await insert(b, 'b');
      for (const extended of [false, true]) {
        await a.query('BEGIN');
        const v = extended
          ? await extendedQuery(a, 'SELECT lastval() AS v').then(
              (r) => Number(r.rows[0].v),
              (e: { code?: string }) => e.code,
            )
          : await lastval(a);
        expect(v, extended ? 'extended' : 'simple').toBe('55000');
        await a.query('ROLLBACK');
      }
    } finally {
      await Promise.all([endPg(a), endPg(b)]);
      await one.stop();
    }
  });

  const pinCases: Array<{ reason: string; set: string; check: string; expect: unknown }> = [
    {
      reason: 'temporary table',
      set: 'CREATE TEMP TABLE pool_tx_tmp AS SELECT 5 AS x',
      check: 'SELECT x FROM pool_tx_tmp',
      expect: { x: 5 },
    },
    { reason: 'PREPARE', set: 'PREPARE pool_tx_q AS SELECT 42 AS x', check: 'EXECUTE pool_tx_q', expect: { x: 42 } },
    {
      reason: 'cursor WITH HOLD',
      set: 'DECLARE pool_tx_c CURSOR WITH HOLD FOR SELECT 7 AS x',
      check: 'FETCH 1 FROM pool_tx_c',
      expect: { x: 7 },
    },
    {
      reason: 'SET among several statements',
      set: "BEGIN; SET application_name = 'pin-multi'; COMMIT",
      check: "SELECT current_setting('application_name') AS x",
      expect: { x: 'pin-multi' },
    },
    {
      reason: 'session advisory lock',
      set: 'SELECT pg_advisory_lock(4142)',
      check: 'SELECT pg_advisory_unlock(4142) AS x',
      expect: { x: true },
    },
    {
      // A loaded library's settings exist only on the connection that loaded it.
      reason: 'LOAD',
      set: "LOAD 'auto_explain'",
      check: "SELECT count(*)::int AS x FROM pg_settings WHERE name = 'auto_explain.log_min_duration'",
      expect: { x: 1 },
    },
  ];
  for (const pc of pinCases) {
    it(`pins the session: ${pc.reason}`, async () => {
      const a = await pgClient(tiny, { database: db });
      await a.query(pc.set);
      // Another client in between: without pinning it would take a's connection.
      const other = await pgClient(tiny, { database: db });
      // A statement for the primary (an autocommit read may take a standby's connection alone).
      const waited = await other
        .query(`${PRIMARY_HINT} SELECT 1 AS one`)
        .catch((e: { code?: string; message: string }) => e);
      // It waits for the pinned connection (pool size 1) and gives up after query_wait_timeout.
      expect(waited).toMatchObject({ code: '53300' });
      expect((waited as Error).message).toMatch(/query_wait_timeout/);
      const r = await a.query(pc.check);
      expect(r.rows[0]).toEqual(pc.expect);
      await endPg(a);
      await tiny.waitForLog(new RegExp(`"reason":"${pc.reason}".*session pinned`), 5000);
      // Its connection was reset and went back: the next client runs at once, without a's state.
      const next = await pgClient(tiny, { database: db });
      expect((await next.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
      await endPg(next);
    });
  }

  it('max_prepared_statements = 0 (statements not tracked): a named statement pins the session to the connection it is prepared on', async () => {
    const own = await startProxy({
      cluster,
      config: {
        log_min_messages: 'info',
        pool_mode: 'transaction',
        default_pool_size: 2,
        load_balance_mode: false,
        max_prepared_statements: 0,
      },
    });
    const a = await pgClient(own, { database: db });
    const b = await pgClient(own, { database: db });
    try {
      // The same name, another text per client, used in turn (and in and out of transactions).
      for (let i = 0; i < 4; i++) {
        expect((await a.query({ name: 'pin0', text: 'SELECT 1 AS v' })).rows).toEqual([{ v: 1 }]);
        expect((await b.query({ name: 'pin0', text: 'SELECT 2 AS v' })).rows).toEqual([{ v: 2 }]);
        await a.query('BEGIN');
        expect((await a.query({ name: 'pin0', text: 'SELECT 1 AS v' })).rows).toEqual([{ v: 1 }]);
        await a.query('COMMIT');
      }
      expect(own.logs()).toContain('session pinned to its backend connections');
    } finally {
      await Promise.all([endPg(a), endPg(b)]);
      await own.stop();
    }
  });

  it('pins the session: LISTEN (notifications keep arriving between transactions)', async () => {
    const a = await pgClient(tiny, { database: db });
    const got = new Promise<string>((resolve) => a.on('notification', (n) => resolve(n.payload ?? '')));
    await a.query('LISTEN pool_tx_channel');
    await a.query('SELECT 1');
    const primary = cluster.node(cluster.primaryId);
    const direct = await pgClient(
      { host: primary.host, port: primary.port },
      {
        database: db,
        password: cluster.superuserPassword ?? undefined,
      },
    );
    await direct.query("NOTIFY pool_tx_channel, 'hello'");
    expect(await got).toBe('hello');
    await Promise.all([endPg(a), endPg(direct)]);
  });

  it('a client waiting longer than query_wait_timeout gets FATAL 53300 naming the parameter', async () => {
    const a = await pgClient(tiny, { database: db });
    await a.query('BEGIN');
    await a.query('SELECT 1');
    const b = await pgClient(tiny, { database: db });
    const t0 = Date.now();
    const err = await b
      .query(`${PRIMARY_HINT} SELECT 1`)
      .catch((e: { code?: string; message: string; severity?: string }) => e);
    expect(err).toMatchObject({ code: '53300', severity: 'FATAL' });
    expect((err as Error).message).toMatch(/query_wait_timeout/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    await a.query('COMMIT');
    await endPg(a);
  });

  it("cancel reaches the backend serving the client; BackendKeyData is pgrelay's own", async () => {
    const c = await pgClient(big, { database: db });
    const key = c as unknown as { processID: number; secretKey: number };
    const backendPid = (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
    expect(key.processID).not.toBe(backendPid);
    const running = c.query('SELECT pg_sleep(30)').catch((e: { code?: string }) => e);
    // Wait until the statement runs on a backend, then cancel through pgrelay.
    const primary = cluster.node(cluster.primaryId);
    const direct = await pgClient(
      { host: primary.host, port: primary.port },
      {
        password: cluster.superuserPassword ?? undefined,
      },
    );
    for (let i = 0; i < 100; i++) {
      const r = await direct.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = '${db}' AND query = 'SELECT pg_sleep(30)' AND state = 'active'`,
      );
      if (r.rows[0].n > 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise<void>((resolve, reject) => {
      const s = net.connect({ host: big.host, port: big.port }, () =>
        s.end(cancelRequest(key.processID, key.secretKey)),
      );
      s.on('close', () => resolve());
      s.on('error', reject);
      s.setTimeout(5000, () => s.destroy());
    });
    expect(await running).toMatchObject({ code: '57014' });
    expect((await c.query('SELECT 3 AS x')).rows).toEqual([{ x: 3 }]);
    await Promise.all([endPg(c), endPg(direct)]);
  });

  it('a cancel for a statement waiting for the pool answers it 57014 without running it; the session goes on', async () => {
    // PostgreSQL cancels the statement a client has in progress; behind a full pool that
    // statement waits in pgrelay (PgDog drops such cancels: the statement then runs anyway).
    const one = await poolOfOne();
    const app = 'pool-tx-cancel-queued';
    const sendCancel = (pid: number, secret: number): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        const s = net.connect({ host: one.host, port: one.port }, () => s.end(cancelRequest(pid, secret)));
        s.on('close', () => resolve());
        s.on('error', reject);
        s.setTimeout(5000, () => s.destroy());
      });
    // b's statement is suspended in pgrelay, waiting for the pool's one connection.
    const waiting = async (pid: number): Promise<void> => {
      await pollUntil(
        async () =>
          (await queryRows(one, 'SHOW pool_processes', { database: db }))
            .filter((p) => p.pool_pid === String(pid))
            .map((p) => p.status),
        (states) => states.includes('Wait for backend connection'),
        { what: "b's statement to wait for the pool", timeoutMs: 10_000 },
      );
    };
    const a = await pgClient(one, { database: db });
    const b = await RawClient.connect(one.port);
    try {
      const key = a as unknown as { processID: number; secretKey: number };
      let aSettled = false;
      const running = a.query('SELECT pg_sleep(30)').then(
        (r) => r,
        (e: { code?: string }) => e,
      );
      void running.then(() => {
        aSettled = true;
      });
      await pollUntil(
        () =>
          cluster.psql(
            cluster.primaryId,
            `SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND query = 'SELECT pg_sleep(30)' AND state = 'active'`,
          ),
        (n) => n === '1',
        { what: "a's statement to hold the pool's one connection", timeoutMs: 10_000 },
      );
      const st = await b.startup({ user: 'postgres', database: db, application_name: app });
      expect(st.ok).toBe(true);

      // Simple protocol: ErrorResponse 57014, ReadyForQuery.
      b.send(queryMessage('SELECT 1'));
      await waiting(st.pid);
      await sendCancel(st.pid, st.secret);
      const simple = await b.collect('Z', 10_000);
      expect(simple.map((m) => m.type).join('')).toBe('EZ');
      expect(errorFields(simple[0].body)).toMatchObject({ C: '57014', M: 'canceling statement due to user request' });
      expect(aSettled, "a's statement still runs: b's never ran").toBe(false);

      // Extended protocol: the batch is skipped up to its Sync.
      b.send(parseMessage('', 'SELECT 2'), bindMessage('', ''), executeMessage(''), syncMessage());
      await waiting(st.pid);
      await sendCancel(st.pid, st.secret);
      const extended = await b.collect('Z', 10_000);
      expect(extended.map((m) => m.type).join('')).toBe('EZ');
      expect(errorFields(extended[0].body).C).toBe('57014');
      expect(aSettled).toBe(false);

      // a's cancel still reaches its running statement; then b's next statement runs.
      await sendCancel(key.processID, key.secretKey);
      expect(await running).toMatchObject({ code: '57014' });
      const next = await b.query('SELECT 3');
      expect(next.errors).toEqual([]);
      expect(next.rows).toEqual([['3']]);
    } finally {
      b.end();
      await endPg(a);
      await one.stop();
    }
  });

  it('a client that ends its connection while its statement waits for the pool: the statement still runs, as on a direct connection', async () => {
    // PostgreSQL reads the client's end only after the messages sent before it. pgrelay reads
    // a waiting client on (to see it leave, and to spare a pause and resume per transaction):
    // the end must not drop what waits.
    const one = await poolOfOne();
    const app = 'pool-tx-end-while-waiting';
    await cluster.psql(cluster.primaryId, 'CREATE TABLE IF NOT EXISTS end_wait (k text)', db);
    const holder = await pgClient(one, { database: db });
    const b = await RawClient.connect(one.port);
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1');
      const st = await b.startup({ user: 'postgres', database: db, application_name: app });
      expect(st.ok).toBe(true);
      b.send(queryMessage(`INSERT INTO end_wait VALUES ('${app}')`));
      await pollUntil(
        async () =>
          (await queryRows(one, 'SHOW pool_processes', { database: db }))
            .filter((p) => p.pool_pid === String(st.pid))
            .map((p) => p.status),
        (states) => states.includes('Wait for backend connection'),
        { what: "b's INSERT to wait for the pool", timeoutMs: 10_000 },
      );
      // Its end (FIN) alone, no Terminate: nothing more to read before it.
      b.socket.end();
      await holder.query('COMMIT');
      await pollUntil(
        () => cluster.psql(cluster.primaryId, `SELECT count(*) FROM end_wait WHERE k = '${app}'`, db),
        (n) => n === '1',
        { what: "b's INSERT", timeoutMs: 10_000 },
      );
      // The pool's connection came back: another client gets it.
      expect((await holder.query('SELECT 2 AS v')).rows).toEqual([{ v: 2 }]);
    } finally {
      b.destroy();
      await endPg(holder);
      await one.stop();
    }
  });

  it('idle_transaction_timeout: a client idle inside a transaction is disconnected with FATAL 25P03 and its connection goes to the client waiting for it; idle clients outside a transaction stay', {
    timeout: 60_000,
  }, async () => {
    const one = await poolOfOne({ idle_transaction_timeout: 1, query_wait_timeout: 20 });
    try {
      // Idle outside a transaction since before the other began its transaction: never disconnected for it.
      const outside = await pgClient(one, { database: db });
      await outside.query('SELECT 1');
      const idleInTx = await pgClient(one, { database: db });
      const errors: Array<{ code?: string; message: string }> = [];
      idleInTx.on('error', (e: Error & { code?: string }) => errors.push({ code: e.code, message: e.message }));
      await idleInTx.query('BEGIN');
      await idleInTx.query('SELECT 1');
      // Waits for the pool's one connection, which the idle transaction holds.
      const waiter = await pgClient(one, { database: db });
      const served = waiter.query('SELECT 2 AS v');
      expect((await served).rows).toEqual([{ v: 2 }]);
      expect(errors[0]).toMatchObject({
        code: '25P03',
        message: expect.stringContaining('idle_transaction_timeout'),
      });
      expect((await outside.query('SELECT 3 AS v')).rows).toEqual([{ v: 3 }]);
      await endPg(outside);
      await endPg(waiter);
    } finally {
      await one.stop();
    }
  });

  it('query_timeout: a client that stops reading a large result is disconnected after it, and the connection it held goes to the client waiting for it', {
    timeout: 60_000,
  }, async () => {
    const one = await poolOfOne({ query_timeout: 1, query_wait_timeout: 30 });
    const raw = await RawClient.connect(one.port);
    try {
      expect((await raw.startup({ user: 'postgres', database: db })).ok).toBe(true);
      // 64 MB of rows it never reads: the pool's one connection stays in the middle of the reply.
      raw.socket.pause();
      raw.send(queryMessage("SELECT repeat('x', 1048576) FROM generate_series(1, 64)"));
      const waiter = await pgClient(one, { database: db });
      expect((await waiter.query('SELECT 2 AS v')).rows).toEqual([{ v: 2 }]);
      await one.waitForLog(/query_timeout/, 10_000);
      await endPg(waiter);
    } finally {
      raw.destroy();
      await one.stop();
    }
  });

  it('SHOW pool_processes lists waiting and active clients; SHOW pool_pools the idle pooled connections', async () => {
    const a = await pgClient(tiny, { database: db });
    await a.query('BEGIN');
    await a.query('SELECT 1');
    const b = await pgClient(tiny, { database: db });
    const waiting = b.query(`${PRIMARY_HINT} SELECT 1`).catch(() => undefined);
    // b waits up to query_wait_timeout (1 s): look while it does.
    let states: string[] = [];
    for (let i = 0; i < 20 && !states.includes('Wait for backend connection'); i++) {
      const procs = await queryRows(tiny, 'SHOW pool_processes', { database: db });
      states = procs.filter((p) => p.database === db).map((p) => p.status);
    }
    expect(states).toContain('Idle in transaction');
    expect(states).toContain('Wait for backend connection');
    await waiting;
    await a.query('COMMIT');
    await endPg(a);
    const pools = await queryRows(tiny, 'SHOW pool_pools', { database: db });
    expect(pools.some((p) => p.database === db && p.status === 'Wait for connection')).toBe(true);
  });
});
