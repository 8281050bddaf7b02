import type { Engine } from '../engine/engine.ts';
import type { CallerTransaction, TrustedAnswer } from '../engine/trusted-commit.ts';
import { ConflictError } from '../errors.ts';
import { inSpan } from '../observability/tracing.ts';

/**
 * Commits or aborts an interactive transaction and answers with its outcome, as the REST API and
 * the embedded coordinator both do: 200 when it ended as asked, 409 with the outcome (and the
 * refusal) when it ended otherwise, 202 while phase 2 is still running.
 *
 * `trusted`: the caller is in this process and prepared its own branches (the embedded SDK), so
 * the commit may take its word for them (Engine.commitTrusted). Never given for a REST request.
 */
export function settleInteractive(
  engine: Engine,
  id: string,
  action: 'commit' | 'abort',
  actor: string | null,
  trusted?: CallerTransaction,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return inSpan(`tpc.interactive.${action}`, { 'tpc.transaction.id': id }, async (span) => {
    const answer = await settle(engine, id, action, actor, trusted);
    span.setAttribute('tpc.transaction.status', String(answer.body.status));
    return answer;
  });
}

async function settle(
  engine: Engine,
  id: string,
  action: 'commit' | 'abort',
  actor: string | null,
  trusted?: CallerTransaction,
): Promise<{ status: number; body: Record<string, unknown> }> {
  let refusal: ConflictError | undefined;
  let known: TrustedAnswer | null = null;
  try {
    if (action === 'abort') await engine.abortInteractive(id, actor);
    else if (trusted) known = await engine.commitTrusted(id, trusted, actor);
    else await engine.commitInteractive(id, actor);
  } catch (err) {
    if (!(err instanceof ConflictError)) throw err;
    refusal = err;
  }
  const after = known ?? (await engine.get(id));
  const asked = action === 'commit' ? 'committed' : 'aborted';
  const status = after.status === asked && !refusal ? 200 : after.status === 'committed' || after.status === 'aborted' || refusal ? 409 : 202;
  return { status, body: { ...after, ...(refusal ? { refusal: { code: refusal.code, message: refusal.message } } : {}) } };
}
