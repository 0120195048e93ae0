import { describe, it, expect } from 'vitest';
import { relationPersistenceSql, splitRelationName } from '../../src/router/router.js';

describe('relation names for the persistence lookup', () => {
  it('folds unquoted parts and keeps quoted ones', () => {
    expect(splitRelationName('Accounts')).toEqual({ schema: null, name: 'accounts' });
    expect(splitRelationName('Public.Accounts')).toEqual({ schema: 'public', name: 'accounts' });
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
