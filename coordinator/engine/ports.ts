import type { Logger } from 'pino';
import type { Participant } from '../../participant-adapter/participant.ts';
import type { Admission } from './admission.ts';
import type { Failpoints } from './failpoints.ts';
import type { RecoveryLog, TransactionLog } from './log-port.ts';
import type { TxStatus } from './states.ts';

/** What the engine reports for metrics; implemented by coordinator/observability. */
export interface EngineObserver {
  phase(phase: 'work' | 'prepare' | 'decide' | 'complete' | 'total', seconds: number): void;
  outcome(status: TxStatus): void;
  branch(resource: string, outcome: 'committed' | 'aborted' | 'read_only' | 'pending'): void;
  hazard(resource: string): void;
}

/**
 * Reminders the engine leaves for later (BullMQ in the service). Each may fail (Redis down): the
 * log stays the truth and reconciliation recreates what is missing, so callers never wait on them
 * for correctness.
 */
export interface FollowUp {
  /** Phase 2 (or the outcome of a one-phase commit) is still to be finished. */
  completionPending(transactionId: string): Promise<void>;
  /** Abort the transaction at `deadlineAt` if it is still undecided then. */
  deadlineSet(transactionId: string, deadlineAt: number): Promise<void>;
  deadlineCleared(transactionId: string): Promise<void>;
  /** Retry the transaction's phase 2 now rather than at its backoff (its participant is back). */
  retryNow(transactionId: string): Promise<void>;
}

export interface EngineDeps {
  /** The log, as storage. Its state changes go through state-changes.ts only. */
  store: TransactionLog;
  recovery: RecoveryLog;
  participants: ReadonlyMap<string, Participant>;
  namespace: string;
  /** This process, as the driver recorded on the transactions it drives (the lease's owner). */
  instanceId: string;
  logger: Logger;
  observer: EngineObserver;
  followUp: FollowUp;
  failpoints: Failpoints;
  /**
   * Slots per resource for submitted transactions (the service always sets it). Interactive
   * transactions take none: their branches are opened and prepared by the services that join them,
   * and count against a cluster through the readings of pg_prepared_xacts.
   */
  admission?: Admission;
}
