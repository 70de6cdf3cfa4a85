//! Byte-pair merging of one pre-tokenized word, as llama.cpp's `llm_tokenizer_bpe_session`
//! does it: start from the word's chars, repeatedly merge the adjacent pair with the lowest
//! merge rank (leftmost on ties), then map each final symbol to its token, falling back to
//! single-byte tokens for symbols that are not in the vocabulary.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::str_table::StrTable;
use super::vocab::Vocab;

/// The merge table (`tokenizer.ggml.merges`). Strings taking part in merges are interned so
/// that the merge loop compares and hashes integers rather than strings.
pub(crate) struct Bpe {
    pieces: StrTable,
    /// (left piece, right piece) -> (rank, merged piece).
    merges: HashMap<(u32, u32), (u32, u32)>,
}

/// Marks a symbol whose text never takes part in any merge.
const NO_PIECE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Symbol {
    /// Byte range in the encoded word.
    start: usize,
    len: usize,
    piece: u32,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge, ordered so that `BinaryHeap<Reverse<_>>` pops the lowest rank first and
/// the leftmost pair among equal ranks, as llama.cpp's queue comparator does.
type Candidate = Reverse<(u32, usize, usize, u32, u32)>;

/// Buffers reused across the words of one `encode` call.
#[derive(Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Candidate>,
}

impl Bpe {
    pub fn new(merges: &[String]) -> Bpe {
        let mut bpe =
            Bpe { pieces: StrTable::with_capacity(merges.len()), merges: HashMap::with_capacity(merges.len()) };
        for (rank, merge) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte, so a merge's left side
            // may itself start with a space. Lines without a separator become an empty pair,
            // which can never match a symbol; they still use up their rank.
            let Some(split) = merge.as_bytes().iter().skip(1).position(|&b| b == b' ') else {
                continue;
            };
            let (left, right) = (&merge[..split + 1], &merge[split + 2..]);
            let left_id = bpe.pieces.intern(left);
            let right_id = bpe.pieces.intern(right);
            let merged_id = bpe.pieces.intern(&[left, right].concat());
            // The first occurrence of a pair keeps its rank (llama.cpp uses emplace).
            bpe.merges.entry((left_id, right_id)).or_insert((rank as u32, merged_id));
        }
        bpe.pieces.shrink_to_fit();
        bpe
    }

    /// Tokenizes one byte-level-encoded word, appending token ids to `out`.
    pub fn tokenize_word(
        &self,
        word: &str,
        vocab: &Vocab,
        ignore_merges: bool,
        scratch: &mut BpeScratch,
        out: &mut Vec<u32>,
    ) {
        if ignore_merges {
            if let Some(id) = vocab.id_of(word) {
                out.push(id);
                return;
            }
        }

        let symbols = &mut scratch.symbols;
        let queue = &mut scratch.queue;
        symbols.clear();
        queue.clear();

        let mut chars = word.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            let index = symbols.len();
            let len = c.len_utf8();
            symbols.push(Symbol {
                start,
                len,
                piece: self.pieces.find(&word[start..start + len]).unwrap_or(NO_PIECE),
                prev: index.checked_sub(1),
                next: chars.peek().map(|_| index + 1),
            });
        }
        for right in 1..symbols.len() {
            self.push_candidate(symbols, queue, right - 1, right);
        }

        while let Some(Reverse((_, left, right, left_piece, right_piece))) = queue.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            // Stale if either side has since been merged away or grown; a symbol's text is
            // fixed by its piece, so comparing pieces is llama.cpp's text comparison.
            if l.len == 0 || r.len == 0 || l.piece != left_piece || r.piece != right_piece {
                continue;
            }
            let Some(&(_, merged)) = self.merges.get(&(left_piece, right_piece)) else {
                continue;
            };
            symbols[left].len += r.len;
            symbols[left].piece = merged;
            symbols[left].next = r.next;
            symbols[right].len = 0;
            if let Some(next) = r.next {
                symbols[next].prev = Some(left);
            }
            if let Some(prev) = l.prev {
                self.push_candidate(symbols, queue, prev, left);
            }
            if let Some(next) = r.next {
                self.push_candidate(symbols, queue, left, next);
            }
        }

        for symbol in symbols.iter().filter(|s| s.len > 0) {
            let text = &word[symbol.start..symbol.start + symbol.len];
            match vocab.id_of(text) {
                Some(id) => out.push(id),
                // llama.cpp looks each byte of the symbol up as a one-byte token text; only
                // ASCII bytes can be (tokens are strings), the rest are dropped like there.
                None => out.extend(text.bytes().filter_map(|b| {
                    let byte = [b];
                    std::str::from_utf8(&byte).ok().and_then(|s| vocab.id_of(s))
                })),
            }
        }
    }

    fn push_candidate(&self, symbols: &[Symbol], queue: &mut BinaryHeap<Candidate>, left: usize, right: usize) {
        let (left_piece, right_piece) = (symbols[left].piece, symbols[right].piece);
        if left_piece == NO_PIECE || right_piece == NO_PIECE {
            return;
        }
        if let Some(&(rank, _)) = self.merges.get(&(left_piece, right_piece)) {
            queue.push(Reverse((rank, left, right, left_piece, right_piece)));
        }
    }
}
