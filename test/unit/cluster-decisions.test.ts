/**
 * The cluster code's decisions without PostgreSQL: primary search, failover
 * plan, follow_primary targets, the sr check's readings (delay, false primaries,
 * late primary, auto_failback), backend-error settings, and the task queue.
 */
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { srQueryTimeoutMs } from '../../src/cluster/check-access.js';
import { followPrimaryTargets, planFailover } from '../../src/cluster/failover-plan.js';
import { backendErrorSetting } from '../../src/cluster/health-monitor.js';
import { ClusterManager } from '../../src/cluster/manager.js';
import { NodeMarks } from '../../src/cluster/node-marks.js';
import { NodeTable, type NodeState, type NodeStatus } from '../../src/cluster/nodes.js';
import { choosePrimary } from '../../src/cluster/primary-search.js';
import {
  falsePrimaries,
  latePrimary,
  mayFailBack,
  type NodeSample,
  noAnswer,
  nodeSample,
  nodesNotInRecovery,
  standbyDelayLog,
  standbyReplication,
} from '../../src/cluster/replication.js';
import { ClusterTasks } from '../../src/cluster/tasks.js';
import { defaultConfig } from '../../src/config/defaults.js';

function node(id: number, status: NodeStatus = 'up', extra: Partial<NodeState['config']> = {}): NodeState {
  const config = {
    id,
    hostname: `h${id}`,
    port: 5432,
    weight: 1,
    data_directory: '',
    allow_to_failover: true,
    always_primary: false,
    application_name: '',
    ...extra,
  };
  return {
    id,
    host: config.hostname,
    port: config.port,
    weight: 1,
    status,
    role: 'standby',
    lastStatusChange: 0,
    delayBytes: 0,
    delaySeconds: 0,
    replicationState: '',
    replicationSyncState: '',
    replayPosition: 0n,
    draining: false,
    config,
  };
}

const primarySample: NodeSample = nodeSample({ rec: 'f', lsn: '0/3000000' });
function standbyOf(up: NodeState, lsn = '0/2000000'): NodeSample {
  return nodeSample({ rec: 't', lsn, wr_status: 'streaming', wr_host: up.host, wr_port: String(up.port) });
}

describe('choosePrimary', () => {
  it('takes the first live node not in recovery and lists every claimant', () => {
    const [a, b, c] = [node(0), node(1), node(2)];
    const r = choosePrimary(undefined, [
      { node: a, ok: true, inRecovery: true },
      { node: b, ok: true, inRecovery: false },
      { node: c, ok: true, inRecovery: false },
    ]);
    expect(r).toEqual({ primary: 1, candidates: [1, 2] });
  });

  it('ignores nodes that did not answer or are no longer live; ALWAYS_PRIMARY wins', () => {
    const down = node(0, 'down');
    const answers = [
      { node: down, ok: true, inRecovery: false },
      { node: node(1), ok: false, inRecovery: true },
    ];
    expect(choosePrimary(undefined, answers).primary).toBe(-1);
    expect(choosePrimary(node(1), answers).primary).toBe(1);
  });
});

describe('planFailover / followPrimaryTargets', () => {
  const nodes = [node(0), node(1), node(2, 'down'), node(3, 'unused')];

  it('only live nodes fail; the primary failing needs a new one; %m is the lowest remaining live node', () => {
    expect(planFailover(nodes, 0, [0, 2, 9], {})).toEqual({
      failed: [0],
      oldPrimary: 0,
      oldMain: 0,
      newMain: 1,
      primaryFailed: true,
    });
    expect(planFailover(nodes, 0, [1], {})).toMatchObject({ failed: [1], primaryFailed: false, newMain: 0 });
  });

  it('a promote always replaces the primary and names the promoted node as %m', () => {
    expect(planFailover(nodes, 0, [], { promoteId: 1, fixedPrimary: 1 })).toMatchObject({
      failed: [],
      primaryFailed: true,
      newMain: 1,
    });
  });

  it('follow_primary_command runs for every used node but the new primary; live ones are detached first', () => {
    expect(followPrimaryTargets(nodes, 1)).toEqual({ follow: [0, 2], detach: [0] });
  });
});

describe('sr check readings', () => {
  it('samples: pg_is_in_recovery, LSN and WAL receiver; no answer is not ok', () => {
    expect(nodeSample({ rec: 't', lsn: '0/1', wr_status: 'streaming', wr_host: 'h0', wr_port: '5432' })).toEqual({
      ok: true,
      inRecovery: true,
      lsn: '0/1',
      wrStatus: 'streaming',
      wrHost: 'h0',
      wrPort: 5432,
    });
    expect(nodeSample(undefined).inRecovery).toBeNull();
    expect(noAnswer().ok).toBe(false);
  });

  it('standby delay in bytes from the LSNs, state and seconds from pg_stat_replication', () => {
    const s = node(1, 'up', { application_name: 'node1' });
    const repl = [{ application_name: 'node1', state: 'streaming', sync_state: 'async', lag_us: '1500000' }];
    expect(standbyReplication(s, standbyOf(node(0)), 0x3000000n, repl)).toEqual({
      replicationState: 'streaming',
      replicationSyncState: 'async',
      delayBytes: 0x1000000,
      delaySeconds: 1.5,
    });
    // Ahead of the primary's last reading: no negative delay. Down: the byte delay is kept as it was.
    expect(standbyReplication(node(2), standbyOf(node(0), '0/4000000'), 0x3000000n, []).delayBytes).toBe(0);
    expect(standbyReplication(node(2, 'down'), standbyOf(node(0)), 0x3000000n, [])).toEqual({
      replicationState: '',
      replicationSyncState: '',
    });
  });

  it('log_standby_delay: none, if_over_threshold, always (not when there is no delay)', () => {
    const cfg: Parameters<typeof standbyDelayLog>[2] = {
      log_standby_delay: 'if_over_threshold',
      delay_threshold: 100,
      delay_threshold_by_time: 0,
    };
    const n = { id: 1, delayBytes: 150, delaySeconds: 0 };
    expect(standbyDelayLog(n, 0, cfg)?.message).toBe(
      'Replication of node: 1 is behind 150 bytes from the primary server (node: 0)',
    );
    expect(standbyDelayLog({ ...n, delayBytes: 50 }, 0, cfg)).toBeUndefined();
    expect(standbyDelayLog({ ...n, delayBytes: 50 }, 0, { ...cfg, log_standby_delay: 'always' })).toBeDefined();
    expect(standbyDelayLog({ ...n, delayBytes: 0 }, 0, { ...cfg, log_standby_delay: 'always' })).toBeUndefined();
    expect(standbyDelayLog(n, 0, { ...cfg, log_standby_delay: 'none' })).toBeUndefined();
    const byTime = { ...cfg, delay_threshold_by_time: 1000 };
    expect(standbyDelayLog({ ...n, delaySeconds: 2 }, 0, byTime)?.message).toBe(
      'Replication of node: 1 is behind 2.000000 seconds from the primary server (node: 0)',
    );
  });

  it('false primaries: keep the node the standbys stream from; ambiguous when they follow several', () => {
    const [a, b, c, d] = [node(0), node(1), node(2), node(3)];
    const nodes = [a, b, c, d];
    const one = new Map([
      [0, primarySample],
      [1, primarySample],
      [2, standbyOf(b)],
    ]);
    expect(nodesNotInRecovery(nodes, one).map((n) => n.id)).toEqual([0, 1]);
    expect(falsePrimaries(nodes, [a, b], one)).toEqual({ keep: 1, falsePrimaries: [0] });
    expect(falsePrimaries(nodes, [a, b], new Map([[0, primarySample]]))).toEqual({ keep: 0, falsePrimaries: [1] });
    const split = new Map([...one, [3, standbyOf(a)]]);
    expect(falsePrimaries(nodes, [a, b], split)).toEqual({
      votes: new Map([
        [1, 1],
        [0, 1],
      ]),
    });
    const always = node(0, 'up', { always_primary: true });
    expect(falsePrimaries(nodes, [always, b], one)).toEqual({ keep: 1, falsePrimaries: [] });
  });

  it('late primary: a live ALWAYS_PRIMARY node, else the only node not in recovery', () => {
    const [a, b] = [node(0), node(1)];
    expect(latePrimary([a, b], [b])?.id).toBe(1);
    expect(latePrimary([a, b], [a, b])).toBeUndefined();
    expect(latePrimary([node(0, 'up', { always_primary: true }), b], [b])?.id).toBe(0);
  });

  it('auto_failback: a down standby streaming from the primary, not detached by an operator, not too soon', () => {
    const primary = node(0);
    const down = node(1, 'down');
    const marks = new NodeMarks();
    expect(mayFailBack(down, standbyOf(primary), primary, marks, 60, 1_000_000)).toBe(true);
    expect(mayFailBack(down, standbyOf(node(2)), primary, marks, 60, 1_000_000)).toBe(false);
    expect(mayFailBack(down, primarySample, primary, marks, 60, 1_000_000)).toBe(false);
    expect(mayFailBack(node(1), standbyOf(primary), primary, marks, 60, 1_000_000)).toBe(false);
    const viaPrimary = { ...node(1, 'down', { application_name: 'n1' }), replicationState: 'streaming' };
    expect(mayFailBack(viaPrimary, noAnswer(), primary, marks, 60, 1_000_000)).toBe(true);
    marks.lastFailback.set(1, 990_000);
    expect(mayFailBack(down, standbyOf(primary), primary, marks, 60, 1_000_000)).toBe(false);
    expect(mayFailBack(down, standbyOf(primary), primary, marks, 10, 1_000_000)).toBe(true);
    marks.operatorDetached.add(1);
    expect(mayFailBack(down, standbyOf(primary), primary, marks, 10, 1_000_000)).toBe(false);
  });
});

describe('cluster settings', () => {
  it('backend errors: shutdown follows failover_on_backend_shutdown, the others failover_on_backend_error', () => {
    expect(backendErrorSetting('shutdown')).toBe('failover_on_backend_shutdown');
    expect(backendErrorSetting('io')).toBe('failover_on_backend_error');
    expect(backendErrorSetting('connect')).toBe('failover_on_backend_error');
  });

  it('sr check and primary search queries wait connect_timeout, within 1..10 s', () => {
    const cfg = defaultConfig();
    expect(srQueryTimeoutMs({ ...cfg, connect_timeout: 2000 })).toBe(2000);
    expect(srQueryTimeoutMs({ ...cfg, connect_timeout: 0 })).toBe(10_000);
    expect(srQueryTimeoutMs({ ...cfg, connect_timeout: 50 })).toBe(1000);
    expect(srQueryTimeoutMs({ ...cfg, connect_timeout: 60_000 })).toBe(10_000);
  });
});

describe('ClusterTasks', () => {
  const log = pino({ level: 'silent' });

  it('serial work runs one at a time, in order, and a failure does not block the queue', async () => {
    const t = new ClusterTasks(log);
    const order: string[] = [];
    const a = t.serial(async () => {
      await new Promise((r) => setTimeout(r, 20));
      order.push('a');
    });
    const b = t.serial(async () => {
      order.push('b');
      throw new Error('b failed');
    });
    const c = t.serial(async () => order.push('c'));
    await a;
    await expect(b).rejects.toThrow('b failed');
    await c;
    expect(order).toEqual(['a', 'b', 'c']);
  });

  it('halt wakes sleepers at once and later sleeps do not wait', async () => {
    const t = new ClusterTasks(log);
    const t0 = Date.now();
    const sleeping = t.sleep(60_000);
    t.halt();
    await sleeping;
    await t.sleep(60_000);
    expect(t.stopped).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('drain waits for tracked tasks; a failed task is logged, not thrown', async () => {
    const t = new ClusterTasks(log);
    let done = false;
    t.track(new Promise((r) => setTimeout(r, 20)).then(() => (done = true)));
    t.track(Promise.reject(new Error('boom')));
    await t.drain([]);
    expect(done).toBe(true);
  });
});

describe('ClusterManager.waitForPrimary', () => {
  it('with no primary and no failover running, answers -1 at once instead of waiting out the timeout', {
    timeout: 10_000,
  }, async () => {
    const config = defaultConfig();
    config.backends = [node(0, 'down').config, node(1, 'up').config];
    const nodes = new NodeTable(config.backends);
    const mgr = new ClusterManager(nodes, () => config, pino({ level: 'silent' }), {
      statusFile: path.join(os.tmpdir(), `pgrelay-unit-status-${process.pid}`),
    });
    expect(nodes.primaryId).toBe(-1);
    expect(mgr.failoverInProgress).toBe(false);
    // Waiting out the 60 s would run past this test's 10 s timeout.
    expect(await mgr.waitForPrimary(60_000)).toBe(-1);
  });
});
