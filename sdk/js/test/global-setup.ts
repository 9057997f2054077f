// Builds dist/ (the tests load the browser bundle), the herald binary the
// integration tests run and the stock alert example's backend
// (examples/stockalert, for its page's browser test), once per test run.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TestProject } from 'vitest/node';

const jsDir = resolve(__dirname, '..');
const repoRoot = resolve(jsDir, '../..');

/** The go command: $GO, go on PATH, or /usr/local/go/bin/go; '' if none. */
function findGo(): string {
  const candidates = [process.env.GO, ...(process.env.PATH || '').split(':').map((d) => d && join(d, 'go')), '/usr/local/go/bin/go'];
  return candidates.find((c): c is string => !!c && existsSync(c)) || '';
}

export default function setup(project: TestProject) {
  const t0 = Date.now();
  execFileSync(process.execPath, [join(jsDir, 'build.mjs')], { stdio: 'inherit' });
  const tBuild = Date.now();

  let bin = '';
  let stockalert = '';
  const dir = mkdtempSync(join(tmpdir(), 'herald-js-'));
  const go = findGo();
  if (go) {
    bin = join(dir, 'herald');
    execFileSync(go, ['build', '-o', bin, './cmd/herald'], { cwd: repoRoot, stdio: 'inherit' });
    stockalert = join(dir, 'stockalert');
    execFileSync(go, ['build', '-o', stockalert, './examples/stockalert'], { cwd: repoRoot, stdio: 'inherit' });
  } else if (process.env.CI) {
    throw new Error('the Go toolchain is needed to build herald for the integration tests (CI is set, so this fails instead of skipping)');
  } else {
    console.warn('herald-js tests: no Go toolchain; the tests against a real server are skipped');
  }
  console.log(`herald-js tests: built dist/ in ${tBuild - t0} ms, herald and stockalert in ${Date.now() - tBuild} ms`);
  project.provide('heraldBin', bin);
  project.provide('stockalertBin', stockalert);
  return () => rmSync(dir, { recursive: true, force: true });
}

declare module 'vitest' {
  export interface ProvidedContext {
    heraldBin: string;
    stockalertBin: string;
  }
}
