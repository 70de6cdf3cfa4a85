//! The block abstraction shared by all block-quantized formats, and the generic row loops
//! (dequantize, quantize activations, dot product) written once over it.
//!
//! GGUF stores a quantized row as consecutive fixed-size blocks, each decoding to `LEN` values
//! independently of its neighbours. A format implements [`QuantBlock`] (decode), an activation
//! format also [`ActBlock`] (encode from f32), and a weight format [`WeightBlock`] (dot product
//! with one block of its activation format). Blocks are read out of the byte slices by value
//! rather than by casting pointers: the copy is free after inlining and keeps this module free of
//! `unsafe` and of alignment concerns (the f16 fields of GGUF blocks are not 2-byte aligned in a
//! memory-mapped file).

use crate::tensor::GgmlType;

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

    /// This block's contribution to a row dot product, computed as ggml's scalar
    /// `ggml_vec_dot_*_generic` does for one block.
    fn dot(&self, act: &Self::Act) -> f32;
}

/// Number of whole blocks in `n` values; panics when `n` is not a multiple of `B::LEN`.
fn blocks_in<B: QuantBlock>(n: usize) -> usize {
    assert!(n.is_multiple_of(B::LEN), "quant: {n} values is not a whole number of {} blocks of {}", B::TYPE, B::LEN);
    n / B::LEN
}

/// Dot product of the first `n` values of a weight row with activations in `B::Act` format.
/// Blocks are summed in order into one f32, as ggml's generic (non-SIMD) kernels do.
pub(crate) fn vec_dot<B: WeightBlock>(n: usize, row: &[u8], act: &[u8]) -> f32 {
    const { assert!(B::LEN == <B::Act as QuantBlock>::LEN) };
    let nb = blocks_in::<B>(n);
    let row = &row[..nb * B::BYTES];
    let act = &act[..nb * B::Act::BYTES];
    let mut sum = 0.0f32;
    for (w, a) in row.chunks_exact(B::BYTES).zip(act.chunks_exact(B::Act::BYTES)) {
        sum += B::read(w).dot(&B::Act::read(a));
    }
    sum
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
    let nb = blocks_in::<B>(x.len());
    out.clear();
    out.resize(nb * B::BYTES, 0);
    for (xs, o) in x.chunks_exact(B::LEN).zip(out.chunks_exact_mut(B::BYTES)) {
        B::quantize(xs).write(o);
    }
}
