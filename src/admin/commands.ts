/**
 * Recognising pgpool-II admin commands in a simple-protocol Query's text.
 *
 * `parseAdminCommand` runs on every Query, so it starts with a cheap check: skip
 * whitespace and comments, then the text must begin with `SHOW pool_` (or
 * `SHOW "`) or with the keyword `PGPOOL`. Anything else returns undefined after
 * looking at a handful of characters (`SHOW work_mem`, `SELECT ...`).
 *
 * Grammar (keywords case-insensitive; whitespace and SQL comments anywhere
 * between tokens; one optional trailing `;`; nothing after it):
 *
 *   SHOW { pool_nodes | pool_version | pool_status | pool_pools | pool_processes
 *        | pool_backend_stats | pool_health_check_stats | pool_cache | pgrelay_instances }
 *   PGPOOL SHOW { <param> | ALL | <group> }             group: backend, health_check, watchdog, heartbeat
 *   PGPOOL SET <param> { TO | = } { <value>[, <value>...] | DEFAULT }
 *                                                        value: 'string', identifier, keyword (on/off/...), [+-]number
 *   PGPOOL RESET { <param> | ALL }
 *   PGPOOL SET CACHE DELETE '<query text>'               (pgpool 4.7 grammar)
 *   -- pgrelay extensions (admin_users only; pgpool does these through PCP):
 *   PGPOOL ATTACH NODE <n>
 *   PGPOOL DETACH NODE <n> [GRACEFULLY]
 *   PGPOOL PROMOTE NODE <n> [SWITCHOVER] [GRACEFULLY]
 *   PGPOOL RECOVERY NODE <n>                             (online recovery, pcp_recovery_node)
 *   PGPOOL RELOAD
 *   PGPOOL STOP [SMART | FAST | IMMEDIATE]               (default: smart, as pgpool's -m)
 *
 * `SHOW pool_xxx` with an unknown name (or with extra tokens) is not an admin
 * command: it returns undefined so the query goes to PostgreSQL, as in pgpool.
 * Text that starts with the keyword PGPOOL but does not parse yields
 * `{ kind: 'syntax_error' }` (pgpool's parser rejects it the same way; answering
 * locally avoids sending obvious garbage to a backend).
 *
 * Identifiers: unquoted ones are case-folded to lower case, "quoted" ones are
 * kept verbatim (so `SHOW "POOL_NODES"` is not an admin command, as in pgpool).
 */

export const SHOW_TARGETS = [
  'pool_nodes',
  'pool_version',
  'pool_status',
  'pool_pools',
  'pool_processes',
  'pool_backend_stats',
  'pool_health_check_stats',
  'pool_cache',
  'pgrelay_instances',
] as const;
export type ShowTarget = (typeof SHOW_TARGETS)[number];

export type StopMode = 'smart' | 'fast' | 'immediate';

export type AdminCommand =
  | { kind: 'show'; target: ShowTarget }
  /** name lower-cased ('all' for ALL). */
  | { kind: 'pgpool_show'; name: string }
  /** value: the raw value text (quotes removed, list items joined with ','); null = DEFAULT. */
  | { kind: 'pgpool_set'; name: string; value: string | null }
  /** name 'all' for RESET ALL. */
  | { kind: 'pgpool_reset'; name: string }
  | { kind: 'cache_delete'; query: string }
  | { kind: 'attach_node'; node: number }
  | { kind: 'detach_node'; node: number; gracefully: boolean }
  | { kind: 'promote_node'; node: number; switchover: boolean; gracefully: boolean }
  | { kind: 'recovery_node'; node: number }
  | { kind: 'reload' }
  | { kind: 'stop'; mode: StopMode }
  /** Starts with PGPOOL but does not parse. `near` is the offending token, '' at end of input. */
  | { kind: 'syntax_error'; near: string };

const SHOW_SET: ReadonlySet<string> = new Set(SHOW_TARGETS);

// ---------------------------------------------------------------------------
// Fast prefix check

const SPACE = new Uint8Array(128);
for (const c of ' \t\n\r\f\v') SPACE[c.charCodeAt(0)] = 1;

function isSpace(c: number): boolean {
  return c < 128 && SPACE[c] === 1;
}

/** Index of the first character that is neither whitespace nor inside a comment. -1 on an unterminated block comment. */
function skipFiller(s: string, i: number): number {
  const n = s.length;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (isSpace(c)) {
      i++;
    } else if (c === 0x2d /* - */ && s.charCodeAt(i + 1) === 0x2d) {
      const e = s.indexOf('\n', i + 2);
      i = e < 0 ? n : e + 1;
    } else if (c === 0x2f /* / */ && s.charCodeAt(i + 1) === 0x2a /* * */) {
      // nested block comments, as PostgreSQL
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        const d = s.charCodeAt(i);
        if (d === 0x2f && s.charCodeAt(i + 1) === 0x2a) {
          depth++;
          i += 2;
        } else if (d === 0x2a && s.charCodeAt(i + 1) === 0x2f) {
          depth--;
          i += 2;
        } else {
          i++;
        }
      }
      if (depth > 0) return -1;
    } else {
      break;
    }
  }
  return i;
}

/** Case-insensitive match of an ASCII lower-case word at position i. */
function wordAt(s: string, i: number, word: string): boolean {
  if (i + word.length > s.length) return false;
  for (let k = 0; k < word.length; k++) {
    const c = s.charCodeAt(i + k);
    const w = word.charCodeAt(k);
    if (c !== w && !(c >= 0x41 && c <= 0x5a && (c | 0x20) === w)) return false;
  }
  return true;
}

function isIdentChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x5f ||
    c === 0x24 ||
    c >= 0x80
  );
}

/**
 * The body of a quoted token starting after its opening quote: a doubled quote stands
 * for itself; with `backslashes` (E'...') \n, \t, \r and \x escapes apply. Undefined
 * when the closing quote is missing.
 */
function readQuoted(
  s: string,
  from: number,
  quote: string,
  backslashes: boolean,
): { v: string; end: number } | undefined {
  let v = '';
  let j = from;
  while (j < s.length) {
    const d = s[j]!;
    if (backslashes && d === '\\' && j + 1 < s.length) {
      const e = s[j + 1]!;
      v += e === 'n' ? '\n' : e === 't' ? '\t' : e === 'r' ? '\r' : e;
      j += 2;
    } else if (d === quote) {
      if (s[j + 1] !== quote) return { v, end: j + 1 };
      v += quote;
      j += 2;
    } else {
      v += d;
      j++;
    }
  }
  return undefined;
}

function isIdentStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c >= 0x80;
}

/** After a keyword ending at i: the keyword must end there (no identifier character follows). */
function keywordEnds(s: string, i: number): boolean {
  return i >= s.length || !isIdentChar(s.charCodeAt(i));
}

/**
 * `mayBeAdminCommand` on the first two bytes of a text not yet decoded (a Query
 * message's): false for nearly every query (SELECT, INSERT…, which need not be decoded
 * to be passed over), true when the text must be decoded and looked at.
 */
export function mayBeAdminCommandAt(buf: Uint8Array, start: number, end: number): boolean {
  if (start + 1 >= end) return true;
  const c0 = buf[start] | 0x20;
  const c1 = buf[start + 1] | 0x20;
  if (c0 === 0x73 /* s */) return c1 === 0x68 /* h(ow) */;
  if (c0 === 0x70 /* p */) return c1 === 0x67 /* g(pool) */;
  return isSpace(buf[start]) || c0 === 0x2f || c0 === 0x2d;
}

/**
 * Cheap test: could `sql` be an admin command? True only for texts that start
 * (after whitespace/comments) with `SHOW pool_`, `SHOW pgrelay_`, `SHOW "` or the keyword PGPOOL.
 */
export function mayBeAdminCommand(sql: string): boolean {
  let i = 0;
  const c0 = sql.charCodeAt(0) | 0x20;
  // common case: the text starts right away with a letter other than s/p
  if (c0 !== 0x73 && c0 !== 0x70 && !(isSpace(sql.charCodeAt(0)) || c0 === 0x2f || c0 === 0x2d)) return false;
  i = skipFiller(sql, 0);
  if (i < 0) return false;
  const c = sql.charCodeAt(i) | 0x20;
  if (c === 0x73 /* s */) {
    if (!wordAt(sql, i, 'show') || !keywordEnds(sql, i + 4)) return false;
    const j = skipFiller(sql, i + 4);
    if (j < 0) return false;
    return wordAt(sql, j, 'pool_') || wordAt(sql, j, 'pgrelay_') || sql.charCodeAt(j) === 0x22;
  }
  if (c === 0x70 /* p */) {
    return wordAt(sql, i, 'pgpool') && keywordEnds(sql, i + 6);
  }
  return false;
}

// ---------------------------------------------------------------------------
// Tokenizer (only runs after the prefix check)

type Tok =
  | { t: 'word'; v: string; raw: string } // unquoted identifier / keyword, lower-cased
  | { t: 'qident'; v: string; raw: string } // "quoted identifier"
  | { t: 'str'; v: string; raw: string } // 'string'
  | { t: 'num'; v: string; raw: string }
  | { t: 'op'; v: string; raw: string }; // = ; , + - and anything else (one char)

function tokenize(s: string): Tok[] | { near: string } {
  const out: Tok[] = [];
  let i = 0;
  const n = s.length;
  for (;;) {
    i = skipFiller(s, i);
    if (i < 0) return { near: '' };
    if (i >= n) return out;
    const c = s.charCodeAt(i);
    if (isIdentStart(c) && !((c | 0x20) === 0x65 && s.charCodeAt(i + 1) === 0x27)) {
      let j = i + 1;
      while (j < n && isIdentChar(s.charCodeAt(j))) j++;
      const raw = s.slice(i, j);
      out.push({ t: 'word', v: raw.toLowerCase(), raw });
      i = j;
    } else if (c === 0x22 /* " */) {
      const q = readQuoted(s, i + 1, '"', false);
      if (!q) return { near: s.slice(i) };
      out.push({ t: 'qident', v: q.v, raw: s.slice(i, q.end) });
      i = q.end;
    } else if (c === 0x27 /* ' */ || ((c | 0x20) === 0x65 && s.charCodeAt(i + 1) === 0x27)) {
      // 'string' or E'string' (E handled only for '' and \' escapes; good enough for values)
      const escaped = c !== 0x27;
      const q = readQuoted(s, escaped ? i + 2 : i + 1, "'", escaped);
      if (!q) return { near: s.slice(i) };
      out.push({ t: 'str', v: q.v, raw: s.slice(i, q.end) });
      i = q.end;
    } else if ((c >= 0x30 && c <= 0x39) || (c === 0x2e && s.charCodeAt(i + 1) >= 0x30 && s.charCodeAt(i + 1) <= 0x39)) {
      let j = i + 1;
      while (j < n) {
        const d = s.charCodeAt(j);
        if ((d >= 0x30 && d <= 0x39) || d === 0x2e) j++;
        else if ((d | 0x20) === 0x65 && /[0-9+-]/.test(s[j + 1] ?? '')) j += 2;
        else break;
      }
      const raw = s.slice(i, j);
      out.push({ t: 'num', v: raw, raw });
      i = j;
    } else {
      const raw = s[i]!;
      out.push({ t: 'op', v: raw, raw });
      i++;
    }
  }
}

// ---------------------------------------------------------------------------
// Parser

class SyntaxError_ {
  constructor(readonly near: string) {}
}

class Cursor {
  private i = 0;
  constructor(private readonly toks: Tok[]) {}
  peek(): Tok | undefined {
    return this.toks[this.i];
  }
  next(): Tok | undefined {
    return this.toks[this.i++];
  }
  fail(): never {
    const t = this.toks[this.i];
    throw new SyntaxError_(t ? t.raw : '');
  }
  /** Consume the keyword or fail. */
  keyword(...words: string[]): string {
    const t = this.peek();
    if (t && t.t === 'word' && words.includes(t.v)) {
      this.i++;
      return t.v;
    }
    return this.fail();
  }
  optKeyword(...words: string[]): string | undefined {
    const t = this.peek();
    if (t && t.t === 'word' && words.includes(t.v)) {
      this.i++;
      return t.v;
    }
    return undefined;
  }
  optOp(op: string): boolean {
    const t = this.peek();
    if (t && t.t === 'op' && t.v === op) {
      this.i++;
      return true;
    }
    return false;
  }
  /** Identifier: unquoted (lower-cased) or quoted (verbatim). */
  ident(): string {
    const t = this.peek();
    if (t && (t.t === 'word' || t.t === 'qident')) {
      this.i++;
      return t.v;
    }
    return this.fail();
  }
  nodeId(): number {
    const t = this.peek();
    if (t && t.t === 'num' && /^\d+$/.test(t.v) && t.v.length <= 9) {
      this.i++;
      return Number(t.v);
    }
    return this.fail();
  }
  /** Optional ';' then end of input. */
  end(): void {
    this.optOp(';');
    if (this.i < this.toks.length) this.fail();
  }
}

function parseSetValue(c: Cursor): string | null {
  const first = c.peek();
  if (first && first.t === 'word' && first.v === 'default') {
    c.next();
    return null;
  }
  const items: string[] = [];
  for (;;) {
    const t = c.peek();
    if (!t) return c.fail();
    if (t.t === 'str' || t.t === 'word' || t.t === 'qident' || t.t === 'num') {
      c.next();
      items.push(t.t === 'word' ? t.raw : t.v);
    } else if (t.t === 'op' && (t.v === '-' || t.v === '+')) {
      c.next();
      const num = c.peek();
      if (num?.t !== 'num') return c.fail();
      c.next();
      items.push(t.v === '-' ? `-${num.v}` : num.v);
    } else {
      return c.fail();
    }
    if (!c.optOp(',')) break;
  }
  return items.join(',');
}

function parsePgpool(c: Cursor): AdminCommand {
  c.keyword('pgpool');
  const verb = c.keyword('show', 'set', 'reset', 'attach', 'detach', 'promote', 'recovery', 'reload', 'stop');
  switch (verb) {
    case 'show': {
      const name = c.ident();
      c.end();
      return { kind: 'pgpool_show', name };
    }
    case 'reset': {
      const name = c.ident();
      c.end();
      return { kind: 'pgpool_reset', name };
    }
    case 'set': {
      const t = c.peek();
      // PGPOOL SET CACHE DELETE '<query>'; "cache" is also a possible parameter name, so look ahead
      if (t && t.t === 'word' && t.v === 'cache') {
        c.next();
        if (c.optKeyword('delete')) {
          const q = c.peek();
          if (q?.t !== 'str') return c.fail();
          c.next();
          c.end();
          return { kind: 'cache_delete', query: q.v };
        }
        if (!c.optKeyword('to') && !c.optOp('=')) return c.fail();
        const value = parseSetValue(c);
        c.end();
        return { kind: 'pgpool_set', name: 'cache', value };
      }
      const name = c.ident();
      if (!c.optKeyword('to') && !c.optOp('=')) return c.fail();
      const value = parseSetValue(c);
      c.end();
      return { kind: 'pgpool_set', name, value };
    }
    case 'attach': {
      c.keyword('node');
      const node = c.nodeId();
      c.end();
      return { kind: 'attach_node', node };
    }
    case 'detach': {
      c.keyword('node');
      const node = c.nodeId();
      const gracefully = c.optKeyword('gracefully') !== undefined;
      c.end();
      return { kind: 'detach_node', node, gracefully };
    }
    case 'promote': {
      c.keyword('node');
      const node = c.nodeId();
      // SWITCHOVER and GRACEFULLY (pcp_promote_node -s / -g), in either order.
      let switchover = false;
      let gracefully = false;
      for (;;) {
        if (!switchover && c.optKeyword('switchover') !== undefined) switchover = true;
        else if (!gracefully && c.optKeyword('gracefully') !== undefined) gracefully = true;
        else break;
      }
      c.end();
      return { kind: 'promote_node', node, switchover, gracefully };
    }
    case 'recovery': {
      c.keyword('node');
      const node = c.nodeId();
      c.end();
      return { kind: 'recovery_node', node };
    }
    case 'reload':
      c.end();
      return { kind: 'reload' };
    case 'stop': {
      const m = c.optKeyword('smart', 'fast', 'immediate') as StopMode | undefined;
      c.end();
      return { kind: 'stop', mode: m ?? 'smart' };
    }
    default:
      return c.fail();
  }
}

/**
 * The admin command in `sql`, or undefined when the text is an ordinary query
 * (to be routed to PostgreSQL). Only meant for simple-protocol Query text.
 */
export function parseAdminCommand(sql: string): AdminCommand | undefined {
  if (!mayBeAdminCommand(sql)) return undefined;
  const toks = tokenize(sql);
  const isPgpool = (): boolean => {
    const i = skipFiller(sql, 0);
    return i >= 0 && wordAt(sql, i, 'pgpool');
  };
  if (!Array.isArray(toks)) return isPgpool() ? { kind: 'syntax_error', near: toks.near } : undefined;
  const first = toks[0];
  if (first?.t !== 'word') return undefined;
  if (first.v === 'show') {
    const t = toks[1];
    if (!t || (t.t !== 'word' && t.t !== 'qident') || !SHOW_SET.has(t.v)) return undefined;
    const rest = toks.length - 2;
    if (rest === 0 || (rest === 1 && toks[2]!.t === 'op' && toks[2]!.v === ';'))
      return { kind: 'show', target: t.v as ShowTarget };
    return undefined;
  }
  if (first.v !== 'pgpool') return undefined;
  try {
    return parsePgpool(new Cursor(toks));
  } catch (e) {
    if (e instanceof SyntaxError_) return { kind: 'syntax_error', near: e.near };
    throw e;
  }
}

/** The text of an admin command as an operator would write it (for logs and permission errors). */
export function describeAdminCommand(cmd: AdminCommand): string {
  switch (cmd.kind) {
    case 'show':
      return `SHOW ${cmd.target}`;
    case 'pgpool_show':
      return `PGPOOL SHOW ${cmd.name}`;
    case 'pgpool_set':
      return `PGPOOL SET ${cmd.name}`;
    case 'pgpool_reset':
      return `PGPOOL RESET ${cmd.name}`;
    case 'cache_delete':
      return 'PGPOOL SET CACHE DELETE';
    case 'attach_node':
      return `PGPOOL ATTACH NODE ${cmd.node}`;
    case 'detach_node':
      return `PGPOOL DETACH NODE ${cmd.node}${cmd.gracefully ? ' GRACEFULLY' : ''}`;
    case 'promote_node':
      return `PGPOOL PROMOTE NODE ${cmd.node}${cmd.switchover ? ' SWITCHOVER' : ''}${cmd.gracefully ? ' GRACEFULLY' : ''}`;
    case 'recovery_node':
      return `PGPOOL RECOVERY NODE ${cmd.node}`;
    case 'reload':
      return 'PGPOOL RELOAD';
    case 'stop':
      return `PGPOOL STOP ${cmd.mode.toUpperCase()}`;
    case 'syntax_error':
      return 'PGPOOL';
  }
}
