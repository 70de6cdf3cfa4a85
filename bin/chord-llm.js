#!/usr/bin/env node
// The chord-llm command line: chat, run, info, bench, perplexity and serve over a GGUF file.
// Data goes to stdout (as JSON with --json); progress, timings and errors go to stderr.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')
const { parseArgs } = require('node:util')
const { loadModel, inspectModel, createServer } = require('../lib/index.js')

const VERSION = require('../package.json').version

const USAGE = `chord-llm ${VERSION}: run GGUF language models on the CPU

usage:
  chord-llm chat <model.gguf> [--system TEXT]        interactive chat (/reset, /exit)
  chord-llm run <model.gguf> "prompt" [--chat]       one completion to stdout
  chord-llm info <model.gguf> [--json]               what the file holds (reads no weights)
  chord-llm bench <model.gguf> [--prompt-tokens 128] [--tokens 128] [--repeat 3] [--json]
  chord-llm perplexity <model.gguf> <text-file> [--window N] [--max-tokens N] [--json]
  chord-llm serve <model.gguf> [--port 8080] [--host 127.0.0.1] [--model-id ID]

options for every command that loads a model:
  --memory-budget SIZE   bytes of weights kept resident, e.g. 512MB; larger models are paged
  --threads N            compute threads (default: every core)
  --context-size N       positions per sequence (default: min(4096, trained context))
  --max-sequences N      sequences decoded together (default 8)
generation: --max-tokens N, --temperature T, --top-k K, --top-p P, --min-p P, --seed S
  --template FILE        a Jinja chat template for models that have none (chat, run --chat, serve)
  --json                 print data as JSON (info, run, bench, perplexity)
  --quiet                no progress or timings on stderr`

const OPTIONS = {
  'memory-budget': { type: 'string' },
  threads: { type: 'string' },
  'context-size': { type: 'string' },
  'max-sequences': { type: 'string' },
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  seed: { type: 'string' },
  system: { type: 'string' },
  template: { type: 'string' },
  chat: { type: 'boolean' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean' },
  'prompt-tokens': { type: 'string' },
  tokens: { type: 'string' },
  repeat: { type: 'string' },
  window: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  'model-id': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
}

/** A usage mistake: printed with a pointer to --help, exit code 2. */
class UsageError extends Error {}

function number(args, name, { integer = true, min = 0 } = {}) {
  const raw = args[name]
  if (raw === undefined) return undefined
  const v = Number(raw)
  if (raw.trim() === '' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min) {
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got '${raw}'`)
  }
  return v
}

function formatBytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000
    i++
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`
}

function formatCount(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`
  return String(n)
}

function loadOptions(args) {
  return {
    memoryBudget: args['memory-budget'],
    threads: number(args, 'threads', { min: 1 }),
    contextSize: number(args, 'context-size', { min: 1 }),
    maxSequences: number(args, 'max-sequences', { min: 1 }),
  }
}

function generateOptions(args) {
  return {
    maxTokens: number(args, 'max-tokens', { min: 0 }),
    temperature: number(args, 'temperature', { integer: false }),
    topK: number(args, 'top-k'),
    topP: number(args, 'top-p', { integer: false }),
    minP: number(args, 'min-p', { integer: false }),
    seed: number(args, 'seed'),
  }
}

/** Loads the model with a progress bar on stderr (a TTY) or one line when done. */
async function load(file, args, extra = {}) {
  const quiet = args.quiet
  const tty = process.stderr.isTTY
  const started = performance.now()
  let drawn = -1
  const onProgress = ({ loadedBytes, totalBytes }) => {
    if (quiet || !tty || totalBytes === 0) return
    const fraction = loadedBytes / totalBytes
    const width = 30
    const filled = Math.round(fraction * width)
    if (filled === drawn && loadedBytes !== totalBytes) return
    drawn = filled
    process.stderr.write(`\rloading [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% of ${formatBytes(totalBytes)}`)
  }
  const model = await loadModel(file, { ...loadOptions(args), ...extra, onProgress })
  if (!quiet) {
    const { info } = model
    const seconds = ((performance.now() - started) / 1000).toFixed(2)
    process.stderr.write(
      `${tty ? '\r\x1b[K' : ''}loaded ${info.name ?? path.basename(file)} (${info.architecture}, ${formatCount(info.parameters)} parameters, ` +
        `${info.threads} threads${info.paged ? ', paged' : ''}) in ${seconds} s\n`,
    )
  }
  return model
}

function readTemplate(args) {
  if (args.template === undefined) return undefined
  try {
    return fs.readFileSync(args.template, 'utf8')
  } catch (err) {
    throw new UsageError(`cannot read --template ${args.template}: ${err.message}`)
  }
}

/** Streams tokens to stdout; returns the text, the end and the timings. */
async function streamTokens(tokens, { write = true } = {}) {
  const started = performance.now()
  let first
  let text = ''
  for (;;) {
    const item = await tokens.next()
    if (item.done) {
      const ended = performance.now()
      const end = item.value ?? { reason: 'aborted', tokens: 0 }
      const decodeSeconds = first !== undefined && end.tokens > 1 ? (ended - first) / 1000 : 0
      return {
        text,
        reason: end.reason,
        tokens: end.tokens,
        firstTokenMs: first === undefined ? null : first - started,
        tokensPerSecond: decodeSeconds > 0 ? (end.tokens - 1) / decodeSeconds : null,
      }
    }
    if (first === undefined) first = performance.now()
    text += item.value.text
    if (write) process.stdout.write(item.value.text)
  }
}

function timings(result) {
  const parts = [`${result.tokens} tokens`]
  if (result.firstTokenMs !== null) parts.push(`first after ${result.firstTokenMs.toFixed(0)} ms`)
  if (result.tokensPerSecond !== null) parts.push(`${result.tokensPerSecond.toFixed(1)} tok/s`)
  parts.push(`ended by ${result.reason}`)
  return `[${parts.join(', ')}]`
}

async function info(file, args) {
  const base = loadOptions(args)
  const i = await inspectModel(file, base)
  const perThousand = (i.kvCacheBytes / i.contextSize) * 1000
  let perThousandQ8 = null
  try {
    const q = await inspectModel(file, { ...base, kvCacheType: 'q8_0' })
    perThousandQ8 = (q.kvCacheBytes / q.contextSize) * 1000
  } catch {
    // Some head sizes have no q8_0 cache; the f16 figure stands alone.
  }
  if (args.json) {
    const { chatTemplate, ...rest } = i
    const out = { file: path.resolve(file), ...rest, hasChatTemplate: chatTemplate !== null, kvBytesPer1kTokens: perThousand, kvBytesPer1kTokensQ8: perThousandQ8 }
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
    return
  }
  const types = Object.entries(i.tensorTypes)
    .map(([t, n]) => `${t} x${n}`)
    .join(', ')
  const rows = [
    ['file', `${path.basename(file)} (${formatBytes(i.fileBytes)})`],
    ['name', i.name ?? '(none)'],
    ['architecture', i.architecture],
    ['parameters', formatCount(i.parameters)],
    ['layers', String(i.layers)],
    ['tensor types', types],
    ['weights', formatBytes(i.weightBytes)],
    ['vocabulary', `${i.vocabSize} tokens`],
    ['context length', `${i.contextLength} trained, ${i.contextSize} by default`],
    ['chat template', i.chatTemplate === null ? 'none' : `yes (${formatBytes(Buffer.byteLength(i.chatTemplate))})`],
    ['KV cache', `${formatBytes(perThousand)} per 1k tokens (f16)${perThousandQ8 === null ? '' : `, ${formatBytes(perThousandQ8)} with q8_0`}`],
    ['min budget', `${formatBytes(i.minMemoryBudget)} (the smallest --memory-budget it can be paged in)`],
  ]
  const width = Math.max(...rows.map(([k]) => k.length))
  process.stdout.write(rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n')
}

async function run(file, prompt, args) {
  if (prompt === undefined) throw new UsageError('run needs a prompt: chord-llm run <model.gguf> "prompt"')
  const model = await load(file, args)
  const abort = new AbortController()
  process.once('SIGINT', () => abort.abort())
  try {
    const options = { ...generateOptions(args), signal: abort.signal }
    let tokens
    if (args.chat) {
      const messages = [...(args.system ? [{ role: 'system', content: args.system }] : []), { role: 'user', content: prompt }]
      tokens = model.generate(model.tokenizeChat(messages, { template: readTemplate(args) }), options)
    } else {
      tokens = model.generate(prompt, options)
    }
    const result = await streamTokens(tokens, { write: !args.json })
    if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`)
    else {
      process.stdout.write('\n')
      if (!args.quiet) process.stderr.write(`${timings(result)}\n`)
    }
  } catch (err) {
    if (err.code !== 'ABORT_ERR') throw err
    process.stdout.write('\n')
  } finally {
    await model.dispose()
  }
}

async function chat(file, args) {
  const model = await load(file, args)
  const chatSession = model.createChat({ systemPrompt: args.system, template: readTemplate(args) })
  const interactive = process.stdin.isTTY && process.stdout.isTTY
  const rl = readline.createInterface({ input: process.stdin, output: interactive ? process.stdout : undefined, terminal: interactive })
  let reply = null
  // Ctrl+C stops the reply being written; at the prompt it quits.
  rl.on('SIGINT', () => {
    if (reply) reply.abort()
    else rl.close()
  })
  if (interactive) process.stderr.write('type a message; /reset starts over, /exit quits\n')
  rl.setPrompt('> ')
  const prompt = () => {
    if (interactive) rl.prompt()
  }
  prompt()
  try {
    for await (const raw of rl) {
      const line = raw.trim()
      if (line === '/exit' || line === '/quit') break
      if (line === '/reset') {
        chatSession.reset()
        process.stdout.write('(conversation reset)\n')
        prompt()
        continue
      }
      if (line === '') {
        prompt()
        continue
      }
      reply = new AbortController()
      try {
        const result = await streamTokens(chatSession.send(line, { ...generateOptions(args), signal: reply.signal }))
        process.stdout.write('\n')
        if (!args.quiet) process.stderr.write(`${timings(result)}\n`)
      } catch (err) {
        if (err.code !== 'ABORT_ERR') throw err
        process.stdout.write('\n(stopped)\n')
      } finally {
        reply = null
      }
      prompt()
    }
  } finally {
    rl.close()
    chatSession.dispose()
    await model.dispose()
  }
}

const BENCH_TEXT =
  'The lighthouse stood at the edge of the island, and every night its keeper climbed the stairs to light the lamp. ' +
  'Ships passing in the dark relied on its beam to find their way between the rocks, and the keeper wrote each one into a log. '

function median(values) {
  const s = [...values].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function bench(file, args) {
  const promptTokens = number(args, 'prompt-tokens', { min: 1 }) ?? 128
  const genTokens = number(args, 'tokens', { min: 2 }) ?? 128
  const repeat = number(args, 'repeat', { min: 1 }) ?? 3
  const loadStarted = performance.now()
  const model = await load(file, args)
  const loadMs = performance.now() - loadStarted
  try {
    let ids = model.tokenize(BENCH_TEXT)
    while (ids.length < promptTokens) ids = ids.concat(model.tokenize(BENCH_TEXT, { addBos: false }))
    ids = ids.slice(0, promptTokens)
    const prefill = []
    const decode = []
    for (let r = 0; r < repeat; r++) {
      const result = await streamTokens(model.generate(ids, { maxTokens: genTokens, temperature: 0, ignoreEos: true }), { write: false })
      prefill.push((promptTokens / result.firstTokenMs) * 1000)
      decode.push(result.tokensPerSecond)
      if (!args.quiet && !args.json) {
        process.stderr.write(`run ${r + 1}/${repeat}: prefill ${prefill[r].toFixed(1)} tok/s, decode ${decode[r].toFixed(1)} tok/s\n`)
      }
    }
    const out = {
      model: path.basename(file),
      threads: model.info.threads,
      paged: model.info.paged,
      loadMs: Math.round(loadMs),
      promptTokens,
      generatedTokens: genTokens,
      prefillTokensPerSecond: median(prefill),
      decodeTokensPerSecond: median(decode),
      runs: repeat,
    }
    if (args.json) process.stdout.write(`${JSON.stringify(out)}\n`)
    else {
      process.stdout.write(
        `${out.model}: prefill ${out.prefillTokensPerSecond.toFixed(1)} tok/s (${promptTokens}-token prompt), ` +
          `decode ${out.decodeTokensPerSecond.toFixed(1)} tok/s (${genTokens} tokens), median of ${repeat}, ` +
          `${out.threads} threads${out.paged ? ', paged' : ''}\n`,
      )
    }
  } finally {
    await model.dispose()
  }
}

async function perplexity(file, textFile, args) {
  if (textFile === undefined) throw new UsageError('perplexity needs a text file: chord-llm perplexity <model.gguf> <text-file>')
  let text
  try {
    text = fs.readFileSync(textFile, 'utf8')
  } catch (err) {
    throw new UsageError(`cannot read ${textFile}: ${err.message}`)
  }
  const model = await load(file, args)
  try {
    const started = performance.now()
    const result = await model.perplexity(text, { window: number(args, 'window', { min: 2 }), maxTokens: number(args, 'max-tokens') })
    const seconds = (performance.now() - started) / 1000
    if (args.json) process.stdout.write(`${JSON.stringify({ ...result, seconds })}\n`)
    else process.stdout.write(`perplexity ${result.perplexity.toFixed(4)} over ${result.tokens} tokens (${(result.tokens / seconds).toFixed(1)} tok/s)\n`)
  } finally {
    await model.dispose()
  }
}

async function serve(file, args) {
  const port = number(args, 'port') ?? 8080
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`)
  const host = args.host ?? '127.0.0.1'
  const model = await load(file, args)
  const modelId = args['model-id'] ?? path.basename(file).replace(/\.gguf$/i, '')
  const server = createServer(model, { modelId, template: readTemplate(args) })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, resolve)
  })
  const address = server.address()
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address
  // The address line is printed even with --quiet: scripts wait for it (and read the port of --port 0).
  process.stderr.write(`listening on http://${shown}:${address.port}/v1 (model id '${modelId}')\n`)
  const stop = () => {
    server.close()
    server.closeAllConnections()
    model.dispose().then(() => process.exit(0))
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

async function main(argv) {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true })
  } catch (err) {
    throw new UsageError(err.message)
  }
  const args = parsed.values
  const [command, file, extra, ...rest] = parsed.positionals
  if (args.version) return process.stdout.write(`${VERSION}\n`)
  if (args.help || command === undefined || command === 'help') return process.stdout.write(`${USAGE}\n`)
  const commands = { info, run, chat, bench, perplexity, serve }
  if (!Object.hasOwn(commands, command)) throw new UsageError(`unknown command '${command}'`)
  if (file === undefined) throw new UsageError(`${command} needs a model file: chord-llm ${command} <model.gguf>`)
  const takesExtra = command === 'run' || command === 'perplexity'
  if (rest.length > 0 || (!takesExtra && extra !== undefined)) throw new UsageError(`unexpected argument '${takesExtra ? rest[0] : extra}'`)
  if (takesExtra) return commands[command](file, extra, args)
  return commands[command](file, args)
}

main(process.argv.slice(2)).catch((err) => {
  if (err instanceof UsageError) {
    process.stderr.write(`chord-llm: ${err.message}\nrun 'chord-llm --help' for usage\n`)
    process.exit(2)
  }
  process.stderr.write(`chord-llm: ${err.message}${err.code ? ` (${err.code})` : ''}\n`)
  process.exit(1)
})
