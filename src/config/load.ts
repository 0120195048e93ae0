/**
 * pgpool.conf parser, validation, defaults, command-line overrides and reload
 * diff. How values are shown (PGPOOL SHOW) is admin/show-config.ts.
 *
 * Lexing follows pgpool-II's pool_config.l (itself derived from PostgreSQL's
 * guc-file.l): `key [=] value`, `#` comments, single-quoted strings. Like
 * pgpool, a quoted string keeps its backslashes verbatim (a backslash only
 * protects the next character from ending the string), so regex lists such as
 * primary_routing_query_pattern_list = 'SELECT \* FROM t1\;;.*t2.*' mean the
 * same as in pgpool. `''` inside a quoted string is accepted as an escaped
 * quote (PostgreSQL style; pgpool rejects it, so no valid pgpool.conf changes
 * meaning).
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { BackendConfig, Config, HealthCheckConfig } from './types.js';
import {
  ALIASES,
  BASE_UNIT_SIZE,
  INT_MAX,
  MAX_BACKENDS,
  MEMORY_UNITS,
  PARAMS,
  TIME_UNITS,
  isIgnoredKey,
  isTimeUnit,
  resolveParamName,
  type BackendField,
  type ParamDef,
  type ParamUnit,
  type ParamValue,
} from './params.js';

export { PARAMS, SHOW_GROUPS, findParamDef, isIgnoredKey } from './params.js';
export type { ParamDef, ParamGroup, ParamKind, ParamUnit, ParamValue, ShowGroup } from './params.js';

// ---------------------------------------------------------------------------
// Errors

export interface ConfigIssue {
  /** File name as given ('command line' for LoadOptions.set / backends). */
  file: string;
  /** 1-based line (position in `set` for the command line); 0 when not tied to a line. */
  line: number;
  /** Parameter name as written (lower-cased); '' when the line has no key. */
  key: string;
  /** Message without the location prefix. */
  message: string;
}

export const COMMAND_LINE = 'command line';

function formatLocation(i: { file: string; line: number }): string {
  if (i.file === COMMAND_LINE || i.line <= 0) return i.file;
  return `${i.file}:${i.line}`;
}

export function formatIssue(i: ConfigIssue): string {
  return `${formatLocation(i)}: ${i.message}`;
}

export class ConfigError extends Error {
  readonly errors: ConfigIssue[];
  constructor(errors: ConfigIssue[]) {
    super(errors.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.errors = errors;
  }
}

// ---------------------------------------------------------------------------
// Lexer

export interface ConfigEntry {
  /** Lower-cased key. */
  key: string;
  /** Value with quotes removed. */
  value: string;
  line: number;
}

export interface ParseResult {
  entries: ConfigEntry[];
  errors: ConfigIssue[];
}

const KEY_RE = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*/;

/** Low-level: split a pgpool.conf text into key/value entries (no validation of keys or values). */
export function parseConfigText(text: string, fileName: string): ParseResult {
  const entries: ConfigEntry[] = [];
  const errors: ConfigIssue[] = [];
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  for (let n = 0; n < lines.length; n++) {
    const lineNo = n + 1;
    const line = lines[n]!;
    const isWs = (ch: string | undefined): boolean =>
      ch === ' ' || ch === '\t' || ch === '\r' || ch === '\f' || ch === '\v';
    let i = 0;
    const skipWs = (): void => {
      while (i < line.length && isWs(line[i])) i++;
    };
    const err = (key: string, message: string): void => {
      errors.push({ file: fileName, line: lineNo, key, message });
    };
    skipWs();
    if (i >= line.length || line[i] === '#') continue;
    const km = KEY_RE.exec(line.slice(i));
    if (!km) {
      err('', `syntax error: expected a parameter name, found "${line.slice(i).trim()}"`);
      continue;
    }
    const key = km[0].toLowerCase();
    i += km[0].length;
    skipWs();
    if (line[i] === '=') {
      i++;
      skipWs();
    }
    if (i >= line.length || line[i] === '#') {
      err(key, `syntax error: missing value for parameter "${key}"`);
      continue;
    }
    let value: string;
    if (line[i] === "'") {
      let out = '';
      let j = i + 1;
      let closed = false;
      while (j < line.length) {
        const ch = line[j]!;
        if (ch === '\\') {
          // pgpool keeps the backslash and the escaped character verbatim
          out += ch;
          if (j + 1 < line.length && line[j + 1] !== '\r') {
            out += line[j + 1];
            j += 2;
          } else {
            j++;
          }
          continue;
        }
        if (ch === "'") {
          if (line[j + 1] === "'") {
            out += "'";
            j += 2;
            continue;
          }
          closed = true;
          j++;
          break;
        }
        out += ch;
        j++;
      }
      if (!closed) {
        err(key, `unterminated quoted string in value of parameter "${key}"`);
        continue;
      }
      value = out;
      i = j;
    } else {
      let j = i;
      while (j < line.length && !isWs(line[j]) && line[j] !== '#') j++;
      value = line.slice(i, j);
      if (/['=]/.test(value)) {
        err(key, `syntax error in value of parameter "${key}": "${value}" (quote values containing ' or =)`);
        continue;
      }
      i = j;
    }
    skipWs();
    if (i < line.length && line[i] !== '#') {
      err(
        key,
        `syntax error near "${line.slice(i).trim()}" in value of parameter "${key}" (quote values containing spaces)`,
      );
      continue;
    }
    entries.push({ key, value, line: lineNo });
  }
  return { entries, errors };
}

// ---------------------------------------------------------------------------
// Value parsing

type Parsed = { ok: true; value: ParamValue } | { ok: false; expected: string };

function unitWords(u: ParamUnit): string {
  return isTimeUnit(u) ? 'us, ms, s, min, h, d' : 'B, kB, MB, GB, TB';
}

function unitName(u: ParamUnit): string {
  switch (u) {
    case 'ms':
      return 'milliseconds';
    case 's':
      return 'seconds';
    case 'min':
      return 'minutes';
    case 'B':
      return 'bytes';
    case 'kB':
      return 'kilobytes';
  }
}

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
  if (def.unit) return `an integer ${range} in ${unitName(def.unit)}; units ${unitWords(def.unit)} accepted`;
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

function parseBool(raw: string): boolean | undefined {
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
    default:
      return undefined;
  }
}

/** Parsed backend_flag. */
interface BackendFlags {
  allow_to_failover: boolean;
  always_primary: boolean;
}

function parseBackendFlag(raw: string): BackendFlags | string {
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

// ---------------------------------------------------------------------------
// Defaults

function cloneValue(v: ParamValue): ParamValue {
  return Array.isArray(v) ? [...v] : v;
}

function defaultHealthCheck(): HealthCheckConfig {
  const hc: Record<string, ParamValue> = {};
  for (const p of PARAMS) if (p.scope === 'health_check' && p.hcField) hc[p.hcField] = p.default;
  return hc as unknown as HealthCheckConfig;
}

/** All defaults; relative paths (hba_file, pool_passwd, ...) are left relative. */
export function defaultConfig(): Config {
  const c: Record<string, unknown> = { config_file: '' };
  for (const p of PARAMS) if (p.scope === 'global') c[p.name] = cloneValue(p.default);
  const hc = defaultHealthCheck();
  c.health_check = hc;
  c.health_check_per_node = [];
  c.backends = [];
  c.connect_timeout = hc.connect_timeout;
  return c as unknown as Config;
}

// ---------------------------------------------------------------------------
// Loading

export interface LoadOptions {
  /** Path to a pgpool.conf-style file; omitted = defaults only. */
  file?: string;
  /** Command-line overrides, applied after the file as if extra lines (source "command line"). */
  set?: Array<[key: string, value: string]>;
  /** --backend host:port (repeatable): REPLACES the file's backend list; weights default 1. */
  backends?: Array<{ hostname: string; port: number }>;
  /** Unknown keys, deprecated aliases. */
  onWarning?: (message: string) => void;
}

export interface LoadResult {
  config: Config;
  /** Same messages passed to onWarning. */
  warnings: string[];
  /** Known pgpool keys that pgrelay accepts and ignores (debug-level information). */
  ignoredKeys: Array<{ file: string; line: number; key: string }>;
}

interface Source {
  file: string;
  line: number;
  key: string;
  /** Directory relative paths resolve against. */
  baseDir: string;
}

interface Setting {
  value: ParamValue;
  src: Source;
}

/** pgpool's default socket directory, used for an empty backend_hostnameN (as pgpool does). */
export const DEFAULT_SOCKET_DIR = '/tmp';

export function loadConfig(opts: LoadOptions): Config {
  return loadConfigDetailed(opts).config;
}

export function loadConfigDetailed(opts: LoadOptions): LoadResult {
  const errors: ConfigIssue[] = [];
  const warnings: string[] = [];
  const ignoredKeys: LoadResult['ignoredKeys'] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    opts.onWarning?.(m);
  };
  const cwd = process.cwd();

  const globals = new Map<string, Setting>();
  const hcGlobal = new Map<keyof HealthCheckConfig, Setting>();
  const hcNode = new Map<number, Map<keyof HealthCheckConfig, Setting>>();
  const backendKeys = new Map<number, Map<BackendField, Setting>>();

  const apply = (entry: ConfigEntry, file: string, baseDir: string): void => {
    let key = entry.key;
    const loc = formatLocation({ file, line: entry.line });
    const alias = ALIASES[key];
    if (alias !== undefined) {
      // socket_dir is pgpool 4.3's own name (renamed in 4.4): no warning for it.
      if (key !== 'socket_dir') warn(`${loc}: parameter "${key}" is deprecated, use "${alias}" instead`);
      key = alias;
    }
    const src: Source = { file, line: entry.line, key: entry.key, baseDir };
    const fail = (message: string): void => {
      errors.push({ file, line: entry.line, key: entry.key, message });
    };
    if (key === 'backend_clustering_mode') {
      if (entry.value.trim().toLowerCase() !== 'streaming_replication') {
        fail(
          `invalid value for parameter "backend_clustering_mode": "${entry.value}" (pgrelay supports streaming_replication only)`,
        );
      }
      return;
    }
    if (key === 'replication_mode') {
      const b = parseBool(entry.value);
      if (b === undefined)
        fail(`invalid value for parameter "replication_mode": "${entry.value}" (expected a boolean)`);
      else if (b)
        fail(
          'replication_mode = on (native replication) is not supported: pgrelay supports streaming_replication only',
        );
      return;
    }
    if (key === 'master_slave_mode' || key === 'master_slave_sub_mode') {
      const extra =
        key === 'master_slave_sub_mode' && entry.value.trim().toLowerCase() !== 'stream'
          ? ` (value "${entry.value}" ignored: pgrelay supports streaming replication only)`
          : '';
      warn(
        `${loc}: parameter "${key}" is deprecated and ignored; pgrelay always runs in streaming replication mode${extra}`,
      );
      return;
    }
    const r = resolveParamName(key);
    if (!r) {
      if (isIgnoredKey(key)) {
        ignoredKeys.push({ file, line: entry.line, key: entry.key });
      } else {
        warn(`${loc}: unrecognized configuration parameter "${entry.key}"`);
      }
      return;
    }
    const { def, index } = r;
    if (def.scope === 'backend' && index < 0) {
      fail(`parameter "${key}" expects a node id suffix (e.g. ${key}0)`);
      return;
    }
    if (index >= MAX_BACKENDS) {
      fail(`invalid node id ${index} for parameter "${entry.key}" (expected 0..${MAX_BACKENDS - 1})`);
      return;
    }
    const parsed = parseParamValue(def, entry.value, key);
    if ('error' in parsed) {
      fail(parsed.error);
      return;
    }
    const setting: Setting = { value: parsed.value, src };
    if (def.scope === 'global') {
      globals.set(def.name, setting);
    } else if (def.scope === 'health_check') {
      const f = def.hcField!;
      if (index < 0) hcGlobal.set(f, setting);
      else {
        let m = hcNode.get(index);
        if (!m) hcNode.set(index, (m = new Map()));
        m.set(f, setting);
      }
    } else {
      let m = backendKeys.get(index);
      if (!m) backendKeys.set(index, (m = new Map()));
      m.set(def.backendField!, setting);
    }
  };

  // ---- the file
  let configFile = '';
  let fileBase = cwd;
  if (opts.file !== undefined) {
    configFile = path.resolve(opts.file);
    fileBase = path.dirname(configFile);
    let text: string | undefined;
    try {
      text = readFileSync(configFile, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      errors.push({
        file: opts.file,
        line: 0,
        key: '',
        message: `could not open configuration file "${configFile}": ${code}`,
      });
    }
    if (text !== undefined) {
      const parsed = parseConfigText(text, opts.file);
      errors.push(...parsed.errors);
      for (const e of parsed.entries) apply(e, opts.file, fileBase);
    }
  }

  // ---- command-line overrides
  (opts.set ?? []).forEach(([k, v], idx) => {
    const key = k.trim().toLowerCase();
    let value = v;
    if (value.length >= 2 && value.startsWith("'") && value.endsWith("'"))
      value = value.slice(1, -1).replace(/''/g, "'");
    if (!KEY_RE.test(key) || KEY_RE.exec(key)![0] !== key) {
      errors.push({ file: COMMAND_LINE, line: idx + 1, key, message: `invalid parameter name "${k}"` });
      return;
    }
    apply({ key, value, line: idx + 1 }, COMMAND_LINE, cwd);
  });

  // ---- build
  const c = defaultConfig() as unknown as Record<string, unknown>;
  c.config_file = configFile;
  const resolvePath = (v: string, base: string): string => (v === '' || path.isAbsolute(v) ? v : path.resolve(base, v));
  for (const p of PARAMS) {
    if (p.scope !== 'global') continue;
    const s = globals.get(p.name);
    let v: ParamValue = s ? s.value : cloneValue(p.default);
    if (p.path && typeof v === 'string') v = resolvePath(v, s ? s.src.baseDir : fileBase);
    c[p.name] = v;
  }
  const hc = defaultHealthCheck() as unknown as Record<string, ParamValue>;
  for (const [f, s] of hcGlobal) hc[f] = s.value;
  c.health_check = hc;
  c.connect_timeout = hc.connect_timeout;

  // backends
  const backends: BackendConfig[] = [];
  if (opts.backends) {
    opts.backends.forEach((b, id) => {
      if (!Number.isInteger(b.port) || b.port < 1 || b.port > 65535) {
        errors.push({
          file: COMMAND_LINE,
          line: id + 1,
          key: `backend_port${id}`,
          message: `invalid backend port ${b.port} for ${b.hostname} (expected 1..65535)`,
        });
      }
      backends.push({
        id,
        hostname: b.hostname === '' ? DEFAULT_SOCKET_DIR : b.hostname,
        port: b.port,
        weight: 1,
        data_directory: '',
        allow_to_failover: true,
        always_primary: false,
        application_name: '',
      });
    });
  } else {
    const ids = [...backendKeys.keys()].sort((a, b) => a - b);
    const withHost = new Set<number>();
    for (const id of ids) {
      const m = backendKeys.get(id)!;
      if (m.has('hostname')) {
        withHost.add(id);
        continue;
      }
      // first line (in file order) that mentions this node
      const first = [...m.values()].sort((a, b) =>
        a.src.file === b.src.file ? a.src.line - b.src.line : a.src.file === COMMAND_LINE ? 1 : -1,
      )[0]!;
      errors.push({
        file: first.src.file,
        line: first.src.line,
        key: first.src.key,
        message: `"${first.src.key}" is set but backend_hostname${id} is not`,
      });
    }
    const hostIds = [...withHost].sort((a, b) => a - b);
    for (let expect = 0; expect < hostIds.length; expect++) {
      if (hostIds[expect] !== expect) {
        const s = backendKeys.get(hostIds[expect]!)!.get('hostname')!;
        errors.push({
          file: s.src.file,
          line: s.src.line,
          key: s.src.key,
          message: `backend_hostname${expect} is missing: backend node ids must be contiguous from 0 (found "${s.src.key}")`,
        });
        break;
      }
    }
    for (const id of hostIds) {
      const m = backendKeys.get(id)!;
      const get = <T extends ParamValue>(f: BackendField, d: T): T => (m.get(f)?.value as T | undefined) ?? d;
      const flagRaw = get<string>('flag', 'ALLOW_TO_FAILOVER');
      const flags = parseBackendFlag(flagRaw);
      const host = get<string>('hostname', '');
      backends.push({
        id,
        hostname: host === '' ? DEFAULT_SOCKET_DIR : host,
        port: get<number>('port', 5432),
        weight: get<number>('weight', 1),
        data_directory: get<string>('data_directory', ''),
        allow_to_failover: typeof flags === 'string' ? true : flags.allow_to_failover,
        always_primary: typeof flags === 'string' ? false : flags.always_primary,
        application_name: get<string>('application_name', ''),
      });
    }
  }
  c.backends = backends;
  c.health_check_per_node = backends.map((b) => {
    const node: Record<string, ParamValue> = { ...hc };
    for (const [f, s] of hcNode.get(b.id) ?? []) node[f] = s.value;
    return node as unknown as HealthCheckConfig;
  });

  if (errors.length > 0) throw new ConfigError(errors);
  return { config: c as unknown as Config, warnings, ignoredKeys };
}

// ---------------------------------------------------------------------------
// Reading a loaded configuration by parameter name

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

// ---------------------------------------------------------------------------
// Reload diff

/** Equal texts mean equal settings (lists compare as written, joined by their separator). */
function comparable(def: ParamDef, v: ParamValue): string {
  return Array.isArray(v) ? v.join(def.separator ?? ',') : String(v);
}

function itemValues(c: Config): Map<string, { def: ParamDef; index: number; value: string }> {
  const out = new Map<string, { def: ParamDef; index: number; value: string }>();
  for (const d of PARAMS) {
    if (d.scope === 'global' || d.scope === 'health_check') {
      out.set(d.name, { def: d, index: -1, value: comparable(d, paramValue(c, d, -1)!) });
    }
    if (d.scope === 'global') continue;
    const n = d.scope === 'backend' ? c.backends.length : c.health_check_per_node.length;
    for (let i = 0; i < n; i++) {
      const v = paramValue(c, d, i);
      if (v !== undefined) out.set(`${d.name}${i}`, { def: d, index: i, value: comparable(d, v) });
    }
  }
  return out;
}

/**
 * Parameter names whose value differs (for SIGHUP reload). restartRequired ⊆
 * changed: params with context 'restart', plus backend_hostnameN/backend_portN
 * of a node that existed before (pgpool cannot re-address or remove a node on
 * reload; adding nodes is fine).
 */
export function diffConfigs(oldC: Config, newC: Config): { changed: string[]; restartRequired: string[] } {
  const a = itemValues(oldC);
  const b = itemValues(newC);
  const names = new Set([...a.keys(), ...b.keys()]);
  const changed: string[] = [];
  const restartRequired: string[] = [];
  for (const name of names) {
    const x = a.get(name);
    const y = b.get(name);
    if (x && y && x.value === y.value) continue;
    changed.push(name);
    const def = (x ?? y)!.def;
    const index = (x ?? y)!.index;
    if (def.context === 'restart') restartRequired.push(name);
    else if (
      def.scope === 'backend' &&
      x &&
      (def.backendField === 'hostname' || def.backendField === 'port') &&
      index < oldC.backends.length
    ) {
      restartRequired.push(name);
    }
  }
  return { changed, restartRequired };
}
