import { describe, it, expect } from 'vitest';
import {
  chooseLoadBalanceNode,
  nodeForRead,
  parseRedirectList,
  balancerConfigFrom,
  isLagging,
  type BalancerConfig,
  type NodeSnapshot,
  type RandomSource,
  type SessionFacts,
} from '../../src/router/balancer.js';

/** Deterministic PRNG (mulberry32) for distribution tests. */
function seeded(seed: number): RandomSource {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
/** Returns the given values in turn. */
function fixed(...values: number[]): RandomSource {
  let i = 0;
  return () => values[i++ % values.length];
}

function config(over: Partial<Parameters<typeof balancerConfigFrom>[0]> = {}): BalancerConfig {
  return balancerConfigFrom({
    delay_threshold: 0,
    delay_threshold_by_time: 0,
    prefer_lower_delay_standby: false,
    statement_level_load_balance: false,
    database_redirect_preference_list: '',
    app_name_redirect_preference_list: '',
    user_redirect_preference_list: '',
    ...over,
  });
}

const facts: SessionFacts = { database: 'app', application_name: 'psql', user: 'alice' };
const nodes = (): NodeSnapshot[] => [
  { id: 0, up: true, role: 'primary', weight: 1 },
  { id: 1, up: true, role: 'standby', weight: 2 },
  { id: 2, up: true, role: 'standby', weight: 1 },
];

function histogram(n: number, draw: () => number | null): Map<number | null, number> {
  const h = new Map<number | null, number>();
  for (let i = 0; i < n; i++) {
    const k = draw();
    h.set(k, (h.get(k) ?? 0) + 1);
  }
  return h;
}

describe('chooseLoadBalanceNode (pgpool load-balance node choice (select_load_balancing_node()))', () => {
  it('weighted draw over live nodes, primary included: 10k draws within ±2 percentage points', () => {
    const rnd = seeded(42);
    const N = 10_000;
    const h = histogram(N, () => chooseLoadBalanceNode(nodes(), config(), facts, rnd));
    // weights 1:2:1 → 25% / 50% / 25%
    expect(Math.abs((h.get(0) ?? 0) / N - 0.25)).toBeLessThan(0.02);
    expect(Math.abs((h.get(1) ?? 0) / N - 0.5)).toBeLessThan(0.02);
    expect(Math.abs((h.get(2) ?? 0) / N - 0.25)).toBeLessThan(0.02);
  });
  it('weight 0 is never chosen; down nodes are skipped', () => {
    const ns = nodes();
    ns[0].weight = 0;
    ns[2].up = false;
    const h = histogram(2000, () => chooseLoadBalanceNode(ns, config(), facts, seeded(1)));
    expect([...h.keys()]).toEqual([1]);
  });
  it('walks nodes in id order', () => {
    const ns = nodes().reverse();
    expect(chooseLoadBalanceNode(ns, config(), facts, fixed(0))).toBe(0);
    expect(chooseLoadBalanceNode(ns, config(), facts, fixed(0.26))).toBe(1);
    expect(chooseLoadBalanceNode(ns, config(), facts, fixed(0.999999))).toBe(2);
  });
  it('falls back to the primary (main node) when every live node has weight 0, null when none is up', () => {
    const ns = nodes().map((n) => ({ ...n, weight: 0 }));
    expect(chooseLoadBalanceNode(ns, config(), facts, fixed(0.5))).toBe(0);
    ns[0].up = false;
    expect(chooseLoadBalanceNode(ns, config(), facts, fixed(0.5))).toBe(1);
    expect(
      chooseLoadBalanceNode(
        ns.map((n) => ({ ...n, up: false })),
        config(),
        facts,
      ),
    ).toBeNull();
  });
});

describe('redirect preference lists (pgpool pattern lists)', () => {
  it('parses regex:node(ratio) entries', () => {
    const r = parseRedirectList('postgres:primary,mydb[01]:1(0.3),mydb2:standby, x{1,3}:2 ( 1 )');
    expect(r.map((e) => [e.source, e.target, e.ratio])).toEqual([
      ['postgres:primary', 'primary', 1],
      ['mydb[01]:1(0.3)', 1, 0.3],
      ['mydb2:standby', 'standby', 1],
      ['x{1,3}:2 ( 1 )', 2, 1],
    ]);
    expect(r[1].pattern.test('mydb0')).toBe(true);
    expect(r[1].pattern.test('mydb01')).toBe(false); // anchored
    expect(parseRedirectList('  ')).toEqual([]);
  });
  it.each([
    ['nocolon', /"nocolon"/],
    ['db:replica', /"db:replica"/],
    ['db:1(1.5)', /"db:1\(1\.5\)".*between 0 and 1/],
    ['db:1()', /"db:1\(\)"/],
    ['ok:0,(bad:1', /"\(bad:1"/],
    [':1', /":1"/],
  ])('rejects %j naming the entry', (list, err) => {
    expect(() => parseRedirectList(list, 'database_redirect_preference_list')).toThrow(err);
  });
  it('app_name beats database beats user; first matching entry wins', () => {
    const cfg = config({
      app_name_redirect_preference_list: 'psql:2',
      database_redirect_preference_list: 'app:1',
      user_redirect_preference_list: 'alice:primary',
    });
    expect(chooseLoadBalanceNode(nodes(), cfg, facts, fixed(0.5))).toBe(2);
    expect(chooseLoadBalanceNode(nodes(), cfg, { ...facts, application_name: 'x' }, fixed(0.5))).toBe(1);
    expect(chooseLoadBalanceNode(nodes(), cfg, { ...facts, application_name: 'x', database: 'y' }, fixed(0.5))).toBe(0);
    const first = config({ database_redirect_preference_list: 'a.*:2,app:1' });
    expect(chooseLoadBalanceNode(nodes(), first, facts, fixed(0.5))).toBe(2);
  });
  it('ratio: with r ≤ ratio the node, else excluded from the weighted draw', () => {
    const cfg = config({ database_redirect_preference_list: 'app:1(0.3)' });
    expect(chooseLoadBalanceNode(nodes(), cfg, facts, fixed(0.3))).toBe(1);
    // r = 0.9 > 0.3 → weighted over nodes 0 (w1) and 2 (w1); second draw 0.6 → node 2
    expect(chooseLoadBalanceNode(nodes(), cfg, facts, fixed(0.9, 0.6))).toBe(2);
    const rnd = seeded(7);
    const N = 10_000;
    const h = histogram(N, () => chooseLoadBalanceNode(nodes(), cfg, facts, rnd));
    expect(Math.abs((h.get(1) ?? 0) / N - 0.3)).toBeLessThan(0.02);
    expect(Math.abs((h.get(0) ?? 0) / N - 0.35)).toBeLessThan(0.02);
  });
  it('standby target: weighted among standbys with r ≤ ratio, else the primary', () => {
    const cfg = config({ database_redirect_preference_list: 'app:standby(0.5)' });
    expect(chooseLoadBalanceNode(nodes(), cfg, facts, fixed(0.4, 0.1))).toBe(1);
    expect(chooseLoadBalanceNode(nodes(), cfg, facts, fixed(0.4, 0.9))).toBe(2);
    expect(chooseLoadBalanceNode(nodes(), cfg, facts, fixed(0.6))).toBe(0);
  });
  it('a redirect to a down node falls through to the weighted draw', () => {
    const ns = nodes();
    ns[2].up = false;
    const cfg = config({ database_redirect_preference_list: 'app:2' });
    expect(chooseLoadBalanceNode(ns, cfg, facts, fixed(0.1, 0.0))).toBe(0);
  });
});

describe('nodeForRead (pgpool load-balance node choice (select_load_balancing_node()), pgpool delay_threshold rules)', () => {
  it('uses the session node; re-chooses when it is down', () => {
    const ns = nodes();
    expect(nodeForRead(2, ns, config(), facts, fixed(0.5))).toMatchObject({ node: 2, sessionLbNode: 2 });
    ns[2].up = false;
    const r = nodeForRead(2, ns, config(), facts, fixed(0.5));
    expect(r.node).toBe(1);
    expect(r.sessionLbNode).toBe(1);
    expect(r.reason).toMatch(/re-chosen/);
  });
  it('statement_level_load_balance draws for every read', () => {
    const cfg = config({ statement_level_load_balance: true });
    expect(nodeForRead(1, nodes(), cfg, facts, fixed(0.1)).node).toBe(0);
    expect(nodeForRead(1, nodes(), cfg, facts, fixed(0.9)).node).toBe(2);
  });
  it('delay_threshold (bytes): a lagging LB node sends the read to the primary', () => {
    const ns = nodes();
    ns[1].delayBytes = 20_000;
    const cfg = config({ delay_threshold: 10_000 });
    expect(isLagging(ns[1], cfg)).toBe(true);
    expect(nodeForRead(1, ns, cfg, facts)).toMatchObject({ node: 0, sessionLbNode: 1 });
    ns[1].delayBytes = 10_000;
    expect(nodeForRead(1, ns, cfg, facts).node).toBe(1);
  });
  it('delay_threshold_by_time (ms) replaces the byte threshold', () => {
    const ns = nodes();
    ns[1].delayBytes = 1e9;
    ns[1].delaySeconds = 0.2;
    const cfg = config({ delay_threshold: 10, delay_threshold_by_time: 500 });
    expect(nodeForRead(1, ns, cfg, facts).node).toBe(1);
    ns[1].delaySeconds = 0.6;
    expect(nodeForRead(1, ns, cfg, facts).node).toBe(0);
  });
  it('prefer_lower_delay_standby: least-lagging standby within the threshold becomes the LB node', () => {
    const ns: NodeSnapshot[] = [
      { id: 0, up: true, role: 'primary', weight: 1 },
      { id: 1, up: true, role: 'standby', weight: 1, delayBytes: 50_000 },
      { id: 2, up: true, role: 'standby', weight: 1, delayBytes: 300 },
      { id: 3, up: true, role: 'standby', weight: 1, delayBytes: 100 },
      { id: 4, up: true, role: 'standby', weight: 0, delayBytes: 0 },
    ];
    const cfg = config({ delay_threshold: 1000, prefer_lower_delay_standby: true });
    expect(nodeForRead(1, ns, cfg, facts, fixed(0.5))).toMatchObject({ node: 3, sessionLbNode: 3 });
    // All standbys over the threshold → primary.
    for (const n of ns) if (n.role === 'standby') n.delayBytes = 5000;
    expect(nodeForRead(1, ns, cfg, facts, fixed(0.5))).toMatchObject({ node: 0 });
  });
  it('the primary as LB node never lags; no live node → null', () => {
    const cfg = config({ delay_threshold: 1 });
    expect(nodeForRead(0, nodes(), cfg, facts).node).toBe(0);
    expect(
      nodeForRead(
        0,
        nodes().map((n) => ({ ...n, up: false })),
        cfg,
        facts,
      ).node,
    ).toBeNull();
  });
});
