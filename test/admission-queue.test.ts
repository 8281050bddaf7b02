import { describe, expect, it } from 'vitest';
import { clusterOf } from '../coordinator/admission-capacity.ts';
import { loadConfig } from '../coordinator/config/load-config.ts';
import { Admission, type AdmissionTicket } from '../coordinator/engine/admission.ts';
import { OverloadedError } from '../coordinator/errors.ts';

/*
 * The admission queue's rules, in memory (no database is involved in deciding who goes first):
 * all slots at once or none, first come first served among those that can proceed, bounded queue.
 * test/admission.test.ts proves the same against a real cluster.
 */

const LONG = 60_000; // a wait that never ends within a test: only a release can admit

function admission(options: { waitMs?: number; queueLimit?: number } = {}) {
  const refusals: string[] = [];
  const stale: string[] = [];
  const a = new Admission({
    waitMs: options.waitMs ?? LONG,
    queueLimit: options.queueLimit ?? 10,
    observer: { waited: () => {}, refused: (resource, reason) => refusals.push(`${resource}:${reason}`) },
    onStale: (cluster) => stale.push(cluster),
  });
  return { a, refusals, stale };
}

/** A pending acquisition whose outcome the test can look at without awaiting it. */
function track(p: Promise<AdmissionTicket>) {
  const t = { ticket: undefined as AdmissionTicket | undefined, error: undefined as unknown };
  p.then(
    (ticket) => {
      t.ticket = ticket;
    },
    (err: unknown) => {
      t.error = err;
    },
  );
  return t;
}

const settle = () => new Promise((r) => setImmediate(r));

describe('admission', () => {
  it('counts the time a request spent in the process before it arrived: past half its timeout, it is refused at once', async () => {
    const { a, refusals } = admission();
    a.addResource('a', 5, null);
    // Free slots, but 3 of its 5 s went queued in the event loop: admitting it would likely answer late.
    const late = await a.acquire(['a'], ['g1'], 5_000, 3_000).then(
      () => null,
      (err: unknown) => err,
    );
    expect(late).toBeInstanceOf(OverloadedError);
    expect((late as OverloadedError).reason).toBe('wait_timeout');
    expect(refusals).toEqual(['a:wait_timeout']);
    expect(a.snapshot().resources[0]!.inUse).toBe(0);
    // With most of its time left it is admitted as usual.
    const ticket = await a.acquire(['a'], ['g2'], 5_000, 1_000);
    expect(a.snapshot().resources[0]!.inUse).toBe(1);
    ticket.release();
    // A deadline of a few milliseconds is the client's choice: tried with a free slot, not refused.
    const tiny = await a.acquire(['a'], ['g3'], 1, 2);
    expect(a.snapshot().resources[0]!.inUse).toBe(1);
    tiny.release();
  });

  it('takes every slot at once or none, and serves waiters that can proceed in arrival order', async () => {
    const { a } = admission();
    a.addResource('a', 1, null);
    a.addResource('b', 1, null);
    const t1 = await a.acquire(['a'], ['g1'], LONG);
    const both = track(a.acquire(['a', 'b'], ['g2a', 'g2b'], LONG));
    await settle();
    expect(both.ticket).toBeUndefined();
    // The waiter holds nothing while it waits: b is still free for someone else (no hold-and-wait).
    const t3 = await a.acquire(['b'], ['g3'], LONG);
    const onA = track(a.acquire(['a'], ['g4'], LONG));
    await settle();

    t1.release();
    await settle();
    // The first waiter still cannot proceed (b is taken): the later one whose slot is free goes.
    expect(both.ticket).toBeUndefined();
    expect(onA.ticket).toBeDefined();

    t3.release();
    onA.ticket!.release();
    await settle();
    expect(both.ticket).toBeDefined();
    expect(a.snapshot()).toEqual({
      resources: [
        { resource: 'a', inUse: 1, capacity: 1 },
        { resource: 'b', inUse: 1, capacity: 1 },
      ],
      waiting: 0,
    });
    both.ticket!.release();
    both.ticket!.release(); // idempotent: slots are given back once
    expect(a.snapshot().resources.map((r) => r.inUse)).toEqual([0, 0]);
  });

  it('refuses at once beyond the queue, and after the wait otherwise, naming the full resource', async () => {
    const { a, refusals } = admission({ waitMs: 20, queueLimit: 1 });
    a.addResource('a', 1, null);
    await a.acquire(['a'], ['g1'], LONG);
    const waiting = track(a.acquire(['a'], ['g2'], LONG));
    await expect(a.acquire(['a'], ['g3'], LONG)).rejects.toMatchObject({ reason: 'queue_full', resource: 'a', retryAfterSeconds: 1 });
    await expect(new Promise((r) => setTimeout(r, 50)).then(() => waiting.error)).resolves.toBeInstanceOf(OverloadedError);
    expect((waiting.error as OverloadedError).reason).toBe('wait_timeout');
    expect(refusals).toEqual(['a:queue_full', 'a:wait_timeout']);
    expect(a.snapshot().waiting).toBe(0);
  });

  it('sheds before reading a request only when the queue is full and no resource has a free slot', async () => {
    const { a, refusals } = admission({ queueLimit: 1 });
    a.addResource('a', 1, null);
    a.addResource('b', 1, null);
    const onA = await a.acquire(['a'], ['g1'], LONG);
    track(a.acquire(['a'], ['g2'], LONG)); // the queue is full now, but b is free: a request for b would be admitted
    expect(a.shed()).toBeNull();
    const onB = await a.acquire(['b'], ['g3'], LONG);
    expect(a.shed()).toMatchObject({ reason: 'queue_full', resource: 'a', retryAfterSeconds: 1 });
    expect(refusals).toEqual(['a:queue_full']);
    onB.release();
    expect(a.shed()).toBeNull();
    onA.release();
  });

  it('never waits past half the transaction timeout: a 1 ms timeout is refused at once', async () => {
    const { a } = admission();
    a.addResource('a', 1, null);
    await a.acquire(['a'], ['g1'], LONG);
    await expect(a.acquire(['a'], ['g2'], 1)).rejects.toMatchObject({ reason: 'wait_timeout' });
  });

  it('shares a cluster between its resources, counting only what others hold against it', async () => {
    const { a, stale } = admission({ waitMs: 0 });
    a.addResource('a', 10, 'pg:5432');
    a.addResource('b', 10, 'pg:5432');
    const mine = await a.acquire(['a', 'b'], ['tpc:x:1:0', 'tpc:x:1:1'], LONG);
    // Of the five prepared on the cluster, two are this process's own: three are someone else's.
    a.setClusterReading('pg:5432', 6, ['tpc:x:1:0', 'tpc:x:1:1', 'other:1', 'other:2', 'other:3']);
    expect(a.snapshot().resources).toEqual([
      { resource: 'a', inUse: 1, capacity: 3 },
      { resource: 'b', inUse: 1, capacity: 3 },
    ]);
    await a.acquire(['a'], ['tpc:x:2:0'], LONG);
    await expect(a.acquire(['b'], ['tpc:x:3:0'], LONG)).rejects.toMatchObject({ reason: 'wait_timeout', resource: 'b' });
    // Refused while others hold slots there: the reading may be stale, have it read again.
    expect(stale).toEqual(['pg:5432']);
    mine.release();
    a.setClusterReading('pg:5432', 6, []);
    await expect(a.acquire(['a', 'b'], ['tpc:x:4:0', 'tpc:x:4:1'], LONG)).resolves.toBeDefined();
    // More slots than the cluster has at all: refused at once, whatever the wait.
    a.setClusterReading('pg:5432', 1, []);
    await expect(a.acquire(['a', 'b'], ['tpc:x:5:0', 'tpc:x:5:1'], LONG)).rejects.toMatchObject({ reason: 'no_capacity' });
  });
});

describe('admission configuration', () => {
  const env = { DATABASE_URL: 'postgres://l@127.0.0.1/log', REDIS_URL: 'redis://127.0.0.1:6379', TPC_RESOURCES: '{"a":"postgres://u@127.0.0.1/a"}' };

  it('has a short wait and a bounded queue by default, and names a bad knob', () => {
    expect(loadConfig(env)).toMatchObject({ admissionWaitMs: 250, admissionQueue: 200 });
    expect(loadConfig({ ...env, TPC_ADMISSION_WAIT_MS: '0', TPC_ADMISSION_QUEUE: '0' })).toMatchObject({ admissionWaitMs: 0, admissionQueue: 0 });
    expect(() => loadConfig({ ...env, TPC_ADMISSION_WAIT_MS: 'soon' })).toThrow(/^TPC_ADMISSION_WAIT_MS: /);
    expect(() => loadConfig({ ...env, TPC_ADMISSION_QUEUE: '-1' })).toThrow(/^TPC_ADMISSION_QUEUE: /);
  });

  it('groups direct resources by the host and port of their URL: databases of one cluster share its slots', () => {
    expect(clusterOf('postgres://bank_a@127.0.0.1:5433/bank_a')).toBe(clusterOf('postgresql://bank_b:secret@127.0.0.1:5433/bank_b?sslmode=disable'));
    expect(clusterOf('postgres://u@db.internal/a')).toBe('db.internal:5432');
    expect(clusterOf('postgres://u@/a?host=/var/run/postgresql&port=5444')).toBe('/var/run/postgresql:5444');
    expect(clusterOf('postgres://u@127.0.0.1:5433/a')).not.toBe(clusterOf('postgres://u@127.0.0.1:5434/a'));
    expect(clusterOf('postgres://u:p%40ss@[::1]:5435/a')).toBe('[::1]:5435');
  });
});
