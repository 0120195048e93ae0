/**
 * Operating a running pgrelay: configuration reload (weights, a broken
 * pool_hba.conf, a broken pgpool.conf), node commands and stop through the CLI
 * functions of src/cli-control.ts, and PGPOOL STOP by an admin user.
 *
 * Shared cluster; nothing here changes the PostgreSQL servers (detach/attach
 * only change pgrelay's own view of a standby).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { nodeCommand, reloadCommand, stopCommand } from '../../src/cli-control.js';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, pgClient, queryRows, withTimeout } from '../support/clients.js';
import { CLI_PATH, renderConf, runCommand, runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';
import { capture } from '../support/control-io.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
const P = cluster.primaryId; // 0
const ROLE = `admin_reload_user_${process.pid}`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type LogLine = Record<string, unknown>;

/** Every JSON log line (log_destination defaults to stderr). */
function logLines(p: ProxyHandle): LogLine[] {
  const res: LogLine[] = [];
  for (const l of p.logs().split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      res.push(JSON.parse(l) as LogLine);
    } catch {
      // partial line
    }
  }
  return res;
}

/** Wait for a log line matching `pred` among the lines after the first `since`. */
async function waitForJson(
  p: ProxyHandle,
  pred: (l: LogLine) => boolean,
  opts: { since?: number; timeoutMs?: number; what: string },
): Promise<LogLine> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    const hit = logLines(p)
      .slice(opts.since ?? 0)
      .find(pred);
    if (hit) return hit;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${opts.what}\n--- logs ---\n${p.logs().slice(-5000)}`);
    await sleep(50);
  }
}

/** Node that answers a fresh session's plain SELECT (its load-balance node). */
async function lbNodeOfNewSession(p: ProxyHandle): Promise<number> {
  const r = await runPsql(['-At', '-v', 'ON_ERROR_STOP=1', '-c', 'SELECT inet_server_port()'], {
    port: p.port,
    timeoutMs: 15_000,
  });
  expect(r.stderr).toBe('');
  const port = Number(r.stdout.trim());
  const n = cluster.nodes.find((x) => x.port === port);
  if (!n) throw new Error(`unexpected port ${r.stdout}`);
  return n.id;
}

async function pgpoolShow(p: ProxyHandle, name: string): Promise<string> {
  const r = await runPsql(['-At', '-v', 'ON_ERROR_STOP=1', '-c', `PGPOOL SHOW ${name}`], {
    port: p.port,
    timeoutMs: 15_000,
  });
  expect(r.stderr).toBe('');
  return r.stdout.trim();
}

async function poolNodeStatus(p: ProxyHandle): Promise<string[]> {
  const r = await runPsql(['-At', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-c', 'SHOW pool_nodes'], {
    port: p.port,
    timeoutMs: 15_000,
  });
  expect(r.stderr).toBe('');
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => l.split('|')[3]!);
}

const hooked = fs.existsSync(CLI_PATH) && fs.readFileSync(CLI_PATH, 'utf8').includes('cli-control');

/**
 * The pgrelay instances of the tests below are started together in the file's beforeAll: one
 * at a time, their start-ups (a few seconds each on a loaded machine) would add up. A block or
 * test takes its own with started(name) and stops it as before; afterAll stops any left.
 */
const starting = new Map<string, Promise<ProxyHandle>>();
/** Readiness deadline of the pgrelays started together: they share the CPU while they start. */
const TOGETHER_START_TIMEOUT_MS = 90_000;
function startEarly(name: string, start: (o: { startTimeoutMs: number }) => Promise<ProxyHandle>): void {
  const p = start({ startTimeoutMs: TOGETHER_START_TIMEOUT_MS });
  p.catch(() => undefined); // awaited (and its error reported) by the test that uses it
  starting.set(name, p);
}
function started(name: string): Promise<ProxyHandle> {
  const p = starting.get(name);
  if (!p) throw new Error(`no pgrelay "${name}" was started in beforeAll`);
  return p;
}

/** The pool_hba.conf of the 'reload with a broken pool_hba.conf' block, and its directory. */
let hbaDir: string;
let hba: string;

beforeAll(async () => {
  hbaDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-admin-hba-'));
  hba = path.join(hbaDir, 'pool_hba.conf');
  await fsp.writeFile(hba, 'host all all 127.0.0.1/32 trust\n');
  startEarly('reload', (o) =>
    startProxy({
      ...o,
      cluster,
      config: { backend_weight0: 1, backend_weight1: 0, backend_weight2: 0, admin_users: 'postgres' },
    }),
  );
  // Every session reads from node 2 while it is up.
  startEarly('graceful', (o) =>
    startProxy({
      ...o,
      cluster,
      config: {
        backend_weight0: 0,
        backend_weight1: 0,
        backend_weight2: 1,
        admin_users: 'postgres',
        log_min_messages: 'warning',
      },
    }),
  );
  startEarly('cached', (o) =>
    startProxy({
      ...o,
      cluster,
      config: { backend_weight0: 0, backend_weight1: 0, backend_weight2: 1, admin_users: 'postgres' },
    }),
  );
  startEarly('hba', (o) => startProxy({ ...o, cluster, config: { enable_pool_hba: true, hba_file: hba } }));
  startEarly('stop-f', (o) => startProxy({ ...o, cluster }));
  startEarly('stop-immediate', (o) => startProxy({ ...o, cluster }));
  startEarly('pgpool-stop', (o) => startProxy({ ...o, cluster, config: { admin_users: 'postgres' } }));
  await cluster.psql(P, `DROP ROLE IF EXISTS ${ROLE}; CREATE ROLE ${ROLE} LOGIN;`);
  await Promise.all(starting.values());
}, 120_000);

afterEach(async () => {
  await closeAllClients();
});

afterAll(async () => {
  await closeAllClients();
  await Promise.all([...starting.values()].map((p) => p.then((x) => x.stop()).catch(() => undefined)));
  if (hbaDir) await fsp.rm(hbaDir, { recursive: true, force: true });
  await cluster.psql(P, `DROP ROLE IF EXISTS ${ROLE};`).catch(() => undefined);
});

describe('reload', () => {
  let proxy: ProxyHandle;

  beforeAll(async () => {
    proxy = await started('reload');
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('new weights apply to new sessions; an open session keeps working across the reload', async () => {
    expect(await lbNodeOfNewSession(proxy)).toBe(0);
    const open = await pgClient({ port: proxy.port });
    expect((await open.query('SELECT inet_server_port() AS port')).rows[0].port).toBe(cluster.node(0).port);

    // keep the open session busy while the reload happens
    let running = true;
    let done = 0;
    const errors: unknown[] = [];
    const loop = (async () => {
      while (running) {
        try {
          await open.query('SELECT inet_server_port() AS port, pg_sleep(0.005)');
          done++;
        } catch (e) {
          errors.push(e);
          return;
        }
      }
    })();

    const since = logLines(proxy).length;
    await proxy.reload({ backend_weight0: 0, backend_weight1: 1, backend_weight2: 0 });
    const reloaded = await waitForJson(proxy, (l) => l.msg === 'configuration reloaded', {
      since,
      what: 'configuration reloaded',
    });
    expect(reloaded.changed).toEqual(expect.arrayContaining(['backend_weight0', 'backend_weight1']));
    const doneAtReload = done;
    await pollUntil(
      () => done,
      (n) => n >= doneAtReload + 5 || errors.length > 0,
      { what: 'the open session to run more queries after the reload' },
    );
    running = false;
    await loop;
    expect(errors, 'the open session had no error across the reload').toEqual([]);
    expect(done, 'the open session kept running queries after the reload').toBeGreaterThan(doneAtReload);
    expect((await open.query('SELECT 1 AS x')).rows).toEqual([{ x: 1 }]);

    for (let i = 0; i < 4; i++) expect(await lbNodeOfNewSession(proxy), 'new session after the reload').toBe(1);
    const lb = await runPsql(['-At', '-F', '|', '-c', 'SHOW pool_nodes'], { port: proxy.port, timeoutMs: 15_000 });
    expect(
      lb.stdout
        .trim()
        .split('\n')
        .map((l) => l.split('|')[5]),
    ).toEqual(['0.000000', '1.000000', '0.000000']);
    await endPg(open);
  });

  it('a pgpool.conf with a bad line is rejected whole (file:line logged, old settings stay); pgrelay reload sends SIGHUP', async () => {
    const good = proxy.config();
    const text = renderConf({ ...good, log_statement: true, client_idle_limit: 77 });
    const badLine = text.split('\n').length; // the line after the last key
    await fsp.writeFile(proxy.confPath, `${text}this line is not a setting\n`);

    const since = logLines(proxy).length;
    const io = capture();
    // the CLI still finds the pid, sends SIGHUP, and reports the errors with exit status 1
    expect(await reloadCommand(['-f', proxy.confPath], io), io.stderr).toBe(1);
    expect(io.stdout).toContain(`SIGHUP sent to process ${proxy.pid}`);
    expect(io.stderr).toContain(`${proxy.confPath}:${badLine}`);
    const err = await waitForJson(
      proxy,
      (l) => typeof l.msg === 'string' && /configuration file has errors/.test(l.msg),
      { since, what: 'the reload error' },
    );
    expect(JSON.stringify(err.errors), 'the error names file:line').toContain(`${proxy.confPath}:${badLine}`);
    // nothing of the file was applied
    expect(await pgpoolShow(proxy, 'log_statement')).toBe('off');
    expect(await pgpoolShow(proxy, 'client_idle_limit')).toBe('0');
    expect(await lbNodeOfNewSession(proxy)).toBe(1);

    // PGPOOL RELOAD reports the same error to the admin
    const c = await pgClient({ port: proxy.port });
    await expect(c.query('PGPOOL RELOAD')).rejects.toThrow(
      new RegExp(`${proxy.confPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${badLine}`),
    );

    // fixed file: applied
    const since2 = logLines(proxy).length;
    await proxy.reload({ log_statement: true });
    await waitForJson(proxy, (l) => l.msg === 'configuration reloaded', {
      since: since2,
      what: 'configuration reloaded',
    });
    expect(await pgpoolShow(proxy, 'log_statement')).toBe('on');
    const r = await c.query('PGPOOL RELOAD');
    expect(r.command).toBe('RELOAD');
  });

  it('pgrelay attach/detach through the CLI (pcp_attach_node / pcp_detach_node equivalents)', async () => {
    // nodeCommand() runs in this process and falls back on PGUSER / PGDATABASE / PGPASSWORD: none of the
    // runner's may be there (test/support/setup-env.ts removes them).
    expect(
      Object.keys(process.env).filter((k) =>
        ['PGUSER', 'PGDATABASE', 'PGPASSWORD', 'PGHOST', 'PGPORT', 'PGSSLMODE'].includes(k),
      ),
    ).toEqual([]);
    const conn = ['-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'postgres'];
    const d = capture();
    expect(await nodeCommand(['detach', '2', ...conn], d), d.stderr).toBe(0);
    expect(d.stdout).toBe('PGPOOL DETACH NODE 2: done\n');
    expect((await poolNodeStatus(proxy))[2]).toBe('down');

    const a = capture();
    expect(await nodeCommand(['attach', '2', ...conn], a), a.stderr).toBe(0);
    expect(a.stdout).toBe('PGPOOL ATTACH NODE 2: done\n');
    expect((await poolNodeStatus(proxy))[2]).toMatch(/^(up|waiting)$/);

    // host/port from the configuration file
    const f = capture();
    expect(await nodeCommand(['attach', '2', '-f', proxy.confPath, '-U', 'postgres'], f), f.stderr).toBe(0);

    const bad = capture();
    expect(await nodeCommand(['attach', '9', ...conn], bad)).toBe(1);
    expect(bad.stderr).toContain('invalid node id 9');

    const bad2 = capture();
    expect(await nodeCommand(['promote', '7', '--switchover', ...conn], bad2)).toBe(1);
    expect(bad2.stderr).toContain('invalid node id 7');

    const denied = capture();
    expect(await nodeCommand(['detach', '2', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', ROLE], denied)).toBe(1);
    expect(denied.stderr).toMatch(/permission denied for PGPOOL DETACH NODE 2/);
    expect((await poolNodeStatus(proxy))[2]).toMatch(/^(up|waiting)$/);
  });
});

describe('graceful detach', () => {
  let proxy: ProxyHandle;
  beforeAll(async () => {
    // Every session reads from node 2 while it is up.
    proxy = await started('graceful');
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('PGPOOL DETACH NODE 2 GRACEFULLY waits for the session using node 2; meanwhile new sessions read elsewhere', async () => {
    const target = { host: '127.0.0.1', port: proxy.port };
    const a = await pgClient(target, { user: 'postgres', database: 'postgres' });
    const portOf = async (c: typeof a): Promise<number> =>
      Number((await c.query('SELECT inet_server_port() AS p')).rows[0].p);
    expect(await portOf(a)).toBe(cluster.node(2).port);

    const admin = await pgClient(target, { user: 'postgres', database: 'postgres' });
    let done = false;
    const detaching = admin.query('PGPOOL DETACH NODE 2 GRACEFULLY').finally(() => {
      done = true;
    });
    detaching.catch(() => undefined); // awaited below; no unhandled rejection if the test fails first
    // Draining has begun once a new session (weights 0:0:1) is no longer given node 2.
    await pollUntil(
      () => lbNodeOfNewSession(proxy),
      (n) => n !== 2,
      { what: 'new sessions to stop reading from node 2 (draining)' },
    );
    // Still attached (A uses it), but no longer handed to new sessions.
    expect((await poolNodeStatus(proxy))[2]).toBe('up');
    for (let i = 0; i < 3; i++) expect(await lbNodeOfNewSession(proxy)).not.toBe(2);
    expect((await poolNodeStatus(proxy))[2]).toBe('up');
    expect(done, 'the graceful detach waits for the session on node 2').toBe(false);

    await endPg(a);
    await withTimeout(detaching, 30_000, 'the graceful detach to finish once the session left');
    expect((await poolNodeStatus(proxy))[2]).toBe('down');
    await admin.query('PGPOOL ATTACH NODE 2');
    expect((await poolNodeStatus(proxy))[2]).toMatch(/^(up|waiting)$/);
    await endPg(admin);
  });
});

describe('a node taken down: its cached connections, and pgpool_status across restarts', () => {
  it("closes the node's cached backend connections when it goes down (PGPOOL DETACH NODE)", async () => {
    const app = `admin-reload-cached-${process.pid}`;
    const proxy = await started('cached');
    const onNode2 = (): Promise<string> =>
      cluster.psql(2, `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}'`);
    try {
      // Two sessions read on node 2 at the same time, then leave: two cached connections to node 2.
      const a = await pgClient({ port: proxy.port }, { application_name: app });
      const b = await pgClient({ port: proxy.port }, { application_name: app });
      for (const c of [a, b])
        expect((await c.query('SELECT inet_server_port() AS p')).rows[0].p).toBe(cluster.node(2).port);
      await endPg(a);
      await endPg(b);
      await pollUntil(
        () => queryRows({ port: proxy.port }, 'SHOW pool_pools'),
        (rows) => rows.filter((r) => r.backend_id === '2' && r.status === 'Wait for connection').length === 2,
        { what: 'two cached connections to node 2 (SHOW pool_pools)' },
      );
      expect(await onNode2()).toBe('2');
      const admin = await pgClient({ port: proxy.port });
      await admin.query('PGPOOL DETACH NODE 2');
      // pgrelay does not touch PostgreSQL when detaching: only closing its connections makes them go.
      await pollUntil(onNode2, (n) => n === '0', { what: "node 2's backends of the cached connections to exit" });
      expect(
        (await queryRows({ port: proxy.port }, 'SHOW pool_pools')).filter(
          (r) => r.backend_id === '2' && r.status === 'Wait for connection',
        ),
      ).toEqual([]);
      await admin.query('PGPOOL ATTACH NODE 2');
      await endPg(admin);
    } finally {
      await proxy.stop();
    }
  });

  it('a detached node stays down across a restart (pgpool_status in logdir); -D discards the file', {
    timeout: 120_000,
  }, async () => {
    const logdir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-admin-status-'));
    const conf = { logdir, admin_users: 'postgres' };
    try {
      const first = await startProxy({ cluster, config: conf });
      try {
        const c = await pgClient({ port: first.port });
        await c.query('PGPOOL DETACH NODE 2');
        await endPg(c);
        expect((await poolNodeStatus(first))[2]).toBe('down');
      } finally {
        expect(await first.stop()).toBe(0);
      }
      expect(fs.readFileSync(path.join(logdir, 'pgpool_status'), 'utf8')).toBe('up\nup\ndown\n');
      const again = await startProxy({ cluster, config: conf });
      try {
        expect(await poolNodeStatus(again), 'restarted with the same logdir').toEqual(['up', 'up', 'down']);
      } finally {
        await again.stop();
      }
      const discard = await startProxy({ cluster, config: conf, args: ['-D'] });
      try {
        const st = await poolNodeStatus(discard);
        expect(st[2], 'restarted with -D').toMatch(/^(up|waiting)$/);
      } finally {
        await discard.stop();
      }
    } finally {
      await fsp.rm(logdir, { recursive: true, force: true });
    }
  });
});

describe('reload with a broken pool_hba.conf', () => {
  let proxy: ProxyHandle;

  beforeAll(async () => {
    proxy = await started('hba');
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('keeps the old rules and logs the error with file:line', async () => {
    expect(await lbNodeOfNewSession(proxy)).toBeGreaterThanOrEqual(0);
    await fsp.writeFile(hba, '# comment\nhost all all 127.0.0.1/32 no_such_method\n');
    const since = logLines(proxy).length;
    proxy.kill('SIGHUP');
    const err = await waitForJson(
      proxy,
      (l) => typeof l.msg === 'string' && /pool_hba\.conf not reloaded/.test(l.msg),
      { since, what: 'the pool_hba.conf error' },
    );
    expect(String(err.err), 'the error names file:line').toContain(`${hba}:2`);
    // the old rule (trust) still applies
    for (let i = 0; i < 2; i++) {
      const r = await runPsql(['-At', '-c', 'SELECT 1'], { port: proxy.port, timeoutMs: 15_000 });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('1');
    }
  });

  it('a valid pool_hba.conf is applied on reload (reject, then trust again)', async () => {
    await fsp.writeFile(hba, 'host all all 127.0.0.1/32 reject\n');
    let since = logLines(proxy).length;
    proxy.kill('SIGHUP');
    await waitForJson(proxy, (l) => l.msg === 'configuration reloaded', { since, what: 'configuration reloaded' });
    const r = await runPsql(['-At', '-c', 'SELECT 1'], { port: proxy.port, timeoutMs: 15_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/pool_hba|rejects|reject/i);
    await fsp.writeFile(hba, 'host all all 127.0.0.1/32 trust\n');
    since = logLines(proxy).length;
    proxy.kill('SIGHUP');
    await waitForJson(proxy, (l) => l.msg === 'configuration reloaded', { since, what: 'configuration reloaded' });
    const ok = await runPsql(['-At', '-c', 'SELECT 1'], { port: proxy.port, timeoutMs: 15_000 });
    expect(ok.stderr).toBe('');
  });
});

describe('stopping', () => {
  // Own limits: the CLI run may take up to 70 s.
  it(`pgrelay stop -f <conf> (${hooked ? 'node dist/cli.js stop' : 'stopCommand(), the CLI is not hooked yet'}) stops a running instance`, {
    timeout: 120_000,
  }, async () => {
    const proxy = await started('stop-f');
    try {
      const pidFile = path.join(proxy.dir, 'pgrelay.pid');
      // pgrelay writes the pid file just after it starts listening
      await pollUntil(
        () => fs.existsSync(pidFile),
        (x) => x,
        { what: 'the pid file' },
      );
      expect(fs.readFileSync(pidFile, 'utf8').trim()).toBe(String(proxy.pid));
      let code: number | null;
      let out: string;
      if (hooked) {
        const r = await runCommand(process.execPath, [CLI_PATH, 'stop', '-f', proxy.confPath], { timeoutMs: 70_000 });
        code = r.code;
        out = r.stdout + r.stderr;
      } else {
        const io = capture();
        code = await stopCommand(['-f', proxy.confPath], io);
        out = io.stdout + io.stderr;
      }
      expect(code, out).toBe(0);
      expect(out).toContain(`SIGTERM sent to process ${proxy.pid}`);
      expect(out).toContain(`process ${proxy.pid} has stopped`);
      const exit = await withTimeout(proxy.exited, 20_000, 'pgrelay to exit');
      expect(exit, 'the process exited').toEqual({ code: 0, signal: null });
      expect(fs.existsSync(pidFile), 'pgrelay removed its pid file').toBe(false);
      // again: no pid file → clear error, exit 1
      const io2 = capture();
      expect(await stopCommand(['-f', proxy.confPath], io2)).toBe(1);
      expect(io2.stderr).toMatch(/pid file ".*pgrelay\.pid" does not exist: is pgrelay running\?/);
    } finally {
      await proxy.stop();
    }
  });

  it('pgrelay stop -m immediate with a client connected', async () => {
    const proxy = await started('stop-immediate');
    try {
      await pollUntil(
        () => fs.existsSync(path.join(proxy.dir, 'pgrelay.pid')),
        (x) => x,
        { what: 'the pid file' },
      );
      const c = await pgClient({ port: proxy.port });
      await c.query('SELECT 1');
      const io = capture();
      const t0 = Date.now();
      expect(await stopCommand(['-m', 'immediate', '-f', proxy.confPath], io), io.stderr).toBe(0);
      expect(io.stdout).toContain(`SIGQUIT sent to process ${proxy.pid}`);
      expect(Date.now() - t0).toBeLessThan(10_000);
      await expect(c.query('SELECT 1')).rejects.toThrow();
    } finally {
      await proxy.stop();
    }
  });

  // Own limits: 10 + 15 + 40 s.
  it('PGPOOL STOP: refused for a non-admin user, stops pgrelay for an admin user', { timeout: 120_000 }, async () => {
    const proxy = await started('pgpool-stop');
    try {
      const u = await pgClient({ port: proxy.port }, { user: ROLE });
      await expect(u.query('PGPOOL STOP')).rejects.toMatchObject({ code: '42501' });
      await endPg(u);
      const r0 = await runPsql(['-At', '-c', 'SELECT 1'], { port: proxy.port, timeoutMs: 15_000 });
      expect(r0.stdout.trim(), 'still running').toBe('1');

      const c = await pgClient({ port: proxy.port });
      const r = await c.query('PGPOOL STOP');
      expect(r.command).toBe('STOP');
      await endPg(c);
      const exit = await withTimeout(proxy.exited, 40_000, 'pgrelay to exit after PGPOOL STOP');
      expect(exit, 'pgrelay exited after PGPOOL STOP').toEqual({ code: 0, signal: null });
      expect(fs.existsSync(path.join(proxy.dir, 'pgrelay.pid'))).toBe(false);
    } finally {
      await proxy.stop();
    }
  });
});
