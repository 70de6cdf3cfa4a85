// Synthetic GGUF models with the exact layout of real ones: the tensor names,
// shapes and types a real model gets from llama.cpp's converter and quantizer,
// random but valid quantized weights, and a usable SentencePiece-style vocab.
// Used by scripts/synth.mjs (see there for the CLI).
//
// Exports:
//   SHAPES                 name -> hyperparameters of a real model
//   QUANT_MIXES            name -> { fileType, baseType } (llama.cpp's LLAMA_FTYPE_* mixes)
//   planModel(shape, mix, {layers})  -> { hp, tensors: [{ name, dims, type }] }, in llama-quantize's order
//   makeTypeChooser(mix, hp)  llama.cpp's llama_tensor_get_type rules for a dense llama
//   buildSpmVocab(n)       deterministic SentencePiece-style vocab { tokens, scores, types }
//   spmMerges(vocab)       'left right' merges list (metadata only; llama.cpp ignores it for SPM)
//   synthSpec(shape, mix, {seed, layers, onBytes}) -> { hp, plan, spec } (spec streams random weights)
//   BLOCK_GEN              type -> in-place fix-up of random bytes into valid blocks
//   unpackScaleMin(q, j)   Q4_K/Q5_K 6-bit scale/min of sub-block j (ggml's get_scale_min_k4)
//
// Checked against llama.cpp (node-llama-cpp's build): llama_model_quantize
// --dry-run gives the same tensor order, names, shapes and types for every mix
// here, and llama.cpp loads the files with check_tensors (row validation) on.
//
// Weights: each tensor's bytes come from an AES-128-CTR keystream keyed by
// sha256(seed, tensor name) (OpenSSL, so several GB/s and identical everywhere),
// then each block's scale fields are overwritten with small finite f16 values
// and sane sub-block scales, chosen so the dequantized weights have mean ~0 and
// std ~0.02 (like a real model's). Norm weights are F32 in [0.9, 1.1].

import { createCipheriv, createHash } from 'node:crypto';
import { GGMLType, GGML_BLOCK, f32ToF16Bits, gv } from './gguf-writer.mjs';

// ---------------------------------------------------------------------------
// Shapes of real models (all llama architecture with a SentencePiece vocab).
// `real` is the size in bytes of a well-known real file of that shape, for
// comparison only.

export const SHAPES = {
  'tinyllama-1.1b': {
    description: 'TinyLlama-1.1B-Chat-v1.0',
    name: 'TinyLlama-1.1B-Chat-v1.0',
    nLayer: 22, nEmbd: 2048, nFf: 5632, nHead: 32, nHeadKv: 4, nVocab: 32000,
    nCtxTrain: 2048, ropeFreqBase: 10000, rmsEps: 1e-5,
    // Metadata the real file has beyond the common set: rope.freq_base, BPE-style
    // merges (which llama.cpp ignores for an SPM vocab), a pad token, a chat template.
    ropeFreqBaseKey: true,
    mergesKey: true,
    padTokenId: 2,
    // The real model's chat template (zephyr style).
    chatTemplate:
      "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n" +
      "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n" +
      "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n" +
      "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    real: { q4_k_m: { file: 'tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf', size: 668_788_096 } },
  },
  'llama2-7b': {
    description: 'Llama-2-7B',
    name: 'LLaMA v2',
    nLayer: 32, nEmbd: 4096, nFf: 11008, nHead: 32, nHeadKv: 32, nVocab: 32000,
    // The real file has no llama.rope.freq_base (llama.cpp defaults to 10000).
    nCtxTrain: 4096, ropeFreqBase: 10000, rmsEps: 1e-5,
    real: { q4_k_m: { file: 'llama-2-7b.Q4_K_M.gguf', size: 4_081_004_224 } },
  },
  'llama2-13b': {
    description: 'Llama-2-13B',
    name: 'LLaMA v2',
    nLayer: 40, nEmbd: 5120, nFf: 13824, nHead: 40, nHeadKv: 40, nVocab: 32000,
    nCtxTrain: 4096, ropeFreqBase: 10000, rmsEps: 1e-5,
    real: { q4_k_m: { file: 'llama-2-13b.Q4_K_M.gguf', size: 7_865_956_288 } },
  },
};

// llama.cpp's LLAMA_FTYPE_* (general.file_type) and the mix's default type.
export const QUANT_MIXES = {
  q4_0: { fileType: 2, baseType: 'Q4_0' },
  q8_0: { fileType: 7, baseType: 'Q8_0' },
  q4_k_s: { fileType: 14, baseType: 'Q4_K' },
  q4_k_m: { fileType: 15, baseType: 'Q4_K' },
  q5_k_s: { fileType: 16, baseType: 'Q5_K' },
  q5_k_m: { fileType: 17, baseType: 'Q5_K' },
  q6_k: { fileType: 18, baseType: 'Q6_K' },
};

// ---------------------------------------------------------------------------
// Tensor types: a port of llama_tensor_get_type / llama_tensor_get_type_impl
// (src/llama-quant.cpp, llama.cpp as bundled with node-llama-cpp) restricted to
// what matters for a dense llama without imatrix: the output / token_embd
// rules, attn_v and ffn_down "more bits" layers, the 70B attn_v bump.
// Counters (i_attention_wv, i_ffn_down) advance in the order llama-quantize
// visits tensors, which is the order planModel returns.

const useMoreBits = (i, n) => i < Math.trunc(n / 8) || i >= Math.trunc((7 * n) / 8) || (i - Math.trunc(n / 8)) % 3 === 2;

export function makeTypeChooser(mix, hp) {
  const { baseType } = QUANT_MIXES[mix];
  const st = { iAttnV: 0, nAttnV: hp.nLayer, iFfnDown: 0, nFfnDown: hp.nLayer };
  const is70B = hp.nLayer === 80; // llama.cpp's LLM_TYPE_70B for the llama arch
  return function typeFor(name, dims) {
    // tensor_allows_quantization: only 2D+ '...weight' tensors, never norms.
    if (dims.length < 2 || !name.endsWith('weight') || name.includes('_norm.weight')) return 'F32';
    let t = baseType;
    const bs = GGML_BLOCK[GGMLType[baseType]][0];
    if (name === 'output.weight') {
      // (token_embd too when the embeddings are tied; our shapes are untied)
      if (dims[0] % bs !== 0) t = 'Q8_0';
      else if (t !== 'Q8_0') t = 'Q6_K';
      return t;
    }
    if (name === 'token_embd.weight') return t;
    if (name.includes('attn_v.weight')) {
      if ((mix === 'q4_k_m' || mix === 'q5_k_m') && useMoreBits(st.iAttnV, st.nAttnV)) t = 'Q6_K';
      else if (mix === 'q4_k_s' && st.iAttnV < 4) t = 'Q5_K';
      if (is70B && (t === 'Q3_K' || t === 'Q4_K')) t = 'Q5_K';
      st.iAttnV++;
    } else if (name.includes('ffn_down')) {
      const i = st.iFfnDown;
      const n = st.nFfnDown;
      if (mix === 'q4_k_m') { if (useMoreBits(i, n)) t = 'Q6_K'; }
      else if (mix === 'q5_k_m' && useMoreBits(i, n)) t = 'Q6_K';
      else if (mix === 'q4_k_s' && i < Math.trunc(n / 8)) t = 'Q5_K';
      st.iFfnDown++;
    }
    // (attn_output, attn_q/k, ffn_gate/up: no change for these mixes)
    // tensor_type_fallback: row length must be a whole number of blocks.
    if (dims[0] % GGML_BLOCK[GGMLType[t]][0] !== 0) {
      throw new Error(`${name}: row length ${dims[0]} is not a multiple of ${t}'s block size (fallback types not implemented)`);
    }
    return t;
  };
}

// The order llama-quantize writes tensors in: llama_model_loader's weights_map
// is sorted by layer number (non-layer tensors first, as layer -1), then name.
function llamaQuantizeOrder(a, b) {
  const la = /^blk\.(\d+)\./.exec(a)?.[1] ?? -1;
  const lb = /^blk\.(\d+)\./.exec(b)?.[1] ?? -1;
  if (Number(la) !== Number(lb)) return Number(la) - Number(lb);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Tensor list with shapes (ne0 first, as in GGUF) and types, in file order. */
export function planModel(shapeName, mix, { layers } = {}) {
  const shape = SHAPES[shapeName];
  if (!shape) throw new Error(`unknown shape '${shapeName}' (known: ${Object.keys(SHAPES).join(', ')})`);
  if (!QUANT_MIXES[mix]) throw new Error(`unknown type '${mix}' (known: ${Object.keys(QUANT_MIXES).join(', ')})`);
  const hp = { ...shape };
  if (layers !== undefined) {
    if (!Number.isInteger(layers) || layers < 1) throw new Error(`--layers must be a positive integer, got ${layers}`);
    hp.nLayer = layers;
  }
  const { nEmbd, nFf, nHead, nHeadKv, nVocab, nLayer } = hp;
  const nEmbdKv = (nEmbd / nHead) * nHeadKv;
  const list = [
    ['token_embd.weight', [nEmbd, nVocab]],
    ['output_norm.weight', [nEmbd]],
    ['output.weight', [nEmbd, nVocab]],
  ];
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}.`;
    list.push(
      [p + 'attn_norm.weight', [nEmbd]],
      [p + 'attn_q.weight', [nEmbd, nEmbd]],
      [p + 'attn_k.weight', [nEmbd, nEmbdKv]],
      [p + 'attn_v.weight', [nEmbd, nEmbdKv]],
      [p + 'attn_output.weight', [nEmbd, nEmbd]],
      [p + 'ffn_norm.weight', [nEmbd]],
      [p + 'ffn_gate.weight', [nEmbd, nFf]],
      [p + 'ffn_up.weight', [nEmbd, nFf]],
      [p + 'ffn_down.weight', [nFf, nEmbd]],
    );
  }
  list.sort((x, y) => llamaQuantizeOrder(x[0], y[0]));
  const typeFor = makeTypeChooser(mix, hp);
  const tensors = list.map(([name, dims]) => ({ name, dims, type: typeFor(name, dims) }));
  return { hp, tensors };
}

// ---------------------------------------------------------------------------
// Random valid blocks. Each generator takes a buffer of random bytes holding
// whole blocks and overwrites the scale fields in place. Per-block choices are
// made from random bytes read before they are overwritten.

const TARGET_STD = 0.02;

// Small deterministic generator for the constant tables (not the weights).
function lcg(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s >>> 8; // 24 bits
  };
}

// 16 f16 super-block scales spread over [0.8, 1.2] x base.
function dTable(base) {
  return Uint16Array.from({ length: 16 }, (_, k) => f32ToF16Bits(base * (0.8 + (0.4 * k) / 15)));
}

// Q4_K / Q5_K: 8 sub-blocks of 32, 6-bit scale sc and min m each, packed into
// 12 bytes as ggml's get_scale_min_k4 reads them. y = d*sc*q - dmin*m; with
// dmin = R*d and m = round(sc*qmean/R) the sub-block mean is ~0.
function packScaleMin(sc, m) {
  const q = new Uint8Array(12);
  for (let j = 0; j < 4; j++) {
    q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
    q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
    q[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
  }
  return q;
}

export function unpackScaleMin(q, j) {
  if (j < 4) return [q[j] & 63, q[j + 4] & 63];
  return [(q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)];
}

function kScaleTable(scLo, scHi, qmean, ratio, seed) {
  const rnd = lcg(seed);
  const table = new Uint8Array(256 * 12);
  let sumSq = 0;
  for (let e = 0; e < 256; e++) {
    const sc = [];
    const m = [];
    for (let j = 0; j < 8; j++) {
      const s = scLo + (rnd() % (scHi - scLo + 1));
      sc.push(s);
      m.push(Math.min(63, Math.round((s * qmean) / ratio)));
      sumSq += s * s;
    }
    table.set(packScaleMin(sc, m), e * 12);
  }
  return { table, rms: Math.sqrt(sumSq / (256 * 8)) };
}

// Standard deviation of a uniform integer on [0, n).
const uniStd = (n) => Math.sqrt((n * n - 1) / 12);

function makeKMinGen(bytesPerBlock, qlevels, ratio, scLo, scHi, seed) {
  const qmean = (qlevels - 1) / 2;
  const { table, rms } = kScaleTable(scLo, scHi, qmean, ratio, seed);
  const ds = dTable(TARGET_STD / (uniStd(qlevels) * rms));
  const dmins = Uint16Array.from(ds, (h) => f32ToF16Bits(ratio * f16ToF32(h)));
  return (buf) => {
    for (let o = 0; o < buf.length; o += bytesPerBlock) {
      const k = buf[o] & 15;
      const s = buf[o + 1] * 12;
      buf[o] = ds[k] & 0xff; buf[o + 1] = ds[k] >> 8;
      buf[o + 2] = dmins[k] & 0xff; buf[o + 3] = dmins[k] >> 8;
      for (let j = 0; j < 12; j++) buf[o + 4 + j] = table[s + j];
    }
  };
}

function f16ToF32(h) {
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  const v = exp === 0 ? mant * 2 ** -24 : (1 + mant / 1024) * 2 ** (exp - 15);
  return h & 0x8000 ? -v : v;
}

// Q6_K: ql[128] qh[64] scales[16] (int8) d. y = d*sc*(q-32), q in [0,64).
function makeQ6KGen() {
  const rnd = lcg(6);
  const table = new Uint8Array(256 * 16);
  let sumSq = 0;
  for (let i = 0; i < table.length; i++) {
    const mag = 4 + (rnd() % 8);
    const v = rnd() & 1 ? mag : -mag;
    table[i] = v & 0xff;
    sumSq += v * v;
  }
  const rms = Math.sqrt(sumSq / table.length);
  const ds = dTable(TARGET_STD / (uniStd(64) * rms));
  return (buf) => {
    for (let o = 0; o < buf.length; o += 210) {
      const k = buf[o + 208] & 15;
      const s = buf[o + 209] * 16;
      for (let j = 0; j < 16; j++) buf[o + 192 + j] = table[s + j];
      buf[o + 208] = ds[k] & 0xff; buf[o + 209] = ds[k] >> 8;
    }
  };
}

// Q8_0 (d + 32 int8) and Q4_0 (d + 16 nibbles, y = d*(q-8)): only d to fix.
// Its sign is random, which cancels the -0.5 mean of the quants.
function makeD0Gen(bytesPerBlock, qStd) {
  const ds = dTable(TARGET_STD / qStd);
  return (buf) => {
    for (let o = 0; o < buf.length; o += bytesPerBlock) {
      const r = buf[o];
      const h = ds[r & 15] | ((r & 16) << 11);
      buf[o] = h & 0xff; buf[o + 1] = h >> 8;
    }
  };
}

export const BLOCK_GEN = {
  // block_q4_K: d, dmin, scales[12], qs[128]          (144 bytes / 256)
  Q4_K: makeKMinGen(144, 16, 4, 16, 33, 4),
  // block_q5_K: d, dmin, scales[12], qh[32], qs[128]  (176 bytes / 256)
  Q5_K: makeKMinGen(176, 32, 8, 16, 32, 5),
  // block_q6_K: ql[128], qh[64], scales[16], d        (210 bytes / 256)
  Q6_K: makeQ6KGen(),
  Q8_0: makeD0Gen(34, uniStd(256)),
  Q4_0: makeD0Gen(18, uniStd(16)),
};

const ZERO = Buffer.alloc(8 << 20);

function keystream(seed, name) {
  const h = createHash('sha256').update(`chord-llm synth v1\0seed=${seed}\0${name}`).digest();
  return createCipheriv('aes-128-ctr', h.subarray(0, 16), h.subarray(16, 32));
}

/** data(start, count) for the gguf writer: random valid blocks of a quantized tensor. */
function quantizedSource(t, seed, onBytes) {
  const id = GGMLType[t.type];
  const [bs, ts] = GGML_BLOCK[id];
  const fix = BLOCK_GEN[t.type];
  if (!fix) throw new Error(`no random block generator for ${t.type}`);
  const cipher = keystream(seed, t.name);
  return (start, count) => {
    let n = (count / bs) * ts;
    const parts = [];
    while (n > 0) {
      const m = Math.min(n, ZERO.length);
      parts.push(cipher.update(ZERO.subarray(0, m)));
      n -= m;
    }
    const buf = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    fix(buf);
    onBytes?.(buf.length);
    return buf;
  };
}

function normValues(seed, name, n) {
  const ks = keystream(seed, name).update(Buffer.alloc(n * 2));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = 0.9 + (0.2 * ks.readUInt16LE(i * 2)) / 65535;
  return out;
}

// ---------------------------------------------------------------------------
// Tokenizer: a SentencePiece-style llama vocab (as in Llama 2 / TinyLlama):
// <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>, then pieces with
// decreasing scores, then single characters last. Every multi-character piece
// has all its prefixes in the vocab too, so llama.cpp's SPM merger (which
// joins adjacent symbols whenever the concatenation is a token, best score
// first) can always build it: the leftmost symbol of a word can always absorb
// its right neighbour. Common English words become single tokens, other words
// split into a prefix and smaller pieces, and anything else (newlines, rare
// characters) falls back to byte tokens.

// Common English words, roughly by frequency.
const WORDS = `
the of and to a in is it you that he was for on are with as I his they be at one have this from or had by
not word but what some we can out other were all there when up use your how said an each she which do their
time if will way about many then them write would like so these her long make thing see him two has look more
day could go come did number sound no most people my over know water than call first who may down side been now
find any new work part take get place made live where after back little only round man year came show every good
me give our under name very through just form sentence great think say help low line differ turn cause much mean
before move right boy old too same tell does set three want air well also play small end put home read hand port
large spell add even land here must big high such follow act why ask men change went light kind off need house
picture try us again animal point mother world near build self earth father head stand own page should country
found answer school grow study still learn plant cover food sun four between state keep eye never last let thought
city tree cross farm hard start might story saw far sea draw left late run while press close night real life few
north open seem together next white children begin got walk example ease paper group always music those both mark
often letter until mile river car feet care second book carry took science eat room friend began idea fish mountain
stop once base hear horse cut sure watch color face wood main enough plain girl usual young ready above ever red
list though feel talk bird soon body dog family direct pose leave song measure door product black short numeral
class wind question happen complete ship area half rock order fire south problem piece told knew pass since top
whole king space heard best hour better true during hundred five remember step early hold west ground interest
reach fast verb sing listen six table travel less morning ten simple several vowel toward war lay against pattern
slow center love person money serve appear road map rain rule govern pull cold notice voice unit power town fine
certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct able pound done beauty
drive stood contain front teach week final gave green oh quick develop ocean warm free minute strong special mind
behind clear tail produce fact street inch multiply nothing course stay wheel full force blue object decide surface
deep moon island foot system busy test record boat common gold possible plane stead dry wonder laugh thousand ago
ran check game shape equate hot miss brought heat snow tire bring yes distant fill east paint language among grand
ball yet wave drop heart am present heavy dance engine position arm wide sail material size vary settle speak weight
general ice matter circle pair include divide syllable felt perhaps pick sudden count square reason length represent
art subject region energy hunt probable bed brother egg ride cell believe fraction forest sit race window store
summer train sleep prove lone leg exercise wall catch mount wish sky board joy winter sat written wild instrument
kept glass grass cow job edge sign visit past soft fun bright gas weather month million bear finish happy hope flower
clothe strange gone jump baby eight village meet root buy raise solve metal whether push seven paragraph third shall
held hair describe cook floor either result burn hill safe cat century consider type law bit coast copy phrase silent
tall sand soil roll temperature finger industry value fight lie beat excite natural view sense ear else quite broke
case middle kill son lake moment scale loud spring observe child straight consonant nation dictionary milk speed
method organ pay age section dress cloud surprise quiet stone tiny climb cool design poor lot experiment bottom key
iron single stick flat twenty skin smile crease hole trade melody trip office receive row mouth exact symbol die
least trouble shout except wrote seed tone join suggest clean break lady yard rise bad blow oil blood touch grew cent
mix team wire cost lost brown wear garden equal sent choose fell fit flow fair bank collect save control decimal gentle
woman captain practice separate difficult doctor please protect noon whose locate ring character insect caught period
indicate radio spoke atom human history effect electric expect crop modern element hit student corner party supply
bone rail imagine provide agree thus capital chair danger fruit rich thick soldier process operate guess necessary
sharp wing create neighbor wash bat rather crowd corn compare poem string bell depend meat rub tube famous dollar
stream fear sight thin triangle planet hurry chief colony clock mine tie enter major fresh search send yellow gun
allow print dead spot desert suit current lift rose continue block chart hat sell success company subtract event
particular deal swim term opposite wife shoe shoulder spread arrange camp invent cotton born determine quart nine
truck noise level chance gather shop stretch throw shine property column molecule select wrong gray repeat require
broad prepare salt nose plural anger claim continent oxygen sugar death pretty skill women season solution magnet
silver thank branch match suffix especially fig afraid huge sister steel discuss forward similar guide experience
score apple bought led pitch coat mass card band rope slip win dream evening condition feed tool total basic smell
valley nor double seat arrive master track parent shore division sheet substance favor connect post spend chord fat
glad original share station dad bread charge proper bar offer segment slave duck instant market degree populate chick
dear enemy reply drink occur support speech nature range steam motion path liquid log meant quotient teeth shell neck
is are was were been being has had having does did doing said says made makes making went goes going gone took takes
taking came comes coming saw sees seeing knew knows knowing thought thinks thinking looked looks looking wanted wants
used uses using found finds worked works working called calls tried tries asked asks needed needs felt feels became
becomes left leaves put puts meant means kept keeps began begins seemed seems helped helps showed shows heard hears
played plays ran runs moved moves lived lives believed believes brought brings happened happens wrote writes provided
provides sat sits stood stands lost loses paid pays met meets included includes continued continues learned learns
changed changes led leads understood understands watched watches followed follows stopped stops created creates spoke
speaks read reads allowed allows added adds spent spends grew grows opened opens walked walks won wins offered offers
remembered remembers loved loves considered considers appeared appears bought buys waited waits served serves died
dies sent sends expected expects built builds stayed stays fell falls reached reaches killed kills remained remains
suggested suggests raised raises passed passes sold sells required requires reported reports decided decides pulled
pulls things times years days ways people's men's women's children's hands eyes words parts places cases weeks
companies systems programs questions governments numbers nights points homes waters rooms mothers areas moneys stories
facts months lots rights studies books jobs businesses issues sides kinds heads houses services friends fathers
powers hours games lines members laws cars cities communities names presidents teams minutes ideas kids bodies
informations backs parents faces others levels offices doors healths persons arts wars histories parties results
changes mornings reasons researches girls guys moments airs teachers forces educations
i'm you're he's she's it's we're they're i've you've we've they've i'd you'd he'd she'd we'd they'd i'll you'll
he'll she'll we'll they'll isn't aren't wasn't weren't hasn't haven't hadn't doesn't don't didn't won't wouldn't
shan't shouldn't can't cannot couldn't mustn't let's that's who's what's here's there's when's where's why's how's
however therefore although because without within whatever whenever wherever whoever another anything everything
something nothing someone everyone anyone nobody somebody everybody yourself myself himself herself itself ourselves
themselves really actually probably maybe perhaps usually already almost always sometimes never again today tomorrow
yesterday tonight hello hi thanks thank please sorry okay yes no goodbye welcome dear sir madam mr mrs ms dr
data computer software internet website email online digital network file code program user model language
information technology function value return class import export const let var async await true false null
undefined string number object array error test version update system server client request response image video
`;

const SUFFIXES = `s es ed d ing er ers est ly tion tions sion ment ments ness able ible al ial ic ical ity ty ive ous ious
ful less ism ist ists ize ized izes ation ations ence ance ent ant y ies ied en ary ory ure ures age ages ship hood
ward wards like th re un in dis non pre pro con com de ex im ir il over under out up`;

// Single characters: the '▁' word marker, printable ASCII, Latin-1 letters and
// common punctuation/symbols, Greek and Cyrillic letters.
function singleChars() {
  const out = ['\u2581'];
  for (let c = 0x21; c <= 0x7e; c++) out.push(String.fromCharCode(c));
  for (let c = 0xa1; c <= 0xff; c++) if (c !== 0xad) out.push(String.fromCharCode(c));
  for (const ch of '\u2014\u2013\u2018\u2019\u201c\u201d\u2026\u2022\u20ac\u2122\u2192\u2190\u2264\u2265\u2260\u2248\u221e') out.push(ch);
  for (let c = 0x391; c <= 0x3c9; c++) if (c !== 0x3a2 && (c < 0x3aa || c > 0x3b0)) out.push(String.fromCharCode(c));
  for (let c = 0x410; c <= 0x44f; c++) out.push(String.fromCharCode(c));
  return out;
}

const cap = (w) => w.charAt(0).toUpperCase() + w.slice(1);

let vocabCache;
/**
 * { tokens, scores, types } of exactly n tokens (token types: 1 normal,
 * 2 unknown, 3 control, 6 byte). Independent of the weight seed.
 */
export function buildSpmVocab(n = 32000) {
  if (vocabCache?.tokens.length === n) return vocabCache;
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  const chars = singleChars();
  const budget = n - tokens.length - chars.length;
  if (budget < 0) throw new Error(`vocab size ${n} too small`);
  const charSet = new Set(chars);
  const pieces = [];
  const seen = new Set();
  // Adds a piece after all its prefixes (so the SPM merger can build it).
  const add = (p) => {
    for (let len = 2; len <= p.length && pieces.length < budget; len++) {
      const pre = p.slice(0, len);
      if (!seen.has(pre) && !charSet.has(pre)) { seen.add(pre); pieces.push(pre); }
    }
  };
  const W = '\u2581';
  for (let k = 2; k <= 16; k++) add(W.repeat(k));
  const words = [...new Set(WORDS.split(/\s+/).filter(Boolean))];
  for (const w of words) add(W + w);
  for (const s of SUFFIXES.split(/\s+/).filter(Boolean)) add(s);
  for (const w of words) add(W + cap(w));
  for (const w of words) add(w);
  // Word-internal pieces: substrings of the words, most common first.
  const counts = new Map();
  for (const w of words) {
    for (let i = 1; i < w.length; i++) {
      for (let len = 2; len <= 6 && i + len <= w.length; len++) {
        const s = w.slice(i, i + len);
        counts.set(s, (counts.get(s) ?? 0) + 1);
      }
    }
  }
  const subs = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const [s] of subs) add(s);
  // Inflected forms by simple English spelling rules (some are not real words; harmless).
  const inflect = (w) => {
    const out = [];
    if (!/^[a-z]{4,}$/.test(w)) return out;
    const cy = /[^aeiou]y$/.test(w);
    out.push(/(s|x|z|ch|sh)$/.test(w) ? w + 'es' : cy ? w.slice(0, -1) + 'ies' : w + 's');
    if (!/(ing|ed|s|ly)$/.test(w)) {
      out.push(/[^e]e$/.test(w) ? w.slice(0, -1) + 'ing' : w + 'ing');
      out.push(w.endsWith('e') ? w + 'd' : cy ? w.slice(0, -1) + 'ied' : w + 'ed');
      out.push(w.endsWith('e') ? w + 'r' : cy ? w.slice(0, -1) + 'ier' : w + 'er');
      if (!w.endsWith('y')) out.push(w.endsWith('le') ? w.slice(0, -1) + 'y' : w + 'ly');
    }
    return out;
  };
  for (const w of words) for (const f of inflect(w)) add(W + f);
  for (const w of words) for (const f of inflect(w)) add(f);
  for (const w of words) for (const f of inflect(w)) add(W + cap(f));
  for (const w of words) add(W + w.toUpperCase());
  // Fill the rest with short pronounceable pseudo-words in a fixed pseudo-random order.
  const onsets = 'b c d f g h j k l m n p r s t v w z bl br ch cl cr dr fl fr gl gr pl pr sc sh sk sl sm sn sp st str sw th tr wh'.split(' ');
  const nuclei = 'a e i o u ai ea ee ie oa oo ou'.split(' ');
  const codas = ['', 'n', 'r', 's', 't', 'l', 'm', 'nd', 'nt', 'st', 'ng', 'ck', 'rt', 'x'];
  const rnd = lcg(1234);
  const syl = () => onsets[rnd() % onsets.length] + nuclei[rnd() % nuclei.length] + codas[rnd() % codas.length];
  for (let guard = 0; pieces.length < budget; guard++) {
    if (guard > 10_000_000) throw new Error('could not fill the vocab');
    const w = syl() + (rnd() % 2 ? syl() : '');
    const r = rnd() % 6;
    add(r === 0 ? W + cap(w) : r === 1 ? w : W + w);
  }
  for (const p of pieces) { tokens.push(p); types.push(1); }
  for (const c of chars) { tokens.push(c); types.push(1); }
  if (tokens.length !== n) throw new Error(`vocab has ${tokens.length} tokens, expected ${n}`);
  // Scores: 0 for specials and bytes, then decreasing with the id (earlier
  // pieces are merged first, as in a BPE-trained SentencePiece model).
  const scores = tokens.map((_, i) => (i < 259 ? 0 : -(i - 259)));
  vocabCache = { tokens, scores, types };
  return vocabCache;
}

/** 'left right' pairs building each multi-character piece (prefix + last character), in id order. */
export function spmMerges(vocab) {
  const merges = [];
  vocab.tokens.forEach((t, i) => {
    if (vocab.types[i] !== 1) return;
    const cps = [...t];
    if (cps.length < 2) return;
    merges.push(`${cps.slice(0, -1).join('')} ${cps[cps.length - 1]}`);
  });
  return merges;
}

// ---------------------------------------------------------------------------
// The writer spec.

export function synthSpec(shapeName, mix, { seed = 1, layers, onBytes } = {}) {
  const { hp, tensors } = planModel(shapeName, mix, { layers });
  const vocab = buildSpmVocab(hp.nVocab);
  const a = 'llama';
  const layerNote = layers !== undefined && layers !== SHAPES[shapeName].nLayer ? `, ${layers} layers` : '';
  const kv = [
    ['general.architecture', gv.str(a)],
    ['general.name', gv.str(`${hp.name} (synthetic: random weights, seed ${seed}${layerNote})`)],
    // Same keys, in the same order, as the real files (plus add_bos/add_eos).
    [`${a}.context_length`, gv.u32(hp.nCtxTrain)],
    [`${a}.embedding_length`, gv.u32(hp.nEmbd)],
    [`${a}.block_count`, gv.u32(hp.nLayer)],
    [`${a}.feed_forward_length`, gv.u32(hp.nFf)],
    [`${a}.rope.dimension_count`, gv.u32(hp.nEmbd / hp.nHead)],
    [`${a}.attention.head_count`, gv.u32(hp.nHead)],
    [`${a}.attention.head_count_kv`, gv.u32(hp.nHeadKv)],
    [`${a}.attention.layer_norm_rms_epsilon`, gv.f32(hp.rmsEps)],
    ...(hp.ropeFreqBaseKey ? [[`${a}.rope.freq_base`, gv.f32(hp.ropeFreqBase)]] : []),
    ['general.file_type', gv.u32(QUANT_MIXES[mix].fileType)],
    ['tokenizer.ggml.model', gv.str('llama')],
    ['tokenizer.ggml.tokens', gv.arr('str', vocab.tokens)],
    ['tokenizer.ggml.scores', gv.arr('f32', vocab.scores)],
    ['tokenizer.ggml.token_type', gv.arr('i32', vocab.types)],
    ...(hp.mergesKey ? [['tokenizer.ggml.merges', gv.arr('str', spmMerges(vocab))]] : []),
    ['tokenizer.ggml.bos_token_id', gv.u32(1)],
    ['tokenizer.ggml.eos_token_id', gv.u32(2)],
    ['tokenizer.ggml.unknown_token_id', gv.u32(0)],
    ...(hp.padTokenId !== undefined ? [['tokenizer.ggml.padding_token_id', gv.u32(hp.padTokenId)]] : []),
    ['tokenizer.ggml.add_bos_token', gv.bool(true)],
    ['tokenizer.ggml.add_eos_token', gv.bool(false)],
    ...(hp.chatTemplate ? [['tokenizer.chat_template', gv.str(hp.chatTemplate)]] : []),
    ['general.quantization_version', gv.u32(2)],
  ];
  const specTensors = tensors.map((t) => {
    if (t.type === 'F32') {
      const n = t.dims.reduce((x, y) => x * y, 1);
      return { ...t, data: (start, count) => { onBytes?.(count * 4); return normValues(seed, t.name, n).subarray(start, start + count); } };
    }
    // ~4 MiB of output per chunk, a whole number of blocks.
    const [bs, ts] = GGML_BLOCK[GGMLType[t.type]];
    const chunkElements = Math.max(1, Math.floor((4 << 20) / ts)) * bs;
    return { ...t, chunkElements, data: quantizedSource(t, seed, onBytes) };
  });
  return { hp, plan: tensors, spec: { version: 3, kv, tensors: specTensors } };
}

