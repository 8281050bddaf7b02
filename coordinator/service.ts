import type { Server } from 'node:http';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { Participant } from '../participant-adapter/participant.ts';
import { createApp } from './api/app.ts';
import { Authenticator } from './api/auth.ts';
import type { Config } from './config/load-config.ts';
import { Engine } from './engine/engine.ts';
import { CompletionQueue } from './jobs/completion-queue.ts';
import { migrateLog, openLogDatabase } from './log/log-database.ts';
import { TransactionsStore } from './log/transactions-store.ts';
import { createLogger, safeUrl } from './observability/logger.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';

export interface RunningService {
  url: string;
  engine: Engine;
  metrics: Metrics;
  participants: ReadonlyMap<string, Participant>;
  /** Stops taking requests, lets transactions in hand finish, closes every pool and connection. */
  close(): Promise<void>;
}

export interface ServiceOptions {
  logger?: Logger;
  /** BullMQ key prefix (tests isolate their queues with it). */
  queuePrefix?: string;
}

// Resource health is re-checked this often, so a participant restarted with
// max_prepared_transactions fixed becomes usable without restarting the coordinator.
const HEALTH_INTERVAL_MS = 30_000;

/** The composition root: wires config, log, participants, engine, queue and HTTP. */
export async function startService(config: Config, options: ServiceOptions = {}): Promise<RunningService> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const metrics = createMetrics();
  const applied = await migrateLog(config.databaseUrl).catch((err: unknown) => {
    throw new Error(`log database (DATABASE_URL=${safeUrl(config.databaseUrl)}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  });
  if (applied.length) logger.info({ migrations: applied }, 'log schema migrated');

  const logDb = openLogDatabase({
    url: config.databaseUrl,
    maxConnections: config.logPoolSize,
    onIdleError: (err) => logger.warn({ err: err.message }, 'idle log connection failed'),
  });
  const participants = new Map(Object.entries(config.resources).map(([name, url]) => [name, new Participant({
    name,
    connectionString: url,
    maxConnections: config.resourcePoolSize,
    onIdleError: (err) => logger.warn({ resource: name, err: err.message }, 'idle participant connection failed'),
  })]));

  const unusable = new Map<string, string>();
  const checkResources = async () => {
    await Promise.all([...participants.values()].map(async (p) => {
      const h = await p.health();
      if (h.reachable && !h.usable) {
        if (!unusable.has(p.name)) logger.error({ resource: p.name }, h.message ?? 'resource unusable');
        unusable.set(p.name, h.message ?? 'resource unusable');
      } else if (h.usable) {
        unusable.delete(p.name);
      } else {
        logger.warn({ resource: p.name, error: h.message }, 'resource unreachable');
      }
    }));
  };
  await checkResources();
  const healthTimer = setInterval(() => {
    checkResources().catch((err: unknown) => {
      metrics.backgroundFailures.inc({ loop: 'resource-health' });
      logger.warn({ err }, 'resource health check failed');
    });
  }, HEALTH_INTERVAL_MS);
  healthTimer.unref();

  const queue = new CompletionQueue({
    redisUrl: config.redisUrl,
    namespace: config.namespace,
    prefix: options.queuePrefix,
    logger,
    onFailure: () => metrics.backgroundFailures.inc({ loop: 'completion' }),
  });
  const engine = new Engine(
    {
      store: new TransactionsStore(logDb),
      participants,
      namespace: config.namespace,
      logger,
      observer: metrics.observer,
      followUp: queue,
    },
    { completionWaitMs: config.completionWaitMs },
  );
  queue.start((id) => engine.resume(id));
  // Redis down at start is not fatal (submissions that need it fail fast and readiness says so),
  // but when it is up, the service is ready by the time start-up returns.
  if (!(await queue.connected(2_000))) logger.warn('Redis is not reachable yet; /readyz reports it until it is');
  metrics.trackInFlight(() => engine.inFlight);

  const app = createApp({
    engine,
    auth: new Authenticator(config.tokens),
    resources: new Set(participants.keys()),
    defaultTimeoutMs: config.defaultTimeoutMs,
    maxTimeoutMs: config.maxTimeoutMs,
    unusable: () => unusable,
    logger,
    metrics,
    bodyLimit: config.bodyLimit,
    readiness: [
      { name: 'log', check: async () => { await sql`SELECT 1`.execute(logDb.forced); } },
      { name: 'redis', check: () => queue.ping() },
    ],
  });
  if (config.tokens === null) logger.warn('no API tokens configured: every request on this loopback address is allowed');

  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.port, config.host, () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info({ url, resources: [...participants.keys()], namespace: config.namespace }, 'coordinator listening');

  let closing: Promise<void> | undefined;
  return {
    url,
    engine,
    metrics,
    participants,
    close() {
      closing ??= (async () => {
        clearInterval(healthTimer);
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await engine.drain();
        await stopped;
        await queue.close();
        await Promise.allSettled([logDb.close(), ...[...participants.values()].map((p) => p.close())]);
        logger.info('coordinator stopped');
      })();
      return closing;
    },
  };
}
