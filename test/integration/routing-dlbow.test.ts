/**
 * disable_load_balance_on_write, as pgpool-II defines it
 * (https://www.pgpool.net/docs/latest/en/html/runtime-config-load-balancing.html):
 * off — reads always balanced; transaction — after a write, the transaction's
 * reads go to the primary; trans_transaction — also the reads inside every later
 * explicit transaction of the session; always — every read after a write, for
 * the rest of the session;
 * dml_adaptive — only reads of the tables written in the transaction.
 * The script below runs through one pgrelay per mode, with weights 0:1:0 so that
 * "standby" is node 1:
 *
 *   SELECT a1; BEGIN; SELECT a2; INSERT; SELECT a3; COMMIT; SELECT a4;
 *   BEGIN; SELECT a5; COMMIT; INSERT; SELECT a6
 *
 * plus reads of the written table (a3t after the INSERT inside the transaction,
 * a4t after COMMIT) for dml_adaptive, which only sends reads of tables written in
 * the transaction to the primary (a read of t after writing t → primary; a read not touching t → LB).
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, pgClient } from '../support/clients.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { nodeOfPort, nodesOfStatement, statementLog } from '../support/routing.js';

const cluster = getCluster();
const P = cluster.primaryId;
const S = 1;
const t = `routing_dlbow_${process.pid}`;

type Mode = 'off' | 'transaction' | 'trans_transaction' | 'always' | 'dml_adaptive';
type Label = 'a1' | 'a2' | 'a3' | 'a3t' | 'a4' | 'a4t' | 'a5' | 'a6';

// Expected node of each SELECT (0 = primary, 1 = standby), by the rules above.
const expected: Record<Mode, Record<Label, number>> = {
  off: { a1: S, a2: S, a3: S, a3t: S, a4: S, a4t: S, a5: S, a6: S },
  transaction: { a1: S, a2: S, a3: P, a3t: P, a4: S, a4t: S, a5: S, a6: S },
  trans_transaction: { a1: S, a2: S, a3: P, a3t: P, a4: S, a4t: S, a5: P, a6: S },
  always: { a1: S, a2: S, a3: P, a3t: P, a4: P, a4t: P, a5: P, a6: P },
  dml_adaptive: { a1: S, a2: S, a3: S, a3t: P, a4: S, a4t: S, a5: S, a6: S },
};
const modes = Object.keys(expected) as Mode[];
const proxies = new Map<Mode, ProxyHandle>();

beforeAll(async () => {
  await cluster.psql(P, `DROP TABLE IF EXISTS ${t}; CREATE TABLE ${t} (v int)`);
  await cluster.waitForCatchup(30_000);
  for (const mode of modes) {
    proxies.set(
      mode,
      await startProxy({
        cluster,
        config: {
          backend_weight0: 0,
          backend_weight1: 1,
          backend_weight2: 0,
          disable_load_balance_on_write: mode,
          // pgpool's rules alone: read-your-writes would move a read after a write to the primary
          // whenever the standby has not replayed it yet (read-your-writes.test.ts covers that).
          read_your_writes: 'off',
          log_per_node_statement: true,
        },
      }),
    );
  }
});

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  await Promise.all([...proxies.values()].map((p) => p.stop()));
  await cluster.psql(P, `DROP TABLE IF EXISTS ${t}`).catch(() => undefined);
});

async function runScript(mode: Mode): Promise<Record<Label, { port: number; logged: number[] }>> {
  const proxy = proxies.get(mode) as ProxyHandle;
  const c: pg.Client = await pgClient({ port: proxy.port });
  const got = {} as Record<Label, { port: number; logged: number[] }>;
  const read = async (label: Label, fromTable: boolean): Promise<void> => {
    const sql = fromTable
      ? `SELECT '${label}' AS label, count(*) AS n, inet_server_port() AS port FROM ${t}`
      : `SELECT '${label}' AS label, inet_server_port() AS port`;
    const since = statementLog(proxy).length;
    const r = await c.query(sql);
    got[label] = {
      port: nodeOfPort(cluster, r.rows[0].port as number),
      logged: await nodesOfStatement(proxy, sql, { since }),
    };
  };
  const run = async (sql: string): Promise<void> => {
    await c.query(sql);
  };
  await read('a1', false);
  await run('BEGIN');
  await read('a2', false);
  await run(`INSERT INTO ${t} VALUES (1)`);
  await read('a3', false);
  await read('a3t', true);
  await run('COMMIT');
  await read('a4', false);
  await read('a4t', true);
  await run('BEGIN');
  await read('a5', false);
  await run('COMMIT');
  await run(`INSERT INTO ${t} VALUES (2)`);
  await read('a6', false);
  return got;
}

describe('disable_load_balance_on_write: the script in every mode', () => {
  for (const mode of modes) {
    it(`mode ${mode}`, async () => {
      const got = await runScript(mode);
      const byPort = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.port]));
      const byLog = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.logged]));
      expect(byPort, `node of each SELECT by inet_server_port() in mode ${mode}`).toEqual(expected[mode]);
      expect(byLog, `nodes logged for each SELECT in mode ${mode}`).toEqual(
        Object.fromEntries(Object.entries(expected[mode]).map(([k, n]) => [k, [n]])),
      );
    });
  }
});

describe('dml_adaptive_object_relationship_list', () => {
  it('writing an object sends reads of its dependents (tables and functions) to the primary, others stay balanced', {
    timeout: 120_000,
  }, async () => {
    const dep = `${t}_dep`;
    const other = `${t}_other`;
    const fn = `${t}_fn`;
    await cluster.psql(
      P,
      `DROP TABLE IF EXISTS ${dep}, ${other}; CREATE TABLE ${dep} (v int); CREATE TABLE ${other} (v int);` +
        ` CREATE OR REPLACE FUNCTION ${fn}() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT 1::bigint'`,
    );
    await cluster.waitForCatchup(30_000);
    const proxy = await startProxy({
      cluster,
      config: {
        backend_weight0: 0,
        backend_weight1: 1,
        backend_weight2: 0,
        disable_load_balance_on_write: 'dml_adaptive',
        dml_adaptive_object_relationship_list: `${t}:${dep},${t}:${fn}`,
      },
    });
    let c: pg.Client | undefined;
    try {
      c = await pgClient({ port: proxy.port });
      const client = c;
      const node = async (sql: string): Promise<number> =>
        nodeOfPort(cluster, (await client.query(sql)).rows[0].port as number);
      await c.query('BEGIN');
      expect(await node(`SELECT inet_server_port() AS port FROM ${dep} RIGHT JOIN (SELECT 1) x ON true`)).toBe(S);
      await c.query(`INSERT INTO ${t} VALUES (2)`);
      expect(await node(`SELECT inet_server_port() AS port FROM ${dep} RIGHT JOIN (SELECT 1) x ON true`)).toBe(P);
      expect(await node(`SELECT inet_server_port() AS port, ${fn}()`)).toBe(P);
      expect(await node(`SELECT inet_server_port() AS port FROM ${other} RIGHT JOIN (SELECT 1) x ON true`)).toBe(S);
      await c.query('ROLLBACK');
      expect(await node(`SELECT inet_server_port() AS port FROM ${dep} RIGHT JOIN (SELECT 1) x ON true`)).toBe(S);
    } finally {
      // The client first: pgrelay's SIGTERM is a smart shutdown, which waits for it (10 s, then SIGKILL).
      if (c) await endPg(c);
      expect(await proxy.stop()).toBe(0);
      await cluster
        .psql(P, `DROP TABLE IF EXISTS ${dep}, ${other}; DROP FUNCTION IF EXISTS ${fn}()`)
        .catch(() => undefined);
    }
  });
});
