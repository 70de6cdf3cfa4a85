//! The forward pass's activation buffers for a batch of tokens, reused from one batch to the
//! next. (Each sequence's own state, its KV cache, is `kv_cache::KvCache`.)

use crate::model::compute::Slot;
use crate::model::config::ModelConfig;
use crate::pool::ComputePool;
use crate::quant;
use crate::tensor::GgmlType;

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
/// (tokens, width), one token's row after another.
pub struct BatchBuffers {
    pub capacity: usize,
    pub tokens: Vec<u32>,            // (capacity) token ids of the batch
    pub slots: Vec<Slot>,            // (capacity) each token's sequence and position
    pub x: Vec<f32>,                 // (capacity, n_embd) residual stream
    pub xb: Vec<f32>,                // (capacity, n_embd) normalized input of a sub-block
    pub q: Vec<f32>,                 // (capacity, n_head * head_dim)
    pub k: Vec<f32>,                 // (capacity, kv_dim)
    pub v: Vec<f32>,                 // (capacity, kv_dim)
    pub att_out: Vec<f32>,           // (capacity, n_head * head_dim) attention output, all heads
    pub proj: Vec<f32>,              // (capacity, n_embd) output of a sub-block's last projection
    pub gate: Vec<f32>,              // (capacity, n_ff)
    pub up: Vec<f32>,                // (capacity, n_ff)
    pub logits: Vec<f32>,            // (n_vocab) one token's logits
    pub rope_global: Vec<RopeTable>, // (capacity) angles of full-attention layers, per token
    pub rope_local: Vec<RopeTable>,  // (capacity) angles of sliding-window layers, per token
}

impl BatchBuffers {
    pub fn new(c: &ModelConfig, capacity: usize) -> Self {
        let m = |width: usize| vec![0.0f32; capacity * width];
        let tables = || (0..capacity).map(|_| RopeTable::new(c.rope_dim)).collect();
        BatchBuffers {
            capacity,
            tokens: Vec::with_capacity(capacity),
            slots: Vec::with_capacity(capacity),
            x: m(c.n_embd),
            xb: m(c.n_embd),
            q: m(c.q_dim()),
            k: m(c.kv_dim()),
            v: m(c.kv_dim()),
            att_out: m(c.q_dim()),
            proj: m(c.n_embd),
            gate: m(c.n_ff),
            up: m(c.n_ff),
            logits: vec![0.0; c.n_vocab],
            rope_global: tables(),
            rope_local: if c.sliding_window.is_some() { tables() } else { Vec::new() },
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
}

impl ConvertedRows {
    /// A new input is coming: forget the conversions of the last one.
    pub fn reset(&mut self) {
        self.spare.extend(self.current.drain(..).map(|(_, buf)| buf));
    }

    /// Converts `x` (rows of `cols` values) to `dot_ty`, one `act_row_bytes` row per input row,
    /// unless the current input already is.
    pub fn convert(&mut self, pool: &ComputePool, dot_ty: GgmlType, x: &[f32], cols: usize) {
        if self.current.iter().any(|(ty, _)| *ty == dot_ty) {
            return;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        if x.len() == cols {
            quant::quantize_activations(dot_ty, x, &mut buf);
        } else {
            let row_bytes = quant::act_row_bytes(dot_ty, cols);
            // Every byte is written below: only growth needs filling, not the old contents.
            buf.resize(x.len() / cols * row_bytes, 0);
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
    }

    /// The current input in `dot_ty` format; panics unless `convert` made it.
    pub fn converted(&self, dot_ty: GgmlType) -> &[u8] {
        let (_, buf) = self.current.iter().find(|(ty, _)| *ty == dot_ty).expect("activations converted before use");
        buf
    }
}
