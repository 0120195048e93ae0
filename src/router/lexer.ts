/**
 * A small PostgreSQL lexer for routing: it only has to find the words,
 * parentheses and statement separators of a query, skipping everything that
 * can hide a keyword (comments, strings, quoted identifiers, dollar quotes).
 *
 * Follows PostgreSQL's scan.l for the parts that matter to routing:
 *   - `--` line comments, nested `/* *\/` block comments;
 *   - '…' strings with '' escapes (backslash is literal when
 *     standard_conforming_strings is on, an escape when it is off);
 *   - E'…' strings (backslash escapes), and the B'' X'' N'' U&'' prefixes;
 *   - $tag$…$tag$ dollar quotes ($1 is a parameter, not a quote);
 *   - "quoted identifiers" and U&"…" with "" escapes;
 *   - identifiers may contain `$` after the first character.
 *
 * The lexer never throws; unterminated constructs are reported in `error`.
 */

/** Token kinds (plain numbers: cheap to compare, safe for per-file transpilers). */
export const Tok = {
  /** Unquoted identifier or keyword; `text` is lower-cased. */
  Word: 1,
  /** "Quoted identifier"; `text` is the identifier as written (unescaped). */
  QuotedIdent: 2,
  String: 3,
  Number: 4,
  /** $1 … */
  Param: 5,
  /** Operator run, `::`, `:` … (`text` holds it). */
  Op: 6,
  LParen: 7,
  RParen: 8,
  LBracket: 9,
  RBracket: 10,
  Comma: 11,
  Dot: 12,
  Semi: 13,
} as const;
export type Tok = (typeof Tok)[keyof typeof Tok];

export interface Token {
  kind: Tok;
  /** Lower-cased word / unescaped quoted identifier; '' for the rest (not needed by routing). */
  text: string;
  /** Offset of the token's first character in the source. */
  start: number;
  /** Offset just past the token. */
  end: number;
  /** Parenthesis depth of the token (an LParen/RParen has the depth outside it). */
  depth: number;
  /** For LParen: index of the matching RParen token (-1 if unmatched). */
  match: number;
}

export interface LexResult {
  tokens: Token[];
  /** Set when the text cannot be tokenised or parentheses do not balance. */
  error: string | undefined;
  /** True if the text (ignoring leading whitespace) starts with a comment. */
  leadingComment: boolean;
  /** True if some block comment reads `NO LOAD BALANCE` (case-insensitive, spaces trimmed). */
  noLoadBalanceHint: boolean;
}

const CH_SPACE = 32,
  CH_TAB = 9,
  CH_LF = 10,
  CH_CR = 13,
  CH_FF = 12,
  CH_VT = 11;
const CH_QUOTE = 39 /* ' */,
  CH_DQUOTE = 34,
  CH_DOLLAR = 36,
  CH_LPAREN = 40,
  CH_RPAREN = 41;
const CH_STAR = 42,
  CH_SLASH = 47,
  CH_MINUS = 45,
  CH_COMMA = 44,
  CH_DOT = 46,
  CH_SEMI = 59;
const CH_BACKSLASH = 92,
  CH_LBRACKET = 91,
  CH_RBRACKET = 93,
  CH_AMP = 38,
  CH_PLUS = 43;

function isSpace(c: number): boolean {
  return c === CH_SPACE || c === CH_TAB || c === CH_LF || c === CH_CR || c === CH_FF || c === CH_VT;
}

function isIdentStart(c: number): boolean {
  // ASCII letters, underscore, and any non-ASCII code unit (PostgreSQL accepts high-bit bytes).
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128;
}

function isIdentCont(c: number): boolean {
  return isIdentStart(c) || (c >= 48 && c <= 57) || c === CH_DOLLAR;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** PostgreSQL operator characters (scan.l `op_chars`). */
function isOpChar(c: number): boolean {
  switch (c) {
    case 126:
    case 33:
    case 64:
    case 35:
    case 94:
    case 38:
    case 124:
    case 96:
    case 63: // ~ ! @ # ^ & | ` ?
    case 43:
    case 45:
    case 42:
    case 47:
    case 37:
    case 60:
    case 62:
    case 61:
    case 58: // + - * / % < > = :
      return true;
    default:
      return false;
  }
}

function lowerAscii(s: string): string {
  // toLowerCase is fast in V8 and, for identifiers, equivalent to PostgreSQL's ASCII downcasing
  // except for non-ASCII letters, which PostgreSQL may or may not fold: irrelevant for routing.
  return s.toLowerCase();
}

function isNoLbHint(body: string): boolean {
  const t = body.trim();
  return t.length === 15 && t.toUpperCase() === 'NO LOAD BALANCE';
}

/**
 * Tokenise `sql`.
 * @param standardConformingStrings the session's setting (default on since PostgreSQL 9.1).
 */
export function lex(sql: string, standardConformingStrings = true): LexResult {
  const tokens: Token[] = [];
  const n = sql.length;
  let i = 0;
  let depth = 0;
  const parenStack: number[] = [];
  let error: string | undefined;
  let leadingComment = false;
  let noLoadBalanceHint = false;
  let sawToken = false;

  const push = (kind: Tok, text: string, start: number, end: number): void => {
    tokens.push({ kind, text, start, end, depth, match: -1 });
    sawToken = true;
  };

  while (i < n) {
    const c = sql.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      continue;
    }

    // -- comment
    if (c === CH_MINUS && sql.charCodeAt(i + 1) === CH_MINUS) {
      if (!sawToken) leadingComment = true;
      i += 2;
      while (i < n && sql.charCodeAt(i) !== CH_LF && sql.charCodeAt(i) !== CH_CR) i++;
      continue;
    }
    // /* nested */ comment
    if (c === CH_SLASH && sql.charCodeAt(i + 1) === CH_STAR) {
      if (!sawToken) leadingComment = true;
      const bodyStart = i + 2;
      let level = 1;
      i += 2;
      while (i < n && level > 0) {
        const d = sql.charCodeAt(i);
        if (d === CH_SLASH && sql.charCodeAt(i + 1) === CH_STAR) {
          level++;
          i += 2;
        } else if (d === CH_STAR && sql.charCodeAt(i + 1) === CH_SLASH) {
          level--;
          i += 2;
        } else i++;
      }
      if (level > 0) {
        error = 'unterminated /* comment';
        break;
      }
      if (!noLoadBalanceHint && i - 2 - bodyStart <= 40 && isNoLbHint(sql.slice(bodyStart, i - 2))) {
        noLoadBalanceHint = true;
      }
      continue;
    }

    const start = i;

    if (isIdentStart(c)) {
      // String prefixes: E'', B'', X'', N'', U&'' and U&"".
      const next = sql.charCodeAt(i + 1);
      if (next === CH_QUOTE) {
        const lc = c | 0x20;
        if (lc === 101 /* e */) {
          const end = scanString(sql, i + 1, true);
          if (end < 0) {
            error = 'unterminated quoted string';
            break;
          }
          push(Tok.String, '', start, end);
          i = end;
          continue;
        }
        if (lc === 98 /* b */ || lc === 120 /* x */ || lc === 110 /* n */) {
          const end = scanString(sql, i + 1, !standardConformingStrings);
          if (end < 0) {
            error = 'unterminated quoted string';
            break;
          }
          push(Tok.String, '', start, end);
          i = end;
          continue;
        }
      } else if ((c | 0x20) === 117 /* u */ && next === CH_AMP) {
        const q = sql.charCodeAt(i + 2);
        if (q === CH_QUOTE) {
          const end = scanString(sql, i + 2, false);
          if (end < 0) {
            error = 'unterminated quoted string';
            break;
          }
          push(Tok.String, '', start, end);
          i = end;
          continue;
        }
        if (q === CH_DQUOTE) {
          const end = scanQuotedIdent(sql, i + 2);
          if (end < 0) {
            error = 'unterminated quoted identifier';
            break;
          }
          push(Tok.QuotedIdent, unescapeIdent(sql, i + 2, end), start, end);
          i = end;
          continue;
        }
      }
      i++;
      while (i < n && isIdentCont(sql.charCodeAt(i))) i++;
      push(Tok.Word, lowerAscii(sql.slice(start, i)), start, i);
      continue;
    }

    if (isDigit(c) || (c === CH_DOT && isDigit(sql.charCodeAt(i + 1)))) {
      i = scanNumber(sql, i);
      push(Tok.Number, '', start, i);
      continue;
    }

    switch (c) {
      case CH_QUOTE: {
        const end = scanString(sql, i, !standardConformingStrings);
        if (end < 0) {
          error = 'unterminated quoted string';
          break;
        }
        push(Tok.String, '', start, end);
        i = end;
        continue;
      }
      case CH_DQUOTE: {
        const end = scanQuotedIdent(sql, i);
        if (end < 0) {
          error = 'unterminated quoted identifier';
          break;
        }
        if (end === i + 2) {
          error = 'zero-length delimited identifier';
          break;
        }
        push(Tok.QuotedIdent, unescapeIdent(sql, i, end), start, end);
        i = end;
        continue;
      }
      case CH_DOLLAR: {
        const d = sql.charCodeAt(i + 1);
        if (isDigit(d)) {
          i += 2;
          while (i < n && isDigit(sql.charCodeAt(i))) i++;
          push(Tok.Param, '', start, i);
          continue;
        }
        // $tag$ or $$
        let j = i + 1;
        if (isIdentStart(d)) {
          j++;
          while (j < n && isIdentCont(sql.charCodeAt(j)) && sql.charCodeAt(j) !== CH_DOLLAR) j++;
        }
        if (sql.charCodeAt(j) !== CH_DOLLAR) {
          error = 'unexpected "$"';
          break;
        }
        const tag = sql.slice(i, j + 1);
        const close = sql.indexOf(tag, j + 1);
        if (close < 0) {
          error = 'unterminated dollar-quoted string';
          break;
        }
        i = close + tag.length;
        push(Tok.String, '', start, i);
        continue;
      }
      case CH_LPAREN:
        parenStack.push(tokens.length);
        push(Tok.LParen, '', start, i + 1);
        depth++;
        i++;
        continue;
      case CH_RPAREN: {
        if (parenStack.length === 0) {
          error = 'unbalanced ")"';
          break;
        }
        depth--;
        const open = parenStack.pop() as number;
        tokens[open].match = tokens.length;
        push(Tok.RParen, '', start, i + 1);
        i++;
        continue;
      }
      case CH_LBRACKET:
        push(Tok.LBracket, '', start, i + 1);
        i++;
        continue;
      case CH_RBRACKET:
        push(Tok.RBracket, '', start, i + 1);
        i++;
        continue;
      case CH_COMMA:
        push(Tok.Comma, '', start, i + 1);
        i++;
        continue;
      case CH_SEMI:
        push(Tok.Semi, '', start, i + 1);
        i++;
        continue;
      case CH_DOT:
        push(Tok.Dot, '', start, i + 1);
        i++;
        continue;
      default:
        if (isOpChar(c)) {
          i++;
          // An operator run stops before a comment start.
          while (i < n && isOpChar(sql.charCodeAt(i))) {
            const d = sql.charCodeAt(i);
            if (
              (d === CH_MINUS && sql.charCodeAt(i + 1) === CH_MINUS) ||
              (d === CH_SLASH && sql.charCodeAt(i + 1) === CH_STAR)
            )
              break;
            i++;
          }
          push(Tok.Op, sql.slice(start, i), start, i);
          continue;
        }
        error = `unexpected character "${sql[i]}"`;
    }
    break; // only reached after an error inside the switch
  }

  if (error === undefined && parenStack.length > 0) error = 'unbalanced "("';
  return { tokens, error, leadingComment, noLoadBalanceHint };
}

/** Scan a '…' literal starting at the quote; returns the offset after it, or -1. */
function scanString(sql: string, q: number, backslashEscapes: boolean): number {
  const n = sql.length;
  let i = q + 1;
  for (;;) {
    if (i >= n) return -1;
    const c = sql.charCodeAt(i);
    if (c === CH_QUOTE) {
      if (sql.charCodeAt(i + 1) === CH_QUOTE) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    if (c === CH_BACKSLASH && backslashEscapes) {
      i += 2;
      continue;
    }
    i++;
  }
}

function scanQuotedIdent(sql: string, q: number): number {
  const n = sql.length;
  let i = q + 1;
  for (;;) {
    if (i >= n) return -1;
    if (sql.charCodeAt(i) === CH_DQUOTE) {
      if (sql.charCodeAt(i + 1) === CH_DQUOTE) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    i++;
  }
}

function unescapeIdent(sql: string, q: number, end: number): string {
  const body = sql.slice(q + 1, end - 1);
  return body.includes('"') ? body.replace(/""/g, '"') : body;
}

function scanNumber(sql: string, i: number): number {
  const n = sql.length;
  // Integer part, fraction, exponent; also 0x/0o/0b and `_` separators (PostgreSQL 16+).
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (isDigit(c) || c === 95 || c === CH_DOT || (c >= 97 && c <= 122) || (c >= 65 && c <= 90)) {
      if (c === CH_DOT && sql.charCodeAt(i + 1) === CH_DOT) break; // 1..2 is not a number
      if ((c | 0x20) === 101 /* e */) {
        const d = sql.charCodeAt(i + 1);
        if (d === CH_PLUS || d === CH_MINUS) {
          i += 2;
          continue;
        }
      }
      i++;
      continue;
    }
    break;
  }
  return i;
}
