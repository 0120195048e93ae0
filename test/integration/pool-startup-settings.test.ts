/**
 * pool_mode = transaction: server pools are per (node, user, database), whatever the
 * clients' start-up settings (application_name, client_encoding…); those are replayed
 * on the server connection serving each client, which sees its own values
 * (src/pool/startup-settings.ts, src/session/backends.ts checkout).
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeAllClients, endPg, endSql, nodeClients, pgClient, sqlClient } from '../support/clients.js';
import { getCluster } from '../support/cluster.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import {
  type BackendMessage,
  bindMessage,
  closeAllRaw,
  executeMessage,
  message,
  parseMessage,
  queryMessage,
  RawClient,
  summarize,
} from '../support/raw.js';

const cluster = getCluster();
const db = `pool_startup_${process.pid}`;
/** pool_mode = transaction, default_pool_size = 2. */
let proxy: ProxyHandle;

/** Client backends connected to the test database on each node (pgrelay's checks use another database). */
async function backendsPerNode(watchers: pg.Client[]): Promise<number[]> {
  return Promise.all(
    watchers.map(async (c) => {
      const r = await c.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
        [db],
      );
      return r.rows[0].n as number;
    }),
  );
}

async function watchers(): Promise<pg.Client[]> {
  return nodeClients(cluster);
}

beforeAll(async () => {
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await cluster.psql(cluster.primaryId, `CREATE DATABASE ${db}`);
  await cluster.waitForCatchup();
  proxy = await startProxy({
    cluster,
    config: { log_min_messages: 'warning', pool_mode: 'transaction', default_pool_size: 2, query_wait_timeout: 20 },
  });
}, 60_000);

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  const code = await proxy?.stop();
  await cluster.psql(cluster.primaryId, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  expect(code).toBe(0);
});

describe('start-up settings in pool_mode = transaction', () => {
  it('clients with 3 application_names share one pool of 2 per node; each sees its own name, in pg_stat_activity too', {
    timeout: 60_000,
  }, async () => {
    const names = ['app-a', 'app-b', 'app-c'];
    const clients = await Promise.all(
      Array.from({ length: 9 }, (_, i) => pgClient(proxy, { database: db, application_name: names[i % 3] })),
    );
    const w = await watchers();
    try {
      let peaks = cluster.nodes.map(() => 0);
      for (let round = 0; round < 3; round++) {
        const counting = (async () => {
          for (let k = 0; k < 5; k++) {
            const n = await backendsPerNode(w);
            peaks = peaks.map((p, i) => Math.max(p, n[i]));
            await new Promise((r) => setTimeout(r, 30));
          }
        })();
        await Promise.all(
          clients.map(async (c, i) => {
            const name = names[i % 3];
            await c.query('BEGIN');
            const r = await c.query(
              "SELECT current_setting('application_name') AS cur, (SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS seen, pg_sleep(0.05)",
            );
            expect(r.rows[0].cur).toBe(name);
            expect(r.rows[0].seen).toBe(name);
            const show = await c.query('SHOW application_name');
            expect(show.rows[0].application_name).toBe(name);
            await c.query('COMMIT');
            // Outside a transaction too (an autocommit statement on whichever connection is free).
            const auto = await c.query("SELECT current_setting('application_name') AS cur");
            expect(auto.rows[0].cur).toBe(name);
          }),
        );
        await counting;
      }
      const after = await backendsPerNode(w);
      for (const [i, p] of peaks.entries()) {
        expect(p, `node ${i}: peak ${p}`).toBeLessThanOrEqual(2);
        expect(after[i], `node ${i}: ${after[i]} afterwards`).toBeLessThanOrEqual(2);
      }
      expect(Math.max(...after)).toBeGreaterThan(0);
    } finally {
      await Promise.all(w.map((c) => c.end().catch(() => undefined)));
      await Promise.all(clients.map((c) => endPg(c)));
    }
  });

  it('a LATIN1 client gets text converted to LATIN1 and is told its encoding; a UTF8 client next is not affected', async () => {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({
      user: 'postgres',
      database: db,
      client_encoding: 'LATIN1',
      application_name: 'latin1-client',
    });
    expect(st.ok, JSON.stringify(st.error)).toBe(true);
    expect(st.parameters.client_encoding).toBe('LATIN1');
    expect(st.parameters.application_name).toBe('latin1-client');
    for (let i = 0; i < 3; i++) {
      raw.send(message('Q', Buffer.from("SELECT chr(233) || 'x' AS s, current_setting('client_encoding') AS e\0")));
      const r = summarize(await raw.collect('Z'));
      expect(r.errors).toEqual([]);
      const row = r.messages.find((m) => m.type === 'D');
      // One column: length 2, bytes e9 78 (é in LATIN1, then x).
      expect(row?.body.subarray(2, 8).toString('hex')).toBe('00000002e978');
      expect(r.rows[0][1]).toBe('LATIN1');
      // A LATIN1 byte the client sends is read as LATIN1.
      raw.send(message('Q', Buffer.concat([Buffer.from("SELECT ascii('"), Buffer.from([0xe9]), Buffer.from("')\0")])));
      const a = summarize(await raw.collect('Z'));
      expect(a.errors).toEqual([]);
      expect(a.rows[0][0]).toBe('233');
      // A UTF8 client (node-postgres) in between takes the same connections.
      const u = await pgClient(proxy, { database: db });
      const ur = await u.query("SELECT chr(233) AS s, current_setting('client_encoding') AS e");
      expect(ur.rows[0]).toEqual({ s: 'é', e: 'UTF8' });
      await endPg(u);
    }
    raw.end();
  });

  /** A client with start-up `params` prepares `text` as a named statement and runs it: the one value it returns. */
  async function preparedValue(params: Record<string, string>, name: string, text: Buffer): Promise<string | null> {
    const raw = await RawClient.connect(proxy.port);
    try {
      expect((await raw.startup({ user: 'postgres', database: db, ...params })).ok).toBe(true);
      const n = Buffer.from(`${name}\0`);
      const parse = message('P', Buffer.concat([n, text, Buffer.from([0, 0, 0])]));
      const bind = message('B', Buffer.concat([Buffer.from('\0'), n, Buffer.from([0, 0, 0, 0, 0, 0])]));
      raw.send(parse, bind, message('E', Buffer.from([0, 0, 0, 0, 0])), message('S'));
      const r = summarize(await raw.collect('Z'));
      expect(r.errors).toEqual([]);
      return r.rows[0]?.[0] ?? null;
    } finally {
      raw.destroy();
    }
  }

  it('the same statement bytes prepared by a LATIN1 and a UTF8 client mean what each meant (a named statement is not shared across encodings)', async () => {
    // The bytes c3 a9 are two characters (Ã©) in LATIN1 and one (é) in UTF8; pgrelay names
    // a distinct statement per text, so the text must be read in the client's encoding.
    const text = Buffer.concat([Buffer.from("SELECT length('"), Buffer.from([0xc3, 0xa9]), Buffer.from("') AS n")]);
    // Both on the pool's connections, one after the other, each twice.
    for (let i = 0; i < 2; i++) {
      expect(await preparedValue({ client_encoding: 'LATIN1' }, 'enc_latin1', text)).toBe('2');
      expect(await preparedValue({ client_encoding: 'UTF8' }, 'enc_utf8', text)).toBe('1');
    }
  });

  it('the same statement with a backslash in a literal, prepared with standard_conforming_strings off and on, means what each client meant', async () => {
    // 'a\b' is three characters with standard_conforming_strings on, two (a, backspace) with it off.
    const text = Buffer.from("SELECT length('a\\b') AS n");
    for (let i = 0; i < 2; i++) {
      expect(await preparedValue({ standard_conforming_strings: 'off' }, 'scs_off', text)).toBe('2');
      expect(await preparedValue({ standard_conforming_strings: 'on' }, 'scs_on', text)).toBe('3');
    }
  });

  it('the same statement with a timestamptz literal, prepared under two TimeZones, means what each client meant (PostgreSQL reads a literal at Parse)', async () => {
    const text = Buffer.from("SELECT extract(epoch FROM '2024-01-01 00:00'::timestamptz)::bigint AS n");
    for (let i = 0; i < 2; i++) {
      expect(await preparedValue({ TimeZone: 'UTC' }, 'tz_utc', text)).toBe('1704067200');
      expect(await preparedValue({ TimeZone: 'Asia/Tokyo' }, 'tz_tokyo', text)).toBe('1704034800');
    }
  });

  it('options -c settings are replayed; a start-up parameter pgrelay cannot SET keeps a pool of its own', async () => {
    const c = await pgClient(proxy, { database: db, options: '-c statement_timeout=4321 -c search_path=a,public' });
    const r = await c.query(
      "SELECT current_setting('statement_timeout') AS t, current_setting('search_path') AS p, current_schemas(true)::text AS s",
    );
    expect(r.rows[0]).toEqual({ t: '4321ms', p: 'a,public', s: '{pg_catalog,public}' });
    await endPg(c);
    // A custom setting in the start-up packet: sent as a start-up parameter, on connections of its own.
    const sql = sqlClient(proxy, { database: db, max: 1, connection: { 'pgrelay_test.flag': 'on' } });
    const rows = await sql`SELECT current_setting('pgrelay_test.flag') AS f`;
    expect(rows[0].f).toBe('on');
    await endSql(sql);
    const other = await pgClient(proxy, { database: db });
    const none = await other.query("SELECT current_setting('pgrelay_test.flag', true) AS f");
    expect(none.rows[0].f ?? '').toBe('');
    await endPg(other);
  });

  /** ParameterStatus values in `msgs`, the last of each name. */
  function reported(msgs: BackendMessage[]): Record<string, string> {
    const out: Record<string, string> = {};
    for (const m of msgs.filter((x) => x.type === 'S')) {
      const [k, v] = m.body.toString().split('\0');
      out[k] = v;
    }
    return out;
  }

  /**
   * A client with start-up DateStyle and application_name changes both, then runs `reset`
   * (simple Query or Parse/Bind/Execute/Sync) with a read of both pipelined right behind it,
   * then reads them again five times while another client with other settings shares the
   * pool: what it is told (ParameterStatus) and what it reads.
   */
  async function resetRun(
    port: number,
    reset: string,
    extended: boolean,
    other?: () => Promise<void>,
    changeApp = true,
  ) {
    const raw = await RawClient.connect(port);
    try {
      const st = await raw.startup({
        user: 'postgres',
        database: db,
        DateStyle: 'SQL, DMY',
        application_name: 'rs-app',
      });
      expect(st.ok, JSON.stringify(st.error)).toBe(true);
      raw.send(queryMessage("SET DateStyle = 'German'"));
      await raw.collect('Z');
      if (changeApp) {
        raw.send(queryMessage("SET application_name = 'changed'"));
        await raw.collect('Z');
      }
      const read = queryMessage("SELECT current_setting('DateStyle') AS d, current_setting('application_name') AS a");
      if (extended) raw.send(parseMessage('', reset), bindMessage('', ''), executeMessage(), message('S'), read);
      else raw.send(queryMessage(reset), read);
      const resetReply = await raw.collect('Z');
      const behind = summarize(await raw.collect('Z'));
      const later: string[][] = [];
      for (let i = 0; i < 5; i++) {
        await other?.();
        raw.send(read);
        later.push(summarize(await raw.collect('Z')).rows[0] as string[]);
      }
      return {
        told: reported(resetReply),
        errors: [...summarize(resetReply).errors, ...behind.errors],
        behind: behind.rows[0],
        later,
      };
    } finally {
      raw.destroy();
    }
  }

  it('RESET ALL, RESET x, SET x TO DEFAULT and DISCARD ALL return start-up settings to the start-up values, as on a direct connection', {
    timeout: 120_000,
  }, async () => {
    const noLb = await startProxy({
      cluster,
      config: { log_min_messages: 'warning', pool_mode: 'transaction', default_pool_size: 2, load_balance_mode: false },
    });
    try {
      for (const reset of ['RESET ALL', 'RESET DateStyle', 'SET DateStyle TO DEFAULT', 'DISCARD ALL']) {
        for (const extended of [false, true]) {
          const direct = await resetRun(cluster.node(cluster.primaryId).port, reset, extended);
          expect(direct.errors).toEqual([]);
          const all = reset.endsWith('ALL');
          expect(direct.told.DateStyle).toBe('SQL, DMY');
          expect(direct.behind).toEqual(['SQL, DMY', all ? 'rs-app' : 'changed']);
          for (const [name, p] of [
            ['load balancing', proxy],
            ['primary only', noLb],
          ] as const) {
            // Another client, other settings, taking the pool's connections in between.
            const o = await pgClient(p, { database: db, application_name: 'other' });
            await o.query("SET DateStyle = 'Postgres, MDY'");
            const got = await resetRun(p.port, reset, extended, async () => {
              await o.query('SELECT 1');
            });
            await endPg(o);
            const what = `${reset} (${extended ? 'extended' : 'simple'}, ${name})`;
            expect(got.errors, what).toEqual([]);
            expect({ told: got.told.DateStyle, app: got.told.application_name }, what).toEqual({
              told: direct.told.DateStyle,
              app: direct.told.application_name,
            });
            expect(got.behind, what).toEqual(direct.behind);
            expect(got.later, what).toEqual(direct.later);
          }
        }
      }
    } finally {
      await noLb.stop();
    }
  });

  it('RESET ALL and DISCARD ALL report only the settings whose value changes, as a direct connection does (application_name left at its start-up value: not reported)', async () => {
    for (const reset of ['RESET ALL', 'DISCARD ALL']) {
      for (const extended of [false, true]) {
        const direct = await resetRun(cluster.node(cluster.primaryId).port, reset, extended, undefined, false);
        expect(direct.errors).toEqual([]);
        expect(Object.keys(direct.told)).toEqual(['DateStyle']);
        const got = await resetRun(proxy.port, reset, extended, undefined, false);
        const what = `${reset} (${extended ? 'extended' : 'simple'})`;
        expect(got.errors, what).toEqual([]);
        expect(got.told, what).toEqual(direct.told);
        expect(got.behind, what).toEqual(direct.behind);
      }
    }
  });

  it('RESET ALL among several statements of one Query returns start-up settings to the start-up values too (a SET after it in the Query stays)', async () => {
    for (const [reset, later] of [
      ['RESET ALL; SELECT 1', 'rs-app'],
      ["RESET ALL; SET application_name = 'after'", 'after'],
    ] as const) {
      const direct = await resetRun(cluster.node(cluster.primaryId).port, reset, false);
      expect(direct.errors).toEqual([]);
      expect(direct.later[4]).toEqual(['SQL, DMY', later]);
      const got = await resetRun(proxy.port, reset, false);
      expect(got.errors, reset).toEqual([]);
      expect(got.told, reset).toEqual(direct.told);
      expect(got.later, reset).toEqual(direct.later);
    }
  });

  it('an invalid start-up setting ends the session with the server error, as PostgreSQL refuses the start-up', async () => {
    const raw = await RawClient.connect(proxy.port);
    const st = await raw.startup({ user: 'postgres', database: db, DateStyle: 'nonsense' });
    // The start-up report may come first (the value is checked where it is replayed): then the first query fails.
    if (st.ok) {
      raw.send(message('Q', Buffer.from('SELECT 1\0')));
      const r = summarize(await raw.collect((m) => m.type === 'E' || m.type === 'Z'));
      expect(r.errors[0]?.C, JSON.stringify(r.messages.map((m) => [m.type, m.body.toString()]))).toBe('22023');
      expect(r.errors[0]?.S).toBe('FATAL');
      expect(await raw.waitClosed()).toBe(true);
    } else expect(st.error?.C).toBe('22023');
  });
});
