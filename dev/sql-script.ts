/**
 * What `psql -X -A -t -q -v ON_ERROR_STOP=1 -f -` does with a script, without
 * psql: split it into statements the way psql's lexer does (a `;` ends a
 * statement outside quotes, dollar quotes, comments and parentheses; each
 * statement is sent as its own Query, so CREATE DATABASE and VACUUM work), and
 * print rows the way `-A -t` prints them (columns joined by `|`, one row per
 * line, NULL as an empty string, values in the server's text format).
 * Pure functions; DevCluster.psql runs the statements.
 */

/** The statements of a script, in order, without their `;` and without comment-only pieces. */
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let start = 0;
  let depth = 0;
  let meaningful = false;
  let i = 0;
  const n = sql.length;
  const push = (end: number): void => {
    if (meaningful) out.push(sql.slice(start, end).trim());
    start = end + 1;
    meaningful = false;
  };
  while (i < n) {
    const c = sql[i] as string;
    const next = sql[i + 1];
    if (c === '-' && next === '-') {
      const eol = sql.indexOf('\n', i);
      i = eol < 0 ? n : eol + 1;
      continue;
    }
    if (c === '/' && next === '*') {
      let level = 1;
      i += 2;
      while (i < n && level > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          level++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          level--;
          i += 2;
        } else i++;
      }
      continue;
    }
    if (c === "'") {
      const prev = i > 0 ? sql[i - 1] : '';
      const escapes = (prev === 'E' || prev === 'e') && !/[A-Za-z0-9_$]/.test(i > 1 ? (sql[i - 2] as string) : '');
      meaningful = true;
      i++;
      while (i < n) {
        if (escapes && sql[i] === '\\') i += 2;
        else if (sql[i] === "'" && sql[i + 1] === "'") i += 2;
        else if (sql[i] === "'") break;
        else i++;
      }
      i++;
      continue;
    }
    if (c === '"') {
      meaningful = true;
      const end = sql.indexOf('"', i + 1);
      i = end < 0 ? n : end + 1;
      // "" inside an identifier is a quote: the loop meets the second " as a new identifier.
      continue;
    }
    if (c === '$') {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 66));
      const prev = i > 0 ? (sql[i - 1] as string) : '';
      if (m && !/[A-Za-z0-9_]/.test(prev)) {
        meaningful = true;
        const end = sql.indexOf(m[0], i + m[0].length);
        i = end < 0 ? n : end + m[0].length;
        continue;
      }
    }
    if (c === '(') depth++;
    else if (c === ')') depth = Math.max(0, depth - 1);
    else if (c === ';' && depth === 0) {
      push(i);
      i++;
      continue;
    }
    if (!/\s/.test(c)) meaningful = true;
    i++;
  }
  if (start < n) push(n);
  return out;
}

/** Rows as `psql -A -t` prints them (without the final newline). */
export function formatRows(rows: readonly (readonly (string | null)[])[]): string[] {
  return rows.map((r) => r.map((v) => v ?? '').join('|'));
}
