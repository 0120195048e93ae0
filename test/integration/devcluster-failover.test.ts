/**
 * DevCluster failover helpers on a private cluster (the shared one is left
 * alone): promote a standby, re-point the other standby at it, rebuild the
 * old primary as a standby.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';

describe('DevCluster promote / follow / rebuildStandby', () => {
  let cluster: DevCluster;

  beforeAll(async () => {
    cluster = await DevCluster.start({
      standbys: 2,
      synchronous: true,
      authMethod: 'md5',
      superuserPassword: 's3cret',
    });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('starts synchronous with md5 auth', async () => {
    const rows = await cluster.psql(0, 'SELECT application_name, sync_state FROM pg_stat_replication ORDER BY 1');
    expect(rows).toBe('server1|quorum\nserver2|quorum');
    expect(await cluster.psql(0, "SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'postgres'")).toBe('t');
  });

  it('promotes node1 after the primary stops, node2 follows, node0 comes back as a standby', async () => {
    await cluster.psql(0, 'CREATE TABLE before_failover (x int); INSERT INTO before_failover VALUES (1)');
    await cluster.waitForCatchup(30_000);
    await cluster.stopNode(0, 'immediate');
    expect(await cluster.isRunning(0)).toBe(false);

    await cluster.promote(1);
    expect(cluster.primaryId).toBe(1);
    expect(await cluster.psql(1, 'SELECT pg_is_in_recovery()')).toBe('f');
    await cluster.psql(1, 'INSERT INTO before_failover VALUES (2)');

    await cluster.follow(2, 1);
    await cluster.rebuildStandby(0, 1);
    await cluster.waitForStandbys(30_000);
    await cluster.waitForCatchup(30_000);
    const apps = await cluster.psql(
      1,
      "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1",
    );
    expect(apps).toBe('server0\nserver2');
    expect(await cluster.psql(0, 'SELECT pg_is_in_recovery()')).toBe('t');
    expect(await cluster.psql(0, 'SELECT count(*) FROM before_failover')).toBe('2');
    expect(await cluster.psql(2, 'SELECT count(*) FROM before_failover')).toBe('2');
    // DevCluster.promote() waits up to 60 s for the node to leave recovery: a longer test limit keeps its message.
  }, 150_000);

  it('restarts a standby on the same port', async () => {
    const port = cluster.node(2).port;
    await cluster.restartNode(2);
    expect(await cluster.psql(2, 'SELECT inet_server_port()')).toBe(String(port));
    await cluster.waitForStandbys(30_000);
  });
});
