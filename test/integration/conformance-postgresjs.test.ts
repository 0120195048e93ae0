/**
 * Driver conformance, postgres.js — issue 12.
 *
 * Every scenario runs three times in the same test: directly against the
 * primary, through pgrelay with load balancing off, and through pgrelay with
 * load balancing on and weights 0:1:1; the outcomes must be equal
 * (test/support/conformance.ts). postgres.js prepares every tagged query as a
 * named statement and pipelines whatever is queued, so its flows are named
 * statements reused across transactions and pipelines with errors in them.
 *
 * Not shown with postgres.js: defect 6 (it speaks protocol 3.0 only; see
 * conformance-pg.test.ts, raw start-up) and defect 10 (node-postgres' SCRAM).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { endSql, sqlClient, withTimeout } from '../support/clients.js';
import {
  type ConformanceTarget,
  Targets,
  closeRun,
  conform,
  describeError,
  killAllChildren,
  lit,
  onRunEnd,
  primaryBackendPids,
  sendCancel,
  sessionBackendPids,
  settle,
  spawnChild,
  terminateApp,
  waitActive,
  waitCached,
  createFixturesSql,
  dropFixturesSql,
  nodeQuery,
  waitReplayed,
} from '../support/conformance.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
const P = cluster.primaryId;
const N = `conform_pjs_${process.pid}`;
/** A read-only table of 100 rows (id, v). */
const T = `${N}_t`;
const ROLE = `${N}_role`;
const DB = `${N}_db`;
const APP = `conform-pjs-${process.pid}`;
const TAGS = ['direct', 'lb_off', 'lb_on'];
/** A table per target for the scenarios that write. */
const W = (t: ConformanceTarget): string => `${N}_w_${t.tag}`;
const app = (t: ConformanceTarget, what: string): string => `${APP}-${what}-${t.tag}`;
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const FIXTURES = { table: T, prefix: N, database: DB, role: ROLE, tags: TAGS };

let targets: Targets;

beforeAll(async () => {
  // The two pgrelays start while the fixtures are made and replayed.
  await Promise.all([
    Targets.start(cluster).then((t) => {
      targets = t;
    }),
    cluster.psql(P, createFixturesSql(FIXTURES)).then(() => waitReplayed(cluster)),
  ]);
});

afterEach(async () => {
  await closeRun();
});

afterAll(async () => {
  await closeRun();
  killAllChildren();
  await targets?.stop();
  await cluster.psql(P, dropFixturesSql(FIXTURES)).catch(() => undefined);
});

interface Recorded {
  sql: postgres.Sql;
  /** onparameter calls (postgres.js reports a ParameterStatus whose value changed), in order. */
  changes: Array<[string, string]>;
  notices: string[];
}

/** A postgres.js instance (one connection) recording its parameter changes and notices; closed after the run. */
function pjs(t: ConformanceTarget, what: string, opts: postgres.Options<Record<string, postgres.PostgresType>> = {}) {
  const rec: Recorded = { sql: undefined as unknown as postgres.Sql, changes: [], notices: [] };
  rec.sql = sqlClient(t, {
    max: 1,
    connection: { application_name: app(t, what) },
    onparameter: (k: string, v: unknown) => rec.changes.push([k, String(v)]),
    onnotice: (n: postgres.Notice) => rec.notices.push(`${String(n.severity)} ${String(n.code)}: ${String(n.message)}`),
    ...opts,
  });
  return rec;
}

/** A value of the first row's first column. */
async function first(q: Promise<readonly Record<string, unknown>[]>): Promise<unknown> {
  const rows = await q;
  const row = rows[0];
  return row ? Object.values(row)[0] : undefined;
}

/** Rows as plain objects (drops postgres.js' result metadata). */
async function rowsOf(q: Promise<readonly Record<string, unknown>[]>): Promise<Array<Record<string, unknown>>> {
  return [...(await q)].map((r) => ({ ...r }));
}

/** The outcome of one query: its rows, or its error. */
async function res(q: Promise<readonly Record<string, unknown>[]>): Promise<unknown> {
  try {
    return { rows: await rowsOf(q) };
  } catch (e) {
    return { error: describeError(e) };
  }
}

// ---------------------------------------------------------------------------

describe('defect 1: transaction isolation set for the session', () => {
  it('SET SESSION CHARACTERISTICS … SERIALIZABLE (a prepared statement): current_setting / SHOW answer serializable, reads and transactions run', async () => {
    await conform(
      targets,
      async (t) => {
        const { sql } = pjs(t, 'd1');
        const set = await res(sql`SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE`);
        return {
          set,
          currentSetting: await res(sql`SELECT current_setting(${'transaction_isolation'}) AS v`),
          show: await res(sql`SHOW transaction_isolation`),
          showSimple: await res(sql.unsafe('SHOW transaction_isolation').simple()),
          read: await res(sql`SELECT count(*)::int AS n FROM ${sql(T)}`),
          inTransaction: await settle(
            sql.begin(async (tx) => [
              await first(tx`SELECT current_setting('transaction_isolation') AS v`),
              await first(tx`SELECT count(*)::int AS n FROM ${tx(T)} WHERE id > ${50}`),
            ]),
          ),
        };
      },
      { direct: (o) => expect(o.currentSetting).toEqual({ rows: [{ v: 'serializable' }] }) },
    );
  });

  it("sql.begin('isolation level serializable', …): reads inside run and report serializable", async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'd1b');
      return settle(
        sql.begin('isolation level serializable', async (tx) => [
          await first(tx`SHOW transaction_isolation`),
          await first(tx`SELECT count(*)::int AS n FROM ${tx(T)}`),
        ]),
      );
    });
  });
});

// ---------------------------------------------------------------------------

describe('defect 2: ParameterStatus reaches the driver (sql.parameters, onparameter)', () => {
  it("the parameters postgres.js knows after connecting are PostgreSQL's", async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'd2start', { connection: { application_name: `${APP}-start` } });
      await sql`SELECT 1`;
      return { ...sql.parameters };
    });
  });

  it('SET application_name (prepared, simple, set_config): sql.parameters follows, each change reported once, in order', async () => {
    await conform(targets, async (t) => {
      const rec = pjs(t, 'd2app', { connection: { application_name: `${APP}-p0` } });
      const { sql } = rec;
      await sql`SELECT 1`;
      const from = rec.changes.length;
      const steps = [
        await res(sql`SET application_name = ${sql.unsafe(lit(`${APP}-p1`))}`),
        { known: sql.parameters.application_name },
        await res(sql.unsafe(`SET application_name = '${APP}-p2'`).simple()),
        { known: sql.parameters.application_name },
        await res(sql`SELECT set_config('application_name', ${`${APP}-p3`}, false) AS v`),
        { known: sql.parameters.application_name },
        await res(sql`SHOW application_name`),
      ];
      return { steps, changes: rec.changes.slice(from) };
    });
  });

  it('SET standard_conforming_strings = off: sql.parameters follows; backslash-quoted literals parse (simple and prepared)', async () => {
    await conform(targets, async (t) => {
      const rec = pjs(t, 'd2scs');
      const { sql } = rec;
      await sql`SELECT 1`;
      const from = rec.changes.length;
      const set = await res(sql`SET standard_conforming_strings = off`);
      const known = sql.parameters.standard_conforming_strings;
      const literal = "SELECT 'quoted \\' single quote' AS v";
      const out = {
        set,
        known,
        simple: await res(sql.unsafe(literal).simple()),
        prepared: await res(sql.unsafe(literal, [], { prepare: true })),
        back: await res(sql.unsafe('SET standard_conforming_strings = on').simple()),
        knownAfter: sql.parameters.standard_conforming_strings,
        changes: rec.changes.slice(from),
      };
      return out;
    });
  });
});

// ---------------------------------------------------------------------------

describe('defect 3: the pid postgres.js got (state.pid) is the session’s backend', () => {
  it('state.pid of a result equals pg_backend_pid() (prepared, simple, in a transaction)', async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'd3pid');
      const r = await sql`SELECT pg_backend_pid() AS pid`;
      const simple = await sql.unsafe('SELECT pg_backend_pid() AS pid').simple();
      const inTx = await sql.begin(async (tx) => {
        await tx`INSERT INTO ${tx(W(t))} VALUES (0, 'pid')`;
        return first(tx`SELECT pg_backend_pid() AS pid`);
      });
      return {
        prepared: r[0].pid === r.state.pid,
        simple: (simple[0] as unknown as { pid: number }).pid === r.state.pid,
        inTransaction: inTx === r.state.pid,
      };
    });
  });

  it('sql.listen, then pg_terminate_backend(state.pid) of the listen connection: it reconnects, listens again and receives (postgres.js listen reconnect)', async () => {
    await conform(
      targets,
      async (t) => {
        const ch = `${N}_relisten_${t.tag}`;
        const { sql } = pjs(t, 'd3listen');
        const received: string[] = [];
        let listens = 0;
        const meta = await sql.listen(
          ch,
          (payload) => received.push(payload),
          () => {
            listens += 1;
          },
        );
        const terminated = await first(sql`SELECT pg_terminate_backend(${meta.state.pid}) AS t`);
        const relistened = await pollUntil(
          () => listens,
          (n) => n >= 2,
          { what: 'postgres.js to listen again after the reconnect', timeoutMs: 5000 },
        ).then(
          () => true,
          () => false,
        );
        await sql.notify(ch, 'after');
        await pollUntil(
          () => received.length,
          (n) => n > 0,
          { what: 'the notification after the reconnect', timeoutMs: 5000 },
        ).catch(() => undefined);
        return { terminated, relistened, received };
      },
      { timeoutMs: 30_000 },
    );
  }, 120_000);

  it('pg_cancel_backend(state.pid) from another connection cancels the running query; query.cancel() too', async () => {
    await conform(
      targets,
      async (t) => {
        const name = app(t, 'd3cancel');
        onRunEnd(() => terminateApp(cluster, name));
        const { sql } = pjs(t, 'd3cancel');
        const meta = await sql`SELECT 1 AS one`;
        const running = res(sql`SELECT pg_sleep(3) AS slept`);
        await waitActive(cluster, name, 'SELECT pg_sleep(3)%');
        const other = pjs(t, 'd3canceller').sql;
        const returned = await first(other`SELECT pg_cancel_backend(${meta.state.pid}) AS r`);
        const byPid = await running;
        // The driver's own cancel (a CancelRequest with state.pid and state.secret).
        const q = sql`SELECT pg_sleep(3) AS slept2`;
        const own = res(q);
        await waitActive(cluster, name, 'SELECT pg_sleep(3) AS slept2%');
        await q.cancel();
        return { returned, byPid, own: await own, usable: await res(sql`SELECT 1 AS one`) };
      },
      { timeoutMs: 25_000 },
    );
  }, 90_000);
});

// ---------------------------------------------------------------------------

describe('defect 4: a late cancel', () => {
  // The cancel is sent as a CancelRequest with state.pid / state.secret, waiting for the server to
  // close that connection (as libpq and pgjdbc do). postgres.js' own query.cancel() is not used here:
  // directly against PostgreSQL it lets the next statement be canceled now and then (it does not
  // order its cancel before that statement), so it cannot give a reference outcome.
  it('a CancelRequest with state.pid / state.secret after the statement finished, and swept across its end: the next statement is never canceled', async () => {
    await conform(
      targets,
      async (t) => {
        const { sql } = pjs(t, 'd4');
        const r = await sql`SELECT 1 AS one`;
        const key = r.state;
        await sendCancel(t, key.pid, key.secret);
        const afterIdleCancel = await res(sql`SELECT 'next' AS v, pg_sleep(0.2)`);
        const firsts = new Set<string>();
        const nexts: unknown[] = [];
        for (let i = 0; i < 16; i++) {
          const f = res(sql`SELECT pg_sleep(0.05) AS s`);
          // The cancel's timing relative to a 50 ms statement is the subject (not a wait for a state).
          await new Promise((resolve) => setTimeout(resolve, 38 + i * 1.5));
          await sendCancel(t, key.pid, key.secret);
          const fr = (await f) as { rows?: unknown; error?: string };
          firsts.add(fr.error ?? 'ok');
          // Whether it ran (its value) or what error ended it: postgres.js itself, against
          // PostgreSQL directly, now and then adds an empty row to the result that follows a
          // canceled one (seen in CI), which says nothing of the cancel's target.
          const n = (await res(sql`SELECT 'next' AS v, pg_sleep(0.05)`)) as {
            rows?: Array<{ v?: unknown }>;
            error?: string;
          };
          nexts.push(n.error !== undefined ? { error: n.error } : { v: n.rows?.find((x) => x.v !== undefined)?.v });
        }
        return {
          afterIdleCancel,
          firstsOkOrCanceled: [...firsts].every((x) => x === 'ok' || x.startsWith('57014')),
          nexts,
        };
      },
      { timeoutMs: 30_000 },
    );
  }, 120_000);
});

// ---------------------------------------------------------------------------

describe('defect 5 and COPY: writable() / readable(), CopyFail, cancel, terminate', () => {
  it('COPY FROM STDIN (writable) and COPY TO STDOUT (readable), in and out of a transaction', async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'd5copy');
      await sql`TRUNCATE ${sql(W(t))}`;
      const w = await sql`COPY ${sql(W(t))} (id, v) FROM STDIN`.writable();
      await new Promise<void>((resolve, reject) => {
        w.on('error', reject);
        w.write('1\tone\n2\ttwo\n');
        w.end('3\tthree\n', () => resolve());
      });
      const out = await sql`COPY (SELECT id, v FROM ${sql(W(t))} ORDER BY id) TO STDOUT`.readable();
      const chunks: Buffer[] = [];
      for await (const c of out) chunks.push(c as Buffer);
      const inTx = await settle(
        sql.begin(async (tx) => {
          const w2 = await tx`COPY ${tx(W(t))} (id, v) FROM STDIN`.writable();
          await new Promise<void>((resolve, reject) => {
            w2.on('error', reject);
            w2.end('4\tfour\n', () => resolve());
          });
          return first(tx`SELECT count(*)::int AS n FROM ${tx(W(t))}`);
        }),
      );
      return { copiedOut: Buffer.concat(chunks).toString(), inTx, usable: await res(sql`SELECT 1 AS one`) };
    });
  });

  it('a writable() destroyed with an error (CopyFail): nothing inserted, the connection usable', async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'd5fail');
      await sql`TRUNCATE ${sql(W(t))}`;
      const w = await sql`COPY ${sql(W(t))} (id, v) FROM STDIN`.writable();
      const streamError = new Promise<string>((resolve) => w.on('error', (e) => resolve(describeError(e))));
      w.write('5\tfive\n');
      w.destroy(new Error('client gave up'));
      return {
        streamError: await withTimeout(streamError, 5000, 'the stream error'),
        after: await res(sql`SELECT 'usable' AS v`),
        count: await settle(
          sql.begin(async (tx) => {
            await tx`INSERT INTO ${tx(W(t))} VALUES (-1, 'm')`;
            return first(tx`SELECT count(*)::int AS n FROM ${tx(W(t))} WHERE id > 0`);
          }),
        ),
      };
    });
  });

  // query.cancel() cannot cancel a COPY: the query resolved with its stream, so postgres.js no longer
  // counts it active and waits for it to start instead. A CancelRequest with the connection's key is
  // what a postgres.js user has left.
  it('COPY FROM STDIN, CancelRequest with state.pid / state.secret mid-copy, then more data: 57014, the connection usable', async () => {
    await conform(
      targets,
      async (t) => {
        const name = app(t, 'd5cancel');
        onRunEnd(() => terminateApp(cluster, name));
        const { sql } = pjs(t, 'd5cancel');
        const meta = await sql`SELECT 1 AS one`;
        const w = await sql`COPY ${sql(W(t))} (id, v) FROM STDIN`.writable();
        const streamError = new Promise<string>((resolve) => w.on('error', (e) => resolve(describeError(e))));
        w.write('6\tsix\n');
        await waitActive(cluster, name, 'COPY %');
        await sendCancel(t, meta.state.pid, meta.state.secret);
        // PostgreSQL acts on a cancel during COPY FROM STDIN when the next data arrives.
        w.write('7\tseven\n');
        const seen = await withTimeout(streamError, 5000, 'an error on the COPY stream').catch(
          (e: Error) => `nothing: ${e.message}`,
        );
        return { seen, usable: await settle(withTimeout(res(sql`SELECT 'usable' AS v`), 5000, 'a query after')) };
      },
      { timeoutMs: 25_000 },
    );
  }, 90_000);

  it('COPY FROM STDIN, pg_terminate_backend(state.pid) from another connection: the COPY ends, the lock is released', async () => {
    await conform(
      targets,
      async (t) => {
        const name = app(t, 'd5term');
        onRunEnd(() => terminateApp(cluster, name));
        const { sql } = pjs(t, 'd5term');
        const meta = await sql`SELECT 1 AS one`;
        const w = await sql`COPY ${sql(W(t))} (id, v) FROM STDIN`.writable();
        const streamError = new Promise<string>((resolve) => w.on('error', (e) => resolve(describeError(e))));
        w.write('8\teight\n');
        await waitActive(cluster, name, 'COPY %');
        const other = pjs(t, 'd5termother').sql;
        const returned = await first(other`SELECT pg_terminate_backend(${meta.state.pid}) AS r`);
        const seen = await withTimeout(streamError, 5000, 'an error on the COPY stream').catch(
          (e: Error) => `nothing: ${e.message}`,
        );
        const lockFree = (): Promise<{ ok: string } | { error: string }> =>
          settle(
            other.begin(async (tx) => {
              await tx`LOCK TABLE ${tx(W(t))} IN ACCESS EXCLUSIVE MODE NOWAIT`;
              return 'locked';
            }),
          );
        // The backend's exit releases the lock soon after the connection ended; a COPY still running holds it.
        const lockReleased = seen.startsWith('nothing')
          ? 'ok' in (await lockFree())
          : await pollUntil(lockFree, (r) => 'ok' in r, { what: 'the COPY lock to be released', timeoutMs: 5000 }).then(
              () => true,
              () => false,
            );
        return { returned, seen, lockReleased };
      },
      { timeoutMs: 30_000 },
    );
  }, 120_000);

  it('COPY TO STDOUT (readable), CancelRequest with state.pid / state.secret after the first rows: the stream errors with 57014, the connection usable', async () => {
    await conform(
      targets,
      async (t) => {
        const { sql } = pjs(t, 'd5out');
        const meta = await sql`SELECT 1 AS one`;
        const q = sql`COPY (SELECT g, repeat('x', 200) || pg_sleep(0.001)::text FROM generate_series(1, 100000) g) TO STDOUT`;
        const r = await q.readable();
        const ended = new Promise<string>((resolve) => {
          r.on('error', (e) => resolve(describeError(e)));
          r.on('end', () => resolve('end'));
        });
        let got = 0;
        r.on('data', () => {
          got += 1;
        });
        await pollUntil(
          () => got,
          (n) => n > 0,
          { what: 'the first rows', timeoutMs: 10_000 },
        );
        await sendCancel(t, meta.state.pid, meta.state.secret);
        return {
          ended: await withTimeout(ended, 10_000, 'the end of the COPY stream').catch((e: Error) => e.message),
          usable: await res(sql`SELECT 'usable' AS v`),
        };
      },
      { timeoutMs: 30_000 },
    );
  }, 120_000);
});

// ---------------------------------------------------------------------------

describe('defect 7: ALTER DATABASE / ALTER ROLE … SET reach the next connection', () => {
  /**
   * One connection as ROLE on DB: what it reads, and the pids of the backends it held on
   * every node (what pgrelay caches after it; not part of the outcome).
   */
  const observe = async (
    t: ConformanceTarget,
  ): Promise<{ seen: Record<string, unknown>; pids: { primary: number[]; standbys: number[] } }> => {
    const name = app(t, 'd7');
    const sql = sqlClient(t, { user: ROLE, database: DB, max: 1, connection: { application_name: name } });
    try {
      const seen = {
        workMem: await res(sql`SELECT current_setting('work_mem') AS v`),
        searchPath: await res(sql.unsafe('SHOW search_path').simple()),
        isolation: await res(sql`SHOW transaction_isolation`),
        read: await res(sql`SELECT count(*)::int AS n FROM pg_class WHERE relname = ${'pg_class'}`),
      };
      return { seen, pids: await sessionBackendPids(cluster, name) };
    } finally {
      await endSql(sql);
    }
  };

  afterEach(async () => {
    await nodeQuery(cluster, P, `ALTER DATABASE ${DB} RESET ALL; ALTER ROLE ${ROLE} RESET ALL`).catch(() => undefined);
  });

  it('ALTER DATABASE … SET work_mem / default_transaction_isolation, ALTER ROLE … SET search_path: the next connection has them; RESET too', async () => {
    await conform(
      targets,
      async (t) => {
        const before = await observe(t);
        // The backends the connection held are cached again: the next connection reuses them.
        await waitCached(targets, t, ROLE, DB, { backendPids: [...before.pids.primary, ...before.pids.standbys] });
        const admin = pjs(t, 'd7admin').sql;
        const altered = [
          await res(admin.unsafe(`ALTER DATABASE ${DB} SET work_mem = '6MB'`)),
          await res(admin.unsafe(`ALTER DATABASE ${DB} SET default_transaction_isolation = 'serializable'`)),
          await res(admin.unsafe(`ALTER ROLE ${ROLE} SET search_path = 'conform_y, public'`)),
        ];
        await waitReplayed(cluster);
        const after = await observe(t);
        // With default_transaction_isolation = serializable a hot standby refuses DISCARD ALL (pgrelay's
        // reset_query_list, as pgpool's): pgrelay closes such a standby connection instead of caching it.
        await waitCached(targets, t, ROLE, DB, {
          backendPids: after.pids.primary,
          cachedOrEnded: after.pids.standbys,
        });
        const reset = [
          await res(admin.unsafe(`ALTER DATABASE ${DB} RESET ALL`)),
          await res(admin.unsafe(`ALTER ROLE ${ROLE} RESET ALL`)),
        ];
        await waitReplayed(cluster);
        return { before: before.seen, altered, after: after.seen, reset, afterReset: (await observe(t)).seen };
      },
      // The targets share the database and the role the scenario alters: one after another.
      { timeoutMs: 40_000, sequential: true },
    );
  }, 150_000);
});

// ---------------------------------------------------------------------------

describe('defect 8: replication connections', () => {
  it("connection: { replication: 'database' }: IDENTIFY_SYSTEM (simple) and SQL", async () => {
    await conform(targets, async (t) => {
      const sql = sqlClient(t, {
        max: 1,
        fetch_types: false,
        connection: { application_name: app(t, 'd8'), replication: 'database' },
      });
      const ident = await settle(
        sql
          .unsafe('IDENTIFY_SYSTEM')
          .simple()
          .then((rows) => {
            const r = rows[0] as Record<string, unknown>;
            return { systemid: String(r.systemid), timeline: String(r.timeline), dbname: r.dbname };
          }),
      );
      return { ident, sql: await res(sql.unsafe('SELECT current_database() AS db').simple()) };
    });
  });

  it('sql.subscribe() in a child process: the same error as directly (wal_level is replica), and the process is not crashed by a reconnect loop', async () => {
    await conform(
      targets,
      async (t) => {
        const script = `
          import postgres from 'postgres';
          const sql = postgres({ host: ${JSON.stringify(t.host)}, port: ${t.port}, user: 'postgres', database: 'postgres',
            connect_timeout: 5, publications: 'conform_pub', onnotice: () => {} });
          let out;
          try { await sql.subscribe('*', () => {}); out = { subscribed: true }; }
          catch (e) { out = { error: String(e.code) + ': ' + e.message }; }
          console.log(JSON.stringify(out));
          await sql.end({ timeout: 1 });
        `;
        const child = spawnChild(process.execPath, ['--input-type=module', '-e', script], {
          cwd: REPO_ROOT,
          hardTimeoutMs: 20_000,
        });
        const exit = await withTimeout(child.exited, 15_000, 'the subscribe child to exit').catch(() => undefined);
        const line = child
          .stdout()
          .split('\n')
          .find((l) => l.startsWith('{'));
        return {
          exited: exit !== undefined,
          code: exit?.code,
          result: line ? (JSON.parse(line) as unknown) : undefined,
          crashed: /Unhandled|Error:/.test(child.stderr()),
        };
      },
      { timeoutMs: 25_000 },
    );
  }, 90_000);
});

// ---------------------------------------------------------------------------

describe('defect 9: set_config(…, false) is session state', () => {
  it('set_config(name, value, false) (prepared and simple), then current_setting / SHOW', async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'd9');
      return {
        set: await res(sql`SELECT set_config(${'conform.flag'}, ${'on'}, false) AS v`),
        setSimple: await res(sql.unsafe("SELECT set_config('work_mem', '5MB', false) AS v").simple()),
        custom: await res(sql`SELECT current_setting('conform.flag') AS v`),
        workMem: await res(sql`SHOW work_mem`),
        workMemSimple: await res(sql.unsafe('SHOW work_mem').simple()),
      };
    });
  });
});

// ---------------------------------------------------------------------------

describe('flows drivers lean on', () => {
  it('.cursor(n) (row-limited Execute): outside a transaction, inside one after a write, with an error mid-stream', async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'cursor');
      const collect = async (q: AsyncIterable<readonly Record<string, unknown>[]>): Promise<unknown> => {
        const chunks: unknown[] = [];
        for await (const rows of q) chunks.push(rows.map((r) => ({ ...r })));
        return chunks;
      };
      return {
        outside: await settle(collect(sql`SELECT id, v FROM ${sql(T)} WHERE id <= ${12} ORDER BY id`.cursor(5))),
        inside: await settle(
          sql.begin(async (tx) => {
            await tx`INSERT INTO ${tx(W(t))} SELECT g, 'cur' FROM generate_series(1, 7) g`;
            return collect(tx`SELECT id FROM ${tx(W(t))} WHERE v = ${'cur'} ORDER BY id`.cursor(3));
          }),
        ),
        failing: await settle(collect(sql`SELECT 10 / (g - 7) AS x FROM generate_series(1, 10) g`.cursor(4))),
        usable: await res(sql`SELECT 'usable' AS v`),
      };
    });
  });

  it('pipelines: 100 queries at once; an error in the middle fails only its query; in sql.begin the rest gets 25P02', async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'pipeline');
      const hundred = await Promise.all(
        Array.from({ length: 100 }, (_, i) => sql`SELECT ${i}::int AS i, v FROM ${sql(T)} WHERE id = ${i + 1}`),
      );
      const mixed = await Promise.all([
        res(sql`SELECT 1 AS a`),
        res(sql`SELECT 1/0 AS b`),
        res(sql`SELECT ${3}::int AS c`),
        res(sql`SELECT count(*)::int AS n FROM ${sql(T)}`),
        res(sql.unsafe('SELECT no_such_column')),
        res(sql`SELECT ${'last'} AS d`),
      ]);
      const inTx = await settle(
        sql.begin((tx) => [
          tx`INSERT INTO ${tx(W(t))} VALUES (9, 'pipe')`,
          tx`SELECT no_such_column`,
          tx`SELECT 3 AS c`,
        ]),
      );
      return {
        hundred: hundred.map((r) => r[0]?.v),
        mixed,
        inTx,
        afterTx: await res(sql`SELECT 'usable' AS v`),
      };
    });
  });

  it('the same prepared statements across transactions: commit, rollback, savepoint, failed transaction', async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'named');
      const sel = (): Promise<unknown> => res(sql`SELECT v FROM ${sql(T)} WHERE id = ${7}`);
      const log: unknown[] = [await sel()];
      log.push(
        await settle(
          sql.begin(async (tx) => {
            const a = await first(tx`SELECT v FROM ${tx(T)} WHERE id = ${7}`);
            await tx`INSERT INTO ${tx(W(t))} VALUES (${1}, ${'named'})`;
            const b = await first(tx`SELECT count(*)::int AS n FROM ${tx(W(t))} WHERE v = ${'named'}`);
            const sp = await settle(
              tx.savepoint(async (s) => {
                await s`INSERT INTO ${s(W(t))} VALUES (${2}, ${'named'})`;
                await s`SELECT 1/0`;
              }),
            );
            const c = await first(tx`SELECT count(*)::int AS n FROM ${tx(W(t))} WHERE v = ${'named'}`);
            return [a, b, sp, c];
          }),
        ),
      );
      log.push(await sel());
      log.push(
        await settle(
          sql.begin(async (tx) => {
            await tx`INSERT INTO ${tx(W(t))} VALUES (${1}, ${'named'})`;
            await tx`SELECT 1/0`;
          }),
        ),
      );
      log.push(await sel());
      await waitReplayed(cluster);
      log.push(await res(sql`SELECT count(*)::int AS n FROM ${sql(W(t))} WHERE v = ${'named'}`));
      return log;
    });
  });

  it('describe() (Parse/Describe only), simple multi-statement queries, unsafe with parameters', async () => {
    await conform(targets, async (t) => {
      const { sql } = pjs(t, 'describe');
      const d = await settle(
        sql`SELECT id, v FROM ${sql(T)} WHERE id = ${1}`
          .describe()
          .then((s) => ({ types: s.types, columns: s.columns.map((c) => [c.name, c.type]) })),
      );
      const multi = await settle(
        sql
          .unsafe(`SELECT 1 AS a; SELECT v FROM ${T} WHERE id = 2; SET search_path = public; SHOW search_path`)
          .simple()
          .then((rs) => (rs as unknown as Array<Array<Record<string, unknown>>>).map((r) => [...r])),
      );
      const unsafe = await res(sql.unsafe(`SELECT v FROM ${T} WHERE id = $1`, [3]));
      return { d, multi, unsafe };
    });
  });

  it('LISTEN / NOTIFY and UNLISTEN through sql.listen; a new connection does not inherit the old one’s channels', async () => {
    await conform(
      targets,
      async (t) => {
        const ch = `${N}_ch_${t.tag}`;
        const a = pjs(t, 'listen');
        const got: string[] = [];
        const meta = await a.sql.listen(ch, (p) => got.push(p));
        const notifier = pjs(t, 'notifier').sql;
        await notifier.notify(ch, 'one');
        await pollUntil(
          () => got.length,
          (n) => n > 0,
          { what: 'the notification', timeoutMs: 5000 },
        );
        await meta.unlisten();
        // The listening connection goes back to pgrelay's cache: wait for exactly it (the next
        // connection has the same start-up parameters, so it gets it).
        const listened = await primaryBackendPids(cluster, app(t, 'listen'));
        await endSql(a.sql);
        await waitCached(targets, t, 'postgres', 'postgres', { backendPids: listened });
        const b = pjs(t, 'listen');
        const channels = await first(b.sql`SELECT coalesce(array_agg(c), '{}') AS c FROM pg_listening_channels() c`);
        return { got, channels };
      },
      { timeoutMs: 30_000 },
    );
  }, 120_000);
});
