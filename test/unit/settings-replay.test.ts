/** SettingsReplay (src/session/settings.ts): the client's encoding as its settings make it. */
import { describe, expect, it } from 'vitest';
import { TxStatus } from '../../src/protocol/constants.js';
import { classify } from '../../src/router/classifier.js';
import { SettingsReplay } from '../../src/session/settings.js';

function withSettings(startup: Record<string, string>, statements: string[]): SettingsReplay {
  const s = new SettingsReplay();
  s.startup = new Map(Object.entries(startup));
  for (const sql of statements) s.record(sql, classify(sql, { allowSqlComments: false }), true, TxStatus.Idle);
  return s;
}

describe('SettingsReplay.clientEncoding', () => {
  it('the start-up value, then the last SET client_encoding / SET NAMES; RESET and DEFAULT go back to the start-up value', () => {
    expect(withSettings({}, []).clientEncoding()).toBe('');
    expect(withSettings({ client_encoding: 'LATIN1' }, []).clientEncoding()).toBe('latin1');
    expect(withSettings({ client_encoding: 'LATIN1' }, ["SET client_encoding = 'UTF8'"]).clientEncoding()).toBe('utf8');
    expect(withSettings({}, ['SET client_encoding TO latin1']).clientEncoding()).toBe('latin1');
    expect(withSettings({}, ["SET NAMES 'LATIN9'"]).clientEncoding()).toBe('latin9');
    expect(withSettings({}, ['set session client_encoding="WIN1252"']).clientEncoding()).toBe('win1252');
    expect(
      withSettings({ client_encoding: 'LATIN1' }, ["SET NAMES 'UTF8'", 'RESET client_encoding']).clientEncoding(),
    ).toBe('latin1');
    expect(
      withSettings({ client_encoding: 'LATIN1' }, [
        "SET NAMES 'UTF8'",
        'SET client_encoding = DEFAULT',
      ]).clientEncoding(),
    ).toBe('latin1');
    expect(withSettings({ client_encoding: 'LATIN1' }, ['SET work_mem = 1000']).clientEncoding()).toBe('latin1');
  });
});

describe('SettingsReplay.record: resets keep the start-up settings', () => {
  const startup = { application_name: 'app', datestyle: 'SQL, DMY' };

  it('RESET ALL, RESET x and SET x TO DEFAULT drop what they reset (replaying starts from the start-up settings)', () => {
    expect(withSettings(startup, ["SET DateStyle = 'German'", 'SET work_mem = 1000', 'RESET ALL']).statements).toEqual(
      [],
    );
    expect(
      withSettings(startup, ["SET DateStyle = 'German'", 'SET work_mem = 1000', 'SET DateStyle TO DEFAULT']).statements,
    ).toEqual(['SET work_mem = 1000']);
    expect(withSettings(startup, ['SET a.b = 1', 'SET work_mem = 1000', 'RESET a.b']).statements).toEqual([
      'SET work_mem = 1000',
    ]);
  });

  it('RESET ALL keeps SET ROLE and SET SESSION AUTHORIZATION, as PostgreSQL does; DISCARD ALL drops them', () => {
    expect(withSettings(startup, ['SET ROLE r', 'SET work_mem = 1000', 'RESET ALL']).statements).toEqual([
      'SET ROLE r',
    ]);
    expect(withSettings(startup, ['SET SESSION AUTHORIZATION r', 'RESET ALL']).statements).toEqual([
      'SET SESSION AUTHORIZATION r',
    ]);
    expect(withSettings(startup, ['SET ROLE r', 'DISCARD ALL']).statements).toEqual([]);
  });

  it('a SET replaces the earlier ones of its setting: a client that SETs at every request does not grow the list', () => {
    let overflows = 0;
    const s = new SettingsReplay();
    s.onOverflow = () => overflows++;
    const run = (sql: string, status: number) =>
      s.record(sql, classify(sql, { allowSqlComments: false }), true, status);
    for (let i = 0; i < 100; i++) {
      run(`SET search_path = tenant${i % 3}, public`, TxStatus.Idle);
      run('BEGIN', TxStatus.InTransaction);
      run(`SET statement_timeout = ${i}`, TxStatus.InTransaction);
      run(`SELECT set_config('app.user', 'u${i}', false)`, TxStatus.InTransaction);
      run('COMMIT', TxStatus.Idle);
      run(`SET SESSION CHARACTERISTICS AS TRANSACTION READ ${i % 2 ? 'ONLY' : 'WRITE'}`, TxStatus.Idle);
      run('SET TRANSACTION READ ONLY', TxStatus.Idle);
      run("SET TIME ZONE 'UTC'", TxStatus.Idle);
      run("SET TimeZone = 'Asia/Tokyo'", TxStatus.Idle);
    }
    expect(overflows).toBe(0);
    expect(s.statements).toEqual([
      'SET search_path = tenant0, public',
      'SET statement_timeout = 99',
      "SELECT set_config('app.user', 'u99', false)",
      'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY',
      "SET TimeZone = 'Asia/Tokyo'",
    ]);
  });

  it('DISCARD ALL forgets the statements, not the start-up settings', () => {
    const s = withSettings(startup, ["SET DateStyle = 'German'", 'DISCARD ALL']);
    expect(s.statements).toEqual([]);
    expect([...s.startup]).toEqual(Object.entries(startup));
  });

  it('SETs and RESETs among several statements are kept in order, only when the query succeeded outside a transaction block', () => {
    const s = withSettings(startup, ["SET DateStyle = 'German'; SELECT 1; RESET application_name"]);
    expect(s.statements).toEqual(["SET DateStyle = 'German'"]);
    const t = withSettings(startup, ["SET work_mem = 1; SET work_mem = 2; SELECT 1; SET a.b = 'x'"]);
    expect(t.statements).toEqual(['SET work_mem = 2', "SET a.b = 'x'"]);
    const failed = new SettingsReplay();
    const multi = "SET work_mem = '5MB'; SELECT 1/0";
    failed.record(multi, classify(multi, { allowSqlComments: false }), false, TxStatus.Idle);
    expect(failed.statements).toEqual([]);
    const inTx = new SettingsReplay();
    let unknown = 0;
    inTx.onUnknown = () => unknown++;
    inTx.record(multi, classify(multi, { allowSqlComments: false }), true, TxStatus.InTransaction);
    expect([inTx.statements, unknown]).toEqual([[], 1]);
  });

  it('a SET inside a transaction block lasts when it commits; ROLLBACK, ROLLBACK TO SAVEPOINT and a failed transaction undo it', () => {
    const T = TxStatus.InTransaction;
    const E = TxStatus.Failed;
    const I = TxStatus.Idle;
    const run = (steps: Array<[string, boolean, number]>): readonly string[] => {
      const s = new SettingsReplay();
      for (const [sql, ok, status] of steps) s.record(sql, classify(sql, { allowSqlComments: false }), ok, status);
      return s.statements;
    };
    expect(
      run([
        ['BEGIN', true, T],
        ['SET a.b = 1', true, T],
        ['COMMIT', true, I],
      ]),
    ).toEqual(['SET a.b = 1']);
    expect(
      run([
        ['BEGIN', true, T],
        ['SET a.b = 1', true, T],
        ['ROLLBACK', true, I],
      ]),
    ).toEqual([]);
    expect(
      run([
        ['BEGIN', true, T],
        ['SET a.b = 1', true, T],
        ['SELECT 1/0', false, E],
        ['COMMIT', true, I],
      ]),
    ).toEqual([]);
    expect(
      run([
        ['BEGIN', true, T],
        ['SET LOCAL a.b = 1', true, T],
        ['SET TRANSACTION READ ONLY', true, T],
        ['COMMIT', true, I],
      ]),
    ).toEqual([]);
    expect(
      run([
        ['BEGIN', true, T],
        ['SET a.b = 1', true, T],
        ['SAVEPOINT s', true, T],
        ['SET a.c = 2', true, T],
        ['SELECT 1/0', false, E],
        ['ROLLBACK TO SAVEPOINT s', true, T],
        ['SAVEPOINT "T"', true, T],
        ['SET a.d = 3', true, T],
        ['RELEASE "T"', true, T],
        ['COMMIT', true, I],
      ]),
    ).toEqual(['SET a.b = 1', 'SET a.d = 3']);
    // A savepoint pgrelay did not see (or could not name): what it undid is not known, nothing is kept.
    expect(
      run([
        ['BEGIN', true, T],
        ['SET a.b = 1', true, T],
        ['ROLLBACK TO SAVEPOINT nosuch', true, T],
        ['COMMIT', true, I],
      ]),
    ).toEqual([]);
    expect(
      run([
        ['BEGIN', true, T],
        ['SET a.b = 1', true, T],
        ['ROLLBACK TO 1', true, T],
        ['COMMIT', true, I],
      ]),
    ).toEqual([]);
    // set_config(…, true): never kept (nor replayed, nor pinning for its bound value); set_config(…, $3): not known.
    let overflows = 0;
    let unknowns = 0;
    const s = new SettingsReplay();
    s.onOverflow = () => overflows++;
    s.onUnknown = () => unknowns++;
    for (const [sql, status] of [
      ['BEGIN', T],
      ["SELECT set_config('app.user_id', $1, true)", T],
      ['COMMIT', I],
      ["SELECT set_config('app.user_id', $1, true)", I],
      ['BEGIN', T],
      ["SELECT set_config('app.user_id', $1, $2)", T],
      ['COMMIT', I],
    ] as Array<[string, number]>)
      s.record(sql, classify(sql, { allowSqlComments: false }), true, status);
    expect([s.statements, overflows, unknowns]).toEqual([[], 0, 1]);
    // COMMIT AND CHAIN: the SET lasts, the next transaction starts empty.
    expect(
      run([
        ['BEGIN', true, T],
        ['SET a.b = 1', true, T],
        ['COMMIT AND CHAIN', true, T],
        ['SET a.c = 2', true, T],
        ['ROLLBACK', true, I],
      ]),
    ).toEqual(['SET a.b = 1']);
  });

  it('more than 64 distinct settings, or a lasting SET with bind parameters, cannot be replayed (the session is pinned)', () => {
    let overflows = 0;
    const s = new SettingsReplay();
    s.onOverflow = () => overflows++;
    for (let i = 0; i < 64; i++)
      s.record(`SET app.s${i} = 1`, classify(`SET app.s${i} = 1`, { allowSqlComments: false }), true, TxStatus.Idle);
    expect(overflows).toBe(0);
    s.record('SET app.s64 = 1', classify('SET app.s64 = 1', { allowSqlComments: false }), true, TxStatus.Idle);
    expect(overflows).toBe(1);
    const b = new SettingsReplay();
    b.onOverflow = () => overflows++;
    const bound = "SELECT set_config('app.user', $1, false)";
    b.record(bound, classify(bound, { allowSqlComments: false }), true, TxStatus.Idle);
    expect(overflows).toBe(2);
  });
});

describe('SettingsReplay: functions that may change settings in their bodies', () => {
  it('a statement (or one of several) calling such a function makes the settings unknown once it succeeded; others do not', () => {
    const calls: Array<readonly string[]> = [];
    let unknowns = 0;
    const s = new SettingsReplay();
    s.onUnknown = () => unknowns++;
    s.functionsMayChangeSettings = (fns) => {
      calls.push(fns);
      return fns.some((f) => f.startsWith('app_'));
    };
    const rec = (sql: string, ok = true, status: number = TxStatus.Idle) =>
      s.record(sql, classify(sql, { allowSqlComments: false }), ok, status);
    rec('SELECT 1');
    rec('SELECT lower(x) FROM t');
    expect(unknowns).toBe(0);
    rec("SELECT app_set_tenant('a')");
    expect(unknowns).toBe(1);
    rec("SELECT app_set_tenant('a')", false);
    expect(unknowns).toBe(1);
    rec("SELECT 1; SELECT app_set_tenant('b')");
    expect(unknowns).toBe(2);
    rec("SELECT app_set_tenant('c')", true, TxStatus.InTransaction);
    expect(unknowns).toBe(3);
    expect(calls).toEqual([['lower'], ['app_set_tenant'], ['app_set_tenant'], ['app_set_tenant']]);
  });
});
