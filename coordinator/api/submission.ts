import { createHash } from 'node:crypto';
import type { Engine } from '../engine/engine.ts';
import type { TransactionView } from '../engine/types.ts';
import { assertResourcesAllowed, type Principal } from './auth.ts';
import { problem } from './problem.ts';
import { assertStatementsAllowed } from './statement-refusals.ts';
import { parseSubmit, submitContract } from './submit-schema.ts';

/** What a submission is checked against: the same for the REST route and the embedded coordinator. */
export interface SubmissionOptions {
  engine: Engine;
  resources: ReadonlySet<string>;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  /** Resources whose health check found them unusable (max_prepared_transactions = 0), with why. */
  unusable: () => ReadonlyMap<string, string>;
  /** Statement templates (TPC_STATEMENTS_FILE) a submission may name instead of sending SQL. */
  templates?: ReadonlyMap<string, string>;
}

/** Who submits, and what came with the body. */
export interface Submitter {
  principal: Principal;
  /** An Idempotency-Key already checked against IDEMPOTENCY_KEY. */
  idempotencyKey?: string;
  /** When the request reached this process (epoch ms): the deadline counts from it. */
  receivedAt?: number;
  /** Called when the answer is a replay of the key's first attempt. */
  onReplay?: () => void;
}

export type Submit = (body: unknown, by: Submitter) => Promise<TransactionView>;

/** How an Idempotency-Key must look: 1 to 255 visible ASCII characters. */
export const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** Refuses a key that is not 1 to 255 visible ASCII characters (400 bad-idempotency-key), before anything runs. */
export function assertIdempotencyKey(key: string | undefined): void {
  if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
    throw problem(400, 'bad-idempotency-key', 'Bad request', 'Idempotency-Key must be 1 to 255 visible ASCII characters');
  }
}

/** POST answers: 201 committed, 409 aborted, 202 decided but phase 2 still running. */
export function submitStatus(view: TransactionView): number {
  if (view.status === 'committed') return 201;
  if (view.status === 'aborted') return 409;
  return 202;
}

/**
 * A transaction submitted with its statements (`POST /v1/transactions`, or the embedded SDK's
 * `submit`): the body validated, the principal's resources and raw-SQL right checked, every
 * statement read by the guard, then run by the engine. One function for both callers, so that an
 * embedded submission is refused exactly where a REST one is: a statement the guard refuses would
 * break the branch's one flight (a COMMIT inside it, a second statement), whoever sent it.
 */
export function submission(o: SubmissionOptions): Submit {
  const contract = submitContract(o.maxTimeoutMs);
  return async (body, by) => {
    const { request, rawSql } = parseSubmit(contract, body, o.resources, o.defaultTimeoutMs, o.templates);
    const { principal } = by;
    assertResourcesAllowed(
      principal,
      request.branches.map((b) => b.resource),
    );
    if (rawSql && !principal.sql) {
      throw problem(403, 'raw-sql-forbidden', 'Forbidden', `token "${principal.name}" may submit statement templates only ("statement": "<name>"), not "sql"`);
    }
    assertStatementsAllowed(request);
    const unusable = o.unusable();
    for (const b of request.branches) {
      const why = unusable.get(b.resource);
      if (why) throw problem(503, 'resource-unusable', 'Resource unusable', why, { resource: b.resource });
    }
    const idempotency =
      by.idempotencyKey === undefined
        ? undefined
        : {
            tokenName: principal.name,
            key: by.idempotencyKey,
            requestHash: createHash('sha256').update(JSON.stringify(request)).digest('hex'),
          };
    return o.engine.submit(request, { actor: principal.name, idempotency, receivedAt: by.receivedAt, onReplay: by.onReplay });
  };
}
