/**
 * Passwords for pgrelay's own connections (health check, sr check, primary
 * search...): the configured *_password value when non-empty (AES…, md5…,
 * TEXT…, a SCRAM verifier or plain text, as pgpool), otherwise the user's
 * pool_passwd entry. Returned in the connector's BackendSecret shape.
 */
import type { Config } from '../config/types.js';
import type { BackendSecret } from '../pool/connector.js';
import { PoolPasswd, resolveConfigPassword } from './passwd.js';

/** Load the configured pool_passwd (undefined when pool_passwd = ''). A missing file is empty. */
export function loadPoolPasswd(cfg: Config): PoolPasswd | undefined {
  if (!cfg.pool_passwd) return undefined;
  return PoolPasswd.load(cfg.pool_passwd, { keyFile: cfg.pool_key_file || undefined });
}

/**
 * The secret for an internal user, e.g.
 * `internalUserSecret(cfg, cfg.sr_check_user, cfg.sr_check_password)` or
 * `internalUserSecret(cfg, hc.user, hc.password, relay.poolPasswd())`.
 * Pass `passwd` to reuse an already loaded pool_passwd (the Relay's, kept
 * current by reloadAuth()); without it the file is read on each call.
 * An empty object means no password is known (only trust works).
 */
export function internalUserSecret(cfg: Config, user: string, configured: string, passwd?: PoolPasswd): BackendSecret {
  const keyOpts = { keyFile: cfg.pool_key_file || undefined };
  const p = resolveConfigPassword(user, configured, passwd ?? (configured ? undefined : loadPoolPasswd(cfg)), keyOpts);
  if (!p) return {};
  if (p.kind === 'plain') return { password: p.password };
  if (p.kind === 'md5') return { md5Hash: p.hash };
  return {}; // a SCRAM verifier cannot log in by itself
}
