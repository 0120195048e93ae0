/**
 * coordination = 'etcd': three pgrelay instances (A, B, C) in front of one
 * DevCluster (primary 0, standbys 1 and 2), coordinated through a real
 * 3-member etcd on loopback (Debian's etcd-server). C reaches etcd through a
 * TCP forwarder the test can cut.
 *
 * In order (one cluster, each step starts from the state the previous left):
 *  (a) all three show the same SHOW pool_nodes and the same leader;
 *  (e) PGPOOL DETACH NODE 2 on a non-leader is seen by all three,
 *      failover_command runs once; ATTACH from another brings it back everywhere;
 *  (d) C cut from etcd: it loses its lease, takes no decision, reports
 *      not-ready after etcd_unreachable_grace; standby 2 stopped: A and B fail
 *      it over without C (failover_command once); forwarder back: C rejoins and
 *      shows node 2 down, ready again;
 *  (b) primary killed: failover_command runs exactly once across the three (it
 *      promotes node 1), follow_primary_command once per other node, all three
 *      route writes to node 1;
 *  (c) the leader killed: another instance leads within 2 × etcd_lease_ttl,
 *      if_up_cmd ran on it, and no failover happened meanwhile.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster, freePort } from '../../dev/devcluster.js';
import { type EtcdHandle, startEtcd, TcpForwarder } from '../support/etcd.js';
import { connect, destroy, jsonLines, REPO, until } from '../support/failover.js';
import { scrapeMetrics, sampleValue } from '../support/prometheus.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';

const TTL = 6;
const NAMES = ['A', 'B', 'C'] as const;
type Name = (typeof NAMES)[number];

interface Instance {
  name: Name;
  proxy: ProxyHandle;
  metricsPort: number;
}

let etcd: EtcdHandle;
let forwarder: TcpForwarder;
let cluster: DevCluster;
let work: string;
const inst = new Map<Name, Instance>();

const rec = (f: string): string => path.join(work, f);
const lines = (f: string): string[] => {
  try {
    return fs.readFileSync(rec(f), 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
};

async function query<T extends Record<string, unknown>>(i: Instance, sql: string): Promise<T[]> {
  const c = await connect(i.proxy.port, { user: 'postgres', query_timeout: 10_000 });
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    destroy(c);
  }
}

interface InstanceRow extends Record<string, unknown> {
  instance_name: string;
  state: string;
  leader: string;
  this_instance: string;
  lease: string;
}

const instances = (i: Instance): Promise<InstanceRow[]> => query<InstanceRow>(i, 'SHOW pgrelay_instances');

/** node → 'up'|'down' + role, as the instance shows it ('waiting' counts as attached, like 'up'). */
async function nodeView(i: Instance): Promise<string> {
  const rows = await query<{ node_id: string; status: string; role: string }>(i, 'SHOW pool_nodes');
  return rows.map((r) => `${r.node_id}:${r.status === 'down' ? 'down' : 'up'}:${r.role}`).join(' ');
}

async function leaderOf(i: Instance): Promise<string> {
  return (await instances(i)).find((r) => r.leader === 'true')?.instance_name ?? '';
}

function readyz(i: Instance): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: i.metricsPort, path: '/readyz', timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

function get(name: Name): Instance {
  const i = inst.get(name);
  if (!i) throw new Error(`instance ${name} is not running`);
  return i;
}

const running = (): Instance[] => NAMES.flatMap((n) => inst.get(n) ?? []);
const logCount = (i: Instance, msg: string): number => jsonLines(i.proxy).filter((l) => l.msg === msg).length;
const leaseLosses = (i: Instance): number =>
  jsonLines(i.proxy).filter((l) => String(l.msg).startsWith('etcd lease lost')).length;
const JOINED = 'joined the coordinated instances (etcd lease granted)';

async function startInstance(name: Name): Promise<Instance> {
  const metricsPort = await freePort();
  const endpoints = name === 'C' ? [forwarder.url] : etcd.endpoints;
  const proxy = await startProxy({
    cluster,
    // Three pgrelay processes loading etcd's gRPC client at once on a busy machine.
    startTimeoutMs: 60_000,
    config: {
      coordination: 'etcd',
      etcd_endpoints: endpoints.join(','),
      cluster_name: 'itest',
      instance_name: name,
      etcd_lease_ttl: TTL,
      etcd_unreachable_grace: 2,
      health_check_period: 1,
      health_check_max_retries: 0,
      health_check_timeout: 3,
      connect_timeout: 2000,
      sr_check_period: 1,
      search_primary_node_timeout: 30,
      admin_users: 'postgres',
      metrics_port: metricsPort,
      failover_command: `${path.join(REPO, 'examples', 'failover.sh')} %d %h %p %D %m %H %M %P %r %R %N %S`,
      follow_primary_command: `${rec('follow.sh')} %d`,
      delegate_ip: '192.0.2.10',
      if_up_cmd: `${rec('if.sh')} up $_IP_$`,
      if_down_cmd: `${rec('if.sh')} down $_IP_$`,
      log_min_messages: 'info',
    },
    env: {
      INSTANCE: name,
      PGRELAY_FAILOVER_RECORD: rec('failover.log'),
      RECORD_DIR: work,
      PG_BIN: cluster.pgBin,
      PGUSER: 'postgres',
    },
  });
  const i = { name, proxy, metricsPort };
  inst.set(name, i);
  return i;
}

/** (d) while C is cut from etcd. */
async function cutFromEtcd(c: Instance, lostBefore: number, commandsBefore: number): Promise<void> {
  await until(() => leaseLosses(c) > lostBefore, (TTL + 3) * 1000, 'C loses its lease');
  await until(async () => (await readyz(c)) === 503, 6_000, 'C not ready after etcd_unreachable_grace');
  await until(async () => (await instances(get('A'))).length === 2, (TTL + 3) * 1000, 'C gone from the members');
  await until(async () => (await readyz(get('A'))) === 200, 10_000, 'A ready');

  await cluster.stopNode(2, 'immediate');
  await until(
    async () => (await nodeView(get('A'))).includes('2:down') && (await nodeView(get('B'))).includes('2:down'),
    10_000,
    'A and B fail node 2 over',
  );
  // failover_command runs after the node is marked down (and published): wait for its record.
  await until(() => lines('failover.log').length > 0, 10_000, "failover_command's record");
  expect(lines('failover.log').map((l) => l.split('|')[0])).toEqual(['2']);
  // C's own checks fail too: it says so, decides nothing, and keeps the state it knew.
  await c.proxy.waitForLog('no failover decision here', 5_000);
  expect(await nodeView(c)).toBe('0:up:primary 1:up:standby 2:up:standby');
  expect(logCount(c, 'executing failover_command')).toBe(commandsBefore);
  // Writes through C still reach the primary it knows.
  const w = await query<{ p: number }>(c, 'INSERT INTO coord_t VALUES (0) RETURNING inet_server_port() AS p');
  expect(Number(w[0]?.p)).toBe(cluster.node(0).port);
}

describe('coordination through etcd: three instances, one cluster view', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-coord-'));
    fs.chmodSync(work, 0o777);
    fs.writeFileSync(rec('follow.sh'), '#!/bin/sh\necho "$INSTANCE|$1" >> "$RECORD_DIR/follow.log"\n', { mode: 0o755 });
    fs.writeFileSync(rec('if.sh'), '#!/bin/sh\necho "$INSTANCE|$1|$2" >> "$RECORD_DIR/if.log"\n', { mode: 0o755 });
    [etcd, cluster] = await Promise.all([startEtcd(3), DevCluster.start({ standbys: 2 })]);
    forwarder = await TcpForwarder.start(etcd.ports[0]!);
    await Promise.all(NAMES.map((n) => startInstance(n)));
    await until(
      async () => {
        for (const i of running()) {
          const rows = await instances(i);
          if (rows.length !== 3 || rows.filter((r) => r.leader === 'true').length !== 1) return false;
        }
        return true;
      },
      20_000,
      'three members and one leader seen by every instance',
    );
  }, 120_000);

  afterAll(async () => {
    await Promise.all(running().map((i) => i.proxy.stop()));
    await forwarder?.close();
    await Promise.all([etcd?.stop(), cluster?.stop()]);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('(a) every instance shows the same nodes, primary and leader', async () => {
    const expected = '0:up:primary 1:up:standby 2:up:standby';
    await until(
      async () => (await Promise.all(running().map(nodeView))).every((v) => v === expected),
      10_000,
      'same SHOW pool_nodes everywhere',
    );
    let leaders: string[] = [];
    await until(
      async () => {
        leaders = await Promise.all(running().map(leaderOf));
        // if_up_cmd ran on the leader, with delegate_ip (the last line: on a busy machine an early leader may
        // have lost its lease and handed over).
        return (
          new Set(leaders).size === 1 && leaders[0] !== '' && lines('if.log').at(-1) === `${leaders[0]}|up|192.0.2.10`
        );
      },
      10_000,
      'one leader everywhere, which ran if_up_cmd',
    );
    let rows: InstanceRow[] = [];
    await until(
      async () => (rows = await instances(get('A'))).map((r) => r.instance_name).join() === 'A,B,C',
      10_000,
      'A lists A, B and C',
    );
    expect(rows.find((r) => r.this_instance === 'true')).toMatchObject({ instance_name: 'A', lease: 'held' });
    await query(get('A'), 'CREATE TABLE coord_t (x int)');
    // Metrics: one leader, three members seen by each, every instance holds its lease.
    await until(
      async () => {
        const ms = await Promise.all(running().map((i) => scrapeMetrics(i.metricsPort)));
        const leaders = ms.reduce((n, m) => n + (sampleValue(m, 'pgrelay_coordination_leader') ?? 0), 0);
        return (
          leaders === 1 &&
          ms.every(
            (m) =>
              sampleValue(m, 'pgrelay_coordination_members') === 3 &&
              sampleValue(m, 'pgrelay_coordination_lease_held') === 1 &&
              (sampleValue(m, 'pgrelay_etcd_rtt_seconds') ?? 0) > 0 &&
              sampleValue(m, 'pgrelay_etcd_lease_losses_total') !== undefined,
          )
        );
      },
      10_000,
      'coordination metrics',
    );
  });

  it('(e) a detach on one instance is seen by the others; an attach on another brings the node back', async () => {
    const leader = await leaderOf(get('A'));
    // Ask non-leaders: the operation goes through etcd to the leader.
    const [asker, other] = NAMES.filter((n) => n !== leader) as [Name, Name];
    await query(get(asker), 'PGPOOL DETACH NODE 2');
    await until(
      async () => (await Promise.all(running().map(nodeView))).every((v) => v.includes('2:down:standby')),
      5_000,
      'node 2 down everywhere',
    );
    // failover_command ran once, by one instance (the leader), for node 2 (after the node was marked down).
    await until(() => lines('failover.log').length > 0, 10_000, "failover_command's record");
    expect(lines('failover.log').map((l) => l.split('|')[0])).toEqual(['2']);
    expect(running().reduce((n, i) => n + logCount(i, 'executing failover_command'), 0)).toBe(1);
    await query(get(other), 'PGPOOL ATTACH NODE 2');
    await until(
      async () => (await Promise.all(running().map(nodeView))).every((v) => v.includes('2:up:standby')),
      5_000,
      'node 2 back everywhere',
    );
    fs.rmSync(rec('failover.log'), { force: true });
  });

  it('(d) an instance cut from etcd stops deciding, the others fail a standby over, it rejoins', async () => {
    const c = get('C');
    const joinedBefore = logCount(c, JOINED);
    forwarder.cut();
    try {
      await cutFromEtcd(c, leaseLosses(c), logCount(c, 'executing failover_command'));
    } finally {
      forwarder.restore();
    }
    await until(() => logCount(c, JOINED) > joinedBefore, 15_000, 'C joined again');
    await until(async () => (await nodeView(c)).includes('2:down'), 5_000, 'C shows node 2 down after rejoining');
    await until(async () => (await readyz(c)) === 200, 5_000, 'C ready again');
    expect(lines('failover.log')).toHaveLength(1);
    fs.rmSync(rec('failover.log'), { force: true });
  }, 120_000);

  it('(b) primary killed: failover_command once across the three, all route writes to the new primary', async () => {
    const commandsBefore = running().reduce((n, i) => n + logCount(i, 'executing failover_command'), 0);
    fs.rmSync(rec('failover.log'), { force: true });
    await cluster.stopNode(0, 'immediate');
    const node1 = cluster.node(1).port;
    for (const i of running())
      await until(
        async () => {
          const r = await query<{ p: number }>(i, 'INSERT INTO coord_t VALUES (1) RETURNING inet_server_port() AS p');
          return Number(r[0]?.p) === node1;
        },
        40_000,
        `writes through ${i.name} reach node 1`,
      );
    const fo = lines('failover.log').map((l) => l.split('|')[0]);
    expect(fo).toEqual(['0']);
    expect(running().reduce((n, i) => n + logCount(i, 'executing failover_command'), 0)).toBe(commandsBefore + 1);
    await until(() => lines('follow.log').length >= 2, 10_000, 'follow_primary_command for nodes 0 and 2');
    const follow = lines('follow.log').map((l) => l.split('|')[1]);
    expect(follow.sort()).toEqual(['0', '2']);
    expect(new Set(lines('follow.log').map((l) => l.split('|')[0])).size).toBe(1);
    await until(
      async () => new Set(await Promise.all(running().map(nodeView))).size === 1,
      3_000,
      'the same SHOW pool_nodes everywhere',
    );
    expect(await nodeView(get('A'))).toMatch(/1:up:primary/);
  }, 120_000);

  it('(c) the leader killed: another leads within 2 × TTL, runs if_up_cmd, no failover meanwhile', async () => {
    const leader = (await leaderOf(get('A'))) as Name;
    const survivors = NAMES.filter((n) => n !== leader);
    const failoversBefore = lines('failover.log').length;
    const decisionsBefore = survivors.map((n) => logCount(get(n), 'consensus: failing over'));
    fs.rmSync(rec('if.log'), { force: true });
    const killed = get(leader).proxy;
    killed.kill('SIGKILL');
    await killed.exited;
    // Its directory goes too (stop() after the exit only removes it): afterAll no longer sees it.
    await killed.stop();
    inst.delete(leader);
    const t0 = Date.now();
    let next = '';
    await until(
      async () => {
        next = await leaderOf(get(survivors[0]!));
        return next !== '' && next !== leader;
      },
      2 * TTL * 1000 + 2000,
      'a new leader',
    );
    const took = Date.now() - t0;
    process.stderr.write(`[coordination-etcd] new leader ${next} after ${took} ms (TTL ${TTL} s)\n`);
    expect(took).toBeLessThanOrEqual(2 * TTL * 1000 + 1000);
    expect(survivors).toContain(next);
    await until(() => lines('if.log').length > 0, 5_000, 'if_up_cmd on the new leader');
    expect(lines('if.log')).toEqual([`${next}|up|192.0.2.10`]);
    expect(lines('failover.log')).toHaveLength(failoversBefore);
    expect(survivors.map((n) => logCount(get(n), 'consensus: failing over'))).toEqual(decisionsBefore);
    expect(await nodeView(get(survivors[0]!))).toBe(await nodeView(get(survivors[1]!)));
  });
});
