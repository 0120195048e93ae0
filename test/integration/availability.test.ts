/**
 * No self-inflicted permanent outage (issue: availability hardening), on pgrelay's OWN
 * cluster:
 * - the primary's postmaster is stopped (SIGSTOP) long enough for the health check to
 *   mark it down, then continued: with no failover_command, pgrelay takes it back as
 *   the primary by itself — logins work and /readyz is ready again within a few health
 *   check periods, without a restart; and the same when pgrelay was restarted while the
 *   primary was marked down (its pgpool_status says down; no -D);
 * - with no backend reachable at all, an admin user still logs in, sees SHOW pool_nodes
 *   and runs PGPOOL ATTACH NODE 0 (also `pgrelay attach 0`); other statements get
 *   57P03, other users are refused.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster, freePort } from '../../dev/devcluster.js';
import { getCluster } from '../support/cluster.js';
import { waitForJson } from '../support/failover.js';
import { CLI_PATH, type ProxyHandle, startProxy } from '../support/proxy.js';
import { pollUntil } from '../support/wait.js';

const HC_PERIOD = 1;
let cluster: DevCluster;
let stopped: number | undefined;

/** The postmaster's pid (first line of postmaster.pid). */
function postmasterPid(node: number): number {
  return Number(fs.readFileSync(path.join(cluster.node(node).dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

function pauseNode(node: number): void {
  stopped = postmasterPid(node);
  process.kill(stopped, 'SIGSTOP');
}

function resumeNode(): void {
  if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
  stopped = undefined;
}

/** `select 1` through pgrelay on a new connection: true when it works within 5 s. */
async function loginWorks(port: number): Promise<boolean> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user: 'postgres',
    database: 'postgres',
    connectionTimeoutMillis: 5000,
    query_timeout: 5000,
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return (await c.query('select 1 as one')).rows[0]?.one === 1;
  } catch {
    return false;
  } finally {
    c.end().catch(() => undefined);
  }
}

/** pgrelay logs node 0 (the primary) marked down. */
function primaryMarkedDown(proxy: ProxyHandle): Promise<unknown> {
  return waitForJson(
    proxy,
    (l) => l.msg === 'node status changed' && l.node === 0 && l.to === 'down',
    30_000,
    'node 0 marked down',
  );
}

async function ready(metricsPort: number): Promise<boolean> {
  try {
    const r = await fetch(`http://127.0.0.1:${metricsPort}/readyz`, { signal: AbortSignal.timeout(3000) });
    return r.status === 200;
  } catch {
    return false;
  }
}

const config = (logdir: string, metricsPort: number): Record<string, string | number | boolean> => ({
  health_check_period: HC_PERIOD,
  health_check_max_retries: 0,
  health_check_timeout: 2,
  connect_timeout: 2000,
  sr_check_period: 1,
  search_primary_node_timeout: 5,
  failover_on_backend_error: true,
  metrics_port: metricsPort,
  logdir,
  log_min_messages: 'info',
});

describe('a primary that stalls is taken back (own DevCluster)', () => {
  let logdir: string;
  let proxy: ProxyHandle | undefined;

  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 1 });
    logdir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-avail-'));
  }, 180_000);

  afterAll(async () => {
    resumeNode();
    await proxy?.stop();
    await cluster?.stop();
    await fsp.rm(logdir, { recursive: true, force: true });
  });

  it('SIGSTOP of the primary postmaster until it is marked down, SIGCONT: logins and /readyz come back without a restart', {
    timeout: 90_000,
  }, async () => {
    const metricsPort = await freePort();
    proxy = await startProxy({ cluster, config: config(logdir, metricsPort) });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
    expect(await loginWorks(proxy.port)).toBe(true);

    pauseNode(0);
    await primaryMarkedDown(proxy);
    await pollUntil(
      () => ready(metricsPort),
      (r) => !r,
      { timeoutMs: 15_000, what: '/readyz not ready' },
    );

    const t0 = Date.now();
    resumeNode();
    await pollUntil(
      async () => (await ready(metricsPort)) && (await loginWorks(proxy?.port ?? 0)),
      (ok) => ok,
      { timeoutMs: 30_000, what: 'logins and /readyz after SIGCONT' },
    );
    const tookMs = Date.now() - t0;
    console.log(`[availability] primary taken back ${tookMs} ms after SIGCONT (health_check_period ${HC_PERIOD} s)`);
    // Three health-check periods, plus one for the stalled connections to let go on a loaded machine.
    expect(tookMs).toBeLessThan((3 + 1) * HC_PERIOD * 1000 + 5000);
    await proxy.waitForLog(/answers as the primary and no other primary is known: taking it back/);
    expect(proxy.logs()).not.toMatch(/executing failover_command/);
    await proxy.stop();
    proxy = undefined;
  });

  it('the same across a pgrelay restart without -D (pgpool_status says the primary is down)', {
    timeout: 90_000,
  }, async () => {
    const metricsPort = await freePort();
    proxy = await startProxy({ cluster, config: config(logdir, metricsPort) });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
    pauseNode(0);
    await primaryMarkedDown(proxy);
    await proxy.stop();
    proxy = undefined;
    expect(fs.readFileSync(path.join(logdir, 'pgpool_status'), 'utf8').split('\n')[0]).toBe('down');
    resumeNode();

    const t0 = Date.now();
    const metricsPort2 = await freePort();
    proxy = await startProxy({ cluster, config: config(logdir, metricsPort2) });
    await pollUntil(
      async () => (await ready(metricsPort2)) && (await loginWorks(proxy?.port ?? 0)),
      (ok) => ok,
      { timeoutMs: 30_000, what: 'logins and /readyz after the restart' },
    );
    console.log(`[availability] restarted pgrelay took the primary back in ${Date.now() - t0} ms`);
    await proxy.waitForLog(/answers as the primary and no other primary is known: taking it back/);
    await proxy.stop();
    proxy = undefined;
  });

  it('health checks off (the default), no standby up: a primary that restarts after a backend crashed is taken back once it accepts sessions', {
    timeout: 90_000,
  }, async () => {
    proxy = await startProxy({
      cluster,
      config: {
        ...config(logdir, await freePort()),
        health_check_period: 0,
        search_primary_node_timeout: 30,
        admin_users: 'postgres',
      },
    });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: 'postgres' });
    c.on('error', () => undefined);
    await c.connect();
    try {
      // The standby out of the way (an operator's detach: never taken back by itself).
      await c.query('PGPOOL DETACH NODE 1');
      const pid = Number((await c.query('/*NO LOAD BALANCE*/ SELECT pg_backend_pid() AS pid')).rows[0]?.pid);
      expect(pid).toBeGreaterThan(0);
      // A backend killed: the postmaster ends every session and runs crash recovery.
      process.kill(pid, 'SIGKILL');
      await expect(c.query('SELECT 1')).rejects.toThrow();
    } finally {
      await c.end().catch(() => undefined);
    }
    await primaryMarkedDown(proxy);
    await pollUntil(
      () => loginWorks(proxy?.port ?? 0),
      (ok) => ok,
      { timeoutMs: 30_000, what: 'logins once the primary accepts sessions again' },
    );
    await proxy.waitForLog(/answers as the primary and no other primary is known: taking it back/);
  });
});

/**
 * pgrelay in front of two backends where nothing listens (none of the shared cluster's nodes),
 * with admin_users and health checks every second; `config` adds the authentication settings.
 */
async function proxyWithoutBackends(config: Record<string, string | number | boolean>): Promise<ProxyHandle> {
  const [p0, p1] = [await freePort(), await freePort()];
  return startProxy({
    // Only for startProxy's defaults: none of the shared cluster's nodes is a backend here.
    cluster: getCluster(),
    backends: [],
    config: {
      backend_hostname0: '127.0.0.1',
      backend_port0: p0,
      backend_hostname1: '127.0.0.1',
      backend_port1: p1,
      health_check_period: 1,
      connect_timeout: 1000,
      search_primary_node_timeout: 2,
      ...config,
    },
  });
}

describe('an admin user gets in while no backend can be reached', () => {
  let proxy: ProxyHandle;
  let dir: string;
  const ADMIN_PW = 'adminpw-avail';

  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-avail-admin-'));
    await fsp.writeFile(path.join(dir, 'pool_passwd'), `opsadmin:TEXT${ADMIN_PW}\nappuser:TEXTapppw\n`, {
      mode: 0o600,
    });
    await fsp.writeFile(path.join(dir, 'pool_hba.conf'), 'host all all 127.0.0.1/32 scram-sha-256\n');
    proxy = await proxyWithoutBackends({
      enable_pool_hba: true,
      hba_file: path.join(dir, 'pool_hba.conf'),
      pool_passwd: path.join(dir, 'pool_passwd'),
      admin_users: 'opsadmin',
    });
  }, 60_000);

  afterAll(async () => {
    await proxy?.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  const login = async (user: string, password: string): Promise<pg.Client> => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: proxy.port,
      user,
      password,
      database: 'postgres',
      connectionTimeoutMillis: 30_000,
    });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };

  it('SHOW pool_nodes, PGPOOL ATTACH NODE 0 (simple and extended protocol); other statements 57P03; others refused', {
    timeout: 90_000,
  }, async () => {
    const admin = await login('opsadmin', ADMIN_PW);
    try {
      const nodes = await admin.query('SHOW pool_nodes');
      expect(nodes.rows.map((r: { node_id: string }) => r.node_id)).toEqual(['0', '1']);
      expect(nodes.rows.every((r: { status: string }) => r.status === 'down' || r.status === 'waiting')).toBe(true);
      const attach = await admin.query('PGPOOL ATTACH NODE 0');
      expect(attach.command).toBe('ATTACH');
      // Extended protocol (a named statement): still answered by pgrelay.
      const named = await admin.query({ name: 'nodes', text: 'SHOW pool_nodes' });
      expect(named.rows).toHaveLength(2);
      const err = await admin.query('select 1').then(
        () => undefined,
        (e: { code?: string; message: string }) => e,
      );
      expect(err?.code).toBe('57P03');
      expect(err?.message).toMatch(/only admin commands/);
      // The session goes on after the error, in both protocols.
      const err2 = await admin.query('select $1::int', [1]).then(
        () => undefined,
        (e: { code?: string }) => e,
      );
      expect(err2?.code).toBe('57P03');
      // An admin statement bound with a parameter it does not take: 08P01, as PostgreSQL
      // answers, and the rest of the pipeline is skipped up to its Sync.
      const err3 = await admin.query('SHOW pool_version', [1]).then(
        () => undefined,
        (e: { code?: string; message: string }) => e,
      );
      expect(err3?.code).toBe('08P01');
      expect(err3?.message).toMatch(/supplies 1 parameters, but prepared statement "" requires 0/);
      expect((await admin.query('SHOW pool_version')).rows).toHaveLength(1);
    } finally {
      await admin.end();
    }
    const refused = await login('appuser', 'apppw').then(
      (c) => c.end().then(() => undefined),
      (e: { code?: string }) => e,
    );
    expect(refused?.code).toBe('57P03');
  });

  it('pgrelay attach 0 works with no primary', { timeout: 60_000 }, async () => {
    const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [CLI_PATH, 'attach', '0', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'opsadmin'],
        { env: { PATH: process.env.PATH ?? '', PGPASSWORD: ADMIN_PW }, timeout: 45_000 },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
      });
      child.on('close', (code) => resolve({ code, out, err }));
    });
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe('PGPOOL ATTACH NODE 0: done\n');
  });
});

describe('an admin user gets in while no backend can be reached, pool_hba off (the primary cannot be asked)', () => {
  let proxy: ProxyHandle;
  let dir: string;
  const ADMIN_PW = 'adminpw-relay';

  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-avail-relay-'));
    await fsp.writeFile(
      path.join(dir, 'pool_passwd'),
      `opsadmin:TEXT${ADMIN_PW}\nmd5admin:md5${createHash('md5').update(`${ADMIN_PW}md5admin`).digest('hex')}\nappuser:TEXTapppw\n`,
      { mode: 0o600 },
    );
    proxy = await proxyWithoutBackends({
      enable_pool_hba: false,
      pool_passwd: path.join(dir, 'pool_passwd'),
      admin_users: 'opsadmin,md5admin',
    });
  }, 60_000);

  afterAll(async () => {
    await proxy?.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  const login = (user: string, password: string): Promise<pg.Client | { code?: string }> => {
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user, password, database: 'postgres' });
    c.on('error', () => undefined);
    return c.connect().then(
      () => c,
      (e: { code?: string }) => e,
    );
  };

  it('admins in pool_passwd (TEXT: SCRAM, md5 hash: md5) get in and run SHOW pool_nodes; a wrong password and other users are refused', {
    timeout: 90_000,
  }, async () => {
    for (const user of ['opsadmin', 'md5admin']) {
      const admin = await login(user, ADMIN_PW);
      if (!(admin instanceof pg.Client)) throw new Error(`${user}: ${JSON.stringify(admin)}`);
      try {
        expect((await admin.query('SHOW pool_nodes')).rows).toHaveLength(2);
      } finally {
        await admin.end();
      }
    }
    expect(((await login('opsadmin', 'wrong')) as { code?: string }).code).toBe('28P01');
    // Not an admin: the primary's method is unknown, so the outage is what it sees.
    expect(((await login('appuser', 'apppw')) as { code?: string }).code).toBe('57P03');
    await waitForJson(
      proxy,
      (l) => l.msg === 'admin user authenticated from pool_passwd: the primary cannot be asked for its method',
      5_000,
      'admin log line',
    );
  });
});
