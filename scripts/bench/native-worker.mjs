// Bench worker for llama.cpp built for this CPU (scripts/build-native-llama), run in its own
// process by scripts/bench.mjs: runs native_worker.py with the build's python, in place of this
// process (the figures, peak RSS included, are the python process's), and passes its JSON line on.
import { readConfig, runWorker } from './common.mjs';
import { runNativeScript } from './native.mjs';

runWorker('llama.cpp native', async () => {
  const { engine: _engine, ok: _ok, ...figures } = runNativeScript('native_worker.py', readConfig());
  return figures;
});
