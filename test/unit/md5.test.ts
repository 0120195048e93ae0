import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  isMd5Hash,
  md5Hex,
  md5Response,
  md5ResponseFromHash,
  md5Salt,
  pgMd5Hash,
  verifyMd5Response,
} from '../../src/auth/md5.js';

describe('md5', () => {
  it('md5Hex', () => {
    expect(md5Hex('foo')).toBe('acbd18db4cc2f85cedef654fccc4a4d8');
    expect(md5Hex('')).toBe('d41d8cd98f00b204e9800998ecf8427e');
  });

  it('stored hash is md5(password || user), as pg_md5 --md5auth writes it', () => {
    // verified with pgpool's pg_md5 -m -u u pass (pgpool's pg_md5)
    expect(pgMd5Hash('pass', 'u')).toBe('md58efd6b1b8a4266d19101ebf5a346a42c');
    expect(pgMd5Hash('password', 'user')).toBe('md5' + '4d45974e13472b5a0be3533de4666414');
    expect(isMd5Hash(pgMd5Hash('x', 'y'))).toBe(true);
    expect(isMd5Hash('md5abc')).toBe(false);
  });

  it('challenge response = md5(hash-without-prefix || salt)', () => {
    const salt = Buffer.from([1, 2, 3, 4]);
    const stored = pgMd5Hash('secret', 'alice');
    const expected =
      'md5' +
      createHash('md5')
        .update(Buffer.concat([Buffer.from(stored.slice(3)), salt]))
        .digest('hex');
    expect(md5ResponseFromHash(stored, salt)).toBe(expected);
    expect(md5Response('secret', 'alice', salt)).toBe(expected);
  });

  it('verifies against a stored hash or a plain password', () => {
    const salt = md5Salt();
    const resp = md5Response('secret', 'alice', salt);
    expect(verifyMd5Response(resp, { kind: 'md5', hash: pgMd5Hash('secret', 'alice') }, 'alice', salt)).toBe(true);
    expect(verifyMd5Response(resp, { kind: 'plain', password: 'secret' }, 'alice', salt)).toBe(true);
    expect(verifyMd5Response(resp, { kind: 'plain', password: 'wrong' }, 'alice', salt)).toBe(false);
    expect(verifyMd5Response(resp, { kind: 'plain', password: 'secret' }, 'bob', salt)).toBe(false);
    expect(verifyMd5Response(resp, { kind: 'plain', password: 'secret' }, 'alice', Buffer.from([9, 9, 9, 9]))).toBe(
      false,
    );
    expect(verifyMd5Response('md5short', { kind: 'plain', password: 'secret' }, 'alice', salt)).toBe(false);
  });

  it('uses a fresh random salt per challenge', () => {
    const salts = new Set(Array.from({ length: 50 }, () => md5Salt().toString('hex')));
    expect(salts.size).toBeGreaterThan(45);
    expect(md5Salt().length).toBe(4);
  });
});
