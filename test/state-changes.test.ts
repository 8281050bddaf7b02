import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Engine } from '../coordinator/engine/engine.ts';
import { Failpoints } from '../coordinator/engine/failpoints.ts';
import type { EngineDeps } from '../coordinator/engine/ports.ts';
import { complete, decide, IllegalTransitionError } from '../coordinator/engine/state-changes.ts';
import { stampedDeadline } from '../coordinator/engine/transaction-id.ts';
import { ConflictError, StaleStateError } from '../coordinator/errors.ts';
import { resolveTransaction, type ResolveRequest } from '../coordinator/operator/resolve.ts';
import { MemoryLog } from './harness/memory-log.ts';
import { MemoryParticipant } from './harness/memory-participant.ts';

/*
 * The state machine against the in-memory log (test/harness/memory-log.ts): the gateway's
 * decisions and completions, their guards and their records, in milliseconds. The same paths
 * against Postgres are proven by protocol, interactive, branch-join, operator-*, recovery-* and
 * lean-log tests; this file is where a change to the rules shows first.
 */

function world(instanceId = 'i1', shared?: { log: MemoryLog; a: MemoryParticipant; b: MemoryParticipant }) {
  const log = shared?.log ?? new MemoryLog();
  const a = shared?.a ?? new MemoryParticipant('a');
  const b = shared?.b ?? new MemoryParticipant('b');
  const pending: string[] = [];
  const deps: EngineDeps = {
    store: log,
    recovery: log,
    participants: new Map([
      ['a', a],
      ['b', b],
    ]),
    namespace: 'ns',
    instanceId,
    logger: pino({ level: 'silent' }),
    observer: { phase() {}, outcome() {}, branch() {}, hazard() {} },
    followUp: {
      completionPending: async (id) => {
        pending.push(id);
      },
      deadlineSet: async () => {},
      deadlineCleared: async () => {},
      retryNow: async () => {},
    },
    failpoints: new Failpoints(),
  };
  const engine = new Engine(deps, { inDoubtAfterAttempts: 3, completionWaitMs: 50, beginDeferMs: 500 });
  return { log, a, b, deps, engine, pending, other: (id: string) => world(id, { log, a, b }) };
}

type World = ReturnType<typeof world>;

const kinds = async (w: World, id: string) => (await w.log.load(id))!.events.map((e) => e.kind);

/** An interactive transaction over a and b, both prepared by "the service" under their gids. */
async function preparedInteractive(w: World, actor = 'svc') {
  const begun = await w.engine.beginInteractive(['a', 'b'], 10_000, actor);
  for (const br of begun.branches) (br.resource === 'a' ? w.a : w.b).prepareAs(br.gid);
  return begun;
}

/** A commit decision whose phase 2 never ran: its driver died right after writing it. */
async function decidedStuck(w: World) {
  const { id, branches } = await preparedInteractive(w);
  const xids = branches.map((br, index) => ({ index, xid: (br.resource === 'a' ? w.a : w.b).prepared.get(br.gid)!.xid }));
  await decide(w.deps, id, { outcome: 'commit', checked: 2, branches: xids }, { by: 'client', actor: 'svc', owner: 'svc' });
  await w.log.release(id, w.deps.instanceId);
  return id;
}

/**
 * A submission of one update on each of a and b, answered once phase 2 has ended; returned once its
 * completion record, written behind the answer, is in the log too.
 */
async function submitTwo(w: World, actor: string | null) {
  const view = await w.engine.submit(
    {
      branches: [
        { resource: 'a', statements: [{ sql: 'UPDATE x', params: [] }] },
        { resource: 'b', statements: [{ sql: 'UPDATE y', params: [] }] },
      ],
      timeoutMs: 5_000,
      wait: 'completed',
    },
    { actor },
  );
  await w.engine.answersRecorded();
  return view;
}

/**
 * Starts a recovery job of `w`'s process on `id` right after something takes the lease of the
 * undecided transaction from a live holder (an operator's resolution, a client's commit), and
 * waits for it before that caller goes on; returns a getter for the job's result.
 */
function jobAfterTakeOver(w: World, id: string): () => Promise<unknown> | undefined {
  const acquire = w.log.acquire.bind(w.log);
  let job: Promise<unknown> | undefined;
  w.log.acquire = async (...args: Parameters<typeof acquire>) => {
    const tx = await acquire(...args);
    if (args[3]?.takeOverUndecided && !job) {
      job = w.engine.resume(id);
      await job;
    }
    return tx;
  };
  return () => job;
}

const resolve = (w: World, id: string, req: Partial<ResolveRequest>) =>
  resolveTransaction(w.deps, id, { outcome: 'commit', reason: 'ticket 42', force: false, actor: 'op', ...req });

describe('state changes against the in-memory log', () => {
  it('commits a submitted transaction in two phases: one forced decision, and a lean log whose events are all derived', async () => {
    const w = world();
    const view = await submitTwo(w, 'tok');
    expect(view.status).toBe('committed');
    expect(w.log.asked.map((r) => [r.from, r.to, r.forced, r.event.derivable])).toEqual([
      ['active', 'committing', true, true],
      ['committing', 'committed', false, true],
    ]);
    const tx = (await w.log.load(view.id))!;
    expect(tx.events.map((e) => [e.kind, e.detail.outcome])).toEqual([
      ['begun', undefined],
      ['decided', 'commit'],
      ['completed', 'committed'],
    ]);
    expect(tx.branches.map((b) => b.status)).toEqual(['committed', 'committed']);
    expect(w.a.prepared.size + w.b.prepared.size).toBe(0);
  });

  it('inserts the row with the first state change (the begin record deferred), and changes it in place after', async () => {
    const w = world();
    const view = await submitTwo(w, 'tok');
    expect(view.status).toBe('committed');
    expect(w.log.asked.map((r) => r.insert?.id ?? null)).toEqual([view.id, null]);
    expect(w.log.asked[0]!.insert).toMatchObject({ submittedBy: 'tok', timeoutMs: 5_000, branches: [{ resource: 'a' }, { resource: 'b' }] });
    // The id carries the deadline, for recovery to roll back what a dead driver left unlogged.
    const tx = (await w.log.load(view.id))!;
    expect(stampedDeadline(view.id)).toBe(tx.deadline.getTime());
  });

  it('a tombstone written before the decision wins: the driver rolls back what it prepared and answers the abort', async () => {
    const w = world();
    const transition = w.log.transition.bind(w.log);
    // Recovery took the transaction for abandoned (a driver late past its deadline) just before its decision landed.
    w.log.transition = async (r) => {
      if (r.insert) {
        const reason = { resource: null, statement: null, code: 'deadline_exceeded', message: 'tombstone' };
        expect(await w.log.abandon({ ...r.insert, reason, driver: 'recovery' })).toBe('created');
      }
      return transition(r);
    };
    const view = await submitTwo(w, null);
    expect(view).toMatchObject({ status: 'aborted', error: { code: 'deadline_exceeded', message: 'tombstone' } });
    expect(w.a.prepared.size + w.b.prepared.size).toBe(0);
    expect((await w.log.load(view.id))!.status).toBe('aborted');
  });

  it('commits a single branch in one phase, its xid written before COMMIT', async () => {
    const w = world();
    const view = await w.engine.submit(
      { branches: [{ resource: 'a', statements: [{ sql: 'UPDATE x', params: [] }] }], timeoutMs: 5_000, wait: 'completed' },
      { actor: null },
    );
    expect(view.status).toBe('committed');
    await w.engine.answersRecorded();
    expect(w.log.asked[0]).toMatchObject({
      to: 'preparing',
      forced: true,
      onePhase: true,
      event: { detail: { outcome: 'one-phase commit' }, derivable: true },
    });
    expect(w.log.asked[0]!.branches![0]!.xid).toMatch(/^\d+$/);
    const tx = (await w.log.load(view.id))!;
    expect([tx.onePhase, tx.events.map((e) => e.kind)]).toEqual([true, ['begun', 'decided', 'completed']]);
  });

  it('aborts a submission whose statement failed, writing the decision and its reason', async () => {
    const w = world();
    const view = await w.engine.submit(
      {
        branches: [
          { resource: 'a', statements: [{ sql: 'UPDATE x', params: [] }] },
          { resource: 'b', statements: [{ sql: 'FAIL', params: [] }] },
        ],
        timeoutMs: 5_000,
        wait: 'completed',
      },
      { actor: null },
    );
    expect(view).toMatchObject({ status: 'aborted', error: { resource: 'b', statement: 0, code: '23514' } });
    await w.engine.answersRecorded();
    const events = (await w.log.load(view.id))!.events;
    const decided = events.find((e) => e.kind === 'decided')!;
    expect(decided.detail).toEqual({ outcome: 'abort', reason: view.error });
    expect(events.find((e) => e.kind === 'completed')!.detail).toEqual({ outcome: 'aborted', reason: view.error });
    expect(w.a.prepared.size).toBe(0);
  });

  it('commits an interactive transaction for its owner as the happy path, and writes the decision of anyone else', async () => {
    const w = world();
    const mine = await preparedInteractive(w, 'svc');
    await w.engine.commitInteractive(mine.id, 'svc');
    const tx = (await w.log.load(mine.id))!;
    expect(tx.status).toBe('committed');
    expect(tx.events.map((e) => [e.kind, e.actor])).toEqual([
      ['begun', 'svc'],
      ['decided', 'svc'],
      ['completed', null],
    ]);
    expect(w.log.asked.every((r) => r.event.derivable)).toBe(true);

    const theirs = await preparedInteractive(w, 'svc');
    await w.engine.commitInteractive(theirs.id, 'other-svc');
    const decided = (await w.log.load(theirs.id))!.events.find((e) => e.kind === 'decided')!;
    expect([decided.actor, decided.detail]).toEqual(['other-svc', { outcome: 'commit', interactive: true }]);
  });

  it('refuses stale compare-and-sets: a second decision, and a driver without the lease', async () => {
    const w = world();
    const { id } = await w.engine.beginInteractive(['a'], 10_000, 'svc');
    await expect(
      decide(w.other('i2').deps, id, { outcome: 'abort', reason: { resource: null, statement: null, code: 'x', message: 'x' } }, { by: 'recovery' }),
    ).rejects.toBeInstanceOf(StaleStateError);
    await decide(w.deps, id, { outcome: 'commit', checked: 1, branches: [{ index: 0 }] }, { by: 'driver' });
    await expect(
      decide(w.deps, id, { outcome: 'abort', reason: { resource: null, statement: null, code: 'x', message: 'x' } }, { by: 'driver' }),
    ).rejects.toBeInstanceOf(StaleStateError);
    await expect(complete(w.deps, id, { from: 'active', outcome: 'aborted' }, { by: 'driver' })).rejects.toBeInstanceOf(StaleStateError);
    expect((await w.log.load(id))!.status).toBe('committing');
  });

  it('refuses a commit decision that did not see a branch joined after its check', async () => {
    const w = world();
    const { id } = await w.engine.beginInteractive(['a'], 10_000, 'svc');
    const checked = (await w.log.load(id))!.branches.length;
    expect(await w.engine.joinInteractive(id, 'b', 'svc')).toMatchObject({ index: 1, created: true });
    await expect(
      decide(w.deps, id, { outcome: 'commit', checked, branches: [{ index: 0 }] }, { by: 'client', actor: 'svc', owner: 'svc' }),
    ).rejects.toBeInstanceOf(StaleStateError);
    expect((await w.log.load(id))!.status).toBe('active');
    // Through the engine: b was never prepared, so the commit that sees it aborts.
    const a = (await w.log.load(id))!.branches[0]!;
    w.a.prepareAs(a.gid);
    await expect(w.engine.commitInteractive(id, 'svc')).rejects.toMatchObject({ code: 'not_prepared' });
    expect((await w.log.load(id))!.status).toBe('aborted');
    expect(w.a.prepared.size).toBe(0);
  });

  it('refuses an illegal transition before anything reaches the log', async () => {
    const w = world();
    const { id } = await w.engine.beginInteractive(['a'], 10_000, 'svc');
    await decide(w.deps, id, { outcome: 'commit', checked: 1, branches: [{ index: 0 }] }, { by: 'driver' });
    const asked = w.log.asked.length;
    await expect(complete(w.deps, id, { from: 'committing', outcome: 'aborted' }, { by: 'recovery' })).rejects.toBeInstanceOf(IllegalTransitionError);
    await expect(complete(w.deps, id, { from: 'aborting', outcome: 'committed' }, { by: 'operator', actor: 'op', forced: 'commit' })).rejects.toThrow(
      /illegal transition aborting → committed/,
    );
    await expect(complete(w.deps, id, { from: 'committed', outcome: 'aborted' }, { by: 'driver' })).rejects.toBeInstanceOf(IllegalTransitionError);
    expect(w.log.asked.length).toBe(asked);
    expect((await w.log.load(id))!.status).toBe('committing');
  });

  it('records a hazard when recovery finds a branch rolled back behind a commit decision', async () => {
    const w = world();
    const id = await decidedStuck(w);
    const gid = (await w.log.load(id))!.branches[1]!.gid;
    w.b.rollBackByHand(gid);
    expect(await w.engine.resume(id)).toEqual({ state: 'finished', status: 'committed' });
    const tx = (await w.log.load(id))!;
    expect(tx).toMatchObject({
      status: 'committed',
      heuristic: true,
      error: { code: 'heuristic_hazard', message: 'branch on b ended aborted against the commit decision' },
    });
    expect(tx.branches.map((b) => [b.status, b.heuristic])).toEqual([
      ['committed', null],
      ['aborted', 'aborted'],
    ]);
    expect(tx.events.at(-1)!.detail).toEqual({ outcome: 'committed', by: 'recovery', heuristic: [{ resource: 'b', fate: 'aborted' }] });
  });

  describe('operator resolve', () => {
    it('decided: an undecided transaction takes the operator’s outcome, durably, then finishes', async () => {
      const w = world();
      const { id } = await preparedInteractive(w);
      expect(await resolve(w, id, {})).toEqual({ action: 'decided', result: 'finished' });
      const decision = w.log.asked.find((r) => r.to === 'committing')!;
      expect(decision).toMatchObject({
        forced: true,
        branchesChecked: 2,
        event: { actor: 'op', detail: { outcome: 'commit', by: 'operator', reason: 'ticket 42' } },
      });
      expect(await kinds(w, id)).toEqual(['begun', 'decided', 'operator_resolve', 'completed']);
      expect(w.a.prepared.size + w.b.prepared.size).toBe(0);
    });

    it('decided abort: the reason is the operator’s, and the decision is forced', async () => {
      const w = world();
      const { id } = await preparedInteractive(w);
      expect(await resolve(w, id, { outcome: 'abort' })).toEqual({ action: 'decided', result: 'finished' });
      const tx = (await w.log.load(id))!;
      expect(tx).toMatchObject({ status: 'aborted', error: { code: 'operator_abort', message: 'ticket 42' } });
      expect(tx.events.find((e) => e.kind === 'decided')!.detail).toEqual({ outcome: 'abort', by: 'operator', reason: 'ticket 42' });
      expect(w.log.asked.find((r) => r.to === 'aborting')!.forced).toBe(true);
    });

    it('runs alone in its process: after a job driving the transaction there, and jobs starting meanwhile are busy', async () => {
      const w = world();
      const { id } = await preparedInteractive(w);
      const order: string[] = [];
      const job = w.engine.resume(id).then((r) => order.push(`job ${r.state}`));
      let open!: () => void;
      const gate = new Promise<void>((r) => {
        open = r;
      });
      const resolution = w.engine.alone(id, async () => {
        order.push('operator');
        await gate;
        return 'done';
      });
      await job;
      await new Promise((r) => setImmediate(r));
      expect(order).toEqual(['job not-due', 'operator']);
      expect(await w.engine.resume(id)).toEqual({ state: 'busy' });
      open();
      expect(await resolution).toBe('done');
      expect(await w.engine.resume(id)).toEqual({ state: 'not-due' });
    });

    it('a job of the same process starting meanwhile cannot drop the lease an operator abort took', async () => {
      const w = world();
      const { id } = await preparedInteractive(w);
      // Before the deadline the job has nothing to do and lets the lease go, under this instance's
      // id, the very id the resolution holds it under: the resolution's decision then failed as
      // stale (409 busy).
      const job = jobAfterTakeOver(w, id);
      const resolved = await w.engine.alone(id, () => resolve(w, id, { outcome: 'abort' }));
      expect(await job()).toEqual({ state: 'busy' });
      expect(resolved).toEqual({ action: 'decided', result: 'finished' });
      expect((await w.log.load(id))!).toMatchObject({ status: 'aborted', error: { code: 'operator_abort' } });
    });

    it('a client commit is not refused because a job of its process let go of the lease meanwhile', async () => {
      const w = world();
      const { id } = await preparedInteractive(w);
      const job = jobAfterTakeOver(w, id);
      await w.engine.commitInteractive(id, 'svc');
      expect(await job()).toEqual({ state: 'busy' });
      expect((await w.log.load(id))!.status).toBe('committed');
    });

    it('drove: the same outcome as the decision drives its completion', async () => {
      const w = world();
      const id = await decidedStuck(w);
      expect(await resolve(w, id, {})).toEqual({ action: 'drove', result: 'finished' });
      expect((await w.log.load(id))!.status).toBe('committed');
    });

    it('refused: against the decision without force, nothing changes but the audit event', async () => {
      const w = world();
      const id = await decidedStuck(w);
      const asked = w.log.asked.length;
      const err = await resolve(w, id, { outcome: 'abort' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConflictError);
      expect(err).toMatchObject({ code: 'against_decision' });
      expect(w.log.asked.length).toBe(asked);
      const tx = (await w.log.load(id))!;
      expect([tx.status, tx.events.at(-1)!.detail.action]).toEqual(['committing', 'refused']);
    });

    it('refused: a commit when a branch is not prepared', async () => {
      const w = world();
      const { id } = await w.engine.beginInteractive(['a', 'b'], 10_000, 'svc');
      await expect(resolve(w, id, {})).rejects.toMatchObject({ code: 'not_prepared' });
      expect((await w.log.load(id))!.status).toBe('active');
    });

    it('forced: against the decision, recorded as a heuristic outcome of the decision', async () => {
      const w = world();
      const id = await decidedStuck(w);
      expect(await resolve(w, id, { outcome: 'abort', force: true })).toEqual({ action: 'forced', result: 'finished' });
      const forced = w.log.asked.at(-1)!;
      expect(forced).toMatchObject({ from: 'committing', to: 'committed', forced: true, heuristic: true });
      const tx = (await w.log.load(id))!;
      expect(tx).toMatchObject({
        status: 'committed',
        heuristic: true,
        error: { code: 'heuristic_hazard', message: 'forced abort by op against the commit decision: ticket 42' },
      });
      expect(tx.branches.find((b) => b.resource === 'b')).toMatchObject({ status: 'aborted', heuristic: 'forced abort' });
      expect(tx.events.filter((e) => e.kind === 'completed').at(-1)).toMatchObject({
        actor: 'op',
        detail: { outcome: 'committed', heuristic: true, forced: 'abort' },
      });
    });
  });

  it('recovery aborts an undecided transaction at its deadline, and not before', async () => {
    const w = world();
    const { id, branches } = await preparedInteractive(w);
    const recovery = w.other('i2');
    // Before the deadline the driver's lease stands: another instance keeps off.
    expect(await recovery.engine.resume(id)).toEqual({ state: 'busy' });
    expect(await w.engine.resume(id)).toEqual({ state: 'not-due' });
    w.log.expire(id);
    expect(await recovery.engine.resume(id)).toEqual({ state: 'finished', status: 'aborted' });
    const tx = (await w.log.load(id))!;
    expect(tx.error).toMatchObject({ code: 'deadline_exceeded' });
    expect(w.log.asked.at(-2)).toMatchObject({ from: 'active', to: 'aborting', forced: false, driver: 'i2', branchesChecked: 2 });
    expect(tx.events.find((e) => e.kind === 'decided')!.detail).toMatchObject({ outcome: 'abort', by: 'recovery', reason: { code: 'deadline_exceeded' } });
    expect(tx.events.at(-1)!.detail).toEqual({ outcome: 'aborted', by: 'recovery' });
    for (const br of branches) expect((br.resource === 'a' ? w.a : w.b).prepared.has(br.gid)).toBe(false);
  });
});
