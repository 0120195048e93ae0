/**
 * Does a function called by a SELECT write? (pgpool's pool_has_function_call() rules)
 *
 *   - nextval, setval, currval, lastval always write (also schema-qualified);
 *   - else if write_function_list is non-empty: a name matching one of its regexes writes, others do not;
 *   - else if read_only_function_list is non-empty: a name NOT matching it writes;
 *   - else the primary's catalog decides: a name with any volatile overload
 *     (pg_proc.provolatile = 'v', any schema for an unqualified name) writes.
 *
 * List entries are regexes anchored as pgpool does (`^(?:entry)$`), matched
 * against the name as written in the query (lower-cased unless quoted,
 * schema-qualified only if the query qualified it). Matching is
 * case-insensitive (pgrelay: PostgreSQL folds unquoted names anyway).
 *
 * Catalog answers are cached per (database, name) in an LRU of `relcache_size`
 * entries that expire after `relcache_expire` seconds (0 = never), like
 * pgpool's relcache. Nothing here runs a query for a statement without
 * function calls; a cached answer is a Map lookup.
 */

import { CATALOG_FUNCTIONS } from './catalog-functions.js';

/** Runs one SQL text on the primary (in the session's database) and returns its rows. */
export type CatalogQuery = (sql: string) => Promise<ReadonlyArray<Readonly<Record<string, unknown>>>>;

export interface FunctionPolicyConfig {
  write_function_list: readonly string[];
  read_only_function_list: readonly string[];
  /** Maximum cached (database, function) answers (pgpool relcache_size, default 256). */
  relcache_size: number;
  /** Seconds before a cached answer expires (pgpool relcache_expire, 0 = never). */
  relcache_expire: number;
}

const ALWAYS_WRITING = new Set(['nextval', 'setval', 'currval', 'lastval']);

/** Compile a pgpool regex list; throws naming the bad entry. */
export function compileFunctionList(listName: string, entries: readonly string[]): RegExp[] {
  const out: RegExp[] = [];
  for (const raw of entries) {
    const e = raw.trim();
    if (e === '') continue;
    try {
      out.push(new RegExp(`^(?:${e})$`, 'i'));
    } catch (err) {
      throw new Error(`${listName}: invalid regular expression "${e}": ${(err as Error).message}`);
    }
  }
  return out;
}

function baseName(fn: string): string {
  const dot = fn.lastIndexOf('.');
  return dot < 0 ? fn : fn.slice(dot + 1);
}

/** SQL literal safe whatever standard_conforming_strings is. */
function lit(s: string): string {
  return `E'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/**
 * SQL returning one row (`name`, its volatility `vol`, and its `lang` and `src`) per overload
 * of the given function names. Unqualified names match any schema (as pgpool's
 * `n.nspname ~ '.*'`); `schema.name` matches that schema only; a longer name uses its last
 * two parts.
 */
export function volatileFunctionsSql(fns: readonly string[]): string {
  const plain: string[] = [];
  const qualified: Array<[string, string, string]> = [];
  for (const fn of fns) {
    const parts = fn.split('.');
    if (parts.length === 1) plain.push(fn);
    else qualified.push([fn, parts[parts.length - 2], parts[parts.length - 1]]);
  }
  const selects: string[] = [];
  if (plain.length > 0) {
    selects.push(
      `SELECT p.proname::text AS name, ${BODY} FROM pg_catalog.pg_proc AS p ${LANGUAGE}` +
        ` WHERE p.proname IN (${plain.map(lit).join(', ')})`,
    );
  }
  for (const [fn, schema, name] of qualified) {
    selects.push(
      `SELECT ${lit(fn)}::text AS name, ${BODY} FROM pg_catalog.pg_proc AS p ${LANGUAGE}` +
        ' JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace' +
        ` WHERE n.nspname = ${lit(schema)} AND p.proname = ${lit(name)}`,
    );
  }
  return selects.length === 1 ? selects[0] : selects.map((q) => `(${q})`).join(' UNION ALL ');
}

/** The columns of an overload's volatility, language and body (volatileFunctionsSql). */
const BODY = 'p.provolatile::text AS vol, l.lanname::text AS lang, p.prosrc AS src';
const LANGUAGE = 'JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang';

/** SQL constructs written like function calls, which are no pg_proc functions. */
const CALL_FORMS = new Set([
  'coalesce',
  'greatest',
  'least',
  'nullif',
  'row',
  'array',
  'cast',
  'trim',
  'grouping',
  'character',
  'decimal',
  'float',
  'xmlattributes',
  'xmlconcat',
  'xmlelement',
  'xmlexists',
  'xmlforest',
  'xmlparse',
  'xmlpi',
  'xmlroot',
  'xmlserialize',
]);

/** A function of pg_catalog (or a construct written like one), by its name as the classifier lists it. */
export function isBuiltinFunction(fn: string): boolean {
  const dot = fn.indexOf('.');
  if (dot < 0) return CATALOG_FUNCTIONS.has(fn) || CALL_FORMS.has(fn);
  return fn.startsWith('pg_catalog.') && fn.indexOf('.', 11) < 0;
}

/** Words a function body writes before a parenthesis that are no calls (SQL and PL/pgSQL). */
const NOT_CALLS = new Set([
  'if',
  'elsif',
  'while',
  'return',
  'returns',
  'values',
  'in',
  'exists',
  'any',
  'all',
  'some',
  'and',
  'or',
  'not',
  'as',
  'select',
  'case',
  'when',
  'then',
  'else',
  'over',
  'filter',
  'group',
  'partition',
  'on',
  'from',
  'where',
  'using',
  'returning',
  'set',
  'check',
  'unique',
  'key',
  'distinct',
  'lateral',
  'join',
  'by',
  'with',
  'execute',
  'perform',
  'into',
  'varying',
  'precision',
  'is',
  'like',
  'ilike',
  'between',
  'limit',
  'offset',
  'query',
]);

/** Words after which a name followed by a parenthesis is a relation or type (INSERT INTO t (a)…). */
const RELATION_BEFORE = new Set([
  'into',
  'table',
  'references',
  'on',
  'update',
  'type',
  'view',
  'index',
  'with',
  'recursive',
]);

/**
 * What a volatile function's body tells of the settings it may change: `sets` when it may
 * itself (any language but C, internal, SQL and PL/pgSQL; a SET or RESET statement, also in
 * dynamic SQL; a set_config call; a call of a quoted name, not looked into), and the user
 * functions it calls (`calls`: names as written, lower-cased; built-in ones left out), which
 * may in turn (FunctionVolatilityCache looks them up).
 */
export function bodySettings(lang: string, src: string): { sets: boolean; calls: string[] } {
  const calls: string[] = [];
  if (lang === 'c' || lang === 'internal') return { sets: false, calls };
  if (lang !== 'sql' && lang !== 'plpgsql') return { sets: true, calls };
  if (/\bset_config\b/i.test(src)) return { sets: true, calls };
  // A SET or RESET statement: first in the body, after ; or a block word, or quoted (EXECUTE).
  if (/(^|[;'(]|\b(then|loop|begin|else|do)\b)\s*(set|reset)\b/i.test(src)) return { sets: true, calls };
  // A call of a quoted name ("SetTenant"(…)): not looked into.
  if (/"\s*\(/.test(src)) return { sets: true, calls };
  const call = /([A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)?)\s*\(/g;
  for (let m = call.exec(src); m !== null; m = call.exec(src)) {
    const name = m[1].toLowerCase();
    if (NOT_CALLS.has(name) || isBuiltinFunction(name)) continue;
    const before = /([A-Za-z_]+)\s*$/.exec(src.slice(Math.max(0, m.index - 24), m.index));
    if (before !== null && RELATION_BEFORE.has(before[1].toLowerCase())) continue;
    if (!calls.includes(name)) calls.push(name);
  }
  return { sets: false, calls };
}

/**
 * How many levels of calls below the functions a statement calls are looked up (a
 * function calling one that calls one…; FunctionVolatilityCache.changesSettings); deeper,
 * a call counts as setting.
 */
const CALL_DEPTH = 3;

const NO_CALLS: readonly string[] = [];

/** How much of a function's non-volatile bodies is kept (readsTemp); longer ones count as naming anything. */
const STABLE_BODY_BYTES = 16 * 1024;

interface Entry {
  writes: boolean;
  /** A volatile overload may change settings itself (bodySettings' `sets`). */
  setsSettings: boolean;
  /** The user functions its volatile overloads call (bodySettings' `calls`), when it sets none itself. */
  calls: readonly string[];
  /**
   * Its other overloads' bodies (SQL, PL/pgSQL), lower-cased, to find the names of the
   * session's temp tables in (readsTemp); true when one cannot be read so (another
   * language, or longer than STABLE_BODY_BYTES in all).
   */
  stableBodies: string | true;
  /** ms timestamp after which the entry is stale (Infinity = never). */
  expires: number;
}

export class FunctionVolatilityCache {
  private readonly writeList: RegExp[];
  private readonly readOnlyList: RegExp[];
  private readonly maxSize: number;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly entries = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(cfg: FunctionPolicyConfig, now: () => number = Date.now) {
    this.writeList = compileFunctionList('write_function_list', cfg.write_function_list);
    this.readOnlyList = compileFunctionList('read_only_function_list', cfg.read_only_function_list);
    if (this.writeList.length > 0 && this.readOnlyList.length > 0) {
      throw new Error('write_function_list and read_only_function_list are mutually exclusive: set only one');
    }
    this.maxSize = Math.max(1, Math.floor(cfg.relcache_size));
    this.ttlMs = cfg.relcache_expire > 0 ? cfg.relcache_expire * 1000 : Infinity;
    this.now = now;
  }

  /** True when neither list is set and answers come from the catalog. */
  get usesCatalog(): boolean {
    return this.writeList.length === 0 && this.readOnlyList.length === 0;
  }

  /** Known answer for one function, or undefined when the catalog must be asked. */
  isWriting(db: string, fn: string): boolean | undefined {
    if (ALWAYS_WRITING.has(baseName(fn))) return true;
    if (this.writeList.length > 0) return this.writeList.some((r) => r.test(fn));
    if (this.readOnlyList.length > 0) return !this.readOnlyList.some((r) => r.test(fn));
    return this.entry(db, fn)?.writes;
  }

  /**
   * Whether a volatile overload of `fn` may change settings, by the catalog's answers: its
   * body does (bodySettings), or a user function it calls does, down to CALL_DEPTH levels
   * (deeper counts as setting; calls that go round add nothing). Undefined when it was not
   * asked (or the lists decide), or a function it calls was not asked yet (unknownCallees).
   */
  changesSettings(db: string, fn: string): boolean | undefined {
    return this.usesCatalog ? this.reachesSetting(db, fn, 0, new Set()) : undefined;
  }

  private reachesSetting(db: string, fn: string, depth: number, seen: Set<string>): boolean | undefined {
    const e = this.entry(db, fn);
    if (e === undefined) return undefined;
    if (!e.writes) return false;
    if (e.setsSettings) return true;
    if (e.calls.length === 0 || seen.has(fn)) return false;
    if (depth >= CALL_DEPTH) return true;
    seen.add(fn);
    let unknown = false;
    for (const c of e.calls) {
      const r = this.reachesSetting(db, c, depth + 1, seen);
      if (r === true) return true;
      if (r === undefined) unknown = true;
    }
    return unknown ? undefined : false;
  }

  /**
   * The functions called by `fns` (and by those, down to CALL_DEPTH levels) the catalog was
   * not asked about yet: asked, they answer `changesSettings` of `fns`.
   */
  unknownCallees(db: string, fns: readonly string[]): string[] {
    const out: string[] = [];
    const seen = new Set<string>();
    const walk = (fn: string, depth: number): void => {
      if (seen.has(fn)) return;
      seen.add(fn);
      const e = this.entry(db, fn);
      if (e === undefined) {
        if (depth > 0) out.push(fn);
        return;
      }
      if (!e.writes || e.setsSettings || depth >= CALL_DEPTH) return;
      for (const c of e.calls) walk(c, depth + 1);
    };
    if (this.usesCatalog) for (const fn of fns) walk(fn, 0);
    return out;
  }

  private entry(db: string, fn: string): Entry | undefined {
    const key = `${db}\u0000${fn}`;
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (e.expires <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  /**
   * Does a non-volatile overload of one of `fns` name one of `tables` (the session's temp
   * tables) in its body, by the catalog's answers (cached with their volatility)? A body in
   * another language than SQL or PL/pgSQL (C and internal ones aside) may. Built-in
   * functions and those not asked about count as not.
   */
  readsTemp(db: string, fns: readonly string[], tables: readonly string[]): boolean {
    for (const fn of fns) {
      const bodies = this.entry(db, fn)?.stableBodies;
      if (bodies === undefined || bodies === '') continue;
      if (bodies === true || tables.some((t) => namedAsWord(bodies, t))) return true;
    }
    return false;
  }

  /** true if any of `fns` writes; false if none does; undefined if some answers are missing and none known writes. */
  anyWriting(db: string, fns: readonly string[]): boolean | undefined {
    let unknown = false;
    for (const fn of fns) {
      const w = this.isWriting(db, fn);
      if (w === true) return true;
      if (w === undefined) unknown = true;
    }
    return unknown ? undefined : false;
  }

  /** The names among `fns` whose answer must be fetched from the catalog. */
  unknown(db: string, fns: readonly string[]): string[] {
    return fns.filter((fn) => this.isWriting(db, fn) === undefined);
  }

  /**
   * Ask the catalog (through `query`, run on the primary) about the names not
   * yet known, and cache the answers. Concurrent lookups of the same name share
   * one query. Rejects if the query fails (nothing is cached then).
   */
  async lookup(db: string, fns: readonly string[], query: CatalogQuery): Promise<void> {
    const waits: Promise<void>[] = [];
    const todo: string[] = [];
    for (const fn of this.unknown(db, fns)) {
      const pending = this.inFlight.get(`${db}\u0000${fn}`);
      if (pending !== undefined) waits.push(pending);
      else if (!todo.includes(fn)) todo.push(fn);
    }
    if (todo.length > 0) {
      const p = this.fetch(db, todo, query);
      for (const fn of todo) this.inFlight.set(`${db}\u0000${fn}`, p);
      waits.push(
        p.finally(() => {
          for (const fn of todo) {
            if (this.inFlight.get(`${db}\u0000${fn}`) === p) this.inFlight.delete(`${db}\u0000${fn}`);
          }
        }),
      );
    }
    await Promise.all(waits);
  }

  /**
   * Whether any of `fns` writes, asking the catalog if needed. A failed lookup
   * answers true (route to the primary) and caches nothing.
   */
  async resolve(db: string, fns: readonly string[], query: CatalogQuery): Promise<boolean> {
    const known = this.anyWriting(db, fns);
    if (known !== undefined) return known;
    try {
      await this.lookup(db, fns, query);
    } catch {
      return true;
    }
    return this.anyWriting(db, fns) ?? true;
  }

  /** Forget every cached catalog answer (e.g. after CREATE/ALTER FUNCTION, or on reload). */
  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private async fetch(db: string, fns: string[], query: CatalogQuery): Promise<void> {
    const rows = await query(volatileFunctionsSql(fns));
    const volatile = new Set<string>();
    const sets = new Set<string>();
    const calls = new Map<string, string[]>();
    const stable = new Map<string, string | true>();
    for (const r of rows) {
      const n = r.name;
      if (typeof n !== 'string') continue;
      if (r.vol !== 'v') {
        stable.set(n, withStableBody(stable.get(n) ?? '', String(r.lang ?? ''), String(r.src ?? '')));
        continue;
      }
      volatile.add(n);
      const b = bodySettings(String(r.lang ?? ''), String(r.src ?? ''));
      if (b.sets) sets.add(n);
      // Overloads: every one's calls.
      const cs = calls.get(n) ?? [];
      for (const c of b.calls) if (!cs.includes(c)) cs.push(c);
      calls.set(n, cs);
    }
    const expires = this.now() + this.ttlMs;
    for (const fn of fns) {
      const setsSettings = sets.has(fn);
      this.store(`${db}\u0000${fn}`, {
        writes: volatile.has(fn),
        setsSettings,
        calls: setsSettings ? NO_CALLS : (calls.get(fn) ?? NO_CALLS),
        stableBodies: stable.get(fn) ?? '',
        expires,
      });
    }
  }

  private store(key: string, e: Entry): void {
    this.entries.delete(key);
    while (this.entries.size >= this.maxSize) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(key, e);
  }
}

/** `bodies` (readsTemp's) with one more non-volatile overload's body in language `lang`. */
function withStableBody(bodies: string | true, lang: string, src: string): string | true {
  if (bodies === true || lang === 'c' || lang === 'internal') return bodies;
  if ((lang !== 'sql' && lang !== 'plpgsql') || bodies.length + src.length > STABLE_BODY_BYTES) return true;
  return `${bodies}\n${src.toLowerCase()}`;
}

/** Does `text` (lower case) hold the relation `name`'s last part as a word (not part of a longer name)? */
export function namedAsWord(text: string, name: string): boolean {
  const base = name.slice(name.lastIndexOf('.') + 1).toLowerCase();
  if (base === '') return false;
  for (let i = text.indexOf(base); i >= 0; i = text.indexOf(base, i + 1)) {
    if (!isNameChar(text.charCodeAt(i - 1)) && !isNameChar(text.charCodeAt(i + base.length))) return true;
  }
  return false;
}

function isNameChar(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 95 || c === 36 || c >= 128;
}
