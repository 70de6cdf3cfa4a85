// `npm run test:models`: the agreement suites of the larger models (__test__/models/*.spec.ts),
// each run only when its model is in the cache (node scripts/fetch-models gemma3 qwen05 qwen15).
// Mirrors package.json's "ava" block, with a long timeout and one file at a time so that two
// models are never in memory (or computing) at once.
export default {
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  files: ['__test__/models/**/*.spec.ts'],
  timeout: '30m',
  workerThreads: false,
  concurrency: 1,
  verbose: true,
  // The model specs run only under this config (package.json's glob also matches them).
  environmentVariables: { CHORD_LLM_MODEL_SUITE: '1' },
}
