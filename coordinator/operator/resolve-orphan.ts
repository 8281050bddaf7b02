import { ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import type { Outcome } from '../engine/phase-two.ts';
import { fenceAbandoned } from '../engine/abandoned.ts';
import type { EngineDeps } from '../engine/ports.ts';
import { findOrphans } from './inspection.ts';

export interface OrphanResolveRequest {
  resource: string;
  gid: string;
  outcome: Outcome;
  reason: string;
  force: boolean;
  actor: string;
}

/**
 * Finishes a prepared branch of the namespace that the log does not know. With no record there is
 * no commit decision, so presumed abort says roll it back; committing it is allowed only when
 * forced (an operator who knows better, e.g. its siblings committed). Audited either way.
 */
export async function resolveOrphan(deps: EngineDeps, req: OrphanResolveRequest): Promise<{ result: 'rolled-back' | 'committed' }> {
  const participant = deps.participants.get(req.resource);
  if (!participant) throw new ValidationError(`unknown resource "${req.resource}"`);
  const audit = (action: string, detail: Record<string, unknown>, transactionId: string | null = null) =>
    deps.recovery.audit({
      actor: req.actor,
      action,
      resource: req.resource,
      gid: req.gid,
      transactionId,
      reason: req.reason,
      detail: { outcome: req.outcome, force: req.force, ...detail },
    });

  const { orphans } = await findOrphans(deps);
  const orphan = orphans.find((o) => o.resource === req.resource && o.gid === req.gid);
  if (!orphan) {
    await audit('orphan_refused', { result: 'not an orphan' });
    throw new NotFoundError(
      `no orphan ${req.gid} on ${req.resource}: it is not prepared there, belongs to another namespace, or the log knows its transaction (resolve the transaction instead)`,
    );
  }
  if (req.outcome === 'commit' && !req.force) {
    await audit('orphan_refused', { result: 'commit without force' }, orphan.transactionId);
    throw new ConflictError(
      'orphan_commit_refused',
      `the log holds no commit decision for ${req.gid}, so presumed abort rolls it back; committing it needs "force": true`,
    );
  }
  if (req.outcome === 'abort' && orphan.transactionId && (await fenceAbandoned(deps, orphan.transactionId, req.resource, [req.gid])) === 'wait') {
    // Its driver's decision reached the log first: the transaction is no orphan, and is driven as any.
    await audit('orphan_refused', { result: 'decided meanwhile' }, orphan.transactionId);
    throw new ConflictError('orphan_gone', `the log now holds transaction ${orphan.transactionId} of ${req.gid}: resolve the transaction instead`);
  }
  const r = req.outcome === 'commit' ? await participant.commitPrepared(req.gid) : await participant.rollbackPrepared(req.gid);
  if (r === 'not-found') {
    await audit('orphan_refused', { result: 'finished meanwhile' }, orphan.transactionId);
    throw new ConflictError('orphan_gone', `${req.gid} was finished by someone else meanwhile`);
  }
  await audit('orphan_resolved', { result: r }, orphan.transactionId);
  if (req.outcome === 'commit') {
    deps.logger.error(
      { resource: req.resource, gid: req.gid, actor: req.actor, reason: req.reason },
      'operator committed an orphan branch without a decision: heuristic outcome',
    );
  }
  return { result: r };
}
