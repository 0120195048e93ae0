/**
 * Foundation: malformed and hostile input, each sent with a raw socket. For every
 * case: the right ErrorResponse (SQLSTATE) where the protocol allows one, the
 * connection closed, and afterwards a concurrent normal session still works,
 * a new connection works, and the pgrelay process is alive.
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, pgClient, queryRows, withTimeout } from '../support/clients.js';
import { type ConfValue, startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  PROTOCOL_3_0,
  RawClient,
  cancelLogBarrier,
  cancelRequest,
  closeAllRaw,
  bindMessage,
  cstrings,
  dataRowValues,
  describeMessage,
  errorFields,
  executeMessage,
  flushMessage,
  gssencRequest,
  isAlive,
  message,
  parseMessage,
  queryMessage,
  sslRequest,
  startupMessage,
  syncMessage,
  type BackendMessage,
} from '../support/raw.js';
import { pollUntil } from '../support/wait.js';
import { type TapConnection, Wiretap } from '../support/wiretap.js';
import { CAPTURE_SQL } from '../../src/router/consistency.js';

const cluster = getCluster();
let proxy: ProxyHandle;
/** A normal session open for the whole file. */
let normal: pg.Client;

const USER = { user: 'postgres', database: 'postgres', application_name: 'relay-bad-input' };

beforeAll(async () => {
  proxy = await startProxy({
    cluster,
    config: {
      log_min_messages: 'warning',
      load_balance_mode: false,
      authentication_timeout: 2,
      max_message_size: 1024 * 1024,
    },
  });
  normal = await pgClient({ port: proxy.port }, { application_name: 'relay-bad-input-normal' });
});

afterEach(async () => {
  closeAllRaw();
  // The concurrent session still works, a new one can connect, the process is alive.
  expect(isAlive(proxy.pid)).toBe(true);
  const r = await withTimeout(
    normal.query('SELECT $1::int + 1 AS v', [41]),
    15_000,
    'query on the concurrent normal session',
  );
  expect(r.rows[0].v).toBe(42);
  const fresh = await pgClient({ port: proxy.port }, { application_name: 'relay-bad-input-fresh' });
  expect((await fresh.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  await endPg(fresh);
});

afterAll(async () => {
  if (normal) await endPg(normal);
  await closeAllClients();
  const code = await proxy?.stop();
  expect(code).toBe(0);
});

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function types(msgs: BackendMessage[]): string {
  return msgs.map((m) => m.type).join('');
}

/** Until pg_stat_activity on the primary shows backend `pid` running `query`. */
async function waitRunning(pid: number, query: string): Promise<void> {
  await pollUntil(
    () => cluster.psql(cluster.primaryId, `SELECT state || '|' || query FROM pg_stat_activity WHERE pid = ${pid}`),
    (v) => v === `active|${query}`,
    { what: `backend ${pid} to be running ${query}` },
  );
}

/** Until backend `pid` has exited (its connection was closed, not kept or cached). */
async function waitBackendGone(pid: number, timeoutMs = 30_000): Promise<void> {
  await pollUntil(
    () => cluster.psql(cluster.primaryId, `SELECT count(*) FROM pg_stat_activity WHERE pid = ${pid}`),
    (v) => v === '0',
    { what: `backend ${pid} to exit`, timeoutMs, intervalMs: 100 },
  );
}

/** pool_pid of every session pgrelay lists in SHOW pool_processes. */
async function sessionPids(): Promise<string[]> {
  return (await queryRows({ port: proxy.port }, 'SHOW pool_processes')).map((r) => r.pool_pid!);
}

/** Until pgrelay no longer lists session `pid` (its BackendKeyData pid) in SHOW pool_processes. */
async function waitSessionGone(pid: number): Promise<void> {
  await pollUntil(sessionPids, (pids) => !pids.includes(String(pid)), { what: `session ${pid} to end` });
}

/** pgrelay's log lines about the client connection from local port `port`. */
function linesOfClient(port: number | undefined): string[] {
  return proxy
    .logs()
    .split('\n')
    .filter((l) => l.includes(`"127.0.0.1:${port}"`));
}

/** Read until the server closes; expect exactly one FATAL ErrorResponse with `code` (and message matching `re`). */
async function expectFatalAndClose(
  raw: RawClient,
  code: string,
  re?: RegExp,
  timeoutMs = 10_000,
): Promise<Record<string, string>> {
  const { messages, closed, rest } = await raw.drainUntilClosed(timeoutMs);
  expect(closed, `connection still open after ${timeoutMs} ms; got ${types(messages)}`).toBe(true);
  const errs = messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
  expect(errs, `expected one ErrorResponse, got messages '${types(messages)}' + ${rest.length} bytes`).toHaveLength(1);
  const f = errs[0];
  expect(f.C, `SQLSTATE of "${f.M}"`).toBe(code);
  expect(f.V ?? f.S).toBe('FATAL');
  if (re) expect(f.M).toMatch(re);
  return f;
}

/**
 * A start-up packet with an impossible length: as PostgreSQL (which logs "invalid
 * length of startup packet" and replies nothing, since the peer may not speak the
 * protocol at all), the connection is closed without a reply.
 */
async function expectClosedWithoutReply(raw: RawClient, timeoutMs = 5000): Promise<void> {
  const { messages, closed, rest } = await raw.drainUntilClosed(timeoutMs);
  expect(closed, `connection still open after ${timeoutMs} ms; got ${types(messages)}`).toBe(true);
  expect(types(messages)).toBe('');
  expect(rest.length).toBe(0);
}

/** A normal start-up and a query on an open raw connection. */
async function expectWorkingSession(raw: RawClient): Promise<void> {
  const st = await raw.readStartupReply(10_000);
  expect(st.error).toBeUndefined();
  expect(st.ok).toBe(true);
  expect(types(st.messages)).toMatch(/^R(S)+KZ$/);
  const q = await raw.query('SELECT 7 * 6');
  expect(q.rows).toEqual([['42']]);
  expect(q.status).toBe('I');
  raw.end();
}

describe('start-up packet', () => {
  it('closes at once, sending and logging no error, when the client ends its side in the middle of the start-up packet', async () => {
    for (const partial of [startupMessage(USER).subarray(0, 12), int32(100).subarray(0, 2)]) {
      const raw = await RawClient.connect(proxy.port);
      const port = raw.socket.localPort;
      raw.send(partial);
      raw.socket.end(); // FIN: nothing more will come
      expect(await raw.waitClosed(15_000), 'pgrelay closed the connection').toBe(true);
      expect(raw.received, 'bytes pgrelay sent back').toBe(0);
      // Closed because of the EOF, not by authentication_timeout (which logs), and without an error.
      await cancelLogBarrier(proxy);
      expect(
        linesOfClient(port).filter((l) => /authentication_timeout|start-up failed|"level":"(error|fatal)"/.test(l)),
      ).toEqual([]);
    }
  });

  it('closes a connection that sends a truncated start-up packet and then nothing (authentication_timeout = 2)', async () => {
    const raw = await RawClient.connect(proxy.port);
    const port = raw.socket.localPort;
    raw.send(startupMessage(USER).subarray(0, 10));
    const t0 = Date.now();
    expect(await raw.waitClosed(20_000)).toBe(true);
    const dt = Date.now() - t0;
    expect(dt, 'not before authentication_timeout').toBeGreaterThan(1500);
    expect(dt, 'within authentication_timeout plus a generous margin').toBeLessThan(15_000);
    await cancelLogBarrier(proxy);
    expect(linesOfClient(port).join('\n')).toMatch(/no complete start-up packet within authentication_timeout/);
  });

  it('closes a connection that sends nothing (authentication_timeout = 2)', async () => {
    const raw = await RawClient.connect(proxy.port);
    const port = raw.socket.localPort;
    const t0 = Date.now();
    expect(await raw.waitClosed(20_000)).toBe(true);
    const dt = Date.now() - t0;
    expect(dt, 'not before authentication_timeout').toBeGreaterThan(1500);
    expect(dt, 'within authentication_timeout plus a generous margin').toBeLessThan(15_000);
    await cancelLogBarrier(proxy);
    expect(linesOfClient(port).join('\n')).toMatch(/no complete start-up packet within authentication_timeout/);
  });

  for (const len of [0, 4, 7]) {
    it(`closes a connection whose start-up length field is ${len} (< 8), without a reply`, async () => {
      const raw = await RawClient.connect(proxy.port);
      raw.send(int32(len), int32(PROTOCOL_3_0), Buffer.from('user\0postgres\0\0'));
      await expectClosedWithoutReply(raw);
    });
  }

  for (const len of [10001, 0x7fffffff, 0xffffffff]) {
    it(`closes a connection whose start-up length field is ${len} (> 10000), without a reply`, async () => {
      const raw = await RawClient.connect(proxy.port);
      raw.send(int32(len), int32(PROTOCOL_3_0), Buffer.from('user\0postgres\0\0'));
      await expectClosedWithoutReply(raw);
    });
  }

  it('closes the connection of an HTTP request sent to the port (no reply, no hang)', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'));
    await expectClosedWithoutReply(raw);
  });

  it('rejects protocol 2.0 with 0A000', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(startupMessage(USER, 2 << 16));
    await expectFatalAndClose(raw, '0A000', /unsupported frontend protocol 2\.0/);
  });

  it('rejects protocol 4.0 with 0A000', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(startupMessage(USER, 4 << 16));
    await expectFatalAndClose(raw, '0A000', /unsupported frontend protocol 4\.0/);
  });

  it('answers protocol 3.1 with a _pq_ option with NegotiateProtocolVersion, then a normal start-up', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(startupMessage({ ...USER, '_pq_.x': 'on' }, (3 << 16) | 1));
    const v = await raw.next(10_000);
    expect(v?.type).toBe('v');
    const body = v?.body as Buffer;
    expect(body.readInt32BE(0)).toBe((3 << 16) | 0); // the newest version pgrelay speaks, as PostgreSQL sends it
    expect(body.readInt32BE(4)).toBe(1); // one option not recognized
    expect(cstrings(body.subarray(8))).toEqual(['_pq_.x']);
    await expectWorkingSession(raw);
  });

  it('answers protocol 3.2 (libpq 18, pgjdbc protocolVersion=3.2) with NegotiateProtocolVersion 3.0, as PostgreSQL 15 does', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(startupMessage(USER, (3 << 16) | 2));
    const v = await raw.next(10_000);
    expect(v?.type).toBe('v');
    const body = v?.body as Buffer;
    expect(body.readInt32BE(0)).toBe(PROTOCOL_3_0);
    expect(body.readInt32BE(4)).toBe(0);
    await expectWorkingSession(raw);
  });

  it('answers protocol 3.0 with an unknown _pq_ option with NegotiateProtocolVersion, then a normal start-up', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(startupMessage({ '_pq_.a': '1', ...USER, '_pq_.b': '2' }, PROTOCOL_3_0));
    const v = await raw.next(10_000);
    expect(v?.type).toBe('v');
    const body = v?.body as Buffer;
    expect(body.readInt32BE(0)).toBe((3 << 16) | 0);
    expect(body.readInt32BE(4)).toBe(2);
    expect(cstrings(body.subarray(8))).toEqual(['_pq_.a', '_pq_.b']);
    await expectWorkingSession(raw);
  });

  it("answers SSLRequest with 'N', then a normal start-up works", async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(sslRequest());
    expect(await raw.readByte(10_000)).toBe('N');
    raw.send(startupMessage(USER));
    await expectWorkingSession(raw);
  });

  it("answers GSSENCRequest with 'N', then a normal start-up works", async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(gssencRequest());
    expect(await raw.readByte(10_000)).toBe('N');
    raw.send(startupMessage(USER));
    await expectWorkingSession(raw);
  });

  it("answers GSSENCRequest then SSLRequest with 'N' each (libpq gssencmode=prefer + sslmode=prefer), then a normal start-up works", async () => {
    // PostgreSQL tracks the two negotiations separately: a client may ask for GSS
    // encryption, be refused, and then ask for SSL on the same connection.
    const raw = await RawClient.connect(proxy.port);
    raw.send(gssencRequest());
    expect(await raw.readByte(10_000)).toBe('N');
    raw.send(sslRequest());
    expect(await raw.readByte(10_000)).toBe('N');
    raw.send(startupMessage(USER));
    await expectWorkingSession(raw);
  });

  it("answers SSLRequest then GSSENCRequest with 'N' each (a client may negotiate in either order), then a normal start-up works", async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(sslRequest());
    expect(await raw.readByte(10_000)).toBe('N');
    raw.send(gssencRequest());
    expect(await raw.readByte(10_000)).toBe('N');
    raw.send(startupMessage(USER));
    await expectWorkingSession(raw);
  });

  it('rejects a second SSLRequest on the same connection with a FATAL error', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(sslRequest());
    expect(await raw.readByte(10_000)).toBe('N');
    raw.send(sslRequest());
    // PostgreSQL answers 0A000 "unsupported frontend protocol 1234.5679"; 08P01 is as good.
    const { messages, closed } = await raw.drainUntilClosed(10_000);
    expect(closed).toBe(true);
    const e = messages.find((m) => m.type === 'E');
    expect(e, `got '${types(messages)}'`).toBeDefined();
    expect(['08P01', '0A000']).toContain(errorFields((e as BackendMessage).body).C);
  });

  it('rejects a start-up without user with 28000', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(startupMessage({ database: 'postgres' }));
    await expectFatalAndClose(raw, '28000', /no PostgreSQL user name specified in startup packet/);
  });

  it('rejects a start-up with an empty parameter list with 28000', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(int32(9), int32(PROTOCOL_3_0), Buffer.from([0]));
    await expectFatalAndClose(raw, '28000');
  });

  it('rejects a start-up packet without its final terminator with 08P01', async () => {
    const raw = await RawClient.connect(proxy.port);
    const body = Buffer.concat([int32(PROTOCOL_3_0), Buffer.from('user\0postgres\0database\0postgres')]);
    raw.send(int32(4 + body.length), body);
    await expectFatalAndClose(raw, '08P01', /invalid startup packet layout/);
  });

  it("forwards PostgreSQL's error for a database that does not exist (3D000)", async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(startupMessage({ user: 'postgres', database: 'relay_no_such_db' }));
    await expectFatalAndClose(raw, '3D000', /database "relay_no_such_db" does not exist/, 10_000);
  });

  it("forwards PostgreSQL's error for a role that does not exist (28000)", async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(startupMessage({ user: 'relay_no_such_role', database: 'postgres' }));
    await expectFatalAndClose(raw, '28000', /role "relay_no_such_role" does not exist/, 10_000);
  });

  it('closes a CancelRequest with an unknown key without an answer', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(cancelRequest(12345, 67890));
    const { messages, closed, rest } = await raw.drainUntilClosed(10_000);
    expect(closed).toBe(true);
    expect(messages).toHaveLength(0);
    expect(rest.length).toBe(0);
  });

  it('closes a CancelRequest of the wrong length', async () => {
    const raw = await RawClient.connect(proxy.port);
    raw.send(int32(12), int32(80877102), int32(1));
    const { closed } = await raw.drainUntilClosed(10_000);
    expect(closed).toBe(true);
  });
});

describe('messages after start-up', () => {
  async function session(): Promise<RawClient> {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup(USER);
    expect(st.ok).toBe(true);
    return raw;
  }

  for (const len of [0, 3]) {
    it(`rejects a message whose length field is ${len} (< 4) with 08P01 and closes`, async () => {
      const raw = await session();
      const b = Buffer.alloc(5);
      b[0] = 'Q'.charCodeAt(0);
      b.writeUInt32BE(len, 1);
      raw.send(b, Buffer.from('SELECT 1\0'));
      await expectFatalAndClose(raw, '08P01');
    });
  }

  it('answers a Query without its string (length 4) with 08P01 (PostgreSQL: ERROR and the session goes on; a FATAL + close is tolerated)', async () => {
    // PostgreSQL: pq_getmsgstring fails with ERROR 08P01 "invalid string in message", then ReadyForQuery.
    const raw = await session();
    raw.send(message('Q'));
    const r = await raw.collect('Z', 10_000);
    expect(r.length).toBeGreaterThan(0);
    const f = errorFields(r[0].body);
    expect(r[0].type).toBe('E');
    expect(f.C).toBe('08P01');
    if (f.V === 'ERROR') {
      expect(types(r)).toBe('EZ');
      expect((await raw.query('SELECT 1')).rows).toEqual([['1']]);
      raw.end();
    } else {
      expect(f.V).toBe('FATAL');
      expect(await raw.waitClosed(10_000)).toBe(true);
    }
  });

  it('rejects a 2 MB Query over max_message_size (1 MB) with 54000 and closes', async () => {
    const raw = await session();
    raw.send(queryMessage(`SELECT length('${'x'.repeat(2 * 1024 * 1024)}')`));
    await expectFatalAndClose(raw, '54000');
  });

  it('rejects a length field announcing 1 GB (header only) with 54000 and closes', async () => {
    const raw = await session();
    const b = Buffer.alloc(5);
    b[0] = 'Q'.charCodeAt(0);
    b.writeUInt32BE(0x40000000, 1);
    raw.send(b);
    await expectFatalAndClose(raw, '54000');
  });

  it('accepts a 900 kB Query under max_message_size', async () => {
    const raw = await session();
    const q = await raw.query(`SELECT length('${'x'.repeat(900 * 1024)}')`);
    expect(q.errors).toEqual([]);
    expect(q.rows).toEqual([[String(900 * 1024)]]);
    raw.end();
  });

  for (const t of [0x7a /* z */, 0x00, 0xff, 0x70 /* p: password message after start-up */]) {
    it(`rejects message type 0x${t.toString(16)} with 08P01 and closes`, async () => {
      const raw = await session();
      const body = Buffer.from('hello\0');
      const b = Buffer.alloc(5);
      b[0] = t;
      b.writeUInt32BE(4 + body.length, 1);
      raw.send(b, body);
      const f = await expectFatalAndClose(raw, '08P01');
      if (t === 0x7a) expect(f.M).toMatch(/invalid frontend message type/);
    });
  }

  it('ends the session and closes its backend when the client leaves in the middle of a message', {
    timeout: 120_000,
  }, async () => {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ ...USER, application_name: 'relay-bad-input-mid-message' });
    expect(st.ok).toBe(true);
    const backendPid = Number((await raw.query('SELECT pg_backend_pid()')).rows[0]![0]);
    expect(await sessionPids()).toContain(String(st.pid));
    raw.send(queryMessage('SELECT 1').subarray(0, 7));
    raw.socket.end();
    expect(await raw.waitClosed(15_000)).toBe(true);
    await waitSessionGone(st.pid);
    // Its backend link may hold half a message: closed, never put back in the cache.
    await waitBackendGone(backendPid);
  });

  it('ends the session and lets its backend go when the client leaves in the middle of a running query', {
    timeout: 120_000,
  }, async () => {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ ...USER, application_name: 'relay-bad-input-mid-query' });
    expect(st.ok).toBe(true);
    const backendPid = Number((await raw.query('SELECT pg_backend_pid()')).rows[0]![0]);
    raw.send(queryMessage('SELECT pg_sleep(5)'));
    await waitRunning(backendPid, 'SELECT pg_sleep(5)');
    raw.destroy();
    await waitSessionGone(st.pid);
    // After its sleep the backend finds its connection closed and exits: not kept, not cached busy.
    await waitBackendGone(backendPid);
  });
});

/** A raw session through pgrelay on `port` and its primary backend's pid (SELECT pg_backend_pid()). */
async function victim(port: number, application_name: string): Promise<{ raw: RawClient; pid: number }> {
  const raw = await RawClient.connect(port);
  expect((await raw.startup({ ...USER, application_name })).ok).toBe(true);
  return { raw, pid: Number((await raw.query('SELECT pg_backend_pid()')).rows[0][0]) };
}

/** Terminate backend `pid` on the primary (from a direct connection): `raw` must get 57P01, then the close. */
async function terminateExpecting57P01(raw: RawClient, pid: number): Promise<void> {
  const direct = await pgClient({ port: cluster.primary.port });
  await direct.query('SELECT pg_terminate_backend($1)', [pid]);
  await endPg(direct);
  await expectFatalAndClose(raw, '57P01', /terminating connection due to administrator command/);
}

/**
 * Load balancing with weight 0 on the primary, 1 on each standby: `SELECT pg_sleep(n)` runs on a
 * standby. read_your_writes off: victim()'s pg_backend_pid() counts as a write (a function in
 * neither list), so with it on the next read waits for the standbys to replay the primary's
 * position and, when other files' writes keep them behind, runs on the primary instead.
 */
function standbyReads(extra: Record<string, ConfValue> = {}): Record<string, ConfValue> {
  const conf: Record<string, ConfValue> = {
    log_min_messages: 'warning',
    load_balance_mode: true,
    read_only_function_list: 'pg_sleep',
    read_your_writes: 'off',
  };
  for (const n of cluster.nodes) conf[`backend_weight${n.id}`] = n.id === cluster.primaryId ? 0 : 1;
  return { ...conf, ...extra };
}

/** Terminate the one backend of application `app` in `state` on the standbys (it must be on exactly one). */
async function terminateOnAStandby(app: string, state: string): Promise<void> {
  const sql = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '${app}' AND state = '${state}'`;
  const killed = await Promise.all(cluster.standbys.map((n) => cluster.psql(n.id, sql)));
  expect(killed.sort(), `one backend of ${app} ${state} on one standby`).toEqual(['0', '1']);
}

/** Until a standby's backend of application `app` is running `query`. */
async function runningOnAStandby(app: string, query: string): Promise<void> {
  const sql = `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}' AND state = 'active' AND query = '${query}'`;
  await pollUntil(
    async () => (await Promise.all(cluster.standbys.map((n) => cluster.psql(n.id, sql)))).join(','),
    (v) => v.split(',').includes('1'),
    { what: `${query} to run on a standby`, timeoutMs: 10_000 },
  );
}

describe('backend failures', () => {
  it('reports a backend terminated mid-query (57P01) to the client and closes, without a hang', {
    timeout: 120_000,
  }, async () => {
    const c = await pgClient({ port: proxy.port }, { application_name: 'relay-bad-input-victim' });
    const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    const ended = new Promise<void>((resolve) => c.once('end', () => resolve()));
    const running = c.query('SELECT pg_sleep(60)').then(
      () => ({ ok: true as const }),
      (e: { code?: string; message: string }) => ({ ok: false as const, code: e.code, message: e.message }),
    );
    await waitRunning(pid, 'SELECT pg_sleep(60)');
    const direct = await pgClient({ port: cluster.primary.port });
    expect((await direct.query('SELECT pg_terminate_backend($1) AS ok', [pid])).rows[0].ok).toBe(true);
    // Far sooner than the 60 s sleep: the error comes from the termination.
    const r = await withTimeout(running, 20_000, 'the query on the terminated backend to fail');
    expect(r.ok).toBe(false);
    expect(r).toMatchObject({ code: '57P01' });
    await withTimeout(ended, 10_000, 'the client connection to close');
    await endPg(direct);
  });

  it('reports a backend terminated while the session is idle (57P01) and closes the client', async () => {
    const { raw, pid } = await victim(proxy.port, 'relay-bad-input-idle-victim');
    await terminateExpecting57P01(raw, pid);
  });

  it("reports a backend terminated while only pgrelay's own query is outstanding on it (57P01) and closes the client", async () => {
    // Load balancing on: behind a write pgrelay reads the primary's WAL position (read-your-writes),
    // a query of its own whose reply the client never sees. A tap between pgrelay and the primary
    // holds that query back, so it is still outstanding when the backend is terminated: the
    // FATAL answers it, and must reach the client all the same (a race under load otherwise).
    const tap = await Wiretap.start(cluster.primary);
    const lb = await startProxy({
      cluster,
      config: { log_min_messages: 'warning', load_balance_mode: true, [`backend_port${cluster.primaryId}`]: tap.port },
    });
    try {
      const { raw, pid } = await victim(lb.port, 'relay-bad-input-own-query-victim');
      tap.holdFromStatement(CAPTURE_SQL);
      expect((await raw.query('CREATE TEMPORARY TABLE relay_bad_input_own_query (i int)')).errors).toEqual([]);
      await pollUntil(
        () => tap.holding.size,
        (n) => n === 1,
        { what: "pgrelay's WAL position query to be held", timeoutMs: 10_000 },
      );
      await terminateExpecting57P01(raw, pid);
    } finally {
      await lb.stop();
      await tap.close();
    }
  });

  it('reports a backend terminated while a read of the session runs on a standby (57P01) and closes the client', async () => {
    // The primary's FATAL arrives while the standby owes the client its reply: pgrelay holds
    // the primary's asynchronous messages until then, but the session ends with the primary.
    const lb = await startProxy({
      cluster,
      config: standbyReads(),
    });
    const app = 'relay-bad-input-standby-read-victim';
    try {
      const { raw, pid } = await victim(lb.port, app);
      raw.send(queryMessage('SELECT pg_sleep(30)'));
      await runningOnAStandby(app, 'SELECT pg_sleep(30)');
      // Far sooner than the 30 s read: the session ends with its primary backend.
      await terminateExpecting57P01(raw, pid);
    } finally {
      await lb.stop();
    }
  });

  for (const poolMode of ['session', 'transaction'] as const) {
    it(`pool_mode = ${poolMode}: a standby backend terminated while the client's transaction uses it: 57P01, then the close`, async () => {
      // The transaction read on the standby, then the standby's backend is terminated (as a fast
      // shutdown does) while the client is idle in the transaction: the transaction cannot go
      // on, the session ends, and the client must be told why, not see its connection just drop.
      const lb = await startProxy({ cluster, config: standbyReads({ pool_mode: poolMode }) });
      const app = `relay-bad-input-standby-tx-${poolMode}`;
      try {
        const { raw } = await victim(lb.port, app);
        expect((await raw.query('BEGIN')).errors).toEqual([]);
        expect((await raw.query('SELECT pg_sleep(0)')).errors).toEqual([]);
        await terminateOnAStandby(app, 'idle in transaction');
        await expectFatalAndClose(raw, '57P01', /terminating connection due to administrator command/);
      } finally {
        await lb.stop();
      }
    });
  }

  for (const poolMode of ['session', 'transaction'] as const) {
    it(`pool_mode = ${poolMode}: a standby backend terminated while the client's transaction has a cursor open there (a batch without Sync): 57P01, then the close`, async () => {
      // pg-cursor: Execute with a row limit and Flush, no Sync, until the rows run out; the
      // client is idle between its reads, mid-batch, when the standby's backend goes away.
      const lb = await startProxy({ cluster, config: standbyReads({ pool_mode: poolMode }) });
      const app = `relay-bad-input-standby-cursor-${poolMode}`;
      try {
        const { raw } = await victim(lb.port, app);
        expect((await raw.query('BEGIN')).errors).toEqual([]);
        raw.send(
          // pg_sleep is read_only_function_list's: the cursor reads on a standby.
          parseMessage('', 'SELECT pg_sleep(0), v FROM (VALUES (1), (2), (3)) AS t(v)'),
          bindMessage('c1', ''),
          describeMessage('P', 'c1'),
          executeMessage('c1', 2),
          flushMessage(),
        );
        const first = await raw.collect('s', 10_000);
        expect(types(first)).toBe('12TDDs');
        // Between its reads the backend is not idle: no ReadyForQuery since the Flush.
        await terminateOnAStandby(app, 'active');
        await expectFatalAndClose(raw, '57P01', /terminating connection due to administrator command/);
      } finally {
        await lb.stop();
      }
    });
  }

  it('a primary connection that breaks while a standby owes the reply: the notification that came first, then 08006', async () => {
    // pgrelay holds the primary's notifications while another node's reply is on its way; when
    // the primary's connection then breaks (no FATAL: a network failure, cut by the tap), what
    // arrived before the break still reaches the client ahead of the error, as from a direct
    // connection whose server goes away.
    const tap = await Wiretap.start(cluster.primary);
    const lb = await startProxy({
      cluster,
      config: standbyReads({ [`backend_port${cluster.primaryId}`]: tap.port }),
    });
    const app = 'relay-bad-input-cut-victim';
    const channel = 'relay_bad_input_cut';
    try {
      const { raw } = await victim(lb.port, app);
      expect((await raw.query(`LISTEN ${channel}`)).errors).toEqual([]);
      raw.send(queryMessage('SELECT pg_sleep(30)'));
      await runningOnAStandby(app, 'SELECT pg_sleep(30)');
      const direct = await pgClient({ port: cluster.primary.port });
      await direct.query(`NOTIFY ${channel}, 'before the break'`);
      await endPg(direct);
      const mine = (c: TapConnection): boolean => c.toServer.includes(app);
      await pollUntil(
        () => tap.connections.some((c) => mine(c) && c.toClient.includes('before the break')),
        (seen) => seen,
        { what: 'the notification to reach pgrelay', timeoutMs: 10_000 },
      );
      expect(tap.cut(mine)).toBe(1);
      const { messages, closed } = await raw.drainUntilClosed(10_000);
      expect(closed, `still open; got ${types(messages)}`).toBe(true);
      expect(types(messages)).toBe('AE');
      expect(messages[0].body.includes(Buffer.from('before the break'))).toBe(true);
      const f = errorFields(messages[1].body);
      expect([f.V ?? f.S, f.C]).toEqual(['FATAL', '08006']);
    } finally {
      await lb.stop();
      await tap.close();
    }
  });
});

describe('pool_mode = transaction: a read node connection lost before it answered anything', () => {
  // A read-only unit of work holds only the read node's connection. If that connection dies
  // (the standby shuts down, a network failure) before anything of the unit was answered,
  // the client's statements can run elsewhere: the client must see their results and its
  // session go on. A tap between pgrelay and the standby holds what pgrelay sends from a
  // given statement on, so the connection is lost exactly then: (1) while pgrelay replays
  // the session's setting (SET work_mem) on a pooled connection another session used last,
  // the client's read waiting behind it; (2) with the client's extended-protocol batch sent
  // (Parse, Bind, Describe, Execute, Sync; the Parse held).
  const standby = (): { id: number; host: string; port: number } => cluster.standbys[0];
  const APP = 'relay-bad-input-read-node-lost';

  type Kill = (tap: Wiretap, held: TapConnection) => Promise<void>;
  const cut: Kill = async (tap, held) => {
    expect(tap.cut((c) => c === held)).toBe(1);
  };
  // The backend is idle (what was sent to it is held): it sends FATAL 57P01, as in a fast shutdown.
  const terminate: Kill = async () => {
    const killed = await cluster.psql(
      standby().id,
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '${APP}' AND state = 'idle'`,
    );
    expect(killed).toBe('1');
  };

  async function lostWhileHeld(
    hold: string,
    send: (tap: Wiretap, a: RawClient, b: RawClient) => Promise<void>,
    kill: Kill,
    expectReply: (reply: BackendMessage[]) => void,
    poolMode: 'session' | 'transaction' = 'transaction',
    after?: (a: RawClient) => Promise<void>,
  ): Promise<void> {
    const s = standby();
    const tap = await Wiretap.start(s);
    const conf: Record<string, ConfValue> = {
      log_min_messages: 'warning',
      load_balance_mode: true,
      read_your_writes: 'off',
      pool_mode: poolMode,
      default_pool_size: 4,
      [`backend_port${s.id}`]: tap.port,
    };
    for (const n of cluster.nodes) conf[`backend_weight${n.id}`] = n.id === s.id ? 1 : 0;
    const tx = await startProxy({ cluster, config: conf });
    try {
      const a = await RawClient.connect(tx.port);
      const b = await RawClient.connect(tx.port);
      for (const c of [a, b]) expect((await c.startup({ ...USER, application_name: APP })).ok).toBe(true);
      await send(tap, a, b);
      await pollUntil(
        () => tap.holding.size,
        (n) => n === 1,
        { what: `${hold} to be held on its way to the standby`, timeoutMs: 10_000 },
      );
      const [held] = tap.holding.keys();
      await kill(tap, held);
      expectReply(await a.collect('Z', 20_000));
      await after?.(a);
      // The session goes on.
      const next = await a.query('SELECT 1');
      expect(next.errors).toEqual([]);
      expect(next.rows).toEqual([['1']]);
      a.end();
      b.end();
    } finally {
      await tx.stop();
      await tap.close();
    }
  }

  const HELD_SET = "SET work_mem = '5MB'";
  async function readAfterReplay(tap: Wiretap, a: RawClient, b: RawClient): Promise<void> {
    expect((await a.query(HELD_SET)).errors).toEqual([]);
    // b reads on the standby with the connection a's SET left there (reset to b's settings).
    expect((await b.query('SHOW work_mem')).errors).toEqual([]);
    tap.holdFromStatement(HELD_SET);
    a.send(queryMessage('SHOW work_mem'));
  }
  function replayedRead(reply: BackendMessage[]): void {
    expect(types(reply), 'the read answered, no error').toBe('TDCZ');
    expect(dataRowValues(reply[1].body), "the read ran with the session's setting").toEqual(['5MB']);
  }

  // The batch of an unnamed statement, and of a named one (pgbench -M prepared, drivers'
  // prepared statements: pgrelay prepares it under its own name on each connection).
  const BATCH_SQL = 'SELECT 42 AS answer';
  const NAMED_SQL = 'SELECT 43 AS answer';
  const batch =
    (statement: string, sql: string) =>
    async (tap: Wiretap, a: RawClient): Promise<void> => {
      expect((await a.query('SELECT 1')).errors).toEqual([]);
      tap.holdFromStatement(sql);
      a.send(
        parseMessage(statement, sql),
        bindMessage('', statement),
        describeMessage('P', ''),
        executeMessage(''),
        syncMessage(),
      );
    };
  const batchAnswered =
    (value: string) =>
    (reply: BackendMessage[]): void => {
      const err = reply.find((m) => m.type === 'E');
      expect(
        types(reply),
        `the batch answered, no error${err ? `: ${JSON.stringify(errorFields(err.body))}` : ''}`,
      ).toBe('12TDCZ');
      expect(dataRowValues(reply[3].body)).toEqual([value]);
    };

  it("session mode: reads move to another standby, whose new connection is lost while the session's settings are replayed there: the read runs on the primary", async () => {
    // The session's load-balance node is detached; its next read goes to the other standby,
    // where pgrelay connects and replays the session's SET first, the read sent behind it.
    // That connection is cut while the SET is held: the read moves to the primary (which has
    // the setting), the client sees only its result.
    const [s1, s2] = cluster.standbys;
    const tap = await Wiretap.start(s2);
    const conf: Record<string, ConfValue> = {
      log_min_messages: 'warning',
      load_balance_mode: true,
      read_your_writes: 'off',
      admin_users: 'postgres',
      app_name_redirect_preference_list: `${APP}:${s1.id}`,
      [`backend_port${s2.id}`]: tap.port,
    };
    for (const n of cluster.nodes) conf[`backend_weight${n.id}`] = n.id === cluster.primaryId ? 0 : 1;
    const lb = await startProxy({ cluster, config: conf });
    try {
      const a = await RawClient.connect(lb.port);
      expect((await a.startup({ ...USER, application_name: APP })).ok).toBe(true);
      expect((await a.query(HELD_SET)).errors).toEqual([]);
      const port = (await a.query('SELECT inet_server_port()')).rows[0][0];
      expect(port, 'the session reads on standby 1').toBe(String(s1.port));
      const admin = await RawClient.connect(lb.port);
      expect((await admin.startup({ ...USER, application_name: 'relay-bad-input-admin' })).ok).toBe(true);
      expect((await admin.query(`PGPOOL DETACH NODE ${s1.id}`)).errors).toEqual([]);
      admin.end();
      tap.holdFromStatement(HELD_SET);
      a.send(queryMessage('SHOW work_mem'));
      await pollUntil(
        () => tap.holding.size,
        (n) => n === 1,
        { what: 'the SET replayed on standby 2 to be held', timeoutMs: 10_000 },
      );
      const [held] = tap.holding.keys();
      await cut(tap, held);
      replayedRead(await a.collect('Z', 20_000));
      const next = await a.query('SELECT 1');
      expect(next.errors).toEqual([]);
      a.end();
    } finally {
      await lb.stop();
      await tap.close();
    }
  });

  const answered =
    (expected: string) =>
    (reply: BackendMessage[]): void => {
      const err = reply.find((m) => m.type === 'E');
      expect(types(reply), `answered, no error${err ? `: ${JSON.stringify(errorFields(err.body))}` : ''}`).toBe(
        expected,
      );
    };

  for (const poolMode of ['session', 'transaction'] as const) {
    // pgrelay runs SET on the primary and mirrors it on the session's standby (its reply
    // dropped). The standby's connection is cut with the copy held: the client gets the
    // primary's answer, and its next read on a standby runs with the setting.
    it(`pool_mode = ${poolMode}: a SET in the extended protocol, whose copy on the standby is lost before answering: the primary's answer stands`, async () => {
      await lostWhileHeld(
        HELD_SET,
        async (tap, a) => {
          expect((await a.query('SELECT 1')).errors).toEqual([]);
          tap.holdFromStatement(HELD_SET);
          a.send(parseMessage('', HELD_SET), bindMessage('', ''), executeMessage(''), syncMessage());
        },
        cut,
        answered('12CZ'),
        poolMode,
        async (a) => {
          const show = await a.query('SHOW work_mem');
          expect(show.errors).toEqual([]);
          expect(show.rows).toEqual([['5MB']]);
        },
      );
    });

    // postgres.js pipelines a read and a write (Promise.all): one Sync for both, the read on a
    // standby, the write on the primary. (A read after the write would run on the primary, in
    // the pipeline's implicit transaction.) The standby's connection is cut before it answered.
    it(`pool_mode = ${poolMode}: a pipeline across the primary and a standby whose standby connection is lost before answering: its reads run on the primary`, async () => {
      await lostWhileHeld(
        NAMED_SQL,
        async (tap, a) => {
          expect((await a.query('SELECT 1')).errors).toEqual([]);
          tap.holdFromStatement(NAMED_SQL);
          a.send(
            parseMessage('', NAMED_SQL),
            bindMessage('', ''),
            executeMessage(''),
            parseMessage('', "SELECT pg_notify('relay_bad_input_pipeline', 'x')"),
            bindMessage('', ''),
            executeMessage(''),
            syncMessage(),
          );
        },
        cut,
        (reply) => {
          answered('12DC12DCZ')(reply);
          expect(dataRowValues(reply[2].body)).toEqual(['43']);
        },
        poolMode,
      );
    });
  }

  for (const [how, kill] of [
    ['the connection breaks (no message from the server)', cut],
    ['the standby terminates the backend (FATAL 57P01)', terminate],
  ] as const) {
    it(`while pgrelay replays the session's settings there: ${how}`, async () => {
      await lostWhileHeld(HELD_SET, readAfterReplay, kill, replayedRead);
    });

    it(`with the client's batch sent there: ${how}`, async () => {
      await lostWhileHeld(BATCH_SQL, batch('', BATCH_SQL), kill, batchAnswered('42'));
    });

    it(`with the client's batch of a named statement sent there: ${how}`, async () => {
      await lostWhileHeld(
        NAMED_SQL,
        batch('relay_bad_input_named', NAMED_SQL),
        kill,
        batchAnswered('43'),
        'transaction',
        async (a) => {
          // Its Parse was answered where it moved: a second Parse of the name is refused at once.
          a.send(parseMessage('relay_bad_input_named', 'SELECT 2'), syncMessage());
          const again = await a.collect('Z', 10_000);
          expect(again.filter((m) => m.type === 'E').map((m) => errorFields(m.body).C)).toEqual(['42P05']);
        },
      );
    });
  }
});

it('pgrelay is still running after the file', () => {
  expect(isAlive(proxy.pid)).toBe(true);
});
