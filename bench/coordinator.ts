import { existsSync, readFileSync } from 'node:fs';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { freeLoopbackPort } from '../coordinator/embedded/free-port.ts';
import type { BenchOptions } from './options.ts';

/** The coordinator under test, wherever it runs. */
export interface Coordinator {
  url: string;
  /** The checkout it runs from, and its git revision ("abc1234", "abc1234+uncommitted changes", or "unknown …"). */
  root: string;
  revision: string;
  /** Its process id when it runs as a child (for CPU accounting); undefined in process. */
  pid: number | undefined;
  /** Stops it (SIGTERM to the child, or close() in process). Safe to call twice. */
  close(): Promise<void>;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The git revision of the coordinator's code in `root`, marked dirty when its sources differ from it. */
function revisionOf(root: string): string {
  const git = (...args: string[]) => spawnSync('git', ['-C', root, ...args], { encoding: 'utf8' });
  const head = git('rev-parse', '--short', 'HEAD');
  if (head.status !== 0) return 'unknown (not a git checkout)';
  const dirty = git('status', '--porcelain', '--', 'coordinator', 'participant-adapter', 'migrations', 'package.json');
  return `${head.stdout.trim()}${dirty.stdout.trim() ? '+uncommitted changes' : ''}`;
}
/** The environment the service sees: ours without any TPC_* / DATABASE_URL / REDIS_URL, plus `env`. */
function serviceEnv(env: Record<string, string>): Record<string, string> {
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith('TPC_') || k === 'DATABASE_URL' || k === 'REDIS_URL' || k === 'PORT') continue;
    base[k] = v;
  }
  return { ...base, ...env };
}

async function waitReady(url: string, child: ChildProcess | null, stderr: () => string, name = 'coordinator'): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}: ${stderr()}`);
    try {
      const res = await fetch(`${url}/readyz`);
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} not ready within 60 s: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * How `npm start` runs the coordinator of `root`: its compiled tree (rebuilt first if a source is
 * newer), so that the figures (CPU, and RSS above all: tsx alone holds ~37 MB) are the product's.
 * A checkout from before the build step runs its sources through tsx, as its `npm start` did.
 */
function entryPoint(root: string, log: (msg: string) => void): string[] {
  if (!existsSync(join(root, 'scripts/build.js'))) return ['--import', 'tsx', 'coordinator/main.ts'];
  const built = spawnSync(process.execPath, ['scripts/build.js', '--if-stale'], { cwd: root, encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`building ${root} failed: ${built.stderr || built.stdout}`);
  // The Node flags `npm start` gives (e.g. --optimize-for-size), read from the checkout's own script.
  const start = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts?: { start?: string } }).scripts?.start ?? '';
  const flags = start.split(/\s+/).filter((w) => w.startsWith('--'));
  log(`coordinator of ${root}: compiled (node ${[...flags, 'dist/coordinator/main.js'].join(' ')})`);
  return [...flags, 'dist/coordinator/main.js'];
}

/** Runs `node args…` in `root` with `env` and a free PORT, and waits for its /readyz. */
async function startChild(args: string[], env: Record<string, string>, root: string, log: (msg: string) => void, name = 'coordinator'): Promise<Coordinator> {
  const port = await freeLoopbackPort();
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: serviceEnv({ ...env, PORT: String(port) }),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  let closing: Promise<void> | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      if (!closing) log(`${name} exited unexpectedly (${signal ?? `code ${code}`}): ${stderr.trim() || 'no output'}`);
      resolve();
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const close = () => {
    closing ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    })();
    return closing;
  };
  try {
    await waitReady(url, child, () => stderr, name);
  } catch (err) {
    await close();
    throw err;
  }
  return { url, root, revision: revisionOf(root), pid: child.pid, close };
}

type ServiceModule = typeof import('../coordinator/service.ts');
type ConfigModule = typeof import('../coordinator/config/load-config.ts');

async function startInProcess(env: Record<string, string>, root: string): Promise<Coordinator> {
  // Imported only when asked for, and from the checkout under test.
  const { startService: start } = (await import(pathToFileURL(join(root, 'coordinator/service.ts')).href)) as ServiceModule;
  const { loadConfig: load } = (await import(pathToFileURL(join(root, 'coordinator/config/load-config.ts')).href)) as ConfigModule;
  const service = await start(load({ ...env, PORT: '0' }), { logger: pino({ level: 'silent' }) });
  await waitReady(service.url, null, () => '');
  let closing: Promise<void> | undefined;
  return {
    url: service.url,
    root,
    revision: revisionOf(root),
    // In process, the service's CPU cannot be told apart from the load generator's.
    pid: undefined,
    close: () => (closing ??= service.close()),
  };
}

/** Starts the coordinator from `root` (another checkout), else from --coordinator-root, else from this repo. */
export function startCoordinator(
  options: BenchOptions,
  env: Record<string, string>,
  log: (msg: string) => void,
  root?: string,
  nodeArgs = options.serviceNodeArgs,
): Promise<Coordinator> {
  const dir = resolve(root ?? options.coordinatorRoot ?? ROOT);
  return options.service === 'child' ? startChild([...nodeArgs, ...entryPoint(dir, log)], env, dir, log) : startInProcess(env, dir);
}

/** Variant (j)'s server (bare-http-server.ts), always a child process: its CPU is counted apart. */
export function startBareHttp(env: Record<string, string>, log: (msg: string) => void): Promise<Coordinator> {
  return startChild(['--import', 'tsx', 'bench/bare-http-server.ts'], env, ROOT, log, 'bare HTTP server (j)');
}
