import { createHash, timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import { ANONYMOUS_ACTOR, type ApiToken, type Scope } from '../config/load-config.ts';
import { problem } from './problem.ts';
import { issueSession, sessionKey, verifySession } from './queue-session.ts';
import { hasLoopbackHost, isCrossOrigin, isSameOrigin, requestScheme } from './same-origin.ts';

export interface Principal {
  name: string;
  scopes: readonly Scope[];
  resources: readonly string[];
  /** False: the token may submit statement templates only, never raw SQL (its `"sql": false`). */
  sql: boolean;
}

const ANONYMOUS: Principal = { name: ANONYMOUS_ACTOR, scopes: ['submit', 'read', 'operate'], resources: ['*'], sql: true };

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

const QUEUE_COOKIE = 'tpc_queues';
const QUEUE_COOKIE_PATH = '/queues';
// Methods that change nothing (RFC 9110 safe methods): a cross-site page may cause them, to no effect.
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Bearer tokens from TPC_API_TOKENS. Tokens are compared as SHA-256 digests in constant time, so a
 * wrong guess learns nothing from timing. With no tokens configured (loopback only) every request
 * is let in as "anonymous".
 */
export class Authenticator {
  readonly #tokens: { digest: Buffer; principal: Principal }[] | null;
  readonly #principals = new Map<string, Principal>();
  /** Per token name, the key its queue-board sessions are signed with; null with no tokens configured. */
  readonly #sessionKeys: Map<string, Buffer> | null;

  constructor(tokens: readonly ApiToken[] | null) {
    this.#tokens = tokens?.map((t) => ({ digest: digest(t.token), principal: { name: t.name, scopes: t.scopes, resources: t.resources, sql: t.sql } })) ?? null;
    for (const t of this.#tokens ?? []) this.#principals.set(t.principal.name, t.principal);
    this.#sessionKeys = tokens ? new Map(tokens.map((t) => [t.name, sessionKey(t.token)])) : null;
  }

  /**
   * POST /v1/session: a valid bearer token gets a session cookie for the queue board, whose own page
   * cannot send an Authorization header. The cookie holds a signed, expiring value bound to the
   * token's name (queue-session.ts), never the token: HttpOnly, SameSite=Strict, Path=/queues, and
   * Secure when the browser came over https. The API itself never accepts it.
   */
  session(): RequestHandler {
    return (req, res) => {
      const principal = this.#authenticate(req.headers.authorization);
      res.setHeader('Cache-Control', 'no-store');
      const key = this.#sessionKeys?.get(principal.name);
      if (key) {
        const { value, maxAgeMs } = issueSession(principal.name, key);
        res.cookie(QUEUE_COOKIE, value, {
          httpOnly: true,
          sameSite: 'strict',
          path: QUEUE_COOKIE_PATH,
          maxAge: maxAgeMs,
          secure: requestScheme(req) === 'https',
          encode: String,
        });
      }
      res.status(204).end();
    };
  }

  /**
   * For the queue board: the Authorization header, or else the session cookie. A request carried by
   * the cookie (or, with no tokens configured, by nothing at all) is one a browser attaches
   * credentials to by itself, so a page of any other site could send it: a state change then needs
   * a same-origin request too (same-origin.ts). A request with the header cannot be forged that
   * way, since no cross-site page can add the header without a CORS preflight.
   */
  requireForQueueBoard(scope: Scope): RequestHandler {
    return (req, _res, next) => {
      let principal: Principal;
      let ambient = true;
      if (this.#tokens === null) assertLocalCaller(req);
      if (req.headers.authorization !== undefined || this.#tokens === null) {
        principal = this.#authenticate(req.headers.authorization);
        ambient = this.#tokens === null;
      } else {
        principal = this.#fromSession(req.headers.cookie);
      }
      if (!principal.scopes.includes(scope)) {
        throw problem(403, 'forbidden', 'Forbidden', `token "${principal.name}" lacks the "${scope}" scope`);
      }
      if (ambient && !SAFE_METHODS.has(req.method) && !isSameOrigin(req)) {
        throw problem(
          403,
          'cross-origin',
          'Forbidden',
          'a change made with the session cookie must come from a page of this origin (Origin or Sec-Fetch-Site)',
        );
      }
      req.principal = principal;
      next();
    };
  }

  #fromSession(cookieHeader: string | undefined): Principal {
    // Several cookies of the name (another path's, a planted one): any valid one will do.
    const values = [...(cookieHeader ?? '').matchAll(/(?:^|;)\s*tpc_queues=([^;]*)/g)].map((m) => m[1]!.trim());
    if (!values.length)
      throw problem(401, 'unauthorized', 'Unauthorized', 'an Authorization: Bearer <token> header, or the session cookie from POST /v1/session, is required');
    let why = '';
    for (const value of values) {
      const check = verifySession(value, (name) => this.#sessionKeys?.get(name) ?? null);
      if (check.ok) return this.#principals.get(check.name)!;
      why = check.why;
    }
    throw problem(401, 'unauthorized', 'Unauthorized', why);
  }

  require(scope: Scope): RequestHandler {
    return (req, _res, next) => {
      if (this.#tokens === null) assertLocalCaller(req);
      const principal = this.#authenticate(req.headers.authorization);
      if (!principal.scopes.includes(scope)) {
        throw problem(403, 'forbidden', 'Forbidden', `token "${principal.name}" lacks the "${scope}" scope`);
      }
      req.principal = principal;
      next();
    };
  }

  #authenticate(header: string | undefined): Principal {
    if (this.#tokens === null) return ANONYMOUS;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!m) throw problem(401, 'unauthorized', 'Unauthorized', 'an Authorization: Bearer <token> header is required');
    const d = digest(m[1]!);
    let found: Principal | undefined;
    for (const t of this.#tokens) if (timingSafeEqual(t.digest, d)) found = t.principal;
    if (!found) throw problem(401, 'unauthorized', 'Unauthorized', 'the token is not valid');
    return found;
  }
}

/**
 * With no tokens configured (loopback only) nothing authenticates a request, so any web page the
 * developer has open could send one to 127.0.0.1 (a form posting text/plain needs no preflight),
 * or read the answers through a domain it rebinds to 127.0.0.1. Such a service answers only
 * requests addressed to a loopback name, and changes nothing for a page of another origin.
 */
function assertLocalCaller(req: Request): void {
  if (!hasLoopbackHost(req)) {
    throw problem(
      403,
      'host-not-allowed',
      'Forbidden',
      'with no API tokens configured, only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]) are answered',
    );
  }
  if (!SAFE_METHODS.has(req.method) && isCrossOrigin(req)) {
    throw problem(403, 'cross-origin', 'Forbidden', 'with no API tokens configured, a page of another origin may not send requests that change anything');
  }
}

/** 403 unless the principal may use every one of `resources`. */
export function assertResourcesAllowed(principal: Principal, resources: Iterable<string>): void {
  if (principal.resources.includes('*')) return;
  for (const r of resources) {
    if (!principal.resources.includes(r)) {
      throw problem(403, 'forbidden-resource', 'Forbidden', `token "${principal.name}" may not use resource "${r}"`);
    }
  }
}
