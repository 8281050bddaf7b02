import { describe, expect, it } from 'vitest';
import { WorkControl } from '../coordinator/engine/deadline.ts';

/* The transaction's stop switch: its callbacks run once, on the first stop, as abort listeners would. */
describe('WorkControl', () => {
  it('runs each callback once on the first stop, with the first reason, and not those taken back', () => {
    const control = new WorkControl(Date.now() + 60_000);
    const calls: string[] = [];
    control.onStop(() => calls.push('a'));
    const takeBack = control.onStop(() => calls.push('b'));
    control.onStop(() => calls.push(`c:${control.signal.aborted}`));
    takeBack();
    takeBack(); // twice is harmless
    control.stop({ kind: 'failure' });
    control.stop({ kind: 'deadline' });
    expect(calls).toEqual(['a', 'c:true']);
    expect(control.stopReason).toEqual({ kind: 'failure' });
    // Added once stopped, a callback never runs, as a listener added to an aborted signal never fires.
    control.onStop(() => calls.push('late'));
    control.stop({ kind: 'failure' });
    expect(calls).toEqual(['a', 'c:true']);
    control.dispose();
  });

  it('stops at its deadline', async () => {
    const control = new WorkControl(Date.now() + 20);
    const stopped = new Promise<void>((resolve) => control.onStop(resolve));
    await stopped;
    expect(control.stopReason).toEqual({ kind: 'deadline' });
    expect(control.expired).toBe(true);
    control.dispose();
  });
});
