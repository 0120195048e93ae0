/**
 * pool_mode = transaction: which simple Queries take only the load-balance node's
 * connection (session/read-node-only.ts), with the router's real classification and
 * decision for a session outside a transaction; which extended-protocol batches do
 * (readOnlyUnit, looking ahead at the client's input).
 */
import { describe, expect, it } from 'vitest';
import { classifyQuery } from '../../src/router/classifier.js';
import { newSessionRoutingState, route, routingConfigFrom, type RoutingConfig } from '../../src/router/policy.js';
import { type UnitLookup, readNodeOnly, readOnlyBegin, readOnlyUnit } from '../../src/session/read-node-only.js';
import {
  bindMessage,
  closeMessage,
  describeMessage,
  executeMessage,
  flushMessage,
  parseMessage,
  queryMessage,
  syncMessage,
} from '../support/raw.js';

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

/** A lookup over the real classifier and router; `prepared`: statements the client prepared before. */
function lookup(prepared: Record<string, string> = {}, portals: string[] = []): UnitLookup {
  const c = cfg();
  return {
    decide: (sql, known) => {
      const cls = known ?? classifyQuery(sql, { allowSqlComments: false });
      return { cls, d: route({ cls, sql, state: newSessionRoutingState(), cfg: c, writingFunction: false }) };
    },
    statement: (name) => {
      const sql = prepared[name];
      return sql === undefined ? undefined : { sql, cls: classifyQuery(sql, { allowSqlComments: false }) };
    },
    portal: (name) => portals.includes(name),
  };
}

const batch = (...m: Buffer[]): Buffer => Buffer.concat(m);
const READ = 'SELECT v FROM t WHERE id = $1';

describe('readOnlyUnit', () => {
  it('a batch of reads in the input up to its Sync (node-postgres, pgbench -M extended/prepared): only the read node', () => {
    const unnamed = batch(
      parseMessage('', READ),
      bindMessage('', '', ['1']),
      describeMessage('P', ''),
      executeMessage(''),
      syncMessage(),
    );
    expect(readOnlyUnit(unnamed, 0, lookup())).toBe(true);
    // What follows the Sync (the next batch, a write) is not this unit's.
    expect(readOnlyUnit(batch(unnamed, queryMessage('DELETE FROM t')), 0, lookup())).toBe(true);
    const prepared = batch(bindMessage('', 'P0_1', ['1']), describeMessage('P', ''), executeMessage(''), syncMessage());
    expect(readOnlyUnit(prepared, 0, lookup({ P0_1: READ }))).toBe(true);
    expect(readOnlyUnit(batch(parseMessage('s', READ), syncMessage()), 0, lookup())).toBe(true);
    // postgres.js describes a new statement first and waits: the batch ends with a Flush, the last of the input.
    const describeFirst = batch(parseMessage('s1', READ), describeMessage('S', 's1'), flushMessage());
    expect(readOnlyUnit(describeFirst, 0, lookup())).toBe(true);
    expect(readOnlyUnit(batch(closeMessage('S', 's1'), syncMessage()), 0, lookup({ s1: READ }))).toBe(true);
  });

  it('looks only from the position given, and only at whole messages in the input', () => {
    const b = batch(
      queryMessage('INSERT INTO t VALUES (1)'),
      parseMessage('', READ),
      bindMessage('', ''),
      syncMessage(),
    );
    const at = queryMessage('INSERT INTO t VALUES (1)').length;
    expect(readOnlyUnit(b, at, lookup())).toBe(true);
    // The Sync not received yet, or cut: not known to be reads only.
    expect(readOnlyUnit(b.subarray(0, b.length - 1), at, lookup())).toBe(false);
    expect(readOnlyUnit(batch(parseMessage('', READ), bindMessage('', ''), executeMessage('')), 0, lookup())).toBe(
      false,
    );
    // A Flush with more after it does not end the unit.
    const flushThenWrite = batch(
      parseMessage('', READ),
      flushMessage(),
      parseMessage('', 'UPDATE t SET v = 1'),
      syncMessage(),
    );
    expect(readOnlyUnit(flushThenWrite, 0, lookup())).toBe(false);
  });

  it('a write, transaction control, a setting, an unknown statement or portal anywhere up to the Sync: not only the read node', () => {
    const w = (...m: Buffer[]): boolean => readOnlyUnit(batch(...m, syncMessage()), 0, lookup({ old: READ }));
    expect(w(parseMessage('', READ), bindMessage('', ''), executeMessage(''))).toBe(true);
    expect(w(parseMessage('', READ), parseMessage('', 'INSERT INTO t VALUES ($1)'))).toBe(false);
    // (BEGIN READ ONLY first: a read-only transaction, below.)
    expect(w(parseMessage('', 'BEGIN'), bindMessage('', ''), executeMessage(''))).toBe(false);
    expect(w(parseMessage('', 'COMMIT'), bindMessage('', ''), executeMessage(''))).toBe(false);
    expect(w(parseMessage('', 'SET work_mem = 1024'))).toBe(false);
    expect(w(parseMessage('', 'SELECT pg_advisory_lock(1)'))).toBe(false);
    expect(w(bindMessage('', 'nosuch'), executeMessage(''))).toBe(false);
    expect(w(bindMessage('', 'old'), executeMessage(''))).toBe(true);
    expect(w(executeMessage('elsewhere'))).toBe(false);
    expect(w(describeMessage('P', 'elsewhere'))).toBe(false);
    // A second Parse of a name the client has not closed: 42P05 from the primary's connection, as before.
    expect(w(parseMessage('old', READ))).toBe(false);
    // Routed by the value bound (current_setting($1)): decided at Bind, not ahead.
    expect(w(parseMessage('', 'SELECT current_setting($1)'), bindMessage('', '', ['work_mem']))).toBe(false);
    expect(readOnlyUnit(batch(queryMessage('SELECT 1'), syncMessage()), 0, lookup())).toBe(false);
  });

  it('single: the next message of a batch under way, portals of that batch included', () => {
    expect(readOnlyUnit(executeMessage('p'), 0, lookup({}, ['p']), true)).toBe(true);
    expect(readOnlyUnit(executeMessage('q'), 0, lookup({}, ['p']), true)).toBe(false);
    expect(readOnlyUnit(bindMessage('', 's'), 0, lookup({ s: READ }), true)).toBe(true);
    expect(readOnlyUnit(bindMessage('', 's'), 0, lookup({ s: 'DELETE FROM t' }), true)).toBe(false);
    expect(readOnlyUnit(syncMessage(), 0, lookup(), true)).toBe(true);
  });
});

describe('read-only transactions (readOnlyBegin): begun on the read node alone', () => {
  const begins = (sql: string): boolean => {
    const cls = classifyQuery(sql, { allowSqlComments: false });
    return readOnlyBegin(cls, route({ cls, sql, state: newSessionRoutingState(), cfg: cfg(), writingFunction: false }));
  };

  it('BEGIN READ ONLY and START TRANSACTION … READ ONLY, alone, not SERIALIZABLE (a hot standby refuses it)', () => {
    for (const sql of [
      'BEGIN READ ONLY',
      'begin transaction read only',
      'START TRANSACTION READ ONLY',
      'START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY',
    ])
      expect(begins(sql), sql).toBe(true);
    for (const sql of [
      'BEGIN',
      'BEGIN READ WRITE',
      'BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY',
      'BEGIN READ ONLY; SELECT 1',
      'SELECT 1',
    ])
      expect(begins(sql), sql).toBe(false);
    // The session's default isolation SERIALIZABLE: a standby would refuse it.
    const ro = classifyQuery('BEGIN READ ONLY', { allowSqlComments: false });
    const both = route({
      cls: ro,
      sql: 'BEGIN READ ONLY',
      state: newSessionRoutingState(),
      cfg: cfg(),
      writingFunction: false,
    });
    expect(readOnlyBegin(ro, both, true)).toBe(false);
    const rr = classifyQuery('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', { allowSqlComments: false });
    expect(
      readOnlyBegin(
        rr,
        route({ cls: rr, sql: 'x', state: newSessionRoutingState(), cfg: cfg(), writingFunction: false }),
        true,
      ),
    ).toBe(true);
    // default_transaction_read_only on: a plain BEGIN is read-only; READ WRITE is not.
    const plain = classifyQuery('BEGIN', { allowSqlComments: false });
    const plainD = route({
      cls: plain,
      sql: 'BEGIN',
      state: newSessionRoutingState(),
      cfg: cfg(),
      writingFunction: false,
    });
    expect([readOnlyBegin(plain, plainD), readOnlyBegin(plain, plainD, false, true)]).toEqual([false, true]);
    expect(readOnlyBegin(plain, plainD, true, true), 'SERIALIZABLE default').toBe(false);
    const rw = classifyQuery('BEGIN READ WRITE', { allowSqlComments: false });
    const rwD = route({
      cls: rw,
      sql: 'BEGIN READ WRITE',
      state: newSessionRoutingState(),
      cfg: cfg(),
      writingFunction: false,
    });
    expect(readOnlyBegin(rw, rwD, false, true)).toBe(false);
    // Load balancing off: BEGIN goes to the primary alone.
    const cls = classifyQuery('BEGIN READ ONLY', { allowSqlComments: false });
    const off = route({
      cls,
      sql: 'BEGIN READ ONLY',
      state: newSessionRoutingState(),
      cfg: cfg({ load_balance_mode: false }),
      writingFunction: false,
    });
    expect(readOnlyBegin(cls, off)).toBe(false);
  });

  it("an extended-protocol batch whose first, unnamed statement begins one and the rest read (pgjdbc's way): only the read node", () => {
    const ro = batch(
      parseMessage('', 'BEGIN READ ONLY'),
      bindMessage('', ''),
      executeMessage(''),
      parseMessage('', READ),
      bindMessage('', '', ['1']),
      executeMessage(''),
      syncMessage(),
    );
    expect(readOnlyUnit(ro, 0, lookup())).toBe(true);
    // Not first, named, a write after it, or a plain BEGIN: the primary too.
    const notFirst = batch(
      parseMessage('', READ),
      bindMessage('', '', ['1']),
      executeMessage(''),
      parseMessage('', 'BEGIN READ ONLY'),
      bindMessage('', ''),
      executeMessage(''),
      syncMessage(),
    );
    expect(readOnlyUnit(notFirst, 0, lookup())).toBe(false);
    const named = batch(parseMessage('b', 'BEGIN READ ONLY'), bindMessage('', 'b'), executeMessage(''), syncMessage());
    expect(readOnlyUnit(named, 0, lookup())).toBe(false);
    const write = batch(
      parseMessage('', 'BEGIN READ ONLY'),
      bindMessage('', ''),
      executeMessage(''),
      parseMessage('', 'INSERT INTO t VALUES (1)'),
      bindMessage('', ''),
      executeMessage(''),
      syncMessage(),
    );
    expect(readOnlyUnit(write, 0, lookup())).toBe(false);
    const plain = batch(parseMessage('', 'BEGIN'), bindMessage('', ''), executeMessage(''), syncMessage());
    expect(readOnlyUnit(plain, 0, lookup())).toBe(false);
  });
});
