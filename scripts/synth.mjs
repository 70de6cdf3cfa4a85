#!/usr/bin/env node
// Writes a synthetic GGUF with the exact tensor names, shapes and types of a
// real model (as llama.cpp's converter + llama-quantize would produce them),
// random but valid quantized weights and a usable SentencePiece-style vocab.
// Loadable by llama.cpp / node-llama-cpp and by chord-llm; the output is
// meaningless text, but speed and memory behave like the real model's.
//
//   npm run synth -- --shape llama2-7b --type q4_k_m --out /tmp/llama2-7b.gguf
//   node scripts/synth.mjs --list
//
// See scripts/lib/synth-shapes.mjs for how weights and vocab are made.

import { rename, rm, mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { tensorNbytes, writeGGUF } from './lib/gguf-writer.mjs';
import { QUANT_MIXES, SHAPES, planModel, synthSpec } from './lib/synth-shapes.mjs';

const USAGE = `usage: node scripts/synth.mjs --shape <name> --type <mix> --out FILE [options]

Writes a synthetic GGUF model: real tensor names/shapes/types, random valid weights.

  --shape NAME    model shape (see --list)
  --type MIX      quantization mix: ${Object.keys(QUANT_MIXES).join(', ')}
  --out FILE      output path (written to FILE.tmp-PID, then renamed)
  --seed N        weight seed (default 1); the vocab does not depend on it
  --layers N      override the layer count (quick tests)
  --dry-run       print the tensor plan and the file size, write nothing
  --tensors       also print every tensor (with --dry-run or when writing)
  --quiet         no progress
  --list          list the shapes
  -h, --help      this text`;

function fail(msg) {
  process.stderr.write(`synth: ${msg}\n`);
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    options: {
      shape: { type: 'string' },
      type: { type: 'string' },
      out: { type: 'string' },
      seed: { type: 'string', default: '1' },
      layers: { type: 'string' },
      'dry-run': { type: 'boolean' },
      tensors: { type: 'boolean' },
      quiet: { type: 'boolean' },
      list: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  }).values;
} catch (e) {
  fail(`${e.message}\n${USAGE}`);
}

const fmtBytes = (n) => `${n.toLocaleString('en-US')} B (${(n / 1e9).toFixed(3)} GB, ${(n / 2 ** 30).toFixed(3)} GiB)`;

if (args.help) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}

if (args.list) {
  for (const [name, s] of Object.entries(SHAPES)) {
    const sizes = planSize(name, 'q4_k_m');
    const real = s.real?.q4_k_m ? `, real Q4_K_M file ${(s.real.q4_k_m.size / 1e9).toFixed(3)} GB` : '';
    process.stdout.write(
      `${name.padEnd(16)} ${s.description}: ${s.nLayer} layers, n_embd ${s.nEmbd}, n_ff ${s.nFf}, ` +
      `${s.nHead} heads / ${s.nHeadKv} KV, vocab ${s.nVocab}, ctx ${s.nCtxTrain}; ` +
      `q4_k_m ${(sizes / 1e9).toFixed(3)} GB${real}\n`,
    );
  }
  process.exit(0);
}

function planSize(shape, mix, layers) {
  return dryLayout(shape, mix, layers).size;
}

// File size without generating any data: header (needs the vocab, ~100 ms) + aligned tensors.
function dryLayout(shape, mix, layers) {
  const { plan, spec } = synthSpec(shape, mix, { layers });
  const dataBytes = plan.reduce((s, t) => s + Math.ceil(tensorNbytes(t.type, t.dims) / 32) * 32, 0);
  return { plan, spec, size: headerSize(spec) + dataBytes };
}

// Header size = bytes until the first tensor's data (aligned to 32).
function headerSize(spec) {
  let n = 4 + 4 + 8 + 8;
  const str = (s) => 8 + Buffer.byteLength(s, 'utf8');
  const scalar = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8 };
  for (const [k, v] of spec.kv) {
    n += str(k) + 4;
    if (v.type === 'str') n += str(v.value);
    else if (v.type === 'array') {
      n += 4 + 8;
      for (const item of v.value) n += v.itemType === 'str' ? str(item) : scalar[v.itemType];
    } else n += scalar[v.type];
  }
  for (const t of spec.tensors) n += str(t.name) + 4 + 8 * t.dims.length + 4 + 8;
  return Math.ceil(n / 32) * 32;
}

if (!args.shape) fail(`--shape is required\n${USAGE}`);
if (!SHAPES[args.shape]) fail(`unknown shape '${args.shape}'; known: ${Object.keys(SHAPES).join(', ')}`);
const mix = (args.type ?? '').toLowerCase();
if (!args.type) fail(`--type is required\n${USAGE}`);
if (!QUANT_MIXES[mix]) fail(`unknown type '${args.type}'; known: ${Object.keys(QUANT_MIXES).join(', ')}`);
const seed = Number(args.seed);
if (!Number.isSafeInteger(seed) || seed < 0) fail(`--seed must be a non-negative integer, got ${args.seed}`);
let layers;
if (args.layers !== undefined) {
  layers = Number(args.layers);
  if (!Number.isInteger(layers) || layers < 1) fail(`--layers must be a positive integer, got ${args.layers}`);
}
if (!args.out && !args['dry-run']) fail(`--out is required\n${USAGE}`);

function summarize(plan) {
  const byType = new Map();
  for (const t of plan) {
    const e = byType.get(t.type) ?? { count: 0, bytes: 0, elems: 0 };
    e.count++;
    e.bytes += tensorNbytes(t.type, t.dims);
    e.elems += t.dims.reduce((a, b) => a * b, 1);
    byType.set(t.type, e);
  }
  const lines = [];
  for (const [type, e] of byType) {
    lines.push(`  ${type.padEnd(5)} ${String(e.count).padStart(4)} tensors  ${(e.elems / 1e6).toFixed(1).padStart(8)} M params  ${(e.bytes / 2 ** 20).toFixed(1).padStart(9)} MiB`);
  }
  return lines.join('\n');
}

function printTensors(plan) {
  for (const t of plan) {
    process.stderr.write(`  ${t.name.padEnd(28)} ${t.type.padEnd(5)} [${t.dims.join(', ')}]\n`);
  }
}

const log = (s) => { if (!args.quiet) process.stderr.write(s); };

if (args['dry-run']) {
  const { plan, spec, size } = dryLayout(args.shape, mix, layers);
  if (args.tensors) printTensors(plan);
  process.stdout.write(`${args.shape} ${mix}${layers ? ` (${layers} layers)` : ''}: ${plan.length} tensors, header ${headerSize(spec).toLocaleString('en-US')} B\n`);
  process.stdout.write(summarize(plan) + '\n');
  process.stdout.write(`file size ${fmtBytes(size)}\n`);
  const real = SHAPES[args.shape].real?.[mix];
  if (real && !layers) {
    const d = size - real.size;
    process.stdout.write(`real ${real.file}: ${fmtBytes(real.size)}; difference ${d >= 0 ? '+' : ''}${d.toLocaleString('en-US')} B (${((100 * d) / real.size).toFixed(4)}%)\n`);
  }
  process.exit(0);
}

// ---------------------------------------------------------------------------
// Write.

const out = resolve(args.out);
await mkdir(dirname(out), { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;

let written = 0;
let total = 0;
const t0 = process.hrtime.bigint();
const elapsed = () => Number(process.hrtime.bigint() - t0) / 1e9;
let lastReport = 0;
const tty = process.stderr.isTTY;
function progress(final = false) {
  const s = elapsed();
  if (!final && s - lastReport < (tty ? 0.25 : 5)) return;
  lastReport = s;
  const pct = total ? (100 * written) / total : 0;
  const line = `synth: ${(written / 2 ** 20).toFixed(0)}/${(total / 2 ** 20).toFixed(0)} MiB (${pct.toFixed(1)}%) ` +
    `${s.toFixed(1)} s, ${(written / 2 ** 20 / Math.max(s, 1e-6)).toFixed(0)} MiB/s`;
  log(tty ? `\r${line}\x1b[K${final ? '\n' : ''}` : `${line}\n`);
}

const { plan, spec } = synthSpec(args.shape, mix, {
  seed,
  layers,
  onBytes: (n) => { written += n; progress(); },
});
total = plan.reduce((s, t) => s + tensorNbytes(t.type, t.dims), 0);
log(`synth: ${args.shape} ${mix}${layers ? ` (${layers} layers)` : ''} seed ${seed} -> ${out}\n${summarize(plan)}\n`);
if (args.tensors) printTensors(plan);

let cleaning = false;
const cleanup = async (code) => {
  if (cleaning) return;
  cleaning = true;
  await rm(tmp, { force: true });
  process.exit(code);
};
process.on('SIGINT', () => cleanup(130));
process.on('SIGTERM', () => cleanup(143));

let layout;
try {
  layout = await writeGGUF(tmp, spec);
  await rename(tmp, out);
} catch (e) {
  await rm(tmp, { force: true });
  process.stderr.write(`\nsynth: ${e.stack ?? e}\n`);
  process.exit(1);
}
progress(true);
const { size } = await stat(out);
const secs = elapsed();
process.stdout.write(`wrote ${out}\n  ${plan.length} tensors, ${fmtBytes(size)} in ${secs.toFixed(1)} s (${(size / 2 ** 20 / secs).toFixed(0)} MiB/s)\n`);
const real = SHAPES[args.shape].real?.[mix];
if (real && !layers) {
  const d = size - real.size;
  process.stdout.write(`  real ${real.file}: ${fmtBytes(real.size)}; difference ${d >= 0 ? '+' : ''}${d.toLocaleString('en-US')} B (${((100 * d) / real.size).toFixed(4)}%)\n`);
}
if (layout.size !== size) process.stderr.write(`synth: warning: layout says ${layout.size} bytes\n`);
