/**
 * Standby failures and node operations through pgrelay, against its OWN
 * DevCluster (primary node 0 + standbys 1 and 2):
 *
 *  - a terminated backend (pg_terminate_backend → FATAL 57P01 + socket closed)
 *    on one session never fails a healthy node over (even with
 *    failover_on_backend_shutdown = on): that session gets its error (or, for
 *    an idle load-balance link, just moves its reads), the node stays up, the
 *    other sessions are unaffected;
 *  - PGPOOL DETACH NODE 2 by an admin user: status down, reads stop going
 *    there; by a non-admin user: SQLSTATE 42501;
 *  - pg_ctl stop -m immediate of standby node 1: marked down within
 *    health_check_period × (max_retries + 1) + margin; a session whose
 *    load-balance node it was keeps working on its next read outside a
 *    transaction; a session in a transaction on it gets a clear error (never a
 *    hang); writes are unaffected; restart + PGPOOL ATTACH NODE 1 brings it back.
 *
 * Sessions are pinned to a load-balance node with
 * app_name_redirect_preference_list ('pin1' → node 1, 'pin2' → node 2);
 * other sessions balance over weights 1:1:1.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { withTimeout } from '../support/clients.js';
import {
  connect,
  destroy,
  jsonLines,
  asyncErrors,
  nodeOfPort,
  showPoolNodes,
  sleep,
  statusChange,
  waitForJson,
} from '../support/failover.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';

const HC = { period: 1, max_retries: 1, retry_delay: 1, timeout: 5 };

let cluster: DevCluster;
let proxy: ProxyHandle;
const open = new Set<pg.Client>();

async function client(app: string, user = 'postgres'): Promise<pg.Client> {
  const c = await connect(proxy.port, { application_name: app, user });
  open.add(c);
  return c;
}

function close(c: pg.Client): void {
  open.delete(c);
  destroy(c);
}

/** Node id that served `SELECT inet_server_port()` on this client (a load-balanced read). */
async function readNode(c: pg.Client): Promise<number> {
  const r = await c.query<{ port: number }>('SELECT inet_server_port() AS port');
  return nodeOfPort(cluster, r.rows[0]!.port);
}

/** Load-balance nodes of `n` new sessions (application_name app), one read each. */
async function readNodesOfNewSessions(n: number, app = 'fo-probe'): Promise<number[]> {
  const res: number[] = [];
  for (let i = 0; i < n; i++) {
    const c = await client(app);
    try {
      res.push(await readNode(c));
    } finally {
      close(c);
    }
  }
  return res.sort();
}

function downEvents(): Record<string, unknown>[] {
  return jsonLines(proxy).filter((l) => l.msg === 'node status changed' && l.to === 'down');
}

describe('standby failures and node operations through pgrelay (own DevCluster)', () => {
  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 2 });
    await cluster.psql(
      0,
      'CREATE ROLE fo_app LOGIN; CREATE TABLE fo_w (id serial PRIMARY KEY, v text); GRANT ALL ON fo_w TO fo_app; GRANT ALL ON SEQUENCE fo_w_id_seq TO fo_app;',
    );
    await cluster.waitForCatchup();
    proxy = await startProxy({
      cluster,
      config: {
        health_check_period: HC.period,
        health_check_max_retries: HC.max_retries,
        health_check_retry_delay: HC.retry_delay,
        health_check_timeout: HC.timeout,
        connect_timeout: 2000,
        sr_check_period: 1,
        search_primary_node_timeout: 10,
        auto_failback: false,
        failover_on_backend_error: true,
        // Stronger than the default (off): a 57P01 from pg_terminate_backend must still not fail a healthy node over.
        failover_on_backend_shutdown: true,
        admin_users: 'postgres',
        app_name_redirect_preference_list: 'pin1:1,pin2:2',
        log_min_messages: 'info',
      },
    });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
  });

  afterAll(async () => {
    for (const c of open) destroy(c);
    open.clear();
    await proxy?.stop();
    await cluster?.stop();
  });

  it("pg_terminate_backend of one session's backends: that session gets its error, no node fails over, others unaffected", async () => {
    const victimA = await client('victim-a'); // backends on node 0 (primary) and its LB node
    const victimB = await client('pin1'); // LB node 1
    const bystander = await client('bystander');
    expect(await readNode(victimB)).toBe(1);
    await victimA.query("INSERT INTO fo_w (v) VALUES ('a')");
    const bystanderRead = await readNode(bystander);
    const bystanderPid = Number(
      (await bystander.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid,
    );

    // Reset A's primary backend and B's standby (node 1) backend from direct connections.
    const killedA = await cluster.psql(
      0,
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'victim-a'",
    );
    const killedB = await cluster.psql(
      1,
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pin1'",
    );
    expect(killedA).toBe('1');
    expect(killedB).toBe('1');

    // A: its primary backend is gone; its next statement fails (error, never a hang) and the session ends.
    let errA: (Error & { code?: string }) | undefined;
    try {
      await withTimeout(victimA.query("INSERT INTO fo_w (v) VALUES ('a2')"), 10_000, 'victim A query after terminate');
    } catch (e) {
      errA = e as Error & { code?: string };
    }
    const allA = [...asyncErrors(victimA), ...(errA ? [errA] : [])];
    process.stderr.write(
      `[failover-standby] session A after pg_terminate_backend of its primary backend: ${JSON.stringify(allA.map((e) => `${e.code ?? '(no code)'} ${e.message}`))}\n`,
    );
    expect(errA, 'the session whose primary backend was terminated must get an error').toBeDefined();
    expect(errA?.message).not.toMatch(/timed out/);
    close(victimA);

    // B: only its idle load-balance link died (give the FATAL + close time to arrive first, so
    // the read is not racing the dying backend): its next read outside a transaction works
    // without an error. Node 1 is still up, so pgrelay connects to it again for B's reads.
    await sleep(500);
    const bNode = await withTimeout(readNode(victimB), 10_000, 'victim B read after terminate');
    expect(bNode).toBe(1);
    expect(asyncErrors(victimB)).toEqual([]);

    // Several health-check periods later: every node still up, nothing failed over.
    await sleep((HC.period + (HC.max_retries + 1) * HC.retry_delay) * 1000 + 2000);
    expect(downEvents(), proxy.logs().slice(-4000)).toEqual([]);
    const rows = await showPoolNodes(proxy);
    expect(
      rows.map((r) => r.status).every((s) => s === 'up' || s === 'waiting'),
      JSON.stringify(rows),
    ).toBe(true);
    expect(rows.find((r) => r.role === 'primary')?.node_id).toBe('0');
    // The backend errors were reported and checked, not acted upon.
    const reports = jsonLines(proxy).filter((l) => typeof l.msg === 'string' && /backend error on node/.test(l.msg));
    process.stderr.write(
      `[failover-standby] backend-error reports after the terminates: ${JSON.stringify(reports.map((l) => ({ node: l.node, kind: l.kind })))}\n`,
    );
    expect(reports.some((l) => l.node === 0)).toBe(true);

    // The bystander is unaffected: same backend, same LB node, reads and writes work.
    expect(await readNode(bystander)).toBe(bystanderRead);
    expect(Number((await bystander.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid)).toBe(
      bystanderPid,
    );
    await bystander.query("INSERT INTO fo_w (v) VALUES ('bystander')");
    close(victimB);
    close(bystander);
  });

  it('PGPOOL DETACH NODE 2: 42501 for a non-admin user; an admin detaches it, reads stop going there; ATTACH brings it back', async () => {
    const pinned2 = await client('pin2');
    expect(await readNode(pinned2)).toBe(2);

    const app = await client('fo-app', 'fo_app');
    let denied: (Error & { code?: string }) | undefined;
    try {
      await app.query('PGPOOL DETACH NODE 2');
    } catch (e) {
      denied = e as Error & { code?: string };
    }
    expect(denied?.code, String(denied?.message)).toBe('42501');
    // The session stays usable and nothing changed.
    await app.query("INSERT INTO fo_w (v) VALUES ('app')");
    expect((await showPoolNodes(proxy))[2]?.status).not.toBe('down');
    close(app);

    const admin = await client('fo-admin');
    await admin.query('PGPOOL DETACH NODE 2');
    const ev = await waitForJson(proxy, statusChange(2, 'down'), 5000, 'node 2 down after DETACH');
    expect(String(ev.reason)).toMatch(/detached by operator/);
    const rows = await showPoolNodes(proxy);
    expect(rows.map((r) => r.status)).toEqual([
      expect.stringMatching(/^(up|waiting)$/),
      expect.stringMatching(/^(up|waiting)$/),
      'down',
    ]);
    expect(await cluster.isRunning(2)).toBe(true); // PostgreSQL itself is untouched

    // New sessions never read from node 2 (weights 1:1:1 over the live nodes; 'pin2' falls back too).
    const fresh = await readNodesOfNewSessions(9);
    expect(fresh).not.toContain(2);
    const pinnedFresh = await readNodesOfNewSessions(2, 'pin2');
    expect(pinnedFresh).not.toContain(2);
    // A session that was pinned to node 2 stops reading there as well.
    expect(await withTimeout(readNode(pinned2), 10_000, 'pinned-to-2 session read after detach')).not.toBe(2);
    close(pinned2);

    // Operator-detached: stays down (auto_failback is off here anyway); ATTACH brings it back.
    await admin.query('PGPOOL ATTACH NODE 2');
    const st = (await showPoolNodes(proxy))[2]?.status;
    expect(['up', 'waiting']).toContain(st);
    expect(await readNodesOfNewSessions(1, 'pin2')).toEqual([2]);
    close(admin);
  });

  it('pg_ctl stop -m immediate of standby 1: marked down in time, its LB session keeps reading, an in-transaction session gets a clear error, writes unaffected; restart + PGPOOL ATTACH NODE 1', async () => {
    const lbIdle = await client('pin1');
    const lbInTx = await client('pin1');
    const writer = await client('fo-writer');
    expect(await readNode(lbIdle)).toBe(1);
    await lbInTx.query('BEGIN');
    expect(await readNode(lbInTx)).toBe(1); // a read in a transaction before any write: the LB node
    await writer.query("INSERT INTO fo_w (v) VALUES ('before')");
    const downBefore = downEvents().length;

    const t0 = Date.now();
    await cluster.stopNode(1, 'immediate');
    const stoppedMs = Date.now() - t0;

    // The idle session: next read outside a transaction succeeds on another node, at once.
    let idleErr: unknown;
    let idleNode = -1;
    try {
      idleNode = await withTimeout(readNode(lbIdle), 10_000, 'read of the LB session after its node was killed');
    } catch (e) {
      idleErr = e;
    }
    expect(
      idleErr,
      `the session whose LB node died must keep working on its next read: ${String(idleErr)}\n${proxy.logs().slice(-3000)}`,
    ).toBeUndefined();
    expect(idleNode).not.toBe(1);
    expect([0, 2]).toContain(idleNode);

    // The in-transaction session: a clear connection error (08xxx / 57P01), never a hang.
    let txErr: (Error & { code?: string }) | undefined;
    const tq = Date.now();
    try {
      await withTimeout(
        lbInTx.query('SELECT inet_server_port()'),
        10_000,
        'in-transaction read after the LB node was killed',
      );
    } catch (e) {
      txErr = e as Error & { code?: string };
    }
    process.stderr.write(
      `[failover-standby] in-transaction session on the killed standby: ${txErr ? `${txErr.code ?? '(no code)'} "${txErr.message}"` : 'no error'} after ${Date.now() - tq} ms\n`,
    );
    expect(txErr, 'a read in a transaction on the dead node must fail').toBeDefined();
    expect(txErr?.message).not.toMatch(/timed out after/);
    // pgrelay ends the session with a FATAL as soon as the link dies (the client is idle in its
    // transaction), so node-postgres reports it as an 'error' event and rejects the next query.
    const all = [...asyncErrors(lbInTx), ...(txErr ? [txErr] : [])];
    process.stderr.write(
      `[failover-standby]   errors seen by that client: ${JSON.stringify(all.map((e) => `${e.code ?? '(no code)'} ${e.message}`))}\n`,
    );
    expect(
      all.map((e) => e.code ?? '(no code)'),
      'pgrelay should end the session with an ErrorResponse of class 08 (08006) or 57P01, not just close the socket',
    ).toContainEqual(expect.stringMatching(/^(08|57P0)/));
    close(lbInTx);

    // Writes unaffected, even before the health check has concluded.
    await withTimeout(
      writer.query("INSERT INTO fo_w (v) VALUES ('during')"),
      10_000,
      'write after the standby was killed',
    );

    // Marked down within period × (max_retries + 1) (+ retry delays, connect time) + margin.
    const bound = (HC.period + (HC.max_retries + 1) * (HC.retry_delay + 2)) * 1000 + 5000;
    await waitForJson(proxy, statusChange(1, 'down'), bound, 'node 1 down');
    const downMs = Date.now() - t0;
    process.stderr.write(
      `[failover-standby] standby 1 killed (pg_ctl ${stoppedMs} ms); marked down ${downMs} ms after the kill (bound ${bound} ms)\n`,
    );
    expect(downMs).toBeLessThan(bound);
    expect(downEvents().length - downBefore).toBe(1); // only node 1
    const rows = await showPoolNodes(proxy);
    expect(rows[1]?.status).toBe('down');
    expect(rows[0]?.role).toBe('primary');

    // Reads move to the other nodes (pinned sessions too); writes still fine.
    expect(await readNodesOfNewSessions(6)).not.toContain(1);
    expect(await readNodesOfNewSessions(2, 'pin1')).not.toContain(1);
    expect(await readNode(lbIdle)).not.toBe(1);
    await writer.query("INSERT INTO fo_w (v) VALUES ('after')");

    // Restart it; with auto_failback off it stays down until PGPOOL ATTACH NODE 1.
    await cluster.startNode(1);
    await cluster.waitForStandbys(30_000);
    await sleep(1500);
    expect((await showPoolNodes(proxy))[1]?.status).toBe('down');
    await writer.query('PGPOOL ATTACH NODE 1');
    const back = (await showPoolNodes(proxy))[1]?.status;
    expect(['up', 'waiting']).toContain(back);
    await waitForJson(
      proxy,
      (l) => statusChange(1, 'waiting')(l) && /attached by operator/.test(String(l.reason)),
      3000,
      'node 1 attached',
    );
    await cluster.waitForCatchup(30_000);
    expect(await readNodesOfNewSessions(1, 'pin1')).toEqual([1]);
    close(lbIdle);
    close(writer);
  });
});
