import { connect, type Socket } from 'node:net';

/**
 * Sends the protocol's CancelRequest for a backend. It needs no free pool slot and no
 * authentication, so it still works when every connection is stuck behind a lock: the case a
 * deadline must end (two transactions waiting on each other across databases).
 */
export function sendCancelRequest(target: { host: string; port: number; processID: number; secretKey: number }): Promise<void> {
  return new Promise((resolve) => {
    const path = target.host.startsWith('/') ? `${target.host}/.s.PGSQL.${target.port}` : undefined;
    const socket: Socket = path ? connect(path) : connect(target.port, target.host);
    const done = () => {
      socket.destroy();
      resolve();
    };
    socket.setTimeout(2_000, done);
    socket.once('error', done);
    socket.once('connect', () => {
      const packet = Buffer.alloc(16);
      packet.writeInt32BE(16, 0);
      packet.writeInt32BE(80877102, 4); // the CancelRequest code: 1234 << 16 | 5678
      packet.writeInt32BE(target.processID, 8);
      packet.writeInt32BE(target.secretKey, 12);
      socket.end(packet);
    });
    socket.once('close', done);
  });
}
