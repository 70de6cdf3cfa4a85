// Reference results from llama.cpp (through node-llama-cpp, CPU only) for the tests:
// tokenization, detokenization and a teacher-forced greedy continuation with the
// top logits at every step, to compare chord-llm against.
//
//   const ref = await openReference(modelPath, { threads: 2 });
//   const ids = ref.tokenize('Hello', false);
//   const { tokens, steps, lastPromptTop20 } = await ref.greedyContinuation(ids, 64);
//   const ppl = await ref.perplexity(text, { window: 512, maxTokens: 2048 }); // { perplexity, meanNll, tokens, windows }
//   await ref.dispose();
//
// Note: tokenize() never adds BOS (node-llama-cpp calls common_tokenize with add_special=false);
// prepend `ref.bos` yourself when `ref.shouldPrependBos` (e.g. Gemma 3).

import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
// Type-only static import; the runtime module is loaded with a dynamic import() of its resolved
// file URL because node-llama-cpp is ESM-only with top-level await, while this package is not
// "type": "module", so tsx compiles .ts files to CommonJS: a static import would become require()
// and fail, and a bare-specifier import() fails when tsx loads this file through a data: URL.
import type {
  Llama,
  LlamaContext,
  LlamaContextSequence,
  LlamaModel,
  Token,
  ControlledEvaluateInputItem,
} from 'node-llama-cpp';

export interface ReferenceOptions {
  /** CPU threads for evaluation (default 2). */
  threads?: number;
  /** Context size in tokens (default 1024); prompt + steps must fit. */
  contextSize?: number;
}

export interface TopLogit {
  id: number;
  logit: number;
}

export interface GreedyStep {
  /** llama.cpp's greedy choice (argmax of the logits; lowest id on ties). */
  top1: number;
  top1Logit: number;
  /** Best other token. */
  top2: number;
  top2Logit: number;
}

export interface GreedyContinuation {
  /** The continuation: tokens[i] === steps[i].top1. */
  tokens: number[];
  /** steps[i] is the prediction after prompt + tokens[0..i-1] (steps[0]: after the prompt alone). */
  steps: GreedyStep[];
  /** llama.cpp's top-20 logits at the last prompt position (the distribution of steps[0]), best first. */
  lastPromptTop20: TopLogit[];
}

export interface PerplexityOptions {
  /** Tokens per window (default 512). BOS, where the model adds it, comes on top: window + 1 must fit the context. */
  window?: number;
  /** Use at most this many tokens of the text (default: all). */
  maxTokens?: number;
  /**
   * How the log-softmax over the vocabulary is obtained (default 'native'):
   * - 'native': node-llama-cpp's sampler pass returns, per position, the target's logit, the greedy
   *   (max) logit and `totalLogitWeight` = sum exp(logit - max) over the whole vocabulary (computed
   *   in C++ in float32); log softmax[target] = target - max - ln(totalLogitWeight). O(vocab) per
   *   position, no full-vocabulary copies to JS. The float32 sum drops the tiniest terms, so the
   *   mean NLL comes out slightly low: by 1.3e-4 (SmolLM2), 1.9e-4 (Gemma 3), 5.6e-4 (Qwen2.5-0.5B)
   *   nats against 'fullLogits' on 126-189 tokens of __test__/data/perplexity.txt, i.e. a relative
   *   perplexity error under 0.06%.
   * - 'fullLogits': copies every position's full logit row to JS and does a float64 logsumexp.
   *   Slow (a Map of the whole vocabulary per position); meant to cross-check 'native' on short texts.
   */
  method?: 'native' | 'fullLogits';
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood per scored token, in nats. */
  meanNll: number;
  /** How many tokens were scored. */
  tokens: number;
  /** How many windows were evaluated. */
  windows: number;
}

export interface Reference {
  readonly model: LlamaModel;
  /** BOS token id, or null. */
  readonly bos: number | null;
  /** Whether llama.cpp would prepend BOS for this model (GGUF add_bos_token). */
  readonly shouldPrependBos: boolean;
  /** Tokenize without adding BOS/EOS. `special`: parse special-token text like `<|im_start|>` into special tokens. */
  tokenize(text: string, special: boolean): number[];
  /** `special` (default false): render special tokens as their text. */
  detokenize(ids: readonly number[], special?: boolean): string;
  /** Teacher-forced greedy continuation of `promptIds` for `steps` tokens (EOS is not a stop). Fresh state per call. */
  greedyContinuation(promptIds: readonly number[], steps?: number): Promise<GreedyContinuation>;
  /**
   * llama.cpp's perplexity of `text` under chord-llm's protocol (PerplexityOptions in lib/index.d.ts):
   * tokenize without BOS and without parsing special tokens; keep the first `maxTokens` tokens, cut
   * to whole windows; evaluate each window from a fresh state (one controlledEvaluate call, logits at
   * every position), with BOS in front when `shouldPrependBos`; score every token but the first of
   * each window with NLL = -log softmax(logits at the previous position)[token]; perplexity = exp(mean NLL).
   */
  perplexity(text: string, opts?: PerplexityOptions): Promise<PerplexityResult>;
  dispose(): Promise<void>;
}

let llamaPromise: Promise<Llama> | null = null;

function nodeLlamaCppUrl(): string {
  const bases = [
    typeof __filename === 'string' && path.isAbsolute(__filename) ? __filename : null,
    path.join(process.cwd(), 'package.json'),
  ];
  let lastError: unknown;
  for (const base of bases) {
    if (!base) continue;
    try {
      return pathToFileURL(createRequire(base).resolve('node-llama-cpp')).href;
    } catch (e) {
      lastError = e;
    }
  }
  throw new Error(`node-llama-cpp is not installed (npm install): ${String(lastError)}`);
}

/** One llama.cpp binding per process (CPU, prebuilt binary only: never builds or downloads). */
export function getReferenceLlama(): Promise<Llama> {
  if (!llamaPromise) {
    const url = nodeLlamaCppUrl();
    llamaPromise = (import(url) as Promise<typeof import('node-llama-cpp')>).then(({ getLlama, LlamaLogLevel }) =>
      getLlama({
        gpu: false,
        build: 'never',
        skipDownload: true,
        maxThreads: 0, // no cap: each context's `threads` is then used exactly
        logLevel: LlamaLogLevel.error,
      }),
    );
    // Allow a retry after a failure instead of caching the rejection forever.
    llamaPromise.catch(() => {
      llamaPromise = null;
    });
  }
  return llamaPromise;
}

type OutputItem = Awaited<ReturnType<LlamaContextSequence['controlledEvaluate']>>[number];

function nextOf(item: OutputItem, what: string): { token: number; top: TopLogit[] } {
  const next = item?.next;
  if (next == null || next.token == null || next.logits == null) {
    throw new Error(`node-llama-cpp returned no token/logits for ${what}`);
  }
  const top: TopLogit[] = [];
  for (const [id, logit] of next.logits) top.push({ id, logit });
  return { token: next.token, top };
}

function stepFrom(token: number, top: TopLogit[]): GreedyStep {
  const first = top.find((t) => t.id === token);
  const other = top.find((t) => t.id !== token);
  if (!first || !other) throw new Error('expected at least 2 logits with the selected token among them');
  return { top1: token, top1Logit: first.logit, top2: other.id, top2Logit: other.logit };
}

/** Ask for llama.cpp's greedy token and the top-k raw logits after `token` (no full-vocab copies). */
function withNext(token: number, topK: number): ControlledEvaluateInputItem {
  return [
    token as Token,
    {
      generateNext: {
        token: true, // temperature defaults to 0 => greedy sampler only, logits untouched
        logits: { filter: { tokens: [], includeTop: topK, includeSelected: true } },
      },
    },
  ];
}

export async function openReference(modelPath: string, opts: ReferenceOptions = {}): Promise<Reference> {
  const threads = opts.threads ?? 2;
  const contextSize = opts.contextSize ?? 1024;
  const llama = await getReferenceLlama();
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  let context: LlamaContext;
  try {
    // Plain defaults for everything else (batchSize = min(512, contextSize), one sequence).
    context = await model.createContext({ contextSize, threads: { ideal: threads, min: threads } });
  } catch (e) {
    await model.dispose();
    throw e;
  }
  const sequence = context.getSequence();
  let busy = false;

  async function greedyContinuation(promptIds: readonly number[], steps = 64): Promise<GreedyContinuation> {
    if (promptIds.length === 0) throw new Error('greedyContinuation: empty prompt');
    if (steps < 1) throw new Error('greedyContinuation: steps must be >= 1');
    if (promptIds.length + steps > sequence.contextSize) {
      throw new Error(
        `greedyContinuation: prompt (${promptIds.length}) + steps (${steps}) exceed the context size ` +
          `(${sequence.contextSize}); pass a larger contextSize to openReference()`,
      );
    }
    if (busy) throw new Error('greedyContinuation: calls on one reference must not overlap');
    busy = true;
    try {
      await sequence.clearHistory(); // fresh KV state for every call
      if (sequence.nextTokenIndex !== 0) throw new Error('could not clear the reference context');

      const input: ControlledEvaluateInputItem[] = promptIds.map((t) => t as Token);
      input[input.length - 1] = withNext(promptIds[promptIds.length - 1], 20);
      const res = await sequence.controlledEvaluate(input);
      const first = nextOf(res[input.length - 1], 'the last prompt token');
      const lastPromptTop20 = first.top.slice(0, 20);

      const tokens: number[] = [first.token];
      const out: GreedyStep[] = [stepFrom(first.token, first.top)];
      while (tokens.length < steps) {
        const prev = tokens[tokens.length - 1];
        const r = await sequence.controlledEvaluate([withNext(prev, 2)]);
        const n = nextOf(r[0], `step ${tokens.length}`);
        out.push(stepFrom(n.token, n.top));
        tokens.push(n.token);
      }
      return { tokens, steps: out, lastPromptTop20 };
    } finally {
      busy = false;
    }
  }

  async function perplexity(text: string, popts: PerplexityOptions = {}): Promise<PerplexityResult> {
    const window = popts.window ?? 512;
    const method = popts.method ?? 'native';
    if (!Number.isInteger(window) || window < 2) throw new Error('perplexity: window must be an integer >= 2');
    const all = model.tokenize(text, false).map(Number);
    const n = popts.maxTokens == null ? all.length : Math.min(popts.maxTokens, all.length);
    const windows = Math.floor(n / window);
    if (windows < 1) throw new Error(`perplexity: the text has ${n} usable tokens, fewer than one window (${window})`);
    const prefix = model.tokens.shouldPrependBosToken && model.tokens.bos != null ? [Number(model.tokens.bos)] : [];
    if (prefix.length + window > sequence.contextSize) {
      throw new Error(
        `perplexity: window (${window}) + BOS exceeds the context size (${sequence.contextSize}); ` +
          'pass a larger contextSize to openReference()',
      );
    }
    if (busy) throw new Error('perplexity: calls on one reference must not overlap');
    busy = true;
    try {
      let sum = 0;
      let count = 0;
      for (let w = 0; w < windows; w++) {
        await sequence.clearHistory(); // fresh state per window
        if (sequence.nextTokenIndex !== 0) throw new Error('could not clear the reference context');
        const ids = [...prefix, ...all.slice(w * window, (w + 1) * window)];
        const first = prefix.length; // position of the window's first text token (not scored)
        const input: ControlledEvaluateInputItem[] = ids.map((t, j) => {
          if (j < first || j === ids.length - 1) return t as Token;
          const target = ids[j + 1] as Token;
          return [
            t as Token,
            {
              generateNext:
                method === 'native'
                  ? {
                      // Greedy (temperature 0): the chain holds only the greedy sampler, so the
                      // candidates are the raw logits of the whole vocabulary. The selected token is
                      // the argmax, its logit the max; totalLogitWeight = sum exp(logit - max).
                      token: true,
                      totalLogitWeight: true,
                      logits: { filter: { tokens: [target], includeSelected: true } },
                    }
                  : { logits: true },
            },
          ];
        });
        const res = await sequence.controlledEvaluate(input);
        for (let j = first; j < ids.length - 1; j++) {
          const target = ids[j + 1];
          const next = res[j]?.next;
          let nll: number;
          if (method === 'native') {
            const logits = next?.logits;
            const total = next?.totalLogitWeight;
            const top = next?.token;
            if (logits == null || total == null || top == null) throw new Error(`perplexity: no logits at position ${j}`);
            const targetLogit = logits.get(target as Token);
            const maxLogit = logits.get(top);
            if (targetLogit == null || maxLogit == null) throw new Error(`perplexity: missing logits at position ${j}`);
            nll = maxLogit + Math.log(total) - targetLogit;
          } else {
            const logits = next?.logits;
            if (logits == null) throw new Error(`perplexity: no logits at position ${j}`);
            let max = -Infinity;
            for (const v of logits.values()) if (v > max) max = v;
            let s = 0;
            for (const v of logits.values()) s += Math.exp(v - max);
            const targetLogit = logits.get(target as Token);
            if (targetLogit == null) throw new Error(`perplexity: missing logit at position ${j}`);
            nll = max + Math.log(s) - targetLogit;
          }
          sum += nll;
          count++;
        }
      }
      const meanNll = sum / count;
      return { perplexity: Math.exp(meanNll), meanNll, tokens: count, windows };
    } finally {
      busy = false;
    }
  }

  return {
    model,
    bos: model.tokens.bos,
    shouldPrependBos: model.tokens.shouldPrependBosToken,
    tokenize: (text, special) => model.tokenize(text, special).map(Number),
    detokenize: (ids, special = false) => model.detokenize(ids as Token[], special),
    greedyContinuation,
    perplexity,
    async dispose() {
      if (!context.disposed) await context.dispose();
      if (!model.disposed) await model.dispose();
    },
  };
}
