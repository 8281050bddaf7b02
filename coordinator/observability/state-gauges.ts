import { Gauge, type Registry } from 'prom-client';
import type { Orphan, ResourceReport } from '../operator/inspection.ts';

export interface StateSources {
  logCounts(): Promise<{ inDoubt: number; heuristic: number }>;
  resources(): Promise<ResourceReport[]>;
  orphans(): Promise<{ orphans: Orphan[] }>;
}

interface Snapshot {
  counts: { inDoubt: number; heuristic: number } | null;
  resources: ResourceReport[] | null;
  orphans: Orphan[] | null;
}

// One look at the log and the resources serves every gauge of a scrape; 1 s also caps the cost of
// several scrapers at once. Each source is bounded, so an unreachable database cannot hang /metrics.
const SNAPSHOT_TTL_MS = 1_000;
const SOURCE_TIMEOUT_MS = 2_000;

function bounded<T>(p: Promise<T>): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.catch(() => null),
    new Promise<null>((r) => {
      timer = setTimeout(() => r(null), SOURCE_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Gauges operators alert on: in-doubt and heuristic transactions, orphans and prepared branches per resource, and their age. */
export function registerStateGauges(registry: Registry, sources: StateSources): void {
  let cached: { at: number; snapshot: Promise<Snapshot> } | undefined;
  const snapshot = () => {
    if (!cached || Date.now() - cached.at > SNAPSHOT_TTL_MS) {
      cached = {
        at: Date.now(),
        snapshot: Promise.all([bounded(sources.logCounts()), bounded(sources.resources()), bounded(sources.orphans())]).then(
          ([counts, resources, orphans]) => ({ counts, resources, orphans: orphans?.orphans ?? null }),
        ),
      };
    }
    return cached.snapshot;
  };
  new Gauge({
    name: 'tpc_in_doubt_transactions',
    help: 'Transactions whose phase 2 keeps failing (shown to operators).',
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (s.counts) this.set(s.counts.inDoubt);
    },
  });
  new Gauge({
    name: 'tpc_heuristic_transactions',
    help: 'Transactions in the log with a branch that ended against the decision.',
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (s.counts) this.set(s.counts.heuristic);
    },
  });
  new Gauge({
    name: 'tpc_orphan_branches',
    help: 'Prepared branches of the namespace that the log does not know, per resource.',
    labelNames: ['resource'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.orphans || !s.resources) return;
      this.reset();
      for (const r of s.resources) this.set({ resource: r.resource }, s.orphans.filter((o) => o.resource === r.resource).length);
    },
  });
  new Gauge({
    name: 'tpc_prepared_branches',
    help: 'Prepared branches of the namespace per resource.',
    labelNames: ['resource'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      this.reset();
      for (const r of s.resources ?? []) if (r.prepared !== null) this.set({ resource: r.resource }, r.prepared);
    },
  });
  new Gauge({
    name: 'tpc_oldest_prepared_seconds',
    help: 'Age of the oldest prepared branch of the namespace per resource (0: none).',
    labelNames: ['resource'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      this.reset();
      for (const r of s.resources ?? []) if (r.prepared !== null) this.set({ resource: r.resource }, r.oldestPreparedSeconds ?? 0);
    },
  });
  new Gauge({
    name: 'tpc_resource_up',
    help: 'Whether each resource answers and can prepare (1) or not (0).',
    labelNames: ['resource'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      this.reset();
      for (const r of s.resources ?? []) this.set({ resource: r.resource }, r.reachable && r.usable ? 1 : 0);
    },
  });
}
