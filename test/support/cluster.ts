/**
 * Access to the shared test cluster started by test/support/global-setup.ts.
 *
 * The cluster is shared by every integration test file (workers run in
 * parallel): tests that stop, promote or pause nodes should start their own
 * DevCluster instead (DevCluster.start() in beforeAll, stop() in afterAll), or
 * restore the state they changed before finishing.
 */
import { inject } from 'vitest';
import { DevCluster, type DevClusterDescription } from '../../dev/devcluster.js';

declare module 'vitest' {
  interface ProvidedContext {
    cluster: DevClusterDescription;
  }
}

let cached: DevCluster | undefined;

/** A handle on the shared cluster (does not own the servers: stop() on it only stops nodes, never deletes data). */
export function getCluster(): DevCluster {
  if (!cached) {
    const desc = inject('cluster');
    if (!desc) throw new Error('getCluster(): no cluster provided; run this file in the vitest "integration" project');
    cached = DevCluster.attach(desc);
  }
  return cached;
}
