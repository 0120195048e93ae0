#!/usr/bin/env node
/**
 * pgrelay benchmark: pgbench through pgrelay vs directly against the primary
 * (and through PgBouncer / pgpool-II when installed), side by side.
 *
 *   npm run bench                      (= npm run build && node bench/run.mjs)
 *   BENCH_DURATION=5 BENCH_ONLY=direct,pgrelay node bench/run.mjs
 *
 * See bench/README.md for the options, the columns and the targets.
 *
 * Plain Node ESM, no build step of its own. Uses dev/dist/devcluster.js for the
 * throw-away PostgreSQL cluster and dist/cli.js for pgrelay, so
 * `npm run build && npm run build:dev` first (`npm run bench` does both).
 */
import { spawn, execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const DIST = path.join(ROOT, 'dist');
const DEV_DIST = path.join(ROOT, 'dev', 'dist');
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

// ---------------------------------------------------------------------------
// Options

const env = process.env;
const list = (v, def) =>
  (v ?? def)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
const num = (v, def) => {
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) die(`invalid number "${v}"`);
  return n;
};

const USAGE = `usage: node bench/run.mjs [--quick] [--help]

  --quick   every row at reduced duration, sizes and client counts (about 2-3 minutes; BENCH_QUICK=1 too)
  --help    this text

Everything else is set with BENCH_* environment variables (rows, targets, clients, modes,
durations...): see bench/README.md. Builds first: npm run build && npm run build:dev
(npm run bench does both, then runs this).
`;
for (const a of process.argv.slice(2)) {
  if (a === '--help' || a === '-h') {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (a !== '--quick') {
    process.stderr.write(`bench: unknown argument "${a}"\n${USAGE}`);
    process.exit(2);
  }
}

/** `--quick` or BENCH_QUICK=1: every row at reduced duration / sizes / client counts (about 2–3 minutes). */
const QUICK = process.argv.includes('--quick') || env.BENCH_QUICK === '1';
/** The default of an option: its full-run value, or its quick-mode value. */
const dflt = (full, quick) => (QUICK ? quick : full);

function die(msg) {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}

const ALL_MODES = ['simple', 'extended', 'prepared'];
const RYW_TARGETS = ['pgrelay-ryw-off', 'pgrelay-ryw-session', 'pgrelay-ryw-global'];
/** Targets of the transaction-pooling row only. */
const TX_TARGETS = ['pgrelay-tx', 'pgbouncer-tx'];
const ALL_TARGETS = [
  'direct',
  'pgrelay',
  'pgbouncer',
  'pgpool',
  'pgrelay-lb',
  'pipe',
  'pgrelay-base',
  ...RYW_TARGETS,
  'pgpool-lb',
  ...TX_TARGETS,
];
/** Workloads of the main matrix (BENCH_WORKLOADS); `mixed` belongs to the mixed row. */
const ALL_WORKLOADS = ['select', 'tpcb', 'connect', 'latency', 'stream'];
/** Cells of the stream workload (its `mode`): a SELECT result read at full speed, COPY TO STDOUT, COPY FROM STDIN. */
const ALL_STREAMS = ['result', 'copy-out', 'copy-in'];
/**
 * Rows: each runs on its own throw-away cluster with its own targets, one after the other.
 *   main          the select / tpcb / connect matrix (pgrelay vs direct and the other proxies)
 *   mixed         read-your-writes (issue 13): 1 UPDATE + N SELECTs per transaction, load balancing on over
 *                 primary + 2 standbys; pgrelay with read_your_writes off / session / global, pgpool-II, direct
 *   backpressure  issue 10: pgrelay vs a baseline build (BENCH_BASELINE, default d2dbfd2, the commit before
 *                 backpressure) at 8 and 32 clients
 *   txpool        issue 14: pgrelay pool_mode = transaction vs PgBouncer in transaction mode (same pool size), direct
 *                 and pgpool-II, select-only at 8 / 128 / 1,000 clients; N idle clients: proxy RSS, server connections
 */
const ALL_ROWS = ['main', 'mixed', 'backpressure', 'txpool'];

const OPT = {
  quick: QUICK,
  duration: num(env.BENCH_DURATION, dflt(10, 2)),
  clients: list(env.BENCH_CLIENTS, dflt('1,8,32', '8')).map((c) => num(c)),
  scale: num(env.BENCH_SCALE, dflt(10, 1)),
  modes: list(env.BENCH_MODES, dflt(ALL_MODES.join(','), 'simple')),
  tpcbModes: list(env.BENCH_TPCB_MODES, env.BENCH_MODES ?? dflt(ALL_MODES.join(','), 'simple')),
  workloads: list(env.BENCH_WORKLOADS, dflt(ALL_WORKLOADS.join(','), 'select,connect,latency,stream')),
  connectClients: list(env.BENCH_CONNECT_CLIENTS, dflt('1,8', '8')).map((c) => num(c)),
  /** Client counts of the latency cells (pgbench -l: p50 / p99 of every transaction's latency). */
  latencyClients: list(env.BENCH_LATENCY_CLIENTS, '32,128').map((c) => num(c)),
  latencyModes: list(env.BENCH_LATENCY_MODES, 'simple'),
  /** Stream cells (result, copy-out, copy-in), bytes moved per cell and bytes per row. */
  streams: list(env.BENCH_STREAMS, ALL_STREAMS.join(',')),
  streamBytes: num(env.BENCH_STREAM_MB, dflt(1024, 50)) * 2 ** 20,
  streamRowBytes: num(env.BENCH_STREAM_ROW_BYTES, 1000),
  /** Transaction-pooling row: pool size of both poolers, client counts, protocol modes, idle clients. */
  txPoolSize: num(env.BENCH_TX_POOL_SIZE, 20),
  txClients: list(env.BENCH_TX_CLIENTS, dflt('8,128,1000', '8,200')).map((c) => num(c)),
  txModes: list(env.BENCH_TX_MODES, 'simple'),
  idleClients: env.BENCH_IDLE_CLIENTS === '0' ? 0 : num(env.BENCH_IDLE_CLIENTS, dflt(10000, 1000)),
  /** pgrelay-lb (primary + 2 standbys) and the Node pipe floor are in every run unless BENCH_LB=0 / BENCH_PIPE=0. */
  lb: env.BENCH_LB !== '0',
  pipe: env.BENCH_PIPE !== '0',
  only: env.BENCH_ONLY ? list(env.BENCH_ONLY, '') : null,
  profile: env.BENCH_PROFILE === '1',
  profileModes: list(env.BENCH_PROFILE_MODES, 'extended'),
  warmup: env.BENCH_WARMUP === undefined ? dflt(2, 1) : Number(env.BENCH_WARMUP),
  standbys: env.BENCH_STANDBYS !== undefined ? Number(env.BENCH_STANDBYS) : null,
  pgbouncer: env.BENCH_PGBOUNCER ?? '/usr/sbin/pgbouncer',
  pgpool: env.BENCH_PGPOOL ?? '/usr/sbin/pgpool',
  resultsDir: env.BENCH_RESULTS_DIR ?? path.join(HERE, 'results'),
  keep: env.BENCH_KEEP === '1',
  /**
   * Another pgrelay build, run as target pgrelay-base: a cli.js, a checkout (its dist/cli.js), or a git ref of this
   * repository (built once in a worktree under the temp dir). The backpressure row defaults it to d2dbfd2.
   */
  baseline: env.BENCH_BASELINE || null,
  rows: list(env.BENCH_ROWS, 'main,mixed,txpool'),
  /** Every cell runs this many times (targets interleaved in each round); tables show the median. */
  repeat: num(env.BENCH_REPEAT, 1),
  mixedClients: list(env.BENCH_MIXED_CLIENTS, dflt('8,32', '8')).map((c) => num(c)),
  mixedModes: list(env.BENCH_MIXED_MODES, 'extended'),
  mixedSelects: num(env.BENCH_MIXED_SELECTS, 4),
  /** Client counts of the select-only cell of the mixed row (the cost of read_your_writes on reads); '' = none. */
  mixedSelectClients: list(env.BENCH_MIXED_SELECT_CLIENTS, dflt('8', '')).map((c) => num(c)),
  rywWait: env.BENCH_RYW_WAIT ?? null,
  /** Load balancing of the mixed row: statement (statement_level_load_balance = on) or session (pgpool's default). */
  mixedLb: env.BENCH_MIXED_LB ?? 'statement',
  bpClients: list(env.BENCH_BP_CLIENTS, '8,32').map((c) => num(c)),
  bpModes: list(env.BENCH_BP_MODES, 'simple,extended'),
  bpWorkloads: list(env.BENCH_BP_WORKLOADS, 'select,tpcb'),
};
for (const r of OPT.rows) if (!ALL_ROWS.includes(r)) die(`unknown row "${r}" (${ALL_ROWS.join(', ')})`);
if (OPT.rows.includes('backpressure') && !OPT.baseline) OPT.baseline = 'd2dbfd2';
for (const w of OPT.bpWorkloads)
  if (w !== 'select' && w !== 'tpcb') die(`unknown BENCH_BP_WORKLOADS entry "${w}" (select, tpcb)`);
if (OPT.mixedLb !== 'statement' && OPT.mixedLb !== 'session')
  die(`invalid BENCH_MIXED_LB "${OPT.mixedLb}" (statement, session)`);
if (OPT.rywWait !== null && !/^\d+$/.test(OPT.rywWait)) die(`invalid BENCH_RYW_WAIT "${OPT.rywWait}" (ms)`);
for (const s of OPT.streams) if (!ALL_STREAMS.includes(s)) die(`unknown stream "${s}" (${ALL_STREAMS.join(', ')})`);
for (const m of [
  ...OPT.modes,
  ...OPT.tpcbModes,
  ...OPT.profileModes,
  ...OPT.mixedModes,
  ...OPT.bpModes,
  ...OPT.latencyModes,
  ...OPT.txModes,
]) {
  if (!ALL_MODES.includes(m)) die(`unknown protocol mode "${m}" (simple, extended, prepared)`);
}
for (const w of OPT.workloads)
  if (!ALL_WORKLOADS.includes(w)) die(`unknown workload "${w}" (${ALL_WORKLOADS.join(', ')})`);
if (OPT.only)
  for (const t of OPT.only) if (!ALL_TARGETS.includes(t)) die(`unknown target "${t}" (${ALL_TARGETS.join(', ')})`);

/** Which targets run which workloads. */
const TARGET_WORKLOADS = {
  direct: ['select', 'tpcb', 'connect', 'latency', 'stream', 'mixed'],
  pgrelay: ['select', 'tpcb', 'connect', 'latency', 'stream'],
  pgbouncer: ['select', 'tpcb', 'connect', 'latency', 'stream'],
  pgpool: ['select', 'tpcb', 'connect', 'latency', 'stream'],
  'pgrelay-lb': ['select', 'tpcb', 'connect', 'latency', 'stream'],
  pipe: ['select', 'tpcb', 'connect', 'latency', 'stream'],
  'pgrelay-base': ['select', 'tpcb', 'connect', 'latency', 'stream'],
  'pgrelay-tx': ['select', 'idle'],
  'pgbouncer-tx': ['select', 'idle'],
  'pgrelay-ryw-off': ['select', 'mixed'],
  'pgrelay-ryw-session': ['select', 'mixed'],
  'pgrelay-ryw-global': ['select', 'mixed'],
  'pgpool-lb': ['select', 'mixed'],
};

/** Targets of the main matrix. */
function wanted(target) {
  if (RYW_TARGETS.includes(target) || TX_TARGETS.includes(target) || target === 'pgpool-lb') return false;
  if (OPT.only) return OPT.only.includes(target);
  if (target === 'pgrelay-lb') return OPT.lb;
  if (target === 'pipe') return OPT.pipe;
  if (target === 'pgrelay-base') return env.BENCH_BASELINE !== undefined && env.BENCH_BASELINE !== '';
  return true;
}

/** What a row runs: its targets (in order), its cells, and how many standbys its cluster needs. */
function rowPlan(row) {
  const only = (names) => names.filter((t) => !OPT.only || OPT.only.includes(t));
  const cells = [];
  if (row === 'main') {
    const targets = ALL_TARGETS.filter(wanted);
    for (const workload of OPT.workloads) {
      const modes =
        {
          tpcb: OPT.tpcbModes,
          connect: ['simple'],
          latency: OPT.latencyModes,
          stream: OPT.streams,
        }[workload] ?? OPT.modes;
      const clientsList =
        { connect: OPT.connectClients, latency: OPT.latencyClients, stream: [1] }[workload] ?? OPT.clients;
      for (const mode of modes) for (const clients of clientsList) cells.push({ workload, mode, clients });
    }
    return { targets, cells, standbys: OPT.standbys ?? (targets.includes('pgrelay-lb') ? 2 : 0) };
  }
  if (row === 'mixed') {
    const targets = only(['direct', ...RYW_TARGETS, 'pgpool-lb']);
    for (const mode of OPT.mixedModes) {
      for (const clients of OPT.mixedClients) cells.push({ workload: 'mixed', mode, clients });
      for (const clients of OPT.mixedSelectClients) cells.push({ workload: 'select', mode, clients });
    }
    return { targets, cells, standbys: Math.max(OPT.standbys ?? 2, 1) };
  }
  if (row === 'txpool') {
    const targets = only(['direct', 'pgrelay-tx', 'pgbouncer-tx', 'pgpool']);
    for (const mode of OPT.txModes)
      for (const clients of OPT.txClients) cells.push({ workload: 'select', mode, clients });
    if (OPT.idleClients) cells.push({ workload: 'idle', mode: '-', clients: OPT.idleClients });
    return { targets, cells, standbys: OPT.standbys ?? 0 };
  }
  // backpressure
  const targets = only(['direct', 'pgrelay', 'pgrelay-base']);
  for (const workload of OPT.bpWorkloads)
    for (const mode of OPT.bpModes) for (const clients of OPT.bpClients) cells.push({ workload, mode, clients });
  return { targets, cells, standbys: OPT.standbys ?? 0 };
}

// ---------------------------------------------------------------------------
// Small helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** OS user to run PgBouncer / pgpool-II as (they refuse root, like initdb). */
function resolveRunAs() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
  const name = env.PGRELAY_PG_USER ?? 'postgres';
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name) return { user: name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] };
  }
  return null;
}
const RUN_AS = resolveRunAs();

/** process.env without libpq variables. */
function cleanEnv(extra = {}) {
  const e = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^PG[A-Z]/.test(k) && k !== 'PG_BIN') continue;
    e[k] = v;
  }
  return { ...e, LC_ALL: 'C', LANG: 'C', ...extra };
}

function runCmd(
  file,
  args,
  { timeoutMs = 60_000, envExtra = {}, runAs = null, cwd = os.tmpdir(), onSpawn = null } = {},
) {
  return new Promise((resolve) => {
    const o = {
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: 64 << 20,
      env: cleanEnv(envExtra),
      encoding: 'utf8',
      cwd,
    };
    if (runAs) Object.assign(o, { uid: runAs.uid, gid: runAs.gid });
    const child = execFile(file, args, o, (err, stdout, stderr) => {
      let code = 0;
      if (err) code = typeof err.code === 'number' ? err.code : 1;
      resolve({
        code,
        stdout: String(stdout),
        stderr: String(stderr) + (err?.killed ? `\n[killed after ${timeoutMs} ms]` : ''),
      });
    });
    onSpawn?.(child);
  });
}

function tcpReady(host, port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Until `SELECT 1` succeeds through host:port (TCP accept alone is not enough for pgpool). */
async function waitReady(name, port, child, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`${name} exited with code ${child.exitCode} during startup`);
    if (await tcpReady('127.0.0.1', port)) {
      const r = await runCmd(path.join(PG_BIN, 'psql'), ['-X', '-At', '-c', 'SELECT 1'], {
        timeoutMs: 10_000,
        envExtra: pgEnv(port),
      });
      if (r.code === 0 && r.stdout.trim() === '1') return;
      last = r.stderr.trim();
    }
    await sleep(200);
  }
  throw new Error(`${name} not ready on port ${port} after ${timeoutMs} ms${last ? `: ${last}` : ''}`);
}

function pgEnv(port) {
  return {
    PGHOST: '127.0.0.1',
    PGPORT: String(port),
    PGUSER: 'postgres',
    PGDATABASE: 'postgres',
    PGCONNECT_TIMEOUT: '10',
  };
}

// ---- process CPU accounting (/proc/<pid>/stat) ----------------------------

function readStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces/parens: split after the last ')'.
    const close = s.lastIndexOf(')');
    const comm = s.slice(s.indexOf('(') + 1, close);
    const f = s.slice(close + 2).split(' '); // f[0] = field 3 (state)
    return {
      pid,
      comm,
      ppid: Number(f[1]),
      utime: Number(f[11]),
      stime: Number(f[12]),
      cutime: Number(f[13]),
      cstime: Number(f[14]),
    };
  } catch {
    return null;
  }
}

/** pid and all its live descendants. */
function processTree(rootPid) {
  const stats = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = readStat(Number(d));
    if (st) stats.push(st);
  }
  const byParent = new Map();
  for (const st of stats) {
    if (!byParent.has(st.ppid)) byParent.set(st.ppid, []);
    byParent.get(st.ppid).push(st);
  }
  const root = stats.find((s) => s.pid === rootPid);
  if (!root) return [];
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const c of byParent.get(out[i].pid) ?? []) out.push(c);
  return out;
}

/**
 * CPU seconds used by a process tree: utime+stime of every live process in it
 * plus cutime+cstime (children already reaped). For pgrelay (one process) this
 * is exactly /proc/<pid>/stat utime+stime; for pgpool-II it also counts its
 * preforked children.
 */
function treeCpu(rootPid) {
  let user = 0;
  let sys = 0;
  let syscr = 0;
  let syscw = 0;
  for (const st of processTree(rootPid)) {
    user += st.utime + st.cutime;
    sys += st.stime + st.cstime;
    // read()/write()-family syscall counters (not recv/send): meaningful for Node (libuv uses read/write/writev).
    try {
      const io = fs.readFileSync(`/proc/${st.pid}/io`, 'utf8');
      syscr += Number(/syscr:\s*(\d+)/.exec(io)?.[1] ?? 0);
      syscw += Number(/syscw:\s*(\d+)/.exec(io)?.[1] ?? 0);
    } catch {
      // not readable
    }
  }
  return { user: user / CLK_TCK, sys: sys / CLK_TCK, total: (user + sys) / CLK_TCK, syscr, syscw };
}

// ---------------------------------------------------------------------------
// Managed child processes (pgrelay, PgBouncer, pgpool-II)

const children = new Set();

class Proc {
  constructor(name, file, args, { runAs = null, logFile, envExtra = {} } = {}) {
    this.name = name;
    this.logFile = logFile;
    const fd = fs.openSync(logFile, 'a');
    const o = { stdio: ['ignore', fd, fd], env: cleanEnv(envExtra), cwd: path.dirname(logFile) };
    if (runAs) Object.assign(o, { uid: runAs.uid, gid: runAs.gid });
    this.child = spawn(file, args, o);
    fs.closeSync(fd);
    this.pid = this.child.pid;
    this.exited = new Promise((r) => this.child.once('exit', (code, sig) => r({ code, sig })));
    this.child.once('error', (e) => log(`${name}: spawn error ${e.message}`));
    children.add(this);
  }

  get alive() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  logTail(n = 2000) {
    try {
      const s = fs.readFileSync(this.logFile, 'utf8');
      return s.slice(-n);
    } catch {
      return '';
    }
  }

  /** signal, wait up to graceMs, then SIGKILL the process and any leftover descendants (by PID). */
  async stop(signal = 'SIGTERM', graceMs = 10_000) {
    if (!this.alive) {
      children.delete(this);
      return;
    }
    const tree = processTree(this.pid).map((s) => ({ pid: s.pid, comm: s.comm }));
    this.child.kill(signal);
    const t = setTimeout(() => {
      if (this.alive) this.child.kill('SIGKILL');
    }, graceMs);
    await this.exited;
    clearTimeout(t);
    await sleep(200);
    for (const { pid, comm } of tree.slice(1)) {
      const st = readStat(pid);
      if (st && st.comm === comm) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    children.delete(this);
  }

  /** Synchronous last resort (process 'exit'). */
  killNow() {
    if (!this.alive) return;
    for (const s of processTree(this.pid).reverse()) {
      try {
        process.kill(s.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

process.on('exit', () => {
  for (const c of children) c.killNow();
});

// ---------------------------------------------------------------------------
// Targets

/** Stop a proxy process, then remove its temp dir (config, logs) unless BENCH_KEEP=1. */
async function stopAndClean(p, dir, signal, graceMs) {
  await p.stop(signal, graceMs);
  if (!OPT.keep) await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

async function mkTempDir(prefix, owner = null) {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  if (owner) await fsp.chown(d, owner.uid, owner.gid);
  return d;
}

async function freePort() {
  const { freePort: fp } = await import(path.join(DEV_DIST, 'devcluster.js'));
  return fp();
}

function pgrelayConf({ port, backends, lb, extra = [], dir, maxClients = 0 }) {
  const lines = [
    '# generated by bench/run.mjs',
    `listen_addresses = '127.0.0.1'`,
    `port = ${port}`,
    // Its own pgpool_status (the default logdir /tmp is shared with every other pgrelay on the machine).
    `logdir = '${dir}'`,
    `num_init_children = ${Math.max(64, maxClients + 8)}`,
    `max_pool = 4`,
    `log_min_messages = warning`,
    // No PCP listener: the default pcp_port 9898 is one per machine, and the rows run several pgrelays at once.
    `pcp_port = 0`,
    `load_balance_mode = ${lb ? 'on' : 'off'}`,
    ...extra,
  ];
  backends.forEach((b, i) => {
    lines.push(`backend_hostname${i} = '${b.host}'`, `backend_port${i} = ${b.port}`, `backend_weight${i} = 1`);
  });
  return `${lines.join('\n')}\n`;
}

async function startPgrelay(
  name,
  backends,
  { lb = false, cpuProfDir = null, cli = path.join(DIST, 'cli.js'), extra = [], maxClients = 0 } = {},
) {
  const dir = await mkTempDir(`pgrelay-bench-${name}-`);
  const port = await freePort();
  const conf = path.join(dir, 'pgrelay.conf');
  await fsp.writeFile(conf, pgrelayConf({ port, backends, lb, extra, dir, maxClients }));
  const nodeArgs = [];
  if (cpuProfDir) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`);
  const p = new Proc(name, process.execPath, [...nodeArgs, cli, '-f', conf], {
    logFile: path.join(dir, 'pgrelay.log'),
  });
  try {
    await waitReady(name, port, p.child);
  } catch (e) {
    const tail = p.logTail();
    await stopAndClean(p, dir, 'SIGKILL', 1000);
    throw new Error(`${e.message}\n--- ${name} log ---\n${tail}`);
  }
  return {
    name,
    port,
    proc: p,
    dir,
    selectCounts: lb ? () => selectCounts(port) : null,
    stop: () => stopAndClean(p, dir, 'SIGTERM', 10_000),
  };
}

/**
 * select_cnt of `SHOW pool_nodes` through a proxy (pgrelay or pgpool-II), summed by role:
 * { primary, standby }. Deltas around a run give the share of reads the standbys served.
 */
async function selectCounts(port) {
  const r = await runCmd(path.join(PG_BIN, 'psql'), ['-X', '--csv', '-c', 'SHOW pool_nodes'], {
    timeoutMs: 15_000,
    envExtra: pgEnv(port),
  });
  if (r.code !== 0) throw new Error(`SHOW pool_nodes on port ${port}: ${r.stderr.trim()}`);
  const [head, ...lines] = r.stdout.trim().split('\n');
  const cols = head.split(',');
  const iRole = cols.indexOf('role');
  const iSel = cols.indexOf('select_cnt');
  if (iRole < 0 || iSel < 0) throw new Error(`SHOW pool_nodes on port ${port}: no role/select_cnt column`);
  const out = { primary: 0, standby: 0 };
  for (const l of lines) {
    const f = l.split(',');
    out[f[iRole] === 'primary' ? 'primary' : 'standby'] += Number(f[iSel]) || 0;
  }
  return out;
}

/**
 * The baseline build for pgrelay-base: BENCH_BASELINE is a cli.js, a checkout (its dist/cli.js, built with
 * `npm run build` if missing), or a git ref of this repository, checked out once with `git worktree add --detach`
 * under the temp dir (reused by later runs; `git worktree remove` it when done) and built there with this
 * checkout's node_modules symlinked (or `npm ci` when that build fails).
 */
async function resolveBaseline(spec) {
  const build = async (dir) => {
    const cli = path.join(dir, 'dist', 'cli.js');
    if (fs.existsSync(cli)) return cli;
    if (!fs.existsSync(path.join(dir, 'node_modules')))
      fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
    log(`baseline: npm run build in ${dir}`);
    let r = await runCmd('npm', ['run', 'build'], { timeoutMs: 600_000, cwd: dir });
    if (r.code !== 0 && fs.lstatSync(path.join(dir, 'node_modules')).isSymbolicLink()) {
      log('baseline: build with the symlinked node_modules failed; npm ci there');
      fs.unlinkSync(path.join(dir, 'node_modules'));
      r = await runCmd('npm', ['ci', '--no-audit', '--no-fund'], { timeoutMs: 900_000, cwd: dir });
      if (r.code === 0) r = await runCmd('npm', ['run', 'build'], { timeoutMs: 600_000, cwd: dir });
    }
    if (r.code !== 0 || !fs.existsSync(cli))
      throw new Error(`baseline build in ${dir} failed: ${r.stderr.slice(-1000)}`);
    return cli;
  };
  if (fs.existsSync(spec)) {
    const st = fs.statSync(spec);
    return { cli: path.resolve(st.isDirectory() ? await build(path.resolve(spec)) : spec), ref: spec };
  }
  const rev = await runCmd('git', ['-C', ROOT, 'rev-parse', '--verify', `${spec}^{commit}`]);
  if (rev.code !== 0) throw new Error(`BENCH_BASELINE ${spec}: neither a file, a directory nor a git ref`);
  const sha = rev.stdout.trim();
  const dir = path.join(os.tmpdir(), `pgrelay-bench-base-${sha.slice(0, 12)}`);
  if (!fs.existsSync(dir)) {
    log(`baseline: git worktree add --detach ${dir} ${sha.slice(0, 12)}`);
    const r = await runCmd('git', ['-C', ROOT, 'worktree', 'add', '--detach', dir, sha]);
    if (r.code !== 0) throw new Error(`git worktree add ${dir}: ${r.stderr.trim()}`);
  }
  return { cli: await build(dir), ref: `${spec} (${sha.slice(0, 12)}, ${dir})` };
}

/**
 * Baseline: the thinnest possible Node proxy, a byte pipe (one backend
 * connection per client, no protocol parsing, no cache). Its CPU/txn is the
 * floor for any Node proxy on this machine.
 */
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

async function startPipe(primary) {
  const dir = await mkTempDir('pipe-bench-');
  const port = await freePort();
  await fsp.writeFile(path.join(dir, 'pipe.cjs'), PIPE_JS);
  const p = new Proc('pipe', process.execPath, [path.join(dir, 'pipe.cjs'), String(port), String(primary.port)], {
    logFile: path.join(dir, 'pipe.log'),
  });
  await waitReady('pipe', port, p.child);
  return { name: 'pipe', port, proc: p, dir, stop: () => stopAndClean(p, dir, 'SIGTERM', 5000) };
}

/**
 * PgBouncer: session mode with a pool as large as the most clients of the row (the main row), or transaction mode
 * with `poolSize` server connections (the txpool row, name pgbouncer-tx).
 */
async function startPgbouncer(primary, { name = 'pgbouncer', maxClients = 0, transaction = false, poolSize = 0 } = {}) {
  if (!fs.existsSync(OPT.pgbouncer)) throw new Error(`${OPT.pgbouncer} not installed`);
  const dir = await mkTempDir(`${name}-bench-`, RUN_AS);
  const port = await freePort();
  const ini = path.join(dir, 'pgbouncer.ini');
  await fsp.writeFile(path.join(dir, 'userlist.txt'), '"postgres" ""\n');
  await fsp.writeFile(
    ini,
    [
      '[databases]',
      `* = host=127.0.0.1 port=${primary.port}`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${path.join(dir, 'userlist.txt')}`,
      `pool_mode = ${transaction ? 'transaction' : 'session'}`,
      `max_client_conn = ${Math.max(500, maxClients + 100)}`,
      `default_pool_size = ${transaction ? poolSize : Math.max(64, maxClients)}`,
      'server_reset_query = DISCARD ALL',
      'ignore_startup_parameters = extra_float_digits',
      `logfile = ${path.join(dir, 'pgbouncer-file.log')}`,
      'log_connections = 0',
      'log_disconnections = 0',
      'log_pooler_errors = 1',
      'admin_users = postgres',
      '',
    ].join('\n'),
  );
  if (RUN_AS) for (const f of fs.readdirSync(dir)) fs.chownSync(path.join(dir, f), RUN_AS.uid, RUN_AS.gid);
  const p = new Proc(name, OPT.pgbouncer, [ini], { runAs: RUN_AS, logFile: path.join(dir, 'pgbouncer.out') });
  try {
    await waitReady(name, port, p.child);
  } catch (e) {
    await p.stop('SIGKILL', 1000);
    throw new Error(`${e.message}\n--- pgbouncer log ---\n${p.logTail()}`);
  }
  return { name, port, proc: p, dir, stop: () => stopAndClean(p, dir, 'SIGINT', 10_000) };
}

async function startPgpool(backends, maxClients, { name = 'pgpool', lb = false, extra = [] } = {}) {
  if (!fs.existsSync(OPT.pgpool)) throw new Error(`${OPT.pgpool} not installed`);
  const dir = await mkTempDir(`${name}-bench-`, RUN_AS);
  const port = await freePort();
  const pcpPort = await freePort();
  const conf = path.join(dir, 'pgpool.conf');
  const children = Math.max(40, maxClients + 8);
  await fsp.writeFile(
    conf,
    [
      "backend_clustering_mode = 'streaming_replication'",
      "listen_addresses = '127.0.0.1'",
      `port = ${port}`,
      `socket_dir = '${dir}'`,
      "pcp_listen_addresses = ''",
      `pcp_port = ${pcpPort}`,
      `pcp_socket_dir = '${dir}'`,
      `wd_ipc_socket_dir = '${dir}'`,
      ...backends.flatMap((b, i) => [
        `backend_hostname${i} = '${b.host}'`,
        `backend_port${i} = ${b.port}`,
        `backend_weight${i} = 1`,
        `backend_flag${i} = 'ALLOW_TO_FAILOVER'`,
      ]),
      `num_init_children = ${children}`,
      'max_pool = 4',
      'child_life_time = 0',
      'child_max_connections = 0',
      'connection_life_time = 0',
      'client_idle_limit = 0',
      `load_balance_mode = ${lb ? 'on' : 'off'}`,
      'sr_check_period = 0',
      "sr_check_user = 'postgres'",
      'health_check_period = 0',
      "health_check_user = 'postgres'",
      'enable_pool_hba = off',
      "pool_passwd = ''",
      'failover_on_backend_error = off',
      'use_watchdog = off',
      'memory_cache_enabled = off',
      'connection_cache = on',
      `pid_file_name = '${path.join(dir, 'pgpool.pid')}'`,
      `logdir = '${dir}'`,
      "log_destination = 'stderr'",
      'log_min_messages = warning',
      'log_connections = off',
      'log_statement = off',
      'log_per_node_statement = off',
      ...extra,
      '',
    ].join('\n'),
  );
  await fsp.writeFile(path.join(dir, 'pcp.conf'), '');
  await fsp.writeFile(path.join(dir, 'pool_hba.conf'), 'host all all 127.0.0.1/32 trust\n');
  if (RUN_AS) for (const f of fs.readdirSync(dir)) fs.chownSync(path.join(dir, f), RUN_AS.uid, RUN_AS.gid);
  const p = new Proc(
    name,
    OPT.pgpool,
    ['-n', '-f', conf, '-F', path.join(dir, 'pcp.conf'), '-a', path.join(dir, 'pool_hba.conf')],
    {
      runAs: RUN_AS,
      logFile: path.join(dir, 'pgpool.out'),
    },
  );
  try {
    await waitReady(name, port, p.child, 60_000);
  } catch (e) {
    await p.stop('SIGINT', 5000);
    throw new Error(`${e.message}\n--- pgpool log ---\n${p.logTail()}`);
  }
  return {
    name,
    port,
    proc: p,
    dir,
    children,
    selectCounts: lb ? () => selectCounts(port) : null,
    stop: () => stopAndClean(p, dir, 'SIGINT', 10_000),
  };
}

// ---------------------------------------------------------------------------
// pgbench

/** The mixed workload's script (written to a temp file by main()): one UPDATE, then N SELECTs of the same row. */
function mixedScript() {
  return [
    `\\set aid random(1, ${100000 * OPT.scale})`,
    '\\set delta random(-5000, 5000)',
    'UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;',
    ...Array.from({ length: OPT.mixedSelects }, () => 'SELECT abalance FROM pgbench_accounts WHERE aid = :aid;'),
    '',
  ].join('\n');
}
let mixedScriptFile = null;

function pgbenchArgs({ port, workload, mode, clients, duration, logPrefix = null }) {
  const a = [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '-U',
    'postgres',
    '-n',
    '-M',
    mode,
    '-c',
    String(clients),
    '-j',
    String(Math.min(clients, 2)),
    '-T',
    String(duration),
  ];
  if (workload === 'select' || workload === 'connect' || workload === 'latency') a.push('-S');
  if (workload === 'connect') a.push('-C');
  if (workload === 'latency') a.push('-l', `--log-prefix=${logPrefix}`);
  if (workload === 'mixed') a.push('-f', mixedScriptFile);
  a.push('postgres');
  return a;
}

function parsePgbench(out) {
  const m = (re) => {
    const x = re.exec(out);
    return x ? Number(x[1]) : null;
  };
  return {
    txns: m(/number of transactions actually processed:\s*(\d+)/),
    failed: m(/number of failed transactions:\s*(\d+)/) ?? 0,
    latencyMs: m(/latency average = ([\d.]+) ms/),
    connTimeMs: m(/average connection time = ([\d.]+) ms/),
    tps: m(/tps = ([\d.]+)/),
  };
}

/**
 * p50 / p99 / max of the per-transaction latencies pgbench -l wrote to `dir` (one file per thread:
 * `client_id transaction_no time script_no time_epoch time_us …`, time in µs; failed/skipped lines have no number).
 */
async function logPercentiles(dir) {
  const times = [];
  for (const f of await fsp.readdir(dir)) {
    const text = await fsp.readFile(path.join(dir, f), 'utf8');
    for (const line of text.split('\n')) {
      const t = Number(line.split(' ')[2]);
      if (line && Number.isFinite(t)) times.push(t);
    }
  }
  if (!times.length) return { latP50Ms: null, latP99Ms: null, latMaxMs: null, loggedTxns: 0 };
  const v = Float64Array.from(times).sort();
  const q = (p) => v[Math.min(v.length - 1, Math.floor(p * v.length))] / 1000;
  return {
    latP50Ms: round(q(0.5), 3),
    latP99Ms: round(q(0.99), 3),
    latMaxMs: round(v[v.length - 1] / 1000, 3),
    loggedTxns: v.length,
  };
}

/** Resident set size (MiB) of a process tree (for pgpool-II this counts shared pages once per process). */
function treeRssMb(rootPid) {
  let kb = 0;
  for (const st of processTree(rootPid)) {
    try {
      kb += Number(/VmRSS:\s*(\d+)/.exec(fs.readFileSync(`/proc/${st.pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return round(kb / 1024, 1);
}

/**
 * Established TCP connections from a process tree to `port` on 127.0.0.1 (its server connections): the tree's socket
 * inodes (/proc/<pid>/fd) matched against /proc/net/tcp{,6}.
 */
function treeConnsTo(rootPid, port) {
  const inodes = new Set();
  for (const st of processTree(rootPid)) {
    let fds = [];
    try {
      fds = fs.readdirSync(`/proc/${st.pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${st.pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  }
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10 || c[3] !== '01') continue; // 01 = ESTABLISHED
      if (c[2].endsWith(`:${hexPort}`) && inodes.has(c[9])) n++;
    }
  }
  return n;
}

/** Server connections a target holds to the primary: its sockets there; for direct, those of the client (`clientPid`). */
function serverConns(target, primary, clientPid) {
  const pid = target.proc?.pid ?? clientPid;
  return pid ? treeConnsTo(pid, primary.port) : null;
}

/**
 * One pgbench run against a target; measures the target's process CPU around it. With `primary` (txpool row), the
 * target's server connections and RSS are sampled half-way through the run.
 */
async function pgbenchRun(target, { workload, mode, clients, duration }, { primary = null } = {}) {
  const logDir = workload === 'latency' ? await mkTempDir('pgrelay-bench-lat-') : null;
  const args = pgbenchArgs({
    port: target.port,
    workload,
    mode,
    clients,
    duration,
    logPrefix: logDir ? path.join(logDir, 'lat') : null,
  });
  const pid = target.proc?.pid;
  const sel0 = target.selectCounts ? await target.selectCounts().catch(() => null) : null;
  const cpu0 = pid ? treeCpu(pid) : null;
  const t0 = process.hrtime.bigint();
  let benchPid = null;
  // Three samples (at 50, 70 and 90 % of -T), the largest of each kept: pgbench may still be connecting at the first.
  const midSample = primary
    ? (async () => {
        let conns = null;
        let rss = null;
        for (const at of [0.5, 0.2, 0.2]) {
          await sleep(duration * at * 1000);
          const c = serverConns(target, primary, benchPid);
          const m = pid ? treeRssMb(pid) : null;
          if (c !== null && (conns === null || c > conns)) conns = c;
          if (m !== null && (rss === null || m > rss)) rss = m;
        }
        return { conns, rss };
      })()
    : null;
  const r = await runCmd('pgbench', args, {
    timeoutMs: (duration + 60 + clients / 10) * 1000,
    onSpawn: (c) => {
      benchPid = c.pid;
    },
  });
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const mid = midSample ? await midSample : null;
  let pct = {};
  if (logDir) {
    pct = await logPercentiles(logDir).catch(() => ({}));
    await fsp.rm(logDir, { recursive: true, force: true }).catch(() => undefined);
  }
  const cpu1 = pid ? treeCpu(pid) : null;
  const sel1 = sel0 ? await target.selectCounts().catch(() => null) : null;
  const p = parsePgbench(r.stdout);
  const row = {
    target: target.name,
    workload,
    mode,
    clients,
    duration,
    ...p,
    wallS: round(wallS, 2),
    proxyCpuS: pid ? round(cpu1.total - cpu0.total, 3) : null,
    proxyUserS: pid ? round(cpu1.user - cpu0.user, 3) : null,
    proxySysS: pid ? round(cpu1.sys - cpu0.sys, 3) : null,
    cpuUsPerTxn: pid && p.txns ? round(((cpu1.total - cpu0.total) * 1e6) / p.txns, 2) : null,
    readsPerTxn: pid && p.txns ? round((cpu1.syscr - cpu0.syscr) / p.txns, 2) : null,
    writesPerTxn: pid && p.txns ? round((cpu1.syscw - cpu0.syscw) / p.txns, 2) : null,
    // Reads (SELECTs) each role served during the run, from SHOW pool_nodes select_cnt (load-balancing targets).
    primaryReads: sel1 ? sel1.primary - sel0.primary : null,
    standbyReads: sel1 ? sel1.standby - sel0.standby : null,
    ...pct,
    serverConns: mid ? mid.conns : null,
    proxyRssMb: mid ? mid.rss : null,
    exitCode: r.code,
    load1: round(os.loadavg()[0], 2),
    error: null,
  };
  if (r.code !== 0 || p.tps === null) {
    row.error = (
      r.stderr.trim().split('\n').slice(-5).join(' | ') ||
      `pgbench exit ${r.code}: ${r.stdout.trim().split('\n').slice(-4).join(' | ')}`
    ).slice(0, 500);
  }
  if (target.proc && !target.proc.alive) row.error = `${target.name} died during the run: ${target.proc.logTail(500)}`;
  return row;
}

const WIRE_CLIENT = path.join(HERE, 'wire-client.mjs');

/**
 * One stream cell through a target (bench/wire-client.mjs in its own process, reading or writing at full speed):
 * result = a SELECT of OPT.streamBytes, copy-out = COPY (that SELECT) TO STDOUT, copy-in = COPY bench_copy_in FROM
 * STDIN of as many bytes (the table is truncated afterwards). MB/s and proxy CPU ms per MiB.
 */
async function streamRun(target, { workload, mode, clients }, primary) {
  const pid = target.proc?.pid;
  const cpu0 = pid ? treeCpu(pid) : null;
  const spec = {
    mode,
    port: target.port,
    bytes: OPT.streamBytes,
    rowBytes: OPT.streamRowBytes,
    table: 'bench_copy_in',
  };
  const r = await runCmd(process.execPath, [WIRE_CLIENT, JSON.stringify(spec)], {
    timeoutMs: 120_000 + (OPT.streamBytes / 2 ** 20) * 1000,
  });
  const cpu1 = pid ? treeCpu(pid) : null;
  let o = null;
  try {
    o = JSON.parse(r.stdout.trim().split('\n').pop());
  } catch {
    // reported below
  }
  if (mode === 'copy-in') await psqlOn(primary.port, 'TRUNCATE bench_copy_in').catch((e) => log(e.message));
  const mib = o?.bytes ? o.bytes / 2 ** 20 : null;
  const row = {
    target: target.name,
    workload,
    mode,
    clients,
    duration: null,
    bytes: o?.bytes ?? null,
    seconds: o?.seconds ? round(o.seconds, 3) : null,
    mbPerS: mib && o.seconds ? round(mib / o.seconds, 1) : null,
    proxyCpuS: pid ? round(cpu1.total - cpu0.total, 3) : null,
    proxyUserS: pid ? round(cpu1.user - cpu0.user, 3) : null,
    proxySysS: pid ? round(cpu1.sys - cpu0.sys, 3) : null,
    cpuMsPerMb: pid && mib ? round(((cpu1.total - cpu0.total) * 1000) / mib, 2) : null,
    exitCode: r.code,
    load1: round(os.loadavg()[0], 2),
    error: null,
  };
  if (r.code !== 0 || !o || o.error || !o.bytes)
    row.error = (o?.error ?? (r.stderr.trim().split('\n').slice(-3).join(' | ') || `exit ${r.code}`)).slice(0, 500);
  if (target.proc && !target.proc.alive) row.error = `${target.name} died during the run: ${target.proc.logTail(500)}`;
  return row;
}

/**
 * The idle cell: `clients` connections opened through the target (bench/wire-client.mjs idle: start-up and trust
 * authentication, 100 at a time) and held; once all are ready (and 1 s later), the proxy's RSS and its server
 * connections to the primary.
 */
async function idleRun(target, { workload, mode, clients }, primary) {
  const pid = target.proc?.pid;
  const rss0 = pid ? treeRssMb(pid) : null;
  const cpu0 = pid ? treeCpu(pid) : null;
  const conns0 = serverConns(target, primary, null);
  // application_name = pgbench, as the pgbench cells' clients: pgrelay keys its server pools by every start-up
  // parameter, so another name would get a pool of its own beside the one pgbench's runs left.
  const spec = { mode: 'idle', port: target.port, clients, concurrency: 100, applicationName: 'pgbench' };
  const child = spawn(process.execPath, [WIRE_CLIENT, JSON.stringify(spec)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: cleanEnv(),
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((r) => child.once('exit', r));
  const first = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ error: `not all ${clients} clients ready after 300 s` }), 300_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const nl = stdout.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(stdout.slice(0, nl)));
        } catch {
          resolve({ error: stdout.slice(0, 300) });
        }
      }
    });
    exited.then(() => {
      clearTimeout(timer);
      resolve({ error: `client exited: ${stderr.slice(-300)}` });
    });
  });
  await sleep(1000);
  const rss1 = pid ? treeRssMb(pid) : null;
  const cpu1 = pid ? treeCpu(pid) : null;
  const conns = serverConns(target, primary, child.pid);
  child.stdin.end();
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(killer);
  const row = {
    target: target.name,
    workload,
    mode,
    clients,
    duration: null,
    idleReady: first.ready ?? null,
    idleFailed: first.failed ?? null,
    idleOpenS: first.seconds !== undefined ? round(first.seconds, 2) : null,
    clientRssMb: first.clientRssMb !== undefined ? round(first.clientRssMb, 1) : null,
    proxyRssMbBefore: rss0,
    proxyRssMb: rss1,
    serverConnsBefore: conns0,
    serverConns: conns,
    proxyCpuS: pid ? round(cpu1.total - cpu0.total, 3) : null,
    load1: round(os.loadavg()[0], 2),
    error: first.error ?? (first.failed ? `${first.failed} clients failed: ${first.firstError}` : null),
  };
  if (target.proc && !target.proc.alive) row.error = `${target.name} died during the run: ${target.proc.logTail(500)}`;
  return row;
}

function psqlOn(port, sql) {
  return runCmd(path.join(PG_BIN, 'psql'), ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    timeoutMs: 60_000,
    envExtra: pgEnv(port),
  }).then((r) => {
    if (r.code !== 0) throw new Error(`psql ${sql}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  });
}

/** Busy and total CPU time of the machine so far (/proc/stat, clock ticks). */
function machineTicks() {
  const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const all = v.reduce((a, b) => a + b, 0);
  // idle and iowait are not busy.
  return { busy: all - v[3] - (v[4] ?? 0), all };
}

/** How long the machine is watched before each cell, while the benchmark itself runs nothing (after a settle). */
const IDLE_GAP_MS = 500;
const IDLE_SETTLE_MS = 250;

/**
 * The share of the machine's CPU that was busy during IDLE_GAP_MS while the benchmark ran nothing (its targets
 * started and idle): work that is not the benchmark's, plus what its last run left (PostgreSQL's background
 * writers, autovacuum): 1–5 % on the idle 2-core machine. The load average cannot tell other work apart from
 * the benchmark's own clients, which alone exceed the CPU count in the 32- to 1,000-client cells.
 */
async function otherWork() {
  await sleep(IDLE_SETTLE_MS);
  const t0 = machineTicks();
  await sleep(IDLE_GAP_MS);
  const t1 = machineTicks();
  return t1.all > t0.all ? round((100 * (t1.busy - t0.busy)) / (t1.all - t0.all), 1) : null;
}

/** Runs one cell of any workload through a target; `otherBusyPct`: otherWork() right before it. */
async function runCell(target, cell, primary, row) {
  const otherBusyPct = await otherWork();
  let r;
  if (cell.workload === 'stream') r = await streamRun(target, cell, primary);
  else if (cell.workload === 'idle') r = await idleRun(target, cell, primary);
  else r = await pgbenchWithRetry(target, cell, cellDuration(cell), { primary: row === 'txpool' ? primary : null });
  return { ...r, otherBusyPct };
}

/**
 * A pgbench run that ended before its clients had all connected (exit 0, 0 transactions: opening hundreds of
 * connections on a loaded machine can take longer than -T) runs once more, twice as long.
 */
async function pgbenchWithRetry(target, cell, duration, opts) {
  const r = await pgbenchRun(target, { ...cell, duration }, opts);
  if (r.exitCode !== 0 || r.txns !== 0) return r;
  log(
    `${target.name} ${cell.workload} c=${cell.clients}: no transaction in ${duration} s (still connecting); once more with -T ${2 * duration}`,
  );
  return { ...(await pgbenchRun(target, { ...cell, duration: 2 * duration }, opts)), retriedAfterS: duration };
}

/**
 * Seconds of a pgbench run: BENCH_DURATION, plus 1 s per 25 clients (pgbench's -T includes the time it takes
 * to open its connections, seconds at 1,000 clients; its TPS excludes that time).
 */
function cellDuration(cell) {
  return OPT.duration + Math.floor(cell.clients / 25);
}

const round = (x, d) =>
  x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d;

// ---------------------------------------------------------------------------
// Output

const fmt = (x, d = 0) => (x === null || x === undefined ? '-' : Number(x).toFixed(d));
const WL_NAME = {
  select: 'select-only (-S)',
  tpcb: 'TPC-B-like',
  connect: 'connect (-C -S)',
  latency: 'select-only (-S -l)',
  mixed: `mixed (1 UPDATE + ${OPT.mixedSelects} SELECT)`,
};

function table(headers, rows, align) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) =>
    '| ' +
    cells.map((c, i) => (align?.[i] === 'l' ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join(' | ') +
    ' |';
  const sep = `|${w.map((x, i) => (align?.[i] === 'l' ? `:${'-'.repeat(x + 1)}` : `${'-'.repeat(x + 1)}:`)).join('|')}|`;
  return [line(headers), sep, ...rows.map(line)].join('\n');
}

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const h = v.length >> 1;
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
};

/**
 * The successful runs of one target in one cell, as one run: the median of every number over the repeats
 * (BENCH_REPEAT), with `n`, `tpsMin`, `tpsMax`. A single run is returned as is.
 */
function aggregate(results, t, w, m, c) {
  const runs = results.filter((r) => r.target === t && r.workload === w && r.mode === m && r.clients === c && !r.error);
  if (runs.length <= 1) return runs[0] ? { ...runs[0], n: 1, tpsMin: runs[0].tps, tpsMax: runs[0].tps } : undefined;
  const out = { ...runs[0], n: runs.length };
  for (const k of Object.keys(runs[0]))
    if (typeof runs[0][k] === 'number' && k !== 'clients' && k !== 'rep') out[k] = median(runs.map((r) => r[k]));
  out.tpsMin = Math.min(...runs.map((r) => r.tps));
  out.tpsMax = Math.max(...runs.map((r) => r.tps));
  return out;
}

/** Per-round TPS ratios target / ref in one cell (runs of the same round ran back to back). */
function roundRatios(results, t, ref, w, m, c) {
  const pick = (x, rep) =>
    results.find(
      (r) => r.target === x && r.workload === w && r.mode === m && r.clients === c && r.rep === rep && !r.error,
    );
  const out = [];
  for (const r of results) {
    if (r.target !== t || r.workload !== w || r.mode !== m || r.clients !== c || r.error) continue;
    const b = pick(ref, r.rep);
    if (b?.tps && r.tps) out.push(r.tps / b.tps);
  }
  return out;
}

/** Above this mean share of busy CPU between runs, the results say that other work was running. */
const OTHER_WORK_PCT = 25;

function loadLine(results, meta) {
  const loads = results.map((r) => r.load1).filter((x) => typeof x === 'number');
  const other = results.map((r) => r.otherBusyPct).filter((x) => typeof x === 'number');
  if (!loads.length && !other.length) return null;
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const parts = [];
  if (loads.length)
    parts.push(
      `Machine load (1-min loadavg at the end of each run, the benchmark's own clients included): mean ${mean(loads).toFixed(1)}, max ${Math.max(...loads).toFixed(1)} on ${meta.cpus} CPUs.`,
    );
  if (other.length) {
    const avg = mean(other);
    parts.push(
      `Other work (CPU busy during ${IDLE_GAP_MS} ms before each run, while the benchmark ran nothing): mean ${avg.toFixed(1)} %, max ${Math.max(...other).toFixed(1)} %` +
        (avg > OTHER_WORK_PCT ? ' — other work was running; expect noise.' : '.'),
    );
  }
  return parts.join(' ');
}

const ROW_TITLE = {
  mixed: 'Mixed read/write: read-your-writes (load balancing on, primary + 2 standbys, weights 1:1:1)',
  backpressure: 'Backpressure: pgrelay vs the baseline build (primary only)',
  txpool:
    'Transaction pooling: pgrelay pool_mode = transaction vs PgBouncer (transaction mode), same pool size (primary only)',
};

/**
 * A row's table, one line per cell × target: median TPS over the rounds (min–max), the median of the per-round
 * TPS ratios to `ref` (min–max), latency, proxy CPU µs/txn, and the share of reads the standbys served.
 */
function rowReport(row, results, meta, ref) {
  const res = results.filter((r) => r.row === row);
  const targets = meta.rowTargets[row] ?? [];
  const out = [`## ${ROW_TITLE[row]}`, ''];
  const info = meta.rowInfo[row];
  if (info) out.push(info, '');
  const ll = loadLine(res, meta);
  if (ll) out.push(ll, '');
  const cells = [];
  for (const r of res)
    if (
      r.workload !== 'idle' &&
      !cells.some((x) => x.workload === r.workload && x.mode === r.mode && x.clients === r.clients)
    )
      cells.push({ workload: r.workload, mode: r.mode, clients: r.clients });
  const hdr = [
    'workload',
    'mode',
    'clients',
    'target',
    'runs',
    'TPS',
    'TPS min–max',
    `vs ${ref}`,
    'ratio min–max',
    'lat ms',
    'CPU µs/txn',
  ];
  const shares = row === 'mixed';
  if (shares) hdr.push('reads on standbys');
  const pool = row === 'txpool';
  if (pool) hdr.push('server conns', 'proxy RSS MB');
  const rows = [];
  for (const c of cells) {
    for (const t of targets) {
      if (!TARGET_WORKLOADS[t]?.includes(c.workload)) continue;
      const a = aggregate(res, t, c.workload, c.mode, c.clients);
      const failed = res.filter(
        (r) => r.target === t && r.workload === c.workload && r.mode === c.mode && r.clients === c.clients && r.error,
      ).length;
      if (!a && !failed) continue;
      const ratios = t === ref ? [] : roundRatios(res, t, ref, c.workload, c.mode, c.clients);
      const runs = res.filter(
        (r) => r.target === t && r.workload === c.workload && r.mode === c.mode && r.clients === c.clients && !r.error,
      );
      const sb = runs.reduce((n, r) => n + (r.standbyReads ?? 0), 0);
      const pr = runs.reduce((n, r) => n + (r.primaryReads ?? 0), 0);
      const share =
        t === 'direct'
          ? '0 % (primary)'
          : runs.some((r) => r.standbyReads !== null && r.standbyReads !== undefined) && sb + pr > 0
            ? `${((100 * sb) / (sb + pr)).toFixed(1)} %`
            : '-';
      rows.push([
        WL_NAME[c.workload],
        c.mode,
        c.clients,
        t,
        failed ? `${a?.n ?? 0} (+${failed} FAIL)` : a.n,
        fmt(a?.tps),
        a && a.n > 1 ? `${fmt(a.tpsMin)}–${fmt(a.tpsMax)}` : '',
        t === ref ? '1' : ratios.length ? median(ratios).toFixed(3) : '-',
        ratios.length > 1 ? `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}` : '',
        fmt(a?.latencyMs, 3),
        fmt(a?.cpuUsPerTxn, 1),
        ...(shares ? [share] : []),
        ...(pool ? [fmt(a?.serverConns), fmt(a?.proxyRssMb, 1)] : []),
      ]);
    }
  }
  out.push(table(hdr, rows, ['l', 'l', 'r', 'l']));
  out.push('');
  const idle = res.filter((r) => r.workload === 'idle');
  if (idle.length) {
    out.push(
      `### Idle clients (${idle[0].clients} connections opened, 100 start-ups at a time, and held; RSS and server connections 1 s after the last was ready)`,
      '',
    );
    const rows2 = [];
    for (const t of targets) {
      const a = aggregate(res, t, 'idle', '-', idle[0].clients);
      const failed = idle.filter((r) => r.target === t && r.error);
      if (!a && !failed.length) continue;
      rows2.push([
        t,
        a ? a.idleReady : `FAIL: ${failed[0].error.slice(0, 120)}`,
        fmt(a?.idleOpenS, 1),
        fmt(a?.proxyRssMbBefore, 1),
        fmt(a?.proxyRssMb, 1),
        a?.proxyRssMb && a?.idleReady ? fmt(((a.proxyRssMb - a.proxyRssMbBefore) * 1024) / a.idleReady, 1) : '-',
        `${fmt(a?.serverConnsBefore)} → ${fmt(a?.serverConns)}`,
        fmt(a?.proxyCpuS, 2),
      ]);
    }
    out.push(
      table(
        [
          'target',
          'clients ready',
          'open s',
          'proxy RSS MB before',
          'proxy RSS MB',
          'KB per client',
          'server conns before → with the idle clients',
          'proxy CPU s',
        ],
        rows2,
        ['l'],
      ),
    );
    out.push('');
  }
  return out.join('\n');
}

/** The main row's latency cells: p50 / p99 (ms) of every transaction (pgbench -l) per target, side by side. */
function latencySection(results, targets) {
  const cells = [];
  for (const r of results)
    if (r.workload === 'latency' && !cells.some((x) => x.mode === r.mode && x.clients === r.clients))
      cells.push({ mode: r.mode, clients: r.clients });
  if (!cells.length) return [];
  const out = [
    '## Latency percentiles: select-only, per-transaction log (pgbench -l)',
    '',
    'p50 / p99 of the latency of every transaction of the run in ms (from the pgbench -l files), TPS in brackets.',
    '',
  ];
  const rows = [];
  for (const c of cells) {
    const row = ['select-only (-S -l)', c.mode, c.clients];
    for (const t of targets) {
      const a = aggregate(results, t, 'latency', c.mode, c.clients);
      const failed = results.some(
        (r) => r.target === t && r.workload === 'latency' && r.mode === c.mode && r.clients === c.clients && r.error,
      );
      row.push(a ? `${fmt(a.latP50Ms, 2)} / ${fmt(a.latP99Ms, 2)} (${fmt(a.tps)})` : failed ? 'FAIL' : '');
    }
    rows.push(row);
  }
  out.push(table(['workload', 'mode', 'clients', ...targets], rows, ['l', 'l']), '');
  return out;
}

/** The main row's connect cells: new connections per second (pgbench -C: one connection per transaction). */
function connectSection(results, targets) {
  const clients = [...new Set(results.filter((r) => r.workload === 'connect').map((r) => r.clients))];
  if (!clients.length) return [];
  const out = [
    '## New connections per second (pgbench -C -S: a new connection for every transaction)',
    '',
    'connections/s (= pgbench TPS with -C), average connection time in ms, proxy CPU µs per connection in brackets.',
    '',
  ];
  const rows = [];
  for (const c of clients) {
    const row = ['connect (-C -S)', c];
    for (const t of targets) {
      if (!TARGET_WORKLOADS[t]?.includes('connect')) {
        row.push('');
        continue;
      }
      const a = aggregate(results, t, 'connect', 'simple', c);
      const failed = results.some((r) => r.target === t && r.workload === 'connect' && r.clients === c && r.error);
      row.push(
        a
          ? `${fmt(a.tps)} / ${fmt(a.connTimeMs, 2)} ms${a.cpuUsPerTxn !== null ? ` (${fmt(a.cpuUsPerTxn, 0)})` : ''}`
          : failed
            ? 'FAIL'
            : '',
      );
    }
    rows.push(row);
  }
  out.push(table(['workload', 'clients', ...targets], rows, ['l']), '');
  return out;
}

const STREAM_NAME = {
  result: 'SELECT result → client',
  'copy-out': 'COPY TO STDOUT',
  'copy-in': 'COPY FROM STDIN',
};

/** The main row's stream cells: MB/s and proxy CPU ms per MiB, per target. */
function streamSection(results, targets) {
  const modes = [...new Set(results.filter((r) => r.workload === 'stream').map((r) => r.mode))];
  if (!modes.length) return [];
  const out = [
    `## Streaming: ${fmt(OPT.streamBytes / 2 ** 20)} MiB through one connection (rows of ${OPT.streamRowBytes} bytes)`,
    '',
    'MB/s (MiB of protocol bytes the client read or wrote / s, client reading or writing at full speed), proxy CPU ms per MiB in brackets.',
    '',
  ];
  const rows = [];
  for (const m of modes) {
    const row = [STREAM_NAME[m] ?? m];
    for (const t of targets) {
      const a = aggregate(results, t, 'stream', m, 1);
      const failed = results.some((r) => r.target === t && r.workload === 'stream' && r.mode === m && r.error);
      row.push(
        a ? `${fmt(a.mbPerS, 1)}${a.cpuMsPerMb !== null ? ` (${fmt(a.cpuMsPerMb, 2)})` : ''}` : failed ? 'FAIL' : '',
      );
    }
    rows.push(row);
  }
  out.push(table(['stream', ...targets], rows, ['l']), '');
  return out;
}

/** One line describing the machine and the software versions. */
function machineLine(meta) {
  return (
    `Machine: ${meta.cpuModel}, ${meta.cpus} cores, ${meta.memGb} GB memory, ${meta.os}` +
    `; Node ${meta.node}, PostgreSQL ${meta.postgres ?? '?'}, ${meta.pgbench}` +
    `, ${meta.versions.pgbouncer ?? 'PgBouncer not installed'}, ${meta.versions.pgpool ?? 'pgpool-II not installed'}` +
    `; pgrelay ${meta.commit}.`
  );
}

/** Every run as a TSV line (machine description and options as leading # comments). */
function tsvReport(results, meta) {
  const cols = [];
  for (const r of results) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const cell = (v) => (v === null || v === undefined ? '' : String(v).replace(/[\t\n]/g, ' '));
  return [
    `# ${machineLine(meta)}`,
    `# started ${meta.startedAt}, finished ${meta.finishedAt}; ${meta.quick ? 'quick mode; ' : ''}uptime at the start: ${meta.uptimeStart}`,
    `# options: ${JSON.stringify(meta.options)}`,
    cols.join('\t'),
    ...results.map((r) => cols.map((k) => cell(r[k])).join('\t')),
    '',
  ].join('\n');
}

function buildReport(allResults, meta, checks, profileText) {
  const mainAll = allResults.filter((r) => r.row === 'main');
  // The pgbench tables below: everything but the stream cells (their own table).
  const results = mainAll.filter((r) => r.workload !== 'stream');
  const mainTargets = meta.rowTargets.main ?? [];
  const get = (t, w, m, c) => aggregate(results, t, w, m, c);
  const ratio = (a, b) => (a && b && a.tps && b.tps ? (a.tps / b.tps).toFixed(2) : '-');
  const cells = [];
  for (const r of results) {
    if (!cells.some((x) => x.workload === r.workload && x.mode === r.mode && x.clients === r.clients))
      cells.push({ workload: r.workload, mode: r.mode, clients: r.clients });
  }
  const out = [];
  out.push(`# pgrelay benchmark ${meta.startedAt}${OPT.quick ? ' (quick mode)' : ''}`);
  out.push('');
  out.push(machineLine(meta), '');
  out.push(
    `scale ${OPT.scale}, ${OPT.duration} s per run, ${OPT.repeat} round(s) per cell ` +
      `(targets interleaved, order rotated each round; tables show medians), pgbench -n -j min(clients,2); ` +
      `rows: ${OPT.rows.join(', ')}; targets: ${meta.targets.join(', ')}.`,
  );
  {
    const ll = loadLine(allResults, meta);
    if (ll) out.push(ll);
    out.push(`uptime at the start: ${meta.uptimeStart}; at the end: ${meta.uptimeEnd}.`);
  }
  if (meta.skipped.length)
    out.push(`Skipped: ${meta.skipped.map((s) => `${s.target} (${s.reason.split('\n')[0]})`).join('; ')}.`);
  out.push('');
  if (OPT.quick)
    out.push(
      '**Quick mode** (`--quick`): short runs at reduced sizes to check that every row works; the figures are not measurements.',
      '',
    );
  for (const [row, ref] of [
    ['mixed', 'pgrelay-ryw-off'],
    ['backpressure', 'pgrelay-base'],
    ['txpool', 'pgbouncer-tx'],
  ])
    if (allResults.some((r) => r.row === row)) out.push(rowReport(row, allResults, meta, ref));
  out.push(...latencySection(mainAll, mainTargets));
  out.push(...connectSection(mainAll, mainTargets));
  out.push(...streamSection(mainAll, mainTargets));
  if (!results.length) {
    const errors = allResults.filter((r) => r.error);
    if (errors.length) {
      out.push('## Failed runs', '');
      for (const e of errors)
        out.push(`- ${e.row} ${e.target} ${e.workload} ${e.mode} c=${e.clients}: ${e.error.replace(/\n/g, ' ')}`);
      out.push('');
    }
    return out.join('\n');
  }

  // 1. pgrelay vs direct, absolute + ratios.
  out.push('## pgrelay vs direct');
  out.push('');
  out.push(
    'TPS = transactions/s (pgbench, without initial connection time; with -C including reconnects), lat = pgbench latency average (ms), ',
  );
  out.push(
    'conn = pgbench average connection time (ms, -C only), CPU = pgrelay process CPU µs per transaction, sys % = kernel share of that CPU, ',
  );
  out.push(
    'reads / writes per txn = read() and write()/writev() syscalls of pgrelay per transaction (/proc/<pid>/io syscr/syscw).',
  );
  out.push('');
  {
    const hdr = [
      'workload',
      'mode',
      'clients',
      'direct TPS',
      'direct lat',
      'pgrelay TPS',
      'pgrelay lat',
      'TPS ratio',
      'lat ratio',
      'pgrelay CPU µs/txn',
      'sys %',
      'reads / writes per txn',
      'direct conn',
      'pgrelay conn',
    ];
    const rows = [];
    for (const c of cells) {
      const d = get('direct', c.workload, c.mode, c.clients);
      const p = get('pgrelay', c.workload, c.mode, c.clients);
      if (!d && !p) continue;
      rows.push([
        WL_NAME[c.workload],
        c.mode,
        c.clients,
        fmt(d?.tps),
        fmt(d?.latencyMs, 3),
        fmt(p?.tps),
        fmt(p?.latencyMs, 3),
        ratio(p, d),
        d?.latencyMs && p?.latencyMs ? (p.latencyMs / d.latencyMs).toFixed(2) : '-',
        fmt(p?.cpuUsPerTxn, 1),
        p?.proxyCpuS ? `${Math.round((100 * p.proxySysS) / p.proxyCpuS)}%` : '-',
        p?.readsPerTxn !== null && p?.readsPerTxn !== undefined
          ? `${fmt(p.readsPerTxn, 1)} / ${fmt(p.writesPerTxn, 1)}`
          : '-',
        c.workload === 'connect' ? fmt(d?.connTimeMs, 3) : '',
        c.workload === 'connect' ? fmt(p?.connTimeMs, 3) : '',
      ]);
    }
    out.push(table(hdr, rows, ['l', 'l']));
  }
  out.push('');

  // 2. All proxies: TPS ratio vs direct side by side.
  const proxies = mainTargets.filter((t) => t !== 'direct');
  if (proxies.length) {
    out.push('## All proxies: TPS ratio vs direct (CPU µs/txn of the proxy process tree in brackets)');
    out.push('');
    const hdr = ['workload', 'mode', 'clients', 'direct TPS', ...proxies];
    const rows = [];
    for (const c of cells) {
      const d = get('direct', c.workload, c.mode, c.clients);
      const row = [WL_NAME[c.workload], c.mode, c.clients, fmt(d?.tps)];
      let any = false;
      for (const t of proxies) {
        const p = get(t, c.workload, c.mode, c.clients);
        const failed = results.find(
          (r) => r.target === t && r.workload === c.workload && r.mode === c.mode && r.clients === c.clients && r.error,
        );
        if (p) any = true;
        row.push(p ? `${ratio(p, d)} (${fmt(p.cpuUsPerTxn, 1)})` : failed ? 'FAIL' : '');
      }
      if (any) rows.push(row);
    }
    out.push(table(hdr, rows, ['l', 'l']));
    out.push('');
    out.push('## All targets: absolute TPS / latency (ms)');
    out.push('');
    const hdr2 = ['workload', 'mode', 'clients', ...mainTargets];
    const rows2 = [];
    for (const c of cells) {
      const row = [WL_NAME[c.workload], c.mode, c.clients];
      for (const t of mainTargets) {
        const p = get(t, c.workload, c.mode, c.clients);
        row.push(
          p
            ? `${fmt(p.tps)} / ${fmt(p.latencyMs, 3)}` +
                (c.workload === 'connect' ? ` / conn ${fmt(p.connTimeMs, 3)}` : '')
            : '',
        );
      }
      rows2.push(row);
    }
    out.push(table(hdr2, rows2, ['l', 'l']));
    out.push('');
  }

  // 3. Targets.
  if (checks.length) {
    out.push('## Targets (select-only, 8 clients)');
    out.push('');
    for (const c of checks) out.push(`- ${c.ok ? 'PASS' : 'FAIL'} ${c.what}: ${c.value}`);
    out.push('');
  }

  const errors = allResults.filter((r) => r.error);
  if (errors.length) {
    out.push('## Failed runs');
    out.push('');
    for (const e of errors)
      out.push(`- ${e.row} ${e.target} ${e.workload} ${e.mode} c=${e.clients}: ${e.error.replace(/\n/g, ' ')}`);
    out.push('');
  }
  if (profileText) {
    out.push('## CPU profile of pgrelay');
    out.push('');
    out.push('```');
    out.push(profileText.trimEnd());
    out.push('```');
    out.push('');
  }
  return out.join('\n');
}

function targetChecks(results) {
  const checks = [];
  if (!results.some((r) => r.target === 'pgrelay' && r.workload === 'select')) return checks;
  for (const mode of OPT.modes) {
    const d = aggregate(results, 'direct', 'select', mode, 8);
    const p =
      aggregate(results, 'pgrelay', 'select', mode, 8) ??
      results.find((r) => r.target === 'pgrelay' && r.workload === 'select' && r.mode === mode && r.clients === 8);
    if (!p) continue;
    if (d) {
      const ratio = p.error || !p.tps ? 0 : p.tps / d.tps;
      checks.push({
        what: `TPS pgrelay/direct ≥ 0.60, -M ${mode}`,
        value: p.error ? 'run failed' : ratio.toFixed(2),
        ok: ratio >= 0.6,
      });
    }
    checks.push({
      what: `pgrelay CPU < 15 µs/txn, -M ${mode}`,
      value: p.cpuUsPerTxn === null ? 'n/a' : `${p.cpuUsPerTxn.toFixed(1)} µs`,
      ok: p.cpuUsPerTxn !== null && p.cpuUsPerTxn < 15,
    });
  }
  return checks;
}

// ---------------------------------------------------------------------------
// Main

async function main() {
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:]/g, '-').replace(/\..*/, '');
  if (!fs.existsSync(path.join(DIST, 'cli.js'))) die('dist/ missing: run `npm run build` first');
  if (!fs.existsSync(path.join(DEV_DIST, 'devcluster.js'))) die('dev/dist/ missing: run `npm run build:dev` first');
  const { DevCluster } = await import(path.join(DEV_DIST, 'devcluster.js'));

  const plans = Object.fromEntries(OPT.rows.map((row) => [row, rowPlan(row)]));
  // A row left with no proxy by BENCH_ONLY is not run (BENCH_ONLY=direct,pgrelay keeps to the main matrix).
  for (const row of [...OPT.rows])
    if (!plans[row].targets.some((t) => t !== 'direct') || !plans[row].cells.length) {
      log(`row ${row}: no proxy target or no cell selected, not run`);
      OPT.rows.splice(OPT.rows.indexOf(row), 1);
    }
  // The txpool row's many clients: every process (pgbench, the idle client, PgBouncer, pgrelay) needs a descriptor each.
  if (OPT.rows.includes('txpool')) {
    const need = Math.max(OPT.idleClients, ...OPT.txClients) + 200;
    const limit = Number(/Max open files\s+(\d+)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? Infinity);
    if (limit < need)
      die(
        `the open-files limit (ulimit -n) is ${limit}; the txpool row needs ${need} ` +
          `(BENCH_IDLE_CLIENTS=${OPT.idleClients}, BENCH_TX_CLIENTS=${OPT.txClients}): run \`ulimit -n ${Math.max(need, 20000)}\` first, or lower them`,
      );
  }
  const uptime = () => {
    try {
      return execFileSync('uptime', { encoding: 'utf8' }).trim();
    } catch {
      return `loadavg ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}`;
    }
  };
  const git = (args) => {
    try {
      return execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8' }).trim();
    } catch {
      return '?';
    }
  };
  const meta = {
    startedAt: startedAt.toISOString(),
    host: os.hostname(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model?.trim() ?? '?',
    memGb: round(os.totalmem() / 2 ** 30, 1),
    quick: OPT.quick,
    os: `${os.type()} ${os.release()}`,
    node: process.versions.node,
    pgbench: execFileSync('pgbench', ['--version'], { encoding: 'utf8' }).trim(),
    commit: `${git(['rev-parse', '--short=12', 'HEAD'])}${git(['status', '--porcelain', '--untracked-files=no']) ? ' (+ local changes)' : ''}`,
    options: { ...OPT, resultsDir: undefined },
    uptimeStart: uptime(),
    loadavgStart: os.loadavg().map((x) => round(x, 2)),
    targets: [],
    rowTargets: {},
    rowInfo: {},
    skipped: [],
    versions: {},
  };
  log(
    `options: rows=${OPT.rows} repeat=${OPT.repeat} duration=${OPT.duration}s scale=${OPT.scale}; ` +
      OPT.rows.map((r) => `${r}: ${plans[r].targets.join(',')} × ${plans[r].cells.length} cells`).join('; '),
  );

  let baseline = null;
  if (OPT.baseline && OPT.rows.some((r) => plans[r].targets.includes('pgrelay-base'))) {
    baseline = await resolveBaseline(OPT.baseline);
    meta.baseline = baseline.ref;
    log(`baseline: ${baseline.cli}`);
  }
  const tmp = await mkTempDir('pgrelay-bench-scripts-');
  mixedScriptFile = path.join(tmp, 'mixed.sql');
  await fsp.writeFile(mixedScriptFile, mixedScript());

  const results = [];
  let profileText = null;
  let profileJson = null;
  let interrupted = false;
  const onSig = () => {
    interrupted = true;
    log('interrupted: finishing the current run, then cleaning up (Ctrl-C again to abort)');
    process.once('SIGINT', () => process.exit(130));
  };
  process.once('SIGINT', onSig);
  const totalRuns = OPT.rows.reduce(
    (n, row) =>
      n +
      OPT.repeat *
        plans[row].cells.reduce(
          (k, c) => k + plans[row].targets.filter((t) => TARGET_WORKLOADS[t].includes(c.workload)).length,
          0,
        ),
    0,
  );
  log(
    `about ${totalRuns} runs of ${OPT.duration} s (~${Math.ceil((totalRuns * (OPT.duration + 1.5)) / 60)} min + start-up)`,
  );
  let done = 0;
  try {
    for (const row of OPT.rows) {
      if (interrupted) break;
      const plan = plans[row];
      const rowTargetsRan = (meta.rowTargets[row] = []);
      // Most concurrent pgbench clients of the row (the idle cell is proxies only, never direct).
      const maxClients = Math.max(...plan.cells.filter((c) => c.workload !== 'idle').map((c) => c.clients), 8);
      // Session-pooling proxies keep up to maxClients backends each after their runs (pgpool-II maxClients + 8):
      // room for all of them besides direct's own.
      const pooling = plan.targets.filter((t) => t !== 'direct' && t !== 'pipe' && !TX_TARGETS.includes(t)).length;
      const txPooling = plan.targets.filter((t) => TX_TARGETS.includes(t)).length;
      const maxConnections = Math.max(200, (pooling + 1) * (maxClients + 8) + txPooling * OPT.txPoolSize + 50);
      log(`row ${row}: starting DevCluster (primary + ${plan.standbys} standbys, max_connections = ${maxConnections})`);
      const cluster = await DevCluster.start({
        standbys: plan.standbys,
        extraConf: { max_connections: String(maxConnections) },
      });
      const targets = [];
      try {
        const primary = cluster.nodes[0];
        meta.postgres = await cluster.psql(0, 'SHOW server_version');
        log(`cluster up: ${cluster.nodes.map((n) => `node${n.id}=${n.port}`).join(' ')}; pgbench -i -s ${OPT.scale}`);
        const init = await runCmd(
          'pgbench',
          [
            '-i',
            '-q',
            '-s',
            String(OPT.scale),
            '-h',
            '127.0.0.1',
            '-p',
            String(primary.port),
            '-U',
            'postgres',
            'postgres',
          ],
          { timeoutMs: 600_000 },
        );
        if (init.code !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
        if (plan.cells.some((c) => c.workload === 'stream' && c.mode === 'copy-in'))
          await psqlOn(primary.port, 'CREATE UNLOGGED TABLE bench_copy_in (t text)');
        if (plan.standbys > 0) await cluster.waitForCatchup(120_000);

        const stmtLb = OPT.mixedLb === 'statement' ? ['statement_level_load_balance = on'] : [];
        const ryw = (mode) => () =>
          startPgrelay(`pgrelay-ryw-${mode}`, cluster.nodes, {
            lb: true,
            maxClients,
            extra: [
              ...stmtLb,
              `read_your_writes = ${mode}`,
              ...(OPT.rywWait !== null ? [`read_your_writes_wait = ${OPT.rywWait}`] : []),
            ],
          });
        const starters = {
          direct: async () => ({ name: 'direct', port: primary.port, proc: null, stop: async () => undefined }),
          pgrelay: () => startPgrelay('pgrelay', [primary], { maxClients }),
          pgbouncer: () => startPgbouncer(primary, { maxClients }),
          'pgrelay-tx': () =>
            startPgrelay('pgrelay-tx', [primary], {
              maxClients,
              extra: [
                'pool_mode = transaction',
                `default_pool_size = ${OPT.txPoolSize}`,
                `max_client_conn = ${Math.max(maxClients, OPT.idleClients) + 100}`,
              ],
            }),
          'pgbouncer-tx': () =>
            startPgbouncer(primary, {
              name: 'pgbouncer-tx',
              maxClients: Math.max(maxClients, OPT.idleClients),
              transaction: true,
              poolSize: OPT.txPoolSize,
            }),
          pgpool: () => startPgpool([primary], maxClients),
          'pgrelay-lb': () => startPgrelay('pgrelay-lb', cluster.nodes, { lb: true, maxClients }),
          pipe: () => startPipe(primary),
          'pgrelay-base': () => startPgrelay('pgrelay-base', [primary], { cli: baseline.cli, maxClients }),
          'pgrelay-ryw-off': ryw('off'),
          'pgrelay-ryw-session': ryw('session'),
          'pgrelay-ryw-global': ryw('global'),
          'pgpool-lb': () => startPgpool(cluster.nodes, maxClients, { name: 'pgpool-lb', lb: true, extra: stmtLb }),
        };
        for (const name of plan.targets) {
          try {
            const t = await starters[name]();
            targets.push(t);
            rowTargetsRan.push(name);
            if (!meta.targets.includes(name)) meta.targets.push(name);
            log(`${name} ready on port ${t.port}${t.proc ? ` (pid ${t.proc.pid})` : ''}`);
          } catch (e) {
            meta.skipped.push({ target: name, row, reason: e.message });
            log(`skipping ${name}: ${e.message.split('\n')[0]}`);
            if (name !== 'pgrelay-lb' && !/not installed/.test(e.message)) log(e.message);
          }
        }
        for (const [name, file, args] of [
          ['pgbouncer', OPT.pgbouncer, ['--version']],
          ['pgpool', OPT.pgpool, ['--version']],
        ]) {
          // Versions of the installed proxies for the machine description, whether or not a row ran them.
          if (!meta.versions[name] && fs.existsSync(file)) {
            const r = await runCmd(file, args);
            meta.versions[name] = (r.stdout.split('\n')[0] || r.stderr.split('\n')[0]).trim();
          }
          if (!meta.versions[name] && rowTargetsRan.some((t) => t === name || t.startsWith(`${name}-`))) {
            const r = await runCmd(file, args);
            meta.versions[name] = r.stdout.split('\n')[0] || r.stderr.split('\n')[0];
          }
        }
        if (row === 'mixed')
          meta.rowInfo.mixed =
            `pgbench -f script (autocommit, per transaction: \`UPDATE pgbench_accounts … WHERE aid = :aid\` then ${OPT.mixedSelects} × ` +
            '`SELECT abalance … WHERE aid = :aid`, the same random row); pgrelay-ryw-* = pgrelay with `load_balance_mode = on`, ' +
            `read_your_writes = off / session / global${OPT.rywWait !== null ? `, read_your_writes_wait = ${OPT.rywWait}` : ' (read_your_writes_wait default)'}; ` +
            'pgpool-lb = pgpool-II with `load_balance_mode = on` (disable_load_balance_on_write = transaction, its default) over the same 3 nodes; ' +
            `weights 1:1:1, ${OPT.mixedLb === 'statement' ? 'statement_level_load_balance = on (every SELECT draws its node)' : 'session-level load balancing (every connection draws its node once: the standby share of a run depends on the draws)'}; ` +
            '"reads on standbys" = share of `SHOW pool_nodes` select_cnt the standbys gained during the runs; ' +
            '"vs pgrelay-ryw-off" = median of the per-round TPS ratios.';
        if (row === 'backpressure')
          meta.rowInfo.backpressure =
            `pgrelay-base = ${meta.baseline ?? '?'}; pgrelay = ${meta.commit}; both with the main row's configuration ` +
            '(primary only, load balancing off). "vs pgrelay-base" = median of the per-round TPS ratios.';

        // Warm-up: a short select-only run through each target (JIT, caches, pooled connections).
        if (OPT.warmup > 0) {
          for (const t of targets) {
            const r = await pgbenchRun(t, {
              workload: 'select',
              mode: 'simple',
              clients: Math.min(8, maxClients),
              duration: OPT.warmup,
            });
            log(`warm-up ${t.name}: ${r.error ? `FAILED ${r.error}` : `${fmt(r.tps)} TPS`}`);
          }
        }

        // Each cell: BENCH_REPEAT rounds, every target once per round (interleaved, the order rotated each round,
        // so drift such as TPC-B table growth or other load on the machine affects all targets alike).
        for (const cell of plan.cells) {
          const cellTargets = targets.filter((t) => TARGET_WORKLOADS[t.name].includes(cell.workload));
          for (let rep = 0; rep < OPT.repeat; rep++) {
            const k = cellTargets.length ? rep % cellTargets.length : 0;
            for (const t of [...cellTargets.slice(k), ...cellTargets.slice(0, k)]) {
              if (interrupted) break;
              if (t.proc && !t.proc.alive) {
                results.push({
                  row,
                  rep,
                  target: t.name,
                  ...cell,
                  duration: OPT.duration,
                  error: `${t.name} is not running`,
                });
                continue;
              }
              const r = { row, rep, ...(await runCell(t, cell, primary, row)) };
              results.push(r);
              done++;
              const reads =
                r.standbyReads !== null && r.primaryReads !== null && r.standbyReads + r.primaryReads > 0
                  ? `, ${((100 * r.standbyReads) / (r.standbyReads + r.primaryReads)).toFixed(0)}% reads on standbys`
                  : '';
              log(
                `[${done}/${totalRuns}] ${row} ${t.name.padEnd(12)} ${cell.workload.padEnd(7)} ${cell.mode.padEnd(8)} c=${String(cell.clients).padStart(2)}: ` +
                  (r.error
                    ? `FAILED ${r.error}`
                    : cell.workload === 'stream'
                      ? `${fmt(r.mbPerS, 1)} MB/s, ${fmt(r.cpuMsPerMb, 2)} ms CPU/MB`
                      : cell.workload === 'idle'
                        ? `${r.idleReady} idle clients in ${fmt(r.idleOpenS, 1)} s, proxy RSS ${fmt(r.proxyRssMb, 1)} MB, ${r.serverConns} server conns`
                        : `${fmt(r.tps)} TPS, lat ${fmt(r.latencyMs, 3)} ms` +
                          (r.latP99Ms ? `, p50 ${fmt(r.latP50Ms, 3)} p99 ${fmt(r.latP99Ms, 3)} ms` : '') +
                          (r.serverConns !== null && r.serverConns !== undefined
                            ? `, ${r.serverConns} server conns`
                            : '') +
                          (r.connTimeMs !== null ? `, conn ${fmt(r.connTimeMs, 3)} ms` : '') +
                          (r.cpuUsPerTxn !== null ? `, ${fmt(r.cpuUsPerTxn, 1)} µs CPU/txn` : '') +
                          reads),
              );
            }
          }
        }
        for (const t of targets)
          if (t.proc?.name === 'pgrelay') meta.pgrelayLogBytes = fs.statSync(t.proc.logFile).size;

        // Stop the proxies before profiling so they do not compete for CPU.
        for (const t of targets.splice(0)) await t.stop().catch((e) => log(`stop ${t.name}: ${e.message}`));

        // Optional CPU profile of pgrelay during 8-client select-only runs.
        if (row === 'main' && OPT.profile && !interrupted) {
          const { summarizeProfile, formatSummary } = await import(path.join(HERE, 'profile-summary.mjs'));
          profileJson = {};
          const texts = [];
          for (const mode of OPT.profileModes) {
            const profDir = await mkTempDir('pgrelay-cpuprof-');
            log(`profiling pgrelay: select-only -M ${mode} c=8 (${OPT.duration} s) -> ${profDir}`);
            const t = await startPgrelay('pgrelay-prof', [primary], { cpuProfDir: profDir });
            try {
              await pgbenchRun(t, { workload: 'select', mode, clients: 8, duration: Math.min(2, OPT.duration) });
              const fromUs = Number(process.hrtime.bigint() / 1000n);
              const r = await pgbenchRun(t, { workload: 'select', mode, clients: 8, duration: OPT.duration });
              const toUs = Number(process.hrtime.bigint() / 1000n);
              await t.stop();
              const files = fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
              if (!files.length) throw new Error('no .cpuprofile written (did pgrelay exit cleanly?)');
              const file = path.join(profDir, files[0]);
              const keep = path.join(OPT.resultsDir, `${stamp}-${mode}.cpuprofile`);
              await fsp.mkdir(OPT.resultsDir, { recursive: true });
              await fsp.copyFile(file, keep);
              const s = summarizeProfile(JSON.parse(await fsp.readFile(file, 'utf8')), { top: 25, fromUs, toUs });
              profileJson[mode] = { run: r, file: keep, summary: s };
              texts.push(
                `select-only -M ${mode}, 8 clients, ${fmt(r.tps)} TPS under the profiler (${fmt(r.cpuUsPerTxn, 1)} µs CPU/txn incl. profiler overhead); ${keep}\n` +
                  formatSummary(s),
              );
            } catch (e) {
              texts.push(`profile -M ${mode} failed: ${e.message}`);
              log(`profile failed: ${e.message}`);
            } finally {
              await t.stop();
              if (!OPT.keep) await fsp.rm(profDir, { recursive: true, force: true }).catch(() => undefined);
            }
          }
          profileText = texts.join('\n\n');
        }
      } finally {
        for (const t of targets) await t.stop().catch(() => undefined);
        await cluster.stop();
      }
    }
  } finally {
    process.removeListener('SIGINT', onSig);
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }

  const checks = targetChecks(results.filter((r) => r.row === 'main'));
  meta.finishedAt = new Date().toISOString();
  meta.loadavgEnd = os.loadavg().map((x) => round(x, 2));
  meta.uptimeEnd = uptime();
  const report = buildReport(results, meta, checks, profileText);
  process.stdout.write(`\n${report}\n`);
  await fsp.mkdir(OPT.resultsDir, { recursive: true });
  const sha = git(['rev-parse', '--short=12', 'HEAD']);
  const base = path.join(OPT.resultsDir, `${stamp}-${sha}${OPT.quick ? '-quick' : ''}`);
  await fsp.writeFile(`${base}.json`, `${JSON.stringify({ meta, results, checks, profile: profileJson }, null, 2)}\n`);
  await fsp.writeFile(`${base}.md`, `${report}\n`);
  await fsp.writeFile(`${base}.tsv`, tsvReport(results, meta));
  log(`results: ${base}.md, ${base}.tsv, ${base}.json`);
  if (interrupted) process.exitCode = 130;
}

main().catch((e) => {
  log(`FAILED: ${e.stack ?? e}`);
  process.exit(1);
});
