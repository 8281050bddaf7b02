import type { Logger } from 'pino';
import { ConflictError, CoordinatorError, NotFoundError, ValidationError } from '../errors.ts';
import { settleInteractive } from '../api/interactive-answer.ts';
import { loadConfig, type Config } from '../config/load-config.ts';
import { startService, type RunningService } from '../service.ts';

/**
 * The coordinator in-process, for a service that wants no extra hop. It runs the same engine and
 * the same recovery workers against the same log and Redis as the standalone service, so the two
 * cooperate: either may finish what the other began.
 */
export interface EmbeddedCoordinator {
  readonly service: RunningService;
  /** The three interactive calls the SDK makes, answered as the REST API would answer them. */
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, any> | null }>;
  close(): Promise<void>;
}

export async function createCoordinator(config: Config | Record<string, string | undefined>, options: { logger?: Logger } = {}): Promise<EmbeddedCoordinator> {
  const resolved = 'databaseUrl' in config ? (config as Config) : loadConfig(config as Record<string, string | undefined>);
  const service = await startService(resolved, { ...options, listen: false });
  const { engine } = service;
  const problem = (err: unknown) => {
    const status = err instanceof ValidationError ? 422 : err instanceof NotFoundError ? 404 : err instanceof ConflictError ? 409 : 503;
    return { status, body: { detail: err instanceof Error ? err.message : String(err), code: err instanceof CoordinatorError ? err.code : 'internal' } };
  };
  return {
    service,
    async call(method, path, body) {
      try {
        if (method === 'POST' && path === '/v1/transactions') {
          const b = body as { branches: { resource: string }[]; timeoutMs?: number };
          return { status: 201, body: { ...(await engine.beginInteractive(b.branches.map((x) => x.resource), b.timeoutMs ?? resolved.defaultTimeoutMs, 'embedded')) } };
        }
        const m = /^\/v1\/transactions\/([0-9a-f-]{36})\/(commit|abort)$/.exec(path);
        if (method === 'POST' && m) {
          return await settleInteractive(engine, m[1]!, m[2] as 'commit' | 'abort', 'embedded');
        }
        return { status: 404, body: { detail: `no embedded route for ${method} ${path}` } };
      } catch (err) {
        return problem(err);
      }
    },
    close: () => service.close(),
  };
}
