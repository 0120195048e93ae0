/**
 * Transaction pooling per database and user (issue 14): database_pool_settings puts one
 * database in transaction mode with its own pool_size (1) while another stays in session
 * mode behind the same pgrelay; prepared statements a server lost are prepared again;
 * a second Parse of a client's named statement is refused (42P05) as by PostgreSQL.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeAllClients, endPg, nodeClient, pgClient, queryRows } from '../support/clients.js';
import { getCluster } from '../support/cluster.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  closeAllRaw,
  bindMessage,
  closeMessage,
  executeMessage,
  parseMessage,
  queryMessage,
  summarize,
  syncMessage,
} from '../support/raw.js';

const cluster = getCluster();
const dbTx = `pool_set_tx_${process.pid}`;
const dbSession = `pool_set_s_${process.pid}`;
let proxy: ProxyHandle;

/** Client backends of `database` with `application_name` on each node now (pg_stat_activity). */
async function backendsPerNode(database: string, application: string): Promise<number[]> {
  return Promise.all(
    cluster.nodes.map(async (n) => {
      const c = await nodeClient(cluster, n);
      try {
        const r = await c.query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND backend_type = 'client backend'",
          [database, application],
        );
        return r.rows[0].n as number;
      } finally {
        await c.end().catch(() => undefined);
      }
    }),
  );
}

beforeAll(async () => {
  for (const d of [dbTx, dbSession]) {
    await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${d} WITH (FORCE)`);
    await cluster.psql(cluster.primaryId, `CREATE DATABASE ${d}`);
  }
  await cluster.waitForCatchup();
  proxy = await startProxy({
    cluster,
    config: {
      log_min_messages: 'warning',
      // Global session mode (pgpool's); one database in transaction mode with a pool of 2.
      pool_mode: 'session',
      num_init_children: 20,
      max_client_conn: 50,
      default_pool_size: 20,
      database_pool_settings: `${dbTx}:pool_mode=transaction pool_size=1`,
    },
  });
}, 120_000);

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  const code = await proxy?.stop();
  for (const d of [dbTx, dbSession])
    await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${d} WITH (FORCE)`).catch(() => undefined);
  expect(code).toBe(0);
});

describe('database_pool_settings', () => {
  it('one database in transaction mode with pool_size = 1, another in session mode, through one pgrelay', {
    timeout: 60_000,
  }, async () => {
    const n = 8;
    const tx = await Promise.all(
      Array.from({ length: n }, () => pgClient(proxy, { database: dbTx, application_name: 'mixed-tx' })),
    );
    const session = await Promise.all(
      Array.from({ length: n }, () => pgClient(proxy, { database: dbSession, application_name: 'mixed-session' })),
    );
    // Every client runs statements at once, some in transactions, writes included (primary).
    await Promise.all(
      [...tx, ...session].map(async (c, i) => {
        for (let k = 0; k < 3; k++) {
          await c.query('BEGIN');
          await c.query('SELECT pg_sleep(0.02), txid_current()');
          await c.query('COMMIT');
          expect((await c.query('SELECT $1::int + 1 AS v', [i])).rows).toEqual([{ v: i + 1 }]);
        }
      }),
    );
    // Transaction mode: at most pool_size server connections per node, whatever the number of clients.
    const txBackends = await backendsPerNode(dbTx, 'mixed-tx');
    for (const b of txBackends) expect(b).toBeLessThanOrEqual(1);
    expect(txBackends[cluster.primaryId]).toBeGreaterThan(0);
    // Session mode: every client keeps its own primary connection.
    const sessionBackends = await backendsPerNode(dbSession, 'mixed-session');
    expect(sessionBackends[cluster.primaryId]).toBe(n);
    // SHOW pool_pools: session-mode clients hold their connections between statements, transaction-mode ones do not
    // (their pool's idle connections are listed as waiting for a client).
    const pools = await queryRows(proxy, 'SHOW pool_pools', { database: dbTx });
    const held = (d: string) => pools.filter((p) => p.database === d && p.pool_connected === '1').length;
    expect(held(dbSession)).toBeGreaterThanOrEqual(n);
    expect(held(dbTx)).toBe(0);
    expect(pools.some((p) => p.database === dbTx && p.status === 'Wait for connection')).toBe(true);
    await Promise.all([...tx, ...session].map((c) => endPg(c)));
  });
});

describe('prepared statements a server connection lost (pool_mode = transaction)', () => {
  /** Drop every prepared statement of the connection serving the client, out of pgrelay's sight (SPI). */
  const forget = "DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$";

  it('a Bind answered 26000 is prepared again and run once, invisibly to the client', async () => {
    // pool_size = 1 for this database: the client's statements and the DO share one primary connection.
    const c = await pgClient(proxy, { database: dbTx, application_name: 'lost-statement' });
    await c.query('CREATE TABLE lost_t (v int); INSERT INTO lost_t VALUES (0)');
    const upd = { name: 'upd', text: 'UPDATE lost_t SET v = v + $1 RETURNING v', values: [1] };
    expect((await c.query(upd)).rows).toEqual([{ v: 1 }]);
    await c.query(forget);
    // node-postgres sends Bind/Execute/Sync only (the statement is prepared, for all it knows).
    expect((await c.query(upd)).rows).toEqual([{ v: 2 }]);
    await c.query(forget);
    expect((await c.query(upd)).rows).toEqual([{ v: 3 }]);
    expect((await c.query('SELECT v FROM lost_t')).rows).toEqual([{ v: 3 }]);
    // In a transaction the error has aborted it: the client is told; after ROLLBACK the statement works again.
    await c.query('BEGIN');
    await c.query(forget);
    await expect(c.query(upd)).rejects.toMatchObject({ code: '26000' });
    await c.query('ROLLBACK');
    expect((await c.query(upd)).rows).toEqual([{ v: 4 }]);
    await c.query('DROP TABLE lost_t');
    await endPg(c);
  });
});

describe('a second Parse of a named statement (pool_mode = transaction)', () => {
  it('is refused with 42P05 as by PostgreSQL; the unnamed statement stays replaceable', async () => {
    const c = await RawClient.connect(proxy.port);
    expect((await c.startup({ user: 'postgres', database: dbTx, application_name: 'reparse' })).ok).toBe(true);
    const run = async (...msgs: Buffer[]) => {
      c.send(...msgs);
      return summarize(await c.collect('Z'));
    };
    let r = await run(parseMessage('s1', 'SELECT 1 AS a'), syncMessage());
    expect(r.errors).toEqual([]);
    // Same name again, other text: PostgreSQL's error, and what follows up to Sync is skipped.
    r = await run(parseMessage('s1', 'SELECT 2 AS a'), bindMessage('', 's1'), executeMessage(), syncMessage());
    expect(r.errors.map((e) => [e.C, e.M])).toEqual([['42P05', 'prepared statement "s1" already exists']]);
    expect(r.rows).toEqual([]);
    // The client's statement is still the first one.
    r = await run(bindMessage('', 's1'), executeMessage(), syncMessage());
    expect(r.rows).toEqual([['1']]);
    // In a transaction block the error aborts it, as PostgreSQL does.
    await run(queryMessage('BEGIN'));
    r = await run(parseMessage('s1', 'SELECT 3'), syncMessage());
    expect(r.errors.map((e) => e.C)).toEqual(['42P05']);
    expect(r.status).toBe('E');
    await run(queryMessage('ROLLBACK'));
    // The unnamed statement is replaced without error; a closed name may be prepared again.
    r = await run(
      parseMessage('', 'SELECT 4'),
      parseMessage('', 'SELECT 5'),
      bindMessage('', ''),
      executeMessage(),
      syncMessage(),
    );
    expect(r.rows).toEqual([['5']]);
    r = await run(
      closeMessage('S', 's1'),
      parseMessage('s1', 'SELECT 6'),
      bindMessage('', 's1'),
      executeMessage(),
      syncMessage(),
    );
    expect(r.errors).toEqual([]);
    expect(r.rows).toEqual([['6']]);
    c.socket.destroy();
  });
});
