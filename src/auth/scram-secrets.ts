/**
 * What pgrelay offers a client in a SCRAM exchange when it plays the server: a
 * salt and an iteration count, which anyone can ask for without credentials. They
 * must not tell who exists or what kind of pool_passwd entry a user has:
 *
 *  - A TEXT/AES/plain entry gets one verifier per process, derived once from the
 *    password (PBKDF2 off the event loop) and reused for every exchange: the salt
 *    is the same on every attempt, like a stored verifier's, and an attempt costs
 *    no PBKDF2 (unauthenticated clients cannot make pgrelay hash at their rate).
 *  - A user with no usable entry (unknown, or an md5 hash) gets a mock verifier,
 *    as PostgreSQL's doomed exchange (its mock salt is SHA-256 of the user name and
 *    a secret nonce made at initdb): here HMAC-SHA-256 of the user name under a
 *    random key made when pgrelay starts, so it is stable for the process but
 *    nobody can compute it, and it differs between two pgrelays.
 *  - Derived and mock verifiers use the same salt function and the same
 *    iteration count (4096, PostgreSQL's default, which the mock exchange of
 *    PostgreSQL uses too), so the two are indistinguishable. An iteration count
 *    varied per user would itself set unknown users apart from TEXT entries.
 *
 * A SCRAM verifier copied from pg_authid keeps its own salt and iteration count
 * (the backend's: they must match for the client's proof to log into it).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { SCRAM_DEFAULT_ITERATIONS, SCRAM_DEFAULT_SALT_LEN, deriveScramVerifier, type ScramVerifier } from './scram.js';

/** The key's length: as SHA-256's block of output, more than any salt needs. */
const KEY_LEN = 32;

export class ScramSecrets {
  /** Derived verifiers by user, with the password they were derived from (a changed password derives again). */
  private readonly derived = new Map<string, { password: string; verifier: Promise<ScramVerifier> }>();
  /** PBKDF2 derivations started (for tests: once per user and password). */
  derivations = 0;
  /**
   * StoredKey and ServerKey of every mock verifier: nobody can match them, and a doomed
   * exchange never sends anything made from them, so one pair serves every user.
   */
  private readonly mockKeys: { storedKey: Buffer; serverKey: Buffer };

  constructor(
    /** Secret: made at start-up, never leaves the process. */
    private readonly key: Buffer = randomBytes(KEY_LEN),
    private readonly iterations: number = SCRAM_DEFAULT_ITERATIONS,
  ) {
    this.mockKeys = { storedKey: this.mac('stored-key', ''), serverKey: this.mac('server-key', '') };
  }

  private mac(label: string, user: string): Buffer {
    return createHmac('sha256', this.key).update(`${label}\u0000${user}`).digest();
  }

  /** The salt offered to `user` whether or not pool_passwd has a clear-text entry for it. */
  salt(user: string): Buffer {
    return this.mac('salt', user).subarray(0, SCRAM_DEFAULT_SALT_LEN);
  }

  /** For a doomed exchange: the salt and iteration count a derived verifier would have; keys nobody can match. */
  mock(user: string): ScramVerifier {
    return { iterations: this.iterations, salt: this.salt(user), ...this.mockKeys };
  }

  /** The verifier for a clear-text pool_passwd entry: derived once (off the event loop), then reused. */
  verifier(user: string, password: string): Promise<ScramVerifier> {
    const hit = this.derived.get(user);
    if (hit && hit.password === password) return hit.verifier;
    this.derivations++;
    const verifier = deriveScramVerifier(password, this.salt(user), this.iterations);
    const entry = { password, verifier };
    this.derived.set(user, entry);
    // A failed derivation is not kept: the next attempt tries again.
    verifier.catch(() => {
      if (this.derived.get(user) === entry) this.derived.delete(user);
    });
    return verifier;
  }

  /**
   * After pool_passwd was (re)loaded: forget users no longer there, and derive the
   * verifiers of the clear-text entries in the background, one at a time, so that
   * not even a user's first exchange waits for (or reveals by its timing) a PBKDF2.
   */
  refresh(entries: ReadonlyMap<string, string>): Promise<void> {
    for (const [user, d] of this.derived) if (entries.get(user) !== d.password) this.derived.delete(user);
    const pending = [...entries].filter(([user, pw]) => this.derived.get(user)?.password !== pw);
    return (async () => {
      for (const [user, pw] of pending) await this.verifier(user, pw).catch(() => undefined);
    })();
  }
}
