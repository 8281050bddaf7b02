import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { preparedOn, withDecisionHeld } from './harness/decision-hold.ts';
import { eventually, query, restartAfterCrash, startFlakyParticipant } from './harness/waits.ts';
import { TOKENS, createWorld, move, pause, transfer, type World } from './harness/world.ts';

/*
 * The console in headless Chromium (Debian's package; .ci/run installs it): an operator finds an
 * in-doubt transaction made by cutting a participant off after prepare, tries the forbidden action
 * and sees the refusal, resolves it properly, and watches it complete without reloading; the list
 * refreshes itself, counts per status, finds a transaction by its short id, and fits a phone.
 * Screenshots go to .tmp/artifacts/ (git-ignored), beside the assertions they illustrate.
 */
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const ARTIFACTS = fileURLToPath(new URL('../.tmp/artifacts/', import.meta.url));
// console.js refreshes every 2 s: three periods is "it would have refreshed by now".
const REFRESH_WAIT_MS = 6500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function shoot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}${name}.png`, fullPage: true });
}

/** Set on the window: still there later proves the page was not reloaded in between. */
// Expressions evaluated in the page (strings: the tests are type-checked without the DOM's types).
const mark = (page: Page) => page.evaluate('window.marked = true');
const stillMarked = (page: Page) => page.evaluate('window.marked === true');
const overflow = (page: Page) => page.evaluate('document.documentElement.scrollWidth') as Promise<number>;
const refreshes = (page: Page) => page.evaluate('document.body.dataset.refreshes');

describe.skipIf(!CHROMIUM)('the operator console', () => {
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  let browser: Browser;

  async function signedIn(viewport = { width: 1280, height: 900 }): Promise<Page> {
    const page = await browser.newPage({ viewport });
    await page.goto(`${world.service.url}/console/`);
    await page.fill('#token', TOKENS.full);
    await page.click('#token-form button');
    return page;
  }

  beforeAll(async () => {
    flaky = await startFlakyParticipant();
    world = await createWorld({
      extraResources: { flaky: flaky.url },
      // The begin record written at once (not deferred): a test holds its row to stop the decision.
      env: { TPC_IN_DOUBT_AFTER_ATTEMPTS: '1', TPC_RETRY_BASE_MS: '200', TPC_RETRY_MAX_MS: '1000', TPC_BEGIN_DEFER_MS: '0' },
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await world?.close();
    await flaky?.cluster.destroy();
  });

  it('shows an in-doubt transaction, refuses the forbidden action, resolves it and sees it complete without a reload', async () => {
    // A commit decision that cannot reach flaky: hold the decision until both branches are prepared, crash flaky.
    const { id, answer } = await withDecisionHeld(
      world,
      move('bank_a', 'flaky', 70, 3, { before: [pause(0.5)] }),
      async () => (await preparedOn(flaky.url, 'tpc:')).length === 1,
      () => flaky.cluster.crash(),
    );
    expect(answer.status).toBe(202);
    await eventually(
      () => world.request('GET', `/v1/transactions/${id}`),
      (r) => r.body.inDoubt === true,
      'the transaction in doubt',
    );

    const page = await signedIn();
    // The in-doubt transaction comes first and is marked; the counts say so too.
    const first = page.locator('tbody tr').first();
    await first.getByText('in doubt').waitFor();
    expect(await page.locator('#counts [data-status="in doubt"] strong').textContent()).toBe('1');
    await first.locator('a').click();
    await page.getByRole('heading', { name: /Transaction/ }).waitFor();
    await page.getByText('unreachable', { exact: false }).first().waitFor();
    const timeline = page.locator('#timeline');
    expect(await timeline.textContent()).toMatch(/Decided: commit.*Flagged in doubt.*flaky: prepared in the log/s);
    // On a phone too: the participant's connection error, one long word, wraps inside its card.
    await page.setViewportSize({ width: 400, height: 900 });
    expect(await overflow(page)).toBeLessThanOrEqual(400);
    await shoot(page, 'console-narrow-in-doubt');
    await page.setViewportSize({ width: 1280, height: 900 });
    await mark(page);

    // While the dialog is open nothing refreshes under the operator's eyes. A refresh already on
    // its way when the dialog opened still lands: count from the first tick that saw the dialog.
    await page.click('#resolve-abort');
    await page.locator('#live-state', { hasText: 'dialog' }).waitFor();
    const before = await refreshes(page);
    await sleep(REFRESH_WAIT_MS);
    expect(await refreshes(page)).toBe(before);
    expect(await page.locator('#live-state').textContent()).toContain('dialog');

    // Aborting against the commit decision is refused, with the reason why.
    await page.fill('#reason', 'the customer cancelled');
    await page.getByRole('button', { name: 'Resolve' }).click();
    const refusal = page.locator('.refusal');
    await refusal.waitFor();
    expect(await refusal.textContent()).toMatch(/Refused \(409\).*durable commit decision/);
    await page.locator('#timeline .tl-operator-refused', { hasText: 'the customer cancelled' }).waitFor();

    // Resolving it the way it was decided is accepted; it completes once flaky is back, and the
    // page, refreshing itself, shows it.
    await page.click('#resolve-commit');
    await page.fill('#reason', 'finish the transfer');
    await page.getByRole('button', { name: 'Resolve' }).click();
    await page.locator('.ok').waitFor();
    await restartAfterCrash(flaky.cluster);
    await page.locator('.summary .status-committed').waitFor({ timeout: 30_000 });
    expect(await stillMarked(page)).toBe(true);
    expect(await page.locator('.summary').textContent()).not.toContain('in doubt');
    expect(await timeline.textContent()).toMatch(/Operator full: commit — drove.*flaky: committed.*Finished: committed/s);
    await shoot(page, 'console-in-doubt-resolved');
    expect((await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 3'))[0]!.balance).toBe(1070);
    await page.close();
  });

  it('refreshes the list live: a new transaction, its duration, the reason an aborted one failed, and the counts', async () => {
    const page = await signedIn();
    const committedChip = page.locator('#counts [data-status="committed"] strong');
    await committedChip.waitFor();
    const committed = Number(await committedChip.textContent());
    const aborted = Number(await page.locator('#counts [data-status="aborted"] strong').textContent());
    await mark(page);

    const ok = await world.submit(transfer('bank_a', 'bank_b', 5));
    expect(ok.status).toBe(201);
    const failed = await world.submit(transfer('bank_a', 'bank_b', 1_000_000));
    expect(failed.status).toBe(409);
    const okRow = page.locator(`tr[data-id="${ok.body.id}"]`);
    const failedRow = page.locator(`tr[data-id="${failed.body.id}"]`);
    await okRow.waitFor({ timeout: REFRESH_WAIT_MS });
    await failedRow.waitFor({ timeout: REFRESH_WAIT_MS });
    expect(await stillMarked(page)).toBe(true);
    expect(Number(await committedChip.textContent())).toBe(committed + 1);
    expect(Number(await page.locator('#counts [data-status="aborted"] strong').textContent())).toBe(aborted + 1);

    expect(await okRow.locator('td[data-label="Duration"]').textContent()).toMatch(/^\d+(\.\d+)? (ms|s)$/);
    expect(await okRow.locator('.status').textContent()).toBe('committed');
    type Styled = { getComputedStyle(e: unknown): { backgroundColor: string } };
    const colour = (row: typeof okRow) => row.locator('.status').evaluate((e) => (globalThis as unknown as Styled).getComputedStyle(e).backgroundColor);
    expect(await colour(okRow)).not.toBe(await colour(failedRow));
    // Which branch, which statement, which error, in words.
    const { error } = failed.body as { error: { code: string; message: string } };
    expect(await failedRow.locator('.reason').textContent()).toBe(
      `The first statement on bank_a: an expectation on the rows touched failed — ${error.message}`,
    );
    await shoot(page, 'console-list');

    // The short id shown finds it, in the search box and in the address.
    await page.fill('#filter-id', ok.body.id.slice(0, 8));
    await page.click('.filters button[type="submit"]');
    await page.waitForURL(`**#/tx/${ok.body.id}`);
    await page.getByRole('heading', { name: ok.body.id }).waitFor();
    await page.goto(`${world.service.url}/console/#/tx/${failed.body.id.slice(0, 8)}`);
    await page.waitForURL(`**#/tx/${failed.body.id}`);
    expect(await page.locator('#reason').textContent()).toContain('Why it aborted: The first statement on bank_a');

    // Not an id: explained, and nothing is asked of the API.
    await page.goto(`${world.service.url}/console/#/`);
    await page.fill('#filter-id', "ab%_'");
    await page.click('.filters button[type="submit"]');
    expect(await page.locator('#filter-id-help').textContent()).toContain('4 or more hex digits');
    await page.close();
  });

  it('lists the candidates of an ambiguous prefix', async () => {
    // Two finished transactions whose ids share 8 hex digits, as a busy log eventually has.
    const ids = ['feedbeef-0000-4000-8000-000000000001', 'feedbeef-0000-4000-8000-000000000002'];
    for (const id of ids) {
      await world.db.log.query(
        `INSERT INTO tpc_transactions (id, namespace, status, deadline, decided_at, completed_at, branches) VALUES ($1, $2, 'aborted', now(), now(), now(), '[]')`,
        [id, world.namespace],
      );
    }
    const page = await signedIn();
    await page.goto(`${world.service.url}/console/#/tx/feedbeef`);
    await page.locator('#candidates li').nth(1).waitFor();
    expect(await page.locator('#candidates').textContent()).toContain(ids[0]);
    await page.goto(`${world.service.url}/console/#/`);
    await page.fill('#filter-id', 'FEEDBEEF-0000');
    await page.click('.filters button[type="submit"]');
    await page.getByRole('heading', { name: '2 transactions start with feedbeef-0000' }).waitFor();
    expect(await page.locator('#transactions tbody tr').count()).toBe(2);
    await page.close();
  });

  it("shows a transaction's timeline with times, durations and collapsible detail", async () => {
    const ok = await world.submit(transfer('bank_a', 'bank_c', 3));
    expect(ok.status).toBe(201);
    const page = await signedIn();
    await page.goto(`${world.service.url}/console/#/tx/${ok.body.id}`);
    const timeline = page.locator('#timeline');
    await timeline.waitFor();
    expect(await timeline.textContent()).toMatch(
      /0 msBegun by full.*bank_a: work and prepare.*bank_c: work and prepare.*Decided: commit.*bank_a: committed \(COMMIT PREPARED\).*bank_c: committed.*Finished: committed.*total/s,
    );
    expect(await page.locator('#phases').textContent()).toMatch(/until the decision \d.*phase 2 \d.*total \d/s);
    const detail = timeline.locator('details').first();
    expect(await detail.locator('pre').isVisible()).toBe(false);
    await detail.locator('summary').click();
    expect(await detail.locator('pre').textContent()).toContain('"timeoutMs": 10000');
    await shoot(page, 'console-timeline');
    await page.close();
  });

  it('fits 400 px and 1600 px without horizontal overflow', async () => {
    const narrow = await signedIn({ width: 400, height: 900 });
    await narrow.locator('#transactions tbody tr').first().waitFor();
    expect(await overflow(narrow)).toBeLessThanOrEqual(400);
    await shoot(narrow, 'console-narrow');
    const id = (await narrow.locator('#transactions tbody tr').first().getAttribute('data-id'))!;
    await narrow.goto(`${world.service.url}/console/#/tx/${id}`);
    await narrow.locator('#timeline').waitFor();
    expect(await overflow(narrow)).toBeLessThanOrEqual(400);
    await shoot(narrow, 'console-narrow-transaction');
    await narrow.goto(`${world.service.url}/console/#/resources`);
    await narrow.locator('#resources').waitFor();
    expect(await overflow(narrow)).toBeLessThanOrEqual(400);
    await narrow.close();

    const wide = await signedIn({ width: 1600, height: 1000 });
    await wide.locator('#transactions tbody tr').first().waitFor();
    expect(await overflow(wide)).toBeLessThanOrEqual(1600);
    await wide.close();
  });

  it('keeps the token per tab and links to the Bull Board and back', async () => {
    const context = await browser.newContext();
    const a = await context.newPage();
    await a.goto(`${world.service.url}/console/`);
    await a.fill('#token', TOKENS.full);
    await a.click('#token-form button');
    await a.locator('#counts').waitFor();
    expect(await a.evaluate("[sessionStorage.getItem('tpc-token'), localStorage.length]")).toEqual([TOKENS.full, 0]);
    // Another tab of the same browser has no token until one is entered there.
    const b = await context.newPage();
    await b.goto(`${world.service.url}/console/`);
    await b.getByText('Enter an API token').waitFor();
    await a.click('#queues-link');
    await a.waitForURL('**/queues/');
    expect(await a.locator('#__UI_CONFIG__').textContent()).toContain('"url":"/console/"');
    await context.close();
  });

  it('pages through older transactions and back to the newest', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await world.submit({ branches: [{ resource: 'bank_c', statements: [{ sql: 'SELECT $1::int AS n', params: [i] }] }] });
      ids.push(r.body.id);
    }
    const page = await signedIn();
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
    const page = await signedIn();
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
    // The list is drawn again after the outcome shows: wait for the row to go, then check it stays gone.
    await page.locator('#orphans tbody tr', { hasText: gid }).waitFor({ state: 'detached', timeout: 10_000 });
    expect(await page.locator('#orphans', { hasText: gid }).count()).toBe(0);
    await shoot(page, 'console-resources');
    expect(await preparedOn(world.urls.bank_b, gid)).toEqual([]);
    expect((await query<{ balance: number }>(world.urls.bank_b, 'SELECT balance FROM accounts WHERE id = 9'))[0]!.balance).toBe(1000);
    await page.close();
  });
});
