/**
 * pgpool's logging switches: log_connections with log_hostname (the client's
 * host name, as the system resolves the address — getnameinfo(), like pgpool
 * and PostgreSQL: /etc/hosts first, then DNS), notice_per_node_statement (a
 * NOTICE naming the node before each statement's reply), log_disconnections,
 * and log_destination = 'file' (JSON lines in <logdir>/pgrelay.log).
 */
import { promises as dns } from 'node:dns';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { runPsql, startProxy, type ProxyHandle } from '../support/proxy.js';
import { pollUntil } from '../support/wait.js';

const cluster = getCluster();
let proxy: ProxyHandle;

beforeAll(async () => {
  proxy = await startProxy({
    cluster,
    config: {
      log_connections: true,
      log_hostname: true,
      notice_per_node_statement: true,
      backend_weight0: 0,
      backend_weight1: 1,
      backend_weight2: 0,
    },
  });
});

afterAll(async () => {
  await proxy?.stop();
});

describe('logging switches', () => {
  it('notice_per_node_statement: a NOTICE names the node of each statement', async () => {
    const r = await runPsql(['-At', '-c', 'SELECT 1', '-c', 'CREATE TEMP TABLE lg_t (a int)'], {
      port: proxy.port,
      timeoutMs: 15_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('NOTICE:  DB node id: 1 statement: SELECT 1');
    expect(r.stderr).toContain('NOTICE:  DB node id: 0 statement: CREATE TEMP TABLE lg_t (a int)');
  });

  it('log_connections with log_hostname logs the client host name', async () => {
    const r = await runPsql(['-At', '-c', 'SELECT 1'], { port: proxy.port, timeoutMs: 15_000 });
    expect(r.code, r.stderr).toBe(0);
    const line = await proxy.waitForLog(
      /"msg":"connection received"[^\n]*"hostname"|"hostname"[^\n]*"msg":"connection received"/,
      10_000,
    );
    const entry = JSON.parse(line.slice(line.indexOf('{'))) as { remote?: string; hostname?: string };
    expect(entry.remote).toMatch(/^127\.0\.0\.1:\d+$/);
    // The system's reverse lookup of the client address on this machine (getnameinfo: e.g. "localhost"
    // from /etc/hosts), computed here the same way.
    const expected = (await dns.lookupService('127.0.0.1', 0)).hostname;
    expect(expected, 'getnameinfo(127.0.0.1) on this machine').not.toBe('');
    expect(entry.hostname, `log line: ${line}`).toBe(expected);
  });

  it("log_destination = 'file' writes JSON lines to <logdir>/pgrelay.log; log_disconnections logs each session's end", async () => {
    const p = await startProxy({
      cluster,
      config: { log_destination: 'file', log_connections: true, log_disconnections: true, load_balance_mode: false },
    });
    try {
      const file = path.join(p.dir, 'pgrelay.log');
      const r = await runPsql(['-At', '-c', 'SELECT 1'], { port: p.port, timeoutMs: 15_000 });
      expect(r.code, r.stderr).toBe(0);
      const entries = await pollUntil(
        () =>
          (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '')
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .map((l) => JSON.parse(l) as Record<string, unknown>),
        (es) => es.some((e) => e.msg === 'disconnection'),
        { what: `a disconnection line in ${file}` },
      );
      const received = entries.find((e) => e.msg === 'connection received');
      const gone = entries.find((e) => e.msg === 'disconnection');
      expect(received?.remote).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(gone?.remote).toBe(received?.remote);
      expect(gone?.session).toBe(received?.session);
      expect(typeof gone?.durationMs).toBe('number');
      // Nothing of it on stdout.
      expect(p.logs()).not.toMatch(/"msg":"(connection received|disconnection)"/);
    } finally {
      await p.stop();
    }
  });
});
