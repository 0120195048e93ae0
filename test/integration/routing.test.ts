/**
 * Read/write routing through pgrelay, statement kind by statement kind (README
 * "Routing"; pgpool-II's rules: https://www.pgpool.net/docs/latest/en/html/runtime-config-load-balancing.html):
 * the destination of each statement is proven twice — by the backend port the
 * statement ran on (inet_server_port(), mapped to a DevCluster node id) and by
 * pgrelay's per-node statement log (log_per_node_statement = on), read up to a
 * log barrier so that a copy sent to a second node cannot be missed.
 *
 * Weights 0:1:0, so every session's load-balance node is standby node 1 and
 * "LB" means node 1; the primary is node 0.
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, extendedQuery, pgClient, withTimeout } from '../support/clients.js';
import { runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';
import { logBarrier, nodeOfPort, nodesOfStatement, statementLog } from '../support/routing.js';

const cluster = getCluster();
const P = cluster.primaryId; // 0
const LB = 1;
const sfx = `${process.pid}`;
const t = `routing_t_${sfx}`;
const ut = `routing_unlogged_${sfx}`;
/** An unlogged table whose quoted name keeps upper case letters. */
const utq = `"Routing_QuotedUnLogged_${sfx}"`;
const v = `routing_v_${sfx}`;
const seq = `routing_seq_${sfx}`;
const into = `routing_into_${sfx}`;
const fvol = `routing_fvol_${sfx}`;
const fstab = `routing_fstab_${sfx}`;

// pgpool's routing rules alone: with read-your-writes (the default) a read right after a write runs on
// the standby only once it replayed the write; read-your-writes.test.ts covers that.
const weights = { backend_weight0: 0, backend_weight1: 1, backend_weight2: 0, read_your_writes: 'off' };
let proxy: ProxyHandle;
let proxyComments: ProxyHandle;
/** The same weights with pgpool's routing lists set (write_function_list, patterns, redirect preferences). */
let proxyLists: ProxyHandle;

beforeAll(async () => {
  await cluster.psql(
    P,
    `DROP TABLE IF EXISTS ${t}, ${ut}, ${into} CASCADE; DROP SEQUENCE IF EXISTS ${seq};
     CREATE TABLE ${t} (id serial primary key, v int);
     INSERT INTO ${t} (v) SELECT g FROM generate_series(1, 10) g;
     CREATE UNLOGGED TABLE ${ut} (v int); INSERT INTO ${ut} VALUES (1);
     DROP TABLE IF EXISTS ${utq}; CREATE UNLOGGED TABLE ${utq} (v int); INSERT INTO ${utq} VALUES (1);
     CREATE VIEW ${v} AS SELECT inet_server_port() AS port;
     CREATE SEQUENCE ${seq};
     CREATE OR REPLACE FUNCTION ${fvol}() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
     CREATE OR REPLACE FUNCTION set(routing_x int, routing_y text) RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
     CREATE OR REPLACE FUNCTION ${fstab}() RETURNS int LANGUAGE sql STABLE AS 'SELECT 2';`,
  );
  await cluster.waitForCatchup(30_000);
  [proxy, proxyComments, proxyLists] = await Promise.all([
    startProxy({ cluster, config: { ...weights, log_per_node_statement: true } }),
    startProxy({ cluster, config: { ...weights, log_per_node_statement: true, allow_sql_comments: true } }),
    startProxy({
      cluster,
      config: {
        ...weights,
        log_per_node_statement: true,
        write_function_list: `${fstab}`,
        primary_routing_query_pattern_list: '.*routing_pattern_marker.*',
        app_name_redirect_preference_list: 'routing-redirect-me:2',
      },
    }),
  ]);
});

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  await Promise.all([proxy?.stop(), proxyComments?.stop(), proxyLists?.stop()]);
  await cluster
    .psql(
      P,
      `DROP TABLE IF EXISTS ${t}, ${ut}, ${utq}, ${into} CASCADE; DROP SEQUENCE IF EXISTS ${seq}; DROP FUNCTION IF EXISTS ${fvol}(); DROP FUNCTION IF EXISTS ${fstab}(); DROP FUNCTION IF EXISTS set(int, text);`,
    )
    .catch(() => undefined);
});

interface Routed {
  /** Result sets (one per statement of the Query). */
  results: pg.QueryResult[];
  /** Nodes pgrelay logged the statement on (sorted). */
  logged: number[];
  /** Node ids of every `port` column value in the results. */
  portNodes: number[];
  error?: Error & { code?: string };
}

/** Run one simple Query through `via` and see where it went. */
async function routed(
  c: pg.Client,
  sql: string,
  opts: { via?: ProxyHandle; min?: number; extended?: boolean } = {},
): Promise<Routed> {
  const via = opts.via ?? proxy;
  const since = statementLog(via).length;
  let results: pg.QueryResult[] = [];
  let error: Routed['error'];
  try {
    const r = (opts.extended ? await extendedQuery(c, sql) : await c.query(sql)) as pg.QueryResult | pg.QueryResult[];
    results = Array.isArray(r) ? r : [r];
  } catch (e) {
    error = e as Routed['error'];
  }
  const logged = await nodesOfStatement(via, sql, { since, min: opts.min ?? 1 });
  const portNodes: number[] = [];
  for (const r of results)
    for (const row of r.rows ?? []) if ('port' in row) portNodes.push(nodeOfPort(cluster, row.port as number));
  return { results, logged, portNodes, error };
}

async function client(via: ProxyHandle = proxy): Promise<pg.Client> {
  return pgClient({ port: via.port });
}

describe('reads go to the load-balance node', () => {
  const cases: Array<[string, string]> = [
    ['plain SELECT', 'SELECT inet_server_port() AS port'],
    ['SELECT with leading spaces', '   SELECT inet_server_port() AS port, 2 AS two'],
    ['SELECT from a table', `SELECT inet_server_port() AS port, count(*) FROM ${t}`],
    ['TABLE t (a view returning the port)', `TABLE ${v}`],
    ['parenthesized SELECT', '(SELECT inet_server_port() AS port)'],
    [
      'WITH of plain SELECTs',
      'WITH x AS (SELECT 1 AS a), y AS (SELECT 2 AS b) SELECT inet_server_port() AS port, a, b FROM x, y',
    ],
    ['STABLE user function', `SELECT ${fstab}() AS f, inet_server_port() AS port`],
    ['now() (stable)', 'SELECT now() IS NOT NULL AS ok, inet_server_port() AS port'],
  ];
  for (const [name, sql] of cases) {
    it(`${name}: ${sql}`, async () => {
      const c = await client();
      const r = await routed(c, sql);
      expect(r.error).toBeUndefined();
      expect(r.portNodes, 'node that answered (inet_server_port)').toEqual([LB]);
      expect(r.logged, 'nodes in the per-node statement log').toEqual([LB]);
    });
  }

  it('SHOW work_mem → LB node (log)', async () => {
    const c = await client();
    const r = await routed(c, 'SHOW work_mem');
    expect(r.error).toBeUndefined();
    expect(r.logged).toEqual([LB]);
  });

  it('COPY (SELECT …) TO STDOUT and COPY table TO STDOUT → LB node', async () => {
    const since = statementLog(proxy).length;
    const sql1 = 'COPY (SELECT inet_server_port()) TO STDOUT';
    const sql3 = `COPY ${t} (v) TO STDOUT`;
    const r1 = await runPsql(['-At', '-v', 'ON_ERROR_STOP=1', '-c', sql1], { port: proxy.port, timeoutMs: 15_000 });
    expect(r1.stderr).toBe('');
    expect(nodeOfPort(cluster, r1.stdout.trim())).toBe(LB);
    const r3 = await runPsql(['-At', '-v', 'ON_ERROR_STOP=1', '-c', sql3], { port: proxy.port, timeoutMs: 15_000 });
    expect(r3.code).toBe(0);
    expect(r3.stdout.trim().split('\n')).toHaveLength(10);
    expect(await nodesOfStatement(proxy, sql1, { since })).toEqual([LB]);
    expect(await nodesOfStatement(proxy, sql3, { since })).toEqual([LB]);
  });
});

describe('writes and non-balanceable reads go to the primary', () => {
  it('INSERT / UPDATE / DELETE … RETURNING', async () => {
    const c = await client();
    for (const sql of [
      `INSERT INTO ${t} (v) VALUES (100) RETURNING inet_server_port() AS port`,
      `UPDATE ${t} SET v = 101 WHERE v = 100 RETURNING inet_server_port() AS port`,
      `DELETE FROM ${t} WHERE v = 101 RETURNING inet_server_port() AS port`,
    ]) {
      const r = await routed(c, sql);
      expect(r.error, sql).toBeUndefined();
      expect(r.portNodes, sql).toEqual([P]);
      expect(r.logged, sql).toEqual([P]);
    }
  });

  const cases: Array<[string, string]> = [
    ['SELECT … FOR UPDATE', `SELECT inet_server_port() AS port FROM ${t} WHERE v = 1 FOR UPDATE`],
    ['SELECT … FOR SHARE', `SELECT inet_server_port() AS port FROM ${t} WHERE v = 1 FOR SHARE`],
    [
      'writable CTE',
      `WITH x AS (INSERT INTO ${t} (v) VALUES (200) RETURNING v) SELECT inet_server_port() AS port, v FROM x`,
    ],
    ['nextval', `SELECT nextval('${seq}') AS n, inet_server_port() AS port`],
    ['VOLATILE user function', `SELECT ${fvol}() AS f, inet_server_port() AS port`],
    // `set` followed by a parenthesis is UPDATE's SET (a, b) = … only after a table name.
    ["VOLATILE user function named set (fast_default.sql's)", "SELECT set(1, 'x') AS f, inet_server_port() AS port"],
    ['random() (volatile)', 'SELECT random() >= 0 AS ok, inet_server_port() AS port'],
    ['system catalog pg_class', 'SELECT relname, inet_server_port() AS port FROM pg_class LIMIT 1'],
    ['system view pg_stat_activity', 'SELECT count(*) AS n, inet_server_port() AS port FROM pg_stat_activity'],
    ['/*NO LOAD BALANCE*/ SELECT', '/*NO LOAD BALANCE*/ SELECT inet_server_port() AS port'],
    ['leading comment, allow_sql_comments = off', '/* comment */ SELECT inet_server_port() AS port'],
    ['leading -- comment, allow_sql_comments = off', '-- hello\nSELECT inet_server_port() AS port'],
    ['unlogged table read', `SELECT v, inet_server_port() AS port FROM ${ut}`],
    ['unlogged table read, quoted mixed-case name', `SELECT v, inet_server_port() AS port FROM public.${utq}`],
    // A standby has only the sequence's WAL-logged state: last_value up to 32 ahead, log_cnt 0.
    ['sequence read', `SELECT last_value, log_cnt, inet_server_port() AS port FROM ${seq}`],
    ['VALUES', 'VALUES (inet_server_port())'],
  ];
  for (const [name, sql] of cases) {
    it(`${name}: ${sql.replace(/\n/g, ' ')}`, async () => {
      const c = await client();
      const r = await routed(c, sql);
      expect(r.error).toBeUndefined();
      if (!sql.startsWith('VALUES')) expect(r.portNodes, 'node that answered (inet_server_port)').toEqual([P]);
      else expect(nodeOfPort(cluster, r.results[0].rows[0].column1 as number)).toBe(P);
      expect(r.logged, 'nodes in the per-node statement log').toEqual([P]);
    });
  }

  it('SELECT … INTO creates the table on the primary', async () => {
    const c = await client();
    const sql = `SELECT inet_server_port() AS port INTO ${into}`;
    const r = await routed(c, sql);
    expect(r.error).toBeUndefined();
    expect(r.logged).toEqual([P]);
    expect(nodeOfPort(cluster, await cluster.psql(P, `SELECT port FROM ${into}`))).toBe(P);
  });

  it('temp table read → primary', async () => {
    const c = await client();
    const tmp = `routing_tmp_${sfx}`;
    const r0 = await routed(c, `CREATE TEMP TABLE ${tmp} AS SELECT 7 AS a`);
    expect(r0.error).toBeUndefined();
    expect(r0.logged).toEqual([P]);
    const r = await routed(c, `SELECT a, inet_server_port() AS port FROM ${tmp}`);
    expect(r.error).toBeUndefined();
    expect(r.results[0].rows[0].a).toBe(7);
    expect(r.portNodes).toEqual([P]);
    expect(r.logged).toEqual([P]);
    // Its row type is temporary too.
    const cast = await routed(c, `SELECT '(8)'::${tmp} AS row, inet_server_port() AS port`);
    expect(cast.error).toBeUndefined();
    expect(cast.results[0].rows[0].row).toBe('(8)');
    expect(cast.portNodes).toEqual([P]);
    // A STABLE function the session creates that reads it (plpgsql.sql, rangefuncs.sql).
    await c.query(
      `CREATE OR REPLACE FUNCTION routing_reads_tmp_${sfx}() RETURNS int LANGUAGE sql STABLE AS $$ SELECT a FROM ${tmp} $$`,
    );
    try {
      const f = await routed(c, `SELECT routing_reads_tmp_${sfx}() AS a, inet_server_port() AS port`);
      expect(f.error).toBeUndefined();
      expect(f.results[0].rows[0].a).toBe(7);
      expect(f.portNodes).toEqual([P]);
    } finally {
      await c.query(`DROP FUNCTION routing_reads_tmp_${sfx}()`);
    }
  });

  it("a STABLE function created elsewhere whose body reads a temp table of the session's name → primary; without it, balanced", async () => {
    const c = await client();
    const tmp = `routing_fn_tmp_${sfx}`;
    const fn = `routing_fn_reads_${sfx}`;
    const other = `routing_fn_other_${sfx}`;
    await cluster.psql(
      P,
      `CREATE OR REPLACE FUNCTION ${fn}() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN (SELECT a FROM ${tmp}); END $$;
       CREATE OR REPLACE FUNCTION ${other}() RETURNS int LANGUAGE sql STABLE AS 'SELECT 5'`,
    );
    await cluster.waitForCatchup(30_000);
    try {
      // Before the session has such a table: balanced (the call fails wherever it runs).
      expect((await routed(c, `SELECT ${other}() AS a, inet_server_port() AS port`)).portNodes).toEqual([LB]);
      await c.query(`CREATE TEMP TABLE ${tmp} AS SELECT 9 AS a`);
      const f = await routed(c, `SELECT ${fn}() AS a, inet_server_port() AS port`);
      expect(f.error).toBeUndefined();
      expect(f.results[0].rows[0].a).toBe(9);
      expect(f.portNodes).toEqual([P]);
      // A function whose body names no temp table of the session is still balanced.
      expect((await routed(c, `SELECT ${other}() AS a, inet_server_port() AS port`)).portNodes).toEqual([LB]);
    } finally {
      await cluster.psql(P, `DROP FUNCTION IF EXISTS ${fn}(); DROP FUNCTION IF EXISTS ${other}()`);
    }
  });

  it("a permanent table with a temporary child (INHERITS, ALTER TABLE … INHERIT) and a view of a temp table (temporary itself) → primary: the child's rows are the session's alone", async () => {
    const c = await client();
    const parent = `routing_parent_${sfx}`;
    const parent2 = `routing_parent2_${sfx}`;
    await cluster.psql(
      P,
      `DROP TABLE IF EXISTS ${parent}, ${parent2} CASCADE; CREATE TABLE ${parent} (a int); CREATE TABLE ${parent2} (a int)`,
    );
    await cluster.waitForCatchup(30_000);
    try {
      // Before: the parent alone is read on the standby.
      expect(
        (await routed(c, `SELECT count(*)::int AS n, inet_server_port() AS port FROM ${parent}`)).portNodes,
      ).toEqual([LB]);
      await c.query(
        `CREATE TEMP TABLE routing_child_${sfx} () INHERITS (${parent}); INSERT INTO routing_child_${sfx} VALUES (1)`,
      );
      const r = await routed(c, `SELECT count(*)::int AS n, inet_server_port() AS port FROM ${parent}`);
      expect(r.error).toBeUndefined();
      expect(r.results[0].rows[0].n).toBe(1);
      expect(r.portNodes).toEqual([P]);
      await c.query(`CREATE TEMP TABLE routing_child2_${sfx} (a int)`);
      await c.query(`INSERT INTO routing_child2_${sfx} VALUES (2), (3)`);
      await c.query(`ALTER TABLE routing_child2_${sfx} INHERIT ${parent2}`);
      const r2 = await routed(c, `SELECT count(*)::int AS n, inet_server_port() AS port FROM ${parent2}`);
      expect(r2.results[0]?.rows[0].n).toBe(2);
      expect(r2.portNodes).toEqual([P]);
      // No TEMP: the view is temporary because it reads a temp table.
      await c.query(`CREATE VIEW routing_tview_${sfx} AS SELECT a FROM routing_child2_${sfx}`);
      const r3 = await routed(c, `SELECT count(*)::int AS n, inet_server_port() AS port FROM routing_tview_${sfx}`);
      expect(r3.error).toBeUndefined();
      expect(r3.results[0].rows[0].n).toBe(2);
      expect(r3.portNodes).toEqual([P]);
      // Another session has no temp children: it reads on the standby.
      const other = await client();
      expect(
        (await routed(other, `SELECT count(*)::int AS n, inet_server_port() AS port FROM ${parent}`)).results[0]
          .rows[0],
      ).toMatchObject({ n: 0 });
    } finally {
      await endPg(c);
      await cluster.psql(P, `DROP TABLE IF EXISTS ${parent}, ${parent2} CASCADE`);
    }
  });

  it("current_schema() with pg_temp first in search_path → primary: it creates the session's temporary schema (temp.sql)", async () => {
    const c = await client();
    await c.query("SET search_path TO 'pg_temp'");
    const r = await routed(c, "SELECT current_schema() ~ 'pg_temp' AS is_temp, inet_server_port() AS port");
    expect(r.error).toBeUndefined();
    expect(r.results[0].rows[0].is_temp).toBe(true);
    expect(r.portNodes).toEqual([P]);
    await c.query('RESET search_path');
    expect((await routed(c, 'SELECT current_schema() AS s, inet_server_port() AS port')).portNodes).toEqual([LB]);
  });

  it('a temporary view named by a regclass literal or in a string, a function in pg_temp → primary (a standby has no temporary objects)', async () => {
    const c = await client();
    await c.query(`CREATE TEMP VIEW routing_tv_${sfx} AS SELECT 1 AS one`);
    const v = await routed(c, `SELECT pg_get_viewdef('routing_tv_${sfx}'::regclass) AS d, inet_server_port() AS port`);
    expect(v.error).toBeUndefined();
    expect(v.portNodes).toEqual([P]);
    // Named in a string a function reads as a relation name.
    const h = await routed(
      c,
      `SELECT has_table_privilege('routing_tv_${sfx}', 'select') AS ok, has_column_privilege('pg_temp.routing_tv_${sfx}', 'one', 'select') AS c, inet_server_port() AS port`,
    );
    expect(h.error).toBeUndefined();
    expect(h.portNodes).toEqual([P]);
    await c.query(
      "CREATE FUNCTION pg_temp.routing_whoami() RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'temp'::text $$",
    );
    const f = await routed(c, 'SELECT pg_temp.routing_whoami() AS w, inet_server_port() AS port');
    expect(f.error).toBeUndefined();
    expect(f.results[0].rows[0].w).toBe('temp');
    expect(f.portNodes).toEqual([P]);
  });

  it('LISTEN / NOTIFY / UNLISTEN → primary', async () => {
    const c = await client();
    const ch = `routing_ch_${sfx}`;
    const got = new Promise<string | undefined>((resolve) => c.once('notification', (n) => resolve(n.payload)));
    for (const sql of [`LISTEN ${ch}`, `NOTIFY ${ch}, 'hello'`]) {
      const r = await routed(c, sql);
      expect(r.error, sql).toBeUndefined();
      expect(r.logged, sql).toEqual([P]);
    }
    expect(await withTimeout(got, 10_000, 'the notification')).toBe('hello');
    const r = await routed(c, `UNLISTEN ${ch}`);
    expect(r.logged).toEqual([P]);
  });

  it('DECLARE / FETCH / CLOSE → primary', async () => {
    const c = await client();
    await c.query('BEGIN');
    const d = await routed(
      c,
      'DECLARE routing_cur CURSOR FOR SELECT inet_server_port() AS port FROM generate_series(1, 3)',
    );
    expect(d.error).toBeUndefined();
    expect(d.logged).toEqual([P]);
    const f = await routed(c, 'FETCH 2 FROM routing_cur');
    expect(f.error).toBeUndefined();
    expect(f.portNodes).toEqual([P, P]);
    expect(f.logged).toEqual([P]);
    const cl = await routed(c, 'CLOSE routing_cur');
    expect(cl.logged).toEqual([P]);
    await c.query('COMMIT');
  });

  it('LOCK … IN EXCLUSIVE MODE → primary; LOCK … IN ACCESS SHARE MODE → both', async () => {
    const c = await client();
    await c.query('BEGIN');
    const sh = await routed(c, `LOCK TABLE ${t} IN ACCESS SHARE MODE`, { min: 2 });
    expect(sh.error).toBeUndefined();
    expect(sh.logged).toEqual([P, LB]);
    const ex = await routed(c, `LOCK TABLE ${t} IN EXCLUSIVE MODE`);
    expect(ex.error).toBeUndefined();
    expect(ex.logged).toEqual([P]);
    await c.query('COMMIT');
  });

  it('multi-statement Query → primary (all of it)', async () => {
    const c = await client();
    const sql = 'SELECT 10 AS a, inet_server_port() AS port; SELECT 11 AS a, inet_server_port() AS port';
    const r = await routed(c, sql);
    expect(r.error).toBeUndefined();
    expect(r.results.map((x) => x.rows[0].a)).toEqual([10, 11]);
    expect(r.portNodes).toEqual([P, P]);
    expect(r.logged).toEqual([P]);
  });

  it('unparseable text → primary (the error comes from the primary)', async () => {
    const c = await client();
    const sql = 'SELEC inet_server_port()';
    const r = await routed(c, sql);
    expect(r.error?.code).toBe('42601');
    expect(r.logged).toEqual([P]);
    // The session still works and still balances.
    const ok = await routed(c, 'SELECT inet_server_port() AS port, 42 AS after_error');
    expect(ok.portNodes).toEqual([LB]);
  });
});

describe('allow_sql_comments = on', () => {
  it('a leading comment no longer prevents load balancing', async () => {
    const c = await client(proxyComments);
    for (const sql of [
      '/* comment */ SELECT inet_server_port() AS port',
      '-- hello\nSELECT inet_server_port() AS port, 1 AS one',
    ]) {
      const r = await routed(c, sql, { via: proxyComments });
      expect(r.error, sql).toBeUndefined();
      expect(r.portNodes, sql).toEqual([LB]);
      expect(r.logged, sql).toEqual([LB]);
    }
    // Writes with a comment still go to the primary.
    const w = await routed(c, `/* c */ INSERT INTO ${t} (v) VALUES (300) RETURNING inet_server_port() AS port`, {
      via: proxyComments,
    });
    expect(w.portNodes).toEqual([P]);
  });
});

describe("pgpool's routing lists", () => {
  it('write_function_list: a listed (stable) function is a write; reads of it go to the primary', async () => {
    const sql = `SELECT ${fstab}() AS f, inet_server_port() AS port`;
    const listed = await routed(await client(proxyLists), sql, { via: proxyLists });
    expect(listed.error).toBeUndefined();
    expect(listed.portNodes).toEqual([P]);
    expect(listed.logged).toEqual([P]);
    // Without the list the catalog says STABLE: balanced.
    expect((await routed(await client(), sql)).portNodes).toEqual([LB]);
  });

  it('primary_routing_query_pattern_list: a matching read goes to the primary, others stay balanced', async () => {
    const c = await client(proxyLists);
    const hit = await routed(c, "SELECT 'routing_pattern_marker' AS m, inet_server_port() AS port", {
      via: proxyLists,
    });
    expect(hit.portNodes).toEqual([P]);
    expect(hit.logged).toEqual([P]);
    const miss = await routed(c, "SELECT 'other' AS m, inet_server_port() AS port", { via: proxyLists });
    expect(miss.portNodes).toEqual([LB]);
  });

  it("app_name_redirect_preference_list: the application's session reads from its preferred node, before the weights", async () => {
    const redirected = await pgClient({ port: proxyLists.port }, { application_name: 'routing-redirect-me' });
    const r = await routed(redirected, 'SELECT inet_server_port() AS port, 1 AS redirected', { via: proxyLists });
    expect(r.portNodes, 'weights say node 1; the preference list says node 2').toEqual([2]);
    expect(r.logged).toEqual([2]);
    const other = await routed(await client(proxyLists), 'SELECT inet_server_port() AS port, 2 AS not_redirected', {
      via: proxyLists,
    });
    expect(other.portNodes).toEqual([LB]);
  });
});

describe('statements for both nodes, transactions', () => {
  /** Every statement log entry (node and text, in order) from `since` up to a log barrier. */
  async function entriesSince(since: number, via: ProxyHandle = proxy): Promise<Array<[number, string]>> {
    const end = await logBarrier(via);
    return statementLog(via)
      .slice(since, end)
      .filter((e) => !e.statement.includes('pgrelay-log-barrier'))
      .map((e) => [e.node, e.statement]);
  }

  it('EXPLAIN and PREPARE TRANSACTION go to the primary only', async () => {
    const c = await client();
    const ex = await routed(c, 'EXPLAIN SELECT 1');
    expect(ex.error).toBeUndefined();
    expect(ex.logged).toEqual([P]);
    await c.query('BEGIN');
    // max_prepared_transactions is 0 on the test cluster: the error comes from the primary.
    const pt = await routed(c, "PREPARE TRANSACTION 'routing_ptx'");
    expect(pt.error?.code).toBe('55000');
    expect(pt.logged).toEqual([P]);
    await c.query('ROLLBACK');
  });

  it('a transaction the primary alone ends (a PREPARE TRANSACTION, even failing) is ended on the load-balance node too: its reads are not left in it', async () => {
    const app = `routing-ptx-end-${sfx}`;
    const c = await pgClient({ port: proxy.port }, { application_name: app });
    const stateOnLb = async (): Promise<string> =>
      cluster.psql(LB, `SELECT string_agg(state, ',') FROM pg_stat_activity WHERE application_name = '${app}'`);
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    const r = await routed(c, 'SELECT inet_server_port() AS port');
    expect(r.portNodes, 'a read before any write: the LB node, inside the transaction').toEqual([LB]);
    expect(await stateOnLb()).toBe('idle in transaction');
    const pt = await routed(c, "PREPARE TRANSACTION 'routing_ptx_end'");
    expect(pt.error?.code, 'max_prepared_transactions = 0: the primary refuses, and ends the transaction').toBe(
      '55000',
    );
    const after = await routed(c, 'SELECT inet_server_port() AS port');
    expect(after.portNodes).toEqual([LB]);
    expect(await stateOnLb(), 'the LB node has left the transaction as the primary did').toBe('idle');
    expect((await c.query('SHOW transaction_isolation')).rows[0].transaction_isolation).toBe('read committed');
  });

  it("txid_current() (an error during recovery) and pg_listening_channels() (the LISTENs are the primary's), though not volatile, run on the primary", async () => {
    const c = await client();
    const x = await routed(c, 'SELECT txid_current() > 0 AS ok, inet_server_port() AS port');
    expect(x.error).toBeUndefined();
    expect(x.portNodes).toEqual([P]);
    await c.query(`LISTEN routing_chan_${sfx}`);
    const l = await routed(c, 'SELECT pg_listening_channels() AS ch, inet_server_port() AS port');
    expect(l.portNodes).toEqual([P]);
    expect(l.results[0].rows.map((r) => r.ch)).toEqual([`routing_chan_${sfx}`]);
    await c.query('UNLISTEN *');
    // The transaction's own xid and snapshot are the primary's (xid.sql).
    await c.query('BEGIN');
    const id = (await c.query('SELECT pg_current_xact_id()::text AS x')).rows[0].x as string;
    for (const sql of [
      'SELECT pg_current_xact_id_if_assigned()::text AS x, inet_server_port() AS port',
      'SELECT txid_current_if_assigned()::text AS x, inet_server_port() AS port',
      'SELECT pg_current_snapshot()::text AS x, inet_server_port() AS port',
      'SELECT txid_current_snapshot()::text AS x, inet_server_port() AS port',
    ]) {
      const r = await routed(c, sql);
      expect(r.error, sql).toBeUndefined();
      expect(r.portNodes, sql).toEqual([P]);
      if (sql.includes('if_assigned')) expect(r.results[0].rows[0].x, sql).toBe(id);
    }
    await c.query('COMMIT');
  });

  it('DISCARD ALL and DEALLOCATE ALL go to both nodes', async () => {
    const c = await client();
    for (const sql of ['DISCARD ALL', 'DEALLOCATE ALL']) {
      const r = await routed(c, sql, { min: 2 });
      expect(r.error, sql).toBeUndefined();
      expect(r.logged, sql).toEqual([P, LB]);
    }
  });

  it('BEGIN goes to the primary first, COMMIT and ROLLBACK to the standby first', async () => {
    const c = await client();
    const since = statementLog(proxy).length;
    await c.query('BEGIN');
    await c.query('COMMIT');
    await c.query('BEGIN');
    await c.query('ROLLBACK');
    expect(await entriesSince(since)).toEqual([
      [P, 'BEGIN'],
      [LB, 'BEGIN'],
      [LB, 'COMMIT'],
      [P, 'COMMIT'],
      [P, 'BEGIN'],
      [LB, 'BEGIN'],
      [LB, 'ROLLBACK'],
      [P, 'ROLLBACK'],
    ]);
  });

  it('BEGIN READ WRITE goes verbatim to the primary and as a plain BEGIN to the standby', async () => {
    const c = await client();
    const since = statementLog(proxy).length;
    await c.query('BEGIN READ WRITE');
    await c.query('COMMIT');
    expect(await entriesSince(since)).toEqual([
      [P, 'BEGIN READ WRITE'],
      [LB, 'BEGIN'],
      [LB, 'COMMIT'],
      [P, 'COMMIT'],
    ]);
  });

  it("SET work_mem = '3MB' goes to both: SHOW on the LB node and a read on the primary both see 3MB", async () => {
    const c = await client();
    const set = await routed(c, "SET work_mem = '3MB'", { min: 2 });
    expect(set.error).toBeUndefined();
    expect(set.logged).toEqual([P, LB]);
    const show = await routed(c, 'SHOW work_mem');
    expect(show.logged).toEqual([LB]);
    expect(show.results[0].rows[0].work_mem).toBe('3MB');
    const onLb = await routed(c, "SELECT current_setting('work_mem') AS wm, inet_server_port() AS port");
    expect(onLb.portNodes).toEqual([LB]);
    expect(onLb.results[0].rows[0].wm).toBe('3MB');
    const onPrimary = await routed(
      c,
      `SELECT current_setting('work_mem') AS wm, ${fvol}() AS f, inet_server_port() AS port`,
    );
    expect(onPrimary.portNodes).toEqual([P]);
    expect(onPrimary.results[0].rows[0].wm).toBe('3MB');
  });

  it('extended protocol: SET and BEGIN/COMMIT run (and are logged, log_per_node_statement) on both nodes', async () => {
    const c = await client();
    for (const sql of ["SET work_mem = '5MB'", 'BEGIN', 'COMMIT']) {
      const r = await routed(c, sql, { min: 2, extended: true });
      expect(r.error).toBeUndefined();
      expect(r.logged, sql).toEqual([P, LB]);
    }
    const onLb = await routed(c, "SELECT current_setting('work_mem') AS wm, inet_server_port() AS port", {
      extended: true,
    });
    expect(onLb.portNodes).toEqual([LB]);
    expect(onLb.results[0].rows[0].wm).toBe('5MB');
  });

  it('BEGIN and SAVEPOINT go to both; a read before any write stays on the LB node, after a write on the primary', async () => {
    const c = await client();
    const b = await routed(c, 'BEGIN', { min: 2 });
    expect(b.logged).toEqual([P, LB]);
    const r1 = await routed(c, 'SELECT inet_server_port() AS port, 1 AS in_tx_before_write');
    expect(r1.portNodes).toEqual([LB]);
    const sp = await routed(c, 'SAVEPOINT routing_sp', { min: 2 });
    expect(sp.error).toBeUndefined();
    expect(sp.logged).toEqual([P, LB]);
    // As in pgpool: SAVEPOINT is not a read, so in mode `transaction` it counts as a write.
    const r2 = await routed(c, 'SELECT inet_server_port() AS port, 2 AS after_savepoint');
    expect(r2.portNodes).toEqual([P]);
    const rel = await routed(c, 'RELEASE SAVEPOINT routing_sp', { min: 1 });
    expect(rel.error).toBeUndefined();
    const cm = await routed(c, 'COMMIT', { min: 2 });
    expect(cm.logged).toEqual([P, LB]);
    const r3 = await routed(c, 'SELECT inet_server_port() AS port, 3 AS after_commit');
    expect(r3.portNodes).toEqual([LB]);
  });

  it('after INSERT inside a transaction, reads go to the primary until COMMIT', async () => {
    const c = await client();
    await c.query('BEGIN');
    expect((await routed(c, 'SELECT inet_server_port() AS port, 1 AS a')).portNodes).toEqual([LB]);
    expect(
      (await routed(c, `INSERT INTO ${t} (v) VALUES (400) RETURNING inet_server_port() AS port`)).portNodes,
    ).toEqual([P]);
    const r = await routed(c, `SELECT inet_server_port() AS port, count(*) AS n FROM ${t} WHERE v = 400`);
    expect(r.portNodes).toEqual([P]);
    expect(Number(r.results[0].rows[0].n)).toBe(1);
    await c.query('COMMIT');
    expect((await routed(c, 'SELECT inet_server_port() AS port, 2 AS a')).portNodes).toEqual([LB]);
  });

  it('a read failing on the load-balance node inside a transaction aborts it on the primary too; later reads go to the primary', async () => {
    const c = await client();
    await c.query('BEGIN');
    const bad = await routed(c, 'SELECT 1/0 AS boom, inet_server_port() AS port');
    expect(bad.error?.code).toBe('22012');
    expect(bad.logged, 'the failing read ran on the LB node').toEqual([LB]);
    // The nodes agree: the transaction is aborted on the primary as well, and PostgreSQL itself says so.
    const write = await routed(c, `INSERT INTO ${t} (v) VALUES (900) RETURNING inet_server_port() AS port`);
    expect(write.error?.code).toBe('25P02');
    expect(write.logged).toEqual([P]);
    const read = await routed(c, 'SELECT inet_server_port() AS port, 1 AS after_error');
    expect(read.error?.code, 'a read after the error').toBe('25P02');
    expect(read.logged, 'reads after an error go to the primary').toEqual([P]);
    await c.query('ROLLBACK');
    expect(await cluster.psql(P, `SELECT count(*) FROM ${t} WHERE v = 900`)).toBe('0');
    expect((await routed(c, 'SELECT inet_server_port() AS port, 2 AS after_rollback')).portNodes).toEqual([LB]);
  });

  it('BEGIN ISOLATION LEVEL SERIALIZABLE then SELECT → primary', async () => {
    const c = await client();
    const b = await routed(c, 'BEGIN ISOLATION LEVEL SERIALIZABLE', { min: 1 });
    expect(b.error).toBeUndefined();
    expect(b.logged).toContain(P);
    const r = await routed(c, 'SELECT inet_server_port() AS port, 1 AS in_serializable');
    expect(r.portNodes).toEqual([P]);
    expect(r.logged).toEqual([P]);
    // And the primary really runs the transaction as SERIALIZABLE.
    const iso = await routed(c, `SELECT current_setting('transaction_isolation') AS iso, inet_server_port() AS port`);
    expect(iso.results[0].rows[0].iso).toBe('serializable');
    await c.query('COMMIT');
    expect((await routed(c, 'SELECT inet_server_port() AS port, 2 AS after')).portNodes).toEqual([LB]);
  });

  it('a REPEATABLE READ transaction begun on the primary reads there (one snapshot, as pg_dump needs); begun on the LB node, it reads there', async () => {
    const c = await client();
    await routed(c, 'BEGIN ISOLATION LEVEL REPEATABLE READ');
    expect(
      (await routed(c, 'SELECT count(*) AS n, inet_server_port() AS port FROM pg_catalog.pg_class')).portNodes,
    ).toEqual([P]);
    const r = await routed(c, `SELECT inet_server_port() AS port, count(*) AS n FROM ${t}`);
    expect(r.portNodes).toEqual([P]);
    expect(r.logged).toEqual([P]);
    await c.query('COMMIT');
    await routed(c, 'BEGIN ISOLATION LEVEL REPEATABLE READ');
    expect((await routed(c, `SELECT inet_server_port() AS port, count(*) AS n FROM ${t}`)).portNodes).toEqual([LB]);
    expect((await routed(c, `SELECT inet_server_port() AS port, 4 AS again FROM ${t} LIMIT 1`)).portNodes).toEqual([
      LB,
    ]);
    await c.query('COMMIT');
  });

  it("SET TRANSACTION SNAPSHOT → primary (the snapshot is the primary's), and the transaction's reads stay there (pg_dump -j)", async () => {
    const leader = await client();
    const worker = await client();
    await leader.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    const snap = (await leader.query('SELECT pg_export_snapshot() AS s')).rows[0].s as string;
    await routed(worker, 'BEGIN ISOLATION LEVEL REPEATABLE READ');
    const set = await routed(worker, `SET TRANSACTION SNAPSHOT '${snap}'`);
    expect(set.error).toBeUndefined();
    expect(set.logged).toEqual([P]);
    const r = await routed(worker, `SELECT inet_server_port() AS port, count(*) AS n FROM ${t}`);
    expect(r.portNodes).toEqual([P]);
    await worker.query('COMMIT');
    await leader.query('COMMIT');
    expect((await routed(worker, 'SELECT inet_server_port() AS port, 3 AS after')).portNodes).toEqual([LB]);
  });
});

describe('per-node statement counts (log_per_node_statement)', () => {
  it('a session of 5 reads, 3 writes and 1 SET is counted per node', async () => {
    const c = await client();
    const pid = Number((await c.query(`SELECT pg_backend_pid() AS p, ${fvol}() AS f`)).rows[0].p); // primary backend pid
    const since = statementLog(proxy).length;
    for (let i = 0; i < 5; i++) await c.query(`SELECT ${i} AS i, inet_server_port() AS port`);
    for (let i = 0; i < 3; i++) await c.query(`INSERT INTO ${t} (v) VALUES (${500 + i})`);
    await c.query("SET work_mem = '2MB'");
    const end = await logBarrier(proxy);
    const mine = statementLog(proxy)
      .slice(since, end)
      .filter((e) => /^(SELECT \d AS i|INSERT INTO routing_t_|SET work_mem = '2MB')/.test(e.statement));
    const primaryEntries = mine.filter((e) => e.node === P);
    const lbEntries = mine.filter((e) => e.node === LB);
    expect(primaryEntries.length, JSON.stringify(mine)).toBe(4); // 3 INSERT + SET
    expect(lbEntries.length, JSON.stringify(mine)).toBe(6); // 5 SELECT + SET
    expect(mine.filter((e) => e.node !== P && e.node !== LB)).toEqual([]);
    expect(new Set(primaryEntries.map((e) => e.backendPid))).toEqual(new Set([pid]));
    await endPg(c);
  });
});

describe('SHOW pool_nodes select_cnt', () => {
  it('select_cnt grows on the node that ran the reads only', async () => {
    const c = await client();
    const selectCnt = async (): Promise<Record<string, number>> => {
      const r = await c.query('SHOW pool_nodes');
      expect(r.fields.map((f) => f.name)).toContain('select_cnt');
      return Object.fromEntries(r.rows.map((row) => [String(row.node_id), Number(row.select_cnt)]));
    };
    const before = await selectCnt();
    expect(Object.keys(before).sort()).toEqual(['0', '1', '2']);
    for (let i = 0; i < 10; i++) await c.query(`SELECT ${i} AS cnt_probe, inet_server_port() AS port`);
    for (let i = 0; i < 3; i++) await c.query(`INSERT INTO ${t} (v) VALUES (${700 + i})`);
    const after = await selectCnt();
    const diff = `select_cnt before ${JSON.stringify(before)} after ${JSON.stringify(after)}`;
    expect(after[String(LB)]! - before[String(LB)]!, diff).toBe(10);
    expect(after[String(P)]! - before[String(P)]!, diff).toBe(0);
    expect(after['2']! - before['2']!, diff).toBe(0);
  });
});

describe('reads that move between standbys and back (session mode)', () => {
  it("a standby the session's reads come back to has the settings changed while they were elsewhere, and never serves a transaction it is not in", async () => {
    // The session reads on standby 1 (app_name_redirect_preference_list); standby 1 is
    // detached, its reads move to standby 2 (connected, the session's SET replayed); a new
    // SET then goes to the primary and standby 2 only. Standby 1 is attached again and
    // standby 2 detached: the reads go back to standby 1, where the session's old
    // connection still is. It must not answer with the old setting, nor read outside the
    // session's transaction.
    const app = `routing-move-back-${sfx}`;
    const own = await startProxy({
      cluster,
      config: {
        log_min_messages: 'warning',
        admin_users: 'postgres',
        read_your_writes: 'off',
        backend_weight0: 0,
        backend_weight1: 1,
        backend_weight2: 1,
        app_name_redirect_preference_list: `${app}:1`,
      },
    });
    const c = await pgClient({ port: own.port }, { application_name: app });
    const admin = await pgClient({ port: own.port }, { application_name: `${app}-admin` });
    const port = async (): Promise<number> =>
      nodeOfPort(cluster, Number((await c.query('SELECT inet_server_port() AS p')).rows[0].p));
    const workMem = async (): Promise<string> => (await c.query('SHOW work_mem')).rows[0].work_mem as string;
    try {
      await c.query("SET work_mem = '5MB'");
      expect(await port()).toBe(1);
      await admin.query('PGPOOL DETACH NODE 1');
      expect(await port()).toBe(2);
      expect(await workMem()).toBe('5MB');
      await c.query("SET work_mem = '6MB'");
      expect(await workMem()).toBe('6MB');
      await admin.query('PGPOOL ATTACH NODE 1');
      await admin.query('PGPOOL DETACH NODE 2');
      expect(await port()).toBe(1);
      expect(await workMem(), 'the setting made while the reads were on standby 2').toBe('6MB');
      // In a transaction begun while the reads were elsewhere, standby 1's old connection is
      // not in it: the transaction's reads must not run there.
      await admin.query('PGPOOL ATTACH NODE 2');
      await admin.query('PGPOOL DETACH NODE 1');
      expect(await port()).toBe(2);
      await c.query('BEGIN');
      expect(await port()).toBe(2);
      await admin.query('PGPOOL ATTACH NODE 1');
      await admin.query('PGPOOL DETACH NODE 2');
      const inTx = await port();
      expect(inTx, 'a read of the transaction on a connection outside it').not.toBe(1);
      await c.query('COMMIT');
    } finally {
      await admin.query('PGPOOL ATTACH NODE 1').catch(() => undefined);
      await admin.query('PGPOOL ATTACH NODE 2').catch(() => undefined);
      await endPg(c);
      await endPg(admin);
      await own.stop();
    }
  });
});

describe('relcache_size smaller than what one statement needs looked up', () => {
  // Each answer evicted the one before: the statement was looked up again and again, for ever.
  it('a statement naming more relations, or calling more functions, than relcache_size holds still runs (both pool modes)', async () => {
    const n = `routing_rc_${sfx}`;
    await cluster.psql(
      cluster.primaryId,
      `CREATE TABLE ${n}_a (x int); CREATE TABLE ${n}_b (x int); CREATE TABLE ${n}_c (x int);
       INSERT INTO ${n}_a VALUES (1); INSERT INTO ${n}_b VALUES (2); INSERT INTO ${n}_c VALUES (3);
       CREATE FUNCTION ${n}_f1() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
       CREATE FUNCTION ${n}_f2() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 2';
       CREATE FUNCTION ${n}_f3() RETURNS int LANGUAGE sql AS 'SELECT ${n}_f1() + ${n}_f2()';`,
    );
    await cluster.waitForCatchup();
    for (const mode of ['session', 'transaction']) {
      const own = await startProxy({
        cluster,
        config: { log_min_messages: 'warning', pool_mode: mode, relcache_size: 1, backend_weight0: 0 },
      });
      const c = await pgClient({ port: own.port });
      try {
        const rel = await withTimeout(
          c.query(`SELECT a.x + b.x + c.x AS s FROM ${n}_a a, ${n}_b b, ${n}_c c`),
          10_000,
          `${mode}: three relations`,
        );
        expect(rel.rows).toEqual([{ s: 6 }]);
        const fn = await withTimeout(
          c.query(`SELECT ${n}_f1() + ${n}_f2() + ${n}_f3() AS s`),
          10_000,
          `${mode}: three functions`,
        );
        expect(fn.rows).toEqual([{ s: 6 }]);
      } finally {
        await endPg(c);
        await own.stop();
      }
    }
  });
});

/** statement_level_load_balance on the two standbys alone, pgpool's routing rules only. */
const STATEMENT_LEVEL = {
  log_min_messages: 'warning',
  read_your_writes: 'off',
  statement_level_load_balance: true,
  backend_weight0: 0,
  backend_weight1: 1,
  backend_weight2: 1,
};

describe('statement_level_load_balance (session mode)', () => {
  // Reads are drawn among the standbys statement by statement, so what the session runs on
  // "both" nodes (SET, BEGIN, COMMIT…) must run on every standby it reads from (pgpool:
  // BOTH-type statements go to all live standbys).
  it('a SET (simple and extended protocol) holds on every standby the reads are drawn to; BEGIN/COMMIT leave none in a transaction', async () => {
    const app = `routing-stmt-lb-${sfx}`;
    const own = await startProxy({
      cluster,
      config: STATEMENT_LEVEL,
    });
    const c = await pgClient({ port: own.port }, { application_name: app });
    const draws = async (n: number, extended: boolean): Promise<Map<number, Set<string>>> => {
      const seen = new Map<number, Set<string>>();
      for (let i = 0; i < n; i++) {
        const sql = "SELECT current_setting('work_mem') AS w, inet_server_port() AS p";
        const r = extended ? await extendedQuery(c, sql) : await c.query(sql);
        const node = nodeOfPort(cluster, Number(r.rows[0].p));
        if (!seen.has(node)) seen.set(node, new Set());
        seen.get(node)?.add(r.rows[0].w as string);
      }
      return seen;
    };
    try {
      await c.query("SET work_mem = '7MB'");
      let seen = await draws(30, false);
      expect([...seen.keys()].sort(), 'reads drawn to both standbys').toEqual([1, 2]);
      for (const [node, values] of seen) expect([...values], `node ${node}`).toEqual(['7MB']);
      await extendedQuery(c, "SET work_mem = '9MB'");
      seen = await draws(30, true);
      for (const [node, values] of seen) expect([...values], `node ${node}, extended`).toEqual(['9MB']);
      await c.query('BEGIN');
      await draws(10, false);
      await c.query('COMMIT');
      const stuck = await Promise.all(
        cluster.standbys.map((n) =>
          cluster.psql(
            n.id,
            `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}' AND state LIKE 'idle in transaction%'`,
          ),
        ),
      );
      expect(stuck, 'standby backends of the session left in a transaction').toEqual(['0', '0']);
    } finally {
      await endPg(c);
      await own.stop();
    }
  });

  it('a REPEATABLE READ transaction reads from the standby that took its snapshot (one snapshot); READ COMMITTED ones are still drawn per statement', async () => {
    const own = await startProxy({
      cluster,
      config: STATEMENT_LEVEL,
    });
    const c = await pgClient({ port: own.port });
    const nodesRead = async (n: number, extended: boolean): Promise<number[]> => {
      const seen = new Set<number>();
      for (let i = 0; i < n; i++) {
        const sql = 'SELECT inet_server_port() AS p';
        const r = extended ? await extendedQuery(c, sql) : await c.query(sql);
        seen.add(nodeOfPort(cluster, Number(r.rows[0].p)));
      }
      return [...seen].sort();
    };
    try {
      for (const extended of [false, true]) {
        await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        const rr = await nodesRead(30, extended);
        await c.query('COMMIT');
        expect(rr, `REPEATABLE READ, extended ${extended}`).toHaveLength(1);
        await c.query('START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE');
        expect(await nodesRead(30, extended), `SERIALIZABLE, extended ${extended}`).toEqual([0]);
        await c.query('COMMIT');
      }
      await c.query('BEGIN');
      expect(await nodesRead(30, false), 'READ COMMITTED').toEqual([1, 2]);
      await c.query('COMMIT');
    } finally {
      await endPg(c);
      await own.stop();
    }
  });
});

describe('a transaction that failed on the primary only', () => {
  it("a SET of it does not last on the load-balance node (its COMMIT there rolls back too, as the primary's)", async () => {
    const c = await pgClient(proxy);
    try {
      await c.query('BEGIN');
      await c.query("SET search_path = 'routing_nosuch_schema', public");
      // A write, on the primary only, that fails there: the standby's part of the transaction did not fail.
      await c.query(`INSERT INTO ${t}_nosuch (v) VALUES (1)`).catch(() => undefined);
      await c.query('COMMIT');
      // A read: on the load-balance node (node 1).
      const r = await c.query("SELECT current_setting('search_path') AS p, inet_server_port() AS port");
      expect(nodeOfPort(cluster, Number(r.rows[0].port))).toBe(1);
      expect(r.rows[0].p).toBe('"$user", public');
    } finally {
      await endPg(c);
    }
  });
});
