import type pg from 'pg';
import { escapeIdentifier, escapeLiteral } from 'pg';

/*
 * Least privilege by construction, for the clusters this program starts itself (the embedded
 * default, the test harness, the benchmark): each database is owned by a login role of its own,
 * the coordinator connects as that role, and the superuser stays with the program's own setup.
 * A superuser resource turns any SQL the statement guard misses into a shell on the host.
 */

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

function ident(name: string): string {
  if (!ROLE_NAME.test(name)) throw new Error(`bad role or database name ${JSON.stringify(name)}`);
  return escapeIdentifier(name);
}

/**
 * A login role with no power beyond what it owns: created when missing, and stripped of any power
 * an earlier version or a hand may have given it. `password` (when given) is set every time, so the
 * cluster always agrees with the file that keeps it.
 */
export async function ensureLoginRole(admin: pg.ClientBase, role: string, password?: string): Promise<void> {
  const attributes = 'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS';
  const exists = await admin.query('SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1', [role]);
  await admin.query(`${exists.rowCount ? 'ALTER' : 'CREATE'} ROLE ${ident(role)} ${attributes}`).catch(async (err: unknown) => {
    // Two starts creating the same role at once: the loser finds it made.
    if ((err as { code?: string }).code !== '42710') throw err;
    await admin.query(`ALTER ROLE ${ident(role)} ${attributes}`);
  });
  if (password !== undefined) await admin.query(`ALTER ROLE ${ident(role)} PASSWORD ${escapeLiteral(password)}`);
}

/**
 * `name`, owned by `owner`, which only its owner (and superusers) may connect to: Postgres lets
 * every role connect to every database by default (CONNECT granted to PUBLIC), which would let a
 * bank's role open the log, or another bank.
 */
export async function ensureOwnedDatabase(admin: pg.ClientBase, name: string, owner: string): Promise<void> {
  const exists = await admin.query('SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1', [name]);
  if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${ident(name)} OWNER ${ident(owner)}`);
  else await admin.query(`ALTER DATABASE ${ident(name)} OWNER TO ${ident(owner)}`);
  await closeDatabaseToPublic(admin, name);
  await admin.query(`GRANT CONNECT ON DATABASE ${ident(name)} TO ${ident(owner)}`);
}

/** Takes CONNECT and TEMPORARY on `name` from PUBLIC (superusers and explicit grants keep theirs). */
export async function closeDatabaseToPublic(admin: pg.ClientBase, name: string): Promise<void> {
  // Any name a user gave a database of the cluster: quoted, not checked against ROLE_NAME.
  await admin.query(`REVOKE CONNECT, TEMPORARY ON DATABASE ${escapeIdentifier(name)} FROM PUBLIC`);
}

/*
 * Everything in the database's own schemas that a superuser owns, other than what an extension
 * brings: relations (a sequence owned by a column follows its table), enum/domain/composite types,
 * functions and procedures, and schemas. One statement per object, built with format(%I).
 */
const MOVE_OWNERSHIP_SQL = `
DO $move$
DECLARE
  target text := current_setting('tpc.new_owner');
  r record;
BEGIN
  FOR r IN
    SELECT format('ALTER %s %I.%I OWNER TO %I',
             CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                            WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
             n.nspname, c.relname, target) AS stmt
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND o.rolsuper
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
    UNION ALL
    SELECT format('ALTER TYPE %I.%I OWNER TO %I', n.nspname, t.typname, target)
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    JOIN pg_catalog.pg_roles o ON o.oid = t.typowner
    WHERE o.rolsuper AND (t.typtype IN ('e', 'd') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c'))
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                      AND d.objid = t.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::pg_catalog.regprocedure, target)
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
    WHERE o.rolsuper AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('ALTER SCHEMA %I OWNER TO %I', n.nspname, target)
    FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner
    WHERE o.rolsuper AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND n.nspname NOT LIKE 'pg\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                      AND d.objid = n.oid AND d.deptype = 'e')
  LOOP
    EXECUTE r.stmt;
  END LOOP;
END
$move$`;

/**
 * Moves what a superuser owns in the database `client` is connected to (as a superuser) to
 * `owner`: a database made by an earlier version belonged to postgres, tables and all, and its
 * role could neither migrate nor, for the log, write. Idempotent: nothing is left to move the
 * second time.
 */
export async function moveOwnership(client: pg.ClientBase, owner: string): Promise<void> {
  ident(owner);
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_catalog.set_config('tpc.new_owner', $1, true)`, [owner]);
    await client.query(MOVE_OWNERSHIP_SQL);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}
