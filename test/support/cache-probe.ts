/**
 * What is idle in pgrelay's connection cache, read from pgrelay itself with
 * `SHOW pool_pools` (one row per cached idle connection: status "Wait for
 * connection", backend_id, database, username, pool_backendpid). Tests use it to
 * prove that a cached connection exists before they test what happens to it,
 * instead of assuming so or sleeping.
 *
 * The admin client is an ordinary, already authenticated connection to pgrelay
 * (any user may run SHOW pool_* while admin_users is empty); keep it open for
 * the whole test so that its own backend connections stay out of the cache.
 */
import pg from 'pg';
import { endPg } from './clients.js';

export interface CachedConnection {
  nodeId: number;
  database: string;
  user: string;
  /** PostgreSQL backend pid of the cached connection. */
  backendPid: number;
}

/** The idle cached backend connections right now. */
export async function cachedConnections(admin: pg.Client): Promise<CachedConnection[]> {
  const r = await admin.query<Record<string, string>>('SHOW pool_pools');
  return r.rows
    .filter((row) => row.status === 'Wait for connection')
    .map((row) => ({
      nodeId: Number(row.backend_id),
      database: row.database,
      user: row.username,
      backendPid: Number(row.pool_backendpid),
    }));
}

/**
 * Poll SHOW pool_pools until the backend pids are all idle in the cache (a
 * released connection is reset first, which takes a round trip); throws with
 * what the cache held after timeoutMs.
 */
export async function waitForCached(admin: pg.Client, backendPids: number[], timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: CachedConnection[] = [];
  for (;;) {
    last = await cachedConnections(admin);
    const idle = new Set(last.map((c) => c.backendPid));
    if (backendPids.every((p) => idle.has(p))) return;
    if (Date.now() > deadline)
      throw new Error(
        `backend pids ${backendPids.join(', ')} not idle in pgrelay's cache after ${timeoutMs} ms; cache: ${JSON.stringify(last)}`,
      );
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * A node-postgres client logged in through pgrelay on 127.0.0.1:port. The
 * start-up parameters depend only on the arguments, so two calls with the same
 * user and database share one cache key whatever the password.
 */
export async function loginAs(port: number, user: string, password: string, database = 'postgres'): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user,
    password,
    database,
    connectionTimeoutMillis: 10_000,
    query_timeout: 20_000,
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
  } catch (e) {
    // pg's end() can wait forever on a connection that failed: bounded.
    await endPg(c);
    throw e;
  }
  return c;
}

/** Log in, read pg_backend_pid(), end cleanly (Terminate) so that the backend connection goes back to the cache. */
export async function sessionBackendPid(
  port: number,
  user: string,
  password: string,
  database = 'postgres',
): Promise<number> {
  const c = await loginAs(port, user, password, database);
  try {
    return (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  } finally {
    await endPg(c);
  }
}
