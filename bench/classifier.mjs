// Micro-benchmark of the statement classifier (dist/router/classifier.js; run `npx tsc -p .` first).
// Prints µs/statement for a realistic mix, uncached (simple protocol: literals differ each time)
// and cached (extended protocol: the same Parse text recurs), plus a few single statements.
//
//   node bench/classifier.mjs [iterations]

import { parseArgs } from 'node:util';
import { classify, classifyUncached, clearClassifierCache } from '../dist/router/classifier.js';

const [iterations] = parseArgs({ allowPositionals: true }).positionals;
const ITER = Number(iterations ?? 200_000);
const opts = { allowSqlComments: false };

// Weighted towards pgbench / typical OLTP traffic, with some heavier reporting SQL.
const MIX = [
  'SELECT abalance FROM pgbench_accounts WHERE aid = 123;',
  'BEGIN;',
  'UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 99871;',
  'SELECT abalance FROM pgbench_accounts WHERE aid = 99871;',
  'UPDATE pgbench_tellers SET tbalance = tbalance + -4321 WHERE tid = 7;',
  'UPDATE pgbench_branches SET bbalance = bbalance + -4321 WHERE bid = 1;',
  'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 99871, -4321, CURRENT_TIMESTAMP);',
  'END;',
  'SELECT u.id, u.name, u.email FROM users u WHERE u.id = $1',
  "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > now() - interval '1 day' ORDER BY o.created_at DESC LIMIT 50",
  "SELECT count(*) FROM orders WHERE status = 'open'",
  "SET application_name = 'web'",
  'SHOW transaction_isolation',
  "WITH recent AS (SELECT * FROM events WHERE ts > now() - interval '1 hour') SELECT kind, count(*) FROM recent GROUP BY kind",
  'SELECT * FROM accounts WHERE id = 42 FOR UPDATE',
  'COMMIT',
  "SELECT p.id, p.title, coalesce(string_agg(t.name, ', '), '') AS tags FROM posts p LEFT JOIN post_tags pt ON pt.post_id = p.id LEFT JOIN tags t ON t.id = pt.tag_id WHERE p.published AND p.author_id = ANY($1) GROUP BY p.id ORDER BY p.published_at DESC LIMIT 20 OFFSET 40",
  'DELETE FROM sessions WHERE expires_at < now()',
];

// Vary literals like a simple-protocol client would, so the cache never hits.
function variant(sql, i) {
  return sql.replace(/\b(\d+)\b/, (m) => String(Number(m) + (i % 100000)));
}

function bench(label, fn, n) {
  for (let i = 0; i < Math.min(n, 20_000); i++) fn(i); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn(i);
  const ns = Number(process.hrtime.bigint() - t0);
  console.log(`${label.padEnd(58)} ${(ns / n / 1000).toFixed(3)} µs/statement`);
}

const texts = [];
for (let i = 0; i < 10_000; i++) texts.push(variant(MIX[i % MIX.length], i));

console.log(`classifier micro-benchmark, node ${process.version}, ${ITER} iterations each`);
bench('mix, uncached (classifyUncached)', (i) => classifyUncached(texts[i % texts.length], opts), ITER);
clearClassifierCache();
bench('mix, distinct texts through classify() (cache misses)', (i) => classify(texts[i % texts.length], opts), ITER);
clearClassifierCache();
bench('mix, repeated texts through classify() (cache hits)', (i) => classify(MIX[i % MIX.length], opts), ITER);
for (const sql of [MIX[0], MIX[1], MIX[2], MIX[16]]) {
  const label = sql.length > 50 ? `${sql.slice(0, 47)}...` : sql;
  bench(`  ${label}`, () => classifyUncached(sql, opts), ITER);
}
