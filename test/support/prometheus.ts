/**
 * Prometheus text exposition format (0.0.4) parsing for the metrics tests.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface Family {
  name: string;
  type: string;
  help?: string;
  samples: Sample[];
}

/**
 * Strict parser for the Prometheus text exposition format 0.0.4: every line is
 * `# HELP name text`, `# TYPE name type`, another comment, blank, or a sample
 * `name{l="v",...} value [timestamp]`. HELP/TYPE at most once per family and
 * before its samples; sample names must belong to a declared family
 * (histogram/summary suffixes _bucket/_sum/_count); label values use only the
 * \\ \" \n escapes; no duplicate series.
 */
export function parsePrometheus(text: string): Map<string, Family> {
  const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const fail = (n: number, line: string, why: string): never => {
    throw new Error(`metrics line ${n + 1}: ${why}: ${JSON.stringify(line)}`);
  };
  const family = (name: string): Family => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: 'untyped', samples: [] };
      families.set(name, f);
    }
    return f;
  };
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  for (const [n, line] of lines.entries()) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) continue; // plain comment
      const [, kw, name, rest] = m as unknown as [string, string, string, string | undefined];
      if (!NAME.test(name)) fail(n, line, 'bad metric name');
      const f = family(name);
      if (f.samples.length > 0) fail(n, line, `${kw} after samples of ${name}`);
      if (kw === 'HELP') {
        if (f.help !== undefined) fail(n, line, 'duplicate HELP');
        f.help = rest ?? '';
      } else {
        if (!/^(counter|gauge|histogram|summary|untyped)$/.test(rest ?? '')) fail(n, line, 'bad TYPE');
        if (f.type !== 'untyped' || seen.has(`TYPE ${name}`)) fail(n, line, 'duplicate TYPE');
        seen.add(`TYPE ${name}`);
        f.type = rest!;
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (!m) fail(n, line, 'not a sample line');
    const [, name, labelText, valueText] = m as unknown as [string, string, string | undefined, string];
    const labels: Record<string, string> = {};
    if (labelText !== undefined) {
      let s = labelText.slice(1, -1);
      while (s.length > 0) {
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/.exec(s);
        if (!lm) fail(n, line, `bad label syntax at ${JSON.stringify(s)}`);
        if (lm![1]! in labels) fail(n, line, `duplicate label ${lm![1]}`);
        labels[lm![1]!] = lm![2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
        s = s.slice(lm![0].length);
      }
    }
    let value: number;
    if (valueText === '+Inf') value = Infinity;
    else if (valueText === '-Inf') value = -Infinity;
    // Prometheus parses floats with Go's ParseFloat: NaN in any letter case (prom-client writes "Nan").
    else if (/^nan$/i.test(valueText)) value = NaN;
    else {
      if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(valueText)) fail(n, line, 'bad value');
      value = Number(valueText);
    }
    let f = families.get(name);
    if (!f) {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      const bf = families.get(base);
      if (bf && (bf.type === 'histogram' || bf.type === 'summary')) f = bf;
    }
    if (!f || !seen.has(`TYPE ${f.name}`)) fail(n, line, 'sample without a TYPE line for its family');
    if (f!.type === 'histogram' && name === f!.name) fail(n, line, 'histogram sample without _bucket/_sum/_count');
    if (name.endsWith('_bucket') && f!.type === 'histogram' && !('le' in labels)) fail(n, line, 'bucket without le');
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) fail(n, line, 'duplicate series');
    seen.add(key);
    f!.samples.push({ name, labels, value });
  }
  return families;
}

/** GET http://127.0.0.1:<port>/metrics and parse it strictly (10 s timeout). */
export async function scrapeMetrics(port: number): Promise<Map<string, Family>> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (r.status !== 200) throw new Error(`GET /metrics on port ${port}: HTTP ${r.status}`);
  return parsePrometheus(await r.text());
}

/** Value of the one sample of `name` whose labels include `labels` (undefined if there is none). */
export function sampleValue(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  const f = families.get(name) ?? families.get(base);
  const s = f?.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value;
}
