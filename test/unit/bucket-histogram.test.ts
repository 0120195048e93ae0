/**
 * BucketHistogram (src/metrics/bucket-histogram.ts) exposes exactly what prom-client's
 * Histogram exposes for the same observations.
 */
import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { BucketHistogram } from '../../src/metrics/bucket-histogram.js';

const BOUNDS = [0.0001, 0.001, 0.01, 0.1, 1, 30];

describe('BucketHistogram', () => {
  it('renders the same text as prom-client Histogram, before and after observations and after reset', async () => {
    const a = new Registry();
    const b = new Registry();
    const ref = new Histogram({ name: 'x_wait_seconds', help: 'help text', buckets: BOUNDS, registers: [a] });
    const mine = new BucketHistogram('x_wait_seconds', 'help text', BOUNDS, b);
    expect(await b.metrics()).toBe(await a.metrics());
    for (const v of [0, 0, 0.0001, 0.00011, 0.5, 1, 29.9, 31, 1000, 0.01]) {
      ref.observe(v);
      mine.observe(v);
    }
    expect(await b.metrics()).toBe(await a.metrics());
    expect(await b.metrics()).toContain('x_wait_seconds_bucket{le="0.0001"} 3');
    a.resetMetrics();
    b.resetMetrics();
    ref.observe(0.2);
    mine.observe(0.2);
    expect(await b.metrics()).toBe(await a.metrics());
  });
});
