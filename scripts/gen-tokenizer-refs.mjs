// Generates src/tokenizer/testdata/<name>-refs.json: llama.cpp's own tokenization (through
// node-llama-cpp, CPU only, vocabulary only) of a list of tricky strings, with and without
// special-token parsing, plus detokenizations, the end-of-generation set and a digest of every
// token's piece. The Rust reference test (src/tokenizer/tests/reference.rs) and the JS tests
// compare chord-llm against them; the JSON carries the strings so both can reuse the list.
//
//   node scripts/gen-tokenizer-refs.mjs [name ...]      (default: every model found)
//
// Models come from two places: the model cache ($CHORD_LLM_MODELS or ~/.cache/chord-llm/models,
// filled by `node scripts/fetch-models`), and the vocabulary-only GGUFs that llama.cpp ships for
// its own tokenizer tests (models/ggml-vocab-*.gguf of the llama.cpp release bundled with
// node-llama-cpp; $LLAMA_CPP_SRC, else /tmp/llama-src, cloned from the bundle when missing).
// Those cover tokenizer types and pre-tokenizers that no cached model uses.
//
// To keep the files small, a case leaves out `idsSpecial` when it equals `ids`, and each of
// `decoded`, `decodedSpecial`, `decodedSpecialPlain` when it equals `text`.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama } from 'node-llama-cpp';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const modelsDir = process.env.CHORD_LLM_MODELS || path.join(os.homedir(), '.cache', 'chord-llm', 'models');
const llamaSrc = process.env.LLAMA_CPP_SRC || '/tmp/llama-src';
const outDir = path.join(root, 'src', 'tokenizer', 'testdata');

// name -> where the GGUF is. `cache` files are real models, `vocab` files llama.cpp's test vocabularies.
const MODELS = [
  { name: 'smollm2', cache: 'smollm2-135m-instruct-q4_1.gguf' }, // gpt2 BPE, pre smollm
  { name: 'gemma3', cache: 'gemma-3-270m-q4_k_m.gguf' }, // SentencePiece, add_space_prefix false
  { name: 'qwen2.5-coder-0.5b', cache: 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf' }, // pre qwen2
  { name: 'qwen2.5-coder-1.5b', cache: 'qwen2.5-coder-1.5b-instruct-q4_k_m.gguf' }, // pre qwen2
  { name: 'llama-spm', vocab: 'ggml-vocab-llama-spm.gguf' }, // Llama 2: SentencePiece, space prefix
  { name: 'phi-3', vocab: 'ggml-vocab-phi-3.gguf' }, // SentencePiece with Phi-3's rstrip rule
  { name: 'baichuan', vocab: 'ggml-vocab-baichuan.gguf' }, // SentencePiece without add_bos / add_space_prefix keys
  { name: 'qwen2', vocab: 'ggml-vocab-qwen2.gguf' }, // pre qwen2, user-defined specials
  { name: 'llama-bpe', vocab: 'ggml-vocab-llama-bpe.gguf' }, // Llama 3: pre llama-bpe
  { name: 'command-r', vocab: 'ggml-vocab-command-r.gguf' }, // pre command-r (digits, then GPT-2)
  { name: 'starcoder', vocab: 'ggml-vocab-starcoder.gguf' }, // pre starcoder: as smollm, with clean_spaces
  { name: 'gpt-2', vocab: 'ggml-vocab-gpt-2.gguf' }, // pre gpt-2, clean_spaces
  { name: 'gpt-neox', vocab: 'ggml-vocab-gpt-neox.gguf' }, // no pre: llama.cpp's default regexes
  { name: 'aquila', vocab: 'ggml-vocab-aquila.gguf' }, // no pre (default regexes), BOS = EOS = 0
];

const longCode = `#include <stdio.h>
int main(int argc, char **argv) {
\tfor (int i = 0; i < argc; ++i) {
\t\tprintf("%d: %s\\n", i, argv[i]);
\t}
\treturn 0;
}
`;

// The original 100 strings (the SmolLM2 set); every model gets these and the ones below.
const BASE_STRINGS = [
  // empty and whitespace
  '',
  ' ',
  '  ',
  '   ',
  '\t',
  '\n',
  '\n\n\n',
  '\r\n',
  ' \t \n ',
  'Hello',
  ' Hello',
  'Hello ',
  'Hello  ',
  'Hello   world',
  'Hello world    ',
  '   leading spaces',
  'tabs\tbetween\t\twords',
  'line one\nline two\n\nline four',
  'windows\r\nline\r\nendings',
  'trailing newline\n',
  'mixed \t\n whitespace \n\t end',
  'nbsp\u00a0here and\u2003em\u2009thin\u3000ideographic',
  'line\u2028separator\u2029paragraph\u0085nel',
  // contractions
  "I'm sure it's fine, isn't it? We're here, they've gone, you'll see, he'd know.",
  "I'M SURE IT'S FINE, ISN'T IT? WE'RE HERE, THEY'VE GONE, YOU'LL SEE, HE'D KNOW.",
  "'s 't 're 've 'm 'll 'd",
  "'S 'T 'RE 'VE 'M 'LL 'D 'Re 'rE",
  "don''t ''s 'x '",
  "rock 'n' roll",
  // digits and numbers
  '0',
  '1234567890',
  '3.14159265358979323846',
  'The year 2024 had 366 days; 1,000,000 people paid $19.99 each.',
  '١٢٣ ٤٥٦ Arabic-Indic, ๑๒๓ Thai, ½ ¾ ² ³ Ⅻ ① numbers',
  'x1y22z333 a12b',
  '-42 +7 1e10 0xFF 0b1010 v1.2.3',
  // punctuation and symbols
  'Hello, world! How are you?',
  '!!!???...,,,;;;:::',
  '(parens) [brackets] {braces} <angles>',
  '@user #hashtag $money %percent ^caret &amp *star',
  '"double" \'single\' `back` «guillemets» “curly” ‘quotes’',
  'a--b — c – d … e',
  '~/path/to/file.txt C:\\Windows\\System32 https://example.com/a?b=c&d=e#f',
  // unicode scripts
  'Café naïve résumé façade coöperate',
  'e\u0301 a\u0308 n\u0303 combining marks vs é ä ñ',
  'Ünïcödé ÀÉÎÕÜ ßẞ',
  'Привет, мир! Как дела?',
  'Γειά σου Κόσμε',
  'שלום עולם',
  'مرحبا بالعالم',
  'नमस्ते दुनिया',
  'สวัสดีชาวโลก',
  '你好，世界！',
  '日本語のテキストとカタカナ、ひらがな。',
  '안녕하세요 세계',
  'Tiếng Việt có dấu',
  'ქართული ენა',
  'Mixed English и русский with 中文 and العربية 123',
  // emoji
  '😀',
  '😀😃😄 smile',
  'family: 👨‍👩‍👧‍👦 and 👩🏽‍💻 coder',
  'flags: 🇺🇸🇫🇷🇯🇵 🏳️‍🌈',
  '❤️ ✨ ☕ ♥',
  '\ufeffBOM and \u200bzero width\u200d joiner',
  // code
  longCode,
  'def foo(x):\n    return x ** 2  # square\n',
  'fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!("{:?}", v);\n}\n',
  'const f = async (a, b) => { await g(a?.b ?? 0); };',
  "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
  '<div class="x"><p>Hello</p></div>',
  '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
  '    indented four\n        indented eight\n',
  // special tokens and look-alikes
  '<|im_start|>',
  '<|im_end|>',
  '<|endoftext|>',
  '<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n',
  '<|im_start|>system\nYou are helpful.<|im_end|>',
  'text<|im_end|>text',
  '<|im_start|><|im_end|><|im_start|>',
  ' <|im_start|> spaced <|im_end|> ',
  '<|im_start',
  '|im_end|>',
  '<|im_end|',
  '<|im_end |>',
  '<|IM_END|>',
  '<<|im_end|>>',
  '<|im_start|im_end|>',
  '<|endoftext|><|endoftext|>',
  '<repo_name>x<reponame>y<file_sep>z<filename>',
  '<jupyter_code>print(1)<jupyter_output>1<empty_output>',
  '<s></s><unk><pad>[INST]',
  // misc
  'a',
  'ab',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'Supercalifragilisticexpialidocious antidisestablishmentarianism',
  'CamelCaseIdentifier snake_case_name SCREAMING_CASE kebab-case',
  'email@example.com user.name+tag@sub.domain.org',
  '\u0000\u0001\u0007\u001b[0m control chars',
  'lone bytes \u00ff\u00fe\u0100 and high \u{10ffff} \u{e000} private',
  'The quick brown fox jumps over the lazy dog. '.repeat(8),
];

// SentencePiece corner cases: the space prefix, U+2581 in the input, byte fallback, chat markup.
const SPM_STRINGS = [
  ' leading space',
  '  two leading spaces',
  'trailing spaces   ',
  'multiple     inner      spaces',
  '\n starts with newline',
  '\tstarts with tab',
  ' \n \n ',
  'a\n\nb\n\n\nc',
  '\u2581already\u2581escaped \u2581 mixed',
  'ends with \u2581',
  '𠀀𪚥𫝀 rare CJK and 龘 and 𝕏𝔸 math letters',
  '🦀🧬🫠🪿 newer emoji',
  'tab\tvt\u000bff\u000cdel\u007f\u0080\u009f c1 controls',
  '<0x41><0x0A> byte-token look-alikes <0xZZ>',
  '<unk>',
  ' <unk> ',
  'x<unk>y',
  '<bos><eos><pad><mask>',
  '<start_of_turn>user\nWrite a haiku about tokens.<end_of_turn>\n<start_of_turn>model\n',
  '<start_of_turn> user <end_of_turn>',
  '<start_of_turn>\n<end_of_turn>\n',
  '<start_of_image> [multimodal] <end_of_image>',
  '<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] again [/INST]',
  '<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n4<|end|>\n<|endoftext|>',
  '<|system|> sys <|end|> <|user|>  spaced  <|end|>',
];

// Byte-level BPE corner cases: digit grouping, indentation runs, upper-case contractions, markup.
const BPE_STRINGS = [
  '1 12 123 1234 12345',
  '99999+1=100000; 007 0.001 1_000_000 2,718',
  'v0.10.200 1e-9 -3000 +45678',
  "DON'T YOU'RE WE'LL I'D IT'S THEY'VE I'M",
  "'S'T'RE'VE'M'LL'D's't're've'm'll'd",
  "O'Neil's rock'n'roll isn't 'quoted'",
  'class A:\n    def f(self):\n        return 1\n\n\tif x:\n\t\tpass\n',
  'if (a) {\n\tb();\n}\r\n\r\n  \n  x',
  'x\n\n\ny \n z\r\n\r\n   \n',
  '!?\r\n...\n\n;\n',
  '  \t\n\t  ',
  ' \n',
  '<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n    return c<|fim_middle|>',
  '<|repo_name|>chord-llm\n<|file_sep|>src/lib.rs\nfn main() {}',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>',
  '<|endoftext|>x<|endoftext|> y',
  '¿Qué? ¡Sí! «¿»',
  '—–‐‑‒―… ‖ † ‡ • ‣ ′ ″',
];

const STRINGS = [...BASE_STRINGS, ...SPM_STRINGS, ...BPE_STRINGS];

function ggufPath(entry) {
  if (entry.cache) return path.join(modelsDir, entry.cache);
  let dir = path.join(llamaSrc, 'models');
  if (!fs.existsSync(dir)) {
    const bundle = path.join(root, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle');
    const clone = path.join(os.tmpdir(), 'chord-llm-llama-src');
    if (!fs.existsSync(clone)) execFileSync('git', ['clone', '--quiet', bundle, clone], { stdio: 'inherit' });
    dir = path.join(clone, 'models');
  }
  return path.join(dir, entry.vocab);
}

// FNV-1a (32-bit) over UTF-8 bytes; the Rust test computes the same digest.
function fnv1a(buf) {
  let h = 0x811c9dc5;
  for (const b of buf) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

const sameIds = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

async function generate(llama, entry) {
  const modelPath = ggufPath(entry);
  if (!fs.existsSync(modelPath)) {
    console.log(`skip ${entry.name}: ${modelPath} not found`);
    return;
  }
  const model = await llama.loadModel({ modelPath, vocabOnly: true });
  const cases = STRINGS.map((text) => {
    const ids = Array.from(model.tokenize(text, false));
    const idsSpecial = Array.from(model.tokenize(text, true));
    const c = { text, ids };
    if (!sameIds(ids, idsSpecial)) c.idsSpecial = idsSpecial;
    const decoded = {
      decoded: model.detokenize(ids, false),
      decodedSpecial: model.detokenize(idsSpecial, true),
      // Special tokens dropped on the way back out when not rendering them.
      decodedSpecialPlain: model.detokenize(idsSpecial, false),
    };
    for (const [k, v] of Object.entries(decoded)) if (v !== text) c[k] = v;
    return c;
  });

  // Every token's piece, joined with NUL, for both renderings; also the EOG set over the vocab.
  const n = Number(model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`cannot determine the vocabulary size of ${modelPath}`);
  const piecesPlain = [];
  const piecesSpecial = [];
  const eog = [];
  for (let id = 0; id < n; id++) {
    piecesPlain.push(model.detokenize([id], false));
    piecesSpecial.push(model.detokenize([id], true));
    if (model.isEogToken(id)) eog.push(id);
  }

  const header = {
    model: path.basename(modelPath),
    source: entry.cache ? 'model cache' : 'llama.cpp models/ (vocabulary only)',
    generator: 'scripts/gen-tokenizer-refs.mjs (node-llama-cpp model.tokenize/detokenize, add_special=false)',
    vocabSize: n,
    bos: model.tokens.bos,
    eos: model.tokens.eos,
    shouldPrependBos: model._model.shouldPrependBosToken(),
    shouldAppendEos: model._model.shouldAppendEosToken(),
    eog,
    piecesDigest: {
      note: 'fnv1a32 of UTF-8 of detokenize([id], special) for every id, joined with U+0000',
      plain: fnv1a(Buffer.from(piecesPlain.join('\u0000'), 'utf8')),
      special: fnv1a(Buffer.from(piecesSpecial.join('\u0000'), 'utf8')),
    },
  };
  // One case per line keeps the files small and their diffs readable.
  const lines = Object.entries(header).map(([k, v]) => ` ${JSON.stringify(k)}: ${JSON.stringify(v)},`);
  const body = cases.map((c) => `  ${JSON.stringify(c)}`).join(',\n');
  const outPath = path.join(outDir, `${entry.name}-refs.json`);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(outPath, `{\n${lines.join('\n')}\n "cases": [\n${body}\n ]\n}\n`);
  console.log(`wrote ${cases.length} cases to ${path.relative(root, outPath)}`);
  await model.dispose();
}

const wanted = process.argv.slice(2);
for (const name of wanted) {
  if (!MODELS.some((m) => m.name === name)) throw new Error(`unknown model ${name} (known: ${MODELS.map((m) => m.name).join(', ')})`);
}
const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true });
for (const entry of MODELS) {
  if (wanted.length === 0 || wanted.includes(entry.name)) await generate(llama, entry);
}
await llama.dispose();
