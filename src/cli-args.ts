/**
 * The one command-line reader of pgrelay's commands: node:util parseArgs
 * (getopt-like: `-x V`, `-xV`, grouped flags `-Dn`, `--long V`, `--long=V`,
 * `--` ends the options), with pgrelay's error messages and option spellings
 * that parseArgs cannot declare by itself (several long or short spellings of
 * one option, `-?`).
 */
import { parseArgs } from 'node:util';

/** Bad command line: exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Option name → whether it takes a value, and how it may be spelled (`-f`, `--config-file`). */
export type OptionSpec = Record<string, { value: boolean; spellings: readonly string[] }>;

/** An option's `value` is '' for a flag; `spelled` is the option as typed, for messages. */
export type CommandLineItem<Name extends string = string> =
  | { kind: 'option'; name: Name; value: string; spelled: string }
  | { kind: 'positional'; value: string };

export interface CommandLineOptions {
  /** Prefix of error messages, e.g. `stop: ` ('' for none). */
  prefix?: string;
  /** `-1` is a positional (a node id to reject with a clear message), not an unknown option `-1`. */
  negativeNumbersArePositional?: boolean;
}

type ParseArgsOptions = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

/**
 * parseArgs knows one long and one short spelling per option, so each spelling
 * becomes an option of its own: a long one under its name, a short one under
 * its spelling (`-?` has no long form to hang on).
 */
function parseArgsOptions(spec: OptionSpec): ParseArgsOptions {
  const options: ParseArgsOptions = {};
  for (const s of Object.values(spec)) {
    const type = s.value ? 'string' : 'boolean';
    for (const spelling of s.spellings) {
      if (spelling.startsWith('--')) options[spelling.slice(2)] = { type };
      else options[spelling] = { type, short: spelling.slice(1) };
    }
  }
  return options;
}

/** Spelling → option name. */
function bySpelling(spec: OptionSpec): Map<string, string> {
  const names = new Map<string, string>();
  for (const [name, s] of Object.entries(spec)) for (const spelling of s.spellings) names.set(spelling, name);
  return names;
}

/**
 * The options and positionals of `argv` in order. Throws UsageError at the
 * first unknown option, option without its value, or flag given a value — only
 * when the iteration reaches it, so an earlier `--help` can still be acted on.
 */
export function* commandLine<S extends OptionSpec>(
  argv: readonly string[],
  spec: S,
  opts: CommandLineOptions = {},
): Generator<CommandLineItem<keyof S & string>> {
  const prefix = opts.prefix ?? '';
  const names = bySpelling(spec);
  const { tokens } = parseArgs({
    args: [...argv],
    options: parseArgsOptions(spec),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  let negativeAt = -1;
  for (const t of tokens) {
    if (t.kind === 'option-terminator') continue;
    if (t.kind === 'positional') {
      yield { kind: 'positional', value: t.value };
      continue;
    }
    const arg = argv[t.index]!;
    // parseArgs splits -12 into -1 and -2: one positional, once.
    if (t.index === negativeAt) continue;
    if (opts.negativeNumbersArePositional && /^-\d+$/.test(arg)) {
      negativeAt = t.index;
      yield { kind: 'positional', value: arg };
      continue;
    }
    // rawName is how it was typed (`-f`, `--config-file`); `---x` must not reach the `-x` key.
    const name = names.get(t.rawName);
    if (name === undefined) throw new UsageError(`${prefix}unknown option "${arg}" (see pgrelay --help)`);
    const takesValue = spec[name]!.value;
    if (takesValue && t.value === undefined) throw new UsageError(`${prefix}option ${t.rawName} needs a value`);
    if (!takesValue && t.value !== undefined) throw new UsageError(`${prefix}option ${t.rawName} takes no value`);
    yield { kind: 'option', name, value: t.value ?? '', spelled: t.rawName };
  }
}
