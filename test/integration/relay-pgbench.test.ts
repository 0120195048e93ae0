/**
 * Foundation: pgbench through pgrelay. -i, then -S and TPC-B-like with each
 * query mode (simple, extended, prepared), several clients, zero failures; and
 * -C (a new connection per transaction) to churn the connection cache.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { expectPgbenchClean, runPgbench, startProxy, type ProxyHandle, type RunResult } from '../support/proxy.js';
import { isAlive } from '../support/raw.js';

const cluster = getCluster();
const db = `relay_pgbench_${process.pid}`;
let proxy: ProxyHandle;

function summary(r: RunResult): string {
  return `exit ${r.code}${r.timedOut ? ' (timed out)' : ''}\n--- stdout ---\n${r.stdout.slice(-3000)}\n--- stderr ---\n${r.stderr.slice(-3000)}\n--- pgrelay ---\n${proxy.logs().slice(-3000)}`;
}

/** Assert a pgbench run finished with transactions done and no failures. */
function expectClean(r: RunResult): number {
  return expectPgbenchClean(r, summary(r));
}

beforeAll(async () => {
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await cluster.psql(cluster.primaryId, `CREATE DATABASE ${db}`);
  proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', num_init_children: 32 } });
});

afterAll(async () => {
  const code = await proxy?.stop();
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  expect(code).toBe(0);
});

describe('pgbench through pgrelay', () => {
  // Own limits: a 60 s pgbench run plus the catch-up.
  it('initialises (-i -s 2) through pgrelay', { timeout: 150_000 }, async () => {
    const r = await runPgbench(['-i', '-s', '2', '-q'], { port: proxy.port, database: db, timeoutMs: 60_000 });
    expect(r.code, summary(r)).toBe(0);
    expect(r.stderr).toMatch(/done in/);
    expect(await cluster.psql(cluster.primaryId, 'SELECT count(*) FROM pgbench_accounts', db)).toBe('200000');
    // Let the standbys catch up, so read-only transactions balanced to them see the tables.
    await cluster.waitForCatchup();
  });

  for (const mode of ['simple', 'extended', 'prepared'] as const) {
    it(`-S (select only) -M ${mode}, 4 clients, no failure`, async () => {
      const r = await runPgbench(['-S', '-M', mode, '-c', '4', '-j', '2', '-t', '250', '-n'], {
        port: proxy.port,
        database: db,
        timeoutMs: 30_000,
      });
      expectClean(r);
    });

    it(`TPC-B-like -M ${mode}, 4 clients, no failure`, async () => {
      const before = Number(await cluster.psql(cluster.primaryId, 'SELECT count(*) FROM pgbench_history', db));
      const r = await runPgbench(['-M', mode, '-c', '4', '-j', '2', '-t', '100', '-n'], {
        port: proxy.port,
        database: db,
        timeoutMs: 30_000,
      });
      const n = expectClean(r);
      const after = Number(await cluster.psql(cluster.primaryId, 'SELECT count(*) FROM pgbench_history', db));
      // Every transaction inserted one history row on the primary.
      expect(after - before).toBe(n);
    });
  }

  it('-S -C (a new connection per transaction) -M extended, 4 clients, no failure', { timeout: 120_000 }, async () => {
    const r = await runPgbench(['-S', '-C', '-M', 'extended', '-c', '4', '-j', '2', '-t', '100', '-n'], {
      port: proxy.port,
      database: db,
      timeoutMs: 60_000,
    });
    expect(expectClean(r)).toBe(400);
  });

  it('pgrelay is still running', () => {
    expect(isAlive(proxy.pid)).toBe(true);
  });
});
