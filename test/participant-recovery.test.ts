import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preparedOn } from './harness/decision-hold.ts';
import { startLossyProxy, type LossyProxy } from './harness/lossy-proxy.ts';
import { startParticipantProcess, type ParticipantProcess } from './harness/participant-process.ts';
import { eventually, query } from './harness/waits.ts';
import { createWorld, transfer, type Bank, type World } from './harness/world.ts';

const PARTICIPANT_TOKEN = 'participant-token-0123456789';

/*
 * bank_c's service is a `tpc participant` sidecar in its own process, SIGKILLed between the vote
 * and phase 2 and started again on the same port. The coordinator reaches it through a proxy that
 * lets the test kill it at the exact moment: once the sidecar has answered a call, before the
 * coordinator sees the answer. The decision stands while it is down; completion waits for it.
 */
describe('a participant service killed and restarted', () => {
  let world: World;
  let sidecar: ParticipantProcess | undefined;
  let proxy: LossyProxy | undefined;
  beforeAll(async () => {
    world = await createWorld({
      env: {
        // Fast retries and reconciliation so that completion follows the restart within a second;
        // one failed attempt flags the transaction in doubt, so the operator view is seen at once.
        TPC_RETRY_BASE_MS: '100',
        TPC_RETRY_MAX_MS: '400',
        TPC_RECONCILE_INTERVAL_MS: '300',
        TPC_IN_DOUBT_AFTER_ATTEMPTS: '1',
        TPC_COMPLETION_WAIT_MS: '500',
      },
      beforeStart: async (dbs) => {
        sidecar = await startParticipantProcess({
          databaseUrl: dbs.urls.bank_c,
          namespace: dbs.namespace,
          name: 'bank_c',
          token: PARTICIPANT_TOKEN,
          allowStatements: true,
        });
        proxy = await startLossyProxy(sidecar.url);
        return { TPC_RESOURCES: JSON.stringify({ bank_a: dbs.urls.bank_a, bank_b: dbs.urls.bank_b, bank_c: { url: proxy.url, token: PARTICIPANT_TOKEN } }) };
      },
    });
  });
  afterAll(async () => {
    try {
      await world?.close();
    } finally {
      await proxy?.close();
      await sidecar?.kill();
    }
  });

  const ns = () => world.namespace;
  const gidPath = (gid: string) => `/2pc/prepared/${encodeURIComponent(gid)}`;
  const detail = (id: string) => world.request('GET', `/v1/transactions/${id}`);

  /**
   * SIGKILLs the sidecar the first time it answers a matching call (for which `when` holds), before
   * that answer is passed on (so it is dead by the time the coordinator acts on the answer). One
   * shot: later calls (after the restart) go through untouched.
   */
  function killAfterAnswer(match: (method: string, path: string) => boolean, when: () => Promise<boolean> = async () => true): void {
    let armed = true;
    proxy!.onAnswered(match, async () => {
      if (!armed || !(await when())) return;
      armed = false;
      await sidecar!.kill();
    });
  }

  /** What a service does with an interactive branch: its own statement in its own transaction, prepared under the gid. */
  const prepareBranch = (bank: Bank, gid: string, sql: string) => query(world.urls[bank], `BEGIN; ${sql}; PREPARE TRANSACTION '${gid}'`);

  it('killed after it answered PREPARE: 202 committing, the branch stays prepared, committed once it is back', async () => {
    try {
      killAfterAnswer((m, p) => m === 'POST' && p.startsWith('/2pc/branches/'));
      const r = await world.submit(transfer('bank_a', 'bank_c', 30, 1, 1));
      expect(sidecar!.running, 'the sidecar killed once it had answered').toBe(false);
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      expect(r.body).toMatchObject({ status: 'committing', error: null });
      const id = r.body.id as string;
      const gidC = `tpc:${ns()}:${id}:1`;

      // The decision stands while the sidecar is down: COMMIT PREPARED is retried and fails, the branch waits.
      await eventually(
        () => detail(id),
        (d) => d.body.attempts >= 2,
        'failed completion attempts while the sidecar is down',
      );
      expect(await preparedOn(world.urls.bank_c, `tpc:${ns()}:${id}:`)).toEqual([gidC]);
      expect(await world.balance('bank_c', 1)).toBe(1000);
      const down = await detail(id);
      expect(down.body).toMatchObject({ status: 'committing', inDoubt: true, lastError: { resource: 'bank_c' } });

      await sidecar!.start();
      const done = await eventually(
        () => detail(id),
        (d) => d.body.status === 'committed',
        'completion once the sidecar is back',
      );
      expect(done.body).toMatchObject({ inDoubt: false, heuristic: false, error: null });
      expect(done.body.branches.map((b: { status: string }) => b.status)).toEqual(['committed', 'committed']);
      // Committed by COMMIT PREPARED after the restart, not found already gone (which would be a hazard).
      const commits = proxy!.calls.filter((c) => c.method === 'POST' && c.path === `${gidPath(gidC)}/commit`);
      expect(commits.at(-1)!.status).toBe(200);
      expect(commits.filter((c) => c.status === null).length).toBeGreaterThanOrEqual(1);
      expect(await world.balance('bank_a', 1)).toBe(970);
      expect(await world.balance('bank_c', 1)).toBe(1030);
      expect(await world.preparedGids()).toEqual([]);
    } finally {
      await sidecar!.start();
    }
  });

  it('interactive, down when the commit is decided: shown in doubt with its branch, committed once it is back', async () => {
    try {
      const begun = await world.submit({ interactive: true, branches: [{ resource: 'bank_a' }, { resource: 'bank_c' }], timeoutMs: 15_000 });
      expect(begun.status).toBe(201);
      const id = begun.body.id as string;
      const [a, c] = begun.body.branches as { resource: string; gid: string }[];
      await prepareBranch('bank_a', a!.gid, 'UPDATE accounts SET balance = balance - 15 WHERE id = 2');
      await prepareBranch('bank_c', c!.gid, 'UPDATE accounts SET balance = balance + 15 WHERE id = 2');

      // The coordinator checks through the sidecar that bank_c's branch is prepared; the sidecar dies
      // right after. The commit route's own read of the transaction asks the same question first (its
      // live branch view); the commit's check is the one made once the commit has taken the
      // transaction's lease, which then runs past the deadline (the begin record's lease ends at it).
      const commitHoldsLease = async () =>
        (await world.db.log.query<{ taken: boolean }>('SELECT lease_until > deadline AS taken FROM tpc_transactions WHERE id = $1', [id])).rows[0]?.taken ===
        true;
      killAfterAnswer((m, p) => m === 'GET' && p === gidPath(c!.gid), commitHoldsLease);
      const r = await world.request('POST', `/v1/transactions/${id}/commit`);
      expect(sidecar!.running, 'the sidecar killed once it had answered').toBe(false);
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      expect(r.body).toMatchObject({ id, status: 'committing', error: null });
      expect(proxy!.calls.filter((x) => x.method === 'GET' && x.path === gidPath(c!.gid)).map((x) => x.status)).toContain(200);

      // The operator views while it is down: the transaction in doubt (by attempts, or by the clock
      // before its next attempt), bank_c's branch unreachable.
      const listed = await eventually(
        () => world.request('GET', '/v1/transactions?inDoubt=true'),
        (l) => l.status === 200 && l.body.items.some((t: { id: string; lastError: unknown }) => t.id === id && t.lastError),
        'the transaction listed in doubt',
      );
      expect(listed.body.items.find((t: { id: string }) => t.id === id)).toMatchObject({
        status: 'committing',
        inDoubt: true,
        resources: ['bank_a', 'bank_c'],
        lastError: { resource: 'bank_c' },
      });
      const seen = await detail(id);
      expect(seen.status).toBe(200);
      expect(seen.body).toMatchObject({ status: 'committing', inDoubt: true, heuristic: false });
      const branch = (resource: string) => seen.body.branchDetails.find((b: { resource: string }) => b.resource === resource);
      expect(branch('bank_c')).toMatchObject({ gid: c!.gid, xid: expect.stringMatching(/^\d+$/), live: { reachable: false, error: expect.any(String) } });
      expect(branch('bank_a')).toMatchObject({ gid: a!.gid, live: { reachable: true, prepared: false } });
      expect(await preparedOn(world.urls.bank_c, `tpc:${ns()}:${id}:`)).toEqual([c!.gid]);
      expect(await world.balance('bank_a', 2)).toBe(985); // committed where it could be

      await sidecar!.start();
      const done = await eventually(
        () => detail(id),
        (d) => d.body.status === 'committed',
        'completion once the sidecar is back',
      );
      expect(done.body).toMatchObject({ inDoubt: false, heuristic: false, error: null });
      const kinds = done.body.events.map((e: { kind: string }) => e.kind);
      expect(kinds.filter((k: string) => k === 'decided')).toHaveLength(1);
      expect(kinds.indexOf('in_doubt')).toBeLessThan(kinds.indexOf('completed'));
      expect(await world.balance('bank_c', 2)).toBe(1015);
      expect(await world.preparedGids()).toEqual([]);
      const after = await world.request('GET', '/v1/transactions?inDoubt=true');
      expect(after.body.items.map((t: { id: string }) => t.id)).not.toContain(id);
    } finally {
      await sidecar!.start();
    }
  });

  it('down: the resource and orphan views report bank_c unreachable, and reachable again once it is back', async () => {
    try {
      await sidecar!.kill();
      const resources = await world.request('GET', '/v1/resources');
      expect(resources.status).toBe(200);
      const byName = (name: string) => resources.body.items.find((x: { resource: string }) => x.resource === name);
      expect(byName('bank_c')).toMatchObject({ kind: 'http', reachable: false, usable: false, prepared: null, message: expect.any(String) });
      expect(byName('bank_a')).toMatchObject({ kind: 'postgres', reachable: true, usable: true });
      const orphans = await world.request('GET', '/v1/orphans');
      expect(orphans.status).toBe(200);
      expect(orphans.body).toEqual({ items: [], unreachable: ['bank_c'] });
    } finally {
      await sidecar!.start();
    }
    const back = await world.request('GET', '/v1/resources');
    expect(back.body.items.find((x: { resource: string }) => x.resource === 'bank_c')).toMatchObject({
      kind: 'http',
      reachable: true,
      usable: true,
      prepared: 0,
    });
    expect((await world.request('GET', '/v1/orphans')).body).toEqual({ items: [], unreachable: [] });
    expect(await world.preparedGids()).toEqual([]);
  });
});
