// Lifecycle, each scenario in a child process (__test__/helpers/lifecycle-child.cjs): the
// finalizer frees a model that was never disposed, abandoned generations do not keep the process
// alive, and models in several worker_threads at once work and exit cleanly.
import { spawnSync } from 'node:child_process'
import path from 'node:path'

import test from 'ava'

import { fixtures } from './helpers/fixtures'

const CHILD = path.join(__dirname, 'helpers', 'lifecycle-child.cjs')

async function runChild(scenario: string, nodeArgs: string[] = []) {
  const paths = await fixtures()
  const started = performance.now()
  const r = spawnSync(process.execPath, [...nodeArgs, CHILD, scenario, paths['tiny-llama-q8_0.gguf']], {
    encoding: 'utf8',
    timeout: 60_000,
  })
  const seconds = (performance.now() - started) / 1000
  const line = r.stdout.trim().split('\n').pop() ?? ''
  return { status: r.status, signal: r.signal, seconds, stderr: r.stderr, result: line ? JSON.parse(line) : undefined }
}

test('a model file truncated while loaded: coded errors, and the process lives on', async (t) => {
  const r = await runChild('truncate')
  t.is(r.status, 0, r.stderr)
  const changed = ['ERR_MODEL_FILE_CHANGED', 'ERR_IO']
  for (const [mode, result] of Object.entries(r.result as Record<string, { first: number; running: string; next: string }>)) {
    t.is(result.first, 3, mode)
    t.true(changed.includes(result.running), `${mode}: the running generation ended with ${result.running}`)
    t.true(changed.includes(result.next), `${mode}: the next one ended with ${result.next}`)
  }
  t.is((r.result as { resident: { running: string } }).resident.running, 'ERR_MODEL_FILE_CHANGED')
  t.log(JSON.stringify(r.result))
})

test('a model dropped without dispose() is freed by its finalizer', async (t) => {
  const r = await runChild('finalizer', ['--expose-gc'])
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.result, { loaded: 1, after: 0 })
})

test('abandoned generations and sessions do not keep the process alive', async (t) => {
  const r = await runChild('abandon')
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.result, { ok: true })
  t.log(`the child exited ${r.seconds.toFixed(2)} s after it started`)
  t.true(r.seconds < 20, `took ${r.seconds} s`)
})

test('models in several worker threads at once give the main thread tokens and exit cleanly', async (t) => {
  const r = await runChild('workers')
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.result, { codes: [0, 0, 0], same: [true, true, true], live: 0 })
})
