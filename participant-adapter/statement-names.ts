import { createHash } from 'node:crypto';
import { parseSync } from 'libpg-query';
import './statement-guard.ts'; // loads the parser (WebAssembly) before parseSync is called

/*
 * Which statements a branch sends as named (server-side prepared, parsed and planned once per
 * connection) instead of unnamed (parsed and planned on every call). A named statement outlives
 * the transaction that first parsed it and serves later tokens' transactions on the same pooled
 * connection, so it must mean the same thing whoever parsed it:
 *
 * - Parse analysis reads a few settings that a token may change with SET LOCAL, and the server
 *   may redo it at any later use (after an invalidation, autovacuum's ANALYZE is enough), under
 *   the settings of whichever token's transaction is running then. The settings it reads only
 *   shape string constants (DateStyle, TimeZone, IntervalStyle, standard_conforming_strings,
 *   array_nulls) and `= NULL` (transform_null_equals). A statement is named only if every
 *   constant in it is a number or a boolean, so its meaning depends on none of them.
 * - search_path decides which table a name means; the server stores the path a statement was
 *   analysed under and analyses it again when it is used under another, so a token's
 *   `SET LOCAL search_path` reaches no other token's use.
 * - The statement itself (dropped and re-made under the same name by a function's dynamic SQL)
 *   is checked after every transaction: see session-reset.ts.
 *
 * What stays shared is the plan's shape: planner settings (enable_seqscan…) in force when the
 * server builds the generic plan stay with it until the next invalidation. They change its speed,
 * never its result.
 */

/** Names a connection may hold at most: each keeps a parse tree and a plan in the backend's memory. */
const MAX_NAMED = 64;
/** Distinct texts counted at once; a text is named at its second sighting (it repeats: templates, the app's fixed SQL). */
const MAX_COUNTED = 1024;

export class StatementNames {
  readonly #named = new Map<string, string | null>();
  #counted = new Map<string, number>();

  /** The server-side name to send `sql` under, or undefined: unnamed. */
  nameFor(sql: string): string | undefined {
    const known = this.#named.get(sql);
    if (known !== undefined) return known ?? undefined;
    const seen = (this.#counted.get(sql) ?? 0) + 1;
    if (seen < 2) {
      // Forget everything at once when full: a flood of one-off texts costs a recount, never memory.
      if (this.#counted.size >= MAX_COUNTED) this.#counted = new Map();
      this.#counted.set(sql, seen);
      return undefined;
    }
    this.#counted.delete(sql);
    if (this.#named.size >= MAX_NAMED) return undefined;
    const name = settingFree(sql) ? `tpc_${createHash('sha256').update(sql).digest('hex').slice(0, 32)}` : null;
    this.#named.set(sql, name);
    return name ?? undefined;
  }
}

/** Every constant is a number or a boolean (no string, bit string or NULL literal). */
export function settingFree(sql: string): boolean {
  let tree: unknown;
  try {
    tree = parseSync(sql);
  } catch {
    return false;
  }
  let free = true;
  const visit = (node: unknown): void => {
    if (!free || node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) {
      node.forEach(visit);
      return;
    }
    const record = node as Record<string, unknown>;
    const constant = record.A_Const as Record<string, unknown> | undefined;
    if (constant && !('ival' in constant || 'fval' in constant || 'boolval' in constant)) {
      free = false;
      return;
    }
    Object.values(record).forEach(visit);
  };
  visit(tree);
  return free;
}
