import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { DeferredBegin } from '../coordinator/engine/deferred-begin.ts';
import type { BeginOutcome, BeginRecord } from '../coordinator/engine/log-port.ts';
import { deadlineStampedId, stampedDeadline } from '../coordinator/engine/transaction-id.ts';

const record = (id = randomUUID()): BeginRecord => ({
  id,
  namespace: 'ns',
  deadline: new Date(Date.now() + 10_000),
  submittedBy: null,
  driver: 'i1',
  branches: [{ index: 0, resource: 'a', gid: `tpc:ns:${id}:0` }],
  timeoutMs: 10_000,
});

/** A log write that the test settles by hand. */
function writes() {
  const calls: { record: BeginRecord; resolve: (o: BeginOutcome) => void; reject: (e: Error) => void }[] = [];
  const write = (r: BeginRecord) =>
    new Promise<BeginOutcome>((resolve, reject) => {
      calls.push({ record: r, resolve, reject });
    });
  return { calls, write };
}

describe('a deadline-stamped transaction id', () => {
  it('is a version-8 UUID that gives its deadline back, to the millisecond', () => {
    const deadline = Date.UTC(2026, 11, 1, 12, 0, 0, 123);
    const id = deadlineStampedId(deadline);
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(stampedDeadline(id)).toBe(deadline);
    expect(deadlineStampedId(deadline)).not.toBe(id); // 74 random bits
    expect(stampedDeadline(deadlineStampedId(2 ** 48 - 1))).toBe(2 ** 48 - 1);
    expect(() => deadlineStampedId(2 ** 48)).toThrow(RangeError);
  });

  it('is told apart from every other id, which carries no deadline', () => {
    expect(stampedDeadline(randomUUID())).toBeNull();
    expect(stampedDeadline('not-a-uuid')).toBeNull();
    expect(stampedDeadline(deadlineStampedId(Date.now()).toUpperCase())).toBeNull(); // never made so
    expect(stampedDeadline('6f1e2d3c-741f-804f-c618-01a2339a741f')).toBeNull(); // not the RFC variant
  });
});

describe('a deferred begin record', () => {
  it('decided before the delay: nothing is written, and the first state change gets the record', async () => {
    const { calls, write } = writes();
    const r = record();
    let written = 0;
    const begin = new DeferredBegin(r, write, 50, () => written++);
    expect(await begin.claim()).toBe(r);
    await sleep(100);
    expect(calls).toHaveLength(0);
    expect(written).toBe(0);
    // Claimed: a late start (a timer that raced) cannot write a second row.
    await expect(begin.start()).rejects.toThrow(/claimed/);
  });

  it('still running after the delay: the record is written, and the first state change waits for it', async () => {
    const { calls, write } = writes();
    let written = 0;
    const begin = new DeferredBegin(record(), write, 20, () => written++);
    await sleep(60);
    expect(calls).toHaveLength(1);
    let claimed: BeginRecord | null | undefined;
    const claim = begin.claim().then((c) => {
      claimed = c;
    });
    await sleep(20);
    expect(claimed).toBeUndefined(); // not before the write is acknowledged
    calls[0]!.resolve({ created: true });
    await claim;
    expect(claimed).toBeNull();
    expect(written).toBe(1);
  });

  it("a failed write is the first state change's error, and no unhandled rejection before", async () => {
    const { calls, write } = writes();
    const begin = new DeferredBegin(record(), write, 0);
    expect(calls).toHaveLength(1); // delay 0: at once (a keyed request)
    calls[0]!.reject(new Error('log down'));
    await sleep(10);
    await expect(begin.claim()).rejects.toThrow('log down');
  });

  it('start() writes at once, once', async () => {
    const { calls, write } = writes();
    const begin = new DeferredBegin(record(), write, 60_000);
    const first = begin.start();
    const second = begin.start();
    expect(calls).toHaveLength(1);
    calls[0]!.resolve({ created: true });
    expect(await first).toEqual({ created: true });
    expect(await second).toEqual({ created: true });
    begin.dispose();
  });
});
