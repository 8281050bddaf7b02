import { fenceAbandoned } from './abandoned.ts';
import { namespacePrefix, parseGid } from './gid.ts';
import { finishBranch } from './phase-two.ts';
import type { EngineDeps } from './ports.ts';

export interface ReconcileOptions {
  /**
   * The longest deadline any transaction can have. A prepared branch that the log does not know,
   * and whose id carries no deadline (abandoned.ts), is rolled back only once it has been prepared
   * longer than this: its transaction's deadline has then certainly passed, so the scan cannot race
   * a driver whose begin record is still in flight.
   */
  maxTimeoutMs: number;
  /** Most unattended transactions re-queued per scan (the next scan takes the rest). */
  batch: number;
  /**
   * Queues the completion of each transaction that has no completion job (deduplicated by
   * transaction id); returns how many it queued.
   */
  enqueue: (transactionIds: readonly string[]) => Promise<number>;
  /** A decided transaction still unfinished this long after its decision is flagged in doubt. */
  inDoubtAfterMs: number;
}

export interface ReconcileReport {
  requeued: number;
  orphansRolledBack: number;
  /** Branches of transactions past the deadline their id carries with no row, rolled back behind a tombstone. */
  overdueRolledBack: number;
  leftoversFinished: number;
  /** Decided transactions flagged in doubt by this pass (unfinished too long after their decision). */
  flaggedInDoubt: number;
  errors: number;
}

/**
 * One reconciliation pass: what Redis may have lost is found again from the log and from every
 * resource's pg_prepared_xacts. It never decides anything itself except presumed abort for
 * branches the log has never heard of; everything else goes through the completion queue, whose
 * worker takes the lease before acting.
 */
export async function reconcile(deps: EngineDeps, options: ReconcileOptions): Promise<ReconcileReport> {
  const report: ReconcileReport = { requeued: 0, orphansRolledBack: 0, overdueRolledBack: 0, leftoversFinished: 0, flaggedInDoubt: 0, errors: 0 };
  // Collected, then queued together: each pass names every unfinished transaction unattended at
  // the moment, which in an outage is the whole backlog, most of whose jobs Redis still holds.
  const requeued = new Set<string>();
  const later = new Set<string>();

  report.flaggedInDoubt = await deps.recovery.flagOverdue(deps.namespace, options.inDoubtAfterMs);

  for (const tx of await deps.recovery.unattended(deps.namespace, options.batch)) {
    // Active ones not yet past their deadline still belong to their driver.
    if (tx.status === 'active' && new Date(tx.deadline).getTime() > Date.now()) continue;
    requeued.add(tx.id);
  }
  // Before the participants are listed: one that hangs must not hold back what the log alone shows.
  report.requeued += await options.enqueue([...requeued]);

  const prefix = namespacePrefix(deps.namespace);
  for (const participant of deps.participants.values()) {
    let prepared;
    try {
      prepared = await participant.listPrepared(prefix);
    } catch (err) {
      report.errors++;
      deps.logger.warn(
        { resource: participant.name, err: err instanceof Error ? err.message : String(err) },
        'reconciliation could not list prepared branches',
      );
      continue;
    }
    const byTx = new Map<string, typeof prepared>();
    for (const p of prepared) {
      const id = parseGid(p.gid)?.transactionId;
      if (!id) continue; // not of our shape: never touch it
      byTx.set(id, [...(byTx.get(id) ?? []), p]);
    }
    const statuses = await deps.recovery.statuses([...byTx.keys()]);
    for (const [id, branches] of byTx) {
      const known = statuses.get(id);
      const status = known?.status;
      if (status === 'committed' || status === 'aborted') {
        // Finished in the log yet still prepared here (a read-only branch left by a crash): the decision wins.
        for (const b of branches) {
          const r = await finishBranch(
            participant,
            { index: -1, resource: participant.name, gid: b.gid, xid: null },
            status === 'committed' ? 'commit' : 'abort',
          );
          if (r.done) report.leftoversFinished++;
          else report.errors++;
        }
      } else if (known !== undefined) {
        // In flight with a live driver: its own business. Unattended: already re-queued above,
        // unless the scan's batch did not reach it.
        if (!known.attended && !requeued.has(id)) later.add(id);
      } else {
        const fence = await fenceAbandoned(
          deps,
          id,
          participant.name,
          branches.map((b) => b.gid),
        ).catch((err: unknown) => {
          deps.logger.warn({ transactionId: id, err: err instanceof Error ? err.message : String(err) }, 'reconciliation could not write a tombstone');
          return 'failed' as const;
        });
        if (fence === 'failed') report.errors++;
        if (fence !== 'rollback' && fence !== 'unstamped') continue;
        for (const b of branches) {
          // Past its deadline and fenced, or (an id with no deadline) prepared longer than any deadline.
          if (fence === 'unstamped' && Date.now() - b.preparedAt.getTime() < options.maxTimeoutMs) continue;
          const r = await participant.rollbackPrepared(b.gid).catch(() => 'failed' as const);
          if (r === 'failed') report.errors++;
          else if (fence === 'rollback') {
            // Not an orphan of the orphan timeout: the deadline enforced for a transaction whose row
            // was never written (its driver died, or gave way to the tombstone).
            report.overdueRolledBack++;
            deps.logger.warn(
              { resource: participant.name, gid: b.gid, transactionId: id },
              'rolled back a prepared branch of a transaction that never reached the log before its deadline (presumed abort)',
            );
          } else {
            report.orphansRolledBack++;
            deps.logger.warn(
              { resource: participant.name, gid: b.gid, preparedAt: b.preparedAt },
              'rolled back a prepared branch unknown to the log (presumed abort)',
            );
          }
        }
      }
    }
  }
  report.requeued += await options.enqueue([...later]);
  return report;
}
