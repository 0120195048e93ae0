/**
 * The web dashboard (dashboard = on, served on metrics_port): its JSON API
 * against what the admin SQL commands answer, its protections (localhost by
 * default, login, CSRF, admin_users, read-only without them), and the pages in
 * headless Chromium (Debian's chromium driven by playwright-core): the
 * overview, a standby's lag growing while its replay is paused, and a detach /
 * attach clicked by an admin. Own DevCluster (primary + 2 standbys): pausing
 * replay would disturb the other files on the shared cluster. Screenshots go
 * to test-output/dashboard/.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import nodeHttp from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster, freePort } from '../../dev/devcluster.js';
import { collectPageErrors, launchChromium, outputDir, screenshot } from '../support/browser.js';
import { closeAllClients, endPg, pgClient, queryRows } from '../support/clients.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { pollUntil } from '../support/wait.js';

const ADMIN = 'dash_admin';
const ADMIN_PW = 'admin secret';
const READER = 'dash_reader';
const READER_PW = 'reader secret';

interface ApiNode {
  id: number;
  hostname: string;
  port: number;
  status: string;
  pgStatus: string;
  role: string;
  pgRole: string;
  weight: number;
  selectCount: number;
  delayBytes: number;
  delaySeconds: number;
  replicationState: string;
  replicationSyncState: string;
  lastStatusChange: string | null;
  loadBalanceShare: number;
  statements: Record<string, number>;
}

interface Http {
  status: number;
  body: string;
  headers: Headers;
}

describe('dashboard (own DevCluster: primary + 2 standbys)', () => {
  let cluster: DevCluster;
  let proxy: ProxyHandle;
  let base: string;
  let dir: string;
  let browser: Browser;
  /** One browser context and page for all browser tests (a new one costs seconds on a loaded machine). */
  let context: BrowserContext;
  let page: Page;
  let pageErrors: string[];
  const shots = outputDir('dashboard');

  async function http(
    p: string,
    o: { method?: string; body?: string; cookie?: string; type?: string; headers?: Record<string, string> } = {},
  ): Promise<Http> {
    const r = await fetch(`${base}${p}`, {
      method: o.method ?? 'GET',
      body: o.body,
      redirect: 'manual',
      signal: AbortSignal.timeout(15_000),
      headers: {
        ...(o.cookie ? { Cookie: o.cookie } : {}),
        ...(o.body !== undefined ? { 'Content-Type': o.type ?? 'application/x-www-form-urlencoded' } : {}),
        ...(o.headers ?? {}),
      },
    });
    return { status: r.status, body: await r.text(), headers: r.headers };
  }

  async function api<T>(p: string): Promise<T> {
    const r = await http(p);
    expect(r.status, `${p}: ${r.body}`).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    return JSON.parse(r.body) as T;
  }

  /** Log in with the form; returns the session cookie and its CSRF token. */
  async function login(user: string, password: string): Promise<{ cookie: string; csrf: string }> {
    const r = await http('/login', { method: 'POST', body: new URLSearchParams({ user, password }).toString() });
    expect(r.status, r.body).toBe(303);
    const cookie = (r.headers.get('set-cookie') ?? '').split(';')[0]!;
    expect(cookie).toMatch(/^pgrelay_dashboard=.{20,}/);
    const page = await http('/', { cookie });
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)?.[1];
    expect(csrf, 'the page carries the CSRF token').toBeTruthy();
    return { cookie, csrf: csrf! };
  }

  async function poolNodes(): Promise<Array<Record<string, string>>> {
    return queryRows({ port: proxy.port }, 'SHOW pool_nodes');
  }

  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 2 });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-dashboard-'));
    const md5 = `md5${crypto.createHash('md5').update(`${ADMIN_PW}${ADMIN}`).digest('hex')}`;
    fs.writeFileSync(path.join(dir, 'pool_passwd'), `${ADMIN}:${md5}\n${READER}:TEXT${READER_PW}\n`);
    const metricsPort = await freePort();
    proxy = await startProxy({
      cluster,
      config: {
        sr_check_period: 1,
        health_check_period: 1,
        metrics_port: metricsPort,
        dashboard: true,
        admin_users: `${ADMIN},postgres`,
        pool_passwd: path.join(dir, 'pool_passwd'),
      },
      startTimeoutMs: 60_000,
    });
    base = `http://127.0.0.1:${metricsPort}`;
    browser = await launchChromium();
    context = await browser.newContext({ baseURL: base, viewport: { width: 1280, height: 1000 } });
    context.setDefaultTimeout(30_000);
    page = await context.newPage();
    pageErrors = collectPageErrors(page);
  });

  afterEach(async () => {
    await closeAllClients();
    // each browser test checks the errors of its own pages
    pageErrors?.splice(0);
  });

  afterAll(async () => {
    await browser?.close().catch(() => undefined);
    await proxy?.stop();
    await cluster?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('/api/nodes reports what SHOW pool_nodes reports; /api/config is PGPOOL SHOW ALL with secrets masked', async () => {
    await pollUntil(
      async () => (await poolNodes()).map((r) => r.replication_state),
      (s) => s[1] === 'streaming' && s[2] === 'streaming',
      { what: 'the sr check to see both standbys streaming', timeoutMs: 30_000 },
    );
    const rows = await poolNodes();
    const data = await api<{ primary: number; nodes: ApiNode[] }>('/api/nodes');
    expect(data.primary).toBe(0);
    expect(data.nodes.map((n) => n.role)).toEqual(['primary', 'standby', 'standby']);
    for (const [i, n] of data.nodes.entries()) {
      const r = rows[i]!;
      expect(String(n.id)).toBe(r.node_id);
      expect(n.hostname).toBe(r.hostname);
      expect(String(n.port)).toBe(r.port);
      expect(n.status).toBe(r.status);
      expect(n.role).toBe(r.role);
      expect(n.pgRole).toBe(r.pg_role);
      expect(n.weight.toFixed(6)).toBe(r.lb_weight);
      expect(n.replicationState).toBe(r.replication_state);
      expect(n.replicationSyncState).toBe(r.replication_sync_state);
      expect(n.statements.select_cnt).toBe(n.selectCount);
      expect(typeof n.delayBytes).toBe('number');
      expect(Number.isNaN(Date.parse(n.lastStatusChange ?? ''))).toBe(false);
    }

    const config = await api<{ parameters: Array<{ item: string; value: string; description: string }> }>(
      '/api/config',
    );
    const show = await queryRows({ port: proxy.port }, 'PGPOOL SHOW ALL');
    expect(config.parameters.map((p) => [p.item, p.value])).toEqual(show.map((r) => [r.item, r.value]));
    const byName = new Map(config.parameters.map((p) => [p.item, p.value]));
    expect(byName.get('dashboard')).toBe('on');
    expect(byName.get('sr_check_password')).toBe('*****');
    expect(byName.get('health_check_password')).toBe('*****');
  });

  it('/api/sessions shows a connected client, its backend connections and the cached ones', async () => {
    const c = await pgClient({ port: proxy.port }, { application_name: 'dashboard-test' });
    try {
      await c.query('SELECT 1');
      const pid = (c as unknown as { processID: number }).processID;
      const s = await api<{
        sessions: Array<{ pid: number; user: string; database: string; status: string; backends: unknown[] }>;
        cachedConnections: unknown[];
        waiting: { count: number; longestWaitSeconds: number };
        backendConnections: Array<{ node: number; inUse: number; idle: number }>;
      }>('/api/sessions');
      const mine = s.sessions.find((x) => x.pid === pid);
      expect(mine, `session ${pid} in ${JSON.stringify(s.sessions)}`).toBeDefined();
      expect(mine).toMatchObject({ user: 'postgres', database: 'postgres', status: 'Idle' });
      expect(mine!.backends.length).toBeGreaterThan(0);
      expect(s.waiting).toEqual({ count: 0, longestWaitSeconds: 0 });
      expect(s.backendConnections.map((b) => b.node)).toEqual([0, 1, 2]);
      const processes = await queryRows({ port: proxy.port }, 'SHOW pool_processes');
      expect(processes.some((r) => r.pool_pid === String(pid) && r.status === 'Idle')).toBe(true);
    } finally {
      await endPg(c);
    }
  });

  it('listens on localhost only by default and refuses actions without an admin session and its CSRF token', async () => {
    expect(proxy.logs()).toMatch(
      /"host":"127\.0\.0\.1".*dashboard listening|dashboard listening.*"host":"127\.0\.0\.1"/,
    );
    const form = (o: Record<string, string>): string => new URLSearchParams(o).toString();
    const detach2 = { action: 'detach', node: '2' };

    // bound to localhost, it answers only loopback host names (no DNS rebinding)
    const rebound = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = nodeHttp.get(
        `${base}/api/nodes`,
        { headers: { Host: `rebind.example:${new URL(base).port}` }, timeout: 15_000 },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            body += d;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('timeout')));
    });
    expect(rebound.status, rebound.body).toBe(403);
    expect((await http('/api/nodes', { headers: { Host: 'localhost' } })).status).toBe(200);

    const anon = await http('/api/actions', { method: 'POST', body: form(detach2) });
    expect(anon.status, anon.body).toBe(403);
    expect(anon.body).toMatch(/sign in/);

    const bad = await http('/login', { method: 'POST', body: form({ user: ADMIN, password: 'wrong' }) });
    expect(bad.status).toBe(401);
    // a user without a pool_passwd entry is checked by the primary, which lets postgres in without a password (trust)
    const trusted = await http('/login', { method: 'POST', body: form({ user: 'postgres', password: 'anything' }) });
    expect(trusted.status, 'a trust login proves nothing').toBe(401);

    const reader = await login(READER, READER_PW);
    const r403 = await http('/api/actions', {
      method: 'POST',
      cookie: reader.cookie,
      body: form({ ...detach2, csrf: reader.csrf }),
    });
    expect(r403.status, r403.body).toBe(403);
    expect(r403.body).toMatch(/not listed in admin_users/);

    const admin = await login(ADMIN, ADMIN_PW);
    const noCsrf = await http('/api/actions', { method: 'POST', cookie: admin.cookie, body: form(detach2) });
    expect(noCsrf.status, noCsrf.body).toBe(403);
    expect(noCsrf.body).toMatch(/CSRF/);
    const wrongCsrf = await http('/api/actions', {
      method: 'POST',
      cookie: admin.cookie,
      body: form({ ...detach2, csrf: reader.csrf }),
    });
    expect(wrongCsrf.status).toBe(403);
    const crossOrigin = await http('/api/actions', {
      method: 'POST',
      cookie: admin.cookie,
      body: form({ ...detach2, csrf: admin.csrf }),
      headers: { Origin: 'http://evil.example' },
    });
    expect(crossOrigin.status).toBe(403);
    expect((await poolNodes())[2]!.status, 'nothing was detached').not.toBe('down');
    await proxy.waitForLog(/dashboard: action refused/); // (its output is read asynchronously)

    // the same admin through the JSON API with the token in a header: the operation runs
    const ok = await http('/api/actions', {
      method: 'POST',
      cookie: admin.cookie,
      type: 'application/json',
      body: JSON.stringify({ action: 'attach', node: 2 }),
      headers: { 'X-CSRF-Token': admin.csrf },
    });
    expect(ok.status, ok.body).toBe(200);
  });

  it('browser: the overview shows the 3 nodes with their roles, first painted by the server and accessible', {
    timeout: 180_000,
  }, async () => {
    // the first paint is the server's: the HTML alone has the three rows and their roles (no JavaScript needed)
    const html = (await http('/')).body;
    expect([...html.matchAll(/data-field="role" class="role-\w+">(\w+)</g)].map((m) => m[1])).toEqual([
      'primary',
      'standby',
      'standby',
    ]);
    await page.goto('/');
    const roles = await page.locator('#nodes td[data-field="role"]').allTextContents();
    expect(roles).toEqual(['primary', 'standby', 'standby']);
    const status = await page.locator('#nodes td[data-field="status"]').allTextContents();
    for (const s of status) expect(['up', 'waiting']).toContain(s);
    // the charts are drawn (uPlot, from dist/dashboard/assets)
    await page.waitForFunction(() => document.querySelectorAll('figure.chart canvas').length === 3);
    for (const p of ['/', '/sessions', '/events', '/config', '/login']) {
      await page.goto(p);
      const problems = await page.evaluate(() => {
        const out: string[] = [];
        if (!document.documentElement.lang) out.push('html without lang');
        if (!document.title.trim()) out.push('no title');
        if (document.querySelectorAll('h1').length !== 1) out.push('not exactly one h1');
        // uPlot's legend table is inside the aria-hidden chart area
        for (const t of document.querySelectorAll('table:not([aria-hidden="true"] table)')) {
          if (!t.querySelector('caption')?.textContent?.trim()) out.push(`table #${t.id} without caption`);
          const heads = t.querySelectorAll('thead th[scope="col"]');
          if (heads.length === 0 || heads.length !== t.querySelectorAll('thead th').length)
            out.push(`table #${t.id}: column headers without scope`);
        }
        for (const i of document.querySelectorAll('input:not([type="hidden"]), select, textarea')) {
          const el = i as HTMLInputElement;
          if ((el.labels?.length ?? 0) === 0 && !el.getAttribute('aria-label'))
            out.push(`field #${el.id} without label`);
        }
        for (const b of document.querySelectorAll('button, a'))
          if (!(b.textContent?.trim() || b.getAttribute('aria-label'))) out.push('button or link without text');
        return out;
      });
      expect(problems, `accessibility of ${p}`).toEqual([]);
    }
    await page.goto('/');
    await page.waitForFunction(() => document.querySelectorAll('figure.chart canvas').length === 3);
    await screenshot(page, shots, 'overview');
    expect(pageErrors, 'no console error, no CSP violation').toEqual([]);
  });

  it('browser: pausing replay on a standby makes its lag cell grow within 3 s', { timeout: 180_000 }, async () => {
    await page.goto('/');
    const lag = page.locator('td[data-node="1"][data-field="lag"]');
    const before = Number(await lag.getAttribute('data-bytes'));
    await cluster.pauseReplay(1);
    try {
      await cluster.psql(
        cluster.primaryId,
        'CREATE TABLE dashboard_lag_t AS SELECT g, repeat(md5(g::text), 16) AS pad FROM generate_series(1, 10000) g; SELECT pg_switch_wal();',
        'postgres',
        60_000,
      );
      const t0 = Date.now();
      await page.waitForFunction(
        (min) =>
          Number(document.querySelector('td[data-node="1"][data-field="lag"]')?.getAttribute('data-bytes')) > min,
        // Past 1 MiB, where the cell shows MB (1,000,000 bytes crossed showed '1022 kB' once).
        before + 2 * 1024 * 1024,
        { timeout: 3000, polling: 100 },
      );
      const took = Date.now() - t0;
      expect(await lag.textContent()).toMatch(/MB/);
      await screenshot(page, shots, 'lag-while-replay-paused');
      expect(took).toBeLessThanOrEqual(3000);
    } finally {
      await cluster.resumeReplay(1);
      await cluster.psql(cluster.primaryId, 'DROP TABLE IF EXISTS dashboard_lag_t');
    }
    expect(pageErrors).toEqual([]);
  });

  it('browser: an admin detaches node 2 from the page (SHOW pool_nodes: down), then attaches it back', {
    timeout: 180_000,
  }, async () => {
    await page.goto('/login');
    await page.getByLabel('User name').fill(ADMIN);
    await page.getByLabel('Password').fill(ADMIN_PW);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${base}/`).catch(async (e) => {
      await screenshot(page, shots, 'login-failed');
      throw new Error(`${(e as Error).message}\n${page.url()}\n${await page.content()}`);
    });
    await expect(page.locator('header').textContent()).resolves.toMatch(/Signed in as dash_admin \(admin\)/);

    await page.getByRole('link', { name: 'Detach node 2' }).click();
    await page.waitForURL(/\/confirm\?action=detach&node=2$/);
    await page.getByRole('button', { name: 'Detach node 2' }).click();
    await page.waitForURL(`${base}/`);
    await expect(page.locator('.flash').textContent()).resolves.toMatch(/Done: detach node 2/);
    expect((await poolNodes())[2]!.status).toBe('down');
    await page.waitForFunction(
      () => document.querySelector('td[data-node="2"][data-field="status"]')?.textContent === 'down',
    );

    await page.getByRole('link', { name: 'Attach node 2' }).click();
    await page.getByRole('button', { name: 'Attach node 2' }).click();
    await page.waitForURL(`${base}/`);
    await expect(page.locator('.flash').textContent()).resolves.toMatch(/Done: attach node 2/);
    expect(['waiting', 'up']).toContain((await poolNodes())[2]!.status);

    // the events: the detach and the attach, newest first, on the page and in /api/events
    const events = await api<{ events: Array<{ kind: string; node: number; reason: string }> }>('/api/events');
    const mine = events.events.filter((e) => e.node === 2).map((e) => `${e.kind}: ${e.reason}`);
    expect(mine.slice(0, 2)).toEqual(['attach: attached by operator', 'detach: detached by operator']);
    await page.waitForFunction(() =>
      (document.querySelector('#events tbody tr')?.textContent ?? '').includes('attach'),
    );
    await screenshot(page, shots, 'node-2-detached-and-attached');
    await proxy.waitForLog(/"user":"dash_admin".*dashboard: node operation done/);
    expect(pageErrors).toEqual([]);
  });

  it('is read-only without admin_users: no sign-in, no action buttons, actions refused', {
    timeout: 120_000,
  }, async () => {
    const metricsPort = await freePort();
    const ro = await startProxy({
      cluster,
      config: { metrics_port: metricsPort, dashboard: true },
      startTimeoutMs: 60_000,
    });
    try {
      await ro.waitForLog(/dashboard listening/, 15_000);
      const url = `http://127.0.0.1:${metricsPort}`;
      const html = await (await fetch(`${url}/`, { signal: AbortSignal.timeout(15_000) })).text();
      expect(html).toMatch(/Read-only/);
      expect(html).not.toMatch(/Detach|Attach|\/login/);
      const login = await fetch(`${url}/login`, { signal: AbortSignal.timeout(15_000) });
      expect(login.status).toBe(404);
      const act = await fetch(`${url}/api/actions`, {
        method: 'POST',
        body: 'action=detach&node=1',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        signal: AbortSignal.timeout(15_000),
      });
      expect(act.status).toBe(403);
      expect(await act.text()).toMatch(/read-only/);
      await page.goto(`${url}/`);
      await expect(page.locator('.who').textContent()).resolves.toMatch(/Read-only/);
      await screenshot(page, shots, 'read-only');
      // /metrics still answers next to the dashboard
      const m = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(15_000) });
      expect(m.status).toBe(200);
    } finally {
      await ro.stop();
    }
  });
});
