/**
 * The part of a session its pieces (extended.ts, both-nodes.ts, routing.ts,
 * admin-replies.ts, standby-loss.ts) work with: its context, its backends, its
 * routing state, and the client flow control.
 */
import type { Logger } from '../log.js';
import type { PgError } from '../protocol/messages.js';
import type { CONSUME_AND_SUSPEND, Drop, SUSPEND } from '../protocol/framing.js';
import type { Classification, Decision, SessionRoutingState } from '../router/router.js';
import type { BackendLink } from './backend-link.js';
import type { Backends } from './backends.js';
import type { SessionContext, WaitReason } from './context.js';
import type { SettingsReplay } from './settings.js';

export interface SessionCore {
  readonly ctx: SessionContext;
  readonly backends: Backends;
  /** Routing state (transaction, writes, isolation) for the policy. */
  readonly routing: SessionRoutingState;
  /** Session-level settings, replayed on nodes connected later. */
  readonly settings: SettingsReplay;
  /** A ParameterStatus for the client: the value it tells, or undefined (dropped); see Session.tellClient. */
  readonly tellClient: (name: string, value: string) => string | undefined;
  readonly log: Logger;
  /** Debug-level log, without building the session's logger when debug is off. */
  debug(fields: Record<string, unknown>, msg: string): void;
  readonly closed: boolean;
  /** The message being handled waits for `reason` and is presented again afterwards. */
  wait(reason: WaitReason): typeof SUSPEND;
  /** The message being handled is consumed; the next ones wait for `reason`. */
  waitAfter(reason: WaitReason): typeof CONSUME_AND_SUSPEND;
  /** The event the client waited for happened. */
  resume(reason: WaitReason): void;
  /** Reply bytes of pgrelay's own for the client. */
  writeClient(bytes: Buffer): boolean;
  /** pool_mode = transaction: keep the backends for the rest of the session if `sql` leaves session state there. */
  pinFor(sql: string, cls: Classification): void;
  /** pool_mode = transaction: keep the session's connections until it ends, for `reason` (logged, counted). */
  pin(reason: string): void;
  /** An error was reported in the extended protocol: the client's messages are dropped up to its Sync, as PostgreSQL does. */
  skipUntilSync(): void;
  /**
   * The primary's link for a message that needs it; SUSPEND while it is taken (pool_mode =
   * transaction, a unit of work that held only its read node's connection: session.ts).
   */
  needPrimary(): BackendLink | typeof SUSPEND;
  /**
   * The link for a message that needs no node in particular (Sync, Flush, Close, a Bind or
   * Execute routed on its own): the primary's, or, pool_mode = transaction, holding only the
   * load-balance node's for a batch that only reads there, that one.
   */
  unitLink(): BackendLink | typeof SUSPEND;
  /**
   * pool_mode = transaction: the only link held (a read node's) was lost: take the primary's
   * and a read node's, then `resend` on the primary what the lost one owed.
   */
  retakeAfterLoss(resend: (primary: BackendLink) => void): void;
  /**
   * pool_mode = transaction, an unnamed statement of the extended protocol: the read node's
   * link when it runs there alone in a read-only transaction held on that node alone (its
   * BEGIN READ ONLY, which begins one — pgjdbc's way —, COMMIT, ROLLBACK, anything once it
   * failed); undefined otherwise (as usual: the primary joins it if needed).
   */
  readOnlyAlone(sql: string, cls: Classification, d: Decision): BackendLink | undefined;
  /** Stop using `link` (a read node's the session is no longer in step with): closed, its statements forgotten there. */
  retireLink(link: BackendLink): void;
  /** The client broke the protocol: FATAL 08P01 and the session ends. */
  protocolViolation(message: string): Drop;
  /** The session cannot go on: `err` (FATAL) for the client, and the session ends. */
  fail(err: PgError): Drop;
  /** pool_mode = transaction: before a statement for the primary inside a transaction block (session.ts). */
  guardSequenceState(cls: Classification): void;
}
