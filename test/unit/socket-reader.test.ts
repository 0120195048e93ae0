import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { readChunks, stopChunks } from '../../src/protocol/socket-reader.js';
import { socketPair } from '../support/socket-pair.js';

/** Resolves once `got()` holds at least `n` bytes (checked on each delivery). */
function until(got: () => number, n: number, socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out with ${got()} of ${n} bytes`)), 5000);
    const check = (): void => {
      if (got() >= n) {
        clearTimeout(t);
        resolve();
      } else setImmediate(check);
    };
    socket.once('close', () => reject(new Error('closed')));
    check();
  });
}

let cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups) c();
  cleanups = [];
});

describe('readChunks', () => {
  it('delivers every byte in order as owned buffers, bytes held before it first', async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    s.pause();
    c.write(Buffer.from('early-'));
    // Let the early bytes reach the accepted socket's Readable side.
    await new Promise<void>((r) => s.once('readable', () => r()));
    const chunks: Buffer[] = [];
    readChunks(s, (b) => chunks.push(b));
    s.resume();
    const big = Buffer.alloc(300_000, 7);
    c.write(big);
    const total = 6 + big.length;
    await until(() => chunks.reduce((n, b) => n + b.length, 0), total, s);
    const all = Buffer.concat(chunks);
    expect(all.subarray(0, 6).toString()).toBe('early-');
    expect(all.subarray(6).equals(big)).toBe(true);
    // Chunks are not views of one reused buffer: the first still holds its bytes.
    expect(chunks[0].subarray(0, 6).toString()).toBe('early-');
  });

  it('pause() stops delivery and resume() starts it again', async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    let got = 0;
    readChunks(s, (b) => {
      got += b.length;
      s.pause();
    });
    s.resume();
    c.write(Buffer.alloc(10, 1));
    await until(() => got, 10, s);
    c.write(Buffer.alloc(10, 2));
    // Round trip through the client: the second write has reached the server's kernel buffer by then.
    await new Promise<void>((r) => c.write(Buffer.alloc(0), () => r()));
    await new Promise<void>((r) => setTimeout(r, 50));
    expect(got).toBe(10);
    s.resume();
    await until(() => got, 20, s);
  });

  it("after stopChunks, reads go to 'data' listeners as on any socket", async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    let fast = 0;
    const consumer = (b: Buffer): void => {
      fast += b.length;
    };
    readChunks(s, consumer);
    s.resume();
    c.write('abc');
    await until(() => fast, 3, s);
    // Another consumer's stop does not stop this one.
    stopChunks(s, () => undefined);
    c.write('de');
    await until(() => fast, 5, s);
    stopChunks(s, consumer);
    const viaData: Buffer[] = [];
    s.on('data', (b: Buffer) => viaData.push(b));
    c.write('defg');
    await until(() => viaData.reduce((n, b) => n + b.length, 0), 4, s);
    expect(Buffer.concat(viaData).toString()).toBe('defg');
    expect(fast).toBe(5);
    // A second consumer takes over again.
    let again = '';
    readChunks(s, (b) => {
      again += b.toString();
    });
    c.write('hi');
    await until(() => again.length, 2, s);
    expect(again).toBe('hi');
  });

  it("ends like any socket: 'end' and 'close' when the peer closes", async () => {
    const [s, c, done] = await socketPair();
    cleanups.push(done);
    let got = '';
    readChunks(s, (b) => {
      got += b.toString();
    });
    s.resume();
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    c.end('bye');
    await closed;
    expect(got).toBe('bye');
  });
});
