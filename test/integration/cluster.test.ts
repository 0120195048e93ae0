/**
 * Proves the DevCluster fixture: roles, replication, the shared-cluster guard
 * (test/support/cluster.ts), and — on a cluster of its own, since pausing
 * replay on the shared one would hide other files' writes from that standby —
 * replay pause and the loud failure of waitForCatchup() while a standby is paused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { getCluster } from '../support/cluster.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('the shared DevCluster', () => {
  const cluster = getCluster();
  const table = `fixture_smoke_${process.pid}`;

  afterAll(async () => {
    await cluster.psql(cluster.primaryId, `DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
  });

  it('has one primary and two streaming standbys with distinct ports', async () => {
    expect(cluster.nodes).toHaveLength(3);
    expect(new Set(cluster.nodes.map((n) => n.port)).size).toBe(3);
    expect(await cluster.psql(0, 'SELECT pg_is_in_recovery()')).toBe('f');
    expect(await cluster.psql(1, 'SELECT pg_is_in_recovery()')).toBe('t');
    expect(await cluster.psql(2, 'SELECT pg_is_in_recovery()')).toBe('t');
    for (const n of cluster.nodes) {
      expect(await cluster.psql(n.id, 'SELECT inet_server_port()')).toBe(String(n.port));
    }
    const apps = (
      await cluster.psql(0, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1")
    ).split('\n');
    expect(apps).toEqual(['server1', 'server2']);
    for (const id of [1, 2])
      expect(await cluster.psql(id, 'SELECT pg_get_wal_replay_pause_state()'), `node${id} replay`).toBe('not paused');
  });

  it('replicates a table created on the primary to the standbys', async () => {
    await cluster.psql(
      0,
      `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id int primary key, v text); INSERT INTO ${table} VALUES (1, 'one'), (2, 'two');`,
    );
    await cluster.waitForCatchup();
    expect(await cluster.psql(1, `SELECT count(*) FROM ${table}`)).toBe('2');
    expect(await cluster.psql(2, `SELECT v FROM ${table} WHERE id = 2`)).toBe('two');
    await expect(cluster.psql(1, `INSERT INTO ${table} VALUES (3, 'x')`)).rejects.toThrow(/read-only transaction/);
  });

  it('refuses node control on the shared handle (stop, promote, pause …)', async () => {
    for (const op of [
      () => cluster.pauseReplay(1),
      () => cluster.resumeReplay(1),
      () => cluster.stopNode(2),
      () => cluster.restartNode(2),
      () => cluster.promote(1),
      () => cluster.rebuildStandby(2),
    ])
      await expect(op()).rejects.toThrow(/shared cluster must not be changed/);
    // Nothing happened to the servers.
    expect(await cluster.psql(1, 'SELECT pg_get_wal_replay_pause_state()')).toBe('not paused');
    expect(await cluster.isRunning(2)).toBe(true);
  });
});

describe('replay pause (own DevCluster, primary + 1 standby)', () => {
  let own: DevCluster;
  const table = 'fixture_pause';

  beforeAll(async () => {
    own = await DevCluster.start({ standbys: 1 });
    await own.psql(0, `CREATE TABLE ${table} (id int primary key, v text)`);
    await own.waitForCatchup();
  });

  afterAll(async () => {
    await own?.stop();
  });

  it('pauseReplay makes the standby lag and waitForCatchup fail loudly, until resumeReplay', async () => {
    await own.pauseReplay(1);
    try {
      await own.psql(0, `INSERT INTO ${table} VALUES (10, 'while paused')`);
      const lsn = await own.psql(0, 'SELECT pg_current_wal_lsn()');
      // The helper does not skip the paused standby: it says why it cannot wait.
      await expect(own.waitForCatchup(5_000)).rejects.toThrow(/node1's WAL replay is paused; resumeReplay\(1\) first/);
      // node1 receives the WAL but does not replay it.
      const deadline = Date.now() + 20_000;
      while ((await own.psql(1, `SELECT pg_last_wal_receive_lsn() >= '${lsn}'::pg_lsn`)) !== 't') {
        if (Date.now() > deadline) throw new Error('node1 never received the WAL');
        await sleep(50);
      }
      expect(await own.psql(1, `SELECT count(*) FROM ${table} WHERE id = 10`)).toBe('0');
      expect(await own.psql(1, `SELECT pg_last_wal_replay_lsn() < '${lsn}'::pg_lsn`)).toBe('t');
    } finally {
      await own.resumeReplay(1);
    }
    await own.waitForCatchup();
    expect(await own.psql(1, `SELECT count(*) FROM ${table} WHERE id = 10`)).toBe('1');
  });
});
