// The command line (bin/chord-llm.js) run as a user runs it: `info` on SmolLM2 and a fixture,
// `run` against the library's own greedy output, the `chat` REPL driven through its stdin,
// `bench`, `perplexity`, `serve`, and usage errors with their exit codes.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import test from 'ava'

import { loadModel, type Model } from '../lib/index.js'
import { resolveModel } from './helpers/agreement'
import { fixtures, REPO_ROOT } from './helpers/fixtures'

const CLI = path.join(REPO_ROOT, 'bin', 'chord-llm.js')
let smollm: string
let model: Model

test.before(async () => {
  const { file, reason } = await resolveModel({ modelKey: 'smollm2', fetch: true })
  if (!file) throw new Error(`SmolLM2 is needed: ${reason}`)
  smollm = file
  model = await loadModel(file, { threads: 2 })
})

test.after.always(async () => {
  await model?.dispose()
})

interface Result {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs the CLI with `args`, writing `input` to its stdin (then closing it). */
function cli(args: string[], input = '', onStderr?: (text: string, child: ReturnType<typeof spawn>) => void): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d
      onStderr?.(stderr, child)
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    // A command that does not read stdin may exit before the input is written: the write then
    // fails with EPIPE, which says nothing about the command (its exit code and output do).
    child.stdin.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') reject(e)
    })
    child.stdin.end(input)
  })
}

async function greedy(prompt: string | number[], maxTokens: number): Promise<string> {
  let text = ''
  for await (const t of model.generate(prompt, { temperature: 0, maxTokens })) text += t.text
  return text
}

test('info describes SmolLM2 without loading it, as text and as JSON', async (t) => {
  const text = await cli(['info', smollm])
  t.is(text.code, 0, text.stderr)
  t.log(text.stdout)
  t.regex(text.stdout, /architecture\s+llama/)
  t.regex(text.stdout, /tensor types\s+.*Q4_1 x\d+/)
  t.regex(text.stdout, /chat template\s+yes/)
  t.regex(text.stdout, /KV cache\s+[\d.]+ MB per 1k tokens \(f16\), [\d.]+ MB with q8_0/)
  t.regex(text.stdout, /min budget\s+[\d.]+ MB/)

  const json = await cli(['info', smollm, '--json'])
  t.is(json.code, 0, json.stderr)
  const info = JSON.parse(json.stdout)
  t.is(info.architecture, 'llama')
  t.is(info.hasChatTemplate, true)
  t.is(info.layers, model.info.layers)
  t.is(info.parameters, model.info.parameters)
  t.is(info.minMemoryBudget, model.info.minMemoryBudget)
  t.true(info.minMemoryBudget > 0 && info.minMemoryBudget < info.weightBytes)
  t.is(info.kvBytesPer1kTokens, (model.info.kvCacheBytes / model.info.contextSize) * 1000)
  t.is(info.kvBytesPer1kTokensQ8 < info.kvBytesPer1kTokens, true)
})

test('info on a model without a chat template, and on a file that is not GGUF', async (t) => {
  const paths = await fixtures()
  const tiny = await cli(['info', paths['tiny-llama-q4_0.gguf']])
  t.is(tiny.code, 0, tiny.stderr)
  t.regex(tiny.stdout, /chat template\s+none/)
  const bad = await cli(['info', paths['bad-version-99.gguf']])
  t.is(bad.code, 1)
  t.regex(bad.stderr, /^chord-llm: .+ \(ERR_[A-Z_]+\)\n$/)
  const missing = await cli(['info', path.join(os.tmpdir(), 'no-such-model.gguf')])
  t.is(missing.code, 1)
  t.regex(missing.stderr, /no-such-model\.gguf/)
})

test('run prints the same greedy completion as generate, with timings on stderr', async (t) => {
  const r = await cli(['run', smollm, 'The capital of France is', '--temperature', '0', '--max-tokens', '12', '--threads', '2'])
  t.is(r.code, 0, r.stderr)
  t.is(r.stdout, `${await greedy('The capital of France is', 12)}\n`)
  t.regex(r.stderr, /loaded .+ in [\d.]+ s/)
  t.regex(r.stderr, /\[12 tokens, first after \d+ ms, [\d.]+ tok\/s, ended by maxTokens\]/)

  const json = await cli(['run', smollm, 'The capital of France is', '--temperature', '0', '--max-tokens', '12', '--json', '--quiet'])
  t.is(json.code, 0, json.stderr)
  t.is(json.stderr, '')
  const out = JSON.parse(json.stdout)
  t.is(out.tokens, 12)
  t.is(out.reason, 'maxTokens')
  t.is(`${out.text}\n`, r.stdout)

  const chat = await cli(['run', smollm, 'Say hello.', '--chat', '--temperature', '0', '--max-tokens', '10', '--quiet'])
  t.is(chat.code, 0, chat.stderr)
  t.is(chat.stdout, `${await greedy(model.tokenizeChat([{ role: 'user', content: 'Say hello.' }]), 10)}\n`)
})

test('chat is a REPL on stdin: replies stream, /reset starts over, /exit quits', async (t) => {
  const input = ['What is the capital of France?', '/reset', 'What is the capital of France?', '', 'Thanks!', '/exit', 'never read'].join('\n') + '\n'
  const r = await cli(['chat', smollm, '--temperature', '0', '--max-tokens', '16', '--system', 'You are a helpful assistant.'], input)
  t.is(r.code, 0, r.stderr)
  t.log(r.stdout)
  const reference = model.createChat({ systemPrompt: 'You are a helpful assistant.' })
  const reply = async (content: string) => {
    let text = ''
    for await (const tok of reference.send(content, { temperature: 0, maxTokens: 16 })) text += tok.text
    return text
  }
  const first = await reply('What is the capital of France?')
  reference.reset()
  const again = await reply('What is the capital of France?')
  const thanks = await reply('Thanks!')
  reference.dispose()
  t.is(r.stdout, `${first}\n(conversation reset)\n${again}\n${thanks}\n`)
  t.is((r.stderr.match(/tok\/s|tokens, ended/g) ?? []).length >= 3, true, r.stderr)
})

test('chat ends at the end of its input, and refuses a model without a template unless given one', async (t) => {
  const r = await cli(['chat', smollm, '--temperature', '0', '--max-tokens', '4', '--quiet'], 'Hi\n')
  t.is(r.code, 0, r.stderr)
  t.true(r.stdout.length > 1)
  const paths = await fixtures()
  const none = await cli(['chat', paths['tiny-llama-q4_0.gguf'], '--quiet'], 'Hi\n')
  t.is(none.code, 1)
  t.regex(none.stderr, /ERR_NO_CHAT_TEMPLATE/)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chord-cli-'))
  const template = path.join(dir, 'template.jinja')
  fs.writeFileSync(template, "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
  const given = await cli(['chat', paths['tiny-llama-q4_0.gguf'], '--quiet', '--template', template, '--max-tokens', '3', '--temperature', '0'], 'Hi\n')
  fs.rmSync(dir, { recursive: true })
  t.is(given.code, 0, given.stderr)
})

test('bench and perplexity print figures, as JSON too', async (t) => {
  const b = await cli(['bench', smollm, '--prompt-tokens', '16', '--tokens', '8', '--repeat', '1', '--json', '--threads', '2'])
  t.is(b.code, 0, b.stderr)
  const bench = JSON.parse(b.stdout)
  t.is(bench.promptTokens, 16)
  t.true(bench.prefillTokensPerSecond > 0 && bench.decodeTokensPerSecond > 0)

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chord-cli-'))
  const text = path.join(dir, 'text.txt')
  fs.writeFileSync(text, 'The lighthouse keeper climbed the stairs every night to light the lamp for the ships at sea. '.repeat(8))
  const p = await cli(['perplexity', smollm, text, '--window', '64', '--json', '--quiet'])
  const expected = await model.perplexity(fs.readFileSync(text, 'utf8'), { window: 64 })
  fs.rmSync(dir, { recursive: true })
  t.is(p.code, 0, p.stderr)
  const result = JSON.parse(p.stdout)
  t.is(result.tokens, expected.tokens)
  t.is(result.perplexity, expected.perplexity)
})

test('serve listens on loopback, answers, and stops on SIGTERM', async (t) => {
  let models: unknown
  const r = await cli(['serve', smollm, '--port', '0', '--quiet', '--model-id', 'small'], '', (stderr, child) => {
    const m = /listening on (http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(stderr)
    if (!m || models !== undefined) return
    models = null
    fetch(`${m[1]}/models`)
      .then((res) => res.json())
      .then((json) => {
        models = json
        child.kill('SIGTERM')
      })
      .catch((err) => {
        models = String(err)
        child.kill('SIGTERM')
      })
  })
  t.is(r.code, 0, r.stderr)
  t.like(models as object, { object: 'list', data: [{ id: 'small', object: 'model' }] })
})

test('usage mistakes exit with code 2 and say what is wrong', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['frobnicate', 'x.gguf'], /unknown command 'frobnicate'/],
    [['info'], /info needs a model file/],
    [['run', 'x.gguf'], /run needs a prompt/],
    [['info', 'x.gguf', '--threads', 'two'], /--threads must be an integer >= 1, got 'two'/],
    [['info', 'x.gguf', '--no-such-option'], /Unknown option '--no-such-option'/],
    [['serve', 'x.gguf', '--port', '70000'], /--port must be at most 65535/],
    [['info', 'x.gguf', 'extra'], /unexpected argument 'extra'/],
  ]
  for (const [args, message] of cases) {
    const r = await cli(args)
    t.is(r.code, 2, args.join(' '))
    t.regex(r.stderr, message, args.join(' '))
  }
  const help = await cli(['--help'])
  t.is(help.code, 0)
  t.regex(help.stdout, /chord-llm chat <model\.gguf>/)
})
