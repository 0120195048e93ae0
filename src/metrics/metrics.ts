/**
 * Prometheus metrics (prom-client, a dedicated Registry; every name starts with
 * `pgrelay_`, counters end in `_total`, units are seconds and bytes).
 *
 * Two kinds of metrics:
 *
 *  - Event counters fed from the hot path (queries routed, bytes, errors,
 *    failovers, health checks). The hot-path methods only add to preallocated
 *    Float64Arrays indexed by (kind, node) / SQLSTATE class: no allocation, no
 *    label hashing per call (prom-client hashes the label object on every
 *    `inc`). The pending amounts are flushed into the prom-client counters by
 *    their `collect()` at scrape time, so the exposition is always current.
 *    Node ids outside 0..MAX_NODE_LABELS-1 are counted under node="unknown";
 *    nothing throws.
 *
 *  - State gauges computed at scrape time from a MetricsSnapshotProvider
 *    (nodes, sessions, backend connections): node status/role, replication
 *    delay, backend connections per (node, user, database, state), client
 *    sessions active/waiting.
 *
 * Plus Node.js process metrics from collectDefaultMetrics (prefix `pgrelay_`).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { NODE_ROLES, NODE_STATUSES, type NodeState } from '../cluster/nodes.js';
import { BucketHistogram } from './bucket-histogram.js';

/** Statement kinds, as pool_backend_stats counts them. */
export const QUERY_KINDS = ['select', 'insert', 'update', 'delete', 'ddl', 'other'] as const;
export type QueryKind = (typeof QUERY_KINDS)[number];

export const HEALTH_CHECK_RESULTS = ['success', 'failure', 'skip'] as const;
export type HealthCheckResult = (typeof HEALTH_CHECK_RESULTS)[number];

/** Node ids 0..127 (pgpool's MAX_NUM_BACKENDS) get their own label; others are "unknown". */
export const MAX_NODE_LABELS = 128;
const NODE_SLOTS = MAX_NODE_LABELS + 1;
const UNKNOWN_SLOT = MAX_NODE_LABELS;

// ---------------------------------------------------------------------------
// Snapshot provider (read at scrape time)

export type MetricsNode = Pick<NodeState, 'id' | 'host' | 'port' | 'status' | 'role' | 'delayBytes' | 'delaySeconds'> &
  Partial<Pick<NodeState, 'replayPosition'>>;

export interface MetricsBackendConnection {
  nodeId: number;
  user: string;
  database: string;
  /** Held by a client session (true) or idle in the connection cache (false). */
  inUse: boolean;
}

/**
 * What the scrape-time gauges read. `NodeTable.all()` items satisfy MetricsNode;
 * backendConnections() is expected to list the connections held by sessions
 * (inUse: true) and the cached ones (inUse: false).
 */
export interface MetricsSnapshotProvider {
  nodes(): readonly MetricsNode[];
  /** Client sessions being served, and clients waiting for a session slot. */
  sessions(): { active: number; waiting: number };
  /** What sessions hold back because a peer is slower than the other. */
  backpressure(): SessionBackpressure;
  backendConnections(): Iterable<MetricsBackendConnection>;
  /** The newest write position acknowledged to a client (read-your-writes), 0n when none. */
  newestWritePosition?(): bigint;
  /** pool_mode = transaction: each server pool's numbers. */
  pools?(): ReadonlyArray<MetricsPool>;
}

/** One server pool of pool_mode = transaction. */
export interface MetricsPool {
  nodeId: number;
  user: string;
  database: string;
  /** Connections lent to clients (or being opened for one), idle in the pool; clients waiting. */
  active: number;
  idle: number;
  waiting: number;
}

/** Bytes buffered by sessions per direction, and sessions held back by backpressure. */
export interface SessionBackpressure {
  /** Written to clients and not yet taken by them. */
  bytesToClients: number;
  /** Written to backends and not yet taken by them. */
  bytesToBackends: number;
  /** Sessions not reading their client: a backend is congested or too many requests are outstanding. */
  clientReadsPaused: number;
  /** Sessions not reading a backend: their client does not read its replies. */
  backendReadsPaused: number;
}

/** A session as the backpressure gauges see it (`Session` satisfies it). */
export interface BackpressureView {
  readonly bufferedToClient: number;
  readonly bufferedToBackends: number;
  readonly clientReadsPaused: boolean;
  readonly backendReadsPaused: boolean;
}

export interface MetricsOptions {
  /** pgrelay version, exported as pgrelay_build_info{version}. */
  version?: string;
  snapshot?: MetricsSnapshotProvider;
  /** Node.js process metrics (default true). */
  defaultMetrics?: boolean;
}

const KIND_INDEX: Readonly<Record<string, number>> = Object.freeze(
  Object.fromEntries(QUERY_KINDS.map((k, i) => [k, i])) as Record<string, number>,
);
const OTHER_KIND = KIND_INDEX.other!;
const HC_INDEX: Readonly<Record<string, number>> = Object.freeze(
  Object.fromEntries(HEALTH_CHECK_RESULTS.map((k, i) => [k, i])) as Record<string, number>,
);

function nodeSlot(nodeId: number): number {
  return nodeId >= 0 && nodeId < MAX_NODE_LABELS && Number.isInteger(nodeId) ? nodeId : UNKNOWN_SLOT;
}

function slotLabel(slot: number): string {
  return slot === UNKNOWN_SLOT ? 'unknown' : String(slot);
}

/** SQLSTATE characters: 0-9 A-Z → 0..35; anything else -1. */
function stateChar(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x5a) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 10;
  return -1;
}
const CLASS_CHARS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const XX_CLASS = 33 * 36 + 33;

function flush(arr: Float64Array, apply: (index: number, value: number) => void): void {
  for (let i = 0; i < arr.length; i++) {
    const v = arr[i]!;
    if (v !== 0) {
      arr[i] = 0;
      apply(i, v);
    }
  }
}

export class PgrelayMetrics {
  readonly registry: Registry;
  private snapshot: MetricsSnapshotProvider | undefined;

  // pending hot-path increments
  private readonly queries = new Float64Array(QUERY_KINDS.length * NODE_SLOTS);
  private readonly errors = new Float64Array(36 * 36);
  private readonly backendIn = new Float64Array(NODE_SLOTS);
  private readonly backendOut = new Float64Array(NODE_SLOTS);
  private readonly backendOpened = new Float64Array(NODE_SLOTS);
  private readonly healthChecks = new Float64Array(HEALTH_CHECK_RESULTS.length * NODE_SLOTS);
  private clientIn = 0;
  private clientOut = 0;
  private failovers = 0;
  private clientConnections = 0;
  /** read-your-writes: reads kept on a standby [0] / moved to the primary [1]; seconds waited; position reads. */
  private readonly rywReads = new Float64Array(2);
  private rywWaited = 0;
  private readonly positionReads = new Float64Array(2);

  private readonly healthDurationChildren: Array<Histogram.Internal<'node'> | undefined> = new Array<
    Histogram.Internal<'node'> | undefined
  >(NODE_SLOTS);
  private readonly healthDuration: Histogram<'node'>;
  private readonly slotWaitHist: Histogram<string>;
  private readonly poolWaitHist: BucketHistogram;
  private readonly pinnedCounter: Counter<'reason'>;

  constructor(opts: MetricsOptions = {}) {
    this.registry = new Registry();
    this.snapshot = opts.snapshot;
    const registers = [this.registry];
    const self = this;

    // ---- event counters (flushed at collect)
    new Counter({
      name: 'pgrelay_queries_total',
      help: 'Statements sent to a backend node, by statement kind (as pool_backend_stats) and node id.',
      labelNames: ['kind', 'node'] as const,
      registers,
      collect() {
        flush(self.queries, (i, v) =>
          this.inc({ kind: QUERY_KINDS[Math.floor(i / NODE_SLOTS)]!, node: slotLabel(i % NODE_SLOTS) }, v),
        );
      },
    });
    new Counter({
      name: 'pgrelay_errors_total',
      help: 'ErrorResponses sent to clients, by SQLSTATE class (first two characters of the code).',
      labelNames: ['sqlstate_class'] as const,
      registers,
      collect() {
        flush(self.errors, (i, v) =>
          this.inc({ sqlstate_class: CLASS_CHARS[Math.floor(i / 36)]! + CLASS_CHARS[i % 36]! }, v),
        );
      },
    });
    new Counter({
      name: 'pgrelay_failovers_total',
      help: 'Failovers performed (primary node changes after a failure or a promote/switchover).',
      registers,
      collect() {
        if (self.failovers > 0) {
          this.inc(self.failovers);
          self.failovers = 0;
        }
      },
    });
    new Counter({
      name: 'pgrelay_client_received_bytes_total',
      help: 'Bytes received from clients.',
      registers,
      collect() {
        if (self.clientIn > 0) {
          this.inc(self.clientIn);
          self.clientIn = 0;
        }
      },
    });
    new Counter({
      name: 'pgrelay_client_sent_bytes_total',
      help: 'Bytes sent to clients.',
      registers,
      collect() {
        if (self.clientOut > 0) {
          this.inc(self.clientOut);
          self.clientOut = 0;
        }
      },
    });
    new Counter({
      name: 'pgrelay_backend_received_bytes_total',
      help: 'Bytes received from backend nodes.',
      labelNames: ['node'] as const,
      registers,
      collect() {
        flush(self.backendIn, (i, v) => this.inc({ node: slotLabel(i) }, v));
      },
    });
    new Counter({
      name: 'pgrelay_backend_sent_bytes_total',
      help: 'Bytes sent to backend nodes.',
      labelNames: ['node'] as const,
      registers,
      collect() {
        flush(self.backendOut, (i, v) => this.inc({ node: slotLabel(i) }, v));
      },
    });
    new Counter({
      name: 'pgrelay_backend_connections_opened_total',
      help: 'Backend connections opened (not taken from the connection cache).',
      labelNames: ['node'] as const,
      registers,
      collect() {
        flush(self.backendOpened, (i, v) => this.inc({ node: slotLabel(i) }, v));
      },
    });
    new Counter({
      name: 'pgrelay_client_connections_total',
      help: 'Client sessions started (authenticated).',
      registers,
      collect() {
        if (self.clientConnections > 0) {
          this.inc(self.clientConnections);
          self.clientConnections = 0;
        }
      },
    });
    new Counter({
      name: 'pgrelay_health_checks_total',
      help: 'Health checks by node and result (skip: node already down).',
      labelNames: ['node', 'result'] as const,
      registers,
      collect() {
        flush(self.healthChecks, (i, v) =>
          this.inc({ result: HEALTH_CHECK_RESULTS[Math.floor(i / NODE_SLOTS)]!, node: slotLabel(i % NODE_SLOTS) }, v),
        );
      },
    });
    new Counter({
      name: 'pgrelay_read_your_writes_reads_total',
      help: 'Reads checked by read-your-writes (sessions that wrote, or every read in global mode), by where they ran: on the standby (it had replayed the writes) or moved to the primary.',
      labelNames: ['ran_on'] as const,
      registers,
      collect() {
        flush(self.rywReads, (i, v) => this.inc({ ran_on: i === 0 ? 'standby' : 'primary' }, v));
      },
    });
    new Counter({
      name: 'pgrelay_read_your_writes_wait_seconds_total',
      help: 'Time reads waited for write positions and for standbys to replay them (read_your_writes_wait).',
      registers,
      collect() {
        if (self.rywWaited > 0) {
          this.inc(self.rywWaited);
          self.rywWaited = 0;
        }
      },
    });
    new Counter({
      name: 'pgrelay_read_your_writes_position_reads_total',
      help: "WAL positions read for read-your-writes: a write's on the primary (kind=write), a standby's replay position (kind=replay).",
      labelNames: ['kind'] as const,
      registers,
      collect() {
        flush(self.positionReads, (i, v) => this.inc({ kind: i === 0 ? 'write' : 'replay' }, v));
      },
    });
    this.healthDuration = new Histogram({
      name: 'pgrelay_health_check_duration_seconds',
      help: 'Duration of health checks that ran (including retries).',
      labelNames: ['node'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.slotWaitHist = new Histogram({
      name: 'pgrelay_session_slot_wait_seconds',
      help: 'Time a client waited for a session slot (num_init_children) before being served.',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });

    // Observed once per transaction in pool_mode = transaction: a histogram with a cheap observe.
    this.poolWaitHist = new BucketHistogram(
      'pgrelay_pool_wait_seconds',
      'pool_mode = transaction: time a client waited for a pooled backend connection (served or timed out).',
      [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      this.registry,
    );
    this.pinnedCounter = new Counter({
      name: 'pgrelay_pinned_sessions_total',
      help: 'pool_mode = transaction: sessions that keep their backends until they end, by the session state they used.',
      labelNames: ['reason'] as const,
      registers,
    });
    new Gauge({
      name: 'pgrelay_pool_clients',
      help: 'pool_mode = transaction: clients holding (active) or waiting for (waiting) a connection of a server pool.',
      labelNames: ['node', 'user', 'database', 'state'] as const,
      registers,
      collect() {
        this.reset();
        for (const p of self.snapshot?.pools?.() ?? []) {
          const l = { node: String(p.nodeId), user: p.user, database: p.database };
          this.set({ ...l, state: 'active' }, p.active);
          this.set({ ...l, state: 'waiting' }, p.waiting);
        }
      },
    });
    new Gauge({
      name: 'pgrelay_pool_server_connections',
      help: 'pool_mode = transaction: backend connections of a server pool, lent to a client (active) or idle.',
      labelNames: ['node', 'user', 'database', 'state'] as const,
      registers,
      collect() {
        this.reset();
        for (const p of self.snapshot?.pools?.() ?? []) {
          const l = { node: String(p.nodeId), user: p.user, database: p.database };
          this.set({ ...l, state: 'active' }, p.active);
          this.set({ ...l, state: 'idle' }, p.idle);
        }
      },
    });

    // ---- scrape-time gauges
    new Gauge({
      name: 'pgrelay_build_info',
      help: 'pgrelay version (value is always 1).',
      labelNames: ['version'] as const,
      registers,
      collect() {
        this.set({ version: opts.version ?? 'unknown' }, 1);
      },
    });
    new Gauge({
      name: 'pgrelay_node_info',
      help: 'Configured backend nodes (value is always 1).',
      labelNames: ['node', 'host', 'port'] as const,
      registers,
      collect() {
        this.reset();
        for (const n of self.snapshot?.nodes() ?? [])
          this.set({ node: String(n.id), host: n.host, port: String(n.port) }, 1);
      },
    });
    new Gauge({
      name: 'pgrelay_node_status',
      help: "Backend node status as pgrelay sees it (SHOW pool_nodes 'status'): 1 for the current status, 0 for the others.",
      labelNames: ['node', 'status'] as const,
      registers,
      collect() {
        this.reset();
        for (const n of self.snapshot?.nodes() ?? []) {
          for (const s of NODE_STATUSES) this.set({ node: String(n.id), status: s }, n.status === s ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'pgrelay_node_role',
      help: 'Backend node role: 1 for the current role, 0 for the other.',
      labelNames: ['node', 'role'] as const,
      registers,
      collect() {
        this.reset();
        for (const n of self.snapshot?.nodes() ?? []) {
          for (const r of NODE_ROLES) this.set({ node: String(n.id), role: r }, n.role === r ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'pgrelay_replication_delay_bytes',
      help: 'Replication delay of a standby in WAL bytes (0 for the primary), as last measured by the sr check.',
      labelNames: ['node'] as const,
      registers,
      collect() {
        this.reset();
        for (const n of self.snapshot?.nodes() ?? [])
          this.set({ node: String(n.id) }, n.role === 'primary' ? 0 : Math.max(0, n.delayBytes));
      },
    });
    new Gauge({
      name: 'pgrelay_replication_delay_seconds',
      help: 'Replication delay of a standby in seconds (replay_lag; 0 for the primary), as last measured by the sr check.',
      labelNames: ['node'] as const,
      registers,
      collect() {
        this.reset();
        for (const n of self.snapshot?.nodes() ?? [])
          this.set({ node: String(n.id) }, n.role === 'primary' ? 0 : Math.max(0, n.delaySeconds));
      },
    });
    new Gauge({
      name: 'pgrelay_replay_position_bytes',
      help: 'WAL position a standby had replayed when last asked (sr check or a read-your-writes check), as a byte offset; absent when unknown.',
      labelNames: ['node'] as const,
      registers,
      collect() {
        this.reset();
        for (const n of self.snapshot?.nodes() ?? [])
          if (n.role !== 'primary' && n.replayPosition !== undefined && n.replayPosition > 0n)
            this.set({ node: String(n.id) }, Number(n.replayPosition));
      },
    });
    new Gauge({
      name: 'pgrelay_newest_write_position_bytes',
      help: 'WAL position of the newest write acknowledged to a client (read-your-writes), as a byte offset; 0 when none since the primary last changed.',
      registers,
      collect() {
        this.set(Number(self.snapshot?.newestWritePosition?.() ?? 0n));
      },
    });
    new Gauge({
      name: 'pgrelay_backend_connections',
      help: 'Open backend connections by node, user, database and state (in_use: held by a session; idle: in the connection cache).',
      labelNames: ['node', 'user', 'database', 'state'] as const,
      registers,
      collect() {
        this.reset();
        const snap = self.snapshot;
        if (!snap) return;
        const counts = new Map<string, { node: string; user: string; database: string; state: string; n: number }>();
        for (const c of snap.backendConnections()) {
          const state = c.inUse ? 'in_use' : 'idle';
          const key = `${c.nodeId}\u0000${c.user}\u0000${c.database}\u0000${state}`;
          const e = counts.get(key);
          if (e) e.n++;
          else counts.set(key, { node: String(c.nodeId), user: c.user, database: c.database, state, n: 1 });
        }
        for (const e of counts.values())
          this.set({ node: e.node, user: e.user, database: e.database, state: e.state }, e.n);
      },
    });
    new Gauge({
      name: 'pgrelay_client_sessions',
      help: 'Client sessions: active (being served) and waiting (queued for a session slot).',
      labelNames: ['state'] as const,
      registers,
      collect() {
        const s = self.snapshot?.sessions() ?? { active: 0, waiting: 0 };
        this.set({ state: 'active' }, s.active);
        this.set({ state: 'waiting' }, s.waiting);
      },
    });
    const backpressure = (): SessionBackpressure =>
      self.snapshot?.backpressure() ?? {
        bytesToClients: 0,
        bytesToBackends: 0,
        clientReadsPaused: 0,
        backendReadsPaused: 0,
      };
    new Gauge({
      name: 'pgrelay_buffered_bytes',
      help: 'Bytes sessions have written and their peers have not taken yet: to_client, to_backend.',
      labelNames: ['direction'] as const,
      registers,
      collect() {
        const p = backpressure();
        this.set({ direction: 'to_client' }, p.bytesToClients);
        this.set({ direction: 'to_backend' }, p.bytesToBackends);
      },
    });
    new Gauge({
      name: 'pgrelay_sessions_backpressured',
      help: 'Sessions held back by backpressure: not reading their client (side=client) or a backend (side=backend).',
      labelNames: ['side'] as const,
      registers,
      collect() {
        const p = backpressure();
        this.set({ side: 'client' }, p.clientReadsPaused);
        this.set({ side: 'backend' }, p.backendReadsPaused);
      },
    });

    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: 'pgrelay_' });
      // prom-client names these gauges *_total, which Prometheus reserves for counters.
      for (const name of [
        'nodejs_active_resources_total',
        'nodejs_active_handles_total',
        'nodejs_active_requests_total',
      ]) {
        this.registry.removeSingleMetric(`pgrelay_${name}`);
      }
    }
  }

  /** Install or replace the scrape-time snapshot provider. */
  setSnapshotProvider(p: MetricsSnapshotProvider | undefined): void {
    this.snapshot = p;
  }

  // ---- hot path (no allocation)

  /** One statement sent to `nodeId` (call once per node for statements sent to several nodes). */
  queryRouted(kind: QueryKind, nodeId: number): void {
    const k = KIND_INDEX[kind] ?? OTHER_KIND;
    this.queries[k * NODE_SLOTS + nodeSlot(nodeId)]! += 1;
  }

  /** An ErrorResponse sent to a client (code: 5-character SQLSTATE). */
  error(sqlstate: string): void {
    const a = stateChar(sqlstate.charCodeAt(0));
    const b = stateChar(sqlstate.charCodeAt(1));
    this.errors[a < 0 || b < 0 ? XX_CLASS : a * 36 + b]! += 1;
  }

  clientBytesIn(n: number): void {
    this.clientIn += n;
  }

  clientBytesOut(n: number): void {
    this.clientOut += n;
  }

  backendBytesIn(nodeId: number, n: number): void {
    this.backendIn[nodeSlot(nodeId)]! += n;
  }

  backendBytesOut(nodeId: number, n: number): void {
    this.backendOut[nodeSlot(nodeId)]! += n;
  }

  backendConnectionOpened(nodeId: number): void {
    this.backendOpened[nodeSlot(nodeId)]! += 1;
  }

  clientConnected(): void {
    this.clientConnections++;
  }

  failover(): void {
    this.failovers++;
  }

  poolWait(seconds: number): void {
    this.poolWaitHist.observe(seconds);
  }

  pinned(reason: string): void {
    this.pinnedCounter.inc({ reason });
  }

  /** Seconds a client waited for a session slot. */
  slotWait(seconds: number): void {
    this.slotWaitHist.observe(seconds);
  }

  positionRead(kind: 'write' | 'replay'): void {
    this.positionReads[kind === 'write' ? 0 : 1]! += 1;
  }

  readYourWrites(where: 'standby' | 'primary', waitedSeconds: number): void {
    this.rywReads[where === 'standby' ? 0 : 1]! += 1;
    this.rywWaited += waitedSeconds;
  }

  /** One health check finished; durationSeconds for checks that ran (not for skips). */
  healthCheck(nodeId: number, result: HealthCheckResult, durationSeconds?: number): void {
    const slot = nodeSlot(nodeId);
    this.healthChecks[(HC_INDEX[result] ?? 1) * NODE_SLOTS + slot]! += 1;
    if (durationSeconds !== undefined && result !== 'skip') {
      let child = this.healthDurationChildren[slot];
      if (!child) {
        child = this.healthDuration.labels({ node: slotLabel(slot) });
        this.healthDurationChildren[slot] = child;
      }
      child.observe(durationSeconds);
    }
  }

  /** Exposition text (Prometheus format). */
  exposition(): Promise<string> {
    return this.registry.metrics();
  }
}

export function createMetrics(opts: MetricsOptions = {}): PgrelayMetrics {
  return new PgrelayMetrics(opts);
}

/** Structural views of NodeTable / SessionRegistry / ConnectionCache, for metricsSnapshotFrom. */
export interface MetricsSources {
  nodes: { all(): readonly MetricsNode[] };
  sessions: {
    all(): Iterable<
      BackpressureView & {
        readonly user: string;
        readonly database: string;
        readonly backendConnections: ReadonlyArray<{ readonly nodeId: number }>;
      }
    >;
    readonly size: number;
  };
  cache: { entries(): Iterable<{ readonly nodeId: number; readonly params: ReadonlyMap<string, string> }> };
  /** Clients queued for a session slot. */
  waiting(): number;
  /** Read-your-writes across sessions. */
  horizon?: { readonly position: bigint };
  /** pool_mode = transaction: the server pools. */
  pools?: { stats(): ReadonlyArray<MetricsPool> };
}

/**
 * A MetricsSnapshotProvider over pgrelay's live objects:
 * `metricsSnapshotFrom({ nodes: nodeTable, sessions: sessionRegistry, cache, waiting: () => gate.waiting })`.
 * Connections held by sessions are in_use (labelled with the session's user and
 * database); cached ones are idle (user/database from their start-up parameters).
 */
export function metricsSnapshotFrom(src: MetricsSources): MetricsSnapshotProvider {
  return {
    nodes: () => src.nodes.all(),
    newestWritePosition: () => src.horizon?.position ?? 0n,
    sessions: () => ({ active: src.sessions.size, waiting: src.waiting() }),
    pools: () => src.pools?.stats() ?? [],
    backpressure: () => {
      const p = { bytesToClients: 0, bytesToBackends: 0, clientReadsPaused: 0, backendReadsPaused: 0 };
      for (const s of src.sessions.all()) {
        p.bytesToClients += s.bufferedToClient;
        p.bytesToBackends += s.bufferedToBackends;
        if (s.clientReadsPaused) p.clientReadsPaused++;
        if (s.backendReadsPaused) p.backendReadsPaused++;
      }
      return p;
    },
    *backendConnections(): Iterable<MetricsBackendConnection> {
      for (const s of src.sessions.all()) {
        for (const c of s.backendConnections)
          yield { nodeId: c.nodeId, user: s.user, database: s.database, inUse: true };
      }
      for (const p of src.pools?.stats() ?? [])
        for (let i = 0; i < p.idle; i++) yield { nodeId: p.nodeId, user: p.user, database: p.database, inUse: false };
      for (const c of src.cache.entries()) {
        const user = c.params.get('user') ?? '';
        yield { nodeId: c.nodeId, user, database: c.params.get('database') ?? user, inUse: false };
      }
    },
  };
}
