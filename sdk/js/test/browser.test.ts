// The browser bundle in real headless Chromium (Debian's, driven by
// playwright-core, which never downloads a browser), against a real herald.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HeraldServer, heraldBin } from './helpers/herald';
import { eventually } from './helpers/wait';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) {
  throw new Error(`${CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium); CI is set, so this fails instead of skipping`);
}
/** Where the test leaves a screenshot of the page. */
export const SCREENSHOT = join(tmpdir(), 'herald-browser-test.png');

describe.skipIf(!haveChromium || !heraldBin)('browser bundle in headless Chromium', () => {
  const srv = new HeraldServer();
  let http: Server;
  let base = '';
  let ctx: BrowserContext;
  let page: Page;
  const profile = mkdtempSync(join(tmpdir(), 'herald-chromium-'));

  beforeAll(async () => {
    await srv.start();
    const files: Record<string, [string, string]> = {
      '/': ['text/html', join(__dirname, 'browser/page.html')],
      '/herald.min.js': ['text/javascript', join(__dirname, '../dist/herald.min.js')],
    };
    http = createServer((req, res) => {
      const f = files[new URL(req.url!, 'http://x').pathname];
      if (!f) return void res.writeHead(404).end();
      res.writeHead(200, { 'Content-Type': f[0] }).end(readFileSync(f[1]));
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
      viewport: { width: 800, height: 500 },
    });
    page = ctx.pages()[0] || (await ctx.newPage());
  });

  afterAll(async () => {
    await ctx?.close();
    await new Promise((r) => http?.close(r));
    await srv.stop();
    rmSync(profile, { recursive: true, force: true });
  });

  test('connects, receives an inbox push and a topic publication, keeps positions in localStorage', async () => {
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    const user = 'browser-user';
    const topic = 'browser-news';
    const url = `${base}/?${new URLSearchParams({ ws: srv.ws, token: srv.token(user), topic })}`;
    await page.goto(url);
    await page.waitForFunction(() => (window as any).heraldLog.subscribed !== null, undefined, { timeout: 10_000 });
    expect(await page.evaluate(() => (window as any).herald.state)).toBe('connected');

    await srv.push(user, { data: { text: 'hello from the API' } });
    await srv.publish(topic, { data: { price: 42 } });
    await page.waitForFunction(() => (window as any).heraldLog.inbox.length === 1 && (window as any).heraldLog.publications.length === 1, undefined, { timeout: 10_000 });

    const log = await page.evaluate(() => (window as any).heraldLog);
    expect(log.inbox).toEqual([{ stream: `u:${user}`, seq: 1, id: expect.any(String), data: { text: 'hello from the API' } }]);
    expect(log.publications).toEqual([{ stream: `t:${topic}`, seq: 1, data: { price: 42 } }]);
    expect(log.subscribed).toMatchObject({ recovering: false, recovered: false });
    expect(log.states).toEqual(['connecting', 'connected']);
    expect(log.errors).toEqual([]);
    expect(pageErrors).toEqual([]);

    // the default storage in a browser is localStorage: device id and positions are there
    const device = await page.evaluate(() => localStorage.getItem('herald:device'));
    expect(device).toMatch(/^js-/);
    await page.waitForFunction(() => (localStorage.getItem('herald:pos') || '').includes('u:browser-user'));
    // and the inbox ACK reached the server for that device
    await eventually(async () => expect(await srv.unread(user, device!)).toMatchObject({ acked: 1, unread: 0 }));

    expect(await page.locator('#inbox li').allTextContents()).toEqual(['#1 {"text":"hello from the API"}']);
    expect(await page.locator('#publications li').allTextContents()).toEqual(['#1 {"price":42}']);
    await page.screenshot({ path: SCREENSHOT });
    console.log('browser test: screenshot in ' + SCREENSHOT);
  });

  test('SSE in the browser: the real EventSource and fetch, cross-origin (CORS), inbox, topic and ACK', async () => {
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    const user = 'browser-sse-user';
    const topic = 'browser-sse-news';
    const url = `${base}/?${new URLSearchParams({ ws: srv.ws, token: srv.token(user), topic, transports: 'sse' })}`;
    await page.goto(url);
    await page.waitForFunction(() => (window as any).heraldLog.subscribed !== null, undefined, { timeout: 10_000 });
    expect(await page.evaluate(() => (window as any).heraldLog.transport)).toBe('sse');
    await srv.push(user, { data: { text: 'over sse' } });
    await srv.publish(topic, { data: { n: 1 } });
    await page.waitForFunction(() => (window as any).heraldLog.inbox.length === 1 && (window as any).heraldLog.publications.length === 1, undefined, { timeout: 10_000 });
    const log = await page.evaluate(() => (window as any).heraldLog);
    expect(log.inbox).toEqual([{ stream: `u:${user}`, seq: 1, id: expect.any(String), data: { text: 'over sse' } }]);
    expect(log.publications).toEqual([{ stream: `t:${topic}`, seq: 1, data: { n: 1 } }]);
    expect(log.errors).toEqual([]);
    expect(pageErrors).toEqual([]);
    const device = await page.evaluate(() => localStorage.getItem('herald:device'));
    await eventually(async () => expect(await srv.unread(user, device!)).toMatchObject({ acked: 1, unread: 0 }));
  });
});
