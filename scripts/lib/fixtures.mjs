// Deterministic test fixtures for chord-llm: tiny llama models (a few hundred KB,
// one per tensor type), GGUF files exercising every metadata type, and malformed
// files that each trigger one specific loader error.
//
// Everything comes from a seeded PRNG and plain float arithmetic (no Math.random,
// no transcendental functions), so every run on every machine gives identical
// bytes. All tiny-llama variants share the same float weights, so tests can
// compare outputs across quantization types.
//
// Exports:
//   makeFixtures(dir) -> Promise<Record<fileName, absolutePath>>  (idempotent, safe across processes)
//   FIXTURES           fileName -> { kind: 'valid' | 'malformed', description, expect?, spec?() }
//   TINY_LLAMA         hyperparameters of the tiny models
//   buildTokenizer()   the tiny byte-level BPE vocabulary (tokens, types, merges, special ids)
//   tinyLlamaSpec(variant) / allTypesSpec(version)   writer specs (to re-derive expected bytes)

import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GGMLType, gv, tensorNbytes, writeGGUF } from './gguf-writer.mjs';

// Bump to force regeneration when the output should change for reasons the
// source hash below can't see.
const FIXTURES_VERSION = 1;

export const TINY_LLAMA = Object.freeze({
  arch: 'llama',
  nEmbd: 64,
  nLayer: 2,
  nHead: 4,
  nHeadKv: 2, // GQA: two query heads per KV head
  // 96 = 3 blocks of 32: quantized rows are a whole number of blocks but not a
  // power of two, which catches kernels that assume pairs of blocks.
  nFf: 96,
  nCtxTrain: 256,
  ropeFreqBase: 10000,
  rmsEps: 1e-5,
  nMerges: 241, // vocab = 3 specials + 256 bytes + 241 merges = 500
});

// ---------------------------------------------------------------------------
// PRNG: sfc32-style generator on 32-bit integer ops only.

function makeRng(seed) {
  let a = 0x9e3779b9 ^ seed;
  let b = 0x243f6a88;
  let c = 0xb7e15162;
  let d = 1;
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (a + b + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t;
  };
  for (let i = 0; i < 16; i++) next();
  const uniform = () => next() / 4294967296;
  // Irwin-Hall sum of 4 uniforms, rescaled to unit variance: close enough to a
  // normal for weights, and avoids Math.log/cos whose last bits may vary by engine.
  const normal = () => (uniform() + uniform() + uniform() + uniform() - 2) * Math.sqrt(3);
  return { next, uniform, normal };
}

// ---------------------------------------------------------------------------
// Tokenizer: GPT-2 style byte-level BPE trained on a small text.

const CORPUS = `Hello world! This is a tiny model that lives inside the test suite. It was
made to check that a GGUF file can be read, that its tokenizer works, and that the
numbers coming out of the model are the same as the numbers coming out of the
reference. The weights are random, so the model does not know anything, but the
words it was built from are ordinary English words.

Hello again, world. Once upon a time there was a small robot who wanted to learn
how to write. Every morning the robot would open a book, read a page, and then try
to write the same page again in its own words. Some days the words came out right,
and some days they did not. The robot did not mind. It kept a notebook with the
words it liked the most: hello, world, light, water, river, mountain, morning,
evening, story, little, and together.

One evening the robot met a cat who was sitting by the river. "What are you
writing?" asked the cat. "A story about the world," said the robot, "and about
everything in it that I have not seen yet." The cat thought about this for a long
time. "Then you will need a very large notebook," the cat said, and went back to
watching the water.

The next morning the robot started a new page. It wrote about the cat, the river,
the mountain and the light on the water. It wrote that the world is large and that
the best way to learn about it is to ask questions, to listen, and to write things
down. When the page was finished, the robot read it out loud: hello world, hello
river, hello mountain, hello cat. Then it closed the notebook and went outside.

Numbers matter too: 1 2 3 4 5 6 7 8 9 10, 42, 100, 2024, 3.14 and 0.5 are all
numbers that a tokenizer should handle. So do punctuation marks like commas,
periods, question marks? exclamation marks! quotes "like these" and 'these', and
symbols such as + - * / = < > ( ) [ ] { } # @ & % $.
`;

/** GPT-2's reversible byte -> printable character table. */
export function bytesToUnicode() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  // Keep GPT-2's order (printable bytes first) since it decides the token ids.
  return bs.map((b, i) => [b, String.fromCodePoint(cs[i])]);
}

// The 'smollm' pre-tokenizer as llama.cpp defines it: every digit on its own,
// then the GPT-2 split.
function pretokenize(text) {
  const out = [];
  const gpt2 = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  for (const part of text.split(/(\p{N})/u)) {
    if (!part) continue;
    for (const m of part.matchAll(gpt2)) out.push(m[0]);
  }
  return out;
}

export const SPECIAL_TOKENS = Object.freeze(['<|endoftext|>', '<|im_start|>', '<|im_end|>']);

let tokenizerCache;
/** The tiny vocabulary: control tokens 0..2, then the 256 byte tokens, then merges in rank order. */
export function buildTokenizer(nMerges = TINY_LLAMA.nMerges) {
  if (tokenizerCache && tokenizerCache.merges.length === nMerges) return tokenizerCache;
  const table = bytesToUnicode();
  const byteChar = new Map(table);
  const enc = (s) => [...Buffer.from(s, 'utf8')].map((b) => byteChar.get(b)).join('');

  const counts = new Map();
  for (const w of pretokenize(CORPUS)) {
    const u = enc(w);
    counts.set(u, (counts.get(u) ?? 0) + 1);
  }
  // Sorted so training never depends on Map insertion order.
  const words = [...counts.entries()]
    .sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
    .map(([w, c]) => ({ syms: [...w], count: c }));

  const merges = [];
  while (merges.length < nMerges) {
    const pairs = new Map();
    for (const { syms, count } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = syms[i] + ' ' + syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + count);
      }
    }
    let best;
    let bestCount = 0;
    for (const [k, c] of pairs) {
      if (c > bestCount || (c === bestCount && k < best)) { best = k; bestCount = c; }
    }
    if (!best) throw new Error(`corpus only supports ${merges.length} merges`);
    merges.push(best);
    const [a, b] = best.split(' ');
    for (const w of words) {
      const s = w.syms;
      const next = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) { next.push(a + b); i++; } else next.push(s[i]);
      }
      w.syms = next;
    }
  }

  const tokens = [...SPECIAL_TOKENS, ...table.map(([, ch]) => ch), ...merges.map((m) => m.replace(' ', ''))];
  if (new Set(tokens).size !== tokens.length) throw new Error('duplicate token in tiny vocabulary');
  const tokenTypes = tokens.map((_, i) => (i < SPECIAL_TOKENS.length ? 3 : 1)); // 3 control, 1 normal
  tokenizerCache = { tokens, tokenTypes, merges, bosId: 0, eosId: 0, imStartId: 1, imEndId: 2 };
  return tokenizerCache;
}

const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function tokenizerKv(tok, chatTemplate = true) {
  return [
    ['tokenizer.ggml.model', gv.str('gpt2')],
    ['tokenizer.ggml.pre', gv.str('smollm')],
    ['tokenizer.ggml.tokens', gv.arr('str', tok.tokens)],
    ['tokenizer.ggml.token_type', gv.arr('i32', tok.tokenTypes)],
    ['tokenizer.ggml.merges', gv.arr('str', tok.merges)],
    ['tokenizer.ggml.bos_token_id', gv.u32(tok.bosId)],
    ['tokenizer.ggml.eos_token_id', gv.u32(tok.eosId)],
    ['tokenizer.ggml.add_bos_token', gv.bool(false)],
    ['tokenizer.ggml.add_eos_token', gv.bool(false)],
    ...(chatTemplate ? [['tokenizer.chat_template', gv.str(CHATML_TEMPLATE)]] : []),
  ];
}

// ---------------------------------------------------------------------------
// Tiny llama.

// llama.cpp's LLAMA_FTYPE_* values for general.file_type.
const FILE_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 7, BF16: 32 };

function randomTensor(rng, n, std, mean = 0) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = mean + std * rng.normal();
  return a;
}

/**
 * Float weights in generation order. `untied` appends output.weight last so the
 * other tensors are identical between tied and untied models. `hp` overrides
 * hyperparameters (malformed variants).
 */
export function tinyLlamaWeights({ untied = false, hp = TINY_LLAMA, seed = 1234 } = {}) {
  const rng = makeRng(seed);
  const nVocab = buildTokenizer().tokens.length;
  const { nEmbd, nLayer, nHead, nHeadKv, nFf } = hp;
  const headDim = nEmbd / nHead;
  const nEmbdKv = headDim * nHeadKv;
  // Scales tried against llama.cpp: with smaller ones greedy decoding falls into
  // a fixed point (one token repeated), which would let position/KV-cache bugs
  // go unnoticed. These give varied, context-dependent output and a top-1
  // probability of ~0.1-0.3, so argmax is stable under small numeric differences.
  const w = [];
  const add = (name, dims, std, mean = 0, norm = false) =>
    w.push({ name, dims, norm, values: randomTensor(rng, dims.reduce((a, b) => a * b, 1), std, mean) });
  add('token_embd.weight', [nEmbd, nVocab], 0.3);
  for (let l = 0; l < nLayer; l++) {
    add(`blk.${l}.attn_norm.weight`, [nEmbd], 0.1, 1, true);
    add(`blk.${l}.attn_q.weight`, [nEmbd, nEmbd], 0.2);
    add(`blk.${l}.attn_k.weight`, [nEmbd, nEmbdKv], 0.2);
    add(`blk.${l}.attn_v.weight`, [nEmbd, nEmbdKv], 0.2);
    add(`blk.${l}.attn_output.weight`, [nEmbd, nEmbd], 0.16);
    add(`blk.${l}.ffn_norm.weight`, [nEmbd], 0.1, 1, true);
    add(`blk.${l}.ffn_gate.weight`, [nEmbd, nFf], 0.2);
    add(`blk.${l}.ffn_up.weight`, [nEmbd, nFf], 0.2);
    add(`blk.${l}.ffn_down.weight`, [nFf, nEmbd], 0.16);
  }
  add('output_norm.weight', [nEmbd], 0.1, 1, true);
  if (untied) add('output.weight', [nEmbd, nVocab], 0.3);
  return w;
}

function llamaKv({ name, fileType, hp = TINY_LLAMA, arch = 'llama', extra = [], chatTemplate = true }) {
  const tok = buildTokenizer();
  const a = arch;
  return [
    ['general.architecture', gv.str(a)],
    ['general.name', gv.str(name)],
    ['general.file_type', gv.u32(fileType)],
    ['general.quantization_version', gv.u32(2)],
    ...extra,
    [`${a}.context_length`, gv.u32(hp.nCtxTrain)],
    [`${a}.embedding_length`, gv.u32(hp.nEmbd)],
    [`${a}.block_count`, gv.u32(hp.nLayer)],
    [`${a}.feed_forward_length`, gv.u32(hp.nFf)],
    [`${a}.attention.head_count`, gv.u32(hp.nHead)],
    [`${a}.attention.head_count_kv`, gv.u32(hp.nHeadKv)],
    [`${a}.rope.dimension_count`, gv.u32(hp.nEmbd / hp.nHead)],
    [`${a}.rope.freq_base`, gv.f32(hp.ropeFreqBase)],
    [`${a}.attention.layer_norm_rms_epsilon`, gv.f32(hp.rmsEps)],
    [`${a}.vocab_size`, gv.u32(tok.tokens.length)],
    ...tokenizerKv(tok, chatTemplate),
  ];
}

/**
 * Writer spec for a tiny llama variant: 2D weights in `type`, norms always F32.
 * `edit(tensors)` lets malformed variants change the tensor list.
 */
export function tinyLlamaSpec({
  type = 'F32', untied = false, version = 3, alignment, hp = TINY_LLAMA,
  typeOf, edit, kvExtra = [], name, chatTemplate = true,
} = {}) {
  const weights = tinyLlamaWeights({ untied, hp });
  let tensors = weights.map((w) => ({
    name: w.name,
    dims: w.dims,
    type: w.norm ? 'F32' : (typeOf?.(w) ?? type),
    data: w.values,
  }));
  if (edit) tensors = edit(tensors, weights);
  const extra = [...kvExtra];
  if (alignment !== undefined) extra.push(['general.alignment', gv.u32(alignment)]);
  return {
    version,
    kv: llamaKv({ name: name ?? `chord-llm tiny llama ${type}${untied ? ' untied' : ''}`, fileType: FILE_TYPE[type] ?? 0, hp, extra, chatTemplate }),
    tensors,
  };
}

// ---------------------------------------------------------------------------
// all-types: every metadata value type, nested arrays, every dims count, every
// tensor encoding the writer knows, streamed tensors. Not a model.

export function allTypesSpec(version = 3) {
  const rng = makeRng(99);
  const floats = (n, std = 1) => randomTensor(rng, n, std);
  const kv = [
    ['general.architecture', gv.str('chordtest')],
    ['general.name', gv.str(`all metadata types, GGUF v${version}`)],
    ['test.u8', gv.u8(255)],
    ['test.i8', gv.i8(-128)],
    ['test.u16', gv.u16(65535)],
    ['test.i16', gv.i16(-32768)],
    ['test.u32', gv.u32(4294967295)],
    ['test.i32', gv.i32(-2147483648)],
    ['test.f32', gv.f32(Math.fround(3.14159265))],
    ['test.bool.true', gv.bool(true)],
    ['test.bool.false', gv.bool(false)],
    ['test.str', gv.str('hello, GGUF — ünïcödé ✓ 🦀')],
    ['test.str.empty', gv.str('')],
    ['test.u64', gv.u64(0xffffffffffffffffn)],
    ['test.i64', gv.i64(-0x8000000000000000n)],
    ['test.f64', gv.f64(Math.PI)],
    ['test.arr.u8', gv.arr('u8', [0, 1, 127, 128, 255])],
    ['test.arr.i8', gv.arr('i8', [-128, -1, 0, 1, 127])],
    ['test.arr.u16', gv.arr('u16', [0, 1, 65535])],
    ['test.arr.i16', gv.arr('i16', [-32768, 0, 32767])],
    ['test.arr.u32', gv.arr('u32', [0, 1, 4294967295])],
    ['test.arr.i32', gv.arr('i32', [-2147483648, 0, 2147483647])],
    ['test.arr.f32', gv.arr('f32', [0, -0, 1.5, -2.25, Infinity, -Infinity, 1e-45, 3.4028234663852886e38])],
    ['test.arr.bool', gv.arr('bool', [true, false, true])],
    ['test.arr.str', gv.arr('str', ['a', '', 'ünï', 'with space', 'line\nbreak', '🦀'])],
    ['test.arr.u64', gv.arr('u64', [0n, 1n, 0xffffffffffffffffn])],
    ['test.arr.i64', gv.arr('i64', [-0x8000000000000000n, 0n, 0x7fffffffffffffffn])],
    ['test.arr.f64', gv.arr('f64', [0, -1e300, Math.E, 5e-324])],
    ['test.arr.empty', gv.arr('u32', [])],
    ['test.arr.empty_str', gv.arr('str', [])],
    ['test.arr.nested', gv.arr('array', [gv.arr('i32', [1, 2, 3]), gv.arr('i32', []), gv.arr('i32', [-4])])],
    ['test.arr.nested_str', gv.arr('array', [gv.arr('str', ['a', 'b']), gv.arr('str', ['c'])])],
    ['test.arr.nested3', gv.arr('array', [gv.arr('array', [gv.arr('u8', [1]), gv.arr('u8', [2, 3])]), gv.arr('array', [])])],
    ['test.arr.mixed_nested', gv.arr('array', [gv.arr('f64', [0.5]), gv.arr('bool', [true])])],
  ];
  const streamedValues = floats(96 * 4, 0.5);
  const iterValues = floats(40, 2);
  const tensors = [
    { name: 'test.f32', dims: [8], type: 'F32', data: Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]) },
    { name: 'test.f16', dims: [16, 2], type: 'F16', data: floats(32) },
    { name: 'test.bf16', dims: [16, 2], type: 'BF16', data: floats(32) },
    { name: 'test.q8_0', dims: [64, 3], type: 'Q8_0', data: floats(192, 0.1) },
    { name: 'test.q4_0', dims: [32, 2, 2], type: 'Q4_0', data: floats(128, 0.1) },
    { name: 'test.q4_1', dims: [32, 1, 2, 2], type: 'Q4_1', data: floats(128, 0.1) },
    { name: 'test.i8', dims: [5], type: 'I8', data: Uint8Array.from([0x80, 0xff, 0, 1, 0x7f]) },
    { name: 'test.i32', dims: [3], type: 'I32', data: new Uint8Array(Int32Array.from([-1, 0, 123456789]).buffer) },
    // Chunks of 50 values end mid-block, which the writer must carry over.
    { name: 'test.streamed_q8_0', dims: [96, 4], type: 'Q8_0', chunkElements: 50,
      data: (start, count) => streamedValues.slice(start, start + count) },
    { name: 'test.iterable_f16', dims: [40], type: 'F16',
      data: (function* () { for (let i = 0; i < 40; i += 7) yield iterValues.slice(i, i + 7); })() },
  ];
  return {
    version,
    alignment: version === 2 ? 64 : undefined,
    kv,
    tensors,
    // Kept for validation scripts: what the two generated tensors contain.
    expectedFloats: { 'test.streamed_q8_0': streamedValues, 'test.iterable_f16': iterValues },
  };
}

// ---------------------------------------------------------------------------
// Fixture table.

// Valid fixtures keep their writer spec, so tests can re-derive expected values.
const valid = (description, spec) => ({ kind: 'valid', description, spec, build: (p) => writeGGUF(p, spec()) });
const TINY = (type, description, opts = {}) => valid(description, () => tinyLlamaSpec({ type, ...opts }));

// A tiny llama written, then cut at an offset chosen from its layout.
const truncated = (description, cutAt) => ({
  kind: 'malformed',
  expect: 'truncated',
  description,
  build: async (p) => {
    const layout = await writeGGUF(p, tinyLlamaSpec({ type: 'Q8_0' }));
    await truncate(p, cutAt(layout));
  },
});

const BIG = 2n ** 62n;

export const FIXTURES = {
  'tiny-llama-f32.gguf': TINY('F32', 'tiny llama, 2D weights F32, output tied to token_embd'),
  'tiny-llama-f16.gguf': TINY('F16', 'tiny llama, 2D weights F16, written as GGUF v2', { version: 2 }),
  'tiny-llama-bf16.gguf': TINY('BF16', 'tiny llama, 2D weights BF16, general.alignment = 64', { alignment: 64 }),
  'tiny-llama-q8_0.gguf': TINY('Q8_0', 'tiny llama, 2D weights Q8_0'),
  'tiny-llama-q4_0.gguf': TINY('Q4_0', 'tiny llama, 2D weights Q4_0, no chat template', { chatTemplate: false }),
  'tiny-llama-q4_1-untied.gguf': TINY('Q4_1', 'tiny llama, 2D weights Q4_1, separate output.weight', { untied: true }),
  'all-types.gguf': valid(
    'not a model: every metadata value type incl. nested arrays (which ggml itself rejects), tensors of 1-4 dims in F32/F16/BF16/Q8_0/Q4_0/Q4_1/I8/I32, some streamed in chunks; GGUF v3',
    () => allTypesSpec(3),
  ),
  'all-types-v2.gguf': valid('same content as all-types.gguf, GGUF v2, general.alignment = 64', () => allTypesSpec(2)),

  'not-gguf.bin': {
    kind: 'malformed',
    expect: 'bad-magic',
    description: 'plain text, magic is not GGUF',
    build: (p) => writeFile(p, 'This is not a GGUF file. '.repeat(10)),
  },
  'empty.gguf': {
    kind: 'malformed',
    expect: 'empty-file',
    description: '0-byte file',
    build: (p) => writeFile(p, Buffer.alloc(0)),
  },
  'bad-version-1.gguf': {
    kind: 'malformed',
    expect: 'unsupported-version',
    description: 'GGUF v1 (u32 counts and lengths), a format nobody writes any more',
    build: (p) => writeGGUF(p, tinyLlamaSpec({ type: 'Q8_0', version: 1 })),
  },
  'bad-version-99.gguf': {
    kind: 'malformed',
    expect: 'unsupported-version',
    description: 'version field 99, otherwise a v3 layout',
    build: (p) => writeGGUF(p, tinyLlamaSpec({ type: 'Q8_0', version: 99 })),
  },
  'truncated-header.gguf': truncated(
    'tiny llama cut inside the metadata (in the middle of tokenizer.ggml.merges)',
    (l) => l.kvs.find((k) => k.key === 'tokenizer.ggml.merges').offset + 100,
  ),
  'truncated-data.gguf': truncated(
    "tiny llama cut halfway through the last tensor's data",
    (l) => { const t = l.tensors[l.tensors.length - 1]; return t.fileOffset + Math.floor(t.nbytes / 2); },
  ),
  'bad-string-length.gguf': {
    kind: 'malformed',
    expect: 'string-too-long',
    description: 'general.name declares a string length of 2^62 bytes',
    build: (p) => writeGGUF(p, patchKv(tinyLlamaSpec({ type: 'Q8_0' }), 'general.name', (v) => gv.str(v.value, { declaredLength: BIG }))),
  },
  'bad-array-count.gguf': {
    kind: 'malformed',
    expect: 'array-too-long',
    description: 'tokenizer.ggml.tokens declares 2^62 elements',
    build: (p) => writeGGUF(p, patchKv(tinyLlamaSpec({ type: 'Q8_0' }), 'tokenizer.ggml.tokens', (v) => gv.arr('str', v.value, { declaredCount: BIG }))),
  },
  'bad-value-type.gguf': {
    kind: 'malformed',
    expect: 'bad-value-type',
    description: 'general.name has metadata value type 13, which does not exist',
    build: (p) => writeGGUF(p, patchKv(tinyLlamaSpec({ type: 'Q8_0' }), 'general.name', () => gv.raw(13, new Uint8Array(8)))),
  },
  'bad-tensor-type.gguf': {
    kind: 'malformed',
    expect: 'unsupported-tensor-type',
    description: 'complete tiny llama (n_ff 256, Q8_0) whose blk.0.ffn_down.weight is IQ2_XXS (type 16) with a valid shape [256, 64]',
    build: (p) => {
      const hp = { ...TINY_LLAMA, nFf: 256 };
      const rng = makeRng(7);
      return writeGGUF(p, tinyLlamaSpec({
        type: 'Q8_0', hp, name: 'tiny llama with an IQ2_XXS tensor',
        edit: (ts) => ts.map((t) => {
          if (t.name !== 'blk.0.ffn_down.weight') return t;
          // Random bytes except each block's fp16 scale, kept small and finite.
          const nblocks = (256 / 256) * 64;
          const raw = new Uint8Array(nblocks * 66);
          for (let i = 0; i < raw.length; i++) raw[i] = rng.next() & 0xff;
          for (let b = 0; b < nblocks; b++) { raw[b * 66] = 0x00; raw[b * 66 + 1] = 0x20; } // 0x2000 = 2^-7
          return { ...t, type: GGMLType.IQ2_XXS, data: raw };
        }),
      }));
    },
  },
  'bad-tensor-offset-misaligned.gguf': {
    kind: 'malformed',
    expect: 'bad-tensor-offset',
    description: 'blk.0.attn_k.weight declares an offset 16 bytes past its real, 32-aligned position',
    build: (p) => writeGGUF(p, tinyLlamaSpec({
      type: 'Q8_0', edit: (ts) => ts.map((t) => (t.name === 'blk.0.attn_k.weight' ? { ...t, offset: offsetOf(ts, t.name) + 16 } : t)),
    })),
  },
  'bad-tensor-offset-oob.gguf': {
    kind: 'malformed',
    expect: 'bad-tensor-offset',
    description: 'output_norm.weight (the last tensor) declares an aligned offset of 2^40, far past the end of the file',
    build: (p) => writeGGUF(p, tinyLlamaSpec({
      type: 'Q8_0', edit: (ts) => ts.map((t) => (t.name === 'output_norm.weight' ? { ...t, offset: 2 ** 40 } : t)),
    })),
  },
  'bad-duplicate-tensor.gguf': {
    kind: 'malformed',
    expect: 'duplicate-tensor',
    description: 'output_norm.weight appears twice (same shape and type)',
    build: (p) => writeGGUF(p, tinyLlamaSpec({
      type: 'Q8_0', edit: (ts) => [...ts, { ...ts.find((t) => t.name === 'output_norm.weight') }],
    })),
  },
  'bad-n-dims.gguf': {
    kind: 'malformed',
    expect: 'too-many-dims',
    description: 'output_norm.weight has 5 dimensions [64, 1, 1, 1, 1] (GGML allows at most 4)',
    build: (p) => writeGGUF(p, tinyLlamaSpec({
      type: 'Q8_0', edit: (ts) => ts.map((t) => (t.name === 'output_norm.weight' ? { ...t, dims: [64, 1, 1, 1, 1] } : t)),
    })),
  },
  'bad-alignment-zero.gguf': {
    kind: 'malformed',
    expect: 'bad-alignment',
    description: 'general.alignment = 0 (data laid out with the default 32)',
    build: (p) => writeGGUF(p, {
      ...tinyLlamaSpec({ type: 'Q8_0', kvExtra: [['general.alignment', gv.u32(0)]] }),
      alignment: 32,
      allowInconsistent: true,
    }),
  },
  'unsupported-arch-mamba.gguf': {
    kind: 'malformed',
    expect: 'unsupported-architecture',
    description: 'general.architecture = mamba, with mamba hyperparameters and a few mamba tensors',
    build: (p) => writeGGUF(p, mambaSpec()),
  },
  'missing-tensor.gguf': {
    kind: 'malformed',
    expect: 'missing-tensor',
    description: 'tiny llama without blk.1.ffn_up.weight',
    build: (p) => writeGGUF(p, tinyLlamaSpec({ type: 'Q8_0', edit: (ts) => ts.filter((t) => t.name !== 'blk.1.ffn_up.weight') })),
  },
  'bad-tensor-shape.gguf': {
    kind: 'malformed',
    expect: 'bad-tensor-shape',
    description: 'blk.0.attn_k.weight is [64, 64] where GQA with 2 KV heads needs [64, 32]',
    build: (p) => {
      const rng = makeRng(5);
      return writeGGUF(p, tinyLlamaSpec({
        type: 'Q8_0',
        edit: (ts) => ts.map((t) => (t.name === 'blk.0.attn_k.weight' ? { ...t, dims: [64, 64], data: randomTensor(rng, 64 * 64, 0.1) } : t)),
      }));
    },
  },
};

function patchKv(spec, key, fn) {
  let found = false;
  const kv = spec.kv.map(([k, v]) => {
    if (k !== key) return [k, v];
    found = true;
    return [k, fn(v)];
  });
  if (!found) throw new Error(`no key ${key}`);
  return { ...spec, kv };
}

// Where the writer will put a tensor's data (relative to the data section), for
// specs that lie about it.
function offsetOf(tensors, name, alignment = 32) {
  let off = 0;
  for (const t of tensors) {
    if (t.name === name) return off;
    off += Math.ceil(tensorNbytes(t.type, t.dims) / alignment) * alignment;
  }
  throw new Error(`no tensor ${name}`);
}

function mambaSpec() {
  const rng = makeRng(11);
  const tok = buildTokenizer();
  const nEmbd = 64;
  const dInner = 128;
  const dState = 16;
  const dConv = 4;
  const dtRank = 4;
  const t = (name, dims, std = 0.1, type = 'F32') => ({ name, dims, type, data: randomTensor(rng, dims.reduce((a, b) => a * b, 1), std) });
  return {
    kv: [
      ['general.architecture', gv.str('mamba')],
      ['general.name', gv.str('tiny mamba (unsupported architecture)')],
      ['general.file_type', gv.u32(0)],
      ['mamba.context_length', gv.u32(1048576)],
      ['mamba.embedding_length', gv.u32(nEmbd)],
      ['mamba.block_count', gv.u32(1)],
      ['mamba.feed_forward_length', gv.u32(0)],
      ['mamba.attention.head_count', gv.u32(0)],
      ['mamba.attention.layer_norm_rms_epsilon', gv.f32(1e-5)],
      ['mamba.ssm.conv_kernel', gv.u32(dConv)],
      ['mamba.ssm.inner_size', gv.u32(dInner)],
      ['mamba.ssm.state_size', gv.u32(dState)],
      ['mamba.ssm.time_step_rank', gv.u32(dtRank)],
      ...tokenizerKv(tok),
    ],
    tensors: [
      t('token_embd.weight', [nEmbd, tok.tokens.length], 0.1, 'Q8_0'),
      t('blk.0.attn_norm.weight', [nEmbd]),
      t('blk.0.ssm_in.weight', [nEmbd, 2 * dInner], 0.1, 'Q8_0'),
      t('blk.0.ssm_conv1d.weight', [dConv, dInner]),
      t('blk.0.ssm_conv1d.bias', [dInner]),
      t('blk.0.ssm_x.weight', [dInner, dtRank + 2 * dState]),
      t('blk.0.ssm_dt.weight', [dtRank, dInner]),
      t('blk.0.ssm_dt.bias', [dInner]),
      t('blk.0.ssm_a', [dState, dInner]),
      t('blk.0.ssm_d', [dInner]),
      t('blk.0.ssm_out.weight', [dInner, nEmbd]),
      t('output_norm.weight', [nEmbd]),
    ],
  };
}

// ---------------------------------------------------------------------------
// Generation: idempotent, and safe when several processes (ava workers) call it
// at once. Files are written under temporary names and renamed into place, so a
// reader never sees a partial file; a lock directory keeps the others from doing
// the same work twice; a stamp written last says the set is complete.

const SELF = fileURLToPath(import.meta.url);
const WRITER = fileURLToPath(new URL('./gguf-writer.mjs', import.meta.url));
const STAMP = '.stamp';
const LOCK = '.lock';
const STALE_LOCK_MS = 120_000;

async function sourceStamp() {
  const h = createHash('sha256');
  h.update(String(FIXTURES_VERSION));
  h.update(await readFile(SELF));
  h.update(await readFile(WRITER));
  return h.digest('hex');
}

const exists = (p) => stat(p).then(() => true, () => false);

async function upToDate(dir, stamp) {
  const have = await readFile(join(dir, STAMP), 'utf8').catch(() => '');
  if (have.trim() !== stamp) return false;
  for (const name of Object.keys(FIXTURES)) if (!(await exists(join(dir, name)))) return false;
  return true;
}

// A lock is stale when its owner process is gone (same machine), or when it is
// old enough that no generation could still be running.
async function lockIsStale(lock) {
  const st = await stat(lock).catch(() => null);
  if (!st) return false;
  const pid = Number.parseInt(await readFile(join(lock, 'owner'), 'utf8').catch(() => ''), 10);
  if (pid > 0) {
    try {
      process.kill(pid, 0);
    } catch (e) {
      if (e.code === 'ESRCH') return true;
    }
  }
  return Date.now() - st.mtimeMs > STALE_LOCK_MS;
}

const paths = (dir) => Object.fromEntries(Object.keys(FIXTURES).map((n) => [n, join(dir, n)]));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function makeFixtures(dir, { force = false, log = () => {} } = {}) {
  await mkdir(dir, { recursive: true });
  const stamp = await sourceStamp();
  if (!force && (await upToDate(dir, stamp))) return paths(dir);

  const lock = join(dir, LOCK);
  for (;;) {
    try {
      await mkdir(lock);
      await writeFile(join(lock, 'owner'), `${process.pid}\n`);
      break;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    // Someone else is generating: wait for their stamp, or take over a dead lock.
    if (!force && (await upToDate(dir, stamp))) return paths(dir);
    if (await lockIsStale(lock)) await rm(lock, { recursive: true, force: true });
    else await sleep(100);
  }
  try {
    if (!force && (await upToDate(dir, stamp))) return paths(dir);
    await rm(join(dir, STAMP), { force: true });
    for (const [name, fx] of Object.entries(FIXTURES)) {
      const tmp = join(dir, `${name}.tmp-${process.pid}`);
      try {
        await fx.build(tmp);
        await rename(tmp, join(dir, name));
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
      log(`wrote ${name}`);
    }
    const tmpStamp = join(dir, `${STAMP}.tmp-${process.pid}`);
    await writeFile(tmpStamp, stamp + '\n');
    await rename(tmpStamp, join(dir, STAMP));
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
  return paths(dir);
}
