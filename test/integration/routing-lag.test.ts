/**
 * Replication delay (README "Routing": standbys lagging more than
 * delay_threshold bytes are skipped): a standby whose WAL replay is paused falls
 * behind the primary; once the sr check measures a delay past delay_threshold,
 * its reads go to the primary (prefer_lower_delay_standby = off) or to the
 * least-lagging standby (on); after resuming replay and catching up it gets
 * reads again.
 *
 * Runs its own DevCluster (replay is paused: the shared cluster must not be).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { closeAllClients, endPg, pgClient, queryRows } from '../support/clients.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { nodeOfPort } from '../support/routing.js';
import { pollUntil } from '../support/wait.js';

let cluster: DevCluster;
let direct: ProxyHandle; // weights 0:1:0, prefer_lower_delay_standby off
let prefer: ProxyHandle; // weights 0:1:1, prefer_lower_delay_standby on
let byTime: ProxyHandle; // weights 0:1:0, delay_threshold_by_time 1000
let P = 0;

const THRESHOLD = 256 * 1024;
const lagConf = {
  // Far below the > 1 MB node 1 is made to lag, far above what a streaming standby lags between two sr checks.
  delay_threshold: THRESHOLD,
  sr_check_period: 1,
  sr_check_user: 'postgres',
  log_standby_delay: 'if_over_threshold',
};

beforeAll(async () => {
  cluster = await DevCluster.start({ standbys: 2 });
  P = cluster.primaryId;
  await cluster.waitForStandbys(30_000);
  [direct, prefer, byTime] = await Promise.all([
    startProxy({ cluster, config: { ...lagConf, backend_weight0: 0, backend_weight1: 1, backend_weight2: 0 } }),
    startProxy({
      cluster,
      config: {
        ...lagConf,
        backend_weight0: 0,
        backend_weight1: 1,
        backend_weight2: 1,
        prefer_lower_delay_standby: true,
      },
    }),
    startProxy({
      cluster,
      config: {
        delay_threshold_by_time: 1000,
        sr_check_period: 1,
        sr_check_user: 'postgres',
        backend_weight0: 0,
        backend_weight1: 1,
        backend_weight2: 0,
      },
    }),
  ]);
});

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  await Promise.all([direct?.stop(), prefer?.stop(), byTime?.stop()]);
  await cluster?.stop();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Node that a new session's first read runs on. */
async function readNode(proxy: ProxyHandle): Promise<number> {
  const c = await pgClient({ port: proxy.port });
  try {
    const r = await c.query('SELECT inet_server_port() AS port');
    return nodeOfPort(cluster, r.rows[0].port as number);
  } finally {
    await endPg(c);
  }
}

async function readNodes(proxy: ProxyHandle, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await readNode(proxy));
  return out;
}

/** Poll until `pred` holds for a fresh read (bounded); returns the last node seen and how long it took. */
async function until(
  proxy: ProxyHandle,
  pred: (node: number) => boolean,
  timeoutMs: number,
): Promise<{ node: number; ms: number }> {
  const t0 = Date.now();
  let node = await readNode(proxy);
  while (!pred(node) && Date.now() - t0 < timeoutMs) {
    await sleep(250);
    node = await readNode(proxy);
  }
  return { node, ms: Date.now() - t0 };
}

/** Pause node 1's replay and write a few MB of WAL on the primary that it receives but does not replay. */
async function makeNode1Lag(table: string): Promise<void> {
  await cluster.pauseReplay(1);
  await cluster.psql(
    P,
    `CREATE TABLE ${table} WITH (autovacuum_enabled = off) AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g`,
  );
  const lag = await cluster.psql(
    P,
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication WHERE application_name = 'server1'",
  );
  expect(Number(lag)).toBeGreaterThan(1024 * 1024);
}

function delayLogs(proxy: ProxyHandle): string {
  return proxy
    .logs()
    .split('\n')
    .filter((l) => /behind|status changed|role changed/.test(l))
    .slice(-20)
    .join('\n');
}

describe('delay_threshold', () => {
  // Own limits: 30 + 10 + 60 + 30 s of polls (plus sessions): above the default 60 s test timeout.
  it('a lagging standby stops receiving reads past delay_threshold (→ primary) and gets them back after catching up', {
    timeout: 180_000,
  }, async () => {
    // Before: node 1 takes the reads.
    expect(await readNodes(direct, 3)).toEqual([1, 1, 1]);
    // A session opened before the lag (its LB node is 1).
    const old = await pgClient({ port: direct.port });
    expect(nodeOfPort(cluster, (await old.query('SELECT inet_server_port() AS port')).rows[0].port as number)).toBe(1);

    try {
      await makeNode1Lag('lag_t1');
      // prefer_lower_delay_standby = off: reads go to the primary once the delay is measured (sr_check_period = 1 s).
      const switched = await until(direct, (n) => n === P, 30_000);
      expect(
        switched.node,
        `reads did not leave lagging node 1 within 30 s (sr check never measured the delay?)\n--- pgrelay logs ---\n${direct.logs().slice(-4000)}`,
      ).toBe(P);
      expect(await readNodes(direct, 5)).toEqual([P, P, P, P, P]);
      // The session opened before the lag: its next read goes to the primary too.
      expect(
        nodeOfPort(cluster, (await old.query('SELECT inet_server_port() AS port, 2 AS again')).rows[0].port as number),
      ).toBe(P);
      // log_standby_delay = if_over_threshold: pgpool's message for a standby past delay_threshold.
      await direct.waitForLog(/Replication of node: 1 is behind \d+ bytes from the primary server \(node: 0\)/, 10_000);
    } finally {
      await cluster.resumeReplay(1);
    }

    await cluster.waitForCatchup(60_000);
    const back = await until(direct, (n) => n === 1, 30_000);
    expect(back.node, `reads did not return to node 1 after it caught up\n${delayLogs(direct)}`).toBe(1);
    expect(await readNodes(direct, 3)).toEqual([1, 1, 1]);
    expect(
      nodeOfPort(cluster, (await old.query('SELECT inet_server_port() AS port, 3 AS after')).rows[0].port as number),
    ).toBe(1);
  });

  it("a REPEATABLE READ transaction whose snapshot is its standby's keeps reading there when that standby passes delay_threshold meanwhile (one snapshot, as on a direct connection)", {
    timeout: 180_000,
  }, async () => {
    await cluster.psql(P, 'CREATE TABLE lag_rr (id int); INSERT INTO lag_rr SELECT generate_series(1, 10)');
    await cluster.waitForCatchup(60_000);
    const c = await pgClient({ port: direct.port });
    const read = async () => {
      const r = await c.query('SELECT inet_server_port() AS port, count(*)::int AS n FROM lag_rr');
      return { node: nodeOfPort(cluster, r.rows[0].port as number), n: r.rows[0].n as number };
    };
    try {
      // The table's creation made node 1 lag for a moment: until the sr check (1 s) samples it
      // caught up, reads go to the primary.
      await until(direct, (n) => n === 1, 30_000);
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      expect(await read()).toEqual({ node: 1, n: 10 });
      await makeNode1Lag('lag_t3');
      await cluster.psql(P, 'INSERT INTO lag_rr SELECT generate_series(11, 15)');
      const switched = await until(direct, (n) => n === P, 30_000);
      expect(switched.node, `reads did not leave lagging node 1 within 30 s\n${delayLogs(direct)}`).toBe(P);
      // Other sessions read from the primary now; this transaction's snapshot is node 1's.
      expect(await read()).toEqual({ node: 1, n: 10 });
      await c.query('COMMIT');
      // Its next transaction reads where the others do.
      expect((await read()).node).toBe(P);
    } finally {
      await cluster.resumeReplay(1);
      await endPg(c);
    }
    await cluster.waitForCatchup(60_000);
    await until(direct, (n) => n === 1, 30_000);
  });

  it('prefer_lower_delay_standby = on: reads of a lagging standby go to the least-lagging standby, not the primary', {
    timeout: 180_000,
  }, async () => {
    const before = await readNodes(prefer, 12);
    expect(before).not.toContain(P);
    try {
      const logOffset = prefer.logs().length;
      await makeNode1Lag('lag_t2');
      // Wait until the sr check has measured node 1's new delay (a fresh log line)…
      await pollUntil(
        () => prefer.logs().slice(logOffset),
        (l) => /Replication of node: 1 is behind/.test(l),
        { what: 'the sr check to report node 1 behind (a log line after the lag began)', timeoutMs: 20_000 },
      );
      // …and pgrelay's view has node 1 past the threshold and node 2 below it (node 2 also replayed the
      // big write; its delay must have been measured after that).
      await pollUntil(
        () => queryRows({ port: prefer.port }, 'SHOW pool_nodes'),
        (rows) => Number(rows[1]?.replication_delay) > THRESHOLD && Number(rows[2]?.replication_delay) <= THRESHOLD,
        { what: 'SHOW pool_nodes: node 1 past delay_threshold, node 2 below it', timeoutMs: 20_000, intervalMs: 200 },
      );
      const during = await readNodes(prefer, 12);
      expect(
        during,
        `new sessions' reads while node 1 lags (weights 0:1:1; node 2 does not lag)\n${delayLogs(prefer)}`,
      ).toEqual(Array(12).fill(2));
    } finally {
      await cluster.resumeReplay(1);
    }
    await cluster.waitForCatchup(60_000);
    await until(prefer, (n) => n === 1, 30_000);
    const after = await readNodes(prefer, 16);
    expect(after).not.toContain(P);
    expect(after, 'node 1 gets reads again').toContain(1);
  });
});

describe('delay_threshold_by_time', () => {
  it('a standby whose replay lags more than delay_threshold_by_time ms loses the reads, and gets them back', {
    timeout: 180_000,
  }, async () => {
    // Lag in time, not bytes: node 1 applies WAL 4 s late (recovery_min_apply_delay) while a writer commits
    // every 100 ms, so pg_stat_replication.replay_lag of node 1 is ~4 s and its byte lag stays small.
    const writer = await pgClient({ port: cluster.primary.port });
    let writing = true;
    const loop = (async () => {
      await writer.query('CREATE TABLE IF NOT EXISTS lag_time_t (at timestamptz)');
      while (writing) {
        await writer.query('INSERT INTO lag_time_t VALUES (now())');
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      // Before: node 1 takes the reads. (replay_lag can still show the lag of node 1's paused replay
      // in the tests above for a moment after it caught up: wait until the sr check sees it on time.)
      expect((await until(byTime, (n) => n === 1, 30_000)).node).toBe(1);
      await cluster.psql(1, "ALTER SYSTEM SET recovery_min_apply_delay = '4s'; SELECT pg_reload_conf();");
      const moved = await until(byTime, (n) => n === P, 60_000);
      expect(moved.node, 'reads left node 1 once its replay lag passed 1 s').toBe(P);
      const rows = await queryRows({ port: byTime.port }, 'SHOW pool_nodes');
      // With delay_threshold_by_time the delay is shown in seconds.
      expect(rows[1]?.replication_delay).toMatch(/^\d+\.\d{6} seconds?$/);
      expect(Number.parseFloat(rows[1]!.replication_delay!)).toBeGreaterThan(1);
    } finally {
      writing = false;
      await loop.catch(() => undefined);
      await endPg(writer);
      await cluster.psql(1, 'ALTER SYSTEM RESET recovery_min_apply_delay; SELECT pg_reload_conf();');
    }
    try {
      await cluster.waitForCatchup(60_000);
      const back = await until(byTime, (n) => n === 1, 60_000);
      expect(back.node, 'node 1 gets reads again once it is on time').toBe(1);
    } finally {
      await cluster.psql(P, 'DROP TABLE IF EXISTS lag_time_t').catch(() => undefined);
    }
  });
});
