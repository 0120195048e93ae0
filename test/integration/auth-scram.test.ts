/**
 * Client authentication and TLS through pgrelay against a private DevCluster
 * whose backends require SCRAM-SHA-256 (issue 5): pool_hba off (the primary's
 * method relayed) and on (each method), cached-connection re-authentication,
 * pool_passwd reload, frontend TLS (verify-full, hostssl, cert,
 * SCRAM-SHA-256-PLUS, direct TLS), backend TLS, authentication_timeout.
 * Certificates are made at run time with openssl in a temp dir.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { endPg } from '../support/clients.js';
import { cachedConnections, loginAs, sessionBackendPid, waitForCached } from '../support/cache-probe.js';
import { runPgbench, runPsql, startProxy, type ConfValue, type ProxyHandle } from '../support/proxy.js';

const SUPER_PW = 'sup3r';

let cluster: DevCluster;
let tmp: string;
let certs: Certs;

interface Certs {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  /** client certificate with CN=alice */
  aliceCert: string;
  aliceKey: string;
  /** a client certificate signed by another CA */
  rogueCert: string;
  rogueKey: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
}

function makeCerts(dir: string): Certs {
  const ext = path.join(dir, 'san.ext');
  fs.writeFileSync(ext, 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '2',
      '-subj',
      '/CN=pgrelay test CA',
    ],
    dir,
  );
  const leaf = (name: string, cn: string, ca: string, withSan: boolean): void => {
    openssl(
      ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`],
      dir,
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        `${ca}.crt`,
        '-CAkey',
        `${ca}.key`,
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        ...(withSan ? ['-extfile', ext] : []),
      ],
      dir,
    );
    fs.chmodSync(path.join(dir, `${name}.key`), 0o600);
  };
  leaf('server', 'localhost', 'ca', true);
  leaf('alice', 'alice', 'ca', false);
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'rogueca.key',
      '-out',
      'rogueca.crt',
      '-days',
      '2',
      '-subj',
      '/CN=rogue CA',
    ],
    dir,
  );
  leaf('rogue', 'alice', 'rogueca', false);
  const p = (f: string): string => path.join(dir, f);
  return {
    dir,
    ca: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    aliceCert: p('alice.crt'),
    aliceKey: p('alice.key'),
    rogueCert: p('rogue.crt'),
    rogueKey: p('rogue.key'),
  };
}

async function psqlAs(
  proxy: ProxyHandle,
  user: string,
  password: string | undefined,
  sql = 'SELECT current_user',
  env: Record<string, string> = {},
): Promise<{ code: number | null; out: string; err: string }> {
  const r = await runPsql(['-w', '-At', '-c', sql], { port: proxy.port, user, password, env, timeoutMs: 20_000 });
  return { code: r.code, out: r.stdout.trim(), err: r.stderr };
}

async function writePasswd(proxy: ProxyHandle, lines: string[]): Promise<string> {
  const f = path.join(proxy.dir, 'pool_passwd');
  await fsp.writeFile(f, lines.map((l) => `${l}\n`).join(''), { mode: 0o600 });
  return f;
}

async function writeHba(proxy: ProxyHandle, lines: string[]): Promise<void> {
  await fsp.writeFile(path.join(proxy.dir, 'pool_hba.conf'), lines.map((l) => `${l}\n`).join(''));
}

/** Send SIGHUP and wait until pgrelay logged the reload (or an error about it). */
async function hup(proxy: ProxyHandle): Promise<void> {
  const before = (proxy.logs().match(/authentication files reloaded|not reloaded/g) ?? []).length;
  proxy.kill('SIGHUP');
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if ((proxy.logs().match(/authentication files reloaded|not reloaded/g) ?? []).length > before) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no reload logged\n${proxy.logs()}`);
}

/** Start a proxy whose pool_passwd / pool_hba.conf are written before start. */
async function proxyWith(opts: {
  config?: Record<string, ConfValue>;
  passwd?: string[];
  hba?: string[];
  /** Readiness deadline (startProxy's default 30 s); longer for the pgrelays started together. */
  startTimeoutMs?: number;
}): Promise<ProxyHandle> {
  const dir = await fsp.mkdtemp(path.join(tmp, 'conf-'));
  const passwdFile = path.join(dir, 'pool_passwd');
  const hbaFile = path.join(dir, 'pool_hba.conf');
  await fsp.writeFile(passwdFile, (opts.passwd ?? []).map((l) => `${l}\n`).join(''), { mode: 0o600 });
  if (opts.hba) await fsp.writeFile(hbaFile, opts.hba.map((l) => `${l}\n`).join(''));
  const proxy = await startProxy({
    cluster,
    backends: [0],
    config: {
      pool_passwd: passwdFile,
      hba_file: hbaFile,
      enable_pool_hba: opts.hba !== undefined,
      num_init_children: 8,
      max_pool: 2,
      ...(opts.config ?? {}),
    },
    startTimeoutMs: opts.startTimeoutMs,
  });
  // tests rewrite these through the proxy dir helpers: link them there
  await fsp.symlink(passwdFile, path.join(proxy.dir, 'pool_passwd')).catch(() => undefined);
  await fsp.symlink(hbaFile, path.join(proxy.dir, 'pool_hba.conf')).catch(() => undefined);
  return proxy;
}

const starting = new Map<string, Promise<ProxyHandle>>();
/** Readiness deadline of the pgrelays started together: they share the CPU while they start. */
const TOGETHER_START_TIMEOUT_MS = 90_000;
function startEarly(name: string, start: () => Promise<ProxyHandle>): void {
  const p = start();
  p.catch(() => undefined); // awaited (and its error reported) by the block that uses it
  starting.set(name, p);
}
function started(name: string): Promise<ProxyHandle> {
  const p = starting.get(name);
  if (!p) throw new Error(`no pgrelay "${name}" was started in beforeAll`);
  return p;
}
/** carol's SCRAM verifier, copied from pg_authid. */
let scramVerifier: string;

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-auth-'));
  certs = makeCerts(tmp);
  cluster = await DevCluster.start({ standbys: 0, authMethod: 'scram-sha-256', superuserPassword: SUPER_PW });
  await cluster.psql(
    0,
    `CREATE ROLE alice LOGIN PASSWORD 'alicepw'; CREATE ROLE bob LOGIN PASSWORD 'bobpw'; CREATE ROLE carol LOGIN PASSWORD 'carolpw';
     CREATE DATABASE appdb; GRANT ALL ON SCHEMA public TO alice;`,
  );
  // Backend TLS: a certificate for the primary, owned by the server's OS user.
  const dataDir = cluster.node(0).dataDir;
  const st = fs.statSync(dataDir);
  for (const [src, dst] of [
    [certs.serverCert, 'pgr_server.crt'],
    [certs.serverKey, 'pgr_server.key'],
  ] as const) {
    const target = path.join(dataDir, dst);
    fs.copyFileSync(src, target);
    fs.chmodSync(target, 0o600);
    fs.chownSync(target, st.uid, st.gid);
  }
  await cluster.psql(
    0,
    "ALTER SYSTEM SET ssl_cert_file = 'pgr_server.crt'; ALTER SYSTEM SET ssl_key_file = 'pgr_server.key'; ALTER SYSTEM SET ssl = on",
  );
  await cluster.psql(0, 'SELECT pg_reload_conf()');
  // The pgrelay instances of the blocks below are started together (one at a time, their
  // start-ups add up); each block takes its own with started(name) and stops it as before.
  // The TLS block starts its own when it begins, as before.
  scramVerifier = await cluster.psql(0, "SELECT rolpassword FROM pg_authid WHERE rolname = 'carol'");
  startEarly('hba off', () =>
    proxyWith({
      passwd: ['alice:TEXTalicepw', `postgres:${SUPER_PW}`, `carol:${scramVerifier}`],
      startTimeoutMs: TOGETHER_START_TIMEOUT_MS,
    }),
  );
  startEarly('clear text', () =>
    proxyWith({
      passwd: [],
      config: { allow_clear_text_frontend_auth: true },
      startTimeoutMs: TOGETHER_START_TIMEOUT_MS,
    }),
  );
  startEarly('hba on', () =>
    proxyWith({
      passwd: [
        'alice:TEXTalicepw',
        'bob:AESfx+mQgm6Kl9/Cop9bDx8cw==',
        `postgres:TEXT${SUPER_PW}`,
        `carol:md5${'a'.repeat(32)}`,
      ],
      hba: [
        'host appdb all 127.0.0.1/32 reject',
        'host all alice 127.0.0.1/32 scram-sha-256',
        'host all postgres 127.0.0.1/32 md5',
        'host all carol 127.0.0.1/32 password',
        'host all bob 127.0.0.1/32 trust',
      ],
      config: {
        pool_key_file: path.join(path.dirname(new URL(import.meta.url).pathname), '../fixtures/auth/pgpoolkey'),
      },
      startTimeoutMs: TOGETHER_START_TIMEOUT_MS,
    }),
  );
  startEarly('authentication_timeout', () =>
    proxyWith({
      passwd: ['alice:TEXTalicepw'],
      config: { authentication_timeout: 2, num_init_children: 2 },
      startTimeoutMs: TOGETHER_START_TIMEOUT_MS,
    }),
  );
  await Promise.all(starting.values());
}, 180_000);

afterAll(async () => {
  await Promise.all([...starting.values()].map((p) => p.then((x) => x.stop()).catch(() => undefined)));
  await cluster?.stop();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

describe('pool_hba off: the primary asks for SCRAM', () => {
  let proxy: ProxyHandle;
  beforeAll(async () => {
    proxy = await started('hba off');
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('psql logs in with a TEXT / plain pool_passwd entry; a wrong password is 28P01', async () => {
    expect(await psqlAs(proxy, 'alice', 'alicepw')).toMatchObject({ code: 0, out: 'alice' });
    expect(await psqlAs(proxy, 'postgres', SUPER_PW)).toMatchObject({ code: 0, out: 'postgres' });
    const bad = await psqlAs(proxy, 'alice', 'wrong');
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/password authentication failed for user "alice"/);
  });

  it('a SCRAM verifier copied from pg_authid: the client proof logs into the backend', async () => {
    expect(await psqlAs(proxy, 'carol', 'carolpw')).toMatchObject({ code: 0, out: 'carol' });
    expect((await psqlAs(proxy, 'carol', 'nope')).err).toMatch(/password authentication failed for user "carol"/);
  });

  it('no pool_passwd entry and allow_clear_text_frontend_auth off: refused as a wrong password, the reason logged', async () => {
    const r = await psqlAs(proxy, 'bob', 'bobpw');
    expect(r.code).not.toBe(0);
    // The client cannot tell a user without an entry from a wrong password (auth-enumeration.test.ts).
    expect(r.err).toMatch(/password authentication failed for user "bob"/);
    await proxy.waitForLog(/no pool_passwd entry for the user.*allow_clear_text_frontend_auth/);
  });

  it('node-postgres and pgbench log in', async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: proxy.port,
      user: 'alice',
      password: 'alicepw',
      database: 'postgres',
      connectionTimeoutMillis: 10_000,
    });
    await c.connect();
    const r = await c.query('SELECT 1 AS x');
    expect(r.rows[0].x).toBe(1);
    await c.end();
    const init = await runPgbench(['-i', '-s', '1', '-q'], {
      port: proxy.port,
      user: 'postgres',
      password: SUPER_PW,
      timeoutMs: 120_000,
    });
    expect(init.code, init.stderr).toBe(0);
    const run = await runPgbench(['-n', '-S', '-t', '10', '-c', '2'], {
      port: proxy.port,
      user: 'postgres',
      password: SUPER_PW,
      timeoutMs: 60_000,
    });
    expect(run.code, run.stderr).toBe(0);
  });

  it('re-authenticates on a cached connection: wrong password and other users are refused', async () => {
    // postgres watches the cache; its own session stays open, so it never enters it.
    const admin = await loginAs(proxy.port, 'postgres', SUPER_PW);
    try {
      // alice (TEXT entry: pgrelay's own SCRAM exchange) and carol (SCRAM verifier: the client's
      // proof logs into the backend) each leave a backend connection idle in the cache: prove it.
      for (const [u, pw] of [
        ['alice', 'alicepw'],
        ['carol', 'carolpw'],
      ] as const) {
        const pid = await sessionBackendPid(proxy.port, u, pw);
        await waitForCached(admin, [pid]);
        for (const bad of ['wrong', pw.toUpperCase(), 'bobpw']) {
          await expect(loginAs(proxy.port, u, bad), `${u} with ${bad}`).rejects.toMatchObject({
            code: '28P01',
            message: `password authentication failed for user "${u}"`,
          });
        }
        // Not handed out: still idle in the cache, and the next right login gets exactly it.
        expect((await cachedConnections(admin)).map((c) => c.backendPid)).toContain(pid);
        expect(await sessionBackendPid(proxy.port, u, pw)).toBe(pid);
      }
      // psql without a password (-w) is refused too.
      expect((await psqlAs(proxy, 'alice', undefined)).code).not.toBe(0);
      // bob has no entry: still refused even though connections exist
      expect((await psqlAs(proxy, 'bob', 'alicepw')).code).not.toBe(0);
    } finally {
      await endPg(admin);
    }
  });

  it('a password change in pool_passwd applies after SIGHUP (old one refused on the cached connection)', async () => {
    await cluster.psql(0, "ALTER ROLE alice PASSWORD 'alicepw2'");
    await writePasswd(proxy, ['alice:TEXTalicepw2', `postgres:${SUPER_PW}`, `carol:${scramVerifier}`]);
    await hup(proxy);
    expect((await psqlAs(proxy, 'alice', 'alicepw')).err).toMatch(/password authentication failed for user "alice"/);
    expect(await psqlAs(proxy, 'alice', 'alicepw2')).toMatchObject({ code: 0, out: 'alice' });
    await cluster.psql(0, "ALTER ROLE alice PASSWORD 'alicepw'");
    await writePasswd(proxy, ['alice:TEXTalicepw', `postgres:${SUPER_PW}`, `carol:${scramVerifier}`]);
    await hup(proxy);
  });
});

describe('pool_hba off with allow_clear_text_frontend_auth', () => {
  let proxy: ProxyHandle;
  beforeAll(async () => {
    proxy = await started('clear text');
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('asks the client for clear text, verified by the backend, also on a cached connection', async () => {
    const admin = await loginAs(proxy.port, 'postgres', SUPER_PW);
    try {
      const pid = await sessionBackendPid(proxy.port, 'bob', 'bobpw');
      // a cached connection for bob now exists (proven): a wrong password must still fail
      await waitForCached(admin, [pid]);
      await expect(loginAs(proxy.port, 'bob', 'wrong')).rejects.toMatchObject({
        code: '28P01',
        message: 'password authentication failed for user "bob"',
      });
      // Not handed out: still idle in the cache. (The next right login is checked by a fresh login
      // to the primary, whose connection joins the cache and, being the newest, is the one used.)
      expect((await cachedConnections(admin)).map((c) => c.backendPid)).toContain(pid);
      expect(await sessionBackendPid(proxy.port, 'bob', 'bobpw')).toBeGreaterThan(0);
    } finally {
      await endPg(admin);
    }
  });
});

describe('pool_hba on', () => {
  let proxy: ProxyHandle;
  beforeAll(async () => {
    proxy = await started('hba on');
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('scram-sha-256 to the client, SCRAM to the backend from the TEXT password', async () => {
    expect(await psqlAs(proxy, 'alice', 'alicepw')).toMatchObject({ code: 0, out: 'alice' });
    expect((await psqlAs(proxy, 'alice', 'x')).err).toMatch(/password authentication failed for user "alice"/);
  });

  it('md5 to the client with a TEXT entry', async () => {
    expect(await psqlAs(proxy, 'postgres', SUPER_PW)).toMatchObject({ code: 0, out: 'postgres' });
    const bad = await psqlAs(proxy, 'postgres', 'x');
    expect(bad.err).toMatch(/password authentication failed for user "postgres"/);
  });

  it('password (clear text) checked against pool_passwd', async () => {
    // carol's entry is an unrelated md5 hash: the clear-text password does not match it
    const r = await psqlAs(proxy, 'carol', 'carolpw');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/password authentication failed for user "carol"/);
  });

  it('trust to the client; the backend gets the AES password from pool_passwd (key file); a bad AES secret fails at the backend', async () => {
    // bob's AES entry decrypts to "pass", which is not bob's password: the backend refuses
    const r = await psqlAs(proxy, 'bob', undefined);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/password authentication failed for user "bob"/);
    await cluster.psql(0, "ALTER ROLE bob PASSWORD 'pass'");
    expect(await psqlAs(proxy, 'bob', undefined)).toMatchObject({ code: 0, out: 'bob' });
    await cluster.psql(0, "ALTER ROLE bob PASSWORD 'bobpw'");
  });

  it("reject and no entry give 28000 with pgpool's detail", async () => {
    const r = await psqlAs(proxy, 'alice', 'alicepw', 'SELECT 1', { PGDATABASE: 'appdb' });
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('no pool_hba.conf entry for host "127.0.0.1", user "alice", database "appdb", SSL off');
    const r2 = await psqlAs(proxy, 'nobody', 'x');
    expect(r2.err).toContain(
      'no pool_hba.conf entry for host "127.0.0.1", user "nobody", database "postgres", SSL off',
    );
  });

  it('a broken pool_hba.conf on reload keeps the old rules', async () => {
    await writeHba(proxy, ['host all all 127.0.0.1/32 bogus-method']);
    await hup(proxy);
    await proxy.waitForLog(/pool_hba.conf not reloaded/);
    expect(await psqlAs(proxy, 'alice', 'alicepw')).toMatchObject({ code: 0, out: 'alice' });
  });
});

describe('TLS', () => {
  let proxy: ProxyHandle;
  beforeAll(async () => {
    proxy = await proxyWith({
      passwd: ['alice:TEXTalicepw', `postgres:TEXT${SUPER_PW}`],
      hba: [
        'hostssl all alice 127.0.0.1/32 cert',
        'hostssl all postgres 127.0.0.1/32 scram-sha-256',
        'host all postgres 127.0.0.1/32 reject',
      ],
      config: {
        ssl: true,
        ssl_cert: certs.serverCert,
        ssl_key: certs.serverKey,
        ssl_ca_cert: certs.ca,
        backend_ssl_mode: 'verify-full',
        backend_ssl_root_cert: certs.ca,
      },
    });
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  const tlsEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
    PGSSLMODE: 'verify-full',
    PGSSLROOTCERT: certs.ca,
    ...extra,
  });

  it("psql sslmode=verify-full succeeds against pgrelay's certificate (SCRAM-SHA-256-PLUS, channel binding)", async () => {
    const r = await psqlAs(proxy, 'postgres', SUPER_PW, 'SELECT current_user', tlsEnv({ PGCHANNELBINDING: 'require' }));
    expect(r).toMatchObject({ code: 0, out: 'postgres' });
    const r2 = await psqlAs(proxy, 'postgres', SUPER_PW, 'SELECT 1', {
      PGSSLMODE: 'verify-full',
      PGSSLROOTCERT: certs.ca,
      PGHOST: 'localhost',
    });
    expect(r2.code, r2.err).toBe(0);
  });

  it('hostssl rejects a plain connection', async () => {
    const r = await psqlAs(proxy, 'postgres', SUPER_PW, 'SELECT 1', { PGSSLMODE: 'disable' });
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(
      'no pool_hba.conf entry for host "127.0.0.1", user "postgres", database "postgres", SSL off',
    );
  });

  it('cert auth with a client certificate (CN = user); a certificate from another CA is refused', async () => {
    const ok = await psqlAs(
      proxy,
      'alice',
      undefined,
      'SELECT current_user',
      tlsEnv({ PGSSLCERT: certs.aliceCert, PGSSLKEY: certs.aliceKey }),
    );
    expect(ok, ok.err + proxy.logs().slice(-3000)).toMatchObject({ code: 0, out: 'alice' });
    const none = await psqlAs(
      proxy,
      'alice',
      undefined,
      'SELECT 1',
      tlsEnv({ PGSSLCERT: '/nonexistent', PGSSLKEY: '/nonexistent' }),
    );
    expect(none.code).not.toBe(0);
    expect(none.err).toMatch(/valid client certificate/);
    const rogue = await psqlAs(
      proxy,
      'alice',
      undefined,
      'SELECT 1',
      tlsEnv({ PGSSLCERT: certs.rogueCert, PGSSLKEY: certs.rogueKey }),
    );
    expect(rogue.code).not.toBe(0);
  });

  // Only that the link is encrypted; what verify-full / verify-ca refuse is in auth-tls.test.ts.
  it('backend connections use TLS (pg_stat_ssl) under backend_ssl_mode = verify-full', async () => {
    const r = await psqlAs(
      proxy,
      'postgres',
      SUPER_PW,
      'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
      tlsEnv(),
    );
    expect(r).toMatchObject({ code: 0, out: 't' });
  });

  it('accepts a direct TLS connection with ALPN "postgresql" and refuses one without ALPN', async () => {
    const login = (alpn: string[] | undefined): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = tls.connect({
          host: '127.0.0.1',
          port: proxy.port,
          ca: fs.readFileSync(certs.ca),
          servername: 'localhost',
          ALPNProtocols: alpn,
        });
        const t = setTimeout(() => {
          s.destroy();
          reject(new Error('timeout'));
        }, 10_000);
        let got = Buffer.alloc(0);
        s.on('secureConnect', () => {
          const params = Buffer.from('user\0postgres\0database\0postgres\0\0');
          const b = Buffer.alloc(8 + params.length);
          b.writeInt32BE(b.length, 0);
          b.writeInt32BE(196608, 4);
          params.copy(b, 8);
          s.write(b);
        });
        s.on('data', (d: Buffer) => {
          got = Buffer.concat([got, d]);
          if (got.length >= 9) {
            clearTimeout(t);
            s.destroy();
            resolve(got[0] === 0x52 ? `auth:${got.readInt32BE(5)}` : got.toString('latin1'));
          }
        });
        s.on('error', (e) => {
          clearTimeout(t);
          resolve(`error:${e.message}`);
        });
        s.on('close', () => {
          clearTimeout(t);
          resolve(`closed:${got.toString('latin1')}`);
        });
      });
    expect(await login(['postgresql'])).toBe('auth:10'); // AuthenticationSASL
    expect(await login(undefined)).toMatch(/ALPN/);
  });
});

describe('authentication_timeout', () => {
  let proxy: ProxyHandle;
  beforeAll(async () => {
    proxy = await started('authentication_timeout');
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('stalled clients are cut off and do not take session slots', async () => {
    // 6 clients that send a start-up packet and then never answer the password request
    const stalled: net.Socket[] = [];
    const closed: Array<Promise<number>> = [];
    for (let i = 0; i < 6; i++) {
      const s = net.connect({ host: '127.0.0.1', port: proxy.port });
      stalled.push(s);
      const started = Date.now();
      closed.push(new Promise((r) => s.on('close', () => r(Date.now() - started))));
      s.on('error', () => undefined);
      s.on('data', () => undefined); // read, so the server's close is seen
      s.on('connect', () => {
        const params = Buffer.from('user\0alice\0database\0postgres\0\0');
        const b = Buffer.alloc(8 + params.length);
        b.writeInt32BE(b.length, 0);
        b.writeInt32BE(196608, 4);
        params.copy(b, 8);
        s.write(b);
      });
    }
    // with num_init_children = 2, real clients still get in while those stall
    expect(await psqlAs(proxy, 'alice', 'alicepw')).toMatchObject({ code: 0, out: 'alice' });
    expect(await psqlAs(proxy, 'alice', 'alicepw')).toMatchObject({ code: 0, out: 'alice' });
    const times = await Promise.race([
      Promise.all(closed),
      new Promise<number[]>((_r, rej) =>
        setTimeout(() => rej(new Error(`stalled clients not cut off\n${proxy.logs().slice(-4000)}`)), 10_000),
      ),
    ]);
    for (const t of times) expect(t).toBeGreaterThanOrEqual(1500);
    for (const s of stalled) s.destroy();
  });
});
