/**
 * vitest globalSetup for the `integration` project: one DevCluster (primary +
 * 2 hot standbys) for the whole run, described to the workers through
 * provide('cluster', ...) and stopped at teardown.
 */
import type { TestProject } from 'vitest/node';
import { DevCluster } from '../../dev/devcluster.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const t0 = Date.now();
  const cluster = await DevCluster.start({ standbys: 2 });
  const desc = cluster.toJSON();
  process.stderr.write(
    `[global-setup] DevCluster up in ${Date.now() - t0} ms: ` +
      `${desc.nodes.map((n) => `node${n.id}=127.0.0.1:${n.port}`).join(' ')} (${desc.baseDir})\n`,
  );
  project.provide('cluster', desc);
  return async () => {
    await cluster.stop();
  };
}
