/**
 * Raw extended-protocol message sequences that drivers rarely send but a server answers
 * exactly (found by a differential fuzzer of raw message sequences): each script runs on
 * a fresh connection directly against the primary and through pgrelay in session and
 * transaction mode (load balancing on, primary weight 0, so reads go to the standbys and
 * statements are split across nodes); every reply (message types, rows, command tags,
 * errors and their messages, transaction status) must be the same.
 *
 * The scripts: what a failed or skipped Parse leaves (nothing), a Parse of a name already
 * taken (42P05, the old statement stays), errors that name a prepared statement (the
 * client's name, not pgrelay's), the unnamed statement that a simple Query drops, and
 * pipelines whose Syncs follow each other.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../support/cluster.js';
import { rawSession } from '../support/conformance.js';
import { pollUntil } from '../support/wait.js';
import { Wiretap } from '../support/wiretap.js';
import { type ProxyHandle, startProxy } from '../support/proxy.js';
import {
  type BackendMessage,
  bindMessage,
  closeAllRaw,
  closeMessage,
  copyDataMessage,
  copyDoneMessage,
  copyFailMessage,
  describeMessage,
  executeMessage,
  parseMessage,
  queryMessage,
  summarize,
  syncMessage,
  replyTranscript,
  shownMessage,
} from '../support/raw.js';

const cluster = getCluster();
const table = `conf_raw_${process.pid}`;
const proxies: Record<string, ProxyHandle> = {};

beforeAll(async () => {
  await cluster.psql(
    cluster.primaryId,
    `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (a int, b text); INSERT INTO ${table} SELECT g, 'x' || g FROM generate_series(1, 3) g; DROP SEQUENCE IF EXISTS ${table}_s; CREATE SEQUENCE ${table}_s; CREATE OR REPLACE FUNCTION ${table}_f() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
  );
  await cluster.waitForCatchup(30_000);
  for (const mode of ['session', 'transaction']) {
    proxies[mode] = await startProxy({
      cluster,
      config: {
        pool_mode: mode,
        default_pool_size: 1,
        load_balance_mode: true,
        backend_weight0: 0,
        log_min_messages: 'warning',
      },
    });
  }
});

afterAll(async () => {
  closeAllRaw();
  for (const p of Object.values(proxies)) await p.stop();
  await cluster
    .psql(
      cluster.primaryId,
      `DROP TABLE IF EXISTS ${table}; DROP SEQUENCE IF EXISTS ${table}_s; DROP FUNCTION IF EXISTS ${table}_f()`,
    )
    .catch(() => undefined);
});

/** One write to the client: the messages and the number of ReadyForQuery that end its replies. */
interface Step {
  send: Buffer[];
  readies: number;
}

const batch = (...send: Buffer[]): Step => ({ send, readies: send.filter((b) => b[0] === 0x53).length });
const simple = (sql: string): Step => ({ send: [queryMessage(sql)], readies: 1 });
/** Statement `name` bound to the unnamed portal, run, Sync. */
const runStatement = (name: string): Step => batch(bindMessage('', name), executeMessage(''), syncMessage());

const shown = (m: BackendMessage): string => shownMessage(m);

async function run(port: number, steps: Step[], settings = false): Promise<string[]> {
  const { raw } = await rawSession({ host: '127.0.0.1', port }, settings ? { application_name: 'raw' } : {});
  const out: string[] = [];
  try {
    for (const step of steps) {
      raw.send(...step.send);
      const got = await replyTranscript(raw, step.readies, settings);
      out.push(got);
      if (raw.closed || got.includes('HANG(')) break;
    }
  } finally {
    raw.destroy();
  }
  return out;
}

/**
 * The script directly, then through each pgrelay: the same replies (with `settings`, the
 * values ParameterStatus reports too; the client starts with application_name = raw). Each
 * run through pgrelay reads on the standbys once they replayed the runs before it (their
 * writes are another session's: read-your-writes does not wait for them).
 */
async function conforms(steps: Step[], settings = false): Promise<void> {
  const direct = await run(cluster.node(cluster.primaryId).port, steps, settings);
  for (const [mode, proxy] of Object.entries(proxies)) {
    await cluster.waitForCatchup(30_000);
    expect(await run(proxy.port, steps, settings), `pool_mode = ${mode}`).toEqual(direct);
  }
}

/** No standby connection of the session named `app` is left in a transaction (waits for pgrelay's ROLLBACK). */
async function noStandbyInTransaction(app: string, mode: string): Promise<void> {
  for (const node of cluster.nodes.filter((n) => n.id !== cluster.primaryId))
    await pollUntil(
      () =>
        cluster.psql(
          node.id,
          `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}' AND state <> 'idle'`,
        ),
      (n) => n === '0',
      { what: `no connection of the session left in a transaction on node ${node.id} (${mode})`, timeoutMs: 10_000 },
    );
}

const read = `SELECT a, b FROM ${table} ORDER BY a`;
const write = `INSERT INTO ${table} VALUES (100, 'w')`;

describe('what a Parse that does not succeed leaves: nothing', () => {
  it('a named Parse that fails (syntax error): a Bind of the name gets 26000', async () => {
    await conforms([batch(parseMessage('s1', 'SELEC 1'), syncMessage()), batch(bindMessage('', 's1'), syncMessage())]);
  });

  it('a named Parse skipped after an error in its pipeline: a Bind of the name gets 26000', async () => {
    await conforms([
      batch(bindMessage('', 'nope'), parseMessage('s1', read), syncMessage()),
      runStatement('s1'),
      batch(parseMessage('s1', read), bindMessage('', 's1'), executeMessage(''), syncMessage()),
    ]);
  });

  it('a named Parse of a statement for both nodes (ROLLBACK, SET) skipped after an error: the name stays free', async () => {
    await conforms([
      batch(describeMessage('P', ''), parseMessage('s1', 'ROLLBACK'), closeMessage('S', 's1'), syncMessage()),
      batch(parseMessage('s1', 'SELECT 2'), syncMessage()),
      batch(closeMessage('S', 's1'), syncMessage()),
      batch(describeMessage('P', ''), parseMessage('s1', 'SET search_path = public'), syncMessage()),
      batch(parseMessage('s1', 'SELECT 3'), bindMessage('', 's1'), executeMessage(''), syncMessage()),
    ]);
  });

  it('a named Parse skipped after a failed Describe of the unnamed statement, then the same name prepared again', async () => {
    await conforms([
      batch(describeMessage('S', ''), parseMessage('s1', read), syncMessage()),
      batch(closeMessage('S', ''), syncMessage()),
      batch(bindMessage('', 's1'), syncMessage()),
      batch(parseMessage('s1', 'SELECT 1'), bindMessage('', 's1'), executeMessage(''), syncMessage()),
    ]);
  });
});

describe('a Parse that fails, and in the same write, after its Sync, a Bind of its name', () => {
  it('gets 26000 (the name is free), whether or not the Parse was answered yet', async () => {
    await conforms([
      batch(
        parseMessage('s1', `SELECT * FROM ${table}_missing`),
        syncMessage(),
        bindMessage('', 's1', ['1']),
        syncMessage(),
      ),
      batch(parseMessage('', `SELECT * FROM ${table}_missing`), syncMessage(), bindMessage('', ''), syncMessage()),
      batch(parseMessage('s2', 'SELECT 1'), syncMessage(), describeMessage('S', 's1'), syncMessage()),
    ]);
  });
});

describe("pgrelay's Parse of a statement where a Bind needs it, skipped after an error, then a Sync", () => {
  it('a request of the next pipeline that needs the statement there parses it again (not 26000)', async () => {
    await conforms([
      batch(parseMessage('s2', 'SELECT 1/0'), syncMessage()),
      batch(executeMessage(''), bindMessage('p1', 's2'), syncMessage(), describeMessage('S', 's2'), syncMessage()),
      batch(
        executeMessage(''),
        bindMessage('p1', 's2'),
        syncMessage(),
        bindMessage('p1', 's2'),
        executeMessage('p1'),
        syncMessage(),
      ),
    ]);
  });
});

describe('a statement parsed again where a Bind needs it', () => {
  it('the Parse pgrelay adds is skipped after an error before it: the statement is still described and bound where it is', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      simple('BEGIN'),
      simple(write),
      // After a write in the transaction, s1 is needed on the primary: its Parse there is skipped.
      batch(bindMessage('', 'nope'), bindMessage('', 's1'), executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      batch(describeMessage('S', 's1'), syncMessage()),
      runStatement('s1'),
    ]);
  });
});

describe('a Bind skipped after an error before it', () => {
  it("is not taken for the statement's loss (the error was another request's 26000): the statement is bound after", async () => {
    await conforms([
      batch(parseMessage('s1', write), syncMessage()),
      batch(bindMessage('p1', ''), bindMessage('p1', 's1'), syncMessage()),
      batch(bindMessage('p1', 's1'), executeMessage('p1'), syncMessage()),
      simple(`DELETE FROM ${table} WHERE a = 100`),
    ]);
  });
});

describe('a Parse of a name pipelined behind a first Parse of it', () => {
  it('the first skipped after an error, the second after a Sync: the second prepares it', async () => {
    await conforms([
      batch(
        executeMessage('', 2),
        parseMessage('s1', write),
        syncMessage(),
        syncMessage(),
        parseMessage('s1', `INSERT INTO ${table} VALUES (104, 'y') RETURNING b`),
        syncMessage(),
        bindMessage('', 's1'),
        executeMessage(''),
        syncMessage(),
      ),
      simple(`DELETE FROM ${table} WHERE a = 104`),
    ]);
  });

  it('the first prepared, the second after a Sync: 42P05', async () => {
    await conforms([
      batch(
        parseMessage('s1', read),
        syncMessage(),
        parseMessage('s1', 'SELECT 3'),
        syncMessage(),
        bindMessage('', 's1'),
        executeMessage(''),
        syncMessage(),
        closeMessage('S', 's1'),
        syncMessage(),
      ),
    ]);
  });
});

describe('a Bind of a name the client closed', () => {
  it('after its second Parse failed with 42P05 (pool_mode = transaction left a copy under that name): 26000', async () => {
    await conforms([
      batch(
        parseMessage('s1', write),
        syncMessage(),
        parseMessage('s1', `${write} RETURNING b`),
        syncMessage(),
        closeMessage('S', 's1'),
        bindMessage('', 's1'),
        syncMessage(),
      ),
    ]);
  });
});

describe('a Parse of a name already taken', () => {
  for (const [first, second] of [
    [read, write],
    [write, read],
    ['SELECT 1', 'BEGIN'],
  ]) {
    it(`"${first.slice(0, 20)}…" then "${second.slice(0, 20)}…" under the same name: 42P05, the first statement stays`, async () => {
      await conforms([
        batch(parseMessage('s1', first), syncMessage()),
        batch(parseMessage('s1', second), syncMessage()),
        batch(describeMessage('S', 's1'), syncMessage()),
        batch(closeMessage('S', 's1'), syncMessage()),
        simple(`DELETE FROM ${table} WHERE a = 100`),
      ]);
    });
  }

  it('in a pipeline that wrote on the primary, the statement on the standby: its 42P05 rolls the write back, as directly', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(
        parseMessage('', `INSERT INTO ${table} VALUES (500, 'w')`),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s1', 'ROLLBACK'),
        syncMessage(),
      ),
      simple(`/*NO LOAD BALANCE*/ SELECT count(*) FROM ${table} WHERE a = 500`),
      batch(
        parseMessage('', `DECLARE h500 CURSOR WITH HOLD FOR SELECT a FROM ${table}`),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s1', 'ROLLBACK'),
        syncMessage(),
      ),
      simple('CLOSE h500'),
      simple(`DELETE FROM ${table} WHERE a = 500`),
    ]);
  });

  it('of a read, in a pipeline that wrote on the primary: its 42P05 rolls the write back, as directly', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(
        parseMessage('', `INSERT INTO ${table} VALUES (502, 'w')`),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s1', 'SELECT 2'),
        syncMessage(),
      ),
      simple(`/*NO LOAD BALANCE*/ SELECT count(*) FROM ${table} WHERE a = 502`),
      simple(`DELETE FROM ${table} WHERE a = 502`),
    ]);
  });

  it('of a read, in a pipeline that ran SET LOCAL and BEGIN: its 42P05 aborts the transaction, which undoes the SET LOCAL (nothing reported)', async () => {
    await conforms(
      [
        batch(parseMessage('s2', `SET LOCAL TimeZone = 'Europe/Paris'`), syncMessage()),
        batch(
          parseMessage('', `SET LOCAL TimeZone = 'Europe/Paris'`),
          bindMessage('', ''),
          executeMessage(''),
          parseMessage('s1', 'BEGIN'),
          bindMessage('', 's1'),
          executeMessage(''),
          parseMessage('s2', 'SELECT $1::int + 1'),
          syncMessage(),
        ),
        simple('SHOW TimeZone'),
        simple('ROLLBACK'),
      ],
      true,
    );
  });

  it('of a read parsed on the standby, in a transaction that SET LOCAL: its 42P05 aborts the transaction, whose undone setting is reported before the ReadyForQuery', async () => {
    await conforms(
      [
        batch(parseMessage('s1', 'SELECT $1::int + 1'), syncMessage()),
        simple('BEGIN'),
        simple(`SET LOCAL TimeZone = 'Europe/Paris'`),
        batch(parseMessage('s1', 'CLOSE h'), syncMessage()),
        simple('ROLLBACK'),
      ],
      true,
    );
  });

  it('a Bind into a named portal of a read on the standby, in a pipeline that wrote on the primary since: its 42P03 rolls the write back, as directly', async () => {
    await conforms([
      batch(
        parseMessage('', 'SELECT 1'),
        bindMessage('p1', ''),
        executeMessage('p1'),
        parseMessage('', `INSERT INTO ${table} VALUES (501, 'w')`),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s3', 'SELECT 2'),
        bindMessage('p1', 's3'),
        syncMessage(),
      ),
      simple(`/*NO LOAD BALANCE*/ SELECT count(*) FROM ${table} WHERE a = 501`),
      simple(`DELETE FROM ${table} WHERE a = 501`),
    ]);
  });

  it('twice in two pipelines sent at once, each followed by more (42P05, then 42P05, each with its ReadyForQuery)', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(
        parseMessage('s1', 'SAVEPOINT sp', [23]),
        executeMessage('p1', 1),
        syncMessage(),
        parseMessage('s1', `SELECT nextval('${table}_s')`),
        bindMessage('p1', 's1'),
        executeMessage('', 2),
        closeMessage('S', 's2'),
        syncMessage(),
      ),
    ]);
  });
});

describe('errors that name a prepared statement', () => {
  it("a Bind with too few parameters: 08P01 names the client's statement", async () => {
    await conforms([
      batch(parseMessage('s2', 'SELECT $1::int + 1'), syncMessage()),
      runStatement('s2'),
      batch(bindMessage('', 's2', ['1', '2']), executeMessage(''), syncMessage()),
      batch(bindMessage('', 's2', ['41']), executeMessage(''), syncMessage()),
    ]);
  });
});

describe('the unnamed statement', () => {
  it('a simple Query drops it: a Bind or Describe of it after one gets 26000', async () => {
    await conforms([
      batch(parseMessage('', read), syncMessage()),
      simple('SELECT 2'),
      runStatement(''),
      batch(describeMessage('S', ''), syncMessage()),
      batch(parseMessage('', 'SELECT $1::int', [23]), bindMessage('', '', ['7']), executeMessage(''), syncMessage()),
      batch(bindMessage('', '', ['8']), executeMessage(''), syncMessage()),
    ]);
  });

  it("a client that never parsed one gets 26000, whatever an earlier client left on the server's connection", async () => {
    const leave = [
      batch(parseMessage('', `INSERT INTO ${table} VALUES ($1, 'left') RETURNING b`, [23]), syncMessage()),
    ];
    const probe = [
      batch(describeMessage('S', ''), syncMessage()),
      batch(bindMessage('', '', ['1']), executeMessage(''), syncMessage()),
    ];
    const direct = await run(cluster.node(cluster.primaryId).port, probe);
    for (const [mode, proxy] of Object.entries(proxies)) {
      await run(proxy.port, leave);
      expect(await run(proxy.port, probe), `pool_mode = ${mode}`).toEqual(direct);
    }
  });
});

describe("pgrelay's abort of the primary's transaction after a read failed on the standby", () => {
  it('leaves no unnamed portal there: a Describe or Execute of it gets 34000, as directly', async () => {
    await conforms([
      simple('BEGIN'),
      simple(read),
      simple('SELECT 1/0'),
      batch(describeMessage('P', ''), syncMessage()),
      batch(executeMessage('', 1), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe('a transaction whose pipeline failed on one node only', () => {
  it('a Parse of a taken name failing where that statement is (a standby): the transaction is aborted everywhere, the next write gets 25P02', async () => {
    await conforms([
      batch(parseMessage('s2', read), syncMessage()),
      simple('BEGIN'),
      batch(parseMessage('s1', `${write} RETURNING a`), parseMessage('s2', 'ROLLBACK'), syncMessage()),
      simple(`INSERT INTO ${table} VALUES (101, 'after')`),
      simple('COMMIT'),
      simple(`SELECT count(*) FROM ${table} WHERE a = 101`),
    ]);
  });

  it('a read failing on the standby, then a write on the primary, one pipeline: the next write gets 25P02', async () => {
    await conforms([
      simple('BEGIN'),
      batch(
        parseMessage('', `SELECT a / 0 FROM ${table}`),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('', `INSERT INTO ${table} VALUES (102, 'x')`),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      simple(`INSERT INTO ${table} VALUES (102, 'after')`),
      simple('COMMIT'),
      simple(`SELECT count(*) FROM ${table} WHERE a = 102`),
    ]);
  });
});

describe('a pipeline that failed on the primary before a statement for both nodes', () => {
  it("BEGIN's copy on the standby ran after the primary's error (the primary skipped it): the session stays outside a transaction everywhere", async () => {
    await conforms([
      batch(parseMessage('s1', 'BEGIN ISOLATION LEVEL REPEATABLE READ'), syncMessage()),
      batch(executeMessage('', 1), bindMessage('p1', 's1'), executeMessage('p1', 1), syncMessage()),
      simple(`INSERT INTO ${table} VALUES (103, 'seen')`),
      batch(
        parseMessage('', `SELECT count(*) FROM ${table} WHERE a = 103`),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      simple('COMMIT'),
      simple(`DELETE FROM ${table} WHERE a = 103`),
    ]);
  });
});

describe('a Close skipped after an error before it', () => {
  it('a Parse of the name in the next pipeline, sent before the answer: 42P05, and the statement stays', async () => {
    await conforms([
      batch(parseMessage('s1', 'SHOW TimeZone'), syncMessage()),
      batch(
        parseMessage('s1', 'BEGIN'),
        closeMessage('S', 's1'),
        syncMessage(),
        parseMessage('s1', `COPY (SELECT a FROM ${table} ORDER BY a) TO STDOUT`),
        syncMessage(),
      ),
      runStatement('s1'),
    ]);
  });

  it('a Bind or Describe of the name in the next pipeline, sent before the answer, finds the statement', async () => {
    await conforms([
      // (Writes: parsed on the primary, where the Describe and Bind go too.)
      batch(
        parseMessage('', `${write} RETURNING a`),
        parseMessage('s1', `SELECT nextval('${table}_s') > 0`),
        syncMessage(),
      ),
      batch(
        bindMessage('', '', ['1', '2']),
        closeMessage('S', ''),
        closeMessage('S', 's1'),
        syncMessage(),
        describeMessage('S', ''),
        syncMessage(),
        bindMessage('', 's1'),
        executeMessage(''),
        syncMessage(),
      ),
      runStatement(''),
      simple(`DELETE FROM ${table} WHERE a = 100`),
    ]);
  });

  it('leaves the statement (a Parse of the name then gets 42P05, in a transaction too)', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(describeMessage('S', 'nope'), closeMessage('S', 's1'), syncMessage()),
      runStatement('s1'),
      simple('BEGIN'),
      batch(parseMessage('s1', 'SELECT $1::int + 1'), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('with a Parse of the same name after it, skipped too: the first statement stays', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(describeMessage('S', 'nope'), closeMessage('S', 's1'), parseMessage('s1', 'SELECT 2'), syncMessage()),
      runStatement('s1'),
    ]);
  });

  it('of a statement parsed on two nodes (a read, then bound in a transaction after a write): both copies stay', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      runStatement('s1'),
      simple('BEGIN'),
      simple(write),
      runStatement('s1'),
      simple('ROLLBACK'),
      // The read fails on the standby, where the Close goes first.
      batch(
        parseMessage('', 'SELECT 1/0'),
        bindMessage('', ''),
        executeMessage(''),
        closeMessage('S', 's1'),
        syncMessage(),
      ),
      runStatement('s1'),
      simple('BEGIN'),
      simple(write),
      runStatement('s1'),
      simple('ROLLBACK'),
    ]);
  });

  it('of a statement for both nodes (SET): both copies stay', async () => {
    await conforms([
      batch(parseMessage('s1', "SET TimeZone = 'Asia/Tokyo'"), syncMessage()),
      batch(executeMessage('nope'), closeMessage('S', 's1'), syncMessage()),
      runStatement('s1'),
      simple('SHOW TimeZone'),
    ]);
  });

  it('a Close then a Parse of the name that both ran, then an error: the new statement', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(closeMessage('S', 's1'), parseMessage('s1', 'SELECT 2'), describeMessage('S', 'nope'), syncMessage()),
      runStatement('s1'),
    ]);
  });
});

describe('messages other than the copy’s while the server waits for COPY FROM STDIN data', () => {
  /** No server process of the cluster's primary still runs the copy (the session let it go). */
  async function noCopyLeft(): Promise<void> {
    await pollUntil(
      () =>
        cluster.psql(
          cluster.primaryId,
          `SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY ${table} FROM STDIN%'`,
        ),
      (n) => n === '0',
      { what: 'no backend left running the COPY', timeoutMs: 10_000 },
    );
  }

  it('a Parse pipelined behind the Execute of the COPY: 08P01, then FATAL and the close, as directly; no backend left in the copy', async () => {
    await conforms([
      batch(
        parseMessage('', `COPY ${table} FROM STDIN`),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('', 'SELECT 1/0'),
        syncMessage(),
      ),
    ]);
    await noCopyLeft();
  });

  it('a client that leaves while such a message waits: no backend left in the copy', async () => {
    for (const proxy of Object.values(proxies)) {
      const { raw } = await rawSession(proxy, {});
      raw.send(
        parseMessage('', `COPY ${table} FROM STDIN`),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('', `SELECT count(*) FROM ${table}`),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      );
      await raw.collect('G', 10_000);
      raw.end();
      expect(await raw.waitClosed(10_000)).toBe(true);
      await noCopyLeft();
    }
  });
});

describe('COPY FROM STDIN whose data and end the client sent before the server asked for them', () => {
  const copy = `COPY ${table} FROM STDIN`;
  const row = copyDataMessage('200\tc\n');
  const cleanup = simple(`DELETE FROM ${table} WHERE a = 200`);

  it('a Bind into a named portal taken by the COPY, held until that portal is answered: 42P03 and the Sync answered, as directly', async () => {
    await conforms([
      batch(
        parseMessage('', copy),
        bindMessage('p1', ''),
        executeMessage('p1'),
        row,
        copyDoneMessage(),
        parseMessage('s2', `SELECT count(*) FROM ${table}`),
        bindMessage('p1', 's2'),
        executeMessage('p1'),
        syncMessage(),
      ),
      simple('SELECT 1'),
      cleanup,
    ]);
  });

  it('a Sync between the Execute and the copy’s end (ignored during copy-in), then a Bind held for the portal: answered, as directly', async () => {
    await conforms([
      {
        send: [
          parseMessage('', copy),
          bindMessage('p1', ''),
          executeMessage('p1'),
          syncMessage(),
          row,
          copyDoneMessage(),
          parseMessage('s2', `SELECT count(*) FROM ${table}`),
          bindMessage('p1', 's2'),
          executeMessage('p1'),
          syncMessage(),
        ],
        readies: 1,
      },
      simple('SELECT 1'),
      cleanup,
    ]);
  });

  it('a simple Query behind the copy’s end, pipelined: answered, as directly', async () => {
    await conforms([
      {
        send: [queryMessage(copy), row, copyDoneMessage(), queryMessage(`SELECT count(*) FROM ${table} WHERE a = 200`)],
        readies: 2,
      },
      { send: [queryMessage(copy), row, copyFailMessage('no'), queryMessage(read)], readies: 2 },
      simple('SELECT 1'),
      cleanup,
    ]);
  });
});

describe('the unnamed statement parsed again by pgrelay (its own Query dropped it there), that Parse skipped', () => {
  it('a Bind of it in the next pipeline, sent before that answer: bound as directly', async () => {
    await conforms([
      batch(parseMessage('s1', `${write} RETURNING a`), syncMessage()),
      // A write: pgrelay reads the write position behind it (a simple Query: the unnamed
      // statement goes there).
      batch(
        parseMessage('', `INSERT INTO ${table} VALUES (106, 'u') RETURNING b`),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      batch(
        parseMessage('s1', 'SELECT 2'),
        bindMessage('', ''),
        syncMessage(),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      simple(`DELETE FROM ${table} WHERE a = 106`),
    ]);
  });
});

describe('a Close of the unnamed statement, then a Parse of another, both skipped after an error', () => {
  it('the first statement stays the unnamed one (the second one a write: on the primary, behind the error)', async () => {
    for (const first of [read, 'SELECT pg_sleep(0) AS volatile'])
      await conforms([
        batch(parseMessage('', first), syncMessage()),
        batch(executeMessage('p1'), closeMessage('S', ''), parseMessage('', write), syncMessage()),
        runStatement(''),
      ]);
  });
});

describe('a Parse of a statement for both nodes, then a Close of the unnamed statement, skipped after an error', () => {
  it('the unnamed statement before them stays (its copy on the standby went)', async () => {
    await conforms([
      batch(parseMessage('s1', 'SET search_path = public'), syncMessage()),
      batch(parseMessage('', `SELECT a FROM ${table} WHERE a = $1`), syncMessage()),
      batch(parseMessage('s1', 'SELECT 1'), parseMessage('', 'ROLLBACK TO sp'), closeMessage('S', ''), syncMessage()),
      batch(bindMessage('', ''), syncMessage()),
      batch(bindMessage('', '', ['1']), executeMessage(''), syncMessage()),
    ]);
  });
});

describe('unnamed Parses skipped one after the other', () => {
  it('after an error before them, none of them is the unnamed statement: a Bind of it gets 26000', async () => {
    await conforms([
      batch(
        describeMessage('P', 'nope'),
        parseMessage('', write),
        parseMessage('', `${write} RETURNING a`),
        syncMessage(),
      ),
      runStatement(''),
      batch(describeMessage('S', ''), syncMessage()),
    ]);
  });
});

describe('unnamed Parses skipped after one that ran', () => {
  it('one that failed (PostgreSQL dropped the unnamed statement first): none stays', async () => {
    await conforms([
      batch(parseMessage('', `${write} RETURNING a`), syncMessage()),
      batch(parseMessage('', 'SELECT 1; SELECT 2'), parseMessage('', write), syncMessage()),
      runStatement(''),
    ]);
  });

  it('the one that ran stays the unnamed statement', async () => {
    await conforms([
      batch(
        parseMessage('', `${write} RETURNING a`),
        parseMessage('s9', `SELECT * FROM ${table}_nope`),
        parseMessage('', write),
        parseMessage('', `${write} RETURNING b`),
        syncMessage(),
      ),
      runStatement(''),
      simple(`DELETE FROM ${table} WHERE a = 100`),
    ]);
  });
});

describe('a Parse of a name already taken, of a DEALLOCATE (pool_mode = transaction answers those itself)', () => {
  it('42P05, the first statement stays', async () => {
    await conforms([
      batch(parseMessage('s1', 'SELECT 1 AS one'), syncMessage()),
      batch(parseMessage('s1', 'DEALLOCATE s1'), syncMessage()),
      runStatement('s1'),
      batch(closeMessage('S', 's1'), syncMessage()),
    ]);
  });
});

describe('DEALLOCATE ALL or DISCARD ALL through the extended protocol', () => {
  it('keeps the unnamed statement (not a prepared statement of theirs)', async () => {
    await conforms([
      batch(
        parseMessage('', read),
        parseMessage('s2', 'DEALLOCATE ALL'),
        parseMessage('s3', 'DISCARD ALL'),
        syncMessage(),
      ),
      runStatement('s2'),
      runStatement(''),
      batch(parseMessage('s3', 'DISCARD ALL'), syncMessage()),
      runStatement('s3'),
      runStatement(''),
    ]);
  });
});

describe('DEALLOCATE ALL among several statements of one Query (on the primary alone)', () => {
  it("drops every statement of the client's, on every node", async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(parseMessage('s2', write), syncMessage()),
      runStatement('s1'),
      simple('DEALLOCATE ALL; SELECT 1 AS one'),
      runStatement('s1'),
      runStatement('s2'),
      batch(parseMessage('s1', 'SELECT 2'), bindMessage('', 's1'), executeMessage(''), syncMessage()),
      batch(parseMessage('s2', read), bindMessage('', 's2'), executeMessage(''), syncMessage()),
    ]);
  });

  it('that fails after its DEALLOCATE ALL ran: the statements stay dropped (DEALLOCATE is not transactional)', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(parseMessage('s2', write), syncMessage()),
      simple('DEALLOCATE ALL; SELECT 1/0'),
      batch(parseMessage('s1', 'SELECT 2'), bindMessage('', 's1'), executeMessage(''), syncMessage()),
      runStatement('s2'),
      batch(parseMessage('s2', read), syncMessage()),
      simple('SELECT 1/0; DEALLOCATE ALL'),
      batch(parseMessage('s2', 'SELECT 3'), syncMessage()),
      runStatement('s2'),
    ]);
  });
});

describe('DEALLOCATE of a statement prepared with Parse', () => {
  it('inside an aborted transaction: 25P02, and the statement stays', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      simple('BEGIN'),
      simple('SELEC 1'),
      simple('DEALLOCATE s1'),
      batch(parseMessage('', 'DEALLOCATE s1'), bindMessage('', ''), executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      runStatement('s1'),
      simple('DEALLOCATE s1'),
      batch(bindMessage('', 's1'), syncMessage()),
    ]);
  });
});

describe('a DEALLOCATE of a statement prepared with Parse, itself parsed (pool_mode = transaction answers it)', () => {
  it('a Describe does not run it; its parameters are counted as the server counts them', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(parseMessage('', 'DEALLOCATE s1'), describeMessage('S', ''), syncMessage()),
      runStatement('s1'),
      batch(bindMessage('', '', ['1']), executeMessage(''), syncMessage()),
      runStatement('s1'),
      batch(parseMessage('d', 'DEALLOCATE s1', [23]), describeMessage('S', 'd'), bindMessage('', 'd'), syncMessage()),
      batch(parseMessage('d2', 'DEALLOCATE s1', [0]), syncMessage()),
      batch(parseMessage('d2', 'DEALLOCATE s1', [25, 705]), syncMessage()),
      runStatement('s1'),
      batch(bindMessage('', 'd', ['5']), describeMessage('P', ''), executeMessage(''), syncMessage()),
      runStatement('s1'),
    ]);
  });

  it('a name taken gets 42P05; a failed unnamed one leaves no unnamed statement; skipped after an error, it does not run', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      batch(parseMessage('d', 'DEALLOCATE s1'), parseMessage('d', 'DEALLOCATE s1'), syncMessage()),
      batch(parseMessage('', 'SELECT 1 AS one'), syncMessage()),
      batch(parseMessage('', 'DEALLOCATE s1', [0]), syncMessage()),
      runStatement(''),
      batch(
        bindMessage('', 'nope'),
        parseMessage('', 'DEALLOCATE s1'),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      batch(bindMessage('', 'd'), executeMessage(''), syncMessage()),
      runStatement('s1'),
    ]);
  });

  it('in a transaction, in an aborted one (25P02, the statement stays), after a Close of what it names (26000)', async () => {
    await conforms([
      batch(parseMessage('s1', read), parseMessage('s2', write), syncMessage()),
      batch(parseMessage('d1', 'DEALLOCATE s1'), parseMessage('d2', 'DEALLOCATE s2'), syncMessage()),
      simple('BEGIN'),
      runStatement('s2'),
      batch(bindMessage('', 'd2'), executeMessage(''), syncMessage()),
      simple('SELEC 1'),
      batch(bindMessage('', 'd1'), executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      runStatement('s1'),
      batch(bindMessage('p', 'd1'), closeMessage('S', 's1'), executeMessage('p'), syncMessage()),
      runStatement('s2'),
      batch(parseMessage('s1', read), parseMessage('s2', read), syncMessage()),
    ]);
  });
});

describe('a COMMIT or ROLLBACK skipped after an error in its pipeline (the transaction goes on, aborted)', () => {
  for (const end of ['COMMIT', 'ROLLBACK', 'COMMIT AND CHAIN']) {
    it(`${end}: the SET made in the transaction is not taken as ended (no replay into the aborted transaction)`, async () => {
      await conforms([
        simple('BEGIN'),
        simple("SET TimeZone = 'Asia/Tokyo'"),
        batch(bindMessage('', 'nope'), parseMessage('', end), bindMessage('', ''), executeMessage(''), syncMessage()),
        simple('SELECT 1 AS one'),
        simple('ROLLBACK'),
        simple('SHOW TimeZone'),
        simple('BEGIN'),
        simple("SET TimeZone = 'Asia/Tokyo'"),
        batch(bindMessage('', 'nope'), parseMessage('', end), bindMessage('', ''), executeMessage(''), syncMessage()),
        simple('COMMIT'),
        simple('SHOW TimeZone'),
      ]);
    });
  }

  it('COMMIT AND CHAIN: the transaction its copy chained on the standby is rolled back', async () => {
    for (const [mode, proxy] of Object.entries(proxies)) {
      const app = `chain_stray_${mode}_${process.pid}`;
      const { raw } = await rawSession(proxy, { application_name: app });
      try {
        for (const sql of ['BEGIN', read]) {
          raw.send(queryMessage(sql));
          await raw.collect('Z', 10_000);
        }
        raw.send(
          bindMessage('', 'nope'),
          parseMessage('', 'COMMIT AND CHAIN'),
          bindMessage('', ''),
          executeMessage(''),
          syncMessage(),
        );
        await raw.collect('Z', 10_000);
        await noStandbyInTransaction(app, mode);
        raw.send(queryMessage('ROLLBACK'));
        expect(summarize(await raw.collect('Z', 10_000)).status).toBe('I');
      } finally {
        raw.destroy();
      }
    }
  });
});

describe('a read after a write in one pipeline (its implicit transaction: the write is not committed before the Sync)', () => {
  it('sees the write, and an error in it rolls the write back', async () => {
    await conforms([
      // (The table's facts are in the catalog cache then: nothing sends the read to the primary but the rule.)
      simple(read),
      batch(
        parseMessage('', write),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s9', `SELECT count(*) FROM ${table} WHERE a = 100`),
        bindMessage('', 's9'),
        executeMessage(''),
        syncMessage(),
      ),
      simple(`DELETE FROM ${table} WHERE a = 100`),
      simple(read),
      batch(
        parseMessage('', write),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s8', `SELECT a / 0 FROM ${table}`),
        bindMessage('', 's8'),
        executeMessage(''),
        syncMessage(),
      ),
      simple(`SELECT count(*) FROM ${table} WHERE a = 100`),
      simple(`DELETE FROM ${table} WHERE a = 100`),
    ]);
  });
});

describe('a Parse of a taken name in a transaction the standby holding that statement has no part in', () => {
  it('aborted: 25P02 (which PostgreSQL answers before 42P05); of a ROLLBACK, 42P05 and the transaction stays failed', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      simple('SELECT 1; BEGIN'),
      simple('SELEC 1'),
      batch(parseMessage('s1', 'SELECT 2'), syncMessage()),
      batch(parseMessage('s1', 'ROLLBACK'), syncMessage()),
      simple('ROLLBACK'),
      runStatement('s1'),
    ]);
  });

  it('a Describe of that statement: answered in the transaction (25P02 once it is aborted)', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      simple('SELECT 1; BEGIN'),
      batch(describeMessage('S', 's1'), syncMessage()),
      runStatement('s1'),
      simple('SELEC 1'),
      batch(describeMessage('S', 's1'), syncMessage()),
      simple('ROLLBACK'),
      batch(describeMessage('S', 's1'), syncMessage()),
    ]);
  });

  it('a Close of that statement, or of a portal there: answered in the transaction', async () => {
    await conforms([
      batch(parseMessage('s1', read), parseMessage('s2', read), syncMessage()),
      simple('SELECT 1; BEGIN'),
      batch(closeMessage('S', 's1'), syncMessage()),
      simple('SELECT 1 AS one'),
      simple('COMMIT'),
      simple('BEGIN'),
      batch(bindMessage('p1', 's2'), syncMessage()),
      simple('COMMIT; BEGIN'),
      batch(closeMessage('P', 'p1'), syncMessage()),
      simple('SELECT 1 AS one'),
      simple('ROLLBACK'),
    ]);
  });

  it('not aborted yet: 42P05 aborts it (the primary has it alone)', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      simple('SELECT 1; BEGIN'),
      batch(parseMessage('s1', 'SELECT 2'), syncMessage()),
      simple('SELECT 1 AS one'),
      simple('ROLLBACK'),
      runStatement('s1'),
    ]);
  });
});

describe('a portal of a transaction a simple Query ended', () => {
  it('is gone: an Execute of it gets 34000 (pool_mode = transaction: whatever node the next one reads on)', async () => {
    // (The transaction's standby is drawn anew for each transaction: ten runs.)
    for (let i = 0; i < 10; i++)
      await conforms([
        simple('BEGIN'),
        batch(parseMessage('s1', read), bindMessage('', 's1'), bindMessage('p1', 's1'), syncMessage()),
        simple('END'),
        batch(executeMessage(''), syncMessage()),
        batch(executeMessage('p1'), syncMessage()),
      ]);
  });
});

describe('the unnamed portal, then a simple Query that runs on another node', () => {
  it('is gone (PostgreSQL runs each statement of a Query in the unnamed portal): Describe and Execute get 34000', async () => {
    await conforms([
      // (The table's facts are in the catalog cache then: the read in the transaction goes to a standby.)
      simple(read),
      batch(parseMessage('s2', `DECLARE c CURSOR FOR ${read}`), syncMessage()),
      simple('BEGIN READ ONLY'),
      // The DECLARE's portal is the primary's (it goes there); the read below a standby's.
      batch(bindMessage('', 's2'), describeMessage('P', ''), syncMessage()),
      simple(read),
      batch(describeMessage('P', ''), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      // Not after a Query that fails (it may fail before any portal, as one that does not
      // parse): an Execute of it in the failed transaction gets 25P02.
      simple('BEGIN READ ONLY'),
      batch(bindMessage('', 's2'), syncMessage()),
      simple('SELEC 1'),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      simple('BEGIN READ ONLY'),
      batch(bindMessage('', 's2'), syncMessage()),
      simple('SELECT 1/0'),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      // A Query that fails as it runs leaves its own failed portal: 25P02, not 34000.
      simple('BEGIN'),
      simple(`SELECT currval('${table}_s')`),
      batch(executeMessage(''), describeMessage('P', ''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe('a Parse in an aborted transaction of a text the connection has prepared (pool_mode = transaction shares it)', () => {
  it('25P02, and the name stays free', async () => {
    await conforms([
      // (pg_backend_pid(): the primary's, where the transaction fails.)
      batch(
        parseMessage('s1', 'SELECT pg_backend_pid() > 0'),
        bindMessage('', 's1'),
        executeMessage(''),
        syncMessage(),
      ),
      simple('BEGIN'),
      runStatement('s1'),
      simple('SELEC 1'),
      batch(parseMessage('s2', 'SELECT pg_backend_pid() > 0'), syncMessage()),
      batch(parseMessage('s3', 'SELEC 2'), syncMessage()),
      simple('ROLLBACK'),
      runStatement('s2'),
    ]);
  });

  it('sent behind the Sync of the pipeline whose error aborts the transaction, before its answer: 25P02 too', async () => {
    await conforms([
      batch(parseMessage('s1', `${write} RETURNING a`), syncMessage()),
      simple('BEGIN'),
      batch(bindMessage('', 'nope'), syncMessage(), parseMessage('s2', `${write} RETURNING a`), syncMessage()),
      simple('ROLLBACK'),
      runStatement('s2'),
    ]);
  });
});

describe('a SET in a pipeline that then fails (its implicit transaction rolls the SET back)', () => {
  it('does not last, on any node', async () => {
    await conforms([
      batch(
        parseMessage('', "SET TimeZone = 'Asia/Tokyo'"),
        bindMessage('', ''),
        executeMessage(''),
        bindMessage('', 'nope'),
        syncMessage(),
      ),
      simple('SHOW TimeZone'),
      batch(parseMessage('s1', 'SHOW TimeZone'), bindMessage('', 's1'), executeMessage(''), syncMessage()),
      simple('RESET TimeZone'),
      // The same when the failure is a statement of the pipeline that ran (on a standby).
      batch(
        parseMessage('', "SET work_mem = '5MB'"),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('', `SELECT a / 0 FROM ${table}`),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      simple("SELECT current_setting('work_mem') AS work_mem"),
      simple(read),
      simple("SELECT current_setting('work_mem') AS work_mem"),
    ]);
  });

  it('in a session pinned to its connections (PREPARE, pool_mode = transaction): not kept on the standby either', async () => {
    await conforms([
      simple('PREPARE pinq AS SELECT 7'),
      batch(
        parseMessage('s1', "SET TimeZone = 'Asia/Tokyo'"),
        bindMessage('p1', 's1'),
        executeMessage('p1'),
        bindMessage('', 'nope'),
        syncMessage(),
      ),
      simple('SHOW TimeZone'),
      simple('DEALLOCATE pinq'),
    ]);
  });

  it('with a BEGIN behind the failure that never ran (its Bind refused): rolled back all the same, on every node', async () => {
    await conforms([
      simple("SET TimeZone = 'Asia/Tokyo'"),
      batch(
        parseMessage('', 'RESET TimeZone'),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s2', 'SELECT 1'),
        bindMessage('p1', 's2'),
        executeMessage('p1'),
        parseMessage('s3', 'BEGIN'),
        bindMessage('p1', 's3'),
        executeMessage('p1'),
        syncMessage(),
      ),
      simple('SHOW TimeZone'),
      simple('RESET TimeZone'),
    ]);
  });

  it('failing on the standby: the primary, whose part ran, neither keeps it nor reports it (ParameterStatus)', async () => {
    const onPrimary = "/*NO LOAD BALANCE*/ SELECT current_setting('TimeZone') AS tz";
    await conforms([
      simple("SET TimeZone = 'Europe/Paris'"),
      batch(
        parseMessage('', "SET TimeZone = 'Asia/Tokyo'"),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('', 'SELECT 1/0'),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      // (A comment that makes pgrelay read on the primary.)
      simple(onPrimary),
      simple(`INSERT INTO ${table} VALUES (200, current_setting('TimeZone')) RETURNING b`),
      simple('SHOW TimeZone'),
      batch(
        parseMessage('', "SET TimeZone = 'Asia/Tokyo'"),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s1', `SELECT * FROM ${table}_nope`),
        bindMessage('', 's1'),
        executeMessage(''),
        syncMessage(),
      ),
      simple(onPrimary),
      simple('SHOW TimeZone'),
      simple(`DELETE FROM ${table} WHERE a = 200`),
      simple('RESET TimeZone'),
    ]);
  });
});

describe('a SET in a pipeline across nodes that fails, in a session pinned to its connections (pool_mode = transaction)', () => {
  it('does not last on the primary, which no checkout resets', async () => {
    await conforms([
      simple('PREPARE q AS SELECT 7'),
      batch(
        parseMessage('s2', 'SHOW TimeZone'),
        parseMessage('', "SET TimeZone = 'Asia/Tokyo'"),
        bindMessage('', ''),
        executeMessage(''),
        bindMessage('', 's2', ['1']),
        syncMessage(),
      ),
      simple("/*NO LOAD BALANCE*/ SELECT current_setting('TimeZone') AS tz"),
      simple('RESET TimeZone'),
      simple('DEALLOCATE q'),
    ]);
  });
});

describe('what follows a COMMIT, ROLLBACK or ROLLBACK TO of an aborted transaction in its pipeline', () => {
  it('is answered outside the aborted transaction, as the server answers it', async () => {
    await conforms([
      batch(parseMessage('s2', 'COMMIT'), parseMessage('s3', 'ROLLBACK TO sp'), syncMessage()),
      // (pool_mode = transaction: the connection has BEGIN READ ONLY prepared.)
      batch(parseMessage('s6', 'BEGIN READ ONLY'), bindMessage('', 's6'), executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      simple('BEGIN'),
      simple('SELEC 1'),
      batch(
        bindMessage('', 's2'),
        executeMessage(''),
        parseMessage('s1', 'BEGIN READ ONLY'),
        bindMessage('p1', 's1'),
        executeMessage('p1'),
        parseMessage('s4', read),
        bindMessage('', 's4', ['1']),
        syncMessage(),
      ),
      simple('SAVEPOINT sp'),
      simple('SELEC 1'),
      batch(
        bindMessage('', 's3'),
        executeMessage(''),
        parseMessage('s5', read),
        bindMessage('', 's5'),
        executeMessage(''),
        syncMessage(),
      ),
      simple('ROLLBACK'),
    ]);
  });
});

describe('a statement PostgreSQL refuses in a pipeline once an Execute ran in it (DISCARD ALL, VACUUM…)', () => {
  it('is refused (25001) when that Execute ran on another node', async () => {
    await conforms([
      simple("SET TimeZone = 'Asia/Tokyo'"),
      batch(
        parseMessage('', read),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('', 'DISCARD ALL'),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      simple('SHOW TimeZone'),
      batch(
        parseMessage('s1', read),
        bindMessage('', 's1'),
        executeMessage(''),
        parseMessage('s2', `VACUUM ${table}`),
        bindMessage('', 's2'),
        executeMessage(''),
        syncMessage(),
      ),
      // Alone in its pipeline, or behind BEGIN… COMMIT of its own (no Execute in the implicit transaction): it runs.
      batch(parseMessage('', 'DISCARD ALL'), bindMessage('', ''), executeMessage(''), syncMessage()),
      simple('SHOW TimeZone'),
      runStatement('s2'),
    ]);
  });
});

describe('a read-only transaction on the read node alone (pool_mode = transaction), failed', () => {
  it("a Bind there of a statement for both nodes its connection has prepared: bound once, errors name the client's statement", async () => {
    // One standby to read on, so that the connection that prepared the statement is the transaction's.
    const solo: Record<string, ProxyHandle> = {};
    const nodeIds = cluster.nodes.filter((n) => n.id !== cluster.primaryId).map((n) => n.id);
    const weights: Record<string, number> = { [`backend_weight${cluster.primaryId}`]: 0 };
    for (const id of nodeIds.slice(1)) weights[`backend_weight${id}`] = 0;
    const steps = [
      batch(
        parseMessage('s2', "SET LOCAL TimeZone = 'Europe/Paris'"),
        bindMessage('', 's2'),
        executeMessage(''),
        syncMessage(),
      ),
      simple('BEGIN READ ONLY'),
      // (Fails on the read node: the primary has no part in the transaction.)
      batch(describeMessage('S', 'nope'), syncMessage()),
      batch(bindMessage('', 's2', ['1']), executeMessage(''), syncMessage()),
      batch(bindMessage('', 's2'), executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
    ];
    try {
      for (const mode of ['session', 'transaction'])
        solo[mode] = await startProxy({
          cluster,
          config: {
            pool_mode: mode,
            default_pool_size: 1,
            load_balance_mode: true,
            log_min_messages: 'warning',
            ...weights,
          },
        });
      const direct = await run(cluster.node(cluster.primaryId).port, steps);
      for (const [mode, proxy] of Object.entries(solo)) {
        // Twice: the second client finds the statement prepared on the connection.
        expect(await run(proxy.port, steps), `pool_mode = ${mode}`).toEqual(direct);
        expect(await run(proxy.port, steps), `pool_mode = ${mode}, again`).toEqual(direct);
      }
    } finally {
      for (const p of Object.values(solo)) await p.stop();
    }
  });
});

describe('a read-only transaction on the read node alone (pool_mode = transaction), ended in a pipeline', () => {
  it('a Describe of its ROLLBACK or COMMIT after their Execute: described there, the pipeline ends outside a transaction (not in one the primary was drawn into)', async () => {
    for (const end of ['ROLLBACK', 'COMMIT'])
      await conforms([
        simple('BEGIN READ ONLY'),
        ...(end === 'ROLLBACK' ? [batch(describeMessage('S', 'nope'), syncMessage())] : [simple(read)]),
        batch(
          parseMessage('s1', end),
          bindMessage('', 's1'),
          executeMessage(''),
          describeMessage('S', 's1'),
          syncMessage(),
        ),
        simple(`SELECT count(*) FROM ${table}`),
      ]);
  });

  it('an Execute of a portal the client does not have, after its COMMIT: 34000 outside a transaction (not in one the primary was drawn into)', async () => {
    await conforms([
      simple('BEGIN READ ONLY'),
      batch(parseMessage('', 'COMMIT'), bindMessage('', ''), executeMessage(''), executeMessage('nope'), syncMessage()),
      simple(`SELECT count(*) FROM ${table}`),
    ]);
  });
});

describe('a Parse of ROLLBACK under a taken name in an aborted transaction, the old statement on no node of it', () => {
  it('gets 42P05 (ROLLBACK is let through the aborted state, the name is not)', async () => {
    await conforms([
      batch(parseMessage('s1', 'SELECT 1/0'), syncMessage()),
      batch(parseMessage('s2', 'DEALLOCATE ALL'), syncMessage()),
      batch(
        parseMessage('s2', "SET TimeZone = 'Asia/Tokyo'"),
        bindMessage('', 's2'),
        executeMessage(''),
        syncMessage(),
      ),
      batch(parseMessage('', 'BEGIN READ ONLY'), bindMessage('p1', ''), executeMessage('p1', 1), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      batch(parseMessage('s1', 'ROLLBACK'), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe('the unnamed portal, then a Bind of it refused before it replaces the portal (26000, 08P01, 25P02)', () => {
  it('stays: in the aborted transaction an Execute of it gets 25P02, not 34000', async () => {
    await conforms([
      batch(parseMessage('s1', 'SELECT 1'), syncMessage()),
      batch(parseMessage('', 'BEGIN READ ONLY'), syncMessage()),
      batch(bindMessage('p1', ''), executeMessage('p1'), bindMessage('', 's1'), syncMessage()),
      batch(bindMessage('', 'nope', ['1']), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      simple('BEGIN'),
      batch(bindMessage('', 's1'), syncMessage()),
      batch(bindMessage('', 's1', ['1']), syncMessage()),
      batch(describeMessage('P', ''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe('a DISCARD ALL in a pipeline that then fails (PostgreSQL commits DISCARD ALL at once)', () => {
  it('lasts, and the settings it reset are reported (ParameterStatus)', async () => {
    await conforms([
      simple("SET TimeZone = 'Asia/Tokyo'"),
      batch(
        parseMessage('s2', 'DISCARD ALL'),
        bindMessage('p1', 's2'),
        executeMessage('p1'),
        executeMessage('p1'),
        syncMessage(),
      ),
      simple('SHOW TimeZone'),
      simple("/*NO LOAD BALANCE*/ SELECT current_setting('TimeZone') AS tz"),
    ]);
  });
});

describe('a SET or RESET skipped after an error earlier in its pipeline (its copy on the standby had no error before it)', () => {
  it('does not happen, on any node', async () => {
    await conforms([
      batch(
        bindMessage('', 'nope'),
        parseMessage('s1', "SET TimeZone = 'Asia/Tokyo'"),
        bindMessage('', 's1'),
        executeMessage(''),
        syncMessage(),
      ),
      simple('SHOW TimeZone'),
      simple(read),
      runStatement('s1'),
      batch(
        bindMessage('', 'nope'),
        parseMessage('s2', 'RESET TimeZone'),
        bindMessage('', 's2'),
        executeMessage(''),
        syncMessage(),
      ),
      simple('SHOW TimeZone'),
      simple('RESET TimeZone'),
    ]);
  });
});

describe('a Describe in an aborted transaction of a statement its connection has not parsed', () => {
  it('no rows, parameters known: ParameterDescription and NoData as directly (a Parse there would get 25P02); rows: 25P02', async () => {
    // After DISCARD ALL (the connection's statements are gone), Parses of texts a server
    // accepted are answered by pgrelay in pool_mode = transaction, with no connection: the
    // transaction's connection lacks them.
    const texts: Array<[string, number[]]> = [
      ["SET TimeZone = 'UTC'", []],
      [`INSERT INTO ${table} VALUES (300, 'd')`, []],
      [`DECLARE c CURSOR FOR SELECT a FROM ${table}`, []],
      [`INSERT INTO ${table} VALUES ($1, $2)`, [23, 25]],
      [`UPDATE ${table} SET b = b WHERE a < 0 RETURNING a`, []],
      [read, []],
    ];
    const names = texts.map((_, i) => `d${i}`);
    const parses = batch(
      ...texts.map(([sql, types], i) => parseMessage(names[i] as string, sql, types)),
      syncMessage(),
    );
    await conforms([
      parses,
      simple('DISCARD ALL'),
      parses,
      simple('BEGIN'),
      simple('SELECT 1/0'),
      ...names.map((n) => batch(describeMessage('S', n), syncMessage())),
      batch(...names.map((n) => describeMessage('S', n)), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe('a Bind into a portal the client has, refused, then a Close of that portal skipped after its error', () => {
  it('the portal stays, as directly: an Execute of it in the aborted transaction gets 25P02, not 34000 (named and unnamed)', async () => {
    for (const portal of ['p1', ''])
      await conforms([
        simple('BEGIN READ ONLY'),
        batch(parseMessage('', read), bindMessage(portal, ''), syncMessage()),
        batch(bindMessage(portal, 'nope'), closeMessage('P', portal), syncMessage()),
        batch(executeMessage(portal, 1), syncMessage()),
        simple('ROLLBACK'),
      ]);
  });
});

describe('a Bind in an aborted transaction', () => {
  it('pipelined behind the Sync of the pipeline whose error aborts it, of a statement its connection lacks: 08P01 as directly', async () => {
    // (After DISCARD ALL, pool_mode = transaction answers the Parse of a known text without a connection.)
    const parse = batch(parseMessage('s1', "SET TimeZone = 'UTC'"), syncMessage());
    await conforms([
      parse,
      simple('DISCARD ALL'),
      parse,
      simple('BEGIN'),
      batch(
        bindMessage('', 'nope'),
        syncMessage(),
        bindMessage('p1', 's1', ['1']),
        executeMessage('p1'),
        syncMessage(),
      ),
      batch(describeMessage('S', 's1'), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('of a statement parsed on the standby, with a wrong parameter count: 08P01 as directly (not the 25P02 of a Parse elsewhere)', async () => {
    await conforms([
      batch(parseMessage('s1', read), syncMessage()),
      simple('BEGIN'),
      runStatement('s1'),
      simple(write),
      simple('SELEC 1'),
      batch(bindMessage('', 's1', ['1']), syncMessage()),
      batch(bindMessage('', 's1'), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('of a statement no node of the transaction has parsed: its parameters counted as the server counts them (08P01, else 25P02)', async () => {
    await conforms([
      batch(parseMessage('s1', 'SELECT 1'), syncMessage()),
      batch(parseMessage('s3', "SET LOCAL TimeZone = 'Europe/Paris'"), syncMessage()),
      batch(parseMessage('s4', `SELECT b FROM ${table} WHERE a = $1 AND $3::int > 0`, [23, 25, 23, 23]), syncMessage()),
      batch(parseMessage('s2', 'BEGIN'), bindMessage('', 's2'), executeMessage(''), syncMessage()),
      batch(bindMessage('p1', ''), syncMessage()),
      batch(bindMessage('p1', 's1', ['1']), syncMessage()),
      batch(bindMessage('p1', 's1'), syncMessage()),
      batch(bindMessage('p1', 's3', ['1']), syncMessage()),
      batch(bindMessage('p1', 's4', ['1', '2', '3']), syncMessage()),
      batch(bindMessage('p1', 's4', ['1', '2', '3', '4']), syncMessage()),
      batch(parseMessage('', 'SAVEPOINT sp'), syncMessage()),
      batch(bindMessage('', '', ['1']), syncMessage()),
      batch(parseMessage('s5', 'ROLLBACK'), bindMessage('', 's5'), executeMessage(''), syncMessage()),
      runStatement('s4'),
    ]);
  });

  it("of a PREPARE (its $n are its inner statement's): 08P01 for a wrong parameter count", async () => {
    await conforms([
      batch(parseMessage('s2', 'COMMIT'), syncMessage()),
      simple('PREPARE q AS SELECT 7; BEGIN'),
      batch(parseMessage('', 'PREPARE q AS SELECT $1::int'), syncMessage()),
      // (A relation pgrelay has not seen: it asks the primary's catalog, which drops the
      // unnamed statement there.)
      batch(parseMessage('s2', `SELECT count(*) FROM ${table}_prep`), syncMessage()),
      batch(bindMessage('p1', '', ['1']), syncMessage()),
      batch(bindMessage('p1', ''), syncMessage()),
      simple('ROLLBACK; DEALLOCATE q'),
    ]);
  });

  it('of a statement for both nodes (BEGIN) the primary has not kept: 08P01 for a wrong parameter count', async () => {
    // (A relation read for the first time: pgrelay asks the primary's catalog about it, which
    // drops the unnamed statement there.)
    await conforms([
      batch(
        parseMessage('', 'BEGIN'),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s2', `SELECT last_value > 0 FROM ${table}_s`),
        bindMessage('p1', 's2'),
        syncMessage(),
      ),
      batch(describeMessage('S', 'nope'), syncMessage()),
      batch(bindMessage('p2', '', ['1']), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe('a named statement for both nodes whose Parse the primary skipped', () => {
  it('its copy on the standby does not keep the name: a later Parse of it (a read) prepares it', async () => {
    await conforms([
      batch(bindMessage('', 'nope'), parseMessage('s2', 'SET search_path = pg_temp, public'), syncMessage()),
      batch(parseMessage('s2', 'SHOW TimeZone'), bindMessage('', 's2'), executeMessage(''), syncMessage()),
    ]);
  });

  it("and pgrelay's Close of that copy skipped after an error there: the name stays free all the same", async () => {
    await conforms([
      batch(
        executeMessage(''),
        parseMessage('s1', 'ROLLBACK TO sp'),
        bindMessage('p1', 's1'),
        executeMessage('p1'),
        bindMessage('p1', ''),
        syncMessage(),
      ),
      batch(parseMessage('s1', read), syncMessage()),
      runStatement('s1'),
    ]);
  });

  it('and the name parsed again on the primary (a read after a write in a transaction), then bound on the standby: the copy there is closed first', async () => {
    await conforms([
      batch(
        executeMessage(''),
        parseMessage('s1', 'ROLLBACK TO sp'),
        bindMessage('p1', 's1'),
        executeMessage('p1'),
        bindMessage('p1', ''),
        syncMessage(),
      ),
      simple('BEGIN'),
      simple(`INSERT INTO ${table} VALUES (400, 'w')`),
      batch(parseMessage('s1', read), syncMessage()),
      simple('ROLLBACK'),
      runStatement('s1'),
    ]);
  });
});

describe('COMMIT AND CHAIN of a transaction a multi-statement Query began (the primary alone has it)', () => {
  it("the chained transaction is the primary's alone too: a second COMMIT AND CHAIN, in a failed one too, ends it there", async () => {
    await conforms([
      simple(`SELECT 1; BEGIN READ ONLY`),
      simple('COMMIT AND CHAIN'),
      simple('COMMIT AND CHAIN'),
      simple('SELECT 1/0'),
      simple('COMMIT AND CHAIN'),
      simple('SAVEPOINT sp'),
      simple('COMMIT'),
    ]);
  });
});

describe('a multi-statement Query that ends a transaction the load-balance node shares', () => {
  it('a failed transaction, then begins another (END; START TRANSACTION …): no node is left in the old one', async () => {
    await conforms([
      simple('BEGIN'),
      simple(read),
      simple('SELECT 1/0'),
      simple('END; START TRANSACTION ISOLATION LEVEL REPEATABLE READ'),
      simple(read),
      simple('SAVEPOINT sp'),
      simple('COMMIT'),
      simple(read),
    ]);
  });

  it('that fails before its COMMIT: the transaction goes on failed on every node (ROLLBACK TO a savepoint recovers it)', async () => {
    await conforms([
      simple('BEGIN'),
      simple('SAVEPOINT a'),
      simple(read),
      simple('SELECT 1/0; COMMIT'),
      simple(read),
      simple('ROLLBACK TO a'),
      simple(read),
      simple('COMMIT'),
    ]);
  });

  it('a transaction, then begins another (COMMIT; BEGIN): no standby connection stays in the old one', async () => {
    for (const [mode, proxy] of Object.entries(proxies)) {
      const app = `multi_end_${mode}_${process.pid}`;
      const { raw } = await rawSession(proxy, { application_name: app });
      try {
        for (const sql of ['BEGIN', read, 'COMMIT; BEGIN']) {
          raw.send(queryMessage(sql));
          await raw.collect('Z', 10_000);
        }
        await noStandbyInTransaction(app, mode);
      } finally {
        raw.destroy();
      }
    }
  });
});

describe('a failed transaction ended by a multi-statement Query while the standby owes pgrelay the answer to a Close of its own', () => {
  it('is rolled back on the standby too: a BEGIN after it begins a transaction', async () => {
    await conforms([
      batch(parseMessage('', 'BEGIN READ ONLY'), bindMessage('', ''), executeMessage(''), syncMessage()),
      batch(parseMessage('', `SELECT * FROM ${table}_nope`), syncMessage()),
      batch(parseMessage('s1', 'SAVEPOINT sp'), syncMessage()),
      simple("ROLLBACK; SET LOCAL TimeZone = 'Europe/Paris'"),
      simple('BEGIN'),
      simple(read),
      simple('ROLLBACK'),
    ]);
  });
});

describe('a transaction ended on the primary alone while the standby still owes pgrelay an answer', () => {
  it("the standby's copy is rolled back behind it: the next read there runs outside it", async () => {
    const standbys = cluster.nodes.filter((n) => n.id !== cluster.primaryId);
    const taps = await Promise.all(standbys.map((n) => Wiretap.start(n)));
    const config: Record<string, string | number | boolean> = {
      load_balance_mode: true,
      backend_weight0: 0,
      log_min_messages: 'warning',
    };
    standbys.forEach((n, i) => {
      config[`backend_port${n.id}`] = taps[i].port;
    });
    try {
      for (const mode of ['session', 'transaction']) {
        const proxy = await startProxy({ cluster, config: { ...config, pool_mode: mode } });
        try {
          const { raw } = await rawSession(proxy, {});
          const q = async (sql: string): Promise<string> => {
            raw.send(queryMessage(sql));
            return (await raw.collect('Z', 10_000)).map(shown).join(' ');
          };
          expect(await q('BEGIN')).toBe('C[BEGIN] ZT');
          expect(await q(read)).toMatch(/ ZT$/);
          // The write fails on the primary: the standby's copy of the transaction is aborted
          // too, by a statement of pgrelay's held back on its way there.
          for (const t of taps) t.holdFromStatement('pgrelay: a statement failed');
          expect(await q(`INSERT INTO ${table}_nope VALUES (1)`)).toMatch(/^E\[42P01 .* ZE$/);
          await pollUntil(
            () => taps.reduce((n, t) => n + t.holding.size, 0),
            (n) => n === 1,
            { what: "pgrelay's abort of the standby's transaction to be held", timeoutMs: 10_000 },
          );
          expect(await q('COMMIT; SELECT 2 AS two')).toBe('C[ROLLBACK] T D[2] C[SELECT 1] ZI');
          for (const t of taps) t.release();
          expect(await q(read), mode).toBe('T D[1,x1] D[2,x2] D[3,x3] C[SELECT 3] ZI');
          raw.destroy();
        } finally {
          for (const t of taps) t.release();
          await proxy.stop();
        }
      }
    } finally {
      for (const t of taps) await t.close();
    }
  });
});

describe('a Parse of a name in the pipeline of a DEALLOCATE ALL or DISCARD ALL that ran before it', () => {
  it('finds the name free, and the statement it prepares stays', async () => {
    await conforms([
      batch(parseMessage('s1', 'SELECT 1/0'), syncMessage()),
      batch(
        parseMessage('', 'DISCARD ALL'),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s1', read),
        syncMessage(),
      ),
      runStatement('s1'),
      batch(
        parseMessage('', 'DEALLOCATE ALL'),
        bindMessage('', ''),
        executeMessage(''),
        parseMessage('s1', 'SELECT 2'),
        syncMessage(),
      ),
      runStatement('s1'),
      batch(parseMessage('s1', read), syncMessage()),
    ]);
  });
});

describe('a DEALLOCATE ALL for both nodes skipped on the primary after an error in its pipeline', () => {
  it("its copy on the standby ran: the statements it dropped there are the client's still (a Parse of the name gets 42P05)", async () => {
    await conforms([
      batch(parseMessage('s1', 'DEALLOCATE ALL'), syncMessage()),
      batch(parseMessage('s2', 'SELECT 1'), syncMessage()),
      batch(executeMessage(''), bindMessage('', 's1'), executeMessage(''), syncMessage()),
      batch(parseMessage('s2', 'SELECT 1/0'), syncMessage()),
      runStatement('s2'),
    ]);
  });
});

describe("a statement a second Parse of its name left on the connection (pool_mode = transaction), whose Close pgrelay's was skipped", () => {
  it('a later Describe or Bind of the name gets 26000', async () => {
    await conforms([
      batch(parseMessage('s2', 'PREPARE q AS SELECT 7'), syncMessage()),
      batch(parseMessage('s1', read), syncMessage()),
      batch(parseMessage('s1', 'SAVEPOINT sp'), syncMessage()),
      batch(closeMessage('S', 's1'), syncMessage()),
      batch(describeMessage('P', ''), bindMessage('p1', 's1'), syncMessage()),
      batch(describeMessage('S', 's1'), syncMessage()),
      batch(describeMessage('P', ''), describeMessage('S', 's1'), syncMessage()),
      runStatement('s1'),
      simple('DEALLOCATE q'),
    ]);
  });
});

describe('a Bind of a named portal the client has (42P03), the statement routed to another node', () => {
  it('in an aborted transaction, with a wrong parameter count: 08P01 (checked first), though the statement is not parsed where the portal is', async () => {
    await conforms(
      [
        simple('BEGIN READ ONLY'),
        batch(parseMessage('', `COPY (${read}) TO STDOUT`), bindMessage('p1', ''), syncMessage()),
        batch(parseMessage('', 'DISCARD ALL'), bindMessage('p1', ''), executeMessage('p1'), syncMessage()),
        batch(bindMessage('p1', '', ['1']), syncMessage()),
        batch(bindMessage('p1', ''), syncMessage()),
        simple('ROLLBACK'),
        // (A start-up application_name: pgrelay sets it again behind the DISCARD ALL with a
        // Query of its own, which drops the unnamed statement where the portal is.)
      ],
      true,
    );
  });

  it('is refused as PostgreSQL refuses it, and the portal it has stays', async () => {
    await conforms([
      batch(
        parseMessage('s1', 'SELECT $1::int + 1'),
        bindMessage('p1', 's1', ['2']),
        parseMessage('', write),
        bindMessage('p1', ''),
        executeMessage('p1'),
        syncMessage(),
      ),
      simple('BEGIN'),
      batch(bindMessage('p1', 's1', ['5']), syncMessage()),
      batch(parseMessage('s2', write), bindMessage('p1', 's2'), syncMessage()),
      batch(executeMessage('p1'), syncMessage()),
      simple('ROLLBACK'),
      batch(bindMessage('p1', 's1', ['5']), bindMessage('p2', 's1', ['6']), executeMessage('p1'), syncMessage()),
      simple(`SELECT count(*) FROM ${table} WHERE a = 100`),
      // A statement for both nodes (SET) into a portal the client has on the standby.
      batch(
        parseMessage('s3', "SET TimeZone = 'Asia/Tokyo'"),
        parseMessage('s4', read),
        bindMessage('p1', 's4'),
        executeMessage('p1', 1),
        bindMessage('p1', 's3'),
        executeMessage('p1'),
        syncMessage(),
      ),
      simple('SHOW TimeZone'),
      // A Bind of a named portal that failed, then another of that name in the pipeline
      // (skipped): the name stays free, whatever a later Bind of it binds.
      batch(parseMessage('s5', `SELECT b FROM ${table} WHERE a = $1`), syncMessage()),
      batch(parseMessage('', write), syncMessage()),
      batch(bindMessage('p1', 's5'), bindMessage('p1', 's5', ['1']), syncMessage()),
      batch(bindMessage('p1', ''), executeMessage('p1'), syncMessage()),
      batch(bindMessage('p1', 's5', ['2']), bindMessage('p1', 's5', ['3']), executeMessage('p1'), syncMessage()),
      batch(bindMessage('p1', 's5', ['2']), executeMessage('p1'), syncMessage()),
      simple(`DELETE FROM ${table} WHERE a = 100`),
    ]);
  });
});

describe('ParameterStatus: a client is told a setting when its value changes for it, and only then', () => {
  it("a DISCARD ALL after a SET of application_name reports the start-up value back (pool_mode = transaction: the connection's own last report differs)", async () => {
    await conforms(
      [
        simple('PREPARE q AS SELECT 7'),
        batch(syncMessage(), parseMessage('s1', 'DISCARD ALL')),
        simple("SET application_name = 'fz2'"),
        batch(parseMessage('s1', 'BEGIN'), bindMessage('p1', 's1'), executeMessage('p1', 1), syncMessage()),
        batch(bindMessage('p1', 's1'), executeMessage('p1'), syncMessage()),
        simple('SHOW application_name'),
      ],
      true,
    );
  });

  it('a SET LOCAL reverted by an error on another node of the transaction: the client is told the value it reverts to', async () => {
    // The Parse of a name the client has fails on the standby, where the statement lives;
    // pgrelay aborts the transaction on the primary, which ran the SET LOCAL: its report of
    // the value restored reaches the client then, before the reply to the next request
    // (a direct connection sends it with the error).
    const steps = [
      batch(parseMessage('s1', 'SELECT $1::int + 1'), syncMessage()),
      simple('BEGIN'),
      simple("SET LOCAL TimeZone = 'Europe/Paris'"),
      batch(parseMessage('s1', 'CLOSE h'), syncMessage()),
      simple('ROLLBACK'),
      simple('SHOW TimeZone'),
    ];
    const reports = (t: string[]) => t.flatMap((x) => x.split(' ').filter((m) => m.startsWith('S[')));
    const rest = (t: string[]) =>
      t.map((x) =>
        x
          .split(' ')
          .filter((m) => !m.startsWith('S['))
          .join(' '),
      );
    const direct = await run(cluster.node(cluster.primaryId).port, steps, true);
    expect(reports(direct)).toEqual(['S[TimeZone=Europe/Paris]', 'S[TimeZone=Etc/UTC]']);
    for (const [mode, proxy] of Object.entries(proxies)) {
      const got = await run(proxy.port, steps, true);
      expect(reports(got), mode).toEqual(reports(direct));
      expect(rest(got), mode).toEqual(rest(direct));
    }
  });

  it('a DISCARD ALL, then a SET of a start-up setting, then an error in one pipeline: the SET is rolled back, the start-up value stays (nothing reported)', async () => {
    await conforms(
      [
        batch(
          parseMessage('', 'DISCARD ALL'),
          bindMessage('p1', ''),
          executeMessage('p1'),
          parseMessage('s2', "SET application_name = 'fz2'"),
          bindMessage('p1', 's2'),
          executeMessage('p1'),
          bindMessage('p1', 's1'),
          syncMessage(),
        ),
        simple('SHOW application_name'),
        simple('SELECT 1'),
        simple('SHOW application_name'),
      ],
      true,
    );
  });

  it('a DISCARD ALL, then a BEGIN in its pipeline: the start-up values it gives back last, whether the transaction fails, rolls back or commits', async () => {
    const discardThenBegin = batch(
      parseMessage('', 'DISCARD ALL'),
      bindMessage('', ''),
      executeMessage(''),
      parseMessage('', 'BEGIN'),
      bindMessage('p1', ''),
      executeMessage('p1'),
      syncMessage(),
    );
    await conforms(
      [
        simple("SET application_name = 'changed'"),
        discardThenBegin,
        batch(executeMessage('', 1), syncMessage()),
        simple('ROLLBACK'),
        simple('SHOW application_name'),
        discardThenBegin,
        simple('ROLLBACK'),
        simple('SHOW application_name'),
        simple("SET application_name = 'changed'"),
        discardThenBegin,
        simple('COMMIT'),
        simple('SHOW application_name'),
      ],
      true,
    );
  });

  it('a SET to the value the client was already told is not reported again, whatever the connection had', async () => {
    await conforms(
      [
        batch(parseMessage('', `DECLARE h CURSOR WITH HOLD FOR ${read}`), syncMessage()),
        simple("SET application_name = 'fz2'"),
        batch(
          executeMessage(''),
          parseMessage('', 'DISCARD ALL'),
          bindMessage('p1', ''),
          executeMessage('p1'),
          syncMessage(),
        ),
        simple("ROLLBACK; SET application_name = 'fz2'"),
        simple("SET application_name = 'fz2'"),
        simple('SHOW application_name'),
      ],
      true,
    );
  });
});

describe('a read-only transaction on the read node alone, ended by a ROLLBACK in a pipeline, then a statement that needs the primary', () => {
  it('the rest of the pipeline runs outside a transaction: the client is told it is idle at its Sync', async () => {
    await conforms([
      simple('BEGIN READ ONLY'),
      batch(describeMessage('S', 's1'), syncMessage()),
      batch(
        parseMessage('s1', 'ROLLBACK'),
        bindMessage('', 's1'),
        executeMessage(''),
        parseMessage('', 'CLOSE h'),
        syncMessage(),
      ),
      simple('SELECT 1'),
      simple('BEGIN READ ONLY'),
      batch(
        parseMessage('s2', 'COMMIT'),
        bindMessage('', 's2'),
        executeMessage(''),
        parseMessage('', write),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      simple(`SELECT count(*) FROM ${table} WHERE a = 100`),
      simple(`DELETE FROM ${table} WHERE a = 100`),
    ]);
  });
});

describe('the unnamed portal in an aborted transaction', () => {
  it('two Binds of it refused in one pipeline (no such statement, then skipped): the portal the client had stays, where it is', async () => {
    await conforms([
      simple('BEGIN READ ONLY'),
      batch(parseMessage('s2', 'SELECT $1::int + 1'), bindMessage('', 's2', ['1']), syncMessage()),
      batch(bindMessage('', '', ['1']), bindMessage('', 's1'), syncMessage()),
      batch(describeMessage('P', ''), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('dropped by a simple Query that ran elsewhere, then the transaction aborted: a Describe or Execute of it gets 34000', async () => {
    await conforms([
      batch(syncMessage(), parseMessage('s1', 'BEGIN READ ONLY'), bindMessage('', 's1'), executeMessage('')),
      simple('SELECT 1'),
      batch(bindMessage('', '', ['1']), syncMessage()),
      batch(executeMessage('', 1), syncMessage()),
      batch(describeMessage('P', ''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('after a simple Query failed in the transaction: 25P02 (or NoData) where it failed as it ran (its failed portal stays), 34000 where it failed before (parse analysis, planning)', async () => {
    await conforms([
      simple('BEGIN'),
      simple(read),
      simple('SELECT 1/0'),
      batch(executeMessage('', 1), syncMessage()),
      batch(describeMessage('P', ''), syncMessage()),
      simple('ROLLBACK'),
      simple('BEGIN'),
      simple(`SELECT a / 0 FROM ${table}`),
      batch(executeMessage(''), syncMessage()),
      batch(describeMessage('P', ''), syncMessage()),
      simple('ROLLBACK'),
      simple('BEGIN'),
      simple(`INSERT INTO ${table} SELECT a / 0 FROM ${table}`),
      batch(describeMessage('P', ''), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      batch(parseMessage('', 'SELECT 1'), bindMessage('', ''), syncMessage()),
      simple('BEGIN'),
      simple(`SELECT * FROM ${table}_missing`),
      batch(executeMessage(''), syncMessage()),
      batch(bindMessage('', '', ['1']), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('a Bind of it refused, its Close and another Bind skipped after it: the portal the client had stays (25P02)', async () => {
    await conforms([
      batch(parseMessage('s1', 'BEGIN READ ONLY'), bindMessage('', 's1'), executeMessage(''), syncMessage()),
      batch(bindMessage('', ''), closeMessage('P', ''), bindMessage('', 's1'), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('left by a simple Query that failed as it ran, then a Bind of it refused where its statement is: an Execute of it gets 25P02', async () => {
    await conforms([
      batch(parseMessage('s2', 'SELECT 1'), syncMessage()),
      simple(`DECLARE h CURSOR WITH HOLD FOR ${read}`),
      simple('BEGIN READ ONLY'),
      simple(`DECLARE h CURSOR WITH HOLD FOR ${read}`),
      batch(bindMessage('', 's2'), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
      simple('CLOSE h'),
    ]);
  });

  it('bound on the standby, whose copy of a COMMIT ran where the primary skipped its own after an error: the client still has it (25P02)', async () => {
    await conforms([
      simple('BEGIN READ ONLY'),
      batch(parseMessage('s2', 'SELECT $1::int + 1'), bindMessage('', 's2', ['1']), syncMessage()),
      batch(
        bindMessage('', '', ['1']),
        parseMessage('s1', 'COMMIT'),
        bindMessage('p1', 's1'),
        executeMessage('p1'),
        syncMessage(),
      ),
      batch(describeMessage('P', ''), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('a Query refused in the aborted transaction (25P02) leaves no portal: an Execute of the unnamed portal gets 34000', async () => {
    await conforms([
      batch(syncMessage(), parseMessage('s1', 'BEGIN READ ONLY'), bindMessage('', 's1'), executeMessage('')),
      simple('SELECT 1'),
      batch(bindMessage('', '', ['1']), syncMessage()),
      simple(`COPY ${table} FROM STDIN`),
      batch(executeMessage('', 1), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe("pgrelay's own queries on a connection (the write position, a catalog lookup, start-up settings set again) inside the client's transaction", () => {
  it('a DISCARD ALL and a BEGIN into the unnamed portal in one pipeline: the start-up settings set again behind it leave that portal (55000 at its second Execute)', async () => {
    await conforms(
      [
        batch(
          parseMessage('', 'DISCARD ALL'),
          bindMessage('p1', ''),
          executeMessage('p1'),
          parseMessage('s2', 'BEGIN READ ONLY'),
          bindMessage('', 's2'),
          executeMessage(''),
          syncMessage(),
        ),
        batch(executeMessage(''), syncMessage()),
        simple('ROLLBACK'),
      ],
      true,
    );
  });

  it('leave the unnamed portal the client has: a second Execute of a BEGIN run in the same write as an earlier write gets 55000', async () => {
    await conforms([
      batch(parseMessage('', 'BEGIN'), syncMessage()),
      batch(executeMessage(''), syncMessage(), bindMessage('', ''), executeMessage(''), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });

  it('leave a portal suspended after its first rows: the next Execute goes on where it stopped', async () => {
    await conforms([
      simple('BEGIN'),
      simple(write),
      batch(parseMessage('', read), bindMessage('', ''), executeMessage('', 1), syncMessage()),
      // A function pgrelay has not seen: it asks the catalog first, on the primary, where the portal is.
      batch(parseMessage('s9', `SELECT ${table}_f()`), bindMessage('p9', 's9'), executeMessage('p9'), syncMessage()),
      batch(executeMessage('', 1), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe("pgrelay's abort of the transaction on another node after an error", () => {
  it('leaves the unnamed statement the client parsed there: a Describe of it in the aborted transaction is answered by the server', async () => {
    await conforms([
      simple('BEGIN READ ONLY'),
      batch(
        parseMessage('', 'FETCH 1 FROM c'),
        executeMessage('p1'),
        parseMessage('', "SET application_name = 'fz2'"),
        syncMessage(),
      ),
      batch(describeMessage('S', ''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe('the next pipeline sent before the answer to one that ran BEGIN', () => {
  // Each script runs twice: the second time the session's connections come from pgrelay's
  // cache at once (a session ended by DISCARD ALL leaves them as they were), so that the next
  // pipeline reaches pgrelay before the first is answered.
  const after = [simple('ROLLBACK'), simple('DISCARD ALL')];
  /** A prepared BEGIN run, then `write`, in one pipeline; `read` in the next, sent with it. */
  const beginWriteRead = async (write: string, read: string): Promise<void> => {
    const script = [
      batch(parseMessage('s1', 'BEGIN'), syncMessage()),
      batch(
        bindMessage('', 's1'),
        executeMessage(''),
        parseMessage('', write),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
        parseMessage('', read),
        bindMessage('', ''),
        executeMessage(''),
        syncMessage(),
      ),
      ...after,
    ];
    for (let i = 0; i < 2; i++) await conforms(script, true);
  };
  it('reads what the transaction wrote: BEGIN and an INSERT in one pipeline, a read of the row in the next', async () => {
    await beginWriteRead(`INSERT INTO ${table} VALUES (99, 'tx')`, `SELECT count(*) FROM ${table} WHERE a = 99`);
  });

  it('gets 25P02 after a write that failed in that transaction: BEGIN and a failing INSERT in one pipeline, a read in the next', async () => {
    await beginWriteRead(`INSERT INTO ${table} VALUES ('x')`, 'SELECT 1');
  });

  it('runs outside a transaction when an error before the BEGIN skipped it: the copy of that BEGIN on the load-balance node is rolled back first', async () => {
    const begun = [
      batch(parseMessage('s1', 'BEGIN'), syncMessage()),
      // pool_mode = transaction: a prepared statement in SQL pins the session to its connections.
      simple('PREPARE q AS SELECT 7'),
    ];
    // The Parse of a name taken fails (42P05): the primary skips the BEGIN bound and run after it.
    const failed = [
      parseMessage('s1', 'PREPARE q2 AS SELECT 2'),
      bindMessage('p1', 's1'),
      executeMessage('p1'),
      syncMessage(),
    ];
    for (let i = 0; i < 2; i++) {
      await conforms([...begun, batch(...failed, parseMessage('s2', 'SELECT 1'), syncMessage()), ...after], true);
      await conforms([...begun, { send: [...failed, queryMessage('SELECT 1')], readies: 2 }, ...after], true);
    }
  });
});

describe('a multi-statement Query with a savepoint command in a transaction (run on the primary alone)', () => {
  it('ROLLBACK TO and RELEASE of its savepoint work, and what follows sees the transaction as the primary has it', async () => {
    await conforms(
      [
        simple('BEGIN'),
        simple(`SAVEPOINT sp; SET TimeZone = 'Asia/Tokyo'`),
        simple('ROLLBACK TO sp'),
        simple('SHOW TimeZone'),
        simple(`SAVEPOINT sp2; INSERT INTO ${table} VALUES (98, 'sp')`),
        simple(`SELECT count(*) FROM ${table} WHERE a = 98`),
        simple('ROLLBACK TO sp2'),
        simple(`SELECT count(*) FROM ${table} WHERE a = 98`),
        simple('RELEASE sp'),
        simple('COMMIT'),
        simple('SHOW TimeZone'),
      ],
      true,
    );
  });

  it('one that fails after its SAVEPOINT: ROLLBACK TO recovers the transaction', async () => {
    await conforms([
      simple('BEGIN'),
      simple(`SET application_name = 'before'`),
      simple('SAVEPOINT sp; SELECT 1/0'),
      simple('ROLLBACK TO sp'),
      simple('SELECT 1'),
      simple('SHOW application_name'),
      simple('ROLLBACK'),
      simple('SHOW application_name'),
    ]);
  });
});

describe('a copy of a Bind for both nodes that ran on the standby where the primary skipped the Bind', () => {
  it("replaced the client's unnamed portal of a read there: its Execute in the aborted transaction gets 25P02, its Describe too", async () => {
    await conforms([
      batch(parseMessage('s1', `SET TimeZone = 'UTC'`), syncMessage()),
      simple('BEGIN READ ONLY'),
      // A read in the transaction: its portal on the standby.
      batch(parseMessage('', `SELECT count(*) FROM ${table}`), bindMessage('', ''), syncMessage()),
      // The Parse of a taken name fails (42P05) on the primary, which skips the Bind of the
      // statement for both nodes and the Close behind it; their copies run on the standby.
      batch(parseMessage('s1', 'RESET TimeZone'), bindMessage('', 's1'), closeMessage('P', ''), syncMessage()),
      batch(executeMessage(''), syncMessage()),
      batch(describeMessage('P', ''), syncMessage()),
      simple('ROLLBACK'),
    ]);
  });
});

describe('a statement for both nodes, parsed before, bound in a transaction a multi-statement Query began (the primary has it alone)', () => {
  it('SAVEPOINT twice: runs on the primary alone, not on a standby outside the transaction (25P01)', async () => {
    await conforms([
      batch(parseMessage('s1', 'SAVEPOINT sp'), syncMessage()),
      simple(`BEGIN; SELECT count(*) FROM ${table}`),
      batch(bindMessage('', 's1'), executeMessage(''), bindMessage('p1', 's1'), executeMessage('p1', 1), syncMessage()),
      simple('ROLLBACK TO sp'),
      simple('COMMIT'),
    ]);
  });
});

describe('the unnamed portal, then a simple Query run on both nodes (RESET, SET…)', () => {
  it('drops it: an Execute of it gets 34000 from the primary, whose abort of the transaction undoes the RESET and reports it before the ReadyForQuery', async () => {
    await conforms(
      [
        simple(`SET TimeZone = 'Asia/Tokyo'`),
        simple('BEGIN'),
        batch(parseMessage('', 'SELECT g FROM generate_series(1, 300) g'), bindMessage('', ''), syncMessage()),
        simple('RESET TimeZone'),
        batch(parseMessage('s1', 'CLOSE h'), executeMessage('', 1), syncMessage()),
        simple('ROLLBACK'),
        simple('RESET TimeZone'),
      ],
      true,
    );
  });
});
