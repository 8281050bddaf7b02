import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Redis } from 'ioredis';
import { freeLoopbackPort, preferredLoopbackPort } from './free-port.ts';

/** A throwaway redis-server on a loopback port that keeps nothing on disk, so a restart comes back empty. */
export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** SIGKILL: every job and key is gone. */
  crash(): Promise<void>;
  stop(): Promise<void>;
  /** Starts again on the same port, empty. */
  start(): Promise<void>;
}

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

export interface RedisServerOptions {
  /** A configuration file, read first (a Sentinel's, which it also rewrites). */
  configFile?: string;
  /** More arguments after the defaults, e.g. `--replicaof 127.0.0.1 6379` or `--sentinel`. */
  args?: string[];
  /** The port to listen on when it is free (the embedded default's port of its last start); otherwise a free one. */
  port?: number;
}

export async function startRedisServer(binary = 'redis-server', options: RedisServerOptions = {}): Promise<RedisServer> {
  if (!binary.includes('/') && spawnSync('sh', ['-c', `command -v ${binary}`]).status !== 0) {
    throw new Error(`cannot run ${binary}: it is not on PATH (install the Debian package "redis-server")`);
  }
  let port = await preferredLoopbackPort(options.port);
  let child: ChildProcess | undefined;

  const start = async () => {
    const args = [
      ...(options.configFile ? [options.configFile] : []),
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      ...(options.args ?? []),
    ];
    // Its own process group: a Ctrl-C at the terminal reaches us, and we stop Redis after the
    // coordinator has finished with it. setpriv's parent-death signal ends it if we are killed
    // outright, instead of leaving an orphan on a port nobody will use again.
    const proc = SETPRIV
      ? spawn(SETPRIV, ['--pdeathsig', 'TERM', '--', binary, ...args], { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
      : spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    let fatal = false;
    const failed = new Promise<never>((_, reject) => {
      proc.once('error', (err) => {
        fatal = true;
        reject(new Error(`cannot run ${binary}: install the Debian package "redis-server"`, { cause: err }));
      });
      proc.once('exit', (code) => {
        fatal = true;
        reject(new Error(`${binary} exited with ${code}: ${stderr}`));
      });
    });
    failed.catch(() => {});
    child = proc;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => {});
      try {
        await Promise.race([probe.connect().then(() => probe.ping()), failed]);
        probe.disconnect();
        return;
      } catch (err) {
        probe.disconnect();
        if (fatal || Date.now() > deadline || proc.exitCode !== null) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };

  const halt = async (signal: NodeJS.Signals) => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await exited;
  };

  try {
    await start();
  } catch (err) {
    // Another process may have taken the port between our probe and the bind: pick again once.
    if (child?.exitCode === null) throw err;
    port = await freeLoopbackPort();
    await start().catch(() => {
      throw err;
    });
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    crash: () => halt('SIGKILL'),
    stop: () => halt('SIGTERM'),
    start,
  };
}
