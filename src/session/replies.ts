/**
 * The replies one backend connection owes a session, oldest first, and what becomes
 * of each: forwarded to the client, dropped, held for the session to decide on,
 * merged into one ReadyForQuery, or captured as rows for pgrelay itself.
 *
 * Every request the session writes to a backend adds an `Expectation`; its `kind`
 * names the reply types that end it (ParseComplete for Parse, ReadyForQuery for
 * Query and Sync…). The queue is the reply scanner's sink: it decodes only those
 * types (plus ErrorResponse, ParameterStatus, notices and the copy responses) and
 * passes everything else on as raw bytes, with the destination of the request at
 * the head. It owns no socket: `push` takes the bytes a backend sent, so unit tests
 * feed it byte streams (test/unit/replies.test.ts).
 */
import { BE, SQLSTATE, TxStatus } from '../protocol/constants.js';
import { DROP, type Drop, type FrameSink, MessageScanner, decodeTable } from '../protocol/framing.js';
import {
  type ErrorFields,
  decodeColumnNames,
  decodeDataRow,
  decodeParameterStatus,
  errorResponse,
  parameterStatus,
  parseErrorFields,
  readyForQuery,
  renamedInText,
} from '../protocol/messages.js';
import type { ReportFilter } from './reported-settings.js';

/** What was sent, by the reply that ends it. 'query' is a Query or FunctionCall; 'sync' a client's Sync. */
export type RequestKind = 'parse' | 'bind' | 'describe' | 'execute' | 'close' | 'sync' | 'query';

/**
 * What happens to the replies of one request:
 * - forward: to the client as they arrive;
 * - drop: discarded (mirrored statements on the second node, a re-Parse, internal work);
 * - hold: kept in `held` until the session decides (a statement run on two nodes);
 * - merge: the Sync of a pipeline that spans nodes: its ReadyForQuery is merged by the session
 *   into one; what comes before it (ParameterStatus, notices, a commit-time error) reaches the
 *   client from the primary's link only (`reportsToClient`);
 * - capture: an internal query whose rows are decoded into `rows`;
 * - synthetic: nothing was sent; pgrelay's own `reply` reaches the client when the request
 *   reaches the head (unless the backend skips it after an error, as it would skip the real one).
 */
export type Mode = 'forward' | 'drop' | 'hold' | 'merge' | 'capture' | 'synthetic';

/** Where the scanner sends reply bytes that are not consumed. */
export type ReplyAction = 'client' | 'hold';

/** Fields of an ErrorResponse or NoticeResponse, by field code (S, V, C, M, D, H…). */
export type ErrorFieldMap = Record<string, string>;

export interface Expectation<L> {
  kind: RequestKind;
  mode: Mode;
  /** An ErrorResponse received for this request. */
  error?: ErrorFieldMap;
  /** hold: the reply bytes. */
  held?: Buffer[];
  /** capture: the rows, as text. */
  rows?: Array<Array<string | null>>;
  columns?: string[];
  /** Called once the request's reply is complete (after its bytes were passed on), with the link that answered. */
  done?: (e: Expectation<L>, link: L) => void;
  /** ReadyForQuery status, for 'query' and 'sync'. */
  status?: number;
  /** A reply message for it has been seen (so part of it may have reached the client). */
  started?: boolean;
  /** Counts the CommandComplete of its reply when set (a Query: how many of its statements ran). */
  completed?: number;
  /**
   * The only reply passed on so far is the RowDescription of a re-sendable Query:
   * PostgreSQL queues it before running the query and flushes it with whatever comes
   * next, e.g. the warning of an immediate shutdown. The request can still be re-sent;
   * the copy drops its own RowDescription (`dropRowDescription`).
   */
  headerOnly?: boolean;
  /** Drop the first RowDescription of the reply (the client has it already). */
  dropRowDescription?: boolean;
  /**
   * Re-send this request to another link if this one dies before any reply to it arrived
   * (reads outside a transaction on a node other than the primary).
   */
  resend?: (to: L, e: Expectation<L>) => void;
  /**
   * If this (non-primary) node dies before answering, the client need not notice: the copy
   * of a statement run on both nodes (the primary's result stands), or a request of
   * pgrelay's own that only prepares the connection for the client's (settings replayed,
   * statements deallocated, a replay position read).
   */
  skippable?: boolean;
  /**
   * drop: its ParameterStatus reach the client, as asynchronous messages (pgrelay aborted
   * the client's transaction there: the settings it reverts are the client's).
   */
  reportsAsync?: boolean;
  /** merge: this link's replies before its ReadyForQuery go to the client (the primary's, not a mirror's). */
  reportsToClient?: boolean;
  /** synthetic: the reply. */
  reply?: Buffer;
  /**
   * bind (pool_mode = transaction) of a statement pgrelay believed prepared on the connection,
   * first of its batch outside a transaction: if the server answers 26000 (it lost the
   * statement), the batch is run again once, invisibly to the client: when what follows
   * this Bind in the queue is Describe/Execute requests and the Sync ending the batch,
   * `resend` writes Parse, this Bind and what was sent after it again, exactly as sent.
   */
  lostStatement?: { resend(): void };
  /**
   * ParameterStatus of these settings (lower-case name → value) reach the client with this
   * value, if the client was told another (ReplyOutput.tellClient): a pooled connection's
   * RESET gives the default where a direct connection gives the client's start-up value,
   * set again right behind it (pool/startup-settings.ts startupRestore).
   */
  reportAs?: ReadonlyMap<string, string>;
  /**
   * sync: like reportAs, for settings a SET of the pipeline set behind its RESET, when an
   * error after it (the server skips up to the Sync) rolled that SET back.
   */
  reportAsAfterError?: ReadonlyMap<string, string>;
  /**
   * sync: an error the client saw, earlier in its pipeline, made this node skip up to it
   * (outside a transaction block, the node's part of the pipeline was rolled back).
   */
  afterError?: boolean;
  /** merge: the pipeline's one ReadyForQuery, shared by its Syncs on every node. */
  merged?: MergedReady;
  /** Its error reached the client (with it, or with a request the server skipped after it). */
  errorShown?: boolean;
  /**
   * How many CopyDone or CopyFail of the client went to the server just before this request
   * (after the one queued before it), while the server was not seen in copy-in mode: a Sync
   * so marked is answered even if the Execute before it turns out to start a copy-in (see
   * enterCopyIn), and a copy that request started ends by itself (see copyEndAhead).
   */
  copyEndsBefore?: number;
  /** Copy-ins this request (a Query may hold several COPY) started so far. */
  copyIns?: number;
  /**
   * pool_mode = transaction: the request names pgrelay's statement `server`, which the
   * client knows as `client`: an error that names it reaches the client with the client's
   * name (bind message supplies 0 parameters, but prepared statement "s2" requires 1).
   */
  renamed?: { server: string; client: string };
}

/**
 * The one ReadyForQuery of a pipeline whose Sync went to several nodes. It reaches the
 * client where the last node's ReadyForQuery is read, before anything that node sends
 * after it: a Query pipelined behind the pipeline may already run there, its reply in
 * the same read.
 */
/**
 * Did an error roll back a pipeline's implicit transaction — all of it, outside a transaction
 * block, unless a statement in it ended that transaction first (transaction control, or one
 * PostgreSQL commits at once: DISCARD ALL, VACUUM…)? `errorShown`: an error of the pipeline
 * reached the client; `status`: the transaction status at its Sync.
 */
export function implicitlyRolledBack(errorShown: boolean, status: number, endsTransaction: boolean): boolean {
  return errorShown && status === TxStatus.Idle && !endsTransaction;
}

export class MergedReady {
  /**
   * The merged transaction status: the primary's, or failed if another node's transaction
   * failed inside the primary's (without the primary: failed if any node's failed).
   */
  status: number = TxStatus.Idle;
  /** The primary's own status. */
  primaryStatus: number = TxStatus.Idle;
  /** The primary is among the nodes (its ReadyForQuery came). */
  withPrimary = false;
  /** The primary's ParameterStatus messages (name, value), held for the merged ReadyForQuery (see add). */
  private reports: Array<[string, string]> | undefined;
  /** A node's part had an error the client saw. */
  private errorShown = false;
  private waiting: number;

  constructor(
    nodes: number,
    /** The copies of statements for both nodes sent to other nodes in the pipeline. */
    readonly mirror?: MirrorCopies,
    /**
     * The Executes of the pipeline's statements that end its implicit transaction: one that
     * ran (started, no error) did (see implicitlyRolledBack).
     */
    private readonly endingRuns?: ReadonlyArray<{ started?: boolean; error?: unknown }>,
  ) {
    this.waiting = nodes;
  }

  /** A ParameterStatus of the primary's part (PostgreSQL reports changed settings just before ReadyForQuery). */
  holdReport(name: string, value: string): void {
    (this.reports ??= []).push([name, value]);
  }

  /** Every node answered. */
  get complete(): boolean {
    return this.waiting === 0;
  }

  /**
   * A node's ReadyForQuery (the primary's if `primary`): the merged one once every node
   * answered, behind the error of a copy that failed where the primary's transaction
   * goes on (the client's transaction is aborted then: `mirrorFailedInTransaction`), with
   * the primary's reports that `tells` lets through.
   */
  add(status: number, primary: boolean, afterError = false, tells?: ReportFilter): Buffer | undefined {
    if (primary) {
      this.primaryStatus = status;
      this.withPrimary = true;
    }
    if (afterError) this.errorShown = true;
    if (status === TxStatus.Failed) this.status = TxStatus.Failed;
    else if (primary && this.status !== TxStatus.Failed) this.status = status;
    else if (this.status === TxStatus.Idle) this.status = status;
    if (--this.waiting !== 0) return undefined;
    // Outside a transaction on the primary, so is the client, whatever another node did after
    // the primary's error (a copy of BEGIN the primary skipped: the session rolls it back there).
    if (this.withPrimary && this.primaryStatus === TxStatus.Idle) this.status = TxStatus.Idle;
    const failed = this.mirrorFailedInTransaction;
    const ready =
      failed === undefined
        ? readyForQuery(this.status)
        : // (A request of the client's skipped on that node after it showed it already.)
          failed.shown
          ? readyForQuery(TxStatus.Failed)
          : Buffer.concat([errorResponse(errorFieldsOf(failed.error)), readyForQuery(TxStatus.Failed)]);
    // What the primary's part reported changed, unless an error rolled the pipeline's implicit
    // transaction back (it did not last: PostgreSQL reports nothing then).
    if (this.reports === undefined) return ready;
    const ended = this.endingRuns?.some((e) => e.started === true && e.error === undefined) === true;
    if (implicitlyRolledBack(this.errorShown, this.status, ended)) return ready;
    const out: Buffer[] = [];
    for (const [k, v] of this.reports) {
      const told = tells === undefined ? v : tells(k, v);
      if (told !== undefined) out.push(parameterStatus(k, told));
    }
    out.push(ready);
    return Buffer.concat(out);
  }

  /** A copy that failed on another node inside a transaction the primary's part did not fail. */
  get mirrorFailedInTransaction(): MirrorError | undefined {
    if (this.primaryStatus !== TxStatus.InTransaction) return undefined;
    return this.mirror === undefined ? undefined : firstMirrorError(this.mirror);
  }
}

/**
 * A pipeline's copies of statements for both nodes on nodes other than the primary, their
 * replies dropped (see MergedReady): a request's `error` is set as its reply is read, and
 * so is that of each request the server skips after it.
 */
export interface MirrorCopies {
  readonly copies: Array<{ readonly error?: ErrorFieldMap; readonly errorShown?: boolean }>;
  /** The node of each copy. */
  readonly nodes: number[];
}

export interface MirrorError {
  readonly error: ErrorFieldMap;
  readonly nodeId: number;
  /** The client saw it already (a request of its own that the server skipped after it). */
  readonly shown: boolean;
}

export function firstMirrorError(m: MirrorCopies): MirrorError | undefined {
  for (let i = 0; i < m.copies.length; i++) {
    const c = m.copies[i];
    if (c.error !== undefined) return { error: c.error, nodeId: m.nodes[i], shown: c.errorShown === true };
  }
  return undefined;
}

/** The backend state replies update. `BackendConnection` (pool/connector.ts) satisfies it. */
export interface BackendState {
  txStatus: number;
  readonly params: Map<string, string>;
}

/** Where the queue reports what it sees. */
export interface ReplyOutput {
  /** Reply bytes for the client. */
  toClient(bytes: Buffer): void;
  /** An ErrorResponse answered a request. */
  error(fields: ErrorFieldMap): void;
  /** The backend sent a FATAL or PANIC error: it is going away. */
  fatalError(fields: ErrorFieldMap): void;
  /** NotificationResponse, NoticeResponse, ParameterStatus or ErrorResponse while nothing is outstanding. */
  asyncMessage(bytes: Buffer): void;
  /** The reply stream is malformed. */
  broken(message: string): void;
  /**
   * A request visible to the client failed and the client's Sync after it has not been
   * sent yet: PostgreSQL now ignores everything up to that Sync, which pgrelay must do
   * too for what the client sends meanwhile (whichever node it would go to).
   */
  skipsUntilSync(): void;
  /**
   * The server ignored the Syncs sent since its request started a copy-in: what it answers
   * once the copy ends stays in its output buffer until a Flush or Sync comes after the copy.
   */
  mustFlush(): void;
  /**
   * A ParameterStatus of `name` = `value` on its way to the client: the value it tells the
   * client (recorded as told), or undefined when the client was told that value last (the
   * report is dropped); see session/reported-settings.ts and Session.tellClient.
   */
  tellClient(name: string, value: string): string | undefined;
}

const ENDS_PARSE = decodeTable('1');
const ENDS_BIND = decodeTable('2');
const ENDS_DESCRIBE = decodeTable('Tn');
const ENDS_EXECUTE = decodeTable('CIs');
const ENDS_CLOSE = decodeTable('3');
const ENDS_READY = decodeTable('Z');

/** The reply types that end a request of `kind` (a switch: a keyed lookup by kind goes megamorphic on the hot path). */
function endsOf(kind: RequestKind): Uint8Array {
  switch (kind) {
    case 'parse':
      return ENDS_PARSE;
    case 'bind':
      return ENDS_BIND;
    case 'describe':
      return ENDS_DESCRIBE;
    case 'execute':
      return ENDS_EXECUTE;
    case 'close':
      return ENDS_CLOSE;
    default:
      return ENDS_READY;
  }
}

/** The error of a request skipped after another's error that is not known. */
const SKIPPED: ErrorFieldMap = { S: 'ERROR', C: '', M: 'skipped after an error' };

/** Replies decoded in normal operation... */
const DECODE = decodeTable('ZES123CIsnTANGHW');
/** ...and while capturing an internal query's rows. */
const DECODE_CAPTURE = decodeTable('ZES123CIsnTANGHWD');
/** Everything, while a synthetic reply waits at the head. */
const DECODE_ALL = new Uint8Array(256).fill(1);

/** Can `e` still be re-sent elsewhere: a re-send hook, and nothing but (at most) its RowDescription passed on. */
export function resendable<L>(e: Expectation<L>): boolean {
  return e.resend !== undefined && (e.started !== true || e.headerOnly === true);
}

/** Requests answered by ReadyForQuery. */
function endsAtReady(kind: RequestKind): boolean {
  return kind === 'sync' || kind === 'query';
}

/**
 * After an extended-protocol error the server ignores every message up to a Sync: a simple
 * Query sent meanwhile (one of pgrelay's own into a pipeline) gets no reply either.
 */
function endsSkip(kind: RequestKind): boolean {
  return kind === 'sync';
}

/** Does the client see (part of) this request's reply? Those gate the reply order across nodes. */
function isVisible(mode: Mode): boolean {
  return mode !== 'drop' && mode !== 'capture';
}

function isFatal(f: ErrorFieldMap): boolean {
  const sev = f.V ?? f.S;
  return sev === 'FATAL' || sev === 'PANIC';
}

export class ReplyQueue<L> implements FrameSink<ReplyAction> {
  /** Where replies of the head request go. */
  private pass: ReplyAction | Drop = DROP;
  /** The head, while it can still be re-sent elsewhere and no reply to it has been seen. */
  private unstarted: Expectation<L> | undefined;
  /** Frames the reply stream; what it decodes follows the request at the head. */
  private readonly scanner: MessageScanner<ReplyAction>;
  /** The reply types that end the request at the head. */
  private ends: Uint8Array = ENDS_READY;
  /** Outstanding requests, oldest first (a queue with a moving head). */
  private queue: Array<Expectation<L>> = [];
  private head = 0;
  /** Requests whose replies the client will see (forward, hold, merge). */
  visible = 0;
  /** The backend sent FATAL or PANIC. */
  fatal = false;
  /**
   * That FATAL (or PANIC), as received, when it answered a request whose replies do not go
   * straight to the client (pgrelay's own, held, or to be re-sent): the session gives it to
   * the client when it ends because of it.
   */
  unseenFatal: Buffer | undefined;
  /**
   * A FATAL (or PANIC) that came while nothing was outstanding (the backend was idle, e.g.
   * terminated, or a fast shutdown), as received. It went the way of the connection's
   * asynchronous messages: to the client from the primary's, nowhere from another node's.
   */
  idleFatal: Buffer | undefined;
  /**
   * The server asked for the client's copy data (COPY FROM STDIN, by a Query or an Execute)
   * and the client has not ended the copy: whatever the client sends goes to this server.
   */
  copying = false;
  /**
   * The client's CopyDone or CopyFail messages that went to the server since the last
   * request queued, while a request was outstanding and copy-in mode had not been seen:
   * they end copies the server has not started yet (see copyEndsBefore).
   */
  private copyEndsSent = 0;
  /** Syncs queued so far: a request queued after a later one is in another pipeline. */
  syncs = 0;
  /** Completed requests whose `done` has not run yet (see runFinished). */
  private finished: Array<Expectation<L>> = [];
  /** An extended-protocol request failed: the server skips what follows up to the next Sync. */
  private skipping = false;
  /** The request whose error began the skipping. */
  private skipCause: Expectation<L> | undefined;
  /** Its ErrorResponse, as received, while the client has not seen it. */
  private skipError: Buffer | undefined;
  /** `done` callbacks of Syncs the server ignored during copy-in, run with the next Sync's reply. */
  private orphaned: Array<NonNullable<Expectation<L>['done']>> = [];

  constructor(
    private readonly out: ReplyOutput,
    private readonly state: BackendState,
  ) {
    this.scanner = new MessageScanner<ReplyAction>(this, DECODE, 0x7fffffff);
  }

  /**
   * Where the scanner sends a message it does not decode (DataRow, CopyData…). Such a
   * message is part of the head's reply: from then on the head cannot be re-sent.
   */
  get passAction(): ReplyAction | Drop {
    if (this.unstarted !== undefined) {
      this.unstarted.started = true;
      this.unstarted.headerOnly = false;
      this.unstarted = undefined;
    }
    return this.pass;
  }

  /** Bytes from the backend. Completed requests' `done` run later, in `runFinished`. */
  push(chunk: Buffer): void {
    this.scanner.push(chunk);
    this.giveSynthetic();
  }

  /** A reply message has been only partly received. */
  get midMessage(): boolean {
    return this.scanner.midMessage;
  }

  /** The client has received the first part of a message whose rest is still to come from this backend. */
  get clientMidMessage(): boolean {
    return this.scanner.partialAction === 'client';
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  /** In copy-in mode started by an extended-protocol Execute: the server ignores Sync and Flush. */
  get copyIn(): boolean {
    return this.copying && this.current()?.kind === 'execute';
  }

  /** Nothing outstanding, finished or left from the last requests: as a new queue (BackendLink.adopt). */
  get reusable(): boolean {
    return (
      this.head === this.queue.length &&
      this.finished.length === 0 &&
      this.orphaned.length === 0 &&
      !this.copying &&
      !this.skipping &&
      !this.fatal &&
      this.unseenFatal === undefined &&
      this.idleFatal === undefined &&
      !this.scanner.midMessage &&
      !this.scanner.suspended
    );
  }

  /** Outstanding requests, oldest first (a copy). */
  pendingRequests(): ReadonlyArray<Expectation<L>> {
    return this.queue.slice(this.head);
  }

  /** Outstanding requests, oldest first, removed from the queue (its link is being abandoned). */
  takePending(): Array<Expectation<L>> {
    const out = this.queue.slice(this.head);
    this.copyEndsSent = 0;
    this.queue = [];
    this.head = 0;
    this.visible = 0;
    this.follow();
    return out;
  }

  expect(e: Expectation<L>): void {
    if (this.copyEndsSent > 0) {
      e.copyEndsBefore = this.copyEndsSent;
      this.copyEndsSent = 0;
    }
    if (this.skipping && !endsSkip(e.kind) && e.mode !== 'synthetic' && !this.readyOwed) {
      this.skipped(e);
      return;
    }
    if (e.kind === 'sync') {
      this.takeOrphans(e);
      this.syncs++;
    }
    if (isVisible(e.mode)) this.visible++;
    this.queue.push(e);
    if (this.queue.length - this.head === 1) {
      this.follow();
      this.giveSynthetic();
    }
  }

  /**
   * A request sent while the server skips what follows an error, up to the next Sync: no
   * reply will come for it. It ends with that error; a client-visible one shows the error
   * to the client if it did not reach it yet (the error of a statement's copy for another
   * node, its replies dropped), and the session skips the client's messages up to its Sync,
   * as the server does.
   */
  private skipped(e: Expectation<L>): void {
    e.error = this.skipCause?.error ?? SKIPPED;
    if (isVisible(e.mode)) this.showSkipError();
    this.finished.push(e);
  }

  /** The client gets the error that began the skipping, if it has not yet (see skipped). */
  private showSkipError(): void {
    const cause = this.skipCause;
    if (cause === undefined || this.skipError === undefined) return;
    cause.errorShown = true;
    this.out.toClient(this.skipError);
    this.skipError = undefined;
    this.out.skipsUntilSync();
  }

  /** Is a Sync outstanding? The server answers again after it. */
  /** A ReadyForQuery is still to come (a Sync is outstanding). */
  get readyOwed(): boolean {
    for (let i = this.head; i < this.queue.length; i++) if (endsSkip(this.queue[i].kind)) return true;
    return false;
  }

  /** Run the `done` of requests completed since the last call, oldest first. Returns whether any did. */
  runFinished(link: L): boolean {
    if (this.finished.length === 0) return false;
    const done = this.finished;
    this.finished = [];
    for (const e of done) e.done?.(e, link);
    return true;
  }

  private current(): Expectation<L> | undefined {
    return this.head < this.queue.length ? this.queue[this.head] : undefined;
  }

  private pop(): Expectation<L> {
    const e = this.queue[this.head++];
    if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (isVisible(e.mode)) this.visible--;
    this.finished.push(e);
    return e;
  }

  /** Point the scanner at the request now at the head. */
  private follow(): void {
    const e = this.current();
    if (e?.mode === 'synthetic') {
      // Every message is looked at until it is given: the next reply must not overtake it.
      this.pass = DROP;
      this.unstarted = undefined;
      this.scanner.decode = DECODE_ALL;
      return;
    }
    if (!e) {
      this.pass = DROP;
      this.unstarted = undefined;
      this.scanner.decode = DECODE;
      return;
    }
    this.pass =
      e.mode === 'forward' || (e.mode === 'merge' && e.reportsToClient === true)
        ? 'client'
        : e.mode === 'hold'
          ? 'hold'
          : DROP;
    this.unstarted = resendable(e) ? e : undefined;
    this.ends = endsOf(e.kind);
    this.scanner.decode = e.mode === 'capture' ? DECODE_CAPTURE : DECODE;
  }

  /**
   * Give the synthetic replies at the head: every reply before them has reached the
   * client (the caller flushed the scanner's run). Skipped after an error, as the
   * server skips what follows it up to Sync.
   */
  private giveSynthetic(): void {
    let e = this.current();
    if (e?.mode !== 'synthetic') return;
    while (e?.mode === 'synthetic') {
      if (this.skipping && !endsSkip(e.kind)) {
        e.error = this.skipCause?.error ?? SKIPPED;
        this.showSkipError();
      } else if (e.reply) this.out.toClient(e.reply);
      this.pop();
      e = this.current();
    }
    this.follow();
  }

  onMessage(type: number, buf: Buffer, start: number, end: number): ReplyAction | Drop {
    if (this.current()?.mode === 'synthetic') {
      this.scanner.flushRun();
      this.giveSynthetic();
    }
    const e = this.current();
    let report: [string, string] | undefined;
    if (type === BE.ParameterStatus) {
      report = decodeParameterStatus(buf, start, end);
      if (report !== undefined) this.state.params.set(report[0], report[1]);
    }
    if (!e) return this.unsolicited(type, buf, start, end);
    if (type === BE.NotificationResponse && this.pass === DROP) {
      // Never part of a reply: PostgreSQL sends what arrived during a transaction before its
      // ReadyForQuery, here one of pgrelay's own (dropped) requests. It is the client's.
      this.out.asyncMessage(Buffer.from(buf.subarray(start - 5, end)));
      return DROP;
    }
    const wasStarted = e.started === true;
    const couldResend = resendable(e);
    if (type === BE.NoticeResponse && couldResend) {
      // An immediate shutdown warns (57P0x) before closing: keep a re-sendable request clean.
      const code = parseErrorFields(buf, start, end).C ?? '';
      if (code.startsWith('57P')) return DROP;
    }
    if (type === BE.RowDescription && e.dropRowDescription) {
      e.dropRowDescription = false;
      e.started = true;
      return DROP;
    }
    e.started = true;
    if (type === BE.CommandComplete && e.completed !== undefined) e.completed++;
    e.headerOnly = couldResend && !wasStarted && type === BE.RowDescription && e.kind === 'query';
    this.unstarted = e.headerOnly ? e : undefined;
    const action = this.pass;
    if (type === BE.ErrorResponse) {
      const errorAction = this.onError(e, wasStarted, couldResend, action, buf, start, end);
      if (this.fatal && errorAction !== 'client' && this.unseenFatal === undefined)
        this.unseenFatal = Buffer.from(buf.subarray(start - 5, end));
      return errorAction;
    }
    if (type === BE.CopyInResponse || type === BE.CopyBothResponse) {
      // The client's end of this copy already sent (with the request): the server ends it
      // by itself, and what the client sends next is not copy data.
      if (!this.copyEndAhead(e)) this.copying = true;
      else this.out.mustFlush();
      if (e.kind === 'execute') this.enterCopyIn();
    }
    if (e.mode === 'capture') {
      if (type === BE.DataRow) e.rows?.push(decodeDataRow(buf, start, end));
      else if (type === BE.RowDescription) e.columns = decodeColumnNames(buf, start, end);
    }
    if (this.ends[type] !== 0) {
      this.copying = false;
      if (type === BE.ReadyForQuery) {
        // (Not an error of pgrelay's own copy the client never saw: the primary's result stands.)
        if (this.skipping && e.kind === 'sync' && this.skipCause?.errorShown === true) e.afterError = true;
        this.skipping = false;
        this.skipCause = undefined;
        this.skipError = undefined;
        this.state.txStatus = buf[start];
        e.status = buf[start];
      }
      this.pop();
      this.follow();
      if (e.mode === 'merge') {
        // The one ReadyForQuery of a pipeline that spans nodes, once the last node answered.
        const ready = e.merged?.add(buf[start], e.reportsToClient === true, e.afterError === true, this.tells);
        if (ready !== undefined) {
          this.scanner.flushRun();
          this.out.toClient(ready);
        }
        return DROP;
      }
    }
    if (report !== undefined && action !== DROP) return this.report(e, report[0], report[1], action);
    if (report !== undefined && e.reportsAsync === true) {
      this.scanner.flushRun();
      this.out.asyncMessage(Buffer.from(buf.subarray(start - 5, end)));
    }
    return action;
  }

  private readonly tells: ReportFilter = (name, value) => this.out.tellClient(name, value);

  /**
   * A ParameterStatus for the client: with the value `reportAs` gives its setting, if any;
   * held for the merged ReadyForQuery of a pipeline across nodes, or with a held reply
   * (both filtered when they are passed on), else passed on only if it tells the client
   * something new (the connection's last report may be another client's).
   */
  private report(e: Expectation<L>, name: string, value: string, action: ReplyAction): ReplyAction | Drop {
    const key = name.toLowerCase();
    const want = e.reportAs?.get(key) ?? (this.skipping ? e.reportAsAfterError?.get(key) : undefined) ?? value;
    this.scanner.flushRun();
    if (e.mode === 'merge' && e.merged !== undefined) {
      e.merged.holdReport(name, want);
      return DROP;
    }
    const told = action === 'hold' ? want : this.out.tellClient(name, want);
    if (told === undefined) return DROP;
    if (told === value) return action;
    this.emit(action, parameterStatus(name, told));
    return DROP;
  }

  /** A message while nothing is outstanding: asynchronous, or the FATAL before a shutdown. */
  private unsolicited(type: number, buf: Buffer, start: number, end: number): Drop {
    // What this server sent before reaches the client first (the ERROR before a FATAL).
    this.scanner.flushRun();
    if (type === BE.ErrorResponse) {
      const f = parseErrorFields(buf, start, end);
      if (isFatal(f)) {
        this.fatal = true;
        this.idleFatal ??= Buffer.from(buf.subarray(start - 5, end));
        this.out.fatalError(f);
      }
    }
    if (
      type === BE.NotificationResponse ||
      type === BE.NoticeResponse ||
      type === BE.ParameterStatus ||
      type === BE.ErrorResponse
    ) {
      this.out.asyncMessage(Buffer.from(buf.subarray(start - 5, end)));
    }
    return DROP;
  }

  private onError(
    e: Expectation<L>,
    wasStarted: boolean,
    couldResend: boolean,
    action: ReplyAction | Drop,
    buf: Buffer,
    start: number,
    end: number,
  ): ReplyAction | Drop {
    const f = parseErrorFields(buf, start, end);
    if (isFatal(f)) {
      this.fatal = true;
      this.out.fatalError(f);
      if (couldResend) {
        // The server is going away before answering a request that can be re-sent to
        // another node: keep the client out of it (the session re-sends it on close).
        e.started = wasStarted;
        e.headerOnly = wasStarted;
        return DROP;
      }
    }
    if (e.lostStatement !== undefined && !wasStarted && f.C === '26000' && this.prepareAgain(e)) return DROP;
    e.error = f;
    this.copying = false;
    this.out.error(f);
    if (endsAtReady(e.kind)) return action;
    // Extended protocol: the server now skips everything up to Sync. Those requests end
    // here; if any of them is visible to the client, so is this error.
    this.skipping = true;
    let forward = e.mode === 'forward';
    this.pop();
    let next = this.current();
    while (next && !endsSkip(next.kind)) {
      if (next.mode === 'forward' || next.mode === 'synthetic') forward = true;
      next.error = f;
      this.pop();
      next = this.current();
    }
    this.follow();
    if (forward && next === undefined) this.out.skipsUntilSync();
    const result = forward ? 'client' : action;
    e.errorShown = result !== DROP;
    // Requests sent later, before the Sync, are skipped too (see expect).
    this.skipCause = e;
    this.skipError = e.errorShown ? undefined : Buffer.from(buf.subarray(start - 5, end));
    if (e.renamed !== undefined && result !== DROP) {
      this.scanner.flushRun();
      this.emit(result, renamedInText(buf.subarray(start - 5, end), e.renamed.server, e.renamed.client));
      return DROP;
    }
    return result;
  }

  /**
   * The Bind at the head failed with 26000 for a statement the connection lost: if the rest
   * of the queue is this batch (its Describe/Execute requests, then its Sync), possibly
   * followed by pgrelay's own queries (the write position read after it), expect the
   * replies of that failed run (dropped), then the re-sent Parse (dropped), this Bind and
   * the rest again, and have them re-sent.
   */
  private prepareAgain(e: Expectation<L>): boolean {
    const retry = e.lostStatement;
    e.lostStatement = undefined;
    if (retry === undefined) return false;
    let i = this.head + 1;
    for (; i < this.queue.length && this.queue[i].kind !== 'sync'; i++) {
      const x = this.queue[i];
      if ((x.kind !== 'describe' && x.kind !== 'execute') || x.mode !== 'forward' || x.started) return false;
    }
    if (i === this.queue.length) return false;
    // Requests of pgrelay's own behind the batch (a Query, or an extended-protocol batch of
    // its own: session/own-query.ts) are answered now, and again behind the batch re-sent.
    const after: Array<Expectation<L>> = [{ kind: 'sync', mode: 'drop' }];
    for (i++; i < this.queue.length; i++) {
      const x = this.queue[i];
      if (x.mode !== 'capture' && x.mode !== 'drop') return false;
      after.push({ kind: x.kind, mode: 'drop' });
    }
    e.started = false;
    this.queue.splice(this.head, 0, ...after, { kind: 'parse', mode: 'drop' });
    this.follow();
    retry.resend();
    return true;
  }

  /**
   * The client's CopyDone or CopyFail went to the server: it leaves copy-in mode. A client
   * may send the copy's data and its end with the Execute, before the server asks for them:
   * the Syncs sent after that end will be answered.
   */
  copyEnded(): void {
    if (!this.copying && this.pending > 0) this.copyEndsSent++;
    this.copying = false;
  }

  /**
   * The request `e` (the head) starts a copy-in: whether the client's CopyDone or CopyFail
   * for it went to the server already, after `e` (behind Syncs the server ignores in
   * copy-in mode too): one per copy `e` started, as a Query may hold several COPY.
   */
  private copyEndAhead(e: Expectation<L>): boolean {
    const copies = (e.copyIns ?? 0) + 1;
    e.copyIns = copies;
    let ends = this.copyEndsSent;
    for (let i = this.head + 1; i < this.queue.length && ends < copies; i++) ends += this.queue[i].copyEndsBefore ?? 0;
    return ends >= copies;
  }

  /**
   * Copy-in started by an Execute: the server ignores Sync until the copy ends, so the
   * Syncs already sent before the client's end of the copy get no reply.
   */
  private enterCopyIn(): void {
    for (let i = this.head + 1; i < this.queue.length; ) {
      const x = this.queue[i];
      if (x.kind !== 'sync' || x.copyEndsBefore !== undefined) break;
      this.queue.splice(i, 1);
      if (isVisible(x.mode)) this.visible--;
      if (x.done) this.orphaned.push(x.done);
    }
    // A Sync already sent after the copy's end answers for them.
    for (let i = this.head + 1; i < this.queue.length && this.orphaned.length > 0; i++)
      if (this.queue[i].kind === 'sync') this.takeOrphans(this.queue[i]);
  }

  /** A Sync the server will answer: the callbacks of the Syncs it ignored run with its reply. */
  private takeOrphans(e: Expectation<L>): void {
    if (this.orphaned.length === 0) return;
    const before = this.orphaned;
    this.orphaned = [];
    const own = e.done;
    e.done = (x, l) => {
      for (const fn of before) fn(x, l);
      own?.(x, l);
    };
  }

  emit(action: ReplyAction, bytes: Buffer): void {
    if (action === 'hold') {
      this.holdTarget()?.held?.push(bytes);
      return;
    }
    this.out.toClient(bytes);
  }

  /** The hold request receiving bytes: the head if it holds, else the one just finished (the head moved on). */
  private holdTarget(): Expectation<L> | undefined {
    const c = this.current();
    if (c && c.mode === 'hold') return c;
    for (let i = this.finished.length - 1; i >= 0; i--) if (this.finished[i].mode === 'hold') return this.finished[i];
    return undefined;
  }

  onFramingError(message: string): void {
    this.out.broken(message);
  }
}

/** An ErrorResponse's fields as received, to be sent on (another node's error for the client). */
export function errorFieldsOf(f: ErrorFieldMap): ErrorFields {
  const sev = (f.V ?? f.S ?? 'ERROR') as ErrorFields['severity'];
  return {
    severity: sev,
    code: f.C ?? SQLSTATE.internalError,
    message: f.M ?? 'error on the load-balance node',
    detail: f.D,
    hint: f.H,
  };
}
