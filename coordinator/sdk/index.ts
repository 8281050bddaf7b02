export {
  createClient, type ClientOptions, type GlobalTransaction, type JoinedBranch, type Outcome, type TpcClient, type TransactionOptions,
} from './client.ts';
export { createCoordinator, type EmbeddedCoordinator } from './embedded.ts';
export { TransactionAbortedError, type AbortCode } from './errors.ts';
