/**
 * Admin commands answered by pgrelay itself, checked against pgpool-II 4.3's
 * formats (https://www.pgpool.net/docs/43/en/html/sql-commands.html: column
 * names and order, integers, %f averages, timestamps): SHOW pool_* in the
 * simple protocol (psql), in the extended protocol (node-postgres named
 * statements) and inside a transaction; PGPOOL SHOW / SET / RESET;
 * select_cnt; the Prometheus /metrics, /healthz and /readyz endpoints;
 * statement logging with password redaction.
 *
 * Shared cluster, read-only. Weights 0:1:0, so the load-balance node of every
 * session is standby node 1.
 */
import type pg from 'pg';
import { parsePrometheus, type Family } from '../support/prometheus.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../dev/devcluster.js';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, pgClient } from '../support/clients.js';
import { runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';

const cluster = getCluster();
const P = cluster.primaryId; // 0
const LB = 1;
const SR_SECRET = `sr-secret-${process.pid}`;
const ROLE = `admin_show_role_${process.pid}`;
const ROLE2 = `admin_show_role2_${process.pid}`;

let proxy: ProxyHandle;
let metricsPort: number;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  metricsPort = await freePort();
  await cluster.psql(P, `DROP ROLE IF EXISTS ${ROLE}; DROP ROLE IF EXISTS ${ROLE2}; CREATE ROLE ${ROLE} LOGIN;`);
  proxy = await startProxy({
    cluster,
    config: {
      backend_weight0: 0,
      backend_weight1: 1,
      backend_weight2: 0,
      sr_check_period: 1,
      sr_check_user: 'postgres',
      sr_check_password: SR_SECRET,
      health_check_period: 1,
      health_check_user: 'postgres',
      metrics_port: metricsPort,
      log_statement: true,
      log_per_node_statement: true,
    },
  });
});

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  await proxy?.stop();
  await cluster.psql(P, `DROP ROLE IF EXISTS ${ROLE}; DROP ROLE IF EXISTS ${ROLE2};`).catch(() => undefined);
});

// ---------------------------------------------------------------------------
// helpers

/** Minimal RFC 4180 CSV parser (psql --csv). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let i = 0;
  let quoted = false;
  let any = false;
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        continue;
      }
      field += c;
      i++;
      continue;
    }
    if (c === '"') {
      quoted = true;
      any = true;
      i++;
    } else if (c === ',') {
      row.push(field);
      field = '';
      any = true;
      i++;
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      any = false;
      i++;
    } else {
      field += c;
      any = true;
      i++;
    }
  }
  if (any || field !== '') {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

interface Table {
  columns: string[];
  rows: string[][];
}

/** Run one statement with psql --csv through the proxy. */
async function psqlTable(sql: string, port = proxy.port): Promise<Table> {
  const r = await runPsql(['--csv', '-v', 'ON_ERROR_STOP=1', '-c', sql], { port, timeoutMs: 20_000 });
  expect(r.stderr, `psql stderr for ${sql}`).toBe('');
  expect(r.code, `psql exit code for ${sql}`).toBe(0);
  const all = parseCsv(r.stdout);
  return { columns: all[0] ?? [], rows: all.slice(1) };
}

function rowObjects(t: Table): Array<Record<string, string>> {
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c, r[i] ?? ''])));
}

const POOL_NODES_COLUMNS = [
  'node_id',
  'hostname',
  'port',
  'status',
  'pg_status',
  'lb_weight',
  'role',
  'pg_role',
  'select_cnt',
  'load_balance_node',
  'replication_delay',
  'replication_state',
  'replication_sync_state',
  'last_status_change',
];
const TS = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/;

/** `YYYY-MM-DD HH:MM:SS` in local time → ms. */
function localTs(s: string): number {
  const m = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$/.exec(s);
  if (!m) return NaN;
  return new Date(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!).getTime();
}

function expectRecentTs(s: string, what: string): void {
  expect(s, what).toMatch(TS);
  const t = localTs(s);
  // local time, not UTC: within the last 10 minutes and not in the future
  expect(t, `${what} = ${s} (local time) vs now ${new Date().toString()}`).toBeGreaterThan(Date.now() - 10 * 60_000);
  expect(t, `${what} = ${s} is in the future`).toBeLessThanOrEqual(Date.now() + 2000);
}

/** Check every cell of SHOW pool_nodes (weights 0:1:0, all nodes up, sr_check done). */
function checkPoolNodes(t: Table): void {
  expect(t.columns).toEqual(POOL_NODES_COLUMNS);
  expect(t.rows).toHaveLength(3);
  const rows = rowObjects(t);
  for (const [i, r] of rows.entries()) {
    const n = cluster.node(i);
    const isPrimary = i === P;
    expect(r.node_id).toBe(String(i));
    expect(r.hostname).toBe(n.host);
    expect(r.port).toBe(String(n.port));
    expect(r.status, `node ${i} status`).toMatch(/^(up|waiting)$/);
    expect(r.pg_status, `node ${i} pg_status (health_check_period > 0)`).toBe('up');
    expect(r.lb_weight, `node ${i} lb_weight: %f, six decimals`).toBe(i === LB ? '1.000000' : '0.000000');
    expect(r.role).toBe(isPrimary ? 'primary' : 'standby');
    expect(r.pg_role, `node ${i} pg_role (sr_check_period > 0)`).toBe(isPrimary ? 'primary' : 'standby');
    expect(r.select_cnt).toMatch(/^\d+$/);
    expect(r.load_balance_node, `node ${i} load_balance_node`).toBe(i === LB ? 'true' : 'false');
    if (isPrimary) expect(r.replication_delay).toBe('0');
    else expect(r.replication_delay).toMatch(/^\d+$/);
    expect(r.replication_state, `node ${i} replication_state`).toBe(isPrimary ? '' : 'streaming');
    expect(r.replication_sync_state, `node ${i} replication_sync_state`).toBe(isPrimary ? '' : 'async');
    expectRecentTs(r.last_status_change!, `node ${i} last_status_change`);
  }
  // the LB node served this very session, so it is up (not waiting)
  expect(rows[LB]!.status).toBe('up');
}

/** Poll SHOW pool_nodes until both standbys show streaming (the sr check ran). */
async function waitForSrCheck(timeoutMs = 20_000): Promise<Table> {
  const deadline = Date.now() + timeoutMs;
  let last: Table | undefined;
  for (;;) {
    last = await psqlTable('SHOW pool_nodes');
    const rows = rowObjects(last);
    if (
      rows.length === 3 &&
      rows.filter((r) => r.replication_state === 'streaming').length === 2 &&
      rows.every((r) => r.pg_role !== 'unknown')
    )
      return last;
    if (Date.now() > deadline)
      throw new Error(
        `sr_check did not fill replication_state within ${timeoutMs} ms:\n${JSON.stringify(rows, null, 1)}`,
      );
    await sleep(500);
  }
}

/** Every JSON log line pgrelay wrote (log_destination defaults to stderr, as pgpool). */
function logLines(p: ProxyHandle = proxy): Array<Record<string, unknown>> {
  const res: Array<Record<string, unknown>> = [];
  for (const l of p.logs().split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      res.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      // partial line
    }
  }
  return res;
}

function resultTable(r: pg.QueryResult): Table {
  const columns = r.fields.map((f) => f.name);
  return { columns, rows: (r.rows as Array<Record<string, unknown>>).map((o) => columns.map((c) => o[c] as string)) };
}

/** A pg.Client that records the protocol messages it receives (parseComplete, readyForQuery statuses). */
async function tracedClient(): Promise<{ c: pg.Client; events: string[]; statuses: string[] }> {
  const c = await pgClient({ port: proxy.port });
  const events: string[] = [];
  const statuses: string[] = [];
  const conn = (c as unknown as { connection: import('node:events').EventEmitter }).connection;
  for (const ev of ['parseComplete', 'bindComplete', 'rowDescription', 'noData', 'commandComplete'])
    conn.on(ev, () => events.push(ev));
  conn.on('readyForQuery', (m: { status: string }) => statuses.push(m.status));
  return { c, events, statuses };
}

// ---------------------------------------------------------------------------

describe('SHOW pool_nodes', () => {
  it('psql (simple protocol): 14 columns in pgpool order, every cell in pgpool format', async () => {
    const t = await waitForSrCheck();
    checkPoolNodes(t);
  });

  it('node-postgres, parameterised query object with values: [] (pg sends it as a simple Query)', async () => {
    await waitForSrCheck();
    const { c, events } = await tracedClient();
    const r = await c.query({ text: 'SHOW pool_nodes', values: [] });
    checkPoolNodes(resultTable(r));
    expect(
      r.fields.every((f) => f.dataTypeID === 25),
      'column types are text',
    ).toBe(true);
    expect(events).not.toContain('parseComplete');
  });

  it('node-postgres named statement: extended protocol (Parse/Bind/Describe/Execute), same answer', async () => {
    await waitForSrCheck();
    const { c, events } = await tracedClient();
    const r = await c.query({ name: 'pn', text: 'SHOW pool_nodes' });
    expect(events, 'pg used the extended protocol').toContain('parseComplete');
    expect(events).toContain('bindComplete');
    checkPoolNodes(resultTable(r));
    // again: pg reuses the prepared statement (Bind/Execute only)
    const before = events.filter((e) => e === 'parseComplete').length;
    const r2 = await c.query({ name: 'pn', text: 'SHOW pool_nodes' });
    expect(events.filter((e) => e === 'parseComplete').length).toBe(before);
    checkPoolNodes(resultTable(r2));
    // PGPOOL SHOW in the extended protocol too
    const port = await c.query({ name: 'pp', text: 'PGPOOL SHOW port' });
    expect(port.fields.map((f) => f.name)).toEqual(['port']);
    expect(port.rows).toEqual([{ port: String(proxy.port) }]);
  });

  it('inside a transaction: the transaction is not disturbed (same txid, ReadyForQuery stays T)', async () => {
    await waitForSrCheck();
    const { c, statuses } = await tracedClient();
    await c.query('BEGIN');
    await c.query('CREATE TEMP TABLE admin_show_tx (v int) ON COMMIT DROP');
    await c.query('INSERT INTO admin_show_tx VALUES (1)');
    // after a write, reads in the transaction go to the primary: txid_current() works
    const a = await c.query('SELECT txid_current() AS x');
    const s0 = statuses.length;
    const show = await c.query('SHOW pool_nodes');
    expect(statuses.slice(s0), 'ReadyForQuery after SHOW inside a transaction').toEqual(['T']);
    expect(resultTable(show).columns).toEqual(POOL_NODES_COLUMNS);
    const s1 = statuses.length;
    const showExt = await c.query({ name: 'pn_tx', text: 'SHOW pool_nodes' });
    expect(statuses.slice(s1), 'ReadyForQuery after an extended-protocol SHOW inside a transaction').toEqual(['T']);
    expect(showExt.rows).toHaveLength(3);
    const one = await c.query('SELECT 1 AS one');
    expect(one.rows).toEqual([{ one: 1 }]);
    await c.query('INSERT INTO admin_show_tx VALUES (2)');
    expect((await c.query('SELECT count(*)::int AS n FROM admin_show_tx')).rows).toEqual([{ n: 2 }]);
    const b = await c.query('SELECT txid_current() AS x');
    expect(b.rows[0].x, 'still the same transaction').toBe(a.rows[0].x);
    await c.query('COMMIT');
    expect(statuses.at(-1)).toBe('I');
  });

  it('case-insensitive, optional trailing semicolon', async () => {
    for (const sql of ['show POOL_NODES;', 'Show Pool_Nodes ;', '  SHOW pool_nodes']) {
      const t = await psqlTable(sql);
      expect(t.columns, sql).toEqual(POOL_NODES_COLUMNS);
      expect(t.rows, sql).toHaveLength(3);
    }
    const v = await psqlTable('show pool_version;');
    expect(v.columns).toEqual(['pool_version']);
    const p = await psqlTable('pgpool show PORT;');
    expect(p.rows).toEqual([[String(proxy.port)]]);
    const all = await psqlTable('PgPool Show All;');
    expect(all.columns).toEqual(['item', 'value', 'description']);
  });

  it('select_cnt grows on the node that served the reads (LB node forced by weights)', async () => {
    const before = rowObjects(await psqlTable('SHOW pool_nodes')).map((r) => Number(r.select_cnt));
    const statsBefore = rowObjects(await psqlTable('SHOW pool_backend_stats')).map((r) => Number(r.select_cnt));
    const N = 6;
    const c = await pgClient({ port: proxy.port });
    for (let i = 0; i < N; i++) {
      const r = await c.query('SELECT inet_server_port() AS port');
      expect(r.rows[0].port, 'served by the LB node').toBe(cluster.node(LB).port);
    }
    await endPg(c);
    const after = rowObjects(await psqlTable('SHOW pool_nodes')).map((r) => Number(r.select_cnt));
    const statsAfter = rowObjects(await psqlTable('SHOW pool_backend_stats')).map((r) => Number(r.select_cnt));
    expect(after[LB]! - before[LB]!, `select_cnt of node ${LB}: ${before} → ${after}`).toBeGreaterThanOrEqual(N);
    expect(after[P], 'select_cnt of the primary unchanged').toBe(before[P]);
    expect(after[2], 'select_cnt of node 2 unchanged').toBe(before[2]);
    expect(statsAfter[LB]! - statsBefore[LB]!, 'pool_backend_stats.select_cnt of the LB node').toBeGreaterThanOrEqual(
      N,
    );
    expect(statsAfter[P]).toBe(statsBefore[P]);
  });
});

describe('other SHOW pool_* commands', () => {
  it('SHOW pool_version: 1 column, "<version> (<name>)"', async () => {
    const t = await psqlTable('SHOW pool_version');
    expect(t.columns).toEqual(['pool_version']);
    expect(t.rows).toHaveLength(1);
    expect(t.rows[0]![0]).toMatch(/^\d+\.\d+\.\d+ \(.+\)$/);
  });

  it('SHOW pool_backend_stats: 14 columns, one integer row per node', async () => {
    const t = await psqlTable('SHOW pool_backend_stats');
    expect(t.columns).toEqual([
      'node_id',
      'hostname',
      'port',
      'status',
      'role',
      'select_cnt',
      'insert_cnt',
      'update_cnt',
      'delete_cnt',
      'ddl_cnt',
      'other_cnt',
      'panic_cnt',
      'fatal_cnt',
      'error_cnt',
    ]);
    expect(t.rows).toHaveLength(3);
    for (const [i, r] of rowObjects(t).entries()) {
      expect(r.node_id).toBe(String(i));
      expect(r.port).toBe(String(cluster.node(i).port));
      expect(r.role).toBe(i === P ? 'primary' : 'standby');
      for (const k of t.columns.slice(5)) expect(r[k], `${k} of node ${i}`).toMatch(/^\d+$/);
    }
  });

  it('SHOW pool_health_check_stats: 20 columns, counts, %f averages, ms durations, timestamps', async () => {
    // health_check_period = 1: wait until every node has been checked twice
    const deadline = Date.now() + 15_000;
    let t: Table;
    for (;;) {
      t = await psqlTable('SHOW pool_health_check_stats');
      if (rowObjects(t).every((r) => Number(r.total_count) >= 2) || Date.now() > deadline) break;
      await sleep(500);
    }
    expect(t.columns).toEqual([
      'node_id',
      'hostname',
      'port',
      'status',
      'role',
      'last_status_change',
      'total_count',
      'success_count',
      'fail_count',
      'skip_count',
      'retry_count',
      'average_retry_count',
      'max_retry_count',
      'max_duration',
      'min_duration',
      'average_duration',
      'last_health_check',
      'last_successful_health_check',
      'last_skip_health_check',
      'last_failed_health_check',
    ]);
    expect(t.rows).toHaveLength(3);
    for (const [i, r] of rowObjects(t).entries()) {
      expect(r.node_id).toBe(String(i));
      expect(r.status).toMatch(/^(up|waiting)$/);
      expect(r.role).toBe(i === P ? 'primary' : 'standby');
      expectRecentTs(r.last_status_change!, `node ${i} last_status_change`);
      for (const k of [
        'total_count',
        'success_count',
        'fail_count',
        'skip_count',
        'retry_count',
        'max_retry_count',
        'max_duration',
        'min_duration',
      ]) {
        expect(r[k], `${k} of node ${i}`).toMatch(/^\d+$/);
      }
      expect(Number(r.total_count), 'checks ran').toBeGreaterThanOrEqual(2);
      expect(r.success_count).toBe(r.total_count);
      expect(r.fail_count).toBe('0');
      expect(r.average_retry_count).toMatch(/^\d+\.\d{6}$/);
      expect(r.average_duration).toMatch(/^\d+\.\d{6}$/);
      expect(Number(r.min_duration)).toBeLessThanOrEqual(Number(r.max_duration));
      expectRecentTs(r.last_health_check!, `node ${i} last_health_check`);
      expectRecentTs(r.last_successful_health_check!, `node ${i} last_successful_health_check`);
      expect(r.last_skip_health_check, 'never skipped: empty').toBe('');
      expect(r.last_failed_health_check, 'never failed: empty').toBe('');
    }
  });

  it('SHOW pool_processes: 8 columns; the calling session is listed', async () => {
    const c = await pgClient({ port: proxy.port });
    await c.query('SELECT 1');
    const t = resultTable(await c.query('SHOW pool_processes'));
    expect(t.columns).toEqual([
      'pool_pid',
      'start_time',
      'client_connection_count',
      'database',
      'username',
      'backend_connection_time',
      'pool_counter',
      'status',
    ]);
    expect(t.rows.length).toBeGreaterThanOrEqual(1);
    const rows = rowObjects(t);
    for (const r of rows) {
      expect(r.pool_pid).toMatch(/^\d+$/);
      expect(r.start_time).toMatch(TS);
      expect(r.client_connection_count).toMatch(/^\d+$/);
      if (r.backend_connection_time !== '') expect(r.backend_connection_time).toMatch(TS);
      expect(r.status).toMatch(/^(Wait for connection|Execute command|Idle|Idle in transaction|Connecting)$/);
    }
    // our session: its pid is the BackendKeyData pid pg received
    const myPid = String((c as unknown as { processID: number }).processID);
    const mine = rows.find((r) => r.pool_pid === myPid);
    expect(mine, `a row for pool_pid ${myPid} in ${JSON.stringify(rows)}`).toBeDefined();
    expect(mine!.database).toBe('postgres');
    expect(mine!.username).toBe('postgres');
  });

  it('SHOW pool_pools: 17 columns (4.3); one row per (session × node) for the calling session', async () => {
    const c = await pgClient({ port: proxy.port });
    await c.query('SELECT 1');
    const t = resultTable(await c.query('SHOW pool_pools'));
    expect(t.columns).toEqual([
      'pool_pid',
      'start_time',
      'client_connection_count',
      'pool_id',
      'backend_id',
      'database',
      'username',
      'backend_connection_time',
      'client_connection_time',
      'client_disconnection_time',
      'client_idle_duration',
      'majorversion',
      'minorversion',
      'pool_counter',
      'pool_backendpid',
      'pool_connected',
      'status',
    ]);
    const rows = rowObjects(t);
    const myPid = String((c as unknown as { processID: number }).processID);
    const mine = rows.filter((r) => r.pool_pid === myPid);
    expect(mine.map((r) => r.backend_id)).toEqual(['0', '1', '2']);
    for (const r of rows) {
      expect(r.start_time).toMatch(TS);
      for (const k of [
        'client_connection_count',
        'pool_id',
        'backend_id',
        'client_idle_duration',
        'majorversion',
        'minorversion',
        'pool_counter',
        'pool_backendpid',
      ]) {
        expect(r[k], k).toMatch(/^\d+$/);
      }
      expect(r.pool_connected).toMatch(/^[01]$/);
      for (const k of ['backend_connection_time', 'client_connection_time', 'client_disconnection_time'])
        if (r[k] !== '') expect(r[k], k).toMatch(TS);
      expect(r.status).toMatch(/^(Wait for connection|Execute command|Idle|Idle in transaction|Connecting)$/);
      if (r.pool_connected === '1') {
        expect(r.majorversion).toBe('3');
        expect(Number(r.pool_backendpid)).toBeGreaterThan(0);
      }
    }
    // the session ran SELECT 1 on the LB node: that slot is connected
    const lbRow = mine.find((r) => r.backend_id === String(LB))!;
    expect(lbRow.pool_connected).toBe('1');
    expect(lbRow.database).toBe('postgres');
    expect(lbRow.username).toBe('postgres');
  });

  it('SHOW pool_cache: 1 row, 9 columns, zeros, ratio %.2f', async () => {
    const t = await psqlTable('SHOW pool_cache');
    expect(t.columns).toEqual([
      'num_cache_hits',
      'num_selects',
      'cache_hit_ratio',
      'num_hash_entries',
      'used_hash_entries',
      'num_cache_entries',
      'used_cache_entries_size',
      'free_cache_entries_size',
      'fragment_cache_entries_size',
    ]);
    expect(t.rows).toEqual([['0', '0', '0.00', '0', '0', '0', '0', '0', '0']]);
  });

  it('SHOW pool_status: item | value | description, passwords hidden', async () => {
    const t = await psqlTable('SHOW pool_status');
    expect(t.columns).toEqual(['item', 'value', 'description']);
    expect(t.rows.length).toBeGreaterThan(100);
    const m = new Map(t.rows.map((r) => [r[0]!, r[1]!]));
    expect(m.get('port')).toBe(String(proxy.port));
    for (let i = 0; i < 3; i++) {
      expect(m.get(`backend_hostname${i}`)).toBe(cluster.node(i).host);
      expect(m.get(`backend_port${i}`)).toBe(String(cluster.node(i).port));
    }
    expect(m.get('sr_check_password')).toBe('*****');
    for (const r of t.rows) expect(r[1], `${r[0]} leaks the sr_check password`).not.toContain(SR_SECRET);
  });

  it("SHOW pool_status in pgpool's legacy format: booleans/enums as numbers, normalised backend_weightN, backend_statusN, standby_delayN", async () => {
    const t = await psqlTable('SHOW pool_status');
    const m = new Map(t.rows.map((r) => [r[0]!, r[1]!]));
    expect(m.get('load_balance_mode'), 'load_balance_mode printed as a number').toBe('1');
    expect(m.get('disable_load_balance_on_write'), "'transaction' = 2").toBe('2');
    expect(m.get(`backend_weight${LB}`), 'normalised weight, %f').toBe('1.000000');
    expect(m.get('backend_weight0')).toBe('0.000000');
    expect(m.get(`backend_status${LB}`)).toMatch(/^(up|waiting)$/);
    expect(m.get(`standby_delay${LB}`)).toMatch(/^\d+$/);
  });
});

describe('PGPOOL SHOW / SET / RESET', () => {
  it('PGPOOL SHOW port: one column named after the parameter', async () => {
    const t = await psqlTable('PGPOOL SHOW port');
    expect(t).toEqual({ columns: ['port'], rows: [[String(proxy.port)]] });
  });

  it('PGPOOL SHOW ALL: item | value | description, passwords as *****', async () => {
    const t = await psqlTable('PGPOOL SHOW ALL');
    expect(t.columns).toEqual(['item', 'value', 'description']);
    const m = new Map(t.rows.map((r) => [r[0]!, r[1]!]));
    expect(m.get('port')).toBe(String(proxy.port));
    expect(m.get('sr_check_password')).toBe('*****');
    // integers with a unit are shown with it, as pgpool's ShowOption (1 s → '1s'; 0 → '0')
    expect(m.get('sr_check_period')).toBe('1s');
    for (const r of t.rows) expect(r[1], `${r[0]} leaks the sr_check password`).not.toContain(SR_SECRET);
  });

  it('PGPOOL SHOW sr_check_password → *****', async () => {
    const t = await psqlTable('PGPOOL SHOW sr_check_password');
    expect(t).toEqual({ columns: ['sr_check_password'], rows: [['*****']] });
  });

  it('PGPOOL SHOW backend / health_check groups', async () => {
    const b = await psqlTable('PGPOOL SHOW backend');
    expect(b.columns).toEqual(['item', 'value', 'description']);
    expect(b.rows.map((r) => r[0])).toEqual(
      expect.arrayContaining(['backend_hostname0', 'backend_port2', 'backend_weight1', 'backend_flag2']),
    );
    const h = await psqlTable('PGPOOL SHOW health_check');
    expect(h.rows.find((r) => r[0] === 'health_check_period')?.[1]).toMatch(/^1s?$/);
  });

  it('PGPOOL SET client_idle_limit = 10 → SET (session only); PGPOOL RESET ALL → RESET', async () => {
    const a = await pgClient({ port: proxy.port });
    const b = await pgClient({ port: proxy.port });
    const set = await a.query('PGPOOL SET client_idle_limit = 10');
    expect(set.command).toBe('SET');
    expect((await a.query('PGPOOL SHOW client_idle_limit')).rows, 'shown with its unit, as pgpool').toEqual([
      { client_idle_limit: '10s' },
    ]);
    expect((await b.query('PGPOOL SHOW client_idle_limit')).rows, 'other sessions keep the configured value').toEqual([
      { client_idle_limit: '0' },
    ]);
    const reset = await a.query('PGPOOL RESET ALL');
    expect(reset.command).toBe('RESET');
    expect((await a.query('PGPOOL SHOW client_idle_limit')).rows).toEqual([{ client_idle_limit: '0' }]);
    await a.query('pgpool set client_idle_limit to 20;');
    const r1 = await a.query('PGPOOL RESET client_idle_limit');
    expect(r1.command, 'RESET <param> replies SET, as pgpool').toBe('SET');
    expect((await a.query('PGPOOL SHOW client_idle_limit')).rows).toEqual([{ client_idle_limit: '0' }]);
    // psql shows the tags
    const r = await runPsql(['-c', 'PGPOOL SET client_idle_limit = 10', '-c', 'PGPOOL RESET ALL'], {
      port: proxy.port,
      timeoutMs: 15_000,
    });
    expect(r.stdout).toBe('SET\nRESET\n');
  });

  it('errors as pgpool: unknown parameter, non-session parameter, syntax error', async () => {
    const c = await pgClient({ port: proxy.port });
    await expect(c.query('PGPOOL SHOW nosuch')).rejects.toMatchObject({
      code: 'XX000',
      message: 'config variable "nosuch" not found',
    });
    await expect(c.query('PGPOOL SET num_init_children = 3')).rejects.toMatchObject({
      code: 'XX000',
      message: 'invalid Context, value for parameter "num_init_children" cannot be changed',
    });
    await expect(c.query('PGPOOL FROB')).rejects.toMatchObject({ code: '42601' });
    // the session still works
    expect((await c.query('SELECT 1 AS x')).rows).toEqual([{ x: 1 }]);
  });
});

// ---------------------------------------------------------------------------
// Prometheus scrape (parser: test/support/prometheus.ts)

async function scrape(): Promise<{ status: number; contentType: string; families: Map<string, Family>; text: string }> {
  const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await r.text();
  return { status: r.status, contentType: r.headers.get('content-type') ?? '', families: parsePrometheus(text), text };
}

function sum(
  families: Map<string, Family>,
  name: string,
  filter: (l: Record<string, string>) => boolean = () => true,
): number {
  return (families.get(name)?.samples ?? [])
    .filter((s) => s.name === name && filter(s.labels))
    .reduce((a, s) => a + s.value, 0);
}

describe('metrics endpoint', () => {
  it('/metrics parses strictly, names follow the conventions', async () => {
    const { status, contentType, families } = await scrape();
    expect(status).toBe(200);
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(families.size).toBeGreaterThan(10);
    const nonCounterTotal: string[] = [];
    for (const f of families.values()) {
      expect(f.name, 'prefix').toMatch(/^pgrelay_/);
      expect(f.help, `HELP of ${f.name}`).toBeTruthy();
      if (f.type === 'counter') expect(f.name, 'counters end in _total').toMatch(/_total$/);
      else if (/_total$/.test(f.name)) nonCounterTotal.push(`${f.type} ${f.name}`);
    }
    for (const name of [
      'pgrelay_queries_total',
      'pgrelay_errors_total',
      'pgrelay_client_connections_total',
      'pgrelay_node_status',
      'pgrelay_replication_delay_bytes',
      'pgrelay_build_info',
    ]) {
      expect(families.has(name), `${name} exported`).toBe(true);
    }
    expect(families.get('pgrelay_queries_total')!.type).toBe('counter');
    // _total is reserved for counters (promtool check metrics: non-counter metrics should not have "_total" suffix)
    expect(nonCounterTotal, 'non-counter metrics ending in _total').toEqual([]);
  });

  it('counters move as traffic flows', async () => {
    const before = (await scrape()).families;
    const N = 5;
    for (let i = 0; i < 2; i++) {
      const r = await runPsql(
        ['-v', 'ON_ERROR_STOP=1', ...Array.from({ length: N }, () => ['-c', 'SELECT 1']).flat()],
        { port: proxy.port, timeoutMs: 15_000 },
      );
      expect(r.code).toBe(0);
    }
    const c = await pgClient({ port: proxy.port });
    await expect(c.query('SELECT * FROM admin_show_no_such_table')).rejects.toMatchObject({ code: '42P01' });
    await endPg(c);
    const after = (await scrape()).families;
    const d = (name: string, f?: (l: Record<string, string>) => boolean): number =>
      sum(after, name, f) - sum(before, name, f);
    expect(d('pgrelay_queries_total'), 'pgrelay_queries_total').toBeGreaterThanOrEqual(2 * N);
    expect(
      d('pgrelay_queries_total', (l) => l.kind === 'select' && l.node === String(LB)),
      'selects on the LB node',
    ).toBeGreaterThanOrEqual(2 * N);
    expect(d('pgrelay_client_received_bytes_total')).toBeGreaterThan(0);
    expect(d('pgrelay_client_sent_bytes_total')).toBeGreaterThan(0);
    expect(
      d('pgrelay_errors_total', (l) => l.sqlstate_class === '42'),
      'errors_total{sqlstate_class="42"}',
    ).toBeGreaterThanOrEqual(1);
    // state gauges
    const status = after.get('pgrelay_node_status')!.samples;
    expect(status.find((x) => x.labels.node === String(LB) && x.labels.status === 'up')?.value).toBe(1);
    expect(
      after.get('pgrelay_node_role')!.samples.find((x) => x.labels.node === String(P) && x.labels.role === 'primary')
        ?.value,
    ).toBe(1);
    expect(
      d('pgrelay_client_connections_total'),
      'pgrelay_client_connections_total (3 client connections were made)',
    ).toBeGreaterThanOrEqual(3);
  });

  it('/healthz 200, /readyz 200 while a primary is known, unknown path 404', async () => {
    const h = await fetch(`http://127.0.0.1:${metricsPort}/healthz`, { signal: AbortSignal.timeout(5000) });
    expect(h.status).toBe(200);
    const r = await fetch(`http://127.0.0.1:${metricsPort}/readyz`, { signal: AbortSignal.timeout(5000) });
    expect(r.status).toBe(200);
    const x = await fetch(`http://127.0.0.1:${metricsPort}/nope`, { signal: AbortSignal.timeout(5000) });
    expect(x.status).toBe(404);
  });

  it('/readyz 503 when no primary is known (only standbys as backends)', async () => {
    const mport = await freePort();
    // pgrelay wants backend ids contiguous from 0: standby 1 as backend 0, standby 2 as backend 1
    const conf: Record<string, string | number> = { metrics_port: mport, search_primary_node_timeout: 5 };
    for (const [id, node] of [1, 2].entries()) {
      conf[`backend_hostname${id}`] = cluster.node(node).host;
      conf[`backend_port${id}`] = cluster.node(node).port;
      conf[`backend_weight${id}`] = 1;
      conf[`backend_application_name${id}`] = `server${node}`;
    }
    const standbysOnly = await startProxy({ cluster, backends: [], config: conf });
    try {
      await standbysOnly.waitForLog('metrics endpoint listening', 10_000);
      const h = await fetch(`http://127.0.0.1:${mport}/healthz`, { signal: AbortSignal.timeout(5000) });
      expect(h.status).toBe(200);
      const r = await fetch(`http://127.0.0.1:${mport}/readyz`, { signal: AbortSignal.timeout(5000) });
      expect(r.status).toBe(503);
      expect(await r.text()).toMatch(/primary/);
    } finally {
      await standbysOnly.stop();
    }
  });
});

describe('statement logs', () => {
  it('log_statement = on logs each statement', async () => {
    const marker = `admin_log_marker_${process.pid}_${Date.now()}`;
    const c = await pgClient({ port: proxy.port });
    await c.query(`SELECT '${marker}' AS m`);
    await c.query({ name: 'logged_ext', text: `SELECT '${marker}_ext' AS m` });
    await proxy.waitForLog(`${marker}_ext`, 20_000);
    const lines = logLines().filter((l) => typeof l.statement === 'string' && (l.statement as string).includes(marker));
    expect(
      lines.some((l) => l.msg === 'statement' && l.statement === `SELECT '${marker}' AS m`),
      JSON.stringify(lines),
    ).toBe(true);
    expect(lines.some((l) => (l.statement as string).includes(`${marker}_ext`))).toBe(true);
  });

  it('ALTER ROLE … PASSWORD never reaches the logs in clear text', async () => {
    const secrets = [
      `Sup3rS3cret-${process.pid}-a`,
      `Sup3rS3cret-${process.pid}-b`,
      `Sup3rS3cret-${process.pid}-c`,
      `Sup3rS3cret-${process.pid}-d`,
    ];
    const c = await pgClient({ port: proxy.port });
    await c.query(`ALTER ROLE ${ROLE} PASSWORD '${secrets[0]}'`);
    await c.query(`alter user ${ROLE} with encrypted password '${secrets[1]}' valid until 'infinity'`);
    await c.query(`CREATE ROLE ${ROLE2} LOGIN PASSWORD '${secrets[2]}'`);
    await c.query({ name: 'alt', text: `ALTER ROLE ${ROLE2} WITH PASSWORD '${secrets[3]}'` });
    await c.query(`SELECT 'after-password-${process.pid}'`);
    // The log is one ordered stream: once this later statement's line is in, so are the ALTER/CREATE lines.
    await proxy.waitForLog(`after-password-${process.pid}`, 20_000);
    const logs = proxy.logs();
    for (const s of secrets) expect(logs.includes(s), `password ${s} appears in the logs`).toBe(false);
    // but the statements are logged (redacted)
    const alter = logLines().filter(
      (l) => typeof l.statement === 'string' && (l.statement as string).startsWith(`ALTER ROLE ${ROLE} PASSWORD`),
    );
    expect(alter.length, 'the ALTER ROLE statement is logged').toBeGreaterThanOrEqual(1);
    expect(alter[0]!.statement).toBe(`ALTER ROLE ${ROLE} PASSWORD '*****'`);
  });
});
