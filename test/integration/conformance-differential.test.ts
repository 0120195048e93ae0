/**
 * Drivers see what a direct connection shows them: the same seeded scripts of node-postgres
 * (with pg-cursor) and postgres.js clients run concurrently, directly against the primary
 * and then through pgrelay in transaction and session mode (load balancing on, the standbys
 * too), and every client's transcript (rows, command tags, errors, notices) must be the
 * same. Each client works on rows of its own. Settings in and out of transactions,
 * savepoints, RESET/DISCARD, named and unnamed statements, pipelines with errors, cursors,
 * COPY, multi-statement queries, DO/CALL, LISTEN, temp tables, large values...
 *
 * Left out: what PostgreSQL itself answers differently from run to run (a prepared
 * statement's literal re-read after an invalidation), and postgres.js calls that hang it
 * on a direct connection too (COPY TO STDOUT readable, DEALLOCATE ALL with statements in
 * flight, .simple() with parameters).
 */
import pg from 'pg';
import Cursor from 'pg-cursor';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { xorshift32 } from '../support/conformance.js';
import { type ProxyHandle, startProxy } from '../support/proxy.js';

const cluster = getCluster();
const db = `conf_diff_${process.pid}`;
/** Clients (even: node-postgres, odd: postgres.js), operations each, the scripts' seed. */
const CLIENTS = 12;
const OPS = 60;
const SEED = Number(process.env.PGRELAY_DIFF_SEED ?? 1);
const proxies: ProxyHandle[] = [];

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, rej) => {
      t = setTimeout(() => rej(new Error(`HANG ${what}`)), ms);
    }),
  ]);
}
type Err = Error & { code?: string };
const errOf = (e: unknown) => {
  const x = e as Err;
  return `ERR ${x.code ?? ''} ${x.message}`;
};

const SETS = [
  "SET TimeZone = 'Asia/Tokyo'",
  "SET TimeZone = 'America/New_York'",
  'RESET TimeZone',
  "SET DateStyle = 'SQL, DMY'",
  "SET DateStyle = 'German'",
  'RESET DateStyle',
  'SET extra_float_digits = 0',
  "SET IntervalStyle = 'postgres_verbose'",
  "SET search_path = 'other', public",
  'RESET search_path',
  "SET bytea_output = 'escape'",
  "SET application_name = 'diffapp'",
  'SET statement_timeout = 5000',
  'RESET ALL',
];
const SHOW_SQL =
  "SELECT current_setting('TimeZone') tz, current_setting('DateStyle') ds, '2024-01-01 12:00+00'::timestamptz::text t, " +
  "'2024-03-04'::date::text d, (1.0/3)::float8::text f, interval '1 day 2 hours'::text i, '\\x41'::bytea::text b, " +
  "current_setting('application_name') an, current_setting('search_path') sp, current_setting('statement_timeout') st, " +
  '(SELECT count(*) FROM whoami)::int w';

async function pgScript(c: number, port: number, tag: string, out: string[]): Promise<string[]> {
  const r = xorshift32(SEED * 1000 + c);
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: db, query_timeout: 30_000 });
  const notes: string[] = [];
  client.on('notice', (n) => notes.push(`NOTICE ${n.message}`));
  client.on('error', (e) => out.push(`CLIENT-ERROR ${e.message}`));
  await client.connect();
  const q = async (text: string | pg.QueryConfig, values?: unknown[]) => {
    try {
      const res = await timeout(client.query(text as string, values), 30_000, `${tag} c${c} ${JSON.stringify(text)}`);
      const rs = Array.isArray(res) ? res : [res];
      out.push(rs.map((x) => `${x.command} ${x.rowCount} ${JSON.stringify(x.rows)}`).join(' | '));
    } catch (e) {
      out.push(errOf(e));
      if ((e as Error).message.startsWith('HANG')) throw e;
    }
    if (notes.length) out.push(notes.splice(0).join(';'));
  };
  let k = 0;
  for (let i = 0; i < OPS; i++) {
    const op = Math.floor(r() * 50);
    out.push(`#${i} op${op}`);
    k = (k + 1) % 7;
    const v = `v${i}`;
    switch (op) {
      case 0:
        await q(`INSERT INTO kv VALUES (${c}, ${k}, '${v}') ON CONFLICT (client, k) DO UPDATE SET v = EXCLUDED.v`);
        break;
      case 1:
        await q('INSERT INTO kv VALUES ($1, $2, $3) ON CONFLICT (client, k) DO UPDATE SET v = EXCLUDED.v', [c, k, v]);
        break;
      case 2:
        await q({ name: 'readkv', text: 'SELECT k, v FROM kv WHERE client = $1 ORDER BY k', values: [c] });
        break;
      case 3:
        await q(`SELECT count(*)::int n, string_agg(v, ',' ORDER BY k) s FROM kv WHERE client = ${c}`);
        break;
      case 4:
        await q('BEGIN');
        await q({ name: 'upkv', text: 'UPDATE kv SET v = $3 WHERE client = $1 AND k = $2', values: [c, k, v] });
        await q('SELECT k, v FROM kv WHERE client = $1 ORDER BY k', [c]);
        await q(r() < 0.5 ? 'COMMIT' : 'ROLLBACK');
        await q({ name: 'readkv', text: 'SELECT k, v FROM kv WHERE client = $1 ORDER BY k', values: [c] });
        break;
      case 5:
        await q('BEGIN');
        await q(`INSERT INTO kv VALUES (${c}, 100 + ${i}, 'tx') ON CONFLICT DO NOTHING`);
        await q('SELECT 1/0');
        await q('SELECT 1');
        await q('ROLLBACK');
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c} AND k >= 100`);
        break;
      case 6:
        await q('BEGIN');
        await q(`UPDATE kv SET v = 'sp1' WHERE client = ${c}`);
        await q('SAVEPOINT a');
        await q(`UPDATE kv SET v = 'sp2' WHERE client = ${c}`);
        await q('SELECT nosuchcol FROM kv');
        await q('ROLLBACK TO SAVEPOINT a');
        await q('SELECT k, v FROM kv WHERE client = $1 ORDER BY k', [c]);
        await q('COMMIT');
        await q(`SELECT string_agg(v, ',' ORDER BY k) FROM kv WHERE client = ${c}`);
        break;
      case 7:
      case 8:
        await q(SETS[Math.floor(r() * SETS.length)] as string);
        await q(SHOW_SQL);
        break;
      case 9:
        await q('BEGIN');
        await q("SET LOCAL TimeZone = 'Australia/Sydney'");
        await q(SHOW_SQL);
        await q('COMMIT');
        await q(SHOW_SQL);
        break;
      case 10:
        // (A literal depending on settings is left out: PostgreSQL re-reads it when it re-analyses the statement.)
        await q({ name: 'lit', text: "SELECT 'lit' || $1 AS t, '2024-02-03'::date + 1 AS d", values: [c] });
        break;
      case 11: {
        const cur = client.query(new Cursor('SELECT g, $1::int c FROM generate_series(1, 300) g', [c]));
        try {
          let n = 0;
          let sum = 0;
          for (;;) {
            const rows = await timeout(cur.read(70), 30_000, `${tag} cursor`);
            if (rows.length === 0) break;
            n += rows.length;
            for (const row of rows) sum += row.g;
          }
          out.push(`cursor ${n} ${sum}`);
        } catch (e) {
          out.push(errOf(e));
        }
        await timeout(cur.close(), 30_000, 'cursor close').catch((e) => out.push(errOf(e)));
        break;
      }
      case 12:
        await q('SELECT 1 AS a; SELECT 2 AS b; SELECT 3 AS c');
        await q('SELECT 1 AS a; SELECT 1/0; SELECT 3 AS c');
        await q('SELEC 1');
        break;
      case 13:
        await q('BEGIN');
        await q(`SELECT nextval('seq${c}')::int`);
        await q(`SELECT currval('seq${c}')::int`);
        await q('COMMIT');
        break;
      case 14:
        await q('SELECT $1::int8 + 1 a, $2::text || $3 b, $4::bool c, $5::numeric * 2 d, $6::jsonb -> $7 e', [
          41,
          'x',
          'y',
          true,
          '1.25',
          '{"a":[1,2]}',
          'a',
        ]);
        break;
      case 15:
        await q('BEGIN READ ONLY');
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c}`);
        await q(`INSERT INTO kv VALUES (${c}, 99, 'ro')`);
        await q('ROLLBACK');
        break;
      case 16:
        await q("DO $$ BEGIN RAISE NOTICE 'hello %', 7; END $$");
        break;
      case 17:
        await q(
          `WITH w AS (UPDATE kv SET v = 'cte' WHERE client = ${c} AND k = ${k} RETURNING k) SELECT count(*)::int FROM w`,
        );
        await q({ name: 'readkv', text: 'SELECT k, v FROM kv WHERE client = $1 ORDER BY k', values: [c] });
        break;
      case 18:
        await q(`SELECT md5(string_agg(g::text || repeat('y', g % 50), ',')) FROM generate_series(1, 20000) g`);
        await q('SELECT g, repeat($1, g % 20) FROM generate_series(1, 2000) g', ['z']).then(() => {
          const last = out.pop() ?? '';
          out.push(`big ${last.length}`);
        });
        break;
      case 19:
        await q({ name: 'badp', text: 'SELECT $1::int', values: ['notanint'] });
        await q({ name: 'readkv', text: 'SELECT k, v FROM kv WHERE client = $1 ORDER BY k', values: [c] });
        break;
      case 20:
        await q(`SELECT * FROM nosuchtable${c}`);
        await q('SELECT $1::text', ['after-error']);
        break;
      case 21:
        await q('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c}`);
        await q(`UPDATE kv SET v = 'rr' WHERE client = ${c} AND k = 0`);
        await q('COMMIT');
        await q(`SELECT v FROM kv WHERE client = ${c} AND k = 0`);
        break;
      case 22:
        await q(`SELECT pg_sleep(0.01), ${c} AS c`);
        break;
      case 23:
        await q(`SELECT f_write(${c}, ${k})`);
        await q(`SELECT v FROM kv WHERE client = ${c} AND k = ${k}`);
        break;
      case 24:
        await q('SHOW TimeZone');
        await q('SELECT current_setting($1)', ['DateStyle']);
        break;
      case 25:
        await q("SELECT 'é'::text || $1 a, length('é') l", ['ü']);
        break;
      case 26:
        await q(`CREATE TEMP TABLE IF NOT EXISTS tmp${c} (x int)`);
        await q(`INSERT INTO tmp${c} VALUES (${i})`);
        await q(`SELECT count(*)::int FROM tmp${c}`);
        break;
      case 27:
        await q('SELECT pg_advisory_lock($1)', [c]);
        await q(
          `SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = ${c} AND pid = pg_backend_pid()`,
        );
        await q('SELECT pg_advisory_unlock($1)', [c]);
        break;
      case 28:
        await q(`DECLARE h${i} CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 10) g`);
        await q(`FETCH 3 FROM h${i}`);
        await q(`FETCH 3 FROM h${i}`);
        await q(`CLOSE h${i}`);
        break;
      case 29:
        await q(`PREPARE sp${i} AS SELECT $1::int * 2 AS x`);
        await q(`EXECUTE sp${i}(21)`);
        await q(`DEALLOCATE sp${i}`);
        await q(`EXECUTE sp${i}(21)`);
        break;
      case 30:
        await q({ name: 'readkv', text: 'SELECT k, v FROM kv WHERE client = $1 ORDER BY k', values: [c] });
        await q('DISCARD ALL');
        await q({ name: 'readkv', text: 'SELECT k, v FROM kv WHERE client = $1 ORDER BY k', values: [c] });
        await q(SHOW_SQL);
        break;
      case 31: {
        await q(`LISTEN ch${c}`);
        const got = new Promise<string>((res) => {
          const t = setTimeout(() => res('no notification'), 20_000);
          client.once('notification', (n) => {
            clearTimeout(t);
            res(`notified ${n.channel} ${n.payload}`);
          });
        });
        await q(`NOTIFY ch${c}, 'p${i}'`);
        out.push(await got);
        await q(`UNLISTEN ch${c}`);
        break;
      }
      case 32:
        await q("SET application_name = 'multi'; SELECT current_setting('application_name') a");
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c}`);
        break;
      case 33:
        await q("SELECT pg_is_in_recovery() r, current_setting('transaction_read_only') t");
        await q('SHOW transaction_read_only');
        break;
      case 34:
        await q('BEGIN');
        await q(`SELECT k FROM kv WHERE client = ${c} ORDER BY k FOR UPDATE`);
        await q(`UPDATE kv SET v = 'locked' WHERE client = ${c}`);
        await q('COMMIT');
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c} AND v = 'locked'`);
        break;
      case 36:
        await q('BEGIN');
        await q("SET search_path = 'other', public");
        await q('SELECT count(*)::int FROM whoami');
        await q(r() < 0.5 ? 'COMMIT' : 'ROLLBACK');
        await q('SELECT count(*)::int FROM whoami');
        await q('RESET search_path');
        break;
      case 37:
        await q('BEGIN');
        await q('SAVEPOINT a');
        await q("SET DateStyle = 'SQL, DMY'");
        await q(r() < 0.5 ? 'ROLLBACK TO SAVEPOINT a' : 'RELEASE SAVEPOINT a');
        await q('COMMIT');
        await q(SHOW_SQL);
        break;
      case 38:
        await q('SET statement_timeout = 5000; SELECT 1 AS x');
        await q(SHOW_SQL);
        await q('SET statement_timeout = 0');
        break;
      case 39:
        await q('BEGIN ISOLATION LEVEL SERIALIZABLE');
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c}`);
        await q('COMMIT');
        break;
      case 40:
        await q('BEGIN');
        await q(`DECLARE cur${i} CURSOR FOR SELECT g FROM generate_series(1, 20) g`);
        await q(`FETCH 5 FROM cur${i}`);
        await q(`MOVE 5 IN cur${i}`);
        await q(`FETCH 3 FROM cur${i}`);
        await q(`CLOSE cur${i}`);
        await q('COMMIT');
        break;
      case 41:
        await q('SET statement_timeout = 50');
        await q('SELECT pg_sleep(1)');
        await q('RESET statement_timeout');
        await q('SELECT 1 AS alive');
        break;
      case 42:
        await q("SELECT length(repeat('x', 1000000) || $1) n, md5(repeat($1, 100000)) h", ['abc']);
        break;
      case 43:
        await q("DO $$ BEGIN RAISE NOTICE 'n1'; RAISE WARNING 'w1'; END $$; SELECT 1 AS after_notice");
        break;
      case 44:
        await q('BEGIN');
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c}`);
        await q('SELECT 1/0');
        await q('ROLLBACK');
        await q('BEGIN');
        await q(`INSERT INTO kv VALUES (${c}, 300 + ${i}, 'x') ON CONFLICT DO NOTHING`);
        await q('COMMIT');
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c} AND k >= 300`);
        break;
      case 45:
        await q('BEGIN');
        await q("SELECT set_config('app.user_id', $1, true)", [`u${c}-${i}`]);
        await q("SELECT current_setting('app.user_id') u");
        await q('COMMIT');
        await q("SELECT coalesce(current_setting('app.user_id', true), '') u");
        break;
      case 46:
        await q('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY');
        await q('BEGIN');
        await q(`INSERT INTO kv VALUES (${c}, 999, 'ro')`);
        await q('ROLLBACK');
        await q('SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE');
        await q('SHOW default_transaction_read_only');
        break;
      case 47:
        await q('BEGIN');
        await q('SET CONSTRAINTS ALL DEFERRED');
        await q(`SET search_path = 'other', public`);
        await q(`INSERT INTO kv VALUES (${c}, 600 + ${i}, 'x') ON CONFLICT DO NOTHING`);
        await q('SELECT 1/0');
        await q('COMMIT');
        await q(SHOW_SQL);
        await q('RESET search_path');
        break;
      case 48:
        for (let j = 0; j < 5; j++) await q(`SET statement_timeout = ${1000 + j}`);
        await q('BEGIN');
        await q(`SET lock_timeout = ${i}`);
        await q('COMMIT');
        await q("SELECT current_setting('statement_timeout') s, current_setting('lock_timeout') l");
        await q('RESET lock_timeout');
        await q('RESET statement_timeout');
        break;
      case 49:
        await q('SET ROLE pg_read_all_settings');
        await q('SELECT current_user::text u');
        await q('RESET ROLE');
        await q('SELECT current_user::text u');
        break;
      case 35:
        await q('BEGIN');
        await q('SELECT 1 AS one');
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c}`);
        await q(`INSERT INTO kv VALUES (${c}, 200 + ${i}, 'late') ON CONFLICT DO NOTHING`);
        await q(`SELECT count(*)::int FROM kv WHERE client = ${c}`);
        await q('COMMIT');
        break;
    }
  }
  await client.end().catch(() => undefined);
  return out;
}

async function pjScript(c: number, port: number, tag: string, out: string[]): Promise<string[]> {
  const r = xorshift32(SEED * 7777 + c);
  const sql = postgres({
    host: '127.0.0.1',
    port,
    user: 'postgres',
    database: db,
    max: 1,
    connect_timeout: 30,
    onnotice: (n) => out.push(`NOTICE ${n.message}`),
    fetch_types: false,
  });
  const rec = async (p: Promise<unknown>, what: string) => {
    try {
      const res = (await timeout(p, 30_000, `${tag} pj c${c} ${what}`)) as unknown;
      out.push(JSON.stringify(res));
    } catch (e) {
      out.push(errOf(e));
      if ((e as Error).message.startsWith('HANG')) throw e;
    }
  };
  let k = 0;
  for (let i = 0; i < OPS; i++) {
    let op = Math.floor(r() * 23);
    // COPY TO STDOUT as a readable hangs postgres.js (directly too).
    if (op === 21) op = 1;
    out.push(`#${i} op${op}`);
    k = (k + 1) % 7;
    const v = `p${i}`;
    switch (op) {
      case 0:
        await rec(
          sql`INSERT INTO kv VALUES (${c}, ${k}, ${v}) ON CONFLICT (client, k) DO UPDATE SET v = EXCLUDED.v RETURNING k, v`,
          'ins',
        );
        break;
      case 1:
        await rec(sql`SELECT k, v FROM kv WHERE client = ${c} ORDER BY k`, 'sel');
        break;
      case 2: {
        // pipelined: three queries in flight, the middle one fails
        const ps = [
          sql`SELECT ${c}::int a`.then((x) => JSON.stringify(x)),
          sql`SELECT 1/${0}::int b`.then((x) => JSON.stringify(x)),
          sql`SELECT k FROM kv WHERE client = ${c} ORDER BY k`.then((x) => JSON.stringify(x)),
        ];
        const res = await timeout(Promise.allSettled(ps), 30_000, `${tag} pj pipeline`);
        out.push(res.map((x) => (x.status === 'fulfilled' ? x.value : errOf(x.reason))).join(' | '));
        break;
      }
      case 3:
        await rec(
          sql.begin(async (t) => {
            await t`UPDATE kv SET v = ${v} WHERE client = ${c}`;
            const a = await t`SELECT k, v FROM kv WHERE client = ${c} ORDER BY k`;
            return a;
          }),
          'begin',
        );
        break;
      case 4:
        await rec(
          sql.begin(async (t) => {
            await t`UPDATE kv SET v = 'never' WHERE client = ${c}`;
            await t`SELECT 1/0`;
          }),
          'begin-fail',
        );
        await rec(sql`SELECT count(*)::int FROM kv WHERE client = ${c} AND v = 'never'`, 'after');
        break;
      case 5:
        await rec(sql.unsafe(SETS[Math.floor(r() * SETS.length)] as string), 'set');
        await rec(sql.unsafe(SHOW_SQL), 'show');
        break;
      case 6:
        await rec(
          sql`SELECT ${'2024-01-01'}::date + ${3}::int d, ${[1, 2, 3]}::int[] arr, ${sql.json({ a: 1 })}::jsonb j`,
          'typed',
        );
        break;
      case 7:
        await rec(sql.unsafe('SELECT 1 a; SELECT 2 b'), 'multi');
        break;
      case 8: {
        // many pipelined reads
        const ps = Array.from(
          { length: 20 },
          (_, j) => sql`SELECT ${j}::int j, count(*)::int n FROM kv WHERE client = ${c}`,
        );
        await rec(Promise.all(ps), 'many');
        break;
      }
      case 9:
        await rec(
          sql.begin(async (t) => {
            await t`INSERT INTO kv VALUES (${c}, 50, 'sp') ON CONFLICT DO NOTHING`;
            await t
              .savepoint(async (s) => {
                await s`UPDATE kv SET v = 'inner' WHERE client = ${c} AND k = 50`;
                await s`SELECT nosuch`;
              })
              .catch((e) => `sp-error ${(e as Err).code}`);
            return t`SELECT v FROM kv WHERE client = ${c} AND k = 50`;
          }),
          'savepoint',
        );
        break;
      case 10:
        await rec(sql`SELECT * FROM nosuchtable_pj`, 'missing');
        await rec(sql`SELECT ${c}::int after`, 'after');
        break;
      case 11: {
        const rows: unknown[] = [];
        await rec(
          sql`SELECT g FROM generate_series(1, 250) g`.cursor(40, (batch) => {
            rows.push(batch.length);
          }),
          'cursor',
        );
        out.push(JSON.stringify(rows));
        break;
      }
      case 12:
        await rec(sql`SELECT ${`text with 'quote' é`}::text || 'é' x`, 'text');
        break;
      case 13:
        await rec(sql`DELETE FROM kv WHERE client = ${c} AND k = ${k} RETURNING k`, 'del');
        break;
      case 14: {
        const ps = [
          sql`INSERT INTO kv VALUES (${c}, ${k}, ${v}) ON CONFLICT (client, k) DO UPDATE SET v = EXCLUDED.v RETURNING v`,
          sql`SELECT k, v FROM kv WHERE client = ${c} ORDER BY k`,
          sql.unsafe("SET DateStyle = 'German'"),
          sql.unsafe(SHOW_SQL),
          sql`SELECT nosuch FROM kv`,
          sql.unsafe('RESET DateStyle'),
          sql.unsafe(SHOW_SQL),
          sql`SELECT count(*)::int n FROM kv WHERE client = ${c}`,
        ].map((p) => p.then((x) => JSON.stringify(x)));
        const res = await timeout(Promise.allSettled(ps), 30_000, `${tag} pj mix`);
        out.push(res.map((x) => (x.status === 'fulfilled' ? x.value : errOf(x.reason))).join(' | '));
        break;
      }
      case 15:
        await rec(sql.unsafe('SELECT $1::int + $2::int s, $3::text t', [1, 2, 'x']), 'unsafe-params');
        break;
      case 16:
        await rec(
          sql.begin(async (t) => {
            await t.unsafe("SET LOCAL TimeZone = 'Asia/Tokyo'");
            return t.unsafe(SHOW_SQL);
          }),
          'begin-local',
        );
        await rec(sql.unsafe(SHOW_SQL), 'after-local');
        break;
      case 17:
        await rec(sql`SELECT 7 AS c, 'simple' s`.simple(), 'simple');
        break;
      case 18:
        await rec(sql.unsafe('RESET ALL'), 'reset');
        await rec(sql.unsafe(SHOW_SQL), 'show');
        break;
      case 20: {
        const w = await timeout(sql`COPY kv (client, k, v) FROM STDIN`.writable(), 30_000, 'copy in');
        const done = new Promise<void>((res, rej) => {
          w.on('finish', () => res());
          w.on('error', rej);
        });
        w.write(`${c}\t${400 + i}\tcopied\n${c}\t${500 + i}\tcopied\n`);
        w.end();
        await timeout(done, 30_000, 'copy finish').catch((e) => out.push(errOf(e)));
        await rec(sql`SELECT count(*)::int n FROM kv WHERE client = ${c} AND v = 'copied'`, 'after copy');
        break;
      }
      case 21: {
        const rd = await timeout(
          sql`COPY (SELECT g, md5(g::text) FROM generate_series(1, 500) g) TO STDOUT`.readable(),
          30_000,
          'copy out',
        );
        let n = 0;
        await timeout(
          new Promise<void>((res, rej) => {
            rd.on('data', (b: Buffer) => {
              n += b.length;
            });
            rd.on('end', () => res());
            rd.on('error', rej);
          }),
          30_000,
          'copy out end',
        ).catch((e) => out.push(errOf(e)));
        out.push(`copied out ${n}`);
        break;
      }
      case 22:
        await rec(
          sql.begin(async (t) => {
            const a = await t`SELECT ${c}::int a`;
            const [b1, b2] = await Promise.all([
              t`SELECT 1 b`,
              t`SELECT k FROM kv WHERE client = ${c} ORDER BY k LIMIT 3`,
            ]);
            return [a, b1, b2];
          }),
          'begin-parallel',
        );
        break;
      case 19:
        await rec(sql`SELECT k FROM kv WHERE client = ${c} ORDER BY k`, 'after-discard');
        await rec(sql.unsafe(SHOW_SQL), 'show');
        break;
    }
  }
  await sql.end({ timeout: 2 }).catch(() => undefined);
  return out;
}

async function reset(): Promise<void> {
  await cluster.psql(
    cluster.primaryId,
    `TRUNCATE kv; ${Array.from({ length: CLIENTS }, (_, c) => `ALTER SEQUENCE seq${c} RESTART`).join('; ')}`,
    db,
  );
  await cluster.waitForCatchup();
}

async function runAll(port: number, tag: string): Promise<string[][]> {
  return Promise.all(
    Array.from({ length: CLIENTS }, (_, c) => {
      const out: string[] = [];
      return (c % 2 === 0 ? pgScript(c, port, tag, out) : pjScript(c, port, tag, out)).catch((e) => [
        ...out,
        `SCRIPT FAILED ${(e as Error).message}`,
      ]);
    }),
  );
}

/** The first line where each client's transcript differs from its direct one. */
function differences(mode: string, direct: string[][], got: string[][]): string[] {
  const out: string[] = [];
  for (let c = 0; c < CLIENTS; c++) {
    const a = direct[c] as string[];
    const b = got[c] as string[];
    for (let j = 0; j < Math.max(a.length, b.length); j++) {
      if (a[j] === b[j]) continue;
      out.push(
        `[${mode}] client ${c} (${c % 2 ? 'postgres.js' : 'node-postgres'}) line ${j}: direct ${a[j]?.slice(0, 300)} | pgrelay ${b[j]?.slice(0, 300)} | after ${a
          .slice(Math.max(0, j - 3), j)
          .join(' / ')
          .slice(0, 300)}`,
      );
      break;
    }
  }
  return out;
}

let direct: string[][];

beforeAll(async () => {
  const P = cluster.primaryId;
  await cluster.psql(P, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await cluster.psql(P, `CREATE DATABASE ${db}`);
  await cluster.psql(
    P,
    `CREATE TABLE kv (client int, k int, v text, PRIMARY KEY (client, k));
     CREATE SCHEMA other; CREATE TABLE other.whoami (x int); INSERT INTO other.whoami VALUES (1), (2); CREATE TABLE public.whoami (x int);
     CREATE FUNCTION f_write(c int, kk int) RETURNS int LANGUAGE sql AS $$ UPDATE kv SET v = 'fw' WHERE client = c AND k = kk RETURNING k $$;
     ${Array.from({ length: CLIENTS }, (_, c) => `CREATE SEQUENCE seq${c}`).join('; ')}`,
    db,
  );
  await reset();
  direct = await runAll(cluster.node(P).port, 'direct');
}, 120_000);

afterAll(async () => {
  for (const p of proxies) await p.stop();
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
});

/** The configurations compared: each pool mode, and transaction mode with reads on standbys only and read_your_writes = global. */
const CASES: Array<{ name: string; mode: string; config: Record<string, string | number | boolean> }> = [
  { name: 'pool_mode = transaction, load balancing on', mode: 'transaction', config: {} },
  { name: 'pool_mode = session, load balancing on', mode: 'session', config: {} },
  {
    name: 'pool_mode = transaction, pool size 3, reads on the standbys alone, read_your_writes = global',
    mode: 'transaction',
    config: {
      default_pool_size: 3,
      read_your_writes: 'global',
      [`backend_weight${cluster.primaryId}`]: 0,
    },
  },
];

describe('node-postgres and postgres.js see through pgrelay what they see directly', () => {
  for (const { name, mode, config } of CASES)
    it(`${name}: ${CLIENTS} clients × ${OPS} operations, the same transcripts`, {
      timeout: 120_000,
    }, async () => {
      expect(direct.flat().filter((l) => l.startsWith('SCRIPT FAILED'))).toEqual([]);
      await reset();
      const proxy = await startProxy({
        cluster,
        config: {
          pool_mode: mode,
          default_pool_size: 8,
          load_balance_mode: true,
          num_init_children: 32,
          max_client_conn: 64,
          log_min_messages: 'warning',
          sr_check_period: 1,
          delay_threshold: 10000000,
          ...config,
        },
      });
      proxies.push(proxy);
      const got = await runAll(proxy.port, mode);
      expect(differences(mode, direct, got)).toEqual([]);
    });
});
