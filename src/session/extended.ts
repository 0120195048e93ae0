/**
 * The extended query protocol: Parse, Bind, Describe, Execute, Close, Sync and Flush
 * for statements that run on backends (admin statements are answered by
 * admin-replies.ts; session.ts decides which, once per message).
 *
 * pgrelay keeps, per prepared statement and portal, the nodes it exists on: a
 * statement parsed on a standby is parsed again on the primary when a later Bind
 * must go there (once the transaction has written, pgpool's rule); statements for
 * both nodes (BEGIN, SET… in the extended protocol) are sent to the load-balance
 * node with their replies dropped. A pipeline that spans nodes gets one
 * ReadyForQuery for the client once every node answered its Sync.
 *
 * What a request may have to send again (a re-send hook, a portal's Bind, a mirrored
 * Bind, Execute or Close) keeps a view of the client's chunk, not a copy: every chunk is
 * the session's own and never written again (protocol/socket-reader.ts, framing.ts), and
 * such a request lives until its reply. What lives longer (a named statement's Parse) is
 * copied, so that it does not keep a whole chunk alive.
 */
import { BE, FE, SQLSTATE, TxStatus } from '../protocol/constants.js';
import { DROP, SUSPEND, type Verdict } from '../protocol/framing.js';
import {
  type ErrorFields,
  PgError,
  bindParameterIntegers,
  bindParameterTexts,
  commandComplete,
  bindCounts,
  describedWithoutRows,
  errorResponse,
  parseParamTypes,
  readCString,
  readyForQuery,
} from '../protocol/messages.js';
import type { AdminRequest } from '../admin/service.js';
import { errorResult } from '../admin/result.js';
import { mergeRestores, restoreWithout, type StartupRestore } from '../pool/startup-settings.js';
import { parameterCount, pipelineRefusal, returnsNoRows } from '../router/classifier.js';
import type { Classification, Decision } from '../router/router.js';
import { type BackendLink, FLUSH, type LinkExpectation, SYNC } from './backend-link.js';
import type { Backends } from './backends.js';
import type { BothNodes } from './both-nodes.js';
import type { SessionCore } from './core.js';
import { refusedParse } from './own-query.js';
import type { StatementRouting } from './routing.js';
import {
  type ErrorFieldMap,
  MergedReady,
  type MirrorCopies,
  firstMirrorError,
  implicitlyRolledBack,
} from './replies.js';
import { resendSame } from './standby-loss.js';
import {
  CLOSE_COMPLETE,
  PARSE_COMPLETE,
  ServerStatements,
  parseBody,
  parseMessage,
  renamedBind,
  type StatementName,
  portalMessage,
  statementMessage,
} from './pooled-statements.js';

/** The statements pgrelay prepared on `link`'s connection (made on first use). */
function statementsOf(link: BackendLink, s: SessionCore): ServerStatements {
  const max = s.ctx.config().max_prepared_statements;
  const c = link.conn;
  if (c.statements === undefined) c.statements = new ServerStatements(max);
  else c.statements.setMax(max);
  return c.statements;
}

interface Stmt {
  sql: string;
  cls: Classification;
  /** The Parse message, for parsing it again on another node. */
  parse: Buffer;
  /** Nodes on which it is parsed. */
  nodes: number[];
  /** Session mode, a named statement: when it was last parsed on each of `nodes` (ExtendedProtocol.parseSeq). */
  parsedAt?: Map<number, number>;
  /** Sent to the primary and the load-balance node. */
  both: boolean;
  decision?: Decision;
  /**
   * pool_mode = transaction: pgrelay's name for it on pooled connections (`parse` then
   * prepares it under that name; pooled-statements.ts). Unnamed statements (and named ones
   * when max_prepared_statements = 0) are not renamed: a connection's unnamed statement is
   * known by `BackendConnection.unnamed`.
   */
  server?: string;
  /** pool_mode = transaction: the entry of `server` (told when a server accepted the statement). */
  named?: StatementName;
  /**
   * pool_mode = transaction, max_prepared_statements = 0: a named statement under the
   * client's own name, on the connections the session is pinned to (see `parse`): known by
   * node, as in session mode.
   */
  untracked?: boolean;
  /** The client's Parse of it failed or was skipped: the server never had it. */
  notParsed?: boolean;
  /** An unnamed statement not answered yet: the unnamed statement it replaces (see parseAnswered). */
  prevUnnamed?: Stmt;
  /** The client's Parse of it is not answered yet: it may still fail (see awaitAnswers). */
  unconfirmed?: boolean;
  /** A Close of it was skipped after an error (the statement stays, as on the server). */
  closeSkipped?: boolean;
  /** The client's Syncs and Queries handled when its Close was (see closeInDoubt). */
  closedAt?: number;
  /** The statement of the same name whose Close went just before this Parse (see parseAnswered). */
  replaces?: Stmt;
  /** The latest Parse of it on a link (the client's, or pgrelay's: ensureParsed), until answered: see parseInDoubt. */
  parsing?: { link: BackendLink; syncs: number };
  /** What PostgreSQL names refusing it in a pipeline after an Execute (pipelineRefusal; null: none), once asked. */
  refusal?: string | null;
}

interface Portal {
  /** A named portal whose Bind the server accepted (see bind: a name taken). */
  confirmed?: boolean;
  /** PortalTable.syncs when it was bound. */
  boundAt?: number;
  nodes: number[];
  both: boolean;
  stmt?: Stmt;
  /** The Bind message, kept while the portal lives on a node its requests may be re-sent from. */
  bind?: Buffer;
  /**
   * An Execute ran on it: it may have returned rows (a row-limited Execute), so binding
   * it again elsewhere would start over; its requests are no longer re-sent.
   */
  executed?: boolean;
  /**
   * The unnamed portal's Bind was refused or skipped before it replaced the portal: the client
   * has `before` (a Bind pipelined behind it took this one for the portal it replaced).
   */
  undone?: { before: Portal | undefined };
  /**
   * The server no longer has it, the client does: a copy of a Bind for both nodes into its
   * name ran on its node where the primary skipped its own Bind (an error before it there).
   */
  gone?: boolean;
}

/**
 * A Close of a portal on its way (see closingPortal): `portal`, what the client has if it is
 * skipped; `after`, what a Bind of the name sent behind it takes for the portal it replaces
 * (Portal.undone, set when the Close is answered).
 */
interface ClosingPortal {
  portal: Portal | undefined;
  after?: Portal;
}

/** The unnamed portal the client has in place of `p`, whose Bind may have been undone (Portal.undone). */
function inPlaceOf(p: Portal | undefined): Portal | undefined {
  let at = p;
  while (at?.undone !== undefined) at = at.undone.before;
  return at;
}

/** What PostgreSQL answers a request in an aborted transaction. */
export const IN_FAILED_TRANSACTION: ErrorFields = {
  severity: 'ERROR',
  code: SQLSTATE.inFailedTransaction,
  message: 'current transaction is aborted, commands ignored until end of transaction block',
};

const NO_LINKS: readonly BackendLink[] = [];
/** NoData: the Describe of a portal that returns no rows. */
const NO_DATA = Buffer.from([BE.NoData, 0, 0, 0, 4]);

/**
 * A statement for both nodes in a pipeline whose copy may run where the primary skips its
 * own (an error before it on the primary), leaving that node unlike the client's session: a
 * COMMIT or ROLLBACK, a DEALLOCATE ALL or DISCARD ALL, a SET or RESET (copyMatters). Where it ran.
 */
interface CopiedRun {
  cls: Classification;
  /** The other nodes' links whose copy ran without error. */
  copies: BackendLink[];
  /** For each of `copies`, its connection's ServerStatements.mark when the copy was sent. */
  marks: number[];
  /** The primary's ran without error. */
  primaryRan: boolean;
}

/**
 * A Parse PostgreSQL refuses (a syntax error) under a name of pgrelay's own: sent to the
 * primary to make its part of a pipeline fail when another node refuses a request of it
 * (see failPrimaryPart). A failed Parse leaves nothing behind.
 */
const FAIL_PIPELINE = refusedParse('a request of this pipeline failed on another node');

/** The parameter types `st`'s Parse declares (0: unspecified), or undefined if it does not read. */
function declaredTypes(st: Stmt): number[] | undefined {
  const q = readCString(st.parse, 5, st.parse.length);
  const text = q && readCString(st.parse, q[1], st.parse.length);
  return (text && parseParamTypes(st.parse, text[1], st.parse.length)) || undefined;
}

/**
 * What PostgreSQL answers a Bind of `st` (the client's `name`) in an aborted transaction, when
 * that can be told without the server: 08P01 for a parameter count other than the
 * statement's (checked first), else 25P02 — unless it ends or recovers the transaction
 * without parameters (then it runs). Undefined when the statement's parameter count is not
 * known (parameterCount) or the Bind is malformed.
 */
function bindRefusal(st: Stmt, name: string, buf: Buffer, start: number, end: number): ErrorFields | undefined {
  const portal = readCString(buf, start, end);
  const stmtName = portal && readCString(buf, portal[1], end);
  const counts = stmtName && bindCounts(buf, stmtName[1], end);
  const declared = declaredTypes(st);
  if (!counts || !declared) return undefined;
  const required = parameterCount(st.sql, st.cls, declared.length);
  if (required === undefined) return undefined;
  if (counts.params !== required)
    return {
      severity: 'ERROR',
      code: SQLSTATE.protocolViolation,
      message: `bind message supplies ${counts.params} parameters, but prepared statement "${name}" requires ${required}`,
    };
  return endsOrRecovers(st.cls) && counts.params === 0 ? undefined : IN_FAILED_TRANSACTION;
}

/**
 * PostgreSQL's answer to a Describe of `st` in an aborted transaction when pgrelay knows it:
 * the parameters' types and NoData, for a statement that returns no rows and whose
 * parameter types are all declared (or that has none). A statement that returns rows gets
 * 25P02 (a catalog lookup), as does pgrelay's Parse of it there; undefined: not known.
 */
function abortedDescription(st: Stmt): Buffer | undefined {
  if (!returnsNoRows(st.sql, st.cls)) return undefined;
  const declared = declaredTypes(st);
  if (!declared) return undefined;
  const count = parameterCount(st.sql, st.cls, declared.length);
  if (count === undefined) return undefined;
  const types = declared.slice(0, count);
  if (types.length < count || types.includes(0)) return undefined;
  return describedWithoutRows(types);
}

/** What PostgreSQL names refusing `st` in a pipeline after an Execute (null: it runs there), worked out once. */
function refusalOf(st: Stmt): string | null {
  if (st.refusal === undefined) st.refusal = pipelineRefusal(st.sql, st.cls) ?? null;
  return st.refusal;
}

/**
 * Does a statement executed in a pipeline end its implicit transaction, so that an error
 * later in the pipeline does not roll back what came before it? Transaction commands, and
 * those PostgreSQL commits at once (DISCARD ALL, VACUUM…: the statements it refuses inside
 * a transaction block).
 */
function endsImplicitTransaction(st: Stmt): boolean {
  return st.cls.tx !== undefined || refusalOf(st) !== null;
}

/** A DISCARD ALL of the pipeline ran. */
function discardedAll(o: PendingOutcome): boolean {
  return o.ok && o.stmt.cls.kind === 'discard' && o.stmt.cls.resetsAll === true;
}

/** A statement of the pipeline that ends its implicit transaction ran (see endsImplicitTransaction). */
function endedImplicitTransaction(o: PendingOutcome): boolean {
  return o.ok && endsImplicitTransaction(o.stmt);
}

/** A Bind's error that PostgreSQL raises before it replaces the unnamed portal (or none: skipped). */
function refusedBeforePortal(e: LinkExpectation): boolean {
  const c = e.error?.C;
  return (
    e.started !== true ||
    c === SQLSTATE.invalidSqlStatementName ||
    c === SQLSTATE.protocolViolation ||
    c === SQLSTATE.inFailedTransaction
  );
}

/** Does `cls` drop prepared statements (DEALLOCATE, DISCARD ALL; see ExtendedProtocol.statementDone)? */
export function dropsStatements(cls: Classification): boolean {
  return (
    cls.kind === 'deallocate' ||
    (cls.kind === 'discard' && cls.resetsAll === true) ||
    cls.multiDeallocatesAll !== undefined
  );
}

/** Does `cls` end the transaction block (COMMIT, ROLLBACK, PREPARE TRANSACTION; not to a savepoint)? */
function endsTransaction(cls: Classification | undefined): boolean {
  const tx = cls?.statementCount === 1 ? cls.tx : undefined;
  return tx === 'commit' || tx === 'rollback' || tx === 'prepare_transaction';
}

/** PostgreSQL's IsTransactionExitStmt: COMMIT, ROLLBACK, PREPARE TRANSACTION, ROLLBACK TO SAVEPOINT (allowed in an aborted transaction). */
function endsOrRecovers(cls: Classification): boolean {
  return cls.statementCount === 1 && (endsTransaction(cls) || cls.tx === 'rollback_to');
}

/** Does a copy of `cls` that runs where the primary's is skipped leave its node unlike the session (CopiedRun)? */
function copyMatters(cls: Classification): boolean {
  return endsTransaction(cls) || dropsStatements(cls) || cls.kind === 'set' || cls.kind === 'reset';
}

/** The links where a copy of a statement `what` accepts ran while the primary skipped its own (undefined: none). */
function copiesAlone(runs: readonly CopiedRun[], what: (cls: Classification) => boolean): BackendLink[] | undefined {
  let links: BackendLink[] | undefined;
  for (const r of runs) if (!r.primaryRan && r.copies.length > 0 && what(r.cls)) (links ??= []).push(...r.copies);
  return links;
}

/** SET, RESET, DISCARD ALL: statements for both nodes that change the session's settings. */
const changesSettings = (cls: Classification): boolean =>
  cls.kind === 'set' || cls.kind === 'reset' || cls.kind === 'discard';

/** Statements executed in the current pipeline, whose outcome updates the routing state at Sync. */
interface PendingOutcome {
  stmt: Stmt;
  decision: Decision;
  /** At least one execution succeeded. */
  ok: boolean;
}

/** Distinct outcomes a pipeline keeps before applying the oldest at once (see PipelineOutcomes). */
const MAX_OUTCOMES = 1024;

/**
 * What the statements executed since the last Sync did, applied to the routing state
 * once the Sync's ReadyForQuery gives the transaction status. Bounded whatever the
 * client sends before its Sync: repeated executions of one statement share an entry,
 * reads that change nothing but the transaction state share one, and past
 * MAX_OUTCOMES entries the oldest is applied at once with the last known status.
 */
class PipelineOutcomes {
  private list: PendingOutcome[] = [];
  /** The latest statement that changes nothing but the transaction state (a plain read). */
  private plain: PendingOutcome | undefined;

  constructor(private readonly apply: (o: PendingOutcome, status: number) => void) {}

  /** An Execute of `stmt` was sent; returns the entry its reply updates. */
  add(stmt: Stmt, decision: Decision, status: number): PendingOutcome {
    if (!changesRouting(stmt.cls, decision)) {
      if (!sameOutcome(this.plain, stmt, decision)) this.plain = { stmt, decision, ok: false };
      return this.plain as PendingOutcome;
    }
    const last = this.list[this.list.length - 1];
    if (sameOutcome(last, stmt, decision)) return last;
    if (this.list.length >= MAX_OUTCOMES) this.apply(this.list.shift() as PendingOutcome, status);
    const o = { stmt, decision, ok: false };
    this.list.push(o);
    return o;
  }

  /** The outcomes so far, in order, cleared for the next pipeline. */
  take(): PendingOutcome[] {
    const out = this.list;
    if (this.plain) out.push(this.plain);
    this.list = [];
    this.plain = undefined;
    return out;
  }
}

/** Would `o` change the routing state as an execution of `stmt` decided as `d` does? */
function sameOutcome(o: PendingOutcome | undefined, stmt: Stmt, d: Decision): o is PendingOutcome {
  return o !== undefined && o.stmt === stmt && o.decision.target === d.target && o.decision.write === d.write;
}

/** Does a statement's outcome change the routing state beyond the transaction status? */
function changesRouting(cls: Classification, d: Decision): boolean {
  return (
    d.write ||
    d.target === 'both' ||
    cls.tx !== undefined ||
    cls.txSetting !== undefined ||
    cls.discardsTemp ||
    cls.createsTemp.length > 0 ||
    cls.writtenTables.length > 0 ||
    cls.statementCount > 1
  );
}

/** PostgreSQL's refusal of a prepared statement whose result type changed since it was prepared. */
function planChanged(err: ErrorFieldMap | undefined): boolean {
  return (
    err?.C === SQLSTATE.featureNotSupported &&
    (err.R === 'RevalidateCachedQuery' || err.M?.includes('cached plan must not change result type') === true)
  );
}

/** A string literal: a quote, or a dollar quote ($$, $tag$; not a parameter $1) (statementKey). */
const LITERAL = /'|\$[A-Za-z_]*\$/;

/** A byte beyond ASCII in a text read as latin1 (statementKey). */
const NON_ASCII = /[\u0080-\u00ff]/;

/** A statement text that may be a DEALLOCATE (ownDeallocate looks closer). */
const DEALLOCATE = /^\s*deallocate\b/i;

/** Describe and Close name a prepared statement ('S') or a portal ('P'). */
export const STATEMENT = 0x53;

/**
 * Named statements a session may have open, and bytes of their Parse messages: pgrelay
 * keeps each one (to parse it on another node or connection), so a client that prepares
 * without ever closing would otherwise make it hold any amount (PostgreSQL itself would
 * hold them in its backend's memory).
 */
const MAX_NAMED_STATEMENTS = 10_000;
const MAX_NAMED_STATEMENT_BYTES = 64 * 1024 * 1024;

/** A session's prepared statements by the client's name, counting the named ones' bytes (the limits above). */
class StatementTable extends Map<string, Stmt> {
  private namedBytes = 0;

  override set(name: string, st: Stmt): this {
    if (name !== '') this.namedBytes += st.parse.length - (super.get(name)?.parse.length ?? 0);
    return super.set(name, st);
  }

  override delete(name: string): boolean {
    const old = super.get(name);
    if (old !== undefined && name !== '') this.namedBytes -= old.parse.length;
    return super.delete(name);
  }

  override clear(): void {
    this.namedBytes = 0;
    super.clear();
  }

  /** Would a new named statement whose Parse is `bytes` long go past the limits? */
  full(bytes: number): boolean {
    const named = this.size - (this.has('') ? 1 : 0);
    return named >= MAX_NAMED_STATEMENTS || this.namedBytes + bytes > MAX_NAMED_STATEMENT_BYTES;
  }
}

/**
 * A session's portals by name. PostgreSQL destroys the portals a Bind created when their
 * transaction ends, so pgrelay forgets them then too (a client binding portals under new
 * names would otherwise make the table grow for ever): those bound before a Sync (or a
 * simple Query) whose ReadyForQuery says idle, not those bound after it (pipelined behind it).
 */
class PortalTable extends Map<string, Portal> {
  /** The client's Syncs and simple Queries handled so far (the marks portals are bound at). */
  syncs = 0;

  override set(name: string, p: Portal): this {
    p.boundAt = this.syncs;
    return super.set(name, p);
  }

  /** Put back a portal the client still has (keeps its mark). */
  restore(name: string, p: Portal): void {
    super.set(name, p);
  }

  /** The `sync`-th Sync ended the transaction: the portals bound before it are gone. */
  endedAt(sync: number): void {
    if (this.size === 0) return;
    for (const [name, p] of this) if ((p.boundAt ?? 0) < sync) this.delete(name);
  }
}

function tooManyStatements(): PgError {
  return new PgError(
    SQLSTATE.programLimitExceeded,
    `too many prepared statements: pgrelay keeps at most ${MAX_NAMED_STATEMENTS.toLocaleString('en-US')} prepared statements (${MAX_NAMED_STATEMENT_BYTES / 1024 / 1024} MB of their text) open per session`,
    'FATAL',
    undefined,
    'Close the prepared statements the application no longer uses (a Close message, DEALLOCATE); most drivers bound their statement cache.',
  );
}

export class ExtendedProtocol {
  private readonly stmts = new StatementTable();
  /**
   * The Executes of this pipeline (up to its Sync) of statements that end its implicit
   * transaction: whether one of them ran decides whether an error rolled back the rest.
   */
  private endingRuns: LinkExpectation[] | undefined;
  /** Statements whose Close is on its way, by name (see closing). */
  private readonly closingStmts = new Map<string, Stmt>();
  /**
   * Portals whose Close is on its way, by name: what the server has under that name when
   * the Close reaches it (see closingPortal), put back if the Close is skipped.
   */
  private readonly closingPortals = new Map<string, ClosingPortal>();
  /**
   * Statements sent that drop prepared statements (DEALLOCATE, DISCARD ALL: extended-protocol
   * Executes, simple Queries) whose answer has not come: see awaitEarlier.
   */
  private dropsUnanswered = 0;
  /**
   * Executes sent in an aborted transaction of COMMIT, ROLLBACK or ROLLBACK TO (which end or
   * recover it) whose answer has not come: see awaitEarlier.
   */
  private recoversUnanswered = 0;
  /**
   * The nodes where an Execute ran in this pipeline's implicit transaction (outside a
   * transaction block, not a transaction command): see refusedInPipeline. Emptied at Sync.
   */
  private readonly executedOn: number[] = [];
  /** This pipeline executed a transaction command (BEGIN, COMMIT…) outside a transaction block. */
  private pipelineTx = false;
  /** This pipeline executed a transaction command, in a transaction block or not. */
  private pipelineTxCommand = false;
  /** Syncs of pipelines that executed a transaction command, not answered yet: see awaitsTransactionCommand. */
  private txCommandSyncs = 0;
  private readonly portals = new PortalTable();
  private readonly outcomes = new PipelineOutcomes((o, status) => this.applyOutcome(o, status));
  /** The statements for both nodes executed in the current pipeline whose copies matter if they run alone (CopiedRun; see execute). */
  private copiedRuns: CopiedRun[] | undefined;
  /** pool_mode = transaction: start-up settings to set again behind this pipeline's Sync (a RESET ALL… of it). */
  private restore: StartupRestore | undefined;
  /** Session mode: counts the statements parsed (Stmt.parsedAt). */
  private parseSeq = 0;
  /**
   * The start-up values `restore` no longer sets because a SET behind the RESET in the
   * pipeline sets the setting (lower-case name → value): what its report must say if an
   * error after that SET rolls it back (Expectation.reportAsAfterError).
   */
  private withdrawn: Map<string, string> | undefined;
  /** This pipeline's copies of statements for both nodes on other nodes (see MergedReady). */
  private mirror: MirrorCopies | undefined;

  constructor(
    private readonly s: SessionCore,
    private readonly route: StatementRouting,
    private readonly both: BothNodes,
  ) {}

  /**
   * A copy of a statement for both nodes (Parse, Bind, Execute) sent to `link`, not the
   * primary, its replies dropped: an error there is kept for the pipeline's end.
   */
  private mirrored(link: BackendLink, e: LinkExpectation, msg: Buffer): void {
    this.mirror ??= { copies: [], nodes: [] };
    this.mirror.copies.push(e);
    this.mirror.nodes.push(link.nodeId);
    this.s.backends.request(link, e, msg);
    this.s.backends.inPipeline(link);
  }

  /** pool_mode = transaction: links change between transactions; what is parsed where is known per connection. */
  private get pooled(): boolean {
    return this.s.backends.pooled;
  }

  /**
   * Is `st` parsed on `link`'s connection? An unnamed statement is there until a simple
   * Query runs on the connection, pgrelay's own too (a write position read, DISCARD
   * SEQUENCES…: PostgreSQL drops the unnamed statement then), in session mode as well.
   */
  private parsedOn(st: Stmt, link: BackendLink): boolean {
    if (!this.pooled || st.untracked)
      return (
        st.nodes.includes(link.nodeId) &&
        (st.server !== undefined || !this.isUnnamed(st) || (link.conn.unnamed === st && !reparseUncertain(link)))
      );
    if (st.server !== undefined) return statementsOf(link, this.s).has(st.server);
    return link.conn.unnamed === st && !reparseUncertain(link);
  }

  /** `st` is (being) parsed on `link`'s connection: record it, closing what the LRU evicts there. */
  private markParsed(st: Stmt, link: BackendLink): void {
    if (!this.pooled || st.untracked) {
      if (!st.nodes.includes(link.nodeId)) st.nodes.push(link.nodeId);
      if (this.isUnnamed(st)) {
        link.conn.unnamed = st;
        link.unnamedReparse = undefined;
      }
      // (Named ones: a DEALLOCATE ALL leaves the unnamed statement. Nothing per unnamed Parse.)
      else (st.parsedAt ??= new Map()).set(link.nodeId, ++this.parseSeq);
      return;
    }
    if (st.server === undefined) {
      link.conn.unnamed = st;
      link.unnamedReparse = undefined;
      return;
    }
    for (const old of statementsOf(link, this.s).add(st.server))
      this.s.backends.request(link, { kind: 'close', mode: 'drop' }, statementMessage(FE.Close, old));
  }

  /** Is `st` the client's unnamed statement? */
  private isUnnamed(st: Stmt): boolean {
    return this.stmts.get('') === st;
  }

  /** A Parse of `st` on `link` failed (or was skipped after an error): it is not there. */
  private notParsed(st: Stmt, link: BackendLink): void {
    if (!this.pooled || st.untracked) {
      st.nodes = st.nodes.filter((n) => n !== link.nodeId);
      if (link.conn.unnamed === st) link.conn.unnamed = undefined;
      return;
    }
    if (st.server !== undefined) link.conn.statements?.delete(st.server);
    else if (link.conn.unnamed === st) link.conn.unnamed = undefined;
  }

  /** Parse `st` on `link` before a request that uses it, unless it is there (its reply is dropped). */
  private ensureParsed(st: Stmt, link: BackendLink, skippable = false, mirror = false): void {
    if (this.parsedOn(st, link)) return;
    this.markParsed(st, link);
    const parsing = { link, syncs: link.replies.syncs };
    st.parsing = parsing;
    const e: LinkExpectation = {
      kind: 'parse',
      mode: 'drop',
      skippable,
      // Failed, or skipped after an error before it: the next request that needs it parses it again.
      done: (x) => {
        if (link.unnamedReparse?.e === e) link.unnamedReparse = undefined;
        if (st.parsing === parsing) st.parsing = undefined;
        if (x.error) this.notParsed(st, link);
      },
    };
    if (st.server === undefined && this.isUnnamed(st)) link.unnamedReparse = { e, syncs: link.replies.syncs };
    // Prepared under the client's name: a copy left there under that name is closed first.
    else if (st.server === undefined && link.conn.strays !== undefined && link.conn.strays.size > 0) {
      const name = readCString(st.parse, 5, st.parse.length);
      if (name) this.closeStray(link, name[0]);
    }
    if (mirror) this.mirrored(link, e, st.parse);
    else this.s.backends.request(link, e, st.parse);
  }

  /**
   * A SET for standbys too waits outside a transaction, as the simple protocol's does
   * (session.ts), for them to replay the session's writes: its Parse is presented again.
   */
  private settingWaits(cls: Classification, seconds: readonly BackendLink[]): boolean {
    if (cls.kind !== 'set') return false;
    for (const l of seconds) if (this.route.ryw.settingOn(l) === SUSPEND) return true;
    return false;
  }

  /**
   * pool_mode = transaction, a named Parse: prepared under pgrelay's name for the statement,
   * on the connection only if it is not there already (then ParseComplete is pgrelay's).
   */
  private parsePooled(name: string, sql: string, cls: Classification, d: Decision, raw: Buffer): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    const body = parseBody(raw);
    if (!body) return s.protocolViolation('invalid Parse message');
    // A statement for both nodes (BEGIN, SET…) is parsed on the load-balance node too, its
    // reply dropped (the primary's link first: a unit of work takes the read node's with it).
    const link = d.target === 'both' ? s.needPrimary() : this.route.linkFor(d);
    if (link === SUSPEND) return link;
    const seconds = d.target === 'both' ? b.secondLinks(d.allStandbys === true, link) : [];
    if (this.settingWaits(cls, seconds)) return SUSPEND;
    if (!b.gate(link)) return s.wait('replies');
    const taken = this.stmts.get(name);
    if (taken?.unconfirmed === true && this.awaitsParse(taken)) return this.awaitAnswers();
    if (taken !== undefined) {
      // Where the primary takes part in what the error aborts (the pipeline's implicit
      // transaction: SET LOCAL, a BEGIN, a write ran there; or the transaction block): refused
      // on the primary, as PostgreSQL's one connection would (see parseTaken).
      const p = b.primary;
      if (p === undefined || p === link || !this.refusedOnPrimary(p)) return this.parseExisting(name, body, link);
      if (!b.gate(p)) return s.wait('replies');
      return this.parseExisting(name, body, p);
    }
    const named = s.ctx.statementNames.entryFor(this.statementKey(body));
    // A Parse pgrelay would answer itself, in a transaction block, behind a pipeline not
    // answered yet: an error there may have aborted the transaction (the server would then
    // refuse it, 25P02), which its answer tells.
    if (this.abortPending(link) && statementsOf(link, s).has(named.name)) return this.awaitAnswers();
    const server = named.name;
    // A statement for both nodes stays one whatever links are held now: each Bind mirrors it
    // on the load-balance node(s) held then (the unit of work may have none now, the next one may).
    const both = d.target === 'both';
    const st: Stmt = {
      sql,
      cls,
      parse: parseMessage(server, body),
      nodes: [],
      both,
      decision: d,
      server,
      named,
      replaces: this.closingStmts.get(name),
    };
    this.stmts.set(name, st);
    for (const second of seconds) {
      this.ensureParsed(st, second, true, true);
      b.inPipeline(second);
    }
    b.inPipeline(link);
    if (this.parsedOn(st, link)) {
      // Answered by pgrelay, but skipped if a request before it fails (answered when that one is).
      if (link.pending > 0) {
        st.unconfirmed = true;
        st.parsing = { link, syncs: link.replies.syncs };
      }
      // In an aborted transaction the server would refuse it (25P02) and skip what follows up
      // to Sync: so does pgrelay (a text that does not parse goes on: its error comes first).
      if (s.routing.failed && !endsOrRecovers(cls) && cls.parseError === undefined) {
        s.skipUntilSync();
        link.expect({
          kind: 'parse',
          mode: 'synthetic',
          reply: errorResponse(IN_FAILED_TRANSACTION),
          done: (e) =>
            this.parseAnswered(name, st, { ...e, error: e.error ?? { C: SQLSTATE.inFailedTransaction } }, undefined),
        });
        return DROP;
      }
      link.expect({
        kind: 'parse',
        mode: 'synthetic',
        reply: PARSE_COMPLETE,
        done: (e) => this.parseAnswered(name, st, e, undefined),
      });
      return DROP;
    }
    this.markParsed(st, link);
    st.unconfirmed = true;
    st.parsing = { link, syncs: link.replies.syncs };
    b.request(
      link,
      {
        kind: 'parse',
        mode: 'forward',
        done: (e) => {
          if (e.error) this.notParsed(st, link);
          else named.accepted = true;
          this.parseAnswered(name, st, e, undefined);
        },
        resend: this.route.resendable(link) ? this.resendParse(st) : undefined,
      },
      st.parse,
    );
    return DROP;
  }

  /**
   * pool_mode = transaction: the re-send hook of a client's Parse of `st` on a read node's
   * connection (lost before answering): parse it on the connection the batch moves to, or
   * answer ParseComplete there if that connection has it already (a second Parse of
   * pgrelay's name would fail).
   */
  private resendParse(st: Stmt): (to: BackendLink, e: LinkExpectation) => void {
    return (to, e) => {
      const b = this.s.backends;
      b.inPipeline(to);
      if (this.parsedOn(st, to)) {
        st.unconfirmed = undefined;
        to.expect({ kind: 'parse', mode: 'synthetic', reply: PARSE_COMPLETE });
        return;
      }
      this.markParsed(st, to);
      b.request(
        to,
        {
          kind: 'parse',
          mode: e.mode,
          done: (x) => {
            st.unconfirmed = undefined;
            if (x.error) this.notParsed(st, to);
            else if (st.named !== undefined) st.named.accepted = true;
          },
        },
        st.parse,
      );
    };
  }

  /**
   * What names a statement on pooled connections (StatementNames): the Parse body after the
   * name (text, parameter types), and what the server reads that text with when it matters.
   * PostgreSQL reads a literal when it parses the statement, with the settings of the client
   * that prepares it, and keeps the value: '2024-01-01'::timestamptz under its TimeZone, a
   * backslash under its standard_conforming_strings, bytes beyond ASCII in its encoding. So a
   * text with a literal is shared only among clients whose settings are the same, and a text
   * with bytes beyond ASCII among clients of one encoding. Texts with parameters only (what
   * drivers send) are shared by all.
   */
  private statementKey(body: Buffer): string {
    const key = body.toString('latin1');
    const settings = this.s.settings;
    if (LITERAL.test(key)) return `${key}\u0000${settings.fingerprint()}`;
    return NON_ASCII.test(key) ? `${key}\u0000${settings.clientEncoding()}` : key;
  }

  /**
   * pool_mode = transaction, a named Parse of a name the client has not closed: PostgreSQL
   * refuses it (42P05 prepared statement "x" already exists), and so does the server here,
   * in its words and with its skipping up to Sync, the transaction aborted: the statement
   * is prepared under the client's name (reply dropped) and again (the error reaches the
   * client). The copy left under the client's name is deallocated at the connection's next
   * checkout (backends.ts).
   */
  private parseExisting(name: string, body: Buffer, link: BackendLink): Verdict<BackendLink> {
    const b = this.s.backends;
    const dup = parseMessage(name, body);
    b.inPipeline(link);
    // (Noted at once: a Bind of the name may follow in this pipeline, see closeStray.)
    (link.conn.strays ??= new Set()).add(name);
    b.request(link, { kind: 'parse', mode: 'drop' }, dup);
    b.request(link, { kind: 'parse', mode: 'forward' }, dup);
    return DROP;
  }

  /**
   * pool_mode = transaction, no connection held: a named Parse of a statement a server
   * accepted before is answered by pgrelay without taking a connection (it is prepared
   * where a later Bind needs it). A client that prepares outside a transaction then does
   * not wait for the pool (pgbench -M prepared prepares synchronously, one client at a
   * time per thread, while others of its thread hold connections). False: not such a Parse.
   */
  parseIdle(name: string, sql: string, buf: Buffer, start: number, end: number): boolean {
    const s = this.s;
    if (name === '' || s.ctx.config().max_prepared_statements <= 0 || this.stmts.has(name)) return false;
    // Past the limits: `parse` ends the session.
    if (this.stmts.full(end - start + 5)) return false;
    const body = parseBody(buf.subarray(start - 5, end));
    const server = body && s.ctx.statementNames.known(this.statementKey(body));
    if (!body || server === undefined) return false;
    const cls = s.ctx.router.classify(sql);
    const d = this.route.decideNow(sql, cls);
    if (d === undefined) return false;
    s.pinFor(sql, cls);
    if (s.backends.pinned !== undefined) return false;
    const both = d.target === 'both';
    this.stmts.set(name, { sql, cls, parse: parseMessage(server, body), nodes: [], both, decision: d, server });
    s.writeClient(PARSE_COMPLETE);
    return true;
  }

  /** pool_mode = transaction, no connection held: Close of a client's statement, answered by pgrelay. */
  closeIdle(kind: number, name: string): boolean {
    if (kind !== STATEMENT || this.stmts.get(name)?.server === undefined) return false;
    this.stmts.delete(name);
    this.s.writeClient(CLOSE_COMPLETE);
    return true;
  }

  /**
   * pool_mode = transaction, a simple Query pgrelay answers or rewrites itself (undefined:
   * none): DEALLOCATE of a statement the client prepared with Parse acts on the client's
   * statements (pgrelay's copies on the connections stay for other clients).
   */
  pooledQuery(cls: Classification): Verdict<BackendLink> | undefined {
    if (cls.kind !== 'deallocate' || cls.name === undefined || cls.statementCount !== 1) return undefined;
    // In an aborted transaction the server refuses it (25P02) and the statement stays.
    if (this.s.routing.failed) return undefined;
    const st = this.stmts.get(cls.name);
    if (st?.server === undefined) return undefined;
    const s = this.s;
    const b = s.backends;
    const p = s.needPrimary();
    if (p === SUSPEND) return p;
    if (!b.gate(p)) return s.wait('replies');
    if (p.pending > 0) {
      b.flush(p);
      return s.wait('replies');
    }
    this.stmts.delete(cls.name);
    p.expect({
      kind: 'query',
      mode: 'synthetic',
      reply: Buffer.concat([commandComplete('DEALLOCATE'), readyForQuery(p.txStatus)]),
    });
    return DROP;
  }

  /**
   * The extended protocol: `DEALLOCATE name` of a statement the client prepared with Parse
   * (psycopg 3 deallocates so with libpq < 17) is answered by pgrelay, run by AdminReplies
   * (Parse, Bind, Describe, Execute answered in order, once nothing of the client's is
   * outstanding). pool_mode = transaction: the client's name goes, as pooledQuery does in
   * a simple Query (the connections have the statement under pgrelay's name only, the
   * server would answer 26000). Session mode (and transaction mode's statements under the
   * client's own name): a Close of it goes to every node it is parsed on (a read's is
   * parsed on its standby alone, where the primary would answer 26000), in the client's
   * pipeline. Undefined for any other statement, in an aborted transaction (the server
   * refuses it there, 25P02), and for a named Parse under a name the client has (the
   * server answers 42P05, see parsePooled).
   */
  ownDeallocate(stmtName: string, sql: string): AdminRequest | undefined {
    if (!DEALLOCATE.test(sql) || (stmtName !== '' && this.stmts.has(stmtName))) return undefined;
    const cls = this.s.ctx.router.classify(sql);
    const name = cls.name;
    if (cls.kind !== 'deallocate' || name === undefined || cls.statementCount !== 1) return undefined;
    const st = this.stmts.get(name);
    if (st === undefined || st.notParsed === true || this.s.routing.failed) return undefined;
    return {
      noRows: true,
      refusedWhenAborted: true,
      run: () => {
        const now = this.stmts.get(name);
        if (now === undefined)
          return Promise.resolve(
            errorResult(SQLSTATE.invalidSqlStatementName, `prepared statement "${name}" does not exist`),
          );
        this.stmts.delete(name);
        if (now.server === undefined) this.closeEverywhere(name, now);
        return Promise.resolve({ kind: 'command', tag: 'DEALLOCATE' });
      },
    };
  }

  /**
   * Statement `name` (`st`, under the client's name) is closed on every node it is parsed
   * on, inside the client's pipeline (its Sync goes there, with the primary's for the
   * transaction status); the replies are pgrelay's own.
   */
  private closeEverywhere(name: string, st: Stmt): void {
    const b = this.s.backends;
    const close = statementMessage(FE.Close, name);
    for (const id of st.nodes) {
      const l = b.get(id);
      if (l === undefined || !l.live) continue;
      b.request(l, { kind: 'close', mode: 'drop', skippable: true }, close);
      b.inPipeline(l);
    }
    if (b.primary !== undefined) b.inPipeline(b.primary);
  }

  /**
   * Session mode: `DEALLOCATE name` of a statement the client prepared with Parse (psycopg 3
   * deallocates so): the links it is parsed on, the primary's first if it is one of them
   * (a read's is parsed on its standby, where the primary would answer 26000); undefined
   * for any other statement.
   */
  deallocateLinks(cls: Classification): BackendLink[] | undefined {
    if (this.pooled || cls.kind !== 'deallocate' || cls.name === undefined || cls.statementCount !== 1)
      return undefined;
    const st = this.stmts.get(cls.name);
    if (st === undefined) return undefined;
    const b = this.s.backends;
    const links: BackendLink[] = [];
    for (const id of st.nodes) {
      const l = b.get(id);
      if (l === undefined) continue;
      if (l === b.primary) links.unshift(l);
      else links.push(l);
    }
    return links.length > 0 ? links : undefined;
  }

  /**
   * A statement completed without error: `DEALLOCATE ALL` and `DISCARD ALL` dropped every
   * prepared statement, `DEALLOCATE name` one (pool_mode = transaction answers that one
   * itself for a statement the client prepared with Parse: pooledQuery).
   */
  statementDone(cls: Classification): void {
    if (cls.kind === 'deallocate') {
      if (cls.name === undefined) this.forgetAll(false);
      else this.stmts.delete(cls.name);
    } else if (cls.kind === 'discard' && cls.resetsAll === true) this.forgetAll();
    else if (cls.multiDeallocatesAll !== undefined) this.deallocatedOnPrimary();
  }

  /**
   * DEALLOCATE ALL ran on the primary alone, among other statements of one Query: the
   * client has no statement left. Session mode: the other nodes' copies are deallocated
   * too (a later Parse of a name there would get 42P05). pool_mode = transaction: the
   * primary's connection lost pgrelay's statements (other connections keep theirs).
   */
  private deallocatedOnPrimary(): void {
    this.stmts.clear();
    const b = this.s.backends;
    const p = b.primary;
    if (this.pooled) {
      p?.conn.statements?.clear();
      if (p) p.conn.strays = undefined;
      return;
    }
    b.alsoElsewhere('DEALLOCATE ALL');
  }

  /** Queue `e` on `link` for the message being handled, which the scanner forwards. */
  private forward(link: BackendLink, e: LinkExpectation): BackendLink {
    return this.s.backends.send(link, e, this.s.routing.inTransaction);
  }

  parse(name: string, sql: string, buf: Buffer, start: number, end: number): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    if (this.awaitEarlier()) return this.awaitAnswers();
    if (name !== '' && !this.stmts.has(name) && this.closeInDoubt(name)) return this.awaitAnswers();
    if (name !== '' && !this.stmts.has(name) && this.stmts.full(end - start + 5)) return s.fail(tooManyStatements());
    const cls = s.ctx.router.classify(sql);
    const d = this.route.decide(sql, cls);
    if (d === SUSPEND) return d;
    if (this.pooled) {
      s.pinFor(sql, cls);
      // Not tracked (max_prepared_statements = 0): a named statement lives on the connection it is
      // prepared on, which the session then keeps (another client's statement of that name could be there).
      if (name !== '' && s.ctx.config().max_prepared_statements <= 0)
        s.pin('named statement, max_prepared_statements = 0');
    }
    const raw = buf.subarray(start - 5, end);
    if (this.pooled && name !== '' && s.ctx.config().max_prepared_statements > 0)
      return this.parsePooled(name, sql, cls, d, raw);
    const taken = name === '' ? undefined : this.stmts.get(name);
    if (taken?.unconfirmed === true && this.awaitsParse(taken)) return this.awaitAnswers();
    if (taken !== undefined) return this.parseTaken(name, taken, cls, raw);
    const prev = name === '' ? this.stmts.get('') : undefined;
    // Named statements outlive this chunk: keep a copy. The unnamed one is replaced soon
    // (but with pool_mode = transaction it may have to be parsed again on another connection).
    const parse = name === '' && !this.pooled ? raw : Buffer.from(raw);
    // pool_mode = transaction: an unnamed BEGIN READ ONLY (pgjdbc's way), and the COMMIT or
    // ROLLBACK of the read-only transaction it begins, run on the read node alone while the
    // session holds only that node's connection (session.ts aloneOnReadNode).
    const alone = name === '' && b.withoutPrimary ? s.readOnlyAlone(sql, cls, d) : undefined;
    if (d.target === 'both' && alone === undefined) {
      // Parsed on the primary and the load-balance node(s) held now; a later Bind parses it on
      // those it will be mirrored on then (the session may hold none now: its node is the primary).
      // (The primary's link first: pool_mode = transaction takes the read node's with it.)
      const p = s.needPrimary();
      if (p === SUSPEND) return p;
      const seconds = b.secondLinks(d.allStandbys === true, p);
      if (this.settingWaits(cls, seconds)) return SUSPEND;
      if (!b.gate(p)) return s.wait('replies');
      if (name !== '') {
        this.closeStray(p, name);
        for (const l of seconds) this.closeStray(l, name);
      }
      for (const second of seconds) this.mirrored(second, { kind: 'parse', mode: 'drop', skippable: true }, parse);
      b.inPipeline(p);
      const nodes = [p.nodeId, ...seconds.map((l) => l.nodeId)];
      const st: Stmt = {
        sql,
        cls,
        parse,
        nodes,
        both: true,
        decision: d,
        untracked: this.pooled && name !== '',
        replaces: this.closingStmts.get(name),
        prevUnnamed: prev,
        unconfirmed: true,
      };
      this.stmts.set(name, st);
      const had = p.conn.unnamed;
      this.markParsed(st, p);
      st.parsing = { link: p, syncs: p.replies.syncs };
      for (const second of seconds) this.markParsed(st, second);
      return this.forward(p, {
        kind: 'parse',
        mode: 'forward',
        done: (e) => {
          this.unnamedKept(st, e, p, had);
          this.parseAnswered(name, st, e, prev);
          // The primary's failed or was skipped, its copies may have run: the name stays free.
          if (e.error !== undefined && name !== '') for (const l of seconds) if (l.live) this.closeCopy(l, name);
        },
      });
    }
    const link = alone ?? this.route.linkFor(d);
    if (link === SUSPEND) return link;
    if (!b.gate(link)) return s.wait('replies');
    if (name !== '') this.closeStray(link, name);
    b.inPipeline(link);
    // Run alone for a read-only transaction, a statement for both nodes stays one for later Binds.
    const st: Stmt = {
      sql,
      cls,
      parse,
      nodes: [link.nodeId],
      both: alone !== undefined && d.target === 'both',
      decision: d,
      untracked: this.pooled && name !== '',
      replaces: this.closingStmts.get(name),
      prevUnnamed: prev,
      unconfirmed: true,
      parsing: { link, syncs: link.replies.syncs },
    };
    this.stmts.set(name, st);
    const had = link.conn.unnamed;
    this.markParsed(st, link);
    if (this.pooled) {
      return this.forward(link, {
        kind: 'parse',
        mode: 'forward',
        done: (e) => {
          if (e.error) this.notParsed(st, link);
          this.unnamedKept(st, e, link, had);
          this.parseAnswered(name, st, e, prev);
        },
        resend: this.route.resendable(link) ? this.resendParse(st) : undefined,
      });
    }
    return this.forward(link, {
      kind: 'parse',
      mode: 'forward',
      done: (e) => {
        this.unnamedKept(st, e, link, had);
        this.parseAnswered(name, st, e, prev);
      },
      resend: this.route.resendable(link) ? resendSame(b, parse, (to) => this.parsedHere(st, to)) : undefined,
    });
  }

  /**
   * A named Parse of a name the client has not closed (session mode, or a statement that
   * pgrelay does not rename): sent where that statement is parsed, whose server refuses it
   * (42P05 prepared statement "x" already exists) and keeps the statement, as a direct
   * connection does. (Sent where the router would send the new text, a node without the
   * name would accept it.)
   */
  private parseTaken(name: string, old: Stmt, cls: Classification, raw: Buffer): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    // In an aborted transaction PostgreSQL refuses the Parse (25P02) before it looks at the
    // name, unless it ends the transaction: the primary, aborted, answers so (the statement's
    // node may have no part in the transaction, when the primary has it alone).
    const refused = s.routing.failed && !endsOrRecovers(cls);
    let link = refused ? s.needPrimary() : (b.get(old.nodes[0]) ?? s.needPrimary());
    if (link === SUSPEND) return link;
    // Outside a transaction block, in a pipeline the primary takes part in (a write ran there):
    // refused on the primary, the statement parsed there first, so that the error rolls back the
    // primary's part of the pipeline as PostgreSQL rolls back all of it. In a transaction block
    // the primary takes part in, the same: its own abort undoes what the transaction SET there
    // and reports it before the ReadyForQuery, as PostgreSQL does (see refusedOnPrimary).
    const primary = b.primary;
    if (!refused && primary !== undefined && primary !== link && this.refusedOnPrimary(primary)) {
      if (!b.gate(primary)) return s.wait('replies');
      this.ensureParsed(old, primary);
      link = primary;
    }
    if (!b.gate(link)) return s.wait('replies');
    // No node has it now (lost with its node, dropped there by a copy of DEALLOCATE ALL the
    // primary skipped): parsed there first, so that the server refuses the name — but in an
    // aborted transaction (a Parse of ROLLBACK…) that Parse would be refused: pgrelay refuses
    // the name itself (the transaction is aborted already).
    if (!refused && old.nodes.length === 0) {
      if (s.routing.failed)
        return this.refuse(link, 'parse', {
          severity: 'ERROR',
          code: SQLSTATE.duplicatePreparedStatement,
          message: `prepared statement "${name}" already exists`,
        });
      this.ensureParsed(old, link);
    }
    b.inPipeline(link);
    const p = b.primary;
    if (p === undefined || !this.outside(link, p)) return this.forward(link, { kind: 'parse', mode: 'forward' });
    // The statement's node has no part in the client's transaction (the primary's alone): its
    // 42P05 aborts that transaction on the primary, as on a direct connection, before the
    // pipeline's Sync, which the primary answers too (its status is the client's).
    b.inPipeline(p);
    const done = (e: LinkExpectation): void => {
      if (e.error !== undefined) this.both.poisonPrimary();
    };
    b.request(link, { kind: 'parse', mode: 'forward', done }, raw);
    b.flush(link);
    return s.waitAfter('replies');
  }

  /**
   * Is the answer to `st`'s Parse still to come? Some request is outstanding on a link; if
   * none is (its link was lost and the Parse re-sent elsewhere under a new expectation), the
   * Parse counts as answered.
   */
  private awaitsParse(st: Stmt): boolean {
    if (this.s.backends.pendingTotal > 0) return true;
    st.unconfirmed = undefined;
    return false;
  }

  /**
   * Is a Close of statement `name` not answered yet? If an error before it makes the server
   * skip it, the statement stays (see closing): a Bind or Describe of the name waits for
   * that answer rather than take the statement for gone.
   */
  private closeUnanswered(name: string): boolean {
    return this.closingStmts.has(name) && this.s.backends.pendingTotal > 0;
  }

  /**
   * Is a Close of statement `name`, in an earlier pipeline, not answered yet? An error before
   * it there may make the server skip it: the statement is then still there, and a Parse of
   * the name is refused (42P05) — a Parse in the Close's own pipeline would be skipped too.
   */
  private closeInDoubt(name: string): boolean {
    const st = this.closingStmts.get(name);
    return st !== undefined && st.closedAt !== this.portals.syncs && this.s.backends.pendingTotal > 0;
  }

  /**
   * Is a Parse of `st` on a link (the client's, or pgrelay's: ensureParsed) not answered while
   * a Sync went there since? It may fail, or an error before it in its pipeline may make the
   * server skip it: a request of a later pipeline that needs the statement waits for that
   * answer (the statement is then gone, or parsed again where it was skipped; a second Parse of
   * a name that is there would be refused).
   */
  private parseInDoubt(st: Stmt | undefined): boolean {
    const p = st?.parsing;
    if (p === undefined || p.link.replies.syncs === p.syncs) return false;
    if (this.s.backends.pendingTotal > 0) return true;
    // (Nothing outstanding: its answer was lost with its link.)
    (st as Stmt).parsing = undefined;
    return false;
  }

  /**
   * A statement that drops prepared statements (and DISCARD ALL portals) is sent; `dropped`
   * when it is answered. Its effect on the client's names applies at its answer (statementDone),
   * not at the pipeline's Sync: a Parse of a name after it in the pipeline finds the name free.
   */
  dropping(): void {
    this.dropsUnanswered++;
  }

  dropped(): void {
    if (this.dropsUnanswered > 0) this.dropsUnanswered--;
  }

  /**
   * Is a Parse of a name the client has taken refused on the primary `p` rather than where the
   * statement lives? When the primary takes part in what the error aborts: the pipeline's
   * implicit transaction (a write, SET LOCAL or BEGIN ran there), or the transaction block.
   */
  private refusedOnPrimary(p: BackendLink): boolean {
    const r = this.s.routing;
    return r.inTransaction ? p.txStatus === TxStatus.InTransaction : p.inPipeline;
  }

  /**
   * Must the client's next message wait for the answer to an earlier pipeline (sent before it
   * was answered) that executed a transaction command? Where a message goes, and what it
   * finds there, depend on the transaction that pipeline left, which only its answer tells:
   * a BEGIN and a write, then a read (the read goes where the write is, on the primary); a
   * BEGIN and a failed write, then a read (25P02 from the primary); a BEGIN an error before it
   * made the primary skip, whose copy began a transaction on the load-balance node (rolled
   * back there first: the read runs outside a transaction, as on the primary). PostgreSQL
   * runs the next pipeline after the first on its one connection; pgrelay waits for the
   * answer before it sends the next, for such pipelines only.
   */
  awaitsTransactionCommand(): boolean {
    if (this.txCommandSyncs === 0) return false;
    if (this.s.backends.pendingTotal > 0) return true;
    // (Nothing outstanding: the answer was lost with its link.)
    this.txCommandSyncs = 0;
    return false;
  }

  private txCommandAnswered(): void {
    if (this.txCommandSyncs > 0) this.txCommandSyncs--;
  }

  /**
   * Is a statement earlier in the pipeline that changes how the server answers what follows
   * not answered yet? A statement that drops prepared statements (whether a name exists
   * depends on it), or, in an aborted transaction, a COMMIT, ROLLBACK or ROLLBACK TO (whether
   * the transaction is still aborted: pgrelay answers some requests itself then, 25P02). A
   * request that names a statement or portal waits for that answer (such a statement is
   * skipped after an error before it).
   */
  private awaitEarlier(): boolean {
    if (this.dropsUnanswered === 0 && (this.recoversUnanswered === 0 || !this.s.routing.failed)) return false;
    if (this.s.backends.pendingTotal > 0) return true;
    // (Nothing outstanding: the answers were lost with their link.)
    this.dropsUnanswered = 0;
    this.recoversUnanswered = 0;
    return false;
  }

  /**
   * A request whose meaning depends on the answer to an earlier one in the pipeline: a
   * named Parse of a name whose own Parse is not answered yet (whether the name is taken
   * depends on it: it is skipped after an error before it), a Bind or Describe of a name
   * whose Close is not answered yet. It waits for those answers (the servers flushed).
   */
  awaitAnswers(): typeof SUSPEND {
    const b = this.s.backends;
    for (const l of b.list) if (l !== undefined && l.pending > 0) b.flush(l);
    return this.s.wait('replies');
  }

  /**
   * The client's Parse of the unnamed statement `st` on `link` was skipped after an error
   * before it: the connection keeps the unnamed statement it had (`had`), as PostgreSQL does
   * (one that ran and failed had dropped it first).
   */
  private unnamedKept(st: Stmt, e: LinkExpectation, link: BackendLink, had: object | undefined): void {
    if (e.error === undefined || e.started === true || link.conn.unnamed !== st) return;
    // (Not one parsed before it in the pipeline whose Parse failed: nothing is left then.)
    link.conn.unnamed = (had as Partial<Stmt> | undefined)?.notParsed === true ? undefined : had;
  }

  /**
   * The client's Parse of `name` (`st`) was answered. If it failed, or was skipped after an
   * error earlier in its pipeline: as on a server, the name is not taken. A failed unnamed
   * Parse has dropped the previous unnamed statement; a skipped one (no reply of its own)
   * leaves it (`prev`, or before it the last one whose Parse ran).
   */
  private parseAnswered(name: string, st: Stmt, e: LinkExpectation, prev: Stmt | undefined): void {
    st.unconfirmed = undefined;
    st.parsing = undefined;
    if (e.error === undefined) {
      // The unnamed statement now: what it replaced no longer matters (no chain is kept).
      st.prevUnnamed = undefined;
      return;
    }
    st.notParsed = true;
    // It ran and failed: PostgreSQL dropped the unnamed statement before parsing this one.
    if (e.started === true) st.prevUnnamed = undefined;
    if (this.stmts.get(name) !== st) return;
    // Skipped: the unnamed statement is the last one whose Parse ran before it (none if
    // that one failed).
    const before = e.started === true ? undefined : lastParsed(prev);
    if (before !== undefined) this.stmts.set(name, before);
    // A statement of that name (the unnamed one too) closed just before in the pipeline, whose
    // Close was skipped too, stays.
    else if (st.replaces?.closeSkipped === true && e.started !== true) this.stmts.set(name, st.replaces);
    else this.stmts.delete(name);
  }

  /** Record that `st` is parsed on `to` (re-sent there) and that `to` is in the pipeline. */
  private parsedHere(st: Stmt, to: BackendLink): void {
    this.markParsed(st, to);
    this.s.backends.inPipeline(to);
  }

  /**
   * Make sure `portal` exists on `to` before a re-sent request that uses it (its Bind
   * went to a node that died after answering it).
   */
  private bindOn(portal: Portal, to: BackendLink): void {
    if (portal.stmt) this.parseOn(portal.stmt, to);
    if (portal.bind && !portal.nodes.includes(to.nodeId)) {
      this.s.backends.request(to, { kind: 'bind', mode: 'drop' }, portal.bind);
      portal.nodes = [to.nodeId];
    }
    this.s.backends.inPipeline(to);
  }

  /** Make sure `st` exists on `to` before a re-sent request that uses it. */
  private parseOn(st: Stmt, to: BackendLink): void {
    // pool_mode = transaction: what the connection has, not the node (ensureParsed).
    this.ensureParsed(st, to);
    this.s.backends.inPipeline(to);
  }

  bind(portal: string, stmtName: string, buf: Buffer, start: number, end: number): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    if (this.awaitEarlier()) return this.awaitAnswers();
    const st = this.stmts.get(stmtName);
    if (this.parseInDoubt(st)) return this.awaitAnswers();
    // The primary's link for a statement unknown here or run on both nodes; others go where the
    // router decides below (pool_mode = transaction: a batch that only reads on the load-balance
    // node holds only its link, see session.ts unitLink).
    // A read-only transaction on the read node alone runs its unnamed BEGIN, COMMIT… there (readOnlyAlone).
    const alone =
      st?.both === true && stmtName === '' && b.withoutPrimary && st.decision !== undefined
        ? s.readOnlyAlone(st.sql, st.cls, st.decision)
        : undefined;
    // A Close of the name not answered yet may be skipped after an error: it is then still there.
    if (!st && this.closeUnanswered(stmtName)) return this.awaitAnswers();
    // A named portal the client has: the server refuses the name (42P03), where that portal
    // is. Whether one bound earlier in the pipeline exists depends on its Bind's answer.
    const prior = this.portals.get(portal);
    if (portal !== '' && prior !== undefined && prior.confirmed !== true && b.pendingTotal > 0)
      return this.awaitAnswers();
    // (The unnamed portal the client has: it stays if the Bind is refused before it replaces it —
    // behind a Close of it on its way, what that Close leaves.)
    const taken = portal === '' ? (prior ?? this.afterClosing('')) : prior?.confirmed === true ? prior : undefined;
    const p = alone ?? (!st || st.both ? s.needPrimary() : s.unitLink());
    if (p === SUSPEND) return p;
    if (!st) {
      // Unknown here (SQL-level PREPARE, or a client error): the primary answers.
      if (!b.gate(p)) return s.wait('replies');
      if (stmtName === '') this.closeUnnamed(p);
      else this.closeStray(p, stmtName);
      b.inPipeline(p);
      const bound: Portal = { nodes: [p.nodeId], both: false };
      this.portals.set(portal, bound);
      return this.forward(p, { kind: 'bind', mode: 'forward', done: this.portalBound(portal, bound, taken) });
    }
    if (st.both && alone === undefined) {
      // A named portal the client has on one node: refused there (42P03), not bound anywhere else.
      const home = portal !== '' && taken !== undefined && !taken.both ? b.get(taken.nodes[0]) : undefined;
      if (taken !== undefined && home !== undefined)
        return this.bindTaken(portal, taken, home, st, stmtName, buf, start, end);
      // The load-balance node(s) held now (every standby held with statement_level_load_balance),
      // the statement parsed there first if it is not (it was parsed while the session held none,
      // or on another connection).
      // (None in a transaction the primary has alone, begun by a multi-statement Query: the
      // other nodes have no part in it, policy.ts txPrimaryAlone.)
      const seconds =
        s.routing.inTransaction && s.routing.txPrimaryAlone
          ? NO_LINKS
          : b.secondLinks(st.decision?.allStandbys === true, p);
      if (!b.gate(p)) return s.wait('replies');
      if (this.abortUnknown(st, p)) return this.awaitAnswers();
      if (this.refusedInAborted(st, stmtName, p, buf, start, end)) return DROP;
      const raw = buf.subarray(start - 5, end);
      const bind = st.server !== undefined ? renamedBind(raw, st.server) : raw;
      if (!bind) return s.protocolViolation('invalid Bind message');
      for (const second of seconds) {
        this.ensureParsed(st, second, true, true);
        // The copy replaces what the node has under the name, a portal of the client's there:
        // gone if the primary skips its own Bind (the client keeps that portal then).
        const replaced = taken !== undefined && !taken.both && taken.nodes[0] === second.nodeId ? taken : undefined;
        const e: LinkExpectation = { kind: 'bind', mode: 'drop', skippable: true };
        if (replaced !== undefined)
          e.done = (x) => {
            if (x.error === undefined) replaced.gone = true;
          };
        this.mirrored(second, e, bind);
      }
      b.inPipeline(p);
      const nodes = [p.nodeId, ...seconds.map((l) => l.nodeId)];
      const bound: Portal = { nodes, both: true, stmt: st };
      this.portals.set(portal, bound);
      this.ensureParsed(st, p);
      const done = this.portalBound(portal, bound, taken);
      if (st.server === undefined) return this.forward(p, { kind: 'bind', mode: 'forward', done });
      b.request(p, { kind: 'bind', mode: 'forward', renamed: { server: st.server, client: stmtName }, done }, bind);
      return DROP;
    }
    // Decide again with the session's current state: a statement parsed on the
    // standby is parsed again on the primary once the transaction has written (pgpool),
    // or once its parameters show it asks whether the server is a standby.
    const settingArgs =
      st.cls.settingParams.length > 0 ? bindParameterTexts(buf, start, end, st.cls.settingParams) : undefined;
    const pids = st.cls.pidParams.length > 0 ? bindParameterIntegers(buf, start, end, st.cls.pidParams) : undefined;
    const d = this.route.decide(st.sql, st.cls, settingArgs, pids?.length === 0 ? undefined : pids);
    if (d === SUSPEND) return d;
    st.decision = d;
    const routed =
      (stmtName === '' && b.withoutPrimary ? s.readOnlyAlone(st.sql, st.cls, d) : undefined) ?? this.route.linkFor(d);
    if (routed === SUSPEND) return routed;
    // In an aborted transaction the server answers the Bind itself (08P01 for a wrong
    // parameter count comes before 25P02): where the statement is, in that transaction too
    // (aborted there, or about to be: see both-nodes.ts), rather than parsed again where the
    // Parse would fail first (25P02).
    // A named portal the client has already: the server refuses the name (42P03) where it is.
    const home = portal !== '' && taken !== undefined && !taken.both ? b.get(taken.nodes[0]) : undefined;
    const link =
      home ||
      (s.routing.failed &&
        !this.parsedOn(st, routed) &&
        b.list.find((l) => l !== undefined && l.txStatus !== TxStatus.Idle && this.parsedOn(st, l))) ||
      routed;
    if (!b.gate(link)) return s.wait('replies');
    if (this.abortUnknown(st, link)) return this.awaitAnswers();
    if (this.refusedInAborted(st, stmtName, link, buf, start, end)) return DROP;
    if (link === home) this.failPrimaryPart(home);
    if (this.pooled && link === b.primary) s.guardSequenceState(st.cls);
    // pool_mode = transaction: was the statement there already (then the server may have lost it)?
    const believed = st.server !== undefined && this.parsedOn(st, link);
    // skippable: if this node dies first, a re-sent Bind parses again where it goes.
    this.ensureParsed(st, link, true);
    b.inPipeline(link);
    if (st.server !== undefined) {
      // pool_mode = transaction: the Bind names pgrelay's statement.
      const bind = renamedBind(buf.subarray(start - 5, end), st.server);
      if (!bind) return s.protocolViolation('invalid Bind message');
      const named: Portal = { nodes: [link.nodeId], both: false, stmt: st };
      this.portals.set(portal, named);
      const bindAnswered = this.portalBound(portal, named, taken);
      const server = st.server;
      b.request(
        link,
        {
          kind: 'bind',
          mode: 'forward',
          renamed: { server, client: stmtName },
          lostStatement: believed ? this.prepareAgain(st, link, bind) : undefined,
          done: (e, l) => {
            l.recording = undefined;
            bindAnswered?.(e);
            // Skipped after an error of another request: that error says nothing of this statement.
            if (e.started !== true) return;
            // Lost there behind pgrelay's back and not prepared again: the next Bind prepares it.
            if (e.error?.C === SQLSTATE.invalidSqlStatementName) l.conn.statements?.delete(server);
            // Its result type changed (a column added, a table replaced): PostgreSQL refuses it
            // from now on wherever it is prepared, and the client prepares it again, as on a
            // direct connection: under a new name of pgrelay's, prepared afresh.
            else if (st.named !== undefined && planChanged(e.error)) s.ctx.statementNames.retire(st.named);
          },
          // A read node's connection lost first: bound where the batch moves, parsed there if needed.
          resend: this.route.resendable(link)
            ? resendSame(b, bind, (to) => {
                this.parseOn(st, to);
                named.nodes = [to.nodeId];
              })
            : undefined,
        },
        bind,
      );
      return DROP;
    }
    const resendable = this.route.resendable(link);
    const raw = buf.subarray(start - 5, end);
    const bound: Portal = {
      nodes: [link.nodeId],
      both: false,
      stmt: st,
      bind: resendable ? raw : undefined,
    };
    this.portals.set(portal, bound);
    return this.forward(link, {
      kind: 'bind',
      mode: 'forward',
      done: this.portalBound(portal, bound, taken),
      resend: resendable
        ? resendSame(b, raw, (to) => {
            this.parseOn(st, to);
            bound.nodes = [to.nodeId];
          })
        : undefined,
    });
  }

  /**
   * An Execute, in a pipeline's implicit transaction where an Execute already ran on another
   * node, of a statement PostgreSQL refuses there (DISCARD ALL, VACUUM…: "cannot be executed
   * within a pipeline"): `target` has no Execute of this pipeline and would run it. pgrelay
   * refuses it as the server does (25001) once what came before is answered (an error there
   * skips it); undefined for any other statement.
   */
  private refusedInPipeline(st: Stmt, target: BackendLink): Verdict<BackendLink> | undefined {
    const type = refusalOf(st);
    if (type === null) return undefined;
    if (this.s.backends.pendingTotal > 0) return this.awaitAnswers();
    return this.refuse(target, 'execute', {
      severity: 'ERROR',
      code: SQLSTATE.activeSqlTransaction,
      message: `${type} cannot be executed within a pipeline`,
    });
  }

  /** pgrelay answers the client's request on `link` with `error`, as the server would, and skips to Sync as it does. */
  private refuse(link: BackendLink, kind: 'parse' | 'bind' | 'describe' | 'execute', error: ErrorFields): typeof DROP {
    this.s.backends.inPipeline(link);
    this.s.skipUntilSync();
    link.expect({ kind, mode: 'synthetic', reply: errorResponse(error) });
    return DROP;
  }

  /**
   * A Bind in an aborted transaction of a statement `link` has not parsed: a Parse there would
   * be refused (25P02) before the Bind's own checks. Where the server's answer to the Bind is
   * known (bindRefusal), pgrelay gives it, and skips to Sync as the server does (true).
   */
  private refusedInAborted(
    st: Stmt,
    stmtName: string,
    link: BackendLink,
    buf: Buffer,
    start: number,
    end: number,
  ): boolean {
    if (!this.s.routing.failed || this.parsedOn(st, link)) return false;
    const refusal = bindRefusal(st, stmtName, buf, start, end);
    if (refusal === undefined) return false;
    this.refuse(link, 'bind', refusal);
    return true;
  }

  /**
   * A request of this pipeline that `link` refuses (a Bind into a named portal the client has
   * there: 42P03), outside a transaction block, while the primary runs part of the pipeline:
   * PostgreSQL rolls the whole pipeline back, so the primary's part must fail too. A Parse it
   * refuses goes there first (its reply dropped; the client's error comes from `link`).
   */
  private failPrimaryPart(link: BackendLink): void {
    const s = this.s;
    const p = s.backends.primary;
    if (p === undefined || p === link || !p.inPipeline || s.routing.inTransaction) return;
    s.backends.request(p, { kind: 'parse', mode: 'drop' }, FAIL_PIPELINE);
  }

  /**
   * A Bind of a statement for both nodes into a named portal the client has (`taken`, on
   * `home`): sent there alone, where the server refuses the name (42P03).
   */
  private bindTaken(
    portal: string,
    taken: Portal,
    home: BackendLink,
    st: Stmt,
    stmtName: string,
    buf: Buffer,
    start: number,
    end: number,
  ): Verdict<BackendLink> {
    const b = this.s.backends;
    if (!b.gate(home)) return this.s.wait('replies');
    // (In an aborted transaction, a wrong parameter count comes first: 08P01.)
    if (this.abortUnknown(st, home)) return this.awaitAnswers();
    if (this.refusedInAborted(st, stmtName, home, buf, start, end)) return DROP;
    const raw = buf.subarray(start - 5, end);
    const bind = st.server !== undefined ? renamedBind(raw, st.server) : raw;
    if (!bind) return this.s.protocolViolation('invalid Bind message');
    this.failPrimaryPart(home);
    this.ensureParsed(st, home, true);
    b.inPipeline(home);
    const bound: Portal = { nodes: [home.nodeId], both: false, stmt: st };
    this.portals.set(portal, bound);
    b.request(
      home,
      {
        kind: 'bind',
        mode: 'forward',
        renamed: st.server === undefined ? undefined : { server: st.server, client: stmtName },
        done: this.portalBound(portal, bound, taken),
      },
      bind,
    );
    return DROP;
  }

  /**
   * The Bind of portal `name` (recorded as `bound`) is answered. A named portal: accepted, the
   * portal is confirmed; refused or skipped, the client has what it had (`taken`, a portal of
   * that name it had already: 42P03 — or none). The unnamed portal: the one the client had
   * (`taken`) stays when the Bind was skipped or refused before it replaced it (no such
   * statement, a wrong parameter count, an aborted transaction).
   */
  private portalBound(
    name: string,
    bound: Portal,
    taken: Portal | undefined,
  ): ((e: LinkExpectation) => void) | undefined {
    if (name === '') {
      // (Nothing to restore or forget: no closure per Bind on the hot path. In an aborted
      // transaction the client may have a failed portal pgrelay does not know: see below.)
      if (taken === undefined && !this.s.routing.failed) return undefined;
      return (e) => {
        if (e.error === undefined || !refusedBeforePortal(e)) return;
        bound.undone = { before: taken };
        // (What the client had: a Bind before this one in the pipeline may have been undone too.)
        const before = inPlaceOf(taken);
        if (this.portals.get('') !== bound) this.closedMeanwhile('', bound, before);
        else if (before !== undefined) this.portals.restore('', before);
        // None that pgrelay knows of (perhaps the failed portal of a Query: see failedQueryOn).
        else this.portals.delete('');
      };
    }
    return (e) => {
      if (e.error === undefined) bound.confirmed = true;
      else if (this.portals.get(name) !== bound) this.closedMeanwhile(name, bound, taken);
      else if (taken !== undefined) this.portals.restore(name, taken);
      else this.portals.delete(name);
    };
  }

  /**
   * A Bind of portal `name` into `bound` was refused or skipped, and a Close of the name sent
   * after it is on its way: the server has what the client had before (`taken`, or none)
   * when that Close reaches it, and keeps it if the Close is skipped.
   */
  private closedMeanwhile(name: string, bound: Portal, taken: Portal | undefined): void {
    const closing = this.closingPortals.get(name);
    if (closing?.portal === bound) closing.portal = taken;
  }

  /**
   * pool_mode = transaction, a Bind of a statement the connection has: if the server lost it
   * (26000: DEALLOCATE ALL or DISCARD ALL run there by a function, a reset), how to run
   * the batch again with the statement prepared first. Only when the Bind starts its batch
   * on a connection outside a transaction (nothing else is undone by the error); what is
   * written to the connection after the Bind is recorded until its reply (replies.ts checks
   * that it is the batch's Describe/Execute and Sync); undefined otherwise.
   */
  private prepareAgain(st: Stmt, link: BackendLink, bind: Buffer): LinkExpectation['lostStatement'] {
    if (link.txStatus !== TxStatus.Idle || link.portalsInBatch) return undefined;
    const recorded: Buffer[] = [];
    link.recording = recorded;
    return {
      resend: () => {
        link.recording = undefined;
        this.s.debug(
          { node: link.nodeId, statement: st.server },
          'prepared statement lost on the server: prepared again',
        );
        link.write(Buffer.concat([st.parse, bind, ...recorded]));
        // Recorded as parsed now (after what dropped it there: see copiesRanAlone).
        this.markParsed(st, link);
      },
    };
  }

  describe(kind: number, name: string, buf: Buffer, start: number, end: number): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    if (this.awaitEarlier()) return this.awaitAnswers();
    const stmt = kind === STATEMENT ? this.stmts.get(name) : undefined;
    if (kind === STATEMENT && !stmt && this.closeUnanswered(name)) return this.awaitAnswers();
    if (this.parseInDoubt(stmt)) return this.awaitAnswers();
    const portal = kind === STATEMENT ? undefined : this.portals.get(name);
    // (A statement for both nodes too: the primary's link, but in a read-only transaction on the
    // read node alone that node's — the primary has no part in it, taking it would draw it in.)
    const p = portal?.both ? s.needPrimary() : s.unitLink();
    if (p === SUSPEND) return p;
    let link: BackendLink;
    if (portal) {
      if (this.lostWithTransaction(portal, p)) return this.describedLost(portal, p);
      const home = this.portalHome(portal, p);
      if (!home) return this.lost(name, portal);
      link = home;
    } else if (this.pooled && stmt) {
      // pool_mode = transaction: where it is parsed among the links held, else the primary (parsed
      // there first); not a node with no part in the client's transaction (see below).
      link = (!stmt.both && b.list.find((l) => l !== undefined && this.parsedOn(stmt, l) && !this.outside(l, p))) || p;
      if (!b.gate(link)) return s.wait('replies');
      if (this.abortUnknown(stmt, link)) return this.awaitAnswers();
      if (this.describedInAborted(stmt, link)) return DROP;
      this.ensureParsed(stmt, link);
      b.inPipeline(link);
      if (stmt.server !== undefined) {
        b.request(
          link,
          { kind: 'describe', mode: 'forward', renamed: { server: stmt.server, client: name } },
          statementMessage(FE.Describe, stmt.server),
        );
        return DROP;
      }
      return this.forward(link, { kind: 'describe', mode: 'forward' });
    } else {
      // A statement for both nodes is described by the primary; others where last parsed, unless
      // that node has no part in the client's transaction (the primary's alone): its answer,
      // and its ReadyForQuery, would be outside it.
      link = (stmt && !stmt.both && b.get(stmt.nodes[stmt.nodes.length - 1])) || p;
      if (this.outside(link, p)) link = p;
      if (kind !== STATEMENT && name === '') link = this.failedQueryPortal() ?? link;
    }
    if (!b.gate(link)) return s.wait('replies');
    if (stmt && this.abortUnknown(stmt, link)) return this.awaitAnswers();
    if (stmt && this.describedInAborted(stmt, link)) return DROP;
    // An unnamed statement a Query dropped there since is parsed again.
    if (stmt) this.ensureParsed(stmt, link);
    else if (kind === STATEMENT && name === '') this.closeUnnamed(link);
    else if (kind === STATEMENT) this.closeStray(link, name);
    else if (!portal && name === '' && this.mayCloseUnnamedPortal()) this.closeUnnamedPortal(link);
    b.inPipeline(link);
    return this.forward(link, {
      kind: 'describe',
      mode: 'forward',
      resend:
        this.route.resendable(link) && !portal?.executed
          ? resendSame(b, buf.subarray(start - 5, end), (to) => {
              if (stmt) this.parseOn(stmt, to);
              else if (portal) this.bindOn(portal, to);
              else b.inPipeline(to);
            })
          : undefined,
    });
  }

  /**
   * `st` must be parsed on `link` first, in a transaction block, behind a pipeline there not
   * answered yet: an error of that pipeline may have aborted the transaction, which changes
   * the answer (the server refuses pgrelay's Parse: see refusedInAborted, describedInAborted).
   * Known once that pipeline is answered.
   */
  private abortUnknown(st: Stmt, link: BackendLink): boolean {
    return this.abortPending(link) && !this.parsedOn(st, link);
  }

  /** In a transaction block not known to be aborted, behind a pipeline `link` has not answered. */
  private abortPending(link: BackendLink): boolean {
    const r = this.s.routing;
    return r.inTransaction && !r.failed && link.replies.readyOwed;
  }

  /**
   * A Describe of `st` in an aborted transaction, on `link` that has not parsed it: pgrelay's
   * Parse there would be refused (25P02), where PostgreSQL describes the statement the
   * client has. When the answer is known (abortedDescription), pgrelay gives it (true).
   */
  private describedInAborted(st: Stmt, link: BackendLink): boolean {
    if (!this.s.routing.failed || this.parsedOn(st, link)) return false;
    const reply = abortedDescription(st);
    if (reply === undefined) return false;
    this.s.backends.inPipeline(link);
    link.expect({ kind: 'describe', mode: 'synthetic', reply });
    return true;
  }

  /**
   * The link a portal lives on. When its node went away since its Bind, it is bound
   * again on the primary if no row of it was read yet; otherwise it is lost (undefined).
   */
  private portalHome(portal: Portal, p: BackendLink): BackendLink | undefined {
    if (portal.both) return p;
    const l = this.s.backends.get(portal.nodes[0]);
    if (l) return l;
    if (portal.executed || !portal.bind) return undefined;
    this.bindOn(portal, p);
    return p;
  }

  /**
   * Is `l` (not `p`, the unit's link) a node with no part in the client's transaction (one the
   * primary has alone: a multi-statement query began it)? A request there is answered
   * outside it, with a ReadyForQuery that says idle.
   */
  private outside(l: BackendLink, p: BackendLink): boolean {
    return l !== p && this.s.routing.inTransaction && l.txStatus === TxStatus.Idle;
  }

  /**
   * In the client's aborted transaction, a portal on a node whose transaction ended without
   * the primary's (a copy of COMMIT or ROLLBACK ran there where the primary skipped its own:
   * BothNodes.endedWithoutPrimary), or that a copy of a Bind replaced there (Portal.gone):
   * the server dropped it, the client still has it. pgrelay answers its Describe and Execute
   * as PostgreSQL does in an aborted transaction.
   */
  private lostWithTransaction(portal: Portal, p: BackendLink): boolean {
    if (portal.both || !this.s.routing.failed) return false;
    if (portal.gone === true) return true;
    const l = this.s.backends.get(portal.nodes[0]);
    return l !== undefined && this.outside(l, p);
  }

  /** Describe of such a portal: 25P02 when it returns rows (a catalog lookup), else NoData. */
  private describedLost(portal: Portal, p: BackendLink): Verdict<BackendLink> {
    const b = this.s.backends;
    if (!b.gate(p)) return this.s.wait('replies');
    const st = portal.stmt;
    if (st === undefined || !returnsNoRows(st.sql, st.cls)) return this.refuse(p, 'describe', IN_FAILED_TRANSACTION);
    b.inPipeline(p);
    p.expect({ kind: 'describe', mode: 'synthetic', reply: NO_DATA });
    return DROP;
  }

  /** A portal whose node went away with rows of it already read: the session cannot go on. */
  private lost(name: string, portal: Portal): typeof DROP {
    return this.s.fail(
      new PgError(
        SQLSTATE.connectionFailure,
        `portal "${name}" was on backend node ${portal.nodes[0]}, which went away while it was being read`,
        'FATAL',
        'Reconnect and run the query again.',
      ),
    );
  }

  execute(portalName: string, buf: Buffer, start: number, end: number): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    const portal = this.portals.get(portalName);
    // (A portal pgrelay does not know — a cursor DECLAREd in SQL, or none — too: the primary's
    // link, but in a read-only transaction on the read node alone that node's.)
    const p = portal?.both ? s.needPrimary() : s.unitLink();
    if (p === SUSPEND) return p;
    const stCls = portal?.stmt?.cls;
    if (
      portal !== undefined &&
      this.lostWithTransaction(portal, p) &&
      (stCls === undefined || !endsOrRecovers(stCls))
    ) {
      if (!b.gate(p)) return s.wait('replies');
      return this.refuse(p, 'execute', IN_FAILED_TRANSACTION);
    }
    const home = portal && this.portalHome(portal, p);
    if (portal && !home) return this.lost(portalName, portal);
    const target = home ?? (portalName === '' ? this.failedQueryPortal() : undefined) ?? p;
    if (!b.gate(target)) return s.wait('replies');
    const st = portal?.stmt;
    if (st?.cls.tx !== undefined) this.pipelineTxCommand = true;
    if (portal !== undefined && st !== undefined && !s.routing.inTransaction) {
      if (this.executedOn.length > 0 && !this.pipelineTx && !this.executedOn.includes(target.nodeId)) {
        const refused = this.refusedInPipeline(st, target);
        if (refused !== undefined) return refused;
      }
      if (st.cls.tx !== undefined) this.pipelineTx = true;
      else for (const id of portal.nodes) if (!this.executedOn.includes(id)) this.executedOn.push(id);
    }
    if (portal === undefined && portalName === '' && this.mayCloseUnnamedPortal()) this.closeUnnamedPortal(target);
    // A COMMIT or ROLLBACK, DEALLOCATE ALL or DISCARD ALL, SET or RESET for both nodes: whether
    // a copy runs where the primary skips its own (see copiesRanAlone).
    const bothCls = portal?.both === true ? portal.stmt?.cls : undefined;
    const ending = bothCls !== undefined && copyMatters(bothCls) ? this.copiedRun(bothCls) : undefined;
    if (portal?.both) {
      for (const id of portal.nodes.slice(1)) {
        const second = b.get(id);
        if (!second) continue;
        const mark = this.pooled ? (second.conn.statements?.mark ?? 0) : this.parseSeq;
        this.mirrored(
          second,
          {
            kind: 'execute',
            mode: 'drop',
            skippable: true,
            done:
              ending &&
              ((x) => {
                if (x.error !== undefined) return;
                ending.copies.push(second);
                ending.marks.push(mark);
              }),
          },
          buf.subarray(start - 5, end),
        );
        if (portal.stmt !== undefined) this.route.counted(second, portal.stmt.sql, portal.stmt.cls);
      }
    }
    b.inPipeline(target);
    const firstRun = portal !== undefined && portal.executed !== true;
    // A statement run on both nodes (SET, BEGIN…) changes session state, not data.
    if (target === b.primary && !portal?.both && (portal?.stmt?.decision?.write ?? true)) {
      this.route.ryw.wrote();
      s.routing.pipelineWrote = true;
    }
    this.route.ryw.executed(portal?.stmt?.cls);
    if (portal) portal.executed = true;
    let outcome: PendingOutcome | undefined;
    if (st?.decision) {
      outcome = this.outcomes.add(st, st.decision, target.txStatus);
      this.route.counted(target, st.sql, st.cls);
    }
    const entry = outcome;
    // DEALLOCATE, DISCARD ALL: the client's names change at its answer (see dropping).
    const drops = st !== undefined && dropsStatements(st.cls) ? st.cls : undefined;
    if (drops) this.dropping();
    // COMMIT, ROLLBACK, ROLLBACK TO in an aborted transaction: not aborted from its answer on.
    const recovers = st !== undefined && s.routing.failed && endsOrRecovers(st.cls);
    if (recovers) this.recoversUnanswered++;
    // The end of a read-only transaction on the read node alone: what follows in the pipeline
    // runs outside it (a statement that needs the primary takes it without joining it).
    const endsReadOnly = b.readOnlyTx && target !== b.primary && endsTransaction(st?.cls) && st?.cls.chain !== true;
    const e: LinkExpectation = {
      kind: 'execute',
      mode: 'forward',
      done:
        entry || ending || drops || recovers || endsReadOnly
          ? (x) => {
              if (drops) this.dropped();
              if (recovers && this.recoversUnanswered > 0) this.recoversUnanswered--;
              if (x.error) return;
              if (entry) entry.ok = true;
              if (ending) ending.primaryRan = true;
              if (drops) this.statementDone(drops);
              if (recovers) s.routing.failed = false;
              if (endsReadOnly) b.endReadOnlyTx();
            }
          : undefined,
      resend:
        portal && firstRun && !portal.both && this.route.resendable(target)
          ? resendSame(b, buf.subarray(start - 5, end), (to) => this.bindOn(portal, to))
          : undefined,
    };
    if (st !== undefined && endsImplicitTransaction(st)) (this.endingRuns ??= []).push(e);
    // RESET ALL and the like: the client's start-up settings are set again behind the Sync.
    const restore = st && b.restoreFor(st.cls);
    if (restore !== undefined) this.restore = mergeRestores(this.restore, restore);
    // A SET of one of them behind it in the pipeline: that value lasts, not the start-up one.
    else if (this.restore !== undefined && st?.cls.settingName !== undefined && st.cls.settingScope === undefined) {
      const name = st.cls.settingName;
      const startup = this.restore.reportAs.get(name);
      if (startup !== undefined) (this.withdrawn ??= new Map()).set(name, startup);
      this.restore = restoreWithout(this.restore, name);
    }
    return this.forward(target, e);
  }

  close(kind: number, name: string, buf: Buffer, start: number, end: number): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    if (this.awaitEarlier()) return this.awaitAnswers();
    const map: Map<string, Stmt | Portal> = kind === STATEMENT ? this.stmts : this.portals;
    const p = s.unitLink();
    if (p === SUSPEND) return p;
    if (kind === STATEMENT && this.pooled && this.stmts.get(name)?.server !== undefined) {
      // pool_mode = transaction: the client's name goes; pgrelay's statement stays on the connections.
      if (!b.gate(p)) return s.wait('replies');
      const done = this.closing(name);
      b.inPipeline(p);
      p.expect({ kind: 'close', mode: 'synthetic', reply: CLOSE_COMPLETE, done });
      return DROP;
    }
    const links: BackendLink[] = [];
    for (const id of map.get(name)?.nodes ?? [p.nodeId]) {
      const l = b.get(id);
      if (l) links.push(l);
    }
    const first = links[0] ?? p;
    if (!b.gate(first)) return s.wait('replies');
    const st = kind === STATEMENT ? this.stmts.get(name) : undefined;
    const done = kind === STATEMENT ? this.closing(name) : this.closingPortal(name);
    map.delete(name);
    const raw = buf.subarray(start - 5, end);
    // A copy that ran is gone there even if the first node skips its Close (an error before
    // it there) and the statement stays the client's: a later use parses it there again.
    const closedCopy =
      st === undefined
        ? undefined
        : (l: BackendLink) => (e: LinkExpectation) => {
            if (e.error === undefined) this.notParsed(st, l);
          };
    for (const l of links.slice(1)) {
      b.request(l, { kind: 'close', mode: 'drop', skippable: true, done: closedCopy?.(l) }, raw);
      b.inPipeline(l);
    }
    b.inPipeline(first);
    return this.forward(first, {
      kind: 'close',
      mode: 'forward',
      done,
      resend:
        links.length <= 1 && this.route.resendable(first) ? resendSame(b, raw, (to) => b.inPipeline(to)) : undefined,
    });
  }

  /**
   * The client's Close of statement `name`: it leaves the client's table now (a Parse of the
   * name may follow in the same pipeline); the callback of the Close's reply puts it back if
   * the server skipped the Close after an error before it, as the server keeps it then.
   */
  private closing(name: string): ((e: LinkExpectation) => void) | undefined {
    const st = this.stmts.get(name);
    this.stmts.delete(name);
    if (st === undefined) return undefined;
    // (What it replaced no longer matters: no chain of closed statements is kept. Nor does
    // an earlier Close of it that was skipped: this one may run.)
    st.replaces = undefined;
    st.closeSkipped = undefined;
    st.closedAt = this.portals.syncs;
    this.closingStmts.set(name, st);
    return (e) => {
      if (this.closingStmts.get(name) === st) this.closingStmts.delete(name);
      if (e.error === undefined || e.started === true) return;
      // A statement whose own Parse failed or was skipped before it never was; the unnamed
      // statement is then the last one whose Parse ran before it (none if that one failed).
      const kept = name === '' ? lastParsed(st) : st.notParsed === true ? undefined : st;
      if (kept === undefined) return;
      kept.closeSkipped = true;
      if (!this.stmts.has(name)) this.stmts.set(name, kept);
    };
  }

  /**
   * The client's Close of portal `name`: it leaves the client's table now; the callback of
   * the Close's reply puts back what the server had under the name if it skipped the Close
   * after an error before it (a Bind refused before it replaced that portal: the one before).
   */
  private closingPortal(name: string): ((e: LinkExpectation) => void) | undefined {
    const portal = this.portals.get(name);
    if (portal === undefined) return undefined;
    const closing: ClosingPortal = { portal };
    this.closingPortals.set(name, closing);
    return (e) => {
      if (this.closingPortals.get(name) === closing) this.closingPortals.delete(name);
      const skipped = e.error !== undefined && e.started !== true;
      if (closing.after !== undefined) closing.after.undone = { before: skipped ? closing.portal : undefined };
      if (!skipped || closing.portal === undefined) return;
      if (!this.portals.has(name)) this.portals.restore(name, closing.portal);
    };
  }

  /**
   * For a Bind of portal `name` sent behind a Close of it not answered yet: a placeholder for
   * what that Close leaves the client (see ClosingPortal.after), or undefined when none is on
   * its way.
   */
  private afterClosing(name: string): Portal | undefined {
    // (Nothing to look up for nearly every Bind.)
    if (this.closingPortals.size === 0) return undefined;
    const closing = this.closingPortals.get(name);
    if (closing === undefined) return undefined;
    closing.after ??= { nodes: [], both: false, undone: { before: closing.portal } };
    return closing.after;
  }

  sync(): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    const all = b.list;
    // PostgreSQL ignores Sync (and Flush) in copy-in mode: pass it on, expect nothing.
    for (const l of all) if (l?.copyIn) return l;
    const primary = s.unitLink();
    if (primary === SUSPEND) return primary;
    const members: BackendLink[] = [];
    for (const l of all) if (l?.inPipeline) members.push(l);
    if (members.length === 0) members.push(primary);
    // Only nodes with no part in the client's transaction (the primary's alone: a Close or
    // Describe of what lives on a standby) would say "idle": the primary answers the Sync too.
    else if (s.routing.inTransaction && !members.includes(primary) && members.every((l) => this.outside(l, primary)))
      members.push(primary);
    // Links outside this pipeline that still owe the client a reply come first.
    for (const l of all) {
      if (l && !members.includes(l) && l.visible > 0) {
        b.flush(l);
        return s.wait('replies');
      }
    }
    s.routing.pipelineWrote = false;
    this.executedOn.length = 0;
    this.pipelineTx = false;
    // Counted until its answer (awaitsTransactionCommand).
    const txCommand = this.pipelineTxCommand;
    if (txCommand) this.txCommandSyncs++;
    this.pipelineTxCommand = false;
    const outcomes = this.outcomes.take();
    const copiedRuns = this.copiedRuns;
    this.copiedRuns = undefined;
    const sync = ++this.portals.syncs;
    const restore = this.restore;
    this.restore = undefined;
    const withdrawn = this.withdrawn;
    this.withdrawn = undefined;
    const mirror = this.mirror;
    this.mirror = undefined;
    const endingRuns = this.endingRuns;
    this.endingRuns = undefined;
    this.route.ryw.syncEnds(members);
    for (const l of members) {
      l.inPipeline = false;
      l.needsFlush = false;
    }
    if (members.length === 1) {
      const l = members[0];
      const e: LinkExpectation = {
        kind: 'sync',
        mode: 'forward',
        done: (x, at) => {
          if (txCommand) this.txCommandAnswered();
          this.pipelineDone(
            outcomes,
            x.status ?? TxStatus.Idle,
            at,
            sync,
            restore,
            x.afterError === true ? [at] : NO_LINKS,
            NO_LINKS,
          );
        },
        resend: this.route.resendable(l) ? resendSync(b) : undefined,
        reportAsAfterError: withdrawn,
      };
      if (restore === undefined) return this.forward(l, e);
      // PostgreSQL reports changed settings just before ReadyForQuery.
      return b.sendRestoring(l, e, SYNC, s.routing.inTransaction, restore);
    }
    // The pipeline spans nodes: one ReadyForQuery for the client once every node answered.
    const merged = new MergedReady(members.length, mirror, endingRuns);
    let ended = false;
    let failed: BackendLink[] | undefined;
    for (const l of members) {
      b.request(
        l,
        {
          kind: 'sync',
          mode: 'merge',
          reportsToClient: l === primary,
          // PostgreSQL reports changed settings just before ReadyForQuery.
          reportAs: restore?.reportAs,
          reportAsAfterError: withdrawn,
          // A standby's connection lost before answering: its reads are re-sent to the primary
          // behind the primary's part, and this Sync with them (its ReadyForQuery merged as before).
          resend: l !== primary && this.route.resendable(l) ? resendSync(b) : undefined,
          merged,
          done: (x) => {
            if (x.afterError === true) (failed ??= []).push(l);
            if (ended || !merged.complete) return;
            ended = true;
            if (txCommand) this.txCommandAnswered();
            this.pipelineDone(outcomes, merged.status, undefined, sync, restore, failed ?? NO_LINKS, members);
            if (copiedRuns !== undefined) this.copiesRanAlone(copiedRuns);
            if (mirror !== undefined) this.mirrorFailed(mirror, merged, outcomes);
            if (merged.withPrimary && merged.primaryStatus === TxStatus.Idle) this.both.rollbackStrays(members);
          },
        },
        SYNC,
      );
      if (restore !== undefined) b.restoreStartup(l, restore);
    }
    return DROP;
  }

  /**
   * A SET of a pipeline that failed elsewhere (so does not last) committed on `links`: the
   * primary's settings are set again to the session's, now; a standby's connection is reset
   * before its next use (pool_mode = transaction; now when the session is pinned to it) or no
   * longer read until DISCARD ALL (session mode: its settings are not the session's).
   */
  private setsKeptOn(links: readonly BackendLink[]): void {
    const b = this.s.backends;
    for (const l of links) {
      if (l === b.primary) {
        // The primary: its settings are the session's again now (RESET ALL and the session's
        // SETs, replies dropped) — pool_mode = transaction too: a pinned session keeps the
        // connection, which no checkout would reset.
        this.s.log.debug(
          { node: l.nodeId },
          'a SET of a pipeline that failed on another node is undone on the primary',
        );
        b.resetSettingsOn(l);
      } else if (this.pooled && b.pinned === undefined) b.settingsUnknownOn(l);
      // A session pinned to its connections keeps this one (no checkout resets it): set again now.
      else if (this.pooled) b.resetSettingsOn(l);
      else
        this.route.settingsDiverged(
          l,
          {},
          'a SET of a pipeline that failed on another node lasted on the load-balance node',
        );
    }
  }

  /**
   * Copies of statements for both nodes ran on other nodes where the primary skipped its own
   * (an error before it there, which the client saw: PostgreSQL skipped the statement).
   * - COMMIT or ROLLBACK: see BothNodes.endedWithoutPrimary.
   * - DEALLOCATE ALL or DISCARD ALL: the client keeps its statements, which those connections
   *   no longer have. Session mode: a later use parses them there again. pool_mode =
   *   transaction: the connections lost pgrelay's statements.
   * - SET, RESET, DISCARD ALL: the node's settings are no longer the session's (session mode:
   *   its reads go to the primary until DISCARD ALL; pool_mode = transaction: the connection
   *   is reset before its next use).
   */
  private copiesRanAlone(runs: readonly CopiedRun[]): void {
    const ended = copiesAlone(runs, endsTransaction);
    if (ended !== undefined) this.both.endedWithoutPrimary(ended);
    for (const r of runs) {
      if (r.primaryRan || !dropsStatements(r.cls)) continue;
      r.copies.forEach((l, i) => {
        if (!this.pooled) this.forgetNode(l.nodeId, r.marks[i]);
        else {
          // (Not what pgrelay parsed there after it: the pipeline went on meanwhile.)
          l.conn.statements?.dropUpTo(r.marks[i]);
          l.conn.strays = undefined;
        }
      });
    }
    for (const l of copiesAlone(runs, changesSettings) ?? NO_LINKS)
      this.route.settingsDiverged(l, {}, 'a SET the primary skipped after an error ran on the load-balance node');
  }

  /** A statement for both nodes executed in this pipeline that a copy may run alone (CopiedRun): its outcome, filled in by the replies. */
  private copiedRun(cls: Classification): CopiedRun {
    const e: CopiedRun = { cls, copies: [], marks: [], primaryRan: false };
    (this.copiedRuns ??= []).push(e);
    return e;
  }

  /** The pipeline's Sync was answered: routing state from its statements; keep nodes' transactions in step. */
  private pipelineDone(
    outcomes: PendingOutcome[],
    status: number,
    only: BackendLink | undefined,
    sync: number,
    restore: StartupRestore | undefined,
    /** The members whose part of the pipeline had an error the client saw. */
    failed: readonly BackendLink[],
    /** All members (none given for a pipeline on one node: no other part can have committed). */
    members: readonly BackendLink[],
  ): void {
    // The client left before this reply ended: nothing of the session's state to update.
    if (this.s.closed) return;
    // An error outside a transaction block rolls the pipeline's implicit transaction back
    // (PostgreSQL: all of it): its SETs do not last. A node whose part had no error (a
    // pipeline across nodes) committed them there (setsKeptOn).
    // A statement that ended the implicit transaction (COMMIT, DISCARD ALL…) committed what ran
    // up to it: what ran after the last such one is rolled back.
    let from = 0;
    for (let i = 0; i < outcomes.length; i++) if (endedImplicitTransaction(outcomes[i])) from = i + 1;
    const rolledBack = implicitlyRolledBack(failed.length > 0, status, false);
    let sets = false;
    if (rolledBack)
      for (let i = from; i < outcomes.length; i++) {
        const o = outcomes[i];
        if (o.stmt.cls.kind === 'set' || o.stmt.cls.kind === 'reset') {
          sets ||= o.ok;
          o.ok = false;
        }
      }
    for (const o of outcomes) this.applyOutcome(o, status);
    if (sets) this.setsKeptOn(members.filter((l) => !failed.includes(l)));
    // The start-up settings were set again behind a statement that did not run (an error
    // skipped it): what the connections have is not known.
    if (restore !== undefined && outcomes.some((o) => !o.ok)) this.s.backends.settingsUnknown();
    // Behind a DISCARD ALL, inside the transaction the pipeline began after it: see restoredInTx.
    const at = only ?? this.s.backends.primary;
    if (restore !== undefined && status !== TxStatus.Idle && at !== undefined && outcomes.some(discardedAll))
      this.s.backends.restoreInTransaction(restore.reportAs, at);
    this.route.txStatusIs(status);
    if (status === TxStatus.Idle) this.portals.endedAt(sync);
    if (status === TxStatus.Failed) this.both.transactionFailedOn(only);
  }

  /**
   * A copy of a statement for both nodes failed on another node in a pipeline the primary
   * ran (the copies' replies are dropped). In a transaction the primary's goes on: the client
   * was given that error (MergedReady) and the primary's transaction is aborted, as the simple
   * protocol's statements do (both-nodes.ts). Outside one, the primary's results stand: if
   * none failed, that node lacks what they set (routing.ts settingsDiverged).
   */
  private mirrorFailed(mirror: MirrorCopies, merged: MergedReady, outcomes: readonly PendingOutcome[]): void {
    const failed = firstMirrorError(mirror);
    if (failed === undefined) return;
    const { error, nodeId } = failed;
    const link = this.s.backends.get(nodeId);
    if (merged.mirrorFailedInTransaction !== undefined) {
      this.s.log.warn({ node: nodeId, code: error.C, err: error.M }, 'statement failed on the load-balance node only');
      this.both.poisonPrimary();
      this.s.settings.transactionAborted();
    } else if (merged.primaryStatus === TxStatus.Idle && link !== undefined && outcomes.every((o) => o.ok))
      this.route.settingsDiverged(link, error);
  }

  private applyOutcome(o: PendingOutcome, status: number): void {
    this.route.outcome(o.stmt.cls, o.decision, o.ok, status);
    if (o.decision.target === 'both' || this.pooled) this.s.settings.record(o.stmt.sql, o.stmt.cls, o.ok, status);
    // (What drops statements did so at its answer: see execute.)
    if (o.ok && !dropsStatements(o.stmt.cls)) this.statementDone(o.stmt.cls);
  }

  flush(): Verdict<BackendLink> {
    const s = this.s;
    const b = s.backends;
    const p = s.unitLink();
    if (p === SUSPEND) return p;
    let any = false;
    for (const l of b.list) {
      if (l?.inPipeline) {
        b.flush(l);
        any = true;
      }
    }
    if (!any) b.write(p, FLUSH);
    return DROP;
  }

  /** DEALLOCATE ALL / DISCARD ALL dropped every prepared statement (DISCARD ALL every portal too). */
  forgetAll(portalsToo = true): void {
    // The unnamed statement is not a prepared statement of DEALLOCATE's: it stays (run in a
    // simple Query, the Query itself dropped it: session.ts).
    const unnamed = this.stmts.get('');
    this.stmts.clear();
    if (unnamed !== undefined) this.stmts.set('', unnamed);
    // DEALLOCATE ALL keeps the portals (they keep what they need); DISCARD ALL closes them.
    if (portalsToo) this.portals.clear();
    if (this.pooled)
      for (const l of this.s.backends.list) {
        l?.conn.statements?.clear();
        if (l) l.conn.strays = undefined;
      }
  }

  /** The client's statement `name` (its text and facts), for looking ahead at a batch (read-node-only.ts). */
  statement(name: string): Stmt | undefined {
    return this.stmts.get(name);
  }

  /** Is portal `name` bound on node `nodeId` alone (not a statement for both nodes)? */
  portalOn(name: string, nodeId: number): boolean {
    const p = this.portals.get(name);
    return p !== undefined && !p.both && p.nodes[0] === nodeId;
  }

  /** The pipeline on node `nodeId` ended before the client's Sync (session.ts leaveReadNode): its portals are gone. */
  portalsEnded(nodeId: number): void {
    for (const [name, p] of this.portals) if (!p.both && p.nodes[0] === nodeId) this.portals.delete(name);
  }

  /**
   * A node was lost: nothing is parsed there any more. `upTo`: a DEALLOCATE ALL ran there
   * when the statements parsed up to that Stmt.parsedAt were (not those parsed after it).
   */
  forgetNode(nodeId: number, upTo = Number.POSITIVE_INFINITY): void {
    for (const st of this.stmts.values())
      if ((st.parsedAt?.get(nodeId) ?? 0) <= upTo) st.nodes = st.nodes.filter((n) => n !== nodeId);
  }

  /**
   * The client has no unnamed statement (none parsed, or a simple Query dropped it), but the
   * connection may have one: its own earlier one, where a Query of the client's ran on
   * another node, or another client's (pool_mode = transaction). It is closed first, so
   * that the server answers the Bind or Describe of it as a direct connection does (26000).
   */
  private closeUnnamed(link: BackendLink): void {
    link.conn.unnamed = undefined;
    this.s.backends.request(link, { kind: 'close', mode: 'drop' }, statementMessage(FE.Close, ''));
  }

  /**
   * Where a simple Query of the client's failed in the transaction. A statement that failed
   * as it ran left its failed unnamed portal there (PostgreSQL keeps it until the
   * transaction ends; one that failed before, in its parse analysis or planning, left the
   * portal before it): pgrelay has no record of which, so a Describe or Execute of the
   * unnamed portal it does not know goes there as it is (25P02, NoData, or 34000).
   */
  private failedQueryOn: BackendLink | undefined;

  /**
   * A simple Query of the client's failed on `link` with `code`, leaving transaction status
   * `status` (refused in an aborted transaction, 25P02, it made no portal).
   */
  queryFailed(status: number, link: BackendLink | undefined, code: string | undefined): void {
    if (status === TxStatus.Failed && code !== SQLSTATE.inFailedTransaction) this.failedQueryOn = link;
  }

  /** The link for a Describe or Execute of unnamed portal pgrelay does not know, in an aborted transaction (failedQueryOn). */
  private failedQueryPortal(): BackendLink | undefined {
    const l = this.failedQueryOn;
    return this.s.routing.failed && l !== undefined && this.s.backends.get(l.nodeId) === l ? l : undefined;
  }

  /** May the unnamed portal the client has none of be closed (closeUnnamedPortal)? */
  private mayCloseUnnamedPortal(): boolean {
    return !this.s.routing.failed || this.failedQueryOn === undefined;
  }

  /**
   * A Describe or Execute of the unnamed portal the client has none of (a simple Query that
   * ran elsewhere dropped it, or its Bind was refused): the server may still have one (the
   * statement before, or a Query of pgrelay's own that failed there), closed first so that
   * it answers 34000 as a direct connection does. (Not after a Query of the client's failed
   * in the transaction: see queryLeftFailedPortal.)
   */
  private closeUnnamedPortal(link: BackendLink): void {
    this.s.backends.request(link, { kind: 'close', mode: 'drop' }, portalMessage(FE.Close, ''));
  }

  /**
   * Close the copy of statement `name` on `link` (a statement for both nodes whose Parse the
   * primary skipped: the client does not have it). If an error in that link's pipeline makes
   * the server skip the Close too, the copy is a stray there (closeStray).
   */
  private closeCopy(link: BackendLink, name: string): void {
    const done = (e: LinkExpectation) => {
      if (e.error !== undefined && e.started !== true) (link.conn.strays ??= new Set()).add(name);
    };
    this.s.backends.request(
      link,
      { kind: 'close', mode: 'drop', skippable: true, done },
      statementMessage(FE.Close, name),
    );
  }

  /**
   * A Parse, Bind or Describe of a name the client does not have, which is left on the
   * connection under that name (pool_mode = transaction: a second Parse of it,
   * parseExisting; a copy of a statement for both nodes whose Close was skipped, closeCopy):
   * closed first, so that the server answers as a direct connection does (26000, or the
   * Parse succeeds).
   */
  private closeStray(link: BackendLink, name: string): void {
    if (link.conn.strays?.delete(name) !== true) return;
    // Skipped after an error before it: the copy is still there.
    const done = (e: LinkExpectation) => {
      if (e.error !== undefined && e.started !== true) (link.conn.strays ??= new Set()).add(name);
    };
    this.s.backends.request(link, { kind: 'close', mode: 'drop', done }, statementMessage(FE.Close, name));
  }

  /** An admin statement or portal took this name. */
  forgetStatement(name: string): void {
    this.stmts.delete(name);
  }

  forgetPortal(name: string): void {
    this.portals.delete(name);
  }

  /**
   * A simple Query is sent: the mark of the portals bound before it (they end with the
   * transaction it ends, see transactionEndedAt), not those pipelined behind it.
   */
  portalMark(): number {
    return ++this.portals.syncs;
  }

  /** The Query of `mark` left the session outside a transaction: the portals bound before it are gone. */
  transactionEndedAt(mark: number): void {
    this.failedQueryOn = undefined;
    this.portals.endedAt(mark);
  }

  /**
   * The simple Query of `mark` ran: its statements replaced the unnamed portal, gone after
   * them wherever it was (not one the client bound behind the Query).
   */
  unnamedPortalGone(mark: number, ranOn: BackendLink, alsoOn: readonly BackendLink[] = NO_LINKS): void {
    const p = this.portals.get('');
    if (p === undefined || (p.boundAt ?? 0) >= mark) return;
    this.portals.delete('');
    // Where the Query did not run, the server still has it: closed there (in a transaction or a
    // pipeline, where it lasts), so that a Describe or Execute of it there gets what the client would.
    const b = this.s.backends;
    for (const id of p.nodes) {
      const l = b.get(id);
      if (l === undefined || l === ranOn || alsoOn.includes(l)) continue;
      if (l.txStatus !== TxStatus.Idle || l.inPipeline) this.closeUnnamedPortal(l);
    }
  }
}

/** The re-send hook of a Sync: the same Sync (mode, merge role, outcome) on the link the pipeline moved to. */
function resendSync(b: Backends): (to: BackendLink, e: LinkExpectation) => void {
  return (to, e) => {
    b.request(
      to,
      {
        kind: 'sync',
        mode: e.mode,
        reportsToClient: e.reportsToClient,
        reportAs: e.reportAs,
        merged: e.merged,
        done: e.done,
      },
      SYNC,
    );
    to.inPipeline = false;
    to.needsFlush = false;
  };
}

/**
 * `st`, or the unnamed statement before it whose Parse ran if its own failed or was skipped
 * (and so on back); undefined when none is left.
 */
function lastParsed(st: Stmt | undefined): Stmt | undefined {
  let s = st;
  while (s?.notParsed === true) s = s.prevUnnamed;
  return s;
}

/**
 * pgrelay parsed the client's unnamed statement again on `link`, and that Parse is not
 * answered while a Sync went there since: an error before it in its pipeline may have made
 * the server skip it, leaving no unnamed statement there. What needs it parses it again
 * (harmless if the first ran: the same statement replaces itself).
 */
function reparseUncertain(link: BackendLink): boolean {
  const r = link.unnamedReparse;
  return r !== undefined && link.replies.syncs !== r.syncs;
}
