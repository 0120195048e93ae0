/**
 * Configuration errors with their place (file and line, or the command line),
 * collected over a whole load so that one run reports every mistake.
 */

export interface ConfigIssue {
  /** File name as given ('command line' for LoadOptions.set / backends). */
  file: string;
  /** 1-based line (position in `set` for the command line); 0 when not tied to a line. */
  line: number;
  /** Parameter name as written (lower-cased); '' when the line has no key. */
  key: string;
  /** Message without the location prefix. */
  message: string;
}

export const COMMAND_LINE = 'command line';

export function formatLocation(i: { file: string; line: number }): string {
  if (i.file === COMMAND_LINE || i.line <= 0) return i.file;
  return `${i.file}:${i.line}`;
}

export function formatIssue(i: ConfigIssue): string {
  return `${formatLocation(i)}: ${i.message}`;
}

export class ConfigError extends Error {
  readonly errors: ConfigIssue[];
  constructor(errors: ConfigIssue[]) {
    super(errors.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.errors = errors;
  }
}
