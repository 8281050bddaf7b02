import { TEMPLATE_NAME } from '../config/statement-templates.ts';
import { depthExceeds, MAX_BRANCHES, MAX_PARAM_DEPTH, MAX_PARAMS, MAX_SQL, MAX_STATEMENTS } from './submit-limits.ts';

/** What the submit schema (submit-schema.ts) gives for a body it accepts. */
export interface SubmitBody {
  branches: { resource: string; statements: SubmitStatement[] }[];
  timeoutMs?: number;
  wait: 'completed' | 'decided';
}

interface SubmitStatement {
  sql?: string;
  statement?: string;
  params: unknown[];
  expect?: { rowCount?: number };
}

type Plain = Record<string, unknown>;

/** An object literal or JSON object: no prototype of its own that could lend it keys or getters. */
function plain(value: unknown): value is Plain {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** True when every own key of `o` is one of `allowed` and none holds undefined (the schema's edge cases). */
function onlyKeys(o: Plain, allowed: readonly string[]): boolean {
  for (const key of Object.keys(o)) if (!allowed.includes(key) || o[key] === undefined) return false;
  return true;
}

function count(n: unknown, least: number, most: number): n is number {
  return Number.isSafeInteger(n) && (n as number) >= least && (n as number) <= most;
}

const BODY_KEYS = ['branches', 'timeoutMs', 'wait'] as const;
const BRANCH_KEYS = ['resource', 'statements'] as const;
const STATEMENT_KEYS = ['sql', 'statement', 'params', 'expect'] as const;
const EXPECT_KEYS = ['rowCount'] as const;

function statementOf(s: unknown): SubmitStatement | undefined {
  if (!plain(s) || !onlyKeys(s, STATEMENT_KEYS)) return undefined;
  const { sql, statement, params, expect } = s;
  if ((sql === undefined) === (statement === undefined)) return undefined;
  if (sql !== undefined && (typeof sql !== 'string' || sql.length < 1 || sql.length > MAX_SQL)) return undefined;
  if (statement !== undefined && (typeof statement !== 'string' || !TEMPLATE_NAME.test(statement))) return undefined;
  let copied: unknown[] = [];
  if (params !== undefined) {
    if (!Array.isArray(params) || params.length > MAX_PARAMS) return undefined;
    for (const p of params) if (depthExceeds(p, MAX_PARAM_DEPTH)) return undefined;
    // Copied, as the schema's parse copies it: a caller of the embedded SDK that reuses its array
    // afterwards must not change what the transaction runs or what its idempotency hash covered.
    copied = params.slice();
  }
  const out: SubmitStatement = sql !== undefined ? { sql, params: copied } : { statement: statement as string, params: copied };
  if (expect !== undefined) {
    if (!plain(expect) || !onlyKeys(expect, EXPECT_KEYS)) return undefined;
    if (expect.rowCount !== undefined && !count(expect.rowCount, 0, Number.MAX_SAFE_INTEGER)) return undefined;
    out.expect = expect.rowCount === undefined ? {} : { rowCount: expect.rowCount };
  }
  return out;
}

/**
 * The submission's body checked without zod, for the usual body: what the submit schema would
 * return for it, or undefined when anything in it is not certainly valid, and the schema then
 * judges it and words the errors. Every check here is the schema's or stricter (plain objects only,
 * no key holding undefined, safe integers), so nothing the schema refuses gets through; a test
 * compares the two on generated bodies (test/usual-submit.test.ts).
 *
 * Why: for a body that is nearly always valid, zod's parse (its per-node results and contexts) was
 * about 5 % of what the coordinator allocated per transfer at 32 clients, and parseSubmit took 4.4 µs
 * of CPU for the benchmark's transfer against 1.7 with this check (issue 13).
 */
export function usualSubmit(body: unknown, maxTimeoutMs: number): SubmitBody | undefined {
  if (!plain(body) || !onlyKeys(body, BODY_KEYS)) return undefined;
  const { branches, timeoutMs, wait } = body;
  if (!Array.isArray(branches) || branches.length < 1 || branches.length > MAX_BRANCHES) return undefined;
  if (timeoutMs !== undefined && !count(timeoutMs, 1, maxTimeoutMs)) return undefined;
  if (wait !== undefined && wait !== 'completed' && wait !== 'decided') return undefined;
  const seen = new Set<string>();
  const out: SubmitBody['branches'] = [];
  for (const b of branches) {
    if (!plain(b) || !onlyKeys(b, BRANCH_KEYS)) return undefined;
    const { resource, statements } = b;
    if (typeof resource !== 'string' || resource.length < 1 || resource.length > 63 || seen.has(resource)) return undefined;
    seen.add(resource);
    if (!Array.isArray(statements) || statements.length < 1 || statements.length > MAX_STATEMENTS) return undefined;
    const checked: SubmitStatement[] = [];
    for (const s of statements) {
      const one = statementOf(s);
      if (!one) return undefined;
      checked.push(one);
    }
    out.push({ resource, statements: checked });
  }
  return { branches: out, ...(timeoutMs === undefined ? {} : { timeoutMs }), wait: wait ?? 'completed' };
}
