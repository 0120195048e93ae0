/** Proves the DevCluster fixture: roles, replication, replay pause. */
import { afterAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';

describe('DevCluster fixture', () => {
  const cluster = getCluster();
  const table = `fixture_smoke_${process.pid}_${Date.now()}`;

  afterAll(async () => {
    // Leave the shared cluster as we found it.
    for (const n of cluster.standbys) await cluster.resumeReplay(n.id).catch(() => undefined);
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
  });

  it('replicates a table created on the primary to the standbys', async () => {
    await cluster.psql(
      0,
      `CREATE TABLE ${table} (id int primary key, v text); INSERT INTO ${table} VALUES (1, 'one'), (2, 'two');`,
    );
    await cluster.waitForCatchup();
    expect(await cluster.psql(1, `SELECT count(*) FROM ${table}`)).toBe('2');
    expect(await cluster.psql(2, `SELECT v FROM ${table} WHERE id = 2`)).toBe('two');
    await expect(cluster.psql(1, `INSERT INTO ${table} VALUES (3, 'x')`)).rejects.toThrow(/read-only transaction/);
  });

  it('pauseReplay makes a standby lag until resumeReplay', async () => {
    await cluster.pauseReplay(1);
    try {
      await cluster.psql(0, `INSERT INTO ${table} VALUES (10, 'while paused')`);
      const lsn = await cluster.psql(0, 'SELECT pg_current_wal_lsn()');
      // node2 keeps replaying, node1 does not.
      await cluster.waitForCatchup();
      expect(await cluster.psql(2, `SELECT count(*) FROM ${table} WHERE id = 10`)).toBe('1');
      // node1 has received the WAL but not replayed it.
      const deadline = Date.now() + 10_000;
      while ((await cluster.psql(1, `SELECT pg_last_wal_receive_lsn() >= '${lsn}'::pg_lsn`)) !== 't') {
        if (Date.now() > deadline) throw new Error('node1 never received the WAL');
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await cluster.psql(1, `SELECT count(*) FROM ${table} WHERE id = 10`)).toBe('0');
      expect(await cluster.psql(1, `SELECT pg_last_wal_replay_lsn() < '${lsn}'::pg_lsn`)).toBe('t');
    } finally {
      await cluster.resumeReplay(1);
    }
    await cluster.waitForCatchup();
    expect(await cluster.psql(1, `SELECT count(*) FROM ${table} WHERE id = 10`)).toBe('1');
  });
});
