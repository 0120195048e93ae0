/**
 * pgrelay as a client of PostgreSQL: what it logs into a backend with
 * (BackendSecret) and its side of the authentication exchange, request by
 * request: clear text, md5 from a password or a stored md5 hash, SCRAM-SHA-256
 * (with channel binding over TLS) from a password or from a client's recovered
 * ClientKey. The connector (src/pool/connector.ts) reads the Authentication
 * requests and writes what BackendAuthExchange answers.
 */
import { serialize } from 'pg-protocol';
import { AuthCode, SQLSTATE } from '../protocol/constants.js';
import { PgError, readCString } from '../protocol/messages.js';
import { md5Response, md5ResponseFromHash } from './md5.js';
import { ScramClient, ScramError } from './scram.js';
import { tlsServerEndPoint } from './tls-binding.js';

/** What pgrelay may use to answer a backend's password request. */
export interface BackendSecret {
  /** Plain password (works for cleartext, md5 and SCRAM). */
  password?: string;
  /** Stored md5 hash `md5<hex>` (works for md5 only). */
  md5Hash?: string;
  /**
   * ClientKey recovered from the client's own SCRAM proof, with the pool_passwd
   * verifier it was checked against: answers a backend's SCRAM request when the
   * backend's verifier has the same salt and iteration count (a copy of
   * pg_authid.rolpassword in pool_passwd). Memory only, per session.
   */
  scramClientKey?: Buffer;
  scramVerifier?: string;
}

/** Authentication method a backend asked for first. */
export type BackendAuthMethod = 'trust' | 'password' | 'md5' | 'scram-sha-256';

function md5PasswordResponse(user: string, salt: Buffer, password: string | undefined, md5Hash: string | undefined) {
  if (password !== undefined && password !== '') return md5Response(password, user, salt);
  return md5ResponseFromHash(md5Hash as string, salt);
}

function scramFailure(e: unknown): PgError {
  const msg = e instanceof ScramError || e instanceof Error ? e.message : String(e);
  return new PgError(SQLSTATE.invalidPassword, `SCRAM authentication with the backend failed: ${msg}`);
}

export interface BackendAuthOptions {
  nodeId: number;
  user: string;
  /** Asked when the backend wants a password; undefined means none is known. */
  secret: () => BackendSecret | undefined;
  /** Set when the connection is TLS: the server's certificate (DER) for SCRAM channel binding. */
  tls?: { peerCertificate(): Buffer | undefined };
  /** Only learn the method: answer nothing, stop at the first request. */
  probe?: boolean;
}

/**
 * What to do after an Authentication request: send a message, stop because the
 * probe learned the method, give up with an error, or nothing (wait for more).
 */
export type AuthStep = { send: Buffer } | { probed: BackendAuthMethod } | PgError | undefined;

/** pgrelay's side of one authentication exchange with a backend. */
export class BackendAuthExchange {
  /** The method the backend asked for ('trust' until it asks for a password). */
  method: BackendAuthMethod = 'trust';
  private scram: ScramClient | undefined;

  constructor(private readonly opts: BackendAuthOptions) {}

  /**
   * The answer to an Authentication message (its body, starting with the request code).
   * A promise for SASLContinue with a password: its PBKDF2 runs off the event loop. The
   * backend sends nothing more until it has that answer, so nothing is read meanwhile.
   */
  answer(body: Buffer): AuthStep | Promise<AuthStep> {
    const code = body.readInt32BE(0);
    if (code === AuthCode.Ok) return this.opts.probe && !this.scram ? { probed: this.method } : undefined;
    if (code === AuthCode.CleartextPassword) {
      this.method = 'password';
      if (this.opts.probe) return { probed: this.method };
      const s = this.opts.secret();
      if (!s?.password) return this.noPassword('cleartext password');
      return { send: serialize.password(s.password) };
    }
    if (code === AuthCode.MD5Password) {
      this.method = 'md5';
      if (this.opts.probe) return { probed: this.method };
      const s = this.opts.secret();
      if (!s || (!s.password && !s.md5Hash)) return this.noPassword('md5');
      return {
        send: serialize.password(md5PasswordResponse(this.opts.user, body.subarray(4, 8), s.password, s.md5Hash)),
      };
    }
    if (code === AuthCode.SASL) return this.saslStart(body);
    if (code === AuthCode.SASLContinue && this.scram) {
      return this.scram.handleServerFirstAsync(body.toString('utf8', 4)).then(
        (final): AuthStep => ({ send: serialize.sendSCRAMClientFinalMessage(final) }),
        (e: unknown) => scramFailure(e),
      );
    }
    if (code === AuthCode.SASLFinal && this.scram) {
      try {
        this.scram.handleServerFinal(body.toString('utf8', 4));
        return undefined;
      } catch (e) {
        return scramFailure(e);
      }
    }
    return new PgError(
      SQLSTATE.featureNotSupported,
      `backend node ${this.opts.nodeId} requested unsupported authentication method (code ${code})`,
    );
  }

  private saslStart(body: Buffer): AuthStep {
    this.method = 'scram-sha-256';
    const mechs: string[] = [];
    let p = 4;
    while (p < body.length && body[p] !== 0) {
      const r = readCString(body, p, body.length);
      if (!r) break;
      mechs.push(r[0]);
      p = r[1];
    }
    if (!mechs.includes('SCRAM-SHA-256'))
      return new PgError(
        SQLSTATE.featureNotSupported,
        `backend node ${this.opts.nodeId} offers SASL mechanisms ${mechs.join(', ')}, none supported by pgrelay`,
      );
    if (this.opts.probe) return { probed: this.method };
    const s = this.opts.secret();
    const hasKey = s?.scramClientKey !== undefined && s.scramVerifier !== undefined;
    if (!s?.password && !hasKey) return this.noPassword('SCRAM-SHA-256');
    let channelBinding: { type: 'tls-server-end-point'; data: Buffer } | undefined;
    let cbindFlag: 'n' | 'y' = 'n';
    if (this.opts.tls) {
      if (mechs.includes('SCRAM-SHA-256-PLUS')) {
        try {
          const cert = this.opts.tls.peerCertificate();
          if (cert) channelBinding = { type: 'tls-server-end-point', data: tlsServerEndPoint(cert) };
        } catch {
          channelBinding = undefined; // certificate hash unsupported: no binding, as libpq
        }
      } else cbindFlag = 'y';
    }
    try {
      this.scram = new ScramClient(
        s?.password
          ? { password: s.password, channelBinding, cbindFlag }
          : { clientKey: s!.scramClientKey, verifier: s!.scramVerifier, channelBinding, cbindFlag },
      );
    } catch (e) {
      return new PgError(
        SQLSTATE.invalidPassword,
        `SCRAM authentication with backend node ${this.opts.nodeId} failed: ${(e as Error).message}`,
      );
    }
    return { send: serialize.sendSASLInitialResponseMessage(this.scram.mechanism, this.scram.clientFirst()) };
  }

  private noPassword(kind: string): PgError {
    return new PgError(
      SQLSTATE.invalidPassword,
      `backend node ${this.opts.nodeId} requested ${kind} authentication for user "${this.opts.user}" but pgrelay has no password for it`,
      'FATAL',
      undefined,
      'Add the user to pool_passwd (pgrelay passwd) or allow trust authentication from pgrelay in pg_hba.conf.',
    );
  }
}
