/**
 * The live client sessions by the BackendKeyData pgrelay gave them: the pid (that of
 * the session's primary backend, or one of pgrelay's own for a session without
 * backends) and a secret of pgrelay's own. A CancelRequest names a session by both.
 * Pids of different nodes, or of pgrelay's own, may coincide: the key is the pair.
 */
import { randomInt } from 'node:crypto';

export class SessionRegistry<S> {
  private readonly byKey = new Map<string, S>();
  private nextPid = randomInt(1, 1 << 22);

  /** A provisional pid of pgrelay's own (until `repid`) and a fresh cancel secret for `session`. */
  register(session: S): { pid: number; secret: number } {
    const pid = this.nextPid++;
    if (this.nextPid >= 0x7fffffff) this.nextPid = 1;
    let secret = randomInt(0, 0x7fffffff);
    while (this.byKey.has(key(pid, secret))) secret = randomInt(0, 0x7fffffff);
    this.byKey.set(key(pid, secret), session);
    return { pid, secret };
  }

  /** The session now goes by `pid` (its primary backend's). */
  repid(session: S, oldPid: number, pid: number, secret: number): void {
    if (this.byKey.get(key(oldPid, secret)) === session) this.byKey.delete(key(oldPid, secret));
    this.byKey.set(key(pid, secret), session);
  }

  unregister(pid: number, secret: number): void {
    this.byKey.delete(key(pid, secret));
  }

  /** The session a CancelRequest names. */
  find(pid: number, secret: number): S | undefined {
    return this.byKey.get(key(pid, secret));
  }

  all(): IterableIterator<S> {
    return this.byKey.values();
  }

  get size(): number {
    return this.byKey.size;
  }
}

function key(pid: number, secret: number): string {
  return `${pid}:${secret}`;
}
