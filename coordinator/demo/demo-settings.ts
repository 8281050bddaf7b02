import { join } from 'node:path';
import { z } from 'zod';
import { loadEmbeddedSettings } from '../config/load-config.ts';

/** What `npm run demo` reads from its environment and its command line, resolved once. */
export interface DemoSettings {
  /** The demo's own embedded environment: `<TPC_DATA_DIR or .tpc>/demo`, so it never takes over a running `npm start`. */
  readonly dataDir: string;
  readonly pgBinDir: string | undefined;
  /** How long transfers are submitted; the faults are placed at fractions of it. */
  readonly seconds: number;
  readonly clients: number;
  /** What the coordinator's process inherits: only where to find programs and the home directory. */
  readonly inherited: Readonly<Record<string, string>>;
}

export class DemoSettingsError extends Error {
  override readonly name = 'DemoSettingsError';
}

// 60 s by default: long enough to see a steady rate before, between and after the two faults,
// short enough that the whole run (start, workload, settle, checks, stop) stays under two minutes.
// At least 8 s: the kill, the restart and the outage each need a couple of seconds to be seen.
const seconds = z.coerce.number().int().min(8).max(600);
// 8 clients: enough concurrency that a kill always catches transfers mid-flight, few enough that
// ten accounts a bank do not turn the run into a lock queue.
const clients = z.coerce.number().int().min(1).max(64);

function parse<T>(schema: z.ZodType<T>, name: string, value: string | undefined, fallback: T): T {
  if (value === undefined || value.trim() === '') return fallback;
  const r = schema.safeParse(value);
  if (!r.success) throw new DemoSettingsError(`${name}: ${r.error.issues[0]!.message} (got "${value}")`);
  return r.data;
}

/** `--seconds N` (or `--seconds=N`) wins over TPC_DEMO_SECONDS; likewise `--clients`. */
function flag(argv: readonly string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === `--${name}`) return argv[i + 1] ?? '';
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  return undefined;
}

export function loadDemoSettings(env: Record<string, string | undefined>, argv: readonly string[]): DemoSettings {
  const known = new Set(['--seconds', '--clients']);
  for (const a of argv) {
    if (a.startsWith('--') && !known.has(a.split('=')[0]!)) throw new DemoSettingsError(`unknown option ${a} (known: --seconds N, --clients N)`);
  }
  const embedded = loadEmbeddedSettings(env);
  return Object.freeze({
    dataDir: join(embedded.dataDir, 'demo'),
    pgBinDir: embedded.pgBinDir,
    seconds: parse(seconds, '--seconds / TPC_DEMO_SECONDS', flag(argv, 'seconds') ?? env.TPC_DEMO_SECONDS, 60),
    clients: parse(clients, '--clients / TPC_DEMO_CLIENTS', flag(argv, 'clients') ?? env.TPC_DEMO_CLIENTS, 8),
    // Nothing else: the user's DATABASE_URL, TPC_NAMESPACE or TPC_FAILPOINTS must not leak into the demo.
    inherited: Object.freeze({ PATH: env.PATH ?? '', HOME: env.HOME ?? '' }),
  });
}
