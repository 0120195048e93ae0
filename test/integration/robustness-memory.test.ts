/**
 * Bounded memory whatever a client does (issue: data-path robustness). Each test runs
 * a hostile or careless client next to a well-behaved session, and checks that
 * pgrelay's JavaScript memory (heap in use + external buffers, from /metrics) grows
 * by less than a bound, that the process lives, and that the well-behaved session
 * still answers quickly:
 * - a client that pipelines queries and never reads their replies;
 * - a million Bind/Execute without Sync, from a client that reads and one that does not;
 * - a LISTEN session that does not read while 100 MB of notifications arrive, and
 *   later receives every one of them in order;
 * - connections that announce 256 MB messages and send nothing more;
 * - a client binding named portals under new names in each implicit transaction.
 */
import type net from 'node:net';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { freePort } from '../../dev/devcluster.js';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, pgClient } from '../support/clients.js';
import { jsMemory, metricValue, sampleMemory } from '../support/memory.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
  closeAllRaw,
  executeMessage,
  isAlive,
  parseMessage,
  queryMessage,
  syncMessage,
} from '../support/raw.js';

const cluster = getCluster();
const MB = 1024 * 1024;
let proxy: ProxyHandle;
let metricsPort: number;
let good: pg.Client;

beforeAll(async () => {
  metricsPort = await freePort();
  proxy = await startProxy({
    cluster,
    config: { log_min_messages: 'warning', load_balance_mode: false, metrics_port: metricsPort },
  });
  good = await pgClient({ host: '127.0.0.1', port: proxy.port }, { user: 'postgres', database: 'postgres' });
});

afterEach(() => {
  closeAllRaw();
});

afterAll(async () => {
  closeAllRaw();
  if (good) await endPg(good);
  await closeAllClients();
  expect(await proxy?.stop()).toBe(0);
});

/** A logged-in raw connection whose socket the test drives itself (RawClient no longer reads it). */
async function rawSession(app: string): Promise<net.Socket> {
  const raw = await RawClient.connect(proxy.port);
  const r = await raw.startup({ user: 'postgres', database: 'postgres', application_name: app });
  expect(r.ok).toBe(true);
  raw.socket.removeAllListeners('data');
  return raw.socket;
}

/** The well-behaved session answers `select 1`: the best of five round trips, in ms. */
async function goodLatency(): Promise<number> {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const r = await good.query('select 1 as one');
    expect(r.rows[0].one).toBe(1);
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

/**
 * Write `chunk` repeatedly until `untilMs` (epoch ms) or `count` writes, honouring the socket's
 * backpressure; with `stopWhenHeldBack`, also stop once pgrelay holds the session back on both
 * sides (its metrics say so) and has done so for `settleMs` more: from then on nothing the client
 * writes reaches pgrelay any more, so a longer flood only waits.
 */
async function flood(
  sock: net.Socket,
  chunk: Buffer,
  untilMs: number,
  { count = Number.POSITIVE_INFINITY, stopWhenHeldBack = false, settleMs = 2000 } = {},
) {
  let written = 0;
  let stopAt = untilMs;
  let watching = stopWhenHeldBack;
  const watcher = (async () => {
    while (watching && Date.now() < stopAt) {
      if (await heldBackOnBothSides().catch(() => false)) {
        stopAt = Math.min(stopAt, Date.now() + settleMs);
        return;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  while (written < count && Date.now() < stopAt && !sock.destroyed) {
    written++;
    if (!sock.write(chunk)) {
      await new Promise<void>((resolve) => {
        // Wakes up every 250 ms to see whether the watcher moved the end earlier.
        const tick = setInterval(() => {
          if (Date.now() >= stopAt) done();
        }, 250);
        function done(): void {
          clearInterval(tick);
          sock.removeListener('drain', done);
          sock.removeListener('close', done);
          resolve();
        }
        sock.once('drain', done);
        sock.once('close', done);
      });
    }
  }
  watching = false;
  await watcher;
  return written;
}

/** Whether pgrelay's metrics show a session held back on the backend side and on the client side. */
async function heldBackOnBothSides(): Promise<boolean> {
  const side = (s: string) => metricValue(metricsPort, 'pgrelay_sessions_backpressured', { side: s });
  const [backend, client] = await Promise.all([side('backend'), side('client')]);
  return (backend ?? 0) >= 1 && (client ?? 0) >= 1;
}

/** Counts backend messages of a reply stream by type, without keeping them. */
class MessageCounter {
  readonly counts = new Map<string, number>();
  private carry: Buffer = Buffer.alloc(0);
  private skip = 0;
  bytes = 0;
  push(d: Buffer): void {
    this.bytes += d.length;
    let buf = d;
    if (this.skip > 0) {
      const n = Math.min(this.skip, buf.length);
      this.skip -= n;
      buf = buf.subarray(n);
    }
    if (this.carry.length > 0) {
      buf = Buffer.concat([this.carry, buf]);
      this.carry = Buffer.alloc(0);
    }
    let p = 0;
    while (buf.length - p >= 5) {
      const type = String.fromCharCode(buf[p]);
      const len = buf.readUInt32BE(p + 1);
      this.counts.set(type, (this.counts.get(type) ?? 0) + 1);
      if (p + 1 + len > buf.length) {
        this.skip = p + 1 + len - buf.length;
        p = buf.length;
        break;
      }
      p += 1 + len;
    }
    if (p < buf.length) this.carry = Buffer.from(buf.subarray(p));
  }
  count(type: string): number {
    return this.counts.get(type) ?? 0;
  }
}

it('a client that pipelines queries and never reads: bounded memory, others unaffected', {
  timeout: 60_000,
}, async () => {
  const base = await jsMemory(metricsPort);
  const sampler = sampleMemory(metricsPort);
  const sock = await rawSession('no-reader');
  sock.pause();
  const q = queryMessage("select repeat('x', 1000) from generate_series(1, 2000)");
  const batch = Buffer.concat(new Array<Buffer>(64).fill(q));
  // Until pgrelay holds the session back on both sides (+2 s), at most 10 s.
  const writes = await flood(sock, batch, Date.now() + 10_000, { stopWhenHeldBack: true });
  const peak = await sampler.stop();
  console.log(
    `[robustness] non-reader: ${writes} writes of ${batch.length} bytes accepted; js memory ${Math.round(base / MB)} MB → peak ${Math.round(peak / MB)} MB`,
  );
  expect(isAlive(proxy.pid)).toBe(true);
  expect(peak - base).toBeLessThan(50 * MB);
  // The metrics show the session held back on both sides while its client does not read.
  expect(await metricValue(metricsPort, 'pgrelay_sessions_backpressured', { side: 'backend' })).toBeGreaterThanOrEqual(
    1,
  );
  expect(await metricValue(metricsPort, 'pgrelay_sessions_backpressured', { side: 'client' })).toBeGreaterThanOrEqual(
    1,
  );
  expect(await metricValue(metricsPort, 'pgrelay_buffered_bytes', { direction: 'to_client' })).toBeGreaterThan(0);
  expect(await goodLatency()).toBeLessThan(100);
  sock.destroy();
});

for (const reads of [true, false]) {
  it(`one million Bind/Execute without Sync from a client that ${reads ? 'reads' : 'does not read'}: bounded memory`, {
    timeout: 120_000,
  }, async () => {
    const sock = await rawSession(reads ? 'bind-reader' : 'bind-no-reader');
    const counter = new MessageCounter();
    sock.on('data', (d: Buffer) => counter.push(d));
    sock.write(Buffer.concat([parseMessage('s1', 'select 1'), syncMessage()]));
    const deadline = Date.now() + 10_000;
    while (counter.count('Z') < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(counter.count('1')).toBe(1);
    if (!reads) sock.pause();
    const base = await jsMemory(metricsPort);
    const sampler = sampleMemory(metricsPort);
    const pairs = 1000;
    const batch = Buffer.concat(
      new Array<Buffer>(pairs).fill(Buffer.concat([bindMessage('', 's1'), executeMessage('', 0)])),
    );
    const total = 1_000_000 / pairs;
    // Not reading: until pgrelay holds the session back on both sides (+2 s), at most 15 s.
    const writes = await flood(sock, batch, Date.now() + (reads ? 90_000 : 15_000), {
      count: total,
      stopWhenHeldBack: !reads,
    });
    if (reads) {
      expect(writes).toBe(total);
      sock.write(syncMessage());
      const end = Date.now() + 60_000;
      while (counter.count('Z') < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(counter.count('Z')).toBe(2);
      expect(counter.count('2')).toBe(1_000_000);
      expect(counter.count('C')).toBe(1_000_000);
    }
    const peak = await sampler.stop();
    console.log(
      `[robustness] bind/execute (${reads ? 'reading' : 'not reading'}): ${writes * pairs} pairs accepted; js memory ${Math.round(base / MB)} MB → peak ${Math.round(peak / MB)} MB`,
    );
    expect(isAlive(proxy.pid)).toBe(true);
    expect(peak - base).toBeLessThan(50 * MB);
    expect(await goodLatency()).toBeLessThan(100);
    sock.destroy();
  });
}

it('a LISTEN session that does not read while 100 MB of notifications arrive: bounded memory, then every one in order', {
  timeout: 180_000,
}, async () => {
  const listener = await RawClient.connect(proxy.port);
  expect((await listener.startup({ user: 'postgres', database: 'postgres', application_name: 'listener' })).ok).toBe(
    true,
  );
  expect((await listener.query('LISTEN robust_chan')).errors).toEqual([]);
  listener.socket.pause();
  const base = await jsMemory(metricsPort);
  const sampler = sampleMemory(metricsPort);
  // Straight to the primary: the notifier is not what is tested.
  const notifier = new pg.Client({ connectionString: cluster.connectionString(cluster.primaryId) });
  await notifier.connect();
  const perStatement = 100;
  const statements = 128; // 12,800 notifications of ~7.9 kB: about 100 MB
  try {
    for (let i = 0; i < statements; i++) {
      const from = i * perStatement;
      await notifier.query(
        `select pg_notify('robust_chan', lpad(n::text, 8, '0') || repeat('x', 7900)) from generate_series(${from}, ${from + perStatement - 1}) n`,
      );
    }
  } finally {
    await notifier.end();
  }
  // Give pgrelay time to take what the primary can send it.
  await new Promise((r) => setTimeout(r, 2000));
  const peak = await sampler.stop();
  console.log(
    `[robustness] non-reading listener: js memory ${Math.round(base / MB)} MB → peak ${Math.round(peak / MB)} MB`,
  );
  expect(isAlive(proxy.pid)).toBe(true);
  expect(peak - base).toBeLessThan(50 * MB);
  expect(await goodLatency()).toBeLessThan(100);

  // Now it reads: every notification, in order.
  const expected = statements * perStatement;
  let next = 0;
  listener.socket.resume();
  const deadline = Date.now() + 120_000;
  while (next < expected) {
    const m = await listener.next(Math.max(1, deadline - Date.now()));
    if (!m) throw new Error(`connection closed after ${next} notifications`);
    if (m.type !== 'A') continue;
    const payload = m.body.subarray(4).toString('utf8').split('\0')[1];
    expect(Number(payload.slice(0, 8))).toBe(next);
    next++;
  }
  expect(next).toBe(expected);
});

/** The lowest of a few samples over about a second: what is held, without most of the garbage not yet collected. */
async function heldMemory(): Promise<number> {
  let low = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    low = Math.min(low, await jsMemory(metricsPort));
    await new Promise((r) => setTimeout(r, 200));
  }
  return low;
}

it('20 connections announcing 256 MB messages and sending nothing more: memory grows less than 10 MB', {
  timeout: 60_000,
}, async () => {
  const base = await heldMemory();
  const socks: net.Socket[] = [];
  for (let i = 0; i < 20; i++) {
    const sock = await rawSession(`announcer-${i}`);
    const header = Buffer.alloc(5);
    header[0] = 'Q'.charCodeAt(0);
    header.writeUInt32BE(256 * MB - 1, 1);
    sock.write(Buffer.concat([header, Buffer.from('select ')]));
    socks.push(sock);
  }
  const after = await heldMemory();
  console.log(`[robustness] 20 announcers: js memory ${Math.round(base / MB)} MB → ${Math.round(after / MB)} MB`);
  expect(after - base).toBeLessThan(10 * MB);
  expect(await goodLatency()).toBeLessThan(100);
  for (const s of socks) s.destroy();
});

// Before pgrelay forgot the portals at the end of each transaction: 130 MB more held. V8 collects
// the old generation lazily, so 25-35 MB of garbage may still be counted here.
it('a client binding 500,000 distinct named portals, 1,000 per implicit transaction (PostgreSQL drops them at each Sync): memory grows less than 80 MB', {
  timeout: 120_000,
}, async () => {
  const sock = await rawSession('portal-binder');
  const counter = new MessageCounter();
  sock.on('data', (d: Buffer) => counter.push(d));
  sock.write(Buffer.concat([parseMessage('s1', 'select 1'), syncMessage()]));
  const deadline = Date.now() + 10_000;
  while (counter.count('Z') < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const base = await heldMemory();
  const batches = 500;
  for (let b = 0; b < batches; b++) {
    const msgs: Buffer[] = [];
    for (let i = 0; i < 1000; i++) msgs.push(bindMessage(`portal_${b}_${i}_${'x'.repeat(100)}`, 's1'));
    msgs.push(syncMessage());
    if (!sock.write(Buffer.concat(msgs))) await new Promise((r) => sock.once('drain', r));
    // Keep at most a few batches in flight.
    const until = Date.now() + 30_000;
    while (counter.count('Z') < b - 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  }
  const end = Date.now() + 60_000;
  while (counter.count('Z') < batches + 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  expect(counter.count('Z')).toBe(batches + 1);
  expect(counter.count('2')).toBe(batches * 1000);
  const after = await heldMemory();
  console.log(`[robustness] portal binder: js memory ${Math.round(base / MB)} MB → ${Math.round(after / MB)} MB`);
  expect(after - base).toBeLessThan(80 * MB);
  expect(await goodLatency()).toBeLessThan(100);
  sock.destroy();
});
