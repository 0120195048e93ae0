import { describe, expect, it } from 'vitest';
import { DATABASE_KEYS, PoolSettings, USER_KEYS, parsePoolSettings } from '../../src/pool/pool-settings.js';

const base = {
  pool_mode: 'session' as const,
  default_pool_size: 20,
  reserve_pool_size: 0,
  max_db_connections: 0,
  max_user_connections: 0,
  database_pool_settings: '',
  user_pool_settings: '',
};

describe('database_pool_settings / user_pool_settings', () => {
  it('parses name:key=value entries', () => {
    const r = parsePoolSettings(' app : pool_mode=Transaction  pool_size=40 , rep:max_db_connections=3', DATABASE_KEYS);
    expect(r).toEqual({
      ok: true,
      value: new Map([
        ['app', { pool_mode: 'transaction', pool_size: 40 }],
        ['rep', { max_db_connections: 3 }],
      ]),
    });
  });

  it('refuses what it does not know, twice-set keys and names', () => {
    expect(parsePoolSettings('a:pool_size=1,a:pool_size=2', DATABASE_KEYS)).toMatchObject({ error: /twice/ });
    expect(parsePoolSettings('a:pool_size=1 pool_size=2', DATABASE_KEYS)).toMatchObject({ error: /set twice/ });
    expect(parsePoolSettings('a:max_db_connections=1', USER_KEYS)).toMatchObject({ error: /unknown setting/ });
    expect(parsePoolSettings('a:pool_size=x', USER_KEYS)).toMatchObject({ error: /an integer/ });
    expect(parsePoolSettings('a:', USER_KEYS)).toMatchObject({ error: /sets nothing/ });
    expect(parsePoolSettings('', USER_KEYS)).toEqual({ ok: true, value: new Map() });
  });

  it('resolves user over database over the global parameters', () => {
    const s = new PoolSettings({
      ...base,
      database_pool_settings: 'app:pool_mode=transaction pool_size=5 max_db_connections=8',
      user_pool_settings: 'batch:pool_mode=session pool_size=2 max_user_connections=3',
    });
    expect(s.for('app', 'web')).toEqual({
      pool_mode: 'transaction',
      pool_size: 5,
      reserve_pool_size: 0,
      max_db_connections: 8,
      max_user_connections: 0,
    });
    expect(s.for('app', 'batch')).toMatchObject({ pool_mode: 'session', pool_size: 2, max_user_connections: 3 });
    expect(s.for('other', 'web')).toMatchObject({ pool_mode: 'session', pool_size: 20, max_db_connections: 0 });
    expect(s.anyTransaction).toBe(true);
    expect(s.anySession).toBe(true);
    expect(new PoolSettings(base).anyTransaction).toBe(false);
  });
});
