import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  HbaLoadError,
  loadHba,
  matchHba,
  noEntryError,
  noEntryMessage,
  parseHba,
  reloadHba,
  type HbaConn,
  type HbaMatchEnv,
  type HbaRoles,
  type HbaRule,
} from '../../src/auth/hba.js';
import { tempDir } from '../support/temp-dirs.js';

const FIX = join(import.meta.dirname, '../fixtures/auth/hba');
const noInclude = {
  readInclude: (p: string): string => {
    throw Object.assign(new Error('ENOENT'), { code: 'ENOENT', path: p });
  },
};
const noRoles: HbaRoles = { isMember: () => false };

function rules(text: string, includes: Record<string, string> = {}): HbaRule[] {
  const r = parseHba(text, '/etc/pgpool2/pool_hba.conf', {
    readInclude: (p) => {
      const t = includes[p];
      if (t === undefined) throw Object.assign(new Error('nope'), { code: 'ENOENT' });
      return t;
    },
  });
  expect(r.errors).toEqual([]);
  return r.rules;
}

function conn(c: Partial<HbaConn>): HbaConn {
  return { local: false, ssl: false, address: '127.0.0.1', database: 'db', user: 'u', ...c };
}

async function which(
  rs: HbaRule[],
  c: Partial<HbaConn>,
  roles: HbaRoles = noRoles,
  env: HbaMatchEnv = {},
): Promise<number | undefined> {
  return (await matchHba(rs, conn(c), roles, env))?.line;
}

describe('record forms', () => {
  it('local / host / hostssl / hostnossl', async () => {
    const rs = rules(
      [
        'local all all trust',
        'hostssl all all all md5',
        'hostnossl all all all password',
        'host all all all reject',
      ].join('\n'),
    );
    expect(rs.map((r) => [r.type, r.method])).toEqual([
      ['local', 'trust'],
      ['hostssl', 'md5'],
      ['hostnossl', 'password'],
      ['host', 'reject'],
    ]);
    expect(await which(rs, { local: true, address: undefined })).toBe(1);
    expect(await which(rs, { ssl: true })).toBe(2);
    expect(await which(rs, { ssl: false })).toBe(3);
    expect(await which(rules('host all all all trust'), { local: true })).toBeUndefined();
  });

  it('every method parses', () => {
    const rs = rules(
      ['trust', 'reject', 'password', 'md5', 'scram-sha-256'].map((m) => `host all all all ${m}`).join('\n') +
        '\nhostssl all all all cert',
    );
    expect(rs.map((r) => r.method)).toEqual(['trust', 'reject', 'password', 'md5', 'scram-sha-256', 'cert']);
    expect(rs[5]!.options).toEqual({ clientcert: 'verify-full' });
  });

  it('options after the method', () => {
    const [r] = rules('hostssl all all all scram-sha-256 clientcert=verify-ca map=mymap');
    expect(r!.options).toEqual({ clientcert: 'verify-ca', map: 'mymap' });
  });

  it('first match wins, no fall-through', async () => {
    const rs = rules('host all bob all reject\nhost all all all trust');
    expect(await which(rs, { user: 'bob' })).toBe(1);
    expect((await matchHba(rs, conn({ user: 'bob' }), noRoles))!.method).toBe('reject');
    expect(await which(rs, { user: 'carol' })).toBe(2);
  });
});

describe('DATABASE and USER', () => {
  it('names, comma lists, all, quoting', async () => {
    const rs = rules(
      ['host "all" u all trust', 'host a,b,c  x, "y z" all md5', 'host sameuser all all password'].join('\n'),
    );
    expect(await which(rs, { database: 'all', user: 'u' })).toBe(1);
    expect(await which(rs, { database: 'other', user: 'u' })).toBeUndefined();
    expect(rs[1]!.databases.map((t) => t.value)).toEqual(['a', 'b', 'c']);
    expect(rs[1]!.users).toEqual([
      { value: 'x', quoted: false },
      { value: 'y z', quoted: true },
    ]);
    expect(await which(rs, { database: 'c', user: 'y z' })).toBe(2);
    expect(await which(rs, { database: 'C', user: 'x' })).toBeUndefined(); // case-sensitive, and not sameuser
    // a blank after a name without a comma ends the field, as in PostgreSQL
    expect(parseHba('host a, b c all all trust', 'f', noInclude).errors[0]?.message).toBe(
      'invalid authentication method "all"',
    );
    expect(await which(rs, { database: 'zed', user: 'zed' })).toBe(3);
  });

  it('quoted "all" is a name, not the keyword', async () => {
    const rs = rules('host all "all" all trust');
    expect(await which(rs, { user: 'bob' })).toBeUndefined();
    expect(await which(rs, { user: 'all' })).toBe(1);
  });

  it('+role membership via the hook; quoted "+x" is a plain name', async () => {
    const calls: string[] = [];
    const roles: HbaRoles = {
      isMember: async (u, r) => {
        calls.push(`${u}>${r}`);
        return u === 'alice' && r === 'ops';
      },
    };
    const rs = rules('host all +ops all trust\nhost all "+ops" all md5\nhost samerole all all password');
    expect(await which(rs, { user: 'alice' }, roles)).toBe(1);
    expect(await which(rs, { user: 'ops' }, roles)).toBe(1); // a role is a member of itself
    expect(await which(rs, { user: '+ops' }, roles)).toBe(2);
    expect(await which(rs, { user: 'bob', database: 'ops' }, roles)).toBeUndefined();
    expect(
      await which(
        rs,
        { user: 'alice', database: 'ops' },
        { isMember: (u, r) => u === 'alice' && r === 'ops' && false },
      ),
    ).toBeUndefined();
    expect(calls).toContain('alice>ops');
  });

  it('@file includes, relative to the hba file, nested and with comments', async () => {
    const rs = rules('host @dbs @admins all trust', {
      '/etc/pgpool2/dbs': 'db1 db2\n@sub/nested # c\n',
      '/etc/pgpool2/sub/nested': 'db3',
      '/etc/pgpool2/admins': '# admins\nalice, bob\n"carol"\n',
    });
    expect(rs[0]!.databases.map((t) => t.value)).toEqual(['db1', 'db2', 'db3']);
    expect(rs[0]!.users.map((t) => t.value)).toEqual(['alice', 'bob', 'carol']);
    expect(await which(rs, { database: 'db3', user: 'carol' })).toBe(1);
    expect(await which(rs, { database: 'db4', user: 'carol' })).toBeUndefined();
  });
});

describe('ADDRESS', () => {
  it('CIDR and address + mask, IPv4 and IPv6', async () => {
    const rs = rules(
      [
        'host all all 192.168.1.0/24 trust',
        'host all all 10.0.0.0 255.0.0.0 md5',
        'host all all 2001:db8::/32 password',
        'host all all ::1/128 scram-sha-256',
        'host all all fe80:: ffff:ffff:ffff:ffff:: reject',
      ].join('\n'),
    );
    expect(await which(rs, { address: '192.168.1.77' })).toBe(1);
    expect(await which(rs, { address: '192.168.2.1' })).toBeUndefined();
    expect(await which(rs, { address: '10.200.3.4' })).toBe(2);
    expect(await which(rs, { address: '2001:db8:1::5' })).toBe(3);
    expect(await which(rs, { address: '::1' })).toBe(4);
    expect(await which(rs, { address: 'fe80::1%eth0' })).toBe(5);
  });

  it('IPv4-mapped IPv6 client addresses match IPv4 rules (and the reverse)', async () => {
    expect(await which(rules('host all all 127.0.0.1/32 trust'), { address: '::ffff:127.0.0.1' })).toBe(1);
    expect(await which(rules('host all all ::ffff:10.0.0.0/104 trust'), { address: '10.1.2.3' })).toBe(1);
    expect(await which(rules('host all all 127.0.0.1/32 trust'), { address: '::1' })).toBeUndefined();
  });

  it('all, samehost, samenet', async () => {
    const env: HbaMatchEnv = {
      serverAddresses: [
        { address: '192.168.5.10', netmask: '255.255.255.0' },
        { address: '::1', netmask: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' },
      ],
    };
    const rs = rules('host all all samehost trust\nhost all all samenet md5\nhost all all all reject');
    expect(await which(rs, { address: '192.168.5.10' }, noRoles, env)).toBe(1);
    expect(await which(rs, { address: '::ffff:192.168.5.10' }, noRoles, env)).toBe(1);
    expect(await which(rs, { address: '192.168.5.99' }, noRoles, env)).toBe(2);
    expect(await which(rs, { address: '8.8.8.8' }, noRoles, env)).toBe(3);
  });

  it('hostnames: exact and leading-dot suffix, forward-confirmed, resolved lazily', async () => {
    let reverse = 0;
    const env: HbaMatchEnv = { forwardLookup: async (n) => (n === 'db.example.com' ? ['203.0.113.5'] : []) };
    const rs = rules(
      'host all all 127.0.0.1/32 trust\nhost all all .EXAMPLE.com md5\nhost all all db.example.com password',
    );
    const hostname = async (): Promise<string> => {
      reverse++;
      return 'db.example.com';
    };
    expect(await which(rs, { address: '127.0.0.1', hostname }, noRoles, env)).toBe(1);
    expect(reverse).toBe(0);
    expect(await which(rs, { address: '203.0.113.5', hostname }, noRoles, env)).toBe(2);
    expect(reverse).toBe(1);
    // reverse name that does not resolve back to the client: no match
    expect(await which(rs, { address: '203.0.113.6', hostname }, noRoles, env)).toBeUndefined();
    expect(
      await which(rules('host all all db.example.com trust'), { address: '203.0.113.5' }, noRoles, env),
    ).toBeUndefined();
    expect(rules('host all all .example.com trust')[0]!.address).toEqual({ kind: 'hostname', name: '.example.com' });
  });
});

describe('malformed lines', () => {
  const cases: Array<[string, string]> = [
    ['hosts all all all trust', 'invalid connection type "hosts"'],
    ['host,local all all all trust', 'multiple values specified for connection type'],
    ['local', 'end-of-line before database specification'],
    ['local all', 'end-of-line before role specification'],
    ['local all all', 'end-of-line before authentication method'],
    ['host all all', 'end-of-line before IP address specification'],
    ['host all all 10.0.0.0/8', 'end-of-line before authentication method'],
    ['host all all 10.0.0.1,10.0.0.2 trust', 'multiple values specified for host address'],
    ['host all all 10.0.0.0/33 md5', 'invalid CIDR mask in address "10.0.0.0/33"'],
    ['host all all ::1/129 md5', 'invalid CIDR mask in address "::1/129"'],
    ['host all all 10.0.0.0/x md5', 'invalid CIDR mask in address "10.0.0.0/x"'],
    ['host all all 300.1.1.1/8 md5', 'specifying both host name and CIDR mask is invalid: "300.1.1.1/8"'],
    ['host all all 10.0.0.0', 'end-of-line before netmask specification'],
    ['host all all 10.0.0.0 ffff:: md5', 'IP address and mask do not match'],
    ['host all all 10.0.0.0 bogus md5', 'invalid IP mask "bogus": Name or service not known'],
    ['host all all all trust,md5', 'multiple values specified for authentication type'],
    [
      'host all all all ident',
      'authentication method "ident" is not supported by pgrelay (supported: trust, reject, password, md5, scram-sha-256, cert)',
    ],
    [
      'host all all all pam',
      'authentication method "pam" is not supported by pgrelay (supported: trust, reject, password, md5, scram-sha-256, cert)',
    ],
    ['host all all all magic', 'invalid authentication method "magic"'],
    ['host all all all cert', 'cert authentication is only supported on hostssl connections'],
    ['local all all cert', 'cert authentication is only supported on hostssl connections'],
    ['host all all all md5 foo', 'authentication option not in name=value format: foo'],
    ['host all all all md5 foo=bar', 'unrecognized authentication option name: "foo"'],
    ['host all all all md5 clientcert=verify-full', 'clientcert can only be configured for "hostssl" rows'],
    ['hostssl all all all md5 clientcert=1', 'invalid value for clientcert: "1"'],
    [
      'hostssl all all all cert clientcert=verify-ca',
      'clientcert can only be set to "verify-full" when using "cert" authentication',
    ],
    [
      'host @missing all all trust',
      'could not open secondary authentication file "@missing" as "/etc/pgpool2/missing": No such file or directory',
    ],
    [`host ${'x'.repeat(300)} all all trust`, `authentication file token too long, skipping: "${'x'.repeat(255)}"`],
  ];
  it.each(cases)('%s', (line, message) => {
    const r = parseHba(`# header\n${line}\n`, '/etc/pgpool2/pool_hba.conf', noInclude);
    expect(r.errors).toEqual([{ file: '/etc/pgpool2/pool_hba.conf', line: 2, message }]);
    expect(r.rules).toEqual([]);
  });

  it('reports every bad line, not just the first', () => {
    const r = parseHba('local all all trust\nbogus\nhost all all all nope\nlocal all all md5\n', 'f', noInclude);
    expect(r.errors.map((e) => e.line)).toEqual([2, 3]);
    expect(r.rules.map((x) => x.line)).toEqual([1, 4]);
  });

  it('hostssl with ssl off loads with a warning', () => {
    const r = parseHba('hostssl all all all md5', 'f', { ...noInclude, ssl: false });
    expect(r.errors).toEqual([]);
    expect(r.warnings).toEqual([
      { file: 'f', line: 1, message: 'hostssl record cannot match because SSL is disabled' },
    ]);
  });
});

describe('loadHba / reloadHba', () => {
  it('loads the fixture file with its includes', async () => {
    const rs = loadHba(join(FIX, 'pool_hba.conf'));
    expect(rs.map((r) => r.method)).toEqual(['trust', 'md5', 'scram-sha-256', 'password']);
    expect(rs[1]!.databases.map((t) => t.value)).toEqual(['db1', 'db2', 'db3']);
    expect(rs[1]!.users.map((t) => t.value)).toEqual(['alice', 'bob', 'carol']);
    expect(await which(rs, { address: '::ffff:127.0.0.1', database: 'db2', user: 'bob' })).toBe(3);
    expect(readFileSync(join(FIX, 'pool_hba.conf'), 'utf8')).toContain('@admins');
  });

  it('throws listing every bad line with file:line: reason', () => {
    const dir = tempDir('pgrelay-hba-');
    const p = join(dir, 'pool_hba.conf');
    writeFileSync(p, 'local all all trust\nhost all all 1.2.3.4/40 md5\nlocal all\n');
    let err: unknown;
    try {
      loadHba(p);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HbaLoadError);
    expect((err as Error).message).toBe(
      `invalid pool_hba.conf "${p}":\n${p}:2: invalid CIDR mask in address "1.2.3.4/40"\n${p}:3: end-of-line before role specification`,
    );
    writeFileSync(p, '# nothing\n');
    expect(() => loadHba(p)).toThrow(/contains no entries/);
  });

  it('a bad reload keeps the old rules', () => {
    const dir = tempDir('pgrelay-hba-');
    const p = join(dir, 'pool_hba.conf');
    writeFileSync(p, 'local all all trust\n');
    const first = reloadHba(p, []);
    expect(first.ok).toBe(true);
    writeFileSync(p, 'local all all bogus\n');
    const second = reloadHba(p, first.rules);
    expect(second.ok).toBe(false);
    expect(second.rules).toBe(first.rules);
    expect(second.errors).toEqual([{ file: p, line: 1, message: 'invalid authentication method "bogus"' }]);
  });
});

describe('rejection message', () => {
  it('matches pgpool', () => {
    expect(noEntryMessage({ local: false, ssl: false, address: '::ffff:10.1.2.3', user: 'bob', database: 'app' })).toBe(
      'no pool_hba.conf entry for host "10.1.2.3", user "bob", database "app", SSL off',
    );
    expect(noEntryMessage({ local: true, ssl: false, user: 'bob', database: 'app' })).toBe(
      'no pool_hba.conf entry for host "[local]", user "bob", database "app", SSL off',
    );
    expect(noEntryError({ local: false, ssl: true, address: '::1', user: 'u', database: 'd' })).toEqual({
      code: '28000',
      message: 'client authentication failed',
      detail: 'no pool_hba.conf entry for host "::1", user "u", database "d", SSL on',
      hint: 'see pgpool log for details',
    });
  });
});
