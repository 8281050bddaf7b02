import { STATUS_CODES } from 'node:http';
import type { ErrorRequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { ConflictError, CoordinatorError, NotFoundError, OverloadedError, UnavailableError, ValidationError } from '../errors.ts';

/** Problem types are stable URIs: clients switch on them, so they never change once published. */
export const problemType = (code: string) => `urn:tpc:problem:${code}`;

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  [extension: string]: unknown;
}

export class HttpProblem extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail ?? problem.title);
  }
}

export function problem(status: number, code: string, title: string, detail?: string, extensions: Record<string, unknown> = {}): HttpProblem {
  return new HttpProblem({ type: problemType(code), title, status, ...(detail ? { detail } : {}), ...extensions });
}

export function sendProblem(res: Response, p: Problem, instance?: string): void {
  res
    .status(p.status)
    .type('application/problem+json')
    .send(JSON.stringify({ ...p, ...(instance ? { instance } : {}) }));
}

// 1 s: a log failover or a database restart is over in seconds; sooner would be a busy loop.
const OUTAGE_RETRY_AFTER_SECONDS = 1;

/** The one place errors become HTTP answers; anything unexpected is logged and answered 500 without internals. */
export function problemHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const p = toProblem(err);
    // Overload refusals are counted (tpc_admission_refusals_total), not logged: a line for each would
    // add work exactly when the process has none to spare.
    if (p.status >= 500 && isDatabaseUnavailable(err)) {
      // An outage, not a bug: /readyz reports it too, so a warning without the stack is enough.
      logger.warn(
        { err: (err as Error).message, code: (err as { code?: unknown }).code, method: req.method, path: req.path },
        'a database could not be queried',
      );
    } else if (p.status >= 500 && !(err instanceof UnavailableError) && !(err instanceof OverloadedError)) {
      logger.error({ err, method: req.method, path: req.path }, 'unexpected error answering a request');
    }
    if (res.headersSent) return;
    if (p.status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="tpc"');
    // Every 503 says when to come back: a client retrying an outage (a log failover, a database
    // restarting) at once and in a loop only adds to it. An expected refusal (overload, a
    // transaction not decided yet) is marked so that the access log does not count it a failure.
    const retryAfter = err instanceof OverloadedError ? err.retryAfterSeconds : err instanceof UnavailableError ? err.retryAfterSeconds : undefined;
    if (retryAfter !== undefined) res.locals.expectedRefusal = true;
    if (p.status === 503) res.setHeader('Retry-After', String(retryAfter ?? OUTAGE_RETRY_AFTER_SECONDS));
    sendProblem(res, p, req.originalUrl);
  };
}

// SQLSTATEs that say a database cannot serve us now, whatever the request: connection (08),
// resources (53), operator intervention (57), system (58), login (28), a missing database (3D000),
// the role's privileges or the log's tables gone (42501, 42P01: a REVOKE, a role's search_path
// changed behind our back), read-only sessions (25006). A read route then answers 503, not 500.
const UNAVAILABLE_SQLSTATE = /^(?:(?:08|53|57|58|28)[0-9A-Z]{3}|3D000|42501|42P01|25006)$/;
const UNAVAILABLE_SOCKET = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN']);

function isDatabaseUnavailable(err: unknown): boolean {
  if (err instanceof CoordinatorError || err instanceof HttpProblem) return false;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATE.test(code) || UNAVAILABLE_SOCKET.has(code))) return true;
  // node-postgres' own messages for a connection lost or never made (the last two: a statement
  // given to a client whose connection had just failed or closed, as in a failover).
  return (
    err instanceof Error &&
    /^(Connection terminated|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error|Client was closed)/.test(
      err.message,
    )
  );
}

export function toProblem(err: unknown): Problem {
  if (err instanceof HttpProblem) return err.problem;
  if (err instanceof ValidationError) {
    return { type: problemType('validation'), title: 'Invalid request', status: 422, detail: err.message, errors: err.issues };
  }
  if (err instanceof NotFoundError) return { type: problemType('not-found'), title: 'Not found', status: 404, detail: err.message };
  if (err instanceof ConflictError) {
    const status = err.code === 'idempotency_key_reused' ? 422 : 409;
    return { type: problemType(err.code.replaceAll('_', '-')), title: STATUS_CODES[status]!, status, detail: err.message };
  }
  if (err instanceof OverloadedError) {
    return {
      type: problemType('overloaded'),
      title: 'Overloaded',
      status: 503,
      detail: err.message,
      resource: err.resource,
      reason: err.reason,
      ...(err.transactionId ? { transactionId: err.transactionId } : {}),
    };
  }
  if (err instanceof UnavailableError) {
    return { type: problemType('unavailable'), title: 'Service unavailable', status: 503, detail: err.message };
  }
  // body-parser errors: malformed JSON, too large, bad encoding. The contract answers 400 for all of them.
  const e = err as { type?: string; status?: number; message?: string };
  if (e && typeof e.type === 'string' && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    const code = e.type === 'entity.parse.failed' ? 'malformed-json' : e.type === 'entity.too.large' ? 'body-too-large' : 'bad-request';
    return { type: problemType(code), title: 'Bad request', status: 400, detail: e.message ?? 'the request body could not be read' };
  }
  // Other client errors raised by express's own layers (the router's parameter decoding, …): their
  // status, never a 500, since the request is what was wrong.
  if (e && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    return { type: problemType('bad-request'), title: STATUS_CODES[e.status] ?? 'Bad request', status: e.status, detail: 'the request could not be read' };
  }
  if (isDatabaseUnavailable(err)) {
    return {
      type: problemType('unavailable'),
      title: 'Service unavailable',
      status: 503,
      detail: 'a database the service depends on cannot be queried right now (GET /readyz says why)',
    };
  }
  if (err instanceof CoordinatorError) {
    return { type: problemType(err.code), title: 'Request failed', status: 500, detail: err.message };
  }
  return { type: problemType('internal'), title: 'Internal error', status: 500, detail: 'an unexpected error occurred; it has been logged' };
}
