// Resident decode speed of chord-llm in the two page-cache states a model file meets: just
// downloaded or copied (cached in 4 KiB pages, "small") and read back sequentially (large
// folios, "fresh"). Runs alternate between the states, in both orders, one process each, so
// that a shared host's drift (which moves one state's figure by 20% between two benches a few
// minutes apart) falls on both alike; the report gives each round's small/fresh ratio. Run
// `node scripts/bench-folios.mjs --help`.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmt, median, renderTable } from './bench/batch-common.mjs';
import { UsageError, int, killCurrentChild, list, parseCli, preparePageCache, runChild } from './bench/common.mjs';
import { MODELS, modelPath } from './models.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHORD_WORKER = path.join(here, 'bench', 'chord-worker.mjs');
const STATES = ['small', 'fresh'];

const HELP = `Usage: node scripts/bench-folios.mjs [model key or file ...] [options]

For each model and thread count, R rounds; a round runs chord-llm once with the file's cache
prepared "small" (its pages dropped, then read 4 KiB at a time in scattered order: the state
of a file just downloaded or copied) and once "fresh" (dropped, then read sequentially: large
folios), in alternating order from round to round. Each run is its own process: load, a
128-token prompt, then K decodes of N greedy tokens (EOS ignored) of which the process keeps
the median rate. Reported: median decode tok/s per state, the median small/fresh ratio over
the rounds with its range, the median load time per state (with pageCache 'auto', a load that
finds the file in 4 KiB pages reads it back first, which is where the small state's cost
goes), and how the process's memory was mapped after the decodes: MB in 2 MiB pages
(anonymous, where the weights' copy is, plus file pages mapped through 2 MiB entries) and
anonymous MB in all. Equal figures in both states say the decodes read the same memory, so
what separates their rates is the host, not the state.

Models: keys (${Object.keys(MODELS).join(', ')}) or GGUF paths; default every cached model.

Options:
  --threads LIST        comma-separated thread counts (default 1,2)
  --rounds R            rounds per model and thread count (default 5)
  --gen-tokens N        tokens to generate (default 128)
  --decode-runs K       decodes per process, the median kept (default 3)
  --chord-page-cache M  chord-llm's pageCache option: auto (default) or keep (no read-back: the
                        small state's decode in 4 KiB pages)
  --timeout S           per-process timeout in seconds (default 600)
  -h, --help            this help
`;

function parseArgs(argv) {
  const o = { models: [], threads: [1, 2], rounds: 5, genTokens: 128, decodeRuns: 3, chordPageCache: 'auto', timeout: 600 };
  parseCli(
    argv,
    {
      '-h, --help': () => (o.help = true),
      '--threads, -t': (val, flag) => (o.threads = list(flag, val()).map((t) => int(flag, t, 1))),
      '--rounds': (val, flag) => (o.rounds = int(flag, val(), 1)),
      '--gen-tokens': (val, flag) => (o.genTokens = int(flag, val(), 2)),
      '--decode-runs': (val, flag) => (o.decodeRuns = int(flag, val(), 1)),
      '--chord-page-cache': (val, flag) => (o.chordPageCache = list(flag, val(), ['auto', 'keep'])[0]),
      '--timeout': (val, flag) => (o.timeout = int(flag, val(), 1)),
    },
    (a) => o.models.push(a),
  );
  return o;
}

function resolveModels(names) {
  const keys = names.length ? names : Object.keys(MODELS).filter((k) => fs.existsSync(modelPath(k)));
  return keys.map((name) => {
    const file = MODELS[name] ? modelPath(name) : path.resolve(name);
    if (!fs.existsSync(file)) throw new UsageError(`${name}: no such model file (${file}); scripts/fetch-models fetches the keys`);
    return { label: MODELS[name] ? name : path.basename(file), file };
  });
}

async function benchOne(model, threads, opts, log) {
  const cfg = {
    mode: 'bench',
    model: model.file,
    threads,
    contextSize: 512,
    promptTokens: 128,
    genTokens: opts.genTokens,
    decodeRuns: opts.decodeRuns,
    promptIds: null,
    warmup: false,
    pageCache: opts.chordPageCache,
  };
  const runs = { small: [], fresh: [] };
  const ratios = [];
  for (let r = 0; r < opts.rounds; r++) {
    const order = r % 2 ? [...STATES].reverse() : STATES;
    const round = {};
    for (const state of order) {
      preparePageCache(model.file, state);
      log(`${model.label}, ${threads} threads, round ${r + 1}/${opts.rounds}: ${state} ...`);
      const res = await runChild(CHORD_WORKER, cfg, { timeoutS: opts.timeout });
      if (!res.ok) throw new Error(`${model.label} (${state}, ${threads} threads) failed: ${res.error}`);
      runs[state].push(res);
      round[state] = res.decodeTokS;
    }
    ratios.push(round.small / round.fresh);
  }
  const decode = (s) => median(runs[s].map((r) => r.decodeTokS));
  const load = (s) => median(runs[s].map((r) => r.loadS));
  const mapped = (s, f) => median(runs[s].map((r) => (r.mappedMb ? f(r.mappedMb) : null)));
  const inHugePages = (m) => (m.anonHuge ?? 0) + (m.filePmd ?? 0);
  return {
    model: model.label,
    threads,
    smallTokS: decode('small'),
    freshTokS: decode('fresh'),
    ratio: median(ratios),
    ratioMin: Math.min(...ratios),
    ratioMax: Math.max(...ratios),
    smallLoadS: load('small'),
    freshLoadS: load('fresh'),
    smallHugeMb: mapped('small', inHugePages),
    freshHugeMb: mapped('fresh', inHugePages),
    smallAnonMb: mapped('small', (m) => m.anon),
    freshAnonMb: mapped('fresh', (m) => m.anon),
  };
}

function report(rows, opts) {
  const head = ['model', 'threads', 'small tok/s', 'fresh tok/s', 'small/fresh (median)', 'range', 'within 5%', 'load s small / fresh', 'MB in 2 MiB pages small / fresh', 'anon MB small / fresh'];
  const body = rows.map((r) => [
    r.model,
    r.threads,
    fmt(r.smallTokS, 1),
    fmt(r.freshTokS, 1),
    fmt(r.ratio, 3),
    `${fmt(r.ratioMin, 3)}-${fmt(r.ratioMax, 3)}`,
    r.ratio != null && Math.abs(r.ratio - 1) <= 0.05 ? 'yes' : 'NO',
    `${fmt(r.smallLoadS, 2)} / ${fmt(r.freshLoadS, 2)}`,
    `${fmt(r.smallHugeMb, 0)} / ${fmt(r.freshHugeMb, 0)}`,
    `${fmt(r.smallAnonMb, 0)} / ${fmt(r.freshAnonMb, 0)}`,
  ]);
  const note = `${opts.rounds} rounds, states alternating (small first in odd rounds); decode = tokens 2..${opts.genTokens}, the median of ${opts.decodeRuns} per process, medians over rounds; chord-llm pageCache '${opts.chordPageCache}'`;
  return `${renderTable(head, body)}\n${note}`;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
    if (opts.help) {
      process.stdout.write(HELP);
      return;
    }
    if (process.platform !== 'linux') throw new UsageError('the page-cache states need Linux (posix_fadvise through dd, /proc)');
    opts.modelList = resolveModels(opts.models);
    if (!opts.modelList.length) throw new UsageError('no cached model found; run scripts/fetch-models');
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${e.message}\n\n${HELP}`);
    process.exit(2);
  }
  process.on('SIGINT', () => {
    killCurrentChild();
    process.exit(130);
  });
  const log = (m) => process.stderr.write(`${m}\n`);
  const rows = [];
  for (const model of opts.modelList) for (const threads of opts.threads) rows.push(await benchOne(model, threads, opts, log));
  process.stdout.write(`${report(rows, opts)}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack ?? e}\n`);
  process.exit(1);
});
