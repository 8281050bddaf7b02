export {
  createClient,
  type ClientOptions,
  type GlobalTransaction,
  type JoinedBranch,
  type Outcome,
  type TpcClient,
  type TransactionOptions,
} from './client.ts';
export type { CoordinatorAnswer, InProcessCoordinator } from './coordinator-call.ts';
export { createCoordinator, type EmbeddedCoordinator } from './embedded.ts';
export { SubmissionOutcomeUnknownError, TransactionAbortedError, TransactionOutcomeUnknownError, type AbortCode } from './errors.ts';
export type { Submission, SubmitOptions, SubmittedStatement } from './submit.ts';
export type { OutcomeOptions, OutcomeReport } from './outcome.ts';
