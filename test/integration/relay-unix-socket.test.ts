/**
 * The Unix-domain socket (pgpool's unix_socket_directories): psql and pgbench
 * connect through it, pool_hba.conf `local` records apply to it (and `host`
 * records to TCP), the socket has unix_socket_permissions, and it is removed
 * when pgrelay stops. And the other direction: a backend_hostnameN starting
 * with `/` is the directory of the backend's Unix-domain socket.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { runPgbench, runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';

const cluster = getCluster();
let proxy: ProxyHandle;
let dir: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-sock-'));
  const hba = path.join(dir, 'pool_hba.conf');
  fs.writeFileSync(hba, 'local all all trust\nhost all all 127.0.0.1/32 reject\n');
  proxy = await startProxy({
    cluster,
    config: {
      unix_socket_directories: dir,
      unix_socket_permissions: '0770',
      enable_pool_hba: true,
      hba_file: hba,
      load_balance_mode: false,
    },
  });
});

afterAll(async () => {
  await proxy?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('Unix-domain socket', () => {
  it('psql connects through the socket; `local` records apply there and `host` records to TCP', async () => {
    const sock = path.join(dir, `.s.PGSQL.${proxy.port}`);
    expect(fs.statSync(sock).isSocket()).toBe(true);
    expect(fs.statSync(sock).mode & 0o777).toBe(0o770);
    const viaSocket = await runPsql(['-h', dir, '-At', '-c', 'SELECT 1'], { port: proxy.port, timeoutMs: 15_000 });
    expect(viaSocket.stderr).toBe('');
    expect(viaSocket.stdout.trim()).toBe('1');
    const viaTcp = await runPsql(['-h', '127.0.0.1', '-At', '-c', 'SELECT 1'], { port: proxy.port, timeoutMs: 15_000 });
    expect(viaTcp.code).not.toBe(0);
    expect(viaTcp.stderr).toContain(
      'no pool_hba.conf entry for host "127.0.0.1", user "postgres", database "postgres", SSL off',
    );
  });

  it('pgbench runs through the socket', async () => {
    const script = path.join(dir, 'select.sql');
    fs.writeFileSync(script, 'SELECT 1;\n');
    const r = await runPgbench(['-h', dir, '-f', script, '-c', '2', '-t', '100', '-n'], {
      port: proxy.port,
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/number of transactions actually processed: 200\/200/);
  });

  it('the socket file is removed when pgrelay stops', async () => {
    const sock = path.join(dir, `.s.PGSQL.${proxy.port}`);
    expect(await proxy.stop()).toBe(0);
    expect(fs.existsSync(sock)).toBe(false);
  });
});

describe('backend over a Unix-domain socket', () => {
  it("backend_hostname0 = the primary's socket directory: pgrelay reaches PostgreSQL through the socket", async () => {
    // DevCluster nodes put their socket in the node directory (local connections are trust).
    const p = await startProxy({
      cluster,
      backends: [],
      config: {
        backend_hostname0: cluster.nodeDir(cluster.primaryId),
        backend_port0: cluster.primary.port,
        load_balance_mode: false,
      },
    });
    try {
      const r = await runPsql(
        [
          '-At',
          '-v',
          'ON_ERROR_STOP=1',
          '-c',
          "SELECT inet_server_port() IS NULL, pg_is_in_recovery(), current_setting('port')",
        ],
        { port: p.port, timeoutMs: 15_000 },
      );
      expect(r.stderr).toBe('');
      // inet_server_port() is NULL on a Unix-domain connection; it is the primary's server.
      expect(r.stdout.trim()).toBe(`t|f|${cluster.primary.port}`);
    } finally {
      await p.stop();
    }
  });
});
