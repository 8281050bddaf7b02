import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/harness/build-dist.ts', 'test/harness/global-setup.ts'],
    // Tests start clusters, kill servers and wait on deadlines: generous bounds, never asserted as speed.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
