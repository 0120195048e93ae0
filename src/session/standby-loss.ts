/**
 * Losing a connection to a node other than the primary without the client noticing,
 * where that is possible: reads outside a transaction that got no reply yet (or only
 * their RowDescription) are re-sent to the primary; inside a transaction, a node that
 * ran nothing but the mirrored BEGIN/SET is simply left. Otherwise the session ends with an error
 * (session.ts linkClosed).
 */
import { FLUSH, type BackendLink, type LinkExpectation } from './backend-link.js';
import type { Backends } from './backends.js';
import type { SessionCore } from './core.js';
import { resendable } from './replies.js';

/**
 * A re-send hook for a request whose bytes are `bytes`: the same bytes with the same
 * expectation on the new link, after `before` (which may parse a statement there first).
 */
export function resendSame(
  backends: Backends,
  bytes: Buffer,
  before?: (to: BackendLink) => void,
): (to: BackendLink, e: LinkExpectation) => void {
  return (to, e) => {
    before?.(to);
    backends.request(to, { kind: e.kind, mode: e.mode, done: e.done, dropRowDescription: e.headerOnly }, bytes);
  };
}

/** A request that can move: a mirrored copy, or a read with a re-send hook and no reply yet. */
function movable(e: LinkExpectation): boolean {
  return e.skippable === true || resendable(e);
}

/**
 * `link` (not the primary's) closed: move what it owed to the primary if the client
 * need not notice. Returns false when it cannot, and the session must end.
 * `forgetNode` drops the node from the session's prepared statements.
 */
export function moveReadsOff(s: SessionCore, link: BackendLink, forgetNode: (nodeId: number) => void): boolean {
  const pending = link.replies.pendingRequests();
  const ok = s.routing.inTransaction
    ? !link.usedInTx && pending.every((e) => e.skippable === true)
    : pending.every(movable);
  if (!ok) return false;
  s.log.warn(
    { node: link.nodeId, backendPid: link.conn.pid, resent: pending.length },
    'load-balance node connection lost; moving reads',
  );
  const b = s.backends;
  b.drop(link);
  forgetNode(link.nodeId);
  // lbNodeId stays: once the node is marked down, the next read draws another node.
  const resent: LinkExpectation[] = [];
  for (const e of link.replies.takePending()) {
    if (e.skippable) {
      // Its twin on the primary decides the outcome (or, a replay position asked there, the read is checked again).
      queueMicrotask(() => e.done?.({ kind: e.kind, mode: e.mode, held: [] }, link));
      continue;
    }
    resent.push(e);
  }
  const p = b.primary;
  if (p !== undefined) resendOn(b, p, resent);
  // pool_mode = transaction, a read-only unit of work held only this node's connection: the
  // primary's (and a read node's) are taken now, holding nothing, and the reads re-sent there.
  else if (resent.length > 0) s.retakeAfterLoss((primary) => resendOn(b, primary, resent));
  return true;
}

/**
 * Re-send `resent` on `p`. A re-sent Execute or Describe binds its portal there again first,
 * and a re-sent Bind parses its statement (their Parse/Bind may have completed on the lost
 * node: PostgreSQL flushes such replies with its immediate-shutdown warning); see extended.ts.
 */
function resendOn(b: Backends, p: BackendLink, resent: readonly LinkExpectation[]): void {
  for (const e of resent) e.resend?.(p, e);
  const last = resent[resent.length - 1];
  // A re-sent pipeline that was waiting on a Flush needs one on its new node too.
  if (last && last.kind !== 'sync' && last.kind !== 'query') b.write(p, FLUSH);
}
