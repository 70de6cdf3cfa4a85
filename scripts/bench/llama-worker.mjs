// Bench worker for node-llama-cpp (llama.cpp), run in its own process by scripts/bench.mjs.
// mode "tokenize": print the shared prompt ids; mode "bench": load, prefill, decode, print figures.
// Prints exactly one JSON line on stdout.

import { buildPromptIds, medianOfRuns, now, peakRssBytes, readConfig, runWorker } from './common.mjs';

runWorker('node-llama-cpp', async () => {
  const cfg = readConfig();
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const tInit = now();
  const llama = await getLlama({
    gpu: false,
    build: 'never',
    skipDownload: true,
    maxThreads: cfg.threads,
    logLevel: LlamaLogLevel.error,
  });
  const initS = (now() - tInit) / 1000;

  if (cfg.mode === 'tokenize') {
    const model = await llama.loadModel({ modelPath: cfg.model, gpuLayers: 0, vocabOnly: true });
    const bos = model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
    const ids = buildPromptIds((t) => model.tokenize(t, false), bos, cfg.promptTokens);
    await model.dispose();
    return { ids };
  }

  const tLoad = now();
  const model = await llama.loadModel({ modelPath: cfg.model, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: cfg.contextSize,
    batchSize: Math.max(512, cfg.promptTokens),
    threads: { ideal: cfg.threads, min: cfg.threads },
    sequences: 1,
  });
  const sequence = context.getSequence();
  const loadS = (now() - tLoad) / 1000;

  const bos = model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
  const ids = cfg.promptIds ?? buildPromptIds((t) => model.tokenize(t, false), bos, cfg.promptTokens);
  if (ids.length + cfg.genTokens > sequence.contextSize) {
    throw new Error(`context size ${sequence.contextSize} too small for ${ids.length}+${cfg.genTokens} tokens`);
  }

  // Prefill: evaluate the prompt in a fresh state; the last position samples the first token (greedy).
  const prefill = async () => {
    await sequence.clearHistory();
    const input = ids.slice();
    input[input.length - 1] = [ids[ids.length - 1], { generateNext: { token: true } }];
    const t0 = now();
    const res = await sequence.controlledEvaluate(input);
    const t1 = now();
    const tok = res[input.length - 1]?.next?.token;
    if (tok == null) throw new Error('node-llama-cpp produced no token after the prompt');
    return { seconds: (t1 - t0) / 1000, firstToken: tok };
  };
  // The first evaluation after the load also gives the time to first token.
  const firstPf = await prefill();
  const pf = cfg.warmup ? await medianOfRuns(cfg.prefillRuns, prefill, (p) => p.seconds) : firstPf;

  // Decode: the first token comes from the prefill; then generate one token per step
  // (greedy, EOS does not stop). Timed from the first token to the last.
  const tokens = [pf.firstToken];
  const tFirst = now();
  let tLast = tFirst;
  if (cfg.genTokens > 1) {
    const it = sequence.evaluate([pf.firstToken], { temperature: 0, yieldEogToken: true });
    for await (const tok of it) {
      tokens.push(tok);
      tLast = now();
      if (tokens.length >= cfg.genTokens) break;
    }
  }
  if (tokens.length < cfg.genTokens) throw new Error(`generation stopped after ${tokens.length} tokens`);
  const decodeS = (tLast - tFirst) / 1000;

  const peak = peakRssBytes();
  const out = {
    initS,
    loadS,
    ttftS: loadS + firstPf.seconds,
    promptTokens: ids.length,
    prefillS: pf.seconds,
    prefillTokS: ids.length / pf.seconds,
    genTokens: tokens.length,
    decodeS,
    decodeTokS: decodeS > 0 ? (tokens.length - 1) / decodeS : null,
    peakRssBytes: peak,
    firstTokens: tokens.slice(0, 16),
    contextSize: sequence.contextSize,
    batchSize: context.batchSize,
    threads: context.currentThreads ?? cfg.threads,
    flashAttention: context.flashAttention,
  };
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  return out;
});
