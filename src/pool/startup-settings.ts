/**
 * pool_mode = transaction: a client's start-up parameters split into what a server
 * connection must be opened with (user, database, and anything pgrelay cannot SET
 * later: these key the server pools) and the settings replayed with SET on whichever
 * connection serves the client (application_name, client_encoding, DateStyle, TimeZone…).
 * Also the replay plan that brings a connection's settings to a session's, and the
 * ParameterStatus values a client is told at start-up. Pure logic.
 */

/**
 * Start-up parameters (GUCs) replayed with SET instead of keying a pool of their own:
 * settings any user may change at any time (PGC_USERSET) that drivers commonly send.
 * Lower case (GUC names are case-insensitive). Not default_transaction_isolation: the
 * router reads a session's default isolation from its connection's start-up (a
 * SERIALIZABLE default keeps reads on the primary), so it stays a start-up parameter.
 */
export const REPLAYED_STARTUP_SETTINGS: ReadonlySet<string> = new Set([
  'application_name',
  'client_encoding',
  'datestyle',
  'timezone',
  'intervalstyle',
  'extra_float_digits',
  'search_path',
  'standard_conforming_strings',
  'bytea_output',
  'client_min_messages',
  'default_transaction_read_only',
  'default_transaction_deferrable',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'lc_monetary',
  'lc_numeric',
  'lc_time',
  'geqo',
  'jit',
  'work_mem',
  'xmloption',
  'default_text_search_config',
]);

/** A client's start-up parameters as pgrelay uses them in transaction mode. */
export interface PooledStartup {
  /** What server connections are opened with (and the server pools keyed by). */
  readonly server: Map<string, string>;
  /** Settings replayed on the connection serving the client (lower-case name → value, in start-up order). */
  readonly settings: Map<string, string>;
}

/**
 * Split start-up parameters. `options` whose every switch is `-c name=value` (or
 * `--name=value`) of a replayed setting is replayed too; any other `options` stays a
 * start-up parameter (its clients get pools of their own). PostgreSQL applies `options`
 * before the other parameters, which therefore win.
 */
export function splitStartup(params: ReadonlyMap<string, string>): PooledStartup {
  const server = new Map<string, string>();
  const settings = new Map<string, string>();
  const options = params.get('options');
  const fromOptions = options === undefined ? undefined : optionSettings(options);
  if (fromOptions) for (const [k, v] of fromOptions) settings.set(k, v);
  for (const [k, v] of params) {
    if (k === 'options') {
      if (!fromOptions) server.set(k, v);
      continue;
    }
    const name = k.toLowerCase();
    if (REPLAYED_STARTUP_SETTINGS.has(name)) {
      settings.delete(name);
      settings.set(name, v);
    } else server.set(k, v);
  }
  return { server, settings };
}

/**
 * The settings of an `options` start-up parameter (`-c a=b -c c=d`, `-ca=b`, `--a=b`;
 * backslash escapes the next character), or undefined when it holds anything else.
 */
export function optionSettings(options: string): Map<string, string> | undefined {
  const words = splitOptionWords(options);
  const out = new Map<string, string>();
  for (let i = 0; i < words.length; i++) {
    let w = words[i];
    if (w === '-c') {
      if (i + 1 >= words.length) return undefined;
      w = words[++i];
    } else if (w.startsWith('--')) w = w.slice(2);
    else if (w.startsWith('-c')) w = w.slice(2);
    else return undefined;
    const eq = w.indexOf('=');
    if (eq <= 0) return undefined;
    // PostgreSQL reads dashes in a setting's name as underscores.
    const name = w.slice(0, eq).replace(/-/g, '_').toLowerCase();
    if (!REPLAYED_STARTUP_SETTINGS.has(name)) return undefined;
    out.delete(name);
    out.set(name, w.slice(eq + 1));
  }
  return out;
}

/** `options` split at unescaped white space, backslashes removed (as PostgreSQL's pg_split_opts). */
function splitOptionWords(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === '\\' && i + 1 < s.length) {
      cur += s[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

/** The session state a pooled connection carries (or a session wants on its connection). */
export interface ConnectionSettings {
  /** Start-up settings applied with SET (lower-case name → value). */
  readonly startup: ReadonlyMap<string, string>;
  /** The session's SET/RESET statements, in order. */
  readonly statements: readonly string[];
}

/** Start-up settings as one string, whatever their order: equal for equal settings. */
export function settingsKey(m: ReadonlyMap<string, string>): string {
  let key = '';
  for (const k of [...m.keys()].sort()) key += `${k}\u0000${m.get(k)}\u0001`;
  return key;
}

/** Distinct start-up settings kept by internSettings. */
const MAX_INTERNED = 10_000;
const interned = new Map<string, ReadonlyMap<string, string>>();

/**
 * One shared map for every client whose start-up settings are the same (never changed in
 * place): a pooled connection's settings and the next client's are then the same object
 * in the common case, and checking that they match at each checkout is an identity test
 * (Backends.checkoutNow) instead of a comparison entry by entry. Past MAX_INTERNED distinct
 * sets, the map is used as it is.
 */
export function internSettings(m: ReadonlyMap<string, string>): ReadonlyMap<string, string> {
  const key = settingsKey(m);
  const known = interned.get(key);
  if (known !== undefined) return known;
  if (interned.size < MAX_INTERNED) interned.set(key, m);
  return m;
}

/**
 * The statements that bring a connection from `have` to `want`: only the start-up settings
 * that differ and the statements it lacks; RESET SESSION AUTHORIZATION, RESET ALL
 * then everything when it ran statements `want` does not have (another session's, or unknown ones) or when start-up
 * settings differ under statements already run (they must come first).
 */
export function replayPlan(have: ConnectionSettings, want: ConnectionSettings): string[] {
  const hs = have.statements;
  const ws = want.statements;
  const prefix = hs.length <= ws.length && hs.every((s, i) => s === ws[i]);
  const out: string[] = [];
  if (prefix && hs.length === ws.length && sameSettings(have.startup, want.startup)) return out;
  if (!prefix || (hs.length > 0 && !sameSettings(have.startup, want.startup))) {
    // RESET ALL leaves the role and the session authorization (SET ROLE of another client).
    out.push('RESET SESSION AUTHORIZATION', 'RESET ALL');
    for (const [k, v] of want.startup) out.push(setStatement(k, v));
    out.push(...ws);
    return out;
  }
  for (const [k, v] of want.startup) if (have.startup.get(k) !== v) out.push(setStatement(k, v));
  for (const k of have.startup.keys()) if (!want.startup.has(k)) out.push(`RESET ${quoteIdent(k)}`);
  for (let i = hs.length; i < ws.length; i++) out.push(ws[i]);
  return out;
}

/** A pooled connection's way back to a client's start-up settings after it reset them (see startupRestore). */
export interface StartupRestore {
  /** Run right behind the statement, on each connection it ran on. */
  readonly sql: string;
  /** The values the statement's ParameterStatus must report (lower-case name → start-up value). */
  readonly reportAs: ReadonlyMap<string, string>;
}

/**
 * pool_mode = transaction: a statement that returns settings to their reset value (RESET
 * ALL, DISCARD ALL, RESET x, SET x TO DEFAULT) gives a direct connection back the values
 * its client sent at start-up, but a pooled connection, where they were SET, the
 * database's defaults. What restores them, or undefined when it touches none of them.
 */
export function startupRestore(
  cls: { readonly statementCount: number; readonly resetsAll?: boolean; readonly resetsSetting?: string },
  startup: ReadonlyMap<string, string>,
): StartupRestore | undefined {
  if (startup.size === 0 || cls.statementCount !== 1) return undefined;
  if (cls.resetsAll === true) return restoreOf(startup);
  const name = cls.resetsSetting;
  const v = name === undefined ? undefined : startup.get(name);
  return name === undefined || v === undefined ? undefined : restoreOf(new Map([[name, v]]));
}

/**
 * The same for the settings statements of a Query of several (Classification.multiSettings,
 * in order): what their RESETs leave at the reset value, less what a later SET of theirs
 * sets (restored behind the whole Query).
 */
export function startupRestoreOfMany(
  items: ReadonlyArray<{
    readonly kind: string;
    readonly resetsAll?: boolean;
    readonly resetsSetting?: string;
    readonly settingName?: string;
  }>,
  startup: ReadonlyMap<string, string>,
): StartupRestore | undefined {
  if (startup.size === 0) return undefined;
  const values = new Map<string, string>();
  for (const it of items) {
    if (it.resetsAll === true) for (const [k, v] of startup) values.set(k, v);
    else if (it.resetsSetting !== undefined) {
      const v = startup.get(it.resetsSetting);
      if (v !== undefined) values.set(it.resetsSetting, v);
    } else if (it.kind === 'set' && it.settingName !== undefined) values.delete(it.settingName);
  }
  return values.size > 0 ? restoreOf(values) : undefined;
}

/** Both restores (two statements of one pipeline reset settings). */
export function mergeRestores(a: StartupRestore | undefined, b: StartupRestore): StartupRestore {
  return a === undefined ? b : restoreOf(new Map([...a.reportAs, ...b.reportAs]));
}

/** `r` less setting `name` (a later SET of the pipeline sets it: that value lasts), or undefined when nothing is left. */
export function restoreWithout(r: StartupRestore, name: string): StartupRestore | undefined {
  if (!r.reportAs.has(name)) return r;
  const values = new Map(r.reportAs);
  values.delete(name);
  return values.size > 0 ? restoreOf(values) : undefined;
}

function restoreOf(values: ReadonlyMap<string, string>): StartupRestore {
  const calls: string[] = [];
  for (const [k, v] of values) calls.push(`pg_catalog.set_config(${quoteLiteral(k)}, ${quoteLiteral(v)}, false)`);
  return { sql: `SELECT ${calls.join(', ')}`, reportAs: values };
}

function sameSettings(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a === b) return true;
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/**
 * A session-level SET of `name` to `value` read as a start-up parameter reads it
 * (set_config takes the raw text: a list such as search_path `"$user", public` stays a list).
 */
export function setStatement(name: string, value: string): string {
  return `SELECT pg_catalog.set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`;
}

/** A string literal whatever standard_conforming_strings is (E'' with \ and ' escaped). */
function quoteLiteral(s: string): string {
  return `E'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function quoteIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

/**
 * The ParameterStatus values a client is told at start-up: what a server connection of its
 * pool reported, with the client's own value of each reported setting it sent (as PgBouncer
 * does: the value as the client wrote it).
 */
export function reportFor(
  report: ReadonlyMap<string, string>,
  settings: ReadonlyMap<string, string>,
): Map<string, string> {
  const out = new Map(report);
  if (settings.size === 0) return out;
  for (const k of report.keys()) {
    const v = settings.get(k.toLowerCase());
    if (v !== undefined) out.set(k, v);
  }
  return out;
}
