/**
 * DevCluster.psql's connections: a few idle superuser sessions to the
 * `postgres` database kept per node, so a call costs a round trip instead of a psql process (a
 * fork, an exec and a backend start: ~70 ms of CPU each, and the suite polls
 * nodes through it thousands of times).
 *
 * Every call behaves like a fresh psql session: it gets an idle session (or a
 * new one), runs the script's statements one by one (stopping at the first
 * error, as ON_ERROR_STOP does), then `DISCARD ALL` resets what the script
 * changed (settings, prepared statements, temp tables, advisory locks); a
 * session that cannot be reset, or whose connection failed, is closed. A call
 * that meets a dead cached session (its server restarted, its backend was
 * terminated) before it ran anything retries once on a new connection.
 * Idle sessions' sockets are unref'd: they never keep a process alive.
 */
import pg from 'pg';
import { formatRows, splitStatements } from './sql-script.js';

export interface SessionTarget {
  host: string;
  port: number;
  database: string;
  password: string | null;
}

/** Text for every type, exactly what the server sent (psql prints the same). */
const RAW_TEXT = { getTypeParser: () => (v: string) => v };
/** Idle sessions kept per node; more concurrent calls open more, closed after use. */
const MAX_IDLE = 2;
/**
 * Only sessions to this database are kept: tests count the client backends of their own databases
 * (pg_stat_activity by datname) and drop them, and a kept session would be one more.
 */
const KEPT_DATABASE = 'postgres';
/** DISCARD ALL after a call: a session not reset by then is closed. */
const RESET_TIMEOUT_MS = 10_000;

interface Session {
  client: pg.Client;
  dead: boolean;
}

export class SqlTimeoutError extends Error {}

export class SqlSessions {
  private readonly idle = new Map<string, Session[]>();
  private readonly all = new Set<Session>();

  /**
   * Run a script as `psql -X -A -t -q -v ON_ERROR_STOP=1 -f -` would, on a
   * session of `target`; resolves with what psql would print (no final newline).
   */
  async run(key: string, target: SessionTarget, sql: string, timeoutMs: number): Promise<string> {
    const statements = splitStatements(sql);
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      const cached = attempt === 0 ? this.takeIdle(key) : undefined;
      const s = cached ?? (await this.open(target, deadline));
      let ran = 0;
      try {
        const lines: string[] = [];
        for (const text of statements) {
          lines.push(...formatRows(await this.query(s, text, deadline)));
          ran++;
        }
        await this.release(key, s, target.database === KEPT_DATABASE);
        return lines.join('\n');
      } catch (e) {
        this.close(s);
        // A cached session whose connection failed on the script's first statement: its server restarted or its
        // backend was terminated while it sat idle. Nothing of the script ran (a server failing in the middle of
        // that statement is the one case this cannot tell apart; DevCluster's callers do not run statements on a
        // node while stopping it).
        if (cached && ran === 0 && connectionFailed(e)) continue;
        throw e;
      }
    }
  }

  /** Close every session of these keys (before a database is dropped, a node stopped). */
  closeWhere(match: (key: string) => boolean): void {
    for (const [key, list] of this.idle) {
      if (!match(key)) continue;
      for (const s of list) this.close(s);
      this.idle.delete(key);
    }
  }

  closeAll(): void {
    for (const s of [...this.all]) this.close(s);
    this.idle.clear();
  }

  private takeIdle(key: string): Session | undefined {
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const s = list.pop() as Session;
      if (!s.dead) {
        socketOf(s.client)?.ref();
        return s;
      }
      this.close(s);
    }
    return undefined;
  }

  private async open(t: SessionTarget, deadline: number): Promise<Session> {
    const client = new pg.Client({
      host: t.host,
      port: t.port,
      user: 'postgres',
      database: t.database,
      password: t.password ?? undefined,
      application_name: 'devcluster',
      types: RAW_TEXT,
      connectionTimeoutMillis: Math.max(1, Math.min(10_000, deadline - Date.now())),
    });
    const s: Session = { client, dead: false };
    client.on('error', () => {
      s.dead = true;
    });
    client.on('end', () => {
      s.dead = true;
    });
    this.all.add(s);
    try {
      await client.connect();
    } catch (e) {
      this.close(s);
      throw e;
    }
    return s;
  }

  private query(s: Session, text: string, deadline: number): Promise<(string | null)[][]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => {
          s.dead = true;
          socketOf(s.client)?.destroy();
          reject(new SqlTimeoutError(`timed out (statement: ${text.slice(0, 200)})`));
        },
        Math.max(1, deadline - Date.now()),
      );
      if (s.dead) {
        clearTimeout(timer);
        reject(new Error('connection closed'));
        return;
      }
      s.client.query<(string | null)[]>({ text, rowMode: 'array' }).then(
        (r) => {
          clearTimeout(timer);
          // A multi-statement string is not sent (splitStatements splits), so there is one result.
          resolve(r.rows);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  }

  private async release(key: string, s: Session, keep: boolean): Promise<void> {
    if (!keep) {
      this.close(s);
      return;
    }
    try {
      await this.query(s, 'DISCARD ALL', Date.now() + RESET_TIMEOUT_MS);
    } catch {
      this.close(s);
      return;
    }
    const list = this.idle.get(key) ?? [];
    if (s.dead || list.length >= MAX_IDLE) {
      this.close(s);
      return;
    }
    // Idle sessions must not keep the process alive; one in use must (a pending query on an unref'd socket lets
    // the process exit under the caller's feet).
    socketOf(s.client)?.unref();
    list.push(s);
    this.idle.set(key, list);
  }

  private close(s: Session): void {
    s.dead = true;
    this.all.delete(s);
    s.client.end().catch(() => undefined);
    socketOf(s.client)?.destroy();
  }
}

/** No SQLSTATE (socket closed, reset) or one saying the connection is gone (57P01-57P03, class 08). */
function connectionFailed(e: unknown): boolean {
  if (e instanceof SqlTimeoutError) return false;
  const code = (e as { code?: unknown }).code;
  return typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code) || /^(57P0[123]|08)/.test(code);
}

interface ClientSocket {
  ref(): void;
  unref(): void;
  destroy(): void;
}

/** The client's socket (pg keeps it on its connection; not in @types/pg). */
function socketOf(c: pg.Client): ClientSocket | undefined {
  return (c as unknown as { connection?: { stream?: ClientSocket } }).connection?.stream;
}
