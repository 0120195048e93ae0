import { describe, it, expect } from 'vitest';
import {
  DROP,
  MessageScanner,
  SUSPEND,
  type Verdict,
  decodeTable,
  type FrameSink,
} from '../../src/protocol/framing.js';
import { bindParameterIntegers, bindParameterTexts } from '../../src/protocol/messages.js';

function msg(type: string, body: string | Buffer): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const h = Buffer.alloc(5);
  h[0] = type.charCodeAt(0);
  h.writeUInt32BE(4 + b.length, 1);
  return Buffer.concat([h, b]);
}

class Recorder implements FrameSink<number> {
  passAction = 1;
  out: Buffer[] = [];
  emits = 0;
  decoded: string[] = [];
  errors: string[] = [];
  decide: (type: string, body: string) => Verdict<number> = () => 1;
  onMessage(type: number, buf: Buffer, s: number, e: number): Verdict<number> {
    const t = String.fromCharCode(type);
    const body = buf.toString('latin1', s, e);
    const a = this.decide(t, body);
    if (a !== SUSPEND) this.decoded.push(`${t}:${body}`);
    return a;
  }
  emit(_a: number, bytes: Buffer): void {
    this.emits++;
    this.out.push(Buffer.from(bytes));
  }
  onFramingError(m: string): void {
    this.errors.push(m);
  }
  get all(): Buffer {
    return Buffer.concat(this.out);
  }
}

const stream = Buffer.concat([
  msg('D', 'row-1'),
  msg('Z', 'I'),
  msg('D', 'x'.repeat(1000)),
  msg('C', 'SELECT 1'),
  msg('Z', 'T'),
]);

describe('MessageScanner', () => {
  it('forwards a whole chunk in one emit and decodes only flagged types', () => {
    const r = new Recorder();
    const sc = new MessageScanner(r, decodeTable('Z'), 1 << 20);
    sc.push(stream);
    expect(r.emits).toBe(1);
    expect(r.all.equals(stream)).toBe(true);
    expect(r.decoded).toEqual(['Z:I', 'Z:T']);
  });

  it('gives the same result for every split of the stream', () => {
    for (let i = 1; i < stream.length; i++) {
      for (const j of [i + 1, i + 3, i + 7, stream.length]) {
        if (j > stream.length) continue;
        const r = new Recorder();
        const sc = new MessageScanner(r, decodeTable('Z'), 1 << 20);
        sc.push(stream.subarray(0, i));
        sc.push(stream.subarray(i, j));
        sc.push(stream.subarray(j));
        expect(r.all.equals(stream)).toBe(true);
        expect(r.decoded).toEqual(['Z:I', 'Z:T']);
      }
    }
  });

  it('byte-by-byte feeding still frames correctly', () => {
    const r = new Recorder();
    const sc = new MessageScanner(r, decodeTable('ZC'), 1 << 20);
    for (let i = 0; i < stream.length; i++) sc.push(stream.subarray(i, i + 1));
    expect(r.all.equals(stream)).toBe(true);
    expect(r.decoded).toEqual(['Z:I', 'C:SELECT 1', 'Z:T']);
  });

  it('drops messages whose action is DROP', () => {
    const r = new Recorder();
    r.decide = (t) => (t === 'Z' ? DROP : 1);
    const sc = new MessageScanner(r, decodeTable('Z'), 1 << 20);
    sc.push(stream);
    expect(r.all.equals(Buffer.concat([msg('D', 'row-1'), msg('D', 'x'.repeat(1000)), msg('C', 'SELECT 1')]))).toBe(
      true,
    );
  });

  it('suspends before a message and resumes in order', () => {
    const r = new Recorder();
    let hold = true;
    r.decide = (t) => (t === 'Z' && hold ? SUSPEND : 1);
    const sc = new MessageScanner(r, decodeTable('Z'), 1 << 20);
    expect(sc.push(stream)).toBe(false);
    expect(r.all.equals(msg('D', 'row-1'))).toBe(true);
    hold = false;
    expect(sc.resume()).toBe(true);
    expect(r.all.equals(stream)).toBe(true);
  });

  it('suspends on a message assembled across chunks', () => {
    const r = new Recorder();
    let hold = true;
    r.decide = (t) => (t === 'C' && hold ? SUSPEND : 1);
    const sc = new MessageScanner(r, decodeTable('C'), 1 << 20);
    const cut = stream.indexOf(Buffer.from('SELECT 1')) + 3;
    sc.push(stream.subarray(0, cut));
    expect(sc.push(stream.subarray(cut))).toBe(false);
    hold = false;
    sc.resume();
    expect(r.all.equals(stream)).toBe(true);
  });

  it('reports a lying length and an oversized message', () => {
    const r = new Recorder();
    const sc = new MessageScanner(r, decodeTable('Z'), 100);
    const bad = Buffer.from([0x51, 0, 0, 0, 2]);
    sc.push(bad);
    expect(r.errors[0]).toMatch(/invalid message length 2/);
    const r2 = new Recorder();
    const sc2 = new MessageScanner(r2, decodeTable('Z'), 100);
    sc2.push(msg('d', 'y'.repeat(200)));
    expect(r2.errors[0]).toMatch(/exceeds the maximum of 100/);
  });
});

describe('bindParameterTexts (the values routing reads at Bind)', () => {
  /** A Bind body: portal, statement, format codes, parameters (null = NULL), no result formats. */
  const bind = (formats: number[], params: Array<string | null>): Buffer => {
    const parts: Buffer[] = [Buffer.from('p\0s\0')];
    const i16 = (n: number): Buffer => {
      const b = Buffer.alloc(2);
      b.writeInt16BE(n);
      return b;
    };
    const i32 = (n: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeInt32BE(n);
      return b;
    };
    parts.push(i16(formats.length), ...formats.map(i16), i16(params.length));
    for (const p of params) parts.push(...(p === null ? [i32(-1)] : [i32(Buffer.byteLength(p)), Buffer.from(p)]));
    parts.push(i16(0));
    return Buffer.concat(parts);
  };
  it('returns the values of the parameters asked for, in order, text or binary format; NULLs left out', () => {
    const b = bind([0], ['transaction_read_only', 'x', null, 'in_hot_standby']);
    expect(bindParameterTexts(b, 0, b.length, [1])).toEqual(['transaction_read_only']);
    expect(bindParameterTexts(b, 0, b.length, [3, 4, 2])).toEqual(['x', 'in_hot_standby']);
    const bin = bind([1, 1], ['work_mem', 'é']);
    expect(bindParameterTexts(bin, 0, bin.length, [1, 2])).toEqual(['work_mem', 'é']);
  });
  it('bindParameterIntegers: text integers, binary int2/int4/int8; other values left out', () => {
    const t = bind([0], ['4711', ' -3 ', 'x', null, '1.5']);
    expect(bindParameterIntegers(t, 0, t.length, [1, 2, 3, 4, 5])).toEqual([4711, -3]);
    const b2 = Buffer.alloc(2);
    b2.writeInt16BE(7);
    const b4 = Buffer.alloc(4);
    b4.writeInt32BE(123456);
    const b8 = Buffer.alloc(8);
    b8.writeBigInt64BE(99n);
    // Binary values (format 1 for all): the body built byte by byte.
    const exact = Buffer.concat([
      Buffer.from('p\0s\0'),
      Buffer.from([0, 1, 0, 1, 0, 3]),
      Buffer.from([0, 0, 0, 2]),
      b2,
      Buffer.from([0, 0, 0, 4]),
      b4,
      Buffer.from([0, 0, 0, 8]),
      b8,
      Buffer.from([0, 0]),
    ]);
    expect(bindParameterIntegers(exact, 0, exact.length, [1, 2, 3])).toEqual([7, 123456, 99]);
    const mixed = bind([0, 1], ['42', 'abc']);
    expect(bindParameterIntegers(mixed, 0, mixed.length, [1, 2])).toEqual([42]);
  });
  it('a truncated or malformed body yields what could be read', () => {
    const b = bind([], ['abc', 'def']);
    expect(bindParameterTexts(b, 0, b.length - 4, [1, 2])).toEqual(['abc']);
    expect(bindParameterTexts(Buffer.from('p'), 0, 1, [1])).toEqual([]);
  });
});
