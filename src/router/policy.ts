/**
 * Routing policy: where one classified statement goes, given the session's
 * routing state (pgpool's pool_where_to_send() / where_to_send_main_replica()),
 * and how the state changes once the statement has run (pgpool's
 * pool_at_command_success()). Pure; the lead keeps one SessionRoutingState per
 * client session and feeds ReadyForQuery's transaction status back in.
 *
 * Targets: 'primary'; 'standby' = the session's load-balance node (which may be
 * the primary node if the weighted draw chose it; see balancer.ts nodeForRead);
 * 'both' = primary and LB node (all live nodes with statement_level_load_balance).
 */

import {
  type Classification,
  PID_FUNCTIONS,
  PRIMARY_BACKEND_FUNCTIONS,
  type ReadsThrough,
  tellsServerRole,
} from './classifier.js';
import type { DisableLbOnWrite } from '../config/types.js';
import { namedAsWord } from './functions.js';

export interface RoutingConfig {
  load_balance_mode: boolean;
  disable_load_balance_on_write: DisableLbOnWrite;
  statement_level_load_balance: boolean;
  /** primary_routing_query_pattern_list compiled: `^(?:…)$`, case-insensitive, `.` matches newlines. */
  primaryRoutingPatterns: readonly RegExp[];
  /** check_temp_table is not none/off. */
  checkTempTable: boolean;
  check_unlogged_table: boolean;
}

export interface RoutingSourceConfig {
  load_balance_mode: boolean;
  disable_load_balance_on_write: DisableLbOnWrite;
  statement_level_load_balance: boolean;
  primary_routing_query_pattern_list: readonly string[];
  check_temp_table: string;
  check_unlogged_table: boolean;
}

/** Compile the routing part of the configuration (throws naming a bad pattern). */
export function routingConfigFrom(cfg: RoutingSourceConfig): RoutingConfig {
  const patterns: RegExp[] = [];
  for (const raw of cfg.primary_routing_query_pattern_list) {
    const p = raw.trim();
    if (p === '') continue;
    try {
      // pgpool's pattern lists: case-insensitive, anchored, whole query string (POSIX `.` also matches newlines).
      patterns.push(new RegExp(`^(?:${p})$`, 'is'));
    } catch (err) {
      throw new Error(
        `primary_routing_query_pattern_list: invalid regular expression "${p}": ${(err as Error).message}`,
      );
    }
  }
  const t = cfg.check_temp_table.trim().toLowerCase();
  return {
    load_balance_mode: cfg.load_balance_mode,
    disable_load_balance_on_write: cfg.disable_load_balance_on_write,
    statement_level_load_balance: cfg.statement_level_load_balance,
    primaryRoutingPatterns: patterns,
    checkTempTable: !(t === 'none' || t === 'off' || t === 'false' || t === '0'),
    check_unlogged_table: cfg.check_unlogged_table,
  };
}

/** Per-session routing state: a small plain object the session owns. */
export interface SessionRoutingState {
  /** Inside an explicit transaction (last ReadyForQuery status T or E). */
  inTransaction: boolean;
  /** Transaction failed (status E). */
  failed: boolean;
  /** disable_load_balance_on_write flag ("writing transaction"); lifetime depends on the mode (pgpool's disable_load_balance_on_write (pool_at_command_success())). */
  writing: boolean;
  /**
   * The extended-protocol pipeline under way (up to its Sync) has executed a statement that
   * may write on the primary: outside a transaction block, what follows up to the Sync runs in
   * the same implicit transaction there (it sees the uncommitted write; an error anywhere
   * rolls it back), so its reads go to the primary too.
   */
  pipelineWrote: boolean;
  /** Current transaction runs at SERIALIZABLE. */
  txSerializable: boolean;
  /** Current transaction runs at REPEATABLE READ. */
  txRepeatableRead: boolean;
  /** Current transaction is READ ONLY (BEGIN … READ ONLY, SET TRANSACTION READ ONLY). */
  txReadOnly: boolean;
  /** A statement of the current transaction took its snapshot (one whose kind is not in NO_SNAPSHOT). */
  txSnapshotTaken: boolean;
  /**
   * The current transaction's snapshot is the primary's: its reads stay there (a standby's
   * snapshot is another one). A REPEATABLE READ transaction whose first statement ran on
   * the primary, or one that imported a snapshot (SET TRANSACTION SNAPSHOT).
   */
  txSnapshotOnPrimary: boolean;
  /** Session default isolation is REPEATABLE READ (as defaultSerializable). */
  defaultRepeatableRead: boolean;
  /** The backend started with a REPEATABLE READ default (as startupSerializable). */
  startupRepeatableRead: boolean;
  /** Session default isolation is SERIALIZABLE (SET SESSION CHARACTERISTICS / default_transaction_isolation). */
  defaultSerializable: boolean;
  /**
   * The backend started with a SERIALIZABLE default (its database's or role's, or start-up
   * options): what RESET / SET … TO DEFAULT / DISCARD ALL return to.
   */
  startupSerializable: boolean;
  /** The session SET its default isolation (SET SESSION CHARACTERISTICS / default_transaction_isolation), not RESET since. */
  defaultIsolationSet: boolean;
  /**
   * The current transaction is the primary's alone: a multi-statement Query opened it
   * (pgpool's multi-statement rule; pgrelay: also one a multi-statement Query began after
   * ending the last, `COMMIT; BEGIN`, or a COMMIT AND CHAIN of such one), or the copy of a
   * COMMIT or ROLLBACK ended the load-balance node's copy of it while the primary skipped
   * its own after an error (session.ts, both-nodes.ts endedWithoutPrimary).
   */
  txPrimaryAlone: boolean;
  /** dml_adaptive: tables written in the current transaction. */
  writtenTables: string[];
  /** Temp (and unlogged) relations this session created (pgpool check_temp_table = trace). */
  tempTables: string[];
  /** Functions the session created whose body names one of its temp tables (check_temp_table). */
  tempFunctions: string[];
  /**
   * A set_config() call that could not go to both nodes, a SET among several statements
   * of one Query (which runs on the primary alone), or a SET of an object-naming setting in a
   * transaction ran on the primary only: the session's settings exist there alone, so its
   * reads go there (until DISCARD/RESET ALL).
   */
  settingsOnPrimary: boolean;
  /**
   * The session's role or session authorization was set on the primary alone (inside a
   * transaction, or a standby refused a statement for both nodes): its reads go there until
   * DISCARD ALL or RESET SESSION AUTHORIZATION — RESET ALL keeps both.
   */
  roleOnPrimary: boolean;
  /**
   * The session's search_path names pg_temp (SET search_path): current_schema() may create
   * its temporary schema, which a standby refuses.
   */
  tempSearchPath: boolean;
}

export function newSessionRoutingState(): SessionRoutingState {
  return {
    inTransaction: false,
    failed: false,
    writing: false,
    pipelineWrote: false,
    txSerializable: false,
    txRepeatableRead: false,
    txReadOnly: false,
    txSnapshotTaken: false,
    txSnapshotOnPrimary: false,
    defaultSerializable: false,
    startupSerializable: false,
    defaultRepeatableRead: false,
    startupRepeatableRead: false,
    defaultIsolationSet: false,
    txPrimaryAlone: false,
    writtenTables: [],
    tempTables: [],
    tempFunctions: [],
    settingsOnPrimary: false,
    roleOnPrimary: false,
    tempSearchPath: false,
  };
}

/**
 * The default isolation the session's backend started with (`default_transaction_isolation`
 * as the server reports it; undefined: read committed): its default until SET otherwise.
 */
export function startupIsolation(state: SessionRoutingState, level: string | undefined): void {
  state.startupSerializable = state.defaultSerializable = level === 'serializable';
  state.startupRepeatableRead = state.defaultRepeatableRead = level === 'repeatable read';
}

/**
 * pool_mode = transaction: the server connection serving a unit of work started with
 * `level` (its database's and role's default; connections of one pool can differ after an
 * ALTER … SET): what a RESET returns to there, and the session's default unless it SET its own.
 */
export function connectionIsolation(state: SessionRoutingState, level: string): void {
  state.startupSerializable = level === 'serializable';
  state.startupRepeatableRead = level === 'repeatable read';
  if (state.defaultIsolationSet) return;
  state.defaultSerializable = state.startupSerializable;
  state.defaultRepeatableRead = state.startupRepeatableRead;
}

/** Statement kinds that take no snapshot: a REPEATABLE READ transaction takes it at its first other statement. */
const NO_SNAPSHOT = new Set<Classification['kind']>([
  'show',
  'set',
  'reset',
  'discard',
  'deallocate',
  'transaction',
  'lock',
  'listen',
  'unlisten',
  'prepare',
  'close',
  'empty',
]);

export interface RouteInput {
  cls: Classification;
  /** The statement text (matched against primary_routing_query_pattern_list). */
  sql: string;
  state: Readonly<SessionRoutingState>;
  cfg: RoutingConfig;
  /**
   * Whether any of cls.functions writes (FunctionVolatilityCache.anyWriting / resolve).
   * Ignored when cls.functions is empty; undefined with functions present → primary (conservative).
   */
  writingFunction?: boolean;
  /** The lead's catalog answer: cls.relations include a temp or unlogged table, or a sequence (check_temp_table = catalog, check_unlogged_table). */
  tempOrUnlogged?: boolean;
  /**
   * The catalog's answer for the user functions cls.functions calls, none volatile: the body
   * of one names a temp table of the session (or cannot be read for names: another language).
   */
  functionReadsTemp?: boolean;
  /** At Bind: the values of the bind parameters cls.settingParams names (the settings current_setting() reads). */
  settingArgs?: readonly string[];
  /**
   * The node, other than the primary, that owns every backend pid the statement gives a
   * PID_FUNCTIONS call (cls.pidConsts, or cls.pidParams' values at Bind), looked up among
   * the backend connections pgrelay holds; undefined otherwise.
   */
  pidNode?: number;
}

export type Target = 'primary' | 'standby' | 'both';

export interface Decision {
  target: Target;
  /** For 'both': primary first, except COMMIT/ROLLBACK which go to the standby first (pgpool's statement table (send_to_where()) ordering). */
  bothOrder?: 'primary-first' | 'standby-first';
  /** For 'both' with statement_level_load_balance: every live standby, not just the LB node (pgpool's select_load_balancing_node()). */
  allStandbys?: boolean;
  /** For 'both': text for the standby(s) when it differs (BEGIN READ WRITE → BEGIN). */
  standbyText?: string;
  /**
   * For 'standby': this node rather than the session's load-balance node (a pid function
   * given the pid of a backend pgrelay holds on that node).
   */
  node?: number;
  /** The statement marks the transaction as writing if it succeeds (feed to afterStatement). */
  write: boolean;
  reason: string;
}

function toPrimary(reason: string, write: boolean): Decision {
  return { target: 'primary', write, reason };
}

/** Does `rel` (as written) name one of `names`? Compares full names and unqualified last parts. */
export function relationIn(rel: string, names: readonly string[]): boolean {
  if (names.length === 0) return false;
  const relBase = rel.slice(rel.lastIndexOf('.') + 1);
  for (const n of names) {
    if (n === rel) return true;
    const nBase = n.slice(n.lastIndexOf('.') + 1);
    if (nBase === relBase) return true;
  }
  return false;
}

const NO_LINKS: readonly ReadsThrough[] = [];
const NO_NAMES: readonly string[] = [];

/** Settings whose value names a database object (a role, a tablespace, a configuration) that must exist. */
const SETTINGS_NAMING_OBJECTS: ReadonlySet<string> = new Set([
  'role',
  'session_authorization',
  'default_tablespace',
  'temp_tablespaces',
  'default_text_search_config',
]);

/** A statement that writes (a SET in a transaction) sends the transaction's later reads to the primary in `mode`. */
function writeCounts(write: boolean, mode: DisableLbOnWrite): string | undefined {
  return write && (mode === 'transaction' || mode === 'trans_transaction' || mode === 'always')
    ? `it counts as a write (disable_load_balance_on_write = ${mode})`
    : undefined;
}

/** Why the session's reads run on the primary now whatever they read (undefined: they need not). */
function readsOnPrimary(s: SessionRoutingState, mode: DisableLbOnWrite): string | undefined {
  // pgpool's pool_where_to_send()/pgpool's disable_load_balance_on_write (pool_at_command_success()): disable_load_balance_on_write = always: after any write the session reads from the primary.
  if (mode === 'always' && s.writing) return 'session has written (disable_load_balance_on_write = always)';
  // pgrelay: a pipeline's implicit transaction (extended protocol, up to Sync) is one
  // transaction on the primary: a read after its write must see it, and fail with it.
  if (!s.inTransaction)
    return s.pipelineWrote ? 'the pipeline has written: the read is in its implicit transaction' : undefined;
  // pgpool's disable_load_balance_on_write (pool_at_command_success()): transaction / trans_transaction: a transaction that has written reads from the primary.
  if ((mode === 'transaction' || mode === 'trans_transaction') && s.writing)
    return `transaction has written (disable_load_balance_on_write = ${mode})`;
  // pgpool's disable_load_balance_on_write (pool_at_command_success()): SERIALIZABLE transactions read from the primary.
  if (s.txSerializable) return 'SERIALIZABLE transaction';
  // pgrelay: one snapshot for the whole transaction, as on a direct connection: a
  // REPEATABLE READ transaction that began on the primary (pg_dump's catalog reads, then
  // its COPYs), one that imported a snapshot exported there (pg_dump -j's workers).
  if (s.txSnapshotOnPrimary) return "the transaction's snapshot is the primary's";
  return undefined;
}

/**
 * Where a statement goes when the catalog questions it raised (function volatility,
 * relation persistence) cannot be asked now: the primary; a function whose volatility is
 * not known counts as a write (route's rule), so that read-your-writes reads the position
 * after it (a function creating a table, then a read of the table on a standby).
 */
export function unansweredDecision(cls: Classification, unknownFunctions: readonly string[]): Decision {
  return {
    target: 'primary',
    write: cls.write || unknownFunctions.length > 0,
    reason: 'catalog lookup not possible now',
  };
}

/** Decide where one statement goes. */
export function route(input: RouteInput): Decision {
  const { cls: c, state: s, cfg } = input;
  const fnCount = c.functions.length;
  const fnWrites = fnCount > 0 && input.writingFunction !== false;
  const write = c.write || fnWrites;

  // pgpool's pool_where_to_send(): load_balance_mode = off → everything (BOTH included) to the primary.
  if (!cfg.load_balance_mode) return toPrimary('load_balance_mode = off', write);
  // pgpool's multi-statement rule: a multi-statement Query goes to the primary only.
  if (c.statementCount > 1) return toPrimary('multi-statement query', write);
  // pgpool's statement table (send_to_where()): text that does not parse is treated as a write.
  if (c.parseError !== undefined) return toPrimary(c.reason, true);
  // pgpool's statement table (send_to_where()): statement class PRIMARY.
  if (c.dest === 'primary') return toPrimary(c.reason, write);

  if (c.dest === 'both') {
    // pgrelay: a LOCK in a transaction whose reads run on the primary (its snapshot is
    // there) locks there only: a lagging standby may not have the table yet (pg_dump locks
    // each table it dumps), and the standby's copy of the transaction reads nothing.
    if (c.kind === 'lock' && s.inTransaction && s.txSnapshotOnPrimary)
      return toPrimary(`${c.reason} in a transaction whose snapshot is the primary's`, write);
    // pgpool's multi-statement rule: in a transaction begun by a multi-statement Query, BOTH-type statements go to the primary only.
    if (s.inTransaction && s.txPrimaryAlone)
      return toPrimary(
        `${c.reason} in a transaction the primary has alone (a multi-statement query began it, or its copy elsewhere ended)`,
        write,
      );
    // pgrelay: a built-in setting that ends with the transaction (SET LOCAL, set_config(…,
    // true)), in a transaction whose reads run on the primary from now on (this SET counts
    // as a write), matters there only; a standby would refuse what the transaction created
    // (SET LOCAL ROLE of a role it just created) and abort the client's transaction. (A
    // custom one, `a.b`, leaves its name defined after the transaction: both nodes get it.)
    if (
      s.inTransaction &&
      c.kind === 'set' &&
      c.settingScope === 'local' &&
      c.txSetting === undefined &&
      c.settingName !== undefined &&
      !c.settingName.includes('.')
    ) {
      const mode = cfg.disable_load_balance_on_write;
      const why = readsOnPrimary(s, mode) ?? writeCounts(write, mode);
      if (why !== undefined)
        return toPrimary(`${c.reason} for the transaction only, whose reads go to the primary: ${why}`, write);
    }
    // pgrelay: a lasting setting that names a database object (SET ROLE, SET SESSION
    // AUTHORIZATION…) in a transaction whose reads go to the primary from now on (this SET
    // counts as a write): a standby may lack the object (created by the transaction, or
    // just before it and not replayed yet: nothing can be waited for inside the transaction).
    // It runs on the primary alone, and the session's reads stay there (afterStatement:
    // settingsOnPrimary, or roleOnPrimary for the role).
    if (
      s.inTransaction &&
      c.kind === 'set' &&
      c.settingScope === undefined &&
      c.settingName !== undefined &&
      SETTINGS_NAMING_OBJECTS.has(c.settingName) &&
      c.resetsSetting === undefined
    ) {
      const why =
        readsOnPrimary(s, cfg.disable_load_balance_on_write) ?? writeCounts(write, cfg.disable_load_balance_on_write);
      if (why !== undefined) return toPrimary(`${c.reason} of ${c.settingName} in a transaction: ${why}`, write);
    }
    const d: Decision = {
      target: 'both',
      // pgpool's statement table (send_to_where()) ordering: COMMIT/ROLLBACK to the other nodes first, everything else primary first.
      bothOrder: c.tx === 'commit' || c.tx === 'rollback' ? 'standby-first' : 'primary-first',
      write,
      reason: c.reason,
    };
    if (c.standbyText !== undefined) d.standbyText = c.standbyText; // pgpool's statement table (send_to_where()) remove_read_write
    if (cfg.statement_level_load_balance) d.allStandbys = true; // pgpool's select_load_balancing_node()
    return d;
  }

  // EITHER: a read that may be load-balanced.
  const mode = cfg.disable_load_balance_on_write;
  // pgrelay: in a failed transaction PostgreSQL on the primary answers 25P02 (pgpool's disable_load_balance_on_write (pool_at_command_success())).
  if (s.failed) return toPrimary('failed transaction', write);
  // pgrelay: a transaction begun by a multi-statement Query is the primary's alone (the rule
  // above); a read balanced to a standby (pgpool-II does so, regression expected7-s) would
  // run outside it: without its snapshot, and an error there would not abort it (the client
  // would be told "idle" while the primary's transaction stays open).
  if (s.inTransaction && s.txPrimaryAlone)
    return toPrimary(
      'a transaction the primary has alone (a multi-statement query began it, or its copy elsewhere ended): no standby has it',
      write,
    );
  // A pid of a backend pgrelay holds on another node (SHOW pool_pools lists them): the
  // call acts on that node's backend, so it runs there.
  if (input.pidNode !== undefined && !c.write && c.functions.every(isPidFunction)) {
    return {
      target: 'standby',
      node: input.pidNode,
      write: false,
      reason: `acts on a backend of node ${input.pidNode}`,
    };
  }
  const onPrimary = readsOnPrimary(s, mode);
  if (onPrimary !== undefined) return toPrimary(onPrimary, write);
  if (!s.inTransaction && s.defaultSerializable) {
    // Each statement is a SERIALIZABLE transaction of its own, which a hot standby refuses:
    // read where the session's default was set.
    return toPrimary('the session default isolation is SERIALIZABLE', write);
  }
  if (s.settingsOnPrimary || s.roleOnPrimary)
    return toPrimary('a setting of this session was changed on the primary only', write);
  // pgrelay is one writable server to its clients: whether it is a standby (read-only, in
  // recovery) is the primary's answer. Drivers ask it to find a writable server (pgjdbc
  // targetServerType, target_session_attrs = read-write).
  if (c.asksServerRole || input.settingArgs?.some(tellsServerRole) === true)
    return toPrimary('asks whether the server is a standby', write);
  // pgpool's pool_where_to_send(): system catalog relations → primary.
  if (c.systemCatalog) return toPrimary('reads a system catalog', write);
  // The client's BackendKeyData names its primary backend: pg_backend_pid() must agree with
  // it, and functions given a pid act on the primary's backends, the pids a client knows.
  if (callsFunction(c, 'pg_backend_pid')) return toPrimary('pg_backend_pid() is the primary backend', write);
  for (const f of c.functions) if (isPidFunction(f)) return toPrimary(`${f}() takes a primary backend's pid`, write);
  // pgrelay: not volatile, yet the primary's backend alone answers them right (classifier.ts).
  for (const f of c.functions)
    if (isBuiltinNamed(f, PRIMARY_BACKEND_FUNCTIONS)) return toPrimary(`${f}() needs the primary's backend`, write);
  // pgrelay: with pg_temp in search_path, current_schema() / current_schemas() create the
  // session's temporary schema when none exists yet ("cannot create temporary tables during
  // recovery" on a standby).
  if (s.tempSearchPath && input.sql.toLowerCase().includes('current_schema'))
    return toPrimary('current_schema() with pg_temp in search_path', write);
  // pgrelay: an object named in pg_temp is a temporary one, which only the primary has.
  for (const r of c.relations) if (inTempSchema(r)) return toPrimary(`reads temporary relation ${r}`, write);
  for (const t of c.castTypes ?? NO_NAMES) if (inTempSchema(t)) return toPrimary(`casts to temporary type ${t}`, write);
  for (const f of c.functions) if (inTempSchema(f)) return toPrimary(`calls temporary function ${f}`, write);
  // pgpool's pool_where_to_send() check_temp_table (trace: temp tables created in this session) and the lead's catalog answer.
  if (cfg.checkTempTable && s.tempTables.length > 0) {
    for (const r of c.relations) if (relationIn(r, s.tempTables)) return toPrimary(`reads temp table ${r}`, write);
    // A function of the session that reads one (a STABLE one would run on the standby).
    for (const f of c.functions)
      if (relationIn(f, s.tempFunctions)) return toPrimary(`${f}() reads a temp table`, write);
    // One created elsewhere (not volatile) whose body names one, by the catalog.
    if (input.functionReadsTemp === true) return toPrimary('a function it calls names a temp table', write);
    // A temp table's row type: `'(1,2)'::tmp`, `row(…)::tmp`.
    for (const t of c.castTypes ?? NO_NAMES)
      if (relationIn(t, s.tempTables)) return toPrimary(`casts to temp table ${t}'s row type`, write);
    // pgrelay: named in a string given to a function (has_column_privilege('t', …), pg_relation_size('t')).
    const text = input.sql.includes("'") ? input.sql.toLowerCase() : '';
    for (const t of s.tempTables)
      if (namedInLiteral(text, t)) return toPrimary(`names temp table ${t} in a literal`, write);
  }
  if (input.tempOrUnlogged === true) return toPrimary('reads a temp or unlogged table, or a sequence', write);
  // pgpool's pattern lists: primary_routing_query_pattern_list, matched against the whole text.
  for (const p of cfg.primaryRoutingPatterns) {
    if (p.test(input.sql)) return toPrimary('matches primary_routing_query_pattern_list', write);
  }
  // pgpool's writing functions: writing functions.
  if (fnCount > 0 && input.writingFunction !== false) {
    return toPrimary(
      input.writingFunction === true ? 'calls a writing function' : 'function volatility unknown',
      write,
    );
  }
  // pgpool's disable_load_balance_on_write (pool_at_command_success()) dml_adaptive: reads of tables written earlier in this transaction.
  if (mode === 'dml_adaptive' && s.inTransaction && s.writtenTables.length > 0) {
    for (const r of c.relations)
      if (relationIn(r, s.writtenTables))
        return toPrimary(`reads ${r}, written in this transaction (dml_adaptive)`, write);
    // dml_adaptive_object_relationship_list may name functions as dependents.
    for (const f of c.functions)
      if (relationIn(f, s.writtenTables))
        return toPrimary(`calls ${f}, which depends on a table written in this transaction (dml_adaptive)`, write);
  }
  return { target: 'standby', write, reason: c.reason };
}

export interface StatementOutcome {
  /** The statement completed without error. */
  ok: boolean;
  /** Transaction status of the ReadyForQuery that followed ('E' if any node of the session reports E). */
  txStatus: 'I' | 'T' | 'E';
}

/** Is `fn` (as written, maybe schema-qualified) one of PID_FUNCTIONS? */
function isPidFunction(fn: string): boolean {
  return PID_FUNCTIONS.has(fn.slice(fn.lastIndexOf('.') + 1));
}

/** A name qualified with the session's temporary schema (`pg_temp.x`, or its real name `pg_temp_N.x`). */
function inTempSchema(name: string): boolean {
  if (!name.startsWith('pg_temp')) return false;
  const dot = name.indexOf('.');
  return dot === 7 || (dot > 8 && name[7] === '_' && /^\d+$/.test(name.slice(8, dot)));
}

/**
 * Does `text` (the statement in lower case; '' when it has no string literal) hold a string
 * literal naming the relation `name` ('t', 'schema.t', any case)? A match that is no such
 * literal only sends the statement to the primary.
 */
function namedInLiteral(text: string, name: string): boolean {
  const base = name.slice(name.lastIndexOf('.') + 1).toLowerCase();
  if (base === '' || text === '') return false;
  for (let i = text.indexOf(base); i > 0; i = text.indexOf(base, i + 1)) {
    const before = text.charCodeAt(i - 1);
    const after = text.charCodeAt(i + base.length);
    // ' . or " before it, ' or " after it: 'mytable', 'pg_temp.mytable', '"MyTable"'.
    if ((before === 39 || before === 46 || before === 34) && (after === 39 || after === 34)) return true;
  }
  return false;
}

/** `fn` is one of `names`, unqualified or in pg_catalog. */
function isBuiltinNamed(fn: string, names: ReadonlySet<string>): boolean {
  const dot = fn.lastIndexOf('.');
  return dot < 0 ? names.has(fn) : fn.slice(0, dot) === 'pg_catalog' && names.has(fn.slice(dot + 1));
}

/** Does the statement call function `name` (also schema-qualified)? */
function callsFunction(cls: Classification, name: string): boolean {
  for (const f of cls.functions) if (f === name || f.endsWith(`.${name}`)) return true;
  return false;
}

/** Update the session's routing state after a statement (pgpool's disable_load_balance_on_write (pool_at_command_success()) pool_at_command_success). Mutates `state`. */
export function afterStatement(
  state: SessionRoutingState,
  cls: Classification,
  decision: Decision,
  outcome: StatementOutcome,
  mode: DisableLbOnWrite,
): void {
  const wasInTx = state.inTransaction;
  const nowInTx = outcome.txStatus !== 'I';
  // pgpool's disable_load_balance_on_write (pool_at_command_success()): BEGIN and COMMIT/ROLLBACK clear the flag, except in trans_transaction (and always, which is session-wide).
  const clearsWriting = mode !== 'trans_transaction' && mode !== 'always';

  if (outcome.ok) {
    if (cls.tx === 'begin' && cls.statementCount <= 1) {
      if (clearsWriting) state.writing = false;
      state.writtenTables = [];
      state.txPrimaryAlone = false;
      const iso = cls.beginModes?.isolation;
      state.txSerializable = iso !== undefined ? iso === 'serializable' : state.defaultSerializable;
      state.txRepeatableRead = iso !== undefined ? iso === 'repeatable read' : state.defaultRepeatableRead;
      state.txReadOnly = cls.beginModes?.readOnly === true;
    }
    const ts = cls.txSetting;
    if (ts?.scope === 'transaction' && ts.readOnly !== undefined && nowInTx) state.txReadOnly = ts.readOnly;
    if (ts !== undefined && ts.isolation !== undefined) {
      if (ts.scope === 'session') {
        const reset = ts.isolation === 'default';
        state.defaultSerializable = reset ? state.startupSerializable : ts.isolation === 'serializable';
        state.defaultRepeatableRead = reset ? state.startupRepeatableRead : ts.isolation === 'repeatable read';
        state.defaultIsolationSet = !reset;
      } else if (nowInTx) {
        state.txSerializable = ts.isolation === 'serializable';
        state.txRepeatableRead = ts.isolation === 'repeatable read';
      }
    }
    if (ts?.snapshot === true && nowInTx) state.txSnapshotOnPrimary = state.txSnapshotTaken = true;
    if (nowInTx && !state.txSnapshotTaken && decision.target !== 'both' && !NO_SNAPSHOT.has(cls.kind)) {
      state.txSnapshotTaken = true;
      if (state.txRepeatableRead && decision.target === 'primary') state.txSnapshotOnPrimary = true;
    }
    if (cls.discardsTemp) state.tempTables = [];
    if (cls.tempSearchPath !== undefined) state.tempSearchPath = cls.tempSearchPath;
    else if (cls.resetsAll === true || cls.resetsSetting === 'search_path') state.tempSearchPath = false;
    if (cls.resetsAll === true) state.settingsOnPrimary = false;
    else if (
      decision.target === 'primary' &&
      (callsFunction(cls, 'set_config') ||
        cls.multiSetsSession === true ||
        (cls.kind === 'set' && cls.settingScope === undefined && cls.txSetting === undefined))
    ) {
      if (cls.settingName === 'role' || cls.settingName === 'session_authorization') state.roleOnPrimary = true;
      else state.settingsOnPrimary = true;
    }
    // DISCARD ALL and RESET SESSION AUTHORIZATION take both back to the login role; RESET ALL
    // keeps them.
    if ((cls.kind === 'discard' && cls.resetsAll === true) || cls.resetsSetting === 'session_authorization')
      state.roleOnPrimary = false;
    for (const t of cls.createsTemp) if (!state.tempTables.includes(t)) state.tempTables.push(t);
    const fn = cls.createsFunction;
    if (
      fn !== undefined &&
      !state.tempFunctions.includes(fn.name) &&
      state.tempTables.some((t) => namedAsWord(fn.text, t))
    )
      state.tempFunctions.push(fn.name);
    // pgrelay: a view of a temp table is temporary itself; a permanent parent shows its temp
    // children's rows to this session only. Reads of either must run on the primary too.
    for (const link of cls.readsThrough ?? NO_LINKS) {
      if (state.tempTables.includes(link.relation)) continue;
      if (link.of.some((r) => inTempSchema(r) || relationIn(r, state.tempTables))) state.tempTables.push(link.relation);
    }

    // pgrelay: a savepoint command writes nothing, and a READ ONLY transaction can write no
    // table a standby has: there it does not make the transaction count as writing (pgpool-II
    // counts every statement but SELECT, BEGIN and COMMIT/ROLLBACK).
    const savepointReadOnly =
      state.txReadOnly && (cls.tx === 'savepoint' || cls.tx === 'release' || cls.tx === 'rollback_to');
    if (decision.write && !savepointReadOnly) {
      // pgpool's disable_load_balance_on_write (pool_at_command_success()): the flag is set after success when inside a transaction, or always in mode `always`.
      if (mode === 'always') state.writing = true;
      else if ((mode === 'transaction' || mode === 'trans_transaction') && nowInTx) state.writing = true;
      if (mode === 'dml_adaptive' && nowInTx) {
        for (const t of cls.writtenTables) if (!state.writtenTables.includes(t)) state.writtenTables.push(t);
      }
    }
    // pgpool's multi-statement rule: a multi-statement Query that opened a transaction. (pgrelay:
    // also one that ended the transaction and began another, `COMMIT; BEGIN`: it ran on the
    // primary alone, where the new one is.)
    if (cls.statementCount > 1 && nowInTx && ((cls.multiBegins && !wasInTx) || cls.multiEnds === true))
      state.txPrimaryAlone = true;
  }

  // pgrelay: a savepoint command among several statements ran on the primary alone inside a
  // transaction the standby shared: their savepoints differ now (a ROLLBACK TO of it there
  // would fail, 3B001), so the rest of the transaction is the primary's (the session rolls
  // back the standby's copy). Failed or not: the SAVEPOINT may have run before the error.
  if (cls.statementCount > 1 && cls.multiSavepoints === true && wasInTx && nowInTx) state.txPrimaryAlone = true;

  const ended = (wasInTx && !nowInTx) || (outcome.ok && (cls.tx === 'commit' || cls.tx === 'rollback'));
  if (ended) {
    if (clearsWriting) state.writing = false;
    state.writtenTables = [];
    // pgrelay: COMMIT AND CHAIN of a transaction a multi-statement Query began ran on the
    // primary alone (the rule above), so the chained transaction is the primary's alone too.
    if (!(cls.chain === true && nowInTx && decision.target === 'primary')) state.txPrimaryAlone = false;
    // COMMIT AND CHAIN keeps the transaction characteristics (not its snapshot).
    if (!(cls.chain === true && nowInTx)) state.txSerializable = state.txRepeatableRead = state.txReadOnly = false;
    state.txSnapshotTaken = state.txSnapshotOnPrimary = false;
  }
  if (!nowInTx) {
    state.txSerializable = state.txRepeatableRead = state.txReadOnly = false;
    state.txSnapshotTaken = state.txSnapshotOnPrimary = false;
  }
  state.inTransaction = nowInTx;
  state.failed = outcome.txStatus === 'E';
}
