// The corruption corpus (scripts/lib/corruption.mjs): damaged copies of a tiny fixture and of
// the real SmolLM2 header, each loaded with loadModel. Every one must reject with one of the
// error codes its defect allows, without crashing, hanging or allocating for counts and lengths
// that lie (2^40 items or bytes).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

import test from 'ava'

import { loadModel } from '../lib/index.js'
import { resolveModel } from './helpers/agreement'
import { fixtures, REPO_ROOT } from './helpers/fixtures'

interface Case {
  name: string
  bytes: Uint8Array
  expect: string[]
}
interface CorruptionModule {
  corruptions(bytes: Uint8Array, options?: { every?: number }): Case[]
  layout(bytes: Uint8Array): { dataOffset: number }
}

const corruption = import(pathToFileURL(path.join(REPO_ROOT, 'scripts', 'lib', 'corruption.mjs')).href) as Promise<CorruptionModule>
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chord-corrupt-'))

test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }))

/** Loads every case; returns what went wrong, and the peak RSS growth in MB. */
async function check(label: string, cases: Case[]): Promise<{ failures: string[]; rssGrowthMb: number }> {
  const failures: string[] = []
  const peakBefore = process.resourceUsage().maxRSS
  for (const [i, c] of cases.entries()) {
    const file = path.join(dir, `${label}-${i}.gguf`)
    fs.writeFileSync(file, c.bytes)
    try {
      const m = await loadModel(file, { threads: 1 })
      if (!c.expect.includes('LOADS')) failures.push(`${c.name}: loaded`)
      await m.dispose()
    } catch (err) {
      const e = err as { code?: string; message?: string }
      if (!e.code || !c.expect.includes(e.code)) failures.push(`${c.name}: ${e.code} ${e.message}`)
    } finally {
      fs.rmSync(file, { force: true })
    }
  }
  return { failures, rssGrowthMb: (process.resourceUsage().maxRSS - peakBefore) / 1024 }
}

test.serial('every damaged copy of a tiny model is a coded error', async (t) => {
  const { corruptions } = await corruption
  const paths = await fixtures()
  const cases = corruptions(fs.readFileSync(paths['tiny-llama-q8_0.gguf']))
  const { failures, rssGrowthMb } = await check('tiny', cases)
  t.log(`${cases.length} damaged files, peak RSS grew ${rssGrowthMb.toFixed(1)} MB`)
  t.deepEqual(failures, [])
  t.true(rssGrowthMb < 64)
})

test.serial("every damaged copy of SmolLM2's header is a coded error", async (t) => {
  const { corruptions, layout } = await corruption
  const { file } = await resolveModel({ modelKey: 'smollm2', fetch: true })
  // The header with its vocabulary: a few MB at the start of the file.
  const fd = fs.openSync(file!, 'r')
  const head = Buffer.alloc(8 << 20)
  fs.readSync(fd, head, 0, head.length, 0)
  fs.closeSync(fd)
  const { dataOffset } = layout(head)
  const header = head.subarray(0, dataOffset + 4096)
  // Its tensor data is absent, so whatever the defect, truncation is also a right answer.
  const cases = corruptions(header, { every: 25 }).map((c) => ({ ...c, expect: [...c.expect, 'ERR_GGUF_TRUNCATED'] }))
  const { failures, rssGrowthMb } = await check('smollm2', cases)
  t.log(`${cases.length} damaged files from a ${(dataOffset / 1e6).toFixed(2)} MB header, peak RSS grew ${rssGrowthMb.toFixed(1)} MB`)
  t.deepEqual(failures, [])
  t.true(rssGrowthMb < 64)
})
