//! BPE pre-tokenizers: splitting text into the words that BPE merges within, exactly as
//! llama.cpp's `unicode_regex_split` does for each `tokenizer.ggml.pre` value.
//!
//! llama.cpp runs a list of regexes one after another; each one refines the pieces left by
//! the previous one, and never matches across a piece boundary. Some of its regexes are
//! hand-written matchers over codepoints (`matchers`), the rest go through std::regex on a
//! "collapsed" text where every non-ASCII codepoint is replaced by a byte that stands for its
//! category (`regex_splits`); there, text between matches is kept as pieces of its own. Each
//! [`Splitter`] reproduces one of those regexes with its llama.cpp semantics, and each
//! [`Family`] is the list llama.cpp uses for a group of `pre` names. The `pre` name also sets
//! a few flags (detokenizer space clean-up, merge skipping, BOS defaults), kept alongside.

use super::unicode::CptFlags;
use super::{matchers, regex_splits};
use crate::error::{Error, Result};

/// A pre-tokenizer: the regex list for a `tokenizer.ggml.pre` value plus the flags that
/// llama.cpp's vocabulary loader sets for that same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PreTokenizer {
    family: Family,
    /// llama.cpp's `clean_spaces`: the detokenizer drops some spaces before punctuation.
    clean_spaces: bool,
    /// llama.cpp's `ignore_merges`: a word that is itself a token skips the merges.
    ignore_merges: bool,
    /// llama.cpp's `add_bos` default for this name (the GGUF key still overrides it).
    add_bos: bool,
    /// Whether this name has no default BOS id (llama.cpp clears it for GLM-4).
    no_default_bos: bool,
}

/// The regex lists of llama.cpp's `llm_tokenizer_bpe`, by the `LLAMA_VOCAB_PRE_TYPE_*` groups
/// that share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// GPT-2's pattern alone (gpt-2, mpt, olmo, jais, ...).
    Gpt2,
    /// Digits one by one, then the GPT-2 pattern (smollm, starcoder, refact, command-r, ...).
    DigitsThenGpt2,
    /// The llama3 pattern: case-insensitive contractions, numbers in groups of up to three.
    Llama3,
    /// The llama3 pattern with single digits (qwen2, stablelm2, megrez, ...).
    Qwen2,
    /// llama.cpp's fallback for a missing or `default` pre: punctuation runs, the GPT-2 pattern,
    /// number runs, then ASCII digit triples.
    Default,
}

/// One of llama.cpp's split regexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Splitter {
    /// `\p{N}` (std::regex path).
    Digit,
    /// `\p{N}+` (std::regex path).
    NumberRuns,
    /// `[\p{P}\$\+<=>\^~\|]+` (std::regex path).
    PunctuationRuns,
    /// `[0-9][0-9][0-9]` (std::wregex path, no categories).
    AsciiDigitTriples,
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (custom matcher).
    Gpt2,
    /// The llama3 / qwen2 pattern with `\p{N}{1,max_digits}` (custom matchers).
    Llama3 { max_digits: usize },
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value of a BPE vocabulary, with the names
    /// llama.cpp's `llama_vocab::impl::load` maps to each of the supported regex lists.
    pub fn from_name(pre: Option<&str>) -> Result<PreTokenizer> {
        // Defaults for every BPE vocabulary before the name is looked at.
        let base = PreTokenizer {
            family: Family::Default,
            clean_spaces: true,
            ignore_merges: false,
            add_bos: false,
            no_default_bos: false,
        };
        let with = |family: Family| PreTokenizer { family, ..base };
        let name = pre.unwrap_or("");
        let pre = match name {
            // llama.cpp falls back to its "default" regex set when the key is missing or empty.
            "" | "default" => with(Family::Default),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
            | "jina-v5-nano" => PreTokenizer { ignore_merges: true, add_bos: true, ..with(Family::Llama3) },
            "dbrx" | "smaug-bpe" => with(Family::Llama3),
            "glm4" | "chatglm-bpe" => PreTokenizer { no_default_bos: true, ..with(Family::Llama3) },
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
                PreTokenizer { clean_spaces: false, ..with(Family::Qwen2) }
            }
            "megrez" | "stablelm2" => with(Family::Qwen2),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0"
            | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "exaone4" | "mpt" | "olmo"
            | "jais" => with(Family::Gpt2),
            "trillion" | "granite-docling" => PreTokenizer { clean_spaces: false, ..with(Family::Gpt2) },
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => with(Family::DigitsThenGpt2),
            "smollm" | "command-r" => PreTokenizer { clean_spaces: false, ..with(Family::DigitsThenGpt2) },
            other => return Err(Error::UnsupportedTokenizer(format!("BPE pre-tokenizer '{other}'"))),
        };
        Ok(pre)
    }

    fn splitters(self) -> &'static [Splitter] {
        match self.family {
            Family::Gpt2 => &[Splitter::Gpt2],
            Family::DigitsThenGpt2 => &[Splitter::Digit, Splitter::Gpt2],
            Family::Llama3 => &[Splitter::Llama3 { max_digits: 3 }],
            Family::Qwen2 => &[Splitter::Llama3 { max_digits: 1 }],
            Family::Default => {
                &[Splitter::PunctuationRuns, Splitter::Gpt2, Splitter::NumberRuns, Splitter::AsciiDigitTriples]
            }
        }
    }

    /// Whether llama.cpp's detokenizer applies its `clean_spaces` pass for this pre-tokenizer.
    pub fn clean_spaces(self) -> bool {
        self.clean_spaces
    }

    /// Whether a word that is itself a token skips the merges (llama.cpp's `ignore_merges`).
    pub fn ignore_merges(self) -> bool {
        self.ignore_merges
    }

    /// llama.cpp's default for `add_bos` with this pre-tokenizer.
    pub fn add_bos_default(self) -> bool {
        self.add_bos
    }

    /// Whether the BPE default BOS id is cleared for this pre-tokenizer.
    pub fn no_default_bos(self) -> bool {
        self.no_default_bos
    }

    /// Splits `text` into words; concatenated, they give `text` back.
    pub fn split(self, text: &str) -> Vec<&str> {
        let cpts: Vec<char> = text.chars().collect();
        let flags: Vec<CptFlags> = cpts.iter().map(|&c| CptFlags::of(c)).collect();
        // Pieces are lengths in codepoints, like llama.cpp's offsets.
        let mut pieces = vec![cpts.len()];
        let mut next = Vec::new();
        for splitter in self.splitters() {
            next.clear();
            let mut start = 0;
            for &len in &pieces {
                let seg = Segment { cpts: &cpts, flags: &flags, start, end: start + len };
                match *splitter {
                    Splitter::Digit => regex_splits::isolate(&seg, regex_splits::is_number, &mut next),
                    Splitter::NumberRuns => regex_splits::runs(&seg, regex_splits::is_number, &mut next),
                    Splitter::PunctuationRuns => {
                        regex_splits::runs(&seg, regex_splits::is_default_punctuation, &mut next)
                    }
                    Splitter::AsciiDigitTriples => regex_splits::ascii_digit_triples(&seg, &mut next),
                    Splitter::Gpt2 => matchers::gpt2(&seg, &mut next),
                    Splitter::Llama3 { max_digits } => matchers::llama3(&seg, max_digits, &mut next),
                }
                start += len;
            }
            std::mem::swap(&mut pieces, &mut next);
        }

        let mut words = Vec::with_capacity(pieces.len());
        let mut chars = text.char_indices().map(|(i, _)| i).chain(std::iter::once(text.len()));
        let mut byte_start = chars.next().unwrap_or(0);
        for len in pieces.into_iter().filter(|&len| len > 0) {
            let byte_end = chars.nth(len - 1).unwrap_or(text.len());
            words.push(&text[byte_start..byte_end]);
            byte_start = byte_end;
        }
        words
    }
}

/// One piece being split further: codepoints `start..end` of the whole text. Matchers look
/// only inside it; positions past `end` read as the end-of-input sentinel.
pub(crate) struct Segment<'a> {
    pub cpts: &'a [char],
    pub flags: &'a [CptFlags],
    pub start: usize,
    pub end: usize,
}

impl Segment<'_> {
    /// The codepoint at `pos`, or `None` outside the segment (llama.cpp's OUT_OF_RANGE).
    pub fn cpt(&self, pos: usize) -> Option<char> {
        (self.start <= pos && pos < self.end).then(|| self.cpts[pos])
    }

    /// The flags at `pos`, or no flags at all outside the segment.
    pub fn flags(&self, pos: usize) -> CptFlags {
        if self.start <= pos && pos < self.end {
            self.flags[pos]
        } else {
            CptFlags::NONE
        }
    }
}
