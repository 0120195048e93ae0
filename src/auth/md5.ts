/**
 * PostgreSQL MD5 password authentication (AuthenticationMD5Password, R=5).
 *
 * Stored form (pg_authid / pool_passwd): 'md5' + md5hex(password || username).
 * Wire response to a 4-byte salt:          'md5' + md5hex(md5hex(password || username) || salt).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const MD5_PREFIX = 'md5';
/** Length of a stored md5 hash including the 'md5' prefix. */
export const MD5_PASSWD_LEN = 35;

/** Lower-case hex MD5 of a string (UTF-8) or bytes. */
export function md5Hex(data: string | Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

/** True for 'md5' followed by exactly 32 hex digits (what PostgreSQL and pgpool accept as an md5 hash). */
export function isMd5Hash(s: string): boolean {
  return /^md5[0-9a-fA-F]{32}$/.test(s);
}

/** The stored form: 'md5' + md5(password + user). */
export function pgMd5Hash(password: string, user: string): string {
  return MD5_PREFIX + md5Hex(Buffer.concat([Buffer.from(password, 'utf8'), Buffer.from(user, 'utf8')]));
}

/** A fresh random 4-byte salt for an AuthenticationMD5Password challenge. */
export function md5Salt(): Buffer {
  return randomBytes(4);
}

/**
 * The response to a challenge, given the stored hash ('md5…', 35 chars) and the salt:
 * 'md5' + md5(hash-without-prefix + salt).
 */
export function md5ResponseFromHash(storedHash: string, salt: Buffer): string {
  if (!isMd5Hash(storedHash)) throw new Error('not an md5 password hash');
  const inner = Buffer.from(storedHash.slice(3).toLowerCase(), 'ascii');
  return MD5_PREFIX + md5Hex(Buffer.concat([inner, salt]));
}

/** The response a client computes from its clear-text password. */
export function md5Response(password: string, user: string, salt: Buffer): string {
  return md5ResponseFromHash(pgMd5Hash(password, user), salt);
}

/** Constant-time string comparison (different lengths still cost a comparison). */
export function safeEqual(a: string, b: string): boolean {
  const ba = Buffer.from(a, 'utf8');
  const bb = Buffer.from(b, 'utf8');
  if (ba.length !== bb.length) {
    // still spend the time of a comparison
    timingSafeEqual(ba, ba);
    return false;
  }
  return timingSafeEqual(ba, bb);
}

/**
 * Verify a client's PasswordMessage answer to our MD5 challenge.
 * `stored` is either an md5 hash ('md5'+32 hex) or a clear-text password.
 */
export function verifyMd5Response(
  clientResponse: string,
  stored: { kind: 'md5'; hash: string } | { kind: 'plain'; password: string },
  user: string,
  salt: Buffer,
): boolean {
  const hash = stored.kind === 'md5' ? stored.hash : pgMd5Hash(stored.password, user);
  if (!isMd5Hash(hash)) return false;
  return safeEqual(clientResponse, md5ResponseFromHash(hash, salt));
}
