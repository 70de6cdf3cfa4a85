// The OpenAI-compatible server with the official `openai` client (npm install openai): the
// same client code can later point at llama.cpp's server or vLLM. From the command line,
// `npx chord-llm serve model.gguf` runs the same server.
//   node examples/server.mjs [--model path.gguf]
import OpenAI from 'openai'

import { createServer, loadModel } from 'chord-llm'
import modelPathModule from './model-path.js'

const model = await loadModel(await modelPathModule.modelPath())
const server = createServer(model, { modelId: 'local' })
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const baseURL = `http://127.0.0.1:${server.address().port}/v1`
console.log(`serving on ${baseURL}`)

const client = new OpenAI({ baseURL, apiKey: 'not-needed' })
const stream = await client.chat.completions.create({
  model: 'local',
  messages: [{ role: 'user', content: 'Give me three tips for writing clear code.' }],
  max_tokens: 64,
  stream: true,
})
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? '')
process.stdout.write('\n')

server.close()
await model.dispose()
