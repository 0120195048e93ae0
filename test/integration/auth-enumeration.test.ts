/**
 * No user enumeration (issue 11, defect 4), against a private DevCluster whose
 * primary asks md5 of the md5_* users and SCRAM of everyone else:
 *  - for an unknown user, a user PostgreSQL knows but pool_passwd does not, and a
 *    wrong password, a client sees the same exchange and the same error bytes
 *    (user name aside), with pool_hba off (the primary's method relayed) and on,
 *    in md5 and in SCRAM; and the fields PostgreSQL itself sends for the same cases;
 *  - the SCRAM salt of a TEXT entry is the same on every attempt, and an unknown
 *    user's is stable within one pgrelay but differs between two (a key made at
 *    start-up), with the same iteration count as a TEXT entry's.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { startProxy, type ProxyHandle } from '../support/proxy.js';
import { type BackendMessage, RawClient, closeAllRaw, errorFields, message, startupMessage } from '../support/raw.js';

const SUPER_PW = 'enum-sup3r';

let cluster: DevCluster;
let tmp: string;
let relay: ProxyHandle;
let relay2: ProxyHandle;
let hba: ProxyHandle;

/** What a client saw of one failed login: each message (auth requests by code), and the error's fields. */
interface Seen {
  steps: string[];
  error: Buffer;
  fields: Record<string, string>;
  /** SCRAM server-first-message. */
  serverFirst?: string;
}

function md5hex(s: string): string {
  return createHash('md5').update(s).digest('hex');
}

/** Log in as `user` with a wrong password (md5 or SCRAM, as the server asks) and record what came back. */
async function failLogin(port: number, user: string): Promise<Seen> {
  const c = await RawClient.connect(port);
  try {
    c.send(startupMessage({ user, database: 'postgres' }));
    const steps: string[] = [];
    let serverFirst: string | undefined;
    for (;;) {
      const m = (await c.next(15_000)) as BackendMessage;
      expect(m, `connection closed early for ${user}`).toBeDefined();
      if (m.type === 'E') {
        steps.push('E');
        const fields = errorFields(m.body);
        return { steps, error: m.body, fields, serverFirst };
      }
      expect(m.type).toBe('R');
      const code = m.body.readInt32BE(0);
      steps.push(`R${code}`);
      if (code === 5) {
        const salt = m.body.subarray(4, 8);
        const inner = md5hex(`wrong-password${user}`);
        const outer = md5hex(Buffer.concat([Buffer.from(inner), salt]).toString('latin1'));
        c.send(message('p', Buffer.from(`md5${outer}\0`)));
      } else if (code === 10) {
        const first = Buffer.from('n,,n=,r=enumnonce');
        const len = Buffer.alloc(4);
        len.writeInt32BE(first.length);
        c.send(message('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), len, first])));
      } else if (code === 11) {
        serverFirst = m.body.toString('utf8', 4);
        const nonce = /^r=([^,]+)/.exec(serverFirst)?.[1];
        const proof = Buffer.alloc(32, 1).toString('base64');
        c.send(message('p', Buffer.from(`c=biws,r=${nonce},p=${proof}`)));
      } else {
        throw new Error(`unexpected authentication request ${code} for ${user}`);
      }
    }
  } finally {
    c.destroy();
  }
}

/** The error body with the user name replaced, so that two users' errors compare byte for byte. */
function normalized(s: Seen, user: string): string {
  return s.error.toString('latin1').split(`"${user}"`).join('"USER"');
}

/** SCRAM salt and iteration count offered to `user`. */
async function saltOf(port: number, user: string): Promise<{ salt: string; iterations: string }> {
  const s = await failLogin(port, user);
  const m = /,s=([^,]+),i=(\d+)/.exec(s.serverFirst ?? '');
  expect(m, `no server-first-message for ${user}: ${s.steps.join(' ')}`).not.toBeNull();
  return { salt: m?.[1] as string, iterations: m?.[2] as string };
}

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-enum-'));
  // password_encryption = md5: PostgreSQL's mock exchange for an unknown user on an md5 line is then
  // md5 too (it follows password_encryption), so PostgreSQL itself does not tell md5_ghost apart.
  cluster = await DevCluster.start({
    standbys: 0,
    authMethod: 'scram-sha-256',
    superuserPassword: SUPER_PW,
    extraConf: { password_encryption: 'md5' },
  });
  await cluster.psql(
    0,
    `SET password_encryption = 'scram-sha-256';
     CREATE ROLE alice LOGIN PASSWORD 'alicepw'; CREATE ROLE dave LOGIN PASSWORD 'davepw';
     SET password_encryption = 'md5';
     CREATE ROLE md5_alice LOGIN PASSWORD 'md5pw'; CREATE ROLE md5_dave LOGIN PASSWORD 'md5davepw';`,
  );
  // The primary asks md5 of the md5_* users (unknown md5_ghost included), SCRAM of the others.
  const hbaFile = path.join(cluster.node(0).dataDir, 'pg_hba.conf');
  const text = fs.readFileSync(hbaFile, 'utf8');
  fs.writeFileSync(hbaFile, `host all md5_alice,md5_dave,md5_ghost 127.0.0.1/32 md5\n${text}`);
  await cluster.psql(0, 'SELECT pg_reload_conf()');
  const rules = await cluster.psql(
    0,
    "SELECT count(*) FROM pg_hba_file_rules WHERE 'md5_ghost' = ANY(user_name) AND auth_method = 'md5'",
  );
  expect(rules.trim()).toBe('1');

  const passwd = path.join(tmp, 'pool_passwd');
  // alice: TEXT; md5_alice: an md5 hash; dave and md5_dave exist in PostgreSQL only.
  await fsp.writeFile(passwd, `alice:TEXTalicepw\nmd5_alice:md5${md5hex('md5pwmd5_alice')}\n`, { mode: 0o600 });
  const hbaConf = path.join(tmp, 'pool_hba.conf');
  await fsp.writeFile(
    hbaConf,
    'host all md5_alice,md5_dave,md5_ghost 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 scram-sha-256\n',
  );
  const base = { pool_passwd: passwd, hba_file: hbaConf, num_init_children: 4 };
  relay = await startProxy({ cluster, backends: [0], config: { ...base, enable_pool_hba: false } });
  relay2 = await startProxy({ cluster, backends: [0], config: { ...base, enable_pool_hba: false } });
  hba = await startProxy({ cluster, backends: [0], config: { ...base, enable_pool_hba: true } });
}, 180_000);

afterEach(() => closeAllRaw());

afterAll(async () => {
  for (const p of [relay, relay2, hba]) await p?.stop();
  await cluster?.stop();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

describe.each([
  ['pool_hba off (the primary asks)', () => relay],
  ['pool_hba on', () => hba],
])('%s: unknown user, no pool_passwd entry and wrong password look alike', (_name, proxyOf) => {
  it.each([
    ['SCRAM', 'alice', 'ghost', 'dave', ['R10', 'R11', 'E']],
    ['md5', 'md5_alice', 'md5_ghost', 'md5_dave', ['R5', 'E']],
  ])('%s: same exchange, same error bytes, as PostgreSQL', async (_method, known, unknown, noEntry, steps) => {
    const port = proxyOf().port;
    const wrong = await failLogin(port, known);
    const ghost = await failLogin(port, unknown);
    const missing = await failLogin(port, noEntry);
    for (const s of [wrong, ghost, missing]) expect(s.steps).toEqual(steps);
    expect(normalized(ghost, unknown)).toBe(normalized(wrong, known));
    expect(normalized(missing, noEntry)).toBe(normalized(wrong, known));
    // What PostgreSQL itself says for a wrong password and an unknown user (it adds F/L/R source fields).
    const pgWrong = await failLogin(cluster.node(0).port, known);
    const pgGhost = await failLogin(cluster.node(0).port, unknown);
    expect(pgGhost.steps).toEqual(steps);
    const visible = (f: Record<string, string>): Record<string, string | undefined> => ({
      S: f.S,
      V: f.V,
      C: f.C,
      M: f.M,
      D: f.D,
      H: f.H,
    });
    expect(visible(wrong.fields)).toEqual(visible(pgWrong.fields));
    expect(visible(ghost.fields)).toEqual(visible(pgGhost.fields));
    expect(wrong.fields).toMatchObject({
      S: 'FATAL',
      C: '28P01',
      M: `password authentication failed for user "${known}"`,
    });
    expect(wrong.fields.D).toBeUndefined();
  });
});

describe('SCRAM salts', () => {
  it('a TEXT entry gets the same salt every time; an unknown user a stable one, different in another pgrelay', async () => {
    const a1 = await saltOf(relay.port, 'alice');
    const a2 = await saltOf(relay.port, 'alice');
    expect(a2).toEqual(a1);
    const g1 = await saltOf(relay.port, 'ghost');
    const g2 = await saltOf(relay.port, 'ghost');
    expect(g2).toEqual(g1);
    // Nothing in the offer tells a TEXT entry from no entry.
    expect(g1.iterations).toBe(a1.iterations);
    expect(Buffer.from(g1.salt, 'base64').length).toBe(Buffer.from(a1.salt, 'base64').length);
    const other = await saltOf(relay2.port, 'ghost');
    expect(other.salt).not.toBe(g1.salt);
    expect((await saltOf(relay2.port, 'ghost')).salt).toBe(other.salt);
  });
});
