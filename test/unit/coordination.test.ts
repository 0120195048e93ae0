/**
 * coordination = 'etcd' without etcd: the pure decisions (votes needed, which
 * nodes fail over, what a follower applies, a failover left by a previous
 * leader, SHOW pgrelay_instances rows, readiness without etcd, key layout) and
 * the configuration checks.
 */
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { CheckAccess } from '../../src/cluster/check-access.js';
import type { ClusterManagerEvents } from '../../src/cluster/events.js';
import { FailoverRunner } from '../../src/cluster/failover-runner.js';
import { NodeMarks } from '../../src/cluster/node-marks.js';
import { NodeTable, type NodeStatus } from '../../src/cluster/nodes.js';
import { PrimarySearch } from '../../src/cluster/primary-search.js';
import { ClusterTasks } from '../../src/cluster/tasks.js';
import { defaultConfig } from '../../src/config/defaults.js';
import { ConfigError } from '../../src/config/issues.js';
import { loadConfig } from '../../src/config/load.js';
import {
  coordinationReadiness,
  etcdKeys,
  etcdPrefix,
  type FailoverRecord,
  instanceRows,
  type MemberInfo,
  type NodeView,
  nodesToFail,
  pendingFailover,
  reattached,
  type Verdict,
  viewChanges,
  votesNeeded,
} from '../../src/coordination/decisions.js';
import { tempDir } from '../support/temp-dirs.js';

const consensus = { failover_require_consensus: true, enable_consensus_with_half_votes: false };

describe('votesNeeded (failover_require_consensus, enable_consensus_with_half_votes)', () => {
  it('a majority of the live instances', () => {
    expect([1, 2, 3, 4, 5].map((n) => votesNeeded(n, consensus))).toEqual([1, 2, 2, 3, 3]);
  });
  it('half of them with enable_consensus_with_half_votes', () => {
    const half = { ...consensus, enable_consensus_with_half_votes: true };
    expect([1, 2, 3, 4, 5].map((n) => votesNeeded(n, half))).toEqual([1, 1, 2, 2, 3]);
  });
  it('one without failover_require_consensus', () => {
    const off = { ...consensus, failover_require_consensus: false };
    expect([1, 3, 5].map((n) => votesNeeded(n, off))).toEqual([1, 1, 1]);
  });
});

function verdicts(m: Record<number, Record<string, boolean>>): Map<number, Map<string, Verdict>> {
  return new Map(
    Object.entries(m).map(([node, v]) => [
      Number(node),
      new Map(Object.entries(v).map(([name, ok]) => [name, { ok, at: 0 }])),
    ]),
  );
}

const nodes = (...s: NodeStatus[]) => s.map((status, id) => ({ id, status, allowFailover: true }));

describe('nodesToFail', () => {
  const live = new Set(['A', 'B', 'C']);
  it('fails a live node over once enough live instances find it down', () => {
    const v = verdicts({ 1: { A: false, B: false, C: true }, 2: { A: false } });
    expect(nodesToFail(nodes('up', 'up', 'up'), v, live, 2)).toEqual([{ node: 1, votes: ['A', 'B'] }]);
    expect(nodesToFail(nodes('up', 'up', 'up'), v, live, 3)).toEqual([]);
  });
  it('ignores verdicts of instances that are not members (lease expired)', () => {
    const v = verdicts({ 0: { A: false, X: false, Y: false } });
    expect(nodesToFail(nodes('up'), v, live, 2)).toEqual([]);
  });
  it('never fails a node already down, unused, or with DISALLOW_TO_FAILOVER', () => {
    const v = verdicts({ 0: { A: false, B: false }, 1: { A: false, B: false }, 2: { A: false, B: false } });
    const ns = [
      { id: 0, status: 'down' as const, allowFailover: true },
      { id: 1, status: 'unused' as const, allowFailover: true },
      { id: 2, status: 'up' as const, allowFailover: false },
    ];
    expect(nodesToFail(ns, v, live, 1)).toEqual([]);
  });
  it('a waiting node counts as live', () => {
    const v = verdicts({ 0: { A: false } });
    expect(nodesToFail(nodes('waiting'), v, live, 1)).toEqual([{ node: 0, votes: ['A'] }]);
  });
});

const view = (primary: number, ...s: NodeStatus[]): NodeView => ({
  primary,
  failover: false,
  nodes: s.map((status, id) => ({ id, status })),
  leader: 'A',
  at: 0,
});
const local = (...s: NodeStatus[]) => s.map((status, id) => ({ id, status }));

describe('viewChanges (a follower applies the leader state)', () => {
  it('nothing when they agree (waiting and up both mean attached; a node used here stays up)', () => {
    expect(viewChanges(local('up', 'up', 'up'), 0, view(0, 'up', 'waiting', 'up'))).toEqual({ status: [] });
  });
  it('down, back, used, and the primary', () => {
    expect(viewChanges(local('up', 'up', 'down', 'waiting'), 0, view(1, 'down', 'up', 'waiting', 'up'))).toEqual({
      status: [
        { id: 0, to: 'down' },
        { id: 2, to: 'waiting' },
        { id: 3, to: 'up' },
      ],
      primary: 1,
    });
  });
  it('no primary in the view clears ours; unknown ids and unused nodes are left alone', () => {
    expect(viewChanges(local('up', 'unused'), 0, view(-1, 'up', 'down'))).toEqual({ status: [], primary: -1 });
    expect(viewChanges(local('up'), 0, view(5, 'up'))).toEqual({ status: [] });
  });
  it('reattached: nodes going from down to attached', () => {
    expect(reattached(local('down', 'down', 'up'), local('waiting', 'down', 'down'))).toEqual([0]);
  });
});

describe('pendingFailover (a new leader finishes what the previous one left)', () => {
  const rec = (phase: FailoverRecord['phase'], leader = 'A'): FailoverRecord => ({
    seq: 1,
    nodes: [0],
    reason: 'r',
    leader,
    phase,
    votes: ['A', 'B'],
    at: 0,
  });
  it('unfinished and by another leader: pending', () => {
    for (const p of ['decided', 'failover_command', 'primary_search', 'follow_primary_command'] as const)
      expect(pendingFailover(rec(p), 'B')).toEqual(rec(p));
  });
  it('done, ours, or none: nothing to finish', () => {
    expect(pendingFailover(rec('done'), 'B')).toBeUndefined();
    expect(pendingFailover(rec('failover_command', 'B'), 'B')).toBeUndefined();
    expect(pendingFailover(undefined, 'B')).toBeUndefined();
  });
});

describe('instanceRows (SHOW pgrelay_instances)', () => {
  const m = (name: string, state: MemberInfo['state'] = 'member'): MemberInfo => ({
    name,
    host: 'h',
    port: 9999,
    version: '1',
    state,
    pid: 1,
    startedAt: 0,
  });
  it('lists the members sorted, marks the leader and this instance', () => {
    const members = new Map([
      ['B', m('B', 'leader')],
      ['A', m('A')],
    ]);
    const rows = instanceRows(members, 'B', m('A'), 'member');
    expect(rows.map((r) => [r.name, r.leader, r.self, r.lease, r.state])).toEqual([
      ['A', false, true, 'held', 'member'],
      ['B', true, false, 'held', 'leader'],
    ]);
  });
  it('this instance without its lease is listed as lost', () => {
    const rows = instanceRows(new Map([['B', m('B', 'leader')]]), 'B', m('C'), 'lost');
    expect(rows.find((r) => r.self)).toMatchObject({ name: 'C', lease: 'lost', state: 'lost', leader: false });
  });
});

describe('readiness without etcd, keys', () => {
  it('ready until etcd_unreachable_grace has passed', () => {
    expect(coordinationReadiness(undefined, 10_000, 5)).toEqual({ ready: true });
    expect(coordinationReadiness(6_000, 10_000, 5)).toEqual({ ready: true });
    expect(coordinationReadiness(1_000, 10_000, 5)).toEqual({
      ready: false,
      reason: 'etcd unreachable for 9 s (etcd_unreachable_grace = 5 s)',
    });
  });
  it('the prefix derives from cluster_name and always ends with a slash', () => {
    expect(etcdPrefix('', 'prod')).toBe('/pgrelay/prod/');
    expect(etcdPrefix('/x/y', 'prod')).toBe('/x/y/');
    const k = etcdKeys('/p/');
    expect([k.member('A'), k.leader, k.state, k.verdict(2, 'A'), k.nodeVerdicts(2)]).toEqual([
      '/p/members/A',
      '/p/leader',
      '/p/state',
      '/p/verdicts/2/A',
      '/p/verdicts/2/',
    ]);
  });
});

describe('configuration', () => {
  const dir = tempDir('pgrelay-coord-conf-');
  const conf = (text: string): string => {
    const f = path.join(dir, `c${Math.random().toString(36).slice(2)}.conf`);
    writeFileSync(f, `backend_hostname0 = 'pg0'\n${text}`);
    return f;
  };
  it('defaults: coordination off, pgpool watchdog names with their defaults', () => {
    const c = loadConfig({ file: conf('') });
    expect(c.coordination).toBe('off');
    expect(c.failover_require_consensus).toBe(true);
    expect(c.failover_when_quorum_exists).toBe(true);
    expect(c.enable_consensus_with_half_votes).toBe(false);
    expect(c.etcd_lease_ttl).toBe(10);
  });
  it("coordination = 'etcd' reads endpoints, TLS paths relative to the file, and the watchdog commands", () => {
    const f = conf(
      "coordination = 'etcd'\netcd_endpoints = 'http://e1:2379, e2:2379'\netcd_cacert = 'ca.pem'\n" +
        "etcd_lease_ttl = 15\ndelegate_ip = '10.0.0.9'\nif_up_cmd = 'up $_IP_$'\n",
    );
    const c = loadConfig({ file: f });
    expect(c.etcd_endpoints).toEqual(['http://e1:2379', 'e2:2379']);
    expect(c.etcd_cacert).toBe(path.join(dir, 'ca.pem'));
    expect(c.etcd_lease_ttl).toBe(15);
    expect(c.if_up_cmd).toBe('up $_IP_$');
  });
  it("coordination = 'etcd' without endpoints, a bad endpoint, a cert without key: errors naming file:line", () => {
    const f = conf("coordination = 'etcd'\n");
    try {
      loadConfig({ file: f });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).errors[0]).toMatchObject({ file: f, line: 2, key: 'coordination' });
      expect((e as ConfigError).message).toMatch(/needs etcd_endpoints/);
    }
    const g = conf("coordination = 'etcd'\netcd_endpoints = 'http://a b'\netcd_cert = 'c.pem'\n");
    try {
      loadConfig({ file: g });
      expect.unreachable();
    } catch (e) {
      const errs = (e as ConfigError).errors;
      expect(errs.map((x) => [x.line, x.key])).toEqual([
        [3, 'etcd_endpoints'],
        [4, 'etcd_cert'],
      ]);
    }
  });
});

describe('FailoverRunner checkpoints (how the leader records and fences a failover)', () => {
  const backends = [0, 1, 2].map((id) => ({
    id,
    hostname: '127.0.0.1',
    port: 1,
    weight: 1,
    data_directory: '',
    allow_to_failover: true,
    always_primary: false,
    application_name: '',
  }));
  function runner(commands: { failover: string; follow: string }) {
    const log = pino({ level: 'silent' });
    const cfg = { ...defaultConfig(), failover_command: commands.failover, follow_primary_command: commands.follow };
    const nodes = new NodeTable(backends);
    for (const n of nodes.all()) nodes.setStatus(n.id, 'up', 'test');
    nodes.setPrimary(0, 'test');
    const tasks = new ClusterTasks(log);
    const ran: string[] = [];
    const events = new EventEmitter<ClusterManagerEvents>();
    events.on('command', (e) => ran.push(`${e.kind}:${e.node}`));
    const search = new PrimarySearch(nodes, () => cfg, log, tasks, new CheckAccess(() => cfg));
    const r = new FailoverRunner(nodes, () => cfg, log, tasks, events, search, new NodeMarks(), 10_000);
    return { r, nodes, tasks, ran };
  }
  const cmds = { failover: 'true', follow: 'true' };

  it('calls the checkpoint before each step, and once done after the last follow_primary_command', async () => {
    const { r, nodes, tasks, ran } = runner(cmds);
    const steps: string[] = [];
    await r.degenerate([0], 'test', { promoteId: 1, fixedPrimary: 1, checkpoint: async (s) => void steps.push(s) });
    await tasks.drain([]);
    expect(steps).toEqual(['failover_command', 'primary_search', 'follow_primary_command', 'done']);
    expect(ran).toEqual(['failover_command:0', 'follow_primary_command:0', 'follow_primary_command:2']);
    expect(nodes.primaryId).toBe(1);
  });

  it('skipFailoverCommand + skipFollowPrimaryCommand: a new leader finishes without running them again', async () => {
    const { r, nodes, tasks, ran } = runner(cmds);
    const steps: string[] = [];
    await r.degenerate([0], 'test', {
      promoteId: 1,
      fixedPrimary: 1,
      skipFailoverCommand: true,
      skipFollowPrimaryCommand: true,
      checkpoint: async (s) => void steps.push(s),
    });
    await tasks.drain([]);
    expect(ran).toEqual([]);
    expect(steps).toEqual(['failover_command', 'primary_search', 'done']);
    expect(nodes.primaryId).toBe(1);
    expect(nodes.get(0)?.status).toBe('down');
  });

  it('a checkpoint that fails (leadership lost) stops the failover there: no later command runs', async () => {
    const { r, tasks, ran } = runner(cmds);
    await expect(
      r.degenerate([0], 'test', {
        promoteId: 1,
        fixedPrimary: 1,
        checkpoint: async (s) => {
          if (s === 'primary_search') throw new Error('no longer the leader');
        },
      }),
    ).rejects.toThrow('no longer the leader');
    await tasks.drain([]);
    expect(ran).toEqual(['failover_command:0']);
    expect(r.inProgress).toBe(false);
  });
});
