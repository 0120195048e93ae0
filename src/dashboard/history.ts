/**
 * The dashboard's time series: every `intervalMs` one sample per node of the
 * statements per second sent to it (from the admin statement counters) and its
 * replication lag (bytes and seconds, as the sr check last measured it). Keeps
 * the last `capacity` samples (5 minutes at 1 s) in memory.
 */
import type { NodeStatementCounters } from '../admin/context.js';

export interface HistorySource {
  nodes(): ReadonlyArray<{ id: number; delayBytes: number; delaySeconds: number }>;
  primaryId(): number;
  counters(nodeId: number): Readonly<NodeStatementCounters> | undefined;
}

export interface NodeSeries {
  id: number;
  statementsPerSecond: number[];
  lagBytes: number[];
  lagSeconds: number[];
}

export interface HistorySnapshot {
  intervalMs: number;
  /** Sample times, seconds since epoch (uPlot's x axis). */
  time: number[];
  nodes: NodeSeries[];
}

function statements(c: Readonly<NodeStatementCounters> | undefined): number {
  if (!c) return 0;
  return c.select_cnt + c.insert_cnt + c.update_cnt + c.delete_cnt + c.ddl_cnt + c.other_cnt;
}

export class StatsHistory {
  private readonly time: number[] = [];
  private readonly series = new Map<number, NodeSeries>();
  private readonly last = new Map<number, number>();
  private lastAt = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly source: HistorySource,
    readonly intervalMs = 1000,
    readonly capacity = 300,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    if (this.timer) return;
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Take one sample now. */
  sample(): void {
    const t = this.now();
    const dt = this.lastAt > 0 ? (t - this.lastAt) / 1000 : 0;
    this.lastAt = t;
    this.time.push(t / 1000);
    const primary = this.source.primaryId();
    for (const n of this.source.nodes()) {
      let s = this.series.get(n.id);
      if (!s) {
        // a node seen for the first time: no data before now
        s = {
          id: n.id,
          statementsPerSecond: this.time.slice(1).map(() => 0),
          lagBytes: this.time.slice(1).map(() => 0),
          lagSeconds: this.time.slice(1).map(() => 0),
        };
        this.series.set(n.id, s);
      }
      const count = statements(this.source.counters(n.id));
      const prev = this.last.get(n.id);
      this.last.set(n.id, count);
      s.statementsPerSecond.push(prev !== undefined && dt > 0 ? Math.max(0, count - prev) / dt : 0);
      const isPrimary = n.id === primary;
      s.lagBytes.push(isPrimary ? 0 : Math.max(0, n.delayBytes));
      s.lagSeconds.push(isPrimary ? 0 : Math.max(0, n.delaySeconds));
    }
    if (this.time.length > this.capacity) {
      const drop = this.time.length - this.capacity;
      this.time.splice(0, drop);
      for (const s of this.series.values()) {
        s.statementsPerSecond.splice(0, drop);
        s.lagBytes.splice(0, drop);
        s.lagSeconds.splice(0, drop);
      }
    }
  }

  snapshot(): HistorySnapshot {
    return {
      intervalMs: this.intervalMs,
      time: [...this.time],
      nodes: [...this.series.values()].map((s) => ({
        id: s.id,
        statementsPerSecond: s.statementsPerSecond.map((v) => Math.round(v * 100) / 100),
        lagBytes: [...s.lagBytes],
        lagSeconds: [...s.lagSeconds],
      })),
    };
  }
}
