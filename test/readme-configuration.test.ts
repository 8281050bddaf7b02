import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
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

describe('the README configuration table', () => {
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
});
