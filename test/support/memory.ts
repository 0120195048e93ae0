/**
 * pgrelay's JavaScript memory (V8 heap in use plus external buffers), read from its
 * Prometheus endpoint, and a sampler that keeps the largest value seen.
 */
import http from 'node:http';
import { parsePrometheus } from './prometheus.js';

function get(port: number, path: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

function value(families: ReturnType<typeof parsePrometheus>, name: string): number {
  const v = families.get(name)?.samples[0]?.value;
  if (v === undefined || !Number.isFinite(v)) throw new Error(`no ${name} in /metrics`);
  return v;
}

/** Heap used + external memory of the pgrelay process, in bytes. */
export async function jsMemory(metricsPort: number): Promise<number> {
  const f = parsePrometheus(await get(metricsPort, '/metrics', 10_000));
  return value(f, 'pgrelay_nodejs_heap_size_used_bytes') + value(f, 'pgrelay_nodejs_external_memory_bytes');
}

/** One sample of a metric, by name and labels (undefined when absent). */
export async function metricValue(
  metricsPort: number,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  const f = parsePrometheus(await get(metricsPort, '/metrics', 10_000));
  return f.get(name)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

/** Samples jsMemory every `everyMs` until stopped; `stop()` resolves with the largest value seen. */
export function sampleMemory(metricsPort: number, everyMs = 250): { stop: () => Promise<number> } {
  let max = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        max = Math.max(max, await jsMemory(metricsPort));
      } catch {
        // the process is busy or gone: the caller checks it
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return max;
    },
  };
}
