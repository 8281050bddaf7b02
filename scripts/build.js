#!/usr/bin/env node
// `npm run build` (and `prepare`, so `npm ci` leaves a built tree): compiles the code that runs in
// production to dist/ (see tsconfig.build.json) and copies the files it reads at run time beside
// the compiled modules. Plain JavaScript: it runs before anything is built.
//
//   --if-stale   build only when a source is newer than the last build (the test suite's setup)
//
// Types are not checked here (`--noCheck`): `npm run typecheck` does that for the whole project,
// tests included, and CI runs it. So a type error elsewhere cannot leave a fresh clone without a
// runnable tree, and the build takes half the time.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist');
// Written last: its time is the build's, and its absence means the last build did not finish.
const STAMP = join(DIST, '.build-stamp');
const SOURCES = ['coordinator', 'participant-adapter', 'migrations', 'tsconfig.json', 'tsconfig.build.json', 'scripts/build.js'];
// Read at run time through import.meta.url, so they must sit at the same place relative to the code.
const ASSETS = ['coordinator/console'];

function newestMtime(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const name of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, name)));
  return newest;
}

export function isStale() {
  if (!existsSync(STAMP)) return true;
  const built = statSync(STAMP).mtimeMs;
  return SOURCES.some((s) => newestMtime(join(ROOT, s)) > built);
}

/**
 * tsc rewrites `./x.ts` to `./x.js` in the JavaScript it emits but keeps `.ts` in the .d.ts files.
 * TypeScript 5 resolves those, older ones and other tools do not: name the .js, as the code does.
 */
function rewriteDeclarationSpecifiers(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) rewriteDeclarationSpecifiers(path);
    else if (entry.name.endsWith('.d.ts')) {
      const text = readFileSync(path, 'utf8');
      const fixed = text.replace(/(\bfrom\s+|\bimport\s+|\bimport\s*\(\s*)(['"])(\.{1,2}\/[^'"]*?)\.ts\2/g, '$1$2$3.js$2');
      if (fixed !== text) writeFileSync(path, fixed);
    }
  }
}

export function build() {
  // Compiled files of deleted sources must not linger (and ship); dist/packages is left alone.
  for (const dir of ['coordinator', 'participant-adapter', 'migrations', '.build-stamp']) rmSync(join(DIST, dir), { recursive: true, force: true });
  let tsc;
  try {
    tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  } catch {
    // `npm ci --omit=dev` runs `prepare` without the devDependencies: say so, rather than a stack.
    throw new Error('typescript (a devDependency) is not installed: build with every dependency installed, or deploy the tarball of `npm run package`');
  }
  const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--noCheck'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`tsc failed (exit ${r.status ?? r.signal})`);
  rewriteDeclarationSpecifiers(DIST);
  for (const asset of ASSETS) cpSync(join(ROOT, asset), join(DIST, asset), { recursive: true });
  writeFileSync(STAMP, `${new Date().toISOString()}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const ifStale = process.argv.includes('--if-stale');
  if (ifStale && !isStale()) {
    process.stdout.write(`${relative(process.cwd(), DIST) || '.'}: up to date\n`);
  } else {
    const started = Date.now();
    build();
    process.stdout.write(`built ${relative(process.cwd(), DIST) || '.'} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
}
