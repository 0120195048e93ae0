/**
 * Load balancing under load (README "Routing": each session's load-balance node is
 * drawn by weight among the live nodes): reads of 200 sessions spread by the
 * configured weights; pgbench -S and TPC-B-like through pgrelay in the three
 * protocol modes with zero failures; writes never reach a standby.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, pgClient } from '../support/clients.js';
import { pgbenchCounts, runPgbench, startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  chiSquareP,
  countPerNode,
  logBarrier,
  nodeOfPort,
  settledLogLength,
  statementLog,
} from '../support/routing.js';

const cluster = getCluster();
const P = cluster.primaryId;
const db = `routing_bench_${process.pid}`;
let weighted: ProxyHandle;
let lb: ProxyHandle;

beforeAll(async () => {
  await cluster.psql(P, `DROP DATABASE IF EXISTS ${db}`);
  await cluster.psql(P, `CREATE DATABASE ${db}`);
  // Initialize pgbench directly on the primary (scale 1).
  const init = await runPgbench(['-i', '-q', '-s', '1', db], { port: cluster.primary.port, timeoutMs: 60_000 });
  expect(init.code, init.stderr).toBe(0);
  await cluster.waitForCatchup(30_000);
  [weighted, lb] = await Promise.all([
    startProxy({
      cluster,
      config: { backend_weight0: 1, backend_weight1: 2, backend_weight2: 1, log_per_node_statement: true },
    }),
    // Default config (load_balance_mode on, weights 1:1:1), statements logged per node.
    startProxy({ cluster, config: { log_per_node_statement: true } }),
  ]);
});

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  await Promise.all([weighted?.stop(), lb?.stop()]);
  await cluster.psql(P, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
});

describe('weights', () => {
  it('reads of 200 sessions spread close to weights 1:2:1 (chi-square p > 0.001)', async () => {
    const sessions = 200;
    const since = statementLog(weighted).length;
    const counts = [0, 0, 0];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < sessions) {
        next++;
        const c = await pgClient({ port: weighted.port });
        const r = await c.query('SELECT inet_server_port() AS port');
        counts[nodeOfPort(cluster, r.rows[0].port as number)]++;
        await endPg(c);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(counts.reduce((a, b) => a + b, 0)).toBe(sessions);
    const { chi2, p } = chiSquareP(counts, [1, 2, 1]);
    expect(
      p,
      `counts per node ${JSON.stringify(counts)} (expected 50/100/50), chi2 = ${chi2.toFixed(2)}`,
    ).toBeGreaterThan(0.001);
    // Independent check: pgrelay's own per-node statement log agrees with inet_server_port().
    const logged = countPerNode(
      statementLog(weighted).slice(since, await logBarrier(weighted)),
      (e) => e.statement === 'SELECT inet_server_port() AS port',
    );
    expect([logged[0] ?? 0, logged[1] ?? 0, logged[2] ?? 0]).toEqual(counts);
  });
});

describe('pgbench through pgrelay (load balancing on, default weights)', () => {
  const pgbenchWrites = /^\s*(UPDATE|INSERT)\b/i;
  for (const mode of ['simple', 'extended', 'prepared'] as const) {
    // Own limits: two 30 s pgbench runs and three log barriers.
    it(`-M ${mode}: -S and TPC-B-like, 4 clients, 150 and 50 transactions each: zero errors, writes only on the primary`, {
      timeout: 180_000,
    }, async () => {
      const since = await settledLogLength(lb);
      const ro = await runPgbench(['-n', '-S', '-M', mode, '-c', '4', '-j', '2', '-t', '150', db], {
        port: lb.port,
        timeoutMs: 30_000,
      });
      expect(ro.code, `pgbench -S -M ${mode}\n${ro.stdout}\n${ro.stderr}`).toBe(0);
      expect(pgbenchCounts(ro.stdout).failed, ro.stdout).toBe(0);
      expect(pgbenchCounts(ro.stdout).processed).toBeGreaterThan(0);
      expect(ro.stderr).not.toMatch(/ERROR|FATAL|read-only transaction/);
      // The log lines of the -S run end before this barrier (see logBarrier): the TPC-B run's come after it.
      const midpoint = await settledLogLength(lb);

      const rw = await runPgbench(['-n', '-M', mode, '-c', '4', '-j', '2', '-t', '50', db], {
        port: lb.port,
        timeoutMs: 30_000,
      });
      expect(rw.code, `pgbench TPC-B -M ${mode}\n${rw.stdout}\n${rw.stderr}`).toBe(0);
      expect(pgbenchCounts(rw.stdout).failed, rw.stdout).toBe(0);
      expect(pgbenchCounts(rw.stdout).processed).toBeGreaterThan(0);
      expect(rw.stderr).not.toMatch(/ERROR|FATAL|cannot execute (INSERT|UPDATE) in a read-only transaction/);

      const end = await settledLogLength(lb);
      const all = statementLog(lb).slice(0, end);
      const roLog = all.slice(since, midpoint);
      const rwLog = all.slice(midpoint);
      // -S reads were balanced: more than one node answered SELECT abalance (weights 1:1:1, 4 sessions... at least
      // the statements were logged); no writes at all.
      expect(roLog.filter((e) => e.statement.includes('SELECT abalance')).length).toBeGreaterThan(0);
      expect(roLog.filter((e) => pgbenchWrites.test(e.statement))).toEqual([]);
      // TPC-B: every UPDATE/INSERT on the primary, and the SELECT after the UPDATE in the same
      // transaction too (disable_load_balance_on_write = transaction).
      const writes = rwLog.filter((e) => pgbenchWrites.test(e.statement));
      expect(writes.length).toBeGreaterThan(0);
      expect(countPerNode(writes)).toEqual({ [P]: writes.length });
      const inTxReads = rwLog.filter((e) => e.statement.includes('SELECT abalance'));
      expect(inTxReads.length).toBeGreaterThan(0);
      const offIdx = rwLog.flatMap((e, i) => (e.statement.includes('SELECT abalance') && e.node !== P ? [i] : []));
      expect(
        countPerNode(inTxReads),
        `TPC-B SELECT abalance (after UPDATE in the tx) on a standby at rwLog positions ${offIdx.slice(0, 10).join(',')}… of ${rwLog.length}: ${JSON.stringify(rwLog.slice(Math.max(0, (offIdx[0] ?? 0) - 3), (offIdx[0] ?? 0) + 3))}`,
      ).toEqual({ [P]: inTxReads.length });
    });
  }

  it('-S reads are spread over the nodes across sessions', async () => {
    // Across the three -S runs above (12 sessions on weights 1:1:1) several nodes took reads;
    // a probability of 3 * (1/3)^11 that all 12 picked one node.
    const reads = statementLog(lb).filter((e) => e.statement.includes('SELECT abalance'));
    expect(Object.keys(countPerNode(reads)).length).toBeGreaterThan(1);
  });
});
