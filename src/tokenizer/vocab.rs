//! The token table: token texts, the text -> id index, and per-token attributes derived from
//! `tokenizer.ggml.token_type` the way llama.cpp's `llama_vocab::impl::load` does.

use super::str_table::StrTable;
use crate::error::{Error, Result};

/// llama.cpp's `llama_token_attr` bits (only the ones this engine reads or sets).
pub(crate) mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

pub(crate) struct Vocab {
    /// Token texts by id, with the text -> id index.
    texts: StrTable,
    attrs: Vec<u32>,
}

impl Vocab {
    pub fn new(tokens: Vec<String>, token_types: Option<&[i32]>) -> Result<Vocab> {
        if tokens.is_empty() {
            return Err(Error::InvalidTokenizer("tokenizer.ggml.tokens is empty".into()));
        }
        if tokens.len() > i32::MAX as usize {
            return Err(Error::InvalidTokenizer(format!("{} tokens is too many", tokens.len())));
        }
        if let Some(types) = token_types {
            if types.len() < tokens.len() {
                return Err(Error::InvalidTokenizer(format!(
                    "tokenizer.ggml.token_type has {} entries for {} tokens",
                    types.len(),
                    tokens.len()
                )));
            }
        }

        let mut texts = StrTable::with_capacity(tokens.len());
        for (i, text) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens, which also keeps the special-token search from
            // ever looking for an empty string.
            let renamed;
            let text = if text.is_empty() {
                renamed = format!("[EMPTY_{i}]");
                &renamed
            } else {
                text
            };
            if texts.push_unique(text).is_err() {
                return Err(Error::InvalidTokenizer(format!(
                    "token text {text:?} appears more than once (again at id {i})"
                )));
            }
        }
        texts.shrink_to_fit();
        drop(tokens);

        let attrs = match token_types {
            // Without types every token is normal.
            None => vec![attr::NORMAL; texts.len()],
            Some(types) => types[..texts.len()]
                .iter()
                .map(|&t| match t {
                    1 => attr::NORMAL,
                    2 => attr::UNKNOWN,
                    3 => attr::CONTROL,
                    4 => attr::USER_DEFINED,
                    5 => attr::UNUSED,
                    6 => attr::BYTE,
                    _ => attr::UNDEFINED,
                })
                .collect(),
        };
        Ok(Vocab { texts, attrs })
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn text(&self, id: u32) -> &str {
        self.texts.get(id)
    }

    pub fn attr(&self, id: u32) -> u32 {
        self.attrs[id as usize]
    }

    pub fn add_attr(&mut self, id: u32, bits: u32) {
        self.attrs[id as usize] |= bits;
    }

    pub fn set_attr(&mut self, id: u32, bits: u32) {
        self.attrs[id as usize] = bits;
    }

    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.texts.find(text)
    }

    pub fn contains(&self, id: u32) -> bool {
        (id as usize) < self.texts.len()
    }

    /// `(id, text)` for every token, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.texts.iter().enumerate().map(|(i, t)| (i as u32, t))
    }
}
