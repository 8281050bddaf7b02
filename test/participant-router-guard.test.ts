import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirectParticipant } from '../participant-adapter/direct-participant.ts';
import { startParticipantServer, type RunningParticipantServer } from '../participant-adapter/participant-server.ts';
import { runBranchRequest } from '../participant-adapter/run-branch-request.ts';
import { createWorld, type World } from './harness/world.ts';

const TOKEN = 'participant-token-0123456789';

/*
 * The statement guard at the participant's side (issue 11): a participant router that runs the
 * coordinator's statements refuses what the guard refuses with 422 before opening a branch, and
 * a statement that fails in any way, even one refused after the branch was opened, leaves nothing
 * prepared. Asserted on bank_c itself: pg_prepared_xacts and the balances.
 */
describe('a participant router running statements', () => {
  let world: World;
  let server: RunningParticipantServer;
  let participant: DirectParticipant;
  beforeAll(async () => {
    world = await createWorld();
    server = await startParticipantServer({
      databaseUrl: world.urls.bank_c,
      host: '127.0.0.1',
      port: 0,
      token: TOKEN,
      namespace: world.namespace,
      allowStatements: true,
      name: 'bank_c',
      logger: pino({ level: 'silent' }),
    });
    participant = new DirectParticipant({ name: 'bank_c', connectionString: world.urls.bank_c });
  });
  afterAll(async () => {
    await participant?.close();
    await server?.close();
    await world?.close();
  });

  const gid = () => `tpc:${world.namespace}:${randomUUID()}:0`;
  const prepare = async (g: string, statements: { sql: string; params?: unknown[] }[]) => {
    const res = await fetch(`${server.url}/branches/${encodeURIComponent(g)}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ statements, statementTimeoutMs: 2000 }),
    });
    return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as any };
  };
  const preparedOnBankC = async () =>
    (await world.db.bank_c.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [`tpc:${world.namespace}:`])).rows.map(
      (r) => r.gid,
    );

  it.each([
    ['COMMIT', 'COMMIT', /transaction control/],
    ['a COMMIT hidden after a comment', '-- x\rCOMMIT', /transaction control/],
    ['a DO block', "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''true'''; END $$", /^DO blocks are not allowed/],
    ['COPY … TO PROGRAM', "COPY (SELECT 1) TO PROGRAM 'true'", /COPY/],
    ['dblink_exec', "SELECT dblink_exec('dbname=x', 'UPDATE accounts SET balance = 0')", /function dblink_exec acts outside the transaction/],
    ['a session advisory lock', 'SELECT pg_advisory_lock(1)', /pg_advisory_lock/],
    ['two statements in one string', 'SELECT 1; SELECT 2', /only one statement/],
  ])('answers 422 to %s and prepares nothing', async (_, sql, why) => {
    const g = gid();
    const r = await prepare(g, [{ sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = 1' }, { sql }]);
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    expect(r.type).toContain('application/problem+json');
    expect(r.body).toMatchObject({ type: 'urn:tpc:problem:statement_not_allowed', status: 422, statement: 1, reason: expect.stringMatching(why) });
    expect(r.body.detail).toMatch(/^statement 1: /);
    expect(await preparedOnBankC()).toEqual([]);
    expect(await world.balance('bank_c', 1)).toBe(1000);
  });

  it('still prepares allowed statements (and rolls them back on request)', async () => {
    const g = gid();
    const r = await prepare(g, [{ sql: 'SET LOCAL lock_timeout = 500' }, { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 2' }]);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ gid: g, prepared: true, failure: null });
    expect(await preparedOnBankC()).toEqual([g]);
    expect(await participant.rollbackPrepared(g)).toBe('rolled-back');
    expect(await world.balance('bank_c', 2)).toBe(1000);
  });

  // Before the guard ran in the router, a statement refused inside Branch.run never reached the
  // server, so the PREPARE behind it succeeded: 200 "prepared: true, results: []" and an empty
  // (or partial) prepared transaction left behind. The branch itself now refuses to prepare.
  it('never prepares a branch one of whose statements was refused once it was open', async () => {
    const g = gid();
    const answer = await runBranchRequest(
      participant,
      g,
      {
        statements: [
          { sql: 'UPDATE accounts SET balance = balance - 7 WHERE id = 3', params: [] },
          { sql: 'COMMIT', params: [] },
        ],
        statementTimeoutMs: 2000,
      },
      new AbortController().signal,
    );
    expect(answer).toMatchObject({ gid: g, prepared: false, xid: null, failure: { statement: 1, code: 'statement_not_allowed', retryable: false } });
    expect(await preparedOnBankC()).toEqual([]);
    expect(await world.balance('bank_c', 3)).toBe(1000);
    expect(participant.connectionsInUse).toBe(0);
  });

  it('a branch with a refused statement rolls back on the one-phase path too', async () => {
    const b = await participant.openBranch({ statementTimeoutMs: 2000 });
    const first = b.run('UPDATE accounts SET balance = balance - 7 WHERE id = 4');
    const refused = b.run("SELECT set_config('search_path', 'pwned', false)").catch((e: { code: string }) => e.code);
    expect(await b.commit()).toBe(false);
    b.release();
    expect((await first).rowCount).toBe(1);
    expect(await refused).toBe('statement_not_allowed');
    expect(await world.balance('bank_c', 4)).toBe(1000);
  });
});
