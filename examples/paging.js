// A model run under a memory budget smaller than its weights: only some layers are resident at
// a time, a prefetch thread loading the next ones. `stats()` shows what the pager did.
//   node examples/paging.js [--model path.gguf]
'use strict'

const { inspectModel, loadModel } = require('..')
const { modelPath } = require('./model-path')

const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`

async function main() {
  const file = await modelPath()
  // inspectModel reads the metadata only: the weights' size and the smallest workable budget.
  const info = await inspectModel(file)
  const budget = Math.max(info.minMemoryBudget, Math.floor(info.weightBytes / 2))
  console.log(`weights ${mb(info.weightBytes)}; budget ${mb(budget)} (the smallest possible is ${mb(info.minMemoryBudget)})`)

  const model = await loadModel(file, { memoryBudget: budget, paging: 'always' })
  let text = ''
  const started = performance.now()
  for await (const token of model.generate('The lighthouse keeper', { temperature: 0, maxTokens: 32 })) text += token.text
  const seconds = (performance.now() - started) / 1000
  console.log(`The lighthouse keeper${text}`)

  const s = model.stats()
  console.log(`paged: ${s.paged}, ${(32 / seconds).toFixed(1)} tok/s including the prompt`)
  console.log(`resident ${mb(s.residentBytes)} (peak ${mb(s.peakResidentBytes)}) of a ${mb(s.budgetBytes)} budget`)
  console.log(`${s.layerLoads} layer loads, ${s.layerHits} hits (${s.prefetchHits} prefetched in time), ${s.stallMs.toFixed(0)} ms waiting, ${mb(s.bytesRead)} read`)
  await model.dispose()
}

main().catch((err) => {
  console.error(`paging failed: ${err.code ? `[${err.code}] ` : ''}${err.message}`)
  process.exit(1)
})
