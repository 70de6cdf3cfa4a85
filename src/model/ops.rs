//! The per-token operations of the forward pass (norms, RoPE, activations, one head's
//! attention), written once for every architecture: what differs between architectures is
//! configuration (`ModelConfig`) and optional tensors.

use crate::model::config::{Activation, ModelConfig, Rope, RopeStyle};
use crate::model::kv_cache::KvType;
use crate::model::state::RopeTable;
use crate::quant;
use crate::tensor::{GgmlType, TensorView};

/// A small tensor (norm weights, biases) as f32, in `buf`.
pub(crate) fn dequantize<'b>(t: &TensorView, buf: &'b mut Vec<f32>) -> &'b [f32] {
    buf.resize(t.cols() * t.rows(), 0.0);
    quant::dequantize_row(t.ty, t.data, buf);
    buf
}

/// out = x / rms(x) * weight, with the mean of squares accumulated in f64 as ggml does.
pub(crate) fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

pub(crate) fn rmsnorm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    x.iter_mut().zip(weight).for_each(|(v, &w)| *v = *v * scale * w);
}

fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    1.0 / ((sum / x.len() as f64) as f32 + eps).sqrt()
}

impl RopeTable {
    /// cos and sin of each rotated pair's angle at `pos`. The angle is built by repeated f32
    /// multiplication, like ggml's rope cache, so rounding matches llama.cpp; `freq_factors`
    /// (Llama 3.1's rope_freqs) divide the angles.
    pub fn fill(&mut self, c: &ModelConfig, rope: Rope, pos: usize, freq_factors: Option<&[f32]>) {
        self.fill_at(c, rope, pos as f32, freq_factors)
    }

    /// [`RopeTable::fill`] at a position that may be negative: a rotation by -d moves a key
    /// rotated for position p to position p - d (the context shift).
    pub fn fill_at(&mut self, c: &ModelConfig, rope: Rope, pos: f32, freq_factors: Option<&[f32]>) {
        let theta_scale = rope.freq_base.powf(-2.0 / c.rope_dim as f32);
        let mut theta = pos;
        for (i, (co, si)) in self.cos.iter_mut().zip(self.sin.iter_mut()).enumerate() {
            let factor = freq_factors.map_or(1.0, |f| f[i]);
            let t = theta / factor * rope.freq_scale;
            *co = t.cos();
            *si = t.sin();
            theta *= theta_scale;
        }
    }
}

/// Rotates the first rope_dim values of every head: adjacent pairs (normal) or the two halves
/// of the rotated part (NeoX).
pub(crate) fn apply_rope(c: &ModelConfig, x: &mut [f32], table: &RopeTable) {
    let half = c.rope_dim / 2;
    for head in x.chunks_exact_mut(c.head_dim) {
        for (i, (&co, &si)) in table.cos.iter().zip(&table.sin).enumerate() {
            let (a, b) = match c.rope_style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * co - x1 * si;
            head[b] = x0 * si + x1 * co;
        }
    }
}

/// gate = act(gate) * up.
pub(crate) fn gated_activation(act: Activation, gate: &mut [f32], up: &[f32]) {
    match act {
        Activation::Silu => quant::silu_mul(gate, up),
        Activation::Gelu => quant::gelu_mul(gate, up),
    }
}

/// Per-task buffers of `attend_heads`, for up to `len` scores (positions times heads).
pub(crate) struct AttentionScratch {
    /// One run of `len` scores per head of a call.
    scores: Vec<f32>,
    /// The query head in the dot-product format of quantized keys.
    q_converted: Vec<u8>,
    /// One cached value row of a head, dequantized.
    value: Vec<f32>,
}

impl AttentionScratch {
    pub(crate) fn new(len: usize) -> Self {
        AttentionScratch { scores: vec![0.0; len], q_converted: Vec::new(), value: Vec::new() }
    }
}

/// Attention of query heads (`q`, head_dim values per head) that share one key/value head, over
/// that head's cached `keys`/`values` (one row of head_dim values per position, in `kv_type`)
/// into `out` (head_dim per head). Each head's result is the same whatever heads go with it;
/// together, an f16 cache's keys and values are converted once for all of them.
///
/// With an f16 cache, q stays f32 in the products with the keys, and the probabilities f32, as
/// in llama.cpp's flash attention over a batch (its tiled path: keys and values widened to f32).
/// Its one-token path rounds q to f16; we had matched that, and Gemma-3 missed a confident step
/// against llama.cpp's teacher-forced (batched) logits, which it no longer does. With a Q8_0
/// cache, q is quantized to Q8_0 for the products with the keys and each value row is
/// dequantized to f32, as llama.cpp's flash attention does for quantized caches.
/// The one place attention is computed, for single tokens and batches alike.
pub(crate) fn attend_heads(
    c: &ModelConfig,
    q: &[f32],
    kv_type: KvType,
    keys: &[u8],
    values: &[u8],
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    let hd = c.head_dim;
    let heads = q.len() / hd;
    let head_bytes = kv_type.bytes(hd);
    let len = keys.len() / head_bytes;
    if len == 0 {
        out.fill(0.0);
        return;
    }
    if scratch.scores.len() < heads * len {
        scratch.scores.resize(heads * len, 0.0);
    }
    let scores = &mut scratch.scores[..heads * len];
    match kv_type {
        KvType::F16 => quant::dot_f16_f32_heads(keys, head_bytes, 0, q, hd, scores),
        KvType::Q8_0 => {
            for (q, scores) in q.chunks_exact(hd).zip(scores.chunks_exact_mut(len)) {
                quant::quantize_activations(GgmlType::Q8_0, q, &mut scratch.q_converted);
                for (key, s) in keys.chunks_exact(head_bytes).zip(scores.iter_mut()) {
                    *s = quant::vec_dot(GgmlType::Q8_0, hd, key, &scratch.q_converted);
                }
            }
        }
    }
    for scores in scores.chunks_exact_mut(len) {
        scores.iter_mut().for_each(|s| *s *= c.kq_scale);
        quant::softmax(scores);
    }
    out.fill(0.0);
    match kv_type {
        KvType::F16 => quant::axpy_f16_heads(out, scores, values, head_bytes, 0, hd),
        KvType::Q8_0 => {
            scratch.value.resize(hd, 0.0);
            for (scores, out) in scores.chunks_exact(len).zip(out.chunks_exact_mut(hd)) {
                for (value, &p) in values.chunks_exact(head_bytes).zip(scores) {
                    quant::dequantize_row(GgmlType::Q8_0, value, &mut scratch.value);
                    out.iter_mut().zip(&scratch.value).for_each(|(o, &v)| *o += p * v);
                }
            }
        }
    }
}

pub(crate) fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, &b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_styles_rotate_different_pairs() {
        let mut c = test_config();
        let mut table = RopeTable::new(c.rope_dim);
        table.fill(&c, c.rope, 3, None);
        let base: Vec<f32> = (0..8).map(|i| i as f32 + 1.0).collect();
        let mut normal = base.clone();
        apply_rope(&c, &mut normal, &table);
        c.rope_style = RopeStyle::Neox;
        let mut neox = base.clone();
        apply_rope(&c, &mut neox, &table);
        // Rotations keep the norm of each rotated pair.
        let pair_norm = |v: &[f32], a: usize, b: usize| (v[a] * v[a] + v[b] * v[b]).sqrt();
        assert!((pair_norm(&normal, 0, 1) - pair_norm(&base, 0, 1)).abs() < 1e-5);
        assert!((pair_norm(&neox, 0, 2) - pair_norm(&base, 0, 2)).abs() < 1e-5);
        assert_ne!(normal, neox);
        // Position 0 is the identity.
        table.fill(&c, c.rope, 0, None);
        let mut same = base.clone();
        apply_rope(&c, &mut same, &table);
        assert_eq!(same, base);
    }

    fn test_config() -> ModelConfig {
        use crate::model::config::Architecture;
        let rope = Rope { freq_base: 10_000.0, freq_scale: 1.0 };
        ModelConfig {
            arch: Architecture::Llama,
            n_vocab: 10,
            n_embd: 8,
            n_layer: 1,
            n_ff: 8,
            n_head: 2,
            n_head_kv: 1,
            head_dim: 4,
            rope_dim: 4,
            rope_style: RopeStyle::Normal,
            rope,
            rope_swa: rope,
            norm_eps: 1e-5,
            n_ctx_train: 16,
            activation: Activation::Silu,
            embedding_scale: None,
            q_scale: 1.0,
            kq_scale: 0.5,
            sliding_window: None,
            swa_layers: vec![false],
            final_logit_softcap: None,
            rope_freq_factors: None,
        }
    }
}
