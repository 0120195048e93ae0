/**
 * The admin command engine: answers SHOW pool_* and PGPOOL SHOW/SET/RESET the
 * way pgpool-II 4.3 does (same columns, same value formats, same errors), plus
 * pgrelay's operations (ATTACH/DETACH/PROMOTE NODE, RELOAD, STOP).
 *
 * This file is the dispatch and the permission check; each group of commands
 * has its own module (show-nodes, show-sessions, config-commands, query-cache,
 * operations). Pure apart from the callbacks in AdminContext: everything it
 * reports comes from the context, so services.ts wires it to the live process
 * and unit tests pass plain objects.
 */
import type { Config } from '../config/types.js';
import { SQLSTATE } from '../protocol/constants.js';
import { type AdminCommand, describeAdminCommand, type ShowTarget } from './commands.js';
import { effectiveConfig, pgpoolReset, pgpoolSet, pgpoolShow, showPoolStatus } from './config-commands.js';
import type { AdminContext } from './context.js';
import { isOperation, runOperation } from './operations.js';
import { cacheDelete, showPoolCache } from './query-cache.js';
import { type AdminResult, errorResult, formatTimestamp, rowsResult } from './result.js';
import { showPoolBackendStats, showPoolHealthCheckStats, showPoolNodes } from './show-nodes.js';
import { showPoolPools, showPoolProcesses } from './show-sessions.js';

// The session layer takes the result type from the engine that produces it.
export type { AdminResult } from './result.js';

/**
 * pgpool version pgrelay's reports are compatible with. SHOW pool_version
 * answers `<PGPOOL_COMPAT_VERSION> (pgrelay <version>)`: pgpool's
 * `<version> (<codename>)` shape, with a version number that tools which pick
 * columns by pgpool version (e.g. pgpool2_exporter) parse as 4.3 — the column
 * sets pgrelay reproduces.
 */
export const PGPOOL_COMPAT_VERSION = '4.3.0';

export function showPoolVersion(ctx: AdminContext): AdminResult {
  return rowsResult(['pool_version'], [[`${PGPOOL_COMPAT_VERSION} (pgrelay ${ctx.version})`]]);
}

/**
 * SHOW pgrelay_instances: the pgrelay instances coordinated through etcd, the
 * leader, and whether each holds its etcd lease; one 'standalone' row without
 * coordination.
 */
export function showPgrelayInstances(ctx: AdminContext, cfg: Config): AdminResult {
  const rows = ctx.instances?.() ?? [
    {
      name: cfg.instance_name || 'this instance',
      host: cfg.listen_addresses,
      port: cfg.port,
      version: ctx.version,
      state: 'standalone',
      leader: true,
      self: true,
      lease: 'n/a',
      started: ctx.processStartedAt,
    },
  ];
  return rowsResult(
    ['instance_name', 'host', 'port', 'version', 'state', 'leader', 'this_instance', 'lease', 'started'],
    rows.map((r) => [
      r.name,
      r.host,
      String(r.port),
      r.version,
      r.state,
      r.leader ? 'true' : 'false',
      r.self ? 'true' : 'false',
      r.lease,
      formatTimestamp(r.started),
    ]),
  );
}

type ShowHandler = (ctx: AdminContext, cfg: Config) => AdminResult | Promise<AdminResult>;

/**
 * Which function answers which SHOW (PgBouncer's show_map). A new SHOW command
 * is a target in commands.ts and a row here; `cfg` has the session's PGPOOL SET
 * values applied.
 */
const SHOW: Readonly<Record<ShowTarget, ShowHandler>> = {
  pool_nodes: showPoolNodes,
  pool_version: showPoolVersion,
  pool_status: showPoolStatus,
  pool_pools: showPoolPools,
  pool_processes: showPoolProcesses,
  pool_backend_stats: showPoolBackendStats,
  pool_health_check_stats: showPoolHealthCheckStats,
  pool_cache: showPoolCache,
  pgrelay_instances: showPgrelayInstances,
};

function isAdmin(ctx: AdminContext): boolean {
  return ctx.isAdminUser ? ctx.isAdminUser(ctx.user) : ctx.config.admin_users.includes(ctx.user);
}

function denied(ctx: AdminContext, cmd: AdminCommand): AdminResult {
  return errorResult(SQLSTATE.insufficientPrivilege, `permission denied for ${describeAdminCommand(cmd)}`, {
    detail: `User "${ctx.user}" is not listed in admin_users.`,
    hint:
      ctx.config.admin_users.length === 0
        ? 'Node operations, RELOAD and STOP require admin_users to be set.'
        : undefined,
  });
}

/** Answer one admin command. Never throws (failures are `{ kind: 'error' }`). */
export async function executeAdmin(cmd: AdminCommand, ctx: AdminContext): Promise<AdminResult> {
  if (cmd.kind === 'syntax_error') {
    return errorResult(
      SQLSTATE.syntaxError,
      cmd.near === '' ? 'syntax error at end of input' : `syntax error at or near "${cmd.near}"`,
    );
  }
  const admin = isAdmin(ctx);
  if (isOperation(cmd) ? !admin : ctx.config.admin_users.length > 0 && !admin) return denied(ctx, cmd);

  const cfg = effectiveConfig(ctx.config, ctx.sessionParams);
  try {
    if (isOperation(cmd)) return await runOperation(cmd, ctx);
    switch (cmd.kind) {
      case 'show': {
        const show: ShowHandler | undefined = SHOW[cmd.target];
        if (show) return await show(ctx, cfg);
        break;
      }
      case 'pgpool_show':
        return pgpoolShow(cfg, cmd.name);
      case 'pgpool_set':
        return pgpoolSet(ctx, cmd.name, cmd.value);
      case 'pgpool_reset':
        return pgpoolReset(ctx, cmd.name);
      case 'cache_delete':
        return cacheDelete(cmd.query);
    }
  } catch (e) {
    return errorResult(
      SQLSTATE.internalError,
      `${describeAdminCommand(cmd)} failed: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  return errorResult(SQLSTATE.internalError, 'unknown admin command');
}
