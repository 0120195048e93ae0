/**
 * Negative cases for pgrelay's TLS checks (issue 19), against a private
 * DevCluster (one node, SCRAM) whose server certificate the tests swap:
 *
 * - Client certificates (pool_hba `cert`, `clientcert=verify-full`,
 *   `clientcert=verify-ca`): a certificate whose CN is not the user, one from an
 *   untrusted CA, none at all, and the right one. Each case is also run directly
 *   against PostgreSQL with the same certificate and an equivalent pg_hba.conf
 *   record, so the SQLSTATE and message pgrelay gives are checked against what
 *   PostgreSQL itself gives.
 * - Backend TLS (`backend_ssl_mode` verify-full / verify-ca): the server
 *   presents a certificate of the configured CA for another host name, or one
 *   from another CA. pgrelay's backend connections go through a recording
 *   forwarder (test/support/wiretap.ts), which proves that nothing but an
 *   SSLRequest and TLS records ever went over the wire.
 *
 * Certificates are made at run time with openssl in a temp dir.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import {
  type CertAuthority,
  type CertFiles,
  installCaInDataDir,
  installInDataDir,
  makeCa,
  makeLeaf,
} from '../support/certs.js';
import { endPg } from '../support/clients.js';
import { runCommand, startProxy, type ConfValue, type ProxyHandle } from '../support/proxy.js';
import { SSL_REQUEST, Wiretap, clearTextProblem } from '../support/wiretap.js';

const SUPER_PW = 'tls-sup3r';
const PASSWORDS: Record<string, string> = { alice: 'alicepw', bob: 'bobpw', carol: 'carolpw' };

let cluster: DevCluster;
let tmp: string;
let ca: CertAuthority;
let rogueCa: CertAuthority;
/** Client certificates: CN alice / bob from the trusted CA, and CN alice / bob from the rogue CA. */
let client: Record<'alice' | 'bob' | 'rogueAlice' | 'rogueBob', CertFiles>;
/** Server certificates, installed in node 0's data directory as <key>.crt / <key>.key. */
let serverCerts: Record<'good' | 'wronghost' | 'roguesrv', CertFiles>;

// ---------------------------------------------------------------- helpers

/** SHA-256 fingerprint of the certificate the server presents after an SSLRequest. */
function presentedFingerprint(port: number, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ host: '127.0.0.1', port });
    let settled = false;
    const finish = (err: Error | undefined, fp?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      raw.destroy();
      if (err) reject(err);
      else resolve(fp as string);
    };
    const timer = setTimeout(
      () => finish(new Error(`no TLS handshake with port ${port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    raw.on('error', (e) => finish(e));
    raw.once('connect', () => raw.write(SSL_REQUEST));
    raw.once('data', (d: Buffer) => {
      if (d[0] !== 0x53)
        return finish(new Error(`server answered ${JSON.stringify(d.toString('latin1'))} to SSLRequest`));
      const t = tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'localhost' });
      t.on('error', (e) => finish(e));
      t.once('secureConnect', () => {
        const fp = t.getPeerCertificate().fingerprint256;
        t.destroy();
        finish(undefined, fp);
      });
    });
  });
}

/**
 * Make node 0 present `which` (installed in beforeAll): ssl_cert_file /
 * ssl_key_file, reload, and wait until a new TLS handshake shows that
 * certificate (the postmaster applies a reload asynchronously).
 */
async function useServerCert(which: keyof typeof serverCerts): Promise<void> {
  await cluster.psql(
    0,
    `ALTER SYSTEM SET ssl_cert_file = '${which}.crt'; ALTER SYSTEM SET ssl_key_file = '${which}.key'; SELECT pg_reload_conf()`,
  );
  const want = new X509Certificate(fs.readFileSync(serverCerts[which].cert)).fingerprint256;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const got = await presentedFingerprint(cluster.node(0).port).catch((e: Error) => e.message);
    if (got === want) return;
    if (Date.now() > deadline) throw new Error(`node 0 does not present ${which}.crt after 30 s (last: ${got})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

type LoginResult = { ok: true; user: string; ssl: boolean; pid: number } | { ok: false; code: string; message: string };

/** Upper bound of one login() on a loaded machine; node-postgres' own timeout does not cover every path. */
const LOGIN_TIMEOUT_MS = 25_000;

/**
 * Log in with node-postgres over TLS (server verified against the test CA),
 * optionally presenting a client certificate; run one query and end. Never
 * rejects: a refusal comes back as its SQLSTATE (or Node's error code for a
 * failed TLS handshake) and message; no answer within LOGIN_TIMEOUT_MS as code
 * "TIMEOUT".
 */
async function login(
  port: number,
  user: string,
  o: { password?: string; cert?: CertFiles; database?: string; tls?: boolean; applicationName?: string } = {},
): Promise<LoginResult> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user,
    password: o.password ?? '',
    database: o.database ?? 'postgres',
    application_name: o.applicationName,
    connectionTimeoutMillis: 20_000,
    query_timeout: 20_000,
    ssl:
      o.tls === false
        ? false
        : {
            ca: fs.readFileSync(ca.cert),
            servername: 'localhost',
            ...(o.cert ? { cert: fs.readFileSync(o.cert.cert), key: fs.readFileSync(o.cert.key) } : {}),
          },
  });
  c.on('error', () => undefined);
  const attempt = (async (): Promise<LoginResult> => {
    try {
      await c.connect();
      const r = await c.query<{ u: string; ssl: boolean | null; pid: number }>(
        'SELECT current_user AS u, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl, pg_backend_pid() AS pid',
      );
      return { ok: true, user: r.rows[0].u, ssl: r.rows[0].ssl === true, pid: r.rows[0].pid };
    } catch (e) {
      const err = e as Error & { code?: string };
      return { ok: false, code: err.code ?? '', message: err.message };
    }
  })();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<LoginResult>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, code: 'TIMEOUT', message: `no answer within ${LOGIN_TIMEOUT_MS} ms` }),
      LOGIN_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([attempt, deadline]);
  } finally {
    clearTimeout(timer);
    await endPg(c);
  }
}

/**
 * Log in directly to node 0 with libpq (psql from the cluster's bin
 * directory), sslmode=verify-full, presenting a client certificate. Used where
 * PostgreSQL refuses the certificate in the TLS handshake: node-postgres does
 * not always notice that refusal (it can wait forever), libpq reports it.
 */
async function psqlDirect(
  user: string,
  database: string,
  cert: CertFiles,
): Promise<{ code: number | null; err: string }> {
  const r = await runCommand(path.join(cluster.pgBin, 'psql'), ['-X', '-w', '-At', '-c', 'SELECT 1'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      PGHOST: '127.0.0.1',
      PGPORT: String(cluster.node(0).port),
      PGUSER: user,
      PGDATABASE: database,
      PGPASSWORD: PASSWORDS[user] ?? '',
      PGSSLMODE: 'verify-full',
      PGSSLROOTCERT: ca.cert,
      PGSSLCERT: cert.cert,
      PGSSLKEY: cert.key,
      PGCONNECT_TIMEOUT: '10',
    },
    timeoutMs: 20_000,
  });
  return { code: r.code, err: r.stderr };
}

/** PostgreSQL's refusal of a client certificate from an unknown CA, as libpq reports it. */
const PG_UNKNOWN_CA = /SSL error: tlsv1 alert unknown ca/;

/** The refusal fields that PostgreSQL and pgrelay are compared on. */
function refusal(r: LoginResult): { code: string; message: string } | 'accepted' {
  return r.ok ? 'accepted' : { code: r.code, message: r.message };
}

async function proxyWith(opts: {
  config: Record<string, ConfValue>;
  passwd: string[];
  hba: string[];
}): Promise<ProxyHandle> {
  const dir = await fsp.mkdtemp(path.join(tmp, 'conf-'));
  const passwdFile = path.join(dir, 'pool_passwd');
  const hbaFile = path.join(dir, 'pool_hba.conf');
  await fsp.writeFile(passwdFile, opts.passwd.map((l) => `${l}\n`).join(''), { mode: 0o600 });
  await fsp.writeFile(hbaFile, opts.hba.map((l) => `${l}\n`).join(''));
  return startProxy({
    cluster,
    backends: [0],
    config: {
      pool_passwd: passwdFile,
      hba_file: hbaFile,
      enable_pool_hba: true,
      num_init_children: 8,
      ...opts.config,
    },
  });
}

// ---------------------------------------------------------------- cluster

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-auth-tls-'));
  ca = makeCa(tmp, 'ca');
  rogueCa = makeCa(tmp, 'rogueca');
  const local = ['DNS:localhost', 'IP:127.0.0.1'];
  serverCerts = {
    good: makeLeaf(tmp, 'server', ca, { cn: 'localhost', san: local }),
    // Signed by the configured CA, but for another host: only the host name check can refuse it.
    wronghost: makeLeaf(tmp, 'wronghost', ca, {
      cn: 'db.other.invalid',
      san: ['DNS:db.other.invalid', 'IP:127.0.0.2'],
    }),
    // The right host names, but from a CA pgrelay was not told to trust.
    roguesrv: makeLeaf(tmp, 'roguesrv', rogueCa, { cn: 'localhost', san: local }),
  };
  client = {
    alice: makeLeaf(tmp, 'alice', ca, { cn: 'alice' }),
    bob: makeLeaf(tmp, 'bob', ca, { cn: 'bob' }),
    rogueAlice: makeLeaf(tmp, 'rogue-alice', rogueCa, { cn: 'alice' }),
    rogueBob: makeLeaf(tmp, 'rogue-bob', rogueCa, { cn: 'bob' }),
  };

  cluster = await DevCluster.start({ standbys: 0, authMethod: 'scram-sha-256', superuserPassword: SUPER_PW });
  const dataDir = cluster.node(0).dataDir;
  for (const k of Object.keys(serverCerts) as Array<keyof typeof serverCerts>)
    installInDataDir(dataDir, serverCerts[k], k);
  const root = installCaInDataDir(dataDir, ca, 'pgr_root.crt');
  await cluster.psql(
    0,
    Object.entries(PASSWORDS)
      .map(([u, p]) => `CREATE ROLE ${u} LOGIN PASSWORD '${p}';`)
      .join('\n'),
  );
  for (const db of ['pgcert_cert', 'pgcert_full', 'pgcert_ca']) await cluster.psql(0, `CREATE DATABASE ${db}`);
  // For the comparison with PostgreSQL: the same three records, one database each, ahead of
  // DevCluster's own records (pgrelay's backend logins to "postgres" still match those).
  const hbaFile = path.join(dataDir, 'pg_hba.conf');
  const original = await fsp.readFile(hbaFile, 'utf8');
  await fsp.writeFile(
    hbaFile,
    [
      'hostssl pgcert_cert all 127.0.0.1/32 cert',
      'hostssl pgcert_full all 127.0.0.1/32 scram-sha-256 clientcert=verify-full',
      'hostssl pgcert_ca all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca',
      original,
    ].join('\n'),
  );
  await cluster.psql(0, `ALTER SYSTEM SET ssl_ca_file = '${root}'; ALTER SYSTEM SET ssl = on`);
  await useServerCert('good');
  // The reload that installed the certificate also loaded pg_hba.conf; wait until the cert
  // record answers (pg_hba.conf is re-read by the postmaster asynchronously as well).
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await login(cluster.node(0).port, 'alice', { cert: client.alice, database: 'pgcert_cert' });
    if (r.ok) break;
    if (Date.now() > deadline) throw new Error(`pg_hba.conf cert record not active: ${JSON.stringify(r)}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------- client certificates

describe('client certificates: pool_hba cert and clientcert=', () => {
  let proxy: ProxyHandle;
  beforeAll(async () => {
    proxy = await proxyWith({
      passwd: Object.entries(PASSWORDS).map(([u, p]) => `${u}:TEXT${p}`),
      hba: [
        'hostssl all alice 127.0.0.1/32 cert',
        'hostssl all bob 127.0.0.1/32 scram-sha-256 clientcert=verify-full',
        'hostssl all carol 127.0.0.1/32 scram-sha-256 clientcert=verify-ca',
      ],
      config: { ssl: true, ssl_cert: serverCerts.good.cert, ssl_key: serverCerts.good.key, ssl_ca_cert: ca.cert },
    });
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  /** The same login through pgrelay and directly to PostgreSQL (database `pgDb` selects the equivalent record). */
  async function both(
    user: string,
    pgDb: string,
    o: { password?: string; cert?: CertFiles },
  ): Promise<{ relay: LoginResult; pg: LoginResult }> {
    const relay = await login(proxy.port, user, o);
    const direct = await login(cluster.node(0).port, user, { ...o, database: pgDb });
    return { relay, pg: direct };
  }

  const NEEDS_CERT = { code: '28000', message: 'connection requires a valid client certificate' };

  it('cert: the right certificate logs in; CN ≠ user and no certificate give the 28000 errors PostgreSQL gives', async () => {
    const ok = await both('alice', 'pgcert_cert', { cert: client.alice });
    expect(ok.relay).toMatchObject({ ok: true, user: 'alice' });
    expect(ok.pg).toMatchObject({ ok: true, user: 'alice' });

    // bob's certificate, from the trusted CA, presented as alice.
    const other = await both('alice', 'pgcert_cert', { cert: client.bob });
    expect(refusal(other.relay)).toEqual({
      code: '28000',
      message: 'certificate authentication failed for user "alice"',
    });
    expect(refusal(other.relay)).toEqual(refusal(other.pg));

    const none = await both('alice', 'pgcert_cert', {});
    expect(refusal(none.relay)).toEqual(NEEDS_CERT);
    expect(refusal(none.relay)).toEqual(refusal(none.pg));
  });

  it('cert: a certificate with CN = user from an untrusted CA is refused', async () => {
    // PostgreSQL refuses it in the TLS handshake (alert "unknown ca"); pgrelay completes the
    // handshake and refuses the login with 28000, before any password or backend.
    const direct = await psqlDirect('alice', 'pgcert_cert', client.rogueAlice);
    expect(direct.code).not.toBe(0);
    expect(direct.err).toMatch(PG_UNKNOWN_CA);
    expect(refusal(await login(proxy.port, 'alice', { cert: client.rogueAlice }))).toEqual(NEEDS_CERT);
    await proxy.waitForLog(/client authentication failed/);
  });

  it('clientcert=verify-full: needs the password and a trusted certificate whose CN is the user', async () => {
    const ok = await both('bob', 'pgcert_full', { password: PASSWORDS.bob, cert: client.bob });
    expect(ok.relay).toMatchObject({ ok: true, user: 'bob' });
    expect(ok.pg).toMatchObject({ ok: true, user: 'bob' });

    // A trusted certificate for alice, with bob's right password.
    const other = await both('bob', 'pgcert_full', { password: PASSWORDS.bob, cert: client.alice });
    // PostgreSQL reports this as the record's method failing (28P01 "password authentication
    // failed"); pgrelay as 28000 "certificate authentication failed". Both are refusals of class 28.
    for (const r of [other.relay, other.pg]) {
      expect(r.ok).toBe(false);
      expect(refusal(r)).toMatchObject({
        code: expect.stringMatching(/^28/),
        message: expect.stringMatching(/^(certificate|password) authentication failed for user "bob"$/),
      });
    }

    expect((await psqlDirect('bob', 'pgcert_full', client.rogueBob)).err).toMatch(PG_UNKNOWN_CA);
    const rogue = await login(proxy.port, 'bob', { password: PASSWORDS.bob, cert: client.rogueBob });
    expect(refusal(rogue)).toEqual(NEEDS_CERT);

    const none = await both('bob', 'pgcert_full', { password: PASSWORDS.bob });
    expect(refusal(none.relay)).toEqual(NEEDS_CERT);
    expect(refusal(none.relay)).toEqual(refusal(none.pg));

    const wrongPw = await both('bob', 'pgcert_full', { password: 'nope', cert: client.bob });
    expect(refusal(wrongPw.relay)).toEqual({ code: '28P01', message: 'password authentication failed for user "bob"' });
    expect(refusal(wrongPw.relay)).toEqual(refusal(wrongPw.pg));
  });

  it('clientcert=verify-ca: any trusted certificate with the password; untrusted or none is refused', async () => {
    // CN alice for user carol: verify-ca checks the CA only, as PostgreSQL does.
    const ok = await both('carol', 'pgcert_ca', { password: PASSWORDS.carol, cert: client.alice });
    expect(ok.relay).toMatchObject({ ok: true, user: 'carol' });
    expect(ok.pg).toMatchObject({ ok: true, user: 'carol' });

    expect((await psqlDirect('carol', 'pgcert_ca', client.rogueAlice)).err).toMatch(PG_UNKNOWN_CA);
    const rogue = await login(proxy.port, 'carol', { password: PASSWORDS.carol, cert: client.rogueAlice });
    expect(refusal(rogue)).toEqual(NEEDS_CERT);

    const none = await both('carol', 'pgcert_ca', { password: PASSWORDS.carol });
    expect(refusal(none.relay)).toEqual(NEEDS_CERT);
    expect(refusal(none.relay)).toEqual(refusal(none.pg));
  });

  it('hostssl records do not match a connection without TLS', async () => {
    const r = await login(proxy.port, 'alice', { tls: false, password: PASSWORDS.alice });
    expect(refusal(r)).toEqual({ code: '28000', message: 'client authentication failed' });
  });
});

// ---------------------------------------------------------------- backend TLS

describe('backend TLS: backend_ssl_mode verify-full / verify-ca', () => {
  let tap: Wiretap;
  /** verify-full, with failover_on_backend_error off so that the session's own error reaches the client. */
  let full: ProxyHandle;
  let verifyCa: ProxyHandle;
  /** verify-full with the failover settings at their defaults. */
  let fullDefaults: ProxyHandle;

  beforeAll(async () => {
    await useServerCert('good');
    tap = await Wiretap.start(cluster.node(0));
    const common = {
      passwd: [`postgres:TEXT${SUPER_PW}`],
      hba: ['host all postgres 127.0.0.1/32 trust'],
    };
    const base: Record<string, ConfValue> = {
      // Through the recording forwarder; the host name pgrelay checks stays 127.0.0.1.
      backend_port0: tap.port,
      backend_ssl_root_cert: ca.cert,
    };
    // Each session opens its own backend connection, so each test sees the certificate the
    // server presents at that moment. With failover_on_backend_error on (default), a
    // certificate refused on the only node leads to a health check, which fails the same way
    // and takes the node down; the client then gets 57P03 instead of the TLS error. That is
    // failover's path; fullDefaults checks that it fails closed too.
    const quiet: Record<string, ConfValue> = {
      connection_cache: false,
      failover_on_backend_error: false,
      health_check_period: 0,
      sr_check_period: 0,
    };
    [full, verifyCa, fullDefaults] = await Promise.all([
      proxyWith({ ...common, config: { ...base, ...quiet, backend_ssl_mode: 'verify-full' } }),
      proxyWith({ ...common, config: { ...base, ...quiet, backend_ssl_mode: 'verify-ca' } }),
      // sr_check_period 0 only keeps background checks out of the tap's record.
      proxyWith({ ...common, config: { ...base, sr_check_period: 0, backend_ssl_mode: 'verify-full' } }),
    ]);
    // Each found the primary while the server still had the right certificate.
    await Promise.all([full, verifyCa, fullDefaults].map((p) => p.waitForLog('primary node found', 30_000)));
  });

  afterAll(async () => {
    await Promise.all([full, verifyCa, fullDefaults].map((p) => p?.stop()));
    await tap?.close();
    await useServerCert('good');
  });

  /** Every connection pgrelay made since tap.clear() carried only an SSLRequest and TLS records. */
  function expectNothingInClear(): void {
    expect(tap.connections.length).toBeGreaterThan(0);
    for (const c of tap.connections) {
      expect(clearTextProblem(c.toServer)).toBeUndefined();
      // and the server never answered with anything but 'S' and TLS records either
      expect(c.toClient[0]).toBe(0x53);
      expect(c.toServer.includes(Buffer.from('user\0'))).toBe(false);
    }
  }

  it('control: the wire check does see clear text (backend_ssl_mode = disable through the same tap)', async () => {
    tap.clear();
    const plain = await proxyWith({
      passwd: [`postgres:TEXT${SUPER_PW}`],
      hba: ['host all postgres 127.0.0.1/32 trust'],
      config: { backend_port0: tap.port, backend_ssl_mode: 'disable', sr_check_period: 0, connection_cache: false },
    });
    try {
      expect(await login(plain.port, 'postgres', { tls: false })).toMatchObject({ ok: true, ssl: false });
    } finally {
      await plain.stop();
    }
    expect(tap.connections.length).toBeGreaterThan(0);
    for (const c of tap.connections) {
      expect(clearTextProblem(c.toServer)).toMatch(/does not start with an SSLRequest/);
      expect(c.toServer.includes(Buffer.from('user\0postgres\0'))).toBe(true);
    }
  });

  it('right CA and host name: verify-full and verify-ca log in, over TLS (pg_stat_ssl), nothing in clear', async () => {
    tap.clear();
    for (const p of [full, verifyCa, fullDefaults]) {
      const r = await login(p.port, 'postgres', { tls: false });
      expect(r).toMatchObject({ ok: true, user: 'postgres', ssl: true });
    }
    expectNothingInClear();
  });

  it('verify-full refuses a certificate of the configured CA issued for another host name; nothing in clear', async () => {
    await useServerCert('wronghost');
    tap.clear();
    const r = await login(full.port, 'postgres', { tls: false });
    expect(r.ok).toBe(false);
    expect(refusal(r)).toMatchObject({
      code: '08001',
      message: expect.stringMatching(
        /^could not establish TLS with backend node 0 \(127\.0\.0\.1:\d+\): Hostname\/IP does not match certificate's altnames/,
      ),
    });
    expectNothingInClear();
  });

  it('verify-ca accepts that certificate (it checks the CA, not the host name), over TLS', async () => {
    await useServerCert('wronghost');
    tap.clear();
    const r = await login(verifyCa.port, 'postgres', { tls: false });
    expect(r).toMatchObject({ ok: true, user: 'postgres', ssl: true });
    expectNothingInClear();
  });

  it('verify-full and verify-ca refuse a certificate from a CA other than backend_ssl_root_cert; nothing in clear', async () => {
    await useServerCert('roguesrv');
    tap.clear();
    for (const p of [full, verifyCa]) {
      const r = await login(p.port, 'postgres', { tls: false });
      expect(refusal(r)).toMatchObject({
        code: '08001',
        message: expect.stringMatching(
          /^could not establish TLS with backend node 0 \(127\.0\.0\.1:\d+\): .*(certificate|verify)/,
        ),
      });
    }
    expectNothingInClear();
  });

  it('with default failover settings a refused certificate still fails closed (refused, nothing in clear)', async () => {
    await useServerCert('wronghost');
    tap.clear();
    // Another application_name: a start-up key with no connection cached (the connection cached
    // by the first test was verified when it was opened, and may be reused).
    const r = await login(fullDefaults.port, 'postgres', { tls: false, applicationName: 'after-the-swap' });
    // An error from pgrelay (the node is health-checked, fails the same check and goes down, so
    // the client ends with 57P03 "no primary node is available"), not a hang.
    expect(refusal(r)).toMatchObject({ code: expect.stringMatching(/^(08|57)/) });
    expect(fullDefaults.logs()).toMatch(/Hostname\/IP does not match certificate's altnames/);
    expectNothingInClear();
  });
});
