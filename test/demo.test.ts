import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const sh = promisify(execFile);

// 12 s of transfers: the kill, the restart and the outage each still get their turn, and the
// whole run (start, workload, settle, checks, stop) stays well inside the test's bound.
const DEMO_SECONDS = '12';

interface DemoRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `npm run demo` as a user runs it: the same command line, the same working directory. */
function runDemo(dataDir: string): Promise<DemoRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'coordinator/demo/run.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', TPC_DATA_DIR: dataDir, TPC_DEMO_SECONDS: DEMO_SECONDS },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

/** Every process on the machine with its command line. */
async function processes(): Promise<{ pid: number; args: string }[]> {
  const { stdout } = await sh('ps', ['-eo', 'pid=,args=']);
  return stdout.split('\n').flatMap((line) => {
    const m = /^\s*(\d+)\s+(.*)$/.exec(line);
    return m ? [{ pid: Number(m[1]), args: m[2]! }] : [];
  });
}

describe('npm run demo', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) {
      // A cluster left behind by a failed run: stop it before removing its files.
      const pidFile = join(d, 'demo', 'postgres', 'postmaster.pid');
      if (existsSync(pidFile)) {
        try {
          process.kill(Number(readFileSync(pidFile, 'utf8').split('\n')[0]), 'SIGQUIT');
        } catch {
          /* already gone */
        }
        await new Promise((r) => setTimeout(r, 1_000));
      }
      await rm(d, { recursive: true, force: true });
    }
  });

  it('survives a coordinator kill and a bank outage, verifies the banks, exits 0 and leaves nothing running', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tpc-demo-'));
    dirs.push(dataDir);
    // As root Postgres runs as the postgres user, which must reach the cluster inside this directory.
    await chmod(dataDir, 0o711);

    const run = await runDemo(dataDir);
    const output = `${run.stdout}\n--- stderr ---\n${run.stderr}`;
    expect(run.code, output).toBe(0);
    expect(run.stdout).toMatch(/SIGKILL coordinator \(pid \d+\)/);
    expect(run.stdout).toMatch(/bank_c offline: ALTER DATABASE bank_c ALLOW_CONNECTIONS false/);
    expect(run.stdout).toMatch(/✔ money conserved: 30000 across bank_a, bank_b, bank_c \(opened with 30000\)/);
    expect(run.stdout).toMatch(/✔ all or nothing: of \d+ transfers, \d+ are in both banks' ledgers and \d+ in neither/);
    expect(run.stdout).toMatch(/✔ no prepared transaction left on bank_a, bank_b, bank_c/);
    expect(run.stdout).toMatch(/✔ recovery after SIGKILL of the coordinator: \d+\.\d s/);
    expect(run.stdout).toContain('all checks hold');
    expect(run.stdout).not.toContain('✘');

    // Nothing of this data directory is left running: its Postgres, its Redis, its coordinators.
    const pgData = /Postgres \(data (\S+)\)/.exec(run.stdout)?.[1];
    const redisPort = /Redis at redis:\/\/127\.0\.0\.1:(\d+)/.exec(run.stdout)?.[1];
    const coordinatorPids = (/processes ([\d, ]+)\)/.exec(run.stdout)?.[1] ?? '')
      .split(',')
      .map((p) => Number(p.trim()))
      .filter(Boolean);
    expect(pgData, output).toBeDefined();
    expect(redisPort, output).toBeDefined();
    expect(coordinatorPids.length, output).toBeGreaterThanOrEqual(2);
    expect(existsSync(join(pgData!, 'postmaster.pid'))).toBe(false);
    const left = (await processes()).filter(
      (p) => p.args.includes(pgData!) || (p.args.includes('redis') && p.args.includes(`:${redisPort}`)) || coordinatorPids.includes(p.pid),
    );
    expect(left).toEqual([]);
  }, 150_000);
});
