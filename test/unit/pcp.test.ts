import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AdminCommand } from '../../src/admin/commands.js';
import type { AdminResult } from '../../src/admin/result.js';
import { md5Hex } from '../../src/auth/md5.js';
import {
  atoi,
  bodyStrings,
  errorPacket,
  MAX_PCP_PACKET_LENGTH,
  PcpReader,
  parsePromoteBody,
  poolStatusArraySize,
  stringPacket,
} from '../../src/pcp/codec.js';
import { type PcpCommandDeps, PcpFatal, type PcpNode, runPcpCommand } from '../../src/pcp/commands.js';
import { authenticatePcp, expectedPcpResponse, parsePcpConf, pcpClientResponse } from '../../src/pcp/conf.js';

/** One packet as pgpool 4.3.5 sends it (captured from a real pgpool): type, length, NUL-separated fields. */
function decode(b: Buffer): Array<{ type: string; fields: string[] }> {
  const out: Array<{ type: string; fields: string[] }> = [];
  let i = 0;
  while (i < b.length) {
    const len = b.readInt32BE(i + 1);
    out.push({ type: String.fromCharCode(b[i]!), fields: bodyStrings(b.subarray(i + 5, i + 1 + len)) });
    i += 1 + len;
  }
  return out;
}

describe('PCP wire codec', () => {
  it('frames packets: type, length counting itself, body', () => {
    expect(stringPacket('r', 'AuthenticationOK')).toEqual(Buffer.from('r\0\0\0\x15AuthenticationOK\0', 'latin1'));
    expect(stringPacket('l', 'CommandComplete', '3')).toEqual(
      Buffer.from('l\0\0\0\x16CommandComplete\x003\0', 'latin1'),
    );
  });

  it('reads packets split anywhere and several in one chunk', () => {
    const r = new PcpReader();
    const bytes = Buffer.concat([Buffer.from('M\0\0\0\x04', 'latin1'), Buffer.from('I\0\0\0\x061\0', 'latin1')]);
    r.push(bytes.subarray(0, 3));
    expect(r.next()).toBeUndefined();
    r.push(bytes.subarray(3, 8));
    expect(r.next()).toEqual({ kind: 'packet', packet: { type: 'M', body: Buffer.alloc(0) } });
    expect(r.next()).toBeUndefined();
    r.push(bytes.subarray(8));
    expect(r.next()).toEqual({ kind: 'packet', packet: { type: 'I', body: Buffer.from('1\0') } });
  });

  it('rejects lengths pgpool rejects (< 4, >= MAX_PCP_PACKET_LENGTH)', () => {
    for (const len of [0, 3, -1, MAX_PCP_PACKET_LENGTH, 0x7fffffff]) {
      const r = new PcpReader();
      const b = Buffer.alloc(5);
      b.write('L', 0, 'latin1');
      b.writeInt32BE(len, 1);
      r.push(b);
      expect(r.next()).toEqual({ kind: 'bad_length', length: len });
    }
  });

  it('error packets carry S, C, M, D fields as pgpool', () => {
    const e = errorPacket({ severity: 'ERROR', message: 'informing node info failed', detail: 'invalid node ID : 7' });
    expect(decode(e)).toEqual([
      { type: 'E', fields: ['SERROR', 'CXX000', 'Minforming node info failed', 'Dinvalid node ID : 7', ''] },
    ]);
  });

  it("pool status ArraySize has a binary count; promote bodies are '<id> \\0' + s/n", () => {
    expect(poolStatusArraySize(32)).toEqual(Buffer.from('b\0\0\0\x12ArraySize\0\0\0\0 ', 'latin1'));
    expect(parsePromoteBody(Buffer.from('1 \0s', 'latin1'))).toEqual({ node: 1, switchover: true });
    expect(parsePromoteBody(Buffer.from('12 \0n', 'latin1'))).toEqual({ node: 12, switchover: false });
    expect(atoi('-1')).toBe(-1);
    expect(atoi('x')).toBe(0);
  });
});

describe('pcp.conf and the md5 challenge', () => {
  it('parses USER:MD5 lines, skips comments, names bad lines', () => {
    const r = parsePcpConf(`# USERID:MD5PASSWD\n\nadmin:${md5Hex('pw')}\nbroken\nplain:secret\n`, 'pcp.conf');
    expect(r.users.map((u) => u.user)).toEqual(['admin', 'plain']);
    expect(r.problems).toEqual([
      "pcp.conf:4: expected USER:MD5 (no ':' found)",
      'pcp.conf:5: the password of "plain" is not an md5 hash (use: pgrelay md5 PASSWORD)',
    ]);
  });

  it("accepts what libpcp computes from the password, refuses anything else with pgpool's messages", () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pcp-unit-'));
    const file = path.join(dir, 'pcp.conf');
    writeFileSync(file, `admin:${md5Hex('pw')}\n`);
    const salt = Buffer.from([1, 2, 3, 4]);
    // libpcp: md5(md5(md5(password) + user) + salt), hex, no prefix.
    const inner = md5Hex(`${md5Hex('pw')}admin`);
    expect(pcpClientResponse('admin', 'pw', salt)).toBe(md5Hex(Buffer.concat([Buffer.from(inner), salt])));
    expect(expectedPcpResponse({ user: 'admin', md5: md5Hex('pw') }, salt)).toBe(
      pcpClientResponse('admin', 'pw', salt),
    );
    expect(authenticatePcp(file, 'admin', pcpClientResponse('admin', 'pw', salt), salt)).toEqual({ ok: true });
    expect(authenticatePcp(file, 'admin', pcpClientResponse('admin', 'nope', salt), salt)).toEqual({
      ok: false,
      message: 'authentication failed for user "admin"',
      detail: 'username and/or password does not match',
    });
    expect(authenticatePcp(path.join(dir, 'none'), 'admin', 'x', salt)).toMatchObject({
      ok: false,
      message: 'failed to authenticate PCP user',
    });
  });
});

describe('PCP requests answered from the admin engine', () => {
  const nodes: PcpNode[] = [0, 1].map((id) => ({
    id,
    host: '127.0.0.1',
    port: 7000 + id,
    weight: 1,
    status: id === 0 ? 'up' : 'down',
    lastStatusChange: 1_796_471_835_000,
    delayBytes: id,
    replicationState: id === 0 ? '' : 'streaming',
    replicationSyncState: id === 0 ? '' : 'async',
  }));
  const ran: AdminCommand[] = [];
  const deps: PcpCommandDeps = {
    nodes: () => nodes,
    primaryId: () => 0,
    run: async (cmd): Promise<AdminResult> => {
      ran.push(cmd);
      if (cmd.kind === 'show' && cmd.target === 'pool_nodes')
        return {
          kind: 'rows',
          tag: 'SELECT 2',
          columns: ['node_id', 'pg_status', 'pg_role'],
          rows: [
            ['0', 'up', 'primary'],
            ['1', 'down', 'unknown'],
          ],
        };
      if (cmd.kind === 'attach_node' && cmd.node === 1)
        return { kind: 'error', error: { severity: 'ERROR', code: '55000', message: 'boom' } };
      return { kind: 'command', tag: 'OK' };
    },
  };
  const req = (type: string, body: string): Promise<Array<{ type: string; fields: string[] }>> =>
    runPcpCommand(type, Buffer.from(body, 'latin1'), 'admin', deps).then((r) => decode(Buffer.concat(r.packets)));

  it("node info: pgpool 4.3's 12 fields (status code, weight × RAND_MAX, role code, epoch seconds)", async () => {
    expect(await req('I', '-1\0')).toEqual([
      { type: 'i', fields: ['ArraySize', '2'] },
      {
        type: 'i',
        fields: [
          'NodeInfo',
          '127.0.0.1',
          '7000',
          '2',
          '0',
          'up',
          '1073741823.500000',
          '2',
          'primary',
          '0',
          '',
          '',
          '1796471835',
        ],
      },
      {
        type: 'i',
        fields: [
          'NodeInfo',
          '127.0.0.1',
          '7001',
          '3',
          '0',
          'down',
          '1073741823.500000',
          '3',
          'unknown',
          '1',
          'streaming',
          'async',
          '1796471835',
        ],
      },
      { type: 'i', fields: ['CommandComplete'] },
    ]);
    expect(await req('I', '5\0')).toEqual([
      { type: 'E', fields: ['SERROR', 'CXX000', 'Minforming node info failed', 'Dinvalid node ID : 5', ''] },
    ]);
  });

  it('operations run the admin commands; their errors become ERROR replies', async () => {
    ran.length = 0;
    expect(await req('D', '1\0')).toEqual([{ type: 'd', fields: ['CommandComplete'] }]);
    expect(await req('d', '0\0')).toEqual([{ type: 'd', fields: ['CommandComplete'] }]);
    expect((await req('C', '1\0'))[0]).toMatchObject({
      type: 'E',
      fields: ['SERROR', 'CXX000', 'Mattach node failed', 'Dboom', ''],
    });
    expect(await req('J', '1 \0s')).toEqual([{ type: 'd', fields: ['CommandComplete'] }]);
    expect(await req('j', '1 \0n')).toEqual([{ type: 'd', fields: ['CommandComplete'] }]);
    expect(await req('Z', 'l')).toEqual([{ type: 'z', fields: ['CommandComplete'] }]);
    expect(await req('O', '1\0')).toEqual([{ type: 'c', fields: ['CommandComplete'] }]);
    expect(ran).toEqual([
      { kind: 'detach_node', node: 1, gracefully: false },
      { kind: 'detach_node', node: 0, gracefully: true },
      { kind: 'attach_node', node: 1 },
      { kind: 'promote_node', node: 1, switchover: true, gracefully: false },
      { kind: 'promote_node', node: 1, switchover: false, gracefully: true },
      { kind: 'reload' },
      { kind: 'recovery_node', node: 1 },
    ]);
    await expect(runPcpCommand('J', Buffer.from('0 \0n', 'latin1'), 'admin', deps)).rejects.toBeInstanceOf(PcpFatal);
    await expect(runPcpCommand('?', Buffer.alloc(0), 'admin', deps)).rejects.toThrow(/PCP processing request/);
    expect((await req('T', 'x'))[0]!.fields[3]).toBe('Dinvalid shutdown mode "x"');
    expect((await req('W', '-1\0'))[0]!.fields.slice(2, 4)).toEqual([
      'MPCP: informing watchdog info failed',
      'Dwatchdog is not enabled',
    ]);
  });
});
