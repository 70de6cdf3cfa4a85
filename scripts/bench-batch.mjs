// Benchmark of chord-llm's batched decoding and sessions, next to node-llama-cpp where both can
// do the same work. Each measurement runs in its own child process (scripts/bench/batch-worker.mjs).
// Run `node scripts/bench-batch.mjs --help`.
//
// Parts (--only):
//   throughput  N = 1, 2, 4, 8 concurrent streams, each a distinct 128-token prompt and 128
//               greedy tokens (EOS ignored). chord-llm: N concurrent model.generate() calls on
//               one model (decoded together by the engine); node-llama-cpp: one context of
//               `sequences: N`, N sequences evaluated concurrently. Three aggregate figures:
//                 all     all generated tokens / wall time from the moment every stream starts
//                         to the last token of any stream (the prompts' prefill included)
//                 decode  tokens that arrived after the LAST stream's first token / the time
//                         from that first token to the last token: tokens and time over the
//                         same window, in which every prompt has been evaluated (with N = 1 it
//                         is bench.mjs's decode figure: (tokens - 1) / (t_last - t_first))
//                 steady  tokens that arrived while every stream was decoding (after the last
//                         first token, up to the first stream's last token) / that time: N
//                         streams decoding together, without the tails where streams that got
//                         their first token early have finished
//               Also chord/node-llama-cpp ratios, each engine's N-stream / 1-stream scaling, and
//               whether the greedy tokens agree (with node-llama-cpp's; stream 0 with 1 stream).
//               Where scripts/build-native-llama has built llama.cpp for this CPU, it runs too
//               (llama-cpp-python's batch API, one context of N sequences, the prompts in one
//               batch, then one batch of N tokens per step): steady figures and scaling.
//   latency     chord-llm: 3 streams decode (128-token prompts, greedy); once they are steady a
//               2000-token prompt arrives on a 4th stream. Every inter-token gap of the 3 streams
//               that overlaps the 4th's prefill (from its start to its first token) is recorded:
//               p50, p99 (nearest rank), max, against the steady inter-token time (median gap of
//               the same streams before the 4th arrived). Acceptance: p99 <= 3 x steady.
//   chat        chord-llm: an 8-turn conversation in one session (each turn 40 new tokens, a
//               ChatML user message cut from the corpus, then 32 greedy tokens): time to first
//               token of turn 8 in the session against a one-shot generate() of the whole
//               history (the same ids) from scratch; the 32 tokens must be identical.
//   paged       chord-llm paged at a quarter of its weights (memoryBudget = info.weightBytes / 4
//               from a resident load, paging 'always'): aggregate throughput of 4 streams
//               against 1 (same figures as throughput).
//
// Prompts: __test__/data/perplexity.txt tokenized once per model (by node-llama-cpp; chord-llm's
// tokenizer if that fails), BOS first where the model adds it; stream i's prompt is the corpus
// from i * 128 tokens on, cut to exactly 128 (wrapping at the corpus end); the long prompt starts
// after the 3 running streams' prompts.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError, fileHugePagesMb, int, killCurrentChild, list, parseCli, preparePageCache, runChild } from './bench/common.mjs';
import { cutPrompt, fmt, renderTable, samePrefix, streamPrompt, times } from './bench/batch-common.mjs';
import { nativeLlamaPython } from './bench/native.mjs';
import { MODELS, modelPath } from './models.mjs';

/** Throughput engines: --engines keys and their names (a peer's worker mode is `${key}-throughput`). */
const ENGINE_NAMES = { chord: 'chord-llm', llama: 'node-llama-cpp', native: 'llama.cpp native' };

const here = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(here, 'bench', 'batch-worker.mjs');
const PARTS = ['throughput', 'latency', 'chat', 'paged'];
const DEFAULT_MODELS = { throughput: ['qwen15', 'qwen05', 'smollm2'], latency: ['qwen15'], chat: ['qwen05'], paged: ['qwen15'] };
const MB = 1048576;
/** The latency acceptance: p99 gap during the prefill <= this x the steady gap. */
const LATENCY_BOUND = 3;

const HELP = `Usage: npm run bench:batch -- [model.gguf | model key ...] [options]

Benchmarks chord-llm's batched decoding and sessions (node-llama-cpp alongside for throughput),
each measurement in its own process. The definitions are in the header of scripts/bench-batch.mjs.

Parts (--only; default all, in this order):
  throughput  aggregate tok/s of N concurrent streams (distinct prompts, greedy, EOS ignored),
              chord-llm and node-llama-cpp (one context, sequences: N); models ${DEFAULT_MODELS.throughput.join(', ')}
                all     all generated tokens / time from the start of all streams (prefill included)
                decode  tokens after the last stream's first token / time from it to the last token
  latency     chord-llm: inter-token gaps of 3 running streams while a long prompt is prefilled
              on a 4th: p50, p99, max against the steady gap (bound p99 <= ${LATENCY_BOUND}x); model ${DEFAULT_MODELS.latency}
  chat        chord-llm: time to first token of the last turn of a conversation in a session,
              against the whole history from scratch; identical greedy tokens; model ${DEFAULT_MODELS.chat}
  paged       chord-llm paged at a quarter of its weights: 4 streams against 1; model ${DEFAULT_MODELS.paged}

Models: a key (${Object.keys(MODELS).join(', ')}; scripts/fetch-models fetches them) or a .gguf path.
Given models replace every selected part's defaults; missing default models are skipped.

Options:
  --only LIST           parts, comma-separated: ${PARTS.join(',')}
  --threads N           compute threads of both engines (default 2)
  --repeat R            measurements per configuration in the same process, medians (default 1)
  --engines LIST        throughput engines: chord,llama,native (default chord,llama, and native
                        where scripts/build-native-llama has built llama.cpp for this CPU)
  --streams LIST        throughput stream counts (default 1,2,4,8)
  --prompt-tokens N     tokens per stream prompt (default 128)
  --gen-tokens N        greedy tokens per stream, throughput and paged (default 128)
  --context-size N      positions per sequence for throughput and paged (default prompt + gen + 64)
  --long-prompt N       latency: the arriving prompt's tokens (default 2000)
  --running N           latency: streams decoding when it arrives (default 3)
  --latency-context N   latency: positions per sequence (default 2304)
  --settle-tokens N     latency: tokens each running stream makes before gaps count (default 8)
  --steady-tokens N     latency: further tokens each makes before the long prompt starts (default 32)
  --turns N             chat: turns (default 8)
  --turn-tokens N       chat: new tokens per turn (default 40)
  --turn-gen N          chat: greedy tokens per turn (default 32)
  --chat-context N      chat: positions of the session (default 1024)
  --paged-streams LIST  paged: stream counts (default 1,4; ratios are against the first)
  --page-cache MODE     how each model file is cached before its first run (Linux): fresh
                        (default: drop its pages, read it sequentially), small (drop them, read
                        it in scattered 4 KiB pages) or as-is; see bench.mjs --help
  --no-warmup           no unmeasured short generation before each measurement
  --timeout S           per-process time limit in seconds (default 1800)
  --json                print the results as JSON on stdout (the tables then go to stderr)
  --chord-use-mmap B    chord-llm's useMmap load option: true (weights read from the mapped file)
                        or false (all copied into the process's memory at load); unset (default):
                        the library's default, mapped and then copied on a thread of its own
  --chord-module P      load chord-llm from P instead of this repo
  --no-api-check        run the throughput, latency and paged parts on a chord-llm build without
                        sessions (its concurrent generate() calls are then not batched); chat
                        always needs them
  -h, --help            this help

Short test run: --streams 1,2 --prompt-tokens 32 --gen-tokens 16 --long-prompt 256
  --latency-context 512 --steady-tokens 8 --turns 3 --turn-gen 8 smollm2
`;

function parseArgs(argv) {
  const o = {
    models: [],
    only: PARTS,
    threads: 2,
    repeat: 1,
    engines: fs.existsSync(nativeLlamaPython()) ? ['chord', 'llama', 'native'] : ['chord', 'llama'],
    streams: [1, 2, 4, 8],
    promptTokens: 128,
    genTokens: 128,
    contextSize: null,
    longPrompt: 2000,
    running: 3,
    latencyContext: 2304,
    settleTokens: 8,
    steadyTokens: 32,
    turns: 8,
    turnTokens: 40,
    turnGen: 32,
    chatContext: 1024,
    pagedStreams: [1, 4],
    pageCache: 'fresh',
    warmup: true,
    timeout: 1800,
    json: false,
    chordModule: null,
    noApiCheck: false,
  };
  const ints = (flag, v) => list(flag, v).map((x) => int(flag, x, 1));
  parseCli(
    argv,
    {
      '-h, --help': () => (o.help = true),
      '--only': (val, flag) => (o.only = list(flag, val(), PARTS)),
      '--threads, -t': (val, flag) => (o.threads = int(flag, val(), 1)),
      '--repeat': (val, flag) => (o.repeat = int(flag, val(), 1)),
      '--engines': (val, flag) => (o.engines = list(flag, val(), Object.keys(ENGINE_NAMES))),
      '--streams': (val, flag) => (o.streams = ints(flag, val())),
      '--prompt-tokens': (val, flag) => (o.promptTokens = int(flag, val(), 9)),
      '--gen-tokens': (val, flag) => (o.genTokens = int(flag, val(), 2)),
      '--context-size': (val, flag) => (o.contextSize = int(flag, val(), 16)),
      '--long-prompt': (val, flag) => (o.longPrompt = int(flag, val(), 9)),
      '--running': (val, flag) => (o.running = int(flag, val(), 1)),
      '--latency-context': (val, flag) => (o.latencyContext = int(flag, val(), 16)),
      '--settle-tokens': (val, flag) => (o.settleTokens = int(flag, val(), 1)),
      '--steady-tokens': (val, flag) => (o.steadyTokens = int(flag, val(), 2)),
      '--turns': (val, flag) => (o.turns = int(flag, val(), 2)),
      '--turn-tokens': (val, flag) => (o.turnTokens = int(flag, val(), 1)),
      '--turn-gen': (val, flag) => (o.turnGen = int(flag, val(), 1)),
      '--chat-context': (val, flag) => (o.chatContext = int(flag, val(), 16)),
      '--paged-streams': (val, flag) => (o.pagedStreams = ints(flag, val())),
      '--page-cache': (val, flag) => (o.pageCache = list(flag, val(), ['fresh', 'small', 'as-is'])[0]),
      '--no-warmup': () => (o.warmup = false),
      '--timeout': (val, flag) => (o.timeout = int(flag, val(), 1)),
      '--json': () => (o.json = true),
      '--chord-module': (val) => (o.chordModule = path.resolve(val())),
      '--chord-use-mmap': (val, flag) => (o.useMmap = list(flag, val(), ['true', 'false'])[0] === 'true'),
      '--no-api-check': () => (o.noApiCheck = true),
    },
    (a) => o.models.push(a),
  );
  o.contextSize ??= o.promptTokens + o.genTokens + 64;
  if (o.contextSize < o.promptTokens + o.genTokens) throw new UsageError(`--context-size ${o.contextSize} < prompt + gen tokens`);
  if (o.latencyContext < o.longPrompt + 1 || o.latencyContext < o.promptTokens + o.settleTokens + o.steadyTokens + 2) {
    throw new UsageError(`--latency-context ${o.latencyContext} is too small for --long-prompt ${o.longPrompt} or the running streams`);
  }
  if (o.chatContext < o.turns * (o.turnTokens + o.turnGen) + 1) {
    throw new UsageError(`--chat-context ${o.chatContext} < turns x (turn tokens + turn gen) = ${o.turns * (o.turnTokens + o.turnGen)}`);
  }
  return o;
}

/** A model argument (file or key) as { label, file }; null (logged) for a default key not cached. */
function resolveModel(arg, isDefault, log) {
  if (!isDefault && fs.existsSync(arg)) return { label: path.basename(arg, '.gguf'), file: path.resolve(arg) };
  if (Object.hasOwn(MODELS, arg)) {
    const file = modelPath(arg);
    if (fs.existsSync(file)) return { label: arg, file };
    if (isDefault) {
      log(`skipping ${arg}: not cached (scripts/fetch-models ${arg})`);
      return null;
    }
    throw new UsageError(`model "${arg}" is not in the cache yet: run scripts/fetch-models ${arg}`);
  }
  throw new UsageError(`model file not found: ${arg}`);
}

// ---------------------------------------------------------------------------------------------

/** Per-file state: page-cache preparation and corpus ids, each done once, at first use. */
function modelState(opts, log) {
  const seen = new Map();
  return async (m) => {
    if (seen.has(m.file)) return seen.get(m.file);
    const how = preparePageCache(m.file, opts.pageCache);
    const huge = fileHugePagesMb();
    const pageCache = `${how}${huge == null ? '' : `; file pages in huge folios system-wide: ${huge.toFixed(0)} MB`}`;
    log(`${m.label}: page cache: ${pageCache}`);
    let tok = await runChild(WORKER, { mode: 'tokenize', engine: 'llama', model: m.file, threads: 1 }, { timeoutS: opts.timeout, engine: 'node-llama-cpp' });
    let tokenizer = 'node-llama-cpp';
    if (!tok.ok) {
      log(`${m.label}: node-llama-cpp could not tokenize the corpus (${String(tok.error).split('\n')[0]}); using chord-llm's tokenizer`);
      tok = await runChild(WORKER, { mode: 'tokenize', engine: 'chord', model: m.file, threads: 1, chordModule: opts.chordModule, noApiCheck: true }, { timeoutS: opts.timeout });
      tokenizer = 'chord-llm';
    }
    if (!tok.ok) throw new Error(`${m.label}: could not tokenize the corpus: ${tok.error}`);
    const state = { pageCache, corpus: tok.ids, bos: tok.bos, tokenizer };
    seen.set(m.file, state);
    return state;
  };
}

/** Fields every chord-llm worker config carries. */
const chordBase = (opts, m) => ({ model: m.file, threads: opts.threads, warmup: opts.warmup, repeat: opts.repeat, chordModule: opts.chordModule, noApiCheck: opts.noApiCheck, useMmap: opts.useMmap });

const firstLine = (e) => String(e).split('\n')[0];

/** Drops token ids (kept only for the comparisons) from a worker result, for --json. */
function stripIds(r) {
  if (!r || typeof r !== 'object') return r;
  const { results, lastTurnIds, scratchIds, ...rest } = r;
  return results ? { ...rest, results: results.map(({ ids, ...x }) => x) } : rest;
}

// ---------------------------------------------------------------------------------------------
// Part 1: throughput.

async function partThroughput(models, opts, state, log) {
  const rows = [];
  for (const m of models) {
    const st = await state(m);
    const prompts = Array.from({ length: Math.max(...opts.streams) }, (_, i) => streamPrompt(st.corpus, st.bos, i, opts.promptTokens));
    const cfg = { prompts, streams: opts.streams, promptTokens: opts.promptTokens, genTokens: opts.genTokens, contextSize: opts.contextSize };
    const res = {};
    for (const e of opts.engines) {
      log(`throughput: ${m.label}, ${ENGINE_NAMES[e]}, streams ${opts.streams.join(',')} ...`);
      res[e] =
        e === 'chord'
          ? await runChild(WORKER, { ...chordBase(opts, m), ...cfg, mode: 'chord-throughput', load: {} }, { timeoutS: opts.timeout })
          : await runChild(
              WORKER,
              { ...cfg, mode: `${e}-throughput`, model: m.file, threads: opts.threads, warmup: opts.warmup, repeat: opts.repeat },
              { timeoutS: opts.timeout, engine: ENGINE_NAMES[e] },
            );
      if (!res[e].ok) log(`${m.label}: ${res[e].engine} failed: ${firstLine(res[e].error)}`);
    }
    rows.push({ label: m.label, file: m.file, pageCache: st.pageCache, tokenizer: st.tokenizer, ...res });
  }
  return rows;
}

/** The run with `n` streams of an engine's result, or null. */
const atN = (r, n) => (r?.ok ? r.results.find((x) => x.streams === n) : null);

function throughputTable(rows, opts, loadAverage) {
  const native = opts.engines.includes('native');
  const head = ['model', 'N', 'chord all', 'chord decode', 'chord steady', 'llama all', 'llama decode', 'llama steady', 'c/l all', 'c/l decode', 'c/l steady', 'chord xN decode', 'chord xN steady', 'llama xN steady', 'greedy = llama', 'stream0 = 1-stream'];
  if (native) head.push('native steady', 'c/n steady', 'native xN steady');
  const base = opts.streams[0];
  const out = [];
  const notes = [];
  for (const row of rows) {
    for (const n of opts.streams) {
      const c = atN(row.chord, n);
      const l = atN(row.llama, n);
      const c1 = atN(row.chord, base);
      const l1 = atN(row.llama, base);
      const nat = atN(row.native, n);
      const nat1 = atN(row.native, base);
      let greedy = '-';
      if (c && l) {
        const same = c.ids.map((ids, i) => samePrefix(ids, l.ids[i]));
        greedy = `${Math.min(...same)}/${opts.genTokens}`;
      }
      out.push([
        row.label,
        n,
        fmt(c?.aggTokS, 1),
        fmt(c?.decodeTokS, 1),
        fmt(c?.steadyTokS, 1),
        fmt(l?.aggTokS, 1),
        fmt(l?.decodeTokS, 1),
        fmt(l?.steadyTokS, 1),
        c && l ? times(c.aggTokS / l.aggTokS) : '-',
        c && l ? times(c.decodeTokS / l.decodeTokS) : '-',
        c && l ? times(c.steadyTokS / l.steadyTokS) : '-',
        c && c1 ? times(c.decodeTokS / c1.decodeTokS) : '-',
        c && c1 ? times(c.steadyTokS / c1.steadyTokS) : '-',
        l && l1 ? times(l.steadyTokS / l1.steadyTokS) : '-',
        greedy,
        c && c1 ? `${samePrefix(c.ids[0], c1.ids[0])}/${opts.genTokens}` : '-',
        ...(native
          ? [fmt(nat?.steadyTokS, 1), c && nat ? times(c.steadyTokS / nat.steadyTokS) : '-', nat && nat1 ? times(nat.steadyTokS / nat1.steadyTokS) : '-']
          : []),
      ]);
    }
    for (const e of opts.engines) if (row[e] && !row[e].ok) notes.push(`${row.label}: ${row[e].engine} unavailable: ${row[e].error}`);
  }
  return (
    [
      `throughput: N concurrent streams, each a distinct ${opts.promptTokens}-token prompt + ${opts.genTokens} greedy tokens (EOS ignored); ` +
        `threads ${opts.threads}; context ${opts.contextSize} per sequence; ${opts.repeat > 1 ? `medians of ${opts.repeat} runs` : '1 run'}; ` +
        `load average ${loadAverage.toFixed(2)} at the start`,
      `tok/s: all = all tokens / time from the start of all streams (prefill included); decode = tokens after the last stream's first token / time from it to the last token; ` +
        `steady = tokens while every stream decodes (after the last first token, up to the first stream's end) / that time`,
      `xN = against ${base} stream${base > 1 ? 's' : ''}; greedy = llama: shortest common prefix over the streams; page cache: ${pageCacheNote(rows)}` +
        (native ? '; native = llama.cpp built for this CPU (c/n = chord / native)' : ''),
      renderTable(head, out),
      ...notes,
    ].join('\n') + '\n'
  );
}

const pageCacheNote = (rows) => [...new Map(rows.map((r) => [r.label, r.pageCache])).entries()].map(([l, p]) => `${l} ${p}`).join('; ');

// ---------------------------------------------------------------------------------------------
// Part 2: latency.

async function partLatency(models, opts, state, log) {
  const rows = [];
  for (const m of models) {
    const st = await state(m);
    const prompts = Array.from({ length: opts.running }, (_, i) => streamPrompt(st.corpus, st.bos, i, opts.promptTokens));
    const longPrompt = cutPrompt(st.corpus, st.bos, opts.running * opts.promptTokens, opts.longPrompt);
    log(`latency: ${m.label}, ${opts.running} running streams, a ${opts.longPrompt}-token prompt arriving ...`);
    const r = await runChild(
      WORKER,
      { ...chordBase(opts, m), mode: 'chord-latency', prompts, longPrompt, contextSize: opts.latencyContext, settleTokens: opts.settleTokens, steadyTokens: opts.steadyTokens },
      { timeoutS: opts.timeout },
    );
    if (!r.ok) log(`${m.label}: chord-llm failed: ${firstLine(r.error)}`);
    rows.push({ label: m.label, file: m.file, pageCache: st.pageCache, tokenizer: st.tokenizer, chord: r, withinBound: r.ok && r.p99OverSteady != null ? r.p99OverSteady <= LATENCY_BOUND : null });
  }
  return rows;
}

function latencyTable(rows, opts, loadAverage) {
  const head = ['model', 'steady ms', 'gaps', 'p50 ms', 'p99 ms', 'max ms', 'p99/steady', `<= ${LATENCY_BOUND}x`, 'prefill s', 'prefill tok/s', 'tokens during'];
  const out = rows.map((row) => {
    const r = row.chord;
    if (!r.ok) return `${row.label}  FAILED: ${r.error}`;
    return [
      row.label,
      fmt(r.steadyMs, 1),
      r.duringGaps,
      fmt(r.p50Ms, 1),
      fmt(r.p99Ms, 1),
      fmt(r.maxMs, 1),
      times(r.p99OverSteady),
      row.withinBound == null ? '-' : row.withinBound ? 'ok' : 'OVER',
      fmt(r.prefillS, 2),
      fmt(r.prefillTokS, 1),
      r.tokensDuring,
    ];
  });
  return (
    [
      `latency (chord-llm): ${opts.running} streams decoding (${opts.promptTokens}-token prompts, greedy) while a ${opts.longPrompt}-token prompt arrives on stream ${opts.running + 1}; ` +
        `threads ${opts.threads}; context ${opts.latencyContext}; load average ${loadAverage.toFixed(2)} at the start`,
      `steady = median gap after ${opts.settleTokens} tokens per stream, before the long prompt; gaps = gaps overlapping its prefill (start -> its first token), ` +
        `p99 nearest rank; tokens during = running streams' tokens in that prefill; page cache: ${pageCacheNote(rows)}`,
      renderTable(head, out),
    ].join('\n') + '\n'
  );
}

// ---------------------------------------------------------------------------------------------
// Part 3: chat.

async function partChat(models, opts, state, log) {
  const rows = [];
  for (const m of models) {
    const st = await state(m);
    log(`chat: ${m.label}, ${opts.turns} turns in one session ...`);
    const r = await runChild(
      WORKER,
      {
        ...chordBase(opts, m),
        mode: 'chord-chat',
        needSessions: true,
        corpus: st.corpus.slice(0, opts.turns * opts.turnTokens),
        bos: st.bos,
        turns: opts.turns,
        turnTokens: opts.turnTokens,
        turnGen: opts.turnGen,
        contextSize: opts.chatContext,
      },
      { timeoutS: opts.timeout },
    );
    if (!r.ok) log(`${m.label}: chord-llm failed: ${firstLine(r.error)}`);
    rows.push({ label: m.label, file: m.file, pageCache: st.pageCache, tokenizer: st.tokenizer, chord: r });
  }
  return rows;
}

function chatTable(rows, opts, loadAverage) {
  const head = ['model', 'history tok', 'session TTFT ms', 'scratch TTFT ms', 'speedup', 'greedy same', 'session held'];
  const out = rows.map((row) => {
    const r = row.chord;
    if (!r.ok) return `${row.label}  FAILED: ${r.error}`;
    return [
      row.label,
      r.fullPromptTokens,
      fmt(r.sessionTtftS * 1000, 1),
      fmt(r.scratchTtftS * 1000, 1),
      times(r.speedup, 1),
      `${r.sameTokens}/${opts.turnGen}${r.identical ? ' ok' : ' DIFF'}`,
      `${r.heldTokens}${r.heldAsExpected ? ' ok' : ` (expected ${r.expectedTokens}) DIFF`}`,
    ];
  });
  const turnLines = rows
    .filter((row) => row.chord.ok)
    .map((row) => `${row.label} TTFT per turn ms: ${row.chord.turns.map((t) => fmt(t.ttftS * 1000, 0)).join(' ')}${row.chord.chatml ? '' : ' (no ChatML tokens: plain text turns)'}`);
  return (
    [
      `chat (chord-llm): ${opts.turns} turns in one session, each ${opts.turnTokens} new tokens (a ChatML user message) + ${opts.turnGen} greedy tokens; ` +
        `TTFT of turn ${opts.turns} in the session against a one-shot generate() of the same history from scratch; threads ${opts.threads}; ` +
        `${opts.repeat > 1 ? `medians of ${opts.repeat}; ` : ''}load average ${loadAverage.toFixed(2)} at the start`,
      `history tok = ids of turn ${opts.turns}'s prompt from scratch; greedy same = common prefix of turn ${opts.turns}'s tokens both ways; ` +
        `session held = session.tokens after the last turn (every turn's ids + generated ids); page cache: ${pageCacheNote(rows)}`,
      renderTable(head, out),
      ...turnLines,
    ].join('\n') + '\n'
  );
}

// ---------------------------------------------------------------------------------------------
// Part 4: paged.

async function partPaged(models, opts, state, log) {
  const rows = [];
  for (const m of models) {
    const st = await state(m);
    log(`paged: ${m.label}: weight bytes from a resident load ...`);
    const info = await runChild(WORKER, { ...chordBase(opts, m), mode: 'chord-info' }, { timeoutS: opts.timeout });
    if (!info.ok) {
      log(`${m.label}: chord-llm failed: ${firstLine(info.error)}`);
      rows.push({ label: m.label, file: m.file, pageCache: st.pageCache, chord: info });
      continue;
    }
    const weightBytes = info.info.weightBytes;
    const budgetBytes = Math.floor(weightBytes / 4);
    const prompts = Array.from({ length: Math.max(...opts.pagedStreams) }, (_, i) => streamPrompt(st.corpus, st.bos, i, opts.promptTokens));
    log(`paged: ${m.label}, budget ${(budgetBytes / MB).toFixed(0)} MiB, streams ${opts.pagedStreams.join(',')} ...`);
    const r = await runChild(
      WORKER,
      {
        ...chordBase(opts, m),
        mode: 'chord-throughput',
        prompts,
        streams: opts.pagedStreams,
        promptTokens: opts.promptTokens,
        genTokens: opts.genTokens,
        contextSize: opts.contextSize,
        load: { memoryBudget: budgetBytes, paging: 'always' },
      },
      { timeoutS: opts.timeout },
    );
    if (!r.ok) log(`${m.label}: chord-llm failed: ${firstLine(r.error)}`);
    else if (r.info && r.info.paged === false) log(`${m.label}: warning: info.paged is false at budget ${budgetBytes}`);
    rows.push({ label: m.label, file: m.file, pageCache: st.pageCache, tokenizer: st.tokenizer, weightBytes, budgetBytes, chord: r });
  }
  return rows;
}

function pagedTable(rows, opts, loadAverage) {
  const head = ['model', 'budget MiB', 'N', 'all tok/s', 'decode tok/s', 'steady tok/s', 'all xN', 'decode xN', 'steady xN', 'MiB read/tok', 'stall ms/tok', 'stream0 = 1-stream', 'peak RSS MiB'];
  const base = opts.pagedStreams[0];
  const out = [];
  for (const row of rows) {
    const r = row.chord;
    if (!r.ok) {
      out.push(`${row.label}  FAILED: ${r.error}`);
      continue;
    }
    const r1 = atN(r, base);
    for (const n of opts.pagedStreams) {
      const x = atN(r, n);
      const p = x?.pager;
      out.push([
        row.label,
        `${fmt(row.budgetBytes / MB, 0)} of ${fmt(row.weightBytes / MB, 0)}`,
        n,
        fmt(x?.aggTokS, 2),
        fmt(x?.decodeTokS, 2),
        fmt(x?.steadyTokS, 2),
        x && r1 ? times(x.aggTokS / r1.aggTokS) : '-',
        x && r1 ? times(x.decodeTokS / r1.decodeTokS) : '-',
        x && r1 ? times(x.steadyTokS / r1.steadyTokS) : '-',
        p?.bytesRead != null ? fmt(p.bytesRead / x.totalTokens / MB, 1) : '-',
        p?.stallMs != null ? fmt(p.stallMs / x.totalTokens, 1) : '-',
        x && r1 ? `${samePrefix(x.ids[0], r1.ids[0])}/${opts.genTokens}` : '-',
        fmt(r.peakRssBytes / MB, 0),
      ]);
    }
  }
  return (
    [
      `paged (chord-llm): memoryBudget = weightBytes / 4 (from a resident load), paging 'always'; N concurrent streams, each a distinct ${opts.promptTokens}-token prompt + ` +
        `${opts.genTokens} greedy tokens; threads ${opts.threads}; context ${opts.contextSize}; ${opts.repeat > 1 ? `medians of ${opts.repeat} runs; ` : ''}` +
        `load average ${loadAverage.toFixed(2)} at the start`,
      `all / decode as in throughput; xN = against ${base} stream${base > 1 ? 's' : ''}; MiB read and stall per generated token (prefill included, stats() over the run); ` +
        `peak RSS of the process; page cache: ${pageCacheNote(rows)}`,
      renderTable(head, out),
    ].join('\n') + '\n'
  );
}

// ---------------------------------------------------------------------------------------------

const RUN = {
  throughput: [partThroughput, throughputTable],
  latency: [partLatency, latencyTable],
  chat: [partChat, chatTable],
  paged: [partPaged, pagedTable],
};

async function main() {
  const log = (m) => process.stderr.write(`bench-batch: ${m}\n`);
  let opts;
  const plan = [];
  try {
    opts = parseArgs(process.argv.slice(2));
    if (opts.help) {
      process.stdout.write(HELP);
      return 0;
    }
    for (const part of PARTS.filter((p) => opts.only.includes(p))) {
      const args = opts.models.length ? opts.models : DEFAULT_MODELS[part];
      const models = args.map((a) => resolveModel(a, !opts.models.length, log)).filter(Boolean);
      if (!models.length) log(`${part}: no model to run (${args.join(', ')} not cached)`);
      else plan.push({ part, models });
    }
    if (!plan.length) throw new UsageError('nothing to run');
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench-batch: ${e.message}\n\n${HELP}`);
      return 2;
    }
    throw e;
  }
  const onSignal = (sig) => {
    killCurrentChild();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const state = modelState(opts, log);
  const write = (text) => (opts.json ? process.stderr : process.stdout).write(text);
  const parts = {};
  let anyOk = false;
  for (const { part, models } of plan) {
    const loadAverage = os.loadavg()[0];
    const [run, table] = RUN[part];
    const rows = await run(models, opts, state, log);
    write(table(rows, opts, loadAverage) + '\n');
    parts[part] = { loadAverage, rows: rows.map((row) => ({ ...row, chord: stripIds(row.chord), llama: stripIds(row.llama), native: stripIds(row.native) })) };
    anyOk ||= rows.some((row) => row.chord?.ok || row.llama?.ok);
  }
  if (opts.json) {
    const { models, help, ...options } = opts;
    process.stdout.write(JSON.stringify({ node: process.version, cpus: os.cpus().length, options, parts }, null, 2) + '\n');
  }
  return anyOk ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`bench-batch: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 1;
  },
);
