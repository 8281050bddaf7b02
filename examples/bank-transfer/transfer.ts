import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';

/** One side of a transfer: an account on one of the coordinator's resources. */
export interface AccountRef {
  bank: string;
  account: number;
}

export interface TransferOutcome {
  id: string;
  status: 'committed' | 'aborted';
  /** Why it aborted (the branch, the statement, the code), or null. */
  error: { resource: string | null; statement: number | null; code: string; message: string } | null;
}

/** The coordinator refused the request itself (bad input, bad token): retrying the same will not help. */
export class RequestRefused extends Error {
  constructor(
    readonly status: number,
    readonly problem: { type?: string; detail?: string },
  ) {
    super(`${status} ${problem.type ?? ''}: ${problem.detail ?? ''}`);
  }
}

/** The part of the coordinator's JSON answer this client reads. */
interface Answer {
  id: string;
  status: TransferOutcome['status'];
  error?: TransferOutcome['error'];
  detail?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Moves `amount` between two accounts on two databases, all or nothing, and returns a definite
 * outcome. What a careful client does: one Idempotency-Key for every attempt, so that a request
 * whose answer was lost (the network, a coordinator restart) can be sent again without moving the
 * money twice; a 202 (decided, phase 2 still running) is followed until it is final.
 */
export async function transfer(
  baseUrl: string,
  token: string | undefined,
  from: AccountRef,
  to: AccountRef,
  amount: number,
  options: { idempotencyKey?: string; timeoutMs?: number; giveUpAfterMs?: number } = {},
): Promise<TransferOutcome> {
  const key = options.idempotencyKey ?? `transfer-${randomUUID()}`;
  const headers: Record<string, string> = { 'content-type': 'application/json', 'idempotency-key': key };
  if (token) headers.authorization = `Bearer ${token}`;
  const body = JSON.stringify({
    branches: [
      {
        resource: from.bank,
        statements: [
          { sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1', params: [amount, from.account], expect: { rowCount: 1 } },
        ],
      },
      {
        resource: to.bank,
        statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [amount, to.account], expect: { rowCount: 1 } }],
      },
    ],
    timeoutMs: options.timeoutMs ?? 10_000,
  });
  const giveUpAt = Date.now() + (options.giveUpAfterMs ?? 60_000);
  for (let wait = 200; ; wait = Math.min(wait * 2, 2_000)) {
    let res: Response | null = null;
    try {
      res = await fetch(`${baseUrl}/v1/transactions`, { method: 'POST', headers, body, signal: AbortSignal.timeout(30_000) });
    } catch {
      // No answer: the transfer may or may not have happened. The same key makes asking again safe.
    }
    if (res) {
      const answer = (await res.json()) as Answer;
      if (res.status === 201 || res.status === 409) return { id: answer.id, status: answer.status, error: answer.error ?? null };
      if (res.status === 202) return follow(baseUrl, headers, answer.id as string, giveUpAt);
      if (res.status !== 503) throw new RequestRefused(res.status, answer);
    }
    if (Date.now() > giveUpAt) throw new Error(`no definite answer for ${key}; ask again later with the same Idempotency-Key`);
    await sleep(wait);
  }
}

/** The commit is decided; phase 2 finishes in the background. Asks until it is final. */
async function follow(baseUrl: string, headers: Record<string, string>, id: string, giveUpAt: number): Promise<TransferOutcome> {
  for (;;) {
    const res = await fetch(`${baseUrl}/v1/transactions/${id}`, { headers }).catch(() => null);
    const tx = res?.ok ? ((await res.json()) as Answer) : null;
    if (tx && (tx.status === 'committed' || tx.status === 'aborted')) return { id, status: tx.status, error: tx.error ?? null };
    if (Date.now() > giveUpAt) return { id, status: 'committed', error: null }; // decided: it will complete
    await sleep(500);
  }
}

function parseAccount(arg: string | undefined): AccountRef {
  const m = /^([A-Za-z][\w-]*):(\d+)$/.exec(arg ?? '');
  if (!m) throw new Error(`expected bank:account, e.g. bank_a:1, got ${JSON.stringify(arg)}`);
  return { bank: m[1]!, account: Number(m[2]) };
}

// node --import tsx examples/bank-transfer/transfer.ts bank_a:1 bank_b:7 100   (TPC_URL, TPC_TOKEN from the environment)
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [from, to, amount] = process.argv.slice(2);
  const outcome = await transfer(process.env.TPC_URL ?? 'http://127.0.0.1:8080', process.env.TPC_TOKEN, parseAccount(from), parseAccount(to), Number(amount));
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
  process.exitCode = outcome.status === 'committed' ? 0 : 3;
}
