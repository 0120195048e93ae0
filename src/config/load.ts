/**
 * pgpool.conf loading: the file, then command-line overrides, checked key by
 * key (every mistake is collected before ConfigError is thrown), then built into
 * a Config over the defaults, with per-node health-check overrides and the
 * backend list. Deprecated and ignored keys are pgpool-keys.ts; value parsing
 * is values.ts; how values are shown (PGPOOL SHOW) is admin/show-config.ts.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { cloneValue, defaultConfig, defaultHealthCheck } from './defaults.js';
import { COMMAND_LINE, ConfigError, type ConfigIssue, formatLocation } from './issues.js';
import { type ConfigEntry, KEY_RE, parseConfigText } from './lexer.js';
import { type BackendField, MAX_BACKENDS, PARAMS, type ParamValue, resolveParamName } from './params.js';
import { ALIASES, clusteringModeKey, ignoredKeyWarning, isIgnoredKey } from './pgpool-keys.js';
import type { BackendConfig, Config, HealthCheckConfig } from './types.js';
import { parseBackendFlag, parseParamValue } from './values.js';

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
    const mode = clusteringModeKey(key, entry.value);
    if (mode) {
      if ('error' in mode) fail(mode.error);
      else if ('warning' in mode) warn(`${loc}: ${mode.warning}`);
      return;
    }
    const r = resolveParamName(key);
    if (!r) {
      if (isIgnoredKey(key)) {
        ignoredKeys.push({ file, line: entry.line, key: entry.key });
        const w = ignoredKeyWarning(key, entry.value);
        if (w) warn(`${loc}: ${w}`);
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
    if (def.name === 'recovery_2nd_stage_command' && entry.value.trim() !== '')
      warn(
        `${loc}: recovery_2nd_stage_command is not run in streaming replication mode (as in pgpool-II): online recovery runs recovery_1st_stage_command only`,
      );
    if (def.name === 'log_destination' && /syslog/i.test(entry.value))
      warn(`${loc}: log_destination 'syslog' is not implemented by pgrelay: those logs go to stdout`);
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
  // The dashboard is served on metrics_port: on without a port would do nothing.
  const dash = globals.get('dashboard');
  if (c.dashboard === true && c.metrics_port === 0 && dash)
    errors.push({
      file: dash.src.file,
      line: dash.src.line,
      key: dash.src.key,
      message: 'dashboard = on needs metrics_port (the dashboard is served on the metrics HTTP port)',
    });
  const hc = defaultHealthCheck() as unknown as Record<string, ParamValue>;
  for (const [f, s] of hcGlobal) hc[f] = s.value;
  c.health_check = hc;
  c.connect_timeout = hc.connect_timeout;

  const backends = opts.backends ? commandLineBackends(opts.backends, errors) : fileBackends(backendKeys, errors);
  c.backends = backends;
  c.health_check_per_node = backends.map((b) => {
    const node: Record<string, ParamValue> = { ...hc };
    for (const [f, s] of hcNode.get(b.id) ?? []) node[f] = s.value;
    return node as unknown as HealthCheckConfig;
  });

  checkCoordination(c as unknown as Config, globals, errors);

  if (errors.length > 0) throw new ConfigError(errors);
  return { config: c as unknown as Config, warnings, ignoredKeys };
}

/** --backend host:port: replaces the file's backend list, every other field at its default. */
function commandLineBackends(list: NonNullable<LoadOptions['backends']>, errors: ConfigIssue[]): BackendConfig[] {
  const backends: BackendConfig[] = [];
  list.forEach((b, id) => {
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
  return backends;
}

/** The backend list from backend_*N keys: every node needs its hostname, and ids run from 0 without a gap. */
function fileBackends(backendKeys: Map<number, Map<BackendField, Setting>>, errors: ConfigIssue[]): BackendConfig[] {
  const backends: BackendConfig[] = [];
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
  return backends;
}

/** coordination = 'etcd' needs etcd_endpoints, each an http(s)://host:port URL (or host:port). */
function checkCoordination(c: Config, globals: Map<string, Setting>, errors: ConfigIssue[]): void {
  if (c.coordination !== 'etcd') return;
  const at = (name: string): { file: string; line: number; key: string } => {
    const s = globals.get(name) ?? globals.get('coordination');
    return s ? { file: s.src.file, line: s.src.line, key: s.src.key } : { file: COMMAND_LINE, line: 0, key: name };
  };
  if (c.etcd_endpoints.length === 0)
    errors.push({
      ...at('etcd_endpoints'),
      message: "coordination = 'etcd' needs etcd_endpoints (e.g. 'http://10.0.0.1:2379,http://10.0.0.2:2379')",
    });
  for (const e of c.etcd_endpoints)
    if (!/^(https?:\/\/)?[^\s/:]+(:\d{1,5})?\/?$/.test(e))
      errors.push({
        ...at('etcd_endpoints'),
        message: `invalid etcd endpoint "${e}" in etcd_endpoints (expected http://host:port or https://host:port)`,
      });
  if ((c.etcd_cert === '') !== (c.etcd_key === ''))
    errors.push({
      ...at(c.etcd_cert === '' ? 'etcd_key' : 'etcd_cert'),
      message: 'etcd_cert and etcd_key go together',
    });
}
