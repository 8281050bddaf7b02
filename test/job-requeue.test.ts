import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedisServer, type RedisServer } from '../coordinator/embedded/redis-server.ts';
import { JobQueues } from '../coordinator/jobs/job-queues.ts';

/*
 * Reconciliation re-queues every unfinished transaction nobody attends, which in an outage is the
 * whole backlog; completionsPending adds only the jobs Redis lost, a page per round trip, and leaves
 * the jobs it still holds as they are (a delayed retry stays delayed).
 */
describe('re-queueing completion jobs in bulk', () => {
  let redis: RedisServer;
  let queues: JobQueues;
  beforeAll(async () => {
    redis = await startRedisServer();
    queues = new JobQueues({
      redisUrl: redis.url,
      namespace: 'rq',
      prefix: `rq-${Math.random().toString(36).slice(2, 8)}`,
      logger: pino({ level: 'silent' }),
      retryBaseMs: 100,
      retryMaxMs: 1_000,
      reconcileIntervalMs: 60_000,
      pruneIntervalMs: 60_000,
      onFailure: () => {},
    });
    expect(await queues.connected(5_000)).toBe(true);
  });
  afterAll(async () => {
    await queues?.close();
    await redis?.stop();
  });

  const completion = () => queues.queues.find((q) => q.name.endsWith('-completion'))!;

  it('adds the missing jobs only, across pages, and keeps the others as they were', async () => {
    const kept = [randomUUID(), randomUUID()];
    // A delayed job (a retry waiting out its backoff) must stay delayed.
    await completion().add('complete', { transactionId: kept[0] }, { jobId: `complete-${kept[0]}`, delay: 60_000 });
    await queues.completionPending(kept[1]!);
    const lost = Array.from({ length: 2_345 }, () => randomUUID());

    expect(await queues.completionsPending([...lost.slice(0, 1_000), ...kept, ...lost.slice(1_000)])).toBe(lost.length);
    const counts = await completion().getJobCounts('waiting', 'delayed');
    expect(counts).toEqual({ waiting: lost.length + 1, delayed: 1 });
    expect(await completion().getJobState(`complete-${kept[0]}`)).toBe('delayed');
    for (const id of [lost[0]!, lost[1_500]!, lost.at(-1)!]) {
      const job = await completion().getJob(`complete-${id}`);
      expect(job?.data).toEqual({ transactionId: id });
      // Retried like any completion job: until it completes.
      expect(job?.opts.attempts).toBe(1_000_000);
    }

    // Asked again: nothing is missing now.
    expect(await queues.completionsPending([...kept, ...lost])).toBe(0);
    expect(await queues.completionsPending([])).toBe(0);
  });

  it('fails while Redis is down, so that the reconciliation pass reports it', async () => {
    await redis.stop();
    await expect(queues.completionsPending([randomUUID()])).rejects.toThrow();
  });
});
