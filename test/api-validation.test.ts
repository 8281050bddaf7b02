import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { titleMisfit } from './harness/problem-title.ts';
import { BANKS, createWorld, TOKENS, transfer, type HttpAnswer, type World } from './harness/world.ts';

/*
 * The submit contract's refusals: every invalid request is answered 400/422 problem+json and
 * reaches no database (no balance moves, no transaction row in the log). Most bodies below would
 * move money if they were run, so "nothing reached a database" is observable.
 */

// statement_not_allowed has an underscore, as the issue named it.
const PROBLEM_TYPE = /^urn:tpc:problem:[a-z0-9][a-z0-9_-]*$/;

function expectProblem(res: HttpAnswer, status: number): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json\b/);
  expect(res.body).toMatchObject({ type: expect.stringMatching(PROBLEM_TYPE), title: expect.any(String), status, detail: expect.any(String) });
  expect(titleMisfit(res.body)).toBeNull();
}

async function logRows(world: World): Promise<number> {
  const r = await world.db.log.query<{ n: number }>('SELECT count(*)::int AS n FROM tpc_transactions');
  return r.rows[0]!.n;
}

async function balances(world: World): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const bank of BANKS) {
    const r = await world.db[bank].query<{ balance: number }>('SELECT balance FROM accounts ORDER BY id');
    out[bank] = r.rows.map((x) => x.balance);
  }
  return out;
}

const UNTOUCHED = Object.fromEntries(BANKS.map((b) => [b, Array<number>(10).fill(1000)]));

async function expectNothingReachedADatabase(world: World): Promise<void> {
  await world.service.engine.drain();
  expect(await balances(world)).toEqual(UNTOUCHED);
  expect(await logRows(world)).toBe(0);
  expect(await world.preparedGids()).toEqual([]);
}

/** A transfer bank_a → bank_b whose statement, branch or top level is then spoiled by `spoil`. */
function spoiled(spoil: (body: any) => void): unknown {
  const body: any = transfer('bank_a', 'bank_b', 100);
  spoil(body);
  return body;
}

describe('invalid submissions reach no database', () => {
  // One world for all: each case checks that the world is still as it was made, so a submission
  // that reached a database fails its own case (and every later one), never passes unseen.
  let world: World;
  beforeAll(async () => {
    world = await createWorld();
  });
  afterAll(async () => {
    await world?.close();
  });

  it('unknown resource: 422', async () => {
    expectProblem(
      await world.submit(
        spoiled((b) => {
          b.branches[1].resource = 'bank_z';
        }),
      ),
      422,
    );
    await expectNothingReachedADatabase(world);
  });

  it.each([
    ['an empty list', { branches: [], timeoutMs: 1000 }],
    ['no branches field', { timeoutMs: 1000 }],
    ['an empty object', {}],
  ])('no branches (%s): 422', async (_, body) => {
    expectProblem(await world.submit(body), 422);
    await expectNothingReachedADatabase(world);
  });

  it('a resource twice: 422', async () => {
    expectProblem(await world.submit(transfer('bank_a', 'bank_a', 100)), 422);
    await expectNothingReachedADatabase(world);
  });

  it.each([
    [
      'missing',
      (s: any) => {
        delete s.sql;
      },
    ],
    [
      'empty',
      (s: any) => {
        s.sql = '';
      },
    ],
    [
      'a number',
      (s: any) => {
        s.sql = 42;
      },
    ],
  ])('sql %s: 422', async (_, f) => {
    expectProblem(await world.submit(spoiled((b) => f(b.branches[1].statements[0]))), 422);
    await expectNothingReachedADatabase(world);
  });

  it.each([
    ['a number', 100],
    ['a string', '[100, 2]'],
    ['an object', { 0: 100, 1: 2 }],
    ['null', null],
  ])('params not an array (%s): 422', async (_, params) => {
    expectProblem(
      await world.submit(
        spoiled((b) => {
          b.branches[1].statements[0].params = params;
        }),
      ),
      422,
    );
    await expectNothingReachedADatabase(world);
  });

  it.each([-1, 0, 1.5, '1000', 1e12, null, true])('bad timeoutMs (%j): 422', async (timeoutMs) => {
    expectProblem(
      await world.submit(
        spoiled((b) => {
          b.timeoutMs = timeoutMs;
        }),
      ),
      422,
    );
    await expectNothingReachedADatabase(world);
  });

  it('a body over the default 1mb limit: 400', async () => {
    const body = spoiled((b) => {
      b.branches[0].statements[0].sql += ` /* ${'x'.repeat(1_100_000)} */`;
    });
    expectProblem(await world.submit(body), 400);
    await expectNothingReachedADatabase(world);
  });

  it('a body over TPC_BODY_LIMIT: 400, while a body under it is served', async () => {
    const small = await createWorld({ env: { TPC_BODY_LIMIT: '2kb' } });
    try {
      const big = spoiled((b) => {
        b.branches[0].statements[0].sql += ` /* ${'x'.repeat(3000)} */`;
      });
      expectProblem(await small.submit(big), 400);
      await expectNothingReachedADatabase(small);
      expect((await small.submit(transfer('bank_a', 'bank_b', 1))).status).toBe(201);
    } finally {
      await small.close();
    }
  });

  it.each([
    ['an array', (d: number) => `${'['.repeat(d)}1${']'.repeat(d)}`],
    ['an object', (d: number) => `${'{"a":'.repeat(d)}1${'}'.repeat(d)}`],
  ])('a parameter nested 5000 deep (%s): never a 5xx', async (_, nest) => {
    const raw = `{"branches":[{"resource":"bank_a","statements":[{"sql":"UPDATE accounts SET balance = 0 WHERE id = 1 AND $1::text IS NOT NULL","params":[${nest(5000)}]}]}],"timeoutMs":1000}`;
    const res = await world.request('POST', '/v1/transactions', undefined, { raw });
    expect(res.status, JSON.stringify(res.body)).toBeLessThan(500);
    expect(res.headers.get('content-type')).toMatch(/^application\/(problem\+)?json\b/);
    expect(await world.balance('bank_a', 1)).toBe(1000);
  });

  it.each([
    ['truncated', '{"branches": [{"resource": "bank_a"'],
    ['trailing comma', '{"branches": [],}'],
    ['single quotes', "{'branches': []}"],
    ['not JSON at all', 'UPDATE accounts SET balance = 0'],
    ['a bare string', '"hello"'],
  ])('malformed JSON (%s): 400', async (_, raw) => {
    expectProblem(await world.request('POST', '/v1/transactions', undefined, { raw }), 400);
    await expectNothingReachedADatabase(world);
  });

  it.each([
    'COMMIT',
    '  /* c */ rollback',
    'SET search_path = x',
    "PREPARE TRANSACTION 'x'",
    'BEGIN',
    'start transaction',
    'SAVEPOINT s',
    'RESET ALL',
    'SET SESSION statement_timeout = 0',
    "-- a comment\nCOMMIT PREPARED 'x'",
  ])('forbidden statement %j: 422', async (sql) => {
    const body = spoiled((b) => {
      b.branches[0].statements.push({ sql });
    });
    const res = await world.submit(body);
    expectProblem(res, 422);
    expect(res.body).toMatchObject({ type: 'urn:tpc:problem:statement_not_allowed', branch: 0, resource: 'bank_a', statement: 1 });
    await expectNothingReachedADatabase(world);
  });

  // PostgreSQL ends a `--` comment at \r as well as \n; a guard that only knows \n reads the
  // forbidden command as part of the comment.
  it.each([
    ['COMMIT hidden after -- …\\r', '-- c\rCOMMIT\n;'],
    ['SET search_path hidden after -- …\\r', '-- c\rSET search_path TO x\n, pg_catalog'],
  ])('forbidden statement (%s): 422', async (_, sql) => {
    const body = spoiled((b) => {
      b.branches[0].statements.push({ sql });
    });
    const res = await world.submit(body);
    await world.service.engine.drain();
    // status and the debited balance together, so a failure shows whether money moved
    expect({ status: res.status, bankA1: await world.balance('bank_a', 1), bankB2: await world.balance('bank_b', 2) }).toEqual({
      status: 422,
      bankA1: 1000,
      bankB2: 1000,
    });
    expectProblem(res, 422);
    await expectNothingReachedADatabase(world);
  });

  it.each([
    [
      'top level',
      (b: any) => {
        b.extra = 1;
      },
    ],
    [
      'branch',
      (b: any) => {
        b.branches[0].isolation = 'serializable';
      },
    ],
    [
      'statement',
      (b: any) => {
        b.branches[1].statements[0].values = [1];
      },
    ],
    [
      'expect',
      (b: any) => {
        b.branches[0].statements[0].expect.rows = 1;
      },
    ],
  ])('an unknown field (%s): 422', async (_, f) => {
    expectProblem(await world.submit(spoiled(f)), 422);
    await expectNothingReachedADatabase(world);
  });

  it.each(['done', '', 'COMPLETED', null, 1])('wait %j: 422', async (wait) => {
    expectProblem(
      await world.submit(
        spoiled((b) => {
          b.wait = wait;
        }),
      ),
      422,
    );
    await expectNothingReachedADatabase(world);
  });

  it.each([
    ['300 characters', 'k'.repeat(300)],
    ['empty', ''],
    ['with a space', 'a b'],
  ])('a bad Idempotency-Key (%s): 400', async (_, key) => {
    expectProblem(await world.submit(transfer('bank_a', 'bank_b', 100), { headers: { 'Idempotency-Key': key } }), 400);
    await expectNothingReachedADatabase(world);
  });
});

describe('reading transactions', () => {
  let world: World;
  beforeEach(async () => {
    world = await createWorld();
  });
  afterEach(async () => {
    await world.close();
  });

  it('GET of an unknown id: 404 problem+json', async () => {
    expectProblem(await world.request('GET', `/v1/transactions/${randomUUID()}`), 404);
  });

  it.each(['not-a-uuid', '123', encodeURIComponent("' OR 1=1 --"), 'x'.repeat(500)])('GET of a malformed id (%s): 404', async (id) => {
    expectProblem(await world.request('GET', `/v1/transactions/${id}`), 404);
  });

  it('GET of a committed two-branch transfer: the same body plus events begun, decided, completed', async () => {
    const post = await world.submit(transfer('bank_a', 'bank_c', 10));
    expect(post.status).toBe(201);
    const get = await world.request('GET', `/v1/transactions/${post.body.id}`);
    expect(get.status).toBe(200);
    expect(get.body).toMatchObject({ id: post.body.id, status: 'committed', error: null, branches: post.body.branches });
    const events = get.body.events as any[];
    expect(Array.isArray(events)).toBe(true);
    const kinds = events.map((e) => e.kind);
    expect(kinds).toEqual(expect.arrayContaining(['begun', 'decided', 'completed']));
    expect(kinds.indexOf('begun')).toBeLessThan(kinds.indexOf('decided'));
    expect(kinds.indexOf('decided')).toBeLessThan(kinds.lastIndexOf('completed'));
    for (const e of events) {
      expect(Number.isNaN(Date.parse(e.time ?? e.at))).toBe(false);
      expect(typeof e.detail).toBe('object');
    }
  });

  it('wait "decided": 201 or 202, committed or committing, and the transfer ends up applied', async () => {
    const post = await world.submit(transfer('bank_a', 'bank_c', 10, 3, 4, { wait: 'decided' }));
    expect([201, 202]).toContain(post.status);
    expect(['committed', 'committing']).toContain(post.body.status);
    let status = post.body.status as string;
    for (let i = 0; status !== 'committed' && i < 200; i++) {
      await sleep(25);
      status = (await world.request('GET', `/v1/transactions/${post.body.id}`)).body.status;
    }
    expect(status).toBe('committed');
    expect(await world.balance('bank_a', 3)).toBe(990);
    expect(await world.balance('bank_c', 4)).toBe(1010);
  });
});

describe('idempotency', () => {
  let world: World;
  beforeEach(async () => {
    world = await createWorld();
  });
  afterEach(async () => {
    await world.close();
  });

  const key = { 'Idempotency-Key': 'order-42' };

  it('the same key and body twice: the first answer again, applied once', async () => {
    const first = await world.submit(transfer('bank_a', 'bank_b', 100), { headers: key });
    const second = await world.submit(transfer('bank_a', 'bank_b', 100), { headers: key });
    expect(first.status).toBe(201);
    expect(second.status).toBe(first.status);
    expect(second.body).toMatchObject({ id: first.body.id, status: first.body.status, error: first.body.error });
    // The replay says it is one; the first answer does not.
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(await world.balance('bank_a', 1)).toBe(900);
    expect(await world.balance('bank_b', 2)).toBe(1100);
    expect(await logRows(world)).toBe(1);
  });

  it('the same key and body at the same time: one transaction, applied once', async () => {
    const [a, b] = await Promise.all([
      world.submit(transfer('bank_a', 'bank_c', 100), { headers: key }),
      world.submit(transfer('bank_a', 'bank_c', 100), { headers: key }),
    ]);
    expect(a.body.id).toBe(b.body.id);
    expect([a.status, b.status]).toEqual([201, 201]);
    expect([a.headers.get('idempotent-replayed'), b.headers.get('idempotent-replayed')].sort()).toEqual(['true', null].sort());
    expect(await world.balance('bank_a', 1)).toBe(900);
    expect(await world.balance('bank_c', 2)).toBe(1100);
    expect(await logRows(world)).toBe(1);
  });

  it('the same key with another body: 422, the first transaction stands alone', async () => {
    expect((await world.submit(transfer('bank_a', 'bank_b', 100), { headers: key })).status).toBe(201);
    const reused = await world.submit(transfer('bank_a', 'bank_b', 200), { headers: key });
    expectProblem(reused, 422);
    // Not a replay: the answer is the refusal of this request, not the first one's answer.
    expect(reused.headers.get('idempotent-replayed')).toBeNull();
    await world.service.engine.drain();
    expect(await world.balance('bank_a', 1)).toBe(900);
    expect(await world.balance('bank_b', 2)).toBe(1100);
    expect(await logRows(world)).toBe(1);
  });

  it('keys are scoped to the token: another token with the same key gets its own transaction', async () => {
    const debit = (amount: number) => ({
      branches: [
        { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = 5', params: [amount], expect: { rowCount: 1 } }] },
      ],
      timeoutMs: 5000,
    });
    const full = await world.submit(debit(10), { headers: key });
    const limited = await world.submit(debit(10), { headers: key, token: TOKENS.limited });
    const limitedOther = await world.submit(debit(1), { headers: { 'Idempotency-Key': 'order-43' }, token: TOKENS.limited });
    const fullOther = await world.submit(debit(1), { headers: { 'Idempotency-Key': 'order-43' } });
    expect([full.status, limited.status, limitedOther.status, fullOther.status]).toEqual([201, 201, 201, 201]);
    expect(new Set([full.body.id, limited.body.id, limitedOther.body.id, fullOther.body.id]).size).toBe(4);
    expect(await world.balance('bank_a', 5)).toBe(1000 - 10 - 10 - 1 - 1);
    // and each token's key still replays its own transaction
    const again = await world.submit(debit(10), { headers: key, token: TOKENS.limited });
    expect(again.body.id).toBe(limited.body.id);
    expect(await world.balance('bank_a', 5)).toBe(978);
  });
});
