// The same REST API and tokens as every other client. The token lives in sessionStorage: per tab,
// gone when the tab closes, never sent anywhere but this origin's API.
const TOKEN_KEY = 'tpc-token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) ?? '',
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
};

function headers(json = false) {
  const h = {};
  if (token.get()) h.authorization = `Bearer ${token.get()}`;
  if (json) h['content-type'] = 'application/json';
  return h;
}

export async function api(path, options = {}) {
  const res = await fetch(`..${path}`, { ...options, headers: headers(options.body !== undefined) });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(body?.detail ?? body?.title ?? `HTTP ${res.status}`);
    err.status = res.status;
    err.problem = body;
    throw err;
  }
  return body;
}

// The queue dashboard cannot send a header, so it reads a session cookie that POST /v1/session
// issues for the token. The session lasts an hour: it is renewed while the console is in use and
// just before the dashboard is opened, so an operator at work never meets an expired one.
let sessionRenewedAt = 0;
export async function renewSession(force = false) {
  if (!token.get()) return;
  if (!force && Date.now() - sessionRenewedAt < 300_000) return;
  sessionRenewedAt = Date.now();
  await fetch('../v1/session', { method: 'POST', headers: headers() }).catch(() => {});
}

/** Mirrors coordinator/log/id-prefix.ts, so a typo is explained here rather than by a 422. */
const SHAPE = 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx';
export function canonicalIdPrefix(input) {
  const v = input.trim();
  if (v.length > SHAPE.length || !/^[0-9a-fA-F-]*$/.test(v)) return null;
  const hex = v.replace(/-/g, '').toLowerCase();
  if (hex.length < 4 || hex.length > 32) return null;
  let canonical = '';
  let h = 0;
  for (let i = 0; i < SHAPE.length && h < hex.length; i++) canonical += SHAPE[i] === '-' ? '-' : hex[h++];
  if (v.includes('-') && !canonical.startsWith(v.toLowerCase())) return null;
  return canonical;
}
export const isFullId = (v) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(v);
