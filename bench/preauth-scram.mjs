#!/usr/bin/env node
/**
 * Pre-authentication cost bench (issue 11 (g)): an established session runs
 * `select 1` in a loop through pgrelay while unauthenticated clients start SCRAM
 * exchanges at a fixed rate (StartupMessage, SASLInitialResponse, read the
 * server-first-message, close) for a user whose pool_passwd entry is TEXT, the
 * case where pgrelay used to run PBKDF2 on its event loop for every attempt.
 * Prints the `select 1` latency (p50 / p99 / max) without and with the attack,
 * and pgrelay's own CPU time per SCRAM start (from /proc, in a third phase where
 * the starts run alone), for each pgrelay build given.
 *
 *   npm run build && npm run build:dev && node bench/preauth-scram.mjs
 *   BENCH_BASELINE=/tmp/base/dist/cli.js node bench/preauth-scram.mjs   # + an earlier build, same run
 *
 * Options (environment): BENCH_PREAUTH_RATE (SCRAM starts per second, default
 * 300), BENCH_PREAUTH_DURATION (seconds per phase, default 10),
 * BENCH_PREAUTH_ROUNDS (quiet/attack pairs per build, alternating builds, default 2).
 * The attacker runs in a worker thread, so its own work does not delay the
 * measuring loop's event loop. A description of a run, not a test.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');

// ---------------------------------------------------------------- attacker (worker thread)

/** One unauthenticated SCRAM start: resolves 'ok' once the server-first-message arrived, else why not. */
function scramStart(port, user) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    let buf = Buffer.alloc(0);
    let step = 0;
    const done = (r) => {
      clearTimeout(t);
      s.destroy();
      resolve(r);
    };
    const t = setTimeout(() => done('timeout'), 5000);
    s.on('error', () => done('error'));
    s.on('close', () => done(step === 2 ? 'ok' : 'closed'));
    s.on('connect', () => {
      const params = Buffer.from(`user\0${user}\0database\0postgres\0\0`);
      const m = Buffer.alloc(8 + params.length);
      m.writeInt32BE(m.length, 0);
      m.writeInt32BE(196608, 4);
      params.copy(m, 8);
      s.write(m);
    });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
        const type = buf[0];
        const body = buf.subarray(5, 1 + buf.readInt32BE(1));
        buf = buf.subarray(1 + buf.readInt32BE(1));
        if (type !== 0x52) return done(`message ${String.fromCharCode(type)}`);
        const code = body.readInt32BE(0);
        if (code === 10 && step === 0) {
          step = 1;
          const first = Buffer.from(`n,,n=,r=${Math.random().toString(36).slice(2)}bench`);
          const mech = Buffer.from('SCRAM-SHA-256\0');
          const len = Buffer.alloc(4);
          len.writeInt32BE(first.length);
          const payload = Buffer.concat([mech, len, first]);
          const head = Buffer.alloc(5);
          head[0] = 0x70;
          head.writeInt32BE(4 + payload.length, 1);
          s.write(Buffer.concat([head, payload]));
        } else if (code === 11 && step === 1) {
          step = 2;
          return done('ok');
        } else return done(`auth code ${code}`);
      }
    });
  });
}

async function attacker({ port, user, rate, seconds }) {
  const outcomes = {};
  let started = 0;
  const pending = new Set();
  const t0 = Date.now();
  // Launch on a 10 ms tick, carrying fractions over, so the rate holds whatever the timer jitter.
  await new Promise((resolve) => {
    const tick = setInterval(() => {
      const elapsed = (Date.now() - t0) / 1000;
      if (elapsed >= seconds) {
        clearInterval(tick);
        resolve();
        return;
      }
      const due = Math.floor(elapsed * rate) - started;
      for (let i = 0; i < due; i++) {
        started++;
        const p = scramStart(port, user).then((r) => {
          outcomes[r] = (outcomes[r] ?? 0) + 1;
          pending.delete(p);
        });
        pending.add(p);
      }
    }, 10);
  });
  await Promise.all(pending);
  return { started, outcomes, seconds: (Date.now() - t0) / 1000 };
}

if (!isMainThread) {
  attacker(workerData).then((r) => parentPort.postMessage(r));
} else {
  main().catch((e) => {
    process.stderr.write(`bench: ${e.stack ?? e}\n`);
    process.exit(1);
  });
}

// ---------------------------------------------------------------- main thread

function log(msg) {
  process.stderr.write(`[preauth ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function num(v, def) {
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`invalid number "${v}"`);
  return n;
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat; NaN where unavailable. */
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; clock ticks of 1/100 s on Linux.
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** `select 1` in a loop for `seconds`; latencies in ms. */
async function selectLoop(client, seconds) {
  const lat = [];
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    const t = performance.now();
    await client.query('select 1');
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  return { n: lat.length, p50: pct(lat, 50), p99: pct(lat, 99), max: lat[lat.length - 1] };
}

function runAttack(data) {
  return new Promise((resolve, reject) => {
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: data });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

async function startPgrelay(name, cli, primaryPort, freePort) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `pgrelay-preauth-${name}-`));
  const port = await freePort();
  await fsp.writeFile(path.join(dir, 'pool_passwd'), 'app:TEXTapppw\n', { mode: 0o600 });
  await fsp.writeFile(path.join(dir, 'pool_hba.conf'), 'host all all 127.0.0.1/32 scram-sha-256\n');
  const conf = [
    `listen_addresses = '127.0.0.1'`,
    `port = ${port}`,
    `unix_socket_directories = ''`,
    `backend_hostname0 = '127.0.0.1'`,
    `backend_port0 = ${primaryPort}`,
    `num_init_children = 64`,
    `enable_pool_hba = on`,
    `pool_passwd = '${path.join(dir, 'pool_passwd')}'`,
    `hba_file = '${path.join(dir, 'pool_hba.conf')}'`,
    `sr_check_user = 'postgres'`,
    `sr_check_password = 'benchpw'`,
    `log_min_messages = error`,
    `load_balance_mode = off`,
    `pid_file_name = '${path.join(dir, 'pgrelay.pid')}'`,
    `logdir = '${dir}'`,
  ].join('\n');
  await fsp.writeFile(path.join(dir, 'pgpool.conf'), `${conf}\n`);
  const child = spawn(process.execPath, [cli, '-f', path.join(dir, 'pgpool.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise((r) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${name} did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    await fsp.rm(dir, { recursive: true, force: true });
  };
  return { name, port, pid: child.pid, stop };
}

async function main() {
  const rate = num(process.env.BENCH_PREAUTH_RATE, 300);
  const seconds = num(process.env.BENCH_PREAUTH_DURATION, 10);
  const rounds = num(process.env.BENCH_PREAUTH_ROUNDS, 2);
  const builds = [['pgrelay', path.join(ROOT, 'dist', 'cli.js')]];
  if (process.env.BENCH_BASELINE) builds.unshift(['pgrelay-base', path.resolve(process.env.BENCH_BASELINE)]);
  for (const [, cli] of builds) if (!fs.existsSync(cli)) throw new Error(`${cli} missing: run \`npm run build\``);
  const devcluster = path.join(ROOT, 'dev', 'dist', 'devcluster.js');
  if (!fs.existsSync(devcluster)) throw new Error('dev/dist/ missing: run `npm run build:dev`');
  const { DevCluster, freePort } = await import(devcluster);
  const { default: pg } = await import('pg');

  log(`rate ${rate}/s, ${seconds} s per phase, ${rounds} rounds, builds: ${builds.map((b) => b[0]).join(', ')}`);
  const cluster = await DevCluster.start({ standbys: 0, authMethod: 'scram-sha-256', superuserPassword: 'benchpw' });
  const relays = [];
  const rows = [];
  try {
    await cluster.psql(0, "CREATE ROLE app LOGIN PASSWORD 'apppw'");
    for (const [name, cli] of builds) relays.push(await startPgrelay(name, cli, cluster.nodes[0].port, freePort));
    for (let round = 1; round <= rounds; round++) {
      for (const r of relays) {
        const client = new pg.Client({
          host: '127.0.0.1',
          port: r.port,
          user: 'app',
          password: 'apppw',
          database: 'postgres',
        });
        await client.connect();
        try {
          await selectLoop(client, 1); // warm-up
          log(`${r.name} round ${round}: quiet`);
          const quiet = await selectLoop(client, seconds);
          log(`${r.name} round ${round}: ${rate} SCRAM starts/s`);
          const [loaded, attack] = await Promise.all([
            selectLoop(client, seconds),
            runAttack({ port: r.port, user: 'app', rate, seconds }),
          ]);
          // pgrelay's CPU per start, measured apart: the starts alone, nothing else running through it.
          log(`${r.name} round ${round}: ${rate} SCRAM starts/s alone (CPU)`);
          const c0 = cpuSeconds(r.pid);
          const alone = await runAttack({ port: r.port, user: 'app', rate, seconds });
          const cpuPerStartMs = ((cpuSeconds(r.pid) - c0) * 1000) / Math.max(1, alone.started);
          rows.push({ build: r.name, round, quiet, loaded, attack, cpuPerStartMs, load: os.loadavg()[0] });
        } finally {
          await client.end();
        }
      }
    }
  } finally {
    for (const r of relays) await r.stop();
    await cluster.stop();
  }
  const f = (x) => x.toFixed(2);
  const lines = [
    `pgrelay pre-auth bench: ${rate} unauthenticated SCRAM starts/s (TEXT pool_passwd entry), ${seconds} s per phase; node ${process.versions.node}, ${os.cpus().length} CPUs`,
    '',
    '| build | round | quiet p50 / p99 / max (ms) | under attack p50 / p99 / max (ms) | SCRAM starts done / started (s) | pgrelay CPU per start (ms) | load avg |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.build} | ${r.round} | ${f(r.quiet.p50)} / ${f(r.quiet.p99)} / ${f(r.quiet.max)} (${r.quiet.n}) | ${f(r.loaded.p50)} / ${f(r.loaded.p99)} / ${f(r.loaded.max)} (${r.loaded.n}) | ${r.attack.outcomes.ok ?? 0} / ${r.attack.started} in ${r.attack.seconds.toFixed(1)} s${Object.keys(r.attack.outcomes).length > 1 ? ` ${JSON.stringify(r.attack.outcomes)}` : ''} | ${f(r.cpuPerStartMs)} | ${r.load.toFixed(1)} |`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}
