/**
 * SHOW pool_nodes replication_delay (pgpool 4.3's format: an integer number of
 * WAL bytes behind the primary, 0 for the primary), SHOW pool_status's
 * standby_delayN and the pgrelay_replication_delay_bytes gauge, with a standby whose replay
 * is paused. Own DevCluster (primary + 1 standby): pausing replay would
 * disturb the other test files on the shared cluster.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster, freePort } from '../../dev/devcluster.js';
import { runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface NodeRow {
  node_id: string;
  role: string;
  replication_delay: string;
  replication_state: string;
  replication_sync_state: string;
}

describe('replication_delay with a paused standby (own DevCluster)', () => {
  let cluster: DevCluster;
  let proxy: ProxyHandle;
  let metricsPort: number;

  async function poolNodes(): Promise<NodeRow[]> {
    const r = await runPsql(['--csv', '-v', 'ON_ERROR_STOP=1', '-c', 'SHOW pool_nodes'], {
      port: proxy.port,
      timeoutMs: 15_000,
    });
    expect(r.stderr).toBe('');
    const [head, ...rows] = r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(','));
    return rows.map((v) => Object.fromEntries(head!.map((h, i) => [h, v[i] ?? ''])) as unknown as NodeRow);
  }

  async function waitForNode1(pred: (r: NodeRow) => boolean, what: string, timeoutMs = 30_000): Promise<NodeRow> {
    const deadline = Date.now() + timeoutMs;
    let last: NodeRow | undefined;
    for (;;) {
      last = (await poolNodes())[1];
      if (last && pred(last)) return last;
      if (Date.now() > deadline)
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last row: ${JSON.stringify(last)}`);
      await sleep(500);
    }
  }

  async function delayGauge(node: string): Promise<number | undefined> {
    const text = await (
      await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(10_000) })
    ).text();
    const m = new RegExp(`^pgrelay_replication_delay_bytes\\{node="${node}"\\} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  }

  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 1 });
    metricsPort = await freePort();
    proxy = await startProxy({
      cluster,
      config: {
        sr_check_period: 1,
        sr_check_user: 'postgres',
        health_check_period: 1,
        health_check_user: 'postgres',
        metrics_port: metricsPort,
      },
    });
  });

  afterAll(async () => {
    await proxy?.stop();
    await cluster?.stop();
  });

  // Own limits: three 30 s polls and a 60 s write: above the default 60 s test timeout.
  it('grows while replay is paused and a few MB are written on the primary, returns to 0 after resume', {
    timeout: 180_000,
  }, async () => {
    const before = await waitForNode1(
      (r) => r.replication_state === 'streaming',
      'the sr check to see the standby streaming',
    );
    expect(before.role).toBe('standby');
    expect(before.replication_sync_state).toBe('async');
    expect(before.replication_delay).toMatch(/^\d+$/);
    const rows = await poolNodes();
    expect(rows[0]!.replication_delay, 'primary: 0').toBe('0');
    expect(rows[0]!.replication_state, 'primary: empty').toBe('');

    await cluster.pauseReplay(1);
    try {
      await cluster.psql(
        cluster.primaryId,
        `CREATE TABLE admin_delay_t AS SELECT g, repeat(md5(g::text), 16) AS pad FROM generate_series(1, 10000) g; SELECT pg_switch_wal();`,
        'postgres',
        60_000,
      );
      const lagging = await waitForNode1((r) => Number(r.replication_delay) > 2_000_000, 'replication_delay > 2 MB');
      expect(lagging.replication_delay, 'an integer number of bytes (pgpool 4.3 format)').toMatch(/^\d+$/);
      expect(lagging.replication_state, 'WAL is still streamed while replay is paused').toBe('streaming');
      const g = await delayGauge('1');
      expect(g, 'pgrelay_replication_delay_bytes{node="1"}').toBeGreaterThan(2_000_000);
      expect(await delayGauge('0'), 'pgrelay_replication_delay_bytes{node="0"} (primary)').toBe(0);
      // SHOW pool_status (pgpool's legacy format) carries the same delay as standby_delay1.
      const status = await runPsql(['--csv', '-v', 'ON_ERROR_STOP=1', '-c', 'SHOW pool_status'], {
        port: proxy.port,
        timeoutMs: 15_000,
      });
      expect(status.stderr).toBe('');
      const standbyDelay = /^standby_delay1,(\d+),/m.exec(status.stdout);
      expect(standbyDelay, `standby_delay1 in SHOW pool_status:\n${status.stdout}`).not.toBeNull();
      expect(Number(standbyDelay![1]), 'standby_delay1').toBeGreaterThan(2_000_000);
      expect(/^standby_delay0,(\d+),/m.exec(status.stdout)?.[1], 'standby_delay0 (primary)').toBe('0');
    } finally {
      await cluster.resumeReplay(1);
    }
    const caughtUp = await waitForNode1((r) => r.replication_delay === '0', 'replication_delay back to 0 after resume');
    expect(caughtUp.replication_state).toBe('streaming');
  });
});
