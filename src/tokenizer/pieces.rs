//! Turning tokens back into bytes, as llama.cpp's `token_to_piece` and `detokenize` do: each
//! token's bytes are rendered once (llama.cpp keeps the same cache), control and unknown
//! tokens are shown only on request, and the detokenizer's optional space clean-up.

use super::unicode::char_to_byte;
use super::vocab::{attr, Vocab};

/// How normal tokens' texts encode their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// GPT-2 byte-level BPE: each char stands for one byte.
    ByteLevel,
    /// SentencePiece: the text itself, with U+2581 standing for a space.
    SentencePiece,
}

/// Every token's bytes as rendered with special tokens shown, in one buffer.
pub(crate) struct Pieces {
    bytes: Vec<u8>,
    /// `ends[id]` is where token `id`'s bytes end (they start where the previous one's end).
    ends: Vec<usize>,
}

impl Pieces {
    /// Renders every token of `vocab`.
    pub fn new(vocab: &Vocab, style: Style) -> Pieces {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(vocab.len());
        for (id, text) in vocab.iter() {
            let token_attr = vocab.attr(id);
            if token_attr & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
                bytes.extend_from_slice(text.as_bytes());
            } else if token_attr & attr::NORMAL != 0 {
                match style {
                    Style::ByteLevel => decode_byte_level(text, &mut bytes),
                    Style::SentencePiece => bytes.extend_from_slice(text.replace('\u{2581}', " ").as_bytes()),
                }
            } else if token_attr & attr::BYTE != 0 {
                bytes.push(byte_token_value(text));
            }
            // Unused and undefined tokens render as nothing.
            ends.push(bytes.len());
        }
        Pieces { bytes, ends }
    }

    /// Token `id`'s bytes; empty for ids out of range and, unless `special`, for control and
    /// unknown tokens.
    pub fn get<'a>(&'a self, vocab: &Vocab, id: u32, special: bool) -> &'a [u8] {
        let index = id as usize;
        if index >= self.ends.len() {
            return &[];
        }
        if !special && vocab.attr(id) & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.bytes[start..self.ends[index]]
    }
}

/// Maps each char of a byte-level token back to its byte. A char outside the mapping is not
/// dropped: llama.cpp writes a visible marker naming it and the whole token instead.
fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// The byte of a byte token such as `<0x0A>`: llama.cpp reads the two chars after `<0x` with
/// strtol, so anything unparsable reads as 0.
fn byte_token_value(text: &str) -> u8 {
    let digits = text.as_bytes().get(3..).unwrap_or(&[]);
    let mut value = 0u8;
    for &d in digits.iter().take(2) {
        match (d as char).to_digit(16) {
            Some(v) => value = value.wrapping_mul(16).wrapping_add(v as u8),
            None => break,
        }
    }
    value
}

/// llama.cpp's `clean_spaces` detokenizer pass: drops the space before `?!.,`, the spaces
/// around a lone `'`, and the space before the contractions `'s 'm 're 've`. Each pass
/// rewrites the buffer in place and looks back at the input byte before the current one.
pub(crate) fn clean_spaces(text: &mut Vec<u8>) {
    if text.is_empty() {
        return;
    }

    // " ?", " !", " .", " ,"
    let mut total = 1;
    for i in 1..text.len() {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    // " ' " -> "'"
    let n = text.len();
    let mut total = 1;
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            // The skipped space is blanked so the next byte does not see a space before it.
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    // " 's", " 'm", " 're", " 've" (not " 't", " 'd", " 'll")
    let n = text.len();
    let mut total = 1;
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            let two = i + 2 < n && matches!((x1, text[i + 2]), (b'r', b'e') | (b'v', b'e'));
            if matches!(x1, b's' | b'm') || two {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}
