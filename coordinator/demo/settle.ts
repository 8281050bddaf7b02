import { preparedOn } from './banks.ts';

/*
 * The end of a run, and the start of one after an interrupted run: wait until the coordinator
 * has nothing left to finish (no transaction undecided or mid-phase-2, so nothing in doubt) and no
 * bank holds a prepared transaction.
 */

const UNFINISHED = 'active,preparing,committing,aborting';

export interface SettleState {
  settled: boolean;
  /** Ids of transactions the log still has unfinished (the first page). */
  unfinished: string[];
  /** `bank: gid` of every prepared transaction still on a bank. */
  prepared: string[];
  waitedMs: number;
}

async function unfinishedIds(url: string, token: string): Promise<string[]> {
  const res = await fetch(`${url}/v1/transactions?status=${UNFINISHED}&limit=200`, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status !== 200) throw new Error(`GET /v1/transactions answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
  const body = (await res.json()) as { items: { id: string }[] };
  return body.items.map((t) => t.id);
}

async function preparedEverywhere(banks: Readonly<Record<string, string>>): Promise<string[]> {
  const lists = await Promise.all(Object.entries(banks).map(async ([bank, url]) => (await preparedOn(url)).map((gid) => `${bank}: ${gid}`)));
  return lists.flat();
}

/** Polls until settled or `limitMs` has passed; never throws for a coordinator or bank that does not answer yet. */
export async function waitUntilSettled(o: {
  url: string;
  token: string;
  banks: Readonly<Record<string, string>>;
  limitMs: number;
  signal: AbortSignal;
}): Promise<SettleState> {
  const startedAt = Date.now();
  let state: SettleState = { settled: false, unfinished: ['(not asked yet)'], prepared: [], waitedMs: 0 };
  for (;;) {
    try {
      const [unfinished, prepared] = await Promise.all([unfinishedIds(o.url, o.token), preparedEverywhere(o.banks)]);
      state = { settled: unfinished.length === 0 && prepared.length === 0, unfinished, prepared, waitedMs: Date.now() - startedAt };
    } catch (err) {
      state = { ...state, settled: false, unfinished: [`(cannot ask: ${(err as Error).message})`], waitedMs: Date.now() - startedAt };
    }
    if (state.settled || o.signal.aborted || Date.now() - startedAt > o.limitMs) return state;
    // 200 ms: phase 2 retries run every second at most (TPC_RETRY_MAX_MS), so this sees the end promptly.
    await new Promise((r) => setTimeout(r, 200));
  }
}
