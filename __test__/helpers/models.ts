// Paths of the real models the tests use, fetched into the model cache on first use.
import path from 'node:path'
import { pathToFileURL } from 'node:url'

export async function smollm2Path(): Promise<string> {
  const url = pathToFileURL(path.join(__dirname, '..', '..', 'scripts', 'models.mjs')).href
  const { ensureModel } = await import(url)
  return ensureModel('smollm2', { log: (m: string) => process.stderr.write(`${m}\n`) })
}
