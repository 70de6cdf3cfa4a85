// Bench worker for chord-llm's pager, run in its own process by scripts/bench-paging.mjs (one
// configuration per process, so that VmHWM is that configuration's own peak).
//   mode "probe": the smallest budget the engine accepts (the largest unit, from the error a
//     budget of 1 byte gets), checked by a load just below it and one at it (nothing is pinned
//     at that budget, so nothing is read), plus the model's info and the prompt ids.
//   mode "bench": load with the given options, generate `genTokens` greedy tokens (EOS ignored)
//     from the prompt, report load s, decode tok/s (tokens after the first), the token ids,
//     peak RSS, info.kvCacheBytes and stats() (after load, at the first token, at the end).
// Prints exactly one JSON line on stdout.

import { PROMPT_TEXT, loadChord, now, peakRssBytes, procKbFields, readConfig, runWorker, waitForWeightsCopy } from './common.mjs';

/** Some lines of /proc/self/status, in bytes (Linux only). */
const memStatus = () => procKbFields('/proc/self/status', ['VmRSS', 'VmHWM', 'RssAnon', 'RssFile']);

/** A generated item may be a bare id or an object carrying one. */
const tokenId = (t) => (typeof t === 'object' && t !== null ? (t.id ?? t.token ?? t.tokenId) : t);

/** `n` prompt ids: BOS where the model adds it, then the fixed text (repeated if needed). */
function promptIds(model, n) {
  const withBos = model.tokenize('Hello', { addBos: true });
  const without = model.tokenize('Hello', { addBos: false });
  const ids = withBos.length > without.length ? [withBos[0]] : [];
  let text = PROMPT_TEXT;
  for (let i = 0; i < 8 && ids.length + model.tokenize(text, { addBos: false }).length < n; i++) text += ' ' + PROMPT_TEXT;
  return ids.concat(Array.from(model.tokenize(text, { addBos: false }), Number)).slice(0, n);
}

const plainInfo = (info) => JSON.parse(JSON.stringify(info));

async function probe(chord, cfg) {
  const base = { threads: cfg.threads, contextSize: cfg.contextSize, paging: 'always' };
  if (cfg.prefetchLayers != null) base.prefetchLayers = cfg.prefetchLayers;
  const attempt = async (budget) => {
    try {
      const model = await chord.loadModel(cfg.model, { ...base, memoryBudget: budget });
      return { ok: true, model };
    } catch (e) {
      return { ok: false, code: e.code, message: String(e.message) };
    }
  };
  const out = { largestUnitBytes: null, minSource: null, belowMinRejected: null, probeError: null };

  // The engine rejects a budget below its largest unit and names that unit's size.
  const tiny = await attempt(1);
  if (tiny.ok) {
    await tiny.model.dispose();
    out.probeError = 'a budget of 1 byte was accepted';
  } else {
    const m = /\((\d+) bytes\)/.exec(tiny.message);
    if (tiny.code === 'ERR_INVALID_OPTION' && m) {
      out.largestUnitBytes = Number(m[1]);
      out.minSource = 'error message';
    } else {
      out.probeError = `${tiny.code}: ${tiny.message}`;
    }
  }

  // Fallback: binary search over load attempts (each loads only what it pins, at most `budget`).
  if (out.largestUnitBytes == null && cfg.searchHigh) {
    let lo = 1; // rejected
    let hi = cfg.searchHigh; // assumed to load
    const first = await attempt(hi);
    if (!first.ok) throw new Error(`probe: a budget of ${hi} bytes does not load either: ${first.code}: ${first.message}`);
    await first.model.dispose();
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      const r = await attempt(mid);
      if (r.ok) {
        await r.model.dispose();
        hi = mid;
      } else if (r.code === 'ERR_INVALID_OPTION') {
        lo = mid;
      } else {
        throw new Error(`probe: load at ${mid} bytes failed: ${r.code}: ${r.message}`);
      }
    }
    out.largestUnitBytes = hi;
    out.minSource = 'binary search';
  }
  if (out.largestUnitBytes == null) throw new Error(`probe: could not find the smallest budget (${out.probeError})`);

  const below = await attempt(out.largestUnitBytes - 1);
  if (below.ok) await below.model.dispose();
  out.belowMinRejected = !below.ok && below.code === 'ERR_INVALID_OPTION';

  const at = await attempt(out.largestUnitBytes);
  if (!at.ok) throw new Error(`probe: the smallest budget ${out.largestUnitBytes} does not load: ${at.code}: ${at.message}`);
  try {
    out.info = plainInfo(at.model.info);
    out.stats = at.model.stats();
    out.promptIds = promptIds(at.model, cfg.promptTokens);
  } finally {
    await at.model.dispose();
  }
  out.peakRssBytes = peakRssBytes();
  return out;
}

async function bench(chord, cfg) {
  const opts = { threads: cfg.threads, contextSize: cfg.contextSize, ...cfg.load };
  const tLoad = now();
  const model = await chord.loadModel(cfg.model, opts);
  const loadS = (now() - tLoad) / 1000;
  try {
    // Resident, the default copy is made first: the paged runs are compared with what
    // resident weights decode at from then on.
    const copyWaitS = await waitForWeightsCopy(model);
    const info = plainInfo(model.info);
    const statsLoad = model.stats();
    const memLoad = memStatus();
    const ids = cfg.promptIds ?? promptIds(model, cfg.promptTokens);

    const tokens = [];
    let tStart = now();
    let tFirst = 0;
    let tLast = 0;
    let statsFirst = null;
    if (cfg.genTokens > 0) {
      tStart = now();
      for await (const t of model.generate(ids, { maxTokens: cfg.genTokens, temperature: 0, ignoreEos: true })) {
        const tt = now();
        if (tokens.length === 0) {
          tFirst = tt;
          statsFirst = model.stats();
        }
        tLast = tt;
        tokens.push(tokenId(t));
        if (tokens.length >= cfg.genTokens) break;
      }
      if (tokens.length < cfg.genTokens) throw new Error(`generation stopped after ${tokens.length} tokens`);
    }
    const statsEnd = model.stats();
    const decodeS = (tLast - tFirst) / 1000;
    const ru = process.resourceUsage();
    return {
      loadS,
      copyWaitS,
      promptTokens: ids.length,
      promptIds: ids,
      firstTokenS: tokens.length ? (tFirst - tStart) / 1000 : null,
      genTokens: tokens.length,
      decodeS,
      decodeTokS: tokens.length > 1 && decodeS > 0 ? (tokens.length - 1) / decodeS : null,
      tokens,
      peakRssBytes: peakRssBytes(),
      memAfterLoad: memLoad,
      memEnd: memStatus(),
      majorFaults: ru.majorPageFault,
      fsReadBlocks: ru.fsRead,
      info,
      statsLoad,
      statsFirst,
      statsEnd,
      threads: cfg.threads,
      contextSize: info.contextSize,
    };
  } finally {
    await model.dispose();
  }
}

runWorker('chord-llm', async () => {
  const cfg = readConfig();
  const chord = loadChord(cfg.chordModule);
  if (cfg.mode === 'probe') return probe(chord, cfg);
  if (cfg.mode === 'bench') return bench(chord, cfg);
  throw new Error(`unknown mode ${cfg.mode}`);
});
