/**
 * README node features that change roles or stop nodes, on one OWN DevCluster
 * (primary 0, standbys 1 and 2), one pgrelay per test, in this order (each test
 * leaves the cluster as the next one needs it):
 *
 *  1. backend_flag DISALLOW_TO_FAILOVER: a stopped standby with the flag only
 *     logs and stays up, while an unflagged one stopped at the same time goes
 *     down (both restarted afterwards);
 *  2. backend_flag ALWAYS_PRIMARY: pgrelay takes the flagged node as the primary
 *     without asking PostgreSQL (flagged here: standby 1, so writes fail there
 *     with 25006 — visible proof that nothing searched);
 *  3. PGPOOL PROMOTE NODE 1: only pgrelay's view changes (node 1 primary, node 0
 *     detached, follow_primary_command for nodes 0 and 2, no failover_command);
 *     PostgreSQL is not promoted;
 *  4. detach_false_primary: standby 2 is promoted with pg_ctl (a second
 *     primary); the sr check keeps node 0, which standby 1 streams from, and
 *     detaches node 2;
 *  5. PGPOOL PROMOTE NODE 1 SWITCHOVER (backends 0 and 1; node 2 diverged in 4):
 *     node 0 is detached, failover_command (examples/failover.sh) runs with
 *     %m = 1 and promotes it, the primary search finds node 1, writes go there.
 *
 * follow_primary_command is a one-line recorder here (the README's
 * follow_primary.sh would re-point standbys, which these tests do not need).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import {
  PLACEHOLDERS,
  REPO,
  connect,
  destroy,
  jsonLines,
  nodeOfPort,
  showPoolNodes,
  statusChange,
  until,
  waitForJson,
  type LogLine,
} from '../support/failover.js';
import { startProxy, type ConfValue, type ProxyHandle } from '../support/proxy.js';

let cluster: DevCluster;
let proxy: ProxyHandle | undefined;
let work: string;
const open = new Set<pg.Client>();

type PgErr = Error & { code?: string };

const BASE: Record<string, ConfValue> = {
  health_check_period: 1,
  health_check_max_retries: 0,
  health_check_timeout: 5,
  connect_timeout: 2000,
  sr_check_period: 1,
  search_primary_node_timeout: 10,
  auto_failback: false,
  admin_users: 'postgres',
  log_min_messages: 'info',
};

async function start(config: Record<string, ConfValue>, backends?: number[]): Promise<ProxyHandle> {
  const p = await startProxy({
    cluster,
    backends,
    config: { ...BASE, ...config },
    env: { PG_BIN: cluster.pgBin, PGRELAY_FAILOVER_RECORD: path.join(work, 'failover.rec') },
  });
  proxy = p;
  return p;
}

function px(): ProxyHandle {
  if (!proxy) throw new Error('no pgrelay running');
  return proxy;
}

async function client(app = 'feat-nodes'): Promise<pg.Client> {
  const c = await connect(px().port, { application_name: app });
  open.add(c);
  return c;
}

async function errorOf(p: Promise<unknown>): Promise<PgErr | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return e as PgErr;
  }
}

/** A recorder command: appends "%d %m" to `file`. */
function recorder(file: string): string {
  return `echo %d %m >> ${path.join(work, file)}`;
}

function recorded(file: string): string[] {
  const f = path.join(work, file);
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).sort() : [];
}

/** Node that served a read in a new session. */
async function readNodeOfNewSession(): Promise<number> {
  const c = await client('feat-nodes-probe');
  try {
    const r = await c.query<{ port: number }>('SELECT inet_server_port() AS port');
    return nodeOfPort(cluster, r.rows[0]!.port);
  } finally {
    open.delete(c);
    destroy(c);
  }
}

async function primaryFound(node: number): Promise<void> {
  await waitForJson(px(), (l) => l.msg === 'primary node found' && l.node === node, 15_000, `primary ${node} found`);
}

beforeAll(async () => {
  cluster = await DevCluster.start({ standbys: 2 });
  await cluster.psql(0, 'CREATE TABLE feat_nodes (id serial PRIMARY KEY, v text)');
  await cluster.waitForCatchup(30_000);
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-feat-nodes-'));
  fs.chmodSync(work, 0o777);
});

afterEach(async () => {
  for (const c of open) destroy(c);
  open.clear();
  await proxy?.stop();
  proxy = undefined;
  for (const f of fs.readdirSync(work)) fs.rmSync(path.join(work, f), { force: true });
});

afterAll(async () => {
  await proxy?.stop();
  await cluster?.stop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('backend flags and node operations (own DevCluster)', () => {
  it('DISALLOW_TO_FAILOVER: a failed standby with the flag only logs and stays up; an unflagged one goes down', async () => {
    const p = await start({ backend_flag2: 'DISALLOW_TO_FAILOVER' });
    await primaryFound(0);
    await Promise.all([cluster.stopNode(1, 'immediate'), cluster.stopNode(2, 'immediate')]);
    await waitForJson(p, statusChange(1, 'down'), 15_000, 'unflagged node 1 down');
    await waitForJson(
      p,
      (l) => l.node === 2 && l.msg === 'node 2 failed but has DISALLOW_TO_FAILOVER: not failing over',
      15_000,
      'node 2 failed, not failed over',
    );
    // Another failed check of node 2 after that: still no failover.
    const fails = (): number =>
      jsonLines(p).filter((l: LogLine) => l.node === 2 && l.msg === 'health check failed on node 2').length;
    const failed = fails();
    await until(() => fails() >= failed + 1, 10_000, 'one more failed health check of node 2');
    expect(jsonLines(p).filter(statusChange(2, 'down'))).toEqual([]);
    const rows = await showPoolNodes(p);
    expect(rows[1]?.status).toBe('down');
    expect(['up', 'waiting']).toContain(rows[2]?.status);

    await cluster.startNode(1);
    await cluster.startNode(2);
    await cluster.waitForStandbys(20_000);
  }, 120_000);

  it('ALWAYS_PRIMARY on standby 1: pgrelay takes node 1 as the primary without a search (writes reach it and fail there with 25006)', async () => {
    const p = await start({ backend_flag1: 'ALWAYS_PRIMARY' });
    await primaryFound(1);
    // The sr check runs (pg_role is live) and changes nothing: node 1 stays pgrelay's primary.
    let rows = await showPoolNodes(p);
    await until(
      async () => (rows = await showPoolNodes(p)).every((r) => r.pg_role !== 'unknown' && r.pg_role !== ''),
      15_000,
      'pg_role known for every node',
    );
    expect(rows.map((r) => [r.role, r.pg_role])).toEqual([
      ['standby', 'primary'],
      ['primary', 'standby'],
      ['standby', 'standby'],
    ]);
    const c = await client();
    const err = await errorOf(c.query("INSERT INTO feat_nodes (v) VALUES ('always')"));
    expect(err?.code, err?.message).toBe('25006');
    // The only change of primary was the one at start-up, to node 1.
    expect(jsonLines(p).filter((l) => l.msg === 'primary node changed' && l.to !== 1)).toEqual([]);
  }, 90_000);

  it('PGPOOL PROMOTE NODE 1: only the view changes (node 1 primary, node 0 detached, follow_primary_command for 0 and 2); PostgreSQL is not promoted', async () => {
    const p = await start({
      follow_primary_command: recorder('follow.rec'),
      failover_command: recorder('failover.rec'),
    });
    await primaryFound(0);
    const c = await client();
    await c.query('PGPOOL PROMOTE NODE 1');
    await waitForJson(p, (l) => l.msg === 'primary node changed' && l.to === 1, 10_000, 'node 1 primary');
    await waitForJson(p, statusChange(0, 'down'), 10_000, 'node 0 detached');
    await until(() => recorded('follow.rec').length === 2, 15_000, 'follow_primary_command for nodes 0 and 2');
    expect(recorded('follow.rec')).toEqual(['0 1', '2 1']);
    expect(recorded('failover.rec'), 'no failover_command for a promote without SWITCHOVER').toEqual([]);
    // Node 2 is set down while follow_primary_command runs for it (README, Health checks and
    // failover, step 4); the recorder does not re-point it and auto_failback is off, so it stays down.
    const d2 = await waitForJson(p, statusChange(2, 'down'), 5000, 'node 2 detached for follow_primary_command');
    expect(String(d2.reason)).toMatch(/follow_primary_command/);
    const rows = await showPoolNodes(p);
    expect(rows.map((r) => [r.status, r.role])).toEqual([
      ['down', 'standby'],
      [expect.stringMatching(/^(up|waiting)$/), 'primary'],
      ['down', 'standby'],
    ]);
    // PostgreSQL untouched: node 1 still in recovery, node 0 still the real primary.
    expect(await cluster.psql(1, 'SELECT pg_is_in_recovery()')).toBe('t');
    expect(await cluster.psql(0, 'SELECT pg_is_in_recovery()')).toBe('f');
    // So writes through pgrelay now reach node 1 and fail there.
    const w = await client();
    const err = await errorOf(w.query("INSERT INTO feat_nodes (v) VALUES ('promoted')"));
    expect(err?.code, err?.message).toBe('25006');
  }, 90_000);

  it('detach_false_primary: standby 2 promoted with pg_ctl is detached; node 0, which standby 1 follows, stays the primary', async () => {
    const p = await start({ detach_false_primary: true });
    await primaryFound(0);
    await cluster.waitForCatchup(20_000);
    await cluster.promote(2);
    cluster.primaryId = 0; // DevCluster's bookkeeping: node 0 is still the primary standby 1 follows
    const ev = await waitForJson(
      p,
      (l) => l.msg === 'detach_false_primary: detaching false primary node(s)',
      15_000,
      'false primary detached',
    );
    expect(ev).toMatchObject({ primary: 0, detached: [2] });
    const down = await waitForJson(p, statusChange(2, 'down'), 10_000, 'node 2 down');
    expect(String(down.reason)).toMatch(/false primary/);
    const rows = await showPoolNodes(p);
    expect(rows.map((r) => r.role)).toEqual(['primary', 'standby', 'standby']);
    expect(rows[2]?.status).toBe('down');
    for (let i = 0; i < 6; i++) expect(await readNodeOfNewSession()).not.toBe(2);
    const c = await client();
    const r = await c.query<{ port: number }>(
      "INSERT INTO feat_nodes (v) VALUES ('after false primary') RETURNING inet_server_port() AS port",
    );
    expect(nodeOfPort(cluster, r.rows[0]!.port)).toBe(0);
  }, 150_000);

  it('PGPOOL PROMOTE NODE 1 SWITCHOVER: node 0 detached, failover.sh promotes node 1 (%m = 1), the search finds it, writes go there', async () => {
    const p = await start(
      {
        failover_command: `${path.join(REPO, 'examples', 'failover.sh')} ${PLACEHOLDERS}`,
        follow_primary_command: recorder('follow.rec'),
      },
      [0, 1],
    );
    await primaryFound(0);
    const c = await client();
    await c.query('PGPOOL PROMOTE NODE 1 SWITCHOVER');
    await waitForJson(p, (l) => l.msg === 'primary node changed' && l.to === 1, 20_000, 'node 1 primary');
    const down = await waitForJson(p, statusChange(0, 'down'), 5000, 'node 0 detached');
    expect(String(down.reason)).toMatch(/switchover to node 1/);
    // failover.sh got failed node 0, new main (%m) 1, old primary 0.
    const fo = fs.readFileSync(path.join(work, 'failover.rec'), 'utf8').trim().split('\n');
    expect(fo.map((l) => l.split('|')).map((f) => [f[0], f[4], f[7]])).toEqual([['0', '1', '0']]);
    expect(await cluster.psql(1, 'SELECT pg_is_in_recovery()')).toBe('f');
    await until(() => recorded('follow.rec').length === 1, 15_000, 'follow_primary_command for node 0');
    expect(recorded('follow.rec')).toEqual(['0 1']);
    const w = await client();
    const r = await w.query<{ port: number }>(
      "INSERT INTO feat_nodes (v) VALUES ('switched') RETURNING inet_server_port() AS port",
    );
    expect(nodeOfPort(cluster, r.rows[0]!.port)).toBe(1);
    cluster.primaryId = 1;
  }, 90_000);
});
