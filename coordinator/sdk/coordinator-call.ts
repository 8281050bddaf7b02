import type { CallerTransaction } from '../engine/caller-transaction.ts';
import { withTraceContext } from './trace-context.ts';

export interface CoordinatorAnswer {
  /** The HTTP status; 0 when no answer came (connection refused, timed out). */
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: a JSON answer, read field by field by its callers
  body: Record<string, any> | null;
}

/**
/**
 * What the SDK needs of a coordinator in the same process: its `call`, and the commit that takes
 * the SDK's word for the branches it prepared (`commitPrepared`, optional: a stand-in may answer
 * `call` alone). `createCoordinator`'s result has both. Named here, not taken from embedded.ts, so
 * that the client's types (and the pg-2pc-client package) do not pull in the service, express,
 * BullMQ and ioredis.
 */
export interface InProcessCoordinator {
  call(method: string, path: string, body?: unknown, options?: { idempotencyKey?: string }): Promise<CoordinatorAnswer>;
  commitPrepared?(id: string, transaction: CallerTransaction): Promise<CoordinatorAnswer>;
  /**
   * Whether a statement may leave state on its session past its transaction (a session-wide
   * setting, a session lock, a temporary table…): a local branch that ran none is given back to its
   * pool without the session reset. Without it (the client package, which has no SQL parser, or a
   * stand-in) every local branch's session is reset.
   */
  mayLeaveSessionState?(sql: string): boolean;
}

/**
 * `timeoutMs` bounds one call below the default (e.g. a poll that must not outlast its caller's wait);
 * `idempotencyKey` is sent as the Idempotency-Key header (a submission's).
 * `commitPrepared`: only for an embedded coordinator, the commit that takes the SDK's word for the
 * branches it prepared (EmbeddedCoordinator.commitPrepared).
 */
export interface CallOptions {
  timeoutMs?: number;
  idempotencyKey?: string;
}
export type CoordinatorCall = ((method: 'POST' | 'GET', path: string, body?: unknown, options?: CallOptions) => Promise<CoordinatorAnswer>) & {
  commitPrepared?: (id: string, transaction: CallerTransaction) => Promise<CoordinatorAnswer>;
  /** InProcessCoordinator.mayLeaveSessionState, when the coordinator is embedded and has it. */
  mayLeaveSessionState?: (sql: string) => boolean;
};

// 60 s: longer than any answer the coordinator gives on purpose (a commit answers 202 once its
// completion wait is over), so only a coordinator that hangs is given up on.
const REQUEST_TIMEOUT_MS = 60_000;

/**
 * The interactive calls the SDK makes, to a coordinator over HTTP or to an embedded one in-process.
 * Never throws: no answer is status 0, so every caller handles one shape.
 */
export function coordinatorCall(target: { url?: string; token?: string; coordinator?: InProcessCoordinator }): CoordinatorCall {
  const embedded = target.coordinator;
  if (embedded) {
    const noAnswer = (err: unknown): CoordinatorAnswer => ({ status: 0, body: { detail: String(err) } });
    const call: CoordinatorCall = (method, path, body, options) => {
      const keyed = options?.idempotencyKey === undefined ? undefined : { idempotencyKey: options.idempotencyKey };
      const answer = embedded.call(method, path, body, keyed).catch(noAnswer);
      if (options?.timeoutMs === undefined) return answer;
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<CoordinatorAnswer>((resolve) => {
        timer = setTimeout(() => resolve({ status: 0, body: { detail: `no answer within ${options.timeoutMs} ms` } }), options.timeoutMs);
      });
      return Promise.race([answer, late]).finally(() => clearTimeout(timer));
    };
    // An EmbeddedCoordinator made by hand (a test's stand-in) may answer `call` alone.
    const commitPrepared = embedded.commitPrepared?.bind(embedded);
    if (commitPrepared) {
      call.commitPrepared = (id, transaction) => commitPrepared(id, transaction).catch(noAnswer);
    }
    if (embedded.mayLeaveSessionState) call.mayLeaveSessionState = embedded.mayLeaveSessionState.bind(embedded);
    return call;
  }
  const headers = { 'content-type': 'application/json', ...(target.token ? { authorization: `Bearer ${target.token}` } : {}) };
  return async (method, path, body, options) => {
    try {
      const res = await fetch(new URL(path, target.url), {
        method,
        headers: withTraceContext(options?.idempotencyKey === undefined ? headers : { ...headers, 'idempotency-key': options.idempotencyKey }),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(options?.timeoutMs ?? REQUEST_TIMEOUT_MS),
      });
      return { status: res.status, body: (await res.json().catch(() => null)) as CoordinatorAnswer['body'] };
    } catch (err) {
      return { status: 0, body: { detail: err instanceof Error ? err.message : String(err) } };
    }
  };
}

/** What went wrong, in words, from an answer: the problem's detail, the refusal, or the status. */
export function answerDetail(answer: CoordinatorAnswer): string {
  const b = answer.body;
  return String(b?.refusal?.message ?? b?.detail ?? b?.error?.message ?? (answer.status === 0 ? 'no answer' : `HTTP ${answer.status}`));
}
