import type { Queue } from 'bullmq';
import { Gauge, type Registry } from 'prom-client';

const STATES = ['waiting', 'active', 'delayed', 'failed', 'prioritized'] as const;

// Redis down must not hang /metrics: a scrape then shows no queue figures, and /readyz says why.
const COUNT_TIMEOUT_MS = 1_000;

/**
 * Jobs per queue (completion, deadline, maintenance) and state, read from Redis at scrape time: a
 * completion queue that grows says phase 2 keeps failing somewhere, before transactions go in doubt.
 */
export function registerQueueGauges(registry: Registry, queues: () => readonly Queue[], namespace: string): void {
  const kindOf = (q: Queue) => q.name.replace(`tpc-${namespace}-`, '');
  new Gauge({
    name: 'tpc_job_queue_jobs',
    help: 'Jobs in each BullMQ queue by state (waiting, active, delayed, failed, prioritized).',
    labelNames: ['queue', 'state'],
    registers: [registry],
    async collect() {
      const counted = await Promise.all(
        queues().map(async (q) => {
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<null>((resolve) => {
            timer = setTimeout(() => resolve(null), COUNT_TIMEOUT_MS);
          });
          const counts = await Promise.race([q.getJobCounts(...STATES).catch(() => null), late]).finally(() => clearTimeout(timer));
          return [kindOf(q), counts] as const;
        }),
      );
      this.reset();
      for (const [queue, counts] of counted) {
        if (!counts) continue;
        for (const state of STATES) this.set({ queue, state }, counts[state] ?? 0);
      }
    },
  });
}
