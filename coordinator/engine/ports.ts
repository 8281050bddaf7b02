import type { Logger } from 'pino';
import type { Participant } from '../../participant-adapter/participant.ts';
import type { TransactionsStore } from '../log/transactions-store.ts';
import type { TxStatus } from './states.ts';

/** What the engine reports for metrics; implemented by coordinator/observability. */
export interface EngineObserver {
  phase(phase: 'work' | 'prepare' | 'decide' | 'complete' | 'total', seconds: number): void;
  outcome(status: TxStatus): void;
  branch(resource: string, outcome: 'committed' | 'aborted' | 'read_only' | 'pending'): void;
  hazard(resource: string): void;
}

/** Where phase-2 work that could not finish inline goes (the BullMQ completion queue in the service). */
export interface FollowUp {
  completionPending(transactionId: string): Promise<void>;
}

export interface EngineDeps {
  store: TransactionsStore;
  participants: ReadonlyMap<string, Participant>;
  namespace: string;
  logger: Logger;
  observer: EngineObserver;
  followUp: FollowUp;
}

export const silentObserver: EngineObserver = {
  phase() {},
  outcome() {},
  branch() {},
  hazard() {},
};
