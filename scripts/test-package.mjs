#!/usr/bin/env node
// `npm run test:package`: packs the root package and this platform's binary package as a release
// would (scripts/release.mjs), installs both tarballs into a fresh app whose PATH has no cargo
// or rustc, and checks there what a user gets: `require` and `import` of chord-llm, the types
// of both under TypeScript's nodenext resolution, SmolLM2 loaded and streaming, `npx chord-llm
// info`. Needs the addon built (`npm install` does it) and fetches SmolLM2 if it is missing.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { release } from './release.mjs';
import { ensureModel } from './models.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// What the root tarball may hold: the runtime and its types, nothing else.
const ROOT_FILES = /^(package\.json|README\.md|LICENSE|index\.js|index\.d\.ts|lib\/[^/]+\.(js|mjs|d\.ts|d\.mts)|bin\/chord-llm\.js)$/;
const ROOT_MAX_BYTES = 500_000;

let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
  if (!ok) failures++;
}

/** PATH without the folders that hold cargo or rustc: the app must not need Rust. */
function pathWithoutRust() {
  const isRustDir = (dir) => ['cargo', 'rustc', 'cargo.exe', 'rustc.exe'].some((b) => fs.existsSync(path.join(dir, b)));
  return (process.env.PATH ?? '')
    .split(path.delimiter)
    .filter((dir) => dir && !isRustDir(dir))
    .join(path.delimiter);
}

function run(cmd, args, opts) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 300_000, ...opts });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim(), error: r.error };
}

const CJS = `
const assert = require('node:assert')
const { loadModel, inspectModel, createServer } = require('chord-llm')
assert.strictEqual(typeof inspectModel, 'function')
assert.strictEqual(typeof createServer, 'function')
;(async () => {
  const model = await loadModel(process.argv[2], { threads: 2 })
  let text = ''
  let n = 0
  for await (const t of model.generate('The capital of France is', { maxTokens: 8, temperature: 0 })) {
    text += t.text
    n++
  }
  await model.dispose()
  assert.ok(n > 0, 'no tokens')
  console.log(JSON.stringify({ tokens: n, text }))
})().catch((e) => { console.error(e); process.exit(1) })
`;

const ESM = `
import assert from 'node:assert'
import chord, { loadModel } from 'chord-llm'
assert.strictEqual(chord.loadModel, loadModel)
const model = await loadModel(process.argv[2], { threads: 2 })
const chat = model.createChat()
let text = ''
for await (const t of chat.send('Say hello.', { maxTokens: 8, temperature: 0 })) text += t.text
await model.dispose()
assert.ok(text.length > 0, 'no text')
console.log(JSON.stringify({ text }))
`;

const TYPES_MTS = `
import { loadModel, type Model, type GeneratedToken, type GenerationEnd } from 'chord-llm'
export async function first(path: string): Promise<string> {
  const model: Model = await loadModel(path, { memoryBudget: '1GB' })
  const it: AsyncGenerator<GeneratedToken, GenerationEnd | undefined> = model.generate('x', { maxTokens: 1 })
  for await (const t of it) return t.text
  return ''
}
`;

const TYPES_CTS = `
import chord = require('chord-llm')
export async function info(path: string): Promise<number> {
  const i: chord.ModelInfo = await chord.inspectModel(path)
  return i.minMemoryBudget
}
`;

async function main() {
  const modelFile = await ensureModel('smollm2', { log: (m) => console.log(m) });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'chord-llm-package-'));
  try {
    const tarballs = release({ artifacts: ROOT, out: path.join(work, 'packages'), hostOnly: true });
    const root = tarballs.find((t) => t.name === 'chord-llm');
    const platform = tarballs.find((t) => t.name !== 'chord-llm');
    check(Boolean(root && platform), 'packed the root and a platform package', tarballs.map((t) => path.basename(t.file)).join(', '));
    const stray = root.files.map((f) => f.path).filter((p) => !ROOT_FILES.test(p));
    check(stray.length === 0, 'the root tarball holds only the runtime', stray.join(', ') || `${root.files.length} files`);
    check(root.unpackedSize < ROOT_MAX_BYTES, 'the root tarball is small', `${(root.size / 1e3).toFixed(1)} kB packed, ${(root.unpackedSize / 1e3).toFixed(1)} kB unpacked`);
    check(platform.files.some((f) => f.path.endsWith('.node')), 'the platform tarball holds the addon', `${(platform.size / 1e6).toFixed(2)} MB packed`);

    const app = path.join(work, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    const env = { ...process.env, PATH: pathWithoutRust(), npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
    for (const k of Object.keys(env)) if (k.startsWith('npm_package_') || k === 'npm_lifecycle_event' || k === 'INIT_CWD') delete env[k];
    const noRust = run('cargo', ['--version'], { env, cwd: app });
    check(!noRust.ok, 'the app sees no cargo on its PATH');

    const installed = run('npm', ['install', root.file, platform.file], { env, cwd: app });
    check(installed.ok, 'npm install of both tarballs', installed.ok ? '' : installed.out);
    if (!installed.ok) return;
    const pkgDir = path.join(app, 'node_modules', 'chord-llm');
    const ownAddons = fs.readdirSync(pkgDir).filter((f) => f.endsWith('.node'));
    check(ownAddons.length === 0, 'chord-llm itself carries no addon');
    check(fs.existsSync(path.join(app, 'node_modules', platform.name)), `the addon comes from ${platform.name}`);

    fs.writeFileSync(path.join(app, 'cjs.cjs'), CJS);
    fs.writeFileSync(path.join(app, 'esm.mjs'), ESM);
    const cjs = run(process.execPath, ['cjs.cjs', modelFile], { env, cwd: app });
    check(cjs.ok, "require('chord-llm') loads SmolLM2 and streams", cjs.out);
    const esm = run(process.execPath, ['esm.mjs', modelFile], { env, cwd: app });
    check(esm.ok, "import { loadModel } from 'chord-llm' chats with SmolLM2", esm.out);

    const info = run('npx', ['--no-install', 'chord-llm', 'info', modelFile], { env, cwd: app });
    check(info.ok && /architecture\s+llama/.test(info.out), 'npx chord-llm info', info.ok ? info.out.split('\n')[2] : info.out);

    fs.writeFileSync(path.join(app, 'types.mts'), TYPES_MTS);
    fs.writeFileSync(path.join(app, 'types.cts'), TYPES_CTS);
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const types = run(
      process.execPath,
      [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules', '@types'), 'types.mts', 'types.cts'],
      { env, cwd: app },
    );
    check(types.ok, 'types resolve for import and require (tsc, nodenext)', types.out);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main()
  .then(() => {
    if (failures > 0) {
      console.error(`${failures} package check(s) failed`);
      process.exit(1);
    }
    console.log('package checks passed');
  })
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
