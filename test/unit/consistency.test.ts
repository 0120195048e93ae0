/**
 * Read-your-writes decisions (router/consistency.ts) and the cross-session write
 * horizon (session/write-horizon.ts): pure logic, no sockets.
 */
import { describe, expect, it } from 'vitest';
import { checkRead, type ReadCheck, replayWaitSql, writePosition } from '../../src/router/consistency.js';
import { formatLsn, parseLsn } from '../../src/protocol/lsn.js';
import { WriteHorizon } from '../../src/session/write-horizon.js';

function read(over: Partial<ReadCheck>): ReadCheck {
  return {
    mode: 'session',
    inTransaction: false,
    ownCapturing: false,
    ownUncaptured: false,
    ownPosition: 0n,
    othersCapturing: false,
    othersUncaptured: false,
    newestPosition: 0n,
    replayPosition: 0n,
    asked: false,
    canAsk: true,
    ...over,
  };
}

describe('checkRead', () => {
  it('off: every read stays on the standby, whatever was written', () => {
    expect(checkRead(read({ mode: 'off', ownPosition: 100n, ownCapturing: true, ownUncaptured: true }))).toEqual({
      act: 'standby',
      checked: false,
    });
  });

  it('session: a session that never wrote reads from the standby without any check', () => {
    expect(checkRead(read({ newestPosition: 500n }))).toEqual({ act: 'standby', checked: false });
  });

  it("session: waits while the position of the session's write is being read", () => {
    expect(checkRead(read({ ownCapturing: true, ownPosition: 10n, replayPosition: 100n }))).toEqual({ act: 'wait' });
  });

  it('session: a standby known to have replayed the write serves the read', () => {
    expect(checkRead(read({ ownPosition: 100n, replayPosition: 100n }))).toEqual({ act: 'standby', checked: true });
    expect(checkRead(read({ ownPosition: 100n, replayPosition: 101n }))).toEqual({ act: 'standby', checked: true });
  });

  it('session: a standby behind is asked once, then the read moves to the primary', () => {
    expect(checkRead(read({ ownPosition: 100n, replayPosition: 99n }))).toEqual({ act: 'ask', need: 100n });
    expect(checkRead(read({ ownPosition: 100n, replayPosition: 99n, asked: true })).act).toBe('primary');
  });

  it('session: a standby that cannot be asked (inside a transaction, busy link) is not waited for', () => {
    expect(checkRead(read({ ownPosition: 100n, replayPosition: 50n, canAsk: false })).act).toBe('primary');
  });

  it('session: a write with an unknown position sends reads to the primary, outside a transaction', () => {
    expect(checkRead(read({ ownUncaptured: true })).act).toBe('primary');
    expect(checkRead(read({ ownUncaptured: true, inTransaction: true }))).toEqual({ act: 'standby', checked: false });
  });

  it("session: other sessions' writes do not matter", () => {
    expect(
      checkRead(read({ newestPosition: 900n, othersCapturing: true, othersUncaptured: true, replayPosition: 1n })),
    ).toEqual({ act: 'standby', checked: false });
  });

  it('global: every read waits for positions being read and needs the newest write', () => {
    const g = (o: Partial<ReadCheck>): ReadCheck => read({ mode: 'global', ...o });
    expect(checkRead(g({ othersCapturing: true }))).toEqual({ act: 'wait' });
    expect(checkRead(g({ newestPosition: 300n, replayPosition: 200n }))).toEqual({ act: 'ask', need: 300n });
    expect(checkRead(g({ newestPosition: 300n, ownPosition: 400n, replayPosition: 350n }))).toEqual({
      act: 'ask',
      need: 400n,
    });
    expect(checkRead(g({ newestPosition: 300n, replayPosition: 300n }))).toEqual({ act: 'standby', checked: true });
    expect(checkRead(g({ othersUncaptured: true })).act).toBe('primary');
  });
});

describe('write positions', () => {
  it('an insert position just past a page header counts from the page boundary', () => {
    expect(writePosition(0x3000028n)).toBe(0x3000000n); // segment start: long header (40 bytes)
    expect(writePosition(0x3002018n)).toBe(0x3002000n); // page start: short header (24 bytes)
    expect(writePosition(0x3002100n)).toBe(0x3002100n);
  });

  it('LSN text round-trips', () => {
    expect(parseLsn('16/B374D848')).toBe(0x16b374d848n);
    expect(formatLsn(0x16b374d848n)).toBe('16/B374D848');
    expect(formatLsn(0n)).toBe('0/0');
    expect(parseLsn('x/1')).toBeUndefined();
    expect(parseLsn(null)).toBeUndefined();
  });

  it('the standby wait statement carries the position and the wait', () => {
    const sql = replayWaitSql(0x3002100n, 10);
    expect(sql).toContain("'0/3002100'::pg_catalog.pg_lsn");
    expect(sql).toContain("interval '10 milliseconds'");
  });
});

describe('WriteHorizon', () => {
  it('keeps the newest position of settled tickets, in the current epoch only', () => {
    const h = new WriteHorizon();
    const a = h.begin();
    const b = h.begin();
    h.end(b, 200n, h.epoch);
    h.end(a, 100n, h.epoch);
    expect(h.position).toBe(200n);
    const c = h.begin();
    h.newPrimary();
    h.end(c, 900n, h.epoch - 1);
    expect(h.position).toBe(0n);
  });

  it('wakes a waiter once every ticket up to its own is settled, not later ones', () => {
    const h = new WriteHorizon();
    const a = h.begin();
    const b = h.begin();
    const upTo = h.issued;
    const c = h.begin();
    let woken = 0;
    h.whenSettled(upTo, () => woken++);
    expect(h.pendingUpTo(upTo)).toBe(true);
    h.end(b, 2n, h.epoch);
    expect(woken).toBe(0);
    h.end(a, 1n, h.epoch);
    expect(woken).toBe(1);
    expect(h.pendingUpTo(upTo)).toBe(false);
    expect(h.pendingUpTo(c)).toBe(true);
    h.whenSettled(upTo, () => woken++);
    expect(woken).toBe(2);
  });

  it('settling an unknown ticket twice changes nothing', () => {
    const h = new WriteHorizon();
    const a = h.begin();
    h.end(a, 5n, h.epoch);
    h.end(a, 50n, h.epoch);
    expect(h.position).toBe(5n);
  });
});

describe('WriteHorizon: lost positions', () => {
  it('a ticket settled without a position makes the horizon lost until a later ticket settles with one', () => {
    const h = new WriteHorizon();
    const a = h.begin();
    const b = h.begin();
    h.end(a, undefined, h.epoch);
    expect(h.lost).toBe(true);
    h.end(b, 7n, h.epoch); // taken before the loss: does not cover it
    expect(h.lost).toBe(true);
    const c = h.begin();
    h.end(c, 9n, h.epoch);
    expect(h.lost).toBe(false);
    expect(h.position).toBe(9n);
  });
});
