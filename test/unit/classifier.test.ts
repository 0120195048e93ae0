import { describe, it, expect } from 'vitest';
import {
  classify,
  classifyQuery,
  classifyUncached,
  numericShape,
  parameterCount,
  pipelineRefusal,
  returnsNoRows,
  type Classification,
  type ClassifyOptions,
} from '../../src/router/classifier.js';
import { lex, Tok } from '../../src/router/lexer.js';

const OFF: ClassifyOptions = { allowSqlComments: false };
const ON: ClassifyOptions = { allowSqlComments: true };
const c = (sql: string, opts: ClassifyOptions = OFF): Classification => classifyUncached(sql, opts);
const dest = (sql: string, opts: ClassifyOptions = OFF): string => c(sql, opts).dest;

describe('lexer', () => {
  it('skips comments, strings, dollar quotes and quoted identifiers', () => {
    const r = lex(`SELECT /* a /* nested */ b */ 'x''y', E'\\'', $fn$ ; $$ $fn$, "a""b", U&"d\\0061t", $1 -- tail ;`);
    expect(r.error).toBeUndefined();
    expect(r.tokens.filter((t) => t.kind === Tok.Semi)).toHaveLength(0);
    expect(r.tokens.find((t) => t.kind === Tok.QuotedIdent)?.text).toBe('a"b');
    expect(r.tokens.filter((t) => t.kind === Tok.String)).toHaveLength(3);
    expect(r.tokens.some((t) => t.kind === Tok.Param)).toBe(true);
  });
  it('reports unterminated constructs and unbalanced parentheses', () => {
    expect(lex("SELECT 'x").error).toMatch(/unterminated/);
    expect(lex('SELECT $a$ x').error).toMatch(/dollar/);
    expect(lex('SELECT /* x').error).toMatch(/comment/);
    expect(lex('SELECT "x').error).toMatch(/identifier/);
    expect(lex('SELECT (1').error).toMatch(/unbalanced/);
    expect(lex('SELECT 1)').error).toMatch(/unbalanced/);
  });
  it('backslash escapes plain strings only with standard_conforming_strings off', () => {
    expect(lex("SELECT 'a\\'").error).toBeUndefined();
    expect(lex("SELECT 'a\\'", false).error).toMatch(/unterminated/);
  });
  it('tracks depth and matching parentheses', () => {
    const r = lex('SELECT (a, (b))');
    const open = r.tokens[1];
    expect(open.kind).toBe(Tok.LParen);
    expect(r.tokens[open.match].kind).toBe(Tok.RParen);
    expect(r.tokens.find((t) => t.text === 'b')?.depth).toBe(2);
  });
  it('sees leading comments and the NO LOAD BALANCE hint', () => {
    expect(lex('  -- x\nSELECT 1').leadingComment).toBe(true);
    expect(lex('SELECT 1 -- x').leadingComment).toBe(false);
    expect(lex('SELECT /* no load balance */ 1').noLoadBalanceHint).toBe(true);
    expect(lex("SELECT '/*NO LOAD BALANCE*/'").noLoadBalanceHint).toBe(false);
  });
});

// pgpool's statement table (send_to_where()), row by row (allow_sql_comments = off, the default).
describe('pgpool statement table (send_to_where()) statement table', () => {
  it.each([
    ['SELECT 1'],
    ['SELECT now()'],
    ['  SELECT 2'],
    ['TABLE t1'],
    ['(SELECT 1)'],
    ['SELECT * FROM t1'],
    ['SELECT fstab(1)'],
    ['WITH x AS (SELECT 1) SELECT * FROM x'],
    ['SHOW work_mem'],
    ['COPY t1 TO STDOUT'],
    ['COPY (SELECT 1) TO STDOUT'],
    ["SELECT current_setting('transaction_read_only')"],
    [''],
    [';'],
  ])('%j is a read (EITHER)', (sql) => {
    const r = c(sql);
    expect(r.dest).toBe('either');
    expect(r.write).toBe(false);
  });

  it.each([
    ['SELECT * FROM t1 FOR UPDATE', 'FOR UPDATE'],
    ['SELECT * FROM t1 FOR SHARE', 'FOR'],
    ['SELECT * FROM t1 FOR NO KEY UPDATE', 'FOR'],
    ['SELECT * FROM t1 FOR KEY SHARE SKIP LOCKED', 'FOR'],
    ['SELECT * INTO TEMP t2 FROM t1', 'INTO'],
    ['SELECT * INTO t2 FROM t1', 'INTO'],
    ['WITH x AS (INSERT INTO t1 VALUES (1) RETURNING *) SELECT * FROM x', 'INSERT'],
    ['WITH x AS (UPDATE t1 SET a = 1 RETURNING *) SELECT * FROM x', 'UPDATE'],
    ['WITH x AS (DELETE FROM t1 RETURNING *) SELECT * FROM x', 'DELETE'],
    ['VALUES (1)', 'allow_sql_comments'],
    ['/* comment */ SELECT 3', 'comment'],
    ['COPY t1 FROM STDIN', 'COPY FROM'],
    ['COPY (INSERT INTO t1 VALUES (1) RETURNING *) TO STDOUT', 'INSERT'],
    ["COPY t1 TO '/tmp/x'", 'file'],
    ['EXPLAIN SELECT 1', 'EXPLAIN'],
    ['EXPLAIN ANALYZE SELECT 1', 'EXPLAIN ANALYZE'],
    ['SET transaction_read_only = off', 'transaction_read_only'],
    ['SET transaction_read_only = false', 'transaction_read_only'],
    ['SET transaction_read_only = 0', 'transaction_read_only'],
    ["SET transaction_read_only TO 'off'", 'transaction_read_only'],
    ['SET TRANSACTION READ WRITE', 'READ WRITE'],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', 'READ WRITE'],
    ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'SERIALIZABLE'],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'SERIALIZABLE'],
    ["SET transaction_isolation = 'serializable'", 'serializable'],
    ["SET default_transaction_isolation TO 'serializable'", 'serializable'],
    ["PREPARE TRANSACTION 'gx'", 'PREPARE TRANSACTION'],
    ["COMMIT PREPARED 'gx'", 'COMMIT PREPARED'],
    ["ROLLBACK PREPARED 'gx'", 'ROLLBACK PREPARED'],
    ['SET CONSTRAINTS s.c DEFERRED', 'SET CONSTRAINTS'],
    ['set constraints all immediate', 'SET CONSTRAINTS'],
    ['LOCK t1 IN ROW EXCLUSIVE MODE', 'LOCK'],
    ['LOCK TABLE t1 IN SHARE MODE', 'LOCK'],
    ['LOCK t1', 'LOCK'],
    ['DECLARE c CURSOR FOR SELECT 1', 'DECLARE'],
    ['FETCH 10 FROM c', 'FETCH'],
    ['CLOSE c', 'CLOSE'],
    ['LISTEN ch', 'LISTEN'],
    ['UNLISTEN *', 'UNLISTEN'],
    ["NOTIFY ch, 'x'", 'NOTIFY'],
    ['INSERT INTO t1 VALUES (1)', 'INSERT'],
    ['UPDATE t1 SET a = 2', 'UPDATE'],
    ['DELETE FROM t1', 'DELETE'],
    ['MERGE INTO t1 USING t2 ON t1.id = t2.id WHEN MATCHED THEN UPDATE SET a = t2.a', 'MERGE'],
    ['TRUNCATE t1', 'TRUNCATE'],
    ['CREATE TABLE t3 (a int)', 'CREATE'],
    ['ALTER TABLE t1 ADD COLUMN b int', 'ALTER'],
    ['DROP TABLE t1', 'DROP'],
    ['VACUUM t1', 'VACUUM'],
    ['ANALYZE t1', 'ANALYZE'],
    ['CHECKPOINT', 'CHECKPOINT'],
    ['DO $$ BEGIN PERFORM 1; END $$', 'DO'],
    ['CALL p()', 'CALL'],
    ['SELECT 1 AS x; SELECT 2', 'multi'],
    ['PREPARE p AS SELECT 1', 'PREPARE'],
    ['EXECUTE p', 'EXECUTE'],
    ['DEALLOCATE p', 'DEALLOCATE'],
    ['SELEC 1', 'does not parse'],
  ])('%j goes to the primary', (sql, reason) => {
    const r = c(sql);
    expect(r.dest).toBe('primary');
    expect(r.reason).toContain(reason);
  });

  it.each([
    ["SET work_mem = '4MB'"],
    ['SET LOCAL statement_timeout = 0'],
    ['SET search_path TO a, b'],
    ["SET TIME ZONE 'UTC'"],
    ['RESET work_mem'],
    ['RESET ALL'],
    ['DISCARD ALL'],
    ['DEALLOCATE ALL'],
    ['DEALLOCATE PREPARE ALL'],
    ['BEGIN'],
    ['BEGIN WORK'],
    ['START TRANSACTION'],
    ['BEGIN READ ONLY'],
    ['BEGIN ISOLATION LEVEL REPEATABLE READ'],
    ['COMMIT'],
    ['END'],
    ['ROLLBACK'],
    ['ABORT'],
    ['SAVEPOINT s1'],
    ['RELEASE SAVEPOINT s1'],
    ['RELEASE s1'],
    ['ROLLBACK TO SAVEPOINT s1'],
    ['ROLLBACK TO s1'],
    ['LOCK t1 IN ACCESS SHARE MODE'],
    ['LOCK TABLE t1 IN ROW SHARE MODE'],
    ['SET transaction_read_only = on'],
    ['SET TRANSACTION READ ONLY'],
    ['SET TRANSACTION ISOLATION LEVEL REPEATABLE READ'],
  ])('%j goes to both', (sql) => {
    expect(dest(sql)).toBe('both');
  });

  it('marks transaction-control commands', () => {
    expect(c('BEGIN').tx).toBe('begin');
    expect(c('START TRANSACTION').tx).toBe('begin');
    expect(c('COMMIT').tx).toBe('commit');
    expect(c('END TRANSACTION').tx).toBe('commit');
    expect(c('ROLLBACK').tx).toBe('rollback');
    expect(c('ABORT').tx).toBe('rollback');
    expect(c('SAVEPOINT a').tx).toBe('savepoint');
    expect(c('RELEASE a').tx).toBe('release');
    expect(c('ROLLBACK TO a').tx).toBe('rollback_to');
    expect(c("PREPARE TRANSACTION 'a'").tx).toBe('prepare_transaction');
    expect(c("COMMIT PREPARED 'a'").tx).toBe('commit_prepared');
    expect(c("ROLLBACK PREPARED 'a'").tx).toBe('rollback_prepared');
    expect(c('COMMIT AND CHAIN').chain).toBe(true);
    expect(c('COMMIT AND NO CHAIN').chain).toBeUndefined();
  });

  it('BEGIN READ WRITE / SERIALIZABLE: original to the primary, plain BEGIN to the standby', () => {
    expect(c('BEGIN READ WRITE').standbyText).toBe('BEGIN');
    expect(c('START TRANSACTION READ WRITE').standbyText).toBe('BEGIN');
    expect(c('BEGIN ISOLATION LEVEL SERIALIZABLE').standbyText).toBe('BEGIN');
    expect(c('BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE').standbyText).toBe(
      'BEGIN READ ONLY DEFERRABLE',
    );
    // SHOW transaction_deferrable on the standby answers as on the primary.
    expect(c('START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE, DEFERRABLE').standbyText).toBe(
      'BEGIN ISOLATION LEVEL REPEATABLE READ DEFERRABLE',
    );
    expect(c('BEGIN READ WRITE NOT DEFERRABLE').standbyText).toBe('BEGIN NOT DEFERRABLE');
    expect(c('BEGIN ISOLATION LEVEL REPEATABLE READ READ WRITE').standbyText).toBe(
      'BEGIN ISOLATION LEVEL REPEATABLE READ',
    );
    expect(c('BEGIN').standbyText).toBeUndefined();
    expect(c('BEGIN READ ONLY').standbyText).toBeUndefined();
    expect(c('BEGIN ISOLATION LEVEL SERIALIZABLE').beginModes).toEqual({ isolation: 'serializable' });
    expect(c('BEGIN READ ONLY').beginModes).toEqual({ readOnly: true });
  });

  it('write flag: SET and SAVEPOINT count, SET TRANSACTION READ ONLY, SHOW, BEGIN, COMMIT do not (pgpool disable_load_balance_on_write (pool_at_command_success()), observed with pgpool 4.3.5)', () => {
    expect(c('SET work_mem = 1').write).toBe(true);
    expect(c('SAVEPOINT a').write).toBe(true);
    expect(c('LOCK t IN ACCESS SHARE MODE').write).toBe(true);
    expect(c('SET TRANSACTION READ ONLY').write).toBe(false);
    expect(c('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY').write).toBe(false);
    expect(c('SET transaction_read_only = on').write).toBe(false);
    expect(c('SHOW work_mem').write).toBe(false);
    expect(c('BEGIN').write).toBe(false);
    expect(c('COMMIT').write).toBe(false);
    expect(c('EXPLAIN SELECT 1').write).toBe(false);
    expect(c('EXPLAIN INSERT INTO t VALUES (1)').write).toBe(false);
    expect(c('EXPLAIN ANALYZE INSERT INTO t VALUES (1)').write).toBe(true);
    expect(c('EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t').write).toBe(true);
    expect(c('EXPLAIN (ANALYZE false) DELETE FROM t').write).toBe(false);
  });

  it('records SET effects on isolation', () => {
    expect(c('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE').txSetting).toEqual({
      scope: 'transaction',
      isolation: 'serializable',
      readOnly: undefined,
    });
    expect(c("SET default_transaction_isolation = 'repeatable read'").txSetting).toEqual({
      scope: 'session',
      isolation: 'repeatable read',
    });
    expect(c('RESET ALL').txSetting).toEqual({ scope: 'session', isolation: 'default' });
  });

  it('with allow_sql_comments = on, comments are ignored and VALUES is a read', () => {
    expect(dest('/* comment */ SELECT 3', ON)).toBe('either');
    expect(dest('-- c\nSELECT 3', ON)).toBe('either');
    expect(dest('VALUES (1)', ON)).toBe('either');
  });

  it('a read rejected by the text rule counts as a write, as in pgpool', () => {
    expect(c('/* x */ SELECT 1').write).toBe(true);
    expect(c('/* x */ SELECT 1', ON).write).toBe(false);
  });
});

describe('/*NO LOAD BALANCE*/ hint', () => {
  it('forces the primary whatever allow_sql_comments says', () => {
    expect(dest('/*NO LOAD BALANCE*/ SELECT 1', ON)).toBe('primary');
    expect(dest('/*NO LOAD BALANCE*/ SELECT 1', OFF)).toBe('primary');
    expect(dest('SELECT * FROM t /* no load balance */ WHERE a = 1', ON)).toBe('primary');
    expect(c('SELECT /*NO LOAD BALANCE*/ 1', ON).reason).toBe('NO LOAD BALANCE hint');
  });
  it('does not turn a BOTH statement into primary-only, nor a read into a write', () => {
    expect(dest('/*NO LOAD BALANCE*/ SET work_mem = 1', ON)).toBe('both');
    expect(c('SELECT /*NO LOAD BALANCE*/ 1', ON).write).toBe(false);
  });
  it('is not seen inside strings or line comments', () => {
    expect(dest("SELECT '/*NO LOAD BALANCE*/'", ON)).toBe('either');
    expect(dest('SELECT 1 -- NO LOAD BALANCE', ON)).toBe('either');
  });
});

describe('writable CTEs and DML anywhere in the tree', () => {
  it.each([
    'SELECT * FROM (WITH d AS (DELETE FROM q RETURNING *) SELECT * FROM d) s',
    'SELECT * FROM t WHERE id IN (WITH u AS (UPDATE t SET a = 1 RETURNING id) SELECT id FROM u)',
    'WITH a AS (SELECT 1), b AS MATERIALIZED (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM a, b',
    'WITH a AS NOT MATERIALIZED (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *) SELECT 1',
    'WITH RECURSIVE a(n) AS (SELECT 1), w AS (DELETE FROM t) SELECT * FROM a',
    '(WITH x AS (INSERT INTO t DEFAULT VALUES RETURNING *) SELECT * FROM x)',
    'COPY (WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x) TO STDOUT',
  ])('%j → primary', (sql) => {
    const r = c(sql);
    expect(r.dest).toBe('primary');
    expect(r.write).toBe(true);
  });
  it('WITH … INSERT/UPDATE main statement has the DML kind and written tables', () => {
    const r = c('WITH x AS (SELECT 1 AS a) INSERT INTO public.t (a) SELECT a FROM x');
    expect(r.kind).toBe('insert');
    expect(r.writtenTables).toEqual(['public.t']);
    const u = c('WITH x AS (SELECT 1) UPDATE ONLY t2 SET a = 1');
    expect(u.kind).toBe('update');
    expect(u.writtenTables).toEqual(['t2']);
  });
  it('written tables for dml_adaptive', () => {
    expect(c('INSERT INTO t1 (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2').writtenTables).toEqual(['t1']);
    expect(c('DELETE FROM ONLY s.t2 WHERE a = 1').writtenTables).toEqual(['s.t2']);
    expect(c('UPDATE "T3" SET a = 1').writtenTables).toEqual(['T3']);
    expect(c('MERGE INTO t4 USING s ON t4.id = s.id WHEN MATCHED THEN UPDATE SET a = 1').writtenTables).toEqual(['t4']);
    expect(c('TRUNCATE TABLE a, ONLY b').writtenTables).toEqual(['a', 'b']);
    expect(c('COPY t5 FROM STDIN').writtenTables).toEqual(['t5']);
    expect(c('WITH x AS (DELETE FROM t6 RETURNING *) SELECT * FROM x').writtenTables).toEqual(['t6']);
  });
  it('a column reference t.update is not DML', () => {
    expect(dest('SELECT t.update, t.delete FROM t')).toBe('either');
  });
});

describe('functions and relations', () => {
  it('collects function calls, schema-qualified as written', () => {
    const r = c('SELECT f(1), public.g(2), "MixedCase"(3), count(*) FROM generate_series(1, 3) AS s(i)');
    expect(r.functions).toEqual(['f', 'public.g', 'MixedCase', 'count', 'generate_series']);
  });
  it('SELECT … FROM f() records the function', () => {
    expect(c('SELECT * FROM f()').functions).toEqual(['f']);
    expect(c('SELECT * FROM t JOIN LATERAL fvol(t.a) AS x ON true').functions).toEqual(['fvol']);
    expect(c('SELECT * FROM ROWS FROM (a(), b()) AS r(x, y)').functions).toEqual(['a', 'b']);
  });
  it('does not mistake syntax, types, aliases or CTE column lists for calls', () => {
    const r = c(
      'WITH x(a, b) AS (SELECT 1, 2), y AS MATERIALIZED (SELECT 3) ' +
        'SELECT CAST(a AS numeric(10, 2)), b::varchar(3), EXTRACT(year FROM now()), COALESCE(a, 1), ' +
        'ARRAY(SELECT 1), ROW(1, 2), a IN (1, 2), EXISTS (SELECT 1), count(*) FILTER (WHERE a > 1) OVER (PARTITION BY b), ' +
        "substring('abc' FROM 1 FOR 2), trim(both ' ' FROM 'x'), position('a' IN 'abc'), interval '1 day', current_timestamp(3) " +
        'FROM x, t1 tt(c1, c2), generate_series(1, 2) g(i) JOIN t2 USING (id) TABLESAMPLE system(10) REPEATABLE (1) ' +
        'WHERE a = ANY (ARRAY[1]) AND NOT (a IS DISTINCT FROM b) GROUP BY GROUPING SETS ((a), (b))',
    );
    expect(r.functions).toEqual(['now', 'count', 'generate_series']);
    expect(r.relations).toEqual(['x', 't1', 't2']);
  });
  it('collects relations from FROM lists, joins and subqueries', () => {
    expect(c('SELECT * FROM a, b LEFT JOIN c ON a.x = c.x, d').relations).toEqual(['a', 'b', 'c', 'd']);
    expect(c('SELECT * FROM (SELECT * FROM s1.inner_t) q, outer_t').relations).toEqual(['s1.inner_t', 'outer_t']);
    expect(c('SELECT * FROM (a JOIN b ON true)').relations).toEqual(['a', 'b']);
    expect(c('SELECT * FROM ONLY p').relations).toEqual(['p']);
    expect(c('TABLE s.t').relations).toEqual(['s.t']);
    expect(c('SELECT (SELECT max(x) FROM m) FROM n').relations).toEqual(['m', 'n']);
  });
  it("relations a read names as a regclass literal ('t'::regclass, CAST('t' AS regclass), to_regclass('t')), as PostgreSQL reads the name", () => {
    expect(c("SELECT pg_get_viewdef('vsub'::regclass)").relations).toEqual(['vsub']);
    expect(c(`SELECT pg_relation_size('Public."MiXed"'::pg_catalog.regclass), 1 FROM t`).relations).toEqual([
      't',
      'public.MiXed',
    ]);
    expect(c("SELECT CAST('s.x' AS regclass)::oid").relations).toEqual(['s.x']);
    expect(c("SELECT to_regclass('pg_temp.tt') IS NULL").relations).toEqual(['pg_temp.tt']);
    expect(c("SELECT 'x'::text, 'y'::regtype").relations).toEqual([]);
    // A write goes to the primary anyway: nothing is added.
    expect(c("INSERT INTO log VALUES ('t'::regclass)").relations).toEqual(['log']);
  });
  it('system catalogs: pg_catalog.* and pg_* names (pgpool statement table (send_to_where()), observed with pgpool 4.3.5)', () => {
    expect(c('SELECT relname FROM pg_class').systemCatalog).toBe(true);
    expect(c('SELECT count(*) FROM pg_stat_activity').systemCatalog).toBe(true);
    expect(c('SELECT * FROM pg_catalog.pg_namespace n').systemCatalog).toBe(true);
    expect(c('SELECT * FROM t JOIN pg_roles r ON r.oid = t.o').systemCatalog).toBe(true);
    expect(c('COPY pg_class TO STDOUT').systemCatalog).toBe(true);
    expect(c('SELECT pg_is_in_recovery()').systemCatalog).toBe(false); // a function, decided by volatility
    expect(c('SELECT pg_x FROM t').systemCatalog).toBe(false); // a column
  });
  it('temp tables created by this statement', () => {
    expect(c('CREATE TEMP TABLE tt (a int)').createsTemp).toEqual(['tt']);
    expect(c('CREATE TEMPORARY TABLE IF NOT EXISTS tt2 AS SELECT 1').createsTemp).toEqual(['tt2']);
    expect(c('CREATE UNLOGGED TABLE ut (a int)').createsTemp).toEqual(['ut']);
    expect(c('CREATE TABLE pg_temp.tt3 (a int)').createsTemp).toEqual(['pg_temp.tt3']);
    expect(c('SELECT * INTO TEMPORARY TABLE tt4 FROM t').createsTemp).toEqual(['tt4']);
    expect(c('CREATE TABLE plain (a int)').createsTemp).toEqual([]);
    expect(c('DISCARD TEMP').discardsTemp).toBe(true);
  });
  it("a function named set: called in a read, UPDATE's SET (a, b) = … is no call", () => {
    expect(c("SELECT set('t')").functions).toEqual(['set']);
    expect(c("SELECT 1, set('t') WHERE set(x) > 0").functions).toEqual(['set']);
    expect(c('UPDATE t SET (a, b) = (1, 2)').functions).toEqual([]);
    expect(c('UPDATE t AS u SET (a) = (SELECT 1)').functions).toEqual([]);
    expect(c('INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET (a) = (2)').functions).toEqual([]);
  });
  it('the types of casts in a read', () => {
    expect(c('SELECT \'(1,2)\'::complex, row(1)::s."Q", 3::int, x::double precision FROM t').castTypes).toEqual([
      'complex',
      's.Q',
      'int',
      'double',
    ]);
    expect(c('SELECT 1').castTypes).toBeUndefined();
  });
  it('relations that read others: views, inheritance parents', () => {
    expect(c('CREATE TEMP TABLE k (b int) INHERITS (p, s."Q")').readsThrough).toEqual([
      { relation: 'p', of: ['k'] },
      { relation: 's.Q', of: ['k'] },
    ]);
    expect(c('CREATE VIEW v (x) WITH (security_barrier) AS SELECT a FROM t1, s.t2').readsThrough).toEqual([
      { relation: 'v', of: ['t1', 's.t2'] },
    ]);
    expect(c('ALTER TABLE ONLY k INHERIT p, NO INHERIT q').readsThrough).toEqual([{ relation: 'p', of: ['k'] }]);
    expect(c('CREATE TABLE t3 (a int)').readsThrough).toBeUndefined();
    expect(c('ALTER TABLE k NO INHERIT q').readsThrough).toBeUndefined();
    expect(c('CREATE TEMP TABLE k () INHERITS (p); CREATE VIEW w AS SELECT * FROM k').readsThrough).toEqual([
      { relation: 'p', of: ['k'] },
      { relation: 'w', of: ['k'] },
    ]);
  });
});

describe('strings, dollar quotes and comments hiding keywords', () => {
  it.each([
    "SELECT 'DELETE FROM t; INSERT INTO u'",
    "SELECT E'it\\'s ; DELETE FROM t FOR UPDATE'",
    "SELECT e'\\\\' AS backslash, 'x'",
    'SELECT $$ ; DROP TABLE t; $$',
    'SELECT $body$ INSERT INTO t $x$ nested $x$ ; $body$',
    "SELECT U&'d\\0061t\\+000061 ; UPDATE t' UESCAPE '\\'",
    'SELECT "delete", "for update" FROM t',
    'SELECT 1 /* ; DELETE FROM t; */',
    'SELECT 1 -- ; INSERT INTO t\n',
    'SELECT /* a /* nested ; */ DELETE */ 1',
    "SELECT B'1010', X'ff', N'nat; INSERT'",
    'SELECT a--comment\nFROM t',
  ])('%j stays a single read', (sql) => {
    const r = c(sql);
    expect(r.statementCount).toBe(1);
    expect(r.dest).toBe('either');
    expect(r.writtenTables).toEqual([]);
  });
  it('comments in odd places do not hide real keywords', () => {
    expect(dest('SELECT * FROM t/**/FOR/* x */UPDATE')).toBe('primary');
    expect(dest('WITH x AS (/* c */ DELETE FROM t RETURNING *) SELECT 1')).toBe('primary');
    expect(dest('SELECT 1;/* c */SELECT 2')).toBe('primary');
    expect(c('SELECT 1 -- c\n; -- d\n').statementCount).toBe(1);
    expect(dest('SELECT/* c */1')).toBe('either');
    expect(dest('  \n\t-- leading line comment\nSELECT 1')).toBe('primary');
  });
  it('standard_conforming_strings = off: backslash escapes in plain strings', () => {
    const sql = "SELECT 'a\\'; DELETE FROM t; --'";
    expect(c(sql).statementCount).toBe(2); // on: 'a\' then a DELETE
    const off = classifyUncached(sql, { allowSqlComments: false, standardConformingStrings: false });
    expect(off.statementCount).toBe(1);
    expect(off.dest).toBe('either');
  });
});

describe('unparseable input and multi-statement', () => {
  it.each([
    ["SELECT 'unterminated"],
    ['SELECT $q$ unterminated'],
    ['SELECT (1'],
    ['SELECT 1)'],
    ['SELECT "unterminated'],
    ['SELECT /* unterminated'],
    ['SELEC 1'],
    ['42'],
    ['BEGIN ISOLATION LEVEL SOMETIMES'],
    ['COMMIT NOW'],
    ['SELECT (1; 2)'],
    ['SELECT 1 # 2 \u0007'],
  ])('%j → primary with parseError', (sql) => {
    const r = c(sql);
    expect(r.dest).toBe('primary');
    expect(r.parseError).toBeDefined();
    expect(r.write).toBe(true);
  });
  it('multi-statement strings go to the primary and remember a BEGIN', () => {
    const r = c('BEGIN; SELECT 1');
    expect(r.kind).toBe('multi');
    expect(r.dest).toBe('primary');
    expect(r.statementCount).toBe(2);
    expect(r.multiBegins).toBe(true);
    expect(r.write).toBe(false);
    expect(c('SELECT 1; SELECT 2').write).toBe(false);
    expect(c('SELECT 1; INSERT INTO t VALUES (1)').write).toBe(true);
    expect(c('SELECT 1; INSERT INTO t VALUES (1)').writtenTables).toEqual(['t']);
    expect(c('SELECT 10; SELECT 11').dest).toBe('primary');
  });
  it('multi-statement strings remember a transaction end and a DEALLOCATE ALL', () => {
    expect(c('COMMIT; BEGIN').multiEnds).toBe(true);
    expect(c('END; START TRANSACTION').multiEnds).toBe(true);
    expect(c("SELECT 1; PREPARE TRANSACTION 'x'").multiEnds).toBe(true);
    expect(c('SAVEPOINT a; ROLLBACK TO a').multiEnds).toBeUndefined();
    expect(c('SAVEPOINT a; ROLLBACK TO a').multiSavepoints).toBe(true);
    expect(c('SELECT 1; RELEASE SAVEPOINT a').multiSavepoints).toBe(true);
    expect(c('SELECT 1; SELECT 2').multiSavepoints).toBeUndefined();
    expect(c('SAVEPOINT a').multiSavepoints).toBeUndefined();
    expect(c('DEALLOCATE ALL; SELECT 1').multiDeallocatesAll).toBe(1);
    expect(c('SELECT 1; DEALLOCATE PREPARE ALL; DEALLOCATE ALL').multiDeallocatesAll).toBe(2);
    expect(c('DEALLOCATE s1; SELECT 1').multiDeallocatesAll).toBeUndefined();
  });
  it("a statement's parameter count as PostgreSQL counts it (declared types, or the highest $n used)", () => {
    const n = (sql: string, declared = 0) => parameterCount(sql, c(sql), declared);
    expect(n('SELECT 1')).toBe(0);
    expect(n('SELECT $1::int + $3')).toBe(3);
    expect(n('SELECT $1', 2)).toBe(2);
    expect(n("SELECT '$4', $2 -- $5\n")).toBe(2);
    expect(n('INSERT INTO t VALUES ($1, $12)')).toBe(12);
    expect(n('ROLLBACK')).toBe(0);
    // PREPARE's $n are its inner statement's.
    expect(n('PREPARE q AS SELECT $1')).toBe(0);
    expect(n('PREPARE q(int) AS SELECT $1', 1)).toBe(1);
    // $n that may not be the statement's own: not known.
    expect(n('CREATE FUNCTION f(int) RETURNS int RETURN $1')).toBeUndefined();
    expect(n('SELECT 1; SELECT $1')).toBeUndefined();
  });
  it('statements PostgreSQL refuses in a pipeline once an Execute ran in it, by the name its error gives', () => {
    const r = (sql: string) => pipelineRefusal(sql, c(sql));
    expect(r('DISCARD ALL')).toBe('DISCARD ALL');
    expect(r('discard temp')).toBeUndefined();
    expect(r('VACUUM (ANALYZE) t')).toBe('VACUUM');
    expect(r('ANALYZE t')).toBeUndefined();
    expect(r('CREATE DATABASE d')).toBe('CREATE DATABASE');
    expect(r('drop tablespace x')).toBe('DROP TABLESPACE');
    expect(r("ALTER SYSTEM SET work_mem = '1MB'")).toBe('ALTER SYSTEM');
    expect(r('CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)')).toBe('CREATE INDEX CONCURRENTLY');
    expect(r('CREATE INDEX i ON t (a)')).toBeUndefined();
    expect(r('DROP INDEX CONCURRENTLY i')).toBe('DROP INDEX CONCURRENTLY');
    expect(r("COMMIT PREPARED 'x'")).toBe('COMMIT PREPARED');
    expect(r('SELECT 1')).toBeUndefined();
    expect(r('VACUUM; SELECT 1')).toBeUndefined();
  });
  it('statements known to return no rows (a Describe answers NoData)', () => {
    const none = (sql: string) => returnsNoRows(sql, c(sql));
    for (const sql of [
      "SET TimeZone = 'UTC'",
      'RESET ALL',
      'BEGIN',
      'ROLLBACK',
      'DECLARE c CURSOR FOR SELECT 1',
      'INSERT INTO t VALUES ($1)',
      'UPDATE t SET a = 1',
      'DELETE FROM t',
      'COPY t FROM STDIN',
      'COPY (SELECT 1) TO STDOUT',
      'CREATE TABLE t2 AS SELECT 1',
      'LISTEN ch',
      'PREPARE q AS SELECT 1',
      '',
    ])
      expect(none(sql), sql).toBe(true);
    for (const sql of [
      'SELECT 1',
      'VALUES (1)',
      'SHOW TimeZone',
      'EXPLAIN SELECT 1',
      'FETCH 1 FROM c',
      'EXECUTE q',
      'CALL p()',
      'INSERT INTO t VALUES (1) RETURNING a',
      'DELETE FROM t RETURNING *',
      'WITH x AS (DELETE FROM t RETURNING a) SELECT * FROM x',
      'SET TimeZone = 1; SELECT 1',
      'SELEC 1',
    ])
      expect(none(sql), sql).toBe(false);
  });
  it('empty statements between semicolons do not make a multi-statement', () => {
    expect(c('SELECT 1;;').statementCount).toBe(1);
    expect(c(';;SELECT 1').dest).toBe('either');
    expect(c(' ; ').kind).toBe('empty');
  });
});

describe('options and cache', () => {
  it('loadBalanceExplain balances EXPLAIN of reads only', () => {
    const o = { allowSqlComments: false, loadBalanceExplain: true };
    expect(classifyUncached('EXPLAIN SELECT 1', o).dest).toBe('either');
    expect(classifyUncached('EXPLAIN ANALYZE SELECT * FROM t', o).dest).toBe('either');
    expect(classifyUncached('EXPLAIN ANALYZE INSERT INTO t VALUES (1)', o).dest).toBe('primary');
    expect(classifyUncached('EXPLAIN SELECT * FROM t FOR UPDATE', o).dest).toBe('primary');
  });
  it('classify() caches by text and option set', () => {
    const a = classify('/* x */ SELECT 42', OFF);
    expect(classify('/* x */ SELECT 42', OFF)).toBe(a);
    expect(classify('/* x */ SELECT 42', ON).dest).toBe('either');
    expect(a.dest).toBe('primary');
  });
  it('SHOW / COPY / SET details', () => {
    expect(c('SHOW pool_nodes').name).toBe('pool_nodes');
    expect(c('COPY t (a, b) TO STDOUT WITH (FORMAT csv)').dest).toBe('either');
    expect(c("COPY t TO PROGRAM 'gzip'").dest).toBe('primary');
    expect(c('PREPARE q (int) AS SELECT $1').name).toBe('q');
  });
});

describe('SELECT set_config(…) as a SET', () => {
  it.each([
    ["SELECT set_config('myapp.x', '1', false)", 'set', 'both'],
    ['select set_config($1, $2, false)', 'set', 'both'],
    ["select pg_catalog.set_config('search_path', 'public', false) as sp;", 'set', 'both'],
    ["select set_config('a.b', '1'::text, true)", 'set', 'both'],
    ["select set_config('a.b', '1', false), now()", 'select', 'either'],
    ["select set_config('a.b', upper('x'), false)", 'select', 'either'],
    ["select set_config('default_transaction_isolation', 'serializable', false)", 'select', 'either'],
    ["select set_config('a.b', '1', false) from pg_class", 'select', 'either'],
  ])('%s → %s %s', (sql, kind, dest) => {
    const c = classifyUncached(sql, OFF);
    expect([c.kind, c.dest]).toEqual([kind, dest]);
  });

  it('RESET ALL and DISCARD ALL reset every setting; RESET one does not', () => {
    expect(classifyUncached('RESET ALL', OFF).resetsAll).toBe(true);
    expect(classifyUncached('DISCARD ALL', OFF).resetsAll).toBe(true);
    expect(classifyUncached('RESET work_mem', OFF).resetsAll).toBeUndefined();
    expect(classifyUncached('DISCARD TEMP', OFF).resetsAll).toBeUndefined();
  });

  it('several statements: their SET and RESET to replay, in order; null when what lasts is not known', () => {
    const texts = (sql: string) => {
      const m = classifyUncached(sql, OFF).multiSettings;
      return m === null || m === undefined ? m : m.map((x) => x.sql);
    };
    expect(texts("SET a.b = 1; SELECT 1; RESET DateStyle; SET LOCAL c.d = 'x'")).toEqual([
      'SET a.b = 1',
      'RESET DateStyle',
    ]);
    expect(classifyUncached('SELECT 1; RESET ALL', OFF).multiSettings?.[0]?.resetsAll).toBe(true);
    expect(texts("SELECT set_config('a.b', '1', false); SELECT 2")).toEqual(["SELECT set_config('a.b', '1', false)"]);
    expect(texts('SELECT 1; SELECT 2')).toBeUndefined();
    expect(texts('SET a.b = 1')).toBeUndefined(); // one statement: recorded as it is
    expect(texts('BEGIN; SET a.b = 1; COMMIT')).toBeNull();
    expect(texts("SELECT set_config('a.b', v, false) FROM t; SELECT 1")).toBeNull();
  });

  it.each([
    ["SELECT set_config('a.b', $1, true)", 'local'],
    ["SELECT pg_catalog.set_config('a.b', 'x', 'on')", 'local'],
    ["SELECT set_config('a.b', $1, false)", undefined],
    ["SELECT set_config('a.b', $1, $2)", 'unknown'],
    ['SET LOCAL a.b = 1', 'local'],
    ['SET CONSTRAINTS ALL DEFERRED', 'local'],
    ['SET a.b = 1', undefined],
  ])('%s: the setting lasts %s', (sql, scope) => {
    expect(classifyUncached(sql, OFF).settingScope).toBe(scope);
  });

  it('DO and CALL run code that may change settings unseen', () => {
    expect(classifyUncached('DO $$ BEGIN NULL; END $$', OFF).runsCode).toBe(true);
    expect(classifyUncached('CALL p(1)', OFF).runsCode).toBe(true);
    expect(classifyUncached('SELECT 1; CALL p()', OFF).runsCode).toBe(true);
    expect(classifyUncached('SELECT f(1)', OFF).runsCode).toBeUndefined();
  });

  it.each([
    ['RESET DateStyle', 'datestyle'],
    ['reset application_name;', 'application_name'],
    ['RESET TIME ZONE', 'timezone'],
    ['SET DateStyle TO DEFAULT', 'datestyle'],
    ['SET SESSION search_path = default', 'search_path'],
    ['SET TIME ZONE LOCAL', 'timezone'],
    ['SET TIME ZONE DEFAULT', 'timezone'],
    ['SET NAMES DEFAULT', 'client_encoding'],
    ['SET LOCAL DateStyle TO DEFAULT', undefined],
    ["SET DateStyle = 'ISO'", undefined],
    ["SET TIME ZONE 'UTC'", undefined],
    ['RESET ALL', undefined],
    ['RESET SESSION AUTHORIZATION', 'session_authorization'],
    ['SET SESSION AUTHORIZATION DEFAULT', 'session_authorization'],
    ['SET SESSION AUTHORIZATION app', undefined],
  ])('%s returns %s to its reset value', (sql, name) => {
    expect(classifyUncached(sql, OFF).resetsSetting).toBe(name);
  });
});

describe('what tells a standby from a primary (drivers looking for a writable server)', () => {
  it.each([
    ['SHOW transaction_read_only', true],
    ['show TRANSACTION_READ_ONLY;', true],
    ['SHOW default_transaction_read_only', true],
    ['SHOW in_hot_standby', true],
    ['SHOW ALL', true],
    ['SHOW work_mem', false],
    ['SHOW transaction isolation level', false],
    // A volatile function: the function rules decide (the catalog says primary; the lists may say otherwise).
    ['SELECT pg_is_in_recovery()', false],
    ["select pg_catalog.current_setting('transaction_read_only')", true],
    ["SELECT myschema.current_setting('transaction_read_only')", false],
    ["SELECT current_setting('transaction_read_only')", true],
    ["select pg_catalog.current_setting('In_Hot_Standby'::text, true)", true],
    ["SELECT current_setting(E'default_transaction_read_only')", true],
    ['SELECT current_setting($$transaction_read_only$$)', true],
    ["SELECT current_setting('work_mem')", false],
    ["SELECT 'transaction_read_only'", false],
    ['SELECT current_setting(name) FROM t', false],
  ])('%s → %s', (sql, asks) => {
    expect(c(sql).asksServerRole).toBe(asks);
  });

  it('pid functions: integer constants and parameters given as the pid', () => {
    expect(c('SELECT pg_terminate_backend(4711)').pidConsts).toEqual([4711]);
    expect(c('SELECT pg_catalog.pg_cancel_backend(12::int), pg_cancel_backend($2)').pidConsts).toEqual([12]);
    expect(c('SELECT pg_catalog.pg_cancel_backend(12::int), pg_cancel_backend($2)').pidParams).toEqual([2]);
    expect(c('SELECT pg_terminate_backend($1, 5000)').pidParams).toEqual([1]);
    expect(c('SELECT pg_terminate_backend(pid) FROM pg_stat_activity').pidConsts).toEqual([]);
    expect(c('SELECT pg_terminate_backend(4711 + 1)').pidConsts).toEqual([]);
    expect(c('SELECT myschema.pg_terminate_backend(4711)').pidConsts).toEqual([]);
    expect(c('SELECT abs(4711)').pidConsts).toEqual([]);
  });

  it('current_setting($n): the parameters whose values name the setting, for Bind', () => {
    expect(c('SELECT current_setting($1)').settingParams).toEqual([1]);
    expect(c('SELECT current_setting($2::text, $1), current_setting($3)').settingParams).toEqual([2, 3]);
    expect(c('SELECT current_setting($1)').asksServerRole).toBe(false);
    expect(c('SELECT $1').settingParams).toEqual([]);
    expect(c("SELECT current_setting('x.' || $1)").settingParams).toEqual([]);
  });

  it('a multi-statement text that changes a session setting says so (it runs on the primary alone)', () => {
    expect(c("SET application_name = 'a'; SELECT 1").multiSetsSession).toBe(true);
    expect(c('SELECT 1; RESET search_path').multiSetsSession).toBe(true);
    expect(c("SELECT set_config('a.b', '1', false); SELECT 2").multiSetsSession).toBe(true);
    expect(c('BEGIN; SET LOCAL work_mem = 1; SELECT 1').multiSetsSession).toBeUndefined();
    expect(c('BEGIN; SET TRANSACTION READ ONLY; SELECT 1').multiSetsSession).toBeUndefined();
    expect(c('SELECT 1; SELECT 2').multiSetsSession).toBeUndefined();
    expect(c("SET application_name = 'a'").multiSetsSession).toBeUndefined();
  });
});

describe('ALTER DATABASE / ALTER ROLE … SET|RESET: whose start-up defaults change', () => {
  it.each([
    ['ALTER DATABASE test SET default_transaction_isolation = serializable', { database: 'test' }],
    ['ALTER DATABASE "My Db" RESET ALL', { database: 'My Db' }],
    ['ALTER ROLE bob SET work_mem = 1', { user: 'bob' }],
    ['ALTER USER bob IN DATABASE d SET x.y = 1', { user: 'bob', database: 'd' }],
    ['ALTER ROLE ALL SET x.y = 1', { allUsers: true }],
    ['ALTER ROLE ALL IN DATABASE d RESET x.y', { database: 'd' }],
    ['ALTER DATABASE d RENAME TO e', undefined],
    ['ALTER ROLE bob PASSWORD NULL', undefined],
    ['ALTER TABLE t SET (fillfactor = 50)', undefined],
  ])('%s', (sql, expected) => {
    expect(c(sql).changesDefaults).toEqual(expected);
  });
});

describe('simple-protocol texts cached by numeric shape', () => {
  it.each([
    ['SELECT abalance FROM pgbench_accounts WHERE aid = 4711;', 'SELECT abalance FROM pgbench_accounts WHERE aid = 0;'],
    ['select 1.5e10, .5, 12', 'select 0.0e10, .0, 0'],
    ['SELECT t1.c2 FROM t1 WHERE x2y = $1 + 42', 'SELECT t1.c2 FROM t1 WHERE x2y = $1 + 0'],
    ['SELECT now()', 'SELECT now()'],
    ["SELECT 'a1'", undefined],
    ['SELECT "t1" FROM x', undefined],
    ['SELECT 1 -- 2', undefined],
    ['SELECT /* 3 */ 1', undefined],
    ['SELECT $$1$$', undefined],
    ['SELECT 1 FROM tábla', undefined],
  ])('%s', (sql, shape) => {
    expect(numericShape(sql)).toBe(shape);
  });

  it('gives the classification of the text itself, and one object for texts that differ only in constants', () => {
    const texts = [
      'SELECT abalance FROM pgbench_accounts WHERE aid = 1',
      'SELECT abalance FROM pgbench_accounts WHERE aid = 99999',
      'SELECT * FROM t1 JOIN t2 ON t1.a = t2.b LIMIT 10 FOR UPDATE',
      'SELECT * FROM t1 JOIN t2 ON t1.a = t2.b LIMIT 20 FOR UPDATE',
      'SELECT nextval(1)',
      'SELECT pg_catalog.pg_sleep(2)',
    ];
    for (const sql of texts) {
      expect(classifyQuery(sql, OFF)).toEqual(classifyUncached(sql, OFF));
      expect(classifyQuery(sql, ON)).toEqual(classifyUncached(sql, ON));
    }
    expect(classifyQuery(texts[1], OFF)).toBe(classifyQuery(texts[0], OFF));
    expect(classifyQuery(texts[3], OFF)).toBe(classifyQuery(texts[2], OFF));
  });

  it('classifies afresh whatever is not a single plain read', () => {
    for (const [a, b] of [
      ['SET statement_timeout = 5', 'SET statement_timeout = 6'],
      [
        'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; SELECT 1',
        'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; SELECT 2',
      ],
      ['UPDATE t SET a = 1', 'UPDATE t SET a = 2'],
      ['SELECT 1; SELECT 2', 'SELECT 3; SELECT 4'],
      ['BEGIN; SELECT 1', 'BEGIN; SELECT 2'],
    ]) {
      const x = classifyQuery(a, OFF);
      expect(x).toEqual(classifyUncached(a, OFF));
      expect(classifyQuery(b, OFF)).not.toBe(x);
    }
  });
});
