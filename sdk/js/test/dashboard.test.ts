// The admin dashboard (internal/admin/ui/index.html, served by herald at
// /admin/) in real headless Chromium (Debian's, driven by playwright-core),
// against a real herald started with an admin token: the login refuses a
// wrong token, the live figures follow real load, and a degrade switch
// flipped on the page takes effect at the server.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ErrorContext, Herald, Message } from '../src/index';
import { HeraldServer, heraldBin } from './helpers/herald';
import { makeClient, unique } from './helpers/client';
import { Recorder } from './helpers/wait';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) {
  throw new Error(`${CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium); CI is set, so this fails instead of skipping`);
}
/** Where the test leaves screenshots of the page. */
const SHOTS = mkdtempSync(join(tmpdir(), 'herald-dashboard-'));

/** Resolves with the outcome of h's next connection attempt: 'connected', or the code it was refused with. */
function outcome(h: Herald, ms = 10_000): Promise<'connected' | number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      h.off('connected', onConnected);
      h.off('error', onError);
      reject(new Error(`no connection outcome in ${ms} ms (state ${h.state})`));
    }, ms);
    const done = (r: 'connected' | number) => {
      clearTimeout(timer);
      h.off('connected', onConnected);
      h.off('error', onError);
      resolve(r);
    };
    const onConnected = () => done('connected');
    const onError = (e: ErrorContext) => e.type === 'connect' && done(e.code ?? -1);
    h.on('connected', onConnected);
    h.on('error', onError);
  });
}

describe.skipIf(!haveChromium || !heraldBin)('admin dashboard in headless Chromium', () => {
  const srv = new HeraldServer();
  const adminToken = 'admin-' + randomBytes(12).toString('hex');
  let ctx: BrowserContext;
  let page: Page;
  const profile = mkdtempSync(join(tmpdir(), 'herald-dashboard-chromium-'));
  const pageErrors: string[] = [];

  /** The data-value of a [data-testid] element, as a number (NaN when empty or missing). */
  const value = async (testid: string) => {
    const v = await page.locator(`[data-testid="${testid}"]`).first().getAttribute('data-value', { timeout: 1000 }).catch(() => null);
    return v === null || v === '' ? NaN : Number(v);
  };
  const testid = (id: string) => page.locator(`[data-testid="${id}"]`);

  beforeAll(async () => {
    await srv.start({ admin: `{tokens: [${adminToken}]}` });
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
      viewport: { width: 1280, height: 1000 },
    });
    page = ctx.pages()[0] || (await ctx.newPage());
    page.on('pageerror', (e) => pageErrors.push(String(e)));
  });

  afterAll(async () => {
    await ctx?.close();
    await srv.stop();
    rmSync(profile, { recursive: true, force: true });
  });

  test('the admin API refuses requests without the admin token', async () => {
    for (const auth of [undefined, 'Bearer wrong-token', `Bearer ${srv.apiKey}`]) {
      const res = await fetch(srv.api + '/admin/v1/status', { headers: auth ? { Authorization: auth } : {} });
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ error: { code: 'unauthorized', message: expect.any(String) } });
    }
    const ok = await fetch(srv.api + '/admin/v1/status', { headers: { Authorization: `Bearer ${adminToken}` } });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ healthy: expect.any(Boolean), apps: [srv.app] });
  });

  test('login, live figures under load, and switches flipped on the page take effect', { timeout: 90_000 }, async () => {
    // The page itself needs no token.
    const res = await page.goto(srv.api + '/admin/');
    expect(res?.status()).toBe(200);
    await expect.poll(() => testid('login-form').isVisible()).toBe(true);

    // A wrong token is refused, and the form stays.
    await testid('token-input').fill('wrong-token');
    await testid('login-button').click();
    await expect.poll(() => testid('login-error').textContent(), { timeout: 10_000 }).toMatch(/Refused/);
    expect(await page.evaluate(() => document.body.dataset.state)).toBe('login');
    expect(await page.evaluate(() => sessionStorage.getItem('herald-admin-token'))).toBeNull();

    // The right one opens the dashboard, with live figures from the stream.
    await testid('token-input').fill(adminToken);
    await testid('login-button').click();
    await page.waitForFunction(() => document.body.dataset.state === 'dashboard', undefined, { timeout: 10_000 });
    await expect.poll(() => testid('stream-state').getAttribute('data-value'), { timeout: 10_000 }).toBe('live');
    await expect.poll(() => value('connections'), { timeout: 10_000 }).toBe(0);
    expect(await testid('node').textContent()).not.toMatch(/^–?$/);
    await expect.poll(() => testid('health').getAttribute('data-value')).toBe('true');
    expect(await value('qps')).toBeGreaterThanOrEqual(0);
    await expect.poll(() => testid(`app-${srv.app}`).isVisible(), { timeout: 10_000 }).toBe(true);

    // Load: real clients, and pushes to each through the server API until the page shows them.
    const users = Array.from({ length: 6 }, () => unique('dash'));
    const clients = users.map((u) => makeClient({ endpoints: srv.ws, token: srv.token(u), device: 'd' }));
    const got = clients.map((h) => new Recorder<Message>(h, 'push'));
    clients.forEach((h) => h.connect());
    await Promise.all(clients.map((h) => h.ready(5000)));
    await expect.poll(() => value('connections'), { timeout: 10_000 }).toBe(users.length);
    expect(await value(`app-${srv.app}-connections`)).toBe(users.length);

    let pushing = true;
    let pushed = 0;
    const load = (async () => {
      while (pushing) {
        await Promise.all(users.map((u) => srv.push(u, { data: { n: pushed } })));
        pushed++;
      }
    })();
    try {
      // The three numbers (qps, p99 delivery latency, error rate) and
      // deliveries follow the load, for the node and for the app.
      const live = async () =>
        (await value('deliveries')) > 0 && (await value('qps')) > 0 && (await value('p99')) > 0 &&
        (await value(`app-${srv.app}-qps`)) > 0 && (await value(`app-${srv.app}-p99`)) > 0 && (await value(`app-${srv.app}-deliveries`)) > 0;
      await expect.poll(live, { timeout: 15_000 }).toBe(true);
    } finally {
      pushing = false;
      await load;
    }
    await Promise.all(got.map((r) => r.until(pushed, 10_000)));
    expect(await value('error-rate')).toBe(0);
    await page.screenshot({ path: join(SHOTS, 'load.png'), fullPage: true });

    // reject_connections, globally, from the page: a new client is refused while it is on.
    const toggle = testid('switch-reject_connections');
    const checked = () => toggle.getAttribute('aria-checked');
    await expect.poll(checked, { timeout: 10_000 }).toBe('false');
    await toggle.click();
    await expect.poll(checked, { timeout: 10_000 }).toBe('true');
    await expect.poll(() => testid('banner-switch-reject_connections').isVisible()).toBe(true);
    const sw = await (await fetch(srv.api + '/admin/v1/switches', { headers: { Authorization: `Bearer ${adminToken}` } })).json();
    expect(sw.switches).toContainEqual(expect.objectContaining({ name: 'reject_connections', app: '', on: true, source: 'admin' }));

    const late = makeClient({ endpoints: srv.ws, token: srv.token(unique('late')), device: 'd' });
    const first = outcome(late);
    late.connect();
    // switched off node-wide, the WebSocket upgrade itself is answered 503 switched_off: the SDK sees
    // the connection lost (3010) before CONNECT, and keeps retrying, refused each time
    expect(await first).toBe(3010);
    await expect.poll(() => value('refused-switched_off'), { timeout: 10_000 }).toBeGreaterThan(0);
    // the clients already connected stay
    expect(clients.every((h) => h.state === 'connected')).toBe(true);
    await expect.poll(() => value('connections'), { timeout: 10_000 }).toBe(users.length);
    await page.screenshot({ path: join(SHOTS, 'switch-on.png'), fullPage: true });

    // Off again from the page: the refused client's retries get in.
    await toggle.click();
    await expect.poll(checked, { timeout: 10_000 }).toBe('false');
    await expect.poll(() => testid('banner-switch-reject_connections').count()).toBe(0);
    // the client keeps retrying (attempts under way when the switch went off may still be refused)
    await late.ready(10_000);
    await expect.poll(() => value('connections'), { timeout: 10_000 }).toBe(users.length + 1);

    // pause for the app, from the page: a push is accepted and held, then delivered once pause is off.
    const pause = testid(`switch-pause-${srv.app}`);
    await expect.poll(() => pause.getAttribute('aria-checked'), { timeout: 10_000 }).toBe('false');
    await pause.click();
    await expect.poll(() => pause.getAttribute('aria-checked'), { timeout: 10_000 }).toBe('true');
    await expect.poll(() => testid(`banner-switch-pause-${srv.app}`).isVisible()).toBe(true);
    const before = got[0].items.length;
    const held = await srv.push(users[0], { data: { held: true } });
    expect(held).toMatchObject({ seq: expect.any(Number), held: true }); // stored, not yet sent
    // two more of the server's one-second samples reach the page: the push has had time to arrive, and has not
    const t0 = Date.now();
    await page.waitForFunction((t) => (window as any).heraldDashboard.last?.t >= t + 2000, t0, { timeout: 10_000 });
    expect(got[0].items.length).toBe(before);
    await page.screenshot({ path: join(SHOTS, 'paused.png'), fullPage: true });
    await pause.click();
    await expect.poll(() => pause.getAttribute('aria-checked'), { timeout: 10_000 }).toBe('false');
    await got[0].until(before + 1, 10_000);
    expect(got[0].items[before]).toMatchObject({ seq: held.seq, data: { held: true } });

    expect(pageErrors).toEqual([]);
    const shot = join(SHOTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log('dashboard test: screenshots in ' + SHOTS);
  });
});

describe.skipIf(!haveChromium || !heraldBin)('admin dashboard under an API path prefix', () => {
  const srv = new HeraldServer();
  const adminToken = 'admin-' + randomBytes(12).toString('hex');
  let ctx: BrowserContext;
  const profile = mkdtempSync(join(tmpdir(), 'herald-dashboard-chromium-'));

  beforeAll(async () => {
    srv.apiPath = '/herald';
    await srv.start({ admin: `{tokens: [${adminToken}]}` });
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
      viewport: { width: 1280, height: 900 },
    });
  });

  afterAll(async () => {
    await ctx?.close();
    await srv.stop();
    rmSync(profile, { recursive: true, force: true });
  });

  test('the page at <prefix>/admin/ calls the admin API under the same prefix', async () => {
    const page = ctx.pages()[0] || (await ctx.newPage());
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    expect(srv.api).toMatch(/\/herald$/);
    await page.goto(srv.api + '/admin/');
    await page.locator('[data-testid="token-input"]').fill(adminToken);
    await page.locator('[data-testid="login-button"]').click();
    await page.waitForFunction(() => document.body.dataset.state === 'dashboard', undefined, { timeout: 10_000 });
    const stream = page.locator('[data-testid="stream-state"]');
    await expect.poll(() => stream.getAttribute('data-value'), { timeout: 10_000 }).toBe('live');
    const toggle = page.locator(`[data-testid="switch-presence_off-${srv.app}"]`);
    await expect.poll(() => toggle.getAttribute('aria-checked'), { timeout: 10_000 }).toBe('false');
    await toggle.click();
    await expect.poll(() => toggle.getAttribute('aria-checked'), { timeout: 10_000 }).toBe('true');
    const res = await fetch(srv.api + '/admin/v1/switches', { headers: { Authorization: `Bearer ${adminToken}` } });
    expect((await res.json()).switches).toContainEqual(expect.objectContaining({ name: 'presence_off', app: srv.app, on: true }));
    expect(pageErrors).toEqual([]);
  });
});
