//! The engine's public face in plain Rust: load a model, tokenize, compute logits, keep
//! sequences and generate from them, batched by the scheduler. The napi binding is a thin
//! translation of this module.
//!
//! - `chat`: chat templates rendered for this model's tokens;
//! - `load`: options, validation, choosing resident or paged weights;
//! - `sequence`: what a session holds (tokens, KV cache) and its context shift;
//! - `generation`: sampling a sequence step by step;
//! - `scheduler`: the thread that batches every sequence's steps into shared forward passes;
//! - `perplexity`: scoring a text.

mod chat;
mod generation;
mod load;
mod perplexity;
mod scheduler;
mod sequence;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::forward::{ForwardBuffers, SeqInput, Transformer, CHUNK};
use crate::model::kv_cache::KvCache;
use crate::model::weights::{WeightSource, WeightStats};
use crate::pool::ComputePool;
use crate::tokenizer::Tokenizer;

pub use crate::model::kv_cache::KvType;
pub use chat::ChatOptions;
pub use generation::{EndReason, GenerateParams, Generation, Step};
pub use load::{
    parse_byte_size, LoadOptions, ModelInfo, Paging, DEFAULT_CONTEXT, DEFAULT_MAX_SEQUENCES, DEFAULT_PREFETCH,
};
pub use perplexity::{Perplexity, PerplexityOptions};
pub use scheduler::{Reply, Scheduler, StepJob};
pub use sequence::{ContextShift, Sequence, SequenceOptions};

pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
    weights: Box<dyn WeightSource>,
    pool: ComputePool,
    /// The forward pass's buffers while no pass uses them (`take_buffers`): those of the last
    /// evaluation outside the scheduler, or of the scheduler gone idle, for the next one. Each
    /// evaluation runs on some libuv thread, and buffers freed there stay in that thread's
    /// malloc arena; one set shared keeps peak RSS from growing by a set per thread, or by the
    /// scheduler's own beside the evaluations' (Qwen2.5-1.5B: 17 MB, after `logits`).
    spare_buffers: Mutex<Option<ForwardBuffers>>,
    pub(crate) counters: Counters,
    /// Started by the first generation step.
    scheduler: OnceLock<Scheduler>,
    /// Set by `dispose`: generations stop at their next step with `Error::Disposed`.
    disposed: AtomicBool,
}

/// Models alive in this process (loaded and not yet dropped), for tests of the lifecycle.
static LIVE_MODELS: AtomicUsize = AtomicUsize::new(0);

pub fn live_models() -> usize {
    LIVE_MODELS.load(Ordering::Relaxed)
}

impl Drop for Model {
    fn drop(&mut self) {
        LIVE_MODELS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Locks a mutex, taking the data of a poisoned one (a panic elsewhere is reported there).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Live sequences, their cache bytes, and generations in progress.
#[derive(Default)]
pub struct Counters {
    pub sequences: AtomicUsize,
    pub kv_bytes: std::sync::atomic::AtomicU64,
    pub generations: AtomicUsize,
    /// Forward passes the scheduler ran, and the tokens they evaluated.
    pub passes: std::sync::atomic::AtomicU64,
    pub pass_tokens: std::sync::atomic::AtomicU64,
}

/// What `model.stats()` reports besides weight residency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceStats {
    pub sequences: usize,
    pub kv_bytes: u64,
    /// Forward passes of the scheduler so far, and the tokens they evaluated (their ratio is
    /// how many tokens a pass shared each weight read with).
    pub passes: u64,
    pub pass_tokens: u64,
}

impl Model {
    fn new(
        config: ModelConfig,
        tokenizer: Tokenizer,
        info: ModelInfo,
        weights: Box<dyn WeightSource>,
        pool: ComputePool,
    ) -> Self {
        LIVE_MODELS.fetch_add(1, Ordering::Relaxed);
        Model {
            config,
            tokenizer,
            info,
            weights,
            pool,
            spare_buffers: Mutex::new(None),
            counters: Counters::default(),
            scheduler: OnceLock::new(),
            disposed: AtomicBool::new(false),
        }
    }

    /// Stops the model's generations: each fails at its next step (a pass in progress
    /// finishes first) with `Error::Disposed` and drops its state, and no new one starts. The
    /// memory is freed when the last handle to the model is dropped.
    pub fn dispose(&self) {
        self.disposed.store(true, Ordering::Relaxed);
        if let Some(scheduler) = self.scheduler.get() {
            scheduler.wake();
        }
    }

    pub fn is_disposed(&self) -> bool {
        self.disposed.load(Ordering::Relaxed)
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub fn weight_stats(&self) -> WeightStats {
        self.weights.stats()
    }

    pub fn sequence_stats(&self) -> SequenceStats {
        SequenceStats {
            sequences: self.counters.sequences.load(Ordering::Relaxed),
            kv_bytes: self.counters.kv_bytes.load(Ordering::Relaxed),
            passes: self.counters.passes.load(Ordering::Relaxed),
            pass_tokens: self.counters.pass_tokens.load(Ordering::Relaxed),
        }
    }

    /// The thread that batches generation steps, started on first use.
    pub fn scheduler(self: &Arc<Self>) -> &Scheduler {
        self.scheduler.get_or_init(|| Scheduler::start(Arc::downgrade(self), self.info.max_sequences))
    }

    fn transformer(&self) -> Transformer<'_> {
        Transformer { config: &self.config, weights: &*self.weights, pool: &self.pool }
    }

    /// An empty KV cache of `context` positions in the model's cache type.
    pub fn new_cache(&self, context: usize) -> Result<KvCache> {
        KvCache::new(&self.config, context, self.info.kv_type)
    }

    /// Runs `tokens` through the model after what `kv` holds, alone (not batched with other
    /// sequences), calling `on_logits(i, logits)` for each token index `i >= logits_from`.
    pub fn evaluate(
        &self,
        kv: &mut KvCache,
        tokens: &[u32],
        logits_from: usize,
        cancel: &AtomicBool,
        on_logits: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let mut buffers = self.take_buffers();
        let cancelled = || cancel.load(Ordering::Relaxed);
        let mut input = [SeqInput { kv, tokens, logits_from }];
        let result =
            self.transformer().forward(&mut buffers, &mut input, CHUNK, &cancelled, &mut |_, i, l| on_logits(i, l));
        self.give_back_buffers(buffers);
        result
    }

    /// Buffers for forward passes: the spare set, or a new one while another caller holds it.
    pub(crate) fn take_buffers(&self) -> ForwardBuffers {
        lock(&self.spare_buffers).take().unwrap_or_default()
    }

    /// Buffers a caller has finished with, for the next (one set is kept).
    pub(crate) fn give_back_buffers(&self, buffers: ForwardBuffers) {
        *lock(&self.spare_buffers) = Some(buffers);
    }

    pub fn check_tokens(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&t| t as usize >= self.config.n_vocab) {
            Some(&bad) => Err(Error::InvalidToken(bad.into())),
            None => Ok(()),
        }
    }

    /// Logits of positions `from..ids.len()` of `ids`, evaluated in a fresh state: one row of
    /// vocab_size values per position.
    pub fn logits(&self, ids: &[u32], from: usize, cancel: &AtomicBool) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::invalid_option("ids", "must hold at least one token"));
        }
        if from >= ids.len() {
            return Err(Error::invalid_option("from", format!("{from} is not a position of the {} tokens", ids.len())));
        }
        self.check_tokens(ids)?;
        self.check_fits(ids.len())?;
        let mut kv = self.new_cache(ids.len())?;
        let mut out = Vec::with_capacity((ids.len() - from) * self.config.n_vocab);
        self.evaluate(&mut kv, ids, from, cancel, &mut |_, logits| out.extend_from_slice(logits))?;
        Ok(out)
    }

    fn check_fits(&self, positions: usize) -> Result<()> {
        if positions > self.info.context_size {
            return Err(Error::ContextFull { needed: positions, context_size: self.info.context_size });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod memory_probe {
    /// Anonymous memory a loaded model keeps (tokenizer, tables), for checking RSS budgets:
    /// `CHORD_PROBE_MODEL=file.gguf cargo test --release memory_probe -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn anonymous_memory_after_load() {
        let Some(path) = std::env::var_os("CHORD_PROBE_MODEL") else { return };
        let anon = || {
            let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
            s.lines()
                .find(|l| l.starts_with("Anonymous:"))
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                / 1024
        };
        let before = anon();
        let mut file = crate::gguf::GgufFile::open(std::path::Path::new(&path)).unwrap();
        let opened = anon();
        let spec = super::load::vocab_spec(&mut file).unwrap();
        let spec_read = anon();
        let tokenizer = crate::tokenizer::Tokenizer::new(spec).unwrap();
        let built = anon();
        println!("anonymous MiB: opened {opened}, spec {spec_read}, tokenizer {built}");
        drop((tokenizer, file));
        let model = super::Model::load(
            std::path::Path::new(&path),
            &Default::default(),
            &std::sync::atomic::AtomicBool::new(false),
            &mut |_, _| {},
        )
        .unwrap();
        let after = anon();
        let tok = model.tokenizer.encode("hello world", false, false);
        println!("anonymous MiB: before {before}, after load {after}; {} tokens", tok.len());
    }
}
