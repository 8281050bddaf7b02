import type { GlobalTransaction } from 'pg-2pc-coordinator';

/** The banks' accounts table (world.ts creates it), as an SDK branch's Kysely sees it. */
export interface BankDB {
  accounts: { id: number; balance: number };
}

/**
 * Inside an SDK transaction: moves `amount` from account `id` on bank_a to the same account on
 * bank_c, one statement on each branch in turn. Returns the two branches' Kysely handles, for a
 * test that asks more of them.
 */
export async function moveOnBranches(tx: GlobalTransaction, id: number, amount: number) {
  const a = await tx.branch<BankDB>('bank_a');
  const c = await tx.branch<BankDB>('bank_c');
  await a
    .updateTable('accounts')
    .set((eb) => ({ balance: eb('balance', '-', amount) }))
    .where('id', '=', id)
    .execute();
  await c
    .updateTable('accounts')
    .set((eb) => ({ balance: eb('balance', '+', amount) }))
    .where('id', '=', id)
    .execute();
  return { a, c };
}
