import { describe, it, expect } from 'vitest';
import { NodeTable } from '../../src/cluster/nodes.js';
import { defaultConfig } from '../../src/config/defaults.js';
import { CATALOG_FUNCTIONS } from '../../src/router/catalog-functions.js';
import { Router, relationPersistenceSql, splitRelationName } from '../../src/router/router.js';

describe('relation names for the persistence lookup', () => {
  it("takes the classifier's names as they are (unquoted parts folded there, quoted ones keep their case), and unquotes quoted parts", () => {
    expect(splitRelationName('accounts')).toEqual({ schema: null, name: 'accounts' });
    // From "Accounts" and public."Accounts": a lookup of accounts would miss (or find another table).
    expect(splitRelationName('Accounts')).toEqual({ schema: null, name: 'Accounts' });
    expect(splitRelationName('public.Accounts')).toEqual({ schema: 'public', name: 'Accounts' });
    expect(splitRelationName('"My Schema"."T.x"')).toEqual({ schema: 'My Schema', name: 'T.x' });
    expect(splitRelationName('db.s."a""b"')).toEqual({ schema: 's', name: 'a"b' });
  });

  it('quotes every name as a literal', () => {
    const sql = relationPersistenceSql(["o'neil", 's.t']);
    expect(sql).toContain("E'o''neil'");
    expect(sql).toContain("(E's.t', E's', E't')");
    expect(sql).not.toContain('to_regclass');
  });
});

describe('Router.mayChangeSettings: may the functions a statement calls have changed settings in their bodies?', () => {
  const router = () => new Router(defaultConfig(), new NodeTable([]));

  it('built-in functions and call-like constructs never; user functions, and the same names in another schema, may', () => {
    const r = router();
    expect(r.mayChangeSettings('db', ['lower', 'now', 'set_config', 'coalesce', 'greatest', 'pg_catalog.upper'])).toBe(
      false,
    );
    expect(r.mayChangeSettings('db', ['lower', 'set_tenant'])).toBe(true);
    expect(r.mayChangeSettings('db', ['app.lower'])).toBe(true);
    expect(r.mayChangeSettings('db', ['pg_catalog.x.y'])).toBe(true);
    expect(CATALOG_FUNCTIONS.size).toBeGreaterThan(2000);
  });

  it('a user function the catalog answered is not volatile is trusted not to (volatile or not asked yet: may)', async () => {
    const r = router();
    // The catalog lists the volatile ones among those asked.
    const asked: string[] = [];
    await r.answer('db', { functions: ['st_area', 'set_tenant'], relations: [] }, async (sql) => {
      asked.push(sql);
      return [{ name: 'set_tenant', vol: 'v' }];
    });
    expect(asked.length).toBe(1);
    expect(r.unknownUserFunctions('db', ['st_area', 'set_tenant', 'lower', 'other'])).toEqual(['other']);
    expect(r.mayChangeSettings('db', ['st_area'])).toBe(false);
    expect(r.mayChangeSettings('db', ['set_tenant'])).toBe(true);
    expect(r.mayChangeSettings('other_db', ['st_area'])).toBe(true);
  });

  it('with write_function_list set, the catalog is not asked: every user function may', () => {
    const r = new Router({ ...defaultConfig(), write_function_list: ['nextval'] }, new NodeTable([]));
    expect(r.unknownUserFunctions('db', ['st_area'])).toEqual([]);
    expect(r.mayChangeSettings('db', ['st_area'])).toBe(true);
    expect(r.mayChangeSettings('db', ['abs'])).toBe(false);
  });
});
