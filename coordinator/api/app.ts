import { fileURLToPath } from 'node:url';
import express, { type Express, type RequestHandler, type Response } from 'express';
import { answerDirectly } from './direct-route.ts';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.ts';
import { docsPage } from './docs-page.ts';
import { healthRoutes, type ReadinessCheck } from './health-routes.ts';
import { operatorRoutes, type OperatorRoutesOptions } from './operator-routes.ts';
import { queueBoard } from './queue-board.ts';
import type { Queue } from 'bullmq';
import { openApiDocument } from './openapi.ts';
import { problem, problemHandler } from './problem.ts';
import { rejectMalformedUrl } from './request-guard.ts';
import { arrivedJsonBody, bodyLimitBytes } from './arrived-json-body.ts';
import { submitHandlers, transactionsRoutes, type TransactionsRoutesOptions } from './transactions-routes.ts';

export interface AppOptions extends Omit<TransactionsRoutesOptions, 'jsonBody'> {
  operator: Omit<OperatorRoutesOptions, 'auth' | 'jsonBody'>;
  /** Queues shown on the Bull Board at /queues. */
  queues: Queue[];
  logger: Logger;
  metrics: Metrics;
  readiness: ReadinessCheck[];
  bodyLimit: string;
}

const CONSOLE_DIR = fileURLToPath(new URL('../console/', import.meta.url));

export function createApp(o: AppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Shared by every response (`this` is the response): no closure made per request.
  function finished(this: Response): void {
    const req = this.req;
    const route = (req.route?.path as string | undefined) ?? 'unmatched';
    const status = this.statusCode;
    o.metrics.httpRequests.inc(`${req.method} ${route}`, String(status));
    // An expected refusal (overload, not decided yet: see problem.ts) is counted in the metrics
    // and logged at debug only.
    const failed = status >= 500 && !this.locals.expectedRefusal;
    if (!failed && !o.logger.isLevelEnabled('debug')) return;
    // Method, route and status only: bodies carry statements and customer data.
    const entry = {
      method: req.method,
      route,
      status,
      ms: Number(process.hrtime.bigint() - (this.locals.startedNs as bigint)) / 1e6,
      principal: req.principal?.name,
    };
    if (failed) o.logger.warn(entry, 'request failed');
    else o.logger.debug(entry, 'request');
  }
  const arrived: RequestHandler = (_req, res, next) => {
    res.locals.startedNs = process.hrtime.bigint();
    // A transaction's deadline counts from here: under a burst, what follows may wait its turn.
    res.locals.receivedAt = Date.now();
    res.on('finish', finished);
    next();
  };
  app.use(arrived);
  app.use(rejectMalformedUrl());
  const jsonBody = express.json({ limit: o.bodyLimit, strict: true, type: () => true });
  const submit = submitHandlers({ ...o, jsonBody: arrivedJsonBody(bodyLimitBytes(o.bodyLimit), jsonBody) });
  // The submission first: every request walks the layers before its own (a POST on this path has no other route).
  app.post('/v1/transactions', ...submit);
  app.use(healthRoutes(o.readiness, o.metrics.registry));
  const openApi = openApiDocument(o.maxTimeoutMs);
  app.get('/openapi.json', (_req, res) => {
    res.json(openApi);
  });
  app.use('/docs', docsPage());
  // First: its GET /v1/transactions/counts and /lookup would otherwise be taken for an :id.
  app.use(operatorRoutes({ ...o.operator, auth: o.auth, jsonBody }));
  app.use(transactionsRoutes({ ...o, jsonBody }));
  app.post('/v1/session', o.auth.session());
  app.use(queueBoard(o.queues, o.auth));
  // The operator console: static files that use the same API and tokens as any client.
  app.use('/console', express.static(CONSOLE_DIR, { index: 'index.html', maxAge: 0 }));
  // The address a newcomer types first: the console, rather than a 404 in JSON.
  app.get('/', (_req, res) => {
    res.redirect(302, '/console/');
  });
  app.use((req, _res, next) => next(problem(404, 'not-found', 'Not found', `no route for ${req.method} ${req.path}`)));
  const answerProblem = problemHandler(o.logger);
  app.use(answerProblem);
  // The usual submission skips the router (its path has no percent sign for rejectMalformedUrl to judge).
  answerDirectly(app, 'POST', '/v1/transactions', [arrived, ...submit], answerProblem);
  return app;
}
