import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { freeLoopbackPort } from '../../coordinator/embedded/free-port.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

// The compiled CLI (dist/, rebuilt by the suite's setup when a source is newer) starts in about a
// second; 30 s is far above what it takes on a loaded machine.
const START_LIMIT_MS = 30_000;

export interface ParticipantProcessOptions {
  databaseUrl: string;
  namespace: string;
  name: string;
  token: string;
  allowStatements?: boolean;
}

/**
 * `tpc participant` (the sidecar) in its own process, on one fixed port for its whole life, so a
 * test can SIGKILL it and start it again where the coordinator (or a proxy) still points.
 */
export interface ParticipantProcess {
  /** The router's URL (http://127.0.0.1:port/2pc), the same across restarts. */
  readonly url: string;
  readonly port: number;
  readonly running: boolean;
  /** Starts it again on the same port; a no-op while it runs. */
  start(): Promise<void>;
  /** SIGKILL: no graceful close, so open sessions die with their sockets. Resolves once it has exited. */
  kill(): Promise<void>;
}

export async function startParticipantProcess(options: ParticipantProcessOptions): Promise<ParticipantProcess> {
  const port = await freeLoopbackPort();
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let url = '';

  const spawnOnce = async () => {
    const args = [
      'dist/coordinator/cli/main.js',
      'participant',
      '--database-url',
      options.databaseUrl,
      '--port',
      String(port),
      '--namespace',
      options.namespace,
      '--name',
      options.name,
      ...(options.allowStatements ? ['--allow-statements'] : []),
    ];
    const proc = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', TPC_PARTICIPANT_TOKEN: options.token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    const announced = `participant router for ${options.name} at `;
    const listening = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`participant ${options.name} did not start within ${START_LIMIT_MS} ms: ${stderr}`)), START_LIMIT_MS);
      // stdout also carries the router's pino lines; only the announcement matters here.
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        if (!line.startsWith(announced)) return;
        clearTimeout(timer);
        resolve(line.slice(announced.length).trim());
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`participant ${options.name} exited (${proc.exitCode ?? proc.signalCode}) before listening: ${stderr}`));
      });
    });
    // A sidecar that never came up must not outlive the test.
    url = await listening.catch(async (err: unknown) => {
      proc.kill('SIGKILL');
      await exited;
      child = null;
      throw err;
    });
  };

  const isRunning = () => child !== null && child.exitCode === null && child.signalCode === null;
  await spawnOnce();
  return {
    get url() {
      return url;
    },
    port,
    get running() {
      return isRunning();
    },
    async start() {
      if (!isRunning()) await spawnOnce();
    },
    async kill() {
      if (isRunning()) child!.kill('SIGKILL');
      await exited;
    },
  };
}
