/**
 * README protocol features not covered elsewhere (shared cluster, own pgrelay,
 * nodes left alone):
 *
 *  - FunctionCall (protocol message 'F'): a raw FunctionCall of int4pl(2, 3),
 *    and psql's \lo_import / \lo_export, which libpq implements with
 *    FunctionCall (lo_creat, lo_open, lowrite, loread, lo_close) inside a
 *    transaction;
 *  - a CancelRequest for a read running on a standby reaches that standby's
 *    backend: 57014 quickly, and the standby backend is idle afterwards
 *    (README, Differences: "a CancelRequest is forwarded only to the backend(s)
 *    running that client's request").
 *
 * Reads are pinned to standby 1 with app_name_redirect_preference_list;
 * write_function_list = 'nextval' makes pg_sleep() a read (otherwise pgrelay
 * finds it volatile in the catalog and sends it to the primary).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { until } from '../support/failover.js';
import { runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  RawClient,
  bindMessage,
  cancelRequest,
  closeAllRaw,
  describeMessage,
  executeMessage,
  flushMessage,
  message,
  parseMessage,
  queryMessage,
  summarize,
  syncMessage,
} from '../support/raw.js';

const cluster = getCluster();
const APP = `feat-proto-${process.pid}`;
let proxy: ProxyHandle;
let work: string;

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-feat-proto-'));
  proxy = await startProxy({
    cluster,
    config: {
      log_min_messages: 'info',
      app_name_redirect_preference_list: `${APP}:1`,
      write_function_list: 'nextval',
    },
  });
});

afterEach(() => {
  closeAllRaw();
});

afterAll(async () => {
  await proxy?.stop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

async function rawSession(): Promise<{ raw: RawClient; pid: number; secret: number }> {
  const raw = await RawClient.connect(proxy.port);
  const st = await raw.startup({ user: 'postgres', database: 'postgres', application_name: APP });
  expect(st.ok, JSON.stringify(st.error)).toBe(true);
  return { raw, pid: st.pid, secret: st.secret };
}

/** FunctionCall: oid, text arguments, text result. */
function functionCall(oid: number, args: string[]): Buffer {
  const parts: Buffer[] = [];
  const i16 = (n: number): Buffer => {
    const b = Buffer.alloc(2);
    b.writeInt16BE(n);
    return b;
  };
  const i32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    return b;
  };
  parts.push(i32(oid), i16(1), i16(0), i16(args.length));
  for (const a of args) {
    const v = Buffer.from(a, 'utf8');
    parts.push(i32(v.length), v);
  }
  parts.push(i16(0));
  return message('F', Buffer.concat(parts));
}

describe('FunctionCall through pgrelay (README: protocol 3.0 … FunctionCall)', () => {
  it('a raw FunctionCall of int4pl(2, 3) answers FunctionCallResponse "5" and ReadyForQuery', async () => {
    const oid = Number(await cluster.psql(cluster.primaryId, "SELECT 'int4pl'::regproc::oid"));
    const { raw } = await rawSession();
    raw.send(functionCall(oid, ['2', '3']));
    const msgs = await raw.collect('Z', 10_000);
    expect(msgs.map((m) => m.type).join('')).toBe('VZ');
    const v = msgs[0]!.body;
    const len = v.readInt32BE(0);
    expect(v.subarray(4, 4 + len).toString('utf8')).toBe('5');
    // The session goes on.
    expect((await raw.query('SELECT 1')).rows).toEqual([['1']]);
    raw.end();
  });

  it("psql \\lo_import / \\lo_export (libpq's FunctionCall interface) round-trip 200 kB through pgrelay", async () => {
    const src = path.join(work, 'in.bin');
    const dst = path.join(work, 'out.bin');
    const data = crypto.randomBytes(200 * 1024);
    fs.writeFileSync(src, data);
    const imp = await runPsql(['-At', '-v', 'ON_ERROR_STOP=1', '-c', `\\lo_import '${src}'`], {
      port: proxy.port,
      env: { PGAPPNAME: APP },
      timeoutMs: 20_000,
    });
    expect(imp.code, imp.stderr).toBe(0);
    const oid = Number(/^lo_import (\d+)$/m.exec(imp.stdout)?.[1]);
    expect(oid, imp.stdout).toBeGreaterThan(0);
    try {
      // Written on the primary.
      expect(
        await cluster.psql(cluster.primaryId, `SELECT count(*) FROM pg_largeobject_metadata WHERE oid = ${oid}`),
      ).toBe('1');
      const exp = await runPsql(['-At', '-v', 'ON_ERROR_STOP=1', '-c', `\\lo_export ${oid} '${dst}'`], {
        port: proxy.port,
        env: { PGAPPNAME: APP },
        timeoutMs: 20_000,
      });
      expect(exp.code, exp.stderr).toBe(0);
      expect(fs.readFileSync(dst).equals(data), 'exported bytes equal the imported ones').toBe(true);
    } finally {
      await cluster.psql(cluster.primaryId, `SELECT lo_unlink(${oid})`);
    }
  });
});

describe('CancelRequest of a read running on a standby', () => {
  it('reaches the standby backend running it: 57014 quickly, that backend idle afterwards, the session goes on', async () => {
    const { raw, pid, secret } = await rawSession();
    const first = await raw.query('SELECT inet_server_port()');
    expect(first.rows, 'reads of this session go to standby 1').toEqual([[String(cluster.node(1).port)]]);

    raw.send(queryMessage('SELECT pg_sleep(30)'));
    let standbyPid = 0;
    await until(
      async () => {
        const out = await cluster.psql(
          1,
          `SELECT pid FROM pg_stat_activity WHERE application_name = '${APP}' AND state = 'active' AND query = 'SELECT pg_sleep(30)'`,
        );
        standbyPid = Number(out);
        return standbyPid > 0;
      },
      15_000,
      'pg_sleep(30) running on standby 1',
    );

    const t0 = Date.now();
    const c = await RawClient.connect(proxy.port);
    c.send(cancelRequest(pid, secret));
    expect(await c.waitClosed(5000), 'pgrelay closes the cancel connection').toBe(true);
    const r = summarize(await raw.collect('Z', 15_000));
    const ms = Date.now() - t0;
    process.stderr.write(`[features] read on standby 1 cancelled ${ms} ms after the CancelRequest\n`);
    expect(r.errors.map((e) => e.C)).toEqual(['57014']);
    expect(r.errors[0]?.M).toBe('canceling statement due to user request');
    expect(ms, 'well before the 30 s sleep would end').toBeLessThan(15_000);
    await until(
      async () =>
        (await cluster.psql(1, `SELECT state || '|' || query FROM pg_stat_activity WHERE pid = ${standbyPid}`)) ===
        'idle|SELECT pg_sleep(30)',
      10_000,
      `standby backend ${standbyPid} idle after the cancel`,
    );
    expect((await raw.query('SELECT inet_server_port()')).rows).toEqual([[String(cluster.node(1).port)]]);
    raw.end();
  });
});

describe('extended protocol: messages sent after the server reported an error, before Sync', () => {
  // PostgreSQL skips every message after an error until Sync, also those that arrive after
  // it sent the ErrorResponse: pgrelay must not wait for replies to them.
  /**
   * `first` (Parse/Bind/Execute, failing), then an INSERT into a fresh table, then Sync, in one
   * pipeline: what the client got, and the rows the INSERT left (0 when it was skipped).
   */
  async function failThenInsert(
    label: string,
    first: string,
  ): Promise<{ r: ReturnType<typeof summarize>; rows: string; after: Array<Array<string | null>> }> {
    const table = `feat_skip_${label}_${process.pid}`;
    await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id int)`);
    await cluster.waitForCatchup(30_000);
    try {
      const { raw } = await rawSession();
      raw.send(
        parseMessage('', first),
        bindMessage('', ''),
        executeMessage('', 0),
        parseMessage('', `INSERT INTO ${table} VALUES (1)`),
        bindMessage('', ''),
        executeMessage('', 0),
        syncMessage(),
      );
      const r = summarize(await raw.collect('Z', 10_000));
      const rows = await cluster.psql(cluster.primaryId, `SELECT count(*) FROM ${table}`);
      return { r, rows, after: (await raw.query('SELECT 5')).rows };
    } finally {
      await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}`);
    }
  }

  it('one pipeline: a read failing on the standby, then an INSERT (primary), then Sync: the INSERT is skipped as PostgreSQL would', async () => {
    const { r, rows, after } = await failThenInsert('read', 'SELECT inet_server_port(), 1/0');
    expect(r.errors.map((e) => e.C)).toEqual(['22012']);
    expect(r.tags).toEqual([]);
    expect(r.status).toBe('I');
    expect(rows).toBe('0');
    expect(after).toEqual([['5']]);
  });

  it('an admin command failing in a pipeline (PGPOOL SET of an unknown parameter): the INSERT after it is skipped until Sync', async () => {
    const { r, rows, after } = await failThenInsert('admin', 'PGPOOL SET no_such_parameter_xyz = 1');
    expect(r.errors.length, JSON.stringify(r.messages)).toBe(1);
    expect(r.errors[0]?.M).toMatch(/no_such_parameter_xyz/);
    expect(r.tags).toEqual([]);
    expect(r.status).toBe('I');
    expect(rows).toBe('0');
    expect(after).toEqual([['5']]);
  });

  for (const where of ['primary', 'standby'] as const) {
    it(`Parse error, then (after reading it) Bind/Describe/Execute, then Sync: ReadyForQuery, the session goes on (${where})`, async () => {
      const { raw } = await rawSession();
      const read = where === 'standby';
      raw.send(
        parseMessage('', read ? 'SELECT 1 FROM no_such_table_xyz' : 'INSERT INTO no_such_table_xyz VALUES (1)'),
        flushMessage(),
      );
      const err = await raw.collect('E', 10_000);
      expect(err.at(-1)?.type).toBe('E');
      raw.send(
        parseMessage('', 'SELECT 1'),
        bindMessage('', ''),
        describeMessage('P', ''),
        executeMessage('', 0),
        flushMessage(),
      );
      // Nothing answers these (the server skips them); the Sync ends the skipping.
      raw.send(syncMessage());
      const done = summarize(await raw.collect('Z', 10_000));
      expect(done.status).toBe('I');
      expect(done.messages.map((m) => m.type)).toEqual(['Z']);
      const after = await raw.query('SELECT 2');
      expect(after.rows).toEqual([['2']]);
      // The extended protocol goes on in step: every reply where it belongs.
      raw.send(parseMessage('s3', 'SELECT 3'), bindMessage('', 's3'), executeMessage('', 0), syncMessage());
      const third = summarize(await raw.collect('Z', 10_000));
      expect(third.messages.map((m) => m.type)).toEqual(['1', '2', 'D', 'C', 'Z']);
      expect(third.rows).toEqual([['3']]);
      const fourth = await raw.query('SELECT 4');
      expect(fourth.rows).toEqual([['4']]);
    });
  }
});
