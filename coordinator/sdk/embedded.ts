import type { Logger } from 'pino';
import { ConflictError, CoordinatorError, NotFoundError, ValidationError } from '../errors.ts';
import { settleInteractive } from '../api/interactive-answer.ts';
import type { Principal } from '../api/auth.ts';
import { toProblem } from '../api/problem.ts';
import { assertIdempotencyKey, submitStatus } from '../api/submission.ts';
import { mayLeaveSessionState } from '../../participant-adapter/statement-guard.ts';
import type { CallerTransaction } from '../engine/caller-transaction.ts';
import { EMBEDDED_ACTOR, loadConfig, type Config } from '../config/load-config.ts';
import { startService, type RunningService } from '../service.ts';
import type { CoordinatorAnswer, InProcessCoordinator } from './coordinator-call.ts';

/**
 * The coordinator in-process, for a service that wants no extra hop. It runs the same engine and
 * the same recovery workers against the same log and Redis as the standalone service, so the two
 * cooperate: either may finish what the other began. Made by {@link createCoordinator}; hand it to
 * `createClient({ coordinator, resources })`.
 */
export interface EmbeddedCoordinator extends InProcessCoordinator {
  /** The running engine, workers and pools (no HTTP server: `service.url` is empty). */
  readonly service: RunningService;
  /**
   * The calls the SDK makes (submit a transaction with its statements; begin, join a branch,
   * commit, abort, read a transaction), answered as the REST API would answer them, without
   * authentication: the process that embeds the coordinator is trusted with every resource it
   * configured. A submission is checked as REST checks it (the schema, the statement guard) and
   * answers the REST status and body, a problem's included.
   */
  call(method: string, path: string, body?: unknown, options?: { idempotencyKey?: string }): Promise<CoordinatorAnswer>;
  /**
   * The commit the SDK asks for once every branch it ran itself is prepared, answered as `call`
   * answers `POST /v1/transactions/:id/commit`. It takes the SDK's word for those branches (their
   * xids; PREPARE succeeded on them), which only a caller in this process can give: the REST API
   * never does, and branches joined for other services are looked up on their databases all the
   * same. Anything unusual (a takeover, a branch joined meanwhile, the deadline) ends in the
   * ordinary commit, which checks every branch.
   */
  commitPrepared(id: string, transaction: CallerTransaction): Promise<CoordinatorAnswer>;
  /** The statement guard's reading of a statement's effect on its session (statement-guard.ts). */
  mayLeaveSessionState(sql: string): boolean;
  /** Lets the transactions in hand finish, then stops the workers and closes every pool. */
  close(): Promise<void>;
}

// The embedding process, trusted with every resource it configured and with raw SQL.
const EMBEDDING: Principal = { name: EMBEDDED_ACTOR, scopes: ['submit', 'read', 'operate'], resources: ['*'], sql: true };

/** A transaction submitted with its statements: the REST route's checks and answers, in process. */
async function submitted(service: RunningService, body: unknown, idempotencyKey: string | undefined): Promise<CoordinatorAnswer> {
  try {
    assertIdempotencyKey(idempotencyKey);
    const view = await service.submit(body, { principal: EMBEDDING, idempotencyKey });
    return { status: submitStatus(view), body: { ...view } };
  } catch (err) {
    const p = toProblem(err);
    return { status: p.status, body: p };
  }
}

const TX_ACTION = /^\/v1\/transactions\/([0-9a-f-]{36})\/(commit|abort|branches)$/;
const TX_DETAIL = /^\/v1\/transactions\/([0-9a-f-]{36})$/;

/**
 * Starts the coordinator inside this process: migrates the log if needed, opens the resources'
 * pools, starts the recovery workers (BullMQ on the configured Redis) and the engine, but no HTTP
 * server.
 *
 * @param config A resolved config, or environment-style variables (`DATABASE_URL`, `REDIS_URL`,
 *   `TPC_RESOURCES`, `TPC_NAMESPACE`, …) validated as the standalone service validates them.
 * @param options.logger A pino logger (default: the service's own, at `LOG_LEVEL`).
 * @throws ConfigError for a bad variable, or the reason the log database or Redis cannot be used.
 */
export async function createCoordinator(config: Config | Record<string, string | undefined>, options: { logger?: Logger } = {}): Promise<EmbeddedCoordinator> {
  const resolved = 'databaseUrl' in config ? (config as Config) : loadConfig(config as Record<string, string | undefined>);
  const service = await startService(resolved, { ...options, listen: false });
  const { engine } = service;
  const problem = (err: unknown) => {
    const status = err instanceof ValidationError ? 422 : err instanceof NotFoundError ? 404 : err instanceof ConflictError ? 409 : 503;
    return { status, body: { detail: err instanceof Error ? err.message : String(err), code: err instanceof CoordinatorError ? err.code : 'internal' } };
  };
  return {
    service,
    async call(method, path, body, options) {
      try {
        if (method === 'POST' && path === '/v1/transactions' && (body as { interactive?: unknown } | null)?.interactive === undefined) {
          return await submitted(service, body, options?.idempotencyKey);
        }
        if (method === 'POST' && path === '/v1/transactions') {
          // deferBegin: the SDK begins to commit at once what it ran (Engine.beginInteractive).
          const b = body as { branches: { resource: string }[]; timeoutMs?: number; deferBegin?: boolean };
          return {
            status: 201,
            body: {
              ...(await engine.beginInteractive(
                b.branches.map((x) => x.resource),
                b.timeoutMs ?? resolved.defaultTimeoutMs,
                EMBEDDED_ACTOR,
                { deferBegin: b.deferBegin === true },
              )),
            },
          };
        }
        const read = method === 'GET' ? TX_DETAIL.exec(path) : null;
        if (read) return { status: 200, body: { ...(await engine.get(read[1]!)) } };
        const m = TX_ACTION.exec(path);
        if (method === 'POST' && m?.[2] === 'branches') {
          const { created, ...joined } = await engine.joinInteractive(m[1]!, (body as { resource: string }).resource, EMBEDDED_ACTOR);
          return { status: created ? 201 : 200, body: joined };
        }
        if (method === 'POST' && m) {
          return await settleInteractive(engine, m[1]!, m[2] as 'commit' | 'abort', EMBEDDED_ACTOR);
        }
        return { status: 404, body: { detail: `no embedded route for ${method} ${path}` } };
      } catch (err) {
        return problem(err);
      }
    },
    async commitPrepared(id, transaction) {
      try {
        return await settleInteractive(engine, id, 'commit', EMBEDDED_ACTOR, transaction);
      } catch (err) {
        return problem(err);
      }
    },
    mayLeaveSessionState,
    close: () => service.close(),
  };
}
