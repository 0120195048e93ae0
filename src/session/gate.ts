/**
 * num_init_children as a counting gate: at most `limit` concurrent sessions; the
 * rest wait in FIFO order for a bounded time (pgpool leaves them in the kernel's
 * listen queue with no bound and no answer).
 */
interface Waiter {
  resolve(ok: boolean): void;
  timer: NodeJS.Timeout | undefined;
  gone: () => boolean;
}

export class ClientGate {
  active = 0;
  private readonly waiters: Waiter[] = [];

  constructor(private limit: number) {}

  setLimit(n: number): void {
    this.limit = n;
    this.wake();
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Resolves true with a slot taken, false on timeout (`timeoutMs` 0 = wait forever) or shutdown. */
  acquire(timeoutMs: number, gone: () => boolean = () => false): Promise<boolean> {
    if (this.active < this.limit && this.waiters.length === 0) {
      this.active++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const w: Waiter = { resolve, timer: undefined, gone };
      if (timeoutMs > 0) {
        w.timer = setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve(false);
        }, timeoutMs);
      }
      this.waiters.push(w);
    });
  }

  release(): void {
    this.active--;
    this.wake();
  }

  rejectAll(): void {
    for (const w of this.waiters.splice(0)) {
      if (w.timer) clearTimeout(w.timer);
      w.resolve(false);
    }
  }

  private wake(): void {
    while (this.active < this.limit && this.waiters.length > 0) {
      const w = this.waiters.shift() as Waiter;
      if (w.timer) clearTimeout(w.timer);
      if (w.gone()) {
        w.resolve(false);
        continue;
      }
      this.active++;
      w.resolve(true);
    }
  }
}
