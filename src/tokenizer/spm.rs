//! SentencePiece-style tokenization of one text fragment, as llama.cpp's
//! `llm_tokenizer_spm_session` does it: start from the fragment's chars (spaces already
//! escaped to U+2581), repeatedly merge the adjacent pair whose concatenation is a token with
//! the highest score (leftmost on ties), then emit each final symbol's token, or its bytes as
//! `<0xXX>` byte tokens when the symbol is not a token.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// The score table and the byte-fallback tokens of a SentencePiece vocabulary.
pub(crate) struct Spm {
    /// `tokenizer.ggml.scores` (all 0 when the GGUF has none, as in llama.cpp).
    scores: Vec<f32>,
    /// The token for each byte: `<0xXX>`, else the one-byte text (llama.cpp's `byte_to_token`).
    byte_tokens: Vec<Option<u32>>,
    /// Emitted for a byte that has neither (llama.cpp throws there instead).
    unk: Option<u32>,
}

#[derive(Clone, Copy)]
struct Symbol {
    /// Byte range in the escaped fragment; `len == 0` once merged into its left neighbour.
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of `left` with the symbol after it.
#[derive(Clone, Copy)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Combined byte length when queued: the bigram is stale if the symbols have changed
    /// since (symbols only grow, so a size mismatch is exactly "changed").
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair (llama.cpp's comparator).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// Buffers reused across the fragments of one `encode` call.
#[derive(Default)]
pub(crate) struct SpmScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
}

impl Spm {
    pub fn new(scores: Option<Vec<f32>>, vocab: &Vocab, unk: Option<u32>) -> Spm {
        // -0.0 and 0.0 tie in llama.cpp's float comparison but not in `total_cmp`; adding 0.0
        // turns -0.0 into 0.0.
        let scores = match scores {
            Some(scores) => scores.into_iter().map(|s| s + 0.0).collect(),
            None => vec![0.0; vocab.len()],
        };
        let byte_tokens = (0..=255u8)
            .map(|b| {
                vocab.id_of(&format!("<0x{b:02X}>")).or_else(|| {
                    let byte = [b];
                    std::str::from_utf8(&byte).ok().and_then(|s| vocab.id_of(s))
                })
            })
            .collect();
        Spm { scores, byte_tokens, unk }
    }

    /// Tokenizes one escaped fragment, appending token ids to `out`.
    pub fn tokenize(&self, text: &str, vocab: &Vocab, scratch: &mut SpmScratch, out: &mut Vec<u32>) {
        let symbols = &mut scratch.symbols;
        let queue = &mut scratch.queue;
        symbols.clear();
        queue.clear();

        let mut chars = text.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            let index = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: index.checked_sub(1),
                next: chars.peek().map(|_| index + 1),
            });
        }
        for right in 1..symbols.len() {
            self.push_bigram(text, vocab, symbols, queue, right - 1, right);
        }

        while let Some(bigram) = queue.pop() {
            let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
                continue;
            }
            symbols[bigram.left].len += r.len;
            symbols[bigram.left].next = r.next;
            symbols[bigram.right].len = 0;
            if let Some(next) = r.next {
                symbols[next].prev = Some(bigram.left);
            }
            if let Some(prev) = l.prev {
                self.push_bigram(text, vocab, symbols, queue, prev, bigram.left);
            }
            if let Some(next) = r.next {
                self.push_bigram(text, vocab, symbols, queue, bigram.left, next);
            }
        }

        let mut index = (!symbols.is_empty()).then_some(0);
        while let Some(i) = index {
            let symbol = symbols[i];
            let piece = &text[symbol.start..symbol.start + symbol.len];
            match vocab.id_of(piece) {
                Some(id) => out.push(id),
                // Only single chars can be missing (every merge result is a token).
                None => out.extend(piece.bytes().filter_map(|b| self.byte_tokens[b as usize].or(self.unk))),
            }
            index = symbol.next;
        }
    }

    fn push_bigram(
        &self,
        text: &str,
        vocab: &Vocab,
        symbols: &[Symbol],
        queue: &mut BinaryHeap<Bigram>,
        left: usize,
        right: usize,
    ) {
        let start = symbols[left].start;
        let size = symbols[left].len + symbols[right].len;
        // Any token counts, special ones included, as in llama.cpp's text_to_token.
        if let Some(id) = vocab.id_of(&text[start..start + size]) {
            let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
            queue.push(Bigram { score, left, right, size });
        }
    }
}
