//! The napi binding: converts types, runs engine work on libuv's worker pool (`AsyncTask`),
//! and turns engine errors into JS errors. No inference logic lives here.
//!
//! Errors cross as `[CODE] message`; `lib/index.js` turns that prefix into `err.code`, since
//! async-task rejections can only carry a napi status as their own code.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::bandwidth;
use crate::engine::{
    self, lock, ContextShift, GenerateParams, Generation, KvType, LoadOptions, Model, Paging, Perplexity,
    PerplexityOptions, Sequence, SequenceOptions, Step, StepJob,
};
use crate::error::{Error as EngineError, Result as EngineResult};
use crate::pager::{EvictionPolicy, LoadMethod};
use crate::sampler::SamplerParams;

fn js_error(e: EngineError) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("[{}] {}", e.code(), e))
}

/// Runs engine code so that neither its errors nor a panic can cross into Node unconverted.
fn guarded<T>(f: impl FnOnce() -> EngineResult<T>) -> napi::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(js_error),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(napi::Error::new(Status::GenericFailure, format!("[ERR_INTERNAL] internal error: {what}")))
        }
    }
}

/// JavaScript's `Number.MAX_SAFE_INTEGER`: the largest integer every number up to which is exact.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Lets go of a reference to a model; the last one is dropped on a short-lived thread of its
/// own. Freeing a model (unmapping its weights, joining its compute threads) takes milliseconds
/// the event loop should not wait for, and what JavaScript releases often holds the last one.
fn release_model(model: Arc<Model>) {
    if Arc::strong_count(&model) > 1 {
        return;
    }
    let spawned = std::thread::Builder::new().name("chord-release".into()).spawn(move || drop(model));
    // Without a thread (resources exhausted), it is dropped here instead, which is only slower.
    drop(spawned);
}

fn to_usize(v: Option<f64>, option: &'static str) -> EngineResult<Option<usize>> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64 => Ok(Some(x as usize)),
        Some(x) => Err(EngineError::invalid_option(option, format!("must be a non-negative integer, got {x}"))),
    }
}

#[napi(object)]
pub struct NativeLoadOptions {
    pub threads: Option<f64>,
    pub context_size: Option<f64>,
    /// Bytes, or a size such as "512MB" / "2GiB".
    pub memory_budget: Option<String>,
    /// "auto" | "always" | "never".
    pub paging: Option<String>,
    pub prefetch_layers: Option<f64>,
    /// "read" | "mmap".
    pub paging_method: Option<String>,
    /// "fixed" | "lru" (the baseline, for benchmarks).
    pub eviction_policy: Option<String>,
    pub max_sequences: Option<f64>,
    /// "f16" | "q8_0".
    pub kv_cache_type: Option<String>,
    /// "auto" | "keep".
    pub page_cache: Option<String>,
    pub use_mmap: Option<bool>,
}

#[napi(object)]
pub struct NativeProgress {
    pub loaded_bytes: f64,
    pub total_bytes: f64,
}

/// One model load: started with `load()`, observed with `progress()`, stopped with `cancel()`.
#[napi]
pub struct NativeLoader {
    path: PathBuf,
    /// Taken by the first `load()`; a Mutex so that `load` needs only `&self` (napi refuses a
    /// `progress()` call while a `&mut self` method's borrow of the object is active).
    options: Mutex<Option<NativeLoadOptions>>,
    shared: Arc<LoadShared>,
}

#[derive(Default)]
struct LoadShared {
    cancel: AtomicBool,
    loaded: AtomicU64,
    total: AtomicU64,
}

#[napi]
impl NativeLoader {
    #[napi(constructor)]
    pub fn new(path: String, options: Option<NativeLoadOptions>) -> Self {
        NativeLoader { path: path.into(), options: Mutex::new(options), shared: Arc::default() }
    }

    #[napi(ts_return_type = "Promise<NativeModel>")]
    pub fn load(&self) -> AsyncTask<LoadTask> {
        let options = self.options.lock().unwrap_or_else(|e| e.into_inner()).take();
        AsyncTask::new(LoadTask { path: self.path.clone(), options, shared: self.shared.clone() })
    }

    #[napi]
    pub fn progress(&self) -> NativeProgress {
        NativeProgress {
            loaded_bytes: self.shared.loaded.load(Ordering::Relaxed) as f64,
            total_bytes: self.shared.total.load(Ordering::Relaxed) as f64,
        }
    }

    #[napi]
    pub fn cancel(&self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
    }
}

/// The engine's load options from the binding's (whose values `lib/index.js` has checked).
fn load_options(options: Option<NativeLoadOptions>) -> EngineResult<LoadOptions> {
    Ok(match options {
        None => LoadOptions::default(),
        Some(o) => LoadOptions {
            threads: to_usize(o.threads, "threads")?,
            context_size: to_usize(o.context_size, "contextSize")?,
            memory_budget: o.memory_budget.as_deref().map(engine::parse_byte_size).transpose()?,
            paging: match o.paging.as_deref() {
                None | Some("auto") => Paging::Auto,
                Some("always") => Paging::Always,
                Some("never") => Paging::Never,
                Some(other) => {
                    return Err(EngineError::invalid_option(
                        "paging",
                        format!("'{other}' is not 'auto', 'always' or 'never'"),
                    ))
                }
            },
            prefetch_layers: to_usize(o.prefetch_layers, "prefetchLayers")?,
            eviction_policy: match o.eviction_policy.as_deref() {
                None | Some("fixed") => None,
                Some("lru") => Some(EvictionPolicy::Lru),
                Some(other) => {
                    return Err(EngineError::invalid_option(
                        "evictionPolicy",
                        format!("'{other}' is not 'fixed' or 'lru'"),
                    ))
                }
            },
            max_sequences: to_usize(o.max_sequences, "maxSequences")?,
            kv_type: match o.kv_cache_type.as_deref() {
                None | Some("f16") => KvType::F16,
                Some("q8_0") => KvType::Q8_0,
                Some(other) => {
                    return Err(EngineError::invalid_option("kvCacheType", format!("'{other}' is not 'f16' or 'q8_0'")))
                }
            },
            keep_page_cache: match o.page_cache.as_deref() {
                None | Some("auto") => false,
                Some("keep") => true,
                Some(other) => {
                    return Err(EngineError::invalid_option("pageCache", format!("'{other}' is not 'auto' or 'keep'")))
                }
            },
            copy_weights: o.use_mmap.map(|mapped| !mapped),
            paging_method: match o.paging_method.as_deref() {
                None => None,
                Some("read") => Some(LoadMethod::Read),
                Some("mmap") => Some(LoadMethod::Map),
                Some(other) => {
                    return Err(EngineError::invalid_option(
                        "pagingMethod",
                        format!("'{other}' is not 'read' or 'mmap'"),
                    ))
                }
            },
        },
    })
}

pub struct LoadTask {
    path: PathBuf,
    options: Option<NativeLoadOptions>,
    shared: Arc<LoadShared>,
}

impl Task for LoadTask {
    type Output = Model;
    type JsValue = NativeModel;

    fn compute(&mut self) -> napi::Result<Model> {
        let shared = self.shared.clone();
        let options = self.options.take();
        let path = self.path.clone();
        guarded(|| {
            let opts = load_options(options)?;
            Model::load(&path, &opts, &shared.cancel, &mut |loaded, total| {
                shared.total.store(total, Ordering::Relaxed);
                shared.loaded.store(loaded, Ordering::Relaxed);
            })
        })
    }

    fn resolve(&mut self, _env: Env, model: Model) -> napi::Result<NativeModel> {
        Ok(NativeModel { model: Mutex::new(Some(Arc::new(model))) })
    }
}

#[napi(object)]
pub struct NativeModelInfo {
    pub architecture: String,
    pub name: Option<String>,
    pub parameters: f64,
    pub file_bytes: f64,
    pub layers: u32,
    pub context_size: u32,
    pub context_length: u32,
    pub vocab_size: u32,
    pub threads: u32,
    pub tensor_types: std::collections::HashMap<String, u32>,
    pub weight_bytes: f64,
    pub paged: bool,
    pub kv_cache_bytes: f64,
    pub kv_cache_type: String,
    pub max_sequences: u32,
    pub chat_template: Option<String>,
    pub min_memory_budget: f64,
}

impl NativeModelInfo {
    fn new(i: &engine::ModelInfo, threads: usize) -> Self {
        NativeModelInfo {
            architecture: i.architecture.clone(),
            name: i.name.clone(),
            parameters: i.parameters as f64,
            file_bytes: i.file_bytes as f64,
            layers: i.layers as u32,
            context_size: i.context_size as u32,
            context_length: i.context_length as u32,
            vocab_size: i.vocab_size as u32,
            threads: threads as u32,
            tensor_types: i.tensor_types.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            weight_bytes: i.weight_bytes as f64,
            paged: i.paged,
            kv_cache_bytes: i.kv_cache_bytes as f64,
            kv_cache_type: i.kv_type.name().into(),
            max_sequences: i.max_sequences as u32,
            chat_template: i.chat_template.clone(),
            min_memory_budget: i.min_budget_bytes as f64,
        }
    }
}

/// What `loadModel` with these options would report as `info`, without reading any weight.
// napi-derive registers free functions only outside `cfg(test)`, so the test build sees them unused.
#[cfg_attr(test, allow(dead_code))]
#[napi(ts_return_type = "Promise<NativeModelInfo>")]
pub fn inspect_model(path: String, options: Option<NativeLoadOptions>) -> AsyncTask<InspectTask> {
    AsyncTask::new(InspectTask { path: path.into(), options })
}

#[cfg_attr(test, allow(dead_code))]
pub struct InspectTask {
    path: PathBuf,
    options: Option<NativeLoadOptions>,
}

impl Task for InspectTask {
    type Output = NativeModelInfo;
    type JsValue = NativeModelInfo;

    fn compute(&mut self) -> napi::Result<NativeModelInfo> {
        let options = self.options.take();
        guarded(|| {
            let (info, threads) = Model::inspect(&self.path, &load_options(options)?)?;
            Ok(NativeModelInfo::new(&info, threads))
        })
    }

    fn resolve(&mut self, _env: Env, info: NativeModelInfo) -> napi::Result<NativeModelInfo> {
        Ok(info)
    }
}

#[napi(object)]
pub struct NativeStats {
    pub paged: bool,
    /// Resident weights, all or the rearranged matrices, are a copy in the process's memory
    /// (see `useMmap`); paged with `pagingMethod` 'mmap', the units resident for good are
    /// ('read' copies every unit as it loads it and reports false).
    pub copied: bool,
    /// Bytes of that copy made so far.
    pub copied_bytes: f64,
    /// The copy is being made, on a thread of its own, after the load (see `useMmap`).
    pub copying: bool,
    pub budget_bytes: f64,
    pub resident_bytes: f64,
    pub peak_resident_bytes: f64,
    pub layer_loads: f64,
    pub layer_hits: f64,
    pub prefetch_hits: f64,
    pub stall_ms: f64,
    pub bytes_read: f64,
    /// Sequences alive (sessions, and generations of `model.generate`).
    pub sequences: u32,
    /// Bytes their KV caches hold.
    pub kv_bytes: f64,
    /// Forward passes that evaluated generations' tokens, and how many tokens they evaluated.
    pub passes: f64,
    pub pass_tokens: f64,
}

#[napi]
pub struct NativeModel {
    /// None once disposed; generations in flight keep their own `Arc` until they end.
    model: Mutex<Option<Arc<Model>>>,
}

/// A handle collected without `dispose()` lets the model go off the JS thread too.
impl Drop for NativeModel {
    fn drop(&mut self) {
        if let Some(model) = self.model.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            release_model(model);
        }
    }
}

impl NativeModel {
    fn get(&self) -> napi::Result<Arc<Model>> {
        self.model.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| js_error(EngineError::Disposed))
    }
}

#[napi(object)]
pub struct NativeGenerateOptions {
    pub max_tokens: Option<f64>,
    pub temperature: Option<f64>,
    pub top_k: Option<f64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<f64>,
    pub seed: Option<f64>,
    pub stop: Option<Vec<String>>,
    pub ignore_eos: Option<bool>,
}

#[napi(object)]
pub struct NativeChatOptions {
    pub template: Option<String>,
    pub add_generation_prompt: Option<bool>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// The caller's clock for `strftime_now`: milliseconds since the epoch and the local
    /// offset from UTC (JavaScript's `Date` knows the time zone; Rust's std does not).
    pub now_ms: f64,
    pub utc_offset_minutes: i32,
}

fn chat_options(o: NativeChatOptions) -> engine::ChatOptions {
    engine::ChatOptions {
        template: o.template,
        add_generation_prompt: o.add_generation_prompt.unwrap_or(true),
        bos_token: o.bos_token,
        eos_token: o.eos_token,
        clock: crate::chat::Clock {
            unix_seconds: (o.now_ms / 1000.0).floor() as i64,
            utc_offset_minutes: o.utc_offset_minutes,
        },
    }
}

#[napi]
impl NativeModel {
    /// `conversation` is JSON: `{"messages": [...], "tools": [...]}`.
    #[napi]
    pub fn apply_chat_template(&self, conversation: String, options: NativeChatOptions) -> napi::Result<String> {
        let m = self.get()?;
        guarded(|| m.apply_chat_template(&crate::chat::Conversation::from_json(&conversation)?, &chat_options(options)))
    }

    #[napi]
    pub fn tokenize_chat(&self, conversation: String, options: NativeChatOptions) -> napi::Result<Vec<u32>> {
        let m = self.get()?;
        guarded(|| m.tokenize_chat(&crate::chat::Conversation::from_json(&conversation)?, &chat_options(options)))
    }

    #[napi(getter)]
    pub fn info(&self) -> napi::Result<NativeModelInfo> {
        let m = self.get()?;
        Ok(NativeModelInfo::new(&m.info, m.threads()))
    }

    #[napi]
    pub fn stats(&self) -> napi::Result<NativeStats> {
        let model = self.get()?;
        let (s, q) = (model.weight_stats(), model.sequence_stats());
        Ok(NativeStats {
            sequences: q.sequences as u32,
            kv_bytes: q.kv_bytes as f64,
            passes: q.passes as f64,
            pass_tokens: q.pass_tokens as f64,
            paged: s.paged,
            copied: s.copied,
            copied_bytes: s.copied_bytes as f64,
            copying: s.copying,
            budget_bytes: s.budget_bytes as f64,
            resident_bytes: s.resident_bytes as f64,
            peak_resident_bytes: s.peak_resident_bytes as f64,
            layer_loads: s.layer_loads as f64,
            layer_hits: s.layer_hits as f64,
            prefetch_hits: s.prefetch_hits as f64,
            stall_ms: s.stall_ms,
            bytes_read: s.bytes_read as f64,
        })
    }

    #[napi]
    pub fn tokenize(&self, text: String, add_bos: Option<bool>, special: bool) -> napi::Result<Vec<u32>> {
        let m = self.get()?;
        guarded(|| Ok(m.tokenizer.encode(&text, add_bos.unwrap_or(m.tokenizer.add_bos_default()), special)))
    }

    #[napi]
    pub fn detokenize(&self, ids: Vec<u32>, special: bool) -> napi::Result<String> {
        let m = self.get()?;
        guarded(|| {
            m.check_tokens(&ids)?;
            Ok(m.tokenizer.decode(&ids, special))
        })
    }

    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn logits(&self, ids: Vec<u32>, from: Option<f64>) -> napi::Result<AsyncTask<LogitsTask>> {
        let model = self.get()?;
        let from = guarded(|| to_usize(from, "from"))?.unwrap_or(ids.len().saturating_sub(1));
        Ok(AsyncTask::new(LogitsTask { model, ids, from }))
    }

    #[napi(ts_return_type = "Promise<NativePerplexity>")]
    pub fn perplexity(
        &self,
        text: String,
        window: Option<f64>,
        max_tokens: Option<f64>,
    ) -> napi::Result<AsyncTask<PerplexityTask>> {
        let model = self.get()?;
        let options = guarded(|| {
            Ok(PerplexityOptions {
                window: to_usize(window, "window")?.unwrap_or(512),
                max_tokens: to_usize(max_tokens, "maxTokens")?,
            })
        })?;
        Ok(AsyncTask::new(PerplexityTask { model, text, options }))
    }

    /// A generation on a sequence of its own.
    #[napi]
    pub fn generate(&self, prompt: Vec<u32>, options: Option<NativeGenerateOptions>) -> napi::Result<NativeGeneration> {
        let model = self.get()?;
        let generation = guarded(|| Generation::one_shot(model.clone(), &prompt, generate_params(options)?))?;
        Ok(NativeGeneration::new(&model, generation))
    }

    #[napi]
    pub fn create_session(&self, options: Option<NativeSessionOptions>) -> napi::Result<NativeSession> {
        let model = self.get()?;
        let sequence = guarded(|| {
            let o = options.unwrap_or_default();
            let context_shift = match to_usize(o.context_shift_keep, "contextShift.keep")? {
                None => ContextShift::Off,
                Some(keep) => ContextShift::Keep(keep),
            };
            let opts = SequenceOptions { context_size: to_usize(o.context_size, "contextSize")?, context_shift };
            Sequence::new(model.clone(), opts)
        })?;
        Ok(NativeSession { sequence: Mutex::new(Some(Arc::new(Mutex::new(sequence)))) })
    }

    /// Stops the model's generations (their next steps fail with ERR_DISPOSED) and drops this
    /// handle's reference to the weights; they are freed when no generation or session holds
    /// them any more (`lib/` disposes the model's sessions too).
    #[napi]
    pub fn dispose(&self) {
        if let Some(model) = self.model.lock().unwrap_or_else(|e| e.into_inner()).take() {
            model.dispose();
            release_model(model);
        }
    }
}

fn generate_params(o: Option<NativeGenerateOptions>) -> EngineResult<GenerateParams> {
    let Some(o) = o else {
        return Ok(GenerateParams {
            max_tokens: None,
            sampler: SamplerParams::default(),
            stop: vec![],
            ignore_eos: false,
        });
    };
    let d = SamplerParams::default();
    let seed = match o.seed {
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos() as u64),
        Some(x) if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= MAX_SAFE_INTEGER => x as u64,
        Some(x) => {
            return Err(EngineError::invalid_option("seed", format!("must be an integer in [0, 2^53 - 1], got {x}")))
        }
    };
    Ok(GenerateParams {
        max_tokens: to_usize(o.max_tokens, "maxTokens")?,
        sampler: SamplerParams {
            temperature: o.temperature.map_or(d.temperature, |v| v as f32),
            top_k: to_usize(o.top_k, "topK")?.unwrap_or(d.top_k),
            top_p: o.top_p.map_or(d.top_p, |v| v as f32),
            min_p: o.min_p.map_or(d.min_p, |v| v as f32),
            repeat_penalty: o.repeat_penalty.map_or(d.repeat_penalty, |v| v as f32),
            repeat_last_n: to_usize(o.repeat_last_n, "repeatLastN")?.unwrap_or(d.repeat_last_n),
            seed,
        },
        stop: o.stop.unwrap_or_default(),
        ignore_eos: o.ignore_eos.unwrap_or(false),
    })
}

pub struct LogitsTask {
    model: Arc<Model>,
    ids: Vec<u32>,
    from: usize,
}

impl Task for LogitsTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> napi::Result<Vec<f32>> {
        guarded(|| self.model.logits(&self.ids, self.from, &AtomicBool::new(false)))
    }

    fn resolve(&mut self, _env: Env, output: Vec<f32>) -> napi::Result<Float32Array> {
        Ok(Float32Array::new(output))
    }
}

pub struct PerplexityTask {
    model: Arc<Model>,
    text: String,
    options: PerplexityOptions,
}

#[napi(object)]
pub struct NativePerplexity {
    pub perplexity: f64,
    pub mean_nll: f64,
    pub tokens: u32,
}

impl Task for PerplexityTask {
    type Output = Perplexity;
    type JsValue = NativePerplexity;

    fn compute(&mut self) -> napi::Result<Perplexity> {
        guarded(|| self.model.perplexity(&self.text, &self.options, &AtomicBool::new(false)))
    }

    fn resolve(&mut self, _env: Env, p: Perplexity) -> napi::Result<NativePerplexity> {
        Ok(NativePerplexity { perplexity: p.perplexity, mean_nll: p.mean_nll, tokens: p.tokens as u32 })
    }
}

#[napi(object)]
#[derive(Default)]
pub struct NativeSessionOptions {
    pub context_size: Option<f64>,
    /// Context shift: keep this many first tokens and drop old ones after them when full;
    /// absent: no shift (the generation ends with reason "contextFull").
    pub context_shift_keep: Option<f64>,
}

/// A sequence that keeps its tokens and KV cache between generations (and the model they
/// belong to).
#[napi]
pub struct NativeSession {
    /// None once disposed; a generation in flight keeps its own `Arc` until it ends.
    sequence: Mutex<Option<Arc<Mutex<Sequence>>>>,
}

impl Drop for NativeSession {
    fn drop(&mut self) {
        if let Some(sequence) = self.sequence.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            release_sequence(sequence);
        }
    }
}

/// Frees a session's sequence now (its cache and count), and its model as `release_model` does.
fn release_sequence(sequence: Arc<Mutex<Sequence>>) {
    let model = lock(&sequence).model().clone();
    drop(sequence);
    release_model(model);
}

impl NativeSession {
    fn get(&self) -> napi::Result<Arc<Mutex<Sequence>>> {
        lock(&self.sequence).clone().ok_or_else(|| js_error(EngineError::Disposed))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sequence) -> EngineResult<T>) -> napi::Result<T> {
        let sequence = self.get()?;
        guarded(|| f(&mut lock(&sequence)))
    }
}

#[napi]
impl NativeSession {
    /// Tokens held: prompts and generated tokens.
    #[napi(getter)]
    pub fn tokens(&self) -> napi::Result<Vec<u32>> {
        self.with(|s| Ok(s.tokens().to_vec()))
    }

    /// Bytes the evaluated positions take in the KV cache.
    #[napi(getter)]
    pub fn kv_bytes(&self) -> napi::Result<f64> {
        self.with(|s| Ok(s.kv_bytes() as f64))
    }

    #[napi(getter)]
    pub fn context_size(&self) -> napi::Result<u32> {
        self.with(|s| Ok(s.context() as u32))
    }

    /// Keeps the first `n` tokens.
    #[napi]
    pub fn truncate(&self, n: f64) -> napi::Result<()> {
        self.with(|s| {
            let n = to_usize(Some(n), "n")?.unwrap_or(0);
            if s.busy {
                return Err(EngineError::SessionBusy);
            }
            s.truncate(n);
            Ok(())
        })
    }

    #[napi]
    pub fn generate(&self, prompt: Vec<u32>, options: Option<NativeGenerateOptions>) -> napi::Result<NativeGeneration> {
        let sequence = self.get()?;
        let model = lock(&sequence).model().clone();
        let generation = guarded(|| Generation::new(model.clone(), sequence, &prompt, generate_params(options)?))?;
        Ok(NativeGeneration::new(&model, generation))
    }

    /// Frees the session's KV cache (once a generation in flight, if any, has stopped).
    #[napi]
    pub fn dispose(&self) {
        if let Some(sequence) = lock(&self.sequence).take() {
            release_sequence(sequence);
        }
    }
}

#[napi(object)]
pub struct NativeStep {
    /// "token" or "end".
    pub kind: String,
    /// The token id; for "end", the end-of-generation token if one ended it.
    pub id: Option<u32>,
    pub text: String,
    /// For "end": "eog", "maxTokens", "stop" or "contextFull".
    pub reason: Option<String>,
}

impl From<Step> for NativeStep {
    fn from(step: Step) -> Self {
        match step {
            Step::Token { id, text } => NativeStep { kind: "token".into(), id: Some(id), text, reason: None },
            Step::End { text, token, reason } => {
                NativeStep { kind: "end".into(), id: token, text, reason: Some(reason.name().into()) }
            }
        }
    }
}

type StepResolver = Box<dyn FnOnce(Env) -> napi::Result<NativeStep> + Send>;

/// A generation driven one token per `next()` call: each call queues a step with the model's
/// scheduler, which batches it with other sequences' steps and resolves the promise. The
/// scheduler computes at most one step before it is asked for (its look-ahead), which is the
/// backpressure.
#[napi]
pub struct NativeGeneration {
    /// Weak: the generation's own state holds the model while it runs; once it has ended (or
    /// the model was disposed) this handle, waiting for garbage collection, keeps nothing alive.
    model: Weak<Model>,
    inner: Arc<Mutex<Option<Generation>>>,
    cancel: Arc<AtomicBool>,
}

impl NativeGeneration {
    fn new(model: &Arc<Model>, generation: Generation) -> Self {
        NativeGeneration {
            model: Arc::downgrade(model),
            inner: Arc::new(Mutex::new(Some(generation))),
            cancel: Arc::default(),
        }
    }
}

#[napi]
impl NativeGeneration {
    #[napi(ts_return_type = "Promise<NativeStep>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let (deferred, promise) = env.create_deferred::<NativeStep, StepResolver>()?;
        let reply: engine::Reply = Box::new(move |result: EngineResult<Step>| match result {
            Ok(step) => deferred.resolve(Box::new(move |_| Ok(NativeStep::from(step)))),
            Err(e) => deferred.reject(js_error(e)),
        });
        match self.model.upgrade() {
            Some(model) => {
                let job = StepJob { generation: self.inner.clone(), cancel: self.cancel.clone(), reply };
                model.scheduler().submit(job);
            }
            None => reply(Err(EngineError::Disposed)),
        }
        Ok(promise)
    }

    /// Stops the generation: a step in progress finishes its pass, then it and later steps fail
    /// with ABORT_ERR (also while waiting for a sequence slot).
    #[napi]
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(model) = self.model.upgrade() {
            model.scheduler().wake();
        }
    }

    /// Frees the generation's state, and its session for the next generation. A step computed
    /// ahead that the caller did not take is taken back (its token leaves the session); a pass
    /// computing it is stopped within a layer, one shared with other sequences' steps is
    /// waited for.
    #[napi]
    pub fn close(&self) {
        self.cancel();
        let generation = engine::lock(&self.inner).take();
        if let Some(generation) = generation {
            let model = generation.model().clone();
            drop(generation);
            release_model(model);
        }
    }
}

/// Internal, for lifecycle tests (not exported by `lib/`): models loaded and not yet freed.
#[cfg_attr(test, allow(dead_code))]
#[napi]
pub fn live_models() -> u32 {
    engine::live_models() as u32
}

/// Internal, for `npm run bench` (not exported by `lib/`): the memory read bandwidth in bytes/s
/// of each of 8 passes of `threads` threads reading a `bytes`-byte buffer (default 1 GiB).
// napi-derive registers free functions only outside `cfg(test)`, so the test build sees them unused.
#[cfg_attr(test, allow(dead_code))]
#[napi(ts_return_type = "Promise<Array<number>>")]
pub fn measure_read_bandwidth(threads: f64, bytes: Option<f64>) -> napi::Result<AsyncTask<BandwidthTask>> {
    let (threads, bytes) = guarded(|| {
        let threads = to_usize(Some(threads), "threads")?.unwrap_or(1);
        Ok((threads, to_usize(bytes, "bytes")?.unwrap_or(bandwidth::DEFAULT_BYTES)))
    })?;
    Ok(AsyncTask::new(BandwidthTask { threads, bytes }))
}

#[cfg_attr(test, allow(dead_code))]
pub struct BandwidthTask {
    threads: usize,
    bytes: usize,
}

impl Task for BandwidthTask {
    type Output = Vec<f64>;
    type JsValue = Vec<f64>;

    fn compute(&mut self) -> napi::Result<Vec<f64>> {
        guarded(|| bandwidth::measure_read_bandwidth(self.threads, self.bytes, bandwidth::PASSES))
    }

    fn resolve(&mut self, _env: Env, bytes_per_second: Vec<f64>) -> napi::Result<Vec<f64>> {
        Ok(bytes_per_second)
    }
}
