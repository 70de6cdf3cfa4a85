//! The forward pass: one token through every block, for every architecture and weight source.
//! Reads top to bottom like the math; each quantized matrix product is one `matvec` call, and
//! what differs between architectures is configuration (`ModelConfig`) and optional tensors.

use crate::error::{Error, Result};
use crate::model::config::{Activation, ModelConfig, Rope, RopeStyle};
use crate::model::state::{RopeTable, RunState};
use crate::model::weights::WeightSource;
use crate::pool::ComputePool;
use crate::quant;
use crate::tensor::{GgmlType, TensorView};

/// Runs `token` at position `state.n_past`, appends its keys and values to the cache, and when
/// `want_logits` fills `state.logits`. `cancelled` is polled between blocks.
pub fn forward(
    c: &ModelConfig,
    weights: &dyn WeightSource,
    pool: &ComputePool,
    state: &mut RunState,
    token: u32,
    want_logits: bool,
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    let pos = state.n_past;
    if pos >= state.kv.context() {
        return Err(Error::ContextFull { needed: pos + 1, context_size: state.kv.context() });
    }
    if token as usize >= c.n_vocab {
        return Err(Error::InvalidToken(token.into()));
    }
    let s = state;

    // Token embedding: one dequantized row of token_embd (scaled, for gemma).
    weights.embed(token, &mut s.x)?;
    if let Some(scale) = c.embedding_scale {
        s.x.iter_mut().for_each(|v| *v *= scale);
    }
    let freq_factors = c.rope_freq_factors.as_deref();
    s.rope_global.fill(c, c.rope, pos, freq_factors);
    if c.sliding_window.is_some() {
        s.rope_local.fill(c, c.rope_swa, pos, freq_factors);
    }

    for l in 0..c.n_layer {
        if cancelled() {
            return Err(Error::Aborted);
        }
        let layer = weights.layer(l)?;
        let w = layer.weights();
        let local = c.swa_layers[l];
        let (window, rope_table) = if local { (c.sliding_window, &s.rope_local) } else { (None, &s.rope_global) };

        // Attention: x += Wo · attention(rope(Wq·xb), rope(Wk·xb), Wv·xb) with xb = rmsnorm(x)
        rmsnorm(&mut s.xb, &s.x, &w.attn_norm, c.norm_eps, &mut s.norm_w);
        matvec(pool, &w.wq, &s.xb, &mut s.q, &mut s.act_q);
        matvec(pool, &w.wk, &s.xb, &mut s.k, &mut s.act_q);
        matvec(pool, &w.wv, &s.xb, &mut s.v, &mut s.act_q);
        add_bias(&mut s.q, w.bq.as_ref(), &mut s.norm_w);
        add_bias(&mut s.k, w.bk.as_ref(), &mut s.norm_w);
        add_bias(&mut s.v, w.bv.as_ref(), &mut s.norm_w);
        if let Some(norm) = &w.q_norm {
            rmsnorm_heads(&mut s.q, c.head_dim, norm, c.norm_eps, &mut s.norm_w);
        }
        if let Some(norm) = &w.k_norm {
            rmsnorm_heads(&mut s.k, c.head_dim, norm, c.norm_eps, &mut s.norm_w);
        }
        apply_rope(c, &mut s.q, rope_table);
        apply_rope(c, &mut s.k, rope_table);
        if c.q_scale != 1.0 {
            s.q.iter_mut().for_each(|v| *v *= c.q_scale);
        }
        s.kv.store(l, pos, &s.k, &s.v);
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        attention(c, pool, &s.q, s.kv.keys(l, first, pos + 1), s.kv.values(l, first, pos + 1), &mut s.att);
        matvec(pool, &w.wo, &s.att, &mut s.proj, &mut s.act_q);
        add_bias(&mut s.proj, w.bo.as_ref(), &mut s.norm_w);
        if let Some(norm) = &w.post_attn_norm {
            rmsnorm_in_place(&mut s.proj, norm, c.norm_eps, &mut s.norm_w);
        }
        add_in_place(&mut s.x, &s.proj);

        // Feed-forward: x += Wdown · (act(Wgate·xb) * (Wup·xb)) with xb = rmsnorm(x)
        rmsnorm(&mut s.xb, &s.x, &w.ffn_norm, c.norm_eps, &mut s.norm_w);
        matvec(pool, &w.w_gate, &s.xb, &mut s.gate, &mut s.act_q);
        matvec(pool, &w.w_up, &s.xb, &mut s.up, &mut s.act_q);
        gated_activation(c.activation, &mut s.gate, &s.up);
        matvec(pool, &w.w_down, &s.gate, &mut s.proj, &mut s.act_q);
        if let Some(norm) = &w.post_ffn_norm {
            rmsnorm_in_place(&mut s.proj, norm, c.norm_eps, &mut s.norm_w);
        }
        add_in_place(&mut s.x, &s.proj);
    }
    s.n_past = pos + 1;

    if want_logits {
        let head = weights.head()?;
        let h = head.weights();
        rmsnorm(&mut s.xb, &s.x, &h.output_norm, c.norm_eps, &mut s.norm_w);
        matvec(pool, &h.output, &s.xb, &mut s.logits, &mut s.act_q);
        if let Some(cap) = c.final_logit_softcap {
            s.logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        }
    }
    Ok(())
}

/// out = W · x, with x converted once to the weight type's dot-product format (as ggml does,
/// which is what makes our logits agree with llama.cpp's) and rows split over the pool.
pub fn matvec(pool: &ComputePool, w: &TensorView, x: &[f32], out: &mut [f32], act_q: &mut Vec<u8>) {
    debug_assert_eq!(w.cols(), x.len());
    debug_assert_eq!(w.rows(), out.len());
    let dot_ty = quant::vec_dot_type(w.ty);
    quant::quantize_activations(dot_ty, x, act_q);
    let act = &act_q[..];
    let cols = w.cols();
    let row_bytes = w.row_bytes();
    // Chunks of 16 rows keep each task's weights contiguous and large enough to amortize the hand-off.
    pool.for_each_chunk(out, 16, &|first_row, rows_out| {
        let bytes = &w.data[first_row * row_bytes..(first_row + rows_out.len()) * row_bytes];
        quant::dot_rows(w.ty, cols, bytes, act, rows_out);
    });
}

/// A small tensor (norm weights, biases) as f32, in `buf`.
fn dequantize<'b>(t: &TensorView, buf: &'b mut Vec<f32>) -> &'b [f32] {
    buf.resize(t.cols() * t.rows(), 0.0);
    quant::dequantize_row(t.ty, t.data, buf);
    buf
}

/// out = x / rms(x) * weight, with the mean of squares accumulated in f64 as ggml does.
pub(super) fn rmsnorm(out: &mut [f32], x: &[f32], weight: &TensorView, eps: f32, buf: &mut Vec<f32>) {
    let w = dequantize(weight, buf);
    let scale = rms_scale(x, eps);
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * w;
    }
}

pub(super) fn rmsnorm_in_place(x: &mut [f32], weight: &TensorView, eps: f32, buf: &mut Vec<f32>) {
    let w = dequantize(weight, buf);
    let scale = rms_scale(x, eps);
    x.iter_mut().zip(w).for_each(|(v, &w)| *v = *v * scale * w);
}

/// RMSNorm of each head separately, sharing one (head_dim) weight (gemma's q/k norms).
pub(super) fn rmsnorm_heads(x: &mut [f32], head_dim: usize, weight: &TensorView, eps: f32, buf: &mut Vec<f32>) {
    let w = dequantize(weight, buf);
    for head in x.chunks_exact_mut(head_dim) {
        let scale = rms_scale(head, eps);
        head.iter_mut().zip(w.iter()).for_each(|(v, &w)| *v = *v * scale * w);
    }
}

fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    1.0 / ((sum / x.len() as f64) as f32 + eps).sqrt()
}

pub(super) fn add_bias(x: &mut [f32], bias: Option<&TensorView>, buf: &mut Vec<f32>) {
    if let Some(b) = bias {
        add_in_place(x, dequantize(b, buf));
    }
}

impl RopeTable {
    /// cos and sin of each rotated pair's angle at `pos`. The angle is built by repeated f32
    /// multiplication, like ggml's rope cache, so rounding matches llama.cpp; `freq_factors`
    /// (Llama 3.1's rope_freqs) divide the angles.
    pub fn fill(&mut self, c: &ModelConfig, rope: Rope, pos: usize, freq_factors: Option<&[f32]>) {
        let theta_scale = rope.freq_base.powf(-2.0 / c.rope_dim as f32);
        let mut theta = pos as f32;
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
pub(super) fn apply_rope(c: &ModelConfig, x: &mut [f32], table: &RopeTable) {
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
pub(super) fn gated_activation(act: Activation, gate: &mut [f32], up: &[f32]) {
    match act {
        Activation::Silu => gate.iter_mut().zip(up).for_each(|(g, &u)| *g = *g / (1.0 + (-*g).exp()) * u),
        Activation::Gelu => gate.iter_mut().zip(up).for_each(|(g, &u)| *g = gelu_like_ggml(*g) * u),
    }
}

/// ggml's CPU GELU: the tanh approximation looked up from a table indexed by the f16 input and
/// holding f16 results (GGML_GELU_FP16), saturating outside [-10, 10].
fn gelu_like_ggml(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const GELU_COEF_A: f32 = 0.044715;
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let x = half::f16::from_f32(x).to_f32();
    let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh());
    half::f16::from_f32(y).to_f32()
}

/// Causal grouped-query attention of one query position over `keys`/`values` (len, kv_dim),
/// both f16, heads split over the pool.
fn attention(c: &ModelConfig, pool: &ComputePool, q: &[f32], keys: &[u8], values: &[u8], out: &mut [f32]) {
    let hd = c.head_dim;
    let len = keys.len() / (c.kv_dim() * 2);
    pool.for_each_chunk(out, hd, &|start, heads_out| {
        let mut scratch = AttentionScratch::new(c, len);
        for (j, head_out) in heads_out.chunks_exact_mut(hd).enumerate() {
            let h = start / hd + j;
            attend_head(c, h, &q[h * hd..(h + 1) * hd], keys, values, &mut scratch, head_out);
        }
    });
}

/// Per-task buffers of `attend_head`, for up to `len` positions.
pub(super) struct AttentionScratch {
    scores: Vec<f32>,
    q_f16: Vec<u8>,
    v_row: Vec<f32>,
}

impl AttentionScratch {
    pub(super) fn new(c: &ModelConfig, len: usize) -> Self {
        AttentionScratch {
            scores: vec![0.0; len],
            q_f16: Vec::with_capacity(c.head_dim * 2),
            v_row: vec![0.0; c.head_dim],
        }
    }
}

/// Attention of query head `h` (`q`, head_dim values) over `keys`/`values` (len, kv_dim), both
/// f16, into `out` (head_dim). q is rounded to f16 for the dot products with the keys, as ggml
/// does; the probabilities stay f32 (rounding them too measured further from llama.cpp's logits).
/// The one place attention is computed, for single tokens and batches alike.
pub(super) fn attend_head(
    c: &ModelConfig,
    h: usize,
    q: &[f32],
    keys: &[u8],
    values: &[u8],
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    let hd = c.head_dim;
    let row_bytes = c.kv_dim() * 2;
    let head_bytes = hd * 2;
    let group = c.n_head / c.n_head_kv;
    let kv_at = (h / group) * head_bytes;
    let len = keys.len() / row_bytes;
    let scores = &mut scratch.scores[..len];
    quant::quantize_activations(GgmlType::F16, q, &mut scratch.q_f16);
    for (t, s) in scores.iter_mut().enumerate() {
        let k = &keys[t * row_bytes + kv_at..][..head_bytes];
        *s = quant::vec_dot(GgmlType::F16, hd, k, &scratch.q_f16) * c.kq_scale;
    }
    softmax(scores);
    out.fill(0.0);
    for (t, &p) in scores.iter().enumerate() {
        quant::dequantize_row(GgmlType::F16, &values[t * row_bytes + kv_at..][..head_bytes], &mut scratch.v_row);
        for (o, &v) in out.iter_mut().zip(&scratch.v_row) {
            *o += p * v;
        }
    }
}

fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

pub(super) fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, &b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_the_tanh_formula_to_f16_precision_and_saturates() {
        for &x in &[-3.0f32, -1.0, -0.1, 0.0, 0.5, 1.0, 2.5, 9.9] {
            let exact = 0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044715 * x * x)).tanh());
            assert!((gelu_like_ggml(x) - exact).abs() <= 2e-3 * exact.abs().max(1.0), "x = {x}");
        }
        assert_eq!(gelu_like_ggml(-10.5), 0.0);
        assert_eq!(gelu_like_ggml(12.0), 12.0);
    }

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
