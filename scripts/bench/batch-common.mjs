// Helpers shared by scripts/bench-batch.mjs and scripts/bench/batch-worker.mjs (the statistics
// and the table also by scripts/bench-folios.mjs): the prompt ids
// cut from the perplexity corpus, the statistics (median, nearest-rank percentile), the
// aggregate-throughput figures of a set of concurrent streams, and a plain text table.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The text the prompts are cut from (a ~16 KB English essay; tokenized once per model). */
export const CORPUS_FILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '__test__', 'data', 'perplexity.txt');

/**
 * `n` prompt ids: BOS first when `bos` is not null, then the corpus ids from `offset` on
 * (wrapping around at the end of the corpus). Distinct offsets give distinct prompts.
 */
export function cutPrompt(corpus, bos, offset, n) {
  if (!corpus.length) throw new Error('empty corpus');
  const ids = bos == null ? [] : [bos];
  for (let i = offset; ids.length < n; i++) ids.push(corpus[i % corpus.length]);
  return ids;
}

/** Prompt of stream `i` (of `promptTokens` tokens): the corpus from i * promptTokens on. */
export const streamPrompt = (corpus, bos, i, promptTokens) => cutPrompt(corpus, bos, i * promptTokens, promptTokens);

export function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** Nearest-rank percentile (p in 0..100): the smallest value with at least p% of the values <= it. */
export function percentile(xs, p) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))];
}

/** Length of the common prefix of two id arrays. */
export function samePrefix(a, b) {
  if (!a || !b) return null;
  let k = 0;
  while (k < a.length && k < b.length && a[k] === b[k]) k++;
  return k;
}

/**
 * Aggregate figures of concurrent streams started together at `t0` (ms, performance.now()):
 * `streams` is [{ times: [ms of each token], ids }].
 *   aggTokS     all generated tokens / (last token of any stream - t0): prompts' prefill included
 *   decodeTokS  tokens that arrived after the last stream's first token / (last token - that
 *               first token): tokens and time over the same window, in which every prompt has
 *               been evaluated and only decoding remains
 *   ttftMaxS    t0 -> the last stream's first token (every prompt evaluated)
 */
export function streamFigures(t0, streams) {
  const firsts = streams.map((s) => s.times[0]);
  const lasts = streams.map((s) => s.times[s.times.length - 1]);
  const lastFirst = Math.max(...firsts);
  const end = Math.max(...lasts);
  const totalTokens = streams.reduce((a, s) => a + s.times.length, 0);
  const decodeTokens = streams.reduce((a, s) => a + s.times.filter((t) => t > lastFirst).length, 0);
  const wallS = (end - t0) / 1000;
  const decodeS = (end - lastFirst) / 1000;
  // While every stream decodes: from the last first token to the first stream's end.
  const firstLast = Math.min(...lasts);
  const steadyTokens = streams.reduce((a, s) => a + s.times.filter((t) => t > lastFirst && t <= firstLast).length, 0);
  const steadyS = (firstLast - lastFirst) / 1000;
  return {
    streams: streams.length,
    totalTokens,
    wallS,
    aggTokS: wallS > 0 ? totalTokens / wallS : null,
    ttftMeanS: firsts.reduce((a, t) => a + (t - t0), 0) / firsts.length / 1000,
    ttftMaxS: (lastFirst - t0) / 1000,
    decodeTokens,
    decodeS,
    decodeTokS: decodeS > 0 && decodeTokens > 0 ? decodeTokens / decodeS : null,
    steadyTokens,
    steadyS,
    steadyTokS: steadyS > 0 && steadyTokens > 0 ? steadyTokens / steadyS : null,
  };
}

/** Per-key medians of numeric fields over repeated runs (other fields from the first run). */
export function medianRuns(runs) {
  const out = { ...runs[0] };
  for (const k of Object.keys(out)) if (typeof out[k] === 'number') out[k] = median(runs.map((r) => r[k]));
  return out;
}

export const fmt = (v, d) => (v == null || !Number.isFinite(v) ? '-' : v.toFixed(d));
export const times = (v, d = 2) => (v == null || !Number.isFinite(v) ? '-' : `${v.toFixed(d)}x`);

/** A table: first column left-aligned, the others right-aligned; a row that is a string is printed as is. */
export function renderTable(head, rows) {
  const cells = rows.filter((r) => Array.isArray(r)).map((r) => r.map((c) => String(c ?? '-')));
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  const out = [line(head)];
  for (const r of rows) out.push(Array.isArray(r) ? line(r.map((c) => String(c ?? '-'))) : r);
  return out.join('\n');
}
