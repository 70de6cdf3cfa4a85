// Generates src/tokenizer/testdata/smollm2-refs.json: llama.cpp's own tokenization (through
// node-llama-cpp, CPU only) of a list of tricky strings, with and without special-token parsing,
// plus detokenizations, the end-of-generation set and a digest of every token's piece. The Rust
// reference test (src/tokenizer/reference_tests.rs) and the JS tests compare chord-llm against it;
// the JSON carries the strings so both can reuse the same list.
//
//   node scripts/gen-tokenizer-refs.mjs [model.gguf] [out.json]
//
// Model default: $CHORD_LLM_MODELS (or ~/.cache/chord-llm/models)/smollm2-135m-instruct-q4_1.gguf
// (`node scripts/fetch-models smollm2` puts it there).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama } from 'node-llama-cpp';

const here = path.dirname(fileURLToPath(import.meta.url));
const modelsDir = process.env.CHORD_LLM_MODELS || path.join(os.homedir(), '.cache', 'chord-llm', 'models');
const modelPath = process.argv[2] || path.join(modelsDir, 'smollm2-135m-instruct-q4_1.gguf');
const outPath = process.argv[3] || path.join(here, '..', 'src', 'tokenizer', 'testdata', 'smollm2-refs.json');

const longCode = `#include <stdio.h>
int main(int argc, char **argv) {
\tfor (int i = 0; i < argc; ++i) {
\t\tprintf("%d: %s\\n", i, argv[i]);
\t}
\treturn 0;
}
`;

// Each entry is one case; order and content are free to change, the JSON is regenerated whole.
const STRINGS = [
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
  'SELECT * FROM users WHERE id = 42 AND name LIKE \'%bob%\';',
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

const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true });
const model = await llama.loadModel({ modelPath });

// FNV-1a (32-bit) over UTF-8 bytes; the Rust test computes the same digest.
function fnv1a(buf) {
  let h = 0x811c9dc5;
  for (const b of buf) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

const vocabSize = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length;

const cases = STRINGS.map((text) => {
  const ids = Array.from(model.tokenize(text, false));
  const idsSpecial = Array.from(model.tokenize(text, true));
  return {
    text,
    ids,
    idsSpecial,
    decoded: model.detokenize(ids, false),
    decodedSpecial: model.detokenize(idsSpecial, true),
    // Special tokens dropped on the way back out when not rendering them.
    decodedSpecialPlain: model.detokenize(idsSpecial, false),
  };
});

// Every token's piece, joined with NUL, for both renderings; also the EOG set over the vocab.
const n = Number(vocabSize);
if (!Number.isInteger(n) || n <= 0) throw new Error(`cannot determine vocab size (${vocabSize})`);
const piecesPlain = [];
const piecesSpecial = [];
const eog = [];
for (let id = 0; id < n; id++) {
  piecesPlain.push(model.detokenize([id], false));
  piecesSpecial.push(model.detokenize([id], true));
  if (model._model.isEogToken(id)) eog.push(id);
}

const out = {
  model: path.basename(modelPath),
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
  cases,
};

fs.mkdirSync(path.dirname(outPath), { recursive: true });
fs.writeFileSync(outPath, JSON.stringify(out, null, 1) + '\n');
console.log(`wrote ${cases.length} cases to ${outPath}`);
await model.dispose();
await llama.dispose();
