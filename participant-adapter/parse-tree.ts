/** A node of libpg-query's JSON parse tree: { NodeType: { field: … } }. */
export type Node = Record<string, unknown>;

/** DML and SELECT statement types: they act on the transaction's snapshot. CTEs may hold any of them. */
export const DML_STATEMENTS: ReadonlySet<string> = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/**
 * Every field of every node under `root`, as [name, value], depth first. Without recursion: a
 * deeply nested expression must not exhaust the stack. Only the first parse of a text walks it
 * (the guard caches its verdicts), so a generator's cost does not matter here.
 */
export function* treeFields(root: unknown): Generator<[string, unknown]> {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') continue;
    if (Array.isArray(v)) {
      for (const x of v) stack.push(x);
      continue;
    }
    for (const field of Object.entries(v as Node)) {
      yield field;
      stack.push(field[1]);
    }
  }
}
