/**
 * pool_passwd as the running proxy reads it, and the passwords of pgrelay's own
 * logins (health check, sr check, primary search...).
 *
 * loadPoolPasswd() is the only reader of the configured file: sessions (through
 * the Authenticator), the cluster manager's checks and the admin probe all get
 * the same entries, with AES entries decrypted by the key from pool_key_file.
 */
import { statSync } from 'node:fs';
import type { Config } from '../config/types.js';
import type { BackendSecret } from './backend.js';
import { PoolPasswd, resolveConfigPassword, resolvePoolPasswdPath, type PasswordFor } from './passwd.js';

/**
 * Load the configured pool_passwd (undefined when pool_passwd = ''). A missing
 * file is empty; an unreadable one throws.
 */
export function loadPoolPasswd(cfg: Config): PoolPasswd | undefined {
  const path = resolvePoolPasswdPath(cfg.config_file, cfg.pool_passwd);
  if (!path) return undefined;
  return PoolPasswd.load(path, { keyFile: cfg.pool_key_file || undefined });
}

/**
 * pool_passwd for readers that get no reload signal (the cluster manager): read
 * with loadPoolPasswd() again whenever the file, its path or the key file changes.
 * An unreadable file gives undefined (no password known) until it is fixed.
 */
export class PoolPasswdCache {
  private key = '';
  private loaded: PoolPasswd | undefined;

  get(cfg: Config): PoolPasswd | undefined {
    const path = resolvePoolPasswdPath(cfg.config_file, cfg.pool_passwd);
    if (!path) return undefined;
    let mtime = 0;
    try {
      mtime = statSync(path).mtimeMs;
    } catch {
      mtime = 0;
    }
    const key = `${path}\u0000${cfg.pool_key_file}\u0000${mtime}`;
    if (key !== this.key || !this.loaded) {
      this.key = key;
      try {
        this.loaded = loadPoolPasswd(cfg);
      } catch {
        this.loaded = undefined;
      }
    }
    return this.loaded;
  }
}

/** What pgrelay can answer a backend's password request with, from a pool_passwd entry or *_password value. */
export function secretFromPassword(p: PasswordFor | undefined): BackendSecret {
  if (p?.kind === 'plain') return { password: p.password };
  if (p?.kind === 'md5') return { md5Hash: p.hash };
  return {}; // none, or a SCRAM verifier, which cannot answer a server's SCRAM challenge by itself
}

/**
 * The secret for an internal user: the configured *_password value when
 * non-empty (AES…, md5…, TEXT…, a SCRAM verifier or plain text, as pgpool; AES
 * decrypted with pool_key_file), otherwise the user's entry in `passwd`.
 * An empty object means no password is known (only trust works).
 */
export function internalUserSecret(
  cfg: Config,
  user: string,
  configured: string,
  passwd: PoolPasswd | undefined,
): BackendSecret {
  return secretFromPassword(
    resolveConfigPassword(user, configured, passwd, { keyFile: cfg.pool_key_file || undefined }),
  );
}
