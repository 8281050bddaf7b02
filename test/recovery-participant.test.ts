import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { move, pause, type World } from './harness/world.ts';
import { preparedOn, withDecisionHeld } from './harness/decision-hold.ts';
import { createFlakyWorld, eventually, query, restartAfterCrash } from './harness/waits.ts';

/*
 * A participant fails between prepare and completion: its Postgres stopped in immediate mode (no
 * checkpoint, prepared branches recovered from WAL at restart), and a branch rolled back by hand
 * behind the coordinator's back after the commit decision (a heuristic hazard).
 */

describe('a participant that fails after prepare', () => {
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  beforeAll(async () => {
    ({ flaky, world } = await createFlakyWorld({
      TPC_IN_DOUBT_AFTER_ATTEMPTS: '2',
      TPC_RETRY_BASE_MS: '100',
      TPC_RETRY_MAX_MS: '500',
      TPC_RECONCILE_INTERVAL_MS: '300',
      // The begin record written at once: withDecisionHeld holds its row to stop the decision.
      TPC_BEGIN_DEFER_MS: '0',
    }));
  });
  afterAll(async () => {
    try {
      await world?.close();
      if (flaky) expect(await preparedOn(flaky.url, 'tpc:')).toEqual([]);
    } finally {
      await flaky?.cluster.destroy();
    }
  });

  it('stopped in immediate mode before completion: 202 committing, in doubt while down, committed once back', async () => {
    const { id, answer } = await withDecisionHeld(
      world,
      move('bank_c', 'flaky', 25, 3, { before: [pause(0.5)] }),
      async (tx) =>
        (await preparedOn(flaky.url, `tpc:${world.namespace}:${tx}:`)).length === 1 &&
        (await preparedOn(world.urls.bank_c, `tpc:${world.namespace}:${tx}:`)).length === 1,
      () => flaky.cluster.stopImmediately(),
    );
    expect(answer.status).toBe(202);
    expect(answer.body).toMatchObject({ id, status: 'committing', error: null });
    expect(answer.headers.get('location')).toBe(`/v1/transactions/${id}`);
    expect(await world.balance('bank_c', 3)).toBe(975); // committed where it could be

    // Retried with backoff while down; after two failed attempts, or once unfinished for as long
    // as two attempts take at the retry schedule (whichever a reconciliation pass sees first), the
    // operators see it, with the last attempt's error.
    const listed = await eventually(
      () => world.request('GET', '/v1/transactions?inDoubt=true'),
      (r) => r.status === 200 && r.body.items.some((t: { id: string; lastError: unknown }) => t.id === id && t.lastError),
      'the transaction listed in doubt',
    );
    const item = listed.body.items.find((t: { id: string }) => t.id === id);
    expect(item).toMatchObject({ status: 'committing', inDoubt: true, resources: ['bank_c', 'flaky'] });
    expect(item.attempts).toBeGreaterThanOrEqual(1);
    expect(item.lastError).toMatchObject({ resource: 'flaky' });
    const filtered = await world.request('GET', '/v1/transactions?inDoubt=true&status=committing');
    expect(filtered.body.items.map((t: { id: string }) => t.id)).toContain(id);
    const detail = await world.request('GET', `/v1/transactions/${id}`);
    expect(detail.body).toMatchObject({ status: 'committing', inDoubt: true, heuristic: false });
    expect(detail.body.lastError).toMatchObject({ resource: 'flaky' });
    expect(detail.body.lastError.message).toEqual(expect.any(String));

    await restartAfterCrash(flaky.cluster);
    const done = await eventually(
      () => world.request('GET', `/v1/transactions/${id}`),
      (r) => r.body.status === 'committed',
      'completion once the participant is back',
    );
    expect(done.body).toMatchObject({ inDoubt: false, heuristic: false, error: null });
    expect(done.body.branches.map((b: { status: string }) => b.status)).toEqual(['committed', 'committed']);
    const kinds = done.body.events.map((e: { kind: string }) => e.kind);
    expect(kinds).toContain('in_doubt');
    expect(kinds.filter((k: string) => k === 'decided')).toHaveLength(1);
    expect(kinds.filter((k: string) => k === 'completed')).toHaveLength(1);
    expect(kinds.indexOf('in_doubt')).toBeLessThan(kinds.indexOf('completed'));
    const [row] = await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 3');
    expect(row!.balance).toBe(1025);
    expect(await preparedOn(flaky.url, 'tpc:')).toEqual([]);
    const after = await world.request('GET', '/v1/transactions?inDoubt=true');
    expect(after.body.items.map((t: { id: string }) => t.id)).not.toContain(id);
  });

  it('a branch rolled back by hand after the commit decision: committed, flagged heuristic, never a clean success', async () => {
    const ns = world.namespace;
    const { id, answer } = await withDecisionHeld(
      world,
      move('bank_a', 'bank_c', 40, 5, { before: [pause(0.5)] }),
      async (tx) =>
        (await preparedOn(world.urls.bank_a, `tpc:${ns}:${tx}:`)).length === 1 && (await preparedOn(world.urls.bank_c, `tpc:${ns}:${tx}:`)).length === 1,
      async (tx) => {
        const [gid] = await preparedOn(world.urls.bank_c, `tpc:${ns}:${tx}:`);
        await query(world.urls.bank_c, `ROLLBACK PREPARED '${gid}'`);
      },
    );
    // Whatever the status code, the answer must carry the hazard: never 201 with error null.
    expect(answer.status === 201 && answer.body.error === null).toBe(false);
    expect(answer.body.error).toMatchObject({ code: 'heuristic_hazard', resource: 'bank_c' });
    expect([201, 202]).toContain(answer.status);

    const detail = await eventually(
      () => world.request('GET', `/v1/transactions/${id}`),
      (r) => r.body.status === 'committed',
      'the transaction recorded as committed',
    );
    expect(detail.body).toMatchObject({ status: 'committed', heuristic: true, error: { code: 'heuristic_hazard', resource: 'bank_c' } });
    // The databases disagree, exactly as flagged: bank_a's debit committed, bank_c's credit rolled back.
    expect(await world.balance('bank_a', 5)).toBe(960);
    expect(await world.balance('bank_c', 5)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);

    const metrics = await world.request('GET', '/metrics');
    expect(metrics.status).toBe(200);
    const line = String(metrics.body)
      .split('\n')
      .find((l) => l.startsWith('tpc_heuristic_hazards_total{') && l.includes('resource="bank_c"'));
    expect(line, 'a tpc_heuristic_hazards_total sample for bank_c').toBeDefined();
    expect(Number(line!.split(' ').at(-1))).toBeGreaterThan(0);
    const hazardsElsewhere = String(metrics.body)
      .split('\n')
      .filter((l) => l.startsWith('tpc_heuristic_hazards_total{') && !l.includes('resource="bank_c"'));
    expect(hazardsElsewhere).toEqual([]);
  });
});
