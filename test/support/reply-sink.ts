/**
 * A ReplyOutput for unit tests of the reply queue (src/session/replies.ts): records
 * what reaches the client and the asynchronous messages; `feed` gives it backend bytes.
 */
import { TxStatus } from '../../src/protocol/constants.js';
import { type BackendState, type ErrorFieldMap, type ReplyOutput, ReplyQueue } from '../../src/session/replies.js';

export class ReplySink implements ReplyOutput {
  readonly client: Buffer[] = [];
  readonly async: Buffer[] = [];
  readonly state: BackendState = { txStatus: TxStatus.Idle, params: new Map() };
  readonly q = new ReplyQueue<string>(this, this.state);
  toClient(bytes: Buffer): void {
    this.client.push(Buffer.from(bytes));
  }
  error(_f: ErrorFieldMap): void {}
  fatalError(_f: ErrorFieldMap): void {}
  asyncMessage(b: Buffer): void {
    this.async.push(Buffer.from(b));
  }
  broken(message: string): void {
    throw new Error(message);
  }
  skipsUntilSync(): void {}
  mustFlush(): void {}
  tellClient(_name: string, value: string): string {
    return value;
  }
  feed(bytes: Buffer): void {
    this.q.push(bytes);
    this.q.runFinished('link');
  }
  /** Everything the client received. */
  get sent(): Buffer {
    return Buffer.concat(this.client);
  }
}
