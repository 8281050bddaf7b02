import pg from 'pg';
import { DEMO_ACCOUNTS, DEMO_BALANCE } from '../embedded/local-environment.ts';

/*
 * The demo's direct view of its three bank databases, behind the coordinator's back: reset them,
 * take one offline and back, and read what they really hold for the final checks.
 */

/**
 * One row per side of every applied transfer. It is what makes "all or nothing" checkable from the
 * databases alone: a committed transfer has its id in both banks' ledgers, an aborted one in neither.
 * The account column lets the check also explain every balance, not only the totals.
 */
const LEDGER_SQL = `CREATE TABLE IF NOT EXISTS transfers (
  transfer_id text PRIMARY KEY, account int NOT NULL, amount int NOT NULL CHECK (amount > 0), delta int NOT NULL)`;

// 5 s: the banks are idle while they are reset; a lock held that long is a prepared transaction
// left by an earlier run, and failing with its name beats waiting forever.
const LOCK_TIMEOUT = '5s';

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  // Bounded: a bank taken offline must make a check fail, not hang it.
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000, query_timeout: 30_000 });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

/** The prepared transactions that a bank's database holds (pg_prepared_xacts is cluster-wide). */
export async function preparedOn(url: string): Promise<string[]> {
  return withClient(url, async (c) =>
    (await c.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid')).rows.map((r) => r.gid),
  );
}

/** Every balance back to its opening amount and an empty ledger, in one transaction per bank. */
export async function resetBanks(banks: Readonly<Record<string, string>>): Promise<void> {
  for (const [bank, url] of Object.entries(banks)) {
    await withClient(url, async (c) => {
      try {
        await c.query('BEGIN');
        await c.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
        await c.query(LEDGER_SQL);
        await c.query('TRUNCATE transfers');
        await c.query('UPDATE accounts SET balance = $1', [DEMO_BALANCE]);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        const prepared = await preparedOn(url).catch(() => []);
        const hint = prepared.length ? ` (prepared transactions hold its rows: ${prepared.join(', ')})` : '';
        throw new Error(`cannot reset ${bank}${hint}: ${(err as Error).message}`, { cause: err });
      }
    });
  }
}

/**
 * A database going away with one cluster for every bank: new connections are refused and the
 * open sessions are cut, as if its server had stopped, while its prepared transactions stay (they
 * are on disk, as they would be across a real restart). Superusers are refused too.
 */
export async function setBankOnline(adminUrl: string, bank: string, online: boolean): Promise<number> {
  if (!/^[a-z_][a-z0-9_]*$/.test(bank)) throw new Error(`bad database name ${bank}`);
  return withClient(adminUrl, async (c) => {
    await c.query(`ALTER DATABASE ${bank} ALLOW_CONNECTIONS ${online ? 'true' : 'false'}`);
    if (online) return 0;
    // After the ALTER, so that no session can slip in between the cut and the refusal.
    const cut = await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [bank]);
    return cut.rowCount ?? 0;
  });
}

/** What a bank holds at the end: its balances, its ledger and its prepared transactions. */
export interface BankState {
  bank: string;
  balances: Map<number, number>;
  /** transfer id → the ledger row of this bank's side. */
  ledger: Map<string, { account: number; amount: number; delta: number }>;
  prepared: string[];
}

export async function readBank(bank: string, url: string): Promise<BankState> {
  return withClient(url, async (c) => {
    // One snapshot, so that balances and ledger are read at the same instant.
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const balances = await c.query<{ id: number; balance: number }>('SELECT id, balance FROM accounts ORDER BY id');
    const ledger = await c.query<{ transfer_id: string; account: number; amount: number; delta: number }>(
      'SELECT transfer_id, account, amount, delta FROM transfers',
    );
    const prepared = await c.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid');
    await c.query('COMMIT');
    return {
      bank,
      balances: new Map(balances.rows.map((r) => [r.id, r.balance])),
      ledger: new Map(ledger.rows.map((r) => [r.transfer_id, { account: r.account, amount: r.amount, delta: r.delta }])),
      prepared: prepared.rows.map((r) => r.gid),
    };
  });
}

/** The money every bank holds after a reset: the amount that must still be there at the end. */
export const OPENING_TOTAL_PER_BANK = DEMO_ACCOUNTS * DEMO_BALANCE;
