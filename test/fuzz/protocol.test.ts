/**
 * Differential fuzzer of raw protocol scripts (opt-in: `npm run fuzz`, see test/README.md).
 * Each seed makes a script of steps (messages up to a Sync, or one simple Query) over a few
 * statement and portal names and a vocabulary of reads, writes, transaction control, SET,
 * PREPARE/DEALLOCATE, DISCARD ALL, cursors (WITH HOLD too), COPY both ways (rows, a bad row,
 * CopyFail; stray copy messages where no COPY runs), LISTEN/NOTIFY, a temporary table, a
 * sequence and failing statements; it runs directly on the
 * primary, then through pgrelay in session and transaction mode (load balancing on, primary
 * weight 0, so statements are split across nodes), and every reply (ParameterStatus
 * included) must be the same. A differing script can be reduced (FUZZ_REDUCE=1). Outputs go
 * to FUZZ_OUT (default test-output/fuzz): one JSON per seed, the reduced scripts, the
 * proxies' logs.
 *
 * PostgreSQL 15.18 itself crashes under some scripts (signal 11): such a seed is reported as
 * a crash, and the run waits for the primary to recover.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { rawSession, xorshift32 } from '../support/conformance.js';
import { type ProxyHandle, startProxy } from '../support/proxy.js';
import {
  bindMessage,
  closeAllRaw,
  closeMessage,
  copyDataMessage,
  copyDoneMessage,
  copyFailMessage,
  describeMessage,
  executeMessage,
  flushMessage,
  parseMessage,
  queryMessage,
  syncMessage,
  replyTranscript,
} from '../support/raw.js';

const OUT = process.env.FUZZ_OUT ?? path.resolve('test-output/fuzz');
const env = (name: string): string | undefined => process.env[`FUZZ_${name}`];
/** FUZZ_CONCURRENT=N: N scripts per seed at once through each pgrelay (pool_mode = transaction shares connections). */
const concurrent = Number(env('CONCURRENT') ?? 0);
const cluster = getCluster();
const T = 'fz_t';
const W = 'fz_w';
const proxies: Record<string, ProxyHandle> = {};
const modes = (env('MODES') ?? 'session,transaction').split(',');

beforeAll(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  await cluster.psql(
    cluster.primaryId,
    `DROP TABLE IF EXISTS ${T}; CREATE TABLE ${T} (a int, b text); INSERT INTO ${T} SELECT g, 'x' || g FROM generate_series(1, 3) g; DROP TABLE IF EXISTS ${W}; CREATE TABLE ${W} (a int); DROP SEQUENCE IF EXISTS fz_seq; CREATE SEQUENCE fz_seq`,
  );
  await cluster.waitForCatchup(30_000);
  const conf = env('CONF');
  // FUZZ_CONF: pgpool.conf keys as JSON, over the defaults below.
  const extra = conf ? (JSON.parse(conf) as Record<string, string | number | boolean>) : {};
  for (const mode of modes) {
    proxies[mode] = await startProxy({
      cluster,
      config: {
        pool_mode: mode,
        default_pool_size: 3,
        load_balance_mode: true,
        backend_weight0: 0,
        log_min_messages: 'warning',
        // A standby failed over when PostgreSQL crashed comes back (see recovered): the seeds
        // after a crash still read on the standbys.
        sr_check_period: 1,
        auto_failback: true,
        auto_failback_interval: 1,
        ...extra,
      },
      env: env('TRACE') ? { PGRELAY_TRACE: '1' } : {},
    });
  }
}, 120_000);

afterAll(async () => {
  closeAllRaw();
  try {
    fs.copyFileSync(cluster.logFile(cluster.primaryId), path.join(OUT, 'primary.log'));
  } catch {}
  for (const [mode, p] of Object.entries(proxies)) {
    fs.writeFileSync(path.join(OUT, `proxy-${mode}.log`), p.logs());
    await p.stop();
  }
});

// ---- script model
type Msg =
  | { k: 'P'; name: string; sql: string; types: number[] }
  | { k: 'B'; portal: string; stmt: string; n: number }
  | { k: 'E'; portal: string; max: number }
  | { k: 'DS' | 'DP' | 'CS' | 'CP'; name: string }
  | { k: 'H' }
  | { k: 'S' }
  | { k: 'Q'; sql: string }
  /** CopyData (a row of fz_w, or a bad one), CopyDone, CopyFail. */
  | { k: 'd'; row: string }
  | { k: 'c' }
  | { k: 'f' };
type Step = Msg[];

const SQL: Array<[string, number]> = [
  [`SELECT a, b FROM ${T} ORDER BY a`, 0],
  [`SELECT count(*) FROM ${T}`, 0],
  [`SELECT $1::int + 1`, 1],
  [`SELECT b FROM ${T} WHERE a = $1`, 1],
  [`SELECT 1/0`, 0],
  [`SELEC 1`, 0],
  [`SELECT * FROM fz_missing`, 0],
  [`INSERT INTO ${W} VALUES (1)`, 0],
  [`INSERT INTO ${W} VALUES ($1::int)`, 1],
  [`UPDATE ${W} SET a = a WHERE a < 0`, 0],
  [`SELECT count(*) FROM ${W} WHERE a < 0`, 0],
  ['BEGIN', 0],
  ['BEGIN READ ONLY', 0],
  ['COMMIT', 0],
  ['ROLLBACK', 0],
  ['SAVEPOINT sp', 0],
  ['ROLLBACK TO sp', 0],
  ["SET TimeZone = 'Asia/Tokyo'", 0],
  ["SET LOCAL TimeZone = 'Europe/Paris'", 0],
  ['SHOW TimeZone', 0],
  ['RESET TimeZone', 0],
  ['PREPARE q AS SELECT 7', 0],
  ['EXECUTE q', 0],
  ['DEALLOCATE q', 0],
  ['DEALLOCATE ALL', 0],
  ['DISCARD ALL', 0],
  [`DECLARE c CURSOR FOR SELECT a FROM ${T} ORDER BY a`, 0],
  ['FETCH 1 FROM c', 0],
  ['CLOSE c', 0],
  ['SELECT 1', 0],
  [`COPY ${W} FROM STDIN`, 0],
  [`COPY (SELECT a FROM ${T} ORDER BY a) TO STDOUT`, 0],
  [`COPY ${T} TO STDOUT`, 0],
  [`DECLARE h CURSOR WITH HOLD FOR SELECT a FROM ${T} ORDER BY a`, 0],
  ['FETCH 1 FROM h', 0],
  ['CLOSE h', 0],
  ['LISTEN fz_ch', 0],
  ['NOTIFY fz_ch', 0],
  ['UNLISTEN *', 0],
  ['CREATE TEMP TABLE fz_tmp (a int)', 0],
  ["SELECT nextval('fz_seq') > 0", 0],
  ["SET application_name = 'fz2'", 0],
  ['SELECT g FROM generate_series(1, 300) g', 0],
];
/**
 * Statements only sent in simple Queries. In pool_mode = transaction a Parse of a text some
 * connection prepared without error is answered by pgrelay (README, "Prepared statements"):
 * a text naming the temporary table of an earlier session gets ParseComplete, and its error
 * (42P01) at the Bind, where PostgreSQL fails the Parse.
 */
const SIMPLE_ONLY: Array<[string, number]> = [
  ['INSERT INTO fz_tmp VALUES (1)', 0],
  ['SELECT count(*) FROM fz_tmp', 0],
];
const QUERIES = [...SQL, ...SIMPLE_ONLY];
const STMTS = ['', 's1', 's2'];
const PORTALS = ['', 'p1'];

function generate(seed: number, len: number): Step[] {
  const r = xorshift32(seed * 7919 + 17);
  const pick = <X>(xs: X[]): X => xs[Math.floor(r() * xs.length)] as X;
  const steps: Step[] = [];
  /** What a client sends after each COPY FROM STDIN of `sql`: rows (sometimes a bad one), then CopyDone or CopyFail. */
  const copyIn = (sql: string): Msg[] => {
    const out: Msg[] = [];
    for (let c = sql.split('FROM STDIN').length - 1; c > 0; c--) {
      for (let n = Math.floor(r() * 3); n > 0; n--) out.push({ k: 'd', row: r() < 0.1 ? 'x' : String(n) });
      out.push(r() < 0.2 ? { k: 'f' } : { k: 'c' });
    }
    return out;
  };
  // Names that may hold a COPY FROM STDIN (any text ever parsed or bound under them): an Execute of
  // such a portal is followed by copy messages, which PostgreSQL ignores when no copy runs —
  // a COPY waiting for data that never comes would hang the script.
  const copyStatements = new Set<string>();
  const copyPortals = new Set<string>();
  const bind = (step: Step, portal: string, stmt: string, n: number): void => {
    step.push({ k: 'B', portal, stmt, n });
    if (copyStatements.has(stmt)) copyPortals.add(portal);
  };
  const execute = (step: Step, portal: string, max: number): void => {
    step.push({ k: 'E', portal, max });
    if (copyPortals.has(portal)) step.push(...copyIn('FROM STDIN'));
  };
  for (let i = 0; i < len; i++) {
    if (r() < 0.2) {
      const sql = r() < 0.15 ? `${pick(QUERIES)[0]}; ${pick(QUERIES)[0]}` : pick(QUERIES)[0];
      steps.push([{ k: 'Q', sql }, ...copyIn(sql)]);
      continue;
    }
    const step: Step = [];
    const n = 1 + Math.floor(r() * 4);
    for (let j = 0; j < n; j++) {
      const x = r();
      if (x < 0.3) {
        const [sql] = pick(SQL);
        const stmt = pick(STMTS);
        step.push({ k: 'P', name: stmt, sql, types: [] });
        if (sql.includes('FROM STDIN')) copyStatements.add(stmt);
        if (r() < 0.6) {
          const portal = pick(PORTALS);
          bind(step, portal, stmt, sql.includes('$1') ? 1 : 0);
          if (r() < 0.3) step.push({ k: 'DP', name: portal });
          execute(step, portal, r() < 0.15 ? 1 : 0);
        }
      } else if (x < 0.5) {
        const portal = pick(PORTALS);
        bind(step, portal, pick(STMTS), r() < 0.5 ? 0 : 1);
        execute(step, portal, r() < 0.15 ? 1 : 0);
      } else if (x < 0.6) execute(step, pick(PORTALS), r() < 0.3 ? 1 : 0);
      else if (x < 0.7) step.push({ k: 'DS', name: pick(STMTS) });
      else if (x < 0.75) step.push({ k: 'DP', name: pick(PORTALS) });
      else if (x < 0.85) step.push({ k: 'CS', name: pick(STMTS) });
      else if (x < 0.9) step.push({ k: 'CP', name: pick(PORTALS) });
      else if (x < 0.93) step.push({ k: 'H' });
      else step.push({ k: 'S' });
    }
    if (step.at(-1)?.k !== 'S') step.push({ k: 'S' });
    steps.push(step);
  }
  return steps;
}

function encode(m: Msg): Buffer {
  switch (m.k) {
    case 'P':
      return parseMessage(m.name, m.sql, m.types);
    case 'B':
      return bindMessage(m.portal, m.stmt, m.n ? ['2'] : []);
    case 'E':
      return executeMessage(m.portal, m.max);
    case 'DS':
      return describeMessage('S', m.name);
    case 'DP':
      return describeMessage('P', m.name);
    case 'CS':
      return closeMessage('S', m.name);
    case 'CP':
      return closeMessage('P', m.name);
    case 'H':
      return flushMessage();
    case 'S':
      return syncMessage();
    case 'Q':
      return queryMessage(m.sql);
    case 'd':
      return copyDataMessage(`${m.row}\n`);
    case 'c':
      return copyDoneMessage();
    case 'f':
      return copyFailMessage('fz');
  }
}

function text(m: Msg): string {
  const d = (s: string) => (s === '' ? '-' : s);
  switch (m.k) {
    case 'P':
      return `P ${d(m.name)} ${m.sql}`;
    case 'B':
      return `B ${d(m.portal)} ${d(m.stmt)} ${m.n}`;
    case 'E':
      return `E ${d(m.portal)} ${m.max}`;
    case 'DS':
    case 'DP':
    case 'CS':
    case 'CP':
      return `${m.k} ${d(m.name)}`;
    case 'H':
    case 'S':
      return m.k;
    case 'Q':
      return `Q ${m.sql}`;
    case 'd':
      return `d ${m.row}`;
    case 'c':
    case 'f':
      return m.k;
  }
}

function parseScript(s: string): Step[] {
  const u = (x: string) => (x === '-' ? '' : x);
  return s
    .split('\n')
    .filter((l) => l.trim())
    .map((line) =>
      line.split(' | ').map((t): Msg => {
        const [k, ...rest] = t.trim().split(' ');
        switch (k) {
          case 'P':
            return { k: 'P', name: u(rest[0] ?? ''), sql: rest.slice(1).join(' '), types: [] };
          case 'B':
            return { k: 'B', portal: u(rest[0] ?? ''), stmt: u(rest[1] ?? ''), n: Number(rest[2] ?? 0) };
          case 'E':
            return { k: 'E', portal: u(rest[0] ?? ''), max: Number(rest[1] ?? 0) };
          case 'DS':
          case 'DP':
          case 'CS':
          case 'CP':
            return { k, name: u(rest[0] ?? '') };
          case 'H':
          case 'S':
            return { k };
          case 'Q':
            return { k: 'Q', sql: rest.join(' ') };
          case 'd':
            return { k: 'd', row: rest[0] ?? '' };
          case 'c':
          case 'f':
            return { k };
          default:
            throw new Error(`bad step ${t}`);
        }
      }),
    );
}

async function run(port: number, steps: Step[]): Promise<string[]> {
  const { raw } = await rawSession({ host: '127.0.0.1', port }, { application_name: 'fz' });
  const out: string[] = [];
  try {
    for (const step of steps) {
      raw.send(...step.map(encode));
      const readies = step.filter((m) => m.k === 'S' || m.k === 'Q').length;
      const got = await replyTranscript(raw, readies, true, 8_000);
      out.push(got);
      if (raw.closed || got.includes('HANG(')) break;
    }
    // (Two Queries: DISCARD ALL cannot run in the implicit transaction of a multi-statement one.)
    raw.send(queryMessage('ROLLBACK'), queryMessage('DISCARD ALL'));
  } finally {
    raw.destroy();
  }
  return out;
}

/** FUZZ_SEEDS: `1-200`, `7,34,78`, `5-9,12` (default 1-50). */
function seeds(): number[] {
  const out: number[] = [];
  for (const part of (env('SEEDS') ?? '1-50').split(',')) {
    const [from, to] = part.split('-').map(Number);
    const a = from ?? Number.NaN;
    const b = to ?? a;
    if (!Number.isInteger(a) || !Number.isInteger(b)) throw new Error(`FUZZ_SEEDS: bad part ${part}`);
    for (let i = a; i <= b; i++) out.push(i);
  }
  return out;
}

const primaryPort = (): number => cluster.node(cluster.primaryId).port;

/** The primary crashed (PostgreSQL's own crash): wait until it accepts sessions again. */
async function recovered(seed: number, why: string): Promise<void> {
  process.stderr.write(`seed ${seed}: PostgreSQL crashed (${why.slice(0, 120)}); waiting for its recovery\n`);
  for (let i = 0; i < 120; i++) {
    try {
      const { raw } = await rawSession({ host: '127.0.0.1', port: primaryPort() }, {});
      raw.destroy();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  // (The standbys reconnect, and pgrelay's health checks see the node up again.)
  await new Promise((r) => setTimeout(r, 3000));
  // Each pgrelay takes sessions again, every node up (auto_failback): one that does not is an
  // outage of pgrelay's own, not PostgreSQL's (every later seed would fail at start-up, or run
  // without the standbys): the run stops and says so.
  for (const [mode, p] of Object.entries(proxies)) {
    let last = '';
    for (let i = 0; i < 30; i++) {
      try {
        const { raw } = await rawSession({ host: '127.0.0.1', port: p.port }, {});
        raw.destroy();
        last = '';
        break;
      } catch (e) {
        last = (e as Error).message;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    if (last !== '')
      throw new Error(`seed ${seed}: pgrelay (${mode}) refuses sessions 30 s after PostgreSQL recovered: ${last}`);
    const down = await nodesDown(p.port);
    if (down.length > 0)
      throw new Error(
        `seed ${seed}: pgrelay (${mode}) has node ${down.join(', ')} down 30 s after PostgreSQL recovered`,
      );
  }
}

/** The nodes SHOW pool_nodes says are down through the pgrelay on `port`, once none is (or after 30 s). */
async function nodesDown(port: number): Promise<string[]> {
  let down: string[] = [];
  for (let i = 0; i < 30; i++) {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', query_timeout: 5000 });
    c.on('error', () => undefined);
    try {
      await c.connect();
      const r = await c.query<{ node_id: string; status: string }>('SHOW pool_nodes');
      down = r.rows.filter((n) => n.status === 'down').map((n) => n.node_id);
    } catch (e) {
      down = [`? (${(e as Error).message})`];
    } finally {
      await c.end().catch(() => undefined);
    }
    if (down.length === 0) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return down;
}

/** Drop steps, then single messages, while the script still differs on `port` (twice tried: timing). */
async function reduce(steps: Step[], port: number): Promise<Step[]> {
  const differs = async (cand: Step[]): Promise<boolean> => {
    for (let t = 0; t < 2; t++)
      if (JSON.stringify(await run(primaryPort(), cand)) !== JSON.stringify(await run(port, cand))) return true;
    return false;
  };
  let cur = steps;
  for (let i = cur.length - 2; i >= 0; i--) {
    const cand = cur.filter((_, j) => j !== i);
    if (await differs(cand)) cur = cand;
  }
  for (let i = cur.length - 1; i >= 0; i--) {
    for (let j = (cur[i] as Step).length - 1; j >= 0; j--) {
      const st = cur[i] as Step;
      // (The step's last Sync stays.)
      if (st[j]?.k === 'S' && st.filter((m) => m.k === 'S').length === 1) continue;
      const cand = cur.map((x, a) => (a === i ? x.filter((_, b) => b !== j) : x)).filter((x) => x.length > 0);
      if (await differs(cand)) cur = cand;
    }
  }
  return cur;
}

it.runIf(concurrent <= 1)(
  'raw protocol scripts: the same replies directly and through pgrelay',
  async () => {
    const len = Number(env('LEN') ?? 30);
    const differing: string[] = [];
    const crashes: number[] = [];
    for (const seed of seeds()) {
      let steps = env('REPRO') ? parseScript(fs.readFileSync(env('REPRO') as string, 'utf8')) : generate(seed, len);
      const keep = env('STEPS');
      if (keep !== undefined) {
        const kept = new Set(keep.split(',').map(Number));
        steps = steps.filter((_, i) => kept.has(i));
      }
      const script = steps.map((st) => st.map(text).join(' | '));
      fs.writeFileSync(path.join(OUT, `script-${seed}.txt`), `${script.join('\n')}\n`);
      const res: Record<string, unknown> = { seed, script };
      let direct: string[];
      try {
        direct = await run(primaryPort(), steps);
      } catch (e) {
        crashes.push(seed);
        await recovered(seed, (e as Error).message);
        continue;
      }
      res.direct = direct;
      for (const [mode, p] of Object.entries(proxies)) {
        let got: string[];
        try {
          got = await run(p.port, steps);
        } catch (e) {
          crashes.push(seed);
          await recovered(seed, (e as Error).message);
          continue;
        }
        if (got.some((g) => g.includes('08006') || g.includes('57P0'))) {
          crashes.push(seed);
          await recovered(seed, `through pgrelay, ${mode}`);
          continue;
        }
        const first = got.findIndex((g, i) => g !== direct[i]);
        if (first < 0 && got.length === direct.length) continue;
        const at = first >= 0 ? first : Math.min(got.length, direct.length);
        res[mode] = { at, step: script[at], direct: direct[at], got: got[at] };
        differing.push(`${seed} ${mode} (step ${at})`);
        process.stderr.write(
          `seed ${seed} ${mode} differs at step ${at}\n  ${script[at]}\n  direct:  ${direct[at]}\n  pgrelay: ${got[at]}\n`,
        );
        if (env('REDUCE')) {
          const min = await reduce(steps.slice(0, at + 1), p.port);
          const txt = min.map((st) => st.map(text).join(' | ')).join('\n');
          const d = await run(primaryPort(), min);
          const g = await run(p.port, min);
          const out = `${txt}\n# direct\n${d.join('\n')}\n# pgrelay\n${g.join('\n')}\n`;
          fs.writeFileSync(path.join(OUT, `${seed}-${mode}.min`), out);
          process.stderr.write(`reduced, seed ${seed} ${mode}:\n${out}`);
        }
      }
      fs.writeFileSync(path.join(OUT, `${seed}.json`), JSON.stringify(res, null, 1));
    }
    process.stderr.write(
      `fuzz: ${differing.length} differences over ${seeds().length} seeds; PostgreSQL crashed at seeds ${crashes.join(', ') || 'none'}\n`,
    );
    expect(differing).toEqual([]);
  },
  24 * 3_600_000,
);

it.runIf(concurrent > 1)(
  'several clients at once through pgrelay: each gets the replies it gets alone, directly',
  async () => {
    const len = Number(env('LEN') ?? 30);
    const differing: string[] = [];
    const crashes: number[] = [];
    for (const seed of seeds()) {
      // (The scripts touch nothing another client reads: fz_w is only written, or counted where empty.)
      // (Each client LISTENs and NOTIFYs on a channel of its own.)
      const group = Array.from({ length: concurrent }, (_, i) =>
        generate(seed * 1000 + i, len).map((st) =>
          st.map((m) => (m.k === 'P' || m.k === 'Q' ? { ...m, sql: m.sql.replaceAll('fz_ch', `fz_ch${i}`) } : m)),
        ),
      );
      for (const [i, steps] of group.entries())
        fs.writeFileSync(
          path.join(OUT, `script-${seed}-${i}.txt`),
          `${steps.map((st) => st.map(text).join(' | ')).join('\n')}\n`,
        );
      try {
        const direct: string[][] = [];
        for (const steps of group) direct.push(await run(primaryPort(), steps));
        for (const [mode, p] of Object.entries(proxies)) {
          const got = await Promise.all(group.map((steps) => run(p.port, steps)));
          got.forEach((g, i) => {
            const d = direct[i] as string[];
            const first = g.findIndex((x, j) => x !== d[j]);
            if (first < 0 && g.length === d.length) return;
            const at = first >= 0 ? first : Math.min(g.length, d.length);
            const step = (group[i] as Step[])[at]?.map(text).join(' | ');
            differing.push(`${seed}/${i} ${mode} (step ${at})`);
            process.stderr.write(
              `seed ${seed}/${i} ${mode} differs at step ${at}\n  ${step}\n  direct:  ${d[at]}\n  pgrelay: ${g[at]}\n`,
            );
          });
        }
      } catch (e) {
        crashes.push(seed);
        await recovered(seed, (e as Error).message);
      }
    }
    process.stderr.write(
      `fuzz: ${differing.length} differences over ${seeds().length} seeds × ${concurrent} clients; PostgreSQL crashed at seeds ${crashes.join(', ') || 'none'}\n`,
    );
    expect(differing).toEqual([]);
  },
  24 * 3_600_000,
);
