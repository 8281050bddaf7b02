export { createClient, TransactionAbortedError, type ClientOptions, type GlobalTransaction, type Outcome, type TpcClient, type TransactionOptions } from './client.ts';
export { createCoordinator, type EmbeddedCoordinator } from './embedded.ts';
