// Where scripts/build-native-llama puts llama.cpp built for this CPU (llama-cpp-python compiled
// with -DGGML_NATIVE=ON), for the bench's "native" engine.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { modelDir } from '../models.mjs';

/** The llama-cpp-python release built: llama.cpp as of its vendored commit. */
export const NATIVE_LLAMA_VERSION = '0.3.36';

/** $CHORD_LLM_NATIVE_LLAMA, or native-llama/ beside the model cache. */
export function nativeLlamaDir() {
  const env = process.env.CHORD_LLM_NATIVE_LLAMA;
  return path.resolve(env && env.trim() ? env : path.join(path.dirname(modelDir()), 'native-llama'));
}

/** The virtual environment's python. */
export function nativeLlamaPython(dir = nativeLlamaDir()) {
  return process.platform === 'win32' ? path.join(dir, 'Scripts', 'python.exe') : path.join(dir, 'bin', 'python');
}

/**
 * Runs `script` (a python file beside this one) with the build's python and `cfg` as its JSON
 * argument; returns the JSON object it printed last on stdout, with `ok: true` (throws otherwise).
 */
export function runNativeScript(script, cfg) {
  const python = nativeLlamaPython();
  if (!fs.existsSync(python)) {
    throw new Error(`not loadable: no native llama.cpp build in ${nativeLlamaDir()} (run scripts/build-native-llama)`);
  }
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), script);
  const r = spawnSync(python, [file, JSON.stringify(cfg)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  const line = (r.stdout || '').split('\n').reverse().find((l) => l.trim().startsWith('{'));
  const res = line ? JSON.parse(line) : null;
  if (!res) throw new Error(`${script} exited with code ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-4).join('\n')}`);
  if (!res.ok) throw new Error(res.error);
  return res;
}
