/**
 * ClusterManager in-process against its own DevCluster (primary + 2 standbys):
 * backend-error reports on healthy nodes never fail over, health check marks a
 * stopped standby down, auto_failback brings it back, sr check delay values,
 * detach / attach with the commands' placeholders, the pgpool_status file, and
 * promote without switchover (pgrelay's view only; PostgreSQL untouched).
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { NodeTable } from '../../src/cluster/nodes.js';
import type { HealthCheckEvent } from '../../src/cluster/events.js';
import { ClusterManager } from '../../src/cluster/manager.js';
import { ClusterError } from '../../src/cluster/operations.js';

function until(cond: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) return resolve(Date.now() - t0);
      if (Date.now() - t0 > timeoutMs) return reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

describe('ClusterManager (in-process, own DevCluster)', () => {
  let cluster: DevCluster;
  let dir: string;
  let config: Config;
  let nodes: NodeTable;
  let mgr: ClusterManager;
  const logLines: Array<Record<string, unknown>> = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString('utf8').split('\n'))
          if (l) logLines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    }),
  );

  const makeConfig = (extra: Array<[string, string]> = []): Config => {
    const set: Array<[string, string]> = [
      ['logdir', dir],
      ['health_check_period', '1'],
      ['health_check_max_retries', '2'],
      ['health_check_retry_delay', '1'],
      ['health_check_timeout', '5'],
      ['health_check_user', 'postgres'],
      ['connect_timeout', '2000'],
      ['sr_check_period', '1'],
      ['sr_check_user', 'postgres'],
      ['auto_failback', 'on'],
      ['auto_failback_interval', '1'],
      ['search_primary_node_timeout', '10'],
      ['failover_command', `echo "F %d %h %p %m %H %M %P %r %N %S" >> ${path.join(dir, 'commands.log')}`],
      ['failback_command', `echo "B %d %m %M %P" >> ${path.join(dir, 'commands.log')}`],
      ...extra,
    ];
    cluster.nodes.forEach((n) => {
      set.push(
        [`backend_hostname${n.id}`, n.host],
        [`backend_port${n.id}`, String(n.port)],
        [`backend_data_directory${n.id}`, n.dataDir],
        [`backend_application_name${n.id}`, `server${n.id}`],
      );
    });
    return loadConfig({ set });
  };
  const commands = (): string[] => {
    try {
      return fs.readFileSync(path.join(dir, 'commands.log'), 'utf8').trim().split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };

  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 2 });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-mgr-'));
    config = makeConfig();
    nodes = new NodeTable(config.backends);
    // A short graceful wait: the promote test lets one run out (no test here ends sessions).
    mgr = new ClusterManager(nodes, () => config, log, { gracefulDetachTimeoutMs: 1500 });
    await mgr.start();
  });
  afterAll(async () => {
    await mgr?.stop();
    await cluster?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('finds the primary at start and marks every node up', async () => {
    expect(nodes.primaryId).toBe(0);
    expect(nodes.all().map((n) => n.status)).toEqual(['up', 'up', 'up']);
    expect(await mgr.waitForPrimary(100)).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'pgpool_status'), 'utf8')).toBe('up\nup\nup\n');
  });

  it('a refused connection / reset socket reported on a healthy node does not fail it over; reports are coalesced', async () => {
    const events: HealthCheckEvent[] = [];
    const on = (e: HealthCheckEvent): void => {
      if (e.node === 1) events.push(e);
    };
    mgr.on('healthcheck', on);
    try {
      const r = await Promise.all([
        mgr.reportBackendError(1, 'connect'),
        mgr.reportBackendError(1, 'io'),
        mgr.reportBackendError(1, 'connect'),
      ]);
      expect(r).toEqual([false, false, false]);
      // One check for the three reports (possibly the periodic one already running, which they join).
      expect(events.length).toBe(1);
      expect(events[0]).toMatchObject({ node: 1, ok: true });
      expect(['backend error', 'health check']).toContain(events[0]?.trigger);
      expect(await mgr.reportBackendError(0, 'io')).toBe(false);
      // failover_on_backend_shutdown is off by default: not even checked.
      expect(await mgr.reportBackendError(2, 'shutdown')).toBe(false);
    } finally {
      mgr.off('healthcheck', on);
    }
    expect(nodes.all().map((n) => n.status)).toEqual(['up', 'up', 'up']);
    expect(nodes.primaryId).toBe(0);
    expect(commands()).toEqual([]);
  });

  it('sr check fills replication fields and measures byte lag of a paused standby', async () => {
    await until(
      () => nodes.get(1)?.replicationState === 'streaming' && nodes.get(2)?.replicationState === 'streaming',
      10_000,
      'replication state',
    );
    expect(nodes.get(1)?.replicationSyncState).toBe('async');
    expect(nodes.get(0)?.replicationState).toBe('');
    await cluster.pauseReplay(2);
    try {
      await cluster.psql(0, 'CREATE TABLE IF NOT EXISTS lag_t AS SELECT g FROM generate_series(1, 20000) g');
      await until(() => (nodes.get(2)?.delayBytes ?? 0) > 100_000, 10_000, 'delayBytes of node 2');
      expect(nodes.get(0)?.delayBytes).toBe(0);
    } finally {
      await cluster.resumeReplay(2);
    }
    await until(() => nodes.get(2)?.delayBytes === 0, 15_000, 'node 2 to catch up');
  });

  it('a stopped standby goes down within period × (retries + 1) + margin, and auto_failback brings it back', {
    timeout: 120_000,
  }, async () => {
    const hc = config.health_check;
    // Each attempt may take connect_timeout (2 s); 10 s of margin for a loaded machine.
    const bound = (hc.period + (hc.max_retries + 1) * (hc.retry_delay + 2)) * 1000 + 10_000;
    await cluster.stopNode(2, 'immediate');
    const t = await until(() => nodes.get(2)?.status === 'down', bound, 'node 2 down');
    process.stderr.write(`[health-manager] stopped standby marked down after ${t} ms (bound ${bound} ms)\n`);
    expect(nodes.primaryId).toBe(0);
    const ev = logLines.find((l) => l.msg === 'node status changed' && l.node === 2 && l.to === 'down');
    expect(ev).toMatchObject({ from: 'up', to: 'down' });
    expect(String(ev?.reason)).toMatch(/health check failed/);
    // failover_command runs asynchronously after the node is marked down: wait for its record.
    const expected = `F 2 127.0.0.1 ${cluster.node(2).port} 0 127.0.0.1 0 0 ${cluster.node(0).port} 127.0.0.1 ${cluster.node(0).port}`;
    await until(() => commands().includes(expected), 10_000, 'failover_command ran');
    expect(commands()).toContain(expected);
    const before = mgr.healthStats(2);
    expect(before?.fail_count).toBeGreaterThanOrEqual(1);
    expect(before?.retry_count).toBeGreaterThanOrEqual(2);
    await until(() => (mgr.healthStats(2)?.skip_count ?? 0) > 0, 5000, 'a skipped check');
    expect(fs.readFileSync(path.join(dir, 'pgpool_status'), 'utf8')).toBe('up\nup\ndown\n');

    await cluster.startNode(2);
    const t2 = await until(() => nodes.get(2)?.status !== 'down', 30_000, 'node 2 back');
    process.stderr.write(`[health-manager] restarted standby re-attached by auto_failback after ${t2} ms\n`);
    expect(nodes.get(2)?.status).toBe('waiting');
    nodes.markUsed(2);
    expect(nodes.get(2)?.status).toBe('up');
    // As with pgpool-II, the node is attached (waiting) before failback_command runs: wait for its record.
    await until(() => commands().some((c) => c.startsWith('B 2 0 0 0')), 10_000, 'failback_command ran');
  });

  it('detach / attach: operator-detached nodes stay down (no auto_failback) and survive a restart via pgpool_status', async () => {
    await expect(mgr.detach(9)).rejects.toBeInstanceOf(ClusterError);
    // auto_failback runs inside each sr check, before its 'srcheck' event: three events after the detach
    // are three chances for auto_failback to bring node 1 back (it must not: an operator detached it).
    let srChecks = 0;
    const onSr = (): void => {
      srChecks++;
    };
    const r = await mgr.detach(1);
    mgr.on('srcheck', onSr);
    try {
      expect(r).toMatchObject({ node: 1, changed: true, status: 'down', primary: 0 });
      await until(() => srChecks >= 3, 30_000, 'three sr checks after the detach');
    } finally {
      mgr.off('srcheck', onSr);
    }
    expect(nodes.get(1)?.status).toBe('down');
    expect(fs.readFileSync(path.join(dir, 'pgpool_status'), 'utf8')).toBe('up\ndown\nup\n');

    // A second manager on the same logdir keeps node 1 down; with discardStatus it does not.
    const n2 = new NodeTable(config.backends);
    const cfg2 = {
      ...config,
      health_check: { ...config.health_check, period: 0 },
      health_check_per_node: config.health_check_per_node.map((h) => ({ ...h, period: 0 })),
      sr_check_period: 0,
    };
    const dir2 = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-mgr2-'));
    try {
      fs.copyFileSync(path.join(dir, 'pgpool_status'), path.join(dir2, 'pgpool_status'));
      const m2 = new ClusterManager(n2, () => ({ ...cfg2, logdir: dir2 }), log);
      await m2.start();
      expect(n2.all().map((n) => n.status)).toEqual(['up', 'down', 'up']);
      await m2.stop();
      const n3 = new NodeTable(config.backends);
      const m3 = new ClusterManager(n3, () => ({ ...cfg2, logdir: dir2 }), log, { discardStatus: true });
      await m3.start();
      expect(n3.all().map((n) => n.status)).toEqual(['up', 'up', 'up']);
      await m3.stop();
    } finally {
      fs.rmSync(dir2, { recursive: true, force: true });
    }

    const a = await mgr.attach(1);
    expect(a).toMatchObject({ node: 1, changed: true, status: 'waiting' });
    expect((await mgr.attach(1)).changed).toBe(false);
    expect(commands().some((c) => c.startsWith('B 1 '))).toBe(true);
  });

  it('promote without switchover changes only the view: pgrelay calls node 2 the primary, PostgreSQL is not touched', async () => {
    await expect(mgr.promote(7)).rejects.toMatchObject({ code: 'NO_SUCH_NODE' });
    expect((await mgr.promote(0)).changed, 'promoting the current primary changes nothing').toBe(false);
    await until(() => nodes.get(2)?.status === 'up' || nodes.get(2)?.status === 'waiting', 30_000, 'node 2 attached');
    const failoversBefore = commands().filter((c) => c.startsWith('F ')).length;

    // Gracefully, while a session uses the primary: nothing changes, and after the wait it fails.
    mgr.setSessionsOnNode((id) => (id === 0 ? 1 : 0));
    try {
      await expect(mgr.promote(2, { gracefully: true })).rejects.toMatchObject({
        code: 'TIMEOUT',
        message: 'node 0 still has 1 session(s) after waiting; promote node 2 not done',
      });
    } finally {
      mgr.setSessionsOnNode(() => 0);
    }
    expect(
      logLines.some((l) => l.msg === 'promote node 2 gracefully: waiting for the sessions using node 0 to end'),
    ).toBe(true);
    expect(nodes.primaryId).toBe(0);
    expect(nodes.get(0)?.status).not.toBe('down');
    expect(nodes.get(0)?.draining).toBe(false);

    const r = await mgr.promote(2);
    expect(r).toMatchObject({ node: 2, changed: true, primary: 2 });
    // pgrelay's view: node 2 is the primary, the old primary is detached.
    expect(nodes.primaryId).toBe(2);
    expect(nodes.get(2)?.role).toBe('primary');
    expect(nodes.get(0)?.status).toBe('down');
    // PostgreSQL: nothing changed — node 2 is still a standby in recovery, node 0 still the real primary.
    expect(await cluster.psql(2, 'SELECT pg_is_in_recovery()')).toBe('t');
    expect(await cluster.psql(0, 'SELECT pg_is_in_recovery()')).toBe('f');
    expect(await cluster.isRunning(0)).toBe(true);
    // Without switchover failover_command does not run (it would promote PostgreSQL).
    expect(commands().filter((c) => c.startsWith('F ')).length, commands().join('\n')).toBe(failoversBefore);
    expect((await mgr.promote(2)).changed, 'promoting it again changes nothing').toBe(false);
  });

  it('a node that accepts TCP but never answers: each attempt is bounded by connect_timeout, other nodes are checked meanwhile', {
    timeout: 120_000,
  }, async () => {
    // A "backend" that accepts connections and never sends a byte.
    const held: net.Socket[] = [];
    const silent = net.createServer((sock) => {
      held.push(sock);
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const silentPort = (silent.address() as net.AddressInfo).port;
    const dir2 = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-mgr-silent-'));
    const CONNECT_TIMEOUT = 4000;
    const cfg = loadConfig({
      set: [
        ['logdir', dir2],
        ['health_check_period', '1'],
        ['health_check_max_retries', '0'],
        ['health_check_timeout', '60'],
        ['health_check_user', 'postgres'],
        ['connect_timeout', String(CONNECT_TIMEOUT)],
        ['sr_check_period', '0'],
        ['backend_hostname0', cluster.node(0).host],
        ['backend_port0', String(cluster.node(0).port)],
        ['backend_hostname1', '127.0.0.1'],
        ['backend_port1', String(silentPort)],
      ],
    });
    const nt = new NodeTable(cfg.backends);
    const m = new ClusterManager(nt, () => cfg, log, {});
    const events: Array<HealthCheckEvent & { at: number }> = [];
    m.on('healthcheck', (e) => events.push({ ...e, at: Date.now() }));
    try {
      await m.start();
      // health_check_timeout is 60 s: a node marked down well before that had its attempt cut by connect_timeout.
      await until(() => nt.get(1)?.status === 'down', 30_000, 'the silent node to be marked down');
      const failed = events.find((e) => e.node === 1 && !e.ok);
      expect(failed, JSON.stringify(events)).toBeDefined();
      expect(failed!.durationMs, 'one attempt, bounded by connect_timeout').toBeGreaterThanOrEqual(
        CONNECT_TIMEOUT - 500,
      );
      expect(failed!.durationMs, 'one attempt, bounded by connect_timeout').toBeLessThan(CONNECT_TIMEOUT + 10_000);
      // While that attempt hung, node 0's own loop went on checking every second.
      const from = failed!.at - failed!.durationMs;
      const during = events.filter((e) => e.node === 0 && e.ok && e.at > from && e.at < failed!.at);
      expect(during.length, `node 0 checks during node 1's ${failed!.durationMs} ms attempt`).toBeGreaterThanOrEqual(2);
      expect(nt.get(0)?.status).toBe('up');
    } finally {
      await m.stop();
      for (const sock of held) sock.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
      fs.rmSync(dir2, { recursive: true, force: true });
    }
  });
});
