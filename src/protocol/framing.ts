/**
 * Message framing on a byte stream, without copying what is only forwarded.
 *
 * Every protocol-3 message after start-up is `type(1) length(4, includes itself) body`.
 * The scanner walks the chunks a socket delivers, message header by message header,
 * and asks its sink what to do with each message: an *action* (any value of the sink's
 * choosing, compared by identity: the client side uses the backend link to write to,
 * a backend link uses where the reply goes). Consecutive
 * bytes with the same action are handed to `emit(action, bytes)` as one slice of the
 * chunk they arrived in (`subarray`, no copy), so a 64 KiB chunk of DataRows that is
 * all forwarded costs one write.
 *
 * Only message types flagged in `decode` are presented whole to the sink
 * (`onMessage(type, buf, bodyStart, bodyEnd)`); a decoded message split across chunks
 * is assembled (the only copy, and only for the small messages routing needs).
 * Other messages are never looked into: their action is `sink.passAction`.
 *
 * `DROP` means the sink consumed the message itself (nothing emitted).
 * `SUSPEND` from onMessage stops the scan before that message; `resume()` retries it,
 * so a sink can wait for an asynchronous decision (e.g. a catalog lookup) without
 * losing order. While suspended the owner must stop reading the socket.
 */

export const DROP: unique symbol = Symbol('drop');
/** Stop before this message; `resume()` presents it again. */
export const SUSPEND: unique symbol = Symbol('suspend');
/** The sink consumed this message (as DROP); stop after it until `resume()`. */
export const CONSUME_AND_SUSPEND: unique symbol = Symbol('consume-and-suspend');

export type Drop = typeof DROP;

/** Initial buffer for a message assembled across chunks; it doubles as bytes arrive. */
const ASSEMBLY_START = 16 * 1024;
export type Suspension = typeof SUSPEND | typeof CONSUME_AND_SUSPEND;
/** What a sink answers for a decoded message. */
export type Verdict<A> = A | Drop | Suspension;

export interface FrameSink<A> {
  /** Action for messages whose type is not in `decode`. Read on every such message. */
  passAction: A | Drop;
  /**
   * Decide on a decoded message. `buf[bodyStart..bodyEnd)` is the body (after the 5-byte
   * header); `buf[bodyEnd..]` holds the input received after it in the same chunk, not
   * scanned yet (nothing when the message was assembled across chunks): the sink may look
   * ahead there, without keeping it.
   */
  onMessage(type: number, buf: Buffer, bodyStart: number, bodyEnd: number): Verdict<A>;
  /** Receive bytes to act on. `bytes` is only valid during the call unless retained deliberately. */
  emit(action: A, bytes: Buffer): void;
  /** A framing error: bad length or over the size limit. Scanning stops for good. */
  onFramingError(message: string, code: 'length' | 'size'): void;
}

export class MessageScanner<A> {
  /** Bytes of the current pass-through message still to come, and their action. */
  private skip = 0;
  private skipAction: A | Drop = DROP;
  /** Partial header (fewer than 5 bytes) carried between chunks. */
  private header: Buffer | null = null;
  /**
   * A decoded message being assembled across chunks: `assembling` holds its first
   * `assembled` bytes and grows as they arrive (a declared length is not reserved
   * up front); `assemblingSize` is its full size.
   */
  private assembling: Buffer | null = null;
  private assembled = 0;
  private assemblingSize = 0;
  /** Chunk and offset to continue from after SUSPEND. */
  private pending: Buffer | null = null;
  private pendingPos = 0;
  private broken = false;
  /** The run not yet emitted while onMessage runs (see flushRun). */
  private runChunk: Buffer | null = null;
  private runFrom = 0;
  private runUpTo = 0;
  private runAct: A | Drop = DROP;

  constructor(
    private readonly sink: FrameSink<A>,
    /** decode[type] !== 0: present the whole message to onMessage. May be swapped between messages. */
    public decode: Uint8Array,
    private readonly maxMessageSize: number,
  ) {}

  get suspended(): boolean {
    return this.pending !== null;
  }

  /**
   * The action of a pass-through message whose first bytes went out and whose rest is
   * still to come (DROP when none: the scan is at a message boundary for the receiver).
   */
  get partialAction(): A | Drop {
    return this.skip > 0 ? this.skipAction : DROP;
  }

  /** Part of a message has been received and the rest is still to come. */
  get midMessage(): boolean {
    return this.skip > 0 || this.header !== null || this.assembling !== null;
  }

  /** Feed one chunk. Returns false when the scan suspended (the rest of the chunk is kept). */
  push(chunk: Buffer): boolean {
    if (this.broken) return true;
    if (this.pending !== null) {
      // Data arrived while suspended (the owner should have paused): queue it.
      this.pending = Buffer.concat([this.pending.subarray(this.pendingPos), chunk]);
      this.pendingPos = 0;
      return false;
    }
    return this.scan(chunk, 0);
  }

  /**
   * Called by the sink from inside onMessage before it writes anything itself: emits the
   * bytes scanned before the current message that are still waiting to be coalesced, so
   * that the sink's own writes cannot overtake them.
   */
  flushRun(): void {
    const c = this.runChunk;
    if (c === null) return;
    this.runChunk = null;
    if (this.runAct !== DROP && this.runUpTo > this.runFrom)
      this.sink.emit(this.runAct, c.subarray(this.runFrom, this.runUpTo));
  }

  /** True while `resume()` presents again the message the sink suspended on. */
  resuming = false;
  /** The pending position is a message presented before (SUSPEND, not CONSUME_AND_SUSPEND). */
  private represent = false;

  /** Continue after SUSPEND. Returns false if it suspended again. */
  resume(): boolean {
    const chunk = this.pending;
    if (chunk === null) return true;
    const pos = this.pendingPos;
    this.pending = null;
    this.pendingPos = 0;
    this.resuming = this.represent;
    return this.scan(chunk, pos);
  }

  private scan(chunk: Buffer, start: number): boolean {
    const sink = this.sink;
    const len = chunk.length;
    let pos = start;
    // Run of bytes [runStart, pos) sharing runAction, not yet emitted.
    let runStart = pos;
    let runAction: A | Drop = DROP;

    // Finish a pass-through message begun in an earlier chunk.
    if (this.skip > 0) {
      const n = this.skip < len - pos ? this.skip : len - pos;
      this.skip -= n;
      runAction = this.skipAction;
      pos += n;
      if (pos === len) {
        if (runAction !== DROP && pos > runStart)
          sink.emit(runAction, start === 0 && pos === len ? chunk : chunk.subarray(runStart, pos));
        return true;
      }
    }

    // Finish a header or a decoded message begun in an earlier chunk.
    if (this.header !== null || this.assembling !== null) {
      if (pos > runStart && runAction !== DROP) sink.emit(runAction, chunk.subarray(runStart, pos));
      const r = this.continuePartial(chunk, pos);
      if (r < 0) return false; // suspended inside (pending set)
      pos = r;
      runStart = pos;
      runAction = DROP;
      if (this.skip > 0 || this.header !== null || this.assembling !== null) return true; // chunk used up
    }

    while (pos < len) {
      if (len - pos < 5) {
        this.emitRun(chunk, runStart, pos, runAction);
        this.header = Buffer.allocUnsafe(5);
        chunk.copy(this.header, 0, pos, len);
        this.assembled = len - pos;
        return true;
      }
      const type = chunk[pos];
      const msgLen = chunk.readUInt32BE(pos + 1);
      if (msgLen < 4) return this.fail(chunk, runStart, pos, runAction, `invalid message length ${msgLen}`, 'length');
      if (msgLen > this.maxMessageSize)
        return this.fail(
          chunk,
          runStart,
          pos,
          runAction,
          `message of ${msgLen} bytes exceeds the maximum of ${this.maxMessageSize}`,
          'size',
        );
      const end = pos + 1 + msgLen;
      let action: Verdict<A>;
      if (this.decode[type] !== 0) {
        if (end > len) {
          // Assemble the whole message before deciding on it.
          this.emitRun(chunk, runStart, pos, runAction);
          this.startAssembling(1 + msgLen);
          this.append(chunk, pos, len);
          return true;
        }
        // Let the sink flush the bytes before this message if it writes on its own.
        this.runChunk = chunk;
        this.runFrom = runStart;
        this.runUpTo = pos;
        this.runAct = runAction;
        action = sink.onMessage(type, chunk, pos + 5, end);
        this.resuming = false;
        if (this.runChunk === null) runStart = pos;
        else this.runChunk = null;
        if (action === SUSPEND || action === CONSUME_AND_SUSPEND) {
          this.emitRun(chunk, runStart, pos, runAction);
          this.pending = chunk;
          this.pendingPos = action === SUSPEND ? pos : end;
          this.represent = action === SUSPEND;
          return false;
        }
        if (this.broken) return true;
      } else {
        action = sink.passAction;
      }
      if (action !== runAction) {
        this.emitRun(chunk, runStart, pos, runAction);
        runStart = pos;
        runAction = action;
      }
      if (end > len) {
        this.skip = end - len;
        this.skipAction = action;
        pos = len;
        break;
      }
      pos = end;
    }
    if (runAction !== DROP && pos > runStart)
      sink.emit(runAction, runStart === 0 && pos === len ? chunk : chunk.subarray(runStart, pos));
    return true;
  }

  /** Returns the new position, or -1 when the sink suspended on the assembled message. */
  private continuePartial(chunk: Buffer, pos: number): number {
    const len = chunk.length;
    if (this.header !== null) {
      const need = 5 - this.assembled;
      const n = need < len - pos ? need : len - pos;
      chunk.copy(this.header, this.assembled, pos, pos + n);
      this.assembled += n;
      pos += n;
      if (this.assembled < 5) return pos;
      const hdr = this.header;
      this.header = null;
      const type = hdr[0];
      const msgLen = hdr.readUInt32BE(1);
      if (msgLen < 4) {
        this.fail(chunk, pos, pos, DROP, `invalid message length ${msgLen}`, 'length');
        return len;
      }
      if (msgLen > this.maxMessageSize) {
        this.fail(
          chunk,
          pos,
          pos,
          DROP,
          `message of ${msgLen} bytes exceeds the maximum of ${this.maxMessageSize}`,
          'size',
        );
        return len;
      }
      if (this.decode[type] !== 0) {
        this.startAssembling(1 + msgLen);
        this.append(hdr, 0, 5);
      } else {
        const action = this.sink.passAction;
        if (action !== DROP) this.sink.emit(action, hdr);
        const body = msgLen - 4;
        const n2 = body < len - pos ? body : len - pos;
        if (action !== DROP && n2 > 0) this.sink.emit(action, chunk.subarray(pos, pos + n2));
        pos += n2;
        if (n2 < body) {
          this.skip = body - n2;
          this.skipAction = action;
        }
        return pos;
      }
    }
    if (this.assembling !== null) {
      const need = this.assemblingSize - this.assembled;
      const n = need < len - pos ? need : len - pos;
      this.append(chunk, pos, pos + n);
      pos += n;
      if (this.assembled < this.assemblingSize) return pos;
      const msg = this.assembling;
      this.assembling = null;
      const action = this.sink.onMessage(msg[0], msg, 5, msg.length);
      this.resuming = false;
      if (action === SUSPEND) {
        // Keep the assembled message in front of the rest of the chunk.
        this.pending = pos < len ? Buffer.concat([msg, chunk.subarray(pos)]) : msg;
        this.pendingPos = 0;
        this.represent = true;
        return -1;
      }
      if (action === CONSUME_AND_SUSPEND) {
        this.pending = chunk;
        this.pendingPos = pos;
        this.represent = false;
        return -1;
      }
      if (action !== DROP && !this.broken) this.sink.emit(action, msg);
    }
    return pos;
  }

  private startAssembling(size: number): void {
    this.assemblingSize = size;
    this.assembled = 0;
    this.assembling = Buffer.allocUnsafe(Math.min(size, ASSEMBLY_START));
  }

  /** Add `chunk[from..to)` to the message being assembled, growing its buffer (doubling, up to its size). */
  private append(chunk: Buffer, from: number, to: number): void {
    let buf = this.assembling as Buffer;
    const need = this.assembled + (to - from);
    if (need > buf.length) {
      const grown = Buffer.allocUnsafe(Math.min(this.assemblingSize, Math.max(need, buf.length * 2)));
      buf.copy(grown, 0, 0, this.assembled);
      buf = grown;
      this.assembling = grown;
    }
    chunk.copy(buf, this.assembled, from, to);
    this.assembled = need;
  }

  private emitRun(chunk: Buffer, from: number, to: number, action: A | Drop): void {
    if (action !== DROP && to > from) this.sink.emit(action, chunk.subarray(from, to));
  }

  private fail(
    chunk: Buffer,
    runStart: number,
    pos: number,
    runAction: A | Drop,
    message: string,
    code: 'length' | 'size',
  ): boolean {
    this.emitRun(chunk, runStart, pos, runAction);
    this.broken = true;
    this.sink.onFramingError(message, code);
    return true;
  }
}

/** A 256-entry table for `MessageScanner.decode`. */
export function decodeTable(types: string): Uint8Array {
  const t = new Uint8Array(256);
  for (let i = 0; i < types.length; i++) t[types.charCodeAt(i)] = 1;
  return t;
}
