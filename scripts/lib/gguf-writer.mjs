// GGUF writer for test fixtures and synthetic models.
//
// Written from the GGUF spec (ggml docs/gguf.md) and ggml's reference quantizers,
// independently of chord-llm's Rust reader, so that each can catch the other's
// mistakes. It streams: the header is built in memory (it is small even for real
// models), tensor data is produced and written one chunk at a time, so the same
// code can write multi-GB synthetic models.
//
// Exports:
//   ValueType, GGMLType, GGML_TYPE_NAME, GGML_BLOCK   constants
//   gv                                                typed metadata value helpers
//   typeId(t), tensorNbytes(type, dims), alignUp(n, a)
//   f32ToF16Bits, f16BitsToF32, f32ToBf16Bits, bf16BitsToF32
//   quantize(type, Float32Array) -> Uint8Array        F32 F16 BF16 Q8_0 Q4_0 Q4_1
//   dequantize(type, bytes, n) -> Float32Array        same types
//   ggufChunks(spec)   async generator of Buffers (the file, in order)
//   writeGGUF(path, spec) -> layout                   streams to a file
//   encodeGGUF(spec) -> Buffer                        whole file in memory (small files only)
//
// spec = {
//   version?: 3,                 // 1, 2 or 3 (1 writes the old u32 counts, for rejection tests)
//   alignment?: number,          // default: general.alignment from kv, else 32
//   kv: [[key, value], ...] | {key: value},   // value made with gv.*
//   tensors: [{ name, dims: [ne0, ne1, ...] (innermost first), type: 'Q8_0' | id,
//               data: Float32Array | number[]            quantized here to `type`
//                   | Uint8Array                         raw bytes already in `type`
//                   | (start, count) => chunk            elements [start, start+count)
//                   | (async) iterable of chunks,        chunk: Float32Array or Uint8Array
//               chunkElements?, offset? (declared offset override), nbytes? (size override) }],
//   padLast?: true,              // pad the last tensor to the alignment too (as ggml does)
// }
//
// Tensors are laid out in list order, each at the next multiple of the alignment
// (ggml's reader insists on exactly that), and the alignment is added as
// general.alignment when it isn't the default and the kv list lacks it.
//
// Knobs for malformed files (all off by default): spec.magic (4 bytes),
// spec.declaredTensorCount / declaredKVCount, spec.allowInconsistent (alignment
// used for layout differs from general.alignment), tensor.offset (declared
// offset only), tensor.nbytes (skip the shape/size check), a dims list longer
// than 4, a numeric type id without a known block size (with raw data), and in
// metadata gv.str(s, {declaredLength}), gv.arr(t, items, {declaredCount,
// itemTypeId}), gv.raw(typeId, bytes). Truncation is left to the caller, using
// the layout writeGGUF returns.

import { open } from 'node:fs/promises';

export const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');
export const GGUF_DEFAULT_ALIGNMENT = 32;

export const ValueType = Object.freeze({
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7,
  str: 8, array: 9, u64: 10, i64: 11, f64: 12,
});

export const GGMLType = Object.freeze({
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30,
  TQ1_0: 34, TQ2_0: 35, MXFP4: 39,
});

export const GGML_TYPE_NAME = Object.freeze(
  Object.fromEntries(Object.entries(GGMLType).map(([k, v]) => [v, k])),
);

const QK_K = 256;
// [elements per block, bytes per block], from the spec's type list and gguf-py's size table.
export const GGML_BLOCK = Object.freeze({
  [GGMLType.F32]: [1, 4],
  [GGMLType.F16]: [1, 2],
  [GGMLType.Q4_0]: [32, 2 + 16],
  [GGMLType.Q4_1]: [32, 2 + 2 + 16],
  [GGMLType.Q5_0]: [32, 2 + 4 + 16],
  [GGMLType.Q5_1]: [32, 2 + 2 + 4 + 16],
  [GGMLType.Q8_0]: [32, 2 + 32],
  [GGMLType.Q8_1]: [32, 4 + 4 + 32],
  [GGMLType.Q2_K]: [QK_K, 2 + 2 + QK_K / 16 + QK_K / 4],
  [GGMLType.Q3_K]: [QK_K, 2 + QK_K / 4 + QK_K / 8 + 12],
  [GGMLType.Q4_K]: [QK_K, 2 + 2 + QK_K / 2 + 12],
  [GGMLType.Q5_K]: [QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12],
  [GGMLType.Q6_K]: [QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16],
  [GGMLType.Q8_K]: [QK_K, 4 + QK_K + QK_K / 8],
  [GGMLType.IQ2_XXS]: [QK_K, 2 + QK_K / 4],
  [GGMLType.IQ2_XS]: [QK_K, 2 + QK_K / 4 + QK_K / 32],
  [GGMLType.IQ3_XXS]: [QK_K, 2 + QK_K / 4 + QK_K / 8],
  [GGMLType.IQ1_S]: [QK_K, 2 + QK_K / 8 + QK_K / 16],
  [GGMLType.IQ4_NL]: [32, 2 + 16],
  [GGMLType.IQ3_S]: [QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4],
  [GGMLType.IQ2_S]: [QK_K, 2 + QK_K / 4 + QK_K / 16],
  [GGMLType.IQ4_XS]: [QK_K, 2 + 2 + QK_K / 2 + QK_K / 64],
  [GGMLType.I8]: [1, 1],
  [GGMLType.I16]: [1, 2],
  [GGMLType.I32]: [1, 4],
  [GGMLType.I64]: [1, 8],
  [GGMLType.F64]: [1, 8],
  [GGMLType.IQ1_M]: [QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32],
  [GGMLType.BF16]: [1, 2],
  [GGMLType.TQ1_0]: [QK_K, 2 + 4 * 13],
  [GGMLType.TQ2_0]: [QK_K, 2 + 64],
  [GGMLType.MXFP4]: [32, 1 + 16],
});

/** Accepts a type name ('Q8_0', case-insensitive) or a numeric id (any u32, for malformed files). */
export function typeId(t) {
  if (typeof t === 'number') return t;
  const id = GGMLType[String(t).toUpperCase()];
  if (id === undefined) throw new Error(`unknown ggml type ${t}`);
  return id;
}

export const alignUp = (n, a) => Math.ceil(n / a) * a;

/** Bytes of a tensor; throws when the row length is not a whole number of blocks. */
export function tensorNbytes(type, dims) {
  const id = typeId(type);
  const blk = GGML_BLOCK[id];
  if (!blk) throw new Error(`no block size known for ggml type ${id}; pass nbytes explicitly`);
  const [bs, ts] = blk;
  const ne0 = dims.length ? Number(dims[0]) : 1; // 0 dims: a scalar
  if (ne0 % bs !== 0) {
    throw new Error(`row length ${ne0} is not a multiple of block size ${bs} for ${GGML_TYPE_NAME[id]}`);
  }
  const n = dims.reduce((a, b) => a * Number(b), 1);
  return (n / bs) * ts;
}

// ---------------------------------------------------------------------------
// Typed metadata values. Plain JS values are ambiguous (is 3 a u8 or an i64?),
// so every value says its GGUF type. Arrays take plain values for scalar item
// types and gv.arr(...) values for nested arrays.
//
// Malformed-file knobs: gv.str(s, {declaredLength}) and gv.arr(t, items,
// {declaredCount}) write a length/count that disagrees with the payload;
// gv.raw(typeId, bytes) writes any type id followed by arbitrary bytes.

const mk = (type) => (value) => ({ type, value });
export const gv = {
  u8: mk('u8'), i8: mk('i8'), u16: mk('u16'), i16: mk('i16'),
  u32: mk('u32'), i32: mk('i32'), f32: mk('f32'), bool: mk('bool'),
  u64: mk('u64'), i64: mk('i64'), f64: mk('f64'),
  str: (value, opts = {}) => ({ type: 'str', value, ...opts }),
  arr: (itemType, value, opts = {}) => ({ type: 'array', itemType, value, ...opts }),
  raw: (typeId, bytes) => ({ type: 'raw', typeId, bytes }),
};

// Growable little-endian byte sink for the header.
class Sink {
  constructor(version) {
    this.version = version;
    this.buf = Buffer.alloc(4096);
    this.len = 0;
  }
  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const nb = Buffer.alloc(cap);
    this.buf.copy(nb, 0, 0, this.len);
    this.buf = nb;
  }
  u8(v) { this.ensure(1); this.buf.writeUInt8(v, this.len); this.len += 1; }
  i8(v) { this.ensure(1); this.buf.writeInt8(v, this.len); this.len += 1; }
  u16(v) { this.ensure(2); this.buf.writeUInt16LE(v, this.len); this.len += 2; }
  i16(v) { this.ensure(2); this.buf.writeInt16LE(v, this.len); this.len += 2; }
  u32(v) { this.ensure(4); this.buf.writeUInt32LE(v >>> 0, this.len); this.len += 4; }
  i32(v) { this.ensure(4); this.buf.writeInt32LE(v, this.len); this.len += 4; }
  f32(v) { this.ensure(4); this.buf.writeFloatLE(v, this.len); this.len += 4; }
  f64(v) { this.ensure(8); this.buf.writeDoubleLE(v, this.len); this.len += 8; }
  u64(v) { this.ensure(8); this.buf.writeBigUInt64LE(BigInt(v), this.len); this.len += 8; }
  i64(v) { this.ensure(8); this.buf.writeBigInt64LE(BigInt(v), this.len); this.len += 8; }
  bytes(b) { this.ensure(b.length); Buffer.from(b.buffer, b.byteOffset, b.byteLength).copy(this.buf, this.len); this.len += b.length; }
  // Counts and lengths were u32 in GGUF v1 and became u64 in v2.
  count(v) { if (this.version === 1) this.u32(Number(v)); else this.u64(v); }
  string(s, declaredLength) {
    const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
    this.count(declaredLength ?? b.length);
    this.bytes(b);
  }
  result() { return this.buf.subarray(0, this.len); }
}

function checkInt(v, lo, hi, what) {
  if (typeof v === 'bigint') v = Number(v);
  if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`${what}: ${v} out of range`);
  return v;
}

function checkBig(v, lo, hi, what) {
  const b = BigInt(v);
  if (b < lo || b > hi) throw new Error(`${what}: ${v} out of range`);
  return b;
}

function writeScalar(sink, type, v, ctx) {
  switch (type) {
    case 'u8': return sink.u8(checkInt(v, 0, 0xff, ctx));
    case 'i8': return sink.i8(checkInt(v, -0x80, 0x7f, ctx));
    case 'u16': return sink.u16(checkInt(v, 0, 0xffff, ctx));
    case 'i16': return sink.i16(checkInt(v, -0x8000, 0x7fff, ctx));
    case 'u32': return sink.u32(checkInt(v, 0, 0xffffffff, ctx));
    case 'i32': return sink.i32(checkInt(v, -0x80000000, 0x7fffffff, ctx));
    case 'u64': return sink.u64(checkBig(v, 0n, 0xffffffffffffffffn, ctx));
    case 'i64': return sink.i64(checkBig(v, -0x8000000000000000n, 0x7fffffffffffffffn, ctx));
    case 'f32': return sink.f32(Number(v));
    case 'f64': return sink.f64(Number(v));
    // The spec allows only 0 and 1; anything else is a malformed file, so don't coerce.
    case 'bool':
      if (typeof v === 'boolean') return sink.u8(v ? 1 : 0);
      return sink.u8(checkInt(v, 0, 0xff, ctx));
    case 'str': return sink.string(v);
    default: throw new Error(`${ctx}: unknown value type ${type}`);
  }
}

function writeValueBody(sink, val, ctx) {
  if (val.type === 'str') return sink.string(val.value, val.declaredLength);
  if (val.type === 'array') {
    const itemTypeId = val.itemTypeId ?? ValueType[val.itemType];
    if (itemTypeId === undefined) throw new Error(`${ctx}: unknown array item type ${val.itemType}`);
    sink.u32(itemTypeId);
    const items = val.value;
    sink.count(val.declaredCount ?? items.length);
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (val.itemType === 'array') {
        if (!item || item.type !== 'array') throw new Error(`${ctx}[${i}]: nested items must be gv.arr(...)`);
        writeValueBody(sink, item, `${ctx}[${i}]`);
      } else {
        writeScalar(sink, val.itemType, item, `${ctx}[${i}]`);
      }
    }
    return;
  }
  return writeScalar(sink, val.type, val.value, ctx);
}

function writeKV(sink, key, val) {
  if (!val || typeof val !== 'object' || !('type' in val)) {
    throw new Error(`metadata ${key}: value must be typed, e.g. gv.u32(1)`);
  }
  sink.string(key);
  if (val.type === 'raw') {
    sink.u32(val.typeId);
    sink.bytes(val.bytes);
    return;
  }
  const id = ValueType[val.type];
  if (id === undefined) throw new Error(`metadata ${key}: unknown value type ${val.type}`);
  sink.u32(id);
  writeValueBody(sink, val, key);
}

function kvEntries(kv) {
  if (!kv) return [];
  if (Array.isArray(kv)) return kv;
  if (kv instanceof Map) return [...kv.entries()];
  return Object.entries(kv);
}

// ---------------------------------------------------------------------------
// Float conversions. Node 20 has no Math.f16round, so these work on bits.

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** float32 -> IEEE half bits, round to nearest even, subnormals kept (as F16C's vcvtps2ph does). */
export function f32ToF16Bits(f) {
  F32[0] = f;
  const x = U32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    const m = mant | 0x800000;
    const shift = 14 - e;
    let q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1))) q++;
    return sign | q;
  }
  let q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (q & 1))) q++; // a carry into the exponent is correct, up to inf
  return sign | q;
}

export function f16BitsToF32(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** float32 -> bfloat16 bits like ggml_compute_fp32_to_bf16: round to nearest even, NaN made quiet. */
export function f32ToBf16Bits(f) {
  F32[0] = f;
  const x = U32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 64) & 0xffff;
  // Plain arithmetic: x + 0x8000 can exceed 2^31, where JS bit operators would wrap.
  return Math.floor((x + 0x7fff + ((x >>> 16) & 1)) / 65536) & 0xffff;
}

export function bf16BitsToF32(b) {
  U32[0] = (b & 0xffff) << 16;
  return F32[0];
}

// ---------------------------------------------------------------------------
// Quantizers: ports of ggml's quantize_row_*_ref. All intermediate results are
// float32 in C, so each operation is rounded with Math.fround (doing one double
// op and rounding once gives the float32 result for + - * /).

const fr = Math.fround;
const FLT_MAX = 3.4028234663852886e38;
// C roundf: halves go away from zero (Math.round sends -2.5 to -2).
const roundf = (v) => (v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5));

function quantizeQ8_0(x, out) {
  const nb = x.length / 32;
  for (let i = 0; i < nb; i++) {
    const base = i * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[base + j]));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    const o = i * 34;
    out.writeUInt16LE(f32ToF16Bits(d), o);
    for (let j = 0; j < 32; j++) out.writeInt8(roundf(fr(x[base + j] * id)), o + 2 + j);
  }
}

function quantizeQ4_0(x, out) {
  const nb = x.length / 32;
  for (let i = 0; i < nb; i++) {
    const base = i * 32;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[base + j];
      if (amax < Math.abs(v)) { amax = Math.abs(v); max = v; }
    }
    const d = fr(max / -8);
    const id = d ? fr(1 / d) : 0;
    const o = i * 18;
    out.writeUInt16LE(f32ToF16Bits(d), o);
    for (let j = 0; j < 16; j++) {
      const x0 = fr(x[base + j] * id);
      const x1 = fr(x[base + 16 + j] * id);
      const xi0 = Math.min(15, Math.trunc(fr(x0 + 8.5)));
      const xi1 = Math.min(15, Math.trunc(fr(x1 + 8.5)));
      out[o + 2 + j] = xi0 | (xi1 << 4);
    }
  }
}

function quantizeQ4_1(x, out) {
  const nb = x.length / 32;
  for (let i = 0; i < nb; i++) {
    const base = i * 32;
    let min = FLT_MAX;
    let max = -FLT_MAX;
    for (let j = 0; j < 32; j++) {
      const v = x[base + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const d = fr(fr(max - min) / 15);
    const id = d ? fr(1 / d) : 0;
    const o = i * 20;
    out.writeUInt16LE(f32ToF16Bits(d), o);
    out.writeUInt16LE(f32ToF16Bits(min), o + 2);
    for (let j = 0; j < 16; j++) {
      const x0 = fr(fr(x[base + j] - min) * id);
      const x1 = fr(fr(x[base + 16 + j] - min) * id);
      const xi0 = Math.min(15, Math.trunc(fr(x0 + 0.5)));
      const xi1 = Math.min(15, Math.trunc(fr(x1 + 0.5)));
      out[o + 4 + j] = xi0 | (xi1 << 4);
    }
  }
}

/** Encodes float values as `type`. Length must be a whole number of blocks. */
export function quantize(type, values) {
  const id = typeId(type);
  const x = values instanceof Float32Array ? values : Float32Array.from(values);
  const [bs, ts] = GGML_BLOCK[id] ?? [];
  if (!bs) throw new Error(`cannot quantize to ggml type ${id}`);
  if (x.length % bs !== 0) throw new Error(`${x.length} values is not a multiple of block size ${bs}`);
  const out = Buffer.alloc((x.length / bs) * ts);
  switch (id) {
    case GGMLType.F32:
      Buffer.from(x.buffer, x.byteOffset, x.byteLength).copy(out);
      if (!isLittleEndianHost) for (let i = 0; i < x.length; i++) out.writeFloatLE(x[i], i * 4);
      break;
    case GGMLType.F16:
      for (let i = 0; i < x.length; i++) out.writeUInt16LE(f32ToF16Bits(x[i]), i * 2);
      break;
    case GGMLType.BF16:
      for (let i = 0; i < x.length; i++) out.writeUInt16LE(f32ToBf16Bits(x[i]), i * 2);
      break;
    case GGMLType.Q8_0: quantizeQ8_0(x, out); break;
    case GGMLType.Q4_0: quantizeQ4_0(x, out); break;
    case GGMLType.Q4_1: quantizeQ4_1(x, out); break;
    default: throw new Error(`quantizing to ${GGML_TYPE_NAME[id] ?? id} is not implemented; pass raw bytes`);
  }
  return out;
}

const isLittleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Decodes `n` values of `type` (ggml's dequantize_row_* semantics), for tests' expected values. */
export function dequantize(type, bytes, n) {
  const id = typeId(type);
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  switch (id) {
    case GGMLType.F32: for (let i = 0; i < n; i++) out[i] = b.readFloatLE(i * 4); break;
    case GGMLType.F16: for (let i = 0; i < n; i++) out[i] = f16BitsToF32(b.readUInt16LE(i * 2)); break;
    case GGMLType.BF16: for (let i = 0; i < n; i++) out[i] = bf16BitsToF32(b.readUInt16LE(i * 2)); break;
    case GGMLType.Q8_0:
      for (let i = 0; i < n / 32; i++) {
        const d = f16BitsToF32(b.readUInt16LE(i * 34));
        for (let j = 0; j < 32; j++) out[i * 32 + j] = fr(b.readInt8(i * 34 + 2 + j) * d);
      }
      break;
    case GGMLType.Q4_0:
      for (let i = 0; i < n / 32; i++) {
        const d = f16BitsToF32(b.readUInt16LE(i * 18));
        for (let j = 0; j < 16; j++) {
          const q = b[i * 18 + 2 + j];
          out[i * 32 + j] = fr(((q & 0x0f) - 8) * d);
          out[i * 32 + 16 + j] = fr(((q >> 4) - 8) * d);
        }
      }
      break;
    case GGMLType.Q4_1:
      for (let i = 0; i < n / 32; i++) {
        const d = f16BitsToF32(b.readUInt16LE(i * 20));
        const m = f16BitsToF32(b.readUInt16LE(i * 20 + 2));
        for (let j = 0; j < 16; j++) {
          const q = b[i * 20 + 4 + j];
          out[i * 32 + j] = fr(fr((q & 0x0f) * d) + m);
          out[i * 32 + 16 + j] = fr(fr((q >> 4) * d) + m);
        }
      }
      break;
    default: throw new Error(`dequantizing ${GGML_TYPE_NAME[id] ?? id} is not implemented`);
  }
  return out;
}

// ---------------------------------------------------------------------------
// File assembly.

function planTensors(tensors, alignment) {
  let offset = 0;
  return tensors.map((t, index) => {
    if (!t.name) throw new Error(`tensor ${index}: missing name`);
    const dims = (t.dims ?? []).map(Number);
    const id = typeId(t.type);
    let nbytes = t.nbytes;
    if (nbytes === undefined) {
      if (isBytes(t.data)) {
        nbytes = t.data.byteLength;
        const known = GGML_BLOCK[id] ? tensorNbytes(id, dims) : nbytes;
        if (known !== nbytes) {
          throw new Error(`tensor ${t.name}: ${nbytes} raw bytes but shape needs ${known} (set nbytes to force)`);
        }
      } else {
        nbytes = tensorNbytes(id, dims);
      }
    }
    // `offset` on the input only overrides what the tensor info declares (for malformed
    // files); the data is still written at the computed position.
    const planned = { ...t, dims, id, nbytes, declaredOffset: t.offset, offset };
    offset += alignUp(nbytes, alignment);
    return planned;
  });
}

const isBytes = (d) => d instanceof Uint8Array;

function buildHeader(spec, plan, alignment, version) {
  const sink = new Sink(version);
  const kvs = kvEntries(spec.kv);
  sink.bytes(spec.magic ?? GGUF_MAGIC);
  sink.u32(version);
  sink.count(spec.declaredTensorCount ?? plan.length);
  sink.count(spec.declaredKVCount ?? kvs.length);
  const kvOffsets = [];
  for (const [key, val] of kvs) {
    kvOffsets.push({ key, offset: sink.len });
    writeKV(sink, key, val);
  }
  const infoOffsets = [];
  for (const t of plan) {
    infoOffsets.push({ name: t.name, offset: sink.len });
    sink.string(t.name);
    sink.u32(t.dims.length);
    for (const d of t.dims) sink.count(d);
    sink.u32(t.id);
    sink.u64(t.declaredOffset ?? t.offset);
  }
  // ggml's reader only seeks to the aligned data start when there are tensors.
  if (plan.length > 0) {
    const pad = alignUp(sink.len, alignment) - sink.len;
    sink.bytes(new Uint8Array(pad));
  }
  return { header: sink.result(), kvOffsets, infoOffsets };
}

function resolveAlignment(spec) {
  const entry = kvEntries(spec.kv).find(([k]) => k === 'general.alignment');
  const fromKv = entry ? Number(entry[1].value) : undefined;
  if (spec.alignment !== undefined && fromKv !== undefined && spec.alignment !== fromKv && !spec.allowInconsistent) {
    throw new Error(`alignment ${spec.alignment} disagrees with general.alignment ${fromKv}`);
  }
  const alignment = spec.alignment ?? fromKv ?? GGUF_DEFAULT_ALIGNMENT;
  if (!(alignment > 0)) throw new Error(`bad alignment ${alignment}`);
  return { alignment, needKv: fromKv === undefined && alignment !== GGUF_DEFAULT_ALIGNMENT };
}

/** Yields a tensor's encoded bytes chunk by chunk. */
async function* tensorBytes(t) {
  const { data, id } = t;
  const [bs] = GGML_BLOCK[id] ?? [1];
  let produced = 0;
  const checkTotal = () => {
    if (produced !== t.nbytes) throw new Error(`tensor ${t.name}: produced ${produced} bytes, expected ${t.nbytes}`);
  };
  if (isBytes(data)) {
    produced = data.byteLength;
    yield data;
    return checkTotal();
  }
  if (data instanceof Float32Array || Array.isArray(data)) {
    const bytes = quantize(id, data);
    produced = bytes.length;
    yield bytes;
    return checkTotal();
  }
  let source;
  if (typeof data === 'function') {
    const nelem = t.dims.reduce((a, b) => a * b, 1);
    const step = Math.max(bs, Math.floor((t.chunkElements ?? 1 << 20) / bs) * bs);
    source = (async function* () {
      for (let start = 0; start < nelem; start += step) yield await data(start, Math.min(step, nelem - start));
    })();
  } else if (data && (Symbol.asyncIterator in data || Symbol.iterator in data)) {
    source = data;
  } else {
    throw new Error(`tensor ${t.name}: unsupported data source`);
  }
  // Float chunks may end mid-block: carry the tail over, since quantizing whole
  // blocks independently gives the same bytes as quantizing the tensor at once.
  let carry = new Float32Array(0);
  for await (const chunk of source) {
    if (isBytes(chunk)) {
      if (carry.length) throw new Error(`tensor ${t.name}: raw chunk after a partial float block`);
      produced += chunk.byteLength;
      yield chunk;
      continue;
    }
    let f = chunk instanceof Float32Array ? chunk : Float32Array.from(chunk);
    if (carry.length) {
      const joined = new Float32Array(carry.length + f.length);
      joined.set(carry);
      joined.set(f, carry.length);
      f = joined;
    }
    const whole = f.length - (f.length % bs);
    carry = f.slice(whole);
    if (whole) {
      const bytes = quantize(id, f.subarray(0, whole));
      produced += bytes.length;
      yield bytes;
    }
  }
  if (carry.length) throw new Error(`tensor ${t.name}: ${carry.length} values left over, not a whole block of ${bs}`);
  checkTotal();
}

/**
 * Prepares a spec: returns the header and a layout description, plus a generator
 * over the data section. Layout offsets are absolute file offsets.
 */
function prepare(spec) {
  const version = spec.version ?? 3;
  const { alignment, needKv } = resolveAlignment(spec);
  const kv = kvEntries(spec.kv).slice();
  if (needKv) kv.push(['general.alignment', gv.u32(alignment)]);
  const specKv = { ...spec, kv };
  const plan = planTensors(spec.tensors ?? [], alignment);
  const { header, kvOffsets, infoOffsets } = buildHeader(specKv, plan, alignment, version);
  const dataOffset = header.length;
  const layout = {
    version,
    alignment,
    dataOffset,
    kvs: kvOffsets,
    tensors: plan.map((t, i) => ({
      name: t.name,
      type: t.id,
      dims: t.dims,
      nbytes: t.nbytes,
      offset: t.offset,
      fileOffset: dataOffset + t.offset,
      infoOffset: infoOffsets[i].offset,
    })),
  };
  const padLast = spec.padLast ?? true;
  async function* data() {
    for (let i = 0; i < plan.length; i++) {
      const t = plan[i];
      for await (const chunk of tensorBytes(t)) yield chunk;
      const pad = alignUp(t.nbytes, alignment) - t.nbytes;
      if (pad && (padLast || i < plan.length - 1)) yield new Uint8Array(pad);
    }
  }
  const size = plan.length === 0
    ? dataOffset
    : dataOffset + plan.reduce((s, t, i) => s + (padLast || i < plan.length - 1 ? alignUp(t.nbytes, alignment) : t.nbytes), 0);
  layout.size = size;
  return { header, layout, data };
}

/** The whole file as a sequence of Buffers, header first. */
export async function* ggufChunks(spec) {
  const { header, data } = prepare(spec);
  yield header;
  yield* data();
}

/** Streams a GGUF file to `path`, returning its layout (absolute offsets of kvs, tensor infos and tensor data). */
export async function writeGGUF(path, spec) {
  const { header, layout, data } = prepare(spec);
  const fh = await open(path, 'w');
  try {
    // Coalesce small chunks so a model with many tiny tensors isn't thousands of syscalls.
    const LIMIT = 1 << 20;
    let pending = [];
    let pendingLen = 0;
    const flush = async () => {
      if (!pendingLen) return;
      const buf = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingLen);
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off);
        off += bytesWritten;
      }
      pending = [];
      pendingLen = 0;
    };
    const push = async (chunk) => {
      const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      pending.push(b);
      pendingLen += b.length;
      if (pendingLen >= LIMIT) await flush();
    };
    await push(header);
    for await (const chunk of data()) await push(chunk);
    await flush();
    const { size } = await fh.stat();
    if (size !== layout.size) throw new Error(`wrote ${size} bytes, expected ${layout.size}`);
  } finally {
    await fh.close();
  }
  return layout;
}

/** Whole file in one Buffer; for small in-memory tests only. */
export async function encodeGGUF(spec) {
  const parts = [];
  for await (const c of ggufChunks(spec)) parts.push(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
  return Buffer.concat(parts);
}
