//! Splitting text on special-token texts before tokenization (llama.cpp's
//! `tokenizer_st_partition`): control, user-defined and unknown tokens, longest text first;
//! each occurrence becomes that token and the text around it is tokenized normally.
//! User-defined tokens are split out even when special tokens are not parsed; control and
//! unknown ones only when they are.

use super::vocab::{attr, Vocab};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

pub(crate) struct Partitioner {
    /// Candidate token ids, longest text first (ties by id).
    order: Vec<u32>,
    /// Byte trie over the candidates' texts, to find in one pass which ones occur at all.
    trie: Vec<TrieNode>,
}

#[derive(Default)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    /// Index into `order` of the token whose text ends here.
    token: Option<u32>,
}

impl Partitioner {
    pub fn new(vocab: &Vocab) -> Partitioner {
        let mut order: Vec<u32> = vocab
            .iter()
            .filter(|&(id, _)| vocab.attr(id) & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
            .map(|(id, _)| id)
            .collect();
        // llama.cpp uses an unstable sort by length; equal lengths only matter for texts that
        // overlap each other, and there the lower id wins here.
        order.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).len()));

        let mut trie = vec![TrieNode::default()];
        for (index, &id) in order.iter().enumerate() {
            let mut node = 0usize;
            for &b in vocab.text(id).as_bytes() {
                node = match trie[node].children.iter().find(|&&(c, _)| c == b) {
                    Some(&(_, child)) => child as usize,
                    None => {
                        trie.push(TrieNode::default());
                        let child = trie.len() - 1;
                        trie[node].children.push((b, child as u32));
                        child
                    }
                };
            }
            trie[node].token = Some(index as u32);
        }
        Partitioner { order, trie }
    }

    pub fn partition<'a>(&self, vocab: &Vocab, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(text));
        if self.order.is_empty() {
            return fragments;
        }

        // A token absent from the whole text is absent from every fragment of it, so only the
        // ones found here need the (exact, order-dependent) splitting below.
        let occurs = self.occurring(text.as_bytes());
        for (index, &id) in self.order.iter().enumerate() {
            let token_attr = vocab.attr(id);
            if !occurs[index] || (!parse_special && token_attr & (attr::CONTROL | attr::UNKNOWN) != 0) {
                continue;
            }
            let needle = vocab.text(id);
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                match fragment {
                    Fragment::Token(_) => next.push(fragment),
                    Fragment::Text(s) => split_on(s, needle, id, token_attr, &mut next),
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Byte offsets in `text` where the text of a token that is only split out when special
    /// tokens are parsed (control or unknown) starts, and the token's length in bytes.
    pub fn control_occurrences(&self, vocab: &Vocab, text: &str) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        self.each_match(text.as_bytes(), |start, index| {
            let id = self.order[index];
            if vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0 {
                found.push((start, vocab.text(id).len()));
            }
        });
        found
    }

    fn occurring(&self, text: &[u8]) -> Vec<bool> {
        let mut occurs = vec![false; self.order.len()];
        self.each_match(text, |_, index| occurs[index] = true);
        occurs
    }

    /// Calls `found(start, index into order)` for every candidate text occurring in `text`.
    fn each_match(&self, text: &[u8], mut found: impl FnMut(usize, usize)) {
        for start in 0..text.len() {
            let mut node = 0usize;
            for &b in &text[start..] {
                match self.trie[node].children.iter().find(|&&(c, _)| c == b) {
                    Some(&(_, child)) => node = child as usize,
                    None => break,
                }
                if let Some(index) = self.trie[node].token {
                    found(start, index as usize);
                }
            }
        }
    }
}

/// Splits one text fragment on every occurrence of `needle`, left to right, honouring the
/// token's lstrip / rstrip attributes (which drop ASCII whitespace next to it).
fn split_on<'a>(s: &'a str, needle: &str, id: u32, token_attr: u32, out: &mut Vec<Fragment<'a>>) {
    let mut rest = s;
    while let Some(at) = rest.find(needle) {
        let mut left = &rest[..at];
        if token_attr & attr::LSTRIP != 0 {
            left = left.trim_end_matches(is_c_space);
        }
        if !left.is_empty() {
            out.push(Fragment::Text(left));
        }
        out.push(Fragment::Token(id));
        rest = &rest[at + needle.len()..];
        if token_attr & attr::RSTRIP != 0 {
            rest = rest.trim_start_matches(is_c_space);
        }
    }
    if !rest.is_empty() {
        out.push(Fragment::Text(rest));
    }
}

/// C's `isspace` in the "C" locale, which is what llama.cpp strips with.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}
