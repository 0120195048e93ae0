/**
 * Run pgrelay (node dist/cli.js) against a DevCluster for a test, and run
 * psql / pgbench against it with hard timeouts.
 *
 * Backends are written with their DevCluster node id as the pgpool backend
 * number (backend_hostname1 = node 1, ...), so test assertions can use node ids.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, killChildOnExit, type DevCluster } from '../../dev/devcluster.js';
import { pgTool, scrubPgEnv } from './env.js';
import { expect } from 'vitest';

export type ConfValue = string | number | boolean;

export interface StartProxyOptions {
  /** pgpool.conf keys; override the defaults written by startProxy. */
  config?: Record<string, ConfValue>;
  cluster: DevCluster;
  /** Node ids to use as backends (default: all nodes). */
  backends?: number[];
  /** Extra CLI arguments after `-f FILE`. */
  args?: string[];
  /** Extra environment for the pgrelay process. */
  env?: Record<string, string>;
  /** How long to wait for the port to accept connections (default 15 s). */
  startTimeoutMs?: number;
  /** Path of the CLI (default: <repo>/dist/cli.js). */
  cliPath?: string;
  /** Start without -f, in the directory holding pgpool.conf: pgrelay must find ./pgpool.conf itself. */
  defaultConfigPath?: boolean;
}

export interface ProxyHandle {
  host: string;
  port: number;
  pid: number;
  /** Directory holding pgpool.conf, the pid file, logdir. Removed by stop(). */
  dir: string;
  confPath: string;
  /** Everything pgrelay wrote so far (stdout and stderr, interleaved as received). */
  logs: () => string;
  /** stdout lines parsed as JSON (pino); non-JSON lines are skipped. */
  jsonLogs: () => Record<string, unknown>[];
  /** Resolve when a log line matches (rejects after timeoutMs with the logs). */
  waitForLog: (pattern: RegExp | string, timeoutMs?: number) => Promise<string>;
  /** SIGTERM, wait for exit (SIGKILL after 10 s); resolves with the exit code (null if killed by a signal). */
  stop: () => Promise<number | null>;
  kill: (signal?: NodeJS.Signals) => void;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Rewrite pgpool.conf (merging `config` into the current keys) and send SIGHUP. */
  reload: (config?: Record<string, ConfValue>) => Promise<void>;
  /** Current pgpool.conf keys. */
  config: () => Record<string, ConfValue>;
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI_PATH = path.join(REPO_ROOT, 'dist', 'cli.js');

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of liveChildren) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/** Format one pgpool.conf value: numbers bare, booleans on/off, strings single-quoted. */
export function confLiteral(v: ConfValue): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

export function renderConf(config: Record<string, ConfValue>): string {
  return `${Object.entries(config)
    .map(([k, v]) => `${k} = ${confLiteral(v)}`)
    .join('\n')}\n`;
}

/** pgpool.conf keys describing the given DevCluster nodes as backends. */
export function backendConf(
  cluster: DevCluster,
  backends: number[] = cluster.nodes.map((n) => n.id),
): Record<string, ConfValue> {
  const conf: Record<string, ConfValue> = {};
  for (const id of backends) {
    const n = cluster.node(id);
    conf[`backend_hostname${id}`] = n.host;
    conf[`backend_port${id}`] = n.port;
    conf[`backend_weight${id}`] = 1;
    conf[`backend_data_directory${id}`] = n.dataDir;
    conf[`backend_application_name${id}`] = `server${id}`;
  }
  return conf;
}

function connectOnce(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/**
 * Start pgrelay and wait until it is ready: its port accepts connections and it logged
 * "pgrelay successfully started" (PCP port bound, signals handled). A start that failed
 * because a port picked free was taken meanwhile by another process (EADDRINUSE) is
 * retried with new ports, when the caller did not choose them.
 */
export async function startProxy(opts: StartProxyOptions): Promise<ProxyHandle> {
  const portsChosen = opts.config?.port !== undefined || opts.config?.pcp_port !== undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await startProxyOnce(opts);
    } catch (e) {
      if (portsChosen || attempt >= 3 || !/EADDRINUSE/.test((e as Error).message)) throw e;
    }
  }
}

async function startProxyOnce(opts: StartProxyOptions): Promise<ProxyHandle> {
  installExitHook();
  const { cluster } = opts;
  const host = '127.0.0.1';
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-proxy-'));
  const confPath = path.join(dir, 'pgpool.conf');
  const password = cluster.superuserPassword ?? '';

  let config: Record<string, ConfValue> = {
    listen_addresses: host,
    port: await freePort(),
    // Every pgrelay opens the PCP port (default 9898): a free one per proxy.
    pcp_port: await freePort(),
    pcp_socket_dir: dir,
    pid_file_name: path.join(dir, 'pgrelay.pid'),
    logdir: dir,
    sr_check_user: 'postgres',
    sr_check_password: password,
    health_check_user: 'postgres',
    health_check_password: password,
    ...backendConf(cluster, opts.backends),
    ...(opts.config ?? {}),
  };
  await fsp.writeFile(confPath, renderConf(config));
  const port = Number(config.port);
  const listenHost = String(config.listen_addresses) === '*' ? host : String(config.listen_addresses);

  const cli = opts.cliPath ?? CLI_PATH;
  if (!fs.existsSync(cli)) throw new Error(`startProxy: ${cli} not found; run \`npm run build\` first`);
  const fileArgs = opts.defaultConfigPath ? [] : ['-f', confPath];
  const child = spawn(process.execPath, [cli, ...fileArgs, ...(opts.args ?? [])], {
    cwd: opts.defaultConfigPath ? dir : REPO_ROOT,
    env: { ...scrubPgEnv({ ...process.env }), ...(opts.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveChildren.add(child);
  // vitest ends fork workers with SIGTERM (no 'exit' event): make sure pgrelay does not outlive us.
  const cancelWatchdog = child.pid !== undefined ? killChildOnExit(child.pid, dir) : () => undefined;

  let out = '';
  let stdoutBuf = '';
  const stdoutLines: string[] = [];
  const logWaiters = new Set<() => void>();
  const notify = (): void => {
    for (const w of logWaiters) w();
  };
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => {
    out += d;
    stdoutBuf += d;
    const parts = stdoutBuf.split('\n');
    stdoutBuf = parts.pop() ?? '';
    stdoutLines.push(...parts);
    notify();
  });
  child.stderr?.on('data', (d: string) => {
    out += d;
    notify();
  });
  if (process.env.PGRELAY_TEST_PROXY_LOGS) {
    child.stdout?.on('data', (d: string) => process.stderr.write(d));
    child.stderr?.on('data', (d: string) => process.stderr.write(d));
  }

  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      liveChildren.delete(child);
      cancelWatchdog();
      notify();
      resolve(exitInfo);
    });
    child.once('error', (err) => {
      out += `\n[spawn error] ${err.message}\n`;
      exitInfo = { code: null, signal: null };
      liveChildren.delete(child);
      resolve(exitInfo);
    });
  });

  const logs = (): string => out;
  const jsonLogs = (): Record<string, unknown>[] => {
    const res: Record<string, unknown>[] = [];
    for (const l of stdoutLines) {
      try {
        const v: unknown = JSON.parse(l);
        if (v !== null && typeof v === 'object' && !Array.isArray(v)) res.push(v as Record<string, unknown>);
      } catch {
        // not JSON
      }
    }
    return res;
  };

  const waitForLog = (pattern: RegExp | string, timeoutMs = 10_000): Promise<string> =>
    new Promise((resolve, reject) => {
      const test = (): string | null => {
        for (const line of out.split('\n')) {
          if (typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line)) return line;
        }
        return null;
      };
      const check = (): void => {
        const hit = test();
        if (hit !== null) {
          cleanup();
          resolve(hit);
        } else if (exitInfo) {
          cleanup();
          reject(
            new Error(
              `pgrelay exited (${JSON.stringify(exitInfo)}) before logging ${String(pattern)}\n--- logs ---\n${out}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for log ${String(pattern)}\n--- logs ---\n${out}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        logWaiters.delete(check);
      };
      logWaiters.add(check);
      check();
    });

  let stopping: Promise<number | null> | null = null;
  const stop = (): Promise<number | null> => {
    if (!stopping) {
      stopping = (async () => {
        if (!exitInfo) {
          const t0 = Date.now();
          child.kill('SIGTERM');
          const killTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(killTimer);
          // SIGTERM is a smart shutdown: a pgrelay that takes seconds to stop is most likely waiting
          // for a session its test left open. Said here, since the test itself does not see it.
          if (Date.now() - t0 > 3000)
            process.stderr.write(
              `[proxy] pgrelay ${child.pid} took ${Date.now() - t0} ms to stop${(exitInfo as { signal: string | null } | null)?.signal === 'SIGKILL' ? ' (SIGKILL after 10 s)' : ''}: was a session left open? (${expect.getState().testPath?.split('/').pop() ?? ''} › ${expect.getState().currentTestName ?? 'after its tests'})\n`,
            );
        }
        await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
        // A session whose wait ended before its message was suspended (session.ts resumeLost):
        // pgrelay went on, but that is a bug to find.
        const lost = out.split('\n').find((l) => l.includes('internal: a wait ended before its message was suspended'));
        if (lost !== undefined) throw new Error(`pgrelay logged a lost resume: ${lost}`);
        const info = exitInfo as { code: number | null; signal: NodeJS.Signals | null } | null;
        return info?.code ?? null;
      })();
    }
    return stopping;
  };

  // Wait until the port accepts TCP connections.
  const logsInfo = !['error', 'fatal', 'panic'].includes(String(config.log_min_messages ?? 'warning'));
  const logsStartup = String(config.log_destination ?? 'stderr').startsWith('std') && logsInfo;
  // log_destination = 'file': the same lines, in <logdir>/pgrelay.log.
  const logFile = String(config.log_destination) === 'file' ? path.join(String(config.logdir), 'pgrelay.log') : null;
  const fileLog = (): string => {
    try {
      return logFile ? fs.readFileSync(logFile, 'utf8') : '';
    } catch {
      return '';
    }
  };
  const logsStartupToFile = logFile !== null && logsInfo;
  const timeoutMs = opts.startTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exitInfo) {
      await stop();
      throw new Error(
        `pgrelay exited during start-up (${JSON.stringify(exitInfo)})\n--- config ---\n${renderConf(config)}--- logs ---\n${out}${fileLog()}`,
      );
    }
    if (await connectOnce(listenHost, port, 1000)) {
      // The client port listens first; the HTTP services, the PCP port and the signal handlers
      // follow (a port picked free and taken meanwhile fails the start there: EADDRINUSE, retried).
      if (logsStartupToFile) {
        while (!exitInfo && !fileLog().includes('pgrelay successfully started')) {
          if (Date.now() > deadline) {
            await stop();
            throw new Error(`pgrelay did not log its start in ${logFile} within ${timeoutMs} ms\n${fileLog()}`);
          }
          await new Promise((r) => setTimeout(r, 50));
        }
        if (exitInfo) continue;
        break;
      }
      // A pgrelay whose start this process cannot see (log_min_messages = error…) is taken as ready now.
      if (!logsStartup) break;
      await waitForLog('pgrelay successfully started', Math.max(1000, deadline - Date.now())).catch(
        async (e: Error) => {
          if (!exitInfo) return;
          await stop();
          throw new Error(`pgrelay exited while starting: ${e.message}`);
        },
      );
      break;
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `pgrelay did not accept connections on ${listenHost}:${port} within ${timeoutMs} ms\n--- logs ---\n${out}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    host: listenHost,
    port,
    pid: child.pid ?? -1,
    dir,
    confPath,
    logs,
    jsonLogs,
    waitForLog,
    stop,
    exited,
    kill: (signal: NodeJS.Signals = 'SIGTERM') => {
      if (!exitInfo) child.kill(signal);
    },
    reload: async (more?: Record<string, ConfValue>) => {
      if (more) config = { ...config, ...more };
      await fsp.writeFile(confPath, renderConf(config));
      if (!exitInfo) child.kill('SIGHUP');
    },
    config: () => ({ ...config }),
  };
}

// ---------------------------------------------------------------------------
// psql / pgbench

export interface PgEnvOptions {
  user?: string;
  password?: string;
  database?: string;
  host?: string;
}

/** libpq environment for psql / pgbench through the proxy (or any port on 127.0.0.1). */
export function pgEnv(port: number, opts: PgEnvOptions = {}): Record<string, string> {
  const env: Record<string, string> = {
    PGHOST: opts.host ?? '127.0.0.1',
    PGPORT: String(port),
    PGUSER: opts.user ?? 'postgres',
    PGDATABASE: opts.database ?? 'postgres',
    PGCONNECT_TIMEOUT: '10',
    PGSSLMODE: 'disable',
    PGAPPNAME: 'pgrelay-test',
  };
  if (opts.password !== undefined) env.PGPASSWORD = opts.password;
  return env;
}

export interface RunResult {
  /** Exit code; null when killed (timeout or signal). */
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions extends PgEnvOptions {
  port: number;
  input?: string;
  /** Hard limit; the child gets SIGKILL after it (default 30 s). */
  timeoutMs?: number;
  /** Extra environment (wins over pgEnv). */
  env?: Record<string, string>;
}

/**
 * The environment of a spawned client: the runner's without any libpq variable
 * (scrubPgEnv; no ~/.pgpass either) and with an English UTF-8 locale, so that
 * messages and pgbench's summary lines read the same on every machine.
 */
function baseEnv(): NodeJS.ProcessEnv {
  const env = scrubPgEnv({ ...process.env });
  env.LC_ALL = 'C.UTF-8';
  env.LANG = 'C.UTF-8';
  delete env.LANGUAGE;
  return env;
}

/** Run a program with a hard timeout; never rejects (spawn errors come back as code null + stderr). */
export function runCommand(
  file: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string },
): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve) => {
    const child = spawn(file, args, { env: opts.env ?? baseEnv(), stdio: ['pipe', 'pipe', 'pipe'], cwd: opts.cwd });
    liveChildren.add(child);
    installExitHook();
    const cancelWatchdog = child.pid !== undefined && timeoutMs > 5_000 ? killChildOnExit(child.pid) : () => undefined;
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (stdout += d));
    child.stderr.on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    let settled = false;
    const finish = (code: number | null, extra = ''): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      liveChildren.delete(child);
      cancelWatchdog();
      resolve({
        code: timedOut ? null : code,
        stdout,
        stderr: stderr + extra + (timedOut ? `\n[killed after ${timeoutMs} ms]` : ''),
        timedOut,
      });
    };
    child.once('error', (err) => finish(null, `\n[spawn error] ${err.message}`));
    child.once('close', (code) => finish(code));
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

function clientEnv(o: RunOptions): NodeJS.ProcessEnv {
  return { ...baseEnv(), ...pgEnv(o.port, o), ...(o.env ?? {}) };
}

/** psql -X <args> (PG_BIN's psql) against 127.0.0.1:<port>. Add -At, -c, -v ON_ERROR_STOP=1 etc. yourself. */
export function runPsql(args: string[], opts: RunOptions): Promise<RunResult> {
  return runCommand(pgTool('psql'), ['-X', ...args], {
    env: clientEnv(opts),
    input: opts.input,
    timeoutMs: opts.timeoutMs,
  });
}

/** The counts pgbench (PostgreSQL 15) prints at the end of a run; null where its line is missing. */
export function pgbenchCounts(stdout: string): { processed: number | null; failed: number | null } {
  const processed = /number of transactions actually processed: (\d+)/.exec(stdout);
  const failed = /number of failed transactions: (\d+)/.exec(stdout);
  return { processed: processed ? Number(processed[1]) : null, failed: failed ? Number(failed[1]) : null };
}

/**
 * Assert a pgbench run exited 0 with transactions processed, none failed (PostgreSQL 15's pgbench
 * always prints the failed count) and no error on stderr; `context` is shown on a failure.
 * Returns the transactions processed.
 */
export function expectPgbenchClean(r: RunResult, context: string): number {
  expect(r.code, context).toBe(0);
  const { processed, failed } = pgbenchCounts(r.stdout);
  expect(processed, context).toBeGreaterThan(0);
  expect(failed, context).toBe(0);
  expect(r.stderr, context).not.toMatch(/error|abort|FATAL/i);
  return processed ?? 0;
}

/** pg_dump or pg_restore <args> (PG_BIN's) against 127.0.0.1:<port>. */
export function runPgDumpTool(tool: 'pg_dump' | 'pg_restore', args: string[], opts: RunOptions): Promise<RunResult> {
  return runCommand(pgTool(tool), args, { env: clientEnv(opts), timeoutMs: opts.timeoutMs ?? 60_000 });
}

/** pgbench <args> (PG_BIN's pgbench) against 127.0.0.1:<port>. */
export function runPgbench(args: string[], opts: RunOptions): Promise<RunResult> {
  return runCommand(pgTool('pgbench'), args, {
    env: clientEnv(opts),
    input: opts.input,
    timeoutMs: opts.timeoutMs ?? 120_000,
  });
}
