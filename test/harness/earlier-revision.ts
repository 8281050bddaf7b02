import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Whether this clone's history holds `rev` (a shallow clone may not). */
export function hasRevision(rev: string): boolean {
  try {
    execFileSync('git', ['cat-file', '-e', `${rev}^{commit}`], { cwd: ROOT, stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * The project as it was at `rev`, extracted from git into a temporary directory and sharing this
 * checkout's node_modules, so a test can run a coordinator of that revision beside this one.
 */
export function checkOutRevision(rev: string): { root: string; remove(): void } {
  const root = mkdtempSync(join(tmpdir(), 'tpc-rev-'));
  execFileSync('sh', ['-c', `git archive --format=tar ${rev} | tar -x -C ${JSON.stringify(root)}`], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'), 'dir');
  return { root, remove: () => rmSync(root, { recursive: true, force: true }) };
}
