import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { Express } from 'express';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Participant } from '../participant-adapter/participant.ts';
import { MeteredParticipant } from './observability/metered-participant.ts';
import { ParticipantComeback } from './engine/participant-comeback.ts';
import { createParticipant } from './participants.ts';
import { createApp } from './api/app.ts';
import { listenFor } from '../participant-adapter/express-server.ts';
import { Authenticator } from './api/auth.ts';
import { submission, type Submit } from './api/submission.ts';
import { createAdmissionCapacity } from './admission-capacity.ts';
import { answerClientErrors } from './api/request-guard.ts';
import type { Config } from './config/load-config.ts';
import { Engine } from './engine/engine.ts';
import { Failpoints } from './engine/failpoints.ts';
import { reconcile, type ReconcileReport } from './engine/reconciler.ts';
import { JobQueues } from './jobs/job-queues.ts';
import { RecoveryStore } from './log/recovery-store.ts';
import { countTransactions, type CountFilter } from './log/transaction-counts.ts';
import { listTransactions, type ListFilter } from './log/transaction-list.ts';
import { findOrphans, inspectResources } from './operator/inspection.ts';
import { resolveTransaction } from './operator/resolve.ts';
import { resolveOrphan } from './operator/resolve-orphan.ts';
import { migrateLog, openLogDatabase } from './log/log-database.ts';
import { logRolePowers } from './log/log-role.ts';
import { ResourcePrivileges } from './resource-privileges.ts';
import { TransactionsStore } from './log/transactions-store.ts';
import { probeLog } from './log/log-probe.ts';
import { createLogger, safeUrl } from './observability/logger.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { registerQueueGauges } from './observability/queue-gauges.ts';
import { registerStateGauges } from './observability/state-gauges.ts';

export interface RunningService {
  url: string;
  engine: Engine;
  metrics: Metrics;
  participants: ReadonlyMap<string, Participant>;
  /** The express app, so that a test can read its routes (test/openapi.test.ts checks them against the OpenAPI document). */
  app?: Express;
  /** The HTTP server (none when embedded), so that a test can reach what only the server sees. */
  server?: Server;
  /**
   * A transaction submitted with its statements, checked as `POST /v1/transactions` checks it
   * (the embedded coordinator's `submit`; the REST route runs the same function).
   */
  submit: Submit;
  maintenance: {
    reconcile(): Promise<ReconcileReport>;
    prune(): Promise<number>;
    /** One pass of the periodic resource check (health, and each direct resource's role). */
    checkResources(): Promise<void>;
  };
  /** Stops taking requests, lets transactions in hand finish, closes every pool and connection. */
  close(): Promise<void>;
}

export interface ServiceOptions {
  logger?: Logger;
  /** Overrides TPC_QUEUE_PREFIX (tests isolate their queues with it). */
  queuePrefix?: string;
  /** false: no HTTP server (the embedded coordinator); `url` is then empty. */
  listen?: boolean;
}

// Resource health is re-checked this often, so a participant restarted with
// max_prepared_transactions fixed becomes usable without restarting the coordinator.
const HEALTH_INTERVAL_MS = 30_000;
// Retention runs hourly in batches of 1000 rows, so a large backlog never holds long locks.
const PRUNE_INTERVAL_MS = 3_600_000;
const PRUNE_BATCH = 1_000;
// Connections waiting to be accepted (the kernel caps it at net.core.somaxconn; Node's default is
// 511). A thousand clients connecting at once overflowed 511: a dropped handshake is retried by the
// client's kernel only after 1 s, then 3 s, 7 s, so those clients got answers after their deadline
// without the service having seen their request (bench: 706 of them under 1000 clients).
const LISTEN_BACKLOG = 4096;
// Unattended transactions re-queued per reconciliation pass; the next pass takes the rest.
const RECONCILE_BATCH = 500;

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
    idleTimeoutMs: config.poolIdleTimeoutMs,
    onIdleError: (err) => logger.warn({ err: err.message }, 'idle log connection failed'),
  });
  // Made once the log and the queues exist (below); phase 2's outcomes feed it from the first call.
  let comeback: ParticipantComeback | undefined;
  const meter = (p: Participant): Participant =>
    new MeteredParticipant(p, (resource, operation, outcome, seconds) => {
      metrics.participantOperation(resource, operation, outcome, seconds);
      comeback?.observe(resource, operation, outcome);
    });
  const created = new Map(
    Object.entries(config.resources).map(([name, resource]) => [
      name,
      createParticipant(name, resource, {
        namespace: config.namespace,
        poolSize: config.resourcePoolSize,
        idleTimeoutMs: config.poolIdleTimeoutMs,
        onIdleError: (err) => logger.warn({ resource: name, err: err.message }, 'idle participant connection failed'),
      }),
    ]),
  );
  const participants = new Map([...created].map(([name, p]) => [name, meter(p)]));
  const privileges = new ResourcePrivileges({ participants: created, config, logger, logRole: () => logRolePowers(logDb.forced) });

  // Slots per resource for submitted transactions; capacity is read with the health check below.
  const capacity = createAdmissionCapacity({
    resources: config.resources,
    participants,
    slotsPerResource: config.resourcePoolSize,
    waitMs: config.admissionWaitMs,
    queueLimit: config.admissionQueue,
    metrics,
    logger,
  });

  const unusable = new Map<string, string>();
  const reachable = new Set<string>();
  const checkResources = async (atStart = false) => {
    await Promise.all(
      [...participants.values()].map(async (p) => {
        const h = await p.health();
        // A resource unreachable at start has its role checked once it answers: then a privileged
        // one is marked unusable with the reason (never a crash of a running service).
        const refusal = h.usable && !atStart ? await privileges.refusal(p.name) : null;
        const reason = h.reachable && !h.usable ? (h.message ?? 'resource unusable') : refusal;
        if (h.reachable) reachable.add(p.name);
        if (reason) {
          if (!unusable.has(p.name)) logger.error({ resource: p.name }, reason);
          unusable.set(p.name, reason);
        } else if (h.usable) {
          unusable.delete(p.name);
        } else {
          logger.warn({ resource: p.name, error: h.message }, 'resource unreachable');
        }
      }),
    );
  };
  await checkResources(true);
  // A reachable resource whose role is privileged, without the operator's opt-in, refuses the start.
  await privileges.checkAtStart(reachable).catch(async (err: unknown) => {
    await Promise.allSettled([logDb.close(), ...[...participants.values()].map((p) => p.close())]);
    throw err;
  });
  await capacity.refresh();
  const healthTimer = setInterval(() => {
    void capacity.refresh(); // never throws: a failed reading keeps the last one, and is counted
    checkResources().catch((err: unknown) => {
      metrics.backgroundFailures.inc({ loop: 'resource-health' });
      logger.warn({ err }, 'resource health check failed');
    });
  }, HEALTH_INTERVAL_MS);
  healthTimer.unref();

  const instanceId = config.instanceId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const queues = new JobQueues({
    redisUrl: config.redisUrl,
    namespace: config.namespace,
    prefix: options.queuePrefix ?? config.queuePrefix,
    logger,
    retryBaseMs: config.retryBaseMs,
    retryMaxMs: config.retryMaxMs,
    reconcileIntervalMs: config.reconcileIntervalMs,
    pruneIntervalMs: PRUNE_INTERVAL_MS,
    onFailure: (loop) => metrics.backgroundFailures.inc({ loop }),
  });
  const failpoints = new Failpoints(config.failpoints);
  const store = new TransactionsStore(logDb, metrics.groupCommit, failpoints);
  const recovery = new RecoveryStore(logDb, metrics.groupCommit);
  comeback = new ParticipantComeback({ namespace: config.namespace, recovery, followUp: queues, logger });
  if (config.failpoints.length) logger.warn({ failpoints: config.failpoints }, 'FAILPOINTS ARMED: this process will crash on purpose (tests only)');
  const engineDeps = {
    store,
    recovery,
    participants,
    namespace: config.namespace,
    instanceId,
    logger,
    observer: metrics.observer,
    followUp: queues,
    failpoints,
    admission: capacity.admission,
  };
  const engine = new Engine(engineDeps, {
    completionWaitMs: config.completionWaitMs,
    inDoubtAfterAttempts: config.inDoubtAfterAttempts,
    beginDeferMs: config.beginDeferMs,
  });
  // What the maintenance jobs run; also on the service handle, so tests can run a pass directly.
  const maintenance = {
    reconcile: () =>
      reconcile(engineDeps, {
        maxTimeoutMs: config.maxTimeoutMs,
        batch: RECONCILE_BATCH,
        enqueue: (ids) => queues.completionsPending(ids),
        inDoubtAfterMs: retryingFor(config.inDoubtAfterAttempts, config.retryBaseMs, config.retryMaxMs),
      }),
    /** Deletes finished transactions past retention in batches; returns how many. */
    prune: async () => {
      const before = new Date(Date.now() - config.retentionDays * 86_400_000);
      let total = 0;
      for (;;) {
        const n = await recovery.pruneBatch(before, PRUNE_BATCH);
        total += n;
        if (n < PRUNE_BATCH) return total;
      }
    },
  };
  queues.start({ resume: (id) => engine.resume(id), ...maintenance });
  // Redis down at start is not fatal (the log is the truth; reminders are recreated later), but
  // when it is up, the service is ready by the time start-up returns.
  if (!(await queues.connected(2_000))) logger.warn('Redis is not reachable yet; /readyz reports it until it is');
  metrics.trackInFlight(() => engine.inFlight);
  registerStateGauges(metrics.registry, {
    logCounts: () => recovery.counts(config.namespace),
    resources: () => inspectResources(engineDeps),
    orphans: () => findOrphans(engineDeps),
  });
  registerQueueGauges(metrics.registry, () => queues.queues, config.namespace);

  // The reads that list the log wait for the records of the answers this process has given
  // (Engine.answersRecorded): a client listing after its answer finds what it was told.
  const afterAnswers =
    <F, R>(read: (filter: F) => Promise<R>) =>
    async (filter: F): Promise<R> => {
      await engine.answersRecorded();
      return read(filter);
    };
  const submitting = {
    engine,
    resources: new Set(participants.keys()),
    defaultTimeoutMs: config.defaultTimeoutMs,
    maxTimeoutMs: config.maxTimeoutMs,
    unusable: () => unusable,
    templates: config.statementTemplates,
  };
  const app = createApp({
    ...submitting,
    auth: new Authenticator(config.tokens),
    list: afterAnswers((filter: ListFilter) => listTransactions(logDb, filter)),
    queues: queues.queues,
    operator: {
      resources: () => inspectResources(engineDeps),
      orphans: () => findOrphans(engineDeps),
      resolve: (id, request) => engine.alone(id, () => resolveTransaction(engineDeps, id, request)),
      resolveOrphan: (request) => resolveOrphan(engineDeps, request),
      detail: (id) => engine.get(id),
      list: afterAnswers((filter: ListFilter) => listTransactions(logDb, filter)),
      counts: afterAnswers((filter: CountFilter) => countTransactions(logDb, filter)),
      namespace: config.namespace,
    },
    namespace: config.namespace,
    logger,
    metrics,
    bodyLimit: config.bodyLimit,
    readiness: [
      // Queried as the hot path queries it, on a connection of its own (log-probe.ts): `SELECT 1`
      // passed while a role default had broken every real query.
      { name: 'log', check: () => probeLog(logDb.probe) },
      { name: 'redis', check: () => queues.ping() },
    ],
  });
  if (config.tokens === null) logger.warn('no API tokens configured: every request on this loopback address is allowed');

  // Embedded (createCoordinator): the same engine, log and recovery workers, without HTTP.
  let server: Server | undefined;
  let url = '';
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      clearInterval(healthTimer);
      capacity.close();
      const stopped = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      server?.closeIdleConnections();
      await engine.drain();
      await stopped;
      await comeback?.close();
      await queues.close();
      await Promise.all([store.close(), recovery.close()]);
      await Promise.allSettled([logDb.close(), ...[...participants.values()].map((p) => p.close())]);
      logger.info('coordinator stopped');
    })();
    return closing;
  };
  if (options.listen !== false) {
    const listening = await listenFor(app, { port: config.port, host: config.host, backlog: LISTEN_BACKLOG }, (err) =>
      logger.error({ err }, 'the HTTP server reported an error'),
    ).catch(async (err: unknown) => {
      await close();
      throw listenError(err, config.host, config.port);
    });
    server = listening;
    answerClientErrors(listening);
    const address = listening.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
    logger.info({ url, resources: [...participants.keys()], namespace: config.namespace, instanceId, redis: queues.redis }, 'coordinator listening');
  } else {
    logger.info({ resources: [...participants.keys()], namespace: config.namespace, instanceId }, 'embedded coordinator started');
  }

  return {
    url,
    engine,
    metrics,
    participants,
    app,
    server,
    submit: submission(submitting),
    maintenance: { ...maintenance, checkResources: () => checkResources() },
    close,
  };
}

/** A listen failure that names the address and the variables that chose it. */
function listenError(err: unknown, host: string, port: number): Error {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (code === 'EADDRINUSE') {
    return new Error(`port ${port} is already in use (${where}, from PORT=${port}): stop what holds it, or set PORT to a free port`, { cause: err });
  }
  return new Error(`cannot listen on ${where} (PORT=${port}, HOST=${host}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

/** How long `attempts` failed phase-2 attempts take at the jobs' backoff (base, 2·base, 4·base … capped). */
export function retryingFor(attempts: number, baseMs: number, maxMs: number): number {
  let total = 0;
  for (let k = 0; k < attempts && total < 86_400_000; k++) total += Math.min(maxMs, baseMs * 2 ** k);
  return total;
}
