//! The forward pass's operations over a batch of tokens, as methods of one context value
//! (`Compute`): the compute pool and the scratch buffers every operation reuses (activations
//! converted to dot-product formats, matrix products before transposition, dequantized norm
//! weights). Matrices are (tokens, width), one token's row after another; every operation gives
//! each row the same arithmetic whichever thread takes it and however many rows there are, which
//! is what keeps logits bit-identical across batch shapes.

use crate::model::config::ModelConfig;
use crate::model::kv_cache::KvCache;
use crate::model::ops::{
    add_in_place, apply_rope, attend_heads, dequantize, gated_activation, rmsnorm, rmsnorm_in_place, AttentionScratch,
};
use crate::model::state::{ConvertedRows, RopeTable};
use crate::pool::ComputePool;
use crate::quant::{self, ProductLayout, ProductLayout::*};
use crate::tensor::{SplitMatrix, TensorView, WeightLayout};

/// Buffers reused by every operation of a forward pass.
#[derive(Default)]
pub struct Scratch {
    /// The current input converted to each dot-product format its matrices need.
    pub acts: ConvertedRows,
    /// The products of one `matmul`, matrix after matrix, each before it is made token-major:
    /// (rows, tokens), or strips of rows (`quant::ProductLayout`).
    pub products: Vec<f32>,
    /// A norm's weights or a bias, dequantized: (n_embd) at most.
    pub small: Vec<f32>,
    /// The current input in bf16 tiles, where the batch's products take them (see
    /// [`use_bf16_tiles`]).
    pub tokens_bf16: quant::Bf16Tokens,
}

/// Batches of fewer tokens keep the integer kernels on the bf16 tiles' path: a weight row is
/// dequantized once per batch, which a few tokens do not pay back.
const BF16_TILES_MIN_TOKENS: usize = 16;

/// Whether a batch of `n` tokens multiplies on AMX bf16 tiles (`quant::dot_rows_batch_bf16`):
/// an experiment, off unless `CHORD_LLM_BF16_TILES=1` asks for it, and only on CPUs with
/// AMX-BF16. Its products are not the integer kernels' arithmetic, so with it a prompt's
/// logits depend on how its tokens are batched (within llama.cpp's tolerance, as llama.cpp's
/// own do), which the engine otherwise guarantees they do not.
fn use_bf16_tiles(n: usize) -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    n >= BF16_TILES_MIN_TOKENS
        && *WANTED
            .get_or_init(|| std::env::var("CHORD_LLM_BF16_TILES").is_ok_and(|v| v == "1") && quant::has_bf16_tiles())
}

/// Where one token of a batch sits: its sequence (an index into the batch's caches) and position.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub seq: usize,
    pub pos: usize,
}

pub struct Compute<'a> {
    pub c: &'a ModelConfig,
    pub pool: &'a ComputePool,
    pub s: &'a mut Scratch,
}

impl Compute<'_> {
    /// out = rmsnorm(x) row by row (rows as long as the weight).
    pub fn rmsnorm(&mut self, out: &mut [f32], x: &[f32], weight: &TensorView) {
        let (w, eps) = (dequantize(weight, &mut self.s.small), self.c.norm_eps);
        let width = w.len();
        self.pool.for_each_chunk(out, width, &|start, out| {
            for (o, r) in out.chunks_exact_mut(width).zip(x[start..].chunks_exact(width)) {
                rmsnorm(o, r, w, eps);
            }
        });
    }

    /// x = rmsnorm(x) row by row, where the norm exists (rows as long as the weight: whole
    /// tokens, or single heads for Gemma's q/k norms).
    pub fn rmsnorm_in_place(&mut self, x: &mut [f32], weight: Option<&TensorView>) {
        let Some(weight) = weight else { return };
        let (w, eps) = (dequantize(weight, &mut self.s.small), self.c.norm_eps);
        self.pool.for_each_chunk(x, w.len(), &|_, rows| {
            rows.chunks_exact_mut(w.len()).for_each(|r| rmsnorm_in_place(r, w, eps))
        });
    }

    /// Adds the bias, where there is one, to every row of `m`.
    pub fn add_bias(&mut self, m: &mut [f32], bias: Option<&TensorView>) {
        let Some(bias) = bias else { return };
        let b = dequantize(bias, &mut self.s.small);
        m.chunks_exact_mut(b.len()).for_each(|r| add_in_place(r, b));
    }

    /// x += y, element-wise.
    pub fn add(&self, x: &mut [f32], y: &[f32]) {
        self.pool.for_each_chunk(x, 1024, &|start, x| add_in_place(x, &y[start..start + x.len()]));
    }

    pub fn scale(&self, x: &mut [f32], factor: f32) {
        if factor != 1.0 {
            x.iter_mut().for_each(|v| *v *= factor);
        }
    }

    /// Rotates every head of row t of `m` (rows of `width`) by `tables[t]`.
    pub fn rope(&self, m: &mut [f32], width: usize, tables: &[RopeTable]) {
        let c = self.c;
        self.pool.for_each_chunk(m, width, &|start, rows| {
            for (i, r) in rows.chunks_exact_mut(width).enumerate() {
                apply_rope(c, r, &tables[start / width + i]);
            }
        });
    }

    /// gate = act(gate) * up, element-wise: each value's result is the same however the work
    /// is split (a wide row of one token is).
    pub fn gated_activation(&self, gate: &mut [f32], up: &[f32]) {
        let act = self.c.activation;
        // Granules of 2048: one token's row of SmolLM2 (1536 values, about 1.3 µs of SiLU) is
        // done by the caller alone, sooner than a wake of the pool and a wait for the last task;
        // wider rows and batches are split.
        self.pool.for_each_chunk(gate, 2048, &|start, g| gated_activation(act, g, &up[start..start + g.len()]));
    }

    /// `out = x · Wᵀ` for each (W, out) of `jobs`, all reading the same input `x` (n, cols): x is
    /// converted once per dot-product format however many matrices read it, and the products
    /// of every matrix are one job of the pool (q/k/v, gate/up). Outputs are (n, rows of W).
    pub fn matmul(&mut self, x: &[f32], n: usize, jobs: &mut [(&TensorView, &mut [f32])]) {
        let tiles = use_bf16_tiles(n) && (x.len() / n).is_multiple_of(quant::BF16_TILE_VALUES);
        self.s.acts.reset();
        if tiles {
            self.s.tokens_bf16.pack(x, x.len() / n);
        } else {
            for (w, _) in jobs.iter() {
                self.s.acts.convert(self.pool, quant::vec_dot_type(w.ty), x, w.cols());
            }
        }
        let weights: Vec<&TensorView> = jobs.iter().map(|(w, _)| *w).collect();
        if n == 1 {
            // A single token's products are its output rows: no transposition.
            let mut outs: Vec<&mut [f32]> = jobs.iter_mut().map(|(w, out)| &mut out[..w.rows()]).collect();
            multiply(self.pool, &weights, &self.s.acts, 1, RowMajor, &mut outs);
            return;
        }
        let total = weights.iter().map(|w| w.rows() * n).sum();
        let mut products = Vec::with_capacity(jobs.len());
        let mut rest = products_buffer(&mut self.s.products, total);
        for w in &weights {
            let (p, tail) = std::mem::take(&mut rest).split_at_mut(w.rows() * n);
            products.push(p);
            rest = tail;
        }
        let layouts = if tiles {
            multiply_bf16(self.pool, &weights, &self.s.tokens_bf16, &mut products);
            vec![RowMajor; weights.len()]
        } else {
            multiply(self.pool, &weights, &self.s.acts, n, Strips, &mut products)
        };
        for (((w, out), p), layout) in jobs.iter_mut().zip(products).zip(layouts) {
            match layout {
                RowMajor => transpose(self.pool, p, w.rows(), n, out),
                Strips => from_strips(self.pool, p, w.rows(), n, out),
            }
        }
    }

    /// products (rows of `w`, n) = `w` times each of the n rows of `x`, left untransposed (the
    /// output head reads them token by token). Both parts of `w` are one job.
    pub fn matmul_untransposed(&mut self, x: &[f32], n: usize, w: &SplitMatrix) -> &[f32] {
        let (first, rows) = (&w.first, w.rows());
        self.s.acts.reset();
        self.s.acts.convert(self.pool, quant::vec_dot_type(first.ty), x, first.cols());
        let (first_products, rest_products) =
            products_buffer(&mut self.s.products, rows * n).split_at_mut(first.rows() * n);
        match &w.rest {
            None => {
                multiply(self.pool, &[first], &self.s.acts, n, RowMajor, &mut [first_products]);
            }
            Some(rest) => {
                debug_assert_eq!(rest.ty, first.ty, "a split matrix has one type");
                let mut products = [first_products, rest_products];
                multiply(self.pool, &[first, rest], &self.s.acts, n, RowMajor, &mut products);
            }
        }
        &self.s.products[..rows * n]
    }

    /// Attention of every token of the batch: token t (at `slots[t]`) attends to the positions
    /// of its own sequence's cache up to its own, within the sliding window when the layer has
    /// one. (token, head) pairs are split over the pool; within a task, consecutive heads of a
    /// token that share a key/value head are computed together.
    pub fn attention(
        &self,
        q: &[f32],
        caches: &[&KvCache],
        slots: &[Slot],
        layer: usize,
        window: Option<usize>,
        out: &mut [f32],
    ) {
        let c = self.c;
        let (hd, qd, group) = (c.head_dim, c.q_dim(), c.n_head / c.n_head_kv);
        let longest = slots.iter().map(|s| s.pos + 1).max().unwrap_or(0);
        // Keys and values read, counted per query head: the work, for the chunk count.
        let position_bytes = caches.first().map_or(0, |kv| 2 * kv.head_bytes()) * c.n_head;
        let positions: usize = slots.iter().map(|s| (s.pos + 1).min(window.unwrap_or(usize::MAX))).sum();
        let per_thread = self.pool.chunks_per_thread(positions * position_bytes);
        self.pool.for_each_chunk_by(out, hd, per_thread, &|start, heads_out| {
            let mut scratch = AttentionScratch::new(group * longest);
            let (mut i, mut rest) = (start / hd, heads_out);
            while !rest.is_empty() {
                let (t, h) = (i / c.n_head, i % c.n_head);
                // Heads h.. of token t up to the end of h's group (or of the task).
                let run = (group - h % group).min(rest.len() / hd);
                let (run_out, tail) = std::mem::take(&mut rest).split_at_mut(run * hd);
                rest = tail;
                let Slot { seq, pos } = slots[t];
                let kv = caches[seq];
                let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let kv_head = h / group;
                let keys = kv.keys(layer, kv_head, first, pos + 1);
                let values = kv.values(layer, kv_head, first, pos + 1);
                let q = &q[t * qd + h * hd..][..run * hd];
                attend_heads(c, q, kv.ty(), keys, values, &mut scratch, run_out);
                i += run;
            }
        });
    }
}

/// The first `len` values of `buf`, for `multiply` to write every one of: grown where it is
/// shorter, never shrunk, so that a layer's large products (Qwen2.5-1.5B's gate and up over a
/// chunk of 128 tokens, 9 MB) do not zero it anew after each small one (3% of a prompt's time).
fn products_buffer(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// products[i] (rows of weights[i], n) = dot products of every row of `weights[i]` with every
/// activation row of `acts` (converted to each matrix's format), rows of all matrices split over
/// the pool as one job. Each matrix's products are row-major, or where `wanted` is
/// [`ProductLayout::Strips`] and the kernels write strips for its type, in strips; returns
/// which, matrix by matrix.
fn multiply(
    pool: &ComputePool,
    weights: &[&TensorView],
    acts: &ConvertedRows,
    n: usize,
    wanted: ProductLayout,
    products: &mut [&mut [f32]],
) -> Vec<ProductLayout> {
    let layouts: Vec<ProductLayout> = weights
        .iter()
        .map(|w| match wanted == Strips && quant::products_in_strips(w.ty, n) {
            true => Strips,
            false => RowMajor,
        })
        .collect();
    // Whole rows per task (the kernels' output is by rows), eight at a time so kernels that
    // work on several rows at once (tiles of four, Q4_K's groups of eight) get full ones; whole
    // strips where a matrix's products are in strips, so that each task's are laid out as the
    // whole matrix's are.
    let granule_rows = if layouts.contains(&Strips) { quant::PRODUCT_STRIP_ROWS } else { 8 };
    let weight_bytes: usize = weights.iter().map(|w| w.rows() * w.row_bytes()).sum();
    let per_thread = pool.chunks_per_thread_streaming(weight_bytes * n, weight_bytes);
    pool.for_each_chunk_of_parts(products, granule_rows * n, per_thread, &|part, start, out| {
        let w = weights[part];
        let (cols, row_bytes) = (w.cols(), w.row_bytes());
        let acts = acts.converted(quant::vec_dot_type(w.ty));
        let first_row = start / n;
        let bytes = &w.data[first_row * row_bytes..(first_row + out.len() / n) * row_bytes];
        let interleaved = matches!(w.layout, WeightLayout::Interleaved8);
        match (layouts[part], interleaved) {
            (Strips, _) => quant::dot_rows_batch_in_strips(w.ty, cols, bytes, interleaved, acts, n, out),
            (RowMajor, false) => quant::dot_rows_batch(w.ty, cols, bytes, acts, n, out),
            (RowMajor, true) => quant::dot_rows_batch_interleaved(w.ty, cols, bytes, acts, n, out),
        }
    });
    layouts
}

/// [`multiply`] on bf16 tiles, with the activations in `tokens`.
fn multiply_bf16(pool: &ComputePool, weights: &[&TensorView], tokens: &quant::Bf16Tokens, products: &mut [&mut [f32]]) {
    let n = tokens.tokens();
    // Whole strips of the tiles' 32 rows per task.
    let weight_bytes: usize = weights.iter().map(|w| w.rows() * w.row_bytes()).sum();
    let per_thread = pool.chunks_per_thread_streaming(weight_bytes * n, weight_bytes);
    pool.for_each_chunk_of_parts(products, 32 * n, per_thread, &|part, start, out| {
        let w = weights[part];
        let row_bytes = w.row_bytes();
        let first_row = start / n;
        let bytes = &w.data[first_row * row_bytes..(first_row + out.len() / n) * row_bytes];
        let interleaved = matches!(w.layout, WeightLayout::Interleaved8);
        quant::dot_rows_batch_bf16(w.ty, interleaved, bytes, tokens, out);
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
    // Element by element, this took 8.5% of Qwen2.5-1.5B's prompts (one thread, 128 tokens).
    pool.for_each_chunk(&mut out[..n * rows], rows, &|start, out| {
        let first = start / rows;
        quant::transpose(&products[first..], n, rows, out.len() / rows, out, rows);
    });
}

/// out (n, rows) from products laid out in strips ([`ProductLayout::Strips`]), split over the
/// pool by output rows: each token's row is a copy of its piece of every strip.
fn from_strips(pool: &ComputePool, products: &[f32], rows: usize, n: usize, out: &mut [f32]) {
    let strip_rows = quant::PRODUCT_STRIP_ROWS;
    let products = &products[..rows * n];
    pool.for_each_chunk(&mut out[..n * rows], rows, &|start, out| {
        for (i, row) in out.chunks_exact_mut(rows).enumerate() {
            let t = start / rows + i;
            for (s, piece) in row.chunks_mut(strip_rows).enumerate() {
                let here = piece.len();
                piece.copy_from_slice(&products[strip_rows * s * n + t * here..][..here]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_every_value_once() {
        for threads in [1, 3] {
            let pool = ComputePool::new(threads);
            for (rows, n) in [(1, 1), (5, 1), (8, 8), (17, 9), (64, 3), (3, 40), (37, 23)] {
                let products: Vec<f32> = (0..rows * n).map(|i| i as f32).collect();
                let mut out = vec![f32::NAN; rows * n + 1];
                transpose(&pool, &products, rows, n, &mut out);
                for t in 0..n {
                    for r in 0..rows {
                        assert_eq!(out[t * rows + r], products[r * n + t], "threads {threads}, {rows}x{n}: ({r}, {t})");
                    }
                }
                assert!(out[rows * n].is_nan(), "{rows}x{n}: wrote past the end");
            }
        }
    }

    #[test]
    fn from_strips_moves_every_value_once() {
        let strip = quant::PRODUCT_STRIP_ROWS;
        for threads in [1, 3] {
            let pool = ComputePool::new(threads);
            for (rows, n) in [(32, 16), (8, 20), (40, 17), (96, 3), (70, 33)] {
                // Strip s holds (n, its rows): value i of token t is row s * strip + i.
                let mut products = Vec::new();
                for first in (0..rows).step_by(strip) {
                    let here = strip.min(rows - first);
                    products.extend((0..n).flat_map(|t| (first..first + here).map(move |r| (r * n + t) as f32)));
                }
                let mut out = vec![f32::NAN; rows * n + 1];
                from_strips(&pool, &products, rows, n, &mut out);
                for t in 0..n {
                    for r in 0..rows {
                        assert_eq!(out[t * rows + r], (r * n + t) as f32, "threads {threads}, {rows}x{n}: ({r}, {t})");
                    }
                }
                assert!(out[rows * n].is_nan(), "{rows}x{n}: wrote past the end");
            }
        }
    }
}
