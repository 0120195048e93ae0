/**
 * pgpool.conf lexing, following pgpool-II's pool_config.l (itself derived from
 * PostgreSQL's guc-file.l): `key [=] value`, `#` comments, single-quoted
 * strings. Like pgpool, a quoted string keeps its backslashes verbatim (a
 * backslash only protects the next character from ending the string), so regex
 * lists such as primary_routing_query_pattern_list = 'SELECT \* FROM t1\;;.*t2.*'
 * mean the same as in pgpool. `''` inside a quoted string is accepted as an
 * escaped quote (PostgreSQL style; pgpool rejects it, so no valid pgpool.conf
 * changes meaning). Keys and values are not checked here (values.ts, load.ts).
 */
import type { ConfigIssue } from './issues.js';

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

export const KEY_RE = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*/;

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
