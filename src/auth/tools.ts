/**
 * Logic behind `pgrelay md5`, `pgrelay enc` and `pgrelay passwd` (argv is
 * wired by the CLI). Output matches pgpool-II's pg_md5 / pg_enc byte for byte.
 *
 *   pg_md5 PASSWORD            -> "<md5hex(PASSWORD)>\n"   (unsalted; pcp.conf format)
 *   pg_enc -k FILE PASSWORD    -> "trying to read key from file FILE\n\n<b64>\npool_passwd string: AES<b64>\n"
 *   pg_enc -K KEY PASSWORD     -> "\n<b64>\npool_passwd string: AES<b64>\n"
 *   pg_md5 -m -u U -f CONF PW  -> prints nothing; writes U:md5<md5(PW||U)> into pool_passwd
 *   pg_enc -m -k FILE -u U ... -> prints the "trying to read key" line; writes U:AES<b64>
 */
import { userInfo } from 'node:os';
import { md5Hex, pgMd5Hash } from './md5.js';
import {
  aesEncrypt,
  aesSecret,
  findKeyFile,
  readPoolKey,
  resolvePoolPasswdPath,
  updatePoolPasswdFile,
} from './passwd.js';
import { buildScramVerifier } from './scram.js';

/** Exactly what `pg_md5 PASSWORD` prints. */
export function pgMd5Output(password: string): string {
  return `${md5Hex(Buffer.from(password, 'utf8'))}\n`;
}

/**
 * Exactly what `pg_enc PASSWORD` prints: with `keyFile` (the path as given on
 * the command line, or the default one pg_enc found) as with `-k`, without it
 * as with `-K key`.
 */
export function pgEncOutput(password: string, key: string, keyFile?: string): string {
  const b64 = aesEncrypt(password, key);
  const head = keyFile !== undefined ? `trying to read key from file ${keyFile}\n` : '';
  return `${head}\n${b64}\npool_passwd string: AES${b64}\n`;
}

/** The key pg_enc would use: -K key, else the key file (-k / $PGPOOLKEYFILE / ~/.pgpoolkey). */
export function loadEncKey(opts: { key?: string; keyFile?: string; env?: NodeJS.ProcessEnv; home?: string }): {
  key: string;
  keyFile: string | undefined;
  warnings: string[];
} {
  if (opts.key !== undefined) return { key: opts.key, keyFile: undefined, warnings: [] };
  const keyFile = findKeyFile({ keyFile: opts.keyFile, env: opts.env, home: opts.home });
  const r = readPoolKey(keyFile);
  if (r.key === undefined) {
    throw Object.assign(new Error('encryption key not provided'), { keyFile, warnings: r.warnings });
  }
  return { key: r.key, keyFile, warnings: r.warnings };
}

export type PasswdMethod = 'md5' | 'aes' | 'scram' | 'text';

export interface PasswdCommandOptions {
  /** pgpool.conf path; a relative poolPasswdPath is resolved against its directory. */
  configFile: string;
  /** The configured `pool_passwd` value ('' = disabled). */
  poolPasswdPath: string;
  /** Defaults to the OS user, as pg_md5 / pg_enc do. */
  user?: string;
  password: string;
  method: PasswdMethod;
  /** AES: key file (pool_key_file / -k); else $PGPOOLKEYFILE, ~/.pgpoolkey. */
  keyFile?: string;
  /** AES: the key itself (-K). */
  key?: string;
  env?: NodeJS.ProcessEnv;
  home?: string;
}

export interface PasswdCommandResult {
  /** Text for stdout: what pg_md5 -m / pg_enc -m print (empty for md5), or a one-line summary for scram/text. */
  message: string;
  /** For stderr (e.g. key file mode warning). */
  warnings: string[];
  path: string;
  user: string;
  secret: string;
  /** false when the user was appended. */
  updated: boolean;
}

/** `pgrelay passwd`: add or update a user's line in pool_passwd, like pg_md5 --md5auth and pg_enc -m. */
export function passwdCommand(opts: PasswdCommandOptions): PasswdCommandResult {
  const path = resolvePoolPasswdPath(opts.configFile, opts.poolPasswdPath);
  if (!path) throw new Error(`pool_passwd is disabled (empty) in "${opts.configFile}"`);
  const user = opts.user ?? userInfo().username;
  if (!user) throw new Error('user name is empty');
  let secret: string;
  let message = '';
  let warnings: string[] = [];
  switch (opts.method) {
    case 'md5':
      secret = pgMd5Hash(opts.password, user);
      break;
    case 'aes': {
      const k = loadEncKey(opts);
      warnings = k.warnings;
      if (k.keyFile !== undefined) message = `trying to read key from file ${k.keyFile}\n`;
      secret = aesSecret(opts.password, k.key);
      break;
    }
    case 'scram':
      secret = buildScramVerifier(opts.password);
      message = `${user}: SCRAM-SHA-256 verifier written to ${path}\n`;
      break;
    case 'text':
      if (opts.password.length === 0) throw new Error('error updating password, invalid password length:0');
      secret = `TEXT${opts.password}`;
      message = `${user}: TEXT password written to ${path}\n`;
      break;
  }
  const r = updatePoolPasswdFile(path, user, secret);
  return { message, warnings, path, user, secret, updated: r.updated };
}
