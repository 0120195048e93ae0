/**
 * vitest setupFiles (every project, every worker, before the test files): the
 * runner's libpq environment (PGHOST, PGDATABASE, PGPASSWORD, …) must not reach
 * in-process clients or spawned programs. See env.ts.
 */
import { scrubPgEnv } from './env.js';

scrubPgEnv();
