/**
 * pool_mode = transaction (issue 14): clients hold backend connections only for a
 * transaction. Many pgbench clients through a small pool (server connections per node
 * bounded, read in pg_stat_activity), prepared and extended protocols, node-postgres
 * named statements and postgres.js, SET replay, pinning, cancel, query_wait_timeout.
 */
import net from 'node:net';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeAllClients, endPg, endSql, pgClient, queryRows, sqlClient } from '../support/clients.js';
import { getCluster } from '../support/cluster.js';
import { runPgbench, startProxy, type ProxyHandle, type RunResult } from '../support/proxy.js';
import { cancelRequest } from '../support/raw.js';

const cluster = getCluster();
const db = `pool_tx_${process.pid}`;
/** pool 20: the load tests. */
let big: ProxyHandle;
/** pool 1, query_wait_timeout 1 s: sharing one connection is certain; pinning and waiting are seen. */
let tiny: ProxyHandle;

function summary(p: ProxyHandle, r: RunResult): string {
  return `exit ${r.code}${r.timedOut ? ' (timed out)' : ''}\n--- stdout ---\n${r.stdout.slice(-2000)}\n--- stderr ---\n${r.stderr.slice(-3000)}\n--- pgrelay ---\n${p.logs().slice(-3000)}`;
}

function expectClean(p: ProxyHandle, r: RunResult): number {
  expect(r.code, summary(p, r)).toBe(0);
  const processed = /number of transactions actually processed: (\d+)/.exec(r.stdout);
  expect(processed, summary(p, r)).not.toBeNull();
  const failed = /number of failed transactions: (\d+)/.exec(r.stdout);
  expect(Number(failed?.[1] ?? -1), summary(p, r)).toBe(0);
  expect(r.stderr, summary(p, r)).not.toMatch(/error|abort|FATAL/i);
  return Number(processed?.[1]);
}

/** Most client backends of `application_name` seen at once on each node while `during` runs (pg_stat_activity, every 50 ms). */
async function peakBackends(application: string, during: Promise<unknown>): Promise<number[]> {
  const watchers = await Promise.all(
    cluster.nodes.map(async (n) => {
      const c = new pg.Client({
        host: n.host,
        port: n.port,
        user: 'postgres',
        password: cluster.superuserPassword,
        database: 'postgres',
      });
      c.on('error', () => undefined);
      await c.connect();
      return c;
    }),
  );
  const peaks = cluster.nodes.map(() => 0);
  let done = false;
  const watch = (async () => {
    while (!done) {
      await Promise.all(
        watchers.map(async (c, i) => {
          const r = await c.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND backend_type = 'client backend'",
            [db, application],
          );
          peaks[i] = Math.max(peaks[i], r.rows[0].n as number);
        }),
      );
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  try {
    await during;
  } finally {
    done = true;
    await watch;
    await Promise.all(watchers.map((c) => c.end().catch(() => undefined)));
  }
  return peaks;
}

beforeAll(async () => {
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await cluster.psql(cluster.primaryId, `CREATE DATABASE ${db}`);
  const primary = cluster.node(cluster.primaryId);
  const r = await runPgbench(['-i', '-s', '1', '-q'], {
    host: primary.host,
    port: primary.port,
    password: cluster.superuserPassword,
    database: db,
    timeoutMs: 60_000,
  });
  expect(r.code, r.stderr).toBe(0);
  await cluster.waitForCatchup();
  const common = { log_min_messages: 'warning', pool_mode: 'transaction', max_client_conn: 1200 };
  big = await startProxy({ cluster, config: { ...common, default_pool_size: 20 } });
  tiny = await startProxy({ cluster, config: { ...common, default_pool_size: 1, query_wait_timeout: 1 } });
}, 120_000);

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  const codes = await Promise.all([big?.stop(), tiny?.stop()]);
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  expect(codes).toEqual([0, 0]);
});

describe('pool_mode = transaction', () => {
  it('pgbench -S with 400 clients through default_pool_size = 20: at most 20 server connections per node, 0 errors', {
    timeout: 90_000,
  }, async () => {
    const run = runPgbench(['-S', '-c', '400', '-j', '4', '-T', '4', '-n'], {
      port: big.port,
      database: db,
      timeoutMs: 60_000,
    });
    const peaks = await peakBackends('pgrelay-test', run);
    const r = await run;
    expectClean(big, r);
    for (const p of peaks) expect(p).toBeLessThanOrEqual(20);
    expect(Math.max(...peaks)).toBeGreaterThan(0);
  });

  for (const mode of ['prepared', 'extended'] as const) {
    it(`pgbench -M ${mode} (TPC-B-like) with 64 clients: 0 errors`, { timeout: 60_000 }, async () => {
      const r = await runPgbench(['-M', mode, '-c', '64', '-j', '4', '-T', '3', '-n'], {
        port: big.port,
        database: db,
        timeoutMs: 45_000,
      });
      expectClean(big, r);
    });
  }
});
