/**
 * What the role a connection runs as can do beyond its own database's rights. A `submit` token
 * can do anything the resource's role can do inside one transaction, so these powers reach past
 * the transaction and past the token's resources:
 * - SUPERUSER: everything below, and every database of the cluster;
 * - CREATEROLE: make a role with any of the memberships below (and, before PostgreSQL 16, grant
 *   itself membership of any non-superuser role);
 * - pg_execute_server_program: `COPY … TO/FROM PROGRAM`, a shell as the server's OS user;
 * - pg_read_server_files / pg_write_server_files: read or write any file the server can.
 */
export interface RolePowers {
  /** The role the session runs as (current_user). */
  role: string;
  /** The dangerous powers it holds, by name; empty when it holds none. */
  powers: string[];
}

export const DANGEROUS_MEMBERSHIPS = ['pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files'] as const;

/*
 * pg_has_role(…, 'MEMBER') sees membership through other roles too (a role granted a role that is
 * granted pg_execute_server_program has the power). Functions and tables are schema-qualified: the
 * session's search_path is not trusted to put pg_catalog first (current_user is a keyword,
 * not a lookup; operators are left plain: pg_catalog comes first unless an operator's URL says otherwise).
 */
export const ROLE_POWERS_SQL = `SELECT current_user::pg_catalog.text AS role, r.rolsuper AS superuser, r.rolcreaterole AS createrole,
  ${DANGEROUS_MEMBERSHIPS.map((m) => `pg_catalog.pg_has_role(current_user, '${m}', 'MEMBER') AS ${m}`).join(',\n  ')}
  FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`;

/** The powers named in a row of ROLE_POWERS_SQL. A superuser is reported as that alone: it implies the rest. */
export function rolePowersOf(row: Record<string, unknown>): RolePowers {
  const role = String(row.role);
  if (row.superuser === true) return { role, powers: ['SUPERUSER'] };
  const powers: string[] = [];
  if (row.createrole === true) powers.push('CREATEROLE');
  for (const m of DANGEROUS_MEMBERSHIPS) if (row[m] === true) powers.push(m);
  return { role, powers };
}
