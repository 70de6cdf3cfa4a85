//! Loading a model: options, validation, the weight source (resident or paged) and the
//! tokenizer's metadata; and the byte sizes `memoryBudget` accepts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};
use crate::model::config::ModelConfig;
use crate::model::kv_cache::KvType;
use crate::model::weights::{CopyPlan, CopyScope, ResidentWeights, TensorTable, WeightSource};
use crate::pager::{EvictionPolicy, LoadMethod, PagedWeights, PagerOptions};
use crate::pool::ComputePool;
use crate::tokenizer::{Tokenizer, VocabSpec};

use super::Model;

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
    /// Sequences decoded at once; defaults to DEFAULT_MAX_SEQUENCES. More wait for a slot.
    pub max_sequences: Option<usize>,
    /// How KV caches store keys and values.
    pub kv_type: KvType,
    /// Leave the file's page cache as it is, even when it holds the file in 4 KiB pages (see
    /// `MappedFile::mapped_in_small_pages`); by default the file is then read again once. Only
    /// where weights are read from the mapping (paged, or resident but for a copy of everything
    /// made during the load).
    pub keep_page_cache: bool,
    /// `Some(true)`: copy all resident weights into the process's memory during the load
    /// (`ResidentWeights::copied`); `Some(false)`: serve them from the mapped file. None: serve
    /// them from the file, and copy the matrices the kernels have a faster layout for
    /// (`CopyScope::Rearranged`), where that decodes faster (`TensorTable::copy_speeds_decode`),
    /// on a thread of its own after the load (`ResidentWeights::copying`). Paged weights always
    /// come from the file.
    pub copy_weights: Option<bool>,
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

/// Sequences whose generations are decoded together by default: llama.cpp's server default of
/// parallel slots is 4 to 8, and more streams than this share a 2-8 core CPU too thinly.
pub const DEFAULT_MAX_SEQUENCES: usize = 8;

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
    /// How KV caches store keys and values.
    pub kv_type: KvType,
    /// Sequences decoded at once.
    pub max_sequences: usize,
    /// The Jinja chat template the file carries (`tokenizer.chat_template`), if any.
    pub chat_template: Option<String>,
    /// The smallest `memory_budget` the model can be paged in: its largest layer or output head.
    pub min_budget_bytes: u64,
}

/// What loading learns from the file before reading any weight.
struct Opened {
    file: Arc<GgufFile>,
    config: ModelConfig,
    tokenizer: Tokenizer,
    table: TensorTable,
    info: ModelInfo,
    /// Compute threads: the option, or the default for how the weights are held.
    threads: usize,
    /// CPUs this process may run on.
    cores: usize,
}

impl Model {
    /// What `load` with these options would report, from the file's metadata and tensor list
    /// alone: no weight is read, so it takes the same time for a 100 MB and a 40 GB model.
    /// Also returns the compute threads `load` would start.
    pub fn inspect(path: &Path, opts: &LoadOptions) -> Result<(ModelInfo, usize)> {
        let opened = open(path, opts)?;
        Ok((opened.info, opened.threads))
    }

    /// Opens, validates and prefaults the model. `progress(loaded, total)` is called as weights
    /// are read in; setting `cancel` stops the load with `Error::Aborted`.
    pub fn load(
        path: &Path,
        opts: &LoadOptions,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Model> {
        let Opened { file, config, tokenizer, table, info, threads, cores } = open(path, opts)?;
        let (paged, weight_bytes) = (info.paged, info.weight_bytes);
        let (start, len) = table.span();
        // Weights mapped 4 KiB at a time decode 20-30% slower, and page in 2.5-3x
        // slower, than in 2 MiB pages: a file cached in small folios (read in scattered pieces,
        // or partly paged out and faulted back in) is read again once, and the progress covers
        // that read too.
        let mapped = file.mapped();
        // A copy reads the file once anyway, into pages of its own. It is not made where the
        // file is over half the available memory: the kernel can evict mapped pages when
        // memory runs short, but not a copy.
        let fits_memory = mapped.fits_half_available_memory();
        let copy = match opts.copy_weights {
            _ if paged || !fits_memory => None,
            Some(all) => all.then_some(CopyScope::All),
            None => table.copy_speeds_decode().then_some(CopyScope::Rearranged),
        };
        let reread = copy != Some(CopyScope::All)
            && !opts.keep_page_cache
            && fits_memory
            && mapped.mapped_in_small_pages(start, len);
        let reread_bytes = if reread { file.file_len() } else { 0 };
        if reread {
            mapped.reread_into_page_cache(cancel, |done| progress(done, reread_bytes + len))?;
        }
        let mut progress = |done: u64, total: u64| progress(reread_bytes + done, reread_bytes + total);
        let weights: Box<dyn WeightSource> = if paged {
            let options = PagerOptions {
                budget_bytes: opts.memory_budget.unwrap_or(weight_bytes),
                prefetch: opts.prefetch_layers.unwrap_or(DEFAULT_PREFETCH),
                method: opts.paging_method.unwrap_or(LoadMethod::DEFAULT),
                policy: opts.eviction_policy.unwrap_or(EvictionPolicy::FixedAndStream),
            };
            Box::new(PagedWeights::new(file, table, options, cancel, &mut progress)?)
        } else {
            // The tensors read from the mapping are faulted in first, then a copy of everything
            // is made: progress counts both. The default copy is made after the load, and the
            // tensors it holds are read from the file, faulted in here, until it is.
            let plan = copy.map(|scope| table.copy_plan(scope));
            let whole_copy = plan.as_ref().filter(|_| copy == Some(CopyScope::All));
            let ranges = table.mapped_ranges(whole_copy);
            let mapped_bytes: u64 = ranges.iter().map(|&(_, n)| n).sum();
            let total = mapped_bytes + whole_copy.map_or(0, CopyPlan::bytes);
            progress(0, total);
            let mut done = 0;
            for (offset, n) in ranges {
                file.mapped().prefault(offset, n, cancel, |part| progress(done + part, total))?;
                done += n;
            }
            match plan {
                Some(plan) if copy == Some(CopyScope::All) => {
                    let mut progress = |part: u64, _| progress(mapped_bytes + part, total);
                    Box::new(ResidentWeights::copied(file, table, &plan, cancel, &mut progress)?)
                }
                Some(plan) => Box::new(ResidentWeights::copying(file, table, &plan, threads >= cores)?),
                None => Box::new(ResidentWeights::mapped(file, table)),
            }
        };
        Ok(Model::new(config, tokenizer, info, weights, ComputePool::new(threads)))
    }
}

#[cfg(test)]
impl Model {
    /// A model loaded by default whose copy stopped once `bytes` of it were made
    /// (`ResidentWeights::partly_copied`): the state forward passes run in while it is made.
    pub(crate) fn load_partly_copied(path: &Path, bytes: u64) -> Result<Model> {
        let Opened { file, config, tokenizer, table, info, threads, .. } = open(path, &LoadOptions::default())?;
        let plan = table.copy_plan(CopyScope::Rearranged);
        let weights = ResidentWeights::partly_copied(file, table, &plan, bytes)?;
        Ok(Model::new(config, tokenizer, info, Box::new(weights), ComputePool::new(threads)))
    }
}

/// Parses and validates the file and the options, up to (not including) reading weights.
fn open(path: &Path, opts: &LoadOptions) -> Result<Opened> {
    let max_sequences = match opts.max_sequences {
        Some(0) => return Err(Error::invalid_option("maxSequences", "must be at least 1")),
        Some(n) if n > 256 => return Err(Error::invalid_option("maxSequences", format!("{n} is more than 256"))),
        n => n.unwrap_or(DEFAULT_MAX_SEQUENCES),
    };
    let threads = match opts.threads {
        Some(0) => return Err(Error::invalid_option("threads", "must be at least 1")),
        Some(n) if n > 1024 => return Err(Error::invalid_option("threads", format!("{n} is more than 1024"))),
        n => n,
    };
    let mut file = GgufFile::open(path)?;
    let mut config = ModelConfig::from_gguf(&file)?;
    let embd = file.tensor_info("token_embd.weight").ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
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
        chat_template: file.get_str("tokenizer.chat_template")?.map(str::to_owned),
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
        kv_cache_bytes: opts.kv_type.bytes_per_position(&config) * context_size as u64,
        kv_type: opts.kv_type,
        max_sequences,
        min_budget_bytes: crate::pager::smallest_budget(&table),
    };
    opts.kv_type.check(&config)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let streams = paged && opts.memory_budget.is_some_and(|b| b < weight_bytes);
    // By default compute on every core, except one left to the prefetch thread when layers
    // stream through memory every token: mapping them in is CPU work too, and sharing cores
    // with it costs more than one compute thread gives (Qwen2.5-1.5B at half its weights,
    // 2 cores: 12.9 tok/s with 2 compute threads, 15.2 with 1).
    let threads = threads.unwrap_or(if streams { (cores - 1).max(1) } else { cores });
    // The vocabulary's strings, parsed from the file, are freed now that the tokenizer has
    // built its tables: their pages go back to the OS.
    crate::mapping::trim_heap();
    Ok(Opened { file, config, tokenizer, table, info, threads, cores })
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

/// The tokenizer's part of the metadata. Its token and merge lists are moved out of `g`, not
/// copied (see [`GgufFile::take_array`]).
pub(super) fn vocab_spec(g: &mut GgufFile) -> Result<VocabSpec> {
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
}
