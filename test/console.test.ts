import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { preparedOn, withDecisionHeld } from './harness/decision-hold.ts';
import { eventually, query, restartAfterCrash, startFlakyParticipant } from './harness/waits.ts';
import { TOKENS, createWorld, move, pause, type World } from './harness/world.ts';

/*
 * The console in headless Chromium (Debian's package; .ci/run installs it): an operator finds an
 * in-doubt transaction made by cutting a participant off after prepare, tries the forbidden action
 * and sees the refusal, resolves it properly, and sees it complete once the participant is back.
 */
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const ARTIFACTS = fileURLToPath(new URL('../.tmp/artifacts/', import.meta.url));

describe.skipIf(!CHROMIUM)('the operator console', () => {
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  let browser: Browser;
  beforeAll(async () => {
    flaky = await startFlakyParticipant();
    world = await createWorld({
      extraResources: { flaky: flaky.url },
      env: { TPC_IN_DOUBT_AFTER_ATTEMPTS: '1', TPC_RETRY_BASE_MS: '200', TPC_RETRY_MAX_MS: '1000' },
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await world?.close();
    await flaky?.cluster.destroy();
  });

  it('shows an in-doubt transaction, refuses the forbidden action, and resolves it', async () => {
    // A commit decision that cannot reach flaky: hold the decision until both branches are prepared, crash flaky.
    const { id, answer } = await withDecisionHeld(world, move('bank_a', 'flaky', 70, 3, { before: [pause(0.5)] }), async () => (await preparedOn(flaky.url, 'tpc:')).length === 1, () => flaky.cluster.crash());
    expect(answer.status).toBe(202);
    await eventually(() => world.request('GET', `/v1/transactions/${id}`), (r) => r.body.inDoubt === true, 'the transaction in doubt');

    const page = await browser.newPage();
    await page.goto(`${world.service.url}/console/`);
    await page.fill('#token', TOKENS.full);
    await page.click('#token-form button');
    // The in-doubt transaction comes first and is marked.
    const first = page.locator('tbody tr').first();
    await first.getByText('in doubt').waitFor();
    await first.locator('a').click();
    await page.getByRole('heading', { name: /Transaction/ }).waitFor();
    await page.getByText('unreachable', { exact: false }).first().waitFor();

    // Aborting against the commit decision is refused, with the reason why.
    await page.click('#resolve-abort');
    await page.fill('#reason', 'the customer cancelled');
    await page.getByRole('button', { name: 'Resolve' }).click();
    const refusal = page.locator('.refusal');
    await refusal.waitFor();
    expect(await refusal.textContent()).toMatch(/Refused \(409\).*durable commit decision/);

    // Resolving it the way it was decided is accepted; it completes once flaky is back.
    await page.click('#resolve-commit');
    await page.fill('#reason', 'finish the transfer');
    await page.getByRole('button', { name: 'Resolve' }).click();
    await page.locator('.ok').waitFor();
    await restartAfterCrash(flaky.cluster);
    await eventually(async () => {
      await page.reload();
      return (await page.locator('main').textContent()) ?? '';
    }, (text) => /committed/.test(text) && !/in doubt/.test(text.split('Branches')[0] ?? ''), 'the console showing it committed', 30_000);
    await page.getByText('operator_resolve').first().waitFor();
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}console-detail.png`, fullPage: true });
    expect((await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 3'))[0]!.balance).toBe(1070);
    await page.close();
  });

  it('pages through older transactions and back to the newest', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await world.submit({ branches: [{ resource: 'bank_c', statements: [{ sql: 'SELECT $1::int AS n', params: [i] }] }] });
      ids.push(r.body.id);
    }
    const page = await browser.newPage();
    await page.goto(`${world.service.url}/console/`);
    await page.fill('#token', TOKENS.full);
    await page.click('#token-form button');
    await page.goto(`${world.service.url}/console/#/?limit=2&resource=bank_c`);
    await page.locator(`a[href="#/tx/${ids[2]}"]`).waitFor();
    await page.click('#next-page');
    await page.getByRole('heading', { name: 'Transactions (older)' }).waitFor();
    await page.locator(`a[href="#/tx/${ids[0]}"]`).waitFor();
    expect(await page.locator(`a[href="#/tx/${ids[2]}"]`).count()).toBe(0);
    await page.click('#first-page');
    await page.locator(`a[href="#/tx/${ids[2]}"]`).waitFor();
    await page.close();
  });

  it('lists the resources and rolls back an orphan after asking for a reason', async () => {
    // A prepared branch of the namespace that the log does not know, as a coordinator that died
    // before its begin record would leave it.
    const gid = `tpc:${world.namespace}:${randomUUID()}:0`;
    await query(world.urls.bank_b, `BEGIN; UPDATE accounts SET balance = balance - 5 WHERE id = 9; PREPARE TRANSACTION '${gid}'`);
    const page = await browser.newPage();
    await page.goto(`${world.service.url}/console/`);
    await page.fill('#token', TOKENS.full);
    await page.click('#token-form button');
    await page.click('#resources-link');
    await page.locator('#resources').waitFor();
    const row = page.locator('#resources tbody tr', { hasText: 'bank_b' });
    expect(await row.textContent()).toContain('postgres');
    const orphan = page.locator('#orphans tbody tr', { hasText: gid });
    await orphan.waitFor();
    await orphan.getByRole('button', { name: 'Roll back…' }).click();
    await page.fill('#orphan-reason', 'left by a crashed coordinator');
    await page.getByRole('button', { name: 'Roll back', exact: true }).click();
    await page.locator('#orphan-outcome .ok').waitFor();
    expect(await page.locator('#orphans', { hasText: gid }).count()).toBe(0);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}console-resources.png`, fullPage: true });
    expect(await preparedOn(world.urls.bank_b, gid)).toEqual([]);
    expect((await query<{ balance: number }>(world.urls.bank_b, 'SELECT balance FROM accounts WHERE id = 9'))[0]!.balance).toBe(1000);
    await page.close();
  });
});
