// Bench worker for chord-llm (this repo's addon, through lib/index.js), run in its own process
// by scripts/bench.mjs. Mode "bench": load, prefill (logits of the prompt), decode (greedy
// generate), peak RSS; mode "bandwidth": the memory read bandwidth with cfg.threads threads
// (the native addon's internal measureReadBandwidth). Prints exactly one JSON line on stdout.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildPromptIds, loadChord, mappedMegabytes, medianOfRuns, now, peakRssBytes, readConfig, runWorker, waitForWeightsCopy } from './common.mjs';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A generated item may be a bare id or an object carrying one. */
const tokenId = (t) => (typeof t === 'object' && t !== null ? (t.token ?? t.id ?? t.tokenId) : t);

runWorker('chord-llm', async () => {
  const cfg = readConfig();
  if (cfg.mode === 'bandwidth') return measureBandwidth(cfg);
  const tInit = now();
  const chord = loadChord(cfg.chordModule);
  const initS = (now() - tInit) / 1000;

  const tLoad = now();
  const model = await chord.loadModel(cfg.model, { threads: cfg.threads, contextSize: cfg.contextSize, pageCache: cfg.pageCache, useMmap: cfg.useMmap });
  const loadS = (now() - tLoad) / 1000;

  try {
    const ids =
      cfg.promptIds ??
      buildPromptIds((t) => model.tokenize(t, { addBos: false, special: false }), null, cfg.promptTokens);

    // Prefill: logits of the whole prompt from a fresh state.
    const prefill = async () => {
      const t0 = now();
      await model.logits(ids);
      return (now() - t0) / 1000;
    };
    // The first evaluation after the load also gives the time to first token.
    const firstPrefillS = await prefill();
    const copyWaitS = await waitForWeightsCopy(model);
    const prefillS = cfg.warmup || copyWaitS > 0 ? await medianOfRuns(cfg.prefillRuns, prefill) : firstPrefillS;

    // Decode: greedy, EOS ignored; timed from the first generated token to the last, so the
    // prefill generate() does internally is excluded. cfg.decodeRuns > 1 decodes that many
    // times and keeps the median rate: the weights stay where the load put them, so the runs
    // measure the same state, and one run of a small model (under a second) moves with a shared
    // host's load from one second to the next.
    const decode = async () => {
      const tokens = [];
      let tFirst = 0;
      let tLast = 0;
      for await (const t of model.generate(ids, { maxTokens: cfg.genTokens, temperature: 0, ignoreEos: true })) {
        const tt = now();
        if (tokens.length === 0) tFirst = tt;
        tLast = tt;
        tokens.push(tokenId(t));
        if (tokens.length >= cfg.genTokens) break;
      }
      if (tokens.length < cfg.genTokens) throw new Error(`generation stopped after ${tokens.length} tokens`);
      return { tokens, decodeS: (tLast - tFirst) / 1000 };
    };
    const { tokens, decodeS } = await medianOfRuns(cfg.decodeRuns ?? 1, decode, (r) => r.decodeS);

    return {
      initS,
      loadS,
      ttftS: loadS + firstPrefillS,
      copyWaitS,
      promptTokens: ids.length,
      prefillS,
      prefillTokS: ids.length / prefillS,
      genTokens: tokens.length,
      decodeS,
      decodeTokS: decodeS > 0 ? (tokens.length - 1) / decodeS : null,
      peakRssBytes: peakRssBytes(),
      mappedMb: mappedMegabytes(),
      kvCacheBytes: model.info.kvCacheBytes,
      firstTokens: tokens.slice(0, 16),
      threads: cfg.threads,
      contextSize: cfg.contextSize,
    };
  } finally {
    await model.dispose();
  }
});

/**
 * Read bandwidth over a buffer of cfg.bytes (default 1 GiB) with cfg.threads threads: the best
 * pass (bytesPerS) and every pass in order (passesBytesPerS).
 */
async function measureBandwidth(cfg) {
  let native;
  try {
    native = createRequire(path.join(repoRoot, 'package.json'))(path.join(repoRoot, 'index.js'));
  } catch (e) {
    throw new Error(`chord-llm's addon is not loadable (not built yet? run "npm run build"): ${e.message}`);
  }
  if (typeof native.measureReadBandwidth !== 'function') throw new Error('the addon has no measureReadBandwidth (rebuild it)');
  const bytes = cfg.bytes ?? 2 ** 30;
  const passes = await native.measureReadBandwidth(cfg.threads, bytes);
  return { threads: cfg.threads, bytes, bytesPerS: Math.max(...passes), passesBytesPerS: passes };
}
