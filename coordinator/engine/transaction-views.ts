import type { LoggedTransaction } from './log-port.ts';
import type { TransactionDetail, TransactionView, TxError } from './types.ts';

/** A transaction's answer as the log holds it (the answer a run builds from memory has the same shape). */
export function viewOf(tx: LoggedTransaction): TransactionView {
  return {
    id: tx.id,
    status: tx.status,
    branches: tx.branches.map((b) => ({
      resource: b.resource,
      status: b.status,
      readOnly: b.readOnly,
      results: (b.results as TransactionView['branches'][number]['results'] | null) ?? [],
    })),
    error: (tx.error as TxError | null) ?? null,
  };
}

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

/** The answer with its audit trail: GET /v1/transactions/:id. */
export function detailOf(tx: LoggedTransaction): TransactionDetail {
  return {
    ...viewOf(tx),
    inDoubt: tx.inDoubt,
    heuristic: tx.heuristic,
    attempts: tx.attempts,
    lastError: tx.lastError ?? null,
    onePhase: tx.onePhase,
    deadline: iso(tx.deadline)!,
    createdAt: iso(tx.createdAt)!,
    decidedAt: iso(tx.decidedAt),
    completedAt: iso(tx.completedAt),
    events: tx.events.map((e) => ({ at: iso(e.at)!, kind: e.kind, actor: e.actor, detail: e.detail })),
  };
}
