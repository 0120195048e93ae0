/**
 * Prepared statements on pooled connections (src/session/pooled-statements.ts):
 * pgrelay's names, the per-connection LRU, message rewriting; and which statements
 * pin a session (src/session/pinning.ts).
 */
import { describe, expect, it } from 'vitest';
import { FE } from '../../src/protocol/constants.js';
import { classify } from '../../src/router/classifier.js';
import { mayCallNextval, pinReason, readsSequenceState } from '../../src/session/pinning.js';
import {
  ServerStatements,
  StatementNames,
  parseBody,
  parseMessage,
  renamedBind,
  statementMessage,
} from '../../src/session/pooled-statements.js';
import { message } from '../support/raw.js';

function cstr(s: string): Buffer {
  return Buffer.concat([Buffer.from(s), Buffer.from([0])]);
}

function parse(name: string, sql: string, types: number[] = []): Buffer {
  const t = Buffer.alloc(2 + 4 * types.length);
  t.writeInt16BE(types.length, 0);
  types.forEach((o, i) => {
    t.writeInt32BE(o, 2 + 4 * i);
  });
  return message('P', Buffer.concat([cstr(name), cstr(sql), t]));
}

describe('StatementNames', () => {
  it('one name per distinct text and parameter types, whatever the client called it', () => {
    const n = new StatementNames();
    const a = n.entryFor((parseBody(parse('P_0', 'SELECT $1', [23])) as Buffer).toString('latin1')).name;
    const b = n.entryFor((parseBody(parse('other', 'SELECT $1', [23])) as Buffer).toString('latin1')).name;
    const c = n.entryFor((parseBody(parse('P_0', 'SELECT $1', [25])) as Buffer).toString('latin1')).name;
    expect(a).toBe(b);
    expect(c).not.toBe(a);
    expect(a).toMatch(/^PGRELAY_\d+$/);
    // Known (answered without a connection) only once a server accepted it.
    const rest = (parseBody(parse('P_0', 'SELECT $1', [23])) as Buffer).toString('latin1');
    expect(n.known(rest)).toBeUndefined();
    n.entryFor(rest).accepted = true;
    expect(n.known(rest)).toBe(a);
  });

  it('keeps at most maxEntries names and maxBytes of statement text, the least recently used forgotten; names are never reused', () => {
    const n = new StatementNames(3, 1000);
    const names = ['SELECT 1', 'SELECT 2', 'SELECT 3'].map((t) => n.entryFor(t).name);
    n.entryFor('SELECT 1').accepted = true;
    // SELECT 1 used last: SELECT 2 is the oldest and goes first.
    expect(n.entryFor('SELECT 1').name).toBe(names[0]);
    const fourth = n.entryFor('SELECT 4').name;
    expect(n.size).toBe(3);
    expect(n.known('SELECT 1')).toBe(names[0]);
    const again = n.entryFor('SELECT 2').name;
    expect(again).not.toBe(names[1]);
    expect(new Set([...names, fourth, again]).size).toBe(5);
    expect(n.size).toBe(3);
    // SELECT 3 was the oldest then: forgotten (a later Parse prepares it under a new name).
    expect(n.known('SELECT 3')).toBeUndefined();

    const b = new StatementNames(100, 20);
    for (let i = 0; i < 10; i++) b.entryFor(`SELECT ${i}00`);
    expect(b.bytes).toBeLessThanOrEqual(20);
    expect(b.size).toBe(2);
  });

  it('a million distinct statements stay within the bounds', () => {
    const n = new StatementNames(1000, 64 * 1024);
    for (let i = 0; i < 1_000_000; i++) n.entryFor(`SELECT ${i} AS padding_${'x'.repeat(i % 50)}`);
    expect(n.size).toBeLessThanOrEqual(1000);
    expect(n.bytes).toBeLessThanOrEqual(64 * 1024);
  });
});

describe('ServerStatements', () => {
  it('keeps at most max, closing the least recently used', () => {
    const s = new ServerStatements(2);
    expect(s.add('A')).toEqual([]);
    expect(s.add('B')).toEqual([]);
    expect(s.has('A')).toBe(true); // A used: B is now the oldest
    expect(s.add('C')).toEqual(['B']);
    expect(s.has('B')).toBe(false);
    s.setMax(1);
    expect(s.add('D')).toEqual(['A', 'C']);
    expect(s.size).toBe(1);
  });
});

describe('message rewriting', () => {
  it('Parse, Bind, Describe and Close name pgrelay statements', () => {
    const p = parse('P_0', 'SELECT 1', [23]);
    const renamed = parseMessage('PGRELAY_1', parseBody(p) as Buffer);
    expect(renamed).toEqual(parse('PGRELAY_1', 'SELECT 1', [23]));
    const params = Buffer.from([0, 0, 0, 1, 0, 0, 0, 1, 0x31, 0, 0]);
    const bind = message('B', Buffer.concat([cstr('portal'), cstr('P_0'), params]));
    expect(renamedBind(bind, 'PGRELAY_1')).toEqual(
      message('B', Buffer.concat([cstr('portal'), cstr('PGRELAY_1'), params])),
    );
    expect(statementMessage(FE.Describe, 'PGRELAY_1')).toEqual(
      message('D', Buffer.concat([Buffer.from('S'), cstr('PGRELAY_1')])),
    );
    expect(statementMessage(FE.Close, 'X')).toEqual(message('C', Buffer.concat([Buffer.from('S'), cstr('X')])));
  });
});

describe('pinReason', () => {
  const opts = { allowSqlComments: false };
  const cases: Array<[string, string | undefined]> = [
    ['LISTEN ch', 'LISTEN'],
    ['PREPARE q AS SELECT 1', 'PREPARE'],
    ['PREPARE TRANSACTION $$x$$', undefined],
    ['CREATE TEMP TABLE t (x int)', 'temporary table'],
    ['DECLARE c CURSOR WITH HOLD FOR SELECT 1', 'cursor WITH HOLD'],
    ['DECLARE c CURSOR FOR SELECT 1', undefined],
    ['SELECT pg_advisory_lock(1)', 'session advisory lock'],
    ['SELECT pg_try_advisory_lock_shared(1)', 'session advisory lock'],
    ['SELECT pg_advisory_xact_lock(1)', undefined],
    ['SELECT 1; LISTEN ch', 'LISTEN'],
    ['SELECT 1', undefined],
    ["SET search_path = 'x'", undefined],
    ["LOAD 'auto_explain'", 'LOAD'],
    ["/* c */ load 'auto_explain'", 'LOAD'],
    ["SELECT 1; LOAD 'auto_explain'", 'LOAD'],
    ["SELECT 'load x'", undefined],
  ];
  for (const [sql, reason] of cases)
    it(`${sql} → ${reason ?? 'no pin'}`, () => expect(pinReason(sql, classify(sql, opts))).toBe(reason));
});

describe('StatementNames.retire', () => {
  it('a retired statement gets a new name at its next Parse (never the old one again); retiring an entry replaced already does nothing', () => {
    const n = new StatementNames();
    const a = n.entryFor('SELECT * FROM t\u0000');
    a.accepted = true;
    expect(n.known('SELECT * FROM t\u0000')).toBe(a.name);
    n.retire(a);
    expect(n.known('SELECT * FROM t\u0000')).toBeUndefined();
    expect(n.bytes).toBe(0);
    const b = n.entryFor('SELECT * FROM t\u0000');
    expect(b.name).not.toBe(a.name);
    expect(b.accepted).toBe(false);
    n.retire(a);
    expect(n.entryFor('SELECT * FROM t\u0000')).toBe(b);
    expect(n.size).toBe(1);
  });
});

describe('readsSequenceState, mayCallNextval', () => {
  const c = (sql: string) => classify(sql, { allowSqlComments: false });
  it('lastval()/currval() read the sequence state; INSERTs, writes, nextval()/setval() and several statements may set it', () => {
    expect(readsSequenceState(c('SELECT LASTVAL()'))).toBe(true);
    expect(readsSequenceState(c("SELECT pg_catalog.currval('s')"))).toBe(true);
    expect(readsSequenceState(c("SELECT app.currval('s')"))).toBe(false);
    expect(readsSequenceState(c('SELECT 1'))).toBe(false);
    expect(mayCallNextval(c('INSERT INTO t (x) VALUES (1)'))).toBe(true);
    expect(mayCallNextval(c("SELECT nextval('s'), currval('s')"))).toBe(true);
    expect(mayCallNextval(c("SELECT setval('s', 5)"))).toBe(true);
    expect(mayCallNextval(c('INSERT INTO t VALUES (1); SELECT lastval()'))).toBe(true);
    expect(mayCallNextval(c('SELECT lastval()'))).toBe(false);
    expect(mayCallNextval(c('SELECT * FROM t'))).toBe(false);
  });
});
