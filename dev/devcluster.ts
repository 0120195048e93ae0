/**
 * DevCluster: a throw-away PostgreSQL streaming-replication cluster (one
 * primary, N hot standbys) built from the local server binaries. Used by the
 * integration tests, the demo and the bench.
 *
 * - Every server listens on 127.0.0.1 on a port picked free at run time.
 * - When running as root the servers run as the `postgres` OS user (initdb
 *   refuses root); otherwise as the current user.
 * - Every child process has a hard timeout; a process 'exit' safety net stops
 *   any node this process started (pg_ctl -m immediate) so a crashed run does
 *   not leave servers behind.
 */
import { execFile, execFileSync, spawn, type ExecFileOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SqlSessions } from './sql-sessions.js';

export interface PgNode {
  id: number;
  host: string;
  port: number;
  dataDir: string;
}

export type AuthMethod = 'trust' | 'md5' | 'scram-sha-256';

export interface DevClusterOptions {
  /** Number of hot standbys (default 2). */
  standbys?: number;
  /** Where node directories go (default: a fresh mkdtemp under os.tmpdir()). */
  baseDir?: string;
  /** Directory with initdb, pg_ctl, pg_basebackup (default: $PG_BIN or /usr/lib/postgresql/15/bin). */
  pgBin?: string;
  /** synchronous_standby_names = 'ANY 1 (server1, ...)', synchronous_commit = on. */
  synchronous?: boolean;
  /** pg_hba method for host (TCP) connections, replication included (default trust). Local sockets stay trust. */
  authMethod?: AuthMethod;
  /** Password of the postgres superuser (default 'postgres' when authMethod is not trust). */
  superuserPassword?: string;
  /** Extra postgresql.conf settings (applied on every node). Values are written verbatim. */
  extraConf?: Record<string, string>;
  /** Progress messages (default: silent unless PGRELAY_DEVCLUSTER_DEBUG is set). */
  log?: (msg: string) => void;
  /**
   * Keep baseDir on stop(). Default: false for a mkdtemp'd baseDir, true when
   * the caller passed baseDir (we never rm -rf a directory we did not create
   * unless told to with keep: false).
   */
  keep?: boolean;
}

/** Plain, structured-clone-safe description of a cluster (toJSON / attach). */
export interface DevClusterDescription {
  nodes: PgNode[];
  baseDir: string;
  pgBin: string;
  primaryId: number;
  authMethod: AuthMethod;
  superuserPassword: string | null;
}

const DEFAULT_PG_BIN = '/usr/lib/postgresql/15/bin';
const PG_CTL_WAIT_S = 60;
/** Outer hard timeout for pg_ctl / initdb / pg_basebackup children. */
const TOOL_TIMEOUT_MS = 90_000;
const PSQL_TIMEOUT_MS = 30_000;
/** Sockets live in the node dir; AF_UNIX paths must stay under ~107 bytes. */
const MAX_SOCKET_PATH = 100;

interface RunAs {
  uid: number;
  gid: number;
  home: string;
  user: string;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * A free loopback port this process was not given before: the kernel may give the port it
 * just gave again once that is closed, and a caller asking for two (a listen port and a
 * PCP port) got one port twice.
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await anyFreePort();
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    if (handedOut.size > 4096) handedOut.delete(handedOut.values().next().value as number);
    return port;
  }
  return anyFreePort();
}

/** Ports freePort gave this process, oldest first. */
const handedOut = new Set<number>();

/** Bind 127.0.0.1:0, read the port the kernel chose, close. */
function anyFreePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('freePort: unexpected address'));
        return;
      }
      const port = addr.port;
      srv.close(() => resolve(port));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The OS user servers run as: postgres when we are root, else ourselves (null). */
function resolveRunAs(): RunAs | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
  const name = process.env.PGRELAY_PG_USER ?? 'postgres';
  let passwd: string;
  try {
    passwd = fs.readFileSync('/etc/passwd', 'utf8');
  } catch {
    throw new Error('DevCluster: running as root but cannot read /etc/passwd to find the postgres user');
  }
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 7) {
      return { user: name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '/' };
    }
  }
  throw new Error(
    `DevCluster: running as root, and initdb refuses root, but there is no '${name}' OS user ` +
      `(install the postgresql package, or set PGRELAY_PG_USER)`,
  );
}

/** process.env without libpq variables, so a user's PGHOST etc. cannot leak into our tools. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^PG[A-Z]/.test(k) && k !== 'PG_BIN') continue;
    env[k] = v;
  }
  env.LC_ALL = 'C';
  env.LANG = 'C';
  return { ...env, ...extra };
}

function run(
  file: string,
  args: string[],
  opts: { runAs?: RunAs | null; timeoutMs: number; input?: string; env?: Record<string, string>; cwd?: string },
): Promise<RunResult> {
  return new Promise((resolve) => {
    const env = cleanEnv(opts.env);
    const o: ExecFileOptions = {
      timeout: opts.timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: 64 * 1024 * 1024,
      env,
      cwd: opts.cwd ?? os.tmpdir(),
      encoding: 'utf8',
    };
    if (opts.runAs) {
      o.uid = opts.runAs.uid;
      o.gid = opts.runAs.gid;
      env.HOME = opts.runAs.home;
      env.USER = opts.runAs.user;
      env.LOGNAME = opts.runAs.user;
    }
    const child = execFile(file, args, o, (err, stdout, stderr) => {
      const out = String(stdout);
      let errText = String(stderr);
      let code = 0;
      if (err) {
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
        if (e.killed) errText += `\n[killed after ${opts.timeoutMs} ms timeout]`;
        code = typeof e.code === 'number' ? e.code : 1;
        if (typeof e.code === 'string') errText += `\n${e.message}`;
      }
      resolve({ code, stdout: out, stderr: errText });
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

/**
 * initdb templates: a freshly initdb'd data directory per set of initdb arguments, kept
 * under the temp directory and copied (`cp -a`, owner kept) for every later cluster with
 * the same arguments. initdb costs ~1.5 s of CPU, the copy ~0.4 s; the suite starts a
 * few dozen clusters. Saved with a rename, so concurrent workers never see half a copy.
 */
function initdbTemplateDir(key: string): string {
  return path.join(os.tmpdir(), `pgrelay-initdb-template-${key}`);
}

async function copyInitdbTemplate(key: string, dataDir: string): Promise<boolean> {
  const dir = initdbTemplateDir(key);
  if (!fs.existsSync(path.join(dir, 'PG_VERSION'))) return false;
  const r = await run('cp', ['-a', dir, dataDir], { timeoutMs: TOOL_TIMEOUT_MS });
  if (r.code === 0) return true;
  await fsp.rm(dataDir, { recursive: true, force: true });
  return false;
}

async function saveInitdbTemplate(key: string, dataDir: string): Promise<void> {
  const dir = initdbTemplateDir(key);
  if (fs.existsSync(dir)) return;
  const tmp = `${dir}.${process.pid}.${Date.now()}`;
  const r = await run('cp', ['-a', dataDir, tmp], { timeoutMs: TOOL_TIMEOUT_MS });
  try {
    if (r.code === 0) await fsp.rename(tmp, dir);
  } catch {
    // another worker saved it first
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/** pg_ctl stop -m immediate, synchronously (exit hooks cannot wait); best effort: not running is fine. */
function stopImmediateSync(pgBin: string, dataDir: string, runAs: RunAs | null): void {
  try {
    execFileSync(path.join(pgBin, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '10'], {
      stdio: 'ignore',
      timeout: 15_000,
      killSignal: 'SIGKILL',
      cwd: os.tmpdir(),
      env: cleanEnv(),
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
    });
  } catch {
    // not running, or a stale pid file
  }
}

function sqlLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

function confValue(v: string): string {
  // Numbers, booleans and already-quoted values go verbatim; anything else is quoted.
  if (/^'.*'$/s.test(v) || /^-?[0-9.]+[a-zA-Z]*$/.test(v) || /^(on|off|true|false)$/i.test(v)) return v;
  return sqlLiteral(v);
}

// ---------------------------------------------------------------------------
// Watchdogs: tiny detached shells that outlive us if we are SIGKILLed (or
// SIGTERMed without an 'exit' event, as vitest does to its fork workers).

/**
 * Shell function: is PID $1 alive and not a zombie? The state is the field after the last
 * ") " of /proc/PID/stat (the command name may hold one). Shell built-ins only: each watchdog
 * asks every second, and a sed and a cut per call were ~13,000 processes in a suite run.
 */
const SH_ALIVE = `alive() { { IFS= read -r st < "/proc/$1/stat"; } 2>/dev/null || return 1; st=\${st##*") "}; st=\${st%% *}; [ -n "$st" ] && [ "$st" != Z ]; }`;

function spawnWatchdog(script: string, args: string[]): number | null {
  try {
    const child = spawn('/bin/sh', ['-c', `${SH_ALIVE}\n${script}`, 'pgrelay-watchdog', ...args], {
      detached: true,
      stdio: 'ignore',
      cwd: '/',
    });
    child.on('error', () => undefined);
    child.unref();
    return child.pid ?? null;
  } catch {
    return null;
  }
}

function cancelWatchdog(pid: number | null): void {
  if (pid === null) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * SIGKILL process `childPid` if this process dies first (however it dies),
 * then remove `rmDirAfter` if given. Returns a function that cancels the watchdog (call it once the child has exited).
 */
export function killChildOnExit(childPid: number, rmDirAfter?: string): () => void {
  const wd = spawnWatchdog(
    'parent=$1; child=$2; dir=$3\n' +
      'while alive "$child"; do if ! alive "$parent"; then kill -9 "$child" 2>/dev/null; sleep 1; [ -n "$dir" ] && rm -rf -- "$dir"; exit 0; fi; sleep 1; done',
    [String(process.pid), String(childPid), rmDirAfter ?? ''],
  );
  return () => cancelWatchdog(wd);
}

// ---------------------------------------------------------------------------
// Safety net: stop nodes started by this process if it exits without stop().

const liveClusters = new Set<DevCluster>();
let safetyNetInstalled = false;

function installSafetyNet(): void {
  if (safetyNetInstalled) return;
  safetyNetInstalled = true;
  process.on('exit', () => {
    for (const c of liveClusters) c.emergencyStopSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      // If someone else handles this signal (the demo, vitest), let them shut
      // down gracefully; the 'exit' hook above remains the last resort.
      if (process.listenerCount(sig) > 1) return;
      for (const c of liveClusters) c.emergencyStopSync();
      process.removeListener(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

// ---------------------------------------------------------------------------

export class DevCluster {
  readonly nodes: PgNode[];
  readonly baseDir: string;
  readonly pgBin: string;
  readonly authMethod: AuthMethod;
  readonly superuserPassword: string | null;
  /** Id of the node that is primary (updated by promote()). */
  primaryId: number;

  private readonly runAs: RunAs | null;
  private readonly log: (msg: string) => void;
  private readonly owner: boolean;
  private readonly keep: boolean;
  private stopped = false;
  private watchdogPid: number | null = null;
  /** psql()'s connections: up to two idle superuser sessions per node to the postgres database (dev/sql-sessions.ts). */
  private readonly sessions = new SqlSessions();

  private constructor(args: DevClusterDescription & { owner: boolean; keep: boolean; log?: (msg: string) => void }) {
    this.nodes = args.nodes;
    this.baseDir = args.baseDir;
    this.pgBin = args.pgBin;
    this.primaryId = args.primaryId;
    this.authMethod = args.authMethod;
    this.superuserPassword = args.superuserPassword;
    this.owner = args.owner;
    this.keep = args.keep;
    this.runAs = resolveRunAs();
    this.log =
      args.log ??
      (process.env.PGRELAY_DEVCLUSTER_DEBUG
        ? (m: string) => process.stderr.write(`[devcluster] ${m}\n`)
        : () => undefined);
  }

  /** The current primary node. */
  get primary(): PgNode {
    return this.node(this.primaryId);
  }

  /** Nodes other than the current primary. */
  get standbys(): PgNode[] {
    return this.nodes.filter((n) => n.id !== this.primaryId);
  }

  static async start(opts: DevClusterOptions = {}): Promise<DevCluster> {
    const t0 = Date.now();
    const standbyCount = opts.standbys ?? 2;
    if (!Number.isInteger(standbyCount) || standbyCount < 0)
      throw new Error('DevCluster: standbys must be an integer >= 0');
    const pgBin = opts.pgBin ?? process.env.PG_BIN ?? DEFAULT_PG_BIN;
    if (!fs.existsSync(path.join(pgBin, 'initdb'))) {
      throw new Error(
        `DevCluster: ${path.join(pgBin, 'initdb')} not found (set PG_BIN or pgBin; on Debian: apt-get install postgresql-15)`,
      );
    }
    const authMethod = opts.authMethod ?? 'trust';
    const superuserPassword = opts.superuserPassword ?? (authMethod === 'trust' ? null : 'postgres');
    const runAs = resolveRunAs();

    let baseDir: string;
    let created: boolean;
    if (opts.baseDir) {
      baseDir = path.resolve(opts.baseDir);
      created = !fs.existsSync(baseDir);
      await fsp.mkdir(baseDir, { recursive: true });
    } else {
      baseDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-'));
      created = true;
    }
    if (runAs) {
      await fsp.chown(baseDir, runAs.uid, runAs.gid);
      // The server user must be able to reach baseDir.
      DevCluster.checkTraversable(baseDir, runAs);
    }

    const nodes: PgNode[] = [];
    for (let id = 0; id <= standbyCount; id++) {
      nodes.push({ id, host: '127.0.0.1', port: await freePort(), dataDir: path.join(baseDir, `node${id}`, 'data') });
    }
    const sock = path.join(path.dirname(nodes[nodes.length - 1]!.dataDir), `.s.PGSQL.${nodes[0]!.port}`);
    if (Buffer.byteLength(sock) > MAX_SOCKET_PATH) {
      throw new Error(
        `DevCluster: baseDir ${baseDir} is too long for Unix socket paths (${sock}); use a shorter baseDir`,
      );
    }

    const cluster = new DevCluster({
      nodes,
      baseDir,
      pgBin,
      primaryId: 0,
      authMethod,
      superuserPassword,
      owner: true,
      keep: opts.keep ?? !created,
      log: opts.log,
    });
    liveClusters.add(cluster);
    installSafetyNet();
    cluster.startWatchdog();
    try {
      await cluster.setup(opts, standbyCount);
    } catch (err) {
      await cluster.stop().catch(() => undefined);
      throw err;
    }
    cluster.log(
      `cluster up in ${Date.now() - t0} ms: ${nodes.map((n) => `node${n.id}=${n.port}`).join(' ')} (${baseDir})`,
    );
    return cluster;
  }

  /**
   * Stop (pg_ctl -m immediate) any server still running from a data directory
   * under baseDir/nodeN/data, e.g. left over by a killed earlier run that
   * reuses the same baseDir. Synchronous, best effort.
   */
  static stopLeftovers(baseDir: string, pgBin: string = process.env.PG_BIN ?? DEFAULT_PG_BIN): void {
    let entries: string[];
    try {
      entries = fs.readdirSync(baseDir);
    } catch {
      return;
    }
    const runAs = resolveRunAs();
    for (const e of entries) {
      const dataDir = path.join(baseDir, e, 'data');
      if (!/^node\d+$/.test(e) || !fs.existsSync(path.join(dataDir, 'postmaster.pid'))) continue;
      stopImmediateSync(pgBin, dataDir, runAs);
    }
  }

  /** Rebuild a handle from toJSON() output (e.g. in a vitest worker). Does not own the servers. */
  static attach(desc: DevClusterDescription, log?: (msg: string) => void): DevCluster {
    return new DevCluster({ ...desc, nodes: desc.nodes.map((n) => ({ ...n })), owner: false, keep: true, log });
  }

  toJSON(): DevClusterDescription {
    return {
      nodes: this.nodes.map((n) => ({ ...n })),
      baseDir: this.baseDir,
      pgBin: this.pgBin,
      primaryId: this.primaryId,
      authMethod: this.authMethod,
      superuserPassword: this.superuserPassword,
    };
  }

  node(id: number): PgNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`DevCluster: no node ${id}`);
    return n;
  }

  nodeDir(id: number): string {
    return path.dirname(this.node(id).dataDir);
  }

  logFile(id: number): string {
    return path.join(this.nodeDir(id), 'postgres.log');
  }

  /** The server log of a node ('' if none yet). */
  readLog(id: number): string {
    try {
      return fs.readFileSync(this.logFile(id), 'utf8');
    } catch {
      return '';
    }
  }

  /** libpq environment to reach a node directly as the superuser over TCP. */
  pgEnv(id: number, db = 'postgres'): Record<string, string> {
    const n = this.node(id);
    const env: Record<string, string> = {
      PGHOST: n.host,
      PGPORT: String(n.port),
      PGUSER: 'postgres',
      PGDATABASE: db,
      PGCONNECT_TIMEOUT: '10',
    };
    if (this.superuserPassword !== null) env.PGPASSWORD = this.superuserPassword;
    return env;
  }

  /** Connection string for a node (superuser, TCP). */
  connectionString(id: number, db = 'postgres'): string {
    const n = this.node(id);
    const pw = this.superuserPassword !== null ? `:${encodeURIComponent(this.superuserPassword)}` : '';
    return `postgresql://postgres${pw}@${n.host}:${n.port}/${db}`;
  }

  // ---- node control --------------------------------------------------------

  async stopNode(id: number, mode: 'smart' | 'fast' | 'immediate' = 'fast'): Promise<void> {
    const n = this.node(id);
    if (!this.hasPidFile(id)) return;
    this.log(`stopping node${id} (${mode})`);
    this.sessions.closeWhere((k) => k.startsWith(`${id}/`));
    const r = await this.pgCtl(['stop', '-D', n.dataDir, '-m', mode, '-w', '-t', String(PG_CTL_WAIT_S)]);
    // A stale postmaster.pid (server already gone) is not an error.
    if (r.code !== 0 && this.hasPidFile(id) && (await this.pgCtl(['status', '-D', n.dataDir])).code === 3) return;
    if (r.code !== 0 && this.hasPidFile(id)) {
      if (mode !== 'immediate') {
        this.log(`node${id}: ${mode} stop failed (${r.stderr.trim()}), trying immediate`);
        const r2 = await this.pgCtl(['stop', '-D', n.dataDir, '-m', 'immediate', '-w', '-t', String(PG_CTL_WAIT_S)]);
        if (r2.code === 0 || !this.hasPidFile(id)) return;
        throw new Error(`DevCluster: pg_ctl stop node${id} failed: ${r2.stderr}`);
      }
      throw new Error(`DevCluster: pg_ctl stop node${id} failed: ${r.stderr}`);
    }
  }

  async startNode(id: number): Promise<void> {
    const n = this.node(id);
    this.log(`starting node${id} on ${n.port}`);
    const r = await this.pgCtl(['start', '-D', n.dataDir, '-l', this.logFile(id), '-w', '-t', String(PG_CTL_WAIT_S)]);
    if (r.code !== 0) {
      throw new Error(
        `DevCluster: pg_ctl start node${id} failed (exit ${r.code}): ${r.stderr.trim()}\n--- log tail ---\n${this.readLog(id).slice(-3000)}`,
      );
    }
  }

  async restartNode(id: number, mode: 'smart' | 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.stopNode(id, mode);
    await this.startNode(id);
  }

  /** Whether the node's postmaster is running (pg_ctl status). */
  async isRunning(id: number): Promise<boolean> {
    if (!this.hasPidFile(id)) return false;
    const r = await this.pgCtl(['status', '-D', this.node(id).dataDir]);
    return r.code === 0;
  }

  /** pg_ctl promote, then wait until pg_is_in_recovery() is false. Makes the node the cluster's primaryId. */
  async promote(id: number): Promise<void> {
    const n = this.node(id);
    this.log(`promoting node${id}`);
    const r = await this.pgCtl(['promote', '-D', n.dataDir, '-w', '-t', String(PG_CTL_WAIT_S)]);
    if (r.code !== 0) throw new Error(`DevCluster: pg_ctl promote node${id} failed: ${r.stderr}`);
    await this.waitFor(
      async () => (await this.psql(id, 'SELECT pg_is_in_recovery()')) === 'f',
      60_000,
      `node${id} to leave recovery`,
    );
    this.primaryId = id;
  }

  /**
   * Point a standby at another upstream (after a promotion): rewrites
   * primary_conninfo with ALTER SYSTEM and reloads (PG >= 13 applies it live;
   * recovery_target_timeline = latest follows the new timeline).
   */
  async follow(id: number, upstreamId: number = this.primaryId): Promise<void> {
    await this.psql(
      id,
      `ALTER SYSTEM SET primary_conninfo = ${sqlLiteral(this.primaryConninfo(upstreamId, id))}; SELECT pg_reload_conf();`,
    );
  }

  /**
   * Turn a node (e.g. a demoted old primary) into a fresh standby of
   * upstreamId: stop it, wipe its data dir, pg_basebackup, start.
   */
  async rebuildStandby(id: number, upstreamId: number = this.primaryId): Promise<void> {
    await this.stopNode(id, 'immediate');
    await fsp.rm(this.node(id).dataDir, { recursive: true, force: true });
    await this.baseBackup(id, upstreamId);
    await this.startNode(id);
  }

  async pauseReplay(id: number): Promise<void> {
    await this.psql(id, 'SELECT pg_wal_replay_pause()');
    await this.waitFor(
      async () => (await this.psql(id, 'SELECT pg_get_wal_replay_pause_state()')) === 'paused',
      30_000,
      `node${id} replay to pause`,
    );
  }

  async resumeReplay(id: number): Promise<void> {
    await this.psql(id, 'SELECT pg_wal_replay_resume()');
  }

  /**
   * Run SQL as `psql -X -A -t -q -v ON_ERROR_STOP=1 -f -` would (statements
   * split like psql splits them and run one by one, stopping at the first
   * error; rows printed as `-A -t` prints them), on a kept superuser session
   * (dev/sql-sessions.ts) instead of a psql process. Resolves with the output
   * without the trailing newline; rejects on error or after timeoutMs (default 30 s).
   */
  async psql(id: number, sql: string, db = 'postgres', timeoutMs = PSQL_TIMEOUT_MS): Promise<string> {
    const n = this.node(id);
    // CREATE/DROP/ALTER DATABASE fail while sessions are connected to the database concerned (or the template).
    if (/\b(CREATE|DROP|ALTER)\s+DATABASE\b/i.test(sql))
      this.sessions.closeWhere((k) => k.startsWith(`${id}/`) && k !== `${id}/${db}`);
    try {
      return await this.sessions.run(
        `${id}/${db}`,
        { host: n.host, port: n.port, database: db, password: this.superuserPassword },
        sql,
        timeoutMs,
      );
    } catch (e) {
      throw new Error(`DevCluster: psql node${id} failed: ${e instanceof Error ? e.message : String(e)}\nSQL: ${sql}`);
    }
  }

  /** Until pg_stat_replication on the primary shows every running standby as streaming. */
  async waitForStandbys(timeoutMs = 60_000): Promise<void> {
    const expected: string[] = [];
    for (const n of this.standbys) {
      if (fs.existsSync(path.join(n.dataDir, 'standby.signal')) && (await this.isRunning(n.id)))
        expected.push(`server${n.id}`);
    }
    if (expected.length === 0) return;
    await this.waitFor(
      async () => {
        const out = await this.psql(
          this.primaryId,
          "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
        );
        const have = new Set(out.split('\n').filter(Boolean));
        return expected.every((a) => have.has(a));
      },
      timeoutMs,
      `standbys ${expected.join(', ')} to stream from node${this.primaryId}`,
    );
  }

  /**
   * Until every running standby has replayed the primary's current WAL position.
   * Throws at once if a standby's replay is paused: it cannot catch up, and
   * skipping it would let a caller read from a node that lacks its writes.
   */
  async waitForCatchup(timeoutMs = 60_000): Promise<void> {
    const lsn = await this.psql(this.primaryId, 'SELECT pg_current_wal_lsn()');
    for (const n of this.standbys) {
      if (!(await this.isRunning(n.id))) continue;
      if ((await this.psql(n.id, 'SELECT pg_is_in_recovery()')) !== 't') continue;
      const pause = await this.psql(n.id, 'SELECT pg_get_wal_replay_pause_state()');
      if (pause !== 'not paused')
        throw new Error(
          `DevCluster: waitForCatchup: node${n.id}'s WAL replay is ${pause}; resumeReplay(${n.id}) first`,
        );
      await this.waitFor(
        async () => (await this.psql(n.id, `SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn`)) === 't',
        timeoutMs,
        `node${n.id} to replay up to ${lsn}`,
      );
    }
  }

  /**
   * pg_ctl stop -m fast every node (immediate if that fails), then remove
   * baseDir unless kept. A no-op on a handle from attach(): only the process
   * that started the cluster tears it down (stop single nodes with stopNode()).
   */
  async stop(): Promise<void> {
    this.sessions.closeAll();
    if (this.stopped || !this.owner) return;
    this.stopped = true;
    await Promise.all(
      this.nodes.map((n) =>
        this.stopNode(n.id, 'fast').catch((e: unknown) =>
          this.log(`stop node${n.id}: ${e instanceof Error ? e.message : String(e)}`),
        ),
      ),
    );
    liveClusters.delete(this);
    cancelWatchdog(this.watchdogPid);
    if (this.owner && !this.keep) {
      await fsp.rm(this.baseDir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
    }
  }

  /** @internal Synchronous last-resort stop (process 'exit' hook). */
  emergencyStopSync(): void {
    if (this.stopped || !this.owner) return;
    this.stopped = true;
    cancelWatchdog(this.watchdogPid);
    for (const n of this.nodes) {
      if (!this.hasPidFile(n.id)) continue;
      stopImmediateSync(this.pgBin, n.dataDir, this.runAs);
    }
    if (!this.keep) {
      try {
        fs.rmSync(this.baseDir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  }

  // ---- internals -----------------------------------------------------------

  /** If this process dies without stop() (even by SIGKILL), stop every node (-m immediate) and remove baseDir unless kept. */
  private startWatchdog(): void {
    const pgCtl = path.join(this.pgBin, 'pg_ctl');
    const asUser = this.runAs ? this.runAs.user : '';
    const script = [
      'owner=$1; pgctl=$2; asuser=$3; rmdir=$4; shift 4',
      'while alive "$owner"; do sleep 1; done',
      'for d in "$@"; do',
      '  [ -f "$d/postmaster.pid" ] || continue',
      '  if [ -n "$asuser" ]; then runuser -u "$asuser" -- "$pgctl" stop -D "$d" -m immediate -w -t 10 >/dev/null 2>&1',
      '  else "$pgctl" stop -D "$d" -m immediate -w -t 10 >/dev/null 2>&1; fi',
      'done',
      '[ -n "$rmdir" ] && rm -rf -- "$rmdir"',
      'exit 0',
    ].join('\n');
    this.watchdogPid = spawnWatchdog(script, [
      String(process.pid),
      pgCtl,
      asUser,
      this.keep ? '' : this.baseDir,
      ...this.nodes.map((n) => n.dataDir),
    ]);
  }

  private hasPidFile(id: number): boolean {
    return fs.existsSync(path.join(this.node(id).dataDir, 'postmaster.pid'));
  }

  private pgCtl(args: string[]): Promise<RunResult> {
    return run(path.join(this.pgBin, 'pg_ctl'), args, { runAs: this.runAs, timeoutMs: TOOL_TIMEOUT_MS });
  }

  private async waitFor(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastErr = '';
    let delay = 25;
    for (;;) {
      try {
        if (await cond()) return;
      } catch (e) {
        lastErr = e instanceof Error ? e.message : String(e);
      }
      if (Date.now() > deadline)
        throw new Error(
          `DevCluster: timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${lastErr}` : ''}`,
        );
      await sleep(delay);
      delay = Math.min(delay * 2, 250);
    }
  }

  private static checkTraversable(dir: string, runAs: RunAs): void {
    // Every ancestor needs o+x (or group/owner match) for the server user.
    let d = path.dirname(dir);
    for (;;) {
      const st = fs.statSync(d);
      const ok =
        st.uid === runAs.uid
          ? (st.mode & 0o100) !== 0
          : st.gid === runAs.gid
            ? (st.mode & 0o010) !== 0
            : (st.mode & 0o001) !== 0;
      if (!ok) {
        throw new Error(
          `DevCluster: directory ${d} is not searchable by OS user ${runAs.user}; choose a baseDir under /tmp`,
        );
      }
      const up = path.dirname(d);
      if (up === d) return;
      d = up;
    }
  }

  private async mkNodeDir(id: number): Promise<string> {
    const dir = this.nodeDir(id);
    await fsp.mkdir(dir, { recursive: true });
    if (this.runAs) await fsp.chown(dir, this.runAs.uid, this.runAs.gid);
    return dir;
  }

  private primaryConninfo(upstreamId: number, id: number): string {
    const up = this.node(upstreamId);
    const parts = [
      `host=${up.host}`,
      `port=${up.port}`,
      'user=postgres',
      `application_name=server${id}`,
      'connect_timeout=5',
    ];
    if (this.superuserPassword !== null) parts.push(`password=${sqlLiteral(this.superuserPassword)}`);
    return parts.join(' ');
  }

  private nodeConf(id: number): string {
    const n = this.node(id);
    return [
      '',
      `# --- pgrelay DevCluster: node${id}`,
      `port = ${n.port}`,
      `unix_socket_directories = ${sqlLiteral(this.nodeDir(id))}`,
      `cluster_name = 'server${id}'`,
      '',
    ].join('\n');
  }

  private async setup(opts: DevClusterOptions, standbyCount: number): Promise<void> {
    const primary = this.node(0);
    const dir0 = await this.mkNodeDir(0);

    // initdb
    const initArgs = [
      '-D',
      primary.dataDir,
      '-U',
      'postgres',
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
      '--no-instructions',
      // 1 MB WAL segments (not 16): every cluster copies its data directory once per node,
      // and the first segment was 40 % of the copy.
      '--wal-segsize=1',
    ];
    let pwFile: string | null = null;
    if (this.superuserPassword !== null) {
      pwFile = path.join(dir0, 'pwfile');
      await fsp.writeFile(pwFile, `${this.superuserPassword}\n`, { mode: 0o600 });
      if (this.runAs) await fsp.chown(pwFile, this.runAs.uid, this.runAs.gid);
      initArgs.push(`--pwfile=${pwFile}`);
    }
    initArgs.push('--auth-local=trust', `--auth-host=${this.authMethod}`);
    // initdb's output depends only on these: made once per process tree and copied after.
    const templateKey = createHash('sha256')
      .update(
        JSON.stringify([
          this.pgBin,
          initArgs.slice(2).filter((a) => !a.startsWith('--pwfile=')),
          this.superuserPassword,
          this.runAs?.uid ?? null,
        ]),
      )
      .digest('hex')
      .slice(0, 16);
    if (!(await copyInitdbTemplate(templateKey, primary.dataDir))) {
      this.log('initdb');
      const ir = await run(path.join(this.pgBin, 'initdb'), initArgs, {
        runAs: this.runAs,
        timeoutMs: TOOL_TIMEOUT_MS,
      });
      if (pwFile) await fsp.rm(pwFile, { force: true });
      if (ir.code !== 0) throw new Error(`DevCluster: initdb failed (exit ${ir.code}): ${ir.stderr}`);
      await saveInitdbTemplate(templateKey, primary.dataDir);
    } else if (pwFile) await fsp.rm(pwFile, { force: true });

    const conf: Record<string, string> = {
      listen_addresses: "'127.0.0.1'",
      wal_level: 'replica',
      max_wal_senders: '10',
      max_replication_slots: '10',
      hot_standby: 'on',
      hot_standby_feedback: 'on',
      max_connections: '300',
      fsync: 'off',
      full_page_writes: 'off',
      synchronous_commit: 'on',
      shared_buffers: '64MB',
      wal_keep_size: '256MB',
      logging_collector: 'off',
      log_line_prefix: "'%m [%p] %q%a@%d '",
      wal_receiver_status_interval: '1s',
      wal_retrieve_retry_interval: '500ms',
      checkpoint_timeout: '30min',
      max_wal_size: '1GB',
    };
    if (this.authMethod === 'md5') conf.password_encryption = 'md5';
    for (const [k, v] of Object.entries(opts.extraConf ?? {})) conf[k] = confValue(v);
    const confText = ['', '# --- pgrelay DevCluster', ...Object.entries(conf).map(([k, v]) => `${k} = ${v}`), ''].join(
      '\n',
    );
    await fsp.appendFile(path.join(primary.dataDir, 'postgresql.conf'), confText + this.nodeConf(0));

    // Standbys: cold copies of the primary's data directory before it first starts (a valid
    // base backup: it was shut down cleanly), made standbys once the primary's port is final.
    // Cheaper than pg_basebackup (no checkpoint, no streaming of the copy).
    const ids = Array.from({ length: standbyCount }, (_, i) => i + 1);
    await Promise.all(ids.map((id) => this.coldCopy(id, primary.dataDir)));

    await this.startWithPortRetry(0);

    if (this.authMethod === 'md5' && this.superuserPassword !== null) {
      // initdb hashed the password with the default (SCRAM); re-store it as md5 so
      // md5 in pg_hba really means an md5 exchange.
      await this.psqlLocal(
        0,
        `SET password_encryption = 'md5'; ALTER ROLE postgres PASSWORD ${sqlLiteral(this.superuserPassword)};`,
      );
    }

    await Promise.all(ids.map((id) => this.makeStandby(id, 0)));
    await Promise.all(ids.map((id) => this.startWithPortRetry(id)));

    if (opts.synchronous && standbyCount > 0) {
      const names = ids.map((id) => `server${id}`).join(', ');
      await this.psql(
        0,
        `ALTER SYSTEM SET synchronous_standby_names = ${sqlLiteral(`ANY 1 (${names})`)}; SELECT pg_reload_conf();`,
      );
    }
    await this.waitForStandbys();
    if (opts.synchronous && standbyCount > 0) {
      // The walsenders pick up the new setting asynchronously: wait until every standby is in the quorum.
      const deadline = Date.now() + 30_000;
      for (;;) {
        const out = await this.psql(
          0,
          "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('quorum', 'sync')",
        );
        if (Number(out.trim()) >= standbyCount) break;
        if (Date.now() > deadline) throw new Error('standbys did not become synchronous within 30 s');
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Copy a shut-down data directory to node `id` (cp -a keeps the owner and modes). */
  private async coldCopy(id: number, fromDataDir: string): Promise<void> {
    await this.mkNodeDir(id);
    const r = await run('cp', ['-a', fromDataDir, this.node(id).dataDir], { timeoutMs: TOOL_TIMEOUT_MS });
    if (r.code !== 0) throw new Error(`DevCluster: copying the data directory to node${id} failed: ${r.stderr}`);
  }

  /** A copied data directory becomes a standby of `upstreamId` (standby.signal, primary_conninfo, own port). */
  private async makeStandby(id: number, upstreamId: number): Promise<void> {
    const n = this.node(id);
    const signal = path.join(n.dataDir, 'standby.signal');
    await fsp.writeFile(signal, '');
    const autoConf = path.join(n.dataDir, 'postgresql.auto.conf');
    await fsp.appendFile(autoConf, `primary_conninfo = ${sqlLiteral(this.primaryConninfo(upstreamId, id))}\n`);
    await fsp.appendFile(path.join(n.dataDir, 'postgresql.conf'), this.nodeConf(id));
    if (this.runAs) {
      await fsp.chown(signal, this.runAs.uid, this.runAs.gid);
      await fsp.chown(autoConf, this.runAs.uid, this.runAs.gid);
    }
  }

  private async baseBackup(id: number, upstreamId: number): Promise<void> {
    const n = this.node(id);
    const up = this.node(upstreamId);
    await this.mkNodeDir(id);
    this.log(`pg_basebackup node${id} from node${upstreamId}`);
    const env: Record<string, string> = {};
    if (this.superuserPassword !== null) env.PGPASSWORD = this.superuserPassword;
    const r = await run(
      path.join(this.pgBin, 'pg_basebackup'),
      [
        '-h',
        up.host,
        '-p',
        String(up.port),
        '-U',
        'postgres',
        '-D',
        n.dataDir,
        '-R',
        '-X',
        'stream',
        '--checkpoint=fast',
        '--no-sync',
        '-w',
      ],
      { runAs: this.runAs, timeoutMs: TOOL_TIMEOUT_MS, env },
    );
    if (r.code !== 0) throw new Error(`DevCluster: pg_basebackup node${id} failed (exit ${r.code}): ${r.stderr}`);
    // -R wrote standby.signal and a primary_conninfo into postgresql.auto.conf; replace the latter with ours.
    const autoConf = path.join(n.dataDir, 'postgresql.auto.conf');
    // Also drop synchronous_standby_names copied from a synchronous primary: a
    // standby promoted later must not wait for sync standbys it does not have.
    const lines = (await fsp.readFile(autoConf, 'utf8'))
      .split('\n')
      .filter((l) => !/^\s*(primary_conninfo|synchronous_standby_names)\s*=/.test(l));
    lines.push(`primary_conninfo = ${sqlLiteral(this.primaryConninfo(upstreamId, id))}`, '');
    await fsp.writeFile(autoConf, lines.join('\n').replace(/\n+$/, '\n'));
    await fsp.appendFile(path.join(n.dataDir, 'postgresql.conf'), this.nodeConf(id));
    // Clean copies of the upstream's runtime files.
    await fsp.rm(path.join(n.dataDir, 'postmaster.opts'), { force: true });
  }

  /** Start a node; if its port got taken meanwhile, pick another one and retry. */
  private async startWithPortRetry(id: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.startNode(id);
        return;
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        if (attempt >= 3 || !/could not (bind|create listen socket)|Address already in use/i.test(msg)) throw e;
        const n = this.node(id);
        n.port = await freePort();
        this.log(`node${id}: port busy, retrying on ${n.port}`);
        await fsp.appendFile(path.join(n.dataDir, 'postgresql.conf'), `\nport = ${n.port}\n`);
      }
    }
  }

  /** psql over the node's Unix socket (local auth is always trust). */
  private async psqlLocal(id: number, sql: string): Promise<string> {
    const n = this.node(id);
    const r = await run(path.join(this.pgBin, 'psql'), ['-X', '-At', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'], {
      timeoutMs: PSQL_TIMEOUT_MS,
      input: sql,
      runAs: this.runAs,
      env: { PGHOST: this.nodeDir(id), PGPORT: String(n.port), PGUSER: 'postgres', PGDATABASE: 'postgres' },
    });
    if (r.code !== 0) throw new Error(`DevCluster: psql (local) node${id} failed: ${r.stderr.trim()}`);
    return r.stdout.replace(/\n$/, '');
  }
}
