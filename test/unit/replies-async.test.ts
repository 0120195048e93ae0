/**
 * The reply queue and asynchronous messages (src/session/replies.ts): a
 * NotificationResponse is never part of a reply. PostgreSQL sends the
 * notifications that arrived during a transaction right before its
 * ReadyForQuery, so one may come inside the reply to pgrelay's own request
 * (the write-position read after a write, a catalog lookup), whose replies are
 * dropped: it must still reach the client, through `asyncMessage`.
 */
import { describe, expect, it } from 'vitest';
import type { Expectation } from '../../src/session/replies.js';
import { be, stream } from '../support/backend-messages.js';
import { ReplySink } from '../support/reply-sink.js';

const NOTIFY = be.notification(4242, 'ch', 'three');

describe('ReplyQueue: a notification inside the reply to a request of pgrelay’s own', () => {
  for (const mode of ['drop', 'capture'] as const) {
    it(`reaches the client through asyncMessage (${mode} mode), and the request still ends at its ReadyForQuery`, () => {
      const s = new ReplySink();
      const e: Expectation<string> = { kind: 'query', mode, ...(mode === 'capture' ? { rows: [] } : {}) };
      s.q.expect(e);
      s.feed(
        stream(
          be.rowDescription('lsn'),
          be.dataRow('0/3000060'),
          be.commandComplete('SELECT 1'),
          NOTIFY,
          be.ready('I'),
        ),
      );
      expect(s.async.map((b) => b.equals(NOTIFY))).toEqual([true]);
      expect(s.sent.length, 'nothing of the own request reaches the client').toBe(0);
      expect(s.q.pending).toBe(0);
      if (mode === 'capture') expect(e.rows).toEqual([['0/3000060']]);
    });
  }

  it("inside a client's reply it goes with that reply, in place (as PostgreSQL sent it)", () => {
    const s = new ReplySink();
    s.q.expect({ kind: 'query', mode: 'forward' });
    const reply = stream(be.commandComplete('INSERT 0 1'), NOTIFY, be.ready('I'));
    s.feed(reply);
    expect(s.async).toEqual([]);
    expect(s.sent.equals(reply)).toBe(true);
  });

  it('with nothing outstanding it is asynchronous as before', () => {
    const s = new ReplySink();
    s.feed(NOTIFY);
    expect(s.async.map((b) => b.equals(NOTIFY))).toEqual([true]);
  });
});
