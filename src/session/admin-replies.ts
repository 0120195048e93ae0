/**
 * Admin commands (SHOW pool_*, PGPOOL …) answered by pgrelay itself, in the simple
 * and the extended protocol, in order with the session's other replies: a reply is
 * written only once no backend owes the client one. The admin statements and portals
 * a client prepared live here; session.ts sends a message here when it names one.
 * (The DEALLOCATE of a statement the client prepared with Parse is answered here too:
 * extended.ts ownDeallocate.)
 *
 * A Parse, Bind and Describe of these statements are answered as PostgreSQL answers
 * them: the parameter types a Parse declares must be known (42P18), a Bind must supply
 * that many parameters (08P01), a Describe of the statement lists them; a name taken
 * gets 42P05.
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
import { SQLSTATE } from '../protocol/constants.js';
import { type ErrorFields, errorResponse, readyForQuery } from '../protocol/messages.js';
import type { SessionCore } from './core.js';
import { IN_FAILED_TRANSACTION, STATEMENT } from './extended.js';

interface AdminStatement {
  req: AdminRequest;
  /** The parameter types its Parse declared. */
  paramTypes: readonly number[];
}

interface AdminPortal {
  req: AdminRequest;
  /** Run once, at the first Describe or Execute; rows are then read from it. */
  result?: AdminResult;
  /** Next row to send (Execute with a row limit). */
  next: number;
}

/** Type OID `unknown`: a parameter declared so is not determined (as 0). */
const UNKNOWN_OID = 705;

/** ParameterDescription of `types`. */
function parameterDescription(types: readonly number[]): Buffer {
  const b = Buffer.allocUnsafe(7 + 4 * types.length);
  b[0] = 0x74;
  b.writeInt32BE(6 + 4 * types.length, 1);
  b.writeInt16BE(types.length, 5);
  for (let i = 0; i < types.length; i++) b.writeUInt32BE(types[i], 7 + 4 * i);
  return b;
}

/** What a statement that returns no rows describes (NoData). */
const NO_ROWS: AdminResult = { kind: 'command', tag: '' };

/** What PostgreSQL answers a Parse of a statement that takes no parameters of its own, if not ParseComplete. */
function parseError(name: string, paramTypes: readonly number[], taken: boolean): ErrorFields | undefined {
  if (taken && name !== '')
    return {
      severity: 'ERROR',
      code: SQLSTATE.duplicatePreparedStatement,
      message: `prepared statement "${name}" already exists`,
    };
  const i = paramTypes.findIndex((t) => t === 0 || t === UNKNOWN_OID);
  if (i < 0) return undefined;
  return {
    severity: 'ERROR',
    code: SQLSTATE.indeterminateDatatype,
    message: `could not determine data type of parameter $${i + 1}`,
  };
}

export class AdminReplies {
  private readonly statements = new Map<string, AdminStatement>();
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

  /**
   * A Parse of `req` declaring `paramTypes`; `taken`: the name is a statement of the
   * client's already (an unnamed Parse replaces the unnamed statement).
   */
  parse(name: string, req: AdminRequest, paramTypes: readonly number[], taken: boolean): Verdict<never> {
    const error = parseError(name, paramTypes, taken);
    const v = error ? this.error(error) : this.reply(parseComplete());
    if (v !== DROP) return v;
    // A failed unnamed Parse leaves no unnamed statement (PostgreSQL drops it first).
    if (name === '') this.statements.delete('');
    if (!error) this.statements.set(name, { req, paramTypes });
    return v;
  }

  /** A Bind of statement `stmtName` with `counts` (bindCounts), checked as PostgreSQL checks them. */
  bind(portal: string, stmtName: string, counts: { formats: number; params: number }): Verdict<never> {
    const st = this.statements.get(stmtName) as AdminStatement;
    if (counts.formats > 1 && counts.formats !== counts.params)
      return this.error({
        severity: 'ERROR',
        code: SQLSTATE.protocolViolation,
        message: `bind message has ${counts.formats} parameter formats but ${counts.params} parameters`,
      });
    if (counts.params !== st.paramTypes.length)
      return this.error({
        severity: 'ERROR',
        code: SQLSTATE.protocolViolation,
        message: `bind message supplies ${counts.params} parameters, but prepared statement "${stmtName}" requires ${st.paramTypes.length}`,
      });
    if (st.req.refusedWhenAborted === true && this.s.routing.failed) return this.error(IN_FAILED_TRANSACTION);
    const v = this.reply(bindComplete());
    if (v === DROP) this.portals.set(portal, { req: st.req, next: 0 });
    return v;
  }

  describe(kind: number, name: string): Verdict<never> {
    if (kind === STATEMENT) {
      const st = this.statements.get(name) as AdminStatement;
      const params = parameterDescription(st.paramTypes);
      if (st.req.noRows === true) return this.reply(Buffer.concat([params, rowDescriptionFor(NO_ROWS)]));
      return this.replyLater(async () => Buffer.concat([params, rowDescriptionFor(await this.run(st.req))]));
    }
    const portal = this.portals.get(name) as AdminPortal;
    if (portal.req.noRows === true) return this.reply(rowDescriptionFor(NO_ROWS));
    return this.replyLater(async () => rowDescriptionFor(await this.resultOf(portal)));
  }

  execute(portalName: string, maxRows: number): Verdict<never> {
    const portal = this.portals.get(portalName) as AdminPortal;
    if (portal.req.refusedWhenAborted === true && this.s.routing.failed) return this.error(IN_FAILED_TRANSACTION);
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

  /** An error known now: the client's messages are skipped up to Sync, as PostgreSQL skips them. */
  private error(fields: ErrorFields): Drop | Verdict<never> {
    const v = this.reply(errorResponse(fields));
    if (v === DROP) this.s.skipUntilSync();
    return v;
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
