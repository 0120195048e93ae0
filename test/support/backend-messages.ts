/**
 * Byte-level builders of backend (server → client) messages, for unit tests that
 * feed reply streams to pgrelay's reply queue without a PostgreSQL server.
 */
import {
  commandComplete,
  dataRow,
  errorResponse,
  noticeResponse,
  parameterStatus,
  readyForQuery,
  rowDescription,
} from '../../src/protocol/messages.js';

function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(5);
  h[0] = type.charCodeAt(0);
  h.writeUInt32BE(4 + body.length, 1);
  return Buffer.concat([h, body]);
}

function int16s(...values: number[]): Buffer {
  const b = Buffer.alloc(2 * values.length);
  for (let i = 0; i < values.length; i++) b.writeInt16BE(values[i], 2 * i);
  return b;
}

export const be = {
  parseComplete: (): Buffer => message('1'),
  bindComplete: (): Buffer => message('2'),
  closeComplete: (): Buffer => message('3'),
  noData: (): Buffer => message('n'),
  portalSuspended: (): Buffer => message('s'),
  emptyQuery: (): Buffer => message('I'),
  /** ParameterDescription with `n` parameters of type text. */
  parameterDescription: (n: number): Buffer => {
    const b = Buffer.alloc(2 + 4 * n);
    b.writeInt16BE(n, 0);
    for (let i = 0; i < n; i++) b.writeInt32BE(25, 2 + 4 * i);
    return message('t', b);
  },
  rowDescription: (...columns: string[]): Buffer => rowDescription(columns),
  dataRow: (...values: Array<string | null>): Buffer => dataRow(values),
  commandComplete: (tag: string): Buffer => commandComplete(tag),
  ready: (status: 'I' | 'T' | 'E'): Buffer => readyForQuery(status.charCodeAt(0)),
  error: (code: string, message: string, severity: 'ERROR' | 'FATAL' = 'ERROR'): Buffer =>
    errorResponse({ severity, code, message }),
  notice: (code: string, message: string): Buffer => noticeResponse({ severity: 'WARNING', code, message }),
  parameterStatus: (name: string, value: string): Buffer => parameterStatus(name, value),
  /** CopyInResponse, text format, `columns` columns. */
  copyInResponse: (columns: number): Buffer =>
    message('G', Buffer.concat([Buffer.from([0]), int16s(columns, ...new Array<number>(columns).fill(0))])),
  notification: (pid: number, channel: string, payload: string): Buffer => {
    const p = Buffer.alloc(4);
    p.writeInt32BE(pid, 0);
    return message('A', Buffer.concat([p, Buffer.from(`${channel}\0${payload}\0`)]));
  },
};

/** A reply stream: the messages in order, as one buffer. */
export function stream(...messages: Buffer[]): Buffer {
  return Buffer.concat(messages);
}
