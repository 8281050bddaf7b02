import type { BeginRecord, BranchUpdate, TransitionRecord } from './log-port.ts';
import type { Outcome } from './phase-two.ts';
import type { EngineDeps } from './ports.ts';
import { canTransition, type TxStatus } from './states.ts';
import type { TxError } from './types.ts';

/*
 * The one gateway for a transaction's state changes: every decision and every completion is built
 * and checked here, then written by the log's compare-and-set (status = from, driver = this
 * instance, the branches checked). The records (events, their details, what a lean row derives)
 * are what GET /v1/transactions/:id shows, so each caller's wording is kept as it always was.
 */

/** Who decided: the submit's driver, recovery (the deadline passed), the interactive client, an operator. */
export type Decider =
  | { by: 'driver' }
  | { by: 'recovery' }
  /** owner (given with a commit): the token that began it; its own commit is the happy path, derived rather than written. */
  | { by: 'client'; actor: string | null; owner?: string | null }
  /** note: the operator's reason, recorded as said. */
  | { by: 'operator'; actor: string; note: string };

export type Decision =
  /** checked: the branches the decider saw prepared; a branch joined since makes the write stale. */
  | {
      outcome: 'commit';
      checked: number;
      branches: { index: number; xid?: string | null; readOnly?: boolean; resource?: string; gid?: string }[];
      /** The branches carry their resource and gid too: the whole list (TransitionRecord.branchesWhole). */
      whole?: boolean;
    }
  /** The single branch's xid, durable before its COMMIT so that recovery can learn the outcome. */
  | { outcome: 'one-phase commit'; xid: string }
  | { outcome: 'abort'; reason: TxError; checked?: number; branches?: BranchUpdate[] };

/** Who completed: the driver inline, recovery (or an interactive commit finished inline), an operator forcing. */
export type Completer =
  | { by: 'driver' }
  | { by: 'recovery'; inline?: boolean }
  /** Against the written decision, on the operator's word: always heuristic. */
  | { by: 'operator'; actor: string; forced: Outcome };

/** A branch found ended against the decision (by hand, behind the coordinator's back). */
export interface Hazard {
  index: number;
  resource: string;
  fate: string;
}

export interface Completion {
  from: TxStatus;
  outcome: 'committed' | 'aborted';
  /** What the transaction reports: an abort's reason, a hazard (see hazardError), a failed one-phase commit. */
  error?: TxError | null;
  hazards?: Hazard[];
  branches?: BranchUpdate[];
  /** `branches` is the whole list (TransitionRecord.branchesWhole). */
  whole?: boolean;
}

/** What the gateway needs: the log, and this instance as the lease holder its compare-and-sets name. */
export type Writer = Pick<EngineDeps, 'store' | 'instanceId'>;

/** A from → to that the transition table does not allow; refused before anything is written. */
export class IllegalTransitionError extends Error {
  override readonly name = 'IllegalTransitionError';
  constructor(
    readonly transactionId: string,
    readonly from: TxStatus,
    readonly to: TxStatus,
  ) {
    super(`illegal transition ${from} → ${to} for ${transactionId}`);
  }
}

const DECISION_STATUS: Record<Decision['outcome'], TxStatus> = { commit: 'committing', 'one-phase commit': 'preparing', abort: 'aborting' };

/**
 * Writes a decision, from active. A commit (two-phase or one-phase) is forced: it is the commit
 * point. An abort need not be (presumed abort), except an operator's, whose word is recorded at once.
 * StaleStateError when another process moved first, a branch joined since `checked`, or this
 * instance no longer holds the lease.
 */
export function decide(deps: Writer, id: string, decision: Decision, who: Decider, unwritten?: BeginRecord | null): Promise<void> {
  return asRejection(decisionWrite, deps, id, decision, who, unwritten);
}

/**
 * `fn(...args)`, a throw turned into a rejection as an async function would turn it, without the
 * async function's own promise and await: decide and complete run twice per transaction (issue 13).
 */
function asRejection<A extends unknown[]>(fn: (...args: A) => Promise<void>, ...args: A): Promise<void> {
  try {
    return fn(...args);
  } catch (err) {
    return Promise.reject(err);
  }
}

function decisionWrite(deps: Writer, id: string, decision: Decision, who: Decider, unwritten?: BeginRecord | null): Promise<void> {
  const actor = who.by === 'client' || who.by === 'operator' ? who.actor : undefined;
  const base = { id, driver: deps.instanceId, from: 'active' as const, to: DECISION_STATUS[decision.outcome], ...inserting(unwritten) };
  switch (decision.outcome) {
    case 'commit':
      return write(deps, {
        ...base,
        forced: true,
        branchesChecked: decision.checked,
        branches: decision.branches.map((b) => ({ index: b.index, resource: b.resource, gid: b.gid, status: 'prepared', xid: b.xid, readOnly: b.readOnly })),
        branchesWhole: decision.whole,
        event: {
          kind: 'decided',
          actor,
          detail: { outcome: 'commit', ...decisionNote(who) },
          derivable: who.by === 'driver' || (who.by === 'client' && who.actor === who.owner),
        },
      });
    case 'one-phase commit':
      return write(deps, {
        ...base,
        forced: true,
        onePhase: true,
        branches: [{ index: 0, status: 'active', xid: decision.xid }],
        event: { kind: 'decided', actor, detail: { outcome: 'one-phase commit', ...decisionNote(who) }, derivable: who.by === 'driver' },
      });
    case 'abort':
      return write(deps, {
        ...base,
        forced: who.by === 'operator',
        error: decision.reason,
        branchesChecked: decision.checked,
        branches: decision.branches,
        event: { kind: 'decided', actor, detail: { outcome: 'abort', reason: decision.reason, ...decisionNote(who) } },
      });
  }
}

/** A first state change of a transaction whose begin record was never written: it inserts the row. */
function inserting(unwritten: BeginRecord | null | undefined): { insert?: BeginRecord } {
  return unwritten ? { insert: unwritten } : {};
}

function decisionNote(who: Decider): Record<string, unknown> {
  switch (who.by) {
    case 'driver':
      return {};
    case 'recovery':
      return { by: 'recovery' };
    case 'client':
      return { interactive: true };
    // The operator's own words stand as the reason (an operator's abort also carries them as its error).
    case 'operator':
      return { by: 'operator', reason: who.note };
  }
}

/**
 * Writes a final state: a clean completion, one with hazards (flagged heuristic for operators), or
 * an operator's forced one. Not forced (a lost completion is found and written again by recovery),
 * except an operator's, which acts against the decision and is recorded at once.
 */
export function complete(deps: Writer, id: string, c: Completion, who: Completer, unwritten?: BeginRecord | null): Promise<void> {
  return asRejection(completionWrite, deps, id, c, who, unwritten);
}

function completionWrite(deps: Writer, id: string, c: Completion, who: Completer, unwritten?: BeginRecord | null): Promise<void> {
  const hazards = c.hazards ?? [];
  const heuristic = who.by === 'operator' || hazards.length > 0;
  const error = c.error ?? null;
  // From active, the completion is also the decision: a driver's abort with nothing prepared.
  const kind = c.from === 'active' && c.outcome === 'aborted' ? 'aborted' : 'completed';
  const base = {
    id,
    driver: deps.instanceId,
    from: c.from,
    to: c.outcome,
    error: c.error ?? undefined,
    heuristic,
    branches: c.branches,
    branchesWhole: c.whole,
    ...inserting(unwritten),
  };
  switch (who.by) {
    case 'driver':
      return write(deps, {
        ...base,
        forced: false,
        // The driver's answer has gone (or goes without waiting for this): it may share a later statement.
        lingers: true,
        event: {
          kind,
          detail: error ? { outcome: c.outcome, reason: error } : { outcome: c.outcome },
          derivable: kind === 'completed' && c.outcome === 'committed' && !error && !heuristic,
        },
      });
    case 'recovery':
      return write(deps, {
        ...base,
        forced: false,
        event: {
          kind,
          detail: {
            outcome: c.outcome,
            ...(who.inline ? {} : { by: 'recovery' }),
            ...(hazards.length > 0 ? { heuristic: hazards.map((h) => ({ resource: h.resource, fate: h.fate })) } : {}),
          },
          derivable: who.inline === true && c.outcome === 'committed' && !heuristic,
        },
      });
    case 'operator':
      return write(deps, {
        ...base,
        forced: true,
        event: { kind, actor: who.actor, detail: { outcome: c.outcome, heuristic: true, forced: who.forced } },
      });
  }
}

/**
 * The error a hazard gives its transaction. `decision` names the outcome in the message when the
 * completer read it from the log (recovery); the driver's message has always left it out.
 */
export function hazardError(h: Hazard, decision: Outcome | null): TxError {
  return {
    resource: h.resource,
    statement: null,
    code: 'heuristic_hazard',
    message: `branch on ${h.resource} ended ${h.fate} against the ${decision ? `${decision} ` : ''}decision`,
  };
}

/** The error an operator's forced completion records. */
export function forcedError(resource: string | null, forced: Outcome, actor: string, decided: Outcome, note: string): TxError {
  return { resource, statement: null, code: 'heuristic_hazard', message: `forced ${forced} by ${actor} against the ${decided} decision: ${note}` };
}

/** Every operator call on a transaction leaves this event: the actor, the reason and what came of it. */
export function recordOperatorAction(deps: Writer, id: string, actor: string, detail: Record<string, unknown>): Promise<void> {
  return deps.store.appendEvent(id, 'operator_resolve', actor, detail);
}

/** The transition table's check, before any write: a decision once written never changes. */
function write(deps: Writer, record: TransitionRecord): Promise<void> {
  if (!canTransition(record.from, record.to)) return Promise.reject(new IllegalTransitionError(record.id, record.from, record.to));
  // A row is inserted only as its first change, by its own driver.
  if (record.insert && (record.from !== 'active' || record.insert.id !== record.id))
    return Promise.reject(new IllegalTransitionError(record.id, record.from, record.to));
  return deps.store.transition(record);
}
