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
