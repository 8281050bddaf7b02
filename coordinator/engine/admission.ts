import { performance } from 'node:perf_hooks';
import { OverloadedError } from '../errors.ts';

/*
 * Admission control: a transaction starts only when every resource it names has a free slot.
 *
 * A branch holds a pooled connection until PREPARE and a prepared-transaction slot of its cluster
 * (max_prepared_transactions, shared by every database of the cluster) until phase 2. Without a
 * bound, every request in flight opens its branches at once: under a few hundred clients the
 * cluster's slots run out, PREPAREs fail with 53200 and everything aborts after doing its work
 * (measured: commits fell from 376/s to 17/s at 300 clients). So each resource gets a number of
 * slots (its pool, and its share of its cluster's free prepared slots), a transaction takes all of
 * its slots at once or none, and what does not fit waits briefly in a bounded queue, then is
 * refused fast with a time to come back.
 *
 * Taking every slot at once (never holding some while waiting for others) means two transactions
 * over the same resources cannot each hold what the other waits for: no deadlock. Waiters are
 * served first come first served among those that can proceed: one waiting for a busy resource does
 * not hold back a later one whose resources are free. A waiter that keeps losing to such later ones
 * is refused when its wait ends, which is bounded; it is never starved for longer than that.
 */

export type RefusalReason = OverloadedError['reason'];

// 1 s: the smallest delay Retry-After can express (whole seconds). The bounded wait has already
// absorbed bursts shorter than that; a client told to come back sooner would find the same queue.
export const RETRY_AFTER_SECONDS = 1;

// 100 ms: below this, time before admission is ordinary request handling, not a queue; a client
// that asks for a deadline of a few milliseconds gets its transaction tried (and a 409 at the
// deadline), as it asked, rather than an overload refusal with free slots.
const LATE_AFTER_MS = 100;

/** What admission reports for metrics; implemented by coordinator/observability. */
export interface AdmissionObserver {
  /** Time a transaction spent waiting for its slots (0 when admitted at once), by outcome. */
  waited(seconds: number, outcome: 'admitted' | 'refused'): void;
  refused(resource: string, reason: RefusalReason): void;
}

export interface AdmissionOptions {
  /** Longest wait for slots (TPC_ADMISSION_WAIT_MS); never more than half the transaction's timeout. */
  waitMs: number;
  /** Most transactions waiting at once (TPC_ADMISSION_QUEUE); beyond it, refusal is immediate. */
  queueLimit: number;
  observer?: AdmissionObserver;
  /**
   * The capacity known for `cluster` may be stale: a PREPARE there met 53200, or a transaction was
   * refused there while others held some of its slots (they may have let go since). The service
   * re-reads it (debounced).
   */
  onStale?: (cluster: string) => void;
}

/** The slots a transaction holds; release() gives them back (idempotent). */
export interface AdmissionTicket {
  release(): void;
}

export interface ResourceSlotsView {
  resource: string;
  inUse: number;
  /** Effective bound: its own slots, or fewer when its cluster has fewer free prepared slots. */
  capacity: number;
}

class SlotPool {
  inUse = 0;
  constructor(
    readonly label: string,
    public capacity: number,
  ) {}
}

class ClusterSlots extends SlotPool {
  /** Unknown until the first reading: then only the resources' own slots bound the cluster. */
  maxPrepared: number | null = null;
  /** Prepared transactions on the cluster held by anyone but this process (other coordinators, SDK services, orphans). */
  foreign = 0;
}

interface Waiter {
  resources: readonly string[];
  demand: Map<SlotPool, number>;
  gids: readonly string[];
  since: number;
  timer: NodeJS.Timeout;
  resolve: (ticket: AdmissionTicket) => void;
  reject: (err: OverloadedError) => void;
}

export class Admission {
  readonly #options: AdmissionOptions;
  readonly #resources = new Map<string, { own: SlotPool; cluster: ClusterSlots | null }>();
  readonly #clusters = new Map<string, ClusterSlots>();
  /** Branch gids of the transactions holding slots: what a cluster reading must not count as someone else's. */
  readonly #held = new Set<string>();
  #queue: Waiter[] = [];

  constructor(options: AdmissionOptions) {
    this.#options = options;
  }

  /**
   * Declares a resource: `slots` branches of this process at once, on `cluster` (its host:port;
   * null when its prepared slots are not visible here, as behind a participant router).
   */
  addResource(name: string, slots: number, cluster: string | null): void {
    let shared: ClusterSlots | null = null;
    if (cluster !== null) {
      shared = this.#clusters.get(cluster) ?? new ClusterSlots(cluster, Number.POSITIVE_INFINITY);
      this.#clusters.set(cluster, shared);
    }
    this.#resources.set(name, { own: new SlotPool(name, slots), cluster: shared });
  }

  clusterOf(resource: string): string | null {
    return this.#resources.get(resource)?.cluster?.label ?? null;
  }

  /** Gids this process holds slots for now (a reading of pg_prepared_xacts excludes them). */
  heldGids(): Set<string> {
    return new Set(this.#held);
  }

  /**
   * A fresh reading of a cluster: `max_prepared_transactions` and the gids prepared there now by
   * anyone. Those of this process's admitted transactions are its own slots, already counted.
   */
  setClusterReading(cluster: string, maxPrepared: number, preparedGids: readonly string[]): void {
    const c = this.#clusters.get(cluster);
    if (!c) return;
    c.maxPrepared = maxPrepared;
    c.foreign = preparedGids.filter((g) => !this.#held.has(g)).length;
    c.capacity = Math.max(0, maxPrepared - c.foreign);
    this.#drain(); // capacity may have grown
  }

  /** Slots in use and the effective bound per resource, and how many wait (for the gauges). */
  snapshot(): { resources: ResourceSlotsView[]; waiting: number } {
    return {
      resources: [...this.#resources].map(([resource, { own, cluster }]) => ({
        resource,
        inUse: own.inUse,
        capacity: Math.min(own.capacity, cluster ? cluster.capacity : Number.POSITIVE_INFINITY),
      })),
      waiting: this.#queue.length,
    };
  }

  /**
   * Takes one slot per branch (resource i for branch gid i), all at once, waiting at most the
   * configured wait (and, with the `queuedMs` the request already spent in this process before it
   * got here, at most half of `timeoutMs`, so an admitted transaction keeps most of its time for
   * its work). Refuses with OverloadedError, which changes nothing.
   */
  acquire(resources: readonly string[], gids: readonly string[], timeoutMs: number, queuedMs = 0): Promise<AdmissionTicket> {
    const demand = this.#demandOf(resources);
    const since = performance.now();
    const never = this.#blocking(resources, demand, true);
    if (never) return Promise.reject(this.#refusal(never, 'no_capacity', since));
    if (queuedMs >= LATE_AFTER_MS && queuedMs > timeoutMs / 2) {
      // Half its time went before the engine saw it (a burst queued in the event loop): admitted
      // now, it would likely be answered after its deadline; refused, the client retries in time.
      const own = { resource: resources[0]!, pool: this.#resources.get(resources[0]!)!.own };
      return Promise.reject(this.#refusal(this.#blocking(resources, demand, false) ?? own, 'wait_timeout', since));
    }
    if (this.#fits(demand)) return Promise.resolve(this.#grant(demand, gids, since));
    const waitMs = Math.min(this.#options.waitMs, Math.floor(timeoutMs / 2 - Math.max(0, queuedMs)));
    const full = this.#queue.length >= this.#options.queueLimit;
    if (waitMs <= 0 || full) {
      return Promise.reject(this.#refusal(this.#blocking(resources, demand, false)!, full ? 'queue_full' : 'wait_timeout', since));
    }
    return new Promise<AdmissionTicket>((resolve, reject) => {
      const waiter: Waiter = {
        resources,
        demand,
        gids,
        since,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#queue = this.#queue.filter((w) => w !== waiter);
          const blocked = this.#blocking(resources, demand, false) ?? { resource: resources[0]!, pool: this.#resources.get(resources[0]!)!.own };
          reject(this.#refusal(blocked, 'wait_timeout', since));
        }, waitMs),
      };
      this.#queue.push(waiter);
    });
  }

  /**
   * The refusal any submission would get now, before its body is even read: the queue is full and
   * no resource has a free slot, so whatever it names it would be refused as queue_full once parsed.
   * Under 1000 clients most requests are refused; refusing them this early spares the parsing and
   * validation that would be thrown away, which is CPU the admitted transactions need. Null otherwise.
   */
  shed(): OverloadedError | null {
    if (this.#queue.length < this.#options.queueLimit) return null;
    for (const { own, cluster } of this.#resources.values()) {
      if (own.inUse < own.capacity && (!cluster || cluster.inUse < cluster.capacity)) return null;
    }
    const head = this.#queue[0];
    const blocked = head ? this.#blocking(head.resources, head.demand, false) : null;
    const [first] = this.#resources;
    if (!blocked && !first) return null;
    return this.#refusal(blocked ?? { resource: first![0], pool: first![1].own }, 'queue_full', performance.now());
  }

  /**
   * A PREPARE on `resource` met 53200 although a slot was reserved for it: someone else (another
   * coordinator, an SDK service) filled the cluster since the last reading.
   */
  exhausted(resource: string): void {
    this.#options.observer?.refused(resource, 'prepare_refused');
    const cluster = this.clusterOf(resource);
    if (cluster !== null) this.#options.onStale?.(cluster);
  }

  #demandOf(resources: readonly string[]): Map<SlotPool, number> {
    const demand = new Map<SlotPool, number>();
    for (const r of resources) {
      const slots = this.#resources.get(r);
      if (!slots) throw new Error(`admission knows no resource "${r}"`);
      demand.set(slots.own, (demand.get(slots.own) ?? 0) + 1);
      if (slots.cluster) demand.set(slots.cluster, (demand.get(slots.cluster) ?? 0) + 1);
    }
    return demand;
  }

  #fits(demand: Map<SlotPool, number>): boolean {
    for (const [pool, n] of demand) if (pool.inUse + n > pool.capacity) return false;
    return true;
  }

  /** The first resource whose slots (its own, or its cluster's) lack room now, or ever (`ever`: more than exist). */
  #blocking(resources: readonly string[], demand: Map<SlotPool, number>, ever: boolean): { resource: string; pool: SlotPool } | null {
    for (const resource of resources) {
      const { own, cluster } = this.#resources.get(resource)!;
      for (const pool of cluster ? [own, cluster] : [own]) {
        const n = demand.get(pool)!;
        if (ever ? n > pool.capacity : pool.inUse + n > pool.capacity) return { resource, pool };
      }
    }
    return null;
  }

  #grant(demand: Map<SlotPool, number>, gids: readonly string[], since: number): AdmissionTicket {
    for (const [pool, n] of demand) pool.inUse += n;
    for (const g of gids) this.#held.add(g);
    this.#options.observer?.waited((performance.now() - since) / 1000, 'admitted');
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        for (const [pool, n] of demand) pool.inUse -= n;
        for (const g of gids) this.#held.delete(g);
        this.#drain();
      },
    };
  }

  /** Admits, in arrival order, every waiter whose slots are all free now. */
  #drain(): void {
    if (this.#queue.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.#queue) {
      if (this.#fits(w.demand)) {
        clearTimeout(w.timer);
        w.resolve(this.#grant(w.demand, w.gids, w.since));
      } else {
        still.push(w);
      }
    }
    this.#queue = still;
  }

  #refusal(blocked: { resource: string; pool: SlotPool }, reason: RefusalReason, since: number): OverloadedError {
    const { resource, pool } = blocked;
    this.#options.observer?.waited((performance.now() - since) / 1000, 'refused');
    this.#options.observer?.refused(resource, reason);
    const why =
      pool instanceof ClusterSlots
        ? `the cluster ${pool.label} of resource "${resource}" has ${pool.inUse} of ${pool.capacity} prepared-transaction slots in use by this coordinator` +
          (pool.maxPrepared === null ? '' : ` (max_prepared_transactions ${pool.maxPrepared}, ${pool.foreign} held by others)`)
        : `resource "${resource}" has ${pool.inUse} of its ${pool.capacity} slots in use`;
    const lead =
      reason === 'queue_full'
        ? `the admission queue is full (${this.#queue.length} waiting) and `
        : reason === 'wait_timeout'
          ? 'no slot freed within the admission wait: '
          : 'the transaction needs more slots than there are: ';
    // Others holding slots may have let go: have the reading refreshed, so capacity comes back.
    if (pool instanceof ClusterSlots && (pool.foreign > 0 || reason === 'no_capacity')) this.#options.onStale?.(pool.label);
    return new OverloadedError(`${lead}${why}; nothing was applied, retry after ${RETRY_AFTER_SECONDS} s`, resource, reason, RETRY_AFTER_SECONDS);
  }
}
