/**
 * Who is logged in to the dashboard, and the checks every action passes:
 *
 *  - Login (POST /login, user + password) checks the password the way pgrelay
 *    checks a client's: the user's pool_passwd entry (clear text, md5, AES,
 *    SCRAM verifier); a user without one is checked by PostgreSQL itself (a
 *    login to the primary that must ask for the password: a node that lets the
 *    user in without one (trust) proves nothing and is refused).
 *  - A session is a random 256-bit token in an HttpOnly, SameSite=Strict
 *    cookie, valid for 30 minutes of inactivity and 12 hours at most. Logging
 *    out, a restart, or the user leaving admin_users (checked on every action)
 *    ends what it may do.
 *  - Each session has its own CSRF token (synchronizer token): every POST but
 *    the login carries it in a form field `csrf` or an `X-CSRF-Token` header.
 *  - Five failed logins from one address within a minute: that address waits
 *    until the minute is over (429).
 */
import crypto from 'node:crypto';
import { passwordMatches } from '../auth/frontend.js';
import { safeEqual } from '../auth/md5.js';
import type { PasswordFor } from '../auth/passwd.js';
import { connectBackend } from '../pool/connector.js';

export const SESSION_COOKIE = 'pgrelay_dashboard';
const IDLE_MS = 30 * 60_000;
const MAX_AGE_MS = 12 * 3600_000;
const MAX_SESSIONS = 1000;
const FAIL_WINDOW_MS = 60_000;
const MAX_FAILS = 5;

export interface DashboardSession {
  token: string;
  user: string;
  csrf: string;
  createdAt: number;
  lastSeen: number;
}

export interface CredentialSource {
  /** The user's pool_passwd entry, undefined when none (or no pool_passwd). */
  passwordFor(user: string): PasswordFor | undefined;
  /** The primary node to check users without a pool_passwd entry against (undefined when none). */
  primary(): { id: number; host: string; port: number } | undefined;
  connectTimeoutMs(): number;
}

export type LoginResult = { ok: true; session: DashboardSession } | { ok: false; status: 401 | 429; reason: string };

/** Check a clear-text password against the primary: it must ask for a password and accept this one. */
async function passwordAcceptedByPrimary(src: CredentialSource, user: string, password: string): Promise<boolean> {
  const node = src.primary();
  if (!node) return false;
  try {
    const conn = await connectBackend({
      nodeId: node.id,
      host: node.host,
      port: node.port,
      params: new Map([
        ['user', user],
        ['database', 'postgres'],
        ['application_name', 'pgrelay dashboard login'],
      ]),
      connectTimeoutMs: Math.min(Math.max(src.connectTimeoutMs(), 1000), 10_000),
      secret: () => ({ password }),
    });
    const asked = conn.authMethod !== 'trust';
    conn.close();
    return asked;
  } catch {
    return false;
  }
}

export class DashboardAuth {
  private readonly sessions = new Map<string, DashboardSession>();
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly src: CredentialSource,
    private readonly now: () => number = Date.now,
  ) {}

  async login(user: string, password: string, remote: string): Promise<LoginResult> {
    const t = this.now();
    const recent = (this.failures.get(remote) ?? []).filter((x) => t - x < FAIL_WINDOW_MS);
    if (recent.length >= MAX_FAILS) return { ok: false, status: 429, reason: 'too many failed logins; wait a minute' };
    const ok = user !== '' && password !== '' && (await this.checkPassword(user, password));
    if (!ok) {
      recent.push(t);
      this.failures.set(remote, recent);
      if (this.failures.size > 10_000) this.failures.clear();
      return { ok: false, status: 401, reason: 'wrong user name or password' };
    }
    this.failures.delete(remote);
    this.expire(t);
    if (this.sessions.size >= MAX_SESSIONS) {
      const oldest = [...this.sessions.values()].sort((a, b) => a.lastSeen - b.lastSeen)[0];
      if (oldest) this.sessions.delete(oldest.token);
    }
    const session: DashboardSession = {
      token: crypto.randomBytes(32).toString('base64url'),
      user,
      csrf: crypto.randomBytes(32).toString('base64url'),
      createdAt: t,
      lastSeen: t,
    };
    this.sessions.set(session.token, session);
    return { ok: true, session };
  }

  private async checkPassword(user: string, password: string): Promise<boolean> {
    const stored = this.src.passwordFor(user);
    if (stored) return passwordMatches(password, user, stored);
    return passwordAcceptedByPrimary(this.src, user, password);
  }

  /** The session of a request's Cookie header, if valid (refreshes its idle timer). */
  session(cookieHeader: string | undefined): DashboardSession | undefined {
    const token = parseCookies(cookieHeader).get(SESSION_COOKIE);
    if (!token) return undefined;
    const s = this.sessions.get(token);
    if (!s) return undefined;
    const t = this.now();
    if (t - s.lastSeen > IDLE_MS || t - s.createdAt > MAX_AGE_MS) {
      this.sessions.delete(token);
      return undefined;
    }
    s.lastSeen = t;
    return s;
  }

  logout(s: DashboardSession): void {
    this.sessions.delete(s.token);
  }

  /** The CSRF token sent with a POST matches the session's. */
  static csrfValid(s: DashboardSession, sent: string | undefined): boolean {
    return typeof sent === 'string' && sent.length > 0 && safeEqual(sent, s.csrf);
  }

  private expire(t: number): void {
    for (const [k, s] of this.sessions)
      if (t - s.lastSeen > IDLE_MS || t - s.createdAt > MAX_AGE_MS) this.sessions.delete(k);
  }
}

export function sessionCookie(s: DashboardSession, secure: boolean): string {
  return `${SESSION_COOKIE}=${s.token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${MAX_AGE_MS / 1000}${secure ? '; Secure' : ''}`;
}

export function clearedCookie(): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`;
}

export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    out.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  return out;
}
