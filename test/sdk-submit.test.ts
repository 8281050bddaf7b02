import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createClient,
  createCoordinator,
  SubmissionOutcomeUnknownError,
  TransactionAbortedError,
  type EmbeddedCoordinator,
  type Submission,
  type TpcClient,
} from 'pg-2pc-coordinator';
import { TOKENS, createWorld, type World } from './harness/world.ts';

/*
 * `tpc.submit`: a transaction given whole, with its statements, over REST and through the
 * embedded coordinator, which must answer alike: the same checks (schema, statement guard, the
 * token's resources), the same outcomes, the same idempotency. Every assertion on what was applied
 * reads the databases themselves.
 */
describe('the SDK submitting a transaction with its statements', () => {
  let world: World;
  let embedded: EmbeddedCoordinator;
  let clients: Record<'REST' | 'embedded', TpcClient>;
  beforeAll(async () => {
    world = await createWorld();
    embedded = await createCoordinator(world.config, { logger: pino({ level: 'silent' }) });
    clients = {
      REST: createClient({ url: world.service.url, token: TOKENS.full, resources: {} }),
      embedded: createClient({ coordinator: embedded, resources: {} }),
    };
  });
  afterAll(async () => {
    await embedded?.close();
    await world?.close();
  });

  const move = (from: number, amount: number, expected = 1): Submission => ({
    branches: [
      {
        resource: 'bank_a',
        statements: [
          { sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 RETURNING balance', params: [amount, from], expect: { rowCount: expected } },
        ],
      },
      { resource: 'bank_c', statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [amount, from] }] },
    ],
    timeoutMs: 5000,
  });

  for (const [via, account] of [
    ['REST', 6],
    ['embedded', 7],
  ] as const) {
    describe(via, () => {
      it('commits on every database and answers each statement', async () => {
        const outcome = await clients[via].submit(move(account, 40));
        expect(outcome.status).toBe('committed');
        expect(outcome.error).toBeNull();
        const branches = outcome.branches as { resource: string; results: { rowCount: number; rows: { balance: number }[] }[] }[];
        expect(branches[0]!.results[0]).toMatchObject({ rowCount: 1, rows: [{ balance: 960 }] });
        expect(await world.balance('bank_a', account)).toBe(960);
        expect(await world.balance('bank_c', account)).toBe(1040);
        // The embedded coordinator writes the completion record just behind its answer; a read through
        // it waits for that record, one through another process may come before it (README, SDK).
        const path = `/v1/transactions/${outcome.id}`;
        const seen = via === 'embedded' ? (await embedded.call('GET', path)).body : (await world.request('GET', path)).body;
        expect(seen?.status).toBe('committed');
      });

      it('throws submission_aborted with the failing statement when an expectation fails, and applies nothing', async () => {
        const err = await clients[via].submit(move(9999, 5)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TransactionAbortedError);
        const aborted = err as TransactionAbortedError;
        expect(aborted.code).toBe('submission_aborted');
        expect(aborted.outcome?.status).toBe('aborted');
        expect(aborted.outcome?.error).toMatchObject({ resource: 'bank_a', statement: 0, code: 'expectation_failed' });
        expect(aborted.message).toContain('expected 1');
        expect(await world.preparedGids()).toEqual([]);
      });

      it('refuses a statement the guard refuses, or an unknown resource, before anything runs', async () => {
        const before = (await world.db.log.query('SELECT count(*)::int AS n FROM tpc_transactions')).rows[0].n;
        const sneaky = move(account, 1);
        sneaky.branches[1]!.statements.push({ sql: 'COMMIT' });
        const refused = (await clients[via].submit(sneaky).catch((e: unknown) => e)) as TransactionAbortedError;
        expect(refused).toBeInstanceOf(TransactionAbortedError);
        expect(refused.code).toBe('begin_failed');
        expect(refused.cause).toMatchObject({ type: 'urn:tpc:problem:statement_not_allowed', resource: 'bank_c', statement: 1 });
        const unknown = (await clients[via]
          .submit({ branches: [{ resource: 'bank_z', statements: [{ sql: 'SELECT 1' }] }] })
          .catch((e: unknown) => e)) as TransactionAbortedError;
        expect(unknown.code).toBe('begin_failed');
        expect(unknown.cause).toMatchObject({ type: 'urn:tpc:problem:validation', status: 422 });
        const badKey = (await clients[via].submit(move(account, 1), { idempotencyKey: 'with space' }).catch((e: unknown) => e)) as TransactionAbortedError;
        expect(badKey.code).toBe('begin_failed');
        expect(badKey.cause).toMatchObject({ type: 'urn:tpc:problem:bad-idempotency-key', status: 400 });
        expect((await world.db.log.query('SELECT count(*)::int AS n FROM tpc_transactions')).rows[0].n).toBe(before);
        expect(await world.balance('bank_a', account)).toBe(960);
      });

      it('answers a repeated idempotency key with the first outcome, applied once', async () => {
        const key = `sdk-submit-${via}-${account}`;
        const first = await clients[via].submit(move(account, 10), { idempotencyKey: key });
        const again = await clients[via].submit(move(account, 10), { idempotencyKey: key });
        expect(again.id).toBe(first.id);
        expect(again.status).toBe('committed');
        expect(await world.balance('bank_a', account)).toBe(950);
        const reused = (await clients[via].submit(move(account, 11), { idempotencyKey: key }).catch((e: unknown) => e)) as TransactionAbortedError;
        expect(reused.code).toBe('begin_failed');
        expect(await world.balance('bank_a', account)).toBe(950);
      });

      it('throws deadline_exceeded when a statement waits on a lock past the deadline, with nothing applied', async () => {
        const holder = await world.db.bank_c.connect();
        try {
          await holder.query('BEGIN');
          await holder.query('SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE', [account]);
          const err = (await clients[via].submit({ ...move(account, 3), timeoutMs: 400 }).catch((e: unknown) => e)) as TransactionAbortedError;
          expect(err).toBeInstanceOf(TransactionAbortedError);
          expect(err.code).toBe('deadline_exceeded');
          expect(err.outcome?.status).toBe('aborted');
        } finally {
          await holder.query('ROLLBACK');
          holder.release();
        }
        expect(await world.balance('bank_a', account)).toBe(950);
        expect(await world.balance('bank_c', account)).toBe(1050);
        expect(await world.preparedGids()).toEqual([]);
      });
    });
  }

  it('over REST, keeps a token to its resources', async () => {
    const limited = createClient({ url: world.service.url, token: TOKENS.limited, resources: {} });
    const err = (await limited.submit(move(8, 1)).catch((e: unknown) => e)) as TransactionAbortedError;
    expect(err.code).toBe('begin_failed');
    expect(err.cause).toMatchObject({ type: 'urn:tpc:problem:forbidden-resource', status: 403 });
    expect(await world.balance('bank_a', 8)).toBe(1000);
  });

  it('says the outcome is unknown, with the key to learn it, when no answer comes', async () => {
    const nowhere = createClient({ url: 'http://127.0.0.1:9', token: TOKENS.full, resources: {} });
    const err = await nowhere.submit(move(8, 1), { idempotencyKey: 'lost-answer' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SubmissionOutcomeUnknownError);
    expect((err as SubmissionOutcomeUnknownError).idempotencyKey).toBe('lost-answer');
    expect((err as Error).message).toContain('same idempotencyKey');
  });
});

/*
 * How `submit` reads answers a real coordinator gives only under overload, an outage or a slow
 * phase 2: a stand-in coordinator answers each, so that every mapping is pinned (the real ones
 * are exercised above and in the overload, log-outage and phase-2 tests of the REST route).
 */
describe("the SDK's submit reading the coordinator's answer", () => {
  const answering = (status: number, body: Record<string, unknown> | null) =>
    createClient({ coordinator: { call: async () => ({ status, body }) }, resources: {} });
  const whole: Submission = { branches: [{ resource: 'bank_a', statements: [{ sql: 'SELECT 1' }] }] };

  it('returns a decided transaction whose phase 2 is still running (202) as its outcome', async () => {
    const outcome = await answering(202, { id: 'x', status: 'committing', branches: [], error: null }).submit(whole);
    expect(outcome.status).toBe('committing');
  });

  it.each([
    ['overloaded', 'urn:tpc:problem:overloaded'],
    ['a resource unusable', 'urn:tpc:problem:resource-unusable'],
  ])('answers a 503 that says nothing ran (%s) with begin_failed', async (_why, type) => {
    const err = (await answering(503, { type, status: 503, detail: 'busy' })
      .submit(whole)
      .catch((e: unknown) => e)) as TransactionAbortedError;
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err.code).toBe('begin_failed');
    expect(err.cause).toMatchObject({ type });
  });

  it.each([
    [503, { type: 'urn:tpc:problem:unavailable', status: 503, detail: 'transaction x is not decided yet' }],
    [500, { type: 'urn:tpc:problem:internal', status: 500 }],
    [0, { detail: 'connection reset' }],
  ])('answers %s, which cannot say nothing ran, with SubmissionOutcomeUnknownError', async (status, body) => {
    const err = await answering(status, body)
      .submit(whole, { idempotencyKey: 'k-1' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SubmissionOutcomeUnknownError);
    expect(err).not.toBeInstanceOf(TransactionAbortedError);
    expect((err as SubmissionOutcomeUnknownError).idempotencyKey).toBe('k-1');
    expect((err as SubmissionOutcomeUnknownError).answer).toEqual(body);
  });

  it('passes the idempotency key to an embedded coordinator, and no options without one', async () => {
    const seen: unknown[] = [];
    const tpc = createClient({
      coordinator: {
        call: async (_m, _p, _b, options) => {
          seen.push(options);
          return { status: 201, body: { id: 'x', status: 'committed', branches: [], error: null } };
        },
      },
      resources: {},
    });
    await tpc.submit(whole, { idempotencyKey: 'k-2' });
    await tpc.submit(whole);
    expect(seen).toEqual([{ idempotencyKey: 'k-2' }, undefined]);
  });
});
