import { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import type { TransactionDetail } from '../engine/types.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { MIN_PREFIX_HEX, idRange } from '../log/id-prefix.ts';
import type { CountFilter, TransactionCounts } from '../log/transaction-counts.ts';
import type { ListFilter, TransactionSummary } from '../log/transaction-list.ts';
import { TX_STATUSES } from '../engine/states.ts';
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
  list: (filter: ListFilter) => Promise<{ items: TransactionSummary[]; next: unknown }>;
  counts: (filter: CountFilter) => Promise<TransactionCounts>;
  namespace: string;
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

const window = {
  resource: z.string().min(1).max(63).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  before: z.iso.datetime({ offset: true }).optional(),
};
export const countsQuery = z.strictObject(window);

/** Strict: hex digits and dashes where a uuid has them, at least MIN_PREFIX_HEX digits (id-prefix.ts). */
export const lookupQuery = z.strictObject({
  id: z
    .string()
    .min(MIN_PREFIX_HEX)
    .max(36)
    .regex(/^[0-9a-fA-F-]+$/, 'hex digits and dashes only')
    .refine((v) => idRange(v) !== null, `the start of a transaction id: at least ${MIN_PREFIX_HEX} hex digits, dashes only where an id has them`),
  limit: z.coerce.number().int().min(1).max(50).default(20),
});

function invalidQuery(issues: z.core.$ZodIssue[]): ValidationError {
  const errors = issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
  return new ValidationError(`invalid query: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, errors);
}

function badRequest(code: string, issues: z.core.$ZodIssue[]) {
  const errors = issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
  return problem(400, code, 'Bad request', errors.map((e) => `${e.path}: ${e.message}`).join('; '), { errors });
}

/** What operators use to find and resolve what recovery cannot: resources, orphans, resolutions. */
export function operatorRoutes(o: OperatorRoutesOptions): Router {
  const router = Router();

  // Mounted before the transactions' routes (app.ts), so these two are not taken for an id.
  router.get('/v1/transactions/counts', o.auth.require('read'), async (req, res) => {
    const q = countsQuery.safeParse(req.query);
    if (!q.success) throw invalidQuery(q.error.issues);
    const p = req.principal!;
    const counts = await o.counts({
      namespace: o.namespace,
      resource: q.data.resource,
      since: q.data.since ? new Date(q.data.since) : undefined,
      before: q.data.before ? new Date(q.data.before) : undefined,
      visible: p.resources.includes('*') ? '*' : p.resources,
    });
    // Every status named, zeros included, so a client need not know the list of statuses.
    res.json({ ...counts, byStatus: Object.fromEntries(TX_STATUSES.map((s) => [s, counts.byStatus[s] ?? 0])) });
  });

  // The short id the console and the CLI show, or any unique start of an id: every candidate, newest first.
  router.get('/v1/transactions/lookup', o.auth.require('read'), async (req, res) => {
    const q = lookupQuery.safeParse(req.query);
    if (!q.success) throw invalidQuery(q.error.issues);
    const p = req.principal!;
    // As the list and GET /v1/transactions/:id: a transaction outside the token's resources is not
    // there, filtered in SQL so that neither `more` nor `unique` hints at one.
    const visible = p.resources.includes('*') ? undefined : p.resources;
    const { items, next } = await o.list({ namespace: o.namespace, idRange: idRange(q.data.id)!, visible, limit: q.data.limit });
    if (items.length === 0) throw new NotFoundError(`no transaction id starts with ${q.data.id.toLowerCase()}`);
    res.json({ items, unique: items.length === 1 && next === null, more: next !== null });
  });

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
    assertResourcesAllowed(
      req.principal!,
      before.branches.map((b) => b.resource),
    );
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
