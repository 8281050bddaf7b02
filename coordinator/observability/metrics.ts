import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { KeyedCounter, KeyedHistogram } from './keyed-series.ts';
import type { AdmissionObserver, ResourceSlotsView } from '../engine/admission.ts';
import type { EngineObserver } from '../engine/ports.ts';
import type { GroupCommitObserver } from '../log/group-commit.ts';
import type { RecordOperation } from './metered-participant.ts';

export interface Metrics {
  registry: Registry;
  observer: EngineObserver;
  /** By route (method and path) and status: inc(route, status). */
  httpRequests: KeyedCounter<'route' | 'status'>;
  backgroundFailures: Counter<'loop'>;
  /** Times one participant call outside a branch (see MeteredParticipant). */
  participantOperation: RecordOperation;
  /** Reports the number of transactions in flight from `count` at each scrape. */
  trackInFlight(count: () => number): void;
  /** Admission waits and refusals (see engine/admission.ts). */
  admission: AdmissionObserver;
  /** Reports slots in use and capacity per resource, and the waiters, from `read` at each scrape. */
  trackAdmission(read: () => { resources: ResourceSlotsView[]; waiting: number }): void;
  /** Batch sizes, flush durations and refusals of the log's group-commit writers (see log/group-commit.ts). */
  groupCommit: GroupCommitObserver;
}

/** A registry per service instance (not the global one), so that tests may run several in one process. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tpc_process_' });
  const transactions = new KeyedCounter({
    name: 'tpc_transactions_total',
    help: 'Transactions by outcome (committed, aborted, or left committing/aborting/preparing for the background).',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const phases = new KeyedHistogram({
    name: 'tpc_phase_duration_seconds',
    help: 'Duration of each protocol phase.',
    labelNames: ['phase'],
    registers: [registry],
    // 1 ms .. 10 s: loopback round trips are ~0.1 ms, a forced write ~1-5 ms, deadlines up to minutes.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  const branches = new KeyedCounter({
    name: 'tpc_branches_total',
    help: 'Branches by resource and outcome.',
    labelNames: ['resource', 'outcome'],
    registers: [registry],
  });
  const hazards = new KeyedCounter({
    name: 'tpc_heuristic_hazards_total',
    help: 'Branches found ended against the decision (someone acted behind the coordinator).',
    labelNames: ['resource'],
    registers: [registry],
  });
  const httpRequests = new KeyedCounter({
    name: 'tpc_http_requests_total',
    help: 'HTTP requests by route and status.',
    labelNames: ['route', 'status'],
    registers: [registry],
  });
  const backgroundFailures = new Counter({
    name: 'tpc_background_failures_total',
    help: 'Failures caught in background loops (they retry).',
    labelNames: ['loop'],
    registers: [registry],
  });
  const participantOperations = new KeyedHistogram({
    name: 'tpc_participant_operation_seconds',
    help: 'Calls to a participant outside a branch (phase 2, recovery, health), by resource, operation and outcome.',
    labelNames: ['resource', 'operation', 'outcome'],
    registers: [registry],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  let inFlightCount: () => number = () => 0;
  new Gauge({
    name: 'tpc_transactions_in_flight',
    help: 'Transactions this process is driving.',
    registers: [registry],
    collect() {
      this.set(inFlightCount());
    },
  });
  const admissionWaits = new KeyedHistogram({
    name: 'tpc_admission_wait_seconds',
    help: 'Time a submitted transaction waited for its slots, by outcome (admitted, refused).',
    labelNames: ['outcome'],
    registers: [registry],
    // 0.1 ms .. 1 s: most are admitted at once; the wait is bounded by TPC_ADMISSION_WAIT_MS (250 ms by default).
    buckets: [0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
  });
  const admissionRefusals = new Counter({
    name: 'tpc_admission_refusals_total',
    help: 'Submissions answered 503 for lack of capacity, by the resource that was full and why (queue_full, wait_timeout, no_capacity, prepare_refused).',
    labelNames: ['resource', 'reason'],
    registers: [registry],
  });
  let readAdmission: () => { resources: ResourceSlotsView[]; waiting: number } = () => ({ resources: [], waiting: 0 });
  new Gauge({
    name: 'tpc_admission_slots_in_use',
    help: 'Slots held by transactions this process drives, per resource.',
    labelNames: ['resource'],
    registers: [registry],
    collect() {
      for (const r of readAdmission().resources) this.set({ resource: r.resource }, r.inUse);
    },
  });
  new Gauge({
    name: 'tpc_admission_slots_capacity',
    help: 'Slots per resource: its pool, or fewer when its cluster has fewer free prepared-transaction slots (max_prepared_transactions less what others hold).',
    labelNames: ['resource'],
    registers: [registry],
    collect() {
      for (const r of readAdmission().resources) this.set({ resource: r.resource }, r.capacity);
    },
  });
  new Gauge({
    name: 'tpc_admission_waiting',
    help: 'Submissions waiting for slots.',
    registers: [registry],
    collect() {
      this.set(readAdmission().waiting);
    },
  });
  const groupCommitBatchSize = new KeyedHistogram({
    name: 'tpc_group_commit_batch_size',
    help: 'Items written in one statement by a group-commit writer.',
    labelNames: ['name'],
    registers: [registry],
    // 1 .. maxBatch (hundreds): 1 is one client alone; the size under load is about the clients waiting per round trip.
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
  });
  const groupCommitFlush = new KeyedHistogram({
    name: 'tpc_group_commit_flush_seconds',
    help: 'Duration of one group-commit write, by writer and outcome (ok, failed).',
    labelNames: ['name', 'outcome'],
    registers: [registry],
    // 0.1 ms .. 10 s: a relaxed write on loopback ~0.2 ms, a forced one ~1-5 ms, a log that hangs until its timeouts.
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  const groupCommitRefusals = new Counter({
    name: 'tpc_group_commit_refusals_total',
    help: 'Writes refused at once because too many were already waiting on the log.',
    labelNames: ['name'],
    registers: [registry],
  });
  return {
    registry,
    groupCommit: {
      flushed: (name, size, seconds, outcome) => {
        groupCommitBatchSize.observe(size, name);
        groupCommitFlush.observe(seconds, name, outcome);
      },
      refused: (name) => groupCommitRefusals.inc({ name }),
    },
    httpRequests,
    admission: {
      waited: (seconds, outcome) => admissionWaits.observe(seconds, outcome),
      refused: (resource, reason) => admissionRefusals.inc({ resource, reason }),
    },
    trackAdmission: (read) => {
      readAdmission = read;
    },
    backgroundFailures,
    participantOperation: (resource, operation, outcome, seconds) => participantOperations.observe(seconds, resource, operation, outcome),
    trackInFlight: (count) => {
      inFlightCount = count;
    },
    observer: {
      phase: (phase, seconds) => phases.observe(seconds, phase),
      outcome: (status) => transactions.inc(status),
      branch: (resource, outcome) => branches.inc(resource, outcome),
      hazard: (resource) => hazards.inc(resource),
    },
  };
}
