// The corruption corpus: damaged copies of a valid GGUF file, each with one defect at a known
// place. `layout(bytes)` walks a GGUF file (independently of the Rust reader) and records where
// every section and field is; `corruptions(bytes)` derives the damaged files from it:
// truncation at every section boundary, counts and lengths that lie (2^40), tensor offsets past
// the end or misaligned, dimensions whose product overflows, too many dimensions, unknown
// tensor and value types, a duplicated tensor name, and known keys with the wrong value type.
//
// Each case: { name, bytes, expect: [codes...] } where `expect` lists the error codes a loader
// may answer with (one defect can be reported as truncation or as malformation depending on
// what the reader reaches first).

const TYPE_SIZES = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STR = 8;
const ARR = 9;
const TWO_40 = 2n ** 40n;

/** Field offsets of a GGUF file (versions 2 and 3, little-endian). */
export function layout(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const u32 = () => {
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = () => {
    const v = view.getBigUint64(pos, true);
    pos += 8;
    return v;
  };
  const str = () => {
    const at = pos;
    const len = Number(u64());
    const text = Buffer.from(bytes.subarray(pos, pos + len)).toString('utf8');
    pos += len;
    return { at, text };
  };
  const skipValue = (type) => {
    if (type === STR) return void str();
    if (type === ARR) {
      const itemType = u32();
      const count = Number(u64());
      for (let i = 0; i < count; i++) skipValue(itemType);
      return;
    }
    pos += TYPE_SIZES[type];
  };
  pos = 4;
  const version = u32();
  const tensorCountAt = pos;
  const tensorCount = Number(u64());
  const kvCountAt = pos;
  const kvCount = Number(u64());
  const headerEnd = pos;
  const kvs = [];
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    const typeAt = pos;
    const type = u32();
    const valueAt = pos;
    const entry = { key: key.text, keyAt: key.at, typeAt, type, valueAt };
    if (type === ARR) {
      entry.itemType = view.getUint32(pos, true);
      entry.countAt = pos + 4;
    }
    skipValue(type);
    entry.end = pos;
    kvs.push(entry);
  }
  const tensors = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const nDimsAt = pos;
    const nDims = u32();
    const dimsAt = pos;
    pos += 8 * nDims;
    const typeAt = pos;
    const type = u32();
    const offsetAt = pos;
    const offset = u64();
    tensors.push({ name: name.text, nameAt: name.at, nDimsAt, nDims, dimsAt, typeAt, type, offsetAt, offset, end: pos });
  }
  const alignKv = kvs.find((k) => k.key === 'general.alignment');
  const alignment = alignKv ? view.getUint32(alignKv.valueAt, true) : 32;
  const dataOffset = Math.ceil(pos / alignment) * alignment;
  return { version, tensorCountAt, kvCountAt, headerEnd, kvs, tensors, infosEnd: pos, dataOffset, alignment };
}

function patched(bytes, edits) {
  const out = Buffer.from(bytes);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (const [at, kind, value] of edits) {
    if (kind === 'u32') view.setUint32(at, value, true);
    else if (kind === 'u64') view.setBigUint64(at, BigInt(value), true);
    else if (kind === 'byte') out[at] = value;
  }
  return out;
}

/** The damaged files of `bytes` (a valid GGUF); `every` thins out per-tensor cases of big files. */
export function corruptions(bytes, { every = 1 } = {}) {
  const L = layout(bytes);
  const cases = [];
  const add = (name, data, expect) => cases.push({ name, bytes: data, expect });
  const TRUNC = ['ERR_GGUF_TRUNCATED'];
  const BAD = ['ERR_GGUF_MALFORMED', 'ERR_GGUF_TRUNCATED'];
  const sample = (list) => list.filter((_, i) => i % every === 0 || i === list.length - 1);

  // Truncation at every section boundary, and one byte either side of the header's end.
  add('truncated: empty', bytes.subarray(0, 0), ['ERR_NOT_GGUF']);
  add('truncated: inside the magic', bytes.subarray(0, 3), ['ERR_NOT_GGUF']);
  add('truncated: after the version', bytes.subarray(0, 8), TRUNC);
  add('truncated: inside the counts', bytes.subarray(0, L.headerEnd - 1), TRUNC);
  add('truncated: after the header', bytes.subarray(0, L.headerEnd), TRUNC);
  for (const kv of sample(L.kvs)) {
    add(`truncated: inside key ${kv.key}`, bytes.subarray(0, kv.keyAt + 9), TRUNC);
    add(`truncated: after key ${kv.key}`, bytes.subarray(0, kv.end), TRUNC);
  }
  for (const t of sample(L.tensors)) add(`truncated: after tensor info ${t.name}`, bytes.subarray(0, t.end), TRUNC);
  add('truncated: at the data', bytes.subarray(0, L.dataOffset), TRUNC);
  if (bytes.length > L.dataOffset + 1) {
    add('truncated: inside the data', bytes.subarray(0, (L.dataOffset + bytes.length) >> 1), TRUNC);
    add('truncated: last byte', bytes.subarray(0, bytes.length - 1), TRUNC);
  }

  // Counts and lengths that lie: nothing may be allocated for them.
  add('lying count: 2^40 tensors', patched(bytes, [[L.tensorCountAt, 'u64', TWO_40]]), TRUNC);
  add('lying count: 2^40 metadata entries', patched(bytes, [[L.kvCountAt, 'u64', TWO_40]]), TRUNC);
  add('lying count: 2^64-1 metadata entries', patched(bytes, [[L.kvCountAt, 'u64', 2n ** 64n - 1n]]), TRUNC);
  for (const kv of sample(L.kvs)) {
    add(`lying length: key ${kv.key} of 2^40 bytes`, patched(bytes, [[kv.keyAt, 'u64', TWO_40]]), BAD);
    if (kv.type === STR) add(`lying length: value of ${kv.key} of 2^40 bytes`, patched(bytes, [[kv.valueAt, 'u64', TWO_40]]), BAD);
    if (kv.type === ARR) add(`lying count: ${kv.key} of 2^40 items`, patched(bytes, [[kv.countAt, 'u64', TWO_40]]), BAD);
  }
  for (const t of sample(L.tensors)) {
    add(`lying length: tensor name ${t.name} of 2^40 bytes`, patched(bytes, [[t.nameAt, 'u64', TWO_40]]), BAD);
  }

  // Tensor infos that do not fit the file.
  const fileLen = BigInt(bytes.length);
  for (const t of sample(L.tensors)) {
    add(`offset past the end: ${t.name}`, patched(bytes, [[t.offsetAt, 'u64', fileLen]]), BAD);
    add(`offset near 2^64: ${t.name}`, patched(bytes, [[t.offsetAt, 'u64', 2n ** 64n - 32n]]), BAD);
    add(`misaligned offset: ${t.name}`, patched(bytes, [[t.offsetAt, 'u64', t.offset + 1n]]), BAD);
    add(`unknown tensor type: ${t.name}`, patched(bytes, [[t.typeAt, 'u32', 99]]), ['ERR_UNSUPPORTED_TENSOR_TYPE', ...BAD]);
    add(`too many dimensions: ${t.name}`, patched(bytes, [[t.nDimsAt, 'u32', 5]]), BAD);
    const huge = Array.from({ length: t.nDims }, (_, d) => [t.dimsAt + 8 * d, 'u64', 2n ** 32n]);
    if (t.nDims >= 2) add(`dimensions overflow: ${t.name}`, patched(bytes, huge), BAD);
  }

  // A duplicated tensor name: the second of two same-length names renamed to the first.
  const first = L.tensors.findIndex((t, i) => L.tensors.some((u, j) => j > i && u.name.length === t.name.length));
  if (first >= 0) {
    const second = L.tensors.findIndex((u, j) => j > first && u.name.length === L.tensors[first].name.length);
    const dup = Buffer.from(bytes);
    Buffer.from(L.tensors[first].name, 'utf8').copy(dup, L.tensors[second].nameAt + 8);
    add(`duplicated tensor name: ${L.tensors[first].name}`, dup, BAD);
  }

  // Unknown value types, and known keys with a value of the wrong type (same size, so the rest
  // of the file still parses and the loader's own checks are reached).
  for (const kv of sample(L.kvs)) {
    add(`unknown value type: ${kv.key}`, patched(bytes, [[kv.typeAt, 'u32', 99]]), BAD);
  }
  // Integers become floats of the same width and back, booleans bytes and back. Only keys no
  // loader reads may then still load.
  const swap = { 4: 6, 5: 6, 6: 4, 7: 0, 0: 7, 10: 12, 12: 10 };
  const unread = ['general.file_type', 'general.quantization_version'];
  for (const kv of L.kvs.filter((k) => swap[k.type] !== undefined)) {
    const expect = ['ERR_GGUF_WRONG_KEY_TYPE', 'ERR_INVALID_TOKENIZER', 'ERR_GGUF_MALFORMED'];
    add(`wrong value type: ${kv.key}`, patched(bytes, [[kv.typeAt, 'u32', swap[kv.type]]]), unread.includes(kv.key) ? [...expect, 'LOADS'] : expect);
  }
  const arch = L.kvs.find((k) => k.key === 'general.architecture');
  if (arch) {
    add('wrong value type: general.architecture as u64', patched(bytes, [[arch.typeAt, 'u32', 10]]), BAD.concat(['ERR_GGUF_WRONG_KEY_TYPE']));
  }
  const tokens = L.kvs.find((k) => k.key === 'tokenizer.ggml.tokens');
  if (tokens) {
    add('wrong item type: tokenizer.ggml.tokens as u64s', patched(bytes, [[tokens.valueAt, 'u32', 10]]), BAD.concat(['ERR_INVALID_TOKENIZER']));
  }
  return cases;
}
