//! The block abstraction shared by all block-quantized formats, and the generic row loops
//! (dequantize, quantize activations, dot product) written once over it.
//!
//! GGUF stores a quantized row as consecutive fixed-size blocks, each decoding to `LEN` values
//! independently of its neighbours. A format implements [`QuantBlock`] (decode), an activation
//! format also [`ActBlock`] (encode from f32), and a weight format [`WeightBlock`] (dot product
//! with one block of its activation format). Blocks are read out of the byte slices by value
//! rather than by casting pointers: the copy is free after inlining and keeps this module free of
//! `unsafe` and of alignment concerns (the f16 fields of GGUF blocks are not 2-byte aligned in a
//! memory-mapped file). For the 256-value formats the copy is a `memcpy` of up to 292 bytes, a
//! cost [`dot_rows`] amortizes for activation blocks by reading each once per group of rows.
//!
//! Also here: the small byte-level helpers every block format's `read` uses, and [`DotAcc`], the
//! accumulator state of a row dot product.

use super::float::{f16_to_f32, f32_to_f16};
use crate::tensor::GgmlType;

/// An f16 as stored in a block: its little-endian bytes. Keeping it a byte array gives the block
/// structs alignment 1, so their layout is GGUF's byte for byte wherever the data sits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct F16Le(pub [u8; 2]);

impl F16Le {
    #[inline]
    pub(crate) fn from_f32(x: f32) -> Self {
        F16Le(f32_to_f16(x).to_le_bytes())
    }

    #[inline]
    pub(crate) fn to_f32(self) -> f32 {
        f16_to_f32(u16::from_le_bytes(self.0))
    }
}

/// `N` bytes of `b` starting at `at`. Used on fixed-size blocks, where the bounds are constants
/// and the checks compile away.
#[inline(always)]
pub(crate) fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// `N` signed bytes of `b` starting at `at`.
#[inline(always)]
pub(crate) fn field_i8<const N: usize>(b: &[u8], at: usize) -> [i8; N] {
    field::<N>(b, at).map(|q| q as i8)
}

/// The block's bytes as a fixed-size array; panics on a wrong length (a caller bug).
#[inline(always)]
pub(crate) fn block_bytes<const N: usize>(bytes: &[u8]) -> &[u8; N] {
    match bytes.try_into() {
        Ok(b) => b,
        Err(_) => panic!("quant: block of {} bytes, expected {N}", bytes.len()),
    }
}

/// The output slice of one block's values as a fixed-size array; panics on a wrong length.
#[inline(always)]
pub(crate) fn block_values<const N: usize>(out: &mut [f32]) -> &mut [f32; N] {
    let len = out.len();
    match out.try_into() {
        Ok(o) => o,
        Err(_) => panic!("quant: {len} values for a block of {N}"),
    }
}

/// The f32 accumulators of a row dot product, shaped like those of ggml's generic kernels.
///
/// Most kernels add each block's contribution to `sum` in block order. The Q3_K..Q6_K kernels
/// keep ggml's eight per-lane sums instead (`sums[l] += d * aux32[l]`, lane `l` holding the
/// elements `l mod 8` of every block) and subtract their min terms from `sum`; the lanes are
/// added to `sum` in lane order after the last block, as ggml does. For kernels that never touch
/// the lanes the result is just `sum`: adding +0.0 changes nothing, as `sum` starts at +0.0 and
/// so is never -0.0.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DotAcc {
    pub sum: f32,
    pub lanes: [f32; 8],
}

impl DotAcc {
    #[inline(always)]
    fn finish(self) -> f32 {
        self.lanes.iter().fold(self.sum, |s, &l| s + l)
    }
}

/// A GGML block format: `BYTES` bytes encoding `LEN` values.
pub(crate) trait QuantBlock: Sized {
    /// The tensor type whose data is a sequence of these blocks.
    const TYPE: GgmlType;
    /// Values per block.
    const LEN: usize;
    /// Bytes per block in GGUF (equal to the `#[repr(C)]` struct's size).
    const BYTES: usize;

    /// Decode the block from exactly `BYTES` bytes.
    fn read(bytes: &[u8]) -> Self;

    /// Write the `LEN` values the block encodes into `out` (`out.len() == LEN`).
    fn dequantize(&self, out: &mut [f32]);
}

/// A block format activations are converted to (ggml's `vec_dot_type` formats).
pub(crate) trait ActBlock: QuantBlock {
    /// Quantize exactly `LEN` values, as ggml's reference `quantize_row_*_ref` does.
    fn quantize(x: &[f32]) -> Self;

    /// Encode into exactly `BYTES` bytes (the inverse of [`QuantBlock::read`]).
    fn write(&self, out: &mut [u8]);
}

/// A block format weights are stored in, with its dot product against activation blocks.
pub(crate) trait WeightBlock: QuantBlock {
    /// The activation block format this weight format is multiplied with. Must have the same `LEN`.
    type Act: ActBlock;

    /// Add this block's contribution to a row dot product to `acc`, computed as ggml's scalar
    /// `ggml_vec_dot_*_generic` does for one block.
    fn dot(&self, act: &Self::Act, acc: &mut DotAcc);
}

/// Number of whole blocks in `n` values; panics when `n` is not a multiple of `B::LEN`.
pub(crate) fn blocks_in<B: QuantBlock>(n: usize) -> usize {
    assert!(n.is_multiple_of(B::LEN), "quant: {n} values is not a whole number of {} blocks of {}", B::TYPE, B::LEN);
    n / B::LEN
}

/// Dot product of the first `n` values of a weight row with activations in `B::Act` format.
/// Blocks are accumulated in order into a [`DotAcc`], as ggml's generic (non-SIMD) kernels do.
pub(crate) fn vec_dot<B: WeightBlock>(n: usize, row: &[u8], act: &[u8]) -> f32 {
    const { assert!(B::LEN == <B::Act as QuantBlock>::LEN) };
    let nb = blocks_in::<B>(n);
    let row = &row[..nb * B::BYTES];
    let act = &act[..nb * B::Act::BYTES];
    let mut acc = DotAcc::default();
    for (w, a) in row.chunks_exact(B::BYTES).zip(act.chunks_exact(B::Act::BYTES)) {
        B::read(w).dot(&B::Act::read(a), &mut acc);
    }
    acc.finish()
}

/// Rows per group in [`dot_rows`].
const ROW_GROUP: usize = 4;

/// `out[r]` = [`vec_dot`] of row `r` of `weights` (`cols` values each) with `act`.
///
/// Rows are taken `ROW_GROUP` at a time, so each activation block is decoded once per group and
/// stays in registers or L1 while it meets the blocks of those rows. Per row the operations and
/// their order are exactly those of [`vec_dot`], so the results are bit-identical to it.
/// `weights.len()` must be `out.len()` rows' bytes (the caller checks, with a better message).
pub(crate) fn dot_rows<B: WeightBlock>(cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]) {
    let nb = blocks_in::<B>(cols);
    let row_bytes = nb * B::BYTES;
    assert_eq!(weights.len(), out.len() * row_bytes, "quant: weights for {} rows", out.len());
    if row_bytes == 0 {
        out.fill(0.0);
        return;
    }
    let act = &act[..nb * B::Act::BYTES];
    let mut out_groups = out.chunks_exact_mut(ROW_GROUP);
    let mut weight_groups = weights.chunks_exact(ROW_GROUP * row_bytes);
    for (o, w) in (&mut out_groups).zip(&mut weight_groups) {
        let mut accs = [DotAcc::default(); ROW_GROUP];
        for (i, a) in act.chunks_exact(B::Act::BYTES).enumerate() {
            let a = B::Act::read(a);
            for (r, acc) in accs.iter_mut().enumerate() {
                let at = r * row_bytes + i * B::BYTES;
                B::read(&w[at..at + B::BYTES]).dot(&a, acc);
            }
        }
        for (o, acc) in o.iter_mut().zip(accs) {
            *o = acc.finish();
        }
    }
    let rest = weight_groups.remainder().chunks_exact(row_bytes);
    for (o, w) in out_groups.into_remainder().iter_mut().zip(rest) {
        *o = vec_dot::<B>(cols, w, act);
    }
}

/// Dequantize `dst.len()` values from the start of `src`.
pub(crate) fn dequantize<B: QuantBlock>(src: &[u8], dst: &mut [f32]) {
    let nb = blocks_in::<B>(dst.len());
    let src = &src[..nb * B::BYTES];
    for (s, d) in src.chunks_exact(B::BYTES).zip(dst.chunks_exact_mut(B::LEN)) {
        B::read(s).dequantize(d);
    }
}

/// Quantize `x` into `out`, replacing its contents.
pub(crate) fn quantize<B: ActBlock>(x: &[f32], out: &mut Vec<u8>) {
    quantize_with(x, out, B::quantize)
}

/// [`quantize`] with another block quantizer of the same format.
pub(crate) fn quantize_with<B: ActBlock>(x: &[f32], out: &mut Vec<u8>, quantize_block: impl Fn(&[f32]) -> B) {
    let nb = blocks_in::<B>(x.len());
    out.clear();
    out.resize(nb * B::BYTES, 0);
    for (xs, o) in x.chunks_exact(B::LEN).zip(out.chunks_exact_mut(B::BYTES)) {
        quantize_block(xs).write(o);
    }
}
