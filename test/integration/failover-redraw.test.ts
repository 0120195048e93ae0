/**
 * A session's load-balance node goes down: the session draws another load-balance
 * node (pgpool: "chosen again if that node goes down") and connects to it
 * mid-session, with its session settings replayed — not just falling back to the
 * primary. Own DevCluster: a standby is stopped.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { withTimeout } from '../support/clients.js';
import { asyncErrors, connect, destroy, nodeOfPort, statusChange, waitForJson } from '../support/failover.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';

let cluster: DevCluster;
let proxy: ProxyHandle;
const open = new Set<pg.Client>();

beforeAll(async () => {
  cluster = await DevCluster.start({ standbys: 2 });
  proxy = await startProxy({
    cluster,
    config: {
      backend_weight0: 0,
      backend_weight1: 1,
      backend_weight2: 1,
      health_check_period: 1,
      health_check_max_retries: 0,
      health_check_timeout: 5,
      health_check_user: 'postgres',
      connect_timeout: 2000,
    },
  });
}, 120_000);

afterAll(async () => {
  for (const c of open) destroy(c);
  await proxy?.stop();
  await cluster?.stop();
});

async function readOf(c: pg.Client): Promise<{ node: number; workMem: string }> {
  const r = await c.query<{ port: number; w: string }>(
    "SELECT inet_server_port() AS port, current_setting('work_mem') AS w",
  );
  return { node: nodeOfPort(cluster, r.rows[0]!.port), workMem: r.rows[0]!.w };
}

describe('load-balance node redrawn after it goes down', () => {
  it('the session reads from the other standby next, with its SET replayed there, and no error', async () => {
    // A session whose load-balance node is standby 1.
    let a: pg.Client | undefined;
    for (let i = 0; i < 40 && !a; i++) {
      const c = await connect(proxy.port, { user: 'postgres', application_name: 'redraw' });
      open.add(c);
      if ((await readOf(c)).node === 1) a = c;
      else {
        open.delete(c);
        destroy(c);
      }
    }
    expect(a, 'no session drew node 1 in 40 tries (weights 0:1:1)').toBeDefined();
    const s = a as pg.Client;
    await s.query("SET work_mem = '7MB'");
    expect(await readOf(s)).toEqual({ node: 1, workMem: '7MB' });

    await cluster.stopNode(1, 'immediate');
    await waitForJson(proxy, statusChange(1, 'down'), 15_000, 'node 1 down');

    const after = await withTimeout(readOf(s), 10_000, 'read after node 1 went down');
    expect(after).toEqual({ node: 2, workMem: '7MB' });
    expect(asyncErrors(s)).toEqual([]);
    // And it stays there.
    expect((await readOf(s)).node).toBe(2);
  });
});
