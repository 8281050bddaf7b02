/*
 * The coordinator's error classes. Each has a stable `code` (the API turns it into the problem
 * type), the context a caller needs, and the original error as `cause`. `retryable` says whether
 * the same request may succeed later.
 */
export abstract class CoordinatorError extends Error {
  abstract readonly code: string;
  abstract readonly retryable: boolean;
}

/** The request is malformed or names something that does not exist; nothing was done. */
export class ValidationError extends CoordinatorError {
  override readonly name = 'ValidationError';
  readonly code = 'validation';
  readonly retryable = false;
  constructor(
    message: string,
    readonly issues: { path: string; message: string }[] = [],
  ) {
    super(message);
  }
}

export class NotFoundError extends CoordinatorError {
  override readonly name = 'NotFoundError';
  readonly code = 'not_found';
  readonly retryable = false;
}

/** The request conflicts with the state of the log (an idempotency key reused with another body, …). */
export class ConflictError extends CoordinatorError {
  override readonly name = 'ConflictError';
  readonly retryable = false;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A compare-and-set on the log matched no row: another process moved the transaction first.
 * Never a silent success: the caller re-reads and follows what the log now says.
 */
export class StaleStateError extends CoordinatorError {
  override readonly name = 'StaleStateError';
  readonly code = 'stale_state';
  readonly retryable = false;
  constructor(
    readonly transactionId: string,
    readonly expected: string,
    readonly wanted: string,
  ) {
    super(`transaction ${transactionId} was not ${expected} when moving it to ${wanted}`);
  }
}

/** The log database or Redis cannot be reached; the request did nothing that is not recoverable. */
export class UnavailableError extends CoordinatorError {
  override readonly name = 'UnavailableError';
  readonly code = 'unavailable';
  readonly retryable = true;
  /** Sent as Retry-After when the service knows when asking again makes sense. */
  readonly retryAfterSeconds?: number;
  constructor(message: string, options?: { cause?: unknown; retryAfterSeconds?: number }) {
    super(message, options);
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

/**
 * A log write that certainly changed nothing: the server refused the statement, the connection
 * was never made, or the write was refused before it was sent. Unlike a connection lost mid-write,
 * whose outcome must be read back from the log, the caller may act on "not written" at once.
 */
export class UnwrittenError extends UnavailableError {
  constructor(transactionId: string, cause: unknown) {
    super(`the transaction log did not record the write for transaction ${transactionId}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
  }
}

/**
 * The service is at capacity for a resource the transaction names: every slot is taken and no slot
 * freed within the bounded wait, the wait queue is full, or the resource's cluster refused a
 * PREPARE because its prepared-transaction slots were all held (SQLSTATE 53200). Nothing was
 * applied. Retryable after `retryAfterSeconds`; a refused keyed request with no `transactionId` left
 * nothing in the log either, so the same Idempotency-Key may be sent again.
 */
export class OverloadedError extends CoordinatorError {
  override readonly name = 'OverloadedError';
  readonly code = 'overloaded';
  readonly retryable = true;
  constructor(
    message: string,
    readonly resource: string,
    readonly reason: 'queue_full' | 'wait_timeout' | 'no_capacity' | 'prepare_refused',
    readonly retryAfterSeconds: number,
    /** Set when the transaction was begun and then aborted (a PREPARE met 53200): its record says why. */
    readonly transactionId?: string,
  ) {
    super(message);
  }
}
