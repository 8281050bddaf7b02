import { createServer, IncomingMessage, type Server, ServerResponse } from 'node:http';
import type { Express } from 'express';

/**
 * The HTTP server for an express `app`, in place of app.listen's: its requests and responses are
 * born with the app's own prototypes (app.request, app.response), so the `Object.setPrototypeOf`
 * express's app.handle makes on each of them finds the prototype already set, which V8 answers at
 * once. On a request of Node's own class it changes the object's prototype: about 2–4 µs an
 * object here (a loop creating IncomingMessages, 200 000 each way: 2.0–2.4 µs against 0.16–0.32
 * for these), two per request, and V8 then works with changed maps on objects Node's HTTP code
 * keeps using. That was a quarter of the coordinator's CPU per transfer (issue 13).
 *
 * Node's IncomingMessage and ServerResponse are plain constructor functions, so a constructor
 * whose prototype is the app's can run them on the object `new` made. Were they ever classes (that
 * cannot be called so), the objects are made of subclasses chained to the app's prototypes instead:
 * express then still sets each prototype, as with app.listen's server.
 */
export function serverFor(app: Express): Server {
  return createServer({ IncomingMessage: requestClass(app), ServerResponse: responseClass(app) }, app);
}

/**
 * Listens on serverFor's server. A listen error (EADDRINUSE) rejects: a start that ignored it
 * announced itself on a port another process answers. Once listening, a server error (an accept
 * failing for lack of file descriptors) goes to `onError` instead of crashing the process with
 * what it drives (app.listen's leftover once-listener used to swallow it unseen).
 */
export function listenFor(app: Express, address: { port: number; host: string; backlog?: number }, onError: (err: Error) => void): Promise<Server> {
  return new Promise<Server>((resolve, reject) => {
    const server = serverFor(app);
    server.once('error', reject);
    server.listen(address.port, address.host, address.backlog, () => {
      server.off('error', reject);
      server.on('error', onError);
      resolve(server);
    });
  });
}

function callable(fn: unknown): boolean {
  return !/^class\b/.test(Function.prototype.toString.call(fn));
}

function requestClass(app: Express): typeof IncomingMessage {
  if (!callable(IncomingMessage)) {
    class ChainedRequest extends IncomingMessage {}
    Object.setPrototypeOf(ChainedRequest.prototype, app.request);
    return ChainedRequest;
  }
  const BornRequest = function (this: IncomingMessage, socket: ConstructorParameters<typeof IncomingMessage>[0]) {
    (IncomingMessage as unknown as (this: IncomingMessage, s: typeof socket) => void).call(this, socket);
  };
  BornRequest.prototype = app.request;
  return BornRequest as unknown as typeof IncomingMessage;
}

function responseClass(app: Express): typeof ServerResponse {
  if (!callable(ServerResponse)) {
    class ChainedResponse extends ServerResponse {}
    Object.setPrototypeOf(ChainedResponse.prototype, app.response);
    return ChainedResponse as unknown as typeof ServerResponse;
  }
  const BornResponse = function (this: ServerResponse, req: IncomingMessage, options?: object) {
    (ServerResponse as unknown as (this: ServerResponse, r: IncomingMessage, o?: object) => void).call(this, req, options);
  };
  BornResponse.prototype = app.response;
  return BornResponse as unknown as typeof ServerResponse;
}
