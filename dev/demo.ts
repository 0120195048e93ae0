/**
 * `npm run demo`: a local primary + 2 hot standbys (data under
 * ./.pgrelay-demo/cluster, recreated on every run) with pgrelay in front on
 * 127.0.0.1:9999 (or $PGRELAY_PORT). Ctrl-C stops pgrelay, then the cluster.
 *
 * `npm run demo -- --instances N` (N ≥ 2): also a single-member etcd (`etcd`
 * from Debian's etcd-server, or $ETCD_BIN) and N pgrelay instances with
 * coordination = 'etcd' on ports 9999, 10000, … (see README "Running several
 * instances").
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

/** `--instances N` (or `--instances=N`); 1 without it. */
function instancesArg(argv: string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = a === '--instances' ? argv[i + 1] : a.startsWith('--instances=') ? a.slice(12) : undefined;
    if (v !== undefined) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 9) throw new Error(`--instances: expected 1..9, got "${v}"`);
      return n;
    }
  }
  return 1;
}

function freeLocalPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const p = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
}

/** A single-member etcd for the demo; resolves with its client URL once it listens. */
async function startEtcd(dir: string): Promise<{ url: string; child: ChildProcess }> {
  const bin = process.env.ETCD_BIN ?? 'etcd';
  const client = await freeLocalPort();
  const peer = await freeLocalPort();
  const url = `http://${HOST}:${client}`;
  const child = spawn(
    bin,
    [
      '--name',
      'demo',
      '--data-dir',
      path.join(dir, 'etcd'),
      '--listen-client-urls',
      url,
      '--advertise-client-urls',
      url,
      '--listen-peer-urls',
      `http://${HOST}:${peer}`,
      '--initial-advertise-peer-urls',
      `http://${HOST}:${peer}`,
      '--initial-cluster',
      `demo=http://${HOST}:${peer}`,
      '--logger',
      'zap',
      '--log-level',
      'error',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (e) =>
      reject(new Error(`could not run ${bin} (${e.message}); install etcd-server or set ETCD_BIN`)),
    );
    child.once('exit', (code) => reject(new Error(`etcd exited (code ${String(code)})`)));
  });
  const deadline = Date.now() + 15_000;
  const listening = (async () => {
    while (!(await canConnect(client))) {
      if (Date.now() > deadline) throw new Error('etcd did not listen within 15 s');
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  await Promise.race([listening, failed]);
  failed.catch(() => undefined);
  return { url, child };
}

async function main(): Promise<number> {
  const portText = process.env.PGRELAY_PORT ?? '9999';
  const port = Number(portText);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    say(`PGRELAY_PORT=${portText} is not a valid port`);
    return 1;
  }
  let instances: number;
  try {
    instances = instancesArg(process.argv.slice(2));
  } catch (e) {
    say((e as Error).message);
    return 1;
  }
  const ports = Array.from({ length: instances }, (_, i) => port + i);
  for (const p of ports) {
    const busy = await portInUse(p);
    if (busy !== null) {
      say(
        busy === 'EADDRINUSE'
          ? `port ${p} on ${HOST} is already in use (another pgrelay/pgpool?). Stop it or run: PGRELAY_PORT=<port> npm run demo`
          : `cannot listen on ${HOST}:${p}: ${busy}`,
      );
      return 1;
    }
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

  let etcd: { url: string; child: ChildProcess } | undefined;
  if (instances > 1) {
    await fsp.rm(path.join(demoDir, 'etcd'), { recursive: true, force: true });
    try {
      etcd = await startEtcd(demoDir);
    } catch (e) {
      say(`could not start etcd: ${(e as Error).message}`);
      await cluster.stop();
      return 1;
    }
    say(`etcd listening on ${etcd.url}`);
  }

  const confPaths: string[] = [];
  for (const [k, p] of ports.entries()) {
    const dir = instances > 1 ? path.join(demoDir, `instance${k}`) : demoDir;
    await fsp.mkdir(dir, { recursive: true });
    const confPath = path.join(dir, 'pgpool.conf');
    confPaths.push(confPath);
    const lines = [
      '# Written by `npm run demo` (recreated on every run).',
      `listen_addresses = ${q(HOST)}`,
      `port = ${p}`,
      `pid_file_name = ${q(path.join(dir, 'pgrelay.pid'))}`,
      `logdir = ${q(dir)}`,
      'log_connections = on',
      'log_disconnections = on',
      "sr_check_user = 'postgres'",
      'sr_check_period = 5',
      "health_check_user = 'postgres'",
      'health_check_period = 5',
      'health_check_max_retries = 1',
      '',
    ];
    if (etcd)
      lines.push(
        "coordination = 'etcd'",
        `etcd_endpoints = ${q(etcd.url)}`,
        "cluster_name = 'demo'",
        `instance_name = ${q(`pgrelay${k}`)}`,
        'etcd_lease_ttl = 10',
        "log_min_messages = 'info'",
        '',
      );
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
  }

  const children: ChildProcess[] = [];
  const exits: Array<Promise<void>> = [];
  let childExit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  for (const confPath of confPaths) {
    say(`starting pgrelay: node ${path.relative(process.cwd(), cli)} -f ${path.relative(process.cwd(), confPath)}`);
    const child: ChildProcess = spawn(process.execPath, [cli, '-f', confPath], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    children.push(child);
    exits.push(
      new Promise<void>((resolve) => {
        child.once('exit', (code, signal) => {
          childExit ??= { code, signal };
          resolve();
        });
        child.once('error', (err) => {
          say(`could not spawn pgrelay: ${err.message}`);
          childExit ??= { code: null, signal: null };
          resolve();
        });
      }),
    );
  }
  const anyExited = Promise.race(exits);
  const allExited = Promise.all(exits);

  let shuttingDown = false;
  let exitCode = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));

  const shutdown = async (why: string, code: number): Promise<void> => {
    if (shuttingDown) return;
    shuttingDown = true;
    exitCode = code;
    say(`${why}: stopping pgrelay ...`);
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const t = setTimeout(() => {
      say('pgrelay did not exit within 10 s, killing it');
      for (const child of children) child.kill('SIGKILL');
    }, 10_000);
    await allExited;
    clearTimeout(t);
    if (etcd) {
      say('stopping etcd ...');
      etcd.child.kill('SIGTERM');
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
      for (const child of children) child.kill('SIGKILL');
      etcd?.child.kill('SIGKILL');
      cluster.emergencyStopSync();
      process.exit(1);
    }
    void shutdown(`got ${sig}`, 0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  void anyExited.then(() => {
    if (!shuttingDown) {
      const info = childExit ?? { code: null, signal: null };
      void shutdown(`a pgrelay exited on its own (code ${String(info.code)}, signal ${String(info.signal)})`, 1);
    }
  });

  // Wait for pgrelay to listen, then tell the user how to connect.
  const deadline = Date.now() + 90_000;
  while (!shuttingDown) {
    if ((await Promise.all(ports.map(canConnect))).every(Boolean)) {
      const bar = '-'.repeat(64);
      process.stderr.write(
        [
          '',
          bar,
          ports.length > 1
            ? ` ${ports.length} pgrelay instances coordinated through etcd (${etcd?.url}) on ${HOST}:${ports.join(', ')}`
            : ` pgrelay is listening on ${HOST}:${port}`,
          '',
          `   psql -h ${HOST} -p ${port} -U postgres`,
          `   pgbench -h ${HOST} -p ${port} -U postgres -i postgres`,
          ...(ports.length > 1 ? [`   psql -h ${HOST} -p ${port} -U postgres -c 'SHOW pgrelay_instances'`] : []),
          '',
          ' backends (direct):',
          ...cluster.nodes.map(
            (n) =>
              `   node${n.id} ${n.id === cluster.primaryId ? 'primary' : 'standby'}  psql -h ${n.host} -p ${n.port} -U postgres`,
          ),
          '',
          ` config: ${confPaths.join(', ')}`,
          ' Ctrl-C stops pgrelay and the cluster.',
          bar,
          '',
        ].join('\n'),
      );
      break;
    }
    if (Date.now() > deadline) {
      void shutdown(`pgrelay did not accept connections on ${HOST}:${ports.join(', ')} within 90 s`, 1);
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
