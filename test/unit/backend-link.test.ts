/**
 * BackendLink.adopt (src/session/backend-link.ts): in pool_mode = transaction a pooled
 * connection keeps its link from one unit of work to the next, and the next session
 * takes it over. It must then behave as a new link, and never be taken over while
 * anything of the last session's could still act on it (a wait for that client's
 * drain, a hold on reading, replies owed or half-read, a FATAL).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BackendConnection } from '../../src/pool/connector.js';
import { BackendLink, type LinkOwner } from '../../src/session/backend-link.js';
import { be, stream } from '../support/backend-messages.js';

/** A session as a link sees it: what reached its client, and what it was told. */
class Owner implements LinkOwner {
  sent: Buffer[] = [];
  progressedCalls = 0;
  fatals = 0;
  drainWaiters: Array<() => void> = [];
  clientFull = false;
  writeClient(bytes: Buffer): boolean {
    this.sent.push(bytes);
    return !this.clientFull;
  }
  onClientDrain(fn: () => void): void {
    this.drainWaiters.push(fn);
  }
  asyncMessage(): void {}
  tellClient(_name: string, value: string): string {
    return value;
  }
  linkClosed(): void {}
  progressed(): void {
    this.progressedCalls++;
  }
  backendError(): void {}
  skipUntilSync(): void {}
  backendFatal(): void {
    this.fatals++;
  }
  linkBroken(): void {}
  backendCongested(): void {}
  backendDrained(): void {}
}

const sockets: net.Socket[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.destroy();
});

/** A connection on an unconnected socket: replies are fed as 'data' events. */
function connection(): BackendConnection {
  const socket = new net.Socket();
  sockets.push(socket);
  return new BackendConnection(socket, 0, '127.0.0.1', 5432, 90_000 + sockets.length, 1, new Map(), 'k');
}

const feed = (c: BackendConnection, bytes: Buffer): boolean => c.socket.emit('data', bytes);
const SELECT_REPLY = stream(be.rowDescription('a'), be.dataRow('1'), be.commandComplete('SELECT 1'), be.ready('I'));

/** A link through which `owner` ran one statement to the end, then gave the connection back. */
function usedLink(owner: Owner): BackendLink {
  const link = new BackendLink(owner, connection());
  link.attach();
  link.expect({ kind: 'query', mode: 'forward' });
  feed(link.conn, SELECT_REPLY);
  link.detach();
  return link;
}

describe('BackendLink.adopt', () => {
  it("takes a clean link over for another session: the next replies reach that session's client only", () => {
    const a = new Owner();
    const b = new Owner();
    const link = usedLink(a);
    link.needsFlush = true;
    link.inPipeline = true;
    link.usedInTx = true;
    expect(link.adopt(b)).toBe(true);
    expect(link.owner).toBe(b);
    expect([link.needsFlush, link.inPipeline, link.usedInTx, link.recording]).toEqual([false, false, false, undefined]);
    link.attach();
    link.expect({ kind: 'query', mode: 'forward' });
    feed(link.conn, SELECT_REPLY);
    expect(Buffer.concat(b.sent).equals(SELECT_REPLY)).toBe(true);
    expect(a.sent.length, 'the first session got only its own reply').toBe(1);
    expect(b.progressedCalls).toBe(1);
  });

  it('refuses while attached, and while a request is owed its reply', () => {
    const a = new Owner();
    const link = new BackendLink(a, connection());
    link.attach();
    expect(link.adopt(new Owner())).toBe(false);
    link.expect({ kind: 'query', mode: 'forward' });
    link.detach();
    expect(link.adopt(new Owner())).toBe(false);
    expect(link.owner).toBe(a);
  });

  it('refuses while the last session waits for its client to drain (its callback would release the reads)', () => {
    const a = new Owner();
    a.clientFull = true;
    const link = usedLink(a);
    expect(a.drainWaiters.length).toBe(1);
    expect(link.adopt(new Owner())).toBe(false);
    // Its client drained: nothing of it is left on the link.
    for (const fn of a.drainWaiters.splice(0)) fn();
    expect(link.adopt(new Owner())).toBe(true);
  });

  it('refuses with reads held, with a reply half read, and after a FATAL', () => {
    const held = usedLink(new Owner());
    held.holdReading();
    expect(held.adopt(new Owner())).toBe(false);
    held.releaseReading();
    expect(held.adopt(new Owner())).toBe(true);

    const half = new BackendLink(new Owner(), connection());
    half.attach();
    half.expect({ kind: 'query', mode: 'forward' });
    feed(half.conn, SELECT_REPLY.subarray(0, SELECT_REPLY.length - 3));
    half.detach();
    expect(half.adopt(new Owner())).toBe(false);

    const a = new Owner();
    const fatal = new BackendLink(a, connection());
    fatal.attach();
    fatal.expect({ kind: 'query', mode: 'forward' });
    feed(fatal.conn, be.error('57P01', 'terminating connection due to administrator command', 'FATAL'));
    fatal.detach();
    expect(a.fatals).toBe(1);
    expect(fatal.adopt(new Owner())).toBe(false);
  });
});

describe('BackendLink.whenSettled (a released link finishing requests of its own)', () => {
  it('reads the connection again if it stopped for its client to drain: that client is gone, nothing more goes to it', () => {
    const a = new Owner();
    const link = new BackendLink(a, connection());
    link.attach();
    link.expect({ kind: 'query', mode: 'forward' });
    a.clientFull = true;
    // The reply filled the client's socket: the link waits for the client to drain.
    feed(link.conn, SELECT_REPLY);
    expect(link.conn.socket.isPaused()).toBe(true);
    // A request of pgrelay's own follows; then the client leaves, and the session lets the link settle.
    link.expect({ kind: 'query', mode: 'drop' });
    let settled: boolean | undefined;
    link.whenSettled((ok) => {
      settled = ok;
    }, 60_000);
    expect(link.conn.socket.isPaused()).toBe(false);
    const sent = a.sent.length;
    feed(link.conn, SELECT_REPLY);
    expect(settled).toBe(true);
    expect(a.sent.length).toBe(sent);
  });
});
