// Child processes of __test__/lifecycle.spec.ts, each one scenario (argv[2]), printing one JSON
// line of results. Run in their own process so that exit, garbage collection and workers can be
// observed from outside.
'use strict'

const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads')
const { loadModel } = require('../../lib/index.js')
const native = require('../../index.js')

const [, , scenario, modelPath] = process.argv
const greedy = (maxTokens) => ({ maxTokens, temperature: 0, ignoreEos: true })

async function tokens(it, stopAfter = Infinity) {
  const out = []
  for await (const t of it) {
    out.push(t.id)
    if (out.length >= stopAfter) break
  }
  return out
}

/** Generates until an error; returns its code (or 'ended'). */
async function codeOf(it) {
  try {
    for await (const _ of { [Symbol.asyncIterator]: () => it }) void _
    return 'ended'
  } catch (err) {
    return err.code ?? String(err)
  }
}

const scenarios = {
  // The model file truncated while loaded (resident, and paged both ways): the running
  // generation and later ones fail with a coded error, and the process lives on.
  async truncate() {
    const fs = require('node:fs')
    const os = require('node:os')
    const path = require('node:path')
    const results = {}
    const modes = {
      resident: { paging: 'never' },
      pagedMmap: { paging: 'always', pagingMethod: 'mmap' },
      pagedRead: { paging: 'always', pagingMethod: 'read' },
    }
    for (const [name, options] of Object.entries(modes)) {
      const copy = path.join(os.tmpdir(), `chord-truncate-${process.pid}-${name}.gguf`)
      fs.copyFileSync(modelPath, copy)
      const probe = await loadModel(copy, { threads: 1 })
      const budget = Math.ceil((probe.info.weightBytes / (probe.info.layers + 1)) * 1.5)
      await probe.dispose()
      const model = await loadModel(copy, { threads: 1, ...options, ...(options.paging === 'always' ? { memoryBudget: budget } : {}) })
      const it = model.generate('the quick brown fox', greedy(200))[Symbol.asyncIterator]()
      const first = [await it.next(), await it.next(), await it.next()].filter((r) => !r.done)
      fs.truncateSync(copy, 4096)
      const running = await codeOf(it)
      const next = await codeOf(model.generate('jumps over', greedy(5)))
      results[name] = { first: first.length, running, next }
      await model.dispose()
      fs.rmSync(copy)
    }
    return results
  },
  // A model dropped without dispose() is freed by its finalizer.
  // (A session alive keeps its model alive: both go out of scope here.)
  async finalizer() {
    const use = async () => {
      const model = await loadModel(modelPath, { threads: 1 })
      const session = model.createSession()
      await tokens(session.generate('the quick', greedy(4)))
      await tokens(model.generate('brown fox', greedy(4)))
      await tokens(model.createChat().send('hi', greedy(2)))
    }
    await use()
    const loaded = native.liveModels()
    for (let i = 0; i < 50 && native.liveModels() > 0; i++) {
      global.gc()
      await new Promise((r) => setTimeout(r, 20))
    }
    return { loaded, after: native.liveModels() }
  },
  // Leaving generations mid-stream (break, or simply never asking again) keeps nothing alive:
  // the process exits on its own once the script is done.
  async abandon() {
    const model = await loadModel(modelPath, { threads: 1 })
    await tokens(model.generate('the quick', greedy(100)), 3)
    const it = model.generate('brown fox', greedy(100))[Symbol.asyncIterator]()
    await it.next()
    const session = model.createSession()
    await tokens(session.generate('jumps', greedy(100)), 2)
    globalThis.keep = { model, it, session }
    return { ok: true }
  },
  // Several workers each load a model and generate at once; every one gives the tokens the main
  // thread gives, and all exit cleanly.
  async workers() {
    const model = await loadModel(modelPath, { threads: 1 })
    const expected = await tokens(model.generate('the quick brown fox', greedy(16)))
    await model.dispose()
    const runs = Array.from({ length: 3 }, () =>
      new Promise((resolve, reject) => {
        const worker = new Worker(__filename, { argv: ['worker', modelPath], workerData: { prompt: 'the quick brown fox' } })
        let result
        worker.on('message', (m) => (result = m))
        worker.on('error', reject)
        worker.on('exit', (code) => resolve({ code, result }))
      }),
    )
    const done = await Promise.all(runs)
    // Freed on a release thread of their own, just after dispose() returns.
    for (let i = 0; i < 100 && native.liveModels() > 0; i++) await new Promise((r) => setTimeout(r, 10))
    return {
      codes: done.map((d) => d.code),
      same: done.map((d) => JSON.stringify(d.result) === JSON.stringify(expected)),
      live: native.liveModels(),
    }
  },
}

async function workerMain() {
  const model = await loadModel(modelPath, { threads: 1 })
  const out = await tokens(model.generate(workerData.prompt, greedy(16)))
  await model.dispose()
  parentPort.postMessage(out)
}

if (!isMainThread) {
  workerMain()
} else {
  scenarios[scenario]().then(
    (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
    (err) => {
      process.stdout.write(`${JSON.stringify({ error: `${err.code ?? ''} ${err.message}` })}\n`)
      process.exitCode = 1
    },
  )
}
