// Builds dist/: ESM, CommonJS, the browser IIFE bundle (global Herald) and
// the .d.ts type declarations.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));
process.chdir(root);
rmSync('dist', { recursive: true, force: true });

const common = { bundle: true, target: 'es2022', logLevel: 'warning', legalComments: 'none' };
await Promise.all([
  build({ ...common, entryPoints: ['src/index.ts'], format: 'esm', outfile: 'dist/index.mjs', platform: 'neutral' }),
  build({ ...common, entryPoints: ['src/index.ts'], format: 'cjs', outfile: 'dist/index.cjs', platform: 'node' }),
  build({
    ...common,
    entryPoints: ['src/browser.ts'],
    format: 'iife',
    outfile: 'dist/herald.min.js',
    platform: 'browser',
    minify: true,
    mangleProps: /^_[a-z]/, // private members: one bundle, so renaming them is safe
    sourcemap: true,
  }),
  build({ ...common, entryPoints: ['src/browser.ts'], format: 'iife', outfile: 'dist/herald.js', platform: 'browser' }),
]);
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json', '--emitDeclarationOnly'], { stdio: 'inherit' });
