// Agreement with llama.cpp (node-llama-cpp) on the real SmolLM2-135M-Instruct Q4_1 model, fetched
// into the model cache on first use: tokenization of tricky strings, teacher-forced logits along
// llama.cpp's greedy continuations of 10 prompts, and perplexity. The checks and their measure are
// described in ./helpers/agreement.ts; the larger models run the same suite with `npm run test:models`.
import test from 'ava'

import { perplexityText, registerAgreementTests, resolveModel, standardPrompts, tokenizerStrings } from './helpers/agreement'
import { openReference } from './helpers/llama-ref'

registerAgreementTests(test, {
  modelKey: 'smollm2',
  fetch: true,
  prompts: standardPrompts('chatml'),
  tokenizerStrings: tokenizerStrings(),
  perplexityText: perplexityText(),
  window: 512,
  maxTokens: 2048,
})

// The reference perplexity takes log Z from node-llama-cpp's native pass (float32 sum of
// exp(logit - max) over the vocabulary); check it against a float64 logsumexp of the full logits.
test.serial('reference perplexity: the native log-softmax equals a float64 logsumexp of the full logits', async (t) => {
  const { file } = await resolveModel({ modelKey: 'smollm2', fetch: true })
  const ref = await openReference(file!, { threads: 2, contextSize: 256 })
  try {
    const opts = { window: 64, maxTokens: 128 }
    const native = await ref.perplexity(perplexityText(), opts)
    const full = await ref.perplexity(perplexityText(), { ...opts, method: 'fullLogits' })
    t.log(`native ${native.meanNll.toFixed(6)} full ${full.meanNll.toFixed(6)} mean NLL over ${full.tokens} tokens`)
    t.is(native.tokens, 126)
    t.is(full.tokens, 126)
    // Measured 1.3e-4 (SmolLM2), 1.9e-4 (Gemma 3), 5.6e-4 (Qwen2.5): the float32 sum drops the tiniest terms.
    t.true(Math.abs(native.meanNll - full.meanNll) < 1e-3)
  } finally {
    await ref.dispose()
  }
})
