// Bench worker for llama.cpp built for this CPU (scripts/build-native-llama), run in its own
// process by scripts/bench.mjs: runs native_worker.py with the build's python, in place of this
// process (the figures, peak RSS included, are the python process's), and passes its JSON line on.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readConfig, runWorker } from './common.mjs';
import { nativeLlamaDir, nativeLlamaPython } from './native.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

runWorker('llama.cpp native', async () => {
  const cfg = readConfig();
  const python = nativeLlamaPython();
  if (!fs.existsSync(python)) {
    throw new Error(`not loadable: no native llama.cpp build in ${nativeLlamaDir()} (run scripts/build-native-llama)`);
  }
  const r = spawnSync(python, [path.join(here, 'native_worker.py'), JSON.stringify(cfg)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 16 << 20,
  });
  const line = (r.stdout || '').split('\n').reverse().find((l) => l.trim().startsWith('{'));
  const res = line ? JSON.parse(line) : null;
  if (!res) throw new Error(`native worker exited with code ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-4).join('\n')}`);
  if (!res.ok) throw new Error(res.error);
  const { engine: _engine, ok: _ok, ...figures } = res;
  return figures;
});
