/**
 * What unauthenticated clients can make pgrelay do (issue 11, defect 3),
 * against a private DevCluster whose primary asks for SCRAM:
 *  - a refused client that keeps trickling bytes, and one that never finishes
 *    authenticating, are closed within authentication_timeout + 1 s.
 */
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DevCluster } from '../../dev/devcluster.js';
import { closeAllClients } from '../support/clients.js';
import { startProxy, type ConfValue, type ProxyHandle } from '../support/proxy.js';
import { closeAllRaw, message, startupMessage } from '../support/raw.js';

const SUPER_PW = 'preauth-sup3r';

let cluster: DevCluster;
let tmp: string;
const proxies: ProxyHandle[] = [];

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-preauth-'));
  cluster = await DevCluster.start({ standbys: 0, authMethod: 'scram-sha-256', superuserPassword: SUPER_PW });
  await cluster.psql(0, "CREATE ROLE alice LOGIN PASSWORD 'alicepw'");
}, 180_000);

afterEach(async () => {
  closeAllRaw();
  await closeAllClients();
});

afterAll(async () => {
  for (const p of proxies) await p.stop();
  await cluster?.stop();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

/** pgrelay in front of the private cluster, pool_hba off, alice and postgres in pool_passwd. */
async function proxyWith(config: Record<string, ConfValue>): Promise<ProxyHandle> {
  const dir = await fsp.mkdtemp(path.join(tmp, 'conf-'));
  const passwd = path.join(dir, 'pool_passwd');
  await fsp.writeFile(passwd, `alice:TEXTalicepw\npostgres:TEXT${SUPER_PW}\n`, { mode: 0o600 });
  const p = await startProxy({
    cluster,
    backends: [0],
    config: { pool_passwd: passwd, enable_pool_hba: false, num_init_children: 8, ...config },
  });
  proxies.push(p);
  return p;
}

/** What a trickling client does when bytes arrive: send a message, and/or start trickling. */
type Step = { send?: Buffer; trickle?: boolean };

/**
 * A client that sends `startup`, reacts to what arrives (`react`, called with every byte
 * received so far, once per chunk), and once told to, writes one byte every 500 ms. It keeps
 * its side open after pgrelay's FATAL (allowHalfOpen), so only pgrelay can end the
 * connection: resolves with the time from connect until pgrelay's side was gone (reset or
 * closed), or undefined if it was still open after 12 s.
 */
function trickler(
  port: number,
  startup: Buffer,
  react: (got: Buffer) => Step,
): Promise<{ closedAfterMs: number | undefined; got: Buffer }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let got = Buffer.alloc(0);
    let t0 = 0;
    let tick: NodeJS.Timeout | undefined;
    const finish = (closed: boolean): void => {
      clearInterval(tick);
      clearTimeout(limit);
      s.destroy();
      resolve({ closedAfterMs: closed ? Date.now() - t0 : undefined, got });
    };
    // Long enough to tell "closed at a deadline" from "held while bytes keep coming".
    const limit = setTimeout(() => finish(false), 12_000);
    s.on('connect', () => {
      t0 = Date.now();
      s.write(startup);
    });
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const step = react(got);
      if (step.send && s.writable) s.write(step.send);
      if (step.trickle && !tick)
        tick = setInterval(() => {
          if (!s.destroyed && s.writable) s.write(Buffer.from([0x70]));
        }, 500);
    });
    s.on('error', () => finish(true));
    s.on('close', () => finish(true));
  });
}

describe('authentication_timeout and refused clients: a fixed deadline', () => {
  const TIMEOUT_S = 3;
  let proxy: ProxyHandle;
  beforeAll(async () => {
    proxy = await proxyWith({ authentication_timeout: TIMEOUT_S });
  });

  const saslInitial = (clientFirst: string): Buffer => {
    const mech = Buffer.from('SCRAM-SHA-256\0');
    const len = Buffer.alloc(4);
    len.writeInt32BE(Buffer.byteLength(clientFirst));
    return message('p', Buffer.concat([mech, len, Buffer.from(clientFirst)]));
  };

  it('a refused start-up (unsupported protocol) that keeps sending bytes is closed within authentication_timeout + 1 s', async () => {
    const r = await trickler(proxy.port, startupMessage({ user: 'alice' }, 2 << 16), () => ({ trickle: true }));
    expect(r.got[0]).toBe(0x45); // 'E'
    expect(r.got.toString('latin1')).toContain('0A000');
    expect(r.closedAfterMs, 'still open after 12 s of trickling').toBeDefined();
    expect(r.closedAfterMs).toBeLessThanOrEqual((TIMEOUT_S + 1) * 1000);
  });

  it('a failed SCRAM proof that keeps sending bytes is closed within authentication_timeout + 1 s', async () => {
    let phase = 0;
    const r = await trickler(proxy.port, startupMessage({ user: 'alice', database: 'postgres' }), (got) => {
      const text = got.toString('latin1');
      if (phase === 0 && text.includes('SCRAM-SHA-256')) {
        phase = 1;
        return { send: saslInitial('n,,n=,r=trickle') };
      }
      const m = /r=(trickle[^,]+),s=[^,]+,i=\d+/.exec(text);
      if (phase === 1 && m) {
        phase = 2;
        const proof = Buffer.alloc(32, 7).toString('base64');
        return { send: message('p', Buffer.from(`c=biws,r=${m[1]},p=${proof}`)), trickle: true };
      }
      return {};
    });
    expect(r.got.toString('latin1')).toContain('28P01');
    expect(r.closedAfterMs, 'still open after 12 s of trickling').toBeDefined();
    expect(r.closedAfterMs).toBeLessThanOrEqual((TIMEOUT_S + 1) * 1000);
  });

  it('a client that never finishes authenticating, trickling a SASL message, is closed within authentication_timeout + 1 s', async () => {
    // A SASLInitialResponse announcing 1,000 bytes, then one byte every 500 ms: never complete.
    let sent = false;
    const r = await trickler(proxy.port, startupMessage({ user: 'alice', database: 'postgres' }), (got) => {
      if (sent || !got.includes('SCRAM-SHA-256')) return {};
      sent = true;
      return { send: Buffer.from([0x70, 0, 0, 0x03, 0xec]), trickle: true };
    });
    expect(r.got.toString('latin1')).toContain('57014');
    expect(r.closedAfterMs, 'still open after 12 s of trickling').toBeDefined();
    expect(r.closedAfterMs).toBeLessThanOrEqual((TIMEOUT_S + 1) * 1000);
  });
});
