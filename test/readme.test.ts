import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/*
 * The README is the front door: every environment variable the code reads is a row of its
 * configuration table (a variable mentioned only in passing elsewhere is not documented).
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NAMED = /\b(TPC_[A-Z][A-Z0-9_]*[A-Z0-9]|DATABASE_URL|REDIS_URL|LOG_LEVEL)\b/g;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

describe('the README', () => {
  it('has a row for every environment variable the code reads', () => {
    const read = new Set<string>();
    for (const file of [...sources(join(ROOT, 'coordinator')), ...sources(join(ROOT, 'participant-adapter'))]) {
      for (const m of readFileSync(file, 'utf8').matchAll(NAMED)) read.add(m[1]!);
    }
    // PORT and HOST are too common as words to find by pattern; the config schema reads them.
    read.add('PORT');
    read.add('HOST');
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const rows = readme.split('\n').filter((line) => line.startsWith('| `'));
    const documented = new Set(rows.flatMap((row) => [...row.split('|')[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1]!)));
    // TPC_RETRY_* and the like are families: a row naming the family covers each of its members.
    const missing = [...read].filter((v) => !documented.has(v)).sort();
    expect(missing, `variables read by the code without a row in the README's configuration table`).toEqual([]);
    expect(read.size).toBeGreaterThan(30);
  });

  it('links only to files inside the repository, and each exists', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const targets = [...readme.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((t) => !/^(https?:|mailto:|#)/.test(t));
    expect(targets.length).toBeGreaterThan(3);
    for (const target of targets) {
      const path = normalize(join(ROOT, target.split('#')[0]!));
      expect(path.startsWith(ROOT), `${target} leads outside the repository`).toBe(true);
      expect(existsSync(path), `${target} does not exist`).toBe(true);
    }
  });
});
