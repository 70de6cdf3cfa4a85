// Every example in examples/ runs to its end against SmolLM2, as a user would run it.
import { spawn } from 'node:child_process'
import path from 'node:path'

import test from 'ava'

import { resolveModel } from './helpers/agreement'
import { REPO_ROOT } from './helpers/fixtures'

let smollm: string

test.before(async () => {
  const { file, reason } = await resolveModel({ modelKey: 'smollm2', fetch: true })
  if (!file) throw new Error(`SmolLM2 is needed: ${reason}`)
  smollm = file
})

function example(name: string, args: string[] = [], input = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'examples', name), '--model', smollm, ...args], { cwd: REPO_ROOT })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(input)
  })
}

test('demo.js streams a chat reply', async (t) => {
  const r = await example('demo.js', ['--max-tokens', '16', '--threads', '2'])
  t.is(r.code, 0, r.stderr)
  t.regex(r.stderr, /tok\/s after the first/)
})

test('chat.js answers lines from stdin', async (t) => {
  const r = await example('chat.js', ['--max-tokens', '8'], 'Hello!\n/reset\nHi again\n/exit\n')
  t.is(r.code, 0, r.stderr)
  t.true(r.stdout.trim().length > 0)
})

test('stream-abort.js aborts one stream and breaks out of another', async (t) => {
  const r = await example('stream-abort.js')
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /\[aborted after \d+ tokens\]/)
  t.regex(r.stdout, /first sentence:.*[.!?]\n$/s)
})

test('paging.js runs under half the weights and reports the pager', async (t) => {
  const r = await example('paging.js')
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /paged: true/)
  t.regex(r.stdout, /\d+ layer loads/)
})

test('workers.js generates in two worker threads and exits', async (t) => {
  const r = await example('workers.js')
  t.is(r.code, 0, r.stderr)
  t.is((r.stdout.match(/^\[worker\]/gm) ?? []).length, 2)
})

test('server.mjs serves the openai client', async (t) => {
  const r = await example('server.mjs')
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /^serving on http:\/\/127\.0\.0\.1:\d+\/v1\n.+/s)
})
