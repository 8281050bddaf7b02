import { assertValidGid, namespacePrefix } from '../../participant-adapter/gid.ts';

export { NAMESPACE_PATTERN, namespacePrefix } from '../../participant-adapter/gid.ts';

export function branchGid(namespace: string, transactionId: string, index: number): string {
  return assertValidGid(`${namespacePrefix(namespace)}${transactionId}:${index}`);
}

const GID_PARTS = /^tpc:[^:]+:([0-9a-f-]{36}):(\d+)$/;

/** The transaction and branch index a gid of the coordinator's shape names; null for any other gid. */
export function parseGid(gid: string): { transactionId: string; index: number } | null {
  const m = GID_PARTS.exec(gid);
  return m ? { transactionId: m[1]!, index: Number(m[2]) } : null;
}
