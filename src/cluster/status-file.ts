/**
 * `<logdir>/pgpool_status`: node status kept across restarts, in pgpool's text
 * format — one line per node, `up`, `down` or `unused`, line N = node N.
 * (pgpool also reads an old binary format; pgrelay does not.) A node written
 * as `down` stays down at the next start until it is attached (or auto_failback
 * brings it back), unless pgrelay starts with -D / --discard-status.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { NodeStatus } from './nodes.js';

export const STATUS_FILE_NAME = 'pgpool_status';

export type PersistedStatus = 'up' | 'down' | 'unused';

export function statusFilePath(logdir: string): string {
  return path.join(logdir || '.', STATUS_FILE_NAME);
}

/** waiting is saved as up (pgpool saves CON_CONNECT_WAIT as up too). */
export function persistedStatus(s: NodeStatus): PersistedStatus {
  return s === 'waiting' ? 'up' : s;
}

export function formatStatusFile(statuses: NodeStatus[]): string {
  return statuses.map((s) => `${persistedStatus(s)}\n`).join('');
}

/** Parse the file text; unknown lines become undefined (no information for that node). */
export function parseStatusFile(text: string): Array<PersistedStatus | undefined> {
  const lines = text.split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines.map((l) => {
    const v = l.trim().toLowerCase();
    return v === 'up' || v === 'down' || v === 'unused' ? v : undefined;
  });
}

/** Read; undefined when the file does not exist or cannot be read. */
export function readStatusFile(file: string): Array<PersistedStatus | undefined> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  return parseStatusFile(text);
}

/** Write atomically (temp file + rename). Throws on I/O errors. */
export function writeStatusFile(file: string, statuses: NodeStatus[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp${process.pid}`;
  fs.writeFileSync(tmp, formatStatusFile(statuses), { mode: 0o644 });
  fs.renameSync(tmp, file);
}
