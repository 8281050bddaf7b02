/** Exit codes of `tpc`: 0 success, 1 the API (or the network) failed, 2 the command line is wrong. */
export const EXIT_API = 1;
export const EXIT_USAGE = 2;

/** The command line is wrong: exit 2, after printing what is wrong. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** An answer in application/problem+json (or any non-2xx answer), kept whole for the message. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    readonly type: string | null,
    readonly title: string,
    readonly detail: string | null,
    readonly body: unknown,
    /** What to do about it, when the CLI knows (a 401: where the token comes from). */
    readonly hint: string | null = null,
  ) {
    super(detail ?? title);
  }
}

/** The service could not be reached or did not answer in time. */
export class ConnectionError extends Error {
  override readonly name = 'ConnectionError';
}

/** What to print on stderr for an error, and the exit code. */
export function describeError(err: unknown): { message: string; exitCode: number } {
  if (err instanceof UsageError) return { message: `error: ${err.message}\n(see tpc --help)`, exitCode: EXIT_USAGE };
  if (err instanceof ApiError) {
    const lines = [`error: ${err.title} (${err.status})${err.detail ? `: ${err.detail}` : ''}`];
    if (err.type) lines.push(`  type: ${err.type}`);
    const issues = (err.body as { errors?: unknown } | null)?.errors;
    if (Array.isArray(issues)) {
      for (const i of issues as { path?: unknown; message?: unknown }[]) lines.push(`  - ${String(i.path ?? '')}: ${String(i.message ?? '')}`);
    }
    if (err.hint) lines.push(`  ${err.hint}`);
    return { message: lines.join('\n'), exitCode: EXIT_API };
  }
  if (err instanceof ConnectionError) return { message: `error: ${err.message}`, exitCode: EXIT_API };
  return { message: `error: ${err instanceof Error ? err.message : String(err)}`, exitCode: EXIT_API };
}
