import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createWorld, transfer, type World } from './harness/world.ts';

describe('a transfer across databases', () => {
  let world: World;
  beforeEach(async () => {
    world = await createWorld();
  });
  afterEach(async () => {
    await world.close();
  });

  it('commits on both databases, including two on one cluster', async () => {
    const res = await world.submit(transfer('bank_a', 'bank_b', 100));
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      status: 'committed',
      error: null,
      branches: [
        { resource: 'bank_a', status: 'committed', results: [{ rowCount: 1, rows: [] }] },
        { resource: 'bank_b', status: 'committed', results: [{ rowCount: 1, rows: [] }] },
      ],
    });
    expect(await world.balance('bank_a', 1)).toBe(900);
    expect(await world.balance('bank_b', 2)).toBe(1100);
  });

  it('aborts on both when a statement fails its expectation, naming the branch and statement', async () => {
    const res = await world.submit(transfer('bank_a', 'bank_c', 5000));
    expect(res.status).toBe(409);
    expect(res.body.status).toBe('aborted');
    expect(res.body.error).toMatchObject({ resource: 'bank_a', statement: 0, code: 'expectation_failed' });
    expect(await world.balance('bank_a', 1)).toBe(1000);
    expect(await world.balance('bank_c', 2)).toBe(1000);
  });
});
