// The stock alert example's page (examples/stockalert/web) in real headless
// Chromium (Debian's, driven by playwright-core), against a real herald and
// the example's backend: a user sets an alert, a tick crosses it, and the
// alert shows on the page, acknowledged.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { HeraldServer, heraldBin } from './helpers/herald';
import { eventually } from './helpers/wait';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) {
  throw new Error(`${CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium); CI is set, so this fails instead of skipping`);
}
const stockalertBin = inject('stockalertBin');
/** Where the test leaves a screenshot of the page. */
export const SCREENSHOT = '/tmp/stockalert.png';

/** Starts the example's backend against srv; resolves with its URL when it listens. */
function startBackend(srv: HeraldServer): Promise<{ proc: ChildProcess; url: string; log: () => string }> {
  const proc = spawn(
    stockalertBin,
    // Small price steps, so that only the test's tick crosses the alert.
    ['-addr', '127.0.0.1:0', '-api', srv.api, '-ws', srv.ws, '-sdk', join(__dirname, '../dist/herald.min.js'), '-stocks', '8', '-interval', '300ms', '-vol', '2'],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, STOCKALERT_SECRET: srv.secret, STOCKALERT_API_KEY: srv.apiKey, STOCKALERT_APP: srv.app } },
  );
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('stockalert did not start in 10 s:\n' + log)), 10_000);
    proc.on('exit', (code) => reject(new Error(`stockalert exited with ${code}:\n${log}`)));
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (chunk: string) => {
      log += chunk;
      const m = /msg="stockalert listening" url=(\S+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, url: m[1], log: () => log });
      }
    });
  });
}

describe.skipIf(!haveChromium || !heraldBin || !stockalertBin)('stock alert example page in headless Chromium', () => {
  const srv = new HeraldServer();
  let backend: Awaited<ReturnType<typeof startBackend>>;
  let ctx: BrowserContext;
  let page: Page;
  const profile = mkdtempSync(join(tmpdir(), 'stockalert-chromium-'));

  beforeAll(async () => {
    await srv.start();
    backend = await startBackend(srv);
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
      viewport: { width: 1100, height: 560 },
    });
    page = ctx.pages()[0] || (await ctx.newPage());
  });

  afterAll(async () => {
    await ctx?.close();
    const p = backend?.proc;
    if (p && p.exitCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
    await srv.stop();
    rmSync(profile, { recursive: true, force: true });
  });

  test('sets an alert, a tick crosses it, the alert shows and is acknowledged', async () => {
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    const user = 'ann';
    await page.goto(`${backend.url}?user=${user}`);
    await page.waitForFunction(() => (window as any).stockalert.state === 'connected', undefined, { timeout: 10_000 });
    expect(await page.locator('#quotes tr').count()).toBe(8);

    const symbol = await page.locator('#symbol').inputValue();
    await page.fill('#pct', '2');
    await page.click('#set-alert');
    await expect.poll(() => page.locator('#my-alerts li').allTextContents(), { timeout: 10_000 }).toEqual([`${symbol} ±2 %`]);

    // The tick: move the stock to +3 % from the page's Simulate form.
    await page.fill('#move-pct', '3');
    await page.click('#move');
    await page.waitForFunction((s) => (window as any).stockalert.alerts.some((a: any) => a.symbol === s), symbol, { timeout: 10_000 });
    const first = await page.locator('#alerts li').last().textContent();
    expect(first).toContain(`${symbol} crossed +2 %`);
    const alerts = await page.evaluate(() => (window as any).stockalert.alerts);
    expect(alerts[0]).toMatchObject({ type: 'alert', symbol, bp: 200, dir: 'up', seq: 1 });

    // The live price (topic "prices") shows the move.
    await expect.poll(async () => page.locator('#quotes tr.selected td').nth(2).textContent(), { timeout: 10_000 }).toMatch(/^\+[23]\.\d\d %$/);

    // The SDK acknowledged the alert for this browser's device.
    const device = await page.evaluate((u) => localStorage.getItem(`stockalert:${u}:device`), user);
    expect(device).toBeTruthy();
    await eventually(async () => expect(await srv.unread(user, device!)).toMatchObject({ acked: alerts.length, unread: 0 }), 10_000);

    expect(await page.evaluate(() => (window as any).stockalert.errors)).toEqual([]);
    expect(pageErrors).toEqual([]);
    await page.screenshot({ path: SCREENSHOT });
    console.log('stockalert browser test: screenshot in ' + SCREENSHOT);
  });
});
