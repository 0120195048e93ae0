/**
 * The sockets clients connect to: one TCP listener per listen_addresses entry
 * and one Unix-domain socket per unix_socket_directories entry, named as
 * PostgreSQL names them (.s.PGSQL.<port>). Every accepted socket goes to
 * `onConnection`; what happens next is src/server/startup.ts.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { clientSlots } from './startup.js';

export interface ListenerOptions {
  config: () => Config;
  log: Logger;
  /** A client connected; `local` when it came in on a Unix-domain socket. */
  onConnection(socket: net.Socket, local: boolean): void;
  /** Where to listen (default: listen_addresses, port, unix_socket_directories; the PCP port has its own). */
  where?: (cfg: Config) => ListenAt;
}

export interface ListenAt {
  /** listen_addresses syntax; skipped entirely when `tcp` is false. */
  addresses: string;
  tcp?: boolean;
  port: number;
  socketDirs: readonly string[];
  /** The parameters behind `addresses` and `socketDirs`, for messages. */
  names: { addresses: string; socketDirs: string };
}

function clientPort(cfg: Config): ListenAt {
  return {
    addresses: cfg.listen_addresses,
    // As pgpool-II and PostgreSQL: listen_addresses = '' means no TCP/IP, only Unix-domain sockets.
    tcp: cfg.listen_addresses.trim() !== '',
    port: cfg.port,
    socketDirs: cfg.unix_socket_directories,
    names: { addresses: 'listen_addresses', socketDirs: 'unix_socket_directories' },
  };
}

export class Listener {
  private readonly servers: net.Server[] = [];

  constructor(private readonly opts: ListenerOptions) {}

  /** At least one socket is bound. */
  get bound(): boolean {
    return this.servers.length > 0;
  }

  /**
   * Bind every configured address; a Unix socket that cannot be used is logged and skipped.
   * Nothing bound at all (no TCP address, no usable socket directory) is an error, as in PostgreSQL.
   */
  async listen(): Promise<Array<{ host: string; port: number }>> {
    const at = (this.opts.where ?? clientPort)(this.opts.config());
    const bound: Array<{ host: string; port: number }> = [];
    for (const host of at.tcp === false ? [] : listenHosts(at.addresses)) {
      const server = net.createServer({ noDelay: true }, (s) => this.opts.onConnection(s, false));
      await this.bind(server, { host, port: at.port });
      const a = server.address() as net.AddressInfo;
      bound.push({ host: a.address, port: a.port });
    }
    const port = bound[0]?.port ?? at.port;
    for (const dir of at.socketDirs) {
      if (dir === '') continue;
      const file = path.join(dir, `.s.PGSQL.${port}`);
      try {
        await this.listenUnix(file);
        bound.push({ host: file, port });
      } catch (e) {
        // As PostgreSQL: a socket directory that cannot be used is reported, TCP still serves.
        this.opts.log.warn(
          { unix_socket: file, err: (e as Error).message },
          'could not listen on the Unix-domain socket',
        );
      }
    }
    if (bound.length === 0) {
      const dirs = at.socketDirs.filter((d) => d !== '');
      const tcp = `no TCP/IP address (${at.names.addresses} = '${at.addresses}')`;
      throw new Error(
        dirs.length === 0
          ? `nothing to listen on: ${tcp} and no Unix-domain socket directory (${at.names.socketDirs} = ''); set one of them`
          : `nothing to listen on: ${tcp} and no Unix-domain socket could be created in ${dirs.join(', ')} (see the warnings above)`,
      );
    }
    return bound;
  }

  /** Stop accepting. Open connections are not touched. */
  close(): void {
    // Not awaiting close(): its callback would wait for every open connection.
    for (const s of this.servers) s.close();
  }

  /** Listen on a Unix-domain socket file, replacing a stale one left by a dead process. */
  private async listenUnix(file: string): Promise<void> {
    if (fs.existsSync(file)) {
      const alive = await new Promise<boolean>((resolve) => {
        const probe = net.connect({ path: file });
        probe.once('connect', () => {
          probe.destroy();
          resolve(true);
        });
        probe.once('error', () => resolve(false));
      });
      if (alive) throw new Error(`another server is listening on ${file}`);
      fs.unlinkSync(file);
    }
    const server = net.createServer((s) => this.opts.onConnection(s, true));
    await this.bind(server, { path: file });
    fs.chmodSync(file, this.opts.config().unix_socket_permissions);
  }

  private async bind(server: net.Server, where: { host: string; port: number } | { path: string }): Promise<void> {
    const cfg = this.opts.config();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ ...where, backlog: Math.max(64, clientSlots(cfg) * cfg.listen_backlog_multiplier) }, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => this.opts.log.error({ err: e.message }, 'listener error'));
    this.servers.push(server);
  }
}

/** pgpool's listen_addresses: '*' = all, '' = none (Unix-domain sockets only), else a comma-separated list. */
export function listenHosts(v: string): string[] {
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (list.includes('*')) return ['::'];
  return list;
}
