/**
 * The session of an admin user while no backend can be reached (no primary is known
 * or it does not answer): pgrelay answers the admin commands itself — SHOW pool_nodes,
 * PGPOOL ATTACH/DETACH/PROMOTE NODE, RELOAD, STOP — so that an operator can always get
 * in and repair the cluster's state; anything else gets 57P03. Simple and extended
 * protocol, as in an ordinary session; an error in the extended protocol skips the
 * rest of the pipeline up to Sync, as PostgreSQL does (the session drops those messages
 * before they reach this mode).
 */
import { FE, SQLSTATE, TxStatus } from '../protocol/constants.js';
import { DROP, type Verdict } from '../protocol/framing.js';
import {
  PgError,
  bindCounts,
  errorResponse,
  parseParamTypes,
  readCString,
  readyForQuery,
} from '../protocol/messages.js';
import { closeComplete } from '../admin/wire.js';
import type { AdminReplies } from './admin-replies.js';
import type { SessionCore } from './core.js';
import type { AdminCaller } from '../admin/service.js';

const STATEMENT = 0x53;

export class AdminOnlyMode {
  constructor(
    private readonly s: SessionCore,
    private readonly caller: AdminCaller,
    private readonly admin: AdminReplies,
  ) {}

  onMessage(type: number, buf: Buffer, start: number, end: number): Verdict<never> {
    switch (type) {
      case FE.Query: {
        const q = readCString(buf, start, end);
        if (!q) return this.s.protocolViolation('invalid Query message: missing string terminator');
        const req = this.s.ctx.services.adminCommand(this.caller, q[0]);
        if (req) return this.admin.query(req);
        this.s.writeClient(Buffer.concat([this.refusal(), readyForQuery(TxStatus.Idle)]));
        return DROP;
      }
      case FE.Parse: {
        const n = readCString(buf, start, end);
        const q = n && readCString(buf, n[1], end);
        if (!n || !q) return this.s.protocolViolation('invalid Parse message');
        const req = this.s.ctx.services.adminCommand(this.caller, q[0]);
        if (!req) return this.fail();
        const types = parseParamTypes(buf, q[1], end);
        if (!types) return this.s.protocolViolation('invalid Parse message');
        return this.admin.parse(n[0], req, types, this.admin.hasStatement(n[0]));
      }
      case FE.Bind: {
        const portal = readCString(buf, start, end);
        const stmt = portal && readCString(buf, portal[1], end);
        if (!portal || !stmt) return this.s.protocolViolation('invalid Bind message');
        if (!this.admin.hasStatement(stmt[0])) return this.fail();
        const counts = bindCounts(buf, stmt[1], end);
        if (!counts) return this.s.protocolViolation('invalid Bind message');
        return this.admin.bind(portal[0], stmt[0], counts);
      }
      case FE.Describe:
      case FE.Close: {
        const kind = buf[start];
        const name = readCString(buf, start + 1, end);
        if (!name) return this.s.protocolViolation('invalid Describe or Close message');
        const known = kind === STATEMENT ? this.admin.hasStatement(name[0]) : this.admin.hasPortal(name[0]);
        if (type === FE.Describe) return known ? this.admin.describe(kind, name[0]) : this.fail();
        if (known) return this.admin.close(kind, name[0]);
        // Closing what does not exist is not an error in PostgreSQL either.
        this.s.writeClient(closeComplete());
        return DROP;
      }
      case FE.Execute: {
        const name = readCString(buf, start, end);
        if (!name) return this.s.protocolViolation('invalid Execute message');
        if (!this.admin.hasPortal(name[0])) return this.fail();
        return this.admin.execute(name[0], name[1] + 4 <= end ? buf.readInt32BE(name[1]) : 0);
      }
      case FE.Sync:
        this.s.writeClient(readyForQuery(TxStatus.Idle));
        return DROP;
      case FE.FunctionCall:
        this.s.writeClient(Buffer.concat([this.refusal(), readyForQuery(TxStatus.Idle)]));
        return DROP;
      case FE.Flush:
      case FE.CopyData:
      case FE.CopyDone:
      case FE.CopyFail:
        return DROP;
      default:
        return this.s.protocolViolation(`invalid frontend message type ${type}`);
    }
  }

  /** An extended-protocol request that needs a backend: the error, then nothing until Sync (session.ts skips). */
  private fail(): typeof DROP {
    this.s.writeClient(this.refusal());
    this.s.skipUntilSync();
    return DROP;
  }

  private refusal(): Buffer {
    const err = new PgError(
      SQLSTATE.cannotConnectNow,
      'no primary node is available: this admin session answers only admin commands',
      'ERROR',
      undefined,
      'SHOW pool_nodes shows the nodes; PGPOOL ATTACH NODE n brings a node back.',
    );
    return errorResponse(err.toFields());
  }
}
