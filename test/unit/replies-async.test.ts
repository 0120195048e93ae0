/**
 * The reply queue and asynchronous messages (src/session/replies.ts): a
 * NotificationResponse is never part of a reply. PostgreSQL sends the
 * notifications that arrived during a transaction right before its
 * ReadyForQuery, so one may come inside the reply to pgrelay's own request
 * (the write-position read after a write, a catalog lookup), whose replies are
 * dropped: it must still reach the client, through `asyncMessage`.
 */
import { describe, expect, it } from 'vitest';
import { TxStatus } from '../../src/protocol/constants.js';
import {
  type BackendState,
  type ErrorFieldMap,
  type Expectation,
  type ReplyOutput,
  ReplyQueue,
} from '../../src/session/replies.js';
import { be, stream } from '../support/backend-messages.js';

class Sink implements ReplyOutput {
  readonly client: Buffer[] = [];
  readonly async: Buffer[] = [];
  readonly state: BackendState = { txStatus: TxStatus.Idle, params: new Map() };
  readonly q = new ReplyQueue<string>(this, this.state);
  toClient(bytes: Buffer): void {
    this.client.push(Buffer.from(bytes));
  }
  error(_f: ErrorFieldMap): void {}
  fatalError(_f: ErrorFieldMap): void {}
  asyncMessage(b: Buffer): void {
    this.async.push(Buffer.from(b));
  }
  broken(message: string): void {
    throw new Error(message);
  }
  skipsUntilSync(): void {}
  feed(bytes: Buffer): void {
    this.q.push(bytes);
    this.q.runFinished('link');
  }
}

const NOTIFY = be.notification(4242, 'ch', 'three');

describe('ReplyQueue: a notification inside the reply to a request of pgrelay’s own', () => {
  for (const mode of ['drop', 'capture'] as const) {
    it(`reaches the client through asyncMessage (${mode} mode), and the request still ends at its ReadyForQuery`, () => {
      const s = new Sink();
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
      expect(Buffer.concat(s.client).length, 'nothing of the own request reaches the client').toBe(0);
      expect(s.q.pending).toBe(0);
      if (mode === 'capture') expect(e.rows).toEqual([['0/3000060']]);
    });
  }

  it("inside a client's reply it goes with that reply, in place (as PostgreSQL sent it)", () => {
    const s = new Sink();
    s.q.expect({ kind: 'query', mode: 'forward' });
    const reply = stream(be.commandComplete('INSERT 0 1'), NOTIFY, be.ready('I'));
    s.feed(reply);
    expect(s.async).toEqual([]);
    expect(Buffer.concat(s.client).equals(reply)).toBe(true);
  });

  it('with nothing outstanding it is asynchronous as before', () => {
    const s = new Sink();
    s.feed(NOTIFY);
    expect(s.async.map((b) => b.equals(NOTIFY))).toEqual([true]);
  });
});
