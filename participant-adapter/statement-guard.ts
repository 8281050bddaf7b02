import { loadModule, parseSync } from 'libpg-query';
import { ParticipantError } from './errors.ts';
import { DML_STATEMENTS as DML, treeFields, type Node } from './parse-tree.ts';
import { sessionNeutral } from './session-neutral.ts';
import { forbiddenFunctionReason, protectedSettingReason, setConfigReason } from './statement-policy.ts';

/*
 * A branch's statements run inside the coordinator's own transaction, with every right of the
 * resource's database role. The guard keeps them inside that transaction: a statement that ends
 * it (COMMIT, PREPARE TRANSACTION…) would commit outside the protocol; one that changes the session
 * (SET, PREPARE, LISTEN…) would outlive it on a pooled connection; one that reaches outside it
 * (DO and COPY … PROGRAM to a shell, dblink_exec to an autonomous write, ALTER ROLE … SET to every
 * later session of the role, pg_terminate_backend to the log's connections) escapes it entirely.
 *
 * It reads a statement with PostgreSQL's own parser (libpg-query), so comments, quoting, `-- x\r`
 * and nesting are read exactly as the server reads them, and it fails closed: only an explicit
 * allow-list of statement types passes, and anything it cannot parse or vouch for is refused.
 * The database's privileges remain the final boundary for what an allowed statement may touch.
 */

// The parser is WebAssembly, loaded once (~40 ms) before the first statement can be judged.
await loadModule();

const TRANSACTION_OWNED = 'the coordinator owns the transaction and the session';

/** Why the main refused statement types are refused; anything else gets the generic answer. */
const REFUSED_STATEMENTS: Record<string, string> = {
  TransactionStmt: `transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION…) is not allowed: ${TRANSACTION_OWNED}`,
  DoStmt: 'DO blocks are not allowed: they run procedural code (and dynamic SQL) the guard cannot read',
  CallStmt: 'CALL is not allowed: a procedure may commit, and runs code the guard cannot read',
  CopyStmt: "COPY is not allowed: it reads or writes server files, programs or the connection's data stream",
  PrepareStmt: 'PREPARE is not allowed: a prepared statement outlives the transaction on a pooled connection',
  ExecuteStmt: 'EXECUTE is not allowed: it runs a prepared statement the guard has not read',
  DeallocateStmt: `DEALLOCATE is not allowed: ${TRANSACTION_OWNED}`,
  DeclareCursorStmt: 'cursors are not allowed: a cursor WITH HOLD outlives the transaction',
  FetchStmt: 'cursors are not allowed: a cursor WITH HOLD outlives the transaction',
  ClosePortalStmt: 'cursors are not allowed: a cursor WITH HOLD outlives the transaction',
  ListenStmt: 'LISTEN is not allowed: it outlives the transaction on a pooled connection',
  UnlistenStmt: `UNLISTEN is not allowed: ${TRANSACTION_OWNED}`,
  NotifyStmt: 'NOTIFY is not allowed: notifications are delivered outside the two-phase protocol',
  DiscardStmt: `DISCARD is not allowed: ${TRANSACTION_OWNED}`,
  VariableShowStmt: 'SHOW is not allowed: use SELECT current_setting(…)',
  AlterRoleSetStmt: "ALTER ROLE … SET is not allowed: it changes every later session of the role, the coordinator's own among them",
  AlterDatabaseSetStmt: 'ALTER DATABASE … SET is not allowed: it changes every later session on the database',
  AlterSystemStmt: "ALTER SYSTEM is not allowed: it changes the server's configuration",
  CreateExtensionStmt: 'CREATE EXTENSION is not allowed: an extension brings functions (dblink, file access…) the guard does not know',
  GrantStmt: "GRANT and REVOKE are not allowed: privileges are the resource operator's boundary",
  GrantRoleStmt: "GRANT and REVOKE are not allowed: privileges are the resource operator's boundary",
  TruncateStmt: 'TRUNCATE is not allowed: it takes an ACCESS EXCLUSIVE lock and is not MVCC-safe; use DELETE',
  ExplainStmt: "EXPLAIN is not allowed: EXPLAIN ANALYZE runs its statement out of the guard's sight",
  VacuumStmt: "VACUUM and ANALYZE are not allowed: they are maintenance, not a branch's work",
  CheckPointStmt: 'CHECKPOINT is not allowed: it administers the whole server',
  LoadStmt: 'LOAD is not allowed: it loads a shared library into the server',
};

const ALLOWED_SUMMARY = 'a branch may run only SELECT, INSERT, UPDATE, DELETE, MERGE, LOCK, SET LOCAL, SET TRANSACTION and SET CONSTRAINTS';

// Locking a catalog table in a transaction that is then prepared blocks every session of the
// cluster that needs it (logins read pg_authid) until it is decided, and survives a restart.
// System schemas are pg_* and information_schema; an unqualified pg_* name resolves to pg_catalog first.
const isSystemSchema = (schema: string) => schema.startsWith('pg_') || schema === 'information_schema';

function lockReason(lock: Node): string | null {
  for (const r of (lock.relations as Node[] | undefined) ?? []) {
    const rel = r.RangeVar as { schemaname?: string; relname?: string } | undefined;
    const schema = rel?.schemaname?.toLowerCase();
    const name = rel?.relname?.toLowerCase() ?? '';
    if (schema !== undefined ? isSystemSchema(schema) : name.startsWith('pg_')) {
      return `LOCK on a system catalog (${name}) is not allowed: a prepared branch holding it would block every session of the cluster`;
    }
  }
  return null;
}

function setReason(set: Node): string | null {
  const kind = set.kind as string | undefined;
  const name = typeof set.name === 'string' ? set.name : '';
  // SET TRANSACTION … and SET TRANSACTION SNAPSHOT: the transaction's own characteristics.
  if (kind === 'VAR_SET_MULTI' && (name === 'TRANSACTION' || name === 'TRANSACTION SNAPSHOT')) return null;
  if (set.is_local === true && (kind === 'VAR_SET_VALUE' || kind === 'VAR_SET_DEFAULT' || kind === 'VAR_SET_CURRENT')) {
    return protectedSettingReason(name);
  }
  if (kind === 'VAR_RESET' || kind === 'VAR_RESET_ALL') return `RESET is not allowed: ${TRANSACTION_OWNED}`;
  return 'a session-wide SET is not allowed: it would outlive the transaction on a pooled connection (use SET LOCAL)';
}

function funcName(call: Node): string {
  const parts = (call.funcname as Node[] | undefined) ?? [];
  const last = parts[parts.length - 1]?.String as { sval?: string } | undefined;
  return last?.sval ?? '';
}

/**
 * Every node under a statement: function calls anywhere (target lists, FROM, CTEs, subqueries,
 * DEFAULT, ON CONFLICT, RETURNING…), a SELECT … INTO, and any statement node that is not DML.
 */
function treeReason(root: unknown): string | null {
  for (const [key, child] of treeFields(root)) {
    if (key === 'FuncCall') {
      const call = child as Node;
      const name = funcName(call);
      const why = name.toLowerCase() === 'set_config' ? setConfigReason((call.args as unknown[] | undefined) ?? []) : forbiddenFunctionReason(name);
      if (why) return why;
    } else if (key === 'intoClause' && child) {
      return 'SELECT … INTO is not allowed: it creates a table (use INSERT … SELECT)';
    } else if (/^[A-Z]\w*Stmt$/.test(key) && !DML.has(key)) {
      // A node type (capitalised), not a field such as InsertStmt's selectStmt.
      return REFUSED_STATEMENTS[key] ?? `${key.replace(/Stmt$/, '')} statements are not allowed: ${ALLOWED_SUMMARY}`;
    }
  }
  return null;
}

/** Judges one parsed statement: its type, then everything inside it. */
function statementReason(stmt: Node): string | null {
  const [type, body] = Object.entries(stmt)[0] ?? [];
  if (type === undefined) return 'the statement is empty';
  const node = (body ?? {}) as Node;
  if (DML.has(type)) return treeReason(node);
  if (type === 'LockStmt') return lockReason(node);
  if (type === 'VariableSetStmt') return setReason(node) ?? treeReason(node);
  if (type === 'ConstraintsSetStmt') return null;
  return REFUSED_STATEMENTS[type] ?? `${type.replace(/Stmt$/, '')} statements are not allowed: ${ALLOWED_SUMMARY}`;
}

function parseFailure(err: unknown): string {
  const e = err as { message?: unknown; sqlDetails?: { cursorPosition?: number } };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const at = e?.sqlDetails?.cursorPosition;
  return `the statement does not parse: ${message}${typeof at === 'number' && at >= 0 ? ` (at character ${at + 1})` : ''}`;
}

/** The guard's answer about one SQL text. */
interface Verdict {
  /** Why it may not run in a branch, or null when it may. */
  refusal: string | null;
  /** Allowed, and it cannot leave state on the session past its transaction (session-neutral.ts). */
  sessionNeutral: boolean;
}

const refused = (refusal: string): Verdict => ({ refusal, sessionNeutral: false });

/** Not cached: see verdictOf. */
function judge(sql: string): Verdict {
  // The server reads a query string up to its first NUL; the parser would too, but what follows it
  // would reach the server as other protocol fields. Nothing legitimate contains one.
  if (sql.includes('\u0000')) return refused('the statement contains a NUL character');
  if (sql.trim() === '') return refused('the statement is empty');
  let tree: { stmts?: { stmt?: Node }[] };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch (err) {
    return refused(parseFailure(err));
  }
  const stmts = tree.stmts ?? [];
  if (stmts.length === 0) return refused('the statement is empty');
  if (stmts.length > 1) return refused(`only one statement is allowed in a string: found ${stmts.length}`);
  const stmt = stmts[0]!.stmt ?? {};
  const refusal = statementReason(stmt);
  return refusal === null ? { refusal, sessionNeutral: sessionNeutral(stmt) } : refused(refusal);
}

/*
 * Verdicts by SQL text. Clients send the same few texts with different parameters, and a parse
 * costs tens of microseconds on the hot path. Bounded both ways, so that a stream of distinct
 * (or huge) texts cannot grow memory: at most CACHE_ENTRIES texts of at most CACHE_MAX_CHARS each.
 */
const CACHE_ENTRIES = 2000;
const CACHE_MAX_CHARS = 4096;
const verdicts = new Map<string, Verdict>();

function verdictOf(sql: string): Verdict {
  const cached = verdicts.get(sql);
  if (cached !== undefined) return cached;
  const verdict = judge(sql);
  if (sql.length <= CACHE_MAX_CHARS) {
    // Map iteration order is insertion order: the first key is the oldest.
    if (verdicts.size >= CACHE_ENTRIES) verdicts.delete(verdicts.keys().next().value!);
    verdicts.set(sql, verdict);
  }
  return verdict;
}

/** Why `sql` may not run in a branch (a sentence naming the statement type or function), or null when it may. */
export function statementRefusal(sql: string): string | null {
  return verdictOf(sql).refusal;
}

/**
 * Throws a non-retryable ParticipantError (code statement_not_allowed) when `sql` may not run in a
 * branch. Returns whether it may leave state on its session past its transaction (then the
 * session is reset before the connection serves another).
 */
export function assertStatementAllowed(sql: string): { touchesSession: boolean } {
  const verdict = verdictOf(sql);
  if (verdict.refusal !== null) throw new ParticipantError('statement_not_allowed', verdict.refusal, { retryable: false });
  return { touchesSession: !verdict.sessionNeutral };
}

/**
 * Whether `sql` may leave state on its session past its transaction, for a caller that runs its
 * own statements unguarded (the embedded SDK's local branches): anything the guard would refuse
 * counts as such, and so does a text too long for the verdict cache, which is not parsed at all
 * (a reset costs less than parsing it on every call).
 */
export function mayLeaveSessionState(sql: string): boolean {
  if (sql.length > CACHE_MAX_CHARS) return true;
  const verdict = verdictOf(sql);
  return verdict.refusal !== null || !verdict.sessionNeutral;
}
