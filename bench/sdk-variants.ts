/*
 * Variants (g), (h) and (k): the same transfer written as a service would write it with the SDK,
 * through its public API only (`createClient`, `createCoordinator`, `tx.branch()`, `submit` and Kysely):
 *   (g) the SDK over REST, against the coordinator that (c) drives (its child process by default);
 *   (h) the SDK with an embedded coordinator (`createCoordinator`) inside the benchmark process, with
 *       its own pools to the same log and banks, the same Redis, and a namespace of its own (its gids,
 *       queues and log rows never meet (c)'s);
 *   (k) the same embedded coordinator given the transfer whole (`tpc.submit`, (c)'s very body): each
 *       branch in one flight on the coordinator's own pools, as (b) does, with no HTTP.
 * The SDK's branches run on the benchmark's own bank pools, the same ones (a) and (b) use: they are
 * "the service's pools". The SDK is imported from the checkout under test (--coordinator-root), as
 * the in-process coordinator is, so that a before/after run measures one revision's SDK.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Generated } from 'kysely';
import type { EmbeddedCoordinator, TpcClient } from '../coordinator/sdk/index.ts';
import { statementsOf, type Variant, type Transfer } from './variants.ts';
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
 * The embedded coordinator (h) and (k) share when both run: one set of workers and pools in the
 * benchmark process, whose idle work would otherwise be counted in the other's rounds. Closed when
 * the last of them closes.
 */
interface SharedEmbedded {
  coordinator: Promise<EmbeddedCoordinator>;
  users: number;
  closing?: Promise<void>;
}
const embeddedByWorld = new WeakMap<World, SharedEmbedded>();

function closeShared(shared: SharedEmbedded): Promise<void> {
  shared.closing ??= shared.coordinator.then((c) => c.close());
  return shared.closing;
}

function embeddedCoordinator(world: World, sdk: SdkModule): { coordinator: Promise<EmbeddedCoordinator>; release: () => Promise<void> } {
  let shared = embeddedByWorld.get(world);
  if (!shared || shared.closing) {
    const made: SharedEmbedded = { coordinator: sdk.createCoordinator(world.coordinatorEnv(EMBEDDED_NAMESPACE)), users: 0 };
    world.addCleanup(() => closeShared(made)); // a crash mid-run still stops its workers and pools
    embeddedByWorld.set(world, made);
    shared = made;
  }
  const held = shared;
  held.users++;
  let released = false;
  return {
    coordinator: held.coordinator,
    // Lets the transactions in hand finish: anything still prepared afterwards is a finding.
    release: async () => {
      if (released) return;
      released = true;
      if (--held.users === 0) await closeShared(held);
    },
  };
}

/**
 * (h): the coordinator embedded in this process. Its engine, workers and pools run on the
 * benchmark's event loop, so its CPU is counted as "bench process" (cpu.ts cannot tell them
 * apart); the label says so, and the report compares (h) with (b) on the whole transaction's CPU.
 */
export async function sdkEmbedded(world: World): Promise<Variant> {
  const sdk = await loadSdk(world.coordinator.root);
  const { coordinator, release } = embeddedCoordinator(world, sdk);
  const tpc = sdk.createClient({ coordinator: await coordinator, resources: world.banks });
  return {
    name: 'h',
    label: 'SDK, embedded coordinator (its CPU: bench process)',
    run: async (tx) => {
      await transfer(tpc, tx);
      return undefined;
    },
    close: release,
  };
}

/**
 * (k): the embedded coordinator given the transfer whole, the body (c) posts, through `tpc.submit`.
 * Its branches run on the coordinator's own pools; the answer must be `committed`, as (c)'s must.
 */
export async function sdkEmbeddedSubmit(world: World): Promise<Variant> {
  const sdk = await loadSdk(world.coordinator.root);
  const { coordinator, release } = embeddedCoordinator(world, sdk);
  const tpc = sdk.createClient({ coordinator: await coordinator, resources: {} });
  if (typeof (tpc as Partial<TpcClient>).submit !== 'function')
    throw new Error(`the SDK at ${world.coordinator.root} has no submit: (k) needs a later revision`);
  return {
    name: 'k',
    label: 'SDK submit, embedded coordinator (its CPU: bench process)',
    run: async (tx) => {
      const outcome = await tpc.submit({
        branches: statementsOf(tx).map((s) => ({ resource: s.bank, statements: [{ sql: s.sql, params: s.params, expect: { rowCount: 1 } }] })),
        timeoutMs: 10_000,
      });
      if (outcome.status !== 'committed') throw new Error(`status ${outcome.status} (transaction ${outcome.id})`);
      return undefined;
    },
    close: release,
  };
}
