import { assertValidGid } from '../../participant-adapter/gid.ts';

/*
 * A gid is unique per Postgres cluster, and two resources may share a cluster, so it names the
 * coordinator, the namespace, the transaction and the branch: tpc:<namespace>:<txid>:<index>.
 * Recovery lists pg_prepared_xacts by the namespace prefix and leaves every other gid alone.
 */
export const NAMESPACE_PATTERN = /^[A-Za-z0-9_.-]{1,40}$/;

export function namespacePrefix(namespace: string): string {
  return `tpc:${namespace}:`;
}

export function branchGid(namespace: string, transactionId: string, index: number): string {
  return assertValidGid(`${namespacePrefix(namespace)}${transactionId}:${index}`);
}
