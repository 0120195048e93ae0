/**
 * Statement classifier: facts about one Query / Parse text, with no session
 * state. policy.ts turns these facts plus the session's state into a routing
 * decision. Rules follow pgpool-II's send_to_where() / is_select_query()
 * (pgpool-II 4.3's src/context/pool_query_context.c, checked against pgpool 4.3.5).
 *
 * It runs on every statement, so it is a hand-written token walk over
 * lexer.ts's output rather than a full grammar: it looks only for what
 * changes the destination (leading keyword, FOR UPDATE/SHARE, INTO, DML verbs
 * anywhere, function calls, relation names, BEGIN/SET options). Anything it
 * does not recognise is classified as going to the primary.
 */

import { lex, Tok, type Token } from './lexer.js';

/** pgpool's send_to_where() classes: EITHER (may be load-balanced), PRIMARY, BOTH (primary + LB node). */
export type Destination = 'either' | 'primary' | 'both';

export type StatementKind =
  | 'select' // SELECT, TABLE, VALUES, ( … ), WITH … SELECT
  | 'insert'
  | 'update'
  | 'delete'
  | 'merge'
  | 'show'
  | 'set'
  | 'reset'
  | 'discard'
  | 'deallocate'
  | 'transaction' // BEGIN/START/COMMIT/END/ROLLBACK/ABORT/SAVEPOINT/RELEASE/PREPARE TRANSACTION/… PREPARED
  | 'lock'
  | 'copy'
  | 'explain'
  | 'declare'
  | 'fetch'
  | 'move'
  | 'close'
  | 'listen'
  | 'unlisten'
  | 'notify'
  | 'prepare'
  | 'execute'
  | 'create'
  | 'other' // DDL, VACUUM, DO, CALL, TRUNCATE, …
  | 'empty' // only whitespace, comments or `;`
  | 'multi' // more than one statement in one Query string
  | 'invalid'; // does not lex / not understood

export type TxCommand =
  | 'begin'
  | 'commit'
  | 'rollback'
  | 'savepoint'
  | 'release'
  | 'rollback_to'
  | 'prepare_transaction'
  | 'commit_prepared'
  | 'rollback_prepared';

export type IsolationLevel = 'serializable' | 'repeatable read' | 'read committed' | 'read uncommitted';

export interface TransactionModes {
  isolation?: IsolationLevel;
  readOnly?: boolean; // READ ONLY (true) / READ WRITE (false)
  deferrable?: boolean;
}

/** Effect of a SET on isolation / read-only defaults (tracked by policy.ts). */
export interface TxSetting {
  /** 'transaction': SET TRANSACTION …, SET transaction_isolation; 'session': SET SESSION CHARACTERISTICS …, SET default_transaction_isolation. */
  scope: 'transaction' | 'session';
  /** Isolation level set, or 'default' for RESET / SET … TO DEFAULT. */
  isolation?: IsolationLevel | 'default';
  readOnly?: boolean;
  /** SET TRANSACTION SNAPSHOT: the transaction runs in a snapshot a transaction on the primary exported. */
  snapshot?: true;
}

/** Whose start-up defaults an ALTER DATABASE / ALTER ROLE … SET changed (names as PostgreSQL folds them). */
export interface DefaultsChange {
  database?: string;
  user?: string;
  /** ALTER ROLE ALL. */
  allUsers?: boolean;
}

export interface Classification {
  kind: StatementKind;
  /** Destination class of the statement on its own (before session state, function and relation checks). */
  dest: Destination;
  /** Counts as a write for disable_load_balance_on_write if it succeeds (pgpool: anything but a read SELECT/SHOW/COPY TO; pgpool's disable_load_balance_on_write (pool_at_command_success())). Writing functions are added by policy.ts. */
  write: boolean;
  /** Transaction-control command, if any. */
  tx?: TxCommand;
  /** COMMIT AND CHAIN / ROLLBACK AND CHAIN: a new transaction starts at once. */
  chain?: boolean;
  /** Options of BEGIN / START TRANSACTION. */
  beginModes?: TransactionModes;
  /** Text to send to the LB node instead of the original (BEGIN READ WRITE → BEGIN; pgpool remove_read_write). */
  standbyText?: string;
  /** SET/RESET of isolation level or read-only mode. */
  txSetting?: TxSetting;
  /** Function calls (lower-cased unless quoted, schema-qualified as written), deduplicated, for the volatility check. */
  functions: readonly string[];
  /** Relations referenced (FROM/JOIN/TABLE/COPY/DML targets), as written, for temp/unlogged/dml_adaptive checks. */
  relations: readonly string[];
  /** Reads: the types of `x::type` casts, as written (a temp table's row type is temporary too). */
  castTypes?: readonly string[];
  /** SET search_path / set_config('search_path', …): whether the new path names pg_temp. */
  tempSearchPath?: boolean;
  /** Reads a system catalog (pg_catalog.* or a pg_* relation name; pgpool's statement table (send_to_where()) / observed with pgpool 4.3.5). */
  systemCatalog: boolean;
  /** Tables written (INSERT/UPDATE/DELETE/MERGE targets incl. writable CTEs, COPY FROM, TRUNCATE) for dml_adaptive. */
  writtenTables: readonly string[];
  /** Temp / unlogged relations this statement creates (CREATE TEMP TABLE x, SELECT … INTO TEMP x). */
  createsTemp: readonly string[];
  /**
   * Relations this statement makes read others (CREATE VIEW v AS …: v reads its query's
   * relations; CREATE TABLE c … INHERITS (p), ALTER TABLE c INHERIT p: p reads c's rows).
   * With check_temp_table, one that reads a temp table of the session is read on the primary.
   */
  readsThrough?: readonly ReadsThrough[];
  /** CREATE FUNCTION / PROCEDURE: its name as written, and the statement in lower case (its body). */
  createsFunction?: { readonly name: string; readonly text: string };
  /** DISCARD ALL / DISCARD TEMP: the session's temp tables are gone. */
  discardsTemp: boolean;
  /** RESET ALL / DISCARD ALL: every session setting is back to its default. */
  resetsAll?: boolean;
  /**
   * RESET name, SET [SESSION] name TO DEFAULT (SET TIME ZONE DEFAULT, SET NAMES DEFAULT):
   * that setting (lower case) is back to its reset value, the client's start-up value if
   * it sent one, else the default.
   */
  resetsSetting?: string;
  /** ALTER DATABASE/ROLE … SET|RESET: the defaults new backends of these start with changed. */
  changesDefaults?: DefaultsChange;
  /**
   * Reads what tells a standby from a primary: SHOW (or current_setting() with a constant
   * name) of transaction_read_only, default_transaction_read_only or in_hot_standby, or SHOW
   * ALL (SERVER_ROLE_SETTINGS). The recovery functions (pg_is_in_recovery() …) are volatile:
   * the function rules send them to the primary unless write_function_list /
   * read_only_function_list say otherwise.
   */
  asksServerRole: boolean;
  /**
   * Bind parameters (1-based) given as the name to current_setting(): whether the statement
   * asks one of SERVER_ROLE_SETTINGS is known only from their values, at Bind.
   */
  settingParams: readonly number[];
  /** Integer constants given as the pid to a PID_FUNCTIONS call (pg_terminate_backend(4711)). */
  pidConsts: readonly number[];
  /** Bind parameters (1-based) given as the pid to a PID_FUNCTIONS call: their values are known at Bind. */
  pidParams: readonly number[];
  /**
   * Several statements, one of which changes a session setting (SET or RESET other than SET
   * LOCAL / SET TRANSACTION, or a set_config() call): run on the primary alone, the session's
   * settings then exist there only.
   */
  multiSetsSession?: boolean;
  /**
   * Several statements: their session-level SET and RESET (and set_config() calls of the
   * form SET takes), in order, when they can be replayed on another connection as they
   * are (undefined: none); null when settings change in a way that cannot (another
   * set_config() call, or transaction control among the statements: whether a SET lasts
   * depends on how its transaction ends).
   */
  multiSettings?: readonly MultiSetting[] | null;
  /**
   * SET / set_config(): the setting it changes (lower case; a dotted custom name whole),
   * when known from the text: a later SET or RESET of it supersedes this one.
   */
  settingName?: string;
  /**
   * SET / set_config(): 'local' when the change ends with the transaction (SET LOCAL,
   * set_config(…, true)), 'unknown' when only a bound value says (set_config(…, $3));
   * undefined: it lasts for the session.
   */
  settingScope?: 'local' | 'unknown';
  /**
   * DO or CALL: runs code that may change session settings where pgrelay cannot see it
   * (set_config(…, false) in its body).
   */
  runsCode?: boolean;
  /** Number of non-empty statements in the text. */
  statementCount: number;
  /** Contains BEGIN/START TRANSACTION among several statements (pgpool's multi-statement rule: "transaction started by multi-statement"). */
  multiBegins: boolean;
  /** Contains a statement that ends a transaction (COMMIT, ROLLBACK, PREPARE TRANSACTION) among several. */
  multiEnds?: boolean;
  /**
   * Contains SAVEPOINT, RELEASE or ROLLBACK TO among several statements: run on the primary
   * alone, inside a transaction the load-balance node shares, it leaves that node's copy of
   * the transaction with other savepoints than the primary's.
   */
  multiSavepoints?: boolean;
  /** Contains DEALLOCATE ALL among several statements: which one (1 = the first statement) is the first such. */
  multiDeallocatesAll?: number;
  /** A block comment reads NO LOAD BALANCE (pgrelay hint, forces the primary for an EITHER statement). */
  noLoadBalanceHint: boolean;
  /** Text starts (after whitespace) with a comment. */
  leadingComment: boolean;
  /** Name for PREPARE / EXECUTE / DEALLOCATE / DECLARE / FETCH / CLOSE, and of the savepoint of SAVEPOINT / RELEASE / ROLLBACK TO (lower-cased unless quoted). */
  name?: string;
  /** Lexer or structure error: the statement is routed to the primary like a write. */
  parseError?: string;
  /** Why `dest` is what it is (short, for logs and tests). */
  reason: string;
}

export interface ClassifyOptions {
  /** pgpool allow_sql_comments (default off): when off, a read whose text does not start with s/S/(/w/W/t/T (e.g. a leading comment, VALUES) is not load-balanced (pgpool's pool_where_to_send()). */
  allowSqlComments: boolean;
  /** Session's standard_conforming_strings (default true): when false, '…' strings take backslash escapes. */
  standardConformingStrings?: boolean;
  /** pgrelay extension, default false (pgpool 4.3 sends every EXPLAIN to the primary, pgpool's statement table (send_to_where())): load-balance EXPLAIN of a read, and EXPLAIN ANALYZE of a read. */
  loadBalanceExplain?: boolean;
}

const EMPTY: readonly string[] = Object.freeze([]);
const EMPTY_NUMBERS: readonly number[] = Object.freeze([]);

// ---------------------------------------------------------------------------------------------
// Keyword sets

/** Words that, followed by `(`, are SQL syntax rather than a function call (or a type modifier). */
const NOT_FUNC = new Set([
  'select',
  'from',
  'where',
  'and',
  'or',
  'not',
  'in',
  'exists',
  'any',
  'all',
  'some',
  'values',
  'as',
  'on',
  'using',
  'join',
  'lateral',
  'with',
  'recursive',
  'materialized',
  'distinct',
  'union',
  'intersect',
  'except',
  'case',
  'when',
  'then',
  'else',
  'end',
  'between',
  'symmetric',
  'asymmetric',
  'like',
  'ilike',
  'similar',
  'to',
  'escape',
  'partition',
  'order',
  'by',
  'range',
  'rows',
  'groups',
  'window',
  'having',
  'limit',
  'offset',
  'fetch',
  'first',
  'next',
  'for',
  'of',
  'only',
  'table',
  'into',
  'returning',
  'set',
  'default',
  'interval',
  'over',
  'filter',
  'within',
  'group',
  'grouping',
  'sets',
  'cube',
  'rollup',
  'cast',
  'treat',
  'coalesce',
  'nullif',
  'greatest',
  'least',
  'extract',
  'overlay',
  'position',
  'substring',
  'trim',
  'normalize',
  'collation',
  'array',
  'row',
  'is',
  'isnull',
  'notnull',
  'overlaps',
  'conflict',
  'do',
  'tablesample',
  'repeatable',
  'search',
  'cycle',
  'zone',
  'at',
  'current_date',
  'current_time',
  'current_timestamp',
  'localtime',
  'localtimestamp',
  'xmlelement',
  'xmlforest',
  'xmlconcat',
  'xmlparse',
  'xmlpi',
  'xmlroot',
  'xmlserialize',
  'xmlexists',
  'xmltable',
  'xmlattributes',
  'xmlnamespaces',
  'json',
  'json_object',
  'json_array',
  'json_objectagg',
  'json_arrayagg',
  'json_table',
  'json_query',
  'json_value',
  'json_exists',
  'json_scalar',
  'json_serialize',
  'merge_action',
  'numeric',
  'decimal',
  'dec',
  'varchar',
  'char',
  'character',
  'varying',
  'bit',
  'timestamp',
  'time',
  'float',
  'nchar',
  'national',
  'second',
  'minute',
  'hour',
  'day',
  'month',
  'year',
  'precision',
  'insert',
  'update',
  'delete',
  'merge',
  'nulls',
  'unique',
  'natural',
  'cross',
  'inner',
  'outer',
  'full',
  'columns',
  'passing',
  'path',
  'ordinality',
  'keys',
  'returns',
  'variadic',
  'matched',
  'by',
  'system_user',
]);

/** Words after which `name(` in a FROM list is a table function rather than an alias with column names. */
const FROM_CALL_PREFIX = new Set([
  'from',
  'join',
  'lateral',
  'only',
  'left',
  'right',
  'full',
  'inner',
  'cross',
  'natural',
  'outer',
  'rows',
]);

/** Words that end a FROM list at their depth. */
const FROM_END = new Set([
  'where',
  'group',
  'having',
  'order',
  'limit',
  'offset',
  'fetch',
  'window',
  'union',
  'intersect',
  'except',
  'returning',
  'set',
  'values',
  'select',
  'for',
  'into',
  'when',
  'then',
]);

/** Calls whose argument syntax contains FROM (`extract(x FROM y)` is not a FROM clause). */
const FROM_ARG_CALLS = new Set(['extract', 'substring', 'trim', 'overlay', 'normalize']);

/** Leading keywords that are always primary-only ("all other statements", pgpool's statement table (send_to_where())). */
const OTHER_PRIMARY = new Set([
  'alter',
  'drop',
  'grant',
  'revoke',
  'comment',
  'cluster',
  'reindex',
  'refresh',
  'security',
  'import',
  'load',
  'reassign',
  'vacuum',
  'analyze',
  'analyse',
  'checkpoint',
  'do',
  'call',
  'truncate',
]);

// ---------------------------------------------------------------------------------------------
// Query walker (SELECT / VALUES / TABLE / WITH / INSERT / UPDATE / DELETE / MERGE bodies)

interface QueryFacts {
  /** Something in the tree writes or locks (DML, FOR UPDATE/SHARE, SELECT INTO). */
  writes: boolean;
  writeReason: string;
  functions: string[] | null;
  relations: string[] | null;
  writtenTables: string[] | null;
  createsTemp: string[] | null;
  systemCatalog: boolean;
  /** Main verb at depth `base` (for WITH … the verb after the CTE list). */
  mainVerb: string;
}

function isNameTok(t: Token | undefined): boolean {
  return t !== undefined && (t.kind === Tok.Word || t.kind === Tok.QuotedIdent);
}

/** Read a possibly qualified name starting at `i`; returns [name, index after it]. */
function readName(toks: Token[], i: number, end: number): [string, number] {
  let name = toks[i].text;
  i++;
  while (i + 1 < end && toks[i].kind === Tok.Dot && isNameTok(toks[i + 1])) {
    name += `.${toks[i + 1].text}`;
    i += 2;
  }
  return [name, i];
}

function pushUnique(list: string[] | null, v: string): string[] {
  if (list === null) return [v];
  if (!list.includes(v)) list.push(v);
  return list;
}

function isSystemRelation(name: string): boolean {
  // pg_catalog.x, pg_x, or schema.pg_x where schema is pg_catalog (pgpool asks the catalog; names are the proxy here).
  if (name.startsWith('pg_')) return true;
  const dot = name.lastIndexOf('.');
  return dot >= 0 && name.startsWith('pg_', dot + 1);
}

/** After `into`/`table`/… skip `only` and return the index of the name or -1. */
function skipOnly(toks: Token[], i: number, end: number): number {
  if (i < end && toks[i].kind === Tok.Word && toks[i].text === 'only') i++;
  return i < end && isNameTok(toks[i]) ? i : -1;
}

function walkQuery(toks: Token[], start: number, end: number): QueryFacts {
  const f: QueryFacts = {
    writes: false,
    writeReason: '',
    functions: null,
    relations: null,
    writtenTables: null,
    createsTemp: null,
    systemCatalog: false,
    mainVerb: '',
  };
  const base = start < end ? toks[start].depth : 0;
  // Per-depth state, indexed by depth - base (depth of a token inside `(` is one more).
  const fromActive: boolean[] = [];
  const fromArgs: boolean[] = [];
  let expectRel = false;
  let sawWith = false;

  const addRelation = (name: string): void => {
    f.relations = pushUnique(f.relations, name);
    if (!f.systemCatalog && isSystemRelation(name)) f.systemCatalog = true;
  };
  const addWritten = (name: string): void => {
    f.writtenTables = pushUnique(f.writtenTables, name);
    f.relations = pushUnique(f.relations, name);
  };
  const write = (reason: string): void => {
    if (!f.writes) {
      f.writes = true;
      f.writeReason = reason;
    }
  };

  for (let i = start; i < end; i++) {
    const t = toks[i];
    const rel = t.depth - base;
    const prev = i > start ? toks[i - 1] : undefined;

    if (t.kind === Tok.LParen) {
      const inner = rel + 1;
      fromArgs[inner] = prev !== undefined && prev.kind === Tok.Word && FROM_ARG_CALLS.has(prev.text);
      // `FROM (a JOIN b)`: the parenthesised join continues the FROM list inside.
      fromActive[inner] = expectRel;
      continue;
    }
    if (t.kind === Tok.RParen) {
      expectRel = false;
      continue;
    }
    if (t.kind === Tok.Comma) {
      if (fromActive[rel] === true) expectRel = true;
      continue;
    }
    if (t.kind !== Tok.Word && t.kind !== Tok.QuotedIdent) {
      if (t.kind !== Tok.Dot) expectRel = false;
      continue;
    }
    if (prev !== undefined && prev.kind === Tok.Dot) continue; // tail of a qualified name / column reference

    const w = t.kind === Tok.Word ? t.text : '';

    if (rel === 0 && f.mainVerb === '' && t.kind === Tok.Word) {
      if (w === 'with') sawWith = true;
      else if (
        w === 'select' ||
        w === 'values' ||
        w === 'table' ||
        w === 'insert' ||
        w === 'update' ||
        w === 'delete' ||
        w === 'merge'
      ) {
        f.mainVerb = w;
      }
    }

    switch (w) {
      case 'for': {
        const a = toks[i + 1]?.text,
          b = toks[i + 2]?.text,
          c = toks[i + 3]?.text;
        if (
          a === 'update' ||
          a === 'share' ||
          (a === 'no' && b === 'key' && c === 'update') ||
          (a === 'key' && b === 'share')
        ) {
          write('SELECT … FOR UPDATE/SHARE');
          i += a === 'no' ? 3 : a === 'key' ? 2 : 1;
        }
        fromActive[rel] = false;
        expectRel = false;
        continue;
      }
      case 'into': {
        fromActive[rel] = false;
        expectRel = false;
        if (prev !== undefined && prev.kind === Tok.Word && (prev.text === 'insert' || prev.text === 'merge')) continue;
        // SELECT … INTO [TEMP|TEMPORARY|UNLOGGED|LOCAL TEMP|GLOBAL TEMP] [TABLE] name
        write('SELECT … INTO');
        let j = i + 1;
        let temp = false;
        while (j < end && toks[j].kind === Tok.Word) {
          const x = toks[j].text;
          if (x === 'temp' || x === 'temporary' || x === 'unlogged') {
            temp = true;
            j++;
          } else if (x === 'local' || x === 'global' || x === 'table') j++;
          else break;
        }
        if (isNameTok(toks[j]) && j < end) {
          const [name, after] = readName(toks, j, end);
          if (temp || name.startsWith('pg_temp.')) f.createsTemp = pushUnique(f.createsTemp, name);
          i = after - 1;
        }
        continue;
      }
      case 'insert': {
        write('INSERT');
        if (toks[i + 1]?.text === 'into') {
          const j = skipOnly(toks, i + 2, end);
          if (j >= 0) {
            const [name, after] = readName(toks, j, end);
            addWritten(name);
            i = after - 1;
          }
        }
        expectRel = false;
        continue;
      }
      case 'update': {
        write('UPDATE');
        // ON CONFLICT DO UPDATE / MERGE … THEN UPDATE SET have no target name.
        if ((prev === undefined || prev.kind !== Tok.Word || prev.text !== 'do') && toks[i + 1]?.text !== 'set') {
          const j = skipOnly(toks, i + 1, end);
          if (j >= 0) {
            const [name, after] = readName(toks, j, end);
            addWritten(name);
            i = after - 1;
          }
        }
        expectRel = false;
        continue;
      }
      case 'delete': {
        write('DELETE');
        if (toks[i + 1]?.text === 'from') {
          const j = skipOnly(toks, i + 2, end);
          if (j >= 0) {
            const [name, after] = readName(toks, j, end);
            addWritten(name);
            i = after - 1;
          }
        }
        expectRel = false;
        continue;
      }
      case 'merge': {
        write('MERGE');
        if (toks[i + 1]?.text === 'into') {
          const j = skipOnly(toks, i + 2, end);
          if (j >= 0) {
            const [name, after] = readName(toks, j, end);
            addWritten(name);
            i = after - 1;
          }
        }
        expectRel = false;
        continue;
      }
      case 'from':
      case 'join':
        if (fromArgs[rel] === true) continue; // extract(x FROM y)
        if (w === 'from' && prev !== undefined && prev.kind === Tok.Word && prev.text === 'distinct') continue; // IS DISTINCT FROM
        fromActive[rel] = true;
        expectRel = true;
        continue;
      case 'table':
        // TABLE t (statement) — also `LOCK TABLE`, not walked here.
        expectRel = true;
        continue;
      case 'lateral':
      case 'only':
        continue;
      case 'on':
      case 'using':
        // Join condition: the FROM list goes on after it (`a JOIN b ON … , c`).
        expectRel = false;
        continue;
      case 'with':
        expectRel = false;
        continue;
      default:
        break;
    }
    if (w !== '' && FROM_END.has(w) && !(w === 'set' && toks[i + 1]?.kind === Tok.LParen && setIsCall(prev))) {
      fromActive[rel] = false;
      expectRel = false;
      continue;
    }

    // A name: relation, function call, alias, column …
    const [name, after] = readName(toks, i, end);
    const next = after < end ? toks[after] : undefined;
    if (next !== undefined && next.kind === Tok.LParen) {
      if (isCall(toks, i, start, after, name, fromActive[rel] === true)) {
        f.functions = pushUnique(f.functions, name);
      }
      expectRel = false;
      i = after - 1;
      continue;
    }
    if (expectRel) {
      addRelation(name);
      expectRel = false;
      i = after - 1;
      continue;
    }
    i = after - 1;
  }
  if (f.mainVerb === '' && sawWith) f.mainVerb = 'with';
  return f;
}

/**
 * `set (` is UPDATE's `SET (a, b) = …`, after the table, its alias or DO UPDATE; after a
 * comma, an operator, a parenthesis or an expression keyword it calls a function named set.
 */
function setIsCall(prev: Token | undefined): boolean {
  if (prev === undefined) return true;
  if (prev.kind === Tok.Word) return SET_CALL_AFTER.has(prev.text);
  return prev.kind !== Tok.QuotedIdent;
}

/** Words after which `set(` is an expression: a call. */
const SET_CALL_AFTER = new Set([
  'select',
  'where',
  'and',
  'or',
  'not',
  'then',
  'else',
  'when',
  'having',
  'distinct',
  'all',
  'returning',
  'on',
  'by',
  'in',
  'is',
  'between',
  'return',
  'values',
]);

/** Is `name(` at token i (name ends before `after`) a function call? */
function isCall(toks: Token[], i: number, start: number, after: number, name: string, inFrom: boolean): boolean {
  const t = toks[i];
  const prev = i > start ? toks[i - 1] : undefined;
  if (t.kind === Tok.Word && after === i + 1 && NOT_FUNC.has(name) && !(name === 'set' && setIsCall(prev)))
    return false;
  if (prev !== undefined) {
    if (prev.kind === Tok.Word) {
      if (prev.text === 'as' || prev.text === 'tablesample') return false; // alias(cols), AS type(n), TABLESAMPLE method(p)
      if (inFrom && !NOT_FUNC.has(prev.text) && !FROM_CALL_PREFIX.has(prev.text)) return false; // FROM t alias(cols)
    } else if (prev.kind === Tok.Op) {
      if (prev.text === '::') return false; // x::numeric(10,2)
    } else if (inFrom && (prev.kind === Tok.RParen || prev.kind === Tok.QuotedIdent)) {
      return false; // FROM f() g(a)
    }
  }
  // CTE name with a column list: WITH x(a, b) AS ( … ) / AS [NOT] MATERIALIZED ( … )
  const open = toks[after];
  const close = open.match;
  if (close > 0) {
    const a = toks[close + 1];
    if (a !== undefined && a.kind === Tok.Word && a.text === 'as') {
      const b = toks[close + 2];
      if (
        b !== undefined &&
        (b.kind === Tok.LParen || (b.kind === Tok.Word && (b.text === 'materialized' || b.text === 'not')))
      ) {
        return false;
      }
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Statement analysis

interface Builder {
  kind: StatementKind;
  dest: Destination;
  write: boolean;
  reason: string;
  tx?: TxCommand;
  chain?: boolean;
  beginModes?: TransactionModes;
  standbyText?: string;
  txSetting?: TxSetting;
  name?: string;
  parseError?: string;
  facts?: QueryFacts;
  createsTemp?: string[];
  readsThrough?: ReadsThrough[];
  createsFunction?: { name: string; text: string };
  writtenTables?: string[];
  relations?: string[];
  discardsTemp?: boolean;
  resetsAll?: boolean;
  resetsSetting?: string;
  runsCode?: boolean;
  settingScope?: 'local' | 'unknown';
  settingName?: string;
  tempSearchPath?: boolean;
  changesDefaults?: DefaultsChange;
  /** Select family: subject to the text-start rule of allow_sql_comments = off. */
  selectText?: boolean;
}

function primary(kind: StatementKind, reason: string, write = true): Builder {
  return { kind, dest: 'primary', write, reason };
}

function invalid(msg: string): Builder {
  return { kind: 'invalid', dest: 'primary', write: true, reason: `does not parse: ${msg}`, parseError: msg };
}

function wordAt(toks: Token[], i: number, end: number): string {
  return i < end && toks[i].kind === Tok.Word ? toks[i].text : '';
}

/**
 * Settings whose value tells a standby from a primary (a hot standby answers `on` whatever
 * the client set): what drivers ask to find a writable server (pgjdbc targetServerType,
 * libpq and node-postgres target_session_attrs = read-write send SHOW transaction_read_only;
 * postgres.js and libpq read default_transaction_read_only / in_hot_standby).
 */
const SERVER_ROLE_SETTINGS = new Set(['transaction_read_only', 'default_transaction_read_only', 'in_hot_standby']);

/** Does reading setting `name` (any case) tell a standby from a primary? */
export function tellsServerRole(name: string): boolean {
  return SERVER_ROLE_SETTINGS.has(name.trim().toLowerCase());
}

/** The unqualified name of a function as written, for pg_catalog functions (`x` or `pg_catalog.x`). */
function catalogFunctionName(fn: string): string | undefined {
  if (!fn.includes('.')) return fn;
  return fn.startsWith('pg_catalog.') && fn.indexOf('.', 11) < 0 ? fn.slice(11) : undefined;
}

/** The text of a string literal token: '…', E'…', $tag$…$tag$ (escapes other than '' left as written). */
function stringText(sql: string, t: Token): string {
  const raw = sql.slice(t.start, t.end);
  if (raw.startsWith('$')) {
    const tagEnd = raw.indexOf('$', 1);
    return raw.slice(tagEnd + 1, raw.length - tagEnd - 1);
  }
  const q = raw.indexOf("'");
  return raw.slice(q + 1, -1).replace(/''/g, "'");
}

/**
 * The names given to current_setting() in toks[s, e): constant ones (lower-cased) and the
 * numbers of bind parameters (optionally cast, e.g. `$1::text`). Other arguments (columns,
 * expressions) are not followed.
 */
function currentSettingArguments(
  sql: string,
  toks: Token[],
  s: number,
  e: number,
): { names: string[]; params: number[] } {
  const a = firstArguments(sql, toks, s, e, CURRENT_SETTING);
  return { names: a.strings.map((n) => n.trim().toLowerCase()), params: a.params };
}

const CURRENT_SETTING: ReadonlySet<string> = new Set(['current_setting']);

/**
 * Functions whose first argument is a backend pid. The pids a client knows are its
 * primary's (its BackendKeyData, pg_backend_pid(), pg_stat_activity read on the
 * primary); a pid pgrelay holds a connection to on another node sends the call there.
 */
export const PID_FUNCTIONS: ReadonlySet<string> = new Set([
  'pg_cancel_backend',
  'pg_terminate_backend',
  'pg_stat_get_activity',
  'pg_blocking_pids',
  'pg_safe_snapshot_blocking_pids',
  'pg_log_backend_memory_contexts',
  'pg_stat_get_backend_activity',
  'pg_stat_get_backend_wait_event',
]);

/**
 * Built-in functions that are not volatile (so pgpool's volatility rule lets a read calling
 * them go to a standby) yet need the primary's backend: they assign the transaction an id
 * (an error during recovery), or read what the session set up there — its LISTENs (LISTEN
 * runs on the primary), its temporary schema (temporary tables live there).
 */
export const PRIMARY_BACKEND_FUNCTIONS: ReadonlySet<string> = new Set([
  'txid_current',
  'pg_current_xact_id',
  'pg_listening_channels',
  'pg_my_temp_schema',
  // The transaction's xid if it has one, and its snapshot: the primary's transaction's.
  'txid_current_if_assigned',
  'pg_current_xact_id_if_assigned',
  'txid_current_snapshot',
  'pg_current_snapshot',
]);

/**
 * The first arguments of every call of one of `fns` (unqualified or pg_catalog.) in
 * toks[s, e) that are a single literal or bind parameter, optionally cast to a type name:
 * string literals' texts, integer literals, parameter numbers (1-based).
 */
function firstArguments(
  sql: string,
  toks: Token[],
  s: number,
  e: number,
  fns: ReadonlySet<string>,
): { strings: string[]; numbers: number[]; params: number[] } {
  const strings: string[] = [];
  const numbers: number[] = [];
  const params: number[] = [];
  for (let i = s; i + 1 < e; i++) {
    const t = toks[i];
    if (t.kind !== Tok.Word || !fns.has(t.text) || toks[i + 1].kind !== Tok.LParen) continue;
    const prev = i > s ? toks[i - 1] : undefined;
    if (prev?.kind === Tok.Dot && !(i >= s + 2 && toks[i - 2].kind === Tok.Word && toks[i - 2].text === 'pg_catalog'))
      continue;
    const close = toks[i + 1].match;
    if (close < 0) continue;
    // The first argument: up to a comma at the call's depth, or the closing parenthesis.
    let k = i + 2;
    const depth = toks[i + 1].depth + 1;
    while (k < close && !(toks[k].kind === Tok.Comma && toks[k].depth === depth)) k++;
    const arg = toks.slice(i + 2, k);
    const cast =
      arg.length === 1 ||
      (arg.length === 3 && arg[1].kind === Tok.Op && sql.slice(arg[1].start, arg[1].end) === '::' && isNameTok(arg[2]));
    if (!cast) continue;
    if (arg[0].kind === Tok.String) strings.push(stringText(sql, arg[0]));
    else if (arg[0].kind === Tok.Param) params.push(Number(sql.slice(arg[0].start + 1, arg[0].end)));
    else if (arg[0].kind === Tok.Number) {
      const n = Number(sql.slice(arg[0].start, arg[0].end));
      if (Number.isSafeInteger(n)) numbers.push(n);
    }
  }
  return { strings, numbers, params };
}

/** Settings whose value decides where the session's statements may run: SET handles them (analyzeSet). */
const ROUTING_SETTINGS = new Set(['default_transaction_isolation', 'transaction_isolation', 'transaction_read_only']);

/**
 * `SELECT set_config(name, value, is_local)` and nothing else (drivers set session
 * parameters this way, often with bind parameters): a SET in all but syntax, so it goes
 * to both nodes like SET, and later reads on the standby see the setting. A set_config
 * inside a larger statement stays a volatile function call (primary). Names that decide
 * routing (isolation, read-only) keep the primary-only path.
 */
function setConfigCall(sql: string, toks: Token[], s: number, e: number): Builder | undefined {
  let i = s + 1;
  if (wordAt(toks, i, e) === 'pg_catalog' && toks[i + 1]?.kind === Tok.Dot) i += 2;
  if (wordAt(toks, i, e) !== 'set_config' || toks[i + 1]?.kind !== Tok.LParen) return undefined;
  const close = toks[i + 1].match;
  if (close === undefined || close < 0 || close >= e) return undefined;
  // Three plain arguments: a literal, a bind parameter or a bare word (true/false), each with an optional cast.
  const args: Token[][] = [[]];
  for (let k = i + 2; k < close; k++) {
    const t = toks[k];
    if (t.kind === Tok.Comma) args.push([]);
    else if (t.kind === Tok.LParen || t.kind === Tok.LBracket) return undefined;
    else args[args.length - 1].push(t);
  }
  if (args.length !== 3 || args.some((a) => a.length === 0 || !plainArgument(sql, a))) return undefined;
  const name = args[0][0];
  if (name.kind === Tok.String && ROUTING_SETTINGS.has(sql.slice(name.start + 1, name.end - 1).toLowerCase()))
    return undefined;
  // Nothing after the call but an alias.
  let k = close + 1;
  if (wordAt(toks, k, e) === 'as') k++;
  if (k < e && isNameTok(toks[k])) k++;
  if (k !== e) return undefined;
  const b: Builder = { kind: 'set', dest: 'both', write: true, reason: 'SELECT set_config(…) (a SET)' };
  if (name.kind === Tok.String && args[0].length === 1)
    b.settingName = sql
      .slice(name.start + 1, name.end - 1)
      .trim()
      .toLowerCase();
  if (b.settingName === 'search_path' && args[1][0].kind !== Tok.Param)
    b.tempSearchPath = /pg_temp/i.test(sql.slice(args[1][0].start, toks[close].start));
  const scope = isLocalArgument(sql, args[2]);
  if (scope !== 'session') b.settingScope = scope;
  return b;
}

/** set_config()'s third argument: true ('local'), false ('session'), or a bound value ('unknown'). */
function isLocalArgument(sql: string, a: Token[]): 'local' | 'session' | 'unknown' {
  const t = a[0];
  if (t.kind === Tok.Param) return 'unknown';
  const v = (t.kind === Tok.String ? sql.slice(t.start + 1, t.end - 1) : t.text || sql.slice(t.start, t.end))
    .trim()
    .toLowerCase();
  return ['true', 't', 'on', 'yes', 'y', '1'].includes(v) ? 'local' : 'session';
}

/** A literal, bind parameter or word, optionally followed by `::type`. */
function plainArgument(sql: string, a: Token[]): boolean {
  const t = a[0];
  if (t.kind !== Tok.String && t.kind !== Tok.Param && t.kind !== Tok.Number && t.kind !== Tok.Word) return false;
  if (a.length === 1) return true;
  return a.length === 3 && a[1].kind === Tok.Op && sql.slice(a[1].start, a[1].end) === '::' && isNameTok(a[2]);
}

/** Analyse one statement toks[s, e) (no top-level `;`). */
function analyzeStatement(sql: string, toks: Token[], s: number, e: number, opts: ClassifyOptions): Builder {
  const first = toks[s];
  if (first.kind === Tok.LParen) return selectFamily(toks, s, e);
  if (first.kind !== Tok.Word) return invalid('statement does not start with a keyword');
  const w = first.text;
  switch (w) {
    case 'select':
      return setConfigCall(sql, toks, s, e) ?? selectFamily(toks, s, e);
    case 'values':
    case 'table':
    case 'with':
      return selectFamily(toks, s, e);
    case 'insert':
    case 'update':
    case 'delete':
    case 'merge': {
      const facts = walkQuery(toks, s, e);
      return { kind: w, dest: 'primary', write: true, reason: w.toUpperCase(), facts };
    }
    case 'show':
      return { kind: 'show', dest: 'either', write: false, reason: 'SHOW', name: wordAt(toks, s + 1, e) };
    case 'set':
      return analyzeSet(sql, toks, s, e);
    case 'reset': {
      const what = wordAt(toks, s + 1, e);
      const b: Builder = { kind: 'reset', dest: 'both', write: true, reason: 'RESET' };
      if (what === 'all' || what === 'default_transaction_isolation') {
        b.txSetting = { scope: 'session', isolation: 'default' };
      }
      if (what === 'all') b.resetsAll = true;
      else if (what === 'time' && wordAt(toks, s + 2, e) === 'zone' && s + 3 === e) b.resetsSetting = 'timezone';
      else if (what === 'session' && wordAt(toks, s + 2, e) === 'authorization' && s + 3 === e)
        b.resetsSetting = 'session_authorization';
      else {
        const name = settingNameAt(toks, s + 1, e);
        if (name !== undefined && name.end === e) b.resetsSetting = name.name;
      }
      return b;
    }
    case 'discard': {
      const what = wordAt(toks, s + 1, e);
      return {
        kind: 'discard',
        dest: 'both',
        write: true,
        reason: 'DISCARD',
        discardsTemp: what === 'all' || what === 'temp' || what === 'temporary',
        // DISCARD ALL includes RESET ALL: the session's default isolation is back to the server's.
        txSetting: what === 'all' ? { scope: 'session', isolation: 'default' } : undefined,
        resetsAll: what === 'all' || undefined,
      };
    }
    case 'deallocate': {
      let j = s + 1;
      if (wordAt(toks, j, e) === 'prepare') j++;
      if (wordAt(toks, j, e) === 'all')
        return { kind: 'deallocate', dest: 'both', write: true, reason: 'DEALLOCATE ALL' };
      const b = primary('deallocate', 'DEALLOCATE name (pgpool 4.3: primary)');
      if (isNameTok(toks[j]) && j < e) b.name = toks[j].text;
      return b;
    }
    case 'begin':
    case 'start':
      return analyzeBegin(toks, s, e);
    case 'commit':
    case 'end':
    case 'rollback':
    case 'abort':
      return analyzeCommit(toks, s, e, w);
    case 'savepoint':
      return {
        kind: 'transaction',
        dest: 'both',
        write: true,
        reason: 'SAVEPOINT',
        tx: 'savepoint',
        name: savepointName(toks, s + 1, e),
      };
    case 'release':
      return {
        kind: 'transaction',
        dest: 'both',
        write: true,
        reason: 'RELEASE',
        tx: 'release',
        name: savepointName(toks, s + 1, e),
      };
    case 'prepare': {
      if (wordAt(toks, s + 1, e) === 'transaction') {
        return {
          kind: 'transaction',
          dest: 'primary',
          write: true,
          reason: 'PREPARE TRANSACTION',
          tx: 'prepare_transaction',
        };
      }
      const b = primary('prepare', 'SQL PREPARE (pgpool 4.3: primary)');
      if (isNameTok(toks[s + 1]) && s + 1 < e) b.name = toks[s + 1].text;
      return b;
    }
    case 'execute': {
      const b = primary('execute', 'SQL EXECUTE (pgpool 4.3: primary)');
      if (isNameTok(toks[s + 1]) && s + 1 < e) b.name = toks[s + 1].text;
      return b;
    }
    case 'lock':
      return analyzeLock(toks, s, e);
    case 'copy':
      return analyzeCopy(toks, s, e);
    case 'explain':
      return analyzeExplain(sql, toks, s, e, opts);
    case 'declare':
    case 'fetch':
    case 'move':
    case 'close': {
      const b = primary(w, `${w.toUpperCase()} (cursor)`);
      const n = toks[s + 1];
      if (w === 'declare' && isNameTok(n) && s + 1 < e) b.name = n.text;
      return b;
    }
    case 'listen':
    case 'unlisten':
    case 'notify':
      return primary(w, w.toUpperCase());
    case 'create':
      return analyzeCreate(sql, toks, s, e);
    default:
      if (OTHER_PRIMARY.has(w)) {
        const b = primary('other', w.toUpperCase());
        if (w === 'do' || w === 'call') b.runsCode = true;
        if (w === 'truncate') {
          const names: string[] = [];
          let j = s + 1;
          while (j < e) {
            if (toks[j].kind === Tok.Word && (toks[j].text === 'table' || toks[j].text === 'only')) {
              j++;
              continue;
            }
            if (!isNameTok(toks[j])) break;
            const [name, after] = readName(toks, j, e);
            names.push(name);
            j = after;
            if (j < e && toks[j].kind === Tok.Op && sql.slice(toks[j].start, toks[j].end) === '*') j++;
            if (j < e && toks[j].kind === Tok.Comma) j++;
            else break;
          }
          b.writtenTables = names;
        }
        if (w === 'alter') {
          const d = defaultsChanged(toks, s, e);
          if (d) b.changesDefaults = d;
          const inherits = alterInherits(toks, s, e);
          if (inherits) b.readsThrough = inherits;
        }
        return b;
      }
      return invalid(`unknown statement "${w}"`);
  }
}

/**
 * ALTER DATABASE d SET|RESET …, ALTER ROLE|USER r [IN DATABASE d] SET|RESET …, ALTER ROLE
 * ALL …: what a backend reads at start-up changed for those connections.
 */
function defaultsChanged(toks: Token[], s: number, e: number): DefaultsChange | undefined {
  const what = wordAt(toks, s + 1, e);
  const at = s + 2;
  if (at >= e) return undefined;
  const named = isNameTok(toks[at]) ? toks[at].text : undefined;
  if (what === 'database') {
    const verb = wordAt(toks, at + 1, e);
    return named !== undefined && (verb === 'set' || verb === 'reset') ? { database: named } : undefined;
  }
  if (what !== 'role' && what !== 'user') return undefined;
  let j = at + 1;
  let database: string | undefined;
  if (wordAt(toks, j, e) === 'in' && wordAt(toks, j + 1, e) === 'database' && isNameTok(toks[j + 2]) && j + 2 < e) {
    database = toks[j + 2].text;
    j += 3;
  }
  const verb = wordAt(toks, j, e);
  if (verb !== 'set' && verb !== 'reset') return undefined;
  if (toks[at].kind === Tok.Word && named === 'all') return database === undefined ? { allUsers: true } : { database };
  return named === undefined ? undefined : { user: named, database };
}

function selectFamily(toks: Token[], s: number, e: number): Builder {
  const facts = walkQuery(toks, s, e);
  const verb = facts.mainVerb;
  const kind: StatementKind =
    verb === 'insert' || verb === 'update' || verb === 'delete' || verb === 'merge' ? verb : 'select';
  if (facts.writes) {
    const reason =
      toks[s].kind === Tok.Word && toks[s].text === 'with' && kind === 'select'
        ? `writable CTE: ${facts.writeReason}`
        : facts.writeReason;
    return { kind, dest: 'primary', write: true, reason, facts };
  }
  return { kind: 'select', dest: 'either', write: false, reason: 'read', facts, selectText: true };
}

function analyzeSet(sql: string, toks: Token[], s: number, e: number): Builder {
  let j = s + 1;
  const scopeWord = wordAt(toks, j, e);
  if (scopeWord === 'session' || scopeWord === 'local') {
    const nx = wordAt(toks, j + 1, e);
    // SET SESSION AUTHORIZATION / SET SESSION CHARACTERISTICS are not scope prefixes.
    if (!(scopeWord === 'session' && (nx === 'authorization' || nx === 'characteristics'))) j++;
  }
  const w = wordAt(toks, j, e);
  const both = (reason: string, write = true): Builder => ({ kind: 'set', dest: 'both', write, reason });

  if (w === 'transaction' || (w === 'session' && wordAt(toks, j + 1, e) === 'characteristics')) {
    const scope: 'transaction' | 'session' = w === 'transaction' ? 'transaction' : 'session';
    let k = j + 1;
    if (scope === 'session') {
      // SESSION CHARACTERISTICS AS TRANSACTION
      if (
        wordAt(toks, k, e) !== 'characteristics' ||
        wordAt(toks, k + 1, e) !== 'as' ||
        wordAt(toks, k + 2, e) !== 'transaction'
      ) {
        return invalid('SET SESSION CHARACTERISTICS');
      }
      k += 3;
    }
    if (scope === 'transaction' && wordAt(toks, k, e) === 'snapshot') {
      // pgrelay: the snapshot exists where it was exported (pg_export_snapshot(), a volatile
      // function: on the primary); the transaction's reads stay there (policy.ts). A standby
      // refuses it (22023 invalid snapshot identifier): pg_dump -j's workers failed.
      const b = both('SET TRANSACTION SNAPSHOT');
      b.dest = 'primary';
      b.write = false;
      b.txSetting = { scope: 'transaction', snapshot: true };
      b.settingScope = 'local';
      return b;
    }
    const modes = parseModes(toks, k, e);
    if (modes === null) return invalid('SET TRANSACTION modes');
    const b = both(scope === 'transaction' ? 'SET TRANSACTION' : 'SET SESSION CHARACTERISTICS');
    b.txSetting = { scope, isolation: modes.isolation, readOnly: modes.readOnly };
    if (scope === 'transaction') b.settingScope = 'local';
    else {
      // The one default it sets, named as SET names it (a later SET of it replaces this).
      const set = [
        modes.isolation !== undefined ? 'default_transaction_isolation' : undefined,
        modes.readOnly !== undefined ? 'default_transaction_read_only' : undefined,
        modes.deferrable !== undefined ? 'default_transaction_deferrable' : undefined,
      ].filter((x) => x !== undefined);
      if (set.length === 1) b.settingName = set[0];
    }
    // pgpool's statement table (send_to_where()): … READ WRITE and … ISOLATION LEVEL SERIALIZABLE go to the primary only.
    if (modes.readOnly === false || modes.isolation === 'serializable') {
      b.dest = 'primary';
      b.reason += modes.readOnly === false ? ' READ WRITE' : ' ISOLATION LEVEL SERIALIZABLE';
    }
    // pgpool's disable_load_balance_on_write (pool_at_command_success()): SET TRANSACTION READ ONLY (and variants) does not count as a write.
    if (modes.readOnly === true) b.write = false;
    return b;
  }

  if (w === 'transaction_read_only' || w === 'transaction_isolation' || w === 'default_transaction_isolation') {
    let k = j + 1;
    const eq = toks[k];
    if (
      eq !== undefined &&
      k < e &&
      ((eq.kind === Tok.Op && sql.slice(eq.start, eq.end) === '=') || (eq.kind === Tok.Word && eq.text === 'to'))
    )
      k++;
    else return invalid(`SET ${w}`);
    const v = settingValue(sql, toks, k, e);
    if (w === 'transaction_read_only') {
      const on = v === 'on' || v === 'true' || v === 'yes' || v === '1' || v === 't' || v === 'y';
      const b = both('SET transaction_read_only', !on);
      b.txSetting = { scope: 'transaction', readOnly: on };
      // pgpool's statement table (send_to_where()): SET transaction_read_only = off/false/0 → primary (any non-"on" value, conservatively).
      if (!on) {
        b.dest = 'primary';
        b.reason = `SET transaction_read_only = ${v}`;
      }
      return b;
    }
    const iso = isolationFromValue(v);
    const scope: 'transaction' | 'session' = w === 'transaction_isolation' ? 'transaction' : 'session';
    const b = both(`SET ${w}`);
    b.txSetting = { scope, isolation: iso ?? (v === 'default' ? 'default' : undefined) };
    if (iso === 'serializable') {
      b.dest = 'primary';
      b.reason += " = 'serializable'";
    }
    return b;
  }
  if (j >= e) return invalid('SET without a parameter');
  if (w === 'constraints' && j === s + 1) {
    // pgpool's statement table (send_to_where()): SET CONSTRAINTS is not a VariableSetStmt, so
    // "all other statements" (primary). It only matters where rows are written, and lasts
    // until the end of the transaction; a standby that has not replayed the schema it names
    // would fail it and abort the client's transaction.
    const b = both('SET CONSTRAINTS');
    b.dest = 'primary';
    b.settingScope = 'local';
    return b;
  }
  const b = both('SET');
  const name = SET_SPECIAL_NAMES.get(w) ?? settingNameAt(toks, j, e)?.name;
  if (name !== undefined) b.settingName = name;
  if (name === 'search_path') b.tempSearchPath = /pg_temp/i.test(sql.slice(toks[j].end, toks[e - 1].end));
  if (scopeWord === 'local') b.settingScope = 'local';
  else {
    const reset = settingToDefault(sql, toks, j, e);
    if (reset !== undefined) b.resetsSetting = reset;
  }
  return b;
}

/** SET forms whose words are not the setting's name. */
const SET_SPECIAL_NAMES: ReadonlyMap<string, string> = new Map([
  ['time', 'timezone'],
  ['names', 'client_encoding'],
  ['schema', 'search_path'],
  ['role', 'role'],
  ['xml', 'xmloption'],
  ['session', 'session_authorization'],
]);

/** A setting's name from toks[i] (a word, or dotted words of a custom setting), lower case, and the index after it. */
function settingNameAt(toks: Token[], i: number, e: number): { name: string; end: number } | undefined {
  const first = toks[i];
  if (i >= e || first === undefined || (first.kind !== Tok.Word && first.kind !== Tok.QuotedIdent)) return undefined;
  let name = first.text.toLowerCase();
  let j = i + 1;
  while (
    j + 1 < e &&
    toks[j].kind === Tok.Dot &&
    (toks[j + 1].kind === Tok.Word || toks[j + 1].kind === Tok.QuotedIdent)
  ) {
    name += `.${toks[j + 1].text.toLowerCase()}`;
    j += 2;
  }
  return { name, end: j };
}

/**
 * `name TO DEFAULT` / `name = DEFAULT`, `TIME ZONE DEFAULT|LOCAL`, `NAMES DEFAULT` from
 * toks[j] to the end: the setting SET returns to its reset value (lower case).
 */
function settingToDefault(sql: string, toks: Token[], j: number, e: number): string | undefined {
  const w = wordAt(toks, j, e);
  if (w === 'session' && wordAt(toks, j + 1, e) === 'authorization' && j + 3 === e)
    return wordAt(toks, j + 2, e) === 'default' ? 'session_authorization' : undefined;
  if (w === 'time' && wordAt(toks, j + 1, e) === 'zone' && j + 3 === e) {
    const v = wordAt(toks, j + 2, e);
    return v === 'default' || v === 'local' ? 'timezone' : undefined;
  }
  if (w === 'names') return j + 2 === e && wordAt(toks, j + 1, e) === 'default' ? 'client_encoding' : undefined;
  const eq = toks[j + 1];
  if (w === '' || j + 3 !== e || eq === undefined) return undefined;
  const isEq =
    (eq.kind === Tok.Op && sql.slice(eq.start, eq.end) === '=') || (eq.kind === Tok.Word && eq.text === 'to');
  return isEq && wordAt(toks, j + 2, e) === 'default' ? w : undefined;
}

function settingValue(sql: string, toks: Token[], k: number, e: number): string {
  if (k >= e) return '';
  const t = toks[k];
  if (t.kind === Tok.Word) return t.text;
  if (t.kind === Tok.String) {
    const raw = sql.slice(t.start, t.end);
    const q = raw.indexOf("'");
    return raw
      .slice(q + 1, -1)
      .replace(/''/g, "'")
      .trim()
      .toLowerCase();
  }
  return sql.slice(t.start, t.end).toLowerCase();
}

/** An isolation level as SET or a start-up option writes it (lower case; spaces as they come). */
export function isolationFromValue(v: string): IsolationLevel | undefined {
  switch (v.replace(/\s+/g, ' ')) {
    case 'serializable':
      return 'serializable';
    case 'repeatable read':
      return 'repeatable read';
    case 'read committed':
      return 'read committed';
    case 'read uncommitted':
      return 'read uncommitted';
    default:
      return undefined;
  }
}

/** Transaction modes: ISOLATION LEVEL …, READ ONLY|WRITE, [NOT] DEFERRABLE, comma or space separated. */
function parseModes(toks: Token[], k: number, e: number): TransactionModes | null {
  const m: TransactionModes = {};
  while (k < e) {
    const t = toks[k];
    if (t.kind === Tok.Comma) {
      k++;
      continue;
    }
    if (t.kind !== Tok.Word) return null;
    const a = t.text,
      b = wordAt(toks, k + 1, e),
      c = wordAt(toks, k + 2, e),
      d = wordAt(toks, k + 3, e);
    if (a === 'isolation' && b === 'level') {
      if (c === 'serializable') {
        m.isolation = 'serializable';
        k += 3;
      } else if (c === 'repeatable' && d === 'read') {
        m.isolation = 'repeatable read';
        k += 4;
      } else if (c === 'read' && d === 'committed') {
        m.isolation = 'read committed';
        k += 4;
      } else if (c === 'read' && d === 'uncommitted') {
        m.isolation = 'read uncommitted';
        k += 4;
      } else return null;
    } else if (a === 'read' && b === 'only') {
      m.readOnly = true;
      k += 2;
    } else if (a === 'read' && b === 'write') {
      m.readOnly = false;
      k += 2;
    } else if (a === 'deferrable') {
      m.deferrable = true;
      k += 1;
    } else if (a === 'not' && b === 'deferrable') {
      m.deferrable = false;
      k += 2;
    } else return null;
  }
  return m;
}

function analyzeBegin(toks: Token[], s: number, e: number): Builder {
  let k = s + 1;
  const w = toks[s].text;
  if (w === 'start') {
    if (wordAt(toks, k, e) !== 'transaction') return invalid('START');
    k++;
  } else {
    const x = wordAt(toks, k, e);
    if (x === 'work' || x === 'transaction') k++;
  }
  const modes = parseModes(toks, k, e);
  if (modes === null) return invalid('BEGIN modes');
  const b: Builder = {
    kind: 'transaction',
    dest: 'both',
    write: false,
    reason: 'BEGIN',
    tx: 'begin',
    beginModes: modes,
  };
  // pgpool's statement table (send_to_where()): BEGIN READ WRITE / … SERIALIZABLE: original text to the primary, plain BEGIN to the standby.
  if (modes.readOnly === false || modes.isolation === 'serializable') {
    let text = 'BEGIN';
    if (modes.isolation !== undefined && modes.isolation !== 'serializable')
      text += ` ISOLATION LEVEL ${modes.isolation.toUpperCase()}`;
    if (modes.readOnly === true) text += ' READ ONLY';
    if (modes.deferrable !== undefined) text += modes.deferrable ? ' DEFERRABLE' : ' NOT DEFERRABLE';
    b.standbyText = text;
  }
  return b;
}

/** The savepoint named from toks[i] on (`[SAVEPOINT] name` of SAVEPOINT, RELEASE, ROLLBACK TO): lower case unless quoted. */
function savepointName(toks: Token[], i: number, e: number): string | undefined {
  let j = i;
  if (wordAt(toks, j, e) === 'savepoint' && j + 1 < e) j++;
  const t = toks[j];
  return j < e && (t.kind === Tok.Word || t.kind === Tok.QuotedIdent) ? t.text : undefined;
}

function analyzeCommit(toks: Token[], s: number, e: number, w: string): Builder {
  let k = s + 1;
  const isRollback = w === 'rollback' || w === 'abort';
  if (wordAt(toks, k, e) === 'prepared' && (w === 'commit' || w === 'rollback')) {
    const tx: TxCommand = w === 'commit' ? 'commit_prepared' : 'rollback_prepared';
    return { kind: 'transaction', dest: 'primary', write: true, reason: `${w.toUpperCase()} PREPARED`, tx };
  }
  const x = wordAt(toks, k, e);
  if (x === 'work' || x === 'transaction') k++;
  if (w === 'rollback' && wordAt(toks, k, e) === 'to') {
    return {
      kind: 'transaction',
      dest: 'both',
      write: true,
      reason: 'ROLLBACK TO SAVEPOINT',
      tx: 'rollback_to',
      name: savepointName(toks, k + 1, e),
    };
  }
  const b: Builder = {
    kind: 'transaction',
    dest: 'both',
    write: false,
    reason: isRollback ? 'ROLLBACK' : 'COMMIT',
    tx: isRollback ? 'rollback' : 'commit',
  };
  if (wordAt(toks, k, e) === 'and') {
    const y = wordAt(toks, k + 1, e);
    if (y === 'chain') b.chain = true;
    else if (!(y === 'no' && wordAt(toks, k + 2, e) === 'chain')) return invalid(`${w.toUpperCase()} AND`);
  } else if (k < e) {
    return invalid(w.toUpperCase());
  }
  return b;
}

function analyzeLock(toks: Token[], s: number, e: number): Builder {
  // LOCK [TABLE] [ONLY] name [*] [, …] [IN mode MODE] [NOWAIT]; default mode ACCESS EXCLUSIVE.
  let inAt = -1;
  for (let k = s + 1; k < e; k++) {
    if (toks[k].kind === Tok.Word && toks[k].text === 'in' && toks[k].depth === toks[s].depth) {
      inAt = k;
      break;
    }
  }
  const b: Builder = { kind: 'lock', dest: 'primary', write: true, reason: 'LOCK (ACCESS EXCLUSIVE)' };
  if (inAt > 0) {
    const a = wordAt(toks, inAt + 1, e),
      c = wordAt(toks, inAt + 2, e);
    b.reason = `LOCK IN ${a.toUpperCase()} ${c.toUpperCase()} MODE`;
    // pgpool's statement table (send_to_where()): ACCESS SHARE / ROW SHARE go to both; ROW EXCLUSIVE and stronger to the primary.
    if ((a === 'access' || a === 'row') && c === 'share') b.dest = 'both';
  }
  return b;
}

function analyzeCopy(toks: Token[], s: number, e: number): Builder {
  let k = s + 1;
  let facts: QueryFacts | undefined;
  let table: string | undefined;
  if (k < e && toks[k].kind === Tok.LParen) {
    const close = toks[k].match;
    facts = walkQuery(toks, k + 1, close);
    k = close + 1;
  } else if (isNameTok(toks[k]) && k < e) {
    const [name, after] = readName(toks, k, e);
    table = name;
    k = after;
    if (k < e && toks[k].kind === Tok.LParen) k = toks[k].match + 1; // column list
  } else {
    return invalid('COPY');
  }
  const dir = wordAt(toks, k, e);
  if (dir === 'from') {
    const b = primary('copy', 'COPY FROM');
    if (table !== undefined) {
      b.writtenTables = [table];
      b.relations = [table];
    }
    return b;
  }
  if (dir !== 'to') return invalid('COPY direction');
  const target = wordAt(toks, k + 1, e);
  if (target !== 'stdout') return primary('copy', 'COPY TO file/program');
  if (facts !== undefined) {
    if (facts.writes)
      return {
        kind: 'copy',
        dest: 'primary',
        write: true,
        reason: `COPY (${facts.writeReason}) TO STDOUT`,
        facts,
      };
    return { kind: 'copy', dest: 'either', write: false, reason: 'COPY (query) TO STDOUT', facts };
  }
  const b: Builder = { kind: 'copy', dest: 'either', write: false, reason: 'COPY table TO STDOUT' };
  if (table !== undefined) b.relations = [table];
  return b;
}

function analyzeExplain(sql: string, toks: Token[], s: number, e: number, opts: ClassifyOptions): Builder {
  let k = s + 1;
  let analyze = false;
  if (k < e && toks[k].kind === Tok.LParen) {
    const close = toks[k].match;
    // (ANALYZE [bool], VERBOSE, …)
    for (let j = k + 1; j < close; j++) {
      if (toks[j].kind === Tok.Word && (toks[j].text === 'analyze' || toks[j].text === 'analyse')) {
        const v = toks[j + 1];
        const off = v !== undefined && v.kind === Tok.Word && (v.text === 'off' || v.text === 'false');
        const zero = v !== undefined && v.kind === Tok.Number && sql.slice(v.start, v.end) === '0';
        analyze = !(off || zero);
      }
    }
    k = close + 1;
  } else {
    for (;;) {
      const x = wordAt(toks, k, e);
      if (x === 'analyze' || x === 'analyse') {
        analyze = true;
        k++;
      } else if (x === 'verbose') k++;
      else break;
    }
  }
  if (k >= e) return invalid('EXPLAIN without a statement');
  const inner = analyzeStatement(sql, toks, k, e, opts);
  if (inner.parseError !== undefined) return inner;
  const b: Builder = {
    kind: 'explain',
    dest: 'primary',
    // EXPLAIN ANALYZE runs the statement; plain EXPLAIN of a write does not write.
    write: analyze && inner.write,
    reason: analyze ? 'EXPLAIN ANALYZE' : 'EXPLAIN',
    facts: inner.facts,
  };
  if (opts.loadBalanceExplain === true && inner.dest === 'either' && !inner.write) {
    b.dest = 'either';
    b.reason += ' of a read';
  } else {
    b.reason += ' (pgpool: primary)';
  }
  return b;
}

function analyzeCreate(sql: string, toks: Token[], s: number, e: number): Builder {
  // CREATE [OR REPLACE] [GLOBAL|LOCAL] {TEMP|TEMPORARY|UNLOGGED} {TABLE|VIEW|SEQUENCE} [IF NOT EXISTS] name
  let k = s + 1;
  let temp = false;
  for (; k < e && toks[k].kind === Tok.Word; k++) {
    const x = toks[k].text;
    if (x === 'temp' || x === 'temporary' || x === 'unlogged') temp = true;
    else if (x !== 'or' && x !== 'replace' && x !== 'global' && x !== 'local') break;
  }
  const b = primary('create', 'CREATE');
  const what = wordAt(toks, k, e);
  if (what === 'table' || what === 'view' || what === 'sequence' || what === 'recursive') {
    k++;
    if (what === 'recursive' && wordAt(toks, k, e) === 'view') k++;
    if (wordAt(toks, k, e) === 'if' && wordAt(toks, k + 1, e) === 'not' && wordAt(toks, k + 2, e) === 'exists') k += 3;
    if (k < e && isNameTok(toks[k])) {
      const [name, after] = readName(toks, k, e);
      if (temp || name.startsWith('pg_temp.')) b.createsTemp = [name];
      if (what === 'table') {
        const at = topLevelWord(toks, after, e, 'inherits');
        if (at >= 0) b.readsThrough = nameList(toks, at + 1, e).map((parent) => ({ relation: parent, of: [name] }));
      } else if (what !== 'sequence') {
        // A view reading a temp relation is temporary itself (PostgreSQL says so in a NOTICE).
        const as = topLevelWord(toks, after, e, 'as');
        const of = as >= 0 ? walkQuery(toks, as + 1, e).relations : null;
        if (of !== null) b.readsThrough = [{ relation: name, of }];
      }
    }
  } else if ((what === 'function' || what === 'procedure') && k + 1 < e && isNameTok(toks[k + 1])) {
    b.createsFunction = {
      name: readName(toks, k + 1, e)[0],
      text: sql.slice(toks[s].start, toks[e - 1].end).toLowerCase(),
    };
  }
  return b;
}

/** ALTER TABLE [IF EXISTS] [ONLY] child … INHERIT parent: parent reads child's rows. */
function alterInherits(toks: Token[], s: number, e: number): ReadsThrough[] | undefined {
  if (wordAt(toks, s + 1, e) !== 'table') return undefined;
  let k = s + 2;
  if (wordAt(toks, k, e) === 'if' && wordAt(toks, k + 1, e) === 'exists') k += 2;
  if (wordAt(toks, k, e) === 'only') k++;
  if (k >= e || !isNameTok(toks[k])) return undefined;
  const [child, after] = readName(toks, k, e);
  let out: ReadsThrough[] | undefined;
  for (let i = after; i < e; i++) {
    const t = toks[i];
    if (t.kind !== Tok.Word || t.text !== 'inherit' || t.depth !== toks[s].depth) continue;
    if (wordAt(toks, i - 1, e) === 'no' || i + 1 >= e || !isNameTok(toks[i + 1])) continue;
    out ??= [];
    out.push({ relation: readName(toks, i + 1, e)[0], of: [child] });
  }
  return out;
}

/** Index of the word `w` at the depth of toks[from] or above, from `from` on; -1 if none. */
function topLevelWord(toks: Token[], from: number, e: number, w: string): number {
  const depth = from < e ? toks[from].depth : 0;
  for (let i = from; i < e; i++)
    if (toks[i].kind === Tok.Word && toks[i].text === w && toks[i].depth <= depth) return i;
  return -1;
}

/** The names of `( a, s.b, … )` starting at toks[i] (the parenthesis). */
function nameList(toks: Token[], i: number, e: number): string[] {
  const out: string[] = [];
  if (i >= e || toks[i].kind !== Tok.LParen) return out;
  let j = i + 1;
  while (j < e && isNameTok(toks[j])) {
    const [name, after] = readName(toks, j, e);
    out.push(name);
    j = after;
    if (j < e && toks[j].kind === Tok.Comma) j++;
    else break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Public entry points

function finish(b: Builder, statementCount: number, hint: boolean, leadingComment: boolean): Classification {
  const f = b.facts;
  const c: Classification = {
    kind: b.kind,
    dest: b.dest,
    write: b.write,
    functions: f?.functions ?? EMPTY,
    relations: b.relations ?? f?.relations ?? EMPTY,
    systemCatalog: f?.systemCatalog ?? b.relations?.some(isSystemRelation) === true,
    writtenTables: b.writtenTables ?? f?.writtenTables ?? EMPTY,
    createsTemp: b.createsTemp ?? f?.createsTemp ?? EMPTY,
    discardsTemp: b.discardsTemp === true,
    asksServerRole: false,
    settingParams: EMPTY_NUMBERS,
    pidConsts: EMPTY_NUMBERS,
    pidParams: EMPTY_NUMBERS,
    statementCount,
    multiBegins: false,
    noLoadBalanceHint: hint,
    leadingComment,
    reason: b.reason,
  };
  if (b.readsThrough !== undefined) c.readsThrough = b.readsThrough;
  if (b.createsFunction !== undefined) c.createsFunction = b.createsFunction;
  if (b.tx !== undefined) c.tx = b.tx;
  if (b.chain !== undefined) c.chain = b.chain;
  if (b.beginModes !== undefined) c.beginModes = b.beginModes;
  if (b.standbyText !== undefined) c.standbyText = b.standbyText;
  if (b.txSetting !== undefined) c.txSetting = b.txSetting;
  if (b.resetsAll === true) c.resetsAll = true;
  if (b.resetsSetting !== undefined) c.resetsSetting = b.resetsSetting;
  if (b.runsCode === true) c.runsCode = true;
  if (b.settingScope !== undefined) c.settingScope = b.settingScope;
  if (b.settingName !== undefined) c.settingName = b.settingName;
  if (b.tempSearchPath !== undefined) c.tempSearchPath = b.tempSearchPath;
  if (b.changesDefaults !== undefined) c.changesDefaults = b.changesDefaults;
  if (b.name !== undefined) c.name = b.name;
  if (b.parseError !== undefined) c.parseError = b.parseError;
  return c;
}

/** pgpool is_select_query() text rule with allow_sql_comments = off (pgpool's pool_where_to_send()): s S ( w W t T, or empty / `;`. */
function startsLikeSelect(sql: string): boolean {
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === 32 || c === 9 || c === 10 || c === 13 || c === 12 || c === 11) i++;
    else break;
  }
  if (i >= n) return true;
  switch (sql.charCodeAt(i)) {
    case 115:
    case 83:
    case 40:
    case 119:
    case 87:
    case 116:
    case 84:
    case 59: // s S ( w W t T ;
      return true;
    default:
      return false;
  }
}

/** Classification.readsThrough: reading `relation` reads the rows of `of` too. */
export interface ReadsThrough {
  readonly relation: string;
  readonly of: readonly string[];
}

/** A session-level SET or RESET among several statements (Classification.multiSettings). */
export interface MultiSetting {
  /** The statement's text. */
  readonly sql: string;
  readonly kind: 'set' | 'reset';
  readonly statementCount: 1;
  readonly resetsAll?: boolean;
  readonly resetsSetting?: string;
  readonly settingScope?: 'local' | 'unknown';
  readonly settingName?: string;
}

/** Classify without the cache. */
export function classifyUncached(sql: string, opts: ClassifyOptions): Classification {
  const lx = lex(sql, opts.standardConformingStrings !== false);
  if (lx.error !== undefined) {
    return finish(invalid(lx.error), 0, lx.noLoadBalanceHint, lx.leadingComment);
  }
  const toks = lx.tokens;
  // Split on top-level `;` (the lexer guarantees balanced parentheses; `;` inside them is a syntax error).
  let builder: Builder | undefined;
  let count = 0;
  let multiBegins = false;
  let multiEnds = false;
  let multiSavepoints = false;
  let multiDeallocatesAll = 0;
  let multiWrite = false;
  let s = 0;
  let written: string[] | null = null;
  let temps: string[] | null = null;
  let through: ReadsThrough[] | null = null;
  let createsFunction: Builder['createsFunction'];
  let discards = false;
  let setsSession = false;
  let settings: MultiSetting[] | null = null;
  let unreplayable = false;
  let txControl = false;
  let runsCode = false;
  let fns: string[] | null = null;
  for (let i = 0; i <= toks.length; i++) {
    if (i < toks.length && toks[i].kind !== Tok.Semi) continue;
    if (i < toks.length && toks[i].depth !== 0) {
      return finish(invalid('";" inside parentheses'), 0, lx.noLoadBalanceHint, lx.leadingComment);
    }
    if (i > s) {
      const b = analyzeStatement(sql, toks, s, i, opts);
      count++;
      if (count === 1) builder = b;
      if (b.parseError !== undefined && builder !== b) builder = b; // any invalid part makes the whole text invalid
      if (b.tx === 'begin') multiBegins = true;
      else if (b.tx === 'commit' || b.tx === 'rollback' || b.tx === 'prepare_transaction') multiEnds = true;
      else if (b.tx === 'savepoint' || b.tx === 'release' || b.tx === 'rollback_to') multiSavepoints = true;
      else if (b.kind === 'deallocate' && b.dest === 'both' && multiDeallocatesAll === 0) multiDeallocatesAll = count;
      // A read calling functions counts as a write here: the whole text goes to the primary anyway and
      // no volatility lookup is made for it.
      if (b.write || (b.facts !== undefined && b.facts.functions !== null)) multiWrite = true;
      const f = b.facts;
      for (const t of b.writtenTables ?? f?.writtenTables ?? EMPTY) written = pushUnique(written, t);
      for (const t of b.createsTemp ?? f?.createsTemp ?? EMPTY) temps = pushUnique(temps, t);
      if (b.readsThrough !== undefined) (through ??= []).push(...b.readsThrough);
      if (b.createsFunction !== undefined) createsFunction = b.createsFunction;
      for (const fn of f?.functions ?? EMPTY) fns = pushUnique(fns, fn);
      if (b.discardsTemp === true) discards = true;
      const changes = changesSessionSetting(b, toks, s);
      if (changes) setsSession = true;
      if (b.tx !== undefined) txControl = true;
      if (b.runsCode === true) runsCode = true;
      if (changes && (b.kind === 'set' || b.kind === 'reset') && b.settingScope !== 'unknown') {
        const item: MultiSetting = {
          sql: sql.slice(toks[s].start, toks[i - 1].end),
          kind: b.kind,
          statementCount: 1,
          resetsAll: b.resetsAll,
          resetsSetting: b.resetsSetting,
          settingScope: b.settingScope,
          settingName: b.settingName,
        };
        settings ??= [];
        settings.push(item);
      } else if (changes) unreplayable = true;
    }
    s = i + 1;
  }

  if (builder === undefined) {
    return finish(
      { kind: 'empty', dest: 'either', write: false, reason: 'empty query' },
      0,
      lx.noLoadBalanceHint,
      lx.leadingComment,
    );
  }
  if (builder.parseError !== undefined) {
    return finish(builder, count, lx.noLoadBalanceHint, lx.leadingComment);
  }
  if (count > 1) {
    // pgpool's multi-statement rule: a multi-statement Query goes to the primary only.
    const c = finish(
      { kind: 'multi', dest: 'primary', write: multiWrite, reason: 'multi-statement query' },
      count,
      lx.noLoadBalanceHint,
      lx.leadingComment,
    );
    c.multiBegins = multiBegins;
    if (multiEnds) c.multiEnds = true;
    if (multiSavepoints) c.multiSavepoints = true;
    if (multiDeallocatesAll > 0) c.multiDeallocatesAll = multiDeallocatesAll;
    c.writtenTables = written ?? EMPTY;
    c.createsTemp = temps ?? EMPTY;
    if (through !== null) c.readsThrough = through;
    // (The last one: several CREATE FUNCTION in one Query are rare.)
    if (createsFunction !== undefined) c.createsFunction = createsFunction;
    // Every statement's (the text goes to the primary whatever they are: for what they may change).
    c.functions = fns ?? EMPTY;
    c.discardsTemp = discards;
    if (setsSession) c.multiSetsSession = true;
    if (settings !== null || unreplayable) c.multiSettings = unreplayable || txControl ? null : settings;
    if (runsCode) c.runsCode = true;
    return c;
  }

  const c = finish(builder, count, lx.noLoadBalanceHint, lx.leadingComment);
  serverRoleFacts(c, sql, toks);
  if (c.dest === 'either') {
    regclassRelations(c, sql, toks);
    // pgpool's pool_where_to_send(): with allow_sql_comments = off a SELECT must *start* with s/S/(/w/W/t/T (VALUES, leading comments → primary).
    if (builder.selectText === true && !opts.allowSqlComments && !startsLikeSelect(sql)) {
      c.dest = 'primary';
      // pgpool's is_select_query() is false here, so the statement also counts as a write (pgpool's disable_load_balance_on_write (pool_at_command_success())).
      c.write = true;
      c.reason = lx.leadingComment
        ? 'leading comment (allow_sql_comments = off)'
        : 'read not starting with s/(/w/t (allow_sql_comments = off)';
    } else if (lx.noLoadBalanceHint) {
      // pgrelay: /*NO LOAD BALANCE*/ forces the primary whatever allow_sql_comments says.
      c.dest = 'primary';
      c.reason = 'NO LOAD BALANCE hint';
    }
  }
  return c;
}

/**
 * A read naming relations in literals — `'name'::regclass`, `CAST('name' AS regclass)`,
 * `to_regclass('name')` — reads them too (a temporary view's definition, a table's size):
 * they join c.relations, named as PostgreSQL reads the literal.
 */
function regclassRelations(c: Classification, sql: string, toks: Token[]): void {
  let names: string[] | null = null;
  let types: string[] | null = null;
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i];
    if (t.kind === Tok.Op && t.text === '::' && isNameTok(toks[i + 1]))
      types = pushUnique(types, readName(toks, i + 1, toks.length)[0]);
    if (t.kind !== Tok.String || !namesRegclass(toks, i)) continue;
    const name = relationOfLiteral(sql.slice(t.start, t.end));
    if (name !== undefined) names = pushUnique(names, name);
  }
  if (types !== null) c.castTypes = types;
  if (names === null) return;
  const all = [...c.relations];
  for (const n of names) if (!all.includes(n)) all.push(n);
  c.relations = all;
}

/** Is the string literal toks[i] cast to regclass, or given to to_regclass()? */
function namesRegclass(toks: Token[], i: number): boolean {
  const next = toks[i + 1];
  if (next === undefined) return false;
  if (next.kind === Tok.Op && next.text === '::') return isRegclassType(toks, i + 2);
  const open = toks[i - 1];
  const fn = toks[i - 2];
  if (open?.kind !== Tok.LParen || fn?.kind !== Tok.Word) return false;
  if (fn.text === 'cast') return next.kind === Tok.Word && next.text === 'as' && isRegclassType(toks, i + 2);
  return fn.text === 'to_regclass' && next.kind === Tok.RParen;
}

/** `regclass` or `pg_catalog.regclass` at toks[k]. */
function isRegclassType(toks: Token[], k: number): boolean {
  const a = toks[k];
  if (a?.kind !== Tok.Word) return false;
  if (a.text === 'regclass') return true;
  return a.text === 'pg_catalog' && toks[k + 1]?.kind === Tok.Dot && toks[k + 2]?.text === 'regclass';
}

/**
 * The relation a plain '…' literal names (`name`, `schema.name`, `db.schema.name`; double
 * quotes keep case, other letters fold to lower case), or undefined for another form.
 */
function relationOfLiteral(raw: string): string | undefined {
  if (raw.charCodeAt(0) !== 39 /* ' */ || raw.length < 2) return undefined;
  const v = raw.slice(1, -1).replace(/''/g, "'");
  const parts: string[] = [];
  let i = 0;
  for (;;) {
    if (v[i] === '"') {
      let part = '';
      let j = i + 1;
      for (;;) {
        const q = v.indexOf('"', j);
        if (q < 0) return undefined;
        if (v[q + 1] === '"') {
          part += v.slice(j, q + 1);
          j = q + 2;
          continue;
        }
        part += v.slice(j, q);
        i = q + 1;
        break;
      }
      parts.push(part);
    } else {
      const dot = v.indexOf('.', i);
      const end = dot < 0 ? v.length : dot;
      const part = v
        .slice(i, end)
        .trim()
        .replace(/[A-Z]/g, (ch) => ch.toLowerCase());
      if (part === '' || part.includes('"')) return undefined;
      parts.push(part);
      i = end;
    }
    if (i >= v.length) break;
    if (v[i] !== '.') return undefined;
    i++;
  }
  return parts.length <= 3 ? parts.slice(-2).join('.') : undefined;
}

/** Does statement `b` (starting at toks[s]) change a session setting: SET / RESET but SET LOCAL and SET TRANSACTION, set_config()? */
function changesSessionSetting(b: Builder, toks: Token[], s: number): boolean {
  if (b.kind === 'reset') return true;
  if (b.kind === 'set') {
    const w = toks[s + 1]?.kind === Tok.Word ? toks[s + 1].text : '';
    return w !== 'local' && w !== 'transaction';
  }
  return b.facts?.functions?.some((f) => catalogFunctionName(f) === 'set_config') === true;
}

/** Fill in asksServerRole / settingParams / pidConsts / pidParams of a single statement's classification (toks: its tokens). */
function serverRoleFacts(c: Classification, sql: string, toks: Token[]): void {
  if (c.kind === 'show') {
    c.asksServerRole = c.name !== undefined && (c.name === 'all' || SERVER_ROLE_SETTINGS.has(c.name));
    return;
  }
  if (c.functions.some((fn) => PID_FUNCTIONS.has(catalogFunctionName(fn) ?? ''))) {
    const pids = firstArguments(sql, toks, 0, toks.length, PID_FUNCTIONS);
    if (pids.numbers.length > 0) c.pidConsts = pids.numbers;
    if (pids.params.length > 0) c.pidParams = pids.params;
  }
  if (!c.functions.some((fn) => catalogFunctionName(fn) === 'current_setting')) return;
  const args = currentSettingArguments(sql, toks, 0, toks.length);
  if (args.names.some((n) => SERVER_ROLE_SETTINGS.has(n))) c.asksServerRole = true;
  if (args.params.length > 0) c.settingParams = args.params;
}

// Small LRU keyed by exact text (the extended protocol re-sends the same Parse text).
const CACHE_MAX = 2048;
const CACHE_MAX_TEXT = 8192;

/** A cached result and when it was last moved to the newest end (in insertions into its cache). */
interface CacheEntry {
  c: Classification;
  stamp: number;
}

interface ClassCache {
  map: Map<string, CacheEntry>;
  /** Insertions so far. */
  clock: number;
}
const caches = new Map<number, ClassCache>();

function optsKey(opts: ClassifyOptions): number {
  return (
    (opts.allowSqlComments ? 1 : 0) |
    (opts.standardConformingStrings === false ? 2 : 0) |
    (opts.loadBalanceExplain === true ? 4 : 0)
  );
}

/**
 * Classify one Query / Parse text. Results for texts up to 8 KB are cached by
 * exact text (LRU, 2048 entries per option set); treat the result as read-only.
 *
 * A hit is moved to the newest end only when half the cache was inserted since it
 * last moved: a text in use is never the oldest, and the common hit (the same Parse
 * text again and again) is one lookup instead of a delete and an insert per call.
 */
export function classify(sql: string, opts: ClassifyOptions): Classification {
  if (sql.length > CACHE_MAX_TEXT) return classifyUncached(sql, opts);
  const cache = cacheFor(caches, opts);
  return lookup(cache, sql) ?? store(cache, sql, classifyUncached(sql, opts));
}

function cacheFor(all: Map<number, ClassCache>, opts: ClassifyOptions): ClassCache {
  const key = optsKey(opts);
  let cache = all.get(key);
  if (cache === undefined) {
    cache = { map: new Map(), clock: 0 };
    all.set(key, cache);
  }
  return cache;
}

function lookup(cache: ClassCache, key: string): Classification | undefined {
  const map = cache.map;
  const hit = map.get(key);
  if (hit === undefined) return undefined;
  if (cache.clock - hit.stamp > CACHE_MAX / 2) {
    map.delete(key); // LRU: move to the newest end
    hit.stamp = ++cache.clock;
    map.set(key, hit);
  }
  return hit.c;
}

function store(cache: ClassCache, key: string, c: Classification): Classification {
  const map = cache.map;
  if (map.size >= CACHE_MAX) {
    const oldest = map.keys().next();
    if (oldest.done !== true) map.delete(oldest.value);
  }
  map.set(key, { c, stamp: ++cache.clock });
  return c;
}

/** Simple-protocol texts by shape (numeric constants replaced), plain reads only. */
const shapeCaches = new Map<number, ClassCache>();

function isDigit(ch: number): boolean {
  return ch >= 0x30 && ch <= 0x39;
}

/** A character that continues a word or parameter: a digit after it belongs to the word (t1, x2y, $1). */
function isWordChar(ch: number): boolean {
  return (ch >= 0x61 && ch <= 0x7a) || (ch >= 0x41 && ch <= 0x5a) || ch === 0x5f || ch === 0x24 || isDigit(ch);
}

/**
 * The text with every numeric constant replaced by `0`, when that is exact: the text
 * has no quote, backslash, comment, dollar quote or non-ASCII character (any of which
 * could put a digit somewhere other than a constant or a word), so every digit run
 * either continues a word or parameter (kept) or starts a constant (replaced; the rest
 * of the constant, `.5`, `e10`, stays and lexes the same). undefined when not exact.
 */
export function numericShape(sql: string): string | undefined {
  let out = '';
  let last = 0;
  let inWord = false;
  const n = sql.length;
  for (let i = 0; i < n; i++) {
    const ch = sql.charCodeAt(i);
    if (ch >= 0x80 || ch === 0x27 || ch === 0x22 || ch === 0x5c) return undefined;
    if ((ch === 0x2d && sql.charCodeAt(i + 1) === 0x2d) || (ch === 0x2f && sql.charCodeAt(i + 1) === 0x2a))
      return undefined;
    if (ch === 0x24 && !isDigit(sql.charCodeAt(i + 1))) return undefined;
    if (isDigit(ch) && !inWord) {
      let j = i + 1;
      while (j < n && isDigit(sql.charCodeAt(j))) j++;
      out += `${sql.slice(last, i)}0`;
      last = j;
      i = j - 1;
      continue;
    }
    inWord = isWordChar(ch);
  }
  return last === 0 ? sql : out + sql.slice(last);
}

/**
 * Can `c` stand for every text of its shape? A single plain read: nothing in its
 * classification comes from the value of a numeric constant (settings, transaction
 * commands, names and texts to send elsewhere are excluded).
 */
function shapeCacheable(c: Classification): boolean {
  return (
    c.kind === 'select' &&
    c.statementCount === 1 &&
    c.parseError === undefined &&
    c.tx === undefined &&
    c.txSetting === undefined &&
    c.standbyText === undefined &&
    c.name === undefined &&
    c.changesDefaults === undefined &&
    c.pidConsts.length === 0 &&
    c.resetsAll !== true &&
    !c.multiBegins &&
    !c.noLoadBalanceHint &&
    !c.leadingComment
  );
}

/**
 * Classify a simple Query's text. Such texts carry their constants (`… WHERE aid =
 * 4711`), so an exact-text cache rarely hits; plain reads are cached by their
 * numeric shape instead (see numericShape and shapeCacheable), everything else is
 * classified afresh.
 */
export function classifyQuery(sql: string, opts: ClassifyOptions): Classification {
  const shape = sql.length > CACHE_MAX_TEXT ? undefined : numericShape(sql);
  if (shape === undefined) return classifyUncached(sql, opts);
  const cache = cacheFor(shapeCaches, opts);
  const hit = lookup(cache, shape);
  if (hit !== undefined) return hit;
  const c = classifyUncached(sql, opts);
  return shapeCacheable(c) ? store(cache, shape, c) : c;
}

/** Empty the classification cache (tests, config reload). */
export function clearClassifierCache(): void {
  caches.clear();
  shapeCaches.clear();
}

/**
 * How many parameters PostgreSQL gives a statement parsed with `declared` parameter types:
 * the larger of that and the highest `$n` its text uses. PREPARE: the declared ones (its
 * `$n` are its inner statement's, analysed when it runs). Undefined where the text's `$n`
 * may or may not be the statement's own (a function body, DDL and other utility commands)
 * or the text does not lex.
 */
export function parameterCount(sql: string, cls: Classification, declared: number): number | undefined {
  switch (cls.kind) {
    case 'prepare':
      return declared;
    case 'create':
    case 'other':
    case 'multi':
    case 'invalid':
      return undefined;
  }
  const lx = lex(sql);
  if (lx.error !== undefined) return undefined;
  let n = declared;
  for (const t of lx.tokens) if (t.kind === Tok.Param) n = Math.max(n, Number(sql.slice(t.start + 1, t.end)));
  return n;
}

/** Kinds whose statements return no rows (a Describe answers NoData: not among PostgreSQL's UtilityReturnsTuples). */
const NO_ROWS: ReadonlySet<StatementKind> = new Set<StatementKind>([
  'set',
  'reset',
  'discard',
  'deallocate',
  'transaction',
  'lock',
  'copy',
  'declare',
  'move',
  'close',
  'listen',
  'unlisten',
  'notify',
  'prepare',
  'create',
  'empty',
]);
const DML_KINDS: ReadonlySet<StatementKind> = new Set<StatementKind>(['insert', 'update', 'delete', 'merge']);

/**
 * Is the statement known to return no rows (a Describe of it answers NoData)? False when it
 * returns rows or may (SELECT, SHOW, EXPLAIN, FETCH, EXECUTE, CALL, DML with RETURNING, what
 * the classifier does not know).
 */
export function returnsNoRows(sql: string, cls: Classification): boolean {
  if (cls.statementCount > 1) return false;
  if (NO_ROWS.has(cls.kind)) return true;
  if (!DML_KINDS.has(cls.kind)) return false;
  const lx = lex(sql);
  if (lx.error !== undefined) return false;
  for (const t of lx.tokens) if (t.kind === Tok.Word && t.text === 'returning') return false;
  return true;
}

/**
 * The statement type PostgreSQL names when it refuses a statement inside a pipeline once an
 * Execute ran in its implicit transaction (PreventInTransactionBlock: "DISCARD ALL cannot be
 * executed within a pipeline"), or undefined for a statement it runs there.
 */
export function pipelineRefusal(sql: string, cls: Classification): string | undefined {
  if (cls.statementCount !== 1) return undefined;
  if (cls.kind === 'discard') return cls.resetsAll === true ? 'DISCARD ALL' : undefined;
  if (cls.tx === 'commit_prepared') return 'COMMIT PREPARED';
  if (cls.tx === 'rollback_prepared') return 'ROLLBACK PREPARED';
  if (cls.kind !== 'other' && cls.kind !== 'create') return undefined;
  const lx = lex(sql);
  if (lx.error !== undefined) return undefined;
  const toks = lx.tokens;
  const [a, b, c, d] = [0, 1, 2, 3].map((i) => wordAt(toks, i, toks.length));
  // VACUUM (VACUUM ANALYZE too; ANALYZE alone runs in a transaction block).
  if (a === 'vacuum') return 'VACUUM';
  if ((a === 'create' || a === 'drop') && (b === 'database' || b === 'tablespace'))
    return `${a.toUpperCase()} ${b.toUpperCase()}`;
  if (a === 'alter' && b === 'system') return 'ALTER SYSTEM';
  if (a === 'create' && b === 'index' && c === 'concurrently') return 'CREATE INDEX CONCURRENTLY';
  if (a === 'create' && b === 'unique' && c === 'index' && d === 'concurrently') return 'CREATE INDEX CONCURRENTLY';
  if (a === 'drop' && b === 'index' && c === 'concurrently') return 'DROP INDEX CONCURRENTLY';
  return undefined;
}
