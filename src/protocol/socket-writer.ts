/**
 * Writing a session's bytes to a socket without the stream machinery on the hot path.
 *
 * `socket.write()` costs, per write: `Writable.write` / `writeOrBuffer`, a write request
 * object with its callback, and an `afterWrite` run on `process.nextTick` — even when the
 * kernel takes every byte at once, as it nearly always does for a proxy's small messages.
 * `writeTo` hands the bytes to the socket's handle the way Node's own stream code does
 * (`writeGeneric` in `internal/stream_base_commons`: a `WriteWrap` request and the
 * handle's `writeBuffer`) and is done when libuv wrote them synchronously.
 *
 * When it could not (the kernel's buffer is full), libuv keeps the rest queued, in order
 * ahead of anything written later by either path; `writeTo` then answers false, as
 * `socket.write()` does past its high-water mark, and emits `'drain'` on the socket when
 * libuv has written them. Until then, and whenever the stream holds bytes of its own, a
 * socket is corked, connecting, ending or encrypted, writes take `socket.write()`:
 * the bytes keep their order and the stream its backpressure. `queuedBytes` counts both.
 *
 * A socket's idle timeout (`setTimeout`) is refreshed by each write and each completion,
 * and sees a write libuv is still doing as in progress, as with `socket.write()`.
 * `socket.bytesWritten` does not count these writes (pgrelay does not read it).
 *
 * A write error destroys the socket with the same error `socket.write()` would report.
 * The handle's request type and its shared state come from the `stream_wrap` binding
 * (`process.binding`, deprecated but kept for such uses); this file is the only place that
 * touches them, and without them (another Node version, `PGRELAY_SOCKET_WRITER=stream`)
 * every write takes `socket.write()`.
 */
import net from 'node:net';
import { getSystemErrorName } from 'node:util';

interface WriteRequest {
  handle: unknown;
  oncomplete: (this: WriteRequest, status: number) => void;
  async: boolean;
  bytes: number;
  buffer: Buffer | null;
  socket: net.Socket | null;
}

interface StreamWrap {
  WriteWrap: new () => WriteRequest;
  streamBaseState: Int32Array;
  kLastWriteWasAsync: number;
}

interface WritableHandle {
  writeBuffer(req: WriteRequest, data: Buffer): number;
}

const PENDING = Symbol('pgrelay.socketWriter.pending');

type Writable = net.Socket & {
  _handle?: Partial<WritableHandle> | null;
  /** Refreshes the socket's idle timeout (setTimeout), as Node does for every write. */
  _unrefTimer?: () => void;
  /** The stream's state: `length` bytes held, `corked` (read directly: Duplex getters cost a call each). */
  _writableState?: { length: number; corked: number } | null;
  encrypted?: boolean;
  [PENDING]?: number;
};

let binding: StreamWrap | null | undefined;
/**
 * The socket field Node's idle timeout compares with the handle's `writeQueueSize` to tell
 * a write in progress from an idle socket (net.Socket `_onTimeout`); set as Node's own
 * writes set it, so that a timeout does not fire while libuv is still writing.
 */
let lastWriteQueueSize: symbol | undefined;

function findBinding(): StreamWrap | undefined {
  if (binding !== undefined) return binding ?? undefined;
  binding = null;
  if (process.env.PGRELAY_SOCKET_WRITER === 'stream') return undefined;
  try {
    const b = (process as unknown as { binding(name: string): Partial<StreamWrap> }).binding('stream_wrap');
    const probe = new net.Socket();
    lastWriteQueueSize = Object.getOwnPropertySymbols(probe).find((k) => k.description === 'lastWriteQueueSize');
    probe.destroy();
    if (
      typeof b.WriteWrap === 'function' &&
      b.streamBaseState instanceof Int32Array &&
      typeof b.kLastWriteWasAsync === 'number' &&
      lastWriteQueueSize !== undefined
    )
      binding = b as StreamWrap;
  } catch {
    binding = null;
  }
  return binding ?? undefined;
}

/** Node's error for a failed write (as `socket.write()` reports it). */
function writeError(status: number): NodeJS.ErrnoException {
  let name: string;
  try {
    name = getSystemErrorName(status);
  } catch {
    name = 'EIO';
  }
  const e: NodeJS.ErrnoException = new Error(`write ${name}`);
  e.errno = status;
  e.code = name;
  e.syscall = 'write';
  return e;
}

/** libuv wrote what it had queued for a handle write: the socket may drain. */
function onComplete(this: WriteRequest, status: number): void {
  const socket = this.socket as Writable | null;
  this.socket = null;
  this.buffer = null;
  if (socket === null) return;
  socket[PENDING] = (socket[PENDING] ?? 0) - this.bytes;
  if (socket.destroyed) return;
  if (status < 0) {
    socket.destroy(writeError(status));
    return;
  }
  socket._unrefTimer?.();
  if (socket[PENDING] === 0) socket.emit('drain');
}

/**
 * Write `bytes` to `socket`; false when they (or earlier ones) are still queued, as
 * `socket.write()` answers past its high-water mark: wait for `'drain'` to write more
 * without queueing.
 */
export function writeTo(socket: net.Socket, bytes: Buffer): boolean {
  const s = socket as Writable;
  const handle = s._handle;
  const ws = s._writableState;
  const b = binding === undefined ? findBinding() : binding;
  if (
    b === null ||
    b === undefined ||
    !handle ||
    typeof handle.writeBuffer !== 'function' ||
    (s[PENDING] ?? 0) > 0 ||
    !ws ||
    ws.length > 0 ||
    ws.corked > 0 ||
    s.connecting ||
    s.encrypted === true ||
    // Not ending, ended, destroyed or errored.
    !s.writable
  )
    return socket.write(bytes);
  s._unrefTimer?.();
  const req = new b.WriteWrap();
  req.handle = handle;
  req.oncomplete = onComplete;
  req.async = false;
  req.bytes = bytes.length;
  req.buffer = null;
  req.socket = null;
  const err = (handle as WritableHandle).writeBuffer(req, bytes);
  if (err !== 0) {
    socket.destroy(writeError(err));
    return false;
  }
  if (b.streamBaseState[b.kLastWriteWasAsync] === 0) return true;
  // Queued by libuv: keep the bytes alive until it is done with them.
  req.buffer = bytes;
  req.socket = socket;
  s[PENDING] = (s[PENDING] ?? 0) + bytes.length;
  (s as unknown as Record<symbol, number>)[lastWriteQueueSize as symbol] = bytes.length;
  return false;
}

/** Bytes written to `socket` that it has not taken yet (the stream's and libuv's). */
export function queuedBytes(socket: net.Socket): number {
  return socket.writableLength + ((socket as Writable)[PENDING] ?? 0);
}
