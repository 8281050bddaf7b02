import { ParticipantError } from './errors.ts';

/**
 * `PREPARE TRANSACTION` takes a literal, not a bind parameter, so a gid reaches SQL as text.
 * Only these characters, at most 200 bytes (Postgres allows 200), ever get there.
 */
export const GID_PATTERN = /^[A-Za-z0-9_\-:.]{1,200}$/;

export function assertValidGid(gid: string): string {
  if (!GID_PATTERN.test(gid)) {
    throw new ParticipantError('invalid_gid', `gid ${JSON.stringify(gid.slice(0, 60))} does not match ${GID_PATTERN}`, {
      retryable: false,
    });
  }
  return gid;
}

/** The gid as a SQL string literal; safe because the pattern admits no quote or backslash. */
export function gidLiteral(gid: string): string {
  return `'${assertValidGid(gid)}'`;
}
