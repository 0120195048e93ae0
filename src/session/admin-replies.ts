/**
 * Admin commands (SHOW pool_*, PGPOOL …) answered by pgrelay itself, in the simple
 * and the extended protocol, in order with the session's other replies: a reply is
 * written only once no backend owes the client one. The admin statements and portals
 * a client prepared live here; session.ts sends a message here when it names one.
 */
import type { AdminRequest } from '../admin/service.js';
import type { AdminResult } from '../admin/engine.js';
import {
  bindComplete,
  closeComplete,
  commandCompleteFor,
  encodeAdminResult,
  encodeRows,
  parseComplete,
  rowDescriptionFor,
} from '../admin/wire.js';
import { type CONSUME_AND_SUSPEND, DROP, type Drop, type Verdict } from '../protocol/framing.js';
import { readyForQuery } from '../protocol/messages.js';
import type { SessionCore } from './core.js';
import { STATEMENT } from './extended.js';

interface AdminPortal {
  req: AdminRequest;
  /** Run once, at the first Describe or Execute; rows are then read from it. */
  result?: AdminResult;
  /** Next row to send (Execute with a row limit). */
  next: number;
}

/** ParameterDescription with no parameters (Describe of an admin statement). */
const NO_PARAMS = Buffer.from([0x74, 0, 0, 0, 6, 0, 0]);

export class AdminReplies {
  private readonly statements = new Map<string, AdminRequest>();
  private readonly portals = new Map<string, AdminPortal>();
  /** An admin command of this session is running (a graceful detach does not wait for it). */
  running = false;

  constructor(private readonly s: SessionCore) {}

  hasStatement(name: string): boolean {
    return this.statements.size > 0 && this.statements.has(name);
  }

  hasPortal(name: string): boolean {
    return this.portals.size > 0 && this.portals.has(name);
  }

  /** An ordinary statement or portal took this name. */
  forgetStatement(name: string): void {
    if (this.statements.size > 0) this.statements.delete(name);
  }

  forgetPortal(name: string): void {
    if (this.portals.size > 0) this.portals.delete(name);
  }

  /** A Query that is an admin command: its result, then ReadyForQuery with the real transaction status. */
  query(req: AdminRequest): Verdict<never> {
    const s = this.s;
    if (!s.backends.gate(null)) return s.wait('replies');
    const verdict: typeof CONSUME_AND_SUSPEND = s.waitAfter('admin');
    void this.run(req).then((result) => {
      if (s.closed) return;
      s.writeClient(
        Buffer.concat([encodeAdminResult(result, { extended: false }), readyForQuery(s.backends.txStatus)]),
      );
      s.resume('admin');
    });
    return verdict;
  }

  parse(name: string, req: AdminRequest): Verdict<never> {
    const v = this.reply(parseComplete());
    if (v === DROP) this.statements.set(name, req);
    return v;
  }

  bind(portal: string, stmtName: string): Verdict<never> {
    const req = this.statements.get(stmtName) as AdminRequest;
    const v = this.reply(bindComplete());
    if (v === DROP) this.portals.set(portal, { req, next: 0 });
    return v;
  }

  describe(kind: number, name: string): Verdict<never> {
    if (kind === STATEMENT) {
      const req = this.statements.get(name) as AdminRequest;
      return this.replyLater(async () => Buffer.concat([NO_PARAMS, rowDescriptionFor(await this.run(req))]));
    }
    const portal = this.portals.get(name) as AdminPortal;
    return this.replyLater(async () => rowDescriptionFor(await this.resultOf(portal)));
  }

  execute(portalName: string, maxRows: number): Verdict<never> {
    const portal = this.portals.get(portalName) as AdminPortal;
    return this.replyLater(async () => {
      const result = await this.resultOf(portal);
      // As a server: after the ErrorResponse, everything up to Sync is skipped.
      if (result.kind === 'error') this.s.skipUntilSync();
      if (result.kind !== 'rows') return commandCompleteFor(result);
      const r = encodeRows(result, portal.next, maxRows);
      portal.next = r.next;
      return r.buf;
    });
  }

  close(kind: number, name: string): Verdict<never> {
    const v = this.reply(closeComplete());
    if (v === DROP) (kind === STATEMENT ? this.statements : this.portals).delete(name);
    return v;
  }

  private async run(req: AdminRequest): Promise<AdminResult> {
    this.running = true;
    try {
      return await req.run();
    } finally {
      this.running = false;
    }
  }

  private async resultOf(p: AdminPortal): Promise<AdminResult> {
    if (!p.result) p.result = await this.run(p.req);
    return p.result;
  }

  /** A reply known now. */
  private reply(bytes: Buffer): Drop | Verdict<never> {
    if (!this.s.backends.gate(null)) return this.s.wait('replies');
    this.s.writeClient(bytes);
    return DROP;
  }

  /** A reply that needs the command run first; the client waits for it. */
  private replyLater(make: () => Promise<Buffer>): Verdict<never> {
    const s = this.s;
    if (!s.backends.gate(null)) return s.wait('replies');
    const verdict: typeof CONSUME_AND_SUSPEND = s.waitAfter('admin');
    void make().then((bytes) => {
      if (s.closed) return;
      s.writeClient(bytes);
      s.resume('admin');
    });
    return verdict;
  }
}
