import { connect, createServer, type Server, type Socket } from 'node:net';

export interface ProxyTarget {
  host: string;
  port: number;
}

/**
 * A TCP proxy standing for a stable database endpoint (HAProxy with a health check, a managed
 * service's writer address): clients keep one host:port while the server behind it changes.
 */
export interface SwitchingProxy {
  readonly host: string;
  readonly port: number;
  /**
   * Sends new connections to `target` and ends every connection carried so far, as HAProxy does
   * when it marks a backend down (`on-marked-down shutdown-sessions`): a client never keeps talking
   * to a server that is no longer the primary.
   */
  switchTo(target: ProxyTarget): void;
  /** Ends every carried connection and refuses new ones (closed at once) until `switchTo`. */
  cut(): void;
  close(): Promise<void>;
}

export async function startSwitchingProxy(initial: ProxyTarget | null): Promise<SwitchingProxy> {
  let target = initial;
  const carried = new Set<Socket>();
  const endAll = () => {
    for (const s of carried) s.destroy();
  };

  const server: Server = createServer((client) => {
    client.on('error', () => {});
    if (target === null) {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    upstream.on('error', () => {});
    carried.add(client);
    // Either side ending ends both: a refused or dead upstream reaches the client as a closed connection.
    client.on('close', () => {
      carried.delete(client);
      upstream.destroy();
    });
    upstream.on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;

  return {
    host: '127.0.0.1',
    port,
    switchTo(next) {
      target = next;
      endAll();
    },
    cut() {
      target = null;
      endAll();
    },
    close: () =>
      new Promise<void>((resolve) => {
        target = null;
        endAll();
        server.close(() => resolve());
      }),
  };
}
