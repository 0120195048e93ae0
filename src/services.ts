/**
 * Connects the relay (sessions) to the services around it: the cluster manager
 * (backend errors, waiting for a primary during failover, node-down cleanup),
 * admin commands, statement statistics, Prometheus metrics and the HTTP
 * endpoints, and configuration reload (SIGHUP, PGPOOL RELOAD, `pgrelay reload`).
 */
import { createRequire } from 'node:module';
import type { Config } from './config/types.js';
import { diffConfigs } from './config/diff.js';
import { ConfigError } from './config/issues.js';
import { loadConfig, type LoadOptions } from './config/load.js';
import type { Logger } from './log.js';
import type { Relay } from './server/relay.js';
import type { ClusterManager } from './cluster/manager.js';
import { ClusterError } from './cluster/operations.js';
import { oneShotQuery, srCheckCredentials } from './cluster/conn.js';
import { loadPoolPasswd, PoolPasswdCache } from './auth/credentials.js';
import { AdminService } from './admin/service.js';
import type { HealthCheckStats, ProbeResult } from './admin/context.js';
import type { StopMode } from './admin/commands.js';
import { createMetrics, metricsSnapshotFrom, type PgrelayMetrics, type QueryKind } from './metrics/metrics.js';
import { startMetricsServer, type MetricsServer } from './metrics/http.js';
import type { Classification } from './router/classifier.js';
import { PgError } from './protocol/messages.js';
import { NodeEventRing } from './cluster/event-ring.js';
import { DashboardAuth } from './dashboard/auth.js';
import { StatsHistory } from './dashboard/history.js';
import { Dashboard, defaultAssetsDir } from './dashboard/server.js';
import type { EtcdCoordinator } from './coordination/coordinator.js';
import { registerCoordinationMetrics } from './coordination/metrics.js';
import { SQLSTATE } from './protocol/constants.js';

export const VERSION: string = (() => {
  try {
    const req = createRequire(import.meta.url);
    return (req('../package.json') as { version: string }).version;
  } catch {
    return '0.0.0';
  }
})();

export interface ServicesOptions {
  /** How the configuration was loaded (file + command-line overrides), to load it again on reload. */
  loadOptions: LoadOptions;
  /** coordination = 'etcd': the coordinator (SHOW pgrelay_instances, /readyz, metrics). */
  coordinator?: EtcdCoordinator;
  /** Stop the process (PGPOOL STOP). */
  stop(mode: StopMode): void;
}

export interface Services {
  admin: AdminService;
  /** The recent node events (dashboard, /api/events). */
  events: NodeEventRing;
  metrics: PgrelayMetrics;
  /** Re-read the configuration files; a file with errors is rejected whole. */
  reload(): { ok: boolean; errors: string[]; restartRequired: string[] };
  close(): Promise<void>;
}

function queryKind(cls: Classification): QueryKind {
  switch (cls.kind) {
    case 'select':
    case 'insert':
    case 'update':
    case 'delete':
      return cls.kind;
    case 'create':
      return 'ddl';
    default:
      return 'other';
  }
}

function healthStatsFor(cluster: ClusterManager, id: number): HealthCheckStats | undefined {
  const h = cluster.healthStats(id);
  if (!h) return undefined;
  const ran = h.total_count - h.skip_count;
  return {
    totalCount: h.total_count,
    successCount: h.success_count,
    failCount: h.fail_count,
    skipCount: h.skip_count,
    retryCount: h.retry_count,
    maxRetryCount: h.max_retry_count,
    totalDurationMs: h.average_duration * ran,
    maxDurationMs: h.max_duration,
    minDurationMs: h.min_duration,
    lastHealthCheck: h.last_health_check ?? 0,
    lastSuccessfulHealthCheck: h.last_successful_health_check ?? 0,
    lastSkipHealthCheck: h.last_skip_health_check ?? 0,
    lastFailedHealthCheck: h.last_failed_health_check ?? 0,
  };
}

/** Errors of cluster operations as PostgreSQL errors for the admin engine. */
function opError(e: unknown): never {
  if (e instanceof ClusterError) {
    const code =
      e.code === 'NO_SUCH_NODE' || e.code === 'NODE_UNUSED'
        ? SQLSTATE.invalidParameterValue
        : e.code === 'TIMEOUT'
          ? SQLSTATE.queryCanceled
          : SQLSTATE.objectNotInPrerequisiteState;
    throw new PgError(code, e.message, 'ERROR');
  }
  throw e;
}

export async function startServices(
  relay: Relay,
  cluster: ClusterManager,
  log: Logger,
  opts: ServicesOptions,
): Promise<Services> {
  const startedAt = Date.now();
  const metrics = createMetrics({
    version: VERSION,
    snapshot: metricsSnapshotFrom({
      nodes: relay.nodes,
      sessions: relay.registry,
      cache: { entries: () => relay.cache.entries().map((c) => ({ nodeId: c.nodeId, params: c.startup })) },
      waiting: () => relay.gate.waiting,
      horizon: relay.horizon,
      pools: relay.pools,
    }),
  });

  const probe = async (id: number): Promise<ProbeResult> => {
    const cfg = relay.config();
    const node = relay.nodes.get(id);
    if (!node) return { up: false };
    const timeout = Math.min(cfg.connect_timeout > 0 ? cfg.connect_timeout : 3000, 3000);
    try {
      const rows = await oneShotQuery(
        node,
        srCheckCredentials(cfg, loadPoolPasswd(cfg)),
        'SELECT pg_is_in_recovery() AS r',
        timeout,
      );
      return { up: true, inRecovery: rows[0]?.r === 't' };
    } catch {
      return { up: false };
    }
  };

  const services: Services = {
    admin: new AdminService({
      config: () => relay.config(),
      nodes: relay.nodes,
      cache: relay.cache,
      pools: relay.pools,
      registry: relay.registry,
      version: VERSION,
      startedAt,
      healthStats: (id) => healthStatsFor(cluster, id),
      probe,
      ...(opts.coordinator ? { instances: () => opts.coordinator!.instances() } : {}),
      ops: {
        attachNode: async (id) => {
          await cluster.attach(id).catch(opError);
        },
        detachNode: async (id, gracefully) => {
          await cluster.detach(id, { gracefully }).catch(opError);
        },
        promoteNode: async (id, switchover, gracefully) => {
          await cluster.promote(id, { switchover, gracefully }).catch(opError);
        },
        recoverNode: async (id) => {
          await cluster.recover(id).catch(opError);
        },
        reload: () => {
          const r = services.reload();
          if (!r.ok)
            throw new PgError(
              SQLSTATE.invalidParameterValue,
              `configuration not reloaded: ${r.errors.join('; ')}`,
              'ERROR',
            );
        },
        stop: (mode) => {
          // Reply first, then stop.
          setTimeout(() => opts.stop(mode), 50);
        },
      },
    }),
    metrics,
    events: new NodeEventRing(),
    reload: () => reloadConfig(relay, cluster, log, opts.loadOptions),
    close: async () => {
      history?.stop();
      stopEvents();
      await metricsServer?.close();
    },
  };
  const admin = services.admin;
  const stopEvents = services.events.follow(cluster, relay.nodes);

  relay.services = {
    metrics,
    adminCommand: (caller, sql) => admin.request(caller, sql),
    countStatement: (nodeId, cls) => {
      admin.countStatement(nodeId, cls);
      metrics.queryRouted(queryKind(cls), nodeId);
    },
    countError: (nodeId, severity, sqlstate) => {
      admin.countError(nodeId, severity);
      metrics.error(sqlstate);
    },
    reportBackendError: (nodeId, kind) => cluster.reportBackendError(nodeId, kind),
    waitForPrimary: (ms) => cluster.waitForPrimary(ms),
  };

  cluster.setSessionsOnNode((id) => {
    let n = 0;
    // The session asking for a graceful detach does not wait for itself.
    for (const s of relay.registry.all()) if (s.usesNode(id) && !s.runningAdmin) n++;
    return n;
  });
  cluster.on('node-down', (e) => {
    // The pools first: the connections the ended sessions give back must not go to clients
    // waiting for that node.
    relay.cache.closeAll(e.node);
    relay.pools.nodeDown(e.node);
    for (const s of relay.registry.all()) s.endIfPrimaryOn(e.node, e.reason);
  });
  cluster.on('failover-done', (e) => {
    if (e.primaryFailed) metrics.failover();
  });
  cluster.on('healthcheck', (e) => metrics.healthCheck(e.node, e.ok ? 'success' : 'failure', e.durationMs / 1000));

  const coordinator = opts.coordinator;
  if (coordinator) registerCoordinationMetrics(metrics.registry, () => coordinator.status());

  let metricsServer: MetricsServer | undefined;
  let history: StatsHistory | undefined;
  const cfg = relay.config();
  if (cfg.metrics_port > 0) {
    let dashboard: Dashboard | undefined;
    if (cfg.dashboard) {
      history = new StatsHistory({
        nodes: () => relay.nodes.all(),
        primaryId: () => relay.nodes.primaryId,
        counters: (id) => admin.nodeCounters(id),
      });
      history.start();
      const passwd = new PoolPasswdCache();
      dashboard = new Dashboard({
        admin,
        config: () => relay.config(),
        events: services.events,
        history,
        waiting: () => ({
          count: relay.gate.waiting,
          longestWaitSeconds: Math.round(relay.gate.longestWaitMs() / 100) / 10,
        }),
        auth: new DashboardAuth({
          passwordFor: (user) => passwd.get(relay.config())?.getPasswordFor(user),
          primary: () => relay.nodes.primaryNode(),
          connectTimeoutMs: () => relay.config().connect_timeout,
        }),
        version: VERSION,
        log,
        assetsDir: defaultAssetsDir(),
      });
    }
    metricsServer = await startMetricsServer({
      port: cfg.metrics_port,
      host: metricsHost(cfg.metrics_listen_address),
      registry: metrics.registry,
      ready: () => {
        if (relay.nodes.primaryNode() === undefined) return { ready: false, reason: 'no primary node is known' };
        if (!relay.listening) return { ready: false, reason: 'not accepting clients' };
        return coordinator ? coordinator.readiness() : { ready: true };
      },
      dashboard,
    });
    log.info(
      { port: metricsServer.port, host: metricsServer.host, dashboard: dashboard !== undefined },
      dashboard
        ? 'metrics endpoint and dashboard listening (/, /api/*, /metrics, /healthz, /readyz)'
        : 'metrics endpoint listening (/metrics, /healthz, /readyz)',
    );
    if (dashboard && cfg.admin_users.length === 0)
      log.info('dashboard is read-only: set admin_users to allow node operations from it');
  }
  return services;
}

/** metrics_listen_address as an address to bind: '*' (or empty) = all IPv4 addresses, localhost = 127.0.0.1. */
function metricsHost(address: string): string {
  const a = address.trim();
  if (a === '*' || a === '') return '0.0.0.0';
  return a === 'localhost' ? '127.0.0.1' : a;
}

/**
 * Reload: parse every file first; apply reloadable parameters to new sessions;
 * log restart-only changes (their old values stay); keep everything on error.
 */
export function reloadConfig(
  relay: Relay,
  cluster: ClusterManager,
  log: Logger,
  loadOptions: LoadOptions,
): { ok: boolean; errors: string[]; restartRequired: string[] } {
  const old = relay.config();
  const warnings: string[] = [];
  let next: Config;
  try {
    next = loadConfig({ ...loadOptions, onWarning: (m) => warnings.push(m) });
  } catch (e) {
    const errors =
      e instanceof ConfigError ? e.errors.map((x) => `${x.file}:${x.line}: ${x.message}`) : [(e as Error).message];
    log.error({ errors }, 'configuration file has errors: not reloaded, the previous configuration stays');
    return { ok: false, errors, restartRequired: [] };
  }
  for (const w of warnings) log.warn(w);
  const { changed, restartRequired } = diffConfigs(old, next);
  // Restart-only parameters keep their running values.
  const merged: Config = { ...next };
  const m = merged as unknown as Record<string, unknown>;
  const o = old as unknown as Record<string, unknown>;
  for (const name of restartRequired) if (name in o) m[name] = o[name];
  // Backends: weights and flags reload; hosts and ports of existing nodes need a restart.
  merged.backends = old.backends.map((b, i) => {
    const n = next.backends[i];
    return n
      ? {
          ...b,
          weight: n.weight,
          allow_to_failover: n.allow_to_failover,
          always_primary: n.always_primary,
          application_name: n.application_name,
        }
      : b;
  });
  try {
    relay.router.reconfigure(merged);
  } catch (e) {
    const msg = (e as Error).message;
    log.error({ err: msg }, 'configuration has an invalid list: not reloaded, the previous configuration stays');
    return { ok: false, errors: [msg], restartRequired: [] };
  }
  relay.setConfig(merged);
  for (const b of merged.backends) {
    const n = relay.nodes.get(b.id);
    if (n) n.weight = b.weight;
  }
  const auth = relay.reloadAuth();
  void cluster;
  for (const name of restartRequired)
    log.warn(
      { parameter: name },
      'parameter changed in the configuration file: a restart is needed for it to take effect',
    );
  log.info({ changed: changed.filter((c) => !restartRequired.includes(c)), authOk: auth.ok }, 'configuration reloaded');
  return { ok: auth.ok, errors: auth.errors, restartRequired };
}
