/**
 * The live client sessions by the pid pgrelay gave them in BackendKeyData, with
 * their cancel secrets (a CancelRequest names a session by both).
 */
import { randomInt } from 'node:crypto';

export class SessionRegistry<S> {
  private readonly byPid = new Map<number, { session: S; secret: number }>();
  private nextPid = randomInt(1, 1 << 22);

  /** A fresh pid and cancel secret for `session`. */
  register(session: S): { pid: number; secret: number } {
    let pid = this.nextPid++;
    if (this.nextPid >= 0x7fffffff) this.nextPid = 1;
    while (this.byPid.has(pid)) pid = this.nextPid++;
    const secret = randomInt(0, 0x7fffffff);
    this.byPid.set(pid, { session, secret });
    return { pid, secret };
  }

  unregister(pid: number): void {
    this.byPid.delete(pid);
  }

  /** The session a CancelRequest names, if the secret matches. */
  find(pid: number, secret: number): S | undefined {
    const e = this.byPid.get(pid);
    return e && e.secret === secret ? e.session : undefined;
  }

  *all(): IterableIterator<S> {
    for (const e of this.byPid.values()) yield e.session;
  }

  get size(): number {
    return this.byPid.size;
  }
}
