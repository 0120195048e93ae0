/**
 * Access to the shared test cluster started by test/support/global-setup.ts.
 *
 * ## The shared-cluster contract
 *
 * One DevCluster (node 0 primary, nodes 1 and 2 streaming hot standbys) serves
 * every integration file that calls getCluster(), and vitest runs two files at
 * a time, so a file must never change what another file may be relying on:
 *
 * 1. Read-only towards the servers. A file that stops, starts, restarts,
 *    promotes, pauses or resumes WAL replay, rebuilds or re-points a node, or
 *    changes server configuration (ALTER SYSTEM, pg_hba.conf) starts its own
 *    DevCluster (`DevCluster.start()` in beforeAll, `stop()` in afterAll).
 *    getCluster() enforces the node-control part: those methods throw on the
 *    shared handle.
 * 2. Own names. Tables, roles, databases, channels and application_names carry
 *    the file's name and `process.pid`, and the file drops what it created.
 * 3. Writes are visible on the standbys only after `waitForCatchup()`: a file
 *    that reads through pgrelay with load balancing on waits for it after its
 *    set-up writes. waitForCatchup() fails loudly (never skips) when a
 *    standby's replay is paused, so a paused shared standby cannot go unnoticed.
 * 4. pgrelay instances are per file (startProxy), never shared: reloads, PGPOOL
 *    SET, DETACH/ATTACH act on pgrelay's own view only, which is fine.
 */
import { inject } from 'vitest';
import { DevCluster, type DevClusterDescription } from '../../dev/devcluster.js';

declare module 'vitest' {
  interface ProvidedContext {
    cluster: DevClusterDescription;
  }
}

/** DevCluster methods that change the servers: forbidden on the shared cluster (contract rule 1). */
const NODE_CONTROL = new Set<string | symbol>([
  'stopNode',
  'startNode',
  'restartNode',
  'promote',
  'follow',
  'rebuildStandby',
  'pauseReplay',
  'resumeReplay',
]);

let cached: DevCluster | undefined;

/**
 * A handle on the shared cluster. It does not own the servers: stop() is a
 * no-op, and the node-control methods (stopNode, promote, pauseReplay, …)
 * throw — a file that needs them starts its own DevCluster.
 */
export function getCluster(): DevCluster {
  if (!cached) {
    const desc = inject('cluster');
    if (!desc) throw new Error('getCluster(): no cluster provided; run this file in the vitest "integration" project');
    const inner = DevCluster.attach(desc);
    cached = new Proxy(inner, {
      get(target, prop, receiver) {
        if (NODE_CONTROL.has(prop))
          return () =>
            Promise.reject(
              new Error(
                `getCluster().${String(prop)}(): the shared cluster must not be changed (test/support/cluster.ts); ` +
                  'start your own DevCluster in this file',
              ),
            );
        const v: unknown = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }
  return cached;
}
