/**
 * etcd for the coordination tests: a real etcd server (Debian's etcd-server,
 * `etcd` on PATH or $ETCD_BIN) with one or more members on loopback, on free
 * ports, in a temporary directory; and a TCP forwarder the tests put between
 * a pgrelay instance and etcd, and close to cut that instance off.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, killChildOnExit } from '../../dev/devcluster.js';

export interface EtcdHandle {
  /** Client URLs, one per member. */
  endpoints: string[];
  /** Client ports, one per member. */
  ports: number[];
  stop(): Promise<void>;
}

export const ETCD_BIN = process.env.ETCD_BIN ?? 'etcd';

function waitPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const s = net.connect({ host: '127.0.0.1', port });
      const t = setTimeout(() => s.destroy(), 1000);
      s.once('connect', () => {
        clearTimeout(t);
        s.destroy();
        resolve();
      });
      s.once('error', () => {
        clearTimeout(t);
        if (Date.now() > deadline) reject(new Error(`etcd did not listen on ${port} within ${timeoutMs} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/** Start an etcd cluster of `members` members (default 1) on loopback; resolves once each accepts clients. */
export async function startEtcd(members = 1): Promise<EtcdHandle> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgrelay-etcd-'));
  const peers: number[] = [];
  const clients: number[] = [];
  for (let i = 0; i < members; i++) {
    clients.push(await freePort());
    peers.push(await freePort());
  }
  const initial = peers.map((p, i) => `m${i}=http://127.0.0.1:${p}`).join(',');
  const children: ChildProcess[] = [];
  const cancels: Array<() => void> = [];
  let out = '';
  for (let i = 0; i < members; i++) {
    const child = spawn(
      ETCD_BIN,
      [
        '--name',
        `m${i}`,
        '--data-dir',
        path.join(dir, `m${i}`),
        '--listen-client-urls',
        `http://127.0.0.1:${clients[i]}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${clients[i]}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${peers[i]}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${peers[i]}`,
        '--initial-cluster',
        initial,
        '--initial-cluster-state',
        'new',
        '--heartbeat-interval',
        '50',
        '--election-timeout',
        '500',
        '--logger',
        'zap',
        '--log-level',
        'error',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('error', (e) => {
      out += `\n[spawn error] ${e.message}\n`;
    });
    children.push(child);
    if (child.pid !== undefined) cancels.push(killChildOnExit(child.pid, i === 0 ? dir : undefined));
  }
  const stop = async (): Promise<void> => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const t = setTimeout(() => c.kill('SIGKILL'), 2000);
            c.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            // Throw-away data: no need for a clean shutdown.
            c.kill('SIGKILL');
          }),
      ),
    );
    for (const c of cancels) c();
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  };
  try {
    await Promise.all(clients.map((p) => waitPort(p, 15_000)));
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n--- etcd output ---\n${out}`);
  }
  return { endpoints: clients.map((p) => `http://127.0.0.1:${p}`), ports: clients, stop };
}

/**
 * A TCP forwarder 127.0.0.1:port → 127.0.0.1:target. cut() closes every
 * forwarded connection and refuses new ones (the port stays bound);
 * restore() forwards again; close() releases the port.
 */
export class TcpForwarder {
  private readonly sockets = new Set<net.Socket>();
  private open = true;
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(target: number): Promise<TcpForwarder> {
    let self: TcpForwarder | undefined;
    const server = net.createServer((client) => {
      if (!self?.open) {
        client.destroy();
        return;
      }
      const upstream = net.connect({ host: '127.0.0.1', port: target });
      const pair = [client, upstream];
      for (const s of pair) {
        self.sockets.add(s);
        s.setTimeout(0);
        s.once('error', () => undefined);
        s.once('close', () => {
          self?.sockets.delete(s);
          for (const o of pair) o.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    self = new TcpForwarder(server, (server.address() as net.AddressInfo).port);
    return self;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  cut(): void {
    this.open = false;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.open = true;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
