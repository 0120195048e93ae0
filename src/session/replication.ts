/**
 * Replication connections (start-up parameter `replication=true|database`: pg_basebackup,
 * pg_recvlogical, postgres.js `subscribe`, Debezium) are passed through to the primary
 * untouched, as PgBouncer does: authenticated like any client, then the bytes flow both
 * ways without routing, caching or parsing (the replication protocol is not the query
 * protocol pgrelay routes). The client gets its walsender's own BackendKeyData.
 */
import type net from 'node:net';
import type { ClientInput } from '../protocol/client-input.js';
import type { BackendSecret } from '../auth/backend.js';
import { SQLSTATE } from '../protocol/constants.js';
import {
  PgError,
  authenticationOk,
  backendKeyData,
  errorResponse,
  parameterStatus,
  readyForQuery,
} from '../protocol/messages.js';
import { connectBackend } from '../pool/connector.js';
import type { SessionContext } from './context.js';

/** Does this start-up ask for a replication connection (PostgreSQL's parse of `replication`)? */
export function wantsReplication(params: ReadonlyMap<string, string>): boolean {
  const v = params.get('replication')?.toLowerCase();
  return v !== undefined && v !== 'false' && v !== 'off' && v !== 'no' && v !== '0';
}

export class ReplicationPassThrough {
  constructor(
    private readonly ctx: SessionContext,
    private readonly client: net.Socket,
    private readonly params: Map<string, string>,
    private readonly authSecret: BackendSecret | undefined,
  ) {}

  /** Connect to the primary, answer the client's start-up, then relay bytes until either side closes. */
  async start(input: ClientInput, onEnd: () => void): Promise<void> {
    const client = this.client;
    const log = this.ctx.log.child({ replication: this.params.get('replication'), user: this.params.get('user') });
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      onEnd();
    };
    const cfg = this.ctx.config();
    const primary = this.ctx.nodes.primaryNode();
    if (!primary) {
      input.detach();
      fail(client, new PgError(SQLSTATE.cannotConnectNow, 'no primary node is available'));
      end();
      return;
    }
    let conn: Awaited<ReturnType<typeof connectBackend>>;
    try {
      conn = await connectBackend({
        nodeId: primary.id,
        host: primary.host,
        port: primary.port,
        params: this.params,
        connectTimeoutMs: cfg.connect_timeout,
        secret: (u) => this.authSecret ?? this.ctx.backendSecret(u),
      });
    } catch (e) {
      input.detach();
      const err =
        e instanceof PgError
          ? e
          : new PgError(SQLSTATE.connectionFailure, `could not connect to the primary: ${(e as Error).message}`);
      log.warn({ code: err.code, err: err.message }, 'replication connection refused');
      fail(client, err);
      end();
      return;
    }
    if (client.destroyed) {
      input.detach();
      conn.close();
      end();
      return;
    }
    log.info({ node: primary.id, backendPid: conn.pid }, 'replication connection passed through to the primary');
    const parts: Buffer[] = [authenticationOk()];
    for (const [k, v] of conn.params) parts.push(parameterStatus(k, v));
    parts.push(backendKeyData(conn.pid, conn.secretKey), readyForQuery(conn.txStatus));
    client.write(Buffer.concat(parts));
    const backend = conn.socket;
    const early = input.detach();
    if (early.length > 0) backend.write(early);
    // pipe() applies backpressure both ways.
    client.pipe(backend);
    backend.pipe(client);
    client.resume();
    backend.resume();
    const close = (): void => {
      conn.close();
      if (!client.destroyed) client.end();
      client.setTimeout(10_000, () => client.destroy());
      end();
    };
    client.once('close', close);
    backend.once('close', close);
    client.on('error', () => undefined);
    backend.on('error', () => undefined);
  }
}

function fail(client: net.Socket, err: PgError): void {
  if (!client.destroyed && client.writable) client.end(errorResponse({ ...err.toFields(), severity: 'FATAL' }));
  client.setTimeout(2000, () => client.destroy());
}
