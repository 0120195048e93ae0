#!/usr/bin/env node
/**
 * Interleaved A/B of proxy CPU per select-only transaction, for hot-path work
 * (bench/PERF-NOTES.md). Not part of `npm run bench`: fewer cells, more rounds, and
 * optional `perf` / `--cpu-prof` / `strace -c` of chosen targets.
 *
 *   npm run build && npm run build:dev
 *   PROFILE_TARGETS="new=dist/cli.js,base=/tmp/base/dist/cli.js,new-lb=dist/cli.js:lb,pgbouncer,pipe" \
 *     node bench/profile-ab.mjs
 *
 * Targets (comma-separated, `name=spec`):
 *   NAME=PATH/cli.js[:lb][:tx][:--node-flag]  a pgrelay build (`:lb` = primary + 2 standbys,
 *                           load_balance_mode = on; `:tx` = pool_mode = transaction, default_pool_size =
 *                           PROFILE_POOL_SIZE; `:--max-semi-space-size=64` and the like go to node)
 *   pgbouncer               /usr/sbin/pgbouncer, session mode (prepared mode works)
 *   pgbouncer-tx            /usr/sbin/pgbouncer, transaction mode, default_pool_size = PROFILE_POOL_SIZE
 *   pipe                    the 10-line Node byte pipe (bench/run.mjs's), the floor
 *   txpipeK                 (K = 1, 2, 4, …) a bare transaction-pooling relay: PROFILE_POOL_SIZE server
 *                           connections, trust start-up, simple-protocol Queries only (`-M simple`),
 *                           each one sent to a connection with fewer than K Queries in flight
 *                           (K > 1: several clients' autocommit Queries pipelined on one connection,
 *                           which no pooler does), else queued: the floor of a Node pooler, and
 *                           what pipelining could buy (PERF-NOTES.md)
 *
 * Every round runs each mode through every target in turn (order reversed every other
 * round), `pgbench -n -S -M MODE -c CLIENTS -j 2 -T DURATION` (`-R RATE` if set). CPU
 * per transaction = the target's utime+stime over the run / transactions; the table
 * gives medians, the user-time share, read+write syscalls per transaction, and the
 * median of the per-round ratios to PROFILE_REF (pgbouncer): on a loaded machine
 * absolute µs drift a lot, ratios within a round much less.
 *
 * Options (environment): PROFILE_MODES (simple,extended,prepared), PROFILE_ROUNDS (3),
 * PROFILE_DURATION (5), PROFILE_WARMUP (3 s per mode and target), PROFILE_CLIENTS (8),
 * PROFILE_RATE, PROFILE_REF (pgbouncer), PROFILE_POOL_SIZE (20, the `:tx` and pgbouncer-tx targets),
 * PROFILE_PERF=name+name (perf record -e cpu-clock -g of those targets, each run;
 * pgrelay/pipe started with --perf-basic-prof-only-functions), PROFILE_CPUPROF=name
 * (node --cpu-prof; the measured windows are written next to it for
 * bench/profile-summary.mjs), PROFILE_STRACE=1 (strace -c -f of every target),
 * PROFILE_CLUSTER=FILE (JSON {nodes:[{port}],primaryId} of a running cluster with
 * pgbench tables, instead of starting one). Output files go to a fresh /tmp dir,
 * printed at the end.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;
const MODES = (env.PROFILE_MODES ?? 'simple,extended,prepared').split(',');
const ROUNDS = Number(env.PROFILE_ROUNDS ?? 3);
const DUR = Number(env.PROFILE_DURATION ?? 5);
const CLIENTS = Number(env.PROFILE_CLIENTS ?? 8);
const REF = env.PROFILE_REF ?? 'pgbouncer';
const PERF = new Set((env.PROFILE_PERF ?? '').split('+').filter(Boolean));
const CPUPROF = env.PROFILE_CPUPROF ?? '';
const TICK = 100;
const POOL_SIZE = Number(env.PROFILE_POOL_SIZE ?? 20);
const PG_BIN = env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = [];
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // gone
    }
  }
});
process.on('SIGINT', () => process.exit(1));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

function stat(pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  const io = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
  return {
    user: Number(f[11]) / TICK,
    total: (Number(f[11]) + Number(f[12])) / TICK,
    syscalls: Number(/syscr:\s*(\d+)/.exec(io)?.[1] ?? 0) + Number(/syscw:\s*(\d+)/.exec(io)?.[1] ?? 0),
  };
}

/** Busy and total CPU seconds of the whole machine (/proc/stat), to charge every process a transaction costs. */
function machine() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: (total - f[3] - f[4]) / TICK, total: total / TICK };
}

function run(file, args, opts = {}) {
  return new Promise((resolve) =>
    execFile(file, args, { timeout: (DUR + 60) * 1000, encoding: 'utf8', ...opts }, (e, out, err) =>
      resolve({ code: e ? 1 : 0, out, err }),
    ),
  );
}

async function ready(port) {
  for (let i = 0; i < 150; i++) {
    const r = await run(path.join(PG_BIN, 'psql'), [
      '-X',
      '-At',
      '-h',
      '127.0.0.1',
      '-p',
      String(port),
      '-U',
      'postgres',
      '-c',
      'select 1',
      'postgres',
    ]);
    if (r.out.trim() === '1') return;
    await sleep(200);
  }
  throw new Error(`not ready on port ${port}`);
}

/** The OS user PgBouncer runs as when we are root. */
function postgresUser() {
  if (process.getuid?.() !== 0) return null;
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === 'postgres') return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  return null;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-profile-ab-'));
// PgBouncer runs as postgres (when we are root) and reads its files below this directory.
fs.chmodSync(tmp, 0o755);
let cluster;
let nodes;
if (env.PROFILE_CLUSTER) {
  const d = JSON.parse(fs.readFileSync(env.PROFILE_CLUSTER, 'utf8'));
  nodes = d.nodes.map((n) => n.port);
  nodes = [nodes[d.primaryId], ...nodes.filter((_, i) => i !== d.primaryId)];
} else {
  const { DevCluster } = await import(path.join(ROOT, 'dev', 'dist', 'devcluster.js'));
  cluster = await DevCluster.start({ standbys: 2, extraConf: { fsync: 'off', max_connections: '300' } });
  nodes = [cluster.primary.port, ...cluster.standbys.map((n) => n.port)];
  const r = await run(
    'pgbench',
    ['-i', '-q', '-s', '10', '-h', '127.0.0.1', '-p', String(nodes[0]), '-U', 'postgres', 'postgres'],
    {
      timeout: 600_000,
    },
  );
  if (r.code !== 0) throw new Error(`pgbench -i failed: ${r.err}`);
  // Let the standbys replay the load before the balanced runs.
  await sleep(3000);
}

const PIPE_JS = `
const net = require('node:net');
const [port, bport] = process.argv.slice(2).map(Number);
net.createServer({ noDelay: true }, (c) => {
  const s = net.connect({ host: '127.0.0.1', port: bport, noDelay: true });
  c.pipe(s); s.pipe(c);
  c.on('error', () => s.destroy()); s.on('error', () => c.destroy());
  c.on('close', () => s.destroy()); s.on('close', () => c.destroy());
}).listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

// A bare transaction-pooling relay for `pgbench -S -M simple` (no parsing beyond framing, no
// routing, no error handling): argv port, server port, pool size, K = Queries in flight per
// server connection.
const TXPIPE_JS = `
const net = require('node:net');
const [port, bport, size, K] = process.argv.slice(2).map(Number);
const servers = [], waiting = [];
let params = null;
const frames = (sock, onFrame, onChunkEnd) => {
  let held = null;
  sock.on('data', (d) => {
    const b = held ? Buffer.concat([held, d]) : d;
    let off = 0;
    while (b.length - off >= 5 && b.length - off >= 1 + b.readInt32BE(off + 1)) {
      const end = off + 1 + b.readInt32BE(off + 1);
      onFrame(b, off, end);
      off = end;
    }
    onChunkEnd?.(b, off);
    held = off < b.length ? b.subarray(off) : null;
  });
};
const send = (srv, c, q) => { srv.inflight.push(c); srv.sock.write(q); };
const openServer = () => new Promise((resolve) => {
  const sock = net.connect({ host: '127.0.0.1', port: bport, noDelay: true });
  const srv = { sock, inflight: [], ready: false }, ps = [];
  let from = -1;
  const body = Buffer.from('\\0\\x03\\0\\0user\\0postgres\\0database\\0postgres\\0\\0', 'latin1');
  const start = Buffer.alloc(4); start.writeInt32BE(4 + body.length);
  sock.write(Buffer.concat([start, body]));
  frames(sock, (b, off, end) => {
    if (!srv.ready) {
      if (b[off] === 0x53) ps.push(Buffer.from(b.subarray(off, end)));
      if (b[off] === 0x5a) { srv.ready = true; params ??= Buffer.concat(ps); resolve(srv); }
      return;
    }
    // A reply goes to the client whose Query is first in flight, in one write per read;
    // ReadyForQuery ends it.
    if (from < 0) from = off;
    if (b[off] === 0x5a) {
      srv.inflight.shift().write(b.subarray(from, end));
      from = -1;
      while (waiting.length && srv.inflight.length < K) send(srv, ...waiting.shift());
    }
  }, (b, off) => {
    if (from >= 0 && from < off) srv.inflight[0].write(b.subarray(from, off));
    from = -1;
  });
});
const dispatch = (c, q) => {
  let best = null;
  if (!waiting.length) for (const srv of servers) if (srv.inflight.length < K && (!best || srv.inflight.length < best.inflight.length)) best = srv;
  if (best) send(best, c, q); else waiting.push([c, q]);
};
(async () => {
  for (let i = 0; i < size; i++) servers.push(await openServer());
  const hello = Buffer.concat([Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0]), params,
    Buffer.from([0x4b, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0x5a, 0, 0, 0, 5, 0x49])]);
  net.createServer({ noDelay: true }, (c) => {
    c.on('error', () => {});
    let held = null;
    c.once('data', function startUp(d) {
      held = held ? Buffer.concat([held, d]) : d;
      if (held.length < 8 || held.length < held.readInt32BE(0)) return c.once('data', startUp);
      const code = held.readInt32BE(4), rest = held.subarray(held.readInt32BE(0));
      held = null;
      if (code === 80877103) { c.write('N'); return c.once('data', startUp); }
      c.write(hello);
      frames(c, (b, off, end) => { if (b[off] === 0x51) dispatch(c, b.subarray(off, end)); else if (b[off] === 0x58) c.end(); });
      if (rest.length) c.emit('data', rest);
    });
  }).listen(port, '127.0.0.1');
})();
process.on('SIGTERM', () => process.exit(0));
`;

async function startTarget(spec) {
  const eq = spec.indexOf('=');
  const [name, rest] = eq < 0 ? [spec, undefined] : [spec.slice(0, eq), spec.slice(eq + 1)];
  const port = await freePort();
  const perfArgs = PERF.has(name) ? ['--perf-basic-prof-only-functions', '--interpreted-frames-native-stack'] : [];
  let child;
  if (name === 'pgbouncer' || name === 'pgbouncer-tx') {
    const tx = name === 'pgbouncer-tx';
    const dir = fs.mkdtempSync(path.join(tmp, 'pgbouncer-'));
    const pgUser = postgresUser();
    fs.writeFileSync(path.join(dir, 'users.txt'), '"postgres" ""\n');
    fs.writeFileSync(
      path.join(dir, 'pgbouncer.ini'),
      [
        '[databases]',
        `* = host=127.0.0.1 port=${nodes[0]}`,
        '[pgbouncer]',
        'listen_addr = 127.0.0.1',
        `listen_port = ${port}`,
        'unix_socket_dir =',
        'auth_type = trust',
        `auth_file = ${dir}/users.txt`,
        `pool_mode = ${tx ? 'transaction' : 'session'}`,
        `max_client_conn = ${Math.max(500, CLIENTS + 100)}`,
        `default_pool_size = ${tx ? POOL_SIZE : Math.max(64, CLIENTS)}`,
        `logfile = ${dir}/pgbouncer.log`,
        'log_connections = 0',
        'log_disconnections = 0',
        'ignore_startup_parameters = extra_float_digits',
        '',
      ].join('\n'),
    );
    if (pgUser) {
      fs.chownSync(dir, pgUser.uid, pgUser.gid);
      for (const f of fs.readdirSync(dir)) fs.chownSync(path.join(dir, f), pgUser.uid, pgUser.gid);
    }
    child = spawn('/usr/sbin/pgbouncer', [path.join(dir, 'pgbouncer.ini')], {
      stdio: 'ignore',
      cwd: dir,
      ...(pgUser ?? {}),
    });
  } else if (name === 'pipe') {
    const js = path.join(tmp, 'pipe.cjs');
    fs.writeFileSync(js, PIPE_JS);
    child = spawn(process.execPath, [...perfArgs, js, String(port), String(nodes[0])], { stdio: 'ignore' });
  } else if (/^txpipe\d+$/.test(name)) {
    if (MODES.some((m) => m !== 'simple')) throw new Error(`${name}: simple protocol only (PROFILE_MODES=simple)`);
    const js = path.join(tmp, 'txpipe.cjs');
    fs.writeFileSync(js, TXPIPE_JS);
    const depth = name.slice('txpipe'.length);
    child = spawn(process.execPath, [...perfArgs, js, String(port), String(nodes[0]), String(POOL_SIZE), depth], {
      stdio: 'ignore',
    });
  } else {
    const [cli, ...flags] = rest.split(':');
    const lb = flags.includes('lb');
    const tx = flags.includes('tx');
    const nodeFlags = flags.filter((f) => f.startsWith('--'));
    const backends = lb ? nodes : [nodes[0]];
    const conf = path.join(tmp, `${name}.conf`);
    const lines = [
      `listen_addresses = '127.0.0.1'`,
      `port = ${port}`,
      'pcp_port = 0',
      `num_init_children = ${Math.max(64, CLIENTS + 8)}`,
      'max_pool = 4',
      ...(tx
        ? ['pool_mode = transaction', `default_pool_size = ${POOL_SIZE}`, `max_client_conn = ${CLIENTS + 100}`]
        : []),
      'log_min_messages = warning',
      `load_balance_mode = ${lb ? 'on' : 'off'}`,
      `logdir = '${tmp}'`,
      "sr_check_user = 'postgres'",
      "health_check_user = 'postgres'",
    ];
    for (let i = 0; i < backends.length; i++)
      lines.push(`backend_hostname${i} = '127.0.0.1'`, `backend_port${i} = ${backends[i]}`, `backend_weight${i} = 1`);
    fs.writeFileSync(conf, `${lines.join('\n')}\n`);
    const prof = CPUPROF === name ? ['--cpu-prof', `--cpu-prof-dir=${tmp}`] : [];
    const out = fs.openSync(path.join(tmp, `${name}.log`), 'a');
    child = spawn(process.execPath, [...nodeFlags, ...prof, ...perfArgs, path.resolve(ROOT, cli), '-f', conf], {
      stdio: ['ignore', out, out],
    });
  }
  children.push(child);
  await ready(port);
  return { name, port, pid: child.pid, child };
}

const targets = [];
for (const spec of (env.PROFILE_TARGETS ?? 'pgrelay=dist/cli.js,pgbouncer,pipe').split(','))
  targets.push(await startTarget(spec));
const bench = (t, mode, seconds, rate) => [
  '-n',
  '-S',
  '-M',
  mode,
  '-c',
  String(CLIENTS),
  '-j',
  String(Math.min(2, CLIENTS)),
  '-T',
  String(seconds),
  ...(rate ? ['-R', rate] : []),
  '-h',
  '127.0.0.1',
  '-p',
  String(t.port),
  '-U',
  'postgres',
  'postgres',
];
// JIT warm-up: TurboFan compiles for the first seconds of a Node process (see PERF-NOTES.md).
const WARMUP = Number(env.PROFILE_WARMUP ?? 3);
if (WARMUP > 0) for (const t of targets) for (const mode of MODES) await run('pgbench', bench(t, mode, WARMUP));

const res = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const mode of MODES) {
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
      const s0 = stat(t.pid);
      const m0 = machine();
      const h0 = process.hrtime.bigint();
      const tracers = [];
      if (env.PROFILE_STRACE === '1')
        tracers.push(
          spawn('strace', ['-c', '-f', '-p', String(t.pid), '-o', path.join(tmp, `strace-${t.name}-${mode}.txt`)]),
        );
      if (PERF.has(t.name))
        tracers.push(
          spawn(
            'perf',
            [
              'record',
              '-e',
              'cpu-clock',
              '-F',
              '1999',
              '-g',
              '-p',
              String(t.pid),
              '-o',
              path.join(tmp, `perf-${t.name}-${mode}.data`),
            ],
            {
              stdio: 'ignore',
            },
          ),
        );
      const x = await run('pgbench', bench(t, mode, DUR, env.PROFILE_RATE));
      const s1 = stat(t.pid);
      const m1 = machine();
      for (const tr of tracers) {
        tr.kill('SIGINT');
        await new Promise((resolve) => tr.once('exit', resolve));
      }
      if (CPUPROF === t.name)
        fs.writeFileSync(
          path.join(tmp, `window-${mode}.json`),
          JSON.stringify([Number(h0 / 1000n), Number(process.hrtime.bigint() / 1000n)]),
        );
      const txns = Number(/actually processed:\s*(\d+)/.exec(x.out)?.[1] ?? 0);
      const tps = Number(/tps = ([\d.]+)/.exec(x.out)?.[1] ?? 0);
      const row = {
        us: txns ? ((s1.total - s0.total) * 1e6) / txns : Number.NaN,
        userUs: txns ? ((s1.user - s0.user) * 1e6) / txns : Number.NaN,
        syscalls: txns ? (s1.syscalls - s0.syscalls) / txns : Number.NaN,
        machineUs: txns ? ((m1.busy - m0.busy) * 1e6) / txns : Number.NaN,
        idlePct: 100 * (1 - (m1.busy - m0.busy) / (m1.total - m0.total)) || 0,
        tps,
        load: os.loadavg()[0],
      };
      res[`${mode}|${t.name}`] ??= [];
      res[`${mode}|${t.name}`].push(row);
      process.stderr.write(
        `round ${r} ${mode} ${t.name}: ${row.us.toFixed(1)} µs/txn (user ${row.userUs.toFixed(1)}), ${tps.toFixed(0)} tps, load ${row.load.toFixed(1)}${x.code ? ` ERROR ${x.err.slice(-300)}` : ''}\n`,
      );
    }
  }
}

const median = (a) => {
  const s = a.filter(Number.isFinite).sort((x, y) => x - y);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
console.log(
  `\n${new Date().toISOString()}, load average ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} on ${os.cpus().length} CPUs; ${ROUNDS} rounds × ${DUR} s, ${CLIENTS} clients${env.PROFILE_RATE ? `, -R ${env.PROFILE_RATE}` : ''}\n`,
);
console.log(
  `| mode | target | CPU µs/txn (median) | min | user µs/txn | syscalls/txn | machine µs/txn | idle % | TPS (median) | × ${REF} (per-round median) |`,
);
console.log('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|');
for (const mode of MODES) {
  for (const t of targets) {
    const a = res[`${mode}|${t.name}`] ?? [];
    const b = res[`${mode}|${REF}`];
    const ratio = b ? median(a.map((x, i) => x.us / b[i].us)).toFixed(2) : '-';
    console.log(
      `| ${mode} | ${t.name} | ${median(a.map((x) => x.us)).toFixed(1)} | ${Math.min(...a.map((x) => x.us)).toFixed(1)} | ${median(a.map((x) => x.userUs)).toFixed(1)} | ${median(a.map((x) => x.syscalls)).toFixed(2)} | ${median(a.map((x) => x.machineUs)).toFixed(1)} | ${median(a.map((x) => x.idlePct)).toFixed(0)} | ${median(a.map((x) => x.tps)).toFixed(0)} | ${ratio} |`,
    );
  }
}
console.log(`\nfiles: ${tmp}`);
for (const t of targets) t.child.kill('SIGTERM');
await sleep(1500);
if (cluster) await cluster.stop();
process.exit(0);
