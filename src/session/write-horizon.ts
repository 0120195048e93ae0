/**
 * What read-your-writes knows across sessions (read_your_writes = global): the newest
 * write position acknowledged to any client of this pgrelay, the positions still being
 * read on the primary, and the sessions whose last write has no known position.
 *
 * Positions are read in order of "tickets": a session takes one when it asks the
 * primary for the position of a write, before the client is told the write is done.
 * A read in global mode waits until every ticket taken before it arrived is settled,
 * so a write acknowledged on one connection is seen on any other.
 */
export class WriteHorizon {
  /** Newest write position acknowledged to a client (0n: none since the primary last changed). */
  position = 0n;
  /** Bumped when the primary changes: positions read before belong to another WAL history. */
  epoch = 0;
  /** Sessions that committed a write whose position could not be read. */
  uncaptured = 0;
  /**
   * A ticket settled without a position (its connection went away): the horizon is
   * unknown until a ticket taken from this one on settles with a position (0: known).
   */
  private lostFrom = 0;
  private nextTicket = 1;
  /** Tickets whose position is being read, oldest first (a Set keeps insertion order). */
  private readonly outstanding = new Set<number>();
  private waiters: Array<{ upTo: number; fn: () => void }> = [];

  /** The primary changed. */
  newPrimary(): void {
    this.epoch++;
    this.position = 0n;
    this.lostFrom = 0;
  }

  /** The position of an acknowledged write was lost: reads that must see every write go to the primary. */
  get lost(): boolean {
    return this.lostFrom !== 0;
  }

  /** A write's position starts being read: its ticket. */
  begin(): number {
    const t = this.nextTicket++;
    this.outstanding.add(t);
    return t;
  }

  /** Ticket `ticket` is settled: `lsn` is the position read (undefined: none), in epoch `epoch`. */
  end(ticket: number, lsn: bigint | undefined, epoch: number): void {
    if (!this.outstanding.delete(ticket)) return;
    if (lsn === undefined) this.lostFrom = this.nextTicket;
    else if (epoch === this.epoch) {
      if (lsn > this.position) this.position = lsn;
      // Positions only grow: one read after the lost one covers it.
      if (this.lostFrom !== 0 && ticket >= this.lostFrom) this.lostFrom = 0;
    }
    if (this.waiters.length > 0) this.wake();
  }

  /** The newest ticket taken so far. */
  get issued(): number {
    return this.nextTicket - 1;
  }

  /** Are positions of tickets up to `ticket` still being read? */
  pendingUpTo(ticket: number): boolean {
    const oldest = this.oldest();
    return oldest !== undefined && oldest <= ticket;
  }

  /** Call `fn` once no ticket up to `ticket` is outstanding (at once if none is). */
  whenSettled(ticket: number, fn: () => void): void {
    if (!this.pendingUpTo(ticket)) fn();
    else this.waiters.push({ upTo: ticket, fn });
  }

  private oldest(): number | undefined {
    for (const t of this.outstanding) return t;
    return undefined;
  }

  private wake(): void {
    const oldest = this.oldest() ?? Number.POSITIVE_INFINITY;
    const ready = this.waiters.filter((w) => w.upTo < oldest);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.upTo >= oldest);
    for (const w of ready) w.fn();
  }
}
