//! The forward pass: one token through every block, for every architecture and weight source.
//! Reads top to bottom like the math; each quantized matrix product is one `matvec` call.

use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::state::RunState;
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
    let globals = weights.globals()?;

    // Token embedding: one dequantized row of token_embd.
    quant::dequantize_row(globals.token_embd.ty, globals.token_embd.row(token as usize), &mut s.x);
    rope_angles(c, pos, &mut s.rope_cos, &mut s.rope_sin);

    for l in 0..c.n_layer {
        if cancelled() {
            return Err(Error::Aborted);
        }
        let w = weights.layer(l)?;

        // Attention: x += Wo · attention(rope(Wq·xb), rope(Wk·xb), Wv·xb) with xb = rmsnorm(x)
        rmsnorm(&mut s.xb, &s.x, &w.attn_norm, c.norm_eps, &mut s.norm_w);
        matvec(pool, &w.wq, &s.xb, &mut s.q, &mut s.act_q);
        matvec(pool, &w.wk, &s.xb, &mut s.k, &mut s.act_q);
        matvec(pool, &w.wv, &s.xb, &mut s.v, &mut s.act_q);
        rope(&mut s.q, c.head_dim, &s.rope_cos, &s.rope_sin);
        rope(&mut s.k, c.head_dim, &s.rope_cos, &s.rope_sin);
        s.kv.store(l, pos, &s.k, &s.v);
        attention(c, pool, &s.q, s.kv.keys(l, pos + 1), s.kv.values(l, pos + 1), &mut s.att);
        matvec(pool, &w.wo, &s.att, &mut s.proj, &mut s.act_q);
        add_in_place(&mut s.x, &s.proj);

        // Feed-forward (SwiGLU): x += Wdown · (silu(Wgate·xb) * (Wup·xb)) with xb = rmsnorm(x)
        rmsnorm(&mut s.xb, &s.x, &w.ffn_norm, c.norm_eps, &mut s.norm_w);
        matvec(pool, &w.w_gate, &s.xb, &mut s.gate, &mut s.act_q);
        matvec(pool, &w.w_up, &s.xb, &mut s.up, &mut s.act_q);
        for (g, &u) in s.gate.iter_mut().zip(&s.up) {
            *g = silu(*g) * u;
        }
        matvec(pool, &w.w_down, &s.gate, &mut s.proj, &mut s.act_q);
        add_in_place(&mut s.x, &s.proj);
    }
    s.n_past = pos + 1;

    if want_logits {
        rmsnorm(&mut s.xb, &s.x, &globals.output_norm, c.norm_eps, &mut s.norm_w);
        matvec(pool, &globals.output, &s.xb, &mut s.logits, &mut s.act_q);
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

/// out = x / rms(x) * weight, with the mean of squares accumulated in f64 as ggml does.
fn rmsnorm(out: &mut [f32], x: &[f32], weight: &TensorView, eps: f32, weight_buf: &mut [f32]) {
    quant::dequantize_row(weight.ty, weight.data, weight_buf);
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let scale = 1.0 / ((sum / x.len() as f64) as f32 + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight_buf.iter()) {
        *o = v * scale * w;
    }
}

/// cos and sin of each rotated pair's angle at `pos`. The angle is built by repeated f32
/// multiplication, like ggml's rope cache, so rounding matches llama.cpp.
fn rope_angles(c: &ModelConfig, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
    let theta_scale = c.rope_freq_base.powf(-2.0 / c.rope_dim as f32);
    let mut theta = pos as f32;
    for (co, si) in cos.iter_mut().zip(sin.iter_mut()) {
        let t = theta * c.rope_freq_scale;
        *co = t.cos();
        *si = t.sin();
        theta *= theta_scale;
    }
}

/// Rotates adjacent pairs (x[2i], x[2i+1]) of the first rope_dim values of every head
/// ("normal" RoPE, what llama's GGUF tensors are permuted for).
fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (i, (&co, &si)) in cos.iter().zip(sin).enumerate() {
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * co - b * si;
            head[2 * i + 1] = a * si + b * co;
        }
    }
}

/// Causal grouped-query attention of one query position over `keys`/`values` (len, kv_dim),
/// both f16. q is rounded to f16 for the dot products with the keys, as ggml does; the
/// probabilities stay f32 (rounding them too measured further from llama.cpp's logits).
fn attention(c: &ModelConfig, pool: &ComputePool, q: &[f32], keys: &[u8], values: &[u8], out: &mut [f32]) {
    let hd = c.head_dim;
    let row_bytes = c.kv_dim() * 2;
    let head_bytes = hd * 2;
    let group = c.n_head / c.n_head_kv;
    let len = keys.len() / row_bytes;
    let scale = 1.0 / (hd as f32).sqrt();
    pool.for_each_chunk(out, hd, &|start, heads_out| {
        let mut scores = vec![0.0f32; len];
        let mut q_f16 = Vec::with_capacity(head_bytes);
        let mut v_row = vec![0.0f32; hd];
        for (j, head_out) in heads_out.chunks_exact_mut(hd).enumerate() {
            let h = start / hd + j;
            let kv_at = (h / group) * head_bytes;
            quant::quantize_activations(GgmlType::F16, &q[h * hd..(h + 1) * hd], &mut q_f16);
            for (t, s) in scores.iter_mut().enumerate() {
                let k = &keys[t * row_bytes + kv_at..][..head_bytes];
                *s = quant::vec_dot(GgmlType::F16, hd, k, &q_f16) * scale;
            }
            softmax(&mut scores);
            head_out.fill(0.0);
            for (t, &p) in scores.iter().enumerate() {
                quant::dequantize_row(GgmlType::F16, &values[t * row_bytes + kv_at..][..head_bytes], &mut v_row);
                for (o, &v) in head_out.iter_mut().zip(&v_row) {
                    *o += p * v;
                }
            }
        }
    });
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

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, &b)| *a += b);
}
