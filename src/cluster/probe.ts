/**
 * Internal queries to a backend (primary search, checks) with node-postgres, each
 * bounded by a timeout so that a hung node never stalls the caller.
 */
import pg from 'pg';
import type { Config } from '../config/types.js';
import type { NodeState, NodeTable } from './nodes.js';
import type { Logger } from '../log.js';

export interface ProbeCredentials {
  user: string;
  password?: string;
  database: string;
}

/** Run one query on a fresh connection; rejects on error or after `timeoutMs`. */
export async function probeQuery<T extends pg.QueryResultRow>(node: { host: string; port: number }, cred: ProbeCredentials, sql: string, timeoutMs: number): Promise<T[]> {
  const client = new pg.Client({
    host: node.host,
    port: node.port,
    user: cred.user,
    password: cred.password,
    database: cred.database,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'pgrelay',
  });
  client.on('error', () => undefined);
  const timer = setTimeout(() => void client.end().catch(() => undefined), timeoutMs + 1000);
  try {
    await client.connect();
    const r = await client.query<T>(sql);
    return r.rows;
  } finally {
    clearTimeout(timer);
    await client.end().catch(() => undefined);
  }
}

/** Credentials for internal checks: sr_check_user, else health_check_user, else postgres. */
export function checkCredentials(cfg: Config): ProbeCredentials {
  if (cfg.sr_check_user) return { user: cfg.sr_check_user, password: cfg.sr_check_password || undefined, database: cfg.sr_check_database || 'postgres' };
  if (cfg.health_check.user) return { user: cfg.health_check.user, password: cfg.health_check.password || undefined, database: cfg.health_check.database || 'postgres' };
  return { user: 'postgres', database: 'postgres' };
}

/**
 * Start-up primary search (pgpool's find_primary_node): ask every node
 * `pg_is_in_recovery()`; a node that answers is up, one that cannot be reached is
 * down; the first that answers false is the primary. ALWAYS_PRIMARY fixes it.
 * Returns the primary's id or -1.
 */
export async function detectPrimary(nodes: NodeTable, cfg: Config, log: Logger, cred = checkCredentials(cfg)): Promise<number> {
  const timeout = Math.max(1000, cfg.connect_timeout);
  const answers = await Promise.all(
    nodes.all().map(async (n: NodeState) => {
      try {
        const rows = await probeQuery<{ r: boolean }>(n, cred, 'SELECT pg_is_in_recovery() AS r', timeout);
        return { id: n.id, ok: true, recovery: rows[0]?.r === true };
      } catch (e) {
        log.warn({ node: n.id, host: n.host, port: n.port, err: (e as Error).message }, 'node did not answer the primary search');
        return { id: n.id, ok: false, recovery: true };
      }
    }),
  );
  let primary = -1;
  for (const a of answers) {
    nodes.setStatus(a.id, a.ok ? 'up' : 'down', a.ok ? 'answered at start-up' : 'unreachable at start-up');
    if (nodes.get(a.id)?.config.always_primary) primary = a.id;
  }
  if (primary < 0) primary = answers.find((a) => a.ok && !a.recovery)?.id ?? -1;
  if (primary >= 0) nodes.setPrimary(primary, 'primary search');
  return primary;
}
