/**
 * Helpers for the failover integration tests (test/integration/failover-*.test.ts):
 * pgrelay's JSON log lines, SHOW pool_nodes through the proxy, and a write load
 * of node-postgres workers that reconnect and retry on error and record which
 * INSERTs were acknowledged.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { DevCluster } from '../../dev/devcluster.js';
import type { ProxyHandle } from './proxy.js';

export type LogLine = Record<string, unknown>;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Every JSON line pgrelay wrote so far (stdout or stderr). */
export function jsonLines(proxy: ProxyHandle): LogLine[] {
  const res: LogLine[] = [];
  for (const l of proxy.logs().split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      res.push(JSON.parse(l) as LogLine);
    } catch {
      // partial line
    }
  }
  return res;
}

/** Resolve with the first JSON log line matching pred (rejects after timeoutMs with the log tail). */
export async function waitForJson(
  proxy: ProxyHandle,
  pred: (l: LogLine) => boolean,
  timeoutMs: number,
  what: string,
): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = jsonLines(proxy).find(pred);
    if (hit) return hit;
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}\n--- pgrelay logs (tail) ---\n${proxy.logs().slice(-6000)}`,
      );
    await sleep(50);
  }
}

export const statusChange =
  (node: number, to: string) =>
  (l: LogLine): boolean =>
    l.msg === 'node status changed' && l.node === node && l.to === to;

/** Poll cond() every 50 ms; resolves with the elapsed ms, rejects after timeoutMs. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = Date.now();
  let last = '';
  for (;;) {
    try {
      if (await cond()) return Date.now() - t0;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() - t0 > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last})` : ''}`);
    await sleep(50);
  }
}

export type ClientWithError = pg.Client & { asyncErrors?: Array<Error & { code?: string }> };

/** The asynchronous 'error' events of a client made by connect() (e.g. a FATAL sent while it was idle), oldest first. */
export function asyncErrors(c: pg.Client): Array<Error & { code?: string }> {
  return (c as ClientWithError).asyncErrors ?? [];
}

/** A connected pg.Client to host:port (errors after connect are swallowed: the caller sees them on its next query). */
export async function connect(port: number, opts: Omit<pg.ClientConfig, 'port'> = {}): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user: 'postgres',
    database: 'postgres',
    connectionTimeoutMillis: 10_000,
    query_timeout: 20_000,
    application_name: 'pgrelay-failover-test',
    ...opts,
  });
  c.on('error', (e: Error) => {
    const cw = c as ClientWithError;
    (cw.asyncErrors ??= []).push(e as Error & { code?: string });
  });
  try {
    await c.connect();
  } catch (e) {
    destroy(c);
    throw e;
  }
  return c;
}

/** Close a client without waiting for the server (bounded). */
export function destroy(c: pg.Client | undefined): void {
  if (!c) return;
  const s = (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  void Promise.race([c.end().catch(() => undefined), sleep(1000)]).then(() => s?.destroy());
}

export interface PoolNodeRow {
  node_id: string;
  hostname: string;
  port: string;
  status: string;
  pg_status: string;
  lb_weight: string;
  role: string;
  pg_role: string;
  select_cnt: string;
  load_balance_node: string;
  replication_delay: string;
  replication_state: string;
  replication_sync_state: string;
  last_status_change: string;
}

/** SHOW pool_nodes through pgrelay (simple protocol, a fresh connection). */
export async function showPoolNodes(proxy: ProxyHandle, user = 'postgres'): Promise<PoolNodeRow[]> {
  const c = await connect(proxy.port, { user, query_timeout: 15_000 });
  try {
    const r = await c.query<PoolNodeRow>('SHOW pool_nodes');
    return r.rows;
  } finally {
    destroy(c);
  }
}

/** Status column of SHOW pool_nodes, by node id. */
export async function poolStatus(proxy: ProxyHandle): Promise<string[]> {
  return (await showPoolNodes(proxy)).map((r) => r.status);
}

/** DevCluster node id serving `port`. */
export function nodeOfPort(cluster: DevCluster, port: number | string): number {
  const n = cluster.nodes.find((x) => x.port === Number(port));
  if (!n) throw new Error(`no node listens on ${String(port)}`);
  return n.id;
}

// ---------------------------------------------------------------------------
// Write load

export interface WriteEvent {
  worker: number;
  /** When the outcome was seen (ms epoch). */
  at: number;
  /** When the INSERT (or its BEGIN) was sent: a write sent before a kill may be seen after it. */
  sentAt: number;
  ok: boolean;
  id: number;
  /** Backend port that executed the INSERT (inet_server_port()), on success. */
  port?: number;
  code?: string;
  error?: string;
}

export interface WriteLoadOptions {
  port: number;
  workers: number;
  /** Table with a primary key column `id bigint` and a `worker int` column. */
  table: string;
  /** Pause between two INSERTs of a worker (ms, default 20). */
  pauseMs?: number;
  /** Pause after an error before reconnecting (ms, default 100). */
  retryDelayMs?: number;
  /** query_timeout of each client (ms, default 10 s): a hung statement counts as an error. */
  queryTimeoutMs?: number;
  /** Wrap each INSERT in an explicit BEGIN ... COMMIT (default false: autocommit). */
  explicitTx?: boolean;
}

/**
 * `workers` node-postgres loops, each: connect (through pgrelay) if needed;
 * INSERT one row with a fresh unique id (RETURNING inet_server_port()); on any
 * error record it, drop the connection, wait, reconnect and go on with a new id.
 * `acked` holds every id whose INSERT (COMMIT) was acknowledged to the client.
 */
export class WriteLoad {
  readonly events: WriteEvent[] = [];
  readonly acked = new Set<number>();
  private nextId = 1;
  private running = true;
  private readonly loops: Promise<void>[] = [];
  private readonly clients = new Set<pg.Client>();

  constructor(private readonly o: WriteLoadOptions) {
    for (let w = 0; w < o.workers; w++) this.loops.push(this.loop(w));
  }

  private async loop(worker: number): Promise<void> {
    let c: pg.Client | undefined;
    while (this.running) {
      const id = this.nextId++;
      let sentAt = Date.now();
      try {
        if (!c) {
          c = await connect(this.o.port, {
            query_timeout: this.o.queryTimeoutMs ?? 10_000,
            application_name: `writeload-${worker}`,
          });
          this.clients.add(c);
        }
        let port: number;
        sentAt = Date.now();
        const ins = `INSERT INTO ${this.o.table} (id, worker) VALUES (${id}, ${worker}) RETURNING inet_server_port() AS port`;
        if (this.o.explicitTx) {
          await c.query('BEGIN');
          port = Number((await c.query<{ port: number }>(ins)).rows[0]?.port);
          await c.query('COMMIT');
        } else {
          port = Number((await c.query<{ port: number }>(ins)).rows[0]?.port);
        }
        this.acked.add(id);
        this.events.push({ worker, at: Date.now(), sentAt, ok: true, id, port });
        await sleep(this.o.pauseMs ?? 20);
      } catch (e) {
        const err = e as Error & { code?: string };
        this.events.push({ worker, at: Date.now(), sentAt, ok: false, id, code: err.code, error: err.message });
        if (c) {
          this.clients.delete(c);
          destroy(c);
          c = undefined;
        }
        await sleep(this.o.retryDelayMs ?? 100);
      }
    }
    if (c) {
      this.clients.delete(c);
      destroy(c);
    }
  }

  /**
   * Successful writes sent after time t (ms epoch). Judged by when they were sent: on a
   * loaded machine the acknowledgement of a write the old primary committed just before a
   * kill can be seen after it.
   */
  successesAfter(t: number): WriteEvent[] {
    return this.events.filter((e) => e.ok && e.sentAt > t);
  }

  errors(): WriteEvent[] {
    return this.events.filter((e) => !e.ok);
  }

  /** Stop every worker (bounded: clients are destroyed after timeoutMs). */
  async stop(timeoutMs = 15_000): Promise<void> {
    this.running = false;
    const t = setTimeout(() => {
      for (const c of this.clients) destroy(c);
    }, timeoutMs);
    await Promise.race([Promise.allSettled(this.loops), sleep(timeoutMs + 2000)]);
    clearTimeout(t);
  }
}

/** Error codes of WriteEvents, counted ('(none)' for errors without a SQLSTATE). */
export function countCodes(events: WriteEvent[]): Record<string, number> {
  const m: Record<string, number> = {};
  for (const e of events) {
    const k = e.code ?? `(none: ${(e.error ?? '').slice(0, 60)})`;
    m[k] = (m[k] ?? 0) + 1;
  }
  return m;
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Every failover_command placeholder, in pgpool's order. */
export const PLACEHOLDERS = '%d %h %p %D %m %H %M %P %r %R %N %S';

/**
 * pgpool.conf keys for a fast failover test: 1 s health and replication checks,
 * auto_failback, and `examples/failover.sh` / `examples/follow_primary.sh` (or the
 * given failover script) called with every placeholder.
 */
export function failoverConfig(opts: { failoverScript?: string } = {}): Record<string, string | number | boolean> {
  return {
    health_check_period: 1,
    health_check_max_retries: 1,
    health_check_retry_delay: 1,
    health_check_timeout: 5,
    connect_timeout: 2000,
    sr_check_period: 1,
    auto_failback: true,
    auto_failback_interval: 1,
    search_primary_node_timeout: 30,
    failover_command: `${opts.failoverScript ?? path.join(REPO_ROOT, 'examples', 'failover.sh')} ${PLACEHOLDERS}`,
    follow_primary_command: `${path.join(REPO_ROOT, 'examples', 'follow_primary.sh')} ${PLACEHOLDERS}`,
    log_min_messages: 'info',
  };
}

/** The repository root (for scripts under examples/ and test/support/). */
export const REPO = REPO_ROOT;
