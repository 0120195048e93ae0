/**
 * One client's session: from the authenticated start-up to the reset of its
 * backend connections.
 *
 * The session holds a link to the primary and one to its load-balance node (or to
 * every live node with statement_level_load_balance). Each client message is
 * decided on (router/router.ts) and written to its node as the raw bytes received;
 * replies come back through each link's scanner (backend-link.ts).
 *
 * Reply order: the client must see replies in the order of its requests. A request
 * for node B is only sent once node A owes no client-visible reply (A gets a Flush
 * so that it answers what it has); until then the client scanner is suspended. A
 * pipeline on one node (the common case) flows without waiting.
 */
import { randomInt } from 'node:crypto';
import type net from 'node:net';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { FE, SQLSTATE, TxStatus } from '../protocol/constants.js';
import { CONSUME_AND_SUSPEND, DROP, MessageScanner, SUSPEND, type FrameSink } from '../protocol/framing.js';
import {
  PgError,
  authenticationOk,
  backendKeyData,
  errorResponse,
  noticeResponse,
  parameterStatus,
  readCString,
  readyForQuery,
  type ErrorFields,
} from '../protocol/messages.js';
import { isCacheableDatabase, type ConnectionCache } from '../pool/cache.js';
import { cacheKeyFor, connectBackend, sendCancel, type BackendConnection } from '../pool/connector.js';
import type { BackendSecret } from '../auth/backend.js';
import type { NodeTable } from '../cluster/nodes.js';
import type { Router, Classification, Decision, CatalogQuestions } from '../router/router.js';
import { afterStatement, newSessionRoutingState, type SessionRoutingState } from '../router/policy.js';
import type { AdminRequest } from '../admin/service.js';
import type { AdminResult } from '../admin/engine.js';
import type { ParamValue } from '../config/params.js';
import {
  bindComplete,
  closeComplete,
  commandCompleteFor,
  encodeAdminResult,
  encodeRows,
  parseComplete,
  rowDescriptionFor,
} from '../admin/wire.js';
import {
  BackendLink,
  END_BIND,
  END_CLOSE,
  END_DESCRIBE,
  END_EXECUTE,
  END_PARSE,
  END_READY,
  Mode,
  SYNC,
  type Expectation,
  type LinkOwner,
} from './backend-link.js';

/** Everything a session needs from the process around it. */
export interface SessionContext {
  config(): Config;
  readonly nodes: NodeTable;
  readonly cache: ConnectionCache;
  readonly router: Router;
  readonly log: Logger;
  readonly registry: SessionRegistry;
  backendSecret(user: string): BackendSecret | undefined;
  /** Count a statement routed to a node (SHOW pool_nodes select_cnt, pool_backend_stats, metrics). */
  countStatement?(nodeId: number, cls: Classification): void;
  /**
   * A backend connection of a client session failed (failover_on_backend_error). Resolves
   * true when the node was failed over after its health check.
   */
  reportBackendError?(nodeId: number, kind: 'connect' | 'io' | 'shutdown'): Promise<boolean> | undefined;
  /** Wait (bounded) for a primary during a failover; resolves with its id or -1. */
  waitForPrimary?(timeoutMs: number): Promise<number>;
  /** An admin command (SHOW pool_*, PGPOOL …) for this session, or undefined if `sql` is not one. */
  adminCommand?(session: Session, sql: string): AdminRequest | undefined;
  /** Traffic and connection counters (Prometheus); optional. */
  readonly metrics?: TrafficCounters;
  /** A backend reported an error (SHOW pool_backend_stats, metrics). */
  countError?(nodeId: number, severity: string, sqlstate: string): void;
}

/** The counters a session feeds (implemented by metrics/metrics.ts PgrelayMetrics). */
export interface TrafficCounters {
  clientBytesIn(n: number): void;
  clientBytesOut(n: number): void;
  backendBytesIn(nodeId: number, n: number): void;
  backendBytesOut(nodeId: number, n: number): void;
  backendConnectionOpened(nodeId: number): void;
  clientConnected(): void;
  slotWait(seconds: number): void;
}

/** Client messages the session decodes; every type byte not listed here or in PASS is a protocol violation. */
const CLIENT_DECODE = (() => {
  const t = new Uint8Array(256).fill(1);
  // CopyData passes through; 'p' (password) is invalid after authentication.
  t['d'.charCodeAt(0)] = 0;
  return t;
})();

const POISON =
  "DO $pgrelay$BEGIN RAISE EXCEPTION 'pgrelay: a statement failed on the load-balance node; the transaction is aborted on every node'; END$pgrelay$";

export class SessionRegistry {
  private readonly byPid = new Map<number, Session>();
  private nextPid = randomInt(1, 1 << 22);

  register(s: Session): { pid: number; secret: number } {
    let pid = this.nextPid++;
    if (this.nextPid >= 0x7fffffff) this.nextPid = 1;
    while (this.byPid.has(pid)) pid = this.nextPid++;
    const secret = randomInt(0, 0x7fffffff);
    this.byPid.set(pid, s);
    return { pid, secret };
  }
  unregister(pid: number): void {
    this.byPid.delete(pid);
  }
  find(pid: number, secret: number): Session | undefined {
    const s = this.byPid.get(pid);
    return s && s.secretKey === secret ? s : undefined;
  }
  all(): IterableIterator<Session> {
    return this.byPid.values();
  }
  get size(): number {
    return this.byPid.size;
  }
}

interface Stmt {
  /** An admin command answered by pgrelay itself. */
  admin?: AdminRequest;
  sql: string;
  cls: Classification;
  /** The Parse message, for re-parsing on another node. */
  parse: Buffer;
  /** Nodes on which it is parsed. */
  nodes: number[];
  /** Sent to the primary and the LB node (BEGIN, SET… in the extended protocol). */
  both: boolean;
  decision?: Decision;
}

interface Portal {
  nodes: number[];
  both: boolean;
  stmt?: Stmt;
  admin?: { req: AdminRequest; result?: AdminResult; next: number };
}

interface PendingOutcome {
  sql: string;
  cls: Classification;
  decision: Decision;
  ok: boolean;
}

export class Session implements FrameSink, LinkOwner {
  readonly pid: number;
  readonly secretKey: number;
  readonly user: string;
  readonly database: string;
  readonly applicationName: string;
  readonly startedAt = Date.now();
  private logger: Logger | undefined;
  /** Debug-level log without building the session's child logger when debug is off. */
  private debug(fields: Record<string, unknown>, msg: string): void {
    if (this.ctx.log.isLevelEnabled('debug')) this.log.debug(fields, msg);
  }

  /** The session's logger (a pino child with session, user, database), made on first use. */
  get log(): Logger {
    return (this.logger ??= this.ctx.log.child({ session: this.pid, user: this.user, database: this.database }));
  }
  passAction = DROP;
  closed = false;
  /** Last time the client sent something or a request completed (ms). */
  lastActivity = Date.now();
  /** Routing state (transaction, writes, isolation) for the policy. */
  readonly routing: SessionRoutingState = newSessionRoutingState();
  /** Node the session balances its reads to (SHOW pool_nodes load_balance_node). */
  lbNodeId = -1;
  /** An admin command of this session is running (a graceful detach does not wait for it). */
  runningAdmin = false;
  /** Session-level PGPOOL SET values. */
  readonly adminParams = new Map<string, ParamValue>();

  private terminated = false;
  private readonly links: Array<BackendLink | undefined> = [];
  private primary: BackendLink | undefined;
  private readonly scanner: MessageScanner;
  private readonly stmts = new Map<string, Stmt>();
  private readonly portals = new Map<string, Portal>();
  private outcomes: PendingOutcome[] = [];
  /** The last catalog lookup failed: the statement presented again goes to the primary. */
  private catalogFailed = false;
  /** Why the client scanner is suspended: only the matching event resumes it. */
  private suspendedFor: 'replies' | 'catalog' | 'both' | 'admin' | 'connect' | null = null;
  /** Session-level settings (SET/RESET outside transactions) to replay on nodes connected later. */
  private readonly replay: string[] = [];
  private replayOverflow = false;
  /** Nodes a mid-session connection just failed to (until when not to retry, ms). */
  private readonly unreachable = new Map<number, number>();
  private clientPaused = false;
  private readonly asyncQueue: Buffer[] = [];
  private drainWaiters: Array<() => void> = [];
  private onEnd: (() => void) | undefined;
  private readonly facts: { database: string; application_name: string; user: string };

  constructor(
    readonly ctx: SessionContext,
    readonly client: net.Socket,
    /** Start-up parameters as the client sent them (without _pq_ options). */
    readonly params: Map<string, string>,
    readonly remote: string,
    /** What client authentication produced for logging into backends (overrides ctx.backendSecret). */
    private readonly authSecret?: BackendSecret,
  ) {
    this.user = params.get('user') ?? '';
    this.database = params.get('database') ?? this.user;
    this.applicationName = params.get('application_name') ?? '';
    this.facts = { database: this.database, application_name: this.applicationName, user: this.user };
    const k = ctx.registry.register(this);
    this.pid = k.pid;
    this.secretKey = k.secret;
    this.scanner = new MessageScanner(this, CLIENT_DECODE, ctx.config().max_message_size);
    client.on('drain', this.onDrain);
  }

  // ---------------------------------------------------------------- start-up

  /** Connect to the backends, answer the client's start-up, start relaying. */
  async start(onEnd: () => void): Promise<void> {
    this.onEnd = onEnd;
    const client = this.client;
    client.on('close', () => this.onClientClosed());
    client.on('error', (e) => this.debug({ err: e.message }, 'client socket error'));
    try {
      try {
        await this.openLinks();
      } catch (e) {
        // The primary could not be reached: have the node checked (a failover may follow) and
        // try once more, so that a client arriving during a failover waits instead of failing.
        const failedNode = this.ctx.nodes.primaryId;
        if (!isNetworkError(e) || !this.ctx.reportBackendError || failedNode < 0) throw e;
        this.log.info(
          { node: failedNode, err: (e as Error).message },
          'primary unreachable at connect: waiting for its health check',
        );
        await withTimeout(Promise.resolve(this.ctx.reportBackendError(failedNode, 'connect')), 30_000);
        if (this.closed || client.destroyed) return;
        await this.openLinks();
      }
    } catch (e) {
      const err =
        e instanceof PgError
          ? e
          : new PgError(SQLSTATE.connectionFailure, `could not open a backend connection: ${(e as Error).message}`);
      this.log.warn({ code: err.code, err: err.message }, 'backend connection failed');
      this.fatal(err);
      return;
    }
    if (this.closed || client.destroyed) {
      this.close();
      return;
    }
    const p = this.primary as BackendLink;
    const parts: Buffer[] = [authenticationOk()];
    for (const [k, v] of p.conn.params) parts.push(parameterStatus(k, v));
    parts.push(backendKeyData(this.pid, this.secretKey), readyForQuery(p.conn.txStatus));
    client.write(Buffer.concat(parts));
    for (const l of this.links) l?.attach();
    client.on('data', this.onClientData);
    this.lastActivity = Date.now();
  }

  private async openLinks(): Promise<void> {
    const cfg = this.ctx.config();
    let primary = this.ctx.nodes.primaryNode();
    if (!primary && this.ctx.waitForPrimary) {
      const id = await this.ctx.waitForPrimary(
        cfg.connect_timeout > 0 ? Math.max(cfg.connect_timeout, 10_000) : 10_000,
      );
      if (id >= 0) primary = this.ctx.nodes.primaryNode();
    }
    if (!primary)
      throw new PgError(
        SQLSTATE.cannotConnectNow,
        'no primary node is available',
        'FATAL',
        undefined,
        'pgrelay is searching for the primary; retry shortly.',
      );
    const router = this.ctx.router;
    const wanted = new Set<number>([primary.id]);
    if (router.loadBalancing) {
      if (router.statementLevel) {
        for (const n of this.ctx.nodes.all())
          if ((n.status === 'up' || n.status === 'waiting') && n.weight > 0) wanted.add(n.id);
      }
      let lb = router.chooseSessionNode(this.facts);
      // A drawn node that lags may be replaced at once (prefer_lower_delay_standby).
      if (lb !== null) lb = router.readNode(lb, this.facts).sessionLbNode ?? lb;
      this.lbNodeId = lb ?? primary.id;
      wanted.add(this.lbNodeId);
    } else {
      this.lbNodeId = primary.id;
    }
    const ids = [...wanted];
    const results = await Promise.allSettled(ids.map((id) => this.acquire(id)));
    for (let i = 0; i < ids.length; i++) {
      const r = results[i];
      if (r.status === 'fulfilled') {
        this.links[ids[i]] = new BackendLink(this, r.value, ids[i] + 1, this.ctx.metrics);
      } else if (ids[i] !== primary.id) {
        this.log.warn(
          { node: ids[i], err: (r.reason as Error).message },
          'load-balance node unavailable; reading from the primary',
        );
        if (isNetworkError(r.reason)) this.ctx.reportBackendError?.(ids[i], 'connect');
      }
    }
    const pr = results[ids.indexOf(primary.id)];
    if (pr.status === 'rejected') {
      for (const l of this.links) l?.conn.close();
      this.links.length = 0;
      throw pr.reason;
    }
    this.primary = this.links[primary.id];
    if (!this.links[this.lbNodeId]) this.lbNodeId = primary.id;
  }

  private async acquire(nodeId: number): Promise<BackendConnection> {
    const node = this.ctx.nodes.get(nodeId);
    if (!node) throw new PgError(SQLSTATE.connectionFailure, `no backend node ${nodeId}`);
    const cfg = this.ctx.config();
    if (cfg.connection_cache) {
      const cached = await this.ctx.cache.takeOrWait(cacheKeyFor(nodeId, this.params), 200);
      if (cached) {
        this.debug({ node: nodeId, backendPid: cached.pid }, 'reusing cached backend connection');
        cached.useCount++;
        return cached;
      }
    }
    const conn = await connectBackend({
      nodeId,
      host: node.host,
      port: node.port,
      params: this.params,
      connectTimeoutMs: cfg.connect_timeout,
      secret: (u) => this.authSecret ?? this.ctx.backendSecret(u),
    });
    this.debug({ node: nodeId, backendPid: conn.pid }, 'new backend connection');
    this.ctx.metrics?.backendConnectionOpened(nodeId);
    conn.useCount++;
    this.ctx.nodes.markUsed(nodeId);
    return conn;
  }

  // ---------------------------------------------------------------- client → backends

  private readonly onClientData = (chunk: Buffer): void => {
    this.lastActivity = Date.now();
    this.ctx.metrics?.clientBytesIn(chunk.length);
    if (!this.scanner.push(chunk)) this.pauseClient();
  };

  private pauseClient(): void {
    if (!this.clientPaused) {
      this.clientPaused = true;
      this.client.pause();
    }
  }

  /** Continue the client scanner suspended for `reason`. */
  private resumeClient(reason: 'replies' | 'catalog' | 'both' | 'admin' | 'connect'): void {
    if (this.closed || this.suspendedFor !== reason) return;
    this.suspendedFor = null;
    if (this.scanner.resume() && this.clientPaused) {
      this.clientPaused = false;
      this.client.resume();
    }
  }

  onMessage(type: number, buf: Buffer, start: number, end: number): number {
    if (this.closed) return DROP;
    if (TRACE)
      process.stderr.write(
        `[trace] s${this.pid} client -> ${String.fromCharCode(type)} ${type === FE.Query || type === FE.Parse ? buf.toString('utf8', start, Math.min(end, start + 60)).replace(/\0/g, '|') : ''}\n`,
      );
    switch (type) {
      case FE.Query:
        return this.onQuery(buf, start, end);
      case FE.Parse:
        return this.onParse(buf, start, end);
      case FE.Bind:
        return this.onBind(buf, start, end);
      case FE.Describe:
        return this.onDescribe(buf, start, end);
      case FE.Execute:
        return this.onExecute(buf, start, end);
      case FE.Close:
        return this.onClose(buf, start, end);
      case FE.Sync:
        return this.onSync();
      case FE.Flush:
        return this.onFlush();
      case FE.FunctionCall: {
        const p = this.primaryLink();
        if (!this.gate(p)) return SUSPEND;
        return this.send(p, { end: END_READY, mode: Mode.Forward });
      }
      case FE.CopyDone:
      case FE.CopyFail:
        // The copy's input ends here: Syncs after it are answered again.
        for (const l of this.links) if (l) l.copyIn = false;
        return this.passAction;
      case FE.Terminate:
        // Requests pipelined before Terminate still reach the server (their effects count).
        this.scanner.flushRun();
        this.terminated = true;
        this.close();
        return DROP;
      default:
        this.fatal(
          new PgError(SQLSTATE.protocolViolation, `invalid frontend message type ${type} ('${printable(type)}')`),
        );
        return DROP;
    }
  }

  emit(action: number, bytes: Buffer): void {
    const link = this.links[action - 1];
    if (!link || this.closed) return;
    this.ctx.metrics?.backendBytesOut(link.nodeId, bytes.length);
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

  /**
   * log_per_node_statement (JSON log: node id, backend pid, statement) and
   * notice_per_node_statement (a NOTICE to the client before the statement's reply;
   * only when nothing else is on its way to the client, so it cannot split a reply).
   */
  private perNodeStatement(link: BackendLink, sql: string): void {
    const cfg = this.ctx.config();
    if (cfg.log_per_node_statement)
      this.log.info({ node: link.nodeId, backendPid: link.conn.pid, statement: redact(sql) }, 'statement');
    if (cfg.notice_per_node_statement && !this.links.some((l) => l !== undefined && l.visible > 0)) {
      this.scanner.flushRun();
      this.writeClient(
        noticeResponse({
          severity: 'NOTICE',
          code: '00000',
          message: `DB node id: ${link.nodeId} statement: ${redact(sql)}`,
        }),
      );
    }
  }

  /** Write to a link directly (not through the scanner's coalesced run), keeping order. */
  private direct(link: BackendLink, bytes: Buffer): void {
    this.scanner.flushRun();
    link.write(bytes);
  }

  private primaryLink(): BackendLink {
    return this.primary as BackendLink;
  }

  /**
   * May a client-visible request go to `target` now? Only if no other node still owes
   * the client a reply; otherwise flush those nodes and wait (the caller returns SUSPEND).
   */
  private gate(target: BackendLink | null): boolean {
    let blocked = false;
    for (const l of this.links) {
      if (!l || l === target || l.visible === 0) continue;
      this.scanner.flushRun();
      l.flushIfNeeded();
      blocked = true;
    }
    if (blocked) this.suspendedFor = 'replies';
    return !blocked;
  }

  /** Queue `e` on `link`; the scanner then writes the message itself (zero copy). */
  private send(link: BackendLink, e: Expectation): number {
    link.expect(e);
    if (e.mode === Mode.Forward) {
      this.passAction = link.action;
      if (link !== this.primary && this.routing.inTransaction) link.usedInTx = true;
    }
    return link.action;
  }

  /** Requests to `link` may be re-sent elsewhere if it dies first: reads on a standby outside a transaction. */
  private resendable(link: BackendLink): boolean {
    return link !== this.primary && !this.routing.inTransaction;
  }

  /** A re-send hook: the same bytes with the same expectation on the new link (after `before`). */
  private resendRaw(bytes: Buffer, before?: (to: BackendLink) => void): (to: BackendLink, e: Expectation) => void {
    return (to, e) => {
      before?.(to);
      to.expect({ end: e.end, mode: e.mode, done: e.done });
      to.write(bytes);
    };
  }

  /** Routing state after a statement (policy.ts), with dml_adaptive's related objects. */
  private statementOutcome(cls: Classification, d: Decision, ok: boolean, status: number): void {
    afterStatement(
      this.routing,
      cls,
      d,
      { ok, txStatus: statusChar(status) },
      this.ctx.config().disable_load_balance_on_write,
    );
    if (ok && cls.writtenTables.length > 0)
      this.ctx.router.addRelatedObjects(this.routing, cls.writtenTables, status !== TxStatus.Idle);
  }

  /** Record the transaction status seen at the end of a statement or pipeline. */
  private txStatusIs(status: number): void {
    this.routing.inTransaction = status !== TxStatus.Idle;
    this.routing.failed = status === TxStatus.Failed;
    if (status === TxStatus.Idle) for (const l of this.links) if (l) l.usedInTx = false;
  }

  /** Mark a link as part of the current extended-protocol pipeline. */
  private inPipeline(link: BackendLink): void {
    link.inPipeline = true;
    link.needsFlush = true;
  }

  /** The link for a decision's single target, after lag and liveness checks. */
  private linkFor(target: 'primary' | 'standby'): BackendLink | undefined {
    const p = this.primaryLink();
    if (target === 'primary') return p;
    const r = this.ctx.router.readNode(this.lbNodeId, this.facts);
    if (r.node === null) return p;
    const l = this.links[r.node];
    if (l) {
      if (r.sessionLbNode !== null && this.links[r.sessionLbNode]) this.lbNodeId = r.sessionLbNode;
      return l;
    }
    // The read belongs on a node this session has no connection to (its load-balance node
    // went down and another was drawn, or prefer_lower_delay_standby moved it). Connect
    // there, replaying the session's settings, unless inside a transaction (the new node
    // would not share it), the settings are too many to replay, or it just failed.
    if (this.routing.inTransaction || this.replayOverflow || (this.unreachable.get(r.node) ?? 0) > Date.now()) return p;
    this.suspendedFor = 'connect';
    this.scanner.flushRun();
    void this.openLaterLink(r.node, r.sessionLbNode);
    return undefined;
  }

  /** Connect to another node mid-session (see linkFor), then present the suspended message again. */
  private async openLaterLink(id: number, sessionLb: number | null): Promise<void> {
    try {
      const conn = await this.acquire(id);
      if (this.closed) {
        conn.close();
        return;
      }
      const link = new BackendLink(this, conn, id + 1, this.ctx.metrics);
      this.links[id] = link;
      link.attach();
      for (const sql of this.replay) {
        link.expect({ end: END_READY, mode: Mode.Drop });
        link.write(queryMessage(sql));
      }
      if (sessionLb === id) this.lbNodeId = id;
      this.debug({ node: id, replayed: this.replay.length }, 'connected to another node for reads');
    } catch (e) {
      this.unreachable.set(id, Date.now() + 5000);
      this.log.warn(
        { node: id, err: (e as Error).message },
        'could not connect to the node chosen for reads; reading from the primary',
      );
      if (isNetworkError(e)) this.ctx.reportBackendError?.(id, 'connect');
    }
    this.resumeClient('connect');
  }

  /** Remember a session-level setting that ran outside a transaction, to replay it on nodes connected later. */
  private recordSetting(sql: string, cls: Classification, ok: boolean, status: number): void {
    if (!ok || status !== TxStatus.Idle || cls.statementCount > 1) return;
    if (cls.kind === 'discard' && /\ball\b/i.test(sql)) {
      this.replay.length = 0;
      this.replayOverflow = false;
    } else if (cls.kind === 'set' || cls.kind === 'reset') {
      if (this.replay.length >= 64) this.replayOverflow = true;
      else this.replay.push(sql);
    }
  }

  /** The other node of a 'both' statement, or undefined when the LB node is the primary. */
  private secondLink(): BackendLink | undefined {
    const l = this.links[this.lbNodeId];
    return l && l !== this.primary ? l : undefined;
  }

  /**
   * Decide where `sql` goes. Returns SUSPEND while catalog questions are asked on the
   * primary (the message is presented again once they are answered).
   */
  private decideFor(sql: string, cls: Classification): Decision | typeof SUSPEND {
    const d = this.ctx.router.decide(sql, cls, this.routing, this.database);
    if ('target' in d) return d;
    const p = this.primaryLink();
    if (this.catalogFailed || p.pending > 0 || p.inPipeline || p.txStatus === TxStatus.Failed) {
      // The lookup runs on the session's primary connection, between requests and outside
      // pipelines (its queries only read the catalog and cannot fail). Otherwise, or when it
      // just failed, this statement reads from the primary.
      this.catalogFailed = false;
      return { target: 'primary', write: cls.write, reason: 'catalog lookup not possible now' };
    }
    this.suspendedFor = 'catalog';
    this.scanner.flushRun();
    void this.askCatalog(d);
    return SUSPEND;
  }

  private async askCatalog(q: CatalogQuestions): Promise<void> {
    const p = this.primaryLink();
    this.catalogFailed = !(await this.ctx.router.answer(this.database, q, (sql) => this.internalQuery(p, sql)));
    this.resumeClient('catalog');
  }

  /** Run a query on a link for pgrelay itself; its replies never reach the client. */
  private internalQuery(link: BackendLink, sql: string): Promise<ReadonlyArray<Record<string, unknown>>> {
    return new Promise((resolve, reject) => {
      const e: Expectation = {
        end: END_READY,
        mode: Mode.Capture,
        rows: [],
        done: (x) => {
          if (x.error) return reject(new Error(x.error.M ?? 'catalog query failed'));
          const cols = x.columns ?? [];
          resolve((x.rows ?? []).map((r) => Object.fromEntries(cols.map((c, i) => [c, r[i]]))));
        },
      };
      link.expect(e);
      link.write(queryMessage(sql));
    });
  }

  // ---- simple query

  private onQuery(buf: Buffer, start: number, end: number): number {
    const q = readCString(buf, start, end);
    if (!q) {
      this.fatal(new PgError(SQLSTATE.protocolViolation, 'invalid Query message: missing string terminator'));
      return DROP;
    }
    const sql = q[0];
    if (this.ctx.config().log_statement && !this.scanner.resuming)
      this.log.info({ statement: redact(sql) }, 'statement');
    const admin = this.ctx.adminCommand?.(this, sql);
    if (admin) {
      if (!this.gate(null)) return SUSPEND;
      this.suspendedFor = 'admin';
      void this.answerAdmin(admin);
      return CONSUME_AND_SUSPEND;
    }
    const cls = this.ctx.router.classifyOnce(sql);
    const d = this.decideFor(sql, cls);
    if (d === SUSPEND) return SUSPEND;
    const second = d.target === 'both' ? this.secondLink() : undefined;
    if (second) {
      if (!this.gate(null)) return SUSPEND;
      this.suspendedFor = 'both';
      this.runOnBoth(sql, cls, d, second);
      return CONSUME_AND_SUSPEND;
    }
    const link = this.linkFor(d.target === 'standby' ? 'standby' : 'primary');
    if (!link || !this.gate(link)) return SUSPEND;
    this.ctx.countStatement?.(link.nodeId, cls);
    this.perNodeStatement(link, sql);
    return this.send(link, {
      end: END_READY,
      mode: Mode.Forward,
      done: (e, l) => this.statementDone(sql, cls, d, e, l),
      // A read outside a transaction on a standby can be re-sent elsewhere if the standby dies first.
      resend: this.resendable(link) ? this.resendRaw(buf.subarray(start - 5, end)) : undefined,
    });
  }

  /** After a simple-protocol statement: routing state, and keeping nodes' transaction states in step. */
  private statementDone(sql: string, cls: Classification, d: Decision, e: Expectation, link: BackendLink): void {
    const status = e.status ?? TxStatus.Idle;
    if (d.target === 'both') this.recordSetting(sql, cls, !e.error, status);
    this.statementOutcome(cls, d, !e.error, status);
    this.txStatusIs(status);
    if (status === TxStatus.Failed && link !== this.primary) this.poisonPrimary();
  }

  /**
   * A statement failed on the load-balance node inside a transaction: abort the
   * primary's transaction too, so that PostgreSQL itself answers what follows (25P02,
   * COMMIT → ROLLBACK) and the two nodes never disagree.
   */
  private poisonPrimary(): void {
    const p = this.primaryLink();
    if (p.txStatus !== TxStatus.InTransaction) return;
    p.expect({ end: END_READY, mode: Mode.Drop });
    p.write(queryMessage(POISON));
  }

  /** A statement for both nodes: one after the other (COMMIT/ROLLBACK: standby first), one reply. */
  private runOnBoth(sql: string, cls: Classification, d: Decision, second: BackendLink): void {
    const p = this.primaryLink();
    const standbyText = d.standbyText ?? sql;
    const order: Array<[BackendLink, string]> =
      d.bothOrder === 'standby-first'
        ? [
            [second, standbyText],
            [p, sql],
          ]
        : [
            [p, sql],
            [second, standbyText],
          ];
    const results = new Map<BackendLink, Expectation>();
    this.scanner.flushRun();
    const step = (i: number): void => {
      const [link, text] = order[i];
      if (link !== p && this.links[link.nodeId] !== link) {
        // The load-balance node was lost meanwhile: the primary's result stands alone.
        const skipped: Expectation = { end: END_READY, mode: Mode.Hold, held: [] };
        results.set(link, skipped);
        if (i + 1 < order.length) step(i + 1);
        else this.finishBoth(sql, cls, d, results.get(p) as Expectation, skipped);
        return;
      }
      this.ctx.countStatement?.(link.nodeId, cls);
      this.perNodeStatement(link, text);
      link.expect({
        end: END_READY,
        mode: Mode.Hold,
        held: [],
        skippable: link !== p,
        done: (e) => {
          results.set(link, e);
          if (i + 1 < order.length) step(i + 1);
          else this.finishBoth(sql, cls, d, results.get(p) as Expectation, results.get(second) as Expectation);
        },
      });
      link.write(queryMessage(text));
    };
    step(0);
  }

  private finishBoth(
    sql: string,
    cls: Classification,
    d: Decision,
    onPrimary: Expectation,
    onSecond: Expectation,
  ): void {
    let out: Buffer;
    let status = onPrimary.status ?? TxStatus.Idle;
    if (onPrimary.error || !onSecond.error) {
      out = Buffer.concat(onPrimary.held ?? []);
    } else {
      // Only the load-balance node failed: report its error; inside a transaction, abort it on the primary too.
      this.log.warn(
        { node: this.lbNodeId, code: onSecond.error.C, err: onSecond.error.M },
        'statement failed on the load-balance node only',
      );
      if (status === TxStatus.InTransaction) {
        this.poisonPrimary();
        status = TxStatus.Failed;
      }
      out = Buffer.concat([errorResponse(errorFieldsOf(onSecond.error)), readyForQuery(status)]);
    }
    this.statementOutcome(cls, d, !onPrimary.error && !onSecond.error, status);
    this.recordSetting(sql, cls, !onPrimary.error && !onSecond.error, status);
    this.txStatusIs(status);
    if (cls.kind === 'deallocate' || cls.kind === 'discard') this.forgetStatements(cls);
    this.writeClient(out);
    this.resumeClient('both');
  }

  private forgetStatements(cls: Classification): void {
    // DEALLOCATE ALL / DISCARD ALL drop every prepared statement on both nodes.
    if (cls.name === undefined || cls.kind === 'discard') {
      this.stmts.clear();
      this.portals.clear();
    }
  }

  private async answerAdmin(admin: AdminRequest): Promise<void> {
    this.runningAdmin = true;
    let result: AdminResult;
    try {
      result = await admin.run();
    } finally {
      this.runningAdmin = false;
    }
    const out = encodeAdminResult(result, { extended: false });
    if (this.closed) return;
    this.writeClient(Buffer.concat([out, readyForQuery(this.primaryLink().txStatus)]));
    this.resumeClient('admin');
  }

  /** Answer an extended-protocol step of an admin statement locally, in order. */
  private adminReply(reply: Buffer | (() => Promise<Buffer>)): number {
    if (!this.gate(null)) return SUSPEND;
    this.scanner.flushRun();
    if (Buffer.isBuffer(reply)) {
      this.writeClient(reply);
      return DROP;
    }
    this.suspendedFor = 'admin';
    this.runningAdmin = true;
    void reply().then((b) => {
      this.runningAdmin = false;
      if (this.closed) return;
      this.writeClient(b);
      this.resumeClient('admin');
    });
    return CONSUME_AND_SUSPEND;
  }

  private async adminResult(p: NonNullable<Portal['admin']>): Promise<AdminResult> {
    if (!p.result) p.result = await p.req.run();
    return p.result;
  }

  // ---- extended query protocol

  private onParse(buf: Buffer, start: number, end: number): number {
    const n = readCString(buf, start, end);
    const q = n && readCString(buf, n[1], end);
    if (!n || !q) {
      this.fatal(new PgError(SQLSTATE.protocolViolation, 'invalid Parse message'));
      return DROP;
    }
    const name = n[0];
    const sql = q[0];
    if (this.ctx.config().log_statement && !this.scanner.resuming)
      this.log.info({ statement: redact(sql), prepared: name }, 'statement (parse)');
    const admin = this.ctx.adminCommand?.(this, sql);
    if (admin) {
      const r = this.adminReply(parseComplete());
      if (r !== SUSPEND)
        this.stmts.set(name, {
          admin,
          sql,
          cls: this.ctx.router.classify('SELECT 1'),
          parse: Buffer.alloc(0),
          nodes: [],
          both: false,
        });
      return r;
    }
    const cls = this.ctx.router.classify(sql);
    const d = this.decideFor(sql, cls);
    if (d === SUSPEND) return SUSPEND;
    // Named statements outlive this chunk: keep a copy. The unnamed one is replaced soon.
    const raw = buf.subarray(start - 5, end);
    const parse = name === '' ? raw : Buffer.from(raw);
    const second = d.target === 'both' ? this.secondLink() : undefined;
    if (second) {
      const p = this.primaryLink();
      if (!this.gate(p)) return SUSPEND;
      second.expect({ end: END_PARSE, mode: Mode.Drop });
      this.direct(second, parse);
      this.inPipeline(second);
      this.inPipeline(p);
      this.stmts.set(name, { sql, cls, parse, nodes: [p.nodeId, second.nodeId], both: true, decision: d });
      return this.send(p, { end: END_PARSE, mode: Mode.Forward });
    }
    const link = this.linkFor(d.target === 'standby' ? 'standby' : 'primary');
    if (!link || !this.gate(link)) return SUSPEND;
    this.inPipeline(link);
    const st: Stmt = { sql, cls, parse, nodes: [link.nodeId], both: false, decision: d };
    this.stmts.set(name, st);
    return this.send(link, {
      end: END_PARSE,
      mode: Mode.Forward,
      resend: this.resendable(link) ? this.resendRaw(parse, (to) => this.onNode(st, to)) : undefined,
    });
  }

  /** Record that `st` is parsed on `to` (re-sent there) and that `to` is in the pipeline. */
  private onNode(st: Stmt, to: BackendLink): void {
    if (!st.nodes.includes(to.nodeId)) st.nodes.push(to.nodeId);
    this.inPipeline(to);
  }

  /** Make sure `st` exists on `to` before a re-sent request that uses it. */
  private parsedOn(st: Stmt, to: BackendLink): void {
    if (!st.nodes.includes(to.nodeId)) {
      to.expect({ end: END_PARSE, mode: Mode.Drop });
      to.write(st.parse);
      st.nodes.push(to.nodeId);
    }
    this.inPipeline(to);
  }

  private onBind(buf: Buffer, start: number, end: number): number {
    const portalName = readCString(buf, start, end);
    const stmtName = portalName && readCString(buf, portalName[1], end);
    if (!portalName || !stmtName) {
      this.fatal(new PgError(SQLSTATE.protocolViolation, 'invalid Bind message'));
      return DROP;
    }
    const st = this.stmts.get(stmtName[0]);
    const p = this.primaryLink();
    if (st?.admin) {
      const r = this.adminReply(bindComplete());
      if (r !== SUSPEND) this.portals.set(portalName[0], { nodes: [], both: false, admin: { req: st.admin, next: 0 } });
      return r;
    }
    if (!st) {
      // Unknown here (SQL-level PREPARE, or a client error): the primary answers.
      if (!this.gate(p)) return SUSPEND;
      this.inPipeline(p);
      this.portals.set(portalName[0], { nodes: [p.nodeId], both: false });
      return this.send(p, { end: END_BIND, mode: Mode.Forward });
    }
    if (st.both) {
      const second = this.links[st.nodes[1]];
      if (!this.gate(p)) return SUSPEND;
      if (second) {
        second.expect({ end: END_BIND, mode: Mode.Drop });
        this.direct(second, Buffer.from(buf.subarray(start - 5, end)));
        this.inPipeline(second);
      }
      this.inPipeline(p);
      this.portals.set(portalName[0], { nodes: st.nodes, both: true, stmt: st });
      return this.send(p, { end: END_BIND, mode: Mode.Forward });
    }
    // Decide again with the session's current state: a statement parsed on the
    // standby is re-parsed on the primary once the transaction has written (pgpool).
    const d = this.decideFor(st.sql, st.cls);
    if (d === SUSPEND) return SUSPEND;
    st.decision = d;
    const link = this.linkFor(d.target === 'standby' ? 'standby' : 'primary');
    if (!link || !this.gate(link)) return SUSPEND;
    if (!st.nodes.includes(link.nodeId)) {
      // skippable: if this node dies first, a re-sent Bind parses again where it goes.
      link.expect({ end: END_PARSE, mode: Mode.Drop, skippable: true });
      this.direct(link, st.parse);
      st.nodes.push(link.nodeId);
    }
    this.inPipeline(link);
    const portal = portalName[0];
    this.portals.set(portal, { nodes: [link.nodeId], both: false, stmt: st });
    return this.send(link, {
      end: END_BIND,
      mode: Mode.Forward,
      resend: this.resendable(link)
        ? this.resendRaw(buf.subarray(start - 5, end), (to) => {
            this.parsedOn(st, to);
            this.portals.set(portal, { nodes: [to.nodeId], both: false, stmt: st });
          })
        : undefined,
    });
  }

  private onDescribe(buf: Buffer, start: number, end: number): number {
    const kind = buf[start];
    const name = readCString(buf, start + 1, end);
    if (!name || (kind !== 0x53 && kind !== 0x50)) {
      this.fatal(new PgError(SQLSTATE.protocolViolation, 'invalid Describe message'));
      return DROP;
    }
    if (kind === 0x53) {
      const admin = this.stmts.get(name[0])?.admin;
      if (admin) return this.adminReply(async () => Buffer.concat([NO_PARAMS, rowDescriptionFor(await admin.run())]));
    } else {
      const admin = this.portals.get(name[0])?.admin;
      if (admin) return this.adminReply(async () => rowDescriptionFor(await this.adminResult(admin)));
    }
    const obj = kind === 0x53 ? this.stmts.get(name[0]) : this.portals.get(name[0]);
    // A statement for both nodes is described by the primary; others where last parsed.
    const link = (obj && !obj.both && this.links[obj.nodes[obj.nodes.length - 1]]) || this.primaryLink();
    if (!this.gate(link)) return SUSPEND;
    this.inPipeline(link);
    const stmt = kind === 0x53 ? (obj as Stmt | undefined) : undefined;
    return this.send(link, {
      end: END_DESCRIBE,
      mode: Mode.Forward,
      resend: this.resendable(link)
        ? this.resendRaw(buf.subarray(start - 5, end), (to) => (stmt ? this.parsedOn(stmt, to) : this.inPipeline(to)))
        : undefined,
    });
  }

  private onExecute(buf: Buffer, start: number, end: number): number {
    const name = readCString(buf, start, end);
    if (!name) {
      this.fatal(new PgError(SQLSTATE.protocolViolation, 'invalid Execute message'));
      return DROP;
    }
    const portal = this.portals.get(name[0]);
    const admin = portal?.admin;
    if (admin) {
      const maxRows = name[1] + 4 <= end ? buf.readInt32BE(name[1]) : 0;
      return this.adminReply(async () => {
        const result = await this.adminResult(admin);
        if (result.kind !== 'rows') return commandCompleteFor(result);
        const r = encodeRows(result, admin.next, maxRows);
        admin.next = r.next;
        return r.buf;
      });
    }
    const p = this.primaryLink();
    const link = (portal && this.links[portal.nodes[0]]) || p;
    const target = portal?.both ? p : link;
    if (!this.gate(target)) return SUSPEND;
    if (portal?.both) {
      const second = this.links[portal.nodes[1]];
      if (second) {
        second.expect({ end: END_EXECUTE, mode: Mode.Drop });
        this.direct(second, Buffer.from(buf.subarray(start - 5, end)));
        this.inPipeline(second);
      }
    }
    this.inPipeline(target);
    const st = portal?.stmt;
    let outcome: PendingOutcome | undefined;
    if (st?.decision) {
      outcome = { sql: st.sql, cls: st.cls, decision: st.decision, ok: true };
      this.outcomes.push(outcome);
      this.ctx.countStatement?.(target.nodeId, st.cls);
      this.perNodeStatement(target, st.sql);
    }
    return this.send(target, {
      end: END_EXECUTE,
      mode: Mode.Forward,
      done: outcome
        ? (e) => {
            if (e.error) (outcome as PendingOutcome).ok = false;
          }
        : undefined,
      resend:
        !portal?.both && this.resendable(target)
          ? this.resendRaw(buf.subarray(start - 5, end), (to) => this.inPipeline(to))
          : undefined,
    });
  }

  private onClose(buf: Buffer, start: number, end: number): number {
    const kind = buf[start];
    const name = readCString(buf, start + 1, end);
    if (!name || (kind !== 0x53 && kind !== 0x50)) {
      this.fatal(new PgError(SQLSTATE.protocolViolation, 'invalid Close message'));
      return DROP;
    }
    const isAdmin = kind === 0x53 ? this.stmts.get(name[0])?.admin : this.portals.get(name[0])?.admin;
    if (isAdmin) {
      const r = this.adminReply(closeComplete());
      if (r !== SUSPEND) (kind === 0x53 ? this.stmts : this.portals).delete(name[0]);
      return r;
    }
    let nodes: number[] | undefined;
    if (kind === 0x53) {
      nodes = this.stmts.get(name[0])?.nodes;
      this.stmts.delete(name[0]);
    } else {
      nodes = this.portals.get(name[0])?.nodes;
      this.portals.delete(name[0]);
    }
    const p = this.primaryLink();
    const links = (nodes ?? [p.nodeId]).map((id) => this.links[id]).filter((l): l is BackendLink => l !== undefined);
    const first = links[0] ?? p;
    if (!this.gate(first)) return SUSPEND;
    const raw = buf.subarray(start - 5, end);
    for (const l of links.slice(1)) {
      l.expect({ end: END_CLOSE, mode: Mode.Drop });
      this.direct(l, Buffer.from(raw));
      this.inPipeline(l);
    }
    this.inPipeline(first);
    return this.send(first, {
      end: END_CLOSE,
      mode: Mode.Forward,
      resend:
        links.length <= 1 && this.resendable(first)
          ? this.resendRaw(Buffer.from(raw), (to) => this.inPipeline(to))
          : undefined,
    });
  }

  private onSync(): number {
    const copying = this.links.find((l) => l?.copyIn);
    // PostgreSQL ignores Sync (and Flush) in copy-in mode: pass it on, expect nothing.
    if (copying) return copying.action;
    const members = this.links.filter((l): l is BackendLink => l?.inPipeline === true);
    if (members.length === 0) members.push(this.primaryLink());
    // Links outside this pipeline that still owe the client a reply come first.
    for (const l of this.links) {
      if (l && !members.includes(l) && l.visible > 0) {
        this.scanner.flushRun();
        l.flushIfNeeded();
        this.suspendedFor = 'replies';
        return SUSPEND;
      }
    }
    const outcomes = this.outcomes;
    this.outcomes = [];
    for (const l of members) {
      l.inPipeline = false;
      l.needsFlush = false;
    }
    if (members.length === 1) {
      const l = members[0];
      return this.send(l, {
        end: END_READY,
        mode: Mode.Forward,
        sync: true,
        done: (e, at) => this.pipelineDone(outcomes, e.status ?? TxStatus.Idle, at),
        resend: this.resendable(l)
          ? (to, e) => {
              to.expect({ end: e.end, mode: e.mode, sync: true, done: e.done });
              to.write(SYNC);
              to.inPipeline = false;
              to.needsFlush = false;
            }
          : undefined,
      });
    }
    // The pipeline spans nodes: one ReadyForQuery for the client once every node answered.
    let waiting = members.length;
    let status: number = TxStatus.Idle;
    const primary = this.primary;
    for (const l of members) {
      l.expect({
        end: END_READY,
        mode: Mode.Sync,
        sync: true,
        done: (e) => {
          const s = e.status ?? TxStatus.Idle;
          if (s === TxStatus.Failed) status = TxStatus.Failed;
          else if (l === primary && status !== TxStatus.Failed) status = s;
          else if (status === TxStatus.Idle) status = s;
          if (--waiting === 0) {
            this.pipelineDone(outcomes, status, undefined);
            this.writeClient(readyForQuery(status));
          }
        },
      });
      this.direct(l, SYNC);
    }
    return DROP;
  }

  private pipelineDone(outcomes: PendingOutcome[], status: number, only: BackendLink | undefined): void {
    for (const o of outcomes) {
      this.statementOutcome(o.cls, o.decision, o.ok, status);
      if (o.decision.target === 'both') this.recordSetting(o.sql, o.cls, o.ok, status);
    }
    this.txStatusIs(status);
    if (status === TxStatus.Failed && only !== undefined && only !== this.primary) this.poisonPrimary();
  }

  private onFlush(): number {
    let any = false;
    this.scanner.flushRun();
    for (const l of this.links) {
      if (l?.inPipeline) {
        l.flushIfNeeded();
        any = true;
      }
    }
    if (!any) this.primaryLink().write(FLUSH_MSG);
    return DROP;
  }

  // ---------------------------------------------------------------- backends → client (LinkOwner)

  writeClient(bytes: Buffer): boolean {
    if (this.closed || this.client.destroyed) return true;
    this.ctx.metrics?.clientBytesOut(bytes.length);
    return this.client.write(bytes);
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
    if (link !== this.primary) return;
    if (this.links.some((l) => l !== undefined && l.visible > 0)) this.asyncQueue.push(bytes);
    else this.writeClient(bytes);
  }

  progressed(_link: BackendLink): void {
    this.lastActivity = Date.now();
    if (this.asyncQueue.length > 0 && !this.links.some((l) => l !== undefined && l.visible > 0)) {
      this.writeClient(Buffer.concat(this.asyncQueue.splice(0)));
    }
    this.resumeClient('replies');
  }

  backendError(link: BackendLink, f: Record<string, string>): void {
    this.ctx.countError?.(link.nodeId, f.V ?? f.S ?? 'ERROR', f.C ?? '');
  }

  backendFatal(link: BackendLink, f: Record<string, string>): void {
    this.log.warn({ node: link.nodeId, code: f.C, err: f.M }, 'backend sent FATAL');
    if (f.C === SQLSTATE.adminShutdown || f.C === SQLSTATE.crashShutdown)
      this.ctx.reportBackendError?.(link.nodeId, 'shutdown');
  }

  linkBroken(link: BackendLink, message: string): void {
    this.log.error({ node: link.nodeId, err: message }, 'invalid data from backend');
    link.conn.socket.destroy();
  }

  linkClosed(link: BackendLink): void {
    if (this.closed) return;
    const c = link.conn;
    if (!link.fatal) this.ctx.reportBackendError?.(link.nodeId, 'io');
    if (link !== this.primary) {
      const pending = link.pendingRequests();
      // Outside a transaction, reads that got no reply yet are re-sent; inside one, a node that
      // ran nothing but the mirrored BEGIN/SET can be left without the client noticing.
      const resendable = (e: Expectation): boolean => e.skippable === true || (e.resend !== undefined && !e.started);
      const movable = this.routing.inTransaction
        ? !link.usedInTx && pending.every((e) => e.skippable === true)
        : pending.every(resendable);
      if (movable) {
        this.log.warn(
          { node: link.nodeId, backendPid: c.pid, resent: pending.length },
          'load-balance node connection lost; moving reads',
        );
        this.links[link.nodeId] = undefined;
        link.detach();
        for (const st of this.stmts.values()) st.nodes = st.nodes.filter((n) => n !== link.nodeId);
        // lbNodeId stays: once the node is marked down, the next read draws another node.
        const p = this.primaryLink();
        let last: Expectation | undefined;
        for (const e of link.takePending()) {
          if (e.skippable) {
            // Its twin on the primary decides the outcome.
            queueMicrotask(() => e.done?.({ end: e.end, mode: e.mode, held: [] }, link));
            continue;
          }
          e.resend?.(p, e);
          last = e;
        }
        // A re-sent pipeline that was waiting on a Flush needs one on its new node too.
        if (last && last.end !== END_READY) p.write(FLUSH_MSG);
        if (this.passAction === link.action) this.passAction = p.action;
        return;
      }
    }
    if (link.fatal) {
      this.close();
      return;
    }
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

  // ---------------------------------------------------------------- state for the rest of pgrelay

  /** True while a request is outstanding on any backend. */
  get busy(): boolean {
    return this.links.some((l) => l !== undefined && l.pending > 0);
  }

  get txStatus(): number {
    return this.primary?.txStatus ?? TxStatus.Idle;
  }

  get backendConnections(): BackendConnection[] {
    return this.links.filter((l): l is BackendLink => l !== undefined).map((l) => l.conn);
  }

  /** Is this session using node `id` (for a graceful detach)? */
  usesNode(id: number): boolean {
    return this.links[id] !== undefined;
  }

  /** Forward a CancelRequest to each backend running a request of this session. */
  cancel(): void {
    const cfg = this.ctx.config();
    for (const link of this.links) {
      if (!link || link.pending === 0) continue;
      const c = link.conn;
      this.log.info({ node: c.nodeId, backendPid: c.pid }, 'forwarding cancel request');
      void sendCancel(c.host, c.port, c.pid, c.secretKey, cfg.connect_timeout);
    }
  }

  /** Report a FATAL error to the client and end the session. */
  fatal(err: PgError): void {
    if (this.closed) return;
    if (!this.client.destroyed && this.client.writable)
      this.client.write(errorResponse({ ...err.toFields(), severity: 'FATAL' }));
    this.close();
  }

  /** End the session: close the client, reset or close the backends. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.removeListener('data', this.onClientData);
    if (!this.client.destroyed) this.client.end();
    this.client.setTimeout(2000, () => this.client.destroy());
    for (let i = 0; i < this.links.length; i++) {
      const link = this.links[i];
      if (!link) continue;
      this.links[i] = undefined;
      link.detach();
      this.releaseBackend(link.conn, this.terminated && link.clean);
    }
    this.primary = undefined;
    this.finish();
  }

  private onClientClosed(): void {
    if (!this.closed) {
      if (!this.terminated) this.debug({}, 'client closed the connection without Terminate');
      this.close();
    }
  }

  private finish(): void {
    this.closed = true;
    this.ctx.registry.unregister(this.pid);
    const cb = this.onEnd;
    this.onEnd = undefined;
    cb?.();
  }

  /** Reset a backend connection and put it in the cache, or close it. */
  private releaseBackend(conn: BackendConnection, clean: boolean): void {
    const cfg = this.ctx.config();
    if (!clean || !cfg.connection_cache || conn.dead || !isCacheableDatabase(this.database)) {
      conn.close();
      return;
    }
    const cache = this.ctx.cache;
    cache.resetStarted(conn.cacheKey);
    resetConnection(conn, cfg.reset_query_list, 10_000).then(
      (ok) => {
        if (ok) cache.put(conn);
        else conn.close();
        cache.resetDone(conn.cacheKey);
      },
      () => {
        conn.close();
        cache.resetDone(conn.cacheKey);
      },
    );
  }
}

const TRACE = process.env.PGRELAY_TRACE === '1';
/** ParameterDescription with no parameters (Describe of an admin statement). */
const NO_PARAMS = Buffer.from([0x74, 0, 0, 0, 6, 0, 0]);
const FLUSH_MSG = Buffer.from([FE.Flush, 0, 0, 0, 4]);

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(undefined), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      () => {
        clearTimeout(t);
        resolve(undefined);
      },
    );
  });
}

/** Could not reach the server (as opposed to the server refusing the login, e.g. an unknown role). */
function isNetworkError(e: unknown): boolean {
  return e instanceof PgError ? e.code.startsWith('08') : true;
}

function statusChar(s: number): 'I' | 'T' | 'E' {
  return s === TxStatus.InTransaction ? 'T' : s === TxStatus.Failed ? 'E' : 'I';
}

function errorFieldsOf(f: Record<string, string>): ErrorFields {
  const sev = (f.V ?? f.S ?? 'ERROR') as ErrorFields['severity'];
  return {
    severity: sev,
    code: f.C ?? SQLSTATE.internalError,
    message: f.M ?? 'error on the load-balance node',
    detail: f.D,
    hint: f.H,
  };
}

function printable(type: number): string {
  return type >= 0x20 && type < 0x7f ? String.fromCharCode(type) : `\\x${type.toString(16).padStart(2, '0')}`;
}

/** Statement text for logs, without passwords (ALTER/CREATE ROLE … PASSWORD '…'). */
export function redact(sql: string): string {
  return /password/i.test(sql) ? sql.replace(/(password\s+)('(?:[^']|'')*'|\S+)/gi, "$1'*****'") : sql;
}

/**
 * Run reset_query_list on an idle connection (pgpool: `ABORT` only when not idle),
 * each as its own Query, all written at once. Resolves true when every query
 * succeeded within the timeout.
 */
export function resetConnection(conn: BackendConnection, queries: string[], timeoutMs: number): Promise<boolean> {
  const list = queries.filter((q) => !(conn.txStatus === TxStatus.Idle && /^\s*abort\s*$/i.test(q)));
  if (list.length === 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    let expected = list.length;
    let failed = false;
    const sink: FrameSink = {
      passAction: DROP,
      onMessage(type, buf, start, end) {
        if (type === 0x5a) {
          conn.txStatus = buf[start];
          if (--expected === 0) done(!failed && conn.txStatus === TxStatus.Idle);
        } else if (type === 0x45) {
          failed = true;
        } else {
          const k = readCString(buf, start, end);
          const v = k && readCString(buf, k[1], end);
          if (k && v) conn.params.set(k[0], v[0]);
        }
        return DROP;
      },
      emit() {},
      onFramingError() {
        done(false);
      },
    };
    const decode = new Uint8Array(256);
    decode[0x5a] = decode[0x45] = decode[0x53] = 1;
    const scanner = new MessageScanner(sink, decode, 0x7fffffff);
    const onData = (c: Buffer): void => {
      scanner.push(c);
    };
    const onClose = (): void => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    let finished = false;
    function done(ok: boolean): void {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      conn.socket.removeListener('data', onData);
      conn.socket.removeListener('close', onClose);
      resolve(ok);
    }
    conn.socket.on('data', onData);
    conn.socket.on('close', onClose);
    conn.socket.resume();
    conn.socket.write(Buffer.concat(list.map(queryMessage)));
  });
}

export function queryMessage(sql: string): Buffer {
  const n = Buffer.byteLength(sql);
  const b = Buffer.allocUnsafe(6 + n);
  b[0] = FE.Query;
  b.writeUInt32BE(5 + n, 1);
  b.write(sql, 5);
  b[5 + n] = 0;
  return b;
}
