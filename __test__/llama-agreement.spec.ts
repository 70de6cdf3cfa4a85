// Agreement with llama.cpp (node-llama-cpp) on the real SmolLM2-135M-Instruct Q4_1 model:
// tokenization of tricky strings, and teacher-forced logits along llama.cpp's greedy
// continuation. llama.cpp's own logits move by 0.1-0.7 when only its batching changes, so the
// measure is the top token at confident steps and the top-20 logits within a tolerance.
import fs from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { loadModel, type Model } from '../lib/index.js'
import { openReference, type Reference } from './helpers/llama-ref'
import { smollm2Path } from './helpers/models'

const PROMPTS: Array<{ name: string; text: string; special: boolean }> = [
  {
    name: 'chat',
    special: true,
    text: '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France, and why is it famous?<|im_end|>\n<|im_start|>assistant\n',
  },
  { name: 'story', special: false, text: 'Once upon a time, in a small village at the edge of a great forest, there lived' },
  { name: 'code', special: false, text: 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n' },
  { name: 'facts', special: false, text: 'The three largest planets in the solar system are' },
  { name: 'numbers', special: false, text: 'Counting by sevens: 7, 14, 21, 28,' },
  { name: 'instruction', special: true, text: '<|im_start|>user\nList three tips for staying focused while studying.<|im_end|>\n<|im_start|>assistant\n' },
]
const STEPS = 64
const CONFIDENT_GAP = 1.0
const TOP20_TOLERANCE = 1.0

let model: Model
let ref: Reference

test.before(async () => {
  const file = await smollm2Path()
  model = await loadModel(file, { threads: 2, contextSize: 1024 })
  ref = await openReference(file, { threads: 2, contextSize: 1024 })
})

test.after.always(async () => {
  await model?.dispose()
  await ref?.dispose()
})

function argmax(row: Float32Array): number {
  let best = 0
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j
  return best
}

test('teacher-forced top tokens and top-20 logits agree with llama.cpp', async (t) => {
  const vocab = model.info.vocabSize
  let allSteps = 0
  let allMatches = 0
  const diffs: number[] = []
  for (const p of PROMPTS) {
    const prompt = ref.tokenize(p.text, p.special)
    t.deepEqual(model.tokenize(p.text, { special: p.special }), prompt, `${p.name}: tokenization`)
    const cont = await ref.greedyContinuation(prompt, STEPS)
    const ids = [...prompt, ...cont.tokens.slice(0, STEPS - 1)]
    const logits = await model.logits(ids, { from: prompt.length - 1 })
    t.is(logits.length, STEPS * vocab)

    let matches = 0
    let confident = 0
    const misses: string[] = []
    cont.steps.forEach((s, i) => {
      const ours = argmax(logits.subarray(i * vocab, (i + 1) * vocab))
      const gap = s.top1Logit - s.top2Logit
      if (ours === s.top1) matches++
      else misses.push(`step ${i}: ours ${ours} llama ${s.top1} (gap ${gap.toFixed(2)})`)
      if (gap >= CONFIDENT_GAP) {
        confident++
        t.is(ours, s.top1, `${p.name} step ${i}: llama.cpp is confident (gap ${gap.toFixed(2)})`)
      }
    })
    allSteps += cont.steps.length
    allMatches += matches

    const first = logits.subarray(0, vocab)
    const promptDiffs = cont.lastPromptTop20.map(({ id, logit }) => Math.abs(first[id] - logit))
    diffs.push(...promptDiffs)
    const maxDiff = Math.max(...promptDiffs)
    t.true(maxDiff <= TOP20_TOLERANCE, `${p.name}: top-20 logits differ by up to ${maxDiff.toFixed(3)}`)
    t.log(
      `${p.name}: ${matches}/${cont.steps.length} top tokens equal, ${confident} confident steps, ` +
        `top-20 max |diff| ${maxDiff.toFixed(3)} mean ${(promptDiffs.reduce((a, b) => a + b, 0) / promptDiffs.length).toFixed(3)}` +
        (misses.length ? `; misses: ${misses.join(', ')}` : ''),
    )
  }
  t.log(
    `overall: ${allMatches}/${allSteps} (${((100 * allMatches) / allSteps).toFixed(1)}%) top tokens equal; ` +
      `top-20 |diff| mean ${(diffs.reduce((a, b) => a + b, 0) / diffs.length).toFixed(3)} max ${Math.max(...diffs).toFixed(3)}`,
  )
  // The 95% bar is over all steps of all prompts; single prompts may dip where llama.cpp itself
  // is undecided (every miss must be at a step whose top-two gap is under CONFIDENT_GAP, checked above).
  t.true(allMatches / allSteps >= 0.95, `${allMatches}/${allSteps} steps agree`)
})

test('tokenize() matches llama.cpp on tricky strings, with and without special tokens', (t) => {
  const refs = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'src', 'tokenizer', 'testdata', 'smollm2-refs.json'), 'utf8'))
  const strings: string[] = refs.cases.map((c: { text: string }) => c.text)
  t.true(strings.length >= 40)
  let checked = 0
  for (const s of strings) {
    for (const special of [false, true]) {
      const expected = ref.tokenize(s, special)
      t.deepEqual(model.tokenize(s, { special, addBos: false }), expected, `${JSON.stringify(s)} special=${special}`)
      checked++
    }
    const ids = ref.tokenize(s, false)
    t.is(model.detokenize(ids), ref.detokenize(ids), `detokenize ${JSON.stringify(s)}`)
  }
  t.log(`${strings.length} strings, ${checked} tokenizations identical to llama.cpp`)
})
