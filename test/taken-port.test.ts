import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabases, type Databases } from './harness/world.ts';

/*
 * A port another process holds must stop the start: express 5 hands EADDRINUSE to the listen
 * callback, and a callback that ignored it printed "listening" and stayed up, while the requests
 * meant for it reached the other process. Each case runs the real entry point, as a user does.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// Far above what a start of the compiled entry points takes on a loaded machine.
const EXIT_LIMIT_MS = 45_000;

interface Ended {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a process to its end; one still running after the limit is killed and fails the test. */
function runToExit(args: string[], env: Record<string, string>): Promise<Ended> {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`still running after ${EXIT_LIMIT_MS} ms on a taken port:\n${stdout}\n${stderr}`));
    }, EXIT_LIMIT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A plain TCP server on a free loopback port: the "other process" that holds it. */
async function occupyPort(): Promise<{ port: number; server: Server }> {
  const server = createServer((socket) => socket.end());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return { port: (server.address() as { port: number }).port, server };
}

describe('a taken port stops the start', () => {
  let dbs: Databases;
  let holder: { port: number; server: Server };
  beforeAll(async () => {
    dbs = await createDatabases();
    holder = await occupyPort();
  });
  afterAll(async () => {
    await new Promise((r) => holder?.server.close(r));
    await dbs?.end();
  });

  it('npm start exits non-zero, naming the port and PORT, and never says it is listening', async () => {
    const ended = await runToExit(['dist/coordinator/main.js'], { ...dbs.env, PORT: String(holder.port), LOG_LEVEL: 'info' });
    expect(ended.code).toBe(1);
    expect(ended.stderr).toContain(`port ${holder.port} is already in use`);
    expect(ended.stderr).toContain(`PORT=${holder.port}`);
    expect(ended.stdout).not.toContain('coordinator listening');
    // It let go of everything it had opened (log and bank pools, Redis): the process ended by itself.
    expect(ended.stdout).toContain('coordinator stopped');
    expect(holder.server.listening).toBe(true);
  });

  const participant = (extra: string[], env: Record<string, string>) =>
    runToExit(['dist/coordinator/cli/main.js', 'participant', '--database-url', dbs.urls.bank_a, '--name', 'bank_a', ...extra], {
      TPC_PARTICIPANT_TOKEN: 'participant-token-0123456789',
      ...env,
    });

  it('tpc participant --port exits non-zero, naming the port and the option', async () => {
    const ended = await participant(['--port', String(holder.port)], {});
    expect(ended.code).toBe(1);
    expect(ended.stderr).toContain(`port ${holder.port} is already in use`);
    expect(ended.stderr).toContain(`--port ${holder.port}`);
    expect(ended.stdout).not.toContain('participant router for bank_a at');
  });

  it('tpc participant with TPC_PARTICIPANT_PORT names the variable', async () => {
    const ended = await participant([], { TPC_PARTICIPANT_PORT: String(holder.port) });
    expect(ended.code).toBe(1);
    expect(ended.stderr).toContain(`port ${holder.port} is already in use`);
    expect(ended.stderr).toContain(`TPC_PARTICIPANT_PORT=${holder.port}`);
    expect(ended.stdout).not.toContain('participant router for bank_a at');
  });
});
