// Agreement with llama.cpp on Qwen2.5-Coder-1.5B-Instruct (model key 'qwen15'), run by `npm run test:models`
// (ava.models.config.mjs) when the model is in the cache; it is never downloaded here
// (node scripts/fetch-models qwen15). The checks are described in ../helpers/agreement.ts.
import test from 'ava'

import { perplexityText, registerAgreementTests, standardPrompts, tokenizerStrings } from '../helpers/agreement'

registerAgreementTests(test, {
  modelKey: 'qwen15',
  requireEnv: 'CHORD_LLM_MODEL_SUITE',
  prompts: standardPrompts('chatml', 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.'),
  tokenizerStrings: tokenizerStrings(),
  perplexityText: perplexityText(),
  window: 512,
  maxTokens: 2048,
})
