// Side-by-side benchmark of chord-llm and node-llama-cpp (llama.cpp; also llama.cpp compiled for
// this CPU where scripts/build-native-llama has built it) on the same GGUF files and
// thread counts: load time, prefill tok/s (128-token prompt), decode tok/s (128 greedy tokens,
// EOS ignored) and peak RSS, each against a bound: decode against the memory-bandwidth bound
// (read bandwidth measured in the same run / bytes one decode step reads, weights and KV
// cache), chord-llm's peak RSS against file size + KV cache + 80 MB. Each engine runs in its
// own child process (scripts/bench/*-worker.mjs) so that its peak RSS is its own. Run
// `node scripts/bench.mjs --help`.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError, dropFilePages, fileHugePagesMb, int, list, parseCli, preparePageCache, runChild } from './bench/common.mjs';
import { decodeReadBytes, readGgufTensors } from './bench/gguf-tensors.mjs';
import { nativeLlamaPython } from './bench/native.mjs';
import { MODELS, modelPath } from './models.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const ENGINES = {
  chord: { name: 'chord-llm', worker: path.join(here, 'bench', 'chord-worker.mjs') },
  llama: { name: 'node-llama-cpp', worker: path.join(here, 'bench', 'llama-worker.mjs') },
  // llama.cpp compiled for this CPU (scripts/build-native-llama); in the default run where built.
  native: { name: 'llama.cpp native', worker: path.join(here, 'bench', 'native-worker.mjs') },
};

/** Synthetic models run by default when present in --synth-dir (written by scripts/synth.mjs). */
const SYNTH = [
  { key: 'tinyllama', file: 'tinyllama.gguf', shape: 'tinyllama-1.1b' },
  { key: 'llama2-7b', file: 'llama2-7b.gguf', shape: 'llama2-7b' },
];
const DEFAULT_SYNTH_DIR = '/tmp/synth';

/** Allowance for code, the JS runtime and scratch buffers above file size + KV cache. */
const RSS_OVERHEAD_BYTES = 80 * 1048576;

const HELP = `Usage: npm run bench -- [model.gguf | model key ...] [options]

Benchmarks chord-llm and node-llama-cpp side by side on the same files and thread counts, and
llama.cpp built for this CPU where scripts/build-native-llama has built it, each engine in its
own child process: load seconds, time to first token (TTFT: load + the first
evaluation of the prompt, with the file in the page cache, and "cold" with its cached pages
dropped first, read from disk), prefill tok/s (a prompt evaluation in a fresh state, the median
of --prefill-runs after the first), decode tok/s (greedy, EOS ignored,
(tokens-1)/(t_last-t_first)), peak RSS (VmHWM). chord-llm's
prefill and decode are measured once its default copy of the weights, made on a thread of its
own after the load (see useMmap), is made: "copy wait s" is how long that took after the first
evaluation, with nothing else running.
The same prompt ids (a fixed text tokenized by node-llama-cpp, BOS added when the model wants it)
are fed to every engine. One table per thread count, one row per model, medians of --repeat runs.
Each table's first line gives the 1-minute load average at its start: other processes' CPU use
skews the figures, the most at a thread count equal to the number of cores.

Ratios ("chord-llm / peer" columns): how many times faster chord-llm is, >1 where it is ahead:
the peer's TTFT over chord-llm's, chord-llm's prefill and decode tok/s over the peer's.

Bounds:
  decode bound  memory read bandwidth (that many threads reading a 1 GiB buffer, the best of 8
                passes, measured before each round of a model's runs; the "read GB/s" column is
                the median of the rounds, as the decode figures are, "read range" their lowest
                and highest) / bytes one decode step reads: the weights ("MiB/token": all
                layer tensors, output norm, output matrix or the tied token_embd, one embedding
                row) and the f16 KV cache of the positions before it, on average over the timed
                steps ("KV MiB/token": every layer's key and value rows, times the prompt
                tokens plus half the generated ones; a sliding window's limit on the positions
                read is not counted, so past Gemma-3's 512 the KV bytes are overstated); "of
                bound" is decode tok/s as a fraction of it. "of median-pass bound" is the same
                against the median of every pass of every round instead ("median pass GB/s"):
                on a host shared with other guests the best pass can catch a moment the
                seconds of a decode run do not see (2 threads on a Zen 4 VM: passes of 27-48
                GB/s within one measurement)
  RSS bound     file size + chord-llm's KV cache at this context size + 80 MB; chord-llm's
                peak RSS gets "ok" or "OVER"

Models: without any, every cached model key (${Object.keys(MODELS).join(', ')}; scripts/fetch-models
fetches them) and the synthetic ${SYNTH.map((s) => s.file).join(', ')} found in --synth-dir.

Options:
  --threads LIST      comma-separated thread counts, one table each (default 2)
  --repeat R          fresh processes per engine and model, report medians (default 3)
  --synth-dir DIR     where the default run looks for the synthetic models (default ${DEFAULT_SYNTH_DIR});
                      write them with npm run synth -- --shape tinyllama-1.1b --type q4_k_m
                      --out ${DEFAULT_SYNTH_DIR}/tinyllama.gguf (and --shape llama2-7b ... llama2-7b.gguf)
  --no-synth          the default run skips the synthetic models
  --json              print the results as JSON on stdout (the tables then go to stderr)
  --engines LIST      comma-separated subset of: chord,llama,native (default chord,llama, and
                      native where scripts/build-native-llama has built llama.cpp for this CPU:
                      llama-cpp-python compiled with -DGGML_NATIVE=ON, fed the same prompt ids)
  --prompt-tokens N   prompt length (default 128)
  --gen-tokens N      tokens to generate (default 128)
  --context-size N    context size for both engines (default 512, at least prompt+gen)
  --no-warmup         do not run one unmeasured prompt evaluation before the measured one
  --prefill-runs N    prompt evaluations measured per run, the median taken (default 3)
  --no-cold           skip the cold-start run per engine (TTFT cold: the file's cached pages
                      dropped, then load + prompt; about the file size / disk speed more per run)
  --page-cache MODE   how each model file is cached before its runs (Linux): fresh (default:
                      drop its pages, read it sequentially: large folios, the state after a
                      first read), small (drop them, read it 4 KiB at a time in scattered
                      order: 4 KiB pages) or as-is. Both engines map the file; the folio size
                      changes resident decode speed by 20-30% (TLB reach). chord-llm's first load
                      reads a file held in 4 KiB pages again (its pageCache: 'auto'), which leaves
                      large folios for every later run of either engine: to measure both engines
                      in the small state, add --chord-page-cache keep
  --timeout S         per-process timeout in seconds (default 600)
  --chord-page-cache M  chord-llm's pageCache load option: auto (default: a file held in 4 KiB
                      pages is read again once at load, so that it maps in 2 MiB pages) or keep
  --chord-use-mmap B  chord-llm's useMmap load option: true (weights read from the mapped file) or
                      false (all copied into the process's memory at load); unset (default):
                      the library's default, mapped and then copied on a thread of its own
  --chord-module P    load chord-llm from P instead of this repo (default: the repo, lib/index.js;
                      the bandwidth is always measured with this repo's addon)
  -h, --help          this help
`;

function parseArgs(argv) {
  const o = {
    models: [],
    threads: [2],
    repeat: 3,
    synthDir: DEFAULT_SYNTH_DIR,
    synth: true,
    json: false,
    engines: fs.existsSync(nativeLlamaPython()) ? ['chord', 'llama', 'native'] : ['chord', 'llama'],
    promptTokens: 128,
    genTokens: 128,
    contextSize: null,
    warmup: true,
    prefillRuns: 3,
    cold: true,
    pageCache: 'fresh',
    timeout: 600,
    chordModule: null,
  };
  parseCli(
    argv,
    {
      '-h, --help': () => (o.help = true),
      '--threads, -t': (val, flag) => (o.threads = list(flag, val()).map((t) => int(flag, t, 1))),
      '--repeat': (val, flag) => (o.repeat = int(flag, val(), 1)),
      '--synth-dir': (val) => (o.synthDir = path.resolve(val())),
      '--no-synth': () => (o.synth = false),
      '--json': () => (o.json = true),
      '--engines': (val, flag) => (o.engines = list(flag, val(), Object.keys(ENGINES))),
      '--prompt-tokens': (val, flag) => (o.promptTokens = int(flag, val(), 1)),
      '--gen-tokens': (val, flag) => (o.genTokens = int(flag, val(), 2)),
      '--context-size': (val, flag) => (o.contextSize = int(flag, val(), 16)),
      '--no-warmup': () => (o.warmup = false),
      '--prefill-runs': (val, flag) => (o.prefillRuns = int(flag, val(), 1)),
      '--no-cold': () => (o.cold = false),
      '--page-cache': (val, flag) => (o.pageCache = list(flag, val(), ['fresh', 'small', 'as-is'])[0]),
      '--timeout': (val, flag) => (o.timeout = int(flag, val(), 1)),
      '--chord-module': (val) => (o.chordModule = path.resolve(val())),
      '--chord-page-cache': (val, flag) => (o.chordPageCache = list(flag, val(), ['auto', 'keep'])[0]),
      '--chord-use-mmap': (val, flag) => (o.chordUseMmap = list(flag, val(), ['true', 'false'])[0] === 'true'),
    },
    (a) => o.models.push(a),
  );
  return o;
}

/** A model argument (file or key) as { label, file }. */
function resolveModel(arg) {
  if (fs.existsSync(arg)) return { label: path.basename(arg, '.gguf'), file: path.resolve(arg) };
  if (Object.hasOwn(MODELS, arg)) {
    const file = modelPath(arg);
    if (fs.existsSync(file)) return { label: arg, file };
    throw new UsageError(`model "${arg}" is not in the cache yet: run scripts/fetch-models ${arg}`);
  }
  throw new UsageError(`model file not found: ${arg}`);
}

/** The default run: the cached model keys, then the synthetic files present; the rest is logged as skipped. */
function defaultModels(opts, log) {
  const found = [];
  for (const key of Object.keys(MODELS)) {
    const file = modelPath(key);
    if (fs.existsSync(file)) found.push({ label: key, file });
    else log(`skipping ${key}: not cached (scripts/fetch-models ${key})`);
  }
  if (!opts.synth) return found;
  for (const s of SYNTH) {
    const file = path.join(opts.synthDir, s.file);
    if (fs.existsSync(file)) found.push({ label: `${s.key} (synth)`, file });
    else log(`skipping synthetic ${s.key}: no ${file} (npm run synth -- --shape ${s.shape} --type q4_k_m --out ${file})`);
  }
  return found;
}

/** Runs one engine's worker; resolves with its JSON line (or an {ok:false} record). */
function runWorker(engineKey, cfg, timeoutS) {
  const { name, worker } = ENGINES[engineKey];
  return runChild(worker, cfg, { timeoutS, engine: name });
}

/** "lowest-highest" GB/s of the bandwidth measurements, or '-'. */
function bandwidthRange(bytesPerS) {
  if (!bytesPerS?.length) return '-';
  return `${fmt(Math.min(...bytesPerS) / 1e9, 1)}-${fmt(Math.max(...bytesPerS) / 1e9, 1)}`;
}

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const METRICS = ['loadS', 'ttftS', 'copyWaitS', 'prefillTokS', 'decodeTokS', 'peakRssBytes', 'prefillS', 'decodeS', 'initS', 'kvCacheBytes'];

function summarize(runs) {
  const ok = runs.filter((r) => r.ok);
  if (!ok.length) return { ok: false, error: runs[runs.length - 1]?.error ?? 'no runs', runs: runs.length };
  const s = { ok: true, runs: runs.length, okRuns: ok.length };
  for (const k of METRICS) s[k] = median(ok.map((r) => r[k]));
  s.firstTokens = ok[0].firstTokens;
  if (ok.length < runs.length) s.failures = runs.filter((r) => !r.ok).map((r) => r.error);
  return s;
}

/** Weight bytes per decoded token from the file's tensor table, or null (logged) if unreadable. */
function weightBytesPerToken(file, log) {
  try {
    const d = decodeReadBytes(readGgufTensors(file).tensors);
    if (!d) log(`${file}: cannot tell the weight bytes per token (unknown tensor type or missing tensor)`);
    return d;
  } catch (e) {
    log(`${file}: cannot read the tensor table: ${e.message}`);
    return null;
  }
}

/**
 * Read bandwidth with `threads` threads (this repo's addon, in a worker): { best, passes } in
 * bytes/s, or null with the reason logged.
 */
async function measureBandwidth(threads, opts, log) {
  log(`measuring the memory read bandwidth with ${threads} thread(s) ...`);
  const bw = await runWorker('chord', { mode: 'bandwidth', threads }, opts.timeout);
  if (!bw.ok) log(`bandwidth not measured: ${String(bw.error).split('\n')[0]}`);
  return bw.ok ? { best: bw.bytesPerS, passes: bw.passesBytesPerS ?? [bw.bytesPerS] } : null;
}

/** Bytes one timed decode step reads on average: the weights, and its KV cache reads. */
function decodeStepBytes(read, opts) {
  return read.bytes + decodeKvBytes(read, opts);
}

/**
 * KV cache bytes one timed decode step reads on average. The decode is timed from the first
 * generated token (which the prompt's pass gives) to the last, so its steps run at positions
 * promptTokens .. promptTokens + genTokens - 2 and read, on average, promptTokens + genTokens / 2
 * cached positions.
 */
function decodeKvBytes(read, opts) {
  return read.kvBytesPerPosition * (opts.promptTokens + opts.genTokens / 2);
}

/** Runs every engine `repeat` times on one model at one thread count; adds the bounds. */
async function benchModel(model, threads, opts, log) {
  // The bandwidth is measured before each round of runs and its median taken, as the decode
  // figures are medians of the rounds: on a shared host it moves by a third between minutes
  // (2 threads on a Zen 4 host: 33-56 GB/s), and one measurement, the best of its passes, could
  // be far from what the model's decode saw.
  const bandwidths = [];
  const passes = [];
  const cfg = {
    mode: 'bench',
    model: model.file,
    threads,
    contextSize: opts.contextSize,
    promptTokens: opts.promptTokens,
    genTokens: opts.genTokens,
    promptIds: model.promptIds,
    warmup: opts.warmup,
    prefillRuns: opts.prefillRuns,
    chordModule: opts.chordModule,
    pageCache: opts.chordPageCache,
    useMmap: opts.chordUseMmap,
  };
  const runs = Object.fromEntries(opts.engines.map((e) => [e, []]));
  const skip = new Set();
  for (let r = 0; r < opts.repeat; r++) {
    const bw = await measureBandwidth(threads, opts, log);
    if (bw != null) {
      bandwidths.push(bw.best);
      passes.push(...bw.passes);
    }
    for (const e of opts.engines) {
      if (skip.has(e)) continue;
      log(`${model.label}, ${threads} threads, run ${r + 1}/${opts.repeat}: ${ENGINES[e].name} ...`);
      const res = await runWorker(e, cfg, opts.timeout);
      if (!res.ok) log(`${ENGINES[e].name} failed: ${String(res.error).split('\n')[0]}`);
      runs[e].push(res);
      // Don't keep retrying an engine that cannot even load.
      if (!res.ok && /not loadable|does not export/.test(res.error)) skip.add(e);
    }
  }
  const results = Object.fromEntries(Object.entries(runs).map(([e, rs]) => [e, summarize(rs)]));
  // Time to first token from a cold start: the file's cached pages dropped, then one process
  // loads it from disk and evaluates the prompt. The page cache is put back as it was prepared.
  if (opts.cold && process.platform === 'linux') {
    for (const e of opts.engines) {
      if (!results[e].ok) continue;
      log(`${model.label}, ${threads} threads, cold start: ${ENGINES[e].name} ...`);
      dropFilePages(model.file);
      const res = await runWorker(e, { ...cfg, warmup: false }, opts.timeout);
      results[e].ttftColdS = res.ok ? res.ttftS : null;
      if (!res.ok) log(`${ENGINES[e].name} cold start failed: ${String(res.error).split('\n')[0]}`);
      preparePageCache(model.file, opts.pageCache);
    }
  }
  const bandwidth = bandwidths.length ? median(bandwidths) : null;
  if (!bandwidth) log(`${model.label}: no bandwidth measured, no decode bound`);
  const boundTokS = bandwidth && model.decodeRead ? bandwidth / decodeStepBytes(model.decodeRead, opts) : null;
  const medianPass = passes.length ? median(passes) : null;
  const medianPassBoundTokS = medianPass && model.decodeRead ? medianPass / decodeStepBytes(model.decodeRead, opts) : null;
  for (const r of Object.values(results)) {
    if (r.ok && boundTokS) r.ofBound = r.decodeTokS / boundTokS;
    if (r.ok && medianPassBoundTokS) r.ofMedianPassBound = r.decodeTokS / medianPassBoundTokS;
  }
  const kv = results.chord?.ok ? results.chord.kvCacheBytes : null;
  const rssBoundBytes = kv != null ? model.fileBytes + kv + RSS_OVERHEAD_BYTES : null;
  if (results.chord?.ok && rssBoundBytes != null) results.chord.rssWithinBound = results.chord.peakRssBytes <= rssBoundBytes;
  return {
    ...model,
    threads,
    bandwidthBytesPerS: bandwidth,
    bandwidthsBytesPerS: bandwidths,
    bandwidthPassesBytesPerS: passes,
    medianPassBytesPerS: medianPass,
    boundTokS,
    medianPassBoundTokS,
    rssBoundBytes,
    results,
    runs,
  };
}

// ---------------------------------------------------------------------------------------------
// Tables.

const MB = 1048576;
const fmt = (v, digits) => (v == null || !Number.isFinite(v) ? '-' : v.toFixed(digits));
const pct = (v) => (v == null || !Number.isFinite(v) ? '-' : `${(100 * v).toFixed(0)}%`);
const ratio = (a, b) => (a != null && b ? `${(a / b).toFixed(2)}x` : '-');

/** Columns of one engine's group: [header, cell(result, row)]. */
function engineColumns(key) {
  const cols = [
    ['load s', (r) => fmt(r.loadS, 2)],
    ['TTFT s', (r) => fmt(r.ttftS, 2)],
    ['TTFT cold s', (r) => fmt(r.ttftColdS, 2)],
    ['prefill tok/s', (r) => fmt(r.prefillTokS, 1)],
    ['decode tok/s', (r) => fmt(r.decodeTokS, 1)],
    ['of bound', (r) => pct(r.ofBound)],
    ['of median-pass bound', (r) => pct(r.ofMedianPassBound)],
    ['peak RSS MB', (r) => fmt(r.peakRssBytes / MB, 0)],
  ];
  if (key === 'chord') {
    cols.splice(3, 0, ['copy wait s', (r) => fmt(r.copyWaitS, 2)]);
    cols.push(['RSS bound MB', (r, row) => (row.rssBoundBytes == null ? '-' : `${fmt(row.rssBoundBytes / MB, 0)} ${r.rssWithinBound ? 'ok' : 'OVER'}`)]);
  }
  return cols;
}

function sameGreedyTokens(results, peer) {
  const a = results.chord?.ok && results.chord.firstTokens;
  const b = results[peer]?.ok && results[peer].firstTokens;
  if (!a || !b) return '-';
  const n = Math.min(a.length, b.length);
  let same = 0;
  while (same < n && a[same] === b[same]) same++;
  return `${same}/${n}`;
}

/** One thread count's table: a model per row, groups of columns per engine, then chord/llama. */
function table({ threads, loadAverage, rows }, opts) {
  const groups = [
    {
      title: '',
      cols: [
        ['model', (row) => row.label],
        ['MiB/token', (row) => fmt(row.decodeRead?.bytes / MB, 1)],
        ['KV MiB/token', (row) => fmt(row.decodeRead ? decodeKvBytes(row.decodeRead, opts) / MB : null, 1)],
        ['read GB/s', (row) => fmt(row.bandwidthBytesPerS / 1e9, 1)],
        ['read range', (row) => bandwidthRange(row.bandwidthsBytesPerS)],
        ['median pass GB/s', (row) => fmt(row.medianPassBytesPerS / 1e9, 1)],
        ['bound tok/s', (row) => fmt(row.boundTokS, 1)],
      ],
    },
  ];
  for (const key of opts.engines) {
    const cols = engineColumns(key).map(([h, cell]) => [h, (row) => (row.results[key].ok ? cell(row.results[key], row) : 'n/a')]);
    groups.push({ title: ENGINES[key].name, cols });
  }
  for (const peer of ['llama', 'native']) {
    if (!opts.engines.includes('chord') || !opts.engines.includes(peer)) continue;
    const both = (f) => (row) => (row.results.chord.ok && row.results[peer].ok ? f(row.results.chord, row.results[peer]) : '-');
    groups.push({
      title: `chord-llm / ${ENGINES[peer].name}`,
      cols: [
        ['TTFT', both((c, l) => ratio(l.ttftS, c.ttftS))],
        ['prefill', both((c, l) => ratio(c.prefillTokS, l.prefillTokS))],
        ['decode', both((c, l) => ratio(c.decodeTokS, l.decodeTokS))],
        ['greedy same', (row) => sameGreedyTokens(row.results, peer)],
      ],
    });
  }
  const cols = groups.flatMap((g) => g.cols);
  const cells = rows.map((row) => cols.map(([, cell]) => String(cell(row))));
  const widths = cols.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const sep = '  ';
  const gap = ' | ';
  const line = (vals) => {
    let k = 0;
    return groups
      .map((g) => g.cols.map(() => (k === 0 ? vals[k].padEnd(widths[k++]) : vals[k].padStart(widths[k++]))).join(sep))
      .join(gap);
  };
  // Group titles centred over their columns.
  let k = 0;
  const titles = groups
    .map((g) => {
      const w = g.cols.reduce((a) => a + widths[k++], 0) + sep.length * (g.cols.length - 1);
      const t = g.title.slice(0, w);
      const left = Math.floor((w - t.length) / 2);
      return ' '.repeat(left) + t + ' '.repeat(w - t.length - left);
    })
    .join(gap);
  const out = [
    `threads ${threads}: memory read bandwidth measured before each round of runs (median; range of the rounds); prompt ${opts.promptTokens} tok, generate ${opts.genTokens} tok, ` +
      `context ${opts.contextSize}; ${opts.repeat > 1 ? `medians of ${opts.repeat} runs` : '1 run'}, prefill the median of ${opts.prefillRuns} evaluations per run; ` +
      `load average ${loadAverage.toFixed(2)} at the start`,
    titles.trimEnd(),
    line(cols.map(([h]) => h)),
    ...cells.map(line),
  ];
  for (const row of rows) {
    for (const key of opts.engines) {
      const r = row.results[key];
      if (!r.ok) out.push(`${row.label}: ${ENGINES[key].name} unavailable: ${r.error}`);
      else if (r.failures) out.push(`${row.label}: ${ENGINES[key].name}: ${r.failures.length} failed run(s): ${r.failures[0]}`);
    }
  }
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

async function main() {
  let opts;
  const log = (m) => process.stderr.write(`bench: ${m}\n`);
  let models;
  try {
    opts = parseArgs(process.argv.slice(2));
    if (opts.help) {
      process.stdout.write(HELP);
      return 0;
    }
    models = opts.models.length ? opts.models.map(resolveModel) : defaultModels(opts, log);
    if (!models.length) throw new UsageError('no model given and none found in the cache or --synth-dir');
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\n\n${HELP}`);
      return 2;
    }
    throw e;
  }
  opts.contextSize ??= Math.max(512, opts.promptTokens + opts.genTokens);
  if (opts.contextSize < opts.promptTokens + opts.genTokens) {
    process.stderr.write(`bench: --context-size ${opts.contextSize} < prompt + gen tokens\n`);
    return 2;
  }

  for (const m of models) {
    const how = preparePageCache(m.file, opts.pageCache);
    const huge = fileHugePagesMb();
    log(`${m.label}: page cache: ${how}${huge == null ? '' : `; file pages in huge folios system-wide: ${huge.toFixed(0)} MB`}`);
    m.fileBytes = fs.statSync(m.file).size;
    m.decodeRead = weightBytesPerToken(m.file, log);
    // The shared prompt ids, tokenized once per model by node-llama-cpp.
    const tok = await runWorker('llama', { mode: 'tokenize', model: m.file, threads: 1, promptTokens: opts.promptTokens }, opts.timeout);
    m.promptIds = tok.ok && Array.isArray(tok.ids) && tok.ids.length === opts.promptTokens ? tok.ids : null;
    if (!m.promptIds) log(`${m.label}: could not tokenize the prompt with node-llama-cpp (${tok.error ?? 'bad result'}); each engine tokenizes it itself`);
  }

  const tables = [];
  const write = (text) => (opts.json ? process.stderr : process.stdout).write(text);
  for (const threads of opts.threads) {
    const loadAverage = os.loadavg()[0];
    const rows = [];
    for (const m of models) rows.push(await benchModel(m, threads, opts, log));
    const t = { threads, loadAverage, rows };
    tables.push(t);
    write(table(t, opts) + '\n');
  }

  if (opts.json) {
    const meta = {
      promptTokens: opts.promptTokens,
      genTokens: opts.genTokens,
      contextSize: opts.contextSize,
      repeat: opts.repeat,
      warmup: opts.warmup,
      prefillRuns: opts.prefillRuns,
      pageCache: opts.pageCache,
      rssOverheadBytes: RSS_OVERHEAD_BYTES,
      node: process.version,
    };
    const strip = ({ promptIds, ...row }) => ({ ...row, sharedPromptIds: promptIds != null });
    const out = tables.map((t) => ({ ...t, rows: t.rows.map(strip) }));
    process.stdout.write(JSON.stringify({ ...meta, tables: out }, null, 2) + '\n');
  }
  const anyOk = tables.some((t) => t.rows.some((row) => Object.values(row.results).some((r) => r.ok)));
  return anyOk ? 0 : 1;
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
