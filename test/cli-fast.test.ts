import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOKENS, createWorld, transfer, type World } from './harness/world.ts';

/*
 * `tpc` as an operator runs it (bin/tpc.js, the compiled CLI): quick to start, because it loads
 * neither tsx nor the server's packages; taking the console's short ids; saying where the token
 * comes from on a 401.
 */

const BIN = fileURLToPath(new URL('../bin/tpc.js', import.meta.url));
// Packages an API command has no use for: loading one of them costs a start of seconds or tenths.
const HEAVY = /\/node_modules\/(tsx|express|pg|pg-pool|kysely|zod|bullmq|ioredis|pino|prom-client|libpg-query|@bull-board)\//;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

function tpc(args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<Run> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [...nodeArgs, BIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, ms: performance.now() - started });
    });
  });
}

let work: string;
let world: World;
let ids: string[];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tpc-cli-fast-'));
  world = await createWorld();
  // Ids are random: among 24 transactions, some share their first hex digit (16 possible values).
  ids = [];
  for (let i = 0; i < 24; i++) {
    const r = await world.submit(transfer('bank_a', 'bank_b', 1));
    expect(r.status).toBe(201);
    ids.push(r.body.id as string);
  }
});
afterAll(async () => {
  await world?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('tpc starts fast', () => {
  it('loads no tsx and no server package for --help and tx list', async () => {
    // A module hook records every module the CLI resolves, into a file (hooks run off the main thread).
    const log = join(work, 'resolved.txt');
    await writeFile(
      join(work, 'hooks.mjs'),
      `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(${JSON.stringify(log)}, r.url + '\\n');
  return r;
}`,
    );
    await writeFile(
      join(work, 'register.mjs'),
      `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(work, 'hooks.mjs')).href)});\n`,
    );
    const env = { TPC_URL: world.service.url, TPC_TOKEN: TOKENS.full };
    for (const args of [['--help'], ['tx', 'list']]) {
      await writeFile(log, '');
      const r = await tpc(args, env, ['--import', pathToFileURL(join(work, 'register.mjs')).href]);
      expect(r.code, r.stderr).toBe(0);
      const resolved = (await readFile(log, 'utf8')).split('\n').filter(Boolean);
      expect(resolved.some((u) => u.includes('/dist/coordinator/cli/main.js'))).toBe(true);
      expect(resolved.filter((u) => HEAVY.test(u))).toEqual([]);
    }

    // Reported, not asserted (tests assert no wall-clock time): what keeps a start fast is what it
    // loads, checked above. On a loaded two-core CI machine the best of three once took 1.4 s.
    for (const args of [['--help'], ['tx', 'list']]) {
      const runs = [await tpc(args, env), await tpc(args, env), await tpc(args, env)];
      for (const r of runs) expect(r.code, r.stderr).toBe(0);
      const best = Math.min(...runs.map((r) => r.ms));
      console.log(`tpc ${args.join(' ')}: best of 3 ${best.toFixed(0)} ms (${runs.map((r) => r.ms.toFixed(0)).join(', ')})`);
    }
  });
});

describe('tpc tx show takes the short id the console shows', () => {
  const env = () => ({ TPC_URL: world.service.url, TPC_TOKEN: TOKENS.full });

  it('a unique prefix shows that transaction; dashes are optional', async () => {
    const id = ids[0]!;
    // The console's short id is the first 8 digits; the chance that another of 24 shares them is about 1 in 180 million.
    const show = await tpc(['tx', 'show', id.slice(0, 8)], env());
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toContain(id);
    expect(show.stdout).toMatch(/^status:\s+committed$/m);
    const json = await tpc(['tx', 'show', id.replace(/-/g, '').slice(0, 12).toUpperCase(), '--json'], env());
    expect(JSON.parse(json.stdout)).toMatchObject({ id, status: 'committed' });
  });

  it('an ambiguous prefix exits 2 and lists the candidates; no match exits 1; a non-hex one is a usage error', async () => {
    const byDigit = new Map<string, string[]>();
    for (const id of ids) byDigit.set(id[0]!, [...(byDigit.get(id[0]!) ?? []), id]);
    const [digit, shared] = [...byDigit].find(([, list]) => list.length >= 2)!;
    const ambiguous = await tpc(['tx', 'show', digit], env());
    expect(ambiguous.code).toBe(2);
    expect(ambiguous.stderr).toContain(`${digit} is ambiguous: ${shared.length} transactions start with it`);
    for (const id of shared) expect(ambiguous.stderr).toContain(id);

    const unused = '0123456789abcdef'.split('').find((d) => !byDigit.has(d));
    const none = await tpc(['tx', 'show', `${unused ?? ids[0]![0]}${'0'.repeat(15)}`], env());
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no transaction's id starts with/);

    const bad = await tpc(['tx', 'show', 'not-an-id'], env());
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('is not a transaction id');
  });
});

describe('a 401 says where the token comes from', () => {
  it('names TPC_TOKEN and the dev token file, under TPC_DATA_DIR when it is set', async () => {
    const refused = await tpc(['tx', 'list'], { TPC_URL: world.service.url, TPC_TOKEN: 'not-a-token-0123456789' });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('(401)');
    expect(refused.stderr).toContain('the token given (--token or TPC_TOKEN) was refused');
    expect(refused.stderr).toContain('export TPC_TOKEN=$(cat .tpc/dev-token)');

    const none = await tpc(['tx', 'list'], { TPC_URL: world.service.url, TPC_DATA_DIR: '/srv/tpc/' });
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('no token was given: set TPC_TOKEN (or pass --token)');
    expect(none.stderr).toContain('/srv/tpc/dev-token');
  });
});
