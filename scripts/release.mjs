#!/usr/bin/env node
// Prepares a release, napi-rs style, doing everything but publishing: checks that the platform
// packages (npm/<platform>/, from `napi create-npm-dirs`) and the root's optionalDependencies
// carry the root's version, places each target's built addon into its package with
// `napi artifacts`, and packs the platform packages and the root into tarballs.
//
//   node scripts/release.mjs [--artifacts DIR] [--out DIR] [--host-only]
//
// --artifacts: a folder holding the built `chord-llm.<platform>.node` files (in a release, the
//   build matrix's downloads); default: the one in the repo root, which `npm install` builds.
// --host-only: pack only the targets whose addon is present (for `npm run test:package`); by
//   default every target in package.json `napi.targets` must be there.
// --out: where the tarballs go (default target/packages). Prints the `npm publish` commands.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** `napi.targets`' triples as napi-rs names their platform folders and binaries. */
const PLATFORMS = {
  'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
  'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
  'x86_64-apple-darwin': 'darwin-x64',
  'aarch64-apple-darwin': 'darwin-arm64',
  'x86_64-pc-windows-msvc': 'win32-x64-msvc',
};

function parseArgs(argv) {
  const args = { artifacts: ROOT, out: path.join(ROOT, 'target', 'packages'), hostOnly: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--artifacts') args.artifacts = path.resolve(argv[++i]);
    else if (argv[i] === '--out') args.out = path.resolve(argv[++i]);
    else if (argv[i] === '--host-only') args.hostOnly = true;
    else {
      console.error('usage: node scripts/release.mjs [--artifacts DIR] [--out DIR] [--host-only]');
      process.exit(2);
    }
  }
  return args;
}

const readJson = (file) => JSON.parse(fs.readFileSync(file, 'utf8'));

/** Every platform package and optional dependency must carry the root's version. */
function checkVersions(pkg) {
  const problems = [];
  for (const triple of pkg.napi.targets) {
    const platform = PLATFORMS[triple];
    if (!platform) {
      problems.push(`no platform folder name known for target ${triple}`);
      continue;
    }
    const file = path.join(ROOT, 'npm', platform, 'package.json');
    if (!fs.existsSync(file)) {
      problems.push(`${path.relative(ROOT, file)} is missing (run npx napi create-npm-dirs)`);
      continue;
    }
    const sub = readJson(file);
    const name = `${pkg.name}-${platform}`;
    if (sub.name !== name) problems.push(`${path.relative(ROOT, file)} is named ${sub.name}, expected ${name}`);
    if (sub.version !== pkg.version) problems.push(`${name} is at ${sub.version}, the root at ${pkg.version} (run npx napi version)`);
    if ((pkg.optionalDependencies ?? {})[name] !== pkg.version) {
      problems.push(`optionalDependencies["${name}"] must be "${pkg.version}"`);
    }
  }
  return problems;
}

/** Runs `npm pack` in `dir` into `out` and returns the tarball's path. */
function pack(dir, out) {
  // --ignore-scripts: `prepare` would rebuild the addon, which is already built.
  const output = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', out], { cwd: dir, encoding: 'utf8' });
  const [info] = JSON.parse(output);
  return { file: path.join(out, info.filename), size: info.size, unpackedSize: info.unpackedSize, files: info.files };
}

export function release({ artifacts, out, hostOnly }) {
  const pkg = readJson(path.join(ROOT, 'package.json'));
  const problems = checkVersions(pkg);
  const present = pkg.napi.targets.filter((t) => fs.existsSync(path.join(artifacts, `${pkg.napi.binaryName}.${PLATFORMS[t]}.node`)));
  const missing = pkg.napi.targets.filter((t) => !present.includes(t));
  if (present.length === 0) problems.push(`no built addon in ${artifacts} (run npm run build)`);
  if (!hostOnly && missing.length > 0) problems.push(`addons missing for ${missing.join(', ')} (or pass --host-only)`);
  if (problems.length > 0) throw new Error(`release: ${problems.join('; ')}`);

  // `napi artifacts` insists on every configured target: a config naming the present ones
  // lets it place just those (the rest of the napi config is the package's own).
  fs.mkdirSync(out, { recursive: true });
  const config = path.join(out, 'napi.json');
  fs.writeFileSync(config, JSON.stringify({ ...pkg.napi, packageName: pkg.name, targets: present }));
  // It also writes the binaries it finds back into the output folder; a copy keeps the repo's out of it.
  const staged = path.join(out, 'artifacts');
  fs.rmSync(staged, { recursive: true, force: true });
  fs.mkdirSync(staged);
  for (const t of present) {
    const name = `${pkg.napi.binaryName}.${PLATFORMS[t]}.node`;
    fs.copyFileSync(path.join(artifacts, name), path.join(staged, name));
  }
  execFileSync('npx', ['napi', 'artifacts', '--output-dir', staged, '--config-path', config, '--npm-dir', 'npm'], { cwd: ROOT, stdio: 'pipe' });

  const tarballs = present.map((t) => ({ name: `${pkg.name}-${PLATFORMS[t]}`, ...pack(path.join(ROOT, 'npm', PLATFORMS[t]), out) }));
  tarballs.push({ name: pkg.name, ...pack(ROOT, out) });
  return tarballs;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = parseArgs(process.argv.slice(2));
  try {
    const tarballs = release(args);
    for (const t of tarballs) {
      console.log(`${path.relative(process.cwd(), t.file)}: ${(t.size / 1e3).toFixed(1)} kB packed, ${(t.unpackedSize / 1e3).toFixed(1)} kB unpacked, ${t.files.length} files`);
      for (const f of t.files) console.log(`  ${f.path} (${f.size} B)`);
    }
    console.log('\nto publish (platform packages first):');
    for (const t of tarballs) console.log(`  npm publish ${path.relative(process.cwd(), t.file)}`);
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
