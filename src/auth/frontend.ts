/**
 * Client authentication: the handshake between pgrelay and a client after its
 * StartupMessage, up to (not including) AuthenticationOk, which the Session
 * sends once it has a backend connection.
 *
 * pool_hba on (`hba` given): the first matching pool_hba.conf record decides
 * the method (trust, reject, password, md5, scram-sha-256, cert); pgrelay
 * checks the client itself, against pool_passwd.
 *
 * pool_hba off: pgrelay relays the method the primary asks for (pgpool's
 * pool_do_auth): trust → nothing; password → clear text; md5 → pgrelay's own md5
 * challenge against pool_passwd; scram-sha-256 → pgrelay's own SCRAM exchange
 * against a TEXT/AES password or SCRAM verifier in pool_passwd; with no usable
 * entry and allow_clear_text_frontend_auth = on, a clear-text password.
 *
 * Every client authenticates on every connection, whether it will get a new or
 * a cached backend connection (CVE-2025-46801 class): a clear-text password
 * pgrelay cannot check against pool_passwd is checked by logging into the
 * primary with it (`verifyWithBackend`) before the client is admitted.
 *
 * The result is the BackendSecret the session uses to answer the backends'
 * own password requests.
 *
 * No enumeration: a client cannot tell an unknown user, a user without a usable
 * pool_passwd entry and a wrong password apart. Each gets the exchange a real
 * entry would get (md5 challenge, or SCRAM with a salt from ./scram-secrets.ts)
 * and the same error, PostgreSQL's `28P01 password authentication failed for
 * user "u"` without detail; why it failed goes to the log only.
 */
import type net from 'node:net';
import { reverse } from 'node:dns/promises';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { AuthCode, SQLSTATE } from '../protocol/constants.js';
import type { ClientInput } from '../protocol/client-input.js';
import { refuseClient } from '../protocol/client-input.js';
import { PgError, authenticationRequest, readCString } from '../protocol/messages.js';
import type { BackendAuthMethod, BackendSecret } from './backend.js';
import { matchHba, noEntryError, type HbaMatchEnv, type HbaMethod, type HbaRoles, type HbaRule } from './hba.js';
import { md5Salt, pgMd5Hash, safeEqual, verifyMd5Response } from './md5.js';
import type { PasswordFor, PoolPasswd } from './passwd.js';
import { secretFromPassword } from './credentials.js';
import { ProbeAbandoned } from './method-probe.js';
import { ScramServer, parseScramVerifier, verifyScramPasswordAsync, type ScramErrorInfo } from './scram.js';
import { ScramSecrets } from './scram-secrets.js';

/** PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH: longest password / SASL message accepted. */
const MAX_AUTH_MESSAGE = 65535;
const PASSWORD_MESSAGE = 0x70; // 'p'
const TERMINATE = 0x58; // 'X'

export interface ClientTlsState {
  /** tls-server-end-point data of pgrelay's certificate (SCRAM-SHA-256-PLUS); undefined = not offered. */
  endPoint?: Buffer;
  /** CN of a client certificate that verified against ssl_ca_cert. */
  verifiedCN?: string;
  /** The client presented a certificate (verified or not). */
  presentedCert: boolean;
  /** Why the presented certificate did not verify. */
  verifyError?: string;
}

export interface ClientInfo {
  socket: net.Socket;
  /** The client's bytes since its start-up packet (authentication messages, then whatever it pipelined). */
  input: ClientInput;
  /** Start-up parameters (user and database set). */
  params: Map<string, string>;
  /** Client IP address; undefined for a Unix socket. */
  address: string | undefined;
  /** Connected over a Unix-domain socket. */
  local: boolean;
  /** Set when the connection is TLS. */
  tls: ClientTlsState | undefined;
}

export interface FrontendAuthEnv {
  config: Config;
  log: Logger;
  /** pool_hba.conf rules when enable_pool_hba is on; undefined when off. */
  hba: readonly HbaRule[] | undefined;
  passwd: PoolPasswd | undefined;
  /**
   * pool_hba off: the method the primary asks for this start-up (rejects with the server's PgError,
   * or ProbeAbandoned when the client left while waiting).
   */
  backendMethod(params: Map<string, string>): Promise<BackendAuthMethod>;
  /** Check a clear-text password pgrelay cannot check itself by logging into the primary; undefined = accepted. */
  verifyWithBackend(params: Map<string, string>, secret: BackendSecret): Promise<PgError | undefined>;
  /** SCRAM salts and derived verifiers (the Authenticator's, made at start-up; tests may omit it). */
  scram?: ScramSecrets;
  roles?: HbaRoles;
  hbaEnv?: HbaMatchEnv;
}

/** For an env without its own ScramSecrets (unit tests): one per process, like the Authenticator's. */
let processSecrets: ScramSecrets | undefined;

function scramSecrets(env: FrontendAuthEnv): ScramSecrets {
  if (env.scram) return env.scram;
  processSecrets ??= new ScramSecrets();
  return processSecrets;
}

export interface AuthSuccess {
  /** What the session answers the backends' password requests with (may be empty: no password known). */
  secret: BackendSecret;
  /** The method the client was authenticated with. */
  method: HbaMethod;
}

/** A failure to report: the error for the client, and what goes to the log only. */
class AuthFailure extends Error {
  constructor(
    readonly error: PgError,
    readonly logDetail?: string,
  ) {
    super(error.message);
  }
}

class ClientGone extends Error {}

function invalidPassword(user: string, logDetail?: string): AuthFailure {
  return new AuthFailure(
    new PgError(SQLSTATE.invalidPassword, `password authentication failed for user "${user}"`),
    logDetail,
  );
}

/** Reads the client's messages during authentication (one at a time: PasswordMessage, SASL responses). */
class AuthReader {
  constructor(private readonly input: ClientInput) {}

  /** The next PasswordMessage / SASLInitialResponse / SASLResponse body. */
  async next(expected: string): Promise<Buffer> {
    const input = this.input;
    if (!(await input.need(5))) throw new ClientGone('client closed the connection during authentication');
    const len = input.bytes.readUInt32BE(1);
    if (len < 4 || len - 4 > MAX_AUTH_MESSAGE)
      throw new AuthFailure(
        new PgError(SQLSTATE.protocolViolation, `invalid message length ${len} during authentication`),
      );
    if (!(await input.need(1 + len))) throw new ClientGone('client closed the connection during authentication');
    const m = input.take(1 + len);
    if (m[0] === TERMINATE) throw new ClientGone('client sent Terminate during authentication');
    if (m[0] !== PASSWORD_MESSAGE) {
      throw new AuthFailure(
        new PgError(SQLSTATE.protocolViolation, `expected ${expected} response, got message type ${m[0]}`),
      );
    }
    return Buffer.from(m.subarray(5));
  }
}

function sendAuth(socket: net.Socket, code: number, payload?: Buffer): void {
  if (!socket.destroyed && socket.writable) socket.write(authenticationRequest(code, payload));
}

function scramFailure(info: ScramErrorInfo): AuthFailure {
  return new AuthFailure(new PgError(info.code, info.message, 'FATAL', info.detail));
}

/** Does a clear-text password match a pool_passwd entry? (Against a SCRAM verifier: PBKDF2 off the event loop.) */
export async function passwordMatches(password: string, user: string, stored: PasswordFor): Promise<boolean> {
  switch (stored.kind) {
    case 'plain':
      return safeEqual(password, stored.password);
    case 'md5':
      return safeEqual(pgMd5Hash(password, user), stored.hash);
    case 'scram':
      return verifyScramPasswordAsync(password, stored.verifier);
  }
}

/**
 * Run the authentication exchange with the client. On success returns the
 * backend secret (nothing has been sent that ends the exchange: the caller
 * sends AuthenticationOk). On failure sends the FATAL error and closes the
 * socket (refuseClient: nothing more is read, closed at a fixed deadline), logs
 * the reason and returns undefined.
 */
export async function authenticateClient(client: ClientInfo, env: FrontendAuthEnv): Promise<AuthSuccess | undefined> {
  const reader = new AuthReader(client.input);
  const user = client.params.get('user') ?? '';
  const database = client.params.get('database') ?? user;
  let method: HbaMethod | 'relay' = 'relay';
  try {
    const r = env.hba
      ? await hbaAuth(client, env, reader, (m) => (method = m))
      : await relayAuth(client, env, reader, (m) => (method = m));
    return r;
  } catch (e) {
    const remote = client.local ? '[local]' : client.address;
    if (e instanceof ClientGone) {
      env.log.debug({ user, database, remote, method }, e.message);
      if (!client.socket.destroyed) client.socket.destroy();
      return undefined;
    }
    const f = e instanceof AuthFailure ? e : e instanceof PgError ? new AuthFailure(e) : undefined;
    if (!f) throw e;
    env.log.warn(
      {
        user,
        database,
        remote,
        ssl: client.tls !== undefined,
        method,
        code: f.error.code,
        err: f.error.message,
        detail: f.logDetail ?? f.error.detail,
      },
      'client authentication failed',
    );
    refuseClient(client.socket, f.error);
    return undefined;
  }
}

// ---------------------------------------------------------------- pool_hba on

async function hbaAuth(
  client: ClientInfo,
  env: FrontendAuthEnv,
  reader: AuthReader,
  setMethod: (m: HbaMethod) => void,
): Promise<AuthSuccess> {
  const user = client.params.get('user') ?? '';
  const database = client.params.get('database') ?? user;
  const conn = { local: client.local, ssl: client.tls !== undefined, address: client.address, database, user };
  const rule = await matchHba(
    env.hba ?? [],
    { ...conn, hostname: client.address ? () => reverse(client.address as string).then((n) => n[0]) : undefined },
    env.roles ?? { isMember: () => false },
    env.hbaEnv ?? {},
  );
  const noEntry = (): AuthFailure => {
    const e = noEntryError(conn);
    return new AuthFailure(
      new PgError(e.code, e.message, 'FATAL', e.detail, e.hint),
      rule ? `${rule.file}:${rule.line}: reject` : 'no matching record',
    );
  };
  if (!rule) throw noEntry();
  setMethod(rule.method);
  if (rule.method === 'reject') throw noEntry();

  // clientcert option (PostgreSQL 14+ spelling; 1 = verify-ca as before).
  const cc = rule.options.clientcert;
  if (rule.method !== 'cert' && cc && cc !== 'no-verify' && cc !== '0') {
    if (!client.tls?.verifiedCN && !client.tls?.presentedCert) {
      throw new AuthFailure(
        new PgError(SQLSTATE.invalidAuthorizationSpecification, 'connection requires a valid client certificate'),
      );
    }
    if (!client.tls.verifiedCN) {
      throw new AuthFailure(
        new PgError(SQLSTATE.invalidAuthorizationSpecification, 'connection requires a valid client certificate'),
        client.tls.verifyError,
      );
    }
    if (cc === 'verify-full' && client.tls.verifiedCN !== user) {
      throw new AuthFailure(
        new PgError(
          SQLSTATE.invalidAuthorizationSpecification,
          `certificate authentication failed for user "${user}"`,
          'FATAL',
          `provided user name (${user}) and authenticated user name (${client.tls.verifiedCN}) do not match`,
        ),
      );
    }
  }

  const stored = env.passwd?.getPasswordFor(user);
  switch (rule.method) {
    case 'trust':
      return { secret: secretFromPassword(stored), method: 'trust' };
    case 'cert': {
      if (!client.tls) throw noEntry(); // the parser only allows cert on hostssl; be safe
      if (!client.tls.verifiedCN) {
        throw new AuthFailure(
          new PgError(SQLSTATE.invalidAuthorizationSpecification, 'connection requires a valid client certificate'),
          client.tls.verifyError ?? 'no client certificate',
        );
      }
      if (client.tls.verifiedCN !== user) {
        throw new AuthFailure(
          new PgError(
            SQLSTATE.invalidAuthorizationSpecification,
            `certificate authentication failed for user "${user}"`,
            'FATAL',
            `provided user name (${user}) and authenticated user name (${client.tls.verifiedCN}) do not match`,
          ),
        );
      }
      return { secret: secretFromPassword(stored), method: 'cert' };
    }
    case 'password': {
      const pw = await checkClearText(client, env, reader, stored);
      return {
        secret: stored && stored.kind !== 'scram' ? { ...secretFromPassword(stored), password: pw } : { password: pw },
        method: 'password',
      };
    }
    case 'md5':
      if (!stored || stored.kind === 'scram')
        return doomed(client, env, reader, 'md5', stored ? MD5_WITH_VERIFIER : NO_ENTRY);
      await md5Exchange(client, reader, stored);
      return { secret: secretFromPassword(stored), method: 'md5' };
    case 'scram-sha-256':
      if (!stored || stored.kind === 'md5')
        return doomed(client, env, reader, 'scram-sha-256', stored ? SCRAM_WITH_MD5 : NO_ENTRY);
      return { secret: await scramExchange(client, env, reader, stored), method: 'scram-sha-256' };
  }
  throw noEntry();
}

// ---------------------------------------------------------------- pool_hba off

async function relayAuth(
  client: ClientInfo,
  env: FrontendAuthEnv,
  reader: AuthReader,
  setMethod: (m: HbaMethod) => void,
): Promise<AuthSuccess> {
  const user = client.params.get('user') ?? '';
  const stored = env.passwd?.getPasswordFor(user);
  let backend: BackendAuthMethod;
  try {
    backend = await env.backendMethod(client.params);
  } catch (e) {
    if (e instanceof ProbeAbandoned) throw new ClientGone(e.message);
    const own =
      stored && primaryUnreachable(e) && env.config.admin_users.includes(user) ? ownMethod(stored) : undefined;
    if (!own) throw e;
    // An admin must be able to get in during an outage (to attach a node, say): pool_passwd decides.
    env.log.warn(
      { user, err: (e as Error).message, method: own },
      'admin user authenticated from pool_passwd: the primary cannot be asked for its method',
    );
    backend = own;
  }
  /** No usable entry: clear text checked at the primary if allowed, else the exchange a real entry gets, failed. */
  const withoutEntry = async (method: 'md5' | 'scram-sha-256', why: string): Promise<AuthSuccess> => {
    if (!env.config.allow_clear_text_frontend_auth)
      return doomed(
        client,
        env,
        reader,
        method,
        `${why}; add the user to pool_passwd, or set allow_clear_text_frontend_auth = on`,
      );
    setMethod('password');
    return { secret: { password: await checkClearText(client, env, reader, stored) }, method: 'password' };
  };
  switch (backend) {
    case 'trust':
      setMethod('trust');
      // No password at all: if a backend asks for one later, that connection fails.
      return { secret: {}, method: 'trust' };
    case 'password':
      setMethod('password');
      return { secret: { password: await checkClearText(client, env, reader, stored) }, method: 'password' };
    case 'md5':
      if (!stored || stored.kind === 'scram') return withoutEntry('md5', stored ? MD5_WITH_VERIFIER : NO_ENTRY);
      setMethod('md5');
      await md5Exchange(client, reader, stored);
      return { secret: secretFromPassword(stored), method: 'md5' };
    case 'scram-sha-256':
      if (!stored || stored.kind === 'md5') return withoutEntry('scram-sha-256', stored ? SCRAM_WITH_MD5 : NO_ENTRY);
      setMethod('scram-sha-256');
      return { secret: await scramExchange(client, env, reader, stored), method: 'scram-sha-256' };
  }
}

/** The primary could not be asked (none known, unreachable, not accepting connections yet). */
function primaryUnreachable(e: unknown): boolean {
  if (!(e instanceof PgError)) return false;
  return (
    e.code === SQLSTATE.cannotConnectNow ||
    e.code === SQLSTATE.sqlclientUnableToEstablish ||
    e.code === SQLSTATE.connectionFailure
  );
}

/** The method a pool_passwd entry can check by itself: md5 for an md5 hash, SCRAM otherwise. */
function ownMethod(stored: PasswordFor): BackendAuthMethod {
  return stored.kind === 'md5' ? 'md5' : 'scram-sha-256';
}

const NO_ENTRY = 'no pool_passwd entry for the user';
const MD5_WITH_VERIFIER = 'the pool_passwd entry is a SCRAM verifier, which cannot do md5';
const SCRAM_WITH_MD5 =
  'the pool_passwd entry is an md5 hash, which cannot do SCRAM; store a TEXT/AES password or a SCRAM verifier';

/**
 * A login that cannot succeed (no usable pool_passwd entry) still runs the exchange a
 * real entry would get and fails as a wrong password does, so that the client cannot
 * tell which users exist or what kind of entry they have; `why` goes to the log only.
 */
async function doomed(
  client: ClientInfo,
  env: FrontendAuthEnv,
  reader: AuthReader,
  method: 'md5' | 'scram-sha-256',
  why: string,
): Promise<never> {
  const user = client.params.get('user') ?? '';
  if (method === 'md5') await md5Exchange(client, reader, undefined);
  else await scramExchange(client, env, reader, undefined, why);
  throw invalidPassword(user, why);
}

// ---------------------------------------------------------------- exchanges

async function verifyAtBackend(client: ClientInfo, env: FrontendAuthEnv, password: string): Promise<void> {
  const err = await env.verifyWithBackend(client.params, { password });
  if (!err) return;
  if (err.code === SQLSTATE.invalidPassword || err.code === SQLSTATE.invalidAuthorizationSpecification)
    throw new AuthFailure(err, 'rejected by the primary');
  throw new AuthFailure(err, 'could not verify the password with the primary');
}

/** Ask for a clear-text password and check it against pool_passwd, or at the primary when there is no entry. */
async function checkClearText(
  client: ClientInfo,
  env: FrontendAuthEnv,
  reader: AuthReader,
  stored: PasswordFor | undefined,
): Promise<string> {
  const pw = await askClearText(client, reader);
  const user = client.params.get('user') ?? '';
  if (!stored) await verifyAtBackend(client, env, pw);
  else if (!(await passwordMatches(pw, user, stored)))
    throw invalidPassword(user, 'password does not match pool_passwd');
  return pw;
}

async function askClearText(client: ClientInfo, reader: AuthReader): Promise<string> {
  sendAuth(client.socket, AuthCode.CleartextPassword);
  const body = await reader.next('password');
  const nul = body.indexOf(0);
  if (nul !== body.length - 1)
    throw new AuthFailure(new PgError(SQLSTATE.protocolViolation, 'invalid password packet size'));
  const pw = body.toString('utf8', 0, nul);
  const user = client.params.get('user') ?? '';
  if (pw.length === 0) throw invalidPassword(user, 'empty password');
  return pw;
}

/** md5 challenge with a fresh random salt; `stored` undefined = a doomed exchange. */
async function md5Exchange(client: ClientInfo, reader: AuthReader, stored: PasswordFor | undefined): Promise<void> {
  const user = client.params.get('user') ?? '';
  const salt = md5Salt();
  sendAuth(client.socket, AuthCode.MD5Password, salt);
  const body = await reader.next('password');
  const r = readCString(body, 0, body.length);
  if (!r || r[1] !== body.length)
    throw new AuthFailure(new PgError(SQLSTATE.protocolViolation, 'invalid password packet size'));
  if (!stored || stored.kind === 'scram') return;
  if (!verifyMd5Response(r[0], stored, user, salt))
    throw invalidPassword(user, 'md5 response does not match pool_passwd');
}

/**
 * SCRAM-SHA-256[-PLUS] as server; returns the backend secret (the password, or the recovered
 * ClientKey). `stored` undefined (or unusable) = a doomed exchange, `why` logged when it fails.
 */
async function scramExchange(
  client: ClientInfo,
  env: FrontendAuthEnv,
  reader: AuthReader,
  stored: PasswordFor | undefined,
  why = 'no usable pool_passwd entry',
): Promise<BackendSecret> {
  const user = client.params.get('user') ?? '';
  const endPoint = client.tls?.endPoint;
  const secrets = scramSecrets(env);
  const server = new ScramServer({
    user,
    // A clear-text entry's verifier is derived once per process (same salt every time, no PBKDF2 per attempt).
    verifier:
      stored?.kind === 'plain'
        ? await secrets.verifier(user, stored.password)
        : stored?.kind === 'scram'
          ? stored.verifier
          : undefined,
    mock: secrets.mock(user),
    channelBinding: endPoint ? { type: 'tls-server-end-point', data: endPoint } : undefined,
  });
  const mechs = Buffer.concat([...server.mechanisms.map((m) => Buffer.from(`${m}\0`)), Buffer.from([0])]);
  sendAuth(client.socket, AuthCode.SASL, mechs);
  const first = await reader.next('SASL');
  const mech = readCString(first, 0, first.length);
  if (!mech || mech[1] + 4 > first.length)
    throw new AuthFailure(new PgError(SQLSTATE.protocolViolation, 'malformed SASLInitialResponse'));
  const len = first.readInt32BE(mech[1]);
  const data = len < 0 ? '' : first.toString('utf8', mech[1] + 4, mech[1] + 4 + len);
  if (len >= 0 && mech[1] + 4 + len !== first.length)
    throw new AuthFailure(new PgError(SQLSTATE.protocolViolation, 'malformed SASLInitialResponse'));
  const r1 = server.handleClientFirst(data, mech[0]);
  if ('error' in r1) throw scramFailure(r1.error);
  sendAuth(client.socket, AuthCode.SASLContinue, Buffer.from(r1.serverFirst));
  const second = await reader.next('SASL');
  const r2 = server.handleClientFinal(second.toString('utf8'));
  if ('error' in r2) {
    if (r2.error.code === SQLSTATE.invalidPassword)
      throw new AuthFailure(
        new PgError(r2.error.code, r2.error.message),
        server.usedVerifier ? 'SCRAM proof does not match pool_passwd' : why,
      );
    throw scramFailure(r2.error);
  }
  sendAuth(client.socket, AuthCode.SASLFinal, Buffer.from(r2.serverFinal));
  if (stored?.kind === 'plain') return { password: stored.password };
  const key = server.clientKey;
  const v = server.usedVerifier;
  if (stored?.kind === 'scram' && key && v && parseScramVerifier(stored.verifier))
    return { scramClientKey: key, scramVerifier: stored.verifier };
  return {};
}
