import { z } from 'zod';
import { Router, type RequestHandler, type Response } from 'express';
import type { Engine } from '../engine/engine.ts';
import { TX_STATUSES } from '../engine/states.ts';
import type { ListFilter, TransactionSummary } from '../log/transaction-list.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { assertResourcesAllowed, type Authenticator, type Principal } from './auth.ts';
import { settleInteractive } from './interactive-answer.ts';
import { problem } from './problem.ts';
import { assertIdempotencyKey, submission, submitStatus, type SubmissionOptions } from './submission.ts';
import { contextOf, withContext } from '../observability/tracing.ts';
import { hexRange } from '../log/id-prefix.ts';

export interface TransactionsRoutesOptions extends SubmissionOptions {
  auth: Authenticator;
  /**
   * The JSON body parser, run after authentication so that an unauthenticated caller gets 401
   * without having its body read. Strict (objects and arrays only); any content type, so a missing
   * header is a clear 400/422 rather than a silently empty body.
   */
  jsonBody: RequestHandler;
  list: (filter: ListFilter) => Promise<{ items: TransactionSummary[]; next: { createdAt: string; id: string } | null }>;
  namespace: string;
}

const cursorSchema = z.object({ createdAt: z.iso.datetime(), id: z.uuid() });
/** Validates an interactive begin; exported so that the OpenAPI document is generated from it. */
export const interactiveSchema = z.strictObject({
  interactive: z.literal(true),
  branches: z
    .array(z.strictObject({ resource: z.string().min(1).max(63) }))
    .min(1)
    .max(32)
    .refine((bs) => new Set(bs.map((b) => b.resource)).size === bs.length, 'a resource appears in more than one branch'),
  timeoutMs: z.number().int().min(1).optional(),
});

export const joinSchema = z.strictObject({ resource: z.string().min(1).max(63) });

export const listQuery = z.strictObject({
  status: z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined) return undefined;
      const list = v
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
      for (const x of list) {
        if (!(TX_STATUSES as readonly string[]).includes(x)) ctx.addIssue({ code: 'custom', message: `unknown status "${x}"` });
      }
      return list as ListFilter['status'];
    }),
  inDoubt: z
    .enum(['true', 'false'])
    .optional()
    .transform((v) => (v === undefined ? undefined : v === 'true')),
  resource: z.string().min(1).max(63).optional(),
  idPrefix: z
    .string()
    .regex(/^(?:[0-9a-f]-?){1,32}$/i, 'expected the first hex digits of a transaction id')
    .optional()
    .transform((v) => v?.replace(/-/g, '').toLowerCase()),
  since: z.iso.datetime({ offset: true }).optional(),
  before: z.iso.datetime({ offset: true }).optional(),
  cursor: z
    .string()
    .max(200)
    .optional()
    .transform((v, ctx) => {
      if (v === undefined) return undefined;
      try {
        return cursorSchema.parse(JSON.parse(Buffer.from(v, 'base64url').toString('utf8')));
      } catch {
        ctx.addIssue({ code: 'custom', message: 'not a cursor returned by this API' });
        return z.NEVER;
      }
    }),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * What express's res.json sends here (no ETag, no replacer or spacing are configured), without its
 * generic work per call: the content type re-parsed to set its charset, the freshness check.
 */
function send(res: Response, status: number, body: unknown): void {
  const json = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(json));
  res.end(json);
}

/**
 * Only the token that began an interactive transaction may commit, abort or join it. Any other token,
 * and one whose resources do not cover the transaction, gets the very 404 an unknown id gets: an id
 * seen in a log line or on a shared dashboard then confirms nothing, and cannot be used to abort or
 * join another client's work. Operators act on it through /resolve, which is audited.
 */
async function assertOwner(engine: Engine, principal: Principal, id: string): Promise<void> {
  const access = await engine.accessOf(id);
  const covered = principal.resources.includes('*') || access.resources.every((r) => principal.resources.includes(r));
  if (access.owner !== principal.name || !covered) throw new NotFoundError(`transaction ${id} not found`);
}

/**
 * POST /v1/transactions, the hot path: its handlers, for the app to mount ahead of every other
 * route (express tries each earlier layer's path on every request; the submission is most of them).
 */
export function submitHandlers(o: TransactionsRoutesOptions): RequestHandler[] {
  const submit = submission(o);
  // Under overload, refused before the body is read when nothing could be admitted anyway (503, Retry-After).
  const shed: RequestHandler = (_req, _res, next) => {
    next(o.engine.shed() ?? undefined);
  };
  const handler: RequestHandler = async (req, res) => {
    const keyHeader = req.get('Idempotency-Key');
    assertIdempotencyKey(keyHeader);
    if (req.body && typeof req.body === 'object' && (req.body as { interactive?: unknown }).interactive !== undefined) {
      const begin = interactiveSchema.safeParse(req.body);
      if (!begin.success) {
        const issues = begin.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
        throw new ValidationError(`invalid interactive transaction: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, issues);
      }
      if ((begin.data.timeoutMs ?? 0) > o.maxTimeoutMs) {
        throw new ValidationError(`timeoutMs: at most ${o.maxTimeoutMs}`, [{ path: 'timeoutMs', message: `at most ${o.maxTimeoutMs}` }]);
      }
      const resources = begin.data.branches.map((b) => b.resource);
      const unknown = resources.filter((r) => !o.resources.has(r));
      if (unknown.length)
        throw new ValidationError(
          `unknown resource "${unknown[0]}"`,
          unknown.map((r) => ({ path: 'branches', message: `unknown resource "${r}"` })),
        );
      assertResourcesAllowed(req.principal!, resources);
      const began = await o.engine.beginInteractive(resources, begin.data.timeoutMs ?? o.defaultTimeoutMs, req.principal!.name);
      res.setHeader('Location', `/v1/transactions/${began.id}`);
      send(res, 201, began);
      return;
    }
    // The caller's trace (W3C traceparent) is the parent of the transaction's span.
    const view = await withContext(contextOf(req.headers), () =>
      submit(req.body, {
        principal: req.principal!,
        idempotencyKey: keyHeader,
        receivedAt: res.locals.receivedAt as number | undefined,
        // Set at once, so that a replay's refusal (a 503 while the first attempt is undecided) says it too.
        onReplay: () => res.setHeader('Idempotent-Replayed', 'true'),
      }),
    );
    const status = submitStatus(view);
    if (status === 201 || status === 202) res.setHeader('Location', `/v1/transactions/${view.id}`);
    send(res, status, view);
  };
  return [o.auth.require('submit'), shed, o.jsonBody, handler];
}

/** Every other route of /v1/transactions (the submission is submitHandlers). */
export function transactionsRoutes(o: TransactionsRoutesOptions): Router {
  const router = Router();

  // Interactive transactions: the service decides when to commit or abort; the answer is the outcome.
  for (const action of ['commit', 'abort'] as const) {
    router.post(`/v1/transactions/:id/${action}`, o.auth.require('submit'), async (req, res) => {
      const id = String(req.params.id).toLowerCase();
      if (!UUID.test(id)) throw problem(404, 'not-found', 'Not found', `transaction ${id.slice(0, 80)} not found`);
      // From the log only: asking every database for its live state would cost the commit a round trip per branch.
      await assertOwner(o.engine, req.principal!, id);
      const answer = await withContext(contextOf(req.headers), () => settleInteractive(o.engine, id, action, req.principal!.name));
      send(res, answer.status, answer.body);
    });
  }

  // A branch joins an active interactive transaction, for another service to prepare under its gid.
  router.post('/v1/transactions/:id/branches', o.auth.require('submit'), o.jsonBody, async (req, res) => {
    const id = String(req.params.id).toLowerCase();
    if (!UUID.test(id)) throw problem(404, 'not-found', 'Not found', `transaction ${id.slice(0, 80)} not found`);
    const body = joinSchema.safeParse(req.body);
    if (!body.success) {
      const issues = body.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
      throw new ValidationError(`invalid branch: ${issues.map((i) => (i.path ? `${i.path}: ` : '') + i.message).join('; ')}`, issues);
    }
    const { resource } = body.data;
    if (!o.resources.has(resource))
      throw new ValidationError(`unknown resource "${resource}"`, [{ path: 'resource', message: `unknown resource "${resource}"` }]);
    assertResourcesAllowed(req.principal!, [resource]);
    // As for commit and abort: only the token that began it, and only within its resources.
    await assertOwner(o.engine, req.principal!, id);
    const joined = await o.engine.joinInteractive(id, resource, req.principal!.name);
    send(res, joined.created ? 201 : 200, { index: joined.index, resource: joined.resource, gid: joined.gid, deadline: joined.deadline });
  });

  router.get('/v1/transactions', o.auth.require('read'), async (req, res) => {
    const q = listQuery.safeParse(req.query);
    if (!q.success) {
      const issues = q.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
      throw new ValidationError(`invalid query: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, issues);
    }
    const page = await o.list({
      namespace: o.namespace,
      status: q.data.status,
      inDoubt: q.data.inDoubt,
      resource: q.data.resource,
      idRange: q.data.idPrefix === undefined ? undefined : hexRange(q.data.idPrefix),
      since: q.data.since ? new Date(q.data.since) : undefined,
      before: q.data.before ? new Date(q.data.before) : undefined,
      cursor: q.data.cursor,
      limit: q.data.limit,
    });
    const principal = req.principal!;
    // A token limited to some resources sees only transactions wholly within them.
    const visible = principal.resources.includes('*') ? page.items : page.items.filter((t) => t.resources.every((r) => principal.resources.includes(r)));
    send(res, 200, { items: visible, next: page.next ? Buffer.from(JSON.stringify(page.next)).toString('base64url') : null });
  });

  router.get('/v1/transactions/:id', o.auth.require('read'), async (req, res) => {
    const id = String(req.params.id);
    if (!UUID.test(id)) throw problem(404, 'not-found', 'Not found', `transaction ${id.slice(0, 80)} not found`);
    const detail = await o.engine.get(id.toLowerCase());
    // As unknown as an id that does not exist: a 403 would confirm to a token limited to other
    // resources that the transaction is there (the list hides it from that token too).
    const p = req.principal!;
    if (!p.resources.includes('*') && !detail.branches.every((b) => p.resources.includes(b.resource))) {
      throw new NotFoundError(`transaction ${id.toLowerCase()} not found`);
    }
    send(res, 200, detail);
  });

  return router;
}
