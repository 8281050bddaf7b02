/*
 * Whether an allowed statement can leave anything on its session once its transaction ends, so
 * that the session reset after it (session-reset.ts) may be skipped: on these machines the reset is
 * about a fifth of a branch's server CPU (bench/branch-cost.ts), and most branches do not need it.
 *
 * The guard already refuses every statement that changes the session by itself (session-wide SET,
 * PREPARE, DECLARE, LISTEN, session advisory locks, set_config(…, false)), and PREPARE TRANSACTION
 * refuses a transaction that made a temporary table, a cursor WITH HOLD or a LISTEN. What is left
 * is code the statement calls: a function's body may set a setting or the role for the session,
 * take a session lock, prepare a statement, and nextval leaves currval behind. So a statement is
 * neutral when it calls no function at all, or only built-ins that do none of this. Any other
 * function, a schema-qualified name outside pg_catalog (a function of the same name elsewhere),
 * and a SET LOCAL (it can move the search_path under the names that follow) make the branch reset.
 *
 * Code the statement does not name (a trigger, a column default, a view, a policy, an operator)
 * is the database's own: no token can create it (the guard refuses DDL), and it runs alike on the
 * resource's own applications' pooled connections. A database whose own code changes the session
 * (a trigger calling set_config(…, false)) is the one case this misses; the README says so.
 */

import { DML_STATEMENTS, treeFields, type Node } from './parse-tree.ts';

// Built-ins that read their arguments and the transaction, and change nothing else: aggregates,
// window functions, clocks, text, numbers, JSON, arrays. Unqualified names resolve to pg_catalog
// first unless the search_path says otherwise, which only the resource's operator (or a SET LOCAL,
// itself not neutral) can arrange.
const NEUTRAL_FUNCTIONS = new Set([
  'count',
  'sum',
  'min',
  'max',
  'avg',
  'bool_and',
  'bool_or',
  'every',
  'array_agg',
  'string_agg',
  'json_agg',
  'jsonb_agg',
  'json_object_agg',
  'jsonb_object_agg',
  'row_number',
  'rank',
  'dense_rank',
  'lag',
  'lead',
  'now',
  'clock_timestamp',
  'statement_timestamp',
  'transaction_timestamp',
  'date_trunc',
  'date_part',
  'extract',
  'make_interval',
  'to_char',
  'to_timestamp',
  'lower',
  'upper',
  'length',
  'char_length',
  'substring',
  'substr',
  'btrim',
  'ltrim',
  'rtrim',
  'concat',
  'concat_ws',
  'replace',
  'left',
  'right',
  'strpos',
  'position',
  'abs',
  'round',
  'floor',
  'ceil',
  'ceiling',
  'mod',
  'to_json',
  'to_jsonb',
  'json_build_object',
  'jsonb_build_object',
  'json_build_array',
  'jsonb_build_array',
  'jsonb_set',
  'jsonb_array_length',
  'json_array_length',
  'jsonb_typeof',
  'gen_random_uuid',
  'array_length',
  'cardinality',
  'unnest',
  'array_position',
  'generate_series',
]);

function functionIsNeutral(call: Node): boolean {
  const parts = ((call.funcname as Node[] | undefined) ?? []).map((p) => (p.String as { sval?: string } | undefined)?.sval ?? '');
  if (parts.length === 2 && parts[0] !== 'pg_catalog') return false;
  if (parts.length < 1 || parts.length > 2) return false;
  return NEUTRAL_FUNCTIONS.has(parts[parts.length - 1]!);
}

/**
 * True when `stmt` (a statement the guard allowed, as parsed) cannot leave state on its session
 * past its transaction; false when it might, or when this cannot tell.
 */
export function sessionNeutral(stmt: Node): boolean {
  const [type, body] = Object.entries(stmt)[0] ?? [];
  if (type === 'LockStmt' || type === 'ConstraintsSetStmt') return true;
  if (type === undefined || !DML_STATEMENTS.has(type)) return false;
  for (const [key, child] of treeFields(body)) if (key === 'FuncCall' && !functionIsNeutral(child as Node)) return false;
  return true;
}
