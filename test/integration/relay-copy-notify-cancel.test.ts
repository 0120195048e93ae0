/**
 * Foundation: COPY both ways (raw protocol, simple and extended), LISTEN/NOTIFY
 * and CancelRequest through pgrelay. A cancel is sent only once the query is
 * seen running in pg_stat_activity, and the queries run long (30 s), so an
 * answer can only come from the cancel.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, endSql, pgClient, queryRows, sqlClient, withTimeout } from '../support/clients.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
  cancelLogBarrier,
  cancelRequest,
  closeAllRaw,
  copyDataMessage,
  copyDoneMessage,
  copyFailMessage,
  cstrings,
  describeMessage,
  errorFields,
  executeMessage,
  isAlive,
  parseMessage,
  queryMessage,
  summarize,
  syncMessage,
  type BackendMessage,
} from '../support/raw.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
const table = `relay_copy_${process.pid}`;
let proxy: ProxyHandle;

const USER = { user: 'postgres', database: 'postgres', application_name: 'relay-copy' };

beforeAll(async () => {
  proxy = await startProxy({ cluster, config: { log_min_messages: 'warning', load_balance_mode: false } });
  await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id int, v text)`);
});

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  closeAllRaw();
  await closeAllClients();
  await proxy?.stop();
  await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
});

function types(msgs: BackendMessage[]): string {
  return msgs.map((m) => m.type).join('');
}

async function rawSession(
  params: Record<string, string> = USER,
): Promise<{ raw: RawClient; pid: number; secret: number }> {
  const raw = await RawClient.connect(proxy.port);
  const st = await raw.startup(params);
  expect(st.ok).toBe(true);
  return { raw, pid: st.pid, secret: st.secret };
}

/** Send a CancelRequest and wait until pgrelay closed the connection (it handles the request before that). */
async function sendCancel(pid: number, secret: number): Promise<void> {
  const c = await RawClient.connect(proxy.port);
  c.send(cancelRequest(pid, secret));
  expect(await c.waitClosed(10_000), 'pgrelay closes a CancelRequest connection').toBe(true);
  c.destroy();
}

let appSeq = 0;
/** An application_name unique to this file and call, to find the session's backend in pg_stat_activity. */
function uniqueApp(what: string): string {
  return `relay-copy-${what}-${process.pid}-${++appSeq}`;
}

/** Until the primary shows a backend of `application_name` running `query` (state active). */
async function waitRunning(applicationName: string, query: string): Promise<void> {
  await pollUntil(
    () =>
      cluster.psql(
        cluster.primaryId,
        `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${applicationName}' AND state = 'active' AND query = '${query.replace(/'/g, "''")}'`,
      ),
    (n) => n === '1',
    { what: `${applicationName} to be running ${query}` },
  );
}

describe('COPY through pgrelay (raw protocol)', () => {
  it('COPY FROM STDIN in many CopyData messages, then COPY TO STDOUT', async () => {
    const { raw } = await rawSession();
    expect((await raw.query(`TRUNCATE ${table}`)).errors).toEqual([]);
    raw.send(queryMessage(`COPY ${table} (id, v) FROM STDIN`));
    const g = await raw.collect('GE', 5000);
    expect(types(g)).toBe('G');
    // 20000 rows in ~64 kB CopyData messages, some rows split across messages.
    let data = '';
    for (let i = 1; i <= 20000; i++) data += `${i}\trow ${i} ${'y'.repeat(i % 50)}\n`;
    const bytes = Buffer.from(data);
    for (let o = 0; o < bytes.length; o += 65000) raw.send(copyDataMessage(bytes.subarray(o, o + 65000)));
    raw.send(copyDoneMessage());
    const done = summarize(await raw.collect('Z', 15_000));
    expect(done.errors).toEqual([]);
    expect(done.tags).toEqual(['COPY 20000']);
    expect(done.status).toBe('I');

    raw.send(queryMessage(`COPY (SELECT id, v FROM ${table} ORDER BY id) TO STDOUT`));
    const out = await raw.collect('Z', 15_000);
    const t = types(out);
    expect(t[0]).toBe('H');
    expect(t.slice(-3)).toBe('cCZ');
    const text = Buffer.concat(out.filter((m) => m.type === 'd').map((m) => m.body)).toString();
    expect(text).toBe(data);
    expect(summarize(out).tags).toEqual(['COPY 20000']);
    raw.end();
  });

  it('CopyFail aborts COPY FROM STDIN with 57014 and the session goes on', async () => {
    const { raw } = await rawSession();
    raw.send(queryMessage(`COPY ${table} FROM STDIN`));
    expect(types(await raw.collect('GE', 5000))).toBe('G');
    raw.send(copyDataMessage('900001\tnever\n'), copyFailMessage('client changed its mind'));
    const r = summarize(await raw.collect('Z', 5000));
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0].C).toBe('57014');
    expect(r.errors[0].M).toMatch(/client changed its mind/);
    expect(r.status).toBe('I');
    expect((await raw.query(`SELECT count(*) FROM ${table} WHERE id = 900001`)).rows).toEqual([['0']]);
    raw.end();
  });

  it('a bad row in COPY FROM STDIN gives 22P02 and the session goes on', async () => {
    const { raw } = await rawSession();
    raw.send(queryMessage(`COPY ${table} FROM STDIN`));
    expect(types(await raw.collect('GE', 5000))).toBe('G');
    raw.send(copyDataMessage('1\tok\nnot-a-number\tbad\n'), copyDoneMessage());
    const r = summarize(await raw.collect('Z', 5000));
    expect(r.errors.map((e) => e.C)).toEqual(['22P02']);
    expect((await raw.query('SELECT 1')).rows).toEqual([['1']]);
    raw.end();
  });

  it('COPY FROM STDIN in the extended protocol, libpq style (Sync sent before the data, and after CopyDone)', async () => {
    const app = `relay-copy-ext-${process.pid}`;
    const { raw } = await rawSession({ ...USER, application_name: app });
    const pid = Number((await raw.query('SELECT pg_backend_pid()')).rows[0][0]);
    // libpq (PQexecParams of a COPY) sends Parse/Bind/Describe/Execute/Sync at once; the
    // server ignores that Sync during copy-in, and libpq sends another Sync after CopyDone.
    raw.send(
      parseMessage('', `COPY ${table} (id, v) FROM STDIN`),
      bindMessage('', ''),
      describeMessage('P', ''),
      executeMessage('', 0),
      syncMessage(),
    );
    const head = await raw.collect('GE', 5000);
    expect(types(head)).toBe('12nG');
    raw.send(copyDataMessage('700001\text one\n700002\text two\n'), copyDoneMessage(), syncMessage());
    const r = await raw.collect('Z', 5000);
    expect(types(r)).toBe('CZ');
    expect(summarize(r).tags).toEqual(['COPY 2']);
    // Nothing else arrives: exactly one ReadyForQuery for the two Syncs.
    const q = await raw.query(`SELECT count(*) FROM ${table} WHERE id IN (700001, 700002)`);
    expect(q.rows).toEqual([['2']]);
    expect(types(q.messages)).toBe('TDCZ');
    // The session is idle and clean: after Terminate its backend is reset and cached…
    raw.end();
    expect(await raw.waitClosed(10_000)).toBe(true);
    await pollUntil(
      () => queryRows({ port: proxy.port }, 'SHOW pool_pools'),
      (rows) => rows.some((r) => r.pool_backendpid === String(pid) && r.status === 'Wait for connection'),
      { what: `backend ${pid} back in the connection cache (SHOW pool_pools)` },
    );
    // …and reused by the next session with the same start-up parameters.
    const again = await rawSession({ ...USER, application_name: app });
    expect(Number((await again.raw.query('SELECT pg_backend_pid()')).rows[0][0])).toBe(pid);
    again.raw.end();
  });

  for (const [end, how] of [
    ['CopyDone', 'COPY 2'],
    ['CopyFail', '57014'],
  ] as const) {
    for (const earlySync of [false, true]) {
      it(`extended-protocol COPY FROM STDIN sent in one piece with its data, ${end}${earlySync ? ' (and a Sync before the data, ignored)' : ''} and Sync, before the server asked for the data: ${how}, one ReadyForQuery`, async () => {
        const { raw } = await rawSession();
        raw.send(
          parseMessage('', `COPY ${table} (id, v) FROM STDIN`),
          bindMessage('', ''),
          executeMessage('', 0),
          ...(earlySync ? [syncMessage()] : []),
          copyDataMessage('710001\tone\n710002\ttwo\n'),
          end === 'CopyDone' ? copyDoneMessage() : copyFailMessage('the client gave up'),
          syncMessage(),
        );
        const r = await raw.collect('Z', 5000);
        expect(types(r)).toBe(end === 'CopyDone' ? '12GCZ' : '12GEZ');
        if (end === 'CopyDone') expect(summarize(r).tags).toEqual([how]);
        else expect(summarize(r).errors.map((e) => e.C)).toEqual([how]);
        // Exactly one ReadyForQuery, and the session goes on.
        const q = await raw.query(`DELETE FROM ${table} WHERE id IN (710001, 710002)`);
        expect(types(q.messages)).toBe('CZ');
        expect(q.tags).toEqual([end === 'CopyDone' ? 'DELETE 2' : 'DELETE 0']);
        raw.end();
      });
    }
  }

  it('COPY TO STDOUT in the extended protocol', async () => {
    const { raw } = await rawSession();
    raw.send(
      parseMessage('', 'COPY (SELECT g FROM generate_series(1, 1000) g) TO STDOUT'),
      bindMessage('', ''),
      executeMessage('', 0),
      syncMessage(),
    );
    const r = await raw.collect('Z', 5000);
    expect(types(r)).toBe(`12H${'d'.repeat(1000)}cCZ`);
    raw.end();
  });
});

describe('LISTEN/NOTIFY through pgrelay', () => {
  it('delivers notifications to an idle raw listener, from pgrelay and from a direct connection', async () => {
    const { raw } = await rawSession();
    expect((await raw.query('LISTEN relay_copy_chan')).errors).toEqual([]);
    const notifier = await pgClient({ port: proxy.port });
    await notifier.query("NOTIFY relay_copy_chan, 'via pgrelay'");
    const direct = await pgClient({ port: cluster.primary.port });
    await direct.query("NOTIFY relay_copy_chan, 'direct'");
    const a1 = await raw.next(10_000);
    const a2 = await raw.next(10_000);
    for (const a of [a1, a2]) expect(a?.type).toBe('A');
    const payloads = [a1, a2].map((a) => cstrings((a as BackendMessage).body.subarray(4)));
    expect(payloads).toEqual([
      ['relay_copy_chan', 'via pgrelay'],
      ['relay_copy_chan', 'direct'],
    ]);
    await endPg(notifier);
    await endPg(direct);
    raw.end();
  });

  it('delivers notifications with node-postgres across two clients, many of them, in order', async () => {
    const listener = await pgClient({ port: proxy.port });
    const notifier = await pgClient({ port: proxy.port });
    const got: string[] = [];
    listener.on('notification', (n) => got.push(n.payload ?? ''));
    await listener.query('LISTEN relay_copy_many');
    for (let i = 0; i < 200; i++) await notifier.query('SELECT pg_notify($1, $2)', ['relay_copy_many', `n${i}`]);
    await pollUntil(
      () => got.length,
      (n) => n >= 200,
      { what: '200 notifications' },
    ).catch(() => undefined);
    expect(got).toEqual(Array.from({ length: 200 }, (_, i) => `n${i}`));
  });
});

describe('CancelRequest through pgrelay', () => {
  it('cancels SELECT pg_sleep(30) from a raw CancelRequest with the BackendKeyData pgrelay sent (57014)', async () => {
    const app = uniqueApp('cancel');
    const { raw, pid, secret } = await rawSession({ ...USER, application_name: app });
    raw.send(queryMessage('SELECT pg_sleep(30)'));
    await waitRunning(app, 'SELECT pg_sleep(30)');
    await sendCancel(pid, secret);
    // Long before the 30 s sleep could end: the answer comes from the cancel.
    const r = summarize(await raw.collect('Z', 20_000));
    expect(r.errors.map((e) => e.C)).toEqual(['57014']);
    expect(r.errors[0].M).toMatch(/canceling statement due to user request/);
    expect(r.status).toBe('I');
    expect((await raw.query('SELECT 1')).rows).toEqual([['1']]);
    raw.end();
  });

  it('ignores a CancelRequest with the wrong secret: the query runs on until the right one comes', {
    timeout: 120_000,
  }, async () => {
    const app = uniqueApp('wrong-secret');
    const { raw, pid, secret } = await rawSession({ ...USER, application_name: app });
    raw.send(queryMessage('SELECT pg_sleep(30)'));
    await waitRunning(app, 'SELECT pg_sleep(30)');
    await sendCancel(pid, (secret + 1) | 0);
    // pgrelay rejected it (positive evidence, logged for this session's key)…
    await proxy.waitForLog(new RegExp(`"pid":${pid}[,}].*invalid cancel key`), 20_000);
    // …so nothing reached the client and the query is still running.
    expect(raw.pending, 'bytes from pgrelay after the wrong cancel').toBe(0);
    await waitRunning(app, 'SELECT pg_sleep(30)');
    // The right key still cancels it: it was running all along.
    await sendCancel(pid, secret);
    const r = summarize(await raw.collect('Z', 20_000));
    expect(r.errors.map((e) => e.C)).toEqual(['57014']);
    expect(r.status).toBe('I');
    raw.end();
  });

  it('a CancelRequest while idle does not cancel a later query', async () => {
    const app = uniqueApp('idle-cancel');
    const { raw, pid, secret } = await rawSession({ ...USER, application_name: app });
    const backendPid = (await raw.query('SELECT pg_backend_pid()')).rows[0]![0];
    await sendCancel(pid, secret);
    // pgrelay handled it (it closes the connection afterwards) and forwarded nothing: no session request was running.
    await cancelLogBarrier(proxy);
    expect(
      proxy
        .logs()
        .split('\n')
        .filter((l) => l.includes('forwarding cancel request') && l.includes(`"backendPid":${backendPid}`)),
    ).toEqual([]);
    const r = await raw.query('SELECT pg_sleep(0.5)', 20_000);
    expect(r.errors).toEqual([]);
    expect(r.tags).toEqual(['SELECT 1']);
    raw.end();
  });

  it('cancels a query with postgres.js query.cancel()', async () => {
    const app = uniqueApp('postgresjs');
    const sql = sqlClient({ port: proxy.port }, { max: 1, connection: { application_name: app } });
    await sql`SELECT 1`;
    const q = sql`SELECT pg_sleep(30)`;
    const res = q.then(
      () => 'completed',
      (e: { code?: string }) => e.code,
    );
    await waitRunning(app, 'SELECT pg_sleep(30)');
    q.cancel();
    expect(await withTimeout(res, 20_000, 'postgres.js cancel')).toBe('57014');
    expect((await sql`SELECT 2 AS two`)[0].two).toBe(2);
    await endSql(sql);
  });

  it('cancels a parameterised (extended protocol) query with node-postgres Client#cancel', async () => {
    const app = uniqueApp('node-postgres');
    // No query_timeout: with it, pg swallows the cancelled query's error events (also against PostgreSQL directly).
    const c = await pgClient({ port: proxy.port }, { query_timeout: undefined, application_name: app });
    const q = new pg.Query('SELECT pg_sleep($1)', [30]);
    const res = new Promise<string>((resolve) => {
      q.on('error', (e: Error & { code?: string }) => resolve(e.code ?? e.message));
      q.on('end', () => resolve('completed'));
    });
    c.query(q);
    await waitRunning(app, 'SELECT pg_sleep($1)');
    const canceller = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: 'postgres' });
    canceller.on('error', () => undefined);
    // Client#cancel(client, query) exists in pg 8 but is missing from @types/pg.
    (canceller as unknown as { cancel(client: pg.Client, query: pg.Query): void }).cancel(c, q);
    expect(await withTimeout(res, 20_000, 'node-postgres cancel')).toBe('57014');
    expect((await c.query('SELECT $1::int AS v', [3])).rows[0].v).toBe(3);
  });
});

it('pgrelay is still running after the file', () => {
  expect(isAlive(proxy.pid)).toBe(true);
  void errorFields;
});
