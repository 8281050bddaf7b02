import { parseArgs } from 'node:util';

/**
 * (e) and (f) are (c) and (d) with a fresh Idempotency-Key on every request (see variants.ts); (g) and
 * (h) run the transfer through the SDK, over REST to (c)'s coordinator and embedded (sdk-variants.ts).
 */
export type VariantName = 'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g' | 'h' | 'i' | 'j' | 'k';
const VARIANT_NAMES: readonly VariantName[] = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k'];

export interface BenchOptions {
  /** Concurrent clients (workers), the same for every variant. */
  concurrency: number;
  /** Measured rounds; each round runs every variant once, in turn (a, b, c, a, b, c, …). */
  rounds: number;
  roundMs: number;
  /** Unmeasured run of each variant before the first round (connections, caches, JIT). */
  warmupMs: number;
  /** Rows in `accounts` in each participant database. */
  accounts: number;
  /** fsync (and full_page_writes) of every cluster: 'on' measures the real cost of forced writes. */
  fsync: 'on' | 'off';
  /** Where the coordinator runs: its own Node process (default), or inside the benchmark's. */
  service: 'child' | 'inproc';
  /** Connections per database for the benchmark's pools and for the service's pools. */
  pool: number;
  variants: VariantName[];
  /** Run the coordinator's code from this directory (another checkout, e.g. the commit before a change); default this repo. */
  coordinatorRoot: string | undefined;
  /**
   * A second coordinator, from another checkout (typically the commit before a change), run as
   * variant (d) in the same world and the same rounds as (c): before/after on equal terms.
   */
  baselineRoot: string | undefined;
  /** Extra Node flags for the child coordinator (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof). */
  serviceNodeArgs: string[];
  /** The baseline's (d) Node flags instead of serviceNodeArgs, when given: the same code under other flags. */
  baselineNodeArgs: string[] | undefined;
  /** Load pg_stat_statements everywhere and report the costliest statements per database. */
  pgStatStatements: boolean;
  /** Update bench/RESULTS.md with this run's section. */
  write: boolean;
  /** The overload mode (bench/overload.ts): the calm --concurrency, then each of `overloadClients`. */
  overload: boolean;
  overloadClients: number[];
  /** Duration of each overload stage. */
  overloadMs: number;
  /**
   * The backlog mode (bench/backlog.ts): `backlogSize` transfers decided while bank_c's phase 2 is
   * cut, then bank_c restored and the drain measured; with --baseline-root, once per coordinator.
   */
  backlog: boolean;
  backlogSize: number;
  /** Rounds of the one-client latency measurement after the main one (b, c, d, h among the variants); 0: none. */
  latencyRounds: number;
}

const USAGE = `npm run bench -- [options]   (every option also reads BENCH_<NAME> from the environment)
  --concurrency N      concurrent clients                         (default 32)
  --rounds N           measured rounds of a, b, c                 (default 4)
  --round-seconds S    duration of one variant in one round       (default 5)
  --warmup-seconds S   unmeasured warm-up of each variant         (default 2)
  --accounts N         rows of accounts in each database          (default 10000)
  --fsync on|off       fsync and full_page_writes of the clusters (default on)
  --service child|inproc  run the coordinator as a child process or in this process (default child)
  --pool N             connections per database, bench and service alike (default: concurrency)
  --variants a,b,c     which variants to run                       (default a,b,c,g,h,i,j,k, plus d with --baseline-root);
                       e and f are c and d with a fresh Idempotency-Key per request (keyed begins are forced):
                       --variants c,e compares keyed and unkeyed requests in alternating rounds;
                       g is the SDK (createClient) over REST to c's coordinator, h the SDK with an embedded
                       coordinator (createCoordinator) in this process: own namespace, same log, Redis and banks;
                       i is (b) done the way an interactive caller must: PREPARE sent once the statement has answered;
                       j is (b) behind a bare node:http server that takes c's requests: the floor of any REST service;
                       k is the SDK's submit (c's very body) to an embedded coordinator: h's coordinator, no callback
  --coordinator-root DIR  run the coordinator's code from another checkout (before/after comparisons; needs its node_modules)
  --baseline-root DIR  also run the coordinator from DIR as variant (d), alternating with (c): a before/after comparison
  --service-node-args="FLAGS"  extra Node flags for the child coordinator, e.g. --service-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof"
  --baseline-node-args="FLAGS" the baseline's (d) flags instead (--baseline-root . compares one checkout under two sets of flags)
  --pg-stat-statements load pg_stat_statements in every cluster and list the costliest statements (diagnosis)
  --no-write           do not update bench/RESULTS.md
  --overload           overload mode: the service alone at --concurrency clients (its calm rate), then at each of
                       --overload-clients, with the same pools; reports commits/s against the calm rate, 503
                       refusals and their latency, answers after the deadline, RSS, /healthz and /readyz latency
  --overload-clients N,M  client counts of the overload stages   (default 400,1000)
  --overload-seconds S duration of each overload stage            (default 10)
  --backlog            backlog mode (issue 13): N transfers (debit on bank_a or bank_b, credit on bank_c) decided while a
                       proxy cuts every COMMIT PREPARED to bank_c, then bank_c restored; reports the drain time and rate,
                       the coordinator's RSS (idle, building, draining), CPU per part, COMMIT PREPAREDs sent, and checks
                       the money; with --baseline-root, the same for the baseline coordinator afterwards
  --latency-rounds N   rounds of the one-client latency measurement that follows (b, c, d, h, i, j, k among --variants;
                       default 2; 0: none)
  --backlog-size N     transactions in the backlog                 (default 10000; --accounts is raised to at least N)`;

function num(name: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: expected a number >= ${min}, got "${raw}"`);
  return n;
}

function oneOf<T extends string>(name: string, raw: string | undefined, allowed: readonly T[], fallback: T): T {
  if (raw === undefined || raw === '') return fallback;
  if (!(allowed as readonly string[]).includes(raw)) throw new Error(`--${name}: expected one of ${allowed.join(', ')}, got "${raw}"`);
  return raw as T;
}

/** Command line first, then BENCH_* environment variables, then defaults. */
export function parseOptions(argv: string[], env: NodeJS.ProcessEnv): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      concurrency: { type: 'string' },
      rounds: { type: 'string' },
      'round-seconds': { type: 'string' },
      'warmup-seconds': { type: 'string' },
      accounts: { type: 'string' },
      fsync: { type: 'string' },
      service: { type: 'string' },
      pool: { type: 'string' },
      variants: { type: 'string' },
      'service-node-args': { type: 'string' },
      'baseline-node-args': { type: 'string' },
      'coordinator-root': { type: 'string' },
      'baseline-root': { type: 'string' },
      'pg-stat-statements': { type: 'boolean' },
      'no-write': { type: 'boolean' },
      overload: { type: 'boolean' },
      'overload-clients': { type: 'string' },
      'overload-seconds': { type: 'string' },
      backlog: { type: 'boolean' },
      'backlog-size': { type: 'string' },
      'latency-rounds': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const concurrency = Math.floor(num('concurrency', values.concurrency ?? env.BENCH_CONCURRENCY, 32, 1));
  const baselineRoot = values['baseline-root'] ?? (env.BENCH_BASELINE_ROOT || undefined);
  const variantsRaw = values.variants ?? env.BENCH_VARIANTS ?? (baselineRoot ? 'a,b,c,d,g,h,i,j,k' : 'a,b,c,g,h,i,j,k');
  const variants = variantsRaw
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);
  for (const v of variants)
    if (!(VARIANT_NAMES as readonly string[]).includes(v)) throw new Error(`--variants: unknown variant "${v}" (${VARIANT_NAMES.join(', ')})`);
  if (variants.length === 0) throw new Error('--variants: name at least one of a, b, c');
  for (const v of ['d', 'f']) {
    if (variants.includes(v) && !baselineRoot) throw new Error(`--variants: ${v} is the coordinator from --baseline-root DIR; give that too`);
  }
  const backlog = values.backlog ?? env.BENCH_BACKLOG === '1';
  const backlogSize = Math.floor(num('backlog-size', values['backlog-size'] ?? env.BENCH_BACKLOG_SIZE, 10_000, 1));
  // Each backlog transfer credits an account of its own on bank_c: its prepared branch holds that
  // row's lock until the drain, so two transfers sharing an account would wait on each other.
  const accounts = Math.floor(num('accounts', values.accounts ?? env.BENCH_ACCOUNTS, 10_000, 2));
  return {
    concurrency,
    rounds: Math.floor(num('rounds', values.rounds ?? env.BENCH_ROUNDS, 4, 1)),
    roundMs: Math.round(num('round-seconds', values['round-seconds'] ?? env.BENCH_ROUND_SECONDS, 5, 0.1) * 1000),
    warmupMs: Math.round(num('warmup-seconds', values['warmup-seconds'] ?? env.BENCH_WARMUP_SECONDS, 2, 0) * 1000),
    accounts: backlog ? Math.max(accounts, backlogSize) : accounts,
    fsync: oneOf('fsync', values.fsync ?? env.BENCH_FSYNC, ['on', 'off'] as const, 'on'),
    service: oneOf('service', values.service ?? env.BENCH_SERVICE, ['child', 'inproc'] as const, 'child'),
    pool: Math.floor(num('pool', values.pool ?? env.BENCH_POOL, concurrency, 1)),
    variants: [...new Set(variants)] as VariantName[],
    coordinatorRoot: values['coordinator-root'] ?? (env.BENCH_COORDINATOR_ROOT || undefined),
    baselineRoot,
    serviceNodeArgs: (values['service-node-args'] ?? env.BENCH_SERVICE_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
    baselineNodeArgs: (values['baseline-node-args'] ?? env.BENCH_BASELINE_NODE_ARGS)?.split(/\s+/).filter(Boolean),
    pgStatStatements: values['pg-stat-statements'] ?? env.BENCH_PG_STAT_STATEMENTS === '1',
    write: !(values['no-write'] ?? env.BENCH_NO_WRITE === '1'),
    overload: values.overload ?? env.BENCH_OVERLOAD === '1',
    overloadClients: (values['overload-clients'] ?? env.BENCH_OVERLOAD_CLIENTS ?? '400,1000')
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean)
      .map((x) => Math.floor(num('overload-clients', x, 0, 1))),
    overloadMs: Math.round(num('overload-seconds', values['overload-seconds'] ?? env.BENCH_OVERLOAD_SECONDS, 10, 0.1) * 1000),
    backlog,
    backlogSize,
    latencyRounds: Math.floor(num('latency-rounds', values['latency-rounds'] ?? env.BENCH_LATENCY_ROUNDS, 2, 0)),
  };
}
