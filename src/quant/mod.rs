//! Kernels for quantized and reduced-precision tensor data: dequantization, conversion of f32
//! activations into the format a weight type is multiplied with, and the row dot products that
//! matrix-vector products are built from.
//!
//! This module owns the numerics, which follow ggml's CPU backend: each weight type `ty` is
//! multiplied with activations converted to `vec_dot_type(ty)` (ggml's `type_traits[ty].vec_dot_type`),
//! because ggml's integer dot products are what models were evaluated with and what llama.cpp
//! users compare against. The scalar code here mirrors ggml's reference (`*_ref` / `*_generic`)
//! functions and is the baseline any future SIMD path is tested against.
//!
//! Layout: `float` holds F32/F16/BF16, `legacy` the 32-element block formats (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0 and the Q8_1 activation format), `kquants` the 256-element super-block formats
//! (Q2_K..Q6_K and the Q8_K activation format), `iquants` the non-linear IQ4_NL and IQ4_XS,
//! `block` the traits and the generic loops over blocks. A new format adds its block type and one
//! entry in [`kernels`] (and [`quantize_activations`] if it is an activation format).

mod bf16_tiles;
mod block;
mod float;
mod interleave;
mod iquants;
mod kquants;
mod legacy;
mod simd;

#[cfg(test)]
mod tests;

use crate::tensor::GgmlType;

pub use bf16_tiles::{
    dot_rows_batch_bf16, dot_rows_batch_bf16_reference, has_bf16_tiles, Bf16Tokens, TILE_VALUES as BF16_TILE_VALUES,
};
pub use interleave::{file_layout_row, interleave_rows8, GROUP_ROWS as INTERLEAVED_ROWS};
pub use simd::{active_isa, Isa};

use block::{ActBlock, QuantBlock, WeightBlock};
use iquants::{BlockIq4Nl, BlockIq4Xs};
use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// The scalar reference's several-rows kernel (the SIMD sets' are `simd::RowsKernel`).
pub(crate) type DotRowsFn = fn(cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]);

/// What the public functions dispatch to for one weight type: the counterpart of ggml's
/// `type_traits` / `type_traits_cpu` entries. Function pointers keep dispatch to one `match`
/// per call while the per-block loops stay monomorphized.
struct Kernels {
    dot_type: GgmlType,
    vec_dot: fn(n: usize, row: &[u8], act: &[u8]) -> f32,
    /// Several rows at once, with results bit-identical to `vec_dot` per row; None: row by row.
    dot_rows: Option<DotRowsFn>,
    dequantize: fn(src: &[u8], dst: &mut [f32]),
}

const fn block_kernels<B: WeightBlock>() -> Kernels {
    Kernels {
        dot_type: B::Act::TYPE,
        vec_dot: block::vec_dot::<B>,
        dot_rows: Some(block::dot_rows::<B>),
        dequantize: block::dequantize::<B>,
    }
}

static F32_KERNELS: Kernels =
    Kernels { dot_type: GgmlType::F32, vec_dot: float::vec_dot_f32, dot_rows: None, dequantize: float::dequantize_f32 };
static F16_KERNELS: Kernels =
    Kernels { dot_type: GgmlType::F16, vec_dot: float::vec_dot_f16, dot_rows: None, dequantize: float::dequantize_f16 };
static BF16_KERNELS: Kernels = Kernels {
    dot_type: GgmlType::BF16,
    vec_dot: float::vec_dot_bf16,
    dot_rows: None,
    dequantize: float::dequantize_bf16,
};
static Q4_0_KERNELS: Kernels = block_kernels::<BlockQ4_0>();
static Q4_1_KERNELS: Kernels = block_kernels::<BlockQ4_1>();
static Q5_0_KERNELS: Kernels = block_kernels::<BlockQ5_0>();
static Q5_1_KERNELS: Kernels = block_kernels::<BlockQ5_1>();
static Q8_0_KERNELS: Kernels = block_kernels::<BlockQ8_0>();
static Q2_K_KERNELS: Kernels = block_kernels::<BlockQ2K>();
static Q3_K_KERNELS: Kernels = block_kernels::<BlockQ3K>();
static Q4_K_KERNELS: Kernels = block_kernels::<BlockQ4K>();
static Q5_K_KERNELS: Kernels = block_kernels::<BlockQ5K>();
static Q6_K_KERNELS: Kernels = block_kernels::<BlockQ6K>();
static IQ4_NL_KERNELS: Kernels = block_kernels::<BlockIq4Nl>();
static IQ4_XS_KERNELS: Kernels = block_kernels::<BlockIq4Xs>();

/// The kernel table entry for a weight type, or None when the type is not implemented.
fn kernels(ty: GgmlType) -> Option<&'static Kernels> {
    match ty {
        GgmlType::F32 => Some(&F32_KERNELS),
        GgmlType::F16 => Some(&F16_KERNELS),
        GgmlType::BF16 => Some(&BF16_KERNELS),
        GgmlType::Q4_0 => Some(&Q4_0_KERNELS),
        GgmlType::Q4_1 => Some(&Q4_1_KERNELS),
        GgmlType::Q5_0 => Some(&Q5_0_KERNELS),
        GgmlType::Q5_1 => Some(&Q5_1_KERNELS),
        GgmlType::Q8_0 => Some(&Q8_0_KERNELS),
        GgmlType::Q2_K => Some(&Q2_K_KERNELS),
        GgmlType::Q3_K => Some(&Q3_K_KERNELS),
        GgmlType::Q4_K => Some(&Q4_K_KERNELS),
        GgmlType::Q5_K => Some(&Q5_K_KERNELS),
        GgmlType::Q6_K => Some(&Q6_K_KERNELS),
        GgmlType::IQ4_NL => Some(&IQ4_NL_KERNELS),
        GgmlType::IQ4_XS => Some(&IQ4_XS_KERNELS),
        _ => None,
    }
}

fn kernels_or_panic(ty: GgmlType) -> &'static Kernels {
    match kernels(ty) {
        Some(k) => k,
        None => {
            panic!("quant: tensor type {ty} is not supported (check quant::is_supported first)")
        }
    }
}

/// Whether this module can compute with tensors of this type: dequantize rows of it and take
/// dot products of its rows with activations.
///
/// Q8_1 and Q8_K are activation-only formats here (as in ggml, which has no dot product with
/// Q8_1 or Q8_K weights), so they are not "supported" although [`quantize_activations`] produces
/// them.
pub fn is_supported(ty: GgmlType) -> bool {
    kernels(ty).is_some()
}

/// The format activations are converted to before a dot product with rows of `ty`, as ggml does
/// (`type_traits[ty].vec_dot_type`): F32->F32, F16->F16, BF16->BF16, Q4_0->Q8_0, Q4_1->Q8_1,
/// Q5_0->Q8_0, Q5_1->Q8_1, Q8_0->Q8_0, Q2_K..Q6_K->Q8_K, IQ4_NL->Q8_0, IQ4_XS->Q8_K.
///
/// Panics if `!is_supported(ty)`.
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    kernels_or_panic(ty).dot_type
}

/// Convert f32 activations into `dot_ty` format, replacing `out`'s contents (its capacity is
/// reused, so a caller that keeps the buffer does not allocate per call).
///
/// `dot_ty` is one of the results of [`vec_dot_type`] (F32, F16, BF16, Q8_0, Q8_1, Q8_K).
/// Rounding follows ggml's reference code: f32->f16 round-to-nearest-even, f32->bf16 ggml's
/// `GGML_FP32_TO_BF16` (round-to-nearest-even, NaN made quiet), Q8_0/Q8_1 `roundf` (ties away
/// from zero) of `x / (amax / 127)`, Q8_K (`quantize_row_q8_K_ref`) round-half-to-even of
/// `x * (-127 / max)` where `max` is the signed value of largest magnitude, with an f32 scale.
///
/// Panics if `x.len()` is not a multiple of `dot_ty`'s block length or `dot_ty` is not an
/// activation format.
///
/// With a SIMD instruction set active ([`active_isa`]), Q8_0 and Q8_1 round as ggml's SIMD
/// quantizers for that architecture do instead (x86: inverse scale `127 / amax`; NEON:
/// `1 / (amax / 127)`; both round to nearest even), which is what the SIMD builds of llama.cpp
/// multiply with; see [`quantize_activations_with`].
pub fn quantize_activations(dot_ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    quantize_activations_with(active_isa(), dot_ty, x, out)
}

/// [`quantize_activations`] as paired with the kernels of instruction set `isa`: the scalar set
/// quantizes as ggml's reference code, the SIMD sets Q8_0/Q8_1 as ggml's SIMD code for that
/// architecture (x86: inverse scale `127 / amax`; NEON: the reference's `1 / (amax / 127)`; both
/// round to nearest even).
///
/// The SIMD sets' Q8_0 and Q8_1 rows also carry, after their blocks, what their kernels need
/// to read eight blocks at a time (see [`SimdTable`]): a table of per-block values (for Q8_0
/// every block's `d` as f32 and its sum of quants as i32, for Q8_1 every block's `d` and `s` as
/// f32), then the quants again, interleaved in groups of eight blocks; Q8_K rows carry their
/// quants again paired for the one-row Q4_K kernel ([`append_q8_k_pairs`]). Readers of the
/// blocks alone ([`vec_dot`]) ignore what follows them.
pub fn quantize_activations_with(isa: Isa, dot_ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    match dot_ty {
        GgmlType::Q8_0 if isa != Isa::Scalar => {
            quantize_q8_simd(isa, x, out, BlockQ8_0::quantize_like_arm, BlockQ8_0::quantize_like_simd)
        }
        GgmlType::Q8_1 if isa != Isa::Scalar => {
            quantize_q8_simd(isa, x, out, BlockQ8_1::quantize_like_arm, BlockQ8_1::quantize_like_simd)
        }
        GgmlType::Q8_K if isa != Isa::Scalar => {
            match isa.q8_k_quantizer() {
                Some(quantize) => {
                    out.clear();
                    out.resize(block::blocks_in::<BlockQ8K>(x.len()) * BlockQ8K::BYTES, 0);
                    quantize.call(x, out);
                }
                None => block::quantize::<BlockQ8K>(x, out),
            }
            append_q8_k_pairs(out);
        }
        GgmlType::F32 => float::quantize_f32(x, out),
        GgmlType::F16 => float::quantize_f16(x, out),
        GgmlType::BF16 => float::quantize_bf16(x, out),
        GgmlType::Q8_0 => block::quantize::<BlockQ8_0>(x, out),
        GgmlType::Q8_1 => block::quantize::<BlockQ8_1>(x, out),
        GgmlType::Q8_K => block::quantize::<BlockQ8K>(x, out),
        _ => panic!("quant: {dot_ty} is not an activation format"),
    }
}

/// `x` as a SIMD set's row of `B` (Q8_0 or Q8_1) blocks followed by their [`SimdTable`],
/// replacing the contents of `out`: the blocks by the set's quantizer where it has one, else as
/// `like_arm` or `like_simd` (the scalar versions of ggml's NEON and x86 rounding) make them.
fn quantize_q8_simd<B: ActBlock>(
    isa: Isa,
    x: &[f32],
    out: &mut Vec<u8>,
    like_arm: fn(&[f32]) -> B,
    like_simd: fn(&[f32]) -> B,
) {
    match isa.q8_quantizer() {
        Some(quantize) => {
            let blocks = block::blocks_in::<B>(x.len());
            out.clear();
            out.resize(blocks * B::BYTES, 0);
            quantize.call(x, B::TYPE == GgmlType::Q8_1, out);
        }
        None => block::quantize_with(x, out, if isa.is_arm() { like_arm } else { like_simd }),
    }
    simd_table(B::TYPE).append(out);
}

/// Dot product of one weight row of type `ty` (`n` elements, raw GGUF bytes) with activations
/// already in `vec_dot_type(ty)` format (from [`quantize_activations`]).
///
/// Preconditions (panics otherwise): `ty` is supported, `n` is a multiple of `ty`'s block length,
/// `row` holds at least the bytes of `n` elements of `ty` and `act` at least the bytes of `n`
/// elements of `vec_dot_type(ty)`; only those leading bytes are read.
pub fn vec_dot(ty: GgmlType, n: usize, row: &[u8], act: &[u8]) -> f32 {
    (kernels_or_panic(ty).vec_dot)(n, row, act)
}

/// `out[r] = vec_dot(ty, cols, row r, act)` for r in 0..out.len(); `weights` holds exactly
/// `out.len()` consecutive rows of `cols` elements.
///
/// Preconditions as for [`vec_dot`], and `weights.len() == out.len() * row bytes`.
///
/// Computed with the instruction set of [`active_isa`]: SIMD kernels agree with the scalar
/// reference ([`vec_dot`]) to f32 rounding, not bit for bit.
pub fn dot_rows(ty: GgmlType, cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]) {
    dot_rows_with(active_isa(), ty, cols, weights, act, out)
}

/// [`dot_rows`] with the kernels of a given instruction set (the scalar ones where it has none,
/// or where the CPU lacks it).
pub fn dot_rows_with(isa: Isa, ty: GgmlType, cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]) {
    let k = kernels_or_panic(ty);
    let row_bytes = row_bytes(ty, cols);
    assert_eq!(
        weights.len(),
        out.len() * row_bytes,
        "quant::dot_rows: weights must hold exactly {} rows of {cols} {ty} elements",
        out.len()
    );
    if row_bytes == 0 {
        out.fill(0.0);
        return;
    }
    let act_bytes = act_row_bytes_with(isa, k.dot_type, cols);
    assert!(act.len() >= act_bytes, "quant::dot_rows: activations hold {} bytes, need {act_bytes}", act.len());
    match (isa.kernels(ty), k.dot_rows) {
        (Some((simd, _)), _) => simd.call(cols, weights, act, out),
        (None, Some(dot_rows)) => dot_rows(cols, weights, act, out),
        (None, None) => {
            for (o, row) in out.iter_mut().zip(weights.chunks_exact(row_bytes)) {
                *o = (k.vec_dot)(cols, row, act);
            }
        }
    }
}

/// The batched form of [`dot_rows`] for prefill: `out[r * n_tokens + t]` is the dot product of
/// weight row `r` with activation row `t`, where `acts` holds `n_tokens` rows of `cols` values
/// already in `vec_dot_type(ty)` format, each [`act_row_bytes`] long. Each result is bit-identical
/// to [`dot_rows`] of that row with that activation row, so batched and token-by-token evaluation
/// give the same logits.
///
/// Preconditions (panics otherwise): as for [`dot_rows`], `acts.len() == n_tokens * act_row_bytes`
/// and `out.len() == n_tokens * rows`.
pub fn dot_rows_batch(ty: GgmlType, cols: usize, weights: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
    dot_rows_batch_with(active_isa(), ty, cols, weights, acts, n_tokens, out)
}

/// [`dot_rows_batch`] with the kernels of a given instruction set.
pub fn dot_rows_batch_with(
    isa: Isa,
    ty: GgmlType,
    cols: usize,
    weights: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    let Some(BatchShape { row_bytes, act_bytes, .. }) =
        batch_shape("dot_rows_batch", isa, ty, cols, weights.len(), acts.len(), n_tokens, out.len())
    else {
        return;
    };
    if row_bytes == 0 {
        out.fill(0.0);
        return;
    }
    if on_int8_tiles(isa, ty, cols, weights, false, acts, n_tokens, ProductLayout::RowMajor, out) {
        return;
    }
    if let Some((_, batch)) = isa.kernels(ty) {
        return batch.call(cols, weights, acts, n_tokens, out);
    }
    let mut one = [0.0f32; 1];
    for (w, o) in weights.chunks_exact(row_bytes).zip(out.chunks_exact_mut(n_tokens)) {
        for (a, o) in acts.chunks_exact(act_bytes).zip(o.iter_mut()) {
            dot_rows_with(isa, ty, cols, w, a, &mut one);
            *o = one[0];
        }
    }
}

/// Whether the active instruction set multiplies `ty` weights in the interleaved layout
/// (`WeightLayout::Interleaved8`, [`interleave_rows8`]): where it does, a loader that copies
/// weights may rearrange matrices of `ty` with a multiple of eight rows.
pub fn has_interleaved_kernel(ty: GgmlType) -> bool {
    active_isa().interleaved_kernel(ty).is_some()
}

/// [`dot_rows_batch`] for weights rearranged by [`interleave_rows8`]: the same results, bit for
/// bit, as for the rows in the file's layout. `weights` holds whole groups of eight rows.
///
/// Panics where [`has_interleaved_kernel`] is false, and on the preconditions of
/// [`dot_rows_batch`].
pub fn dot_rows_batch_interleaved(
    ty: GgmlType,
    cols: usize,
    weights: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    dot_rows_batch_interleaved_with(active_isa(), ty, cols, weights, acts, n_tokens, out)
}

/// [`dot_rows_batch_interleaved`] with the kernels of a given instruction set.
pub fn dot_rows_batch_interleaved_with(
    isa: Isa,
    ty: GgmlType,
    cols: usize,
    weights: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    let caller = "dot_rows_batch_interleaved";
    let Some(kernel) = interleaved_batch(caller, isa, ty, cols, weights, acts, n_tokens, out) else { return };
    if on_int8_tiles(isa, ty, cols, weights, true, acts, n_tokens, ProductLayout::RowMajor, out) {
        return;
    }
    kernel.call(cols, weights, acts, n_tokens, out)
}

/// `isa`'s kernel for `ty` weights rearranged by [`interleave_rows8`], after the checks of a
/// batched product of them (`quant::{caller}`): None when there is no token. Panics where the set
/// has no such kernel, where the lengths do not fit together, or where the rows are not whole
/// groups of eight.
#[allow(clippy::too_many_arguments)]
fn interleaved_batch(
    caller: &str,
    isa: Isa,
    ty: GgmlType,
    cols: usize,
    weights: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &[f32],
) -> Option<simd::Checked<simd::BatchKernel>> {
    let Some(kernel) = isa.interleaved_kernel(ty) else {
        panic!("quant: {} has no kernel for interleaved {ty} weights", isa.name())
    };
    let BatchShape { rows, row_bytes, .. } =
        batch_shape(caller, isa, ty, cols, weights.len(), acts.len(), n_tokens, out.len())?;
    assert!(
        rows.is_multiple_of(interleave::GROUP_ROWS) && row_bytes > 0,
        "quant::{caller}: {rows} rows are not whole groups of eight"
    );
    Some(kernel)
}

/// How a batched product lays out its (rows, tokens) results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductLayout {
    /// `out[r * n_tokens + t]`: weight row after weight row, as [`dot_rows_batch`] writes them.
    RowMajor,
    /// Strips of [`PRODUCT_STRIP_ROWS`] weight rows one after the other (the last may be
    /// shorter), each token-major: strip `s` of a matrix of `rows` rows starts at
    /// `out[PRODUCT_STRIP_ROWS * s * n_tokens]` and holds (n_tokens, its rows), row `i` of it and
    /// token `t` at `[t * its_rows + i]`. Any whole strips of a matrix are laid out the same way
    /// on their own, so a product split by whole strips needs no rearranging between the parts.
    Strips,
}

/// Weight rows per strip of [`ProductLayout::Strips`].
pub const PRODUCT_STRIP_ROWS: usize = 32;

/// Whether [`dot_rows_batch_in_strips`] multiplies `ty` weights for `n_tokens` tokens on this CPU:
/// where int8 tiles take the batch, whose products come out token by token, and would need
/// transposing twice to be row-major and then token-major again.
pub fn products_in_strips(ty: GgmlType, n_tokens: usize) -> bool {
    int8_tiles_for(active_isa(), ty, n_tokens).is_some()
}

/// [`dot_rows_batch`] (or, with `interleaved`, [`dot_rows_batch_interleaved`]), the same values
/// bit for bit, laid out as [`ProductLayout::Strips`], for a product the caller will read token
/// by token.
///
/// Panics where [`products_in_strips`] is false for `ty` and `n_tokens`, and on the
/// preconditions of [`dot_rows_batch`] (with `interleaved`, of [`dot_rows_batch_interleaved`]).
pub fn dot_rows_batch_in_strips(
    ty: GgmlType,
    cols: usize,
    weights: &[u8],
    interleaved: bool,
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    let (isa, caller) = (active_isa(), "dot_rows_batch_in_strips");
    // For their checks of the buffers' lengths (and of the interleaved rows).
    if interleaved {
        interleaved_batch(caller, isa, ty, cols, weights, acts, n_tokens, out);
    } else {
        batch_shape(caller, isa, ty, cols, weights.len(), acts.len(), n_tokens, out.len());
    }
    let done = on_int8_tiles(isa, ty, cols, weights, interleaved, acts, n_tokens, ProductLayout::Strips, out);
    assert!(done, "quant::dot_rows_batch_in_strips: {ty} weights for {n_tokens} tokens are not on int8 tiles");
}

/// The proof that int8 tiles multiply `ty` weights for `n_tokens` tokens with `isa`'s
/// arithmetic: this CPU takes their products (on AMX, or with AVX-512 VNNI, see
/// `amx_int8::Int8Tiles::get`), the set is AVX-512 VNNI (whose arithmetic the tiles repeat bit
/// for bit), the batch fills a tile and the tiles take `ty`. `CHORD_LLM_INT8_TILES=0` turns them
/// off.
#[cfg(target_arch = "x86_64")]
fn int8_tiles_for(isa: Isa, ty: GgmlType, n_tokens: usize) -> Option<simd::amx_int8::Int8Tiles> {
    let takes = isa == Isa::Avx512Vnni && n_tokens >= simd::amx_int8::MIN_TOKENS && simd::amx_int8::supports(ty);
    takes.then(simd::amx_int8::Int8Tiles::get).flatten()
}

#[cfg(not(target_arch = "x86_64"))]
fn int8_tiles_for(_isa: Isa, _ty: GgmlType, _n_tokens: usize) -> Option<()> {
    None
}

/// Multiplies on AMX int8 tiles where [`int8_tiles_for`] allows, into `out` laid out as `layout`;
/// false where it did not.
#[allow(clippy::too_many_arguments)]
fn on_int8_tiles(
    isa: Isa,
    ty: GgmlType,
    cols: usize,
    weights: &[u8],
    interleaved: bool,
    acts: &[u8],
    n_tokens: usize,
    layout: ProductLayout,
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(tiles) = int8_tiles_for(isa, ty, n_tokens) {
        return simd::amx_int8::dot_rows_batch(tiles, ty, cols, weights, interleaved, acts, n_tokens, layout, out);
    }
    let _ = (isa, ty, cols, weights, interleaved, acts, n_tokens, layout, out);
    false
}

/// What a batched product's buffers hold: rows of weights, and bytes per weight row and per
/// activation row.
struct BatchShape {
    rows: usize,
    row_bytes: usize,
    act_bytes: usize,
}

/// The shape of a batched product (`quant::{caller}`) from its buffers' lengths, None when
/// there is no token; panics where the lengths do not fit together.
#[allow(clippy::too_many_arguments)]
fn batch_shape(
    caller: &str,
    isa: Isa,
    ty: GgmlType,
    cols: usize,
    weights: usize,
    acts: usize,
    n_tokens: usize,
    out: usize,
) -> Option<BatchShape> {
    let (act_bytes, row_bytes) = (act_row_bytes_with(isa, vec_dot_type(ty), cols), row_bytes(ty, cols));
    assert_eq!(acts, n_tokens * act_bytes, "quant::{caller}: acts must hold {n_tokens} rows");
    if n_tokens == 0 {
        return None;
    }
    let rows = out / n_tokens;
    assert_eq!(out, rows * n_tokens, "quant::{caller}: out must hold rows x {n_tokens} values");
    assert_eq!(weights, rows * row_bytes, "quant::{caller}: weights must hold exactly {rows} rows");
    Some(BatchShape { rows, row_bytes, act_bytes })
}

/// One column of the table after a SIMD set's activation blocks: four bytes per block.
#[derive(Clone, Copy)]
enum TableColumn {
    /// The f16 field at this byte offset of the block, as f32.
    F16AsF32(usize),
    /// The sum of the 32 i8 quants, as i32: with it the kernels take a weight offset off once
    /// per block (`offset * sum(a)`) instead of with a second integer dot product per block.
    QuantSum,
}

/// What a SIMD set's activation rows of one 32-value format carry after their blocks. (Q8_K
/// rows need no table: its blocks already hold their sums of 16 quants, `bsums`; they carry
/// their quants again in the pairs of [`append_q8_k_pairs`].)
///
/// First a table, column after column, four bytes per block, so that kernels load a value of
/// eight blocks with one instruction instead of gathering it for every weight row.
///
/// Then the quants of every group of eight blocks interleaved four bytes at a time (256 bytes
/// per group, the last group padded with zeros): bytes `32 * j + 4 * l..+ 4` of a group are
/// quants `4 * j..4 * j + 4` of its block `l`. Against weights transposed the same way, eight
/// integer dot products fill an accumulator whose lane `l` is block `l`'s whole dot product,
/// with no horizontal sums; prefill's kernels use them.
pub(crate) struct SimdTable {
    block_bytes: usize,
    /// Where a block's 32 quants start.
    quants_at: usize,
    columns: &'static [TableColumn],
}

impl SimdTable {
    /// Q8_0: `d`, then the sum of quants.
    const Q8_0: SimdTable = SimdTable {
        block_bytes: BlockQ8_0::BYTES,
        quants_at: 2,
        columns: &[TableColumn::F16AsF32(0), TableColumn::QuantSum],
    };
    /// Q8_1: `d`, then `s` (`d * sum(quants)`, rounded to f16 as ggml stores it).
    const Q8_1: SimdTable = SimdTable {
        block_bytes: BlockQ8_1::BYTES,
        quants_at: 4,
        columns: &[TableColumn::F16AsF32(0), TableColumn::F16AsF32(2)],
    };

    const fn of(dot_ty: GgmlType) -> Option<&'static SimdTable> {
        match dot_ty {
            GgmlType::Q8_0 => Some(&SimdTable::Q8_0),
            GgmlType::Q8_1 => Some(&SimdTable::Q8_1),
            _ => None,
        }
    }

    /// Appends the table and the interleaved quants of the blocks `out` holds.
    fn append(&self, out: &mut Vec<u8>) {
        let nb = out.len() / self.block_bytes;
        let blocks_end = nb * self.block_bytes;
        // Zeros stand for the quants of the blocks a last group of eight lacks.
        out.resize(blocks_end + self.bytes_after(nb), 0);
        let (blocks, after) = out.split_at_mut(blocks_end);
        let (table, interleaved) = after.split_at_mut(self.column_at(nb, self.columns.len()) - blocks_end);
        let blocks: &[u8] = blocks;
        for (&column, entries) in self.columns.iter().zip(table.chunks_exact_mut(4 * nb)) {
            for (block, entry) in blocks.chunks_exact(self.block_bytes).zip(entries.chunks_exact_mut(4)) {
                let value = match column {
                    TableColumn::F16AsF32(at) => {
                        float::f16_to_f32(u16::from_le_bytes([block[at], block[at + 1]])).to_le_bytes()
                    }
                    TableColumn::QuantSum => {
                        block[self.quants_at..][..32].iter().map(|&q| q as i8 as i32).sum::<i32>().to_le_bytes()
                    }
                };
                entry.copy_from_slice(&value);
            }
        }
        // Group g's 256 bytes: for each four quants j of a block, those of its eight blocks.
        for (group, dst) in blocks.chunks(8 * self.block_bytes).zip(interleaved.chunks_exact_mut(256)) {
            for (l, block) in group.chunks_exact(self.block_bytes).enumerate() {
                for (j, quad) in block[self.quants_at..][..32].chunks_exact(4).enumerate() {
                    dst[32 * j + 4 * l..][..4].copy_from_slice(quad);
                }
            }
        }
    }

    /// Where column `column` of the table starts in a row of `nb` blocks (its entry for block
    /// `b` is four bytes at `4 * b` from there); `column == columns.len()` is where the
    /// interleaved quants start.
    const fn column_at(&self, nb: usize, column: usize) -> usize {
        nb * self.block_bytes + 4 * column * nb
    }

    /// Bytes after the blocks of a row of `nb` blocks.
    const fn bytes_after(&self, nb: usize) -> usize {
        self.column_at(nb, self.columns.len()) - nb * self.block_bytes + nb.div_ceil(8) * 256
    }
}

/// The table of a SIMD set's activation rows of `dot_ty`; panics for a format without one.
const fn simd_table(dot_ty: GgmlType) -> &'static SimdTable {
    match SimdTable::of(dot_ty) {
        Some(table) => table,
        None => panic!("quant: this activation format has no SIMD table"),
    }
}

/// Where column `column` of the table of a SIMD set's activation row of `nb` blocks of
/// `dot_ty` starts ([`SimdTable`]); the x86 kernels read the table through it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn simd_column_at(dot_ty: GgmlType, nb: usize, column: usize) -> usize {
    simd_table(dot_ty).column_at(nb, column)
}

/// Where the interleaved quants of a SIMD set's activation row of `nb` blocks of `dot_ty`
/// start ([`SimdTable`]): group `g` of eight blocks is the 256 bytes at `256 * g` from there.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn simd_interleaved_at(dot_ty: GgmlType, nb: usize) -> usize {
    let table = simd_table(dot_ty);
    table.column_at(nb, table.columns.len())
}

/// Bytes per block of the paired quants a SIMD set's Q8_K rows carry ([`append_q8_k_pairs`]).
pub(crate) const Q8_K_PAIRS_BYTES: usize = 256;

/// Appends, after a SIMD set's Q8_K blocks, each block's quants again arranged for the one-row
/// K-quant kernels: per 64 quants `c` (two 32-value groups, `lo` then `hi`), 32 bytes `A` and 32
/// bytes `B` whose four-byte lanes alternate between the groups. Lane `l` of `A` holds quants
/// `4l..4l + 4` of `lo` (even `l`) or of `hi` (odd `l`); lane `l` of `B` holds those of the
/// partner lane `l ^ 1`, again from `lo` for even `l` and `hi` for odd. Weights split the same
/// way fill one accumulator whose even lanes sum `lo`'s products and odd lanes `hi`'s, so each
/// block needs a reduction of four vectors instead of eight.
fn append_q8_k_pairs(out: &mut Vec<u8>) {
    /// Where each four bytes of a block's paired quants come from, as an offset into its quants.
    const SOURCE: [usize; Q8_K_PAIRS_BYTES / 4] = {
        let mut source = [0; Q8_K_PAIRS_BYTES / 4];
        let mut k = 0;
        while k < source.len() {
            let (c, partner, l) = (k / 16, (k / 8) % 2 == 1, k % 8);
            let group = 2 * c + l % 2;
            let from_lane = if partner { l ^ 1 } else { l };
            source[k] = 32 * group + 4 * from_lane;
            k += 1;
        }
        source
    };
    const QUANTS_AT: usize = 4;
    let start = out.len();
    let nb = start / BlockQ8K::BYTES;
    out.resize(start + nb * Q8_K_PAIRS_BYTES, 0);
    let (blocks, pairs) = out.split_at_mut(start);
    for (block, pair) in blocks.chunks_exact(BlockQ8K::BYTES).zip(pairs.chunks_exact_mut(Q8_K_PAIRS_BYTES)) {
        let quants = &block[QUANTS_AT..QUANTS_AT + 256];
        for (quad, &from) in pair.chunks_exact_mut(4).zip(&SOURCE) {
            quad.copy_from_slice(&quants[from..from + 4]);
        }
    }
}

/// Bytes of one row of `n` activations converted to `dot_ty` by [`quantize_activations`].
pub fn act_row_bytes(dot_ty: GgmlType, n: usize) -> usize {
    act_row_bytes_with(active_isa(), dot_ty, n)
}

/// Bytes of one row of `n` activations converted to `dot_ty` by [`quantize_activations_with`]
/// for `isa`: the blocks, plus for the SIMD sets' Q8_0 and Q8_1 what [`SimdTable`] adds and
/// for their Q8_K the paired quants ([`append_q8_k_pairs`]). (The NEON kernels read only the
/// blocks; the rows keep one layout for every SIMD set.)
pub fn act_row_bytes_with(isa: Isa, dot_ty: GgmlType, n: usize) -> usize {
    match isa {
        Isa::Scalar => row_bytes(dot_ty, n),
        _ => simd_act_row_bytes(dot_ty, dot_ty.block_bytes() as usize, n / dot_ty.block_len() as usize),
    }
}

/// [`act_row_bytes_with`] for a SIMD set, `nb` blocks of `dot_ty`: what the SIMD kernels slice
/// activation rows by.
pub(crate) const fn simd_act_row_bytes(dot_ty: GgmlType, block_bytes: usize, nb: usize) -> usize {
    match (SimdTable::of(dot_ty), dot_ty) {
        (Some(table), _) => nb * block_bytes + table.bytes_after(nb),
        (None, GgmlType::Q8_K) => nb * (block_bytes + Q8_K_PAIRS_BYTES),
        (None, _) => nb * block_bytes,
    }
}

/// Dot product of an f16 vector (little-endian bytes, two per value of `b`) with an f32 vector,
/// with the SIMD kernels of [`active_isa`] where it has them (attention's k.q products).
pub fn dot_f16_f32(a: &[u8], b: &[f32]) -> f32 {
    assert_eq!(a.len(), 2 * b.len(), "quant::dot_f16_f32: vectors of different lengths");
    let mut out = [0.0f32];
    dot_f16_f32_rows(a, a.len(), 0, b, &mut out);
    out[0]
}

/// `out[t] = dot_f16_f32(row t, b)` for the f16 vectors of `2 * b.len()` bytes at byte `at` of
/// each `row_bytes` row of `rows` (attention: one query head against every cached key), each
/// bit-identical to [`dot_f16_f32`] of that vector alone.
pub fn dot_f16_f32_rows(rows: &[u8], row_bytes: usize, at: usize, b: &[f32], out: &mut [f32]) {
    dot_f16_f32_heads(rows, row_bytes, at, b, b.len(), out)
}

/// [`dot_f16_f32_rows`] for several query vectors of `n` values, one after another in `b`,
/// against the same rows: `out[h * len + t]` is vector h's product with row t (`len` rows;
/// `out` holds `b.len() / n` runs of `len`). Each is bit-identical to its
/// [`dot_f16_f32_rows`] alone; the kernels convert each row once for all the vectors
/// (attention's query heads that share a key head).
pub fn dot_f16_f32_heads(rows: &[u8], row_bytes: usize, at: usize, b: &[f32], n: usize, out: &mut [f32]) {
    dot_f16_f32_heads_with(active_isa(), rows, row_bytes, at, b, n, out)
}

/// [`dot_f16_f32_heads`] with the kernels of a given instruction set.
pub(crate) fn dot_f16_f32_heads_with(
    isa: Isa,
    rows: &[u8],
    row_bytes: usize,
    at: usize,
    b: &[f32],
    n: usize,
    out: &mut [f32],
) {
    if n == 0 {
        // Empty vectors: every product is an empty sum.
        assert!(b.is_empty(), "quant::dot_f16_f32_heads: queries of length 0 hold values");
        out.fill(0.0);
        return;
    }
    let len = f16_heads_rows("dot_f16_f32_heads", rows, row_bytes, at, n, b.len(), out.len());
    match isa.f16_kernels() {
        Some((dot, _)) => dot.call(rows, row_bytes, at, b, n, out),
        None => {
            for (b, out) in b.chunks_exact(n).zip(out.chunks_exact_mut(len.max(1))) {
                for (t, o) in out.iter_mut().enumerate() {
                    let a = &rows[t * row_bytes + at..][..2 * n];
                    *o = a
                        .chunks_exact(2)
                        .zip(b)
                        .map(|(h, &v)| float::f16_to_f32(u16::from_le_bytes([h[0], h[1]])) * v)
                        .sum();
                }
            }
        }
    }
}

/// `out[i] += p * v[i]` for an f16 vector `v` (little-endian bytes, two per output value), with
/// the SIMD kernels of [`active_isa`] where it has them (attention's weighted sum of values).
pub fn axpy_f16(out: &mut [f32], p: f32, v: &[u8]) {
    assert_eq!(2 * out.len(), v.len(), "quant::axpy_f16: f16 vector and output of different lengths");
    axpy_f16_rows(out, &[p], v, v.len(), 0)
}

/// [`axpy_f16`] with weight `p[t]` and the f16 vector of `2 * out.len()` bytes at byte `at` of
/// row t of `rows` (rows of `row_bytes`), for every t in order (attention: one head's weighted
/// sum of every cached value).
pub fn axpy_f16_rows(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize) {
    axpy_f16_heads(out, p, rows, row_bytes, at, out.len())
}

/// [`axpy_f16_rows`] for several heads against the same rows: `out` holds one run of `n`
/// outputs per head, `p` one run of weights per head. Each head's outputs are bit-identical to
/// its [`axpy_f16_rows`] alone; the kernels convert each row once for all the heads (attention's
/// query heads that share a value head).
pub fn axpy_f16_heads(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize, n: usize) {
    axpy_f16_heads_with(active_isa(), out, p, rows, row_bytes, at, n)
}

/// [`axpy_f16_heads`] with the kernels of a given instruction set.
pub(crate) fn axpy_f16_heads_with(
    isa: Isa,
    out: &mut [f32],
    p: &[f32],
    rows: &[u8],
    row_bytes: usize,
    at: usize,
    n: usize,
) {
    if n == 0 {
        assert!(out.is_empty(), "quant::axpy_f16_heads: outputs of length 0 hold values");
        return;
    }
    let len = f16_heads_rows("axpy_f16_heads", rows, row_bytes, at, n, out.len(), p.len());
    match isa.f16_kernels() {
        Some((_, axpy)) => axpy.call(out, p, rows, row_bytes, at, n),
        None => {
            for (out, p) in out.chunks_exact_mut(n).zip(p.chunks_exact(len.max(1))) {
                for (t, &p) in p.iter().enumerate() {
                    let v = &rows[t * row_bytes + at..][..2 * n];
                    for (o, h) in out.iter_mut().zip(v.chunks_exact(2)) {
                        *o += p * float::f16_to_f32(u16::from_le_bytes([h[0], h[1]]));
                    }
                }
            }
        }
    }
}

/// `gate[i] = silu(gate[i]) * up[i]`, i.e. `gate / (1 + e^-gate) * up` (SwiGLU). The SIMD sets
/// (x86 and NEON) compute `e^-gate` as ggml's AVX2 and NEON builds do, with a vector polynomial
/// within 1.5 ulp of `expf` (`simd::vexp`); the scalar set with the C library's `expf`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "quant::silu_mul: gate and up differ in length");
    match active_isa().silu_mul_kernel() {
        Some(kernel) => kernel.call(gate, up),
        None => gate.iter_mut().zip(up).for_each(|(g, &u)| *g = *g / (1.0 + (-*g).exp()) * u),
    }
}

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` for `rows` x `cols` values: a matrix
/// (rows of `src_stride` in `src`) transposed into rows of `dst_stride` in `dst`. The x86 sets
/// move squares of 8 x 8 through registers; elsewhere one value at a time.
///
/// Panics where `src` or `dst` is too short, or a stride is shorter than its rows.
pub fn transpose(src: &[f32], src_stride: usize, rows: usize, cols: usize, dst: &mut [f32], dst_stride: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src_stride >= cols && dst_stride >= rows,
        "quant::transpose: strides {src_stride}, {dst_stride} for {rows} x {cols}"
    );
    assert!(
        src.len() >= (rows - 1) * src_stride + cols && dst.len() >= (cols - 1) * dst_stride + rows,
        "quant::transpose: {rows} x {cols} values past the end of a buffer"
    );
    match active_isa().transpose_kernel() {
        Some(kernel) => kernel.call(src, src_stride, rows, cols, dst, dst_stride),
        None => {
            for r in 0..rows {
                for c in 0..cols {
                    dst[c * dst_stride + r] = src[r * src_stride + c];
                }
            }
        }
    }
}

/// `gate[i] = gelu(gate[i]) * up[i]` (GeGLU) as ggml's CPU build computes it: the tanh
/// approximation looked up from a table indexed by the input rounded to f16 and holding f16
/// results (GGML_GELU_FP16), saturating outside [-10, 10]. The x86 sets round, look up and
/// widen eight values at a time, with the same bits as the scalar code for every input.
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "quant::gelu_mul: gate and up differ in length");
    let table = gelu_table();
    match active_isa().gelu_mul_kernel() {
        Some(kernel) => kernel.call(gate, up, table),
        None => gate.iter_mut().zip(up).for_each(|(g, &u)| *g = gelu_lane(*g, table) * u),
    }
}

/// Entries of the GELU table: one per f16 bit pattern, and one more, which a SIMD gather's
/// 4-byte read of the last entry takes in.
pub(crate) const GELU_TABLE_LEN: usize = (1 << 16) + 1;

/// One value's GELU as [`gelu_mul`] takes it from `table`.
pub(crate) fn gelu_lane(x: f32, table: &[u16; GELU_TABLE_LEN]) -> f32 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    half::f16::from_bits(table[half::f16::from_f32(x).to_bits() as usize]).to_f32()
}

/// The GELU table, computed once (128 KiB), as ggml does: a lookup costs far less than the tanh
/// it replaces.
fn gelu_table() -> &'static [u16; GELU_TABLE_LEN] {
    static TABLE: std::sync::OnceLock<Box<[u16; GELU_TABLE_LEN]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let entries: Vec<u16> = (0..=u16::MAX).map(|bits| gelu_f16(half::f16::from_bits(bits))).chain([0]).collect();
        entries.into_boxed_slice().try_into().expect("one entry per f16 and one more")
    })
}

/// The table's entry for input `x`: the tanh approximation in f32, rounded to f16.
fn gelu_f16(x: half::f16) -> u16 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const GELU_COEF_A: f32 = 0.044715;
    let x = x.to_f32();
    let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh());
    half::f16::from_f32(y).to_bits()
}

/// `x = softmax(x)` in place: `e^(x - max(x))` with the C library's `expf` (as llama.cpp's flash
/// attention takes it), added in f64 in order, times `1 / sum` rounded to f32 once. The x86 sets
/// compute the same with glibc's algorithm eight values at a time (`simd::expf`): bit-identical
/// where the C library is glibc.
pub fn softmax(x: &mut [f32]) {
    match active_isa().softmax_kernel() {
        Some(kernel) => kernel.call(x),
        None => softmax_scalar(x),
    }
}

/// [`softmax`] as the scalar set computes it, one `expf` at a time.
pub(crate) fn softmax_scalar(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// How many rows an f16 kernel call over several heads covers, after checking that `vectors`
/// values are whole heads of `n` (n > 0), that `runs` values are one run per head (a score or a
/// weight per row), and that those rows of `2 * n` bytes at `at` fit in `rows`.
fn f16_heads_rows(
    call: &str,
    rows: &[u8],
    row_bytes: usize,
    at: usize,
    n: usize,
    vectors: usize,
    runs: usize,
) -> usize {
    let heads = vectors / n;
    assert_eq!(heads * n, vectors, "quant::{call}: vectors not a whole number of heads of {n}");
    let len = runs.checked_div(heads).unwrap_or(0);
    assert_eq!(heads * len, runs, "quant::{call}: not one run of values per head");
    assert_f16_rows_fit(rows, row_bytes, at, 2 * n, len);
    len
}

/// Checks, once for every instruction set's kernels, that `n_rows` rows of `row_bytes` hold
/// `len` bytes at byte `at` of each.
fn assert_f16_rows_fit(rows: &[u8], row_bytes: usize, at: usize, len: usize, n_rows: usize) {
    assert!(n_rows == 0 || (n_rows - 1) * row_bytes + at + len <= rows.len(), "f16 rows too short");
}

/// Dequantize `dst.len()` values of type `ty` from the start of `src`.
///
/// Preconditions (panics otherwise): `ty` is supported, `dst.len()` is a multiple of its block
/// length and `src` holds at least that many elements' bytes.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    (kernels_or_panic(ty).dequantize)(src, dst)
}

/// Bytes of `n` elements of `ty`; panics when `n` is not a whole number of blocks.
fn row_bytes(ty: GgmlType, n: usize) -> usize {
    let block_len = ty.block_len() as usize;
    assert!(n.is_multiple_of(block_len), "quant: {n} elements is not a whole number of {ty} blocks of {block_len}");
    n / block_len * ty.block_bytes() as usize
}
