import { randomUUID } from 'node:crypto';
import { ConflictError, NotFoundError, StaleStateError } from '../errors.ts';
import { branchGid } from './gid.ts';
import type { EngineDeps } from './ports.ts';
import { RECOVERY_LEASE_MS, resumeTransaction } from './resume-from-log.ts';
import type { TxError } from './types.ts';

export interface InteractiveBegin {
  id: string;
  status: 'active';
  deadline: string;
  branches: { resource: string; gid: string }[];
}

/**
 * Interactive transactions: the service runs its statements on its own connections and prepares
 * each branch under the gid given here; the coordinator only decides. It never takes the service's
 * word that a branch is prepared: commit looks every gid up in pg_prepared_xacts first.
 */
export async function beginInteractive(deps: EngineDeps, resources: string[], timeoutMs: number, actor: string | null): Promise<InteractiveBegin> {
  const id = randomUUID();
  const deadlineAt = Date.now() + timeoutMs;
  const branches = resources.map((resource, index) => ({ index, resource, gid: branchGid(deps.namespace, id, index) }));
  await deps.store.begin({
    id, namespace: deps.namespace, deadline: new Date(deadlineAt), submittedBy: actor, driver: deps.instanceId,
    branches, detail: { timeoutMs, resources, interactive: true },
  });
  // The service may die after preparing: the deadline job (or reconciliation) then rolls back.
  deps.followUp.deadlineSet(id, deadlineAt).catch(() => {});
  return { id, status: 'active', deadline: new Date(deadlineAt).toISOString(), branches: branches.map(({ resource, gid }) => ({ resource, gid })) };
}

/**
 * The service asks to commit. Every branch must really be prepared on its database; any that is
 * not makes the outcome abort. Past the deadline, or already decided, the answer is the outcome.
 */
export async function commitInteractive(deps: EngineDeps, id: string, actor: string | null): Promise<void> {
  const tx = await takeUndecided(deps, id, 'commit');
  const missing: string[] = [];
  const xids = new Map<number, string | null>();
  await Promise.all(tx.branches.map(async (b) => {
    const p = deps.participants.get(b.resource);
    const seen = p ? await p.inspectPrepared(b.gid).catch(() => null) : null;
    if (!seen) missing.push(b.resource);
    else xids.set(b.index, seen.xid);
  }));
  if (new Date(tx.deadline).getTime() <= Date.now()) {
    await decideAbort(deps, id, actor, { resource: null, statement: null, code: 'deadline_exceeded', message: 'the commit arrived after the deadline' });
    throw new ConflictError('deadline_passed', `transaction ${id} passed its deadline before the commit; it is aborted`);
  }
  if (missing.length) {
    await decideAbort(deps, id, actor, { resource: missing[0]!, statement: null, code: 'not_prepared', message: `the branch on ${missing.join(', ')} is not prepared under its gid` });
    throw new ConflictError('not_prepared', `cannot commit transaction ${id}: the branch on ${missing.join(', ')} is not prepared under its gid; the transaction is aborted`);
  }
  await deps.store.transition({
    id, driver: deps.instanceId, from: 'active', to: 'committing', forced: true,
    branches: tx.branches.map((b) => ({ index: b.index, status: 'prepared' as const, xid: xids.get(b.index) ?? null })),
    event: { kind: 'decided', actor, detail: { outcome: 'commit', interactive: true } },
  }).catch(rethrowStale(id));
  await resumeTransaction(deps, id);
}

/** The service asks to abort: every prepared branch is rolled back. */
export async function abortInteractive(deps: EngineDeps, id: string, actor: string | null): Promise<void> {
  await takeUndecided(deps, id, 'abort');
  await decideAbort(deps, id, actor, { resource: null, statement: null, code: 'aborted_by_client', message: 'the client aborted the transaction' });
}

async function decideAbort(deps: EngineDeps, id: string, actor: string | null, reason: TxError): Promise<void> {
  await deps.store.transition({
    id, driver: deps.instanceId, from: 'active', to: 'aborting', forced: false, error: reason,
    event: { kind: 'decided', actor, detail: { outcome: 'abort', reason, interactive: true } },
  }).catch(rethrowStale(id));
  await resumeTransaction(deps, id);
}

/** Takes the lease of an undecided transaction (the decision is a compare-and-set, so a live holder is no obstacle). */
async function takeUndecided(deps: EngineDeps, id: string, wanted: string) {
  const tx = await deps.recovery.acquire(id, deps.instanceId, RECOVERY_LEASE_MS, { takeOverUndecided: true });
  const seen = tx ?? (await deps.store.load(id));
  if (!seen) throw new NotFoundError(`transaction ${id} not found`);
  if (!tx || seen.status !== 'active') {
    throw new ConflictError('already_decided', `transaction ${id} is already ${seen.status}; it cannot ${wanted} now`);
  }
  return tx;
}

function rethrowStale(id: string) {
  return (err: unknown) => {
    if (err instanceof StaleStateError) throw new ConflictError('already_decided', `transaction ${id} was decided meanwhile`);
    throw err;
  };
}
