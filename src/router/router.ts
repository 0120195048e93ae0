/**
 * Where a statement goes: the one place that answers it.
 *
 *   classify(text)                 → facts about the statement (classifier.ts)
 *   decide(text, facts, state, db) → primary / load-balance node / both (policy.ts),
 *                                    or the catalog questions to answer first
 *   readNode(session LB node)      → which node runs a load-balanced read now,
 *                                    with lag thresholds applied (balancer.ts)
 *
 * Catalog answers (function volatility, unlogged/temp relations) are cached per
 * database with relcache_size / relcache_expire, so a query that calls no
 * function and reads known tables never waits for a lookup.
 */
import type { Config } from '../config/types.js';
import { isLive, type NodeTable } from '../cluster/nodes.js';
import { classify, classifyQuery, type Classification } from './classifier.js';
import { route, routingConfigFrom, type Decision, type RoutingConfig, type SessionRoutingState } from './policy.js';
import { FunctionVolatilityCache, isBuiltinFunction, type CatalogQuery } from './functions.js';
import {
  balancerConfigFrom,
  chooseLoadBalanceNode,
  nodeForRead,
  parseRedirectList,
  type BalancerConfig,
  type NodeSnapshot,
  type ReadTarget,
  type SessionFacts,
} from './balancer.js';

/** No functions (unknownUserFunctions' usual answer, shared). */
const NONE: readonly string[] = [];

export type { Classification, Decision, SessionRoutingState, SessionFacts, ReadTarget };

/** Questions to put to the primary's catalog before a decision can be made. */
export interface CatalogQuestions {
  functions: string[];
  relations: string[];
}

interface RelEntry {
  persistence: string;
  expires: number;
  db: string;
  rel: string;
}

/**
 * Relation persistence ('p' permanent, 'u' unlogged, 't' temp) per database, at most
 * `maxSize` entries (the oldest set goes first). Looked up for every read that could be
 * balanced, several times per statement: by database, then relation, without building a
 * key (the strings are the session's and the classifier's, their hashes cached), and
 * without reading the clock when entries never expire (relcache_expire = 0).
 */
class RelationCache {
  /** In the order set (eviction); keyed by database NUL relation. */
  private readonly order = new Map<string, RelEntry>();
  private readonly byDb = new Map<string, Map<string, RelEntry>>();
  constructor(
    private readonly maxSize: number,
    private readonly ttlMs: number,
  ) {}
  get(db: string, rel: string): string | undefined {
    const e = this.byDb.get(db)?.get(rel);
    if (e === undefined) return undefined;
    if (e.expires !== Infinity && e.expires <= Date.now()) {
      this.remove(e);
      return undefined;
    }
    return e.persistence;
  }
  set(db: string, rel: string, persistence: string): void {
    const old = this.byDb.get(db)?.get(rel);
    if (old !== undefined) this.remove(old);
    while (this.order.size >= this.maxSize) {
      const oldest = this.order.values().next();
      if (oldest.done === true) break;
      this.remove(oldest.value);
    }
    const e: RelEntry = { persistence, expires: Date.now() + this.ttlMs, db, rel };
    this.order.set(`${db}\u0000${rel}`, e);
    let m = this.byDb.get(db);
    if (m === undefined) this.byDb.set(db, (m = new Map()));
    m.set(rel, e);
  }
  private remove(e: RelEntry): void {
    this.order.delete(`${e.db}\u0000${e.rel}`);
    const m = this.byDb.get(e.db);
    if (m === undefined) return;
    m.delete(e.rel);
    if (m.size === 0) this.byDb.delete(e.db);
  }
}

/**
 * Split a relation name as the classifier gives it — unquoted parts already folded to lower
 * case, quoted ones as written without their quotes — into (schema, name). A double-quoted
 * part (a name written by hand) loses its quotes; nothing is folded again.
 */
export function splitRelationName(written: string): { schema: string | null; name: string } {
  const parts: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < written.length; i++) {
    const ch = written[i];
    if (quoted) {
      if (ch === '"') {
        if (written[i + 1] === '"') {
          cur += '"';
          i++;
        } else quoted = false;
      } else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === '.') {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  const name = parts[parts.length - 1] ?? '';
  return { schema: parts.length >= 2 ? (parts[parts.length - 2] ?? null) : null, name };
}

/**
 * A query that can never fail (only literals and catalog joins): the persistence letters of
 * the relations each written name may denote ('' when none), `s` for a sequence (a standby
 * has only its WAL-logged state: last_value up to 32 ahead, log_cnt 0).
 */
export function relationPersistenceSql(names: readonly string[]): string {
  const values = names.map((n) => {
    const { schema, name } = splitRelationName(n);
    return `(${lit(n)}, ${schema === null ? 'NULL::text' : lit(schema)}, ${lit(name)})`;
  });
  return (
    "SELECT r.name, (SELECT pg_catalog.string_agg(CASE WHEN c.relkind = 'S' THEN 's' ELSE c.relpersistence::text END, '')" +
    ' FROM pg_catalog.pg_class AS c' +
    ' JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace' +
    ' WHERE c.relname = r.rel AND (r.nsp IS NULL OR n.nspname = r.nsp)) AS p' +
    ` FROM (VALUES ${values.join(', ')}) AS r(name, nsp, rel)`
  );
}

function lit(s: string): string {
  return `E'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

export class Router {
  private routing!: RoutingConfig;
  private balancer!: BalancerConfig;
  private functions!: FunctionVolatilityCache;
  private relations!: RelationCache;
  private allowSqlComments = false;
  /** dml_adaptive_object_relationship_list: object → dependents (lower case, as written). */
  private related = new Map<string, string[]>();
  private checkRelations = false;
  /** Reused snapshot objects, refreshed from the node table on each use (no allocation). */
  private readonly snapshot: NodeSnapshot[];

  constructor(
    config: Config,
    private readonly nodes: NodeTable,
  ) {
    this.snapshot = nodes.all().map((n) => ({
      id: n.id,
      up: false,
      role: 'standby' as const,
      weight: n.weight,
      delayBytes: 0,
      delaySeconds: 0,
    }));
    this.reconfigure(config);
  }

  /** Compile the routing configuration; throws with a message naming a bad list entry. */
  reconfigure(c: Config): void {
    const routing = routingConfigFrom(c);
    const balancer = balancerConfigFrom(c);
    balancer.user_redirect = parseRedirectList(c.user_redirect_preference_list, 'user_redirect_preference_list');
    const functions = new FunctionVolatilityCache(c);
    this.routing = routing;
    this.balancer = balancer;
    this.functions = functions;
    this.relations = new RelationCache(
      Math.max(1, c.relcache_size),
      c.relcache_expire > 0 ? c.relcache_expire * 1000 : Infinity,
    );
    this.allowSqlComments = c.allow_sql_comments;
    const related = new Map<string, string[]>();
    for (const pair of c.dml_adaptive_object_relationship_list) {
      const i = pair.indexOf(':');
      if (i <= 0 || i === pair.length - 1)
        throw new Error(`dml_adaptive_object_relationship_list: "${pair}" is not of the form object:dependent`);
      const from = pair.slice(0, i).trim().toLowerCase();
      const to = pair
        .slice(i + 1)
        .trim()
        .toLowerCase();
      related.set(from, [...(related.get(from) ?? []), to]);
    }
    this.related = related;
    this.checkRelations = c.check_unlogged_table || c.check_temp_table === 'catalog';
  }

  get loadBalancing(): boolean {
    return this.routing.load_balance_mode;
  }

  get statementLevel(): boolean {
    return this.routing.statement_level_load_balance;
  }

  /** Classify a Parse's text (cached: prepared statements recur verbatim). */
  classify(sql: string): Classification {
    return classify(sql, { allowSqlComments: this.allowSqlComments });
  }

  /** Classify a simple Query's text (literals make most texts unique: plain reads are cached by shape). */
  classifyOnce(sql: string): Classification {
    return classifyQuery(sql, { allowSqlComments: this.allowSqlComments });
  }

  /**
   * The destination of one statement for a session in `state`, or the catalog
   * questions whose answers are missing (ask them with `answer`, then call again).
   */
  decide(
    sql: string,
    cls: Classification,
    state: SessionRoutingState,
    db: string,
    settingArgs?: readonly string[],
    pidNode?: number,
  ): Decision | CatalogQuestions {
    let writingFunction: boolean | undefined;
    let tempOrUnlogged: boolean | undefined;
    let functionReadsTemp: boolean | undefined;
    // Only reads that could be balanced need catalog answers.
    const balanceable =
      cls.dest === 'either' &&
      this.routing.load_balance_mode &&
      cls.parseError === undefined &&
      cls.statementCount <= 1 &&
      !cls.asksServerRole;
    if (cls.functions.length > 0) {
      writingFunction = this.functions.anyWriting(db, cls.functions);
      if (writingFunction === undefined && balanceable && this.functions.usesCatalog) {
        return { functions: this.functions.unknown(db, cls.functions), relations: this.unknownRelations(db, cls) };
      }
      // None writes: a STABLE one created elsewhere may read a temp table the session created.
      if (writingFunction === false && balanceable && this.routing.checkTempTable && state.tempTables.length > 0)
        functionReadsTemp = this.functions.readsTemp(db, cls.functions, state.tempTables);
    }
    if (balanceable && this.checkRelations && cls.relations.length > 0) {
      // One look at each relation: unknown ones are asked of the catalog (system catalogs
      // never are, and count as not permanent), temporary and unlogged ones, and sequences, stay
      // on the primary.
      let unknown: string[] | undefined;
      tempOrUnlogged = false;
      for (const r of cls.relations) {
        const p = this.relations.get(db, r);
        if (p === undefined && !cls.systemCatalog) (unknown ??= []).push(r);
        if (p !== 'p') tempOrUnlogged = true;
      }
      if (unknown !== undefined) return { functions: [], relations: unknown };
    }
    return route({
      cls,
      sql,
      state,
      cfg: this.routing,
      writingFunction,
      tempOrUnlogged,
      functionReadsTemp,
      settingArgs,
      pidNode,
    });
  }

  private unknownRelations(db: string, cls: Classification): string[] {
    if (!this.checkRelations || cls.systemCatalog) return [];
    return cls.relations.filter((r) => this.relations.get(db, r) === undefined);
  }

  /**
   * dml_adaptive: after a transaction wrote `tables`, add the dependents named in
   * dml_adaptive_object_relationship_list to the tables whose reads go to the primary.
   */
  addRelatedObjects(state: SessionRoutingState, tables: readonly string[], inTransaction: boolean): void {
    if (this.related.size === 0 || this.routing.disable_load_balance_on_write !== 'dml_adaptive' || !inTransaction)
      return;
    for (const t of tables) {
      const deps = this.related.get(t.toLowerCase()) ?? this.related.get(t.slice(t.lastIndexOf('.') + 1).toLowerCase());
      for (const d of deps ?? []) if (!state.writtenTables.includes(d)) state.writtenTables.push(d);
    }
  }

  /** Ask the catalog (through `query`, run on the session's primary connection) and cache the answers. */
  async answer(db: string, q: CatalogQuestions, query: CatalogQuery): Promise<boolean> {
    let ok = true;
    if (q.functions.length > 0) await this.functions.lookup(db, q.functions, query).catch(() => (ok = false));
    if (q.relations.length > 0) {
      try {
        const rows = await query(relationPersistenceSql(q.relations));
        for (const row of rows) {
          const name = row.name;
          const p = typeof row.p === 'string' ? row.p : '';
          if (typeof name !== 'string') continue;
          // Unqualified names may match in several schemas: the most cautious answer wins. A name
          // that matches nothing reads nothing real; PostgreSQL's error comes from wherever it runs.
          // A temp answer is cached too: it only sends other sessions' reads of that name to the
          // primary, which is always safe (temp tables this session creates are traced by policy.ts).
          this.relations.set(db, name, p.includes('t') ? 't' : p.includes('u') ? 'u' : p.includes('s') ? 's' : 'p');
        }
      } catch {
        ok = false;
      }
    }
    return ok;
  }

  /**
   * The user functions among `fns` whose volatility the catalog has not answered yet, and
   * those the answered ones call that it has not (none when write_function_list or
   * read_only_function_list decide): a session in transaction mode asks, so that a STABLE
   * or IMMUTABLE one, or one that sets nothing and calls only such, costs no reset
   * (mayChangeSettings). Asked again after each answer: one level of calls per question.
   */
  unknownUserFunctions(db: string, fns: readonly string[]): readonly string[] {
    const f = this.functions;
    if (fns.length === 0 || !f.usesCatalog) return NONE;
    const user = fns.filter((fn) => !isBuiltinFunction(fn));
    if (user.length === 0) return NONE;
    const unknown = user.filter((fn) => f.isWriting(db, fn) === undefined);
    return unknown.length > 0 ? unknown : f.unknownCallees(db, user);
  }

  /**
   * May calling `fns` have changed settings that no statement of the client shows (a
   * `set_config(…, false)` or `SET` in a function's body)? Not a built-in function (the
   * session follows `set_config` where the client calls it), nor one the catalog answered
   * is not volatile (a STABLE or IMMUTABLE function is trusted not to) or has a body that
   * sets nothing, nor do the user functions it calls (functions.ts bodySettings,
   * changesSettings); any other may.
   */
  mayChangeSettings(db: string, fns: readonly string[]): boolean {
    const f = this.functions;
    for (const fn of fns) {
      if (isBuiltinFunction(fn)) continue;
      if (f.usesCatalog && (f.isWriting(db, fn) === false || f.changesSettings(db, fn) === false)) continue;
      return true;
    }
    return false;
  }

  /** The session's load-balance node at session start (weighted random, redirect lists). */
  chooseSessionNode(facts: SessionFacts): number | null {
    if (!this.routing.load_balance_mode) return this.nodes.primaryId >= 0 ? this.nodes.primaryId : null;
    return chooseLoadBalanceNode(this.refresh(), this.balancer, facts);
  }

  /** Where a load-balanced read runs now (lag thresholds, node down, statement-level balancing). */
  readNode(sessionLbNode: number | null, facts: SessionFacts): ReadTarget {
    return nodeForRead(sessionLbNode, this.refresh(), this.balancer, facts);
  }

  private refresh(): NodeSnapshot[] {
    const all = this.nodes.all();
    const primary = this.nodes.primaryId;
    for (let i = 0; i < this.snapshot.length; i++) {
      const s = this.snapshot[i];
      const n = all[i];
      s.up = isLive(n.status) && !(n.draining && n.id !== primary);
      s.role = n.id === primary ? 'primary' : 'standby';
      s.weight = n.weight;
      s.delayBytes = n.delayBytes;
      s.delaySeconds = n.delaySeconds;
    }
    return this.snapshot;
  }
}
