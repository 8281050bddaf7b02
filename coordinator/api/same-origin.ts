import type { Request } from 'express';

/** The first value of a header a proxy may have appended to (`a, b`). */
function first(value: string | undefined): string | undefined {
  const v = value?.split(',')[0]?.trim();
  return v ? v.toLowerCase() : undefined;
}

/**
 * The scheme the browser used: X-Forwarded-Proto from a TLS-terminating proxy, else the socket's.
 * The app trusts no proxy in general; this header is honoured only where a forged value cannot
 * help an attacker: to add `Secure` to a cookie, and to compute the origin a cookie-authenticated
 * request must come from (a cross-site page cannot set X-Forwarded-* on a request without a CORS
 * preflight, which this service never approves; a client that is not a browser needs no forgery).
 */
export function requestScheme(req: Request): 'http' | 'https' {
  const forwarded = first(req.get('x-forwarded-proto'));
  if (forwarded === 'https' || forwarded === 'http') return forwarded;
  return (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
}

/**
 * Whether a browser sent this request from a page of this very origin. Sec-Fetch-Site, which only a
 * browser sets and no page can forge, decides when present ("same-site" is refused: a sibling
 * subdomain gets a SameSite=Strict cookie too). Without it, Origin must equal the request's own
 * origin (scheme, host and port, by Host or X-Forwarded-Host). With neither, the request is refused:
 * every browser sends one of them on a state-changing request, so their absence means a client
 * that should use the Authorization header instead.
 */
export function isSameOrigin(req: Request): boolean {
  const site = req.get('sec-fetch-site');
  if (site !== undefined) return site.trim().toLowerCase() === 'same-origin';
  const origin = req.get('origin');
  if (origin === undefined) return false;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false; // "null" (a sandboxed frame, a file) or garbage
  }
  if (url.origin === 'null' || url.protocol !== `${requestScheme(req)}:`) return false;
  const hosts = [first(req.get('host')), first(req.get('x-forwarded-host'))].filter((h): h is string => h !== undefined);
  // url.host drops a default port (":443" for https); a Host header may carry it.
  const port = url.protocol === 'https:' ? ':443' : ':80';
  return hosts.some((h) => h === url.host || h === `${url.host}${port}`);
}

/**
 * Whether a browser sent this request from a page of another origin. Unlike isSameOrigin, a request
 * with neither header passes: it comes from a client that is not a browser (curl, the SDK), which
 * a web page cannot drive. "none" is a navigation the user made (a typed URL, a bookmark).
 */
export function isCrossOrigin(req: Request): boolean {
  const site = req.get('sec-fetch-site');
  if (site !== undefined) return !['same-origin', 'none'].includes(site.trim().toLowerCase());
  return req.get('origin') !== undefined && !isSameOrigin(req);
}

const LOOPBACK_HOST = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d{1,5})?$/i;

/**
 * Whether the Host header names this machine's loopback. A page on a domain the attacker rebinds
 * to 127.0.0.1 (DNS rebinding) is "same-origin" with itself, but its requests carry its own domain
 * in Host: an unauthenticated loopback service answers only requests addressed to a loopback name.
 */
export function hasLoopbackHost(req: Request): boolean {
  return LOOPBACK_HOST.test(req.get('host')?.trim() ?? '');
}
