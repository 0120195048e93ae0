/**
 * Foundation: backpressure. A result much larger than pgrelay may buffer
 * (~240 MB) is read by a slow raw-socket client: while the client does not
 * read, PostgreSQL must end up blocked writing to pgrelay with only socket
 * buffers' worth of the result in between; pgrelay's RSS (VmRSS of the child
 * process) must stay far below the result size, and every row must arrive. A
 * client that leaves in the middle of a huge result must not leave its backend
 * running.
 */
import fs from 'node:fs';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { freePort } from '../../dev/devcluster.js';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, pgClient } from '../support/clients.js';
import { scrapeMetrics, sampleValue } from '../support/prometheus.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { RawClient, closeAllRaw, isAlive, queryMessage, rssBytes, sleep } from '../support/raw.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
let proxy: ProxyHandle;
let metricsPort: number;
const ROWS = 250_000;
const WIDTH = 1000;
const MB = 1024 * 1024;

beforeAll(async () => {
  metricsPort = await freePort();
  proxy = await startProxy({
    cluster,
    config: { log_min_messages: 'warning', load_balance_mode: false, metrics_port: metricsPort },
  });
});

/** Bytes pgrelay has read from the primary so far (pgrelay_backend_received_bytes_total{node="0"}). */
async function receivedFromPrimary(): Promise<number> {
  return sampleValue(await scrapeMetrics(metricsPort), 'pgrelay_backend_received_bytes_total', { node: '0' }) ?? 0;
}

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  closeAllRaw();
  expect(await proxy?.stop()).toBe(0);
});

/** The largest a TCP socket buffer of this kind may grow to (Linux autotuning maximum), in bytes. */
function tcpBufferMax(kind: 'rmem' | 'wmem', fallback: number): number {
  try {
    const v = Number(fs.readFileSync(`/proc/sys/net/ipv4/tcp_${kind}`, 'utf8').trim().split(/\s+/)[2]);
    return Number.isFinite(v) && v > 0 ? v : fallback;
  } catch {
    return fallback;
  }
}

/*
 * The bounds.
 *
 * In flight: with the client paused, everything pgrelay has read from PostgreSQL
 * but the client has not is in pgrelay's own buffers (one 64 kB socket read plus
 * the 16 kB write high-water mark: pgrelay stops reading the backend as soon as
 * a write to the client is refused) or in the kernel between pgrelay and the
 * client: at most pgrelay's send buffer (tcp_wmem max) plus the client's
 * receive buffer (tcp_rmem max); 4 MB more for slack. Here that is 40 MB
 * (tcp_rmem allows 32 MB); measured: 5-7 MB. A pgrelay that read on regardless
 * would never stand still while PostgreSQL has rows to send, and would end up
 * with ~240 MB in flight.
 *
 * RSS: measured on the 2-core development machine (load average 15-18 from
 * other test runs), pgrelay's RSS grows by 33-37 MB over the whole run, almost
 * all of it during the first seconds of the slow phase, when only ~15 MB have
 * passed — V8 heap and allocator growth, not retained rows. 80 MB is over
 * twice that and a third of the result, which a buffering pgrelay would add.
 */
const MAX_IN_FLIGHT = tcpBufferMax('wmem', 4 * MB) + tcpBufferMax('rmem', 6 * MB) + 4 * MB;
const MAX_RSS_GROWTH_MB = 80;

it(`streams ${ROWS} rows of ${WIDTH} bytes (~${Math.round((ROWS * (WIDTH + 11)) / MB)} MB) to a slow reader: backpressure reaches PostgreSQL, bounded pgrelay RSS`, {
  timeout: 120_000,
}, async () => {
  const app = `relay-large-${process.pid}`;
  const raw = await RawClient.connect(proxy.port);
  expect((await raw.startup({ user: 'postgres', database: 'postgres', application_name: app })).ok).toBe(true);
  // Warm up, then measure the baseline.
  await raw.query('SELECT 1');
  const rss0 = rssBytes(proxy.pid);
  expect(Number.isFinite(rss0)).toBe(true);
  const recv0 = await receivedFromPrimary();
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

  // Client paused: PostgreSQL must end up blocked writing because pgrelay stopped reading — it waits in
  // ClientWrite and pgrelay's count of bytes read from it stands still between two probes.
  let prevReceived = -1;
  const settled = await pollUntil(
    async () => {
      const wait = await cluster.psql(
        cluster.primaryId,
        `SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE application_name = '${app}' AND state = 'active'`,
      );
      const received = await receivedFromPrimary();
      const still = received === prevReceived;
      prevReceived = received;
      return { wait, received, still };
    },
    (v) => v.wait === 'ClientWrite' && v.still,
    {
      what: 'the backend to block in ClientWrite with pgrelay no longer reading, while the client does not read',
      timeoutMs: 30_000,
      intervalMs: 200,
    },
  );
  const inFlight = (settled.received - recv0 - bytes) / MB;
  const rssAfterSlow = rssBytes(proxy.pid);

  // Fast phase: read the rest.
  sock.resume();
  const deadline = Date.now() + 60_000;
  while (!ready && !raw.closed && Date.now() < deadline) await sleep(20);
  clearInterval(sampler);

  const grew = (maxRss - rss0) / MB;
  const info = `pgrelay RSS: start ${Math.round(rss0 / MB)} MB, after slow phase ${Math.round(rssAfterSlow / MB)} MB, max ${Math.round(maxRss / MB)} MB (+${Math.round(grew)} MB) for a ${Math.round(bytes / MB)} MB result; read from PostgreSQL but not by the paused client: ${inFlight.toFixed(1)} MB; ${rows} rows, tag "${tag}", ready ${ready}, closed ${raw.closed}`;
  process.stderr.write(`[relay-large-result] ${info}\n`);
  expect(tag, info).toBe(`SELECT ${ROWS}`);
  expect(rows, info).toBe(ROWS);
  expect(bytes).toBeGreaterThan(ROWS * WIDTH);
  expect(inFlight, `${info}: pgrelay kept reading while its client did not`).toBeLessThan(MAX_IN_FLIGHT / MB);
  expect(grew, info).toBeLessThan(MAX_RSS_GROWTH_MB);
  raw.end();
});

it('a client leaving in the middle of a huge result does not leave its backend running, and pgrelay goes on', {
  timeout: 120_000,
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
  // 100 GB if read to the end (generate_series in the select list: rows are made as they are sent): the
  // backend must end because its client left, not because the result ran out.
  sock.write(queryMessage(`SELECT repeat('y', 1000) AS y, generate_series(1, 100000000) AS i`));
  const t0 = Date.now();
  while (bytes < 2 * MB && Date.now() - t0 < 30_000) await sleep(10);
  expect(bytes).toBeGreaterThanOrEqual(2 * MB);
  raw.destroy();
  // The backend that ran the query goes away (not left blocked on a full socket).
  try {
    await pollUntil(
      () =>
        cluster.psql(cluster.primaryId, `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${marker}'`),
      (left) => left === '0',
      { what: `the backend of ${marker} to exit`, timeoutMs: 30_000, intervalMs: 200 },
    );
  } finally {
    await cluster.psql(
      cluster.primaryId,
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '${marker}'`,
    );
  }
  expect(isAlive(proxy.pid)).toBe(true);
  const c = await pgClient({ port: proxy.port });
  expect((await c.query('SELECT 1 AS v')).rows[0].v).toBe(1);
});
