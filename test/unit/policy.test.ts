import { describe, it, expect } from 'vitest';
import { classifyUncached, type ClassifyOptions } from '../../src/router/classifier.js';
import {
  route,
  afterStatement,
  unansweredDecision,
  newSessionRoutingState,
  routingConfigFrom,
  startupIsolation,
  connectionIsolation,
  type RoutingConfig,
  type SessionRoutingState,
  type Decision,
  type RouteInput,
} from '../../src/router/policy.js';
import {
  FunctionVolatilityCache,
  bodySettings,
  volatileFunctionsSql,
  type CatalogQuery,
} from '../../src/router/functions.js';
import type { DisableLbOnWrite } from '../../src/config/types.js';

const OPTS: ClassifyOptions = { allowSqlComments: false };

function cfg(over: Partial<Parameters<typeof routingConfigFrom>[0]> = {}): RoutingConfig {
  return routingConfigFrom({
    load_balance_mode: true,
    disable_load_balance_on_write: 'transaction',
    statement_level_load_balance: false,
    primary_routing_query_pattern_list: [],
    check_temp_table: 'catalog',
    check_unlogged_table: true,
    ...over,
  });
}

/** A fake session: routes each statement, then simulates PostgreSQL's ReadyForQuery status. */
class Session {
  state: SessionRoutingState = newSessionRoutingState();
  constructor(
    public cfg: RoutingConfig,
    public fns?: FunctionVolatilityCache,
  ) {}

  run(sql: string, opts: { fail?: boolean; extra?: Partial<RouteInput> } = {}): Decision {
    const cls = classifyUncached(sql, OPTS);
    const writingFunction =
      cls.functions.length > 0 && this.fns !== undefined ? this.fns.anyWriting('db', cls.functions) : undefined;
    const d = route({ cls, sql, state: this.state, cfg: this.cfg, writingFunction, ...opts.extra });
    // Simulated transaction status after the statement.
    let tx: 'I' | 'T' | 'E' = this.state.inTransaction ? (this.state.failed ? 'E' : 'T') : 'I';
    if (opts.fail === true) tx = tx === 'I' ? 'I' : 'E';
    else if (cls.kind === 'multi') tx = /\bbegin\b/i.test(sql) && !/\bcommit\b/i.test(sql) ? 'T' : tx;
    else if (cls.tx === 'begin') tx = 'T';
    else if (cls.tx === 'commit' || cls.tx === 'rollback' || cls.tx === 'prepare_transaction')
      tx = cls.chain === true ? 'T' : 'I';
    else if (cls.tx === 'rollback_to' && tx === 'E') tx = 'T';
    afterStatement(
      this.state,
      cls,
      d,
      { ok: opts.fail !== true, txStatus: tx },
      this.cfg.disable_load_balance_on_write,
    );
    return d;
  }
  target(sql: string): string {
    return this.run(sql).target;
  }
}

describe('route: a pid function given the pid of a backend pgrelay holds on another node', () => {
  it('runs on that node, outside and inside a transaction; the session decides whether it has a link there', () => {
    const s = new Session(cfg());
    const d = s.run('SELECT pg_terminate_backend(4711)', { extra: { pidNode: 2 } });
    expect(d).toMatchObject({ target: 'standby', node: 2, write: false });
    s.run('BEGIN');
    s.run('INSERT INTO t VALUES (1)');
    expect(s.run('SELECT pg_cancel_backend(4711)', { extra: { pidNode: 2 } })).toMatchObject({ node: 2 });
    s.run('COMMIT');
  });
  it('not when the statement does more than call pid functions, nor without a node', () => {
    const s = new Session(cfg());
    expect(s.run('SELECT pg_terminate_backend(4711), nextval($$s$$)', { extra: { pidNode: 2 } }).target).toBe(
      'primary',
    );
    expect(s.run('SELECT pg_terminate_backend(4711)').target).toBe('primary');
    expect(
      new Session(cfg({ load_balance_mode: false })).run('SELECT pg_cancel_backend(1)', { extra: { pidNode: 2 } }),
    ).toMatchObject({ target: 'primary' });
  });
});

describe('route: statement classes', () => {
  const s = new Session(cfg());
  it.each([
    ['SELECT 1', 'standby'],
    ['SHOW work_mem', 'standby'],
    ['COPY t TO STDOUT', 'standby'],
    ['', 'standby'],
    ['INSERT INTO t VALUES (1)', 'primary'],
    ['SELECT * FROM t FOR UPDATE', 'primary'],
    ['SELECT 1; SELECT 2', 'primary'],
    ["SELECT 'x", 'primary'],
    ['SELECT relname FROM pg_class', 'primary'],
    ['SET work_mem = 1', 'both'],
    ['DISCARD ALL', 'both'],
  ])('%j → %s', (sql, target) => {
    const fresh = new Session(s.cfg);
    expect(fresh.target(sql)).toBe(target);
  });

  it('BOTH ordering: primary first, COMMIT/ROLLBACK standby first; BEGIN READ WRITE rewritten for the standby', () => {
    const x = new Session(cfg());
    const b = x.run('BEGIN READ WRITE');
    expect(b).toMatchObject({ target: 'both', bothOrder: 'primary-first', standbyText: 'BEGIN', write: false });
    expect(x.run('SAVEPOINT a')).toMatchObject({ target: 'both', bothOrder: 'primary-first' });
    expect(x.run('ROLLBACK TO a')).toMatchObject({ target: 'both', bothOrder: 'primary-first' });
    expect(x.run('COMMIT')).toMatchObject({ target: 'both', bothOrder: 'standby-first' });
    x.run('BEGIN');
    expect(x.run('ROLLBACK')).toMatchObject({ target: 'both', bothOrder: 'standby-first' });
  });

  it('statement_level_load_balance sends BOTH statements to every standby', () => {
    const x = new Session(cfg({ statement_level_load_balance: true }));
    expect(x.run('SET x.y = 1').allStandbys).toBe(true);
  });

  it('load_balance_mode = off sends everything to the primary', () => {
    const x = new Session(cfg({ load_balance_mode: false }));
    expect(x.target('SELECT 1')).toBe('primary');
    expect(x.target('BEGIN')).toBe('primary');
  });

  it('primary_routing_query_pattern_list matches the whole text, case-insensitively (pgpool pattern lists)', () => {
    const x = new Session(cfg({ primary_routing_query_pattern_list: ['SELECT \\* FROM t1\\;', '.*t2.*'] }));
    expect(x.target('select * from t1;')).toBe('primary');
    expect(x.target('SELECT * FROM t1')).toBe('standby');
    expect(x.target('SELECT *\nFROM t2')).toBe('primary');
    expect(() => cfg({ primary_routing_query_pattern_list: ['(unclosed'] })).toThrow(/\(unclosed/);
  });
});

describe('pgpool disable_load_balance_on_write (pool_at_command_success()) disable_load_balance_on_write matrix (script from pgpool disable_load_balance_on_write (pool_at_command_success()) / observed with pgpool 4.3.5)', () => {
  // SELECT a1; BEGIN; SELECT a2; INSERT; SELECT a3; COMMIT; SELECT a4; BEGIN; SELECT a5; COMMIT; INSERT; SELECT a6
  function script(mode: DisableLbOnWrite): Record<string, string> {
    const x = new Session(cfg({ disable_load_balance_on_write: mode }));
    const out: Record<string, string> = {};
    out.a1 = x.target("SELECT 'a1'");
    x.run('BEGIN');
    out.a2 = x.target("SELECT 'a2'");
    x.run('INSERT INTO t1 VALUES (1)');
    out.a3 = x.target("SELECT 'a3'");
    x.run('COMMIT');
    out.a4 = x.target("SELECT 'a4'");
    x.run('BEGIN');
    out.a5 = x.target("SELECT 'a5'");
    x.run('COMMIT');
    x.run('INSERT INTO t1 VALUES (2)');
    out.a6 = x.target("SELECT 'a6'");
    return out;
  }
  const S = 'standby',
    P = 'primary';
  it('off: never disables load balancing', () => {
    expect(script('off')).toEqual({ a1: S, a2: S, a3: S, a4: S, a5: S, a6: S });
  });
  it('transaction (default): only the rest of the writing transaction', () => {
    expect(script('transaction')).toEqual({ a1: S, a2: S, a3: P, a4: S, a5: S, a6: S });
  });
  it('trans_transaction: also later explicit transactions, not autocommit reads', () => {
    expect(script('trans_transaction')).toEqual({ a1: S, a2: S, a3: P, a4: S, a5: P, a6: S });
  });
  it('always: every read after the first write', () => {
    expect(script('always')).toEqual({ a1: S, a2: S, a3: P, a4: P, a5: P, a6: P });
  });
  it('dml_adaptive: only reads of tables written in this transaction (pgpool disable_load_balance_on_write (pool_at_command_success()) observation)', () => {
    const fns = new FunctionVolatilityCache({
      write_function_list: [],
      read_only_function_list: ['count'],
      relcache_size: 10,
      relcache_expire: 0,
    });
    const x = new Session(cfg({ disable_load_balance_on_write: 'dml_adaptive' }), fns);
    x.run('BEGIN');
    expect(x.target('SELECT count(*) FROM t1')).toBe(S);
    x.run('INSERT INTO t1 VALUES (1)');
    expect(x.target('SELECT * FROM t1 WHERE a = 1')).toBe(P);
    expect(x.target('SELECT * FROM public.t1')).toBe(P);
    expect(x.target("SELECT 'b3'")).toBe(S);
    expect(x.target('SELECT * FROM t2')).toBe(S);
    x.run('COMMIT');
    expect(x.target('SELECT * FROM t1')).toBe(S);
  });
  it('always: an autocommit write also disables balancing', () => {
    const x = new Session(cfg({ disable_load_balance_on_write: 'always' }));
    expect(x.target('SELECT 1')).toBe(S);
    x.run('UPDATE t SET a = 1');
    expect(x.target('SELECT 1')).toBe(P);
  });
});

describe("an extended-protocol pipeline's implicit transaction", () => {
  it('a read after the pipeline wrote goes to the primary, whatever disable_load_balance_on_write says', () => {
    for (const mode of ['off', 'transaction', 'dml_adaptive'] as DisableLbOnWrite[]) {
      const x = new Session(cfg({ disable_load_balance_on_write: mode }));
      expect(x.target('SELECT * FROM t')).toBe('standby');
      x.state.pipelineWrote = true;
      expect(x.target('SELECT * FROM t')).toBe('primary');
      x.state.pipelineWrote = false;
      expect(x.target('SELECT * FROM t')).toBe('standby');
    }
  });
});

describe('transactions (pgpool disable_load_balance_on_write (pool_at_command_success()), observed with pgpool 4.3.5)', () => {
  it('SET and SAVEPOINT inside a transaction count as writes; SET TRANSACTION READ ONLY does not', () => {
    const a = new Session(cfg());
    a.run('BEGIN');
    a.run("SET work_mem = '4MB'");
    expect(a.target("SELECT 'c1'")).toBe('primary');

    const b = new Session(cfg());
    b.run('BEGIN');
    b.run('SAVEPOINT s');
    expect(b.target('SELECT 1')).toBe('primary');

    const c = new Session(cfg());
    c.run('BEGIN');
    c.run('SET TRANSACTION READ ONLY');
    expect(c.target('SELECT 1')).toBe('standby');
    expect(c.target('SHOW work_mem')).toBe('standby');
  });
  it('pgrelay: a setting for the transaction only (SET LOCAL, set_config(…, true)) runs on the primary alone once the transaction reads there (it counts as a write itself); SET TRANSACTION and settings that last still go to both', () => {
    const a = new Session(cfg());
    a.run('BEGIN');
    expect(a.run('SET LOCAL ROLE r').target).toBe('primary');
    expect(a.run("SELECT set_config('statement_timeout', '5s', true)").target).toBe('primary');
    // A custom setting leaves its name defined after the transaction (current_setting(…, true) = ''):
    // on both nodes, as are those whose name is not known.
    expect(a.run("SELECT set_config('request.claims', 'x', true)").target).toBe('both');
    expect(a.run('SET LOCAL app.user_id = 7').target).toBe('both');
    expect(a.run('SELECT set_config($1, $2, true)').target).toBe('both');
    expect(a.target('SELECT 1')).toBe('primary');
    expect(a.target('SET work_mem = 1')).toBe('both');
    a.run('COMMIT');
    a.run('BEGIN ISOLATION LEVEL REPEATABLE READ');
    expect(a.target('SET TRANSACTION READ ONLY')).toBe('both');
    a.run('ROLLBACK');
    expect(a.target('SET LOCAL work_mem = 1')).toBe('both'); // outside a transaction: a warning from both
    for (const mode of ['off', 'dml_adaptive'] as const) {
      const b = new Session(cfg({ disable_load_balance_on_write: mode }));
      b.run('BEGIN');
      b.run('INSERT INTO t VALUES (1)');
      expect(b.target('SET LOCAL ROLE r'), mode).toBe('both');
    }
    const c = new Session(cfg({ disable_load_balance_on_write: 'off' }));
    c.run('BEGIN ISOLATION LEVEL SERIALIZABLE');
    expect(c.target('SET LOCAL ROLE r')).toBe('primary');
  });
  it('pgrelay: SET ROLE / SESSION AUTHORIZATION in a transaction (it counts as a write) runs on the primary alone, and the session reads there until DISCARD ALL', () => {
    const a = new Session(cfg());
    a.run('BEGIN');
    expect(a.target('SET ROLE r')).toBe('primary'); // it counts as a write itself
    a.run('CREATE ROLE r2');
    expect(a.target('SET ROLE r2')).toBe('primary');
    expect(a.target('SET SESSION AUTHORIZATION r2')).toBe('primary');
    expect(a.target('SET search_path = s')).toBe('both');
    expect(a.target('RESET ROLE')).toBe('both');
    a.run('COMMIT');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('RESET ALL'); // keeps the role
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('DISCARD ALL');
    expect(a.target('SELECT 1')).toBe('standby');
    const b = new Session(cfg({ disable_load_balance_on_write: 'off' }));
    b.run('BEGIN');
    b.run('INSERT INTO t VALUES (1)');
    expect(b.target('SET ROLE r2')).toBe('both');
  });
  it('pgrelay: in a READ ONLY transaction savepoint commands do not count as writes (they write nothing, and nothing can be written there but temporary tables); other statements still do', () => {
    for (const begin of ['BEGIN READ ONLY', 'START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY']) {
      const a = new Session(cfg());
      a.run(begin);
      a.run('SAVEPOINT s');
      expect(a.target('SELECT 1'), begin).toBe('standby');
      a.run('RELEASE SAVEPOINT s');
      a.run('SAVEPOINT t');
      a.run('ROLLBACK TO SAVEPOINT t');
      expect(a.target('SELECT 1'), begin).toBe('standby');
      a.run("SET work_mem = '4MB'");
      expect(a.target('SELECT 1'), begin).toBe('primary');
      a.run('COMMIT');
      // The next transaction is not read-only.
      a.run('BEGIN');
      a.run('SAVEPOINT u');
      expect(a.target('SELECT 1')).toBe('primary');
    }
    const b = new Session(cfg());
    b.run('BEGIN');
    b.run('SET TRANSACTION READ ONLY');
    b.run('SAVEPOINT s');
    expect(b.target('SELECT 1')).toBe('standby');
  });
  it('SET outside a transaction does not disable balancing (mode transaction)', () => {
    const a = new Session(cfg());
    a.run('SET work_mem = 1');
    a.run('BEGIN');
    expect(a.target('SELECT 1')).toBe('standby');
  });
  it('a volatile-function read inside a transaction counts as a write', () => {
    const fns = new FunctionVolatilityCache({
      write_function_list: ['fvol'],
      read_only_function_list: [],
      relcache_size: 10,
      relcache_expire: 0,
    });
    const a = new Session(cfg(), fns);
    a.run('BEGIN');
    expect(a.target('SELECT fvol()')).toBe('primary');
    expect(a.target('SELECT 1')).toBe('primary');
  });
  it("SET TRANSACTION SNAPSHOT goes to the primary (where pg_export_snapshot() ran) and keeps the transaction's reads there, until it ends", () => {
    const a = new Session(cfg());
    a.run('BEGIN ISOLATION LEVEL REPEATABLE READ');
    expect(a.target('SELECT 1')).toBe('standby');
    const d = a.run("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'");
    expect(d).toMatchObject({ target: 'primary', write: false });
    expect(a.target('SELECT 1')).toBe('primary');
    expect(a.target('COPY t TO STDOUT')).toBe('primary');
    a.run('COMMIT AND CHAIN');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('ROLLBACK');
    a.run('BEGIN');
    a.run("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", { fail: true });
    a.run('ROLLBACK');
    expect(a.target('SELECT 1')).toBe('standby');
  });

  it('a REPEATABLE READ transaction keeps one snapshot: once its first statement ran on the primary, its reads go there; begun on the standby, they stay balanced', () => {
    const a = new Session(cfg());
    // pg_dump: catalog reads first (primary), then COPY of each table.
    a.run('BEGIN');
    a.run('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    expect(a.target('SHOW server_version')).toBe('standby');
    expect(a.target('SELECT c.relname FROM pg_catalog.pg_class c')).toBe('primary');
    expect(a.run('COPY public.t TO STDOUT')).toMatchObject({
      target: 'primary',
      reason: "the transaction's snapshot is the primary's",
    });
    expect(a.target('SELECT 1')).toBe('primary');
    // pg_dump locks each table: there only (a lagging standby may not have it).
    expect(a.target('LOCK TABLE public.t IN ACCESS SHARE MODE')).toBe('primary');
    a.run('COMMIT');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('BEGIN');
    expect(a.target('LOCK TABLE public.t IN ACCESS SHARE MODE')).toBe('both');
    a.run('COMMIT');
    // Begun on the standby: its reads stay balanced (one standby snapshot).
    a.run('BEGIN ISOLATION LEVEL REPEATABLE READ');
    expect(a.target('SELECT * FROM t')).toBe('standby');
    expect(a.target('SELECT c.relname FROM pg_catalog.pg_class c')).toBe('primary');
    expect(a.target('SELECT * FROM u')).toBe('standby');
    a.run('ROLLBACK');
    // READ COMMITTED: every statement takes a snapshot of its own; nothing sticks.
    a.run('BEGIN');
    expect(a.target('SELECT c.relname FROM pg_catalog.pg_class c')).toBe('primary');
    expect(a.target('SELECT * FROM t')).toBe('standby');
    a.run('COMMIT');
    // The session's default (SET SESSION CHARACTERISTICS, and RESET ALL back to the start-up's).
    a.run('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    a.run('BEGIN');
    expect(a.target('SELECT c.relname FROM pg_catalog.pg_class c')).toBe('primary');
    expect(a.target('SELECT * FROM t')).toBe('primary');
    a.run('COMMIT');
    // Autocommit reads: one statement, one snapshot, on whichever node.
    expect(a.target('SELECT * FROM t')).toBe('standby');
    a.run('RESET ALL');
    a.run('BEGIN');
    a.run('SELECT c.relname FROM pg_catalog.pg_class c');
    expect(a.target('SELECT * FROM t')).toBe('standby');
    a.run('COMMIT');
    const b = new Session(cfg());
    startupIsolation(b.state, 'repeatable read');
    b.run('BEGIN');
    b.run('INSERT INTO t VALUES (1)');
    expect(b.target('SELECT * FROM t')).toBe('primary');
    b.run('COMMIT');
  });

  it('SERIALIZABLE transactions read from the primary', () => {
    const a = new Session(cfg());
    a.run('BEGIN ISOLATION LEVEL SERIALIZABLE');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('COMMIT');
    expect(a.target('SELECT 1')).toBe('standby');

    a.run('BEGIN');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('ROLLBACK');

    a.run('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE');
    // Autocommit reads too: each is a SERIALIZABLE transaction, which a hot standby refuses.
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('BEGIN');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('COMMIT');
    a.run('BEGIN ISOLATION LEVEL REPEATABLE READ');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('COMMIT');
    a.run('RESET ALL');
    a.run('BEGIN');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('COMMIT');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('DISCARD ALL');
    expect(a.target('SELECT 1')).toBe('standby');
  });
  it("pg_backend_pid() reads from the primary: it must agree with the client's BackendKeyData", () => {
    const a = new Session(cfg());
    expect(a.run('SELECT pg_backend_pid()')).toMatchObject({
      target: 'primary',
      reason: 'pg_backend_pid() is the primary backend',
    });
    expect(a.target('SELECT pg_catalog.pg_backend_pid(), 1')).toBe('primary');
    expect(a.target('SELECT * FROM pg_stat_get_activity($1)')).toBe('primary');
    expect(a.target('SELECT pg_blocking_pids(42)')).toBe('primary');
  });
  it("txid_current(), pg_current_xact_id(), their _if_assigned forms, the current snapshot, pg_listening_channels(), pg_my_temp_schema(): not volatile, yet the primary's", () => {
    const a = new Session(cfg());
    const stable = { extra: { writingFunction: false } };
    for (const sql of [
      'SELECT txid_current()',
      'SELECT pg_catalog.pg_current_xact_id()::text',
      'SELECT pg_listening_channels()',
      'SELECT pg_my_temp_schema()',
      'SELECT pg_current_xact_id_if_assigned()',
      'SELECT txid_current_if_assigned()',
      'SELECT pg_current_snapshot()',
      'SELECT txid_current_snapshot()',
    ])
      expect(a.run(sql, stable), sql).toMatchObject({
        target: 'primary',
        reason: expect.stringContaining("needs the primary's backend"),
      });
    // Other stable functions, and a user function of the same name in another schema, stay balanced.
    expect(a.run('SELECT txid_snapshot_xmin($1)', stable).target).toBe('standby');
    expect(a.run('SELECT app.txid_current()', stable).target).toBe('standby');
  });
  it('SELECT set_config(…) alone goes to both nodes like SET; inside a larger statement it pins reads to the primary', () => {
    const a = new Session(cfg());
    expect(a.target("SELECT set_config('myapp.x', '1', false)")).toBe('both');
    expect(a.target('SELECT set_config($1, $2, false)')).toBe('both');
    expect(a.target('SHOW myapp.x')).toBe('standby');
    // volatile function call: the primary (the function cache is not consulted here; the call decides)
    const d = a.run("SELECT set_config('myapp.y', '2', false), now()", { extra: { writingFunction: true } });
    expect(d.target).toBe('primary');
    expect(a.state.settingsOnPrimary).toBe(true);
    expect(a.run('SHOW myapp.y')).toMatchObject({
      target: 'primary',
      reason: 'a setting of this session was changed on the primary only',
    });
    a.run('RESET work_mem');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('DISCARD ALL');
    expect(a.target('SELECT 1')).toBe('standby');
  });
  it('a SET among several statements of one Query (run on the primary alone) pins reads to the primary until RESET ALL', () => {
    const a = new Session(cfg());
    expect(a.target("SET application_name = 'x'; SET search_path = s, public; SHOW search_path")).toBe('primary');
    expect(a.run("SELECT current_setting('search_path')")).toMatchObject({
      target: 'primary',
      reason: 'a setting of this session was changed on the primary only',
    });
    a.run('RESET ALL');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('SELECT 1; SELECT 2');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('BEGIN; SET LOCAL work_mem = 1; SELECT 1; COMMIT');
    expect(a.target('SELECT 1')).toBe('standby');
  });
  it('a backend that started with a SERIALIZABLE default (ALTER DATABASE/ROLE … SET): reads on the primary, also after RESET', () => {
    const a = new Session(cfg());
    startupIsolation(a.state, 'serializable');
    expect(a.run('SELECT 1')).toMatchObject({
      target: 'primary',
      reason: 'the session default isolation is SERIALIZABLE',
    });
    a.run("SET default_transaction_isolation = 'read committed'");
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('RESET default_transaction_isolation');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run('DISCARD ALL');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('BEGIN');
    expect(a.state.txSerializable).toBe(true);
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('COMMIT');
    // A read committed start-up default: RESET goes back to it.
    const b = new Session(cfg());
    startupIsolation(b.state, 'read committed');
    b.run("SET default_transaction_isolation = 'serializable'");
    expect(b.target('SELECT 1')).toBe('primary');
    b.run('RESET ALL');
    expect(b.target('SELECT 1')).toBe('standby');
  });
  it("pool_mode = transaction: each unit's connection tells its start-up isolation; a default the session SET stays until RESET", () => {
    const a = new Session(cfg());
    startupIsolation(a.state, 'read committed');
    connectionIsolation(a.state, 'serializable');
    expect(a.target('SELECT 1')).toBe('primary');
    connectionIsolation(a.state, 'read committed');
    expect(a.target('SELECT 1')).toBe('standby');
    a.run("SET default_transaction_isolation = 'serializable'");
    connectionIsolation(a.state, 'read committed');
    expect(a.target('SELECT 1')).toBe('primary');
    a.run('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED');
    connectionIsolation(a.state, 'serializable');
    expect(a.target('SELECT 1')).toBe('standby');
    // RESET returns to the connection's default, and the session follows its connections again.
    a.run('RESET default_transaction_isolation');
    expect(a.target('SELECT 1')).toBe('primary');
    connectionIsolation(a.state, 'repeatable read');
    expect([a.target('SELECT 1'), a.state.defaultRepeatableRead]).toEqual(['standby', true]);
    a.run("SET default_transaction_isolation = 'read committed'");
    a.run('DISCARD ALL');
    connectionIsolation(a.state, 'serializable');
    expect(a.target('SELECT 1')).toBe('primary');
  });
  it('what tells a standby from a primary is read from the primary (pgrelay is one writable server)', () => {
    const a = new Session(cfg());
    const why = { target: 'primary', reason: 'asks whether the server is a standby' };
    expect(a.run('SHOW transaction_read_only')).toMatchObject(why);
    expect(a.run('SHOW in_hot_standby')).toMatchObject(why);
    expect(a.run('SHOW default_transaction_read_only')).toMatchObject(why);
    expect(a.run("SELECT current_setting('transaction_read_only')")).toMatchObject(why);
    // pg_is_in_recovery() is volatile: the primary, unless write_function_list / read_only_function_list say otherwise.
    expect(a.run('SELECT pg_is_in_recovery()', { extra: { writingFunction: true } }).target).toBe('primary');
    expect(a.run('SELECT pg_is_in_recovery()').target).toBe('primary');
    expect(a.target('SHOW work_mem')).toBe('standby');
    // current_setting($1): decided by the value bound at Bind.
    expect(a.run('SELECT current_setting($1)', { extra: { writingFunction: false } }).target).toBe('standby');
    expect(
      a.run('SELECT current_setting($1)', {
        extra: { writingFunction: false, settingArgs: ['transaction_read_only'] },
      }),
    ).toMatchObject(why);
    expect(
      a.run('SELECT current_setting($1)', { extra: { writingFunction: false, settingArgs: ['work_mem'] } }).target,
    ).toBe('standby');
    // Inside a transaction too (BEGIN went to both nodes; the primary's transaction answers).
    a.run('BEGIN');
    expect(a.run('SHOW transaction_read_only')).toMatchObject(why);
    a.run('COMMIT');
    // Load balancing off: the primary anyway.
    expect(new Session(cfg({ load_balance_mode: false })).target('SHOW transaction_read_only')).toBe('primary');
  });
  it('a failed transaction forwards reads to the primary; ROLLBACK still goes to both', () => {
    const a = new Session(cfg({ disable_load_balance_on_write: 'off' }));
    a.run('BEGIN');
    a.run('SELECT 1/0', { fail: true });
    expect(a.state.failed).toBe(true);
    expect(a.run('SELECT 1')).toMatchObject({ target: 'primary', reason: 'failed transaction' });
    expect(a.target('ROLLBACK')).toBe('both');
    expect(a.state.failed).toBe(false);
    expect(a.target('SELECT 1')).toBe('standby');
  });
  it('COMMIT AND CHAIN ends the writing state but keeps the transaction open', () => {
    const a = new Session(cfg());
    a.run('BEGIN');
    a.run('INSERT INTO t VALUES (1)');
    a.run('COMMIT AND CHAIN');
    expect(a.state.inTransaction).toBe(true);
    expect(a.target('SELECT 1')).toBe('standby');
  });
  it('a transaction begun by a multi-statement query keeps BOTH statements on the primary (pgpool multi-statement rule)', () => {
    const a = new Session(cfg({ disable_load_balance_on_write: 'off' }));
    expect(a.target('BEGIN; SELECT 1')).toBe('primary');
    expect(a.state.txPrimaryAlone).toBe(true);
    expect(a.target('SAVEPOINT x')).toBe('primary');
    // pgpool-II balances plain SELECTs (expected7-s), outside the transaction the standby
    // never saw: pgrelay keeps them in it.
    expect(a.target('SELECT 2')).toBe('primary');
    a.run('COMMIT');
    expect(a.state.txPrimaryAlone).toBe(false);
    expect(a.target('SAVEPOINT y')).toBe('both');
  });
  it("a savepoint command among several statements in a transaction: the rest of it is the primary's (the standby's savepoints differ)", () => {
    const a = new Session(cfg());
    a.run('BEGIN');
    expect(a.target('SELECT 1')).toBe('standby');
    expect(a.target("SAVEPOINT sp; SET TimeZone = 'UTC'")).toBe('primary');
    expect(a.state.txPrimaryAlone).toBe(true);
    expect(a.target('ROLLBACK TO sp')).toBe('primary');
    expect(a.target('SELECT 1')).toBe('primary');
    expect(a.target('COMMIT')).toBe('primary');
    expect(a.state.txPrimaryAlone).toBe(false);
    // Failed after its SAVEPOINT: the same.
    a.run('BEGIN');
    a.run('SAVEPOINT sp; SELECT 1/0', { fail: true });
    expect(a.state.txPrimaryAlone).toBe(true);
    expect(a.target('ROLLBACK TO sp')).toBe('primary');
    // Outside a transaction block it changes nothing.
    a.run('ROLLBACK');
    a.run('SELECT 1; RELEASE sp', { fail: true });
    expect(a.state.txPrimaryAlone).toBe(false);
  });
  it("COMMIT AND CHAIN of a transaction begun by a multi-statement query: the next transaction is the primary's alone too", () => {
    const a = new Session(cfg());
    expect(a.target('SELECT 1; BEGIN')).toBe('primary');
    expect(a.target('COMMIT AND CHAIN')).toBe('primary');
    expect(a.state.txPrimaryAlone).toBe(true);
    expect(a.target('COMMIT AND CHAIN')).toBe('primary');
    expect(a.target('COMMIT')).toBe('primary');
    expect(a.state.txPrimaryAlone).toBe(false);
    a.run('BEGIN');
    expect(a.target('COMMIT AND CHAIN')).toBe('both');
    expect(a.state.txPrimaryAlone).toBe(false);
  });
  it("a multi-statement query that ends the transaction and begins another: the new one is the primary's alone", () => {
    const a = new Session(cfg());
    a.run('BEGIN');
    expect(a.target('SELECT 1')).toBe('standby');
    expect(a.target('END; START TRANSACTION ISOLATION LEVEL REPEATABLE READ')).toBe('primary');
    expect(a.state.txPrimaryAlone).toBe(true);
    expect(a.target('SELECT 2')).toBe('primary');
    expect(a.target('SAVEPOINT s')).toBe('primary');
  });
});

describe('unansweredDecision: the catalog cannot be asked now', () => {
  it('the primary; a call of a function whose volatility is not known counts as a write (read-your-writes reads the position after it)', () => {
    const c = (sql: string) => classifyUncached(sql, OPTS);
    expect(unansweredDecision(c('SELECT make_table()'), ['make_table'])).toMatchObject({
      target: 'primary',
      write: true,
    });
    expect(unansweredDecision(c('SELECT * FROM t'), [])).toMatchObject({ target: 'primary', write: false });
    expect(unansweredDecision(c('INSERT INTO t VALUES (1)'), [])).toMatchObject({ target: 'primary', write: true });
  });
});

describe('temp and unlogged tables', () => {
  it('temp tables created in the session are read on the primary (check_temp_table = trace semantics)', () => {
    const a = new Session(cfg());
    a.run('CREATE TEMP TABLE tmp1 (a int)');
    expect(a.target('SELECT * FROM tmp1')).toBe('primary');
    expect(a.target('SELECT * FROM pg_temp.tmp1')).toBe('primary');
    expect(a.target('SELECT * FROM other')).toBe('standby');
    a.run('DISCARD ALL');
    expect(a.target('SELECT * FROM tmp1')).toBe('standby');
  });
  it('current_schema() / current_schemas() with pg_temp in search_path: the primary (it may create the temporary schema)', () => {
    const a = new Session(cfg());
    const stable = { extra: { writingFunction: false } };
    expect(a.run('SELECT current_schema()', stable).target).toBe('standby');
    a.run("SET search_path TO 'pg_temp', public");
    expect(a.run('SELECT current_schema() ~ $$pg_temp$$ AS t', stable).target).toBe('primary');
    expect(a.run('SELECT current_schemas(true)', stable).target).toBe('primary');
    expect(a.run('SELECT 1', stable).target).toBe('standby');
    a.run('RESET search_path');
    expect(a.run('SELECT current_schema()', stable).target).toBe('standby');
    a.run("SELECT set_config('search_path', 'pg_temp,public', false)");
    expect(a.run('SELECT current_schema()', stable).target).toBe('primary');
    a.run('SET search_path = public');
    expect(a.run('SELECT current_schema()', stable).target).toBe('standby');
    a.run('SET search_path = pg_temp');
    a.run('DISCARD ALL');
    expect(a.run('SELECT current_schema()', stable).target).toBe('standby');
  });
  it('a function the session created naming one of its temp tables in its body is called on the primary, STABLE or not', () => {
    const a = new Session(cfg());
    const stable = { extra: { writingFunction: false } };
    a.run('CREATE TEMP TABLE users (login text, id int)');
    a.run(
      'CREATE FUNCTION sp_id_user(a_login text) RETURNS int AS $$ BEGIN RETURN (SELECT id FROM users WHERE login = a_login); END $$ LANGUAGE plpgsql STABLE',
    );
    a.run('CREATE FUNCTION other_fn() RETURNS int AS $$ SELECT count(*) FROM superusers $$ LANGUAGE sql STABLE');
    expect(a.run("SELECT sp_id_user('x')", stable).target).toBe('primary');
    expect(a.run("SELECT * FROM public.sp_id_user('x')", stable).target).toBe('primary');
    expect(a.run('SELECT other_fn()', stable).target).toBe('standby'); // 'superusers' is another name
  });
  it("a cast to a temp table's row type, or to a type in pg_temp, is read on the primary", () => {
    const a = new Session(cfg());
    expect(a.target("SELECT '(Joe,Blow)'::fullname")).toBe('standby');
    a.run('CREATE TEMP TABLE fullname (first text, last text)');
    expect(a.target("SELECT row('Joe', 'Blow')::fullname, 1::int")).toBe('primary');
    expect(a.target("SELECT '(a,b)'::public.fullname")).toBe('primary'); // as written: the same name
    expect(a.target("SELECT 'x'::text, 2::int")).toBe('standby');
    expect(a.target("SELECT '(1)'::pg_temp.mytype")).toBe('primary');
  });
  it('a permanent parent of a temp table and a view of a temp table are read on the primary; unrelated ones are not', () => {
    const a = new Session(cfg());
    a.run('CREATE TEMP TABLE kid () INHERITS (mom, s.dad)');
    expect(a.target('SELECT * FROM mom')).toBe('primary');
    expect(a.target('SELECT * FROM s.dad')).toBe('primary');
    a.run('CREATE TABLE kid2 () INHERITS (aunt)'); // permanent: no
    expect(a.target('SELECT * FROM aunt')).toBe('standby');
    a.run('CREATE TEMP TABLE t2 (a int)');
    a.run('ALTER TABLE t2 INHERIT grandma, NO INHERIT mom');
    expect(a.target('SELECT * FROM grandma')).toBe('primary');
    a.run('ALTER TABLE IF EXISTS ONLY t2 INHERIT uncle');
    expect(a.target('SELECT * FROM uncle')).toBe('primary');
    a.run('ALTER TABLE permanent INHERIT cousin');
    expect(a.target('SELECT * FROM cousin')).toBe('standby');
    a.run('CREATE VIEW tv AS SELECT * FROM x JOIN t2 USING (a)');
    expect(a.target('SELECT * FROM tv')).toBe('primary');
    a.run('CREATE OR REPLACE RECURSIVE VIEW tv2 (n) AS SELECT 1 FROM pg_temp.any');
    expect(a.target('SELECT * FROM tv2')).toBe('primary');
    a.run('CREATE VIEW pv AS SELECT * FROM x');
    expect(a.target('SELECT * FROM pv')).toBe('standby');
    a.run('CREATE VIEW failed AS SELECT * FROM t2', { fail: true });
    expect(a.target('SELECT * FROM failed')).toBe('standby');
  });
  it("temporary objects named with pg_temp (tables, functions), and temp tables named by a regclass literal, are the primary's", () => {
    const a = new Session(cfg({ check_temp_table: 'none' }));
    const stable = { extra: { writingFunction: false } };
    expect(a.run('SELECT pg_temp.whoami()', stable)).toMatchObject({ target: 'primary' });
    expect(a.target('SELECT * FROM pg_temp.t1')).toBe('primary');
    expect(a.target('SELECT * FROM pg_temp_3.t1')).toBe('primary');
    expect(a.run('SELECT app.whoami()', stable).target).toBe('standby');
    const b = new Session(cfg());
    b.run('CREATE TEMPORARY VIEW vsub AS SELECT 1');
    expect(b.run("SELECT pg_get_viewdef('vsub'::regclass)", stable).target).toBe('primary');
    expect(b.run("SELECT pg_get_viewdef('other_v'::regclass)", stable).target).toBe('standby');
  });
  it("a temp table the session created, named in a string literal (has_column_privilege('mytable', …), pg_relation_size('pg_temp.mytable')): the primary", () => {
    const a = new Session(cfg());
    const stable = { extra: { writingFunction: false } };
    a.run('CREATE TEMP TABLE mytable (f1 int)');
    expect(a.run("SELECT has_column_privilege('mytable', 'f1', 'select')", stable).target).toBe('primary');
    expect(a.run("SELECT pg_relation_size('pg_temp.MyTable')", stable).target).toBe('primary');
    expect(a.run("SELECT has_table_privilege('othertable', 'select')", stable).target).toBe('standby');
    expect(a.run("SELECT 'not mytable here'", stable).target).toBe('standby');
    a.run('CREATE TEMP TABLE "QuotedT" (f1 int)');
    expect(a.run(`SELECT pg_relation_size('"QuotedT"')`, stable).target).toBe('primary');
  });
  it('check_temp_table = none disables the session tracking', () => {
    const a = new Session(cfg({ check_temp_table: 'none' }));
    a.run('CREATE TEMP TABLE tmp1 (a int)');
    expect(a.target('SELECT * FROM tmp1')).toBe('standby');
  });
  it("the lead's catalog answer (temp or unlogged) sends the read to the primary", () => {
    const a = new Session(cfg());
    expect(a.run('SELECT * FROM unlogged_t', { extra: { tempOrUnlogged: true } }).target).toBe('primary');
    expect(a.run('SELECT * FROM unlogged_t', { extra: { tempOrUnlogged: false } }).target).toBe('standby');
  });
});

describe('writing functions (pgpool writing functions) through FunctionVolatilityCache', () => {
  function catalog(volatile: Set<string>): { query: CatalogQuery; calls: string[] } {
    const calls: string[] = [];
    const query: CatalogQuery = async (sql) => {
      calls.push(sql);
      const names = [...sql.matchAll(/E'([^']*)'/g)].map((m) => m[1]);
      return names.filter((n) => volatile.has(n)).map((name) => ({ name, vol: 'v' }));
    };
    return { query, calls };
  }
  const base = {
    write_function_list: [] as string[],
    read_only_function_list: [] as string[],
    relcache_size: 256,
    relcache_expire: 0,
  };

  it('SELECT … FROM f(): volatile user function → primary, stable → standby', async () => {
    const fns = new FunctionVolatilityCache(base);
    const { query, calls } = catalog(new Set(['fvol']));
    const a = new Session(cfg(), fns);
    for (const sql of ['SELECT * FROM fvol()', 'SELECT * FROM fstab(1)']) {
      const cls = classifyUncached(sql, OPTS);
      expect(fns.anyWriting('db', cls.functions)).toBeUndefined();
      await fns.lookup('db', cls.functions, query);
    }
    expect(calls).toHaveLength(2);
    expect(a.target('SELECT * FROM fvol()')).toBe('primary');
    expect(a.target('SELECT * FROM fstab(1)')).toBe('standby');
    expect(a.target('SELECT fstab(1), fvol()')).toBe('primary');
    expect(calls).toHaveLength(2); // cached: no new catalog query
  });
  it('unknown volatility → primary (conservative) until resolved', () => {
    const a = new Session(cfg(), new FunctionVolatilityCache(base));
    expect(a.run('SELECT f()')).toMatchObject({ target: 'primary', reason: 'function volatility unknown' });
  });
  it('nextval/setval/currval/lastval always write, even with a read-only list naming them', () => {
    const fns = new FunctionVolatilityCache({ ...base, read_only_function_list: ['nextval', 'currval'] });
    for (const f of ['nextval', 'setval', 'currval', 'lastval', 'pg_catalog.nextval'])
      expect(fns.isWriting('db', f)).toBe(true);
    const a = new Session(cfg(), fns);
    expect(a.target("SELECT nextval('s')")).toBe('primary');
  });
  it('write_function_list: matching names write, others do not (anchored)', () => {
    const fns = new FunctionVolatilityCache({ ...base, write_function_list: ['fvol', 'audit_.*'] });
    expect(fns.isWriting('db', 'fvol')).toBe(true);
    expect(fns.isWriting('db', 'fvol2')).toBe(false);
    expect(fns.isWriting('db', 'audit_log')).toBe(true);
    expect(fns.isWriting('db', 'public.fvol')).toBe(false); // schema-qualified names are listed separately
    expect(fns.isWriting('db', 'now')).toBe(false);
  });
  it('read_only_function_list: names not in it write', () => {
    const fns = new FunctionVolatilityCache({ ...base, read_only_function_list: ['now', 'count', 'fstab'] });
    expect(fns.isWriting('db', 'count')).toBe(false);
    expect(fns.isWriting('db', 'random')).toBe(true);
    expect(fns.anyWriting('db', ['now', 'random'])).toBe(true);
    expect(fns.anyWriting('db', ['now', 'count'])).toBe(false);
  });
  it('rejects both lists at once and bad regexes, naming the entry', () => {
    expect(
      () => new FunctionVolatilityCache({ ...base, write_function_list: ['a'], read_only_function_list: ['b'] }),
    ).toThrow(/mutually exclusive/);
    expect(() => new FunctionVolatilityCache({ ...base, write_function_list: ['ok', 'bad('] })).toThrow(/"bad\("/);
  });
  it('cache: per database, bounded, expiring; concurrent lookups share one query', async () => {
    let now = 0;
    const fns = new FunctionVolatilityCache({ ...base, relcache_size: 2, relcache_expire: 10 }, () => now);
    const { query, calls } = catalog(new Set(['v']));
    await Promise.all([fns.lookup('db1', ['v', 's'], query), fns.lookup('db1', ['v'], query)]);
    expect(calls).toHaveLength(1);
    expect(fns.isWriting('db1', 'v')).toBe(true);
    expect(fns.isWriting('db1', 's')).toBe(false);
    expect(fns.isWriting('db2', 'v')).toBeUndefined();
    await fns.lookup('db2', ['v'], query); // evicts the oldest entry
    expect(fns.size).toBe(2);
    expect(fns.isWriting('db1', 'v')).toBeUndefined();
    now = 10_001;
    expect(fns.isWriting('db2', 'v')).toBeUndefined(); // expired
  });
  it('resolve() answers true when the catalog query fails, and caches nothing', async () => {
    const fns = new FunctionVolatilityCache(base);
    const failing: CatalogQuery = async () => {
      throw new Error('down');
    };
    await expect(fns.resolve('db', ['f'], failing)).resolves.toBe(true);
    expect(fns.isWriting('db', 'f')).toBeUndefined();
  });
  it("a STABLE function's body naming a temp table of the session: readsTemp (SQL, PL/pgSQL; other languages may)", async () => {
    const fns = new FunctionVolatilityCache(base);
    await fns.lookup('db', ['rep', 'other', 'py', 'c_fn', 'mixed'], async () => [
      { name: 'rep', vol: 's', lang: 'plpgsql', src: 'BEGIN RETURN (SELECT count(*) FROM Tmp_Results); END' },
      { name: 'other', vol: 'i', lang: 'sql', src: 'SELECT count(*) FROM tmp_results_archive' },
      { name: 'py', vol: 's', lang: 'plpython3u', src: 'return 1' },
      { name: 'c_fn', vol: 's', lang: 'c', src: 'c_fn' },
      { name: 'mixed', vol: 's', lang: 'sql', src: 'SELECT 1' },
      { name: 'mixed', vol: 'v', lang: 'sql', src: 'SELECT 2' },
    ]);
    expect(fns.readsTemp('db', ['rep'], ['tmp_results'])).toBe(true);
    expect(fns.readsTemp('db', ['rep'], ['pg_temp.tmp_results'])).toBe(true);
    expect(fns.readsTemp('db', ['other', 'c_fn'], ['tmp_results'])).toBe(false);
    expect(fns.readsTemp('db', ['py'], ['anything'])).toBe(true);
    expect(fns.readsTemp('db', ['mixed', 'unknown'], ['tmp_results'])).toBe(false);
    expect(fns.readsTemp('other_db', ['rep'], ['tmp_results'])).toBe(false);
    expect(fns.isWriting('db', 'rep')).toBe(false);
    expect(fns.isWriting('db', 'mixed')).toBe(true);
  });
  it('lookup SQL: any overload, any schema for unqualified names, quoting safe', () => {
    const sql = volatileFunctionsSql(['f', "o'k", 'myschema.g']);
    expect(sql).toContain('p.provolatile::text AS vol');
    expect(sql).toContain("p.proname IN (E'f', E'o''k')");
    expect(sql).toContain("n.nspname = E'myschema' AND p.proname = E'g'");
    expect(volatileFunctionsSql(['a\\b'])).toContain("E'a\\\\b'");
  });
  it('no function call → no lookup needed', () => {
    const cls = classifyUncached('SELECT abalance FROM pgbench_accounts WHERE aid = 1', OPTS);
    expect(cls.functions).toEqual([]);
  });
});

describe('bodySettings: a volatile function whose body sets nothing costs its connection no reset', () => {
  it('SET/RESET statements, set_config, dynamic SQL, calls of user or quoted functions, other languages may; plain SQL and PL/pgSQL do not', () => {
    // May on its own: sets, or calls a user function (which may; looked up in turn).
    const may = (lang: string, src: string) => {
      const b = bodySettings(lang, src);
      return b.sets || b.calls.length > 0;
    };
    expect(may('sql', 'SELECT $1 + 1')).toBe(false);
    expect(may('c', 'uuid_generate_v4')).toBe(false);
    expect(may('internal', 'now')).toBe(false);
    expect(
      may(
        'plpgsql',
        `DECLARE n numeric(10,2); BEGIN
           INSERT INTO audit (who, at) VALUES (p_who, now()) ON CONFLICT (who) DO UPDATE SET at = now();
           UPDATE t SET v = coalesce(v, 0) + 1 WHERE id IN (SELECT id FROM u WHERE x > greatest(1, 2));
           WITH c (a) AS (SELECT 1) SELECT count(*) INTO n FROM c;
           RETURN QUERY (SELECT format('%s', n));
         END`,
      ),
    ).toBe(false);
    expect(may('plpgsql', "BEGIN PERFORM set_config('app.tenant', t, false); END")).toBe(true);
    expect(may('plpgsql', 'BEGIN x := 1; SET search_path = tenant; END')).toBe(true);
    expect(may('sql', 'RESET ALL')).toBe(true);
    expect(may('plpgsql', "BEGIN EXECUTE 'SET work_mem = ''1MB'''; END")).toBe(true);
    expect(may('plpgsql', "BEGIN EXECUTE format('SET %I = %L', k, v); END")).toBe(true);
    expect(may('plpgsql', 'BEGIN PERFORM app.set_tenant(t); END')).toBe(true);
    expect(bodySettings('plpgsql', 'BEGIN PERFORM app.set_tenant(t); RETURN helper(now()); END')).toEqual({
      sets: false,
      calls: ['app.set_tenant', 'helper'],
    });
    expect(may('sql', 'SELECT set_tenant($1)')).toBe(true);
    expect(may('plpgsql', 'BEGIN PERFORM "SetTenant"(t); END')).toBe(true);
    expect(may('plpython3u', 'return 1')).toBe(true);
  });
  it('the catalog answer: a volatile function whose body sets nothing is known not to change settings', async () => {
    const fns = new FunctionVolatilityCache({
      write_function_list: [],
      read_only_function_list: [],
      relcache_size: 256,
      relcache_expire: 0,
    });
    await fns.lookup('db', ['plain', 'setter', 'stable'], async () => [
      { name: 'plain', vol: 'v', lang: 'sql', src: 'SELECT 1' },
      { name: 'setter', vol: 'v', lang: 'sql', src: "SELECT set_config('a.b', '1', false)" },
      { name: 'plain', vol: 'v', lang: 'plpgsql', src: 'BEGIN RETURN 2; END' },
      { name: 'stable', vol: 's', lang: 'sql', src: 'SELECT 3' },
    ]);
    expect([fns.isWriting('db', 'plain'), fns.changesSettings('db', 'plain')]).toEqual([true, false]);
    expect([fns.isWriting('db', 'setter'), fns.changesSettings('db', 'setter')]).toEqual([true, true]);
    expect([fns.isWriting('db', 'stable'), fns.changesSettings('db', 'stable')]).toEqual([false, false]);
    expect(fns.changesSettings('db', 'unknown')).toBeUndefined();
  });

  it('a function that only calls user functions is answered by what they do (asked in turn, a few levels deep)', async () => {
    const catalog: Record<string, { lang: string; src: string }> = {
      outer: { lang: 'sql', src: 'SELECT helper($1)' },
      helper: { lang: 'plpgsql', src: 'BEGIN INSERT INTO audit VALUES (1); RETURN 1; END' },
      tenant: { lang: 'sql', src: 'SELECT app.set_tenant($1)' },
      'app.set_tenant': { lang: 'plpgsql', src: "BEGIN PERFORM set_config('app.tenant', $1, false); END" },
      calls_stable: { lang: 'sql', src: 'SELECT stable_fn($1)' },
      ping: { lang: 'plpgsql', src: 'BEGIN PERFORM pong(); END' },
      pong: { lang: 'plpgsql', src: 'BEGIN PERFORM ping(); END' },
      d0: { lang: 'sql', src: 'SELECT d1()' },
      d1: { lang: 'sql', src: 'SELECT d2()' },
      d2: { lang: 'sql', src: 'SELECT d3()' },
      d3: { lang: 'sql', src: 'SELECT d4()' },
      d4: { lang: 'sql', src: 'SELECT 1' },
      broken: { lang: 'sql', src: 'SELECT fails()' },
    };
    const asked: string[][] = [];
    const query = async (sql: string) => {
      const names = [...sql.matchAll(/'([^']+)'/g)].map((m) => m[1]).filter((n) => n !== 'v');
      asked.push(names);
      if (names.includes('fails')) throw new Error('catalog unreachable');
      return names.filter((n) => catalog[n]).map((n) => ({ name: n, vol: 'v', ...catalog[n] }));
    };
    const fns = new FunctionVolatilityCache({
      write_function_list: [],
      read_only_function_list: [],
      relcache_size: 256,
      relcache_expire: 0,
    });
    // As the router asks (Router.unknownUserFunctions): the functions, then what they call, level by level.
    const ask = async (names: string[]) => {
      await fns.lookup('db', names, query);
      for (let u = fns.unknownCallees('db', names); u.length > 0; u = fns.unknownCallees('db', names))
        if (
          !(await fns.lookup('db', u, query).then(
            () => true,
            () => false,
          ))
        )
          return;
    };
    await ask(['outer', 'tenant', 'calls_stable', 'ping', 'd0']);
    expect(fns.unknownCallees('db', ['outer', 'tenant', 'calls_stable', 'ping', 'd0'])).toEqual([]);
    // A failed query answers none of the functions it asked about.
    await ask(['broken']);
    const sets = (fn: string) => fns.changesSettings('db', fn);
    expect(sets('outer'), 'its callee sets nothing').toBe(false);
    expect(sets('helper'), 'callees are cached too').toBe(false);
    expect(sets('tenant'), 'its callee runs set_config').toBe(true);
    expect(sets('app.set_tenant')).toBe(true);
    expect(sets('calls_stable'), 'a callee that is not volatile is trusted').toBe(false);
    expect([sets('ping'), sets('pong')], 'calls that go round set nothing').toEqual([false, false]);
    expect(sets('d0'), 'a chain deeper than the levels asked counts as setting').toBe(true);
    expect(sets('broken'), 'a callee the catalog did not answer leaves it unknown (a reset)').toBeUndefined();
    expect(asked.length, 'one catalog query per level').toBe(4 + 2);
  });
});
