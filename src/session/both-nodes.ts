/**
 * Statements that must run on two nodes (BEGIN, SET, COMMIT… on the primary and the
 * load-balance node, so that both share the transaction and the session's settings),
 * sent in the simple protocol: one after the other (COMMIT/ROLLBACK on the standby
 * first), their replies held, and one reply for the client.
 *
 * The two nodes never disagree about a transaction: when a statement fails on the
 * load-balance node only, the primary's transaction is aborted too (`poisonPrimary`),
 * so that PostgreSQL itself answers what follows (25P02, COMMIT → ROLLBACK). Outside a
 * transaction the primary's result stands and the session stops relying on that node's
 * settings (StatementRouting.settingsDiverged).
 */
import { TxStatus } from '../protocol/constants.js';
import { errorResponse, readyForQuery } from '../protocol/messages.js';
import { queryMessage } from '../pool/query.js';
import type { Classification, Decision } from '../router/router.js';
import { type BackendLink, type LinkExpectation, SYNC } from './backend-link.js';
import type { SessionCore } from './core.js';
import { refusedParse } from './own-query.js';
import { errorFieldsOf } from './replies.js';
import { filterReports } from './reported-settings.js';
import type { StatementRouting } from './routing.js';

/**
 * What aborts a transaction on a node: a Parse PostgreSQL refuses (a syntax error) under a
 * name of pgrelay's own, then a Sync — not a Query, which would drop the client's unnamed
 * statement there. A failed Parse leaves nothing behind: no statement, and no portal a
 * Describe or Execute of the client's unnamed portal would find. The server's log shows
 * the message.
 */
const POISON_PARSE = refusedParse('a statement failed on one node; the transaction is aborted on every node');
const POISON = Buffer.concat([POISON_PARSE, SYNC]);

export class BothNodes {
  constructor(
    private readonly s: SessionCore,
    private readonly route: StatementRouting,
    /** A statement ran on the primary without error (DEALLOCATE, DISCARD ALL: the session's prepared statements). */
    private readonly statementDone: (cls: Classification) => void,
    /** A statement left the session outside a transaction (its portals are gone). */
    private readonly transactionEnded: () => void,
    /** A statement failed on `link`, leaving transaction status `status` (its failed unnamed portal may stay there). */
    private readonly queryFailed: (status: number, link: BackendLink | undefined, code: string | undefined) => void,
    /**
     * A Query ran without error on the primary `ranOn` and on `alsoOn`: it replaced the client's
     * unnamed portal there (PostgreSQL runs it in that portal).
     */
    private readonly unnamedPortalReplaced: (ranOn: BackendLink, alsoOn: readonly BackendLink[]) => void,
  ) {}

  /**
   * Abort the primary's transaction after a statement failed on the load-balance node
   * inside it (a no-op outside a transaction).
   */
  poisonPrimary(): void {
    // The session may have ended meanwhile (its links are being reset): nothing to abort then.
    const p: BackendLink | undefined = this.s.backends.primary;
    if (p === undefined || p.txStatus !== TxStatus.InTransaction) return;
    // (What the transaction SET LOCAL there is reverted: the client is told.)
    this.poison(p, false, true);
  }

  /**
   * A statement left its transaction failed on `link` (undefined: a pipeline's merged
   * answer, which failed on one node or more): abort it on the other nodes too, so that
   * they never disagree. (Each poison acts only where the transaction is still going.)
   */
  transactionFailedOn(link: BackendLink | undefined): void {
    const primary = this.s.backends.primary;
    if (link !== primary) this.poisonPrimary();
    if (link === undefined || link === primary) this.poisonStandbys();
  }

  /**
   * The primary is outside a transaction after a pipeline, but a copy of BEGIN ran on
   * another node of it after the primary's error (the primary skipped its own): that node's
   * transaction is rolled back, so that its reads do not go on in it.
   */
  rollbackStrays(members: readonly BackendLink[]): void {
    for (const l of members)
      this.rollbackStray(l, 'a transaction the primary skipped was begun on the load-balance node: rolled back');
  }

  /**
   * A multi-statement Query with SAVEPOINT, RELEASE or ROLLBACK TO ran on the primary alone
   * inside the transaction (the rest of it is the primary's: policy.ts): the other nodes'
   * copies of the transaction, whose savepoints are not the primary's now, are rolled back.
   * What the transaction SET there is undone, not as the session's will be: the session's
   * reads go to the primary until DISCARD ALL (StatementRouting.settingsDiverged).
   */
  savepointsOnPrimaryAlone(): void {
    const s = this.s;
    const b = s.backends;
    for (const l of b.list) {
      if (l === undefined || l === b.primary || l.txStatus === TxStatus.Idle) continue;
      if (s.settings.blockChangesSettings)
        this.route.settingsDiverged(
          l,
          {},
          "a savepoint command among several statements ran on the primary alone: the load-balance node's copy of the transaction and its SETs are rolled back",
        );
      this.rollbackStray(
        l,
        "a savepoint command among several statements ran on the primary alone: the load-balance node's copy of the transaction is rolled back",
      );
    }
  }

  /** Roll back `l`'s transaction (not the primary's, nor one idle, nor into a pipeline the client began there since). */
  private rollbackStray(l: BackendLink, why: string): void {
    const b = this.s.backends;
    // (A Query inside the client's pipeline would run inside it.)
    if (l === b.primary || !l.live || l.txStatus === TxStatus.Idle || l.inPipeline) return;
    this.s.log.warn({ node: l.nodeId }, why);
    b.request(l, { kind: 'query', mode: 'drop', skippable: true }, queryMessage('ROLLBACK'));
  }

  /**
   * The copy of a COMMIT or ROLLBACK ended the transaction on `links` (other nodes than
   * the primary) while the primary skipped its own after an error there: the client's
   * transaction goes on, failed, on the primary alone (the rest of it runs there: a
   * standby has no transaction to run it in, a read there would not get 25P02); a
   * transaction the copy chained (COMMIT AND CHAIN) is rolled back. What the transaction
   * SET there was committed or undone there, not as the session's will be: the session's
   * reads go to the primary until DISCARD ALL (StatementRouting.settingsDiverged).
   */
  endedWithoutPrimary(links: readonly BackendLink[]): void {
    const s = this.s;
    if (s.routing.inTransaction) s.routing.txPrimaryAlone = true;
    for (const l of links) {
      if (s.settings.blockChangesSettings)
        this.route.settingsDiverged(
          l,
          {},
          'a COMMIT or ROLLBACK the primary skipped ended the transaction and its SETs on the load-balance node',
        );
      this.rollbackStray(
        l,
        'a COMMIT AND CHAIN the primary skipped chained a transaction on the load-balance node: rolled back',
      );
    }
  }

  /**
   * Abort the transaction of every other node's link held, after a statement failed
   * inside it on the primary only (a write): their COMMIT then rolls back too, as the
   * primary's does, and nothing of the transaction (a SET) lasts there.
   */
  poisonStandbys(): void {
    const b = this.s.backends;
    for (const l of b.list) {
      if (l === undefined || l === b.primary || l.txStatus !== TxStatus.InTransaction) continue;
      this.poison(l, true, false);
    }
  }

  /**
   * Abort `link`'s transaction (POISON); `reportsAsync`: the settings it reverts are reported
   * to the client. Into a pipeline of the client's under way there, the Parse alone: a Sync
   * of pgrelay's would end it (what the server skips after an error there would run).
   */
  private poison(link: BackendLink, skippable: boolean, reportsAsync: boolean): void {
    link.expect({ kind: 'parse', mode: 'drop', skippable });
    if (link.inPipeline) {
      this.s.backends.write(link, POISON_PARSE);
      return;
    }
    link.expect({ kind: 'sync', mode: 'drop', skippable, reportsAsync });
    this.s.backends.write(link, POISON);
  }

  /**
   * Run `sql` on the primary `p` and `seconds` (the load-balance node, or with
   * statement_level_load_balance every standby the session holds); the client is answered
   * (and resumed) when all finished.
   */
  run(sql: string, cls: Classification, d: Decision, p: BackendLink, seconds: readonly BackendLink[]): void {
    const b = this.s.backends;
    const standbyText = d.standbyText ?? sql;
    const onSeconds: Array<[BackendLink, string]> = seconds.map((l) => [l, standbyText]);
    const order: Array<[BackendLink, string]> =
      d.bothOrder === 'standby-first' ? [...onSeconds, [p, sql]] : [[p, sql], ...onSeconds];
    const results = new Map<BackendLink, LinkExpectation>();
    // RESET ALL and the like: the client's start-up settings are set again right behind it on each node.
    const restore = b.restoreFor(cls);
    const step = (i: number): void => {
      const [link, text] = order[i];
      const next = (e: LinkExpectation): void => {
        results.set(link, e);
        if (i + 1 < order.length) step(i + 1);
        else
          this.finish(
            sql,
            cls,
            results.get(p) as LinkExpectation,
            seconds.map((l) => [l, results.get(l) as LinkExpectation]),
            d,
          );
      };
      if (link !== p && b.get(link.nodeId) !== link) {
        // That node was lost meanwhile: the primary's result stands without it.
        next({ kind: 'query', mode: 'hold', held: [] });
        return;
      }
      this.route.counted(link, text, cls);
      const e: LinkExpectation = { kind: 'query', mode: 'hold', held: [], skippable: link !== p, done: next };
      if (restore !== undefined) e.reportAs = restore.reportAs;
      b.request(link, e, queryMessage(text));
      if (restore !== undefined) b.restoreStartup(link, restore);
    };
    step(0);
  }

  private finish(
    sql: string,
    cls: Classification,
    onPrimary: LinkExpectation,
    onSeconds: ReadonlyArray<[BackendLink, LinkExpectation]>,
    d: Decision,
  ): void {
    const s = this.s;
    let out: Buffer;
    let status = onPrimary.status ?? TxStatus.Idle;
    const failed = onPrimary.error ? undefined : onSeconds.find(([, e]) => e.error !== undefined);
    let secondError = failed?.[1].error;
    // Outside a transaction the primary's result stands, as on a direct connection (its SET
    // took effect); that standby's connection lacks it (settingsDiverged, after the routing
    // state: a RESET ALL that failed there must not clear what it sets).
    const diverged = failed !== undefined && secondError !== undefined && status === TxStatus.Idle ? failed : undefined;
    if (diverged !== undefined) secondError = undefined;
    if (failed === undefined || secondError === undefined) {
      // (Its reports: only what the client was not told, as the connection may report another client's value.)
      out = filterReports(Buffer.concat(onPrimary.held ?? []), s.tellClient);
    } else {
      // Only a node other than the primary failed: report its error; inside a transaction, abort it on the primary too.
      s.log.warn(
        { node: failed[0].nodeId, code: secondError.C, err: secondError.M },
        'statement failed on the load-balance node only',
      );
      if (status === TxStatus.InTransaction) {
        this.poisonPrimary();
        status = TxStatus.Failed;
      }
      out = Buffer.concat([errorResponse(errorFieldsOf(secondError)), readyForQuery(status)]);
    }
    // The primary's transaction failed there alone: the other nodes' too.
    if (onPrimary.error !== undefined && status === TxStatus.Failed) this.poisonStandbys();
    const ok = !onPrimary.error && secondError === undefined;
    this.route.outcome(cls, d, ok, status);
    if (diverged?.[1].error !== undefined) this.route.settingsDiverged(diverged[0], diverged[1].error);
    s.settings.record(sql, cls, ok, status);
    this.route.txStatusIs(status);
    if (status === TxStatus.Idle) this.transactionEnded();
    // DEALLOCATE (ALL) / DISCARD ALL drop prepared statements on both nodes (DISCARD PLANS,
    // TEMP and SEQUENCES keep them).
    if (!onPrimary.error) {
      this.statementDone(cls);
      const p = s.backends.primary;
      if (cls.statementCount > 0 && p !== undefined)
        this.unnamedPortalReplaced(
          p,
          onSeconds.map(([l]) => l),
        );
    }
    if (!ok)
      this.queryFailed(
        status,
        onPrimary.error === undefined && failed !== undefined ? failed[0] : s.backends.primary,
        (onPrimary.error ?? secondError ?? failed?.[1].error)?.C,
      );
    s.writeClient(out);
    s.resume('both');
  }
}
