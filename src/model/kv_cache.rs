//! One sequence's KV cache: the keys and values of every position it has evaluated, per layer,
//! stored as f16 (llama.cpp's default cache type) or Q8_0 (its `--cache-type-k/v q8_0`, half
//! the memory). Owns the cache's layout, its length, and the context shift that drops old
//! positions and re-rotates the keys that move.

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::ops::apply_rope;
use crate::model::state::RopeTable;
use crate::quant;
use crate::tensor::GgmlType;

/// How cached keys and values are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F16,
    /// Blocks of 32 values with one f16 scale: 34 bytes where f16 takes 64.
    Q8_0,
}

impl KvType {
    pub fn ggml_type(self) -> GgmlType {
        match self {
            KvType::F16 => GgmlType::F16,
            KvType::Q8_0 => GgmlType::Q8_0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Bytes of `n` values (n a whole number of blocks).
    pub fn bytes(self, n: usize) -> usize {
        let ty = self.ggml_type();
        n / ty.block_len() as usize * ty.block_bytes() as usize
    }

    /// Whether every head's values start and end on block boundaries, so that attention can
    /// read one head of a cached row on its own.
    pub fn check(self, c: &ModelConfig) -> Result<()> {
        let block = self.ggml_type().block_len() as usize;
        if !c.head_dim.is_multiple_of(block) {
            return Err(Error::invalid_option(
                "kvCacheType",
                format!(
                    "{} needs a head size that is a multiple of {block}; this model's is {}",
                    self.name(),
                    c.head_dim
                ),
            ));
        }
        Ok(())
    }

    /// Bytes one position takes in a cache of this type: keys and values of every layer.
    pub fn bytes_per_position(self, c: &ModelConfig) -> u64 {
        (2 * c.n_layer * self.bytes(c.kv_dim())) as u64
    }
}

/// Which of a cache's two mappings.
#[derive(Clone, Copy)]
enum Half {
    Keys,
    Values,
}

/// Keys and values of positions 0..len of one sequence.
///
/// Both are stored head-major: per layer and key/value head, one contiguous run of rows, one
/// row per position. Attention reads one key/value head at a time over every cached position,
/// so its reads are sequential; with rows of every head side by side per position, a head read
/// a third or a half of each row at a stride, and cold (the weights of a decode step having
/// just passed through the cache) that cost SmolLM2's and Qwen2.5-0.5B's shapes 17-25% more
/// per position (`attention_kernel_throughput`, 2000 positions, `ATTN_COLD=1`).
///
/// Both live in anonymous mappings of their own rather than on the heap: pages are backed only
/// as positions are used, and a dropped cache is unmapped at once. (Heap blocks of this size go
/// back to glibc's per-thread arenas, where a few freed caches of calls that ran on different
/// libuv threads stayed resident: +20 MB peak RSS over a logits-then-generate run of a 0.5B
/// model.) Transparent huge pages are refused for them: with THP set to `always`, each head's
/// first row would back a 2 MiB page, most of a cache before the sequence has begun.
pub struct KvCache {
    /// (n_layer, n_head_kv, context, head_bytes) in `ty`, zero until written.
    keys: MmapMut,
    /// Laid out as `keys`.
    values: MmapMut,
    ty: KvType,
    layers: usize,
    kv_heads: usize,
    context: usize,
    /// Bytes of one position's keys (or values) of one key/value head.
    head_bytes: usize,
    /// Positions evaluated; rows at and after it hold nothing the sequence uses.
    len: usize,
    /// Conversion buffer of one position's keys or values (every head).
    scratch: Vec<u8>,
}

impl KvCache {
    pub fn new(c: &ModelConfig, context: usize, ty: KvType) -> Result<Self> {
        ty.check(c)?;
        let head_bytes = ty.bytes(c.head_dim);
        let n = c.n_layer * c.n_head_kv * context * head_bytes;
        let map = || {
            let map = MmapMut::map_anon(n.max(1))
                .map_err(|source| Error::Io { path: "anonymous memory for the KV cache".into(), source })?;
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::NoHugePage);
            Ok::<_, Error>(map)
        };
        Ok(KvCache {
            keys: map()?,
            values: map()?,
            ty,
            layers: c.n_layer,
            kv_heads: c.n_head_kv,
            context,
            head_bytes,
            len: 0,
            scratch: Vec::new(),
        })
    }

    pub fn ty(&self) -> KvType {
        self.ty
    }

    pub fn context(&self) -> usize {
        self.context
    }

    /// Positions evaluated so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of one position's keys (or values) of one key/value head: the stride of the rows
    /// `keys` and `values` return.
    pub fn head_bytes(&self) -> usize {
        self.head_bytes
    }

    /// Bytes the evaluated positions take (keys and values, every layer).
    pub fn used_bytes(&self) -> u64 {
        (2 * self.layers * self.kv_heads * self.len * self.head_bytes) as u64
    }

    /// Records that positions up to `len` are evaluated (the forward pass stored them).
    pub(crate) fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.context);
        self.len = len;
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn offset(&self, layer: usize, head: usize, pos: usize) -> usize {
        ((layer * self.kv_heads + head) * self.context + pos) * self.head_bytes
    }

    /// Stores position `pos` of `layer`: k and v are kv_dim values each. Converting a whole
    /// row and splitting it by heads gives each head the bytes converting it alone would, as
    /// `KvType::check` keeps heads whole blocks.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let ty = self.ty.ggml_type();
        quant::quantize_activations(ty, k, &mut self.scratch);
        self.scatter(Half::Keys, layer, pos);
        quant::quantize_activations(ty, v, &mut self.scratch);
        self.scatter(Half::Values, layer, pos);
    }

    /// Writes the converted row in `scratch` as position `pos` of every head of `layer`.
    fn scatter(&mut self, half: Half, layer: usize, pos: usize) {
        let (first, head_stride, n) = (self.offset(layer, 0, pos), self.context * self.head_bytes, self.head_bytes);
        let dst = match half {
            Half::Keys => &mut self.keys,
            Half::Values => &mut self.values,
        };
        for (head, src) in self.scratch.chunks_exact(n).take(self.kv_heads).enumerate() {
            dst[first + head * head_stride..][..n].copy_from_slice(src);
        }
    }

    /// Keys of positions from..to of one key/value head of one layer: (to - from) rows of
    /// `head_bytes`, contiguous.
    pub fn keys(&self, layer: usize, head: usize, from: usize, to: usize) -> &[u8] {
        &self.keys[self.offset(layer, head, from)..self.offset(layer, head, to)]
    }

    /// Values of positions from..to of one key/value head of one layer, laid out as `keys`.
    pub fn values(&self, layer: usize, head: usize, from: usize, to: usize) -> &[u8] {
        &self.values[self.offset(layer, head, from)..self.offset(layer, head, to)]
    }

    /// Moves the rows of positions from..from+moved down to keep.., in every layer and head,
    /// keys as they are.
    fn move_rows(&mut self, keep: usize, from: usize, moved: usize) {
        let n = moved * self.head_bytes;
        for layer in 0..self.layers {
            for head in 0..self.kv_heads {
                let (src, dst) = (self.offset(layer, head, from), self.offset(layer, head, keep));
                self.values.copy_within(src..src + n, dst);
                self.keys.copy_within(src..src + n, dst);
            }
        }
        self.len = keep + moved;
    }

    /// Drops positions keep..keep+discard and moves the ones after them down by `discard`, as
    /// llama.cpp's context shift does: the moved keys are rotated by -discard positions of RoPE
    /// (computed in f32 from the stored values and stored again), values are moved as they are.
    /// Nothing is evaluated again.
    pub fn discard(&mut self, c: &ModelConfig, keep: usize, discard: usize) {
        let (from, len) = (keep + discard, self.len);
        if discard == 0 || from >= len {
            self.truncate(keep);
            return;
        }
        let moved = len - from;
        self.move_rows(keep, from, moved);
        let mut tables = [RopeTable::new(c.rope_dim), RopeTable::new(c.rope_dim)];
        let delta = -(discard as f32);
        tables[0].fill_at(c, c.rope, delta, c.rope_freq_factors.as_deref());
        tables[1].fill_at(c, c.rope_swa, delta, c.rope_freq_factors.as_deref());
        let (hd, n, ty) = (c.head_dim, self.head_bytes, self.ty.ggml_type());
        let mut row = vec![0.0f32; c.kv_dim()];
        for layer in 0..c.n_layer {
            let table = &tables[usize::from(c.swa_layers[layer])];
            for pos in keep..keep + moved {
                for (head, row) in row.chunks_exact_mut(hd).enumerate() {
                    let at = self.offset(layer, head, pos);
                    quant::dequantize_row(ty, &self.keys[at..at + n], row);
                }
                apply_rope(c, &mut row, table);
                quant::quantize_activations(ty, &row, &mut self.scratch);
                self.scatter(Half::Keys, layer, pos);
            }
        }
    }
}

#[cfg(test)]
impl KvCache {
    /// Moves rows as `discard` does but leaves the keys as they are: what a shift without the
    /// rotation would hold, to show that the rotation matters.
    pub(crate) fn discard_unrotated_for_test(&mut self, keep: usize, discard: usize) {
        let moved = self.len - keep - discard;
        self.move_rows(keep, keep + discard, moved);
    }
}
