// The tensor table of a GGUF file (names, shapes, types, offsets, byte sizes) read from its
// header, for the bench drivers: scripts/bench-paging.mjs sizes the pager's units with it,
// scripts/bench.mjs the weight bytes one decode step reads. Metadata values are skipped
// (general.alignment aside). Fixtures are written by scripts/lib/gguf-writer.mjs, which this
// reader shares the block-size table with.

import fs from 'node:fs';
import { GGML_BLOCK } from '../lib/gguf-writer.mjs';

/**
 * { alignment, tensors: [{ name, dims, type, offset, size }] } of a GGUF file; `size` is null for
 * a type without a known block size. Throws on a file that is not GGUF or a truncated header.
 */
export function readGgufTensors(file) {
  const fd = fs.openSync(file, 'r');
  const CHUNK = 1 << 20;
  let buf = Buffer.alloc(0);
  let bufStart = 0; // file offset of buf[0]
  let pos = 0; // file offset of the cursor
  const need = (n) => {
    if (pos + n <= bufStart + buf.length) return;
    const keep = buf.subarray(pos - bufStart);
    const more = Buffer.alloc(Math.max(CHUNK, n));
    const got = fs.readSync(fd, more, 0, more.length, bufStart + buf.length);
    if (keep.length + got < n) throw new Error('GGUF header truncated');
    buf = Buffer.concat([keep, more.subarray(0, got)]);
    bufStart = pos;
  };
  const u32 = () => (need(4), (pos += 4), buf.readUInt32LE(pos - 4 - bufStart));
  const u64 = () => (need(8), (pos += 8), Number(buf.readBigUInt64LE(pos - 8 - bufStart)));
  const skip = (n) => {
    while (n > 0) {
      const step = Math.min(n, CHUNK);
      need(step);
      pos += step;
      n -= step;
    }
  };
  const str = () => {
    const n = u64();
    need(n);
    pos += n;
    return buf.toString('utf8', pos - n - bufStart, pos - bufStart);
  };
  const SCALAR = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const value = (type) => {
    if (type === 8) return str();
    if (type === 9) {
      const t = u32();
      const n = u64();
      if (SCALAR[t]) skip(n * SCALAR[t]);
      else for (let i = 0; i < n; i++) value(t);
      return null;
    }
    if (type === 4) return u32();
    if (!SCALAR[type]) throw new Error(`GGUF value type ${type}`);
    skip(SCALAR[type]);
    return null;
  };
  try {
    need(8);
    if (buf.toString('latin1', 0, 4) !== 'GGUF') throw new Error('not a GGUF file');
    pos = 4;
    const version = u32();
    if (version < 2) throw new Error(`GGUF version ${version}`);
    const nTensors = u64();
    const nKv = u64();
    let alignment = 32;
    for (let i = 0; i < nKv; i++) {
      const key = str();
      const v = value(u32());
      if (key === 'general.alignment' && typeof v === 'number') alignment = v;
    }
    const tensors = [];
    for (let i = 0; i < nTensors; i++) {
      const name = str();
      const nd = u32();
      const dims = [];
      for (let d = 0; d < nd; d++) dims.push(u64());
      const type = u32();
      const offset = u64();
      const blk = GGML_BLOCK[type];
      const n = dims.reduce((a, b) => a * b, 1);
      tensors.push({ name, dims, type, offset, size: blk ? (n / blk[0]) * blk[1] : null });
    }
    return { alignment, tensors };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Bytes of weights one decode step reads: every layer tensor (blk.N.*), the output norm and the
 * output matrix (token_embd when the model ties its embeddings and has no output.weight, read
 * whole then), plus the one token_embd row of the input token. Also the bytes of an f16 KV
 * cache per cached position (every layer's key and value rows, as wide as its attn_k and
 * attn_v outputs), which a decode step reads once for each position before its own.
 * Returns { bytes, kvBytesPerPosition, tied } or null when a size is unknown or a tensor is
 * missing.
 */
export function decodeReadBytes(tensors) {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const embd = byName.get('token_embd.weight');
  const norm = byName.get('output_norm.weight');
  const output = byName.get('output.weight') ?? embd;
  if (!embd || !norm || !output) return null;
  const read = [...tensors.filter((t) => t.name.startsWith('blk.')), norm, output];
  if (read.some((t) => t.size == null) || embd.size == null) return null;
  const embdRow = embd.size / (embd.dims[1] ?? 1);
  const kvRows = tensors.filter((t) => /^blk\.\d+\.attn_[kv]\.weight$/.test(t.name));
  const kvBytesPerPosition = kvRows.reduce((a, t) => a + 2 * (t.dims[1] ?? 1), 0);
  return { bytes: read.reduce((a, t) => a + t.size, 0) + embdRow, kvBytesPerPosition, tied: output === embd };
}
