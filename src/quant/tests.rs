//! Tests of `crate::quant`: hand-computed blocks, edge cases, and agreement with reference data
//! produced by llama.cpp's `gguf` Python package (`testdata/gguf_refs.txt`, written by
//! `scripts/gen-quant-refs.py`).

use super::block::{self, QuantBlock};
use super::float::{f16_to_f32, f32_to_bf16};
use super::iquants::{BlockIq4Nl, BlockIq4Xs};
use super::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use super::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use super::*;
use crate::tensor::GgmlType::{self, *};

#[test]
fn gelu_matches_the_tanh_formula_to_f16_precision_and_saturates() {
    let table = gelu_table();
    for &x in &[-3.0f32, -1.0, -0.1, 0.0, 0.5, 1.0, 2.5, 9.9] {
        let exact = 0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044715 * x * x)).tanh());
        assert!((gelu_lane(x, table) - exact).abs() <= 2e-3 * exact.abs().max(1.0), "x = {x}");
    }
    assert_eq!(gelu_lane(-10.5, table), 0.0);
    assert_eq!(gelu_lane(12.0, table), 12.0);
}

// ---------------------------------------------------------------- helpers

fn f16_le(v: f32) -> [u8; 2] {
    let h = half::f16::from_f32(v);
    assert_eq!(h.to_f32(), v, "test scale {v} must be exact in f16");
    h.to_bits().to_le_bytes()
}

fn dequant(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    dequantize_row(ty, src, &mut out);
    out
}

/// Activations quantized as ggml's reference code does (the scalar kernels' pairing).
fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    quantize_activations_with(Isa::Scalar, ty, x, &mut out);
    out
}

/// Dequantize activation bytes of any activation format (Q8_1 and Q8_K are not weight types, so
/// they go through the block loop directly).
fn dequant_act(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    dequant_act_into(ty, src, &mut out);
    out
}

pub(super) fn dequant_act_into(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    match ty {
        Q8_1 => block::dequantize::<BlockQ8_1>(src, out),
        Q8_K => block::dequantize::<BlockQ8K>(src, out),
        _ => dequantize_row(ty, src, out),
    }
}

/// Every weight type the module supports.
const WEIGHT_TYPES: [GgmlType; 15] =
    [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS];

fn dot_f64(a: &[f32], b: &[f32]) -> (f64, f64) {
    let exact = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let scale = a.iter().zip(b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
    (exact, scale)
}

/// f32 summation of `terms` products/blocks in any order: at most about `terms + 4` roundings
/// of relative size 2^-24 on the sum of magnitudes.
fn assert_close(got: f32, want: f64, scale: f64, terms: usize, what: &str) {
    let bound = (terms as f64 + 4.0) * (f32::EPSILON as f64 / 2.0) * scale + 1e-30;
    let err = (got as f64 - want).abs();
    assert!(got.is_finite(), "{what}: got {got}");
    assert!(err <= bound, "{what}: got {got}, want {want}, error {err:e} > bound {bound:e}");
}

fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// A deterministic pseudo-random sequence (xorshift), so tests need no RNG crate.
pub(super) struct Rng(pub u64);
impl Rng {
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

// ---------------------------------------------------------------- API surface

#[test]
fn supported_types_and_dot_types() {
    // ggml-cpu.c type_traits_cpu[ty].vec_dot_type.
    let expect = [
        (F32, F32),
        (F16, F16),
        (BF16, BF16),
        (Q4_0, Q8_0),
        (Q4_1, Q8_1),
        (Q5_0, Q8_0),
        (Q5_1, Q8_1),
        (Q8_0, Q8_0),
        (Q2_K, Q8_K),
        (Q3_K, Q8_K),
        (Q4_K, Q8_K),
        (Q5_K, Q8_K),
        (Q6_K, Q8_K),
        (IQ4_NL, Q8_0),
        (IQ4_XS, Q8_K),
    ];
    assert_eq!(expect.map(|(ty, _)| ty), WEIGHT_TYPES);
    for (ty, dot) in expect {
        assert!(is_supported(ty), "{ty}");
        assert_eq!(vec_dot_type(ty), dot, "{ty}");
    }
    for ty in [Q8_1, Q8_K, IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, TQ1_0, MXFP4, I32, F64] {
        assert!(!is_supported(ty), "{ty}");
    }
}

#[test]
fn block_layouts_match_the_tensor_table() {
    fn check<B: QuantBlock>() {
        assert_eq!(B::BYTES as u64, B::TYPE.block_bytes(), "{}", B::TYPE);
        assert_eq!(B::LEN as u64, B::TYPE.block_len(), "{}", B::TYPE);
    }
    check::<BlockQ4_0>();
    check::<BlockQ4_1>();
    check::<BlockQ5_0>();
    check::<BlockQ5_1>();
    check::<BlockQ8_0>();
    check::<BlockQ8_1>();
    check::<BlockQ2K>();
    check::<BlockQ3K>();
    check::<BlockQ4K>();
    check::<BlockQ5K>();
    check::<BlockQ6K>();
    check::<BlockQ8K>();
    check::<BlockIq4Nl>();
    check::<BlockIq4Xs>();
}

#[test]
fn quantize_activations_replaces_buffer_contents() {
    let x = [1.0f32; 256];
    let mut out = vec![0xAAu8; 2000];
    for (ty, len) in [(F32, 1024), (F16, 512), (BF16, 512), (Q8_0, 272), (Q8_1, 288), (Q8_K, 292)] {
        quantize_activations_with(Isa::Scalar, ty, &x, &mut out);
        assert_eq!(out.len(), len, "{ty}");
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            quantize_activations_with(isa, ty, &x, &mut out);
            assert_eq!(out.len(), act_row_bytes_with(isa, ty, 256), "{isa:?} {ty}");
        }
    }
    // The SIMD sets' Q8_0 rows end with each block's scale as f32, then each block's sum of
    // quants as i32, then the quants interleaved.
    if let Some(isa) = Isa::ALL.into_iter().find(|&isa| isa != Isa::Scalar && isa.available()) {
        let x: Vec<f32> = (0..64).map(|i| if i < 32 { 1.0 } else { -254.0 }).collect();
        quantize_activations_with(isa, Q8_0, &x, &mut out);
        let scales: Vec<f32> = out[68..76].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let stored: Vec<f32> = [0, 34].map(|at| half::f16::from_le_bytes([out[at], out[at + 1]]).to_f32()).to_vec();
        assert_eq!(scales, stored);
        assert_eq!(scales, [1.0 / 127.0, 2.0].map(|d| half::f16::from_f32(d).to_f32()).to_vec());
        let sums: Vec<i32> = out[76..84].chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(sums, [32 * 127, 32 * -127]);
        // Then the quants of the (one) group of eight blocks, four bytes of each block in turn,
        // blocks past the row's two as zeros.
        assert_eq!(out.len(), 84 + 256);
        for j in 0..8 {
            let quads: Vec<&[u8]> = out[84 + 32 * j..84 + 32 * j + 32].chunks_exact(4).collect();
            assert_eq!(quads[0], &out[2 + 4 * j..6 + 4 * j], "group {j}, block 0");
            assert_eq!(quads[1], &out[36 + 4 * j..40 + 4 * j], "group {j}, block 1");
            assert!(quads[2..].iter().all(|q| q == &[0; 4]), "group {j}, padding");
        }
    }
}

#[test]
#[should_panic(expected = "whole number")]
fn partial_block_is_rejected() {
    quantized(Q8_0, &[1.0; 33]);
}

#[test]
#[should_panic(expected = "not supported")]
fn unsupported_type_is_rejected() {
    dequant(IQ2_XXS, &[0; 66], 256);
}

// ---------------------------------------------------------------- float conversions

#[test]
fn f16_to_f32_is_exact_for_every_bit_pattern() {
    for h in 0..=u16::MAX {
        let want = half::f16::from_bits(h).to_f32();
        let got = f16_to_f32(h);
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{h:#06x}: {got} vs {want}");
    }
}

#[test]
fn f16_activation_rows_round_each_value_as_alone() {
    // The row conversion goes through `half`'s slice conversion (F16C where present); each value
    // must round as the one-value conversion does, ties, subnormals and overflow included.
    let mut x = Rng(7).vec(200, 3.0);
    x.extend([
        0.0,
        -0.0,
        65504.0,
        65520.0,
        1e6,
        -1e6,
        6.0e-8,
        2.9e-8,
        3.0e-8,
        -6.1e-5,
        f32::INFINITY,
        1.0 + 1.0 / 2048.0,
    ]);
    x.extend((0..77).map(|i| f32::from_bits(0x3f80_0000 + (i << 12)))); // halfway and beyond, at 1.0
    let mut out = Vec::new();
    quantize_activations(F16, &x, &mut out);
    assert_eq!(out.len(), 2 * x.len());
    for (v, h) in x.iter().zip(out.chunks_exact(2)) {
        assert_eq!(u16::from_le_bytes([h[0], h[1]]), half::f16::from_f32(*v).to_bits(), "{v:e}");
    }
}

#[test]
fn bf16_rounding_matches_ggml() {
    let cases: [(u32, u16); 10] = [
        (0x3F80_0000, 0x3F80), // 1.0
        (0x3F80_8000, 0x3F80), // exact tie, even stays
        (0x3F81_8000, 0x3F82), // exact tie, odd rounds up
        (0x3F80_8001, 0x3F81), // just above a tie
        (0xBF80_7FFF, 0xBF80), // just below a tie, negative
        (0x7F7F_FFFF, 0x7F80), // f32 max rounds to infinity
        (0x0000_0001, 0x0000), // smallest subnormal rounds to zero (not flushed, just small)
        (0x0001_8000, 0x0002), // subnormal tie, kept (no flush to zero)
        (0x7F80_0001, 0x7FC0), // signalling NaN made quiet
        (0xFF80_0000, 0xFF80), // -inf
    ];
    for (f, b) in cases {
        assert_eq!(f32_to_bf16(f32::from_bits(f)), b, "{f:#010x}");
    }
}

// ---------------------------------------------------------------- hand-computed blocks

#[test]
fn dequantize_f32_f16_bf16_by_hand() {
    let f32_src: Vec<u8> = [1.5f32, -0.0, 3e38].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_bits_eq(&dequant(F32, &f32_src, 3), &[1.5, -0.0, 3e38], "F32");

    let f16_src: Vec<u8> = [0x3C00u16, 0xC000, 0x0001, 0x7BFF, 0x7C00, 0x8000, 0x0400, 0x3555]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let want = [1.0, -2.0, 2f32.powi(-24), 65504.0, f32::INFINITY, -0.0, 2f32.powi(-14), 0.333_251_95];
    assert_bits_eq(&dequant(F16, &f16_src, 8), &want, "F16");

    let bf16_src: Vec<u8> = [0x3F80u16, 0xC040, 0x0001, 0x7F80, 0x4049].iter().flat_map(|h| h.to_le_bytes()).collect();
    let want = [1.0, -3.0, f32::from_bits(0x0001_0000), f32::INFINITY, 3.140625];
    assert_bits_eq(&dequant(BF16, &bf16_src, 5), &want, "BF16");
}

/// Q4_0 with d = 2: element j is (low nibble of qs[j] - 8) * 2, element 16 + j the high nibble.
fn hand_q4_0() -> (Vec<u8>, Vec<f32>) {
    let mut b = f16_le(2.0).to_vec();
    let mut qs = [0x80u8; 16]; // low 0 -> -16, high 8 -> 0
    qs[0] = 0x0F; // x[0] = (15-8)*2 = 14, x[16] = (0-8)*2 = -16
    qs[1] = 0x88; // x[1] = 0, x[17] = 0
    qs[15] = 0xF9; // x[15] = 2, x[31] = 14
    b.extend_from_slice(&qs);
    let mut want = vec![-16.0; 16];
    want.extend([0.0; 16]);
    want[0] = 14.0;
    want[16] = -16.0;
    want[1] = 0.0;
    want[17] = 0.0;
    want[15] = 2.0;
    want[31] = 14.0;
    (b, want)
}

#[test]
fn q4_0_by_hand() {
    let (b, want) = hand_q4_0();
    assert_eq!(b.len(), 18);
    assert_bits_eq(&dequant(Q4_0, &b, 32), &want, "Q4_0");
}

#[test]
fn q4_1_by_hand() {
    // x = q * 0.25 - 1: qs[j] = j | (15 - j) << 4 gives x[j] = j/4 - 1, x[16+j] = (15-j)/4 - 1.
    let mut b = f16_le(0.25).to_vec();
    b.extend(f16_le(-1.0));
    b.extend((0..16u8).map(|j| j | (15 - j) << 4));
    let mut want: Vec<f32> = (0..16).map(|j| j as f32 / 4.0 - 1.0).collect();
    want.extend((0..16).map(|j| (15 - j) as f32 / 4.0 - 1.0));
    assert_bits_eq(&dequant(Q4_1, &b, 32), &want, "Q4_1");
}

#[test]
fn q8_0_by_hand() {
    let mut b = f16_le(0.125).to_vec();
    let qs: Vec<i8> = (0..32).map(|i| [-128, 127, -1, 0][i % 4]).collect();
    b.extend(qs.iter().map(|&q| q as u8));
    let want: Vec<f32> = qs.iter().map(|&q| q as f32 / 8.0).collect();
    assert_eq!(want[0..4], [-16.0, 15.875, -0.125, 0.0]);
    assert_bits_eq(&dequant(Q8_0, &b, 32), &want, "Q8_0");
}

#[test]
fn q8_0_quantize_by_hand_rounds_ties_away_from_zero() {
    // amax 127 gives d = 1 and id = 1, so x * id is x and the .5 cases are exact ties.
    let mut x = [0.0f32; 32];
    x[..10].copy_from_slice(&[127.0, -63.5, 0.5, -0.5, 2.5, -2.5, 1.49, 3.5, -126.5, 0.0]);
    let q = quantized(Q8_0, &x);
    assert_eq!(q[..2], f16_le(1.0));
    let qs: Vec<i8> = q[2..12].iter().map(|&b| b as i8).collect();
    assert_eq!(qs, [127, -64, 1, -1, 3, -3, 1, 4, -127, 0]);
    assert!(q[12..].iter().all(|&b| b == 0));
}

#[test]
fn q8_quantize_for_simd_kernels_rounds_ties_to_even() {
    // As ggml's SIMD quantizers: x86 id = 127 / amax, NEON id = 1 / (amax / 127) (both 1 here),
    // rounded to nearest even (_mm256_round_ps, vcvtnq_s32_f32).
    let mut x = [0.0f32; 32];
    x[..10].copy_from_slice(&[127.0, -63.5, 0.5, -0.5, 2.5, -2.5, 1.49, 3.5, -126.5, 0.0]);
    for isa in [Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDot] {
        let mut q = Vec::new();
        quantize_activations_with(isa, Q8_0, &x, &mut q);
        assert_eq!(q[..2], f16_le(1.0));
        let qs: Vec<i8> = q[2..12].iter().map(|&b| b as i8).collect();
        assert_eq!(qs, [127, -64, 0, 0, 2, -2, 1, 4, -126, 0], "{isa:?}");
        quantize_activations_with(isa, Q8_1, &x, &mut q);
        assert_eq!(q[2..4], f16_le(-58.0), "{isa:?}: s = d * sum(q)");
    }
    // The inverse scale 127 / amax differs from 1 / (amax / 127) in the last bit for some amax,
    // which moves values near a .5 boundary: find one and check both quantizers keep their own.
    let amax = (1..10_000).map(|i| 1.0 + i as f32 * 1e-3).find(|&a| 127.0 / a != 1.0 / (a / 127.0)).unwrap();
    let x: Vec<f32> = (0..32).map(|i| if i == 0 { amax } else { amax * (i as f32 + 0.5) / 127.0 }).collect();
    let (mut simd, mut arm, reference) = (Vec::new(), Vec::new(), quantized(Q8_0, &x));
    quantize_activations_with(Isa::Avx2, Q8_0, &x, &mut simd);
    quantize_activations_with(Isa::Neon, Q8_0, &x, &mut arm);
    for (i, &v) in x.iter().enumerate() {
        let [s, a, r] = [&simd, &arm, &reference].map(|q| q[2 + i] as i8 as f32);
        assert_eq!(s, (v * (127.0 / amax)).round_ties_even(), "simd value {i}");
        assert_eq!(a, (v * (1.0 / (amax / 127.0))).round_ties_even(), "neon value {i}");
        assert_eq!(r, (v * (1.0 / (amax / 127.0))).round(), "reference value {i}");
    }
    assert_ne!(simd, arm, "the two inverse scales must give different quants for this block");
}

#[test]
fn q8_1_quantize_by_hand_stores_d_times_sum() {
    // amax 127: d = 1, quants are the rounded values, s = their sum.
    let mut x = [0.0f32; 32];
    x[..5].copy_from_slice(&[127.0, -30.0, 5.6, 10.0, -0.4]);
    let q = quantized(Q8_1, &x);
    assert_eq!(q.len(), 36);
    assert_eq!(q[..2], f16_le(1.0));
    assert_eq!(q[2..4], f16_le(113.0)); // 127 - 30 + 6 + 10 + 0
    let qs: Vec<i8> = q[4..9].iter().map(|&b| b as i8).collect();
    assert_eq!(qs, [127, -30, 6, 10, 0]);

    // amax 63.5: d = 0.5, id = 2; s = 0.5 * (127 - 20 + 4) = 55.5.
    let mut x = [0.0f32; 32];
    x[..3].copy_from_slice(&[63.5, -10.0, 2.2]);
    let q = quantized(Q8_1, &x);
    assert_eq!(q[..2], f16_le(0.5));
    assert_eq!(q[2..4], f16_le(55.5));
    assert_eq!(q[4..7].iter().map(|&b| b as i8).collect::<Vec<_>>(), [127, -20, 4]);
}

#[test]
fn q4_0_dot_by_hand() {
    let (w, wx) = hand_q4_0();
    // Activations that quantize exactly: amax 127 -> d = 1, q = x.
    let x: Vec<f32> = (0..32).map(|i| [127.0, -3.0, 5.0, 0.0][i % 4]).collect();
    let a = quantized(Q8_0, &x);
    assert_eq!(a[..2], f16_le(1.0));
    // Nonzero weights: x0 = 14, x2..15 = -16, x15 = 2, x16 = -16, x31 = 14, so the dot is
    // 14*127 - 16*(5+0+127-3+5+0+127-3+5+0+127-3+5) + 2*0 - 16*127 + 14*0.
    let want = 14.0 * 127.0 - 16.0 * 392.0 - 16.0 * 127.0;
    assert_eq!(want, -6526.0);
    assert_eq!(wx.iter().zip(&x).map(|(w, x)| w * x).sum::<f32>(), want);
    assert_eq!(vec_dot(Q4_0, 32, &w, &a), want);
}

#[test]
fn q4_1_and_q8_0_dots_by_hand() {
    // Q4_1 block: d = 1, m = 0.5, all nibbles 3 -> every weight is 3.5.
    let mut w = f16_le(1.0).to_vec();
    w.extend(f16_le(0.5));
    w.extend([0x33u8; 16]);
    // Activations: 32 values of 127 -> d = 1, q = 127, s = 32 * 127.
    let a = quantized(Q8_1, &[127.0; 32]);
    assert_eq!(vec_dot(Q4_1, 32, &w, &a), 3.5 * 127.0 * 32.0);

    // Q8_0 weights with d = 0.5, q = i - 16; activations q = 127 everywhere (d = 1).
    let mut w = f16_le(0.5).to_vec();
    w.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let a = quantized(Q8_0, &[127.0; 32]);
    let sumi: i32 = (0..32).map(|i| (i - 16) * 127).sum();
    assert_eq!(vec_dot(Q8_0, 32, &w, &a), sumi as f32 * 0.5);
}

#[test]
fn q5_0_and_q5_1_by_hand() {
    // qs[j] = j | (15 - j) << 4; qh has bit k set for even k, so element j < 16 gets 16 added when
    // j is even, element 16 + j when j is even too (bit 16 + j).
    let qs: Vec<u8> = (0..16u8).map(|j| j | (15 - j) << 4).collect();
    let qh = 0x5555_5555u32.to_le_bytes();
    let q: Vec<i32> = (0..32)
        .map(|e| {
            let nib = if e < 16 { e } else { 15 - (e - 16) };
            nib + if e % 2 == 0 { 16 } else { 0 }
        })
        .collect();
    assert_eq!(q[..4], [16, 1, 18, 3]);
    assert_eq!(q[16..20], [31, 14, 29, 12]);

    let mut b = f16_le(0.5).to_vec();
    b.extend(qh);
    b.extend(&qs);
    assert_eq!(b.len(), 22);
    let want: Vec<f32> = q.iter().map(|&q| (q - 16) as f32 * 0.5).collect();
    assert_bits_eq(&dequant(Q5_0, &b, 32), &want, "Q5_0");
    // Against activations 127 everywhere (d = 1): (d_w * d_a) * sumi.
    let a = quantized(Q8_0, &[127.0; 32]);
    let sumi: i32 = q.iter().map(|&q| (q - 16) * 127).sum();
    assert_eq!(vec_dot(Q5_0, 32, &b, &a), sumi as f32 * 0.5);

    let mut b = f16_le(0.25).to_vec();
    b.extend(f16_le(-2.0));
    b.extend(qh);
    b.extend(&qs);
    assert_eq!(b.len(), 24);
    let want: Vec<f32> = q.iter().map(|&q| q as f32 * 0.25 - 2.0).collect();
    assert_bits_eq(&dequant(Q5_1, &b, 32), &want, "Q5_1");
    // Q8_1 activations 127 everywhere: d = 1, s = 32 * 127; dot = 0.25 * sum(q) * 127 - 2 * s.
    let a = quantized(Q8_1, &[127.0; 32]);
    let sumq: i32 = q.iter().sum();
    assert_eq!(vec_dot(Q5_1, 32, &b, &a), 0.25 * (sumq * 127) as f32 - 2.0 * 32.0 * 127.0);
}

/// A Q8_K block's fields from its 292 bytes.
fn q8_k_fields(b: &[u8]) -> (f32, Vec<i8>, Vec<i16>) {
    assert_eq!(b.len(), 292);
    let d = f32::from_le_bytes(b[..4].try_into().unwrap());
    let qs = b[4..260].iter().map(|&q| q as i8).collect();
    let bsums = b[260..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    (d, qs, bsums)
}

#[test]
fn q8_k_quantize_by_hand() {
    // The first value of largest magnitude is -127 (its positive twin comes later), so
    // iscale = -127 / -127 = 1 and d = 1: quants are the values rounded half to even.
    let mut x = [0.0f32; 256];
    x[..11].copy_from_slice(&[-127.0, 127.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 3.25]);
    x[16] = 7.0;
    let (d, qs, bsums) = q8_k_fields(&quantized(Q8_K, &x));
    assert_eq!(d, 1.0);
    assert_eq!(qs[..11], [-127, 127, 0, 0, 2, -2, 2, -2, 126, -126, 3]);
    assert!(qs[11..16].iter().chain(&qs[17..]).all(|&q| q == 0));
    assert_eq!(qs[16], 7);
    assert_eq!(bsums[..2], [3, 7]);
    assert!(bsums[2..].iter().all(|&s| s == 0));

    // Largest magnitude positive (63.5, before -63.5): iscale = -2, d = -0.5, signs flip.
    let mut x = [0.0f32; 256];
    x[..6].copy_from_slice(&[1.25, 0.75, -0.25, 10.0, 0.0, 63.5]);
    x[9] = -63.5;
    x[20] = -0.75;
    let (d, qs, bsums) = q8_k_fields(&quantized(Q8_K, &x));
    assert_eq!(d, -0.5);
    // 1.25 * -2 = -2.5 -> -2; 0.75 -> -1.5 -> -2; -0.25 -> 0.5 -> 0; -0.75 -> 1.5 -> 2.
    assert_eq!(qs[..6], [-2, -2, 0, -20, 0, -127]);
    assert_eq!((qs[9], qs[20]), (127, 2));
    assert_eq!(bsums[..2], [-24, 2]);
    let back = dequant_act(Q8_K, &quantized(Q8_K, &x), 256);
    assert_eq!(back[..6], [1.0, 1.0, -0.0, 10.0, -0.0, 63.5]);

    // amax below 127 / f32::MAX makes iscale infinite; ggml's nearest_int then yields quants
    // whose low byte is 0, and d = 1 / inf = 0: an all-zero block, as here.
    let tiny: Vec<f32> = (0..256).map(|i| if i % 2 == 0 { -1e-38 } else { 1e-38 }).collect();
    assert!(quantized(Q8_K, &tiny).iter().all(|&b| b == 0));
}

/// ggml's `quantize_row_q8_K_ref`, written out plainly for the tests (finite inputs).
fn q8_k_reference(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks_exact(256) {
        let mut imax = 0;
        for i in 0..256 {
            if b[i].abs() > b[imax].abs() {
                imax = i;
            }
        }
        if b[imax] == 0.0 {
            out.extend([0u8; 292]);
            continue;
        }
        let iscale = -127.0f32 / b[imax];
        let qs: Vec<i8> = b.iter().map(|&v| (v * iscale).round_ties_even().min(127.0) as i8).collect();
        out.extend((1.0 / iscale).to_le_bytes());
        out.extend(qs.iter().map(|&q| q as u8));
        for g in qs.chunks_exact(16) {
            out.extend(g.iter().map(|&q| q as i16).sum::<i16>().to_le_bytes());
        }
    }
    out
}

#[test]
fn q8_k_quantize_matches_reference() {
    let mut rng = Rng(19);
    for scale in [1e-30f32, 1e-3, 1.0, 3.0, 1e4, 1e30] {
        let mut x = rng.vec(256 * 4, scale);
        // Exact ties in one block: the largest magnitude is 127 * scale' for a power of two.
        x[256] = -127.0 * 0.25;
        for (i, v) in x[257..300].iter_mut().enumerate() {
            *v = (i as f32 - 21.5) * 0.25;
        }
        x[512..768].fill(0.0);
        let got = quantized(Q8_K, &x);
        assert_eq!(got, q8_k_reference(&x), "scale {scale}");
        // Round trip: within half a step (d is f32, so no f16 rounding of the scale).
        let back = dequant_act(Q8_K, &got, x.len());
        for (blk, (xb, bb)) in x.chunks_exact(256).zip(back.chunks_exact(256)).enumerate() {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (v, b) in xb.iter().zip(bb) {
                assert!((v - b).abs() <= amax / 127.0 * 0.5001, "block {blk}: {v} -> {b}");
            }
        }
    }
}

/// A Q4_K block with d = 1, dmin = 0.5 and scale bytes that exercise every packing case of
/// `get_scale_min_k4`, and its values.
fn hand_q4_k() -> (Vec<u8>, Vec<f32>) {
    let scales = [0xC1u8, 0x02, 0x43, 0x04, 0x85, 0x06, 0x07, 0xC8, 0x9A, 0xBC, 0xDE, 0xF0];
    // j < 4: sc = q[j] & 63, m = q[j + 4] & 63.
    // j >= 4: sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4, m = (q[j + 4] >> 4) | (q[j] >> 6) << 4.
    let sc = [1, 2, 3, 4, 0x3A, 12, 0x1E, 0];
    let m = [5, 6, 7, 8, 0x29, 11, 13, 0x3F];
    let qs: Vec<u8> = (0..128u32).map(|i| (i * 37 % 256) as u8).collect();
    let mut b = f16_le(1.0).to_vec();
    b.extend(f16_le(0.5));
    b.extend(scales);
    b.extend(&qs);
    let want = (0..256)
        .map(|e| {
            // 64 values per 32 bytes: low nibbles, then high nibbles.
            let byte = qs[e / 64 * 32 + e % 32];
            let q = if e % 64 < 32 { byte & 15 } else { byte >> 4 };
            (sc[e / 32] * q as i32) as f32 - 0.5 * m[e / 32] as f32
        })
        .collect();
    (b, want)
}

#[test]
fn q4_k_by_hand() {
    let (w, want) = hand_q4_k();
    assert_eq!(w.len(), 144);
    assert_bits_eq(&dequant(Q4_K, &w, 256), &want, "Q4_K");

    // Activations whose Q8_K quantization is exact: -127 first gives d = 1, the rest are small
    // integers, and every partial sum stays an exact f32, so the dot must be exact.
    let mut x: Vec<f32> = (0..256).map(|e| ((e * 7) % 19) as f32 - 9.0).collect();
    x[0] = -127.0;
    let a = quantized(Q8_K, &x);
    assert_eq!(dequant_act(Q8_K, &a, 256), x);
    let exact: f64 = want.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
    assert!(exact.abs() < (1 << 21) as f64 && (2.0 * exact).fract() == 0.0);
    assert_eq!(vec_dot(Q4_K, 256, &w, &a) as f64, exact);

    // Two blocks in a row accumulate; dot_rows over two rows of two blocks.
    let w2 = [w.clone(), w.clone()].concat();
    let x2 = [x.clone(), x.clone()].concat();
    let rows = [w2.clone(), w2].concat();
    for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
        let mut a2 = Vec::new();
        quantize_activations_with(isa, Q8_K, &x2, &mut a2);
        let mut out = [0.0f32; 2];
        dot_rows_with(isa, Q4_K, 512, &rows, &a2, &mut out);
        assert_eq!(out, [(2.0 * exact) as f32; 2], "{isa:?}");
    }
}

// ---------------------------------------------------------------- edge cases

#[test]
fn zero_blocks_give_zero_not_nan() {
    let zeros = [0.0f32; 256];
    for ty in WEIGHT_TYPES {
        let act = quantized(vec_dot_type(ty), &zeros);
        let row = vec![0u8; row_bytes(ty, 256)];
        // Q4_0 zero bytes decode to (0 - 8) * 0 = -0.0, as in ggml; only the value matters.
        assert!(dequant(ty, &row, 256).iter().all(|&v| v == 0.0), "{ty} dequant");
        assert_eq!(vec_dot(ty, 256, &row, &act), 0.0, "{ty}");
        assert_eq!(vec_dot(ty, 0, &[], &[]), 0.0, "{ty} empty");
    }
    let q8k = quantized(Q8_K, &zeros);
    assert!(q8k.iter().all(|&b| b == 0), "Q8_K of zeros: {q8k:?}");
    // Zero activations against non-zero weights.
    let q8 = quantized(Q8_0, &zeros);
    assert!(q8.iter().all(|&b| b == 0), "Q8_0 of zeros: {q8:?}");
    let (w, _) = hand_q4_0();
    assert_eq!(vec_dot(Q4_0, 32, &w, &q8[..34]), 0.0);
    let q81 = quantized(Q8_1, &zeros);
    assert!(q81.iter().all(|&b| b == 0), "Q8_1 of zeros: {q81:?}");
}

#[test]
fn extreme_activation_scales() {
    let mut rng = Rng(7);
    for scale in [1e-30f32, 1e-3, 1.0, 1e4, 1e30] {
        let x = rng.vec(64, scale);
        let q = quantized(Q8_0, &x);
        let back = dequant(Q8_0, &q, 64);
        assert!(q[2..34].iter().all(|&b| b as i8 != -128), "quants stay in -127..=127");
        let amax = x[..32].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d32 = amax / 127.0;
        let d16 = half::f16::from_le_bytes([q[0], q[1]]).to_f32();
        if d16 == 0.0 {
            // d underflows f16, as it does in ggml: the block decodes to zeros, not NaN.
            assert!(scale < 1e-6);
            assert!(back[..32].iter().all(|&v| v == 0.0));
        } else if d16.is_infinite() {
            // d overflows f16, as in ggml (the quants are still computed from the f32 d).
            assert!(scale > 1e6);
        } else {
            // Rounding error of the quant, plus the f16 rounding of d (large when d is an f16
            // subnormal, as at 1e-3).
            let bound = 0.5 * d32 + 127.0 * (d32 - d16).abs();
            for (b, v) in back[..32].iter().zip(&x) {
                assert!((b - v).abs() <= bound * 1.001, "{v} -> {b} (d {d32} / {d16})");
            }
        }
    }
}

#[test]
fn float_dots_cover_lane_tail_and_empty_rows() {
    let mut rng = Rng(11);
    for n in [0usize, 1, 15, 16, 17, 37, 100] {
        let w = rng.vec(n, 3.0);
        let x = rng.vec(n, 2.0);
        for ty in [F32, F16, BF16] {
            let row = quantized(ty, &w); // the activation encodings double as weight encodings
            let act = quantized(ty, &x);
            let (want, scale) = dot_f64(&dequant(ty, &row, n), &dequant(ty, &act, n));
            assert_close(vec_dot(ty, n, &row, &act), want, scale, n, &format!("{ty} n={n}"));
        }
    }
}

#[test]
fn q8_0_weights_multi_block_against_f64() {
    let mut rng = Rng(3);
    let n = 32 * 7;
    let rows = 5;
    let mut weights = Vec::new();
    let mut w_deq = Vec::new();
    for r in 0..rows {
        let w = rng.vec(n, 10f32.powi(r as i32 - 2));
        let q = quantized(Q8_0, &w);
        w_deq.push(dequant(Q8_0, &q, n));
        weights.extend(q);
    }
    let x = rng.vec(n, 4.0);
    for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
        let mut act = Vec::new();
        quantize_activations_with(isa, Q8_0, &x, &mut act);
        let a_deq = dequant(Q8_0, &act, n);
        let mut out = vec![f32::NAN; rows];
        dot_rows_with(isa, Q8_0, n, &weights, &act, &mut out);
        for r in 0..rows {
            let (want, scale) = dot_f64(&w_deq[r], &a_deq);
            assert_close(out[r], want, scale, n / 32, &format!("{isa:?} row {r}"));
        }
    }
}

#[test]
#[should_panic(expected = "exactly")]
fn dot_rows_checks_weight_length() {
    let act = quantized(Q8_0, &[1.0; 32]);
    dot_rows(Q8_0, 32, &[0; 34 * 2 + 1], &act, &mut [0.0; 2]);
}

/// Products in strips check interleaved weights as `dot_rows_batch_interleaved` does: Q6_K has no
/// interleaved layout, so no set has a kernel for it.
#[test]
#[should_panic(expected = "no kernel for interleaved")]
fn strips_of_interleaved_weights_check_the_layout() {
    let acts = quantized(Q8_K, &[1.0; 256]);
    dot_rows_batch_in_strips(Q6_K, 256, &[0; 210 * 8], true, &acts, 1, &mut [0.0; 8]);
}

// ---------------------------------------------------------------- gguf reference data

struct Case {
    name: String,
    fields: Vec<(String, String)>,
}

impl Case {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn str(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| panic!("case {}: no {key}", self.name))
    }
    fn usize(&self, key: &str) -> usize {
        self.str(key).parse().unwrap()
    }
    fn ty(&self, key: &str) -> GgmlType {
        let name = self.str(key);
        (0..64).filter_map(GgmlType::from_u32).find(|t| t.name() == name).unwrap()
    }
    fn bytes(&self, key: &str) -> Vec<u8> {
        let s = self.str(key);
        assert!(s.len().is_multiple_of(2));
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
    fn f32s(&self, key: &str) -> Vec<f32> {
        self.bytes(key).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    fn f64s(&self, key: &str) -> Vec<f64> {
        self.bytes(key).chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    }
}

fn gguf_cases() -> Vec<Case> {
    let text = include_str!("testdata/gguf_refs.txt");
    let mut cases = Vec::new();
    let mut current: Option<Case> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "case" => current = Some(Case { name: value.to_string(), fields: Vec::new() }),
            "end" => cases.push(current.take().expect("end without case")),
            _ => current.as_mut().expect("field outside case").fields.push((key.into(), value.into())),
        }
    }
    assert!(current.is_none(), "unterminated case");
    assert_eq!(cases.len(), 18, "cases in gguf_refs.txt");
    cases
}

#[test]
fn gguf_dequantize_is_bit_exact() {
    for case in gguf_cases() {
        let ty = case.ty("type");
        let n = case.usize("rows") * case.usize("cols");
        let weights = case.bytes("weights");
        assert_eq!(weights.len(), row_bytes(ty, n), "{}", case.name);
        assert_bits_eq(&dequant(ty, &weights, n), &case.f32s("dequant"), &case.name);
    }
}

#[test]
fn gguf_activation_conversion_is_byte_exact() {
    for case in gguf_cases().iter().filter(|c| c.get("acts").is_some()) {
        let dot_ty = case.ty("dot_type");
        let x = case.f32s("acts");
        let want = case.bytes("acts_q");
        let got = quantized(dot_ty, &x);
        assert_eq!(got.len(), want.len(), "{}", case.name);
        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
            panic!("{} ({dot_ty}): first differing byte {i}: got {:#04x}, want {:#04x}", case.name, got[i], want[i]);
        }
        assert_bits_eq(&dequant_act(dot_ty, &got, x.len()), &case.f32s("acts_dequant"), &case.name);
    }
}

#[test]
fn gguf_special_values_convert_like_numpy() {
    let cases = gguf_cases();
    let find = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
    let src = find("F32_special").f32s("dequant");
    for (ty, case) in [(F16, "F16_special"), (BF16, "BF16_special")] {
        assert_eq!(quantized(ty, &src), find(case).bytes("weights"), "{case}");
    }
}

#[test]
fn gguf_dot_products_match() {
    let mut generic_cases = 0;
    for case in gguf_cases().iter().filter(|c| c.get("acts").is_some()) {
        let ty = case.ty("type");
        let (rows, cols) = (case.usize("rows"), case.usize("cols"));
        let weights = case.bytes("weights");
        let act = case.bytes("acts_q");
        let (want, plain, scale) = (case.f64s("dot"), case.f64s("dot_plain"), case.f64s("scale"));
        // f32 roundings: one or two per 32-value group, plus for the super-block formats a few per
        // block and the eight lane sums added at the end.
        let terms = match ty.block_len() {
            1 => cols,
            256 => cols / 32 + 12,
            _ => cols / 32,
        };
        let has_s = matches!(ty, Q4_1 | Q5_1);
        let generic = case.get("dot_generic").map(|_| case.f32s("dot_generic"));
        let mut rows_where_s_matters = 0;

        let mut out = vec![f32::NAN; rows];
        dot_rows_with(Isa::Scalar, ty, cols, &weights, &act, &mut out);
        let rb = row_bytes(ty, cols);
        for r in 0..rows {
            let row = &weights[r * rb..(r + 1) * rb];
            let single = vec_dot(ty, cols, row, &act);
            assert_eq!(single.to_bits(), out[r].to_bits(), "{} row {r}: dot_rows vs vec_dot", case.name);
            assert_close(single, want[r], scale[r], terms, &format!("{} row {r}", case.name));
            // Our scalar kernels do ggml's generic C float operations in the same order, so they
            // give its results bit for bit (the generator emulates that C in numpy float32).
            if let Some(g) = &generic {
                assert_eq!(
                    single.to_bits(),
                    g[r].to_bits(),
                    "{} row {r}: got {single:e}, ggml's generic kernel gives {:e}",
                    case.name,
                    g[r]
                );
            }
            let tight = (terms as f64 + 4.0) * (f32::EPSILON as f64 / 2.0) * scale[r];
            let allowed = tight
                + if has_s {
                    // Q4_1/Q5_1 x Q8_1 differ from the plain dot of the dequantized values by the
                    // f16 rounding of the activation blocks' s = d*sum(q) (and of d inside it):
                    // below 2^-10 of |m*s| (we allow twice that), which `scale` includes.
                    scale[r] / 512.0
                } else if ty.block_len() == 256 {
                    // Dequantized super-block weights take up to 3 f32 roundings per value
                    // (d*sc, *q, -dmin*m) and Q8_K activations one (d*q).
                    4.0 * (f32::EPSILON as f64 / 2.0) * scale[r]
                } else {
                    0.0
                };
            let plain_err = (single as f64 - plain[r]).abs();
            assert!(
                plain_err <= allowed,
                "{} row {r}: {single} vs plain {} ({plain_err:e} > {allowed:e})",
                case.name,
                plain[r]
            );
            if has_s && (want[r] - plain[r]).abs() > 4.0 * tight {
                rows_where_s_matters += 1;
            }
        }
        if has_s {
            // Otherwise the tight check above could not tell ggml's m*s formula from a plain dot.
            assert!(rows_where_s_matters > 0, "{} data does not exercise the s term", case.name);
        }
        generic_cases += generic.is_some() as usize;
    }
    assert_eq!(generic_cases, 12, "cases with ggml generic results");
}

#[test]
fn scalar_dot_rows_equals_vec_dot_for_any_row_count() {
    // The scalar dot_rows takes rows in groups; every row count must give vec_dot's result bit
    // for bit.
    for case in gguf_cases().iter().filter(|c| c.get("acts").is_some()) {
        let ty = case.ty("type");
        let cols = case.usize("cols");
        let rb = row_bytes(ty, cols);
        let act = case.bytes("acts_q");
        let four = case.bytes("weights");
        // Rows 0..4, then rows 3, 2, 1 again: 7 rows.
        let mut weights = four.clone();
        for r in [3, 2, 1] {
            weights.extend_from_slice(&four[r * rb..(r + 1) * rb]);
        }
        for rows in 0..=7 {
            let mut out = vec![f32::NAN; rows];
            dot_rows_with(Isa::Scalar, ty, cols, &weights[..rows * rb], &act, &mut out);
            for (r, &o) in out.iter().enumerate() {
                let single = vec_dot(ty, cols, &weights[r * rb..(r + 1) * rb], &act);
                assert_eq!(o.to_bits(), single.to_bits(), "{} rows {rows}, row {r}", case.name);
            }
        }
    }
}
