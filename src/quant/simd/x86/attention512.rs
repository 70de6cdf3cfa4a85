//! Attention's f16 kernels on 512-bit vectors, for the AVX-512 set (the AVX2 set has the
//! 256-bit ones in `attention256`). The weight kernels stay at 256 bits because decode waits on
//! memory; these wait on instructions once the keys and values are in cache, as much of a long
//! context's are. The 256-bit score kernel loaded each head's queries again for every row and
//! took a multiply-add per 8 values; here the queries of a pass stay in registers (head sizes 64
//! and 128) and a multiply-add takes 16. The value kernel holds twice the outputs per register.
//!
//! Both give the 256-bit kernels' results bit for bit, so that a model's logits are the same on
//! either set: each 512-bit accumulator is two of the 256-bit kernel's side by side, each lane
//! taking the same products in the same order, and the rows' sums are finished by the 256-bit
//! kernel's own code (`dot_f16_pass_with`). (Summed in another order, with fewer accumulators,
//! Gemma-3's logits moved by up to 0.5 and its agreement with llama.cpp got worse: top-20
//! differences of 0.18-0.36 on average per prompt against 0.12-0.27, and one step where
//! llama.cpp is confident came out differently.)
//!
//! `attention_kernel_throughput` on Zen 4, ns per position and head, scores / values, two runs
//! each, before -> after:
//! - 192 positions, in cache: SmolLM2's shape 3.6 / 1.5 -> 2.6 / 1.5, Qwen2.5-0.5B's 3.7 / 1.4 ->
//!   2.4 / 1.3, Qwen2.5-1.5B's 4.8-4.9 / 2.7 -> 4.2-4.3 / 2.5, Gemma-3's 9.1 / 6.0 -> 7.2-7.3 /
//!   4.6;
//! - 192 positions, evicted from every level first (`ATTN_COLD=1`, as a decode step's weights
//!   do): 7.1-7.5 / 4.6-4.9 -> 5.8-5.9 / 3.8-4.4, 5.2-5.3 / 2.5-2.8 -> 3.9 / 2.2,
//!   7.3-8.0 / 5.4-5.6 -> 6.3-6.6 / 4.3-4.5, 13.9-14.8 / 13.2 -> 12.7-12.8 / 9.8-11.5;
//! - 1000 positions, in cache: 3.0 / 1.3 -> 2.4 / 1.4, 3.2 / 1.4 -> 2.3 / 1.2, 4.8 / 2.7 ->
//!   4.0 / 2.4-2.5, 9.2 / 7.0 -> 7.4 / 4.4;
//! - 1000 positions, evicted: 4.2-4.5 / 3.0-3.1 -> 3.2-3.4 / 2.5-2.6, 3.7-3.8 / 2.1-2.3 ->
//!   2.7-2.8 / 1.7-1.8, 5.4-5.6 / 5.9-6.8 -> 5.1-5.4 / 4.5-4.6, 12.0-12.8 / 16.0-19.3 ->
//!   10.0-14.0 / 12.1-12.3.

use super::attention256::{axpy_f16_heads, dot_f16_pass_with, prefetch_f16_first_rows, prefetch_f16_rows_ahead};
use core::arch::x86_64::*;

/// Query heads the score kernel multiplies with each key it converts, where their query
/// vectors are read from memory (head sizes other than 64 and 128): every head of a group in one
/// pass for the models we run (Gemma-3 has 4 per key head).
const SCORE_HEADS_PER_PASS: usize = 8;

/// Registers that hold query vectors through a pass, for head sizes of 64 and 128: 4 heads of
/// 64 (SmolLM2's 3, Qwen2.5-0.5B's 7 in passes of 4 and 3) or 2 of 128 (Qwen2.5-1.5B's 6 in
/// three). Loading them from memory for every row cost more than the multiply-adds did (in
/// cache, SmolLM2's shape, with an earlier form of the kernel: 4.2-4.9 ns per position and
/// head, 2.2-2.8 held).
const QUERY_REGISTERS: usize = 16;

/// Heads the value kernel weights each converted value row for.
const VALUE_HEADS_PER_PASS: usize = 4;

/// Accumulator registers the value kernel gives a pass over the rows (of the 32), spread over
/// its heads: the rest hold a converted value and the heads' weights.
const VALUE_REGISTERS: usize = 16;

/// `out[h * len + t] = row t . b_h` (see `quant::dot_f16_f32_heads`), heads in passes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_f16_f32(rows: &[u8], row_bytes: usize, at: usize, b: &[f32], n: usize, out: &mut [f32]) {
    let heads = b.len() / n.max(1);
    let len = out.len().checked_div(heads).unwrap_or(0);
    prefetch_f16_first_rows(rows, row_bytes, at, 2 * n, len);
    let most = match n {
        64 | 128 => QUERY_REGISTERS / (n / 16),
        _ => SCORE_HEADS_PER_PASS,
    };
    for h in (0..heads).step_by(most) {
        let (b, out) = (&b[h * n..], &mut out[h * len..]);
        let pass = (heads - h).min(most);
        match (n, pass) {
            (64, 1) => dot_pass::<1, 4>(rows, row_bytes, at, b, n, out, len),
            (64, 2) => dot_pass::<2, 4>(rows, row_bytes, at, b, n, out, len),
            (64, 3) => dot_pass::<3, 4>(rows, row_bytes, at, b, n, out, len),
            (64, _) => dot_pass::<4, 4>(rows, row_bytes, at, b, n, out, len),
            (128, 1) => dot_pass::<1, 8>(rows, row_bytes, at, b, n, out, len),
            (128, _) => dot_pass::<2, 8>(rows, row_bytes, at, b, n, out, len),
            (_, 1) => dot_pass::<1, 0>(rows, row_bytes, at, b, n, out, len),
            (_, 2) => dot_pass::<2, 0>(rows, row_bytes, at, b, n, out, len),
            (_, 3) => dot_pass::<3, 0>(rows, row_bytes, at, b, n, out, len),
            (_, 4) => dot_pass::<4, 0>(rows, row_bytes, at, b, n, out, len),
            (_, 5) => dot_pass::<5, 0>(rows, row_bytes, at, b, n, out, len),
            (_, 6) => dot_pass::<6, 0>(rows, row_bytes, at, b, n, out, len),
            (_, 7) => dot_pass::<7, 0>(rows, row_bytes, at, b, n, out, len),
            _ => dot_pass::<SCORE_HEADS_PER_PASS, 0>(rows, row_bytes, at, b, n, out, len),
        }
    }
}

/// [`dot_f16_f32`] of `P` heads through the 256-bit kernel's rows and sums
/// (`dot_f16_pass_with`), each 32-value step on two 512-bit registers per head: the first
/// holds accumulators 0 and 1 of the 256-bit kernel side by side, the second 2 and 3, each lane
/// taking the same products in the same order. With `C` > 0 the head size is `16 * C` and the
/// queries stay in registers; with `C` = 0 any head size, queries read from memory.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
fn dot_pass<const P: usize, const C: usize>(
    rows: &[u8],
    row_bytes: usize,
    at: usize,
    b: &[f32],
    n: usize,
    out: &mut [f32],
    len: usize,
) {
    let held: [[__m512; C]; P] = std::array::from_fn(|h| std::array::from_fn(|c| f32x16(&b[h * n + 16 * c..])));
    dot_f16_pass_with::<P>(rows, row_bytes, at, b, n, out, len, |key, queries| {
        let (mut first, mut second) = ([_mm512_setzero_ps(); P], [_mm512_setzero_ps(); P]);
        if C > 0 {
            // A constant count of steps: the loop unrolls and `held` stays in registers.
            for i in 0..C / 2 {
                let q = std::array::from_fn(|h| [held[h][2 * i], held[h][2 * i + 1]]);
                step(&key[64 * i..64 * i + 64], q, &mut first, &mut second);
            }
        } else {
            for (i, key) in key.chunks_exact(64).enumerate() {
                let q = std::array::from_fn(|h| [f32x16(&queries[h][32 * i..]), f32x16(&queries[h][32 * i + 16..])]);
                step(key, q, &mut first, &mut second);
            }
        }
        std::array::from_fn(|h| [low(first[h]), high(first[h]), low(second[h]), high(second[h])])
    })
}

/// One 32-value step of a key (64 bytes) against `P` heads' query values `q`: the first 16
/// products into `first`, the other 16 into `second`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn step<const P: usize>(key: &[u8], q: [[__m512; 2]; P], first: &mut [__m512; P], second: &mut [__m512; P]) {
    let k0 = f16x16(key[..32].try_into().expect("32 bytes"));
    let k1 = f16x16(key[32..64].try_into().expect("32 bytes"));
    for h in 0..P {
        first[h] = _mm512_fmadd_ps(k0, q[h][0], first[h]);
        second[h] = _mm512_fmadd_ps(k1, q[h][1], second[h]);
    }
}

/// `out_h[i] += p_h[t] * v_t[i]` for every row t in order, for each head h (see
/// `quant::axpy_f16_heads`): heads in passes of up to [`VALUE_HEADS_PER_PASS`], each pass's
/// outputs summed in registers over every row, in runs of up to [`VALUE_REGISTERS`] vectors.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn axpy_f16(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize, n: usize) {
    let heads = out.len() / n.max(1);
    let len = p.len().checked_div(heads).unwrap_or(0);
    prefetch_f16_first_rows(rows, row_bytes, at, 2 * n, len);
    for h in (0..heads).step_by(VALUE_HEADS_PER_PASS) {
        let pass = (heads - h).min(VALUE_HEADS_PER_PASS);
        let (out, p) = (&mut out[h * n..(h + pass) * n], &p[h * len..(h + pass) * len]);
        match pass {
            1 => axpy_heads::<1>(out, p, rows, row_bytes, at, n),
            2 => axpy_heads::<2>(out, p, rows, row_bytes, at, n),
            3 => axpy_heads::<3>(out, p, rows, row_bytes, at, n),
            _ => axpy_heads::<VALUE_HEADS_PER_PASS>(out, p, rows, row_bytes, at, n),
        }
    }
}

/// [`axpy_f16`] of `P` heads: passes over the rows with the largest power of two of registers
/// per head that fits, then the outputs past the last 16 as the 256-bit kernel takes them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn axpy_heads<const P: usize>(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize, n: usize) {
    let done = n - n % 16;
    let most = VALUE_REGISTERS / P;
    let mut start = 0;
    while start < done {
        let regs = match ((done - start) / 16).min(most) {
            16.. => 16,
            8..=15 => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        };
        let at = at + 2 * start;
        match regs {
            16 => axpy_pass::<P, 16>(out, n, start, p, rows, row_bytes, at),
            8 => axpy_pass::<P, 8>(out, n, start, p, rows, row_bytes, at),
            4 => axpy_pass::<P, 4>(out, n, start, p, rows, row_bytes, at),
            2 => axpy_pass::<P, 2>(out, n, start, p, rows, row_bytes, at),
            _ => axpy_pass::<P, 1>(out, n, start, p, rows, row_bytes, at),
        }
        start += 16 * regs;
    }
    // Outputs past the last 16 as the 256-bit kernel takes them (8 in a register, then one by
    // one, a multiply and an add, not fused), so that both sets give the same bits.
    if done < n {
        axpy_f16_heads::<P>(out, p, rows, row_bytes, at, n, done);
    }
}

/// [`axpy_f16`] of outputs `start..start + 16 * W` of each of `P` heads, in `P * W` registers;
/// `at` is where those outputs' values start in a row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
fn axpy_pass<const P: usize, const W: usize>(
    out: &mut [f32],
    n: usize,
    start: usize,
    p: &[f32],
    rows: &[u8],
    row_bytes: usize,
    at: usize,
) {
    let len = p.len() / P;
    let weights: [&[f32]; P] = std::array::from_fn(|h| &p[h * len..][..len]);
    let slot = |h: usize, k: usize| h * n + start + 16 * k;
    let mut acc: [[__m512; W]; P] = std::array::from_fn(|h| std::array::from_fn(|k| f32x16(&out[slot(h, k)..])));
    for t in 0..len {
        prefetch_f16_rows_ahead(rows, row_bytes, at + t * row_bytes, 32 * W);
        let v = &rows[t * row_bytes + at..][..32 * W];
        let pv: [__m512; P] = std::array::from_fn(|h| _mm512_set1_ps(weights[h][t]));
        for k in 0..W {
            let value = f16x16(v[32 * k..32 * k + 32].try_into().expect("32 bytes"));
            for (acc, pv) in acc.iter_mut().zip(&pv) {
                acc[k] = _mm512_fmadd_ps(*pv, value, acc[k]);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        for (k, acc) in acc.iter().enumerate() {
            let o: &mut [f32; 16] = (&mut out[slot(h, k)..slot(h, k) + 16]).try_into().expect("16 values");
            // SAFETY: `o` is 16 f32 (64 bytes); storeu has no alignment requirement.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *acc) };
        }
    }
}

/// The first 16 values of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn f32x16(v: &[f32]) -> __m512 {
    let v: &[f32; 16] = v[..16].try_into().expect("16 values");
    // SAFETY: `v` is 16 f32 (64 bytes); loadu has no alignment requirement.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// Lanes 0..8 of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn low(v: __m512) -> __m256 {
    _mm512_castps512_ps256(v)
}

/// Lanes 8..16 of `v` (through the f64 view: the f32 extract is AVX-512DQ, which the set does
/// not require).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn high(v: __m512) -> __m256 {
    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
}

/// 16 little-endian f16 values, converted.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn f16x16(bytes: &[u8; 32]) -> __m512 {
    // SAFETY: `bytes` is 32 bytes; loadu has no alignment requirement.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) })
}
