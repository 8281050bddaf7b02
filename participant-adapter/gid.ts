import { ParticipantError } from './errors.ts';

/**
 * `PREPARE TRANSACTION` takes a literal, not a bind parameter, so a gid reaches SQL as text.
 * Only these characters, at most 200 bytes (Postgres allows 200), ever get there.
 */
export const GID_PATTERN = /^[A-Za-z0-9_\-:.]{1,200}$/;

export function assertValidGid(gid: string): string {
  if (!GID_PATTERN.test(gid)) {
    throw new ParticipantError('invalid_gid', `gid ${JSON.stringify(gid.slice(0, 60))} does not match ${GID_PATTERN}`, {
      retryable: false,
    });
  }
  return gid;
}

/** The gid as a SQL string literal; safe because the pattern admits no quote or backslash. */
export function gidLiteral(gid: string): string {
  return `'${assertValidGid(gid)}'`;
}

/*
 * A gid is unique per Postgres cluster, and two resources may share a cluster, so it names the
 * coordinator, the namespace, the transaction and the branch: tpc:<namespace>:<txid>:<index>.
 * Recovery lists pg_prepared_xacts by the namespace prefix and leaves every other gid alone.
 */
export const NAMESPACE_PATTERN = /^[A-Za-z0-9_.-]{1,40}$/;

export function namespacePrefix(namespace: string): string {
  return `tpc:${namespace}:`;
}

const UUID_AND_INDEX = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:\d{1,4}$/;

/**
 * Whether `gid` is one the coordinator of `namespace` makes. A participant that answers only such
 * gids cannot be used to commit or roll back prepared transactions that belong to something else.
 */
export function isNamespaceGid(gid: string, namespace: string): boolean {
  const prefix = namespacePrefix(namespace);
  return GID_PATTERN.test(gid) && gid.startsWith(prefix) && UUID_AND_INDEX.test(gid.slice(prefix.length));
}
