import { parseArgs } from 'node:util';

export type VariantName = 'a' | 'b' | 'c';

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
  /** Update bench/RESULTS.md with this run's section. */
  write: boolean;
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
  --variants a,b,c     which variants to run                       (default a,b,c)
  --no-write           do not update bench/RESULTS.md`;

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
      'no-write': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const concurrency = Math.floor(num('concurrency', values.concurrency ?? env.BENCH_CONCURRENCY, 32, 1));
  const variantsRaw = values.variants ?? env.BENCH_VARIANTS ?? 'a,b,c';
  const variants = variantsRaw.split(',').map((v) => v.trim()).filter(Boolean);
  for (const v of variants) if (!['a', 'b', 'c'].includes(v)) throw new Error(`--variants: unknown variant "${v}" (a, b or c)`);
  if (variants.length === 0) throw new Error('--variants: name at least one of a, b, c');
  return {
    concurrency,
    rounds: Math.floor(num('rounds', values.rounds ?? env.BENCH_ROUNDS, 4, 1)),
    roundMs: Math.round(num('round-seconds', values['round-seconds'] ?? env.BENCH_ROUND_SECONDS, 5, 0.1) * 1000),
    warmupMs: Math.round(num('warmup-seconds', values['warmup-seconds'] ?? env.BENCH_WARMUP_SECONDS, 2, 0) * 1000),
    accounts: Math.floor(num('accounts', values.accounts ?? env.BENCH_ACCOUNTS, 10_000, 2)),
    fsync: oneOf('fsync', values.fsync ?? env.BENCH_FSYNC, ['on', 'off'] as const, 'on'),
    service: oneOf('service', values.service ?? env.BENCH_SERVICE, ['child', 'inproc'] as const, 'child'),
    pool: Math.floor(num('pool', values.pool ?? env.BENCH_POOL, concurrency, 1)),
    variants: [...new Set(variants)] as VariantName[],
    write: !(values['no-write'] ?? env.BENCH_NO_WRITE === '1'),
  };
}
