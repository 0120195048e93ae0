/**
 * vitest globalSetup for the `integration` project: one DevCluster (primary +
 * 2 hot standbys) for the whole run, described to the workers through
 * provide('cluster', ...) and stopped at teardown. The contract for using it is
 * in cluster.ts (and test/README.md).
 */
import type { TestProject } from 'vitest/node';
import { DevCluster } from '../../dev/devcluster.js';
import { PG_BIN, scrubPgEnv } from './env.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  scrubPgEnv();
  const t0 = Date.now();
  const cluster = await DevCluster.start({ standbys: 2, pgBin: PG_BIN });
  const desc = cluster.toJSON();
  process.stderr.write(
    `[global-setup] DevCluster up in ${Date.now() - t0} ms: ` +
      `${desc.nodes.map((n) => `node${n.id}=127.0.0.1:${n.port}`).join(' ')} (${desc.baseDir}, ${desc.pgBin})\n`,
  );
  project.provide('cluster', desc);
  return async () => {
    await cluster.stop();
  };
}
