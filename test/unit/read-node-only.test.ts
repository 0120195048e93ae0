/**
 * pool_mode = transaction: which simple Queries take only the load-balance node's
 * connection (session/read-node-only.ts), with the router's real classification and
 * decision for a session outside a transaction.
 */
import { describe, expect, it } from 'vitest';
import { classifyQuery } from '../../src/router/classifier.js';
import { newSessionRoutingState, route, routingConfigFrom, type RoutingConfig } from '../../src/router/policy.js';
import { readNodeOnly } from '../../src/session/read-node-only.js';

function cfg(over: Partial<Parameters<typeof routingConfigFrom>[0]> = {}): RoutingConfig {
  return routingConfigFrom({
    load_balance_mode: true,
    disable_load_balance_on_write: 'transaction',
    statement_level_load_balance: false,
    primary_routing_query_pattern_list: [],
    check_temp_table: 'catalog',
    check_unlogged_table: false,
    ...over,
  });
}

/** Decide `sql` for an idle session; functions count as reads (as write_function_list would say). */
function onlyReadNode(sql: string, c: RoutingConfig = cfg()): boolean {
  const cls = classifyQuery(sql, { allowSqlComments: false });
  const d = route({ cls, sql, state: newSessionRoutingState(), cfg: c, writingFunction: false });
  return readNodeOnly(sql, cls, d);
}

describe('readNodeOnly', () => {
  it('autocommit reads the router sends to the load-balance node: only that node', () => {
    for (const sql of [
      'SELECT abalance FROM pgbench_accounts WHERE aid = 42',
      'SELECT 1',
      'TABLE t',
      'WITH x AS (SELECT 1) SELECT * FROM x',
      'SHOW work_mem',
      'SELECT inet_server_port()',
    ])
      expect(onlyReadNode(sql), sql).toBe(true);
  });

  it('writes, transaction control, settings and several statements: the primary too', () => {
    for (const sql of [
      'INSERT INTO t VALUES (1)',
      'UPDATE t SET x = 1',
      'BEGIN',
      'START TRANSACTION READ ONLY',
      'COMMIT',
      'SET work_mem = 1024',
      'RESET ALL',
      'DISCARD ALL',
      'SELECT 1; SELECT 2',
      'SELECT * FROM t FOR UPDATE',
      'SELECT * INTO t2 FROM t',
      'WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d',
      'COPY t TO STDOUT',
      'EXPLAIN SELECT 1',
      'LISTEN ch',
      'PREPARE q AS SELECT 1',
      'DECLARE c CURSOR WITH HOLD FOR SELECT 1',
      'SELECT * FROM pg_catalog.pg_class',
      'SELECT pg_backend_pid()',
      'SHOW transaction_read_only',
    ])
      expect(onlyReadNode(sql), sql).toBe(false);
  });

  it('session advisory locks pin the session: not for the load-balance node alone', () => {
    const sql = 'SELECT pg_try_advisory_lock(1)';
    const cls = classifyQuery(sql, { allowSqlComments: false });
    // Even if the router sent it to a standby, the session keeps its links afterwards.
    expect(readNodeOnly(sql, cls, { target: 'standby', write: false, reason: 'test' })).toBe(false);
  });

  it('load_balance_mode = off, a pinned node, or a write decision: never', () => {
    expect(onlyReadNode('SELECT 1', cfg({ load_balance_mode: false }))).toBe(false);
    expect(onlyReadNode('SELECT 1', cfg({ primary_routing_query_pattern_list: ['SELECT 1'] }))).toBe(false);
    const sql = 'SELECT 1';
    const cls = classifyQuery(sql, { allowSqlComments: false });
    expect(readNodeOnly(sql, cls, { target: 'standby', node: 2, write: false, reason: 'pid' })).toBe(false);
    expect(readNodeOnly(sql, cls, { target: 'standby', write: true, reason: 'writing function' })).toBe(false);
    expect(readNodeOnly(sql, cls, { target: 'both', write: false, reason: 'both' })).toBe(false);
  });
});
