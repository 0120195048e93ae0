/**
 * A client's bytes before its session starts: the start-up packet, the
 * authentication messages, and whatever the client pipelined behind them (a Query,
 * a Terminate…), which the session handles first, in order, as PostgreSQL does.
 *
 * One reader per socket from accept to the session, so no byte is lost between the
 * start-up code, authentication and admission, and the socket is always read (a
 * client that leaves while it waits for a session slot is noticed). What it holds
 * is bounded: past `maxBuffered` bytes the socket is paused until they are consumed.
 * With at most max_unauthenticated_connections such clients (src/server/startup.ts),
 * the bytes held for clients that have not authenticated are bounded in total too.
 *
 * refuseClient() ends a client that will not get a session: its FATAL error, no
 * more reading, and a fixed deadline for the socket.
 */
import type net from 'node:net';
import { type PgError, errorResponse } from './messages.js';

/**
 * How long a refused client's socket is kept after its FATAL error: time for the
 * client to read the error and close first (destroying a socket with unread input
 * makes the kernel reset the connection, which can discard the error before the
 * client read it). PostgreSQL's backend exits right after the error; about a second
 * is what a client sees from it too.
 */
export const REFUSED_CLOSE_MS = 1000;

/**
 * Send a client its FATAL error and close: what it sends afterwards is not read (the
 * socket is paused: Node fills one stream buffer, its high-water mark, then leaves the
 * rest in the kernel) and never handled, and the socket is
 * destroyed at a fixed deadline, REFUSED_CLOSE_MS from now, however many bytes the
 * client keeps sending (an idle timer would let a client that trickles a byte now and
 * then hold it forever).
 */
export function refuseClient(socket: net.Socket, err: PgError): void {
  if (socket.destroyed) return;
  socket.pause();
  socket.on('error', () => undefined);
  if (socket.writable) socket.end(errorResponse({ ...err.toFields(), severity: 'FATAL' }));
  const deadline = setTimeout(() => socket.destroy(), REFUSED_CLOSE_MS);
  // Shutdown does not wait for refused clients (the listener is closed, every socket destroyed).
  deadline.unref();
  socket.once('close', () => clearTimeout(deadline));
}

const EMPTY = Buffer.alloc(0);

export class ClientInput {
  private buf: Buffer = EMPTY;
  private closed = false;
  private detached = false;
  private notify: (() => void) | undefined;

  constructor(
    readonly socket: net.Socket,
    /** At least the largest message read through it (start-up packet, password or SASL message). */
    private readonly maxBuffered: number,
  ) {
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    if (socket.destroyed) this.closed = true;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.buf.length >= this.maxBuffered) this.socket.pause();
    this.wake();
  };

  private readonly onClose = (): void => {
    this.closed = true;
    this.wake();
  };

  private wake(): void {
    const n = this.notify;
    this.notify = undefined;
    n?.();
  }

  /** The bytes received and not consumed yet. */
  get bytes(): Buffer {
    return this.buf;
  }

  /** The peer closed the connection. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Resolves true once `n` bytes are buffered, false if the connection closes first. */
  async need(n: number): Promise<boolean> {
    while (this.buf.length < n) {
      if (this.closed || this.detached) return false;
      if (this.socket.isPaused() && this.buf.length < this.maxBuffered) this.socket.resume();
      await new Promise<void>((resolve) => {
        this.notify = resolve;
      });
    }
    return true;
  }

  /** Remove and return the first `n` buffered bytes. */
  take(n: number): Buffer {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    if (this.socket.isPaused() && this.buf.length < this.maxBuffered && !this.detached) this.socket.resume();
    return out;
  }

  /**
   * Stop reading: the socket is left paused for its next reader, which gets the bytes
   * received and not consumed. Pending `need` calls resolve false.
   */
  detach(): Buffer {
    this.detached = true;
    this.socket.pause();
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('close', this.onClose);
    const rest = this.buf;
    this.buf = EMPTY;
    this.wake();
    return rest;
  }
}
