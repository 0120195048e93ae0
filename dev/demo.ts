/**
 * `npm run demo`: a local primary + 2 hot standbys (data under
 * ./.pgrelay-demo/cluster, recreated on every run) with pgrelay in front on
 * 127.0.0.1:9999 (or $PGRELAY_PORT). Ctrl-C stops pgrelay, then the cluster.
 *
 * Compiled by dev/tsconfig.json into dev/dist/, apart from the package: it runs
 * the proxy the package builds (dist/cli.js) as a user would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DevCluster } from './devcluster.js';

const HOST = '127.0.0.1';

function say(msg: string): void {
  process.stderr.write(`[demo] ${msg}\n`);
}

function portInUse(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    srv.listen(port, HOST, () => srv.close(() => resolve(null)));
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 1000);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

function q(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

async function main(): Promise<number> {
  const portText = process.env.PGRELAY_PORT ?? '9999';
  const port = Number(portText);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    say(`PGRELAY_PORT=${portText} is not a valid port`);
    return 1;
  }
  const busy = await portInUse(port);
  if (busy !== null) {
    say(
      busy === 'EADDRINUSE'
        ? `port ${port} on ${HOST} is already in use (another pgrelay/pgpool?). Stop it or run: PGRELAY_PORT=<port> npm run demo`
        : `cannot listen on ${HOST}:${port}: ${busy}`,
    );
    return 1;
  }

  const demoDir = path.resolve(process.cwd(), '.pgrelay-demo');
  const clusterDir = path.join(demoDir, 'cluster');
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const cli = process.env.PGRELAY_CLI ?? path.join(repoRoot, 'dist', 'cli.js');
  if (!fs.existsSync(cli)) {
    say(`${cli} not found; run npm run build`);
    return 1;
  }

  // Fresh start: stop servers a killed earlier demo may have left, wipe the data.
  DevCluster.stopLeftovers(clusterDir);
  await fsp.rm(clusterDir, { recursive: true, force: true });
  await fsp.mkdir(demoDir, { recursive: true });

  say(`starting PostgreSQL primary + 2 standbys under ${clusterDir} ...`);
  const t0 = Date.now();
  let cluster: DevCluster;
  try {
    cluster = await DevCluster.start({ standbys: 2, baseDir: clusterDir, keep: false });
  } catch (e) {
    say(`could not start the cluster: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
  say(
    `cluster up in ${Date.now() - t0} ms: ${cluster.nodes.map((n) => `${n.id === 0 ? 'primary' : 'standby'} node${n.id}=${n.host}:${n.port}`).join(', ')}`,
  );

  const confPath = path.join(demoDir, 'pgpool.conf');
  const lines = [
    '# Written by `npm run demo` (recreated on every run).',
    `listen_addresses = ${q(HOST)}`,
    `port = ${port}`,
    `pid_file_name = ${q(path.join(demoDir, 'pgrelay.pid'))}`,
    `logdir = ${q(demoDir)}`,
    'log_connections = on',
    'log_disconnections = on',
    "sr_check_user = 'postgres'",
    'sr_check_period = 5',
    "health_check_user = 'postgres'",
    'health_check_period = 5',
    'health_check_max_retries = 1',
    '',
  ];
  for (const n of cluster.nodes) {
    lines.push(
      `backend_hostname${n.id} = ${q(n.host)}`,
      `backend_port${n.id} = ${n.port}`,
      `backend_weight${n.id} = 1`,
      `backend_data_directory${n.id} = ${q(n.dataDir)}`,
      `backend_application_name${n.id} = ${q(`server${n.id}`)}`,
      '',
    );
  }
  await fsp.writeFile(confPath, lines.join('\n'));

  say(`starting pgrelay: node ${path.relative(process.cwd(), cli)} -f ${path.relative(process.cwd(), confPath)}`);
  const child: ChildProcess = spawn(process.execPath, [cli, '-f', confPath], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  let childExit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const childExited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      childExit = { code, signal };
      resolve();
    });
    child.once('error', (err) => {
      say(`could not spawn pgrelay: ${err.message}`);
      childExit = { code: null, signal: null };
      resolve();
    });
  });

  let shuttingDown = false;
  let exitCode = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));

  const shutdown = async (why: string, code: number): Promise<void> => {
    if (shuttingDown) return;
    shuttingDown = true;
    exitCode = code;
    say(childExit ? why : `${why}: stopping pgrelay ...`);
    if (!childExit) {
      child.kill('SIGTERM');
      const t = setTimeout(() => {
        say('pgrelay did not exit within 10 s, killing it');
        child.kill('SIGKILL');
      }, 10_000);
      await childExited;
      clearTimeout(t);
    }
    say('stopping the cluster ...');
    await cluster.stop();
    say('bye');
    done();
  };

  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      say(`second ${sig}: immediate shutdown`);
      child.kill('SIGKILL');
      cluster.emergencyStopSync();
      process.exit(1);
    }
    void shutdown(`got ${sig}`, 0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  void childExited.then(() => {
    if (!shuttingDown) {
      const info = childExit ?? { code: null, signal: null };
      void shutdown(`pgrelay exited on its own (code ${String(info.code)}, signal ${String(info.signal)})`, 1);
    }
  });

  // Wait for pgrelay to listen, then tell the user how to connect.
  const deadline = Date.now() + 15_000;
  while (!shuttingDown) {
    if (await canConnect(port)) {
      const bar = '-'.repeat(64);
      process.stderr.write(
        [
          '',
          bar,
          ` pgrelay is listening on ${HOST}:${port}`,
          '',
          `   psql -h ${HOST} -p ${port} -U postgres`,
          `   pgbench -h ${HOST} -p ${port} -U postgres -i postgres`,
          '',
          ' backends (direct):',
          ...cluster.nodes.map(
            (n) =>
              `   node${n.id} ${n.id === cluster.primaryId ? 'primary' : 'standby'}  psql -h ${n.host} -p ${n.port} -U postgres`,
          ),
          '',
          ` config: ${confPath}`,
          ' Ctrl-C stops pgrelay and the cluster.',
          bar,
          '',
        ].join('\n'),
      );
      break;
    }
    if (Date.now() > deadline) {
      void shutdown(`pgrelay did not accept connections on ${HOST}:${port} within 15 s`, 1);
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  await finished;
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    say(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
