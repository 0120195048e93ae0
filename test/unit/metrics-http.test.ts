import { describe, it, expect, afterEach } from 'vitest';
import http from 'node:http';
import { createMetrics } from '../../src/metrics/metrics.js';
import { startMetricsServer, type MetricsServer, type Readiness } from '../../src/metrics/http.js';

function get(
  port: number,
  path: string,
  method = 'GET',
): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describe('metrics HTTP server', () => {
  let srv: MetricsServer | undefined;
  afterEach(async () => {
    await srv?.close();
    srv = undefined;
  });

  it('serves /metrics, /healthz, /readyz and 404s', async () => {
    const m = createMetrics({ version: '0.1.0', defaultMetrics: false });
    let ready: Readiness = { ready: false, reason: 'no primary node' };
    srv = await startMetricsServer({ port: 0, host: '127.0.0.1', registry: m.registry, ready: () => ready });
    expect(srv.port).toBeGreaterThan(0);

    m.queryRouted('select', 0);
    const metrics = await get(srv.port, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.headers['content-type']).toContain('text/plain');
    expect(metrics.body).toContain('pgrelay_queries_total{kind="select",node="0"} 1');
    expect(metrics.body).toContain('# TYPE pgrelay_failovers_total counter');

    const health = await get(srv.port, '/healthz');
    expect(health.status).toBe(200);
    expect(health.body.trim()).toBe('ok');

    let r = await get(srv.port, '/readyz');
    expect(r.status).toBe(503);
    expect(r.body).toContain('no primary node');
    ready = true;
    r = await get(srv.port, '/readyz?verbose=1');
    expect(r.status).toBe(200);
    ready = false;
    r = await get(srv.port, '/readyz');
    expect(r.status).toBe(503);

    expect((await get(srv.port, '/')).status).toBe(404);
    expect((await get(srv.port, '/metricsx')).status).toBe(404);
    expect((await get(srv.port, '/metrics', 'POST')).status).toBe(405);
    const head = await get(srv.port, '/healthz', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });

  it('a throwing readiness check is 503, close() frees the port', async () => {
    const m = createMetrics({ defaultMetrics: false });
    srv = await startMetricsServer({
      port: 0,
      host: '127.0.0.1',
      registry: m.registry,
      ready: () => {
        throw new Error('boom');
      },
    });
    const r = await get(srv.port, '/readyz');
    expect(r.status).toBe(503);
    expect(r.body).toContain('boom');
    const port = srv.port;
    await srv.close();
    srv = undefined;
    await expect(get(port, '/healthz')).rejects.toThrow();
  });

  it('rejects when the port is taken', async () => {
    const m = createMetrics({ defaultMetrics: false });
    srv = await startMetricsServer({ port: 0, host: '127.0.0.1', registry: m.registry, ready: () => true });
    await expect(
      startMetricsServer({ port: srv.port, host: '127.0.0.1', registry: m.registry, ready: () => true }),
    ).rejects.toThrow(/EADDRINUSE/);
  });
});
