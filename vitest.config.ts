import { defineConfig } from 'vitest/config';

/**
 * Two projects:
 * - unit: test/unit/**, no database.
 * - integration: test/integration/**, one shared DevCluster (primary + 2
 *   standbys) started by test/support/global-setup.ts; use getCluster() from
 *   test/support/cluster.ts. Needs `npm run build` first (tests spawn dist/cli.js).
 *
 * `npx vitest run --project unit` / `--project integration` selects one. A third, fuzz
 * (test/fuzz/**), exists only with PGRELAY_FUZZ=1 (`npm run fuzz`).
 * test/README.md describes the layout and the shared-cluster contract.
 */
export default defineConfig({
  test: {
    pool: 'forks',
    // Test files at a time (PGRELAY_TEST_WORKERS overrides; see test/README.md). Much of a
    // file's time is waiting (round trips between processes, health-check periods, polls):
    // on the 2-core machine under an unrelated pgbench load three files at a time took 664 s
    // where two took 852 s; four took no less than three (685 s), with more contention.
    maxWorkers: Number(process.env.PGRELAY_TEST_WORKERS ?? 3),
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
    // A broken include pattern must fail the run, not report green with zero tests.
    passWithNoTests: false,
    // The runner's PG* variables never reach a test (test/support/env.ts).
    setupFiles: ['test/support/setup-env.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          // Each worker process runs its files one after the other without starting afresh
          // (shared modules stay loaded): a new fork per file cost about 26 of the suite's ~580
          // CPU-seconds on the 2-core machine, where the suite is CPU-bound. So a file leaves
          // nothing behind: it closes what it opened in afterAll (test/README.md, Rules).
          isolate: false,
        },
      },
      // The raw-protocol fuzzer (test/fuzz/, `npm run fuzz`): only when asked for, never in `npm test`.
      ...(process.env.PGRELAY_FUZZ === '1'
        ? [
            {
              extends: true as const,
              test: {
                name: 'fuzz',
                include: ['test/fuzz/**/*.test.ts'],
                globalSetup: ['test/support/global-setup.ts'],
              },
            },
          ]
        : []),
    ],
  },
});
