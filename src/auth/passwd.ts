/**
 * pool_passwd: pgpool-II's password file, read and written as pgpool does.
 *
 * Format (src/auth/pool_passwd.c): one `user:secret` per line, optionally
 * `user:secret:backenduser:backendsecret` (mapping form). A backslash escapes
 * the next character (so `\:` is a literal colon) in the user name and secret.
 * The first line whose user matches wins; a line with an empty secret is
 * skipped. pgpool has no comment syntax; pgrelay also skips lines starting with
 * '#' and tolerates CRLF line ends.
 *
 * Secret kinds, by prefix (get_password_type):
 *   md5 + 32 hex (35 chars)  md5 hash, 'md5' + md5(password || user)
 *   AES<base64>              AES-256-CBC, see aesKeyIv()
 *   SCRAM-SHA-256$…          SCRAM verifier (its ':' separators are not field breaks)
 *   TEXT<password>           clear text
 *   anything else            clear text (including 'md5…' of another length)
 */
import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import {
  closeSync,
  constants as fsc,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { isMd5Hash } from './md5.js';
import { parseScramVerifier } from './scram.js';

export type SecretKind = 'md5' | 'aes' | 'scram' | 'text' | 'plain';

export interface PoolPasswdEntry {
  user: string;
  /** The secret exactly as stored (with its prefix). */
  secret: string;
  kind: SecretKind;
  /** 1-based line number. */
  line: number;
  /** Mapping form user:secret:backenduser:backendsecret. */
  backendUser?: string;
  backendSecret?: string;
}

export type PasswordFor =
  | { kind: 'plain'; password: string }
  | { kind: 'md5'; hash: string }
  | { kind: 'scram'; verifier: string };

/** pgpool's get_password_type(). */
export function classifySecret(secret: string): SecretKind {
  if (secret.startsWith('md5')) return isMd5Hash(secret) ? 'md5' : 'plain';
  if (secret.startsWith('AES')) return 'aes';
  if (secret.startsWith('SCRAM-SHA-256$')) return 'scram';
  if (secret.startsWith('TEXT')) return 'text';
  return 'plain';
}

// ---------------------------------------------------------------- AES

/**
 * pgpool's key derivation: OpenSSL EVP_BytesToKey(EVP_aes_256_cbc(),
 * EVP_sha1(), salt = NULL, key, count = 1): D1 = SHA1(key), Di = SHA1(Di-1 ||
 * key); the 32-byte AES key is the first 32 bytes of D1||D2||D3, the IV the
 * next 16. No salt, so the same password and key always give the same text.
 */
export function aesKeyIv(key: string | Buffer): { key: Buffer; iv: Buffer } {
  const k = Buffer.isBuffer(key) ? key : Buffer.from(key, 'utf8');
  const parts: Buffer[] = [];
  let prev = Buffer.alloc(0);
  let have = 0;
  while (have < 48) {
    prev = createHash('sha1')
      .update(Buffer.concat([prev, k]))
      .digest();
    parts.push(prev);
    have += prev.length;
  }
  const all = Buffer.concat(parts);
  return { key: all.subarray(0, 32), iv: all.subarray(32, 48) };
}

/** base64(AES-256-CBC(password)) with PKCS#7 padding, as pg_enc prints it (without the 'AES' prefix). */
export function aesEncrypt(password: string | Buffer, key: string | Buffer): string {
  const { key: k, iv } = aesKeyIv(key);
  const c = createCipheriv('aes-256-cbc', k, iv);
  const pw = Buffer.isBuffer(password) ? password : Buffer.from(password, 'utf8');
  return Buffer.concat([c.update(pw), c.final()]).toString('base64');
}

/** Decrypt the base64 part of an AES secret (with or without the 'AES' prefix). Throws on a bad key/ciphertext. */
export function aesDecrypt(secret: string, key: string | Buffer): string {
  const b64 = (secret.startsWith('AES') ? secret.slice(3) : secret).replace(/\s+/g, '');
  if (b64.length === 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new Error('base64 decoding failed');
  const data = Buffer.from(b64, 'base64');
  if (data.length === 0 || data.length % 16 !== 0) throw new Error('decryption failed');
  const { key: k, iv } = aesKeyIv(key);
  const d = createDecipheriv('aes-256-cbc', k, iv);
  let plain: Buffer;
  try {
    plain = Buffer.concat([d.update(data), d.final()]);
  } catch {
    throw new Error('decryption failed');
  }
  // pgpool treats the result as a C string
  const nul = plain.indexOf(0);
  return (nul >= 0 ? plain.subarray(0, nul) : plain).toString('utf8');
}

/** The pool_passwd secret for a password: 'AES' + base64. */
export function aesSecret(password: string | Buffer, key: string | Buffer): string {
  return `AES${aesEncrypt(password, key)}`;
}

// ---------------------------------------------------------------- key file

/** MAX_POOL_KEY_LEN: pgpool reads the key with fgets() into a 256-byte buffer. */
const MAX_POOL_KEY_LEN = 256;

/**
 * Where the key comes from, in pgpool's order: the explicit key file
 * (pool_key_file / `-k`), else $PGPOOLKEYFILE, else ~/.pgpoolkey.
 */
export function findKeyFile(opts: { keyFile?: string; env?: NodeJS.ProcessEnv; home?: string } = {}): string {
  if (opts.keyFile) return opts.keyFile;
  const env = opts.env ?? process.env;
  const fromEnv = env.PGPOOLKEYFILE;
  if (fromEnv) return fromEnv;
  return join(opts.home ?? homedir(), '.pgpoolkey');
}

export interface PoolKeyResult {
  /** undefined when the file is missing, unreadable, not a plain file, or empty. */
  key: string | undefined;
  warnings: string[];
}

/**
 * pgpool's read_pool_key(): the first line of the file without its '\n'
 * (at most 255 bytes). Warns when the mode gives group/other any access.
 */
export function readPoolKey(path: string): PoolKeyResult {
  const warnings: string[] = [];
  if (!path) return { key: undefined, warnings };
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY);
  } catch {
    return { key: undefined, warnings };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) {
      warnings.push(`pool key file "${path}" is not a plain file`);
      return { key: undefined, warnings };
    }
    if (st.mode & 0o077) {
      warnings.push(`pool key file "${path}" has group or world access; permissions should be u=rw (0600) or less`);
    }
    const buf = Buffer.alloc(MAX_POOL_KEY_LEN - 1);
    const n = readSync(fd, buf, 0, buf.length, 0);
    if (n === 0) return { key: undefined, warnings };
    let line = buf.subarray(0, n);
    const nl = line.indexOf(0x0a);
    if (nl >= 0) line = line.subarray(0, nl);
    return { key: line.toString('utf8'), warnings };
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------- parsing

/** Read one backslash-escaped field up to an unescaped ':'. */
function readField(s: string, pos: number): { value: string; next: number | undefined } {
  let out = '';
  let i = pos;
  while (i < s.length) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) {
      out += s[i + 1]!;
      i += 2;
      continue;
    }
    if (c === ':') return { value: out, next: i + 1 };
    out += c;
    i++;
  }
  return { value: out, next: undefined };
}

const SCRAM_FIELD_RE = /^SCRAM-SHA-256\$[^:$]*:[^:$]*\$[^:$]*:[^:$]*/;

/** Parse one line into an entry (without line number); undefined for blank/comment/unusable lines. */
export function parsePoolPasswdLine(raw: string): Omit<PoolPasswdEntry, 'line'> | undefined {
  const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
  if (line.length === 0 || line.startsWith('#')) return undefined;
  const u = readField(line, 0);
  if (u.next === undefined || u.value.length === 0) return undefined;
  let secret: string;
  let next: number | undefined;
  const rest = line.slice(u.next);
  const scram = SCRAM_FIELD_RE.exec(rest);
  if (scram) {
    secret = scram[0];
    const after = u.next + secret.length;
    next = line[after] === ':' ? after + 1 : undefined;
  } else {
    const f = readField(line, u.next);
    secret = f.value;
    next = f.next;
  }
  if (secret.length === 0) return undefined;
  const entry: Omit<PoolPasswdEntry, 'line'> = { user: u.value, secret, kind: classifySecret(secret) };
  if (next !== undefined) {
    const bu = readField(line, next);
    if (bu.value && bu.next !== undefined) {
      const bs = readField(line, bu.next);
      if (bs.value) {
        entry.backendUser = bu.value;
        entry.backendSecret = bs.value;
      }
    }
  }
  return entry;
}

export function parsePoolPasswd(text: string): PoolPasswdEntry[] {
  const out: PoolPasswdEntry[] = [];
  const lines = text.split('\n');
  lines.forEach((l, i) => {
    const e = parsePoolPasswdLine(l);
    if (e) out.push({ ...e, line: i + 1 });
  });
  return out;
}

function escapeField(s: string): string {
  return s.replace(/[\\:]/g, (m) => `\\${m}`);
}

/** The line pgrelay writes for a user (user name and clear-text secrets escaped; hashes need no escaping). */
export function formatPoolPasswdLine(user: string, secret: string): string {
  const kind = classifySecret(secret);
  const s = kind === 'scram' || kind === 'md5' || kind === 'aes' ? secret : escapeField(secret);
  return `${escapeField(user)}:${s}`;
}

/**
 * Add or replace a user's line, keeping every other line (comments, order,
 * mapping entries) as it is; like pool_create_passwdent(), the first matching
 * line is replaced and a new user is appended.
 */
export function upsertPoolPasswd(text: string, user: string, secret: string): { text: string; updated: boolean } {
  const newLine = formatPoolPasswdLine(user, secret);
  const lines = text.length ? text.split('\n') : [];
  const endsWithNl = text.endsWith('\n');
  if (endsWithNl) lines.pop();
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    if (raw.startsWith('#')) continue;
    const u = readField(raw.endsWith('\r') ? raw.slice(0, -1) : raw, 0);
    if (u.next !== undefined && u.value === user) {
      lines[i] = newLine;
      return { text: `${lines.join('\n')}\n`, updated: true };
    }
  }
  lines.push(newLine);
  return { text: `${lines.join('\n')}\n`, updated: false };
}

/** Update the file in place (atomic rename, keeping its mode; a new file is created 0600). */
export function updatePoolPasswdFile(path: string, user: string, secret: string): { updated: boolean } {
  const exists = existsSync(path);
  const old = exists ? readFileSync(path, 'utf8') : '';
  const mode = exists ? statSync(path).mode & 0o7777 : 0o600;
  const r = upsertPoolPasswd(old, user, secret);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, r.text, { mode });
  renameSync(tmp, path);
  return { updated: r.updated };
}

/**
 * The pool_passwd path from pgpool.conf's `pool_passwd` value: relative to the
 * configuration file's directory; '' means disabled (undefined).
 */
export function resolvePoolPasswdPath(configFile: string, poolPasswd: string): string | undefined {
  if (!poolPasswd) return undefined;
  if (isAbsolute(poolPasswd)) return poolPasswd;
  return resolve(configFile ? dirname(configFile) : '.', poolPasswd);
}

// ---------------------------------------------------------------- the loaded file

export interface PoolPasswdOptions {
  /** The AES key itself (takes precedence over key files). */
  key?: string;
  /** pool_key_file / -k. */
  keyFile?: string;
  env?: NodeJS.ProcessEnv;
  home?: string;
}

export class PoolPasswd {
  readonly entries: PoolPasswdEntry[];
  /** Warnings collected while loading (key file mode, undecryptable entries...). */
  readonly warnings: string[];
  private keyState: { loaded: boolean; key: string | undefined };
  private readonly keyOpts: PoolPasswdOptions;

  constructor(text: string, opts: PoolPasswdOptions = {}) {
    this.entries = parsePoolPasswd(text);
    this.warnings = [];
    this.keyOpts = opts;
    this.keyState = opts.key !== undefined ? { loaded: true, key: opts.key } : { loaded: false, key: undefined };
    // Read the key up front when AES entries exist, so mode warnings show at load time.
    if (
      this.entries.some(
        (e) => e.kind === 'aes' || (e.backendSecret !== undefined && classifySecret(e.backendSecret) === 'aes'),
      )
    ) {
      this.poolKey();
    }
  }

  /** Load a file; a missing file is an empty pool_passwd (pgpool creates it). */
  static load(path: string, opts: PoolPasswdOptions = {}): PoolPasswd {
    const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
    return new PoolPasswd(text, opts);
  }

  /** The AES key (read once, lazily). */
  poolKey(): string | undefined {
    if (!this.keyState.loaded) {
      const path = findKeyFile({ keyFile: this.keyOpts.keyFile, env: this.keyOpts.env, home: this.keyOpts.home });
      const r = readPoolKey(path);
      this.warnings.push(...r.warnings);
      this.keyState = { loaded: true, key: r.key };
    }
    return this.keyState.key;
  }

  get(user: string): PoolPasswdEntry | undefined {
    return this.entries.find((e) => e.user === user);
  }

  /**
   * What the proxy can authenticate with for a user: clear text (from TEXT,
   * AES or a plain entry), an md5 hash, or a SCRAM verifier. undefined when
   * there is no entry or an AES entry cannot be decrypted (a warning is added).
   */
  getPasswordFor(user: string): PasswordFor | undefined {
    const e = this.get(user);
    if (!e) return undefined;
    return this.resolveSecret(e.secret, user);
  }

  /** The mapped backend user and its secret, for the mapping form. */
  getBackendCredentials(user: string): { user: string; password: PasswordFor | undefined } | undefined {
    const e = this.get(user);
    if (!e || e.backendUser === undefined || e.backendSecret === undefined) return undefined;
    return { user: e.backendUser, password: this.resolveSecret(e.backendSecret, e.backendUser) };
  }

  /** Interpret a secret in any pool_passwd form (also used for *_password settings in pgpool.conf). */
  resolveSecret(secret: string, user: string): PasswordFor | undefined {
    switch (classifySecret(secret)) {
      case 'md5':
        return { kind: 'md5', hash: secret.toLowerCase() };
      case 'scram':
        return parseScramVerifier(secret) ? { kind: 'scram', verifier: secret } : undefined;
      case 'text':
        return { kind: 'plain', password: secret.slice(4) };
      case 'plain':
        return { kind: 'plain', password: secret };
      case 'aes': {
        const key = this.poolKey();
        if (key === undefined) {
          this.warnings.push(
            `could not get the password for user:${user}: unable to decrypt password from pool_passwd (no pool key)`,
          );
          return undefined;
        }
        try {
          return { kind: 'plain', password: aesDecrypt(secret, key) };
        } catch (err) {
          this.warnings.push(`could not get the password for user:${user}: ${(err as Error).message}`);
          return undefined;
        }
      }
    }
  }
}

/**
 * Password for health_check_user / sr_check_user and friends: the configured
 * value when non-empty (accepting AES…, md5…, TEXT…, a SCRAM verifier or plain
 * text), otherwise the user's pool_passwd entry.
 */
export function resolveConfigPassword(
  user: string,
  configured: string,
  passwd: PoolPasswd | undefined,
  keyOpts: PoolPasswdOptions = {},
): PasswordFor | undefined {
  if (configured) return (passwd ?? new PoolPasswd('', keyOpts)).resolveSecret(configured, user);
  return passwd?.getPasswordFor(user);
}
