/** dev/sql-script.ts: DevCluster.psql splits scripts and prints rows as psql -A -t does. */
import { describe, expect, it } from 'vitest';
import { formatRows, splitStatements } from '../../dev/sql-script.js';

describe('splitStatements (psql -f semantics)', () => {
  it('splits at top-level semicolons, trims, drops empty and comment-only pieces', () => {
    expect(splitStatements('SELECT 1; SELECT 2;\n\n ; -- tail\n')).toEqual(['SELECT 1', 'SELECT 2']);
    expect(splitStatements('SELECT 1')).toEqual(['SELECT 1']);
    expect(splitStatements('/* a; b */ SELECT 1; -- c; d\nSELECT 2')).toEqual([
      '/* a; b */ SELECT 1',
      '-- c; d\nSELECT 2',
    ]);
  });

  it('keeps semicolons inside quotes, identifiers, dollar quotes, nested comments and parentheses', () => {
    expect(splitStatements("SELECT 'a;b', 'it''s;'; SELECT 2")).toEqual(["SELECT 'a;b', 'it''s;'", 'SELECT 2']);
    expect(splitStatements('SELECT 1 AS "x;y"; SELECT 2')).toEqual(['SELECT 1 AS "x;y"', 'SELECT 2']);
    expect(splitStatements("SELECT E'a\\';b'; SELECT 2")).toEqual(["SELECT E'a\\';b'", 'SELECT 2']);
    const fn = 'CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$';
    expect(splitStatements(`${fn}; SELECT f()`)).toEqual([fn, 'SELECT f()']);
    expect(splitStatements('DO $$ BEGIN PERFORM 1; END $$; SELECT 2')).toEqual([
      'DO $$ BEGIN PERFORM 1; END $$',
      'SELECT 2',
    ]);
    expect(splitStatements('/* a /* b; */ c; */ SELECT 1; SELECT 2')).toEqual([
      '/* a /* b; */ c; */ SELECT 1',
      'SELECT 2',
    ]);
    expect(splitStatements('CREATE RULE r AS ON INSERT TO t DO (SELECT 1; SELECT 2); SELECT 3')).toEqual([
      'CREATE RULE r AS ON INSERT TO t DO (SELECT 1; SELECT 2)',
      'SELECT 3',
    ]);
    // $1 is a parameter, not a dollar quote.
    expect(splitStatements('PREPARE p(int) AS SELECT $1; EXECUTE p(1)')).toEqual([
      'PREPARE p(int) AS SELECT $1',
      'EXECUTE p(1)',
    ]);
  });
});

describe('formatRows (psql -A -t)', () => {
  it('joins columns with |, prints NULL as an empty string', () => {
    expect(
      formatRows([
        ['1', 'a'],
        [null, ''],
        ['t', null],
      ]),
    ).toEqual(['1|a', '|', 't|']);
    expect(formatRows([])).toEqual([]);
  });
});
