import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * The queue board's session cookie: what a browser holds instead of the bearer token, because the
 * board's own page cannot send an Authorization header. A value is `<name>.<expiry>.<mac>` (name in
 * base64url, expiry in Unix seconds), the MAC an HMAC-SHA256 under a key derived from that token's
 * own secret. So every instance with the same TPC_API_TOKENS accepts it without shared state; a
 * token rotated or removed revokes its sessions at once; and a cookie that leaks (a proxy log, a
 * copied profile) does not reveal the token and stops working at its expiry.
 */

// One hour: long enough to watch the board through an incident without re-entering the token (the
// console renews the session each time it shows a page), short enough that a leaked cookie is
// soon worthless. Tokens, unlike sessions, live until an operator rotates them.
export const SESSION_TTL_SECONDS = 3_600;

const KEY_LABEL = 'tpc queue-board session v1';
const VALUE = /^([A-Za-z0-9_-]{1,200})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/;

/** The signing key of one token's sessions: derived, so the token itself never signs anything a browser holds. */
export function sessionKey(token: string): Buffer {
  return createHmac('sha256', token).update(KEY_LABEL).digest();
}

const mac = (key: Buffer, payload: string) => createHmac('sha256', key).update(payload).digest();

export function issueSession(name: string, key: Buffer, nowMs = Date.now()): { value: string; maxAgeMs: number } {
  const payload = `${Buffer.from(name, 'utf8').toString('base64url')}.${Math.floor(nowMs / 1000) + SESSION_TTL_SECONDS}`;
  return { value: `${payload}.${mac(key, payload).toString('base64url')}`, maxAgeMs: SESSION_TTL_SECONDS * 1000 };
}

export type SessionCheck = { ok: true; name: string } | { ok: false; why: string };

/**
 * The token name a session value was issued to, if it is well formed, signed by that token's
 * current key and not expired. `keyOf` answers null for a name no longer configured.
 */
export function verifySession(value: string, keyOf: (name: string) => Buffer | null, nowMs = Date.now()): SessionCheck {
  const m = VALUE.exec(value);
  if (!m) return { ok: false, why: 'the session cookie is malformed' };
  const name = Buffer.from(m[1]!, 'base64url').toString('utf8');
  const key = keyOf(name);
  // The same answer for an unknown name and a bad signature: the cookie is simply not valid.
  if (!key || !timingSafeEqual(mac(key, `${m[1]}.${m[2]}`), Buffer.from(m[3]!, 'base64url'))) {
    return { ok: false, why: 'the session is not valid (signed by a token no longer configured, or altered)' };
  }
  if (Number(m[2]) * 1000 <= nowMs) return { ok: false, why: 'the session has expired; open the console and enter the token again' };
  return { ok: true, name };
}
