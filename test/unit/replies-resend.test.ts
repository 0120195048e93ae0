/**
 * The reply queue's part in re-sending reads off a dying standby
 * (src/session/replies.ts, used by src/session/standby-loss.ts), fed the byte
 * streams PostgreSQL sends on an immediate shutdown: what it had queued before
 * running the query (RowDescription; ParseComplete/BindComplete/RowDescription)
 * flushed together with the 57P01 warning, then the socket closes.
 */
import { describe, expect, it } from 'vitest';
import { type Expectation, resendable } from '../../src/session/replies.js';
import { be, stream } from '../support/backend-messages.js';
import { ReplySink } from '../support/reply-sink.js';

type Exp = Expectation<string>;

const resend = (): void => undefined;
const SHUTDOWN = be.notice('57P01', 'terminating connection due to immediate shutdown command');

describe('ReplyQueue: a read whose header PostgreSQL flushed before dying can still be re-sent', () => {
  it('simple Query: after its RowDescription alone it can still be re-sent; the 57P01 warning is held back', () => {
    const s = new ReplySink();
    const e: Exp = { kind: 'query', mode: 'forward', resend };
    s.q.expect(e);
    s.feed(stream(be.rowDescription('a'), SHUTDOWN));
    expect(e.headerOnly).toBe(true);
    expect(resendable(e)).toBe(true);
    expect(s.sent.equals(be.rowDescription('a')), 'only the RowDescription reached the client').toBe(true);
  });

  it('the re-sent copy drops its own RowDescription: the client sees one header and the rows', () => {
    const s = new ReplySink();
    s.q.expect({ kind: 'query', mode: 'forward', dropRowDescription: true });
    s.feed(stream(be.rowDescription('a'), be.dataRow('1'), be.commandComplete('SELECT 1'), be.ready('I')));
    expect(s.sent.equals(stream(be.dataRow('1'), be.commandComplete('SELECT 1'), be.ready('I')))).toBe(true);
  });

  it('once a row has passed (also the first reply of an Execute, a DataRow), it cannot be re-sent', () => {
    const s = new ReplySink();
    const read: Exp = { kind: 'query', mode: 'forward', resend };
    s.q.expect(read);
    s.feed(stream(be.rowDescription('a'), be.dataRow('1'), SHUTDOWN));
    expect(resendable(read)).toBe(false);
    const t = new ReplySink();
    const execute: Exp = { kind: 'execute', mode: 'forward', resend };
    t.q.expect(execute);
    t.feed(be.dataRow('1'));
    expect(resendable(execute)).toBe(false);
    // Once started, DataRows are no longer decoded one by one: the rest passes through as is.
    t.feed(stream(be.dataRow('2'), be.dataRow('3')));
    expect(t.sent.equals(stream(be.dataRow('1'), be.dataRow('2'), be.dataRow('3')))).toBe(true);
  });

  it('a FATAL after the RowDescription alone is held back and the Query stays re-sendable', () => {
    const s = new ReplySink();
    const e: Exp = { kind: 'query', mode: 'forward', resend };
    s.q.expect(e);
    s.feed(stream(be.rowDescription('a'), be.error('57P01', 'terminating connection', 'FATAL')));
    expect(resendable(e)).toBe(true);
    expect(s.sent.equals(be.rowDescription('a'))).toBe(true);
  });

  it('extended protocol: after Parse/Bind/Describe completed, the Execute and Sync are still re-sendable', () => {
    // The session binds the portal again on the new node before the re-sent Execute
    // (extended.ts bindOn); here: the queue keeps the Execute clean of the warning.
    const s = new ReplySink();
    const parse: Exp = { kind: 'parse', mode: 'forward', resend };
    const reparse: Exp = { kind: 'parse', mode: 'drop' };
    const bind: Exp = { kind: 'bind', mode: 'forward', resend };
    const describe: Exp = { kind: 'describe', mode: 'forward', resend };
    const execute: Exp = { kind: 'execute', mode: 'forward', resend };
    const sync: Exp = { kind: 'sync', mode: 'forward', resend };
    for (const e of [parse, reparse, bind, describe, execute, sync]) s.q.expect(e);
    s.feed(stream(be.parseComplete(), be.parseComplete(), be.bindComplete(), be.rowDescription('a'), SHUTDOWN));
    expect(s.q.pendingRequests()).toEqual([execute, sync]);
    expect(resendable(execute)).toBe(true);
    expect(resendable(sync)).toBe(true);
    expect(s.sent.equals(stream(be.parseComplete(), be.bindComplete(), be.rowDescription('a')))).toBe(true);
  });
});
