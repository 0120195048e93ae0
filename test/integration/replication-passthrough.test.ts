/**
 * Replication connections through pgrelay (issue: driver conformance, item 8): passed
 * through to the primary untouched, authenticated like any client — the replication
 * protocol's IDENTIFY_SYSTEM answers as directly (physical and logical), and
 * pg_basebackup takes a backup through pgrelay. With allow_replication_connections =
 * off they are refused before authentication with a clear error.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { pgTool } from '../support/env.js';
import { type ProxyHandle, runCommand, startProxy } from '../support/proxy.js';
import { RawClient, closeAllRaw, errorFields, queryMessage, startupMessage } from '../support/raw.js';

const cluster = getCluster();
let proxy: ProxyHandle;
let refusing: ProxyHandle;

beforeAll(async () => {
  proxy = await startProxy({ cluster, config: { log_min_messages: 'warning' } });
  refusing = await startProxy({
    cluster,
    config: { log_min_messages: 'warning', allow_replication_connections: false },
  });
});

afterAll(async () => {
  closeAllRaw();
  expect(await proxy?.stop()).toBe(0);
  expect(await refusing?.stop()).toBe(0);
});

/** Start-up with replication=<mode>, then IDENTIFY_SYSTEM: the row (system id, timeline, …) or the error. */
async function identifySystem(port: number, mode: string): Promise<{ row?: string[]; error?: string }> {
  const raw = await RawClient.connect(port);
  try {
    raw.send(startupMessage({ user: 'postgres', database: 'postgres', replication: mode }));
    const st = await raw.readStartupReply(15_000);
    if (st.error) return { error: `${st.error.C}: ${st.error.M}` };
    const r = await raw.query('IDENTIFY_SYSTEM', 15_000);
    if (r.errors.length > 0) return { error: `${r.errors[0].C}: ${r.errors[0].M}` };
    return { row: r.rows[0]?.map((v) => v ?? '') };
  } finally {
    raw.destroy();
  }
}

describe('replication connections', () => {
  for (const mode of ['true', 'database']) {
    it(`replication=${mode}: IDENTIFY_SYSTEM through pgrelay answers the primary's system id and timeline, as directly`, async () => {
      const direct = await identifySystem(cluster.node(cluster.primaryId).port, mode);
      const through = await identifySystem(proxy.port, mode);
      expect(direct.error).toBeUndefined();
      expect(through.error).toBeUndefined();
      // systemid and timeline are the same; the WAL position moves on.
      expect(through.row?.slice(0, 2)).toEqual(direct.row?.slice(0, 2));
      expect(through.row?.[3]).toBe(direct.row?.[3]);
    });
  }

  it('pg_basebackup takes a backup through pgrelay', { timeout: 120_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-basebackup-'));
    try {
      const r = await runCommand(
        pgTool('pg_basebackup'),
        [
          '-h',
          '127.0.0.1',
          '-p',
          String(proxy.port),
          '-U',
          'postgres',
          '-D',
          path.join(dir, 'data'),
          '-X',
          'none',
          '-c',
          'fast',
        ],
        { timeoutMs: 100_000 },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(fs.existsSync(path.join(dir, 'data', 'PG_VERSION'))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('allow_replication_connections = off refuses them before authentication (0A000)', async () => {
    const raw = await RawClient.connect(refusing.port);
    try {
      raw.send(startupMessage({ user: 'postgres', database: 'postgres', replication: 'database' }));
      const m = await raw.next(10_000);
      expect(m?.type).toBe('E');
      const f = errorFields(m?.body ?? Buffer.alloc(0));
      expect(f.C).toBe('0A000');
      expect(f.M).toMatch(/allow_replication_connections = off/);
    } finally {
      raw.destroy();
    }
  });

  it('an ordinary session still works next to them', async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      expect((await raw.startup({ user: 'postgres', database: 'postgres', replication: 'off' })).ok).toBe(true);
      raw.send(queryMessage('select 1'));
      const r = await raw.collect('Z', 10_000);
      expect(r.map((m) => m.type).join('')).toBe('TDCZ');
    } finally {
      raw.destroy();
    }
  });
});
