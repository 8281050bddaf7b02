import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RequestRefused, transfer } from '../examples/bank-transfer/transfer.ts';
import { TOKENS, createWorld, type World } from './harness/world.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const run = promisify(execFile);

describe('the bank-transfer example', () => {
  let world: World;
  beforeAll(async () => {
    world = await createWorld();
  });
  afterAll(async () => {
    await world.close();
  });

  const env = () => ({ PATH: process.env.PATH ?? '', TPC_URL: world.service.url, TPC_TOKEN: TOKENS.full });

  it('moves money with curl, and moves nothing when the debit cannot be made', async () => {
    const ok = await run('sh', ['examples/bank-transfer/transfer.sh', 'bank_a', '1', 'bank_b', '7', '100'], { cwd: ROOT, env: env() });
    expect(JSON.parse(ok.stdout)).toMatchObject({ status: 'committed' });
    const refused = await run('sh', ['examples/bank-transfer/transfer.sh', 'bank_a', '1', 'bank_b', '7', '5000'], { cwd: ROOT, env: env() });
    expect(JSON.parse(refused.stdout)).toMatchObject({ status: 'aborted', error: { resource: 'bank_a', statement: 0, code: 'expectation_failed' } });
    expect(await world.balance('bank_a', 1)).toBe(900);
    expect(await world.balance('bank_b', 7)).toBe(1100);
  });

  it('moves money with fetch from TypeScript, once per idempotency key', async () => {
    const first = await transfer(world.service.url, TOKENS.full, { bank: 'bank_a', account: 2 }, { bank: 'bank_c', account: 3 }, 250, {
      idempotencyKey: 'example-1',
    });
    expect(first).toMatchObject({ status: 'committed', error: null });
    const again = await transfer(world.service.url, TOKENS.full, { bank: 'bank_a', account: 2 }, { bank: 'bank_c', account: 3 }, 250, {
      idempotencyKey: 'example-1',
    });
    expect(again.id).toBe(first.id);
    expect(await world.balance('bank_a', 2)).toBe(750);
    expect(await world.balance('bank_c', 3)).toBe(1250);
    const cli = await run(process.execPath, ['--import', 'tsx', 'examples/bank-transfer/transfer.ts', 'bank_b:4', 'bank_c:4', '10'], { cwd: ROOT, env: env() });
    expect(JSON.parse(cli.stdout)).toMatchObject({ status: 'committed' });
    await expect(
      transfer(world.service.url, 'wrong-token-0123456789', { bank: 'bank_a', account: 1 }, { bank: 'bank_b', account: 1 }, 1),
    ).rejects.toBeInstanceOf(RequestRefused);
  });
});
