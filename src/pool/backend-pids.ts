/**
 * The backend pids of every connection pgrelay holds, by node: a pid a client gives
 * pg_terminate_backend() / pg_cancel_backend() (for instance one listed by SHOW
 * pool_pools) belongs to a standby's backend, and the call has to run on that node.
 *
 * One table per process: pids are per host, so the same pid on two nodes (on two
 * hosts) is possible and then names no single node.
 */
const owners = new Map<number, number[]>();

/** A backend connection to `nodeId` with process id `pid` was opened. */
export function addBackendPid(pid: number, nodeId: number): void {
  const nodes = owners.get(pid);
  if (nodes === undefined) owners.set(pid, [nodeId]);
  else nodes.push(nodeId);
}

/** That connection closed. */
export function removeBackendPid(pid: number, nodeId: number): void {
  const nodes = owners.get(pid);
  if (nodes === undefined) return;
  const i = nodes.indexOf(nodeId);
  if (i >= 0) nodes.splice(i, 1);
  if (nodes.length === 0) owners.delete(pid);
}

/**
 * The one node owning every pid in `pids` among pgrelay's connections, or undefined
 * (a pid pgrelay holds no connection to, pids of different nodes, a pid on two nodes).
 */
export function nodeOwningPids(pids: readonly number[]): number | undefined {
  let node: number | undefined;
  for (const pid of pids) {
    const nodes = owners.get(pid);
    if (nodes === undefined) return undefined;
    for (const n of nodes) {
      if (node === undefined) node = n;
      else if (n !== node) return undefined;
    }
  }
  return node;
}
