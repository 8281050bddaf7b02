import { Agent, request } from 'node:http';
import { bareTransaction, oneFlight, type Statement } from './bare-flights.ts';
import type { VariantName } from './options.ts';
import { sdkEmbedded, sdkEmbeddedSubmit, sdkOverRest } from './sdk-variants.ts';
import type { Bank, World } from './world.ts';

/** One transfer: a debit on one bank, a credit on another, an audit row on the third. */
export interface Transfer {
  debit: Bank;
  credit: Bank;
  audit: Bank;
  from: number;
  to: number;
  amount: number;
}

/** Wall time of each protocol step of one transaction (variant b measures its own). */
export interface Phases {
  prepare: number;
  decide: number;
  complete: number;
}

export interface Variant {
  name: VariantName;
  label: string;
  /** The coordinator this variant drives (its /metrics are read around each of its rounds); undefined for (a) and (b). */
  serviceUrl?: string;
  run(tx: Transfer): Promise<Phases | undefined>;
  /** Frees what the variant holds; (h) stops its embedded coordinator, which lets its transactions finish first. */
  close(): void | Promise<void>;
}

const PERMUTATIONS: [Bank, Bank, Bank][] = [
  ['bank_a', 'bank_b', 'bank_c'],
  ['bank_a', 'bank_c', 'bank_b'],
  ['bank_b', 'bank_a', 'bank_c'],
  ['bank_b', 'bank_c', 'bank_a'],
  ['bank_c', 'bank_a', 'bank_b'],
  ['bank_c', 'bank_b', 'bank_a'],
];

/** Random banks (every bank plays every role equally often) and random accounts over `accounts` rows. */
export function randomTransfer(accounts: number): Transfer {
  const [debit, credit, audit] = PERMUTATIONS[Math.floor(Math.random() * PERMUTATIONS.length)]!;
  const pick = () => 1 + Math.floor(Math.random() * accounts);
  return { debit, credit, audit, from: pick(), to: pick(), amount: 1 + Math.floor(Math.random() * 100) };
}

export function statementsOf(tx: Transfer): Statement[] {
  return [
    { bank: tx.debit, sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', params: [tx.amount, tx.from] },
    { bank: tx.credit, sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [tx.amount, tx.to] },
    { bank: tx.audit, sql: 'INSERT INTO audit (src, dst, amount) VALUES ($1, $2, $3)', params: [tx.from, tx.to, tx.amount] },
  ];
}

/** (a) The same writes committed non-atomically: BEGIN; statement; COMMIT on each bank, in parallel. */
function baseline(world: World): Variant {
  return {
    name: 'a',
    label: 'non-atomic (3 local commits)',
    async run(tx) {
      const results = await Promise.all(statementsOf(tx).map((s) => oneFlight(world.banks[s.bank], s, 'COMMIT', 'COMMIT')));
      const failed = results.find((r) => r.error !== undefined);
      if (failed) throw failed.error;
      return undefined;
    },
    close() {},
  };
}

let gidCounter = 0;

/**
 * (b) The floor of 2PC here: prepare every branch in parallel, one forced log insert, commit prepared
 * in parallel. (i), `interactive`: each branch prepared once its statement has answered (twoFlights).
 */
function bareProtocol(world: World, interactive = false): Variant {
  const runId = `${Date.now().toString(36)}${interactive ? 'i' : ''}`;
  const pools = { banks: world.banks, log: world.benchLog };
  return {
    name: interactive ? 'i' : 'b',
    label: interactive ? 'bare 2PC, interactive' : 'bare 2PC, inline',
    run(tx) {
      return bareTransaction(pools, statementsOf(tx), `${runId}-${++gidCounter}`, interactive);
    },
    close() {},
  };
}

/**
 * (c) The coordinator through its REST API, over keep-alive HTTP/1.1 connections (one per client); (d) the same
 * against the baseline. (e) and (f) are (c) and (d) with a fresh Idempotency-Key on every request: the service
 * forces a keyed begin record and waits for it before touching a bank, so keyed against unkeyed, in alternating
 * rounds of one run, is what that costs. A fresh key per transfer: never a replay, always a first attempt.
 * (j) sends the same requests to bare-http-server.ts, which runs (b) behind `node:http`: the floor of
 * any REST coordinator here. It has no /metrics (`metrics` false).
 */
function service(name: 'c' | 'd' | 'e' | 'f' | 'j', label: string, baseUrl: string, concurrency: number, keyed: boolean, metrics = true): Variant {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const url = new URL('/v1/transactions', baseUrl);
  const keyPrefix = `bench-${name}-${Date.now().toString(36)}-`;
  let keys = 0;
  const post = (body: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
      if (keyed) headers['idempotency-key'] = `${keyPrefix}${++keys}`;
      const req = request(
        url,
        {
          method: 'POST',
          agent,
          headers,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  return {
    name,
    label,
    serviceUrl: metrics ? baseUrl : undefined,
    async run(tx) {
      const body = JSON.stringify({
        branches: statementsOf(tx).map((s) => ({
          resource: s.bank,
          statements: [{ sql: s.sql, params: s.params, expect: { rowCount: 1 } }],
        })),
        timeoutMs: 10_000,
      });
      const res = await post(body);
      if (res.status !== 201) throw new Error(`HTTP ${res.status}: ${res.text.slice(0, 300)}`);
      const answer = JSON.parse(res.text) as { status?: string };
      if (answer.status !== 'committed') throw new Error(`status ${answer.status}: ${res.text.slice(0, 300)}`);
      return undefined;
    },
    close() {
      agent.destroy();
    },
  };
}

export async function makeVariants(world: World, names: readonly VariantName[], concurrency: number): Promise<Variant[]> {
  const all: Record<VariantName, () => Variant | Promise<Variant>> = {
    a: () => baseline(world),
    b: () => bareProtocol(world),
    c: () => service('c', world.baseline ? `coordinator ${world.coordinator.revision}, REST` : 'coordinator, REST', world.coordinator.url, concurrency, false),
    d: () => service('d', `baseline ${world.baseline?.revision ?? '?'}, REST`, world.baseline!.url, concurrency, false),
    e: () =>
      service(
        'e',
        world.baseline ? `coordinator ${world.coordinator.revision}, REST, keyed` : 'coordinator, REST, keyed',
        world.coordinator.url,
        concurrency,
        true,
      ),
    f: () => service('f', `baseline ${world.baseline?.revision ?? '?'}, REST, keyed`, world.baseline!.url, concurrency, true),
    g: () => sdkOverRest(world),
    h: () => sdkEmbedded(world),
    i: () => bareProtocol(world, true),
    j: () => service('j', 'bare 2PC behind HTTP (node:http)', world.bareHttp!.url, concurrency, false, false),
    k: () => sdkEmbeddedSubmit(world),
  };
  const made: Variant[] = [];
  for (const n of names) made.push(await all[n]());
  return made;
}
