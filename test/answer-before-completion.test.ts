import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, createCoordinator } from 'pg-2pc-coordinator';
import { moveOnBranches } from './harness/sdk-transfer.ts';
import { createWorld, transfer, type World } from './harness/world.ts';

/*
 * The driver answers once phase 2 has ended, without waiting for the completion record (not
 * forced; recovery writes a lost one). What a client can observe stays consistent: a GET from the
 * same instance waits for the record, and a replay of the same Idempotency-Key joins the run, which
 * ends with it. A trigger on the log holds every completion for a while, so that the window the
 * answer no longer waits for is wide enough to look into.
 */
const HOLD_S = 2;

describe('the answer before the completion record', () => {
  let world: World;
  const status = async (id: string) =>
    (await world.db.log.query<{ status: string }>('SELECT status::text FROM tpc_transactions WHERE id = $1', [id])).rows[0]?.status;

  beforeAll(async () => {
    world = await createWorld();
    await world.db.log.query(`
      CREATE FUNCTION hold_completion() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.status IN ('committed', 'aborted') AND OLD.status <> NEW.status THEN PERFORM pg_sleep(${HOLD_S}); END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER hold_completion BEFORE UPDATE ON tpc_transactions FOR EACH ROW EXECUTE FUNCTION hold_completion();`);
  });
  afterAll(async () => {
    await world?.close();
  });

  it('answers committed while the record is written; a read from the same instance waits for it', async () => {
    const r = await world.submit(transfer('bank_a', 'bank_c', 7, 3, 3));
    expect(r.status).toBe(201);
    expect(r.body.status).toBe('committed');
    // The money has moved and nothing is prepared: the answer is the truth, the record follows.
    expect(await world.balance('bank_a', 3)).toBe(993);
    expect(await world.balance('bank_c', 3)).toBe(1007);
    expect(await world.preparedGids()).toEqual([]);
    expect(await status(r.body.id)).toBe('committing');

    // The list waits for the records of the answers already given, as a GET does for its own.
    const listed = await world.request('GET', '/v1/transactions?limit=5');
    expect(listed.body.items.find((t: { id: string }) => t.id === r.body.id)?.status).toBe('committed');
    const got = await world.request('GET', `/v1/transactions/${r.body.id}`);
    expect(got.body.status).toBe('committed');
    expect(got.body.events.map((e: { kind: string }) => e.kind)).toEqual(['begun', 'decided', 'completed']);
    expect(await status(r.body.id)).toBe('committed');
  });

  it('a replay of the same Idempotency-Key joins the run and answers once the record is written', async () => {
    const body = transfer('bank_a', 'bank_c', 5, 4, 4);
    const headers = { 'Idempotency-Key': `early-${world.namespace}` };
    const first = await world.submit(body, { headers });
    expect(first.status).toBe(201);
    expect(await status(first.body.id)).toBe('committing');
    const again = await world.submit(body, { headers });
    expect(again.status).toBe(201);
    expect(again.body).toMatchObject({ id: first.body.id, status: 'committed' });
    expect(await status(first.body.id)).toBe('committed');
    expect(await world.balance('bank_a', 4)).toBe(995);
  });

  it("the embedded SDK's commit answers the same way, and closing waits for the record", async () => {
    const embedded = await createCoordinator(world.config, { logger: pino({ level: 'silent' }) });
    const pools = {
      bank_a: new pg.Pool({ connectionString: world.urls.bank_a, max: 2 }),
      bank_c: new pg.Pool({ connectionString: world.urls.bank_c, max: 2 }),
    };
    try {
      const tpc = createClient({ coordinator: embedded, resources: pools });
      const { outcome } = await tpc.transaction((tx) => moveOnBranches(tx, 5, 6), { timeoutMs: 10_000 });
      expect(outcome.status).toBe('committed');
      expect(await world.balance('bank_a', 5)).toBe(994);
      expect(await world.balance('bank_c', 5)).toBe(1006);
      expect(await world.preparedGids()).toEqual([]);
      expect(await status(outcome.id!)).toBe('committing');
      expect((await embedded.call('GET', `/v1/transactions/${outcome.id}`)).body).toMatchObject({ status: 'committed' });
      expect(await status(outcome.id!)).toBe('committed');

      const second = await tpc.transaction((tx) => moveOnBranches(tx, 6, 6), { timeoutMs: 10_000 });
      expect(await status(second.outcome.id!)).toBe('committing');
      await embedded.close();
      expect(await status(second.outcome.id!)).toBe('committed');
    } finally {
      await embedded.close();
      await Promise.all(Object.values(pools).map((p) => p.end()));
    }
  });
});
