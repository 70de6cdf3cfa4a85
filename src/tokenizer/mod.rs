//! Tokenizer API: builds a tokenizer from the GGUF `tokenizer.ggml.*` data and encodes /
//! decodes exactly as llama.cpp does (its `llama-vocab.cpp` and `unicode.cpp`).
//!
//! Encoding is: split the text on special tokens (`partition`), then per text fragment run
//! the model-specific tokenizer. For byte-level BPE (`gpt2`), that is a pre-tokenizer
//! (`pretokenize`) splitting the fragment into words, GPT-2 byte encoding of each word, and
//! BPE merges within it (`bpe`). For SentencePiece (`llama`), it is escaping spaces to U+2581
//! (with a leading one where llama.cpp adds it) and score-driven merging of the whole
//! fragment (`spm`). Decoding renders each token's bytes (`pieces`).

mod bpe;
mod matchers;
mod model_quirks;
mod partition;
mod pieces;
mod pretokenize;
mod regex_splits;
mod special_ids;
mod spm;
mod str_table;
mod unicode;

pub(crate) use unicode::byte_to_char;
mod vocab;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::error::{Error, Result};
use bpe::{Bpe, BpeScratch};
use partition::{Fragment, Partitioner};
use pieces::{Pieces, Style};
use pretokenize::PreTokenizer;
use special_ids::{Defaults, SpecialIds};
use spm::{Spm, SpmScratch};
use vocab::Vocab;

/// Raw tokenizer data as stored in GGUF (`tokenizer.ggml.*` keys); the model loader fills it.
#[derive(Clone, Debug, Default)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`, e.g. "gpt2", "llama".
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. "smollm".
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` ("a b").
    pub merges: Option<Vec<String>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    /// `tokenizer.ggml.fim_{pre,suf,mid,pad,rep,sep}_token_id` (the first three also under
    /// their older names `prefix`, `suffix`, `middle`).
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece: prepend a space to text that starts
    /// the input or follows a special token; any type: drop the first token's leading space
    /// when decoding).
    pub add_space_prefix: Option<bool>,
    /// `general.name`: llama.cpp sets a few token attributes by model name (Phi-3).
    pub name: Option<String>,
}

/// The tokenization algorithm, chosen by `tokenizer.ggml.model`, before the vocabulary is
/// built (so that an unsupported tokenizer fails fast).
#[derive(Clone, Copy)]
enum Kind {
    /// Byte-level BPE (`gpt2`).
    ByteLevelBpe(PreTokenizer),
    /// SentencePiece (`llama`, llama.cpp's LLAMA_VOCAB_TYPE_SPM).
    SentencePiece,
}

impl Kind {
    fn from_spec(spec: &VocabSpec) -> Result<Kind> {
        match spec.model.as_str() {
            "gpt2" => {
                let pre = PreTokenizer::from_name(spec.pre.as_deref())?;
                if spec.merges.is_none() {
                    return Err(Error::InvalidTokenizer("gpt2 tokenizer without tokenizer.ggml.merges".into()));
                }
                Ok(Kind::ByteLevelBpe(pre))
            }
            // llama.cpp ignores tokenizer.ggml.pre for SentencePiece vocabularies.
            "llama" => Ok(Kind::SentencePiece),
            other => Err(Error::UnsupportedTokenizer(format!("tokenizer model '{other}'"))),
        }
    }

    /// What llama.cpp assumes for this tokenizer type when the GGUF keys are absent.
    fn defaults(self) -> Defaults {
        match self {
            // llama.cpp's BPE defaults name token 11 for both BOS and EOS (if it exists).
            Kind::ByteLevelBpe(pre) => Defaults {
                bos: if pre.no_default_bos() { None } else { Some(11) },
                eos: Some(11),
                add_bos: pre.add_bos_default(),
                add_eos: false,
            },
            Kind::SentencePiece => Defaults { bos: Some(1), eos: Some(2), add_bos: true, add_eos: false },
        }
    }

    /// llama.cpp's `add_space_prefix` default.
    fn add_space_prefix_default(self) -> bool {
        matches!(self, Kind::SentencePiece)
    }

    /// llama.cpp's default unknown token id.
    fn unk_default(self) -> Option<u32> {
        match self {
            Kind::ByteLevelBpe(_) => None,
            Kind::SentencePiece => Some(0),
        }
    }

    fn clean_spaces(self) -> bool {
        match self {
            Kind::ByteLevelBpe(pre) => pre.clean_spaces(),
            Kind::SentencePiece => false,
        }
    }
}

enum Model {
    ByteLevelBpe { bpe: Bpe, pre: PreTokenizer },
    SentencePiece(Spm),
}

/// See [`Tokenizer::mark_literal`].
const LITERAL_MARK: char = '\u{FDD0}';

/// Undoes [`Tokenizer::mark_literal`]: a doubled mark is one U+FDD0 of the original text, a
/// single one is dropped.
fn remove_literal_marks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        // A mark on its own is dropped; a doubled one was a U+FDD0 of the text.
        if c != LITERAL_MARK || chars.next_if_eq(&LITERAL_MARK).is_some() {
            out.push(c);
        }
    }
    out
}

/// Buffers reused within one `encode` call.
#[derive(Default)]
struct Scratch {
    encoded: String,
    bpe: BpeScratch,
    spm: SpmScratch,
}

/// A tokenizer built from a GGUF vocabulary; immutable and shareable across threads.
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    special: SpecialIds,
    partitioner: Partitioner,
    pieces: Pieces,
    /// llama.cpp's `add_space_prefix`, as stated in the GGUF or defaulted by tokenizer type.
    add_space_prefix: bool,
    clean_spaces: bool,
}

impl Tokenizer {
    pub fn new(mut spec: VocabSpec) -> Result<Tokenizer> {
        let kind = Kind::from_spec(&spec)?;
        if let Some(scores) = &spec.scores {
            if scores.len() < spec.tokens.len() {
                return Err(Error::InvalidTokenizer(format!(
                    "tokenizer.ggml.scores has {} entries for {} tokens",
                    scores.len(),
                    spec.tokens.len()
                )));
            }
        }
        let mut vocab = Vocab::new(std::mem::take(&mut spec.tokens), spec.token_types.as_deref())?;
        let special = SpecialIds::resolve(&mut vocab, kind.defaults(), &spec);
        model_quirks::apply(&mut vocab, spec.name.as_deref(), spec.pre.as_deref());
        let partitioner = Partitioner::new(&vocab);
        let (model, style) = match kind {
            Kind::ByteLevelBpe(pre) => {
                let bpe = Bpe::new(spec.merges.as_deref().unwrap_or_default());
                (Model::ByteLevelBpe { bpe, pre }, Style::ByteLevel)
            }
            Kind::SentencePiece => {
                // Like the other special ids: a stated id out of range falls back to the default.
                let in_range = |id: Option<u32>| id.filter(|&id| vocab.contains(id));
                let unk = in_range(spec.unk).or(in_range(kind.unk_default()));
                (Model::SentencePiece(Spm::new(spec.scores, &vocab, unk)), Style::SentencePiece)
            }
        };
        let pieces = Pieces::new(&vocab, style);
        Ok(Tokenizer {
            vocab,
            model,
            special,
            partitioner,
            pieces,
            add_space_prefix: spec.add_space_prefix.unwrap_or(kind.add_space_prefix_default()),
            clean_spaces: kind.clean_spaces(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// llama_tokenize(text, add_special = add_bos, parse_special): add BOS (and EOS if the
    /// model says so) when add_bos.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        self.encode_fragments(text, add_bos, parse_special, false)
    }

    /// Marks every control-token text inside `text` (a message's content, about to be placed
    /// in a prompt by a chat template) so that [`Tokenizer::encode_marked`] reads it as plain
    /// text: a user who types `<|im_end|>` gets those characters, not the token. The mark is
    /// U+FDD0 (a noncharacter) after the occurrence's first character; a U+FDD0 already in the
    /// text is doubled.
    pub fn mark_literal(&self, text: &str) -> String {
        let occurrences = self.partitioner.control_occurrences(&self.vocab, text);
        let mut marks: Vec<usize> = occurrences
            .iter()
            .filter_map(|&(start, len)| {
                let first = text[start..].chars().next()?.len_utf8();
                // A one-character token cannot be broken up (none of the real vocabularies has one).
                (first < len).then_some(start + first)
            })
            .collect();
        marks.sort_unstable();
        marks.dedup();
        let mut out = String::with_capacity(text.len() + 3 * marks.len());
        let mut next_mark = marks.iter().peekable();
        for (at, c) in text.char_indices() {
            while next_mark.next_if(|&&m| m == at).is_some() {
                out.push(LITERAL_MARK);
            }
            out.push(c);
            if c == LITERAL_MARK {
                out.push(LITERAL_MARK);
            }
        }
        out
    }

    /// Tokenizes a rendered chat prompt: special tokens are parsed, except inside text that
    /// [`Tokenizer::mark_literal`] marked, and the marks are removed before the text around
    /// them is tokenized. Unmarked text gives what `encode(text, add_bos, true)` gives.
    pub fn encode_marked(&self, text: &str, add_bos: bool) -> Vec<u32> {
        self.encode_fragments(text, add_bos, true, true)
    }

    fn encode_fragments(&self, text: &str, add_bos: bool, parse_special: bool, marked: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            out.extend(self.special.bos);
        }
        let mut scratch = Scratch::default();
        // SentencePiece prefixes a space to text at the start or right after a special token.
        let mut after_special = true;
        for fragment in self.partitioner.partition(&self.vocab, text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(s) => {
                    let unmarked;
                    let s = if marked && s.contains(LITERAL_MARK) {
                        unmarked = remove_literal_marks(s);
                        unmarked.as_str()
                    } else {
                        s
                    };
                    if !s.is_empty() {
                        self.tokenize_fragment(s, after_special, &mut scratch, &mut out);
                        after_special = false;
                    }
                }
            }
        }
        if add_bos && self.special.add_eos {
            out.extend(self.special.eos);
        }
        out
    }

    fn tokenize_fragment(&self, text: &str, after_special: bool, scratch: &mut Scratch, out: &mut Vec<u32>) {
        match &self.model {
            Model::ByteLevelBpe { bpe, pre } => {
                for word in pre.split(text) {
                    scratch.encoded.clear();
                    unicode::byte_encode_into(word, &mut scratch.encoded);
                    bpe.tokenize_word(&scratch.encoded, &self.vocab, pre.ignore_merges(), &mut scratch.bpe, out);
                }
            }
            Model::SentencePiece(spm) => {
                let escaped = &mut scratch.encoded;
                escaped.clear();
                if self.add_space_prefix && after_special {
                    escaped.push('\u{2581}');
                }
                escaped.extend(text.chars().map(|c| if c == ' ' { '\u{2581}' } else { c }));
                spm.tokenize(escaped, &self.vocab, &mut scratch.spm, out);
            }
        }
    }

    /// Bytes of one token as llama_token_to_piece renders it (special = render control tokens'
    /// text; otherwise control tokens give nothing). Out-of-range ids give nothing.
    pub fn token_bytes(&self, id: u32, special: bool) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.pieces.get(&self.vocab, id, special))
    }

    /// Concatenated token bytes as llama_detokenize gives them (remove_special off): with
    /// add_space_prefix, the first token loses one leading space; then the space clean-up
    /// for the tokenizers that use it. Decoded as UTF-8 lossily.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.pieces.get(&self.vocab, id, special);
            let piece = match piece.strip_prefix(b" ") {
                Some(rest) if i == 0 && self.add_space_prefix => rest,
                _ => piece,
            };
            bytes.extend_from_slice(piece);
        }
        if self.clean_spaces {
            pieces::clean_spaces(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether the model wants BOS prepended by default (`tokenizer.ggml.add_bos_token`, else
    /// llama.cpp's default for the tokenizer type).
    pub fn add_bos_default(&self) -> bool {
        self.special.add_bos
    }

    pub fn bos(&self) -> Option<u32> {
        self.special.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.special.eos
    }

    /// A token's text as the vocabulary holds it (`<|im_end|>`, `<s>`), for chat templates'
    /// `bos_token` and `eos_token`.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.contains(id).then(|| self.vocab.text(id))
    }

    /// Whether `id` ends generation (llama.cpp's EOG set).
    pub fn is_eog(&self, id: u32) -> bool {
        self.special.is_eog(id)
    }
}
