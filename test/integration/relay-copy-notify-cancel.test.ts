/**
 * Foundation: COPY both ways (raw protocol, simple and extended), LISTEN/NOTIFY
 * and CancelRequest through pgrelay.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { closeAllClients, endPg, endSql, pgClient, sqlClient, withTimeout } from '../support/clients.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
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
  sleep,
  summarize,
  syncMessage,
  type BackendMessage,
} from '../support/raw.js';

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

async function sendCancel(pid: number, secret: number): Promise<void> {
  const c = await RawClient.connect(proxy.port);
  c.send(cancelRequest(pid, secret));
  await c.waitClosed(3000);
  c.destroy();
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
    // The session is idle and clean: after Terminate its backend is reset and reused.
    raw.end();
    await raw.waitClosed(3000);
    await sleep(300);
    const again = await rawSession({ ...USER, application_name: app });
    expect(Number((await again.raw.query('SELECT pg_backend_pid()')).rows[0][0])).toBe(pid);
    again.raw.end();
  });

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
    const a1 = await raw.next(5000);
    const a2 = await raw.next(5000);
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
    const deadline = Date.now() + 5000;
    while (got.length < 200 && Date.now() < deadline) await sleep(20);
    expect(got).toEqual(Array.from({ length: 200 }, (_, i) => `n${i}`));
  });
});

describe('CancelRequest through pgrelay', () => {
  it('cancels SELECT pg_sleep(30) from a raw CancelRequest with the BackendKeyData pgrelay sent (57014, quickly)', async () => {
    const { raw, pid, secret } = await rawSession();
    raw.send(queryMessage('SELECT pg_sleep(30)'));
    await sleep(300);
    const t0 = Date.now();
    await sendCancel(pid, secret);
    const r = summarize(await raw.collect('Z', 5000));
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(r.errors.map((e) => e.C)).toEqual(['57014']);
    expect(r.errors[0].M).toMatch(/canceling statement due to user request/);
    expect(r.status).toBe('I');
    expect((await raw.query('SELECT 1')).rows).toEqual([['1']]);
    raw.end();
  });

  it('ignores a CancelRequest with the wrong secret', async () => {
    const { raw, pid, secret } = await rawSession();
    raw.send(queryMessage('SELECT pg_sleep(1.5)'));
    await sleep(200);
    await sendCancel(pid, (secret + 1) | 0);
    const r = summarize(await raw.collect('Z', 5000));
    expect(r.errors).toEqual([]);
    expect(r.tags).toEqual(['SELECT 1']);
    raw.end();
  });

  it('a CancelRequest while idle does not cancel a later query', async () => {
    const { raw, pid, secret } = await rawSession();
    await sendCancel(pid, secret);
    await sleep(200);
    const r = await raw.query('SELECT pg_sleep(0.5)', 5000);
    expect(r.errors).toEqual([]);
    raw.end();
  });

  it('cancels a query with postgres.js query.cancel()', async () => {
    const sql = sqlClient({ port: proxy.port }, { max: 1 });
    await sql`SELECT 1`;
    const q = sql`SELECT pg_sleep(30)`;
    const res = q.then(
      () => 'completed',
      (e: { code?: string }) => e.code,
    );
    await sleep(300);
    const t0 = Date.now();
    q.cancel();
    expect(await withTimeout(res, 5000, 'postgres.js cancel')).toBe('57014');
    expect(Date.now() - t0).toBeLessThan(3000);
    expect((await sql`SELECT 2 AS two`)[0].two).toBe(2);
    await endSql(sql);
  });

  it('cancels a parameterised (extended protocol) query with node-postgres Client#cancel', async () => {
    // No query_timeout: with it, pg swallows the cancelled query's error events (also against PostgreSQL directly).
    const c = await pgClient({ port: proxy.port }, { query_timeout: undefined });
    const q = new pg.Query('SELECT pg_sleep($1)', [30]);
    const res = new Promise<string>((resolve) => {
      q.on('error', (e: Error & { code?: string }) => resolve(e.code ?? e.message));
      q.on('end', () => resolve('completed'));
    });
    c.query(q);
    await sleep(300);
    const t0 = Date.now();
    const canceller = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: 'postgres' });
    canceller.on('error', () => undefined);
    // Client#cancel(client, query) exists in pg 8 but is missing from @types/pg.
    (canceller as unknown as { cancel(client: pg.Client, query: pg.Query): void }).cancel(c, q);
    expect(await withTimeout(res, 5000, 'node-postgres cancel')).toBe('57014');
    expect(Date.now() - t0).toBeLessThan(3000);
    expect((await c.query('SELECT $1::int AS v', [3])).rows[0].v).toBe(3);
  });
});

it('pgrelay is still running after the file', () => {
  expect(isAlive(proxy.pid)).toBe(true);
  void errorFields;
});
