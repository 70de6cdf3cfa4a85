//! Per-sequence state: activation buffers and the KV cache. One `RunState` per generation or
//! logits call; the model's weights are shared.

use crate::model::config::ModelConfig;
use crate::quant;
use crate::tensor::GgmlType;

/// Keys and values of every position seen so far, stored as f16 like llama.cpp's default cache.
pub struct KvCache {
    /// (n_layer, context, kv_dim) little-endian f16. Zero-initialized bytes, so the allocation
    /// is lazily backed by the OS: memory grows with the positions actually used.
    keys: Vec<u8>,
    /// (n_layer, context, kv_dim), same layout as `keys`.
    values: Vec<u8>,
    context: usize,
    /// Bytes of one position's keys (or values): kv_dim f16 values.
    row_bytes: usize,
    /// f16 conversion buffer.
    scratch: Vec<u8>,
}

impl KvCache {
    pub fn new(c: &ModelConfig, context: usize) -> Self {
        let row_bytes = c.kv_dim() * 2;
        let n = c.n_layer * context * row_bytes;
        KvCache { keys: vec![0u8; n], values: vec![0u8; n], context, row_bytes, scratch: Vec::new() }
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
        self.keys.len() + self.values.len()
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

/// Activation buffers for one token, reused from token to token.
pub struct RunState {
    pub x: Vec<f32>,            // (n_embd) residual stream
    pub xb: Vec<f32>,           // (n_embd) normalized input of a sub-block
    pub q: Vec<f32>,            // (n_head * head_dim)
    pub k: Vec<f32>,            // (kv_dim)
    pub v: Vec<f32>,            // (kv_dim)
    pub att: Vec<f32>,          // (n_head * head_dim) attention output, all heads
    pub proj: Vec<f32>,         // (n_embd) output of a sub-block's last projection
    pub gate: Vec<f32>,         // (n_ff)
    pub up: Vec<f32>,           // (n_ff)
    pub logits: Vec<f32>,       // (n_vocab)
    pub norm_w: Vec<f32>,       // (n_embd) a norm's weights or a bias, dequantized
    pub rope_global: RopeTable, // angles of full-attention layers at the current position
    pub rope_local: RopeTable,  // angles of sliding-window layers at the current position
    /// Activations converted to a weight type's dot-product format.
    pub act_q: Vec<u8>,
    pub kv: KvCache,
    /// Positions already in the KV cache.
    pub n_past: usize,
}

impl RunState {
    pub fn new(c: &ModelConfig, context: usize) -> Self {
        RunState {
            x: vec![0.0; c.n_embd],
            xb: vec![0.0; c.n_embd],
            q: vec![0.0; c.q_dim()],
            k: vec![0.0; c.kv_dim()],
            v: vec![0.0; c.kv_dim()],
            att: vec![0.0; c.q_dim()],
            proj: vec![0.0; c.n_embd],
            gate: vec![0.0; c.n_ff],
            up: vec![0.0; c.n_ff],
            logits: vec![0.0; c.n_vocab],
            norm_w: vec![0.0; c.n_embd],
            rope_global: RopeTable::new(c.rope_dim),
            rope_local: RopeTable::new(c.rope_dim),
            act_q: Vec::new(),
            kv: KvCache::new(c, context),
            n_past: 0,
        }
    }
}
