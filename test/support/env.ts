/**
 * The tests' environment, independent of the runner's:
 *
 * - PostgreSQL client tools (psql, pgbench, …) run from the configured
 *   PostgreSQL bin directory — `PG_BIN`, default /usr/lib/postgresql/15/bin, the
 *   same directory DevCluster takes initdb and pg_ctl from — never from PATH
 *   (Debian's /usr/bin/psql is pg_wrapper, which picks a version by its own rules).
 * - Other programs (openssl) are resolved once to an absolute path, so a test
 *   failure names the binary that ran.
 * - libpq variables (PGHOST, PGDATABASE, PGPASSWORD, PGSSLMODE, PGOPTIONS, …) of
 *   the runner never reach a client: scrubPgEnv() removes them from process.env
 *   (test/support/setup-env.ts runs it in every worker before any test file, so
 *   in-process clients — node-postgres, postgres.js, the CLI control functions —
 *   and every spawned child inherit a clean environment), and points the password
 *   and service files at a path that does not exist so ~/.pgpass and
 *   ~/.pg_service.conf are not read either. Tests set what they need explicitly
 *   (pgEnv() in proxy.ts, DevCluster.pgEnv()).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const DEFAULT_PG_BIN = '/usr/lib/postgresql/15/bin';

/** The configured PostgreSQL bin directory (PG_BIN, default /usr/lib/postgresql/15/bin). */
export const PG_BIN: string = process.env.PG_BIN || DEFAULT_PG_BIN;

/** Test knobs that start with PG but are not libpq's (kept by scrubPgEnv). */
const KEEP = /^(PG_BIN|PGRELAY_[A-Z0-9_]*)$/;

/** A file that never exists: libpq and node-postgres find no ~/.pgpass / ~/.pg_service.conf through it. */
export const NO_SUCH_FILE = path.join(os.tmpdir(), 'pgrelay-tests-no-such-file', 'none');

/** Remove the runner's libpq variables from `env` (in place) and neutralise the password and service files. */
export function scrubPgEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  for (const k of Object.keys(env)) if (/^PG/.test(k) && !KEEP.test(k)) delete env[k];
  env.PGPASSFILE = NO_SUCH_FILE;
  env.PGSERVICEFILE = NO_SUCH_FILE;
  env.PGSYSCONFDIR = path.dirname(NO_SUCH_FILE);
  return env;
}

export type PgTool =
  | 'psql'
  | 'pgbench'
  | 'pg_isready'
  | 'pg_dump'
  | 'pg_restore'
  | 'pg_basebackup'
  | 'pg_ctl'
  | 'initdb';

/** Absolute path of a PostgreSQL program in PG_BIN (throws if it is not there). */
export function pgTool(name: PgTool): string {
  const p = path.join(PG_BIN, name);
  if (!fs.existsSync(p))
    throw new Error(
      `${p} not found: set PG_BIN to PostgreSQL's bin directory (on Debian: apt-get install postgresql-15)`,
    );
  return p;
}

const resolved = new Map<string, string>();

/**
 * Absolute path of a non-PostgreSQL program: $<NAME> (e.g. OPENSSL=/opt/bin/openssl)
 * if set, else the first match on PATH. Throws if there is none.
 */
export function systemTool(name: 'openssl'): string {
  const hit = resolved.get(name);
  if (hit) return hit;
  const override = process.env[name.toUpperCase()];
  const candidates = override
    ? [override]
    : (process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d || '.', name));
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (!fs.statSync(c).isFile()) continue;
      resolved.set(name, c);
      return c;
    } catch {
      // next
    }
  }
  throw new Error(`${name} not found (${override ? `$${name.toUpperCase()}=${override}` : 'not on PATH'})`);
}
