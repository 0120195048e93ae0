/**
 * The session's side of routing: asks the router (router/router.ts decides) where a
 * statement goes, runs the catalog lookups it needs on the session's primary
 * connection, turns the decision into a link (checking lag and liveness, connecting
 * to another node when reads moved), and feeds each statement's outcome back into
 * the routing state.
 */
import { isLive } from '../cluster/nodes.js';
import { redact } from '../log.js';
import { TxStatus } from '../protocol/constants.js';
import { noticeResponse } from '../protocol/messages.js';
import type { SUSPEND } from '../protocol/framing.js';
import { nodeOwningPids } from '../pool/backend-pids.js';
import { afterStatement, unansweredDecision } from '../router/policy.js';
import type { CatalogQuestions, Classification, Decision, SessionFacts } from '../router/router.js';
import type { BackendLink } from './backend-link.js';
import type { SessionCore } from './core.js';
import { ownQuery } from './own-query.js';
import type { ReadYourWrites } from './read-your-writes.js';

/**
 * Catalog lookups in a row for one statement (it is presented again after each): function
 * callees take one per level (three), relations one more. Past this, what is still unknown
 * is treated as unanswered — answers can be evicted before the statement is decided again
 * when it needs more than relcache_size of them, and it would be looked up for ever.
 */
const MAX_LOOKUPS_PER_STATEMENT = 5;

export class StatementRouting {
  /** The last catalog lookup failed: the statement presented again goes to the primary. */
  private catalogFailed = false;
  /** Catalog lookups run for the statement being decided (see MAX_LOOKUPS_PER_STATEMENT). */
  private lookups = 0;

  constructor(
    private readonly s: SessionCore,
    private readonly facts: SessionFacts,
    /** Read-your-writes: where a read that must see the session's writes may run. */
    readonly ryw: ReadYourWrites,
  ) {}

  /**
   * Decide where `sql` goes (at Bind, `settingArgs` are the values of the parameters
   * cls.settingParams names). Returns SUSPEND while catalog questions are asked on the
   * primary (the message is presented again once they are answered).
   */
  decide(
    sql: string,
    cls: Classification,
    settingArgs?: readonly string[],
    boundPids?: readonly number[],
  ): Decision | typeof SUSPEND {
    const s = this.s;
    const pids = boundPids ?? (cls.pidConsts.length > 0 ? cls.pidConsts : undefined);
    const pidNode = pids === undefined ? undefined : this.pidNode(pids);
    const router = s.ctx.router;
    const db = this.facts.database;
    const d = router.decide(sql, cls, s.routing, db, settingArgs, pidNode);
    const p = s.backends.primary;
    if ('target' in d) {
      // pool_mode = transaction: whether a user function may have changed settings is asked
      // once (its volatility), when it can be now; unanswered, its connections are reset after.
      const fns = s.backends.pooled && cls.functions.length > 0 ? router.unknownUserFunctions(db, cls.functions) : [];
      if (fns.length === 0 || !this.canAskCatalog(p)) {
        this.catalogFailed = false;
        this.lookups = 0;
        return d;
      }
      return this.askCatalog({ functions: [...fns], relations: [] }, p);
    }
    if (!this.canAskCatalog(p)) {
      // The catalog cannot be asked now (or was just asked in vain): this statement reads
      // from the primary (pool_mode = transaction, holding only a read node's connection:
      // the primary's is taken first, see linkFor).
      this.catalogFailed = false;
      this.lookups = 0;
      return unansweredDecision(cls, d.functions);
    }
    return this.askCatalog(d, p);
  }

  /**
   * The lookup runs on the session's primary connection `p`, between requests and outside
   * pipelines (its queries only read the catalog and cannot fail), and not right after one failed.
   */
  private canAskCatalog(p: BackendLink | undefined): p is BackendLink {
    return (
      p !== undefined &&
      !this.catalogFailed &&
      this.lookups < MAX_LOOKUPS_PER_STATEMENT &&
      p.pending === 0 &&
      !p.inPipeline &&
      p.txStatus !== TxStatus.Failed
    );
  }

  /**
   * The node other than the primary owning the backends `pids` name, among the
   * connections pgrelay holds (session mode: pooled links change hands per transaction).
   */
  private pidNode(pids: readonly number[]): number | undefined {
    const b = this.s.backends;
    if (b.pooled) return undefined;
    const node = nodeOwningPids(pids);
    return node === b.primary?.nodeId ? undefined : node;
  }

  /** The decision for `sql` when no catalog lookup is needed for it, else undefined. */
  decideNow(sql: string, cls: Classification): Decision | undefined {
    const d = this.s.ctx.router.decide(sql, cls, this.s.routing, this.facts.database);
    return 'target' in d ? d : undefined;
  }

  /** Ask the catalog `q` on `p`; the statement waits (SUSPEND) and is presented again once answered. */
  private askCatalog(q: CatalogQuestions, p: BackendLink): typeof SUSPEND {
    const s = this.s;
    this.lookups++;
    const verdict: typeof SUSPEND = s.wait('catalog');
    void s.ctx.router
      .answer(this.facts.database, q, (sql) => this.internalQuery(p, sql))
      .then((ok) => {
        this.catalogFailed = !ok;
        s.resume('catalog');
      });
    return verdict;
  }

  /** Run a query on a link for pgrelay itself; its replies never reach the client. */
  private internalQuery(link: BackendLink, sql: string): Promise<ReadonlyArray<Record<string, unknown>>> {
    return new Promise((resolve, reject) => {
      ownQuery(
        this.s.backends,
        link,
        sql,
        (x) => {
          if (x.error) return reject(new Error(x.error.M ?? 'catalog query failed'));
          resolve(x.rows.map((r) => Object.fromEntries(x.columns.map((c, i) => [c, r[i]]))));
        },
        { columns: true },
      );
    });
  }

  /**
   * The link for a decision's single target, after lag, liveness and read-your-writes
   * checks; SUSPEND while the session connects to the node its reads now belong on, or
   * while write and replay positions are read, or (pool_mode = transaction, holding only a
   * read node's connection) while the primary's is taken.
   */
  linkFor(d: Decision): BackendLink | typeof SUSPEND {
    const s = this.s;
    const b = s.backends;
    if (d.target !== 'standby') return s.needPrimary();
    if (d.node !== undefined) return this.linkTo(d.node);
    // A REPEATABLE READ transaction whose snapshot its load-balance node took reads there to
    // its end (one snapshot, as on a direct connection), even once that node lags past
    // delay_threshold or another is preferred: its data is as old as the snapshot anyway.
    const st = s.routing;
    if (st.inTransaction && st.txRepeatableRead && st.txSnapshotTaken && !st.txSnapshotOnPrimary) {
      const held = b.get(b.lbNodeId);
      if (held !== undefined && held !== b.primary) return held;
    }
    const r = s.ctx.router.readNode(b.lbNodeId, this.facts);
    if (r.node === null) return s.needPrimary();
    let l = b.get(r.node);
    if (l !== undefined && l !== b.primary && r.node !== b.lbNodeId && !s.ctx.router.statementLevel) {
      // The session's reads left this node and now come back: its connection missed what the
      // session ran on its load-balance node meanwhile (SET, BEGIN…). It is not reused: the
      // reads connect there anew, settings replayed (inside a transaction: the primary).
      if (l.pending > 0) {
        b.flush(l);
        return s.wait('replies');
      }
      s.retireLink(l);
      l = undefined;
    }
    if (l) {
      if (r.sessionLbNode !== null && b.get(r.sessionLbNode)) b.lbNodeId = r.sessionLbNode;
      return l === b.primary ? l : this.ryw.readOn(l);
    }
    // pool_mode = transaction, holding only a read node's connection, and reads moved: take
    // links anew (the primary's first) rather than a second read node's while holding one.
    if (b.withoutPrimary) return s.needPrimary();
    // The read belongs on a node this session has no connection to (its load-balance node
    // went down and another was drawn, or prefer_lower_delay_standby moved it).
    return this.connectTo(r.node, r.sessionLbNode);
  }

  /**
   * Connect to `nodeId` mid-session, replaying the session's settings there; SUSPEND until
   * connected or given up (the statement is presented again). The primary instead inside
   * a transaction (the new node would not share it), when the settings are too many to
   * replay, or when connecting there just failed.
   */
  private connectTo(nodeId: number, sessionLb: number | null): BackendLink | typeof SUSPEND {
    const s = this.s;
    const b = s.backends;
    if (s.routing.inTransaction || s.settings.overflow || !b.mayConnect(nodeId)) return s.needPrimary();
    const verdict: typeof SUSPEND = s.wait('connect');
    void b.openLater(nodeId, sessionLb, s.settings.statements, () => s.closed).then(() => s.resume('connect'));
    return verdict;
  }

  /**
   * The link to `nodeId` for a statement that must run there (a pid function given one of
   * its backends' pids): connected on demand (connectTo); the primary if the node is down,
   * or the session is in a transaction that node does not share (only the load-balance
   * node runs the session's transactions).
   */
  private linkTo(nodeId: number): BackendLink | typeof SUSPEND {
    const s = this.s;
    const b = s.backends;
    const node = s.ctx.nodes.get(nodeId);
    if (node === undefined || !isLive(node.status)) return s.needPrimary();
    const l = b.get(nodeId);
    if (l) return !s.routing.inTransaction || nodeId === b.lbNodeId ? l : s.needPrimary();
    return this.connectTo(nodeId, null);
  }

  /**
   * A statement goes to `link`: count it (SHOW pool_nodes select_cnt, metrics) and
   * report it per node when asked (log_per_node_statement; notice_per_node_statement,
   * only when nothing else is on its way to the client, so it cannot split a reply).
   */
  counted(link: BackendLink, sql: string, cls: Classification): void {
    const s = this.s;
    s.ctx.services.countStatement(link.nodeId, cls);
    const cfg = s.ctx.config();
    if (cfg.log_per_node_statement)
      s.log.info({ node: link.nodeId, backendPid: link.conn.pid, statement: redact(sql) }, 'statement');
    if (cfg.notice_per_node_statement && !s.backends.owesClient()) {
      s.writeClient(
        noticeResponse({
          severity: 'NOTICE',
          code: '00000',
          message: `DB node id: ${link.nodeId} statement: ${redact(sql)}`,
        }),
      );
    }
  }

  /** Requests to `link` may be re-sent elsewhere if it dies first: reads on a standby outside a transaction. */
  resendable(link: BackendLink): boolean {
    return link !== this.s.backends.primary && !this.s.routing.inTransaction;
  }

  /** Routing state after a statement (policy.ts), with dml_adaptive's related objects. */
  outcome(cls: Classification, d: Decision, ok: boolean, status: number): void {
    const s = this.s;
    afterStatement(
      s.routing,
      cls,
      d,
      { ok, txStatus: statusChar(status) },
      s.ctx.config().disable_load_balance_on_write,
    );
    if (ok && cls.writtenTables.length > 0)
      s.ctx.router.addRelatedObjects(s.routing, cls.writtenTables, status !== TxStatus.Idle);
    if (ok && s.backends.pooled) s.backends.noteStatement(cls);
    // New backends of that database or role start with other defaults: cached ones must not be reused.
    if (ok && cls.changesDefaults !== undefined) s.ctx.cache.defaultsChangedFor(cls.changesDefaults);
  }

  /**
   * A statement for both nodes succeeded on the primary and failed on `link`'s standby
   * outside a transaction (SET ROLE of a role that standby has not replayed): that
   * connection lacks what the session set. The session's reads go to the primary until
   * DISCARD ALL (or RESET SESSION AUTHORIZATION), as after a SET ROLE on the primary alone;
   * pool_mode = transaction: the connection is also reset before anyone's next use of it.
   */
  settingsDiverged(
    link: BackendLink,
    error: { C?: string; M?: string },
    what = 'statement for both nodes failed on a standby only',
  ): void {
    const s = this.s;
    s.log.warn(
      { node: link.nodeId, code: error.C, err: error.M },
      `${what}: the session's reads go to the primary until DISCARD ALL`,
    );
    // Which setting failed is not known here: as if it were the role, which RESET ALL keeps.
    s.routing.settingsOnPrimary = true;
    s.routing.roleOnPrimary = true;
    if (s.backends.pooled) s.backends.settingsUnknownOn(link);
  }

  /** Record the transaction status seen at the end of a statement or pipeline. */
  txStatusIs(status: number): void {
    const s = this.s;
    s.routing.inTransaction = status !== TxStatus.Idle;
    s.routing.failed = status === TxStatus.Failed;
    if (status === TxStatus.Idle) s.backends.transactionEnded();
    this.ryw.idle(status);
  }
}

function statusChar(s: number): 'I' | 'T' | 'E' {
  return s === TxStatus.InTransaction ? 'T' : s === TxStatus.Failed ? 'E' : 'I';
}
