// Sessions and batched generation through the JS API, over a tiny generated fixture: history and
// prefix reuse, truncate/reset, concurrent streams identical to running alone, one stream's
// break/abort leaving the others unchanged, the sequence limit, full contexts and the shift.
import test from 'ava'

import { loadModel, type Model } from '../lib/index.js'
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

async function ids(it: AsyncIterable<{ id: number }>, stopAfter = Infinity) {
  const out: number[] = []
  for await (const t of it) {
    out.push(t.id)
    if (out.length >= stopAfter) break
  }
  return out
}

const greedy = (maxTokens: number) => ({ maxTokens, temperature: 0, ignoreEos: true })

test.serial('a session keeps its history; only new tokens are evaluated and the tokens match a fresh run', async (t) => {
  const s = model.createSession()
  const first = model.tokenize('the quick brown fox')
  const reply1 = await ids(s.generate(first, greedy(6)))
  t.is(s.tokens.length, first.length + 6)
  const second = model.tokenize(' jumps over', { addBos: false })
  const reply2 = await ids(s.generate(second, greedy(6)))
  const history = [...first, ...reply1, ...second]
  t.deepEqual(s.tokens, [...history, ...reply2])
  t.deepEqual(reply2, await ids(model.generate(history, greedy(6))))
  // The cache holds every token but the last generated one.
  t.true(s.kvBytes > 0)
  const stats = model.stats()
  t.is(stats.sequences, 1)
  t.is(stats.kvBytes, s.kvBytes)
  // Rewind to the end of the first prompt and regenerate: the same reply again.
  s.truncate(first.length)
  t.deepEqual(await ids(s.generate([], greedy(6))), reply1)
  s.reset()
  t.deepEqual(s.tokens, [])
  t.is(s.kvBytes, 0)
  s.dispose()
  t.is(model.stats().sequences, 0)
  t.throws(() => s.tokens, { code: 'ERR_DISPOSED' } as any)
})

test.serial('a reply broken off keeps exactly the tokens seen, and the session is free at once', async (t) => {
  const s = model.createSession()
  const prompt = model.tokenize('the quick brown fox')
  const whole = await ids(model.generate(prompt, greedy(8)))
  for (const seen of [1, 3]) {
    // The engine computes the next step before it is asked for; breaking off takes it back.
    const got = await ids(s.generate(prompt, greedy(20)), seen)
    t.deepEqual(s.tokens, [...prompt, ...got])
    const rest = await ids(s.generate([], greedy(8 - seen)))
    t.deepEqual([...got, ...rest], whole)
    s.reset()
  }
  s.dispose()
})

test.serial('a string prompt gets BOS only when the session is empty', async (t) => {
  const m = await loadModel(paths['tiny-llama-q8_0.gguf'], { threads: 1 })
  const s = m.createSession()
  await ids(s.generate('hello', greedy(1)))
  const afterFirst = s.tokens.length
  t.deepEqual(s.tokens.slice(0, afterFirst - 1), m.tokenize('hello', { special: true }))
  await ids(s.generate(' world', greedy(1)))
  t.deepEqual(s.tokens.slice(afterFirst, -1), m.tokenize(' world', { addBos: false, special: true }))
  s.dispose()
  await m.dispose()
})

test.serial('concurrent streams give the tokens each gives alone; break and abort of one leave the others unchanged', async (t) => {
  const prompts = ['once upon a time', 'the rain in spain', 'a', 'lighthouses guide ships at night'].map((p) => model.tokenize(p))
  const options = (i: number) => (i % 2 === 0 ? greedy(24) : { maxTokens: 24, temperature: 0.9, seed: 40 + i, ignoreEos: true })
  const alone: number[][] = []
  for (let i = 0; i < prompts.length; i++) alone.push(await ids(model.generate(prompts[i], options(i))))
  const together = await Promise.all(prompts.map((p, i) => ids(model.generate(p, options(i)))))
  t.deepEqual(together, alone)
  // Stream 1 breaks after 5 tokens, stream 2 is aborted after 8: the others are unchanged.
  const controller = new AbortController()
  const runs = prompts.map(async (p, i) => {
    if (i === 1) return ids(model.generate(p, options(i)), 5)
    if (i !== 2) return ids(model.generate(p, options(i)))
    const out: number[] = []
    try {
      for await (const tok of model.generate(p, { ...options(i), signal: controller.signal })) {
        out.push(tok.id)
        if (out.length === 8) controller.abort()
      }
    } catch (err: any) {
      t.is(err.code, 'ABORT_ERR')
    }
    return out
  })
  const results = await Promise.all(runs)
  t.deepEqual(results[0], alone[0])
  t.deepEqual(results[1], alone[1].slice(0, 5))
  t.deepEqual(results[2], alone[2].slice(0, 8))
  t.deepEqual(results[3], alone[3])
  t.is(model.stats().sequences, 0)
})

test.serial('one generation at a time per session', async (t) => {
  const s = model.createSession()
  const it = s.generate('hello', greedy(50))
  await it.next()
  const other = s.generate('again', greedy(1))
  await t.throwsAsync(() => other.next(), { code: 'ERR_SESSION_BUSY' } as any)
  t.throws(() => s.truncate(0), { code: 'ERR_SESSION_BUSY' } as any)
  await it.return(undefined)
  s.truncate(0)
  t.deepEqual(s.tokens, [])
  s.dispose()
})

test.serial('generations beyond maxSequences wait for a slot; their signal aborts the wait', async (t) => {
  const m = await loadModel(paths['tiny-llama-q8_0.gguf'], { threads: 1, maxSequences: 1 })
  t.is(m.info.maxSequences, 1)
  const first = m.generate('one', greedy(30))
  await first.next()
  // The second waits while the first holds the only slot; aborting ends the wait.
  const controller = new AbortController()
  const second = m.generate('two', { ...greedy(3), signal: controller.signal })
  const waiting = second.next()
  let settled = false
  waiting.then(() => (settled = true), () => (settled = true))
  await first.next()
  await first.next()
  t.false(settled, 'the second generation waits for the slot')
  controller.abort()
  await t.throwsAsync(() => waiting, { code: 'ABORT_ERR' } as any)
  // A waiting generation starts when the slot frees.
  const third = ids(m.generate('three', greedy(3)))
  await first.return(undefined)
  t.is((await third).length, 3)
  await m.dispose()
})

test.serial('a full session ends with contextFull, or shifts its context with { keep }', async (t) => {
  const m = await loadModel(paths['tiny-llama-q8_0.gguf'], { threads: 1 })
  const prompt = m.tokenize('the quick')
  const full = m.createSession({ contextSize: 16 })
  t.is(full.contextSize, 16)
  const out = await ids(full.generate(prompt, greedy(100)))
  t.is(prompt.length + out.length, 17)
  full.dispose()
  const shifting = m.createSession({ contextSize: 16, contextShift: { keep: 2 } })
  const shifted = await ids(shifting.generate(prompt, greedy(40)))
  t.is(shifted.length, 40)
  t.true(shifting.tokens.length <= 16)
  t.deepEqual(shifting.tokens.slice(0, 2), prompt.slice(0, 2))
  t.deepEqual(shifting.tokens.slice(-3), shifted.slice(-3))
  shifting.dispose()
  t.throws(() => m.createSession({ contextSize: 8, contextShift: { keep: 8 } }), { code: 'ERR_INVALID_OPTION' } as any)
  t.throws(() => m.createSession({ contextShift: 3 as any }), { code: 'ERR_INVALID_OPTION' } as any)
  await m.dispose()
})

test.serial('a q8_0 KV cache is refused for heads that are not whole blocks', async (t) => {
  // The fixture's heads are 8 values wide; Q8_0 blocks hold 32.
  await t.throwsAsync(() => loadModel(paths['tiny-llama-q8_0.gguf'], { kvCacheType: 'q8_0' }), { code: 'ERR_INVALID_OPTION' } as any)
  await t.throwsAsync(() => loadModel(paths['tiny-llama-q8_0.gguf'], { kvCacheType: 'q4' as any }), { code: 'ERR_INVALID_OPTION' } as any)
})

test.serial('dispose() stops running generations within one token and frees the model', async (t) => {
  const native = require('../index.js') as { liveModels(): number }
  // The models the tests before this one disposed may be dropped a moment after their dispose()
  // resolved (a worker thread lets go of them last); counting from before that would count their
  // drop as this model's.
  const waitForLive = async (n: number) => {
    for (let i = 0; i < 500 && native.liveModels() !== n; i++) await new Promise((r) => setTimeout(r, 10))
    return native.liveModels()
  }
  t.is(await waitForLive(1), 1, 'only the suite model is alive before this test')
  const m = await loadModel(paths['tiny-llama-q8_0.gguf'], { threads: 2 })
  const live = native.liveModels()
  const session = m.createSession()
  const chat = m.createChat()
  const long = { maxTokens: 500, temperature: 0, ignoreEos: true }
  const counts = [0, 0, 0]
  let disposedAt = -1
  const run = async (i: number, it: AsyncIterable<unknown>) => {
    try {
      for await (const _ of it) {
        counts[i]++
        if (i === 0 && counts[0] === 5) {
          disposedAt = counts[0]
          await m.dispose()
        }
      }
      return 'ended'
    } catch (err) {
      return (err as { code?: string }).code
    }
  }
  const codes = await Promise.all([
    run(0, m.generate('the quick brown fox', long)),
    run(1, session.generate('jumps over', long)),
    run(2, chat.send('hello', long)),
  ])
  t.deepEqual(codes, ['ERR_DISPOSED', 'ERR_DISPOSED', 'ERR_DISPOSED'])
  // The disposing loop asked for no more than the token already in flight.
  t.true(counts[0] <= disposedAt + 1, `${counts[0]} tokens after dispose at ${disposedAt}`)
  t.true(counts[1] < 50 && counts[2] < 50, JSON.stringify(counts))
  // Nothing holds the model any more: it is freed without waiting for garbage collection.
  t.is(await waitForLive(live - 1), live - 1)
  t.throws(() => session.tokens, { code: 'ERR_DISPOSED' })
  t.throws(() => m.createSession(), { code: 'ERR_DISPOSED' })
  await t.throwsAsync(async () => {
    for await (const _ of session.generate([1, 2])) void _
  }, { code: 'ERR_DISPOSED' })
})
