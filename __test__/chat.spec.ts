// Chat templates and chats. Renderings are checked byte for byte against Hugging Face
// transformers (scripts/gen-chat-refs.py wrote __test__/data/chat-templates.json with Jinja2);
// the tokenized prompt keeps message text out of special tokens; chats on the real
// SmolLM2-135M-Instruct reuse their cache and reply as `generate` does on the same prompt.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test from 'ava'

import { loadModel, type ChatMessage, type Model } from '../lib/index.js'
import { registerChatTests } from './helpers/chat'
import { fixtures } from './helpers/fixtures'

interface Case {
  template: string
  conversation: string
  addGenerationPrompt: boolean
  expected?: string
  raised?: string
  error?: string
}
interface Reference {
  templates: Record<string, { source: string; bosToken: string; eosToken: string }>
  conversations: Record<string, { messages: ChatMessage[]; tools?: unknown[] }>
  cases: Case[]
}
const reference: Reference = JSON.parse(readFileSync(join(__dirname, 'data', 'chat-templates.json'), 'utf8'))

let tiny: Model
let noTemplate: Model

test.before(async () => {
  const paths = await fixtures()
  tiny = await loadModel(paths['tiny-llama-q8_0.gguf'], { threads: 2 })
  noTemplate = await loadModel(paths['tiny-llama-q4_0.gguf'], { threads: 2 })
})

test.after.always(async () => {
  await tiny?.dispose()
  await noTemplate?.dispose()
})

test('applyChatTemplate renders byte-identical to transformers on every reference case', (t) => {
  const failures: string[] = []
  for (const c of reference.cases) {
    const template = reference.templates[c.template]
    const conversation = reference.conversations[c.conversation]
    const name = `${c.template} / ${c.conversation} / ${c.addGenerationPrompt ? 'with' : 'without'} generation prompt`
    const options = {
      template: template.source,
      addGenerationPrompt: c.addGenerationPrompt,
      tools: conversation.tools,
      bosToken: template.bosToken,
      eosToken: template.eosToken,
    }
    try {
      const out = tiny.applyChatTemplate(conversation.messages, options)
      if (c.expected === undefined) failures.push(`${name}: rendered, transformers failed with ${c.raised ?? c.error}`)
      else if (out !== c.expected) failures.push(`${name}:\n--- ours\n${JSON.stringify(out)}\n--- transformers\n${JSON.stringify(c.expected)}`)
    } catch (err) {
      const e = err as Error & { code?: string }
      if (c.expected !== undefined) failures.push(`${name}: threw ${e.code} ${e.message}`)
      else if (e.code !== 'ERR_CHAT_TEMPLATE') failures.push(`${name}: code ${e.code}`)
      else if (c.raised !== undefined && e.message !== `chat template: ${c.raised}`) failures.push(`${name}: message ${e.message}`)
    }
  }
  t.log(`${reference.cases.length} cases over ${Object.keys(reference.templates).length} templates`)
  t.deepEqual(failures, [])
})

test('a model without a chat template: ERR_NO_CHAT_TEMPLATE unless a template is given', (t) => {
  t.is(noTemplate.info.chatTemplate, null)
  t.true(tiny.info.chatTemplate!.startsWith('{% for message in messages %}'))
  const messages = [{ role: 'user', content: 'hi' }]
  t.throws(() => noTemplate.createChat(), { code: 'ERR_NO_CHAT_TEMPLATE' })
  t.throws(() => noTemplate.applyChatTemplate(messages), { code: 'ERR_NO_CHAT_TEMPLATE' })
  t.throws(() => noTemplate.tokenizeChat(messages), { code: 'ERR_NO_CHAT_TEMPLATE' })
  const chat = noTemplate.createChat({ template: '{% for m in messages %}{{ m.content }}{% endfor %}', systemPrompt: 'sys' })
  t.deepEqual(chat.messages, [{ role: 'system', content: 'sys' }])
  t.is(noTemplate.applyChatTemplate(messages, { template: '{{ messages[0].content }}' }), 'hi')
  chat.dispose()
})

test.serial('a template that re-renders earlier turns differently: evaluation restarts at the first difference', async (t) => {
  // Drops assistant turns from the history (as reasoning templates drop earlier thinking).
  const template =
    "{% for m in messages if m.role != 'assistant' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
    '{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}'
  const chat = tiny.createChat({ template })
  const greedy = { maxTokens: 5, temperature: 0, ignoreEos: true }
  const reply = async (content: string) => {
    const out: number[] = []
    for await (const tok of chat.send(content, greedy)) out.push(tok.id)
    return out
  }
  const first = await reply('the quick')
  const firstPrompt = tiny.tokenizeChat([{ role: 'user', content: 'the quick' }], { template })
  t.deepEqual(chat.tokens, [...firstPrompt, ...first])
  const second = await reply('brown fox')
  const secondPrompt = tiny.tokenizeChat(chat.messages.filter((m) => m.role !== 'assistant'), { template })
  // The first reply is no longer in the rendering: it was dropped, and the rest evaluated.
  t.deepEqual(chat.tokens, [...secondPrompt, ...second])
  const held = [...firstPrompt, ...first]
  let common = 0
  while (held[common] === secondPrompt[common]) common++
  t.true(common < firstPrompt.length)
  t.is(chat.lastTurn!.evaluatedTokens, secondPrompt.length - common)
  const fresh: number[] = []
  for await (const tok of tiny.generate(secondPrompt, greedy)) fresh.push(tok.id)
  t.deepEqual(second, fresh)
  chat.dispose()
})

test('bad messages and options are coded errors', (t) => {
  const template = '{{ messages | length }}'
  t.throws(() => tiny.applyChatTemplate('x' as never, { template }), { code: 'ERR_INVALID_OPTION' })
  t.throws(() => tiny.applyChatTemplate([{ content: 'x' }] as never, { template }), { code: 'ERR_INVALID_OPTION' })
  t.throws(() => tiny.applyChatTemplate([], { template, tools: {} as never }), { code: 'ERR_INVALID_OPTION' })
  t.throws(() => tiny.applyChatTemplate([], { template: '{% if %}' }), { code: 'ERR_CHAT_TEMPLATE', message: /syntax error/ })
  const hostile = '{% set ns = namespace(s="x") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}'
  t.throws(() => tiny.applyChatTemplate([], { template: hostile }), { code: 'ERR_CHAT_TEMPLATE', message: /more work or memory/ })
})

test('strftime_now formats this process local time', (t) => {
  const out = tiny.applyChatTemplate([], { template: "{{ strftime_now('%Y-%m-%d') }}" })
  const now = new Date()
  const pad = (n: number) => String(n).padStart(2, '0')
  t.is(out, `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`)
})

registerChatTests(test, { modelKey: 'smollm2', file: 'smollm2-135m-instruct-q4_1.gguf', fetch: true, systemPrompt: 'You are a helpful assistant.' })
