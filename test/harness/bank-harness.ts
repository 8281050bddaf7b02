import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startCoordinatorProcess, type CoordinatorProcess } from './coordinator-process.ts';
import { TOKENS, type HttpAnswer } from './world.ts';
export { restartAfterCrash } from './waits.ts';

/*
 * Helpers of the bank test (test/bank.test.ts): a seeded PRNG, HTTP calls that always time out,
 * and a fleet of coordinator processes that the nemesis kills and replaces.
 */

/** FNV-1a: a stream name → 32 bits, to derive independent PRNG streams from one seed. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** mulberry32: small, fast, good enough for choosing test actions; the same seed gives the same stream. */
export class Rng {
  #state: number;

  constructor(seed: number, stream = '') {
    this.#state = (seed ^ hash32(stream)) >>> 0;
  }

  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi], both included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)]!;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

/** The seed of this run: BANK_SEED when set (to replay a failure), else a fresh one. */
export function bankSeed(env: Record<string, string | undefined> = process.env): number {
  const given = env.BANK_SEED;
  if (given !== undefined && given.trim() !== '') {
    const n = Number(given);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`BANK_SEED must be an integer in [0, 2^32): ${given}`);
    return n;
  }
  return Math.floor(Math.random() * 0x100000000) >>> 0;
}

/** One HTTP call with the `full` token, bounded by `timeoutMs` (connect, answer and body). */
export async function timedRequest(
  baseUrl: string,
  method: string,
  path: string,
  o: { body?: unknown; headers?: Record<string, string>; timeoutMs: number },
): Promise<HttpAnswer> {
  const signal = AbortSignal.timeout(o.timeoutMs);
  const res = await fetch(baseUrl + path, {
    method,
    headers: {
      ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}),
      authorization: `Bearer ${TOKENS.full}`,
      ...o.headers,
    },
    body: o.body === undefined ? undefined : JSON.stringify(o.body),
    signal,
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** A query on a fresh connection (for databases that may have been restarted), bounded in time. */
export async function queryOnce<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000, query_timeout: 10_000 });
  c.on('error', () => {});
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end().catch(() => {});
  }
}

/** Runs `fn` over `items` with at most `limit` at a time. */
export async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const item = items[next++]!;
        await fn(item);
      }
    }),
  );
}

interface Slot {
  proc: CoordinatorProcess | undefined;
  /** A start in progress, so that two restarts of one slot never overlap. */
  starting: Promise<void> | undefined;
}

export interface FleetEvent {
  at: number;
  slot: number;
  what: string;
}

/**
 * Coordinator processes on one log and one Redis, in numbered slots. The nemesis kills a slot's
 * process (SIGKILL) and starts a fresh one; clients send to any live process. A process that
 * exits without having been killed by the fleet is recorded: the coordinator must not die on its own.
 */
export class CoordinatorFleet {
  readonly #env: Record<string, string>;
  readonly #slots: Slot[];
  readonly #log: (msg: string) => void;
  readonly #killedByUs = new WeakSet<CoordinatorProcess>();
  /** Every process ever started, for log scans and the final stop. */
  readonly all: CoordinatorProcess[] = [];
  readonly unexpectedExits: string[] = [];
  readonly startFailures: string[] = [];
  #closed = false;

  constructor(env: Record<string, string>, size: number, log: (msg: string) => void) {
    this.#env = env;
    this.#slots = Array.from({ length: size }, () => ({ proc: undefined, starting: undefined }));
    this.#log = log;
  }

  get size(): number {
    return this.#slots.length;
  }

  /** URLs of the processes that are up and not killed. */
  live(): string[] {
    return this.#slots.flatMap((s) => (s.proc && s.proc.child.exitCode === null && s.proc.child.signalCode === null ? [s.proc.url] : []));
  }

  isUp(slot: number): boolean {
    const s = this.#slots[slot]!;
    return s.proc !== undefined && s.proc.child.exitCode === null && s.proc.child.signalCode === null;
  }

  /** Starts the slot's process unless one is up or starting; retries a failed start a few times. */
  start(slot: number): Promise<void> {
    const s = this.#slots[slot]!;
    if (this.isUp(slot)) return Promise.resolve();
    s.starting ??= (async () => {
      try {
        for (let attempt = 1; !this.#closed; attempt++) {
          try {
            const proc = await startCoordinatorProcess(this.#env);
            this.all.push(proc);
            if (this.#closed) {
              await proc.kill('SIGKILL');
              return;
            }
            s.proc = proc;
            const pid = proc.child.pid;
            let stderrTail = '';
            proc.child.stderr?.on('data', (d: Buffer) => {
              stderrTail = (stderrTail + d.toString()).slice(-2_000);
            });
            void proc.exited.then((code) => {
              if (this.#killedByUs.has(proc)) return;
              const lastLogs = proc.logs
                .slice(-5)
                .map((l) => JSON.stringify(l))
                .join('\n');
              const what = `coordinator ${pid} (slot ${slot}) exited on its own: code ${code}, signal ${proc.child.signalCode}\n${stderrTail}\n${lastLogs}`;
              this.unexpectedExits.push(what);
              this.#log(what);
            });
            this.#log(`slot ${slot}: coordinator ${pid} listening at ${proc.url}`);
            return;
          } catch (err) {
            const msg = `slot ${slot}: start attempt ${attempt} failed: ${(err as Error).message.slice(0, 500)}`;
            this.startFailures.push(msg);
            this.#log(msg);
            if (attempt >= 5) throw err;
            await sleep(500);
          }
        }
      } finally {
        s.starting = undefined;
      }
    })();
    return s.starting;
  }

  /** SIGKILL of the slot's process; resolves once it is gone. */
  async kill(slot: number): Promise<void> {
    const s = this.#slots[slot]!;
    const proc = s.proc;
    s.proc = undefined;
    if (!proc) return;
    this.#killedByUs.add(proc);
    this.#log(`slot ${slot}: SIGKILL coordinator ${proc.child.pid}`);
    await proc.kill('SIGKILL');
  }

  /** Waits until every slot has a live process (bounded). */
  async allUp(limitMs: number): Promise<void> {
    const until = Date.now() + limitMs;
    for (;;) {
      await Promise.allSettled(this.#slots.map((_, i) => this.start(i)));
      if (this.#slots.every((_, i) => this.isUp(i))) return;
      if (Date.now() > until) throw new Error('coordinators did not all come up');
      await sleep(200);
    }
  }

  /** Stops every process: SIGTERM, then SIGKILL for any still running after `graceMs`. */
  async close(graceMs = 5_000): Promise<void> {
    this.#closed = true;
    await Promise.allSettled(this.#slots.map((s) => s.starting));
    for (const proc of this.all) this.#killedByUs.add(proc);
    await Promise.allSettled(
      this.all.map(async (proc) => {
        if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
        proc.child.kill('SIGTERM');
        const done = await Promise.race([proc.exited.then(() => true), sleep(graceMs, false)]);
        if (!done) await proc.kill('SIGKILL');
      }),
    );
  }
}
