/**
 * The dashboard's pure parts: the JSON API's shapes (and that they carry what
 * the admin commands answer), the node event ring, the time series, the login
 * and CSRF checks, and the pages' HTML (labels, table headers, escaping).
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { AdminContext, AdminNode, NodeStatementCounters } from '../../src/admin/context.js';
import { executeAdmin } from '../../src/admin/engine.js';
import { buildScramVerifier } from '../../src/auth/scram.js';
import { pgMd5Hash } from '../../src/auth/md5.js';
import type { PasswordFor } from '../../src/auth/passwd.js';
import { NodeEventRing } from '../../src/cluster/event-ring.js';
import type { ClusterManagerEvents } from '../../src/cluster/events.js';
import { NodeTable } from '../../src/cluster/nodes.js';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { configJson, eventsJson, nodesJson, sessionsJson } from '../../src/dashboard/api.js';
import { DashboardAuth, parseCookies, SESSION_COOKIE, sessionCookie } from '../../src/dashboard/auth.js';
import { StatsHistory } from '../../src/dashboard/history.js';
import { ClientGate } from '../../src/server/admission.js';
import {
  configPage,
  confirmPage,
  eventsPage,
  loginPage,
  overviewPage,
  sessionsPage,
  type Viewer,
} from '../../src/dashboard/pages.js';

const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);

function config(extra: Array<[string, string]> = []): Config {
  return loadConfig({
    set: [
      ['backend_hostname0', 'pg0'],
      ['backend_port0', '5432'],
      ['backend_hostname1', 'pg1'],
      ['backend_port1', '5433'],
      ['backend_weight1', '3'],
      ['sr_check_period', '2'],
      ['sr_check_password', 'hunter2'],
      ['health_check_period', '5'],
      ...extra,
    ],
  });
}

function zero(): NodeStatementCounters {
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

function nodes(): AdminNode[] {
  const base = { lastStatusChange: T0, replicationState: '', replicationSyncState: '', delaySeconds: 0 };
  return [
    { ...base, id: 0, host: 'pg0', port: 5432, weight: 1, status: 'up', role: 'primary', delayBytes: 0 },
    {
      ...base,
      id: 1,
      host: 'pg1',
      port: 5433,
      weight: 3,
      status: 'up',
      role: 'standby',
      delayBytes: 4096,
      delaySeconds: 1.5,
      replicationState: 'streaming',
      replicationSyncState: 'async',
    },
  ];
}

function ctx(over: Partial<AdminContext> = {}): AdminContext {
  const counters = [
    { ...zero(), select_cnt: 1, insert_cnt: 4 },
    { ...zero(), select_cnt: 3 },
  ];
  return {
    config: config(),
    user: '',
    sessionParams: new Map(),
    nodes: nodes(),
    primaryId: 0,
    counters: (id) => counters[id],
    loadBalanceNode: -1,
    probe: async (id) => ({ up: true, inRecovery: id !== 0 }),
    sessions: () => [
      {
        pid: 777,
        user: 'app',
        database: 'shop',
        startedAt: T0,
        txStatus: 0x54,
        lastActivity: T0 + 1000,
        backendConnections: [{ nodeId: 1, pid: 4242, createdAt: T0, releasedAt: 0, useCount: 2 }],
      },
    ],
    cachedConnections: () => [
      {
        nodeId: 0,
        pid: 5151,
        params: new Map([
          ['user', 'app'],
          ['database', 'shop'],
        ]),
        createdAt: T0,
        releasedAt: T0 + 500,
        useCount: 1,
      },
    ],
    version: '9.9.9',
    processStartedAt: T0,
    now: () => T0 + 10_000,
    ...over,
  };
}

describe('configuration', () => {
  it('dashboard and metrics_listen_address: defaults off and localhost; dashboard = on needs metrics_port', () => {
    const c = config();
    expect(c.dashboard).toBe(false);
    expect(c.metrics_listen_address).toBe('localhost');
    expect(() => config([['dashboard', 'on']])).toThrow(/dashboard = on needs metrics_port/);
    const on = config([
      ['dashboard', 'on'],
      ['metrics_port', '9719'],
      ['metrics_listen_address', '*'],
    ]);
    expect([on.dashboard, on.metrics_port, on.metrics_listen_address]).toEqual([true, 9719, '*']);
  });
});

describe('JSON API', () => {
  it('/api/nodes: one object per node with the values SHOW pool_nodes prints', async () => {
    const c = ctx();
    const j = await nodesJson(c, c.config);
    expect(j.primary).toBe(0);
    expect(j.time).toBe(new Date(T0 + 10_000).toISOString());
    expect(j.nodes[1]).toEqual({
      id: 1,
      hostname: 'pg1',
      port: 5433,
      status: 'up',
      pgStatus: 'up',
      weight: 0.75,
      role: 'standby',
      pgRole: 'standby',
      selectCount: 3,
      delayBytes: 4096,
      delaySeconds: 1.5,
      replicationState: 'streaming',
      replicationSyncState: 'async',
      lastStatusChange: new Date(T0).toISOString(),
      loadBalanceShare: 0.75,
      statements: { ...zero(), select_cnt: 3 },
    });
    expect(j.nodes[0]).toMatchObject({ role: 'primary', pgRole: 'primary', delayBytes: 0, replicationState: '' });
    // the same reports as the admin command's cells
    const show = await executeAdmin({ kind: 'show', target: 'pool_nodes' }, c);
    if (show.kind !== 'rows') throw new Error('rows expected');
    for (const [i, row] of show.rows.entries()) {
      const n = j.nodes[i]!;
      expect([row[0], row[1], row[2], row[3], row[4], row[6], row[7], row[8], row[10]]).toEqual([
        String(n.id),
        n.hostname,
        String(n.port),
        n.status,
        n.pgStatus,
        n.role,
        n.pgRole,
        String(n.selectCount),
        String(n.delayBytes),
      ]);
      expect(Number(row[5])).toBeCloseTo(n.weight, 6);
    }
  });

  it('/api/sessions: sessions with their backends, cached connections, waiting clients, connections per node', () => {
    const j = sessionsJson(ctx(), { count: 2, longestWaitSeconds: 1.5 });
    expect(j.sessions).toEqual([
      {
        pid: 777,
        user: 'app',
        database: 'shop',
        startedAt: new Date(T0).toISOString(),
        status: 'Idle in transaction',
        idleSeconds: 9,
        backends: [{ nodeId: 1, pid: 4242, createdAt: new Date(T0).toISOString(), useCount: 2 }],
      },
    ]);
    expect(j.cachedConnections).toEqual([
      {
        nodeId: 0,
        pid: 5151,
        user: 'app',
        database: 'shop',
        createdAt: new Date(T0).toISOString(),
        releasedAt: new Date(T0 + 500).toISOString(),
        useCount: 1,
      },
    ]);
    expect(j.waiting).toEqual({ count: 2, longestWaitSeconds: 1.5 });
    expect(j.backendConnections).toEqual([
      { node: 0, inUse: 0, idle: 1 },
      { node: 1, inUse: 1, idle: 0 },
    ]);
  });

  it('/api/config: the rows of PGPOOL SHOW ALL, passwords masked', async () => {
    const c = ctx();
    const j = configJson(c.config);
    const show = await executeAdmin({ kind: 'pgpool_show', name: 'all' }, c);
    if (show.kind !== 'rows') throw new Error('rows expected');
    expect(j.parameters.map((p) => [p.item, p.value, p.description])).toEqual(show.rows);
    expect(j.parameters.find((p) => p.item === 'sr_check_password')?.value).toBe('*****');
    expect(JSON.stringify(j)).not.toContain('hunter2');
  });

  it('/api/events: newest first, times as ISO strings', () => {
    const ring = new NodeEventRing(10, () => T0);
    ring.record({ kind: 'detach', node: 1, reason: 'a' });
    ring.record({ kind: 'attach', node: 1, reason: 'b' });
    expect(eventsJson(ring.list())).toEqual({
      events: [
        { seq: 2, time: new Date(T0).toISOString(), kind: 'attach', node: 1, reason: 'b' },
        { seq: 1, time: new Date(T0).toISOString(), kind: 'detach', node: 1, reason: 'a' },
      ],
    });
  });
});

describe('NodeEventRing', () => {
  it('keeps the last `capacity` events and answers what is newer than `since`', () => {
    const ring = new NodeEventRing(3);
    for (let i = 0; i < 5; i++) ring.record({ kind: 'detach', node: i, reason: String(i) });
    expect(ring.list().map((e) => e.node)).toEqual([2, 3, 4]);
    expect(ring.list(4).map((e) => e.seq)).toEqual([5]);
    expect(ring.lastSeq).toBe(5);
  });

  it('records detaches, attaches, failovers of the primary and promotions from the cluster', () => {
    const ring = new NodeEventRing();
    const cluster = new EventEmitter<ClusterManagerEvents>();
    const table = new NodeTable(config().backends);
    const stop = ring.follow(cluster, table);
    table.setPrimary(0, 'primary search at start-up');
    cluster.emit('node-down', { node: 1, reason: 'detached by operator' });
    const standbyDetach = { failed: [1], reason: 'detached by operator', oldPrimary: 0, primaryFailed: false };
    cluster.emit('failover-done', { ...standbyDetach, newPrimary: 0, durationMs: 3 });
    cluster.emit('node-up', { node: 1, reason: 'attached by operator' });
    const primaryDown = { failed: [0], reason: 'health check failed', oldPrimary: 0, primaryFailed: true };
    cluster.emit('failover-done', { ...primaryDown, newPrimary: 1, durationMs: 1234.4 });
    table.setPrimary(1, 'failover');
    stop();
    cluster.emit('node-down', { node: 1, reason: 'after stop' });
    expect(ring.list().map((e) => [e.kind, e.node, e.reason])).toEqual([
      ['promotion', 0, 'primary search at start-up'],
      ['detach', 1, 'detached by operator'],
      ['attach', 1, 'attached by operator'],
      ['failover', 0, 'health check failed'],
      ['promotion', 1, 'failover'],
    ]);
    expect(ring.list()[3]!.detail).toEqual({
      failed: [0],
      oldPrimary: 0,
      newPrimary: 1,
      primaryFailed: true,
      durationMs: 1234,
    });
  });
});

describe('waiting clients', () => {
  it('ClientGate tells how long the first waiting client has waited', async () => {
    const gate = new ClientGate(1);
    expect(await gate.acquire(0)).toBe(true);
    expect(gate.longestWaitMs()).toBe(0);
    const t = Date.now();
    const second = gate.acquire(0);
    expect(gate.waiting).toBe(1);
    expect(gate.longestWaitMs(t + 5000)).toBeGreaterThanOrEqual(4000);
    gate.release();
    expect(await second).toBe(true);
    expect(gate.longestWaitMs()).toBe(0);
  });
});

describe('StatsHistory', () => {
  it('samples statements per second and the standbys lag, keeping the last `capacity` samples', () => {
    let t = T0;
    const counters = [zero(), zero()];
    const ns = nodes();
    const h = new StatsHistory(
      { nodes: () => ns, primaryId: () => 0, counters: (id) => counters[id] },
      1000,
      3,
      () => t,
    );
    h.sample();
    counters[1]!.select_cnt = 10;
    counters[0]!.insert_cnt = 4;
    counters[0]!.error_cnt = 100; // errors are not statements
    t += 2000;
    h.sample();
    ns[1]!.delayBytes = 8192;
    t += 1000;
    h.sample();
    t += 1000;
    h.sample();
    const s = h.snapshot();
    expect(s.time).toEqual([(T0 + 2000) / 1000, (T0 + 3000) / 1000, (T0 + 4000) / 1000]);
    expect(s.nodes[0]).toEqual({ id: 0, statementsPerSecond: [2, 0, 0], lagBytes: [0, 0, 0], lagSeconds: [0, 0, 0] });
    expect(s.nodes[1]).toEqual({
      id: 1,
      statementsPerSecond: [5, 0, 0],
      lagBytes: [4096, 8192, 8192],
      lagSeconds: [1.5, 1.5, 1.5],
    });
  });
});

describe('DashboardAuth', () => {
  const entries = new Map<string, PasswordFor>([
    ['md5user', { kind: 'md5', hash: pgMd5Hash('pw1', 'md5user') }],
    ['plainuser', { kind: 'plain', password: 'pw2' }],
    ['scramuser', { kind: 'scram', verifier: buildScramVerifier('pw3') }],
  ]);
  const source = {
    passwordFor: (u: string) => entries.get(u),
    primary: () => undefined,
    connectTimeoutMs: () => 1000,
  };

  it('checks passwords against pool_passwd entries of every kind; no entry and no primary: refused', async () => {
    const auth = new DashboardAuth(source);
    for (const [u, p] of [
      ['md5user', 'pw1'],
      ['plainuser', 'pw2'],
      ['scramuser', 'pw3'],
    ])
      expect((await auth.login(u!, p!, `ok-${u}`)).ok, u).toBe(true);
    for (const [u, p] of [
      ['md5user', 'pw2'],
      ['plainuser', ''],
      ['scramuser', 'PW3'],
      ['nobody', 'x'],
    ])
      expect(await auth.login(u!, p!, `bad-${u}`), u).toEqual({
        ok: false,
        status: 401,
        reason: 'wrong user name or password',
      });
  });

  it('makes a session cookie (HttpOnly, SameSite=Strict) with its own CSRF token; expires after 30 idle minutes', async () => {
    let t = T0;
    const auth = new DashboardAuth(source, () => t);
    const r = await auth.login('plainuser', 'pw2', '127.0.0.1');
    if (!r.ok) throw new Error('login failed');
    const cookie = sessionCookie(r.session, false);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const header = `other=1; ${cookie.split(';')[0]}`;
    expect(parseCookies(header).get(SESSION_COOKIE)).toBe(r.session.token);
    expect(auth.session(header)?.user).toBe('plainuser');
    expect(DashboardAuth.csrfValid(r.session, r.session.csrf)).toBe(true);
    expect(DashboardAuth.csrfValid(r.session, undefined)).toBe(false);
    expect(DashboardAuth.csrfValid(r.session, `${r.session.csrf}x`)).toBe(false);
    expect(DashboardAuth.csrfValid(r.session, '')).toBe(false);
    expect(auth.session(`${SESSION_COOKIE}=forged`)).toBeUndefined();
    t += 29 * 60_000;
    expect(auth.session(header)).toBeDefined();
    t += 31 * 60_000;
    expect(auth.session(header)).toBeUndefined();
  });

  it('makes an address wait a minute after five failed logins', async () => {
    let t = T0;
    const auth = new DashboardAuth(source, () => t);
    for (let i = 0; i < 5; i++) expect((await auth.login('plainuser', 'nope', '10.0.0.9')).ok).toBe(false);
    const r = await auth.login('plainuser', 'pw2', '10.0.0.9');
    expect(r).toMatchObject({ ok: false, status: 429 });
    expect((await auth.login('plainuser', 'pw2', '10.0.0.10')).ok, 'another address').toBe(true);
    t += 61_000;
    expect((await auth.login('plainuser', 'pw2', '10.0.0.9')).ok).toBe(true);
  });
});

describe('pages', () => {
  const viewer: Viewer = { user: 'adm', admin: true, actionsEnabled: true, csrf: 'tok"en' };

  async function allPages(): Promise<Array<[string, string]>> {
    const c = ctx();
    const n = await nodesJson(c, c.config);
    const ev = eventsJson([{ seq: 1, time: T0, kind: 'detach', node: 1, reason: 'x' }]).events;
    return [
      ['overview', overviewPage(n, ev, viewer, '1')],
      ['sessions', sessionsPage(sessionsJson(c, { count: 0, longestWaitSeconds: 0 }), viewer, '1')],
      ['events', eventsPage(ev, viewer, '1')],
      ['config', configPage(configJson(c.config).parameters, viewer, '1')],
      ['login', loginPage({ admin: false, actionsEnabled: true }, '1', 'wrong user name or password')],
      ['confirm', confirmPage('promote', 1, viewer, '1')],
    ];
  }

  it('pass a basic accessibility check: lang, title, one h1, captions, column headers with scope, labelled fields', async () => {
    for (const [name, html] of await allPages()) {
      expect(html, name).toMatch(/^<!DOCTYPE html>\n<html lang="en">/);
      expect(html, name).toMatch(/<title>[^<]+<\/title>/);
      expect(html.match(/<h1>/g)?.length, name).toBe(1);
      for (const table of html.match(/<table[\s\S]*?<\/table>/g) ?? []) {
        expect(table, name).toMatch(/<caption>[^<]+/);
        const head = /<thead>([\s\S]*?)<\/thead>/.exec(table)?.[1] ?? '';
        const ths = head.match(/<th\b[^>]*>/g) ?? [];
        expect(ths.length, `${name}: column headers`).toBeGreaterThan(0);
        for (const th of ths) expect(th, name).toContain('scope="col"');
      }
      for (const input of html.match(/<input\b[^>]*>/g) ?? []) {
        if (input.includes('type="hidden"')) continue;
        const id = /id="([^"]+)"/.exec(input)?.[1];
        expect(id, `${name}: ${input}`).toBeTruthy();
        expect(html, `${name}: label for #${id}`).toContain(`<label for="${id}">`);
      }
    }
  });

  it('write status and role in words and escape what they show', async () => {
    const c = ctx({
      sessions: () => [
        {
          pid: 1,
          user: '<script>alert(1)</script>',
          database: 'd"b',
          startedAt: T0,
          txStatus: 0x49,
          backendConnections: [],
        },
      ],
    });
    const html = sessionsPage(sessionsJson(c, { count: 0, longestWaitSeconds: 0 }), viewer, '1');
    expect(html).not.toContain('<script>alert');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('d&quot;b');
    const pages = await allPages();
    const overview = pages[0]![1];
    expect(overview).toContain('class="status-up">up</td>');
    expect(overview, 'local time in the text, ISO in datetime').toMatch(
      /<time datetime="2026-01-02T03:04:05\.000Z">2026-01-0[12] \d\d:\d\d:05<\/time>/,
    );
    expect(overview).toContain('class="role-primary">primary</td>');
    expect(overview).toContain('value="tok&quot;en"');
    expect(overview).toContain('aria-label="Detach node 1"');
    expect(overview).toContain('aria-label="Promote node 1"');
    expect(overview, 'no promote for the primary').not.toContain('aria-label="Promote node 0"');
    const readOnly = overviewPage(await nodesJson(c, c.config), [], { admin: false, actionsEnabled: false }, '1');
    expect(readOnly).not.toContain('/confirm');
    expect(readOnly).toContain('Read-only');
  });
});
