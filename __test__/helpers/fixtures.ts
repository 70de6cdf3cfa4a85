// Test helper: makes sure the GGUF test fixtures (tiny llama models, all-types
// files, malformed files) exist under <repo>/.fixtures and returns their paths.
//
// ava runs test files in parallel processes; scripts/lib/fixtures.mjs makes that
// safe (a lock directory, files renamed into place, a stamp written last) and
// regenerates only when the generator's source changes. Here the result is just
// memoized per process.

import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// tsx runs the tests as CommonJS (package.json has no "type": "module"), so __dirname is defined.
export const REPO_ROOT = join(__dirname, '..', '..');
export const FIXTURES_DIR = join(REPO_ROOT, '.fixtures');

export interface FixtureInfo {
  kind: 'valid' | 'malformed';
  description: string;
  /** For malformed files: the kind of error a loader should report, e.g. 'bad-magic', 'truncated'. */
  expect?: string;
}

interface FixturesModule {
  makeFixtures(dir: string): Promise<Record<string, string>>;
  FIXTURES: Record<string, FixtureInfo>;
}

let modPromise: Promise<FixturesModule> | undefined;
let pathsPromise: Promise<Record<string, string>> | undefined;

function load(): Promise<FixturesModule> {
  // A computed specifier keeps TypeScript from demanding declarations for the .mjs.
  const url = pathToFileURL(join(REPO_ROOT, 'scripts', 'lib', 'fixtures.mjs')).href;
  modPromise ??= import(url) as Promise<FixturesModule>;
  return modPromise;
}

/** File name (e.g. 'tiny-llama-q8_0.gguf') -> absolute path, generating the files if needed. */
export function fixtures(): Promise<Record<string, string>> {
  pathsPromise ??= load()
    .then((m) => m.makeFixtures(FIXTURES_DIR))
    .catch((e: unknown) => {
      pathsPromise = undefined; // let a later call retry
      throw e;
    });
  return pathsPromise;
}

/** Path of one fixture; throws on an unknown name so a typo fails loudly. */
export async function fixture(name: string): Promise<string> {
  const all = await fixtures();
  const p = all[name];
  if (!p) throw new Error(`unknown fixture ${name}; known: ${Object.keys(all).join(', ')}`);
  return p;
}

/** What each fixture is and, for malformed ones, which error it should cause. */
export async function fixtureInfo(): Promise<Record<string, FixtureInfo>> {
  const { FIXTURES } = await load();
  return Object.fromEntries(
    Object.entries(FIXTURES).map(([name, f]) => [name, { kind: f.kind, description: f.description, expect: f.expect }]),
  );
}
