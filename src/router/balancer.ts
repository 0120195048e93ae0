/**
 * Load-balance node choice as pgpool-II makes it (database_redirect_preference_list
 * and app_name_redirect_preference_list, backend_weight, delay_threshold). Pure:
 * the node snapshot, the random source and the session facts are passed in.
 */
import type { NodeRole } from '../cluster/nodes.js';

export interface NodeSnapshot {
  id: number;
  up: boolean;
  role: NodeRole;
  /** backend_weight as configured (any non-negative scale; pgpool normalises). */
  weight: number;
  /** Replay lag behind the primary in bytes (last sr_check sample); undefined = not measured = 0, as pgpool. */
  delayBytes?: number;
  /** Replay lag in seconds (pg_stat_replication.replay_lag); undefined = not measured = 0. */
  delaySeconds?: number;
}

export type RedirectTarget = number | 'primary' | 'standby';

export interface RedirectRule {
  /** The entry as written, for logs. */
  source: string;
  /** The entry's regex, anchored `^(?:…)$`. */
  pattern: RegExp;
  target: RedirectTarget;
  /** Probability (0–1) of honouring the rule; default 1. */
  ratio: number;
}

export interface BalancerConfig {
  /** Bytes; 0 = off. Ignored when delay_threshold_by_time > 0 (pgpool's delay_threshold rules). */
  delay_threshold: number;
  /** Milliseconds; 0 = off. */
  delay_threshold_by_time: number;
  prefer_lower_delay_standby: boolean;
  /** Choose the LB node for every balanced read instead of once per session (pgpool's select_load_balancing_node()). */
  statement_level_load_balance: boolean;
  app_name_redirect: readonly RedirectRule[];
  database_redirect: readonly RedirectRule[];
  user_redirect: readonly RedirectRule[];
}

export interface SessionFacts {
  database: string;
  /** From the startup packet only (pgpool's pattern lists). */
  application_name: string;
  user: string;
}

/** Uniform in [0, 1). */
export type RandomSource = () => number;

export interface BalancerSourceConfig {
  delay_threshold: number;
  delay_threshold_by_time: number;
  prefer_lower_delay_standby: boolean;
  statement_level_load_balance: boolean;
  database_redirect_preference_list: string;
  app_name_redirect_preference_list: string;
  user_redirect_preference_list: string;
}

/** Build a BalancerConfig from the configuration (parses the redirect lists; throws on a bad entry). */
export function balancerConfigFrom(cfg: BalancerSourceConfig): BalancerConfig {
  return {
    delay_threshold: cfg.delay_threshold,
    delay_threshold_by_time: cfg.delay_threshold_by_time,
    prefer_lower_delay_standby: cfg.prefer_lower_delay_standby,
    statement_level_load_balance: cfg.statement_level_load_balance,
    app_name_redirect: parseRedirectList(cfg.app_name_redirect_preference_list, 'app_name_redirect_preference_list'),
    database_redirect: parseRedirectList(cfg.database_redirect_preference_list, 'database_redirect_preference_list'),
    user_redirect: parseRedirectList(cfg.user_redirect_preference_list, 'user_redirect_preference_list'),
  };
}

/** Split on commas that are not inside (), [] or {} (a regex may contain `{1,3}`). */
function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length) {
      cur += c + s[i + 1];
      i++;
      continue;
    }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if ((c === ')' || c === ']' || c === '}') && depth > 0) depth--;
    if (c === ',' && depth === 0) {
      out.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  out.push(cur);
  return out;
}

const TARGET_RE = /^\s*(\d+|primary|standby)\s*(?:\(\s*([^)]*?)\s*\))?\s*$/i;

/**
 * Parse a pgpool `regex:node(ratio)` list, e.g. `postgres:primary,mydb[01]:1(0.3),mydb2:standby`.
 * node is a node id, `primary` or `standby`; ratio is 0–1 (default 1). Throws an Error naming the bad entry.
 */
export function parseRedirectList(str: string, listName = 'redirect preference list'): RedirectRule[] {
  const rules: RedirectRule[] = [];
  if (str.trim() === '') return rules;
  for (const raw of splitTopLevel(str)) {
    const entry = raw.trim();
    if (entry === '') continue;
    const colon = entry.lastIndexOf(':');
    if (colon <= 0) throw new Error(`${listName}: entry "${entry}" is not of the form regex:node(ratio)`);
    const re = entry.slice(0, colon).trim();
    const m = TARGET_RE.exec(entry.slice(colon + 1));
    if (m === null) {
      throw new Error(
        `${listName}: entry "${entry}": node must be a node id, "primary" or "standby", optionally followed by (ratio)`,
      );
    }
    const t = m[1].toLowerCase();
    const target: RedirectTarget = t === 'primary' || t === 'standby' ? t : Number(t);
    let ratio = 1;
    if (m[2] !== undefined) {
      ratio = Number(m[2]);
      if (m[2] === '' || !Number.isFinite(ratio) || ratio < 0 || ratio > 1) {
        throw new Error(`${listName}: entry "${entry}": ratio must be a number between 0 and 1`);
      }
    }
    let pattern: RegExp;
    try {
      pattern = new RegExp(`^(?:${re})$`);
    } catch (err) {
      throw new Error(`${listName}: entry "${entry}": invalid regular expression: ${(err as Error).message}`);
    }
    rules.push({ source: entry, pattern, target, ratio });
  }
  return rules;
}

/** Priority app_name > database > user; the first matching entry of a list wins (pgpool's pattern lists). */
export function matchRedirect(cfg: BalancerConfig, facts: SessionFacts): RedirectRule | undefined {
  return (
    firstMatch(cfg.app_name_redirect, facts.application_name) ??
    firstMatch(cfg.database_redirect, facts.database) ??
    firstMatch(cfg.user_redirect, facts.user)
  );
}

function firstMatch(rules: readonly RedirectRule[], value: string): RedirectRule | undefined {
  for (const r of rules) if (r.pattern.test(value)) return r;
  return undefined;
}

function isUp(n: NodeSnapshot): boolean {
  return n.up;
}

function liveNode(nodes: readonly NodeSnapshot[], id: number): NodeSnapshot | undefined {
  for (const n of nodes) if (n.id === id && n.up) return n;
  return undefined;
}

function livePrimary(nodes: readonly NodeSnapshot[]): NodeSnapshot | undefined {
  for (const n of nodes) if (n.up && n.role === 'primary') return n;
  return undefined;
}

/** Which of the candidates a weighted draw may pick (besides weight > 0). */
interface DrawFilter {
  /** Only live nodes. */
  live?: boolean;
  /** Only standbys. */
  standby?: boolean;
  /** Not this node id. */
  exclude?: number;
}

const ANY: DrawFilter = {};
const LIVE: DrawFilter = { live: true };
const LIVE_STANDBY: DrawFilter = { live: true, standby: true };

function drawable(n: NodeSnapshot, f: DrawFilter): boolean {
  return (
    n.weight > 0 && (f.live !== true || n.up) && (f.standby !== true || n.role === 'standby') && n.id !== f.exclude
  );
}

/**
 * Weighted draw over the `candidates` that pass `f` (weight > 0), in id order; null if no
 * weight. Allocates nothing for candidates given in id order (the node snapshot): pool_mode =
 * transaction draws once per transaction. pgpool's select_load_balancing_node()
 */
function weighted(candidates: readonly NodeSnapshot[], random: RandomSource, f: DrawFilter = ANY): NodeSnapshot | null {
  let total = 0;
  let ordered = true;
  for (let i = 0; i < candidates.length; i++) {
    const n = candidates[i];
    if (i > 0 && candidates[i - 1].id > n.id) ordered = false;
    if (drawable(n, f)) total += n.weight;
  }
  if (total <= 0) return null;
  const sorted = ordered ? candidates : [...candidates].sort((a, b) => a.id - b.id);
  const r = random() * total;
  let acc = 0;
  let last: NodeSnapshot | null = null;
  for (const n of sorted) {
    if (!drawable(n, f)) continue;
    acc += n.weight;
    last = n;
    if (r < acc) return n;
  }
  return last; // r rounding at the top end
}

/** pgpool's fallback when nothing has weight: the primary, else the lowest live id ("main node"). */
function mainNode(nodes: readonly NodeSnapshot[]): number | null {
  const p = livePrimary(nodes);
  if (p !== undefined) return p.id;
  let best: number | null = null;
  for (const n of nodes) if (n.up && (best === null || n.id < best)) best = n.id;
  return best;
}

/**
 * Choose the session's load-balance node (pgpool's pattern lists, pgpool's select_load_balancing_node()): redirect rules first
 * (with probability `ratio`), then a weighted random draw over live nodes,
 * the primary included with its own weight; weight 0 is never drawn. Returns
 * null when no node is up.
 */
export function chooseLoadBalanceNode(
  nodes: readonly NodeSnapshot[],
  cfg: BalancerConfig,
  facts: SessionFacts,
  random: RandomSource = Math.random,
): number | null {
  if (!nodes.some(isUp)) return null;
  const rule = matchRedirect(cfg, facts);
  let exclude: number | undefined;
  if (rule !== undefined) {
    const r = random();
    if (rule.target === 'standby') {
      // pgpool's pattern lists: with r ≤ ratio pick among standbys by weight, else the primary.
      if (r <= rule.ratio) {
        const s = weighted(nodes, random, LIVE_STANDBY);
        if (s !== null) return s.id;
      } else {
        const p = livePrimary(nodes);
        if (p !== undefined) return p.id;
      }
    } else {
      const id = rule.target === 'primary' ? livePrimary(nodes)?.id : rule.target;
      if (id !== undefined && liveNode(nodes, id) !== undefined) {
        if (r <= rule.ratio) return id;
        exclude = id; // pgpool's pattern lists: otherwise exclude it and fall through to the weighted choice
      }
    }
  }
  const w = weighted(nodes, random, exclude === undefined ? LIVE : { live: true, exclude });
  if (w !== null) return w.id;
  if (exclude !== undefined) return exclude;
  return mainNode(nodes);
}

/** Does this node lag past the configured threshold? (pgpool's delay_threshold rules; the primary never lags) */
export function isLagging(n: NodeSnapshot, cfg: BalancerConfig): boolean {
  if (n.role === 'primary') return false;
  if (cfg.delay_threshold_by_time > 0) return (n.delaySeconds ?? 0) * 1000 > cfg.delay_threshold_by_time;
  if (cfg.delay_threshold > 0) return (n.delayBytes ?? 0) > cfg.delay_threshold;
  return false;
}

function delayOf(n: NodeSnapshot, cfg: BalancerConfig): number {
  return cfg.delay_threshold_by_time > 0 ? (n.delaySeconds ?? 0) : (n.delayBytes ?? 0);
}

export interface ReadTarget {
  /** Node that runs this read; null when no node is up. */
  node: number | null;
  /** The session's LB node after this read (changed when the old one is down, or switched by prefer_lower_delay_standby). */
  sessionLbNode: number | null;
  reason: string;
}

/**
 * Where a load-balanced read runs: the session's LB node unless it is down
 * (choose again), or lags past the threshold (→ the primary, or with
 * prefer_lower_delay_standby → the least-lagging standby within the threshold,
 * weighted among ties, which becomes the session's LB node). With
 * statement_level_load_balance a fresh node is drawn for every read.
 */
export function nodeForRead(
  sessionLbNode: number | null,
  nodes: readonly NodeSnapshot[],
  cfg: BalancerConfig,
  facts: SessionFacts,
  random: RandomSource = Math.random,
): ReadTarget {
  let lbId = sessionLbNode;
  let reason = 'session load-balance node';
  if (cfg.statement_level_load_balance) {
    lbId = chooseLoadBalanceNode(nodes, cfg, facts, random);
    reason = 'statement-level load balance';
  } else if (lbId === null || liveNode(nodes, lbId) === undefined) {
    lbId = chooseLoadBalanceNode(nodes, cfg, facts, random);
    reason = 'load-balance node re-chosen (previous one down)';
  }
  if (lbId === null) return { node: null, sessionLbNode: null, reason: 'no live node' };
  const lb = liveNode(nodes, lbId) as NodeSnapshot;
  if (!isLagging(lb, cfg)) return { node: lbId, sessionLbNode: lbId, reason };

  const primary = livePrimary(nodes);
  if (cfg.prefer_lower_delay_standby) {
    let best = Infinity;
    const fresh = nodes.filter((n) => n.up && n.role === 'standby' && n.weight > 0 && !isLagging(n, cfg));
    for (const n of fresh) best = Math.min(best, delayOf(n, cfg));
    const ties = fresh.filter((n) => delayOf(n, cfg) === best);
    const pick = weighted(ties, random);
    if (pick !== null) {
      return {
        node: pick.id,
        sessionLbNode: pick.id,
        reason: `node ${lbId} lags; switched to least-lagging standby ${pick.id}`,
      };
    }
  }
  if (primary === undefined) {
    // No primary to fall back to: a lagging standby still answers.
    return { node: lbId, sessionLbNode: lbId, reason: `node ${lbId} lags but no primary is up` };
  }
  return {
    node: primary.id,
    sessionLbNode: lbId,
    reason: `node ${lbId} lags past the delay threshold; read on the primary`,
  };
}
