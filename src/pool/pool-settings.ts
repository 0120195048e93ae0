/**
 * Per-database and per-user pool settings (PgBouncer's [databases] and [users]
 * `pool_mode`, `pool_size`, … written as pgpool-style list parameters):
 *
 *   database_pool_settings = 'reports:pool_mode=session, app:pool_mode=transaction pool_size=40'
 *   user_pool_settings     = 'batch:pool_mode=session max_user_connections=5'
 *
 * Comma-separated entries `name:key=value key=value …`; the name is an exact database
 * (user) name. Precedence as PgBouncer's: a user's setting over its database's over the
 * global parameter (pool_mode, default_pool_size, reserve_pool_size, max_db_connections,
 * max_user_connections). Pure: parsed and checked at load (values.ts), resolved per
 * session and per server pool.
 */
import type { PoolMode } from '../config/types.js';

/** Keys an entry of database_pool_settings may set. */
export const DATABASE_KEYS = ['pool_mode', 'pool_size', 'reserve_pool_size', 'max_db_connections'] as const;
/** Keys an entry of user_pool_settings may set. */
export const USER_KEYS = ['pool_mode', 'pool_size', 'reserve_pool_size', 'max_user_connections'] as const;

type SettingKey = (typeof DATABASE_KEYS)[number] | (typeof USER_KEYS)[number];

/** What one entry overrides (absent = the next level's value). */
export interface PoolOverride {
  pool_mode?: PoolMode;
  pool_size?: number;
  reserve_pool_size?: number;
  max_db_connections?: number;
  max_user_connections?: number;
}

const MAX_INT = 2147483647;

/**
 * Parse a database_pool_settings / user_pool_settings value: name → overrides, or the
 * error (what is expected, naming the entry).
 */
export function parsePoolSettings(
  raw: string,
  keys: readonly SettingKey[],
): { ok: true; value: Map<string, PoolOverride> } | { ok: false; error: string } {
  const out = new Map<string, PoolOverride>();
  const fail = (error: string) => ({ ok: false as const, error });
  for (const part of raw.split(',')) {
    const entry = part.trim();
    if (entry === '') continue;
    const colon = entry.indexOf(':');
    if (colon <= 0) return fail(`entry "${entry}" is not of the form name:key=value …`);
    const name = entry.slice(0, colon).trim();
    if (name === '') return fail(`entry "${entry}" has no name before ':'`);
    if (out.has(name)) return fail(`"${name}" appears twice`);
    const o: PoolOverride = {};
    const settings = entry
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '');
    if (settings.length === 0) return fail(`entry "${entry}" sets nothing (key=value expected after ':')`);
    for (const s of settings) {
      const eq = s.indexOf('=');
      const key = (eq < 0 ? s : s.slice(0, eq)).toLowerCase() as SettingKey;
      const v = eq < 0 ? '' : s.slice(eq + 1);
      if (!keys.includes(key)) return fail(`unknown setting "${s}" for "${name}" (known: ${keys.join(', ')})`);
      if (o[key] !== undefined) return fail(`"${key}" set twice for "${name}"`);
      if (key === 'pool_mode') {
        const m = v.toLowerCase();
        if (m !== 'session' && m !== 'transaction') return fail(`pool_mode of "${name}": session or transaction`);
        o.pool_mode = m;
      } else {
        if (!/^\d+$/.test(v) || Number(v) > MAX_INT) return fail(`${key} of "${name}": an integer >= 0`);
        const n = Number(v);
        if (key === 'pool_size' && n < 1) return fail(`pool_size of "${name}": an integer >= 1`);
        o[key] = n;
      }
    }
    out.set(name, o);
  }
  return { ok: true, value: out };
}

/** The global parameters the overrides fall back to. */
export interface PoolSettingsConfig {
  pool_mode: PoolMode;
  default_pool_size: number;
  reserve_pool_size: number;
  max_db_connections: number;
  max_user_connections: number;
  database_pool_settings: string;
  user_pool_settings: string;
}

/** The pool settings of one (database, user). */
export interface EffectivePoolSettings {
  pool_mode: PoolMode;
  pool_size: number;
  reserve_pool_size: number;
  max_db_connections: number;
  max_user_connections: number;
}

/** Parsed overrides of a configuration (values are checked at load; a bad one here resolves to nothing). */
export class PoolSettings {
  readonly databases: ReadonlyMap<string, PoolOverride>;
  readonly users: ReadonlyMap<string, PoolOverride>;

  constructor(private readonly cfg: PoolSettingsConfig) {
    const d = parsePoolSettings(cfg.database_pool_settings, DATABASE_KEYS);
    const u = parsePoolSettings(cfg.user_pool_settings, USER_KEYS);
    this.databases = d.ok ? d.value : new Map();
    this.users = u.ok ? u.value : new Map();
  }

  private readonly memo = new Map<string, EffectivePoolSettings>();

  /** Settings for a client of `user` on `database`: user over database over global. */
  for(database: string, user: string): EffectivePoolSettings {
    const k = `${database}\u0000${user}`;
    let e = this.memo.get(k);
    if (e === undefined) {
      e = this.resolve(database, user);
      if (this.memo.size < 10_000) this.memo.set(k, e);
    }
    return e;
  }

  private resolve(database: string, user: string): EffectivePoolSettings {
    const d = this.databases.get(database) ?? {};
    const u = this.users.get(user) ?? {};
    const c = this.cfg;
    return {
      pool_mode: u.pool_mode ?? d.pool_mode ?? c.pool_mode,
      pool_size: u.pool_size ?? d.pool_size ?? c.default_pool_size,
      reserve_pool_size: u.reserve_pool_size ?? d.reserve_pool_size ?? c.reserve_pool_size,
      max_db_connections: d.max_db_connections ?? c.max_db_connections,
      max_user_connections: u.max_user_connections ?? c.max_user_connections,
    };
  }

  /** Does any client use transaction pooling (globally or by an override)? */
  get anyTransaction(): boolean {
    return this.anyMode('transaction');
  }

  /** Does any client use session pooling (globally or by an override)? */
  get anySession(): boolean {
    return this.anyMode('session');
  }

  private anyMode(mode: PoolMode): boolean {
    if (this.cfg.pool_mode === mode) return true;
    for (const m of [this.databases, this.users]) for (const o of m.values()) if (o.pool_mode === mode) return true;
    return false;
  }
}

const parsed = new WeakMap<PoolSettingsConfig, PoolSettings>();

/** The parsed overrides of `cfg` (parsed once per configuration object). */
export function poolSettingsOf(cfg: PoolSettingsConfig): PoolSettings {
  let s = parsed.get(cfg);
  if (!s) {
    s = new PoolSettings(cfg);
    parsed.set(cfg, s);
  }
  return s;
}
