// What the build produces: the browser bundle within its size budget, and
// ESM, CommonJS and type declarations that load.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { expect, test } from 'vitest';

/** Budgets for dist/herald.min.js, in bytes (centrifuge-js is about 35 kB minified). */
export const BUDGET = { minified: 15_500, gzipped: 6_400 }; // raised from 14,000 / 6,000 for the SSE transport

const dist = (f: string) => new URL(`../dist/${f}`, import.meta.url);

test('browser bundle size within budget', () => {
  const min = readFileSync(dist('herald.min.js'));
  const gz = gzipSync(min, { level: 9 }).length;
  console.log(`dist/herald.min.js: ${min.length} bytes minified, ${gz} bytes gzipped (budget ${BUDGET.minified} / ${BUDGET.gzipped})`);
  expect(min.length).toBeLessThanOrEqual(BUDGET.minified);
  expect(gz).toBeLessThanOrEqual(BUDGET.gzipped);
});

test('ESM and CommonJS builds load, with the same exports; types are there', async () => {
  const esm = await import(dist('index.mjs').href);
  const cjs = createRequire(import.meta.url)(dist('index.cjs').pathname);
  const names = ['DisconnectCode', 'ErrorCode', 'Herald', 'Subscription', 'VERSION', 'memoryStorage', 'sseTransport', 'webSocketTransport'];
  expect(Object.keys(esm).sort()).toEqual(names);
  expect(Object.keys(cjs).sort()).toEqual(names);
  expect(typeof new esm.Herald({ endpoints: 'ws://127.0.0.1:1/ws', token: 't', storage: esm.memoryStorage() }).connect).toBe('function');
  expect(existsSync(dist('types/index.d.ts'))).toBe(true);
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  expect(Object.keys(pkg.dependencies || {})).toEqual([]); // no runtime dependencies
});
