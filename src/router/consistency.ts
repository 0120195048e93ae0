/**
 * Read-your-writes: may a load-balanced read run on a standby, given what the
 * session (or, in global mode, any session) has written? Pure: the session keeps
 * the positions (session/read-your-writes.ts), the node table each standby's replay
 * position; this file compares them and says what to do.
 *
 * A write's position is the primary's WAL insert position read right after the
 * write committed (`CAPTURE_SQL`). A standby that has replayed up to it shows the
 * write: its replay position (pg_last_wal_replay_lsn) is at least that far.
 */
import type { ReadYourWritesMode } from '../config/types.js';
import { formatLsn } from '../protocol/lsn.js';

/** What a read of a session is checked against. */
export interface ReadCheck {
  mode: ReadYourWritesMode;
  /** The session is inside a transaction (a standby's snapshot may already be taken: never ask there). */
  inTransaction: boolean;
  /** The position of one of the session's writes is being read on the primary. */
  ownCapturing: boolean;
  /** The session committed a write whose position could not be read (the read goes to the primary). */
  ownUncaptured: boolean;
  /** The session's newest write position (0n: none). */
  ownPosition: bigint;
  /** global: positions of writes acknowledged before this read are still being read. */
  othersCapturing: boolean;
  /** global: some session committed a write whose position could not be read. */
  othersUncaptured: boolean;
  /** global: the newest write position acknowledged to any client (0n: none). */
  newestPosition: bigint;
  /** The standby's replay position as last learned (0n: unknown). */
  replayPosition: bigint;
  /** The standby's position was already asked for this request. */
  asked: boolean;
  /** The session's connection to the standby is idle (outside a transaction): it can be asked there. */
  canAsk: boolean;
}

export type ReadVerdict =
  /** Run on the standby; `checked`: a position had to be reached (it was). */
  | { act: 'standby'; checked: boolean }
  /** Wait for the write positions being read, then check again. */
  | { act: 'wait' }
  /** Ask the standby for its replay position, waiting up to read_your_writes_wait for `need`; then check again. */
  | { act: 'ask'; need: bigint }
  /** Run on the primary instead. */
  | { act: 'primary'; reason: string };

const STANDBY: ReadVerdict = { act: 'standby', checked: false };
const STANDBY_CHECKED: ReadVerdict = { act: 'standby', checked: true };
const WAIT: ReadVerdict = { act: 'wait' };

/** Where a read that the router sent to a standby runs, as far as read-your-writes is concerned. */
export function checkRead(c: ReadCheck): ReadVerdict {
  if (c.mode === 'off') return STANDBY;
  const global = c.mode === 'global';
  if (c.ownCapturing || (global && c.othersCapturing)) return WAIT;
  // Inside a transaction, its own writes are the policy's business (disable_load_balance_on_write).
  if (!c.inTransaction && c.ownUncaptured)
    return { act: 'primary', reason: 'the position of a write of this session is unknown' };
  if (!c.inTransaction && global && c.othersUncaptured)
    return { act: 'primary', reason: 'the position of a recent write is unknown' };
  const need = global && c.newestPosition > c.ownPosition ? c.newestPosition : c.ownPosition;
  if (need === 0n) return STANDBY;
  if (c.replayPosition >= need) return STANDBY_CHECKED;
  if (!c.asked && c.canAsk) return { act: 'ask', need };
  return { act: 'primary', reason: 'the standby has not replayed the writes this read must see' };
}

/** Reads the primary's WAL insert position; runs right after a write committed, on the same connection. */
export const CAPTURE_SQL = 'SELECT pg_catalog.pg_current_wal_insert_lsn()::text AS lsn';

/** WAL page size (XLOG_BLCKSZ, PostgreSQL's default) and its page header sizes. */
const WAL_PAGE = 8192n;
const SHORT_PAGE_HEADER = 24n;
const LONG_PAGE_HEADER = 40n;

/**
 * The position a standby must have replayed to show writes committed before the
 * insert position `insert` was read. The insert position points past a page header
 * when the last record ended at a page boundary; a standby that replayed that record
 * reports the boundary itself, so the header is taken off (no record ends inside a
 * header: either way the last record has been replayed).
 */
export function writePosition(insert: bigint): bigint {
  const inPage = insert % WAL_PAGE;
  if (inPage === SHORT_PAGE_HEADER || inPage === LONG_PAGE_HEADER) return insert - inPage;
  return insert;
}

/**
 * Reads a standby's replay position, waiting on the standby up to `waitMs` for it to
 * reach `need` (one statement, polling every millisecond; an idle standby answers at
 * once). NULL when the node is not in recovery.
 */
export function replayWaitSql(need: bigint, waitMs: number): string {
  const lsn = formatLsn(need);
  const ms = Math.max(0, Math.floor(waitMs));
  return (
    'WITH RECURSIVE w(lsn) AS (SELECT pg_catalog.pg_last_wal_replay_lsn() UNION ALL ' +
    'SELECT CASE WHEN pg_catalog.pg_sleep(0.001) IS NULL THEN NULL ELSE pg_catalog.pg_last_wal_replay_lsn() END ' +
    `FROM w WHERE w.lsn < '${lsn}'::pg_catalog.pg_lsn ` +
    `AND pg_catalog.clock_timestamp() < pg_catalog.statement_timestamp() + interval '${ms} milliseconds') ` +
    'SELECT lsn::text AS lsn FROM w ORDER BY lsn DESC NULLS LAST LIMIT 1'
  );
}
