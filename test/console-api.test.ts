import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOKENS, createWorld, transfer, type World } from './harness/world.ts';

/*
 * What the console needs of the API beyond the list: a lookup by the short id it shows (a unique
 * prefix answers one transaction, an ambiguous one its candidates, anything but hex and dashes is
 * refused before SQL), and counts per status, both scoped to the token's resources as the list is.
 */
describe('lookup by id prefix and counts per status', () => {
  let world: World;
  beforeAll(async () => {
    world = await createWorld();
  });
  afterAll(async () => {
    await world?.close();
  });

  it('finds a transaction by a unique prefix, with or without dashes, in any case', async () => {
    const ok = await world.submit(transfer('bank_a', 'bank_b', 1));
    const id: string = ok.body.id;
    for (const prefix of [id.slice(0, 4), id.slice(0, 8), id.slice(0, 13), id.slice(0, 13).replace('-', ''), id.toUpperCase(), id]) {
      const r = await world.request('GET', `/v1/transactions/lookup?id=${encodeURIComponent(prefix)}`);
      // Four hex digits may, rarely, match another transaction of this file: then it lists both.
      expect(r.status, prefix).toBe(200);
      expect(
        r.body.items.map((t: { id: string }) => t.id),
        prefix,
      ).toContain(id);
      if (prefix.length >= 8)
        expect(r.body).toMatchObject({ unique: true, more: false, items: [{ id, status: 'committed', resources: ['bank_a', 'bank_b'] }] });
    }
  });

  it('lists every candidate of an ambiguous prefix, newest first, up to the limit', async () => {
    const ids = ['c0ffee00-0000-4000-8000-000000000001', 'c0ffee00-0000-4000-8000-000000000002', 'c0ffee00-1000-4000-8000-000000000003'];
    for (const [i, id] of ids.entries()) {
      await world.db.log.query(
        `INSERT INTO tpc_transactions (id, namespace, status, deadline, created_at, decided_at, completed_at, branches)
         VALUES ($1, $2, 'aborted', now(), now() - make_interval(secs => $3), now(), now(), '[]')`,
        [id, world.namespace, 10 - i],
      );
    }
    // Another namespace's transaction with the same prefix is not this coordinator's.
    await world.db.log.query(
      `INSERT INTO tpc_transactions (id, namespace, status, deadline, branches) VALUES ('c0ffee00-0000-4000-8000-000000000009', 'elsewhere', 'aborted', now(), '[]')`,
    );
    const all = await world.request('GET', '/v1/transactions/lookup?id=c0ffee00');
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({ unique: false, more: false });
    expect(all.body.items.map((t: { id: string }) => t.id)).toEqual([...ids].reverse());
    const two = await world.request('GET', '/v1/transactions/lookup?id=c0ffee00-0&limit=1');
    expect(two.body).toMatchObject({ unique: false, more: true, items: [{ id: ids[1] }] });
    const one = await world.request('GET', '/v1/transactions/lookup?id=c0ffee00-1');
    expect(one.body).toMatchObject({ unique: true, items: [{ id: ids[2] }] });
    const none = await world.request('GET', '/v1/transactions/lookup?id=c0ffee01');
    expect(none.status).toBe(404);
  });

  it('refuses anything but the start of an id: no wildcard, no injection reaches SQL', async () => {
    for (const bad of [
      'abc',
      'ab%',
      '____',
      'abcd%',
      'abcd_',
      "abcd'--",
      'abcd 1234',
      'abcd-1234',
      'g000',
      '-abcd',
      `${'a'.repeat(8)}-${'b'.repeat(4)}-`.padEnd(40, 'c'),
      '',
    ]) {
      const r = await world.request('GET', `/v1/transactions/lookup?id=${encodeURIComponent(bad)}`);
      expect(r.status, bad).toBe(422);
      expect(r.body.type, bad).toBe('urn:tpc:problem:validation');
    }
    for (const path of [
      '/v1/transactions/lookup',
      '/v1/transactions/lookup?id=abcd&id=abce',
      '/v1/transactions/lookup?id=abcd&x=1',
      '/v1/transactions/lookup?id=abcd&limit=0',
    ]) {
      expect((await world.request('GET', path)).status, path).toBe(422);
    }
    expect((await world.request('GET', '/v1/transactions/lookup?id=abcd', undefined, { token: null })).status).toBe(401);
  });

  it('counts per status, in doubt and heuristic, within a window and a resource', async () => {
    const before = await world.request('GET', '/v1/transactions/counts');
    expect(before.status).toBe(200);
    expect(Object.keys(before.body.byStatus)).toEqual(['active', 'preparing', 'committing', 'aborting', 'committed', 'aborted']);
    const since = new Date().toISOString();
    expect((await world.submit(transfer('bank_b', 'bank_c', 1))).status).toBe(201);
    expect((await world.submit(transfer('bank_b', 'bank_c', 1_000_000))).status).toBe(409);
    const after = await world.request('GET', '/v1/transactions/counts');
    expect(after.body.byStatus.committed).toBe(before.body.byStatus.committed + 1);
    expect(after.body.byStatus.aborted).toBe(before.body.byStatus.aborted + 1);
    expect(after.body.total).toBe(before.body.total + 2);
    const windowed = await world.request('GET', `/v1/transactions/counts?since=${encodeURIComponent(since)}&resource=bank_c`);
    expect(windowed.body).toMatchObject({ total: 2, inDoubt: 0, heuristic: 0, byStatus: { committed: 1, aborted: 1, active: 0 } });
    const future = await world.request('GET', `/v1/transactions/counts?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`);
    expect(future.body.total).toBe(0);
    for (const path of ['/v1/transactions/counts?since=yesterday', '/v1/transactions/counts?status=committed', '/v1/transactions/counts?resource=']) {
      expect((await world.request('GET', path)).status, path).toBe(422);
    }
  });

  it('shows a token limited to some resources only the transactions wholly within them', async () => {
    const both = await world.submit(transfer('bank_a', 'bank_b', 1));
    const mine = await world.submit({ branches: [{ resource: 'bank_a', statements: [{ sql: 'SELECT 1' }] }] }, { token: TOKENS.limited });
    expect(mine.status).toBe(201);
    const limited = { token: TOKENS.limited };
    expect((await world.request('GET', `/v1/transactions/lookup?id=${both.body.id}`, undefined, limited)).status).toBe(404);
    expect((await world.request('GET', `/v1/transactions/lookup?id=${mine.body.id}`, undefined, limited)).body.unique).toBe(true);
    // A hidden transaction sharing a prefix with a visible one makes it neither ambiguous nor "more".
    const hidden = ['5ec7e700-0000-4000-8000-000000000001', '5ec7e700-0000-4000-8000-000000000002'];
    for (const [i, id] of hidden.entries()) {
      const branches =
        i === 0 ? [{ index: 0, resource: 'bank_b', gid: `g${i}`, status: 'aborted' }] : [{ index: 0, resource: 'bank_a', gid: `g${i}`, status: 'aborted' }];
      await world.db.log.query(`INSERT INTO tpc_transactions (id, namespace, status, deadline, branches) VALUES ($1, $2, 'aborted', now(), $3)`, [
        id,
        world.namespace,
        JSON.stringify(branches),
      ]);
    }
    expect((await world.request('GET', '/v1/transactions/lookup?id=5ec7e700&limit=1', undefined, limited)).body).toMatchObject({
      unique: true,
      more: false,
      items: [{ id: hidden[1] }],
    });
    expect((await world.request('GET', '/v1/transactions/lookup?id=5ec7e700&limit=1')).body).toMatchObject({ unique: false, more: true });
    const counted = await world.request('GET', '/v1/transactions/counts?resource=bank_a', undefined, limited);
    const listed = await world.request('GET', '/v1/transactions?resource=bank_a&limit=200', undefined, limited);
    // The synthetic rows of the test above have no branches: within any token's resources.
    expect(counted.body.total).toBe(listed.body.items.length);
    const full = await world.request('GET', '/v1/transactions/counts?resource=bank_a');
    expect(full.body.total).toBeGreaterThan(counted.body.total);
  });
});
