/**
 * Primary failover under write load (own DevCluster: primary 0, standbys 1, 2;
 * asynchronous replication): 4 node-postgres workers write through pgrelay in
 * a loop (autocommit INSERT, reconnect + retry with a new id on any error)
 * while the primary is killed (pg_ctl stop -m immediate). examples/failover.sh
 * promotes node 1 (%m), examples/follow_primary.sh re-points node 2 (which streams
 * from node 1 already, cascading: see beforeAll), and
 * auto_failback re-attaches it. Writes must resume on node 1 within a bound;
 * the time from the kill to the first successful write is measured and printed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import {
  countCodes,
  nodeOfPort,
  showPoolNodes,
  statusChange,
  until,
  waitForJson,
  WriteLoad,
} from '../support/failover.js';
import { failoverConfig } from '../support/failover.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';

/** Kill → first successful write through pgrelay must be below this. */
const RESUME_BOUND_MS = 30_000;

let cluster: DevCluster;

/** Until node 1's pg_stat_replication shows node 2 (application_name server2) streaming. */
function node2StreamsFromNode1(timeoutMs: number, what: string): Promise<number> {
  return until(
    async () =>
      (await cluster.psql(1, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")) ===
      'server2',
    timeoutMs,
    what,
  );
}
let proxy: ProxyHandle;
let work: string;
let load: WriteLoad | undefined;

describe('primary failover under write load (own DevCluster)', () => {
  beforeAll(async () => {
    cluster = await DevCluster.start({ standbys: 2 });
    await cluster.psql(
      0,
      'CREATE TABLE fo_load (id bigint PRIMARY KEY, worker int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())',
    );
    await cluster.waitForCatchup();
    // Node 2 streams from node 1 (cascading), so it is never ahead of node 1 when node 0 is
    // killed under the writers: asynchronous standbys of node 0 could each hold WAL the other
    // lacks, and a node 2 ahead of the promoted node 1 could never follow its new timeline
    // (follow_primary.sh does not pg_rewind), so auto_failback would never re-attach it.
    await cluster.follow(2, 1);
    await node2StreamsFromNode1(30_000, 'node 2 streaming from node 1 before the test');
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-fol-'));
    fs.chmodSync(work, 0o777);
    proxy = await startProxy({
      cluster,
      config: {
        ...failoverConfig(),
        num_init_children: 16,
      },
      env: {
        PGRELAY_FAILOVER_RECORD: path.join(work, 'failover.args'),
        PGRELAY_FOLLOW_RECORD: path.join(work, 'follow.args'),
        PG_BIN: cluster.pgBin,
        PGUSER: 'postgres',
      },
    });
    await waitForJson(proxy, (l) => l.msg === 'primary node found' && l.node === 0, 15_000, 'primary found');
  });

  afterAll(async () => {
    await load?.stop(5000);
    await proxy?.stop();
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('4 writers keep writing; the primary is killed; writes resume on node 1 within the bound', async () => {
    const p0 = cluster.node(0).port;
    const p1 = cluster.node(1).port;
    load = new WriteLoad({
      port: proxy.port,
      workers: 4,
      table: 'fo_load',
      pauseMs: 20,
      retryDelayMs: 100,
      queryTimeoutMs: 15_000,
    });
    await until(() => load!.events.filter((e) => e.ok).length >= 40, 20_000, '40 writes before the kill');
    expect(load.errors(), JSON.stringify(load.errors().slice(0, 5))).toEqual([]);
    expect(new Set(load.events.filter((e) => e.ok).map((e) => e.port))).toEqual(new Set([p0]));
    const ackedBefore = load.acked.size;

    const t0 = Date.now();
    await cluster.stopNode(0, 'immediate');
    const killedAt = Date.now();

    // First write acknowledged after the kill (by any worker), which must come from node 1.
    await until(
      () => load!.successesAfter(killedAt).length > 0,
      RESUME_BOUND_MS + 5000,
      'a successful write after the kill',
    ).catch((e: Error) => {
      throw new Error(
        `${e.message}\nerrors: ${JSON.stringify(countCodes(load!.errors()))}\n--- pgrelay ---\n${proxy.logs().slice(-5000)}`,
      );
    });
    const first = load.successesAfter(killedAt)[0]!;
    const firstWriteMs = first.at - killedAt;
    // Let every worker get back (each reconnects on its own).
    await until(
      () => new Set(load!.successesAfter(first.at).map((e) => e.worker)).size === 4,
      20_000,
      'all 4 workers writing again',
    );
    // A few more writes of every worker on the new primary.
    await until(
      () => [0, 1, 2, 3].every((w) => load!.successesAfter(first.at).filter((e) => e.worker === w).length >= 3),
      20_000,
      '3 more writes of every worker',
    );
    await load.stop();
    const errs = load.errors();
    const downAt = Date.parse(String((await waitForJson(proxy, statusChange(0, 'down'), 1000, 'node 0 down')).time));
    const changedAt = Date.parse(
      String(
        (await waitForJson(proxy, (l) => l.msg === 'primary node changed' && l.to === 1, 1000, 'primary changed')).time,
      ),
    );
    process.stderr.write(
      `[failover-primary-load] primary killed (pg_ctl -m immediate ${killedAt - t0} ms): node 0 marked down after ${downAt - killedAt} ms, ` +
        `node 1 primary after ${changedAt - killedAt} ms, FIRST SUCCESSFUL WRITE ${firstWriteMs} ms after the kill (worker ${first.worker}); ` +
        `writes: ${ackedBefore} before, ${load.acked.size - ackedBefore} after; errors: ${errs.length} ${JSON.stringify(countCodes(errs))}\n`,
    );
    expect(nodeOfPort(cluster, first.port!)).toBe(1);
    expect(firstWriteMs).toBeLessThan(RESUME_BOUND_MS);
    // After the first success, every write went to node 1.
    expect(new Set(load.successesAfter(first.at).map((e) => e.port))).toEqual(new Set([p1]));
    // Errors only around the failover (between the kill and the first write + reconnects), never after all workers resumed.
    const lastErr = errs.length ? Math.max(...errs.map((e) => e.at)) : killedAt;
    expect(lastErr - killedAt).toBeLessThan(RESUME_BOUND_MS + 5000);
    // Once node 0 is marked down, new sessions wait for the new primary instead of failing
    // (errors before that: statements in flight on node 0 and connections refused by it).
    const lateErrs = errs.filter((e) => e.at > downAt + 500);
    process.stderr.write(
      `[failover-primary-load] errors before node 0 was marked down: ${errs.length - lateErrs.length}; after: ${lateErrs.length} ${JSON.stringify(countCodes(lateErrs))}\n`,
    );
    expect(lateErrs.map((e) => `${e.code ?? ''} ${e.error ?? ''}`)).toEqual([]);

    // Every write acknowledged after the kill is on the new primary.
    const ids = new Set((await cluster.psql(1, 'SELECT id FROM fo_load')).split('\n').filter(Boolean).map(Number));
    const after = [...load.acked].filter((id) => load!.events.find((e) => e.id === id && e.ok)!.at > killedAt);
    expect(after.filter((id) => !ids.has(id))).toEqual([]);
    // Asynchronous replication: writes acknowledged just before the kill may be missing (reported, not asserted).
    const lostBefore = [...load.acked].filter((id) => !ids.has(id)).length;
    process.stderr.write(
      `[failover-primary-load] acknowledged writes missing on the new primary (async replication): ${lostBefore}\n`,
    );
  }, 150_000);

  it('follow_primary.sh re-points node 2 to node 1 and auto_failback re-attaches it', async () => {
    await waitForJson(
      proxy,
      (l) => l.msg === 'follow_primary_command finished' && l.node === 2,
      30_000,
      'follow_primary_command on node 2',
    );
    await waitForJson(
      proxy,
      (l) => statusChange(2, 'waiting')(l) && /new primary/.test(String(l.reason)),
      30_000,
      'node 2 re-attached',
    );
    await node2StreamsFromNode1(15_000, 'node 2 streaming from node 1');
    const rows = await showPoolNodes(proxy);
    expect(rows.map((r) => r.status)).toEqual([
      'down',
      expect.stringMatching(/^(up|waiting)$/),
      expect.stringMatching(/^(up|waiting)$/),
    ]);
    expect(rows[1]?.role).toBe('primary');
    const fo = fs.readFileSync(path.join(work, 'failover.args'), 'utf8').trim().split('\n');
    expect(fo.map((l) => l.split('|').slice(0, 1).concat(l.split('|')[4]!))).toEqual([['0', '1']]);
  }, 120_000);
});
