/**
 * Read-your-writes for one session (read_your_writes = session | global): the
 * position of each write it committed, read on its own primary connection right
 * behind the write, and the check that lets a load-balanced read run on a standby
 * only once that standby has replayed it (router/consistency.ts decides).
 *
 * Positions: a write sent to the primary makes the session "dirty". When the
 * request that commits it is sent (an autocommit statement, COMMIT, or the Sync of
 * a pipeline that wrote), `SELECT pg_current_wal_insert_lsn()` is pipelined right
 * behind it, its reply kept from the client: no round trip the client waits for.
 * Where that cannot be known in advance (a multi-statement query, COPY, a statement
 * run on two nodes), the position is read once the primary reports the transaction
 * ended, before the client's next request reaches the primary. A read that arrives
 * while a position is being read waits for it.
 *
 * Reads: a read the router sends to a standby runs there if the standby's last known
 * replay position (sr check, or an earlier check) is far enough; otherwise the
 * standby is asked once per request, on the session's own connection to it, with a
 * statement that waits there up to read_your_writes_wait ms; if it is still behind,
 * the read runs on the primary.
 */
import { SQLSTATE, TxStatus } from '../protocol/constants.js';
import { SUSPEND } from '../protocol/framing.js';
import { parseLsn } from '../protocol/lsn.js';
import type { Classification } from '../router/router.js';
import { CAPTURE_SQL, type ReadVerdict, checkRead, replayWaitSql, writePosition } from '../router/consistency.js';
import type { BackendLink } from './backend-link.js';
import type { SessionCore } from './core.js';
import { type OwnQueryResult, ownQuery } from './own-query.js';

/** How a pipeline (or a simple Query) leaves the transaction, as far as its statements tell. */
type TxEffect = 'none' | 'begins' | 'commits' | 'rollsBack';

function txEffect(cls: Classification): TxEffect {
  if (cls.statementCount > 1) return 'none';
  switch (cls.tx) {
    case 'begin':
      return 'begins';
    case 'commit':
    case 'prepare_transaction':
      return cls.chain === true ? 'none' : 'commits';
    case 'rollback':
      return cls.chain === true ? 'none' : 'rollsBack';
    default:
      return 'none';
  }
}

/** A write position being read on the primary; `ticket` once the write was acknowledged (0 before). */
interface Capture {
  ticket: number;
}

export class ReadYourWrites {
  /**
   * Writes went to the primary since the last position was asked for: outside a
   * transaction (they commit on their own), or inside one (they commit with it, and a
   * ROLLBACK forgets them).
   */
  private wroteAlone = false;
  private wroteInTx = false;
  /** A transaction with writes ended and their position could not be asked for. */
  private uncaptured = false;
  /** The newest position of the session's writes, in `epoch`. */
  private position = 0n;
  private epoch = -1;
  /** Positions being read on the primary, oldest first. */
  private inFlight: Capture[] = [];
  /** A position read is scheduled behind what the client scanner is emitting. */
  private scheduled: Capture | undefined;
  /** The transaction effect of the last request sent (for `idle`). */
  private lastEffect: TxEffect = 'none';
  /** The current extended-protocol pipeline: its transaction effect and whether it runs COPY. */
  private pipeTx: TxEffect = 'none';
  private pipeCopy = false;
  /** Per client request (a Query, or a pipeline up to its Sync): */
  private request = 0;
  private askedIn = -1;
  private ticketIn = -1;
  private ticket = 0;
  private waitingIn = -1;
  private waitStart = 0;

  constructor(private readonly s: SessionCore) {}

  /** Read-your-writes applies: a mode other than off, and reads that can go to standbys. */
  get active(): boolean {
    const ctx = this.s.ctx;
    return ctx.config().read_your_writes !== 'off' && ctx.router.loadBalancing && ctx.nodes.size > 1;
  }

  // ---------------------------------------------------------------- writes

  /** A statement that may write was sent to the primary. */
  wrote(): void {
    if (this.s.routing.inTransaction) this.wroteInTx = true;
    else this.wroteAlone = true;
  }

  private get dirty(): boolean {
    return this.wroteAlone || this.wroteInTx;
  }

  /**
   * No write of the session waits for its position to be read, on the primary's connection
   * (pool_mode = transaction: a read may then take only its read node's connection).
   */
  get writesSettled(): boolean {
    return !this.dirty && !this.uncaptured && this.inFlight.length === 0 && this.scheduled === undefined;
  }

  private clean(): void {
    this.wroteAlone = false;
    this.wroteInTx = false;
  }

  /** A request that ends its transaction with `fx` was sent: writes rolled back need no position. */
  private ending(fx: TxEffect): void {
    this.lastEffect = fx;
    if (fx === 'rollsBack') this.wroteInTx = false;
  }

  /** An Execute of `cls` was sent (extended protocol): what the pipeline does to the transaction. */
  executed(cls: Classification | undefined): void {
    if (cls === undefined) return;
    const fx = txEffect(cls);
    if (fx !== 'none') this.pipeTx = fx;
    if (cls.kind === 'copy') this.pipeCopy = true;
  }

  /**
   * A simple Query goes to `link`: when it is a write that commits on its own (or
   * COMMIT), read the position right behind it.
   */
  queryEnds(cls: Classification, link: BackendLink | undefined): void {
    this.request++;
    const fx = txEffect(cls);
    this.ending(fx);
    if (!this.dirty || !this.active) return;
    const p = this.s.backends.primary;
    if (p === undefined || link !== p || cls.kind === 'copy' || cls.statementCount > 1 || p.inPipeline || p.copyIn)
      return;
    if (this.endsIdle(fx)) this.schedule();
  }

  /** The Sync of a pipeline to `members`: when it commits writes, read the position right behind it. */
  syncEnds(members: readonly BackendLink[]): void {
    this.request++;
    const fx = this.pipeTx;
    const copy = this.pipeCopy;
    this.pipeTx = 'none';
    this.pipeCopy = false;
    this.ending(fx);
    if (!this.dirty || !this.active) return;
    const p = this.s.backends.primary;
    if (p === undefined || copy || p.copyIn || !members.includes(p) || !this.endsIdle(fx)) return;
    this.schedule();
  }

  /** Will the session be outside a transaction after a request with effect `fx`? */
  private endsIdle(fx: TxEffect): boolean {
    return fx === 'commits' || fx === 'rollsBack' || (fx === 'none' && !this.s.routing.inTransaction);
  }

  /**
   * The primary reported the transaction status at the end of a request, and the
   * client has just been sent it. Outside a transaction: the writes are acknowledged,
   * so the positions being read behind them get their tickets (global mode waits for
   * those); a write whose position was not asked for is asked now, if the primary has
   * nothing else outstanding (otherwise at the next chance, reads going to the primary
   * meanwhile).
   */
  idle(status: number): void {
    if (status !== TxStatus.Idle || this.s.closed) return;
    const horizon = this.s.ctx.horizon;
    for (const c of this.inFlight) if (c.ticket === 0) c.ticket = horizon.begin();
    if (this.lastEffect === 'rollsBack') this.wroteInTx = false;
    if (!this.dirty || this.scheduled) return;
    const p = this.s.backends.primary;
    if (!this.active) {
      this.clean();
      return;
    }
    // No primary link (pool_mode = transaction, a read-only unit of work): asked when one is held.
    if (p === undefined || p.pending > 0 || p.inPipeline || p.copyIn) {
      this.setUncaptured(true);
      return;
    }
    this.clean();
    this.issue({ ticket: horizon.begin() });
  }

  /** Read the position behind everything the client scanner emits in this turn. */
  private schedule(): void {
    this.clean();
    if (this.scheduled) return;
    const c: Capture = { ticket: 0 };
    this.scheduled = c;
    this.inFlight.push(c);
    queueMicrotask(() => {
      this.scheduled = undefined;
      this.issue(c);
    });
  }

  private issue(c: Capture): void {
    const s = this.s;
    if (!this.inFlight.includes(c)) this.inFlight.push(c);
    const epoch = s.ctx.horizon.epoch;
    const p = s.closed ? undefined : s.backends.primary;
    if (!p?.live) {
      this.settled(c, undefined, epoch);
      return;
    }
    if (p.inPipeline || p.copyIn) {
      // The client's next pipeline began there before this ran (its scanner waited in the
      // middle of it): a Query now would run inside it, or be skipped after an error there.
      // Asked when the primary's connection is free again (idle); reads go to the primary meanwhile.
      this.settled(c, undefined, epoch);
      this.wroteAlone = true;
      this.setUncaptured(true);
      return;
    }
    this.setUncaptured(false);
    s.ctx.services.metrics.positionRead('write');
    ownQuery(s.backends, p, CAPTURE_SQL, (e) => this.captured(e, c, epoch));
  }

  private captured(e: OwnQueryResult, c: Capture, epoch: number): void {
    if (this.s.closed) {
      // The session ended; its connection was only finishing this. Other sessions may need it.
      const insert = e.error || e.status !== TxStatus.Idle ? undefined : parseLsn(e.rows[0]?.[0]);
      this.settled(c, insert === undefined ? undefined : writePosition(insert), epoch);
      return;
    }
    const insert = e.error || e.status !== TxStatus.Idle ? undefined : parseLsn(e.rows[0]?.[0]);
    const lsn = insert === undefined ? undefined : writePosition(insert);
    if (lsn === undefined) {
      // Ran inside a transaction (the write is not committed yet) or failed: ask again when it ends.
      if (e.status === TxStatus.Idle) {
        this.wroteAlone = true;
        this.setUncaptured(true);
      } else this.wroteInTx = true;
      if (e.error)
        this.s.log.warn({ code: e.error.C, err: e.error.M }, 'read-your-writes: reading the write position failed');
    } else if (epoch !== this.epoch || lsn > this.position) {
      this.position = lsn;
      this.epoch = epoch;
    }
    this.settled(c, lsn, epoch);
  }

  private settled(c: Capture, lsn: bigint | undefined, epoch: number): void {
    const i = this.inFlight.indexOf(c);
    if (i >= 0) this.inFlight.splice(i, 1);
    if (c.ticket !== 0) this.s.ctx.horizon.end(c.ticket, lsn, epoch);
    this.s.resume('lsn');
  }

  private setUncaptured(v: boolean): void {
    if (v === this.uncaptured) return;
    this.uncaptured = v;
    this.s.ctx.horizon.uncaptured += v ? 1 : -1;
  }

  // ---------------------------------------------------------------- reads

  /**
   * A read the router sends to the standby behind `link`: `link` itself, the primary's
   * link, or SUSPEND while positions are read (the read is presented again after).
   */
  readOn(link: BackendLink): BackendLink | typeof SUSPEND {
    const s = this.s;
    const verdict = this.verdictFor(link);
    if (verdict === undefined) return link;
    switch (verdict.act) {
      case 'standby':
        if (verdict.checked || this.waitingIn === this.request) this.decided('standby');
        return link;
      case 'primary': {
        // Holding only this read node's connection, the primary's is taken first (the read presented again).
        const p = s.needPrimary();
        if (p === SUSPEND) return p;
        this.decided('primary');
        s.debug({ node: link.nodeId, reason: verdict.reason }, 'read-your-writes: read moved to the primary');
        return p;
      }
      case 'wait':
      case 'ask':
        return this.suspendFor(link, verdict);
    }
  }

  /**
   * A SET for `link`'s standby too, outside a transaction (SET ROLE of a role the session
   * just created, which a standby that has not replayed it refuses): true once that standby
   * has replayed the session's writes, as a read would wait for them; SUSPEND meanwhile;
   * true as well when the read would go to the primary instead (still behind after
   * read_your_writes_wait: the SET goes there anyway). Not inside a transaction: the
   * question would be its first query there (SET TRANSACTION ISOLATION LEVEL must come
   * before any: pg_dump's workers failed); policy.ts sends such SETs to the primary alone.
   */
  settingOn(link: BackendLink): true | typeof SUSPEND {
    if (this.s.routing.inTransaction) return true;
    // pgrelay's own requests may be outstanding there (a connection just taken gets the
    // session's settings): the question goes behind them.
    const verdict = this.verdictFor(link, true);
    if (verdict === undefined || verdict.act === 'standby' || verdict.act === 'primary') return true;
    return this.suspendFor(link, verdict);
  }

  /** What checkRead says of a read on `link` now; undefined when read-your-writes does not apply. */
  private verdictFor(link: BackendLink, behindOwn = false): ReadVerdict | undefined {
    const s = this.s;
    const ctx = s.ctx;
    const mode = ctx.config().read_your_writes;
    const horizon = ctx.horizon;
    const global = mode === 'global';
    // A session that never wrote reads as without read-your-writes (session mode).
    if (!global && this.position === 0n && this.inFlight.length === 0 && !this.uncaptured) return undefined;
    if (!this.active) return undefined;
    if (global && this.ticketIn !== this.request) {
      // Positions of writes acknowledged before this request arrived are waited for, not later ones.
      this.ticketIn = this.request;
      this.ticket = horizon.issued;
    }
    const inTx = s.routing.inTransaction;
    return checkRead({
      mode,
      inTransaction: inTx,
      ownCapturing: this.inFlight.length > 0,
      ownUncaptured: this.uncaptured,
      ownPosition: this.epoch === horizon.epoch ? this.position : 0n,
      othersCapturing: global && horizon.pendingUpTo(this.ticket),
      othersUncaptured: horizon.lost || horizon.uncaptured > (this.uncaptured ? 1 : 0),
      newestPosition: horizon.position,
      replayPosition: ctx.nodes.get(link.nodeId)?.replayPosition ?? 0n,
      asked: this.askedIn === this.request,
      canAsk: !inTx && (link.pending === 0 || (behindOwn && link.visible === 0)) && !link.inPipeline && !link.copyIn,
    });
  }

  /** Wait for positions being read ('wait'), or ask `link`'s standby for its replay position ('ask'). */
  private suspendFor(link: BackendLink, verdict: { act: 'wait' } | { act: 'ask'; need: bigint }): typeof SUSPEND {
    const s = this.s;
    const horizon = s.ctx.horizon;
    this.waiting();
    const v: typeof SUSPEND = s.wait('lsn');
    if (verdict.act === 'ask') this.ask(link, verdict.need, s.ctx.config().read_your_writes_wait);
    // Own positions resume the read when read (settled); others' through the horizon, only
    // when some are outstanding: a resume now, before the read is suspended, would be lost
    // (the read would then wait for nothing).
    else if (s.ctx.config().read_your_writes === 'global' && horizon.pendingUpTo(this.ticket))
      horizon.whenSettled(this.ticket, () => s.resume('lsn'));
    return v;
  }

  /** Ask the standby for its replay position, waiting there up to `waitMs` for `need`. */
  private ask(link: BackendLink, need: bigint, waitMs: number): void {
    this.askedIn = this.request;
    this.readReplay(link, need, waitMs, true);
  }

  /**
   * The session's settings are about to be replayed on `link`'s standby (pool_mode =
   * transaction, or a read node connected mid-session) and set its role: SET ROLE of a role
   * the session created must find it there. When that standby is not known to have
   * replayed the session's writes, a wait for them there (up to read_your_writes_wait) is
   * queued in front of the replay.
   */
  beforeSettingsOn(link: BackendLink): void {
    const s = this.s;
    const cfg = s.ctx.config();
    if (cfg.read_your_writes === 'off' || !this.active || link.nodeId === s.ctx.nodes.primaryId) return;
    const horizon = s.ctx.horizon;
    const own = this.epoch === horizon.epoch ? this.position : 0n;
    const need = cfg.read_your_writes === 'global' && horizon.position > own ? horizon.position : own;
    if (need === 0n || (s.ctx.nodes.get(link.nodeId)?.replayPosition ?? 0n) >= need) return;
    this.readReplay(link, need, cfg.read_your_writes_wait, false);
  }

  /** Read `link`'s replay position, waiting there up to `waitMs` for `need`; the session resumed after (`resume`). */
  private readReplay(link: BackendLink, need: bigint, waitMs: number, resume: boolean): void {
    const s = this.s;
    const nodeId = link.nodeId;
    s.ctx.services.metrics.positionRead('replay');
    // If the standby goes away meanwhile, the read goes elsewhere: nothing is lost.
    ownQuery(
      s.backends,
      link,
      replayWaitSql(need, waitMs),
      (e) => {
        const lsn = e.error ? undefined : parseLsn(e.rows[0]?.[0]);
        if (lsn !== undefined) s.ctx.nodes.noteReplayPosition(nodeId, lsn);
        else if (e.error && e.error.C !== SQLSTATE.queryCanceled)
          s.log.warn(
            { node: nodeId, code: e.error.C, err: e.error.M },
            'read-your-writes: reading the replay position failed',
          );
        if (resume) s.resume('lsn');
      },
      { skippable: true },
    );
  }

  private waiting(): void {
    if (this.waitingIn === this.request) return;
    this.waitingIn = this.request;
    this.waitStart = performance.now();
  }

  private decided(where: 'standby' | 'primary'): void {
    let waited = 0;
    if (this.waitingIn === this.request) {
      waited = (performance.now() - this.waitStart) / 1000;
      this.waitingIn = -1;
    }
    this.s.ctx.services.metrics.readYourWrites(where, waited);
  }

  /** The session ends (its connections may still finish reading positions: see `released`). */
  close(): void {
    this.setUncaptured(false);
  }

  /** No connection of the ended session runs anything any more: positions never read are lost. */
  released(): void {
    for (const c of this.inFlight) if (c.ticket !== 0) this.s.ctx.horizon.end(c.ticket, undefined, -1);
    this.inFlight = [];
  }
}
