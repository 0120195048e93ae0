/**
 * The engine's answer to one admin command, how answers are built, and the
 * value formats pgpool's reports use (C's %f, strftime's %F %T). wire.ts turns
 * an answer into protocol messages.
 */
import type { ErrorFields } from '../protocol/messages.js';

export type AdminResult =
  | { kind: 'rows'; columns: string[]; rows: string[][]; tag: string; notices?: ErrorFields[] }
  | { kind: 'command'; tag: string; notices?: ErrorFields[] }
  | { kind: 'error'; error: ErrorFields };

export function errorResult(code: string, message: string, extra: Partial<ErrorFields> = {}): AdminResult {
  return { kind: 'error', error: { severity: 'ERROR', code, message, ...extra } };
}

export function rowsResult(columns: string[], rows: string[][], notices?: ErrorFields[]): AdminResult {
  const r: AdminResult = { kind: 'rows', columns, rows, tag: `SELECT ${rows.length}` };
  if (notices && notices.length > 0) r.notices = notices;
  return r;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** strftime("%F %T") in local time; '' for 0/undefined. */
export function formatTimestamp(ms: number | undefined): string {
  if (!ms) return '';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** C's %f. */
export function f6(x: number): string {
  return Number.isFinite(x) ? x.toFixed(6) : '0.000000';
}

export function int(x: number | undefined): string {
  return String(Math.trunc(x ?? 0));
}

/** Normalised load-balance weight of each node (over all configured nodes, as pgpool). */
export function normalisedWeights(nodes: ReadonlyArray<{ weight: number }>): number[] {
  let sum = 0;
  for (const n of nodes) sum += n.weight > 0 ? n.weight : 0;
  return nodes.map((n) => (sum > 0 && n.weight > 0 ? n.weight / sum : 0));
}
