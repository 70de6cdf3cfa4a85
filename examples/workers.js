// chord-llm in worker_threads: each worker loads its own model and generates, at the same time
// as the others; the addon is context-aware, and each worker exits cleanly when done.
//   node examples/workers.js [--model path.gguf]
'use strict'

const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads')
const { loadModel } = require('..')
const { modelPath } = require('./model-path')

const PROMPTS = ['The ocean is', 'Mountains are']

async function work({ file, prompt }) {
  const model = await loadModel(file, { threads: 1 })
  let text = ''
  for await (const token of model.generate(prompt, { temperature: 0, maxTokens: 16 })) text += token.text
  await model.dispose()
  parentPort.postMessage({ prompt, text })
}

async function main() {
  const file = await modelPath()
  const results = await Promise.all(
    PROMPTS.map(
      (prompt) =>
        new Promise((resolve, reject) => {
          const worker = new Worker(__filename, { workerData: { file, prompt } })
          let result
          worker.on('message', (m) => (result = m))
          worker.on('error', reject)
          worker.on('exit', (code) => (code === 0 ? resolve(result) : reject(new Error(`worker exited with ${code}`))))
        }),
    ),
  )
  for (const { prompt, text } of results) console.log(`[worker] ${prompt}${text}`)
}

const run = isMainThread ? main() : work(workerData)
run.catch((err) => {
  console.error(`workers failed: ${err.code ? `[${err.code}] ` : ''}${err.message}`)
  process.exit(1)
})
