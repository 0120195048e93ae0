/**
 * The configuration before any file or command line: every parameter at its
 * table default. Relative paths (hba_file, pool_passwd, ...) stay relative;
 * the loader resolves them against the configuration file's directory.
 */
import { PARAMS, type ParamValue } from './params.js';
import type { Config, HealthCheckConfig } from './types.js';

/** A default the Config may own: lists are copied so that no two Configs share one. */
export function cloneValue(v: ParamValue): ParamValue {
  return Array.isArray(v) ? [...v] : v;
}

export function defaultHealthCheck(): HealthCheckConfig {
  const hc: Record<string, ParamValue> = {};
  for (const p of PARAMS) if (p.scope === 'health_check' && p.hcField) hc[p.hcField] = p.default;
  return hc as unknown as HealthCheckConfig;
}

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
