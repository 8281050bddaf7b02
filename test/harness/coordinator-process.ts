import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A coordinator in its own process (`npm start`'s entry point), so a test can SIGKILL it. */
export interface CoordinatorProcess {
  url: string;
  child: ChildProcess;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** Log lines (pino JSON, parsed) seen so far. */
  logs: Record<string, unknown>[];
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * `root`: another checkout of the project (an earlier revision, for a rolling upgrade), run from its
 * sources through tsx, since it has no build of its own. This checkout runs dist/ as `npm start`
 * does (the suite's setup rebuilds it when a source is newer): a tsx start compiles every module
 * again, over a second per coordinator, and the suite starts some eighty of them.
 */
export async function startCoordinatorProcess(env: Record<string, string>, options: { root?: string } = {}): Promise<CoordinatorProcess> {
  const entry = options.root ? ['--import', 'tsx', 'coordinator/main.ts'] : ['dist/coordinator/main.js'];
  const child = spawn(process.execPath, entry, {
    cwd: options.root ?? ROOT,
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const listening = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`coordinator did not start within 30 s: ${stderr}`)), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === 'coordinator listening') {
          clearTimeout(timer);
          resolve(entry.url as string);
        }
      } catch {
        // not a log line
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`coordinator exited with ${code} before listening: ${stderr}`));
    });
  });
  // A coordinator that never came up must not outlive the test.
  const url = await listening.catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  return {
    url,
    child,
    exited,
    logs,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
