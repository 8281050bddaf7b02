import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type pg from 'pg';
import { DirectParticipant } from './direct-participant.ts';
import { ParticipantError } from './errors.ts';
import { NAMESPACE_PATTERN, isNamespaceGid, namespacePrefix } from './gid.ts';
import { PROBLEM_TYPE_PREFIX, WIRE_PATHS, prepareBodySchema, type WireFinishAnswer, type WirePrepareAnswer } from './http-wire.ts';
import { RecentAnswers } from './recent-answers.ts';
import { runBranchRequest } from './run-branch-request.ts';
import { statementRefusal } from './statement-guard.ts';

export interface ParticipantRouterOptions {
  /** The service's own pool on its database; the router borrows connections from it and never ends it. */
  pool: pg.Pool;
  /** The bearer token the coordinator sends (its TPC_RESOURCES entry for this resource), at least 16 characters. */
  token: string;
  /** The coordinator's TPC_NAMESPACE: only gids it makes are answered (default "tpc"). */
  namespace?: string;
  /**
   * Run SQL sent by the coordinator (REST submissions naming this resource). Off by default: the
   * service prepares its own branches (SDK) and the coordinator only decides and completes.
   */
  allowStatements?: boolean;
  /** A name for this database in messages and logs (default "participant"). */
  name?: string;
  /** Bound on connecting and on each administrative statement (default 5 s). */
  operationTimeoutMs?: number;
  /** Largest request body accepted (default 1mb). */
  bodyLimit?: string;
}

export class ParticipantRouterError extends Error {
  override readonly name = 'ParticipantRouterError';
}

function problem(res: Response, status: number, code: string, detail: string, extra: Record<string, unknown> = {}): void {
  res
    .status(status)
    .type('application/problem+json')
    .json({
      type: `${PROBLEM_TYPE_PREFIX}${code}`,
      title: code.replaceAll('_', ' '),
      status,
      detail,
      code,
      ...extra,
    });
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/**
 * The HTTP side of a participant: mount it in the service that owns the database
 * (`app.use('/2pc', participantRouter({ pool, token }))`) and give the coordinator its URL and
 * token. It answers phase 2, recovery and the operator views for gids of the coordinator's
 * namespace, idempotently: a repeated prepare, commit or rollback of a gid gets the same answer,
 * so a lost reply followed by a retry is harmless.
 */
export function participantRouter(options: ParticipantRouterOptions): Router {
  if (typeof options.token !== 'string' || options.token.length < 16)
    throw new ParticipantRouterError('participantRouter: token must be at least 16 characters');
  const namespace = options.namespace ?? 'tpc';
  if (!NAMESPACE_PATTERN.test(namespace)) throw new ParticipantRouterError(`participantRouter: namespace must match ${NAMESPACE_PATTERN}`);
  const name = options.name ?? 'participant';
  const participant = new DirectParticipant({ name, pool: options.pool, operationTimeoutMs: options.operationTimeoutMs });
  const expected = digest(`Bearer ${options.token}`);
  const prepares = new RecentAnswers<WirePrepareAnswer>();
  const finishes = new RecentAnswers<WireFinishAnswer<string>>();

  const router = express.Router();
  router.use((req: Request, res: Response, next: NextFunction) => {
    const given = req.headers.authorization;
    // Compared as digests: equal length, so timingSafeEqual never throws and leaks no length.
    if (typeof given !== 'string' || !timingSafeEqual(digest(given), expected)) {
      res.setHeader('www-authenticate', 'Bearer');
      problem(res, 401, 'unauthorized', 'a valid bearer token is required');
      return;
    }
    next();
  });
  router.use(express.json({ limit: options.bodyLimit ?? '1mb' }));

  const gidParam = (req: Request, res: Response): string | null => {
    const gid = String(req.params.gid);
    if (isNamespaceGid(gid, namespace)) return gid;
    problem(
      res,
      400,
      'gid_outside_namespace',
      `gid ${JSON.stringify(gid.slice(0, 80))} is not a gid of namespace "${namespace}" (tpc:${namespace}:<uuid>:<index>)`,
    );
    return null;
  };

  router.get(WIRE_PATHS.health, async (_req, res) => {
    const { resource: _omit, ...health } = await participant.health();
    res.json({ ...health, namespace });
  });

  router.get(WIRE_PATHS.prepared, async (req, res) => {
    const prefix = typeof req.query.prefix === 'string' ? req.query.prefix : namespacePrefix(namespace);
    if (!prefix.startsWith(namespacePrefix(namespace))) {
      problem(res, 400, 'gid_outside_namespace', `prefix must start with ${namespacePrefix(namespace)}`);
      return;
    }
    res.json({ branches: await participant.listPrepared(prefix) });
  });

  router.get(`${WIRE_PATHS.prepared}/:gid`, async (req, res) => {
    const gid = gidParam(req, res);
    if (!gid) return;
    const seen = await participant.inspectPrepared(gid);
    if (seen) res.json({ gid, ...seen });
    else problem(res, 404, 'not_prepared', `no transaction is prepared under ${gid} on this database`);
  });

  for (const [path, outcome] of [
    ['commit', 'committed'],
    ['rollback', 'rolled-back'],
  ] as const) {
    router.post(`${WIRE_PATHS.prepared}/:gid/${path}`, async (req, res) => {
      const gid = gidParam(req, res);
      if (!gid) return;
      const answer = await finishes.answer(
        `${path}:${gid}`,
        async () => ({
          gid,
          outcome: path === 'commit' ? await participant.commitPrepared(gid) : await participant.rollbackPrepared(gid),
        }),
        (a) => a.outcome === outcome,
      );
      res.json(answer);
    });
  }

  router.get(`${WIRE_PATHS.xacts}/:xid`, async (req, res) => {
    const xid = String(req.params.xid);
    if (!/^\d{1,20}$/.test(xid)) {
      problem(res, 400, 'invalid_xid', 'an xid is a decimal 64-bit transaction id');
      return;
    }
    res.json({ xid, status: await participant.xactStatus(xid) });
  });

  router.post(`${WIRE_PATHS.branches}/:gid`, async (req, res) => {
    if (!options.allowStatements) {
      problem(
        res,
        403,
        'statements_disabled',
        `this participant does not run statements sent by the coordinator; its service prepares its own branches (enable with allowStatements / --allow-statements)`,
      );
      return;
    }
    const gid = gidParam(req, res);
    if (!gid) return;
    const body = prepareBodySchema.safeParse(req.body);
    if (!body.success) {
      problem(res, 422, 'invalid_request', body.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
      return;
    }
    // Every statement is judged before a branch is opened: a refused one prepares nothing, and the
    // answer says which and why instead of an empty "prepared" branch.
    for (const [i, s] of body.data.statements.entries()) {
      const reason = statementRefusal(s.sql);
      if (reason !== null) {
        problem(res, 422, 'statement_not_allowed', `statement ${i}: ${reason}`, { statement: i, reason });
        return;
      }
    }
    // Ends the statements if the coordinator goes away before the answer (its deadline passed).
    const gone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) gone.abort();
    });
    res.json(
      await prepares.answer(
        `prepare:${gid}`,
        () => runBranchRequest(participant, gid, body.data, gone.signal),
        () => true,
      ),
    );
  });

  router.use((_req: Request, res: Response) => problem(res, 404, 'not_found', 'no such participant route'));
  router.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof ParticipantError) {
      problem(res, 503, err.code, err.message, { sqlState: err.sqlState, retryable: err.retryable });
      return;
    }
    const status = (err as { status?: unknown }).status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      problem(res, status, status === 413 ? 'body_too_large' : 'invalid_request', (err as Error).message);
      return;
    }
    problem(res, 500, 'internal', err instanceof Error ? err.message : String(err));
  });
  return router;
}
