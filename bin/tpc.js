#!/usr/bin/env node
// `tpc`: runs coordinator/cli/main.ts through tsx (a dependency), in a child Node process that
// inherits stdio and whose exit code (or signal) becomes ours. tsx and main.ts are resolved from
// this file, so the shim works from any working directory.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../coordinator/cli/main.ts', import.meta.url));
const tsx = import.meta.resolve('tsx');

const child = spawn(process.execPath, [...process.execArgv, '--import', tsx, main, ...process.argv.slice(2)], { stdio: 'inherit' });

// A terminal's Ctrl-C reaches the whole process group, the child included: do not send it twice
// (`tpc serve` reads a second signal as "exit now"). Signals sent to this process alone are passed on.
process.on('SIGINT', () => {});
for (const signal of ['SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));

child.on('error', (err) => {
  process.stderr.write(`tpc: cannot start ${process.execPath}: ${err.message}\n`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code ?? 1);
});
