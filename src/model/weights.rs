//! Where the forward pass gets its weights: the `WeightSource` trait is the single access point,
//! so the resident (memory-mapped) source here and the pager's source feed one forward pass.
//!
//! Tensor names (`blk.{i}.*`) are resolved and shape-checked once, in `TensorTable::resolve`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::mapping;
use crate::model::config::{Architecture, ModelConfig};
use crate::quant;
use crate::tensor::{GgmlType, TensorView, WeightLayout};

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
    pub output: TensorView<'a>,      // (n_vocab, n_embd); token_embd itself when tied
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
    tensors: &'a LayerTensors,
    _pin: Option<Box<dyn Send + 'a>>,
}

impl<'a> LayerGuard<'a> {
    /// `tensors` offsets are positions in `bytes`; `pin` is dropped with the guard.
    pub fn new(bytes: GuardBytes<'a>, tensors: &'a LayerTensors, pin: Option<Box<dyn Send + 'a>>) -> Self {
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
    _pin: Option<Box<dyn Send + 'a>>,
}

impl<'a> HeadGuard<'a> {
    pub fn new(bytes: GuardBytes<'a>, tensors: &'a HeadTensors, pin: Option<Box<dyn Send + 'a>>) -> Self {
        HeadGuard { bytes, copy: &[], tensors, _pin: pin }
    }

    /// As [`LayerGuard::with_copy`].
    fn with_copy(self, copy: &'a [u8]) -> Self {
        HeadGuard { copy, ..self }
    }

    pub fn weights(&self) -> HeadWeights<'_> {
        let (b, copy) = (self.bytes.as_slice(), self.copy);
        HeadWeights {
            output_norm: view(b, copy, &self.tensors.output_norm),
            output: view(b, copy, &self.tensors.output),
        }
    }
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
    /// Bytes of that copy.
    pub copied_bytes: u64,
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
    /// output head apart from token_embd, which stays in the file.
    fn rearranged_offsets(&self, scope: CopyScope) -> std::collections::HashSet<u64> {
        let embeddings = self.token_embd.offset;
        let rearranged = |t: &&TensorInfo| {
            quant::has_interleaved_kernel(t.ty)
                && t.dims[1].is_multiple_of(8)
                && (scope == CopyScope::Rearranged || t.offset != embeddings)
        };
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
        let mut ranges: Vec<(u64, u64)> = layers
            .chain(globals)
            .filter(|t| !held.contains(&t.offset))
            .map(|t| (t.offset, t.offset + t.size))
            .collect();
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
        merged.into_iter().map(|(start, end)| (start, end - start)).collect()
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

/// A copy of resident weights laid out (`TensorTable::copy_plan`): its places, and its length.
pub struct CopyPlan {
    scope: CopyScope,
    places: Vec<CopyPlace>,
    len: u64,
}

/// One tensor's place in a copy.
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
    /// Offsets are positions in the file, or in `copy` for tensors marked `copied`.
    table: TensorTable,
    /// The copied tensors, in anonymous memory, matrices rearranged for the kernels.
    copy: Option<memmap2::Mmap>,
    /// Whether any tensor is read from the file.
    reads_file: bool,
}

impl ResidentWeights {
    /// Weights served from the mapped file as it is.
    pub fn mapped(file: Arc<GgufFile>, table: TensorTable) -> Self {
        ResidentWeights { file, table, copy: None, reads_file: true }
    }

    /// Weights copied as `plan` lays them out (all, or per its scope the ones rearranged) into
    /// memory of the process's own (in 2 MiB pages where the OS gives them, whatever state the
    /// file's page cache is in), in the order the forward pass reads them, and every
    /// matrix the active kernels have an interleaved form for (`quant::interleave_rows8`:
    /// Q4_0, Q4_1, Q5_0, Q5_1 and Q4_K on x86) rearranged so. Measured on Zen 4, one thread:
    /// SmolLM2 (Q4_1) decodes at 4.6 ms per token against 4.9 from a copy not rearranged, and
    /// Qwen2.5-1.5B (Q4_K) 11% faster (`TensorTable::copy_speeds_decode`). `progress(done,
    /// total)` counts the tensors' bytes copied; `cancel` stops with `Aborted`.
    pub fn copied(
        file: Arc<GgufFile>,
        mut table: TensorTable,
        plan: &CopyPlan,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self> {
        const WHAT: &str = "anonymous memory for the weights";
        let mut copy = mapping::weights_buffer(plan.len, WHAT)?;
        let (mut done, total) = (0, plan.bytes());
        progress(0, total);
        let mut scratch = Vec::new();
        for p in &plan.places {
            let dst = &mut copy[p.to as usize..(p.to + p.size) as usize];
            file.mapped().copy_into(p.from, dst, cancel, |part| progress(done + part, total))?;
            if let Some((ty, cols)) = p.rearrange {
                quant::interleave_rows8(ty, cols, dst, &mut scratch);
            }
            done += p.size;
        }
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
        let token_embd = table.token_embd.clone();
        table.for_each_mut(relocate);
        if plan.scope == CopyScope::Rearranged {
            // It stays in the file, where a tied output head, copied, had the same offset.
            table.token_embd = token_embd;
        }
        let copy = mapping::seal_weights_buffer(copy, WHAT)?;
        Ok(ResidentWeights { file, table, copy: Some(copy), reads_file: plan.scope != CopyScope::All })
    }

    fn file_bytes(&self) -> &[u8] {
        self.file.mapped().bytes()
    }

    fn copy_bytes(&self) -> &[u8] {
        self.copy.as_deref().unwrap_or_default()
    }
}

impl WeightSource for ResidentWeights {
    fn layer(&self, index: usize) -> Result<LayerGuard<'_>> {
        let tensors = &self.table.layers[index];
        Ok(LayerGuard::new(GuardBytes::Borrowed(self.file_bytes()), tensors, None).with_copy(self.copy_bytes()))
    }

    fn head(&self) -> Result<HeadGuard<'_>> {
        let tensors = &self.table.head;
        Ok(HeadGuard::new(GuardBytes::Borrowed(self.file_bytes()), tensors, None).with_copy(self.copy_bytes()))
    }

    fn embed(&self, token: u32, out: &mut [f32]) -> Result<()> {
        let embd = view(self.file_bytes(), self.copy_bytes(), &self.table.token_embd);
        quant::dequantize_row(embd.ty, embd.row(token as usize), out);
        Ok(())
    }

    fn check_file(&self) -> Result<()> {
        // A copy was read whole before the first token.
        if self.reads_file {
            self.file.mapped().check()
        } else {
            Ok(())
        }
    }

    fn stats(&self) -> WeightStats {
        let total = self.table.total_bytes();
        WeightStats {
            copied: self.copy.is_some(),
            copied_bytes: self.copy.as_ref().map_or(0, |c| c.len() as u64),
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

    /// The tiny Q4_0 model's table, with its layer-0 ffn_gate (Q8_0) taken as 64 MiB: a matrix
    /// without a rearranged layout and too large to copy along.
    fn table_with_a_large_q8_0_matrix() -> TensorTable {
        let file = TempPath::new("copy-scope");
        write_tiny_model(file.path(), &TinyModel { mixed_types: true, q4_0: true, ..TinyModel::llama(2) });
        let g = GgufFile::open(file.path()).unwrap();
        let mut table = TensorTable::resolve(&g, &ModelConfig::from_gguf(&g).unwrap()).unwrap();
        table.layers[0].w_gate.size = 64 << 20;
        table
    }

    #[test]
    fn the_rearranged_copy_leaves_large_other_matrices_and_token_embd_in_the_file() {
        let table = table_with_a_large_q8_0_matrix();
        if !quant::has_interleaved_kernel(crate::tensor::GgmlType::Q4_0) {
            return;
        }
        let (embd, large) = (table.token_embd.offset, table.layers[0].w_gate.offset);
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
