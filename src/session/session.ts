/**
 * One client's session: from the authenticated start-up to the reset of its
 * backend connections.
 *
 * Each client message is decided on and written to a backend as the raw bytes
 * received; replies come back through each backend link (backend-link.ts,
 * replies.ts). This file holds the session's life, the client's flow control and
 * the dispatch of client messages, with the simple Query; its parts are:
 * - backends.ts: the backend connections, the reply-order gate, the one write path;
 * - routing.ts: where a statement goes (the router decides), catalog lookups;
 * - extended.ts: Parse/Bind/Describe/Execute/Close/Sync/Flush;
 * - both-nodes.ts: statements run on the primary and the load-balance node;
 * - admin-replies.ts: admin commands answered by pgrelay itself;
 * - standby-loss.ts: losing a standby connection without the client noticing;
 * - pool_mode = transaction: links are taken from the server pools when a transaction
 *   starts and given back when it ends (checkout / maybeCheckin here, backends.ts), an
 *   autocommit read or a batch of reads takes only its read node's (read-node-only.ts;
 *   needPrimary / leaveReadNode when it turns out to need more), prepared statements follow the client (extended.ts,
 *   pooled-statements.ts), and session state pins the session (pinning.ts).
 *
 * The client scanner calls `onMessage` for every message but CopyData; its answer
 * is the link the message's bytes go to (forwarded by the scanner without a copy),
 * DROP, or a wait. Whatever the session writes itself goes through
 * `Backends.write`, after the bytes scanned before the current message.
 */
import type net from 'node:net';
import type { ClientInput } from '../protocol/client-input.js';
import { readChunks, stopChunks } from '../protocol/socket-reader.js';
import { queuedBytes, writeTo } from '../protocol/socket-writer.js';
import type { ParamValue } from '../config/params.js';
import { parseBool } from '../config/values.js';
import { type Logger, redact } from '../log.js';
import { BE, FE, SQLSTATE, TxStatus } from '../protocol/constants.js';
import {
  CONSUME_AND_SUSPEND,
  type Drop,
  DROP,
  type FrameSink,
  MessageScanner,
  SUSPEND,
  type Verdict,
} from '../protocol/framing.js';
import {
  PgError,
  authenticationOk,
  backendKeyData,
  bindCounts,
  decodeParameterStatus,
  errorResponse,
  parameterStatus,
  parseParamTypes,
  readCString,
  readyForQuery,
} from '../protocol/messages.js';
import type { BackendSecret } from '../auth/backend.js';
import { mayBeAdminCommandAt } from '../admin/commands.js';
import { type BackendConnection, cacheKeyFor } from '../pool/connector.js';
import { queryMessage } from '../pool/query.js';
import type { Classification, Decision, SessionFacts, SessionRoutingState } from '../router/router.js';
import { isolationFromValue } from '../router/classifier.js';
import { connectionIsolation, newSessionRoutingState, startupIsolation } from '../router/policy.js';
import { AdminOnlyMode } from './admin-only.js';
import { AdminReplies } from './admin-replies.js';
import { type BackendLink, type LinkExpectation, type LinkOwner, SYNC } from './backend-link.js';
import { ReportedSettings } from './reported-settings.js';
import { Backends, type BackendsOwner, type CheckoutDone, lastServerParameters } from './backends.js';
import { BothNodes } from './both-nodes.js';
import type { SessionContext, WaitReason } from './context.js';
import type { SessionCore } from './core.js';
import { dropsStatements, ExtendedProtocol, STATEMENT } from './extended.js';
import type { ErrorFieldMap } from './replies.js';
import { ReadYourWrites } from './read-your-writes.js';
import { StatementRouting } from './routing.js';
import { SettingsReplay } from './settings.js';
import { moveReadsOff, resendSame } from './standby-loss.js';
import { mayCallNextval, pinReason, readsSequenceState } from './pinning.js';
import { type UnitLookup, readNodeOnly, readOnlyBegin, readOnlyUnit } from './read-node-only.js';
import { reportFor } from '../pool/startup-settings.js';

/** Messages of the extended query protocol that a batch read on the load-balance node is made of. */
const EXTENDED_TYPES = (() => {
  const t = new Uint8Array(256);
  for (const type of [FE.Parse, FE.Bind, FE.Describe, FE.Execute, FE.Close, FE.Sync, FE.Flush]) t[type] = 1;
  return t;
})();

/** Messages a statement waiting for the pool may start with: a cancel answers them with 57014 (Sync, Flush and Terminate go on). */
const CANCELLABLE = (() => {
  const t = new Uint8Array(256);
  for (const type of [FE.Query, FE.Parse, FE.Bind, FE.Describe, FE.Execute, FE.Close, FE.FunctionCall]) t[type] = 1;
  return t;
})();

/** Client messages the session decodes: all but CopyData ('p', a password, is invalid after start-up). */
const CLIENT_DECODE = (() => {
  const t = new Uint8Array(256).fill(1);
  t[FE.CopyData] = 0;
  return t;
})();

const TRACE = process.env.PGRELAY_TRACE === '1';

/**
 * Requests a session may have outstanding on its backends before it stops reading the
 * client until replies come back. Well above what PostgreSQL answers without a Flush or
 * Sync (its 8 kB output buffer holds at most about 1,600 five-byte replies), so that a
 * pipeline that reads its replies never waits on it.
 */
export const MAX_PENDING_REQUESTS = 4096;
/** ...and reading resumes below this many. */
const RESUME_PENDING_REQUESTS = MAX_PENDING_REQUESTS / 2;
/** How long a closing session waits for its client to read what is still on its way. */
const CLOSING_CLIENT_IDLE_MS = 10_000;
/** Notifications and notices held while a reply is on its way, before the primary is read no more. */
const ASYNC_QUEUE_BYTES = 64 * 1024;

/**
 * Savepoint commands a read-only transaction on the read node alone runs there (with the
 * simple protocol), followed for the primary if it joins (Session.aloneOnReadNode).
 */
const SAVEPOINTS: Readonly<Record<string, 1>> = { savepoint: 1, release: 1, rollback_to: 1 };

/** At most this many savepoints of a read-only transaction are held on its standby alone (then the primary joins). */
const READ_ONLY_SAVEPOINTS = 64;

/** pool_mode = transaction: the links a unit of work takes (Session.linksFor). */
interface UnitLinks {
  readonly readNode?: number;
  readonly readOnly: boolean;
}

/** The primary's link and one to a read node drawn when they are taken (most units of work). */
const PRIMARY_AND_DRAWN: UnitLinks = { readOnly: false };

export class Session implements FrameSink<BackendLink>, LinkOwner, BackendsOwner, SessionCore {
  /**
   * The pid in the client's BackendKeyData: its primary backend's (so that
   * pg_terminate_backend / pg_cancel_backend with it act on that backend), or one of
   * pgrelay's own while it has none.
   */
  pid: number;
  /** pgrelay's own number for the session (in its log lines), the pid until a primary backend gives it one. */
  readonly id: number;
  readonly secretKey: number;
  readonly user: string;
  readonly database: string;
  readonly applicationName: string;
  readonly startedAt = Date.now();
  readonly facts: SessionFacts;
  closed = false;
  /** Last time the client sent something or a request completed (ms). */
  lastActivity = Date.now();
  /** Routing state (transaction, writes, isolation) for the policy. */
  readonly routing: SessionRoutingState = newSessionRoutingState();
  /** Session-level PGPOOL SET values. */
  readonly adminParams = new Map<string, ParamValue>();
  readonly settings = new SettingsReplay();
  /** What the client was told of the settings PostgreSQL reports (ParameterStatus). */
  readonly reported = new ReportedSettings();
  readonly backends: Backends;

  private readonly scanner: MessageScanner<BackendLink>;
  private readonly route: StatementRouting;
  private readonly both: BothNodes;
  private readonly extended: ExtendedProtocol;
  private readonly admin: AdminReplies;
  /** No backend could be reached for this admin user: only admin commands are answered. */
  private adminOnly: AdminOnlyMode | undefined;
  private logger: Logger | undefined;
  /** The client sent Terminate (its backend connections may go back to the cache). */
  private terminated = false;
  /** A client-visible extended-protocol request failed: what the client sends up to its Sync is ignored. */
  private skippingUntilSync = false;
  /** What the client's messages wait for; only that event lets them continue. */
  private waitingFor: WaitReason | null = null;
  /** The client socket is paused (the scanner waits, or a backend is congested). */
  private clientPaused = false;
  /** Notifications and notices from the primary that arrived while a reply was on its way. */
  private asyncQueue: Buffer[] = [];
  private asyncQueued = 0;
  /** The link whose reading stopped because the queue is full. */
  private asyncHeld: BackendLink | undefined;
  private drainWaiters: Array<() => void> = [];
  private onEnd: (() => void) | undefined;
  /** The client socket is read by `onClientData` (readChunks), until the session ends. */
  private readingClient = false;

  constructor(
    readonly ctx: SessionContext<Session>,
    readonly client: net.Socket,
    /** Start-up parameters as the client sent them (without _pq_ options). */
    readonly params: Map<string, string>,
    readonly remote: string,
    /** What client authentication produced for logging into backends (overrides ctx.backendSecret). */
    readonly authSecret?: BackendSecret,
  ) {
    this.user = params.get('user') ?? '';
    this.database = params.get('database') ?? this.user;
    this.applicationName = params.get('application_name') ?? '';
    this.facts = { database: this.database, application_name: this.applicationName, user: this.user };
    const k = ctx.registry.register(this);
    this.pid = k.pid;
    this.id = k.pid;
    this.secretKey = k.secret;
    this.scanner = new MessageScanner<BackendLink>(this, CLIENT_DECODE, ctx.config().max_message_size);
    this.backends = new Backends(this);
    this.route = new StatementRouting(this, this.facts, new ReadYourWrites(this));
    this.both = new BothNodes(
      this,
      this.route,
      (cls) => this.extended.statementDone(cls),
      // (The session waited for it: every portal was bound before it.)
      () => this.extended.transactionEndedAt(this.extended.portalMark()),
      (status, link, code) => this.extended.queryFailed(status, link, code),
      (ranOn, alsoOn) => this.extended.unnamedPortalGone(this.extended.portalMark(), ranOn, alsoOn),
    );
    this.extended = new ExtendedProtocol(this, this.route, this.both);
    this.admin = new AdminReplies(this);
    this.txMode = this.backends.pooled;
    if (this.txMode) {
      this.settings.onUnknown = () => this.backends.settingsUnknown();
      this.settings.onResync = () => this.backends.resyncSettings();
      this.settings.onOverflow = () =>
        this.pin('SET not replayable (bind parameters, or more than 64 distinct settings)');
      this.settings.startup = this.backends.startupSettings;
      this.settings.functionsMayChangeSettings = (fns) => this.ctx.router.mayChangeSettings(this.database, fns);
    }
    client.on('drain', this.onDrain);
  }

  /** pool_mode = transaction: backend links are held per transaction (backends.ts checkout/checkin). */
  readonly txMode: boolean;
  /** The client was told it is logged in (before, start-up holds the links it opened). */
  private loggedIn = false;

  /** The session's logger (a pino child with session, user, database), made on first use. */
  get log(): Logger {
    return (this.logger ??= this.ctx.log.child({ session: this.id, user: this.user, database: this.database }));
  }

  /** Debug-level log without building the session's logger when debug is off. */
  debug(fields: Record<string, unknown>, msg: string): void {
    if (this.ctx.log.isLevelEnabled('debug')) this.log.debug(fields, msg);
  }

  // ---------------------------------------------------------------- start-up

  /**
   * Connect to the backends, answer the client's start-up, start relaying. `input`
   * holds what the client sent behind its start-up (and keeps reading until now):
   * those messages are handled first.
   */
  async start(input: ClientInput, onEnd: () => void): Promise<void> {
    this.onEnd = onEnd;
    const client = this.client;
    client.on('close', () => this.onClientClosed());
    client.on('error', (e) => this.debug({ err: e.message }, 'client socket error'));
    if (this.txMode) {
      // An isolation among its start-up options decides from its first connections on.
      this.learnStartupIsolation(undefined);
      // pool_mode = transaction: a client like others before it is told what their connections reported,
      // without taking one (the pool may be busy: the client waits for its first statement instead).
      const primary = this.ctx.nodes.primaryId;
      const key = primary >= 0 ? cacheKeyFor(primary, this.backends.serverParams) : undefined;
      const report = key === undefined ? undefined : this.ctx.pools.startupReport(key);
      if (key !== undefined && report) {
        this.learnStartupIsolation(this.ctx.pools.startupIsolationOf(key));
        const told = reportFor(report, this.settings.startup);
        // A plain BEGIN of its first unit of work is read-only by default as the server reports it (role, database, own option).
        this.backends.defaultReadOnly = parseBool(told.get('default_transaction_read_only') ?? '') === true;
        this.ready(input, told, TxStatus.Idle);
        return;
      }
    }
    try {
      await this.backends.open(() => this.closed || client.destroyed);
    } catch (e) {
      const err =
        e instanceof PgError
          ? e
          : new PgError(SQLSTATE.connectionFailure, `could not open a backend connection: ${(e as Error).message}`);
      this.log.warn({ code: err.code, err: err.message }, 'backend connection failed');
      if (!this.closed && !client.destroyed && this.mayRunAdminOnly(err)) {
        // An operator must be able to get in while no primary answers, to see and repair the nodes.
        this.log.warn('admin user without a backend: admin commands only');
        this.adminOnly = new AdminOnlyMode(this, this, this.admin);
        this.ready(input, lastServerParameters(this.params), TxStatus.Idle);
        return;
      }
      input.detach();
      this.fatal(err);
      return;
    }
    if (this.closed || client.destroyed) {
      input.detach();
      // The client left while its connections were being opened: close() ran before they
      // existed (or runs now); they are fresh and clean, so they go to the cache.
      if (this.closed) this.backends.releaseAll(true);
      else this.close();
      return;
    }
    if (this.txMode) {
      this.backends.attachAll();
      try {
        // Its start-up settings are replayed there before what the client sent behind its start-up.
        await this.backends.applySettingsAll();
      } catch (e) {
        input.detach();
        this.settingsFailed(e as PgError);
        return;
      }
      if (this.closed) {
        input.detach();
        return;
      }
    }
    const p = this.backends.primary;
    if (p === undefined) {
      // open() resolves with the primary's link or throws.
      input.detach();
      this.fatal(new PgError(SQLSTATE.connectionFailure, 'no connection to the primary node'));
      return;
    }
    // The default a RESET goes back to: a SERIALIZABLE one keeps reads on the primary.
    this.learnStartupIsolation(p.conn.startupIsolation);
    if (this.txMode) {
      // BackendKeyData is pgrelay's own: the backend serving the client changes.
      this.ready(input, reportFor(p.conn.startupReport, this.settings.startup), TxStatus.Idle);
      this.maybeCheckin();
      return;
    }
    this.ctx.registry.repid(this, this.pid, p.conn.pid, this.secretKey);
    this.pid = p.conn.pid;
    this.backends.attachAll();
    this.ready(input, p.conn.params, p.conn.txStatus);
  }

  // ---------------------------------------------------------------- pool_mode = transaction

  /** Links are being taken from the server pools (the client's messages wait for them). */
  private taking = false;

  /**
   * pool_mode = transaction: a CancelRequest came while the client's statement waited for
   * the pool (nothing of it was sent to a server): it is presented again at once and
   * answered as cancelled instead of run (the connections still come, and go back unused).
   */
  private cancelQueued = false;

  /** The extended-protocol batch answered as cancelled: pgrelay answers its Sync. */
  private cancelledBatch = false;

  /** pool_mode = transaction: a client message waits for `checkout` (not a re-send after a loss). */
  private messageWaitsForPool = false;

  /**
   * Take backend links from the server pools; the message is presented again once they are
   * held. `readOnly`: only the connection to `readNode` (a unit of work that only reads
   * there: read-node-only.ts), else the primary's, then one to `readNode` (drawn when
   * undefined).
   */
  private checkout(readNode?: number, readOnly = false): typeof SUSPEND | undefined {
    const b = this.backends;
    // Idle connections with the session's settings: taken at once, the message goes on now.
    const now = b.checkoutNow(readNode, readOnly);
    if (now === true) return undefined;
    const verdict: typeof SUSPEND = this.wait('pool');
    this.messageWaitsForPool = true;
    // Asked for with the session's own request, without a promise (Backends.checkoutWaiting).
    if (b.checkoutWaiting(readOnly && readNode !== undefined ? readNode : now, readOnly, this.checkedOut)) {
      this.taking = true;
      return verdict;
    }
    this.takeLinks(b.checkout(now), () => undefined);
    return verdict;
  }

  /** Told when the links `checkout` waits for are held (Backends.checkoutWaiting). */
  private readonly checkedOut: CheckoutDone = {
    taken: () => this.linksTaken(undefined),
    failed: (e) => this.linksRefused(e),
  };

  /** Wait for `take`; then `then` (with the links held) and the waiting message is presented again. */
  private takeLinks(take: Promise<void>, then: () => void): void {
    this.taking = true;
    take.then(
      () => this.linksTaken(then),
      (e: unknown) => this.linksRefused(e),
    );
  }

  /** The links waited for are held: `then`, and the waiting message is presented again. */
  private linksTaken(then: (() => void) | undefined): void {
    this.taking = false;
    this.messageWaitsForPool = false;
    if (this.closed) {
      this.backends.checkin();
      return;
    }
    // Not only the read node's taken after all: the batch looked at is run with them as it comes.
    if (!this.backends.withoutPrimary) this.judged = undefined;
    then?.();
    this.resume('pool');
    // Nothing waited for them any more (the statement was cancelled meanwhile): they go back.
    this.maybeCheckin();
  }

  /** The links waited for could not be had: the session ends with why (FATAL). */
  private linksRefused(e: unknown): void {
    this.taking = false;
    this.messageWaitsForPool = false;
    const err =
      e instanceof PgError
        ? e
        : new PgError(SQLSTATE.connectionFailure, `could not open a backend connection: ${(e as Error).message}`);
    this.log.warn({ code: err.code, err: err.message }, 'no backend connection for the transaction');
    this.fatal(err.severity === 'FATAL' ? err : new PgError(err.code, err.message, 'FATAL', err.detail, err.hint));
  }

  /**
   * The primary's link, for a message that needs it. pool_mode = transaction, holding only
   * the read node's connection (a read-only unit of work): never wait for the primary while
   * holding it (two sessions could wait for each other's pools), but give it back once it
   * has answered everything, take the primary's and a read node's, and present the message
   * again (SUSPEND meanwhile).
   */
  needPrimary(): BackendLink | typeof SUSPEND {
    const b = this.backends;
    const p = b.primary;
    if (p !== undefined) return p;
    if (!b.held) return this.checkout() ?? this.heldPrimary();
    if (b.readOnlyTx || b.pinned !== undefined) return this.joinPrimary();
    const waiting = this.leaveReadNode();
    if (waiting !== undefined) return waiting;
    this.debug({ node: b.lbNodeId }, 'read node given back: the primary is needed');
    return this.checkout() ?? this.heldPrimary();
  }

  /**
   * pool_mode = transaction, holding the read node's connection alone in a read-only
   * transaction (or pinned): the primary joins it (Backends.joinPrimary) and the message is
   * presented again (SUSPEND meanwhile). Not once the transaction failed: every statement
   * but its end is refused there as on the primary (25P02), so its read node answers.
   */
  private joinPrimary(): BackendLink | typeof SUSPEND {
    const b = this.backends;
    const l = b.get(b.lbNodeId);
    if (b.readOnlyTx && this.routing.failed && l !== undefined) return l;
    if (b.cancelsInFlight > 0) return this.wait('cancel');
    // What it ran there first is answered before (a savepoint the primary is to be given).
    if (l !== undefined && l.pending > 0) {
      b.flush(l);
      return this.wait('replies');
    }
    this.debug({ node: b.lbNodeId }, 'the primary joins the transaction begun on the read node');
    const verdict: typeof SUSPEND = this.wait('pool');
    this.messageWaitsForPool = true;
    this.takeLinks(b.joinPrimary(), () => undefined);
    return verdict;
  }

  /**
   * pool_mode = transaction, a read-only transaction on the read node alone: the read node's
   * link for a statement the router sends to both nodes that runs there alone (its BEGIN,
   * and with the simple protocol SAVEPOINT, RELEASE, ROLLBACK TO: the primary is given the
   * savepoints then held when it joins; COMMIT, ROLLBACK), or for any statement once the
   * transaction failed; undefined: as usual (a statement for the primary, or another for
   * both, has the primary join first). A read-only BEGIN on the read node alone, outside a
   * transaction, begins one (read-node-only.ts readOnlyBegin; linksFor took only that link).
   */
  private aloneOnReadNode(sql: string, cls: Classification, d: Decision, simple: boolean): BackendLink | undefined {
    const b = this.backends;
    const l = b.withoutPrimary ? b.get(b.lbNodeId) : undefined;
    if (l === undefined) return undefined;
    // Its BEGIN runs there first (it cannot fail): what the primary is given if it joins.
    const r = this.routing;
    if (!b.readOnlyTx && !r.inTransaction && readOnlyBegin(cls, d, r.defaultSerializable, b.defaultReadOnly))
      b.beginReadOnly(sql);
    if (!b.readOnlyTx) return undefined;
    if (r.failed) return l;
    if (d.target !== 'both' || d.standbyText !== undefined || cls.statementCount > 1) return undefined;
    const tx = cls.tx;
    if (tx === 'begin' || tx === 'commit' || tx === 'rollback') return l;
    if (!simple || SAVEPOINTS[tx ?? ''] !== 1 || cls.name === undefined) return undefined;
    // Past READ_ONLY_SAVEPOINTS the primary joins now (what it is given stays bounded).
    return tx !== 'savepoint' || b.readOnlySavepoints.length < READ_ONLY_SAVEPOINTS ? l : undefined;
  }

  /** SessionCore.readOnlyAlone: `aloneOnReadNode` for an unnamed statement of the extended protocol. */
  readOnlyAlone(sql: string, cls: Classification, d: Decision): BackendLink | undefined {
    return this.aloneOnReadNode(sql, cls, d, false);
  }

  /** The primary's link just taken by `checkout` at once (checkoutNow always takes it unless read-only). */
  private heldPrimary(): BackendLink {
    return this.backends.primary as BackendLink;
  }

  unitLink(): BackendLink | typeof SUSPEND {
    const b = this.backends;
    const l = b.withoutPrimary ? b.get(b.lbNodeId) : undefined;
    return l ?? this.needPrimary();
  }

  /**
   * pool_mode = transaction, holding only the read node's connection, for a message that
   * needs more: give it back once it has answered everything (SUSPEND meanwhile, undefined
   * once given back). A batch under way there (its Sync still to come) that was answered
   * without error is ended by a Sync of pgrelay's (its reads are done; the ReadyForQuery is
   * dropped, its portals are gone) and the rest of the batch runs with the links taken next;
   * after an error the client's messages are ignored up to its Sync (onMessage), as
   * PostgreSQL ignores them.
   */
  private leaveReadNode(): typeof SUSPEND | undefined {
    const b = this.backends;
    if (b.cancelsInFlight > 0) return this.wait('cancel');
    for (const l of b.list) {
      if (l === undefined || !l.inPipeline || l.pending > 0 || l.copyIn) continue;
      this.debug({ node: l.nodeId }, 'batch on the read node ended before its Sync: the primary is needed');
      b.request(l, { kind: 'sync', mode: 'drop' }, SYNC);
      l.inPipeline = false;
      l.needsFlush = false;
      this.extended.portalsEnded(l.nodeId);
    }
    if (!b.idle) {
      for (const l of b.list) if (l) b.flush(l);
      return this.wait('replies');
    }
    b.checkin();
    return undefined;
  }

  retireLink(link: BackendLink): void {
    this.debug({ node: link.nodeId }, 'connection to a node the reads come back to: not in step, closed');
    this.backends.retire(link);
    this.extended.forgetNode(link.nodeId);
  }

  /**
   * pool_mode = transaction: the only link held (a read node's) was lost with reads the
   * client need not notice: take the primary's and a read node's, then `resend` them on
   * the primary (as session mode re-sends them there), the client's messages waiting.
   */
  retakeAfterLoss(resend: (primary: BackendLink) => void): void {
    this.takeLinks(this.backends.checkout(), () => {
      const p = this.backends.primary;
      if (p !== undefined) resend(p);
    });
  }

  /**
   * pool_mode = transaction, no links held: the links the message's unit of work takes. Only
   * the read node's for a simple Query, or an extended-protocol batch, that only reads there
   * (read-node-only.ts), outside a transaction, when no write of the session still waits for
   * its position to be read (read_your_writes); the primary's and the read node's for
   * everything else.
   */
  private linksFor(type: number, buf: Buffer, start: number, end: number): UnitLinks {
    // No read node to draw (drawReadNode): nothing to decide before the message runs.
    const router = this.ctx.router;
    if (!router.loadBalancing || router.statementLevel) return PRIMARY_AND_DRAWN;
    if (!this.readsOnly(type, buf, start, end, false)) return PRIMARY_AND_DRAWN;
    const drawn = this.backends.drawReadNode();
    const readOnly = drawn?.readsThere === true;
    // The message is presented again once the link is taken: its batch was looked at already.
    if (readOnly && type !== FE.Query) this.judged = { buf, start };
    return { readNode: drawn?.node, readOnly };
  }

  /** The first message of a batch linksFor found to read only (fitsReadNode need not look again). */
  private judged: { buf: Buffer; start: number } | undefined;

  /**
   * pool_mode = transaction, holding only the read node's connection: may this message run
   * with it (an admin command, another simple Query or batch that only reads there, or the
   * next message of the batch under way there if it only reads)?
   */
  private fitsReadNode(type: number, buf: Buffer, start: number, end: number): boolean {
    if (type === FE.Terminate || this.adminQuery(type, buf, start, end)) return true;
    const judged = this.judged;
    this.judged = undefined;
    if (judged?.buf === buf && judged.start === start) return true;
    return this.readsOnly(type, buf, start, end, this.midBatch());
  }

  /**
   * Does the unit of work starting with this message only read on the load-balance node: a
   * simple Query (readNodeOnly), or an extended-protocol batch whose messages up to its Sync
   * are in the client's input already, looked at where the scanner has them (the chunk
   * they arrived in: framing.ts), without a copy (readOnlyUnit)? `single`: only this
   * message, the next of a batch under way on the read node.
   */
  private readsOnly(type: number, buf: Buffer, start: number, end: number, single: boolean): boolean {
    if (this.routing.inTransaction || !this.route.ryw.writesSettled) return false;
    if (type !== FE.Query) return EXTENDED_TYPES[type] === 1 && readOnlyUnit(buf, start - 5, this.unitLookup, single);
    const q = readCString(buf, start, end);
    if (!q) return false;
    const sql = q[0];
    const cls = this.classify(sql);
    const d = this.route.decideNow(sql, cls);
    const b = this.backends;
    return (
      d !== undefined &&
      (readNodeOnly(sql, cls, d) || readOnlyBegin(cls, d, this.routing.defaultSerializable, b.defaultReadOnly))
    );
  }

  /** An extended-protocol batch is under way on a link (its Sync still to come). */
  private midBatch(): boolean {
    for (const l of this.backends.list) if (l?.inPipeline) return true;
    return false;
  }

  /** What readOnlyUnit asks about a batch's statements and portals. */
  private readonly unitLookup: UnitLookup = {
    decide: (sql, known) => {
      if (known === undefined && this.ctx.services.adminCommand(this, sql)) return undefined;
      const cls = known ?? this.ctx.router.classify(sql);
      const d = this.route.decideNow(sql, cls);
      return d && { cls, d };
    },
    statement: (name) => (this.admin.hasStatement(name) ? undefined : this.extended.statement(name)),
    // Portals live until Sync: only those of the batch under way on the read node.
    portal: (name) =>
      this.backends.withoutPrimary &&
      this.midBatch() &&
      !this.admin.hasPortal(name) &&
      this.extended.portalOn(name, this.backends.lbNodeId),
    defaultSerializable: () => this.routing.defaultSerializable,
    defaultReadOnly: () => this.backends.defaultReadOnly,
  };

  /** The classification of the Query just looked at (linksFor, fitsReadNode), for onQuery. */
  private classified: { sql: string; cls: Classification } | undefined;

  /** Classify a simple Query's text, once for the looks the message gets before it runs. */
  private classify(sql: string): Classification {
    const seen = this.classified;
    if (seen?.sql === sql) return seen.cls;
    const cls = this.ctx.router.classifyOnce(sql);
    this.classified = { sql, cls };
    return cls;
  }

  /**
   * The transaction (or autocommit statement, or pipeline up to Sync) ended and nothing is
   * outstanding or waiting: the links go back to the server pools.
   */
  private maybeCheckin(): void {
    if (!this.txMode || !this.loggedIn || this.closed || !this.backends.held || this.backends.pinned !== undefined)
      return;
    // Links being taken are not given back before the message (or re-sent read) waiting for them has run.
    if (this.taking || this.waitingFor !== null || this.backends.cancelsInFlight > 0 || this.asyncQueue.length > 0)
      return;
    if (this.routing.inTransaction || !this.backends.idle) return;
    this.backends.checkin();
  }

  /**
   * pool_mode = transaction, no connection held (nothing outstanding, no transaction):
   * messages pgrelay answers itself, so that the client does not wait for the pool. A
   * Parse of a statement a server accepted before, a Close of a client's statement, a
   * Sync (ReadyForQuery idle) and a Flush. Undefined: the message needs a backend.
   */
  private withoutBackend(type: number, buf: Buffer, start: number, end: number): Drop | undefined {
    switch (type) {
      case FE.Parse: {
        const n = readCString(buf, start, end);
        const q = n && readCString(buf, n[1], end);
        if (!n || !q || this.ctx.services.adminCommand(this, q[0])) return undefined;
        if (this.ctx.config().log_statement && !this.scanner.resuming)
          this.log.info({ statement: redact(q[0]), prepared: n[0] }, 'statement (parse)');
        return this.extended.parseIdle(n[0], q[0], buf, start, end) ? DROP : undefined;
      }
      case FE.Close: {
        const name = readCString(buf, start + 1, end);
        return name && this.extended.closeIdle(buf[start], name[0]) ? DROP : undefined;
      }
      case FE.Sync:
        this.writeClient(readyForQuery(TxStatus.Idle));
        return DROP;
      case FE.Flush:
        return DROP;
      default:
        return undefined;
    }
  }

  /**
   * pool_mode = transaction, no links held: does the unit of work start by reading the
   * sequence state (a simple Query, or the Bind of a prepared statement, calling lastval()
   * or currval() and not nextval() before them)?
   */
  private readsSequenceFirst(type: number, buf: Buffer, start: number, end: number): boolean {
    let cls: Classification | undefined;
    if (type === FE.Query) {
      // A call has a parenthesis: most texts are passed over without decoding them (looked
      // for within this message only: the chunk may hold many more).
      let paren = start;
      while (paren < end && buf[paren] !== 0x28) paren++;
      const q = paren < end ? readCString(buf, start, end) : undefined;
      cls = q && this.classify(q[0]);
    } else if (type === FE.Bind) {
      const portal = readCString(buf, start, end);
      const stmt = portal && readCString(buf, portal[1], end);
      cls = stmt && this.unitLookup.statement(stmt[0])?.cls;
    }
    return cls !== undefined && readsSequenceState(cls) && !mayCallNextval(cls);
  }

  /**
   * pool_mode = transaction: lastval()/currval() inside a transaction block whose connection
   * holds another client's sequence state (or none of this one's): the connection forgets it
   * first, so that PostgreSQL answers 55000 rather than another client's value. (At the start
   * of a unit of work, refuseSequenceRead.)
   */
  guardSequenceState(cls: Classification): void {
    const b = this.backends;
    if (!this.routing.inTransaction || !readsSequenceState(cls) || mayCallNextval(cls) || b.sequenceStateOwn) return;
    b.forgetSequenceState();
  }

  /**
   * lastval()/currval() at the start of a unit of work whose connection is not the one the
   * client's nextval() ran on (another client used it since, or it closed): what it holds
   * there is another client's, or nothing. Refused as PostgreSQL refuses a sequence state
   * the session does not have (55000), rather than answered with another client's value.
   */
  private refuseSequenceRead(type: number): Drop {
    return this.answerUnit(type, {
      severity: 'ERROR',
      code: SQLSTATE.objectNotInPrerequisiteState,
      message:
        "lastval() and currval() are not available here: in pool_mode = transaction the server connection that ran this session's nextval() has served another client since",
      hint: 'Use INSERT … RETURNING, or call them in the same transaction (or Query) as the INSERT or nextval(); or give this database or user pool_mode = session (database_pool_settings, user_pool_settings).',
    });
  }

  /**
   * The statement a CancelRequest came for while it waited for the pool: the client gets
   * PostgreSQL's 57014, then (simple Query) ReadyForQuery; an extended-protocol batch is
   * skipped up to its Sync, as PostgreSQL skips it after an error, and its Sync answered.
   */
  private cancelledWhileQueued(type: number): Drop {
    return this.answerUnit(type, {
      severity: 'ERROR',
      code: SQLSTATE.queryCanceled,
      message: 'canceling statement due to user request',
    });
  }

  /**
   * A unit of work that never reached a server answered with an error: then (simple
   * Query) ReadyForQuery; an extended-protocol batch is skipped up to its Sync, as
   * PostgreSQL skips it after an error, and its Sync answered.
   */
  private answerUnit(type: number, fields: Parameters<typeof errorResponse>[0]): Drop {
    this.judged = undefined;
    const err = errorResponse(fields);
    if (type === FE.Query) this.writeClient(Buffer.concat([err, readyForQuery(TxStatus.Idle)]));
    else {
      this.writeClient(err);
      this.skippingUntilSync = true;
      this.cancelledBatch = true;
    }
    return DROP;
  }

  /** A simple Query that is an admin command (answered by pgrelay: no backend needed). */
  private adminQuery(type: number, buf: Buffer, start: number, end: number): boolean {
    if (type !== FE.Query || !mayBeAdminCommandAt(buf, start, end)) return false;
    const q = readCString(buf, start, end);
    return q !== undefined && this.ctx.services.adminCommand(this, q[0]) !== undefined;
  }

  /** pool_mode = transaction: the client used session state; it keeps its backends until it ends. */
  pin(reason: string): void {
    if (!this.txMode || this.backends.pinned !== undefined) return;
    this.backends.pinned = reason;
    this.log.info({ reason }, 'session pinned to its backend connections (pool_mode = transaction)');
    this.ctx.services.metrics.pinned(reason);
  }

  /** Pin the session when `sql` uses state that lives in the backend session. */
  pinFor(sql: string, cls: Classification): void {
    if (!this.txMode || this.backends.pinned !== undefined) return;
    const reason = pinReason(sql, cls);
    if (reason !== undefined) this.pin(reason);
  }

  settingsDiverged(link: BackendLink, error: ErrorFieldMap): void {
    this.route.settingsDiverged(link, error);
  }

  beforeSettingsOn(link: BackendLink): void {
    this.route.ryw.beforeSettingsOn(link);
  }

  /**
   * pool_mode = transaction: a server connection refused the session's settings (a start-up
   * parameter with a value PostgreSQL rejects, as it would have refused the start-up).
   */
  settingsFailed(err: PgError): void {
    this.log.warn({ code: err.code, err: err.message }, 'session settings refused by the server connection');
    this.fatal(err);
  }

  /** A user listed in admin_users. */
  get isAdminUser(): boolean {
    return this.ctx.config().admin_users.includes(this.user);
  }

  /** An admin user whose backends cannot be reached (no primary, or it does not answer) gets an admin-only session. */
  private mayRunAdminOnly(err: PgError): boolean {
    const unreachable = err.code === SQLSTATE.cannotConnectNow || err.code.startsWith('08');
    return unreachable && this.isAdminUser;
  }

  /**
   * The session's default isolation at start-up, `level` being what its server connections
   * start with (their database's and role's default). pool_mode = transaction: those
   * connections were opened without the client's start-up options, replayed on them, so an
   * isolation among those is the session's (`level` still decides whether it may use a
   * standby: Backends.connectionsSerializable).
   */
  private learnStartupIsolation(level: string | undefined): void {
    if (!this.txMode) {
      startupIsolation(this.routing, level);
      return;
    }
    this.backends.connectionsSerializable = level === 'serializable';
    const own = this.settings.startup.get('default_transaction_isolation');
    startupIsolation(this.routing, own === undefined ? level : isolationFromValue(own.trim().toLowerCase()));
  }

  connectionIsolation(level: string): void {
    // A start-up option of the client's own is replayed on every connection: it stays the default.
    if (!this.settings.startup.has('default_transaction_isolation')) connectionIsolation(this.routing, level);
  }

  /** Tell the client it is logged in, then handle what it sent meanwhile and read on. */
  private ready(input: ClientInput, parameters: ReadonlyMap<string, string>, status: number): void {
    this.loggedIn = true;
    const parts: Buffer[] = [authenticationOk()];
    for (const [k, v] of parameters) {
      parts.push(parameterStatus(k, v));
      this.reported.told(k, v);
    }
    parts.push(backendKeyData(this.pid, this.secretKey), readyForQuery(status));
    this.client.write(Buffer.concat(parts));
    const early = input.detach();
    this.lastActivity = Date.now();
    // What the client sent behind its start-up comes first, then what the socket holds since.
    if (early.length > 0) this.onClientData(early);
    if (this.closed) return;
    // The client's end is handled here (see onClientEnd), not by closing at once.
    this.client.allowHalfOpen = true;
    this.client.on('end', this.onClientEnd);
    readChunks(this.client, this.onClientData);
    this.readingClient = true;
    if (!this.clientPaused) this.client.resume();
  }

  /** The client ended its side of the connection (read while its messages may still wait: see updateReading). */
  private clientEnded = false;

  private readonly onClientEnd = (): void => {
    this.clientEnded = true;
    this.endWhenRead();
  };

  /**
   * After the client's end, the messages it sent before it run first, as on a direct
   * connection (PostgreSQL reads the end only after them); then the connection is closed
   * as when the end is read (replies still on their way are not sent).
   */
  private endWhenRead(): void {
    if (!this.clientEnded || this.closed) return;
    // A server waiting for the client's copy data would wait for ever (what waits may wait
    // for it): the session ends now, as PostgreSQL ends a COPY whose client went away.
    if (this.waitingFor !== null || this.scanner.suspended) {
      if (!this.backends.list.some((l) => l?.copying === true)) return;
    }
    this.client.end();
  }

  // ---------------------------------------------------------------- client flow control

  private readonly onClientData = (chunk: Buffer): void => {
    this.lastActivity = Date.now();
    this.ctx.services.metrics.clientBytesIn(chunk.length);
    // Sent while its messages waited (the scanner keeps it): the socket is paused now.
    const duringWait = this.waitingFor !== null;
    this.scanner.push(chunk);
    this.updateReading(duringWait);
    // Replies pgrelay gave itself may have ended the transaction's last request.
    if (this.txMode) this.maybeCheckin();
  };

  /**
   * Read the client only while its messages are not waiting and no backend is congested.
   * A wait alone does not stop the reads: most waits (for the pool, for a reply) end
   * before the client sends more, and each pause and resume costs a read stop and start
   * (and an epoll change). A chunk that arrives during a wait (`arrived`) is kept by the
   * scanner, and the socket is paused then: one chunk at most. An end the client sends
   * during a wait may so be read before its messages ran: see endWhenRead.
   */
  private updateReading(arrived = false): void {
    if (this.closed) return;
    const hold = this.backends.congested || (this.waitingFor !== null && (arrived || this.clientPaused));
    if (hold === this.clientPaused) return;
    this.clientPaused = hold;
    if (hold) this.client.pause();
    else this.client.resume();
  }

  /** Too much is outstanding on the backends: the client's next message waits. */
  private overloaded(): boolean {
    return this.backends.congested || this.backends.pendingTotal >= MAX_PENDING_REQUESTS;
  }

  backendCongested(_link: BackendLink): void {
    this.updateReading();
  }

  backendDrained(_link: BackendLink): void {
    this.continueAfterBackpressure();
    this.updateReading();
  }

  private continueAfterBackpressure(): void {
    if (
      this.waitingFor === 'backpressure' &&
      !this.backends.congested &&
      this.backends.pendingTotal <= RESUME_PENDING_REQUESTS
    )
      this.resume('backpressure');
  }

  wait(reason: WaitReason): typeof SUSPEND {
    this.waitingFor = reason;
    return SUSPEND;
  }

  waitAfter(reason: WaitReason): typeof CONSUME_AND_SUSPEND {
    this.waitingFor = reason;
    return CONSUME_AND_SUSPEND;
  }

  resume(reason: WaitReason): void {
    if (this.closed || this.waitingFor !== reason) return;
    if (reason === 'admin' && this.endAfterAdmin !== undefined) return this.fatal(this.endAfterAdmin);
    this.waitingFor = null;
    this.scanner.resume();
    this.updateReading();
    this.endWhenRead();
  }

  flushRun(): void {
    this.scanner.flushRun();
  }

  // ---------------------------------------------------------------- client → backends

  /** Where CopyData goes: the link of the last forwarded request. */
  get passAction(): BackendLink | Drop {
    return this.backends.passTo;
  }

  onMessage(type: number, buf: Buffer, start: number, end: number): Verdict<BackendLink> {
    const v = this.handleMessage(type, buf, start, end);
    // SUSPEND with no wait left: what the message waited for happened while it was being
    // handled (a callback run at once), and that resume found nothing suspended. Present it
    // again on the next turn instead of waiting for nothing (a bug: logged once).
    if (v === SUSPEND && this.waitingFor === null && !this.closed) this.resumeLost();
    return v;
  }

  private resumeLost(): void {
    if (!this.resumeLostLogged) {
      this.resumeLostLogged = true;
      this.log.error('internal: a wait ended before its message was suspended; presenting it again');
    }
    this.waitingFor = 'requeue';
    setImmediate(() => this.resume('requeue'));
  }

  private resumeLostLogged = false;

  private handleMessage(type: number, buf: Buffer, start: number, end: number): Verdict<BackendLink> {
    if (this.closed) return DROP;
    if (TRACE) trace(this.pid, type, buf, start, end);
    // After an extended-protocol error PostgreSQL ignores every message up to Sync, also
    // those it receives after reporting the error: so does pgrelay, whatever node they
    // would go to (a pipeline can span nodes).
    if (type === FE.Sync) {
      this.skippingUntilSync = false;
      if (this.cancelledBatch) {
        this.cancelledBatch = false;
        this.writeClient(readyForQuery(TxStatus.Idle));
        return DROP;
      }
    } else if (this.skippingUntilSync && type !== FE.Terminate) return DROP;
    if (this.adminOnly && type !== FE.Terminate) return this.adminOnly.onMessage(type, buf, start, end);
    // A server waiting for the client's copy data receives whatever the client sends: a
    // message other than the copy's is a protocol violation it answers itself (08P01, then
    // FATAL), as a direct connection does, and the session ends with it.
    if (type !== FE.CopyData && type !== FE.CopyDone && type !== FE.CopyFail && type !== FE.Terminate) {
      const links = this.backends.list;
      for (let i = 0; i < links.length; i++) {
        const l = links[i];
        if (l?.copying) return l;
      }
    }
    if (this.cancelQueued) {
      this.cancelQueued = false;
      if (CANCELLABLE[type] === 1) return this.cancelledWhileQueued(type);
    }
    // An earlier pipeline ran BEGIN, COMMIT…: where this message goes depends on its answer.
    if (type !== FE.Terminate && this.extended.awaitsTransactionCommand()) return this.extended.awaitAnswers();
    const b = this.backends;
    // Only a read node's connection is held (an autocommit read): anything but another such
    // read waits until it has answered; then it goes back, and the message takes links anew.
    // (A read-only transaction, or a session pinned, on the read node alone: the primary joins it when needed.)
    if (
      this.txMode &&
      b.withoutPrimary &&
      !b.readOnlyTx &&
      b.pinned === undefined &&
      !this.fitsReadNode(type, buf, start, end)
    ) {
      const waiting = this.leaveReadNode();
      if (waiting !== undefined) return waiting;
    }
    if (this.txMode && !b.held && type !== FE.Terminate && !this.adminQuery(type, buf, start, end)) {
      // Links being taken after a read node was lost: what follows waits for the re-sent reads.
      if (this.taking) return this.wait('pool');
      const own = this.withoutBackend(type, buf, start, end);
      if (own !== undefined) return own;
      if (this.readsSequenceFirst(type, buf, start, end)) {
        // Only the connection whose sequence state is the client's will do.
        if (!b.takeLastUnit()) return this.refuseSequenceRead(type);
      } else {
        const links = this.linksFor(type, buf, start, end);
        const waiting = this.checkout(links.readNode, links.readOnly);
        if (waiting !== undefined) return waiting;
      }
      // Taken at once (checkoutNow): the message goes on now, not presented again.
      this.judged = undefined;
    }
    if (this.overloaded()) return this.wait('backpressure');
    if (this.backends.cancelsInFlight > 0) return this.wait('cancel');
    switch (type) {
      case FE.Query:
        return this.onQuery(buf, start, end);
      case FE.Parse: {
        const n = readCString(buf, start, end);
        const q = n && readCString(buf, n[1], end);
        if (!n || !q) return this.protocolViolation('invalid Parse message');
        const name = n[0];
        const sql = q[0];
        if (this.ctx.config().log_statement && !this.scanner.resuming)
          this.log.info({ statement: redact(sql), prepared: name }, 'statement (parse)');
        const req = this.ctx.services.adminCommand(this, sql) ?? this.extended.ownDeallocate(name, sql);
        if (req) {
          const types = parseParamTypes(buf, q[1], end);
          if (!types) return this.protocolViolation('invalid Parse message');
          const taken = this.admin.hasStatement(name) || this.extended.statement(name) !== undefined;
          const v = this.admin.parse(name, req, types, taken);
          if (v === DROP && (name === '' || !taken)) this.extended.forgetStatement(name);
          return v;
        }
        this.admin.forgetStatement(name);
        return this.extended.parse(name, sql, buf, start, end);
      }
      case FE.Bind: {
        const portal = readCString(buf, start, end);
        const stmt = portal && readCString(buf, portal[1], end);
        if (!portal || !stmt) return this.protocolViolation('invalid Bind message');
        if (this.admin.hasStatement(stmt[0])) {
          const counts = bindCounts(buf, stmt[1], end);
          if (!counts) return this.protocolViolation('invalid Bind message');
          this.extended.forgetPortal(portal[0]);
          return this.admin.bind(portal[0], stmt[0], counts);
        }
        this.admin.forgetPortal(portal[0]);
        return this.extended.bind(portal[0], stmt[0], buf, start, end);
      }
      case FE.Describe:
      case FE.Close: {
        const kind = buf[start];
        const name = readCString(buf, start + 1, end);
        if (!name || (kind !== STATEMENT && kind !== PORTAL))
          return this.protocolViolation(`invalid ${type === FE.Close ? 'Close' : 'Describe'} message`);
        const admin = kind === STATEMENT ? this.admin.hasStatement(name[0]) : this.admin.hasPortal(name[0]);
        if (type === FE.Close)
          return admin ? this.admin.close(kind, name[0]) : this.extended.close(kind, name[0], buf, start, end);
        return admin ? this.admin.describe(kind, name[0]) : this.extended.describe(kind, name[0], buf, start, end);
      }
      case FE.Execute: {
        const name = readCString(buf, start, end);
        if (!name) return this.protocolViolation('invalid Execute message');
        if (this.admin.hasPortal(name[0]))
          return this.admin.execute(name[0], name[1] + 4 <= end ? buf.readInt32BE(name[1]) : 0);
        return this.extended.execute(name[0], buf, start, end);
      }
      case FE.Sync:
        return this.extended.sync();
      case FE.Flush:
        return this.extended.flush();
      case FE.FunctionCall: {
        const p = this.needPrimary();
        if (p === SUSPEND) return p;
        if (!this.backends.gate(p)) return this.wait('replies');
        // A function called this way may write (lo_write…).
        this.route.ryw.wrote();
        return this.backends.send(
          p,
          { kind: 'query', mode: 'forward', done: (e) => this.route.txStatusIs(e.status ?? TxStatus.Idle) },
          this.routing.inTransaction,
        );
      }
      case FE.CopyDone:
      case FE.CopyFail:
        // The copy's input ends here: Syncs after it are answered again.
        for (const l of this.backends.list) if (l) l.copyEnded();
        return this.passAction;
      case FE.Terminate:
        // Requests pipelined before Terminate still reach the server (their effects count).
        this.scanner.flushRun();
        this.terminated = true;
        this.close();
        return DROP;
      default:
        return this.protocolViolation(`invalid frontend message type ${type} ('${printable(type)}')`);
    }
  }

  emit(link: BackendLink, bytes: Buffer): void {
    // Not a link given back (pool_mode = transaction), maybe another session's since (adopt).
    if (this.closed || !link.live || link.owner !== this) return;
    link.write(bytes);
  }

  onFramingError(message: string, code: 'length' | 'size'): void {
    this.log.warn({ err: message }, 'malformed message from client');
    this.fatal(
      new PgError(
        code === 'size' ? SQLSTATE.programLimitExceeded : SQLSTATE.protocolViolation,
        code === 'size' ? `${message} (max_message_size)` : message,
      ),
    );
  }

  protocolViolation(message: string): Drop {
    return this.fail(new PgError(SQLSTATE.protocolViolation, message));
  }

  fail(err: PgError): Drop {
    this.fatal(err);
    return DROP;
  }

  // ---- simple query

  private onQuery(buf: Buffer, start: number, end: number): Verdict<BackendLink> {
    const q = readCString(buf, start, end);
    if (!q) return this.protocolViolation('invalid Query message: missing string terminator');
    const sql = q[0];
    if (this.ctx.config().log_statement && !this.scanner.resuming)
      this.log.info({ statement: redact(sql) }, 'statement');
    // A simple Query drops the unnamed statement (PostgreSQL: wherever it runs).
    this.extended.forgetStatement('');
    this.admin.forgetStatement('');
    const req = this.ctx.services.adminCommand(this, sql);
    if (req) return this.admin.query(req);
    const b = this.backends;
    const cls = this.txMode ? this.classify(sql) : this.ctx.router.classifyOnce(sql);
    this.classified = undefined;
    if (this.txMode) {
      const own = this.extended.pooledQuery(cls);
      if (own !== undefined) return own;
    }
    const d = this.route.decide(sql, cls);
    if (d === SUSPEND) return d;
    // pool_mode = transaction: a read-only transaction on the read node alone (or its BEGIN).
    const alone = b.withoutPrimary ? this.aloneOnReadNode(sql, cls, d, true) : undefined;
    this.pinFor(sql, cls);
    const seconds = alone === undefined && d.target === 'both' ? b.secondLinks(d.allStandbys === true, b.primary) : [];
    if (seconds.length > 0) {
      const p = this.needPrimary();
      if (p === SUSPEND) return p;
      // A SET outside a transaction waits, as a read would, for its standbys to replay the
      // session's writes: SET ROLE of a role it just created must find that role there too.
      if (cls.kind === 'set') for (const l of seconds) if (this.route.ryw.settingOn(l) === SUSPEND) return SUSPEND;
      if (!b.gate(null)) return this.wait('replies');
      // SET, RESET, DISCARD, BEGIN/COMMIT, savepoints, weak LOCK: session state, no data a read
      // must wait for (a COMMIT's writes were noted when they were sent).
      this.route.ryw.queryEnds(cls, undefined);
      const verdict: typeof CONSUME_AND_SUSPEND = this.waitAfter('both');
      this.both.run(sql, cls, d, p, seconds);
      return verdict;
    }
    // DEALLOCATE of a statement prepared with Parse: where it is parsed (not in an aborted
    // transaction: the primary refuses it there, 25P02, as a direct connection does).
    const homes = this.routing.failed ? undefined : this.extended.deallocateLinks(cls);
    const link = alone ?? homes?.[0] ?? this.route.linkFor(d);
    if (link === SUSPEND) return link;
    if (!b.gate(link)) return this.wait('replies');
    if (homes !== undefined)
      for (const l of homes.slice(1)) b.request(l, { kind: 'query', mode: 'drop', skippable: true }, queryMessage(sql));
    if (this.txMode && link === b.primary) this.guardSequenceState(cls);
    this.route.counted(link, sql, cls);
    if (d.write && link === b.primary) this.route.ryw.wrote();
    this.route.ryw.queryEnds(cls, link);
    const restore = b.restoreFor(cls);
    // The portals bound before the Query (see statementDone).
    const mark = this.extended.portalMark();
    // DEALLOCATE: the client's names change at its answer (extended.ts dropping).
    const drops = dropsStatements(cls);
    if (drops) this.extended.dropping();
    const e: LinkExpectation = {
      kind: 'query',
      mode: 'forward',
      // Whether its DEALLOCATE ALL ran if a later statement fails (see statementDone).
      completed: cls.multiDeallocatesAll !== undefined ? 0 : undefined,
      done:
        alone === undefined
          ? (x, l) => {
              if (drops) this.extended.dropped();
              this.statementDone(sql, cls, d, x, l, mark);
            }
          : (x, l) => {
              if (drops) this.extended.dropped();
              // The savepoints the primary is given if it joins (not what failed).
              if (x.error === undefined) b.readOnlyRan(cls);
              this.statementDone(sql, cls, d, x, l, mark);
            },
      // A read outside a transaction on a standby can be re-sent elsewhere if the standby dies first.
      resend: this.route.resendable(link) ? resendSame(b, buf.subarray(start - 5, end)) : undefined,
    };
    if (restore === undefined) return b.send(link, e, this.routing.inTransaction);
    // RESET ALL and the like: the client's start-up settings are set again right behind it.
    return b.sendRestoring(link, e, Buffer.from(buf.subarray(start - 5, end)), this.routing.inTransaction, restore);
  }

  /** After a simple-protocol statement: routing state, and keeping nodes' transaction states in step. */
  private statementDone(
    sql: string,
    cls: Classification,
    d: Decision,
    e: LinkExpectation,
    link: BackendLink,
    /** The portals bound before the Query (extended.portalMark). */
    mark: number,
  ): void {
    // The client left before this reply ended (its backends finish it before their reset):
    // nothing of the session's state to update.
    if (this.closed) return;
    const status = e.status ?? TxStatus.Idle;
    const wasInTx = this.routing.inTransaction;
    // Outside a transaction now, or in one the Query began after ending the last (COMMIT;
    // BEGIN): the portals bound before the Query ended with the last one.
    if (status === TxStatus.Idle || (cls.multiEnds === true && !e.error)) this.extended.transactionEndedAt(mark);
    if (d.target === 'both' || this.txMode) this.settings.record(sql, cls, !e.error, status);
    // A DEALLOCATE ALL that ran before a statement failed: not undone (not transactional).
    if (e.error && cls.multiDeallocatesAll !== undefined && (e.completed ?? 0) >= cls.multiDeallocatesAll)
      this.extended.statementDone(cls);
    if (!e.error) {
      this.extended.statementDone(cls);
      // Each statement it ran replaced the unnamed portal (one that failed may have stopped
      // before any portal: then it stays).
      if (cls.statementCount > 0) this.extended.unnamedPortalGone(mark, link);
    } else this.extended.queryFailed(status, link, e.error.C);
    this.route.outcome(cls, d, !e.error, status);
    this.route.txStatusIs(status);
    // COMMIT; BEGIN in one Query ran on the primary alone and succeeded: the transaction the
    // other links shared ended there, and the one now open is the primary's alone. (Idle:
    // txStatusIs did it. Failed: it may have failed before its COMMIT, and goes on failed.)
    if (cls.multiEnds === true && link === this.backends.primary && status === TxStatus.InTransaction)
      this.backends.endTransactionElsewhere(true);
    // SAVEPOINT…; … in one Query, in the transaction: the rest of it is the primary's, failed or not.
    else if (cls.multiSavepoints === true && wasInTx && status !== TxStatus.Idle && link === this.backends.primary)
      this.both.savepointsOnPrimaryAlone();
    else if (status === TxStatus.Failed) this.both.transactionFailedOn(link);
  }

  // ---------------------------------------------------------------- backends → client (LinkOwner)

  writeClient(bytes: Buffer): boolean {
    if (this.closed || this.client.destroyed) return true;
    this.ctx.services.metrics.clientBytesOut(bytes.length);
    return writeTo(this.client, bytes);
  }

  onClientDrain(fn: () => void): void {
    this.drainWaiters.push(fn);
  }

  private readonly onDrain = (): void => {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const fn of w) fn();
  };

  asyncMessage(link: BackendLink, bytes: Buffer): void {
    // Notifications and notices from the primary while it is idle; other nodes' are dropped.
    if (link !== this.backends.primary) return;
    if (bytes[0] === BE.ParameterStatus) {
      const r = decodeParameterStatus(bytes, 5, bytes.length);
      const told = r === undefined ? undefined : this.tellClient(r[0], r[1]);
      if (r !== undefined && told === undefined) return;
      if (r !== undefined && told !== r[1]) bytes = parameterStatus(r[0], told as string);
    }
    if (this.backends.owesClient()) {
      // Another node is answering the client: keep them for after its reply, within a bound.
      this.asyncQueue.push(bytes);
      this.asyncQueued += bytes.length;
      if (this.asyncQueued > ASYNC_QUEUE_BYTES && this.asyncHeld === undefined) {
        this.asyncHeld = link;
        link.holdReading();
      }
    } else if (!this.writeClient(bytes)) link.waitForClient();
  }

  progressed(_link: BackendLink): void {
    this.lastActivity = Date.now();
    if (this.asyncQueue.length > 0 && !this.backends.owesClient()) {
      const drained = this.writeClient(Buffer.concat(this.takeAsyncQueue()));
      const held = this.asyncHeld;
      this.asyncHeld = undefined;
      if (!drained) this.backends.primary?.waitForClient();
      held?.releaseReading();
    }
    this.resume('replies');
    this.continueAfterBackpressure();
    if (this.txMode) this.maybeCheckin();
  }

  skipUntilSync(): void {
    this.skippingUntilSync = true;
  }

  /**
   * LinkOwner.tellClient. A DISCARD ALL's start-up values, set again inside the transaction
   * its pipeline began, are undone there if that transaction fails or rolls back, as the
   * DISCARD ALL's own are not: a report of the connection's default then tells the start-up
   * value (Backends.restoredInTx; the connection is reset when the transaction ends).
   */
  readonly tellClient = (name: string, value: string): string | undefined => {
    const r = this.backends.restoredInTx;
    const key = r === undefined ? '' : name.toLowerCase();
    const told = r !== undefined && r.defaults.get(key) === value ? (r.values.get(key) ?? value) : value;
    return this.reported.tells(name, told) ? told : undefined;
  };

  backendError(link: BackendLink, f: ErrorFieldMap): void {
    this.ctx.services.countError(link.nodeId, f.V ?? f.S ?? 'ERROR', f.C ?? '');
  }

  backendFatal(link: BackendLink, f: ErrorFieldMap): void {
    this.log.warn({ node: link.nodeId, code: f.C, err: f.M }, 'backend sent FATAL');
    if (f.C === SQLSTATE.adminShutdown || f.C === SQLSTATE.crashShutdown)
      void this.ctx.services.reportBackendError(link.nodeId, 'shutdown');
  }

  linkBroken(link: BackendLink, message: string): void {
    this.log.error({ node: link.nodeId, err: message }, 'invalid data from backend');
    link.conn.socket.destroy();
  }

  linkClosed(link: BackendLink): void {
    if (this.closed) return;
    if (!link.fatal) void this.ctx.services.reportBackendError(link.nodeId, 'io');
    const b = this.backends;
    // A read-only transaction (or a pinned session) on the read node alone: its state is lost with it.
    const alone = b.withoutPrimary && (b.readOnlyTx || b.pinned !== undefined);
    if (link !== b.primary && !alone && moveReadsOff(this, link, (id) => this.extended.forgetNode(id))) return;
    if (this.lostBetweenUnits(link)) return;
    if (link.fatal) {
      this.closeAfterFatal(link);
      return;
    }
    const c = link.conn;
    this.log.warn({ node: link.nodeId, backendPid: c.pid }, 'backend connection closed unexpectedly');
    this.fatal(
      new PgError(
        SQLSTATE.connectionFailure,
        `server closed the connection unexpectedly (backend node ${link.nodeId} at ${c.host}:${c.port})`,
        'FATAL',
        'The backend terminated abnormally before or while processing the request.',
      ),
    );
  }

  /**
   * pool_mode = transaction: the primary's connection closed (or sent FATAL) while the
   * client is between transactions and only pgrelay's own requests were outstanding there
   * (a write position read behind a write, settings): nothing of the client's is lost, so
   * the session goes on and its next unit of work takes another connection, as after a
   * pooled connection lost while idle. The position read failing, its reads go to the
   * primary until one is read.
   */
  private lostBetweenUnits(link: BackendLink): boolean {
    if (!this.txMode || link !== this.backends.primary || this.backends.pinned !== undefined) return false;
    if (this.routing.inTransaction || link.visible > 0 || link.copyIn || link.inPipeline) return false;
    // Links being taken (their settings replayed before the client's statement) fail as before.
    if (this.taking || this.waitingFor !== null) return false;
    this.log.warn(
      { node: link.nodeId, backendPid: link.conn.pid },
      'backend connection closed between transactions; the next one takes another',
    );
    this.backends.dropPrimary(link);
    // A position read fails (settings replayed there need nothing: the connection is gone).
    const lost: ErrorFieldMap = { S: 'FATAL', C: SQLSTATE.connectionFailure, M: 'connection lost' };
    for (const e of link.replies.takePending())
      if (e.mode === 'capture')
        queueMicrotask(() => e.done?.({ kind: e.kind, mode: e.mode, error: lost, status: TxStatus.Idle }, link));
    queueMicrotask(() => this.maybeCheckin());
    return true;
  }

  // ---------------------------------------------------------------- state for the rest of pgrelay

  /** Node the session balances its reads to (SHOW pool_nodes load_balance_node). */
  get lbNodeId(): number {
    return this.backends.lbNodeId;
  }

  /** An admin command of this session is running (a graceful detach does not wait for it). */
  get runningAdmin(): boolean {
    return this.admin.running;
  }

  /** The client's last statement left a transaction block open (or failed) on its backends. */
  get inTransaction(): boolean {
    return this.routing.inTransaction;
  }

  /** pool_mode = transaction: waiting for a connection of a server pool (SHOW pool_processes). */
  get waitingForPool(): boolean {
    return this.waitingFor === 'pool';
  }

  /** True while a request is outstanding on any backend. */
  get busy(): boolean {
    return this.backends.busy;
  }

  /** The transaction status the client last saw from the primary. */
  get txStatus(): number {
    return this.backends.txStatus;
  }

  get backendConnections(): BackendConnection[] {
    return this.backends.connections;
  }

  /** Bytes written to the client that it has not taken yet. */
  get bufferedToClient(): number {
    return queuedBytes(this.client);
  }

  /** Bytes written to the backends that they have not taken yet. */
  get bufferedToBackends(): number {
    let n = 0;
    for (const l of this.backends.list) if (l) n += queuedBytes(l.conn.socket);
    return n;
  }

  /** The client is not read: a backend is congested or too many requests are outstanding. */
  get clientReadsPaused(): boolean {
    return this.waitingFor === 'backpressure' || (this.clientPaused && this.backends.congested);
  }

  /** A backend is not read because the client does not take its replies. */
  get backendReadsPaused(): boolean {
    if (this.asyncHeld !== undefined) return true;
    for (const l of this.backends.list) if (l?.waitingForClient) return true;
    return false;
  }

  /**
   * Node `nodeId` went down (a failover, a detach, a promote of another node) while this
   * session held its connection as the primary's: the session ends with FATAL 57P01, as
   * pgpool-II ends every session at a primary failover. Its next write would go to a node
   * out of service (alive, when detached: the write would be lost with its timeline), and
   * its transaction there must not commit: the connection is closed, not reused. An admin
   * command the session is running (the detach itself) is answered first. pool_mode =
   * transaction: sessions between transactions hold no connection and go on.
   */
  endIfPrimaryOn(nodeId: number, reason: string): void {
    if (this.closed || this.backends.primary?.nodeId !== nodeId) return;
    const err = new PgError(
      SQLSTATE.adminShutdown,
      `terminating connection because backend node ${nodeId}, the primary this session was using, went down (${reason})`,
      'FATAL',
      undefined,
      'Reconnect: new sessions use the new primary.',
    );
    this.log.warn({ node: nodeId, reason }, 'session ended: its primary node went down');
    if (this.admin.running) this.endAfterAdmin = err;
    else this.fatal(err);
  }

  /** The session ends once its running admin command has answered (endIfPrimaryOn). */
  private endAfterAdmin: PgError | undefined;

  /** Is this session using node `id` (for a graceful detach)? */
  usesNode(id: number): boolean {
    return this.backends.get(id) !== undefined;
  }

  /**
   * Forward a CancelRequest to each backend running a request of this session. Resolves
   * once every server has processed its CancelRequest (closed the connection), as
   * PostgreSQL closes a client's CancelRequest connection only after signalling the backend.
   */
  cancel(): Promise<void> {
    const b = this.backends;
    // pool_mode = transaction: the client's statement waits for the pool, nothing of it ran
    // anywhere (no backend owes the client a reply): PostgreSQL would cancel it, so does pgrelay.
    if (this.messageWaitsForPool && this.waitingFor === 'pool' && !this.routing.inTransaction && !b.owesClient()) {
      this.log.info('cancel request for a statement waiting for a server connection');
      this.cancelQueued = true;
      this.resume('pool');
      return Promise.resolve();
    }
    return b.cancel(() => {
      if (this.backends.cancelsInFlight === 0) {
        this.resume('cancel');
        this.maybeCheckin();
      }
    });
  }

  /**
   * Report a FATAL error to the client and end the session. When the client is in the
   * middle of a message from a backend, nothing more is written: the connection just
   * ends, as when a server dies under a direct client.
   */
  fatal(err: PgError): void {
    this.endWith(errorResponse({ ...err.toFields(), severity: 'FATAL' }), err.message);
  }

  /**
   * `link` sent FATAL and closed: the client gets what it has not seen of that (the FATAL
   * answering a request of pgrelay's own, or queued behind another node's reply, or sent by
   * another node than the primary while idle: a transaction used it), as from a direct
   * connection, then the session ends.
   */
  private closeAfterFatal(link: BackendLink): void {
    const r = link.replies;
    const unseen = r.unseenFatal ?? (link === this.backends.primary ? undefined : r.idleFatal);
    this.endWith(unseen, `node ${link.nodeId} sent FATAL`);
  }

  /**
   * End the session: the client first gets the notifications and notices held behind another
   * node's reply (they arrived before), then `last`, unless a backend left it in the middle of
   * a message (`why` goes to the log then).
   */
  private endWith(last: Buffer | undefined, why: string): void {
    if (this.closed) return;
    const out = this.takeAsyncQueue();
    if (last !== undefined) out.push(last);
    if (out.length > 0) {
      if (this.clientMidMessage()) this.log.warn({ err: why }, 'closing the client in the middle of a message');
      else if (this.client.writable) this.writeClient(Buffer.concat(out));
    }
    this.close();
  }

  /** The notifications and notices held behind another node's reply, taken from the queue. */
  private takeAsyncQueue(): Buffer[] {
    const queued = this.asyncQueue;
    this.asyncQueue = [];
    this.asyncQueued = 0;
    return queued;
  }

  /** A backend has sent the client part of a message whose rest will never come if it dies now. */
  private clientMidMessage(): boolean {
    for (const l of this.backends.list) if (l?.replies.clientMidMessage) return true;
    return false;
  }

  /** End the session: close the client, reset or close the backends. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.readingClient) stopChunks(this.client, this.onClientData);
    this.readingClient = false;
    if (!this.client.destroyed) this.client.end();
    // A client that stops reading what is still on its way is dropped after a while.
    this.client.setTimeout(CLOSING_CLIENT_IDLE_MS, () => this.client.destroy());
    this.route.ryw.close();
    this.backends.releaseAll(this.terminated, () => this.route.ryw.released());
    this.ctx.registry.unregister(this.pid, this.secretKey);
    const cb = this.onEnd;
    this.onEnd = undefined;
    cb?.();
  }

  private onClientClosed(): void {
    if (!this.closed) {
      if (!this.terminated) this.debug({}, 'client closed the connection without Terminate');
      this.close();
    }
  }
}

/** Describe and Close of a portal. */
const PORTAL = 0x50;

function printable(type: number): string {
  return type >= 0x20 && type < 0x7f ? String.fromCharCode(type) : `\\x${type.toString(16).padStart(2, '0')}`;
}

function trace(pid: number, type: number, buf: Buffer, start: number, end: number): void {
  const text =
    type === FE.Query || type === FE.Parse
      ? buf.toString('utf8', start, Math.min(end, start + 60)).replace(/\0/g, '|')
      : '';
  process.stderr.write(`[trace] s${pid} client -> ${String.fromCharCode(type)} ${text}\n`);
}
