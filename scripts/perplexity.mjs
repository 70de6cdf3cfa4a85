#!/usr/bin/env node
// Prints a model's perplexity on a text file (protocol: PerplexityOptions in lib/index.d.ts).
//   npm run perplexity -- <model.gguf> <text-file> [--window 512] [--max-tokens N] [--threads N] [--json]
import fs from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { loadModel } = require('../lib/index.js')

function usage(code) {
  console.error('usage: npm run perplexity -- <model.gguf> <text-file> [--window 512] [--max-tokens N] [--threads N] [--json]')
  process.exit(code)
}

const args = process.argv.slice(2)
const positional = []
const opts = { window: 512 }
for (let i = 0; i < args.length; i++) {
  const a = args[i]
  const num = () => {
    const v = Number(args[++i])
    if (!Number.isInteger(v) || v < 1) usage(2)
    return v
  }
  if (a === '--window') opts.window = num()
  else if (a === '--max-tokens') opts.maxTokens = num()
  else if (a === '--threads') opts.threads = num()
  else if (a === '--json') opts.json = true
  else if (a === '--help' || a === '-h') usage(0)
  else if (a.startsWith('--')) usage(2)
  else positional.push(a)
}
if (positional.length !== 2) usage(2)
const [modelPath, textPath] = positional

try {
  const text = fs.readFileSync(textPath, 'utf8')
  const model = await loadModel(modelPath, { threads: opts.threads, contextSize: opts.window + 1 })
  const t0 = performance.now()
  const r = await model.perplexity(text, { window: opts.window, maxTokens: opts.maxTokens })
  const seconds = (performance.now() - t0) / 1000
  await model.dispose()
  if (opts.json) console.log(JSON.stringify({ ...r, window: opts.window, seconds }))
  else {
    console.log(`perplexity ${r.perplexity.toFixed(4)}  mean NLL ${r.meanNll.toFixed(5)}  over ${r.tokens} scored tokens`)
    console.log(`window ${opts.window}, ${seconds.toFixed(1)} s (${(r.tokens / seconds).toFixed(1)} tok/s)`)
  }
} catch (err) {
  console.error(`perplexity failed: ${err.code ? `[${err.code}] ` : ''}${err.message}`)
  process.exit(1)
}
