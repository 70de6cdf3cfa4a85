//! Tests of `crate::quant`: hand-computed blocks, edge cases, and agreement with reference data
//! produced by llama.cpp's `gguf` Python package (`testdata/gguf_refs.txt`, written by
//! `scripts/gen-quant-refs.py`).

use super::block::{self, QuantBlock};
use super::float::{f16_to_f32, f32_to_bf16};
use super::legacy::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use super::*;
use crate::tensor::GgmlType::{self, *};

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

fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    quantize_activations(ty, x, &mut out);
    out
}

/// Dequantize activation bytes of any activation format (Q8_1 is not a weight type, so this goes
/// through the block loop directly).
fn dequant_act(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    match ty {
        Q8_1 => block::dequantize::<BlockQ8_1>(src, &mut out),
        _ => dequantize_row(ty, src, &mut out),
    }
    out
}

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
struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

// ---------------------------------------------------------------- API surface

#[test]
fn supported_types_and_dot_types() {
    let expect = [(F32, F32), (F16, F16), (BF16, BF16), (Q4_0, Q8_0), (Q4_1, Q8_1), (Q8_0, Q8_0)];
    for (ty, dot) in expect {
        assert!(is_supported(ty), "{ty}");
        assert_eq!(vec_dot_type(ty), dot, "{ty}");
    }
    for ty in [Q8_1, Q5_0, Q5_1, Q4_K, Q6_K, IQ4_NL, I32, F64] {
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
    check::<BlockQ8_0>();
    check::<BlockQ8_1>();
}

#[test]
fn quantize_activations_replaces_buffer_contents() {
    let x = [1.0f32; 64];
    let mut out = vec![0xAAu8; 1000];
    for (ty, len) in [(F32, 256), (F16, 128), (BF16, 128), (Q8_0, 68), (Q8_1, 72)] {
        quantize_activations(ty, &x, &mut out);
        assert_eq!(out.len(), len, "{ty}");
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
    dequant(Q4_K, &[0; 144], 256);
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

// ---------------------------------------------------------------- edge cases

#[test]
fn zero_blocks_give_zero_not_nan() {
    let zeros = [0.0f32; 64];
    for ty in [F32, F16, BF16, Q4_0, Q4_1, Q8_0] {
        let act = quantized(vec_dot_type(ty), &zeros);
        let row = vec![0u8; row_bytes(ty, 64)];
        // Q4_0 zero bytes decode to (0 - 8) * 0 = -0.0, as in ggml; only the value matters.
        assert!(dequant(ty, &row, 64).iter().all(|&v| v == 0.0), "{ty} dequant");
        assert_eq!(vec_dot(ty, 64, &row, &act), 0.0, "{ty}");
    }
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
    let act = quantized(Q8_0, &x);
    let a_deq = dequant(Q8_0, &act, n);
    let mut out = vec![f32::NAN; rows];
    dot_rows(Q8_0, n, &weights, &act, &mut out);
    for r in 0..rows {
        let (want, scale) = dot_f64(&w_deq[r], &a_deq);
        assert_close(out[r], want, scale, n / 32, &format!("row {r}"));
    }
}

#[test]
#[should_panic(expected = "exactly")]
fn dot_rows_checks_weight_length() {
    let act = quantized(Q8_0, &[1.0; 32]);
    dot_rows(Q8_0, 32, &[0; 34 * 2 + 1], &act, &mut [0.0; 2]);
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
    assert_eq!(cases.len(), 9, "cases in gguf_refs.txt");
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
    for case in gguf_cases().iter().filter(|c| c.get("acts").is_some()) {
        let ty = case.ty("type");
        let (rows, cols) = (case.usize("rows"), case.usize("cols"));
        let weights = case.bytes("weights");
        let act = case.bytes("acts_q");
        let (want, plain, scale) = (case.f64s("dot"), case.f64s("dot_plain"), case.f64s("scale"));
        let terms = if ty.block_len() == 1 { cols } else { cols / 32 };
        let mut q4_1_rows_where_s_matters = 0;

        let mut out = vec![f32::NAN; rows];
        dot_rows(ty, cols, &weights, &act, &mut out);
        let rb = row_bytes(ty, cols);
        for r in 0..rows {
            let row = &weights[r * rb..(r + 1) * rb];
            let single = vec_dot(ty, cols, row, &act);
            assert_eq!(single.to_bits(), out[r].to_bits(), "{} row {r}: dot_rows vs vec_dot", case.name);
            assert_close(single, want[r], scale[r], terms, &format!("{} row {r}", case.name));
            // Q4_1 x Q8_1 differs from the plain dot of the dequantized values by the f16 rounding
            // of the activation blocks' s = d*sum(q) (and of d inside it): below 2^-10 of |m*s| (we allow twice that),
            // which `scale` includes.
            let tight = (terms as f64 + 4.0) * (f32::EPSILON as f64 / 2.0) * scale[r];
            let allowed = tight + if ty == Q4_1 { scale[r] / 512.0 } else { 0.0 };
            let plain_err = (single as f64 - plain[r]).abs();
            assert!(
                plain_err <= allowed,
                "{} row {r}: {single} vs plain {} ({plain_err:e} > {allowed:e})",
                case.name,
                plain[r]
            );
            if ty == Q4_1 && (want[r] - plain[r]).abs() > 4.0 * tight {
                q4_1_rows_where_s_matters += 1;
            }
        }
        if ty == Q4_1 {
            // Otherwise the tight check above could not tell ggml's m*s formula from a plain dot.
            assert!(q4_1_rows_where_s_matters > 0, "Q4_1 data does not exercise the s term");
        }
    }
}
