import { randomUUID } from 'node:crypto';
import { ConflictError, NotFoundError, StaleStateError } from '../errors.ts';
import { branchGid, namespacePrefix } from './gid.ts';
import type { BeginRecord, LoggedTransaction } from './log-port.ts';
import type { EngineDeps } from './ports.ts';
import { finishHeld, RECOVERY_LEASE_MS, resumeTransaction } from './resume-from-log.ts';
import { decide } from './state-changes.ts';
import { deadlineStampedId } from './transaction-id.ts';
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
export async function beginInteractive(
  deps: EngineDeps,
  resources: string[],
  timeoutMs: number,
  actor: string | null,
  defer?: (record: BeginRecord) => void,
): Promise<InteractiveBegin> {
  const deadlineAt = Date.now() + timeoutMs;
  // A deferred begin record's id carries the deadline, as a submitted transaction's (transaction-id.ts).
  const id = defer ? deadlineStampedId(deadlineAt) : randomUUID();
  const branches = resources.map((resource, index) => ({ index, resource, gid: branchGid(deps.namespace, id, index) }));
  const record: BeginRecord = {
    id,
    namespace: deps.namespace,
    deadline: new Date(deadlineAt),
    submittedBy: actor,
    driver: deps.instanceId,
    branches,
    timeoutMs,
    interactive: true,
  };
  if (defer) defer(record);
  else await deps.store.begin(record);
  return { id, status: 'active', deadline: new Date(deadlineAt).toISOString(), branches: branches.map(({ resource, gid }) => ({ resource, gid })) };
}

export interface JoinedBranch {
  index: number;
  resource: string;
  gid: string;
  deadline: string;
  /** False when the resource already had a branch in the transaction (a retried join): that one. */
  created: boolean;
}

/**
 * Adds a branch on `resource` to an active interactive transaction, for a service to prepare under
 * the gid returned; the commit then checks it like every other branch. Joining a resource that
 * already has a branch returns that branch, so a retried request is harmless.
 */
export async function joinInteractive(deps: EngineDeps, id: string, resource: string, actor: string | null): Promise<JoinedBranch> {
  // Joins that keep racing for one resource end in ConcurrentJoinError: a conflict to retry, not a fault.
  const joined = await deps.store.joinBranch({ id, resource, gidPrefix: `${namespacePrefix(deps.namespace)}${id}:`, actor });
  if (!joined) {
    const tx = await deps.store.load(id);
    if (!tx) throw new NotFoundError(`transaction ${id} not found`);
    if (tx.events.find((e) => e.kind === 'begun')?.detail?.interactive !== true) {
      throw new ConflictError('not_interactive', `transaction ${id} was submitted with its statements; only an interactive transaction takes joined branches`);
    }
    if (tx.status !== 'active') throw new ConflictError('not_active', `transaction ${id} is already ${tx.status}; no branch can join it`);
    throw new ConflictError('deadline_passed', `transaction ${id} passed its deadline; no branch can join it`);
  }
  // The log formed the gid from the prefix given above; it must be the one branchGid makes.
  if (joined.gid !== branchGid(deps.namespace, id, joined.index)) throw new Error(`the log formed gid ${joined.gid} for branch ${joined.index} of ${id}`);
  return { index: joined.index, resource, gid: joined.gid, deadline: new Date(joined.deadline).toISOString(), created: joined.created };
}

// A join landing between the commit's check of the databases and its decision makes the decision
// fail; the check is then made again with the new branch. Three rounds: joins come from the
// service that asks to commit, so a fourth one racing the same commit would be a bug of its own.
const COMMIT_ROUNDS = 3;

/**
 * The service asks to commit. Every branch must really be prepared on its database; any that is
 * not makes the outcome abort. Past the deadline, or already decided, the answer is the outcome.
 */
export async function commitInteractive(deps: EngineDeps, id: string, actor: string | null): Promise<void> {
  for (let round = 1; ; round++) {
    try {
      return await commitOnce(deps, id, actor);
    } catch (err) {
      if (!(err instanceof StaleStateError) || round >= COMMIT_ROUNDS) throw stale(id, err);
      if ((await deps.store.load(id))?.status !== 'active') throw stale(id, err);
    }
  }
}

async function commitOnce(deps: EngineDeps, id: string, actor: string | null): Promise<void> {
  const tx = await takeUndecided(deps, id, 'commit');
  const missing: string[] = [];
  const xids = new Map<number, string | null>();
  await Promise.all(
    tx.branches.map(async (b) => {
      const p = deps.participants.get(b.resource);
      const seen = p ? await p.inspectPrepared(b.gid, { locks: false }).catch(() => null) : null;
      if (!seen) missing.push(b.resource);
      else xids.set(b.index, seen.xid);
    }),
  );
  if (new Date(tx.deadline).getTime() <= Date.now()) {
    await decideAbort(deps, id, actor, { resource: null, statement: null, code: 'deadline_exceeded', message: 'the commit arrived after the deadline' });
    throw new ConflictError('deadline_passed', `transaction ${id} passed its deadline before the commit; it is aborted`);
  }
  if (missing.length) {
    await decideAbort(deps, id, actor, {
      resource: missing[0]!,
      statement: null,
      code: 'not_prepared',
      message: `the branch on ${missing.join(', ')} is not prepared under its gid`,
    });
    throw new ConflictError(
      'not_prepared',
      `cannot commit transaction ${id}: the branch on ${missing.join(', ')} is not prepared under its gid; the transaction is aborted`,
    );
  }
  // StaleStateError here: decided meanwhile, or a branch joined since the check (commitInteractive tells which).
  await decide(
    deps,
    id,
    {
      outcome: 'commit',
      checked: tx.branches.length,
      branches: tx.branches.map((b) => ({ index: b.index, xid: xids.get(b.index) ?? null })),
    },
    { by: 'client', actor, owner: tx.submittedBy },
  );
  // Still under the lease taken above, and the log now holds what was just written: phase 2 from
  // that, without taking the lease again or reading the transaction back.
  await finishNow(deps, id, {
    ...tx,
    status: 'committing',
    branches: tx.branches.map((b) => ({ ...b, status: 'prepared' as const, xid: xids.get(b.index) ?? null })),
  });
}

/** The service asks to abort: every prepared branch is rolled back. */
export async function abortInteractive(deps: EngineDeps, id: string, actor: string | null): Promise<void> {
  await takeUndecided(deps, id, 'abort');
  await decideAbort(deps, id, actor, { resource: null, statement: null, code: 'aborted_by_client', message: 'the client aborted the transaction' });
}

async function decideAbort(deps: EngineDeps, id: string, actor: string | null, reason: TxError): Promise<void> {
  await decide(deps, id, { outcome: 'abort', reason }, { by: 'client', actor }).catch(rethrowStale(id));
  await finishNow(deps, id);
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

function stale(id: string, err: unknown): unknown {
  return err instanceof StaleStateError ? new ConflictError('already_decided', `transaction ${id} was decided meanwhile`) : err;
}

function rethrowStale(id: string) {
  return (err: unknown) => {
    throw stale(id, err);
  };
}

/**
 * Phase 2 right after the decision, as a submit does it. If a participant cannot be finished now,
 * the completion job takes over at once (with backoff and the in-doubt count), rather than the
 * next reconciliation pass.
 */
async function finishNow(deps: EngineDeps, id: string, held?: LoggedTransaction): Promise<void> {
  const result = await (held ? finishHeld(deps, held, { inline: true }) : resumeTransaction(deps, id));
  if (result.state !== 'pending') return;
  await deps.followUp
    .completionPending(id)
    .catch((err: unknown) => deps.logger.warn({ err, transactionId: id }, 'could not queue completion; reconciliation will find it'));
}
