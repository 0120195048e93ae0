/**
 * Routing with the extended query protocol (README "Routing": each statement is
 * routed where its text says, Parse/Bind/Execute included): named statements
 * reused many times, a named read parsed on the standby then used inside a
 * writing transaction (re-parsed on the primary), postgres.js pipelining, and
 * pg-cursor (row-limited Execute + Flush + PortalSuspended).
 *
 * Weights 0:1:0: the load-balance node is standby node 1, the primary is node 0.
 */
import Cursor from 'pg-cursor';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endSql, pgClient, sqlClient, withTimeout } from '../support/clients.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { countPerNode, logBarrier, nodeOfPort, statementLog } from '../support/routing.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
const P = cluster.primaryId;
const LB = 1;
const t = `routing_ext_${process.pid}`;
let proxy: ProxyHandle;

beforeAll(async () => {
  await cluster.psql(P, `DROP TABLE IF EXISTS ${t}; CREATE TABLE ${t} (id serial primary key, v int, tag text)`);
  await cluster.waitForCatchup(30_000);
  proxy = await startProxy({
    cluster,
    config: {
      backend_weight0: 0,
      backend_weight1: 1,
      backend_weight2: 0,
      log_per_node_statement: true,
      // pgpool's routing rules alone: with read-your-writes a read right after a write runs on the
      // standby only once it replayed the write (read-your-writes.test.ts covers that).
      read_your_writes: 'off',
    },
  });
});

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  await proxy?.stop();
  await cluster.psql(P, `DROP TABLE IF EXISTS ${t}`).catch(() => undefined);
});

describe('node-postgres named statements', () => {
  it('a named read and a named write, each reused 40 times, interleaved', async () => {
    const c = await pgClient({ port: proxy.port });
    const since = statementLog(proxy).length;
    const readText = 'SELECT inet_server_port() AS port, $1::int AS v';
    const writeText = `INSERT INTO ${t} (v, tag) VALUES ($1, 'reuse') RETURNING inet_server_port() AS port, v`;
    const readNodes: number[] = [];
    const writeNodes: number[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await c.query({ name: 'rt_read', text: readText, values: [i] });
      expect(r.rows[0].v).toBe(i);
      readNodes.push(nodeOfPort(cluster, r.rows[0].port as number));
      const w = await c.query({ name: 'rt_write', text: writeText, values: [1000 + i] });
      expect(w.rows[0].v).toBe(1000 + i);
      writeNodes.push(nodeOfPort(cluster, w.rows[0].port as number));
    }
    expect(new Set(readNodes)).toEqual(new Set([LB]));
    expect(new Set(writeNodes)).toEqual(new Set([P]));
    expect(Number(await cluster.psql(P, `SELECT count(*) FROM ${t} WHERE tag = 'reuse'`))).toBe(40);
    const log = statementLog(proxy).slice(since, await logBarrier(proxy));
    expect(countPerNode(log, (e) => e.statement === readText)).toEqual({ [LB]: 40 });
    expect(countPerNode(log, (e) => e.statement === writeText)).toEqual({ [P]: 40 });
  });

  it('a named read parsed on the standby is re-parsed on the primary when used after a write in a transaction', async () => {
    const c = await pgClient({ port: proxy.port });
    const q = {
      name: 'rt_reparse',
      text: `SELECT inet_server_port() AS port, count(*)::int AS n FROM ${t} WHERE tag = $1`,
    };
    // 1. Parse + execute outside a transaction: on the standby.
    const r1 = await c.query({ ...q, values: ['reparse'] });
    expect(nodeOfPort(cluster, r1.rows[0].port as number)).toBe(LB);
    expect(r1.rows[0].n).toBe(0);
    // 2. Inside a transaction, before any write: still the standby (Bind/Execute only: pg caches the name).
    await c.query('BEGIN');
    const r2 = await c.query({ ...q, values: ['reparse'] });
    expect(nodeOfPort(cluster, r2.rows[0].port as number)).toBe(LB);
    // 3. Write, then use the statement again: must run on the primary and see the uncommitted row.
    await c.query(`INSERT INTO ${t} (v, tag) VALUES (1, 'reparse')`);
    const r3 = await c.query({ ...q, values: ['reparse'] });
    expect(nodeOfPort(cluster, r3.rows[0].port as number), 'named read after a write in the transaction').toBe(P);
    expect(r3.rows[0].n, "sees its own transaction's row").toBe(1);
    // Again (already re-parsed on the primary).
    const r4 = await c.query({ ...q, values: ['reparse'] });
    expect(nodeOfPort(cluster, r4.rows[0].port as number)).toBe(P);
    await c.query('COMMIT');
    // 4. After COMMIT the statement still works (pgpool keeps it on the primary; either node is correct).
    const r5 = await c.query({ ...q, values: ['reparse'] });
    expect([P, LB]).toContain(nodeOfPort(cluster, r5.rows[0].port as number));
    // 5. And a second write transaction with the same statement.
    await c.query('BEGIN');
    await c.query(`UPDATE ${t} SET v = 2 WHERE tag = 'reparse'`);
    const r6 = await c.query({ ...q, values: ['reparse'] });
    expect(nodeOfPort(cluster, r6.rows[0].port as number)).toBe(P);
    await c.query('COMMIT');
  });

  it('unnamed parameterized statements: reads on the standby, writes and in-transaction reads after a write on the primary', async () => {
    const c = await pgClient({ port: proxy.port });
    const r = await c.query('SELECT inet_server_port() AS port, $1::text AS x', ['u1']);
    expect(nodeOfPort(cluster, r.rows[0].port as number)).toBe(LB);
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${t} (v, tag) VALUES ($1, $2)`, [5, 'unnamed']);
    const r2 = await c.query(`SELECT inet_server_port() AS port, count(*)::int AS n FROM ${t} WHERE tag = $1`, [
      'unnamed',
    ]);
    expect(nodeOfPort(cluster, r2.rows[0].port as number)).toBe(P);
    expect(r2.rows[0].n).toBe(1);
    await c.query('ROLLBACK');
    const r3 = await c.query('SELECT inet_server_port() AS port, $1::text AS x', ['u2']);
    expect(nodeOfPort(cluster, r3.rows[0].port as number)).toBe(LB);
  });
});

describe('postgres.js pipelining', () => {
  it('100 mixed reads and writes with Promise.all on one connection', async () => {
    const sql = sqlClient({ port: proxy.port }, { max: 1 });
    const tag = 'pipeline';
    const results = await withTimeout(
      Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          i % 2 === 0
            ? sql`SELECT ${i}::int AS v, inet_server_port() AS port`
            : sql`INSERT INTO ${sql(t)} (v, tag) VALUES (${i}, ${tag}) RETURNING v, inet_server_port() AS port`,
        ),
      ),
      30_000,
      'postgres.js pipeline of 100 statements',
    );
    for (let i = 0; i < 100; i++) {
      expect(results[i].length, `statement ${i}`).toBe(1);
      expect(results[i][0].v, `statement ${i}`).toBe(i);
      expect(
        nodeOfPort(cluster, results[i][0].port as number),
        `node of statement ${i} (${i % 2 === 0 ? 'read' : 'write'})`,
      ).toBe(i % 2 === 0 ? LB : P);
    }
    expect(Number(await cluster.psql(P, `SELECT count(*) FROM ${t} WHERE tag = '${tag}'`))).toBe(50);
    // Read-your-writes: a read inside a transaction runs on the standby only if it is known to have
    // replayed the session's writes (it is not asked there). A read outside one learns it.
    await pollUntil(
      async () => nodeOfPort(cluster, (await sql`SELECT inet_server_port() AS port`)[0].port as number),
      (n) => n === LB,
      { what: "a read on the load-balance node once it replayed the pipeline's writes", timeoutMs: 20_000 },
    );
    // A transaction through postgres.js: reads after a write see it (primary).
    const inTx = await withTimeout(
      sql.begin(async (tx) => {
        const before = await tx`SELECT inet_server_port() AS port`;
        await tx`INSERT INTO ${sql(t)} (v, tag) VALUES (1, 'pjs-tx')`;
        const after =
          await tx`SELECT inet_server_port() AS port, count(*)::int AS n FROM ${sql(t)} WHERE tag = 'pjs-tx'`;
        return { before: before[0].port as number, after: after[0].port as number, n: after[0].n as number };
      }),
      20_000,
      'postgres.js transaction',
    );
    expect(nodeOfPort(cluster, inTx.before)).toBe(LB);
    expect(nodeOfPort(cluster, inTx.after)).toBe(P);
    expect(inTx.n).toBe(1);
    await endSql(sql);
  });
});

describe('pg-cursor', () => {
  it('reads a 1000-row read 10 rows at a time (row-limited Execute + Flush + PortalSuspended) without hanging', async () => {
    const c = await pgClient({ port: proxy.port });
    const cursor = c.query(new Cursor('SELECT g, inet_server_port() AS port FROM generate_series(1, 1000) AS g'));
    const seen: number[] = [];
    const nodes = new Set<number>();
    await withTimeout(
      (async () => {
        for (;;) {
          const rows = await cursor.read(10);
          if (rows.length === 0) break;
          expect(rows.length).toBeLessThanOrEqual(10);
          for (const r of rows) {
            seen.push(r.g as number);
            nodes.add(nodeOfPort(cluster, r.port as number));
          }
        }
        await cursor.close();
      })(),
      30_000,
      'pg-cursor reading 1000 rows 10 at a time',
    );
    expect(seen).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect([...nodes]).toEqual([LB]);
    // The connection is usable afterwards.
    const r = await withTimeout(c.query('SELECT 1 AS one'), 10_000, 'query after the cursor');
    expect(r.rows[0].one).toBe(1);
  });

  it('a cursor inside a writing transaction reads from the primary', async () => {
    const c = await pgClient({ port: proxy.port });
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${t} (v, tag) SELECT g, 'cursor' FROM generate_series(1, 50) g`);
    const cursor = c.query(
      new Cursor(`SELECT v, inet_server_port() AS port FROM ${t} WHERE tag = 'cursor' ORDER BY v`),
    );
    const seen: number[] = [];
    const nodes = new Set<number>();
    await withTimeout(
      (async () => {
        for (;;) {
          const rows = await cursor.read(7);
          if (rows.length === 0) break;
          for (const r of rows) {
            seen.push(r.v as number);
            nodes.add(nodeOfPort(cluster, r.port as number));
          }
        }
        await cursor.close();
      })(),
      30_000,
      'pg-cursor in a writing transaction',
    );
    expect(seen).toHaveLength(50);
    expect([...nodes]).toEqual([P]);
    await withTimeout(c.query('ROLLBACK'), 10_000, 'ROLLBACK after the cursor');
  });
});

describe('DISCARD keeps or drops named statements as PostgreSQL does', () => {
  it('a named read prepared on the standby is still used after DISCARD PLANS / TEMP / SEQUENCES, prepared again after DISCARD ALL', async () => {
    const c = await pgClient({ port: proxy.port });
    const q = { name: 'rt_discard', text: 'SELECT inet_server_port() AS port, $1::int AS v' };
    const use = async (v: number): Promise<number> => {
      const r = await c.query({ ...q, values: [v] });
      expect(r.rows[0].v).toBe(v);
      return nodeOfPort(cluster, r.rows[0].port as number);
    };
    expect(await use(1)).toBe(LB);
    for (const what of ['PLANS', 'TEMP', 'SEQUENCES']) {
      await c.query(`DISCARD ${what}`);
      expect(await use(2)).toBe(LB);
    }
    await c.query('DISCARD ALL');
    // node-postgres still believes rt_discard prepared (it sends Bind alone): PostgreSQL would
    // answer 26000 directly too. A new name is prepared and runs on the standby.
    await expect(c.query({ ...q, values: [3] })).rejects.toMatchObject({ code: '26000' });
    const r = await c.query({ name: 'rt_discard2', text: q.text, values: [4] });
    expect(nodeOfPort(cluster, r.rows[0].port as number)).toBe(LB);
  });
});

describe("a standby backend's pid given to a pid function runs on that standby", () => {
  // A read that runs on the standby (pg_sleep is volatile: the primary's) until cancelled.
  const LONG_READ = 'SELECT count(*) FROM generate_series(1, 2000000000)';

  /** The pid of the standby backend (node LB) running `text` for application `app`, polled. */
  async function standbyPid(app: string, text: string): Promise<number> {
    const pid = await pollUntil(
      () =>
        cluster.psql(
          LB,
          `SELECT pid FROM pg_stat_activity WHERE application_name = '${app}' AND query = '${text}' AND state = 'active'`,
        ),
      (v) => /^\d+$/.test(v),
      { what: `the standby backend running "${text}"` },
    );
    return Number(pid);
  }

  it('pg_cancel_backend(constant) cancels a read running on the standby (simple protocol)', async () => {
    const app = `rt_pid_cancel_${process.pid}`;
    const victim = await pgClient({ port: proxy.port }, { application_name: app });
    const sleeping = victim.query(LONG_READ).then(
      () => 'finished',
      (e: { code?: string }) => e.code ?? 'no code',
    );
    const pid = await standbyPid(app, LONG_READ);
    const killer = await pgClient({ port: proxy.port });
    const since = statementLog(proxy).length;
    const text = `SELECT pg_cancel_backend(${pid}) AS ok`;
    const r = await killer.query(text);
    expect(r.rows[0].ok).toBe(true);
    expect(await withTimeout(sleeping, 10_000, 'the cancelled read')).toBe('57014');
    const log = statementLog(proxy).slice(since, await logBarrier(proxy));
    expect(countPerNode(log, (e) => e.statement === text)).toEqual({ [LB]: 1 });
    // The victim's session goes on, its reads still on the standby.
    const after = await victim.query('SELECT inet_server_port() AS port');
    expect(nodeOfPort(cluster, after.rows[0].port as number)).toBe(LB);
  });

  it('pg_terminate_backend($1) with the pid of an idle standby backend (extended protocol, node-postgres) ends it', async () => {
    const app = `rt_pid_term_${process.pid}`;
    const victim = await pgClient({ port: proxy.port }, { application_name: app });
    const first = await victim.query('SELECT inet_server_port() AS port');
    expect(nodeOfPort(cluster, first.rows[0].port as number)).toBe(LB);
    const pid = Number(await cluster.psql(LB, `SELECT pid FROM pg_stat_activity WHERE application_name = '${app}'`));
    expect(pid).toBeGreaterThan(0);
    const killer = await pgClient({ port: proxy.port });
    const r = await killer.query('SELECT pg_terminate_backend($1) AS ok', [pid]);
    expect(r.rows[0].ok).toBe(true);
    await pollUntil(
      () => cluster.psql(LB, `SELECT count(*) FROM pg_stat_activity WHERE pid = ${pid}`),
      (n) => n === '0',
      { what: 'the terminated standby backend to exit' },
    );
    // The victim's session lost its standby connection, not its session: its next read is answered.
    const after = await victim.query('SELECT 1 AS one');
    expect(after.rows[0].one).toBe(1);
  });

  it('a pid pgrelay holds no connection to still goes to the primary, which answers for its own backends', async () => {
    const killer = await pgClient({ port: proxy.port });
    const since = statementLog(proxy).length;
    const text = 'SELECT pg_cancel_backend(2147483000) AS ok';
    const r = await killer.query(text);
    expect(r.rows[0].ok).toBe(false);
    const log = statementLog(proxy).slice(since, await logBarrier(proxy));
    expect(countPerNode(log, (e) => e.statement === text)).toEqual({ [P]: 1 });
  });
});

describe('portals and the end of their transaction', () => {
  it('DEALLOCATE ALL keeps the portals of the transaction (PostgreSQL keeps them): a cursor bound on the standby goes on there', async () => {
    const { RawClient, bindMessage, executeMessage, parseMessage, syncMessage, summarize } = await import(
      '../support/raw.js'
    );
    const raw = await RawClient.connect(proxy.port);
    try {
      expect((await raw.startup({ user: 'postgres', database: 'postgres' })).ok).toBe(true);
      expect((await raw.query('BEGIN')).status).toBe('T');
      raw.send(
        parseMessage('cur', 'SELECT inet_server_port() AS port, g FROM generate_series(1, 3) g'),
        bindMessage('p', 'cur'),
        executeMessage('p', 1),
        syncMessage(),
      );
      const first = summarize(await raw.collect('Z', 5000));
      expect(first.errors).toEqual([]);
      expect(nodeOfPort(cluster, Number(first.rows[0]?.[0]))).toBe(LB);
      expect((await raw.query('DEALLOCATE ALL')).errors).toEqual([]);
      raw.send(executeMessage('p', 1), syncMessage());
      const next = summarize(await raw.collect('Z', 5000));
      expect(next.errors).toEqual([]);
      expect(next.rows[0]?.[1]).toBe('2');
      expect((await raw.query('COMMIT')).status).toBe('I');
    } finally {
      raw.destroy();
    }
  });

  it('a portal bound behind a Sync whose ReadyForQuery comes before its Execute still runs where it was bound', async () => {
    const { RawClient, bindMessage, executeMessage, parseMessage, syncMessage, summarize } = await import(
      '../support/raw.js'
    );
    const raw = await RawClient.connect(proxy.port);
    try {
      expect((await raw.startup({ user: 'postgres', database: 'postgres' })).ok).toBe(true);
      raw.send(parseMessage('rd', 'SELECT inet_server_port() AS port'), syncMessage());
      expect((await raw.collect('Z', 5000)).map((m) => m.type).join('')).toBe('1Z');
      for (const portal of ['', 'named_portal']) {
        // The first batch ends (idle) while the second's Bind is already in: its ReadyForQuery
        // arrives before the second's Execute is sent.
        raw.send(bindMessage('first', 'rd'), executeMessage('first', 0), syncMessage(), bindMessage(portal, 'rd'));
        const first = await raw.collect('Z', 5000);
        expect(first.map((m) => m.type).join('')).toBe('2DCZ');
        raw.send(executeMessage(portal, 0), syncMessage());
        const second = summarize(await raw.collect('Z', 5000));
        expect(second.errors).toEqual([]);
        expect(nodeOfPort(cluster, Number(second.rows[0]?.[0]))).toBe(LB);
      }
    } finally {
      raw.destroy();
    }
  });
});

describe('a pipeline across nodes, then more', () => {
  it("a Query pipelined behind an extended batch run on two nodes is answered after the batch's ReadyForQuery (300 times)", async () => {
    // The batch's SET runs on the primary and the standby; the read behind it goes to the
    // standby once the primary answered, and the standby's ReadyForQuery and reply to the
    // read can come in one read from its socket: the merged ReadyForQuery used to reach
    // the client after that reply (unit/replies covers it deterministically).
    const { RawClient, bindMessage, executeMessage, parseMessage, queryMessage, syncMessage } = await import(
      '../support/raw.js'
    );
    const raw = await RawClient.connect(proxy.port);
    try {
      expect((await raw.startup({ user: 'postgres', database: 'postgres' })).ok).toBe(true);
      const bad: string[] = [];
      for (let i = 0; i < 300; i++) {
        raw.send(
          parseMessage('', `SET application_name = 'pipe${i}'`),
          bindMessage('', ''),
          executeMessage(),
          syncMessage(),
          queryMessage(`SELECT ${i} AS i`),
        );
        const first = (await raw.collect('Z', 5000)).map((m) => m.type).join('');
        const second = await raw.collect('Z', 5000);
        const types = second.map((m) => m.type).join('');
        const row = second.find((m) => m.type === 'D');
        if (first !== '12CSZ' || types !== 'TDCZ' || row?.body.subarray(6).toString() !== String(i))
          bad.push(`${i}: ${first} | ${types}`);
      }
      expect(bad).toEqual([]);
    } finally {
      raw.destroy();
    }
  });
});
