/**
 * A lean row (migration 0005) writes no event for the happy path: its begin, its commit decision
 * and its clean completion are read back from the row's timestamps. Everything else (an abort and
 * its reason, recovery, a hazard, an operator's action) is a row of tpc_events, and a derived event
 * stands in only where no written one of its kind exists.
 */
export interface LeanRowFacts {
  status: string;
  submitted_by: string | null;
  created_at: Date;
  decided_at: Date | null;
  completed_at: Date | null;
  one_phase: boolean;
  interactive: boolean;
  timeout_ms: number | null;
  resources: string[];
  /**
   * The decision was written by a statement of its own, not with the completion (a read-only
   * commit, an abort before any prepare share one now()): computed by the log, since the
   * timestamps it returns keep microseconds that a JavaScript Date drops.
   */
  decided_apart: boolean;
}

export interface LogEvent {
  at: Date | string;
  kind: string;
  actor: string | null;
  detail: Record<string, unknown>;
}

const TERMINAL_KINDS = new Set(['completed', 'aborted']);

export function withHappyPathEvents(row: LeanRowFacts, written: LogEvent[]): LogEvent[] {
  // The resources it began with: a branch joined later has its own (written) event.
  const joined = new Set(written.filter((e) => e.kind === 'branch_joined').map((e) => e.detail.resource));
  const derived: LogEvent[] = [
    {
      at: row.created_at,
      kind: 'begun',
      actor: row.submitted_by,
      detail: { timeoutMs: row.timeout_ms, resources: row.resources.filter((r) => !joined.has(r)), ...(row.interactive ? { interactive: true } : {}) },
    },
  ];
  // Abort decisions are always written (they carry their reason): a derived decision is a commit.
  if (row.decided_apart && !written.some((e) => e.kind === 'decided')) {
    derived.push({
      at: row.decided_at!,
      kind: 'decided',
      actor: row.interactive ? row.submitted_by : null,
      detail: row.one_phase ? { outcome: 'one-phase commit' } : row.interactive ? { outcome: 'commit', interactive: true } : { outcome: 'commit' },
    });
  }
  if (row.completed_at !== null && !written.some((e) => TERMINAL_KINDS.has(e.kind))) {
    derived.push({ at: row.completed_at, kind: 'completed', actor: null, detail: { outcome: row.status } });
  }
  // Stable: at equal times the derived ones (begun, decided, completed) keep their order first.
  return [...derived, ...written].sort((a, b) => time(a.at) - time(b.at));
}

const time = (d: Date | string) => new Date(d).getTime();
