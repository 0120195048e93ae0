/**
 * pgrelay (child process) in front of its own DevCluster: a stopped standby is
 * marked down and comes back with auto_failback; a killed primary fails over
 * with examples/failover.sh + examples/follow_primary.sh, the new primary is
 * found, the scripts got the right placeholders, the other standby follows and
 * is re-attached, and a write through pgrelay succeeds. Prints the time from the
 * kill to the first successful write.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { failoverConfig } from '../support/failover.js';
import { runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';

type LogLine = Record<string, unknown>;

/** Every JSON line pgrelay wrote (log_destination may be stderr or stdout). */
function jsonLines(proxy: ProxyHandle): LogLine[] {
  const res: LogLine[] = [];
  for (const l of proxy.logs().split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      res.push(JSON.parse(l) as LogLine);
    } catch {
      // partial line
    }
  }
  return res;
}

async function waitForJson(
  proxy: ProxyHandle,
  pred: (l: LogLine) => boolean,
  timeoutMs: number,
  what: string,
): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = jsonLines(proxy).find(pred);
    if (hit) return hit;
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}\n--- logs ---\n${proxy.logs().slice(-6000)}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

const statusChange = (node: number, to: string) => (l: LogLine) =>
  l.msg === 'node status changed' && l.node === node && l.to === to;

describe('failover through pgrelay (own DevCluster)', () => {
  let cluster: DevCluster;
  let proxy: ProxyHandle;
  let work: string;
  const failoverRecord = (): string => path.join(work, 'failover.args');
  const followRecord = (): string => path.join(work, 'follow.args');

  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 2 });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-fo-'));
    fs.chmodSync(work, 0o777);
    proxy = await startProxy({
      cluster,
      config: {
        ...failoverConfig(),
      },
      env: {
        PGRELAY_FAILOVER_RECORD: failoverRecord(),
        PGRELAY_FOLLOW_RECORD: followRecord(),
        PG_BIN: cluster.pgBin,
        PGUSER: 'postgres',
      },
    });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 10_000, 'primary found');
  });

  afterAll(async () => {
    await proxy?.stop();
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('a stopped standby is marked down, and comes back with auto_failback after a restart', async () => {
    const t0 = Date.now();
    await cluster.stopNode(2, 'immediate');
    // period 1 s × (max_retries 1 + 1) with 1 s retry delay + margin
    const down = await waitForJson(proxy, statusChange(2, 'down'), 10_000, 'node 2 down');
    process.stderr.write(`[failover.test] standby down after ${Date.now() - t0} ms\n`);
    expect(down).toMatchObject({ from: 'up', to: 'down' });
    expect(String(down.reason)).toMatch(/health check failed/);
    // A standby failure runs failover_command too (pgpool does); the script does nothing. It runs
    // after the node is marked down: wait for it to finish.
    await waitForJson(
      proxy,
      (l) => l.msg === 'failover_command finished' && l.node === 2,
      10_000,
      'failover_command for node 2',
    );
    expect(fs.readFileSync(failoverRecord(), 'utf8').trim().split('\n')[0]?.split('|').slice(0, 2)).toEqual([
      '2',
      '127.0.0.1',
    ]);
    fs.rmSync(failoverRecord());

    await cluster.startNode(2);
    const back = await waitForJson(proxy, statusChange(2, 'waiting'), 30_000, 'node 2 back');
    expect(String(back.reason)).toMatch(/auto_failback/);
    // pgpool_status follows.
    expect(fs.readFileSync(path.join(proxy.dir, 'pgpool_status'), 'utf8')).toBe('up\nup\nup\n');
  });

  it('kills the primary: failover.sh promotes node 1, node 2 follows, a write through pgrelay succeeds', async () => {
    const w = await runPsql(
      ['-At', '-v', 'ON_ERROR_STOP=1', '-c', 'CREATE TABLE fo_t (x int); INSERT INTO fo_t VALUES (0)'],
      { port: proxy.port },
    );
    expect(w.stderr).toBe('');
    expect(w.code).toBe(0);
    await cluster.waitForCatchup(30_000);

    const t0 = Date.now();
    await cluster.stopNode(0, 'immediate');
    const killedAt = Date.now();

    // First successful write through pgrelay after the kill (new connections each try).
    let firstWriteMs = -1;
    let attempts = 0;
    let last = '';
    while (Date.now() - killedAt < 30_000) {
      attempts++;
      const r = await runPsql(
        ['-At', '-v', 'ON_ERROR_STOP=1', '-c', 'INSERT INTO fo_t VALUES (1) RETURNING inet_server_port()'],
        { port: proxy.port, timeoutMs: 15_000 },
      );
      if (r.code === 0) {
        firstWriteMs = Date.now() - killedAt;
        expect(r.stdout.trim().split('\n')[0]).toBe(String(cluster.node(1).port));
        break;
      }
      last = r.stderr;
      await new Promise((res) => setTimeout(res, 200));
    }
    process.stderr.write(
      `[failover.test] primary killed (pg_ctl stop -m immediate took ${killedAt - t0} ms); first successful write through pgrelay ${firstWriteMs} ms after the kill (${attempts} attempts)\n`,
    );
    expect(firstWriteMs, `no write succeeded: ${last}\n${proxy.logs().slice(-5000)}`).toBeGreaterThan(0);

    const changed = await waitForJson(
      proxy,
      (l) => l.msg === 'primary node changed' && l.to === 1,
      5000,
      'new primary log',
    );
    expect(changed.reason).toBe('primary search after failover');
    await waitForJson(proxy, statusChange(0, 'down'), 1000, 'node 0 down');

    // failover.sh got the placeholders: failed 0, new main 1, old main 0, old primary 0.
    const n0 = cluster.node(0);
    const n1 = cluster.node(1);
    const n2 = cluster.node(2);
    const fo = fs.readFileSync(failoverRecord(), 'utf8').trim().split('\n');
    expect(fo).toEqual([
      [0, n0.host, n0.port, n0.dataDir, 1, n1.host, 0, 0, n1.port, n1.dataDir, n0.host, n0.port].join('|'),
    ]);

    // follow_primary.sh once per node but the new primary: node 0 (not running, skipped) and node 2.
    await waitForJson(
      proxy,
      (l) => l.msg === 'follow_primary_command finished' && l.node === 2,
      30_000,
      'follow_primary_command on node 2',
    );
    const follow = fs.readFileSync(followRecord(), 'utf8').trim().split('\n').sort();
    expect(follow).toEqual([
      [0, n0.host, n0.port, n0.dataDir, 1, n1.host, 0, 0, n1.port, n1.dataDir, n0.host, n0.port].join('|'),
      [2, n2.host, n2.port, n2.dataDir, 1, n1.host, 0, 0, n1.port, n1.dataDir, n0.host, n0.port].join('|'),
    ]);
    // Node 2 was detached for the command and comes back once it streams from node 1.
    await waitForJson(
      proxy,
      (l) => statusChange(2, 'down')(l) && /follow_primary_command/.test(String(l.reason)),
      1000,
      'node 2 detached for follow',
    );
    const back = await waitForJson(
      proxy,
      (l) => statusChange(2, 'waiting')(l) && /new primary/.test(String(l.reason)),
      30_000,
      'node 2 re-attached',
    );
    expect(back).toBeTruthy();
    expect(await cluster.psql(1, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")).toBe(
      'server2',
    );
    expect(fs.readFileSync(path.join(proxy.dir, 'pgpool_status'), 'utf8')).toBe('down\nup\nup\n');
    expect(await cluster.psql(1, 'SELECT count(*) FROM fo_t')).toBe('2');
  }, 150_000);
});
