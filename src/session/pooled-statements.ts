/**
 * Protocol-level prepared statements with pool_mode = transaction: a client's named
 * statement must exist on whichever backend connection serves its next Bind.
 *
 * pgrelay gives every distinct (query text, parameter types) one name of its own
 * (`PGRELAY_<n>`, `StatementNames`), prepares it on a connection lazily, before the first
 * Bind or Describe that needs it there, and keeps per connection the statements prepared
 * on it, least recently used first, at most max_prepared_statements (`ServerStatements`;
 * the one used the longest ago is closed to make room). The client's names map to
 * pgrelay's in extended.ts; Parse, Bind, Describe and Close are rewritten here.
 */
import { FE } from '../protocol/constants.js';

/** Prefix of pgrelay's statement names on pooled connections. */
export const STATEMENT_PREFIX = 'PGRELAY_';

/** pgrelay's name for one distinct statement, and whether a server accepted it. */
export interface StatementName {
  readonly name: string;
  /** A server prepared it without error at least once (a later Parse is answered without a connection). */
  accepted: boolean;
  /** What names it (see `StatementNames.entryFor`). */
  readonly key: string;
}

/** How many distinct statements StatementNames remembers, and how much of their text (bytes). */
const MAX_NAMES = 100_000;
const MAX_NAME_BYTES = 64 * 1024 * 1024;

/**
 * One name per distinct statement (text and parameter types), for every connection and
 * every client. Bounded: past `maxEntries` statements or `maxBytes` of their text, the
 * least recently used is forgotten (the process lives for months and clients may send
 * any number of distinct texts). A statement forgotten and seen again gets a new name:
 * names are never reused, so a connection that still has the old one prepared never runs
 * another statement under it (it is closed there by the connection's LRU in time).
 */
export class StatementNames {
  private readonly names = new Map<string, StatementName>();
  private next = 1;
  private textBytes = 0;

  constructor(
    private readonly maxEntries = MAX_NAMES,
    private readonly maxBytes = MAX_NAME_BYTES,
  ) {}

  /** The entry for the statement whose Parse body after the name is `rest` (query, types); marks it used now. */
  entryFor(rest: string): StatementName {
    const names = this.names;
    let e = names.get(rest);
    if (e !== undefined) return this.used(rest, e);
    e = { name: `${STATEMENT_PREFIX}${this.next++}`, accepted: false, key: rest };
    names.set(rest, e);
    this.textBytes += rest.length;
    while (names.size > 1 && (names.size > this.maxEntries || this.textBytes > this.maxBytes)) {
      const oldest = names.keys().next().value as string;
      names.delete(oldest);
      this.textBytes -= oldest.length;
    }
    return e;
  }

  /** pgrelay's name for `rest` if a server accepted that statement before (marked used now), else undefined. */
  known(rest: string): string | undefined {
    const e = this.names.get(rest);
    return e?.accepted === true ? this.used(rest, e).name : undefined;
  }

  /**
   * `e`'s statement is prepared again under a new name from now on (its name is not
   * reused): the servers refuse it under its name (its result type changed), and the
   * connections that have it keep it until their LRU closes it.
   */
  retire(e: StatementName): void {
    if (this.names.get(e.key) !== e) return;
    this.names.delete(e.key);
    this.textBytes -= e.key.length;
  }

  /** `e` (the entry of `rest`) becomes the most recently used. */
  private used(rest: string, e: StatementName): StatementName {
    this.names.delete(rest);
    this.names.set(rest, e);
    return e;
  }

  get size(): number {
    return this.names.size;
  }

  /** Length of the statement texts remembered. */
  get bytes(): number {
    return this.textBytes;
  }
}

/** The statements prepared on one backend connection, the least recently used first. */
export class ServerStatements {
  /** Name → when it was recorded (`mark`). */
  private readonly lru = new Map<string, number>();
  private seq = 0;

  constructor(private max: number) {}

  /** Increases with every statement recorded: what `dropUpTo` takes. */
  get mark(): number {
    return this.seq;
  }

  setMax(max: number): void {
    this.max = max;
  }

  /** Prepared here? (Marks it as used now.) */
  has(name: string): boolean {
    const at = this.lru.get(name);
    if (at === undefined) return false;
    this.lru.delete(name);
    this.lru.set(name, at);
    return true;
  }

  /** Record `name` as prepared; returns the names to close to stay within the limit, oldest first. */
  add(name: string): string[] {
    this.lru.delete(name);
    this.lru.set(name, ++this.seq);
    const evicted: string[] = [];
    for (const n of this.lru.keys()) {
      if (this.lru.size - evicted.length <= this.max || n === name) break;
      evicted.push(n);
    }
    for (const n of evicted) this.lru.delete(n);
    return evicted;
  }

  delete(name: string): void {
    this.lru.delete(name);
  }

  clear(): void {
    this.lru.clear();
  }

  /**
   * A DEALLOCATE ALL ran here after the statements recorded up to `mark` (its time of
   * sending): those are gone, not those parsed after it.
   */
  dropUpTo(mark: number): void {
    for (const [n, at] of this.lru) if (at <= mark) this.lru.delete(n);
  }

  get size(): number {
    return this.lru.size;
  }
}

/** Offset just past the NUL ending the C string that starts at `pos`, or -1. */
function cstringEnd(buf: Buffer, pos: number, end: number): number {
  const z = buf.indexOf(0, pos);
  return z < 0 || z >= end ? -1 : z + 1;
}

/** The body of the Parse message `raw` after the statement name (query, parameter types): what names it. */
export function parseBody(raw: Buffer): Buffer | undefined {
  const after = cstringEnd(raw, 5, raw.length);
  return after < 0 ? undefined : raw.subarray(after);
}

/** A Parse message of statement `name` with `body` (from parseBody). */
export function parseMessage(name: string, body: Buffer): Buffer {
  return withName(FE.Parse, Buffer.alloc(0), name, body);
}

/** The Bind message `raw` (portal, statement, …) naming statement `name`. */
export function renamedBind(raw: Buffer, name: string): Buffer | undefined {
  const portalEnd = cstringEnd(raw, 5, raw.length);
  if (portalEnd < 0) return undefined;
  const stmtEnd = cstringEnd(raw, portalEnd, raw.length);
  if (stmtEnd < 0) return undefined;
  return withName(FE.Bind, raw.subarray(5, portalEnd), name, raw.subarray(stmtEnd));
}

/** Describe or Close of statement `name`. */
export function statementMessage(type: number, name: string): Buffer {
  return withName(type, Buffer.from([0x53]), name, Buffer.alloc(0));
}

/** Describe or Close of portal `name`. */
export function portalMessage(type: number, name: string): Buffer {
  return withName(type, Buffer.from([0x50]), name, Buffer.alloc(0));
}

function withName(type: number, before: Buffer, name: string, after: Buffer): Buffer {
  const n = Buffer.byteLength(name);
  const len = 4 + before.length + n + 1 + after.length;
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = type;
  out.writeInt32BE(len, 1);
  let o = 5;
  o += before.copy(out, o);
  o += out.write(name, o);
  out[o++] = 0;
  after.copy(out, o);
  return out;
}

/** ParseComplete, CloseComplete: replies pgrelay gives itself for a statement the connection already has or keeps. */
export const PARSE_COMPLETE = Buffer.from([0x31, 0, 0, 0, 4]);
export const CLOSE_COMPLETE = Buffer.from([0x33, 0, 0, 0, 4]);
