import { z } from 'zod';
import { TEMPLATE_NAME } from '../config/statement-templates.ts';
import type { SubmitRequest } from '../engine/types.ts';
import { ValidationError } from '../errors.ts';
import { depthExceeds, MAX_BRANCHES, MAX_PARAM_DEPTH, MAX_PARAMS, MAX_SQL, MAX_STATEMENTS } from './submit-limits.ts';
import { type SubmitBody, usualSubmit } from './usual-submit.ts';

const jsonParam = z.unknown().superRefine((v, ctx) => {
  if (depthExceeds(v, MAX_PARAM_DEPTH)) ctx.addIssue({ code: 'custom', message: `a parameter may nest at most ${MAX_PARAM_DEPTH} levels` });
});

/*
 * A statement is raw SQL (`sql`) or the name of a statement template (`statement`, from
 * TPC_STATEMENTS_FILE), exactly one of the two. What the SQL does is judged after the structure,
 * by the statement guard (statement-refusals.ts), so that a refusal has its own problem type.
 */
const statement = z
  .strictObject({
    sql: z
      .string()
      .min(1)
      .max(MAX_SQL)
      .optional()
      .describe('One SQL statement with $n parameters, judged by the statement guard (422 statement_not_allowed when refused)'),
    statement: z
      .string()
      .regex(TEMPLATE_NAME, 'a template name is 1 to 100 letters, digits, "_" or "-"')
      .optional()
      .describe('In place of sql: the name of a statement template from TPC_STATEMENTS_FILE, run with params'),
    params: z.array(jsonParam).max(MAX_PARAMS).default([]),
    expect: z.strictObject({ rowCount: z.number().int().min(0).optional() }).optional(),
  })
  .superRefine((s, ctx) => {
    if ((s.sql === undefined) === (s.statement === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of "sql" and "statement" (the name of a statement template)' });
    }
  })
  .meta({
    // What the superRefine above says, for the OpenAPI document (each property restated beside
    // `required`, as strict JSON Schema validators want).
    oneOf: [
      { properties: { sql: {} }, required: ['sql'] },
      { properties: { statement: {} }, required: ['statement'] },
    ],
  });

const branch = z.strictObject({
  resource: z.string().min(1).max(63),
  statements: z.array(statement).min(1).max(MAX_STATEMENTS),
});

export function submitSchema(maxTimeoutMs: number) {
  return z
    .strictObject({
      branches: z.array(branch).min(1).max(MAX_BRANCHES),
      timeoutMs: z.number().int().min(1).max(maxTimeoutMs).optional(),
      wait: z.enum(['completed', 'decided']).default('completed'),
    })
    .superRefine((body, ctx) => {
      const seen = new Set<string>();
      body.branches.forEach((b, i) => {
        if (seen.has(b.resource)) {
          ctx.addIssue({ code: 'custom', path: ['branches', i, 'resource'], message: `resource "${b.resource}" appears in more than one branch` });
        }
        seen.add(b.resource);
      });
    });
}

export type SubmitSchema = ReturnType<typeof submitSchema>;

/** The schema and its bound, built once: usualSubmit checks the usual body, the schema every other. */
export interface SubmitContract {
  schema: SubmitSchema;
  maxTimeoutMs: number;
}

export function submitContract(maxTimeoutMs: number): SubmitContract {
  return { schema: submitSchema(maxTimeoutMs), maxTimeoutMs };
}

/** The body as the schema gives it, or ValidationError listing every issue. */
function schemaParse(schema: SubmitSchema, body: unknown): SubmitBody {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
    throw new ValidationError(`invalid transaction: ${issues.map((i) => (i.path ? `${i.path}: ` : '') + i.message).join('; ')}`, issues);
  }
  return parsed.data;
}

export interface ParsedSubmit {
  /** The request with every template resolved to its SQL: what the engine runs and the idempotency hash covers. */
  request: SubmitRequest;
  /** Whether any statement was sent as raw SQL rather than a template (a `"sql": false` token may not). */
  rawSql: boolean;
}

/**
 * Validates a body against the contract, the configured resources and the statement templates;
 * throws ValidationError listing every issue.
 */
export function parseSubmit(
  contract: SubmitContract,
  body: unknown,
  resources: ReadonlySet<string>,
  defaultTimeoutMs: number,
  templates: ReadonlyMap<string, string> = new Map(),
): ParsedSubmit {
  const data = usualSubmit(body, contract.maxTimeoutMs) ?? schemaParse(contract.schema, body);
  const unknown = data.branches.map((b, i) => ({ r: b.resource, i })).filter(({ r }) => !resources.has(r));
  if (unknown.length > 0) {
    const issues = unknown.map(({ r, i }) => ({ path: `branches.${i}.resource`, message: `unknown resource "${r}"` }));
    throw new ValidationError(`invalid transaction: ${issues.map((i) => i.message).join('; ')}`, issues);
  }
  const missing = data.branches.flatMap((b, i) =>
    b.statements.flatMap((s, j) =>
      s.statement !== undefined && !templates.has(s.statement)
        ? [{ path: `branches.${i}.statements.${j}.statement`, message: `unknown statement template "${s.statement}"` }]
        : [],
    ),
  );
  if (missing.length > 0) {
    throw new ValidationError(`invalid transaction: ${missing.map((i) => i.message).join('; ')}`, missing);
  }
  let rawSql = false;
  const request: SubmitRequest = {
    branches: data.branches.map((b) => ({
      resource: b.resource,
      statements: b.statements.map((s) => {
        if (s.sql !== undefined) rawSql = true;
        const sql = s.sql ?? templates.get(s.statement!)!;
        return { sql, params: s.params as unknown[], ...(s.expect ? { expect: s.expect } : {}) };
      }),
    })),
    timeoutMs: data.timeoutMs ?? defaultTimeoutMs,
    wait: data.wait,
  };
  return { request, rawSql };
}
