#!/usr/bin/env node
/**
 * A minimal PostgreSQL wire-protocol client for bench/run.mjs (trust authentication only), run as its own process so
 * its CPU is not the bench's and it reads/writes at full speed with no result buffering:
 *
 *   node bench/wire-client.mjs '{"mode":"result","port":5432,"bytes":1e9,"rowBytes":1000}'
 *
 * modes (one JSON line with the outcome on stdout):
 *   result    SELECT repeat('x', rowBytes - 1) FROM generate_series(1, n): DataRows read and dropped as they come
 *   copy-out  COPY (the same SELECT) TO STDOUT: CopyData read and dropped
 *   copy-in   COPY <table> FROM STDIN: CopyData of generated lines sent as fast as the socket takes them
 *   idle      opens `clients` connections (`concurrency` start-ups at a time), prints {"ready":…} when all are
 *             ready for query, then holds them until stdin closes or SIGTERM
 */
import net from 'node:net';

const o = JSON.parse(process.argv[2] ?? '{}');
const host = o.host ?? '127.0.0.1';
const port = Number(o.port);
const user = o.user ?? 'postgres';
const database = o.database ?? 'postgres';
const rowBytes = Math.max(2, Number(o.rowBytes ?? 1000));
const bytes = Number(o.bytes ?? 1e8);
const rows = Math.max(1, Math.round(bytes / rowBytes));

function startup() {
  const parts = ['user', user, 'database', database, 'application_name', o.applicationName ?? 'pgrelay-bench'];
  const body = Buffer.from(`${parts.join('\0')}\0\0`, 'utf8');
  const b = Buffer.alloc(8 + body.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(196608, 4);
  body.copy(b, 8);
  return b;
}

function msg(type, payload) {
  const b = Buffer.alloc(5 + payload.length);
  b.write(type, 0, 'latin1');
  b.writeInt32BE(4 + payload.length, 1);
  payload.copy(b, 5);
  return b;
}
const query = (sql) => msg('Q', Buffer.from(`${sql}\0`, 'utf8'));

function errorText(body) {
  const f = {};
  for (let i = 0; i < body.length && body[i] !== 0; ) {
    const code = String.fromCharCode(body[i]);
    const end = body.indexOf(0, i + 1);
    f[code] = body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return `${f.S ?? 'ERROR'} ${f.C ?? ''}: ${f.M ?? '?'}`;
}

/**
 * One connection. onMessage(type, body) gets every message; bodies are only materialised for the few types
 * the modes look at (others are skipped without copying). Counts the bytes received.
 */
function connect(onMessage, onError) {
  const s = net.connect({ host, port, noDelay: true });
  let pending = null; // leftover bytes of an incomplete header or wanted body
  let skip = 0; // body bytes still to skip
  let rx = 0;
  const WANT = new Set(['R', 'E', 'Z', 'G', 'H', 'C']);
  s.on('data', (chunk) => {
    rx += chunk.length;
    let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = null;
    let i = 0;
    if (skip) {
      const n = Math.min(skip, buf.length);
      skip -= n;
      i = n;
    }
    while (i < buf.length) {
      if (buf.length - i < 5) {
        pending = buf.subarray(i);
        return;
      }
      const type = String.fromCharCode(buf[i]);
      const len = buf.readInt32BE(i + 1);
      if (WANT.has(type)) {
        if (buf.length - i < 1 + len) {
          pending = Buffer.from(buf.subarray(i));
          return;
        }
        onMessage(type, buf.subarray(i + 5, i + 1 + len));
        i += 1 + len;
      } else {
        const avail = buf.length - i - 5;
        const body = len - 4;
        if (avail >= body) i += 5 + body;
        else {
          skip = body - avail;
          i = buf.length;
        }
      }
    }
    buf = null;
  });
  s.on('error', onError);
  s.setTimeout(600_000, () => onError(new Error('socket timeout')));
  s.write(startup());
  return { socket: s, rx: () => rx };
}

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function fail(e) {
  out({ error: String(e?.message ?? e) });
  process.exit(1);
}

async function streaming() {
  const select = `SELECT repeat('x', ${rowBytes - 1}) FROM generate_series(1, ${rows})`;
  let t0 = 0n;
  let rx0 = 0;
  let tx = 0;
  let phase = 'startup';
  const conn = connect((type, body) => {
    if (type === 'E') fail(new Error(errorText(body)));
    if (type === 'R' && body.readInt32BE(0) !== 0)
      fail(new Error('the bench client supports trust authentication only'));
    if (type === 'Z' && phase === 'startup') {
      phase = 'run';
      rx0 = conn.rx();
      t0 = process.hrtime.bigint();
      if (o.mode === 'result') conn.socket.write(query(select));
      else if (o.mode === 'copy-out') conn.socket.write(query(`COPY (${select}) TO STDOUT`));
      else if (o.mode === 'copy-in') conn.socket.write(query(`COPY ${o.table ?? 'bench_copy_in'} FROM STDIN`));
      else fail(new Error(`unknown mode ${o.mode}`));
    } else if (type === 'G') sendCopy().catch(fail);
    else if (type === 'Z' && phase === 'run') {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      const moved = o.mode === 'copy-in' ? tx : conn.rx() - rx0;
      out({ mode: o.mode, bytes: moved, seconds: s, rows });
      conn.socket.end();
      process.exit(0);
    }
  }, fail);

  async function sendCopy() {
    // CopyData messages of ~64 KiB, each a whole number of lines; the last one shorter.
    const line = Buffer.from(`${'x'.repeat(rowBytes - 1)}\n`, 'latin1');
    const perMsg = Math.max(1, Math.floor(65536 / line.length));
    const make = (n) => msg('d', Buffer.concat(Array.from({ length: n }, () => line)));
    const full = make(perMsg);
    let left = rows;
    while (left > 0) {
      const n = Math.min(perMsg, left);
      const m = n === perMsg ? full : make(n);
      left -= n;
      tx += m.length;
      if (!conn.socket.write(m)) await new Promise((r) => conn.socket.once('drain', r));
    }
    conn.socket.write(msg('c', Buffer.alloc(0)));
  }
}

async function idle() {
  const clients = Number(o.clients ?? 1000);
  const concurrency = Number(o.concurrency ?? 100);
  const t0 = Date.now();
  const sockets = [];
  let ready = 0;
  let failed = 0;
  let firstError = null;
  let next = 0;
  await new Promise((resolveAll) => {
    const launch = () => {
      if (next >= clients) return;
      next++;
      let settled = false;
      const settle = (ok, e) => {
        if (settled) return;
        settled = true;
        if (ok) ready++;
        else {
          failed++;
          firstError ??= String(e?.message ?? e);
        }
        if (ready + failed === clients) resolveAll();
        else launch();
      };
      const c = connect(
        (type, body) => {
          if (type === 'Z') settle(true);
          else if (type === 'E') {
            settle(false, new Error(errorText(body)));
            c.socket.destroy();
          }
        },
        (e) => settle(false, e),
      );
      c.socket.setTimeout(0);
      c.socket.on('close', () => settle(false, new Error('closed during start-up')));
      sockets.push(c.socket);
    };
    for (let i = 0; i < Math.min(concurrency, clients); i++) launch();
  });
  out({
    mode: 'idle',
    ready,
    failed,
    seconds: (Date.now() - t0) / 1000,
    firstError,
    clientRssMb: process.memoryUsage().rss / 2 ** 20,
  });
  const quit = () => {
    for (const s of sockets) s.destroy();
    process.exit(0);
  };
  process.stdin.on('end', quit);
  process.stdin.on('close', quit);
  process.stdin.resume();
  process.on('SIGTERM', quit);
}

if (!port) fail(new Error('port missing'));
if (o.mode === 'idle') idle().catch(fail);
else streaming().catch(fail);
