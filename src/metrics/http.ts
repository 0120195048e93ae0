/**
 * The metrics/health HTTP endpoint (node:http, no framework):
 *   GET /metrics  Prometheus text exposition of `registry`
 *   GET /healthz  200 "ok" while the process runs (liveness)
 *   GET /readyz   200 "ready" when ready() says so, else 503 with the reason
 *                 (readiness: a primary is known and pgrelay accepts clients)
 * With a `dashboard`, every other path is offered to it first (the web
 * dashboard, src/dashboard/server.ts). Anything else: 404 (405 for methods
 * other than GET/HEAD on a known path).
 * Bounded: request/header/keep-alive timeouts, a connection cap, no request
 * bodies read (the dashboard reads its small form bodies itself). close() stops
 * listening and drops open connections.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export type Readiness = boolean | { ready: boolean; reason?: string };

export interface MetricsServerOptions {
  /** 0 = any free port (see MetricsServer.port). */
  port: number;
  /** Address to listen on (default '0.0.0.0'). */
  host?: string;
  registry: Registry;
  ready: () => Readiness | Promise<Readiness>;
  /** Max simultaneous connections (default 64). */
  maxConnections?: number;
  /** Serves the paths it knows (returns true); the others get 404. */
  dashboard?: {
    handle(req: http.IncomingMessage, res: http.ServerResponse, pathname: string, query: URLSearchParams): boolean;
  };
}

export interface MetricsServer {
  readonly port: number;
  readonly host: string;
  readonly server: http.Server;
  close(): Promise<void>;
}

const KNOWN = new Set(['/metrics', '/healthz', '/readyz']);

function send(
  res: http.ServerResponse,
  status: number,
  body: string,
  contentType = 'text/plain; charset=utf-8',
  head = false,
): void {
  res.writeHead(status, {
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(head ? undefined : body);
}

async function readiness(ready: MetricsServerOptions['ready']): Promise<{ ready: boolean; reason: string }> {
  try {
    const r = await ready();
    if (typeof r === 'boolean') return { ready: r, reason: r ? '' : 'not ready' };
    return { ready: r.ready, reason: r.reason ?? (r.ready ? '' : 'not ready') };
  } catch (e) {
    return { ready: false, reason: `readiness check failed: ${e instanceof Error ? e.message : String(e)}` };
  }
}

export function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const server = http.createServer(
    { requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000 },
    (req, res) => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const path = q < 0 ? url : url.slice(0, q);
      const method = req.method ?? 'GET';
      const head = method === 'HEAD';
      if (!KNOWN.has(path)) {
        if (opts.dashboard?.handle(req, res, path, new URLSearchParams(q < 0 ? '' : url.slice(q + 1)))) return;
        req.resume();
        send(res, 404, 'not found\n', undefined, head);
        return;
      }
      // no bodies expected: discard whatever comes
      req.resume();
      if (method !== 'GET' && !head) {
        res.setHeader('Allow', 'GET, HEAD');
        send(res, 405, 'method not allowed\n', undefined, false);
        return;
      }
      if (path === '/healthz') {
        send(res, 200, 'ok\n', undefined, head);
        return;
      }
      if (path === '/readyz') {
        void readiness(opts.ready).then((r) => {
          if (r.ready) send(res, 200, 'ready\n', undefined, head);
          else send(res, 503, `not ready: ${r.reason}\n`, undefined, head);
        });
        return;
      }
      opts.registry.metrics().then(
        (text) => send(res, 200, text, opts.registry.contentType, head),
        (e: unknown) =>
          send(res, 500, `metrics collection failed: ${e instanceof Error ? e.message : String(e)}\n`, undefined, head),
      );
    },
  );
  server.maxConnections = opts.maxConnections ?? 64;
  server.setTimeout(15_000, (sock) => sock.destroy());
  const host = opts.host ?? '0.0.0.0';
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    server.once('error', onError);
    server.listen(opts.port, host, () => {
      server.removeListener('error', onError);
      const addr = server.address() as AddressInfo;
      resolve({
        port: addr.port,
        host,
        server,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
