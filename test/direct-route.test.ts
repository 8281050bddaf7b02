import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answerDirectly } from '../coordinator/api/direct-route.ts';
import { serverFor } from '../participant-adapter/express-server.ts';

/*
 * answerDirectly against a real HTTP server: the route it takes over answers exactly as express
 * answers the same handlers mounted on the same path (reached here with a query string, which
 * the direct path leaves to express), on success and on every way a handler can fail; any other
 * request is express's. On serverFor's server (requests born with express's prototypes, as the
 * service runs) and on app.listen's (prototypes set per request).
 */
describe.each([
  ['serverFor', true],
  ['app.listen', false],
])('answerDirectly on %s', (_server, born) => {
  let server: Server;

  beforeAll(async () => {
    const app = express();
    const handlers: RequestHandler[] = [
      (_req, res, next) => {
        res.locals.steps = ['first'];
        next();
      },
      (req, _res, next) => {
        // The request's express methods work: its prototype is express's.
        if (req.get('x-fail') === 'next') return next(Object.assign(new Error('passed on'), { status: 409 }));
        if (req.get('x-fail') === 'throw') throw Object.assign(new Error('thrown'), { status: 422 });
        next();
      },
      async (req, res) => {
        await new Promise((r) => setImmediate(r));
        if (req.get('x-fail') === 'reject') throw Object.assign(new Error('rejected'), { status: 503 });
        if (req.get('x-fail') === 'error-handler') throw Object.assign(new Error('error handler fails'), { status: 599 });
        res.status(201).json({
          steps: [...(res.locals.steps as string[]), 'last'],
          route: (req.route as { path?: string } | undefined)?.path,
          path: req.path,
          baseUrl: req.baseUrl,
          params: req.params,
          same: req.res === res && res.req === req,
          app: req.app === app && res.app === app,
        });
      },
    ];
    app.post('/v1/things', ...handlers);
    app.get('/v1/things', (_req, res) => {
      res.json({ got: true });
    });
    const onError: ErrorRequestHandler = (err: { status?: number; message: string }, _req, res, _next) => {
      if (err.status === 599) throw new Error('the error handler itself failed');
      res.status(err.status ?? 500).json({ error: err.message, steps: res.locals.steps });
    };
    app.use(onError);
    answerDirectly(app, 'POST', '/v1/things', handlers, onError);
    server = born ? serverFor(app).listen(0, '127.0.0.1') : app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  let port: number;

  async function call(path: string, method = 'POST', fail?: string): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers: fail ? { 'x-fail': fail } : {} });
    const text = await res.text();
    // Express's own 404 is HTML.
    return { status: res.status, body: res.headers.get('content-type')?.startsWith('application/json') ? (JSON.parse(text) as unknown) : text };
  }

  it('runs the handlers in order with express request and response methods, as express does', async () => {
    const direct = await call('/v1/things');
    const viaExpress = await call('/v1/things?via=express');
    expect(direct).toEqual({
      status: 201,
      body: { steps: ['first', 'last'], route: '/v1/things', path: '/v1/things', baseUrl: '', params: {}, same: true, app: true },
    });
    expect(viaExpress).toEqual(direct);
  });

  it.each([
    ['next', 409, 'passed on'],
    ['throw', 422, 'thrown'],
    ['reject', 503, 'rejected'],
  ])('hands an error passed by next, thrown, or rejected (%s) to the error handler once', async (fail, status, error) => {
    const direct = await call('/v1/things', 'POST', fail);
    expect(direct).toEqual({ status, body: { error, steps: ['first'] } });
    expect(await call('/v1/things?via=express', 'POST', fail)).toEqual(direct);
  });

  it('answers a bare 500 when the error handler itself throws, and the server stays up', async () => {
    expect((await call('/v1/things', 'POST', 'error-handler')).status).toBe(500);
    expect((await call('/v1/things')).status).toBe(201);
  });

  it('leaves every other method and path to express', async () => {
    expect(await call('/v1/things', 'GET')).toEqual({ status: 200, body: { got: true } });
    expect((await call('/v1/things/', 'POST')).status).toBe(201);
    expect((await call('/v1/other', 'POST')).status).toBe(404);
  });
});

describe('serverFor', () => {
  it("makes requests and responses born with the app's own prototypes, so express's setPrototypeOf changes nothing", async () => {
    const app = express();
    app.get('/x', (req, res) => {
      res.json({ get: typeof req.get, status: typeof res.status });
    });
    const server = serverFor(app);
    const seen: boolean[] = [];
    // Runs before express's listener: the objects as the server made them.
    server.prependListener('request', (req, res) => {
      seen.push(Object.getPrototypeOf(req) === app.request && Object.getPrototypeOf(res) === app.response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x`);
      expect(await res.json()).toEqual({ get: 'function', status: 'function' });
      expect(seen).toEqual([true]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
