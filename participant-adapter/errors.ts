export interface ParticipantErrorOptions {
  /** SQLSTATE reported by the database, when there was one. */
  sqlState?: string;
  /** Whether trying the same operation again may succeed (a dropped connection, a restart). */
  retryable: boolean;
  resource?: string;
  cause?: unknown;
}

/** Something a participant database did or failed to do, with the SQLSTATE when it has one. */
export class ParticipantError extends Error {
  override readonly name = 'ParticipantError';
  readonly code: string;
  readonly sqlState: string | undefined;
  readonly retryable: boolean;
  readonly resource: string | undefined;

  constructor(code: string, message: string, options: ParticipantErrorOptions) {
    super(message, { cause: options.cause });
    this.code = code;
    this.sqlState = options.sqlState;
    this.retryable = options.retryable;
    this.resource = options.resource;
  }
}

// Class 08 (connection exception), 57P0x (admin shutdown, crash shutdown, cannot connect now),
// 53300 (too many connections) and 40001/40P01 are conditions that a later attempt can outlive.
const RETRYABLE_SQLSTATE = /^(08|57P0[1-4]|53300|40001|40P01|55006)/;

/** Maps a driver or socket error to a ParticipantError, keeping the original as `cause`. */
export function toParticipantError(err: unknown, resource: string, what: string): ParticipantError {
  if (err instanceof ParticipantError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const sqlState = typeof e?.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) ? e.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (sqlState) {
    return new ParticipantError(sqlState, `${what} on ${resource}: ${message}`, {
      sqlState,
      retryable: RETRYABLE_SQLSTATE.test(sqlState),
      resource,
      cause: err,
    });
  }
  // No SQLSTATE: the socket failed (refused, reset, timed out) and the server's view is unknown.
  return new ParticipantError('connection_failure', `${what} on ${resource}: ${message}`, {
    retryable: true,
    resource,
    cause: err,
  });
}
