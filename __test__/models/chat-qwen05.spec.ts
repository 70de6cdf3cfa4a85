// Chat on Qwen2.5-Coder-0.5B-Instruct (model key 'qwen05'), run by `npm run test:models` when the model is in the
// cache: message text stays text, and an 8-turn chat replies as generate() does on the same
// prompts while evaluating only what is new (see ../helpers/chat.ts).
import test from 'ava'

import { registerChatTests } from '../helpers/chat'

registerChatTests(test, {
  modelKey: 'qwen05',
  file: 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf',
  requireEnv: 'CHORD_LLM_MODEL_SUITE',
})
