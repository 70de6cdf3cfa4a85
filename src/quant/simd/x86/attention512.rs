//! Attention's f16 kernels on 512-bit vectors, for the AVX-512 set (the AVX2 set has the
//! 256-bit ones in `attention256`). The weight kernels stay at 256 bits because decode waits on
//! memory; these wait on instructions once the keys and values are in cache, as much of a long
//! context's are. At head size 64 the 256-bit score kernel spent most of its work zeroing and
//! reducing four accumulators per row and head that had each taken two multiply-adds, and
//! loading the queries again for every row. Here a row and head take two 16-lane accumulators,
//! the queries of a pass stay in registers (head sizes 64 and 128), and rows are reduced sixteen
//! at a time in one transposing tree ([`hsum16`]); the value kernel holds twice the outputs per
//! register.
//!
//! `attention_kernel_throughput` on Zen 4 at 1000 positions, ns per position and head, scores /
//! values, two runs each, before -> after:
//! - in cache: SmolLM2's shape 3.7-4.3 / 1.8-2.0 -> 3.2 / 1.4; Qwen2.5-0.5B's 4.0-4.3 / 1.8-2.0
//!   -> 2.7-3.0 / 1.2-1.4; Qwen2.5-1.5B's 4.8-5.6 / 2.7-3.7 -> 3.8-3.9 / 2.4-2.5; Gemma-3's
//!   9.3-10.4 / 6.9-9.6 -> 8.2-9.6 / 4.5-5.8;
//! - evicted from every level first (`ATTN_COLD=1`): values of the two 64-wide shapes 2.0-2.7
//!   -> 1.5-2.5, Qwen2.5-1.5B's 6.6-6.8 -> 4.0-4.5, Gemma-3's 16.7-21.0 -> 10.4-11.4; scores
//!   SmolLM2's 4.2-4.6 -> 4.0-4.2, Qwen2.5-0.5B's 3.9 -> 2.9-3.0, Qwen2.5-1.5B's 5.6-5.7 ->
//!   5.1-5.2, Gemma-3's 11.9-12.8 -> 10.6-12.8. At 192 positions, evicted, SmolLM2's scores
//!   were slower (6.9-7.1 -> 7.6-8.0) and its values a little faster (4.5-4.6 -> 4.2-4.4).
//!
//! Results are deterministic and, as the 256-bit kernels' are, the same for a head whatever
//! heads go with it and for a row whatever rows go with it; they differ from the 256-bit
//! kernels' (and from the scalar reference's) by f32 rounding in the order of the sums.

use super::attention256::{prefetch_f16_first_rows, prefetch_f16_rows_ahead};
use crate::quant::block::F16Le;
use core::arch::x86_64::*;

/// Query heads the score kernel multiplies with each key it converts, where their query
/// vectors are read from memory (head sizes other than 64 and 128): every head of a group in one
/// pass for the models we run (Gemma-3 has 4 per key head).
const SCORE_HEADS_PER_PASS: usize = 8;

/// Registers that hold query vectors through a pass, for head sizes of 64 and 128: 4 heads of
/// 64 (SmolLM2's 3, Qwen2.5-0.5B's 7 in passes of 4 and 3) or 2 of 128 (Qwen2.5-1.5B's 6 in
/// three). Loading them from memory for every row cost more than the multiply-adds did (in
/// cache, SmolLM2's shape: 4.2-4.9 ns per position and head, 2.2-2.8 held).
const QUERY_REGISTERS: usize = 16;

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
    let mut h = 0;
    while h < heads {
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
        h += pass;
    }
}

/// [`dot_f16_f32`] of `P` heads: `b` starts with their query vectors, `out` with their `len`
/// scores each. With `C` > 0 the head size is `16 * C` and the queries stay in registers;
/// with `C` = 0 any head size, queries read from memory. Rows go in blocks of sixteen whose
/// sums are finished by [`hsum16`] (a partial block with zeros for the missing rows, which
/// leaves the others' bits alone); the last `n % 16` products one by one after that.
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
    let whole = n - n % 16;
    let queries: [&[f32]; P] = std::array::from_fn(|h| &b[h * n..][..n]);
    let held: [[__m512; C]; P] = std::array::from_fn(|h| std::array::from_fn(|c| f32x16(&queries[h][16 * c..])));
    let mut sums = [[_mm512_setzero_ps(); 16]; P];
    for first in (0..len).step_by(16) {
        let count = (len - first).min(16);
        for k in 0..count {
            let t = first + k;
            prefetch_f16_rows_ahead(rows, row_bytes, at + t * row_bytes, 2 * n);
            let key = &rows[t * row_bytes + at..][..2 * whole];
            let row = if C > 0 { row_sums_held(key, &held) } else { row_sums(key, &queries) };
            for (sums, row) in sums.iter_mut().zip(row) {
                sums[k] = row;
            }
        }
        for (h, sums) in sums.iter_mut().enumerate() {
            sums[count..].fill(_mm512_setzero_ps());
            let mut scores = [0.0f32; 16];
            // SAFETY: `scores` is 16 f32 (64 bytes); storeu has no alignment requirement.
            unsafe { _mm512_storeu_ps(scores.as_mut_ptr(), hsum16(sums)) };
            let out = &mut out[h * len + first..][..count];
            out.copy_from_slice(&scores[..count]);
            if whole < n {
                for (k, o) in out.iter_mut().enumerate() {
                    let key = &rows[(first + k) * row_bytes + at..][..2 * n];
                    for j in whole..n {
                        *o += F16Le([key[2 * j], key[2 * j + 1]]).to_f32() * queries[h][j];
                    }
                }
            }
        }
    }
}

/// One key's products with `P` queries held in registers, 16 values per step: even steps
/// summed in one accumulator, odd in another (so that a long head is not one chain of
/// dependent multiply-adds), the two added at the end, as [`row_sums`] adds.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn row_sums_held<const P: usize, const C: usize>(key: &[u8], held: &[[__m512; C]; P]) -> [__m512; P] {
    let keys: [__m512; C] = std::array::from_fn(|c| f16x16(key[32 * c..32 * c + 32].try_into().expect("32 bytes")));
    std::array::from_fn(|h| {
        let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for (c, key) in keys.iter().enumerate() {
            if c % 2 == 0 {
                even = _mm512_fmadd_ps(*key, held[h][c], even);
            } else {
                odd = _mm512_fmadd_ps(*key, held[h][c], odd);
            }
        }
        _mm512_add_ps(even, odd)
    })
}

/// [`row_sums_held`] for any number of whole 16-value steps in `key`, the queries read from
/// memory: steps in pairs, with a step index known only at run time the accumulators would
/// live on the stack.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn row_sums<const P: usize>(key: &[u8], queries: &[&[f32]; P]) -> [__m512; P] {
    let (mut even, mut odd) = ([_mm512_setzero_ps(); P], [_mm512_setzero_ps(); P]);
    let pairs = key.chunks_exact(64);
    let last = pairs.remainder();
    for (i, pair) in pairs.enumerate() {
        let k0 = f16x16(pair[..32].try_into().expect("32 bytes"));
        let k1 = f16x16(pair[32..].try_into().expect("32 bytes"));
        for h in 0..P {
            let q = &queries[h][32 * i..];
            even[h] = _mm512_fmadd_ps(k0, f32x16(q), even[h]);
            odd[h] = _mm512_fmadd_ps(k1, f32x16(&q[16..]), odd[h]);
        }
    }
    if !last.is_empty() {
        let k = f16x16(last.try_into().expect("32 bytes"));
        let at = key.len() / 2 - 16;
        for h in 0..P {
            even[h] = _mm512_fmadd_ps(k, f32x16(&queries[h][at..]), even[h]);
        }
    }
    std::array::from_fn(|h| _mm512_add_ps(even[h], odd[h]))
}

/// Lane k = the sum of the lanes of `v[k]`, each added in the same order whatever its k: halves
/// of 256 bits, then of 128, within 128-bit lanes as [`super::avx512vnni`]'s `hsum8` does, and a
/// last permute that puts the rows back in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn hsum16(v: &[__m512; 16]) -> __m512 {
    // Vector k: lanes 0..8 row k's eight partial sums, lanes 8..16 row k + 8's.
    let eights: [__m512; 8] = std::array::from_fn(|k| {
        let (a, b) = (v[k], v[k + 8]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b))
    });
    // Vector k: four partial sums of rows k, k + 8, k + 4 and k + 12, one per 128-bit lane.
    let fours: [__m512; 4] = std::array::from_fn(|k| {
        let (a, b) = (eights[k], eights[k + 4]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(a, b), _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b))
    });
    // Per 128-bit lane, [x0 + x2, y0 + y2, x1 + x3, y1 + y3] of vectors x, y.
    let pair = |x: __m512, y: __m512| _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    let (p01, p23) = (pair(fours[0], fours[1]), pair(fours[2], fours[3]));
    let even = _mm512_shuffle_ps::<0b01_00_01_00>(p01, p23);
    let odd = _mm512_shuffle_ps::<0b11_10_11_10>(p01, p23);
    // 128-bit lanes of rows 0..4, 8..12, 4..8, 12..16: the middle two swap.
    let sums = _mm512_add_ps(even, odd);
    _mm512_shuffle_f32x4::<0b11_01_10_00>(sums, sums)
}

/// `out_h[i] += p_h[t] * v_t[i]` for every row t in order, for each head h (see
/// `quant::axpy_f16_heads`): heads in passes of up to four, each pass's outputs summed in
/// registers over every row, in runs of up to [`VALUE_REGISTERS`] vectors per pass.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn axpy_f16(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize, n: usize) {
    let heads = out.len() / n.max(1);
    let len = p.len().checked_div(heads).unwrap_or(0);
    prefetch_f16_first_rows(rows, row_bytes, at, 2 * n, len);
    let mut h = 0;
    while h < heads {
        let pass = (heads - h).min(4);
        let (out, p) = (&mut out[h * n..(h + pass) * n], &p[h * len..(h + pass) * len]);
        match pass {
            1 => axpy_heads::<1>(out, p, rows, row_bytes, at, n),
            2 => axpy_heads::<2>(out, p, rows, row_bytes, at, n),
            3 => axpy_heads::<3>(out, p, rows, row_bytes, at, n),
            _ => axpy_heads::<4>(out, p, rows, row_bytes, at, n),
        }
        h += pass;
    }
}

/// [`axpy_f16`] of `P` heads: passes over the rows with the largest power of two of registers
/// per head that fits, the last `n % 16` outputs one by one.
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
    if done == n {
        return;
    }
    let len = p.len() / P;
    for (out, p) in out.chunks_exact_mut(n).zip(p.chunks_exact(len.max(1))) {
        for (t, &p) in p.iter().enumerate() {
            let v = &rows[t * row_bytes + at..][..2 * n];
            for (j, o) in out.iter_mut().enumerate().skip(done) {
                *o += p * F16Le([v[2 * j], v[2 * j + 1]]).to_f32();
            }
        }
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

/// 16 little-endian f16 values, converted.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn f16x16(bytes: &[u8; 32]) -> __m512 {
    // SAFETY: `bytes` is 32 bytes; loadu has no alignment requirement.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) })
}
