//! Per-sequence state: activation buffers and the KV cache. One `RunState` per generation or
//! logits call; the model's weights are shared.

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::pool::ComputePool;
use crate::quant;
use crate::tensor::GgmlType;

/// Keys and values of every position seen so far, stored as f16 like llama.cpp's default cache.
///
/// Both live in anonymous mappings of their own rather than on the heap: pages are backed only
/// as positions are used, and a dropped cache is unmapped at once. (Heap blocks of this size go
/// back to glibc's per-thread arenas, where a few freed caches of calls that ran on different
/// libuv threads stayed resident: +20 MB peak RSS over a logits-then-generate run of a 0.5B
/// model.)
pub struct KvCache {
    /// (n_layer, context, kv_dim) little-endian f16, zero until written.
    keys: MmapMut,
    /// (n_layer, context, kv_dim), same layout as `keys`.
    values: MmapMut,
    /// Bytes of `keys` (and of `values`); the mappings are at least one byte long.
    bytes: usize,
    context: usize,
    /// Bytes of one position's keys (or values): kv_dim f16 values.
    row_bytes: usize,
    /// f16 conversion buffer.
    scratch: Vec<u8>,
}

impl KvCache {
    pub fn new(c: &ModelConfig, context: usize) -> Result<Self> {
        let row_bytes = c.kv_dim() * 2;
        let n = c.n_layer * context * row_bytes;
        let map = || {
            MmapMut::map_anon(n.max(1))
                .map_err(|source| Error::Io { path: "anonymous memory for the KV cache".into(), source })
        };
        Ok(KvCache { keys: map()?, values: map()?, bytes: n, context, row_bytes, scratch: Vec::new() })
    }

    pub fn context(&self) -> usize {
        self.context
    }

    fn offset(&self, layer: usize, pos: usize) -> usize {
        (layer * self.context + pos) * self.row_bytes
    }

    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let at = self.offset(layer, pos);
        let n = self.row_bytes;
        quant::quantize_activations(GgmlType::F16, k, &mut self.scratch);
        self.keys[at..at + n].copy_from_slice(&self.scratch);
        quant::quantize_activations(GgmlType::F16, v, &mut self.scratch);
        self.values[at..at + n].copy_from_slice(&self.scratch);
    }

    /// Keys of positions from..to of one layer: (to - from, kv_dim) f16.
    pub fn keys(&self, layer: usize, from: usize, to: usize) -> &[u8] {
        &self.keys[self.offset(layer, from)..self.offset(layer, to)]
    }

    /// Values of positions from..to of one layer: (to - from, kv_dim) f16.
    pub fn values(&self, layer: usize, from: usize, to: usize) -> &[u8] {
        &self.values[self.offset(layer, from)..self.offset(layer, to)]
    }

    /// Bytes the cache takes when full.
    pub fn capacity_bytes(&self) -> usize {
        2 * self.bytes
    }
}

/// cos and sin of the RoPE angle of each rotated pair at one position: (rope_dim / 2) each.
pub struct RopeTable {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(rope_dim: usize) -> Self {
        RopeTable { cos: vec![1.0; rope_dim / 2], sin: vec![0.0; rope_dim / 2] }
    }
}

/// Activation buffers of the forward pass for up to `capacity` tokens; every matrix is
/// (tokens, width), one token's row after another. Kept in the `RunState` between calls.
pub struct BatchBuffers {
    pub capacity: usize,
    pub x: Vec<f32>,    // (capacity, n_embd) residual stream
    pub xb: Vec<f32>,   // (capacity, n_embd) normalized input of a sub-block
    pub q: Vec<f32>,    // (capacity, n_head * head_dim)
    pub k: Vec<f32>,    // (capacity, kv_dim)
    pub v: Vec<f32>,    // (capacity, kv_dim)
    pub att: Vec<f32>,  // (capacity, n_head * head_dim) attention output, all heads
    pub proj: Vec<f32>, // (capacity, n_embd) output of a sub-block's last projection
    pub gate: Vec<f32>, // (capacity, n_ff)
    pub up: Vec<f32>,   // (capacity, n_ff)
    /// One matrix product's output before transposition: (rows, tokens).
    pub products: Vec<f32>,
    pub norm_w: Vec<f32>,            // (n_embd) a norm's weights or a bias, dequantized
    pub rope_global: Vec<RopeTable>, // (capacity) angles of full-attention layers, per token
    pub rope_local: Vec<RopeTable>,  // (capacity) angles of sliding-window layers, per token
    pub acts: ConvertedRows,
}

impl BatchBuffers {
    pub fn new(c: &ModelConfig, capacity: usize) -> Self {
        let m = |width: usize| vec![0.0f32; capacity * width];
        let tables = || (0..capacity).map(|_| RopeTable::new(c.rope_dim)).collect();
        BatchBuffers {
            capacity,
            x: m(c.n_embd),
            xb: m(c.n_embd),
            q: m(c.q_dim()),
            k: m(c.kv_dim()),
            v: m(c.kv_dim()),
            att: m(c.q_dim()),
            proj: m(c.n_embd),
            gate: m(c.n_ff),
            up: m(c.n_ff),
            products: Vec::new(),
            norm_w: vec![0.0; c.n_embd],
            rope_global: tables(),
            rope_local: if c.sliding_window.is_some() { tables() } else { Vec::new() },
            acts: ConvertedRows::default(),
        }
    }
}

/// Activation rows converted to dot-product formats, kept while several matrices read the same
/// input (q/k/v, gate/up); the buffers are reused from one input to the next.
#[derive(Default)]
pub struct ConvertedRows {
    /// (format, rows converted to it back to back) for the current input.
    current: Vec<(GgmlType, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    row: Vec<u8>,
}

impl ConvertedRows {
    /// A new input is coming: forget the conversions of the last one.
    pub fn reset(&mut self) {
        self.spare.extend(self.current.drain(..).map(|(_, buf)| buf));
    }

    /// `x` (rows of `cols` values) in `dot_ty` format, one `act_row_bytes` row per input row,
    /// converted on first request since the last `reset`.
    pub fn get(&mut self, pool: &ComputePool, dot_ty: GgmlType, x: &[f32], cols: usize) -> &[u8] {
        let at = match self.current.iter().position(|(ty, _)| *ty == dot_ty) {
            Some(at) => at,
            None => {
                let mut buf = self.spare.pop().unwrap_or_default();
                let row_bytes = quant::act_row_bytes(dot_ty, cols);
                // Every byte is written below: only growth needs filling, not the old contents.
                buf.resize(x.len() / cols * row_bytes, 0);
                if x.len() == cols {
                    quant::quantize_activations(dot_ty, x, &mut self.row);
                    buf.copy_from_slice(&self.row);
                } else {
                    pool.for_each_chunk(&mut buf, row_bytes, &|start, out| {
                        let mut row = Vec::with_capacity(row_bytes);
                        let first = start / row_bytes;
                        for (i, o) in out.chunks_exact_mut(row_bytes).enumerate() {
                            quant::quantize_activations(dot_ty, &x[(first + i) * cols..][..cols], &mut row);
                            o.copy_from_slice(&row);
                        }
                    });
                }
                self.current.push((dot_ty, buf));
                self.current.len() - 1
            }
        };
        &self.current[at].1
    }
}

/// The state of one sequence: its KV cache, the logits of its last evaluated token, and the
/// forward pass's buffers, reused from call to call.
pub struct RunState {
    pub logits: Vec<f32>, // (n_vocab)
    pub kv: KvCache,
    /// Positions already in the KV cache.
    pub n_past: usize,
    /// Sized for the largest chunk seen; None until the first evaluation.
    pub buffers: Option<BatchBuffers>,
}

impl RunState {
    pub fn new(c: &ModelConfig, context: usize) -> Result<Self> {
        Ok(RunState { logits: vec![0.0; c.n_vocab], kv: KvCache::new(c, context)?, n_past: 0, buffers: None })
    }
}
