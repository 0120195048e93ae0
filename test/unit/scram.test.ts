import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  buildScramVerifier,
  parseScramVerifier,
  ScramClient,
  ScramError,
  ScramServer,
  scramMechanisms,
  verifyScramPassword,
  type ChannelBinding,
} from '../../src/auth/scram.js';
import { ScramSecrets } from '../../src/auth/scram-secrets.js';
import { saslPrep } from '../../src/auth/saslprep.js';
import { certificateSignatureOid, tlsServerEndPoint } from '../../src/auth/tls-binding.js';

const FIX = join(import.meta.dirname, '../fixtures/auth');

type ErrorInfo = { code: string; message: string; detail?: string };

function ok<T extends object>(r: T | { error: ErrorInfo }): Exclude<T | { error: ErrorInfo }, { error: ErrorInfo }> {
  if ('error' in r) throw new Error(`unexpected error ${r.error.code} ${r.error.message}`);
  return r as Exclude<T | { error: ErrorInfo }, { error: ErrorInfo }>;
}

function errOf(r: object): { code: string; message: string; detail?: string } {
  if (!('error' in r)) throw new Error('expected an error');
  return (r as { error: { code: string; message: string; detail?: string } }).error;
}

describe('RFC 7677 pgpool connection pooling test vector', () => {
  const salt = Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64');
  const verifier = buildScramVerifier('pencil', { salt, iterations: 4096 });

  it('client produces the RFC messages', () => {
    const c = new ScramClient({ password: 'pencil', user: 'user', nonce: 'rOprNGfwEbeRWgbNEkqO' });
    expect(c.clientFirst()).toBe('n,,n=user,r=rOprNGfwEbeRWgbNEkqO');
    const final = c.handleServerFirst(
      'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
    );
    expect(final).toBe(
      'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
    );
    expect(() => c.handleServerFinal('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).not.toThrow();
  });

  it('server produces the RFC messages', () => {
    const s = new ScramServer({ verifier, serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0' });
    const first = ok(s.handleClientFirst('n,,n=user,r=rOprNGfwEbeRWgbNEkqO'));
    expect(first.serverFirst).toBe(
      'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
    );
    const fin = ok(
      s.handleClientFinal(
        'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
      ),
    );
    expect(fin.serverFinal).toBe('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=');
    expect(s.finished).toBe(true);
  });

  it('client rejects a wrong server signature', () => {
    const c = new ScramClient({ password: 'pencil', user: 'user', nonce: 'rOprNGfwEbeRWgbNEkqO' });
    c.clientFirst();
    c.handleServerFirst('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096');
    expect(() => c.handleServerFinal('v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).toThrow(ScramError);
  });
});

describe('verifiers', () => {
  const pg = JSON.parse(readFileSync(join(FIX, 'pg15-scram-verifiers.json'), 'utf8')) as {
    cases: { role: string; password: string; note: string; verifier: string }[];
  };

  it.each(pg.cases.map((c) => [c.role, c.note, c] as const))(
    'PostgreSQL 15 verifier %s (%s) accepts its password',
    (_r, _n, c) => {
      expect(parseScramVerifier(c.verifier)).toBeDefined();
      expect(verifyScramPassword(c.password, c.verifier)).toBe(true);
      expect(verifyScramPassword(`${c.password}x`, c.verifier)).toBe(false);
    },
  );

  it('rebuilds PostgreSQL verifiers byte for byte from salt and iterations', () => {
    for (const c of pg.cases) {
      const v = parseScramVerifier(c.verifier)!;
      expect(buildScramVerifier(c.password, { salt: v.salt, iterations: v.iterations })).toBe(c.verifier);
    }
  });

  it('has PostgreSQL format: 4096 iterations, 16-byte salt, 32-byte keys', () => {
    const v = buildScramVerifier('secret');
    expect(v).toMatch(/^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/);
    const p = parseScramVerifier(v)!;
    expect(p.salt.length).toBe(16);
    expect(verifyScramPassword('secret', v)).toBe(true);
    expect(buildScramVerifier('secret')).not.toBe(v); // fresh salt
  });

  it('rejects malformed verifiers', () => {
    expect(parseScramVerifier('SCRAM-SHA-256$4096:c2FsdA==$abc:def')).toBeUndefined();
    expect(parseScramVerifier(`SCRAM-SHA-256$0:c2FsdA==$${'A'.repeat(43)}=:${'A'.repeat(43)}=`)).toBeUndefined();
    expect(parseScramVerifier('md5abc')).toBeUndefined();
  });
});

describe('SASLprep', () => {
  it.each([
    ['pencil', 'pencil'],
    ['a\u0007b', 'a\u0007b'], // pure ASCII passes unchanged, controls included
    ['I\u00adX', 'IX'],
    ['user', 'user'],
    ['USER', 'USER'],
    ['\u00aa', 'a'],
    ['\u2168', 'IX'],
    ['p\u00e4ss\u00a0w\u00f6rd', 'p\u00e4ss w\u00f6rd'],
    ['\u0627\u0628', '\u0627\u0628'],
  ])('%j -> %j', (input, out) => {
    expect(saslPrep(input)).toEqual({ ok: true, value: out });
  });

  it.each([
    ['\u00e9\u0007'], // prohibited control
    ['\u00ad'], // empty after mapping
    ['\u0627\u0031'], // RandALCat not last
    ['\u0627a\u0628'], // RandALCat with LCat
    ['\u00e9\ue000'], // private use
  ])('%j is prohibited', (input) => {
    expect(saslPrep(input)).toEqual({ ok: false, reason: 'prohibited' });
  });

  it('invalid UTF-8 is reported (the raw password is then used)', () => {
    expect(saslPrep(Buffer.from([0x61, 0xff, 0x62]))).toEqual({ ok: false, reason: 'invalid-utf8' });
  });
});

function exchange(
  server: ScramServer,
  client: ScramClient,
): { serverFinal?: string; error?: { code: string; message: string; detail?: string } } {
  const first = server.handleClientFirst(client.clientFirst(), client.mechanism);
  if ('error' in first) return { error: first.error };
  const final = server.handleClientFinal(client.handleServerFirst(first.serverFirst));
  if ('error' in final) return { error: final.error };
  client.handleServerFinal(final.serverFinal);
  return { serverFinal: final.serverFinal };
}

describe('server <-> client', () => {
  const verifier = buildScramVerifier('s3cret');

  it('round-trips with a verifier and with one derived from a clear-text password', async () => {
    expect(exchange(new ScramServer({ verifier }), new ScramClient({ password: 's3cret' })).error).toBeUndefined();
    const derived = await new ScramSecrets().verifier('u', 's3cret');
    expect(
      exchange(new ScramServer({ verifier: derived }), new ScramClient({ password: 's3cret' })).error,
    ).toBeUndefined();
  });

  it('round-trips a non-ASCII password through SASLprep', () => {
    const v = buildScramVerifier('\u2168');
    expect(exchange(new ScramServer({ verifier: v }), new ScramClient({ password: 'IX' })).error).toBeUndefined();
  });

  it('wrong password -> 28P01', () => {
    const s = new ScramServer({ verifier, user: 'alice' });
    const r = exchange(s, new ScramClient({ password: 'nope' }));
    expect(r.error).toEqual({ code: '28P01', message: 'password authentication failed for user "alice"' });
    expect(s.clientKey).toBeUndefined();
  });

  it('unknown user (no verifier) runs a doomed exchange ending in 28P01', () => {
    const mock = new ScramSecrets().mock('ghost');
    const s = new ScramServer({ user: 'ghost', mock });
    const first = ok(s.handleClientFirst('n,,n=,r=abcdef'));
    expect(first.serverFirst).toMatch(/^r=abcdef.+,s=.+,i=4096$/);
    expect(exchange(new ScramServer({ user: 'ghost', mock }), new ScramClient({ password: 'x' })).error?.code).toBe(
      '28P01',
    );
  });

  it('malformed messages -> 08P01', () => {
    expect(errOf(new ScramServer({ verifier }).handleClientFirst('x,,n=,r=abc')).code).toBe('08P01');
    expect(errOf(new ScramServer({ verifier }).handleClientFirst('n,,n=,q=abc'))).toMatchObject({
      code: '08P01',
      message: 'malformed SCRAM message',
      detail: 'Expected attribute "r" but found "q".',
    });
    expect(errOf(new ScramServer({ verifier }).handleClientFirst('n,a=bob,n=,r=abc')).code).toBe('0A000');
    const s = new ScramServer({ verifier });
    ok(s.handleClientFirst('n,,n=,r=abc'));
    expect(errOf(s.handleClientFinal('c=biws,r=abcWRONG,p=AAAA'))).toMatchObject({
      code: '08P01',
      detail: 'Nonce does not match.',
    });
  });

  it('rejects a malformed proof and trailing garbage', () => {
    const s = new ScramServer({ verifier });
    const first = ok(s.handleClientFirst('n,,n=,r=abc'));
    const nonce = /r=([^,]+)/.exec(first.serverFirst)![1]!;
    expect(errOf(s.handleClientFinal(`c=biws,r=${nonce},p=AAAA`))).toMatchObject({
      code: '08P01',
      detail: 'Malformed proof in client-final-message.',
    });
  });

  it('recovers the ClientKey and reuses it against a backend with the same verifier', () => {
    const front = new ScramServer({ verifier });
    expect(exchange(front, new ScramClient({ password: 's3cret' })).error).toBeUndefined();
    const clientKey = front.clientKey!;
    expect(clientKey.length).toBe(32);
    // the "backend" has the same pg_authid verifier
    const backend = new ScramServer({ verifier });
    expect(exchange(backend, new ScramClient({ clientKey, verifier })).error).toBeUndefined();
    // a backend with a different salt cannot be reached that way
    const other = new ScramServer({ verifier: buildScramVerifier('s3cret') });
    expect(() => exchange(other, new ScramClient({ clientKey, verifier }))).toThrow(/salt or iteration count differs/);
    // a key that does not belong to the verifier is refused up front
    expect(() => new ScramClient({ clientKey: Buffer.alloc(32), verifier })).toThrow();
  });
});

describe('channel binding', () => {
  const verifier = buildScramVerifier('pw');
  const cb: ChannelBinding = { type: 'tls-server-end-point', data: createHash('sha256').update('cert').digest() };

  it('advertises -PLUS only with TLS', () => {
    expect(scramMechanisms(false)).toEqual(['SCRAM-SHA-256']);
    expect(scramMechanisms(true)).toEqual(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']);
    expect(new ScramServer({ verifier, channelBinding: cb }).mechanisms[0]).toBe('SCRAM-SHA-256-PLUS');
  });

  it('round-trips with matching binding data', () => {
    const c = new ScramClient({ password: 'pw', channelBinding: cb });
    expect(c.mechanism).toBe('SCRAM-SHA-256-PLUS');
    expect(c.clientFirst().startsWith('p=tls-server-end-point,,n=,r=')).toBe(true);
    const s = new ScramServer({ verifier, channelBinding: cb });
    const c2 = new ScramClient({ password: 'pw', channelBinding: cb });
    expect(exchange(s, c2).error).toBeUndefined();
  });

  it('binding data mismatch -> SCRAM channel binding check failed', () => {
    const s = new ScramServer({ verifier, channelBinding: cb });
    const c = new ScramClient({
      password: 'pw',
      channelBinding: { type: 'tls-server-end-point', data: Buffer.alloc(32) },
    });
    expect(exchange(s, c).error).toEqual({ code: '08P01', message: 'SCRAM channel binding check failed' });
  });

  it('gs2 flag checks', () => {
    // PLUS selected but no binding data
    expect(
      errOf(new ScramServer({ verifier, channelBinding: cb }).handleClientFirst('n,,n=,r=abc', 'SCRAM-SHA-256-PLUS'))
        .detail,
    ).toBe('The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.');
    // binding data without PLUS
    expect(
      errOf(new ScramServer({ verifier, channelBinding: cb }).handleClientFirst('p=tls-server-end-point,,n=,r=abc'))
        .detail,
    ).toBe(
      'The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.',
    );
    // 'y' while the server does support binding: downgrade
    expect(errOf(new ScramServer({ verifier, channelBinding: cb }).handleClientFirst('y,,n=,r=abc')).message).toBe(
      'SCRAM channel binding negotiation error',
    );
    // 'y' without TLS is fine and must be echoed as eSws
    expect(
      exchange(new ScramServer({ verifier }), new ScramClient({ password: 'pw', cbindFlag: 'y' })).error,
    ).toBeUndefined();
    // unsupported binding type
    expect(
      errOf(
        new ScramServer({ verifier, channelBinding: cb }).handleClientFirst(
          'p=tls-unique,,n=,r=abc',
          'SCRAM-SHA-256-PLUS',
        ),
      ).message,
    ).toBe('unsupported SCRAM channel-binding type "tls-unique"');
    // PLUS without TLS is not a valid mechanism
    expect(
      errOf(new ScramServer({ verifier }).handleClientFirst('p=tls-server-end-point,,n=,r=abc', 'SCRAM-SHA-256-PLUS'))
        .code,
    ).toBe('08P01');
  });

  it('c= must be biws for "n"', () => {
    const s = new ScramServer({ verifier });
    const first = ok(s.handleClientFirst('n,,n=,r=abc'));
    const nonce = /r=([^,]+)/.exec(first.serverFirst)![1]!;
    expect(errOf(s.handleClientFinal(`c=eSws,r=${nonce},p=${Buffer.alloc(32).toString('base64')}`)).message).toBe(
      'unexpected SCRAM channel-binding attribute in client-final-message',
    );
  });
});

describe('tls-server-end-point', () => {
  it.each([
    ['cert-rsa-sha256.pem', '1.2.840.113549.1.1.11', 'sha256'],
    ['cert-rsa-sha1.pem', '1.2.840.113549.1.1.5', 'sha256'],
    ['cert-ec-sha384.pem', '1.2.840.10045.4.3.3', 'sha384'],
  ])('%s', (file, oid, hash) => {
    const pem = readFileSync(join(FIX, file), 'utf8');
    const x = new X509Certificate(pem);
    expect(certificateSignatureOid(x.raw)).toBe(oid);
    const expected = createHash(hash).update(x.raw).digest();
    expect(tlsServerEndPoint(x).equals(expected)).toBe(true);
    expect(tlsServerEndPoint(pem).equals(expected)).toBe(true);
  });
});
