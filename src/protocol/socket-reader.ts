/**
 * Reading a session's sockets without the stream machinery on the hot path.
 *
 * A `'data'` listener costs, per read: a 64 KiB allocation shrunk to the bytes read,
 * a Buffer object, `Readable.push`/`addChunk`/`emit`, and a `process.nextTick`
 * (`maybeReadMore`). Node's `onread` option (a buffer of the caller's that every read
 * goes into, and a callback) skips all of that, but net.Server offers no way to give
 * it to accepted sockets, and the backend sockets are read by the connector and the
 * cache's reset before a session gets them. So `readChunks` switches an open socket
 * into the same mode Node's `onread` option sets up: the socket's own (internal)
 * `kBuffer` / `kBufferCb` fields and `handle.useUserBuffer` — exactly what
 * `new net.Socket({ onread })` does, and what `Socket.pause`/`resume` already honour
 * (they stop and start the handle's reads). This file is the only place that touches
 * those internals; when any of them is missing (another Node version, a TLS socket)
 * it falls back to a `'data'` listener, with the same behaviour.
 *
 * One 64 KiB read buffer serves every switched socket (reads run one at a time on
 * the event loop): each read is copied out into a Buffer of its own size before the
 * callback returns, so consumers may keep what they get (scanners keep suspended
 * chunks, re-sendable requests keep views of their bytes, writes may be queued).
 *
 * A switched socket stays switched (a handle cannot give its user buffer back). While
 * no consumer is attached, reads are handed to the Readable side (`socket.push`), so
 * `'data'` listeners, `pause()`/`resume()` and the stream's buffering and backpressure
 * work as on any socket: a backend socket goes back to the cache and is read there
 * as before.
 */
import net from 'node:net';

/** Receives every chunk read (an owned Buffer). Pause the socket to stop reading. */
export type ChunkConsumer = (chunk: Buffer) => void;

const READ_BUFFER_SIZE = 64 * 1024;

interface Internals {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

/** The socket fields Node's onread option uses, found once (undefined when this Node has none). */
let internals: Internals | null | undefined;

function findInternals(): Internals | undefined {
  if (internals !== undefined) return internals ?? undefined;
  internals = null;
  if (process.env.PGRELAY_SOCKET_READER === 'stream') return undefined;
  try {
    const probe = new net.Socket();
    const byName = new Map<string, symbol>();
    for (const s of Object.getOwnPropertySymbols(probe)) if (s.description) byName.set(s.description, s);
    probe.destroy();
    const buffer = byName.get('kBuffer');
    const callback = byName.get('kBufferCb');
    const generator = byName.get('kBufferGen');
    if (buffer && callback && generator) internals = { buffer, callback, generator };
  } catch {
    internals = null;
  }
  return internals ?? undefined;
}

/** The one read buffer all switched sockets read into (copied out at once). */
let shared: Buffer | undefined;

/** What a switched socket delivers to. */
interface ReaderState {
  consumer: ChunkConsumer | null;
}

const STATE = Symbol('pgrelay.socketReader');

interface UserBufferHandle {
  useUserBuffer(buf: Uint8Array): void;
}

type Switchable = net.Socket & {
  _handle?: Partial<UserBufferHandle> | null;
  [STATE]?: ReaderState;
} & Record<symbol, unknown>;

/** Switch `socket` to user-buffer reads; returns its state, or undefined when that is not possible. */
function switched(socket: Switchable): ReaderState | undefined {
  const existing = socket[STATE];
  if (existing) return existing;
  const k = findInternals();
  const handle = socket._handle;
  if (
    !k ||
    !handle ||
    typeof handle.useUserBuffer !== 'function' ||
    (socket as { encrypted?: boolean }).encrypted === true ||
    socket.connecting ||
    socket.destroyed ||
    socket[k.buffer] !== null ||
    socket[k.generator] !== null
  )
    return undefined;
  shared ??= Buffer.allocUnsafeSlow(READ_BUFFER_SIZE);
  const state: ReaderState = { consumer: null };
  socket[k.callback] = (n: number, buf: Buffer): boolean => {
    const chunk = Buffer.allocUnsafe(n);
    buf.copy(chunk, 0, 0, n);
    const c = state.consumer;
    if (c !== null) {
      c(chunk);
      return true;
    }
    // No consumer: the Readable side, as Node's own read path does (false = stop reading).
    return socket.push(chunk);
  };
  socket[k.buffer] = shared;
  (handle as UserBufferHandle).useUserBuffer(shared);
  socket[STATE] = state;
  return state;
}

/**
 * Deliver what `socket` reads to `consumer` until `stopChunks(socket, consumer)`.
 * Bytes the socket's Readable side already holds are delivered first, at once.
 * Flow control is the socket's: `pause()` stops the reads, `resume()` starts them.
 */
export function readChunks(socket: net.Socket, consumer: ChunkConsumer): void {
  const state = switched(socket as Switchable);
  if (!state) {
    socket.on('data', consumer);
    return;
  }
  state.consumer = consumer;
  if (socket.readableLength > 0) {
    // read() starts the handle's reads again: a socket its owner paused stays paused.
    const paused = socket.isPaused();
    for (let c = socket.read() as Buffer | null; c !== null && state.consumer === consumer; c = socket.read())
      consumer(c);
    if (paused) socket.pause();
  }
}

/**
 * Stop delivering chunks to `consumer` (later reads go to the socket's Readable side).
 * A function of its own rather than a closure `readChunks` returns: a pooled connection
 * is read by another session for every transaction.
 */
export function stopChunks(socket: net.Socket, consumer: ChunkConsumer): void {
  const state = (socket as Switchable)[STATE];
  if (state === undefined) socket.removeListener('data', consumer);
  else if (state.consumer === consumer) state.consumer = null;
}
