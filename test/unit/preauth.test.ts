/**
 * Pre-authentication limits and secrets (issue 11) without a database:
 * MethodProbes (one probe per user, a global cap, what is shared and what is
 * not), ScramSecrets (salts from a key made at start-up, one derivation per
 * entry, PBKDF2 off the event loop), refuseClient (no reading after the FATAL,
 * a fixed deadline), the backend SCRAM answer off the event loop,
 * max_unauthenticated_connections.
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BackendAuthExchange, type BackendAuthMethod } from '../../src/auth/backend.js';
import { MAX_CONCURRENT_PROBES, MethodProbes, ProbeAbandoned, hbaDatabase } from '../../src/auth/method-probe.js';
import { ScramServer, buildScramVerifier, verifyScramPassword } from '../../src/auth/scram.js';
import { ScramSecrets } from '../../src/auth/scram-secrets.js';
import { ConfigError } from '../../src/config/issues.js';
import { loadConfig } from '../../src/config/load.js';
import { ClientInput, REFUSED_CLOSE_MS, refuseClient } from '../../src/protocol/client-input.js';
import { PgError } from '../../src/protocol/messages.js';
import { unauthenticatedLimit } from '../../src/server/startup.js';
import { tempDir } from '../support/temp-dirs.js';

function params(user: string, database: string): Map<string, string> {
  return new Map([
    ['user', user],
    ['database', database],
  ]);
}

/** A probe function whose calls stay pending until the test answers them. */
function fakePrimary() {
  const calls: Array<{
    user: string;
    database: string;
    resolve(m: BackendAuthMethod): void;
    reject(e: unknown): void;
  }> = [];
  let open = 0;
  let maxOpen = 0;
  const probe = (p: Map<string, string>): Promise<BackendAuthMethod> =>
    new Promise((resolve, reject) => {
      open++;
      maxOpen = Math.max(maxOpen, open);
      const done = (): void => {
        open--;
      };
      calls.push({
        user: p.get('user') ?? '',
        database: p.get('database') ?? '',
        resolve: (m) => {
          done();
          resolve(m);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
    });
  return {
    calls,
    probe,
    get maxOpen() {
      return maxOpen;
    },
  };
}

/** Let queued microtasks and promise callbacks run. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('MethodProbes', () => {
  it('one probe per user, shared by clients naming 200 distinct databases', async () => {
    const fake = fakePrimary();
    const probes = new MethodProbes({ probe: fake.probe });
    const waiting = Array.from({ length: 200 }, (_, i) => probes.method(params('mallory', `db${i}`)));
    await settle();
    expect(fake.calls).toHaveLength(1);
    fake.calls[0]?.resolve('scram-sha-256');
    expect(new Set(await Promise.all(waiting))).toEqual(new Set(['scram-sha-256']));
    // Cached: another database of the same user needs no probe.
    expect(await probes.method(params('mallory', 'other'))).toBe('scram-sha-256');
    expect(fake.calls).toHaveLength(1);
  });

  it(`at most MAX_CONCURRENT_PROBES (${MAX_CONCURRENT_PROBES}) open at once, the rest in order`, async () => {
    const fake = fakePrimary();
    const probes = new MethodProbes({ probe: fake.probe });
    const waiting = Array.from({ length: 50 }, (_, i) => probes.method(params(`user${i}`, 'db')));
    for (let answered = 0; answered < 50; answered++) {
      await settle();
      expect(probes.inFlight).toBeLessThanOrEqual(MAX_CONCURRENT_PROBES);
      const next = fake.calls[answered];
      expect(next?.user).toBe(`user${answered}`);
      next?.resolve('md5');
    }
    expect(await Promise.all(waiting)).toEqual(Array(50).fill('md5'));
    expect(fake.maxOpen).toBe(MAX_CONCURRENT_PROBES);
  });

  it('trust found for one database is not used for another (it gets its own probe)', async () => {
    const fake = fakePrimary();
    const probes = new MethodProbes({ probe: fake.probe });
    const a = probes.method(params('u', 'a'));
    const b = probes.method(params('u', 'b'));
    await settle();
    expect(fake.calls.map((c) => c.database)).toEqual(['a']);
    fake.calls[0]?.resolve('trust');
    expect(await a).toBe('trust');
    await settle();
    expect(fake.calls.map((c) => c.database)).toEqual(['a', 'b']);
    fake.calls[1]?.resolve('scram-sha-256');
    expect(await b).toBe('scram-sha-256');
    // Each database keeps its own answer.
    expect(await probes.method(params('u', 'a'))).toBe('trust');
    expect(fake.calls).toHaveLength(2);
  });

  it('trust found for a physical replication start-up is not used for a login to the database named as the user', async () => {
    const fake = fakePrimary();
    const probes = new MethodProbes({ probe: fake.probe });
    // Physical replication: start-up (src/server/startup.ts) set database = user, pg_hba.conf matched `replication`.
    const walsender = new Map([...params('u', 'u'), ['replication', 'true']]);
    const repl = probes.method(walsender);
    await settle();
    fake.calls[0]?.resolve('trust');
    expect(await repl).toBe('trust');
    const login = probes.method(params('u', 'u'));
    await settle();
    expect(fake.calls).toHaveLength(2);
    fake.calls[1]?.resolve('scram-sha-256');
    expect(await login).toBe('scram-sha-256');
    // Logical replication (replication=database) is matched by database name, like a login.
    expect(hbaDatabase(new Map([...params('u', 'd'), ['replication', 'database']]))).toBe('d');
    expect(hbaDatabase(new Map([...params('u', 'd'), ['replication', 'off']]))).toBe('d');
    expect(hbaDatabase(walsender)).not.toBe('u');
  });

  it("a refusal by pg_hba.conf (class 28) is the probed database's; an unreachable primary everyone's", async () => {
    const fake = fakePrimary();
    const probes = new MethodProbes({ probe: fake.probe });
    const a = probes.method(params('u', 'a'));
    const b = probes.method(params('u', 'b'));
    await settle();
    fake.calls[0]?.reject(new PgError('28000', 'no pg_hba.conf entry for host "127.0.0.1", user "u", database "a"'));
    await expect(a).rejects.toMatchObject({ code: '28000' });
    await settle();
    expect(fake.calls).toHaveLength(2);
    fake.calls[1]?.resolve('md5');
    expect(await b).toBe('md5');

    const c = probes.method(params('v', 'c'));
    const d = probes.method(params('v', 'd'));
    await settle();
    fake.calls[2]?.reject(new PgError('08001', 'could not connect to backend node 0: timeout'));
    await expect(c).rejects.toMatchObject({ code: '08001' });
    await expect(d).rejects.toMatchObject({ code: '08001' });
    expect(fake.calls).toHaveLength(3);
  });

  it('a queued probe whose clients all left never reaches the primary', async () => {
    const fake = fakePrimary();
    const probes = new MethodProbes({ probe: fake.probe });
    const busy = Array.from({ length: MAX_CONCURRENT_PROBES }, (_, i) => probes.method(params(`busy${i}`, 'db')));
    let leave: () => void = () => undefined;
    const queued = probes.method(params('gone', 'db'), {
      gone: () => false,
      onLeave: (l) => {
        leave = l;
        return () => undefined;
      },
    });
    await settle();
    leave();
    await expect(queued).rejects.toBeInstanceOf(ProbeAbandoned);
    for (const c of [...fake.calls]) c.resolve('md5');
    await Promise.all(busy);
    await settle();
    expect(fake.calls.map((c) => c.user)).not.toContain('gone');
  });

  it('answers expire', async () => {
    const fake = fakePrimary();
    let now = 0;
    const probes = new MethodProbes({ probe: fake.probe, ttlMs: 1000, now: () => now });
    const first = probes.method(params('u', 'db'));
    await settle();
    fake.calls[0]?.resolve('md5');
    await first;
    now = 999;
    expect(await probes.method(params('u', 'db'))).toBe('md5');
    now = 1000;
    const again = probes.method(params('u', 'db'));
    await settle();
    expect(fake.calls).toHaveLength(2);
    fake.calls[1]?.resolve('scram-sha-256');
    expect(await again).toBe('scram-sha-256');
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

describe('max_unauthenticated_connections', () => {
  function load(text: string) {
    const dir = tempDir('pgrelay-preauth-');
    const file = path.join(dir, 'pgpool.conf');
    writeFileSync(file, text);
    return loadConfig({ file });
  }

  it('defaults to -1, 4 × num_init_children; 0 means no limit; below -1 is refused', () => {
    const c = load('num_init_children = 10\n');
    expect(c.max_unauthenticated_connections).toBe(-1);
    expect(unauthenticatedLimit(c)).toBe(40);
    expect(unauthenticatedLimit(load('max_unauthenticated_connections = 0\n'))).toBe(0);
    expect(unauthenticatedLimit(load('max_unauthenticated_connections = 500\n'))).toBe(500);
    expect(() => load('max_unauthenticated_connections = -2\n')).toThrow(ConfigError);
    expect(() => load("max_unauthenticated_connections = 'many'\n")).toThrow(
      /invalid value for parameter "max_unauthenticated_connections"/,
    );
  });
});
