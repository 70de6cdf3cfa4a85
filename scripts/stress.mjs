#!/usr/bin/env node
// Lifecycle stress: cycles of load / 4 concurrent streams / dispose, where in every cycle one
// stream runs to its end, one breaks, one is aborted and one, on a session, is cut off by
// dispose(). Reports RSS growth, live handles and event-loop lag (p50/p99/max,
// perf_hooks.monitorEventLoopDelay) over 100 loads and disposes first, then over the cycles.
//
//   node scripts/stress.mjs [--cycles 1000] [--model path.gguf] [--threads 2]
//
// Without --model it uses SmolLM2-135M-Instruct (fetched if needed). Exits 1 when the p99 lag
// of either phase reaches 10 ms, RSS grows by more than 64 MB after the first 10 cycles, or a
// stream ends with an error other than the one its cycle provokes.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadModel } = createRequire(import.meta.url)(ROOT);
const native = createRequire(import.meta.url)(path.join(ROOT, 'index.js'));

function parseArgs(argv) {
  const args = { cycles: 1000, threads: 2 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--cycles') args.cycles = Number(argv[++i]);
    else if (argv[i] === '--model') args.model = argv[++i];
    else if (argv[i] === '--threads') args.threads = Number(argv[++i]);
    else {
      console.error('usage: node scripts/stress.mjs [--cycles N] [--model path.gguf] [--threads N]');
      process.exit(2);
    }
  }
  return args;
}

const ms = (ns) => (ns / 1e6).toFixed(2);
const mb = (bytes) => (bytes / 1e6).toFixed(1);

async function drain(it, { stopAfter = Infinity, onToken } = {}) {
  let n = 0;
  for await (const _ of it) {
    n++;
    onToken?.(n);
    if (n >= stopAfter) break;
  }
  return n;
}

/**
 * One cycle: load, then four streams that end four different ways: one runs to its end, one
 * breaks, one is aborted, and one (on a session) disposes the model once the first has ended.
 */
async function cycle(modelPath, threads) {
  const model = await loadModel(modelPath, { threads });
  {
    const opts = { maxTokens: 12, temperature: 0.8, seed: 1, ignoreEos: true };
    const controller = new AbortController();
    const outcome = (p) => p.then(() => 'ok', (err) => err.code ?? String(err));
    const session = model.createSession();
    let firstEnded = false;
    const first = drain(model.generate('The lighthouse keeper', opts)).finally(() => (firstEnded = true));
    return Promise.all([
      outcome(first),
      outcome(drain(model.generate('Once upon a time', opts), { stopAfter: 3 })),
      outcome(drain(model.generate('In a small village', { ...opts, signal: controller.signal }), {
        onToken: (n) => n === 4 && controller.abort(),
      })),
      outcome(drain(session.generate('The sea was', { ...opts, maxTokens: 1000 }), {
        onToken: (n) => n >= 5 && firstEnded && model.dispose(),
      })),
    ]);
  }
}

const args = parseArgs(process.argv.slice(2));
let modelPath = args.model;
if (!modelPath) {
  const { ensureModel } = await import(path.join(ROOT, 'scripts', 'models.mjs'));
  modelPath = await ensureModel('smollm2', { log: (m) => process.stderr.write(`${m}\n`) });
}
// Each monitor runs without a break (re-enabling one records the whole time it was off as one
// delay): one over loads alone, one over the cycles.
const LOAD_CYCLES = 100;
const lag = { load: monitorEventLoopDelay({ resolution: 1 }), generate: monitorEventLoopDelay({ resolution: 1 }) };
lag.load.enable();
for (let i = 0; i < LOAD_CYCLES; i++) await (await loadModel(modelPath, { threads: args.threads })).dispose();
lag.load.disable();
lag.generate.enable();
const expected = JSON.stringify(['ok', 'ok', 'ABORT_ERR', 'ERR_DISPOSED']);
let unexpected = 0;
let baseline;
const handles = () => process.getActiveResourcesInfo().length;
const started = performance.now();
for (let i = 0; i < args.cycles; i++) {
  const results = await cycle(modelPath, args.threads);
  if (JSON.stringify(results) !== expected) {
    unexpected++;
    if (unexpected <= 5) console.error(`cycle ${i}: ${JSON.stringify(results)}`);
  }
  if (i === 9) {
    global.gc?.();
    baseline = { rss: process.memoryUsage().rss, handles: handles(), live: native.liveModels() };
  }
  if ((i + 1) % 100 === 0) {
    process.stderr.write(`${i + 1} cycles, RSS ${mb(process.memoryUsage().rss)} MB, live models ${native.liveModels()}\n`);
  }
}
lag.generate.disable();
global.gc?.();
await new Promise((r) => setTimeout(r, 200));
const end = { rss: process.memoryUsage().rss, handles: handles(), live: native.liveModels() };
const seconds = (performance.now() - started) / 1000;
console.log(`${args.cycles} cycles in ${seconds.toFixed(1)} s (${modelPath}, ${args.threads} threads)`);
console.log(`streams ending otherwise than provoked: ${unexpected}`);
if (baseline) {
  console.log(`RSS after 10 cycles ${mb(baseline.rss)} MB, at the end ${mb(end.rss)} MB (growth ${mb(end.rss - baseline.rss)} MB)`);
  console.log(`active handles/resources after 10 cycles ${baseline.handles}, at the end ${end.handles}; live models ${end.live}`);
}
for (const [phase, h] of Object.entries(lag)) {
  const what = phase === 'load' ? `over ${LOAD_CYCLES} loads and disposes` : `over the ${args.cycles} cycles`;
  console.log(`event-loop lag ${what}: p50 ${ms(h.percentile(50))} ms, p99 ${ms(h.percentile(99))} ms, max ${ms(h.max)} ms (${h.count} samples)`);
}
const failed =
  unexpected > 0 ||
  lag.load.percentile(99) >= 10e6 ||
  lag.generate.percentile(99) >= 10e6 ||
  (baseline && end.rss - baseline.rss > 64e6) ||
  end.live !== 0;
process.exit(failed ? 1 : 0);
