import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClient, createCoordinator, TransactionAbortedError, TransactionOutcomeUnknownError, type TpcClient } from 'pg-2pc-coordinator';
import { freeLoopbackPort } from '../coordinator/embedded/free-port.ts';
import { startCoordinatorProcess, type CoordinatorProcess } from './harness/coordinator-process.ts';
import { startLossyProxy, type LossyProxy } from './harness/lossy-proxy.ts';
import { moveOnBranches } from './harness/sdk-transfer.ts';
import { TOKENS, createDatabases, createWorld, type Databases, type World } from './harness/world.ts';

/*
 * A commit that got no answer: the SDK must not call it aborted (a service would do the work
 * twice), but throw TransactionOutcomeUnknownError with the id, and outcome() must report what the
 * coordinator's log really holds, once it can be asked.
 */

/** Moves `amount` on account `id` from bank_a to bank_c. */
const move = (tpc: TpcClient, id: number, amount: number, timeoutMs = 5000) =>
  tpc.transaction(
    async (tx) => {
      await moveOnBranches(tx, id, amount);
    },
    { timeoutMs },
  );

// The suite's `full` token, and one that may submit but not read.
const SUBMITTER = 'submit-only-token-0123456789abcdef';
const TOKENS_WITH_SUBMITTER = JSON.stringify([
  { name: 'full', token: TOKENS.full, scopes: ['submit', 'read', 'operate'], resources: ['*'] },
  { name: 'submitter', token: SUBMITTER, scopes: ['submit'], resources: ['*'] },
]);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('an unknown outcome when the coordinator dies right after writing the commit decision', () => {
  let dbs: Databases;
  let pools: pg.Pool[];
  const started: CoordinatorProcess[] = [];
  beforeAll(async () => {
    dbs = await createDatabases();
    pools = [new pg.Pool({ connectionString: dbs.urls.bank_a, max: 2 }), new pg.Pool({ connectionString: dbs.urls.bank_c, max: 2 })];
  });
  afterAll(async () => {
    await Promise.all(started.map((p) => p.kill('SIGTERM')));
    await Promise.all(pools.map((p) => p.end()));
    await dbs.end();
  });

  it('throws TransactionOutcomeUnknownError with the id, and outcome() reports committed once a coordinator is back', async () => {
    // One address for both coordinators, as a service reaches the coordinator at one URL.
    const port = String(await freeLoopbackPort());
    const env = { ...dbs.env, PORT: port, LOG_LEVEL: 'info', TPC_RECONCILE_INTERVAL_MS: '300', TPC_RETRY_BASE_MS: '100', TPC_RETRY_MAX_MS: '500' };
    const doomed = await startCoordinatorProcess({ ...env, TPC_FAILPOINTS: 'after-decision-written:crash' });
    started.push(doomed);
    const tpc = createClient({ url: doomed.url, token: TOKENS.full, resources: { bank_a: pools[0]!, bank_c: pools[1]! } });

    const err = await move(tpc, 1, 100).catch((e: unknown) => e);
    expect(await doomed.exited).toBeNull(); // SIGKILLed by its failpoint, with the decision durable
    expect(err).toBeInstanceOf(TransactionOutcomeUnknownError);
    expect(err).not.toBeInstanceOf(TransactionAbortedError); // "not done" would apply the move twice
    const id = (err as TransactionOutcomeUnknownError).transactionId;
    expect(id).toMatch(UUID);
    expect(err).toMatchObject({ name: 'TransactionOutcomeUnknownError', code: 'outcome_unknown', message: expect.stringContaining(id) });
    const logged = await dbs.db.log.query<{ status: string }>('SELECT status FROM tpc_transactions WHERE id = $1', [id]);
    expect(logged.rows[0]?.status).toBe('committing'); // the truth, which the caller could not see

    // Nobody to ask: one look, and it says so rather than guessing.
    expect(await tpc.outcome(id)).toMatchObject({ id, status: 'unreachable', decision: null, final: false, transaction: null });

    // outcome() keeps asking while the coordinator is down, and a new one on the same address answers.
    const waiting = tpc.outcome(id, { waitMs: 75_000 });
    started.push(await startCoordinatorProcess(env));
    // The decision is readable at once, though phase 2 waits for the dead coordinator's lease on the
    // transaction (RECOVERY_LEASE_MS, 30 s from the commit) to run out before the new one finishes it.
    expect(await tpc.outcome(id)).toMatchObject({ id, decision: 'commit' });
    const report = await waiting;
    expect(report).toMatchObject({ id, status: 'committed', decision: 'commit', final: true });
    expect(report.transaction).toMatchObject({ id, status: 'committed' });

    expect(await dbs.balance('bank_a', 1)).toBe(900);
    expect(await dbs.balance('bank_c', 1)).toBe(1100);
    expect(await dbs.preparedGids()).toEqual([]);
  }, 120_000);
});

describe('outcome() against a live coordinator', () => {
  let world: World;
  let pools: pg.Pool[];
  let proxy: LossyProxy | undefined;
  beforeAll(async () => {
    // Reconciliation every 300 ms (not 10 s): the abort of an expired transaction comes soon.
    world = await createWorld({ env: { TPC_API_TOKENS: TOKENS_WITH_SUBMITTER, TPC_RECONCILE_INTERVAL_MS: '300' } });
    pools = [new pg.Pool({ connectionString: world.urls.bank_a, max: 2 }), new pg.Pool({ connectionString: world.urls.bank_c, max: 2 })];
  });
  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await world.close();
  });
  const resources = () => ({ bank_a: pools[0]!, bank_c: pools[1]! });

  it('reports aborted for a commit that never reached the coordinator, once its deadline has aborted it', async () => {
    proxy = await startLossyProxy(world.service.url);
    const p = proxy;
    // The begin gets through; from then on the coordinator is cut off: neither commit nor abort arrives.
    p.onAnswered(
      (method, path) => method === 'POST' && path === '/v1/transactions',
      () => p.setDown(true),
    );
    const tpc = createClient({ url: p.url, token: TOKENS.full, resources: resources() });
    const err = await move(tpc, 2, 50, 1500).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionOutcomeUnknownError);
    const id = (err as TransactionOutcomeUnknownError).transactionId;
    expect(p.calls.filter((c) => c.path.endsWith('/commit') || c.path.endsWith('/abort')).map((c) => c.status)).toEqual([null, null]);

    p.setDown(false);
    const report = await tpc.outcome(id, { waitMs: 15_000 });
    expect(report).toMatchObject({ id, status: 'aborted', decision: 'abort', final: true });
    expect(report.transaction).toMatchObject({ error: { code: 'deadline_exceeded' } });
    // The coordinator's abort rolled back what the SDK had prepared: the work may safely be redone.
    expect(await world.balance('bank_a', 2)).toBe(1000);
    expect(await world.balance('bank_c', 2)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('reports committed for a commit whose answers were lost on the way back', async () => {
    proxy = await startLossyProxy(world.service.url);
    proxy.dropReplies((method, path) => method === 'POST' && /\/(commit|abort)$/.test(path), 2);
    const tpc = createClient({ url: proxy.url, token: TOKENS.full, resources: resources() });
    const err = await move(tpc, 3, 30).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionOutcomeUnknownError);
    const id = (err as TransactionOutcomeUnknownError).transactionId;
    expect(proxy.calls.filter((c) => c.dropped).map((c) => c.path)).toEqual([`/v1/transactions/${id}/commit`, `/v1/transactions/${id}/abort`]);
    expect(await tpc.outcome(id, { waitMs: 10_000 })).toMatchObject({ id, status: 'committed', decision: 'commit', final: true });
    expect(await world.balance('bank_a', 3)).toBe(970);
    expect(await world.balance('bank_c', 3)).toBe(1030);
  });

  it('reads the log of an embedded coordinator in-process, and refuses an id it does not know', async () => {
    const embedded = await createCoordinator(world.config, { logger: pino({ level: 'silent' }) });
    try {
      const tpc = createClient({ coordinator: embedded, resources: resources() });
      const { outcome } = await move(tpc, 4, 5);
      expect(await tpc.outcome(outcome.id!)).toMatchObject({ id: outcome.id, status: 'committed', decision: 'commit', final: true });
      await expect(tpc.outcome(randomUUID())).rejects.toThrow(/not known/);
      await expect(tpc.outcome('not-an-id')).rejects.toThrow(/not a transaction id/);
    } finally {
      await embedded.close();
    }
  });

  it('tells a token without the read scope what outcome() needs', async () => {
    const submitter = createClient({ url: world.service.url, token: SUBMITTER, resources: resources() });
    // The scope is checked before the id is looked up: any id will do.
    await expect(submitter.outcome(randomUUID())).rejects.toThrow(/"read" scope/);
  });
});
