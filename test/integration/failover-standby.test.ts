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
 *    hang); writes are unaffected; restart + PGPOOL ATTACH NODE 1 brings it back;
 *  - reads in flight on a standby that is stopped (-m immediate) are re-sent to
 *    the primary — simple protocol, extended (unnamed and named statements) and
 *    a pipeline — and the client sees only the result; held in flight with
 *    pg_sleep() that sleeps only in recovery, confirmed in pg_stat_activity;
 *  - reads whose rows were already streaming to the client when the standby died
 *    end the session with FATAL 08006 (simple and extended), never re-sent (the
 *    client would get rows twice);
 *  - a standby that only ran the mirrored BEGIN/SET of a transaction is dropped
 *    silently when it dies: the transaction goes on and commits on the primary.
 *
 * write_function_list = 'nextval' makes pg_sleep() and pg_is_in_recovery() plain
 * reads (otherwise pgrelay asks the catalog, finds them volatile and sends them to
 * the primary).
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
  statusChange,
  until,
  waitForJson,
  type LogLine,
} from '../support/failover.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
  closeAllRaw,
  errorFields,
  executeMessage,
  parseMessage,
  queryMessage,
  summarize,
  syncMessage,
  type BackendMessage,
} from '../support/raw.js';

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

type PgErr = Error & { code?: string };

/** The error a promise rejects with (undefined if it resolves). */
async function errorOf(p: Promise<unknown>): Promise<PgErr | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return e as PgErr;
  }
}

const MOVED = 'load-balance node connection lost; moving reads';

/** pgrelay's "moving reads" line for the session whose link to `node` (backend `pid`) was lost. */
const movedReads =
  (node: number, pid: number) =>
  (l: LogLine): boolean =>
    l.msg === MOVED && l.node === node && l.backendPid === pid;

/** total_count of SHOW pool_health_check_stats, by node id. */
async function healthChecks(): Promise<number[]> {
  const c = await connect(proxy.port, { query_timeout: 10_000 });
  try {
    const r = await c.query<{ node_id: string; total_count: string }>('SHOW pool_health_check_stats');
    return r.rows.map((x) => Number(x.total_count));
  } finally {
    destroy(c);
  }
}

/** Backend pids on `node` running (state active) a statement that contains `text`, for application_name `app`. */
async function activeOn(node: number, app: string, text: string): Promise<number[]> {
  const out = await cluster.psql(
    node,
    `SELECT pid FROM pg_stat_activity WHERE application_name = '${app}' AND state = 'active' AND position('${text}' in query) > 0 ORDER BY pid`,
  );
  return out.split('\n').filter(Boolean).map(Number);
}

/** Node `id` running, streaming and attached (restarts and attaches it when an earlier test left it down). */
async function ensureAttached(id: number): Promise<void> {
  if (!(await cluster.isRunning(id))) {
    await cluster.startNode(id);
    await cluster.waitForStandbys(20_000);
  }
  if ((await showPoolNodes(proxy))[id]?.status === 'down') {
    const admin = await client('fo-admin');
    try {
      await admin.query(`PGPOOL ATTACH NODE ${id}`);
    } finally {
      close(admin);
    }
  }
  await cluster.waitForCatchup(20_000);
  await until(
    async () => (await readNodesOfNewSessions(1, `pin${id}`))[0] === id,
    15_000,
    `a new pin${id} session reading from node ${id}`,
  );
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
        write_function_list: 'nextval',
        log_min_messages: 'info',
      },
    });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
  });

  afterAll(async () => {
    closeAllRaw();
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
    // README (Measured): "That session gets 57P01" — the backend's FATAL reaches the client.
    expect(
      allA.map((e) => e.code ?? '(no code)'),
      'the FATAL 57P01 of the terminated backend must reach the client',
    ).toContain('57P01');
    close(victimA);

    // B: only its idle load-balance link died. Once pgrelay has dropped that link (its log
    // says so), B's next read outside a transaction works without an error. Node 1 is still
    // up, so pgrelay connects to it again for B's reads.
    await waitForJson(proxy, (l) => l.msg === MOVED && l.node === 1, 10_000, "pgrelay dropping B's link to node 1");
    const bNode = await withTimeout(readNode(victimB), 10_000, 'victim B read after terminate');
    expect(bNode).toBe(1);
    expect(asyncErrors(victimB)).toEqual([]);

    // The terminates were reported (node 0: the socket error; node 1: the 57P01 with
    // failover_on_backend_shutdown on); once two more health checks of each node have run
    // after that, any failover they caused would have happened: there is none.
    await waitForJson(proxy, (l) => l.node === 0 && /^backend error on node 0/.test(String(l.msg)), 10_000, 'report 0');
    await waitForJson(proxy, (l) => l.node === 1 && /^backend error on node 1/.test(String(l.msg)), 10_000, 'report 1');
    const checked = await healthChecks();
    await until(
      async () => {
        const now = await healthChecks();
        return now[0]! >= checked[0]! + 2 && now[1]! >= checked[1]! + 2;
      },
      15_000,
      'two more health checks of nodes 0 and 1',
    );
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
  }, 90_000);

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
    // README: "the session ends with FATAL 08006 server closed the connection unexpectedly
    // (backend node N at host:port)".
    const fatal = all.find((e) => e.code === '08006');
    expect(
      fatal,
      `pgrelay must end the session with FATAL 08006, got ${JSON.stringify(all.map((e) => e.code))}`,
    ).toBeDefined();
    expect(fatal?.message).toBe(
      `server closed the connection unexpectedly (backend node 1 at ${cluster.node(1).host}:${cluster.node(1).port})`,
    );
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

    // Restart it; with auto_failback off it stays down until PGPOOL ATTACH NODE 1, also after
    // the sr check has seen it streaming again (when auto_failback would have attached it).
    await cluster.startNode(1);
    await cluster.waitForStandbys(20_000);
    await until(
      async () => (await showPoolNodes(proxy))[1]?.replication_state === 'streaming',
      15_000,
      'the sr check seeing node 1 streaming',
    );
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
    await cluster.waitForCatchup(20_000);
    expect(await readNodesOfNewSessions(1, 'pin1')).toEqual([1]);
    close(lbIdle);
    close(writer);
  }, 150_000);

  it('reads in flight on a standby that dies are re-sent to the primary (simple, extended unnamed and named, pipeline): the client sees only the result', async () => {
    await ensureAttached(2);
    const p0 = cluster.node(0).port;
    // Sleeps only in recovery: held on standby 2 until it dies, answers at once on the primary.
    const SLEEPY = 'pg_sleep(CASE WHEN pg_is_in_recovery() THEN 50 ELSE 0 END)';
    const q = `SELECT ${SLEEPY}::text AS slept, inet_server_port() AS port, pg_is_in_recovery() AS rec`;
    const simple = await client('pin2');
    const unnamed = await client('pin2');
    const named = await client('pin2');
    const namedQ = {
      name: 'fo_sleepy',
      text: 'SELECT pg_sleep(CASE WHEN pg_is_in_recovery() THEN $1::float8 ELSE 0 END)::text AS slept, inet_server_port() AS port, pg_is_in_recovery() AS rec',
    };
    for (const c of [simple, unnamed, named]) expect(await readNode(c)).toBe(2);
    // Parsed on node 2 beforehand: its run below sends only Bind/Describe/Execute/Sync there.
    const warm = await named.query<{ port: number }>({ ...namedQ, values: [0] });
    expect(nodeOfPort(cluster, warm.rows[0]!.port)).toBe(2);
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ user: 'postgres', database: 'postgres', application_name: 'pin2' });
    expect(st.ok, JSON.stringify(st.error)).toBe(true);

    type Row = { slept: string; port: number; rec: boolean };
    const results = [
      simple.query<Row>(q),
      unnamed.query<Row>({ text: q.replace('THEN 50', 'THEN $1::float8'), values: [50] }),
      named.query<Row>({ ...namedQ, values: [50] }),
    ].map((p) =>
      p.then(
        (r) => r.rows,
        (e: PgErr) => e,
      ),
    );
    // A pipeline: a quick read, then the sleeping one, one Sync.
    raw.send(
      parseMessage('', 'SELECT 1 AS one, inet_server_port() AS port'),
      bindMessage('', ''),
      executeMessage(''),
      parseMessage('', q),
      bindMessage('', ''),
      executeMessage(''),
      syncMessage(),
    );
    const rawReply = raw.collect('Z', 30_000);

    let pids: number[] = [];
    await until(
      async () => (pids = await activeOn(2, 'pin2', 'pg_sleep')).length === 4,
      15_000,
      'four sleeping reads active on node 2',
    );
    const since = jsonLines(proxy).length;
    await cluster.stopNode(2, 'immediate');

    const got = await withTimeout(Promise.all(results), 20_000, 'the re-sent reads');
    for (const [i, r] of got.entries()) {
      expect(r, `client ${i}: ${r instanceof Error ? `${r.code} ${r.message}` : ''}`).not.toBeInstanceOf(Error);
      expect(r).toEqual([{ slept: '', port: p0, rec: false }]);
    }
    const msgs: BackendMessage[] = await rawReply;
    expect(msgs.map((m) => m.type).join(''), 'pipeline replies: no error, no notice').toBe('12DC12DCZ');
    // The quick read ran on node 2 (its reply was complete there); the sleeping one was answered by the primary.
    expect(summarize(msgs).rows).toEqual([
      ['1', String(cluster.node(2).port)],
      ['', String(p0), 'f'],
    ]);
    for (const c of [simple, unnamed, named]) expect(asyncErrors(c)).toEqual([]);

    // pgrelay logged each re-send, with the count of requests re-sent.
    for (const pid of pids) {
      const l = await waitForJson(proxy, movedReads(2, pid), 10_000, `re-send of backend ${pid}'s read`);
      expect(Number(l.resent), JSON.stringify(l)).toBeGreaterThanOrEqual(1);
    }
    const ended = jsonLines(proxy)
      .slice(since)
      .filter((l) => l.msg === 'backend connection closed unexpectedly');
    expect(ended).toEqual([]);
    // The sessions go on.
    for (const c of [simple, unnamed, named]) expect([0, 1]).toContain(await readNode(c));
    expect((await raw.query('SELECT 1')).rows).toEqual([['1']]);
    raw.end();
    for (const c of [simple, unnamed, named]) close(c);
  }, 180_000);

  it('reads whose rows were already streaming when the standby died end with FATAL 08006 (simple and extended), never re-sent', async () => {
    await ensureAttached(2);
    // ~1000 rows of 200 bytes at once, then a sleep on the standby (none on the primary).
    const q =
      "SELECT g, repeat('x', 200) AS pad, pg_sleep(CASE WHEN pg_is_in_recovery() AND g = 1000 THEN 50 ELSE 0 END)::text AS s FROM generate_series(1, 2000) AS g";
    const simple = await RawClient.connect(proxy.port);
    const extended = await RawClient.connect(proxy.port);
    for (const r of [simple, extended]) {
      const st = await r.startup({ user: 'postgres', database: 'postgres', application_name: 'pin2' });
      expect(st.ok, JSON.stringify(st.error)).toBe(true);
      expect((await r.query('SELECT inet_server_port()')).rows).toEqual([[String(cluster.node(2).port)]]);
    }
    const base = [simple.received, extended.received];
    simple.send(queryMessage(q));
    extended.send(parseMessage('', q), bindMessage('', ''), executeMessage(''), syncMessage());
    await until(
      async () =>
        simple.received - base[0]! > 50_000 &&
        extended.received - base[1]! > 50_000 &&
        (await activeOn(2, 'pin2', 'generate_series')).length === 2,
      15_000,
      'rows of both reads reaching the clients while node 2 sleeps at row 1000',
    );
    await cluster.stopNode(2, 'immediate');
    for (const [name, r] of [
      ['simple', simple],
      ['extended', extended],
    ] as const) {
      const { messages, closed } = await r.drainUntilClosed(15_000);
      const rows = messages.filter((m) => m.type === 'D').length;
      const errs = messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
      process.stderr.write(`[failover-standby] ${name}: ${rows} rows from node 2, then ${JSON.stringify(errs)}\n`);
      expect(closed, `${name}: the session ends`).toBe(true);
      expect(rows, `${name}: only node 2's rows, none again from the primary`).toBeLessThan(1000);
      expect(rows).toBeGreaterThan(200);
      expect(
        errs.map((e) => [e.S, e.C, e.M]),
        name,
      ).toEqual([
        [
          'FATAL',
          '08006',
          `server closed the connection unexpectedly (backend node 2 at ${cluster.node(2).host}:${cluster.node(2).port})`,
        ],
      ]);
      expect(
        messages.some((m) => m.type === 'Z'),
        `${name}: no ReadyForQuery after the error`,
      ).toBe(false);
    }
  }, 90_000);

  it('a standby that only ran the mirrored BEGIN/SET of a transaction is dropped silently: the transaction goes on and commits', async () => {
    await ensureAttached(1);
    const c = await client('pin1');
    expect(await readNode(c)).toBe(1);
    await c.query('BEGIN');
    // (A session-level SET: SET LOCAL, which counts as a write, would run on the primary alone.)
    await c.query("SET work_mem = '3MB'");
    await c.query("INSERT INTO fo_w (v) VALUES ('mirrored-1')");
    // After the write, the transaction's reads go to the primary only.
    expect(await readNode(c)).toBe(0);
    // On node 1 the session ran only BEGIN and the SET.
    const onStandby = await cluster.psql(
      1,
      "SELECT pid || '|' || state || '|' || query FROM pg_stat_activity WHERE application_name = 'pin1'",
    );
    const [pidText, state, last] = onStandby.split('|');
    expect([state, last], onStandby).toEqual(['idle in transaction', "SET work_mem = '3MB'"]);

    await cluster.stopNode(1, 'immediate');
    const moved = await waitForJson(proxy, movedReads(1, Number(pidText)), 10_000, 'the link to node 1 dropped');
    expect(moved.resent).toBe(0);

    const r = await c.query<{ port: number; w: string }>(
      "SELECT inet_server_port() AS port, current_setting('work_mem') AS w",
    );
    expect(r.rows[0]).toEqual({ port: cluster.node(0).port, w: '3MB' });
    await c.query("INSERT INTO fo_w (v) VALUES ('mirrored-2')");
    expect((await errorOf(c.query('COMMIT')))?.message).toBeUndefined();
    expect(asyncErrors(c)).toEqual([]);
    expect(await cluster.psql(0, "SELECT count(*) FROM fo_w WHERE v IN ('mirrored-1', 'mirrored-2')")).toBe('2');
    expect(await readNode(c)).not.toBe(1);
    close(c);
  }, 90_000);
});
