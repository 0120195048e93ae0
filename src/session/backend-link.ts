/**
 * A backend connection as one session uses it: the replies it still owes, in
 * order, and what to do with each (forward to the client, hold, drop, capture).
 *
 * Every request the session sends adds an `Expectation` naming the reply types that
 * end it (ParseComplete for Parse, ReadyForQuery for Query/Sync…). The reply scanner
 * decodes only those types (plus ErrorResponse/ParameterStatus/notices) and forwards
 * everything else as raw bytes with the action of the expectation at the head.
 */
import { BE, FE } from '../protocol/constants.js';
import { DROP, MessageScanner, decodeTable, type FrameSink } from '../protocol/framing.js';
import { parseErrorFields, readCString } from '../protocol/messages.js';
import type { BackendConnection } from '../pool/connector.js';

/** What happens to the replies of one request. */
export const Mode = {
  /** To the client as they arrive. */
  Forward: 1,
  /** Discarded (mirrored statements on the second node, re-Parse, internal work). */
  Drop: 2,
  /** Kept in `held` until the session decides (statements sent to both nodes). */
  Hold: 3,
  /** A Sync of a pipeline that spans nodes: its ReadyForQuery is merged by the session. */
  Sync: 4,
  /** An internal query: rows decoded into `rows`. */
  Capture: 5,
} as const;
export type Mode = (typeof Mode)[keyof typeof Mode];

/** Reply types that end a request, per request kind. */
export const END_PARSE = decodeTable('1');
export const END_BIND = decodeTable('2');
export const END_DESCRIBE = decodeTable('Tn');
export const END_EXECUTE = decodeTable('CIs');
export const END_CLOSE = decodeTable('3');
export const END_READY = decodeTable('Z');

export interface Expectation {
  end: Uint8Array;
  mode: Mode;
  /** Fields of an ErrorResponse received for this request. */
  error?: Record<string, string>;
  /** Hold: the reply bytes. */
  held?: Buffer[];
  /** Capture: decoded rows (text). */
  rows?: Array<Array<string | null>>;
  columns?: string[];
  /** Called once the request's reply is complete (after its bytes were emitted). */
  done?: (e: Expectation, link: BackendLink) => void;
  /** ReadyForQuery status when `end` is END_READY. */
  status?: number;
  /** Expects the ReadyForQuery of a client's Sync (extended protocol). */
  sync?: boolean;
  /** A reply message for it has been seen (so part of it may have reached the client). */
  started?: boolean;
  /**
   * Re-send this request to another link if this one dies before any reply to it arrived
   * (set by the session for reads outside a transaction on a non-primary node).
   */
  resend?: (to: BackendLink, e: Expectation) => void;
  /** The copy of a statement run on both nodes: if this (non-primary) node dies, the primary's result stands. */
  skippable?: boolean;
}

/** Replies the link decodes in normal operation. */
const LINK_DECODE = decodeTable('ZES123CIsnTANGHW');
/** ...and while capturing an internal query's rows. */
const CAPTURE_DECODE = decodeTable('ZES123CIsnTANGHWD');

const TO_CLIENT = 1;
const TRACE = process.env.PGRELAY_TRACE === '1';
const HOLD = 2;

export const FLUSH = Buffer.from([FE.Flush, 0, 0, 0, 4]);
export const SYNC = Buffer.from([FE.Sync, 0, 0, 0, 4]);

/** What a link needs from its session. */
export interface LinkOwner {
  /** Write reply bytes to the client; returns false when the client's buffer is full. */
  writeClient(bytes: Buffer): boolean;
  /** Wait for the client socket to drain, then call `fn`. */
  onClientDrain(fn: () => void): void;
  /** An asynchronous message (NotificationResponse, NoticeResponse, ParameterStatus) from an idle link. */
  asyncMessage(link: BackendLink, bytes: Buffer): void;
  /** The backend closed or broke the connection. */
  linkClosed(link: BackendLink): void;
  /** Some requests finished; the session may continue a suspended client. */
  progressed(link: BackendLink): void;
  /** The backend answered a request with an ErrorResponse. */
  backendError(link: BackendLink, fields: Record<string, string>): void;
  /** The backend sent a FATAL/PANIC error. */
  backendFatal(link: BackendLink, fields: Record<string, string>): void;
  /** The reply stream was malformed. */
  linkBroken(link: BackendLink, message: string): void;
}

export class BackendLink implements FrameSink {
  passAction = DROP;
  readonly scanner: MessageScanner;
  /** Outstanding requests, oldest first (queue with a moving head). */
  private queue: Expectation[] = [];
  private head = 0;
  /** Requests whose replies the client will see (Forward, Hold, Sync): gate for reply order. */
  visible = 0;
  /** Messages were sent since the last Sync/Flush: a Flush is needed before waiting on replies. */
  needsFlush = false;
  /** Took part in the current extended-protocol pipeline (since the last Sync). */
  inPipeline = false;
  fatal = false;
  /** A client-visible request of the current transaction ran here (reads, not only BEGIN/SET). */
  usedInTx = false;
  /** In copy-in mode started by an extended-protocol Execute: Sync and Flush are ignored by the server. */
  copyIn = false;
  /** `done` callbacks of Syncs the server ignored during copy-in, run with the next Sync's reply. */
  private orphaned: Array<(e: Expectation, link: BackendLink) => void> = [];
  private pausedForClient = false;
  private finished: Expectation[] = [];
  private attached = false;

  constructor(
    readonly owner: LinkOwner,
    readonly conn: BackendConnection,
    /** Scanner action of the session's client-side scanner that writes to this link. */
    readonly action: number,
    private readonly counters?: { backendBytesIn(nodeId: number, n: number): void },
  ) {
    this.scanner = new MessageScanner(this, LINK_DECODE, 0x7fffffff);
  }

  get nodeId(): number {
    return this.conn.nodeId;
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  get txStatus(): number {
    return this.conn.txStatus;
  }

  /** Outstanding requests, oldest first, removed from this link (it is being abandoned). */
  takePending(): Expectation[] {
    const out = this.queue.slice(this.head);
    this.queue = [];
    this.head = 0;
    this.visible = 0;
    this.updatePass();
    return out;
  }

  /** Outstanding requests, oldest first (read-only view). */
  pendingRequests(): readonly Expectation[] {
    return this.queue.slice(this.head);
  }

  expect(e: Expectation): void {
    if (e.sync && this.orphaned.length > 0) {
      const before = this.orphaned;
      this.orphaned = [];
      const own = e.done;
      e.done = (x, l) => {
        for (const fn of before) fn(x, l);
        own?.(x, l);
      };
    }
    if (e.mode !== Mode.Drop && e.mode !== Mode.Capture) this.visible++;
    this.queue.push(e);
    if (this.queue.length - this.head === 1) this.updatePass();
  }

  write(bytes: Buffer): void {
    this.conn.socket.write(bytes);
  }

  /** Send a Flush if requests are waiting behind an unflushed pipeline. */
  flushIfNeeded(): void {
    if (this.needsFlush) {
      this.needsFlush = false;
      this.conn.socket.write(FLUSH);
    }
  }

  attach(): void {
    if (this.attached) return;
    this.attached = true;
    this.conn.socket.on('data', this.onData);
    this.conn.socket.on('close', this.onClose);
    this.conn.socket.resume();
  }

  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.conn.socket.removeListener('data', this.onData);
    this.conn.socket.removeListener('close', this.onClose);
  }

  /** Clean for reuse: nothing outstanding, no FATAL, not mid-message. */
  get clean(): boolean {
    return this.pending === 0 && !this.fatal && !this.conn.dead && !this.scanner.suspended;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.counters?.backendBytesIn(this.conn.nodeId, chunk.length);
    this.scanner.push(chunk);
    if (this.finished.length > 0) {
      const done = this.finished;
      this.finished = [];
      for (const e of done) e.done?.(e, this);
      this.owner.progressed(this);
    }
  };

  private readonly onClose = (): void => {
    this.owner.linkClosed(this);
  };

  private current(): Expectation | undefined {
    return this.head < this.queue.length ? this.queue[this.head] : undefined;
  }

  private pop(): Expectation {
    const e = this.queue[this.head++];
    if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (e.mode !== Mode.Drop && e.mode !== Mode.Capture) this.visible--;
    this.finished.push(e);
    return e;
  }

  private updatePass(): void {
    const e = this.current();
    if (!e) {
      this.passAction = DROP;
      this.scanner.decode = LINK_DECODE;
      return;
    }
    this.passAction = e.mode === Mode.Forward ? TO_CLIENT : e.mode === Mode.Hold ? HOLD : DROP;
    this.scanner.decode = e.mode === Mode.Capture ? CAPTURE_DECODE : LINK_DECODE;
  }

  onMessage(type: number, buf: Buffer, start: number, end: number): number {
    const e = this.current();
    if (TRACE)
      process.stderr.write(
        `[trace] node${this.nodeId} <- ${String.fromCharCode(type)} head=${e ? `${e.mode}/${[...'123CIsnTZ'].filter((c) => e.end[c.charCodeAt(0)]).join('')}` : '-'} pending=${this.pending}\n`,
      );
    if (type === BE.ParameterStatus) {
      const k = readCString(buf, start, end);
      const v = k && readCString(buf, k[1], end);
      if (k && v) this.conn.params.set(k[0], v[0]);
    }
    if (!e) {
      // Nothing outstanding: an asynchronous message (or the FATAL before a shutdown).
      if (type === BE.ErrorResponse) {
        const f = parseErrorFields(buf, start, end);
        if (f.V === 'FATAL' || f.S === 'FATAL' || f.V === 'PANIC') {
          this.fatal = true;
          this.owner.backendFatal(this, f);
        }
      }
      if (
        type === BE.NotificationResponse ||
        type === BE.NoticeResponse ||
        type === BE.ParameterStatus ||
        type === BE.ErrorResponse
      ) {
        this.owner.asyncMessage(this, Buffer.from(buf.subarray(start - 5, end)));
      }
      return DROP;
    }
    const wasStarted = e.started === true;
    if (type === BE.NoticeResponse && e.resend !== undefined && !wasStarted) {
      // An immediate shutdown warns (57P0x) before closing: keep a re-sendable request clean.
      const code = parseErrorFields(buf, start, end).C ?? '';
      if (code.startsWith('57P')) return DROP;
    }
    e.started = true;
    const action = this.passAction;
    if (type === BE.ErrorResponse) {
      const f = parseErrorFields(buf, start, end);
      const sev = f.V ?? f.S;
      if (sev === 'FATAL' || sev === 'PANIC') {
        this.fatal = true;
        this.owner.backendFatal(this, f);
        if (e.resend !== undefined && !wasStarted) {
          // The server is going away before answering a request that can be re-sent to
          // another node: keep the client out of it (the session re-sends it on close).
          e.started = false;
          return DROP;
        }
      }
      e.error = f;
      this.copyIn = false;
      this.owner.backendError(this, f);
      if (e.end !== END_READY) {
        // Extended protocol: the server now skips everything up to Sync. Those requests end
        // here; if any of them is visible to the client, so is this error.
        let forward = e.mode === Mode.Forward;
        this.pop();
        let next = this.current();
        while (next && next.end !== END_READY) {
          if (next.mode === Mode.Forward) forward = true;
          next.error = f;
          this.pop();
          next = this.current();
        }
        this.updatePass();
        return forward ? TO_CLIENT : action;
      }
      return action;
    }
    if ((type === BE.CopyInResponse || type === BE.CopyBothResponse) && e.end === END_EXECUTE) {
      // The server now ignores Sync until the copy ends: the Syncs already sent get no reply.
      this.copyIn = true;
      for (let i = this.head + 1; i < this.queue.length; ) {
        const x = this.queue[i];
        if (x.end !== END_READY || !x.sync) break;
        this.queue.splice(i, 1);
        if (x.mode !== Mode.Drop && x.mode !== Mode.Capture) this.visible--;
        if (x.done) this.orphaned.push(x.done);
      }
    }
    if (e.mode === Mode.Capture) {
      if (type === BE.DataRow) e.rows?.push(decodeDataRow(buf, start, end));
      else if (type === BE.RowDescription) e.columns = decodeColumnNames(buf, start, end);
    }
    if (e.end[type] !== 0) {
      if (e.end === END_EXECUTE) this.copyIn = false;
      if (type === BE.ReadyForQuery) {
        this.conn.txStatus = buf[start];
        e.status = buf[start];
      }
      this.pop();
      this.updatePass();
    }
    return action;
  }

  emit(action: number, bytes: Buffer): void {
    if (action === HOLD) {
      // The head may already have moved on: the held bytes belong to the last Hold request.
      const e = this.holdTarget();
      e?.held?.push(bytes);
      return;
    }
    if (!this.owner.writeClient(bytes) && !this.pausedForClient) {
      this.pausedForClient = true;
      this.conn.socket.pause();
      this.owner.onClientDrain(() => {
        this.pausedForClient = false;
        if (this.attached) this.conn.socket.resume();
      });
    }
  }

  /** The Hold request receiving bytes: the current head if it holds, else the one just finished. */
  private holdTarget(): Expectation | undefined {
    const c = this.current();
    if (c && c.mode === Mode.Hold) return c;
    for (let i = this.finished.length - 1; i >= 0; i--)
      if (this.finished[i].mode === Mode.Hold) return this.finished[i];
    return undefined;
  }

  onFramingError(message: string): void {
    this.owner.linkBroken(this, message);
  }
}

function decodeDataRow(buf: Buffer, start: number, end: number): Array<string | null> {
  const n = buf.readInt16BE(start);
  const out: Array<string | null> = [];
  let p = start + 2;
  for (let i = 0; i < n && p + 4 <= end; i++) {
    const len = buf.readInt32BE(p);
    p += 4;
    if (len < 0) out.push(null);
    else {
      out.push(buf.toString('utf8', p, p + len));
      p += len;
    }
  }
  return out;
}

function decodeColumnNames(buf: Buffer, start: number, end: number): string[] {
  const n = buf.readInt16BE(start);
  const out: string[] = [];
  let p = start + 2;
  for (let i = 0; i < n; i++) {
    const c = readCString(buf, p, end);
    if (!c) break;
    out.push(c[0]);
    p = c[1] + 18;
  }
  return out;
}
