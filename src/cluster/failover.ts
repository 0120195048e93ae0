/**
 * failover_command / follow_primary_command / failback_command: placeholder
 * expansion (pgpool's trigger_failover_command) and
 * execution through `/bin/sh -c` with a hard timeout.
 *
 * Differences from pgpool, on purpose:
 * - no leading space before %d, %p and %m;
 * - every empty value (no new main node, no old primary, no data directory)
 *   becomes `""`, so positional arguments never shift (pgpool does this only
 *   for %H %r %R %N %S);
 * - a value with characters outside [A-Za-z0-9_./:@+=,-] is single-quoted for
 *   the shell (hosts and paths with spaces stay one argument);
 * - the command runs asynchronously with a timeout (default 60 s, then SIGKILL
 *   of its whole process group) instead of blocking everything.
 * As pgpool: `%%` is a literal %, an unknown `%x` is dropped, a lone % at the
 * end is kept.
 */
import { spawn } from 'node:child_process';
import { isLive, mainNodeId, type NodeState } from './nodes.js';

/** A node as the placeholders name it: the node table's address plus its configured data directory. */
export type PlaceholderNode = Pick<NodeState, 'id' | 'host' | 'port'> & { dataDir: string };

export interface PlaceholderValues {
  /** The failed / detached / attached node (%d %h %p %D). */
  node: PlaceholderNode;
  /** New main node (%m %H %r %R); for follow_primary_command the new primary. */
  newMain?: PlaceholderNode;
  /** Old main node id (%M). */
  oldMainId: number;
  /** Old primary (%P %N %S). */
  oldPrimary?: PlaceholderNode;
}

const SAFE = /^[A-Za-z0-9_./:@+=,-]+$/;

/** Quote a value for /bin/sh: `""` when empty, as is when safe, else single-quoted. */
export function shellValue(v: string): string {
  if (v === '') return '""';
  if (SAFE.test(v)) return v;
  return `'${v.replace(/'/g, `'\\''`)}'`;
}

export function expandPlaceholders(template: string, v: PlaceholderValues): string {
  const map: Record<string, string> = {
    d: String(v.node.id),
    h: shellValue(v.node.host),
    p: String(v.node.port),
    D: shellValue(v.node.dataDir),
    m: String(v.newMain?.id ?? -1),
    H: shellValue(v.newMain?.host ?? ''),
    r: v.newMain ? String(v.newMain.port) : '""',
    R: shellValue(v.newMain?.dataDir ?? ''),
    M: String(v.oldMainId),
    P: String(v.oldPrimary?.id ?? -1),
    N: shellValue(v.oldPrimary?.host ?? ''),
    S: v.oldPrimary ? String(v.oldPrimary.port) : '""',
    '%': '%',
  };
  let out = '';
  for (let i = 0; i < template.length; i++) {
    const c = template[i];
    if (c !== '%' || i === template.length - 1) {
      out += c;
      continue;
    }
    const k = template[++i] as string;
    const val = map[k];
    if (val !== undefined) out += val;
    // unknown %x: dropped, as pgpool does
  }
  return out;
}

export function placeholderNode(n: NodeState): PlaceholderNode {
  return { id: n.id, host: n.host, port: n.port, dataDir: n.config.data_directory };
}

/**
 * The new main node candidate for failover_command, as pgpool's failover()
 * chooses it: for a promote request (pcp_promote_node) the promoted node;
 * otherwise the lowest-id node that stays live once the failed nodes are
 * removed; -1 when none is left.
 */
export function newMainCandidate(
  nodes: ReadonlyArray<Pick<NodeState, 'id' | 'status'>>,
  failed: ReadonlySet<number>,
  promoteId?: number,
): number {
  if (promoteId !== undefined && promoteId >= 0) {
    const n = nodes.find((x) => x.id === promoteId);
    if (n && isLive(n.status) && !failed.has(promoteId)) return promoteId;
  }
  return mainNodeId(nodes, failed);
}

export interface CommandResult {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
  stdout: string;
  stderr: string;
}

const MAX_OUTPUT = 64 * 1024;

/** Run a shell command with a hard timeout (the whole process group is killed). Never rejects. */
export function runShellCommand(
  command: string,
  timeoutMs: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<CommandResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const child = spawn('/bin/sh', ['-c', command], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const killGroup = (): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        try {
          child.kill('SIGKILL');
        } catch {
          // gone
        }
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutMs);
    const onExit = (): void => {
      // pgrelay exiting: do not leave the operator's command group behind.
      killGroup();
    };
    process.once('exit', onExit);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      if (stdout.length < MAX_OUTPUT) stdout += d;
    });
    child.stderr.on('data', (d: string) => {
      if (stderr.length < MAX_OUTPUT) stderr += d;
    });
    const finish = (code: number | null, signal: NodeJS.Signals | null, extra = ''): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      process.removeListener('exit', onExit);
      resolve({
        command,
        code,
        signal,
        timedOut,
        durationMs: Date.now() - t0,
        stdout: stdout.slice(0, MAX_OUTPUT),
        stderr: (stderr + extra).slice(0, MAX_OUTPUT),
      });
    };
    child.once('error', (e) => finish(null, null, `[spawn error] ${e.message}`));
    child.once('close', (code, signal) => finish(code, signal));
  });
}
