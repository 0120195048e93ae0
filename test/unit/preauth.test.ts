/**
 * Pre-authentication limits (issue 11) without a database: refuseClient (no
 * reading after the FATAL, a fixed deadline), the backend SCRAM answer off the
 * event loop, ScramSecrets (salts from a key made at start-up, one derivation
 * per entry, PBKDF2 off the event loop).
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { BackendAuthExchange } from '../../src/auth/backend.js';
import { ScramServer, buildScramVerifier, verifyScramPassword } from '../../src/auth/scram.js';
import { ScramSecrets } from '../../src/auth/scram-secrets.js';
import { ClientInput, REFUSED_CLOSE_MS, refuseClient } from '../../src/protocol/client-input.js';
import { PgError } from '../../src/protocol/messages.js';

describe('refuseClient', () => {
  it('reads no more than one buffer after the FATAL and destroys the socket at a fixed deadline however much keeps coming', async () => {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
      const client = net.connect({
        port: (srv.address() as net.AddressInfo).port,
        host: '127.0.0.1',
        allowHalfOpen: true,
      });
      client.on('error', () => undefined);
      const server = await accepted;
      const input = new ClientInput(server, 128 * 1024);
      client.write(Buffer.alloc(100, 1));
      expect(await input.need(100)).toBe(true);
      let got = Buffer.alloc(0);
      client.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d]);
      });
      const refusedAt = Date.now();
      refuseClient(server, new PgError('28P01', 'password authentication failed for user "x"'));
      const readAtRefusal = server.bytesRead;
      // The client keeps writing, 10 kB every 50 ms.
      let written = 0;
      const tick = setInterval(() => {
        if (!client.writable) return;
        client.write(Buffer.alloc(10_000, 2));
        written += 10_000;
      }, 50);
      await new Promise<void>((r) => server.once('close', () => r()));
      clearInterval(tick);
      const closedAfter = Date.now() - refusedAt;
      client.destroy();
      // Paused: Node fills the stream's buffer once (its high-water mark, overshot by at most
      // one read of 64 kB), then leaves the rest in the kernel.
      expect(written).toBeGreaterThanOrEqual(100_000);
      expect(server.bytesRead - readAtRefusal).toBeLessThanOrEqual(server.readableHighWaterMark + 65_536);
      expect(got[0]).toBe(0x45);
      expect(got.toString('latin1')).toContain('28P01');
      expect(closedAfter).toBeGreaterThanOrEqual(REFUSED_CLOSE_MS - 50);
      // Generous: the deadline is not moved by the client's bytes (an idle timer would never fire here).
      expect(closedAfter).toBeLessThan(REFUSED_CLOSE_MS + 2000);
    } finally {
      srv.close();
    }
  });
});

describe("SCRAM with a backend: the password's PBKDF2 off the event loop", () => {
  it('answers SASLContinue with a promise whose final message the server accepts', async () => {
    const verifier = buildScramVerifier('s3cret');
    const server = new ScramServer({ verifier });
    const ex = new BackendAuthExchange({ nodeId: 0, user: 'u', secret: () => ({ password: 's3cret' }) });
    const sasl = Buffer.concat([Buffer.from([0, 0, 0, 10]), Buffer.from('SCRAM-SHA-256\0\0')]);
    const initial = ex.answer(sasl);
    expect(initial).not.toBeInstanceOf(Promise);
    const sent = (initial as { send: Buffer }).send;
    // SASLInitialResponse: 'p', length, mechanism\0, int32 length, client-first-message.
    const mechEnd = sent.indexOf(0, 5);
    const clientFirst = sent.toString('utf8', mechEnd + 5);
    const first = server.handleClientFirst(clientFirst);
    if (!('serverFirst' in first)) throw new Error(first.error.message);
    const cont = ex.answer(Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from(first.serverFirst)]));
    expect(cont).toBeInstanceOf(Promise);
    const step = (await cont) as { send: Buffer };
    const final = server.handleClientFinal(step.send.toString('utf8', 5));
    expect('serverFinal' in final).toBe(true);
  });
});

describe('ScramSecrets', () => {
  it('salts: stable per user, the same with or without an entry, different in another process', async () => {
    const s = new ScramSecrets();
    expect(s.salt('ghost').equals(s.salt('ghost'))).toBe(true);
    expect(s.salt('ghost').equals(s.salt('alice'))).toBe(false);
    const derived = await s.verifier('alice', 'pw');
    const mock = s.mock('alice');
    expect(derived.salt.equals(mock.salt)).toBe(true);
    expect(derived.iterations).toBe(mock.iterations);
    expect(derived.iterations).toBe(4096);
    expect(new ScramSecrets().salt('ghost').equals(s.salt('ghost'))).toBe(false);
  });

  it('derives a clear-text entry once, again only when its password changes; a working verifier', async () => {
    const s = new ScramSecrets();
    const vs = await Promise.all(Array.from({ length: 5 }, () => s.verifier('alice', 'pw')));
    expect(s.derivations).toBe(1);
    expect(new Set(vs).size).toBe(1);
    expect(verifyScramPassword('pw', vs[0] as NonNullable<(typeof vs)[0]>)).toBe(true);
    await s.verifier('alice', 'pw2');
    expect(s.derivations).toBe(2);
    await s.refresh(new Map([['bob', 'bobpw']]));
    expect(s.derivations).toBe(3);
    await s.verifier('bob', 'bobpw');
    expect(s.derivations).toBe(3);
  });

  it('runs PBKDF2 off the event loop', async () => {
    // Enough iterations for the derivation to take a while: the event loop must keep turning meanwhile.
    const s = new ScramSecrets(undefined, 300_000);
    let ticks = 0;
    let done = false;
    const spin = (): void => {
      ticks++;
      if (!done) setImmediate(spin);
    };
    setImmediate(spin);
    const v = await s.verifier('alice', 'pw');
    done = true;
    expect(v.iterations).toBe(300_000);
    expect(ticks).toBeGreaterThan(10);
  });
});
