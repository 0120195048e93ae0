/**
 * SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL implements it.
 *
 *  - Passwords go through SASLprep (./saslprep.ts); invalid UTF-8 or a
 *    prohibited result means "use the raw password" (PostgreSQL's documented
 *    fallback, see preparedPasswordBytes()).
 *  - Verifiers in PostgreSQL's text form:
 *      SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
 *  - ScramServer: the proxy authenticating a client (AuthenticationSASL, R=10).
 *  - ScramClient: the proxy authenticating to a backend.
 *
 * Using the *client's* proof to log into a backend (pool_passwd holds only a
 * verifier): a verifier has StoredKey = H(ClientKey) and ServerKey but not
 * ClientKey, so the proxy cannot compute a proof by itself. During a
 * successful exchange the server side recovers ClientKey = ClientProof XOR
 * ClientSignature (that is how the proof is checked anyway) and exposes it as
 * ScramServer.clientKey. ScramClient accepts { clientKey, verifier } instead of
 * a password; this only works when the backend answers with the same salt and
 * iteration count as that verifier, i.e. when the pool_passwd verifier is a
 * copy of the backend's pg_authid.rolpassword. ScramClient checks that and
 * fails with a clear error otherwise. The recovered key is a password
 * equivalent: keep it in memory only, for the life of the session.
 */
import { createHash, createHmac, pbkdf2, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { saslPrep } from './saslprep.js';

const pbkdf2Async = promisify(pbkdf2);

export const SCRAM_SHA_256 = 'SCRAM-SHA-256';
export const SCRAM_SHA_256_PLUS = 'SCRAM-SHA-256-PLUS';
export const SCRAM_DEFAULT_ITERATIONS = 4096;
export const SCRAM_DEFAULT_SALT_LEN = 16;
/** PostgreSQL's SCRAM_RAW_NONCE_LEN. */
export const SCRAM_RAW_NONCE_LEN = 18;
const KEY_LEN = 32;

export type ChannelBinding = { type: 'tls-server-end-point'; data: Buffer };

/** An error to send to the client: SQLSTATE + message (+ detail). */
export interface ScramErrorInfo {
  code: string;
  message: string;
  detail?: string;
}

/** Thrown by ScramClient; `code` is a SQLSTATE-like classification. */
export class ScramError extends Error {
  readonly code: string;
  readonly detail: string | undefined;
  constructor(info: ScramErrorInfo) {
    super(info.detail ? `${info.message}: ${info.detail}` : info.message);
    this.name = 'ScramError';
    this.code = info.code;
    this.detail = info.detail;
  }
}

/** The bytes PostgreSQL feeds to PBKDF2: SASLprep'd password, or the raw password when prep fails. */
export function preparedPasswordBytes(password: string | Buffer): Buffer {
  const r = saslPrep(password);
  if (r.ok)
    return Buffer.isBuffer(password) && r.value === password.toString('latin1')
      ? password
      : Buffer.from(r.value, 'utf8');
  return Buffer.isBuffer(password) ? password : Buffer.from(password, 'utf8');
}

// ---------------------------------------------------------------- primitives

function hmac(key: Buffer, data: string | Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Hi(Normalize(password), salt, i) = PBKDF2-HMAC-SHA-256, 32 bytes, on the calling
 * thread: for the command-line tools only. The proxy uses scramSaltedPasswordAsync,
 * which runs on libuv's thread pool: thousands of HMACs per call would otherwise
 * stall every session's traffic for milliseconds.
 */
export function scramSaltedPassword(password: string | Buffer, salt: Buffer, iterations: number): Buffer {
  return pbkdf2Sync(preparedPasswordBytes(password), salt, iterations, KEY_LEN, 'sha256');
}

/** scramSaltedPassword off the event loop (crypto.pbkdf2 on the thread pool). */
export function scramSaltedPasswordAsync(password: string | Buffer, salt: Buffer, iterations: number): Promise<Buffer> {
  return pbkdf2Async(preparedPasswordBytes(password), salt, iterations, KEY_LEN, 'sha256');
}

export interface ScramKeys {
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

export function scramKeysFromSaltedPassword(salted: Buffer): ScramKeys {
  const clientKey = hmac(salted, 'Client Key');
  return { clientKey, storedKey: sha256(clientKey), serverKey: hmac(salted, 'Server Key') };
}

// ---------------------------------------------------------------- verifiers

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function b64decodeStrict(s: string): Buffer | undefined {
  if (!B64_RE.test(s) || s.length % 4 !== 0) return undefined;
  return Buffer.from(s, 'base64');
}

/** Parse 'SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>'; undefined when malformed (as parse_scram_secret). */
export function parseScramVerifier(text: string): ScramVerifier | undefined {
  const m = /^SCRAM-SHA-256\$(\d+):([^$:]+)\$([^$:]+):([^$:]+)$/.exec(text);
  if (!m) return undefined;
  const iterations = Number(m[1]);
  if (!Number.isSafeInteger(iterations) || iterations <= 0) return undefined;
  const salt = b64decodeStrict(m[2]!);
  const storedKey = b64decodeStrict(m[3]!);
  const serverKey = b64decodeStrict(m[4]!);
  if (!salt || salt.length === 0 || !storedKey || !serverKey) return undefined;
  if (storedKey.length !== KEY_LEN || serverKey.length !== KEY_LEN) return undefined;
  return { iterations, salt, storedKey, serverKey };
}

export function formatScramVerifier(v: ScramVerifier): string {
  return `${SCRAM_SHA_256}$${v.iterations}:${v.salt.toString('base64')}$${v.storedKey.toString('base64')}:${v.serverKey.toString('base64')}`;
}

export function isScramVerifier(text: string): boolean {
  return parseScramVerifier(text) !== undefined;
}

export function buildScramVerifierParts(
  password: string | Buffer,
  opts: { salt?: Buffer; iterations?: number } = {},
): ScramVerifier {
  const salt = opts.salt ?? randomBytes(SCRAM_DEFAULT_SALT_LEN);
  const iterations = opts.iterations ?? SCRAM_DEFAULT_ITERATIONS;
  const { storedKey, serverKey } = scramKeysFromSaltedPassword(scramSaltedPassword(password, salt, iterations));
  return { iterations, salt, storedKey, serverKey };
}

/** buildScramVerifierParts off the event loop; `salt` and `iterations` are given (the proxy's derived verifiers). */
export async function deriveScramVerifier(
  password: string | Buffer,
  salt: Buffer,
  iterations: number,
): Promise<ScramVerifier> {
  const { storedKey, serverKey } = scramKeysFromSaltedPassword(
    await scramSaltedPasswordAsync(password, salt, iterations),
  );
  return { iterations, salt, storedKey, serverKey };
}

/** A verifier in PostgreSQL's text format (4096 iterations, 16-byte random salt by default). */
export function buildScramVerifier(
  password: string | Buffer,
  opts: { salt?: Buffer; iterations?: number } = {},
): string {
  return formatScramVerifier(buildScramVerifierParts(password, opts));
}

/** Check a clear-text password against a verifier (constant-time on the key). */
export function verifyScramPassword(password: string | Buffer, verifier: string | ScramVerifier): boolean {
  const v = typeof verifier === 'string' ? parseScramVerifier(verifier) : verifier;
  if (!v) return false;
  return keysMatch(scramKeysFromSaltedPassword(scramSaltedPassword(password, v.salt, v.iterations)), v);
}

/** verifyScramPassword off the event loop: what the proxy uses for a clear-text password against a verifier. */
export async function verifyScramPasswordAsync(
  password: string | Buffer,
  verifier: string | ScramVerifier,
): Promise<boolean> {
  const v = typeof verifier === 'string' ? parseScramVerifier(verifier) : verifier;
  if (!v) return false;
  return keysMatch(scramKeysFromSaltedPassword(await scramSaltedPasswordAsync(password, v.salt, v.iterations)), v);
}

function keysMatch(keys: ScramKeys, v: ScramVerifier): boolean {
  return safeEqual(keys.storedKey, v.storedKey) && safeEqual(keys.serverKey, v.serverKey);
}

// ---------------------------------------------------------------- message parsing

/** Mechanisms to advertise in AuthenticationSASL: -PLUS first when TLS channel binding is available. */
export function scramMechanisms(tls: boolean): string[] {
  return tls ? [SCRAM_SHA_256_PLUS, SCRAM_SHA_256] : [SCRAM_SHA_256];
}

const PROTOCOL_VIOLATION = '08P01';
const FEATURE_NOT_SUPPORTED = '0A000';
const INVALID_PASSWORD = '28P01';

class ParseFail extends Error {
  constructor(readonly info: ScramErrorInfo) {
    super(info.message);
  }
}

function malformed(detail: string): ParseFail {
  return new ParseFail({ code: PROTOCOL_VIOLATION, message: 'malformed SCRAM message', detail });
}

function sanitize(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/** Cursor over a SCRAM message, mirroring PostgreSQL's read_attr_value / read_any_attr. */
class Cursor {
  pos = 0;
  constructor(readonly s: string) {}
  get rest(): string {
    return this.s.slice(this.pos);
  }
  peek(): string {
    return this.s.charAt(this.pos);
  }
  atEnd(): boolean {
    return this.pos >= this.s.length;
  }
  /** Read `attr=value` up to the next ',' (consumed). */
  attr(name: string): string {
    if (this.peek() !== name) {
      throw malformed(`Expected attribute "${name}" but found "${sanitize(this.rest.slice(0, 1))}".`);
    }
    this.pos++;
    if (this.peek() !== '=') throw malformed(`Expected character "=" for attribute "${name}".`);
    this.pos++;
    return this.value();
  }
  /** Read any `x=value`, returning [x, value]. */
  anyAttr(): [string, string] {
    const c = this.peek();
    if (!/^[A-Za-z]$/.test(c)) {
      throw malformed(`Attribute expected, but found invalid character "${sanitize(c)}".`);
    }
    this.pos++;
    if (this.peek() !== '=') throw malformed(`Expected character "=" for attribute "${c}".`);
    this.pos++;
    return [c, this.value()];
  }
  private value(): string {
    const comma = this.s.indexOf(',', this.pos);
    const end = comma < 0 ? this.s.length : comma;
    const v = this.s.slice(this.pos, end);
    this.pos = comma < 0 ? this.s.length : comma + 1;
    return v;
  }
}

const PRINTABLE_RE = /^[\x21-\x2b\x2d-\x7e]+$/; // printable ASCII except ','

/** RFC 5802 saslname escaping: ',' -> '=2C', '=' -> '=3D'. */
function saslName(s: string): string {
  return s.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

function gs2Header(flag: 'n' | 'y' | 'p'): string {
  return flag === 'p' ? 'p=tls-server-end-point,,' : `${flag},,`;
}

// ---------------------------------------------------------------- server

export interface ScramServerOptions {
  /**
   * The verifier to check the client against: a stored one (text or parsed), or one
   * derived from a clear-text password (./scram-secrets.ts; never made here, so that
   * no PBKDF2 runs on the event loop). Unparsable or absent: the exchange is doomed.
   */
  verifier?: string | ScramVerifier;
  /**
   * Required when `verifier` may be absent: the salt and iteration count offered in a
   * doomed exchange (ScramSecrets.mock: derived from the user name with a secret key).
   */
  mock?: ScramVerifier;
  /** Set when the client connection is TLS: enables SCRAM-SHA-256-PLUS. */
  channelBinding?: ChannelBinding;
  /** User name, for the error message only. */
  user?: string;
  /** For tests only: fixed server nonce part (default: 18 random bytes, base64). */
  serverNonce?: string;
}

type ServerState = 'init' | 'first-done' | 'finished' | 'failed';

/**
 * Server side of SCRAM-SHA-256 (the proxy as server to a client).
 *
 * Without a usable verifier (unknown user, or an entry that cannot do SCRAM such
 * as an md5 hash) the exchange still runs with the caller's mock verifier (a salt
 * and iteration count that look like a real entry's) and fails at the proof, as
 * PostgreSQL's "doomed" exchange, so clients cannot probe which users exist.
 */
export class ScramServer {
  private readonly verifier: ScramVerifier;
  private readonly doomed: boolean;
  private readonly cb: ChannelBinding | undefined;
  private readonly user: string | undefined;
  private state: ServerState = 'init';
  private cbindFlag: 'n' | 'y' | 'p' = 'n';
  private clientFirstBare = '';
  private serverFirst = '';
  private nonce = '';
  private recovered: Buffer | undefined;
  private readonly fixedServerNonce: string | undefined;

  constructor(opts: ScramServerOptions) {
    this.cb = opts.channelBinding;
    this.fixedServerNonce = opts.serverNonce;
    this.user = opts.user;
    const v = typeof opts.verifier === 'string' ? parseScramVerifier(opts.verifier) : opts.verifier;
    if (v) {
      this.verifier = v;
      this.doomed = false;
    } else if (opts.mock) {
      this.verifier = opts.mock;
      this.doomed = true;
    } else {
      throw new Error('ScramServer needs a verifier, or a mock verifier for a doomed exchange');
    }
  }

  /** Mechanisms to list in AuthenticationSASL. */
  get mechanisms(): string[] {
    return scramMechanisms(this.cb !== undefined);
  }

  /** ClientKey recovered from the client's proof, available after a successful handleClientFinal. */
  get clientKey(): Buffer | undefined {
    return this.recovered;
  }

  /** The verifier the exchange ran against (its salt/iterations/ServerKey, e.g. for ScramClient with a clientKey). */
  get usedVerifier(): ScramVerifier | undefined {
    return this.doomed ? undefined : this.verifier;
  }

  get finished(): boolean {
    return this.state === 'finished';
  }

  private fail(info: ScramErrorInfo): { error: ScramErrorInfo } {
    this.state = 'failed';
    return { error: info };
  }

  private authFailed(): { error: ScramErrorInfo } {
    return this.fail({
      code: INVALID_PASSWORD,
      message:
        this.user !== undefined
          ? `password authentication failed for user "${this.user}"`
          : 'password authentication failed',
    });
  }

  /**
   * Handle SASLInitialResponse. `mechanism` is the name the client selected
   * (default SCRAM-SHA-256); `msg` the client-first-message.
   */
  handleClientFirst(
    msg: string,
    mechanism: string = SCRAM_SHA_256,
  ): { serverFirst: string } | { error: ScramErrorInfo } {
    if (this.state !== 'init')
      return this.fail({ code: PROTOCOL_VIOLATION, message: 'unexpected SCRAM client-first-message' });
    if (mechanism !== SCRAM_SHA_256 && !(mechanism === SCRAM_SHA_256_PLUS && this.cb)) {
      return this.fail({
        code: PROTOCOL_VIOLATION,
        message: 'client selected an invalid SASL authentication mechanism',
      });
    }
    const cbindInUse = mechanism === SCRAM_SHA_256_PLUS;
    try {
      const c = new Cursor(msg);
      const flag = c.peek();
      if (flag === 'n' || flag === 'y') {
        if (cbindInUse) {
          throw malformed(
            'The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.',
          );
        }
        if (flag === 'y' && this.cb) {
          throw new ParseFail({
            code: PROTOCOL_VIOLATION,
            message: 'SCRAM channel binding negotiation error',
            detail:
              'The client supports SCRAM channel binding but thinks the server does not.  However, this server does support channel binding.',
          });
        }
        c.pos++;
        if (c.peek() !== ',') throw malformed(`Comma expected, but found character "${sanitize(c.peek())}".`);
        c.pos++;
        this.cbindFlag = flag;
      } else if (flag === 'p') {
        if (!cbindInUse) {
          throw malformed(
            'The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.',
          );
        }
        const type = c.attr('p');
        if (type !== 'tls-server-end-point') {
          throw new ParseFail({
            code: PROTOCOL_VIOLATION,
            message: `unsupported SCRAM channel-binding type "${sanitize(type)}"`,
          });
        }
        this.cbindFlag = 'p';
      } else {
        throw malformed(`Unexpected channel-binding flag "${sanitize(flag)}".`);
      }
      if (c.peek() === 'a') {
        throw new ParseFail({
          code: FEATURE_NOT_SUPPORTED,
          message: 'client uses authorization identity, but it is not supported',
        });
      }
      if (c.peek() !== ',') throw malformed(`Unexpected attribute "${sanitize(c.peek())}" in client-first-message.`);
      c.pos++;
      this.clientFirstBare = c.rest;
      if (c.peek() === 'm') {
        throw new ParseFail({ code: FEATURE_NOT_SUPPORTED, message: 'client requires an unsupported SCRAM extension' });
      }
      c.attr('n'); // user name: ignored, the startup packet's user is authoritative (as PostgreSQL)
      const clientNonce = c.attr('r');
      if (!PRINTABLE_RE.test(clientNonce)) throw malformed('The client nonce contains invalid characters.');
      while (!c.atEnd()) c.anyAttr();
      this.nonce = clientNonce + (this.fixedServerNonce ?? randomBytes(SCRAM_RAW_NONCE_LEN).toString('base64'));
      this.serverFirst = `r=${this.nonce},s=${this.verifier.salt.toString('base64')},i=${this.verifier.iterations}`;
      this.state = 'first-done';
      return { serverFirst: this.serverFirst };
    } catch (e) {
      if (e instanceof ParseFail) return this.fail(e.info);
      throw e;
    }
  }

  /** Handle the client-final-message (SASLResponse). On success, send `serverFinal` in AuthenticationSASLFinal. */
  handleClientFinal(msg: string): { serverFinal: string } | { error: ScramErrorInfo } {
    if (this.state !== 'first-done')
      return this.fail({ code: PROTOCOL_VIOLATION, message: 'unexpected SCRAM client-final-message' });
    try {
      const c = new Cursor(msg);
      const cbind = c.attr('c');
      if (this.cbindFlag === 'p') {
        const expected = Buffer.concat([Buffer.from(gs2Header('p')), this.cb!.data]).toString('base64');
        if (cbind !== expected) {
          throw new ParseFail({ code: PROTOCOL_VIOLATION, message: 'SCRAM channel binding check failed' });
        }
      } else {
        const expected = this.cbindFlag === 'y' ? 'eSws' : 'biws';
        if (cbind !== expected) {
          throw new ParseFail({
            code: PROTOCOL_VIOLATION,
            message: 'unexpected SCRAM channel-binding attribute in client-final-message',
          });
        }
      }
      const nonce = c.attr('r');
      if (nonce !== this.nonce) throw malformed('Nonce does not match.');
      let proofStart: number;
      let proofB64: string;
      for (;;) {
        if (c.atEnd()) throw malformed('Could not find proof in client-final-message.');
        proofStart = c.pos;
        const [name, value] = c.anyAttr();
        if (name === 'p') {
          proofB64 = value;
          break;
        }
      }
      if (!c.atEnd() || msg.endsWith(',')) throw malformed('Garbage found at the end of client-final-message.');
      const proof = b64decodeStrict(proofB64);
      if (!proof || proof.length !== KEY_LEN) throw malformed('Malformed proof in client-final-message.');
      const withoutProof = msg.slice(0, proofStart - 1);
      const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
      const clientSignature = hmac(this.verifier.storedKey, authMessage);
      const clientKey = xor(proof, clientSignature);
      // The proof is checked in a doomed exchange too (PostgreSQL's order): same work, same timing.
      const matches = safeEqual(sha256(clientKey), this.verifier.storedKey);
      if (!matches || this.doomed) return this.authFailed();
      this.recovered = clientKey;
      this.state = 'finished';
      return { serverFinal: `v=${hmac(this.verifier.serverKey, authMessage).toString('base64')}` };
    } catch (e) {
      if (e instanceof ParseFail) return this.fail(e.info);
      throw e;
    }
  }
}

// ---------------------------------------------------------------- client

export interface ScramClientOptions {
  password?: string | Buffer;
  /**
   * ClientKey recovered by ScramServer from the client's proof. Requires
   * `verifier` (the pool_passwd verifier it was checked against): the backend
   * must use the same salt and iterations, and its ServerKey verifies the
   * backend's signature.
   */
  clientKey?: Buffer;
  verifier?: string | ScramVerifier;
  /** TLS to the backend and the server advertised SCRAM-SHA-256-PLUS: bind to its certificate. */
  channelBinding?: ChannelBinding;
  /** Without channelBinding: 'y' if we support binding but the server did not offer -PLUS over TLS; default 'n'. */
  cbindFlag?: 'n' | 'y';
  /** User name for the n= attribute; default '' as libpq (the startup packet's user counts). */
  user?: string;
  /** For tests only: fixed client nonce. */
  nonce?: string;
}

/** What a server-first-message offers: the combined nonce, the salt and the iteration count. */
interface ServerOffer {
  nonce: string;
  salt: Buffer;
  iterations: number;
}

/** Client side of SCRAM-SHA-256 (the proxy logging into a backend). */
export class ScramClient {
  private readonly opts: ScramClientOptions;
  private readonly flag: 'n' | 'y' | 'p';
  private readonly clientNonce: string;
  private readonly fixedVerifier: ScramVerifier | undefined;
  private clientFirstBare = '';
  private expectedServerSignature: Buffer | undefined;
  private state: 'init' | 'first-sent' | 'final-sent' | 'done' = 'init';

  constructor(opts: ScramClientOptions) {
    if (opts.password === undefined && opts.clientKey === undefined) {
      throw new Error('ScramClient needs a password or a clientKey');
    }
    this.opts = opts;
    if (opts.clientKey !== undefined) {
      const v = typeof opts.verifier === 'string' ? parseScramVerifier(opts.verifier) : opts.verifier;
      if (!v) throw new Error('ScramClient with a clientKey needs the SCRAM verifier it belongs to');
      if (!safeEqual(sha256(opts.clientKey), v.storedKey)) throw new Error('clientKey does not match the verifier');
      this.fixedVerifier = v;
    }
    this.flag = opts.channelBinding ? 'p' : (opts.cbindFlag ?? 'n');
    this.clientNonce = opts.nonce ?? randomBytes(SCRAM_RAW_NONCE_LEN).toString('base64');
  }

  /** Mechanism name for SASLInitialResponse. */
  get mechanism(): string {
    return this.flag === 'p' ? SCRAM_SHA_256_PLUS : SCRAM_SHA_256;
  }

  /** client-first-message (the user name is left empty, as libpq does: the startup packet's user counts). */
  clientFirst(): string {
    if (this.state !== 'init') throw new Error('clientFirst() already called');
    this.clientFirstBare = `n=${saslName(this.opts.user ?? '')},r=${this.clientNonce}`;
    this.state = 'first-sent';
    return gs2Header(this.flag) + this.clientFirstBare;
  }

  /**
   * Handle the server-first-message; returns the client-final-message. With a password
   * this runs PBKDF2 on the calling thread: the proxy uses handleServerFirstAsync.
   */
  handleServerFirst(msg: string): string {
    const offer = this.readServerFirst(msg);
    return this.clientFinal(msg, offer, this.keysFor(offer) ?? this.passwordKeysSync(offer));
  }

  /** handleServerFirst with the PBKDF2 of a password off the event loop. */
  async handleServerFirstAsync(msg: string): Promise<string> {
    const offer = this.readServerFirst(msg);
    const keys =
      this.keysFor(offer) ??
      scramKeysFromSaltedPassword(
        await scramSaltedPasswordAsync(this.opts.password as string | Buffer, offer.salt, offer.iterations),
      );
    return this.clientFinal(msg, offer, keys);
  }

  private readServerFirst(msg: string): ServerOffer {
    if (this.state !== 'first-sent') throw new Error('unexpected server-first-message');
    let nonce: string;
    let salt: Buffer | undefined;
    let iterations: number;
    try {
      const c = new Cursor(msg);
      if (c.peek() === 'm') throw malformed('server requires an unsupported SCRAM extension');
      nonce = c.attr('r');
      const saltB64 = c.attr('s');
      const iterStr = c.attr('i');
      salt = b64decodeStrict(saltB64);
      iterations = /^\d+$/.test(iterStr) ? Number(iterStr) : NaN;
    } catch (e) {
      if (e instanceof ParseFail) throw new ScramError(e.info);
      throw e;
    }
    if (!nonce.startsWith(this.clientNonce) || nonce.length <= this.clientNonce.length || !PRINTABLE_RE.test(nonce)) {
      throw new ScramError({ code: PROTOCOL_VIOLATION, message: 'invalid SCRAM response (nonce mismatch)' });
    }
    if (!salt || salt.length === 0)
      throw new ScramError({ code: PROTOCOL_VIOLATION, message: 'malformed SCRAM message (invalid salt)' });
    if (!Number.isSafeInteger(iterations) || iterations < 1) {
      throw new ScramError({ code: PROTOCOL_VIOLATION, message: 'malformed SCRAM message (invalid iteration count)' });
    }
    return { nonce, salt, iterations };
  }

  /** The keys from a recovered ClientKey (no PBKDF2), or undefined when a password is used. */
  private keysFor(offer: ServerOffer): ScramKeys | undefined {
    const v = this.fixedVerifier;
    if (!v) return undefined;
    if (!v.salt.equals(offer.salt) || v.iterations !== offer.iterations) {
      throw new ScramError({
        code: INVALID_PASSWORD,
        message: "cannot authenticate to the backend with the client's SCRAM proof",
        detail:
          "the backend's SCRAM salt or iteration count differs from the verifier in pool_passwd; store the backend's own verifier, or a TEXT/AES password",
      });
    }
    return { clientKey: this.opts.clientKey as Buffer, storedKey: v.storedKey, serverKey: v.serverKey };
  }

  private passwordKeysSync(offer: ServerOffer): ScramKeys {
    return scramKeysFromSaltedPassword(
      scramSaltedPassword(this.opts.password as string | Buffer, offer.salt, offer.iterations),
    );
  }

  private clientFinal(msg: string, offer: ServerOffer, keys: ScramKeys): string {
    const cbindInput =
      this.flag === 'p'
        ? Buffer.concat([Buffer.from(gs2Header('p')), this.opts.channelBinding!.data])
        : Buffer.from(gs2Header(this.flag));
    const withoutProof = `c=${cbindInput.toString('base64')},r=${offer.nonce}`;
    const authMessage = `${this.clientFirstBare},${msg},${withoutProof}`;
    const proof = xor(keys.clientKey, hmac(keys.storedKey, authMessage));
    this.expectedServerSignature = hmac(keys.serverKey, authMessage);
    this.state = 'final-sent';
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Verify the server-final-message; throws on a server error or a bad signature. */
  handleServerFinal(msg: string): void {
    if (this.state !== 'final-sent') throw new Error('unexpected server-final-message');
    if (msg.startsWith('e=')) {
      throw new ScramError({
        code: INVALID_PASSWORD,
        message: `SCRAM authentication failed: ${sanitize(msg.slice(2))}`,
      });
    }
    let sig: Buffer | undefined;
    try {
      const c = new Cursor(msg);
      sig = b64decodeStrict(c.attr('v'));
    } catch (e) {
      if (e instanceof ParseFail) throw new ScramError(e.info);
      throw e;
    }
    if (!sig || !safeEqual(sig, this.expectedServerSignature!)) {
      throw new ScramError({ code: INVALID_PASSWORD, message: 'incorrect server signature' });
    }
    this.state = 'done';
  }
}
