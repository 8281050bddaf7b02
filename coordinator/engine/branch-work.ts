import { ParticipantError } from '../../participant-adapter/errors.ts';
import type { BranchSession, Participant } from '../../participant-adapter/participant.ts';
import type { WorkControl } from './deadline.ts';
import type { Failpoints } from './failpoints.ts';
import type { BranchSpec, StatementOutcome, TxError } from './types.ts';

export interface BranchWorkOk {
  ok: true;
  index: number;
  results: StatementOutcome[];
  /** Set when the work ended with PREPARE (several branches). */
  prepared: boolean;
  xid: string | null;
  /** Still open when the branch was not prepared (single branch: one-phase or read-only path). */
  open: BranchSession | null;
}

export interface BranchWorkFailed {
  ok: false;
  index: number;
  error: TxError;
  /** True when this branch failed on its own, false when it was cancelled by the deadline or a sibling's failure. */
  primary: boolean;
  /** The branch got prepared even so (the failure was detected after PREPARE): it must be rolled back by gid. */
  prepared: boolean;
  xid: string | null;
}

export type BranchWork = BranchWorkOk | BranchWorkFailed;

export function errorOf(err: unknown, resource: string | null, statement: number | null): TxError {
  if (err instanceof ParticipantError) return { resource, statement, code: err.sqlState ?? err.code, message: err.message };
  return { resource, statement, code: 'internal', message: err instanceof Error ? err.message : String(err) };
}

/** Promise.allSettled for one promise, without the array and the per-element reactions. */
function settled1<T>(p: Promise<T>): Promise<PromiseSettledResult<T>> {
  return p.then(
    (value) => ({ status: 'fulfilled', value }),
    (reason: unknown) => ({ status: 'rejected', reason }),
  );
}

/**
 * Runs one branch: open it, pipeline its statements (and PREPARE, when `gid` is given) in one go,
 * check each `expect`, and report. The first failure anywhere stops the siblings through `control`.
 */
export async function runBranchWork(
  participant: Participant,
  spec: BranchSpec,
  index: number,
  gid: string | null,
  control: WorkControl,
  failpoints: Failpoints,
): Promise<BranchWork> {
  let failure: BranchWorkFailed | undefined;
  const fail = (error: TxError) => {
    if (failure) return;
    failure = { ok: false, index, error, primary: !control.signal.aborted, prepared: false, xid: null };
    control.stop({ kind: 'failure' });
  };

  let branch: BranchSession;
  try {
    branch = await participant.openBranch({ statementTimeoutMs: control.remainingMs(), signal: control.signal });
  } catch (err) {
    if (control.signal.aborted && !(err instanceof ParticipantError)) {
      return { ok: false, index, error: errorOf(err, spec.resource, null), primary: false, prepared: false, xid: null };
    }
    fail(errorOf(err, spec.resource, null));
    return failure!;
  }

  const stopListening = control.onStop(() => void branch.cancel());
  try {
    const runs = spec.statements.map((s, i) =>
      branch.run(s.sql, s.params).then(
        (r) => {
          const want = s.expect?.rowCount;
          if (want !== undefined && r.rowCount !== want) {
            fail({
              resource: spec.resource,
              statement: i,
              code: 'expectation_failed',
              message: `statement ${i} on ${spec.resource} touched ${r.rowCount} row(s), expected ${want}`,
            });
          }
          return r;
        },
        (err: unknown): null => {
          // Recorded as the branch's failure; the result is never read then.
          fail(errorOf(err, spec.resource, i));
          return null;
        },
      ),
    );
    const preparing = gid === null ? null : branch.prepare(gid);
    // Settled, each: a failed statement resolves to null. One statement is the usual branch.
    const settled = runs.length === 1 ? [await runs[0]!] : await Promise.all(runs);
    const prep = preparing ? await settled1(preparing) : null;
    stopListening();

    const prepared = prep?.status === 'fulfilled' && prep.value.prepared;
    if (prepared) failpoints.hit(`after-prepare-${index}`);
    const xid = prep?.status === 'fulfilled' ? prep.value.xid : null;
    if (!failure && prep?.status === 'rejected') fail(errorOf(prep.reason, spec.resource, null));
    if (!failure && prep?.status === 'fulfilled' && !prepared) {
      fail({ resource: spec.resource, statement: null, code: 'prepare_failed', message: `PREPARE on ${spec.resource} was rolled back by the server` });
    }
    if (failure) {
      failure.prepared = prepared;
      failure.xid = xid;
      if (branch.state === 'open') await branch.rollback().catch(() => {});
      return failure;
    }
    const results = settled.map((r) => ({ rowCount: r!.rowCount, rows: r!.rows }));
    return { ok: true, index, results, prepared, xid, open: gid === null ? branch : null };
  } finally {
    stopListening();
    // A branch kept open for the one-phase path is released by its caller.
    if (failure || gid !== null) branch.release();
  }
}
