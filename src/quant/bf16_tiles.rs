//! Batched matrix products in bf16 on AMX tiles (Intel Xeon since Sapphire Rapids), beside the
//! integer kernels rather than in place of them: a prompt's products on the tiles take a fraction
//! of the integer kernels' time, but they are not ggml's arithmetic. Weights are dequantized to
//! f32 and rounded to bf16, activations rounded to bf16 (instead of quantized to Q8), products
//! summed in f32. Their results differ from the integer kernels' by about what llama.cpp's
//! builds differ by among themselves, so a token multiplied here does not get logits
//! bit-identical to the same token multiplied by the integer kernels: whoever uses these decides
//! which tokens take them (see `model::compute`).

use super::float::f32_to_bf16;
use super::{dequantize_row, file_layout_row, row_bytes};
use crate::tensor::GgmlType;

/// Tokens per tile, and values of the inner dimension per tile row (64 bytes of bf16).
pub(crate) const TILE_TOKENS: usize = 16;
pub const TILE_VALUES: usize = 32;
/// Tokens are packed in pairs of tiles: the products take two token tiles per pass.
pub(crate) const TOKEN_GROUP: usize = 2 * TILE_TOKENS;

/// Whether this CPU and system can run [`dot_rows_batch_bf16`]: x86-64 with AMX-TILE and
/// AMX-BF16, on Linux (which grants the tile state when asked).
pub fn has_bf16_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::simd::amx::Available::get().is_some();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Activations rounded to bf16 and laid out as the tile products read them: tokens in tiles of
/// [`TILE_TOKENS`], an even number of tiles (the tokens past the last zero); within a tile,
/// row `p` holds values `2p` and `2p + 1` of each of its tokens, token after token, so that a
/// tile's [`TILE_VALUES`] values of the inner dimension are 1 KiB in one piece.
#[derive(Default)]
pub struct Bf16Tokens {
    packed: Vec<u16>,
    tokens: usize,
    cols: usize,
}

impl Bf16Tokens {
    /// Replaces the contents with `x`: rows of `cols` values, one per token, rounded as ggml's
    /// `GGML_FP32_TO_BF16` does. `cols` is a multiple of 32 (every block length is).
    pub fn pack(&mut self, x: &[f32], cols: usize) {
        assert!(
            cols > 0 && cols.is_multiple_of(TILE_VALUES) && x.len().is_multiple_of(cols),
            "quant: bf16 tiles take rows of a multiple of {TILE_VALUES} values, not {cols}"
        );
        self.tokens = x.len() / cols;
        self.cols = cols;
        self.packed.clear();
        self.packed.resize(self.tokens.div_ceil(TOKEN_GROUP) * TOKEN_GROUP * cols, 0);
        for (tile, packed) in self.packed.chunks_exact_mut(TILE_TOKENS * cols).enumerate() {
            for (i, row) in x.chunks_exact(cols).skip(tile * TILE_TOKENS).take(TILE_TOKENS).enumerate() {
                for (pair, v) in row.chunks_exact(2).enumerate() {
                    let at = pair * 2 * TILE_TOKENS + 2 * i;
                    packed[at] = f32_to_bf16(v[0]);
                    packed[at + 1] = f32_to_bf16(v[1]);
                }
            }
        }
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The packed values: pairs of token tiles, each `TILE_TOKENS * cols` values.
    pub(crate) fn packed(&self) -> &[u16] {
        &self.packed
    }
}

/// `out[r * tokens + t]` = weight row `r` · token `t` in bf16 with f32 sums, for the rows of
/// `weights` (type `ty`, `cols` values each; `interleaved`: rearranged by `interleave_rows8`,
/// whole groups of eight rows) and the tokens of `acts`.
///
/// Panics where [`has_bf16_tiles`] is false, `ty` is not supported, or the lengths do not fit
/// together.
pub fn dot_rows_batch_bf16(ty: GgmlType, interleaved: bool, weights: &[u8], acts: &Bf16Tokens, out: &mut [f32]) {
    let (cols, tokens) = (acts.cols, acts.tokens);
    let row_bytes = row_bytes(ty, cols);
    assert!(row_bytes > 0 && weights.len().is_multiple_of(row_bytes), "quant: weights are not whole rows");
    let rows = weights.len() / row_bytes;
    // Only for the types without a dequantizer of the tiles' own, and interleaved weights.
    let (mut values, mut file_row) = (Vec::new(), Vec::new());
    #[cfg(target_arch = "x86_64")]
    let amx = super::simd::amx::Available::get();
    let mut fill_strip = |first_row: usize, strip: &mut [u16]| {
        for (i, dst) in strip.chunks_exact_mut(cols).enumerate() {
            let row = first_row + i;
            #[cfg(target_arch = "x86_64")]
            if let Some(amx) = amx {
                if interleaved && ty == GgmlType::Q4_K {
                    super::simd::amx::dequantize_bf16_q4_k_interleaved(amx, weights, row, dst);
                    continue;
                }
                if super::simd::amx::dequantize_bf16_row32(amx, ty, interleaved, weights, row, dst) {
                    continue;
                }
            }
            let src = if interleaved {
                file_layout_row(ty, cols, weights, row, &mut file_row);
                &file_row[..]
            } else {
                &weights[row * row_bytes..][..row_bytes]
            };
            #[cfg(target_arch = "x86_64")]
            if amx.is_some_and(|amx| super::simd::amx::dequantize_bf16(amx, ty, src, dst)) {
                continue;
            }
            values.resize(cols, 0.0);
            dequantize_row(ty, src, &mut values);
            for (d, &v) in dst.iter_mut().zip(&values) {
                *d = f32_to_bf16(v);
            }
        }
    };
    #[cfg(target_arch = "x86_64")]
    if let Some(amx) = amx {
        return super::simd::amx::multiply(amx, cols, rows, tokens, acts.packed(), &mut fill_strip, out);
    }
    let _ = (&mut fill_strip, rows, tokens, out);
    panic!("quant: this CPU has no bf16 tiles (check has_bf16_tiles first)");
}

/// The scalar reference of [`dot_rows_batch_bf16`]: the same bf16 values, multiplied and summed
/// in f32 one after another (the tiles sum in another order, so results agree to f32 rounding).
pub fn dot_rows_batch_bf16_reference(ty: GgmlType, cols: usize, weights: &[u8], x: &[f32], out: &mut [f32]) {
    let row_bytes = row_bytes(ty, cols);
    let (rows, tokens) = (weights.len() / row_bytes, x.len() / cols);
    let round = |v: f32| super::float::bf16_to_f32(f32_to_bf16(v));
    let mut values = vec![0.0f32; cols];
    for r in 0..rows {
        dequantize_row(ty, &weights[r * row_bytes..][..row_bytes], &mut values);
        for (t, act) in x.chunks_exact(cols).enumerate().take(tokens) {
            out[r * tokens + t] = values.iter().zip(act).map(|(&w, &a)| round(w) * round(a)).sum();
        }
    }
}
