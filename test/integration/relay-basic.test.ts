/**
 * Foundation: the protocol relay through pgrelay against the real cluster, with
 * psql, node-postgres (simple and extended protocol, named statements,
 * pg-cursor) and postgres.js (pipelining).
 */
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import Cursor from 'pg-cursor';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../dev/devcluster.js';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, endSql, pgClient, sqlClient, withTimeout } from '../support/clients.js';
import { CLI_PATH, backendConf, renderConf, runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
  closeAllRaw,
  closeMessage,
  executeMessage,
  flushMessage,
  isAlive,
  parseMessage,
  summarize,
  syncMessage,
} from '../support/raw.js';
import { pollUntil } from '../support/wait.js';

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

const cluster = getCluster();
const table = `relay_basic_${process.pid}`;
let proxy: ProxyHandle;
let tmp: string;

beforeAll(async () => {
  proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } });
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'relay-basic-'));
  await cluster.psql(
    cluster.primaryId,
    `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id int primary key, v text)`,
  );
});

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  const code = await proxy?.stop();
  await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  // pgrelay must exit cleanly on SIGTERM with no session open.
  expect(code).toBe(0);
});

describe('psql through pgrelay', () => {
  it('runs -c queries and reports the primary as the server', async () => {
    const r = await runPsql(
      [
        '-At',
        '-v',
        'ON_ERROR_STOP=1',
        '-c',
        'SELECT 1 + 1',
        '-c',
        'SELECT pg_is_in_recovery()',
        '-c',
        'SHOW server_version_num',
      ],
      {
        port: proxy.port,
        timeoutMs: 15_000,
      },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('2');
    expect(lines[1]).toBe('f');
    expect(Number(lines[2])).toBeGreaterThanOrEqual(150000);
  });

  it('reports a server error with its SQLSTATE and keeps the session usable', async () => {
    const r = await runPsql(['-At', '-v', 'VERBOSITY=verbose', '-c', 'SELECT 1/0', '-c', 'SELECT 42'], {
      port: proxy.port,
      timeoutMs: 15_000,
    });
    expect(r.stderr).toMatch(/22012/);
    expect(r.stderr).toMatch(/division by zero/);
    expect(r.stdout.trim()).toBe('42');
  });

  it('runs a script with \\copy in both directions and COPY FROM STDIN inline data', async () => {
    const csvIn = path.join(tmp, 'in.csv');
    const csvOut = path.join(tmp, 'out.csv');
    const rows: string[] = [];
    for (let i = 1; i <= 5000; i++) rows.push(`${i},"value ${i}, with comma"`);
    await fsp.writeFile(csvIn, `${rows.join('\n')}\n`);
    const script = [
      '\\set ON_ERROR_STOP 1',
      `TRUNCATE ${table};`,
      `\\copy ${table} FROM '${csvIn}' WITH (FORMAT csv)`,
      `COPY ${table} FROM STDIN;`,
      '100001\tinline one',
      '100002\tinline two',
      '\\.',
      `SELECT count(*) FROM ${table};`,
      `\\copy (SELECT id, v FROM ${table} WHERE id <= 5000 ORDER BY id) TO '${csvOut}' WITH (FORMAT csv)`,
      `SELECT v FROM ${table} WHERE id = 100002;`,
      '',
    ].join('\n');
    const scriptFile = path.join(tmp, 'script.sql');
    await fsp.writeFile(scriptFile, script);
    const r = await runPsql(['-At', '-f', scriptFile], { port: proxy.port, timeoutMs: 30_000 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = r.stdout.trim().split('\n');
    expect(out).toContain('COPY 5000');
    expect(out).toContain('5002');
    expect(out).toContain('inline two');
    expect(await fsp.readFile(csvOut, 'utf8')).toBe(`${rows.join('\n')}\n`);
    // Check through a direct connection to the primary as well.
    expect(await cluster.psql(cluster.primaryId, `SELECT count(*), sum(id) FROM ${table}`)).toBe(
      `5002|${(5000 * 5001) / 2 + 100001 + 100002}`,
    );
  });

  it('pipes \\copy TO STDOUT', async () => {
    const r = await runPsql(
      [
        '-At',
        '-v',
        'ON_ERROR_STOP=1',
        '-c',
        '\\copy (SELECT g, md5(g::text) FROM generate_series(1, 20000) g) TO STDOUT',
      ],
      {
        port: proxy.port,
        timeoutMs: 30_000,
      },
    );
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(20000);
    expect(lines[19999]).toMatch(/^20000\t[0-9a-f]{32}$/);
  });
});

describe('node-postgres through pgrelay', () => {
  it('runs parameterised queries of several types', async () => {
    const c = await pgClient({ port: proxy.port });
    const r = await c.query(
      'SELECT $1::int + $2::int AS sum, $3::text AS t, $4::text IS NULL AS isnull, $5::bytea AS b, $6::jsonb AS j, $7::text[] AS arr',
      [
        40,
        2,
        "it's ünïcødé ✓",
        null,
        Buffer.from([0, 1, 2, 255]),
        JSON.stringify({ a: [1, 2, { b: 'c' }] }),
        ['x', 'y,z', null],
      ],
    );
    expect(r.rows[0].sum).toBe(42);
    expect(r.rows[0].t).toBe("it's ünïcødé ✓");
    expect(r.rows[0].isnull).toBe(true);
    expect(Buffer.compare(r.rows[0].b as Buffer, Buffer.from([0, 1, 2, 255]))).toBe(0);
    expect(r.rows[0].j).toEqual({ a: [1, 2, { b: 'c' }] });
    expect(r.rows[0].arr).toEqual(['x', 'y,z', null]);
    // Writes with parameters, inside a transaction.
    await c.query('BEGIN');
    for (let i = 0; i < 20; i++) await c.query(`INSERT INTO ${table} (id, v) VALUES ($1, $2)`, [200000 + i, `p${i}`]);
    await c.query('COMMIT');
    const n = await c.query(`SELECT count(*)::int AS n FROM ${table} WHERE id >= $1 AND id < $2`, [200000, 200020]);
    expect(n.rows[0].n).toBe(20);
  });

  it('reuses a named prepared statement many times', async () => {
    const c = await pgClient({ port: proxy.port });
    for (let i = 0; i < 300; i++) {
      const r = await c.query({
        name: 'relay_basic_named',
        text: 'SELECT $1::int * 2 AS d, $2::text AS s',
        values: [i, `v${i}`],
      });
      expect(r.rows[0]).toEqual({ d: i * 2, s: `v${i}` });
    }
    // (pg_prepared_statements is not checked here: with load balancing on, that catalog
    // SELECT may run on another node than the statement; relay-cache checks it with LB off.)
  });

  it('reports errors in the extended protocol and recovers (Sync)', async () => {
    const c = await pgClient({ port: proxy.port });
    await expect(c.query('SELECT $1::int / 0', [1])).rejects.toMatchObject({ code: '22012' });
    await expect(c.query('SELEC 1', [])).rejects.toMatchObject({ code: '42601' });
    await expect(
      c.query({ name: 'bad_named', text: 'SELECT * FROM no_such_table_xyz WHERE a = $1', values: [1] }),
    ).rejects.toMatchObject({ code: '42P01' });
    // In a failed transaction.
    await c.query('BEGIN');
    await expect(c.query('SELECT $1::int / 0', [1])).rejects.toMatchObject({ code: '22012' });
    await expect(c.query('SELECT $1::int', [1])).rejects.toMatchObject({ code: '25P02' });
    await c.query('ROLLBACK');
    const r = await c.query('SELECT $1::int AS v', [7]);
    expect(r.rows[0].v).toBe(7);
  });

  it('reads with pg-cursor 10 rows at a time (Execute with a row limit + Flush, PortalSuspended)', async () => {
    const c = await pgClient({ port: proxy.port });
    const cursor = c.query(
      new Cursor('SELECT g AS n, repeat($1::text, 10) AS s FROM generate_series(1, 1005) g', ['ab']),
    );
    let total = 0;
    let reads = 0;
    let last = 0;
    for (;;) {
      const rows = await withTimeout(cursor.read(10), 10_000, 'cursor.read(10)');
      reads++;
      if (rows.length === 0) break;
      expect(rows.length).toBeLessThanOrEqual(10);
      for (const row of rows) {
        expect(row.n).toBe(last + 1);
        expect(row.s).toBe('ab'.repeat(10));
        last = row.n as number;
      }
      total += rows.length;
    }
    await withTimeout(cursor.close(), 10_000, 'cursor.close()');
    expect(total).toBe(1005);
    expect(reads).toBe(102);
    // The connection is still in sync afterwards.
    const r = await c.query('SELECT 1 AS one');
    expect(r.rows[0].one).toBe(1);
  });

  it('interleaves two suspended portals in one transaction (raw extended protocol, Flush without Sync)', async () => {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ user: 'postgres', database: 'postgres', application_name: 'relay-basic-raw' });
    expect(st.ok).toBe(true);
    expect((await raw.query('BEGIN')).status).toBe('T');
    raw.send(
      parseMessage('s1', 'SELECT g FROM generate_series(1, 100) g'),
      bindMessage('pa', 's1'),
      executeMessage('pa', 10),
      parseMessage('s2', 'SELECT g FROM generate_series($1::int, $2::int) g'),
      bindMessage('pb', 's2', ['101', '200']),
      executeMessage('pb', 10),
      executeMessage('pa', 5),
      flushMessage(),
    );
    let suspended = 0;
    const msgs = await raw.collect((m) => m.type === 's' && ++suspended === 3, 10_000);
    expect(msgs.map((m) => m.type).join('')).toBe(`12${'D'.repeat(10)}s12${'D'.repeat(10)}s${'D'.repeat(5)}s`);
    const rows = summarize(msgs).rows.map((r) => Number(r[0]));
    expect(rows).toEqual([...range(1, 10), ...range(101, 110), ...range(11, 15)]);
    // Run both portals to completion, then Sync.
    raw.send(
      executeMessage('pb', 0),
      executeMessage('pa', 0),
      closeMessage('P', 'pa'),
      closeMessage('S', 's1'),
      syncMessage(),
    );
    const rest = summarize(await raw.collect('Z', 10_000));
    expect(rest.errors).toEqual([]);
    expect(rest.tags).toEqual(['SELECT 90', 'SELECT 85']);
    expect(rest.status).toBe('T');
    expect((await raw.query('COMMIT')).status).toBe('I');
    raw.end();
  });

  it('delivers LISTEN/NOTIFY between two clients', async () => {
    const listener = await pgClient({ port: proxy.port });
    const notifier = await pgClient({ port: proxy.port });
    const got: Array<{ channel: string; payload?: string; processId: number }> = [];
    listener.on('notification', (n) => got.push(n));
    await listener.query('LISTEN relay_basic_chan');
    await notifier.query("NOTIFY relay_basic_chan, 'hello'");
    await notifier.query("SELECT pg_notify('relay_basic_chan', $1)", ['world ✓']);
    await pollUntil(
      () => got.length,
      (n) => n >= 2,
      { what: 'two notifications' },
    ).catch(() => undefined); // the assertion below shows what arrived
    expect(got.map((n) => [n.channel, n.payload])).toEqual([
      ['relay_basic_chan', 'hello'],
      ['relay_basic_chan', 'world ✓'],
    ]);
    await endPg(listener);
    await endPg(notifier);
  });
});

describe('notices', () => {
  it("relays the backend's NoticeResponse (RAISE NOTICE) to node-postgres and psql", async () => {
    const c = await pgClient({ port: proxy.port });
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(n.message ?? ''));
    await c.query("DO $$ BEGIN RAISE NOTICE 'relay-basic notice %', 42; END $$");
    expect(notices).toEqual(['relay-basic notice 42']);
    // The session goes on after the notice.
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    const r = await runPsql(['-At', '-c', "DO $$ BEGIN RAISE NOTICE 'psql notice'; END $$"], {
      port: proxy.port,
      timeoutMs: 15_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('NOTICE:  psql notice');
  });
});

describe('configuration file and command line', () => {
  const SAMPLE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'pgpool.conf.sample-stream');

  it("starts from pgpool-II's own sample pgpool.conf as it is (where to listen and the backends from --set)", async () => {
    // Debian pgpool2 4.3's streaming-replication sample: every line commented out but the clustering mode and
    // a watchdog key (accepted silently).
    const port = await freePort();
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'relay-basic-sample-'));
    const sets = [
      `port=${port}`,
      'listen_addresses=127.0.0.1',
      `pid_file_name=${path.join(dir, 'pgrelay.pid')}`,
      `logdir=${dir}`,
      `unix_socket_directories=${dir}`,
      `pcp_port=${await freePort()}`,
      `pcp_socket_dir=${dir}`,
      ...cluster.nodes.flatMap((n) => [`backend_hostname${n.id}=${n.host}`, `backend_port${n.id}=${n.port}`]),
    ];
    // The last -f wins: startProxy's own file is replaced by the sample.
    const p = await startProxy({
      cluster,
      config: { port },
      args: ['-f', SAMPLE, ...sets.flatMap((x) => ['--set', x])],
    });
    try {
      const r = await runPsql(
        [
          '-At',
          '-v',
          'ON_ERROR_STOP=1',
          '-c',
          'CREATE TEMP TABLE sample_t AS SELECT pg_is_in_recovery() AS r; TABLE sample_t',
        ],
        { port, timeoutMs: 15_000 },
      );
      expect(r.stderr).toBe('');
      expect(r.stdout.trim().split('\n')).toEqual(['SELECT 1', 'f']);
      expect(p.logs(), 'no warning about the sample file').not.toMatch(/"level":"warn"[^\n]*sample-stream/);
    } finally {
      expect(await p.stop()).toBe(0);
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('--set overrides the configuration file', async () => {
    // The file balances every read to standby 1; --set turns load balancing off: reads run on the primary.
    const p = await startProxy({
      cluster,
      config: { load_balance_mode: true, backend_weight0: 0, backend_weight1: 1, backend_weight2: 0 },
      args: ['--set', 'load_balance_mode=off'],
    });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await runPsql(['-At', '-v', 'ON_ERROR_STOP=1', '-c', 'SELECT inet_server_port()'], {
          port: p.port,
          timeoutMs: 15_000,
        });
        expect(r.stderr).toBe('');
        expect(r.stdout.trim()).toBe(String(cluster.primary.port));
      }
    } finally {
      await p.stop();
    }
  });

  it('warns about an unknown key with file:line, and refuses to start with every invalid line listed', async () => {
    const unknown = await startProxy({ cluster, config: { load_balance_mode: false, no_such_parameter_xyz: 1 } });
    try {
      const line = await unknown.waitForLog(/no_such_parameter_xyz/, 20_000);
      expect(line).toContain(`${unknown.confPath}:`);
      expect((await runPsql(['-At', '-c', 'SELECT 1'], { port: unknown.port, timeoutMs: 15_000 })).stdout.trim()).toBe(
        '1',
      );
    } finally {
      await unknown.stop();
    }
    const bad = startProxy({ cluster, config: { client_idle_limit: '30x', num_init_children: -5 } });
    const err = await bad.then(
      () => null,
      (e: Error) => e.message,
    );
    expect(err, 'pgrelay started with invalid values').not.toBeNull();
    expect(err).toMatch(/:\d+: invalid value for parameter "client_idle_limit"/);
    expect(err).toMatch(/:\d+: invalid value for parameter "num_init_children"/);
  });

  it("listen_addresses = '': Unix-domain socket only, as pgpool-II; with no socket directory either it refuses to start", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'relay-basic-unix-'));
    const port = await freePort();
    const conf = path.join(dir, 'pgpool.conf');
    await fsp.writeFile(
      conf,
      renderConf({
        listen_addresses: '',
        port,
        unix_socket_directories: dir,
        pcp_port: 0,
        pid_file_name: path.join(dir, 'pgrelay.pid'),
        logdir: dir,
        sr_check_user: 'postgres',
        sr_check_password: cluster.superuserPassword ?? '',
        health_check_user: 'postgres',
        health_check_password: cluster.superuserPassword ?? '',
        ...backendConf(cluster),
      }),
    );
    const child = spawn(process.execPath, [CLI_PATH, '-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    try {
      await pollUntil(
        () => out.includes('pgrelay accepting connections') || child.exitCode !== null,
        (ready) => ready,
        { timeoutMs: 30_000, what: `pgrelay listening on ${dir}/.s.PGSQL.${port}` },
      );
      expect(child.exitCode, out).toBeNull();
      const r = await runPsql(['-At', '-c', 'SELECT 1'], { port, host: dir, timeoutMs: 15_000 });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('1');
      // Nothing on TCP: a connection to the port is refused.
      const tcp = await new Promise<string>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        const t = setTimeout(() => {
          s.destroy();
          resolve('timeout');
        }, 10_000);
        s.once('connect', () => {
          clearTimeout(t);
          s.destroy();
          resolve('connected');
        });
        s.once('error', (e: NodeJS.ErrnoException) => {
          clearTimeout(t);
          resolve(e.code ?? e.message);
        });
      });
      expect(tcp).toBe('ECONNREFUSED');
    } finally {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
      await fsp.rm(dir, { recursive: true, force: true });
    }
    const none = await startProxy({ cluster, config: { listen_addresses: '', unix_socket_directories: '' } }).then(
      async (p) => {
        await p.stop();
        return 'started';
      },
      (e: Error) => e.message,
    );
    expect(none).toContain('pgrelay exited during start-up');
    expect(none).toContain(
      "nothing to listen on: no TCP/IP address (listen_addresses = '') and no Unix-domain socket directory (unix_socket_directories = '')",
    );
  });
});

describe('postgres.js through pgrelay', () => {
  it('pipelines 100 queries on one connection', async () => {
    const sql = sqlClient({ port: proxy.port }, { max: 1 });
    const results = await withTimeout(
      Promise.all(
        Array.from(
          { length: 100 },
          (_, i) => sql`SELECT ${i}::int AS n, ${`s${i}`}::text AS s, pg_backend_pid() AS pid`,
        ),
      ),
      20_000,
      '100 pipelined queries',
    );
    expect(results.map((r) => r[0].n)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(results.map((r) => r[0].s)).toEqual(Array.from({ length: 100 }, (_, i) => `s${i}`));
    expect(new Set(results.map((r) => r[0].pid)).size).toBe(1);
    await endSql(sql);
  });

  it('pipelines queries of different statements, with an error in the middle', async () => {
    const sql = sqlClient({ port: proxy.port }, { max: 1 });
    const ps = Array.from({ length: 60 }, (_, i) =>
      i === 30
        ? sql`SELECT 1/${0}::int AS boom`.then(
            () => 'no error',
            (e: { code?: string }) => `error ${e.code}`,
          )
        : i % 3 === 0
          ? sql`SELECT ${i}::int AS n`.then((r) => r[0].n as number)
          : i % 3 === 1
            ? sql`SELECT ${i}::bigint + 0 AS n`.then((r) => Number(r[0].n))
            : sql`SELECT count(*)::int AS n FROM generate_series(1, ${i}::int)`.then((r) => r[0].n as number),
    );
    const out = await withTimeout(Promise.all(ps), 20_000, 'pipelined mixed queries');
    expect(out[30]).toBe('error 22012');
    for (let i = 0; i < 60; i++) if (i !== 30) expect(out[i]).toBe(i);
    await endSql(sql);
  });

  it('runs a transaction and unsafe (simple protocol) multi-statement queries', async () => {
    const sql = sqlClient({ port: proxy.port }, { max: 2 });
    await sql.begin(async (tx) => {
      await tx`INSERT INTO ${tx(table)} (id, v) VALUES (${300001}, ${'tx'})`;
      await tx`INSERT INTO ${tx(table)} (id, v) VALUES (${300002}, ${'tx'})`;
    });
    const r = await sql.unsafe(`SELECT count(*)::int AS n FROM ${table} WHERE v = 'tx'; SELECT 2 AS two`);
    expect(r).toHaveLength(2);
    expect(r[0][0].n).toBe(2);
    await endSql(sql);
  });
});

it('pgrelay is still running after the file', () => {
  expect(isAlive(proxy.pid)).toBe(true);
  void pg;
});
