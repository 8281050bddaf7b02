import { createHash } from 'node:crypto';
import { Router, type RequestHandler, type Response } from 'express';
import type { Engine } from '../engine/engine.ts';
import type { TransactionView } from '../engine/types.ts';
import { assertResourcesAllowed, type Authenticator } from './auth.ts';
import { problem } from './problem.ts';
import { parseSubmit, submitSchema } from './submit-schema.ts';

export interface TransactionsRoutesOptions {
  engine: Engine;
  auth: Authenticator;
  resources: ReadonlySet<string>;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  /** Resources whose health check found them unusable (max_prepared_transactions = 0), with why. */
  unusable: () => ReadonlyMap<string, string>;
  /**
   * The JSON body parser, run after authentication so that an unauthenticated caller gets 401
   * without having its body read. Strict (objects and arrays only); any content type, so a missing
   * header is a clear 400/422 rather than a silently empty body.
   */
  jsonBody: RequestHandler;
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** POST answers: 201 committed, 409 aborted, 202 decided but phase 2 still running. */
function submitStatus(view: TransactionView): number {
  if (view.status === 'committed') return 201;
  if (view.status === 'aborted') return 409;
  return 202;
}

function send(res: Response, status: number, body: unknown): void {
  res.status(status).json(body);
}

export function transactionsRoutes(o: TransactionsRoutesOptions): Router {
  const router = Router();
  const schema = submitSchema(o.maxTimeoutMs);

  router.post('/v1/transactions', o.auth.require('submit'), o.jsonBody, async (req, res) => {
    const keyHeader = req.get('Idempotency-Key');
    if (keyHeader !== undefined && !IDEMPOTENCY_KEY.test(keyHeader)) {
      throw problem(400, 'bad-idempotency-key', 'Bad request', 'Idempotency-Key must be 1 to 255 visible ASCII characters');
    }
    const request = parseSubmit(schema, req.body, o.resources, o.defaultTimeoutMs);
    const principal = req.principal!;
    assertResourcesAllowed(principal, request.branches.map((b) => b.resource));
    const unusable = o.unusable();
    for (const b of request.branches) {
      const why = unusable.get(b.resource);
      if (why) throw problem(503, 'resource-unusable', 'Resource unusable', why, { resource: b.resource });
    }
    const idempotency = keyHeader === undefined ? undefined : {
      tokenName: principal.name,
      key: keyHeader,
      requestHash: createHash('sha256').update(JSON.stringify(request)).digest('hex'),
    };
    const view = await o.engine.submit(request, { actor: principal.name, idempotency });
    const status = submitStatus(view);
    if (status === 201 || status === 202) res.setHeader('Location', `/v1/transactions/${view.id}`);
    send(res, status, view);
  });

  router.get('/v1/transactions/:id', o.auth.require('read'), async (req, res) => {
    const id = String(req.params.id);
    if (!UUID.test(id)) throw problem(404, 'not-found', 'Not found', `transaction ${id.slice(0, 80)} not found`);
    const detail = await o.engine.get(id.toLowerCase());
    assertResourcesAllowed(req.principal!, detail.branches.map((b) => b.resource));
    send(res, 200, detail);
  });

  return router;
}
