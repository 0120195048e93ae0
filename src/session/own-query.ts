/**
 * Queries pgrelay runs for itself on a client's backend connection (the primary's write
 * position, a standby's replay position, a catalog lookup), their replies captured, never
 * the client's. They go as an extended-protocol batch under a statement and portal name of
 * pgrelay's own, closed again in the batch: a simple Query would drop the connection's
 * unnamed statement and unnamed portal, which are the client's — a portal it reads a few
 * rows at a time inside its transaction would be gone, as it never is on a direct
 * connection.
 */
import { serialize } from 'pg-protocol';
import { FE, TxStatus } from '../protocol/constants.js';
import { type BackendLink, type LinkExpectation, SYNC } from './backend-link.js';
import { portalMessage, statementMessage } from './pooled-statements.js';
import type { ErrorFieldMap } from './replies.js';

/** The statement's and the portal's name: a client's do not begin with a control character. */
const NAME = '\u0001pgrelay';

const CLOSE_STATEMENT = statementMessage(FE.Close, NAME);
const CLOSE_PORTAL = portalMessage(FE.Close, NAME);
const DESCRIBE_PORTAL = portalMessage(FE.Describe, NAME);
/** Bind portal NAME to statement NAME: no parameters, text results. */
const BIND = serialize.bind({ portal: NAME, statement: NAME });
/** Execute portal NAME, every row. */
const EXECUTE = serialize.execute({ portal: NAME });

/**
 * A Parse PostgreSQL refuses (a syntax error: `why` is not SQL) under pgrelay's name: it fails
 * the transaction or the pipeline it is sent into, and leaves nothing behind. The server's
 * log shows `why`.
 */
export function refusedParse(why: string): Buffer {
  return serialize.parse({ name: NAME, text: `pgrelay: ${why}` });
}

/** Where the batch is written (Backends.write: behind what the client scanner has yet to emit). */
export interface OwnQueryWriter {
  write(link: BackendLink, bytes: Buffer): void;
}

export interface OwnQueryResult {
  /** The rows, as text. */
  readonly rows: ReadonlyArray<ReadonlyArray<string | null>>;
  readonly columns: readonly string[];
  /** The first error (the requests after it are skipped up to the Sync). */
  readonly error?: ErrorFieldMap;
  /** The transaction status at the batch's end. */
  readonly status: number;
}

/**
 * Run `sql` (no parameters) on `link` for pgrelay: `done` gets its rows (and with
 * `columns`, their names) once the batch's Sync is answered. `skippable`: the node may go
 * away before answering without the client noticing (Expectation.skippable); `done` then
 * gets an error.
 */
export function ownQuery(
  b: OwnQueryWriter,
  link: BackendLink,
  sql: string,
  done: (r: OwnQueryResult) => void,
  opts: { readonly skippable?: boolean; readonly columns?: boolean } = {},
): void {
  const skippable = opts.skippable === true;
  const parse = serialize.parse({ name: NAME, text: sql });
  const describe: LinkExpectation = { kind: 'describe', mode: 'capture', skippable };
  const execute: LinkExpectation = { kind: 'execute', mode: 'capture', rows: [], skippable };
  const requests: Array<[LinkExpectation, Buffer]> = [
    // (One left by a batch that failed before its own Close: a Close of no statement is no error.)
    [{ kind: 'close', mode: 'capture', skippable }, CLOSE_STATEMENT],
    [{ kind: 'parse', mode: 'capture', skippable }, parse],
    [{ kind: 'bind', mode: 'capture', skippable }, BIND],
    ...(opts.columns === true ? [[describe, DESCRIBE_PORTAL] as [LinkExpectation, Buffer]] : []),
    [execute, EXECUTE],
    [{ kind: 'close', mode: 'capture', skippable }, CLOSE_PORTAL],
    [{ kind: 'close', mode: 'capture', skippable }, CLOSE_STATEMENT],
  ];
  const sync: LinkExpectation = {
    kind: 'sync',
    mode: 'capture',
    skippable,
    done: (x) => {
      let error: ErrorFieldMap | undefined;
      for (const [e] of requests) error ??= e.error;
      done({
        rows: execute.rows ?? [],
        columns: describe.columns ?? [],
        error: error ?? x.error,
        status: x.status ?? TxStatus.Idle,
      });
    },
  };
  for (const [e] of requests) link.expect(e);
  link.expect(sync);
  // One write for the batch.
  b.write(link, Buffer.concat([...requests.map(([, bytes]) => bytes), SYNC]));
}
