// Agreement with llama.cpp on Gemma-3-270M (model key 'gemma3'), run by `npm run test:models`
// (ava.models.config.mjs) when the model is in the cache; it is never downloaded here
// (node scripts/fetch-models gemma3). The checks are described in ../helpers/agreement.ts.
import test from 'ava'

import { perplexityText, registerAgreementTests, standardPrompts, tokenizerStrings } from '../helpers/agreement'

registerAgreementTests(test, {
  modelKey: 'gemma3',
  requireEnv: 'CHORD_LLM_MODEL_SUITE',
  prompts: standardPrompts('gemma'),
  tokenizerStrings: tokenizerStrings(),
  perplexityText: perplexityText(),
  window: 512,
  maxTokens: 2048,
})
