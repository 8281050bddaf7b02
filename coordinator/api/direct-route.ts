import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorRequestHandler, Express, NextFunction, Request, RequestHandler, Response } from 'express';

/**
 * One route answered without express's router: a request whose method and URL are exactly
 * `method` and `path` (no query string, no trailing slash, the case as given) runs `handlers` in
 * order, then `onError` on the first error, as express would run them. Any other request, the same
 * route with a query string included, goes to express unchanged, which has the same handlers
 * mounted for it (the caller mounts them), so both ways answer alike.
 *
 * Why: the submission is nearly every request, and for each one express's app.handle built a final
 * handler and read two settings, and its router walked the layers before the route, matching each
 * path, and allocated its dispatch closures, for a route fixed at startup. Measured at 32 clients
 * (issue 13): 5 % of the coordinator's CPU per transfer while express still set each request's
 * prototypes; once they were born with them (serverFor), 0.560 against 0.581 ms (−4 %, about the
 * benchmark's order bias).
 *
 * What express sets up that the handlers rely on is set here the same way: its request and
 * response prototypes (req.get, req.path, res.status…), the circular req.res / res.req, res.locals,
 * req.baseUrl and req.originalUrl, req.params, and req.route (the metric's route label). As in
 * express 5, a handler that throws or returns a rejected promise passes its error on.
 */
export function answerDirectly(app: Express, method: string, path: string, handlers: RequestHandler[], onError: ErrorRequestHandler): void {
  const route = { path, methods: { [method.toLowerCase()]: true } };
  // Not in express's types, but what app(req, res) calls (express 5, lib/express.js).
  const handled = app as unknown as { handle: (req: IncomingMessage, res: ServerResponse, callback?: NextFunction) => void };
  const viaExpress = handled.handle.bind(app);
  handled.handle = (incoming, outgoing, callback) => {
    if (incoming.method !== method || incoming.url !== path || callback !== undefined) {
      viaExpress(incoming, outgoing, callback);
      return;
    }
    // As express does; on serverFor's server they are born with these prototypes, and V8 answers at once.
    const req = Object.setPrototypeOf(incoming, app.request) as Request;
    const res = Object.setPrototypeOf(outgoing, app.response) as Response;
    req.res = res;
    res.req = req;
    res.locals = Object.create(null) as Response['locals'];
    req.baseUrl = '';
    req.originalUrl = path;
    req.params = {};
    req.route = route;
    let index = 0;
    let failed = false;
    const fail = (err: unknown): void => {
      // A second error (a handler failing after it passed one on) is not answered twice.
      if (failed) return;
      failed = true;
      try {
        onError(err, req, res, lastResort(res));
      } catch (thrown) {
        lastResort(res)(thrown);
      }
    };
    const next: NextFunction = (err?: unknown) => {
      // None of these handlers skips to another route ('route', 'router'): anything passed is an error.
      if (err !== undefined && err !== null) return fail(err);
      const handler = handlers[index++];
      if (!handler) return fail(new Error(`no handler answered ${method} ${path}`));
      try {
        const returned = handler(req, res, next) as unknown;
        if (returned instanceof Promise) returned.then(undefined, fail);
      } catch (thrown) {
        fail(thrown);
      }
    };
    next();
  };
}

/** What express's final handler would do after the error handler itself failed: a bare 500, once. */
function lastResort(res: Response): NextFunction {
  return () => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.statusCode = 500;
    res.end();
  };
}
