#!/usr/bin/env node
/**
 * Summarise a V8 .cpuprofile (node --cpu-prof): top functions by self time,
 * their inclusive (total) time, and self time grouped by source area.
 *
 *   node bench/profile-summary.mjs FILE.cpuprofile [--top N]
 *
 * Also imported by bench/run.mjs (BENCH_PROFILE=1).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function shortUrl(url) {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(`${ROOT}/`)) u = u.slice(ROOT.length + 1);
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) u = u.slice(nm);
  return u;
}

/** Which part of the system a frame belongs to. */
function area(cf) {
  const url = cf.url ?? '';
  const fn = cf.functionName;
  if (!url) {
    if (fn === '(garbage collector)') return 'GC';
    if (fn === '(idle)') return 'idle';
    if (fn === '(program)') return 'V8/native (program)';
    if (fn === '(root)') return 'root';
    return 'native/builtin';
  }
  if (url.startsWith('node:'))
    return url.startsWith('node:internal/') ? 'node internals' : `node:${url.slice(5).split('/')[0]}`;
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return `npm:${m[1]}`;
  const d = /\/dist\/(.*)$/.exec(url);
  if (d) return `pgrelay:${d[1].split('/').length > 1 ? `${d[1].split('/')[0]}/` : d[1]}`;
  return shortUrl(url);
}

/**
 * fromUs/toUs: optional window in the profile's clock (V8 TimeTicks = CLOCK_MONOTONIC
 * µs, the same clock as process.hrtime), e.g. one pgbench run; samples outside are
 * ignored. Ignored if it does not overlap the profile at all.
 */
export function summarizeProfile(profile, { top = 25, fromUs = null, toUs = null } = {}) {
  const nodes = new Map();
  const parent = new Map();
  for (const n of profile.nodes) {
    nodes.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const key = (cf) => `${cf.functionName || '(anonymous)'}\u0000${cf.url}\u0000${cf.lineNumber}`;
  const self = new Map();
  const total = new Map();
  const info = new Map();
  const byArea = new Map();
  let all = 0;
  let idle = 0;
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const windowed = fromUs !== null && toUs !== null && fromUs < profile.endTime && toUs > profile.startTime;
  let ts = profile.startTime;
  let used = 0;
  for (let i = 0; i < samples.length; i++) {
    ts += deltas[i] ?? 0;
    if (windowed && (ts < fromUs || ts > toUs)) continue;
    used++;
    // timeDeltas[i] is the time before sample i; the interval after it is a fair estimate of its weight.
    const dt = (deltas[i + 1] ?? deltas[i] ?? 0) / 1000; // ms
    const n = nodes.get(samples[i]);
    if (!n) continue;
    all += dt;
    if (n.callFrame.functionName === '(idle)') {
      idle += dt;
      continue;
    }
    const k = key(n.callFrame);
    info.set(k, n.callFrame);
    self.set(k, (self.get(k) ?? 0) + dt);
    const a = area(n.callFrame);
    byArea.set(a, (byArea.get(a) ?? 0) + dt);
    const seen = new Set();
    for (let id = n.id; id !== undefined; id = parent.get(id)) {
      const cf = nodes.get(id).callFrame;
      const kk = key(cf);
      if (seen.has(kk)) continue;
      seen.add(kk);
      info.set(kk, cf);
      total.set(kk, (total.get(kk) ?? 0) + dt);
    }
  }
  const busy = all - idle;
  const pct = (x) => (busy > 0 ? (100 * x) / busy : 0);
  const fnRow = (k, v) => {
    const cf = info.get(k);
    return {
      function: cf.functionName || '(anonymous)',
      location: cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : '',
      selfMs: Math.round(v),
      selfPct: Math.round(pct(v) * 10) / 10,
      totalMs: Math.round(total.get(k) ?? v),
      totalPct: Math.round(pct(total.get(k) ?? v) * 10) / 10,
    };
  };
  const topSelf = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, v]) => fnRow(k, v));
  const topTotal = [...total.entries()]
    .filter(([k]) => {
      const fn = info.get(k).functionName;
      return fn !== '(root)' && fn !== '(program)';
    })
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k]) => fnRow(k, self.get(k) ?? 0));
  const areas = [...byArea.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([a, v]) => ({ area: a, selfMs: Math.round(v), selfPct: Math.round(pct(v) * 10) / 10 }));
  return {
    wallMs: Math.round(all),
    busyMs: Math.round(busy),
    idleMs: Math.round(idle),
    samples: used,
    windowed,
    topSelf,
    topTotal,
    areas,
  };
}

function tbl(headers, rows) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  return [headers, ...rows]
    .map((r) =>
      r
        .map((c, i) => (i === 0 || i === r.length - 1 ? String(c).padEnd(w[i]) : String(c).padStart(w[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function formatSummary(s, { totalRows = 15 } = {}) {
  const out = [];
  out.push(
    `profile: ${s.samples} samples${s.windowed ? ' (measured run only)' : ' (whole process life)'}, ${s.wallMs} ms sampled, ` +
      `${s.busyMs} ms busy (${s.idleMs} ms idle); percentages are of busy time`,
  );
  out.push('');
  out.push('Self time by area:');
  out.push(
    tbl(
      ['area', 'self ms', 'self %', ''],
      s.areas.map((a) => [a.area, a.selfMs, a.selfPct.toFixed(1), '']),
    ),
  );
  out.push('');
  out.push('Top functions by self time:');
  out.push(
    tbl(
      ['function', 'self ms', 'self %', 'total %', 'location'],
      s.topSelf.map((r) => [r.function, r.selfMs, r.selfPct.toFixed(1), r.totalPct.toFixed(1), r.location]),
    ),
  );
  out.push('');
  out.push('Top functions by total (inclusive) time:');
  out.push(
    tbl(
      ['function', 'total ms', 'total %', 'self %', 'location'],
      s.topTotal
        .slice(0, totalRows)
        .map((r) => [r.function, r.totalMs, r.totalPct.toFixed(1), r.selfPct.toFixed(1), r.location]),
    ),
  );
  return out.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({ options: { top: { type: 'string' } }, allowPositionals: true });
  const [file] = positionals;
  const top = values.top !== undefined ? Number(values.top) : 25;
  if (!file) {
    process.stderr.write('usage: node bench/profile-summary.mjs FILE.cpuprofile [--top N]\n');
    process.exit(2);
  }
  const s = summarizeProfile(JSON.parse(fs.readFileSync(file, 'utf8')), { top });
  process.stdout.write(`${formatSummary(s)}\n`);
}
