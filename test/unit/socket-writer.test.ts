import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { queuedBytes, writeTo } from '../../src/protocol/socket-writer.js';
import { socketPair } from '../support/socket-pair.js';

/** Everything `socket` reads up to its end (rejects after 10 s). */
function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const t = setTimeout(() => reject(new Error('timed out')), 10_000);
    socket.once('close', () => clearTimeout(t));
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.once('end', () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks));
    });
  });
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 10_000);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** Bytes 0, 1, 2, … 250, 0, … from `from` on: a reordering or a lost byte shows. */
function pattern(n: number, from: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (from + i) % 251;
  return b;
}

let cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups) c();
  cleanups = [];
});

describe('writeTo', () => {
  it('writes small messages at once and answers true, nothing left queued', async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    const got = readAll(s);
    for (let i = 0; i < 100; i++) expect(writeTo(c, pattern(50, i * 50))).toBe(true);
    expect(queuedBytes(c)).toBe(0);
    c.end();
    expect((await got).equals(pattern(5000, 0))).toBe(true);
  });

  it('answers false while the peer does not read, counts what is queued, drains once, keeps the order of later writes', async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    s.pause();
    const big = 32 * 1024 * 1024;
    let drains = 0;
    c.on('drain', () => drains++);
    const drained = new Promise<void>((r) => c.once('drain', () => r()));
    expect(writeTo(c, pattern(big, 0))).toBe(false);
    expect(queuedBytes(c)).toBeGreaterThan(0);
    // Behind the queued bytes: these take the stream's path, after them.
    writeTo(c, pattern(1000, big));
    expect(queuedBytes(c)).toBeGreaterThan(1000);
    const got = readAll(s);
    s.resume();
    await withTimeout(drained, "'drain'");
    // What libuv had is written; the stream's own bytes (behind) may still be on their way.
    expect(queuedBytes(c)).toBeLessThanOrEqual(1000);
    expect(writeTo(c, pattern(10, big + 1000))).toBe(true);
    c.end();
    const all = await got;
    expect(all.length).toBe(big + 1010);
    expect(all.equals(pattern(big + 1010, 0))).toBe(true);
    expect(drains).toBeGreaterThanOrEqual(1);
  });

  it("a socket's idle timeout sees a write libuv is still doing as in progress, and an idle one as idle", async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    s.pause();
    const big = 32 * 1024 * 1024;
    expect(writeTo(c, pattern(big, 0))).toBe(false);
    let timeouts = 0;
    c.on('timeout', () => timeouts++);
    // net.Socket's own timeout check (what its timer calls), after libuv wrote some more.
    const onTimeout = (c as unknown as { _onTimeout(): void })._onTimeout.bind(c);
    const queued = (): number => (c as unknown as { _handle: { writeQueueSize: number } })._handle.writeQueueSize;
    const before = queued();
    expect(before).toBeGreaterThan(0);
    s.resume();
    await withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (queued() < before) {
            s.pause();
            resolve();
          } else setImmediate(check);
        };
        check();
      }),
      'some progress',
    );
    onTimeout();
    expect(timeouts, 'a write in progress').toBe(0);
    // The reader stopped: once libuv can write no more, the socket is idle and its timeout fires.
    await withTimeout(
      new Promise<void>((resolve) => {
        const poll = (): void => {
          onTimeout();
          if (timeouts > 0) resolve();
          else setTimeout(poll, 5);
        };
        poll();
      }),
      'the timeout of a stalled write',
    );
    expect(queued()).toBeGreaterThan(0);
  });

  it('ends after what libuv still holds: end() right after a queued write loses nothing', async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    s.pause();
    const big = 16 * 1024 * 1024;
    expect(writeTo(c, pattern(big, 0))).toBe(false);
    c.end();
    const got = readAll(s);
    s.resume();
    expect((await got).equals(pattern(big, 0))).toBe(true);
  });

  it('a write to a reset connection destroys the socket with the write error', async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    // Not read: the reset is found by a write, not by a read.
    c.pause();
    const closed = new Promise<Error | undefined>((resolve) => {
      let err: Error | undefined;
      c.on('error', (e) => {
        err = e;
      });
      c.once('close', () => resolve(err));
    });
    const reset = new Promise((r) => s.once('close', r));
    s.resetAndDestroy();
    await withTimeout(reset, 'the reset');
    // Written until the kernel has the reset (the first write after it may still be taken).
    for (let i = 0; i < 1000 && !c.destroyed; i++) {
      writeTo(c, pattern(1000, 0));
      await new Promise((r) => setImmediate(r));
    }
    const err = await withTimeout(closed, "the socket's close");
    expect(c.destroyed).toBe(true);
    expect((err as NodeJS.ErrnoException | undefined)?.code).toMatch(/^(EPIPE|ECONNRESET)$/);
    expect((err as NodeJS.ErrnoException | undefined)?.syscall).toBe('write');
  });

  it('a socket still connecting, or ended, takes the stream path as socket.write() does', async () => {
    const server = net.createServer((sock) => sock.pipe(sock));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const c = net.connect(port, '127.0.0.1');
    cleanups.push(() => {
      c.destroy();
      server.close();
    });
    // Not connected yet: queued by the stream, written once it is.
    expect(writeTo(c, Buffer.from('echo'))).toBe(true);
    expect(queuedBytes(c)).toBe(4);
    const echoed = await withTimeout(new Promise<Buffer>((r) => c.once('data', r)), 'the echo');
    expect(echoed.toString()).toBe('echo');
    c.end();
    const error = new Promise<Error>((r) => c.once('error', r));
    writeTo(c, Buffer.from('late'));
    expect(((await withTimeout(error, 'the error')) as NodeJS.ErrnoException).code).toBe('ERR_STREAM_WRITE_AFTER_END');
  });
});
