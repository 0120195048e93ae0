/**
 * Foundation: backpressure. A result much larger than pgrelay may buffer
 * (~250 MB) is read by a slow raw-socket client; pgrelay's RSS (VmRSS of the
 * child process) must stay bounded, and every row must arrive. A client that
 * leaves in the middle of a huge result must not leave its backend running.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, pgClient } from '../support/clients.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { RawClient, closeAllRaw, isAlive, queryMessage, rssBytes, sleep } from '../support/raw.js';

const cluster = getCluster();
let proxy: ProxyHandle;
const ROWS = 250_000;
const WIDTH = 1000;
const MB = 1024 * 1024;

beforeAll(async () => {
  proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } });
});

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  closeAllRaw();
  expect(await proxy?.stop()).toBe(0);
});

it(`streams ${ROWS} rows of ${WIDTH} bytes (~${Math.round((ROWS * (WIDTH + 11)) / MB)} MB) to a slow reader with bounded pgrelay RSS`, {
  timeout: 90_000,
}, async () => {
  const raw = await RawClient.connect(proxy.port);
  expect((await raw.startup({ user: 'postgres', database: 'postgres', application_name: 'relay-large' })).ok).toBe(
    true,
  );
  // Warm up, then measure the baseline.
  await raw.query('SELECT 1');
  await sleep(200);
  const rss0 = rssBytes(proxy.pid);
  expect(Number.isFinite(rss0)).toBe(true);
  let maxRss = rss0;
  const sampler = setInterval(() => {
    const r = rssBytes(proxy.pid);
    if (r > maxRss) maxRss = r;
  }, 50);

  // Count DataRows ourselves, streaming (RawClient's buffer is bypassed).
  const sock = raw.socket;
  sock.removeAllListeners('data');
  let rows = 0;
  let bytes = 0;
  let tag = '';
  let ready = false;
  let carry: Buffer = Buffer.alloc(0);
  const onData = (d: Buffer): void => {
    bytes += d.length;
    let buf = carry.length ? Buffer.concat([carry, d]) : d;
    let p = 0;
    while (buf.length - p >= 5) {
      const len = buf.readUInt32BE(p + 1);
      if (buf.length - p < 1 + len) break;
      const t = buf[p];
      if (t === 0x44) rows++;
      else if (t === 0x43) tag = buf.toString('utf8', p + 5, p + len).replace(/\0/g, '');
      else if (t === 0x5a) ready = true;
      else if (t === 0x45) tag = `ERROR ${buf.toString('utf8', p + 5, p + len).replace(/\0/g, ' ')}`;
      p += 1 + len;
    }
    carry = p < buf.length ? Buffer.from(buf.subarray(p)) : Buffer.alloc(0);
    buf = Buffer.alloc(0);
  };
  sock.on('data', onData);

  // Slow phase: ~4 MB/s for 4 s (the server could produce everything in ~1-2 s).
  sock.pause();
  sock.write(queryMessage(`SELECT repeat('x', ${WIDTH}) FROM generate_series(1, ${ROWS})`));
  const slowUntil = Date.now() + 4000;
  while (Date.now() < slowUntil) {
    const target = bytes + 200 * 1024;
    sock.resume();
    while (bytes < target && Date.now() < slowUntil) await sleep(1);
    sock.pause();
    await sleep(50);
  }
  const rssAfterSlow = rssBytes(proxy.pid);
  // Fast phase: read the rest.
  sock.resume();
  const deadline = Date.now() + 60_000;
  while (!ready && !raw.closed && Date.now() < deadline) await sleep(20);
  clearInterval(sampler);

  const grew = (maxRss - rss0) / MB;
  const info = `pgrelay RSS: start ${Math.round(rss0 / MB)} MB, after slow phase ${Math.round(rssAfterSlow / MB)} MB, max ${Math.round(maxRss / MB)} MB (+${Math.round(grew)} MB) for a ${Math.round(bytes / MB)} MB result; ${rows} rows, tag "${tag}", ready ${ready}, closed ${raw.closed}`;
  process.stderr.write(`[relay-large-result] ${info}\n`);
  expect(tag, info).toBe(`SELECT ${ROWS}`);
  expect(rows, info).toBe(ROWS);
  expect(bytes).toBeGreaterThan(ROWS * WIDTH);
  expect(grew, info).toBeLessThan(150);
  // While the client read slowly pgrelay must not have pulled the result in.
  expect((rssAfterSlow - rss0) / MB, info).toBeLessThan(100);
  raw.end();
});

it('a client leaving in the middle of a huge result does not leave its backend running, and pgrelay goes on', {
  timeout: 60_000,
}, async () => {
  const marker = `relay_large_abandon_${process.pid}`;
  const raw = await RawClient.connect(proxy.port);
  expect((await raw.startup({ user: 'postgres', database: 'postgres', application_name: marker })).ok).toBe(true);
  const sock = raw.socket;
  sock.removeAllListeners('data');
  let bytes = 0;
  sock.on('data', (d: Buffer) => {
    bytes += d.length;
  });
  sock.write(queryMessage(`SELECT repeat('y', 1000) FROM generate_series(1, 2000000)`));
  const t0 = Date.now();
  while (bytes < 2 * MB && Date.now() - t0 < 10_000) await sleep(10);
  expect(bytes).toBeGreaterThanOrEqual(2 * MB);
  raw.destroy();
  // The backend that ran the query goes away (not left blocked on a full socket).
  const deadline = Date.now() + 10_000;
  let left = '';
  for (;;) {
    left = await cluster.psql(
      cluster.primaryId,
      `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${marker}'`,
    );
    if (left === '0' || Date.now() > deadline) break;
    await sleep(200);
  }
  expect(left).toBe('0');
  expect(isAlive(proxy.pid)).toBe(true);
  const c = await pgClient({ port: proxy.port });
  expect((await c.query('SELECT 1 AS v')).rows[0].v).toBe(1);
});
