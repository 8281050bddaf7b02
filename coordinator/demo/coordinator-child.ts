import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freeLoopbackPort } from '../embedded/free-port.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

// 60 s: a first start runs the log migrations; anything slower than that is a failure to report.
const START_LIMIT_MS = 60_000;
// 5 s for a SIGTERM: the coordinator finishes what it holds in that time or recovery does it later.
const STOP_GRACE_MS = 5_000;

/**
 * The coordinator as `npm start` runs it, but in a child process of the demo, so that the demo can
 * SIGKILL it as a crash would and start it again. Its log lines go to a file, not over the display.
 */
export class CoordinatorChild {
  readonly #env: Record<string, string>;
  readonly #log: WriteStream;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #port: number | undefined;
  /** Every process id this object started, so that the caller can prove none is left. */
  readonly pids: number[] = [];

  constructor(env: Record<string, string>, logFile: string) {
    this.#env = env;
    this.#log = createWriteStream(logFile, { flags: 'a' });
  }

  get url(): string {
    if (this.#port === undefined) throw new Error('the coordinator was never started');
    return `http://127.0.0.1:${this.#port}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /**
   * Starts it and resolves once /readyz answers 200. A restart keeps the port, so clients simply
   * retry the same URL; if another process took the port meanwhile, a fresh one is picked.
   */
  async start(): Promise<void> {
    if (this.running) throw new Error('the coordinator is already running');
    this.#port ??= await freeLoopbackPort();
    try {
      await this.#spawnAndWait();
    } catch (err) {
      if (!/EADDRINUSE/.test(String(err))) throw err;
      this.#port = await freeLoopbackPort();
      await this.#spawnAndWait();
    }
  }

  async #spawnAndWait(): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'coordinator/main.ts'], {
      cwd: ROOT,
      env: { ...this.#env, PORT: String(this.#port) },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: a Ctrl-C at the terminal reaches the demo only, which then stops
      // the coordinator itself, in order, before the databases it talks to.
      detached: true,
    });
    this.#child = child;
    if (child.pid) this.pids.push(child.pid);
    this.#log.write(`--- coordinator pid ${child.pid} starting on port ${this.#port} at ${new Date().toISOString()}\n`);
    let stderr = '';
    child.stdout!.pipe(this.#log, { end: false });
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4_000);
      this.#log.write(d);
    });
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const until = Date.now() + START_LIMIT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`the coordinator exited (${child.exitCode ?? child.signalCode}) before it was ready: ${stderr.trim()}`);
      }
      if (await this.#ready()) return;
      if (Date.now() > until) {
        await this.kill();
        throw new Error(`the coordinator was not ready within ${START_LIMIT_MS / 1000} s: ${stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async #ready(): Promise<boolean> {
    try {
      const res = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2_000) });
      await res.body?.cancel();
      return res.status === 200;
    } catch {
      return false;
    }
  }

  /** SIGKILL: no shutdown, no goodbye to the log or the databases, exactly what a crash leaves. */
  async kill(): Promise<void> {
    if (this.running) this.#child!.kill('SIGKILL');
    await this.#exited;
  }

  /** For a process about to exit: SIGKILL without waiting. */
  killNow(): void {
    if (this.running) this.#child!.kill('SIGKILL');
  }

  /** SIGTERM, then SIGKILL if it has not exited within the grace period. */
  async stop(): Promise<void> {
    if (this.running) {
      this.#child!.kill('SIGTERM');
      const done = await Promise.race([this.#exited.then(() => true), new Promise((r) => setTimeout(r, STOP_GRACE_MS, false))]);
      if (!done) await this.kill();
    }
    await this.#exited;
  }

  async close(): Promise<void> {
    await this.stop();
    await new Promise<void>((resolve) => this.#log.end(resolve));
  }
}
