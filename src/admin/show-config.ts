/**
 * Configuration values as PGPOOL SHOW prints them: booleans on/off, lists
 * joined with their separator, integers with units in PostgreSQL SHOW style
 * ('5min', '256MB'), secrets '*****'. config/ loads and validates the values;
 * this module only turns them into reply text.
 */
import {
  PARAMS,
  SHOW_GROUPS,
  resolveParamName,
  type ParamDef,
  type ParamValue,
  type ShowGroup,
} from '../config/params.js';
import type { Config } from '../config/types.js';
import { BASE_UNIT_SIZE, MEMORY_UNITS, TIME_UNITS, isTimeUnit, type ParamUnit } from '../config/units.js';
import { backendFlagString, paramValue } from '../config/values.js';
import type { NodeState } from '../cluster/nodes.js';
import { normalisedWeights } from './result.js';

/** Largest unit first, so the first exact fit is the shortest spelling. */
const largestFirst = (units: Readonly<Record<string, number>>): ReadonlyArray<[string, number]> =>
  Object.entries(units).sort((a, b) => b[1] - a[1]);
const SHOW_TIME_UNITS = largestFirst(TIME_UNITS);
const SHOW_MEMORY_UNITS = largestFirst(MEMORY_UNITS);

/** PostgreSQL/pgpool SHOW style: the largest unit that represents the value exactly. */
function formatWithUnit(v: number, unit: ParamUnit): string {
  if (v <= 0) return String(v);
  const base = BASE_UNIT_SIZE[unit];
  const table = isTimeUnit(unit) ? SHOW_TIME_UNITS : SHOW_MEMORY_UNITS;
  const total = v * base;
  for (const [name, size] of table) {
    if (size < base) break;
    if (total % size === 0) return `${total / size}${name}`;
  }
  return `${v}${unit}`;
}

function formatValue(def: ParamDef, v: ParamValue): string {
  if (def.secret) return '*****';
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  if (Array.isArray(v)) return v.join(def.separator ?? ',');
  if (typeof v === 'number') {
    if (def.kind === 'int' && def.unit && def.scope === 'global') return formatWithUnit(v, def.unit);
    return String(v);
  }
  return v;
}

/**
 * A parameter's value as PGPOOL SHOW prints it. Accepts indexed names
 * (backend_hostname0, health_check_period1). undefined for unknown names or
 * absent nodes.
 */
export function formatParam(c: Config, name: string): string | undefined {
  const r = resolveParamName(name);
  if (!r) return undefined;
  const v = paramValue(c, r.def, r.index);
  return v === undefined ? undefined : formatValue(r.def, v);
}

export interface ShowRow {
  item: string;
  value: string;
  description: string;
}

function row(d: ParamDef, item: string, v: ParamValue): ShowRow {
  return { item, value: formatValue(d, v), description: d.description };
}

/** The row of a global parameter or of the health-check default. */
function defaultRow(c: Config, d: ParamDef): ShowRow {
  return row(d, d.name, paramValue(c, d, -1)!);
}

/** Rows of node `i` for each of `defs` it has. */
function nodeRows(c: Config, defs: readonly ParamDef[], i: number): ShowRow[] {
  const rows: ShowRow[] = [];
  for (const d of defs) {
    const v = paramValue(c, d, i);
    if (v !== undefined) rows.push(row(d, `${d.name}${i}`, v));
  }
  return rows;
}

/** The node rows of `defs`, node by node (all of node 0, then node 1, ...); health_check starts with its defaults. */
function scopeRows(c: Config, scope: 'backend' | 'health_check', defs: readonly ParamDef[]): ShowRow[] {
  const rows = scope === 'health_check' ? defs.map((d) => defaultRow(c, d)) : [];
  const nodes = scope === 'backend' ? c.backends.length : c.health_check_per_node.length;
  for (let i = 0; i < nodes; i++) rows.push(...nodeRows(c, defs, i));
  return rows;
}

function groupRows(c: Config, group: 'backend' | 'health_check'): ShowRow[] {
  const defs = PARAMS.filter((d) => d.scope === group);
  return scopeRows(c, group, defs);
}

/**
 * Rows (item | value | description) for `PGPOOL SHOW ALL`, `PGPOOL SHOW <group>`
 * (backend, health_check, watchdog, heartbeat) and `PGPOOL SHOW <array param>`
 * without index (e.g. backend_hostname, health_check_period). undefined when
 * `what` is none of these (a plain parameter: use formatParam).
 */
export function showParamRows(c: Config, what: string): ShowRow[] | undefined {
  const w = what.toLowerCase();
  if (w === 'all') {
    const globals = PARAMS.filter((d) => d.scope === 'global').map((d) => defaultRow(c, d));
    return [...groupRows(c, 'backend'), ...groupRows(c, 'health_check'), ...globals];
  }
  if ((SHOW_GROUPS as readonly string[]).includes(w)) {
    const gname = w as ShowGroup;
    if (gname === 'backend' || gname === 'health_check') return groupRows(c, gname);
    // pgpool's watchdog parameters that pgrelay has (coordination through etcd); heartbeat has none.
    if (gname === 'watchdog')
      return PARAMS.filter((d) => d.group === 'coordination' && !d.pgrelay).map((d) => defaultRow(c, d));
    return [];
  }
  const r = resolveParamName(w);
  if (!r || r.def.scope === 'global' || r.index >= 0) return undefined;
  return scopeRows(c, r.def.scope, [r.def]);
}

/** pgpool's get_config() enum numbering (SHOW pool_status prints enums as numbers). */
const ENUM_NUMBERS: Record<string, Record<string, number>> = {
  disable_load_balance_on_write: { off: 1, transaction: 2, trans_transaction: 3, always: 4, dml_adaptive: 5 },
  backend_clustering_mode: {
    streaming_replication: 1,
    native_replication: 2,
    logical_replication: 3,
    slony: 4,
    raw: 5,
    snapshot_isolation: 6,
  },
};

/** What SHOW pool_status reads of each node: the node table's view, not the configuration's. */
export type PoolStatusNode = Pick<NodeState, 'host' | 'port' | 'weight' | 'status' | 'delayBytes'>;

/**
 * SHOW pool_status (pgpool-II's SHOW POOL_STATUS): the global parameters as item/value/description
 * with booleans and enums as numbers, then per backend its hostname, port,
 * normalised weight (%f), data directory, status, standby delay, flag and
 * application name.
 */
export function poolStatusRows(cfg: Config, nodes: readonly PoolStatusNode[]): ShowRow[] {
  const rows: ShowRow[] = [];
  const all = showParamRows(cfg, 'all') ?? [];
  for (const r of all) {
    if (r.item.startsWith('backend_') || /^health_check_\w+\d+$/.test(r.item)) continue;
    let v = r.value;
    const nums = ENUM_NUMBERS[r.item];
    if (nums && v in nums) v = String(nums[v]);
    else if (v === 'on') v = '1';
    else if (v === 'off') v = '0';
    rows.push({ item: r.item, value: v, description: r.description });
  }
  const weights = normalisedWeights(nodes);
  const add = (item: string, value: string, description: string): void => {
    rows.push({ item, value, description });
  };
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!;
    const b = cfg.backends[i];
    const flag = backendFlagString(b ?? { allow_to_failover: true, always_primary: false });
    add(`backend_hostname${i}`, n.host, `backend #${i} hostname`);
    add(`backend_port${i}`, String(n.port), `backend #${i} port number`);
    add(`backend_weight${i}`, (weights[i] ?? 0).toFixed(6), `weight of backend #${i}`);
    add(`backend_data_directory${i}`, b?.data_directory ?? '', `data directory for backend #${i}`);
    add(`backend_status${i}`, n.status, `status of backend #${i}`);
    add(`standby_delay${i}`, String(Math.max(0, Math.round(n.delayBytes ?? 0))), `standby delay of backend #${i}`);
    add(`backend_flag${i}`, flag, `backend #${i} flag`);
    add(`backend_application_name${i}`, b?.application_name ?? '', `application_name for backend #${i}`);
  }
  return rows;
}
