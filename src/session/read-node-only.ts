/**
 * pool_mode = transaction: which units of work need only the load-balance node's
 * connection. A session that holds no links checks out only the node drawn for its
 * reads (not the primary's) for a simple Query whose one statement the router sends
 * there, that reads only and leaves no transaction or session state behind: an
 * autocommit read. Everything else takes the primary's connection, then the read
 * node's, as before. Pure: session.ts asks, with the router's decision.
 */
import type { Classification, Decision } from '../router/router.js';
import { pinReason } from './pinning.js';

/**
 * Does a simple Query of `sql` (classified `cls`, decided `d` by the router for a session
 * outside a transaction) need only the load-balance node's connection?
 */
export function readNodeOnly(sql: string, cls: Classification, d: Decision): boolean {
  if (d.target !== 'standby' || d.node !== undefined || d.write) return false;
  if (cls.kind !== 'select' && cls.kind !== 'show') return false;
  if (cls.statementCount > 1 || cls.write || cls.tx !== undefined || cls.txSetting !== undefined) return false;
  if (cls.createsTemp.length > 0 || cls.writtenTables.length > 0 || cls.discardsTemp) return false;
  if (cls.resetsAll !== undefined || cls.changesDefaults !== undefined || cls.multiSetsSession === true) return false;
  return pinReason(sql, cls) === undefined;
}
