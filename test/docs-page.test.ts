import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorld, TOKENS, type World } from './harness/world.ts';

/*
 * /docs renders the OpenAPI document (Swagger UI from npm, served by the coordinator), and neither it
 * nor the queue board loads anything from another origin: no CDN, no web fonts, no validator.
 */
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));

describe('the API docs page', () => {
  let world: World;
  let browser: Browser;
  beforeAll(async () => {
    world = await createWorld();
    if (CHROMIUM) browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  });
  afterAll(async () => {
    await browser?.close();
    await world?.close();
  });

  it('is served without a token, with a policy that allows only this origin', async () => {
    const page = await fetch(`${world.service.url}/docs/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
    const html = await page.text();
    expect(html).not.toMatch(/https?:\/\//);
    for (const asset of ['/docs/swagger-ui.css', '/docs/swagger-ui-bundle.js', '/docs/init.js']) {
      expect(html).toContain(asset);
      expect((await fetch(world.service.url + asset)).status, asset).toBe(200);
    }
    expect(await (await fetch(`${world.service.url}/docs/init.js`)).text()).toMatch(/validatorUrl: null/);
    // Only Swagger UI's own files: nothing else of node_modules is reachable through it.
    expect((await fetch(`${world.service.url}/docs/package.json`)).status).toBe(404);
    expect((await fetch(`${world.service.url}/docs/..%2Fpackage.json`)).status).toBeGreaterThanOrEqual(400);
  });

  describe.skipIf(!CHROMIUM)('in Chromium', () => {
    /** Loads `path` and returns every URL the page requested, once it has rendered `selector`. */
    async function requestsOf(path: string, selector: string, cookie?: { name: string; value: string }): Promise<string[]> {
      const context = await browser.newContext();
      if (cookie) await context.addCookies([{ ...cookie, url: world.service.url }]);
      const page = await context.newPage();
      const seen: string[] = [];
      page.on('request', (r) => seen.push(r.url()));
      await page.goto(world.service.url + path);
      await page.waitForSelector(selector, { timeout: 15_000 });
      await page.waitForLoadState('networkidle');
      await context.close();
      return seen;
    }

    it('renders every operation and loads nothing from another origin', async () => {
      const context = await browser.newContext();
      const page = await context.newPage();
      const foreign: string[] = [];
      page.on('request', (r) => {
        if (!r.url().startsWith(world.service.url) && !r.url().startsWith('data:')) foreign.push(r.url());
      });
      await page.goto(`${world.service.url}/docs/`);
      await page.waitForSelector('.opblock', { timeout: 15_000 });
      await page.waitForLoadState('networkidle');
      const text = (await page.textContent('#swagger-ui')) ?? '';
      for (const path of ['/v1/transactions', '/v1/transactions/{id}/resolve', '/v1/orphans', '/readyz']) expect(text).toContain(path);
      expect(foreign).toEqual([]);
      await context.close();
    });

    it('the queue board loads nothing from another origin either', async () => {
      const session = await fetch(`${world.service.url}/v1/session`, { method: 'POST', headers: { authorization: `Bearer ${TOKENS.full}` } });
      const [name, value] = (session.headers.get('set-cookie') ?? '').split(';')[0]!.split('=');
      const urls = await requestsOf('/queues/', '#root *', { name: name!, value: value! });
      expect(urls.length).toBeGreaterThan(1);
      expect(urls.filter((u) => !u.startsWith(world.service.url) && !u.startsWith('data:'))).toEqual([]);
    });
  });
});
