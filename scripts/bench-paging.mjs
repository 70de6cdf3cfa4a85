// Benchmark of chord-llm's pager (memoryBudget) against resident mode, and, under real memory
// pressure (a cgroup v1 memory limit), against node-llama-cpp's mmap. Each configuration runs
// in its own child process (scripts/bench/paging-worker.mjs, scripts/bench/llama-worker.mjs) so
// that its peak RSS (VmHWM) is its own. Run `node scripts/bench-paging.mjs --help`.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError, fileHugePagesMb, int, killCurrentChild, list, oneModel, parseCli, preparePageCache, readWholeFile, runChild } from './bench/common.mjs';
import { readGgufTensors } from './bench/gguf-tensors.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PAGING_WORKER = path.join(here, 'bench', 'paging-worker.mjs');
const LLAMA_WORKER = path.join(here, 'bench', 'llama-worker.mjs');
const CGROUP_ROOT = '/sys/fs/cgroup/memory';
const MB = 1e6;
/** The acceptance bound's slack over budget + KV cache. */
const SLACK_BYTES = 150 * MB;

const HELP = `Usage: node scripts/bench-paging.mjs <model.gguf | model key> [options]

Runs chord-llm resident (paging 'never') and paged at several memory budgets, each configuration
in its own process: load, a fixed prompt, N greedy tokens (EOS ignored). Reports decode tok/s
(tokens after the first), the ratio to resident, peak RSS (VmHWM) against the bound
budget + KV cache + 150 MB, pager counters per decode token, and whether the tokens are
identical to resident mode. The model file is read once before each of these runs so that it
is in the page cache.

With --cgroup, also runs chord-llm paged and node-llama-cpp (mmap) inside a cgroup v1 memory
cgroup limited to half the file, with caches dropped before each run, next to the disk-bound
decode limit (sequential read speed with caches dropped / bytes per token).

Options:
  --threads N          compute threads (default 2)
  --tokens N           greedy tokens per run (default 64)
  --prompt-tokens N    prompt length (default 16)
  --context-size N     context (sets info.kvCacheBytes; default 256, at least prompt + tokens)
  --budgets LIST       comma-separated budgets (default half,quarter,minpf,min):
                         half, quarter   of info.weightBytes
                         P%              P percent of the weights
                         min             the smallest budget the engine accepts (its largest
                                         unit: a layer or the output head)
                         minpf           one unit plus the prefetch: the most bytes any
                                         prefetch+1 consecutive units take (what streaming
                                         with full prefetch needs)
                         256MB, 2GiB, 123456789   a size (MB = 10^6 B, MiB = 2^20 B) or bytes
  --methods LIST       paging methods, comma-separated: read,mmap (default: the engine's own
                       default, mmap on Linux, read elsewhere)
  --policies LIST      eviction policies: fixed,lru (default fixed)
                       (every budget runs with every method and policy)
  --prefetch N         prefetchLayers (default: the engine's, 2)
  --repeat R           runs per configuration (fresh processes); the median decode speed is
                       reported, the highest peak RSS, and tokens must match in every run
                       (default 1)
  --skip-resident      no resident run (then tokens are not checked and there is no ratio)
  --no-warm            do not read the file into the page cache before each run
  --page-cache MODE    how the file is brought into the page cache before each run (Linux;
                       the pages' size decides what mapping a layer in costs):
                         fresh   (default) drop the file's cached pages (dd iflag=nocache),
                                 then read it sequentially: readahead caches it in large
                                 folios, which map in whole (a file's state after a first read)
                         small   drop them, then read it 4 KiB at a time in scattered order:
                                 no readahead, the file is cached in 4 KiB pages, each mapped
                                 on its own (the slowest state for paging)
                         as-is   leave the cache as it is
  --timeout S          per-process time limit in seconds (default 600)
  --json               print the results as JSON on stdout (the tables go to stderr)
  --chord-module P     load chord-llm from P instead of this repo

  --cgroup             also run the memory-pressure comparison (Linux, root, cgroup v1 memory
                       controller at ${CGROUP_ROOT})
  --cgroup-only        only that (with the probe it needs); implies --cgroup
  --cgroup-limit SIZE  the cgroup's memory limit (default: half the file size)
  --cgroup-budget SIZE chord-llm's budget in the cgroup (default: limit - KV cache - 150 MB)
  --pressure-tokens N  greedy tokens per run in the cgroup (default 8)
  --drop-caches MODE   how caches are dropped: all (sync; echo 3 > /proc/sys/vm/drop_caches,
                       default) or file (only the model file's pages, with dd iflag=nocache;
                       leaves other processes' page cache alone)
  --read-speed MBPS    use this sequential read speed (MB/s) instead of measuring it
  --no-llama           no node-llama-cpp run in the cgroup
  --dry-run            only probe the model and print the budgets and runs it would do
  -h, --help           this help

A model key (smollm2, gemma3, qwen05, qwen15) stands for the cached file from scripts/fetch-models.
`;

function parseArgs(argv) {
  const o = {
    model: null,
    threads: 2,
    tokens: 64,
    promptTokens: 16,
    contextSize: null,
    budgets: ['half', 'quarter', 'minpf', 'min'],
    // What a user gets without choosing (lib/index.d.ts, pagingMethod).
    methods: process.platform === 'linux' ? ['mmap'] : ['read'],
    policies: ['fixed'],
    prefetch: null,
    repeat: 1,
    skipResident: false,
    warm: true,
    pageCache: 'fresh',
    timeout: 600,
    json: false,
    chordModule: null,
    cgroup: false,
    cgroupOnly: false,
    cgroupLimit: null,
    cgroupBudget: null,
    pressureTokens: 8,
    dropCaches: 'all',
    readSpeed: null,
    llama: true,
  };
  parseCli(
    argv,
    {
      '-h, --help': () => (o.help = true),
      '--threads, -t': (val, flag) => (o.threads = int(flag, val(), 1)),
      '--tokens': (val, flag) => (o.tokens = int(flag, val(), 2)),
      '--prompt-tokens': (val, flag) => (o.promptTokens = int(flag, val(), 1)),
      '--context-size': (val, flag) => (o.contextSize = int(flag, val(), 8)),
      '--budgets': (val, flag) => {
        o.budgets = list(flag, val());
        for (const b of o.budgets) budgetKind(b); // validate early
      },
      '--methods': (val, flag) => (o.methods = list(flag, val(), ['read', 'mmap'])),
      '--policies': (val, flag) => (o.policies = list(flag, val(), ['fixed', 'lru'])),
      '--prefetch': (val, flag) => (o.prefetch = int(flag, val(), 0)),
      '--repeat': (val, flag) => (o.repeat = int(flag, val(), 1)),
      '--skip-resident': () => (o.skipResident = true),
      '--no-warm': () => (o.warm = false),
      '--page-cache': (val, flag) => (o.pageCache = list(flag, val(), ['fresh', 'small', 'as-is'])[0]),
      '--timeout': (val, flag) => (o.timeout = int(flag, val(), 1)),
      '--json': () => (o.json = true),
      '--chord-module': (val) => (o.chordModule = path.resolve(val())),
      '--cgroup': () => (o.cgroup = true),
      '--cgroup-only': () => (o.cgroup = o.cgroupOnly = true),
      '--cgroup-limit': (val, flag) => (o.cgroupLimit = parseSize(val(), flag)),
      '--cgroup-budget': (val, flag) => (o.cgroupBudget = parseSize(val(), flag)),
      '--pressure-tokens': (val, flag) => (o.pressureTokens = int(flag, val(), 2)),
      '--drop-caches': (val, flag) => (o.dropCaches = list(flag, val(), ['all', 'file'])[0]),
      '--read-speed': (val, flag) => {
        const v = Number(val());
        if (!(v > 0)) throw new UsageError(`${flag} needs a positive number of MB/s`);
        o.readSpeed = v * MB;
      },
      '--no-llama': () => (o.llama = false),
      '--dry-run': () => (o.dryRun = true),
    },
    oneModel(o),
  );
  return o;
}

/** A byte size as the engine parses memoryBudget: 512MB = 512e6, 2GiB = 2 * 2^30, or bytes. */
function parseSize(text, what = 'size') {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(String(text));
  const scale = { '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };
  const s = m && scale[m[2].toLowerCase()];
  if (!s) throw new UsageError(`${what}: "${text}" is not a size such as 512MB or 2GiB`);
  const n = Math.floor(Number(m[1]) * s);
  if (n < 1) throw new UsageError(`${what}: "${text}" is less than one byte`);
  return n;
}

function budgetKind(b) {
  if (b === 'half' || b === 'quarter' || b === 'min' || b === 'minpf') return b;
  if (/^\d+(\.\d+)?%$/.test(b)) return 'percent';
  parseSize(b, '--budgets');
  return 'size';
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

// ---------------------------------------------------------------------------------------------
// Unit sizes from the GGUF header (for 'minpf'): a unit is a layer (its blk.N.* tensors) or the
// output head (output_norm + output, or token_embd when the output is tied), each tensor padded
// to 64 bytes in the unit's buffer, as the pager packs them.

/** Unit sizes in the pager's cycle order (layers, then the head); null if the header is odd. */
function unitSizes(file) {
  try {
    const { tensors } = readGgufTensors(file);
    const byName = new Map(tensors.map((t) => [t.name, t]));
    const pad = (n) => Math.ceil(n / 64) * 64;
    const layers = [];
    for (const t of tensors) {
      const m = /^blk\.(\d+)\./.exec(t.name);
      if (!m) continue;
      if (t.size == null) return null;
      layers[Number(m[1])] = (layers[Number(m[1])] ?? 0) + pad(t.size);
    }
    const output = byName.get('output.weight') ?? byName.get('token_embd.weight');
    const norm = byName.get('output_norm.weight');
    if (!output || !norm || output.size == null || norm.size == null || layers.some((x) => x == null)) return null;
    const seen = new Set();
    const totalBytes = tensors.filter((t) => !seen.has(t.offset) && seen.add(t.offset)).reduce((a, t) => a + (t.size ?? 0), 0);
    return { units: [...layers, pad(norm.size) + pad(output.size)], totalBytes };
  } catch {
    return null;
  }
}

/** The most bytes any `len` consecutive units of the cycle take. */
function windowBytes(units, len) {
  let best = 0;
  for (let s = 0; s < units.length; s++) {
    let sum = 0;
    for (let k = 0; k < Math.min(len, units.length); k++) sum += units[(s + k) % units.length];
    best = Math.max(best, sum);
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/** Reads the whole file with a large buffer; returns seconds. */
/** Bytes of the file in the page cache (fincore), or null. */
function cachedBytes(file) {
  try {
    const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const n = Number(out.trim());
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

function dropCaches(mode, file) {
  if (mode === 'file') {
    execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
    return;
  }
  execFileSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

// ---------------------------------------------------------------------------------------------
// Formatting.

const fmt = (v, d) => (v == null || !Number.isFinite(v) ? '-' : v.toFixed(d));
const mb = (b, d = 1) => (b == null ? '-' : (b / MB).toFixed(d));

function renderTable(head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.filter((r) => r.length > 2).map((r) => String(r[i] ?? '').length)));
  widths[0] = Math.max(widths[0], ...rows.map((r) => String(r[0]).length));
  const pad = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  ');
  const lines = [pad(head)];
  for (const r of rows) lines.push(r.length > 2 ? pad(r) : `${String(r[0]).padEnd(widths[0])}  ${r[1]}`);
  return lines.join('\n');
}

/** Pager counters over the measured decode (tokens 2..N), per token. */
function decodeCounters(r) {
  const a = r.statsFirst;
  const b = r.statsEnd;
  const n = r.genTokens - 1;
  if (!a || !b || n < 1) return null;
  const d = (k) => (b[k] - a[k]) / n;
  return { loads: d('layerLoads'), hits: d('layerHits'), prefetchHits: d('prefetchHits'), stallMs: d('stallMs'), bytesRead: d('bytesRead') };
}

function sameTokens(a, b) {
  if (!a || !b) return null;
  let k = 0;
  while (k < Math.min(a.length, b.length) && a[k] === b[k]) k++;
  return { same: k, of: Math.min(a.length, b.length), identical: k === a.length && a.length === b.length };
}

function pageCacheTable(meta, rows) {
  const head = ['config', 'budget MB', 'load s', 'decode tok/s', 'vs resident', 'peak RSS MB', 'bound MB', 'RSS', 'loads/hits/pf per tok', 'stall ms/tok', 'MB read/tok', 'tokens'];
  const out = [];
  for (const row of rows) {
    const r = row.result;
    if (!r.ok) {
      out.push([row.label, `${row.skipped ? '' : 'FAILED: '}${String(r.error).split('\n')[0]}`]);
      continue;
    }
    const c = row.counters;
    out.push([
      row.label,
      row.budgetBytes == null ? '-' : mb(row.budgetBytes),
      fmt(r.loadS, 2),
      fmt(r.decodeTokS, 2),
      row.ratio == null ? '-' : row.ratio.toFixed(2) + 'x',
      mb(row.peakRssBytes ?? r.peakRssBytes),
      row.boundBytes == null ? '-' : mb(row.boundBytes),
      row.boundOk == null ? '-' : row.boundOk ? 'ok' : 'OVER',
      c ? `${fmt(c.loads, 1)}/${fmt(c.hits, 1)}/${fmt(c.prefetchHits, 1)}` : '-',
      c ? fmt(c.stallMs, 1) : '-',
      c ? mb(c.bytesRead) : '-',
      row.tokens == null ? (row.kind === 'resident' ? 'ref' : '-') : row.tokens.identical ? 'same' : `DIFF@${row.tokens.same}`,
    ]);
  }
  let s =
    `model ${meta.model} (${mb(meta.fileBytes)} MB file, ${mb(meta.weightBytes)} MB weights, ${meta.layers} layers, ` +
    `largest unit ${mb(meta.minBytes)} MB), threads ${meta.threads}, prompt ${meta.promptTokens} tok, ` +
    `${meta.tokens} greedy tok, ${meta.repeat > 1 ? `repeat ${meta.repeat} (median decode, max RSS), ` : ''}context ${meta.contextSize} (KV cache ${mb(meta.kvCacheBytes)} MB), ` +
    `file in the page cache${meta.warm ? '' : ' (not re-read before each run: --no-warm)'}, ${meta.pageCache}\n`;
  s += `MB = 10^6 B; bound = budget + KV cache + 150 MB; decode tok/s over tokens 2..N; pager counters per decode token\n`;
  s += renderTable(head, out) + '\n';
  for (const row of rows) if (!row.result.ok && String(row.result.error).includes('\n')) s += `\n${row.label} error:\n${row.result.error}\n`;
  return s;
}

function cgroupTable(cg) {
  if (cg.skipped) return `memory pressure (cgroup): skipped: ${cg.skipped}\n`;
  const head = ['engine', 'budget MB', 'tokens', 'load s', 'decode tok/s', 'disk limit tok/s', 'vs disk limit', 'MB read/tok', 'peak RSS MB', 'cgroup max MB', 'major faults', 'cached MB before'];
  const rows = [];
  for (const run of cg.runs) {
    const r = run.result;
    if (!r.ok) {
      rows.push([run.label, `FAILED: ${String(r.error).split('\n')[0]}${run.oomKills ? ` (${run.oomKills} OOM kill(s) in the cgroup)` : ''}`]);
      continue;
    }
    rows.push([
      run.label,
      run.budgetBytes == null ? '-' : mb(run.budgetBytes),
      r.genTokens,
      fmt(r.loadS, 2),
      fmt(r.decodeTokS, 3),
      fmt(run.diskLimitTokS, 3),
      run.vsDiskLimit == null ? '-' : run.vsDiskLimit.toFixed(2) + 'x',
      run.bytesPerToken == null ? '-' : mb(run.bytesPerToken),
      mb(r.peakRssBytes),
      mb(run.cgroupMaxUsage),
      run.majorFaults ?? '-',
      mb(run.cachedBefore),
    ]);
  }
  let s =
    `memory pressure: cgroup v1 memory limit ${mb(cg.limitBytes)} MB (file ${mb(cg.fileBytes)} MB), caches dropped (${cg.dropCaches}) before each run, ` +
    `${cg.tokens} greedy tok\n`;
  s +=
    `sequential read with caches dropped: ${fmt(cg.readSpeed / MB, 1)} MB/s (${cg.readSpeedSource}); ` +
    `disk-bound decode limit (whole file per token) = ${fmt(cg.diskLimitTokS, 3)} tok/s\n`;
  s += `disk limit per engine = read speed / bytes read per token (chord-llm: stats().bytesRead over the decode; node-llama-cpp: the file)\n`;
  s += renderTable(head, rows) + '\n';
  for (const run of cg.runs) if (!run.result.ok && String(run.result.error).includes('\n')) s += `\n${run.label} error:\n${run.result.error}\n`;
  return s;
}

// ---------------------------------------------------------------------------------------------

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
      process.stderr.write(`bench-paging: ${e.message}\n\n${HELP}`);
      return 2;
    }
    throw e;
  }
  const log = (m) => process.stderr.write(`bench-paging: ${m}\n`);
  const need = opts.promptTokens + Math.max(opts.tokens, opts.pressureTokens);
  const contextSize = opts.contextSize ?? Math.max(256, Math.ceil(need / 64) * 64);
  if (contextSize < need) {
    log(`--context-size ${contextSize} < prompt + tokens (${need})`);
    return 2;
  }
  const fileBytes = fs.statSync(opts.model).size;
  const common = { model: opts.model, threads: opts.threads, contextSize, chordModule: opts.chordModule };

  // Probe: the smallest budget, the weights, the KV cache, the prompt ids.
  const geometry = unitSizes(opts.model);
  log('probe: smallest budget, model info, prompt ids ...');
  const probe = await runChild(
    PAGING_WORKER,
    { ...common, mode: 'probe', promptTokens: opts.promptTokens, prefetchLayers: opts.prefetch, searchHigh: geometry ? geometry.totalBytes : null },
    { timeoutS: opts.timeout },
  );
  if (!probe.ok) {
    log(`probe failed: ${probe.error}`);
    return 1;
  }
  const info = probe.info;
  const weightBytes = info.weightBytes;
  const minBytes = probe.largestUnitBytes;
  const prefetch = opts.prefetch ?? 2;
  let minpfBytes = null;
  if (geometry) {
    const largest = Math.max(...geometry.units);
    minpfBytes = windowBytes(geometry.units, prefetch + 1);
    if (largest !== minBytes) log(`note: header-derived largest unit ${largest} B differs from the engine's ${minBytes} B`);
    if (geometry.totalBytes !== weightBytes) log(`note: header-derived weights ${geometry.totalBytes} B differ from info.weightBytes ${weightBytes} B`);
  }
  if (!probe.belowMinRejected) log(`warning: a budget of ${minBytes - 1} B (min - 1) was not rejected`);
  const promptIds = probe.promptIds;
  log(
    `weights ${mb(weightBytes)} MB, ${info.layers} layers, smallest budget (largest unit) ${minBytes} B, ` +
      `one unit + prefetch ${minpfBytes ?? '?'} B, KV cache ${info.kvCacheBytes} B at context ${contextSize}, prompt ${promptIds.length} tok`,
  );

  const resolveBudget = (b) => {
    switch (budgetKind(b)) {
      case 'half':
        return Math.floor(weightBytes / 2);
      case 'quarter':
        return Math.floor(weightBytes / 4);
      case 'min':
        return minBytes;
      case 'minpf':
        return minpfBytes;
      case 'percent':
        return Math.floor((weightBytes * Number(b.slice(0, -1))) / 100);
      default:
        return parseSize(b);
    }
  };

  const meta = {
    model: opts.model,
    fileBytes,
    weightBytes,
    layers: info.layers,
    minBytes,
    minpfBytes,
    belowMinRejected: probe.belowMinRejected,
    prefetchLayers: prefetch,
    kvCacheBytes: info.kvCacheBytes,
    threads: opts.threads,
    promptTokens: promptIds.length,
    promptIds,
    tokens: opts.tokens,
    contextSize,
    warm: opts.warm,
    pageCache: null,
    repeat: opts.repeat,
    node: process.version,
  };

  if (opts.dryRun) {
    const lines = [`model ${opts.model}: file ${fileBytes} B, weights ${weightBytes} B, ${info.layers} layers, KV cache ${info.kvCacheBytes} B at context ${contextSize}`];
    lines.push(`smallest budget (min, largest unit) ${minBytes} B (min - 1 rejected: ${probe.belowMinRejected}); one unit + prefetch ${prefetch} (minpf) ${minpfBytes ?? '?'} B`);
    lines.push(`prompt ids (${promptIds.length}): ${promptIds.join(' ')}`);
    if (!opts.cgroupOnly) {
      if (!opts.skipResident) lines.push('run: resident (paging never)');
      for (const b of opts.budgets) {
        const bytes = resolveBudget(b);
        const skip = bytes == null || bytes < minBytes;
        lines.push(`run: budget ${b} = ${bytes ?? '?'} B (${mb(bytes)} MB)${skip ? ' - skipped, below min' : ` x methods ${opts.methods.join(',')} x policies ${opts.policies.join(',')}; RSS bound ${mb(bytes + info.kvCacheBytes + SLACK_BYTES)} MB`}`);
      }
    }
    if (opts.cgroup) {
      const limit = opts.cgroupLimit ?? Math.floor(fileBytes / 2);
      const budget = opts.cgroupBudget ?? limit - info.kvCacheBytes - SLACK_BYTES;
      lines.push(`cgroup: limit ${limit} B (${mb(limit)} MB), chord-llm budget ${budget} B (${mb(budget)} MB)${budget < minBytes ? ' - below min, would not run' : ''}, ${opts.pressureTokens} tokens, drop caches: ${opts.dropCaches}, cgroup v1 memory at ${CGROUP_ROOT}: ${fs.existsSync(path.join(CGROUP_ROOT, 'memory.limit_in_bytes')) ? 'yes' : 'no'}`);
    }
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  }

  // Page-cache runs: resident, then every budget x method x policy.
  const rows = [];
  if (!opts.cgroupOnly) {
    const configs = [];
    if (!opts.skipResident) configs.push({ label: 'resident', kind: 'resident', budget: null, load: { paging: 'never' } });
    for (const b of opts.budgets) {
      const bytes = resolveBudget(b);
      if (bytes == null) {
        configs.push({ label: b, kind: 'paged', budgetName: b, budget: null, failed: `could not work out budget "${b}" (unreadable GGUF header)` });
        continue;
      }
      if (bytes < minBytes) {
        log(`budget ${b} = ${bytes} B is below the smallest budget ${minBytes} B: skipped`);
        configs.push({ label: b, kind: 'paged', budgetName: b, budget: bytes, skipped: `skipped: below the smallest budget (${minBytes} B, the largest unit)` });
        continue;
      }
      for (const method of opts.methods) {
        for (const policy of opts.policies) {
          const load = { paging: 'always', memoryBudget: bytes, pagingMethod: method, evictionPolicy: policy };
          if (opts.prefetch != null) load.prefetchLayers = opts.prefetch;
          configs.push({ label: `${b} ${method} ${policy}`, kind: 'paged', budgetName: b, budget: bytes, method, policy, load });
        }
      }
    }
    if (opts.warm) {
      const how = preparePageCache(opts.model, opts.pageCache);
      const huge = fileHugePagesMb();
      meta.pageCache = `${how}${huge == null ? '' : `; file pages in huge folios system-wide: ${huge.toFixed(0)} MB`}`;
      log(`page cache: ${meta.pageCache}`);
    }
    let resident = null;
    for (const [i, c] of configs.entries()) {
      if (c.skipped || c.failed) {
        rows.push({ label: c.label, kind: c.kind, budgetName: c.budgetName, budgetBytes: c.budget, skipped: !!c.skipped, result: { ok: false, error: c.skipped ?? c.failed } });
        continue;
      }
      const reps = [];
      for (let k = 0; k < opts.repeat; k++) {
        // Every run starts from the page-cache state asked for (set before the first run, above):
        // a load that finds the file in small pages reads it again, and the first run's reread
        // must not serve the rest.
        const firstRun = !rows.length && !k;
        if (opts.warm && opts.pageCache !== 'as-is' && !firstRun) {
          preparePageCache(opts.model, opts.pageCache);
        } else if (opts.warm) {
          const s = readWholeFile(opts.model);
          if (firstRun) log(`file read into the page cache in ${s.toFixed(2)} s`);
        }
        const rep = opts.repeat > 1 ? ` [${k + 1}/${opts.repeat}]` : '';
        log(`run ${i + 1}/${configs.length}${rep}: ${c.label}${c.budget != null ? ` (budget ${c.budget} B)` : ''} ...`);
        const r = await runChild(PAGING_WORKER, { ...common, mode: 'bench', promptIds, genTokens: opts.tokens, load: c.load }, { timeoutS: opts.timeout });
        if (!r.ok) log(`${c.label} failed: ${String(r.error).split('\n')[0]}`);
        reps.push(r);
        if (!r.ok) break;
      }
      // The run with the median decode speed stands for the configuration; peak RSS is the
      // highest of the repeats, and every repeat's tokens must match.
      const okReps = reps.filter((x) => x.ok);
      const failedRep = reps.find((x) => !x.ok);
      const sorted = okReps.slice().sort((a, b) => (a.decodeTokS ?? 0) - (b.decodeTokS ?? 0));
      const r = failedRep ?? sorted[(sorted.length - 1) >> 1];
      const row = { label: c.label, kind: c.kind, budgetName: c.budgetName ?? null, budgetBytes: c.budget, method: c.method ?? null, policy: c.policy ?? null, result: r };
      if (opts.repeat > 1) row.repeats = reps.map((x) => ({ ok: x.ok, decodeTokS: x.decodeTokS, loadS: x.loadS, peakRssBytes: x.peakRssBytes, error: x.error }));
      if (r.ok) {
        const peak = Math.max(...okReps.map((x) => x.peakRssBytes));
        row.peakRssBytes = peak;
        if (c.kind === 'resident') resident = { ...r, allTokens: okReps.map((x) => x.tokens) };
        row.counters = c.kind === 'paged' ? decodeCounters(r) : null;
        row.kvCacheBytes = r.info.kvCacheBytes;
        row.paged = r.info.paged;
        if (c.kind === 'paged') {
          row.boundBytes = c.budget + r.info.kvCacheBytes + SLACK_BYTES;
          row.boundOk = peak <= row.boundBytes;
          const pr = Math.max(...okReps.map((x) => x.statsEnd.peakResidentBytes));
          if (pr > c.budget) log(`warning: ${c.label}: peakResidentBytes ${pr} > budget ${c.budget}`);
        }
        if (resident && c.kind === 'paged') {
          row.ratio = r.decodeTokS && resident.decodeTokS ? r.decodeTokS / resident.decodeTokS : null;
          const cmp = okReps.map((x) => sameTokens(x.tokens, resident.tokens));
          row.tokens = cmp.find((t) => !t.identical) ?? cmp[0];
        }
        if (resident && c.kind === 'resident' && okReps.length > 1) {
          const cmp = okReps.map((x) => sameTokens(x.tokens, r.tokens)).find((t) => !t.identical);
          if (cmp) log(`warning: resident runs disagree with each other at token ${cmp.same}`);
        }
      }
      rows.push(row);
    }
  }

  // Memory pressure in a cgroup.
  let cg = null;
  if (opts.cgroup) cg = await cgroupRuns(opts, { common, promptIds, info, minBytes, fileBytes, contextSize, log });

  const checks = acceptance(rows, cg);
  let text = '';
  if (rows.length) text += pageCacheTable(meta, rows);
  // Each run: on a VM, how fast memory reads the file's cached pages can depend on where a
  // reread put them, so one configuration's runs may split into a slow and a fast group.
  const spread = rows.filter((r) => r.repeats);
  if (spread.length) {
    text += '\ndecode tok/s of each run, in order:\n';
    for (const r of spread) text += `  ${r.label.padEnd(18)} ${r.repeats.map((x) => (x.decodeTokS == null ? '-' : x.decodeTokS.toFixed(2))).join('  ')}\n`;
  }
  if (cg) text += (text ? '\n' : '') + cgroupTable(cg);
  if (checks.length) text += '\n' + checks.map((c) => `${c.ok == null ? '----' : c.ok ? 'PASS' : 'FAIL'}  ${c.what}`).join('\n') + '\n';

  if (opts.json) {
    process.stderr.write(text);
    process.stdout.write(JSON.stringify({ ...meta, probe, runs: rows, cgroup: cg, checks }, null, 2) + '\n');
  } else {
    process.stdout.write(text);
  }
  const anyFail = rows.some((r) => !r.result.ok && !r.skipped) || (cg && cg.runs && cg.runs.some((r) => !r.result.ok));
  return anyFail ? 1 : 0;
}

/** Summary lines for the issue's acceptance figures that this run has data for. */
function acceptance(rows, cg) {
  const out = [];
  const paged = rows.filter((r) => r.kind === 'paged' && r.result.ok);
  if (paged.length) {
    const over = paged.filter((r) => !r.boundOk);
    const worst = paged.reduce((w, r) => (r.peakRssBytes - r.boundBytes > w.peakRssBytes - w.boundBytes ? r : w));
    out.push({
      what:
        `peak RSS <= budget + KV cache + 150 MB: ${paged.length - over.length}/${paged.length} paged configurations` +
        (over.length ? ` (over: ${over.map((r) => `${r.label} ${mb(r.peakRssBytes)} > ${mb(r.boundBytes)} MB`).join(', ')})` : ` (closest: ${worst.label}, ${mb(worst.peakRssBytes)} of ${mb(worst.boundBytes)} MB)`),
      ok: over.length === 0,
    });
    const checked = paged.filter((r) => r.tokens);
    if (checked.length) {
      const diff = checked.filter((r) => !r.tokens.identical);
      out.push({
        what: `greedy tokens identical to resident: ${checked.length - diff.length}/${checked.length} paged configurations` + (diff.length ? ` (differ: ${diff.map((r) => `${r.label} at token ${r.tokens.same}`).join(', ')})` : ''),
        ok: diff.length === 0,
      });
    }
    for (const r of paged) {
      if (r.budgetName === 'half' && r.ratio != null) out.push({ what: `${r.label}: decode ${r.ratio.toFixed(2)}x resident (target >= 0.90x, file in the page cache)`, ok: r.ratio >= 0.9 });
    }
  }
  const failed = rows.filter((r) => !r.result.ok && !r.skipped);
  if (failed.length) out.push({ what: `runs that failed: ${failed.map((r) => r.label).join(', ')}`, ok: false });
  if (cg && cg.runs) {
    const chord = cg.runs.filter((r) => r.engine === 'chord-llm' && r.result.ok);
    const llama = cg.runs.find((r) => r.engine === 'node-llama-cpp' && r.result.ok);
    for (const c of chord) {
      const vs = llama && llama.result.decodeTokS ? ` = ${(c.result.decodeTokS / llama.result.decodeTokS).toFixed(2)}x node-llama-cpp (${fmt(llama.result.decodeTokS, 3)})` : '';
      out.push({ what: `cgroup ${mb(cg.limitBytes)} MB: ${c.label} ${fmt(c.result.decodeTokS, 3)} tok/s${vs}; disk-bound limit ${fmt(cg.diskLimitTokS, 3)} tok/s (figures, no target)`, ok: null });
    }
  }
  return out;
}

async function cgroupRuns(opts, { common, promptIds, info, minBytes, fileBytes, contextSize, log }) {
  const base = { limitBytes: opts.cgroupLimit ?? Math.floor(fileBytes / 2), fileBytes, dropCaches: opts.dropCaches, tokens: opts.pressureTokens };
  if (process.platform !== 'linux') return { ...base, skipped: 'not Linux' };
  if (!fs.existsSync(path.join(CGROUP_ROOT, 'memory.limit_in_bytes'))) {
    log(`cgroup v1 memory controller is not mounted at ${CGROUP_ROOT}; skipping the memory-pressure runs`);
    return { ...base, skipped: `cgroup v1 memory controller not mounted at ${CGROUP_ROOT}` };
  }
  if (process.getuid && process.getuid() !== 0) return { ...base, skipped: 'not root (cgroups and drop_caches need root)' };

  const limit = base.limitBytes;
  const budget = opts.cgroupBudget ?? limit - info.kvCacheBytes - SLACK_BYTES;
  const dir = path.join(CGROUP_ROOT, `chord-bench-${process.pid}`);
  const cgFile = (name) => path.join(dir, name);
  const readNum = (name) => {
    try {
      return Number(fs.readFileSync(cgFile(name), 'utf8').trim());
    } catch {
      return null;
    }
  };
  const oomKills = () => {
    try {
      const m = /^oom_kill (\d+)/m.exec(fs.readFileSync(cgFile('memory.oom_control'), 'utf8'));
      return m ? Number(m[1]) : null;
    } catch {
      return null;
    }
  };
  const drop = () => {
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        dropCaches(opts.dropCaches, opts.model);
        const left = cachedBytes(opts.model);
        if (left == null || left <= fileBytes / 100) return;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
      }
      log(`warning: ${mb(cachedBytes(opts.model))} MB of the file still cached after dropping caches (${opts.dropCaches})`);
    } catch (e) {
      log(`warning: could not drop caches (${opts.dropCaches}): ${e.message}`);
    }
  };
  const majorFaults = () => {
    try {
      const m = /^pgmajfault (\d+)/m.exec(fs.readFileSync(cgFile('memory.stat'), 'utf8'));
      return m ? Number(m[1]) : null;
    } catch {
      return null;
    }
  };

  const cleanup = () => {
    killCurrentChild();
    for (let i = 0; i < 50; i++) {
      try {
        if (fs.existsSync(dir)) fs.rmdirSync(dir);
        return true;
      } catch {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
      }
    }
    log(`warning: could not remove ${dir}`);
    return false;
  };
  const onSignal = (sig) => {
    cleanup();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const result = { ...base, cgroupDir: dir, budgetBytes: budget, runs: [] };
  try {
    fs.mkdirSync(dir);
    fs.writeFileSync(cgFile('memory.limit_in_bytes'), String(limit));
    try {
      fs.writeFileSync(cgFile('memory.memsw.limit_in_bytes'), String(limit)); // no swapping out of it either
    } catch {
      // swap accounting off
    }
    result.limitBytes = readNum('memory.limit_in_bytes'); // the kernel rounds to pages

    // Sequential read speed with caches dropped (in this process, outside the cgroup).
    if (opts.readSpeed) {
      result.readSpeed = opts.readSpeed;
      result.readSpeedSource = '--read-speed';
    } else {
      drop();
      const cachedBefore = cachedBytes(opts.model);
      const s = readWholeFile(opts.model);
      result.readSpeed = fileBytes / s;
      result.readSpeedSource = `${mb(fileBytes)} MB in ${s.toFixed(2)} s, 16 MiB reads${cachedBefore != null ? `, ${mb(cachedBefore)} MB cached before` : ''}`;
      log(`sequential read: ${result.readSpeedSource} = ${(result.readSpeed / MB).toFixed(1)} MB/s`);
    }
    result.diskLimitTokS = result.readSpeed / fileBytes;

    const runs = [];
    if (budget < minBytes) {
      result.runs.push({
        label: 'chord-llm paged',
        engine: 'chord-llm',
        budgetBytes: budget,
        result: { ok: false, error: `budget ${budget} B (limit - KV - 150 MB) is below the smallest budget ${minBytes} B; pass --cgroup-limit or --cgroup-budget` },
      });
    } else {
      const policy = opts.policies.includes('fixed') ? 'fixed' : opts.policies[0];
      for (const method of opts.methods) {
        const load = { paging: 'always', memoryBudget: budget, pagingMethod: method, evictionPolicy: policy };
        if (opts.prefetch != null) load.prefetchLayers = opts.prefetch;
        runs.push({ label: `chord-llm paged ${method} ${policy}`, engine: 'chord-llm', budgetBytes: budget, script: PAGING_WORKER, cfg: { ...common, mode: 'bench', promptIds, genTokens: opts.pressureTokens, load } });
      }
    }
    if (opts.llama) {
      runs.push({
        label: 'node-llama-cpp mmap',
        engine: 'node-llama-cpp',
        budgetBytes: null,
        script: LLAMA_WORKER,
        cfg: { mode: 'bench', model: opts.model, threads: opts.threads, contextSize, promptTokens: promptIds.length, promptIds, genTokens: opts.pressureTokens, warmup: false },
      });
    }
    for (const [i, run] of runs.entries()) {
      drop();
      const cachedBefore = cachedBytes(opts.model);
      try {
        fs.writeFileSync(cgFile('memory.max_usage_in_bytes'), '0');
      } catch {
        // older kernels
      }
      const oomBefore = oomKills();
      const failBefore = readNum('memory.failcnt');
      const majBefore = majorFaults();
      log(`cgroup run ${i + 1}/${runs.length}: ${run.label}${run.budgetBytes != null ? ` (budget ${run.budgetBytes} B)` : ''}, limit ${result.limitBytes} B ...`);
      const r = await runChild(run.script, run.cfg, { timeoutS: opts.timeout, cgroup: dir, engine: run.engine });
      const row = {
        label: run.label,
        engine: run.engine,
        budgetBytes: run.budgetBytes,
        cachedBefore,
        cgroupMaxUsage: readNum('memory.max_usage_in_bytes'),
        limitHits: failBefore != null ? readNum('memory.failcnt') - failBefore : null,
        oomKills: oomBefore != null ? oomKills() - oomBefore : null,
        majorFaults: majBefore != null ? majorFaults() - majBefore : (r.majorFaults ?? null),
        result: r,
      };
      if (r.ok) {
        const c = run.engine === 'chord-llm' ? decodeCounters(r) : null;
        row.counters = c;
        row.bytesPerToken = c ? c.bytesRead : fileBytes;
        row.diskLimitTokS = row.bytesPerToken > 0 ? result.readSpeed / row.bytesPerToken : null;
        row.vsDiskLimit = r.decodeTokS && row.diskLimitTokS ? r.decodeTokS / row.diskLimitTokS : null;
      } else {
        log(`${run.label} failed: ${String(r.error).split('\n')[0]}${row.oomKills ? ` (${row.oomKills} OOM kill(s))` : ''}`);
      }
      result.runs.push(row);
    }
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    result.removed = cleanup();
  }
  return result;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`bench-paging: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 1;
  },
);
