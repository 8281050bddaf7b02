/** The API's answers as the CLI reads them (type-only imports: nothing of the service is loaded). */
import type { TransactionDetail } from '../engine/types.ts';
import type { TransactionSummary } from '../log/transaction-list.ts';
import type { Orphan, ResourceReport } from '../operator/inspection.ts';
import type { ResolveResult } from '../operator/resolve.ts';

export type { Orphan, ResourceReport, TransactionDetail, TransactionSummary };

export interface TransactionPage {
  items: TransactionSummary[];
  next: string | null;
}

export interface ResolveAnswer extends ResolveResult {
  transaction: TransactionDetail;
}

export interface OrphansAnswer {
  items: Orphan[];
  unreachable: string[];
}

export interface ResourcesAnswer {
  items: ResourceReport[];
}
