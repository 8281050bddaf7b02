import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { ApiToken, Scope } from '../config/load-config.ts';
import { problem } from './problem.ts';

export interface Principal {
  name: string;
  scopes: readonly Scope[];
  resources: readonly string[];
}

const ANONYMOUS: Principal = { name: 'anonymous', scopes: ['submit', 'read', 'operate'], resources: ['*'] };

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

const QUEUE_COOKIE = 'tpc_queues';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Bearer tokens from TPC_API_TOKENS. Tokens are compared as SHA-256 digests in constant time, so a
 * wrong guess learns nothing from timing. With no tokens configured (loopback only) every request
 * is let in as "anonymous".
 */
export class Authenticator {
  readonly #tokens: { digest: Buffer; principal: Principal }[] | null;

  constructor(tokens: readonly ApiToken[] | null) {
    this.#tokens = tokens?.map((t) => ({ digest: digest(t.token), principal: { name: t.name, scopes: t.scopes, resources: t.resources } })) ?? null;
  }

  /**
   * POST /v1/session: a valid bearer token is echoed into an HttpOnly, SameSite=Strict cookie
   * scoped to /queues, because the queue dashboard's own page cannot send an Authorization header.
   * The cookie is never accepted by the API itself, so it cannot be used to forge API calls.
   */
  session(): RequestHandler {
    return (req, res) => {
      this.#authenticate(req.headers.authorization);
      const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
      if (m) res.cookie(QUEUE_COOKIE, m[1], { httpOnly: true, sameSite: 'strict', path: '/queues' });
      res.status(204).end();
    };
  }

  /** Like require(), also accepting the /queues cookie set by session(). */
  requireWithCookie(scope: Scope): RequestHandler {
    return (req, _res, next) => {
      const cookie = /(?:^|;\s*)tpc_queues=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
      const header = req.headers.authorization ?? (cookie ? `Bearer ${decodeURIComponent(cookie)}` : undefined);
      const principal = this.#authenticate(header);
      if (!principal.scopes.includes(scope)) {
        throw problem(403, 'forbidden', 'Forbidden', `token "${principal.name}" lacks the "${scope}" scope`);
      }
      req.principal = principal;
      next();
    };
  }

  require(scope: Scope): RequestHandler {
    return (req, _res, next) => {
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

/** 403 unless the principal may use every one of `resources`. */
export function assertResourcesAllowed(principal: Principal, resources: Iterable<string>): void {
  if (principal.resources.includes('*')) return;
  for (const r of resources) {
    if (!principal.resources.includes(r)) {
      throw problem(403, 'forbidden-resource', 'Forbidden', `token "${principal.name}" may not use resource "${r}"`);
    }
  }
}
