import type pg from 'pg';

/*
 * What a connection goes back to the pool with. A branch's statements can leave state on the
 * session that outlives their transaction (a function's set_config(…, false), SET ROLE or SET
 * SESSION AUTHORIZATION, a session advisory lock, a temporary table, LISTEN, a cursor WITH HOLD,
 * currval), and the next transaction on the connection may be another token's.
 *
 * DISCARD ALL clears all of it, and also every prepared statement, which would make the
 * coordinator parse and plan each statement on every call. The reset below is DISCARD ALL's own
 * list (see the DISCARD page of the PostgreSQL manual) without DEALLOCATE ALL and DISCARD PLANS,
 * followed by a check that what it keeps is the coordinator's own:
 *
 * - a statement made with SQL PREPARE (a function's dynamic SQL can, the guard cannot see it)
 *   has from_sql = true; only the wire protocol's Parse, which only this process sends, makes one
 *   with from_sql = false. None of the first kind may remain.
 * - a statement of ours dropped (DEALLOCATE) or dropped and re-made under our name (a statement of
 *   the first kind) would fail or run other SQL in the next transaction: the count of the second
 *   kind must equal what node-postgres believes it has parsed on this connection.
 * - the session must be outside any transaction block: DISCARD ALL refuses to run in one, these
 *   statements do not, so the check asks the protocol (ReadyForQuery's status) instead.
 *
 * If the check fails, DISCARD ALL runs after all and node-postgres forgets its parsed names.
 * Cached plans (DISCARD PLANS) are kept: the server checks them against the catalogs, the
 * search_path and the role on every use.
 *
 * It is one simple query of several statements (one message, one answer), sent in the same
 * flight as the statement that ends the transaction, after it: it runs whether or not that failed.
 */
const RESET_AND_CHECK = [
  'CLOSE ALL',
  'SET SESSION AUTHORIZATION DEFAULT',
  'RESET ALL',
  'UNLISTEN *',
  'SELECT pg_catalog.pg_advisory_unlock_all()',
  'DISCARD TEMP',
  'DISCARD SEQUENCES',
  // After RESET ALL: the search_path is the startup packet's again, and the name is qualified anyway.
  // The view's function, counted here rather than by an aggregate: that query cost the server
  // more to plan than the named statements saved (branch-cost.ts).
  'SELECT from_sql FROM pg_catalog.pg_prepared_statement()',
];
const RESET_STATEMENTS = RESET_AND_CHECK.length;
const RESET_AND_CHECK_SQL = RESET_AND_CHECK.join('; ');

interface ParsedNames {
  parsedStatements?: Record<string, string>;
  submittedNamedStatements?: Record<string, string>;
}

/** node-postgres' record of the named statements it has parsed on this connection (not public API, hence the guard). */
function parsedNames(client: pg.ClientBase): ParsedNames {
  return (client as unknown as { connection?: ParsedNames }).connection ?? {};
}

function forgetParsed(client: pg.ClientBase): void {
  const names = parsedNames(client);
  if (names.parsedStatements) names.parsedStatements = {};
  if (names.submittedNamedStatements) names.submittedNamedStatements = {};
}

/** Outside any transaction block, as ReadyForQuery last said. */
export function idle(client: pg.ClientBase): boolean {
  return (client as unknown as { getTransactionStatus?: () => string | null }).getTransactionStatus?.() === 'I';
}

/** DISCARD ALL, and node-postgres forgets its parsed names; false: destroy the connection. */
export async function discardAll(client: pg.ClientBase): Promise<boolean> {
  try {
    await client.query('DISCARD ALL');
  } catch {
    return false;
  }
  forgetParsed(client);
  return idle(client);
}

/**
 * Resets the session for the next transaction, keeping the connection's verified named
 * statements. Resolves false when the connection must be destroyed, not pooled. Call it without
 * awaiting the ending statement, so both leave in one flight. `discardIf`, asked once the reset has
 * run (every earlier answer of the flight is in by then), forces DISCARD ALL: a named statement
 * failed and may be stale on the server ("cached plan must not change result type" after a column
 * was added would fail it on every later use).
 */
export async function resetSession(client: pg.ClientBase, options: { discardIf?: () => boolean } = {}): Promise<boolean> {
  // Nothing of ours to keep (no statement named on this connection, nor in this flight): DISCARD
  // ALL is the cheaper of the two for the server (≈3 µs against ≈13 µs in a pipeline).
  const names = parsedNames(client);
  if (Object.keys(names.parsedStatements ?? {}).length + Object.keys(names.submittedNamedStatements ?? {}).length === 0) {
    return discardAll(client);
  }
  let results: pg.QueryResult[];
  try {
    results = (await client.query(RESET_AND_CHECK_SQL)) as unknown as pg.QueryResult[];
  } catch {
    return false;
  }
  if (!idle(client)) return false;
  if (options.discardIf?.()) return discardAll(client);
  const kinds = (results[results.length - 1]?.rows ?? []) as { from_sql: boolean }[];
  const ours = Object.keys(parsedNames(client).parsedStatements ?? {}).length;
  if (results.length === RESET_STATEMENTS && kinds.every((k) => k.from_sql === false) && kinds.length === ours) return true;
  return discardAll(client);
}

/**
 * What the connection goes back to the pool with once `ending` (the statement that ends its
 * transaction, already issued) is answered; false: destroy it. When the transaction may have left
 * state on the session (`touched`), the session is reset in the same flight (resetSession: call this
 * without awaiting `ending`). When it cannot have, nothing is sent (the reset is about a fifth of a
 * branch's server CPU): the session need only be idle, and `discardIf`, asked once `ending` is
 * answered, still drops a named statement that failed.
 */
export function settleSession(
  client: pg.ClientBase,
  ending: Promise<unknown>,
  touched: boolean,
  options: { discardIf?: () => boolean } = {},
): Promise<boolean> {
  if (touched) return resetSession(client, options);
  const settled = () => untouchedSettled(client, options.discardIf?.() === true);
  return ending.then(settled, settled);
}

/**
 * An untouched session, once the statement ending its transaction is answered: poolable if idle,
 * or after DISCARD ALL when `discard` (a named statement failed). For a caller that settles the
 * session inside its own reaction to the ending (Branch.prepare) rather than through settleSession.
 */
export function untouchedSettled(client: pg.ClientBase, discard: boolean): boolean | Promise<boolean> {
  return discard ? discardAll(client) : idle(client);
}
