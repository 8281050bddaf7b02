import { STATUS_CODES } from 'node:http';

const REASON_PHRASES = new Map(Object.entries(STATUS_CODES).map(([code, phrase]) => [phrase!.toLowerCase(), Number(code)]));

/** A problem whose title is an HTTP reason phrase must carry that phrase's status (a 422 titled "Conflict" misleads). */
export function titleMisfit(p: { title?: unknown; status?: unknown }): string | null {
  const named = typeof p.title === 'string' ? REASON_PHRASES.get(p.title.toLowerCase()) : undefined;
  return named === undefined || named === p.status ? null : `title "${String(p.title)}" is the phrase of ${named}, not of ${String(p.status)}`;
}
