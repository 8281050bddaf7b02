import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareBranch } from 'pg-2pc-coordinator/participant-adapter';
import { eventually } from './harness/waits.ts';
import { TOKENS, createWorld, transfer, type Bank, type HttpAnswer, type World } from './harness/world.ts';

interface BankDB {
  accounts: { id: number; balance: number };
}

/*
 * POST /v1/transactions/:id/branches: a branch joins an active interactive transaction, for
 * another service to prepare under the gid it is given; the commit checks it like any other.
 */
describe('joining a branch to an interactive transaction', () => {
  let world: World;
  let pools: Record<Bank, pg.Pool>;
  beforeAll(async () => {
    world = await createWorld({ env: { TPC_RECONCILE_INTERVAL_MS: '60000' } });
    pools = {
      bank_a: new pg.Pool({ connectionString: world.urls.bank_a, max: 4 }),
      bank_b: new pg.Pool({ connectionString: world.urls.bank_b, max: 4 }),
      bank_c: new pg.Pool({ connectionString: world.urls.bank_c, max: 4 }),
    };
  });
  afterAll(async () => {
    await Promise.all(Object.values(pools).map((p) => p.end()));
    await world.close();
  });

  async function begin(resources: Bank[] = ['bank_a'], options: { timeoutMs?: number; token?: string } = {}) {
    const r = await world.submit(
      { interactive: true, branches: resources.map((resource) => ({ resource })), timeoutMs: options.timeoutMs ?? 10_000 },
      { token: options.token },
    );
    expect(r.status).toBe(201);
    return { id: r.body.id as string, gids: (r.body.branches as { gid: string }[]).map((b) => b.gid) };
  }

  const join = (id: string, body: unknown, token?: string) => world.request('POST', `/v1/transactions/${id}/branches`, body, { token });

  /** What the other service does: its own work on its own pool, prepared under the gid. */
  const prepare = (bank: Bank, gid: string, id: number, delta: number) =>
    prepareBranch<BankDB, void>(
      pools[bank],
      gid,
      async (db) => {
        await db
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '+', delta) }))
          .where('id', '=', id)
          .execute();
      },
      { timeoutMs: 5000 },
    );

  function expectProblem(r: HttpAnswer, status: number, type?: string): void {
    expect(r.status, JSON.stringify(r.body)).toBe(status);
    expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json\b/);
    if (type) expect(r.body.type).toBe(`urn:tpc:problem:${type}`);
  }

  it('joins a transaction begun before branch_count existed (a rolling upgrade) after its own branches', async () => {
    const t = await begin(['bank_a', 'bank_b']);
    // The row as a coordinator from before branch_count and the lean log wrote it: branches in
    // tpc_branches, the interactive flag in the 'begun' event, and no count.
    await world.db.log.query(
      `
      WITH t AS (SELECT id, branches, submitted_by FROM tpc_transactions WHERE id = $1),
      b AS (INSERT INTO tpc_branches (transaction_id, index, resource, gid)
        SELECT t.id, (x->>'index')::int, x->>'resource', x->>'gid' FROM t, jsonb_array_elements(t.branches) AS x),
      e AS (INSERT INTO tpc_events (transaction_id, kind, actor, detail) SELECT id, 'begun', submitted_by, '{"interactive": true}' FROM t)
      UPDATE tpc_transactions SET branches = NULL, branch_count = 0, interactive = false WHERE id = $1`,
      [t.id],
    );
    const joined = await join(t.id, { resource: 'bank_c' });
    expect(joined.status, JSON.stringify(joined.body)).toBe(201);
    expect(joined.body).toMatchObject({ index: 2, gid: `tpc:${world.namespace}:${t.id}:2` });
    expect((await world.request('POST', `/v1/transactions/${t.id}/abort`)).status).toBe(200);
  });

  it('answers 201 with the new branch, 200 with the same one on a repeat, and the commit checks it', async () => {
    const t = await begin(['bank_a']);
    const first = await join(t.id, { resource: 'bank_c' });
    expect(first.status).toBe(201);
    expect(first.body).toEqual({ index: 1, resource: 'bank_c', gid: `tpc:${world.namespace}:${t.id}:1`, deadline: expect.any(String) });
    const again = await join(t.id, { resource: 'bank_c' });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    // A resource the transaction began with is "already joined" too.
    expect((await join(t.id, { resource: 'bank_a' })).body).toMatchObject({ index: 0, gid: t.gids[0] });

    await prepare('bank_a', t.gids[0]!, 1, -40);
    await prepare('bank_c', first.body.gid, 1, 40);
    const committed = await world.request('POST', `/v1/transactions/${t.id}/commit`);
    expect(committed.status).toBe(200);
    expect(committed.body.branches.map((b: { resource: string; status: string }) => `${b.resource}:${b.status}`)).toEqual([
      'bank_a:committed',
      'bank_c:committed',
    ]);
    expect(await world.balance('bank_a', 1)).toBe(960);
    expect(await world.balance('bank_c', 1)).toBe(1040);
    expect((await world.request('GET', `/v1/transactions/${t.id}`)).body.events.map((e: { kind: string }) => e.kind)).toContain('branch_joined');
  });

  it('refuses to commit when a joined branch was not prepared, and aborts', async () => {
    const t = await begin(['bank_a']);
    expect((await join(t.id, { resource: 'bank_c' })).status).toBe(201);
    await prepare('bank_a', t.gids[0]!, 2, -40);
    const r = await world.request('POST', `/v1/transactions/${t.id}/commit`);
    expect(r.status).toBe(409);
    expect(r.body).toMatchObject({ status: 'aborted', error: { code: 'not_prepared', resource: 'bank_c' } });
    expect(await world.balance('bank_a', 2)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('gives concurrent joins of one resource one branch, and of different resources different ones', async () => {
    const t = await begin(['bank_a']);
    const same = await Promise.all([1, 2, 3, 4].map(() => join(t.id, { resource: 'bank_c' })));
    expect(same.map((r) => r.status).sort()).toEqual([200, 200, 200, 201]);
    expect(new Set(same.map((r) => r.body.gid)).size).toBe(1);
    const b = await join(t.id, { resource: 'bank_b' });
    expect(b.status).toBe(201);
    expect(b.body.index).toBe(2);
    expect((await world.request('POST', `/v1/transactions/${t.id}/abort`)).status).toBe(200);
  });

  it('answers 404 for an unknown transaction, 409 once it is decided or not interactive, 422 for a bad body', async () => {
    expectProblem(await join(randomUUID(), { resource: 'bank_c' }), 404);
    expectProblem(await join('not-a-uuid', { resource: 'bank_c' }), 404);

    const t = await begin(['bank_a']);
    expectProblem(await join(t.id, { resource: 'nope' }), 422, 'validation');
    expectProblem(await join(t.id, {}), 422, 'validation');
    expectProblem(await join(t.id, { resource: 'bank_c', extra: 1 }), 422, 'validation');
    expectProblem(await join(t.id, { resource: 5 }), 422, 'validation');
    expectProblem(await world.request('POST', `/v1/transactions/${t.id}/branches`, undefined, { raw: '{"resource":' }), 400, 'malformed-json');

    expect((await world.request('POST', `/v1/transactions/${t.id}/abort`)).status).toBe(200);
    expectProblem(await join(t.id, { resource: 'bank_c' }), 409, 'not-active');
    // Not even a branch it already has: the service must not go and prepare it.
    expectProblem(await join(t.id, { resource: 'bank_a' }), 409, 'not-active');

    const c = await begin(['bank_a']);
    await prepare('bank_a', c.gids[0]!, 3, 1);
    expect((await world.request('POST', `/v1/transactions/${c.id}/commit`)).status).toBe(200);
    expectProblem(await join(c.id, { resource: 'bank_c' }), 409, 'not-active');

    const submitted = await world.submit(transfer('bank_a', 'bank_b', 1, 4, 4));
    expect(submitted.status).toBe(201);
    expectProblem(await join(submitted.body.id, { resource: 'bank_c' }), 409, 'not-interactive');
  });

  it('answers 409 past the deadline', async () => {
    const t = await begin(['bank_a'], { timeoutMs: 200 });
    await new Promise((r) => setTimeout(r, 300));
    const r = await join(t.id, { resource: 'bank_c' });
    expect(r.status).toBe(409);
    expect(r.body.type).toBe('urn:tpc:problem:deadline-passed');
    // Too short-lived for a deadline job (only those open past the grace period get one): the
    // sweep of the next reconciliation pass aborts it, run here at once (the interval is 60 s).
    await world.service.maintenance.reconcile();
    await eventually(
      () => world.request('GET', `/v1/transactions/${t.id}`),
      (x) => x.body.status === 'aborted',
      'the abort after the deadline',
    );
  });

  it('answers 403 to a token without the resource, and 404 (as for an unknown id) on a transaction it did not begin', async () => {
    const mine = await begin(['bank_a'], { token: TOKENS.limited });
    expectProblem(await join(mine.id, { resource: 'bank_c' }, TOKENS.limited), 403, 'forbidden-resource');
    expect((await join(mine.id, { resource: 'bank_a' }, TOKENS.limited)).status).toBe(200);
    const theirs = await begin(['bank_c']);
    expectProblem(await join(theirs.id, { resource: 'bank_a' }, TOKENS.limited), 404, 'not-found');
    expectProblem(await join(theirs.id, { resource: 'bank_a' }, TOKENS.reader), 403, 'forbidden');
    expect((await world.request('POST', `/v1/transactions/${mine.id}/abort`, undefined, { token: TOKENS.limited })).status).toBe(200);
    expect((await world.request('POST', `/v1/transactions/${theirs.id}/abort`)).status).toBe(200);
  });

  it('never leaves a prepared branch behind when joins race an abort', async () => {
    // One account per round: a branch left prepared by a round holds its row lock until reconciliation.
    const accounts = [5, 6, 7, 8, 9];
    for (const account of accounts) {
      const t = await begin(['bank_a']);
      await prepare('bank_a', t.gids[0]!, account, -1);
      // The joins and the abort go together; each join that got a gid is prepared by its service,
      // before or after the abort's rollback, and a join after the abort is refused.
      const [joins, aborted] = await Promise.all([
        Promise.all(
          (['bank_b', 'bank_c'] as const).map(async (bank) => {
            const r = await join(t.id, { resource: bank });
            if (r.status === 201) await prepare(bank, r.body.gid, account, 1);
            return r;
          }),
        ),
        world.request('POST', `/v1/transactions/${t.id}/abort`),
      ]);
      expect(aborted.status).toBe(200);
      for (const r of joins) expect([201, 409]).toContain(r.status);
      expectProblem(await join(t.id, { resource: 'bank_b' }), 409, 'not-active');
    }
    // What a service prepared after the abort had rolled back its branches is found by reconciliation.
    await world.service.maintenance.reconcile();
    expect(await world.preparedGids()).toEqual([]);
    for (const bank of ['bank_a', 'bank_b', 'bank_c'] as const) {
      for (const account of accounts) expect(await world.balance(bank, account)).toBe(1000);
    }
  });
});
