/**
 * pgbench through pgrelay while a standby dies (own DevCluster: primary 0,
 * standbys 1 and 2). pgbench processes run together, told apart by
 * application_name and pinned with app_name_redirect_preference_list:
 *   - "victims":   clients whose load-balance node is the standby killed;
 *   - "elsewhere": 2 clients whose load-balance node is the primary.
 * The standby is stopped (pg_ctl stop -m immediate) once the run is under way
 * and every victim is connected to it (polled, not timed; checked last, just
 * before the kill, so that a run ending early cannot pass unnoticed).
 *
 *  - TPC-B-like, -c 2 + 2 -T 10, standby 1 killed: TPC-B writes first, so a
 *    victim's transaction runs only the mirrored BEGIN (and the standby-first
 *    END) on node 1; pgrelay drops that link and the transaction goes on on the
 *    primary. README: 0 aborted.
 *  - select-only, -M simple -c 2 and -M prepared -c 2 on node 2, + 2 elsewhere,
 *    -T 8, standby 2 killed: SELECTs in flight on node 2 are re-sent to the
 *    primary. README: 0 aborted, in both modes.
 *
 * pgbench 15's --max-tries retries only serialization failures and deadlocks:
 * a lost connection aborts the client ("client N script 0 aborted in command
 * ...") and pgbench exits 2, so "0 aborted" is exactly "exit 0 and no such
 * line". The counts, and how many reads pgrelay re-sent, are printed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import type pg from 'pg';
import { connect, destroy, jsonLines, showPoolNodes, statusChange, until, waitForJson } from '../support/failover.js';
import { pgbenchCounts, runPgbench, startProxy, type ProxyHandle, type RunResult } from '../support/proxy.js';

let cluster: DevCluster;
let proxy: ProxyHandle;

interface BenchOutcome {
  name: string;
  r: RunResult;
  processed: number;
  failed: number;
  aborted: number[];
  elapsedMs: number;
}

function parse(name: string, r: RunResult, elapsedMs: number): BenchOutcome {
  const counts = pgbenchCounts(r.stdout);
  const processed = counts.processed ?? -1;
  const failed = counts.failed ?? 0;
  const aborted = [...r.stderr.matchAll(/client (\d+) (?:script \d+ )?aborted/g)].map((m) => Number(m[1]));
  return { name, r, processed, failed, aborted, elapsedMs };
}

function summary(o: BenchOutcome): string {
  return `${o.name}: exit ${o.r.code}${o.r.timedOut ? ' (timed out)' : ''} after ${o.elapsedMs} ms\n--- stdout ---\n${o.r.stdout.slice(-2500)}\n--- stderr ---\n${o.r.stderr.slice(-2500)}\n--- pgrelay ---\n${proxy.logs().slice(-3000)}`;
}

function describeRun(o: BenchOutcome): string {
  return `${o.name}: exit ${o.r.code} after ${o.elapsedMs} ms, ${o.processed} transactions, ${o.failed} failed, ${o.aborted.length} aborted [${o.aborted.join(',')}]`;
}

/** pgrelay's per-session reactions to losing a link to `node` since log line `since`. */
function sessionReactions(node: number, since: number): { moved: number; resent: number; ended: number } {
  const lines = jsonLines(proxy).slice(since);
  const moved = lines.filter((l) => l.node === node && l.msg === 'load-balance node connection lost; moving reads');
  return {
    moved: moved.length,
    resent: moved.reduce((n, l) => n + Number(l.resent ?? 0), 0),
    ended: lines.filter((l) => l.node === node && l.msg === 'backend connection closed unexpectedly').length,
  };
}

/** pgrelay's log lines about sessions losing their link to `node` since `since` (for failure messages). */
function linkLog(node: number, since: number): string {
  return jsonLines(proxy)
    .slice(since)
    .filter((l) => l.node === node && /moving reads|closed unexpectedly|FATAL/.test(String(l.msg)))
    .map((l) => JSON.stringify(l))
    .join('\n');
}

const directClients = new Map<number, pg.Client>();

/** One value from a direct connection to `node` (kept open: polling must be cheap on a loaded machine). */
async function directValue(node: number, sql: string): Promise<number> {
  let c = directClients.get(node);
  if (!c) {
    c = await connect(cluster.node(node).port, { application_name: 'failover-pgbench-probe' });
    directClients.set(node, c);
  }
  const r = await c.query<{ v: string }>(`SELECT (${sql})::text AS v`);
  return Number(r.rows[0]?.v);
}

/** Backends on `node` with application_name `app`. */
function backendsOn(node: number, app: string): Promise<number> {
  return directValue(node, `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}'`);
}

interface Run {
  name: string;
  app: string;
  args: string[];
}

/**
 * Start every run at once; once `ready()` holds, stop `killNode` (immediate);
 * resolve when every pgbench has finished.
 */
async function benchWithKill(
  runs: Run[],
  killNode: number,
  ready: () => Promise<boolean>,
): Promise<{ outcomes: BenchOutcome[]; since: number; killedAfterMs: number }> {
  const since = jsonLines(proxy).length;
  const t0 = Date.now();
  const all = runs.map((x) =>
    runPgbench(x.args, { port: proxy.port, timeoutMs: 30_000, env: { PGAPPNAME: x.app } }).then((r) =>
      parse(x.name, r, Date.now() - t0),
    ),
  );
  const settled = Promise.all(all);
  let finished = false;
  void settled.then(() => (finished = true));
  await until(async () => finished || (await ready()), 15_000, 'the victims running on the standby');
  if (finished) throw new Error(`pgbench ended before the kill:\n${(await settled).map(summary).join('\n')}`);
  const killedAfterMs = Date.now() - t0;
  await cluster.stopNode(killNode, 'immediate');
  return { outcomes: await settled, since, killedAfterMs };
}

describe('pgbench through pgrelay during a standby failure (own DevCluster)', () => {
  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 2 });
    // Initialise directly on the primary (the relay's pgbench -i path is covered by relay-pgbench.test.ts).
    const init = await runPgbench(['-i', '-s', '1', '-q'], { port: cluster.node(0).port, timeoutMs: 30_000 });
    expect(init.code, init.stderr).toBe(0);
    await cluster.waitForCatchup();
    proxy = await startProxy({
      cluster,
      config: {
        health_check_period: 1,
        health_check_max_retries: 1,
        health_check_retry_delay: 1,
        health_check_timeout: 5,
        connect_timeout: 2000,
        sr_check_period: 1,
        search_primary_node_timeout: 10,
        num_init_children: 16,
        app_name_redirect_preference_list: 'bench-on1:1,bench-on2:2,bench-primary:primary',
        log_min_messages: 'info',
      },
    });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
  });

  afterAll(async () => {
    for (const c of directClients.values()) destroy(c);
    await proxy?.stop();
    await cluster?.stop();
  });

  it('TPC-B-like, 2 clients on standby 1 + 2 on the primary, standby 1 killed mid-run: 0 aborted', async () => {
    const before = Number(await cluster.psql(0, 'SELECT count(*) FROM pgbench_history'));
    const args = ['-c', '2', '-j', '1', '-T', '7', '-n'];
    const { outcomes, since, killedAfterMs } = await benchWithKill(
      [
        { name: 'victims (LB node 1)', app: 'bench-on1', args },
        { name: 'elsewhere (LB node 0)', app: 'bench-primary', args },
      ],
      1,
      async () =>
        (await directValue(0, 'SELECT count(*) FROM pgbench_history')) >= before + 10 &&
        (await backendsOn(1, 'bench-on1')) === 2,
    );
    const react = sessionReactions(1, since);
    process.stderr.write(
      `[failover-pgbench] TPC-B-like, node 1 killed at ${killedAfterMs} ms. ${outcomes.map(describeRun).join('; ')}. ` +
        `pgrelay dropped the link to node 1 of ${react.moved} session(s), ended ${react.ended}\n`,
    );
    for (const o of outcomes) {
      expect(o.r.timedOut, summary(o)).toBe(false);
      expect(o.aborted, summary(o)).toEqual([]);
      expect(o.r.code, summary(o)).toBe(0);
      expect(o.failed, summary(o)).toBe(0);
      expect(o.processed, summary(o)).toBeGreaterThan(0);
      // Ran for the whole -T 7.
      expect(o.elapsedMs, summary(o)).toBeGreaterThan(6300);
    }
    expect(react.ended, linkLog(1, since)).toBe(0);
    expect(react.moved, linkLog(1, since)).toBe(2);
    // Every committed transaction inserted one history row on the primary.
    const after = Number(await cluster.psql(0, 'SELECT count(*) FROM pgbench_history'));
    expect(after - before).toBeGreaterThanOrEqual(outcomes.reduce((n, o) => n + o.processed, 0));
    // Node 1 went down, nothing else did.
    await waitForJson(proxy, statusChange(1, 'down'), 15_000, 'node 1 down');
    expect(jsonLines(proxy).filter((l) => l.msg === 'node status changed' && l.to === 'down' && l.node !== 1)).toEqual(
      [],
    );
  });

  it('select-only -M simple and -M prepared, 2 clients each on standby 2 + 2 on the primary, standby 2 killed mid-run: reads in flight are re-sent, 0 aborted', async () => {
    const selects = async (): Promise<number> => Number((await showPoolNodes(proxy))[2]?.select_cnt ?? 0);
    const selectsBefore = await selects();
    const { outcomes, since, killedAfterMs } = await benchWithKill(
      [
        {
          name: 'victims -M simple',
          app: 'bench-on2',
          args: ['-S', '-M', 'simple', '-c', '2', '-j', '1', '-T', '8', '-n'],
        },
        {
          name: 'victims -M prepared',
          app: 'bench-on2',
          args: ['-S', '-M', 'prepared', '-c', '2', '-j', '1', '-T', '8', '-n'],
        },
        {
          name: 'elsewhere -M prepared',
          app: 'bench-primary',
          args: ['-S', '-M', 'prepared', '-c', '2', '-j', '1', '-T', '8', '-n'],
        },
      ],
      2,
      async () => (await selects()) >= selectsBefore + 100 && (await backendsOn(2, 'bench-on2')) === 4,
    );
    const react = sessionReactions(2, since);
    process.stderr.write(
      `[failover-pgbench] select-only, node 2 killed at ${killedAfterMs} ms. ${outcomes.map(describeRun).join('; ')}. ` +
        `pgrelay moved the reads of ${react.moved} session(s), re-sending ${react.resent} request(s) in flight; ended ${react.ended}\n`,
    );
    for (const o of outcomes) {
      expect(o.r.timedOut, summary(o)).toBe(false);
      expect(o.aborted, summary(o)).toEqual([]);
      expect(o.r.code, summary(o)).toBe(0);
      expect(o.processed, summary(o)).toBeGreaterThan(0);
      expect(o.elapsedMs, summary(o)).toBeGreaterThan(7000);
    }
    expect(react.ended, linkLog(2, since)).toBe(0);
    expect(react.moved, linkLog(2, since)).toBe(4);
    await waitForJson(proxy, statusChange(2, 'down'), 15_000, 'node 2 down');
    expect(jsonLines(proxy).filter((l) => l.msg === 'node status changed' && l.to === 'down' && l.node === 0)).toEqual(
      [],
    );
    expect(await cluster.psql(0, 'SELECT pg_is_in_recovery()')).toBe('f');
  });
});
