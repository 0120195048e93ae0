#!/usr/bin/env node
/**
 * pgrelay command line.
 *
 *   pgrelay [-f pgpool.conf] [--port N] [--backend host:port ...] [--set key=value ...]
 *   pgrelay md5 PASSWORD | enc PASSWORD | passwd ...   (see --help)
 */
import { loadConfig, ConfigError } from './config/load.js';
import type { Config } from './config/types.js';
import { createLogger } from './log.js';
import { Relay } from './server.js';
import { detectPrimary } from './cluster/probe.js';

const HELP = `pgrelay - PostgreSQL proxy for streaming-replication clusters (pgpool-II compatible)

Usage:
  pgrelay [options]                 run the proxy in the foreground
Options:
  -f, --config-file FILE            pgpool.conf-style configuration file
  -p, --port N                      listen port (overrides the file's port)
      --backend HOST:PORT           a backend node (repeatable; replaces the file's backends)
      --set KEY=VALUE               override any parameter (repeatable)
  -h, --help                        this help

Signals: SIGTERM stops accepting and lets sessions finish for up to 30 s (smart);
SIGINT does the same with 5 s (fast); a second signal stops at once.
`;

interface StartArgs {
  file?: string;
  set: Array<[string, string]>;
  backends: Array<{ hostname: string; port: number }>;
}

function fail(msg: string): never {
  process.stderr.write(`pgrelay: ${msg}\n`);
  process.exit(2);
}

function parseStartArgs(argv: string[]): StartArgs {
  const a: StartArgs = { set: [], backends: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) fail(`option ${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '-f':
      case '--config-file':
        a.file = next();
        break;
      case '-p':
      case '--port':
        a.set.push(['port', next()]);
        break;
      case '--backend': {
        const v = next();
        const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(v);
        if (!m) fail(`--backend expects HOST:PORT, got "${v}"`);
        const port = m[2] ? Number(m[2]) : 5432;
        if (!(port > 0 && port < 65536)) fail(`--backend: invalid port in "${v}"`);
        a.backends.push({ hostname: m[1].replace(/^\[|\]$/g, ''), port });
        break;
      }
      case '--set': {
        const v = next();
        const eq = v.indexOf('=');
        if (eq <= 0) fail(`--set expects KEY=VALUE, got "${v}"`);
        a.set.push([v.slice(0, eq).trim(), v.slice(eq + 1).trim()]);
        break;
      }
      case '-n':
      case '--no-daemon':
        break; // pgrelay always runs in the foreground
      case '-h':
      case '--help':
        process.stdout.write(HELP);
        process.exit(0);
        break;
      default:
        if (arg.startsWith('--port=')) a.set.push(['port', arg.slice(7)]);
        else if (arg.startsWith('--backend=')) argv.splice(i + 1, 0, arg.slice(10)), (argv[i] = '--backend'), i--;
        else fail(`unknown option "${arg}" (see pgrelay --help)`);
    }
  }
  return a;
}

async function start(argv: string[]): Promise<void> {
  const args = parseStartArgs(argv);
  const warnings: string[] = [];
  let config: Config;
  try {
    config = loadConfig({ file: args.file, set: args.set, backends: args.backends.length > 0 ? args.backends : undefined, onWarning: (m) => warnings.push(m) });
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message);
    throw e;
  }
  const log = createLogger({ level: config.log_min_messages, destination: config.log_destination, logdir: config.logdir });
  for (const w of warnings) log.warn(w);
  if (config.backends.length === 0) {
    log.fatal('no backend configured: set backend_hostname0/backend_port0 in the configuration file or use --backend HOST:PORT');
    log.flush();
    process.exit(2);
  }
  const relay = new Relay({ config, log });
  const primary = await detectPrimary(relay.nodes, config, log);
  if (primary < 0) log.warn('no primary found among the backends; writes will fail until one is available');
  else log.info({ node: primary }, 'primary node found');
  try {
    await relay.listen();
  } catch (e) {
    log.fatal({ err: (e as Error).message, port: config.port }, 'could not listen');
    log.flush();
    process.exit(1);
  }

  let stopping = false;
  const shutdown = (signal: string, graceMs: number): void => {
    if (stopping) {
      log.info({ signal }, 'immediate shutdown');
      log.flush();
      process.exit(0);
    }
    stopping = true;
    log.info({ signal, graceMs }, 'shutting down');
    void relay.stop(graceMs).then(() => {
      log.flush();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM', 30_000));
  process.on('SIGINT', () => shutdown('SIGINT', 5_000));
  // A bug in one session must not take every other client down with the process.
  process.on('uncaughtException', (e) => {
    log.error({ err: e.stack ?? e.message }, 'uncaught exception (pgrelay keeps running; please report this)');
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  await start(argv);
}

void main();
