import { createServer } from 'node:net';

/** Asks the kernel for a free loopback port. Another process may take it before we bind, so callers retry once. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port assigned'));
      });
    });
  });
}

/** Whether a loopback port can be bound now (a server on it, on 127.0.0.1 or on every address, makes the bind fail). */
export function loopbackPortIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * The port asked for when it is free, else one the kernel picks: a server that had a port last time
 * keeps it, so the URLs a user saved keep working. As with freeLoopbackPort, the port may be taken
 * between this check and the bind, so callers retry once with a fresh port.
 */
export async function preferredLoopbackPort(preferred: number | undefined): Promise<number> {
  const usable = preferred !== undefined && Number.isInteger(preferred) && preferred > 0 && preferred <= 65535;
  if (usable && (await loopbackPortIsFree(preferred))) return preferred;
  return freeLoopbackPort();
}
