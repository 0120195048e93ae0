import { chmodSync, copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pgMd5Hash } from '../../src/auth/md5.js';
import {
  aesDecrypt,
  aesEncrypt,
  aesKeyIv,
  classifySecret,
  findKeyFile,
  parsePoolPasswd,
  PoolPasswd,
  readPoolKey,
  resolveConfigPassword,
  resolvePoolPasswdPath,
  upsertPoolPasswd,
} from '../../src/auth/passwd.js';
import { verifyScramPassword } from '../../src/auth/scram.js';
import { passwdCommand, pgEncOutput, pgMd5Output } from '../../src/auth/tools.js';
import { internalUserSecret, loadPoolPasswd, PoolPasswdCache } from '../../src/auth/credentials.js';
import { defaultConfig } from '../../src/config/defaults.js';
import { tempDir } from '../support/temp-dirs.js';

const FIX = join(import.meta.dirname, '../fixtures/auth');
const fix = (f: string): string => readFileSync(join(FIX, f), 'utf8');

function tmp(): string {
  return tempDir('pgrelay-passwd-');
}

/** The fixture key file copied with mode 0600 (git does not keep modes). */
function keyFile(dir: string, mode = 0o600): string {
  const p = join(dir, 'pgpoolkey');
  copyFileSync(join(FIX, 'pgpoolkey'), p);
  chmodSync(p, mode);
  return p;
}

describe('classification (get_password_type)', () => {
  it.each([
    [`md5${'a'.repeat(32)}`, 'md5'],
    ['md5abc', 'plain'],
    ['AESfx+mQgm6Kl9/Cop9bDx8cw==', 'aes'],
    ['TEXTsecret', 'text'],
    ['SCRAM-SHA-256$4096:c2FsdA==$a:b', 'scram'],
    ['hunter2', 'plain'],
  ])('%s -> %s', (s, k) => expect(classifySecret(s)).toBe(k));
});

describe('AES as pgpool', () => {
  it('derives key and IV with EVP_BytesToKey(sha1, no salt, count 1)', () => {
    const { key, iv } = aesKeyIv('secretkey');
    expect(key.length).toBe(32);
    expect(iv.length).toBe(16);
  });

  it('matches the pool_passwd example of pgpool documentation', () => {
    expect(aesEncrypt('pass', 'secretkey')).toBe('fx+mQgm6Kl9/Cop9bDx8cw==');
    expect(aesDecrypt('AESfx+mQgm6Kl9/Cop9bDx8cw==', 'secretkey')).toBe('pass');
  });

  it('round-trips, multi-block and non-ASCII', () => {
    for (const pw of ['', 'x', 'exactly16bytes!!', 'a much longer password, more than one AES block', 'pässwörd✓']) {
      expect(aesDecrypt(aesEncrypt(pw, 'k'), 'k')).toBe(pw);
    }
  });

  it('a wrong key fails', () => {
    expect(() => aesDecrypt(aesEncrypt('password', 'right'), 'wrong')).toThrow();
    expect(() => aesDecrypt('AES!!!', 'k')).toThrow(/base64/);
  });
});

describe('pg_md5 / pg_enc output, byte for byte', () => {
  const key = 'secretkey';
  for (let n = 0; n < 6; n++) {
    it(`case${n}`, () => {
      const pw = fix(`case${n}.password`);
      expect(pgMd5Output(pw)).toBe(fix(`case${n}.pg_md5.stdout`));
      expect(pgEncOutput(pw, key, 'pgpoolkey')).toBe(fix(`case${n}.pg_enc.stdout`));
    });
  }
  it('pg_enc -K (no key file line)', () => {
    expect(pgEncOutput('pass', key)).toBe(fix('pg_enc-K.pass.stdout'));
  });
});

describe('pool_passwd written by pg_md5 / pg_enc', () => {
  it('loads every entry and yields the right passwords', () => {
    const dir = tmp();
    const pp = new PoolPasswd(fix('pool_passwd'), { keyFile: keyFile(dir) });
    expect(pp.warnings).toEqual([]);
    expect(pp.entries.map((e) => [e.user, e.kind])).toEqual([
      ['alice', 'md5'],
      ['bob', 'md5'],
      ['carol', 'aes'],
      ['dave', 'aes'],
      ['erin', 'aes'],
    ]);
    expect(pp.getPasswordFor('alice')).toEqual({ kind: 'md5', hash: pgMd5Hash('alicepw', 'alice') });
    expect(pp.getPasswordFor('bob')).toEqual({ kind: 'md5', hash: pgMd5Hash('b0b p@ss:word', 'bob') });
    expect(pp.getPasswordFor('carol')).toEqual({ kind: 'plain', password: 'carolpw' });
    expect(pp.getPasswordFor('dave')).toEqual({
      kind: 'plain',
      password: 'a much longer password, more than one AES block',
    });
    expect(pp.getPasswordFor('erin')).toEqual({ kind: 'plain', password: 'pässwörd✓' });
    expect(pp.getPasswordFor('nobody')).toBeUndefined();
  });

  it('AES entries need the key; without it they are unusable with a warning', () => {
    const dir = tmp();
    const pp = new PoolPasswd(fix('pool_passwd'), { keyFile: join(dir, 'missing') });
    expect(pp.getPasswordFor('carol')).toBeUndefined();
    expect(pp.warnings.join('\n')).toMatch(/carol/);
    const wrong = new PoolPasswd(fix('pool_passwd'), { key: 'not-the-key' });
    expect(wrong.getPasswordFor('carol')).toBeUndefined();
  });

  it('update in place: same result as pg_md5 -m / pg_enc -m updating the file', () => {
    let text = fix('pool_passwd.before-update');
    text = upsertPoolPasswd(text, 'alice', pgMd5Hash('newalicepw', 'alice')).text;
    text = upsertPoolPasswd(text, 'bob', `AES${aesEncrypt('bobaes', 'secretkey')}`).text;
    expect(text).toBe(fix('pool_passwd.after-update'));
  });
});

describe('parsing', () => {
  it('handles TEXT, plain, SCRAM verifiers, escapes, mapping form, comments and CRLF', () => {
    const v =
      'SCRAM-SHA-256$4096:+S8iMhz6+b2jhlFG5/N08Q==$ImjKkQ1c8ujQGPUC0lCCJDGzVgfJK4A1OPvUp0LOZoo=:587cLupdBRcKkUUrMMlBzhZOzUr50/KAnjaWllzzoj0=';
    const text = [
      '# comment',
      '',
      't:TEXTsecret:x',
      'p:plainpw\r',
      `s:${v}`,
      `m:${v}:backend:TEXTbpw`,
      'esc\\:aped:pa\\:ss',
      'empty:',
      'empty:second',
      'dup:first',
      'dup:second',
      'nocolon',
    ].join('\n');
    const pp = new PoolPasswd(text);
    expect(pp.getPasswordFor('t')).toEqual({ kind: 'plain', password: 'secret' });
    expect(pp.getPasswordFor('p')).toEqual({ kind: 'plain', password: 'plainpw' });
    expect(pp.getPasswordFor('s')).toEqual({ kind: 'scram', verifier: v });
    expect(verifyScramPassword('pencil', (pp.getPasswordFor('s') as { verifier: string }).verifier)).toBe(true);
    expect(pp.getPasswordFor('m')).toEqual({ kind: 'scram', verifier: v });
    expect(pp.getBackendCredentials('m')).toEqual({ user: 'backend', password: { kind: 'plain', password: 'bpw' } });
    expect(pp.getPasswordFor('esc:aped')).toEqual({ kind: 'plain', password: 'pa:ss' });
    expect(pp.getPasswordFor('empty')).toEqual({ kind: 'plain', password: 'second' });
    expect(pp.getPasswordFor('dup')).toEqual({ kind: 'plain', password: 'first' });
    expect(pp.getPasswordFor('nocolon')).toBeUndefined();
    expect(parsePoolPasswd(text).find((e) => e.user === 'p')?.line).toBe(4);
  });

  it('upsert keeps other lines and appends new users', () => {
    const r = upsertPoolPasswd(`# keep\na:md5${'0'.repeat(32)}\nb:x`, 'c', 'TEXTa:b');
    expect(r).toEqual({ text: `# keep\na:md5${'0'.repeat(32)}\nb:x\nc:TEXTa\\:b\n`, updated: false });
    expect(new PoolPasswd(r.text).getPasswordFor('c')).toEqual({ kind: 'plain', password: 'a:b' });
    expect(upsertPoolPasswd('a:1\nb:2\n', 'a', 'TEXT3')).toEqual({ text: 'a:TEXT3\nb:2\n', updated: true });
    expect(upsertPoolPasswd('', 'a', 'TEXT3').text).toBe('a:TEXT3\n');
  });

  it('resolves pool_passwd relative to pgpool.conf', () => {
    expect(resolvePoolPasswdPath('/etc/pgpool2/pgpool.conf', 'pool_passwd')).toBe('/etc/pgpool2/pool_passwd');
    expect(resolvePoolPasswdPath('/etc/pgpool2/pgpool.conf', '/x/pp')).toBe('/x/pp');
    expect(resolvePoolPasswdPath('/etc/pgpool2/pgpool.conf', '')).toBeUndefined();
  });
});

describe('key file', () => {
  it('discovery order: explicit, $PGPOOLKEYFILE, ~/.pgpoolkey', () => {
    expect(findKeyFile({ keyFile: '/k', env: { PGPOOLKEYFILE: '/e' }, home: '/h' })).toBe('/k');
    expect(findKeyFile({ env: { PGPOOLKEYFILE: '/e' }, home: '/h' })).toBe('/e');
    expect(findKeyFile({ env: {}, home: '/h' })).toBe('/h/.pgpoolkey');
  });

  it('reads the first line; warns when mode is looser than 0600 (pgpool wording)', () => {
    const dir = tmp();
    const p = keyFile(dir);
    expect(readPoolKey(p)).toEqual({ key: 'secretkey', warnings: [] });
    chmodSync(p, 0o644);
    expect(readPoolKey(p)).toEqual({
      key: 'secretkey',
      warnings: [`pool key file "${p}" has group or world access; permissions should be u=rw (0600) or less`],
    });
    const p2 = join(dir, 'k2');
    writeFileSync(p2, 'line1key\nsecondline\n', { mode: 0o400 });
    expect(readPoolKey(p2).key).toBe('line1key');
    expect(readPoolKey(join(dir, 'nope')).key).toBeUndefined();
    expect(readPoolKey(dir).warnings[0]).toMatch(/is not a plain file/);
  });

  it('PoolPasswd reports the key file warning at load', () => {
    const dir = tmp();
    const pp = new PoolPasswd(fix('pool_passwd'), { keyFile: keyFile(dir, 0o640) });
    expect(pp.warnings[0]).toMatch(/has group or world access/);
    expect(pp.getPasswordFor('carol')).toEqual({ kind: 'plain', password: 'carolpw' });
  });
});

describe('health-check / sr-check passwords', () => {
  it('uses the configured value in any form, else pool_passwd', () => {
    const dir = tmp();
    const pp = new PoolPasswd(fix('pool_passwd'), { keyFile: keyFile(dir) });
    expect(resolveConfigPassword('carol', '', pp)).toEqual({ kind: 'plain', password: 'carolpw' });
    expect(resolveConfigPassword('alice', '', pp)).toEqual({ kind: 'md5', hash: pgMd5Hash('alicepw', 'alice') });
    expect(resolveConfigPassword('x', 'AESfx+mQgm6Kl9/Cop9bDx8cw==', pp)).toEqual({ kind: 'plain', password: 'pass' });
    expect(resolveConfigPassword('x', 'TEXTpw', pp)).toEqual({ kind: 'plain', password: 'pw' });
    expect(resolveConfigPassword('x', 'plainpw', undefined)).toEqual({ kind: 'plain', password: 'plainpw' });
    expect(resolveConfigPassword('x', `md5${'f'.repeat(32)}`, undefined)).toEqual({
      kind: 'md5',
      hash: `md5${'f'.repeat(32)}`,
    });
    expect(resolveConfigPassword('nobody', '', pp)).toBeUndefined();
    expect(resolveConfigPassword('x', 'AESfx+mQgm6Kl9/Cop9bDx8cw==', undefined, { key: 'secretkey' })).toEqual({
      kind: 'plain',
      password: 'pass',
    });
  });
});

describe('pool_passwd as the proxy and its checks load it', () => {
  const setup = () => {
    const dir = tmp();
    const passwd = join(dir, 'pool_passwd');
    copyFileSync(join(FIX, 'pool_passwd'), passwd);
    // Another key where pgpool looks without pool_key_file.
    const other = join(dir, 'otherkey');
    writeFileSync(other, 'not the key\n', { mode: 0o600 });
    const cfg = { ...defaultConfig(), pool_passwd: passwd, pool_key_file: keyFile(dir) };
    return { cfg, env: { PGPOOLKEYFILE: other } };
  };

  it('sessions, health checks and sr checks decrypt AES entries with pool_key_file', () => {
    const { cfg, env } = setup();
    const saved = process.env.PGPOOLKEYFILE;
    process.env.PGPOOLKEYFILE = env.PGPOOLKEYFILE;
    try {
      expect(loadPoolPasswd(cfg)?.getPasswordFor('carol')).toEqual({ kind: 'plain', password: 'carolpw' });
      const cache = new PoolPasswdCache();
      expect(internalUserSecret(cfg, 'carol', '', cache.get(cfg))).toEqual({ password: 'carolpw' });
      expect(internalUserSecret(cfg, 'x', 'AESfx+mQgm6Kl9/Cop9bDx8cw==', undefined)).toEqual({ password: 'pass' });
      expect(internalUserSecret(cfg, 'alice', '', cache.get(cfg))).toEqual({ md5Hash: pgMd5Hash('alicepw', 'alice') });
      expect(internalUserSecret(cfg, 'nobody', '', cache.get(cfg))).toEqual({});
    } finally {
      if (saved === undefined) delete process.env.PGPOOLKEYFILE;
      else process.env.PGPOOLKEYFILE = saved;
    }
  });

  it("pool_passwd = '' disables the file", () => {
    const { cfg } = setup();
    expect(loadPoolPasswd({ ...cfg, pool_passwd: '' })).toBeUndefined();
    expect(new PoolPasswdCache().get({ ...cfg, pool_passwd: '' })).toBeUndefined();
  });
});

describe('pgrelay passwd', () => {
  it('md5 / aes produce the same file as pg_md5 -m / pg_enc -m', () => {
    const dir = tmp();
    const conf = join(dir, 'pgpool.conf');
    writeFileSync(conf, "pool_passwd = 'pool_passwd'\n");
    const kf = keyFile(dir);
    const pw: Array<[string, string, 'md5' | 'aes']> = [
      ['alice', 'alicepw', 'md5'],
      ['bob', 'b0b p@ss:word', 'md5'],
      ['carol', 'carolpw', 'aes'],
      ['dave', 'a much longer password, more than one AES block', 'aes'],
      ['erin', 'pässwörd✓', 'aes'],
    ];
    for (const [user, password, method] of pw) {
      const r = passwdCommand({ configFile: conf, poolPasswdPath: 'pool_passwd', user, password, method, keyFile: kf });
      expect(r.message).toBe(method === 'aes' ? `trying to read key from file ${kf}\n` : '');
    }
    expect(readFileSync(join(dir, 'pool_passwd'), 'utf8')).toBe(fix('pool_passwd'));
    expect(statSync(join(dir, 'pool_passwd')).mode & 0o777).toBe(0o600);
    passwdCommand({
      configFile: conf,
      poolPasswdPath: 'pool_passwd',
      user: 'alice',
      password: 'newalicepw',
      method: 'md5',
    });
    passwdCommand({
      configFile: conf,
      poolPasswdPath: 'pool_passwd',
      user: 'bob',
      password: 'bobaes',
      method: 'aes',
      key: 'secretkey',
    });
    expect(readFileSync(join(dir, 'pool_passwd'), 'utf8')).toBe(fix('pool_passwd.after-update'));
  });

  it('scram and text', () => {
    const dir = tmp();
    const conf = join(dir, 'pgpool.conf');
    passwdCommand({ configFile: conf, poolPasswdPath: 'pp', user: 's', password: 'pencil', method: 'scram' });
    passwdCommand({ configFile: conf, poolPasswdPath: 'pp', user: 't', password: 'tpw', method: 'text' });
    const pp = PoolPasswd.load(join(dir, 'pp'));
    const s = pp.getPasswordFor('s');
    expect(s?.kind).toBe('scram');
    expect(verifyScramPassword('pencil', (s as { verifier: string }).verifier)).toBe(true);
    expect(pp.getPasswordFor('t')).toEqual({ kind: 'plain', password: 'tpw' });
  });

  it('errors: pool_passwd disabled, no key', () => {
    const dir = tmp();
    expect(() =>
      passwdCommand({ configFile: join(dir, 'c'), poolPasswdPath: '', user: 'u', password: 'p', method: 'md5' }),
    ).toThrow(/disabled/);
    expect(() =>
      passwdCommand({
        configFile: join(dir, 'c'),
        poolPasswdPath: 'pp',
        user: 'u',
        password: 'p',
        method: 'aes',
        keyFile: join(dir, 'nokey'),
      }),
    ).toThrow('encryption key not provided');
  });
});
