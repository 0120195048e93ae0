/**
 * Driver conformance, psql (libpq 15) — issue 12.
 *
 * Every scenario runs three times in the same test: directly against the
 * primary, through pgrelay with load balancing off, and through pgrelay with
 * load balancing on and weights 0:1:1; psql's exit code, output and errors must
 * be equal (test/support/conformance.ts). psql speaks the simple protocol and
 * lexes scripts itself using the server's standard_conforming_strings and
 * client_encoding, which it learns from ParameterStatus; it cancels with
 * BackendKeyData (Ctrl-C = SIGINT), and FETCH_COUNT / ON_ERROR_ROLLBACK /
 * AUTOCOMMIT make it send cursors, savepoints and BEGINs of its own.
 *
 * Not shown with psql 15: defect 4 (psql only cancels the statement it is
 * running), defect 6 (libpq 15 asks for protocol 3.0) and defect 10
 * (node-postgres' SCRAM); see conformance-pg.test.ts.
 */
import { afterAll, afterEach, beforeAll, describe, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { withTimeout } from '../support/clients.js';
import {
  type ConformanceTarget,
  Targets,
  blockedReading,
  closeRun,
  conform,
  killAllChildren,
  livePids,
  onRunEnd,
  spawnPsql,
  terminateApp,
  waitActive,
  waitCached,
  createFixturesSql,
  dropFixturesSql,
  nodeQuery,
  waitReplayed,
} from '../support/conformance.js';
import { runPsql } from '../support/proxy.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
const P = cluster.primaryId;
const N = `conform_psql_${process.pid}`;
/** A read-only table of 100 rows (id, v). */
const T = `${N}_t`;
const ROLE = `${N}_role`;
const DB = `${N}_db`;
const APP = `conform-psql-${process.pid}`;
const TAGS = ['direct', 'lb_off', 'lb_on'];
/** A table per target for the scenarios that write. */
const W = (t: ConformanceTarget): string => `${N}_w_${t.tag}`;
const app = (t: ConformanceTarget, what: string): string => `${APP}-${what}-${t.tag}`;

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

interface PsqlOutcome {
  code: number | null;
  stdout: string[];
  stderr: string[];
}

/** Output lines with what differs between targets by nature (pids, ports, per-target names) replaced. */
function lines(s: string): string[] {
  return s
    .replace(/PID \d+/g, 'PID N')
    .replace(/port \d+/g, 'port P')
    .replace(/(_w_|-)(direct|lb_off|lb_on)\b/g, '$1TARGET')
    .split('\n')
    .filter((l) => l !== '');
}

/** Run a psql script (-f -, unaligned, tuples only, not stopping on errors) against a target. */
async function script(
  t: ConformanceTarget,
  what: string,
  input: string,
  opts: { user?: string; database?: string; args?: string[] } = {},
): Promise<PsqlOutcome> {
  const r = await runPsql([...(opts.args ?? []), '-At', '-f', '-'], {
    port: t.port,
    user: opts.user,
    database: opts.database,
    input,
    env: { PGAPPNAME: app(t, what) },
    timeoutMs: 20_000,
  });
  return { code: r.code, stdout: lines(r.stdout), stderr: lines(r.stderr) };
}

// ---------------------------------------------------------------------------

describe('defect 1: transaction isolation set for the session', () => {
  it('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, then SHOW, current_setting, reads, a transaction', async () => {
    await conform(targets, (t) =>
      script(
        t,
        'd1',
        `SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE;
         SHOW transaction_isolation;
         SELECT current_setting('transaction_isolation');
         SELECT count(*) FROM ${T};
         BEGIN;
         SELECT current_setting('transaction_isolation');
         SELECT count(*) FROM ${T} WHERE id > 50;
         COMMIT;`,
      ),
    );
  });
});

// ---------------------------------------------------------------------------

describe('defect 2: ParameterStatus reaches psql', () => {
  it("SET standard_conforming_strings = off: psql lexes the next line's backslash-quote as PostgreSQL does", async () => {
    await conform(targets, (t) =>
      script(
        t,
        'd2scs',
        `SET standard_conforming_strings = off;
         SELECT 'quoted \\' single quote' AS v;
         SELECT 'after' AS next;
         SET standard_conforming_strings = on;
         SELECT 'a\\b' AS v;`,
      ),
    );
  });

  it('SET client_encoding: \\encoding and :ENCODING follow; RESET goes back', async () => {
    await conform(targets, (t) =>
      script(
        t,
        'd2enc',
        `SET client_encoding = 'LATIN1';
         \\encoding
         \\echo :ENCODING
         SELECT 'x';
         RESET client_encoding;
         \\encoding`,
      ),
    );
  });

  it('SET application_name / search_path in one multi-statement query (-c), read back in the same and the next query', async () => {
    await conform(targets, async (t) => {
      const r = await runPsql(
        [
          '-At',
          '-c',
          `SET application_name = '${APP}-multi'; SET search_path = conform_x, public; SHOW search_path; SELECT current_setting('application_name')`,
          '-c',
          "SELECT current_setting('search_path'), current_setting('application_name')",
        ],
        { port: t.port, env: { PGAPPNAME: app(t, 'd2multi') }, timeoutMs: 20_000 },
      );
      return { code: r.code, stdout: lines(r.stdout), stderr: lines(r.stderr) };
    });
  });
});

// ---------------------------------------------------------------------------

describe('defect 3: the pid psql knows is the session’s backend', () => {
  it('the PID of a notification the session sent itself is its pg_backend_pid()', async () => {
    await conform(targets, async (t) => {
      const ch = `${N}_self_${t.tag}`;
      const r = await runPsql(['-At', '-f', '-'], {
        port: t.port,
        env: { PGAPPNAME: app(t, 'd3notify') },
        timeoutMs: 20_000,
        input: `LISTEN ${ch};\nSELECT pg_backend_pid() AS me \\gset\nNOTIFY ${ch}, 'x';\n\\echo me=:me\n`,
      });
      const from = /received from server process with PID (\d+)/.exec(r.stdout)?.[1];
      const me = /me=(\d+)/.exec(r.stdout)?.[1];
      return {
        code: r.code,
        notified: from !== undefined,
        fromOwnBackend: from !== undefined && from === me,
        stderr: lines(r.stderr),
      };
    });
  });

  it('pg_terminate_backend(:pid) with the pid from SELECT pg_backend_pid() \\gset ends the session', async () => {
    await conform(targets, (t) =>
      script(t, 'd3term', 'SELECT pg_backend_pid() AS me \\gset\nSELECT pg_terminate_backend(:me);\nSELECT 1;\n'),
    );
  });

  it('pg_cancel_backend(pid) from another psql, with the pid the first one printed, cancels its statement', async () => {
    await conform(
      targets,
      async (t) => {
        const name = app(t, 'd3cancel');
        onRunEnd(() => terminateApp(cluster, name));
        const first = spawnPsql(t, ['-At', '-f', '-'], { applicationName: name, hardTimeoutMs: 20_000 });
        first.write('SELECT pg_backend_pid();\nSELECT pg_sleep(3);\n');
        first.endInput();
        const pid = (await first.waitStdout(/^(\d+)$/m))[1];
        await waitActive(cluster, name, 'SELECT pg_sleep(3)%');
        const other = await runPsql(['-At', '-c', `SELECT pg_cancel_backend(${pid})`], {
          port: t.port,
          env: { PGAPPNAME: app(t, 'd3canceller') },
          timeoutMs: 20_000,
        });
        const exit = await first.exited;
        return {
          returned: lines(other.stdout),
          code: exit.code,
          stdout: lines(first.stdout()).slice(1),
          stderr: lines(first.stderr()),
        };
      },
      { timeoutMs: 25_000 },
    );
  }, 90_000);

  it("psql's own cancel (SIGINT, a CancelRequest with its BackendKeyData) of a running statement", async () => {
    await conform(
      targets,
      async (t) => {
        const name = app(t, 'd3sigint');
        onRunEnd(() => terminateApp(cluster, name));
        const p = spawnPsql(t, ['-At', '-c', 'SELECT pg_sleep(10)'], { applicationName: name, hardTimeoutMs: 20_000 });
        await waitActive(cluster, name, 'SELECT pg_sleep(10)%');
        p.child.kill('SIGINT');
        const exit = await withTimeout(p.exited, 15_000, 'psql to end after SIGINT');
        return { code: exit.code, stderr: lines(p.stderr()) };
      },
      { timeoutMs: 25_000 },
    );
  }, 90_000);
});

// ---------------------------------------------------------------------------

describe('defect 5 and COPY: \\copy and COPY both ways, Ctrl-C, terminate', () => {
  it('\\copy FROM STDIN / TO STDOUT and COPY … FROM STDIN inside the script', async () => {
    await conform(targets, (t) =>
      script(
        t,
        'd5copy',
        `TRUNCATE ${W(t)};
\\copy ${W(t)} (id, v) from stdin
1\tone
2\ttwo
\\.
COPY ${W(t)} (id, v) FROM STDIN;
3\tthree
\\.
BEGIN;
\\copy (SELECT id, v FROM ${W(t)} ORDER BY id) to stdout
COPY (SELECT count(*) FROM ${W(t)}) TO STDOUT;
COMMIT;`,
      ),
    );
  });

  it('Ctrl-C while psql waits for COPY FROM STDIN data (psql sends CopyFail): nothing copied, then the script goes on', async () => {
    await conform(
      targets,
      async (t) => {
        const name = app(t, 'd5copyfail');
        await nodeQuery(cluster, P, `TRUNCATE ${W(t)}`);
        const p = spawnPsql(t, ['-At', '-f', '-'], { applicationName: name, hardTimeoutMs: 20_000 });
        p.write(`COPY ${W(t)} (id, v) FROM STDIN;\n1\tone\n`);
        await waitActive(cluster, name, 'COPY %');
        // psql longjmps out of its read of the data (and sends CopyFail) only while blocked reading it.
        await pollUntil(
          () => blockedReading(p.pid),
          (b) => b,
          { what: 'psql to block reading COPY data from stdin', timeoutMs: 10_000 },
        );
        p.child.kill('SIGINT');
        p.write(`SELECT 'after';\n`);
        p.endInput();
        const exit = await withTimeout(p.exited, 15_000, 'psql to end');
        const [{ count }] = await nodeQuery<{ count: string }>(cluster, P, `SELECT count(*) FROM ${W(t)}`);
        return { code: exit.code, stdout: lines(p.stdout()), stderr: lines(p.stderr()), count };
      },
      { timeoutMs: 30_000 },
    );
  }, 120_000);

  it('Ctrl-C during COPY TO STDOUT (psql sends a CancelRequest): 57014', async () => {
    await conform(
      targets,
      async (t) => {
        const name = app(t, 'd5copyout');
        onRunEnd(() => terminateApp(cluster, name));
        const p = spawnPsql(
          t,
          [
            '-At',
            '-c',
            "COPY (SELECT g, repeat('x', 200) || pg_sleep(0.001)::text FROM generate_series(1, 100000) g) TO STDOUT",
          ],
          { applicationName: name, hardTimeoutMs: 30_000 },
        );
        await p.waitStdout(/\n/);
        p.child.kill('SIGINT');
        const exit = await withTimeout(p.exited, 15_000, 'psql to end after SIGINT');
        return { code: exit.code, stderr: lines(p.stderr()) };
      },
      { timeoutMs: 25_000 },
    );
  }, 90_000);

  it('COPY FROM STDIN, pg_terminate_backend(pid psql printed) from another session: psql reports the lost connection, the lock is released', async () => {
    await conform(
      targets,
      async (t) => {
        const name = app(t, 'd5term');
        onRunEnd(() => terminateApp(cluster, name));
        const p = spawnPsql(t, ['-At', '-f', '-'], { applicationName: name, hardTimeoutMs: 30_000 });
        p.write(`SELECT pg_backend_pid();\nCOPY ${W(t)} (id, v) FROM STDIN;\n1\tone\n`);
        const pid = (await p.waitStdout(/^(\d+)$/m))[1];
        await waitActive(cluster, name, 'COPY %');
        const term = await runPsql(['-At', '-c', `SELECT pg_terminate_backend(${pid})`], {
          port: t.port,
          env: { PGAPPNAME: app(t, 'd5termother') },
          timeoutMs: 20_000,
        });
        // The backend is gone before psql sends more data (psql keeps COPY lines until 8 kB or \.):
        // it died waiting for line 1, whatever the machine's load. psql notices when it sends.
        await pollUntil(
          () => livePids(cluster, [Number(pid)]),
          (l) => l.length === 0,
          { what: `backend ${pid} to exit`, timeoutMs: 15_000 },
        );
        p.write('2\ttwo\n\\.\n');
        p.endInput();
        const exit = await withTimeout(p.exited, 15_000, 'psql to end');
        const lock = await runPsql(
          ['-At', '-c', `BEGIN; LOCK TABLE ${W(t)} IN ACCESS EXCLUSIVE MODE NOWAIT; ROLLBACK`],
          { port: t.port, env: { PGAPPNAME: app(t, 'd5termlock') }, timeoutMs: 20_000 },
        );
        return {
          returned: lines(term.stdout),
          code: exit.code,
          stderr: lines(p.stderr()),
          lock: { code: lock.code, stderr: lines(lock.stderr) },
        };
      },
      { timeoutMs: 30_000 },
    );
  }, 120_000);
});

// ---------------------------------------------------------------------------

describe('defect 7: ALTER DATABASE / ALTER ROLE … SET reach the next connection', () => {
  afterEach(async () => {
    await nodeQuery(cluster, P, `ALTER DATABASE ${DB} RESET ALL; ALTER ROLE ${ROLE} RESET ALL`).catch(() => undefined);
  });

  it('ALTER DATABASE … SET work_mem, ALTER ROLE … SET search_path: the next psql has them; RESET too', async () => {
    const observe = (t: ConformanceTarget): Promise<PsqlOutcome> =>
      script(t, 'd7', "SHOW work_mem;\nSHOW search_path;\nSELECT current_setting('work_mem');\n", {
        user: ROLE,
        database: DB,
      });
    await conform(
      targets,
      async (t) => {
        const before = await observe(t);
        await waitCached(targets, t, ROLE, DB);
        const altered = await script(
          t,
          'd7admin',
          `ALTER DATABASE ${DB} SET work_mem = '3MB';\nALTER ROLE ${ROLE} SET search_path = 'conform_z, public';\n`,
        );
        await waitReplayed(cluster);
        const after = await observe(t);
        await waitCached(targets, t, ROLE, DB);
        const reset = await script(t, 'd7admin', `ALTER DATABASE ${DB} RESET ALL;\nALTER ROLE ${ROLE} RESET ALL;\n`);
        await waitReplayed(cluster);
        return { before, altered, after, reset, afterReset: await observe(t) };
      },
      // The targets share the database and the role the scenario alters: one after another.
      { timeoutMs: 40_000, sequential: true },
    );
  }, 150_000);
});

// ---------------------------------------------------------------------------

describe('defect 8: replication connections', () => {
  for (const mode of ['database', 'true']) {
    it(`psql "replication=${mode}" -c IDENTIFY_SYSTEM`, async () => {
      await conform(targets, async (t) => {
        const r = await runPsql(['-At', '-c', 'IDENTIFY_SYSTEM', `dbname=postgres replication=${mode}`], {
          port: t.port,
          env: { PGAPPNAME: app(t, 'd8') },
          timeoutMs: 20_000,
        });
        // systemid|timeline|xlogpos|dbname: the WAL position moves, the rest is the cluster's.
        const f = r.stdout.trim().split('|');
        return { code: r.code, identify: f.length === 4 ? [f[0], f[1], f[3]] : f, stderr: lines(r.stderr) };
      });
    });
  }
});

// ---------------------------------------------------------------------------

describe('defect 9: set_config(…, false) is session state', () => {
  it('set_config(name, value, false), then SHOW / current_setting in later statements', async () => {
    await conform(targets, (t) =>
      script(
        t,
        'd9',
        `SELECT set_config('work_mem', '5MB', false);
         SELECT set_config('conform.flag', 'on', false);
         SHOW work_mem;
         SELECT current_setting('conform.flag');
         SELECT count(*) FROM ${T};`,
      ),
    );
  });
});

// ---------------------------------------------------------------------------

describe('flows psql leans on', () => {
  it('ON_ERROR_ROLLBACK (psql wraps each statement in a savepoint)', async () => {
    await conform(targets, async (t) => {
      const out = await script(
        t,
        'oer',
        `\\set ON_ERROR_ROLLBACK on
DELETE FROM ${W(t)} WHERE v = 'oer';
BEGIN;
INSERT INTO ${W(t)} VALUES (1, 'oer');
SELECT 1/0;
INSERT INTO ${W(t)} VALUES (2, 'oer');
SELECT count(*) FROM ${W(t)} WHERE v = 'oer';
SELECT count(*) FROM ${T};
COMMIT;`,
      );
      const [{ count }] = await nodeQuery<{ count: string }>(
        cluster,
        P,
        `SELECT count(*) FROM ${W(t)} WHERE v = 'oer'`,
      );
      return { ...out, committed: count };
    });
  });

  it('FETCH_COUNT (psql reads through a cursor in a transaction), inside and outside a transaction', async () => {
    await conform(targets, (t) =>
      script(
        t,
        'fetch',
        `\\set FETCH_COUNT 3
SELECT id, v FROM ${T} WHERE id <= 8 ORDER BY id;
BEGIN;
SELECT id FROM ${T} WHERE id > 95 ORDER BY id;
SELECT 10 / (id - 3) FROM ${T} WHERE id <= 5 ORDER BY id;
ROLLBACK;
SELECT 'after';`,
      ),
    );
  });

  it('AUTOCOMMIT off (psql sends BEGIN itself), \\gset, \\gexec', async () => {
    await conform(targets, (t) =>
      script(
        t,
        'autocommit',
        `\\set AUTOCOMMIT off
INSERT INTO ${W(t)} VALUES (7, 'ac');
SELECT count(*) FROM ${W(t)} WHERE v = 'ac';
ROLLBACK;
\\set AUTOCOMMIT on
SELECT v AS seven FROM ${T} WHERE id = 7 \\gset
\\echo :seven
SELECT 'SELECT ' || g || ' AS n' FROM generate_series(1, 3) g \\gexec`,
      ),
    );
  });
});
