/*
 * The submission's bounds, shared by its zod schema (submit-schema.ts) and the check of the usual
 * body (usual-submit.ts), which must never accept what the schema refuses.
 */

// Bounds on one request, so that no single body can tie up the service: 32 branches, 1000
// statements a branch, 100 000 characters of SQL and 10 000 parameters a statement.
export const MAX_BRANCHES = 32;
export const MAX_STATEMENTS = 1000;
export const MAX_SQL = 100_000;
export const MAX_PARAMS = 10_000;
// Parameters are JSON values; nesting is bounded because validating (and later serialising) an
// unboundedly deep value recurses, and a 3 KB body of brackets would otherwise exhaust the stack.
export const MAX_PARAM_DEPTH = 32;

/** Depth of a JSON value, computed without recursion, giving up past `limit`. */
export function depthExceeds(value: unknown, limit: number): boolean {
  // Most parameters are scalars: no stack to allocate, on every parameter of every submission.
  if (value === null || typeof value !== 'object') return false;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth > limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}
