//! F32, F16 and BF16 rows: the scalar conversions between them (matching ggml's bit-level
//! behaviour) and their dequantize / activation-conversion / dot-product kernels.
//!
//! ggml multiplies F16 weights with activations rounded to F16 and BF16 weights with activations
//! rounded to BF16. The product of two f16 (11-bit significands) or two bf16 (8-bit) values is
//! exact in f32, so the only freedom is the summation order: ggml's scalar build sums in f64,
//! its SIMD builds in 8 or 16 f32 lanes. We sum in `LANES` f32 lanes so LLVM can vectorize the
//! loop; results agree with ggml to f32 rounding of the sum.

use half::f16;

/// Independent f32 accumulators in the dot products. Float addition is not associative, so
/// LLVM only vectorizes a reduction whose lanes we spell out; 16 covers two AVX registers.
const LANES: usize = 16;

/// Exact f16 -> f32 conversion from the bits, written branch-free so loops over it vectorize
/// (the `half` crate's version dispatches at run time per call). NaNs come out quiet, as with
/// x86 F16C and ggml's own software conversion this follows.
#[inline]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    // Exponent and mantissa at the top, sign shifted out.
    let two_w = w.wrapping_add(w);
    // Normal, infinite and NaN inputs: rebias the exponent by 224 so f16's all-ones exponent
    // lands on f32's, then multiply by 2^-112 (exact) to undo the excess bias.
    const EXP_OFFSET: u32 = 0xE0 << 23;
    const EXP_SCALE: f32 = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + EXP_OFFSET) * EXP_SCALE;
    // Subnormal inputs: the mantissa m as the low bits of 0.5's significand gives 0.5 + m*2^-24;
    // subtracting 0.5 leaves exactly m*2^-24.
    const MAGIC_HALF: u32 = 126 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | MAGIC_HALF) - 0.5;
    const DENORM_CUTOFF: u32 = 1 << 27;
    let bits = if two_w < DENORM_CUTOFF { denormalized.to_bits() } else { normalized.to_bits() };
    f32::from_bits(sign | bits)
}

/// f32 -> f16 bits, round to nearest even (ggml's `GGML_FP32_TO_FP16`, x86 `vcvtps2ph` mode 0).
#[inline]
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// bf16 bits -> f32 (exact: bf16 is the top half of an f32).
#[inline]
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 -> bf16 bits exactly as ggml's `GGML_FP32_TO_BF16`: round to nearest even, NaNs made
/// quiet, subnormals kept (older ggml flushed them to zero, as AVX512-BF16 hardware does).
#[inline]
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    // Cannot overflow: the largest non-NaN input is 0xff80_0000.
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// Dot product of `n` elements stored as `S`-byte little-endian values, each side decoded by
/// `load`. Always inlined so each caller gets a loop specialized (and vectorized) for its `load`.
#[inline(always)]
fn dot_lanes<const S: usize>(n: usize, row: &[u8], act: &[u8], load: impl Fn([u8; S]) -> f32) -> f32 {
    let (row, _) = row[..n * S].as_chunks::<S>();
    let (act, _) = act[..n * S].as_chunks::<S>();
    let (row_body, row_tail) = row.as_chunks::<LANES>();
    let (act_body, act_tail) = act.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (r, a) in row_body.iter().zip(act_body) {
        for l in 0..LANES {
            acc[l] += load(r[l]) * load(a[l]);
        }
    }
    let mut tail = 0.0f32;
    for (r, a) in row_tail.iter().zip(act_tail) {
        tail += load(*r) * load(*a);
    }
    // Pairwise, like a SIMD horizontal add.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0] + tail
}

pub(crate) fn vec_dot_f32(n: usize, row: &[u8], act: &[u8]) -> f32 {
    dot_lanes::<4>(n, row, act, f32::from_le_bytes)
}

pub(crate) fn vec_dot_f16(n: usize, row: &[u8], act: &[u8]) -> f32 {
    dot_lanes::<2>(n, row, act, |b| f16_to_f32(u16::from_le_bytes(b)))
}

pub(crate) fn vec_dot_bf16(n: usize, row: &[u8], act: &[u8]) -> f32 {
    dot_lanes::<2>(n, row, act, |b| bf16_to_f32(u16::from_le_bytes(b)))
}

#[inline(always)]
fn dequantize_with<const S: usize>(src: &[u8], dst: &mut [f32], load: impl Fn([u8; S]) -> f32) {
    let (src, _) = src[..dst.len() * S].as_chunks::<S>();
    for (d, s) in dst.iter_mut().zip(src) {
        *d = load(*s);
    }
}

pub(crate) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    dequantize_with::<4>(src, dst, f32::from_le_bytes)
}

pub(crate) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    dequantize_with::<2>(src, dst, |b| f16_to_f32(u16::from_le_bytes(b)))
}

pub(crate) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    dequantize_with::<2>(src, dst, |b| bf16_to_f32(u16::from_le_bytes(b)))
}

pub(crate) fn quantize_f32(x: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.extend(x.iter().flat_map(|v| v.to_le_bytes()));
}

pub(crate) fn quantize_f16(x: &[f32], out: &mut Vec<u8>) {
    use half::slice::HalfFloatSliceExt;
    // Through a small f16 buffer: `half` converts a slice with F16C where the CPU has it (the
    // same round-to-nearest-even as one value at a time), while per value it dispatches at run
    // time on every call, which made storing a token's keys and values cost microseconds.
    const STEP: usize = 64;
    out.clear();
    out.reserve(2 * x.len());
    let mut halves = [f16::ZERO; STEP];
    for chunk in x.chunks(STEP) {
        let halves = &mut halves[..chunk.len()];
        halves.convert_from_f32_slice(chunk);
        out.extend(halves.iter().flat_map(|h| h.to_bits().to_le_bytes()));
    }
}

pub(crate) fn quantize_bf16(x: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.extend(x.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()));
}
