import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  expandPlaceholders,
  newMainCandidate,
  runShellCommand,
  shellValue,
  type PlaceholderValues,
} from '../../src/cluster/failover.js';
import { formatStatusFile, parseStatusFile, readStatusFile, writeStatusFile } from '../../src/cluster/status-file.js';
import { HealthStatsRecorder } from '../../src/cluster/health.js';
import { parseLsn } from '../../src/protocol/lsn.js';
import { mainNodeId, type NodeStatus } from '../../src/cluster/nodes.js';

const values: PlaceholderValues = {
  node: { id: 0, host: '127.0.0.1', port: 5432, dataDir: '/var/lib/pg/node0' },
  newMain: { id: 1, host: 'db1.example', port: 5433, dataDir: '/var/lib/pg/node1' },
  oldMainId: 0,
  oldPrimary: { id: 0, host: '127.0.0.1', port: 5432, dataDir: '/var/lib/pg/node0' },
};

describe('failover_command placeholders', () => {
  it("expands every placeholder without pgpool's leading space", () => {
    expect(expandPlaceholders('f.sh %d %h %p %D %m %H %M %P %r %R %N %S', values)).toBe(
      'f.sh 0 127.0.0.1 5432 /var/lib/pg/node0 1 db1.example 0 0 5433 /var/lib/pg/node1 127.0.0.1 5432',
    );
  });

  it('%% is a literal %, unknown %x is dropped, a trailing % is kept', () => {
    expect(expandPlaceholders('a%%b', values)).toBe('a%b');
    expect(expandPlaceholders('x %x %q y', values)).toBe('x   y');
    expect(expandPlaceholders('50%', values)).toBe('50%');
    expect(expandPlaceholders('%%d', values)).toBe('%d');
  });

  it('no new main / old primary: -1 ids and "" for strings, positions kept', () => {
    const v: PlaceholderValues = { node: { id: 2, host: 'h', port: 1, dataDir: '' }, oldMainId: -1 };
    expect(expandPlaceholders('%d %D %m %H %r %R %P %N %S %M', v)).toBe('2 "" -1 "" "" "" -1 "" "" -1');
  });

  it('quotes values that the shell would split or interpret', () => {
    expect(shellValue('/data/my dir')).toBe("'/data/my dir'");
    expect(shellValue("it's")).toBe(`'it'\\''s'`);
    expect(shellValue('$(rm -rf /)')).toBe("'$(rm -rf /)'");
    expect(shellValue('host-1.example.com')).toBe('host-1.example.com');
    const v: PlaceholderValues = { ...values, node: { ...values.node, dataDir: '/data/my dir' } };
    expect(expandPlaceholders('echo %D', v)).toBe("echo '/data/my dir'");
  });

  it('runs through /bin/sh -c and the expanded arguments arrive intact', async () => {
    const v: PlaceholderValues = { ...values, node: { ...values.node, dataDir: '/data/my dir' } };
    const r = await runShellCommand(expandPlaceholders('printf "[%%s]" %d %D %H %R', v), 5000);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('[0][/data/my dir][db1.example][/var/lib/pg/node1]');
  });

  it('kills a command that runs past its timeout (with its children)', async () => {
    const t0 = Date.now();
    const r = await runShellCommand('sleep 30 & sleep 30; echo never', 300);
    expect(r.timedOut).toBe(true);
    expect(r.code).toBe(null);
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});

describe('new main node candidate', () => {
  const nodes = (st: NodeStatus[]): Array<{ id: number; status: NodeStatus }> =>
    st.map((status, id) => ({ id, status }));
  it('is the lowest-id live node once the failed ones are removed', () => {
    expect(newMainCandidate(nodes(['up', 'up', 'up']), new Set([0]))).toBe(1);
    expect(newMainCandidate(nodes(['up', 'down', 'waiting']), new Set([0]))).toBe(2);
    expect(newMainCandidate(nodes(['up', 'up', 'up']), new Set([1]))).toBe(0);
    expect(newMainCandidate(nodes(['up', 'down']), new Set([0]))).toBe(-1);
  });
  it('is the promoted node for a promote request (when live)', () => {
    expect(newMainCandidate(nodes(['up', 'up', 'up']), new Set([0]), 2)).toBe(2);
    expect(newMainCandidate(nodes(['up', 'up', 'down']), new Set([0]), 2)).toBe(1);
  });
  it('main node = lowest live id', () => {
    expect(mainNodeId(nodes(['down', 'unused', 'waiting', 'up']))).toBe(2);
    expect(mainNodeId(nodes(['down']))).toBe(-1);
  });
});

describe('pgpool_status file', () => {
  it('round-trips, waiting saved as up', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-status-'));
    try {
      const file = path.join(dir, 'sub', 'pgpool_status');
      writeStatusFile(file, ['up', 'down', 'waiting', 'unused']);
      expect(fs.readFileSync(file, 'utf8')).toBe('up\ndown\nup\nunused\n');
      expect(readStatusFile(file)).toEqual(['up', 'down', 'up', 'unused']);
      expect(readStatusFile(path.join(dir, 'missing'))).toBeUndefined();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it('parses pgpool-written files leniently', () => {
    expect(parseStatusFile('up\r\nDOWN\ngarbage\n')).toEqual(['up', 'down', undefined]);
    expect(formatStatusFile([])).toBe('');
  });
});

describe('health check stats', () => {
  it('counts checks, retries, skips and durations', () => {
    const r = new HealthStatsRecorder();
    r.checked(true, 0, 10, 1000);
    r.checked(false, 2, 30, 2000);
    r.skipped(3000);
    const s = r.snapshot();
    expect(s).toMatchObject({
      total_count: 3,
      success_count: 1,
      fail_count: 1,
      skip_count: 1,
      retry_count: 2,
      average_retry_count: 1,
      max_retry_count: 2,
      max_duration: 30,
      min_duration: 10,
      average_duration: 20,
      last_health_check: 3000,
      last_successful_health_check: 1000,
      last_failed_health_check: 2000,
      last_skip_health_check: 3000,
    });
  });
});

describe('LSN parsing', () => {
  it('parses pg_lsn text', () => {
    expect(parseLsn('0/3000060')).toBe(0x3000060n);
    expect(parseLsn('1/0')).toBe(1n << 32n);
    expect(parseLsn(null)).toBeUndefined();
    expect(parseLsn('x')).toBeUndefined();
  });
});
