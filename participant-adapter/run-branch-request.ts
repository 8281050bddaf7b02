import type { StatementResult } from './branch.ts';
import type { DirectParticipant } from './direct-participant.ts';
import { ParticipantError, toParticipantError } from './errors.ts';
import type { PrepareBody, WireFailure, WirePrepareAnswer } from './http-wire.ts';

function failureOf(err: unknown, resource: string, statement: number | null): WireFailure {
  const e = err instanceof ParticipantError ? err : toParticipantError(err, resource, statement === null ? 'PREPARE TRANSACTION' : `statement ${statement}`);
  return { statement, code: e.sqlState ?? e.code, sqlState: e.sqlState ?? null, retryable: e.retryable, message: e.message };
}

/**
 * The participant's side of a remote branch: the statements in one transaction, then PREPARE
 * under the gid, in one pipelined flight on the service's own database. `cancelled` ends the
 * statements early when the coordinator goes away (its deadline or a sibling's failure).
 */
export async function runBranchRequest(participant: DirectParticipant, gid: string, body: PrepareBody, cancelled: AbortSignal): Promise<WirePrepareAnswer> {
  const already = await participant.inspectPrepared(gid, { locks: false });
  if (already) {
    // Prepared by an earlier call whose answer this process no longer holds (it restarted).
    return { gid, prepared: true, xid: already.xid, results: null, failure: null };
  }
  const branch = await participant.openBranch({ statementTimeoutMs: body.statementTimeoutMs });
  const onCancel = () => void branch.cancel();
  cancelled.addEventListener('abort', onCancel, { once: true });
  let failure: WireFailure | null = null;
  try {
    const runs = body.statements.map((s, i) =>
      branch.run(s.sql, s.params).catch((err: unknown) => {
        failure ??= failureOf(err, participant.name, i);
        throw err;
      }),
    );
    const preparing = branch.prepare(gid);
    const settled = await Promise.allSettled(runs);
    const [prep] = await Promise.allSettled([preparing]);
    let prepared = prep!.status === 'fulfilled' && prep!.value.prepared;
    if (prepared && failure) {
      // A statement failed yet PREPARE succeeded (it was refused before reaching the server, whose
      // transaction therefore had not failed): the branch lacks part of its work, so it must not
      // stay prepared. Branch.prepare already refuses this case; this keeps the promise here too.
      await participant.rollbackPrepared(gid);
      prepared = false;
    }
    if (!failure && prep!.status === 'rejected') failure = failureOf(prep!.reason, participant.name, null);
    if (!failure && !prepared) {
      failure = {
        statement: null,
        code: 'prepare_failed',
        sqlState: null,
        retryable: false,
        message: `PREPARE on ${participant.name} was rolled back by the server`,
      };
    }
    if (!prepared && branch.state === 'open') await branch.rollback().catch(() => {});
    const results = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value as StatementResult] : []));
    return { gid, prepared, xid: prepared && prep!.status === 'fulfilled' ? prep!.value.xid : null, results, failure: prepared ? null : failure };
  } finally {
    cancelled.removeEventListener('abort', onCancel);
    branch.release();
  }
}
