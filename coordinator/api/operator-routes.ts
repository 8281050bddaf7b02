import { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import type { TransactionDetail } from '../engine/types.ts';
import type { Orphan, ResourceReport } from '../operator/inspection.ts';
import type { ResolveRequest, ResolveResult } from '../operator/resolve.ts';
import type { OrphanResolveRequest } from '../operator/resolve-orphan.ts';
import { assertResourcesAllowed, type Authenticator } from './auth.ts';
import { problem } from './problem.ts';

export interface OperatorRoutesOptions {
  auth: Authenticator;
  jsonBody: RequestHandler;
  resources: () => Promise<ResourceReport[]>;
  orphans: () => Promise<{ orphans: Orphan[]; unreachable: string[] }>;
  resolve: (id: string, request: ResolveRequest) => Promise<ResolveResult>;
  resolveOrphan: (request: OrphanResolveRequest) => Promise<{ result: string }>;
  detail: (id: string) => Promise<TransactionDetail>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// Exported so that the OpenAPI document is generated from the schemas that validate.
export const resolveBody = z.strictObject({
  outcome: z.enum(['commit', 'abort']),
  reason: z.string().trim().min(1, 'a reason is required').max(2000),
  force: z.boolean().default(false),
});

export const orphanBody = z.strictObject({
  resource: z.string().min(1).max(63),
  gid: z.string().min(1).max(200),
  outcome: z.enum(['commit', 'abort']).default('abort'),
  reason: z.string().trim().min(1, 'a reason is required').max(2000),
  force: z.boolean().default(false),
});

function badRequest(code: string, issues: z.core.$ZodIssue[]) {
  const errors = issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
  return problem(400, code, 'Bad request', errors.map((e) => `${e.path}: ${e.message}`).join('; '), { errors });
}

/** What operators use to find and resolve what recovery cannot: resources, orphans, resolutions. */
export function operatorRoutes(o: OperatorRoutesOptions): Router {
  const router = Router();

  router.get('/v1/resources', o.auth.require('read'), async (req, res) => {
    const principal = req.principal!;
    const all = await o.resources();
    res.json({ items: all.filter((r) => principal.resources.includes('*') || principal.resources.includes(r.resource)) });
  });

  router.get('/v1/orphans', o.auth.require('read'), async (req, res) => {
    const principal = req.principal!;
    const found = await o.orphans();
    res.json({
      items: found.orphans.filter((x) => principal.resources.includes('*') || principal.resources.includes(x.resource)),
      unreachable: found.unreachable,
    });
  });

  router.post('/v1/transactions/:id/resolve', o.auth.require('operate'), o.jsonBody, async (req, res) => {
    const id = String(req.params.id);
    if (!UUID.test(id)) throw problem(404, 'not-found', 'Not found', `transaction ${id.slice(0, 80)} not found`);
    const body = resolveBody.safeParse(req.body);
    if (!body.success) throw badRequest('bad-resolution', body.error.issues);
    const before = await o.detail(id.toLowerCase());
    assertResourcesAllowed(req.principal!, before.branches.map((b) => b.resource));
    const result = await o.resolve(id.toLowerCase(), { ...body.data, actor: req.principal!.name });
    res.json({ ...result, transaction: await o.detail(id.toLowerCase()) });
  });

  router.post('/v1/orphans/resolve', o.auth.require('operate'), o.jsonBody, async (req, res) => {
    const body = orphanBody.safeParse(req.body);
    if (!body.success) throw badRequest('bad-resolution', body.error.issues);
    assertResourcesAllowed(req.principal!, [body.data.resource]);
    res.json(await o.resolveOrphan({ ...body.data, actor: req.principal!.name }));
  });

  return router;
}
