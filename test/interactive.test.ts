import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { eventually } from './harness/waits.ts';
import { createWorld, prepareOwnBranch, type Bank, type World } from './harness/world.ts';

/*
 * Interactive transactions over REST: the service runs its own statements and prepares each branch
 * under the gid it was given; the coordinator checks the databases before it decides.
 */
describe('interactive transactions', () => {
  let world: World;
  beforeAll(async () => {
    world = await createWorld({ env: { TPC_RECONCILE_INTERVAL_MS: '300' } });
  });
  afterAll(async () => {
    await world.close();
  });
  const prepareBranch = (bank: Bank, gid: string, sql: string) => prepareOwnBranch(world.urls[bank], gid, sql);

  async function begin(timeoutMs = 10_000) {
    const r = await world.submit({ interactive: true, branches: [{ resource: 'bank_a' }, { resource: 'bank_c' }], timeoutMs });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ status: 'active', deadline: expect.any(String) });
    const [a, c] = r.body.branches as { resource: string; gid: string }[];
    return { id: r.body.id as string, a: a!.gid, c: c!.gid };
  }

  it('commits when every branch is really prepared', async () => {
    const t = await begin();
    await prepareBranch('bank_a', t.a, 'UPDATE accounts SET balance = balance - 15 WHERE id = 1');
    await prepareBranch('bank_c', t.c, 'UPDATE accounts SET balance = balance + 15 WHERE id = 1');
    const r = await world.request('POST', `/v1/transactions/${t.id}/commit`);
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('committed');
    expect(await world.balance('bank_a', 1)).toBe(985);
    expect(await world.balance('bank_c', 1)).toBe(1015);
    // The 64-bit xid recorded from pg_prepared_xacts is the real one: recovery can ask its fate.
    const xids = await world.db.log.query<{ resource: Bank; xid: string }>('SELECT resource, xid FROM tpc_branch_rows WHERE transaction_id = $1', [t.id]);
    for (const b of xids.rows) {
      const fate = await world.db[b.resource].query('SELECT pg_xact_status($1::xid8) AS s', [b.xid]);
      expect(fate.rows[0].s).toBe('committed');
    }
  });

  it('leaves no deadline job behind once it is finished', async () => {
    const t = await begin();
    const redis = new Redis(inject('redisUrl'), { maxRetriesPerRequest: 1 });
    try {
      await eventually(
        () => redis.keys(`*:deadline-${t.id}`),
        (k) => k.length > 0,
        'its deadline job',
        5_000,
      );
      await prepareBranch('bank_a', t.a, 'UPDATE accounts SET balance = balance - 1 WHERE id = 9');
      await prepareBranch('bank_c', t.c, 'UPDATE accounts SET balance = balance + 1 WHERE id = 9');
      expect((await world.request('POST', `/v1/transactions/${t.id}/commit`)).status).toBe(200);
      await eventually(
        () => redis.keys(`*:deadline-${t.id}`),
        (k) => k.length === 0,
        'the deadline job removed',
        5_000,
      );
    } finally {
      redis.disconnect();
    }
  });

  it('refuses to commit a branch that is not really prepared, and aborts the others', async () => {
    const t = await begin();
    await prepareBranch('bank_a', t.a, 'UPDATE accounts SET balance = balance - 15 WHERE id = 2');
    const r = await world.request('POST', `/v1/transactions/${t.id}/commit`);
    expect(r.status).toBe(409);
    expect(r.body).toMatchObject({ status: 'aborted', refusal: { code: 'not_prepared' }, error: { code: 'not_prepared', resource: 'bank_c' } });
    expect(await world.balance('bank_a', 2)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('aborts on request', async () => {
    const t = await begin();
    await prepareBranch('bank_a', t.a, 'UPDATE accounts SET balance = balance - 15 WHERE id = 3');
    const r = await world.request('POST', `/v1/transactions/${t.id}/abort`);
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('aborted');
    expect(await world.balance('bank_a', 3)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('rolls back what a service left prepared when it died, by the deadline; a late commit gets 409 and the outcome', async () => {
    const t = await begin(800);
    await prepareBranch('bank_a', t.a, 'UPDATE accounts SET balance = balance - 15 WHERE id = 4');
    // The service dies here. The deadline job (or reconciliation) aborts and rolls the branch back.
    await eventually(
      () => world.request('GET', `/v1/transactions/${t.id}`),
      (r) => r.body.status === 'aborted',
      'the abort at the deadline',
    );
    expect(await world.preparedGids()).toEqual([]);
    expect(await world.balance('bank_a', 4)).toBe(1000);
    const late = await world.request('POST', `/v1/transactions/${t.id}/commit`);
    expect(late.status).toBe(409);
    expect(late.body).toMatchObject({ status: 'aborted', error: { code: 'deadline_exceeded' } });
  });

  it('validates the begin request', async () => {
    expect((await world.submit({ interactive: true, branches: [] })).status).toBe(422);
    expect((await world.submit({ interactive: true, branches: [{ resource: 'nope' }] })).status).toBe(422);
    expect((await world.submit({ interactive: true, branches: [{ resource: 'bank_a' }, { resource: 'bank_a' }] })).status).toBe(422);
    expect((await world.submit({ interactive: false, branches: [{ resource: 'bank_a' }] })).status).toBe(422);
  });
});
