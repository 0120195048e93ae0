/**
 * pool_mode = transaction: statements that leave state in the backend session, which a
 * later transaction of the client on another connection would not find. A session that
 * runs one keeps its backend connections until it ends ("pinned", as AWS RDS Proxy does;
 * PgBouncer just breaks these in transaction mode). The README's table lists them.
 */
import type { Classification } from '../router/router.js';

/** Session-level advisory lock functions (the _xact_ ones end with the transaction and are fine). */
const SESSION_LOCKS = new Set([
  'pg_advisory_lock',
  'pg_advisory_lock_shared',
  'pg_try_advisory_lock',
  'pg_try_advisory_lock_shared',
]);

/** Why `sql` pins its session, or undefined when it leaves no session state behind. */
export function pinReason(sql: string, cls: Classification): string | undefined {
  if (cls.kind === 'listen') return 'LISTEN';
  if (cls.kind === 'prepare') return 'PREPARE';
  // The library (and the settings it defines) stays loaded in that backend only.
  if (cls.kind === 'other' && cls.reason === 'LOAD') return 'LOAD';
  if (cls.createsTemp.length > 0) return 'temporary table';
  if (cls.kind === 'declare' && /\bwith\s+hold\b/i.test(sql)) return 'cursor WITH HOLD';
  // Indexed loops here and below: called for every statement, most of which call nothing.
  const fns = cls.functions;
  for (let i = 0; i < fns.length; i++) if (SESSION_LOCKS.has(builtinName(fns[i]))) return 'session advisory lock';
  // A set_config() call or a SET under transaction control among several statements:
  // what lasts is not known (see Classification.multiSettings; SettingsReplay replays the others).
  if (cls.multiSettings === null) return 'SET among several statements';
  if (cls.kind === 'multi' || cls.kind === 'invalid') {
    // Several statements (or text the classifier gave up on): look for the same by their words.
    if (/(^|;)\s*listen\b/i.test(sql)) return 'LISTEN';
    if (/(^|;)\s*prepare\s+(?!transaction\b)/i.test(sql)) return 'PREPARE';
    if (/\bcreate\s+(global\s+|local\s+)?temp(orary)?\s+table\b/i.test(sql)) return 'temporary table';
    if (/\bwith\s+hold\b/i.test(sql)) return 'cursor WITH HOLD';
    if (/\bpg_(try_)?advisory_lock(_shared)?\s*\(/i.test(sql)) return 'session advisory lock';
    if (/(^|;)\s*load\s/i.test(sql)) return 'LOAD';
  }
  return undefined;
}

/** The function's name without `pg_catalog.` (other schemas kept: not the built-in one). */
function builtinName(fn: string): string {
  return fn.startsWith('pg_catalog.') ? fn.slice('pg_catalog.'.length) : fn;
}

/**
 * Does the statement read the backend session's sequence state (`lastval()`, `currval()`:
 * the value nextval() last returned there)? pool_mode = transaction: that state belongs to
 * whichever client last used the server connection (see Backends.takeLastUnit).
 */
export function readsSequenceState(cls: Classification): boolean {
  const fns = cls.functions;
  for (let i = 0; i < fns.length; i++) {
    const n = builtinName(fns[i]);
    if (n === 'lastval' || n === 'currval') return true;
  }
  return false;
}

/**
 * May the statement have called nextval() (or setval()): itself, or through a column
 * default (an INSERT, MERGE or COPY FROM; anything else that writes, and several
 * statements, count too)?
 */
export function mayCallNextval(cls: Classification): boolean {
  if (cls.write || cls.kind === 'insert' || cls.kind === 'merge' || cls.kind === 'multi') return true;
  const fns = cls.functions;
  for (let i = 0; i < fns.length; i++) {
    const n = builtinName(fns[i]);
    if (n === 'nextval' || n === 'setval') return true;
  }
  return false;
}
