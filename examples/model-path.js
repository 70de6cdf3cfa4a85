// Shared by the examples: the model to run, `--model path.gguf` from the command line or else
// SmolLM2-135M-Instruct (92 MB), fetched into the model cache the first time.
'use strict'

const path = require('node:path')

async function modelPath(argv = process.argv.slice(2)) {
  const i = argv.indexOf('--model')
  if (i >= 0 && argv[i + 1]) return argv[i + 1]
  const { ensureModel } = await import(path.join(__dirname, '..', 'scripts', 'models.mjs'))
  return ensureModel('smollm2', { log: (m) => process.stderr.write(`${m}\n`) })
}

module.exports = { modelPath }
