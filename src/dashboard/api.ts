/**
 * The dashboard's JSON API (/api/nodes, /api/sessions, /api/events,
 * /api/config, /api/history). Every answer is built from the same reports the
 * admin SQL commands format (admin/show-nodes.ts, admin/show-sessions.ts,
 * admin/show-config.ts), read through the same AdminContext: what the page
 * shows is what SHOW pool_nodes, SHOW pool_pools and PGPOOL SHOW ALL answer.
 * Pure functions of their inputs; server.ts wires them to the live process.
 */
import type { AdminContext, NodeStatementCounters } from '../admin/context.js';
import { showParamRows, type ShowRow } from '../admin/show-config.js';
import { type PoolNodeReport, poolNodeReports } from '../admin/show-nodes.js';
import {
  type CachedConnectionReport,
  cachedConnectionReports,
  type SessionReport,
  sessionReports,
} from '../admin/show-sessions.js';
import type { RecordedNodeEvent } from '../cluster/event-ring.js';
import type { Config } from '../config/types.js';

/** ms since epoch as ISO 8601 (UTC); null for 0 (never). */
export function isoTime(ms: number): string | null {
  return ms > 0 ? new Date(ms).toISOString() : null;
}

export interface NodeJson extends Omit<PoolNodeReport, 'lastStatusChange' | 'loadBalanceNode'> {
  lastStatusChange: string | null;
  /** This node's part of the SELECTs sent to all nodes since start (0..1). */
  loadBalanceShare: number;
  /** Statements sent to the node since start, by kind, and errors it reported (SHOW pool_backend_stats). */
  statements: NodeStatementCounters;
}

export interface NodesJson {
  time: string;
  /** Current primary node id, -1 when none. */
  primary: number;
  nodes: NodeJson[];
}

function counters(ctx: AdminContext, id: number): NodeStatementCounters {
  const c = ctx.counters(id);
  return {
    select_cnt: c?.select_cnt ?? 0,
    insert_cnt: c?.insert_cnt ?? 0,
    update_cnt: c?.update_cnt ?? 0,
    delete_cnt: c?.delete_cnt ?? 0,
    ddl_cnt: c?.ddl_cnt ?? 0,
    other_cnt: c?.other_cnt ?? 0,
    panic_cnt: c?.panic_cnt ?? 0,
    fatal_cnt: c?.fatal_cnt ?? 0,
    error_cnt: c?.error_cnt ?? 0,
  };
}

/** /api/nodes: SHOW pool_nodes' reports, plus each node's statement counters and load-balance share. */
export async function nodesJson(ctx: AdminContext, cfg: Config): Promise<NodesJson> {
  const reports = await poolNodeReports(ctx, cfg);
  const selects = reports.reduce((sum, r) => sum + r.selectCount, 0);
  return {
    time: new Date((ctx.now ?? Date.now)()).toISOString(),
    primary: ctx.primaryId,
    nodes: reports.map(({ loadBalanceNode: _lb, lastStatusChange, ...r }) => ({
      ...r,
      lastStatusChange: isoTime(lastStatusChange),
      loadBalanceShare: selects > 0 ? r.selectCount / selects : 0,
      statements: counters(ctx, r.id),
    })),
  };
}

export interface SessionJson extends Omit<SessionReport, 'startedAt' | 'backends'> {
  startedAt: string | null;
  backends: Array<{ nodeId: number; pid: number; createdAt: string | null; useCount: number }>;
}

export interface CachedConnectionJson extends Omit<CachedConnectionReport, 'createdAt' | 'releasedAt'> {
  createdAt: string | null;
  releasedAt: string | null;
}

export interface WaitingClients {
  /** Clients queued for a session slot (num_init_children reached). */
  count: number;
  /** How long the first of them has waited, seconds. */
  longestWaitSeconds: number;
}

export interface SessionsJson {
  time: string;
  sessions: SessionJson[];
  cachedConnections: CachedConnectionJson[];
  waiting: WaitingClients;
  /** Backend connections per node: held by a session (inUse) and idle in the connection cache. */
  backendConnections: Array<{ node: number; inUse: number; idle: number }>;
}

/** /api/sessions: SHOW pool_processes / pool_pools' reports, the waiting clients and connections per node. */
export function sessionsJson(ctx: AdminContext, waiting: WaitingClients): SessionsJson {
  const sessions = sessionReports(ctx);
  const cached = cachedConnectionReports(ctx);
  const perNode = ctx.nodes.map((n) => ({ node: n.id, inUse: 0, idle: 0 }));
  for (const s of sessions) for (const b of s.backends) if (perNode[b.nodeId]) perNode[b.nodeId]!.inUse++;
  for (const c of cached) if (perNode[c.nodeId]) perNode[c.nodeId]!.idle++;
  return {
    time: new Date((ctx.now ?? Date.now)()).toISOString(),
    sessions: sessions.map((s) => ({
      ...s,
      startedAt: isoTime(s.startedAt),
      backends: s.backends.map((b) => ({ ...b, createdAt: isoTime(b.createdAt) })),
    })),
    cachedConnections: cached.map((c) => ({
      ...c,
      createdAt: isoTime(c.createdAt),
      releasedAt: isoTime(c.releasedAt),
    })),
    waiting,
    backendConnections: perNode,
  };
}

export interface EventJson extends Omit<RecordedNodeEvent, 'time'> {
  time: string | null;
}

/** /api/events: the recent node events, newest first. */
export function eventsJson(events: readonly RecordedNodeEvent[]): { events: EventJson[] } {
  return { events: [...events].reverse().map((e) => ({ ...e, time: isoTime(e.time) })) };
}

/** /api/config: the rows of PGPOOL SHOW ALL (secrets are '*****' there already). */
export function configJson(cfg: Config): { parameters: ShowRow[] } {
  return { parameters: showParamRows(cfg, 'all') ?? [] };
}
