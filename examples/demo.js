// Streams a chat reply from SmolLM2-135M-Instruct, fetching the model first if needed.
//   npm run demo -- [prompt] [--model path.gguf] [--threads N] [--max-tokens N] [--memory-budget 64MB]
'use strict'

const path = require('node:path')
const { loadModel } = require('..')
const { modelPath: defaultModel } = require('./model-path')

function parseArgs(argv) {
  const args = { prompt: 'Write a short story about a lighthouse keeper who finds a message in a bottle.', maxTokens: 200 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--model') args.model = argv[++i]
    else if (a === '--threads') args.threads = Number(argv[++i])
    else if (a === '--max-tokens') args.maxTokens = Number(argv[++i])
    else if (a === '--memory-budget') args.memoryBudget = argv[++i]
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run demo -- [prompt] [--model path.gguf] [--threads N] [--max-tokens N] [--memory-budget 64MB]')
      process.exit(0)
    } else args.prompt = a
  }
  return args
}

async function main() {
  const args = parseArgs(process.argv.slice(2))
  const modelPath = args.model ?? (await defaultModel([]))

  const t0 = performance.now()
  const model = await loadModel(modelPath, {
    threads: args.threads,
    memoryBudget: args.memoryBudget,
    onProgress: ({ loadedBytes, totalBytes }) =>
      process.stderr.write(`\rloading ${(loadedBytes / 1e6).toFixed(0)} / ${(totalBytes / 1e6).toFixed(0)} MB`),
  })
  const { info } = model
  process.stderr.write(
    `\rloaded ${info.name ?? path.basename(modelPath)} (${info.architecture}, ${(info.parameters / 1e6).toFixed(0)}M parameters, ` +
      `${info.layers} layers, ${info.threads} threads${info.paged ? ', paged' : ''}) in ${((performance.now() - t0) / 1000).toFixed(2)} s\n\n`,
  )

  // The prompt is rendered with the model's own chat template (tokenizer.chat_template).
  const chat = model.createChat({ systemPrompt: 'You are a helpful assistant.' })
  process.stdout.write(`> ${args.prompt}\n\n`)

  let n = 0
  let first
  for await (const token of chat.send(args.prompt, { maxTokens: args.maxTokens, temperature: 0.7, seed: 1, repeatPenalty: 1.1 })) {
    first ??= performance.now()
    n++
    process.stdout.write(token.text)
  }
  const secs = (performance.now() - (first ?? performance.now())) / 1000
  process.stderr.write(`\n\n${n} tokens, ${n > 1 ? ((n - 1) / secs).toFixed(1) : '-'} tok/s after the first\n`)
  const s = model.stats()
  const mb = (b) => `${(b / 1e6).toFixed(1)} MB`
  process.stderr.write(
    s.paged
      ? `weights paged: budget ${mb(s.budgetBytes)}, resident ${mb(s.residentBytes)} (peak ${mb(s.peakResidentBytes)}), ` +
          `${s.layerLoads} layer loads, ${s.layerHits} hits (${s.prefetchHits} prefetched), ${s.stallMs.toFixed(0)} ms stalled, ${mb(s.bytesRead)} read\n`
      : `weights resident: ${mb(s.residentBytes)}\n`,
  )
  chat.dispose()
  await model.dispose()
}

main().catch((err) => {
  console.error(`demo failed: ${err.code ? `[${err.code}] ` : ''}${err.message}`)
  process.exit(1)
})
