// Streaming with a way out: an AbortSignal stops a generation within one token (a "stop"
// button), and leaving the loop with `break` stops it too (enough text, a UI closed).
//   node examples/stream-abort.js [--model path.gguf]
'use strict'

const { loadModel } = require('..')
const { modelPath } = require('./model-path')

async function main() {
  const model = await loadModel(await modelPath())

  // 1. Abort after half a second, wherever the generation is.
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), 500)
  let tokens = 0
  try {
    for await (const token of model.generate('Once upon a time', { signal: controller.signal, ignoreEos: true, maxTokens: 2000 })) {
      process.stdout.write(token.text)
      tokens++
    }
  } catch (err) {
    if (err.name !== 'AbortError') throw err
    process.stdout.write(`\n[aborted after ${tokens} tokens]\n`)
  } finally {
    clearTimeout(timer)
  }

  // 2. Break out of the loop once the first sentence is complete.
  let text = ''
  for await (const token of model.generate('The three primary colours are', { temperature: 0, maxTokens: 200 })) {
    text += token.text
    if (/[.!?]/.test(token.text)) break
  }
  process.stdout.write(`first sentence:${text}\n`)

  await model.dispose()
}

main().catch((err) => {
  console.error(`stream-abort failed: ${err.code ? `[${err.code}] ` : ''}${err.message}`)
  process.exit(1)
})
