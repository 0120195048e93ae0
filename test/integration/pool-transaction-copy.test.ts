/**
 * pool_mode = transaction: COPY through a pool of one connection per node, so that the
 * next client certainly gets the connection the COPY used (raw protocol, simple and
 * extended). A COPY is a unit of work of its own: its connection goes back at the
 * ReadyForQuery that ends it, clean.
 *  - COPY FROM STDIN in many CopyData messages, COPY TO STDOUT (also of a read, which
 *    may run on a standby), COPY inside BEGIN … COMMIT;
 *  - CopyFail, and a bad row: the server answers ErrorResponse + ReadyForQuery while the
 *    client is still sending; what the client sends after that (CopyData, CopyDone: a
 *    server ignores them) must not take a connection or reach another client's;
 *  - libpq's extended-protocol COPY (Sync before the data, and after CopyDone): one
 *    ReadyForQuery, the connection held until then;
 *  - a client that leaves in the middle of COPY FROM STDIN: the connection (in COPY
 *    state) is never lent to the next client, which gets a working one.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
  closeAllRaw,
  copyDataMessage,
  copyDoneMessage,
  copyFailMessage,
  describeMessage,
  executeMessage,
  parseMessage,
  queryMessage,
  summarize,
  syncMessage,
  type BackendMessage,
} from '../support/raw.js';

const cluster = getCluster();
const table = `pool_copy_${process.pid}`;
let proxy: ProxyHandle;
const USER = { user: 'postgres', database: 'postgres', application_name: 'pool-tx-copy' };

beforeAll(async () => {
  proxy = await startProxy({
    cluster,
    config: {
      log_min_messages: 'warning',
      pool_mode: 'transaction',
      default_pool_size: 1,
      query_wait_timeout: 10,
      load_balance_mode: true,
    },
  });
  await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id int, v text)`);
  await cluster.waitForCatchup();
});

afterEach(() => closeAllRaw());

afterAll(async () => {
  closeAllRaw();
  await proxy?.stop();
  await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
});

function types(msgs: BackendMessage[]): string {
  return msgs.map((m) => m.type).join('');
}

async function session(): Promise<RawClient> {
  const raw = await RawClient.connect(proxy.port);
  expect((await raw.startup(USER)).ok).toBe(true);
  return raw;
}

/** COPY FROM STDIN (of `columns`) starts: CopyInResponse. */
async function copyIn(raw: RawClient, columns = ''): Promise<void> {
  raw.send(queryMessage(`COPY ${table} ${columns} FROM STDIN`));
  expect(types(await raw.collect('GE', 5000))).toBe('G');
}

/** Another client's statement runs (on the one pooled connection of the primary), and sees `n` rows of `ids`. */
async function anotherClientCounts(where: string): Promise<string> {
  const other = await session();
  const r = await other.query(`/*NO LOAD BALANCE*/ SELECT count(*) FROM ${table} WHERE ${where}`);
  expect(r.errors).toEqual([]);
  expect(r.status).toBe('I');
  other.end();
  return String(r.rows[0]?.[0]);
}

describe('COPY, pool_mode = transaction (one connection per node)', () => {
  it('COPY FROM STDIN in many CopyData messages, COPY TO STDOUT; the next client gets the connection clean', async () => {
    const raw = await session();
    await copyIn(raw, '(id, v)');
    const rows = Array.from({ length: 5000 }, (_, i) => `${100000 + i}\trow ${i}\n`).join('');
    const bytes = Buffer.from(rows);
    for (let o = 0; o < bytes.length; o += 7000) raw.send(copyDataMessage(bytes.subarray(o, o + 7000)));
    raw.send(copyDoneMessage());
    const done = summarize(await raw.collect('Z', 10_000));
    expect(done.tags).toEqual(['COPY 5000']);
    expect(done.status).toBe('I');
    expect(await anotherClientCounts('id >= 100000 AND id < 105000')).toBe('5000');
    raw.send(queryMessage(`COPY (SELECT id FROM ${table} WHERE id >= 100000 AND id < 101000 ORDER BY id) TO STDOUT`));
    const out = await raw.collect('Z', 10_000);
    expect(types(out)).toBe(`H${'d'.repeat(1000)}cCZ`);
    expect((await raw.query('SELECT 1')).rows).toEqual([['1']]);
    raw.end();
  });

  it('COPY inside BEGIN … COMMIT', async () => {
    const raw = await session();
    expect((await raw.query('BEGIN')).status).toBe('T');
    await copyIn(raw, '(id, v)');
    raw.send(copyDataMessage('200001\tin tx\n200002\tin tx\n'), copyDoneMessage());
    const r = summarize(await raw.collect('Z', 5000));
    expect(r.tags).toEqual(['COPY 2']);
    expect(r.status).toBe('T');
    expect((await raw.query(`SELECT count(*) FROM ${table} WHERE id IN (200001, 200002)`)).rows).toEqual([['2']]);
    expect((await raw.query('COMMIT')).status).toBe('I');
    expect(await anotherClientCounts('id IN (200001, 200002)')).toBe('2');
    raw.end();
  });

  it('CopyFail: 57014, nothing copied; the session and the next client go on', async () => {
    const raw = await session();
    await copyIn(raw);
    raw.send(copyDataMessage('300001\tnever\n'), copyFailMessage('client changed its mind'));
    const r = summarize(await raw.collect('Z', 5000));
    expect(r.errors.map((e) => e.C)).toEqual(['57014']);
    expect(r.status).toBe('I');
    expect(await anotherClientCounts('id = 300001')).toBe('0');
    expect((await raw.query('SELECT 2')).rows).toEqual([['2']]);
    raw.end();
  });

  it('a bad row: the error comes while the client still sends; its late CopyData and CopyDone are ignored, as a server ignores them', async () => {
    const raw = await session();
    await copyIn(raw);
    raw.send(copyDataMessage('400001\tok\nnot-a-number\tbad\n'));
    const r = summarize(await raw.collect('Z', 5000));
    expect(r.errors.map((e) => e.C)).toEqual(['22P02']);
    expect(r.status).toBe('I');
    // The unit of work ended there (the connection went back): another client uses it now.
    expect(await anotherClientCounts('id = 400001')).toBe('0');
    // The rest of the client's COPY, late: no reply, as from a server.
    raw.send(copyDataMessage('400002\tlate\n'), copyDataMessage('400003\tlate\n'), copyDoneMessage());
    raw.send(queryMessage('SELECT 3'));
    const next = await raw.collect('Z', 5000);
    expect(types(next)).toBe('TDCZ');
    expect(summarize(next).rows).toEqual([['3']]);
    expect(await anotherClientCounts('id IN (400002, 400003)')).toBe('0');
    raw.end();
  });

  it("libpq's extended-protocol COPY FROM STDIN (Sync before the data, and after CopyDone): one ReadyForQuery", async () => {
    const raw = await session();
    raw.send(
      parseMessage('', `COPY ${table} (id, v) FROM STDIN`),
      bindMessage('', ''),
      describeMessage('P', ''),
      executeMessage('', 0),
      syncMessage(),
    );
    expect(types(await raw.collect('GE', 5000))).toBe('12nG');
    raw.send(copyDataMessage('500001\text\n500002\text\n'), copyDoneMessage(), syncMessage());
    const r = await raw.collect('Z', 5000);
    expect(types(r)).toBe('CZ');
    expect(summarize(r).tags).toEqual(['COPY 2']);
    const q = await raw.query(`SELECT count(*) FROM ${table} WHERE id IN (500001, 500002)`);
    expect(q.rows).toEqual([['2']]);
    expect(types(q.messages)).toBe('TDCZ');
    expect(await anotherClientCounts('id IN (500001, 500002)')).toBe('2');
    raw.end();
  });

  it('extended-protocol COPY FROM STDIN sent in one piece with its data, CopyFail and Sync, before the server asked for the data: 57014, one ReadyForQuery, the next client gets the connection', async () => {
    const raw = await session();
    raw.send(
      parseMessage('', `COPY ${table} (id, v) FROM STDIN`),
      bindMessage('', ''),
      executeMessage('', 0),
      copyDataMessage('510001\tnever\n'),
      copyFailMessage('the client gave up'),
      syncMessage(),
    );
    const r = await raw.collect('Z', 5000);
    expect(types(r)).toBe('12GEZ');
    expect(summarize(r).errors.map((e) => e.C)).toEqual(['57014']);
    const q = await raw.query(`SELECT count(*) FROM ${table} WHERE id = 510001`);
    expect(q.rows).toEqual([['0']]);
    expect(types(q.messages)).toBe('TDCZ');
    expect(await anotherClientCounts('id = 510001')).toBe('0');
    raw.end();
  });

  it('a client that leaves in the middle of COPY FROM STDIN: its connection is not lent to the next client, nothing is copied', async () => {
    const raw = await session();
    await copyIn(raw);
    raw.send(copyDataMessage('600001\tleft\n'));
    raw.destroy();
    expect(await anotherClientCounts('id = 600001')).toBe('0');
    // And once more: the pool's one connection works.
    expect(await anotherClientCounts('id = 600001')).toBe('0');
  });
});
