/**
 * pcp.conf: the PCP users, one `username:md5hex(password)` a line (what
 * `pg_md5 PASSWORD` / `pgrelay md5 PASSWORD` prints); lines starting with '#'
 * and empty lines are skipped. Read at every authentication, as pgpool does,
 * so an edit takes effect without a reload.
 *
 * The md5 challenge (pgpool's pcp_worker / libpcp): the server sends 4 random
 * bytes; the client answers md5hex(md5hex(md5hex(password) + user) + salt),
 * 32 hex digits without the 'md5' prefix PostgreSQL uses.
 */
import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import { md5Hex } from '../auth/md5.js';

/** pgpool's MAX_USER_PASSWD_LEN. */
export const MAX_USER_PASSWD_LEN = 128;

export interface PcpUser {
  user: string;
  /** md5hex(password) as written in the file. */
  md5: string;
}

/** The users of a pcp.conf text; `problems` names lines that cannot be used (file:line). */
export function parsePcpConf(text: string, file: string): { users: PcpUser[]; problems: string[] } {
  const users: PcpUser[] = [];
  const problems: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) {
      problems.push(`${file}:${i + 1}: expected USER:MD5 (no ':' found)`);
      continue;
    }
    const user = line.slice(0, colon);
    const md5 = line.slice(colon + 1);
    if (user.length > MAX_USER_PASSWD_LEN || md5.length > MAX_USER_PASSWD_LEN) {
      problems.push(`${file}:${i + 1}: user name or password longer than ${MAX_USER_PASSWD_LEN} characters`);
      continue;
    }
    if (!/^[0-9a-fA-F]{32}$/.test(md5))
      problems.push(`${file}:${i + 1}: the password of "${user}" is not an md5 hash (use: pgrelay md5 PASSWORD)`);
    users.push({ user, md5 });
  }
  return { users, problems };
}

/** What a client must answer to `salt` for the md5 hash of a pcp.conf line. */
export function expectedPcpResponse(u: PcpUser, salt: Buffer): string {
  const inner = md5Hex(Buffer.concat([Buffer.from(u.md5, 'utf8'), Buffer.from(u.user, 'utf8')]));
  return md5Hex(Buffer.concat([Buffer.from(inner, 'ascii'), salt]));
}

/** The same computation a PCP client makes from the password (for tests and tools). */
export function pcpClientResponse(user: string, password: string, salt: Buffer): string {
  return expectedPcpResponse({ user, md5: md5Hex(password) }, salt);
}

export type PcpAuthResult = { ok: true } | { ok: false; message: string; detail: string };

/** Check a user's answer against the file (every line of that user is tried, as pgpool does). */
export function authenticatePcp(file: string, user: string, response: string, salt: Buffer): PcpAuthResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return {
      ok: false,
      message: 'failed to authenticate PCP user',
      detail: `could not open ${file}. reason: ${(e as Error).message}`,
    };
  }
  const got = Buffer.from(response, 'utf8');
  for (const u of parsePcpConf(text, file).users) {
    if (u.user !== user) continue;
    const want = Buffer.from(expectedPcpResponse(u, salt), 'utf8');
    if (want.length === got.length && timingSafeEqual(want, got)) return { ok: true };
  }
  return {
    ok: false,
    message: `authentication failed for user "${user}"`,
    detail: 'username and/or password does not match',
  };
}

/** Why PCP logins will fail with this file (missing, unreadable, bad lines), or undefined when it is usable. */
export function pcpConfProblem(file: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return `pcp.conf cannot be read (${(e as Error).message}): every PCP login will fail until it exists (use -F FILE)`;
  }
  const { users, problems } = parsePcpConf(text, file);
  if (problems.length > 0) return `pcp.conf has lines PCP logins cannot use: ${problems.join('; ')}`;
  if (users.length === 0) return 'pcp.conf has no USER:MD5 line: every PCP login will fail';
  return undefined;
}
