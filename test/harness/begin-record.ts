import { randomUUID } from 'node:crypto';
import type { BeginRecord } from '../../coordinator/engine/log-port.ts';

/** A begin record for the log tests: one branch per resource, gids of the engine's shape, a minute to its deadline. */
export function beginRecord(namespace: string, resources: string[], fields: Partial<BeginRecord> = {}): BeginRecord {
  const id = fields.id ?? randomUUID();
  return {
    id,
    namespace,
    deadline: new Date(Date.now() + 60_000),
    submittedBy: null,
    driver: 'd',
    branches: resources.map((resource, index) => ({ index, resource, gid: `tpc:${namespace}:${id}:${index}` })),
    timeoutMs: 60_000,
    ...fields,
  };
}

/**
 * A decided, unleased transaction as the schema before the lean log wrote it (migration 0005): its
 * one branch, prepared on `resource`, is a row of tpc_branches. Returns its id.
 */
export async function insertEarlierSchemaRow(
  client: { query(text: string, values: unknown[]): Promise<unknown> },
  namespace: string,
  resource: string,
): Promise<string> {
  const id = randomUUID();
  await client.query(
    `INSERT INTO tpc_transactions (id, namespace, deadline, status, branch_count, timeout_ms, decided_at)
     VALUES ($1, $2, now() + interval '1 minute', 'committing', 1, 60000, now())`,
    [id, namespace],
  );
  await client.query(`INSERT INTO tpc_branches (transaction_id, index, resource, gid, status) VALUES ($1, 0, $2, $3, 'prepared')`, [
    id,
    resource,
    `tpc:${namespace}:${id}:0`,
  ]);
  return id;
}
