/**
 * A backend connection as one session uses it: its socket, the replies it owes
 * (replies.ts) and the per-pipeline flags the session keeps for it.
 *
 * The link is where bytes leave for a backend (`write`) and where its replies come
 * in: the reply scanner hands them to the queue, which forwards, drops, holds or
 * captures them; the link applies client backpressure (a client that does not read
 * pauses the backend socket) and tells the session when requests complete.
 */
import { FE } from '../protocol/constants.js';
import { readChunks, stopChunks } from '../protocol/socket-reader.js';
import { writeTo } from '../protocol/socket-writer.js';
import type { BackendConnection } from '../pool/connector.js';
import { type ErrorFieldMap, type Expectation, type ReplyOutput, ReplyQueue } from './replies.js';

export type LinkExpectation = Expectation<BackendLink>;

export const FLUSH = Buffer.from([FE.Flush, 0, 0, 0, 4]);
export const SYNC = Buffer.from([FE.Sync, 0, 0, 0, 4]);

const TRACE = process.env.PGRELAY_TRACE === '1';

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
  backendError(link: BackendLink, fields: ErrorFieldMap): void;
  /** A client-visible extended-protocol request failed before the client sent its Sync (ReplyOutput.skipsUntilSync). */
  skipUntilSync(): void;
  /** The backend sent a FATAL/PANIC error. */
  backendFatal(link: BackendLink, fields: ErrorFieldMap): void;
  /** The reply stream was malformed. */
  linkBroken(link: BackendLink, message: string): void;
  /** A ParameterStatus for the client (ReplyOutput.tellClient). */
  tellClient(name: string, value: string): string | undefined;
  /** Writes to the backend are buffered past the socket's high-water mark: stop reading the client. */
  backendCongested(link: BackendLink): void;
  /** The backend socket drained what was buffered. */
  backendDrained(link: BackendLink): void;
}

export class BackendLink implements ReplyOutput {
  readonly replies: ReplyQueue<BackendLink>;
  /** Messages were sent since the last Sync/Flush: a Flush is needed before waiting on replies. */
  needsFlush = false;
  /** Took part in the current extended-protocol pipeline (since the last Sync). */
  inPipeline = false;
  /**
   * pool_mode = transaction: copies of what is written to the connection after a Bind whose
   * statement the server may have lost, until its reply (extended.ts prepareAgain).
   */
  recording: Buffer[] | undefined;
  /** A Bind or Execute was sent since the last Sync or Query (an error now undoes more than a Bind). */
  portalsInBatch = false;
  /** A client-visible request of the current transaction ran here (reads, not only BEGIN/SET). */
  usedInTx = false;
  /**
   * pgrelay's own Parse of the client's unnamed statement here (a Query of its own dropped
   * it), while unanswered, and the Syncs queued before it (see ExtendedProtocol.parsedOn).
   */
  unnamedReparse: { e: LinkExpectation; syncs: number } | undefined = undefined;
  /** Waiting for the client to drain before reading more replies. */
  private pausedForClient = false;

  /** Replies are not read until the client takes what it was sent. */
  get waitingForClient(): boolean {
    return this.pausedForClient;
  }
  /** Reasons not to read replies now (see holdReading); the socket reads only at 0. */
  private readHolds = 0;
  private attached = false;
  /** Written bytes are buffered past the socket's high-water mark (until 'drain'). */
  congested = false;
  /** Called once nothing is outstanding any more (true), or the connection closed (false); see `whenSettled`. */
  private onSettled: ((ok: boolean) => void) | undefined;

  constructor(
    owner: LinkOwner,
    readonly conn: BackendConnection,
    private readonly counters?: {
      backendBytesIn(nodeId: number, n: number): void;
      backendBytesOut(nodeId: number, n: number): void;
    },
  ) {
    this.owner = owner;
    this.replies = new ReplyQueue<BackendLink>(this, conn);
  }

  /** The session using the connection through this link (another one after `adopt`). */
  owner: LinkOwner;

  /**
   * pool_mode = transaction: serve `owner` from now on, as a new link would (a connection
   * keeps its link from one unit of work to the next: fewer objects per transaction).
   * False, and nothing changed, while anything of the last session's could still act on
   * it: attached, waiting for that client's drain (a callback of its session), reads held,
   * a `whenSettled` callback, or replies state left (reply-queue reusable); the caller then
   * makes a new link.
   */
  adopt(owner: LinkOwner): boolean {
    if (
      this.attached ||
      this.pausedForClient ||
      this.readHolds !== 0 ||
      this.onSettled !== undefined ||
      !this.replies.reusable
    )
      return false;
    this.owner = owner;
    this.needsFlush = false;
    this.inPipeline = false;
    this.recording = undefined;
    this.portalsInBatch = false;
    this.usedInTx = false;
    this.unnamedReparse = undefined;
    this.congested = false;
    return true;
  }

  get nodeId(): number {
    return this.conn.nodeId;
  }

  /** Requests still owed a reply. */
  get pending(): number {
    return this.replies.pending;
  }

  /** Requests whose replies the client will see: while > 0, no other node may answer the client. */
  get visible(): number {
    return this.replies.visible;
  }

  get txStatus(): number {
    return this.conn.txStatus;
  }

  get fatal(): boolean {
    return this.replies.fatal;
  }

  get copyIn(): boolean {
    return this.replies.copyIn;
  }

  /** The server waits for the client's copy data (ReplyQueue.copying). */
  get copying(): boolean {
    return this.replies.copying;
  }

  /** The client's CopyDone or CopyFail went to this server (ReplyQueue.copyEnded). */
  copyEnded(): void {
    this.replies.copyEnded();
  }

  /** Attached to its socket (not abandoned). */
  get live(): boolean {
    return this.attached;
  }

  expect(e: LinkExpectation): void {
    // A simple Query replaces the connection's unnamed statement.
    if (e.kind === 'query' && e.mode !== 'synthetic') this.conn.unnamed = undefined;
    if (e.kind === 'bind' || e.kind === 'execute') this.portalsInBatch = true;
    else if (e.kind === 'sync' || e.kind === 'query') this.portalsInBatch = false;
    if (TRACE)
      process.stderr.write(
        `[trace] node${this.nodeId} conn${this.conn.socket.localPort} expect ${e.kind}/${e.mode} pending=${this.pending}\n`,
      );
    this.replies.expect(e);
  }

  /** The one place bytes are written to a backend. Past the socket's high-water mark the session is told. */
  write(bytes: Buffer): void {
    this.counters?.backendBytesOut(this.conn.nodeId, bytes.length);
    if (this.recording !== undefined) this.recording.push(Buffer.from(bytes));
    if (!writeTo(this.conn.socket, bytes) && !this.congested && !this.conn.socket.destroyed) {
      this.congested = true;
      this.conn.socket.once('drain', this.onWriteDrain);
      this.owner.backendCongested(this);
    }
  }

  private readonly onWriteDrain = (): void => {
    this.congested = false;
    this.owner.backendDrained(this);
  };

  /** Stop reading replies until as many `releaseReading` calls. */
  holdReading(): void {
    if (this.readHolds++ === 0) this.conn.socket.pause();
  }

  releaseReading(): void {
    if (--this.readHolds === 0 && this.attached) this.conn.socket.resume();
  }

  /** Read no more replies until the client's socket drains (it is not reading what it was sent). */
  waitForClient(): void {
    if (this.pausedForClient) return;
    this.pausedForClient = true;
    this.holdReading();
    const pause = ++this.clientPauses;
    this.owner.onClientDrain(() => {
      // (Not a pause ended since: see whenSettled.)
      if (!this.pausedForClient || this.clientPauses !== pause) return;
      this.pausedForClient = false;
      this.releaseReading();
    });
  }

  /** Pauses for the client so far (a drain ends only the one it was registered for). */
  private clientPauses = 0;

  /** Send a Flush if requests are waiting behind an unflushed pipeline. */
  flushIfNeeded(): void {
    if (this.needsFlush) {
      this.needsFlush = false;
      this.write(FLUSH);
    }
  }

  attach(): void {
    if (this.attached) return;
    this.attached = true;
    readChunks(this.conn.socket, this.onData);
    this.conn.socket.on('close', this.onClose);
    if (this.readHolds === 0) this.conn.socket.resume();
  }

  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    stopChunks(this.conn.socket, this.onData);
    this.conn.socket.removeListener('close', this.onClose);
    this.conn.socket.removeListener('drain', this.onWriteDrain);
    this.congested = false;
  }

  /**
   * Call `fn(true)` once every outstanding request was answered, or `fn(false)` if the
   * connection closes or `timeoutMs` passes first. For a released link whose requests
   * are pgrelay's own (the client sees none of their replies).
   */
  whenSettled(fn: (ok: boolean) => void, timeoutMs: number): void {
    const timer = setTimeout(() => settle(false), timeoutMs);
    const settle = (ok: boolean): void => {
      if (this.onSettled !== settle) return;
      this.onSettled = undefined;
      clearTimeout(timer);
      fn(ok);
    };
    this.onSettled = settle;
    // Its client is gone (the session let the link go): a wait for that client to drain would
    // never end, and the replies left are pgrelay's own or dropped. Read them.
    if (this.pausedForClient) {
      this.pausedForClient = false;
      this.releaseReading();
    }
    if (this.pending === 0) settle(true);
  }

  /** Clean for reuse: nothing outstanding, no FATAL, not mid-message. */
  get clean(): boolean {
    return this.pending === 0 && !this.fatal && !this.conn.dead && !this.replies.midMessage;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.counters?.backendBytesIn(this.conn.nodeId, chunk.length);
    if (TRACE) {
      const t: string[] = [];
      for (let i = 0, len = 0; i + 5 <= chunk.length && (len = chunk.readInt32BE(i + 1)) >= 4; i += 1 + len)
        t.push(String.fromCharCode(chunk[i]));
      process.stderr.write(
        `[trace] node${this.nodeId} conn${this.conn.socket.localPort} <- ${t.join('')}, pending=${this.pending}\n`,
      );
    }
    this.replies.push(chunk);
    if (this.replies.runFinished(this)) this.owner.progressed(this);
    if (this.onSettled !== undefined && this.pending === 0) this.onSettled(true);
  };

  private readonly onClose = (): void => {
    if (this.onSettled !== undefined) this.onSettled(false);
    this.owner.linkClosed(this);
  };

  // ReplyOutput: what the reply queue reports.

  toClient(bytes: Buffer): void {
    if (!this.owner.writeClient(bytes)) this.waitForClient();
  }

  error(fields: ErrorFieldMap): void {
    this.owner.backendError(this, fields);
  }

  fatalError(fields: ErrorFieldMap): void {
    this.owner.backendFatal(this, fields);
  }

  skipsUntilSync(): void {
    this.owner.skipUntilSync();
  }

  mustFlush(): void {
    this.needsFlush = true;
  }

  asyncMessage(bytes: Buffer): void {
    this.owner.asyncMessage(this, bytes);
  }

  tellClient(name: string, value: string): string | undefined {
    return this.owner.tellClient(name, value);
  }

  broken(message: string): void {
    this.owner.linkBroken(this, message);
  }
}
