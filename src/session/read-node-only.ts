/**
 * pool_mode = transaction: which units of work need only the load-balance node's
 * connection. A session that holds no links checks out only the node drawn for its
 * reads (not the primary's) for a simple Query whose one statement the router sends
 * there, that reads only and leaves no transaction or session state behind: an
 * autocommit read; and for an extended-protocol batch all of whose statements are such
 * reads, looked at ahead in the client's input (readOnlyUnit); and for a read-only
 * transaction (readOnlyBegin: a simple Query, or an unnamed statement first in a batch of
 * reads) until a statement of it needs the primary. Everything else takes the primary's
 * connection, then the read node's, as before. Pure: session.ts asks, with the router's
 * decisions.
 */
import type { Classification, Decision } from '../router/router.js';
import { FE } from '../protocol/constants.js';
import { readCString } from '../protocol/messages.js';
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

/**
 * Does this statement begin a read-only transaction that may start on the
 * load-balance node alone (`BEGIN READ ONLY`, `START TRANSACTION … READ ONLY`, or a plain
 * `BEGIN` when the session's `default_transaction_read_only` is on, `defaultReadOnly`; one
 * statement, not SERIALIZABLE, which a hot standby refuses — nor with the session's
 * default isolation SERIALIZABLE, `defaultSerializable`)? Its statements then run there
 * until one needs the primary, which then joins the transaction (session.ts joinPrimary).
 */
export function readOnlyBegin(
  cls: Classification,
  d: Decision,
  defaultSerializable = false,
  defaultReadOnly = false,
): boolean {
  if (cls.tx !== 'begin' || cls.statementCount > 1 || d.target !== 'both' || d.standbyText !== undefined) return false;
  const m = cls.beginModes;
  // A plain BEGIN is read-only when the session's default_transaction_read_only is on.
  if ((m?.readOnly ?? defaultReadOnly) !== true) return false;
  const iso = m?.isolation;
  return iso === undefined ? !defaultSerializable : iso !== 'serializable';
}

/** What `readOnlyUnit` asks the session about the statements and portals a batch names. */
export interface UnitLookup {
  /** The router's classification and decision for `sql` outside a transaction; undefined: a catalog lookup or an admin command. */
  decide(sql: string, cls?: Classification): { cls: Classification; d: Decision } | undefined;
  /** Text and facts of a statement the client prepared before (undefined: unknown, or pgrelay's own admin statement). */
  statement(name: string): { sql: string; cls: Classification } | undefined;
  /** A portal bound before on the read node's connection, in the pipeline under way (never at a unit's start). */
  portal(name: string): boolean;
  /** Is the session's default isolation SERIALIZABLE (readOnlyBegin)? */
  defaultSerializable?(): boolean;
  /** Is the session's default_transaction_read_only on, as its server connections last reported it (readOnlyBegin)? */
  defaultReadOnly?(): boolean;
}

/** Describe and Close name a prepared statement ('S') or a portal ('P'). */
const STATEMENT = 0x53;
const PORTAL = 0x50;

/** At most this many messages are looked at ahead: a longer batch takes the primary's connection as well. */
export const LOOKAHEAD_MESSAGES = 256;

/**
 * Extended protocol, pool_mode = transaction: do the messages in `buf` from `pos` (each a
 * whole message: type, length, body), up to and including the first Sync, only read on the
 * load-balance node, as `readNodeOnly` says of a simple Query? Each Parse's statement, each
 * Bind's (parsed earlier in the batch or before it) must be such a read, each Execute,
 * Describe and Close must name a statement or portal of the batch (or a prepared statement),
 * and the batch must be in `buf` up to its Sync, or up to a Flush that ends what the client
 * sent (it waits for replies before sending the rest: postgres.js describes a new statement
 * first; what follows is checked as it comes, see session.ts). `single`: only the message at
 * `pos` (a batch under way on the read node). False for anything else.
 */
export function readOnlyUnit(buf: Buffer, pos: number, look: UnitLookup, single = false): boolean {
  // Statements parsed and portals bound in the batch (arrays: most batches name one or two;
  // the last Parse of a name wins).
  const parsedNames: string[] = [];
  const parsedFacts: Array<{ sql: string; cls: Classification }> = [];
  const bound: string[] = [];
  // An unnamed BEGIN READ ONLY first (pgjdbc's way): a read-only transaction on the read node.
  let begin = -1;
  for (let n = 0; n < LOOKAHEAD_MESSAGES && pos + 5 <= buf.length; n++) {
    const type = buf[pos];
    const len = buf.readUInt32BE(pos + 1);
    const start = pos + 5;
    const end = pos + 1 + len;
    if (len < 4 || end > buf.length) return false;
    switch (type) {
      case FE.Parse: {
        const name = readCString(buf, start, end);
        const sql = name && readCString(buf, name[1], end);
        if (!name || !sql) return false;
        const r = look.decide(sql[0]);
        const first = !single && parsedNames.length === 0 && bound.length === 0 && name[0] === '';
        const beginning =
          r !== undefined &&
          first &&
          readOnlyBegin(r.cls, r.d, look.defaultSerializable?.() === true, look.defaultReadOnly?.() === true);
        if (beginning) begin = parsedNames.length;
        const fits = r !== undefined && (beginning || readNodeOnly(sql[0], r.cls, r.d));
        // A second Parse of a name the client has not closed fails (42P05): the primary's connection answers as before.
        if (!fits || (name[0] !== '' && look.statement(name[0]) !== undefined)) return false;
        parsedNames.push(name[0]);
        parsedFacts.push({ sql: sql[0], cls: r.cls });
        break;
      }
      case FE.Bind: {
        const portal = readCString(buf, start, end);
        const stmt = portal && readCString(buf, portal[1], end);
        const beginsIt = begin >= 0 && parsedNames.lastIndexOf(stmt?.[0] ?? '\0') === begin;
        if (!portal || !stmt || !(beginsIt || statementFits(stmt[0], parsedNames, parsedFacts, look))) return false;
        bound.push(portal[0]);
        break;
      }
      case FE.Describe:
      case FE.Close: {
        const name = readCString(buf, start + 1, end);
        if (!name) return false;
        if (buf[start] === STATEMENT) {
          if (!statementFits(name[0], parsedNames, parsedFacts, look)) return false;
        } else if (buf[start] !== PORTAL || !(bound.includes(name[0]) || look.portal(name[0]))) return false;
        break;
      }
      case FE.Execute: {
        const name = readCString(buf, start, end);
        if (!name || !(bound.includes(name[0]) || look.portal(name[0]))) return false;
        break;
      }
      case FE.Sync:
        return true;
      case FE.Flush:
        if (end === buf.length) return true;
        break;
      default:
        return false;
    }
    if (single) return true;
    pos = end;
  }
  return false;
}

/** Is statement `name` (parsed in the batch, or prepared before) a read for the read node? */
function statementFits(
  name: string,
  parsedNames: readonly string[],
  parsedFacts: ReadonlyArray<{ sql: string; cls: Classification }>,
  look: UnitLookup,
): boolean {
  const i = parsedNames.lastIndexOf(name);
  const st = i >= 0 ? parsedFacts[i] : look.statement(name);
  if (!st) return false;
  const r = look.decide(st.sql, st.cls);
  // A statement whose routing depends on its parameters (current_setting($1)) is decided at Bind.
  return r !== undefined && st.cls.settingParams.length === 0 && readNodeOnly(st.sql, st.cls, r.d);
}
