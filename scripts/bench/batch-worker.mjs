// Bench worker for scripts/bench-batch.mjs, one measurement per process (so that its peak RSS
// is its own). cfg.mode:
//   "tokenize"          the corpus ids (no BOS, special tokens not parsed) and the BOS id the
//                       model prepends (or null), with node-llama-cpp (cfg.engine 'llama') or
//                       chord-llm ('chord')
//   "llama-throughput"  node-llama-cpp: for each N in cfg.streams, one context of N sequences,
//                       N prompts evaluated concurrently, genTokens greedy tokens each
//   "native-throughput" llama.cpp built for this CPU (scripts/build-native-llama): the same as
//                       llama-throughput through llama.cpp's batch API (native_batch_worker.py)
//   "chord-throughput"  chord-llm: the same with N concurrent model.generate() calls (also the
//                       paged part, with cfg.load carrying memoryBudget and paging)
//   "chord-info"        chord-llm loaded resident: model.info
//   "chord-latency"     inter-token gaps of running streams while a long prompt is prefilled
//   "chord-chat"        a multi-turn conversation in one session against from-scratch evaluation
// Prints exactly one JSON line on stdout (see common.mjs runWorker).

import fs from 'node:fs';
import { loadChord, now, peakRssBytes, readConfig, runWorker, waitForWeightsCopy } from './common.mjs';
import { CORPUS_FILE, median, medianRuns, percentile, samePrefix, streamFigures } from './batch-common.mjs';
import { runNativeScript } from './native.mjs';


/** A generated item may be a bare id or an object carrying one. */
const tokenId = (t) => (typeof t === 'object' && t !== null ? (t.id ?? t.token ?? t.tokenId) : t);

const cfg = readConfig();

const workerEngine = () => {
  if (cfg.mode.startsWith('native')) return 'llama.cpp native';
  return cfg.mode.startsWith('llama') || (cfg.mode === 'tokenize' && cfg.engine === 'llama') ? 'node-llama-cpp' : 'chord-llm';
};

runWorker(workerEngine(), async () => {
  switch (cfg.mode) {
    case 'tokenize':
      return cfg.engine === 'llama' ? llamaTokenize() : chordTokenize();
    case 'llama-throughput':
      return llamaThroughput();
    case 'native-throughput':
      return nativeThroughput();
    case 'chord-info':
      return chordInfo();
    case 'chord-throughput':
      return chordThroughput();
    case 'chord-latency':
      return chordLatency();
    case 'chord-chat':
      return chordChat();
    default:
      throw new Error(`unknown mode ${cfg.mode}`);
  }
});

/** Reads at most `max` tokens from an async iterable (stopping early if `onToken` returns false): {times, ids}. */
async function consume(iterable, max, onToken) {
  const times = [];
  const ids = [];
  for await (const t of iterable) {
    const tt = now();
    times.push(tt);
    ids.push(tokenId(t));
    if (onToken && onToken(tt, ids.length) === false) break;
    if (ids.length >= max) break;
  }
  return { times, ids };
}

function checkStreams(streams, want) {
  streams.forEach((s, i) => {
    if (s.ids.length < want) throw new Error(`stream ${i} stopped after ${s.ids.length} of ${want} tokens`);
  });
}

/** Adds the ids of every stream (for the greedy checks) to a figures record. */
const withIds = (fig, streams) => ({ ...fig, ids: streams.map((s) => s.ids) });

// ---------------------------------------------------------------------------------------------
// node-llama-cpp

async function getLlamaInstance() {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  return getLlama({ gpu: false, build: 'never', skipDownload: true, maxThreads: cfg.threads, logLevel: LlamaLogLevel.error });
}

async function llamaTokenize() {
  const llama = await getLlamaInstance();
  const model = await llama.loadModel({ modelPath: cfg.model, gpuLayers: 0, vocabOnly: true });
  const bos = model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
  const ids = Array.from(model.tokenize(fs.readFileSync(CORPUS_FILE, 'utf8'), false), Number);
  await model.dispose();
  await llama.dispose();
  return { ids, bos: bos == null ? null : Number(bos) };
}

async function llamaThroughput() {
  const llama = await getLlamaInstance();
  const tLoad = now();
  const model = await llama.loadModel({ modelPath: cfg.model, gpuLayers: 0 });
  const loadS = (now() - tLoad) / 1000;
  const opts = { temperature: 0, yieldEogToken: true };
  const results = [];
  try {
    for (const n of cfg.streams) {
      const prompts = cfg.prompts.slice(0, n);
      const context = await model.createContext({
        contextSize: cfg.contextSize,
        sequences: n,
        // Room for every prompt in one batch, as chord-llm evaluates them together.
        batchSize: Math.max(512, n * cfg.promptTokens),
        threads: { ideal: cfg.threads, min: cfg.threads },
      });
      try {
        const seqs = prompts.map(() => context.getSequence());
        if (seqs[0].contextSize < cfg.promptTokens + cfg.genTokens) {
          throw new Error(`context size ${seqs[0].contextSize} per sequence < ${cfg.promptTokens}+${cfg.genTokens}`);
        }
        const clear = () => Promise.all(seqs.map((s) => s.clearHistory()));
        if (cfg.warmup) {
          await Promise.all(seqs.map((s, i) => consume(s.evaluate(prompts[i].slice(0, 8), opts), 2)));
          await clear();
        }
        const runs = [];
        for (let r = 0; r < cfg.repeat; r++) {
          const t0 = now();
          const streams = await Promise.all(seqs.map((s, i) => consume(s.evaluate(prompts[i], opts), cfg.genTokens)));
          checkStreams(streams, cfg.genTokens);
          runs.push(withIds(streamFigures(t0, streams), streams));
          await clear();
        }
        results.push({ ...medianRuns(runs), contextSize: seqs[0].contextSize, batchSize: context.batchSize });
      } finally {
        await context.dispose();
      }
    }
  } finally {
    await model.dispose();
    await llama.dispose();
  }
  return { loadS, results, peakRssBytes: peakRssBytes() };
}

// ---------------------------------------------------------------------------------------------
// llama.cpp built for this CPU

/** native_batch_worker.py's token times turned into the figures the other engines give. */
function nativeThroughput() {
  const res = runNativeScript('native_batch_worker.py', cfg);
  const results = res.results.map(({ runs, ...rest }) => {
    for (const run of runs) checkStreams(run.streams, cfg.genTokens);
    return { ...medianRuns(runs.map((run) => withIds(streamFigures(run.t0, run.streams), run.streams))), ...rest };
  });
  // The python process's peak RSS is not this one's; it is not reported.
  return { loadS: res.loadS, results };
}

// ---------------------------------------------------------------------------------------------
// chord-llm

const NO_SESSIONS =
  'this chord-llm build has no Model.createSession() (no sessions or batched decoding yet: rebuild with npm run build)';

/** Loads the model; fails (before loading when it can tell) if the build has no sessions API. */
async function loadChordModel(options) {
  const chord = loadChord(cfg.chordModule);
  const needSessions = cfg.needSessions || !cfg.noApiCheck;
  if (needSessions && chord.Model && chord.Model.prototype && typeof chord.Model.prototype.createSession !== 'function') {
    throw new Error(NO_SESSIONS);
  }
  const tLoad = now();
  const model = await chord.loadModel(cfg.model, { threads: cfg.threads, useMmap: cfg.useMmap, ...options });
  const loadS = (now() - tLoad) / 1000;
  await waitForWeightsCopy(model);
  if (needSessions && typeof model.createSession !== 'function') {
    await model.dispose();
    throw new Error(NO_SESSIONS);
  }
  return { model, loadS };
}

/** stats() as plain numbers, or null. */
function stats(model) {
  try {
    return JSON.parse(JSON.stringify(model.stats()));
  } catch {
    return null;
  }
}

function statsDelta(a, b) {
  if (!a || !b) return null;
  const out = {};
  for (const k of ['layerLoads', 'layerHits', 'prefetchHits', 'stallMs', 'bytesRead']) {
    if (typeof a[k] === 'number' && typeof b[k] === 'number') out[k] = b[k] - a[k];
  }
  return out;
}

/** BOS the model prepends by default, or null. */
function chordBos(model) {
  const withBos = model.tokenize('Hello', { addBos: true });
  const without = model.tokenize('Hello', { addBos: false });
  return withBos.length > without.length ? withBos[0] : null;
}

async function chordTokenize() {
  const { model } = await loadChordModel({ contextSize: 64 });
  try {
    const ids = model.tokenize(fs.readFileSync(CORPUS_FILE, 'utf8'), { addBos: false, special: false });
    return { ids: Array.from(ids, Number), bos: chordBos(model) };
  } finally {
    await model.dispose();
  }
}

async function chordInfo() {
  const chord = loadChord(cfg.chordModule);
  const model = await chord.loadModel(cfg.model, { threads: cfg.threads, contextSize: 64, paging: 'never' });
  try {
    return { info: JSON.parse(JSON.stringify(model.info)) };
  } finally {
    await model.dispose();
  }
}

const greedy = (maxTokens) => ({ maxTokens, temperature: 0, ignoreEos: true });

async function chordThroughput() {
  const maxN = Math.max(...cfg.streams);
  const { model, loadS } = await loadChordModel({ contextSize: cfg.contextSize, maxSequences: maxN, ...cfg.load });
  const results = [];
  try {
    const info = JSON.parse(JSON.stringify(model.info));
    for (const n of cfg.streams) {
      const prompts = cfg.prompts.slice(0, n);
      if (cfg.warmup) await Promise.all(prompts.map((p) => consume(model.generate(p.slice(0, 8), greedy(2)), 2)));
      const runs = [];
      for (let r = 0; r < cfg.repeat; r++) {
        const s0 = stats(model);
        const t0 = now();
        const streams = await Promise.all(prompts.map((p) => consume(model.generate(p, greedy(cfg.genTokens)), cfg.genTokens)));
        const s1 = stats(model);
        checkStreams(streams, cfg.genTokens);
        runs.push({ ...withIds(streamFigures(t0, streams), streams), pager: statsDelta(s0, s1) });
      }
      results.push(medianRuns(runs));
    }
    return { loadS, info, results, statsEnd: stats(model), peakRssBytes: peakRssBytes() };
  } finally {
    await model.dispose();
  }
}

/**
 * `running` streams decode; once each has `settle` + `steady` tokens, a long prompt starts on one
 * more stream. Gaps (ms between consecutive tokens of one stream):
 *   steady  gaps after every running stream had its first `settle` tokens, ending before the
 *           long prompt started
 *   during  gaps overlapping the long prompt's prefill (end after it started, start before its
 *           first token): the stalls the prefill causes, whole
 */
async function chordLatency() {
  const { model, loadS } = await loadChordModel({ contextSize: cfg.contextSize, maxSequences: cfg.prompts.length + 1 });
  try {
    if (cfg.warmup) await Promise.all(cfg.prompts.map((p) => consume(model.generate(p.slice(0, 8), greedy(2)), 2)));
    const need = cfg.settleTokens + cfg.steadyTokens + 1;
    let t4start = null;
    let t4first = null;
    let markReady;
    const ready = new Promise((resolve) => (markReady = resolve));
    const counts = cfg.prompts.map(() => 0);
    const maxTokens = cfg.contextSize - Math.max(...cfg.prompts.map((p) => p.length));
    const streams = cfg.prompts.map((p, i) =>
      consume(model.generate(p, greedy(maxTokens)), maxTokens, (tt, k) => {
        counts[i] = k;
        if (t4start == null && counts.every((c) => c >= need)) markReady();
        // Stop at the first token after the long prompt's first token: that gap is counted too.
        return !(t4first != null && tt > t4first);
      }),
    );
    const allDone = Promise.all(streams);
    await Promise.race([
      ready,
      allDone.then(() => {
        throw new Error('the running streams ended before they reached their steady state');
      }),
    ]);
    t4start = now();
    let firstId = null;
    for await (const t of model.generate(cfg.longPrompt, greedy(2))) {
      t4first = now();
      firstId = tokenId(t);
      break;
    }
    if (t4first == null) throw new Error('the long prompt produced no token');
    const done = await allDone;
    const steady = [];
    const during = [];
    const tSettled = Math.max(...done.map((s) => s.times[cfg.settleTokens - 1] ?? Infinity));
    let tokensDuring = 0;
    done.forEach((s, i) => {
      if (!(s.times[s.times.length - 1] > t4first)) {
        throw new Error(`running stream ${i} ended before the long prompt's first token (raise --latency-context)`);
      }
      for (let k = 1; k < s.times.length; k++) {
        const a = s.times[k - 1];
        const b = s.times[k];
        if (a >= tSettled && b <= t4start) steady.push(b - a);
        if (b > t4start && a < t4first) during.push(b - a);
        if (b > t4start && b <= t4first) tokensDuring++;
      }
    });
    const steadyMs = median(steady);
    const p99Ms = percentile(during, 99);
    return {
      loadS,
      running: cfg.prompts.length,
      promptTokens: cfg.prompts[0].length,
      longPromptTokens: cfg.longPrompt.length,
      steadyGaps: steady.length,
      steadyMs,
      duringGaps: during.length,
      tokensDuring,
      p50Ms: percentile(during, 50),
      p99Ms,
      maxMs: during.length ? Math.max(...during) : null,
      p99OverSteady: steadyMs && p99Ms != null ? p99Ms / steadyMs : null,
      prefillS: (t4first - t4start) / 1000,
      prefillTokS: cfg.longPrompt.length / ((t4first - t4start) / 1000),
      longFirstToken: firstId,
      peakRssBytes: peakRssBytes(),
    };
  } finally {
    await model.dispose();
  }
}

/** The ids of `text` with special tokens parsed, no BOS. */
const special = (model, text) => Array.from(model.tokenize(text, { addBos: false, special: true }), Number);

/**
 * Turn k's new ids, exactly cfg.turnTokens of them: a ChatML user message (closing the previous
 * assistant message after the first turn) when the model has the ChatML tokens, else plain
 * corpus text; the message text is corpus ids from cfg.corpus.
 */
function turnIds(model, k, offset, bos) {
  const chatml = special(model, '<|im_start|>').length === 1 && special(model, '<|im_end|>').length === 1;
  const head = [...(k === 0 && bos != null ? [bos] : []), ...(chatml ? special(model, `${k === 0 ? '' : '<|im_end|>\n'}<|im_start|>user\n`) : [])];
  const tail = chatml ? special(model, '<|im_end|>\n<|im_start|>assistant\n') : [];
  const body = cfg.turnTokens - head.length - tail.length;
  if (body < 1) throw new Error(`--turn-tokens ${cfg.turnTokens} leaves no room for text after the chat markup (${head.length + tail.length} tokens)`);
  const text = [];
  for (let i = 0; i < body; i++) text.push(cfg.corpus[(offset + i) % cfg.corpus.length]);
  return { ids: [...head, ...text, ...tail], chatml };
}

async function chordChat() {
  const { model, loadS } = await loadChordModel({ contextSize: cfg.contextSize, maxSequences: 2 });
  try {
    if (cfg.warmup) await consume(model.generate(cfg.corpus.slice(0, 8), greedy(2)), 2);
    const session = model.createSession({ contextSize: cfg.contextSize });
    // A turn runs to its natural end (maxTokens), as a chat would, so that the session records
    // everything it generated; only the first turnGen items count (a final text-only item may follow).
    const turn = async (ids) => {
      const t0 = now();
      const out = await consume(session.generate(ids, greedy(cfg.turnGen)), Infinity);
      if (out.ids.length < cfg.turnGen) throw new Error(`a turn stopped after ${out.ids.length} of ${cfg.turnGen} tokens`);
      const tm = out.times.slice(0, cfg.turnGen);
      return { ids: out.ids.slice(0, cfg.turnGen), ttftS: (tm[0] - t0) / 1000, turnS: (tm[tm.length - 1] - t0) / 1000 };
    };
    const turns = [];
    // The conversation as this script sees it: every turn's new ids and generated ids.
    const expected = [];
    let history = null;
    let heldBefore = null;
    let lastNew = null;
    let chatml = false;
    for (let k = 0; k < cfg.turns; k++) {
      const t = turnIds(model, k, k * cfg.turnTokens, cfg.bos);
      chatml = t.chatml;
      if (k === cfg.turns - 1) {
        history = expected.slice();
        heldBefore = Array.from(session.tokens, Number);
        lastNew = t.ids;
      }
      const out = await turn(t.ids);
      turns.push({ newTokens: t.ids.length, ...out });
      expected.push(...t.ids, ...out.ids);
    }
    const held = Array.from(session.tokens, Number);
    // session.tokens should be the conversation: every id given and generated (perhaps without
    // the last generated one, if the session keeps that unevaluated until the next call).
    const asExpected = (h, e) => samePrefix(h, e) === h.length && (h.length === e.length || h.length === e.length - 1);
    const heldAsExpected = asExpected(held, expected) && asExpected(heldBefore, history);
    const last = turns[turns.length - 1];

    // Repeats of the last turn in the session: truncate back to where it started.
    const sessionTtft = [last.ttftS];
    for (let r = 1; r < cfg.repeat; r++) {
      session.truncate(heldBefore.length);
      const out = await turn(lastNew);
      sessionTtft.push(out.ttftS);
      if (samePrefix(out.ids, last.ids) !== last.ids.length) throw new Error(`repeat ${r + 1} of the last turn in the session generated other tokens`);
    }
    const sessionKvBytes = session.kvBytes;
    const statsSession = stats(model);

    // The whole conversation from scratch: a one-shot generate() of the same ids.
    const full = [...history, ...lastNew];
    const scratchTtft = [];
    let scratchIds = null;
    for (let r = 0; r < cfg.repeat; r++) {
      const t0 = now();
      const out = await consume(model.generate(full, greedy(cfg.turnGen)), cfg.turnGen);
      scratchTtft.push((out.times[0] - t0) / 1000);
      scratchIds ??= out.ids;
    }
    session.dispose();
    const sessionTtftS = median(sessionTtft);
    const scratchTtftS = median(scratchTtft);
    const same = samePrefix(last.ids, scratchIds);
    return {
      loadS,
      chatml,
      turns: turns.map(({ ids, ...t }) => t),
      lastTurnIds: last.ids,
      historyTokens: history.length,
      fullPromptTokens: full.length,
      heldTokens: held.length,
      expectedTokens: expected.length,
      heldAsExpected,
      sessionKvBytes: typeof sessionKvBytes === 'number' ? sessionKvBytes : null,
      stats: statsSession,
      sessionTtftS,
      scratchTtftS,
      speedup: sessionTtftS > 0 ? scratchTtftS / sessionTtftS : null,
      scratchIds,
      sameTokens: same,
      identical: same === cfg.turnGen && scratchIds.length === cfg.turnGen,
      peakRssBytes: peakRssBytes(),
    };
  } finally {
    await model.dispose();
  }
}
