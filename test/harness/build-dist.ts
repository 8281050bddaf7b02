import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/*
 * Tests that run what users run (bin/tpc.js, the packages) need a dist/ made from the current
 * sources. Built here, once per run and before any test file starts (two files building at once
 * would delete each other's output), and only when a source is newer than the last build.
 */
export function setup(): void {
  execFileSync(process.execPath, [fileURLToPath(new URL('../../scripts/build.js', import.meta.url)), '--if-stale'], { stdio: 'inherit' });
}
