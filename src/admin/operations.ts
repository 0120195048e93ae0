/**
 * The operations (pgrelay extensions; pgpool does them through PCP): ATTACH,
 * DETACH, PROMOTE and RECOVERY NODE, RELOAD and STOP. The PCP server
 * (src/pcp/) runs the same commands through the same engine. They run the callbacks in
 * AdminContext.ops; a missing callback or a rejection becomes an ERROR reply.
 */
import { SQLSTATE } from '../protocol/constants.js';
import { type AdminCommand, describeAdminCommand } from './commands.js';
import type { AdminContext } from './context.js';
import { type AdminResult, errorResult } from './result.js';

export type OperationCommand = Extract<
  AdminCommand,
  { kind: 'attach_node' | 'detach_node' | 'promote_node' | 'recovery_node' | 'reload' | 'stop' }
>;

const OPERATION_KINDS: ReadonlySet<AdminCommand['kind']> = new Set<OperationCommand['kind']>([
  'attach_node',
  'detach_node',
  'promote_node',
  'recovery_node',
  'reload',
  'stop',
]);

/** Operations always need an admin user, even while admin_users is empty. */
export function isOperation(cmd: AdminCommand): cmd is OperationCommand {
  return OPERATION_KINDS.has(cmd.kind);
}

async function runOp(tag: string, op: (() => Promise<void> | void) | undefined, what: string): Promise<AdminResult> {
  if (!op) return errorResult(SQLSTATE.featureNotSupported, `${what} is not supported by this pgrelay instance`);
  try {
    await op();
    return { kind: 'command', tag };
  } catch (e) {
    const code =
      typeof (e as { code?: unknown }).code === 'string' && /^[0-9A-Z]{5}$/.test((e as { code: string }).code)
        ? (e as { code: string }).code
        : SQLSTATE.internalError;
    return errorResult(code, `${what} failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function checkNode(ctx: AdminContext, node: number): AdminResult | undefined {
  if (node >= 0 && node < ctx.nodes.length && ctx.nodes[node]!.status !== 'unused') return undefined;
  return errorResult(SQLSTATE.invalidParameterValue, `invalid node id ${node}`, {
    detail:
      ctx.nodes.length > 0 ? `Configured nodes are 0..${ctx.nodes.length - 1}.` : 'No backend node is configured.',
  });
}

/** A node operation: the node must exist and be in use before the operation runs. */
async function onNode(
  ctx: AdminContext,
  cmd: Extract<OperationCommand, { node: number }>,
  tag: string,
  op: (() => Promise<void> | void) | undefined,
): Promise<AdminResult> {
  return checkNode(ctx, cmd.node) ?? (await runOp(tag, op, describeAdminCommand(cmd)));
}

export async function runOperation(cmd: OperationCommand, ctx: AdminContext): Promise<AdminResult> {
  const ops = ctx.ops;
  switch (cmd.kind) {
    case 'attach_node':
      return onNode(ctx, cmd, 'ATTACH NODE', ops?.attachNode && (() => ops.attachNode!(cmd.node)));
    case 'detach_node':
      return onNode(ctx, cmd, 'DETACH NODE', ops?.detachNode && (() => ops.detachNode!(cmd.node, cmd.gracefully)));
    case 'promote_node':
      return onNode(
        ctx,
        cmd,
        'PROMOTE NODE',
        ops?.promoteNode && (() => ops.promoteNode!(cmd.node, cmd.switchover, cmd.gracefully)),
      );
    case 'recovery_node':
      return onNode(ctx, cmd, 'RECOVERY NODE', ops?.recoverNode && (() => ops.recoverNode!(cmd.node)));
    case 'reload':
      return runOp('RELOAD', ops?.reload && (() => ops.reload!()), 'PGPOOL RELOAD');
    case 'stop':
      return runOp('STOP', ops?.stop && (() => ops.stop!(cmd.mode)), describeAdminCommand(cmd));
  }
}
