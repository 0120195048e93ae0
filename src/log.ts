/**
 * JSON logging with pino. pgpool's `log_min_messages` levels map onto pino's: LOG-class
 * events (connections, node state changes, start/stop) are written at pino `info` and,
 * as in PostgreSQL, appear unless log_min_messages is `error` or higher.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config/types.js';

export type { Logger };

export function pinoLevel(level: LogLevel): string {
  switch (level) {
    case 'debug5':
    case 'debug4':
    case 'debug3':
    case 'debug2':
    case 'debug1':
      return 'debug';
    case 'info':
    case 'notice':
    case 'warning':
    case 'log':
      return 'info';
    case 'error':
      return 'error';
    case 'fatal':
    case 'panic':
      return 'fatal';
    default:
      return 'info';
  }
}

export interface LogOptions {
  level: LogLevel;
  /** 'stderr' / 'stdout' (default: stdout) or 'file' to write `<logdir>/pgrelay.log`. */
  destination?: string;
  logdir?: string;
}

export function createLogger(opts: LogOptions): Logger {
  const options = {
    level: pinoLevel(opts.level),
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  // pgpool allows a list ('stderr,syslog'): the first entry pgrelay knows wins; syslog means stdout.
  const dest = (opts.destination ?? 'stdout').toLowerCase().split(',')[0]?.trim() ?? 'stdout';
  if (dest === 'file' && opts.logdir) {
    fs.mkdirSync(opts.logdir, { recursive: true });
    return pino(options, pino.destination({ dest: path.join(opts.logdir, 'pgrelay.log'), sync: false, mkdir: true }));
  }
  if (dest === 'stderr') return pino(options, pino.destination({ fd: 2, sync: false }));
  return pino(options, pino.destination({ fd: 1, sync: false }));
}

/** Statement text for logs, without passwords (ALTER/CREATE ROLE … PASSWORD '…'). */
export function redact(sql: string): string {
  return /password/i.test(sql) ? sql.replace(/(password\s+)('(?:[^']|'')*'|\S+)/gi, "$1'*****'") : sql;
}
