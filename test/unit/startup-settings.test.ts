/**
 * pool_mode = transaction: start-up parameters split into server start-up parameters
 * (the pool key) and replayed settings, the replay plan between a connection's settings
 * and a session's, and the ParameterStatus values a client is told
 * (src/pool/startup-settings.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  internSettings,
  mergeRestores,
  restoreWithout,
  optionSettings,
  replayPlan,
  startupRestoreOfMany,
  reportFor,
  setStatement,
  splitStartup,
  startupRestore,
} from '../../src/pool/startup-settings.js';

const m = (o: Record<string, string>): Map<string, string> => new Map(Object.entries(o));

describe('splitStartup', () => {
  it('keeps user and database for the server and replays the usual driver settings', () => {
    const s = splitStartup(
      m({
        user: 'u',
        database: 'd',
        application_name: 'app',
        client_encoding: 'LATIN1',
        DateStyle: 'ISO, MDY',
        TimeZone: 'UTC',
        extra_float_digits: '2',
      }),
    );
    expect([...s.server]).toEqual([
      ['user', 'u'],
      ['database', 'd'],
    ]);
    expect([...s.settings]).toEqual([
      ['application_name', 'app'],
      ['client_encoding', 'LATIN1'],
      ['datestyle', 'ISO, MDY'],
      ['timezone', 'UTC'],
      ['extra_float_digits', '2'],
    ]);
  });

  it('clients differing only in replayed settings share the server parameters (one pool)', () => {
    const a = splitStartup(m({ user: 'u', database: 'd', application_name: 'a' }));
    const b = splitStartup(m({ user: 'u', database: 'd', application_name: 'b', TimeZone: 'Europe/Paris' }));
    expect([...a.server]).toEqual([...b.server]);
  });

  it('keeps parameters it cannot SET (replication, unknown settings) as server parameters', () => {
    const s = splitStartup(
      m({
        user: 'u',
        database: 'd',
        replication: 'database',
        'myext.flag': 'on',
        default_transaction_isolation: 'serializable',
      }),
    );
    expect([...s.server.keys()]).toEqual([
      'user',
      'database',
      'replication',
      'myext.flag',
      'default_transaction_isolation',
    ]);
    expect(s.settings.size).toBe(0);
  });

  it('replays options made of -c settings it knows, applied before the other parameters', () => {
    const s = splitStartup(
      m({ user: 'u', options: '-c search_path=a,b --statement-timeout=5s -ctimezone=UTC', TimeZone: 'UTC+1' }),
    );
    expect(s.server.has('options')).toBe(false);
    expect(s.settings.get('search_path')).toBe('a,b');
    expect(s.settings.get('statement_timeout')).toBe('5s');
    expect(s.settings.get('timezone')).toBe('UTC+1');
  });

  it('keeps any other options as a server parameter', () => {
    expect(
      splitStartup(m({ user: 'u', options: '-c work_mem=4MB -c session_replication_role=replica' })).server.get(
        'options',
      ),
    ).toBe('-c work_mem=4MB -c session_replication_role=replica');
    expect(optionSettings('-B 100')).toBeUndefined();
    expect(optionSettings('-c')).toBeUndefined();
    expect(optionSettings('-c application_name=a\\ b')?.get('application_name')).toBe('a b');
  });
});

describe('internSettings', () => {
  it('one map for equal settings whatever their order; another for other values', () => {
    const a = internSettings(
      new Map([
        ['application_name', 'x'],
        ['timezone', 'UTC'],
      ]),
    );
    const b = internSettings(
      new Map([
        ['timezone', 'UTC'],
        ['application_name', 'x'],
      ]),
    );
    const c = internSettings(
      new Map([
        ['application_name', 'y'],
        ['timezone', 'UTC'],
      ]),
    );
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect([...c]).toEqual([
      ['application_name', 'y'],
      ['timezone', 'UTC'],
    ]);
  });
});

describe('replayPlan', () => {
  const none = { startup: new Map<string, string>(), statements: [] as string[] };

  it('sets only the start-up settings that differ and resets those the session lacks', () => {
    const have = { startup: m({ application_name: 'a', timezone: 'UTC' }), statements: [] };
    const want = { startup: m({ application_name: 'b', timezone: 'UTC', datestyle: 'ISO' }), statements: [] };
    expect(replayPlan(have, want)).toEqual([setStatement('application_name', 'b'), setStatement('datestyle', 'ISO')]);
    expect(replayPlan(want, none)).toEqual(['RESET "application_name"', 'RESET "timezone"', 'RESET "datestyle"']);
    expect(replayPlan(want, want)).toEqual([]);
  });

  it('sends only the statements after the ones the connection has', () => {
    const have = { startup: m({ application_name: 'a' }), statements: ['SET x.y = 1'] };
    const want = { startup: m({ application_name: 'a' }), statements: ['SET x.y = 1', 'SET x.z = 2'] };
    expect(replayPlan(have, want)).toEqual(['SET x.z = 2']);
  });

  it('starts over with RESET SESSION AUTHORIZATION and RESET ALL (the role is not reset by RESET ALL) when the connection ran other statements', () => {
    const have = { startup: m({}), statements: ['SET x.y = 1'] };
    const want = { startup: m({ application_name: 'b' }), statements: ['SET x.z = 2'] };
    expect(replayPlan(have, want)).toEqual([
      'RESET SESSION AUTHORIZATION',
      'RESET ALL',
      setStatement('application_name', 'b'),
      'SET x.z = 2',
    ]);
  });

  it('starts over when start-up settings differ under statements already run (they come first)', () => {
    const have = { startup: m({ application_name: 'a' }), statements: ['SET application_name = z'] };
    const want = { startup: m({ application_name: 'b' }), statements: ['SET application_name = z'] };
    expect(replayPlan(have, want)).toEqual([
      'RESET SESSION AUTHORIZATION',
      'RESET ALL',
      setStatement('application_name', 'b'),
      'SET application_name = z',
    ]);
  });
});

describe('setStatement and reportFor', () => {
  it('quotes values whatever standard_conforming_strings is', () => {
    expect(setStatement('application_name', "it's a\\b")).toBe(
      "SELECT pg_catalog.set_config(E'application_name', E'it\\'s a\\\\b', false)",
    );
  });

  it("tells the client its own values of the reported settings, the server's others", () => {
    const report = m({ application_name: '', client_encoding: 'UTF8', DateStyle: 'ISO, MDY', server_version: '15.4' });
    const out = reportFor(report, m({ application_name: 'a', client_encoding: 'LATIN1', search_path: 'x' }));
    expect([...out]).toEqual([
      ['application_name', 'a'],
      ['client_encoding', 'LATIN1'],
      ['DateStyle', 'ISO, MDY'],
      ['server_version', '15.4'],
    ]);
  });
});

describe('startupRestore and mergeRestores', () => {
  const startup = m({ application_name: 'a', timezone: 'Asia/Tokyo' });
  const one = { statementCount: 1 };

  it('sets again every start-up setting after RESET ALL / DISCARD ALL, the one reset otherwise, nothing for others', () => {
    expect(startupRestore({ ...one, resetsAll: true }, startup)).toEqual({
      sql: "SELECT pg_catalog.set_config(E'application_name', E'a', false), pg_catalog.set_config(E'timezone', E'Asia/Tokyo', false)",
      reportAs: startup,
    });
    expect(startupRestore({ ...one, resetsSetting: 'timezone' }, startup)?.sql).toBe(
      "SELECT pg_catalog.set_config(E'timezone', E'Asia/Tokyo', false)",
    );
    expect(startupRestore({ ...one, resetsSetting: 'work_mem' }, startup)).toBeUndefined();
    expect(startupRestore({ ...one, resetsAll: true }, m({}))).toBeUndefined();
    // Among several statements the order of effects is not followed: not restored (the connection's settings become unknown).
    expect(startupRestore({ statementCount: 2, resetsAll: true }, startup)).toBeUndefined();
  });

  it('merges two restores of one pipeline', () => {
    const a = startupRestore({ ...one, resetsSetting: 'timezone' }, startup);
    const b = startupRestore({ ...one, resetsSetting: 'application_name' }, startup);
    if (!b) throw new Error('no restore');
    expect([...mergeRestores(a, b).reportAs]).toEqual([
      ['timezone', 'Asia/Tokyo'],
      ['application_name', 'a'],
    ]);
    expect(mergeRestores(undefined, b)).toBe(b);
  });

  it('less a setting a later SET of the pipeline sets (that value lasts)', () => {
    const all = startupRestore({ ...one, resetsAll: true }, startup);
    if (!all) throw new Error('no restore');
    expect(restoreWithout(all, 'work_mem')).toBe(all);
    const left = restoreWithout(all, 'timezone');
    expect(left?.sql).toBe("SELECT pg_catalog.set_config(E'application_name', E'a', false)");
    expect(left && restoreWithout(left, 'application_name')).toBeUndefined();
  });
});

describe('startupRestoreOfMany (the settings statements of one Query, in order)', () => {
  const startup = new Map([
    ['application_name', 'app'],
    ['datestyle', 'SQL, DMY'],
  ]);
  it('RESET ALL then a SET of one of them: the others are restored', () => {
    const r = startupRestoreOfMany(
      [
        { kind: 'reset', resetsAll: true },
        { kind: 'set', settingName: 'application_name' },
      ],
      startup,
    );
    expect(r?.reportAs).toEqual(new Map([['datestyle', 'SQL, DMY']]));
  });
  it('RESET of one, SETs of others: that one', () => {
    const r = startupRestoreOfMany(
      [
        { kind: 'set', settingName: 'datestyle' },
        { kind: 'reset', resetsSetting: 'application_name' },
      ],
      startup,
    );
    expect(r?.reportAs).toEqual(new Map([['application_name', 'app']]));
  });
  it('SETs only, or no start-up settings: nothing', () => {
    expect(startupRestoreOfMany([{ kind: 'set', settingName: 'datestyle' }], startup)).toBeUndefined();
    expect(startupRestoreOfMany([{ kind: 'reset', resetsAll: true }], new Map())).toBeUndefined();
  });
});
