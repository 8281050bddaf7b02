import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinatorProcess } from './harness/coordinator-process.ts';
import { createDatabases, TOKENS } from './harness/world.ts';

/*
 * The two tarballs of `npm run package`, installed into fresh projects as a user's service would
 * install them, then imported by plain Node and type-checked by a strict `nodenext` TypeScript
 * project without skipLibCheck.
 *
 * Installing: the registry is out of reach here and the npm cache holds neither pg nor kysely
 * (`npm install --offline` answers ENOTCACHED), so each tarball is unpacked into the project's
 * node_modules as npm unpacks it, and the dependencies its package.json names (and no others) are
 * linked from this repository's node_modules. A file of the package that imports anything else
 * fails, since the package's own files are not under the repository.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const sh = promisify(execFile);
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };

// The strictest ordinary service setup: nothing in the packages' .d.ts files may fail it.
const STRICT_TSCONFIG = {
  compilerOptions: {
    module: 'nodenext',
    moduleResolution: 'nodenext',
    target: 'es2022',
    lib: ['es2023'],
    types: ['node'],
    strict: true,
    skipLibCheck: false,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    noEmit: true,
  },
  files: ['main.ts'],
};
// Servers the client must not bring along, in values or in types.
const SERVER_PACKAGES = /node_modules\/(express|@types\/express|bullmq|ioredis|@bull-board|pino|prom-client|libpg-query|zod)\//;

let work: string;
let tarballs: { coordinator: string; client: string };

async function contents(tarball: string): Promise<string[]> {
  const { stdout } = await sh('tar', ['tzf', tarball]);
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''));
}

/** A fresh ESM project with `tarball` unpacked as `name` and the given packages linked in. */
async function project(tarball: string, name: string, links: string[], main: string): Promise<string> {
  const dir = await mkdtemp(join(work, `${name}-`));
  const pkgDir = join(dir, 'node_modules', name);
  await mkdir(pkgDir, { recursive: true });
  await sh('tar', ['xzf', tarball, '-C', pkgDir, '--strip-components=1']);
  for (const dep of links) {
    await mkdir(dirname(join(dir, 'node_modules', dep)), { recursive: true });
    await symlink(join(ROOT, 'node_modules', dep), join(dir, 'node_modules', dep), 'dir');
  }
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'a-service', private: true, type: 'module' }));
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify(STRICT_TSCONFIG));
  await writeFile(join(dir, 'main.ts'), main);
  return dir;
}

/** `tsc --noEmit` in `dir`: its diagnostics, and every file the program read. */
async function typecheck(dir: string): Promise<{ errors: string; files: string[] }> {
  const r = await sh(process.execPath, [TSC, '-p', dir, '--listFilesOnly'], { cwd: dir });
  const files = r.stdout.split('\n').filter(Boolean);
  const errors = await sh(process.execPath, [TSC, '-p', dir], { cwd: dir }).then(
    (x) => x.stdout,
    (e: { stdout?: string }) => e.stdout ?? String(e),
  );
  return { errors, files };
}

const nodeEval = async (dir: string, code: string) => (await sh(process.execPath, ['--input-type=module', '-e', code], { cwd: dir })).stdout.trim();

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tpc-packages-'));
  // dist/ is fresh (test/harness/build-dist.ts); packing into a directory of our own leaves dist/packages alone.
  const { stdout } = await sh(process.execPath, [join(ROOT, 'scripts', 'package.js'), '--no-build', '--out', join(work, 'packages')], { cwd: ROOT });
  const [coordinator, client] = stdout
    .trim()
    .split('\n')
    .map((f) => join(ROOT, f));
  tarballs = { coordinator: coordinator!, client: client! };
}, 120_000);
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('npm run package', () => {
  it('makes both tarballs, named by version, with neither tests, benchmarks nor CI files', async () => {
    expect(tarballs.coordinator).toMatch(new RegExp(`pg-2pc-coordinator-${version}\\.tgz$`));
    expect(tarballs.client).toMatch(new RegExp(`pg-2pc-client-${version}\\.tgz$`));
    for (const tarball of Object.values(tarballs)) {
      const files = await contents(tarball);
      expect(files.filter((f) => /(^|\/)(test|bench|\.ci|scripts|examples)\//.test(f) || /\.test\.|(?<!\.d)\.ts$/.test(f))).toEqual([]);
    }
    const full = await contents(tarballs.coordinator);
    expect(full).toEqual(
      expect.arrayContaining([
        'package.json',
        'README.md',
        'bin/tpc.js',
        'dist/coordinator/main.js',
        'dist/coordinator/cli/main.js',
        'dist/coordinator/sdk/index.d.ts',
        'dist/coordinator/console/index.html',
        'dist/participant-adapter/participant-router.js',
        'dist/migrations/index.js',
      ]),
    );
  });

  it('the client: pg and kysely only; plain Node imports it; a strict nodenext project type-checks against it', async () => {
    const pkg = JSON.parse((await sh('tar', ['xzf', tarballs.client, '-O', 'package/package.json'])).stdout) as Record<string, any>;
    expect(Object.keys(pkg.dependencies).sort()).toEqual(['kysely', 'pg']);
    expect(pkg.devDependencies).toBeUndefined();
    expect(pkg.scripts).toBeUndefined();

    const dir = await project(
      tarballs.client,
      'pg-2pc-client',
      ['pg', 'kysely', '@types/pg', '@types/node'],
      `
import pg from 'pg';
import { createClient, prepareBranch, ParticipantError, TransactionAbortedError, TransactionOutcomeUnknownError, type JoinedBranch, type TpcClient } from 'pg-2pc-client';

const pool = new pg.Pool();
const tpc: TpcClient = createClient({ url: 'http://127.0.0.1:8080', token: 'secret', resources: { orders: pool } });

export async function order(sku: string): Promise<string> {
  try {
    const { outcome } = await tpc.transaction(async (tx) => {
      const orders = await tx.branch<{ orders: { sku: string } }>('orders');
      await orders.insertInto('orders').values({ sku }).execute();
    }, { timeoutMs: 5000 });
    return outcome.status;
  } catch (err) {
    if (err instanceof TransactionOutcomeUnknownError) return String((await tpc.outcome(err.transactionId, { waitMs: 10_000 })).decision);
    if (err instanceof TransactionAbortedError) return err.code;
    throw err;
  }
}

export const joined = (j: JoinedBranch) => prepareBranch<{ stock: { left: number } }, number>(pool, j.gid, async (db) => (await db.selectFrom('stock').select('left').execute()).length, { timeoutMs: 1000 });
export const refused = (e: unknown) => e instanceof ParticipantError;
`,
    );
    const exported = await nodeEval(
      dir,
      `
const m = await import('pg-2pc-client');
const unknown = new m.TransactionOutcomeUnknownError('00000000-0000-4000-8000-000000000000', 'no answer');
console.log(JSON.stringify({ names: Object.keys(m).sort(), aborted: unknown instanceof m.TransactionAbortedError, id: unknown.transactionId }));`,
    );
    expect(JSON.parse(exported)).toEqual({
      names: [
        'ParticipantError',
        'SubmissionOutcomeUnknownError',
        'TransactionAbortedError',
        'TransactionOutcomeUnknownError',
        'createClient',
        'prepareBranch',
      ],
      aborted: false,
      id: '00000000-0000-4000-8000-000000000000',
    });

    const { errors, files } = await typecheck(dir);
    expect(errors).toBe('');
    expect(files.some((f) => f.includes('/node_modules/pg-2pc-client/'))).toBe(true);
    expect(files.filter((f) => SERVER_PACKAGES.test(f))).toEqual([]);
  });

  it('the client: a plain-JavaScript project with only it and pg runs a two-bank transaction against npm start', async () => {
    const dbs = await createDatabases();
    const service = await startCoordinatorProcess({ ...dbs.env, LOG_LEVEL: 'info' });
    try {
      const dir = await project(tarballs.client, 'pg-2pc-client', ['pg', 'kysely'], '');
      await writeFile(
        join(dir, 'transfer.js'),
        `
import pg from 'pg';
import { createClient } from 'pg-2pc-client';

const [url, token, a, b] = process.argv.slice(2);
const pools = { bank_a: new pg.Pool({ connectionString: a }), bank_b: new pg.Pool({ connectionString: b }) };
const tpc = createClient({ url, token, resources: pools });
const { outcome } = await tpc.transaction(async (tx) => {
  const from = await tx.branch('bank_a');
  const to = await tx.branch('bank_b');
  await from.updateTable('accounts').set((eb) => ({ balance: eb('balance', '-', 7) })).where('id', '=', 4).execute();
  await to.updateTable('accounts').set((eb) => ({ balance: eb('balance', '+', 7) })).where('id', '=', 4).execute();
}, { timeoutMs: 10_000 });
console.log(outcome.status);
await Promise.all(Object.values(pools).map((p) => p.end()));
`,
      );
      const { stdout } = await sh(process.execPath, ['transfer.js', service.url, TOKENS.full, dbs.urls.bank_a, dbs.urls.bank_b], { cwd: dir });
      expect(stdout.trim()).toBe('committed');
      expect([await dbs.balance('bank_a', 4), await dbs.balance('bank_b', 4)]).toEqual([993, 1007]);
      expect(await dbs.preparedGids()).toEqual([]);
    } finally {
      await service.kill('SIGTERM');
      await dbs.end();
    }
  });

  it('the coordinator: plain Node imports createCoordinator, runs tpc, and a strict nodenext project type-checks against it', async () => {
    const pkg = JSON.parse((await sh('tar', ['xzf', tarballs.coordinator, '-O', 'package/package.json'])).stdout) as Record<string, any>;
    expect(pkg.dependencies.tsx).toBeUndefined();
    expect(pkg.devDependencies).toBeUndefined();
    expect(pkg.bin).toEqual({ tpc: 'bin/tpc.js' });

    const dir = await project(
      tarballs.coordinator,
      'pg-2pc-coordinator',
      [...Object.keys(pkg.dependencies), '@types/node'],
      `
import { createClient, createCoordinator, type EmbeddedCoordinator } from 'pg-2pc-coordinator';
import { participantRouter, prepareBranch } from 'pg-2pc-coordinator/participant-adapter';
import { createClient as leanClient } from 'pg-2pc-coordinator/client';

export async function start(): Promise<EmbeddedCoordinator> {
  const coordinator = await createCoordinator({ DATABASE_URL: 'postgres://log', REDIS_URL: 'redis://127.0.0.1:6379' });
  createClient({ coordinator, resources: {} });
  return coordinator;
}
export const parts = [participantRouter, prepareBranch, leanClient] as const;
`,
    );
    const exported = await nodeEval(
      dir,
      `
const m = await import('pg-2pc-coordinator');
const p = await import('pg-2pc-coordinator/participant-adapter');
console.log(typeof m.createCoordinator, typeof m.createClient, typeof p.participantRouter, typeof p.prepareBranch);`,
    );
    expect(exported).toBe('function function function function');

    const bin = join(dir, 'node_modules', 'pg-2pc-coordinator', 'bin', 'tpc.js');
    expect((await sh(process.execPath, [bin, '--version'], { cwd: dir })).stdout.trim()).toBe(version);
    expect((await sh(process.execPath, [bin, '--help'], { cwd: dir })).stdout).toContain('Usage: tpc');
    // As npm links a package's bin on install: `npx tpc` then finds it in the project, offline.
    await mkdir(join(dir, 'node_modules', '.bin'), { recursive: true });
    await symlink(join('..', 'pg-2pc-coordinator', 'bin', 'tpc.js'), join(dir, 'node_modules', '.bin', 'tpc'));
    await chmod(bin, 0o755);
    const npx = await sh('npx', ['--offline', '--no-install', 'tpc', '--help'], { cwd: dir, env: { ...process.env, npm_config_update_notifier: 'false' } });
    expect(npx.stdout).toContain('Usage: tpc');

    const { errors } = await typecheck(dir);
    expect(errors).toBe('');
  });
});
