import net from 'node:net';

/** A connected pair over loopback: [accepted server side, client side, cleanup]. */
export async function socketPair(): Promise<[net.Socket, net.Socket, () => void]> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(port, '127.0.0.1');
  await new Promise<void>((r, j) => {
    client.once('connect', r);
    client.once('error', j);
  });
  const s = await accepted;
  const cleanup = (): void => {
    s.destroy();
    client.destroy();
    server.close();
  };
  return [s, client, cleanup];
}
