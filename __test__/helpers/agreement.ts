// Agreement of chord-llm with llama.cpp (node-llama-cpp, CPU) on a real model: the acceptance
// checks shared by __test__/llama-agreement.spec.ts (SmolLM2, CI) and __test__/models/*.spec.ts.
//
// The measure: llama.cpp's own logits move by 0.1-0.7 (up to 2 on one Gemma step) when only its
// batching changes, so bit-exact logits are not expected. What is checked, per model:
//  - prompts of different kinds (at least 8), teacher-forced along llama.cpp's 64-token greedy
//    continuation: our top token equals llama.cpp's at every step where llama.cpp's top two
//    logits differ by at least 1.0 ("confident" steps), and at >= 95% of all steps of all prompts;
//    prompt ids are llama.cpp's (plus BOS where it adds one) and model.tokenize() must give them;
//  - at the last prompt position, our logits for llama.cpp's top 20 tokens within 1.0 of its own;
//  - tokenize() identical on tricky strings (special false and true), and detokenize() of
//    llama.cpp's ids gives llama.cpp's text;
//  - perplexity (protocol: PerplexityOptions in lib/index.d.ts) within 1% of llama.cpp's, computed
//    from node-llama-cpp's logits under the same protocol (Reference.perplexity).
//
//   import test from 'ava'
//   registerAgreementTests(test, { modelKey: 'gemma3', prompts: standardPrompts('gemma'), ... })
//
// registerAgreementTests() loads the reference first and then our model, so that llama.cpp's side
// is computed and logged even when chord-llm cannot load or run the model yet.

import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

import type { ExecutionContext, TestFn } from 'ava'

import { loadModel, type Model } from '../../lib/index.js'
import { openReference, type Reference } from './llama-ref'

export const REPO_ROOT = path.join(__dirname, '..', '..')
export const DATA_DIR = path.join(REPO_ROOT, '__test__', 'data')

export type ModelKey = 'smollm2' | 'gemma3' | 'qwen05' | 'qwen15'

export interface AgreementPrompt {
  /** Short label for the logs, e.g. 'chat', 'code'. */
  name: string
  text: string
  /** Parse special-token text (chat templates). */
  special: boolean
}

export interface Thresholds {
  /** Greedy steps compared per prompt (default 64). */
  steps: number
  /** A step is confident when llama.cpp's top-two logit gap is at least this (default 1.0). */
  confidentGap: number
  /** Max |ours - llama.cpp| over llama.cpp's top 20 logits at the last prompt position (default 1.0). */
  top20Tolerance: number
  /** Share of all steps (all prompts) whose top token must agree (default 0.95). */
  minAgreement: number
  /** Max |ours / llama.cpp - 1| of the perplexity (default 0.01). */
  perplexityTolerance: number
  /** Minimum numbers of prompts and tokenizer strings (defaults 8 and 60). */
  minPrompts: number
  minStrings: number
}

export const DEFAULT_THRESHOLDS: Thresholds = {
  steps: 64,
  confidentGap: 1.0,
  top20Tolerance: 1.0,
  minAgreement: 0.95,
  perplexityTolerance: 0.01,
  minPrompts: 8,
  minStrings: 60,
}

export interface AgreementConfig extends Partial<Thresholds> {
  /** Model of scripts/models.mjs; or give `modelPath`. */
  modelKey?: ModelKey
  modelPath?: string
  /** With `modelKey`: download the model when it is missing (default false: skip, logging why). */
  fetch?: boolean
  /** Environment variable that must be set for the tests to run (else they log and pass). */
  requireEnv?: string
  prompts: AgreementPrompt[]
  tokenizerStrings: string[]
  perplexityText: string
  /** Perplexity window (default 512) and token budget (default 2048: 4 windows). */
  window?: number
  maxTokens?: number
  /** CPU threads for both engines (default 2). */
  threads?: number
  /** Context size of both engines (default 1024). */
  contextSize?: number
}

// ---------------------------------------------------------------------------------------------
// Data

/** The prompts' chat template: ChatML (SmolLM2, Qwen) or Gemma's turns. */
export type ChatTemplate = 'chatml' | 'gemma'

export function chatPrompt(template: ChatTemplate, user: string, system?: string): string {
  if (template === 'gemma') {
    // Gemma has no system role: its template prepends the system text to the first user turn.
    const content = system ? `${system}\n\n${user}` : user
    return `<start_of_turn>user\n${content}<end_of_turn>\n<start_of_turn>model\n`
  }
  const sys = system ? `<|im_start|>system\n${system}<|im_end|>\n` : ''
  return `${sys}<|im_start|>user\n${user}<|im_end|>\n<|im_start|>assistant\n`
}

/**
 * Ten prompts of different kinds: two chat prompts in the model's template (special tokens
 * parsed), then story, code, facts, list, arithmetic, multilingual, question and a JSON snippet.
 */
export function standardPrompts(template: ChatTemplate, systemPrompt = 'You are a helpful assistant.'): AgreementPrompt[] {
  return [
    {
      name: 'chat',
      special: true,
      text: chatPrompt(template, 'What is the capital of France, and why is it famous?', systemPrompt),
    },
    {
      name: 'chat-instruction',
      special: true,
      text: chatPrompt(template, 'Write a short Python function that checks whether a number is prime.'),
    },
    { name: 'story', special: false, text: 'Once upon a time, in a small village at the edge of a great forest, there lived' },
    {
      name: 'code',
      special: false,
      text: 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    },
    { name: 'facts', special: false, text: 'The three largest planets in the solar system are' },
    {
      name: 'list',
      special: false,
      text: 'Things to pack for a weekend camping trip:\n1. A tent\n2. A sleeping bag\n3.',
    },
    { name: 'arithmetic', special: false, text: 'Counting by sevens: 7, 14, 21, 28, 35,' },
    {
      name: 'multilingual',
      special: false,
      text: 'English: Good morning, how are you?\nFrench: Bonjour, comment allez-vous ?\nSpanish:',
    },
    { name: 'question', special: false, text: 'Question: Why is the sky blue?\nAnswer:' },
    {
      name: 'json',
      special: false,
      text: '{"name": "Ada Lovelace", "born": 1815, "known_for": [',
    },
  ]
}

/** __test__/data/perplexity.txt: an original essay (~16,600 characters, > 3,300 tokens in every model). */
export function perplexityText(): string {
  return fs.readFileSync(path.join(DATA_DIR, 'perplexity.txt'), 'utf8')
}

/**
 * Tricky strings: __test__/data/tokenizer-strings.json plus the case texts of every
 * src/tokenizer/testdata/*-refs.json present (deduplicated; any model can be compared on any text).
 */
export function tokenizerStrings(): string[] {
  const own: string[] = JSON.parse(fs.readFileSync(path.join(DATA_DIR, 'tokenizer-strings.json'), 'utf8')).strings
  const all = [...own]
  const dir = path.join(REPO_ROOT, 'src', 'tokenizer', 'testdata')
  let names: string[] = []
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('-refs.json'))
  } catch {
    // no reference files: the own list alone
  }
  for (const name of names.sort()) {
    try {
      const refs = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'))
      for (const c of refs.cases ?? []) if (typeof c?.text === 'string') all.push(c.text)
    } catch {
      // a file being rewritten by its generator: skip it this run
    }
  }
  return [...new Set(all)]
}

// ---------------------------------------------------------------------------------------------
// Model files

interface ModelsModule {
  ensureModel(key: string, opts?: { log?: (m: string) => void }): Promise<string>
  modelPath(key: string): string
}

function modelsModule(): Promise<ModelsModule> {
  // A computed specifier keeps TypeScript from demanding declarations for the .mjs.
  return import(pathToFileURL(path.join(REPO_ROOT, 'scripts', 'models.mjs')).href) as Promise<ModelsModule>
}

/** Path of the model if present (or fetched when `fetch`), else null with the reason. */
export async function resolveModel(config: Pick<AgreementConfig, 'modelKey' | 'modelPath' | 'fetch'>): Promise<{ file: string | null; reason?: string }> {
  if (config.modelPath) {
    return fs.existsSync(config.modelPath) ? { file: config.modelPath } : { file: null, reason: `${config.modelPath} is absent` }
  }
  if (!config.modelKey) throw new Error('agreement: give modelKey or modelPath')
  const models = await modelsModule()
  if (config.fetch) {
    return { file: await models.ensureModel(config.modelKey, { log: (m) => process.stderr.write(`${m}\n`) }) }
  }
  const file = models.modelPath(config.modelKey)
  return fs.existsSync(file)
    ? { file }
    : { file: null, reason: `${file} is absent (fetch it with: node scripts/fetch-models ${config.modelKey})` }
}

// ---------------------------------------------------------------------------------------------
// Checks (usable on their own with an open model and reference)

const f = (x: number, d = 3) => x.toFixed(d)
const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN)

function argmax(row: Float32Array): number {
  let best = 0
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j
  return best
}

/** Prompt ids exactly as llama.cpp feeds them: BOS where it adds one, then its tokenization. */
export function referencePromptIds(ref: Reference, p: AgreementPrompt): number[] {
  const bos = ref.shouldPrependBos && ref.bos != null ? [ref.bos] : []
  return [...bos, ...ref.tokenize(p.text, p.special)]
}

export interface PromptFigures {
  name: string
  promptTokens: number
  steps: number
  equal: number
  confident: number
  confidentMisses: number
  top20Max: number
  top20Mean: number
}

/**
 * llama.cpp's greedy continuations (always computed and logged), then, when `model` is given, our
 * teacher-forced logits along them: top tokens, confident steps, top-20 logits, prompt tokenization.
 */
export async function checkContinuations(
  t: ExecutionContext,
  ref: Reference,
  model: Model | null,
  prompts: AgreementPrompt[],
  th: Thresholds = DEFAULT_THRESHOLDS,
): Promise<PromptFigures[]> {
  t.true(prompts.length >= th.minPrompts, `${prompts.length} prompts, want at least ${th.minPrompts}`)
  t.true(
    prompts.some((p) => p.special),
    'one prompt at least is a chat prompt with special tokens',
  )
  const figures: PromptFigures[] = []
  for (const p of prompts) {
    const prompt = referencePromptIds(ref, p)
    const t0 = performance.now()
    const cont = await ref.greedyContinuation(prompt, th.steps)
    const refMs = performance.now() - t0
    const gaps = cont.steps.map((s) => s.top1Logit - s.top2Logit)
    const refConfident = gaps.filter((g) => g >= th.confidentGap).length
    if (!model) {
      t.log(
        `${p.name}: llama.cpp ${prompt.length} prompt tokens, ${cont.steps.length} steps in ${f(refMs / 1000, 1)} s, ` +
          `${refConfident} confident; continuation ${JSON.stringify(ref.detokenize(cont.tokens).slice(0, 80))}`,
      )
      continue
    }

    // Ours must tokenize the prompt to llama.cpp's ids (with its own BOS rule); the logits are
    // compared on llama.cpp's ids either way.
    t.deepEqual(model.tokenize(p.text, { special: p.special }), prompt, `${p.name}: tokenize(prompt) differs from llama.cpp`)

    const vocab = model.info.vocabSize
    const t1 = performance.now()
    const logits = await model.logits([...prompt, ...cont.tokens.slice(0, th.steps - 1)], { from: prompt.length - 1 })
    const oursMs = performance.now() - t1
    t.is(logits.length, th.steps * vocab, `${p.name}: logits length`)

    let equal = 0
    const misses: string[] = []
    const confidentMisses: string[] = []
    cont.steps.forEach((s, i) => {
      const row = logits.subarray(i * vocab, (i + 1) * vocab)
      const ours = argmax(row)
      if (ours === s.top1) {
        equal++
        return
      }
      const gap = gaps[i]
      const what =
        `step ${i}: ours ${ours} (${f(row[ours])}) llama.cpp ${s.top1} (${f(s.top1Logit)}, ours ${f(row[s.top1])}; ` +
        `its 2nd ${s.top2} ${f(s.top2Logit)}; gap ${f(gap, 2)})`
      misses.push(what)
      if (gap >= th.confidentGap) confidentMisses.push(what)
    })
    t.deepEqual(confidentMisses, [], `${p.name}: our top token differs at steps where llama.cpp is confident`)

    const first = logits.subarray(0, vocab)
    const diffs = cont.lastPromptTop20.map(({ id, logit }) => Math.abs(first[id] - logit))
    const top20Max = Math.max(...diffs)
    const top20Mean = mean(diffs)
    t.true(
      top20Max <= th.top20Tolerance,
      `${p.name}: llama.cpp's top-20 logits at the last prompt position differ by up to ${f(top20Max)} (> ${th.top20Tolerance})`,
    )
    figures.push({
      name: p.name,
      promptTokens: prompt.length,
      steps: cont.steps.length,
      equal,
      confident: refConfident,
      confidentMisses: confidentMisses.length,
      top20Max,
      top20Mean,
    })
    t.log(
      `${p.name}: ${equal}/${cont.steps.length} top tokens equal, ${refConfident} confident steps ` +
        `(${confidentMisses.length} missed); top-20 |diff| max ${f(top20Max)} mean ${f(top20Mean)}; ` +
        `${prompt.length} prompt tokens; llama.cpp ${f(refMs / 1000, 1)} s, ours ${f(oursMs / 1000, 1)} s` +
        (misses.length ? `\n    misses: ${misses.join('\n            ')}` : ''),
    )
  }
  if (model && figures.length) {
    const steps = figures.reduce((a, x) => a + x.steps, 0)
    const equal = figures.reduce((a, x) => a + x.equal, 0)
    const confident = figures.reduce((a, x) => a + x.confident, 0)
    const confidentMisses = figures.reduce((a, x) => a + x.confidentMisses, 0)
    t.log(
      `overall: ${equal}/${steps} (${f((100 * equal) / steps, 1)}%) top tokens equal; ` +
        `${confident - confidentMisses}/${confident} confident steps equal; ` +
        `top-20 |diff| max ${f(Math.max(...figures.map((x) => x.top20Max)))}, mean of prompt means ${f(mean(figures.map((x) => x.top20Mean)))}`,
    )
    // The bar is over all steps of all prompts; a single prompt may dip where llama.cpp itself is
    // undecided (misses at confident steps fail above).
    t.true(equal / steps >= th.minAgreement, `${equal}/${steps} steps agree, want ${100 * th.minAgreement}%`)
  }
  return figures
}

export interface TokenizerFigures {
  strings: number
  tokenizeChecked: number
  tokenizeEqual: number
  detokenizeChecked: number
  detokenizeEqual: number
}

/** tokenize() (special false and true, no BOS) and detokenize() of llama.cpp's ids against llama.cpp. */
export function checkTokenizer(t: ExecutionContext, ref: Reference, model: Model | null, strings: string[], th: Thresholds = DEFAULT_THRESHOLDS): TokenizerFigures {
  t.true(strings.length >= th.minStrings, `${strings.length} tokenizer strings, want at least ${th.minStrings}`)
  const figs: TokenizerFigures = { strings: strings.length, tokenizeChecked: 0, tokenizeEqual: 0, detokenizeChecked: 0, detokenizeEqual: 0 }
  const tokMisses: string[] = []
  const detokMisses: string[] = []
  let refTokens = 0
  for (const s of strings) {
    for (const special of [false, true]) {
      const expected = ref.tokenize(s, special)
      refTokens += expected.length
      if (!model) continue
      figs.tokenizeChecked++
      let ours: number[] | string
      try {
        ours = model.tokenize(s, { special, addBos: false })
      } catch (e) {
        ours = `error ${(e as Error).message}`
      }
      if (Array.isArray(ours) && ours.length === expected.length && ours.every((id, i) => id === expected[i])) figs.tokenizeEqual++
      else tokMisses.push(`${JSON.stringify(s).slice(0, 80)} special=${special}: ours ${JSON.stringify(ours).slice(0, 160)} llama.cpp ${JSON.stringify(expected).slice(0, 160)}`)
    }
    // Detokenize llama.cpp's ids of the plain tokenization, and of the special one with special rendering.
    for (const special of [false, true]) {
      const ids = ref.tokenize(s, special)
      const expected = ref.detokenize(ids, special)
      if (!model) continue
      figs.detokenizeChecked++
      let ours: string
      try {
        ours = model.detokenize(ids, { special })
      } catch (e) {
        ours = `error ${(e as Error).message}`
      }
      if (ours === expected) figs.detokenizeEqual++
      else detokMisses.push(`${JSON.stringify(ids).slice(0, 100)} special=${special}: ours ${JSON.stringify(ours).slice(0, 120)} llama.cpp ${JSON.stringify(expected).slice(0, 120)}`)
    }
  }
  if (!model) {
    t.log(`llama.cpp: ${strings.length} strings, ${refTokens} tokens (special false + true)`)
    return figs
  }
  t.log(
    `${strings.length} strings: tokenize ${figs.tokenizeEqual}/${figs.tokenizeChecked} identical to llama.cpp (special false and true); ` +
      `detokenize of llama.cpp's ids ${figs.detokenizeEqual}/${figs.detokenizeChecked} identical` +
      (tokMisses.length ? `\n  tokenize misses (${tokMisses.length}):\n    ${tokMisses.slice(0, 15).join('\n    ')}` : '') +
      (detokMisses.length ? `\n  detokenize misses (${detokMisses.length}):\n    ${detokMisses.slice(0, 15).join('\n    ')}` : ''),
  )
  t.is(tokMisses.length, 0, `tokenize() differs from llama.cpp on ${tokMisses.length} of ${figs.tokenizeChecked}`)
  t.is(detokMisses.length, 0, `detokenize() differs from llama.cpp on ${detokMisses.length} of ${figs.detokenizeChecked}`)
  return figs
}

export interface PerplexityFigures {
  reference: { perplexity: number; meanNll: number; tokens: number; seconds: number }
  ours?: { perplexity: number; meanNll: number; tokens: number; seconds: number }
  relativeDifference?: number
}

/** Perplexity of `text` under the shared protocol, ours against llama.cpp's. */
export async function checkPerplexity(
  t: ExecutionContext,
  ref: Reference,
  model: Model | null,
  text: string,
  opts: { window: number; maxTokens: number },
  th: Thresholds = DEFAULT_THRESHOLDS,
): Promise<PerplexityFigures> {
  const available = ref.tokenize(text, false).length
  t.true(available >= opts.maxTokens, `the perplexity text has ${available} tokens, want at least ${opts.maxTokens}`)
  const t0 = performance.now()
  const r = await ref.perplexity(text, opts)
  const reference = { perplexity: r.perplexity, meanNll: r.meanNll, tokens: r.tokens, seconds: (performance.now() - t0) / 1000 }
  const head = `window ${opts.window}, ${r.windows} windows of the first ${opts.maxTokens} of ${available} tokens`
  if (!model) {
    t.log(
      `perplexity (${head}): llama.cpp ${f(r.perplexity, 4)} (mean NLL ${f(r.meanNll, 5)}, ${r.tokens} scored tokens, ${f(reference.seconds, 1)} s)`,
    )
    return { reference }
  }
  const t1 = performance.now()
  const o = await model.perplexity(text, opts)
  const ours = { perplexity: o.perplexity, meanNll: o.meanNll, tokens: o.tokens, seconds: (performance.now() - t1) / 1000 }
  const relativeDifference = o.perplexity / r.perplexity - 1
  t.log(
    `perplexity (${head}): ours ${f(o.perplexity, 4)} llama.cpp ${f(r.perplexity, 4)}, ` +
      `relative difference ${f(100 * relativeDifference, 3)}%; mean NLL ours ${f(o.meanNll, 5)} llama.cpp ${f(r.meanNll, 5)}; ` +
      `${o.tokens}/${r.tokens} scored tokens; ours ${f(ours.seconds, 1)} s, llama.cpp ${f(reference.seconds, 1)} s`,
  )
  t.is(o.tokens, r.tokens, 'scored tokens')
  t.true(
    Math.abs(relativeDifference) <= th.perplexityTolerance,
    `perplexity ours ${f(o.perplexity, 4)} vs llama.cpp ${f(r.perplexity, 4)}: ${f(100 * relativeDifference, 3)}% (> ${100 * th.perplexityTolerance}%)`,
  )
  return { reference, ours, relativeDifference }
}

// ---------------------------------------------------------------------------------------------
// The whole suite

/**
 * Registers serial tests on `test` for one model: tokenizer, continuations, perplexity. When the
 * model file is absent (or `requireEnv` is not set) each test logs why and passes. When chord-llm
 * cannot load the model, llama.cpp's side is still computed and logged and the tests fail.
 */
export function registerAgreementTests(test: TestFn, config: AgreementConfig): void {
  const th: Thresholds = { ...DEFAULT_THRESHOLDS }
  for (const k of Object.keys(DEFAULT_THRESHOLDS) as Array<keyof Thresholds>) if (config[k] !== undefined) th[k] = config[k] as number
  const threads = config.threads ?? 2
  const contextSize = config.contextSize ?? 1024
  const window = config.window ?? 512
  const maxTokens = config.maxTokens ?? 2048
  const label = config.modelKey ?? (config.modelPath ? path.basename(config.modelPath) : '?')

  let skipReason: string | null = null
  let ref: Reference | null = null
  let model: Model | null = null
  let loadError: unknown = null

  test.before(async (t) => {
    if (config.requireEnv && !process.env[config.requireEnv]) {
      skipReason = `${config.requireEnv} is not set (run with: npm run test:models)`
      return
    }
    const { file, reason } = await resolveModel(config)
    if (!file) {
      skipReason = reason ?? 'model absent'
      return
    }
    let t0 = performance.now()
    ref = await openReference(file, { threads, contextSize })
    const refLoad = (performance.now() - t0) / 1000
    t0 = performance.now()
    try {
      model = await loadModel(file, { threads, contextSize })
    } catch (e) {
      loadError = e
    }
    const oursLoad = (performance.now() - t0) / 1000
    t.log(
      `${label}: ${file}; llama.cpp loaded in ${f(refLoad, 1)} s` +
        (model ? `, chord-llm in ${f(oursLoad, 1)} s (${JSON.stringify((model as Model).info.tensorTypes)})` : ''),
    )
  })

  test.after.always(async () => {
    await (model as Model | null)?.dispose()
    await (ref as Reference | null)?.dispose()
  })

  /** Common prologue: null when the test is to be skipped (logged and passed). */
  function session(t: ExecutionContext): Reference | null {
    if (skipReason) {
      t.log(`skipped: ${skipReason}`)
      t.pass()
      return null
    }
    if (!ref) throw new Error('the reference did not open')
    return ref
  }

  function ourModelOrFail(t: ExecutionContext): Model | null {
    if (model) return model
    const e = loadError as { code?: string; message?: string } | null
    t.fail(`chord-llm could not load ${label}: ${e?.code ? `[${e.code}] ` : ''}${e?.message ?? String(e)} (llama.cpp's side logged above)`)
    return null
  }

  test.serial(`${label}: tokenize() and detokenize() agree with llama.cpp on tricky strings`, (t) => {
    const r = session(t)
    if (!r) return
    if (!model) checkTokenizer(t, r, null, config.tokenizerStrings, th)
    const m = ourModelOrFail(t)
    if (m) checkTokenizer(t, r, m, config.tokenizerStrings, th)
  })

  test.serial(`${label}: teacher-forced top tokens and top-20 logits agree with llama.cpp`, async (t) => {
    const r = session(t)
    if (!r) return
    if (!model) await checkContinuations(t, r, null, config.prompts, th)
    const m = ourModelOrFail(t)
    if (m) await checkContinuations(t, r, m, config.prompts, th)
  })

  test.serial(`${label}: perplexity within ${100 * th.perplexityTolerance}% of llama.cpp's`, async (t) => {
    const r = session(t)
    if (!r) return
    const m = model as Model | null
    if (!m) await checkPerplexity(t, r, null, config.perplexityText, { window, maxTokens }, th)
    if (ourModelOrFail(t) && m) await checkPerplexity(t, r, m, config.perplexityText, { window, maxTokens }, th)
  })
}
