import { createServer, connect, type Server, type Socket } from 'node:net';

/*
 * A TCP proxy in front of one Postgres server that reads the frontend's messages and, while "cut",
 * resets any connection that sends COMMIT PREPARED, before the message reaches the server. Everything
 * else passes (BEGIN, the statements, PREPARE TRANSACTION, listings, health checks), so transactions
 * prepare and are decided, and only their phase 2 on this server fails: the outage of issue 13.
 *
 * Why protocol-aware rather than refusing connections: a proxy that drops every connection would
 * also fail the PREPAREs (nothing would be decided), and one switched between the two states could
 * not be timed to fall between the PREPARE and the COMMIT PREPARED of thousands of transactions in
 * flight. Inspecting each message is exact: a COMMIT PREPARED never reaches the server while cut.
 * It counts the COMMIT PREPAREDs it forwards, so a drain shows how many were sent for how many branches.
 */

// Untyped startup-phase requests (protocol codes): after these the client sends another untyped message.
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
// 'Q' simple query, 'P' parse (extended protocol): the two ways a COMMIT PREPARED can be sent.
const SIMPLE_QUERY = 0x51;
const PARSE = 0x50;
const COMMIT_PREPARED = /^\s*COMMIT\s+PREPARED\b/i;

export interface CutCounts {
  /** Client connections accepted. */
  connections: number;
  /** COMMIT PREPARED messages forwarded to the server. */
  commitPreparedForwarded: number;
  /** COMMIT PREPARED messages stopped (their connection reset) while cut. */
  commitPreparedCut: number;
}

export interface CutProxy {
  readonly port: number;
  /** `url` (a postgres:// URL of the target server) rewritten to go through the proxy. */
  via(url: string): string;
  cut(): void;
  restore(): void;
  readonly isCut: boolean;
  /** A copy of the counters so far. */
  counts(): CutCounts;
  close(): Promise<void>;
}

/** The query text of a 'Q' or 'P' message (`body` excludes type and length), else null. */
function queryText(type: number, body: Buffer): string | null {
  if (type === SIMPLE_QUERY) return body.toString('utf8', 0, Math.max(0, body.length - 1));
  if (type === PARSE) {
    const nameEnd = body.indexOf(0);
    if (nameEnd === -1) return null;
    const textEnd = body.indexOf(0, nameEnd + 1);
    return body.toString('utf8', nameEnd + 1, textEnd === -1 ? body.length : textEnd);
  }
  return null;
}

export async function startCutProxy(targetHost: string, targetPort: number): Promise<CutProxy> {
  let isCut = false;
  const counts: CutCounts = { connections: 0, commitPreparedForwarded: 0, commitPreparedCut: 0 };
  const sockets = new Set<Socket>();

  const onConnection = (client: Socket) => {
    counts.connections++;
    const upstream = connect(targetPort, targetHost);
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    upstream.pipe(client);

    let startup = true;
    let pending: Buffer = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      let at = 0;
      const out: Buffer[] = [];
      for (;;) {
        if (startup) {
          if (pending.length - at < 8) break;
          const len = pending.readInt32BE(at);
          if (pending.length - at < len) break;
          const code = pending.readInt32BE(at + 4);
          out.push(pending.subarray(at, at + len));
          at += len;
          // Encryption requests are answered 'N' by these clusters (no TLS); then comes the startup message.
          if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) startup = false;
          continue;
        }
        if (pending.length - at < 5) break;
        const type = pending[at]!;
        const total = 1 + pending.readInt32BE(at + 1);
        if (pending.length - at < total) break;
        const text = queryText(type, pending.subarray(at + 5, at + total));
        if (text !== null && COMMIT_PREPARED.test(text)) {
          if (isCut) {
            counts.commitPreparedCut++;
            // What precedes it in this chunk may go; the COMMIT PREPARED and anything after it must not.
            if (out.length) upstream.write(Buffer.concat(out));
            client.resetAndDestroy();
            drop();
            return;
          }
          counts.commitPreparedForwarded++;
        }
        out.push(pending.subarray(at, at + total));
        at += total;
      }
      pending = at === pending.length ? Buffer.alloc(0) : Buffer.from(pending.subarray(at));
      if (out.length) {
        const ok = upstream.write(out.length === 1 ? out[0]! : Buffer.concat(out));
        if (!ok) {
          client.pause();
          upstream.once('drain', () => client.resume());
        }
      }
    });
  };

  const server: Server = createServer(onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('the cut proxy has no TCP address');
  const port = address.port;
  return {
    port,
    via(url) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    cut() {
      isCut = true;
    },
    restore() {
      isCut = false;
    },
    get isCut() {
      return isCut;
    },
    counts: () => ({ ...counts }),
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      sockets.clear();
      await closed;
    },
  };
}
