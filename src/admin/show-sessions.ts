/**
 * The session reports: SHOW pool_pools and SHOW pool_processes.
 *
 * Mapping of pgpool's per-child rows onto pgrelay (which has no child processes):
 *  - pool_pid: for a client session, the session's virtual pid (the pid pgrelay
 *    sends the client in BackendKeyData, the key of cancel requests). For a
 *    cached idle backend connection, the pgrelay process pid (the process owns
 *    the cache).
 *  - SHOW pool_processes: one row per session (database/username of the
 *    session, backend_connection_time/pool_counter of its first backend
 *    connection, status Idle / Idle in transaction / Execute command), then one
 *    row per cached idle connection (start_time = pgrelay start, status
 *    'Wait for connection', database/username of the cached connection), like a
 *    pgpool child that holds a pooled connection and waits for a client.
 *  - SHOW pool_pools (4.3's 17 columns): for each session one row per configured
 *    backend node (pool_id 0, backend_id = node id); nodes the session has no
 *    connection to get empty database/username/times, version 0/0, backend pid 0
 *    and pool_connected 0, as a pgpool slot without that backend. Then one row
 *    per cached idle connection (pool_pid = process pid, pool_id = running
 *    index, client fields empty, client_disconnection_time = when it went back
 *    to the cache, pool_connected 0, status 'Wait for connection').
 *  - pool_mode = transaction: a session lists the connections it holds during a
 *    transaction ('Wait for backend connection' while it waits for one), and the
 *    idle connections of the server pools are listed as cached ones.
 */
import type { AdminBackendConnection, AdminContext, AdminSessionInfo } from './context.js';
import { type AdminResult, formatTimestamp, int, rowsResult } from './result.js';

export const POOL_POOLS_COLUMNS = [
  'pool_pid',
  'start_time',
  'client_connection_count',
  'pool_id',
  'backend_id',
  'database',
  'username',
  'backend_connection_time',
  'client_connection_time',
  'client_disconnection_time',
  'client_idle_duration',
  'majorversion',
  'minorversion',
  'pool_counter',
  'pool_backendpid',
  'pool_connected',
  'status',
];

export const POOL_PROCESSES_COLUMNS = [
  'pool_pid',
  'start_time',
  'client_connection_count',
  'database',
  'username',
  'backend_connection_time',
  'pool_counter',
  'status',
];

const TX_IDLE = 0x49;

export type SessionStatus = 'Idle' | 'Idle in transaction' | 'Execute command' | 'Wait for backend connection';

/** A backend connection a client session holds. */
export interface SessionBackendReport {
  nodeId: number;
  /** PostgreSQL backend pid. */
  pid: number;
  /** ms since epoch */
  createdAt: number;
  useCount: number;
}

/**
 * A client session as SHOW pool_processes / pool_pools report it, as data: the
 * admin commands format it into pgpool's cells, the dashboard's /api/sessions
 * serialises it as JSON.
 */
export interface SessionReport {
  /** The virtual pid given to the client (the key of its cancel requests). */
  pid: number;
  user: string;
  database: string;
  /** ms since epoch */
  startedAt: number;
  status: SessionStatus;
  /** Seconds since the client's last request while idle (0 while busy). */
  idleSeconds: number;
  backends: SessionBackendReport[];
}

/** A backend connection idle in the connection cache. */
export interface CachedConnectionReport {
  nodeId: number;
  pid: number;
  user: string;
  database: string;
  /** ms since epoch */
  createdAt: number;
  /** When it went back to the cache (ms since epoch, 0 = never). */
  releasedAt: number;
  useCount: number;
}

function sessionStatus(s: AdminSessionInfo): SessionStatus {
  if (s.waitingForPool) return 'Wait for backend connection';
  if (s.busy) return 'Execute command';
  return s.txStatus === TX_IDLE ? 'Idle' : 'Idle in transaction';
}

function connUser(c: AdminBackendConnection): string {
  return c.params?.get('user') ?? '';
}

function connDatabase(c: AdminBackendConnection): string {
  return c.params?.get('database') ?? connUser(c);
}

/** The client sessions, in registry order. */
export function sessionReports(ctx: AdminContext): SessionReport[] {
  const now = (ctx.now ?? Date.now)();
  const out: SessionReport[] = [];
  for (const s of ctx.sessions()) {
    out.push({
      pid: s.pid,
      user: s.user,
      database: s.database,
      startedAt: s.startedAt,
      status: sessionStatus(s),
      idleSeconds: s.lastActivity && !s.busy ? Math.max(0, Math.floor((now - s.lastActivity) / 1000)) : 0,
      backends: s.backendConnections.map((c) => ({
        nodeId: c.nodeId,
        pid: c.pid,
        createdAt: c.createdAt,
        useCount: Math.trunc(c.useCount ?? 0),
      })),
    });
  }
  return out;
}

/** The idle connections of the connection cache. */
export function cachedConnectionReports(ctx: AdminContext): CachedConnectionReport[] {
  const out: CachedConnectionReport[] = [];
  for (const c of ctx.cachedConnections()) {
    out.push({
      nodeId: c.nodeId,
      pid: c.pid,
      user: connUser(c),
      database: connDatabase(c),
      createdAt: c.createdAt,
      releasedAt: c.releasedAt,
      useCount: Math.trunc(c.useCount ?? 0),
    });
  }
  return out;
}

export function showPoolPools(ctx: AdminContext): AdminResult {
  const rows: string[][] = [];
  for (const s of sessionReports(ctx)) {
    for (const n of ctx.nodes) {
      const c = s.backends.find((b) => b.nodeId === n.id);
      rows.push([
        String(s.pid),
        formatTimestamp(s.startedAt),
        '1',
        '0',
        String(n.id),
        c ? s.database : '',
        c ? s.user : '',
        c ? formatTimestamp(c.createdAt) : '',
        c ? formatTimestamp(s.startedAt) : '',
        '',
        c ? String(s.idleSeconds) : '0',
        c ? '3' : '0',
        '0',
        c ? int(c.useCount) : '0',
        c ? String(c.pid) : '0',
        c ? '1' : '0',
        s.status,
      ]);
    }
  }
  const ppid = String(ctx.processPid ?? process.pid);
  const pstart = formatTimestamp(ctx.processStartedAt);
  let slot = 0;
  for (const c of cachedConnectionReports(ctx)) {
    rows.push([
      ppid,
      pstart,
      '0',
      String(slot++),
      String(c.nodeId),
      c.database,
      c.user,
      formatTimestamp(c.createdAt),
      '',
      formatTimestamp(c.releasedAt),
      '0',
      '3',
      '0',
      int(c.useCount),
      String(c.pid),
      '0',
      'Wait for connection',
    ]);
  }
  return rowsResult(POOL_POOLS_COLUMNS, rows);
}

export function showPoolProcesses(ctx: AdminContext): AdminResult {
  const rows: string[][] = [];
  for (const s of sessionReports(ctx)) {
    const c = s.backends[0];
    rows.push([
      String(s.pid),
      formatTimestamp(s.startedAt),
      '1',
      s.database,
      s.user,
      c ? formatTimestamp(c.createdAt) : '',
      c ? int(c.useCount) : '',
      s.status,
    ]);
  }
  const ppid = String(ctx.processPid ?? process.pid);
  const pstart = formatTimestamp(ctx.processStartedAt);
  for (const c of cachedConnectionReports(ctx)) {
    rows.push([
      ppid,
      pstart,
      '0',
      c.database,
      c.user,
      formatTimestamp(c.createdAt),
      int(c.useCount),
      'Wait for connection',
    ]);
  }
  return rowsResult(POOL_PROCESSES_COLUMNS, rows);
}
