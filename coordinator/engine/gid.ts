import { assertValidGid, namespacePrefix } from '../../participant-adapter/gid.ts';

export { NAMESPACE_PATTERN, namespacePrefix } from '../../participant-adapter/gid.ts';

export function branchGid(namespace: string, transactionId: string, index: number): string {
  return assertValidGid(`${namespacePrefix(namespace)}${transactionId}:${index}`);
}
