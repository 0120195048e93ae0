/**
 * Answers to a backend's authentication requests, for the connector: md5 from a
 * password or a stored md5 hash, SCRAM-SHA-256 as a client (src/auth/scram.ts).
 */
import { md5Response, md5ResponseFromHash } from '../auth/md5.js';
import { ScramClient, ScramError, type ScramClientOptions } from '../auth/scram.js';
import { SQLSTATE } from '../protocol/constants.js';
import { PgError } from '../protocol/messages.js';

export function md5PasswordResponse(
  user: string,
  salt: Buffer,
  password: string | undefined,
  md5Hash: string | undefined,
): string {
  if (password !== undefined && password !== '') return md5Response(password, user, salt);
  return md5ResponseFromHash(md5Hash as string, salt);
}

/** One SCRAM-SHA-256 exchange with a backend. */
export class BackendScram {
  private readonly client: ScramClient;
  /** A password, or the client's recovered ClientKey with its verifier; channel binding when over TLS. Throws on a bad key. */
  constructor(
    opts: string | Pick<ScramClientOptions, 'password' | 'clientKey' | 'verifier' | 'channelBinding' | 'cbindFlag'>,
  ) {
    this.client = new ScramClient(typeof opts === 'string' ? { password: opts } : opts);
  }
  /** SCRAM-SHA-256 or SCRAM-SHA-256-PLUS. */
  get mechanism(): string {
    return this.client.mechanism;
  }
  clientFirst(): string {
    return this.client.clientFirst();
  }
  /** Returns the client-final-message, or the error to report. */
  serverFirst(msg: string): string | PgError {
    try {
      return this.client.handleServerFirst(msg);
    } catch (e) {
      return scramFailure(e);
    }
  }
  /** Verifies the server's signature; returns an error if it does not match. */
  serverFinal(msg: string): PgError | undefined {
    try {
      this.client.handleServerFinal(msg);
      return undefined;
    } catch (e) {
      return scramFailure(e);
    }
  }
}

function scramFailure(e: unknown): PgError {
  const msg = e instanceof ScramError || e instanceof Error ? e.message : String(e);
  return new PgError(SQLSTATE.invalidPassword, `SCRAM authentication with the backend failed: ${msg}`);
}
