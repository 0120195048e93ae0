import { describe, it, expect } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import {
  describeAdminCommand,
  mayBeAdminCommand,
  mayBeAdminCommandAt,
  parseAdminCommand,
  type AdminCommand,
} from '../../src/admin/commands.js';
import type {
  AdminBackendConnection,
  AdminContext,
  AdminNode,
  AdminSessionInfo,
  HealthCheckStats,
  NodeStatementCounters,
  ProbeResult,
} from '../../src/admin/context.js';
import { executeAdmin } from '../../src/admin/engine.js';
import { type AdminResult, formatTimestamp } from '../../src/admin/result.js';
import { POOL_HEALTH_CHECK_STATS_COLUMNS, POOL_NODES_COLUMNS } from '../../src/admin/show-nodes.js';
import { POOL_POOLS_COLUMNS, POOL_PROCESSES_COLUMNS } from '../../src/admin/show-sessions.js';
import {
  commandCompleteFor,
  dataRowsFor,
  encodeAdminResult,
  encodeRows,
  rowDescriptionFor,
} from '../../src/admin/wire.js';

// ---------------------------------------------------------------------------
// parser

describe('parseAdminCommand', () => {
  const show = (target: string): AdminCommand => ({ kind: 'show', target }) as AdminCommand;

  it('recognises every SHOW pool_* target, any case, ; and comments', () => {
    for (const t of [
      'pool_nodes',
      'pool_version',
      'pool_status',
      'pool_pools',
      'pool_processes',
      'pool_backend_stats',
      'pool_health_check_stats',
      'pool_cache',
    ]) {
      expect(parseAdminCommand(`SHOW ${t}`)).toEqual(show(t));
      expect(parseAdminCommand(`show ${t.toUpperCase()};`)).toEqual(show(t));
      expect(parseAdminCommand(`  \n\tShOw   ${t}  ;  `)).toEqual(show(t));
    }
    expect(parseAdminCommand('/* hi */ SHOW pool_nodes')).toEqual(show('pool_nodes'));
    expect(parseAdminCommand('-- c\nSHOW pool_nodes -- trailing\n')).toEqual(show('pool_nodes'));
    expect(parseAdminCommand('/* a /* nested */ b */SHOW/**/pool_nodes/* x */;/* y */')).toEqual(show('pool_nodes'));
    expect(parseAdminCommand('SHOW "pool_nodes"')).toEqual(show('pool_nodes'));
  });

  it('returns undefined for ordinary queries', () => {
    for (const q of [
      'SHOW work_mem',
      'SHOW pool_nosuch',
      'SHOW "POOL_NODES"',
      'SHOW pool_nodes extra',
      'SHOW pool_nodes; SELECT 1',
      "SELECT 'SHOW pool_nodes'",
      'select 1',
      'SHOWpool_nodes',
      'show_pool_nodes',
      'pgpoolx show port',
      'SET pool_nodes = 1',
      '',
      '   ',
      '/* unterminated SHOW pool_nodes',
      'pg_sleep(1)',
      'PREPARE x AS SELECT 1',
    ]) {
      expect(parseAdminCommand(q), q).toBeUndefined();
    }
    expect(mayBeAdminCommand('SELECT 1')).toBe(false);
    expect(mayBeAdminCommand('SHOW work_mem')).toBe(false);
    expect(mayBeAdminCommand('show pool_x')).toBe(true);
  });

  it('mayBeAdminCommandAt passes over texts by their first bytes, never one mayBeAdminCommand takes', () => {
    const texts = [
      'SHOW pool_nodes',
      'show pool_status;',
      '  SHOW pool_processes',
      '/* c */ SHOW pool_pools',
      '-- c\nSHOW pool_version',
      'PGPOOL SHOW port',
      'pgpool set client_idle_limit = 5',
      'Show "pool_nodes"',
      'SELECT abalance FROM pgbench_accounts WHERE aid = 1;',
      'select 1',
      'INSERT INTO t VALUES (1)',
      'SET work_mem = 1',
      'SHOW work_mem',
      'PREPARE x AS SELECT 1',
      'p',
      '',
    ];
    for (const q of texts) {
      const b = Buffer.from(`${q}\0`);
      const at = mayBeAdminCommandAt(b, 0, b.length - 1);
      if (mayBeAdminCommand(q)) expect(at, q).toBe(true);
    }
    const skipped = (q: string) => !mayBeAdminCommandAt(Buffer.from(q), 0, q.length);
    expect(
      ['SELECT 1', 'select 1', 'INSERT INTO t VALUES (1)', 'SET x = 1', 'PREPARE x AS SELECT 1'].every(skipped),
    ).toBe(true);
  });

  it('parses PGPOOL SHOW / SET / RESET', () => {
    expect(parseAdminCommand('PGPOOL SHOW port')).toEqual({ kind: 'pgpool_show', name: 'port' });
    expect(parseAdminCommand('pgpool show ALL;')).toEqual({ kind: 'pgpool_show', name: 'all' });
    expect(parseAdminCommand('PgPool Show Backend_Hostname0')).toEqual({
      kind: 'pgpool_show',
      name: 'backend_hostname0',
    });
    expect(parseAdminCommand('PGPOOL SHOW health_check')).toEqual({ kind: 'pgpool_show', name: 'health_check' });
    expect(parseAdminCommand('PGPOOL SET client_idle_limit = 10')).toEqual({
      kind: 'pgpool_set',
      name: 'client_idle_limit',
      value: '10',
    });
    expect(parseAdminCommand("PGPOOL SET client_idle_limit TO '10s';")).toEqual({
      kind: 'pgpool_set',
      name: 'client_idle_limit',
      value: '10s',
    });
    expect(parseAdminCommand('PGPOOL SET log_statement = on')).toEqual({
      kind: 'pgpool_set',
      name: 'log_statement',
      value: 'on',
    });
    expect(parseAdminCommand('PGPOOL SET log_min_messages TO DEFAULT')).toEqual({
      kind: 'pgpool_set',
      name: 'log_min_messages',
      value: null,
    });
    expect(parseAdminCommand('PGPOOL SET client_idle_limit = -1')).toEqual({
      kind: 'pgpool_set',
      name: 'client_idle_limit',
      value: '-1',
    });
    expect(parseAdminCommand("PGPOOL SET x = a, 'b'")).toEqual({ kind: 'pgpool_set', name: 'x', value: 'a,b' });
    expect(parseAdminCommand('PGPOOL RESET client_idle_limit')).toEqual({
      kind: 'pgpool_reset',
      name: 'client_idle_limit',
    });
    expect(parseAdminCommand('pgpool reset all ;')).toEqual({ kind: 'pgpool_reset', name: 'all' });
    expect(parseAdminCommand("PGPOOL SET CACHE DELETE 'SELECT * FROM t1;'")).toEqual({
      kind: 'cache_delete',
      query: 'SELECT * FROM t1;',
    });
    expect(parseAdminCommand("PGPOOL SET CACHE DELETE 'it''s'")).toEqual({ kind: 'cache_delete', query: "it's" });
  });

  it('parses the node operations', () => {
    expect(parseAdminCommand('PGPOOL ATTACH NODE 1')).toEqual({ kind: 'attach_node', node: 1 });
    expect(parseAdminCommand('pgpool detach node 0 gracefully;')).toEqual({
      kind: 'detach_node',
      node: 0,
      gracefully: true,
    });
    expect(parseAdminCommand('PGPOOL DETACH NODE 2')).toEqual({ kind: 'detach_node', node: 2, gracefully: false });
    expect(parseAdminCommand('PGPOOL PROMOTE NODE 1 SWITCHOVER')).toEqual({
      kind: 'promote_node',
      node: 1,
      switchover: true,
      gracefully: false,
    });
    expect(parseAdminCommand('PGPOOL PROMOTE NODE 1')).toEqual({
      kind: 'promote_node',
      node: 1,
      switchover: false,
      gracefully: false,
    });
    for (const sql of ['PGPOOL PROMOTE NODE 2 SWITCHOVER GRACEFULLY', 'pgpool promote node 2 gracefully switchover'])
      expect(parseAdminCommand(sql), sql).toEqual({
        kind: 'promote_node',
        node: 2,
        switchover: true,
        gracefully: true,
      });
    expect(parseAdminCommand('PGPOOL PROMOTE NODE 2 GRACEFULLY')).toMatchObject({
      switchover: false,
      gracefully: true,
    });
    expect(parseAdminCommand('PGPOOL PROMOTE NODE 2 GRACEFULLY GRACEFULLY')).toMatchObject({ kind: 'syntax_error' });
    expect(describeAdminCommand({ kind: 'promote_node', node: 2, switchover: true, gracefully: true })).toBe(
      'PGPOOL PROMOTE NODE 2 SWITCHOVER GRACEFULLY',
    );
    expect(parseAdminCommand('PGPOOL RECOVERY NODE 2')).toEqual({ kind: 'recovery_node', node: 2 });
    expect(parseAdminCommand('PGPOOL RELOAD')).toEqual({ kind: 'reload' });
    expect(parseAdminCommand('PGPOOL STOP')).toEqual({ kind: 'stop', mode: 'smart' });
    expect(parseAdminCommand('pgpool stop fast')).toEqual({ kind: 'stop', mode: 'fast' });
    expect(parseAdminCommand('PGPOOL STOP IMMEDIATE;')).toEqual({ kind: 'stop', mode: 'immediate' });
  });

  it('reports syntax errors for malformed PGPOOL commands', () => {
    expect(parseAdminCommand('PGPOOL')).toEqual({ kind: 'syntax_error', near: '' });
    expect(parseAdminCommand('PGPOOL FOO')).toEqual({ kind: 'syntax_error', near: 'FOO' });
    expect(parseAdminCommand('PGPOOL SET port')).toEqual({ kind: 'syntax_error', near: '' });
    expect(parseAdminCommand('PGPOOL ATTACH NODE x')).toEqual({ kind: 'syntax_error', near: 'x' });
    expect(parseAdminCommand('PGPOOL SHOW port port')).toEqual({ kind: 'syntax_error', near: 'port' });
    expect(parseAdminCommand("PGPOOL SET CACHE DELETE 'x")).toEqual({ kind: 'syntax_error', near: "'x" });
  });

  it('is fast on non-admin text', () => {
    const q = 'SELECT * FROM accounts WHERE id = $1 AND name LIKE $2 ORDER BY created_at DESC LIMIT 100';
    for (let i = 0; i < 50_000; i++) parseAdminCommand(q);
    const t0 = performance.now();
    for (let i = 0; i < 200_000; i++) parseAdminCommand(q);
    const perCallUs = ((performance.now() - t0) * 1000) / 200_000;
    // ~0.03 µs in plain node; generous bound for instrumented test runs
    expect(perCallUs).toBeLessThan(20);
  });
});

// ---------------------------------------------------------------------------
// engine

function config(extra: Array<[string, string]> = []): Config {
  return loadConfig({
    set: [
      ['backend_hostname0', 'pg0'],
      ['backend_port0', '5432'],
      ['backend_weight0', '1'],
      ['backend_hostname1', 'pg1'],
      ['backend_port1', '5433'],
      ['backend_weight1', '2'],
      ['backend_application_name1', 'server1'],
      ['sr_check_period', '2'],
      ['health_check_period', '5'],
      ['health_check_password', 'secret'],
      ...extra,
    ],
  });
}

const T0 = new Date(2021, 1, 27, 15, 10, 19).getTime(); // local time 2021-02-27 15:10:19

function nodes(): AdminNode[] {
  return [
    {
      id: 0,
      host: 'pg0',
      port: 5432,
      weight: 1,
      status: 'up',
      role: 'primary',
      lastStatusChange: T0,
      delayBytes: 0,
      delaySeconds: 0,
      replicationState: '',
      replicationSyncState: '',
    },
    {
      id: 1,
      host: 'pg1',
      port: 5433,
      weight: 2,
      status: 'up',
      role: 'standby',
      lastStatusChange: T0,
      delayBytes: 1234,
      delaySeconds: 1.25,
      replicationState: 'streaming',
      replicationSyncState: 'async',
    },
  ];
}

function zeroCounters(): NodeStatementCounters {
  return {
    select_cnt: 0,
    insert_cnt: 0,
    update_cnt: 0,
    delete_cnt: 0,
    ddl_cnt: 0,
    other_cnt: 0,
    panic_cnt: 0,
    fatal_cnt: 0,
    error_cnt: 0,
  };
}

function ctx(over: Partial<AdminContext> = {}): AdminContext {
  const counters = [
    { ...zeroCounters(), select_cnt: 3, insert_cnt: 1 },
    { ...zeroCounters(), select_cnt: 7, error_cnt: 2 },
  ];
  return {
    config: config(),
    user: 'alice',
    sessionParams: new Map(),
    nodes: nodes(),
    primaryId: 0,
    counters: (id) => counters[id],
    loadBalanceNode: 1,
    probe: async (id): Promise<ProbeResult> => ({ up: true, inRecovery: id !== 0 }),
    sessions: () => [],
    cachedConnections: () => [],
    version: '0.1.0',
    processPid: 4242,
    processStartedAt: T0,
    now: () => T0 + 60_000,
    ...over,
  };
}

function rows(r: AdminResult): { columns: string[]; rows: string[][]; tag: string } {
  if (r.kind !== 'rows') throw new Error(`expected rows, got ${JSON.stringify(r)}`);
  return r;
}

describe('SHOW pool_nodes', () => {
  it('formats every cell like pgpool 4.3', async () => {
    const r = rows(await executeAdmin({ kind: 'show', target: 'pool_nodes' }, ctx()));
    expect(r.columns).toEqual(POOL_NODES_COLUMNS);
    expect(r.columns).toHaveLength(14);
    expect(r.tag).toBe('SELECT 2');
    expect(r.rows).toEqual([
      [
        '0',
        'pg0',
        '5432',
        'up',
        'up',
        '0.333333',
        'primary',
        'primary',
        '3',
        'false',
        '0',
        '',
        '',
        '2021-02-27 15:10:19',
      ],
      [
        '1',
        'pg1',
        '5433',
        'up',
        'up',
        '0.666667',
        'standby',
        'standby',
        '7',
        'true',
        '1234',
        'streaming',
        'async',
        '2021-02-27 15:10:19',
      ],
    ]);
  });

  it('shows delay in seconds with delay_threshold_by_time', async () => {
    const c = ctx({ config: config([['delay_threshold_by_time', '1000']]) });
    let r = rows(await executeAdmin({ kind: 'show', target: 'pool_nodes' }, c));
    expect(r.rows.map((x) => x[10])).toEqual(['0.000000 second', '1.250000 second']);
    c.nodes = nodes();
    c.nodes[1]!.delaySeconds = 3;
    r = rows(await executeAdmin({ kind: 'show', target: 'pool_nodes' }, c));
    expect(r.rows[1]![10]).toBe('3.000000 seconds');
  });

  it('pg_status/pg_role: unknown without health check, down on failure or timeout', async () => {
    let r = rows(
      await executeAdmin(
        { kind: 'show', target: 'pool_nodes' },
        ctx({ config: config([['health_check_period', '0']]) }),
      ),
    );
    expect(r.rows.map((x) => [x[4], x[7]])).toEqual([
      ['unknown', 'unknown'],
      ['unknown', 'unknown'],
    ]);

    const c = ctx({
      probe: (id) => (id === 0 ? Promise.reject(new Error('refused')) : new Promise<ProbeResult>(() => undefined)),
      probeTimeoutMs: 50,
    });
    r = rows(await executeAdmin({ kind: 'show', target: 'pool_nodes' }, c));
    expect(r.rows.map((x) => [x[4], x[7]])).toEqual([
      ['down', 'unknown'],
      ['down', 'unknown'],
    ]);

    r = rows(
      await executeAdmin({ kind: 'show', target: 'pool_nodes' }, ctx({ config: config([['sr_check_period', '0']]) })),
    );
    expect(r.rows.map((x) => [x[4], x[7]])).toEqual([
      ['up', 'unknown'],
      ['up', 'unknown'],
    ]);
  });

  it('down node, no primary, zero weight, empty hostname', async () => {
    const ns = nodes();
    ns[0]!.status = 'down';
    ns[0]!.weight = 0;
    ns[1]!.host = '';
    const r = rows(
      await executeAdmin(
        { kind: 'show', target: 'pool_nodes' },
        ctx({ nodes: ns, primaryId: -1, loadBalanceNode: -1 }),
      ),
    );
    expect(r.rows[0]!.slice(0, 7)).toEqual(['0', 'pg0', '5432', 'down', 'up', '0.000000', 'standby']);
    expect(r.rows[1]!.slice(0, 7)).toEqual(['1', '/tmp', '5433', 'up', 'up', '1.000000', 'standby']);
    expect(r.rows.map((x) => x[9])).toEqual(['false', 'false']);
  });
});

describe('other SHOW commands', () => {
  it('SHOW pgrelay_instances: one standalone row without coordination, the members with it', async () => {
    let r = rows(await executeAdmin({ kind: 'show', target: 'pgrelay_instances' }, ctx()));
    expect(r.columns).toEqual([
      'instance_name',
      'host',
      'port',
      'version',
      'state',
      'leader',
      'this_instance',
      'lease',
      'started',
    ]);
    expect(r.rows).toHaveLength(1);
    expect(r.rows[0]?.slice(4, 8)).toEqual(['standalone', 'true', 'true', 'n/a']);
    const inst = (name: string, leader: boolean, self: boolean) => ({
      name,
      host: 'h',
      port: 9999,
      version: '0.1.0',
      state: leader ? 'leader' : 'member',
      leader,
      self,
      lease: 'held',
      started: T0,
    });
    r = rows(
      await executeAdmin(
        { kind: 'show', target: 'pgrelay_instances' },
        ctx({ instances: () => [inst('A', false, true), inst('B', true, false)] }),
      ),
    );
    expect(r.rows.map((x) => x.slice(0, 8))).toEqual([
      ['A', 'h', '9999', '0.1.0', 'member', 'false', 'true', 'held'],
      ['B', 'h', '9999', '0.1.0', 'leader', 'true', 'false', 'held'],
    ]);
    expect(r.tag).toBe('SELECT 2');
  });

  it('pool_backend_stats', async () => {
    const r = rows(await executeAdmin({ kind: 'show', target: 'pool_backend_stats' }, ctx()));
    expect(r.columns).toHaveLength(14);
    expect(r.rows).toEqual([
      ['0', 'pg0', '5432', 'up', 'primary', '3', '1', '0', '0', '0', '0', '0', '0', '0'],
      ['1', 'pg1', '5433', 'up', 'standby', '7', '0', '0', '0', '0', '0', '0', '0', '2'],
    ]);
  });

  it('pool_health_check_stats', async () => {
    const s: HealthCheckStats = {
      totalCount: 10,
      successCount: 7,
      failCount: 1,
      skipCount: 2,
      retryCount: 4,
      maxRetryCount: 3,
      totalDurationMs: 80,
      maxDurationMs: 30,
      minDurationMs: 5,
      lastHealthCheck: T0,
      lastSuccessfulHealthCheck: T0,
      lastSkipHealthCheck: 0,
      lastFailedHealthCheck: T0 - 1000,
    };
    const r = rows(
      await executeAdmin(
        { kind: 'show', target: 'pool_health_check_stats' },
        ctx({ healthStats: (id) => (id === 1 ? s : undefined) }),
      ),
    );
    expect(r.columns).toEqual(POOL_HEALTH_CHECK_STATS_COLUMNS);
    expect(r.columns).toHaveLength(20);
    expect(r.rows[0]).toEqual([
      '0',
      'pg0',
      '5432',
      'up',
      'primary',
      '2021-02-27 15:10:19',
      '0',
      '0',
      '0',
      '0',
      '0',
      '0.000000',
      '0',
      '0',
      '0',
      '0.000000',
      '',
      '',
      '',
      '',
    ]);
    expect(r.rows[1]).toEqual([
      '1',
      'pg1',
      '5433',
      'up',
      'standby',
      '2021-02-27 15:10:19',
      '10',
      '7',
      '1',
      '2',
      '4',
      '0.500000',
      '3',
      '30',
      '5',
      '10.000000',
      '2021-02-27 15:10:19',
      '2021-02-27 15:10:19',
      '',
      '2021-02-27 15:10:18',
    ]);
  });

  it('pool_cache, pool_version, pool_status', async () => {
    const cache = rows(await executeAdmin({ kind: 'show', target: 'pool_cache' }, ctx()));
    expect(cache.columns).toHaveLength(9);
    expect(cache.rows).toEqual([['0', '0', '0.00', '0', '0', '0', '0', '0', '0']]);
    const v = rows(await executeAdmin({ kind: 'show', target: 'pool_version' }, ctx()));
    expect(v.columns).toEqual(['pool_version']);
    expect(v.rows[0]![0]).toMatch(/^\d+\.\d+\.\d+ \(pgrelay 0\.1\.0\)$/);
    // pgpool's legacy format (pgpool's SHOW pool_status): booleans and enums as numbers, per-node rows with
    // normalised weights, status and standby delay.
    const st = rows(await executeAdmin({ kind: 'show', target: 'pool_status' }, ctx()));
    expect(st.columns).toEqual(['item', 'value', 'description']);
    const val = (item: string): string | undefined => st.rows.find((x) => x[0] === item)?.[1];
    expect(val('load_balance_mode')).toBe('1');
    expect(val('disable_load_balance_on_write')).toBe('2');
    expect(val('backend_hostname1')).toBe('pg1');
    expect(val('backend_weight0')).toMatch(/^\d\.\d{6}$/);
    expect(val('backend_status1')).toBeDefined();
    expect(val('standby_delay1')).toMatch(/^\d+$/);
    expect(val('health_check_password')).toBe('*****');
  });

  it('pool_pools and pool_processes map sessions and cached connections', async () => {
    const conn: AdminBackendConnection = {
      nodeId: 1,
      pid: 9001,
      params: new Map([
        ['user', 'bob'],
        ['database', 'app'],
      ]),
      createdAt: T0,
      releasedAt: 0,
      useCount: 2,
    };
    const session: AdminSessionInfo = {
      pid: 77,
      user: 'bob',
      database: 'app',
      startedAt: T0,
      txStatus: 0x54,
      lastActivity: T0 + 30_000,
      backendConnections: [conn],
    };
    const cached: AdminBackendConnection = {
      nodeId: 0,
      pid: 9002,
      params: new Map([
        ['user', 'carol'],
        ['database', 'db2'],
      ]),
      createdAt: T0,
      releasedAt: T0 + 1000,
    };
    const c = ctx({ sessions: () => [session], cachedConnections: () => [cached] });
    const p = rows(await executeAdmin({ kind: 'show', target: 'pool_pools' }, c));
    expect(p.columns).toEqual(POOL_POOLS_COLUMNS);
    expect(p.columns).toHaveLength(17);
    expect(p.rows).toEqual([
      [
        '77',
        '2021-02-27 15:10:19',
        '1',
        '0',
        '0',
        '',
        '',
        '',
        '',
        '',
        '0',
        '0',
        '0',
        '0',
        '0',
        '0',
        'Idle in transaction',
      ],
      [
        '77',
        '2021-02-27 15:10:19',
        '1',
        '0',
        '1',
        'app',
        'bob',
        '2021-02-27 15:10:19',
        '2021-02-27 15:10:19',
        '',
        '30',
        '3',
        '0',
        '2',
        '9001',
        '1',
        'Idle in transaction',
      ],
      [
        '4242',
        '2021-02-27 15:10:19',
        '0',
        '0',
        '0',
        'db2',
        'carol',
        '2021-02-27 15:10:19',
        '',
        '2021-02-27 15:10:20',
        '0',
        '3',
        '0',
        '0',
        '9002',
        '0',
        'Wait for connection',
      ],
    ]);
    const pr = rows(await executeAdmin({ kind: 'show', target: 'pool_processes' }, c));
    expect(pr.columns).toEqual(POOL_PROCESSES_COLUMNS);
    expect(pr.rows).toEqual([
      ['77', '2021-02-27 15:10:19', '1', 'app', 'bob', '2021-02-27 15:10:19', '2', 'Idle in transaction'],
      ['4242', '2021-02-27 15:10:19', '0', 'db2', 'carol', '2021-02-27 15:10:19', '0', 'Wait for connection'],
    ]);
  });

  it('formatTimestamp', () => {
    expect(formatTimestamp(0)).toBe('');
    expect(formatTimestamp(new Date(2024, 0, 5, 3, 4, 5).getTime())).toBe('2024-01-05 03:04:05');
  });
});

describe('PGPOOL SHOW / SET / RESET', () => {
  it('PGPOOL SHOW <param>, groups, unknown', async () => {
    const c = ctx();
    expect(rows(await executeAdmin({ kind: 'pgpool_show', name: 'port' }, c))).toEqual({
      kind: 'rows',
      columns: ['port'],
      rows: [['9999']],
      tag: 'SELECT 1',
    });
    expect(rows(await executeAdmin({ kind: 'pgpool_show', name: 'health_check_password0' }, c)).rows).toEqual([
      ['*****'],
    ]);
    expect(rows(await executeAdmin({ kind: 'pgpool_show', name: 'sr_check_password' }, c)).rows).toEqual([['*****']]);
    expect(rows(await executeAdmin({ kind: 'pgpool_show', name: 'backend_hostname0' }, c)).rows).toEqual([['pg0']]);
    const be = rows(await executeAdmin({ kind: 'pgpool_show', name: 'backend' }, c));
    expect(be.columns).toEqual(['item', 'value', 'description']);
    expect(be.rows.map((x) => x[0])).toContain('backend_flag1');
    // watchdog: pgpool's watchdog parameters pgrelay has (coordination through etcd); heartbeat: none.
    const wd = rows(await executeAdmin({ kind: 'pgpool_show', name: 'watchdog' }, c));
    expect(wd.rows.map((x) => x[0])).toEqual([
      'failover_when_quorum_exists',
      'failover_require_consensus',
      'enable_consensus_with_half_votes',
      'delegate_ip',
      'if_up_cmd',
      'if_down_cmd',
      'arping_cmd',
    ]);
    const hb = rows(await executeAdmin({ kind: 'pgpool_show', name: 'heartbeat' }, c));
    expect(hb.rows).toEqual([]);
    expect(hb.tag).toBe('SELECT 0');
    expect(await executeAdmin({ kind: 'pgpool_show', name: 'nosuch' }, c)).toEqual({
      kind: 'error',
      error: { severity: 'ERROR', code: 'XX000', message: 'config variable "nosuch" not found' },
    });
  });

  it('PGPOOL SET changes session parameters only', async () => {
    const c = ctx();
    expect(await executeAdmin({ kind: 'pgpool_set', name: 'client_idle_limit', value: '10' }, c)).toEqual({
      kind: 'command',
      tag: 'SET',
    });
    expect(rows(await executeAdmin({ kind: 'pgpool_show', name: 'client_idle_limit' }, c)).rows).toEqual([['10s']]);
    expect(await executeAdmin({ kind: 'pgpool_set', name: 'log_statement', value: 'on' }, c)).toEqual({
      kind: 'command',
      tag: 'SET',
    });
    expect(rows(await executeAdmin({ kind: 'pgpool_show', name: 'log_statement' }, c)).rows).toEqual([['on']]);
    expect(c.config.log_statement).toBe(false);
    expect(c.sessionParams.get('client_idle_limit')).toBe(10);

    const e1 = await executeAdmin({ kind: 'pgpool_set', name: 'num_init_children', value: '5' }, c);
    expect(e1).toEqual({
      kind: 'error',
      error: {
        severity: 'ERROR',
        code: 'XX000',
        message: 'invalid Context, value for parameter "num_init_children" cannot be changed',
      },
    });
    const e2 = await executeAdmin({ kind: 'pgpool_set', name: 'nosuch', value: '5' }, c);
    expect(e2.kind === 'error' && e2.error.message).toBe('unrecognized configuration parameter "nosuch"');
    const e3 = await executeAdmin({ kind: 'pgpool_set', name: 'log_statement', value: 'maybe' }, c);
    expect(e3.kind === 'error' && e3.error.message).toBe('parameter "log_statement" requires a Boolean value');
    const e4 = await executeAdmin({ kind: 'pgpool_set', name: 'client_idle_limit', value: 'abc' }, c);
    expect(e4.kind === 'error' && e4.error.code).toBe('XX000');
    const e5 = await executeAdmin({ kind: 'pgpool_set', name: 'backend_weight0', value: '3' }, c);
    expect(e5.kind === 'error' && e5.error.message).toBe(
      'invalid Context, value for parameter "backend_weight0" cannot be changed',
    );

    // DEFAULT / RESET
    expect(await executeAdmin({ kind: 'pgpool_set', name: 'client_idle_limit', value: null }, c)).toEqual({
      kind: 'command',
      tag: 'SET',
    });
    expect(rows(await executeAdmin({ kind: 'pgpool_show', name: 'client_idle_limit' }, c)).rows).toEqual([['0']]);
    expect(await executeAdmin({ kind: 'pgpool_reset', name: 'log_statement' }, c)).toEqual({
      kind: 'command',
      tag: 'SET',
    });
    expect(c.sessionParams.size).toBe(0);
    await executeAdmin({ kind: 'pgpool_set', name: 'log_min_messages', value: 'debug1' }, c);
    expect(await executeAdmin({ kind: 'pgpool_reset', name: 'all' }, c)).toEqual({ kind: 'command', tag: 'RESET' });
    expect(c.sessionParams.size).toBe(0);
    const e6 = await executeAdmin({ kind: 'pgpool_reset', name: 'port' }, c);
    expect(e6.kind).toBe('error');
  });

  it('PGPOOL SET CACHE DELETE answers as pgpool without a cached entry', async () => {
    expect(await executeAdmin({ kind: 'cache_delete', query: 'SELECT 1' }, ctx())).toEqual({
      kind: 'command',
      tag: 'SET',
      notices: [{ severity: 'NOTICE', code: '00000', message: 'query cache does not exist for query: "SELECT 1"' }],
    });
  });

  it('syntax errors', async () => {
    expect(await executeAdmin({ kind: 'syntax_error', near: 'FOO' }, ctx())).toEqual({
      kind: 'error',
      error: { severity: 'ERROR', code: '42601', message: 'syntax error at or near "FOO"' },
    });
    const r = await executeAdmin({ kind: 'syntax_error', near: '' }, ctx());
    expect(r.kind === 'error' && r.error.message).toBe('syntax error at end of input');
  });
});

describe('permissions and node operations', () => {
  it('admin_users empty: SHOW for everyone, node operations for nobody', async () => {
    const c = ctx();
    expect((await executeAdmin({ kind: 'show', target: 'pool_nodes' }, c)).kind).toBe('rows');
    const r = await executeAdmin({ kind: 'attach_node', node: 1 }, c);
    expect(r.kind === 'error' && r.error.code).toBe('42501');
    expect((await executeAdmin({ kind: 'reload' }, c)).kind).toBe('error');
    expect((await executeAdmin({ kind: 'stop', mode: 'fast' }, c)).kind).toBe('error');
  });

  it('admin_users set: only listed users', async () => {
    const calls: string[] = [];
    const ops = {
      attachNode: (n: number) => void calls.push(`attach ${n}`),
      detachNode: (n: number, g: boolean) => void calls.push(`detach ${n} ${g}`),
      promoteNode: async (n: number, s: boolean, g: boolean) => void calls.push(`promote ${n} ${s} ${g}`),
      reload: () => void calls.push('reload'),
      stop: () => {
        throw Object.assign(new Error('already stopping'), { code: '55000' });
      },
    };
    const cfg = config([['admin_users', 'admin']]);
    const bob = ctx({ config: cfg, user: 'bob', ops });
    const denied = await executeAdmin({ kind: 'show', target: 'pool_nodes' }, bob);
    expect(denied.kind === 'error' && denied.error.code).toBe('42501');
    expect((await executeAdmin({ kind: 'pgpool_show', name: 'port' }, bob)).kind).toBe('error');

    const admin = ctx({ config: cfg, user: 'admin', ops });
    expect((await executeAdmin({ kind: 'show', target: 'pool_nodes' }, admin)).kind).toBe('rows');
    expect(await executeAdmin({ kind: 'attach_node', node: 1 }, admin)).toEqual({
      kind: 'command',
      tag: 'ATTACH NODE',
    });
    expect(await executeAdmin({ kind: 'detach_node', node: 0, gracefully: true }, admin)).toEqual({
      kind: 'command',
      tag: 'DETACH NODE',
    });
    expect(await executeAdmin({ kind: 'promote_node', node: 1, switchover: true, gracefully: true }, admin)).toEqual({
      kind: 'command',
      tag: 'PROMOTE NODE',
    });
    expect(await executeAdmin({ kind: 'reload' }, admin)).toEqual({ kind: 'command', tag: 'RELOAD' });
    const stop = await executeAdmin({ kind: 'stop', mode: 'smart' }, admin);
    expect(stop.kind === 'error' && stop.error.code).toBe('55000');
    expect(calls).toEqual(['attach 1', 'detach 0 true', 'promote 1 true true', 'reload']);
    const bad = await executeAdmin({ kind: 'attach_node', node: 5 }, admin);
    expect(bad.kind === 'error' && bad.error.code).toBe('22023');
    const noRecovery = await executeAdmin({ kind: 'recovery_node', node: 1 }, admin);
    expect(noRecovery.kind === 'error' && noRecovery.error.code).toBe('0A000');
    const unsupported = await executeAdmin({ kind: 'reload' }, ctx({ config: cfg, user: 'admin' }));
    expect(unsupported.kind === 'error' && unsupported.error.code).toBe('0A000');
  });
});

// ---------------------------------------------------------------------------
// wire encoding

interface Msg {
  type: string;
  body: Buffer;
}

function decode(buf: Buffer): Msg[] {
  const out: Msg[] = [];
  let o = 0;
  while (o < buf.length) {
    const type = String.fromCharCode(buf[o]!);
    const len = buf.readUInt32BE(o + 1);
    out.push({ type, body: buf.subarray(o + 5, o + 1 + len) });
    o += 1 + len;
  }
  expect(o).toBe(buf.length);
  return out;
}

function cstr(b: Buffer, o: number): [string, number] {
  const e = b.indexOf(0, o);
  return [b.toString('utf8', o, e), e + 1];
}

function decodeRowDescription(b: Buffer): Array<{ name: string; typeOid: number; format: number }> {
  const n = b.readInt16BE(0);
  let o = 2;
  const cols: Array<{ name: string; typeOid: number; format: number }> = [];
  for (let i = 0; i < n; i++) {
    const [name, p] = cstr(b, o);
    cols.push({ name, typeOid: b.readInt32BE(p + 6), format: b.readInt16BE(p + 16) });
    o = p + 18;
  }
  return cols;
}

function decodeDataRow(b: Buffer): Array<string | null> {
  const n = b.readInt16BE(0);
  let o = 2;
  const vals: Array<string | null> = [];
  for (let i = 0; i < n; i++) {
    const len = b.readInt32BE(o);
    o += 4;
    if (len < 0) vals.push(null);
    else {
      vals.push(b.toString('utf8', o, o + len));
      o += len;
    }
  }
  return vals;
}

function fields(b: Buffer): Record<string, string> {
  const f: Record<string, string> = {};
  let o = 0;
  while (b[o] !== 0) {
    const k = String.fromCharCode(b[o]!);
    const [v, p] = cstr(b, o + 1);
    f[k] = v;
    o = p;
  }
  return f;
}

describe('wire encoding', () => {
  const result: AdminResult = {
    kind: 'rows',
    columns: ['a', 'b'],
    rows: [
      ['1', 'x'],
      ['2', ''],
      ['3', 'zé'],
    ],
    tag: 'SELECT 3',
  };

  it('simple protocol: T, D*, C (no Z)', () => {
    const msgs = decode(encodeAdminResult(result, { extended: false }));
    expect(msgs.map((m) => m.type).join('')).toBe('TDDDC');
    expect(decodeRowDescription(msgs[0]!.body)).toEqual([
      { name: 'a', typeOid: 25, format: 0 },
      { name: 'b', typeOid: 25, format: 0 },
    ]);
    expect(msgs.slice(1, 4).map((m) => decodeDataRow(m.body))).toEqual(result.kind === 'rows' ? result.rows : []);
    expect(cstr(msgs[4]!.body, 0)[0]).toBe('SELECT 3');
  });

  it('notices, commands and errors', () => {
    const cmd: AdminResult = {
      kind: 'command',
      tag: 'SET',
      notices: [{ severity: 'NOTICE', code: '00000', message: 'hello' }],
    };
    let msgs = decode(encodeAdminResult(cmd, { extended: false }));
    expect(msgs.map((m) => m.type).join('')).toBe('NC');
    expect(fields(msgs[0]!.body)).toMatchObject({ S: 'NOTICE', C: '00000', M: 'hello' });
    expect(cstr(msgs[1]!.body, 0)[0]).toBe('SET');
    const e: AdminResult = {
      kind: 'error',
      error: { severity: 'ERROR', code: 'XX000', message: 'config variable "x" not found' },
    };
    msgs = decode(encodeAdminResult(e, { extended: false }));
    expect(msgs.map((m) => m.type).join('')).toBe('E');
    expect(fields(msgs[0]!.body)).toMatchObject({
      S: 'ERROR',
      V: 'ERROR',
      C: 'XX000',
      M: 'config variable "x" not found',
    });
  });

  it('extended protocol pieces', () => {
    expect(
      decode(encodeAdminResult(result, { extended: true }))
        .map((m) => m.type)
        .join(''),
    ).toBe('DDDC');
    expect(
      decode(encodeAdminResult(result, { extended: true, describe: true }))
        .map((m) => m.type)
        .join(''),
    ).toBe('TDDDC');
    expect(decode(rowDescriptionFor(result)).map((m) => m.type)).toEqual(['T']);
    expect(decode(rowDescriptionFor({ kind: 'command', tag: 'SET' })).map((m) => m.type)).toEqual(['n']);
    expect(
      decode(dataRowsFor(result))
        .map((m) => m.type)
        .join(''),
    ).toBe('DDD');
    expect(decode(commandCompleteFor(result)).map((m) => m.type)).toEqual(['C']);

    const first = encodeRows(result, 0, 2);
    expect(
      decode(first.buf)
        .map((m) => m.type)
        .join(''),
    ).toBe('DDs');
    expect(first).toMatchObject({ next: 2, done: false });
    const second = encodeRows(result, first.next, 2);
    const m2 = decode(second.buf);
    expect(m2.map((m) => m.type).join('')).toBe('DC');
    expect(cstr(m2[1]!.body, 0)[0]).toBe('SELECT 1');
    expect(second).toMatchObject({ next: 3, done: true });
    expect(
      decode(encodeRows(result, 0, 0).buf)
        .map((m) => m.type)
        .join(''),
    ).toBe('DDDC');
  });

  it('end to end: parse, execute, encode', async () => {
    const cmd = parseAdminCommand('show pool_nodes;');
    expect(cmd).toBeDefined();
    const r = await executeAdmin(cmd!, ctx());
    const msgs = decode(encodeAdminResult(r, { extended: false }));
    expect(msgs.map((m) => m.type).join('')).toBe('TDDC');
    expect(decodeRowDescription(msgs[0]!.body).map((c) => c.name)).toEqual(POOL_NODES_COLUMNS);
  });
});
