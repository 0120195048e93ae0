/**
 * The configuration commands: SHOW pool_status, PGPOOL SHOW, and PGPOOL
 * SET/RESET, which change a parameter for the calling session only (context
 * 'session' parameters, as pgpool). The text of values is show-config.ts.
 */
import { findParamDef, type ParamDef, type ParamValue } from '../config/params.js';
import type { Config } from '../config/types.js';
import { parseParamValue } from '../config/values.js';
import { SQLSTATE } from '../protocol/constants.js';
import type { AdminContext } from './context.js';
import { type AdminResult, errorResult, rowsResult } from './result.js';
import { formatParam, poolStatusRows, showParamRows, type ShowRow } from './show-config.js';

function itemRows(rows: readonly ShowRow[]): AdminResult {
  return rowsResult(
    ['item', 'value', 'description'],
    rows.map((r) => [r.item, r.value, r.description]),
  );
}

export function showPoolStatus(ctx: AdminContext, cfg: Config): AdminResult {
  return itemRows(poolStatusRows(cfg, ctx.nodes));
}

/** Config with the session's PGPOOL SET values applied (the config itself when there are none). */
export function effectiveConfig(config: Config, overlay: ReadonlyMap<string, ParamValue>): Config {
  if (overlay.size === 0) return config;
  const c: Record<string, unknown> = { ...config };
  for (const [k, v] of overlay) c[k] = v;
  return c as unknown as Config;
}

/** A parameter definition for SET/RESET: plain name, or an indexed one (backend_weight0). */
function lookupParam(name: string): ParamDef | undefined {
  const d = findParamDef(name);
  if (d) return d;
  const m = /^([a-z_]+?)\d+$/.exec(name);
  if (!m) return undefined;
  const a = findParamDef(m[1]!);
  return a && a.scope !== 'global' ? a : undefined;
}

function sessionParamCheck(name: string): { def: ParamDef } | { fail: AdminResult } {
  const def = lookupParam(name);
  if (!def) return { fail: errorResult(SQLSTATE.internalError, `unrecognized configuration parameter "${name}"`) };
  if (def.context !== 'session' || def.scope !== 'global') {
    return {
      fail: errorResult(SQLSTATE.internalError, `invalid Context, value for parameter "${name}" cannot be changed`),
    };
  }
  return { def };
}

export function pgpoolSet(ctx: AdminContext, name: string, value: string | null): AdminResult {
  const chk = sessionParamCheck(name);
  if ('fail' in chk) return chk.fail;
  const d = chk.def;
  if (value === null) {
    ctx.sessionParams.delete(d.name);
    return { kind: 'command', tag: 'SET' };
  }
  const r = parseParamValue(d, value, name);
  if ('error' in r) {
    // pgpool's wording for booleans; the loader's wording (with the accepted range) otherwise
    return errorResult(
      SQLSTATE.internalError,
      d.kind === 'bool' ? `parameter "${name}" requires a Boolean value` : r.error,
    );
  }
  ctx.sessionParams.set(d.name, r.value);
  return { kind: 'command', tag: 'SET' };
}

export function pgpoolReset(ctx: AdminContext, name: string): AdminResult {
  if (name === 'all') {
    ctx.sessionParams.clear();
    return { kind: 'command', tag: 'RESET' };
  }
  const chk = sessionParamCheck(name);
  if ('fail' in chk) return chk.fail;
  ctx.sessionParams.delete(chk.def.name);
  return { kind: 'command', tag: 'SET' };
}

export function pgpoolShow(cfg: Config, name: string): AdminResult {
  const rows = showParamRows(cfg, name);
  if (rows) return itemRows(rows);
  const v = formatParam(cfg, name);
  if (v === undefined) return errorResult(SQLSTATE.internalError, `config variable "${name}" not found`);
  return rowsResult([name], [[v]]);
}
