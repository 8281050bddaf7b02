import { ConflictError, NotFoundError, StaleStateError } from '../errors.ts';
import { namespacePrefix } from '../engine/gid.ts';
import { fateStatus, finishAll, type Outcome } from '../engine/phase-two.ts';
import type { LoggedTransaction } from '../engine/log-port.ts';
import type { EngineDeps } from '../engine/ports.ts';
import { RECOVERY_LEASE_MS, resumeTransaction, type ResumeResult } from '../engine/resume-from-log.ts';
import { complete, decide as writeDecision, forcedError, recordOperatorAction } from '../engine/state-changes.ts';

export interface ResolveRequest {
  outcome: Outcome;
  reason: string;
  /** Act against a written decision: recorded as a heuristic outcome. */
  force: boolean;
  actor: string;
}

export interface ResolveResult {
  /** What was done: the operator's outcome became the decision, an existing decision was driven, or it was forced. */
  action: 'decided' | 'drove' | 'forced' | 'nothing';
  result: ResumeResult['state'];
}

const DECIDED: Record<string, Outcome> = { committing: 'commit', aborting: 'abort', committed: 'commit', aborted: 'abort' };

/**
 * An operator's resolution. Without a decision, the operator's outcome becomes the decision (written
 * durably, then driven); with one, only the same outcome is accepted (it drives completion now),
 * and the opposite is refused unless forced, which is recorded as a heuristic outcome. Every call
 * leaves an event with the actor, the reason and the result.
 */
export async function resolveTransaction(deps: EngineDeps, id: string, req: ResolveRequest): Promise<ResolveResult> {
  const seen = await deps.store.load(id);
  if (!seen) throw new NotFoundError(`transaction ${id} not found`);
  const audit = (action: string, detail: Record<string, unknown>) =>
    recordOperatorAction(deps, id, req.actor, { outcome: req.outcome, reason: req.reason, force: req.force, action, ...detail });

  if (seen.status === 'committed' || seen.status === 'aborted') {
    if (DECIDED[seen.status] === req.outcome) {
      await audit('nothing', { result: 'already finished' });
      return { action: 'nothing', result: 'finished' };
    }
    await audit('refused', { result: `already ${seen.status}` });
    throw new ConflictError('already_finished', `transaction ${id} is already ${seen.status}; nothing is prepared any more to ${req.outcome}`);
  }

  // An undecided transaction whose driver died keeps its lease until the deadline; an operator
  // need not wait for it (see acquire's takeOverUndecided).
  const tx = await deps.recovery.acquire(id, deps.instanceId, RECOVERY_LEASE_MS, { takeOverUndecided: true });
  if (!tx) {
    await audit('refused', { result: 'driven by another process' });
    throw new ConflictError(
      'busy',
      `transaction ${id} is being driven by ${seen.driver ?? 'another process'} until ${seen.leaseUntil?.toISOString?.() ?? seen.leaseUntil}; try again then`,
    );
  }
  try {
    if (tx.status === 'active') return await decide(deps, tx, req, audit);
    const decided = tx.status === 'preparing' ? null : DECIDED[tx.status];
    if (decided === req.outcome || tx.status === 'preparing') {
      if (tx.status === 'preparing') {
        // A one-phase commit's outcome is the participant's: only its xid can tell; nothing to choose.
        await audit('drove', { note: 'one-phase commit: the outcome is read from the participant' });
      } else {
        await audit('drove', {});
      }
      const r = await resumeTransaction(deps, id);
      return { action: 'drove', result: r.state };
    }
    if (!req.force) {
      await audit('refused', { result: `decision is ${decided}` });
      throw new ConflictError(
        'against_decision',
        `transaction ${id} has a durable ${decided} decision; resolving it as ${req.outcome} would break atomicity ` +
          `(some branches may already be ${decided === 'commit' ? 'committed' : 'rolled back'}). Resolve it as ${decided}, ` +
          'or pass "force": true to record a heuristic outcome',
      );
    }
    return await forceAgainst(deps, tx, req, decided!, audit);
  } finally {
    await deps.recovery.release(id, deps.instanceId).catch(() => {});
  }
}

/** No decision yet: the operator's outcome becomes it. Commit only if every branch is really prepared. */
async function decide(
  deps: EngineDeps,
  tx: LoggedTransaction,
  req: ResolveRequest,
  audit: (a: string, d: Record<string, unknown>) => Promise<void>,
): Promise<ResolveResult> {
  if (req.outcome === 'commit') {
    const missing: string[] = [];
    for (const b of tx.branches) {
      const participant = deps.participants.get(b.resource);
      const prepared = participant ? await participant.listPrepared(namespacePrefix(deps.namespace)).catch(() => null) : null;
      if (!prepared?.some((p) => p.gid === b.gid)) missing.push(b.resource);
    }
    if (missing.length) {
      await audit('refused', { result: `not prepared on ${missing.join(', ')}` });
      throw new ConflictError(
        'not_prepared',
        `cannot commit transaction ${tx.id}: its branch on ${missing.join(', ')} is not prepared (its work is gone or unreachable); only abort keeps it atomic`,
      );
    }
  }
  // branchesChecked: a branch joined after the check above must not be committed unchecked.
  await writeDecision(
    deps,
    tx.id,
    req.outcome === 'commit'
      ? { outcome: 'commit', checked: tx.branches.length, branches: tx.branches.map((b) => ({ index: b.index })) }
      : { outcome: 'abort', reason: { resource: null, statement: null, code: 'operator_abort', message: req.reason } },
    { by: 'operator', actor: req.actor, note: req.reason },
  ).catch(async (err: unknown) => {
    if (!(err instanceof StaleStateError)) throw err;
    await audit('refused', { result: 'changed meanwhile' });
    throw new ConflictError('busy', `transaction ${tx.id} changed while it was being resolved (decided by another process, or a branch joined); try again`);
  });
  await audit('decided', {});
  const r = await resumeTransaction(deps, tx.id);
  return { action: 'decided', result: r.state };
}

/** Against the decision, on the operator's word: the branches go the other way and the transaction is flagged heuristic. */
async function forceAgainst(
  deps: EngineDeps,
  tx: LoggedTransaction,
  req: ResolveRequest,
  decided: Outcome,
  audit: (a: string, d: Record<string, unknown>) => Promise<void>,
): Promise<ResolveResult> {
  const open = tx.branches.filter((b) => b.status === 'prepared' || b.status === 'active');
  const refs = open.map((b) => ({ index: b.index, resource: b.resource, gid: b.gid, xid: b.xid }));
  const results = await finishAll(deps.participants, refs, req.outcome, deps.failpoints);
  if (!results.every((r) => r.done)) {
    await audit('forced', { result: 'pending: some branches unreachable' });
    return { action: 'forced', result: 'pending' };
  }
  const forcedStatus = req.outcome === 'commit' ? 'committed' : 'aborted';
  for (const r of refs) deps.observer.hazard(r.resource);
  deps.logger.error(
    { transactionId: tx.id, decision: decided, forced: req.outcome, actor: req.actor, reason: req.reason },
    'operator forced a resolution against the decision: heuristic outcome',
  );
  await complete(
    deps,
    tx.id,
    {
      from: tx.status,
      outcome: decided === 'commit' ? 'committed' : 'aborted',
      error: forcedError(refs[0]?.resource ?? null, req.outcome, req.actor, decided, req.reason),
      branches: results.map((r) => ({
        index: r.index,
        status: r.done && r.hazard ? fateStatus(r.fate, forcedStatus) : forcedStatus,
        heuristic: `forced ${req.outcome}`,
      })),
    },
    { by: 'operator', actor: req.actor, forced: req.outcome },
  );
  await audit('forced', { result: `branches ${forcedStatus} against the ${decided} decision` });
  return { action: 'forced', result: 'finished' };
}
