#!/usr/bin/env node
/**
 * Writes src/router/catalog-functions.ts: the names of a PostgreSQL server's built-in
 * functions (schema pg_catalog), which the session trusts not to change settings behind
 * its back (see Router.mayChangeSettings). Run against a server of the version to cover:
 *
 *   PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres node scripts/catalog-functions.mjs
 *
 * Uses `psql` from PATH and the usual PG* environment variables.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'src/router/catalog-functions.ts');

const psql = (sql) =>
  execFileSync('psql', ['-X', '-A', '-t', '-d', process.env.PGDATABASE ?? 'postgres', '-c', sql]).toString();
const version = psql('SHOW server_version').trim();
const names = psql(
  "SELECT DISTINCT proname FROM pg_catalog.pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace ORDER BY 1",
)
  .split('\n')
  .map((s) => s.trim())
  .filter((s) => s !== '');

// Lines of at most 100 characters inside one template literal.
const lines = [];
let line = '';
for (const n of names) {
  if (line !== '' && line.length + 1 + n.length > 100) {
    lines.push(line);
    line = '';
  }
  line = line === '' ? n : `${line} ${n}`;
}
if (line !== '') lines.push(line);

const text = `/**
 * The built-in functions of PostgreSQL ${version.split(' ')[0]} (schema pg_catalog: ${names.length} names), written
 * by scripts/catalog-functions.mjs; do not edit. A function a newer server added is not
 * listed: a call to it counts as a call to a user function (Router.mayChangeSettings),
 * which costs a connection reset and is never wrong.
 */
const NAMES = \`
${lines.join('\n')}
\`;

/** Built-in function names (unqualified, as pg_proc.proname). */
export const CATALOG_FUNCTIONS: ReadonlySet<string> = new Set(NAMES.split(/\\s+/).filter((n) => n !== ''));
`;
fs.writeFileSync(OUT, text);
console.log(`${OUT}: ${names.length} functions of PostgreSQL ${version}`);
