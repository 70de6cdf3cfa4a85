//! BPE pre-tokenizers: splitting text into the words that BPE merges within, exactly as
//! llama.cpp's `unicode_regex_split` does for each `tokenizer.ggml.pre` value.
//!
//! llama.cpp runs a list of regexes one after another; each one refines the pieces left by
//! the previous one, and never matches across a piece boundary. Most of its regexes are
//! hand-written matchers over codepoints (`unicode_regex_split_custom_*`), the rest go through
//! std::regex on a "collapsed" text where every non-ASCII codepoint is replaced by a byte that
//! stands for its category; there, text between matches is kept as pieces of its own. Each
//! [`Splitter`] here reproduces one of those regexes with its llama.cpp semantics, and each
//! [`PreTokenizer`] is the list llama.cpp uses for one `pre` name.

use super::unicode::CptFlags;
use crate::error::{Error, Result};

/// A pre-tokenizer, named after `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// `smollm` (llama.cpp groups it with starcoder, refact, command-r, codeshell, exaone,
    /// minerva): digits one by one, then the GPT-2 pattern.
    Smollm,
}

/// One of llama.cpp's split regexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Splitter {
    /// `\p{N}` through llama.cpp's std::regex path: every number codepoint becomes a piece of
    /// its own and each run of other codepoints between them stays one piece.
    IsolateNumbers,
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` as
    /// llama.cpp's `unicode_regex_split_custom_gpt2` implements it (lowercase-only
    /// contractions, llama.cpp's whitespace set for `\s`).
    Gpt2,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value of a BPE vocabulary.
    pub fn from_name(pre: Option<&str>) -> Result<PreTokenizer> {
        match pre {
            Some("smollm") => Ok(PreTokenizer::Smollm),
            // llama.cpp falls back to its "default" regex set when the key is missing or empty.
            None | Some("") => {
                Err(Error::UnsupportedTokenizer("BPE pre-tokenizer 'default' (tokenizer.ggml.pre is missing)".into()))
            }
            Some(other) => Err(Error::UnsupportedTokenizer(format!("BPE pre-tokenizer '{other}'"))),
        }
    }

    fn splitters(self) -> &'static [Splitter] {
        match self {
            PreTokenizer::Smollm => &[Splitter::IsolateNumbers, Splitter::Gpt2],
        }
    }

    /// Whether llama.cpp's detokenizer applies its `clean_spaces` pass for this pre-tokenizer.
    pub fn clean_spaces(self) -> bool {
        match self {
            PreTokenizer::Smollm => false,
        }
    }

    /// Whether a word that is itself a token skips the merges (llama.cpp's `ignore_merges`).
    pub fn ignore_merges(self) -> bool {
        match self {
            PreTokenizer::Smollm => false,
        }
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
                match splitter {
                    Splitter::IsolateNumbers => seg.isolate_numbers(&mut next),
                    Splitter::Gpt2 => seg.gpt2(&mut next),
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
struct Segment<'a> {
    cpts: &'a [char],
    flags: &'a [CptFlags],
    start: usize,
    end: usize,
}

impl Segment<'_> {
    fn cpt(&self, pos: usize) -> Option<char> {
        (pos < self.end).then(|| self.cpts[pos])
    }

    fn flags(&self, pos: usize) -> CptFlags {
        if pos < self.end {
            self.flags[pos]
        } else {
            CptFlags::NONE
        }
    }

    fn isolate_numbers(&self, out: &mut Vec<usize>) {
        let mut gap_start = self.start;
        for pos in self.start..self.end {
            if self.flags[pos].is_number() {
                if pos > gap_start {
                    out.push(pos - gap_start);
                }
                out.push(1);
                gap_start = pos + 1;
            }
        }
        if self.end > gap_start {
            out.push(self.end - gap_start);
        }
    }

    fn gpt2(&self, out: &mut Vec<usize>) {
        let mut pos = self.start;
        while pos < self.end {
            let end = self.gpt2_match_end(pos);
            out.push(end - pos);
            pos = end;
        }
    }

    /// Where the GPT-2 pattern's match starting at `pos` ends (always past `pos`).
    fn gpt2_match_end(&self, pos: usize) -> usize {
        let c = self.cpts[pos];

        // 's|'t|'re|'ve|'m|'ll|'d (lowercase only, unlike the llama3 family)
        if c == '\'' && pos + 1 < self.end {
            let next = self.cpts[pos + 1];
            if matches!(next, 's' | 't' | 'm' | 'd') {
                return pos + 2;
            }
            if let Some(next2) = self.cpt(pos + 2) {
                if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    return pos + 3;
                }
            }
        }

        // An optional leading space belongs to the letter / number / other run after it.
        let body = if c == ' ' { pos + 1 } else { pos };
        let first = self.flags(body);
        let run_end = |class: fn(CptFlags) -> bool| {
            let mut p = body;
            while class(self.flags(p)) {
                p += 1;
            }
            p
        };
        if first.is_letter() {
            return run_end(CptFlags::is_letter);
        }
        if first.is_number() {
            return run_end(CptFlags::is_number);
        }
        if is_other(first) {
            return run_end(is_other);
        }

        let mut spaces = 0;
        while self.flags(pos + spaces).is_whitespace() {
            spaces += 1;
        }
        // \s+(?!\S): a whitespace run followed by more text leaves its last codepoint to
        // prefix the next word.
        if spaces > 1 && self.cpt(pos + spaces).is_some() {
            return pos + spaces - 1;
        }
        if spaces > 0 {
            return pos + spaces;
        }
        // Unreachable for real codepoints (every one has a category); llama.cpp emits one
        // codepoint here, and so do we.
        pos + 1
    }
}

/// `[^\s\p{L}\p{N}]` within the segment.
fn is_other(f: CptFlags) -> bool {
    f.is_some() && !f.is_whitespace() && !f.is_letter() && !f.is_number()
}
