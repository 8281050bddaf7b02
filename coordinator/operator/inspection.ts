import { stampedDeadline } from '../engine/transaction-id.ts';
import type { EngineDeps } from '../engine/ports.ts';
import { namespacePrefix, parseGid } from '../engine/gid.ts';

export interface ResourceReport {
  resource: string;
  /** How the coordinator reaches it: its own pool, or the database's participant router. */
  kind: 'postgres' | 'http';
  reachable: boolean;
  usable: boolean;
  serverVersion: string | null;
  maxPreparedTransactions: number | null;
  /** Prepared branches of this coordinator's namespace on the resource. */
  prepared: number | null;
  /** Age in seconds of the oldest of them: a prepared branch holds locks and holds back vacuum. */
  oldestPreparedSeconds: number | null;
  message: string | null;
}

export interface Orphan {
  resource: string;
  gid: string;
  transactionId: string | null;
  preparedAt: string;
  ageSeconds: number;
}

const ageOf = (d: Date) => Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));

/** Each resource's health and the namespace's prepared branches on it. */
export async function inspectResources(deps: EngineDeps): Promise<ResourceReport[]> {
  const prefix = namespacePrefix(deps.namespace);
  return Promise.all(
    [...deps.participants.values()].map(async (p) => {
      const health = await p.health();
      let prepared: number | null = null;
      let oldest: number | null = null;
      if (health.reachable) {
        const list = await p.listPrepared(prefix).catch(() => null);
        if (list) {
          prepared = list.length;
          oldest = list.length ? ageOf(list[0]!.preparedAt) : null;
        }
      }
      return {
        resource: p.name,
        kind: p.kind,
        reachable: health.reachable,
        usable: health.usable,
        serverVersion: health.serverVersion,
        maxPreparedTransactions: health.maxPreparedTransactions,
        prepared,
        oldestPreparedSeconds: oldest,
        message: health.message,
      };
    }),
  );
}

/**
 * Prepared branches of the namespace that the log does not know (their begin record was lost).
 * Reconciliation rolls them back once they are older than the longest deadline; an operator can
 * act sooner. Unreachable resources are reported, not skipped silently.
 */
export async function findOrphans(deps: EngineDeps): Promise<{ orphans: Orphan[]; unreachable: string[] }> {
  const prefix = namespacePrefix(deps.namespace);
  const orphans: Orphan[] = [];
  const unreachable: string[] = [];
  for (const p of deps.participants.values()) {
    let list;
    try {
      list = await p.listPrepared(prefix);
    } catch {
      unreachable.push(p.name);
      continue;
    }
    const ids = list.map((b) => parseGid(b.gid)?.transactionId).filter((x): x is string => x !== undefined);
    const known = await deps.recovery.statuses([...new Set(ids)]);
    for (const b of list) {
      const id = parseGid(b.gid)?.transactionId ?? null;
      if (id && known.has(id)) continue;
      // Still before the deadline its id carries: in flight, its row comes with its decision (abandoned.ts).
      const deadline = id ? stampedDeadline(id) : null;
      if (deadline !== null && Date.now() < deadline) continue;
      orphans.push({ resource: p.name, gid: b.gid, transactionId: id, preparedAt: b.preparedAt.toISOString(), ageSeconds: ageOf(b.preparedAt) });
    }
  }
  return { orphans, unreachable };
}
