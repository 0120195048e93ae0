/**
 * node-postgres / postgres.js clients for integration tests, with timeouts and
 * tracking so that afterEach/afterAll can close whatever a failed test left open.
 */
import pg from 'pg';
import postgres from 'postgres';
import type { DevCluster } from '../../dev/devcluster.js';

export interface Target {
  host?: string;
  port: number;
}

const livePg = new Set<pg.Client>();
const liveSql = new Set<postgres.Sql>();

export type PgClientOptions = Omit<pg.ClientConfig, 'host' | 'port'>;

/**
 * One statement through the extended protocol (Parse/Bind/Describe/Execute/Sync) whether it has
 * parameters or not: node-postgres sends a query without values, or with `values: []`, as a
 * simple Query.
 */
export function extendedQuery(c: pg.Client, text: string, values?: unknown[]): Promise<pg.QueryResult> {
  return c.query({ text, values, queryMode: 'extended' } as pg.QueryConfig);
}

/**
 * A connected pg.Client straight to one node of `cluster`, as its superuser on database
 * postgres, with 10 s connect and query timeouts. Not tracked: the caller ends it.
 */
export async function nodeClient(
  cluster: DevCluster,
  node: { host: string; port: number },
  applicationName = 'pgrelay-test-probe',
): Promise<pg.Client> {
  const c = new pg.Client({
    host: node.host,
    port: node.port,
    user: 'postgres',
    password: cluster.superuserPassword ?? undefined,
    database: 'postgres',
    application_name: applicationName,
    connectionTimeoutMillis: 10_000,
    query_timeout: 10_000,
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
  } catch (e) {
    await c.end().catch(() => undefined);
    throw e;
  }
  return c;
}

/** nodeClient for every node of `cluster`, in node order. */
export function nodeClients(cluster: DevCluster, applicationName?: string): Promise<pg.Client[]> {
  return Promise.all(cluster.nodes.map((n) => nodeClient(cluster, n, applicationName)));
}

/** A connected pg.Client (tracked; closed by closeAllClients). */
export async function pgClient(t: Target, opts: PgClientOptions = {}): Promise<pg.Client> {
  const c = new pg.Client({
    host: t.host ?? '127.0.0.1',
    port: t.port,
    user: 'postgres',
    database: 'postgres',
    connectionTimeoutMillis: 10_000,
    query_timeout: 60_000,
    application_name: 'pgrelay-test',
    ...opts,
  });
  // An 'error' event without a listener would crash the worker (e.g. after a FATAL).
  c.on('error', () => undefined);
  livePg.add(c);
  try {
    await c.connect();
  } catch (e) {
    livePg.delete(c);
    throw e;
  }
  return c;
}

/** End a pg.Client, bounded (destroys the socket if end() does not finish in timeoutMs). */
export async function endPg(c: pg.Client, timeoutMs = 3000): Promise<void> {
  livePg.delete(c);
  await Promise.race([
    c.end().catch(() => undefined),
    new Promise<void>((r) =>
      setTimeout(() => {
        (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
        r();
      }, timeoutMs),
    ),
  ]);
}

/** A postgres.js instance (tracked). */
export function sqlClient(t: Target, opts: postgres.Options<Record<string, postgres.PostgresType>> = {}): postgres.Sql {
  const sql = postgres({
    host: t.host ?? '127.0.0.1',
    port: t.port,
    user: 'postgres',
    database: 'postgres',
    connect_timeout: 10,
    idle_timeout: 30,
    max: 1,
    onnotice: () => undefined,
    ...opts,
  });
  liveSql.add(sql);
  return sql;
}

export async function endSql(sql: postgres.Sql): Promise<void> {
  liveSql.delete(sql);
  await sql.end({ timeout: 2 }).catch(() => undefined);
}

/** Close every tracked client. */
export async function closeAllClients(): Promise<void> {
  await Promise.all([...livePg].map((c) => endPg(c)));
  await Promise.all([...liveSql].map((s) => endSql(s)));
}

/** Run fn, failing with a clear message after timeoutMs. */
export async function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(t);
  }
}

/**
 * Run one statement (e.g. an admin command: SHOW pool_nodes, SHOW pool_processes)
 * on a fresh pgrelay session and return its rows with every value as text.
 */
export async function queryRows(
  t: Target,
  sql: string,
  opts: PgClientOptions = {},
): Promise<Array<Record<string, string>>> {
  const c = await pgClient(t, { application_name: 'pgrelay-test-probe', ...opts });
  try {
    const r = await c.query({ text: sql, rowMode: 'array' });
    return r.rows.map((row: unknown[]) =>
      Object.fromEntries(r.fields.map((f, i) => [f.name, row[i] === null ? '' : String(row[i])])),
    );
  } finally {
    await endPg(c);
  }
}
