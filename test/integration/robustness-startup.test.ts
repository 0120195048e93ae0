/**
 * Bytes a client sends right behind its start-up packet (issue: data-path
 * robustness): PostgreSQL keeps them and handles them once the connection is ready,
 * and so must pgrelay — a Query or Terminate in the same write as the
 * StartupMessage, in clear and after TLS, and node-postgres' `connect(); end()`.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { pollUntil } from '../support/wait.js';
import {
  type BackendMessage,
  cstrings,
  dataRowValues,
  errorFields,
  queryMessage,
  sslRequest,
  startupMessage,
  terminateMessage,
} from '../support/raw.js';

const cluster = getCluster();
let proxy: ProxyHandle;
let certDir: string;

beforeAll(async () => {
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-startup-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'server.key',
      '-out',
      'server.crt',
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
    ],
    { cwd: certDir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 },
  );
  fs.chmodSync(path.join(certDir, 'server.key'), 0o600);
  proxy = await startProxy({
    cluster,
    config: {
      log_min_messages: 'warning',
      load_balance_mode: false,
      ssl: true,
      ssl_cert: path.join(certDir, 'server.crt'),
      ssl_key: path.join(certDir, 'server.key'),
    },
  });
});

afterAll(async () => {
  expect(await proxy?.stop()).toBe(0);
  fs.rmSync(certDir, { recursive: true, force: true });
});

/** Every message the server sends until it closes the connection (or `timeoutMs`). */
function readAll(sock: net.Socket, timeoutMs = 15_000): Promise<{ messages: BackendMessage[]; closed: boolean }> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const messages: BackendMessage[] = [];
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ messages, closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5 && buf.length >= 1 + buf.readUInt32BE(1)) {
        const length = buf.readUInt32BE(1);
        messages.push({ type: String.fromCharCode(buf[0]), length, body: buf.subarray(5, 1 + length) });
        buf = buf.subarray(1 + length);
      }
      // Enough for the Query case: its reply ends with a second ReadyForQuery.
      if (messages.filter((m) => m.type === 'Z').length >= 2) finish(false);
    });
    sock.on('close', () => finish(true));
    sock.on('error', () => undefined);
  });
}

function connectRaw(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: proxy.port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** SSLRequest, 'S', then a TLS socket over the same connection. */
async function connectTls(): Promise<tls.TLSSocket> {
  const raw = await connectRaw();
  raw.write(sslRequest());
  const answer = await new Promise<string>((resolve, reject) => {
    raw.once('data', (d: Buffer) => resolve(String.fromCharCode(d[0])));
    raw.once('error', reject);
  });
  expect(answer).toBe('S');
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'localhost' });
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
  });
}

const startup = (app: string): Buffer =>
  startupMessage({ user: 'postgres', database: 'postgres', application_name: app });

function errorsOf(messages: BackendMessage[]): string[] {
  return messages.filter((m) => m.type === 'E').map((m) => `${errorFields(m.body).C}: ${errorFields(m.body).M}`);
}

describe.each([
  ['in clear', connectRaw],
  ['after TLS', connectTls],
])('bytes behind the start-up packet, %s', (_how, connect) => {
  it('StartupMessage + Query in one write: the query is answered after the start-up', async () => {
    const sock = await connect();
    const reply = readAll(sock);
    sock.write(Buffer.concat([startup('pipelined-query'), queryMessage('select 40 + 2 as answer')]));
    const { messages } = await reply;
    expect(errorsOf(messages)).toEqual([]);
    const types = messages.map((m) => m.type).join('');
    expect(types).toMatch(/^R.*K.*Z.*T.*D.*C.*Z$/);
    expect(dataRowValues(messages.find((m) => m.type === 'D')?.body ?? Buffer.alloc(0))).toEqual(['42']);
  });

  it('StartupMessage + Terminate in one write: the start-up is answered, then the connection closes cleanly', async () => {
    const sock = await connect();
    const reply = readAll(sock);
    sock.write(Buffer.concat([startup('pipelined-terminate'), terminateMessage()]));
    const { messages, closed } = await reply;
    expect(errorsOf(messages)).toEqual([]);
    expect(messages.map((m) => m.type)).toContain('Z');
    expect(closed).toBe(true);
    const params = messages.filter((m) => m.type === 'S').map((m) => cstrings(m.body)[0]);
    expect(params).toContain('server_version');
  });
});

/**
 * node-postgres' `connect(); end()` in one tick writes its Terminate before its
 * StartupMessage (the connection is not open yet when end() runs), so the server
 * reads `X\0\0\0` as a start-up packet length. PostgreSQL logs "invalid length of
 * startup packet" and closes without a reply; the driver must see the same through
 * pgrelay (an error reply from pgrelay made it emit an 'error' event and crash).
 */
async function connectThenEnd(port: number): Promise<string> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  const errors: string[] = [];
  c.on('error', (e) => errors.push(e.message));
  const settle = (p: Promise<unknown>): Promise<string> =>
    Promise.race([
      p.then(
        () => 'resolved',
        (e: Error) => `rejected (${e.message})`,
      ),
      new Promise<string>((r) => setTimeout(() => r('pending'), 3000)),
    ]);
  const connected = settle(c.connect());
  const ended = settle(c.end());
  const outcome = `connect ${await connected}, end ${await ended}, errors [${errors.join('; ')}]`;
  c.connection.stream.destroy();
  return outcome;
}

it('node-postgres connect(); end() in the same tick behaves as with a direct connection', async () => {
  const direct = await connectThenEnd(cluster.node(cluster.primaryId).port);
  const through = await connectThenEnd(proxy.port);
  console.log(`[startup] direct: ${direct}; through pgrelay: ${through}`);
  expect(through).toBe(direct);
});

it('clients that close right after their StartupMessage leave no backend connection behind', async () => {
  // The session opens its backend connections after the StartupMessage; a client that is
  // gone by then must not leave them open outside the cache (they were leaked before).
  const app = `startup-gone-${process.pid}`;
  const rounds = 40;
  await Promise.all(
    Array.from(
      { length: rounds },
      (_, i) =>
        new Promise<void>((resolve) => {
          const sock = net.connect({ host: '127.0.0.1', port: proxy.port });
          sock.on('error', () => resolve());
          sock.on('close', () => resolve());
          sock.on('connect', () => {
            sock.write(startupMessage({ user: 'postgres', database: 'postgres', application_name: app }));
            // Gone 0–19 ms later: some while pgrelay connects to the primary for them.
            setTimeout(() => sock.destroy(), i % 20);
          });
          setTimeout(() => sock.destroy(), 5000).unref();
        }),
    ),
  );
  // What stays is at most the cache's share of that key (max_pool, default 4).
  const count = (): Promise<number> =>
    cluster
      .psql(cluster.primaryId, `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}'`)
      .then(Number);
  await pollUntil(count, (n) => n <= 4, { what: `backend connections of ${app} to be cached or closed` });
});
