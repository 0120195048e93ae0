/**
 * pgbench through pgrelay while a standby dies (own DevCluster: primary 0,
 * standbys 1 and 2). Each run is 4 clients in two pgbench processes started
 * together, told apart by application_name and pinned with
 * app_name_redirect_preference_list:
 *   - "on the victim": 2 clients whose load-balance node is the standby killed;
 *   - "elsewhere":     2 clients whose load-balance node is the primary.
 *
 *  - TPC-B-like, -c 2 + 2 -T 8, standby 1 killed (pg_ctl stop -m immediate) at
 *    ~3 s. TPC-B writes first, so its statements after BEGIN run on the
 *    primary; but BEGIN itself goes to the primary AND the LB node (as in
 *    pgpool), so a victim session is "in a transaction on node 1" most of the
 *    time, and pgrelay ends it when node 1 dies (08006). Only such sessions may
 *    fail: the "elsewhere" clients must finish cleanly.
 *  - select-only, -c 2 + 2 -T 6, standby 2 killed at ~2 s: a victim client
 *    whose SELECT is in flight on node 2 at that moment is aborted; one idle
 *    between two SELECTs moves its reads and goes on.
 *
 * pgbench 15 has --max-tries, but it retries only serialization failures and
 * deadlocks: a lost connection aborts the client ("client N script 0 aborted
 * in command ..."), and pgbench exits 2 ("Run was aborted"). So we count
 * aborted clients and compare them with the sessions pgrelay ended because of
 * the dead node. The counts are printed (see docs/failover.md).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { jsonLines, sleep, statusChange, waitForJson } from '../support/failover.js';
import { runPgbench, startProxy, type ProxyHandle, type RunResult } from '../support/proxy.js';

let cluster: DevCluster;
let proxy: ProxyHandle;

interface BenchOutcome {
  r: RunResult;
  processed: number;
  failed: number;
  aborted: number[];
  elapsedMs: number;
}

function parse(r: RunResult, elapsedMs: number): BenchOutcome {
  const processed = Number(/number of transactions actually processed: (\d+)/.exec(r.stdout)?.[1] ?? -1);
  const failed = Number(/number of failed transactions: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  const aborted = [...r.stderr.matchAll(/client (\d+) (?:script \d+ )?aborted/g)].map((m) => Number(m[1]));
  return { r, processed, failed, aborted, elapsedMs };
}

function summary(o: BenchOutcome): string {
  return `exit ${o.r.code}${o.r.timedOut ? ' (timed out)' : ''} after ${o.elapsedMs} ms\n--- stdout ---\n${o.r.stdout.slice(-2500)}\n--- stderr ---\n${o.r.stderr.slice(-2500)}\n--- pgrelay ---\n${proxy.logs().slice(-3000)}`;
}

function describeRun(o: BenchOutcome): string {
  return `exit ${o.r.code} after ${o.elapsedMs} ms, ${o.processed} transactions, ${o.failed} failed, ${o.aborted.length} aborted [${o.aborted.join(',')}]`;
}

/** pgrelay's per-session reactions to losing a link to `node` since log line `since`. */
function sessionReactions(node: number, since: number): { moved: number; ended: number } {
  const lines = jsonLines(proxy).slice(since);
  return {
    moved: lines.filter((l) => l.node === node && l.msg === 'load-balance node connection lost; moving reads').length,
    ended: lines.filter((l) => l.node === node && l.msg === 'backend connection closed unexpectedly').length,
  };
}

/** Two pgbench processes (victim app name / elsewhere app name), node killed at killAtMs. */
async function benchWithKill(
  args: string[],
  victimApp: string,
  killNode: number,
  killAtMs: number,
): Promise<{ victim: BenchOutcome; elsewhere: BenchOutcome; since: number; killedAfterMs: number }> {
  const since = jsonLines(proxy).length;
  const t0 = Date.now();
  const run = (app: string): Promise<BenchOutcome> =>
    runPgbench(args, { port: proxy.port, timeoutMs: 60_000, env: { PGAPPNAME: app } }).then((r) =>
      parse(r, Date.now() - t0),
    );
  const victimP = run(victimApp);
  const elsewhereP = run('bench-primary');
  await sleep(killAtMs);
  const killedAfterMs = Date.now() - t0;
  await cluster.stopNode(killNode, 'immediate');
  const [victim, elsewhere] = await Promise.all([victimP, elsewhereP]);
  return { victim, elsewhere, since, killedAfterMs };
}

describe('pgbench through pgrelay during a standby failure (own DevCluster)', () => {
  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 2 });
    // Initialise directly on the primary (the relay's pgbench -i path is covered by relay-pgbench.test.ts).
    const init = await runPgbench(['-i', '-s', '1', '-q'], { port: cluster.node(0).port, timeoutMs: 60_000 });
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
    await proxy?.stop();
    await cluster?.stop();
  });

  it('TPC-B-like -c 4 -T 8, standby 1 killed at ~3 s: only sessions in a transaction on node 1 fail; the others finish cleanly', async () => {
    const before = Number(await cluster.psql(0, 'SELECT count(*) FROM pgbench_history'));
    const { victim, elsewhere, since, killedAfterMs } = await benchWithKill(
      ['-c', '2', '-j', '1', '-T', '8', '-n'],
      'bench-on1',
      1,
      3000,
    );
    const react = sessionReactions(1, since);
    process.stderr.write(
      `[failover-pgbench] TPC-B-like, node 1 killed at ${killedAfterMs} ms. 2 clients with LB node 1: ${describeRun(victim)}; ` +
        `2 clients with LB node 0: ${describeRun(elsewhere)}. pgrelay ended ${react.ended} session(s) in a transaction on node 1, moved the reads of ${react.moved} idle one(s)\n`,
    );
    for (const m of victim.r.stderr.matchAll(/^.*aborted in.*$/gm))
      process.stderr.write(`[failover-pgbench]   ${m[0]}\n`);
    for (const o of [victim, elsewhere]) {
      expect(o.r.timedOut, summary(o)).toBe(false);
      expect(o.processed, summary(o)).toBeGreaterThan(0);
    }
    // The clients not using node 1 are unaffected: clean exit, full duration.
    expect(elsewhere.r.code, summary(elsewhere)).toBe(0);
    expect(elsewhere.aborted, summary(elsewhere)).toEqual([]);
    expect(elsewhere.failed, summary(elsewhere)).toBe(0);
    expect(elsewhere.elapsedMs, summary(elsewhere)).toBeGreaterThan(7000);
    // Victims: 0 = clean; 2 = "Run was aborted" (some clients aborted).
    expect([0, 2], summary(victim)).toContain(victim.r.code);
    // Each aborted client is exactly one session pgrelay ended because it was in a transaction on node 1.
    expect(victim.aborted.length, summary(victim)).toBe(react.ended);
    expect(react.ended + react.moved, summary(victim)).toBeLessThanOrEqual(2);
    // Every committed transaction inserted one history row on the primary.
    const after = Number(await cluster.psql(0, 'SELECT count(*) FROM pgbench_history'));
    expect(after - before).toBeGreaterThanOrEqual(victim.processed + elsewhere.processed);
    // Node 1 went down, nothing else did.
    await waitForJson(proxy, statusChange(1, 'down'), 15_000, 'node 1 down');
    expect(jsonLines(proxy).filter((l) => l.msg === 'node status changed' && l.to === 'down' && l.node !== 1)).toEqual(
      [],
    );
  });

  it('select-only -M prepared -c 4 -T 6, standby 2 killed at ~2 s: reads in flight are re-sent, no client fails unless a reply had started', async () => {
    const { victim, elsewhere, since, killedAfterMs } = await benchWithKill(
      ['-S', '-M', 'prepared', '-c', '2', '-j', '1', '-T', '6', '-n'],
      'bench-on2',
      2,
      2000,
    );
    const react = sessionReactions(2, since);
    process.stderr.write(
      `[failover-pgbench] select-only, node 2 killed at ${killedAfterMs} ms. 2 clients with LB node 2: ${describeRun(victim)}; ` +
        `2 clients with LB node 0: ${describeRun(elsewhere)}. pgrelay ended ${react.ended} session(s) with a read in flight on node 2, moved the reads of ${react.moved} idle one(s)\n`,
    );
    for (const m of victim.r.stderr.matchAll(/^.*aborted in.*$/gm))
      process.stderr.write(`[failover-pgbench]   ${m[0]}\n`);
    for (const o of [victim, elsewhere]) {
      expect(o.r.timedOut, summary(o)).toBe(false);
      expect(o.processed, summary(o)).toBeGreaterThan(0);
    }
    expect(elsewhere.r.code, summary(elsewhere)).toBe(0);
    expect(elsewhere.aborted, summary(elsewhere)).toEqual([]);
    expect(elsewhere.elapsedMs, summary(elsewhere)).toBeGreaterThan(5000);
    expect([0, 2], summary(victim)).toContain(victim.r.code);
    expect(victim.aborted.length, summary(victim)).toBe(react.ended);
    // A victim that survived (its link died between two SELECTs) ran to the end.
    if (victim.aborted.length < 2) expect(victim.elapsedMs, summary(victim)).toBeGreaterThan(5000);
    await waitForJson(proxy, statusChange(2, 'down'), 15_000, 'node 2 down');
    expect(jsonLines(proxy).filter((l) => l.msg === 'node status changed' && l.to === 'down' && l.node === 0)).toEqual(
      [],
    );
    expect(await cluster.psql(0, 'SELECT pg_is_in_recovery()')).toBe('f');
  });
});
