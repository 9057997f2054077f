// The browser bundle stays small: its size is reported, and the test fails
// above the budget.
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { expect, test } from 'vitest';

/** Budgets for dist/herald.min.js, in bytes (centrifuge-js is about 35 kB minified). */
export const BUDGET = { minified: 14_000, gzipped: 6_000 };

test('browser bundle size within budget', () => {
  const min = readFileSync(new URL('../dist/herald.min.js', import.meta.url));
  const gz = gzipSync(min, { level: 9 }).length;
  console.log(`dist/herald.min.js: ${min.length} bytes minified, ${gz} bytes gzipped (budget ${BUDGET.minified} / ${BUDGET.gzipped})`);
  expect(min.length).toBeLessThanOrEqual(BUDGET.minified);
  expect(gz).toBeLessThanOrEqual(BUDGET.gzipped);
});
