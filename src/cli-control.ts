/**
 * CLI sub-commands that control a running pgrelay instance (pgpool's
 * `pgpool stop` / `pgpool reload` and pcp_attach_node / pcp_detach_node /
 * pcp_promote_node):
 *
 *   pgrelay stop [-m smart|fast|immediate] [-f pgpool.conf] [--timeout SECONDS]
 *   pgrelay reload [-f pgpool.conf]
 *   pgrelay attach  NODE_ID [-h host] [-p port] [-U user] [-d db] [-f pgpool.conf]
 *   pgrelay detach  NODE_ID [--gracefully] [...]
 *   pgrelay promote NODE_ID [--switchover] [--gracefully] [...]
 *
 * stop/reload read `pid_file_name` from the configuration and signal that
 * process (stop: SIGTERM smart, SIGINT fast, SIGQUIT immediate; reload:
 * SIGHUP). attach/detach/promote connect to the proxy port with node-postgres
 * (password from PGPASSWORD) and run `PGPOOL ATTACH NODE n` /
 * `PGPOOL DETACH NODE n [GRACEFULLY]` / `PGPOOL PROMOTE NODE n [SWITCHOVER] [GRACEFULLY]`
 * (the user must be listed in admin_users).
 *
 * Every function returns an exit code (0 ok, 1 failure, 2 usage error) and
 * never calls process.exit, so the dispatcher in cli.ts decides.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultConfig } from './config/defaults.js';
import { ConfigError, formatIssue } from './config/issues.js';
import { parseConfigText } from './config/lexer.js';
import { loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { describeAdminCommand, type StopMode } from './admin/commands.js';
import { commandLine, UsageError, type OptionSpec } from './cli-args.js';

export const CONTROL_COMMANDS = ['stop', 'reload', 'attach', 'detach', 'promote'] as const;
export type ControlCommand = (typeof CONTROL_COMMANDS)[number];
export type NodeOperation = 'attach' | 'detach' | 'promote';

export const CONTROL_USAGE = `Control a running pgrelay:
  pgrelay stop [-m smart|fast|immediate] [-f CONF] [--timeout SECONDS]
                                    signal the process named in pid_file_name: smart = SIGTERM
                                    (sessions may finish, up to 30 s), fast = SIGINT (5 s),
                                    immediate = SIGQUIT; waits until it has exited
                                    (default wait: 60 s smart, 30 s fast, 10 s immediate)
  pgrelay reload [-f CONF]          SIGHUP: re-read pgpool.conf, pool_hba.conf and pool_passwd
                                    (exit status 1 when CONF has errors: pgrelay keeps its settings)
  pgrelay attach NODE_ID [conn]     PGPOOL ATTACH NODE NODE_ID            (pcp_attach_node)
  pgrelay detach NODE_ID [--gracefully] [conn]
                                    PGPOOL DETACH NODE NODE_ID [GRACEFULLY] (pcp_detach_node)
  pgrelay promote NODE_ID [--switchover] [--gracefully] [conn]
                                    PGPOOL PROMOTE NODE NODE_ID [SWITCHOVER] [GRACEFULLY] (pcp_promote_node)
  conn: [-h HOST] [-p PORT] [-U USER] [-d DATABASE] [-f CONF] [--timeout SECONDS]
        host/port default to the configuration's listen_addresses/port (127.0.0.1:9999 without one;
        its Unix-domain socket directory when listen_addresses = ''),
        user to $PGUSER or the OS user, database to $PGDATABASE or postgres; the password is taken
        from $PGPASSWORD. The user must be listed in admin_users. -n NODE_ID is accepted too.
`;

// ---------------------------------------------------------------------------
// Argument parsing (pure; unit-tested)

export interface StopArgs {
  mode: StopMode;
  file?: string;
  /** How long to wait for the process to exit, ms (default by mode). */
  timeoutMs: number;
  help: boolean;
}

export interface ReloadArgs {
  file?: string;
  help: boolean;
}

export interface NodeArgs {
  op: NodeOperation;
  node: number;
  gracefully: boolean;
  switchover: boolean;
  host?: string;
  port?: number;
  user?: string;
  database?: string;
  file?: string;
  /** Bound on connect + command, ms. */
  timeoutMs: number;
  help: boolean;
}

/** Default wait for the process to go away after the signal, by mode. */
export const STOP_WAIT_MS: Readonly<Record<StopMode, number>> = { smart: 60_000, fast: 30_000, immediate: 10_000 };
export const NODE_COMMAND_TIMEOUT_MS = 120_000;

export const STOP_SIGNALS: Readonly<Record<StopMode, NodeJS.Signals>> = {
  smart: 'SIGTERM',
  fast: 'SIGINT',
  immediate: 'SIGQUIT',
};

/** `-m` values as pgpool accepts them (s/smart, f/fast, i/immediate). */
export function parseStopMode(v: string): StopMode {
  switch (v.toLowerCase()) {
    case 's':
    case 'smart':
      return 'smart';
    case 'f':
    case 'fast':
      return 'fast';
    case 'i':
    case 'immediate':
      return 'immediate';
    default:
      throw new UsageError(`invalid shutdown mode "${v}" (smart, fast or immediate)`);
  }
}

function parseSeconds(v: string, opt: string): number {
  if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0)
    throw new UsageError(`${opt} expects a positive number of seconds, got "${v}"`);
  return Math.round(Number(v) * 1000);
}

const FILE_OPTION = { value: true, spellings: ['-f', '--config-file'] };
const CONTROL_ARGS = { negativeNumbersArePositional: true };

const STOP_OPTIONS = {
  file: FILE_OPTION,
  help: { value: false, spellings: ['-h', '--help', '-?'] },
  mode: { value: true, spellings: ['-m', '--mode'] },
  timeout: { value: true, spellings: ['-t', '--timeout'] },
} satisfies OptionSpec;

export function parseStopArgs(argv: readonly string[]): StopArgs {
  let mode: StopMode = 'smart';
  let file: string | undefined;
  let timeoutMs: number | undefined;
  let help = false;
  for (const it of commandLine(argv, STOP_OPTIONS, { prefix: 'stop: ', ...CONTROL_ARGS })) {
    if (it.kind === 'positional') {
      // `pgrelay stop fast` reads naturally too
      if (/^(s|smart|f|fast|i|immediate)$/i.test(it.value)) mode = parseStopMode(it.value);
      else throw new UsageError(`stop: unexpected argument "${it.value}"`);
    } else if (it.name === 'file') file = it.value;
    else if (it.name === 'mode') mode = parseStopMode(it.value);
    else if (it.name === 'timeout') timeoutMs = parseSeconds(it.value, it.spelled);
    else if (it.name === 'help') help = true;
  }
  return { mode, file, timeoutMs: timeoutMs ?? STOP_WAIT_MS[mode], help };
}

const RELOAD_OPTIONS = { file: FILE_OPTION, help: STOP_OPTIONS.help } satisfies OptionSpec;

export function parseReloadArgs(argv: readonly string[]): ReloadArgs {
  let file: string | undefined;
  let help = false;
  for (const it of commandLine(argv, RELOAD_OPTIONS, { prefix: 'reload: ', ...CONTROL_ARGS })) {
    if (it.kind === 'positional') throw new UsageError(`reload: unexpected argument "${it.value}"`);
    if (it.name === 'file') file = it.value;
    else help = true;
  }
  return { file, help };
}

function parseNodeId(v: string, cmd: string): number {
  if (!/^\d{1,9}$/.test(v)) throw new UsageError(`${cmd}: NODE_ID must be a non-negative integer, got "${v}"`);
  return Number(v);
}

export function isNodeOperation(s: string): s is NodeOperation {
  return s === 'attach' || s === 'detach' || s === 'promote';
}

const NODE_OPTIONS = {
  file: FILE_OPTION,
  help: { value: false, spellings: ['--help', '-?'] },
  host: { value: true, spellings: ['-h', '--host'] },
  port: { value: true, spellings: ['-p', '--port'] },
  user: { value: true, spellings: ['-U', '--username'] },
  database: { value: true, spellings: ['-d', '--dbname'] },
  node: { value: true, spellings: ['-n', '--node-id'] },
  gracefully: { value: false, spellings: ['-g', '--gracefully'] },
  switchover: { value: false, spellings: ['-s', '--switchover'] },
  timeout: { value: true, spellings: ['-t', '--timeout'] },
  // pcp tools' password prompt switches: the password comes from PGPASSWORD, accept and ignore
  ignore: { value: false, spellings: ['-w', '--no-password'] },
} satisfies OptionSpec;

/** Arguments of `pgrelay attach|detach|promote` (argv without the verb). */
export function parseNodeArgs(op: NodeOperation, argv: readonly string[]): NodeArgs {
  const a: NodeArgs = {
    op,
    node: -1,
    gracefully: false,
    switchover: false,
    timeoutMs: NODE_COMMAND_TIMEOUT_MS,
    help: false,
  };
  let nodeSeen = false;
  const setNode = (v: string): void => {
    if (nodeSeen) throw new UsageError(`${op}: NODE_ID given twice`);
    a.node = parseNodeId(v, op);
    nodeSeen = true;
  };
  for (const it of commandLine(argv, NODE_OPTIONS, { prefix: `${op}: `, ...CONTROL_ARGS })) {
    const v = it.value;
    if (it.kind === 'positional') {
      // trailing keywords as in the SQL form: `pgrelay detach 1 gracefully`
      if ((op === 'detach' || op === 'promote') && /^gracefully$/i.test(v)) a.gracefully = true;
      else if (op === 'promote' && /^switchover$/i.test(v)) a.switchover = true;
      else setNode(v);
      continue;
    }
    switch (it.name) {
      case 'file':
        a.file = v;
        break;
      case 'help':
        a.help = true;
        break;
      case 'host':
        if (v === '') throw new UsageError(`${op}: ${it.spelled} needs a host name`);
        a.host = v;
        break;
      case 'port':
        if (!/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > 65535)
          throw new UsageError(`${op}: invalid port "${v}"`);
        a.port = Number(v);
        break;
      case 'user':
        a.user = v;
        break;
      case 'database':
        a.database = v;
        break;
      case 'node':
        setNode(v);
        break;
      case 'gracefully':
        if (op === 'attach') throw new UsageError(`${op}: ${it.spelled} is only valid for detach and promote`);
        a.gracefully = true;
        break;
      case 'switchover':
        if (op !== 'promote') throw new UsageError(`${op}: ${it.spelled} is only valid for promote`);
        a.switchover = true;
        break;
      case 'timeout':
        a.timeoutMs = parseSeconds(v, it.spelled);
        break;
      case 'ignore':
        break;
    }
  }
  if (!nodeSeen && !a.help) throw new UsageError(`${op}: NODE_ID is required (pgrelay ${op} NODE_ID)`);
  return a;
}

/** The admin statement a node command sends. */
export function nodeCommandSql(a: Pick<NodeArgs, 'op' | 'node' | 'gracefully' | 'switchover'>): string {
  switch (a.op) {
    case 'attach':
      return describeAdminCommand({ kind: 'attach_node', node: a.node });
    case 'detach':
      return describeAdminCommand({ kind: 'detach_node', node: a.node, gracefully: a.gracefully });
    case 'promote':
      return describeAdminCommand({
        kind: 'promote_node',
        node: a.node,
        switchover: a.switchover,
        gracefully: a.gracefully,
      });
  }
}

// ---------------------------------------------------------------------------
// Output

export interface ControlIO {
  out(s: string): void;
  err(s: string): void;
}

const stdio: ControlIO = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
};

// ---------------------------------------------------------------------------
// Configuration and pid file

/**
 * The configuration file the CLI reads: -f FILE, else ./pgpool.conf when
 * present, else /etc/pgpool2/pgpool.conf (where Debian's pgpool2 reads it) when
 * present (undefined: none, built-in defaults).
 */
export function configFileOrDefault(file: string | undefined): string | undefined {
  if (file !== undefined) return file;
  for (const f of ['pgpool.conf', '/etc/pgpool2/pgpool.conf']) if (fs.existsSync(f)) return f;
  return undefined;
}

/** configFileOrDefault(), and a file named with -f must exist (built-in defaults are only for no -f at all). */
function controlConfigFile(file: string | undefined): string | undefined {
  if (file !== undefined && !fs.existsSync(file)) throw new ControlError(`configuration file "${file}" not found`);
  return configFileOrDefault(file);
}

/** The configuration the CLI reads: -f FILE, else ./pgpool.conf when present, else built-in defaults. */
export function controlConfig(file: string | undefined): Config {
  const f = controlConfigFile(file);
  try {
    return loadConfig({ file: f, onWarning: () => undefined });
  } catch (e) {
    if (e instanceof ConfigError) throw new ControlError(e.message);
    throw e;
  }
}

export interface PidFileLocation {
  /** pid_file_name, resolved as pgrelay resolves it. */
  pidFile: string;
  /** Errors of the configuration file ('' list when it loads cleanly). */
  configErrors: string[];
}

/**
 * Where the running pgrelay wrote its pid: `pid_file_name` of the configuration.
 * A configuration with errors does not stop `pgrelay stop` / `pgrelay reload`:
 * pid_file_name is then read from the file's lines directly (the last
 * occurrence, relative paths against the file's directory, as the loader does)
 * and the errors are returned for the caller to report.
 */
export function locatePidFile(file: string | undefined): PidFileLocation {
  const f = controlConfigFile(file);
  try {
    return { pidFile: loadConfig({ file: f, onWarning: () => undefined }).pid_file_name, configErrors: [] };
  } catch (e) {
    if (!(e instanceof ConfigError) || f === undefined)
      throw e instanceof ConfigError ? new ControlError(e.message) : e;
    const configErrors = e.errors.map(formatIssue);
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      throw new ControlError(e.message);
    }
    const entries = parseConfigText(text, f).entries.filter((x) => x.key === 'pid_file_name');
    const raw = entries.length > 0 ? entries[entries.length - 1]!.value : defaultConfig().pid_file_name;
    const pidFile = raw === '' || path.isAbsolute(raw) ? raw : path.resolve(path.dirname(path.resolve(f)), raw);
    return { pidFile, configErrors };
  }
}

/** A failure with a message for the user: exit code 1. */
export class ControlError extends Error {
  override readonly name = 'ControlError';
}

/** Is `pid` a live (not zombie) process? EPERM counts as alive (someone else's). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
  } catch {
    // no /proc (not Linux) or it just went away: trust kill(0)
  }
  return true;
}

/** The pid in `pid_file_name`, checked: the file exists, holds a pid, and that process runs. */
export function readPidFile(pidPath: string): number {
  if (!pidPath) throw new ControlError('pid_file_name is empty in the configuration: cannot find the running pgrelay');
  let text: string;
  try {
    text = fs.readFileSync(pidPath, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new ControlError(
        `pid file "${pidPath}" does not exist: is pgrelay running? (pid_file_name in the configuration; use -f to name the configuration file)`,
      );
    }
    throw new ControlError(`could not read pid file "${pidPath}": ${(e as Error).message}`);
  }
  const first = text.split('\n')[0]!.trim();
  if (!/^\d+$/.test(first) || Number(first) <= 1)
    throw new ControlError(`pid file "${pidPath}" does not contain a valid pid ("${first.slice(0, 40)}")`);
  const pid = Number(first);
  if (!processAlive(pid)) {
    throw new ControlError(
      `stale pid file "${pidPath}": process ${pid} is not running (pgrelay exited without removing it; delete the file)`,
    );
  }
  return pid;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until `pid` is gone; true if it went away within timeoutMs. */
export async function waitForExit(pid: number, timeoutMs: number, pollMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!processAlive(pid)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(Math.min(pollMs, Math.max(1, deadline - Date.now())));
  }
}

function signalProcess(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') throw new ControlError(`process ${pid} exited before it could be signalled`);
    if (code === 'EPERM')
      throw new ControlError(`not allowed to signal process ${pid} (run as the user pgrelay runs as)`);
    throw new ControlError(`could not send ${sig} to process ${pid}: ${(e as Error).message}`);
  }
}

function usageFail(io: ControlIO, e: unknown): number {
  if (e instanceof UsageError) {
    io.err(`pgrelay: ${e.message}\n`);
    return 2;
  }
  if (e instanceof ControlError) {
    io.err(`pgrelay: ${e.message}\n`);
    return 1;
  }
  throw e;
}

// ---------------------------------------------------------------------------
// Commands

/** `pgrelay stop [-m smart|fast|immediate] [-f CONF] [--timeout S]`. */
export async function stopCommand(argv: readonly string[], io: ControlIO = stdio): Promise<number> {
  try {
    const a = parseStopArgs(argv);
    if (a.help) {
      io.out(CONTROL_USAGE);
      return 0;
    }
    const loc = locatePidFile(a.file);
    if (loc.configErrors.length > 0)
      io.err(
        `pgrelay: warning: the configuration file has errors (pid_file_name read from it anyway):\n  ${loc.configErrors.join('\n  ')}\n`,
      );
    const pid = readPidFile(loc.pidFile);
    const sig = STOP_SIGNALS[a.mode];
    signalProcess(pid, sig);
    io.out(`pgrelay: ${a.mode} shutdown requested (${sig} sent to process ${pid}); waiting for it to exit\n`);
    if (await waitForExit(pid, a.timeoutMs)) {
      io.out(`pgrelay: process ${pid} has stopped\n`);
      return 0;
    }
    io.err(
      `pgrelay: process ${pid} is still running after ${Math.round(a.timeoutMs / 1000)} s` +
        (a.mode === 'immediate'
          ? '\n'
          : ` (sessions may still be finishing; try: pgrelay stop -m ${a.mode === 'smart' ? 'fast' : 'immediate'})\n`),
    );
    return 1;
  } catch (e) {
    return usageFail(io, e);
  }
}

/** `pgrelay reload [-f CONF]`: SIGHUP to the running instance. */
export async function reloadCommand(argv: readonly string[], io: ControlIO = stdio): Promise<number> {
  try {
    const a = parseReloadArgs(argv);
    if (a.help) {
      io.out(CONTROL_USAGE);
      return 0;
    }
    const loc = locatePidFile(a.file);
    const pid = readPidFile(loc.pidFile);
    signalProcess(pid, 'SIGHUP');
    io.out(`pgrelay: reload requested (SIGHUP sent to process ${pid}); see its log for the result\n`);
    if (loc.configErrors.length > 0) {
      // The running pgrelay rejects a file with errors whole and keeps its settings.
      io.err(
        `pgrelay: the configuration file has errors; pgrelay will keep its current configuration:\n  ${loc.configErrors.join('\n  ')}\n`,
      );
      return 1;
    }
    return 0;
  } catch (e) {
    return usageFail(io, e);
  }
}

/**
 * Where a node command connects: -h/-p, else the configuration's listen_addresses/port
 * (listen_addresses = '': its first Unix-domain socket directory).
 */
export function nodeTarget(a: NodeArgs, cfg: Config | undefined): { host: string; port: number } {
  let host = a.host;
  if (host === undefined) {
    const first = (cfg?.listen_addresses ?? '').split(',')[0]!.trim();
    const socketDir = cfg?.unix_socket_directories.find((d) => d !== '');
    host =
      cfg !== undefined && first === '' && socketDir !== undefined
        ? socketDir
        : first === '' || first === '*' || first === '0.0.0.0'
          ? '127.0.0.1'
          : first === '::'
            ? '::1'
            : first;
  }
  return { host, port: a.port ?? cfg?.port ?? 9999 };
}

function defaultUser(): string {
  if (process.env.PGUSER) return process.env.PGUSER;
  try {
    return os.userInfo().username;
  } catch {
    return 'postgres';
  }
}

interface PgErrorLike {
  message: string;
  severity?: string;
  code?: string;
  detail?: string;
  hint?: string;
}

function formatPgError(e: PgErrorLike): string {
  let s = `${e.severity ?? 'ERROR'}:  ${e.message}`;
  if (e.code) s += ` (SQLSTATE ${e.code})`;
  if (e.detail) s += `\nDETAIL:  ${e.detail}`;
  if (e.hint) s += `\nHINT:  ${e.hint}`;
  return s;
}

/**
 * `pgrelay attach|detach|promote NODE_ID ...`. `argv[0]` is the verb.
 * Connects to the proxy port with node-postgres and runs the PGPOOL statement.
 */
export async function nodeCommand(argv: readonly string[], io: ControlIO = stdio): Promise<number> {
  const op = argv[0] ?? '';
  let a: NodeArgs;
  let cfg: Config | undefined;
  try {
    if (!isNodeOperation(op)) throw new UsageError(`unknown node command "${op}" (attach, detach or promote)`);
    a = parseNodeArgs(op, argv.slice(1));
    if (a.help) {
      io.out(CONTROL_USAGE);
      return 0;
    }
    // The configuration is only needed for the default host/port.
    if (a.file !== undefined || a.host === undefined || a.port === undefined) {
      if (configFileOrDefault(a.file) !== undefined) cfg = controlConfig(a.file);
    }
  } catch (e) {
    return usageFail(io, e);
  }
  const { host, port } = nodeTarget(a, cfg);
  const sql = nodeCommandSql(a);
  // Loaded here: the other commands (stop, reload, the password tools) start without it.
  const { default: pg } = await import('pg');
  const client = new pg.Client({
    host,
    port,
    user: a.user ?? defaultUser(),
    database: a.database ?? process.env.PGDATABASE ?? 'postgres',
    password: process.env.PGPASSWORD,
    application_name: `pgrelay ${a.op}`,
    connectionTimeoutMillis: Math.min(a.timeoutMs, 30_000),
  });
  const notices: string[] = [];
  client.on('notice', (n) => notices.push(`${n.severity ?? 'NOTICE'}:  ${n.message}`));
  client.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ControlError(`no answer from ${host}:${port} within ${Math.round(a.timeoutMs / 1000)} s`)),
      a.timeoutMs,
    );
  });
  try {
    await Promise.race([client.connect(), timeout]).catch((e: unknown) => {
      if (e instanceof ControlError) throw e;
      throw new ControlError(`could not connect to pgrelay at ${host}:${port}: ${(e as Error).message}`);
    });
    await Promise.race([client.query(sql), timeout]);
    for (const n of notices) io.err(`${n}\n`);
    io.out(`${sql}: done\n`);
    return 0;
  } catch (e) {
    for (const n of notices) io.err(`${n}\n`);
    if (e instanceof ControlError) io.err(`pgrelay: ${sql}: ${e.message}\n`);
    else io.err(`pgrelay: ${sql} failed\n${formatPgError(e as PgErrorLike)}\n`);
    return 1;
  } finally {
    clearTimeout(timer);
    await Promise.race([client.end().catch(() => undefined), sleep(2000)]);
  }
}

/**
 * Dispatcher entry: `cmd` is one of CONTROL_COMMANDS, `argv` the arguments after it.
 * Resolves with the process exit code.
 */
export async function runControl(cmd: string, argv: string[]): Promise<number> {
  switch (cmd) {
    case 'stop':
      return stopCommand(argv);
    case 'reload':
      return reloadCommand(argv);
    case 'attach':
    case 'detach':
    case 'promote':
      return nodeCommand([cmd, ...argv]);
    default:
      process.stderr.write(`pgrelay: unknown command "${cmd}"\n${CONTROL_USAGE}`);
      return 2;
  }
}

export function isControlCommand(cmd: string | undefined): cmd is ControlCommand {
  return cmd !== undefined && (CONTROL_COMMANDS as readonly string[]).includes(cmd);
}
