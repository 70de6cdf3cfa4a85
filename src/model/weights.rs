//! Where the forward pass gets its weights: the `WeightSource` trait is the single access point,
//! so the resident (memory-mapped) source here and the pager's source feed one forward pass.
//!
//! Tensor names (`blk.{i}.*`) are resolved and shape-checked once, in `TensorTable::resolve`.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::mapping::{BufferWriter, PublishedBuffer};
use crate::model::config::{Architecture, ModelConfig};
use crate::quant;
use crate::tensor::{GgmlType, SplitMatrix, TensorView, WeightLayout};

/// Defines, from one list of a block's tensors, `LayerWeights` (views of them), `LayerTensors`
/// (their infos in the file) and the conversions between them, so that the list, and the order
/// `all`/`all_mut` visit it in (which the pager packs layers by), is written once.
macro_rules! layer_tensors {
    (
        required { $($(#[$rdoc:meta])* $req:ident,)* }
        optional { $($(#[$odoc:meta])* $opt:ident,)* }
    ) => {
        /// One transformer block's weights. Matrices are (rows = outputs) x (cols = inputs).
        /// Optional tensors are present only in the architectures that use them.
        #[derive(Clone, Copy)]
        pub struct LayerWeights<'a> {
            $($(#[$rdoc])* pub $req: TensorView<'a>,)*
            $($(#[$odoc])* pub $opt: Option<TensorView<'a>>,)*
        }

        /// Tensor infos for one block, resolved from names; fields mirror `LayerWeights`.
        #[derive(Clone, Debug)]
        pub struct LayerTensors {
            $(pub $req: TensorInfo,)*
            $(pub $opt: Option<TensorInfo>,)*
        }

        impl LayerTensors {
            /// Views of every tensor, with offsets taken as positions in `bytes`, or in `copy`
            /// for the tensors copied at load.
            pub fn view<'b>(&self, bytes: &'b [u8], copy: &'b [u8]) -> LayerWeights<'b> {
                LayerWeights {
                    $($req: view(bytes, copy, &self.$req),)*
                    $($opt: self.$opt.as_ref().map(|t| view(bytes, copy, t)),)*
                }
            }

            /// Every tensor, required ones first, in a fixed order that `all_mut` follows too.
            pub fn all(&self) -> impl Iterator<Item = &TensorInfo> {
                [$(&self.$req,)*].into_iter().chain([$(&self.$opt,)*].into_iter().flatten())
            }

            pub fn all_mut(&mut self) -> impl Iterator<Item = &mut TensorInfo> {
                [$(&mut self.$req,)*].into_iter().chain([$(&mut self.$opt,)*].into_iter().flatten())
            }
        }
    };
}

layer_tensors! {
    required {
        /// (n_embd)
        attn_norm,
        /// (n_head * head_dim, n_embd)
        wq,
        /// (n_head_kv * head_dim, n_embd)
        wk,
        /// (n_head_kv * head_dim, n_embd)
        wv,
        /// (n_embd, n_head * head_dim)
        wo,
        /// (n_embd)
        ffn_norm,
        /// (n_ff, n_embd)
        w_gate,
        /// (n_ff, n_embd)
        w_up,
        /// (n_embd, n_ff)
        w_down,
    }
    optional {
        /// (n_head * head_dim) qwen2
        bq,
        /// (n_head_kv * head_dim) qwen2
        bk,
        /// (n_head_kv * head_dim) qwen2
        bv,
        /// (n_embd)
        bo,
        /// (head_dim) gemma3, per head
        q_norm,
        /// (head_dim) gemma3, per head
        k_norm,
        /// (n_embd) gemma3
        post_attn_norm,
        /// (n_embd) gemma3
        post_ffn_norm,
    }
}

/// The output head: final norm and vocabulary projection.
#[derive(Clone, Copy)]
pub struct HeadWeights<'a> {
    pub output_norm: TensorView<'a>, // (n_embd)
    pub output: SplitMatrix<'a>,     // (n_vocab, n_embd); token_embd itself when tied
}

/// The bytes a guard's tensor offsets point into: the whole mapped file, or a buffer the pager
/// filled with one layer's tensors.
pub enum GuardBytes<'a> {
    Borrowed(&'a [u8]),
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>),
}

impl GuardBytes<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            GuardBytes::Borrowed(b) => b,
            GuardBytes::Shared(b) => (**b).as_ref(),
        }
    }
}

/// One layer's weights, kept valid (resident, not evicted) for as long as the guard lives.
/// `weights()` borrows from the guard, so no view can outlive what keeps its bytes alive.
pub struct LayerGuard<'a> {
    bytes: GuardBytes<'a>,
    copy: &'a [u8],
    tensors: Cow<'a, LayerTensors>,
    _pin: Option<Box<dyn Send + 'a>>,
}

impl<'a> LayerGuard<'a> {
    /// `tensors` offsets are positions in `bytes`; `pin` is dropped with the guard.
    pub fn new(bytes: GuardBytes<'a>, tensors: Cow<'a, LayerTensors>, pin: Option<Box<dyn Send + 'a>>) -> Self {
        LayerGuard { bytes, copy: &[], tensors, _pin: pin }
    }

    /// The copy the offsets of tensors marked `copied` are positions in.
    fn with_copy(self, copy: &'a [u8]) -> Self {
        LayerGuard { copy, ..self }
    }

    pub fn weights(&self) -> LayerWeights<'_> {
        self.tensors.view(self.bytes.as_slice(), self.copy)
    }
}

/// The output head's weights, kept valid while the guard lives.
pub struct HeadGuard<'a> {
    bytes: GuardBytes<'a>,
    copy: &'a [u8],
    tensors: &'a HeadTensors,
    /// The output matrix's first rows as a copy being made holds them (its info there, and how
    /// many rows), read from there instead of from `bytes`.
    copied_rows: Option<(&'a TensorInfo, usize)>,
    _pin: Option<Box<dyn Send + 'a>>,
}

impl<'a> HeadGuard<'a> {
    pub fn new(bytes: GuardBytes<'a>, tensors: &'a HeadTensors, pin: Option<Box<dyn Send + 'a>>) -> Self {
        HeadGuard { bytes, copy: &[], tensors, copied_rows: None, _pin: pin }
    }

    /// As [`LayerGuard::with_copy`].
    fn with_copy(self, copy: &'a [u8]) -> Self {
        HeadGuard { copy, ..self }
    }

    /// Reads the output matrix's first `rows` rows from `copy`, where `copied` (the matrix's
    /// info in it) places them, and the others as before.
    fn with_copied_rows(self, copy: &'a [u8], copied: &'a TensorInfo, rows: usize) -> Self {
        HeadGuard { copy, copied_rows: Some((copied, rows)), ..self }
    }

    pub fn weights(&self) -> HeadWeights<'_> {
        let (b, copy, output) = (self.bytes.as_slice(), self.copy, &self.tensors.output);
        let output = match self.copied_rows {
            None => SplitMatrix::whole(view(b, copy, output)),
            Some((copied, rows)) => SplitMatrix {
                first: view(b, copy, &matrix_rows(copied, 0..rows)),
                rest: Some(view(b, copy, &matrix_rows(output, rows..output.dims[1] as usize))),
            },
        };
        HeadWeights { output_norm: view(b, copy, &self.tensors.output_norm), output }
    }
}

/// Rows `rows` of matrix `t`, as a tensor of their own (whole groups of eight rows where `t` is
/// interleaved).
fn matrix_rows(t: &TensorInfo, rows: std::ops::Range<usize>) -> TensorInfo {
    let row_bytes = t.size / t.dims[1];
    let mut part = t.clone();
    part.offset += rows.start as u64 * row_bytes;
    part.size = rows.len() as u64 * row_bytes;
    part.dims[1] = rows.len() as u64;
    part
}

/// The single access point of the forward pass to weights, resident or paged.
pub trait WeightSource: Send + Sync {
    fn layer(&self, index: usize) -> Result<LayerGuard<'_>>;
    fn head(&self) -> Result<HeadGuard<'_>>;
    /// Row `token` of token_embd, dequantized into `out` (n_embd): embeddings are read a row per
    /// token, so they never need to be resident as a whole.
    fn embed(&self, token: u32, out: &mut [f32]) -> Result<()>;
    /// No forward pass is coming soon (a generation stopped): drop work queued ahead of it.
    fn idle(&self) {}
    /// `Err(ModelFileChanged)` once a read of the mapped file found it cut short: whatever was
    /// computed from the mapping since is not the model's.
    fn check_file(&self) -> Result<()>;
    fn stats(&self) -> WeightStats;
}

/// What `model.stats()` reports about weight residency.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightStats {
    pub paged: bool,
    /// Resident weights, all or some (`CopyScope`), are a copy in the process's memory
    /// (`ResidentWeights::copied`), not the mapped file.
    pub copied: bool,
    /// Bytes of that copy made so far.
    pub copied_bytes: u64,
    /// The copy is being made, on a thread of its own after the load
    /// (`ResidentWeights::copying`).
    pub copying: bool,
    pub budget_bytes: u64,
    pub resident_bytes: u64,
    pub peak_resident_bytes: u64,
    /// Layers (or the output head) read from the file, by the forward pass or the prefetch thread.
    pub layer_loads: u64,
    /// Layers the forward pass found resident.
    pub layer_hits: u64,
    /// Of those, layers the prefetch thread had loaded.
    pub prefetch_hits: u64,
    /// Time the forward pass waited for layers.
    pub stall_ms: f64,
    pub bytes_read: u64,
}

/// `t`'s data: at its offset in `copy` where it was copied at load, in `bytes` otherwise.
fn view<'b>(bytes: &'b [u8], copy: &'b [u8], t: &TensorInfo) -> TensorView<'b> {
    let bytes = if t.copied { copy } else { bytes };
    let start = t.offset as usize;
    TensorView {
        ty: t.ty,
        layout: t.layout,
        dims: t.dims,
        n_dims: t.n_dims,
        data: &bytes[start..start + t.size as usize],
    }
}

/// Tensor infos of the output head.
#[derive(Clone, Debug)]
pub struct HeadTensors {
    pub output_norm: TensorInfo,
    pub output: TensorInfo,
}

impl HeadTensors {
    pub fn all(&self) -> impl Iterator<Item = &TensorInfo> {
        [&self.output_norm, &self.output].into_iter()
    }

    pub fn all_mut(&mut self) -> impl Iterator<Item = &mut TensorInfo> {
        [&mut self.output_norm, &mut self.output].into_iter()
    }
}

#[derive(Clone, Debug)]
pub struct TensorTable {
    pub token_embd: TensorInfo,
    pub head: HeadTensors,
    pub rope_freqs: Option<TensorInfo>,
    pub layers: Vec<LayerTensors>,
}

impl TensorTable {
    /// Finds every tensor the architecture needs, checks its shape against the config and its
    /// type against what the kernels support.
    pub fn resolve(g: &GgufFile, c: &ModelConfig) -> Result<Self> {
        let check = |name: &str, info: &TensorInfo, shape: &[usize]| -> Result<TensorInfo> {
            let expected: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            if info.shape() != expected {
                return Err(Error::TensorShape { name: name.to_owned(), expected, found: info.shape() });
            }
            if !quant::is_supported(info.ty) {
                return Err(Error::UnsupportedTensorType {
                    tensor: name.to_owned(),
                    type_name: info.ty.name().to_owned(),
                });
            }
            Ok(info.clone())
        };
        let opt = |name: String, shape: &[usize]| -> Result<Option<TensorInfo>> {
            g.tensor_info(&name).map(|info| check(&name, info, shape)).transpose()
        };
        let get = |name: String, shape: &[usize]| -> Result<TensorInfo> {
            opt(name.clone(), shape)?.ok_or(Error::MissingTensor(name))
        };
        let (d, v, ff, q, kv, hd) = (c.n_embd, c.n_vocab, c.n_ff, c.q_dim(), c.kv_dim(), c.head_dim);
        let gemma = c.arch == Architecture::Gemma3;
        let token_embd = get("token_embd.weight".into(), &[d, v])?;
        let output = opt("output.weight".into(), &[d, v])?.unwrap_or_else(|| token_embd.clone());
        let layers = (0..c.n_layer)
            .map(|i| {
                let name = |n: &str, kind: &str| format!("blk.{i}.{n}.{kind}");
                let t = |n: &str, shape: &[usize]| get(name(n, "weight"), shape);
                let bias = |n: &str, len: usize| opt(name(n, "bias"), &[len]);
                // Gemma 3 requires its extra norms; elsewhere they are not looked for.
                let gemma_norm = |n: &str, len: usize| if gemma { t(n, &[len]).map(Some) } else { Ok(None) };
                Ok(LayerTensors {
                    attn_norm: t("attn_norm", &[d])?,
                    wq: t("attn_q", &[d, q])?,
                    wk: t("attn_k", &[d, kv])?,
                    wv: t("attn_v", &[d, kv])?,
                    wo: t("attn_output", &[q, d])?,
                    bq: bias("attn_q", q)?,
                    bk: bias("attn_k", kv)?,
                    bv: bias("attn_v", kv)?,
                    bo: bias("attn_output", d)?,
                    q_norm: gemma_norm("attn_q_norm", hd)?,
                    k_norm: gemma_norm("attn_k_norm", hd)?,
                    post_attn_norm: gemma_norm("post_attention_norm", d)?,
                    ffn_norm: t("ffn_norm", &[d])?,
                    w_gate: t("ffn_gate", &[d, ff])?,
                    w_up: t("ffn_up", &[d, ff])?,
                    w_down: t("ffn_down", &[ff, d])?,
                    post_ffn_norm: gemma_norm("post_ffw_norm", d)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(TensorTable {
            token_embd,
            head: HeadTensors { output_norm: get("output_norm.weight".into(), &[d])?, output },
            rope_freqs: opt("rope_freqs.weight".into(), &[c.rope_dim / 2])?,
            layers,
        })
    }

    /// Bytes of all weights.
    pub fn total_bytes(&self) -> u64 {
        let globals = self.head.all().chain([&self.token_embd]).chain(&self.rope_freqs);
        let mut seen = std::collections::HashSet::new();
        self.layers
            .iter()
            .flat_map(LayerTensors::all)
            .chain(globals)
            .filter(|t| seen.insert(t.offset))
            .map(|t| t.size)
            .sum()
    }

    /// Every tensor entry (a tensor two entries share, such as a tied output, comes twice).
    fn for_each_mut(&mut self, mut f: impl FnMut(&mut TensorInfo)) {
        let globals = [&mut self.token_embd, &mut self.head.output_norm, &mut self.head.output];
        globals
            .into_iter()
            .chain(&mut self.rope_freqs)
            .chain(self.layers.iter_mut().flat_map(LayerTensors::all_mut))
            .for_each(&mut f);
    }

    /// The weight matrices the forward pass multiplies by: every layer's and the output head's
    /// (which may be token_embd itself).
    fn matrices(&self) -> impl Iterator<Item = &TensorInfo> {
        let layers = self.layers.iter().flat_map(LayerTensors::all);
        layers.chain([&self.head.output]).filter(|t| t.n_dims == 2)
    }

    /// File offsets of the matrices a copy of `scope` rearranges for the active kernels
    /// (`quant::interleave_rows8`): those with a kernel for that layout and whole groups of
    /// eight rows. A copy of everything leaves token_embd (a tied output head with it) as it is,
    /// as embeddings read its rows one at a time; a copy of the rearranged matrices holds a tied
    /// output head rearranged, and embeddings take their rows back out of it
    /// (`quant::file_layout_row`) once it is made, token_embd's place in the file until then.
    fn rearranged_offsets(&self, scope: CopyScope) -> std::collections::HashSet<u64> {
        let embeddings = self.token_embd.offset;
        let rearranged =
            |t: &&TensorInfo| rearrangement(t).is_some() && (scope == CopyScope::Rearranged || t.offset != embeddings);
        self.matrices().filter(rearranged).map(|t| t.offset).collect()
    }

    /// Whether the default copy (`CopyScope::Rearranged`) decodes faster than the mapped file:
    /// whether it rearranges any matrix. Every rearranged layout does, one sequence at one
    /// thread included (Zen 4, AVX-512 VNNI, decode step at 128 positions, alternating runs):
    /// Qwen2.5-1.5B (Q4_K) 40.8-41.4 ms against 45.7-46.8 mapped, and 45.1-46.6 from a copy
    /// with Q4_K left in the file's layout. Through `generate`, one thread: SmolLM2 (Q4_1)
    /// 6-9% more tokens a second, Qwen2.5-0.5B (mostly Q5_0) 5-8%. What `copy_weights`'
    /// default weighs.
    pub fn copy_speeds_decode(&self) -> bool {
        !self.rearranged_offsets(CopyScope::Rearranged).is_empty()
    }

    /// What a copy of `scope` holds, where, and which of it is rearranged: each tensor placed
    /// in the order the forward pass reads them (layer by layer, each as `LayerTensors::all`
    /// lists it, then the output head, then token_embd and rope_freqs), at a multiple of 64
    /// bytes, a tensor two entries share once. In that order the decode kernels' prefetches
    /// past a matrix's end, and the hardware's, run into the matrix read next instead of
    /// whatever the file put after it.
    pub fn copy_plan(&self, scope: CopyScope) -> CopyPlan {
        let layers = self.layers.iter().flat_map(LayerTensors::all);
        let globals = self.head.all().chain([&self.token_embd]).chain(&self.rope_freqs);
        let rearranged = self.rearranged_offsets(scope);
        let embeddings = self.token_embd.offset;
        let held = |t: &&TensorInfo| match scope {
            CopyScope::All => true,
            CopyScope::Rearranged => {
                rearranged.contains(&t.offset) || (t.size < SMALL_TENSOR_BYTES && t.offset != embeddings)
            }
        };
        let (mut places, mut end) = (Vec::new(), 0u64);
        let mut seen = std::collections::HashSet::new();
        for t in layers.chain(globals).filter(held) {
            if seen.insert(t.offset) {
                let rearrange = rearranged.contains(&t.offset).then_some((t.ty, t.dims[0] as usize));
                places.push(CopyPlace { from: t.offset, to: end, size: t.size, rearrange });
                end = (end + t.size).next_multiple_of(64);
            }
        }
        CopyPlan { scope, places, len: end }
    }

    /// File ranges the forward pass reads the tensors not in `copy` from (all of them without
    /// one), in file order, adjacent ones merged: what a load prefaults. token_embd is left out
    /// where the copy holds the output head, as only its rows are read then.
    pub fn mapped_ranges(&self, copy: Option<&CopyPlan>) -> Vec<(u64, u64)> {
        let held: std::collections::HashSet<u64> = copy.iter().flat_map(|c| &c.places).map(|p| p.from).collect();
        let embeddings_read_whole = !held.contains(&self.head.output.offset);
        let layers = self.layers.iter().flat_map(LayerTensors::all);
        let globals = self.head.all().chain(embeddings_read_whole.then_some(&self.token_embd)).chain(&self.rope_freqs);
        merged_spans(layers.chain(globals).filter(|t| !held.contains(&t.offset)).map(|t| (t.offset, t.size)))
    }

    /// Each part a forward pass reads in turn, its tensors as `LayerTensors::all` and
    /// `HeadTensors::all` list them: every layer, then the output head (the pager's units).
    pub(crate) fn parts(&self) -> impl Iterator<Item = Vec<&TensorInfo>> {
        let layers = self.layers.iter().map(|l| l.all().collect());
        layers.chain([self.head.all().collect()])
    }

    /// File range covered by the weights, from the first tensor to the last: where a load
    /// probes how the page cache holds them.
    pub fn span(&self) -> (u64, u64) {
        let globals = self.head.all().chain([&self.token_embd]).chain(&self.rope_freqs);
        let all = self.layers.iter().flat_map(LayerTensors::all).chain(globals);
        let (lo, hi) = all.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t.offset), hi.max(t.offset + t.size)));
        (lo, hi.saturating_sub(lo))
    }
}

/// How a copy of matrix `t` is rearranged for the active kernels (`quant::interleave_rows8`),
/// if it is: where they have an interleaved layout for its type and it has whole groups of
/// eight rows. The type, and the row length.
pub(crate) fn rearrangement(t: &TensorInfo) -> Option<(GgmlType, usize)> {
    let matrix = t.n_dims == 2 && t.dims[1].is_multiple_of(quant::INTERLEAVED_ROWS as u64);
    (matrix && quant::has_interleaved_kernel(t.ty)).then_some((t.ty, t.dims[0] as usize))
}

/// A copy of resident weights laid out (`TensorTable::copy_plan`): its places, and its length.
pub struct CopyPlan {
    scope: CopyScope,
    places: Vec<CopyPlace>,
    len: u64,
}

/// One tensor's place in a copy.
#[derive(Clone)]
struct CopyPlace {
    /// Offset in the file.
    from: u64,
    /// Offset in the copy.
    to: u64,
    size: u64,
    /// The type and row length to rearrange it by (`quant::interleave_rows8`), if it is.
    rearrange: Option<(GgmlType, usize)>,
}

impl CopyPlan {
    /// Bytes of the tensors the copy holds.
    pub fn bytes(&self) -> u64 {
        self.places.iter().map(|p| p.size).sum()
    }
}

/// What a copy of resident weights holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyScope {
    /// Every tensor: nothing is read from the file after the load.
    All,
    /// Only the matrices the active kernels have a rearranged layout for, a tied output head
    /// included, and the tensors under `SMALL_TENSOR_BYTES` but token_embd; the other matrices
    /// are read from the mapped file.
    Rearranged,
}

/// Tensors below this size (norms, biases, most matrices) are copied along with the rearranged
/// matrices. Read from the file, a tensor maps the 2 MiB pages its ends lie in, shared with its
/// neighbours in the file, whose copied bytes then count twice in the process's resident
/// memory; only tensors for which that is a small part stay in the file (output heads,
/// token_embd, large models' biggest matrices). RSS after 100 tokens: Qwen2.5-0.5B 548 MB, and
/// 565-570 with a 2 MiB limit; Qwen2.5-1.5B 1147 MB, and 1166-1170.
const SMALL_TENSOR_BYTES: u64 = 32 << 20;

/// Resident weights: every tensor available at all times, from the mapped file, from a copy,
/// or some from each (`TensorInfo::copied` says which).
pub struct ResidentWeights {
    file: Arc<GgufFile>,
    /// Offsets are positions in the file.
    table: TensorTable,
    copy: Option<WeightsCopy>,
}

/// A copy of resident weights as a `CopyPlan` lays it out, made during the load or on a thread
/// of its own after it. Each part of the model (a layer, or the output head after the layers)
/// is read from the file until the copy has reached its end, and from the copy after: both
/// give the same results bit for bit, so a forward pass may read some layers from each.
struct WeightsCopy {
    buffer: Arc<PublishedBuffer>,
    /// The table once the copy is made: offsets are positions in `buffer` for the tensors
    /// marked `copied`, in the file for the others.
    table: TensorTable,
    /// Per part, where its last copied tensor ends in `buffer`.
    ends: Vec<usize>,
    /// Per part, the forward passes reading it from the file: the copying thread waits them
    /// out before giving the file's pages back.
    file_readers: Arc<[AtomicUsize]>,
    /// Whether any tensor is read from the file once the copy is made.
    reads_file: bool,
    /// The thread making the copy and the flag that stops it; None where the load made it.
    thread: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    /// The forward passes' reads while the copy is made.
    passes: Arc<PassActivity>,
}

/// Whether forward passes are reading weights, for a copy that waits for the gaps between them
/// where it would otherwise take a core from them.
struct PassActivity {
    /// Parts being read (guards alive).
    reading: AtomicUsize,
    epoch: Instant,
    /// When the last read ended, in ns from `epoch`.
    last_read_ns: AtomicU64,
}

impl PassActivity {
    /// Whether no part has been read for `gap`.
    fn quiet_for(&self, gap: Duration) -> bool {
        // Saturating: a read may end, and be stamped, after this clock reading.
        let since = (self.epoch.elapsed().as_nanos() as u64).saturating_sub(self.last_read_ns.load(Ordering::Relaxed));
        self.reading.load(Ordering::Relaxed) == 0 && since >= gap.as_nanos() as u64
    }
}

/// A pass reading a part while the copy is made: counted in `PassActivity`, and among the
/// part's file readers where it reads the file.
struct PartRead<'a> {
    passes: &'a PassActivity,
    file_readers: Option<&'a AtomicUsize>,
}

impl Drop for PartRead<'_> {
    fn drop(&mut self) {
        if let Some(readers) = self.file_readers {
            readers.fetch_sub(1, Ordering::SeqCst);
        }
        let passes = self.passes;
        passes.last_read_ns.fetch_max(passes.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        passes.reading.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WeightsCopy {
    /// Layer `index` for a pass that reads it from the file while the copy is in it
    /// (`published` bytes made): the tensors the copy has made are read from there, as the
    /// copying thread may have given back their pages of the file already; mapped again by the
    /// pass, they would be held twice. Qwen2.5-1.5B, one thread, a prompt evaluated as the copy
    /// is made: a pass that caught up with the copy inside a layer took the resident set 24 MB
    /// over its plateau reading the layer from the file.
    fn layer_so_far<'t>(&'t self, in_file: &'t LayerTensors, index: usize, published: usize) -> Cow<'t, LayerTensors> {
        let in_copy = &self.table.layers[index];
        let made = |c: &TensorInfo| c.copied && (c.offset + c.size) as usize <= published;
        if !in_copy.all().any(made) {
            return Cow::Borrowed(in_file);
        }
        let mut mixed = in_file.clone();
        // `all_mut` visits the tensors in `all`'s order, and both tables have the same ones.
        for (t, c) in mixed.all_mut().zip(in_copy.all()) {
            if made(c) {
                *t = c.clone();
            }
        }
        Cow::Owned(mixed)
    }

    /// Rows of the output matrix the copy holds once `published` bytes of it are made: whole
    /// groups of eight (none where it does not hold the matrix).
    fn output_rows_made(&self, published: usize) -> usize {
        let output = &self.table.head.output;
        if !output.copied {
            return 0;
        }
        let (rows, row_bytes) = (output.dims[1] as usize, (output.size / output.dims[1]) as usize);
        let made = published.saturating_sub(output.offset as usize) / row_bytes;
        (made / quant::INTERLEAVED_ROWS * quant::INTERLEAVED_ROWS).min(rows)
    }
}

impl Drop for WeightsCopy {
    fn drop(&mut self) {
        if let Some((cancel, thread)) = self.thread.take() {
            cancel.store(true, Ordering::Relaxed);
            // It stops within one piece of the copy (`COPY_PIECE`), or at once where it waits.
            let _ = thread.join();
        }
    }
}

/// Fills a copy's buffer place by place, publishing each, and gives back the mapped file's
/// pages of each part the forward pass reads from the copy from then on.
struct CopyJob {
    file: Arc<GgufFile>,
    writer: BufferWriter,
    places: Vec<CopyPlace>,
    /// Per place, the part (a layer, or the head) it belongs to, if any: a part a pass reads
    /// from the file is not copied meanwhile (`CopyJob::run`).
    place_parts: Vec<Option<usize>>,
    /// The parts whose file pages are given back once the copy has reached them.
    releases: Vec<PartRelease>,
    file_readers: Arc<[AtomicUsize]>,
    /// Where set, each piece of the copy waits for a gap between forward passes.
    between_passes: Option<Arc<PassActivity>>,
    /// Bytes per piece: `COPY_PIECE`, less in tests that stop a copy inside a tensor.
    piece: usize,
}

/// Bytes the copy makes between two looks at whether a forward pass is reading: 1 MiB takes
/// 0.1-5 ms (memory the OS already backs, or a host backing it as it is touched).
const COPY_PIECE: usize = 1 << 20;

/// How long no part must have been read before a copy that waits for the gaps between
/// forward passes goes on: longer than a pass takes between two layers.
const PASS_GAP: Duration = Duration::from_millis(1);

/// Pages of the mapped file that the copy replaces: a part's, or some of its output matrix's.
struct PartRelease {
    /// The part's index in `file_readers`.
    part: usize,
    /// How far the copy must have been made before they go: the end of the part's last copied
    /// tensor, or of the output rows they hold.
    end: usize,
    /// File ranges `(start, end)`.
    ranges: Vec<(u64, u64)>,
}

impl CopyJob {
    /// `progress(done, total)` counts the tensors' bytes copied; `cancel` stops with `Aborted`.
    fn run(self, cancel: &AtomicBool, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        let CopyJob { file, mut writer, places, place_parts, releases, file_readers, between_passes, piece } = self;
        let (mut done, total) = (0, places.iter().map(|p| p.size).sum());
        progress(0, total);
        let mut pending = releases;
        // Gives back the parts the copy has reached that no pass reads from the file any more.
        let release = |published: usize, pending: &mut Vec<PartRelease>| {
            pending.retain(|r| {
                let read_from_file = r.end > published || file_readers[r.part].load(Ordering::SeqCst) > 0;
                if !read_from_file {
                    r.ranges.iter().for_each(|&(start, end)| file.mapped().release(start, end - start));
                }
                read_from_file
            })
        };
        let mut scratch = Vec::new();
        for (p, part) in places.iter().zip(place_parts) {
            let (start, end) = (p.to as usize, (p.to + p.size) as usize);
            // While a pass reads the part from the file, the copy waits for it to move on
            // rather than hold the part twice: with a core of its own, the copy otherwise makes
            // the part the first pass is in, whose file pages stay until the pass leaves it.
            // Qwen2.5-1.5B, one thread on two cores, a 128-token prompt just after the load:
            // peak RSS 1147-1158 MiB against 1166-1172, and that first evaluation 10% slower
            // (median of 9 alternating pairs), the pass reading more layers in the file's layout.
            // The output head too: Gemma-3-270M's (tied, most of the model) made beside the
            // pass reading the rest of it from the file took the peak up to 26 MB higher (one
            // thread, a prompt just after the load, 8 runs each: 314-343 MiB, waiting 314-317).
            let read_from_file = || part.is_some_and(|l| file_readers[l].load(Ordering::SeqCst) > 0);
            // Each piece is published as it is made (a rearranged matrix's in whole groups of
            // rows, rearranged first): an output head's rows are read from the copy as soon as
            // they are in it (`ResidentWeights::head`).
            let piece_len = match p.rearrange {
                Some((ty, cols)) => {
                    let row_bytes = ty.bytes_for(cols as u64).expect("a rearranged type has a block size") as usize;
                    let group = quant::INTERLEAVED_ROWS * row_bytes;
                    (piece / group).max(1) * group
                }
                None => piece,
            };
            for piece_start in (start..end).step_by(piece_len) {
                let piece_end = (piece_start + piece_len).min(end);
                // Naps twice as long each time passes are still running, up to 10 ms: not a
                // thousand wake-ups a second beside a long generation, and on again soon after.
                let mut nap = Duration::from_micros(200);
                let busy = || between_passes.as_ref().is_some_and(|p| !p.quiet_for(PASS_GAP)) || read_from_file();
                while busy() && !cancel.load(Ordering::Relaxed) {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(10));
                }
                // The padding before a tensor is left as the OS gave it: zeros.
                let unpublished = writer.unpublished(piece_end);
                let padding = unpublished.len() - (piece_end - piece_start);
                let piece = &mut unpublished[padding..];
                let (from, at) = (p.from + (piece_start - start) as u64, done + (piece_start - start) as u64);
                file.mapped().copy_into(from, piece, cancel, |part| progress(at + part, total))?;
                if let Some((ty, cols)) = p.rearrange {
                    quant::interleave_rows8(ty, cols, piece, &mut scratch);
                }
                writer.publish(piece_end);
                release(piece_end, &mut pending);
            }
            done += p.size;
        }
        // A pass that started a part from the file just before the copy reached it ends soon.
        while !pending.is_empty() && !cancel.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
            release(usize::MAX, &mut pending);
        }
        writer.seal();
        Ok(())
    }
}

impl ResidentWeights {
    /// Weights served from the mapped file as it is.
    pub fn mapped(file: Arc<GgufFile>, table: TensorTable) -> Self {
        ResidentWeights { file, table, copy: None }
    }

    /// Weights copied, now, as `plan` lays them out (all, or per its scope the ones
    /// rearranged) into memory of the process's own (in 2 MiB pages where the OS gives them,
    /// whatever state the file's page cache is in), in the order the forward pass reads them,
    /// and every matrix the active kernels have an interleaved form for
    /// (`quant::interleave_rows8`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q4_K on x86) rearranged so.
    /// Measured on Zen 4, one thread: SmolLM2 (Q4_1) decodes at 4.6 ms per token against 4.9
    /// from a copy not rearranged, and Qwen2.5-1.5B (Q4_K) 11% faster
    /// (`TensorTable::copy_speeds_decode`). `progress(done, total)` counts the tensors' bytes
    /// copied; `cancel` stops with `Aborted`.
    pub fn copied(
        file: Arc<GgufFile>,
        table: TensorTable,
        plan: &CopyPlan,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self> {
        let (weights, job) = Self::with_copy(file, table, plan, false)?;
        job.run(cancel, progress)?;
        Ok(weights)
    }

    /// Weights read from the mapped file, which the load has mapped in whole, and from a copy
    /// as `copied` makes it, made on a thread of its own: each part is read from the copy once
    /// the copy has reached it, and its pages of the file are given back to the OS as the copy
    /// makes them (but those the tensors left in the file share). The copy is made while the
    /// first tokens are computed, instead of before: most of its time is the OS providing fresh
    /// memory, several seconds for a 1 GB model on a VM whose host backs memory as it is first
    /// touched.
    ///
    /// With `between_passes` (the forward passes' threads take every core), the copy waits
    /// for the gaps between passes, as sharing a core would slow a pass more than the copy
    /// gains, and runs at the lowest priority: Qwen2.5-1.5B, 2 threads on 2 cores, a host
    /// backing memory as it is touched, copying beside the passes at the same priority: 2.0-2.2
    /// s to the first token of a 100-token prompt instead of 1.2, and the first tokens at 19
    /// tok/s instead of 31; at the lowest priority: 1.3 s, but 29-31 tok/s instead of 36-37
    /// until the copy was made, which under continuous use it was not in 15 s. Without it,
    /// the copy runs beside the passes but for a layer a pass is reading from the file.
    pub fn copying(file: Arc<GgufFile>, table: TensorTable, plan: &CopyPlan, between_passes: bool) -> Result<Self> {
        let (mut weights, mut job) = Self::with_copy(file, table, plan, true)?;
        if between_passes {
            job.between_passes = weights.copy.as_ref().map(|c| c.passes.clone());
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("chord-copy".into())
            .spawn(move || {
                if between_passes {
                    crate::pool::yield_cpu_to_compute();
                }
                // Where it fails (a file cut short, say), the parts it did not reach are read
                // from the file, which reports the failure itself (`check_file`).
                let _ = job.run(&stop, &mut |_, _| {});
            })
            .map_err(|source| Error::Io { path: "a thread to copy the weights".into(), source })?;
        if let Some(copy) = &mut weights.copy {
            copy.thread = Some((cancel, thread));
        }
        Ok(weights)
    }

    /// `copying`'s weights with the copy stopped once `bytes` of it are made (all of it where
    /// that is more): the parts before are read from the copy, the rest from the file.
    #[cfg(test)]
    pub fn partly_copied(file: Arc<GgufFile>, table: TensorTable, plan: &CopyPlan, bytes: u64) -> Result<Self> {
        let (weights, mut job) = Self::with_copy(file, table, plan, true)?;
        // Small pieces, each published on its own: a stop may fall inside the output head.
        job.piece = 64;
        let stop = AtomicBool::new(false);
        match job.run(&stop, &mut |done, _| stop.store(done >= bytes, Ordering::Relaxed)) {
            Ok(()) | Err(Error::Aborted) => Ok(weights),
            Err(e) => Err(e),
        }
    }

    /// The weights with an empty copy `plan` lays out, and the job that makes it. With
    /// `give_back` (the load mapped the file in), the job gives back each tensor's pages of the
    /// file as the copy replaces them, but the 2 MiB regions the tensors left in the file lie
    /// in (`huge_page_regions`).
    fn with_copy(file: Arc<GgufFile>, table: TensorTable, plan: &CopyPlan, give_back: bool) -> Result<(Self, CopyJob)> {
        let (buffer, writer) = PublishedBuffer::new(plan.len, "anonymous memory for the weights")?;
        let moved: std::collections::HashMap<u64, &CopyPlace> = plan.places.iter().map(|p| (p.from, p)).collect();
        let relocate = |t: &mut TensorInfo| {
            if let Some(p) = moved.get(&t.offset) {
                if p.rearrange.is_some() {
                    t.layout = WeightLayout::Interleaved8;
                }
                t.offset = p.to;
                t.copied = true;
            }
        };
        let mut copied = table.clone();
        copied.for_each_mut(relocate);
        if plan.scope == CopyScope::Rearranged {
            // It stays in the file, where a tied output head, copied, had the same offset.
            copied.token_embd = table.token_embd.clone();
        }
        let keep = give_back.then(|| huge_page_regions(&table.mapped_ranges(Some(plan))));
        let (mut ends, mut releases) = (Vec::new(), Vec::new());
        let head_part = table.layers.len();
        for (part, (in_file, in_copy)) in table.parts().zip(copied.parts()).enumerate() {
            let copied_tensors = || in_file.iter().zip(&in_copy).filter(|(_, c)| c.copied);
            let end = copied_tensors().map(|(_, c)| (c.offset + c.size) as usize).max().unwrap_or(0);
            ends.push(end);
            let Some(keep) = &keep else { continue };
            // Every tensor's pages go back as the copy makes its rows, not once the whole part
            // is made: otherwise a layer (30 MB of Qwen2.5-1.5B's) is held twice while it is
            // copied, at the peak of the resident set. A pass that began reading a layer from
            // the file before the copy paused in it maps them again: the whole part goes back
            // once more after it. The output matrix's rows are read from the copy as it makes
            // them (`head`), so it needs no second time.
            let by_rows = |t: &TensorInfo| part == head_part && t.offset == table.head.output.offset;
            for (t, c) in copied_tensors() {
                let chunks = row_releases(t, c, keep).filter(|(_, ranges)| !ranges.is_empty());
                releases.extend(chunks.map(|(end, ranges)| PartRelease { part, end, ranges }));
            }
            let whole = copied_tensors().filter(|(t, _)| !by_rows(t)).map(|(t, _)| (t.offset, t.offset + t.size));
            let ranges = outside(merged(whole.collect()), keep);
            if !ranges.is_empty() {
                releases.push(PartRelease { part, end, ranges });
            }
        }
        let file_readers: Arc<[AtomicUsize]> = ends.iter().map(|_| AtomicUsize::new(0)).collect();
        let part_of: std::collections::HashMap<u64, usize> = table
            .parts()
            .enumerate()
            .flat_map(|(part, tensors)| tensors.into_iter().map(move |t| (t.offset, part)))
            .collect();
        let job = CopyJob {
            file: file.clone(),
            writer,
            places: plan.places.clone(),
            place_parts: plan.places.iter().map(|p| part_of.get(&p.from).copied()).collect(),
            releases,
            file_readers: file_readers.clone(),
            between_passes: None,
            piece: COPY_PIECE,
        };
        let passes =
            PassActivity { reading: AtomicUsize::new(0), epoch: Instant::now(), last_read_ns: AtomicU64::new(0) };
        let copy = WeightsCopy {
            buffer,
            table: copied,
            ends,
            file_readers,
            reads_file: plan.scope != CopyScope::All,
            thread: None,
            passes: Arc::new(passes),
        };
        Ok((ResidentWeights { file, table, copy: Some(copy) }, job))
    }

    fn file_bytes(&self) -> &[u8] {
        self.file.mapped().bytes()
    }

    /// The copy being made, where `table` (from [`Self::source`]) says a part is read from the
    /// file meanwhile.
    fn copy_in_progress(&self, table: &TensorTable) -> Option<&WeightsCopy> {
        self.copy.as_ref().filter(|_| std::ptr::eq(table, &self.table))
    }

    /// What part `index` (a layer, or the head after the layers) is read through now: the
    /// table its offsets are in, the copy's published bytes, and while the copy has not reached
    /// it, a pin that counts this pass among its file's readers.
    fn source(&self, index: usize) -> (&TensorTable, &[u8], Option<Box<dyn Send + '_>>) {
        let Some(copy) = &self.copy else { return (&self.table, &[], None) };
        if copy.buffer.is_complete() {
            return (&copy.table, copy.buffer.published(), None);
        }
        copy.passes.reading.fetch_add(1, Ordering::Relaxed);
        // Counted before the mark is read: the copying thread, which reads the count after
        // moving the mark, then either sees this reader or this reader sees the copy.
        let readers = &copy.file_readers[index];
        readers.fetch_add(1, Ordering::SeqCst);
        let published = copy.buffer.published();
        let from_copy = published.len() >= copy.ends[index];
        if from_copy {
            readers.fetch_sub(1, Ordering::SeqCst);
        }
        let read = Box::new(PartRead { passes: &copy.passes, file_readers: (!from_copy).then_some(readers) });
        let table = if from_copy { &copy.table } else { &self.table };
        (table, published, Some(read))
    }
}

/// The file pages of tensor `t` (`copied`: its place in the copy) to give back as the copy
/// makes its rows, 2 MiB of the file at a time but `keep`: each as the copy's end of the whole
/// groups of rows they lie in, and the ranges `(start, end)`. A vector is one row.
fn row_releases<'a>(
    t: &'a TensorInfo,
    copied: &'a TensorInfo,
    keep: &'a [(u64, u64)],
) -> impl Iterator<Item = (usize, Vec<(u64, u64)>)> + 'a {
    let group_bytes = quant::INTERLEAVED_ROWS as u64 * (t.size / t.rows().max(1)).max(1);
    let (start, end) = (t.offset, t.offset + t.size);
    let bounds =
        std::iter::once(start).chain((start / HUGE_PAGE + 1..).map(|i| i * HUGE_PAGE).take_while(move |&b| b < end));
    bounds.map(move |from| {
        let to = (from / HUGE_PAGE + 1).saturating_mul(HUGE_PAGE).min(end);
        let made = ((to - start).next_multiple_of(group_bytes)).min(t.size);
        ((copied.offset + made) as usize, outside(vec![(from, to)], keep))
    })
}

/// Tensor ranges `(offset, len)` sorted and merged across the padding between them
/// ([`merged`]).
pub(crate) fn merged_spans(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let ends = ranges.into_iter().map(|(offset, len)| (offset, offset + len)).collect();
    merged(ends).into_iter().map(|(start, end)| (start, end - start)).collect()
}

/// Tensor ranges `(start, end)` sorted and merged across the padding between them.
fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            // Tensors are padded to the file's alignment (32 bytes by default): gaps under a
            // page join.
            Some(last) if start <= last.1 + 4096 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The parts of sorted `ranges` outside every range of `holes` (sorted, `(start, end)`).
fn outside(ranges: Vec<(u64, u64)>, holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (mut start, end) in ranges {
        for &(hole_start, hole_end) in holes {
            if hole_end <= start || hole_start >= end {
                continue;
            }
            if hole_start > start {
                out.push((start, hole_start));
            }
            start = start.max(hole_end);
        }
        if start < end {
            out.push((start, end));
        }
    }
    out
}

/// `mapping::HUGE_PAGE` as a file offset.
const HUGE_PAGE: u64 = crate::mapping::HUGE_PAGE as u64;

/// The 2 MiB-aligned regions `(start, end)` around file ranges `(offset, len)` (those a copy
/// leaves in the file): they are mapped in 2 MiB pages, and giving back part of one would
/// split it into 4 KiB pages for the tensor that stays.
fn huge_page_regions(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let regions =
        ranges.iter().map(|&(start, len)| (start / HUGE_PAGE * HUGE_PAGE, (start + len).next_multiple_of(HUGE_PAGE)));
    merged(regions.collect())
}

impl WeightSource for ResidentWeights {
    fn layer(&self, index: usize) -> Result<LayerGuard<'_>> {
        let (table, copy, pin) = self.source(index);
        let tensors = match self.copy_in_progress(table) {
            Some(c) => c.layer_so_far(&table.layers[index], index, copy.len()),
            None => Cow::Borrowed(&table.layers[index]),
        };
        Ok(LayerGuard::new(GuardBytes::Borrowed(self.file_bytes()), tensors, pin).with_copy(copy))
    }

    fn head(&self) -> Result<HeadGuard<'_>> {
        let (table, copy, pin) = self.source(self.table.layers.len());
        let guard = HeadGuard::new(GuardBytes::Borrowed(self.file_bytes()), &table.head, pin).with_copy(copy);
        // Read from the file while the copy is being made: the output rows it has made come
        // from it, so that the copying thread can give their pages of the file back before the
        // rest is made (a tied output head is most of a small model).
        match self.copy_in_progress(table) {
            Some(c) => match c.output_rows_made(copy.len()) {
                0 => Ok(guard),
                rows => Ok(guard.with_copied_rows(copy, &c.table.head.output, rows)),
            },
            None => Ok(guard),
        }
    }

    fn embed(&self, token: u32, out: &mut [f32]) -> Result<()> {
        let row = token as usize;
        if let Some(c) = &self.copy {
            // A tied output head the copy rearranged: the row from there once it is made, as
            // the copying thread gives back the file's pages of the rows it has made.
            let (head, embd) = (&c.table.head.output, &self.table.token_embd);
            let tied = self.table.head.output.offset == embd.offset;
            let published = c.buffer.published();
            if tied && head.layout == WeightLayout::Interleaved8 && row < c.output_rows_made(published.len()) {
                let first = row / quant::INTERLEAVED_ROWS * quant::INTERLEAVED_ROWS;
                let group = matrix_rows(head, first..first + quant::INTERLEAVED_ROWS);
                let group = &published[group.offset as usize..][..group.size as usize];
                let mut bytes = Vec::new();
                quant::file_layout_row(
                    head.ty,
                    head.dims[0] as usize,
                    group,
                    row % quant::INTERLEAVED_ROWS,
                    &mut bytes,
                );
                quant::dequantize_row(head.ty, &bytes, out);
                return Ok(());
            }
        }
        // Otherwise token_embd is only copied by a copy of everything, made during the load.
        let (table, copy) = match &self.copy {
            Some(c) if c.buffer.is_complete() => (&c.table, c.buffer.published()),
            _ => (&self.table, &[][..]),
        };
        let embd = view(self.file_bytes(), copy, &table.token_embd);
        quant::dequantize_row(embd.ty, embd.row(row), out);
        Ok(())
    }

    fn check_file(&self) -> Result<()> {
        // A copy of everything was read whole before the first token.
        if self.copy.as_ref().is_none_or(|c| c.reads_file) {
            self.file.mapped().check()
        } else {
            Ok(())
        }
    }

    fn stats(&self) -> WeightStats {
        let total = self.table.total_bytes();
        let copy = self.copy.as_ref();
        WeightStats {
            copied: copy.is_some(),
            copied_bytes: copy.map_or(0, |c| c.buffer.published().len() as u64),
            copying: copy.and_then(|c| c.thread.as_ref()).is_some_and(|(_, thread)| !thread.is_finished()),
            resident_bytes: total,
            peak_resident_bytes: total,
            ..WeightStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{write_tiny_model, TempPath, TinyModel};

    /// The tiny Q4_0 model's table, with its layer-0 ffn_up (BF16) taken as 64 MiB: a matrix
    /// without a rearranged layout and too large to copy along.
    fn table_with_a_large_bf16_matrix() -> TensorTable {
        let file = TempPath::new("copy-scope");
        write_tiny_model(file.path(), &TinyModel { mixed_types: true, q4_0: true, ..TinyModel::llama(2) });
        let g = GgufFile::open(file.path()).unwrap();
        let mut table = TensorTable::resolve(&g, &ModelConfig::from_gguf(&g).unwrap()).unwrap();
        table.layers[0].w_up.size = 64 << 20;
        table
    }

    /// A two-layer Q4_0 model written to a temporary file (kept while it is returned), opened.
    fn tiny_q4_0_model(name: &str) -> (TempPath, Arc<GgufFile>, TensorTable) {
        let file = TempPath::new(name);
        write_tiny_model(file.path(), &TinyModel { q4_0: true, ..TinyModel::llama(2) });
        let g = Arc::new(GgufFile::open(file.path()).unwrap());
        let table = TensorTable::resolve(&g, &ModelConfig::from_gguf(&g).unwrap()).unwrap();
        (file, g, table)
    }

    #[test]
    fn a_copy_between_passes_waits_for_the_pass_reading_and_stops_when_cancelled() {
        let (_file, g, table) = tiny_q4_0_model("between-passes");
        if !table.copy_speeds_decode() {
            return;
        }
        let plan = table.copy_plan(CopyScope::Rearranged);
        let (weights, mut job) = ResidentWeights::with_copy(g.clone(), table.clone(), &plan, false).unwrap();
        job.between_passes = weights.copy.as_ref().map(|c| c.passes.clone());
        let guard = weights.layer(0).unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let copying = std::thread::spawn(move || job.run(&stop, &mut |_, _| {}));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(weights.stats().copied_bytes, 0, "the copy went on while a pass read a layer");
        drop(guard);
        assert!(copying.join().unwrap().is_ok());
        assert_eq!(weights.stats().copied_bytes, plan.len);

        let (weights, mut job) = ResidentWeights::with_copy(g, table, &plan, false).unwrap();
        job.between_passes = weights.copy.as_ref().map(|c| c.passes.clone());
        let _guard = weights.layer(0).unwrap();
        let stop = cancel.clone();
        cancel.store(false, Ordering::Relaxed);
        let copying = std::thread::spawn(move || job.run(&stop, &mut |_, _| {}));
        std::thread::sleep(Duration::from_millis(20));
        cancel.store(true, Ordering::Relaxed);
        assert!(matches!(copying.join().unwrap(), Err(Error::Aborted)));
    }

    /// A copy with a core of its own does not make a layer, or the output head, that a pass is
    /// reading from the file.
    #[test]
    fn a_copy_waits_for_a_pass_reading_its_layer_or_head_from_the_file() {
        let (_file, g, table) = tiny_q4_0_model("layer-read");
        let plan = table.copy_plan(CopyScope::All);
        for part in [0, table.layers.len()] {
            let (weights, job) = ResidentWeights::with_copy(g.clone(), table.clone(), &plan, false).unwrap();
            let guard = ((part == 0).then(|| weights.layer(0).unwrap()), (part > 0).then(|| weights.head().unwrap()));
            let copying = std::thread::spawn(move || job.run(&AtomicBool::new(false), &mut |_, _| {}));
            std::thread::sleep(Duration::from_millis(50));
            // The head is copied after every layer: the copy stops where the last layer ends.
            let before = if part == 0 { 0 } else { weights.copy.as_ref().unwrap().ends[part - 1] as u64 };
            assert_eq!(weights.stats().copied_bytes, before, "the copy made part {part} while a pass read it");
            drop(guard);
            assert!(copying.join().unwrap().is_ok());
            assert_eq!(weights.stats().copied_bytes, plan.len);
        }
    }

    /// A pass reading a layer from the file while the copy is in it reads the tensors the copy
    /// has made from the copy (their pages of the file may be given back already), the others
    /// from the file.
    #[test]
    fn a_pass_inside_the_layer_being_copied_reads_the_tensors_made_from_the_copy() {
        let (_file, g, table) = tiny_q4_0_model("layer-so-far");
        let plan = table.copy_plan(CopyScope::All);
        let in_layer_0: Vec<u64> = table.layers[0].all().map(|t| t.offset).collect();
        // The copy stopped once it has made layer 0's first two tensors, in the order it makes them.
        let second = plan.places.iter().filter(|p| in_layer_0.contains(&p.from)).nth(1).unwrap();
        let made: Vec<u64> = plan.places.iter().take_while(|p| p.from != second.from).map(|p| p.from).collect();
        let bytes = plan.places.iter().take(made.len() + 1).map(|p| p.size).sum();
        let weights = ResidentWeights::partly_copied(g, table.clone(), &plan, bytes).unwrap();
        let guard = weights.layer(0).unwrap();
        let from_copy: Vec<&str> = guard.tensors.all().filter(|t| t.copied).map(|t| t.name.as_str()).collect();
        let expected: Vec<&str> = (table.layers[0].all())
            .filter(|t| made.contains(&t.offset) || t.offset == second.from)
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!((from_copy.len(), &from_copy), (2, &expected));
    }

    /// The pages of each tensor a copy replaces go back as the copy makes it, and each part's
    /// all together once more at its end (a pass reading the part from the file meanwhile maps
    /// them again), but the output matrix's, read from the copy row by row as it is made.
    #[test]
    fn each_tensors_pages_go_back_as_it_is_copied_and_its_parts_once_more_at_the_parts_end() {
        let (_file, g, table) = tiny_q4_0_model("releases");
        // A copy of everything leaves no 2 MiB region of the file kept for tensors it leaves.
        let plan = table.copy_plan(CopyScope::All);
        let (weights, job) = ResidentWeights::with_copy(g, table.clone(), &plan, true).unwrap();
        let copy = weights.copy.as_ref().unwrap();
        let head_part = table.layers.len();
        for (part, (in_file, in_copy)) in table.parts().zip(copy.table.parts()).enumerate() {
            let releases: Vec<_> = job.releases.iter().filter(|r| r.part == part).collect();
            for (t, c) in in_file.iter().zip(&in_copy) {
                let (end, range) = ((c.offset + c.size) as usize, vec![(t.offset, t.offset + t.size)]);
                assert!(releases.iter().any(|r| r.end == end && r.ranges == range), "{} of part {part}", t.name);
            }
            if part != head_part {
                let whole = merged(in_file.iter().map(|t| (t.offset, t.offset + t.size)).collect());
                assert!(releases.iter().any(|r| r.end == copy.ends[part] && r.ranges == whole), "layer {part}");
            }
        }
    }

    #[test]
    fn the_pages_given_back_spare_the_2_mib_pages_of_tensors_left_in_the_file() {
        const MIB: u64 = 1 << 20;
        // Tensors left in the file at 3-4 MiB and at 9 MiB (100 bytes).
        let keep = huge_page_regions(&[(3 * MIB, MIB), (9 * MIB, 100)]);
        assert_eq!(keep, vec![(2 * MIB, 4 * MIB), (8 * MIB, 10 * MIB)]);
        let given_back = outside(vec![(0, 12 * MIB)], &keep);
        assert_eq!(given_back, vec![(0, 2 * MIB), (4 * MIB, 8 * MIB), (10 * MIB, 12 * MIB)]);
        let given_back = outside(vec![(MIB, 3 * MIB), (5 * MIB, 6 * MIB), (8 * MIB, 9 * MIB)], &keep);
        assert_eq!(given_back, vec![(MIB, 2 * MIB), (5 * MIB, 6 * MIB)]);
        // Padding between tensors joins them.
        assert_eq!(merged(vec![(100, 200), (0, 90), (4400, 5000)]), vec![(0, 200), (4400, 5000)]);
    }

    /// An output matrix's file pages go back in 2 MiB pieces of the file, each once the copy has
    /// made the whole groups of rows they hold, but the regions kept for other tensors.
    #[test]
    fn an_output_matrix_goes_back_2_mib_of_the_file_at_a_time_as_its_rows_are_made() {
        const MIB: u64 = 1 << 20;
        let (rows, row_bytes) = (5000u64, 1088u64); // Q8_0, 1024 columns
        let t = TensorInfo {
            name: "output.weight".into(),
            ty: GgmlType::Q8_0,
            dims: [1024, rows, 1, 1],
            n_dims: 2,
            offset: MIB + 100,
            size: rows * row_bytes,
            layout: WeightLayout::Gguf,
            copied: false,
        };
        let copied = TensorInfo { offset: 640, layout: WeightLayout::Interleaved8, copied: true, ..t.clone() };
        let keep = [(2 * MIB, 4 * MIB)];
        let releases: Vec<_> = row_releases(&t, &copied, &keep).collect();
        let end = t.offset + t.size;
        let expected_ranges = [vec![(t.offset, 2 * MIB)], vec![], vec![(4 * MIB, 6 * MIB)], vec![(6 * MIB, end)]];
        assert_eq!(releases.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), expected_ranges);
        let group = 8 * row_bytes;
        for ((made_end, _), to) in releases.iter().zip([2 * MIB, 4 * MIB, 6 * MIB, end]) {
            let made = *made_end as u64 - copied.offset;
            // The whole groups holding the range's rows: no fewer, and no more than needed.
            assert!(made >= to - t.offset && (made.is_multiple_of(group) || made == t.size), "{made} for {to}");
            assert!(made < to - t.offset + group);
        }
    }

    #[test]
    fn the_rearranged_copy_leaves_large_other_matrices_and_token_embd_in_the_file() {
        let table = table_with_a_large_bf16_matrix();
        if !quant::has_interleaved_kernel(crate::tensor::GgmlType::Q4_0) {
            return;
        }
        let (embd, large) = (table.token_embd.offset, table.layers[0].w_up.offset);
        let plan = table.copy_plan(CopyScope::Rearranged);
        let held: Vec<u64> = plan.places.iter().map(|p| p.from).collect();
        // The tied head is token_embd's tensor: copied (once), as the head.
        assert!(held.contains(&table.head.output.offset) && table.head.output.offset == embd);
        assert!(!held.contains(&large));
        let everything_else = table.layers.iter().flat_map(LayerTensors::all).filter(|t| t.offset != large);
        assert!(everything_else.chain([&table.head.output_norm]).all(|t| held.contains(&t.offset)));
        let rearranged: Vec<u64> = plan.places.iter().filter(|p| p.rearrange.is_some()).map(|p| p.from).collect();
        assert!(rearranged.contains(&embd) && rearranged.contains(&table.layers[1].w_down.offset));
        // Only the large matrix is read from the mapping; token_embd's rows are looked up.
        assert_eq!(table.mapped_ranges(Some(&plan)), vec![(large, 64 << 20)]);
        let all = table.copy_plan(CopyScope::All);
        assert!(table.mapped_ranges(Some(&all)).is_empty());
        // The whole copy leaves token_embd, the tied head with it, as the file has it.
        assert!(all.places.iter().any(|p| p.from == embd && p.rearrange.is_none()));
        // And holds the large matrix, which the rearranged copy alone leaves out.
        assert_eq!(all.places.len(), held.len() + 1);
    }
}
