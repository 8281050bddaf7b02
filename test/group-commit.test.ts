import { describe, expect, it } from 'vitest';
import { UnavailableError } from '../coordinator/errors.ts';
import {
  GroupCommit,
  GroupCommitClosedError,
  GroupCommitOverloadError,
  GroupCommitResultError,
  type GroupCommitObserver,
} from '../coordinator/log/group-commit.ts';
import { createMetrics } from '../coordinator/observability/metrics.ts';

/*
 * The group-commit batcher's rules, with a fake write the test controls: which items travel
 * together, who gets which result or error, its bounds and its shutdown. Deciding who shares a
 * statement involves no database; test/group-commit-postgres.test.ts proves the same shape against
 * a real one, with a real statement and a connection killed mid-statement.
 */

/** A write the test settles by hand: each call is recorded with its items and its own resolvers. */
function controlledWrite<In, Out>() {
  const calls: { items: In[]; resolve(results: ReadonlyArray<Out | Error>): void; reject(err: unknown): void }[] = [];
  const write = (items: In[]) =>
    new Promise<ReadonlyArray<Out | Error>>((resolve, reject) => {
      calls.push({ items: [...items], resolve, reject });
    });
  return { calls, write };
}

/** Records what the batcher reports, as metrics.ts would. */
function recordingObserver() {
  const flushes: { size: number; outcome: string }[] = [];
  let refusals = 0;
  const observer: GroupCommitObserver = {
    flushed: (_name, size, seconds, outcome) => {
      expect(seconds).toBeGreaterThanOrEqual(0);
      flushes.push({ size, outcome });
    },
    refused: () => {
      refusals += 1;
    },
  };
  return { observer, flushes, refusals: () => refusals };
}

/** A pending result the test can look at without awaiting it. */
function track<T>(p: Promise<T>) {
  const t = { settled: false, value: undefined as T | undefined, error: undefined as unknown };
  p.then(
    (value) => {
      t.settled = true;
      t.value = value;
    },
    (err: unknown) => {
      t.settled = true;
      t.error = err;
    },
  );
  return t;
}

const settle = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const doubled = (items: number[]) => items.map((n) => n * 2);

describe('group commit', () => {
  it('writes a lone caller at once, alone, with no timer', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const { observer, flushes } = recordingObserver();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 10, maxQueued: 10, observer });
    const one = batcher.submit(7);
    // Synchronously: nothing waits for company when nothing is in flight.
    expect(calls.map((c) => c.items)).toEqual([[7]]);
    calls[0]!.resolve([14]);
    expect(await one).toBe(14);
    expect(flushes).toEqual([{ size: 1, outcome: 'ok' }]);
    const two = batcher.submit(8);
    expect(calls.map((c) => c.items)).toEqual([[7], [8]]);
    calls[1]!.resolve([16]);
    expect(await two).toBe(16);
  });

  it('gathers callers that arrive during a write into the next batch, in arrival order', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const { observer, flushes } = recordingObserver();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 10, maxQueued: 10, observer });
    const first = batcher.submit(1);
    const later = [2, 3, 4, 5].map((n) => batcher.submit(n));
    expect(calls.map((c) => c.items)).toEqual([[1]]);
    expect(batcher.queued).toBe(4);
    calls[0]!.resolve([10]);
    await settle();
    // The next batch went as soon as the first settled, holding everyone who waited.
    expect(calls.map((c) => c.items)).toEqual([[1], [2, 3, 4, 5]]);
    calls[1]!.resolve([20, 30, 40, 50]);
    expect(await first).toBe(10);
    expect(await Promise.all(later)).toEqual([20, 30, 40, 50]);
    expect(flushes).toEqual([
      { size: 1, outcome: 'ok' },
      { size: 4, outcome: 'ok' },
    ]);
    expect(batcher.inFlight).toBe(0);
  });

  it('routes each per-item result and per-item error to its own caller', async () => {
    const { calls, write } = controlledWrite<string, string>();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 10, maxQueued: 10 });
    const head = batcher.submit('head');
    const rest = ['a', 'stale-b', 'c', 'stale-d'].map((item) => track(batcher.submit(item)));
    calls[0]!.resolve(['head!']);
    await head;
    await settle();
    // A compare-and-set that found no row fails its own caller; its neighbours in the statement succeed.
    calls[1]!.resolve(calls[1]!.items.map((item) => (item.startsWith('stale') ? new Error(`no row for ${item}`) : `${item}!`)));
    await settle();
    expect(rest.map((t) => t.value)).toEqual(['a!', undefined, 'c!', undefined]);
    expect(rest.map((t) => (t.error as Error | undefined)?.message)).toEqual([undefined, 'no row for stale-b', undefined, 'no row for stale-d']);
  });

  it('fails every caller of a rejected batch with its error, and only them: the next batch succeeds', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const { observer, flushes } = recordingObserver();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 10, maxQueued: 10, observer });
    const first = track(batcher.submit(1));
    const doomed = [2, 3, 4].map((n) => track(batcher.submit(n)));
    calls[0]!.resolve([1]);
    await settle();
    const after = [5, 6].map((n) => track(batcher.submit(n)));
    const outage = Object.assign(new Error('could not write'), { code: '53100' });
    calls[1]!.reject(outage);
    await settle();
    // Each caller sees the very error a write of its own would have thrown.
    expect(doomed.map((t) => t.error)).toEqual([outage, outage, outage]);
    expect(calls[2]!.items).toEqual([5, 6]);
    calls[2]!.resolve(doubled(calls[2]!.items));
    await settle();
    expect(first.value).toBe(1);
    expect(after.map((t) => t.value)).toEqual([10, 12]);
    expect(after.every((t) => t.error === undefined)).toBe(true);
    expect(flushes.map((f) => f.outcome)).toEqual(['ok', 'failed', 'ok']);
  });

  it('fails a batch whose write throws before returning a promise, or returns the wrong number of results', async () => {
    let mode: 'throw' | 'short' | 'ok' = 'throw';
    const batcher = new GroupCommit<number, number>({
      name: 't',
      maxBatch: 10,
      maxQueued: 10,
      write: (items) => {
        if (mode === 'throw') throw new Error('bad parameters');
        return Promise.resolve(mode === 'short' ? doubled(items).slice(1) : doubled(items));
      },
    });
    await expect(batcher.submit(1)).rejects.toThrow('bad parameters');
    mode = 'short';
    const short = await batcher.submit(2).catch((err: unknown) => err);
    expect(short).toBeInstanceOf(GroupCommitResultError);
    mode = 'ok';
    expect(await batcher.submit(3)).toBe(6);
  });

  it('a batch lost mid-flight fails each caller, whose idempotent retry then settles what happened', async () => {
    // A log row per id; the write is a compare-and-set that also accepts its own target state, as
    // the log's writes do, so that a retry after an unknown outcome is safe.
    const rows = new Map<string, string>([
      ['z', 'preparing'],
      ['a', 'preparing'],
      ['b', 'preparing'],
      ['c', 'preparing'],
    ]);
    let writes = 0;
    const batcher = new GroupCommit<{ id: string; from: string; to: string }, string>({
      name: 'decide',
      maxBatch: 10,
      maxQueued: 10,
      write: async (items) => {
        writes += 1;
        const results = items.map(({ id, from, to }) => {
          const now = rows.get(id);
          if (now === from || now === to) {
            rows.set(id, to);
            return to;
          }
          return new Error(`${id} is ${now}, not ${from}`);
        });
        if (writes === 2) {
          // The statement committed, then the connection reset before its answer arrived.
          throw Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
        }
        return results;
      },
    });
    const moves = ['a', 'b', 'c'].map((id) => ({ id, from: 'preparing', to: 'committing' }));
    // z's write is in flight while a, b and c arrive: they share the second write, which is lost.
    const z = batcher.submit({ id: 'z', from: 'preparing', to: 'aborting' });
    const outcomes = await Promise.allSettled(moves.map((m) => batcher.submit(m)));
    expect(await z).toBe('aborting');
    // Every caller of the lost batch learns that its outcome is unknown, none that it succeeded.
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(outcomes.map((o) => ((o as PromiseRejectedResult).reason as Error).message)).toEqual(Array(3).fill('Connection terminated unexpectedly'));
    expect([...rows.values()]).toEqual(['aborting', 'committing', 'committing', 'committing']);
    // Each retries its own write, exactly as it would after a single lost write: the log already says so.
    expect(await Promise.all(moves.map((m) => batcher.submit(m)))).toEqual(['committing', 'committing', 'committing']);
    // A stale move is still refused after all that: the retry did not turn into a blind overwrite.
    await expect(batcher.submit({ id: 'a', from: 'preparing', to: 'aborting' })).rejects.toThrow('a is committing, not preparing');
  });

  it('never writes more than maxBatch items at once: a burst becomes several batches in arrival order', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 4, maxQueued: 100 });
    const burst = Array.from({ length: 11 }, (_, i) => batcher.submit(i));
    for (let k = 0; k < 4; k++) {
      await settle();
      calls[k]!.resolve(doubled(calls[k]!.items));
    }
    expect(await Promise.all(burst)).toEqual(burst.map((_, i) => i * 2));
    expect(calls.map((c) => c.items)).toEqual([[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]);
    expect(Math.max(...calls.map((c) => c.items.length))).toBeLessThanOrEqual(4);
  });

  it('keeps submission order within and across batches under random arrivals and settle times', async () => {
    const written: number[] = [];
    let inFlight = 0;
    const batcher = new GroupCommit<number, number>({
      name: 't',
      maxBatch: 7,
      maxQueued: 1000,
      write: async (items) => {
        inFlight += 1;
        expect(inFlight).toBe(1);
        written.push(...items);
        await new Promise((r) => setTimeout(r, Math.random() * 3));
        inFlight -= 1;
        return doubled(items);
      },
    });
    const results: Promise<number>[] = [];
    for (let i = 0; i < 200; i++) {
      results.push(batcher.submit(i));
      if (Math.random() < 0.3) await new Promise((r) => setTimeout(r, Math.random() * 2));
    }
    expect(await Promise.all(results)).toEqual(results.map((_, i) => i * 2));
    expect(written).toEqual(results.map((_, i) => i));
  });

  it('refuses at once beyond maxQueued while the log hangs, and recovers once it answers', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const { observer, refusals } = recordingObserver();
    const batcher = new GroupCommit({ name: 'complete', write, maxBatch: 2, maxQueued: 3, observer });
    // The log is unreachable: the first write never answers, three more wait, the fifth is refused.
    const hung = track(batcher.submit(0));
    const waiting = [1, 2, 3].map((n) => track(batcher.submit(n)));
    // Not awaited: a batcher that queued it instead would leave this test waiting forever.
    const refusal = track(batcher.submit(4));
    await settle();
    const refused = refusal.error;
    expect(refused).toBeInstanceOf(GroupCommitOverloadError);
    // The API answers an UnavailableError 503 with its Retry-After.
    expect(refused).toBeInstanceOf(UnavailableError);
    expect((refused as GroupCommitOverloadError).retryAfterSeconds).toBe(1);
    expect((refused as GroupCommitOverloadError).batcher).toBe('complete');
    expect(refusals()).toBe(1);
    expect(batcher.queued).toBe(3);
    expect(calls).toHaveLength(1);
    expect(hung.settled || waiting.some((t) => t.settled)).toBe(false);
    // The log answers: the queue drains batch by batch (at most 2 each), and there is room again.
    calls[0]!.resolve([0]);
    await settle();
    expect(calls[1]!.items).toEqual([1, 2]);
    expect(batcher.queued).toBe(1);
    const late = track(batcher.submit(5));
    calls[1]!.resolve(doubled(calls[1]!.items));
    await settle();
    expect(calls[2]!.items).toEqual([3, 5]);
    calls[2]!.resolve(doubled(calls[2]!.items));
    await settle();
    expect([hung, ...waiting, late].map((t) => t.value)).toEqual([0, 2, 4, 6, 10]);
    expect(refusals()).toBe(1);
  });

  it("refuses beyond maxQueued while every write fails, and each queued caller gets its batch's failure", async () => {
    const { calls, write } = controlledWrite<number, number>();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 2, maxQueued: 2 });
    const down = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const callers = [0, 1, 2].map((n) => track(batcher.submit(n)));
    const refusal = track(batcher.submit(3));
    await settle();
    expect(refusal.error).toBeInstanceOf(GroupCommitOverloadError);
    calls[0]!.reject(down);
    await settle();
    // A failing write frees the queue as fast as it fails, so later callers get room, and the error.
    expect(batcher.queued).toBe(0);
    const next = track(batcher.submit(4));
    calls[1]!.reject(down);
    await settle();
    calls[2]!.reject(down);
    await settle();
    expect([...callers, next].map((t) => t.error)).toEqual([down, down, down, down]);
    expect(calls.map((c) => c.items)).toEqual([[0], [1, 2], [4]]);
  });

  it('close() writes what is queued, waits for the write in flight, then refuses', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const batcher = new GroupCommit({ name: 'begin', write, maxBatch: 2, maxQueued: 10 });
    const accepted = [0, 1, 2, 3].map((n) => track(batcher.submit(n)));
    const closed = track(batcher.close());
    const refusal = track(batcher.submit(9));
    await settle();
    const refused = refusal.error;
    expect(refused).toBeInstanceOf(GroupCommitClosedError);
    expect(refused).toBeInstanceOf(UnavailableError);
    for (let k = 0; k < 3; k++) {
      expect(closed.settled).toBe(false);
      calls[k]!.resolve(doubled(calls[k]!.items));
      await settle();
    }
    expect(closed.settled).toBe(true);
    expect(calls.map((c) => c.items)).toEqual([[0], [1, 2], [3]]);
    expect(accepted.map((t) => t.value)).toEqual([0, 2, 4, 6]);
    // Closing an idle or already closed batcher resolves at once.
    await batcher.close();
    await new GroupCommit({ name: 'idle', write, maxBatch: 1, maxQueued: 0 }).close();
  });

  it('keeps up to maxInFlight writes going at once, each with its own slice of the queue', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 3, maxQueued: 10, maxInFlight: 2 });
    const all = [0, 1, 2, 3, 4, 5].map((n) => track(batcher.submit(n)));
    // Two go alone at once; the rest wait for whichever settles first.
    expect(calls.map((c) => c.items)).toEqual([[0], [1]]);
    calls[1]!.resolve([2]);
    await settle();
    expect(calls[2]!.items).toEqual([2, 3, 4]);
    calls[0]!.resolve([0]);
    await settle();
    expect(calls[3]!.items).toEqual([5]);
    calls[3]!.resolve([10]);
    calls[2]!.resolve([4, 6, 8]);
    await settle();
    expect(all.map((t) => t.value)).toEqual([0, 2, 4, 6, 8, 10]);
  });

  it("reports batch sizes, flush durations and refusals to the service's metrics", async () => {
    const metrics = createMetrics();
    const { calls, write } = controlledWrite<number, number>();
    const batcher = new GroupCommit({ name: 'complete', write, maxBatch: 10, maxQueued: 2, observer: metrics.groupCommit });
    const all = [0, 1, 2].map((n) => track(batcher.submit(n)));
    track(batcher.submit(3));
    calls[0]!.resolve([0]);
    await settle();
    calls[1]!.reject(new Error('lost'));
    await settle();
    expect(all.map((t) => t.settled)).toEqual([true, true, true]);
    const text = await metrics.registry.metrics();
    expect(text).toContain('tpc_group_commit_batch_size_sum{name="complete"} 3');
    expect(text).toContain('tpc_group_commit_batch_size_count{name="complete"} 2');
    expect(text).toContain('tpc_group_commit_flush_seconds_count{name="complete",outcome="ok"} 1');
    expect(text).toContain('tpc_group_commit_flush_seconds_count{name="complete",outcome="failed"} 1');
    expect(text).toContain('tpc_group_commit_refusals_total{name="complete"} 1');
  });

  it('rejects bounds that would make it refuse or stall everything', () => {
    const write = async (items: number[]) => items;
    expect(() => new GroupCommit({ name: 't', write, maxBatch: 0, maxQueued: 1 })).toThrow(RangeError);
    expect(() => new GroupCommit({ name: 't', write, maxBatch: 1, maxQueued: -1 })).toThrow(RangeError);
    expect(() => new GroupCommit({ name: 't', write, maxBatch: 1.5, maxQueued: 1 })).toThrow(RangeError);
    expect(() => new GroupCommit({ name: 't', write, maxBatch: 1, maxQueued: 1, maxInFlight: 0 })).toThrow(RangeError);
    expect(() => new GroupCommit({ name: 't', write, maxBatch: 1, maxQueued: 1, lingerMs: -1 })).toThrow(RangeError);
    expect(() => new GroupCommit({ name: 't', write, maxBatch: 1, maxQueued: 1, lingerMs: Number.POSITIVE_INFINITY })).toThrow(RangeError);
  });

  it('with a linger, a free slot waits that long and writes everyone who came meanwhile in one batch', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const { observer, flushes } = recordingObserver();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 10, maxQueued: 10, lingerMs: 200, observer });
    const first = [1, 2].map((n) => track(batcher.submit(n)));
    await settle();
    expect(calls).toEqual([]);
    const third = track(batcher.submit(3));
    await sleep(400);
    expect(calls.map((c) => c.items)).toEqual([[1, 2, 3]]);
    // Items that come while the write is in flight wait for it, then for the linger again.
    const later = [4, 5].map((n) => track(batcher.submit(n)));
    calls[0]!.resolve([10, 20, 30]);
    await settle();
    expect([...first, third].map((t) => t.value)).toEqual([10, 20, 30]);
    expect(calls).toHaveLength(1);
    await sleep(400);
    expect(calls.map((c) => c.items)).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    calls[1]!.resolve([40, 50]);
    await settle();
    expect(later.map((t) => t.value)).toEqual([40, 50]);
    expect(flushes).toEqual([
      { size: 3, outcome: 'ok' },
      { size: 2, outcome: 'ok' },
    ]);
  });

  it('with a linger, a full batch goes at once, and close() writes what lingers without waiting', async () => {
    const { calls, write } = controlledWrite<number, number>();
    const batcher = new GroupCommit({ name: 't', write, maxBatch: 3, maxQueued: 10, lingerMs: 60_000 });
    const full = [1, 2, 3].map((n) => track(batcher.submit(n)));
    expect(calls.map((c) => c.items)).toEqual([[1, 2, 3]]);
    calls[0]!.resolve([1, 2, 3]);
    const lingering = track(batcher.submit(4));
    await settle();
    expect(calls).toHaveLength(1);
    const closed = track(batcher.close());
    expect(calls.map((c) => c.items)).toEqual([[1, 2, 3], [4]]);
    calls[1]!.resolve([4]);
    await settle();
    expect([...full, lingering].map((t) => t.value)).toEqual([1, 2, 3, 4]);
    expect(closed.settled).toBe(true);
  });
});
