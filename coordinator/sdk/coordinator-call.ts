import type { EmbeddedCoordinator } from './embedded.ts';

export interface CoordinatorAnswer {
  /** The HTTP status; 0 when no answer came (connection refused, timed out). */
  status: number;
  body: Record<string, any> | null;
}

export type CoordinatorCall = (method: 'POST', path: string, body?: unknown) => Promise<CoordinatorAnswer>;

// 60 s: longer than any answer the coordinator gives on purpose (a commit answers 202 once its
// completion wait is over), so only a coordinator that hangs is given up on.
const REQUEST_TIMEOUT_MS = 60_000;

/**
 * The interactive calls the SDK makes, to a coordinator over HTTP or to an embedded one in-process.
 * Never throws: no answer is status 0, so every caller handles one shape.
 */
export function coordinatorCall(target: { url?: string; token?: string; coordinator?: EmbeddedCoordinator }): CoordinatorCall {
  const embedded = target.coordinator;
  if (embedded) return (method, path, body) => embedded.call(method, path, body).catch((err: unknown) => ({ status: 0, body: { detail: String(err) } }));
  const headers = { 'content-type': 'application/json', ...(target.token ? { authorization: `Bearer ${target.token}` } : {}) };
  return async (method, path, body) => {
    try {
      const res = await fetch(new URL(path, target.url), {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      return { status: res.status, body: (await res.json().catch(() => null)) as Record<string, any> | null };
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
