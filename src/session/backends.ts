/**
 * A session's backend connections: which it holds (the primary, its load-balance
 * node, or every live node with statement_level_load_balance), how it gets them
 * (from the cache or new, at start and later when reads move to another node) and
 * gives them back (reset into the cache, or closed), and the one path by which the
 * session writes to a backend.
 *
 * Reply order: the client must see replies in the order of its requests. A request
 * for node B is only sent once no other node owes the client a reply (`gate`): those
 * nodes get a Flush so that they answer what they have, and the client waits. A
 * pipeline on one node (the common case) flows without waiting.
 *
 * Writes: bytes the client scanner forwards go straight to a link (`emit` in
 * session.ts); everything the session writes itself goes through `write`, which
 * first lets the scanner emit the bytes it scanned before the current message, so
 * an own write can never overtake them.
 */
import type { Logger } from '../log.js';
import { SQLSTATE, TxStatus } from '../protocol/constants.js';
import { DROP, type Drop } from '../protocol/framing.js';
import { PgError } from '../protocol/messages.js';
import { isCacheableDatabase } from '../pool/cache.js';
import type { BackendSecret } from '../auth/backend.js';
import { abortConnection, type BackendConnection, cacheKeyFor, connectBackend, sendCancel } from '../pool/connector.js';
import { type EffectivePoolSettings, poolSettingsOf } from '../pool/pool-settings.js';
import {
  internSettings,
  replayPlan,
  type StartupRestore,
  splitStartup,
  startupRestore,
  startupRestoreOfMany,
} from '../pool/startup-settings.js';
import { PoolClosed, type PoolKey, PoolNodeDown, type PoolRequest, PoolWaitTimeout } from '../pool/server-pool.js';
import { queryMessage, resetConnection, resetFailure, runQueries } from '../pool/query.js';
import { isLive } from '../cluster/nodes.js';
import type { Classification, SessionFacts } from '../router/router.js';
import { BackendLink, type LinkExpectation, type LinkOwner } from './backend-link.js';
import type { SessionContext } from './context.js';
import type { ErrorFieldMap } from './replies.js';
import { ownQuery } from './own-query.js';
import { mayCallNextval } from './pinning.js';

const IGNORE = (): void => undefined;

/** What the backends need from their session. */
export interface BackendsOwner extends LinkOwner {
  readonly ctx: SessionContext;
  /** Start-up parameters as the client sent them (the cache key and the backends' start-up). */
  readonly params: Map<string, string>;
  readonly database: string;
  readonly facts: SessionFacts;
  readonly log: Logger;
  debug(fields: Record<string, unknown>, msg: string): void;
  /** Emit what the client scanner scanned before the message being handled (see framing.ts). */
  flushRun(): void;
  /** What client authentication produced for logging into backends (overrides ctx.backendSecret). */
  readonly authSecret?: BackendSecret;
  /** The session's routing state (its default isolation decides whether a unit of work takes a read node). */
  readonly routing: {
    readonly defaultSerializable: boolean;
    readonly startupSerializable: boolean;
    readonly settingsOnPrimary: boolean;
    readonly roleOnPrimary: boolean;
  };
  /** pool_mode = transaction: a primary connection taken for a unit of work started with `level` (default_transaction_isolation). */
  connectionIsolation(level: string): void;
  /** The session's settings (replayed on pooled connections, pool_mode = transaction). */
  readonly settings: { readonly statements: readonly string[]; readonly startup: ReadonlyMap<string, string> };
  /** pool_mode = transaction: replaying the session's settings on a connection failed (see settingsError). */
  settingsFailed(err: PgError): void;
  /** Session mode: a setting replayed on a read node connected mid-session failed there. */
  settingsDiverged(link: BackendLink, error: ErrorFieldMap): void;
  /**
   * The session's settings, which set its role, are about to be replayed on `link`: its
   * writes (the role it created) are waited for there first (read-your-writes).
   */
  beforeSettingsOn(link: BackendLink): void;
  /**
   * An admin user: it does not wait for a primary during an outage (it gets an
   * admin-only session at once instead, see session.ts).
   */
  readonly isAdminUser: boolean;
}

/** openOnce: a read node's connection not taken, the session's reads going to the primary (primaryOnly). */
const READS_ON_PRIMARY = new Error('reads on the primary');

/** How long a node a mid-session connection failed to is not tried again. */
const UNREACHABLE_MS = 5000;
/** How long a released connection may take to answer pgrelay's own requests before it is closed instead. */
const OWN_REQUESTS_MS = 5000;

/** Told once when `Backends.checkoutWaiting`'s links are held, or could not be. */
export interface CheckoutDone {
  taken(): void;
  failed(e: unknown): void;
}

export class Backends {
  /** Links by node id. */
  private readonly links: Array<BackendLink | undefined> = [];
  private primaryLink: BackendLink | undefined;
  /** Node the session balances its reads to (SHOW pool_nodes load_balance_node). */
  lbNodeId = -1;
  /** Where the client's pass-through messages (CopyData) go: the link of the last forwarded request. */
  passTo: BackendLink | Drop = DROP;
  /** Nodes a mid-session connection just failed to (until when not to retry, ms). */
  private readonly unreachable = new Map<number, number>();
  /**
   * pool_mode = transaction: links are held only from the start of a transaction to its
   * end (`checkout`, `checkin`); connections come from and go back to the server pools.
   */
  readonly pooled: boolean;
  /** pool_mode = transaction: the server pool keys by node id (the server parameters never change). */
  private readonly poolIds: Array<PoolKey | undefined> = [];
  /** pool_mode = transaction: why the session keeps its links until it ends (it used session state). */
  pinned: string | undefined;

  /**
   * pool_mode = transaction: the start-up parameters server connections are opened with (and
   * the server pools keyed by): user, database and what cannot be SET later; the client's
   * other start-up settings are replayed (pool/startup-settings.ts). Session mode: all of them.
   */
  readonly serverParams: Map<string, string>;
  /** pool_mode = transaction: the client's start-up settings replayed with SET (lower-case name → value). */
  readonly startupSettings: ReadonlyMap<string, string>;

  constructor(private readonly owner: BackendsOwner) {
    this.pooled = this.poolSettings().pool_mode === 'transaction';
    if (this.pooled) {
      const split = splitStartup(owner.params);
      this.serverParams = split.server;
      this.startupSettings = internSettings(split.settings);
    } else {
      this.serverParams = owner.params;
      this.startupSettings = new Map();
    }
  }

  /** The pool settings of the session's database and user (pool_mode, database_pool_settings, user_pool_settings). */
  private poolSettings(): EffectivePoolSettings {
    return poolSettingsOf(this.owner.ctx.config()).for(this.owner.database, this.owner.params.get('user') ?? '');
  }

  /**
   * The session holds backend links (always, in session mode, from `open` to `releaseAll`;
   * pool_mode = transaction, from `checkout` to `checkin`).
   */
  get held(): boolean {
    for (const l of this.links) if (l !== undefined) return true;
    return false;
  }

  /**
   * pool_mode = transaction: the session holds links but not the primary's (a read-only
   * unit of work checked out only its load-balance node: `checkoutWaiting`).
   */
  get withoutPrimary(): boolean {
    return this.primaryLink === undefined && this.held;
  }

  /** Nothing outstanding, no pipeline, no transaction, no copy on any link: the links may go back. */
  get idle(): boolean {
    for (const l of this.links) {
      if (l === undefined) continue;
      if (l.pending > 0 || l.inPipeline || l.copyIn || l.txStatus !== TxStatus.Idle || l.replies.midMessage)
        return false;
    }
    return true;
  }

  /**
   * The primary's link: defined from a successful `open` until `releaseAll` (session mode);
   * pool_mode = transaction, while links are held, except for a read-only unit of work that
   * checked out only its load-balance node (`checkoutWaiting`). Undefined otherwise.
   */
  get primary(): BackendLink | undefined {
    return this.primaryLink;
  }

  /** The primary's transaction status (idle when there is no primary link). */
  get txStatus(): number {
    return this.primaryLink?.txStatus ?? TxStatus.Idle;
  }

  get(nodeId: number): BackendLink | undefined {
    return this.links[nodeId];
  }

  /** The links, indexed by node id (holes for nodes without one). */
  get list(): ReadonlyArray<BackendLink | undefined> {
    return this.links;
  }

  /** The other node of a statement run on both, or undefined when the load-balance node is the primary. */
  secondLink(): BackendLink | undefined {
    const l = this.links[this.lbNodeId];
    return l && l !== this.primaryLink ? l : undefined;
  }

  /**
   * Where a statement for "both" nodes runs besides the primary: the load-balance node's
   * link, or with `all` (statement_level_load_balance: reads drawn among every standby held)
   * every link other than the primary's. Not `first`, the link the statement goes to first
   * (the read node's, in a failed read-only transaction the primary has no part in).
   */
  secondLinks(all: boolean, first: BackendLink | undefined): BackendLink[] {
    if (!all) {
      const l = this.secondLink();
      return l && l !== first ? [l] : [];
    }
    const out: BackendLink[] = [];
    for (const l of this.links) if (l !== undefined && l !== this.primaryLink && l !== first) out.push(l);
    return out;
  }

  /** Does any link other than `except` still owe the client a reply? */
  owesClient(except?: BackendLink): boolean {
    for (const l of this.links) if (l !== undefined && l !== except && l.visible > 0) return true;
    return false;
  }

  /** Requests outstanding on all backends together. */
  get pendingTotal(): number {
    let n = 0;
    for (const l of this.links) if (l !== undefined) n += l.pending;
    return n;
  }

  /** A backend socket holds written bytes past its high-water mark. */
  get congested(): boolean {
    for (const l of this.links) if (l?.congested) return true;
    return false;
  }

  /** True while a request is outstanding on any backend. */
  get busy(): boolean {
    for (const l of this.links) if (l !== undefined && l.pending > 0) return true;
    return false;
  }

  get connections(): BackendConnection[] {
    const out: BackendConnection[] = [];
    for (const l of this.links) if (l) out.push(l.conn);
    return out;
  }

  // ---------------------------------------------------------------- acquiring

  /**
   * Connect to the primary and the load-balance node (every live node with
   * statement_level_load_balance). When the primary cannot be reached, have it
   * checked (a failover may follow) and try once more, so that a client arriving
   * during a failover waits instead of failing.
   */
  async open(isClosed: () => boolean): Promise<void> {
    const ctx = this.owner.ctx;
    try {
      // pool_mode = transaction: one primary connection for the start-up's ParameterStatus.
      await this.openOnce(this.pooled);
    } catch (e) {
      // An admin user does not wait: it gets a session of admin commands at once instead (session.ts).
      if (this.owner.isAdminUser) throw e;
      if (!(await this.primaryChecked(e, ctx.nodes.primaryId, 'at connect')) || isClosed()) return;
      await this.openOnce(this.pooled);
    }
  }

  /**
   * The primary's connection could not be had (`e`, on node `primary`): when a failover
   * may cure that — the node could not be reached, refused as going away (57P01, 57P02,
   * 57P03), or went down while the client waited for its pool — have it health-checked at
   * once (as a session's backend error does: it fails over only if the check fails) and
   * resolve once the check is done, for the caller to try once more (from the new primary
   * when there is one; openOnce waits for it). Rethrows `e` otherwise.
   */
  private async primaryChecked(e: unknown, primary: number, when: string): Promise<true> {
    const failedNode = e instanceof PoolNodeDown ? e.nodeId : primary;
    if (!primaryMayFailOver(e) || failedNode < 0) throw e;
    this.owner.log.info(
      { node: failedNode, err: (e as Error).message },
      `primary unreachable ${when}: waiting for its health check`,
    );
    // Down already (its pool's waiters are told so): the failover is under way.
    if (!(e instanceof PoolNodeDown))
      await withTimeout(this.owner.ctx.services.reportBackendError(failedNode, 'connect'), 30_000);
    return true;
  }

  /**
   * pool_mode = transaction: take links for one transaction from the server pools (the
   * primary, then the node drawn for its reads (`readNode` when drawn already): always in
   * that order, so that two sessions never wait for each other's; a session holding only a
   * read node's connection gives it back before it waits for the primary's, see
   * session.ts needPrimary), and bring each connection's settings to the session's
   * (resolved once the server took them: the client's statements run with its settings).
   */
  checkout(readNode?: number): Promise<void> {
    const nodes = this.owner.ctx.nodes;
    const primary = nodes.primaryId;
    const failedOver = (e: unknown): Promise<void> =>
      this.primaryChecked(e, primary >= 0 ? primary : nodes.primaryId, 'for a transaction').then(() =>
        this.checkoutOnce(),
      );
    return this.checkoutOnce(readNode, failedOver);
  }

  /**
   * pool_mode = transaction, for a unit of work that waits for the pool (checkoutNow could
   * not take its connections at once): what `checkout(readNode)` does — or, `readOnly`, take
   * only `readNode`'s connection (a unit of work that only reads there: read-node-only.ts),
   * then `checkout` if that node cannot be had —, asking for the connection it waits for
   * with this session's own PoolRequest: no promise or closure per transaction, the path
   * of nearly every unit of work of a busy pool. `done.taken()` once the links are held and
   * their settings given, `done.failed(e)` where `checkout` rejects. False (nothing asked)
   * where `checkout` does it: no primary known, statement_level_load_balance.
   */
  checkoutWaiting(readNode: number | undefined, readOnly: boolean, done: CheckoutDone): boolean {
    const ctx = this.owner.ctx;
    if (ctx.router.statementLevel || !this.pooled || this.waiting !== undefined) return false;
    const only = readOnly && readNode !== undefined;
    const node = only ? readNode : ctx.nodes.primaryNode()?.id;
    if (node === undefined || !ctx.nodes.get(node)) return false;
    this.waiting = done;
    this.waitingFor = node;
    this.waitingForReadNode = only;
    // The read node to take with the primary's (its own when not load balancing).
    this.drawnWithPrimary = only ? -1 : (this.drawReadNodeOnce(readNode) ?? node);
    ctx.pools.request(
      this.poolId(node),
      this.opener(node),
      ctx.config().query_wait_timeout * 1000,
      this.waitingRequest,
    );
    return true;
  }

  /** Who `checkoutWaiting` tells, while it waits (undefined otherwise), and for what. */
  private waiting: CheckoutDone | undefined;
  private waitingFor = -1;
  private waitingForReadNode = false;
  private drawnWithPrimary = -1;

  private readonly waitingRequest: PoolRequest<BackendConnection> = {
    lent: (c) => {
      c.useCount++;
      if (this.waitingForReadNode) {
        const link = this.linkTo(c);
        this.links[c.nodeId] = link;
        this.lbNodeId = c.nodeId;
        this.waitingDone();
      } else if (this.owner.ctx.router.loadBalancing && c.startupIsolation === undefined) {
        // A new connection: its default isolation decides where reads may go (see openOnce).
        this.askStartupIsolation(c).then(
          (k) => this.primaryLent(k),
          (e: unknown) => this.waitingRequest.failed(e),
        );
      } else this.primaryLent(c);
    },
    failed: (e) => {
      const id = this.waitingFor;
      const err = e instanceof PoolWaitTimeout ? this.waitTimeout(id) : e;
      let retry: Promise<void>;
      if (this.waitingForReadNode) {
        // That node cannot be had: the primary's and a read node's instead.
        this.readNodeUnavailable(id, err);
        retry = this.checkout();
      } else {
        // As `checkout`: have the node checked and try once more (a failover under way).
        retry = this.primaryChecked(err, id, 'for a transaction').then(() => this.checkoutOnce());
      }
      const done = this.waiting as CheckoutDone;
      this.waiting = undefined;
      retry.then(
        () => done.taken(),
        (x: unknown) => done.failed(x),
      );
    },
  };

  /**
   * `checkoutWaiting`: the primary's connection `c` is this session's; the read node's is
   * taken if it can be without waiting (else the unit of work reads from the primary, as
   * in openOnce).
   */
  private primaryLent(c: BackendConnection): void {
    const id = c.nodeId;
    const link = this.linkTo(c);
    this.links[id] = link;
    this.primaryLink = link;
    this.lbNodeId = id;
    this.notePrimary(c);
    const lb = this.drawnWithPrimary;
    const ctx = this.owner.ctx;
    if (lb === id || !ctx.nodes.get(lb) || this.primaryOnly) return this.waitingDone();
    if (ctx.pools.idleFor(this.poolId(lb)) !== undefined) {
      this.take(lb);
      this.lbNodeId = lb;
      return this.waitingDone();
    }
    const opening = this.acquireNow(lb);
    if (opening === undefined) {
      this.poolFull.add(lb);
      this.owner.debug({ node: lb }, 'no free connection to the node drawn for reads; reading from the primary');
      return this.waitingDone();
    }
    opening
      .then(
        (r) => {
          this.links[lb] = this.linkTo(r);
          this.lbNodeId = lb;
        },
        (e: unknown) => this.readNodeUnavailable(lb, e),
      )
      .then(() => this.waitingDone());
  }

  /** `checkoutWaiting`'s links are taken: attach them (attachHeld), tell who waits. */
  private waitingDone(): void {
    const done = this.waiting as CheckoutDone;
    this.waiting = undefined;
    const replayed = this.attachHeld();
    if (replayed === undefined) done.taken();
    else
      replayed.then(
        () => done.taken(),
        (e: unknown) => done.failed(e),
      );
  }

  /** The read node's connection could not be had: reads go to the primary; a network error is reported. */
  private readNodeUnavailable(nodeId: number, e: unknown): void {
    this.owner.log.warn(
      { node: nodeId, err: (e as Error).message },
      'load-balance node unavailable; reading from the primary',
    );
    if (isNetworkError(e)) void this.owner.ctx.services.reportBackendError(nodeId, 'connect');
  }

  /**
   * The node a unit of work reads from, as `checkout` draws it: `readNode` when drawn
   * already, else by weight, a drawn node that lags replaced at once
   * (prefer_lower_delay_standby); the primary's id without load balancing; null when none.
   */
  private drawReadNodeOnce(readNode?: number): number | null {
    const router = this.owner.ctx.router;
    if (!router.loadBalancing || this.primaryOnly) return this.owner.ctx.nodes.primaryId;
    if (readNode !== undefined) return readNode;
    const lb = router.chooseSessionNode(this.owner.facts);
    return lb === null ? null : (router.readNode(lb, this.owner.facts).sessionLbNode ?? lb);
  }

  /**
   * pool_mode = transaction: the server connections of the session's database and role
   * start with `default_transaction_isolation` = serializable (learnt when it logged in).
   */
  connectionsSerializable = false;

  /**
   * pool_mode = transaction: a session whose default isolation is SERIALIZABLE, or whose
   * connections start with it, takes no read node's connection: its reads go to the primary
   * anyway, and a hot standby refuses every statement that takes a snapshot in that mode
   * (pgrelay's replay of the session's start-up settings there too), also after the session
   * SET a lower default (replayed after them). Nor does a session whose settings or role
   * were changed on the primary alone (its reads go there: policy.ts settingsOnPrimary,
   * roleOnPrimary).
   */
  private get primaryOnly(): boolean {
    const r = this.owner.routing;
    return (
      this.pooled &&
      (this.connectionsSerializable ||
        r.defaultSerializable ||
        r.startupSerializable ||
        r.settingsOnPrimary ||
        r.roleOnPrimary)
    );
  }

  /** A primary connection the session took, its start-up isolation known: see connectionsSerializable. */
  private notePrimary(c: BackendConnection): void {
    const level = c.startupIsolation;
    if (!this.pooled || level === undefined) return;
    this.connectionsSerializable = level === 'serializable';
    this.owner.connectionIsolation(level);
  }

  /** What opens a connection to `nodeId` for the pool (one per node and session). */
  private opener(nodeId: number): () => Promise<BackendConnection> {
    let open = this.openers[nodeId];
    if (open === undefined) {
      open = () => this.connect(nodeId);
      this.openers[nodeId] = open;
    }
    return open;
  }

  private readonly openers: Array<(() => Promise<BackendConnection>) | undefined> = [];

  /**
   * `checkout` once; `onPrimaryError`: what to do when the primary's connection could not
   * be had (checkout: have the node checked and try again once, so that a unit of work
   * that comes during a failover runs on the new primary instead of ending the session).
   */
  private checkoutOnce(readNode?: number, onPrimaryError?: (e: unknown) => Promise<void>): Promise<void> {
    const ctx = this.owner.ctx;
    const primary = ctx.nodes.primaryNode();
    // Without load balancing, only the primary's connection (openOnce would take just that):
    // taken with the fewest promise hops, as most checkouts of a busy pool wait for one.
    if (primary !== undefined && !ctx.router.loadBalancing) {
      const id = primary.id;
      return this.acquire(id).then((c) => this.takePrimary(id, c), onPrimaryError);
    }
    // A session under way waits for a new primary, an admin user's too (only a login does not).
    return this.openOnce(false, readNode, true).then(() => this.attachHeld(), onPrimaryError);
  }

  /** `checkout` without load balancing: the primary's connection `c` became this session's. */
  private takePrimary(id: number, c: BackendConnection): Promise<void> | undefined {
    const link = this.linkTo(c);
    this.links[id] = link;
    this.primaryLink = link;
    this.lbNodeId = id;
    return this.attachLink(link);
  }

  /**
   * pool_mode = transaction: `checkout` (or, `readOnly`, `checkoutWaiting`'s read node alone) done at
   * once, without waiting, when it can be: a primary is known, each server pool the unit of
   * work takes has an idle connection and no client waiting, and nothing is to be replayed
   * on those connections (their settings are the session's already, and with load balancing
   * the primary's default isolation is known). Either every connection is taken or none.
   * Returns true when the links are held; otherwise the read node drawn for the unit of work
   * (undefined when none was), for the caller's `checkout`, so that it is not drawn twice.
   */
  checkoutNow(readNode?: number, readOnly = false): true | number | undefined {
    const ctx = this.owner.ctx;
    const router = ctx.router;
    const primary = ctx.nodes.primaryNode();
    if (!primary) return readNode;
    let lbNode: number;
    let primaryId: number | undefined = primary.id;
    if (readOnly && readNode !== undefined) {
      lbNode = readNode;
      primaryId = undefined;
    } else if (!router.loadBalancing) {
      lbNode = primary.id;
    } else {
      // Every live node with statement_level_load_balance: `checkout` takes them.
      if (router.statementLevel && !this.primaryOnly) return readNode;
      const lb = this.drawReadNodeOnce(readNode);
      if (lb === null) return undefined;
      lbNode = lb;
    }
    const pools = ctx.pools;
    const want = this.owner.settings;
    const p = primaryId === undefined ? undefined : pools.idleFor(this.poolId(primaryId));
    // A connection that lacks the settings gets them right before the client's message
    // (applySettings), when that need not be waited for.
    if (primaryId !== undefined) {
      if (p === undefined || !(settingsMatch(p, want) || this.replaysWithoutWaiting)) return lbNode;
      if (router.loadBalancing && p.startupIsolation === undefined) return lbNode;
      // Its start-up isolation decides whether a read node's connection is taken with it (primaryOnly).
      if (this.primaryOnly || (this.pooled && p.startupIsolation === 'serializable')) lbNode = primaryId;
    }
    const second = lbNode === primaryId ? undefined : lbNode;
    if (second !== undefined) {
      if (!ctx.nodes.get(second)) return lbNode;
      const r = pools.idleFor(this.poolId(second));
      if (r === undefined || !(settingsMatch(r, want) || this.replaysWithoutWaiting)) return lbNode;
    }
    if (primaryId !== undefined) {
      this.primaryLink = this.take(primaryId);
      this.notePrimary(this.primaryLink.conn);
    }
    if (second !== undefined) this.take(second);
    this.lbNodeId = lbNode;
    // Their settings are the session's, or a replay need not be waited for (see above).
    this.attachHeld();
    return true;
  }

  /**
   * The link this session uses `c` through: in pool_mode = transaction the connection's
   * own, taken over from the last session that used it when it can be (BackendLink.adopt),
   * else a new one.
   */
  private linkTo(c: BackendConnection): BackendLink {
    const l = c.link;
    if (l instanceof BackendLink && l.adopt(this.owner)) return l;
    const link = new BackendLink(this.owner, c, this.owner.ctx.services.metrics);
    if (this.pooled) c.link = link;
    return link;
  }

  /** Lend this session the idle connection of `nodeId`'s pool that `idleFor` found (checkoutNow). */
  private take(nodeId: number): BackendLink {
    const c = this.owner.ctx.pools.takeIdle(this.poolId(nodeId));
    c.useCount++;
    const link = this.linkTo(c);
    this.links[nodeId] = link;
    return link;
  }

  /**
   * pool_mode = transaction: the node a unit of work would read from, drawn as `checkout`
   * draws it (by weight, then prefer_lower_delay_standby), and whether reads run there now
   * (not lagging past delay_threshold); undefined with statement_level_load_balance (reads
   * go to every live node), without load balancing, or without a primary.
   */
  drawReadNode(): { node: number; readsThere: boolean } | undefined {
    const ctx = this.owner.ctx;
    const router = ctx.router;
    const primary = ctx.nodes.primaryId;
    if (!router.loadBalancing || router.statementLevel || primary < 0) return undefined;
    if (this.primaryOnly) return { node: primary, readsThere: false };
    const lb = router.chooseSessionNode(this.owner.facts);
    if (lb === null) return { node: primary, readsThere: false };
    // One look at the node: where the session's reads would go, and whether they run there now.
    const t = router.readNode(lb, this.owner.facts);
    const node = t.sessionLbNode ?? lb;
    return { node, readsThere: node !== primary && t.node === node };
  }

  /**
   * Attach a link just taken, bring its connection's settings to the session's, drop the
   * client statements stray there: a promise when the settings replay is to be waited for.
   */
  private attachLink(l: BackendLink): Promise<void> | undefined {
    l.attach();
    const replayed = this.applySettings(l);
    this.deallocateStrays(l);
    return replayed;
  }

  /** `attachLink` for every link held (see checkout). */
  private attachHeld(): Promise<void> | undefined {
    let replayed: Array<Promise<void>> | undefined;
    for (const l of this.links) {
      const r = l && this.attachLink(l);
      if (r) (replayed ??= []).push(r);
    }
    return replayed && Promise.all(replayed).then(() => undefined);
  }

  /** pool_mode = transaction: bring the settings of every link (attached) to the session's. */
  async applySettingsAll(): Promise<void> {
    const replayed: Array<Promise<void>> = [];
    for (const l of this.links) {
      const r = l && this.applySettings(l);
      if (r) replayed.push(r);
    }
    await Promise.all(replayed);
  }

  /** Deallocate what a client's second Parse left under its own name on the connection (extended.ts parseExisting). */
  private deallocateStrays(link: BackendLink): void {
    const strays = link.conn.strays;
    if (strays === undefined) return;
    link.conn.strays = undefined;
    for (const name of strays)
      this.request(
        link,
        {
          kind: 'query',
          mode: 'drop',
          skippable: true,
          // Skipped (the transaction it was sent into aborted): the copy is still there.
          done: (e) => {
            if (e.error !== undefined && e.started !== true) (link.conn.strays ??= new Set()).add(name);
          },
        },
        queryMessage(`DEALLOCATE "${name.replace(/"/g, '""')}"`),
      );
  }

  /**
   * Replay on `link` the session's settings its connection lacks: its start-up settings that
   * differ and the statements after the ones it has, or all after RESET ALL when it has
   * others (another session's, or unknown ones). See pool/startup-settings.ts replayPlan.
   */
  private applySettings(link: BackendLink): Promise<void> | undefined {
    const c = link.conn;
    const want = this.owner.settings;
    // The common case, without building a plan (a connection has them: a server took them).
    if (settingsMatch(c, want)) {
      this.settingsProven = true;
      return undefined;
    }
    const plan = replayPlan({ startup: c.startupSettings, statements: c.settings }, want);
    // Nothing to replay: the connection's (own) list is the session's already.
    if (plan.length > 0) c.settings = [...want.statements];
    c.startupSettings = want.startup;
    if (plan.length === 0) return undefined;
    if (link !== this.primaryLink && plan.some((sql) => SETS_ROLE.test(sql))) this.owner.beforeSettingsOn(link);
    if (this.replaysWithoutWaiting) {
      // Settings a server took already: sent right before the client's statement, not
      // waited for (no round trip); should one fail even so, the session ends. The reset
      // (if any) is a Query of its own, so that a failing SET cannot leave another
      // client's settings; the SETs one Query (a newline ends a comment a client's SET had).
      const reset = plan.lastIndexOf('RESET ALL') + 1;
      const done = (e: { error?: ErrorFieldMap }): void => {
        if (e.error === undefined) return;
        c.settings = DIRTY_SETTINGS;
        this.owner.settingsFailed(settingsError(e.error));
      };
      for (const part of [plan.slice(0, reset), plan.slice(reset)])
        if (part.length > 0)
          this.request(link, { kind: 'query', mode: 'drop', skippable: true, done }, queryMessage(part.join('\n;\n')));
      return undefined;
    }
    // skippable: if a read node's connection dies meanwhile, nothing of the client's ran
    // there yet; its statements go where the session takes links next, settings replayed there.
    return this.runOwn(link, plan, true).then((failed) => {
      if (failed === undefined) {
        this.settingsProven = true;
        return;
      }
      c.settings = DIRTY_SETTINGS;
      throw settingsError(failed);
    });
  }

  /**
   * Run pgrelay's own `statements` on `link`, one Query each, replies dropped: resolves
   * once the last is answered, with the first error (undefined when none failed).
   */
  private runOwn(
    link: BackendLink,
    statements: readonly string[],
    skippable: boolean,
  ): Promise<ErrorFieldMap | undefined> {
    return new Promise((resolve) => {
      if (statements.length === 0) return resolve(undefined);
      let failed: ErrorFieldMap | undefined;
      statements.forEach((sql, i) => {
        const done = (e: { error?: ErrorFieldMap }): void => {
          failed ??= e.error;
          if (i === statements.length - 1) resolve(failed);
        };
        this.request(link, { kind: 'query', mode: 'drop', skippable, done }, queryMessage(sql));
      });
    });
  }

  /**
   * pool_mode = transaction: a statement of the unit of work under way may have called
   * nextval() (see noteStatement): its primary connection is the client's `lastUnit` at checkin.
   */
  private unitMayCallNextval = false;
  /**
   * The session's settings were taken by a server (replayed, or found on a connection):
   * every later SET of them ran on a server too, so a replay need not be waited for.
   */
  private settingsProven = false;

  /**
   * A replay of the session's settings is sent in front of the client's statement without
   * waiting for it: once a server took them, and not for a session that set its role (should
   * that fail, the role dropped meanwhile, its statement would run with the login user's
   * privileges).
   */
  private get replaysWithoutWaiting(): boolean {
    return this.settingsProven && !this.owner.settings.statements.some((sql) => SETS_ROLE.test(sql));
  }
  /**
   * The server connection of the client's last unit of work that may have called nextval(),
   * and its use count when the client last gave it back: while nobody else took it since,
   * its sequence state (lastval(), currval()) is the client's (takeLastUnit).
   */
  private lastUnit: { conn: BackendConnection; uses: number } | undefined;

  /** pool_mode = transaction: the unit's primary connection forgot its sequence state (forgetSequenceState). */
  private unitSequencesDiscarded = false;

  /**
   * pool_mode = transaction: is the sequence state (lastval(), currval()) of the unit's
   * primary connection the client's — the connection of its last nextval() that nobody
   * used since (as takeLastUnit checks), or the unit may have set it itself?
   */
  get sequenceStateOwn(): boolean {
    if (this.unitMayCallNextval || this.unitSequencesDiscarded) return true;
    const l = this.lastUnit;
    const p = this.primaryLink?.conn;
    return l !== undefined && p !== undefined && l.conn === p && p.useCount === l.uses + 1;
  }

  /**
   * pool_mode = transaction, inside a transaction block: the unit's primary connection
   * forgets its sequence state before a statement reads it (DISCARD SEQUENCES, queued before
   * it): PostgreSQL then answers 55000, not another client's value.
   */
  forgetSequenceState(): void {
    const p = this.primaryLink;
    if (p === undefined) return;
    this.unitSequencesDiscarded = true;
    this.request(p, { kind: 'query', mode: 'drop' }, queryMessage('DISCARD SEQUENCES'));
  }

  /** A statement of the unit of work under way succeeded (see unitMayCallNextval). */
  noteStatement(cls: Classification): void {
    if (!this.unitMayCallNextval && mayCallNextval(cls)) this.unitMayCallNextval = true;
  }

  /**
   * pool_mode = transaction, a unit of work that starts by reading the sequence state
   * (lastval(), currval()): take the connection of the client's last unit that may have
   * called nextval() if it is idle and nobody used it since, as the unit's primary link.
   * False when it cannot be had (then that state is another client's, or gone).
   */
  takeLastUnit(): boolean {
    const l = this.lastUnit;
    const ctx = this.owner.ctx;
    if (l === undefined || this.held) return false;
    const c = l.conn;
    if (c.useCount !== l.uses || c.nodeId !== ctx.nodes.primaryId) return false;
    if (!settingsMatch(c, this.owner.settings) && !this.replaysWithoutWaiting) return false;
    if (!ctx.pools.takeIdleConnection(c)) return false;
    c.useCount++;
    const link = this.linkTo(c);
    this.links[c.nodeId] = link;
    this.primaryLink = link;
    this.lbNodeId = c.nodeId;
    // Taken only when its settings need not be waited for (see above).
    this.attachLink(link);
    return true;
  }

  /**
   * pool_mode = transaction: the transaction ended; give the links back to the server
   * pools, each connection marked with the session's settings (what it has now).
   */
  checkin(): void {
    const p = this.primaryLink?.conn;
    if (p !== undefined) {
      const l = this.lastUnit;
      // Lent to this client alone since it was remembered: still the client's sequence state.
      if (this.unitMayCallNextval) this.lastUnit = { conn: p, uses: p.useCount };
      else if (l !== undefined && l.conn === p && p.useCount === l.uses + 1) l.uses = p.useCount;
    }
    this.unitMayCallNextval = false;
    this.unitSequencesDiscarded = false;
    this.endReadOnlyTx();
    const reported = (this.primaryLink ?? this.links[this.lbNodeId])?.conn.params.get('default_transaction_read_only');
    if (reported !== undefined) this.defaultReadOnly = reported === 'on';
    const statements = this.owner.settings.statements;
    let settings: readonly string[] | undefined;
    const pools = this.owner.ctx.pools;
    for (let i = 0; i < this.links.length; i++) {
      const link = this.links[i];
      if (!link) continue;
      this.links[i] = undefined;
      link.detach();
      const c = link.conn;
      if (c.settings !== DIRTY_SETTINGS) {
        // A copy only when they differ (the session's list changes in place).
        if (!sameStatements(c.settings, statements)) {
          settings ??= [...statements];
          c.settings = settings;
        }
        // DISCARD ALL may have dropped the start-up settings (on the connection too).
        c.startupSettings = this.owner.settings.startup;
      }
      pools.release(c, link.clean && c.txStatus === TxStatus.Idle);
    }
    // Its entries are all undefined now; kept at its length (truncated, it would grow anew at the next checkout).
    this.primaryLink = undefined;
    this.passTo = DROP;
    // Set.clear() allocates a new table: most checkins find it empty.
    if (this.poolFull.size > 0) this.poolFull.clear();
  }

  /**
   * pool_mode = transaction: the session's recorded settings changed in a way the links
   * held did not all follow: each is reset and given the session's settings again, queued
   * before anything else the client sends there.
   */
  resyncSettings(): void {
    for (const l of this.links) {
      if (!l) continue;
      l.conn.settings = DIRTY_SETTINGS;
      // A session whose settings were changed on the primary alone reads there (primaryOnly):
      // its standby connections are only reset before their next use (a replay there now
      // could name a role the standby has not replayed yet).
      const r = this.owner.routing;
      if (l !== this.primaryLink && (r.settingsOnPrimary || r.roleOnPrimary)) continue;
      this.applySettings(l)?.catch((e: PgError) => this.owner.settingsFailed(e));
    }
  }

  /**
   * `link`'s connection kept a setting the session does not have (a SET of a pipeline that
   * failed on another node): RESET ALL and the session's settings, now, behind what the link
   * has to answer.
   */
  resetSettingsOn(link: BackendLink): void {
    link.conn.settings = DIRTY_SETTINGS;
    this.applySettings(link)?.catch((e: PgError) => this.owner.settingsFailed(e));
  }

  /** `link`'s connection lacks some of the session's settings: reset before its next use. */
  settingsUnknownOn(link: BackendLink): void {
    link.conn.settings = DIRTY_SETTINGS;
  }

  /** A setting changed inside a transaction on these links: whoever gets them next resets them first. */
  settingsUnknown(): void {
    for (const l of this.links) if (l) l.conn.settings = DIRTY_SETTINGS;
  }

  /** Connect to the primary and a read node (`readNode` when drawn already; see `open`, `checkout`). */
  private async openOnce(primaryOnly = false, readNode?: number, waitForPrimary = false): Promise<void> {
    const ctx = this.owner.ctx;
    const cfg = ctx.config();
    let primary = ctx.nodes.primaryNode();
    if (!primary && (waitForPrimary || !this.owner.isAdminUser)) {
      const id = await ctx.services.waitForPrimary(
        cfg.connect_timeout > 0 ? Math.max(cfg.connect_timeout, 10_000) : 10_000,
      );
      if (id >= 0) primary = ctx.nodes.primaryNode();
    }
    if (!primary)
      throw new PgError(
        SQLSTATE.cannotConnectNow,
        'no primary node is available',
        'FATAL',
        undefined,
        'pgrelay is searching for the primary; retry shortly.',
      );
    const router = ctx.router;
    const wanted = new Set<number>([primary.id]);
    if (primaryOnly) {
      this.lbNodeId = primary.id;
    } else if (router.loadBalancing) {
      if (router.statementLevel && !this.primaryOnly) {
        for (const n of ctx.nodes.all()) if (isLive(n.status) && n.weight > 0) wanted.add(n.id);
      }
      this.lbNodeId = this.drawReadNodeOnce(readNode) ?? primary.id;
      wanted.add(this.lbNodeId);
    } else {
      this.lbNodeId = primary.id;
    }
    const ids = [...wanted];
    // With load balancing, the primary connection's default isolation decides where reads may go.
    const take = (id: number): Promise<BackendConnection> =>
      id === primary.id && router.loadBalancing
        ? this.acquire(id)
            .then((c) => this.askStartupIsolation(c))
            .then((c) => {
              this.notePrimary(c);
              return c;
            })
        : this.acquire(id);
    // Pooled connections are taken one after the other, the primary first (see checkout). A
    // read node's only if one is to be had at once: waiting for it while holding the primary's
    // would stop every other client that needs the primary (a convoy behind that standby's
    // pool); the unit of work then reads from the primary.
    // Nor when the primary's connection starts SERIALIZABLE (primaryOnly).
    const results = this.pooled
      ? await inOrder(
          ids.map(
            (id) => () =>
              id === primary.id ? take(id) : this.primaryOnly ? Promise.reject(READS_ON_PRIMARY) : this.takeAtOnce(id),
          ),
        )
      : await Promise.allSettled(ids.map((id) => take(id)));
    for (let i = 0; i < ids.length; i++) {
      const r = results[i];
      if (r.status === 'fulfilled') {
        this.links[ids[i]] = this.linkTo(r.value);
      } else if (r.reason === READS_ON_PRIMARY) {
        // Not taken: the session reads from the primary.
      } else if (r.reason instanceof PoolBusy) {
        this.owner.debug({ node: ids[i] }, 'no free connection to the node drawn for reads; reading from the primary');
      } else if (ids[i] !== primary.id) {
        this.owner.log.warn(
          { node: ids[i], err: (r.reason as Error).message },
          'load-balance node unavailable; reading from the primary',
        );
        if (isNetworkError(r.reason)) void ctx.services.reportBackendError(ids[i], 'connect');
      }
    }
    const pr = results[ids.indexOf(primary.id)];
    if (pr.status === 'rejected') {
      for (const l of this.links) if (l) this.dropConnection(l.conn);
      this.links.length = 0;
      throw pr.reason;
    }
    this.primaryLink = this.links[primary.id];
    if (!this.links[this.lbNodeId]) this.lbNodeId = primary.id;
  }

  /**
   * Learn the default isolation a primary connection started with (once per connection):
   * a session whose default is SERIALIZABLE (ALTER DATABASE/ROLE … SET, start-up options)
   * must read from the primary, a hot standby refusing it. A connection that does not
   * answer is closed and the error thrown, as when connecting failed.
   */
  private async askStartupIsolation(conn: BackendConnection): Promise<BackendConnection> {
    if (conn.startupIsolation !== undefined || conn.txStatus !== TxStatus.Idle) return conn;
    try {
      const r = await runQueries(conn, ['SHOW default_transaction_isolation'], 10_000);
      const v = r.results[0]?.rows[0]?.[0];
      if (typeof v === 'string') {
        conn.startupIsolation = v;
        this.owner.ctx.pools.noteStartupIsolation(conn.cacheKey, v);
      }
      return conn;
    } catch (e) {
      // Its place in the server pool is freed too (pool_mode = transaction).
      this.dropConnection(conn);
      throw e;
    }
  }

  /** Start reading replies on every link (once the client has been told it is logged in). */
  attachAll(): void {
    for (const l of this.links) l?.attach();
  }

  /** A connection to `nodeId`: from the cache when one is idle there, else a new one. */
  private acquire(nodeId: number): Promise<BackendConnection> {
    const ctx = this.owner.ctx;
    const node = ctx.nodes.get(nodeId);
    if (!node) return Promise.reject(new PgError(SQLSTATE.connectionFailure, `no backend node ${nodeId}`));
    if (!this.pooled) return this.connect(nodeId);
    const cfg = ctx.config();
    const id = this.poolId(nodeId);
    // Not async: a client served from the pool goes on with as few promise hops as possible.
    return ctx.pools.acquire(id, this.opener(nodeId), cfg.query_wait_timeout * 1000).then(
      (c) => {
        c.useCount++;
        return c;
      },
      (e: unknown) => {
        throw e instanceof PoolWaitTimeout ? this.waitTimeout(nodeId) : e;
      },
    );
  }

  /** query_wait_timeout passed before a connection to `nodeId` became free: what the client is told. */
  private waitTimeout(nodeId: number): PgError {
    const ctx = this.owner.ctx;
    const id = this.poolId(nodeId);
    const wait = ctx.config().query_wait_timeout;
    const size = ctx.pools.limitsOf(id).poolSize;
    return new PgError(
      SQLSTATE.tooManyConnections,
      `query_wait_timeout: no backend connection to node ${nodeId} became free in ${wait} s (pool_mode = transaction, pool size ${size} for database "${id.database}" and user "${id.user}")`,
      'FATAL',
      undefined,
      'Retry later; or raise default_pool_size or the pool_size of database_pool_settings/user_pool_settings (and max_db_connections, max_user_connections), or shorten transactions.',
    );
  }

  /** pool_mode = transaction: the server pool of `nodeId` this session's connections come from (built once). */
  private poolId(nodeId: number): PoolKey {
    let id = this.poolIds[nodeId];
    if (id === undefined) {
      id = {
        key: cacheKeyFor(nodeId, this.serverParams),
        nodeId,
        user: this.owner.params.get('user') ?? '',
        database: this.owner.database,
      };
      this.poolIds[nodeId] = id;
    }
    return id;
  }

  /** pool_mode = transaction: `acquire` only if that needs no waiting for another session's connection. */
  private acquireNow(nodeId: number): Promise<BackendConnection> | undefined {
    const ctx = this.owner.ctx;
    if (!ctx.nodes.get(nodeId)) throw new PgError(SQLSTATE.connectionFailure, `no backend node ${nodeId}`);
    const p = ctx.pools.acquireNow(this.poolId(nodeId), () => this.connect(nodeId));
    return p?.then((c) => {
      c.useCount++;
      return c;
    });
  }

  /** pool_mode = transaction: a connection to `nodeId` to be had without waiting, or PoolBusy. */
  private takeAtOnce(nodeId: number): Promise<BackendConnection> {
    const p = this.acquireNow(nodeId);
    if (p !== undefined) return p;
    this.poolFull.add(nodeId);
    return Promise.reject(new PoolBusy(nodeId));
  }

  /** A connection lent to this session is closed and its place in the server pool freed. */
  private dropConnection(c: BackendConnection): void {
    if (this.pooled) this.owner.ctx.pools.release(c, false);
    else c.close();
  }

  /** A new connection to `nodeId` (or, in session mode, one from the connection cache). */
  private async connect(nodeId: number): Promise<BackendConnection> {
    const ctx = this.owner.ctx;
    const node = ctx.nodes.get(nodeId);
    if (!node) throw new PgError(SQLSTATE.connectionFailure, `no backend node ${nodeId}`);
    const cfg = ctx.config();
    if (cfg.connection_cache && !this.pooled) {
      const cached = await ctx.cache.takeOrWait(cacheKeyFor(nodeId, this.owner.params), 200);
      if (cached) {
        this.owner.debug({ node: nodeId, backendPid: cached.pid }, 'reusing cached backend connection');
        cached.useCount++;
        return cached;
      }
    }
    const conn = await connectBackend({
      nodeId,
      host: node.host,
      port: node.port,
      params: this.serverParams,
      connectTimeoutMs: cfg.connect_timeout,
      secret: (u) => this.owner.authSecret ?? ctx.backendSecret(u),
    });
    // The node went down (a detach, a failover) while the connection was being made: a
    // session must not start using it (its writes would go to a node out of service).
    if (!isLive(node.status)) {
      conn.close();
      throw new PoolNodeDown(nodeId);
    }
    this.owner.debug({ node: nodeId, backendPid: conn.pid }, 'new backend connection');
    reportedByBackends = new Map(conn.params);
    ctx.services.metrics.backendConnectionOpened(nodeId);
    if (!this.pooled) conn.useCount++;
    ctx.nodes.markUsed(nodeId);
    return conn;
  }

  /** May the session connect to `nodeId` mid-session now (it did not just fail)? */
  mayConnect(nodeId: number): boolean {
    return (this.unreachable.get(nodeId) ?? 0) <= Date.now() && !this.poolFull.has(nodeId);
  }

  /**
   * pool_mode = transaction: nodes whose server pool had no connection for `openLater` without
   * waiting; their reads go to the primary until the links are given back (`checkin`).
   */
  private readonly poolFull = new Set<number>();

  /**
   * Connect to another node for reads mid-session (the load-balance node went down
   * and another was drawn, or prefer_lower_delay_standby moved it), replaying the
   * session's settings there. Resolves once connected or given up.
   */
  async openLater(nodeId: number, sessionLb: number | null, replay: readonly string[], isClosed: () => boolean) {
    const ctx = this.owner.ctx;
    try {
      // pool_mode = transaction: the session holds the primary's connection and a read node's;
      // waiting for a third pool while holding them could make two sessions wait for each
      // other (each holding the read node the other waits for). So only a connection to be had
      // at once; else this unit of work reads from the primary.
      const conn = this.pooled ? await this.acquireNow(nodeId) : await this.acquire(nodeId);
      if (conn === undefined) {
        this.poolFull.add(nodeId);
        this.owner.debug({ node: nodeId }, 'no free connection to the node chosen for reads; reading from the primary');
        return;
      }
      if (isClosed()) {
        this.dropConnection(conn);
        return;
      }
      const link = this.linkTo(conn);
      this.links[nodeId] = link;
      link.attach();
      if (this.pooled) await this.applySettings(link)?.catch((e: PgError) => this.owner.settingsFailed(e));
      else {
        if (replay.some((sql) => SETS_ROLE.test(sql))) this.owner.beforeSettingsOn(link);
        const done = (e: { error?: ErrorFieldMap }): void => {
          if (e.error !== undefined) this.owner.settingsDiverged(link, e.error);
        };
        // skippable: if the node dies first, the reads behind go to the primary, which has the settings.
        for (const sql of replay)
          this.request(link, { kind: 'query', mode: 'drop', skippable: true, done }, queryMessage(sql));
      }
      if (sessionLb === nodeId) this.lbNodeId = nodeId;
      this.owner.debug({ node: nodeId, replayed: replay.length }, 'connected to another node for reads');
    } catch (e) {
      this.unreachable.set(nodeId, Date.now() + UNREACHABLE_MS);
      this.owner.log.warn(
        { node: nodeId, err: (e as Error).message },
        'could not connect to the node chosen for reads; reading from the primary',
      );
      if (isNetworkError(e)) void ctx.services.reportBackendError(nodeId, 'connect');
    }
  }

  // ---------------------------------------------------------------- writing

  /**
   * May a client-visible request go to `target` now? Only if no other node still owes
   * the client a reply; otherwise those nodes are flushed and the caller waits.
   */
  gate(target: BackendLink | null): boolean {
    let blocked = false;
    for (const l of this.links) {
      if (!l || l === target || l.visible === 0) continue;
      this.flush(l);
      blocked = true;
    }
    return !blocked;
  }

  /**
   * Queue `e` on `link` for the message being handled, which the client scanner then
   * forwards itself (zero copy): returns `link` as the scanner's action.
   */
  send(link: BackendLink, e: LinkExpectation, inTransaction: boolean): BackendLink {
    link.expect(e);
    if (e.mode === 'forward') {
      this.passTo = link;
      if (link !== this.primaryLink && inTransaction) link.usedInTx = true;
    }
    return link;
  }

  /**
   * pool_mode = transaction: what sets the client's start-up settings again right behind a
   * statement that resets them (RESET ALL, DISCARD ALL, RESET x…), if it does.
   */
  restoreFor(cls: Classification): StartupRestore | undefined {
    if (!this.pooled) return undefined;
    if (cls.statementCount > 1)
      return cls.multiSettings ? startupRestoreOfMany(cls.multiSettings, this.owner.settings.startup) : undefined;
    if (cls.resetsAll !== true && cls.resetsSetting === undefined) return undefined;
    return startupRestore(cls, this.owner.settings.startup);
  }

  /**
   * Send the client's message `bytes` (expecting `e`) and `restore` right behind it: its
   * ParameterStatus report the start-up values, and it is not re-sent elsewhere.
   */
  sendRestoring(
    link: BackendLink,
    e: LinkExpectation,
    bytes: Buffer,
    inTransaction: boolean,
    restore: StartupRestore,
  ): Drop {
    e.reportAs = restore.reportAs;
    e.resend = undefined;
    this.send(link, e, inTransaction);
    this.write(link, bytes);
    this.restoreStartup(link, restore);
    return DROP;
  }

  /**
   * Queue `restore` (see restoreFor) on `link`, behind the statement just sent there (a
   * query of pgrelay's own: it leaves the client's unnamed statement and portal there).
   */
  restoreStartup(link: BackendLink, restore: StartupRestore): void {
    // In a failed transaction the statement did nothing, and this would fail too.
    if (link.txStatus === TxStatus.Failed) return;
    ownQuery(this, link, restore.sql, IGNORE, { skippable: true });
  }

  /** Write bytes of the session's own to `link` (after what the scanner has yet to emit). */
  write(link: BackendLink, bytes: Buffer): void {
    this.owner.flushRun();
    link.write(bytes);
  }

  /** `expect` then `write`: a request the session composes itself. */
  request(link: BackendLink, e: LinkExpectation, bytes: Buffer): void {
    link.expect(e);
    this.write(link, bytes);
  }

  /** Send a Flush to `link` if requests wait behind an unflushed pipeline there. */
  flush(link: BackendLink): void {
    if (!link.needsFlush) return;
    this.owner.flushRun();
    link.flushIfNeeded();
  }

  /** Mark a link as part of the current extended-protocol pipeline. */
  inPipeline(link: BackendLink): void {
    link.inPipeline = true;
    link.needsFlush = true;
  }

  /** The transaction ended: no link has run a read of it any more. */
  transactionEnded(): void {
    for (const l of this.links) if (l) l.usedInTx = false;
    this.endReadOnlyTx();
    this.endTransactionElsewhere();
    if (this.restoredInTx !== undefined) {
      // What it set again may have been undone with the transaction: reset before the next use.
      this.restoredInTx = undefined;
      for (const l of this.links) {
        if (l === undefined) continue;
        if (this.pinned !== undefined) this.resetSettingsOn(l);
        else this.settingsUnknownOn(l);
      }
    }
  }

  /**
   * pool_mode = transaction: a DISCARD ALL's start-up values (`values`, lower-case name →
   * value), set again behind its pipeline, were set inside the transaction the pipeline
   * began after it (a BEGIN behind the DISCARD ALL, which committed on its own): a failure
   * or ROLLBACK of that transaction undoes them, back to the connection's own defaults
   * (`defaults`), which a direct connection's DISCARD ALL would not. Until it ends, a report
   * of such a default tells the start-up value (Session.tellClient).
   */
  restoredInTx:
    | { readonly values: ReadonlyMap<string, string>; readonly defaults: ReadonlyMap<string, string> }
    | undefined;

  restoreInTransaction(values: ReadonlyMap<string, string>, link: BackendLink): void {
    const defaults = new Map<string, string>();
    for (const [k, v] of link.conn.startupReport) defaults.set(k.toLowerCase(), v);
    this.restoredInTx = { values, defaults };
  }

  /**
   * The primary's transaction ended by a statement it alone ran — PREPARE TRANSACTION, which
   * ends it even when it fails, or a COMMIT among other statements of one Query —: the
   * other links still in it (its BEGIN and reads given to the load-balance node) roll it
   * back there, so that later reads do not run inside it (with its snapshot, its SET LOCAL)
   * and, in pool_mode = transaction, the connections go back to the pools. Nothing was
   * written there. Only a link with nothing of the client's outstanding: what it still has
   * to answer may belong to what follows (a transaction it joined later begins on the
   * primary first); queries of pgrelay's own (the abort of that transaction after an error
   * on the primary, still on its way) belong to the transaction that ended.
   * `begunAgain`: the Query also began another transaction on the primary (`COMMIT; BEGIN`),
   * which is the primary's alone.
   */
  endTransactionElsewhere(begunAgain = false): void {
    const p = this.primaryLink;
    if (p === undefined || (p.txStatus !== TxStatus.Idle && !begunAgain)) return;
    for (const l of this.links) {
      if (l === undefined || l.txStatus === TxStatus.Idle || !this.freeForOwnQuery(l)) continue;
      this.owner.log.debug({ node: l.nodeId }, 'the transaction ended on the primary alone: rolled back here');
      this.request(l, { kind: 'query', mode: 'drop', skippable: true }, queryMessage('ROLLBACK'));
    }
  }

  /**
   * `sql` (a statement of pgrelay's own, its reply dropped) on every other link than the
   * primary's with nothing of the client's outstanding: what the client's statement did on
   * the primary alone (DEALLOCATE ALL among several statements) is done there too.
   */
  alsoElsewhere(sql: string): void {
    for (const l of this.links)
      if (l !== undefined && this.freeForOwnQuery(l))
        this.request(l, { kind: 'query', mode: 'drop', skippable: true }, queryMessage(sql));
  }

  /**
   * May a Query of pgrelay's own go to `l`, a link other than the primary's, now? Not into
   * a pipeline or a copy of the client's, nor behind a request of the client's (it may
   * belong to what follows); behind requests of pgrelay's own (their replies dropped or
   * captured: queries, the Close of a copy after the client's Sync), yes.
   */
  private freeForOwnQuery(l: BackendLink): boolean {
    if (l === this.primaryLink || !l.live || l.inPipeline || l.copyIn) return false;
    if (l.pending === 0) return true;
    // (pgrelay's own queries capture their rows: own-query.ts.)
    for (const e of l.replies.pendingRequests()) if (e.mode !== 'drop' && e.mode !== 'capture') return false;
    return true;
  }

  /**
   * pool_mode = transaction: a read-only transaction begun on the read node alone
   * (read-node-only.ts readOnlyBegin) and not joined by the primary yet; `readOnlyBegin`:
   * its BEGIN as the client wrote it, and `readOnlySavepoints` the savepoints it holds there
   * now (oldest first), what the primary is given if it joins (joinPrimary).
   */
  readOnlyTx = false;
  /**
   * pool_mode = transaction: the session's default_transaction_read_only is on, as its
   * connections reported it (ParameterStatus, PostgreSQL 14 and later) when it last gave
   * them back: a plain BEGIN then begins a read-only transaction (readOnlyBegin). A wrong
   * guess costs nothing but a join: the primary is given the client's own BEGIN.
   */
  defaultReadOnly = false;
  private readOnlyBeginText = '';
  readonly readOnlySavepoints: string[] = [];

  /** A read-only transaction begins on the read node alone with `sql`. */
  beginReadOnly(sql: string): void {
    this.readOnlyTx = true;
    this.readOnlyBeginText = sql;
    this.readOnlySavepoints.length = 0;
  }

  /** A transaction command of the read-only transaction succeeded on the read node alone: follow its savepoints. */
  readOnlyRan(cls: Classification): void {
    const name = cls.name;
    if (!this.readOnlyTx || name === undefined) return;
    const sp = this.readOnlySavepoints;
    if (cls.tx === 'savepoint') sp.push(name);
    else if (cls.tx === 'release' || cls.tx === 'rollback_to') {
      // RELEASE drops the newest savepoint of that name and those after it; ROLLBACK TO keeps it.
      const i = sp.lastIndexOf(name);
      if (i >= 0) sp.length = cls.tx === 'release' ? i : i + 1;
    }
  }

  endReadOnlyTx(): void {
    this.readOnlyTx = false;
    this.readOnlyBeginText = '';
    this.readOnlySavepoints.length = 0;
  }

  /**
   * pool_mode = transaction, holding the read node's connection alone in a read-only
   * transaction (or pinned): take the primary's connection — waiting for it is safe, as no
   * session waits for a read node's connection while holding the primary's (openOnce,
   * checkoutWaiting, openLater take those at once or not at all) —, give it the session's
   * settings, then what the transaction ran so far (its BEGIN, the savepoints it holds),
   * replies dropped. Rejects (the session ends) if the primary refuses any of it.
   */
  async joinPrimary(): Promise<void> {
    const ctx = this.owner.ctx;
    const primary = ctx.nodes.primaryNode();
    if (primary === undefined)
      throw new PgError(SQLSTATE.connectionFailure, 'no primary node is available to join the transaction', 'FATAL');
    let c = await this.acquire(primary.id);
    if (ctx.router.loadBalancing) c = await this.askStartupIsolation(c);
    const link = this.linkTo(c);
    this.links[primary.id] = link;
    this.primaryLink = link;
    await this.attachLink(link);
    if (!this.readOnlyTx) return;
    // Its BEGIN, then its savepoints as they stand (names as PostgreSQL folded them, quoted).
    const journal = [
      this.readOnlyBeginText,
      ...this.readOnlySavepoints.map((n) => `SAVEPOINT "${n.replace(/"/g, '""')}"`),
    ];
    this.endReadOnlyTx();
    const failed = await this.runOwn(link, journal, false);
    if (failed !== undefined)
      throw new PgError(
        failed.C ?? SQLSTATE.connectionFailure,
        `the primary could not join the read-only transaction: ${failed.M ?? ''}`,
        'FATAL',
      );
  }

  // ---------------------------------------------------------------- losing and giving back

  /** Stop using `link` (its node is gone); its requests are the caller's to re-send. */
  drop(link: BackendLink): void {
    this.links[link.nodeId] = undefined;
    link.detach();
    // pool_mode = transaction: its place in the server pool is free again.
    if (this.pooled) this.owner.ctx.pools.release(link.conn, false);
    if (this.passTo === link) this.passTo = this.primaryLink ?? DROP;
  }

  /** pool_mode = transaction: the primary's link was lost between units of work (session.ts lostBetweenUnits). */
  dropPrimary(link: BackendLink): void {
    this.drop(link);
    if (this.primaryLink === link) this.primaryLink = undefined;
  }

  /** Stop using `link`, whose node is up but no longer in step with the session: its connection is closed, not reused. */
  retire(link: BackendLink): void {
    this.drop(link);
    if (!this.pooled) link.conn.close();
  }

  /** CancelRequests forwarded and not yet processed by their server. */
  cancelsInFlight = 0;

  /**
   * Forward a CancelRequest to each backend running a request of the client's. Until its
   * server has processed it, the session sends that backend nothing new (see session.ts):
   * a cancel that reaches a backend after its statement finished must not hit the next.
   * `onProcessed` runs as each server processes its cancel; the promise resolves once all have.
   */
  cancel(onProcessed: () => void): Promise<void> {
    const cfg = this.owner.ctx.config();
    const sent: Array<Promise<void>> = [];
    for (const link of this.links) {
      if (!link || link.visible === 0) continue;
      const c = link.conn;
      this.owner.log.info({ node: c.nodeId, backendPid: c.pid }, 'forwarding cancel request');
      this.cancelsInFlight++;
      sent.push(
        sendCancel(c.host, c.port, c.pid, c.secretKey, cfg.connect_timeout).then(() => {
          this.cancelsInFlight--;
          onProcessed();
        }),
      );
    }
    return Promise.all(sent).then(() => undefined);
  }

  /**
   * The session ended: reset clean connections into the cache (`cacheable`), close the
   * rest. A connection that still owes replies is released once they are answered
   * (within OWN_REQUESTS_MS, else closed): pgrelay's own requests (a write position
   * being read behind the client's last write), or the end of a reply the client left
   * before reading (PostgreSQL flushes an ErrorResponse at once and its ReadyForQuery
   * after: node-postgres rejects the query, and may end, in between). What still comes
   * for the client is dropped. `settled` runs once no connection runs anything of the
   * session's any more.
   */
  releaseAll(cacheable: boolean, settled?: () => void): void {
    let waiting = 1;
    const one = (): void => {
      if (--waiting === 0) settled?.();
    };
    for (let i = 0; i < this.links.length; i++) {
      const link = this.links[i];
      if (!link) continue;
      this.links[i] = undefined;
      if (link.pending > 0 && !link.fatal && !link.conn.dead && (link.visible === 0 || cacheable)) {
        waiting++;
        link.whenSettled((ok) => {
          link.detach();
          if (!ok && link.pending > 0) abortConnection(link.conn);
          this.release(link.conn, cacheable && ok && this.reusable(link));
          one();
        }, OWN_REQUESTS_MS);
        continue;
      }
      link.detach();
      // Still running a request of the session's whose reply nobody will read: cut it off.
      if (link.pending > 0) abortConnection(link.conn);
      this.release(link.conn, cacheable && this.reusable(link));
    }
    this.primaryLink = undefined;
    this.passTo = DROP;
    one();
  }

  /**
   * May `link`'s connection serve another client? Clean, and (pool_mode = transaction) not in
   * the middle of the client's batch: its implicit transaction would stay open there and the
   * next client's Sync commit what PostgreSQL rolls back when a client leaves before its Sync.
   */
  private reusable(link: BackendLink): boolean {
    return link.clean && !(this.pooled && link.inPipeline);
  }

  /**
   * pool_mode = transaction, the session ended: its connections go back to the server
   * pools, as they are when idle and unpinned, else after reset_query_list (ABORT;
   * DISCARD ALL drops the session state that pinned it); closed when not clean.
   */
  private releasePooled(conn: BackendConnection, clean: boolean): void {
    const pools = this.owner.ctx.pools;
    if (!clean || conn.dead) {
      pools.release(conn, false);
      return;
    }
    if (conn.txStatus === TxStatus.Idle && this.pinned === undefined) {
      if (conn.settings !== DIRTY_SETTINGS) {
        conn.settings = [...this.owner.settings.statements];
        conn.startupSettings = this.owner.settings.startup;
      }
      pools.release(conn, true);
      return;
    }
    const resetList = this.owner.ctx.config().reset_query_list;
    void resetConnection(conn, resetList, 10_000).then((ok) => {
      conn.settings = DIRTY_SETTINGS;
      conn.statements?.clear();
      conn.unnamed = undefined;
      if (resetList.some((q) => /^\s*(DISCARD|DEALLOCATE)\s+ALL\b/i.test(q))) conn.strays = undefined;
      pools.release(conn, ok);
    });
  }

  /** Reset a backend connection and put it in the cache, or close it. */
  private release(conn: BackendConnection, clean: boolean): void {
    const cfg = this.owner.ctx.config();
    if (this.pooled) {
      this.releasePooled(conn, clean);
      return;
    }
    if (!clean || !cfg.connection_cache || conn.dead || !isCacheableDatabase(this.owner.database)) {
      conn.close();
      return;
    }
    const cache = this.owner.ctx.cache;
    cache.resetStarted(conn.cacheKey);
    void resetFailure(conn, cfg.reset_query_list, 10_000).then((failure) => {
      if (failure === undefined) cache.put(conn);
      else {
        this.owner.log.warn(
          { node: conn.nodeId, backendPid: conn.pid, err: failure },
          'reset_query_list failed: backend connection closed instead of cached',
        );
        conn.close();
      }
      cache.resetDone(conn.cacheKey);
    });
  }
}

/**
 * pool_mode = transaction: a server connection refused a session's settings (a start-up
 * parameter with a value PostgreSQL rejects, as it would have refused the start-up).
 */
function settingsError(f: ErrorFieldMap): PgError {
  return new PgError(
    f.C ?? SQLSTATE.invalidParameterValue,
    `${f.M ?? 'invalid setting'} (a start-up parameter or SET of the session, replayed on the server connection serving it: pool_mode = transaction)`,
    'FATAL',
    f.D,
    f.H,
  );
}

/** A pooled connection has the session's settings already: nothing to replay (replayPlan would be empty). */
function settingsMatch(c: BackendConnection, want: BackendsOwner['settings']): boolean {
  if (!sameStatements(c.settings, want.statements)) return false;
  const ha = c.startupSettings;
  const wa = want.startup;
  if (ha === wa) return true;
  if (ha.size !== wa.size) return false;
  for (const [k, v] of ha) if (wa.get(k) !== v) return false;
  return true;
}

function sameStatements(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The settings of a pooled connection are not known (a SET ran inside a transaction): RESET ALL before use. */
export const DIRTY_SETTINGS: readonly string[] = ['\u0000unknown'];

/** A recorded statement that sets the session's role or authorization (SET ROLE, SET SESSION AUTHORIZATION). */
const SETS_ROLE = /^\s*set\s+(session\s+|local\s+)?(role|session\s+authorization)\b/i;

/** What backends reported at their start-up most recently (an admin-only session reports it: see below). */
let reportedByBackends: ReadonlyMap<string, string> | undefined;

/** PostgreSQL 15's start-up report, for when no backend was ever reached in this process. */
const DEFAULT_SERVER_PARAMETERS: ReadonlyArray<[string, string]> = [
  ['server_version', '15.0'],
  ['server_encoding', 'UTF8'],
  ['client_encoding', 'UTF8'],
  ['DateStyle', 'ISO, MDY'],
  ['IntervalStyle', 'postgres'],
  ['TimeZone', 'UTC'],
  ['integer_datetimes', 'on'],
  ['standard_conforming_strings', 'on'],
  ['is_superuser', 'off'],
];

/**
 * ParameterStatus values for a session that has no backend (an admin user while no
 * primary answers): what the backends last reported, with this client's own
 * application_name, client_encoding and user.
 */
export function lastServerParameters(startup: ReadonlyMap<string, string>): Map<string, string> {
  const out = new Map<string, string>(reportedByBackends ?? DEFAULT_SERVER_PARAMETERS);
  out.set('application_name', startup.get('application_name') ?? '');
  const enc = startup.get('client_encoding');
  if (enc) out.set('client_encoding', enc);
  out.set('session_authorization', startup.get('user') ?? '');
  return out;
}

/** Could not reach the server (as opposed to the server refusing the login, e.g. an unknown role). */
export function isNetworkError(e: unknown): boolean {
  if (e instanceof PoolNodeDown || e instanceof PoolClosed) return false;
  return e instanceof PgError ? e.code.startsWith('08') : true;
}

/** Could a failover cure this failure to get a node's connection (see Backends.primaryChecked)? */
function primaryMayFailOver(e: unknown): boolean {
  if (e instanceof PoolNodeDown || isNetworkError(e)) return true;
  if (!(e instanceof PgError)) return false;
  return e.code === SQLSTATE.adminShutdown || e.code === SQLSTATE.crashShutdown || e.code === SQLSTATE.cannotConnectNow;
}

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

/**
 * Run the tasks one after the other; the outcomes in order (like Promise.allSettled).
 * When the first fails, the others are not run (they fail with its error).
 */
/** A read node's server pool has no connection to be had at once (the unit of work reads from the primary). */
class PoolBusy extends Error {
  constructor(readonly nodeId: number) {
    super(`no free connection to node ${nodeId}`);
  }
}

async function inOrder<T>(tasks: ReadonlyArray<() => Promise<T>>): Promise<Array<PromiseSettledResult<T>>> {
  const out: Array<PromiseSettledResult<T>> = [];
  for (const t of tasks) {
    const first = out[0];
    if (first?.status === 'rejected') {
      out.push(first);
      continue;
    }
    try {
      out.push({ status: 'fulfilled', value: await t() });
    } catch (e) {
      out.push({ status: 'rejected', reason: e });
    }
  }
  return out;
}
