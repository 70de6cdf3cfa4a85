// Where scripts/build-native-llama puts llama.cpp built for this CPU (llama-cpp-python compiled
// with -DGGML_NATIVE=ON), for the bench's "native" engine.
import path from 'node:path';
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
