import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { submitSchema } from '../coordinator/api/submit-schema.ts';
import { MAX_PARAM_DEPTH, MAX_PARAMS, MAX_SQL } from '../coordinator/api/submit-limits.ts';
import { usualSubmit } from '../coordinator/api/usual-submit.ts';

/*
 * usualSubmit must never accept a body the submit schema refuses, and must give exactly what the
 * schema gives for one it accepts. Checked on generated bodies: valid ones (which it must accept),
 * and the same bodies with one thing changed anywhere in them (a value replaced by any value, a key
 * added, removed or set to undefined), against zod's own verdict.
 */
const MAX_TIMEOUT = 60_000;
const schema = submitSchema(MAX_TIMEOUT);

const statement = fc.record(
  {
    sql: fc.string({ minLength: 1, maxLength: 40 }),
    params: fc.array(fc.jsonValue({ maxDepth: 3 }), { maxLength: 4 }),
    expect: fc.record({ rowCount: fc.nat({ max: 5 }) }, { requiredKeys: [] }),
  },
  { requiredKeys: ['sql'] },
);
const template = fc.record(
  { statement: fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/), params: fc.array(fc.integer(), { maxLength: 3 }) },
  { requiredKeys: ['statement'] },
);
const validBody = fc.record(
  {
    branches: fc.uniqueArray(
      fc.record({ resource: fc.string({ minLength: 1, maxLength: 63 }), statements: fc.array(fc.oneof(statement, template), { minLength: 1, maxLength: 3 }) }),
      { minLength: 1, maxLength: 4, selector: (b) => b.resource },
    ),
    timeoutMs: fc.integer({ min: 1, max: MAX_TIMEOUT }),
    wait: fc.constantFrom('completed', 'decided'),
  },
  { requiredKeys: ['branches'] },
);

type Path = (string | number)[];

/** Every path to a value inside `v` (the root included). */
function pathsOf(v: unknown, at: Path = []): Path[] {
  const out: Path[] = [at];
  if (Array.isArray(v)) for (const [i, x] of v.entries()) out.push(...pathsOf(x, [...at, i]));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...pathsOf(x, [...at, k]));
  return out;
}

type Change = { kind: 'set'; value: unknown } | { kind: 'undefined' } | { kind: 'delete' } | { kind: 'add'; key: string; value: unknown };

/** `body` (a fresh JSON copy) with `change` made at `path`. */
function changed(body: unknown, path: Path, change: Change): unknown {
  const copy = JSON.parse(JSON.stringify(body)) as unknown;
  if (path.length === 0) return change.kind === 'set' ? change.value : change.kind === 'undefined' ? undefined : copy;
  let parent = copy as Record<string | number, unknown>;
  for (const p of path.slice(0, -1)) parent = parent[p] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (change.kind === 'set') parent[last] = change.value;
  else if (change.kind === 'undefined') parent[last] = undefined;
  else if (change.kind === 'delete') {
    if (Array.isArray(parent)) parent.splice(last as number, 1);
    else delete parent[last];
  } else {
    const target = parent[last];
    if (target && typeof target === 'object' && !Array.isArray(target)) (target as Record<string, unknown>)[change.key] = change.value;
  }
  return copy;
}

const change: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), value: fc.anything({ maxDepth: 2 }) }),
  fc.record({ kind: fc.constant('set' as const), value: fc.oneof(fc.integer(), fc.double(), fc.string({ maxLength: 3 }), fc.constant(''), fc.constant(-1)) }),
  fc.constant({ kind: 'undefined' as const }),
  fc.constant({ kind: 'delete' as const }),
  fc.record({
    kind: fc.constant('add' as const),
    key: fc.constantFrom('sql', 'statement', 'params', 'expect', 'rowCount', 'extra', '__proto__'),
    value: fc.jsonValue({ maxDepth: 1 }),
  }),
);

let acceptedChanged = 0;

function agrees(body: unknown): void {
  const fast = usualSubmit(body, MAX_TIMEOUT);
  if (fast === undefined) return;
  acceptedChanged++;
  const zod = schema.safeParse(body);
  expect(zod.success, `usualSubmit accepted what the schema refuses: ${JSON.stringify(body)}`).toBe(true);
  expect(fast).toStrictEqual(zod.data);
}

describe('usualSubmit against the submit schema', () => {
  it('accepts every valid body, and gives what the schema gives', () => {
    fc.assert(
      fc.property(validBody, (body) => {
        const fast = usualSubmit(body, MAX_TIMEOUT);
        expect(fast).toBeDefined();
        expect(fast).toStrictEqual(schema.parse(body));
      }),
      { numRuns: 500 },
    );
  });

  it('never accepts what the schema refuses, with one thing changed anywhere in a valid body', () => {
    fc.assert(
      fc.property(
        validBody.chain((body) => fc.tuple(fc.constant(body), fc.constantFrom(...pathsOf(body)), change)),
        ([body, path, c]) => agrees(changed(body, path, c)),
      ),
      { numRuns: 3000 },
    );
    // Many changes leave a valid body (a param replaced, a key removed that was optional): those
    // were compared value for value, so the comparison above was not vacuous.
    expect(acceptedChanged).toBeGreaterThan(300);
  });

  it.each<[string, unknown]>([
    ['an unknown key', { branches: [{ resource: 'a', statements: [{ sql: 'x' }] }], extra: 1 }],
    ['a key holding undefined', { branches: [{ resource: 'a', statements: [{ sql: 'x', expect: undefined }] }] }],
    ['both sql and statement', { branches: [{ resource: 'a', statements: [{ sql: 'x', statement: 'y' }] }] }],
    ['neither sql nor statement', { branches: [{ resource: 'a', statements: [{ params: [] }] }] }],
    ['empty sql', { branches: [{ resource: 'a', statements: [{ sql: '' }] }] }],
    ['sql over the limit', { branches: [{ resource: 'a', statements: [{ sql: 'x'.repeat(MAX_SQL + 1) }] }] }],
    ['a bad template name', { branches: [{ resource: 'a', statements: [{ statement: 'no spaces' }] }] }],
    ['too many params', { branches: [{ resource: 'a', statements: [{ sql: 'x', params: new Array(MAX_PARAMS + 1).fill(1) }] }] }],
    [
      'a param nested too deep',
      { branches: [{ resource: 'a', statements: [{ sql: 'x', params: [JSON.parse('['.repeat(MAX_PARAM_DEPTH + 1) + ']'.repeat(MAX_PARAM_DEPTH + 1))] }] }] },
    ],
    ['a fractional rowCount', { branches: [{ resource: 'a', statements: [{ sql: 'x', expect: { rowCount: 1.5 } }] }] }],
    ['an unsafe integer rowCount', { branches: [{ resource: 'a', statements: [{ sql: 'x', expect: { rowCount: 2 ** 60 } }] }] }],
    ['a timeout over the maximum', { branches: [{ resource: 'a', statements: [{ sql: 'x' }] }], timeoutMs: MAX_TIMEOUT + 1 }],
    [
      'a resource twice',
      {
        branches: [
          { resource: 'a', statements: [{ sql: 'x' }] },
          { resource: 'a', statements: [{ sql: 'y' }] },
        ],
      },
    ],
    ['a resource name of 64 characters', { branches: [{ resource: 'r'.repeat(64), statements: [{ sql: 'x' }] }] }],
    ['no branches', { branches: [] }],
    ['an unknown wait', { branches: [{ resource: 'a', statements: [{ sql: 'x' }] }], wait: 'never' }],
    [
      'a class instance',
      new (class Body {
        branches = [{ resource: 'a', statements: [{ sql: 'x' }] }];
      })(),
    ],
    ['an own __proto__ key', JSON.parse('{"branches":[{"resource":"a","statements":[{"sql":"x"}]}],"__proto__":{"wait":"decided"}}')],
  ])('leaves %s to the schema', (_what, body) => {
    expect(usualSubmit(body, MAX_TIMEOUT)).toBeUndefined();
  });

  it('copies params, so a caller reusing its array later changes nothing already submitted', () => {
    const params = [1, 2];
    const out = usualSubmit({ branches: [{ resource: 'a', statements: [{ sql: 'x', params }] }] }, MAX_TIMEOUT)!;
    params.push(3);
    expect(out.branches[0]!.statements[0]!.params).toEqual([1, 2]);
  });
});
