/**
 * Connections used by the cluster module's own checks (health check, primary
 * search, sr check). They go through the proxy's backend connector
 * (src/pool/connector.ts), so every authentication form that pool_passwd and
 * *_password settings allow (clear text, AES, md5 hash, SCRAM) works, and Unix
 * socket directories as backend_hostname work too. Queries use the simple query
 * protocol; every result value is text (or null).
 *
 * Every operation is bounded: connect by the given timeout, each query by its
 * own timeout (the socket is destroyed when it expires, so a hung backend never
 * keeps a check waiting).
 */
import { serialize } from 'pg-protocol';
import { BE } from '../protocol/constants.js';
import { parseErrorFields, readCString } from '../protocol/messages.js';
import { connectBackend, type BackendConnection } from '../pool/connector.js';
import type { BackendSecret } from '../auth/backend.js';
import type { PoolPasswd } from '../auth/passwd.js';
import { internalUserSecret } from '../auth/credentials.js';
import type { Config } from '../config/types.js';

export type Row = Record<string, string | null>;

export interface CheckCredentials {
  user: string;
  database: string;
  secret?: BackendSecret;
}

export class CheckQueryError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'CheckQueryError';
  }
}

/** One authenticated backend connection for internal checks. */
export class CheckConnection {
  private busy = false;
  private constructor(
    private readonly conn: BackendConnection,
    readonly nodeId: number,
  ) {}

  static async open(
    node: { id: number; host: string; port: number },
    cred: CheckCredentials,
    timeoutMs: number,
    appName = 'pgrelay',
  ): Promise<CheckConnection> {
    const params = new Map<string, string>([
      ['user', cred.user],
      ['database', cred.database],
      ['application_name', appName],
      ['client_encoding', 'UTF8'],
    ]);
    const conn = await connectBackend({
      nodeId: node.id,
      host: node.host,
      port: node.port,
      params,
      connectTimeoutMs: timeoutMs,
      secret: () => cred.secret,
    });
    return new CheckConnection(conn, node.id);
  }

  get dead(): boolean {
    return this.conn.dead || this.conn.socket.destroyed;
  }

  /** Run one simple query; rows as column name → text value. Rejects on error, close or timeout. */
  query(sql: string, timeoutMs: number): Promise<Row[]> {
    if (this.dead) return Promise.reject(new CheckQueryError(`connection to node ${this.nodeId} is closed`, '08006'));
    if (this.busy) return Promise.reject(new CheckQueryError(`connection to node ${this.nodeId} is busy`, '55000'));
    this.busy = true;
    const socket = this.conn.socket;
    return new Promise<Row[]>((resolve, reject) => {
      let buf: Buffer = Buffer.alloc(0);
      let cols: string[] = [];
      const rows: Row[] = [];
      let error: CheckQueryError | undefined;
      let settled = false;
      const finish = (err: Error | undefined): void => {
        if (settled) return;
        settled = true;
        this.busy = false;
        clearTimeout(timer);
        socket.removeListener('data', onData);
        socket.removeListener('close', onClose);
        socket.removeListener('error', onErr);
        if (err) reject(err);
        else resolve(rows);
      };
      const timer = setTimeout(
        () => {
          this.close(true);
          finish(new CheckQueryError(`query on node ${this.nodeId} timed out after ${timeoutMs} ms`, '57014'));
        },
        Math.max(1, timeoutMs),
      );
      const onClose = (): void => finish(new CheckQueryError(`node ${this.nodeId} closed the connection`, '08006'));
      const onErr = (e: Error): void => finish(new CheckQueryError(`node ${this.nodeId}: ${e.message}`, '08006'));
      const onMessage = (type: number, body: Buffer): void => {
        switch (type) {
          case BE.RowDescription: {
            const n = body.readInt16BE(0);
            let p = 2;
            cols = [];
            for (let i = 0; i < n; i++) {
              const r = readCString(body, p, body.length);
              if (!r) break;
              cols.push(r[0]);
              p = r[1] + 18;
            }
            return;
          }
          case BE.DataRow: {
            const n = body.readInt16BE(0);
            let p = 2;
            const row: Row = {};
            for (let i = 0; i < n; i++) {
              const len = body.readInt32BE(p);
              p += 4;
              if (len < 0) row[cols[i] ?? `col${i}`] = null;
              else {
                row[cols[i] ?? `col${i}`] = body.toString('utf8', p, p + len);
                p += len;
              }
            }
            rows.push(row);
            return;
          }
          case BE.ErrorResponse: {
            const f = parseErrorFields(body, 0, body.length);
            error = new CheckQueryError(`node ${this.nodeId}: ${f.M ?? 'error'}`, f.C ?? 'XX000');
            if ((f.V ?? f.S) === 'FATAL' || (f.V ?? f.S) === 'PANIC') this.close(true);
            return;
          }
          case BE.ReadyForQuery:
            finish(error);
            return;
          default:
            return; // CommandComplete, notices, ParameterStatus, EmptyQueryResponse…
        }
      };
      const onData = (chunk: Buffer): void => {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        while (!settled && buf.length >= 5) {
          const len = buf.readUInt32BE(1);
          if (buf.length < 1 + len) break;
          const type = buf[0] as number;
          const body = buf.subarray(5, 1 + len);
          buf = buf.subarray(1 + len);
          onMessage(type, body);
        }
      };
      socket.on('data', onData);
      socket.once('close', onClose);
      socket.on('error', onErr);
      socket.write(serialize.query(sql));
    });
  }

  /** Send Terminate and close (or destroy at once when `hard`). */
  close(hard = false): void {
    if (hard) {
      this.conn.dead = true;
      this.conn.socket.destroy();
    } else this.conn.close();
  }
}

/** Connect, run one query, close. */
export async function oneShotQuery(
  node: { id: number; host: string; port: number },
  cred: CheckCredentials,
  sql: string,
  timeoutMs: number,
): Promise<Row[]> {
  const c = await CheckConnection.open(node, cred, timeoutMs);
  try {
    return await c.query(sql, timeoutMs);
  } finally {
    c.close();
  }
}

/** Credentials from a user/password pair as configured (password empty → pool_passwd). */
export function credentials(
  cfg: Config,
  user: string,
  password: string,
  database: string,
  pw: PoolPasswd | undefined,
): CheckCredentials {
  let secret: BackendSecret | undefined;
  try {
    secret = internalUserSecret(cfg, user, password, pw);
  } catch {
    secret = password ? { password } : undefined;
  }
  return { user, database: database || 'postgres', secret };
}

/** sr_check_user credentials (falling back to health_check_user, then postgres). */
export function srCheckCredentials(cfg: Config, pw: PoolPasswd | undefined): CheckCredentials {
  if (cfg.sr_check_user) return credentials(cfg, cfg.sr_check_user, cfg.sr_check_password, cfg.sr_check_database, pw);
  if (cfg.health_check.user)
    return credentials(cfg, cfg.health_check.user, cfg.health_check.password, cfg.health_check.database, pw);
  return credentials(cfg, 'postgres', '', cfg.sr_check_database, pw);
}
