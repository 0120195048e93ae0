/**
 * What a client was told of the settings PostgreSQL reports (ParameterStatus:
 * application_name, TimeZone, DateStyle…), so that it is told a value when the value
 * changes for it, and only then, as a direct connection tells it (PostgreSQL compares
 * with what it last reported on that connection).
 *
 * A server's own report compares with that connection's last value; with pooled
 * connections (pool_mode = transaction) another client may have set that value, so the
 * server's report can repeat what this client was told, or a RESET that pgrelay follows
 * with the client's start-up value can report a value the connection already had. Every
 * report on its way to the client is checked here.
 */
import { BE } from '../protocol/constants.js';
import { decodeParameterStatus, parameterStatus } from '../protocol/messages.js';

export class ReportedSettings {
  /** Lower-case name → the value last reported to the client. */
  private readonly values = new Map<string, string>();

  /** The client is told `name` = `value` (start-up). */
  told(name: string, value: string): void {
    this.values.set(name.toLowerCase(), value);
  }

  /**
   * A report of `name` = `value` on its way to the client: true, and recorded, when it tells
   * the client something new; false when the client was told that value last.
   */
  tells(name: string, value: string): boolean {
    const key = name.toLowerCase();
    if (this.values.get(key) === value) return false;
    this.values.set(key, value);
    return true;
  }
}

/**
 * What a report of `name` = `value` tells the client: the value (perhaps another: see
 * Session.tellClient), or undefined when it is dropped (ReportedSettings.tells).
 */
export type ReportFilter = (name: string, value: string) => string | undefined;

/**
 * `bytes` (whole backend messages: a reply pgrelay held) with its ParameterStatus messages
 * as `tells` has them (dropped, or another value); the same buffer when none changes.
 */
export function filterReports(bytes: Buffer, tells: ReportFilter): Buffer {
  let kept: Buffer[] | undefined;
  let from = 0;
  for (let at = 0; at + 5 <= bytes.length; ) {
    const next = at + 1 + bytes.readUInt32BE(at + 1);
    if (next > bytes.length) break;
    const r = bytes[at] === BE.ParameterStatus ? decodeParameterStatus(bytes, at + 5, next) : undefined;
    const told = r === undefined ? undefined : tells(r[0], r[1]);
    if (r !== undefined && told !== r[1]) {
      kept ??= [];
      kept.push(bytes.subarray(from, at));
      if (told !== undefined) kept.push(parameterStatus(r[0], told));
      from = next;
    }
    at = next;
  }
  if (kept === undefined) return bytes;
  kept.push(bytes.subarray(from));
  return Buffer.concat(kept);
}
