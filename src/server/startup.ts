/**
 * A client from accept() to admission: the start-up packet (SSLRequest,
 * GSSENCRequest, PostgreSQL 17 direct TLS, CancelRequest, StartupMessage), TLS
 * negotiation, protocol version and start-up parameters, then authentication
 * (src/auth/). The whole sequence is bounded by authentication_timeout and holds
 * no num_init_children slot, so stalled or half-open clients cannot exhaust them.
 *
 * What unauthenticated clients can hold is bounded: at most
 * max_unauthenticated_connections sockets between accept() and admission (refused
 * ones included until they are closed); beyond that a new connection gets 53300 at
 * once. Each buffers at most MAX_PRE_SESSION_BYTES, and every one is destroyed at a
 * fixed deadline: authentication_timeout after accept(), or REFUSED_CLOSE_MS after its
 * FATAL error, whichever comes first; bytes it keeps sending do not extend either.
 */
import type net from 'node:net';
import { poolSettingsOf } from '../pool/pool-settings.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import {
  CANCEL_REQUEST_CODE,
  GSSENC_REQUEST_CODE,
  PROTOCOL_3_0,
  SQLSTATE,
  SSL_REQUEST_CODE,
} from '../protocol/constants.js';
import { ClientInput, refuseClient } from '../protocol/client-input.js';
import { PgError, negotiateProtocolVersion, parseStartupParams } from '../protocol/messages.js';
import type { Authenticator } from '../auth/authenticator.js';
import type { BackendSecret } from '../auth/backend.js';
import type { ClientTlsState } from '../auth/frontend.js';
import type { SessionRegistry } from '../session/registry.js';
import { wantsReplication } from '../session/replication.js';
import type { Session } from '../session/session.js';
import { upgradeClient, type ServerTls } from '../tls.js';

/** PostgreSQL's limit on a start-up packet (MAX_STARTUP_PACKET_LENGTH). */
const MAX_STARTUP_PACKET = 10000;
/**
 * What a client may have buffered before its session starts: one authentication
 * message at most (PG_MAX_AUTH_TOKEN_LENGTH), with room for what it pipelines behind.
 */
const MAX_PRE_SESSION_BYTES = 128 * 1024;
const N = Buffer.from('N');
const S = Buffer.from('S');
/** Refusals beyond max_unauthenticated_connections are logged at most once per this period (a flood is one line). */
const OVER_CAP_LOG_MS = 10_000;

/**
 * max_unauthenticated_connections as configured: -1 = 4 × the clients admitted at once
 * (num_init_children, or max_client_conn with pool_mode = transaction), 0 = no limit.
 */
export function unauthenticatedLimit(cfg: Config): number {
  const v = cfg.max_unauthenticated_connections;
  return v < 0 ? 4 * clientSlots(cfg) : v;
}

/**
 * Clients served at once: num_init_children (pgpool), or max_client_conn with pool_mode = transaction;
 * both when database_pool_settings/user_pool_settings mix the modes.
 */
export function clientSlots(cfg: Config): number {
  const s = poolSettingsOf(cfg);
  if (cfg.pool_mode === 'transaction') return cfg.max_client_conn + (s.anySession ? cfg.num_init_children : 0);
  return cfg.num_init_children + (s.anyTransaction ? cfg.max_client_conn : 0);
}

/** A client between accept() and admission. */
interface Pending {
  raw: net.Socket;
  /** Came in on the Unix-domain socket (pool_hba `local` records; no TLS there, as PostgreSQL). */
  local: boolean;
  /** The socket the protocol runs on (raw, or TLS over it). */
  socket: net.Socket;
  remote: string;
  tls: ClientTlsState | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Start-up ended (admitted, refused, closed or timed out). */
  done: boolean;
  /** The authentication exchange has started. */
  authenticating: boolean;
}

export interface StartupOptions {
  config: () => Config;
  log: Logger;
  /** Frontend TLS; undefined = SSLRequest answered 'N', direct TLS refused. */
  serverTls: ServerTls | undefined;
  auth: Authenticator;
  /** CancelRequest keys are looked up here. */
  registry: SessionRegistry<Session>;
  /** Shutting down: new clients are dropped, authenticated ones not admitted. */
  stopping: () => boolean;
  /** An authenticated client, for admission. */
  admit(
    socket: net.Socket,
    params: Map<string, string>,
    remote: string,
    secret: BackendSecret,
    input: ClientInput,
  ): void;
}

export class Startup {
  /**
   * Sockets accepted and not admitted yet, until they close: in start-up, authenticating,
   * or refused and not closed yet. Its size is what max_unauthenticated_connections bounds.
   */
  private readonly starting = new Set<net.Socket>();
  /** Connections refused for max_unauthenticated_connections since the last log line about it. */
  private overCap = { count: 0, loggedAt: 0 };

  constructor(private readonly opts: StartupOptions) {}

  /** Shutdown: drop every client still in start-up. */
  abortAll(): void {
    for (const s of this.starting) s.destroy();
  }

  /** A new client: its start-up runs in the background, ending in opts.admit() or a closed socket. */
  accept(raw: net.Socket, local: boolean): void {
    if (this.opts.stopping()) {
      raw.destroy();
      return;
    }
    const cfg = this.opts.config();
    const cap = unauthenticatedLimit(cfg);
    if (cap > 0 && this.starting.size >= cap) {
      // Refused before reading anything: the client's start-up is never buffered. libpq
      // reads an error sent in place of the answer to its SSLRequest as well.
      this.refuseOverCap(raw, cap);
      return;
    }
    if (!local) {
      raw.setNoDelay(true);
      raw.setKeepAlive(true, 60_000);
    }
    this.starting.add(raw);
    const p: Pending = {
      raw,
      local,
      socket: raw,
      remote: local ? '[local]' : `${raw.remoteAddress ?? ''}:${raw.remotePort ?? ''}`,
      tls: undefined,
      timer: undefined,
      done: false,
      authenticating: false,
    };
    const limit = cfg.authentication_timeout;
    if (limit > 0) {
      p.timer = setTimeout(() => {
        if (p.done) return;
        this.opts.log.info(
          { remote: p.remote, authentication_timeout: limit },
          p.authenticating ? 'authentication timed out' : 'no complete start-up packet within authentication_timeout',
        );
        this.refuse(
          p,
          p.authenticating
            ? new PgError(SQLSTATE.queryCanceled, 'canceling authentication due to timeout')
            : new PgError(
                SQLSTATE.protocolViolation,
                `no complete start-up packet within authentication_timeout (${limit} s)`,
              ),
        );
        p.socket.destroy();
      }, limit * 1000);
    }
    raw.on('error', (e) =>
      this.opts.log.debug({ remote: p.remote, err: e.message }, 'client socket error during start-up'),
    );
    raw.once('close', () => {
      this.endStartup(p);
      this.starting.delete(raw);
    });
    this.handshake(p).catch((e: unknown) => {
      this.opts.log.error(
        { remote: p.remote, err: e instanceof Error ? (e.stack ?? e.message) : String(e) },
        'start-up failed',
      );
      this.endStartup(p);
      raw.destroy();
    });
  }

  private refuseOverCap(raw: net.Socket, cap: number): void {
    const now = Date.now();
    this.overCap.count++;
    if (now - this.overCap.loggedAt >= OVER_CAP_LOG_MS) {
      this.opts.log.warn(
        { max_unauthenticated_connections: cap, refused: this.overCap.count },
        'connections refused: too many clients starting up or authenticating',
      );
      this.overCap = { count: 0, loggedAt: now };
    }
    refuseClient(
      raw,
      new PgError(
        SQLSTATE.tooManyConnections,
        'sorry, too many clients already',
        'FATAL',
        `${cap} connections are already starting up or authenticating (max_unauthenticated_connections).`,
      ),
    );
  }

  /** Start-up is over (admitted, refused, failed or closed): the authentication_timeout timer stops. */
  private endStartup(p: Pending): void {
    p.done = true;
    if (p.timer) clearTimeout(p.timer);
    p.timer = undefined;
  }

  /** Hand an authenticated client to admission: it no longer counts as unauthenticated. */
  private admitted(p: Pending): void {
    this.endStartup(p);
    this.starting.delete(p.raw);
  }

  private async handshake(p: Pending): Promise<void> {
    let input = new ClientInput(p.socket, MAX_PRE_SESSION_BYTES);
    let first = true;
    let sslAsked = false;
    let gssAsked = false;
    for (;;) {
      const packet = await readStartupPacket(input, first);
      first = false;
      if (p.done) {
        input.detach();
        return;
      }
      if (packet === undefined) return; // closed
      if (typeof packet === 'string') {
        // As PostgreSQL (COMMERROR): logged, not sent; the client may not even speak the protocol.
        input.detach();
        this.opts.log.info({ remote: p.remote, err: packet }, 'invalid start-up packet: connection closed');
        this.endStartup(p);
        p.socket.destroy();
        return;
      }
      if (packet === DIRECT_TLS) {
        // PostgreSQL 17 sslnegotiation=direct: a TLS ClientHello instead of a start-up packet.
        const leftover = input.detach();
        if (!this.opts.serverTls || p.local) {
          this.opts.log.info({ remote: p.remote }, 'direct TLS connection refused: ssl is not configured');
          this.endStartup(p);
          p.raw.destroy();
          return;
        }
        p.raw.unshift(leftover);
        if (!(await this.startTls(p, true))) return;
        sslAsked = true;
        gssAsked = true;
        input = new ClientInput(p.socket, MAX_PRE_SESSION_BYTES);
        first = true;
        continue;
      }
      const len = packet.length;
      const code = packet.readUInt32BE(4);
      if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
        const isSsl = code === SSL_REQUEST_CODE;
        if (len !== 8 || p.tls || (isSsl ? sslAsked : gssAsked)) {
          input.detach();
          return this.refuse(p, new PgError(SQLSTATE.protocolViolation, 'unexpected SSL or GSS negotiation request'));
        }
        if (isSsl) sslAsked = true;
        else gssAsked = true;
        if (!isSsl || !this.opts.serverTls || p.local) {
          p.socket.write(N);
          continue;
        }
        if (input.detach().length > 0) {
          // CVE-2021-23214: nothing may be buffered under the TLS handshake.
          return this.refuse(
            p,
            new PgError(
              SQLSTATE.protocolViolation,
              'received unencrypted data after SSL request',
              'FATAL',
              'This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.',
            ),
          );
        }
        p.socket.write(S);
        if (!(await this.startTls(p, false))) return;
        input = new ClientInput(p.socket, MAX_PRE_SESSION_BYTES);
        first = true;
        continue;
      }
      if (code === CANCEL_REQUEST_CODE) {
        input.detach();
        this.endStartup(p);
        // The client's connection closes once the backends got the cancel, as PostgreSQL's does
        // (libpq's PQcancel and pgjdbc wait for that close: what they send next comes after it).
        if (len === 16) await this.handleCancel(packet.readInt32BE(8), packet.readInt32BE(12), p.remote);
        p.socket.destroy();
        return;
      }
      // Whatever the client sent behind its start-up packet stays in `input`, in order.
      return this.startup(p, packet, code, input);
    }
  }

  /** TLS handshake on the client socket; false when it failed (the socket is closed). */
  private async startTls(p: Pending, direct: boolean): Promise<boolean> {
    const st = this.opts.serverTls as ServerTls;
    try {
      const limit = this.opts.config().authentication_timeout;
      const u = await upgradeClient(p.raw, st, limit > 0 ? limit * 1000 : 60_000);
      p.socket = u.socket;
      p.tls = {
        endPoint: st.endPoint,
        verifiedCN: u.verifiedCN,
        presentedCert: u.presentedCert,
        verifyError: u.verifyError,
      };
      if (direct && u.alpn !== 'postgresql') {
        this.refuse(
          p,
          new PgError(
            SQLSTATE.protocolViolation,
            'received direct SSL connection request without ALPN protocol negotiation extension',
          ),
        );
        return false;
      }
      if (p.done) {
        u.socket.destroy();
        return false;
      }
      return true;
    } catch (e) {
      this.opts.log.info({ remote: p.remote, err: (e as Error).message }, 'TLS handshake with client failed');
      this.endStartup(p);
      p.raw.destroy();
      return false;
    }
  }

  /** Forward a CancelRequest to the session it names; resolves once its backends processed it (bounded). */
  private async handleCancel(pid: number, secret: number, remote: string): Promise<void> {
    const s = this.opts.registry.find(pid, secret);
    if (!s) {
      this.opts.log.info({ remote, pid }, 'invalid cancel key');
      return;
    }
    await s.cancel();
  }

  private async startup(p: Pending, packet: Buffer, version: number, input: ClientInput): Promise<void> {
    const major = version >>> 16;
    const minor = version & 0xffff;
    if (major !== 3) {
      this.refuse(
        p,
        new PgError(
          SQLSTATE.featureNotSupported,
          `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`,
        ),
      );
      return;
    }
    const parsed = parseStartupParams(packet, 8, packet.length);
    if (parsed instanceof PgError) {
      this.refuse(p, parsed);
      return;
    }
    const params = new Map<string, string>();
    const unrecognized: string[] = [];
    for (const [k, v] of parsed) {
      if (k.startsWith('_pq_.')) unrecognized.push(k);
      else params.set(k, v);
    }
    if (minor > 0 || unrecognized.length > 0) p.socket.write(negotiateProtocolVersion(PROTOCOL_3_0, unrecognized));
    const user = params.get('user');
    if (!user) {
      this.refuse(
        p,
        new PgError(SQLSTATE.invalidAuthorizationSpecification, 'no PostgreSQL user name specified in startup packet'),
      );
      return;
    }
    if (!params.has('database')) params.set('database', user);
    if (wantsReplication(params) && !this.opts.config().allow_replication_connections) {
      this.refuse(
        p,
        new PgError(
          SQLSTATE.featureNotSupported,
          'replication connections are not allowed through this pgrelay (allow_replication_connections = off)',
          'FATAL',
          undefined,
          'Connect to the PostgreSQL server directly for replication.',
        ),
      );
      return;
    }
    p.authenticating = true;
    const auth = await this.opts.auth.authenticate({
      socket: p.socket,
      input,
      params,
      address: p.local ? undefined : p.raw.remoteAddress,
      local: p.local,
      tls: p.tls,
    });
    if (!auth || p.done || p.socket.destroyed || this.opts.stopping()) {
      this.endStartup(p);
      if (auth) p.socket.destroy();
      return;
    }
    this.admitted(p);
    this.opts.admit(p.socket, params, p.remote, auth.secret, input);
  }

  private refuse(p: Pending, err: PgError): void {
    this.endStartup(p);
    refuseClient(p.socket, err);
  }
}

const DIRECT_TLS = Symbol('direct-tls');

/**
 * The next start-up packet (Int32 length, then the rest): the packet, DIRECT_TLS when
 * the stream starts with a TLS handshake record, an error message for a bad length,
 * or undefined when the connection closed.
 */
async function readStartupPacket(
  input: ClientInput,
  first: boolean,
): Promise<Buffer | string | typeof DIRECT_TLS | undefined> {
  if (!(await input.need(1))) return undefined;
  if (first && input.bytes[0] === 0x16) return DIRECT_TLS;
  if (!(await input.need(4))) return undefined;
  const len = input.bytes.readUInt32BE(0);
  if (len < 8 || len > MAX_STARTUP_PACKET) return `invalid length of startup packet (${len} bytes)`;
  if (!(await input.need(len))) return undefined;
  return input.take(len);
}
