/*
 * Variants (g) and (h): the same transfer written as a service would write it with the SDK, through
 * its public API only (`createClient`, `createCoordinator`, `tx.branch()` and Kysely):
 *   (g) the SDK over REST, against the coordinator that (c) drives (its child process by default);
 *   (h) the SDK with an embedded coordinator (`createCoordinator`) inside the benchmark process, with
 *       its own pools to the same log and banks, the same Redis, and a namespace of its own (its gids,
 *       queues and log rows never meet (c)'s).
 * The SDK's branches run on the benchmark's own bank pools, the same ones (a) and (b) use: they are
 * "the service's pools". The SDK is imported from the checkout under test (--coordinator-root), as
 * the in-process coordinator is, so that a before/after run measures one revision's SDK.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Generated } from 'kysely';
import type { TpcClient } from '../coordinator/sdk/index.ts';
import type { Variant, Transfer } from './variants.ts';
import { NAMESPACE, type World } from './world.ts';

type SdkModule = typeof import('../coordinator/sdk/index.ts');

/** The banks' tables (world.ts creates them), as the callback's Kysely sees them. */
interface BankDB {
  accounts: { id: number; balance: number };
  audit: { id: Generated<string>; src: number; dst: number; amount: number; at: Generated<Date> };
}

/** (h)'s namespace: its gids are `tpc:bench-embedded:…`, apart from (c)'s `tpc:bench:…`. */
export const EMBEDDED_NAMESPACE = `${NAMESPACE}-embedded`;

async function loadSdk(root: string): Promise<SdkModule> {
  return (await import(pathToFileURL(join(root, 'coordinator/sdk/index.ts')).href)) as SdkModule;
}

/**
 * One transfer as application code: the three branches opened and the three statements run in
 * parallel (as (a), (b) and the service do), each statement checked to have touched exactly one
 * row (a throw rolls every branch back), and the outcome checked to be `committed`, as (c) checks
 * its answer. A `committing` outcome (decided, phase 2 still running) counts as an error here, as
 * a 202 does for (c): the run then says so rather than counting a transfer not yet applied.
 */
async function transfer(tpc: TpcClient, t: Transfer): Promise<void> {
  const { outcome } = await tpc.transaction(
    async (tx) => {
      const [debit, credit, audit] = await Promise.all([tx.branch<BankDB>(t.debit), tx.branch<BankDB>(t.credit), tx.branch<BankDB>(t.audit)]);
      const [d, c, a] = await Promise.all([
        debit
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', t.amount) }))
          .where('id', '=', t.from)
          .executeTakeFirst(),
        credit
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '+', t.amount) }))
          .where('id', '=', t.to)
          .executeTakeFirst(),
        audit.insertInto('audit').values({ src: t.from, dst: t.to, amount: t.amount }).executeTakeFirst(),
      ]);
      if (d.numUpdatedRows !== 1n) throw new Error(`${t.debit}: ${d.numUpdatedRows} rows debited, expected 1`);
      if (c.numUpdatedRows !== 1n) throw new Error(`${t.credit}: ${c.numUpdatedRows} rows credited, expected 1`);
      if (a.numInsertedOrUpdatedRows !== 1n) throw new Error(`${t.audit}: ${a.numInsertedOrUpdatedRows} audit rows, expected 1`);
    },
    { timeoutMs: 10_000 },
  );
  if (outcome.status !== 'committed') throw new Error(`status ${outcome.status} (transaction ${outcome.id})`);
}

/** (g): the SDK's client over REST to the coordinator (c) drives. */
export async function sdkOverRest(world: World): Promise<Variant> {
  const sdk = await loadSdk(world.coordinator.root);
  const tpc = sdk.createClient({ url: world.coordinator.url, resources: world.banks });
  return {
    name: 'g',
    label: world.baseline ? `SDK ${world.coordinator.revision} over REST` : 'SDK over REST',
    // No serviceUrl: the service's phase histograms time its own steps of a REST submission; for an
    // interactive transaction the SDK does the work and the prepares, so (c)'s step table would mislead.
    run: async (tx) => {
      await transfer(tpc, tx);
      return undefined;
    },
    close() {},
  };
}

/**
 * (h): the coordinator embedded in this process. Its engine, workers and pools run on the
 * benchmark's event loop, so its CPU is counted as "bench process" (cpu.ts cannot tell them
 * apart); the label says so, and the report compares (h) with (b) on the whole transaction's CPU.
 */
export async function sdkEmbedded(world: World): Promise<Variant> {
  const sdk = await loadSdk(world.coordinator.root);
  const coordinator = await sdk.createCoordinator(world.coordinatorEnv(EMBEDDED_NAMESPACE));
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= coordinator.close());
  world.addCleanup(close); // a crash mid-run still stops its workers and pools
  const tpc = sdk.createClient({ coordinator, resources: world.banks });
  return {
    name: 'h',
    label: 'SDK, embedded coordinator (its CPU: bench process)',
    run: async (tx) => {
      await transfer(tpc, tx);
      return undefined;
    },
    // Lets the transactions in hand finish: anything still prepared afterwards is a finding.
    close,
  };
}
