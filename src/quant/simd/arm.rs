//! aarch64 row dot products for the formats the x86 kernels cover (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q4_K, Q6_K) and attention's f16 products.
//!
//! One source, two instruction sets ([`arm_kernels!`]): NEON alone, which every aarch64 CPU has
//! (sixteen i8 products by `smull`/`smull2`, pairs summed into i32 lanes by `sadalp`), and NEON
//! with the dot-product extension (Armv8.2 `sdot`: four products into each i32 lane at once).
//! Both give every block the same exact integer sum, so they give the same results.
//!
//! Each kernel multiplies one weight row with one activation row, taking each block's integer
//! dot product whole and scaling it once, as ggml's NEON kernels do (K-quants: the super-block's
//! scale-weighted integer sum). Batched products (prefill) call the same kernel for every
//! (row, token), so they are bit-identical to decode's. Activation rows are the SIMD sets'
//! (`quant::act_row_bytes_with`); what follows their blocks (the x86 kernels' tables and paired
//! quants) is not read here. Q8_0 and Q8_1 activations are quantized here as ggml's NEON
//! quantizers round (`BlockQ8_0::quantize_like_arm`), and SwiGLU takes ggml's NEON vector `exp`.
//!
//! `sdot` and the half-to-single conversion `fcvtl` are written as inline assembly: Rust 1.95
//! has no stable intrinsics for them (`vdotq_s32` and the `float16x4_t` ones are unstable).
//!
//! This machine is x86-64: these kernels are tested under qemu-aarch64 (`npm run test:arm`, the
//! same unit tests as on x86: agreement with the scalar reference on random blocks, batches
//! bit-identical to single tokens), with and without the dot-product extension, but their speed
//! has not been measured on hardware.

/// Bytes per block of each format handled here.
mod sizes {
    pub const Q4_0: usize = 18;
    pub const Q4_1: usize = 20;
    pub const Q5_0: usize = 22;
    pub const Q5_1: usize = 24;
    pub const Q8_0: usize = 34;
    pub const Q8_1: usize = 36;
    pub const Q4_K: usize = 144;
    pub const Q6_K: usize = 210;
    pub const Q8_K: usize = 292;
}

/// The two entry points of a one-row kernel `$kernel(nb, weight row, activation row) -> f32`:
/// `$rows` for decode (`quant::dot_rows`), `$batch` for prefill (`quant::dot_rows_batch`).
macro_rules! kernel_entries {
    ($features:literal; $rows:ident, $batch:ident, $kernel:ident, $block_len:expr, $w_bytes:expr, $a_bytes:expr, $a_ty:expr) => {
        #[target_feature(enable = $features)]
        fn $rows(cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]) {
            let nb = cols / $block_len;
            let act = &act[..nb * $a_bytes];
            for (o, w) in out.iter_mut().zip(weights.chunks_exact(nb * $w_bytes)) {
                *o = $kernel(nb, w, act);
            }
        }

        #[target_feature(enable = $features)]
        fn $batch(cols: usize, weights: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
            let nb = cols / $block_len;
            let act_bytes = crate::quant::simd_act_row_bytes($a_ty, $a_bytes, nb);
            for (o, w) in out.chunks_exact_mut(n_tokens).zip(weights.chunks_exact(nb * $w_bytes)) {
                for (t, o) in o.iter_mut().enumerate() {
                    let act = &acts[t * act_bytes..][..nb * $a_bytes];
                    *o = $kernel(nb, w, act);
                }
            }
        }
    };
}

macro_rules! arm_kernels {
    (
        $isa:ident, $features:literal,
        dot_i8($acc:ident, $a:ident, $b:ident) $dot_i8:block
    ) => {
        pub(crate) mod $isa {
            use super::sizes;
            use crate::quant::block::F16Le;
            use crate::quant::simd::{vexp, BatchKernel, KernelSet, RowsKernel};
            use crate::tensor::GgmlType;
            use core::arch::asm;
            use core::arch::aarch64::*;

            /// This instruction set's kernels, for `Isa` to hand out once `available()` holds.
            pub(crate) static SET: KernelSet =
                KernelSet {
                row_kernels: kernels,
                interleaved_kernel: None,
                dot_f16_f32,
                axpy_f16,
                quantize_q8: Some(quantize_q8),
                quantize_q8_k: None,
                silu_mul: Some(silu_mul),
                gelu_mul: None,
                softmax: None,
                transpose: None,
            };

            /// Whether the running CPU has every feature these kernels are compiled for.
            pub(crate) fn available() -> bool {
                $features.split(',').all(|f| match f {
                    "neon" => std::arch::is_aarch64_feature_detected!("neon"),
                    "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
                    _ => false,
                })
            }

            /// This instruction set's kernels for weight type `ty` (one row at a time, batched),
            /// if it has them.
            fn kernels(ty: GgmlType) -> Option<(RowsKernel, BatchKernel)> {
                Some(match ty {
                    GgmlType::Q4_0 => (dot_rows_q4_0, dot_batch_q4_0),
                    GgmlType::Q4_1 => (dot_rows_q4_1, dot_batch_q4_1),
                    GgmlType::Q5_0 => (dot_rows_q5_0, dot_batch_q5_0),
                    GgmlType::Q5_1 => (dot_rows_q5_1, dot_batch_q5_1),
                    GgmlType::Q8_0 => (dot_rows_q8_0, dot_batch_q8_0),
                    GgmlType::Q4_K => (dot_rows_q4_k, dot_batch_q4_k),
                    GgmlType::Q6_K => (dot_rows_q6_k, dot_batch_q6_k),
                    _ => return None,
                })
            }

            kernel_entries!($features; dot_rows_q4_0, dot_batch_q4_0, q4_0, 32, sizes::Q4_0, sizes::Q8_0, GgmlType::Q8_0);
            kernel_entries!($features; dot_rows_q4_1, dot_batch_q4_1, q4_1, 32, sizes::Q4_1, sizes::Q8_1, GgmlType::Q8_1);
            kernel_entries!($features; dot_rows_q5_0, dot_batch_q5_0, q5_0, 32, sizes::Q5_0, sizes::Q8_0, GgmlType::Q8_0);
            kernel_entries!($features; dot_rows_q5_1, dot_batch_q5_1, q5_1, 32, sizes::Q5_1, sizes::Q8_1, GgmlType::Q8_1);
            kernel_entries!($features; dot_rows_q8_0, dot_batch_q8_0, q8_0, 32, sizes::Q8_0, sizes::Q8_0, GgmlType::Q8_0);
            kernel_entries!($features; dot_rows_q4_k, dot_batch_q4_k, q4_k, 256, sizes::Q4_K, sizes::Q8_K, GgmlType::Q8_K);
            kernel_entries!($features; dot_rows_q6_k, dot_batch_q6_k, q6_k, 256, sizes::Q6_K, sizes::Q8_K, GgmlType::Q8_K);

            /// Per i32 lane: `acc + the sum of four products a[i] * b[i]` (signed bytes); which
            /// four products a lane gets differs between the sets, the sum of all lanes does not.
            #[inline]
            #[target_feature(enable = $features)]
            fn dot_i8($acc: int32x4_t, $a: int8x16_t, $b: int8x16_t) -> int32x4_t $dot_i8

            /// Block `i` of a row of `N`-byte blocks.
            #[inline]
            fn block<const N: usize>(data: &[u8], i: usize) -> &[u8; N] {
                data[i * N..(i + 1) * N].try_into().expect("a whole block")
            }

            /// Sixteen bytes of a block from byte `at`.
            #[inline]
            #[target_feature(enable = $features)]
            fn load16<const N: usize>(b: &[u8; N], at: usize) -> uint8x16_t {
                let bytes: &[u8; 16] = b[at..at + 16].try_into().expect("16 bytes inside the block");
                // SAFETY: `bytes` is 16 readable bytes; byte loads have no alignment requirement.
                unsafe { vld1q_u8(bytes.as_ptr()) }
            }

            /// Sixteen bytes of a block from byte `at`, as signed.
            #[inline]
            #[target_feature(enable = $features)]
            fn load16_i8<const N: usize>(b: &[u8; N], at: usize) -> int8x16_t {
                vreinterpretq_s8_u8(load16(b, at))
            }

            #[inline]
            fn f16_at<const N: usize>(b: &[u8; N], at: usize) -> f32 {
                F16Le([b[at], b[at + 1]]).to_f32()
            }

            #[inline]
            fn f32_at<const N: usize>(b: &[u8; N], at: usize) -> f32 {
                f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
            }

            /// The exact integer dot product of 32 weights (two vectors) with the 32 activation
            /// quants of `ab` from byte `at`.
            #[inline]
            #[target_feature(enable = $features)]
            fn dot32<const N: usize>(w: [int8x16_t; 2], ab: &[u8; N], at: usize) -> i32 {
                let acc = dot_i8(vdupq_n_s32(0), w[0], load16_i8(ab, at));
                vaddvq_s32(dot_i8(acc, w[1], load16_i8(ab, at + 16)))
            }

            /// A 32-value block's 16 quant bytes from byte `at`: value j is the low nibble of
            /// byte j, value j + 16 its high nibble (unsigned, 0..16).
            #[inline]
            #[target_feature(enable = $features)]
            fn nibbles<const N: usize>(b: &[u8; N], at: usize) -> [uint8x16_t; 2] {
                let q = load16(b, at);
                [vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q)]
            }

            /// Q5's fifth bits: value j gets 16 where bit j of the little-endian u32 at byte
            /// `at` is set.
            #[inline]
            #[target_feature(enable = $features)]
            fn fifth_bits<const N: usize>(b: &[u8; N], at: usize) -> [uint8x16_t; 2] {
                // Byte j of a half holds bit j % 8 of the half's byte j / 8.
                let bit_of = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
                let half = |lo: u8, hi: u8| {
                    let bytes = vcombine_u8(vdup_n_u8(lo), vdup_n_u8(hi));
                    vandq_u8(vtstq_u8(bytes, bit_of), vdupq_n_u8(0x10))
                };
                [half(b[at], b[at + 1]), half(b[at + 2], b[at + 3])]
            }

            /// `v - offset` per byte, as signed.
            #[inline]
            #[target_feature(enable = $features)]
            fn minus(v: [uint8x16_t; 2], offset: i8) -> [int8x16_t; 2] {
                v.map(|v| vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(offset)))
            }

            /// `sum over blocks i of term(weight block i, activation block i)`, in block order.
            #[inline]
            fn sum_blocks<const WB: usize, const AB: usize>(
                nb: usize,
                w: &[u8],
                a: &[u8],
                term: impl Fn(&[u8; WB], &[u8; AB]) -> f32,
            ) -> f32 {
                let mut acc = 0.0f32;
                for i in 0..nb {
                    acc += term(block(w, i), block(a, i));
                }
                acc
            }

            /// A 32-value block's integer dot product scaled: `d_w * d_a * sum` (both scales
            /// the blocks' first f16).
            #[inline]
            fn scaled<const WB: usize, const AB: usize>(wb: &[u8; WB], ab: &[u8; AB], sum: i32) -> f32 {
                f16_at(wb, 0) * f16_at(ab, 0) * sum as f32
            }

            /// The min terms of Q4_1/Q5_1 against Q8_1: `sum over blocks of m_w * s_a` (Q8_1's
            /// `s` is `d_a * sum(a)`; both are the blocks' second f16).
            #[inline]
            fn min_terms<const WB: usize>(nb: usize, w: &[u8], a: &[u8]) -> f32 {
                sum_blocks(nb, w, a, |wb: &[u8; WB], ab: &[u8; sizes::Q8_1]| f16_at(wb, 2) * f16_at(ab, 2))
            }

            #[target_feature(enable = $features)]
            fn q8_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
                sum_blocks(nb, w, a, |wb: &[u8; sizes::Q8_0], ab: &[u8; sizes::Q8_0]| {
                    scaled(wb, ab, dot32([load16_i8(wb, 2), load16_i8(wb, 18)], ab, 2))
                })
            }

            /// Quants minus 8.
            #[target_feature(enable = $features)]
            fn q4_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
                sum_blocks(nb, w, a, |wb: &[u8; sizes::Q4_0], ab: &[u8; sizes::Q8_0]| {
                    scaled(wb, ab, dot32(minus(nibbles(wb, 2), 8), ab, 2))
                })
            }

            /// Quants with their fifth bits, minus 16.
            #[target_feature(enable = $features)]
            fn q5_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
                sum_blocks(nb, w, a, |wb: &[u8; sizes::Q5_0], ab: &[u8; sizes::Q8_0]| {
                    let ([lo, hi], [bits_lo, bits_hi]) = (nibbles(wb, 6), fifth_bits(wb, 2));
                    scaled(wb, ab, dot32(minus([vorrq_u8(lo, bits_lo), vorrq_u8(hi, bits_hi)], 16), ab, 2))
                })
            }

            /// Unsigned quants, plus the min terms.
            #[target_feature(enable = $features)]
            fn q4_1(nb: usize, w: &[u8], a: &[u8]) -> f32 {
                let quants = sum_blocks(nb, w, a, |wb: &[u8; sizes::Q4_1], ab: &[u8; sizes::Q8_1]| {
                    scaled(wb, ab, dot32(nibbles(wb, 4).map(|v| vreinterpretq_s8_u8(v)), ab, 4))
                });
                quants + min_terms::<{ sizes::Q4_1 }>(nb, w, a)
            }

            #[target_feature(enable = $features)]
            fn q5_1(nb: usize, w: &[u8], a: &[u8]) -> f32 {
                let quants = sum_blocks(nb, w, a, |wb: &[u8; sizes::Q5_1], ab: &[u8; sizes::Q8_1]| {
                    let ([lo, hi], [bits_lo, bits_hi]) = (nibbles(wb, 8), fifth_bits(wb, 4));
                    let q = [vorrq_u8(lo, bits_lo), vorrq_u8(hi, bits_hi)].map(|v| vreinterpretq_s8_u8(v));
                    scaled(wb, ab, dot32(q, ab, 4))
                });
                quants + min_terms::<{ sizes::Q5_1 }>(nb, w, a)
            }

            /// Per block `d * a.d * sum_g sc[g] * (q_g . a_g) - dmin * a.d * sum_g m[g] * (a_g's
            /// sum)` over its eight 32-value groups, the group sums of the activations from Q8_K's
            /// `bsums`.
            #[target_feature(enable = $features)]
            fn q4_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
                let mut acc = 0.0f32;
                for i in 0..nb {
                    let (wb, ab) = (block::<{ sizes::Q4_K }>(w, i), block::<{ sizes::Q8_K }>(a, i));
                    let (scales, mins) = crate::quant::kquants::scales_mins_k4(wb[4..16].try_into().expect("12 bytes"));
                    let a_d = f32_at(ab, 0);
                    // The eight group sums: pairs of the sixteen bsums.
                    let bsums = load16(ab, 260);
                    let bsums = [vreinterpretq_s16_u8(bsums), vreinterpretq_s16_u8(load16(ab, 276))];
                    let group_sums = lanes_i16(vpaddq_s16(bsums[0], bsums[1]));
                    let min_sum: i32 = mins.iter().zip(group_sums).map(|(&m, s)| m * s as i32).sum();
                    let mut sum = 0i32;
                    for j in 0..4 {
                        let [lo0, hi0] = nibbles(wb, 16 + 32 * j);
                        let [lo1, hi1] = nibbles(wb, 32 + 32 * j);
                        let low = dot32([lo0, lo1].map(|v| vreinterpretq_s8_u8(v)), ab, 4 + 64 * j);
                        let high = dot32([hi0, hi1].map(|v| vreinterpretq_s8_u8(v)), ab, 36 + 64 * j);
                        sum += scales[2 * j] * low + scales[2 * j + 1] * high;
                    }
                    acc += f16_at(wb, 0) * a_d * sum as f32 - f16_at(wb, 2) * a_d * min_sum as f32;
                }
                acc
            }

            /// Per block `d * a.d * sum_g sc[g] * ((q_g - 32) . a_g)` over its sixteen 16-value
            /// groups: the quants multiplied unsigned (0..64) and `32 * sum_g sc[g] * (a_g's
            /// sum)` taken off once, from Q8_K's `bsums`.
            #[target_feature(enable = $features)]
            fn q6_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
                let mut acc = 0.0f32;
                for i in 0..nb {
                    let (wb, ab) = (block::<{ sizes::Q6_K }>(w, i), block::<{ sizes::Q8_K }>(a, i));
                    let scales: [i32; 16] = std::array::from_fn(|g| wb[192 + g] as i8 as i32);
                    let mut offset = 0i32;
                    for (g, &sc) in scales.iter().enumerate() {
                        offset += sc * i16::from_le_bytes([ab[260 + 2 * g], ab[261 + 2 * g]]) as i32;
                    }
                    let mut sum = 0i32;
                    for half in 0..2 {
                        let ql = [0, 16, 32, 48].map(|at| load16(wb, 64 * half + at));
                        let qh = [load16(wb, 128 + 32 * half), load16(wb, 144 + 32 * half)];
                        for k in 0..4 {
                            // Value 32k + l of the half: a nibble of ql[32 (k % 2) + l] (low for
                            // k < 2) and bits 2k, 2k + 1 of qh[l] as bits 4 and 5.
                            for part in 0..2 {
                                let l = ql[2 * (k % 2) + part];
                                let low = if k < 2 { vandq_u8(l, vdupq_n_u8(0x0F)) } else { vshrq_n_u8::<4>(l) };
                                let high = vandq_u8(shift_right(qh[part], 2 * k as i32 - 4), vdupq_n_u8(0x30));
                                let q = vreinterpretq_s8_u8(vorrq_u8(low, high));
                                let at = 4 + 128 * half + 32 * k + 16 * part;
                                let dot = vaddvq_s32(dot_i8(vdupq_n_s32(0), q, load16_i8(ab, at)));
                                sum += scales[8 * half + 2 * k + part] * dot;
                            }
                        }
                    }
                    acc += f16_at(wb, 208) * f32_at(ab, 0) * (sum - 32 * offset) as f32;
                }
                acc
            }

            /// `v` shifted right by `bits` per byte (left for negative `bits`).
            #[inline]
            #[target_feature(enable = $features)]
            fn shift_right(v: uint8x16_t, bits: i32) -> uint8x16_t {
                vshlq_u8(v, vdupq_n_s8(-bits as i8))
            }

            #[inline]
            #[target_feature(enable = $features)]
            fn lanes_i16(v: int16x8_t) -> [i16; 8] {
                let mut lanes = [0i16; 8];
                // SAFETY: `lanes` is 8 writable i16.
                unsafe { vst1q_s16(lanes.as_mut_ptr(), v) };
                lanes
            }

            /// Four f16 (eight little-endian bytes) as f32.
            #[inline]
            #[target_feature(enable = $features)]
            fn f16x4(bytes: &[u8]) -> float32x4_t {
                let bytes: &[u8; 8] = bytes[..8].try_into().expect("8 bytes");
                // SAFETY: `bytes` is 8 readable bytes; byte loads have no alignment requirement.
                let h = unsafe { vld1_u8(bytes.as_ptr()) };
                let out: float32x4_t;
                // SAFETY: FCVTL (half to single precision) is base AArch64 floating point; it
                // reads and writes registers only.
                unsafe { asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) out, in(vreg) h, options(pure, nomem, nostack, preserves_flags)) };
                out
            }

            /// Four f32 of `b` from index `i`.
            #[inline]
            #[target_feature(enable = $features)]
            fn f32x4(b: &[f32], i: usize) -> float32x4_t {
                let v: &[f32; 4] = b[i..i + 4].try_into().expect("4 values");
                // SAFETY: `v` is 4 readable f32.
                unsafe { vld1q_f32(v.as_ptr()) }
            }

            /// `out[h * len + t] = sum(a_t[i] * b_h[i])` for the f16 vectors `a_t` (little-endian
            /// bytes, `2 * n` of them) at byte `at` of each `row_bytes` row of `rows` and the
            /// query vectors `b_h` of `n` values in `b`, head after head, four lanes at a time
            /// with four accumulators, the tail one by one.
            #[target_feature(enable = $features)]
            fn dot_f16_f32(rows: &[u8], row_bytes: usize, at: usize, b: &[f32], n: usize, out: &mut [f32]) {
                let heads = b.len() / n.max(1);
                let len = out.len().checked_div(heads).unwrap_or(0);
                for (b, out) in b.chunks_exact(n.max(1)).zip(out.chunks_exact_mut(len.max(1))) {
                    for (t, o) in out.iter_mut().enumerate() {
                        let a = &rows[t * row_bytes + at..][..2 * n];
                        let mut acc = [vdupq_n_f32(0.0); 4];
                        let mut i = 0;
                        while i + 16 <= n {
                            for (k, acc) in acc.iter_mut().enumerate() {
                                let j = i + 4 * k;
                                *acc = vfmaq_f32(*acc, f16x4(&a[2 * j..]), f32x4(b, j));
                            }
                            i += 16;
                        }
                        while i + 4 <= n {
                            acc[0] = vfmaq_f32(acc[0], f16x4(&a[2 * i..]), f32x4(b, i));
                            i += 4;
                        }
                        let mut sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
                        for j in i..n {
                            sum += F16Le([a[2 * j], a[2 * j + 1]]).to_f32() * b[j];
                        }
                        *o = sum;
                    }
                }
            }

            /// For each head h of `out` (runs of `n` outputs) and its weights in `p` (runs of
            /// `len`): `out_h[i] += p_h[t] * v_t[i]` for every row t, in order, for the f16
            /// vectors `v_t` (little-endian bytes, `2 * n` of them) at byte `at` of each
            /// `row_bytes` row of `rows`. One head at a time.
            #[target_feature(enable = $features)]
            fn axpy_f16(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize, n: usize) {
                let len = p.len().checked_div(out.len() / n.max(1)).unwrap_or(0);
                for (out, p) in out.chunks_exact_mut(n.max(1)).zip(p.chunks_exact(len.max(1))) {
                    axpy_f16_head(out, p, rows, row_bytes, at);
                }
            }

            /// [`axpy_f16`] of one head.
            #[inline]
            #[target_feature(enable = $features)]
            fn axpy_f16_head(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize) {
                let n = out.len();
                let done = n - n % 4;
                for (t, &p) in p.iter().enumerate() {
                    let v = &rows[t * row_bytes + at..][..2 * n];
                    for (k, o) in out.chunks_exact_mut(4).enumerate() {
                        let o: &mut [f32; 4] = o.try_into().expect("4 values");
                        // SAFETY: `o` is 4 readable and writable f32.
                        unsafe {
                            let sum = vfmaq_n_f32(vld1q_f32(o.as_ptr()), f16x4(&v[8 * k..]), p);
                            vst1q_f32(o.as_mut_ptr(), sum);
                        }
                    }
                    for (j, o) in out.iter_mut().enumerate().skip(done) {
                        *o += p * F16Le([v[2 * j], v[2 * j + 1]]).to_f32();
                    }
                }
            }

            /// Q8_0 blocks (`with_sum` false: `d`, then 32 quants) or Q8_1 blocks (`d`, `s`, then
            /// the quants) of `x` into `out`, value for value as ggml's NEON quantizers and the
            /// scalar `BlockQ8_0/Q8_1::quantize_like_arm` make them: the largest magnitude by
            /// `max` (in any order the same), the scalar `d = amax / 127` and `id = 1 / d`,
            /// products rounded to nearest even (`fcvtns`), and `s` from the exact integer sum.
            #[target_feature(enable = $features)]
            fn quantize_q8(x: &[f32], with_sum: bool, out: &mut [u8]) {
                let quants_at = if with_sum { 4 } else { 2 };
                for (xs, block) in x.chunks_exact(32).zip(out.chunks_exact_mut(quants_at + 32)) {
                    let xs: &[f32; 32] = xs.try_into().expect("32 values");
                    let v: [float32x4_t; 8] = core::array::from_fn(|i| {
                        // SAFETY: values 4i..4i + 4 lie inside the 32 of `xs`.
                        unsafe { vld1q_f32(xs.as_ptr().add(4 * i)) }
                    });
                    let max_of = |a: usize, b: usize| vmaxq_f32(vabsq_f32(v[a]), vabsq_f32(v[b]));
                    let m = vmaxq_f32(vmaxq_f32(max_of(0, 1), max_of(2, 3)), vmaxq_f32(max_of(4, 5), max_of(6, 7)));
                    let (d, id) = crate::quant::legacy::q8_scale(vmaxvq_f32(m));
                    let q: [int32x4_t; 8] = core::array::from_fn(|i| vcvtnq_s32_f32(vmulq_n_f32(v[i], id)));
                    // |q| <= 127: the narrowing saturates nothing.
                    let halves: [int8x8_t; 4] =
                        core::array::from_fn(|i| vqmovn_s16(vcombine_s16(vqmovn_s32(q[2 * i]), vqmovn_s32(q[2 * i + 1]))));
                    let quants: &mut [u8; 32] = (&mut block[quants_at..]).try_into().expect("32 quants");
                    // SAFETY: `quants` is 32 writable bytes, two stores of 16.
                    unsafe {
                        vst1q_s8(quants.as_mut_ptr().cast(), vcombine_s8(halves[0], halves[1]));
                        vst1q_s8(quants.as_mut_ptr().add(16).cast(), vcombine_s8(halves[2], halves[3]));
                    }
                    block[..2].copy_from_slice(&F16Le::from_f32(d).0);
                    if with_sum {
                        let sum = vaddq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])), vaddq_s32(vaddq_s32(q[4], q[5]), vaddq_s32(q[6], q[7])));
                        block[2..4].copy_from_slice(&F16Le::from_f32(vaddvq_s32(sum) as f32 * d).0);
                    }
                }
            }

            /// `gate[i] = silu(gate[i]) * up[i]` as ggml's NEON builds compute SwiGLU: four
            /// values at a time as `x / (1 + exp(-x)) * up` with the vector [`exp`]. The last
            /// `len % 4` take the same `exp` one lane at a time (ggml's take `expf`), so that
            /// every value's result is the same wherever a split of the work puts it.
            #[target_feature(enable = $features)]
            fn silu_mul(gate: &mut [f32], up: &[f32]) {
                let body = gate.len() / 4 * 4;
                for (g, u) in gate[..body].chunks_exact_mut(4).zip(up[..body].chunks_exact(4)) {
                    let (g, u): (&mut [f32; 4], &[f32; 4]) = (g.try_into().expect("4"), u.try_into().expect("4"));
                    // SAFETY: `g` and `u` are 4 f32 each.
                    let (x, up) = unsafe { (vld1q_f32(g.as_ptr()), vld1q_f32(u.as_ptr())) };
                    let silu = vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0), exp(vnegq_f32(x))));
                    // SAFETY: as above.
                    unsafe { vst1q_f32(g.as_mut_ptr(), vmulq_f32(silu, up)) };
                }
                for (g, &u) in gate[body..].iter_mut().zip(&up[body..]) {
                    *g = vexp::silu_mul_lane(*g, u);
                }
            }

            /// `e^x` per lane, as ggml's vector `expf` (see `simd::vexp`): within 1.5 ulp,
            /// infinite above 88.38, zero below -103.97. Where `|n| > 126`, `2^n` alone would
            /// overflow or flush, so the scale is applied in two factors.
            #[inline]
            #[target_feature(enable = $features)]
            fn exp(x: float32x4_t) -> float32x4_t {
                use vexp::*;
                let set = vdupq_n_f32;
                let z = vfmaq_f32(set(SHIFT), x, set(LOG2E));
                let n = vsubq_f32(z, set(SHIFT));
                let b = vfmsq_f32(vfmsq_f32(x, n, set(LN2_HI)), n, set(LN2_LO));
                // n in the exponent field: 2^n once 1.0's bits are added.
                let e = vshlq_n_u32::<23>(vreinterpretq_u32_f32(z));
                let k = vreinterpretq_f32_u32(vaddq_u32(e, vreinterpretq_u32_f32(set(1.0))));
                let scaled_twice = vcagtq_f32(n, set(126.0));
                let u = vmulq_f32(b, b);
                let p = vfmaq_f32(
                    vmulq_f32(set(C0), b),
                    vfmaq_f32(vfmaq_f32(set(C1), set(C2), b), vfmaq_f32(set(C3), set(C4), b), u),
                    u,
                );
                if vmaxvq_u32(scaled_twice) == 0 {
                    return vfmaq_f32(k, p, k);
                }
                let bias = vandq_u32(vclezq_f32(n), vdupq_n_u32(0x8200_0000));
                let s1 = vreinterpretq_f32_u32(vaddq_u32(bias, vdupq_n_u32(0x7f00_0000)));
                let s2 = vreinterpretq_f32_u32(vsubq_u32(e, bias));
                let two_step = vmulq_f32(vfmaq_f32(s2, s2, p), s1);
                let in_range = vbslq_f32(scaled_twice, two_step, vfmaq_f32(k, k, p));
                vbslq_f32(vcagtq_f32(n, set(192.0)), vmulq_f32(s1, s1), in_range)
            }
        }
    };
}

arm_kernels!(
    neon, "neon",
    // Sixteen i16 products (each at most 128 * 127 in magnitude), added in pairs into the lanes.
    dot_i8(acc, a, b) {
        let low = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let high = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, low), high)
    }
);

arm_kernels!(
    neondot, "neon,dotprod",
    dot_i8(acc, a, b) {
        let mut acc = acc;
        // SAFETY: SDOT is part of the dot-product extension this set is compiled for (and only
        // handed out where the CPU has it); it reads and writes registers only.
        unsafe { asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) acc, in(vreg) a, in(vreg) b, options(pure, nomem, nostack, preserves_flags)) };
        acc
    }
);
