/*
 * The entry point of the pg-2pc-client package: what a service needs to take part in global
 * transactions (the SDK's client, its errors and prepareBranch for joined branches), and nothing
 * that runs a coordinator. Everything this file reaches, in values and in types, ships in that
 * package, which depends on pg and kysely only: an import of the service, express, BullMQ or
 * ioredis from here would fail `npm run package` (scripts/package.js checks the graph).
 */
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
export { SubmissionOutcomeUnknownError, TransactionAbortedError, TransactionOutcomeUnknownError, type AbortCode } from './errors.ts';
export type { Submission, SubmitOptions, SubmittedStatement } from './submit.ts';
export type { OutcomeOptions, OutcomeReport } from './outcome.ts';
// prepareBranch throws ParticipantError (a refused gid, a failed PREPARE): exported for instanceof.
export { ParticipantError } from '../../participant-adapter/errors.ts';
export { prepareBranch, type PrepareBranchOptions } from '../../participant-adapter/prepare-branch.ts';
