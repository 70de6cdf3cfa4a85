//! ggml's 32-value block formats ("legacy quants"): Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 weights, and
//! the Q8_0 / Q8_1 activation formats they are multiplied with.
//!
//! Every kernel follows ggml's reference C code (ggml-quants.c `quantize_row_*_ref` and
//! `dequantize_row_*`, ggml-cpu/quants.c `ggml_vec_dot_*_generic`), including the order of the
//! float operations, so the scalar results are bit-identical to a non-SIMD ggml build. Inner
//! loops work on fixed-size arrays so LLVM vectorizes them: 4-bit values are unpacked into an
//! `[i8; 32]` first and the block's products are summed exactly in i32.

use super::block::{block_bytes, block_values, field, field_i8, ActBlock, DotAcc, F16Le, QuantBlock, WeightBlock};
use super::kquants::nearest_int;
use crate::tensor::GgmlType;

/// Values per block in every format of this file (ggml's QK4_0 = QK4_1 = QK8_0 = QK8_1).
const QK: usize = 32;

/// Exact integer dot product of 32 signed bytes; the sum of 32 products of i8 fits in i32.
#[inline(always)]
fn dot_i8(a: &[i8; QK], b: &[i8; QK]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Unpack 16 bytes of nibbles into 32 values, minus `offset`: low nibbles are elements 0..16,
/// high nibbles 16..32 (ggml's order, not interleaved).
#[inline(always)]
fn unpack_nibbles(qs: &[u8; QK / 2], offset: i8) -> [i8; QK] {
    let mut v = [0i8; QK];
    let (lo, hi) = v.split_at_mut(QK / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
        *l = (q & 0x0F) as i8 - offset;
        *h = (q >> 4) as i8 - offset;
    }
    v
}

/// Unpack Q5_0/Q5_1 quants: the nibbles as in [`unpack_nibbles`], plus a fifth bit from `qh` (bit
/// `j` for element `j`, little-endian u32), minus `offset`.
#[inline(always)]
fn unpack_5bit(qs: &[u8; QK / 2], qh: [u8; 4], offset: i8) -> [i8; QK] {
    // Testing each bit against a constant byte mask (rather than shifting by j) vectorizes on SSE2.
    const BITS: [u8; QK] = {
        let mut b = [0u8; QK];
        let mut j = 0;
        while j < QK {
            b[j] = 1 << (j % 8);
            j += 1;
        }
        b
    };
    let mut h = [0u8; QK];
    for (j, h) in h.iter_mut().enumerate() {
        *h = qh[j / 8];
    }
    let mut v = unpack_nibbles(qs, 0);
    for ((q, &bit), &h) in v.iter_mut().zip(&BITS).zip(&h) {
        *q = (*q | if h & bit != 0 { 16 } else { 0 }) - offset;
    }
    v
}

/// Integer dot product of 32 five-bit quants (each minus `offset`) with 32 signed bytes; out of
/// line for the reason given at `dot_nibbles`.
#[inline(never)]
fn dot_5bit(qs: &[u8; QK / 2], qh: [u8; 4], offset: i8, b: &[i8; QK]) -> i32 {
    dot_i8(&unpack_5bit(qs, qh, offset), b)
}

/// Integer dot product of 32 nibbles (each minus `offset`) with 32 signed bytes.
///
/// Deliberately out of line, like `dot_bytes`: inlined into the loop over blocks, LLVM (Rust
/// 1.95) leaves the 32 multiply-adds as a scalar `imul` chain, while as a function of its own
/// the SLP vectorizer turns them into `pmaddwd`, about 2.5x faster overall. The call costs less
/// than that. Revisit when explicit SIMD kernels replace these.
#[inline(never)]
fn dot_nibbles(qs: &[u8; QK / 2], offset: i8, b: &[i8; QK]) -> i32 {
    dot_i8(&unpack_nibbles(qs, offset), b)
}

/// Integer dot product of two Q8 blocks' values; out of line for the reason given at `dot_nibbles`.
#[inline(never)]
fn dot_bytes(a: &[i8; QK], b: &[i8; QK]) -> i32 {
    dot_i8(a, b)
}

/// ggml's `MAX(amax, fabsf(v))` over a block, including its NaN behaviour (`a > b ? a : b`).
#[inline(always)]
fn abs_max(x: &[f32; QK]) -> f32 {
    x.iter().fold(0.0f32, |m, &v| if m > v.abs() { m } else { v.abs() })
}

/// Q8 scale and its inverse for a block whose largest magnitude is `amax`: the scale maps
/// `amax` to 127, and an all-zero block gets inverse 0 so it quantizes to zeros, not NaN.
#[inline(always)]
pub(crate) fn q8_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// `roundf(x * id)` per value (ties away from zero, as C `roundf`; not round-half-even).
#[inline(always)]
fn q8_values(x: &[f32; QK], id: f32) -> [i8; QK] {
    let mut qs = [0i8; QK];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    qs
}

/// Q8 quants as ggml's x86 SIMD quantizers (`quantize_row_q8_0` / `q8_1` with AVX2 or AVX-512)
/// compute them, which the SIMD kernels pair with: the inverse scale is `127 / amax` rather than
/// `1 / (amax / 127)`, and `x * id` is rounded to nearest even (`_mm256_round_ps`) rather than away
/// from zero. Returns the unrounded f32 scale and the quants.
#[inline(always)]
fn q8_like_simd(x: &[f32; QK]) -> (f32, [i8; QK]) {
    let amax = abs_max(x);
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (amax / 127.0, q8_values_even(x, id))
}

/// Q8 quants as ggml's NEON quantizers compute them: the reference's inverse scale
/// `1 / (amax / 127)`, and `x * id` rounded to nearest even (`vcvtnq_s32_f32`).
#[inline(always)]
fn q8_like_arm(x: &[f32; QK]) -> (f32, [i8; QK]) {
    let (d, id) = q8_scale(abs_max(x));
    (d, q8_values_even(x, id))
}

/// `x * id` per value rounded to nearest, ties to even.
#[inline(always)]
fn q8_values_even(x: &[f32; QK], id: f32) -> [i8; QK] {
    let mut qs = [0i8; QK];
    for (q, &v) in qs.iter_mut().zip(x) {
        // |v * id| <= 127 (plus one rounding), well inside nearest_int's exact range.
        *q = nearest_int(v * id) as i8;
    }
    qs
}

impl BlockQ8_0 {
    /// [`ActBlock::quantize`] with ggml's x86 SIMD rounding (see `q8_like_simd`).
    pub(crate) fn quantize_like_simd(x: &[f32]) -> Self {
        Self::from_parts(q8_like_simd(x.try_into().expect("quant: Q8_0 block needs 32 values")))
    }

    /// [`ActBlock::quantize`] with ggml's NEON rounding (see `q8_like_arm`).
    pub(crate) fn quantize_like_arm(x: &[f32]) -> Self {
        Self::from_parts(q8_like_arm(x.try_into().expect("quant: Q8_0 block needs 32 values")))
    }

    /// The block of an unrounded f32 scale (stored as f16) and its quants.
    fn from_parts((d, qs): (f32, [i8; QK])) -> Self {
        BlockQ8_0 { d: F16Le::from_f32(d), qs }
    }
}

impl BlockQ8_1 {
    /// [`ActBlock::quantize`] with ggml's x86 SIMD rounding (see `q8_like_simd`).
    pub(crate) fn quantize_like_simd(x: &[f32]) -> Self {
        Self::from_parts(q8_like_simd(x.try_into().expect("quant: Q8_1 block needs 32 values")))
    }

    /// [`ActBlock::quantize`] with ggml's NEON rounding (see `q8_like_arm`).
    pub(crate) fn quantize_like_arm(x: &[f32]) -> Self {
        Self::from_parts(q8_like_arm(x.try_into().expect("quant: Q8_1 block needs 32 values")))
    }

    /// `s` is `d * sum(quants)` rounded to f16, as ggml stores it.
    fn from_parts((d, qs): (f32, [i8; QK])) -> Self {
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        BlockQ8_1 { d: F16Le::from_f32(d), s: F16Le::from_f32(sum as f32 * d), qs }
    }
}

/// 4-bit weights with one scale: `x = (q - 8) * d`, q in 0..16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ4_0 {
    pub d: F16Le,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// 4-bit weights with a scale and an offset: `x = q * d + m`, q in 0..16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ4_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// 5-bit weights with one scale: `x = (q - 16) * d`, q in 0..32; bit 4 of element `j`'s quant
/// is bit `j` of `qh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ5_0 {
    pub d: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// 5-bit weights with a scale and an offset: `x = q * d + m`, q in 0..32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ5_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// 8-bit values with one scale: `x = q * d`. Both a weight format and the activation format of
/// Q4_0 and Q8_0 weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ8_0 {
    pub d: F16Le,
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// 8-bit activations for Q4_1 weights: Q8_0 plus `s = d * sum(qs)`, which lets the dot product
/// apply the weight block's offset `m` once per block (`m * s`) instead of per value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ8_1 {
    pub d: F16Le,
    pub s: F16Le,
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_1>() == 36);

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const LEN: usize = QK;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ4_0>() }>(bytes);
        BlockQ4_0 { d: F16Le(field(b, 0)), qs: field(b, 2) }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let q = unpack_nibbles(&self.qs, 8);
        for (o, &v) in block_values::<QK>(out).iter_mut().zip(&q) {
            *o = v as f32 * d;
        }
    }
}

impl WeightBlock for BlockQ4_0 {
    type Act = BlockQ8_0;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8_0, acc: &mut DotAcc) {
        let sumi = dot_nibbles(&self.qs, 8, &act.qs);
        acc.sum += sumi as f32 * self.d.to_f32() * act.d.to_f32();
    }
}

impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const LEN: usize = QK;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ4_1>() }>(bytes);
        BlockQ4_1 { d: F16Le(field(b, 0)), m: F16Le(field(b, 2)), qs: field(b, 4) }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let q = unpack_nibbles(&self.qs, 0);
        for (o, &v) in block_values::<QK>(out).iter_mut().zip(&q) {
            *o = v as f32 * d + m;
        }
    }
}

impl WeightBlock for BlockQ4_1 {
    type Act = BlockQ8_1;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8_1, acc: &mut DotAcc) {
        // Unsigned nibbles 0..16 fit in i8, so the signed byte dot applies unchanged.
        let sumi = dot_nibbles(&self.qs, 0, &act.qs);
        acc.sum += (self.d.to_f32() * act.d.to_f32()) * sumi as f32 + self.m.to_f32() * act.s.to_f32();
    }
}

impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const LEN: usize = QK;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ5_0>() }>(bytes);
        BlockQ5_0 { d: F16Le(field(b, 0)), qh: field(b, 2), qs: field(b, 6) }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let q = unpack_5bit(&self.qs, self.qh, 16);
        for (o, &v) in block_values::<QK>(out).iter_mut().zip(&q) {
            *o = v as f32 * d;
        }
    }
}

impl WeightBlock for BlockQ5_0 {
    type Act = BlockQ8_0;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8_0, acc: &mut DotAcc) {
        let sumi = dot_5bit(&self.qs, self.qh, 16, &act.qs);
        acc.sum += (self.d.to_f32() * act.d.to_f32()) * sumi as f32;
    }
}

impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const LEN: usize = QK;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ5_1>() }>(bytes);
        BlockQ5_1 { d: F16Le(field(b, 0)), m: F16Le(field(b, 2)), qh: field(b, 4), qs: field(b, 8) }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let q = unpack_5bit(&self.qs, self.qh, 0);
        for (o, &v) in block_values::<QK>(out).iter_mut().zip(&q) {
            *o = v as f32 * d + m;
        }
    }
}

impl WeightBlock for BlockQ5_1 {
    type Act = BlockQ8_1;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8_1, acc: &mut DotAcc) {
        // Quants 0..32 fit in i8, as Q4_1's nibbles do.
        let sumi = dot_5bit(&self.qs, self.qh, 0, &act.qs);
        acc.sum += (self.d.to_f32() * act.d.to_f32()) * sumi as f32 + self.m.to_f32() * act.s.to_f32();
    }
}

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const LEN: usize = QK;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ8_0>() }>(bytes);
        BlockQ8_0 { d: F16Le(field(b, 0)), qs: field_i8(b, 2) }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in block_values::<QK>(out).iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl ActBlock for BlockQ8_0 {
    #[inline]
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK] = x.try_into().expect("quant: Q8_0 block needs 32 values");
        let (d, id) = q8_scale(abs_max(x));
        BlockQ8_0 { d: F16Le::from_f32(d), qs: q8_values(x, id) }
    }

    #[inline]
    fn write(&self, out: &mut [u8]) {
        let out: &mut [u8; 34] = out.try_into().expect("quant: Q8_0 block is 34 bytes");
        out[..2].copy_from_slice(&self.d.0);
        for (o, &q) in out[2..].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
    }
}

impl WeightBlock for BlockQ8_0 {
    type Act = BlockQ8_0;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8_0, acc: &mut DotAcc) {
        let sumi = dot_bytes(&self.qs, &act.qs);
        acc.sum += sumi as f32 * (self.d.to_f32() * act.d.to_f32());
    }
}

impl QuantBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const LEN: usize = QK;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ8_1>() }>(bytes);
        BlockQ8_1 { d: F16Le(field(b, 0)), s: F16Le(field(b, 2)), qs: field_i8(b, 4) }
    }

    /// `q * d`; `s` is redundant for decoding.
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in block_values::<QK>(out).iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl ActBlock for BlockQ8_1 {
    #[inline]
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK] = x.try_into().expect("quant: Q8_1 block needs 32 values");
        let (d, id) = q8_scale(abs_max(x));
        let qs = q8_values(x, id);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        // ggml stores s from the unrounded f32 d, then both as f16.
        BlockQ8_1 { d: F16Le::from_f32(d), s: F16Le::from_f32(sum as f32 * d), qs }
    }

    #[inline]
    fn write(&self, out: &mut [u8]) {
        let out: &mut [u8; 36] = out.try_into().expect("quant: Q8_1 block is 36 bytes");
        out[..2].copy_from_slice(&self.d.0);
        out[2..4].copy_from_slice(&self.s.0);
        for (o, &q) in out[4..].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
    }
}
