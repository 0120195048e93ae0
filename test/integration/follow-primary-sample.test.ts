/**
 * Debian's follow_primary.sh.sample (package pgpool2), unchanged except for its
 * settings variables (PGHOME, ARCHIVEDIR, PCP_USER, PGPOOL_PATH, PCP_PORT,
 * POSTGRESQL_STARTUP_USER), as pgrelay's follow_primary_command, on an OWN
 * DevCluster (primary 0, standbys 1 and 2):
 *
 *   the primary is killed; examples/failover.sh promotes node 1; the sample runs
 *   for node 2: over ssh (an sshd of this test on a free port) it stops node 2,
 *   pg_rewind's it from node 1, writes myrecovery.conf (replication user repl,
 *   slot 127_0_0_1) and starts it, then pcp_attach_node re-attaches it through
 *   pgrelay's PCP port (auto_failback is off: only the sample attaches it).
 *
 * What the sample needs from the machine, as pgpool's guide sets it up:
 * - the script runs as the PostgreSQL OS user (pgpool's service user); run as
 *   root, the test starts it with `runuser -u postgres --`;
 * - passwordless ssh for that user to itself: this test's sshd (own config, host
 *   key and authorized_keys in a temp dir; stopped by PID) and, for the user,
 *   ~/.ssh/id_rsa_pgpool (created if missing, then removed) and a block in
 *   ~/.ssh/config sending 127.0.0.1 to the sshd's port (between markers, removed
 *   after the test; a stale block is replaced);
 * - standbys configured as pgpool's recovery_1st_stage does (primary_conninfo in
 *   myrecovery.conf included from postgresql.conf, not in postgresql.auto.conf,
 *   which would override what the sample writes); wal_log_hints and
 *   full_page_writes on for pg_rewind;
 * - a replication user `repl` and a .pcppass (PCPPASSFILE) for pcp_attach_node -w.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster, freePort, killChildOnExit } from '../../dev/devcluster.js';
import { PLACEHOLDERS, REPO, showPoolNodes, statusChange, waitForJson } from '../support/failover.js';
import { type ProxyHandle, startProxy } from '../support/proxy.js';
import { pollUntil } from '../support/wait.js';

const SAMPLE = '/usr/share/doc/pgpool2/examples/scripts/follow_primary.sh.sample';
const SBIN = '/usr/sbin';
const SSHD = '/usr/sbin/sshd';
const PCP_USER = 'pcpadmin';
const PCP_PASSWORD = 'follow secret';
const MARK_BEGIN = '# >>> pgrelay test follow-primary-sample (removed after the test)';
const MARK_END = '# <<< pgrelay test follow-primary-sample';
/** The settings variables of the sample; every other line is used as shipped. */
const SETTINGS = ['PGHOME', 'ARCHIVEDIR', 'REPLUSER', 'PCP_USER', 'PGPOOL_PATH', 'PCP_PORT', 'POSTGRESQL_STARTUP_USER'];

const isRoot = process.getuid?.() === 0;
/** The OS user running PostgreSQL (DevCluster runs it as postgres when the tests run as root). */
const pgUser = isRoot ? 'postgres' : os.userInfo().username;
const pgAccount = (() => {
  const line = execFileSync('getent', ['passwd', pgUser]).toString().trim().split(':');
  return { uid: Number(line[2]), gid: Number(line[3]), home: line[5]! };
})();

function md5(s: string): string {
  return execFileSync('md5sum', { input: s }).toString().split(' ')[0]!;
}

function chownToPgUser(p: string): void {
  if (isRoot) fs.chownSync(p, pgAccount.uid, pgAccount.gid);
}

/** The ~/.ssh of the PostgreSQL OS user: key and config for the sample's ssh, undone by restore(). */
class UserSsh {
  private readonly dir = path.join(pgAccount.home, '.ssh');
  private readonly key = path.join(this.dir, 'id_rsa_pgpool');
  private readonly config = path.join(this.dir, 'config');
  private createdDir = false;
  private createdKey = false;
  private createdConfig = false;

  /** The public key the sshd must accept. */
  setUp(sshPort: number): string {
    if (!fs.existsSync(this.dir)) {
      fs.mkdirSync(this.dir, { mode: 0o700 });
      chownToPgUser(this.dir);
      this.createdDir = true;
    }
    if (!fs.existsSync(this.key)) {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'pgrelay-test', '-f', this.key]);
      chownToPgUser(this.key);
      chownToPgUser(`${this.key}.pub`);
      this.createdKey = true;
    }
    const pub = fs.existsSync(`${this.key}.pub`)
      ? fs.readFileSync(`${this.key}.pub`, 'utf8')
      : execFileSync('ssh-keygen', ['-y', '-f', this.key]).toString();
    this.createdConfig = !fs.existsSync(this.config);
    const rest = this.createdConfig ? '' : stripBlock(fs.readFileSync(this.config, 'utf8'));
    // First: ssh takes the first value it finds for each setting.
    const block = [MARK_BEGIN, 'Host 127.0.0.1', `    Port ${sshPort}`, MARK_END, ''].join('\n');
    fs.writeFileSync(this.config, block + rest, { mode: 0o600 });
    chownToPgUser(this.config);
    return pub;
  }

  restore(): void {
    if (fs.existsSync(this.config)) {
      const rest = stripBlock(fs.readFileSync(this.config, 'utf8'));
      if (this.createdConfig && rest.trim() === '') fs.rmSync(this.config);
      else fs.writeFileSync(this.config, rest);
    }
    if (this.createdKey) for (const f of [this.key, `${this.key}.pub`]) fs.rmSync(f, { force: true });
    if (this.createdDir && fs.readdirSync(this.dir).length === 0) fs.rmdirSync(this.dir);
  }
}

function stripBlock(text: string): string {
  const begin = text.indexOf(MARK_BEGIN);
  if (begin < 0) return text;
  const end = text.indexOf(MARK_END, begin);
  if (end < 0) return text.slice(0, begin);
  return text.slice(0, begin) + text.slice(end + MARK_END.length).replace(/^\n/, '');
}

/** An sshd of its own: config, host key, authorized_keys and pid file in `dir`. */
async function startSshd(dir: string, port: number, authorizedKey: string): Promise<ChildProcess> {
  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  const authorized = path.join(dir, 'authorized_keys');
  fs.writeFileSync(authorized, authorizedKey, { mode: 0o644 });
  const conf = path.join(dir, 'sshd_config');
  fs.writeFileSync(
    conf,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorized}`,
      `AllowUsers ${pgUser}`,
      'StrictModes no',
      // With UsePAM no, sshd refuses accounts whose password is locked ('!' in /etc/shadow, as Debian's
      // postgres); PAM needs a root sshd (a non-root one serves only its own, normally unlocked, user).
      `UsePAM ${isRoot ? 'yes' : 'no'}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin no',
      // scp (restore_command in the sample's myrecovery.conf) speaks SFTP since OpenSSH 9; as Debian's sshd_config.
      'Subsystem sftp internal-sftp',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  // sshd (as root) needs its privilege separation directory; Debian's service creates it the same way.
  if (isRoot) fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const child = spawn(SSHD, ['-D', '-e', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  // sshd must not outlive the test process, however it ends.
  if (child.pid !== undefined) {
    const cancel = killChildOnExit(child.pid);
    child.once('exit', cancel);
  }
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  await pollUntil(
    async () => {
      if (child.exitCode !== null) throw new Error(`sshd exited (${child.exitCode}): ${err}`);
      const r = execFileSync('ssh-keyscan', ['-p', String(port), '-T', '2', '127.0.0.1'], {
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 5_000,
      }).toString();
      return r;
    },
    (r) => r.includes('ssh-ed25519'),
    { what: `sshd on 127.0.0.1:${port}`, timeoutMs: 15_000, intervalMs: 100 },
  );
  return child;
}

async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(t);
}

/**
 * Move a DevCluster standby's primary_conninfo from postgresql.auto.conf to
 * myrecovery.conf, included from postgresql.conf, as pgpool's recovery_1st_stage
 * sample lays standbys out (the follow_primary sample rewrites that file).
 */
function layOutAsPgpoolStandby(dataDir: string): void {
  const auto = path.join(dataDir, 'postgresql.auto.conf');
  const lines = fs.readFileSync(auto, 'utf8').split('\n');
  const conninfo = lines.filter((l) => /^\s*primary_conninfo\s*=/.test(l));
  fs.writeFileSync(auto, lines.filter((l) => !/^\s*primary_conninfo\s*=/.test(l)).join('\n'));
  const recovery = path.join(dataDir, 'myrecovery.conf');
  fs.writeFileSync(recovery, `${conninfo.join('\n')}\nrecovery_target_timeline = 'latest'\n`);
  chownToPgUser(recovery);
  fs.appendFileSync(path.join(dataDir, 'postgresql.conf'), `include_if_exists = '${recovery}'\n`);
}

describe("Debian's follow_primary.sh.sample through pgrelay (own DevCluster, ssh, pcp_attach_node)", () => {
  let cluster: DevCluster;
  let proxy: ProxyHandle;
  let work: string;
  let sshd: ChildProcess | undefined;
  const userSsh = new UserSsh();

  beforeAll(async () => {
    for (const f of [SAMPLE, path.join(SBIN, 'pcp_attach_node'), SSHD])
      if (!fs.existsSync(f))
        throw new Error(
          `${f} missing: install Debian's pgpool2, openssh-server and openssh-client (bash .ci/run does)`,
        );
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-follow-'));
    fs.chmodSync(work, 0o755);

    cluster = await DevCluster.start({ standbys: 2, extraConf: { wal_log_hints: 'on', full_page_writes: 'on' } });
    await cluster.psql(0, 'CREATE ROLE repl WITH REPLICATION LOGIN');
    for (const id of [1, 2]) {
      await cluster.stopNode(id, 'fast');
      layOutAsPgpoolStandby(cluster.node(id).dataDir);
      await cluster.startNode(id);
    }

    const sshPort = await freePort();
    const sshDir = path.join(work, 'sshd');
    fs.mkdirSync(sshDir, { mode: 0o755 });
    const pub = userSsh.setUp(sshPort);
    sshd = await startSshd(sshDir, sshPort, pub);

    const pcpPort = await freePort();
    fs.writeFileSync(path.join(work, 'pcp.conf'), `${PCP_USER}:${md5(PCP_PASSWORD)}\n`);
    const pcpPass = path.join(work, 'pcppass');
    fs.writeFileSync(pcpPass, `*:*:${PCP_USER}:${PCP_PASSWORD}\n`, { mode: 0o600 });
    chownToPgUser(pcpPass);
    const archive = path.join(work, 'archivedir');
    fs.mkdirSync(archive, { mode: 0o700 });
    chownToPgUser(archive);

    // The sample with its settings variables set for this machine; every other line as shipped.
    const settings: Record<string, string> = {
      PGHOME: path.dirname(cluster.pgBin),
      ARCHIVEDIR: archive,
      REPLUSER: 'repl',
      PCP_USER,
      PGPOOL_PATH: SBIN,
      PCP_PORT: String(pcpPort),
      POSTGRESQL_STARTUP_USER: pgUser,
    };
    const shipped = fs.readFileSync(SAMPLE, 'utf8');
    const adjusted = shipped.replace(/^([A-Z_]+)=.*$/gm, (line, name: string) =>
      name in settings ? `${name}=${settings[name]}` : line,
    );
    const changed = shipped.split('\n').filter((l, i) => l !== adjusted.split('\n')[i]);
    for (const l of changed) expect(SETTINGS, `changed line: ${l}`).toContain(l.split('=')[0]);
    const script = path.join(work, 'follow_primary.sh');
    fs.writeFileSync(script, adjusted, { mode: 0o755 });

    const asPgUser = isRoot ? `runuser -u ${pgUser} -- ` : '';
    proxy = await startProxy({
      cluster,
      config: {
        health_check_period: 1,
        health_check_max_retries: 1,
        health_check_retry_delay: 1,
        health_check_timeout: 5,
        connect_timeout: 2000,
        sr_check_period: 1,
        search_primary_node_timeout: 30,
        auto_failback: false,
        log_min_messages: 'info',
        pcp_port: pcpPort,
        failover_command: `${path.join(REPO, 'examples', 'failover.sh')} ${PLACEHOLDERS}`,
        follow_primary_command: `${asPgUser}${script} ${PLACEHOLDERS}`,
      },
      args: ['-F', path.join(work, 'pcp.conf')],
      env: { PG_BIN: cluster.pgBin, PCPPASSFILE: pcpPass, PGUSER: pgUser },
    });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
  }, 90_000);

  afterAll(async () => {
    await proxy?.stop();
    await cluster?.stop();
    await stopChild(sshd);
    userSsh.restore();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('primary killed: node 1 promoted, the sample re-points node 2 (ssh, pg_rewind) and pcp_attach_node re-attaches it', async () => {
    await cluster.stopNode(0, 'immediate');
    await waitForJson(proxy, (l) => l.msg === 'primary node changed' && l.to === 1, 30_000, 'node 1 primary');
    const follow = await waitForJson(
      proxy,
      (l) => /^follow_primary_command (finished|failed|timed out)/.test(String(l.msg)) && l.node === 2,
      60_000,
      'follow_primary_command on node 2',
    );
    expect(follow.code, `${follow.stdout}\n${follow.stderr}`).toBe(0);
    expect(String(follow.stdout)).toMatch(/follow_primary\.sh: end: follow primary command is completed successfully/);
    expect(String(follow.stdout)).not.toMatch(/pg_rewind failed/);
    expect(String(follow.stdout)).toMatch(/^pcp_attach_node -- Command Successful$/m);
    // Re-attached by the sample's pcp_attach_node (auto_failback is off).
    const attached = await waitForJson(proxy, statusChange(2, 'waiting'), 10_000, 'node 2 attached');
    expect(String(attached.reason)).toMatch(/attached by operator/);

    // Node 2 streams from node 1 through the sample's slot and replication user.
    const repl = await pollUntil(
      () =>
        cluster.psql(
          1,
          "SELECT usename || ' ' || state || ' ' || coalesce(slot_name, '') FROM pg_stat_replication JOIN pg_replication_slots ON active_pid = pid",
        ),
      (out) => out.trim() === 'repl streaming 127_0_0_1',
      { what: 'node 2 streaming from node 1 as repl through slot 127_0_0_1', timeoutMs: 30_000 },
    );
    expect(repl.trim()).toBe('repl streaming 127_0_0_1');
    expect((await cluster.psql(2, 'SELECT pg_is_in_recovery()')).trim()).toBe('t');
    const nodes = await showPoolNodes(proxy);
    expect(nodes.map((n) => `${n.node_id} ${n.status} ${n.role}`)).toEqual([
      '0 down standby',
      '1 up primary',
      expect.stringMatching(/^2 (waiting|up) standby$/),
    ]);
  }, 120_000);
});
