import { randomInt, randomUUID } from 'node:crypto';

/*
 * The demo's clients: each moves money between two accounts of two different banks, one transfer
 * at a time, and asks again with the same Idempotency-Key until it gets a definite answer. The
 * key is what makes asking again safe when the coordinator died with the request in its hands.
 */

export type Outcome = 'committed' | 'aborted';

export interface Transfer {
  /** The transfer id: its Idempotency-Key and its id in both banks' ledgers. */
  readonly key: string;
  readonly from: { bank: string; account: number };
  readonly to: { bank: string; account: number };
  readonly amount: number;
  /** When the first attempt was sent (ms since the epoch). */
  readonly sentAt: number;
  /** The coordinator's transaction id, from the first answer that carried one. */
  txId?: string;
  /** The definite answer: 201 → committed, 409 → aborted. */
  outcome?: Outcome;
  settledAt?: number;
  /** Why it aborted: the error code, and the bank it names. */
  abortReason?: string;
  attempts: number;
  /** Answers that break the REST contract (a 4xx other than 409, a 5xx other than 503, a 201 not committed). */
  contractBreaches: string[];
}

export interface WorkloadOptions {
  url: () => string;
  token: string;
  clients: number;
  banks: readonly string[];
  accounts: number;
  /** The transaction deadline: bounds how long a cross-database lock cycle or a dead coordinator holds a transfer. */
  timeoutMs: number;
}

// 1 to 200: enough spread that some debits find too little money and abort, as a real bank's would.
const MAX_AMOUNT = 200;
// 20 s per attempt: well beyond the deadline plus the completion wait, so a timeout means trouble.
const ATTEMPT_TIMEOUT_MS = 20_000;
// Retries start at 100 ms and double to 1 s: a restarted coordinator is found within a second.
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 1_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function transferBody(t: Transfer, timeoutMs: number): unknown {
  const ledger = 'INSERT INTO transfers (transfer_id, account, amount, delta) VALUES ($1, $2, $3, $4)';
  return {
    branches: [
      {
        resource: t.from.bank,
        statements: [
          { sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1', params: [t.amount, t.from.account], expect: { rowCount: 1 } },
          { sql: ledger, params: [t.key, t.from.account, t.amount, -t.amount], expect: { rowCount: 1 } },
        ],
      },
      {
        resource: t.to.bank,
        statements: [
          { sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [t.amount, t.to.account], expect: { rowCount: 1 } },
          { sql: ledger, params: [t.key, t.to.account, t.amount, t.amount], expect: { rowCount: 1 } },
        ],
      },
    ],
    timeoutMs,
  };
}

interface AbortError {
  code?: unknown;
  resource?: unknown;
  message?: unknown;
}

/** A short reason to count aborts by, in a reader's words where the code is one the demo provokes. */
function abortReason(error: AbortError | null | undefined): string {
  const code = typeof error?.code === 'string' ? error.code : 'unknown';
  // The only statement that can touch no row is the debit's `balance >= amount` guard.
  if (code === 'expectation_failed') return 'insufficient funds';
  // Two transfers locking the same two accounts in opposite order on two databases wait for each
  // other, which neither database can see, and the deadline ends it; or the coordinator died
  // before deciding, and recovery aborted the transfer at its deadline.
  if (code === 'deadline_exceeded') return 'deadline passed';
  const resource = typeof error?.resource === 'string' ? error.resource : undefined;
  let message = typeof error?.message === 'string' ? error.message : code;
  // "connecting on bank_c: …" once the bank is named in front is said twice.
  if (resource && message.startsWith(`${message.split(' ')[0]} on ${resource}: `)) message = message.slice(message.indexOf(': ') + 2);
  return `${resource ? `${resource}: ` : ''}${message.slice(0, 80)}`;
}

export class Workload {
  readonly #o: WorkloadOptions;
  readonly transfers: Transfer[] = [];
  /** Settle times of the last few seconds, for the rate on the display. */
  readonly #recent: number[] = [];
  #committed = 0;
  #aborted = 0;
  #stopNew = false;
  /** Ctrl-C: also cuts the attempts under way. */
  readonly #abandon = new AbortController();
  #clients: Promise<void> = Promise.resolve();
  readonly #open = new Set<Transfer>();

  constructor(options: WorkloadOptions) {
    this.#o = options;
  }

  get committed(): number {
    return this.#committed;
  }
  get aborted(): number {
    return this.#aborted;
  }
  /** Transfers sent and not yet answered definitely. */
  get inFlight(): number {
    return this.#open.size;
  }
  /** Of those, the ones that already needed more than one attempt. */
  get retrying(): number {
    return [...this.#open].filter((t) => t.attempts > 1).length;
  }
  openTransfers(): Transfer[] {
    return [...this.#open];
  }

  /** Definite outcomes per second over the last `windowMs`. */
  rate(windowMs = 2_000): number {
    const since = Date.now() - windowMs;
    while (this.#recent.length > 0 && this.#recent[0]! < since) this.#recent.shift();
    return this.#recent.length / (windowMs / 1000);
  }

  start(): void {
    this.#clients = Promise.all(Array.from({ length: this.#o.clients }, () => this.#client())).then(() => {});
  }

  /** No new transfers; resolves once every client has a definite answer for the one it holds. */
  async drain(): Promise<void> {
    this.#stopNew = true;
    await this.#clients;
  }

  /** Ctrl-C: stop asking, even without an answer (the log and recovery still settle each one). */
  abandon(): void {
    this.#stopNew = true;
    this.#abandon.abort();
  }

  async #client(): Promise<void> {
    while (!this.#stopNew) {
      const [from, to] = this.#pickBanks();
      const t: Transfer = {
        key: randomUUID(),
        from: { bank: from, account: randomInt(1, this.#o.accounts + 1) },
        to: { bank: to, account: randomInt(1, this.#o.accounts + 1) },
        amount: randomInt(1, MAX_AMOUNT + 1),
        sentAt: Date.now(),
        attempts: 0,
        contractBreaches: [],
      };
      this.transfers.push(t);
      this.#open.add(t);
      await this.#untilDefinite(t);
      this.#open.delete(t);
    }
  }

  #pickBanks(): [string, string] {
    const banks = this.#o.banks;
    const i = randomInt(banks.length);
    const j = (i + 1 + randomInt(banks.length - 1)) % banks.length;
    return [banks[i]!, banks[j]!];
  }

  async #untilDefinite(t: Transfer): Promise<void> {
    const body = JSON.stringify(transferBody(t, this.#o.timeoutMs));
    for (let wait = RETRY_FIRST_MS; !this.#abandon.signal.aborted; wait = Math.min(wait * 2, RETRY_MAX_MS)) {
      t.attempts++;
      const answer = await this.#post(t.key, body);
      if (answer) {
        const b = answer.body as { id?: unknown; status?: unknown; error?: AbortError | null } | null;
        if (typeof b?.id === 'string') t.txId ??= b.id;
        if (answer.status === 201 && b?.status === 'committed') return this.#settle(t, 'committed');
        if (answer.status === 409 && b?.status === 'aborted') {
          t.abortReason = abortReason(b.error);
          return this.#settle(t, 'aborted');
        }
        // 202: decided, phase 2 still running; 503: the log is unreachable. Both: ask again.
        if (answer.status !== 202 && answer.status !== 503) {
          t.contractBreaches.push(`${answer.status} ${JSON.stringify(answer.body).slice(0, 300)}`);
          // A refusal will not change by asking again; the checks report it.
          if (answer.status < 500) return;
        }
      }
      await sleep(wait);
    }
  }

  /** One attempt; null when there was no answer (refused, cut, timed out): the outcome is unknown. */
  async #post(key: string, body: string): Promise<{ status: number; body: unknown } | null> {
    try {
      const res = await fetch(`${this.#o.url()}/v1/transactions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.#o.token}`, 'idempotency-key': key },
        body,
        signal: AbortSignal.any([AbortSignal.timeout(ATTEMPT_TIMEOUT_MS), this.#abandon.signal]),
      });
      const text = await res.text();
      let parsed: unknown = null;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text.slice(0, 300);
      }
      return { status: res.status, body: parsed };
    } catch {
      return null;
    }
  }

  #settle(t: Transfer, outcome: Outcome): void {
    t.outcome = outcome;
    t.settledAt = Date.now();
    this.#recent.push(t.settledAt);
    if (outcome === 'committed') this.#committed++;
    else this.#aborted++;
  }
}
