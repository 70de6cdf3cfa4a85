//! Tokenizer API: builds a tokenizer from the GGUF `tokenizer.ggml.*` data and encodes /
//! decodes exactly as llama.cpp does (its `llama-vocab.cpp` and `unicode.cpp`).
//!
//! Encoding is: split the text on special tokens (`partition`), then per text fragment run
//! the model-specific tokenizer. For byte-level BPE (`gpt2`), that is a pre-tokenizer
//! (`pretokenize`) splitting the fragment into words, GPT-2 byte encoding of each word, and
//! BPE merges within it (`bpe`). The model type (`Model`) and the pre-tokenizer are separate
//! choices so that more of each can be added.

mod bpe;
mod partition;
mod pieces;
mod pretokenize;
mod special_ids;
mod unicode;
mod vocab;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::error::{Error, Result};
use bpe::{Bpe, BpeScratch};
use partition::{Fragment, Partitioner};
use pieces::Pieces;
use pretokenize::PreTokenizer;
use special_ids::{Defaults, SpecialIds, Stated};
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
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
}

/// The tokenization algorithm, chosen by `tokenizer.ggml.model`.
enum Model {
    /// Byte-level BPE (`gpt2`).
    ByteLevelBpe { bpe: Bpe, pre: PreTokenizer },
}

impl Model {
    fn from_spec(spec: &VocabSpec) -> Result<Model> {
        match spec.model.as_str() {
            "gpt2" => {
                let pre = PreTokenizer::from_name(spec.pre.as_deref())?;
                let merges = spec
                    .merges
                    .as_deref()
                    .ok_or_else(|| Error::InvalidTokenizer("gpt2 tokenizer without tokenizer.ggml.merges".into()))?;
                Ok(Model::ByteLevelBpe { bpe: Bpe::new(merges), pre })
            }
            "llama" => {
                Err(Error::UnsupportedTokenizer("tokenizer model 'llama' (SentencePiece) is not supported yet".into()))
            }
            other => Err(Error::UnsupportedTokenizer(format!("tokenizer model '{other}'"))),
        }
    }

    /// What llama.cpp assumes for this tokenizer type when the GGUF keys are absent.
    fn defaults(&self) -> Defaults {
        match self {
            // llama.cpp's BPE defaults name token 11 for both BOS and EOS (if it exists).
            Model::ByteLevelBpe { .. } => Defaults { bos: Some(11), eos: Some(11), add_bos: false, add_eos: false },
        }
    }

    fn clean_spaces(&self) -> bool {
        match self {
            Model::ByteLevelBpe { pre, .. } => pre.clean_spaces(),
        }
    }

    fn tokenize(&self, vocab: &Vocab, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) {
        match self {
            Model::ByteLevelBpe { bpe, pre } => {
                for word in pre.split(text) {
                    scratch.encoded.clear();
                    unicode::byte_encode_into(word, &mut scratch.encoded);
                    bpe.tokenize_word(&scratch.encoded, vocab, pre.ignore_merges(), &mut scratch.bpe, out);
                }
            }
        }
    }
}

/// Buffers reused within one `encode` call.
#[derive(Default)]
struct Scratch {
    encoded: String,
    bpe: BpeScratch,
}

/// A tokenizer built from a GGUF vocabulary; immutable and shareable across threads.
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    special: SpecialIds,
    partitioner: Partitioner,
    pieces: Pieces,
}

impl Tokenizer {
    pub fn new(spec: VocabSpec) -> Result<Tokenizer> {
        let model = Model::from_spec(&spec)?;
        if let Some(scores) = &spec.scores {
            if scores.len() < spec.tokens.len() {
                return Err(Error::InvalidTokenizer(format!(
                    "tokenizer.ggml.scores has {} entries for {} tokens",
                    scores.len(),
                    spec.tokens.len()
                )));
            }
        }
        let stated = Stated {
            bos: spec.bos,
            eos: spec.eos,
            eot: spec.eot,
            eom: spec.eom,
            add_bos: spec.add_bos,
            add_eos: spec.add_eos,
        };
        let mut vocab = Vocab::new(spec.tokens, spec.token_types.as_deref())?;
        let special = SpecialIds::resolve(&mut vocab, model.defaults(), stated);
        let partitioner = Partitioner::new(&vocab);
        let pieces = match &model {
            Model::ByteLevelBpe { .. } => Pieces::byte_level(&vocab),
        };
        Ok(Tokenizer { vocab, model, special, partitioner, pieces })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// llama_tokenize(text, add_special = add_bos, parse_special): add BOS (and EOS if the
    /// model says so) when add_bos.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            out.extend(self.special.bos);
        }
        let mut scratch = Scratch::default();
        for fragment in self.partitioner.partition(&self.vocab, text, parse_special) {
            match fragment {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(s) => self.model.tokenize(&self.vocab, s, &mut scratch, &mut out),
            }
        }
        if add_bos && self.special.add_eos {
            out.extend(self.special.eos);
        }
        out
    }

    /// Bytes of one token as llama_token_to_piece renders it (special = render control tokens'
    /// text; otherwise control tokens give nothing). Out-of-range ids give nothing.
    pub fn token_bytes(&self, id: u32, special: bool) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.pieces.get(&self.vocab, id, special))
    }

    /// Concatenated token bytes (with llama_detokenize's space clean-up for the tokenizers that
    /// use it), decoded as UTF-8 lossily.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.pieces.get(&self.vocab, id, special));
        }
        if self.model.clean_spaces() {
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

    /// Whether `id` ends generation (llama.cpp's EOG set).
    pub fn is_eog(&self, id: u32) -> bool {
        self.special.is_eog(id)
    }
}
