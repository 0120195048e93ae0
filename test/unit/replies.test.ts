/**
 * The reply queue (src/session/replies.ts) without sockets or PostgreSQL: requests
 * are queued as the session would queue them, backend replies are fed as bytes, and
 * what reaches the client, what is held or captured and which requests complete
 * are checked.
 */
import { describe, expect, it } from 'vitest';
import { TxStatus } from '../../src/protocol/constants.js';
import {
  type BackendState,
  type ErrorFieldMap,
  type Expectation,
  MergedReady,
  type ReplyOutput,
  type RequestKind,
  ReplyQueue,
} from '../../src/session/replies.js';
import { be, stream } from '../support/backend-messages.js';

type Exp = Expectation<string>;

/** Records what the queue reports; `link` names the connection in `done` calls. */
class Harness implements ReplyOutput {
  readonly client: Buffer[] = [];
  readonly errors: ErrorFieldMap[] = [];
  readonly fatals: ErrorFieldMap[] = [];
  readonly async: Buffer[] = [];
  readonly brokenWith: string[] = [];
  readonly completed: string[] = [];
  readonly state: BackendState = { txStatus: TxStatus.Idle, params: new Map() };
  readonly q: ReplyQueue<string>;

  constructor(readonly link = 'node0') {
    this.q = new ReplyQueue<string>(this, this.state);
  }

  toClient(bytes: Buffer): void {
    this.client.push(Buffer.from(bytes));
  }
  error(f: ErrorFieldMap): void {
    this.errors.push(f);
  }
  fatalError(f: ErrorFieldMap): void {
    this.fatals.push(f);
  }
  asyncMessage(bytes: Buffer): void {
    this.async.push(bytes);
  }
  broken(message: string): void {
    this.brokenWith.push(message);
  }
  skips = 0;
  skipsUntilSync(): void {
    this.skips++;
  }
  mustFlush(): void {}
  tellClient(_name: string, value: string): string {
    return value;
  }

  /** Queue a request; its `done` records `label` (and the error code, if any). */
  expect(label: string, e: Omit<Exp, 'done'> & { done?: Exp['done'] }): Exp {
    const own = e.done;
    const x: Exp = {
      ...e,
      done: (r, l) => {
        this.completed.push(r.error ? `${label}!${r.error.C}` : label);
        own?.(r, l);
      },
    };
    this.q.expect(x);
    return x;
  }

  /** Feed bytes (in `chunks` pieces of any size) and run completed requests' callbacks. */
  feed(bytes: Buffer, chunkSize = bytes.length): void {
    for (let i = 0; i < bytes.length; i += chunkSize) this.q.push(bytes.subarray(i, i + chunkSize));
    this.q.runFinished(this.link);
  }

  get sent(): Buffer {
    return Buffer.concat(this.client);
  }
}

const selectReply = stream(
  be.rowDescription('a', 'b'),
  be.dataRow('1', null),
  be.dataRow('2', 'x'),
  be.commandComplete('SELECT 2'),
  be.ready('I'),
);

describe('ReplyQueue: simple Query', () => {
  it('forwards the whole reply in one piece, ends the request at ReadyForQuery and records its status', () => {
    const h = new Harness();
    const e = h.expect('q', { kind: 'query', mode: 'forward' });
    expect(h.q.visible).toBe(1);
    h.feed(selectReply);
    expect(h.client).toHaveLength(1);
    expect(h.sent.equals(selectReply)).toBe(true);
    expect(h.completed).toEqual(['q']);
    expect(e.status).toBe(TxStatus.Idle);
    expect(h.q.pending).toBe(0);
    expect(h.q.visible).toBe(0);
  });

  it('gives the same bytes and outcome for every split of the reply', () => {
    for (let size = 1; size <= selectReply.length; size++) {
      const h = new Harness();
      h.expect('q', { kind: 'query', mode: 'forward' });
      h.feed(selectReply, size);
      expect(h.sent.equals(selectReply)).toBe(true);
      expect(h.completed).toEqual(['q']);
      expect(h.q.midMessage).toBe(false);
    }
  });

  it('knows when a reply message is only partly received', () => {
    const h = new Harness();
    h.expect('q', { kind: 'query', mode: 'forward' });
    h.q.push(selectReply.subarray(0, 20));
    expect(h.q.midMessage).toBe(true);
    h.q.push(selectReply.subarray(20));
    expect(h.q.midMessage).toBe(false);
  });

  it('keeps the transaction status and reported parameters of the backend', () => {
    const h = new Harness();
    h.expect('begin', { kind: 'query', mode: 'forward' });
    h.feed(stream(be.commandComplete('BEGIN'), be.parameterStatus('TimeZone', 'UTC'), be.ready('T')));
    expect(h.state.txStatus).toBe(TxStatus.InTransaction);
    expect(h.state.params.get('TimeZone')).toBe('UTC');
  });

  it('forwards an error reply and ends the query at its ReadyForQuery', () => {
    const h = new Harness();
    const e = h.expect('q', { kind: 'query', mode: 'forward' });
    h.feed(stream(be.error('42P01', 'relation "nope" does not exist'), be.ready('I')));
    expect(h.completed).toEqual(['q!42P01']);
    expect(e.error?.M).toBe('relation "nope" does not exist');
    expect(h.errors.map((f) => f.C)).toEqual(['42P01']);
    expect(h.sent.length).toBeGreaterThan(0);
  });

  it('drops replies of a dropped request and forwards the next one, in order', () => {
    const h = new Harness();
    h.expect('mirrored', { kind: 'query', mode: 'drop' });
    h.expect('q', { kind: 'query', mode: 'forward' });
    expect(h.q.visible).toBe(1);
    h.feed(stream(be.commandComplete('SET'), be.ready('I'), selectReply));
    expect(h.sent.equals(selectReply)).toBe(true);
    expect(h.completed).toEqual(['mirrored', 'q']);
  });
});

describe('ReplyQueue: hold and capture', () => {
  it('holds the reply of a statement run on two nodes until the session decides', () => {
    const h = new Harness();
    const e = h.expect('both', { kind: 'query', mode: 'hold', held: [] });
    const reply = stream(be.commandComplete('BEGIN'), be.ready('T'));
    for (let size = 1; size <= reply.length; size++) {
      const x = new Harness();
      const held = x.expect('both', { kind: 'query', mode: 'hold', held: [] });
      x.feed(reply, size);
      expect(x.client).toEqual([]);
      expect(Buffer.concat(held.held ?? []).equals(reply)).toBe(true);
    }
    h.feed(reply);
    expect(h.client).toEqual([]);
    expect(Buffer.concat(e.held ?? []).equals(reply)).toBe(true);
    expect(e.status).toBe(TxStatus.InTransaction);
  });

  it('decodes the rows of an internal query and shows the client nothing', () => {
    const h = new Harness();
    const e = h.expect('catalog', { kind: 'query', mode: 'capture', rows: [] });
    expect(h.q.visible).toBe(0);
    h.feed(selectReply, 7);
    expect(h.client).toEqual([]);
    expect(e.columns).toEqual(['a', 'b']);
    expect(e.rows).toEqual([
      ['1', null],
      ['2', 'x'],
    ]);
  });
});

describe('ReplyQueue: requests sent after the server began skipping', () => {
  it("a dropped request failed (a statement's copy for another node), then the client's read is sent there before the Sync: the client gets that error once, for the read, and the Sync's ReadyForQuery ends the batch", () => {
    const h = new Harness('node1');
    const mirror = h.expect('copy', { kind: 'execute', mode: 'drop' });
    h.feed(be.error('22023', 'role "r" does not exist'));
    expect(h.sent.length).toBe(0);
    // The server skips everything up to the Sync: no reply will come for these.
    h.expect('parse', { kind: 'parse', mode: 'forward' });
    h.expect('execute', { kind: 'execute', mode: 'forward' });
    expect(h.q.visible).toBe(0);
    expect(h.skips).toBe(1);
    h.expect('sync', { kind: 'sync', mode: 'forward' });
    h.feed(be.ready('E'));
    expect(h.completed).toEqual(['copy!22023', 'parse!22023', 'execute!22023', 'sync']);
    // The error once (for the read), then ReadyForQuery.
    expect(h.sent.equals(stream(be.error('22023', 'role "r" does not exist'), be.ready('E')))).toBe(true);
    expect(mirror.errorShown).toBe(true);
    expect(h.q.pending).toBe(0);
  });

  it('after a Sync the server answers again: a request queued behind a pending Sync is not skipped', () => {
    const h = new Harness('node1');
    h.expect('copy', { kind: 'execute', mode: 'drop' });
    h.feed(be.error('22023', 'no'));
    h.expect('sync', { kind: 'sync', mode: 'drop' });
    h.expect('q', { kind: 'query', mode: 'forward' });
    expect(h.q.visible).toBe(1);
    h.feed(stream(be.ready('E'), be.commandComplete('ROLLBACK'), be.ready('I')));
    expect(h.completed).toEqual(['copy!22023', 'sync', 'q']);
    expect(h.sent.equals(stream(be.commandComplete('ROLLBACK'), be.ready('I')))).toBe(true);
  });
});

describe('ReplyQueue: extended protocol pipelines', () => {
  const pipeline = (h: Harness): void => {
    h.expect('parse', { kind: 'parse', mode: 'forward' });
    h.expect('bind', { kind: 'bind', mode: 'forward' });
    h.expect('describe', { kind: 'describe', mode: 'forward' });
    h.expect('execute', { kind: 'execute', mode: 'forward' });
    h.expect('sync', { kind: 'sync', mode: 'forward' });
  };

  it('reports skipping up to Sync when a visible request failed before its Sync was sent, not after', () => {
    const before = new Harness();
    before.expect('parse', { kind: 'parse', mode: 'forward' });
    before.expect('bind', { kind: 'bind', mode: 'forward' });
    before.feed(be.error('42P01', 'relation does not exist'));
    expect(before.completed).toEqual(['parse!42P01', 'bind!42P01']);
    expect(before.skips).toBe(1);
    const after = new Harness();
    pipeline(after);
    after.feed(be.error('42P01', 'relation does not exist'));
    expect(after.skips).toBe(0);
    const hidden = new Harness();
    hidden.expect('parse', { kind: 'parse', mode: 'drop' });
    hidden.feed(be.error('42P01', 'relation does not exist'));
    expect(hidden.skips).toBe(0);
  });

  it('ends each request at its own reply', () => {
    const h = new Harness();
    pipeline(h);
    expect(h.q.visible).toBe(5);
    const reply = stream(
      be.parseComplete(),
      be.bindComplete(),
      be.rowDescription('n'),
      be.dataRow('1'),
      be.commandComplete('SELECT 1'),
      be.ready('I'),
    );
    h.feed(reply);
    expect(h.sent.equals(reply)).toBe(true);
    expect(h.completed).toEqual(['parse', 'bind', 'describe', 'execute', 'sync']);
    expect(h.q.visible).toBe(0);
  });

  it('ends Describe of a statement at NoData, after its ParameterDescription', () => {
    const h = new Harness();
    h.expect('describe', { kind: 'describe', mode: 'forward' });
    h.expect('sync', { kind: 'sync', mode: 'forward' });
    h.feed(stream(be.parameterDescription(2), be.noData()));
    expect(h.completed).toEqual(['describe']);
    h.feed(be.ready('I'));
    expect(h.completed).toEqual(['describe', 'sync']);
  });

  it('an error skips the rest of the pipeline up to Sync, and each skipped request sees it', () => {
    const h = new Harness();
    pipeline(h);
    h.feed(stream(be.parseComplete(), be.error('42703', 'column "x" does not exist')));
    expect(h.completed).toEqual(['parse', 'bind!42703', 'describe!42703', 'execute!42703']);
    expect(h.q.pending).toBe(1);
    h.feed(be.ready('I'));
    expect(h.completed.at(-1)).toBe('sync');
    expect(h.errors).toHaveLength(1);
  });

  it('forwards an error of a dropped request when a skipped request was the client’s', () => {
    const h = new Harness();
    h.expect('reparse', { kind: 'parse', mode: 'drop' });
    h.expect('bind', { kind: 'bind', mode: 'forward' });
    h.expect('sync', { kind: 'sync', mode: 'forward' });
    const err = be.error('26000', 'prepared statement "s1" does not exist');
    h.feed(stream(err, be.ready('I')));
    expect(h.sent.equals(stream(err, be.ready('I')))).toBe(true);
  });

  it('a Bind of a statement the server lost (26000) is re-sent once and only the second run reaches the client', () => {
    const h = new Harness();
    let resent = 0;
    h.expect('bind', { kind: 'bind', mode: 'forward', lostStatement: { resend: () => resent++ } });
    h.expect('execute', { kind: 'execute', mode: 'forward' });
    h.expect('sync', { kind: 'sync', mode: 'forward' });
    h.expect('lsn', { kind: 'query', mode: 'capture' });
    const lsnReply = [be.rowDescription('lsn'), be.dataRow('0/1'), be.commandComplete('SELECT 1'), be.ready('I')];
    // The failed run: error, the skipped Execute, the Sync's ReadyForQuery, pgrelay's own query.
    h.feed(stream(be.error('26000', 'prepared statement "PGRELAY_1" does not exist'), be.ready('I'), ...lsnReply));
    expect(resent).toBe(1);
    expect(h.client).toEqual([]);
    expect(h.errors).toEqual([]);
    // The second run: Parse, Bind, Execute, Sync, the query again.
    const ok = [be.bindComplete(), be.commandComplete('UPDATE 1'), be.ready('I')];
    h.feed(stream(be.parseComplete(), ...ok, ...lsnReply));
    expect(h.sent.equals(stream(...ok))).toBe(true);
    expect(h.completed.slice(-4)).toEqual(['bind', 'execute', 'sync', 'lsn']);
  });

  it("a lost statement is re-sent too when the query of pgrelay's own behind it is an extended-protocol batch (session/own-query.ts)", () => {
    const h = new Harness();
    let resent = 0;
    h.expect('bind', { kind: 'bind', mode: 'forward', lostStatement: { resend: () => resent++ } });
    h.expect('execute', { kind: 'execute', mode: 'forward' });
    h.expect('sync', { kind: 'sync', mode: 'forward' });
    const own: Array<[string, RequestKind]> = [
      ['close', 'close'],
      ['parse', 'parse'],
      ['bind', 'bind'],
      ['execute', 'execute'],
      ['closeP', 'close'],
      ['closeS', 'close'],
      ['osync', 'sync'],
    ];
    for (const [name, kind] of own) h.expect(`own-${name}`, { kind, mode: 'capture' });
    const ownReply = [
      be.closeComplete(),
      be.parseComplete(),
      be.bindComplete(),
      be.dataRow('0/1'),
      be.commandComplete('SELECT 1'),
      be.closeComplete(),
      be.closeComplete(),
      be.ready('I'),
    ];
    h.feed(stream(be.error('26000', 'prepared statement "PGRELAY_1" does not exist'), be.ready('I'), ...ownReply));
    expect(resent).toBe(1);
    expect(h.client).toEqual([]);
    const ok = [be.bindComplete(), be.commandComplete('UPDATE 1'), be.ready('I')];
    h.feed(stream(be.parseComplete(), ...ok, ...ownReply));
    expect(h.sent.equals(stream(...ok))).toBe(true);
    expect(h.completed.slice(-10)).toEqual(['bind', 'execute', 'sync', ...own.map(([n]) => `own-${n}`)]);
  });

  it('a lost statement is not re-sent when the batch is not all in the queue', () => {
    const h = new Harness();
    let resent = 0;
    h.expect('bind', { kind: 'bind', mode: 'forward', lostStatement: { resend: () => resent++ } });
    h.expect('execute', { kind: 'execute', mode: 'forward' });
    const err = be.error('26000', 'prepared statement "PGRELAY_1" does not exist');
    h.feed(stream(err));
    expect(resent).toBe(0);
    expect(h.sent.equals(stream(err))).toBe(true);
    expect(h.completed).toEqual(['bind!26000', 'execute!26000']);
  });

  it('keeps an error of mirrored requests from the client (their twin on the primary answers)', () => {
    const h = new Harness('standby');
    h.expect('parse', { kind: 'parse', mode: 'drop' });
    h.expect('bind', { kind: 'bind', mode: 'drop' });
    h.expect('sync', { kind: 'sync', mode: 'merge' });
    expect(h.q.visible).toBe(1);
    const e = h.q.pendingRequests()[2];
    h.feed(stream(be.error('0A000', 'cannot execute in a read-only transaction'), be.ready('E')));
    expect(h.client).toEqual([]);
    expect(e.status).toBe(TxStatus.Failed);
    expect(h.completed).toEqual(['parse!0A000', 'bind!0A000', 'sync']);
  });

  it('a row-limited Execute ends at PortalSuspended; the next Execute continues', () => {
    const h = new Harness();
    h.expect('exec1', { kind: 'execute', mode: 'forward' });
    h.expect('exec2', { kind: 'execute', mode: 'forward' });
    h.expect('sync', { kind: 'sync', mode: 'forward' });
    h.feed(stream(be.dataRow('1'), be.dataRow('2'), be.portalSuspended()));
    expect(h.completed).toEqual(['exec1']);
    h.feed(stream(be.dataRow('3'), be.commandComplete('SELECT 3'), be.ready('I')));
    expect(h.completed).toEqual(['exec1', 'exec2', 'sync']);
  });

  it('an empty query ends Execute at EmptyQueryResponse', () => {
    const h = new Harness();
    h.expect('exec', { kind: 'execute', mode: 'forward' });
    h.feed(be.emptyQuery());
    expect(h.completed).toEqual(['exec']);
  });

  it('Syncs sent before a COPY FROM STDIN in a pipeline get no reply; their callbacks run with the next Sync', () => {
    const h = new Harness();
    h.expect('execute', { kind: 'execute', mode: 'forward' });
    h.expect('sync-before-data', { kind: 'sync', mode: 'forward' });
    h.feed(be.copyInResponse(2));
    expect(h.q.copyIn).toBe(true);
    expect(h.q.pending).toBe(1);
    expect(h.q.visible).toBe(1);
    h.expect('sync-after-copydone', { kind: 'sync', mode: 'forward' });
    h.feed(stream(be.commandComplete('COPY 2'), be.ready('I')));
    expect(h.q.copyIn).toBe(false);
    expect(h.completed).toEqual(['execute', 'sync-before-data', 'sync-after-copydone']);
  });

  it("a Query of pgrelay's own sent into a pipeline after a request that fails there is ignored by the server, as it skips up to Sync: no reply is waited for", () => {
    const h = new Harness();
    h.expect('parse', { kind: 'parse', mode: 'drop' });
    h.expect('own-query', { kind: 'query', mode: 'drop' });
    h.expect('sync', { kind: 'sync', mode: 'forward' });
    h.feed(stream(be.error('25P02', 'current transaction is aborted'), be.ready('E')));
    expect(h.q.pending).toBe(0);
    expect(h.completed).toEqual(['parse!25P02', 'own-query!25P02', 'sync']);
  });

  it('a COPY FROM STDIN whose data and end the client sent before the server asked for them: the Sync after the end is answered', () => {
    const h = new Harness();
    h.expect('execute', { kind: 'execute', mode: 'forward' });
    h.expect('sync-before-data', { kind: 'sync', mode: 'forward' });
    h.q.copyEnded();
    h.expect('sync-after-copyfail', { kind: 'sync', mode: 'forward' });
    h.feed(be.copyInResponse(2));
    // The client's end of the copy went already: what it sends next is not copy data.
    expect(h.q.copyIn).toBe(false);
    expect(h.q.pending).toBe(2);
    h.feed(stream(be.error('57014', 'COPY from stdin failed'), be.ready('I')));
    expect(h.q.copyIn).toBe(false);
    expect(h.q.pending).toBe(0);
    expect(h.completed).toEqual(['execute!57014', 'sync-before-data', 'sync-after-copyfail']);
  });
});

describe('ReplyQueue: across nodes', () => {
  it("a pipeline's Sync on two nodes: the primary's ParameterStatus and errors reach the client, no node's ReadyForQuery does", () => {
    const primary = new Harness('primary');
    const standby = new Harness('standby');
    primary.expect('sync', { kind: 'sync', mode: 'merge', reportsToClient: true });
    standby.expect('sync', { kind: 'sync', mode: 'merge' });
    const report = be.parameterStatus('application_name', 'x1');
    primary.feed(stream(report, be.ready('I')));
    standby.feed(stream(be.parameterStatus('application_name', 'x1'), be.ready('I')));
    expect(primary.sent.equals(report)).toBe(true);
    expect(standby.client).toEqual([]);
    expect(primary.state.params.get('application_name')).toBe('x1');
    const p2 = new Harness('primary');
    p2.expect('sync', { kind: 'sync', mode: 'merge', reportsToClient: true });
    const err = be.error('23503', 'insert or update violates foreign key constraint');
    p2.feed(stream(err, be.ready('I')));
    expect(p2.sent.equals(err)).toBe(true);
    expect(p2.completed).toEqual(['sync!23503']);
  });

  it('counts what each node owes the client, so that a second node waits until the first has answered', () => {
    const primary = new Harness('primary');
    const standby = new Harness('standby');
    // A pipeline: a write on the primary, then a read that belongs on the standby.
    primary.expect('parse-w', { kind: 'parse', mode: 'forward' });
    primary.expect('exec-w', { kind: 'execute', mode: 'forward' });
    expect(primary.q.visible).toBe(2); // the read may not be sent to the standby yet
    primary.feed(stream(be.parseComplete(), be.commandComplete('INSERT 0 1')));
    expect(primary.q.visible).toBe(0); // now it may
    standby.expect('parse-r', { kind: 'parse', mode: 'forward' });
    expect(standby.q.visible).toBe(1);
    // Sync goes to both: each answers ReadyForQuery, merged by the session into one.
    primary.expect('sync', { kind: 'sync', mode: 'merge' });
    standby.expect('sync', { kind: 'sync', mode: 'merge' });
    standby.feed(stream(be.parseComplete(), be.ready('I')));
    primary.feed(be.ready('I'));
    // The merged ReadyForQuery is the session's to write: neither node forwards its own.
    expect(primary.sent.equals(stream(be.parseComplete(), be.commandComplete('INSERT 0 1')))).toBe(true);
    expect(standby.sent.equals(be.parseComplete())).toBe(true);
    expect(primary.completed).toEqual(['parse-w', 'exec-w', 'sync']);
    expect(standby.completed).toEqual(['parse-r', 'sync']);
  });
});

describe('ReplyQueue: the one ReadyForQuery of a pipeline across nodes', () => {
  /** A primary and a standby link writing to one client. */
  function twoNodes(): { primary: Harness; standby: Harness; client: Buffer[] } {
    const client: Buffer[] = [];
    const primary = new Harness('primary');
    const standby = new Harness('standby');
    primary.toClient = (b) => client.push(Buffer.from(b));
    standby.toClient = (b) => client.push(Buffer.from(b));
    return { primary, standby, client };
  }

  it('is written where the last node answers, before what that node sends next in the same read (a Query pipelined behind the pipeline)', () => {
    const { primary, standby, client } = twoNodes();
    const merged = new MergedReady(2);
    primary.expect('sync', { kind: 'sync', mode: 'merge', reportsToClient: true, merged });
    standby.expect('sync', { kind: 'sync', mode: 'merge', merged });
    primary.feed(be.ready('I'));
    expect(client).toEqual([]);
    expect(merged.complete).toBe(false);
    // The primary has answered: a read pipelined behind the batch may go to the standby,
    // whose ReadyForQuery and reply to the read then come in one piece.
    standby.expect('read', { kind: 'query', mode: 'forward' });
    standby.feed(stream(be.ready('I'), selectReply));
    expect(Buffer.concat(client).equals(stream(be.ready('I'), selectReply))).toBe(true);
    expect(merged.complete).toBe(true);
    expect(standby.completed).toEqual(['sync', 'read']);
  });

  it("carries the primary's transaction status, or failed if any node's transaction failed", () => {
    const a = new MergedReady(2);
    expect(a.add(TxStatus.Idle, false)).toBeUndefined();
    expect(a.add(TxStatus.InTransaction, true)?.equals(be.ready('T'))).toBe(true);
    const b = new MergedReady(2);
    b.add(TxStatus.InTransaction, true);
    expect(b.add(TxStatus.Failed, false)?.equals(be.ready('E'))).toBe(true);
    expect(b.status).toBe(TxStatus.Failed);
  });
});

describe('ReplyQueue: messages outside requests, and a backend going away', () => {
  it('hands notifications and notices that arrive while idle to the session', () => {
    const h = new Harness();
    const n = be.notification(42, 'chan', 'hello');
    h.feed(n);
    expect(h.async).toHaveLength(1);
    expect(h.async[0].equals(n)).toBe(true);
    expect(h.client).toEqual([]);
  });

  it('marks the link fatal on a FATAL sent while idle (shutdown)', () => {
    const h = new Harness();
    h.feed(be.error('57P01', 'terminating connection due to administrator command', 'FATAL'));
    expect(h.q.fatal).toBe(true);
    expect(h.fatals.map((f) => f.C)).toEqual(['57P01']);
  });

  it('keeps a re-sendable read clean when its server warns and goes away before answering', () => {
    const h = new Harness('standby');
    const e = h.expect('read', { kind: 'query', mode: 'forward', resend: () => undefined });
    h.feed(
      stream(
        be.notice('57P02', 'terminating connection because of crash of another server process'),
        be.error('57P01', 'terminating connection due to administrator command', 'FATAL'),
      ),
    );
    expect(h.client).toEqual([]);
    expect(e.started).toBe(false);
    expect(h.q.fatal).toBe(true);
    expect(h.q.takePending()).toEqual([e]);
    expect(h.q.visible).toBe(0);
  });

  it('forwards a FATAL that answers a request that cannot move', () => {
    const h = new Harness();
    h.expect('q', { kind: 'query', mode: 'forward' });
    const fatal = be.error('57P01', 'terminating connection due to administrator command', 'FATAL');
    h.feed(fatal);
    expect(h.sent.equals(fatal)).toBe(true);
  });

  it('a read that started answering can no longer be re-sent', () => {
    const h = new Harness('standby');
    const e = h.expect('read', { kind: 'query', mode: 'forward', resend: () => undefined });
    h.feed(be.rowDescription('a'));
    expect(e.started).toBe(true);
  });

  it('reports a malformed reply stream', () => {
    const h = new Harness();
    h.expect('q', { kind: 'query', mode: 'forward' });
    h.feed(Buffer.from([0x44, 0, 0, 0, 2]));
    expect(h.brokenWith).toEqual(['invalid message length 2']);
  });
});

describe('ReplyQueue: synthetic replies (pool_mode = transaction)', () => {
  it('gives pgrelay’s reply in order, once the requests before it are answered', () => {
    const h = new Harness();
    h.expect('bind', { kind: 'bind', mode: 'forward' });
    h.expect('parse', { kind: 'parse', mode: 'synthetic', reply: be.parseComplete() });
    expect(h.sent.length).toBe(0);
    expect(h.q.visible).toBe(2);
    h.feed(be.bindComplete());
    expect(h.sent).toEqual(stream(be.bindComplete(), be.parseComplete()));
    expect(h.q.pending).toBe(0);
    // Alone in the queue: at once.
    h.expect('close', { kind: 'close', mode: 'synthetic', reply: be.closeComplete() });
    expect(h.sent).toEqual(stream(be.bindComplete(), be.parseComplete(), be.closeComplete()));
  });

  it('is skipped, like the real request, after an error up to the Sync', () => {
    const h = new Harness();
    h.expect('bind', { kind: 'bind', mode: 'forward' });
    h.expect('parse', { kind: 'parse', mode: 'synthetic', reply: be.parseComplete() });
    h.feed(be.error('26000', 'prepared statement "x" does not exist'));
    // Sent after the error and before the Sync: the server skips it.
    h.expect('close', { kind: 'close', mode: 'synthetic', reply: be.closeComplete() });
    h.expect('sync', { kind: 'sync', mode: 'forward' });
    h.feed(be.ready('I'));
    expect(h.sent).toEqual(stream(be.error('26000', 'prepared statement "x" does not exist'), be.ready('I')));
    // After the Sync's ReadyForQuery, synthetic replies are given again.
    h.expect('close2', { kind: 'close', mode: 'synthetic', reply: be.closeComplete() });
    expect(h.sent.subarray(-5)).toEqual(be.closeComplete());
  });
});
