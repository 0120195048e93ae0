/**
 * A parameter's value, both ways: raw text (pgpool.conf, -o key=value, PGPOOL
 * SET) parsed and checked against its row of the parameter table, and a
 * loaded Config read back by parameter name (PGPOOL SHOW, the reload diff).
 * Parsing follows pgpool: integers as strtol with base 0 plus a unit suffix,
 * booleans in PostgreSQL's spellings, lists split on the row's separator.
 */
import { INT_MAX, MAX_BACKENDS, type ParamDef, type ParamValue } from './params.js';
import { DATABASE_KEYS, USER_KEYS, parsePoolSettings } from '../pool/pool-settings.js';
import type { BackendConfig, Config } from './types.js';
import { BASE_UNIT_SIZE, MEMORY_UNITS, TIME_UNITS, isTimeUnit, unitName, unitSuffixes } from './units.js';

type Parsed = { ok: true; value: ParamValue } | { ok: false; expected: string };

/** Parse a number as strtol(base 0)/strtod would, plus an optional unit. */
function parseNumberWithUnit(raw: string): { num: number; unit: string } | undefined {
  const m =
    /^\s*([+-]?)(0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$/.exec(raw);
  if (!m) return undefined;
  const sign = m[1] === '-' ? -1 : 1;
  const body = m[2]!;
  let num: number;
  if (/^0[xX]/.test(body)) num = parseInt(body.slice(2), 16);
  else if (/^0[0-7]+$/.test(body)) num = parseInt(body, 8);
  else if (/^0\d+$/.test(body))
    return undefined; // invalid octal, as strtol would stop at 8/9
  else num = Number(body);
  if (!Number.isFinite(num)) return undefined;
  return { num: sign * num, unit: m[3]! };
}

function intExpected(def: ParamDef): string {
  const range = `${def.min ?? 0}..${def.max ?? INT_MAX}`;
  if (def.unit) return `an integer ${range} in ${unitName(def.unit)}; units ${unitSuffixes(def.unit)} accepted`;
  return `an integer ${range}`;
}

function parseIntParam(def: ParamDef, raw: string): Parsed {
  const p = parseNumberWithUnit(raw);
  if (!p) return { ok: false, expected: intExpected(def) };
  let v = p.num;
  if (p.unit !== '') {
    if (!def.unit) return { ok: false, expected: intExpected(def) };
    const table = isTimeUnit(def.unit) ? TIME_UNITS : MEMORY_UNITS;
    const mult = table[p.unit];
    if (mult === undefined) return { ok: false, expected: intExpected(def) };
    v = (v * mult) / BASE_UNIT_SIZE[def.unit];
  }
  v = Math.round(v);
  if ((def.min !== undefined && v < def.min) || (def.max !== undefined && v > def.max)) {
    return { ok: false, expected: intExpected(def) };
  }
  return { ok: true, value: v };
}

function parseRealParam(def: ParamDef, raw: string): Parsed {
  const expected = `a number ${def.min ?? ''}..${def.max ?? ''}`;
  const t = raw.trim();
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) return { ok: false, expected };
  const v = Number(t);
  if (!Number.isFinite(v)) return { ok: false, expected };
  if ((def.min !== undefined && v < def.min) || (def.max !== undefined && v > def.max)) return { ok: false, expected };
  return { ok: true, value: v };
}

const TRUE_WORDS = new Set(['on', 'true', 'yes', '1']);
const FALSE_WORDS = new Set(['off', 'false', 'no', '0']);

export function parseBool(raw: string): boolean | undefined {
  const t = raw.trim().toLowerCase();
  if (TRUE_WORDS.has(t)) return true;
  if (FALSE_WORDS.has(t)) return false;
  return undefined;
}

/** pgpool's get_list_from_string_regex_delim: split on `;` not preceded by a backslash, keep escapes, `\'` → `'`. */
function splitRegexList(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '\\' && i + 1 < s.length) {
      cur += ch + s[i + 1];
      i++;
    } else if (ch === ';') {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out.map((t) => t.replace(/\\'/g, "'"));
}

function splitList(def: ParamDef, raw: string): string[] {
  const parts =
    def.name === 'primary_routing_query_pattern_list' ? splitRegexList(raw) : raw.split(def.separator ?? ',');
  return parts.map((p) => p.trim()).filter((p) => p !== '');
}

const REDIRECT_ENTRY = /^(.+):\s*(primary|standby|\d+)\s*(\(\s*(\d+(\.\d*)?|\.\d+)\s*\))?$/i;

function validateString(def: ParamDef, value: string): string | undefined {
  switch (def.name) {
    case 'log_destination': {
      const parts = value
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
      if (parts.length === 0 || parts.some((p) => !['stdout', 'stderr', 'file', 'syslog'].includes(p))) {
        return 'stdout, stderr, file (<logdir>/pgrelay.log) or syslog (written to stdout)';
      }
      return undefined;
    }
    case 'database_redirect_preference_list':
    case 'app_name_redirect_preference_list':
    case 'user_redirect_preference_list': {
      for (const e of value.split(',')) {
        const t = e.trim();
        if (t === '') continue;
        const m = REDIRECT_ENTRY.exec(t);
        if (!m) return 'comma-separated entries regex:node(ratio) where node is primary, standby or a node id';
        if (/^\d+$/.test(m[2]!) && Number(m[2]) >= MAX_BACKENDS) return `node ids 0..${MAX_BACKENDS - 1}`;
        if (m[4] !== undefined && Number(m[4]) > 1) return 'a ratio between 0 and 1';
      }
      return undefined;
    }
    case 'database_pool_settings':
    case 'user_pool_settings': {
      const r = parsePoolSettings(value, def.name === 'database_pool_settings' ? DATABASE_KEYS : USER_KEYS);
      return r.ok ? undefined : `comma-separated entries name:key=value …; ${r.error}`;
    }
    default:
      return undefined;
  }
}

/** Parsed backend_flag. */
export interface BackendFlags {
  allow_to_failover: boolean;
  always_primary: boolean;
}

export function parseBackendFlag(raw: string): BackendFlags | string {
  let allow: boolean | undefined;
  let always = false;
  for (const part of raw.split('|')) {
    const f = part.trim().toUpperCase();
    if (f === '') continue;
    if (f === 'ALLOW_TO_FAILOVER') {
      if (allow === false) return 'cannot set ALLOW_TO_FAILOVER and DISALLOW_TO_FAILOVER at the same time';
      allow = true;
    } else if (f === 'DISALLOW_TO_FAILOVER') {
      if (allow === true) return 'cannot set ALLOW_TO_FAILOVER and DISALLOW_TO_FAILOVER at the same time';
      allow = false;
    } else if (f === 'ALWAYS_PRIMARY') {
      always = true;
    } else {
      return `unknown backend flag "${part.trim()}" (expected ALLOW_TO_FAILOVER, DISALLOW_TO_FAILOVER, ALWAYS_PRIMARY joined with |)`;
    }
  }
  return { allow_to_failover: allow ?? true, always_primary: always };
}

/** Parse one raw value for a parameter. Returns an error message (without location) on failure. */
export function parseParamValue(
  def: ParamDef,
  raw: string,
  displayName: string = def.name,
): { value: ParamValue } | { error: string } {
  const bad = (expected: string): { error: string } => ({
    error: `invalid value for parameter "${displayName}": "${raw}" (expected ${expected})`,
  });
  switch (def.kind) {
    case 'bool': {
      const b = parseBool(raw);
      return b === undefined ? bad('a boolean: on/off, true/false, yes/no, 1/0') : { value: b };
    }
    case 'int': {
      const r = parseIntParam(def, raw);
      return r.ok ? { value: r.value } : bad(r.expected);
    }
    case 'real': {
      const r = parseRealParam(def, raw);
      return r.ok ? { value: r.value } : bad(r.expected);
    }
    case 'enum': {
      const t = raw.trim().toLowerCase();
      const v = def.aliases?.[t] ?? t;
      if (!def.values?.includes(v)) return bad(`one of: ${(def.values ?? []).join(', ')}`);
      return { value: v };
    }
    case 'list':
      return { value: splitList(def, raw) };
    case 'string': {
      if (def.backendField === 'flag') {
        const f = parseBackendFlag(raw);
        return typeof f === 'string'
          ? { error: `invalid value for parameter "${displayName}": "${raw}": ${f}` }
          : { value: raw };
      }
      const exp = validateString(def, raw);
      return exp ? bad(exp) : { value: raw };
    }
  }
}

/** backend_flag as pgpool writes it (the inverse of parseBackendFlag). */
export function backendFlagString(b: Pick<BackendConfig, 'allow_to_failover' | 'always_primary'>): string {
  const base = b.allow_to_failover ? 'ALLOW_TO_FAILOVER' : 'DISALLOW_TO_FAILOVER';
  return b.always_primary ? `${base}|ALWAYS_PRIMARY` : base;
}

/**
 * The value `c` holds for parameter `def`: index -1 for a global parameter or
 * the health-check default, a node id for a backend or per-node health-check
 * one. undefined when that combination does not exist (no such node, or an
 * index on a global parameter).
 */
export function paramValue(c: Config, def: ParamDef, index: number): ParamValue | undefined {
  if (def.scope === 'global') {
    if (index >= 0) return undefined;
    return (c as unknown as Record<string, ParamValue>)[def.name];
  }
  if (def.scope === 'health_check') {
    const hc = index < 0 ? c.health_check : c.health_check_per_node[index];
    return hc ? hc[def.hcField!] : undefined;
  }
  if (index < 0) return undefined;
  const b = c.backends[index];
  if (!b) return undefined;
  return def.backendField === 'flag' ? backendFlagString(b) : b[def.backendField!];
}
