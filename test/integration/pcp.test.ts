/**
 * The PCP port with pgpool's own pcp_* programs (Debian package pgpool2, 4.3),
 * on an OWN DevCluster (primary 0, standbys 1 and 2), one pgrelay for the
 * file, in this order:
 *
 *  1. the reports (pcp_node_count, pcp_node_info [-v], pcp_proc_count,
 *     pcp_proc_info, pcp_pool_status, pcp_health_check_stats,
 *     pcp_watchdog_info), compared with a real pgpool-II started on the same
 *     cluster and configuration where pgpool is installed;
 *  2. wrong password, unknown packet type, bad length, a command before
 *     authentication: pgpool's FATAL replies; the proxy keeps serving;
 *  3. pcp_detach_node / pcp_attach_node / pcp_reload_config / pcp_promote_node
 *     errors;
 *  4. pcp_recovery_node 2: standby 2 stopped and wiped, rebuilt by the sample
 *     scripts (examples/recovery_1st_stage, examples/pgpool_remote_start)
 *     through the pgpool_recovery extension (Debian postgresql-15-pgpool2),
 *     then up in SHOW pool_nodes and streaming;
 *  5. pcp_promote_node -g -s 1: waits while a session uses the primary, then
 *     failover_command (examples/failover.sh) promotes node 1, which becomes
 *     the primary;
 *  6. pcp_stop_pgpool -m fast: pgrelay exits.
 * Then pgpool's command line: `-n -f conf -F pcp.conf -a pool_hba.conf -k
 * keyfile` starts, `pgrelay -f conf -m fast stop` stops; without -f, pgrelay
 * reads ./pgpool.conf and the pcp.conf next to it, and `pgrelay stop` finds it.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster, freePort } from '../../dev/devcluster.js';
import { PLACEHOLDERS, REPO } from '../support/failover.js';
import { CLI_PATH, type ProxyHandle, renderConf, runCommand, runPsql, startProxy } from '../support/proxy.js';
import { pollUntil } from '../support/wait.js';

const SBIN = '/usr/sbin';
const PGPOOL = path.join(SBIN, 'pgpool');
const RECOVERY_EXTENSION = '/usr/share/postgresql/15/extension/pgpool_recovery.control';
const PCP_USER = 'pcpadmin';
const PCP_PASSWORD = 'pcp secret';

let cluster: DevCluster;
let proxy: ProxyHandle;
let work: string;
let pcpPort: number;
let passFile: string;

function md5(s: string): string {
  return execFileSync('md5sum', { input: s }).toString().split(' ')[0]!;
}

function pcpEnv(file = passFile): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', PCPPASSFILE: file, LC_ALL: 'C.UTF-8', HOME: work };
}

/** Run Debian's pcp_<cmd> against a PCP port with the password from PCPPASSFILE (-w). */
async function pcp(cmd: string, args: string[], port = pcpPort, file = passFile, timeoutMs = 30_000) {
  return runCommand(
    path.join(SBIN, `pcp_${cmd}`),
    ['-h', '127.0.0.1', '-p', String(port), '-U', PCP_USER, '-w', ...args],
    {
      env: pcpEnv(file),
      timeoutMs,
    },
  );
}

async function pcpOk(cmd: string, args: string[] = [], timeoutMs?: number): Promise<string> {
  const r = await pcp(cmd, args, pcpPort, passFile, timeoutMs);
  expect(r.stderr, `pcp_${cmd} ${args.join(' ')}`).toBe('');
  expect(r.code, `pcp_${cmd} ${args.join(' ')}: ${r.stdout}`).toBe(0);
  return r.stdout;
}

/** pcp_node_info lines without the last-status-change time (differs between two processes). */
function nodeLines(out: string): string[] {
  return out
    .trim()
    .split('\n')
    .map((l) => l.replace(/ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, ' <time>'));
}

/** A raw PCP conversation: send bytes, read until the server closes. */
function rawPcp(bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(pcpPort, '127.0.0.1');
    const chunks: Buffer[] = [];
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`raw PCP: no close within 10 s; got ${Buffer.concat(chunks).toString('latin1')}`));
    }, 10_000);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks));
    });
  });
}

function pkt(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(5);
  b.write(type, 0, 'latin1');
  b.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([b, body]);
}

const CONF = {
  sr_check_period: 1,
  health_check_period: 0,
  search_primary_node_timeout: 10,
  admin_users: 'postgres',
  log_min_messages: 'info',
  recovery_user: 'postgres',
  recovery_1st_stage_command: 'recovery_1st_stage',
  recovery_timeout: 60,
};

describe('PCP port with pgpool-II 4.3 pcp_* programs', () => {
  beforeAll(async () => {
    for (const f of ['pcp_node_info', 'pcp_recovery_node'])
      if (!fs.existsSync(path.join(SBIN, f)))
        throw new Error(`${SBIN}/${f} missing: install Debian's pgpool2 (bash .ci/run does)`);
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'pcp-test-'));
    fs.chmodSync(work, 0o755);
    cluster = await DevCluster.start({ standbys: 2 });
    pcpPort = await freePort();
    fs.writeFileSync(path.join(work, 'pcp.conf'), `# USERID:MD5PASSWD\n${PCP_USER}:${md5(PCP_PASSWORD)}\n`);
    passFile = path.join(work, 'pcppass');
    fs.writeFileSync(passFile, `*:*:${PCP_USER}:${PCP_PASSWORD}\n`, { mode: 0o600 });
    proxy = await startProxy({
      cluster,
      config: {
        ...CONF,
        pcp_port: pcpPort,
        failover_command: `${path.join(REPO, 'examples', 'failover.sh')} ${PLACEHOLDERS}`,
      },
      args: ['-F', path.join(work, 'pcp.conf')],
      env: { PG_BIN: cluster.pgBin },
    });
    // The sr check has filled the replication fields.
    await pollUntil(
      () => pcp('node_info', ['-n', '2']),
      (r) => / streaming async /.test(r.stdout),
      { what: 'standby 2 streaming in pcp_node_info' },
    );
  }, 120_000);

  afterAll(async () => {
    await proxy?.stop();
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('reports: node count/info, processes, pool status, health-check stats, watchdog (as a real pgpool)', async () => {
    expect((await pcpOk('node_count')).trim()).toBe('3');
    // The Unix-domain socket <pcp_socket_dir>/.s.PGSQL.<pcp_port> (a host starting with '/').
    const viaSocket = await runCommand(
      path.join(SBIN, 'pcp_node_count'),
      ['-h', proxy.dir, '-p', String(pcpPort), '-U', PCP_USER, '-w'],
      { env: pcpEnv(), timeoutMs: 30_000 },
    );
    expect(viaSocket.stdout).toBe('3\n');
    const info = await pcpOk('node_info');
    const lines = nodeLines(info);
    expect(lines).toHaveLength(3);
    for (const n of cluster.nodes) {
      expect(lines[n.id]).toMatch(
        new RegExp(
          `^127\\.0\\.0\\.1 ${n.port} [12] 0\\.333333 (waiting|up) unknown ${n.id === 0 ? 'primary' : 'standby'} unknown 0 ${n.id === 0 ? 'none none' : 'streaming async'} <time>$`,
        ),
      );
    }
    const verbose = await pcpOk('node_info', ['-v', '-n', '1']);
    expect(verbose).toMatch(
      /^Hostname {15}: 127\.0\.0\.1\nPort {19}: \d+\nStatus {17}: [12]\nWeight {17}: 0\.333333\n/,
    );
    expect(verbose).toMatch(/Role {19}: standby\n/);
    expect(verbose).toMatch(
      /Replication State {6}: streaming\nReplication Sync State : async\nLast Status Change {5}: \d{4}-/,
    );
    expect((await pcp('node_info', ['-n', '7'])).stderr).toBe(
      'ERROR:  informing node info failed\nDETAIL:  invalid node ID : 7\n\n',
    );

    const health = (await pcpOk('health_check_stats', ['-n', '0'])).trim().split(' ');
    expect(health.slice(0, 3)).toEqual(['0', '127.0.0.1', String(cluster.nodes[0]!.port)]);
    expect((await pcpOk('health_check_stats', ['-v', '-n', '1'])).split('\n')[0]).toBe(
      'Node Id                       : 1',
    );

    const wd = await pcp('watchdog_info', []);
    expect(wd.stderr).toBe('ERROR:  PCP: informing watchdog info failed\nDETAIL:  watchdog is not enabled\n\n');

    const status = await pcpOk('pool_status');
    expect(status).toMatch(new RegExp(`name : port\nvalue: ${proxy.port}\ndesc : `));
    expect(status).toMatch(/name : backend_hostname0\nvalue: 127\.0\.0\.1\n/);

    // A session: one "process" (the session's virtual pid), one ProcessInfo per node.
    const held = net.connect(proxy.port, '127.0.0.1');
    held.on('error', () => undefined);
    try {
      const c = await (await import('../support/clients.js')).pgClient(
        { host: '127.0.0.1', port: proxy.port },
        { user: 'postgres', database: 'postgres' },
      );
      await c.query('SELECT 1');
      const count = (await pcpOk('proc_count')).trim().split(' ');
      expect(count.length).toBeGreaterThanOrEqual(1);
      const procs = await pcpOk('proc_info', ['-a']);
      expect(procs).toMatch(/postgres postgres \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
      const pid = procs
        .trim()
        .split('\n')
        .find((l) => l.startsWith('postgres postgres'))!;
      expect(pid).toBeDefined();
      await c.end();
    } finally {
      held.destroy();
    }

    // The same commands against pgpool-II on the same cluster and configuration.
    if (!fs.existsSync(PGPOOL)) return;
    const dir = fs.mkdtempSync(path.join(work, 'pgpool-'));
    fs.chmodSync(dir, 0o777);
    const asPostgres = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--'] : [];
    const { spawn } = await import('node:child_process');
    // Ports picked free may be taken by another test before pgpool binds them: pgpool then
    // exits, and is started again on other ports (at most three times); its output (the last
    // 4 kB) is in the error if it never answers.
    let child: ReturnType<typeof spawn> | undefined;
    let pPort = 0;
    let output = '';
    let theirs: Awaited<ReturnType<typeof pcp>> | undefined;
    try {
      for (let attempt = 1; theirs === undefined; attempt++) {
        const port = await freePort();
        pPort = await freePort();
        const conf = {
          ...proxy.config(),
          ...CONF,
          admin_users: undefined,
          backend_clustering_mode: 'streaming_replication',
          port,
          pcp_port: pPort,
          pcp_listen_addresses: '127.0.0.1',
          socket_dir: dir,
          pcp_socket_dir: dir,
          logdir: dir,
          pid_file_name: path.join(dir, 'pgpool.pid'),
          num_init_children: 2,
          max_pool: 1,
        } as Record<string, string | number | boolean | undefined>;
        delete conf.admin_users;
        delete conf.unix_socket_directories;
        delete conf.failover_command;
        fs.writeFileSync(path.join(dir, 'pgpool.conf'), renderConf(conf as Record<string, string | number | boolean>));
        fs.copyFileSync(path.join(work, 'pcp.conf'), path.join(dir, 'pcp.conf'));
        fs.writeFileSync(path.join(dir, 'pool_hba.conf'), 'host all all 127.0.0.1/32 trust\n');
        fs.rmSync(path.join(dir, 'pgpool.pid'), { force: true });
        if (asPostgres.length) execFileSync('chown', ['-R', 'postgres', dir]);
        const args = [PGPOOL, '-n', '-f', path.join(dir, 'pgpool.conf'), '-F', path.join(dir, 'pcp.conf')];
        const started = spawn(
          asPostgres[0] ?? args[0]!,
          [...asPostgres.slice(1), ...args].slice(asPostgres.length ? 0 : 1),
          {
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        child = started;
        const keep = (d: Buffer): void => {
          output = (output + d.toString()).slice(-4096);
        };
        started.stdout?.on('data', keep);
        started.stderr?.on('data', keep);
        const exited = (): boolean => started.exitCode !== null || started.signalCode !== null;
        const r = await pollUntil(
          async () => (exited() ? undefined : await pcp('node_info', [], pPort)),
          (x) =>
            x === undefined ||
            (x.code === 0 && x.stdout.split('\n').filter((l) => / streaming async /.test(l)).length === 2),
          { what: 'pgpool answering pcp_node_info with both standbys streaming', timeoutMs: 30_000, intervalMs: 500 },
        ).catch((e: Error) => {
          throw new Error(`${e.message}; pgpool's output: ${output}`);
        });
        if (r !== undefined) theirs = r;
        else if (attempt >= 3) throw new Error(`pgpool exited three times; its output: ${output}`);
      }
      expect(nodeLines(info).map((l) => l.replace(/ [12] 0\.333333 (waiting|up) /, ' S W '))).toEqual(
        nodeLines(theirs.stdout).map((l) => l.replace(/ [12] 0\.333333 (waiting|up) /, ' S W ')),
      );
      expect((await pcp('node_count', [], pPort)).stdout).toBe('3\n');
      for (const [cmd, a] of [
        ['watchdog_info', []],
        ['node_info', ['-n', '7']],
      ] as const) {
        const mine = await pcp(cmd, [...a]);
        const their = await pcp(cmd, [...a], pPort);
        expect(mine.stderr, `pcp_${cmd}`).toBe(their.stderr);
        expect(mine.stdout, `pcp_${cmd}`).toBe(their.stdout);
      }
      const hMine = (await pcpOk('health_check_stats', ['-n', '1'])).trim().split(' ');
      const hTheirs = (await pcp('health_check_stats', ['-n', '1'], pPort)).stdout.trim().split(' ');
      expect(hMine.length).toBe(hTheirs.length);
      expect(hMine.slice(0, 3)).toEqual(hTheirs.slice(0, 3));
      const sMine = (await pcpOk('pool_status')).match(/^name : /gm)?.length ?? 0;
      expect(sMine).toBeGreaterThan(50);
      const badMine = await pcp('node_count', [], pcpPort, path.join(work, 'nopass'));
      const badTheirs = await pcp('node_count', [], pPort, path.join(work, 'nopass'));
      expect(badMine.stderr).toBe(badTheirs.stderr);
    } finally {
      const c = child;
      c?.kill('SIGTERM');
      await pollUntil(
        () => c === undefined || c.exitCode !== null || c.signalCode !== null,
        (x) => x,
        { what: 'pgpool exit', timeoutMs: 20_000 },
      ).catch(() => c?.kill('SIGKILL'));
    }
  }, 120_000);

  it('bad input on the PCP port gets pgpool FATAL replies and never affects the proxy', async () => {
    fs.writeFileSync(path.join(work, 'wrongpass'), `*:*:${PCP_USER}:wrong\n`, { mode: 0o600 });
    const wrong = await pcp('node_count', [], pcpPort, path.join(work, 'wrongpass'));
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toBe(
      `FATAL:  authentication failed for user "${PCP_USER}"\nDETAIL:  username and/or password does not match\n\n`,
    );

    const before = (await rawPcp(pkt('L'))).toString('latin1');
    expect(before).toContain('authentication failed for new PCP connection');
    const badLen = Buffer.from([0x4c, 0x7f, 0xff, 0xff, 0xff]);
    expect((await rawPcp(badLen)).toString('latin1')).toContain('incorrect packet length (2147483647)');
    const garbage = (await rawPcp(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toString('latin1');
    expect(garbage).toMatch(/invalid PCP packet|authentication failed/);

    const r = await runPsql(['-At', '-c', 'SELECT 42'], { port: proxy.port, timeoutMs: 15_000 });
    expect(r.stdout.trim()).toBe('42');
    expect(proxy.exited).toBeDefined();
  });

  it('detach, attach, reload, promote errors', async () => {
    expect((await pcpOk('detach_node', ['-n', '2'])).trim()).toBe('pcp_detach_node -- Command Successful');
    expect(nodeLines(await pcpOk('node_info', ['-n', '2']))[0]).toMatch(/ 3 0\.333333 down /);
    expect((await pcpOk('attach_node', ['-n', '2'])).trim()).toBe('pcp_attach_node -- Command Successful');
    expect(nodeLines(await pcpOk('node_info', ['-n', '2']))[0]).toMatch(/ 1 0\.333333 waiting /);
    expect((await pcpOk('reload_config')).trim()).toBe('pcp_reload_config -- Command Successful');
    await proxy.waitForLog(/configuration reloaded/);
    const p0 = await pcp('promote_node', ['-n', '0']);
    expect(p0.stderr).toBe(
      "FATAL:  invalid promote request\nDETAIL:  specified node is already primary node, can't promote node id 0\n\n",
    );
    const p9 = await pcp('promote_node', ['-n', '9']);
    expect(p9.stderr).toBe('ERROR:  could not process promote request\nDETAIL:  node id 9 is not valid\n\n');
    const r0 = await pcp('recovery_node', ['-n', '0']);
    expect(r0.stderr).toBe(
      'ERROR:  process recovery request failed\nDETAIL:  primary server cannot be recovered by online recovery.\n\n',
    );
  });

  it('pcp_recovery_node 2 rebuilds a stopped and wiped standby (pgpool_recovery extension, sample scripts)', async () => {
    if (!fs.existsSync(RECOVERY_EXTENSION))
      throw new Error(`${RECOVERY_EXTENSION} missing: install Debian's postgresql-15-pgpool2 (bash .ci/run does)`);
    const primary = cluster.node(0);
    for (const f of ['recovery_1st_stage', 'pgpool_remote_start']) {
      const text = fs
        .readFileSync(path.join(REPO, 'examples', f), 'utf8')
        .replace(/^PGHOME=.*$/m, `PGHOME=${cluster.pgBin}`);
      fs.writeFileSync(path.join(primary.dataDir, f), text, { mode: 0o755 });
    }
    await cluster.psql(0, 'CREATE EXTENSION IF NOT EXISTS pgpool_recovery', 'template1');

    // Without the node being down, pgpool refuses.
    const alive = await pcp('recovery_node', ['-n', '2']);
    expect(alive.stderr).toMatch(/node recovery failed, node id: 2 is alive/);

    await cluster.stopNode(2, 'immediate');
    fs.rmSync(cluster.node(2).dataDir, { recursive: true, force: true });
    await pcpOk('detach_node', ['-n', '2']);
    expect((await pcpOk('recovery_node', ['-n', '2'], 120_000)).trim()).toBe('pcp_recovery_node -- Command Successful');

    expect(fs.existsSync(path.join(cluster.node(2).dataDir, 'standby.signal'))).toBe(true);
    expect((await cluster.psql(2, 'SELECT pg_is_in_recovery()')).trim()).toBe('t');
    const nodes = await runPsql(['-At', '-F', ' ', '-c', 'SHOW pool_nodes'], { port: proxy.port, timeoutMs: 15_000 });
    const row2 = nodes.stdout.split('\n').find((l) => l.startsWith('2 '));
    expect(row2).toMatch(/^2 127\.0\.0\.1 \d+ (up|waiting) /);
    await pollUntil(
      () => pcp('node_info', ['-n', '2']),
      (r) => / streaming async /.test(r.stdout),
      { what: 'recovered standby 2 streaming', timeoutMs: 30_000 },
    );
  }, 180_000);

  it('pcp_promote_node -g -s 1: waits for the session on the primary, then failover_command promotes node 1', async () => {
    const { pgClient, endPg } = await import('../support/clients.js');
    // A session with an open transaction that wrote on the primary (node 0). (txid_current() is
    // STABLE: it would be load balanced to a standby, as pgpool does.)
    const held = await pgClient({ host: '127.0.0.1', port: proxy.port }, { user: 'postgres', database: 'postgres' });
    let promoted: Awaited<ReturnType<typeof pcp>> | undefined;
    let ended = false;
    try {
      await held.query('BEGIN');
      await held.query('CREATE TEMP TABLE promote_hold (x int)');
      const logged = proxy.logs().length;
      const running = pcp('promote_node', ['-g', '-s', '-n', '1'], pcpPort, passFile, 90_000).then((r) => {
        promoted = r;
        return r;
      });
      await pollUntil(
        () => proxy.logs().slice(logged),
        (l) => /promote node 1 gracefully: waiting for the sessions using node 0 to end/.test(l),
        { what: 'pgrelay waiting for the session on node 0', timeoutMs: 30_000 },
      );
      // Still waiting: nothing promoted, node 0 still the primary.
      expect(promoted).toBeUndefined();
      expect(nodeLines(await pcpOk('node_info', ['-n', '0']))[0]).toMatch(/ primary /);
      expect((await held.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await held.query('COMMIT');
      ended = true;
      await endPg(held);
      const r = await running;
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('pcp_promote_node -- Command Successful');
    } finally {
      if (!ended) await endPg(held);
    }
    await pollUntil(
      () => pcp('node_info', ['-n', '1']),
      (r) => / primary /.test(r.stdout),
      { what: 'node 1 primary in pcp_node_info', timeoutMs: 60_000 },
    );
    expect((await cluster.psql(1, 'SELECT pg_is_in_recovery()')).trim()).toBe('f');
    expect(nodeLines(await pcpOk('node_info', ['-n', '0']))[0]).toMatch(/ 3 0\.333333 down /);
  }, 120_000);

  it('pcp_stop_pgpool -m fast stops pgrelay', async () => {
    expect((await pcpOk('stop_pgpool', ['-m', 'fast'])).trim()).toBe('pcp_stop_pgpool -- Command Successful');
    const e = await Promise.race([proxy.exited, new Promise<null>((r) => setTimeout(() => r(null), 20_000).unref())]);
    expect(e?.code).toBe(0);
  }, 30_000);

  it("pgpool's command line: -n -f -F -a -k starts; -f conf -m fast stop stops", async () => {
    const hba = path.join(work, 'pool_hba.conf');
    fs.writeFileSync(hba, 'host all all 127.0.0.1/32 trust\n');
    const key = path.join(work, 'pgpoolkey');
    fs.writeFileSync(key, 'some key\n', { mode: 0o600 });
    const p = await startProxy({
      cluster,
      config: { enable_pool_hba: true, hba_file: path.join(work, 'none') },
      args: ['-n', '-F', path.join(work, 'pcp.conf'), '-a', hba, '-k', key, '-C'],
    });
    try {
      const r = await runPsql(['-At', '-c', 'SELECT 7'], { port: p.port, timeoutMs: 15_000 });
      expect(r.stdout.trim()).toBe('7');
      expect(p.logs()).toMatch(/option -C is accepted for pgpool-II compatibility and ignored/);
      const stop = await runCommand(process.execPath, [CLI_PATH, '-f', p.confPath, '-m', 'fast', 'stop'], {
        timeoutMs: 40_000,
      });
      expect(stop.code, stop.stderr).toBe(0);
      expect((await p.exited).code).toBe(0);
    } finally {
      await p.stop();
    }
  }, 60_000);

  it('without -f: ./pgpool.conf and the pcp.conf next to it are read; `pgrelay -m fast stop` without -f stops it', async () => {
    const p = await startProxy({ cluster, defaultConfigPath: true, config: { pcp_port: await freePort() } });
    try {
      fs.copyFileSync(path.join(work, 'pcp.conf'), path.join(p.dir, 'pcp.conf'));
      // The listen port and the backends come from ./pgpool.conf (nothing else names them).
      const r = await runPsql(['-At', '-c', 'SELECT 8'], { port: p.port, timeoutMs: 15_000 });
      expect(r.stdout.trim()).toBe('8');
      const count = await pcp('node_count', [], Number(p.config().pcp_port));
      expect(count.stderr).toBe('');
      expect(count.stdout).toBe('3\n');
      const stop = await runCommand(process.execPath, [CLI_PATH, '-m', 'fast', 'stop'], {
        timeoutMs: 40_000,
        cwd: p.dir,
      });
      expect(stop.code, stop.stderr).toBe(0);
      expect((await p.exited).code).toBe(0);
    } finally {
      await p.stop();
    }
  }, 60_000);
});
