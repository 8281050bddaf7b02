import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { FAILPOINT_PATTERN } from '../engine/failpoints.ts';
import { NAMESPACE_PATTERN } from '../engine/gid.ts';
import { parseRedisUrl, RedisUrlError } from '../jobs/redis-target.ts';
import { LogUrlError, parseLogUrl } from '../log/log-hosts.ts';
import { loadStatementTemplates, TemplateFileError } from './statement-templates.ts';

export const SCOPES = ['submit', 'read', 'operate'] as const;
export type Scope = (typeof SCOPES)[number];

/**
 * The names the coordinator acts under when no token is involved: an embedded coordinator's
 * process (its interactive transactions' owner, its idempotency keys' scope) and every caller of a
 * service without tokens. A token of either name would own what they began on the same log: it
 * could commit, abort or join an embedded process's transactions and read its keys' answers.
 */
export const EMBEDDED_ACTOR = 'embedded';
export const ANONYMOUS_ACTOR = 'anonymous';
const RESERVED_TOKEN_NAMES = new Set([EMBEDDED_ACTOR, ANONYMOUS_ACTOR]);

const tokenSchema = z
  .object({
    name: z.string().min(1).max(100),
    token: z.string().min(16, 'a token must be at least 16 characters'),
    scopes: z.array(z.enum(SCOPES)).min(1),
    resources: z.array(z.string().min(1)).min(1),
    // false: the token may submit statement templates (TPC_STATEMENTS_FILE) only, never SQL of its own.
    sql: z.boolean().default(true),
  })
  .strict();
export type ApiToken = z.infer<typeof tokenSchema>;

const resourceName = z.string().regex(/^[A-Za-z][A-Za-z0-9_-]{0,62}$/, 'resource names are letters, digits, "_" and "-", starting with a letter');
const postgresUrl = z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// connection string');
// The log's URL may list several hosts with target_session_attrs (log-hosts.ts): a list that cannot
// be read, or one that would put the log on a standby, is refused at start rather than at the first write.
const logUrl = postgresUrl.superRefine((url, ctx) => {
  try {
    parseLogUrl(url);
  } catch (err) {
    if (!(err instanceof LogUrlError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message });
  }
});
const httpResource = z
  .object({
    url: z.url({ protocol: /^https?$/, error: 'must be the http(s):// URL where the participant router is mounted' }),
    token: z.string().min(16, 'a participant token must be at least 16 characters'),
  })
  .strict();
const resourceSchema = z.union([postgresUrl, httpResource], {
  error: 'must be a postgres:// connection string or { "url": "http(s)://…", "token": "…" }',
});

/** A participant database: reached directly with a pool, or through its service's participant router. */
export type ResourceConfig = { readonly kind: 'postgres'; readonly url: string } | { readonly kind: 'http'; readonly url: string; readonly token: string };

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** Every environment variable the service reads, with its default. The README's table mirrors this. */
const envSchema = z.object({
  DATABASE_URL: logUrl,
  REDIS_URL: z.string().superRefine((url, ctx) => {
    try {
      parseRedisUrl(url);
    } catch (err) {
      if (!(err instanceof RedisUrlError)) throw err;
      ctx.addIssue({ code: 'custom', message: err.message });
    }
  }),
  TPC_RESOURCES: z.string().optional(),
  TPC_RESOURCES_FILE: z.string().optional(),
  PORT: int(0, 65535).default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  TPC_NAMESPACE: z.string().regex(NAMESPACE_PATTERN, 'letters, digits, "_", "-" and ".", at most 40').default('tpc'),
  // 10 s: long enough for ordinary OLTP work, short enough that a stuck branch does not hold locks for long.
  TPC_DEFAULT_TIMEOUT_MS: int(1, 3_600_000).default(10_000),
  // Upper bound a client may ask for: prepared branches hold locks and block vacuum until decided.
  TPC_MAX_TIMEOUT_MS: int(1, 86_400_000).default(300_000),
  TPC_API_TOKENS: z.string().optional(),
  // 500 ms: most transactions decide well within it, and their decision inserts the row (one log
  // write fewer); one running longer is in the log, for operators and the deadline sweep, soon after.
  TPC_BEGIN_DEFER_MS: int(0, 60_000).default(500),
  // 2 s: a client waiting for "completed" is not held long by an unreachable participant.
  TPC_COMPLETION_WAIT_MS: int(0, 600_000).default(2_000),
  TPC_RESOURCE_POOL_SIZE: int(1, 1000).default(20),
  // 250 ms: a hot-path transaction holds its slots for a few ms to a few tens of ms, so slots turn
  // over many times within it and a short burst is absorbed; a request that gets none in that
  // time meets sustained overload, and a fast 503 with Retry-After serves it better than a long
  // wait. Never more than half the transaction's timeout (admission.ts).
  TPC_ADMISSION_WAIT_MS: int(0, 60_000).default(250),
  // 200 waiting transactions: about twice what the service commits within one admission wait
  // (~400/s on the benchmark's machine × 0.25 s). Waiters beyond that would only be refused at the
  // end of their wait, after costing memory (a parsed body each) and latency: refuse them at once.
  TPC_ADMISSION_QUEUE: int(0, 100_000).default(200),
  TPC_LOG_POOL_SIZE: int(2, 1000).default(10),
  // 30 s: connections a burst opened are given back to the databases soon after it, and steady
  // traffic never waits for a new one. 0 keeps them open: a pool that empties at once after a lull
  // makes its databases tear down every backend together, and a process under other load pays for
  // it (the benchmark: a hundred backends exiting took the VM to 60 % system time for a second).
  TPC_POOL_IDLE_TIMEOUT_MS: int(0, 86_400_000).default(30_000),
  TPC_BODY_LIMIT: z
    .string()
    .regex(/^\d+(b|kb|mb)$/i, 'a size such as 1mb or 512kb')
    .default('1mb'),
  // Phase-2 retries: 500 ms doubling to 30 s, so a participant that comes back is finished within ~30 s.
  TPC_RETRY_BASE_MS: int(1, 3_600_000).default(500),
  TPC_RETRY_MAX_MS: int(1, 86_400_000).default(30_000),
  // 5 failed attempts (~15 s of retrying at the defaults) before operators are shown the transaction.
  TPC_IN_DOUBT_AFTER_ATTEMPTS: int(1, 1_000_000).default(5),
  // 10 s: a transaction whose driver died, or whose job Redis lost, is picked up within that.
  TPC_RECONCILE_INTERVAL_MS: int(100, 86_400_000).default(10_000),
  // 30 days of finished transactions kept for audit and idempotent replies.
  TPC_RETENTION_DAYS: z.coerce.number().min(0).max(36_500).default(30),
  // How long a SIGTERM waits for transactions in flight before exiting anyway.
  TPC_SHUTDOWN_TIMEOUT_MS: int(0, 3_600_000).default(30_000),
  // BullMQ's key prefix. Instances of one namespace share queues only under the same prefix.
  TPC_QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.:{}-]{1,64}$/, 'letters, digits and _ . : - { }, at most 64')
    .default('bull'),
  TPC_INSTANCE_ID: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'letters, digits and _ . : -')
    .optional(),
  TPC_FAILPOINTS: z.string().optional(),
  // A JSON file of named statements (name → SQL with $n parameters), each checked by the statement guard at start.
  TPC_STATEMENTS_FILE: z.string().min(1).optional(),
  // Resources allowed to connect as a role with powers beyond its database (superuser, CREATEROLE,
  // server programs or files): comma-separated names, or "*". None by default: such a role turns
  // any statement the guard misses into a shell on the database host.
  TPC_PRIVILEGED_RESOURCES: z.string().optional(),
  // V8's old generation may grow this far (in %) past the live data before it collects again; 0:
  // V8's own factor, up to 300 % on a large machine (coordinator/heap-growth.ts).
  TPC_HEAP_GROWTH_PERCENT: int(0, 1000).default(50),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export interface Config {
  readonly databaseUrl: string;
  readonly redisUrl: string;
  readonly resources: Readonly<Record<string, ResourceConfig>>;
  readonly port: number;
  readonly host: string;
  readonly namespace: string;
  readonly defaultTimeoutMs: number;
  readonly maxTimeoutMs: number;
  /** null: no tokens configured (allowed only on a loopback address; every request is let in). */
  readonly tokens: readonly ApiToken[] | null;
  readonly completionWaitMs: number;
  /** How long a submitted transaction runs before its begin record is written (0: at once). */
  readonly beginDeferMs: number;
  readonly resourcePoolSize: number;
  /** Longest wait for admission slots before a 503 (never past half the transaction's timeout). */
  readonly admissionWaitMs: number;
  /** Most submissions waiting for slots at once; beyond it they are refused at once. */
  readonly admissionQueue: number;
  readonly logPoolSize: number;
  /** How long the log's and the resources' pools keep an idle connection; 0: until the process stops. */
  readonly poolIdleTimeoutMs: number;
  readonly bodyLimit: string;
  readonly logLevel: string;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly inDoubtAfterAttempts: number;
  readonly reconcileIntervalMs: number;
  readonly retentionDays: number;
  readonly shutdownTimeoutMs: number;
  /** V8's heap growing factor past the live data, in %; 0 leaves V8's own (coordinator/heap-growth.ts). */
  readonly heapGrowthPercent: number;
  /** BullMQ's key prefix in Redis. */
  readonly queuePrefix: string;
  /** This process as the driver of the transactions it runs; unique per process unless set. */
  readonly instanceId: string | undefined;
  /** Test-only crash points (TPC_FAILPOINTS=after-decision:crash,…); empty in production. */
  readonly failpoints: readonly string[];
  /** Statement templates from TPC_STATEMENTS_FILE (name → SQL), already passed by the statement guard; empty when unset. */
  readonly statementTemplates: ReadonlyMap<string, string>;
  /** Resources the operator allows to run as a privileged role (TPC_PRIVILEGED_RESOURCES); '*' for all. */
  readonly privilegedResources: readonly string[] | '*';
}

/** A configuration problem, naming the variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host);
}

function parseJson(variable: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${variable}: not valid JSON (${(err as Error).message})`);
  }
}

function issuesOf(variable: string, error: z.ZodError): ConfigError {
  const detail = error.issues.map((i) => `${i.path.length ? `${i.path.join('.')}: ` : ''}${i.message}`).join('; ');
  return new ConfigError(`${variable}: ${detail}`);
}

/** Environment → validated, typed, frozen config. The only reader of process.env. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const first = parsed.error.issues[0]!;
    const variable = String(first.path[0]);
    const message = first.code === 'invalid_type' && env[variable] === undefined ? 'is required but not set' : first.message;
    throw new ConfigError(`${variable}: ${message}`);
  }
  const e = parsed.data;

  let resourcesText: string;
  let resourcesVar: string;
  if (e.TPC_RESOURCES !== undefined && e.TPC_RESOURCES_FILE !== undefined) {
    throw new ConfigError('TPC_RESOURCES and TPC_RESOURCES_FILE: set one, not both');
  } else if (e.TPC_RESOURCES !== undefined) {
    resourcesText = e.TPC_RESOURCES;
    resourcesVar = 'TPC_RESOURCES';
  } else if (e.TPC_RESOURCES_FILE !== undefined) {
    resourcesVar = 'TPC_RESOURCES_FILE';
    try {
      resourcesText = readFileSync(e.TPC_RESOURCES_FILE, 'utf8');
    } catch (err) {
      throw new ConfigError(`TPC_RESOURCES_FILE: cannot read ${e.TPC_RESOURCES_FILE} (${(err as Error).message})`);
    }
  } else {
    throw new ConfigError('TPC_RESOURCES: is required but not set (or set TPC_RESOURCES_FILE)');
  }
  const resources = z
    .record(resourceName, resourceSchema)
    .refine((r) => Object.keys(r).length > 0, 'at least one resource')
    .safeParse(parseJson(resourcesVar, resourcesText));
  if (!resources.success) throw issuesOf(resourcesVar, resources.error);

  let tokens: ApiToken[] | null = null;
  if (e.TPC_API_TOKENS !== undefined && e.TPC_API_TOKENS.trim() !== '') {
    const t = z.array(tokenSchema).min(1).safeParse(parseJson('TPC_API_TOKENS', e.TPC_API_TOKENS));
    if (!t.success) throw issuesOf('TPC_API_TOKENS', t.error);
    const seen = new Set<string>();
    // A name is who a token is: the owner of its interactive transactions, the scope of its
    // idempotency keys and what its queue-board sessions are bound to. Two tokens of one name would be one owner.
    const names = new Set<string>();
    for (const tok of t.data) {
      if (seen.has(tok.token)) throw new ConfigError(`TPC_API_TOKENS: token of "${tok.name}" is used twice`);
      if (names.has(tok.name)) throw new ConfigError(`TPC_API_TOKENS: the name "${tok.name}" is used by two tokens`);
      if (RESERVED_TOKEN_NAMES.has(tok.name)) {
        throw new ConfigError(
          `TPC_API_TOKENS: the name "${tok.name}" is reserved (the coordinator acts under it without a token); give that token another name`,
        );
      }
      seen.add(tok.token);
      names.add(tok.name);
    }
    tokens = t.data;
  }
  if (tokens === null && !isLoopback(e.HOST)) {
    throw new ConfigError(
      `TPC_API_TOKENS: no tokens are configured, so the service refuses to listen on HOST=${e.HOST}; set tokens or listen on a loopback address`,
    );
  }
  if (e.TPC_DEFAULT_TIMEOUT_MS > e.TPC_MAX_TIMEOUT_MS) {
    throw new ConfigError(`TPC_DEFAULT_TIMEOUT_MS: ${e.TPC_DEFAULT_TIMEOUT_MS} exceeds TPC_MAX_TIMEOUT_MS (${e.TPC_MAX_TIMEOUT_MS})`);
  }

  const failpoints: string[] = [];
  for (const item of (e.TPC_FAILPOINTS ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const [name, action = 'crash'] = item.split(':');
    if (!FAILPOINT_PATTERN.test(name!) || action !== 'crash') {
      throw new ConfigError(
        `TPC_FAILPOINTS: "${item}" is not <point>:crash with point one of after-begin, after-prepare-<n>, after-decision-written, after-decision, after-complete-<n>`,
      );
    }
    failpoints.push(name!);
  }
  if (e.TPC_RETRY_BASE_MS > e.TPC_RETRY_MAX_MS) {
    throw new ConfigError(`TPC_RETRY_BASE_MS: ${e.TPC_RETRY_BASE_MS} exceeds TPC_RETRY_MAX_MS (${e.TPC_RETRY_MAX_MS})`);
  }

  let statementTemplates: ReadonlyMap<string, string> = new Map();
  if (e.TPC_STATEMENTS_FILE !== undefined) {
    try {
      statementTemplates = loadStatementTemplates(e.TPC_STATEMENTS_FILE);
    } catch (err) {
      if (err instanceof TemplateFileError) throw new ConfigError(`TPC_STATEMENTS_FILE: ${err.message}`);
      throw err;
    }
  }

  const privilegedResources = parsePrivilegedResources(e.TPC_PRIVILEGED_RESOURCES, Object.keys(resources.data));

  return Object.freeze({
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    resources: Object.freeze(
      Object.fromEntries(
        Object.entries(resources.data).map(([name, r]) => [
          name,
          Object.freeze(typeof r === 'string' ? { kind: 'postgres' as const, url: r } : { kind: 'http' as const, url: r.url, token: r.token }),
        ]),
      ),
    ),
    port: e.PORT,
    host: e.HOST,
    namespace: e.TPC_NAMESPACE,
    defaultTimeoutMs: e.TPC_DEFAULT_TIMEOUT_MS,
    maxTimeoutMs: e.TPC_MAX_TIMEOUT_MS,
    tokens: tokens ? Object.freeze(tokens) : null,
    completionWaitMs: e.TPC_COMPLETION_WAIT_MS,
    beginDeferMs: e.TPC_BEGIN_DEFER_MS,
    resourcePoolSize: e.TPC_RESOURCE_POOL_SIZE,
    admissionWaitMs: e.TPC_ADMISSION_WAIT_MS,
    admissionQueue: e.TPC_ADMISSION_QUEUE,
    logPoolSize: e.TPC_LOG_POOL_SIZE,
    poolIdleTimeoutMs: e.TPC_POOL_IDLE_TIMEOUT_MS,
    bodyLimit: e.TPC_BODY_LIMIT,
    logLevel: e.LOG_LEVEL,
    retryBaseMs: e.TPC_RETRY_BASE_MS,
    retryMaxMs: e.TPC_RETRY_MAX_MS,
    inDoubtAfterAttempts: e.TPC_IN_DOUBT_AFTER_ATTEMPTS,
    reconcileIntervalMs: e.TPC_RECONCILE_INTERVAL_MS,
    retentionDays: e.TPC_RETENTION_DAYS,
    shutdownTimeoutMs: e.TPC_SHUTDOWN_TIMEOUT_MS,
    heapGrowthPercent: e.TPC_HEAP_GROWTH_PERCENT,
    queuePrefix: e.TPC_QUEUE_PREFIX,
    instanceId: e.TPC_INSTANCE_ID,
    failpoints: Object.freeze(failpoints),
    statementTemplates,
    privilegedResources,
  });
}

/** An opt-in names resources that exist: a typo must not silently leave the intended one refused, or mean nothing. */
function parsePrivilegedResources(text: string | undefined, resources: string[]): readonly string[] | '*' {
  const names = (text ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (names.includes('*')) {
    if (names.length > 1) throw new ConfigError('TPC_PRIVILEGED_RESOURCES: "*" stands alone (every resource), not beside names');
    return '*';
  }
  const unknown = names.filter((n) => !resources.includes(n));
  if (unknown.length) {
    throw new ConfigError(`TPC_PRIVILEGED_RESOURCES: no resource named ${unknown.map((n) => `"${n}"`).join(', ')} (resources: ${resources.join(', ')})`);
  }
  return Object.freeze([...new Set(names)]);
}

/** `npm run migrate` needs only the log database. */
export function loadLogUrl(env: Record<string, string | undefined> = process.env): string {
  const url = logUrl.safeParse(env.DATABASE_URL);
  if (!url.success) {
    throw new ConfigError(env.DATABASE_URL === undefined ? 'DATABASE_URL: is required but not set' : `DATABASE_URL: ${url.error.issues[0]!.message}`);
  }
  return url.data;
}

/** Settings of the embedded default (`npm start` with nothing configured), the tests and the benchmark. */
export function loadEmbeddedSettings(env: Record<string, string | undefined> = process.env): { pgBinDir: string | undefined; dataDir: string } {
  return { pgBinDir: env.TPC_PG_BINDIR || undefined, dataDir: env.TPC_DATA_DIR || '.tpc' };
}
