import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface ProxiedCall {
  method: string;
  path: string;
  status: number | null;
  /** The reply never reached the caller: the proxy dropped it after the participant had answered. */
  dropped: boolean;
}

type Match = (method: string, path: string) => boolean;

/**
 * An HTTP proxy in front of a participant router that can lose replies on purpose: the request
 * reaches the participant and takes effect, and the caller sees its connection reset instead of
 * the answer. That is the failure a lost reply is, as opposed to a request that never arrived.
 */
export interface LossyProxy {
  /** The participant's URL (same path), through the proxy. */
  url: string;
  calls: ProxiedCall[];
  /** Loses the reply of the next `times` calls that match. */
  dropReplies(match: Match, times?: number): void;
  /** Runs `fn` once the participant answered a matching call, before the reply is passed on. */
  onAnswered(match: Match, fn: () => Promise<void> | void): void;
  /** Refuses every call (the caller sees a reset) until told otherwise. */
  setDown(down: boolean): void;
  close(): Promise<void>;
}

/**
 * `target`: one participant, or several replicas of it (same path): the calls that `rotate`
 * matches go to them in turn, every other call to the first.
 */
export async function startLossyProxy(target: string | string[], rotate: Match = () => true): Promise<LossyProxy> {
  const upstreams = (Array.isArray(target) ? target : [target]).map((t) => new URL(t));
  const upstream = upstreams[0]!;
  let turn = 0;
  const calls: ProxiedCall[] = [];
  const drops: { match: Match; left: number }[] = [];
  const hooks: { match: Match; fn: () => Promise<void> | void }[] = [];
  let down = false;

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const call: ProxiedCall = { method, path, status: null, dropped: false };
    calls.push(call);
    if (down) {
      req.socket.destroy();
      return;
    }
    const to = rotate(method, path) ? upstreams[turn++ % upstreams.length]! : upstream;
    const out = httpRequest({ host: to.hostname, port: to.port, method, path, headers: req.headers }, async (answer) => {
      const chunks: Buffer[] = [];
      for await (const c of answer) chunks.push(c as Buffer);
      call.status = answer.statusCode ?? null;
      for (const h of hooks) if (h.match(method, path)) await h.fn();
      const drop = drops.find((d) => d.left > 0 && d.match(method, path));
      if (drop) {
        drop.left--;
        call.dropped = true;
        req.socket.destroy();
        return;
      }
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      res.end(Buffer.concat(chunks));
    });
    out.on('error', () => req.socket.destroy());
    // A caller that gives up (its deadline) closes the participant's request too, as a direct hop would.
    res.on('close', () => {
      if (!res.writableFinished) out.destroy();
    });
    req.pipe(out);
  };

  const server: Server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}${upstream.pathname.replace(/\/$/, '')}`,
    calls,
    dropReplies(match, times = 1) {
      drops.push({ match, left: times });
    },
    onAnswered(match, fn) {
      hooks.push({ match, fn });
    },
    setDown(d) {
      down = d;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
