import { randomBytes } from 'node:crypto';

/*
 * The id of a submitted transaction whose begin record is deferred (deferred-begin.ts) carries its
 * deadline: a UUID of version 8 (RFC 9562's layout for an application's own use) whose last 48
 * bits are the deadline in Unix milliseconds, the other 74 free bits random. Last, not first: the
 * console and the CLI show an id by its first 8 digits, which must stay random to tell
 * transactions of one minute apart. A coordinator
 * killed before such a transaction reached the log leaves prepared branches that no row names;
 * reconciliation reads the deadline from their gid, and rolls them back once it has passed (behind
 * a tombstone row that fences off a late decision), rather than waiting for the orphan timeout.
 * Every other id is a random UUID (version 4), which carries no deadline.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function deadlineStampedId(deadlineAt: number): string {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(Math.max(0, Math.floor(deadlineAt)), 10, 6);
  bytes[6] = 0x80 | (bytes[6]! & 0x0f); // version 8
  bytes[8] = 0x80 | (bytes[8]! & 0x3f); // the RFC variant
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The deadline a stamped id carries (Unix ms), or null for any other id. */
export function stampedDeadline(id: string): number | null {
  if (!UUID.test(id) || id[14] !== '8' || !'89ab'.includes(id[19]!)) return null;
  return Number.parseInt(id.slice(24), 16);
}
