//! A sequence: the tokens a session holds and the KV cache of those it has evaluated, kept from
//! one generation to the next; what happens when it is full (end, or shift the context); and the
//! model-wide count of sequences and their cache bytes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::kv_cache::KvCache;

use super::Model;

/// What a full sequence does when it needs another position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextShift {
    /// The generation ends with `EndReason::ContextFull`.
    #[default]
    Off,
    /// Drop the oldest tokens after the first `keep` (half of those after them, as llama.cpp
    /// does, or more if more are needed), moving the cached keys to their new positions.
    Keep(usize),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SequenceOptions {
    /// Positions the sequence can hold; None: the model's context size.
    pub context_size: Option<usize>,
    pub context_shift: ContextShift,
}

pub struct Sequence {
    model: Arc<Model>,
    /// Every token held, prompt and generated; the cache holds the first `kv.len()` of them.
    tokens: Vec<u32>,
    kv: KvCache,
    shift: ContextShift,
    /// Cache bytes last added to the model's counter.
    counted_bytes: u64,
    /// Whether a generation is using the sequence (one at a time).
    pub(crate) busy: bool,
}

impl Sequence {
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn new(model: Arc<Model>, opts: SequenceOptions) -> Result<Self> {
        let context = match opts.context_size {
            None => model.info.context_size,
            Some(0) => return Err(Error::invalid_option("contextSize", "must be at least 1")),
            Some(n) if n > model.info.context_length => {
                return Err(Error::invalid_option(
                    "contextSize",
                    format!("{n} is more than the {} positions the model was trained for", model.info.context_length),
                ))
            }
            Some(n) => n,
        };
        if let ContextShift::Keep(keep) = opts.context_shift {
            if keep >= context {
                return Err(Error::invalid_option(
                    "contextShift.keep",
                    format!("{keep} leaves no room to shift in a context of {context}"),
                ));
            }
        }
        let kv = model.new_cache(context)?;
        model.counters.sequences.fetch_add(1, Ordering::Relaxed);
        Ok(Sequence { model, tokens: Vec::new(), kv, shift: opts.context_shift, counted_bytes: 0, busy: false })
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn context(&self) -> usize {
        self.kv.context()
    }

    pub fn context_shift(&self) -> ContextShift {
        self.shift
    }

    /// Bytes the evaluated positions take in the cache.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.used_bytes()
    }

    /// The tokens not evaluated yet.
    pub fn pending(&self) -> &[u32] {
        &self.tokens[self.kv.len()..]
    }

    /// Appends tokens to evaluate with the next step.
    pub fn push(&mut self, tokens: &[u32]) {
        self.tokens.extend_from_slice(tokens);
    }

    /// Takes back the last token pushed, which was not evaluated (a generation's look-ahead
    /// token its caller never took).
    pub(crate) fn take_back_last(&mut self) {
        debug_assert!(self.kv.len() < self.tokens.len(), "the last token is not evaluated");
        self.tokens.pop();
    }

    /// Keeps the first `n` tokens (and their cache positions).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.kv.truncate(n);
        self.recount();
    }

    /// Forgets the cache from position `n` on, keeping the tokens: they are evaluated again.
    pub(crate) fn truncate_cache(&mut self, n: usize) {
        self.kv.truncate(n);
        self.recount();
    }

    /// Makes room so that every token held fits the context: with a shift, drops old tokens and
    /// re-rotates the cache; returns false when they cannot fit.
    pub fn fit(&mut self) -> bool {
        let context = self.kv.context();
        let excess = self.tokens.len().saturating_sub(context);
        if excess == 0 {
            return true;
        }
        let ContextShift::Keep(keep) = self.shift else { return false };
        let evaluated = self.kv.len();
        if evaluated < keep + excess {
            return false; // what is not evaluated yet would not fit even after a shift
        }
        let discard = ((evaluated - keep) / 2).max(excess);
        self.kv.discard(&self.model.config, keep, discard);
        self.tokens.drain(keep..keep + discard);
        self.recount();
        true
    }

    /// The cache and the tokens it has not seen, for a forward pass.
    pub(crate) fn cache_and_pending(&mut self) -> (&mut KvCache, &[u32]) {
        let held = self.kv.len();
        (&mut self.kv, &self.tokens[held..])
    }

    /// Brings the model's byte counter up to date after the cache changed length.
    pub(crate) fn recount(&mut self) {
        let now = self.kv.used_bytes();
        let counter = &self.model.counters.kv_bytes;
        counter.fetch_add(now, Ordering::Relaxed);
        counter.fetch_sub(self.counted_bytes, Ordering::Relaxed);
        self.counted_bytes = now;
    }
}

impl Drop for Sequence {
    fn drop(&mut self) {
        self.model.counters.kv_bytes.fetch_sub(self.counted_bytes, Ordering::Relaxed);
        self.model.counters.sequences.fetch_sub(1, Ordering::Relaxed);
    }
}
