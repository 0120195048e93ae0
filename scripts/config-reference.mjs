// Prints the configuration reference (markdown) from the parameter table, so README stays true:
//   node scripts/config-reference.mjs > docs/configuration.md
import { PARAMS } from '../dist/config/params.js';

const groups = new Map();
for (const p of PARAMS) {
  if (!groups.has(p.group)) groups.set(p.group, []);
  groups.get(p.group).push(p);
}
const fmt = (p) => {
  const d = p.default;
  if (Array.isArray(d)) return d.length ? `'${d.join(p.separator === ';' ? ';' : ',')}'` : "''";
  if (typeof d === 'boolean') return d ? 'on' : 'off';
  if (typeof d === 'string') return `'${d}'`;
  return String(d);
};
const ctx = { restart: 'restart', reload: 'reload', session: 'reload, PGPOOL SET' };
let out =
  '# Configuration reference\n\nGenerated from `src/config/params.ts` by `node scripts/config-reference.mjs`. ' +
  'Per-node parameters take the node id as a suffix (`backend_port0`, `health_check_period1`). ' +
  '"pgrelay" marks parameters pgpool-II does not have.\n';
for (const [g, list] of groups) {
  out += `\n## ${g}\n\n| parameter | default | change by | description |\n|---|---|---|---|\n`;
  for (const p of list) {
    const name = p.scope === 'backend' || p.scope === 'health_check_node' ? `${p.name}N` : p.name;
    out += `| \`${name}\`${p.pgrelay ? ' (pgrelay)' : ''} | \`${fmt(p)}\`${p.unit ? ` ${p.unit}` : ''} | ${ctx[p.context] ?? p.context} | ${p.description.replace(/\|/g, '\\|')} |\n`;
  }
}
process.stdout.write(out);
