/**
 * The client side of authentication (src/auth/frontend.ts) over a
 * loopback socket pair: md5 with a fresh salt per challenge, SCRAM, clear
 * text, pool_hba reject / no entry, relayed trust, verify-with-backend.
 */
import net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config/defaults.js';
import { parseHba } from '../../src/auth/hba.js';
import { md5Response } from '../../src/auth/md5.js';
import { PoolPasswd } from '../../src/auth/passwd.js';
import { ScramClient, buildScramVerifier } from '../../src/auth/scram.js';
import { ScramSecrets } from '../../src/auth/scram-secrets.js';
import { ClientInput } from '../../src/protocol/client-input.js';
import { PgError } from '../../src/protocol/messages.js';
import type { BackendAuthMethod } from '../../src/auth/backend.js';
import { authenticateClient, type FrontendAuthEnv } from '../../src/auth/frontend.js';

/** What authenticateClient gets for a client on `socket`. */
function clientOf(socket: net.Socket, startup: Map<string, string>) {
  return {
    socket,
    input: new ClientInput(socket, 128 * 1024),
    params: startup,
    address: '127.0.0.1',
    local: false,
    tls: undefined,
  };
}

const sockets: net.Socket[] = [];
const servers: net.Server[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
});

function pair(): Promise<{ server: net.Socket; client: net.Socket }> {
  return new Promise((resolve) => {
    const srv = net.createServer((server) => {
      sockets.push(server);
      resolve({ server, client });
    });
    servers.push(srv);
    let client: net.Socket;
    srv.listen(0, '127.0.0.1', () => {
      client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
      sockets.push(client);
    });
  });
}

/** Reads backend messages from the client end. */
function reader(sock: net.Socket): () => Promise<{ type: string; body: Buffer }> {
  let buf = Buffer.alloc(0);
  const waiters: Array<() => void> = [];
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (const w of waiters.splice(0)) w();
  });
  return async () => {
    for (let i = 0; i < 200; i++) {
      if (buf.length >= 5 && buf.length >= 1 + buf.readUInt32BE(1)) {
        const len = buf.readUInt32BE(1);
        const m = { type: String.fromCharCode(buf[0]), body: buf.subarray(5, 1 + len) };
        buf = buf.subarray(1 + len);
        return m;
      }
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 20);
      });
    }
    throw new Error('no message');
  };
}

function pmsg(body: Buffer): Buffer {
  const b = Buffer.alloc(5 + body.length);
  b[0] = 0x70;
  b.writeUInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}
const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);

function env(
  over: Omit<Partial<FrontendAuthEnv>, 'passwd'> & { hbaText?: string; passwd?: string; method?: BackendAuthMethod },
): FrontendAuthEnv {
  const hba =
    over.hbaText !== undefined ? parseHba(over.hbaText, 'pool_hba.conf', { readInclude: () => '' }).rules : undefined;
  return {
    config: defaultConfig(),
    log: pino({ level: 'silent' }),
    hba,
    passwd: new PoolPasswd(over.passwd ?? '', { key: 'k' }),
    backendMethod: async () => over.method ?? 'trust',
    verifyWithBackend: over.verifyWithBackend ?? (async () => undefined),
    scram: over.scram,
  };
}

const params = (user: string): Map<string, string> =>
  new Map([
    ['user', user],
    ['database', 'db'],
  ]);

describe('authenticateClient', () => {
  it('md5: a fresh random salt per challenge; right answer → backend secret, wrong → 28P01', async () => {
    const salts: string[] = [];
    for (const pw of ['alicepw', 'alicepw', 'wrong']) {
      const { server, client } = await pair();
      const next = reader(client);
      const p = authenticateClient(
        clientOf(server, params('alice')),
        env({ hbaText: 'host all all 127.0.0.1/32 md5\n', passwd: 'alice:TEXTalicepw\n' }),
      );
      const r = await next();
      expect(r.type).toBe('R');
      expect(r.body.readInt32BE(0)).toBe(5);
      const salt = Buffer.from(r.body.subarray(4, 8));
      salts.push(salt.toString('hex'));
      client.write(pmsg(cstr(md5Response(pw, 'alice', salt))));
      const res = await p;
      if (pw === 'wrong') {
        expect(res).toBeUndefined();
        const e = await next();
        expect(e.type).toBe('E');
        expect(e.body.toString()).toContain('28P01');
      } else {
        expect(res?.secret).toEqual({ password: 'alicepw' });
      }
    }
    expect(new Set(salts).size).toBe(3);
  });

  it('scram-sha-256 with a stored verifier recovers the ClientKey for the backends', async () => {
    const { server, client } = await pair();
    const next = reader(client);
    const verifier = buildScramVerifier('s3cret');
    const p = authenticateClient(
      clientOf(server, params('bob')),
      env({ hbaText: 'host all all 127.0.0.1/32 scram-sha-256\n', passwd: `bob:${verifier}\n` }),
    );
    const sasl = await next();
    expect(sasl.body.readInt32BE(0)).toBe(10);
    expect(sasl.body.toString('utf8', 4)).toBe('SCRAM-SHA-256\0\0');
    const c = new ScramClient({ password: 's3cret' });
    const first = Buffer.from(c.clientFirst());
    const len = Buffer.alloc(4);
    len.writeInt32BE(first.length);
    client.write(pmsg(Buffer.concat([cstr('SCRAM-SHA-256'), len, first])));
    const cont = await next();
    expect(cont.body.readInt32BE(0)).toBe(11);
    client.write(pmsg(Buffer.from(c.handleServerFirst(cont.body.toString('utf8', 4)))));
    const fin = await next();
    expect(fin.body.readInt32BE(0)).toBe(12);
    c.handleServerFinal(fin.body.toString('utf8', 4));
    const res = await p;
    expect(res?.method).toBe('scram-sha-256');
    expect(res?.secret.scramVerifier).toBe(verifier);
    expect(res?.secret.scramClientKey?.length).toBe(32);
  });

  it('SCRAM salt: the same for a TEXT entry, an md5 entry and no entry (keyed HMAC of the user name), every time', async () => {
    const scram = new ScramSecrets();
    const offered = async (user: string, passwd: string): Promise<string> => {
      const { server, client } = await pair();
      const next = reader(client);
      const p = authenticateClient(clientOf(server, params(user)), env({ method: 'scram-sha-256', passwd, scram }));
      expect((await next()).body.readInt32BE(0)).toBe(10);
      const first = Buffer.from('n,,n=,r=abc');
      const len = Buffer.alloc(4);
      len.writeInt32BE(first.length);
      client.write(pmsg(Buffer.concat([cstr('SCRAM-SHA-256'), len, first])));
      const cont = (await next()).body.toString('utf8', 4);
      client.destroy();
      await p;
      return /,s=([^,]+),i=4096$/.exec(cont)?.[1] ?? cont;
    };
    const salt = (u: string): string => scram.salt(u).toString('base64');
    expect(await offered('alice', 'alice:TEXTpw\n')).toBe(salt('alice'));
    expect(await offered('alice', 'alice:TEXTpw\n')).toBe(salt('alice'));
    expect(await offered('alice', `alice:md5${'a'.repeat(32)}\n`)).toBe(salt('alice'));
    expect(await offered('alice', '')).toBe(salt('alice'));
    expect(scram.derivations).toBe(1);
    // A SCRAM verifier entry offers its own salt (the backend's).
    const v = buildScramVerifier('pw', { salt: Buffer.alloc(16, 3) });
    expect(await offered('carol', `carol:${v}\n`)).toBe(Buffer.alloc(16, 3).toString('base64'));
  });

  it("pool_hba reject / no entry → 28000 with pgpool's detail", async () => {
    for (const [hba, user] of [
      ['host all bob 127.0.0.1/32 reject\n', 'bob'],
      ['host all bob 127.0.0.1/32 trust\n', 'carol'],
    ]) {
      const { server, client } = await pair();
      const next = reader(client);
      const res = await authenticateClient(clientOf(server, params(user)), env({ hbaText: hba }));
      expect(res).toBeUndefined();
      const e = await next();
      expect(e.body.toString()).toContain(
        `no pool_hba.conf entry for host "127.0.0.1", user "${user}", database "db", SSL off`,
      );
      expect(e.body.toString()).toContain('28000');
    }
  });

  it('pool_hba off: relayed trust gives no password; relayed password without an entry is verified at the backend', async () => {
    {
      const { server } = await pair();
      const res = await authenticateClient(
        clientOf(server, params('x')),
        env({ method: 'trust', passwd: 'x:TEXTpw\n' }),
      );
      expect(res?.secret).toEqual({});
    }
    const seen: string[] = [];
    const verify = async (_p: Map<string, string>, s: { password?: string }): Promise<PgError | undefined> => {
      seen.push(s.password ?? '');
      return s.password === 'good' ? undefined : new PgError('28P01', 'password authentication failed for user "x"');
    };
    for (const pw of ['good', 'bad']) {
      const { server, client } = await pair();
      const next = reader(client);
      const p = authenticateClient(
        clientOf(server, params('x')),
        env({ method: 'password', verifyWithBackend: verify }),
      );
      const r = await next();
      expect(r.body.readInt32BE(0)).toBe(3);
      client.write(pmsg(cstr(pw)));
      const res = await p;
      if (pw === 'good') expect(res?.secret).toEqual({ password: 'good' });
      else expect(res).toBeUndefined();
    }
    expect(seen).toEqual(['good', 'bad']);
  });
});
