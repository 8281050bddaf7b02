/**
 * A transaction id or the start of one (the console shows the first 8 hex digits), turned into the
 * range of uuids it covers. The lookup is then `id BETWEEN low AND high` on the primary key: no
 * LIKE, so no wildcard the caller types can reach SQL, and an index range scan rather than a cast
 * of every id to text. Postgres orders uuids byte by byte, which is the order of their hex form.
 */
const SHAPE = 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx';

/** Four hex digits: 65 536 ranges, so a prefix narrows a busy log to a handful of candidates, never to "all". */
export const MIN_PREFIX_HEX = 4;

export interface IdRange {
  low: string;
  high: string;
}

/** The canonical (lower-case, dashed) form of a prefix, with or without its dashes; null if it is not one. */
export function canonicalIdPrefix(input: string): string | null {
  if (input.length > SHAPE.length || !/^[0-9a-fA-F-]*$/.test(input)) return null;
  const hex = input.replace(/-/g, '').toLowerCase();
  if (hex.length < MIN_PREFIX_HEX || hex.length > 32) return null;
  let canonical = '';
  let h = 0;
  for (let i = 0; i < SHAPE.length && h < hex.length; i++) canonical += SHAPE[i] === '-' ? '-' : hex[h++];
  // Dashes are optional, but only where a uuid has them: "abcd-1234" is no prefix of any id.
  if (input.includes('-') && !canonical.startsWith(input.toLowerCase())) return null;
  return canonical;
}

export function idRange(input: string): IdRange | null {
  const p = canonicalIdPrefix(input);
  return p === null ? null : hexRange(p.replace(/-/g, ''));
}

/** The uuids whose hex digits (dashes left out, lower case, 0 to 32 of them) start with `hex`. */
export function hexRange(hex: string): IdRange {
  const uuid = (h: string) => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  return { low: uuid(hex.padEnd(32, '0')), high: uuid(hex.padEnd(32, 'f')) };
}
