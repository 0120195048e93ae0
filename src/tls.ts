/**
 * TLS for both sides of the proxy.
 *
 * Frontend: `ssl = on` plus ssl_key/ssl_cert (without them frontend TLS stays
 * off, as pgpool) builds one SecureContext from ssl_* settings; a client socket
 * is upgraded after an SSLRequest ('S') or directly when its first byte is a
 * TLS handshake (PostgreSQL 17 sslnegotiation=direct, ALPN "postgresql"
 * required). The tls-server-end-point hash of our certificate is kept for
 * SCRAM-SHA-256-PLUS.
 *
 * Backend: `backend_ssl_mode` (libpq's sslmode values) decides whether the
 * connector sends an SSLRequest and what it verifies.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Config } from './config/types.js';
import { tlsServerEndPoint } from './auth/tls-binding.js';

export const PG_ALPN = 'postgresql';

export interface ServerTls {
  context: tls.SecureContext;
  /** A client certificate is requested (ssl_ca_cert set) so `cert` auth / clientcert can work. */
  requestCert: boolean;
  /** tls-server-end-point channel-binding data for our certificate. */
  endPoint: Buffer | undefined;
}

const VERSIONS: Record<string, tls.SecureVersion> = {
  tlsv1: 'TLSv1',
  'tlsv1.1': 'TLSv1.1',
  'tlsv1.2': 'TLSv1.2',
  'tlsv1.3': 'TLSv1.3',
};

/** Run ssl_passphrase_command (%p = prompt, %% = %), first line of its output. */
export function runPassphraseCommand(cmd: string, keyFile: string): string {
  const prompt = `Enter PEM pass phrase for "${keyFile}":`;
  const expanded = cmd.replace(/%(.)/g, (_m, c: string) =>
    c === 'p' ? shellQuote(prompt) : c === '%' ? '%' : `%${c}`,
  );
  const out = execFileSync('/bin/sh', ['-c', expanded], {
    timeout: 30_000,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return out.split('\n')[0] ?? '';
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The frontend TLS context, or undefined when TLS is off (ssl = off, or ssl_key /
 * ssl_cert empty). Throws when the files cannot be loaded or do not match.
 */
export function buildServerTls(cfg: Config): ServerTls | undefined {
  if (!cfg.ssl || !cfg.ssl_key || !cfg.ssl_cert) return undefined;
  const certPem = readFileSync(cfg.ssl_cert);
  const keyPem = readFileSync(cfg.ssl_key);
  const opts: tls.SecureContextOptions = {
    cert: certPem,
    key: keyPem,
    minVersion: VERSIONS[cfg.ssl_min_protocol_version] ?? 'TLSv1.2',
    honorCipherOrder: cfg.ssl_prefer_server_ciphers,
  };
  if (cfg.ssl_max_protocol_version) opts.maxVersion = VERSIONS[cfg.ssl_max_protocol_version];
  if (cfg.ssl_ciphers) opts.ciphers = cfg.ssl_ciphers;
  if (cfg.ssl_ecdh_curve) opts.ecdhCurve = cfg.ssl_ecdh_curve;
  if (cfg.ssl_dh_params_file) opts.dhparam = readFileSync(cfg.ssl_dh_params_file);
  if (cfg.ssl_ca_cert) opts.ca = readFileSync(cfg.ssl_ca_cert);
  if (cfg.ssl_crl_file) opts.crl = readFileSync(cfg.ssl_crl_file);
  if (cfg.ssl_passphrase_command && /ENCRYPTED/.test(keyPem.toString('latin1'))) {
    opts.passphrase = runPassphraseCommand(cfg.ssl_passphrase_command, cfg.ssl_key);
  }
  const context = tls.createSecureContext(opts);
  let endPoint: Buffer | undefined;
  try {
    endPoint = tlsServerEndPoint(new X509Certificate(certPem));
  } catch {
    endPoint = undefined; // channel binding is then not offered
  }
  return { context, requestCert: cfg.ssl_ca_cert !== '', endPoint };
}

export interface UpgradedClient {
  socket: tls.TLSSocket;
  /** CN of a client certificate that verified against ssl_ca_cert (and the CRL). */
  verifiedCN: string | undefined;
  /** A client certificate was presented (verified or not). */
  presentedCert: boolean;
  verifyError: string | undefined;
  alpn: string | false;
}

/**
 * TLS handshake as server on an accepted socket (any bytes already read must
 * have been unshift()ed back). Rejects on a handshake error or after timeoutMs.
 */
export function upgradeClient(socket: net.Socket, st: ServerTls, timeoutMs: number): Promise<UpgradedClient> {
  return new Promise((resolve, reject) => {
    const t = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: st.context,
      requestCert: st.requestCert,
      rejectUnauthorized: false,
      ALPNProtocols: [PG_ALPN],
    });
    let done = false;
    const timer = setTimeout(() => finish(new Error('TLS handshake timed out')), Math.max(1, timeoutMs));
    function finish(err?: Error): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      t.removeListener('error', onError);
      if (err) {
        t.on('error', () => undefined);
        t.destroy();
        reject(err);
        return;
      }
      t.on('error', () => undefined);
      const peer = t.getPeerCertificate();
      const presented = peer !== null && typeof peer === 'object' && Object.keys(peer).length > 0;
      // A TLSSocket made by hand (not by tls.Server) does not fill in
      // authorized/authorizationError: ask the handle, as tls.Server does.
      const verifyError = presented ? peerVerifyError(t) : undefined;
      let cn: string | undefined;
      if (presented && verifyError === undefined) {
        const raw: unknown = peer.subject?.CN;
        cn = Array.isArray(raw) ? String(raw[0]) : typeof raw === 'string' ? raw : undefined;
      }
      const ve = verifyError;
      resolve({
        socket: t,
        verifiedCN: cn,
        presentedCert: presented,
        verifyError: ve,
        alpn: t.alpnProtocol ?? false,
      });
    }
    const onError = (e: Error): void => finish(e);
    t.once('secure', () => finish());
    t.on('error', onError);
  });
}

/**
 * The OpenSSL verification result of the peer certificate (undefined = verified).
 * tls.Server reads it from the socket's native handle in its 'secure' handler;
 * a TLSSocket created directly has to do the same.
 */
function peerVerifyError(t: tls.TLSSocket): string | undefined {
  const handle = (t as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null | undefined } })
    ._handle;
  if (!handle || typeof handle.verifyError !== 'function') return 'cannot verify the client certificate';
  const e = handle.verifyError();
  return e ? (e.code ?? e.message) : undefined;
}

// ---------------------------------------------------------------- backends

export type BackendSslMode = 'disable' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

export interface BackendTls {
  mode: BackendSslMode;
  /** CA certificates for verify-ca / verify-full (undefined = Node's default store). */
  ca?: Buffer;
}

/** What the connector does, from ssl + backend_ssl_mode + backend_ssl_root_cert. */
export function backendTlsFromConfig(cfg: Config): BackendTls {
  const mode = (cfg.backend_ssl_mode || 'prefer') as BackendSslMode;
  // pgpool: "backend SSL is tried when ssl = on". prefer needs ssl = on; the
  // stricter modes are explicit and apply regardless.
  const effective: BackendSslMode = mode === 'prefer' && !cfg.ssl ? 'disable' : mode;
  const out: BackendTls = { mode: effective };
  if (cfg.backend_ssl_root_cert && (effective === 'verify-ca' || effective === 'verify-full'))
    out.ca = readFileSync(cfg.backend_ssl_root_cert);
  return out;
}

/** tls.connect options over an existing backend socket, per mode. */
export function backendTlsOptions(socket: net.Socket, host: string, b: BackendTls): tls.ConnectionOptions {
  const verify = b.mode === 'verify-ca' || b.mode === 'verify-full';
  const o: tls.ConnectionOptions = { socket, rejectUnauthorized: verify, ALPNProtocols: [PG_ALPN] };
  if (b.ca) o.ca = b.ca;
  if (!host.startsWith('/') && net.isIP(host) === 0) o.servername = host;
  if (b.mode === 'verify-ca') o.checkServerIdentity = () => undefined;
  else if (b.mode === 'verify-full') o.checkServerIdentity = (_h, cert) => tls.checkServerIdentity(host, cert);
  return o;
}
