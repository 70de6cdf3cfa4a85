// An interactive chat in the terminal: reads lines from stdin, streams the replies.
//   node examples/chat.js [--model path.gguf] [--system "You are ..."] [--threads N] [--memory-budget 1GB]
// Commands: /reset forgets the conversation, /exit (or end of input) quits. Without --model it
// uses SmolLM2-135M-Instruct, fetching it first if needed.
'use strict'

const path = require('node:path')
const readline = require('node:readline')
const { loadModel } = require('..')
const { modelPath: defaultModel } = require('./model-path')

function parseArgs(argv) {
  const args = { system: 'You are a helpful assistant.', maxTokens: 512 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--model') args.model = argv[++i]
    else if (a === '--system') args.system = argv[++i]
    else if (a === '--threads') args.threads = Number(argv[++i])
    else if (a === '--memory-budget') args.memoryBudget = argv[++i]
    else if (a === '--max-tokens') args.maxTokens = Number(argv[++i])
    else {
      console.log('usage: node examples/chat.js [--model path.gguf] [--system text] [--threads N] [--memory-budget 1GB] [--max-tokens N]')
      process.exit(a === '--help' || a === '-h' ? 0 : 2)
    }
  }
  return args
}

async function main() {
  const args = parseArgs(process.argv.slice(2))
  const modelPath = args.model ?? (await defaultModel([]))
  const model = await loadModel(modelPath, {
    threads: args.threads,
    memoryBudget: args.memoryBudget,
    onProgress: ({ loadedBytes, totalBytes }) =>
      process.stderr.write(`\rloading ${(loadedBytes / 1e6).toFixed(0)} / ${(totalBytes / 1e6).toFixed(0)} MB`),
  })
  process.stderr.write(`\rloaded ${model.info.name ?? path.basename(modelPath)}. /reset starts over, /exit quits.\n`)
  const chat = model.createChat({ systemPrompt: args.system })

  const rl = readline.createInterface({ input: process.stdin, terminal: process.stdin.isTTY })
  const ask = () => process.stdout.write('\n> ')
  ask()
  for await (const line of rl) {
    const text = line.trim()
    if (text === '/exit') break
    if (text === '/reset') {
      chat.reset()
      process.stdout.write('(conversation reset)\n')
    } else if (text) {
      // Ctrl+C stops the reply in progress (a second one, with no reply running, quits).
      const controller = new AbortController()
      const onSigint = () => controller.abort()
      process.once('SIGINT', onSigint)
      try {
        for await (const token of chat.send(text, { maxTokens: args.maxTokens, temperature: 0.7, signal: controller.signal })) {
          process.stdout.write(token.text)
        }
      } catch (err) {
        if (err.code !== 'ABORT_ERR') throw err
        process.stdout.write(' [stopped]')
      } finally {
        process.removeListener('SIGINT', onSigint)
      }
      process.stdout.write('\n')
    }
    ask()
  }
  rl.close()
  chat.dispose()
  await model.dispose()
}

main().catch((err) => {
  console.error(`chat failed: ${err.code ? `[${err.code}] ` : ''}${err.message}`)
  process.exit(1)
})
