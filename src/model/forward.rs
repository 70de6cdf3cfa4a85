//! The forward pass: a chunk of consecutive tokens through every block, for every architecture
//! and weight source. A prompt goes through in chunks, so every layer's weights are fetched (and,
//! when paged, loaded) once per chunk rather than once per token and each matrix product is one
//! weights-by-tokens product; a generated token is a chunk of one. Per token, the operations
//! and their order do not depend on the chunk, so logits are bit-identical however a prompt is
//! split (tested). Reads top to bottom like the math; each quantized matrix product is one
//! `matmul` call, and the per-token numerics live in `ops` and `quant`.

use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::ops::{
    add_bias, add_in_place, apply_rope, attend_head, dequantize, gated_activation, rmsnorm, rmsnorm_in_place,
    AttentionScratch,
};
use crate::model::state::{BatchBuffers, ConvertedRows, KvCache, RunState};
use crate::model::weights::WeightSource;
use crate::pool::ComputePool;
use crate::quant;
use crate::tensor::TensorView;

/// Tokens per batch. Large enough that per-operation costs (waking the pool, fetching a layer,
/// converting activations) are shared by many tokens and a blocked kernel can reuse each weight
/// row across many activation rows; small enough that the batch buffers stay a few MB (they grow
/// with chunk x n_ff) and cancellation is noticed within one chunk's layer.
pub const CHUNK: usize = 64;

/// Tokens whose logits are computed together: the (n_vocab, tokens) product buffer is the
/// largest of the batch (16 MB for a 262k vocabulary at 16 tokens), so the head goes in smaller
/// groups than the blocks.
const HEAD_GROUP: usize = 16;

/// Receives the logits of token `index` of the prompt (n_vocab values).
pub type LogitsSink<'a> = dyn FnMut(usize, &[f32]) + 'a;

/// Runs `tokens` at positions `state.n_past..` in chunks of `chunk` tokens (`CHUNK` but in
/// tests), appending their keys and values to the cache, and calls `on_logits(i, logits)` for
/// every token index `i >= logits_from` in order (`logits_from >= tokens.len()`: no logits).
/// The last logits also stay in `state.logits`. `cancelled` is polled between blocks.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    c: &ModelConfig,
    weights: &dyn WeightSource,
    pool: &ComputePool,
    state: &mut RunState,
    tokens: &[u32],
    logits_from: usize,
    chunk: usize,
    cancelled: &dyn Fn() -> bool,
    on_logits: &mut LogitsSink,
) -> Result<()> {
    let needed = state.n_past + tokens.len();
    if needed > state.kv.context() {
        return Err(Error::ContextFull { needed, context_size: state.kv.context() });
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
        return Err(Error::InvalidToken(bad.into()));
    }
    let chunk = chunk.max(1);
    let mut buffers = state.buffers.take().filter(|b| b.capacity >= chunk.min(tokens.len()));
    let b = buffers.get_or_insert_with(|| BatchBuffers::new(c, chunk.min(tokens.len())));
    let result = tokens.chunks(chunk).enumerate().try_for_each(|(i, part)| {
        let base = i * chunk;
        let from = logits_from.saturating_sub(base);
        forward_chunk(c, weights, pool, state, b, part, from, cancelled, &mut |t, logits| on_logits(base + t, logits))
    });
    state.buffers = buffers;
    result
}

/// One chunk of `tokens` (at most the batch capacity) through every block, then the output head
/// for tokens `logits_from..`.
#[allow(clippy::too_many_arguments)]
fn forward_chunk(
    c: &ModelConfig,
    weights: &dyn WeightSource,
    pool: &ComputePool,
    s: &mut RunState,
    b: &mut BatchBuffers,
    tokens: &[u32],
    logits_from: usize,
    cancelled: &dyn Fn() -> bool,
    on_logits: &mut LogitsSink,
) -> Result<()> {
    let n = tokens.len();
    debug_assert!(n <= b.capacity);
    let n_past = s.n_past;
    let (e, qd, kvd, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
    let (x, xb, q, k, v) =
        (&mut b.x[..n * e], &mut b.xb[..n * e], &mut b.q[..n * qd], &mut b.k[..n * kvd], &mut b.v[..n * kvd]);
    let (att, proj, gate, up) =
        (&mut b.att[..n * qd], &mut b.proj[..n * e], &mut b.gate[..n * ff], &mut b.up[..n * ff]);
    let (acts, products, norm_w) = (&mut b.acts, &mut b.products, &mut b.norm_w);

    for (&token, row) in tokens.iter().zip(x.chunks_exact_mut(e)) {
        weights.embed(token, row)?;
    }
    if let Some(scale) = c.embedding_scale {
        x.iter_mut().for_each(|v| *v *= scale);
    }
    let freq_factors = c.rope_freq_factors.as_deref();
    for t in 0..n {
        b.rope_global[t].fill(c, c.rope, n_past + t, freq_factors);
        if c.sliding_window.is_some() {
            b.rope_local[t].fill(c, c.rope_swa, n_past + t, freq_factors);
        }
    }

    for l in 0..c.n_layer {
        if cancelled() {
            return Err(Error::Aborted);
        }
        let layer = weights.layer(l)?;
        let w = layer.weights();
        let local = c.swa_layers[l];
        let (window, ropes) = if local { (c.sliding_window, &b.rope_local) } else { (None, &b.rope_global) };

        // Attention: x += Wo · attention(rope(Wq·xb), rope(Wk·xb), Wv·xb) with xb = rmsnorm(x)
        rmsnorm_rows(pool, xb, x, &w.attn_norm, c.norm_eps, norm_w);
        matmul(pool, xb, n, &mut [(&w.wq, &mut *q), (&w.wk, &mut *k), (&w.wv, &mut *v)], acts, products);
        for_rows(q, qd, |r| add_bias(r, w.bq.as_ref(), norm_w));
        for_rows(k, kvd, |r| add_bias(r, w.bk.as_ref(), norm_w));
        for_rows(v, kvd, |r| add_bias(r, w.bv.as_ref(), norm_w));
        // Gemma's q/k norms: each head a row of its own.
        if let Some(norm) = &w.q_norm {
            rmsnorm_rows_in_place(pool, q, norm, c.norm_eps, norm_w);
        }
        if let Some(norm) = &w.k_norm {
            rmsnorm_rows_in_place(pool, k, norm, c.norm_eps, norm_w);
        }
        for (m, width) in [(&mut *q, qd), (&mut *k, kvd)] {
            pool.for_each_chunk(m, width, &|start, rows| {
                for (i, r) in rows.chunks_exact_mut(width).enumerate() {
                    apply_rope(c, r, &ropes[start / width + i]);
                }
            });
        }
        if c.q_scale != 1.0 {
            q.iter_mut().for_each(|v| *v *= c.q_scale);
        }
        for (t, (kr, vr)) in k.chunks_exact(kvd).zip(v.chunks_exact(kvd)).enumerate() {
            s.kv.store(l, n_past + t, kr, vr);
        }
        attention_batch(c, pool, q, &s.kv, l, n_past, window, att);
        matmul(pool, att, n, &mut [(&w.wo, &mut *proj)], acts, products);
        for_rows(proj, e, |r| add_bias(r, w.bo.as_ref(), norm_w));
        if let Some(norm) = &w.post_attn_norm {
            rmsnorm_rows_in_place(pool, proj, norm, c.norm_eps, norm_w);
        }
        add_rows(pool, x, proj);

        // Feed-forward: x += Wdown · (act(Wgate·xb) * (Wup·xb)) with xb = rmsnorm(x)
        rmsnorm_rows(pool, xb, x, &w.ffn_norm, c.norm_eps, norm_w);
        matmul(pool, xb, n, &mut [(&w.w_gate, &mut *gate), (&w.w_up, &mut *up)], acts, products);
        // Element-wise, so any split gives the same values; split even one token's row.
        let up = &*up;
        pool.for_each_chunk(gate, 1024, &|start, g| gated_activation(c.activation, g, &up[start..start + g.len()]));
        matmul(pool, gate, n, &mut [(&w.w_down, &mut *proj)], acts, products);
        if let Some(norm) = &w.post_ffn_norm {
            rmsnorm_rows_in_place(pool, proj, norm, c.norm_eps, norm_w);
        }
        add_rows(pool, x, proj);
    }
    s.n_past = n_past + n;

    if logits_from >= n {
        return Ok(());
    }
    let head = weights.head()?;
    let h = head.weights();
    let wanted = logits_from..n;
    for group_start in wanted.step_by(HEAD_GROUP) {
        let group = group_start..(group_start + HEAD_GROUP).min(n);
        let g = group.len();
        rmsnorm_rows(pool, &mut xb[..g * e], &x[group.start * e..group.end * e], &h.output_norm, c.norm_eps, norm_w);
        acts.reset();
        let rows = acts.get(pool, quant::vec_dot_type(h.output.ty), &xb[..g * e], e);
        multiply(pool, &h.output, rows, g, products);
        for (j, t) in group.enumerate() {
            for (l, p) in s.logits.iter_mut().zip(products.iter().skip(j).step_by(g)) {
                *l = *p;
            }
            if let Some(cap) = c.final_logit_softcap {
                s.logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
            }
            on_logits(t, &s.logits);
        }
    }
    Ok(())
}

/// out = rmsnorm(x) row by row (rows as long as the weight), rows split over the pool: every
/// row's arithmetic is the same whichever thread takes it.
fn rmsnorm_rows(pool: &ComputePool, out: &mut [f32], x: &[f32], weight: &TensorView, eps: f32, buf: &mut Vec<f32>) {
    let w = dequantize(weight, buf);
    let width = w.len();
    pool.for_each_chunk(out, width, &|start, out| {
        for (o, r) in out.chunks_exact_mut(width).zip(x[start..].chunks_exact(width)) {
            rmsnorm(o, r, w, eps);
        }
    });
}

/// [`rmsnorm_rows`] in place.
fn rmsnorm_rows_in_place(pool: &ComputePool, x: &mut [f32], weight: &TensorView, eps: f32, buf: &mut Vec<f32>) {
    let w = dequantize(weight, buf);
    pool.for_each_chunk(x, w.len(), &|_, rows| {
        rows.chunks_exact_mut(w.len()).for_each(|r| rmsnorm_in_place(r, w, eps))
    });
}

/// x += y, element-wise, split over the pool.
fn add_rows(pool: &ComputePool, x: &mut [f32], y: &[f32]) {
    pool.for_each_chunk(x, 1024, &|start, x| add_in_place(x, &y[start..start + x.len()]));
}

fn for_rows(m: &mut [f32], width: usize, mut f: impl FnMut(&mut [f32])) {
    m.chunks_exact_mut(width).for_each(&mut f);
}

/// `out = x · Wᵀ` for each (W, out) of `jobs`, all reading the same input `x` (n, cols): x is
/// converted once per dot-product format however many matrices read it (q/k/v, gate/up).
/// Outputs are (n, rows of W).
fn matmul(
    pool: &ComputePool,
    x: &[f32],
    n: usize,
    jobs: &mut [(&TensorView, &mut [f32])],
    acts: &mut ConvertedRows,
    products: &mut Vec<f32>,
) {
    acts.reset();
    for (w, out) in jobs.iter_mut() {
        let rows = acts.get(pool, quant::vec_dot_type(w.ty), x, w.cols());
        multiply(pool, w, rows, n, products);
        transpose(pool, products, w.rows(), n, out);
    }
}

/// products (rows, n) = dot products of every row of `w` with every activation row of `acts`,
/// rows split over the pool.
fn multiply(pool: &ComputePool, w: &TensorView, acts: &[u8], n: usize, products: &mut Vec<f32>) {
    let (rows, cols, row_bytes) = (w.rows(), w.cols(), w.row_bytes());
    products.resize(rows * n, 0.0);
    // Whole rows per task (the kernel's output is row-major), eight at a time so kernels that
    // work on several rows at once (tiles of four, Q4_K's groups of eight) get full ones.
    pool.for_each_chunk(&mut products[..rows * n], 8 * n, &|start, out| {
        let first_row = start / n;
        let bytes = &w.data[first_row * row_bytes..(first_row + out.len() / n) * row_bytes];
        quant::dot_rows_batch(w.ty, cols, bytes, acts, n, out);
    });
}

/// out (n, rows) = transpose of products (rows, n), split over the pool by output rows (a
/// decoded token's single row is a plain copy).
fn transpose(pool: &ComputePool, products: &[f32], rows: usize, n: usize, out: &mut [f32]) {
    if n == 1 {
        out[..rows].copy_from_slice(&products[..rows]);
        return;
    }
    let products = &products[..rows * n];
    // Rows in blocks, so that the cache lines a block reads (one per row) serve every token of
    // the task before moving on, instead of each token re-reading a line per row from L3.
    const ROW_BLOCK: usize = 64;
    pool.for_each_chunk(&mut out[..n * rows], rows, &|start, out| {
        let first = start / rows;
        for block in (0..rows).step_by(ROW_BLOCK) {
            let block = block..(block + ROW_BLOCK).min(rows);
            for (t, o) in out.chunks_exact_mut(rows).enumerate() {
                for (r, o) in block.clone().zip(&mut o[block.clone()]) {
                    *o = products[r * n + first + t];
                }
            }
        }
    });
}

/// Attention of every token of the batch: token t (position n_past + t) attends to the cached
/// positions up to its own, within the sliding window when the layer has one. (token, head)
/// pairs are split over the pool.
#[allow(clippy::too_many_arguments)]
fn attention_batch(
    c: &ModelConfig,
    pool: &ComputePool,
    q: &[f32],
    kv: &KvCache,
    layer: usize,
    n_past: usize,
    window: Option<usize>,
    out: &mut [f32],
) {
    let (hd, qd) = (c.head_dim, c.q_dim());
    let n = q.len() / qd;
    pool.for_each_chunk(out, hd, &|start, heads_out| {
        let mut scratch = AttentionScratch::new(n_past + n);
        for (j, head_out) in heads_out.chunks_exact_mut(hd).enumerate() {
            let i = start / hd + j;
            let (t, h) = (i / c.n_head, i % c.n_head);
            let pos = n_past + t;
            let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let (keys, values) = (kv.keys(layer, first, pos + 1), kv.values(layer, first, pos + 1));
            attend_head(c, h, &q[t * qd + h * hd..][..hd], keys, values, &mut scratch, head_out);
        }
    });
}
