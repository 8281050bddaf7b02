/*
 * What a branch's statements may call and set, in one place. The statement guard
 * (statement-guard.ts) parses a statement with PostgreSQL's own parser and asks this file about
 * every function call it finds anywhere in the tree and every setting a SET LOCAL or set_config
 * names. Functions are matched on the last part of their name, lower-cased, so that
 * `pg_catalog.dblink_exec(…)` and `"DBLINK_EXEC"(…)` are caught like `dblink_exec(…)`: a function
 * of the same name in another schema is refused too, which is the safe side of the doubt.
 *
 * Everything here is what the database's own privileges do not stop (a role may call these on
 * itself, or they are granted to PUBLIC), or what breaks the promise of the protocol: the
 * branch's work is exactly what PREPARE TRANSACTION covers and nothing else.
 */

interface FunctionGroup {
  /** Exact (lower-case) names. */
  names?: readonly string[];
  /** Names starting with one of these. */
  prefixes?: readonly string[];
  /** Names containing one of these. */
  contains?: readonly string[];
  /** Completes "function <name> …". */
  why: string;
}

const FORBIDDEN_FUNCTIONS: readonly FunctionGroup[] = [
  {
    // dblink and postgres_fdw open their own connections: what they write commits (or not) on its
    // own, outside the branch, so an aborted global transaction would keep it.
    prefixes: ['dblink', 'postgres_fdw'],
    why: 'acts outside the transaction: it runs SQL on another connection, which no PREPARE covers',
  },
  {
    // These take SQL text and run it: the guard would have to vouch for a statement it never sees.
    names: ['query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'ts_stat', 'ts_rewrite'],
    why: 'runs SQL text the guard cannot read',
  },
  {
    // A role may signal the backends of its own role: with the log on the same role, a token could
    // kill the coordinator's own connections.
    names: ['pg_terminate_backend', 'pg_cancel_backend', 'pg_signal_backend', 'pg_log_backend_memory_contexts'],
    why: 'acts outside the transaction: it signals other sessions of the server',
  },
  {
    // Files on the database host: nothing a resource's clients need, and a path out of the
    // token's resources (other databases' files, server configuration, keys).
    names: ['pg_read_file', 'pg_read_binary_file', 'pg_stat_file', 'lo_import', 'lo_export', 'pg_logdir_ls'],
    prefixes: ['pg_ls_', 'pg_file_'],
    why: 'acts outside the transaction: it reads or writes files on the database server',
  },
  {
    // Session advisory locks outlive the transaction (a prepared branch does not release them, a
    // pooled connection would carry them); the _xact_ variants end with the transaction and are fine.
    prefixes: ['pg_advisory_lock', 'pg_try_advisory_lock', 'pg_advisory_unlock'],
    why: 'acts outside the transaction: a session advisory lock outlives it (use the pg_advisory_xact_lock family)',
  },
  {
    // pg_notify is delivered by COMMIT of this session, never by COMMIT PREPARED: PREPARE refuses a
    // transaction that has notified, so it could only fail the branch, or leak on the one-phase path.
    names: ['pg_notify'],
    why: 'acts outside the transaction: notifications are delivered outside the two-phase protocol',
  },
  {
    // Server administration: configuration, WAL, backups, statistics. Each acts on the whole server
    // at once and is not undone by a rollback.
    names: [
      'pg_reload_conf',
      'pg_rotate_logfile',
      'pg_rotate_logfile_old',
      'pg_switch_wal',
      'pg_switch_xlog',
      'pg_promote',
      'pg_create_restore_point',
      'pg_backup_start',
      'pg_backup_stop',
      'pg_start_backup',
      'pg_stop_backup',
      'pg_wal_replay_pause',
      'pg_wal_replay_resume',
      'pg_import_system_collations',
    ],
    prefixes: ['pg_stat_reset', 'pg_stat_statements_reset'],
    why: 'acts outside the transaction: it administers the whole server',
  },
  {
    // Replication slots and origins, and messages written to the WAL for logical decoding: state
    // of the server (and of its replicas) that no rollback undoes; pg_logical_emit_message with
    // transactional = false is written at once.
    names: ['pg_logical_emit_message'],
    prefixes: ['pg_replication_origin', 'pg_logical_slot_'],
    contains: ['replication_slot'],
    why: 'acts outside the transaction: it changes replication state of the server',
  },
];

/*
 * Settings a branch may not change, not even for its own transaction (SET LOCAL, or
 * set_config(…, true)). Everything else a SET LOCAL names ends with the transaction.
 */
const PROTECTED_SETTINGS: ReadonlyMap<string, string> = new Map([
  // The role is the boundary a resource's operator sets: a branch acts as the resource's role only.
  ['role', "the branch acts as the resource's role only"],
  ['session_authorization', "the branch acts as the resource's role only"],
  // Both change how the server reads the statements that follow (a quote, a backslash, a multibyte
  // character), so the guard would no longer read them as the server does.
  ['standard_conforming_strings', "the guard reads statements as the server does only with the connection's own setting"],
  ['client_encoding', "the guard reads statements as the server does only with the connection's own setting"],
  // The server-side backstop of the transaction's deadline, should a cancel request be lost.
  ['statement_timeout', "the coordinator bounds every statement by the transaction's deadline"],
  // A single writing branch is committed in one phase, and the log records it committed right
  // after: an asynchronous COMMIT could be lost in a crash while the log says it happened.
  ['synchronous_commit', 'the coordinator records a branch committed only once its commit is durable'],
]);

/** Why a setting may not be changed by a branch (even for its transaction), or null when it may. */
export function protectedSettingReason(name: string): string | null {
  // Setting names are case-insensitive to the server: SET LOCAL "ROLE" sets the role.
  const why = PROTECTED_SETTINGS.get(name.toLowerCase());
  return why === undefined ? null : `setting ${name.toLowerCase()} may not be changed: ${why}`;
}

/** Why a function may not be called from a branch, or null when it may; `name` is the last part of its name. */
export function forbiddenFunctionReason(name: string): string | null {
  const n = name.toLowerCase();
  for (const g of FORBIDDEN_FUNCTIONS) {
    if (g.names?.includes(n) || g.prefixes?.some((p) => n.startsWith(p)) || g.contains?.some((c) => n.includes(c))) {
      return `function ${n} ${g.why}`;
    }
  }
  return null;
}

/** An A_Const node of the parse tree, as libpg-query gives it in JSON. */
interface AConst {
  sval?: { sval?: string };
  boolval?: { boolval?: boolean };
  isnull?: boolean;
}

function constOf(node: unknown): AConst | undefined {
  return (node as { A_Const?: AConst } | undefined)?.A_Const;
}

/**
 * set_config(name, value, is_local) changes a setting for the session unless `is_local` is true.
 * Only the literal `true` is accepted (a parameter, an expression or a string could be false at run
 * time), and only for a literal setting name that is not protected.
 */
export function setConfigReason(args: readonly unknown[]): string | null {
  const isLocal = constOf(args[2])?.boolval?.boolval === true;
  if (args.length !== 3 || !isLocal) {
    return 'function set_config is allowed only with the literal true as its third argument: a session-wide setting would outlive the transaction';
  }
  const name = constOf(args[0])?.sval?.sval;
  if (name === undefined) return 'function set_config is allowed only with a literal setting name, which the guard can check';
  return protectedSettingReason(name);
}
