/**
 * The PCP port (pcp_port, default 9898; pcp_listen_addresses; a Unix-domain
 * socket .s.PGSQL.<pcp_port> in each pcp_socket_dir): pgpool's control
 * protocol, so that pgpool's own pcp_* programs work against pgrelay.
 *
 * One connection = one conversation: 'M' gives a salt, 'R' authenticates
 * against pcp.conf (commands.ts answers everything after that), 'X' ends it.
 * Requests on a connection run one after the other. What pgpool answers with
 * FATAL (bad password, unknown packet type, bad length, a command before
 * authentication) is sent as FATAL and the connection closes; nothing a PCP
 * client sends reaches the proxy's sessions.
 */
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { Listener } from '../server/listener.js';
import { bodyStrings, errorPacket, type PcpError, PcpReader, stringPacket } from './codec.js';
import { type PcpCommandDeps, PcpFatal, runPcpCommand } from './commands.js';
import { authenticatePcp } from './conf.js';

export interface PcpServerOptions extends PcpCommandDeps {
  config(): Config;
  log: Logger;
  /** pcp.conf path (-F; default pcp.conf next to the configuration file). */
  pcpConfFile: string;
}

export class PcpServer {
  private listener: Listener | undefined;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly opts: PcpServerOptions) {}

  /** Bind the PCP port (nothing when pcp_port = 0). */
  async listen(): Promise<Array<{ host: string; port: number }>> {
    const cfg = this.opts.config();
    if (cfg.pcp_port === 0) return [];
    this.listener = new Listener({
      config: this.opts.config,
      log: this.opts.log,
      onConnection: (s) => this.accept(s),
      // pcp_listen_addresses = '': the Unix-domain socket only, as pgpool.
      where: (c) => ({
        addresses: c.pcp_listen_addresses,
        tcp: c.pcp_listen_addresses.trim() !== '',
        port: c.pcp_port,
        socketDirs: c.pcp_socket_dir,
        names: { addresses: 'pcp_listen_addresses', socketDirs: 'pcp_socket_dir' },
      }),
    });
    return this.listener.listen();
  }

  close(): void {
    this.listener?.close();
    for (const s of this.sockets) s.destroy();
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    const log = this.opts.log;
    const reader = new PcpReader();
    let salt: Buffer | undefined;
    let user: string | undefined;
    let busy = false;
    let closed = false;
    // Before authentication the client has authentication_timeout, as on the proxy port.
    const authTimeoutS = this.opts.config().authentication_timeout;
    const authTimer =
      authTimeoutS > 0
        ? setTimeout(() => {
            if (user === undefined) fatal({ severity: 'FATAL', message: 'PCP authentication timeout' });
          }, authTimeoutS * 1000)
        : undefined;
    authTimer?.unref();

    const send = (b: Buffer): void => {
      if (!closed) socket.write(b);
    };
    const close = (): void => {
      if (closed) return;
      closed = true;
      if (authTimer) clearTimeout(authTimer);
      socket.end();
      socket.destroySoon();
    };
    const fatal = (e: PcpError): void => {
      log.warn({ pcp_user: user, err: e.message, detail: e.detail }, 'PCP connection closed');
      send(errorPacket({ ...e, severity: 'FATAL' }));
      close();
    };

    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      // One request at a time: stop reading while it runs (a long recovery must not buffer a flood).
      socket.pause();
      try {
        while (!closed) {
          const r = reader.next();
          if (!r) break;
          if (r.kind === 'bad_length') {
            fatal({
              severity: 'FATAL',
              message: 'invalid PCP packet',
              detail: `incorrect packet length (${r.length})`,
            });
            break;
          }
          const { type, body } = r.packet;
          if (type === 'M') {
            salt = randomBytes(4);
            send(Buffer.concat([Buffer.from('m'), int32(8), salt]));
            continue;
          }
          if (type === 'R') {
            const [name = '', response = ''] = bodyStrings(body);
            const res = salt
              ? authenticatePcp(this.opts.pcpConfFile, name, response, salt)
              : {
                  ok: false as const,
                  message: 'authentication failed',
                  detail: 'username and/or password does not match',
                };
            salt = undefined;
            if (!res.ok) {
              fatal({ severity: 'FATAL', message: res.message, detail: res.detail });
              break;
            }
            user = name;
            if (authTimer) clearTimeout(authTimer);
            send(stringPacket('r', 'AuthenticationOK'));
            continue;
          }
          if (user === undefined) {
            fatal({
              severity: 'FATAL',
              message: 'authentication failed for new PCP connection',
              detail: 'connection not authorized',
            });
            break;
          }
          if (type === 'X') {
            close();
            break;
          }
          try {
            const out = await runPcpCommand(type, body, user, this.opts);
            for (const b of out.packets) send(b);
            out.after?.();
          } catch (e) {
            if (e instanceof PcpFatal) {
              fatal(e.error);
              break;
            }
            const msg = e instanceof Error ? e.message : String(e);
            log.error({ err: msg, pcp_request: type }, 'PCP request failed');
            send(errorPacket({ severity: 'ERROR', message: 'PCP request failed', detail: msg }));
          }
        }
      } finally {
        busy = false;
        if (!closed) socket.resume();
      }
    };

    socket.on('data', (d: Buffer) => {
      reader.push(d);
      void pump();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      if (authTimer) clearTimeout(authTimer);
      this.sockets.delete(socket);
    });
  }
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
}
