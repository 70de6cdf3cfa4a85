//! The engine's public face in plain Rust: load a model, tokenize, compute logits, generate.
//! The napi binding is a thin translation of this module.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};
use crate::model::config::ModelConfig;
use crate::model::forward::{forward, LogitsSink, CHUNK};
use crate::model::state::{BatchBuffers, RunState};
use crate::model::weights::{MappedWeights, TensorTable, WeightSource, WeightStats};
use crate::pager::{EvictionPolicy, LoadMethod, PagedWeights, PagerOptions};
use crate::pool::ComputePool;
use crate::sampler::{Sampler, SamplerParams};
use crate::text_stream::TextStream;
use crate::tokenizer::{Tokenizer, VocabSpec};

/// Default context when the caller does not choose one: long enough for chat, small enough that
/// the KV cache of a large model stays modest. Capped by what the model was trained for.
pub const DEFAULT_CONTEXT: usize = 4096;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Compute threads; defaults to the number of CPUs.
    pub threads: Option<usize>,
    /// Positions per sequence; defaults to min(DEFAULT_CONTEXT, trained context).
    pub context_size: Option<usize>,
    /// Bytes of weights allowed resident; None: no limit.
    pub memory_budget: Option<u64>,
    pub paging: Paging,
    /// Layers loaded ahead of the one computing when paged; defaults to DEFAULT_PREFETCH.
    pub prefetch_layers: Option<usize>,
    pub paging_method: Option<LoadMethod>,
    /// Eviction policy when paged; plain LRU exists to be measured against.
    pub eviction_policy: Option<EvictionPolicy>,
}

/// When weights are paged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paging {
    /// Only when the weights do not fit `memory_budget`.
    #[default]
    Auto,
    Always,
    Never,
}

pub const DEFAULT_PREFETCH: usize = 2;

#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub architecture: String,
    pub name: Option<String>,
    /// Total number of weights.
    pub parameters: u64,
    pub file_bytes: u64,
    pub layers: usize,
    /// Positions per sequence in this session (see `LoadOptions::context_size`).
    pub context_size: usize,
    /// Context length the model was trained with.
    pub context_length: usize,
    pub vocab_size: usize,
    /// How many tensors of each GGML type the file holds.
    pub tensor_types: BTreeMap<String, u32>,
    /// Bytes of all weights.
    pub weight_bytes: u64,
    /// Whether weights are paged (only part of them resident at a time).
    pub paged: bool,
    /// Bytes of one sequence's KV cache when its context is full (not part of the budget).
    pub kv_cache_bytes: u64,
}

pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
    weights: Box<dyn WeightSource>,
    pool: ComputePool,
    /// The forward pass's buffers of the last finished evaluation, handed to the next one. Each
    /// call runs on some libuv thread, and buffers freed there stay in that thread's malloc
    /// arena; reusing one set keeps peak RSS from growing by a set per thread.
    spare_buffers: Mutex<Option<BatchBuffers>>,
}

impl Model {
    /// Opens, validates and prefaults the model. `progress(loaded, total)` is called as weights
    /// are read in; setting `cancel` stops the load with `Error::Aborted`.
    pub fn load(
        path: &Path,
        opts: &LoadOptions,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Model> {
        let threads = match opts.threads {
            Some(0) => return Err(Error::invalid_option("threads", "must be at least 1")),
            Some(n) if n > 1024 => return Err(Error::invalid_option("threads", format!("{n} is more than 1024"))),
            n => n,
        };
        let mut file = GgufFile::open(path)?;
        let mut config = ModelConfig::from_gguf(&file)?;
        let embd =
            file.tensor_info("token_embd.weight").ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
        config.n_vocab = embd.dims[1] as usize;
        let tokenizer = Tokenizer::new(vocab_spec(&mut file)?)?;
        let file = Arc::new(file);
        if tokenizer.vocab_size() != config.n_vocab {
            return Err(Error::InvalidTokenizer(format!(
                "the tokenizer has {} tokens but token_embd.weight has {} rows",
                tokenizer.vocab_size(),
                config.n_vocab
            )));
        }
        let table = TensorTable::resolve(&file, &config)?;
        if let Some(t) = &table.rope_freqs {
            let mut factors = vec![0.0; config.rope_dim / 2];
            crate::quant::dequantize_row(t.ty, file.view(t).data, &mut factors);
            config.rope_freq_factors = Some(factors);
        }
        let context_size = match opts.context_size {
            Some(0) => return Err(Error::invalid_option("contextSize", "must be at least 1")),
            Some(n) if n > config.n_ctx_train => {
                return Err(Error::invalid_option(
                    "contextSize",
                    format!("{n} is more than the {} positions the model was trained for", config.n_ctx_train),
                ))
            }
            Some(n) => n,
            None => config.n_ctx_train.min(DEFAULT_CONTEXT),
        };

        let weight_bytes = table.total_bytes();
        let paged = match (opts.paging, opts.memory_budget) {
            (Paging::Never, _) => false,
            (Paging::Always, None) => {
                return Err(Error::invalid_option("paging", "'always' needs a memoryBudget"));
            }
            (Paging::Always, Some(_)) => true,
            (Paging::Auto, budget) => budget.is_some_and(|b| b < weight_bytes),
        };

        let info = ModelInfo {
            architecture: config.arch.name().to_owned(),
            name: file.get_str("general.name")?.map(str::to_owned),
            parameters: file.tensors.iter().map(|t| t.elements()).sum(),
            file_bytes: file.file_len(),
            layers: config.n_layer,
            context_size,
            context_length: config.n_ctx_train,
            vocab_size: config.n_vocab,
            tensor_types: file.tensors.iter().fold(BTreeMap::new(), |mut m, t| {
                *m.entry(t.ty.name().to_owned()).or_insert(0) += 1;
                m
            }),
            weight_bytes,
            paged,
            kv_cache_bytes: (2 * 2 * config.n_layer * context_size * config.kv_dim()) as u64,
        };
        let weights: Box<dyn WeightSource> = if paged {
            let options = PagerOptions {
                budget_bytes: opts.memory_budget.unwrap_or(weight_bytes),
                prefetch: opts.prefetch_layers.unwrap_or(DEFAULT_PREFETCH),
                method: opts.paging_method.unwrap_or(LoadMethod::DEFAULT),
                policy: opts.eviction_policy.unwrap_or(EvictionPolicy::FixedAndStream),
            };
            Box::new(PagedWeights::new(file, table, options, cancel, progress)?)
        } else {
            let (start, len) = table.span();
            progress(0, len);
            file.mapped().prefault(start, len, cancel, |done| progress(done, len))?;
            Box::new(MappedWeights::new(file, table))
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let streams = paged && opts.memory_budget.is_some_and(|b| b < weight_bytes);
        // By default compute on every core, except one left to the prefetch thread when layers
        // stream through memory every token: mapping them in is CPU work too, and sharing cores
        // with it costs more than one compute thread gives (Qwen2.5-1.5B at half its weights,
        // 2 cores: 12.9 tok/s with 2 compute threads, 15.2 with 1).
        let threads = threads.unwrap_or(if streams { (cores - 1).max(1) } else { cores });
        Ok(Model { config, tokenizer, info, weights, pool: ComputePool::new(threads), spare_buffers: Mutex::new(None) })
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub fn weight_stats(&self) -> WeightStats {
        self.weights.stats()
    }

    /// A fresh sequence state; give it back with [`Model::recycle`] when done.
    pub fn new_state(&self) -> Result<RunState> {
        let mut state = RunState::new(&self.config, self.info.context_size)?;
        state.buffers = self.spare_buffers.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(state)
    }

    /// Keeps a finished state's buffers for the next [`Model::new_state`].
    pub fn recycle(&self, state: &mut RunState) {
        if let Some(b) = state.buffers.take() {
            *self.spare_buffers.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
        }
    }

    /// Runs one token through the model at the next position of `state`; with `want_logits`,
    /// its logits are left in `state.logits`.
    pub fn eval(&self, state: &mut RunState, token: u32, want_logits: bool, cancel: &AtomicBool) -> Result<()> {
        self.prefill(state, &[token], if want_logits { 0 } else { 1 }, cancel, &mut |_, _| {})
    }

    /// Runs `tokens` through the model at the next positions of `state`, in batches, calling
    /// `on_logits(i, logits)` for each token index `i >= logits_from` (see `prefill`).
    pub fn prefill(
        &self,
        state: &mut RunState,
        tokens: &[u32],
        logits_from: usize,
        cancel: &AtomicBool,
        on_logits: &mut LogitsSink,
    ) -> Result<()> {
        let cancelled = || cancel.load(Ordering::Relaxed);
        forward(&self.config, &*self.weights, &self.pool, state, tokens, logits_from, CHUNK, &cancelled, on_logits)
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
        let mut state = self.new_state()?;
        let mut out = Vec::with_capacity((ids.len() - from) * self.config.n_vocab);
        let result = self.prefill(&mut state, ids, from, cancel, &mut |_, logits| out.extend_from_slice(logits));
        self.recycle(&mut state);
        result.map(|_| out)
    }

    /// Perplexity of `text` under the protocol of `PerplexityOptions`.
    pub fn perplexity(&self, text: &str, opts: &PerplexityOptions, cancel: &AtomicBool) -> Result<Perplexity> {
        if opts.window < 2 {
            return Err(Error::invalid_option("window", format!("must be at least 2, got {}", opts.window)));
        }
        let mut tokens = self.tokenizer.encode(text, false, false);
        if let Some(max) = opts.max_tokens {
            tokens.truncate(max);
        }
        let windows = tokens.len() / opts.window;
        if windows == 0 {
            return Err(Error::invalid_option(
                "text",
                format!("has {} tokens, fewer than one window of {}", tokens.len(), opts.window),
            ));
        }
        let bos = self.tokenizer.bos().filter(|_| self.tokenizer.add_bos_default());
        let offset = usize::from(bos.is_some());
        self.check_fits(opts.window + offset)?;

        let mut state = self.new_state()?;
        let (mut nll_sum, mut scored) = (0.0f64, 0usize);
        let result = tokens.chunks_exact(opts.window).try_for_each(|chunk| {
            state.n_past = 0;
            let input: Vec<u32> = bos.into_iter().chain(chunk.iter().copied()).collect();
            // Logits at input position p predict input[p + 1]; the first text token is not scored.
            self.prefill(&mut state, &input[..input.len() - 1], offset, cancel, &mut |p, logits| {
                nll_sum -= log_softmax_at(logits, input[p + 1] as usize);
                scored += 1;
            })
        });
        self.recycle(&mut state);
        result?;
        let mean_nll = nll_sum / scored as f64;
        Ok(Perplexity { perplexity: mean_nll.exp(), mean_nll, tokens: scored })
    }

    fn check_fits(&self, positions: usize) -> Result<()> {
        if positions > self.info.context_size {
            return Err(Error::ContextFull { needed: positions, context_size: self.info.context_size });
        }
        Ok(())
    }
}

/// How `Model::perplexity` scores a text: tokenized without BOS and without parsing special
/// tokens, cut to `max_tokens` and then to whole windows of `window` tokens, each window
/// evaluated from a fresh state with BOS in front when the model adds BOS; every token but the
/// first of each window is scored.
#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    pub window: usize,
    pub max_tokens: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// exp(mean_nll).
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token, in nats.
    pub mean_nll: f64,
    /// How many tokens were scored.
    pub tokens: usize,
}

/// log softmax(logits)[index], computed in f64 over the whole vocabulary.
fn log_softmax_at(logits: &[f32], index: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[index] as f64 - max - sum.ln()
}

/// Parses a byte size: a whole number of bytes ("1048576") or a number with a unit, decimal
/// (KB, MB, GB, TB: powers of 1000) or binary (KiB, MiB, GiB, TiB: powers of 1024), e.g.
/// "512MB", "1.5 GiB". Case-insensitive; "B" alone means bytes.
pub fn parse_byte_size(text: &str) -> Result<u64> {
    let bad = || Error::invalid_option("memoryBudget", format!("'{text}' is not a byte size such as 512MB or 2GiB"));
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim().to_ascii_lowercase());
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > 2f64.powi(62) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Everything the tokenizer needs from `tokenizer.ggml.*`.
/// The tokenizer's part of the metadata. Its token and merge lists are moved out of `g`, not
/// copied (see [`GgufFile::take_array`]).
fn vocab_spec(g: &mut GgufFile) -> Result<VocabSpec> {
    let mut strings = |key: &str| -> Result<Option<Vec<String>>> {
        match g.take_array(key)? {
            None => Ok(None),
            Some((_, items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(Error::InvalidTokenizer(format!("{key} holds a non-string"))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?.ok_or_else(|| Error::MissingKey("tokenizer.ggml.tokens".into()))?;
    let merges = strings("tokenizer.ggml.merges")?;
    let mut numbers = |key: &str| -> Result<Option<Vec<f64>>> {
        match g.take_array(key)? {
            None => Ok(None),
            Some((_, items)) => items
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| Error::InvalidTokenizer(format!("{key} holds a non-number"))))
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    };
    let scores = numbers("tokenizer.ggml.scores")?.map(|v| v.into_iter().map(|x| x as f32).collect());
    let token_types = numbers("tokenizer.ggml.token_type")?.map(|v| v.into_iter().map(|x| x as i32).collect());
    let id = |key: &str| g.get_int::<u32>(key);
    let model = g.get_str("tokenizer.ggml.model")?.ok_or_else(|| Error::MissingKey("tokenizer.ggml.model".into()))?;
    Ok(VocabSpec {
        model: model.to_owned(),
        pre: g.get_str("tokenizer.ggml.pre")?.map(str::to_owned),
        tokens,
        scores,
        token_types,
        merges,
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        eot: id("tokenizer.ggml.eot_token_id")?,
        eom: id("tokenizer.ggml.eom_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id")?,
        pad: id("tokenizer.ggml.padding_token_id")?,
        // llama.cpp reads the older prefix / suffix / middle names after the fim_* ones.
        fim_pre: id("tokenizer.ggml.prefix_token_id")?.or(id("tokenizer.ggml.fim_pre_token_id")?),
        fim_suf: id("tokenizer.ggml.suffix_token_id")?.or(id("tokenizer.ggml.fim_suf_token_id")?),
        fim_mid: id("tokenizer.ggml.middle_token_id")?.or(id("tokenizer.ggml.fim_mid_token_id")?),
        fim_pad: id("tokenizer.ggml.fim_pad_token_id")?,
        fim_rep: id("tokenizer.ggml.fim_rep_token_id")?,
        fim_sep: id("tokenizer.ggml.fim_sep_token_id")?,
        add_bos: g.get_bool("tokenizer.ggml.add_bos_token")?,
        add_eos: g.get_bool("tokenizer.ggml.add_eos_token")?,
        add_space_prefix: g.get_bool("tokenizer.ggml.add_space_prefix")?,
        name: g.get_str("general.name")?.map(str::to_owned),
    })
}

#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// None: until end of generation or the context is full.
    pub max_tokens: Option<usize>,
    pub sampler: SamplerParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
}

/// One step of a generation.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A generated token and the text it releases (possibly empty while a UTF-8 character or a
    /// possible stop string is incomplete).
    Token { id: u32, text: String },
    /// Generation is over. `text` is what was still held back; `token` is the end-of-generation
    /// token if one ended it.
    End { text: String, token: Option<u32>, reason: EndReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    EndOfGeneration,
    MaxTokens,
    Stop,
    ContextFull,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::EndOfGeneration => "eog",
            EndReason::MaxTokens => "maxTokens",
            EndReason::Stop => "stop",
            EndReason::ContextFull => "contextFull",
        }
    }
}

/// A generation in progress: its own KV cache, sampler and text stream over a shared model.
pub struct Generation {
    model: Arc<Model>,
    state: RunState,
    sampler: Sampler,
    stream: TextStream,
    params: GenerateParams,
    /// Prompt and generated tokens.
    history: Vec<u32>,
    prompt_len: usize,
    generated: usize,
    /// Set once generation is over; later calls report it again.
    ended: Option<EndReason>,
}

impl Generation {
    pub fn new(model: Arc<Model>, prompt: Vec<u32>, params: GenerateParams) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::invalid_option("prompt", "must hold at least one token"));
        }
        params.sampler.validate()?;
        model.check_tokens(&prompt)?;
        model.check_fits(prompt.len())?;
        Ok(Generation {
            state: model.new_state()?,
            sampler: Sampler::new(params.sampler.clone()),
            stream: TextStream::new(params.stop.clone()),
            prompt_len: prompt.len(),
            history: prompt,
            generated: 0,
            ended: None,
            params,
            model,
        })
    }

    /// Computes the next token; the first call also evaluates the prompt. Once generation has
    /// ended (including by a stop string, reported with the token that completed it), calls
    /// return `Step::End` with empty text.
    pub fn next(&mut self, cancel: &AtomicBool) -> Result<Step> {
        if let Some(reason) = self.ended {
            return Ok(Step::End { text: String::new(), token: None, reason });
        }
        if self.params.max_tokens == Some(self.generated) {
            return Ok(self.end(None, EndReason::MaxTokens));
        }
        // Evaluate what the cache has not seen yet: the whole prompt at first (it fits, `new`
        // checked), then the last token; only the last one's logits are needed.
        if self.state.n_past < self.history.len() {
            if self.history.len() > self.model.info.context_size {
                return Ok(self.end(None, EndReason::ContextFull));
            }
            let pending = &self.history[self.state.n_past..];
            self.model.prefill(&mut self.state, pending, pending.len() - 1, cancel, &mut |_, _| {})?;
        }
        let id = self.sampler.sample(&self.state.logits, &self.history);
        if !self.params.ignore_eos && self.model.tokenizer.is_eog(id) {
            return Ok(self.end(Some(id), EndReason::EndOfGeneration));
        }
        self.history.push(id);
        self.generated += 1;
        let released = self.stream.push(&self.model.tokenizer.token_bytes(id, false));
        if released.stopped {
            self.ended = Some(EndReason::Stop);
            return Ok(Step::Token { id, text: released.text });
        }
        let mut text = released.text;
        // The last token carries whatever is still held, so nothing is lost at the end.
        if self.params.max_tokens == Some(self.generated) {
            text.push_str(&self.stream.finish());
        }
        Ok(Step::Token { id, text })
    }

    fn end(&mut self, token: Option<u32>, reason: EndReason) -> Step {
        self.ended = Some(reason);
        Step::End { text: self.stream.finish(), token, reason }
    }

    /// Why generation ended, once it has.
    pub fn ended(&self) -> Option<EndReason> {
        self.ended
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    pub fn generated(&self) -> usize {
        self.generated
    }
}

impl Drop for Generation {
    /// A stopped generation cancels the prefetching done on its behalf.
    fn drop(&mut self) {
        self.model.weights.idle();
        self.model.recycle(&mut self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_byte_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_byte_size("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_byte_size("512 mib").unwrap(), 512 << 20);
        assert_eq!(parse_byte_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_byte_size("2g").unwrap(), 2_000_000_000);
        for bad in ["", "MB", "-5MB", "12XB", "1.2.3GB", "0", "0.1"] {
            assert_eq!(parse_byte_size(bad).unwrap_err().code(), "ERR_INVALID_OPTION", "{bad}");
        }
    }

    use crate::testutil::{write_tiny_llama, write_tiny_model, TempPath, TinyModel};

    fn load(path: &Path, opts: LoadOptions) -> Result<Model> {
        Model::load(path, &LoadOptions { threads: Some(2), ..opts }, &AtomicBool::new(false), &mut |_, _| {})
    }

    fn paged(budget: u64, method: LoadMethod) -> LoadOptions {
        LoadOptions {
            memory_budget: Some(budget),
            paging: Paging::Always,
            paging_method: Some(method),
            prefetch_layers: Some(1),
            ..LoadOptions::default()
        }
    }

    const IDS: [u32; 12] = [72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33];

    #[test]
    fn paged_logits_are_bit_identical_to_resident_and_stay_in_budget() {
        let file = TempPath::new("paged");
        write_tiny_llama(file.path(), 6);
        let resident = load(file.path(), LoadOptions::default()).unwrap();
        let expected = resident.logits(&IDS, 0, &AtomicBool::new(false)).unwrap();
        let layer = resident.weights.stats().resident_bytes / 7; // six layers and a head of similar size
        for method in [LoadMethod::Read, LoadMethod::Map] {
            for budget in [layer * 2, layer * 3, layer * 5] {
                let model = load(file.path(), paged(budget, method)).unwrap();
                assert!(model.info.paged);
                let got = model.logits(&IDS, 0, &AtomicBool::new(false)).unwrap();
                assert!(got == expected, "{method:?} budget {budget}: logits differ");
                let s = model.weight_stats();
                assert!(
                    s.peak_resident_bytes <= budget,
                    "{method:?}: peak {} > budget {budget}",
                    s.peak_resident_bytes
                );
                assert!(s.layer_loads > 0 && s.bytes_read > 0);
                // Five layers' budget pins some units, which are then hits on every pass; at
                // the smaller budgets a hit needs the prefetch to win a race with compute.
                if budget == layer * 5 {
                    assert!(s.layer_hits > 0, "{method:?} budget {budget}: {s:?}");
                }
            }
        }
    }

    #[test]
    fn auto_paging_only_when_the_weights_do_not_fit() {
        let file = TempPath::new("auto");
        write_tiny_llama(file.path(), 2);
        let total = load(file.path(), LoadOptions::default()).unwrap().info.weight_bytes;
        let fits = LoadOptions { memory_budget: Some(total), ..LoadOptions::default() };
        assert!(!load(file.path(), fits).unwrap().info.paged);
        let tight = LoadOptions { memory_budget: Some(total - 1), ..LoadOptions::default() };
        assert!(load(file.path(), tight).unwrap().info.paged);
        let never = LoadOptions { memory_budget: Some(1), paging: Paging::Never, ..LoadOptions::default() };
        assert!(!load(file.path(), never).unwrap().info.paged);
        let too_small = load(file.path(), paged(1000, LoadMethod::Read)).err().unwrap();
        assert_eq!(too_small.code(), "ERR_INVALID_OPTION");
        let always_without_budget = LoadOptions { paging: Paging::Always, ..LoadOptions::default() };
        assert_eq!(load(file.path(), always_without_budget).err().unwrap().code(), "ERR_INVALID_OPTION");
    }

    #[test]
    fn a_read_error_while_paging_is_an_error() {
        let file = TempPath::new("ioerr");
        write_tiny_llama(file.path(), 4);
        let total = load(file.path(), LoadOptions::default()).unwrap().info.weight_bytes;
        // MADV_POPULATE_READ reports the failure that a plain access would turn into SIGBUS;
        // kernels without it (before 5.14) cannot take this test in Map mode.
        let methods: &[LoadMethod] =
            if cfg!(target_os = "linux") { &[LoadMethod::Read, LoadMethod::Map] } else { &[LoadMethod::Read] };
        for &method in methods {
            write_tiny_llama(file.path(), 4);
            let model = load(file.path(), paged(total / 3, method)).unwrap();
            // Cut the file so the layers that stream can no longer be read.
            let len = std::fs::metadata(file.path()).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(file.path()).unwrap().set_len(len / 3).unwrap();
            let err = model.logits(&IDS, 0, &AtomicBool::new(false)).unwrap_err();
            assert_eq!(err.code(), "ERR_IO", "{method:?}: {err}");
        }
    }

    #[test]
    fn generation_ends_at_stop_strings_and_max_tokens() {
        let file = TempPath::new("gen");
        write_tiny_llama(file.path(), 2);
        let model = Arc::new(load(file.path(), LoadOptions::default()).unwrap());
        let greedy = SamplerParams { temperature: 0.0, ..SamplerParams::default() };
        let params = |max, stop: Vec<String>| GenerateParams {
            max_tokens: max,
            sampler: greedy.clone(),
            stop,
            ignore_eos: true,
        };
        let run = |p: GenerateParams| {
            let mut g = Generation::new(model.clone(), IDS.to_vec(), p).unwrap();
            let (mut text, mut end) = (String::new(), None);
            for _ in 0..100 {
                match g.next(&AtomicBool::new(false)).unwrap() {
                    Step::Token { text: t, .. } => text.push_str(&t),
                    Step::End { text: t, reason, .. } => {
                        text.push_str(&t);
                        end = Some(reason);
                        break;
                    }
                }
            }
            (text, end, g.generated())
        };
        let (free, end, n) = run(params(Some(20), vec![]));
        assert_eq!((end, n), (Some(EndReason::MaxTokens), 20));
        let stop: String = free.chars().skip(3).take(2).collect();
        let (stopped, end, _) = run(params(Some(20), vec![stop.clone()]));
        assert_eq!(end, Some(EndReason::Stop));
        assert_eq!(stopped, free[..free.find(&stop).unwrap()]);
        let cancelled = AtomicBool::new(true);
        let mut g = Generation::new(model.clone(), IDS.to_vec(), params(None, vec![])).unwrap();
        assert_eq!(g.next(&cancelled).unwrap_err().code(), "ABORT_ERR");
    }

    #[test]
    fn perplexity_follows_the_protocol() {
        let file = TempPath::new("ppl");
        write_tiny_llama(file.path(), 2);
        let model = load(file.path(), LoadOptions::default()).unwrap();
        let text = "the quick brown fox jumps over the lazy dog";
        let cancel = AtomicBool::new(false);
        let r = model.perplexity(text, &PerplexityOptions { window: 8, max_tokens: None }, &cancel).unwrap();
        // 43 byte tokens, no BOS for this vocabulary: 5 windows of 8, 7 scored each.
        assert_eq!(r.tokens, 35);
        assert!((r.perplexity - r.mean_nll.exp()).abs() < 1e-9);
        // The same number from logits(): mean of -log softmax over the first window.
        let ids = model.tokenizer.encode(text, false, false);
        let logits = model.logits(&ids[..8], 0, &cancel).unwrap();
        let v = model.config.n_vocab;
        let nll: f64 = (0..7).map(|p| -log_softmax_at(&logits[p * v..(p + 1) * v], ids[p + 1] as usize)).sum();
        let one = model.perplexity(text, &PerplexityOptions { window: 8, max_tokens: Some(8) }, &cancel).unwrap();
        assert_eq!(one.tokens, 7);
        assert!((one.mean_nll - nll / 7.0).abs() < 1e-9);
        let err = model.perplexity("ab", &PerplexityOptions { window: 8, max_tokens: None }, &cancel).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_OPTION");
    }

    /// Logits of every position of `ids`, one token at a time through `forward`.
    fn sequential_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
        let mut state = model.new_state().unwrap();
        let mut out = Vec::new();
        for &t in ids {
            model.eval(&mut state, t, true, &AtomicBool::new(false)).unwrap();
            out.extend_from_slice(&state.logits);
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn prompt(len: usize) -> Vec<u32> {
        let mut rng = crate::sampler::Rng::new(len as u64 + 7);
        (0..len).map(|_| (rng.next_f64() * 256.0) as u32 % 256).collect()
    }

    /// Every architecture variant the tiny model writer knows, with room for several chunks.
    fn variants() -> Vec<TinyModel> {
        let base = TinyModel { context: 200, layers: 3, ..TinyModel::llama(3) };
        vec![
            base.clone(),
            TinyModel { mixed_types: true, ..base.clone() },
            TinyModel { arch: "qwen2", mixed_types: true, biases: true, ..base.clone() },
            TinyModel { arch: "gemma3", mixed_types: true, ..base.clone() },
            TinyModel { arch: "gemma3", biases: true, ..base },
        ]
    }

    #[test]
    fn batched_logits_are_bit_identical_to_token_by_token() {
        for spec in variants() {
            let file = TempPath::new("batch");
            write_tiny_model(file.path(), &spec);
            let model = load(file.path(), LoadOptions::default()).unwrap();
            let ids = prompt(200);
            let expected = sequential_logits(&model, &ids);
            let v = model.config.n_vocab;
            for len in [1, 2, 5, 63, 64, 65, 127, 129, 200] {
                let got = model.logits(&ids[..len], 0, &AtomicBool::new(false)).unwrap();
                assert!(bits(&got) == bits(&expected[..len * v]), "{spec:?}: {len} tokens differ");
                let from = len / 2;
                let tail = model.logits(&ids[..len], from, &AtomicBool::new(false)).unwrap();
                assert!(bits(&tail) == bits(&expected[from * v..len * v]), "{spec:?}: {len} tokens from {from}");
            }
        }
    }

    #[test]
    fn any_chunking_and_starting_position_give_the_same_logits() {
        for spec in variants() {
            let file = TempPath::new("chunks");
            write_tiny_model(file.path(), &spec);
            let model = load(file.path(), LoadOptions::default()).unwrap();
            let ids = prompt(90);
            let expected = sequential_logits(&model, &ids);
            let v = model.config.n_vocab;
            for chunk in [2, 3, 7, 16, 64, 90] {
                // Two calls: the second starts at a position the first left in the cache.
                for split in [0, 1, 10, 45] {
                    let mut state = model.new_state().unwrap();
                    let mut got = vec![0.0f32; ids.len() * v];
                    let never = || false;
                    for (start, part) in [(0, &ids[..split]), (split, &ids[split..])] {
                        let mut sink = |i: usize, l: &[f32]| got[(start + i) * v..][..v].copy_from_slice(l);
                        let (c, w, pool) = (&model.config, &*model.weights, &model.pool);
                        forward(c, w, pool, &mut state, part, 0, chunk, &never, &mut sink).unwrap();
                    }
                    assert_eq!(state.n_past, ids.len());
                    assert!(bits(&got) == bits(&expected), "{spec:?}: chunk {chunk}, split {split}");
                }
            }
        }
    }

    #[test]
    fn paged_batched_logits_are_bit_identical_to_resident_token_by_token() {
        let spec = TinyModel { arch: "qwen2", context: 200, layers: 6, mixed_types: true, biases: true };
        let file = TempPath::new("batch-paged");
        write_tiny_model(file.path(), &spec);
        let resident = load(file.path(), LoadOptions::default()).unwrap();
        let ids = prompt(150);
        let expected = sequential_logits(&resident, &ids);
        let layer = resident.weights.stats().resident_bytes / 7;
        for method in [LoadMethod::Read, LoadMethod::Map] {
            let model = load(file.path(), paged(layer * 3, method)).unwrap();
            let got = model.logits(&ids, 0, &AtomicBool::new(false)).unwrap();
            assert!(bits(&got) == bits(&expected), "{method:?}: logits differ");
            // Each layer is fetched once per chunk, not once per token: every fetch is a hit or
            // a load (a prefetched layer that hits counts as both), plus a prefetch or two past
            // the end. Token by token it would be at least 150 x 7.
            let s = model.weight_stats();
            let fetches = ids.len().div_ceil(crate::model::forward::CHUNK) as u64 * 7;
            assert!(s.layer_loads + s.layer_hits <= 2 * fetches + 2, "{method:?}: {s:?}");
        }
    }

    #[test]
    fn generation_after_a_batched_prompt_matches_token_by_token_decoding() {
        let spec = TinyModel { arch: "gemma3", context: 200, layers: 3, mixed_types: true, biases: false };
        let file = TempPath::new("batch-gen");
        write_tiny_model(file.path(), &spec);
        let model = Arc::new(load(file.path(), LoadOptions::default()).unwrap());
        let ids = prompt(70);
        let greedy = SamplerParams { temperature: 0.0, ..SamplerParams::default() };
        let params = GenerateParams { max_tokens: Some(10), sampler: greedy, stop: vec![], ignore_eos: true };
        let mut g = Generation::new(model.clone(), ids.clone(), params).unwrap();
        let mut generated = Vec::new();
        while let Step::Token { id, .. } = g.next(&AtomicBool::new(false)).unwrap() {
            generated.push(id);
        }
        assert_eq!(generated.len(), 10);
        // The same tokens by greedy argmax over token-by-token logits.
        let mut state = model.new_state().unwrap();
        let mut history = ids;
        for &id in &generated {
            for &t in &history[state.n_past..] {
                model.eval(&mut state, t, true, &AtomicBool::new(false)).unwrap();
            }
            let argmax =
                (0..state.logits.len()).max_by(|&a, &b| state.logits[a].total_cmp(&state.logits[b]).then(b.cmp(&a)));
            assert_eq!(argmax, Some(id as usize));
            history.push(id);
        }
    }
}

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
        let spec = super::vocab_spec(&mut file).unwrap();
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
