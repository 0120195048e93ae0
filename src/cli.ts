#!/usr/bin/env node
/**
 * pgrelay command line.
 *
 *   pgrelay [-f pgpool.conf] [--port N] [--backend host:port ...] [--set key=value ...]
 *   pgrelay md5 PASSWORD | enc PASSWORD | passwd ...   (see --help)
 */
import { ConfigError } from './config/issues.js';
import { loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { createLogger } from './log.js';
import { loadEncKey, passwdCommand, pgEncOutput, pgMd5Output, type PasswdMethod } from './auth/tools.js';
import { configFileOrDefault, isControlCommand, runControl, CONTROL_USAGE } from './cli-control.js';
import { commandLine, UsageError, type OptionSpec } from './cli-args.js';
import type { Logger } from './log.js';
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import path, { dirname } from 'node:path';
import type { PcpServer } from './pcp/server.js';
import { pcpConfProblem } from './pcp/conf.js';

/**
 * The proxy's own modules (relay, cluster manager, services, PCP server), loaded only when
 * pgrelay runs: the password tools and control commands start in a third of the time.
 */
async function proxyModules() {
  const [relay, cluster, services, pcp] = await Promise.all([
    import('./server/relay.js'),
    import('./cluster/manager.js'),
    import('./services.js'),
    import('./pcp/server.js'),
  ]);
  return {
    Relay: relay.Relay,
    ClusterManager: cluster.ClusterManager,
    startServices: services.startServices,
    VERSION: services.VERSION,
    PcpServer: pcp.PcpServer,
  };
}

const HELP = `pgrelay - PostgreSQL proxy for streaming-replication clusters (pgpool-II compatible)

Usage:
  pgrelay [options]                 run the proxy in the foreground
Options:
  -f, --config-file FILE            pgpool.conf-style configuration file (default: ./pgpool.conf if it
                                    exists, else /etc/pgpool2/pgpool.conf if it exists, else none)
  -a, --hba-file FILE               pool_hba.conf (overrides hba_file)
  -F, --pcp-file FILE               pcp.conf (default: pcp.conf next to the configuration file,
                                    /etc/pgpool2/pcp.conf without one)
  -k, --key-file FILE               AES key file for pool_passwd (overrides pool_key_file)
  -d, --debug                       log_min_messages = debug1
  -n, --no-daemon                   accepted: pgrelay always runs in the foreground
  -C, -x                            accepted and ignored with a warning (pgrelay has no query cache
                                    to clear and no debug assertions)
  -m, --mode MODE stop | reload     pgpool's word order: pgrelay -f CONF -m fast stop, pgrelay -f CONF reload
  -p, --port N                      listen port (overrides the file's port)
      --backend HOST:PORT           a backend node (repeatable; replaces the file's backends)
      --set KEY=VALUE               override any parameter (repeatable)
  -D, --discard-status              ignore <logdir>/pgpool_status (nodes detached before start are used again)
  -h, --help                        this help

Password tools (pgpool's pg_md5 / pg_enc):
  pgrelay md5 PASSWORD              print md5(PASSWORD) exactly as pg_md5 (pcp.conf format)
  pgrelay md5 -m -u USER [-f CONF] PASSWORD
                                    write USER:md5… into the configured pool_passwd (pg_md5 --md5auth)
  pgrelay enc [-k KEYFILE | -K KEY] PASSWORD
                                    print the AES form exactly as pg_enc
  pgrelay enc -m -u USER [-f CONF] [-k KEYFILE | -K KEY] PASSWORD
                                    write USER:AES… into pool_passwd (pg_enc -m)
  pgrelay passwd [-f CONF] [-u USER] [--method md5|aes|scram|text] [-k KEYFILE | -K KEY] PASSWORD
                                    add or update USER's line in pool_passwd (default method md5;
                                    scram = a SCRAM-SHA-256 verifier, text = TEXT<password>)

Signals: SIGHUP re-reads pgpool.conf, pool_hba.conf and pool_passwd; SIGTERM stops accepting and lets sessions finish for up to 30 s (smart);
SIGINT does the same with 5 s (fast); a second signal stops at once.
`;

interface StartArgs {
  file?: string;
  pcpFile?: string;
  /** Options accepted for pgpool's sake that change nothing (warned about). */
  ignored: string[];
  /** pgpool's `pgpool [-m mode] stop|reload` word order. */
  control?: 'stop' | 'reload';
  mode?: string;
  set: Array<[string, string]>;
  backends: Array<{ hostname: string; port: number }>;
  discardStatus: boolean;
}

function fail(msg: string): never {
  process.stderr.write(`pgrelay: ${msg}\n`);
  process.exit(2);
}

/** A command-line mistake ends the process with exit code 2, as every other usage error. */
function orFail<T>(parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (e instanceof UsageError) fail(e.message);
    throw e;
  }
}

function printHelp(): never {
  process.stdout.write(`${HELP}\n${CONTROL_USAGE}`);
  process.exit(0);
}

const START_OPTIONS = {
  file: { value: true, spellings: ['-f', '--config-file'] },
  port: { value: true, spellings: ['-p', '--port'] },
  backend: { value: true, spellings: ['--backend'] },
  set: { value: true, spellings: ['--set'] },
  'discard-status': { value: false, spellings: ['-D', '--discard-status'] },
  // pgrelay always runs in the foreground
  'no-daemon': { value: false, spellings: ['-n', '--no-daemon'] },
  hba: { value: true, spellings: ['-a', '--hba-file'] },
  pcp: { value: true, spellings: ['-F', '--pcp-file'] },
  key: { value: true, spellings: ['-k', '--key-file'] },
  debug: { value: false, spellings: ['-d', '--debug'] },
  'clear-cache': { value: false, spellings: ['-C', '--clear-oidmaps'] },
  'debug-assertions': { value: false, spellings: ['-x', '--debug-assertions'] },
  mode: { value: true, spellings: ['-m', '--mode'] },
  help: { value: false, spellings: ['-h', '--help'] },
} satisfies OptionSpec;

/** Reads the command line in order, so that `--help` wins over a mistake after it. */
function parseStartArgs(argv: string[]): StartArgs {
  const a: StartArgs = { set: [], backends: [], discardStatus: false, ignored: [] };
  for (const it of commandLine(argv, START_OPTIONS)) {
    if (it.kind === 'positional') {
      if ((it.value === 'stop' || it.value === 'reload') && a.control === undefined) {
        a.control = it.value;
        continue;
      }
      throw new UsageError(`unknown option "${it.value}" (see pgrelay --help)`);
    }
    const v = it.value;
    switch (it.name) {
      case 'file':
        a.file = v;
        break;
      case 'port':
        a.set.push(['port', v]);
        break;
      case 'backend': {
        const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(v);
        if (!m) throw new UsageError(`--backend expects HOST:PORT, got "${v}"`);
        const port = m[2] ? Number(m[2]) : 5432;
        if (!(port > 0 && port < 65536)) throw new UsageError(`--backend: invalid port in "${v}"`);
        a.backends.push({ hostname: m[1]!.replace(/^\[|\]$/g, ''), port });
        break;
      }
      case 'set': {
        const eq = v.indexOf('=');
        if (eq <= 0) throw new UsageError(`--set expects KEY=VALUE, got "${v}"`);
        a.set.push([v.slice(0, eq).trim(), v.slice(eq + 1).trim()]);
        break;
      }
      case 'discard-status':
        a.discardStatus = true;
        break;
      case 'no-daemon':
        break;
      case 'hba':
        a.set.push(['hba_file', path.resolve(v)]);
        break;
      case 'pcp':
        a.pcpFile = path.resolve(v);
        break;
      case 'key':
        a.set.push(['pool_key_file', path.resolve(v)]);
        break;
      case 'debug':
        a.set.push(['log_min_messages', 'debug1']);
        break;
      case 'clear-cache':
      case 'debug-assertions':
        a.ignored.push(it.spelled);
        break;
      case 'mode':
        a.mode = v;
        break;
      case 'help':
        printHelp();
    }
  }
  if (a.mode !== undefined && a.control !== 'stop') throw new UsageError('-m is only valid with stop');
  return a;
}

/** pgpool's default configuration file: ./pgpool.conf, else /etc/pgpool2/pgpool.conf (Debian's), when present. */
export const SYSTEM_CONFIG_DIR = '/etc/pgpool2';

/** The pcp.conf of a configuration file (pgpool: next to pgpool.conf; /etc/pgpool2 without one). */
function defaultPcpFile(configFile: string): string {
  return path.join(configFile ? path.dirname(configFile) : SYSTEM_CONFIG_DIR, 'pcp.conf');
}

async function start(argv: string[]): Promise<void> {
  const args = orFail(() => parseStartArgs(argv));
  if (args.control) {
    const rest = [...(args.file ? ['-f', args.file] : []), ...(args.mode ? ['-m', args.mode] : [])];
    process.exit(await runControl(args.control, rest));
  }
  args.file = configFileOrDefault(args.file);
  const warnings: string[] = [];
  let config: Config;
  try {
    config = loadConfig({
      file: args.file,
      set: args.set,
      backends: args.backends.length > 0 ? args.backends : undefined,
      onWarning: (m) => warnings.push(m),
    });
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message);
    throw e;
  }
  const log = createLogger({
    level: config.log_min_messages,
    destination: config.log_destination,
    logdir: config.logdir,
  });
  for (const w of warnings) log.warn(w);
  for (const o of args.ignored)
    log.warn({ option: o }, `option ${o} is accepted for pgpool-II compatibility and ignored by pgrelay`);
  if (config.backends.length === 0) {
    log.fatal(
      'no backend configured: set backend_hostname0/backend_port0 in the configuration file or use --backend HOST:PORT',
    );
    log.flush();
    process.exit(2);
  }
  // Written first so that `pgrelay stop` finds a starting instance too.
  const pidFile = config.pid_file_name;
  writePidFile(pidFile, log);
  const { Relay, ClusterManager, startServices, VERSION, PcpServer } = await proxyModules();
  const relay = new Relay({ config, log });
  if (relay.hbaStartupError) {
    // Starting would reject every client: refuse with the line to fix instead.
    log.fatal({ hba_file: config.hba_file, err: relay.hbaStartupError }, 'pool_hba.conf cannot be used: not starting');
    log.flush();
    process.stderr.write(`pgrelay: ${relay.hbaStartupError}\n`);
    process.exit(2);
  }
  const cluster = new ClusterManager(relay.nodes, () => relay.config(), log, { discardStatus: args.discardStatus });
  // coordination = 'etcd': the elected leader of the instances decides; set before start().
  // (etcd's client is loaded only then.)
  const coordinator =
    config.coordination === 'etcd'
      ? new (await import('./coordination/coordinator.js')).EtcdCoordinator({
          cluster,
          nodes: relay.nodes,
          getConfig: () => relay.config(),
          log,
          version: VERSION,
        })
      : undefined;
  if (coordinator) cluster.setAuthority(coordinator);
  await cluster.start();
  if (coordinator) {
    await coordinator.start();
    log.info({ instance: coordinator.name, ...coordinator.status() }, 'coordination through etcd started');
  }
  const primary = relay.nodes.primaryId;
  if (primary < 0) log.warn('no primary found among the backends yet; writes will fail until one is available');
  else log.info({ node: primary }, 'primary node found');
  try {
    await relay.listen();
  } catch (e) {
    log.fatal({ err: (e as Error).message, port: config.port }, 'could not listen');
    log.flush();
    process.exit(1);
  }

  let stopping = false;
  let pcp: PcpServer | undefined;
  const shutdown = (signal: string, graceMs: number): void => {
    if (stopping || graceMs === 0) {
      log.info({ signal }, 'immediate shutdown');
      removePidFile(pidFile);
      log.flush();
      process.exit(0);
    }
    stopping = true;
    log.info({ signal, graceMs }, 'shutting down');
    pcp?.close();
    void Promise.all([relay.stop(graceMs), cluster.stop(), services.close(), coordinator?.stop()]).then(() => {
      removePidFile(pidFile);
      log.flush();
      process.exit(0);
    });
  };
  const services = await startServices(relay, cluster, log, {
    ...(coordinator ? { coordinator } : {}),
    loadOptions: { file: args.file, set: args.set, backends: args.backends.length > 0 ? args.backends : undefined },
    stop: (mode) => shutdown(`PGPOOL STOP ${mode}`, mode === 'smart' ? 30_000 : mode === 'fast' ? 5_000 : 0),
  });
  const pcpFile = args.pcpFile ?? defaultPcpFile(config.config_file);
  pcp = new PcpServer({
    config: () => relay.config(),
    log,
    pcpConfFile: pcpFile,
    run: (cmd, user) => services.admin.executeTrusted(cmd, user),
    nodes: () => relay.nodes.all(),
    primaryId: () => relay.nodes.primaryId,
  });
  try {
    const bound = await pcp.listen();
    if (bound.length > 0) {
      log.info({ pcp: bound, pcp_conf: pcpFile }, 'PCP port listening');
      const problem = pcpConfProblem(pcpFile);
      if (problem) log.warn({ pcp_conf: pcpFile }, problem);
    }
  } catch (e) {
    log.fatal({ err: (e as Error).message, pcp_port: config.pcp_port }, 'could not listen on the PCP port');
    log.flush();
    process.exit(1);
  }
  process.on('SIGTERM', () => shutdown('SIGTERM', 30_000));
  process.on('SIGINT', () => shutdown('SIGINT', 5_000));
  process.on('SIGQUIT', () => shutdown('SIGQUIT', 0));
  process.on('SIGHUP', () => {
    log.info('SIGHUP: reloading the configuration');
    services.reload();
  });
  // A bug in one session must not take every other client down with the process.
  process.on('uncaughtException', (e) => {
    log.error({ err: e.stack ?? e.message }, 'uncaught exception (pgrelay keeps running; please report this)');
  });
  // As pgpool-II's "successfully started": every port listens and the signals are handled.
  log.info({ version: VERSION, pid: process.pid }, 'pgrelay successfully started');
}

function writePidFile(path: string, log: Logger): void {
  if (!path) return;
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${process.pid}\n`);
  } catch (e) {
    log.warn(
      { pid_file_name: path, err: (e as Error).message },
      'could not write the pid file: pgrelay stop/reload will not find this process',
    );
  }
}

function removePidFile(path: string): void {
  if (!path) return;
  try {
    if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
  } catch {
    // already gone
  }
}

function passwdMethod(cmd: string, m: string): PasswdMethod {
  if (!['md5', 'aes', 'scram', 'text'].includes(m))
    throw new UsageError(`${cmd}: unknown method "${m}" (md5, aes, scram, text)`);
  return m as PasswdMethod;
}

interface ToolArgs {
  file?: string;
  user?: string;
  method?: PasswdMethod;
  keyFile?: string;
  key?: string;
  write: boolean;
  password?: string;
}

const TOOL_OPTIONS = {
  file: { value: true, spellings: ['-f', '--config-file'] },
  user: { value: true, spellings: ['-u', '--username'] },
  'key-file': { value: true, spellings: ['-k', '--key-file'] },
  key: { value: true, spellings: ['-K', '--enc-key'] },
  help: { value: false, spellings: ['-h', '--help'] },
} satisfies OptionSpec;
// pg_md5 --md5auth / pg_enc -m (write into pool_passwd) is a switch; passwd's -m names the method.
const MD5_ENC_OPTIONS = {
  ...TOOL_OPTIONS,
  write: { value: false, spellings: ['-m', '--md5auth', '--enc'] },
  method: { value: true, spellings: ['--method'] },
} satisfies OptionSpec;
const PASSWD_OPTIONS = {
  ...TOOL_OPTIONS,
  method: { value: true, spellings: ['-m', '--md5auth', '--enc', '--method'] },
} satisfies OptionSpec;

function parseToolArgs(cmd: 'md5' | 'enc' | 'passwd', argv: string[]): ToolArgs {
  const a: ToolArgs = { write: cmd === 'passwd' };
  const spec: OptionSpec = cmd === 'passwd' ? PASSWD_OPTIONS : MD5_ENC_OPTIONS;
  for (const it of commandLine(argv, spec, { prefix: `${cmd}: ` })) {
    if (it.kind === 'positional') {
      if (a.password !== undefined) throw new UsageError(`${cmd}: too many arguments`);
      a.password = it.value;
      continue;
    }
    switch (it.name) {
      case 'file':
        a.file = it.value;
        break;
      case 'user':
        a.user = it.value;
        break;
      case 'write':
        a.write = true;
        break;
      case 'method':
        a.method = passwdMethod(cmd, it.value);
        a.write = true;
        break;
      case 'key-file':
        a.keyFile = it.value;
        break;
      case 'key':
        a.key = it.value;
        break;
      case 'help':
        printHelp();
    }
  }
  return a;
}

/** `pgrelay md5 | enc | passwd`: pg_md5 / pg_enc equivalents (src/auth/tools.ts). */
function runTool(cmd: 'md5' | 'enc' | 'passwd', argv: string[]): void {
  const a = orFail(() => parseToolArgs(cmd, argv));
  if (a.password === undefined) fail(`${cmd}: a password is required (see pgrelay --help)`);
  try {
    if (!a.write && cmd === 'md5') {
      process.stdout.write(pgMd5Output(a.password));
      return;
    }
    if (!a.write && cmd === 'enc') {
      const k = loadEncKey({ key: a.key, keyFile: a.keyFile });
      for (const w of k.warnings) process.stderr.write(`WARNING: ${w}\n`);
      process.stdout.write(pgEncOutput(a.password, k.key, k.keyFile));
      return;
    }
    const file = configFileOrDefault(a.file);
    if (!file) fail(`${cmd}: no configuration file: use -f pgpool.conf (the pool_passwd path is taken from it)`);
    let config: Config;
    try {
      config = loadConfig({ file, onWarning: () => undefined });
    } catch (e) {
      if (e instanceof ConfigError) fail(e.message);
      throw e;
    }
    const method: PasswdMethod = a.method ?? (cmd === 'enc' ? 'aes' : 'md5');
    const r = passwdCommand({
      configFile: config.config_file,
      poolPasswdPath: config.pool_passwd,
      user: a.user,
      password: a.password,
      method,
      key: a.key,
      keyFile: a.keyFile ?? (config.pool_key_file || undefined),
    });
    for (const w of r.warnings) process.stderr.write(`WARNING: ${w}\n`);
    process.stdout.write(r.message);
  } catch (e) {
    fail(`${cmd}: ${(e as Error).message}`);
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const cmd = argv[0];
  if (cmd === 'md5' || cmd === 'enc' || cmd === 'passwd') {
    runTool(cmd, argv.slice(1));
    return;
  }
  if (cmd !== undefined && isControlCommand(cmd)) {
    process.exit(await runControl(cmd, argv.slice(1)));
  }
  await start(argv);
}

void main();
