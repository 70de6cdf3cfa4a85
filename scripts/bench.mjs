// Side-by-side benchmark of chord-llm and node-llama-cpp (llama.cpp) on the same GGUF file and
// thread count: load time, prefill tok/s (128-token prompt), decode tok/s (128 greedy tokens,
// EOS ignored) and peak RSS. Each engine runs in its own child process (scripts/bench/*-worker.mjs)
// so that its peak RSS is its own. Run `node scripts/bench.mjs --help`.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError, int, oneModel, parseCli, runChild } from './bench/common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const ENGINES = {
  chord: { name: 'chord-llm', worker: path.join(here, 'bench', 'chord-worker.mjs') },
  llama: { name: 'node-llama-cpp', worker: path.join(here, 'bench', 'llama-worker.mjs') },
};

const HELP = `Usage: npm run bench -- <model.gguf | model key> [options]

Benchmarks chord-llm and node-llama-cpp side by side on the same file and thread count,
each engine in its own child process: load seconds, prefill tok/s (one prompt evaluation in a
fresh state), decode tok/s (greedy, EOS ignored, (tokens-1)/(t_last-t_first)), peak RSS (VmHWM).
The same prompt ids (a fixed text tokenized by node-llama-cpp, BOS added when the model wants it)
are fed to both engines.

Options:
  --threads N         threads for both engines (default 2)
  --repeat R          fresh processes per engine, report medians (default 1)
  --json              print the results as JSON on stdout (the table then goes to stderr)
  --engines LIST      comma-separated subset of: chord,llama (default chord,llama)
  --prompt-tokens N   prompt length (default 128)
  --gen-tokens N      tokens to generate (default 128)
  --context-size N    context size for both engines (default 512, at least prompt+gen)
  --no-warmup         do not run one unmeasured prompt evaluation before the measured one
  --timeout S         per-process timeout in seconds (default 600)
  --chord-module P    load chord-llm from P instead of this repo (default: the repo, lib/index.js)
  -h, --help          this help

A model key (smollm2, gemma3, qwen05, qwen15) stands for the cached file from scripts/fetch-models.
`;

function parseArgs(argv) {
  const o = {
    model: null,
    threads: 2,
    repeat: 1,
    json: false,
    engines: ['chord', 'llama'],
    promptTokens: 128,
    genTokens: 128,
    contextSize: null,
    warmup: true,
    timeout: 600,
    chordModule: null,
  };
  parseCli(
    argv,
    {
      '-h, --help': () => (o.help = true),
      '--threads, -t': (val, flag) => (o.threads = int(flag, val(), 1)),
      '--repeat': (val, flag) => (o.repeat = int(flag, val(), 1)),
      '--json': () => (o.json = true),
      '--engines': (val) => {
        const list = val().split(',').map((s) => s.trim()).filter(Boolean);
        for (const e of list) if (!ENGINES[e]) throw new UsageError(`unknown engine "${e}" (chord, llama)`);
        if (!list.length) throw new UsageError('--engines needs at least one engine');
        o.engines = [...new Set(list)];
      },
      '--prompt-tokens': (val, flag) => (o.promptTokens = int(flag, val(), 1)),
      '--gen-tokens': (val, flag) => (o.genTokens = int(flag, val(), 2)),
      '--context-size': (val, flag) => (o.contextSize = int(flag, val(), 16)),
      '--no-warmup': () => (o.warmup = false),
      '--timeout': (val, flag) => (o.timeout = int(flag, val(), 1)),
      '--chord-module': (val) => (o.chordModule = path.resolve(val())),
    },
    oneModel(o),
  );
  return o;
}

async function resolveModel(arg) {
  if (fs.existsSync(arg)) return path.resolve(arg);
  const { MODELS, modelPath } = await import('./models.mjs');
  if (Object.hasOwn(MODELS, arg)) {
    const p = modelPath(arg);
    if (fs.existsSync(p)) return p;
    throw new UsageError(`model "${arg}" is not in the cache yet: run scripts/fetch-models ${arg}`);
  }
  throw new UsageError(`model file not found: ${arg}`);
}

/** Runs one engine's worker; resolves with its JSON line (or an {ok:false} record). */
function runWorker(engineKey, cfg, timeoutS) {
  const { name, worker } = ENGINES[engineKey];
  return runChild(worker, cfg, { timeoutS, engine: name });
}

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const METRICS = ['loadS', 'prefillTokS', 'decodeTokS', 'peakRssBytes', 'prefillS', 'decodeS', 'initS'];

function summarize(runs) {
  const ok = runs.filter((r) => r.ok);
  if (!ok.length) return { ok: false, error: runs[runs.length - 1]?.error ?? 'no runs', runs };
  const s = { ok: true, runs: runs.length, okRuns: ok.length };
  for (const k of METRICS) s[k] = median(ok.map((r) => r[k]));
  s.firstTokens = ok[0].firstTokens;
  if (ok.length < runs.length) s.failures = runs.filter((r) => !r.ok).map((r) => r.error);
  return s;
}

function fmt(v, digits) {
  return v == null ? '-' : v.toFixed(digits);
}

function table(meta, results, order) {
  const lines = [];
  lines.push(
    `model ${meta.model} (${(meta.modelBytes / 1048576).toFixed(1)} MiB), threads ${meta.threads}, ` +
      `prompt ${meta.promptTokens} tok, generate ${meta.genTokens} tok, context ${meta.contextSize}, ` +
      `repeat ${meta.repeat}${meta.repeat > 1 ? ' (medians)' : ''}`,
  );
  const head = ['engine', 'load s', 'prefill tok/s', 'decode tok/s', 'peak RSS MB'];
  const rows = [];
  for (const key of order) {
    const r = results[key];
    const name = ENGINES[key].name;
    if (!r.ok) {
      rows.push([name, `unavailable: ${String(r.error).split('\n')[0]}`]);
      continue;
    }
    rows.push([name, fmt(r.loadS, 2), fmt(r.prefillTokS, 1), fmt(r.decodeTokS, 1), fmt(r.peakRssBytes / 1048576, 1)]);
  }
  if (results.chord?.ok && results.llama?.ok) {
    const ratio = (a, b) => (a != null && b ? (a / b).toFixed(2) + 'x' : '-');
    rows.push([
      'chord / llama',
      ratio(results.chord.loadS, results.llama.loadS),
      ratio(results.chord.prefillTokS, results.llama.prefillTokS),
      ratio(results.chord.decodeTokS, results.llama.decodeTokS),
      ratio(results.chord.peakRssBytes, results.llama.peakRssBytes),
    ]);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.filter((r) => r.length > 2).map((r) => String(r[i]).length)));
  widths[0] = Math.max(widths[0], ...rows.map((r) => String(r[0]).length));
  const pad = (cells) =>
    cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  lines.push(pad(head));
  for (const r of rows) lines.push(r.length > 2 ? pad(r) : `${String(r[0]).padEnd(widths[0])}  ${r[1]}`);
  for (const key of order) {
    const r = results[key];
    if (!r.ok && String(r.error).includes('\n')) lines.push(`\n${ENGINES[key].name} error:\n${r.error}`);
    if (r.ok && r.failures) lines.push(`${ENGINES[key].name}: ${r.failures.length} failed run(s): ${r.failures[0]}`);
  }
  if (results.chord?.ok && results.llama?.ok && results.chord.firstTokens && results.llama.firstTokens) {
    const a = results.chord.firstTokens;
    const b = results.llama.firstTokens;
    let same = 0;
    while (same < Math.min(a.length, b.length) && a[same] === b[same]) same++;
    lines.push(`greedy tokens: first ${same}/${Math.min(a.length, b.length)} identical between engines`);
  }
  return lines.join('\n') + '\n';
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
    if (opts.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (!opts.model) throw new UsageError('no model given');
    opts.model = await resolveModel(opts.model);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\n\n${HELP}`);
      return 2;
    }
    throw e;
  }
  const contextSize = opts.contextSize ?? Math.max(512, opts.promptTokens + opts.genTokens);
  if (contextSize < opts.promptTokens + opts.genTokens) {
    process.stderr.write(`bench: --context-size ${contextSize} < prompt + gen tokens\n`);
    return 2;
  }
  const log = (m) => process.stderr.write(`bench: ${m}\n`);

  // The shared prompt ids, tokenized once by node-llama-cpp.
  let promptIds = null;
  const tok = await runWorker('llama', { mode: 'tokenize', model: opts.model, threads: opts.threads, promptTokens: opts.promptTokens }, opts.timeout);
  if (tok.ok && Array.isArray(tok.ids) && tok.ids.length === opts.promptTokens) promptIds = tok.ids;
  else log(`could not tokenize the prompt with node-llama-cpp (${tok.error ?? 'bad result'}); each engine tokenizes it itself`);

  const base = {
    mode: 'bench',
    model: opts.model,
    threads: opts.threads,
    contextSize,
    promptTokens: opts.promptTokens,
    genTokens: opts.genTokens,
    promptIds,
    warmup: opts.warmup,
    chordModule: opts.chordModule,
  };
  const runs = Object.fromEntries(opts.engines.map((e) => [e, []]));
  for (let r = 0; r < opts.repeat; r++) {
    for (const e of opts.engines) {
      log(`run ${r + 1}/${opts.repeat}: ${ENGINES[e].name} ...`);
      const res = await runWorker(e, base, opts.timeout);
      if (!res.ok) log(`${ENGINES[e].name} failed: ${String(res.error).split('\n')[0]}`);
      runs[e].push(res);
      // Don't keep retrying an engine that cannot even load.
      if (!res.ok && r === 0 && opts.repeat > 1 && /not loadable|does not export/.test(res.error)) runs[e].skip = true;
    }
    for (const e of Object.keys(runs)) if (runs[e].skip) opts.engines = opts.engines.filter((x) => x !== e);
  }
  const results = {};
  for (const e of Object.keys(runs)) results[e] = summarize(runs[e]);

  const meta = {
    model: opts.model,
    modelBytes: fs.statSync(opts.model).size,
    threads: opts.threads,
    promptTokens: opts.promptTokens,
    genTokens: opts.genTokens,
    contextSize,
    repeat: opts.repeat,
    warmup: opts.warmup,
    sharedPromptIds: promptIds != null,
    node: process.version,
  };
  const text = table(meta, results, Object.keys(runs));
  if (opts.json) {
    process.stderr.write(text);
    const detail = Object.fromEntries(Object.entries(runs).map(([e, rs]) => [e, rs.map((x) => ({ ...x }))]));
    process.stdout.write(JSON.stringify({ ...meta, results, runs: detail }, null, 2) + '\n');
  } else {
    process.stdout.write(text);
  }
  return Object.values(results).some((r) => r.ok) ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`bench: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 1;
  },
);
