#!/usr/bin/env node
// Generates the test fixtures (tiny GGUF models and malformed files) into a
// folder, by default <repo>/.fixtures. Tests call makeFixtures() themselves;
// this is for inspecting the files or using them by hand.
//
//   node scripts/make-fixtures.mjs [dir] [--force]

import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { statSync } from 'node:fs';
import { FIXTURES, makeFixtures } from './lib/fixtures.mjs';

const args = process.argv.slice(2);
const force = args.includes('--force');
const dirArg = args.find((a) => !a.startsWith('--'));
const dir = resolve(dirArg ?? fileURLToPath(new URL('../.fixtures', import.meta.url)));

const paths = await makeFixtures(dir, { force, log: (m) => console.error(m) });
for (const [name, p] of Object.entries(paths)) {
  const fx = FIXTURES[name];
  const size = statSync(p).size;
  const tag = fx.kind === 'valid' ? 'valid' : `bad: ${fx.expect}`;
  console.log(`${name.padEnd(36)} ${String(size).padStart(8)} B  [${tag}] ${fx.description}`);
}
console.log(`\n${Object.keys(paths).length} fixtures in ${dir}`);
