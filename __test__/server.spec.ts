// The OpenAI-compatible server (lib/server.js) driven by the official `openai` client over
// SmolLM2: streaming and whole chat completions, legacy completions, a client disconnecting
// mid-stream, 8 concurrent requests, and OpenAI-shaped errors for bad requests.
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'

import test from 'ava'
import OpenAI from 'openai'

import { createServer, loadModel, type Model } from '../lib/index.js'
import { resolveModel } from './helpers/agreement'

const MODEL_ID = 'smollm2'
let model: Model
let server: Server
let baseURL: string
let client: OpenAI

test.before(async () => {
  const { file, reason } = await resolveModel({ modelKey: 'smollm2', fetch: true })
  if (!file) throw new Error(`SmolLM2 is needed: ${reason}`)
  model = await loadModel(file, { threads: 2, contextSize: 1024 })
  server = createServer(model, { modelId: MODEL_ID })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  baseURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`
  client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 })
})

test.after.always(async () => {
  server?.closeAllConnections()
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)))
  await model?.dispose()
})

const question = (content: string) => [{ role: 'user' as const, content }]

/** Waits until the model holds no sequence (generations ended and freed), or fails after 5 s. */
async function idle(): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (model.stats().sequences === 0) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return false
}

test.serial('GET /v1/models lists the model', async (t) => {
  const list = await client.models.list()
  t.deepEqual(
    list.data.map((m) => m.id),
    [MODEL_ID],
  )
  t.is((await client.models.retrieve(MODEL_ID)).id, MODEL_ID)
})

test.serial('a chat completion streamed and whole give the same greedy text, and the same as generate', async (t) => {
  const messages = question('Name three colours.')
  const whole = await client.chat.completions.create({ model: MODEL_ID, messages, temperature: 0, max_tokens: 24 })
  const choice = whole.choices[0]
  t.is(choice.message.role, 'assistant')
  t.true(choice.message.content!.length > 0)
  t.true(['stop', 'length'].includes(choice.finish_reason))
  const promptIds = model.tokenizeChat(messages)
  t.is(whole.usage!.prompt_tokens, promptIds.length)
  t.true(whole.usage!.completion_tokens > 0 && whole.usage!.completion_tokens <= 24)

  let direct = ''
  for await (const tok of model.generate(promptIds, { temperature: 0, maxTokens: 24 })) direct += tok.text
  t.is(choice.message.content, direct)

  const stream = await client.chat.completions.create({ model: MODEL_ID, messages, temperature: 0, max_tokens: 24, stream: true, stream_options: { include_usage: true } })
  let streamed = ''
  let finish: string | null = null
  let usage: OpenAI.CompletionUsage | undefined
  let chunks = 0
  for await (const chunk of stream) {
    chunks++
    if (chunk.usage) usage = chunk.usage
    for (const c of chunk.choices) {
      streamed += c.delta.content ?? ''
      if (c.finish_reason) finish = c.finish_reason
    }
  }
  t.true(chunks > 3, `${chunks} chunks`)
  t.is(streamed, choice.message.content ?? '')
  t.is(finish, choice.finish_reason)
  t.deepEqual(usage, whole.usage)
})

test.serial('max_tokens ends a reply with finish_reason length; stop strings with stop', async (t) => {
  const short = await client.chat.completions.create({ model: MODEL_ID, messages: question('Count from one to twenty in words.'), temperature: 0, max_tokens: 3 })
  t.is(short.choices[0].finish_reason, 'length')
  t.is(short.usage!.completion_tokens, 3)
  const full = await client.chat.completions.create({ model: MODEL_ID, messages: question('Count from one to twenty in words.'), temperature: 0, max_tokens: 40 })
  const text = full.choices[0].message.content!
  // A stop string taken from inside the greedy reply cuts it where it first occurs.
  t.true(text.length > 16, text)
  const stop = text.slice(10, 13)
  const stopped = await client.chat.completions.create({ model: MODEL_ID, messages: question('Count from one to twenty in words.'), temperature: 0, max_tokens: 40, stop })
  t.is(stopped.choices[0].finish_reason, 'stop')
  t.is(stopped.choices[0].message.content, text.slice(0, text.indexOf(stop)))
})

test.serial('the legacy completions endpoint continues a prompt, streamed or not', async (t) => {
  const prompt = 'The capital of France is'
  const whole = await client.completions.create({ model: MODEL_ID, prompt, temperature: 0, max_tokens: 8 })
  t.is(whole.object, 'text_completion')
  let direct = ''
  for await (const tok of model.generate(prompt, { temperature: 0, maxTokens: 8 })) direct += tok.text
  t.is(whole.choices[0].text, direct)
  t.is(whole.choices[0].finish_reason, 'length')
  let streamed = ''
  for await (const chunk of await client.completions.create({ model: MODEL_ID, prompt, temperature: 0, max_tokens: 8, stream: true })) {
    streamed += chunk.choices[0]?.text ?? ''
  }
  t.is(streamed, direct)
  const echoed = await client.completions.create({ model: MODEL_ID, prompt, temperature: 0, max_tokens: 8, echo: true })
  t.is(echoed.choices[0].text, prompt + direct)
})

test.serial('a client disconnecting mid-stream aborts its generation', async (t) => {
  const stream = await client.chat.completions.create({
    model: MODEL_ID,
    messages: question('Write a very long story about a lighthouse.'),
    max_tokens: 800,
    seed: 1,
    stream: true,
  })
  let chunks = 0
  for await (const _ of stream) {
    if (++chunks === 4) {
      stream.controller.abort()
      break
    }
  }
  const passesAtAbort = model.stats().passes
  t.true(await idle(), 'the sequence was freed')
  // Within a token or two of the disconnect, not the 800 asked for.
  t.true(model.stats().passes - passesAtAbort < 50, `${model.stats().passes - passesAtAbort} passes after the abort`)
  // The server goes on serving.
  const after = await client.chat.completions.create({ model: MODEL_ID, messages: question('Hi'), temperature: 0, max_tokens: 4 })
  t.true(after.choices[0].message.content!.length > 0)
})

test.serial('8 concurrent requests are decoded together and each matches its request alone', async (t) => {
  const prompts = ['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'black', 'white'].map((c) => `Write one sentence about the colour ${c}.`)
  const ask = (p: string) => client.chat.completions.create({ model: MODEL_ID, messages: question(p), temperature: 0, max_tokens: 16 })
  const alone: string[] = []
  for (const p of prompts) alone.push((await ask(p)).choices[0].message.content!)
  const before = model.stats()
  const together = await Promise.all(prompts.map(ask))
  const after = model.stats()
  t.deepEqual(
    together.map((r) => r.choices[0].message.content),
    alone,
  )
  const perPass = (after.passTokens - before.passTokens) / (after.passes - before.passes)
  t.log(`${(after.passes - before.passes)} passes, ${perPass.toFixed(2)} tokens per pass`)
  t.true(perPass > 2, 'requests shared forward passes')
})

test.serial('bad requests get OpenAI-shaped 4xx errors and the server lives on', async (t) => {
  const unknown = await t.throwsAsync(client.chat.completions.create({ model: 'gpt-4o', messages: question('Hi') }))
  t.true(unknown instanceof OpenAI.NotFoundError, String(unknown))
  t.is((unknown as InstanceType<typeof OpenAI.APIError>).code, 'model_not_found')

  const badTemperature = await t.throwsAsync(client.chat.completions.create({ model: MODEL_ID, messages: question('Hi'), temperature: 5 }))
  t.true(badTemperature instanceof OpenAI.BadRequestError)
  t.is((badTemperature as InstanceType<typeof OpenAI.APIError>).param, 'temperature')

  const badN = await t.throwsAsync(client.chat.completions.create({ model: MODEL_ID, messages: question('Hi'), n: 2 }))
  t.true(badN instanceof OpenAI.BadRequestError)
  const noMessages = await t.throwsAsync(client.chat.completions.create({ model: MODEL_ID, messages: [] }))
  t.true(noMessages instanceof OpenAI.BadRequestError)

  const post = (path: string, body: string) => fetch(`${baseURL}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body })
  for (const body of ['{"model": "smollm2", "messages": [', 'null', '[1, 2]', '"text"', '']) {
    const res = await post('/chat/completions', body)
    t.is(res.status, 400, body)
    const json = (await res.json()) as { error: { type: string; message: string } }
    t.is(json.error.type, 'invalid_request_error', body)
  }
  const wrongRole = await post('/chat/completions', JSON.stringify({ model: MODEL_ID, messages: [{ content: 'no role' }] }))
  t.is(wrongRole.status, 400)
  const notFound = await fetch(`${baseURL}/nothing-here`)
  t.is(notFound.status, 404)
  t.is(((await notFound.json()) as { error: { code: string } }).error.code, 'unknown_url')
  const tooLong = await post('/completions', JSON.stringify({ model: MODEL_ID, prompt: 'word '.repeat(2000) }))
  t.is(tooLong.status, 400)
  t.regex(((await tooLong.json()) as { error: { message: string } }).error.message, /context holds 1024 tokens/)

  const ok = await client.chat.completions.create({ model: MODEL_ID, messages: question('Hi'), temperature: 0, max_tokens: 2 })
  t.is(ok.choices.length, 1)
})
