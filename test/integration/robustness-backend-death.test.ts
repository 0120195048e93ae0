/**
 * A standby dies while it streams a large result (issue: data-path robustness), on
 * pgrelay's OWN cluster: the client must get an error within a few seconds, never
 * hang, and never receive a row with bytes that do not belong to it (pgrelay must not
 * write its own error into a message the backend left half-sent, nor re-send a read
 * whose rows already reached the client).
 *
 * Every received row of `select i, repeat(md5(i::text), 8)` is compared with its expected value.
 * Clients: raw simple protocol, raw COPY TO STDOUT, node-postgres in the simple
 * protocol (row events) and the extended protocol (pg-cursor), postgres.js in the
 * extended and simple protocol. Deaths: `pg_ctl stop -m immediate` of the standby,
 * and `pg_terminate_backend` of the session's backend there.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import Cursor from 'pg-cursor';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { showPoolNodes, until, waitForJson } from '../support/failover.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { RawClient, closeAllRaw, dataRowValues, errorFields, queryMessage } from '../support/raw.js';

const ROWS = 3_000_000;
/**
 * Rows of ~290 bytes (the md5 8 times): what was sent before the death and sits in socket buffers
 * (~10 MB on loopback) reaches the client after it in a few tens of thousands of rows, each
 * checked in full, rather than in hundreds of thousands of 48-byte ones checked one by one.
 */
const H_REPEAT = 8;
/**
 * generate_series in the select list (a ProjectSet node) makes rows one at a time as they are
 * sent; in FROM (a FunctionScan) PostgreSQL would first write all ROWS numbers to a tuplestore
 * (spilling past work_mem to a temporary file) before sending the first row. The rows, their
 * order and the size of the result are the same: only the backend's wait before the first row goes.
 */
const SQL = `select i, repeat(md5(i::text), ${H_REPEAT}) as h from (select generate_series(1, ${ROWS}) as i) s`;
/** Rows received before the standby is made to die (~3 MB of the result). */
const KILL_AFTER = 10_000;
/** How long after the death the client must have its error. */
const ERROR_WITHIN_MS = 3000;
/** After this long without a row, an end or an error, the client is declared hung. */
const HANG_MS = 15_000;

let cluster: DevCluster;
let proxy: ProxyHandle;

const md5 = (s: string): string => createHash('md5').update(s).digest('hex');

/** Checks rows as they arrive: the i-th row must be (i, md5(i) H_REPEAT times). */
class RowChecker {
  next = 1;
  bad: string[] = [];
  /** When the last row arrived (ms). */
  lastAt = 0;
  check(i: unknown, h: unknown): void {
    this.lastAt = Date.now();
    const n = Number(i);
    if (n !== this.next || h !== md5(String(n)).repeat(H_REPEAT)) {
      if (this.bad.length < 5) this.bad.push(`row ${this.next}: got (${String(i)}, ${String(h).slice(0, 80)})`);
    }
    this.next++;
  }
  get received(): number {
    return this.next - 1;
  }
}

type Death = 'immediate' | 'terminate';

interface Outcome {
  error: string | undefined;
  /** ms from the start of the kill to the client's error (or end). */
  afterKillMs: number;
  /**
   * ms from the last row the client received to its error: what the backend had sent
   * before dying sits in socket buffers and reaches the client first (as with a direct
   * connection), at the client's pace; from then on the error must follow at once.
   */
  afterLastRowMs: number;
  rows: RowChecker;
}

/** Kill what serves application_name `app` on standby `node`. */
async function kill(node: number, death: Death, app: string): Promise<void> {
  if (death === 'immediate') {
    await cluster.stopNode(node, 'immediate');
    return;
  }
  const killed = await cluster.psql(
    node,
    `select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = '${app}'`,
  );
  expect(killed, `backends of ${app} terminated on node ${node}`).toBe('1');
}

/** Bring a stopped standby back and make pgrelay use it again. */
async function revive(node: number): Promise<void> {
  if (!(await cluster.isRunning(node))) await cluster.startNode(node);
  await until(
    async () => {
      const st = (await showPoolNodes(proxy)).find((r) => Number(r.node_id) === node)?.status;
      if (st === 'up') return true;
      const admin = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: 'postgres' });
      await admin.connect();
      await admin.query(`PGPOOL ATTACH NODE ${node}`).finally(() => admin.end());
      return false;
    },
    30_000,
    `node ${node} up again`,
  );
}

/**
 * Run `stream` (which resolves or rejects when the client sees the end or an error),
 * make the standby die once `rows` has KILL_AFTER rows, and report what the client saw.
 */
async function run(
  node: number,
  death: Death,
  app: string,
  rows: RowChecker,
  stream: () => Promise<void>,
): Promise<Outcome> {
  let error: string | undefined;
  let settledAt: number | undefined;
  const streaming = stream()
    .catch((e: unknown) => {
      error = (e as Error).message;
    })
    .finally(() => {
      settledAt = Date.now();
    });
  await until(() => rows.received >= KILL_AFTER || settledAt !== undefined, 60_000, `${KILL_AFTER} rows`);
  if (settledAt !== undefined)
    throw new Error(`the stream ended before the kill, after ${rows.received} rows: ${error}`);
  const killedAt = Date.now();
  await kill(node, death, app);
  // Rows sent before the death still reach the client at its pace (slow on a loaded machine):
  // the client is hung only when nothing arrives for HANG_MS and neither an end nor an error came.
  while (settledAt === undefined && Date.now() - Math.max(rows.lastAt, killedAt) < HANG_MS)
    await Promise.race([streaming, new Promise((r) => setTimeout(r, 250))]);
  if (settledAt === undefined) {
    error = `the client hung: no row, no end and no error for ${HANG_MS} ms after the kill (${rows.received} rows)`;
    settledAt = Date.now();
  }
  return {
    error,
    afterKillMs: settledAt - killedAt,
    afterLastRowMs: settledAt - Math.max(rows.lastAt, killedAt),
    rows,
  };
}

function expectCleanFailure(o: Outcome, what: string): void {
  console.log(
    `[backend-death] ${what}: ${o.rows.received} rows, error ${o.afterKillMs} ms after the kill (${o.afterLastRowMs} ms after the last row): ${o.error ?? '(none)'}`,
  );
  expect(o.rows.bad, `${what}: rows that are not what was sent`).toEqual([]);
  expect(o.rows.received).toBeGreaterThanOrEqual(KILL_AFTER);
  expect(o.rows.received).toBeLessThan(ROWS);
  expect(o.error, `${what}: the client must see an error`).toBeDefined();
  expect(o.afterLastRowMs).toBeLessThan(ERROR_WITHIN_MS);
  expect(o.error, `${what}: hung`).not.toMatch(/^the client hung/);
}

/**
 * A raw connection whose messages are parsed as they arrive (no promise per message):
 * `onMessage` sees each whole message; resolves at ReadyForQuery, rejects on an
 * ErrorResponse or when the connection closes (reporting a partial message left over).
 */
async function rawRun(app: string, sql: string, onMessage: (type: string, body: Buffer) => void): Promise<void> {
  const raw = await RawClient.connect(proxy.port);
  expect((await raw.startup({ user: 'postgres', database: 'postgres', application_name: app })).ok).toBe(true);
  const sock = raw.socket;
  sock.removeAllListeners('data');
  try {
    await new Promise<void>((resolve, reject) => {
      let buf: Buffer = Buffer.alloc(0);
      sock.on('data', (d: Buffer) => {
        buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
        let p = 0;
        while (buf.length - p >= 5) {
          const len = buf.readUInt32BE(p + 1);
          if (buf.length - p < 1 + len) break;
          const type = String.fromCharCode(buf[p]);
          const body = buf.subarray(p + 5, p + 1 + len);
          p += 1 + len;
          if (type === 'E') {
            const f = errorFields(body);
            reject(new Error(`${f.C}: ${f.M}`));
            return;
          }
          if (type === 'Z') {
            resolve();
            return;
          }
          onMessage(type, body);
        }
        buf = buf.subarray(p);
      });
      sock.on('close', () => reject(new Error(`connection closed (${buf.length} bytes of a partial message dropped)`)));
      sock.write(queryMessage(sql));
    });
  } finally {
    raw.destroy();
  }
}

/** Raw simple-protocol query: every DataRow checked. */
function rawSelect(app: string, rows: RowChecker): Promise<void> {
  return rawRun(app, SQL, (type, body) => {
    if (type !== 'D') return;
    const [i, h] = dataRowValues(body);
    rows.check(i, h);
  });
}

/** Raw COPY TO STDOUT: every CopyData must be one whole line `i\tmd5(i)`. */
function rawCopy(app: string, rows: RowChecker): Promise<void> {
  return rawRun(app, `COPY (${SQL}) TO STDOUT`, (type, body) => {
    if (type !== 'd') return;
    const line = body.toString('utf8');
    const [i, h] = line.endsWith('\n') ? line.slice(0, -1).split('\t') : [line, ''];
    rows.check(i, h);
  });
}

async function pgClientFor(app: string): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'postgres',
    database: 'postgres',
    application_name: app,
  });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** node-postgres, simple protocol: a Query with row events (rows are not kept). */
async function pgSimple(app: string, rows: RowChecker): Promise<void> {
  const c = await pgClientFor(app);
  try {
    await new Promise<void>((resolve, reject) => {
      const q = c.query(new pg.Query(SQL));
      q.on('row', (r: { i: number; h: string }) => rows.check(r.i, r.h));
      q.on('end', () => resolve());
      q.on('error', reject);
    });
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** node-postgres, extended protocol: pg-cursor reading 1000 rows at a time. */
async function pgCursor(app: string, rows: RowChecker): Promise<void> {
  const c = await pgClientFor(app);
  try {
    const cursor = c.query(new Cursor<{ i: number; h: string }>(`${SQL} where $1::int = 1`, [1]));
    for (;;) {
      const batch = await cursor.read(1000);
      if (batch.length === 0) break;
      for (const r of batch) rows.check(r.i, r.h);
    }
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** postgres.js, extended (`simple` false) or simple protocol, rows streamed with forEach. */
async function postgresJs(app: string, rows: RowChecker, simple: boolean): Promise<void> {
  const sql = postgres({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'postgres',
    database: 'postgres',
    max: 1,
    connection: { application_name: app },
    onnotice: () => undefined,
  });
  try {
    const q = sql.unsafe<Array<{ i: number; h: string }>>(SQL);
    await (simple ? q.simple() : q).forEach((r) => {
      rows.check(r.i, r.h);
    });
  } catch (e) {
    // The error is the client's outcome now: sql.end() of a pool whose connection just failed
    // waits out its whole timeout, which is the test's cleanup, not pgrelay's time to report.
    ending.add(sql.end({ timeout: 1 }).catch(() => undefined));
    throw e;
  }
  await sql.end({ timeout: 1 }).catch(() => undefined);
}

/** postgres.js pools still ending after their test (awaited in afterAll). */
const ending = new Set<Promise<unknown>>();

const clients: Array<[string, (app: string, rows: RowChecker) => Promise<void>]> = [
  ['raw simple protocol', rawSelect],
  ['raw COPY TO STDOUT', rawCopy],
  ['node-postgres simple protocol', pgSimple],
  ['node-postgres pg-cursor (extended)', pgCursor],
  ['postgres.js extended', (app, rows) => postgresJs(app, rows, false)],
  ['postgres.js simple', (app, rows) => postgresJs(app, rows, true)],
];

describe('a standby dies while streaming a large result (own DevCluster)', () => {
  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 2 });
    proxy = await startProxy({
      cluster,
      config: {
        health_check_period: 1,
        health_check_max_retries: 0,
        health_check_timeout: 5,
        connect_timeout: 2000,
        sr_check_period: 1,
        auto_failback: true,
        admin_users: 'postgres',
        // Sessions named pin1 / pin2 read from standby 1 / 2; nothing else is load balanced there.
        app_name_redirect_preference_list: 'pin1:1,pin2:2',
        log_min_messages: 'info',
      },
    });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
  }, 180_000);

  afterAll(async () => {
    closeAllRaw();
    await Promise.all([...reviving.values()].map((p) => p.catch(() => undefined)));
    await Promise.all(ending);
    await proxy?.stop();
    await cluster?.stop();
  });

  /**
   * A standby stopped by a test is brought back while the next test runs on the other standby
   * (tests alternate between nodes 1 and 2); the next test on that node waits for it to be up.
   */
  const reviving = new Map<number, Promise<void>>();
  let turn = 0;
  for (const [what, stream] of clients) {
    for (const death of ['terminate', 'immediate'] as const) {
      it(`${what}, ${death === 'immediate' ? 'pg_ctl stop -m immediate' : 'pg_terminate_backend'}: an error in time, no foreign bytes, no hang`, {
        timeout: 90_000,
      }, async () => {
        const node = (turn++ % 2) + 1;
        const pending = reviving.get(node);
        reviving.delete(node);
        await pending;
        await revive(node);
        const app = `pin${node}`;
        const rows = new RowChecker();
        const outcome = await run(node, death, app, rows, () => stream(app, rows));
        if (death === 'immediate') {
          // pgrelay sees the node down first (health check every second), then it is started again.
          const back = until(
            async () => (await showPoolNodes(proxy)).find((r) => Number(r.node_id) === node)?.status === 'down',
            30_000,
            `node ${node} marked down`,
          ).then(() => revive(node));
          back.catch(() => undefined); // awaited by the next test on this node (or afterAll)
          reviving.set(node, back);
        }
        expectCleanFailure(outcome, `${what} / ${death}`);
      });
    }
  }
});
