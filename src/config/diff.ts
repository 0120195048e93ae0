/**
 * What a reload changes: the parameters whose value differs between two
 * loaded Configs, and which of those only take effect after a restart.
 */
import { PARAMS, type ParamDef, type ParamValue } from './params.js';
import type { Config } from './types.js';
import { paramValue } from './values.js';

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
