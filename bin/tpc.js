#!/usr/bin/env node
// `tpc`: the compiled CLI (dist/, made by `npm run build`, which `npm ci` and `npm install` run as
// `prepare`), in this process: no tsx and no child process, so a command starts in a few hundred
// milliseconds instead of seconds. From source, without a build: `npm run tpc -- <args>`.
const main = new URL('../dist/coordinator/cli/main.js', import.meta.url);

try {
  await import(main.href);
} catch (err) {
  // Only the missing build itself gets the hint; any other error is the CLI's own and surfaces whole.
  if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.message).includes(main.pathname)) throw err;
  process.stderr.write(
    'tpc: the compiled CLI is missing (dist/coordinator/cli/main.js): run `npm run build`, or `npm run tpc -- <args>` to run it from source\n',
  );
  process.exitCode = 1;
}
