#!/usr/bin/env node
// `npm run package`: builds, then packs the two packages into dist/packages/:
//
//   pg-2pc-coordinator-<version>.tgz  everything: service, embedded coordinator, participant adapter
//                                     and router, CLI (bin/tpc.js), migrations, the README and docs/;
//   pg-2pc-client-<version>.tgz       what a service needs to take part: the files that the client
//                                     entry (coordinator/sdk/client-package.ts) reaches, depending on
//                                     pg and kysely only.
//
// Each package is assembled in a temporary directory from the compiled tree with a package.json
// written here from the repository's (name, version, dependencies), so the repository keeps one
// package.json and its layout, and neither tarball can ship tests, benchmarks or CI files: only
// what is copied below is in them.
//
//   --out <dir>   where the tarballs go (default dist/packages)
//   --no-build    pack the dist/ that is there (the test suite builds it once for every test)
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { build } from './build.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist');
const CLIENT_ENTRY = 'coordinator/sdk/client-package';
// The client's whole dependency tree: a service that only takes part must not install the server.
const CLIENT_DEPENDENCIES = ['pg', 'kysely'];
// Run-time dependencies of the repository that the compiled coordinator does not need.
const DEV_ONLY_AT_RUN_TIME = ['tsx'];
// Types the published .d.ts files import (pg and express ship none): a strict consumer without
// skipLibCheck needs them. The full package depends on them; the client, whose tree must stay pg
// and kysely, names @types/pg as an optional peer (a TypeScript service making pg.Pools has it).
const FULL_TYPE_DEPENDENCIES = ['@types/pg', '@types/express'];

const rootPackage = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const { version } = rootPackage;
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
const rangeOf = (name) => rootPackage.dependencies[name] ?? rootPackage.devDependencies[name] ?? `^${lock.packages[`node_modules/${name}`].version}`;
const pick = (names) => Object.fromEntries(names.map((n) => [n, rangeOf(n)]));
const common = {
  version,
  description: rootPackage.description,
  license: rootPackage.license,
  type: 'module',
  engines: rootPackage.engines,
};
const entry = (path) => ({ types: `./${path}.d.ts`, default: `./${path}.js` });

/** The specifiers a compiled .js or .d.ts imports (static, dynamic, `export … from`, `import type`). */
function importsOf(file) {
  // TypeScript's own scanner: it skips comments and strings (the SDK's JSDoc shows an import).
  return ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles.map((f) => f.fileName);
}

/**
 * Every compiled file the client entry reaches through its .js and .d.ts imports, with their maps.
 * Throws on a bare import outside CLIENT_DEPENDENCIES and node:*, which would break the promise
 * that the client installs pg and kysely only.
 */
function clientFiles() {
  const files = new Set();
  const queue = [`${CLIENT_ENTRY}.js`, `${CLIENT_ENTRY}.d.ts`];
  while (queue.length) {
    const file = queue.shift();
    if (files.has(file)) continue;
    if (!existsSync(join(DIST, file))) throw new Error(`the client entry reaches ${file}, which the build did not make`);
    files.add(file);
    for (const spec of importsOf(join(DIST, file))) {
      if (spec.startsWith('.')) {
        const target = posix.normalize(posix.join(posix.dirname(file), spec));
        // A .d.ts keeps the source's ".ts" specifiers: both name the compiled module's pair.
        const base = target.replace(/\.(d\.ts|ts|js)$/, '');
        queue.push(`${base}.js`, `${base}.d.ts`);
      } else if (!spec.startsWith('node:') && !CLIENT_DEPENDENCIES.includes(spec.split('/')[0])) {
        throw new Error(`${file} imports '${spec}': the client package may depend on ${CLIENT_DEPENDENCIES.join(' and ')} only`);
      }
    }
  }
  return [...files]
    .flatMap((f) => (f.endsWith('.js') ? [f, `${f}.map`] : [f]))
    .filter((f) => existsSync(join(DIST, f)))
    .sort();
}

function npmPack(stage, out) {
  const json = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], { cwd: stage, encoding: 'utf8' });
  return join(out, JSON.parse(json)[0].filename);
}

function packCoordinator(stage, out) {
  for (const dir of ['coordinator', 'participant-adapter', 'migrations']) cpSync(join(DIST, dir), join(stage, 'dist', dir), { recursive: true });
  cpSync(join(ROOT, 'bin', 'tpc.js'), join(stage, 'bin', 'tpc.js'));
  cpSync(join(ROOT, 'README.md'), join(stage, 'README.md'));
  // The README links into docs/: the links hold in the package too.
  if (existsSync(join(ROOT, 'docs'))) cpSync(join(ROOT, 'docs'), join(stage, 'docs'), { recursive: true });
  const dependencies = { ...rootPackage.dependencies, ...pick(FULL_TYPE_DEPENDENCIES) };
  for (const name of DEV_ONLY_AT_RUN_TIME) delete dependencies[name];
  const pkg = {
    name: rootPackage.name,
    ...common,
    exports: {
      '.': entry('dist/coordinator/sdk/index'),
      './client': entry(`dist/${CLIENT_ENTRY}`),
      './participant-adapter': entry('dist/participant-adapter/index'),
      './package.json': './package.json',
    },
    bin: rootPackage.bin,
    dependencies,
  };
  writeFileSync(join(stage, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  return npmPack(stage, out);
}

function packClient(stage, out) {
  // The files keep their paths below dist/, so their relative imports hold.
  for (const file of clientFiles()) {
    mkdirSync(dirname(join(stage, file)), { recursive: true });
    cpSync(join(DIST, file), join(stage, file));
  }
  const pkg = {
    name: 'pg-2pc-client',
    ...common,
    description: 'Client of the pg-2pc-coordinator: global transactions across PostgreSQL databases from a service (createClient, prepareBranch)',
    exports: { '.': entry(CLIENT_ENTRY), './package.json': './package.json' },
    dependencies: pick(CLIENT_DEPENDENCIES),
    peerDependencies: pick(['@types/pg']),
    peerDependenciesMeta: { '@types/pg': { optional: true } },
  };
  writeFileSync(join(stage, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  writeFileSync(
    join(stage, 'README.md'),
    [
      '# pg-2pc-client',
      '',
      'What a service needs to take part in global transactions of a pg-2pc-coordinator:',
      '`createClient`, `TransactionAbortedError`, `TransactionOutcomeUnknownError`, `prepareBranch` and',
      '`ParticipantError`, with their types. Depends on `pg` and `kysely` only. TypeScript projects also',
      'need `@types/pg` (already there in one that makes `pg.Pool`s).',
      '',
      'See the README of pg-2pc-coordinator for the SDK and its outcome contract.',
      '',
    ].join('\n'),
  );
  return npmPack(stage, out);
}

/** Builds (unless told not to) and packs both packages into `out`; returns the tarballs' paths. */
export function packageAll({ out = join(DIST, 'packages'), buildFirst = true } = {}) {
  if (buildFirst) build();
  mkdirSync(out, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'tpc-package-'));
  try {
    const stage = (name) => {
      const dir = join(work, name);
      mkdirSync(dir, { recursive: true });
      return dir;
    };
    return { coordinator: packCoordinator(stage('coordinator'), out), client: packClient(stage('client'), out) };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const outAt = args.indexOf('--out');
  const out = outAt >= 0 ? resolve(args[outAt + 1]) : undefined;
  const made = packageAll({ out, buildFirst: !args.includes('--no-build') });
  for (const file of Object.values(made)) process.stdout.write(`${relative(process.cwd(), file)}\n`);
}
