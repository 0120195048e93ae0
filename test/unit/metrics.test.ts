import { describe, it, expect } from 'vitest';
import { parsePrometheus, type Family } from '../support/prometheus.js';
import { createMetrics, type MetricsSnapshotProvider } from '../../src/metrics/metrics.js';

function value(
  f: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
  sample = name,
): number | undefined {
  const fam = f.get(name);
  const s = fam?.samples.find((x) => x.name === sample && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value;
}

function snapshot(): MetricsSnapshotProvider {
  return {
    nodes: () => [
      { id: 0, host: 'pg0', port: 5432, status: 'up', role: 'primary', delayBytes: 0, delaySeconds: 0 },
      { id: 1, host: 'pg1', port: 5433, status: 'down', role: 'standby', delayBytes: 4096, delaySeconds: 1.5 },
    ],
    sessions: () => ({ active: 3, waiting: 1 }),
    backpressure: () => ({ bytesToClients: 1000, bytesToBackends: 20, clientReadsPaused: 1, backendReadsPaused: 2 }),
    backendConnections: () => [
      { nodeId: 0, user: 'u', database: 'd', inUse: true },
      { nodeId: 0, user: 'u', database: 'd', inUse: true },
      { nodeId: 1, user: 'u', database: 'd', inUse: false },
    ],
  };
}

describe('metrics', () => {
  it('exposition parses and follows naming conventions', async () => {
    const m = createMetrics({ version: '0.1.0', snapshot: snapshot() });
    m.queryRouted('select', 1);
    m.error('57P01');
    m.failover();
    m.clientBytesIn(10);
    m.backendBytesOut(0, 5);
    m.healthCheck(0, 'success', 0.01);
    m.slotWait(0.2);
    const text = await m.exposition();
    const fams = parsePrometheus(text);
    expect(fams.size).toBeGreaterThan(20);
    for (const f of fams.values()) {
      expect(f.name, f.name).toMatch(/^pgrelay_[a-z0-9_]+$/);
      expect((f.help ?? '').length, f.name).toBeGreaterThan(0);
      if (f.type === 'counter') expect(f.name, f.name).toMatch(/_total$/);
      // prom-client's own process gauges (nodejs_active_handles_total, ...) predate the convention
      else if (!/^pgrelay_(nodejs|process)_/.test(f.name)) expect(f.name, f.name).not.toMatch(/_total$/);
      // base units only
      expect(f.name, f.name).not.toMatch(/_(milliseconds|ms|kilobytes|kb|minutes)(_|$)/);
    }
    // Node.js process metrics with the prefix
    expect(fams.has('pgrelay_process_cpu_user_seconds_total')).toBe(true);
    expect(fams.has('pgrelay_nodejs_heap_size_total_bytes')).toBe(true);
  });

  it('hot-path counters flush into the exposition', async () => {
    const m = createMetrics({ defaultMetrics: false });
    for (let i = 0; i < 5; i++) m.queryRouted('select', 1);
    m.queryRouted('insert', 0);
    m.queryRouted('nonsense' as 'select', 0); // counted as other
    m.error('57P01');
    m.error('57014');
    m.error('42601');
    m.error('');
    m.failover();
    m.clientBytesIn(100);
    m.clientBytesOut(200);
    m.backendBytesIn(1, 300);
    m.backendBytesOut(1, 400);
    m.backendConnectionOpened(1);
    m.clientConnected();
    m.healthCheck(1, 'failure', 0.5);
    m.healthCheck(1, 'skip');
    let f = parsePrometheus(await m.exposition());
    expect(value(f, 'pgrelay_queries_total', { kind: 'select', node: '1' })).toBe(5);
    expect(value(f, 'pgrelay_queries_total', { kind: 'insert', node: '0' })).toBe(1);
    expect(value(f, 'pgrelay_queries_total', { kind: 'other', node: '0' })).toBe(1);
    expect(value(f, 'pgrelay_errors_total', { sqlstate_class: '57' })).toBe(2);
    expect(value(f, 'pgrelay_errors_total', { sqlstate_class: '42' })).toBe(1);
    expect(value(f, 'pgrelay_errors_total', { sqlstate_class: 'XX' })).toBe(1);
    expect(value(f, 'pgrelay_failovers_total')).toBe(1);
    expect(value(f, 'pgrelay_client_received_bytes_total')).toBe(100);
    expect(value(f, 'pgrelay_client_sent_bytes_total')).toBe(200);
    expect(value(f, 'pgrelay_backend_received_bytes_total', { node: '1' })).toBe(300);
    expect(value(f, 'pgrelay_backend_sent_bytes_total', { node: '1' })).toBe(400);
    expect(value(f, 'pgrelay_backend_connections_opened_total', { node: '1' })).toBe(1);
    expect(value(f, 'pgrelay_client_connections_total')).toBe(1);
    expect(value(f, 'pgrelay_health_checks_total', { node: '1', result: 'failure' })).toBe(1);
    expect(value(f, 'pgrelay_health_checks_total', { node: '1', result: 'skip' })).toBe(1);
    expect(
      value(f, 'pgrelay_health_check_duration_seconds', { node: '1' }, 'pgrelay_health_check_duration_seconds_count'),
    ).toBe(1);

    // counters keep accumulating across scrapes
    m.queryRouted('select', 1);
    f = parsePrometheus(await m.exposition());
    expect(value(f, 'pgrelay_queries_total', { kind: 'select', node: '1' })).toBe(6);
    expect(value(f, 'pgrelay_failovers_total')).toBe(1);
  });

  it('hot-path API does not throw on unknown nodes or odd input', async () => {
    const m = createMetrics({ defaultMetrics: false });
    expect(() => {
      m.queryRouted('select', 999);
      m.queryRouted('select', -1);
      m.queryRouted('select', Number.NaN);
      m.queryRouted('select', 1.5);
      m.backendBytesIn(500, 1);
      m.backendBytesOut(-3, 1);
      m.backendConnectionOpened(1000);
      m.healthCheck(4000, 'success', 0.1);
      m.error('x');
    }).not.toThrow();
    const f = parsePrometheus(await m.exposition());
    expect(value(f, 'pgrelay_queries_total', { kind: 'select', node: 'unknown' })).toBe(4);
    expect(value(f, 'pgrelay_backend_received_bytes_total', { node: 'unknown' })).toBe(1);
  });

  it('scrape-time gauges read the snapshot provider', async () => {
    const m = createMetrics({ version: '9.9.9', defaultMetrics: false });
    let f = parsePrometheus(await m.exposition());
    expect(f.get('pgrelay_node_status')?.samples).toEqual([]);
    expect(value(f, 'pgrelay_client_sessions', { state: 'active' })).toBe(0);
    m.setSnapshotProvider(snapshot());
    f = parsePrometheus(await m.exposition());
    expect(value(f, 'pgrelay_build_info', { version: '9.9.9' })).toBe(1);
    expect(value(f, 'pgrelay_node_info', { node: '1', host: 'pg1', port: '5433' })).toBe(1);
    expect(value(f, 'pgrelay_node_status', { node: '0', status: 'up' })).toBe(1);
    expect(value(f, 'pgrelay_node_status', { node: '0', status: 'down' })).toBe(0);
    expect(value(f, 'pgrelay_node_status', { node: '1', status: 'down' })).toBe(1);
    expect(value(f, 'pgrelay_node_role', { node: '0', role: 'primary' })).toBe(1);
    expect(value(f, 'pgrelay_node_role', { node: '1', role: 'primary' })).toBe(0);
    expect(value(f, 'pgrelay_replication_delay_bytes', { node: '1' })).toBe(4096);
    expect(value(f, 'pgrelay_replication_delay_seconds', { node: '1' })).toBe(1.5);
    expect(value(f, 'pgrelay_replication_delay_bytes', { node: '0' })).toBe(0);
    expect(value(f, 'pgrelay_backend_connections', { node: '0', user: 'u', database: 'd', state: 'in_use' })).toBe(2);
    expect(value(f, 'pgrelay_backend_connections', { node: '1', user: 'u', database: 'd', state: 'idle' })).toBe(1);
    expect(value(f, 'pgrelay_client_sessions', { state: 'active' })).toBe(3);
    expect(value(f, 'pgrelay_client_sessions', { state: 'waiting' })).toBe(1);
    expect(value(f, 'pgrelay_session_slot_wait_seconds', {}, 'pgrelay_session_slot_wait_seconds_count')).toBe(0);
    expect(value(f, 'pgrelay_buffered_bytes', { direction: 'to_client' })).toBe(1000);
    expect(value(f, 'pgrelay_buffered_bytes', { direction: 'to_backend' })).toBe(20);
    expect(value(f, 'pgrelay_sessions_backpressured', { side: 'client' })).toBe(1);
    expect(value(f, 'pgrelay_sessions_backpressured', { side: 'backend' })).toBe(2);
  });

  it('uses a dedicated registry (instances do not collide)', async () => {
    const a = createMetrics({ defaultMetrics: false });
    const b = createMetrics({ defaultMetrics: false });
    a.failover();
    expect(a.registry).not.toBe(b.registry);
    const json = await b.registry.getMetricsAsJSON();
    expect(json.find((x) => x.name === 'pgrelay_failovers_total')?.values[0]?.value).toBe(0);
  });
});

describe('metricsSnapshotFrom', () => {
  it('maps sessions and cached connections', async () => {
    const { metricsSnapshotFrom } = await import('../../src/metrics/metrics.js');
    const snap = metricsSnapshotFrom({
      nodes: {
        all: () => [{ id: 0, host: 'h', port: 1, status: 'up', role: 'primary', delayBytes: 0, delaySeconds: 0 }],
      },
      sessions: {
        all: () => [
          {
            user: 'u',
            database: 'd',
            backendConnections: [{ nodeId: 0 }],
            bufferedToClient: 300,
            bufferedToBackends: 7,
            clientReadsPaused: true,
            backendReadsPaused: false,
          },
          {
            user: 'v',
            database: 'd',
            backendConnections: [],
            bufferedToClient: 100,
            bufferedToBackends: 0,
            clientReadsPaused: false,
            backendReadsPaused: true,
          },
        ],
        size: 2,
      },
      cache: { entries: () => [{ nodeId: 1, params: new Map([['user', 'c']]) }] },
      waiting: () => 2,
    });
    expect(snap.sessions()).toEqual({ active: 2, waiting: 2 });
    expect(snap.backpressure()).toEqual({
      bytesToClients: 400,
      bytesToBackends: 7,
      clientReadsPaused: 1,
      backendReadsPaused: 1,
    });
    expect([...snap.backendConnections()]).toEqual([
      { nodeId: 0, user: 'u', database: 'd', inUse: true },
      { nodeId: 1, user: 'c', database: 'c', inUse: false },
    ]);
  });
});
