#!/usr/bin/env node
// Runs the coverage-guided fuzz targets of fuzz/ (cargo fuzz, libFuzzer, nightly Rust) for a
// given time each, from seeds made out of the repo's own test data, and reports executions and
// findings per target.
//
//   node scripts/fuzz.mjs [--seconds 600] [--jobs 1] [--sanitizer address|none] [target ...]
//
// Targets: gguf, tokenizer, chat_template, quant (see src/fuzzing.rs). Installs cargo-fuzz with
// `cargo install` if it is missing. Inputs that crash, hang or run out of memory are left in
// fuzz/artifacts/<target>/; once understood and fixed, copy them to fuzz/regressions/<target>/
// (small files, committed), which `cargo test` replays. Not part of `npm test`.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FUZZ = path.join(ROOT, 'fuzz');
const ALL = ['gguf', 'tokenizer', 'chat_template', 'quant'];
// Per target: the longest input tried. GGUF seeds are the fixtures' first 8 KB (header, the
// first metadata and a vocabulary's start): whole files made every execution ten times slower
// for no new coverage of the reader.
const MAX_LEN = { gguf: 8192, tokenizer: 1024, chat_template: 8192, quant: 4096 };
// AddressSanitizer where unsafe code runs (the SIMD kernels behind the quant target); the other
// targets are safe Rust, where it only makes each execution several times slower.
const SANITIZER = { gguf: 'none', tokenizer: 'none', chat_template: 'none', quant: 'address' };

function parseArgs(argv) {
  const args = { seconds: 600, jobs: 1, targets: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--seconds') args.seconds = Number(argv[++i]);
    else if (argv[i] === '--jobs') args.jobs = Number(argv[++i]);
    else if (argv[i] === '--sanitizer') args.sanitizer = argv[++i];
    else if (ALL.includes(argv[i])) args.targets.push(argv[i]);
    else {
      console.error(`usage: node scripts/fuzz.mjs [--seconds N] [--jobs N] [--sanitizer address|none] [${ALL.join('|')} ...]`);
      process.exit(2);
    }
  }
  if (args.targets.length === 0) args.targets = ALL;
  return args;
}

function ensureCargoFuzz() {
  try {
    execFileSync('cargo', ['+nightly', 'fuzz', '--version'], { stdio: 'ignore' });
  } catch {
    console.log('installing cargo-fuzz (cargo install cargo-fuzz --locked)...');
    execFileSync('cargo', ['install', 'cargo-fuzz', '--locked'], { stdio: 'inherit' });
  }
}

function writeSeed(dir, name, bytes) {
  fs.writeFileSync(path.join(dir, name), bytes);
}

/** Seeds from the repo's own data: GGUF fixtures, tokenizer strings, chat templates, quant blocks. */
async function makeSeeds(target) {
  const dir = path.join(FUZZ, 'corpus', target);
  fs.mkdirSync(dir, { recursive: true });
  if (fs.readdirSync(dir).length > 0) return dir;
  if (target === 'gguf') {
    const { makeFixtures } = await import(path.join(ROOT, 'scripts', 'lib', 'fixtures.mjs'));
    const paths = await makeFixtures(path.join(ROOT, '.fixtures'));
    for (const [name, file] of Object.entries(paths)) {
      writeSeed(dir, name, fs.readFileSync(file).subarray(0, MAX_LEN.gguf));
    }
  } else if (target === 'tokenizer') {
    const strings = JSON.parse(fs.readFileSync(path.join(ROOT, '__test__', 'data', 'tokenizer-strings.json'), 'utf8'));
    const list = Array.isArray(strings) ? strings : strings.strings ?? Object.values(strings).flat();
    list.filter((s) => typeof s === 'string').forEach((s, i) => {
      writeSeed(dir, `s${i}`, Buffer.concat([Buffer.from([i % 256]), Buffer.from(s, 'utf8')]));
    });
  } else if (target === 'chat_template') {
    const refs = JSON.parse(fs.readFileSync(path.join(ROOT, '__test__', 'data', 'chat-templates.json'), 'utf8'));
    for (const [name, t] of Object.entries(refs.templates)) {
      writeSeed(dir, name, Buffer.from(`${t.source}\0Hi <|im_end|> there`, 'utf8'));
    }
  } else if (target === 'quant') {
    for (let ty = 0; ty < 15; ty++) {
      const block = Buffer.alloc(1 + 2 * 292);
      block[0] = ty;
      for (let i = 1; i < block.length; i++) block[i] = (i * 37 + ty * 11) & 0xff;
      writeSeed(dir, `t${ty}`, block);
    }
  }
  return dir;
}

function run(target, seconds, jobs, sanitizer) {
  for (const f of fs.readdirSync(FUZZ).filter((f) => /^fuzz-\d+\.log$/.test(f))) fs.rmSync(path.join(FUZZ, f), { force: true });
  return new Promise((resolve) => {
    const args = [
      '+nightly', 'fuzz', 'run', '--release', '--debug-assertions', `--sanitizer=${sanitizer ?? SANITIZER[target]}`, target, `corpus/${target}`, '--',
      `-max_total_time=${seconds}`, `-max_len=${MAX_LEN[target]}`, '-rss_limit_mb=2048', '-malloc_limit_mb=1024',
      '-timeout=10', '-print_final_stats=1',
      // Several jobs log to fuzz-<n>.log each; one runs in the foreground.
      ...(jobs > 1 ? [`-jobs=${jobs}`, `-workers=${jobs}`] : []),
    ];
    const child = spawn('cargo', args, { cwd: FUZZ, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const keep = (chunk) => {
      log += chunk;
      if (log.length > 1 << 20) log = log.slice(-(1 << 19));
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', (chunk) => {
      keep(chunk);
      const line = String(chunk).split('\n').filter((l) => l.includes('pulse') || l.includes('DONE')).pop();
      if (line) process.stdout.write(`  ${target}: ${line.trim().slice(0, 140)}\n`);
    });
    child.on('close', (code) => {
      // Each job's final stats are in its fuzz-<n>.log (and echoed to the output too, so the
      // output is counted only without jobs).
      const jobLogs = fs.readdirSync(FUZZ).filter((f) => /^fuzz-\d+\.log$/.test(f)).map((f) => fs.readFileSync(path.join(FUZZ, f), 'utf8'));
      const execs = (jobs > 1 ? jobLogs : [log])
        .flatMap((text) => [...text.matchAll(/stat::number_of_executed_units:\s*(\d+)/g)])
        .reduce((a, m) => a + Number(m[1]), 0);
      const artifacts = fs.existsSync(path.join(FUZZ, 'artifacts', target)) ? fs.readdirSync(path.join(FUZZ, 'artifacts', target)) : [];
      resolve({ target, code, execs, artifacts, tail: log.split('\n').slice(-30).join('\n') });
    });
  });
}

const args = parseArgs(process.argv.slice(2));
ensureCargoFuzz();
const results = [];
for (const target of args.targets) {
  await makeSeeds(target);
  console.log(`fuzzing ${target} for ${args.seconds} s...`);
  const t0 = Date.now();
  const r = await run(target, args.seconds, args.jobs, args.sanitizer);
  r.seconds = (Date.now() - t0) / 1000;
  if (r.code !== 0 && r.artifacts.length === 0) console.log(r.tail);
  results.push(r);
}
console.log('\ntarget         executions   exec/s  findings');
for (const r of results) {
  const rate = r.execs / r.seconds;
  console.log(`${r.target.padEnd(14)} ${String(r.execs).padStart(10)} ${rate.toFixed(0).padStart(8)}  ${r.artifacts.length ? r.artifacts.join(', ') : (r.code === 0 ? 'none' : `exit ${r.code}`)}`);
}
process.exit(results.some((r) => r.code !== 0 || r.artifacts.length) ? 1 : 0);
