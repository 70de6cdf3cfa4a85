// The JavaScript API over tiny generated GGUF fixtures: loading, info, tokenization, logits,
// generation (streaming, stop strings, cancellation, backpressure) and error codes.
import test from 'ava'

import { createServer, inspectModel, loadModel, type Model } from '../lib/index.js'
import { fixtures } from './helpers/fixtures'

let paths: Record<string, string>
let model: Model

test.before(async () => {
  paths = await fixtures()
  model = await loadModel(paths['tiny-llama-q8_0.gguf'], { threads: 2 })
})

test.after.always(async () => {
  await model?.dispose()
})

async function collect(it: AsyncIterable<{ id: number; text: string }>) {
  const ids: number[] = []
  let text = ''
  for await (const t of it) {
    ids.push(t.id)
    text += t.text
  }
  return { ids, text }
}

test('info describes the model from its metadata', (t) => {
  const info = model.info
  t.is(info.architecture, 'llama')
  t.is(info.layers, 2)
  t.true(info.vocabSize > 256)
  t.true(info.parameters > 10_000)
  t.true(info.fileBytes > 0)
  t.true(info.contextLength >= info.contextSize)
  t.true((info.tensorTypes.Q8_0 ?? 0) > 0)
  t.true((info.tensorTypes.F32 ?? 0) > 0)
})

test('tokenize and detokenize round-trip text, special tokens only when asked', (t) => {
  const text = 'hello world, the quick brown fox 123 ünïcödé 🙂'
  const ids = model.tokenize(text)
  t.true(ids.length > 0)
  t.is(model.detokenize(ids), text)
  const plain = model.tokenize('<|im_start|>hi')
  const special = model.tokenize('<|im_start|>hi', { special: true })
  t.true(special.length < plain.length)
  t.is(model.detokenize(special), 'hi')
  t.is(model.detokenize(special, { special: true }), '<|im_start|>hi')
  t.deepEqual(model.tokenize(''), [])
})

test('logits returns one row per requested position and matches incremental evaluation', async (t) => {
  const ids = model.tokenize('the quick brown fox jumps')
  const vocab = model.info.vocabSize
  const last = await model.logits(ids)
  t.true(last instanceof Float32Array)
  t.is(last.length, vocab)
  const all = await model.logits(ids, { from: 0 })
  t.is(all.length, vocab * ids.length)
  // The last row of the full evaluation is the last-position logits.
  t.deepEqual(Array.from(all.subarray(vocab * (ids.length - 1))), Array.from(last))
  // A prefix evaluated alone gives the same logits as the same position inside a longer run.
  const prefix = await model.logits(ids.slice(0, 3))
  t.deepEqual(Array.from(all.subarray(vocab * 2, vocab * 3)), Array.from(prefix))
  t.true(Array.from(last).every(Number.isFinite))
})

test('useMmap: false copies the weights and gives the same logits', async (t) => {
  const copy = await loadModel(paths['tiny-llama-q8_0.gguf'], { threads: 2, useMmap: false })
  // Mapped as it is (by default its Q8_0 matrices are copied, rearranged, on x86).
  const mapped = await loadModel(paths['tiny-llama-q8_0.gguf'], { threads: 2, useMmap: true })
  t.true(copy.stats().copied)
  t.true(copy.stats().copiedBytes >= copy.stats().residentBytes)
  t.false(mapped.stats().copied)
  t.is(mapped.stats().copiedBytes, 0)
  const ids = mapped.tokenize('the weights are the same')
  t.deepEqual(Array.from(await copy.logits(ids, { from: 0 })), Array.from(await mapped.logits(ids, { from: 0 })))
  await copy.dispose()
  await mapped.dispose()
})

test('by default a model with Q4_0 matrices is partly copied on x86, wholly with useMmap: false, mapped with useMmap: true, with the same logits', async (t) => {
  const byDefault = await loadModel(paths['tiny-llama-q4_0.gguf'], { threads: 2 })
  const mapped = await loadModel(paths['tiny-llama-q4_0.gguf'], { threads: 2, useMmap: true })
  const copied = await loadModel(paths['tiny-llama-q4_0.gguf'], { threads: 2, useMmap: false })
  t.false(copied.stats().copying)
  // The default copy is made after the load, on a thread of its own.
  for (const start = Date.now(); byDefault.stats().copying; ) {
    if (Date.now() - start > 30_000) return t.fail('the default copy takes over 30 s')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  // The x86 kernels read Q4_0 faster rearranged; elsewhere there is nothing to gain from a copy.
  t.is(byDefault.stats().copied, process.arch === 'x64')
  if (process.arch === 'x64') {
    // The rearranged matrices and the vectors; not token_embd, whose rows embeddings read.
    t.true(byDefault.stats().copiedBytes > 0)
    t.true(byDefault.stats().copiedBytes < copied.stats().copiedBytes)
  }
  t.false(mapped.stats().copied)
  const ids = byDefault.tokenize('the weights are the same')
  const logits = async (m: typeof mapped) => Array.from(await m.logits(ids, { from: 0 }))
  t.deepEqual(await logits(byDefault), await logits(mapped))
  t.deepEqual(await logits(copied), await logits(mapped))
  await Promise.all([byDefault.dispose(), mapped.dispose(), copied.dispose()])
})

test('greedy generation is deterministic and agrees with logits()', async (t) => {
  const prompt = model.tokenize('once upon a time')
  const a = await collect(model.generate(prompt, { maxTokens: 12, temperature: 0, ignoreEos: true }))
  const b = await collect(model.generate(prompt, { maxTokens: 12, temperature: 0, ignoreEos: true }))
  t.is(a.ids.length, 12)
  t.deepEqual(a.ids, b.ids)
  // Teacher-forced: each greedy token is the argmax of the logits after the tokens before it.
  const all = await model.logits([...prompt, ...a.ids], { from: prompt.length - 1 })
  const vocab = model.info.vocabSize
  for (let i = 0; i < a.ids.length; i++) {
    const row = all.subarray(i * vocab, (i + 1) * vocab)
    let best = 0
    for (let j = 1; j < vocab; j++) if (row[j] > row[best]) best = j
    t.is(a.ids[i], best, `step ${i}`)
  }
  t.is(a.text, model.detokenize(a.ids))
})

test('a seed makes sampling reproducible', async (t) => {
  const opts = { maxTokens: 16, temperature: 1.2, topK: 0, topP: 1, minP: 0, ignoreEos: true }
  const a = await collect(model.generate('the', { ...opts, seed: 7 }))
  const b = await collect(model.generate('the', { ...opts, seed: 7 }))
  const c = await collect(model.generate('the', { ...opts, seed: 8 }))
  t.deepEqual(a.ids, b.ids)
  t.notDeepEqual(a.ids, c.ids)
})

test('a stop string ends generation and is not yielded', async (t) => {
  const free = await collect(model.generate('the', { maxTokens: 24, temperature: 0, ignoreEos: true }))
  t.true(free.text.length > 4)
  const stop = free.text.slice(3, 5)
  const stopped = await collect(model.generate('the', { maxTokens: 24, temperature: 0, ignoreEos: true, stop: [stop] }))
  t.is(stopped.text, free.text.slice(0, free.text.indexOf(stop)))
})

test('break stops the generation and later generations still work', async (t) => {
  let n = 0
  for await (const _ of model.generate('the', { maxTokens: 100, temperature: 0, ignoreEos: true })) {
    if (++n === 3) break
  }
  t.is(n, 3)
  const after = await collect(model.generate('the', { maxTokens: 2, temperature: 0, ignoreEos: true }))
  t.is(after.ids.length, 2)
})

test('aborting the signal stops generation within one token', async (t) => {
  const ac = new AbortController()
  let n = 0
  const err = await t.throwsAsync(async () => {
    for await (const _ of model.generate('the', { maxTokens: 1000, temperature: 0, ignoreEos: true, signal: ac.signal })) {
      if (++n === 5) ac.abort()
    }
  })
  t.is(n, 5)
  t.is(err?.name, 'AbortError')
  t.is((err as any)?.code, 'ABORT_ERR')
  const pre = new AbortController()
  pre.abort()
  await t.throwsAsync(() => collect(model.generate('the', { signal: pre.signal })), { code: 'ABORT_ERR' } as any)
})

test('the event loop stays responsive while tokens are computed', async (t) => {
  let ticks = 0
  const timer = setInterval(() => ticks++, 1)
  const started = Date.now()
  let n = 0
  for await (const _ of model.generate('the', { maxTokens: 200, temperature: 0, ignoreEos: true })) n++
  const elapsed = Date.now() - started
  clearInterval(timer)
  t.is(n, 200)
  // The work ran off the JS thread: timers kept firing throughout (loose bound, not a timing test).
  t.true(ticks >= Math.min(5, elapsed / 4), `ticks ${ticks} over ${elapsed} ms`)
})

test('generation ends at the context size', async (t) => {
  const small = await loadModel(paths['tiny-llama-q8_0.gguf'], { contextSize: 8, threads: 1 })
  const prompt = small.tokenize('the quick')
  const out = await collect(small.generate(prompt, { temperature: 0, ignoreEos: true }))
  // Every position holds a prompt or generated token; the last sampled token needs no position.
  t.is(prompt.length + out.ids.length, 9)
  await t.throwsAsync(() => small.logits(new Array(9).fill(prompt[0])), { code: 'ERR_CONTEXT_FULL' } as any)
  await small.dispose()
})

test('every fixture tensor type loads and produces finite logits', async (t) => {
  for (const name of ['tiny-llama-f32.gguf', 'tiny-llama-f16.gguf', 'tiny-llama-bf16.gguf', 'tiny-llama-q4_0.gguf', 'tiny-llama-q4_1-untied.gguf']) {
    const m = await loadModel(paths[name], { threads: 1 })
    const logits = await m.logits(m.tokenize('hello there'))
    t.is(logits.length, m.info.vocabSize, name)
    t.true(Array.from(logits).every(Number.isFinite), name)
    await m.dispose()
  }
})

test('load reports progress and can be aborted', async (t) => {
  const seen: Array<{ loadedBytes: number; totalBytes: number }> = []
  const m = await loadModel(paths['tiny-llama-f32.gguf'], { onProgress: (p) => seen.push(p) })
  t.true(seen.length >= 1)
  const lastSeen = seen[seen.length - 1]
  t.is(lastSeen.loadedBytes, lastSeen.totalBytes)
  await m.dispose()
  const ac = new AbortController()
  ac.abort()
  await t.throwsAsync(() => loadModel(paths['tiny-llama-f32.gguf'], { signal: ac.signal }), { name: 'AbortError' })
})

test('malformed and unsupported files reject with stable codes', async (t) => {
  const expected: Record<string, string> = {
    'not-gguf.bin': 'ERR_NOT_GGUF',
    'empty.gguf': 'ERR_NOT_GGUF',
    'bad-version-1.gguf': 'ERR_UNSUPPORTED_GGUF_VERSION',
    'bad-version-99.gguf': 'ERR_UNSUPPORTED_GGUF_VERSION',
    'truncated-header.gguf': 'ERR_GGUF_TRUNCATED',
    'truncated-data.gguf': 'ERR_GGUF_TRUNCATED',
    'bad-string-length.gguf': 'ERR_GGUF_TRUNCATED',
    'bad-array-count.gguf': 'ERR_GGUF_TRUNCATED',
    'bad-value-type.gguf': 'ERR_GGUF_MALFORMED',
    'bad-tensor-type.gguf': 'ERR_UNSUPPORTED_TENSOR_TYPE',
    'bad-tensor-offset-misaligned.gguf': 'ERR_GGUF_MALFORMED',
    'bad-tensor-offset-oob.gguf': 'ERR_GGUF_TRUNCATED',
    'bad-duplicate-tensor.gguf': 'ERR_GGUF_MALFORMED',
    'bad-n-dims.gguf': 'ERR_GGUF_MALFORMED',
    'bad-alignment-zero.gguf': 'ERR_GGUF_MALFORMED',
    'unsupported-arch-mamba.gguf': 'ERR_UNSUPPORTED_ARCHITECTURE',
    'missing-tensor.gguf': 'ERR_MISSING_TENSOR',
    'bad-tensor-shape.gguf': 'ERR_TENSOR_SHAPE',
  }
  for (const [name, code] of Object.entries(expected)) {
    t.truthy(paths[name], `fixture ${name} exists`)
    const err = await t.throwsAsync(() => loadModel(paths[name]), undefined, name)
    t.is((err as any)?.code, code, `${name}: ${err?.message}`)
    t.true((err?.message.length ?? 0) > 10, name)
  }
  const missing = await t.throwsAsync(() => loadModel('/nonexistent/model.gguf'))
  t.is((missing as any)?.code, 'ERR_FILE_NOT_FOUND')
  t.regex(missing?.message ?? '', /nonexistent/)
})

test('invalid options are rejected with ERR_INVALID_OPTION', async (t) => {
  const path = paths['tiny-llama-q8_0.gguf']
  for (const options of [{ threads: 0 }, { threads: 1.5 }, { contextSize: -1 }, { contextSize: 1e9 }, { onProgress: 3 }, { signal: {} }, { useMmap: 'no' }]) {
    const err = await t.throwsAsync(() => loadModel(path, options as any))
    t.is((err as any)?.code, 'ERR_INVALID_OPTION', JSON.stringify(options))
  }
  for (const options of [{ temperature: -1 }, { topP: 0 }, { topP: 2 }, { minP: -0.1 }, { maxTokens: 1.5 }, { stop: 'x' }, { seed: -3 }]) {
    const err = await t.throwsAsync(() => collect(model.generate('the', options as any)))
    t.is((err as any)?.code, 'ERR_INVALID_OPTION', JSON.stringify(options))
  }
  t.is((t.throws(() => model.tokenize(3 as any)) as any)?.code, 'ERR_INVALID_OPTION')
  t.is((t.throws(() => model.detokenize([model.info.vocabSize])) as any)?.code, 'ERR_INVALID_TOKEN')
  const bad = await t.throwsAsync(() => model.logits([0, model.info.vocabSize + 5]))
  t.is((bad as any)?.code, 'ERR_INVALID_TOKEN')
  t.is((await t.throwsAsync(() => model.logits([])) as any)?.code, 'ERR_INVALID_OPTION')
  t.is((await t.throwsAsync(() => model.logits([1, 2], { from: 5 })) as any)?.code, 'ERR_INVALID_OPTION')
})

test('a disposed model rejects further use', async (t) => {
  const m = await loadModel(paths['tiny-llama-q8_0.gguf'])
  const gen = m.generate('the', { maxTokens: 50, temperature: 0, ignoreEos: true })
  const first = await gen.next()
  t.false(first.done)
  await m.dispose()
  // The running generation stops at its next step.
  await t.throwsAsync(() => gen.next(), { code: 'ERR_DISPOSED' })
  t.is((t.throws(() => m.tokenize('x')) as any)?.code, 'ERR_DISPOSED')
  t.is((await t.throwsAsync(() => m.logits([1])) as any)?.code, 'ERR_DISPOSED')
})

test('paged with a budget of about two layers gives the same output as resident', async (t) => {
  const path = paths['tiny-llama-q4_1-untied.gguf']
  const resident = await loadModel(path, { threads: 2 })
  // Two layers' worth of the weights (the output head is similar in size to a layer here).
  const budget = Math.ceil((resident.info.weightBytes / (resident.info.layers + 1)) * 2.2)
  for (const pagingMethod of ['read', 'mmap'] as const) {
    const pagedModel = await loadModel(path, { threads: 2, memoryBudget: budget, pagingMethod })
    t.true(pagedModel.info.paged)
    t.false(resident.info.paged)
    const prompt = pagedModel.tokenize('once upon a time')
    const expected = await collect(resident.generate(prompt, { maxTokens: 24, temperature: 0, ignoreEos: true }))
    const got = await collect(pagedModel.generate(prompt, { maxTokens: 24, temperature: 0, ignoreEos: true }))
    t.deepEqual(got.ids, expected.ids)
    t.deepEqual(Array.from(await pagedModel.logits(prompt, { from: 0 })), Array.from(await resident.logits(prompt, { from: 0 })))
    const s = pagedModel.stats()
    t.true(s.paged)
    t.is(s.budgetBytes, budget)
    t.true(s.peakResidentBytes <= budget, `peak ${s.peakResidentBytes} > budget ${budget}`)
    t.true(s.layerLoads > 0 && s.bytesRead > 0)
    await pagedModel.dispose()
  }
  t.false(resident.stats().paged)
  await resident.dispose()
  const err = await t.throwsAsync(() => loadModel(path, { memoryBudget: '1KB' }))
  t.is((err as any)?.code, 'ERR_INVALID_OPTION')
  for (const options of [{ memoryBudget: 'lots' }, { paging: 'sometimes' }, { pagingMethod: 'dma' }, { prefetchLayers: -1 }]) {
    const e = await t.throwsAsync(() => loadModel(path, options as any))
    t.is((e as any)?.code, 'ERR_INVALID_OPTION', JSON.stringify(options))
  }
})

test('the same kind of option mistake gets the same error class and code, wherever it is caught', async (t) => {
  const drain = async (it: AsyncIterable<unknown>) => {
    for await (const _ of it) void _
  }
  for (const temperature of [-1, Infinity, NaN]) {
    const err = await t.throwsAsync(drain(model.generate('the', { maxTokens: 1, temperature })), { code: 'ERR_INVALID_OPTION' })
    t.true(err instanceof TypeError, `temperature ${temperature}: ${err?.constructor.name}`)
  }
  // Checked in Rust only (the JS side does not know the vocabulary): the same class.
  const bad = await t.throwsAsync(drain(model.generate([1, 1e6], { maxTokens: 1 })))
  t.is((bad as { code?: string }).code, 'ERR_INVALID_TOKEN')
  const shift = t.throws(() => model.createSession({ contextSize: model.info.contextLength + 1 }), { code: 'ERR_INVALID_OPTION' })
  t.true(shift instanceof TypeError)
  // Seeds are any safe integer.
  const seeded = model.generate('the', { maxTokens: 3, seed: 2 ** 40 + 1 })
  t.false((await seeded.next()).done)
  await seeded.return(undefined)
  await t.throwsAsync(drain(model.generate('the', { seed: 2 ** 53 })), { code: 'ERR_INVALID_OPTION', instanceOf: TypeError })
  await t.throwsAsync(drain(model.generate('the', { seed: -1 })), { code: 'ERR_INVALID_OPTION', instanceOf: TypeError })
})

test('inspectModel reports what loadModel does without loading, and fails as it fails', async (t) => {
  const path = paths['tiny-llama-q8_0.gguf']
  const options = { threads: 2, contextSize: 64, maxSequences: 3 }
  const m = await loadModel(path, options)
  t.deepEqual(await inspectModel(path, options), m.info)
  await m.dispose()
  t.true(model.info.minMemoryBudget > 0 && model.info.minMemoryBudget < model.info.weightBytes)
  for (const bad of [{ threads: 0 }, { contextSize: 1e9 }, { paging: 'sometimes' }, { memoryBudget: 'lots' }]) {
    await t.throwsAsync(() => inspectModel(path, bad as any), { code: 'ERR_INVALID_OPTION', instanceOf: TypeError }, JSON.stringify(bad))
  }
  await t.throwsAsync(() => inspectModel(''), { code: 'ERR_INVALID_OPTION', instanceOf: TypeError })
  for (const name of ['bad-version-99.gguf', 'truncated-header.gguf', 'unsupported-arch-mamba.gguf']) {
    const viaLoad = await t.throwsAsync(() => loadModel(paths[name]))
    await t.throwsAsync(() => inspectModel(paths[name]), { code: (viaLoad as any).code }, name)
  }
})

test("a generation's return value says why it ended and how many tokens it made", async (t) => {
  const end = async (it: AsyncGenerator<unknown, unknown>) => {
    for (;;) {
      const item = await it.next()
      if (item.done) return item.value
    }
  }
  t.deepEqual(await end(model.generate('the', { maxTokens: 5, temperature: 0, ignoreEos: true })), { reason: 'maxTokens', tokens: 5 })
  let text = ''
  for await (const tok of model.generate('the', { maxTokens: 12, temperature: 0, ignoreEos: true })) text += tok.text
  const stop = text.slice(4, 6)
  const stopped = (await end(model.generate('the', { maxTokens: 12, temperature: 0, ignoreEos: true, stop: [stop] }))) as { reason: string }
  t.is(stopped.reason, 'stop', JSON.stringify({ text, stop }))
  const session = model.createSession({ contextSize: 8 })
  // Eight positions hold the prompt and five tokens; the sixth is sampled from the eighth's
  // logits and needs no position until something follows it.
  t.deepEqual(await end(session.generate([1, 2, 3], { temperature: 0, ignoreEos: true })), { reason: 'contextFull', tokens: 6 })
  session.dispose()
})

test('createServer checks its options', (t) => {
  for (const bad of [{ modelId: '' }, { modelId: 3 }, { maxBodyBytes: 0 }, { maxBodyBytes: 1.5 }, { template: 1 }]) {
    t.throws(() => createServer(model, bad as any), { code: 'ERR_INVALID_OPTION', instanceOf: TypeError }, JSON.stringify(bad))
  }
  t.throws(() => createServer(model, null as any), { code: 'ERR_INVALID_OPTION', instanceOf: TypeError })
})

test('the server chats with a model that has no template only when given one', async (t) => {
  const plain = await loadModel(paths['tiny-llama-q4_0.gguf'], { threads: 2 })
  const ask = async (server: ReturnType<typeof createServer>) => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as import('node:net').AddressInfo
    const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, temperature: 0 }),
    })
    const body = (await res.json()) as { choices?: unknown[]; error?: { message: string } }
    await new Promise((resolve) => server.close(resolve))
    return { status: res.status, body }
  }
  const without = await ask(createServer(plain, { modelId: 'tiny' }))
  t.is(without.status, 400)
  t.regex(without.body.error!.message, /no chat template/)
  const template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"
  const given = await ask(createServer(plain, { modelId: 'tiny', template }))
  t.is(given.status, 200, JSON.stringify(given.body))
  t.is(given.body.choices!.length, 1)
  await plain.dispose()
})
