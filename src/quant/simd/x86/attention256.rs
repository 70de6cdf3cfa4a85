//! Attention's f16 kernels on 256-bit vectors, for the AVX2 set: the scores of query heads
//! against the cached keys of the key/value head they share, and the weighted sums of its cached
//! values. (The AVX-512 set has its own, `attention512`.) Rows are f16 at a stride inside the
//! cache's rows, as `KvCache` lays them out; each is converted once for every head of a pass.

use super::avx2::{hsum, load16, prefetch_lines};
use crate::quant::block::F16Le;
use core::arch::x86_64::*;

/// Query heads attention's f16 score kernel multiplies with each key it converts (heads that
/// share a key/value head).
const HEADS_PER_PASS: usize = 3;

/// How many rows ahead attention's f16 kernels prefetch the cached keys and values. A decode
/// step reads them from DRAM, in 4 KiB pages, at a few hundred bytes per query head: 16 rows
/// (2 KiB at SmolLM2's head size) did not cover the misses. SmolLM2, one thread, 192 cached
/// positions, six alternating rounds: 4.52-4.87 ms per token at 48 rows (96 the same) against
/// 4.74-4.93 at 16; Gemma-3 (rows of 512 bytes) and two threads unchanged to slightly faster.
const F16_ROWS_AHEAD: usize = 48;

/// `out[h * len + t] = sum(a_t[i] * b_h[i])` for the f16 vectors `a_t` (little-endian
/// bytes, `2 * n` of them) at byte `at` of each of the `len = out.len() / heads`
/// rows of `row_bytes` of `rows`, and the `heads = b.len() / n` query vectors `b_h`
/// of `n` values in `b` (attention's keys against the query heads that share them).
/// Eight lanes at a time with FMA, four accumulators per head, the tail one by one;
/// each head's sums are the same whatever heads go with it. Heads go in passes of
/// up to [`HEADS_PER_PASS`], each converting a key once for all of them.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_f16_f32(rows: &[u8], row_bytes: usize, at: usize, b: &[f32], n: usize, out: &mut [f32]) {
    let heads = b.len() / n.max(1);
    let len = out.len().checked_div(heads).unwrap_or(0);
    prefetch_f16_first_rows(rows, row_bytes, at, 2 * n, len);
    for h in (0..heads).step_by(HEADS_PER_PASS) {
        let (b, out) = (&b[h * n..], &mut out[h * len..]);
        let pass = (heads - h).min(HEADS_PER_PASS);
        match pass {
            1 => dot_f16_pass::<1>(rows, row_bytes, at, b, n, out, len),
            2 => dot_f16_pass::<2>(rows, row_bytes, at, b, n, out, len),
            _ => dot_f16_pass::<{ HEADS_PER_PASS }>(rows, row_bytes, at, b, n, out, len),
        }
    }
}

/// [`dot_f16_f32`] of `P` heads: `b` starts with their query vectors, `out` with
/// their `len` scores each.
///
/// Each (row, head) sums in four accumulators, added pairwise; rows go in blocks of
/// eight whose eight sums per head are finished together by [`hsum8`], which adds
/// in [`hsum`]'s order (a row alone, or a block's last few, gets `hsum` itself, with
/// the same bits). A horizontal sum per row and head was a chain of shuffles and
/// adds at the end of every row (Zen 3, in cache, head size 256: 19.0 ns per
/// position and head before, 13.8 after; head size 64 gained less).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16_pass<const P: usize>(
    rows: &[u8],
    row_bytes: usize,
    at: usize,
    b: &[f32],
    n: usize,
    out: &mut [f32],
    len: usize,
) {
    dot_f16_pass_with::<P>(rows, row_bytes, at, b, n, out, len, |key, queries| {
        let mut acc = [[_mm256_setzero_ps(); 4]; P];
        for (i, key) in key.chunks_exact(64).enumerate() {
            let keys: [__m256; 4] = std::array::from_fn(|j| f16x8(&key[16 * j..]));
            for (acc, q) in acc.iter_mut().zip(queries) {
                let q = &q[32 * i..32 * i + 32];
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(keys[j], f32x8(&q[8 * j..]), *acc);
                }
            }
        }
        acc
    })
}

/// [`dot_f16_pass`] with the 32-value steps of a row taken by `steps`: given the row's
/// first `n - n % 32` values (f16 bytes) and the queries, it returns each head's four
/// accumulators, accumulator j having summed the products of values `32 * i + 8 * j..`
/// of every step i, lane by lane, in order. The AVX-512 kernels take the steps on
/// 512-bit vectors (two accumulators to a register) and get these bits too.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) fn dot_f16_pass_with<const P: usize>(
    rows: &[u8],
    row_bytes: usize,
    at: usize,
    b: &[f32],
    n: usize,
    out: &mut [f32],
    len: usize,
    steps: impl Fn(&[u8], &[&[f32]; P]) -> [[__m256; 4]; P],
) {
    let (whole, eights) = (n - n % 32, n - n % 8);
    let queries: [&[f32]; P] = std::array::from_fn(|h| &b[h * n..][..n]);
    let mut sums = [[_mm256_setzero_ps(); 8]; P];
    for first in (0..len).step_by(8) {
        let count = (len - first).min(8);
        for k in 0..count {
            let t = first + k;
            prefetch_f16_rows_ahead(rows, row_bytes, at + t * row_bytes, 2 * n);
            let key = &rows[t * row_bytes + at..][..2 * n];
            let mut acc = steps(&key[..2 * whole], &queries);
            for i in (whole..eights).step_by(8) {
                let key = f16x8(&key[2 * i..]);
                for (acc, q) in acc.iter_mut().zip(&queries) {
                    acc[0] = _mm256_fmadd_ps(key, f32x8(&q[i..]), acc[0]);
                }
            }
            for (sums, acc) in sums.iter_mut().zip(&acc) {
                sums[k] = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            }
        }
        for (h, sums) in sums.iter().enumerate() {
            let out = &mut out[h * len + first..][..count];
            if count == 8 {
                let o: &mut [f32; 8] = out.try_into().expect("8 scores");
                // SAFETY: `o` is 8 f32 (32 bytes); storeu has no alignment requirement.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), hsum8(sums)) };
            } else {
                out.iter_mut().zip(sums).for_each(|(o, &s)| *o = hsum(s));
            }
            // The last `n % 8` products one by one, after the vector sum (rows
            // sliced again only where there are some).
            if eights < n {
                for (k, o) in out.iter_mut().enumerate() {
                    let key = &rows[(first + k) * row_bytes + at..][..2 * n];
                    for j in eights..n {
                        *o += F16Le([key[2 * j], key[2 * j + 1]]).to_f32() * queries[h][j];
                    }
                }
            }
        }
    }
}

/// The first 8 f16 values (16 little-endian bytes) of `v`, converted.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x8(v: &[u8]) -> __m256 {
    _mm256_cvtph_ps(load16::<16>(v[..16].try_into().expect("16 bytes"), 0))
}

/// The first 8 values of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f32x8(v: &[f32]) -> __m256 {
    let v: &[f32; 8] = v[..8].try_into().expect("8 values");
    // SAFETY: `v` is 8 f32 (32 bytes); loadu has no alignment requirement.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// For each head h of `out` (runs of `n` outputs, one per head) and its weights in `p`
/// (runs of `len`, one per head): `out_h[i] += p_h[t] * v_t[i]` for every row t, in
/// order, for the f16 vectors `v_t` (little-endian bytes, `2 * n` of them) at byte
/// `at` of each `row_bytes` row of `rows` (attention's weighted sums of values, for
/// the query heads that share a key/value head).
///
/// Outputs are summed in registers over every row (a pass), not loaded and stored per
/// row: through memory each row waited on the previous row's store, and the value
/// rows (from DRAM: the weights stream through the cache between one token's layer
/// and the next's) were fetched a few rows at a time. Heads go in passes of up to
/// [`HEADS_PER_PASS`], each converting a row once for all of them; each
/// head's sums are the same whatever heads go with it.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn axpy_f16(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize, n: usize) {
    let heads = out.len() / n.max(1);
    let len = p.len().checked_div(heads).unwrap_or(0);
    prefetch_f16_first_rows(rows, row_bytes, at, 2 * n, len);
    for h in (0..heads).step_by(HEADS_PER_PASS) {
        let pass = (heads - h).min(HEADS_PER_PASS);
        let (out, p) = (&mut out[h * n..(h + pass) * n], &p[h * len..(h + pass) * len]);
        match pass {
            1 => axpy_f16_heads::<1>(out, p, rows, row_bytes, at, n, 0),
            2 => axpy_f16_heads::<2>(out, p, rows, row_bytes, at, n, 0),
            _ => axpy_f16_heads::<{ HEADS_PER_PASS }>(out, p, rows, row_bytes, at, n, 0),
        }
    }
}

/// [`axpy_f16`] of `P` heads, outputs `from..n` of each (the AVX-512 kernel leaves this one
/// the outputs past its last 16): 8 outputs per register, passes over the rows with up to 8
/// registers for one head and 4 per head for more, the last partial 8 one by one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) fn axpy_f16_heads<const P: usize>(
    out: &mut [f32],
    p: &[f32],
    rows: &[u8],
    row_bytes: usize,
    at: usize,
    n: usize,
    from: usize,
) {
    super::align_spills();
    let done = n - n % 8;
    // Accumulators per head: 8 alone, 4 each for two or three heads (12 of the 16
    // registers, with a value and the heads' weights).
    let most = if P == 1 { 8 } else { 4 };
    let mut start = from;
    while start < done {
        // Registers per head for this pass: the most, or the largest power of two
        // that fits.
        let regs = match ((done - start) / 8).min(most) {
            8.. => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        };
        let at = at + 2 * start;
        match regs {
            8 => axpy_f16_pass::<P, 8>(out, n, start, p, rows, row_bytes, at),
            4 => axpy_f16_pass::<P, 4>(out, n, start, p, rows, row_bytes, at),
            2 => axpy_f16_pass::<P, 2>(out, n, start, p, rows, row_bytes, at),
            _ => axpy_f16_pass::<P, 1>(out, n, start, p, rows, row_bytes, at),
        }
        start += 8 * regs;
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

/// [`axpy_f16`] of outputs `start..start + 8 * W` of each of `P` heads, in `P * W`
/// registers; `at` is where those outputs' values start in a row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn axpy_f16_pass<const P: usize, const W: usize>(
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
    let slot = |h: usize, k: usize| h * n + start + 8 * k;
    let mut acc: [[__m256; W]; P] = std::array::from_fn(|h| {
        std::array::from_fn(|k| {
            let o: &[f32; 8] = out[slot(h, k)..slot(h, k) + 8].try_into().expect("8 values");
            // SAFETY: `o` is 8 f32 (32 bytes); loadu has no alignment requirement.
            unsafe { _mm256_loadu_ps(o.as_ptr()) }
        })
    });
    for t in 0..len {
        prefetch_f16_rows_ahead(rows, row_bytes, at + t * row_bytes, 16 * W);
        let v = &rows[t * row_bytes + at..][..16 * W];
        let pv: [__m256; P] = std::array::from_fn(|h| _mm256_set1_ps(weights[h][t]));
        for k in 0..W {
            let value = f16x8(&v[16 * k..]);
            for (acc, pv) in acc.iter_mut().zip(&pv) {
                acc[k] = _mm256_fmadd_ps(*pv, value, acc[k]);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        for (k, acc) in acc.iter().enumerate() {
            let o: &mut [f32; 8] = (&mut out[slot(h, k)..slot(h, k) + 8]).try_into().expect("8 values");
            // SAFETY: `o` is 8 f32 (32 bytes); storeu has no alignment requirement.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *acc) };
        }
    }
}

/// Asks for the `len` bytes at `at` of the row [`F16_ROWS_AHEAD`] rows after the one
/// at `at`, into the cache. Attention walks a head's cached rows after the weights have
/// streamed through the cache, so every row is a DRAM miss the hardware prefetcher
/// does not run far enough ahead for.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch_f16_rows_ahead(rows: &[u8], row_bytes: usize, at: usize, len: usize) {
    let ahead = at + F16_ROWS_AHEAD * row_bytes;
    if ahead + len <= rows.len() {
        prefetch_lines::<_MM_HINT_T0>(rows[ahead..].as_ptr(), len);
    }
}

/// Asks at once for the `len` bytes at `at` of the first [`F16_ROWS_AHEAD`] of
/// `count` rows, which the kernels' prefetches from row 0 on do not cover: a cached
/// key or value head is read from DRAM (the weights stream through the caches
/// between a layer's attention and the next token's), and its first rows, missed
/// one after another, had cost a memory latency each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch_f16_first_rows(rows: &[u8], row_bytes: usize, at: usize, len: usize, count: usize) {
    for t in 0..count.min(F16_ROWS_AHEAD) {
        if at + t * row_bytes + len <= rows.len() {
            prefetch_lines::<_MM_HINT_T0>(rows[at + t * row_bytes..].as_ptr(), len);
        }
    }
}

/// Lane `k`: [`hsum`] of `v[k]`, bit for bit (the same additions in the same order,
/// eight rows at a time: the halves added, then lanes 0 + 2 and 1 + 3, then those two).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum8(v: &[__m256; 8]) -> __m256 {
    // Halves: lanes 0..4 of vector k's four sums, lanes 4..8 of vector k + 4's.
    let halves: [__m256; 4] = std::array::from_fn(|k| {
        let (a, b) = (v[k], v[k + 4]);
        _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b))
    });
    // Per 128-bit half, [x0 + x2, y0 + y2, x1 + x3, y1 + y3] of vectors x, y.
    let pair = |x: __m256, y: __m256| _mm256_add_ps(_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
    let (p01, p23) = (pair(halves[0], halves[1]), pair(halves[2], halves[3]));
    let even = _mm256_shuffle_ps::<0b01_00_01_00>(p01, p23);
    let odd = _mm256_shuffle_ps::<0b11_10_11_10>(p01, p23);
    _mm256_add_ps(even, odd)
}
