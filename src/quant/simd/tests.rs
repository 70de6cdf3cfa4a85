//! Every SIMD kernel against the scalar reference on random blocks: every weight format with a
//! SIMD path, 1 to 7 blocks per row, several rows, and scales from f16 subnormals to near the
//! f16 maximum, with activations from 1e-20 to 1e20 (1e4 for the f16-scaled activation formats).

use super::super::tests::Rng;
use super::super::{
    act_row_bytes_with, axpy_f16_heads_with, dequantize_row, dot_f16_f32_heads_with, dot_rows_batch_bf16,
    dot_rows_batch_bf16_reference, dot_rows_batch_interleaved_with, dot_rows_batch_with, dot_rows_with, has_bf16_tiles,
    interleave_rows8, quantize_activations, quantize_activations_with, vec_dot, vec_dot_type, Bf16Tokens, Isa,
};
use crate::tensor::GgmlType::{self, *};

/// Where a format's fields sit in its block: f16 scales and quant bytes (the other bytes are
/// integer scales, for which any random byte is valid).
struct Layout {
    bytes: usize,
    f16s: &'static [usize],
    quant_bytes: (usize, usize),
}

fn layout(ty: GgmlType) -> Layout {
    let (bytes, f16s, quant_bytes): (usize, &[usize], _) = match ty {
        Q4_0 => (18, &[0], (2, 18)),
        Q4_1 => (20, &[0, 2], (4, 20)),
        Q5_0 => (22, &[0], (2, 22)),
        Q5_1 => (24, &[0, 2], (4, 24)),
        Q8_0 => (34, &[0], (2, 34)),
        Q4_K => (144, &[0, 2], (16, 144)),
        Q6_K => (210, &[208], (0, 192)),
        _ => unreachable!("{ty} has no SIMD kernel to test"),
    };
    Layout { bytes, f16s, quant_bytes }
}

const SIMD_TYPES: [GgmlType; 7] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K];

impl Rng {
    fn byte(&mut self) -> u8 {
        ((self.next_f32() + 1.0) * 128.0) as u8
    }
}

/// `n_blocks` random blocks of `ty` whose f16 fields are `scale` times a random factor in
/// [0.5, 1), and the same blocks with every quant byte zeroed (what is left is each value's
/// offset or min term, used to bound the magnitude of the kernels' partial sums).
fn random_blocks(ty: GgmlType, n_blocks: usize, scale: f32, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let l = layout(ty);
    let mut data = Vec::with_capacity(n_blocks * l.bytes);
    let mut zeroed = Vec::with_capacity(n_blocks * l.bytes);
    for _ in 0..n_blocks {
        let mut b: Vec<u8> = (0..l.bytes).map(|_| rng.byte()).collect();
        for &at in l.f16s {
            let v = scale * (0.75 + 0.25 * rng.next_f32());
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
        if ty == Q8_0 {
            // ggml's Q8_0 quantizer never writes -128.
            b[2..34].iter_mut().filter(|q| **q == 0x80).for_each(|q| *q = 0x81);
        }
        let mut z = b.clone();
        z[l.quant_bytes.0..l.quant_bytes.1].fill(0);
        data.extend(b);
        zeroed.extend(z);
    }
    (data, zeroed)
}

fn dequantized(ty: GgmlType, data: &[u8], n: usize) -> Vec<f64> {
    let mut out = vec![0.0f32; n];
    dequantize_row(ty, data, &mut out);
    out.into_iter().map(f64::from).collect()
}

#[test]
fn simd_kernels_agree_with_the_scalar_reference() {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|&isa| isa != Isa::Scalar && isa.available()).collect();
    if isas.is_empty() {
        eprintln!("no SIMD instruction set on this CPU; only the scalar kernels run");
        return;
    }
    let mut rng = Rng(0x5EED);
    let mut checked = 0;
    for ty in SIMD_TYPES {
        let block_len = ty.block_len() as usize;
        let dot_ty = vec_dot_type(ty);
        let act_scales: &[f32] = if dot_ty == Q8_K { &[1e-20, 1.0, 1e20] } else { &[1e-3, 1.0, 1e4] };
        for n_blocks in [1usize, 2, 3, 4, 5, 7, 8, 9, 10, 12, 16, 23] {
            let cols = n_blocks * block_len;
            for &w_scale in &[6e-8f32, 1e-3, 1.0, 6e4] {
                let rows = 5;
                let (weights, zeroed) = random_blocks(ty, rows * n_blocks, w_scale, &mut rng);
                for &a_scale in act_scales {
                    let x = rng.vec(cols, a_scale);
                    let row_bytes = weights.len() / rows;
                    for isa in &isas {
                        // Each instruction set's own activation rows (see `act_row_bytes_with`).
                        let mut act = Vec::new();
                        quantize_activations_with(*isa, dot_ty, &x, &mut act);
                        let mut a_deq = vec![0.0f32; cols];
                        dequantize_act(dot_ty, &act, &mut a_deq);
                        let mut out = vec![f32::NAN; rows];
                        dot_rows_with(*isa, ty, cols, &weights, &act, &mut out);
                        for r in 0..rows {
                            let row = &weights[r * row_bytes..(r + 1) * row_bytes];
                            let want = vec_dot(ty, cols, row, &act);
                            // Both sum the same exact integer block sums, scaled, in f32 in
                            // different orders: the difference is a few roundings of the sum
                            // of the magnitudes of the partial terms, which the dequantized
                            // values and their offset/min parts bound.
                            let w = dequantized(ty, row, cols);
                            let w0 = dequantized(ty, &zeroed[r * row_bytes..(r + 1) * row_bytes], cols);
                            let magnitude: f64 =
                                (0..cols).map(|i| (w[i].abs() + w0[i].abs()) * (a_deq[i] as f64).abs()).sum();
                            let bound = 2.0 * (n_blocks as f64 + 10.0) * f32::EPSILON as f64 * magnitude;
                            let what = format!("{isa:?} {ty} {n_blocks} blocks, w {w_scale:e}, a {a_scale:e}, row {r}");
                            if !want.is_finite() {
                                // An activation sum overflowing its f16 field (Q8_1 at 1e4):
                                // both must overflow alike.
                                assert_eq!(out[r].to_bits(), want.to_bits(), "{what}");
                                continue;
                            }
                            let err = (out[r] as f64 - want as f64).abs();
                            assert!(err <= bound, "{what}: {} vs scalar {want}, error {err:e} > {bound:e}", out[r]);
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked >= SIMD_TYPES.len() * 5 * 4 * 3 * 5, "checked {checked}");
}

/// Batched products (prefill) must give each token exactly what a one-token product (decode)
/// gives, for every instruction set, any token count (full passes of several tokens and the
/// remainder), row counts with whole tiles of rows and a remainder, rows ending in a partial
/// group of blocks (of 5; of 2, as at SmolLM2's 576 columns; of 4, as at Gemma-3's 640 and
/// Qwen2.5-0.5B's 896), and formats with and without a SIMD kernel.
#[test]
fn batched_products_equal_one_token_products_bit_for_bit() {
    let mut rng = Rng(99);
    let shapes = SIMD_TYPES.into_iter().chain([GgmlType::Q5_K, GgmlType::F16]).flat_map(|ty| {
        let partial_groups =
            if ty.block_len() == 32 { vec![(ty, 13 * 32), (ty, 18 * 32), (ty, 12 * 32)] } else { vec![] };
        [(ty, 2 * 256)].into_iter().chain(partial_groups)
    });
    for (ty, cols) in shapes {
        let rows = 9;
        let weights = match ty {
            GgmlType::Q5_K | GgmlType::F16 => {
                // Any bytes with small f16 fields decode to finite values in these formats.
                (0..rows * cols / ty.block_len() as usize * ty.block_bytes() as usize)
                    .map(|_| rng.byte() & 0x3B)
                    .collect()
            }
            _ => random_blocks(ty, rows * cols / ty.block_len() as usize, 1.0, &mut rng).0,
        };
        let dot_ty = vec_dot_type(ty);
        for n_tokens in 1..=25 {
            let xs: Vec<Vec<f32>> = (0..n_tokens).map(|_| rng.vec(cols, 2.0)).collect();
            for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
                let act_bytes = act_row_bytes_with(isa, dot_ty, cols);
                let acts = activation_rows(isa, dot_ty, &xs);
                let mut batched = vec![f32::NAN; rows * n_tokens];
                dot_rows_batch_with(isa, ty, cols, &weights, &acts, n_tokens, &mut batched);
                for t in 0..n_tokens {
                    let mut single = vec![f32::NAN; rows];
                    dot_rows_with(isa, ty, cols, &weights, &acts[t * act_bytes..(t + 1) * act_bytes], &mut single);
                    for r in 0..rows {
                        let b = batched[r * n_tokens + t];
                        assert_eq!(
                            b.to_bits(),
                            single[r].to_bits(),
                            "{isa:?} {ty} {cols} columns, {n_tokens} tokens: row {r} token {t}"
                        );
                    }
                }
            }
        }
    }
}

/// Every quant at its largest magnitude against activations all +1 or all -1: the kernels'
/// narrow integer sums (i16 lanes on AVX2, see `x86.rs`) meet their bound in every lane, so a
/// sum that saturated or wrapped would miss the scalar reference by far. Decode and batched
/// products (one row at a time and eight interleaved rows), whole and partial groups of blocks.
#[test]
fn products_at_the_narrow_sums_bound_agree_with_the_scalar_reference() {
    for ty in SIMD_TYPES {
        let l = layout(ty);
        let mut block = vec![0xFFu8; l.bytes];
        match ty {
            Q8_0 => block[2..].fill(0x7F),
            // Scales of 127 (0xFF is -1 as an i8).
            Q6_K => block[192..208].fill(0x7F),
            _ => {}
        }
        for &at in l.f16s {
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        }
        let blocks_per_row = if ty.block_len() == 32 { [16, 13] } else { [2, 3] };
        for nb in blocks_per_row {
            let (rows, cols) = (8, nb * ty.block_len() as usize);
            let weights = block.repeat(rows * nb);
            let n_tokens = 10;
            let xs: Vec<Vec<f32>> = (0..n_tokens).map(|t| vec![if t % 2 == 0 { 1.0 } else { -1.0 }; cols]).collect();
            let dot_ty = vec_dot_type(ty);
            for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
                let act_bytes = act_row_bytes_with(isa, dot_ty, cols);
                let acts = activation_rows(isa, dot_ty, &xs);
                let mut batched = vec![f32::NAN; rows * n_tokens];
                dot_rows_batch_with(isa, ty, cols, &weights, &acts, n_tokens, &mut batched);
                let mut interleaved_rows = weights.clone();
                let interleaved = isa.interleaved_kernel(ty).is_some();
                if interleaved {
                    interleave_rows8(ty, cols, &mut interleaved_rows, &mut Vec::new());
                }
                let mut from_interleaved = vec![f32::NAN; rows * n_tokens];
                if interleaved {
                    dot_rows_batch_interleaved_with(
                        isa,
                        ty,
                        cols,
                        &interleaved_rows,
                        &acts,
                        n_tokens,
                        &mut from_interleaved,
                    );
                }
                for t in 0..n_tokens {
                    let act = &acts[t * act_bytes..(t + 1) * act_bytes];
                    let want = vec_dot(ty, cols, &weights[..weights.len() / rows], act);
                    let mut single = vec![f32::NAN; rows];
                    dot_rows_with(isa, ty, cols, &weights, act, &mut single);
                    for r in 0..rows {
                        let what = format!("{isa:?} {ty} {nb} blocks, token {t}, row {r}");
                        let mut got = vec![single[r], batched[r * n_tokens + t]];
                        if interleaved {
                            got.push(from_interleaved[r * n_tokens + t]);
                        }
                        for g in got {
                            // Every term has the same sign: only roundings separate them.
                            assert!((g - want).abs() <= 1e-5 * want.abs(), "{what}: {g} vs scalar {want}");
                        }
                    }
                }
            }
        }
    }
}

/// The rows `xs` converted to `dot_ty` for `isa`'s kernels, one after another.
fn activation_rows(isa: Isa, dot_ty: GgmlType, xs: &[Vec<f32>]) -> Vec<u8> {
    let mut rows = Vec::new();
    let mut one = Vec::new();
    for x in xs {
        quantize_activations_with(isa, dot_ty, x, &mut one);
        rows.extend_from_slice(&one);
    }
    rows
}

/// Weights interleaved for the kernels (`interleave_rows8`) give every (row, token) exactly
/// what the file's layout gives, for every type and instruction set with such a kernel, any
/// token count (decode's one included) and rows of fewer and more blocks than a group has
/// (whole groups and a last partial one).
#[test]
fn interleaved_weights_give_the_file_layouts_products_bit_for_bit() {
    let mut rng = Rng(7);
    for ty in [Q4_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
        let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|isa| isa.interleaved_kernel(ty).is_some()).collect();
        if cfg!(target_arch = "x86_64") && Isa::Avx2.available() {
            assert!(!isas.is_empty(), "an x86 set with AVX2 has an interleaved {ty} kernel");
        }
        let block_len = ty.block_len() as usize;
        // 32-value formats: rows ending in a partial group of 5 blocks, and of 2 and 4 as the
        // real models' rows do (SmolLM2's 576 columns, Gemma-3's 640, Qwen2.5-0.5B's 896).
        let shapes: &[(usize, usize)] = if ty == Q4_K {
            &[(1, 8), (3, 16), (9, 24)]
        } else {
            &[(5, 8), (8, 16), (29, 24), (18, 8), (12, 16), (20, 24), (2, 8), (4, 8)]
        };
        for &(nb, rows) in shapes {
            let cols = nb * block_len;
            let weights = random_blocks(ty, rows * nb, 1.0, &mut rng).0;
            let mut interleaved = weights.clone();
            interleave_rows8(ty, cols, &mut interleaved, &mut Vec::new());
            // Q4_K interleaves rows; the 32-value formats leave a row of fewer blocks than a group.
            assert_eq!(interleaved != weights, ty == Q4_K || nb >= 8, "{ty}: {nb} blocks per row rearranged or not");
            for n_tokens in 1..=25 {
                let xs: Vec<Vec<f32>> = (0..n_tokens).map(|_| rng.vec(cols, 2.0)).collect();
                for &isa in &isas {
                    let acts = activation_rows(isa, vec_dot_type(ty), &xs);
                    let mut expected = vec![f32::NAN; rows * n_tokens];
                    dot_rows_batch_with(isa, ty, cols, &weights, &acts, n_tokens, &mut expected);
                    let mut got = vec![f32::NAN; rows * n_tokens];
                    dot_rows_batch_interleaved_with(isa, ty, cols, &interleaved, &acts, n_tokens, &mut got);
                    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
                        let (r, t) = (i / n_tokens, i % n_tokens);
                        assert_eq!(
                            g.to_bits(),
                            e.to_bits(),
                            "{isa:?} {ty} {cols} columns, {n_tokens} tokens: row {r} token {t}"
                        );
                    }
                }
            }
        }
    }
}

/// The AVX-512 set's eight-head unpack of interleaved Q4_K groups against the row-by-row one,
/// on every CPU with the set: the kernels take it on AMD only (`eight_head_unpack_pays`), so the
/// products test above reaches it there alone.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_eight_head_unpack_gives_the_row_by_row_values() {
    if !Isa::Avx512Vnni.available() {
        return;
    }
    let mut rng = Rng(11);
    let (nb, rows) = (3, 16);
    let weights = random_blocks(Q4_K, rows * nb, 1.0, &mut rng).0;
    let mut interleaved = weights.clone();
    interleave_rows8(Q4_K, nb * 256, &mut interleaved, &mut Vec::new());
    for group in interleaved.chunks_exact(8 * 144) {
        let group: &[u8; 8 * 144] = group.try_into().expect("a group of eight blocks");
        assert_eq!(super::x86::avx512vnni::eight_head_unpack_agrees(group), Some(true));
        assert_eq!(super::x86::avx2::eight_head_unpack_agrees(group), None);
    }
}

/// A SIMD kernel that read a wrong bit would still pass a loose check on random data if the
/// bound were too wide: one changed quant must move the result by more than the bound.
#[test]
fn the_agreement_bound_detects_a_single_wrong_quant() {
    let mut rng = Rng(42);
    for ty in SIMD_TYPES {
        let cols = 7 * ty.block_len() as usize;
        let (mut weights, zeroed) = random_blocks(ty, 7, 1.0, &mut rng);
        let dot_ty = vec_dot_type(ty);
        let x = rng.vec(cols, 1.0);
        let mut act = Vec::new();
        quantize_activations(dot_ty, &x, &mut act);
        let mut a_deq = vec![0.0f32; cols];
        dequantize_act(dot_ty, &act, &mut a_deq);
        let w = dequantized(ty, &weights, cols);
        let w0 = dequantized(ty, &zeroed, cols);
        let magnitude: f64 = (0..cols).map(|i| (w[i].abs() + w0[i].abs()) * (a_deq[i] as f64).abs()).sum();
        let bound = 2.0 * (7.0 + 10.0) * f32::EPSILON as f64 * magnitude;
        let before = vec_dot(ty, cols, &weights, &act);
        let l = layout(ty);
        let (from, _) = l.quant_bytes;
        // Bit 3 of a low nibble: a change of 8 in one quant.
        weights[3 * l.bytes + from + 5] ^= 0x08;
        let after = vec_dot(ty, cols, &weights, &act);
        assert!((after as f64 - before as f64).abs() > bound, "{ty}: {before} -> {after}, bound {bound:e}");
    }
}

fn dequantize_act(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    match ty {
        Q8_0 => dequantize_row(Q8_0, src, out),
        Q8_1 | Q8_K => super::super::tests::dequant_act_into(ty, src, out),
        _ => unreachable!(),
    }
}

/// Row dot product throughput per weight type and instruction set, one thread, over 64 MiB of
/// weights (so they stream from memory, as in decode). A measurement, not a check:
/// `cargo test --release kernel_throughput -- --ignored --nocapture`. `KERNEL_TYPES=Q4_K,Q6_K`
/// picks formats, `KERNEL_COLS` widths; `KERNEL_MIB=4` shrinks the weights to fit in cache (the kernels' compute alone),
/// `KERNEL_KIB=256` in a core's L2; `KERNEL_PASSES` sets how many decode passes it keeps the best of.
///
/// The weights sit as a model's do in decode: page-aligned, in transparent huge pages where
/// the kernel gives them (a cached GGUF file is mapped with 2 MiB pages once its page cache
/// holds huge folios), read in matrices of 1024 rows whose results stay in cache. A malloc'd
/// buffer of 4 KiB pages written as one 64 MiB result array read 10-20% slower.
#[test]
#[ignore]
fn kernel_throughput() {
    use std::time::Instant;
    const HUGE_PAGE: usize = 2 << 20;
    const MATRIX_ROWS: usize = 1024;
    // 4096 columns: whole groups of blocks; 1536 (Qwen2.5-1.5B's width: most of its Q4_K bytes
    // are rows of 6 blocks, whose per-row costs show); 640 (Gemma-3-270M's width, 20 blocks of
    // 32 values): short rows with a partial group at the end.
    let only: Option<Vec<String>> =
        std::env::var("KERNEL_TYPES").ok().map(|v| v.split(',').map(String::from).collect());
    // `KERNEL_COLS=576,896` picks other widths (SmolLM2's, Qwen2.5-0.5B's).
    let widths: Vec<usize> = std::env::var("KERNEL_COLS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.parse().ok()).collect())
        .unwrap_or_else(|| vec![4096, 1536, 640]);
    // `KERNEL_PASSES=3000`: decode's best of that many passes over the weights instead of 20. On a
    // host whose speed changes by the second, 20 passes in L2 (a few milliseconds) can all fall
    // in a slow moment; thousands give a steady best, and a profile of the kernel.
    let passes: usize = std::env::var("KERNEL_PASSES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    for (cols, ty) in widths.into_iter().flat_map(|c| [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K].map(|t| (c, t))) {
        if cols % ty.block_len() as usize != 0
            || only.as_ref().is_some_and(|o| !o.iter().any(|n| *n == format!("{ty}")))
        {
            continue;
        }
        let row_bytes = cols / ty.block_len() as usize * ty.block_bytes() as usize;
        let mib: usize = std::env::var("KERNEL_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
        // `KERNEL_KIB=256`: weights that fit in a core's own L2, out of other guests' reach.
        let kib: usize = std::env::var("KERNEL_KIB").ok().and_then(|v| v.parse().ok()).unwrap_or(mib << 10);
        // `KERNEL_LAYOUT=interleaved`: the weights rearranged (`interleave_rows8`), decode through
        // the interleaved kernels of the sets that have one.
        let interleaved = std::env::var("KERNEL_LAYOUT").is_ok_and(|v| v == "interleaved");
        if interleaved && !super::super::interleave::has_layout(ty) {
            continue;
        }
        let rows = ((kib << 10) / row_bytes / 8 * 8).max(8);
        // Random bytes are valid blocks, except f16 scales that decode to NaN/inf: keep those
        // bytes small. Which bytes are scales does not matter for speed.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut map = memmap2::MmapMut::map_anon(rows * row_bytes + HUGE_PAGE).expect("anonymous memory");
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let aligned = (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
        let weights = &mut map[aligned..aligned + rows * row_bytes];
        for b in weights.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = (state >> 56) as u8 & 0x3F;
        }
        if interleaved {
            interleave_rows8(ty, cols, weights, &mut Vec::new());
        }
        let weights = &*weights;
        let x: Vec<f32> = (0..cols).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let mut out = vec![0.0f32; MATRIX_ROWS];
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            if interleaved && isa.interleaved_kernel(ty).is_none() {
                continue;
            }
            let mut act = Vec::new();
            super::super::quantize_activations_with(isa, super::super::vec_dot_type(ty), &x, &mut act);
            let mut best = f64::INFINITY;
            for _ in 0..passes {
                let t = Instant::now();
                for matrix in weights.chunks(MATRIX_ROWS * row_bytes) {
                    let n = matrix.len() / row_bytes;
                    if interleaved {
                        dot_rows_batch_interleaved_with(isa, ty, cols, matrix, &act, 1, &mut out[..n]);
                    } else {
                        super::super::dot_rows_with(isa, ty, cols, matrix, &act, &mut out[..n]);
                    }
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let blocks = (rows * cols / ty.block_len() as usize) as f64;
            println!(
                "{ty:>5} {cols:>5} {:<11} {:6.2} GB/s  {:6.2} ns/block  (checksum {:.3e})",
                isa.name(),
                weights.len() as f64 / best / 1e9,
                best / blocks * 1e9,
                out.iter().map(|&v| v as f64).sum::<f64>()
            );
            if interleaved {
                continue;
            }
            // Batched: KERNEL_TOKENS tokens (default 8: one prefill tile; 2 or 4: a pass of that
            // many sequences decoding together) over the first 1/16 of the rows.
            let n_tokens: usize = std::env::var("KERNEL_TOKENS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
            let sub_rows = rows / 16;
            let acts: Vec<u8> = (0..n_tokens).flat_map(|_| act.iter().copied()).collect();
            let mut batch_out = vec![0.0f32; sub_rows * n_tokens];
            let mut best_batch = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                super::super::dot_rows_batch_with(
                    isa,
                    ty,
                    cols,
                    &weights[..sub_rows * row_bytes],
                    &acts,
                    n_tokens,
                    &mut batch_out,
                );
                best_batch = best_batch.min(t.elapsed().as_secs_f64());
            }
            let block_tokens = (sub_rows * cols / ty.block_len() as usize * n_tokens) as f64;
            println!(
                "{ty:>5} {cols:>5} {:<11} batched: {:6.2} ns/block/token",
                isa.name(),
                best_batch / block_tokens * 1e9
            );
            if isa.interleaved_kernel(ty).is_none() {
                continue;
            }
            // The same, on the weights interleaved as resident models hold them.
            let mut interleaved = memmap2::MmapMut::map_anon(weights.len() + HUGE_PAGE).expect("anonymous memory");
            #[cfg(target_os = "linux")]
            let _ = interleaved.advise(memmap2::Advice::HugePage);
            let aligned = (HUGE_PAGE - interleaved.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
            let interleaved = &mut interleaved[aligned..aligned + weights.len() / (8 * row_bytes) * 8 * row_bytes];
            interleaved.copy_from_slice(&weights[..interleaved.len()]);
            interleave_rows8(ty, cols, interleaved, &mut Vec::new());
            let interleaved = &*interleaved;
            let time = |n: usize, rows: usize, repeats: usize, acts: &[u8], out: &mut [f32]| {
                let mut best = f64::INFINITY;
                for _ in 0..repeats {
                    let t = Instant::now();
                    for matrix in interleaved[..rows * row_bytes].chunks(MATRIX_ROWS * row_bytes) {
                        let m = matrix.len() / row_bytes;
                        super::super::dot_rows_batch_interleaved_with(
                            isa,
                            ty,
                            cols,
                            matrix,
                            acts,
                            n,
                            &mut out[..m * n],
                        );
                    }
                    best = best.min(t.elapsed().as_secs_f64());
                }
                best
            };
            let one = time(1, interleaved.len() / row_bytes, passes, &act, &mut out);
            let sub = sub_rows / 8 * 8;
            let batch = time(n_tokens, sub, 5, &acts, &mut batch_out);
            println!(
                "{ty:>5} {cols:>5} {:<11} interleaved: {:6.2} GB/s  {:6.2} ns/block, batched: {:6.2} ns/block/token",
                isa.name(),
                interleaved.len() as f64 / one / 1e9,
                one / (interleaved.len() / ty.block_bytes() as usize) as f64 * 1e9,
                batch / (sub * cols / ty.block_len() as usize * n_tokens) as f64 * 1e9
            );
        }
    }
}

/// `rows` rows of `row_bytes` bytes of random f16 values within ±`spread` (the f16 kernels'
/// strided rows).
fn random_f16_rows(rng: &mut Rng, rows: usize, row_bytes: usize, spread: f32) -> Vec<u8> {
    let mut bytes = Vec::new();
    quantize_activations(GgmlType::F16, &rng.vec(rows * row_bytes / 2, spread), &mut bytes);
    bytes
}

/// Whether `a` and `b` hold the same values bit for bit.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
}

/// Every instruction set this CPU has, the scalar code included: attention's f16 kernels are
/// checked in each, not only in the one a process picks.
fn available_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|isa| isa.available()).collect()
}

/// The rows form of attention's value sum, whose outputs are summed in registers over all rows,
/// is bit for bit the one-row form applied row by row (in order), for head sizes that take
/// every pass width and the scalar tail, values strided inside rows.
#[test]
fn f16_axpy_rows_equal_one_row_at_a_time() {
    let mut rng = Rng(29);
    for isa in available_isas() {
        for n in [8usize, 24, 64, 72, 100, 128, 136, 200, 256] {
            let (rows, at) = (40, 6);
            let row_bytes = 2 * n + 10;
            let bytes = random_f16_rows(&mut rng, rows, row_bytes, 30.0);
            let p = rng.vec(rows, 1.0);
            let base = rng.vec(n, 1.0);
            let mut together = base.clone();
            axpy_f16_heads_with(isa, &mut together, &p, &bytes, row_bytes, at, n);
            let mut one_by_one = base.clone();
            for (t, p) in p.iter().enumerate() {
                let row = &bytes[t * row_bytes + at..][..2 * n];
                axpy_f16_heads_with(isa, &mut one_by_one, std::slice::from_ref(p), row, row.len(), 0, n);
            }
            assert!(same_bits(&together, &one_by_one), "{} n={n}", isa.name());
        }
    }
}

/// Several heads' value sums over the same rows (converted once for all of them) give each head
/// bit for bit its own sum alone, for head counts that take every pass width and head sizes that
/// take every register count and the scalar tail.
#[test]
fn f16_axpy_heads_equal_one_head_at_a_time() {
    let mut rng = Rng(41);
    for isa in available_isas() {
        for n in [8usize, 24, 64, 72, 100, 128, 256] {
            for heads in 1..=9 {
                let (rows, at) = (30, 4);
                let row_bytes = 2 * n + 12;
                let bytes = random_f16_rows(&mut rng, rows, row_bytes, 30.0);
                let p = rng.vec(heads * rows, 1.0);
                let base = rng.vec(heads * n, 1.0);
                let mut together = base.clone();
                axpy_f16_heads_with(isa, &mut together, &p, &bytes, row_bytes, at, n);
                for h in 0..heads {
                    let mut alone = base[h * n..][..n].to_vec();
                    axpy_f16_heads_with(isa, &mut alone, &p[h * rows..][..rows], &bytes, row_bytes, at, n);
                    assert!(same_bits(&together[h * n..][..n], &alone), "{} n={n} heads={heads} head {h}", isa.name());
                }
            }
        }
    }
}

/// Several query heads against the same keys (converted once for all of them) give each head
/// bit for bit its own products alone, and each product that of its key alone (rows in blocks,
/// whose sums are finished together, and a partial block), for head counts that take every pass
/// width and head sizes that take every step (the AVX-512 set's queries held in registers at 64
/// and 128, read from memory otherwise).
#[test]
fn f16_dot_heads_equal_one_head_at_a_time() {
    let mut rng = Rng(37);
    for isa in available_isas() {
        for n in [8usize, 24, 64, 72, 100, 128, 256] {
            for heads in 1..=9 {
                let (rows, at) = (40, 4);
                let row_bytes = 2 * n + 12;
                let bytes = random_f16_rows(&mut rng, rows, row_bytes, 3.0);
                let q = rng.vec(heads * n, 2.0);
                let mut together = vec![f32::NAN; heads * rows];
                dot_f16_f32_heads_with(isa, &bytes, row_bytes, at, &q, n, &mut together);
                for h in 0..heads {
                    let query = &q[h * n..][..n];
                    let mut alone = vec![f32::NAN; rows];
                    dot_f16_f32_heads_with(isa, &bytes, row_bytes, at, query, n, &mut alone);
                    assert!(
                        same_bits(&together[h * rows..][..rows], &alone),
                        "{} n={n} heads={heads} head {h}",
                        isa.name()
                    );
                    let one_key: Vec<f32> = (0..rows)
                        .map(|t| {
                            let mut out = [f32::NAN];
                            let key = &bytes[t * row_bytes + at..][..2 * n];
                            dot_f16_f32_heads_with(isa, key, key.len(), 0, query, n, &mut out);
                            out[0]
                        })
                        .collect();
                    assert!(
                        same_bits(&alone, &one_key),
                        "{} n={n} heads={heads} head {h}: rows one at a time",
                        isa.name()
                    );
                }
            }
        }
    }
}

/// The AVX-512 set's attention kernels (512-bit registers) give the AVX2 set's results bit for
/// bit, for head sizes that take every step and tail and head counts that take every pass:
/// models then give the same logits on both sets.
#[test]
fn f16_attention_kernels_of_the_x86_sets_are_bit_identical() {
    if !(Isa::Avx2.available() && Isa::Avx512Vnni.available()) {
        eprintln!("this CPU lacks AVX-512 VNNI (or AVX2): nothing to compare");
        return;
    }
    let mut rng = Rng(47);
    for n in [8usize, 16, 24, 40, 64, 72, 100, 128, 136, 200, 256] {
        for heads in 1..=9 {
            let (rows, at) = (45, 2);
            let row_bytes = 2 * n + 6;
            let bytes = random_f16_rows(&mut rng, rows, row_bytes, 4.0);
            let q = rng.vec(heads * n, 2.0);
            let p = rng.vec(heads * rows, 1.0);
            let base = rng.vec(heads * n, 1.0);
            let [avx2, avx512] = [Isa::Avx2, Isa::Avx512Vnni].map(|isa| {
                let mut scores = vec![f32::NAN; heads * rows];
                dot_f16_f32_heads_with(isa, &bytes, row_bytes, at, &q, n, &mut scores);
                let mut sums = base.clone();
                axpy_f16_heads_with(isa, &mut sums, &p, &bytes, row_bytes, at, n);
                (scores, sums)
            });
            assert!(same_bits(&avx2.0, &avx512.0), "scores n={n} heads={heads}");
            assert!(same_bits(&avx2.1, &avx512.1), "value sums n={n} heads={heads}");
        }
    }
}

/// Attention's f16 kernels of every instruction set against the exact sums (in f64), within f32
/// rounding of the sum of the terms' magnitudes, for head sizes that take every step and tail:
/// the sets add in different orders, and a wrong lane, step or tail would be off by a whole term.
#[test]
fn f16_attention_kernels_agree_with_exact_sums() {
    let mut rng = Rng(43);
    let f16_at =
        |bytes: &[u8], i: usize| f64::from(half::f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32());
    for isa in available_isas() {
        for n in [0usize, 1, 7, 8, 9, 16, 31, 32, 33, 40, 64, 72, 100, 128, 136, 200, 256] {
            let (rows, heads, at) = (37, 5, 2);
            let row_bytes = 2 * n + 6;
            let bytes = random_f16_rows(&mut rng, rows, row_bytes, 4.0);
            let q = rng.vec(heads * n, 2.0);
            let mut scores = vec![f32::NAN; heads * rows];
            dot_f16_f32_heads_with(isa, &bytes, row_bytes, at, &q, n, &mut scores);
            let p = rng.vec(heads * rows, 1.0);
            let base = rng.vec(heads * n, 1.0);
            let mut sums = base.clone();
            axpy_f16_heads_with(isa, &mut sums, &p, &bytes, row_bytes, at, n);
            for h in 0..heads {
                for t in 0..rows {
                    let key = &bytes[t * row_bytes + at..][..2 * n];
                    let terms: Vec<f64> = (0..n).map(|i| f16_at(key, i) * f64::from(q[h * n + i])).collect();
                    let (exact, size) = (terms.iter().sum::<f64>(), terms.iter().map(|v| v.abs()).sum::<f64>());
                    let got = f64::from(scores[h * rows + t]);
                    let bound = (n + 4) as f64 * f64::from(f32::EPSILON) * size;
                    assert!(
                        (got - exact).abs() <= bound,
                        "{} n={n} head {h} row {t}: {got} against {exact}",
                        isa.name()
                    );
                }
                for i in 0..n {
                    let terms: Vec<f64> = (0..rows)
                        .map(|t| f64::from(p[h * rows + t]) * f16_at(&bytes[t * row_bytes + at..], i))
                        .chain([f64::from(base[h * n + i])])
                        .collect();
                    let (exact, size) = (terms.iter().sum::<f64>(), terms.iter().map(|v| v.abs()).sum::<f64>());
                    let got = f64::from(sums[h * n + i]);
                    let bound = (rows + 4) as f64 * f64::from(f32::EPSILON) * size;
                    assert!(
                        (got - exact).abs() <= bound,
                        "{} n={n} head {h} output {i}: {got} against {exact}",
                        isa.name()
                    );
                }
            }
        }
    }
}

/// The SIMD sets' Q8_0/Q8_1 activation quantizers against the scalar blocks they stand in for
/// (`quantize_like_simd` on x86, `quantize_like_arm` on aarch64), byte for byte: random rows
/// over 40 orders of magnitude, an all-zero block, and blocks whose scaled values fall exactly
/// halfway between two quants.
#[test]
fn q8_activation_quantizers_equal_the_scalar_blocks() {
    use super::super::block::quantize_with;
    use super::super::legacy::{BlockQ8_0, BlockQ8_1};
    let mut rng = Rng(23);
    let mut rows: Vec<Vec<f32>> = [1e-20f32, 1e-3, 1.0, 37.0, 1e20].iter().map(|&s| rng.vec(32 * 7, s)).collect();
    rows.push(vec![0.0; 64]);
    // amax 127 makes the inverse scale 1: every value below is a tie but ±127.
    rows.push((0..64).map(|i| if i % 32 == 5 { 127.0 } else { (i % 32) as f32 - 15.5 }).collect());
    rows.push((0..32).map(|i| -(i as f32) - 0.5).chain([-127.0]).chain((1..32).map(|i| i as f32 + 0.5)).collect());
    for isa in Isa::ALL.into_iter().filter(|isa| isa.q8_quantizer().is_some()) {
        for (r, x) in rows.iter().enumerate() {
            for (ty, bytes) in [(Q8_0, 34), (Q8_1, 36)] {
                let mut want = Vec::new();
                match (ty, isa.is_arm()) {
                    (Q8_0, false) => quantize_with(x, &mut want, BlockQ8_0::quantize_like_simd),
                    (Q8_0, true) => quantize_with(x, &mut want, BlockQ8_0::quantize_like_arm),
                    (_, false) => quantize_with(x, &mut want, BlockQ8_1::quantize_like_simd),
                    (_, true) => quantize_with(x, &mut want, BlockQ8_1::quantize_like_arm),
                }
                let mut got = vec![0xAB; 3];
                quantize_activations_with(isa, ty, x, &mut got);
                assert_eq!(&got[..x.len() / 32 * bytes], &want[..], "{isa:?} {ty} row {r}");
            }
        }
    }
}

/// The SIMD sets' Q8_K activation quantizers against the scalar blocks (ggml's
/// `quantize_row_q8_K_ref`), byte for byte: random rows over 40 orders of magnitude, the
/// largest magnitude negative and positive, twice (the first one's sign counts), scaled values
/// exactly halfway between two quants, and the blocks the scalar code takes: all zero, tiny,
/// infinite, NaN.
#[test]
fn q8_k_activation_quantizers_equal_the_scalar_blocks() {
    use super::super::block::quantize;
    use super::super::kquants::BlockQ8K;
    let mut rng = Rng(29);
    let mut rows: Vec<Vec<f32>> = [1e-20f32, 1e-3, 1.0, 37.0, 1e20].iter().map(|&s| rng.vec(256 * 3, s)).collect();
    // max -127 (first) makes the inverse scale 1: every other value is a tie but the 127.
    let ties = |sign: f32| (0..256).map(move |i| if i == 9 { sign * 127.0 } else { (i % 64) as f32 - 31.5 });
    rows.push(ties(-1.0).chain(ties(1.0)).collect());
    let mut both = rng.vec(256, 1.0);
    (both[3], both[200]) = (4.0, -4.0);
    rows.push(both.iter().chain(both.iter().map(|v| -v).collect::<Vec<_>>().iter()).copied().collect());
    for odd in [0.0, 1e-35, f32::INFINITY, f32::NAN] {
        let mut x = rng.vec(512, 1.0);
        x[256..].iter_mut().for_each(|v| *v *= 1e-37);
        x[17] = odd;
        x[300] = odd;
        rows.push(x);
    }
    rows.push(vec![0.0; 256]);
    for isa in Isa::ALL.into_iter().filter(|isa| isa.q8_k_quantizer().is_some()) {
        for (r, x) in rows.iter().enumerate() {
            let mut want = Vec::new();
            quantize::<BlockQ8K>(x, &mut want);
            let mut got = vec![0xAB; 3];
            quantize_activations_with(isa, Q8_K, x, &mut got);
            assert_eq!(&got[..want.len()], &want[..], "{isa:?} row {r}");
        }
    }
}

/// The SIMD SwiGLU kernels (x86 and NEON) against their lane-by-lane reference, bit for bit,
/// over lengths with and without a tail and inputs through both of `exp`'s scaling paths, out
/// to where it overflows or flushes; and the reference's `exp` within 2 ulp of the C library's.
#[test]
fn silu_mul_equals_its_lane_reference() {
    use super::super::silu_mul;
    use super::vexp::{exp_lane, silu_mul_lane};
    let mut rng = Rng(31);
    for x in (-2000..=2000).map(|i| i as f32 * 0.0625) {
        let (got, want) = (exp_lane(x), x.exp());
        let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
        assert!(
            ulp <= 2
                || (want == 0.0 && got == 0.0)
                || (want.is_infinite() && got.is_infinite())
                || (want < 1e-37 && got < 1e-37),
            "exp({x}): {got} vs {want}"
        );
    }
    for isa in Isa::ALL.into_iter().filter(|isa| isa.silu_mul_kernel().is_some()) {
        for (len, scale) in [(8, 4.0), (13, 10.0), (64, 100.0), (1536, 3.0), (203, 200.0)] {
            let gate = rng.vec(len, scale);
            let up = rng.vec(len, 2.0);
            let mut got = gate.clone();
            isa.silu_mul_kernel().unwrap().call(&mut got, &up);
            for (i, ((&g, &u), &r)) in gate.iter().zip(&up).zip(&got).enumerate() {
                let want = silu_mul_lane(g, u);
                assert_eq!(r.to_bits(), want.to_bits(), "{isa:?} len {len} [{i}]: silu({g}) * {u}: {r} vs {want}");
            }
        }
    }
    let mut got = vec![1.0f32; 16];
    silu_mul(&mut got, &[1.0; 16]);
    assert!(got.iter().all(|&v| (v - 0.731_058_6).abs() < 1e-6), "{got:?}");
}

/// The SIMD GeGLU kernels against the scalar code bit for bit: every f16 value, the f32s at and
/// either side of the midpoint to the next one (where the rounding to f16 turns; the midpoint
/// itself a tie, rounded to even), the saturation edges, every 4099th f32 bit pattern, and
/// lengths with a tail.
#[test]
fn gelu_mul_equals_the_scalar_code() {
    use super::super::{gelu_lane, gelu_mul, gelu_table};
    let table = gelu_table();
    let mut gate = vec![0.0f32, -0.0, 10.0, -10.0, 9.999_999, -9.999_999, 10.000_001, -10.000_001, 65504.0];
    gate.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE]);
    for bits in 0..=u16::MAX {
        let (h, next) = (half::f16::from_bits(bits), half::f16::from_bits(bits.wrapping_add(1)));
        if !h.is_finite() || !next.is_finite() || h.is_sign_negative() != next.is_sign_negative() {
            continue;
        }
        // Exact in f32: f16 values have 11 significant bits, their midpoints 12.
        let mid = (h.to_f32() + next.to_f32()) / 2.0;
        gate.extend([h.to_f32(), mid, f32::from_bits(mid.to_bits() - 1), f32::from_bits(mid.to_bits() + 1)]);
    }
    gate.extend((0..u32::MAX / 4099).map(|i| f32::from_bits(i * 4099)));
    let up: Vec<f32> = (0..gate.len()).map(|i| [1.0, -0.5, 3.25, 1e-3][i % 4]).collect();
    let mut checked = 0;
    for isa in Isa::ALL.into_iter().filter(|isa| isa.gelu_mul_kernel().is_some()) {
        for len in [gate.len(), 13, 5] {
            let mut got = gate[..len].to_vec();
            isa.gelu_mul_kernel().unwrap().call(&mut got, &up[..len], table);
            for (i, ((&g, &u), &r)) in gate.iter().zip(&up).zip(&got).enumerate() {
                let want = gelu_lane(g, table) * u;
                assert!(
                    r.to_bits() == want.to_bits() || (r.is_nan() && want.is_nan()),
                    "{isa:?} len {len} [{i}]: gelu({g}) * {u}: {r} vs {want}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 0 || !cfg!(target_arch = "x86_64"), "no x86 set with a GELU kernel");
    let mut got = [1.0f32, -1.0];
    gelu_mul(&mut got, &[2.0, 2.0]);
    assert_eq!(got, [gelu_lane(1.0, table) * 2.0, gelu_lane(-1.0, table) * 2.0]);
}

/// `simd::expf::lane` against the C library's `expf` bit for bit (glibc on x86-64, where the
/// softmax kernels use it), over every 4099th f32 of [-104, 88] and the edges;
/// `expf_lane_equals_libm_everywhere` (ignored, ~1 min) checks every f32 there.
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
#[test]
fn expf_lane_equals_libm() {
    assert_eq!(expf_mismatches(4099), 0);
    for x in [0.0f32, -0.0, -1e-30, -87.5, -88.0, -103.9, super::expf::UNDERFLOW, -103.98, -200.0, f32::NEG_INFINITY] {
        assert_eq!(super::expf::lane(x).to_bits(), x.exp().to_bits(), "expf({x})");
    }
    assert!(super::expf::lane(f32::NAN).is_nan());
}

#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
#[test]
#[ignore = "every f32 in [-104, 88]: about a minute"]
fn expf_lane_equals_libm_everywhere() {
    assert_eq!(expf_mismatches(1), 0);
}

/// How many f32 in [-104, 88], every `step`th bit pattern, `simd::expf::lane` and libm differ on.
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
fn expf_mismatches(step: u32) -> usize {
    let negatives = (0x8000_0000u32..=(-104.0f32).to_bits()).step_by(step as usize);
    let positives = (0..=88.0f32.to_bits()).step_by(step as usize);
    negatives
        .chain(positives)
        .map(f32::from_bits)
        .filter(|&x| super::expf::lane(x).to_bits() != x.exp().to_bits())
        .count()
}

/// The SIMD softmax kernels against the scalar softmax (libm `expf`) bit for bit, where the C
/// library is glibc: lengths with and without a tail, scores spread wide enough that some
/// fall below `expf`'s underflow (the kernels' per-lane path), and a NaN.
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
#[test]
fn softmax_kernels_equal_the_scalar_softmax() {
    let sets: Vec<Isa> = Isa::ALL.into_iter().filter(|isa| isa.softmax_kernel().is_some()).collect();
    assert!(!sets.is_empty(), "no SIMD softmax to test");
    let mut rng = Rng(43);
    for (len, scale) in [(1, 3.0), (7, 3.0), (8, 20.0), (13, 10.0), (64, 60.0), (192, 8.0), (203, 150.0), (1000, 2.0)] {
        let x = rng.vec(len, scale);
        let mut want = x.clone();
        super::super::softmax_scalar(&mut want);
        for isa in &sets {
            let mut got = x.clone();
            isa.softmax_kernel().unwrap().call(&mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{isa:?} len {len} [{i}]: {g} vs {w}");
            }
        }
    }
    let mut with_nan = vec![0.5f32; 16];
    with_nan[3] = f32::NAN;
    for isa in &sets {
        let mut got = with_nan.clone();
        isa.softmax_kernel().unwrap().call(&mut got);
        assert!(got.iter().all(|v| v.is_nan()), "{isa:?}: {got:?}");
    }
}

/// Attention's f16 kernels over a cache of `ATTN_POSITIONS` (default 512) positions, ns per
/// position and head: the scores of every query head against its key head, then the values'
/// weighted sum, over a cache laid out as `KvCache`'s (each key/value head's rows contiguous).
/// With `ATTN_COLD=1` a 64 MiB read before each key/value head evicts the cache from every
/// level, as a decode step's weights do; `ATTN_ROUNDS` (default 20, the best of them reported)
/// runs it longer, for a profiler. A measurement, not a check:
/// `cargo test --release attention_kernel_throughput -- --ignored --nocapture`.
/// Shapes: (head size, query heads, key/value heads) of SmolLM2, Qwen2.5-0.5B, Qwen2.5-1.5B and
/// Gemma-3-270M.
#[test]
#[ignore]
fn attention_kernel_throughput() {
    use super::super::{axpy_f16_heads, dot_f16_f32_heads};
    use std::time::Instant;
    let positions: usize = std::env::var("ATTN_POSITIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
    let mut rng = Rng(31);
    for (hd, n_head, n_kv) in [(64usize, 9usize, 3usize), (64, 14, 2), (128, 12, 2), (256, 4, 1)] {
        let row_bytes = 2 * hd;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        quantize_activations(GgmlType::F16, &rng.vec(positions * hd * n_kv, 1.0), &mut keys);
        quantize_activations(GgmlType::F16, &rng.vec(positions * hd * n_kv, 1.0), &mut values);
        let q = rng.vec(hd * n_head, 1.0);
        let group = n_head / n_kv;
        let (mut scores, mut out) = (vec![0.0f32; group * positions], vec![0.0f32; group * hd]);
        let (mut best_dot, mut best_axpy) = (f64::INFINITY, f64::INFINITY);
        let evict = std::env::var("ATTN_COLD").is_ok_and(|v| v == "1").then(|| vec![1u8; 64 << 20]);
        let rounds: usize = std::env::var("ATTN_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
        for _ in 0..rounds {
            let (mut dot, mut axpy) = (0.0, 0.0);
            for kv in 0..n_kv {
                let at = kv * positions * row_bytes;
                if let Some(evict) = &evict {
                    evict.chunks(64).for_each(|line| {
                        std::hint::black_box(line[0]);
                    });
                }
                let t = Instant::now();
                dot_f16_f32_heads(&keys, row_bytes, at, &q[kv * group * hd..][..group * hd], hd, &mut scores);
                dot += t.elapsed().as_secs_f64();
                let t = Instant::now();
                axpy_f16_heads(&mut out, &scores, &values, row_bytes, at, hd);
                axpy += t.elapsed().as_secs_f64();
            }
            best_dot = best_dot.min(dot);
            best_axpy = best_axpy.min(axpy);
        }
        let per = (positions * n_head) as f64 / 1e9;
        println!(
            "head size {hd:>3}, {n_head:>2} heads on {n_kv}: scores {:5.2} ns, values {:5.2} ns per position and head (checksum {:.3e})",
            best_dot / per,
            best_axpy / per,
            out.iter().map(|&v| v as f64).sum::<f64>()
        );
    }
}

/// The AMX bf16 products against their scalar reference (the same bf16 values multiplied and
/// summed in f32 in order; the tiles sum in another order), for every format with a SIMD
/// kernel: strips of 32 rows whole and partial, token counts around the tiles' 16 and pairs of
/// 32, decode's single token included; and weights interleaved for the integer kernels give
/// the file layout's products bit for bit.
#[test]
fn bf16_tile_products_agree_with_their_reference() {
    if !has_bf16_tiles() {
        eprintln!("skipped: this CPU (or system) has no AMX-BF16 tiles");
        return;
    }
    let mut rng = Rng(11);
    let mut acts = Bf16Tokens::default();
    for ty in SIMD_TYPES {
        let block_len = ty.block_len() as usize;
        for &(cols, rows) in &[(256, 8), (512, 40), (1024, 33), (256, 64)] {
            let weights = random_blocks(ty, rows * cols / block_len, 1.0, &mut rng).0;
            let mut interleaved = weights.clone();
            if rows % 8 == 0 && ty != Q6_K {
                interleave_rows8(ty, cols, &mut interleaved, &mut Vec::new());
            }
            for n_tokens in [1, 15, 16, 17, 32, 33, 64] {
                let x = rng.vec(n_tokens * cols, 2.0);
                acts.pack(&x, cols);
                let mut want = vec![f32::NAN; rows * n_tokens];
                dot_rows_batch_bf16_reference(ty, cols, &weights, &x, &mut want);
                let mut got = vec![f32::NAN; rows * n_tokens];
                dot_rows_batch_bf16(ty, false, &weights, &acts, &mut got);
                let w = dequantized(ty, &weights, rows * cols);
                for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    let (r, t) = (i / n_tokens, i % n_tokens);
                    let magnitude: f64 = w[r * cols..][..cols]
                        .iter()
                        .zip(&x[t * cols..][..cols])
                        .map(|(&a, &b)| (a * b as f64).abs())
                        .sum();
                    // Two f32 sums of the same products in different orders, each within
                    // (cols + 4) roundings of the magnitude; the bf16 roundings move it < 1%.
                    let bound = 2.0 * (cols as f64 + 4.0) * (f32::EPSILON as f64 / 2.0) * magnitude * 1.01;
                    assert!(
                        ((g - e) as f64).abs() <= bound,
                        "{ty} {cols} columns, {n_tokens} tokens: row {r} token {t}: got {g}, want {e}, bound {bound:e}"
                    );
                }
                if rows % 8 == 0 && interleaved != weights {
                    let mut from_interleaved = vec![f32::NAN; rows * n_tokens];
                    dot_rows_batch_bf16(ty, true, &interleaved, &acts, &mut from_interleaved);
                    let same = got.iter().zip(&from_interleaved).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} {cols} columns, {n_tokens} tokens: interleaved weights give other products");
                }
            }
        }
    }
}

/// The int8 tiles' products are the AVX-512 VNNI kernels' bit for bit, taken on AMX tiles and
/// by VNNI (whichever this CPU has), for every format the tiles take, in the file's layout and
/// interleaved: strips of 32 rows whole and partial, token counts filling one or two token tiles
/// or leaving the last one partial, rows whose blocks do not fill the kernels' groups of eight,
/// and scales from small to large; and laid out in strips, the same values.
#[cfg(target_arch = "x86_64")]
#[test]
fn int8_tile_products_are_the_vnni_kernels() {
    use super::amx_int8::Int8Tiles;
    let ways = Int8Tiles::for_tests();
    if ways.is_empty() {
        eprintln!("skipped: this CPU has neither AMX-INT8 tiles nor AVX-512 VNNI");
    }
    for tiles in ways {
        tile_products_are_the_vnni_kernels(tiles);
    }
}

#[cfg(target_arch = "x86_64")]
fn tile_products_are_the_vnni_kernels(tiles: super::amx_int8::Int8Tiles) {
    use super::amx_int8::dot_rows_batch as on_tiles;
    use crate::quant::ProductLayout::{RowMajor, Strips};
    let isa = Isa::Avx512Vnni;
    let mut rng = Rng(12);
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K] {
        let block_len = ty.block_len() as usize;
        let shapes: &[(usize, usize)] = match ty {
            Q4_K => &[(256, 8), (768, 40), (512, 64)],
            // Nine blocks: one group of eight lanes and one more.
            Q6_K => &[(256, 8), (2304, 40), (512, 33)],
            _ => &[(288, 8), (256, 40), (96, 33), (544, 64)],
        };
        for &(cols, rows) in shapes {
            for (scale, x_scale) in [(1.0, 2.0), (3e-3, 60.0)] {
                let weights = random_blocks(ty, rows * cols / block_len, scale, &mut rng).0;
                for n_tokens in [16, 17, 32, 40, 64] {
                    let xs: Vec<Vec<f32>> = (0..n_tokens).map(|_| rng.vec(cols, x_scale)).collect();
                    let acts = activation_rows(isa, vec_dot_type(ty), &xs);
                    let (_, kernel) = isa.kernels(ty).expect("a VNNI kernel");
                    let mut want = vec![f32::NAN; rows * n_tokens];
                    kernel.call(cols, &weights, &acts, n_tokens, &mut want);
                    let mut got = vec![f32::NAN; rows * n_tokens];
                    assert!(on_tiles(tiles, ty, cols, &weights, false, &acts, n_tokens, RowMajor, &mut got));
                    let first_difference = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
                    if let Some(i) = first_difference {
                        let (r, t) = (i / n_tokens, i % n_tokens);
                        panic!(
                            "{tiles:?}: {ty}, {cols} columns, {rows} rows, {n_tokens} tokens: row {r} token {t}: tiles {}, VNNI {}",
                            got[i],
                            want[i]
                        );
                    }
                    let mut in_strips = vec![f32::NAN; rows * n_tokens];
                    assert!(on_tiles(tiles, ty, cols, &weights, false, &acts, n_tokens, Strips, &mut in_strips));
                    let same =
                        in_strips.iter().zip(strips_of(&want, rows, n_tokens)).all(|(g, w)| g.to_bits() == w.to_bits());
                    assert!(same, "{ty}, {cols} columns, {rows} rows, {n_tokens} tokens: the strips differ");
                    if rows % 8 == 0 && ty != Q6_K {
                        let mut interleaved = weights.clone();
                        interleave_rows8(ty, cols, &mut interleaved, &mut Vec::new());
                        let mut from_interleaved = vec![f32::NAN; rows * n_tokens];
                        assert!(on_tiles(
                            tiles,
                            ty,
                            cols,
                            &interleaved,
                            true,
                            &acts,
                            n_tokens,
                            RowMajor,
                            &mut from_interleaved
                        ));
                        let same = from_interleaved.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{ty}, {cols} columns, {n_tokens} tokens: interleaved weights on the tiles differ"
                        );
                    }
                }
            }
        }
    }
}

/// Row-major products (rows, n) laid out as `quant::ProductLayout::Strips`.
#[cfg(target_arch = "x86_64")]
fn strips_of(row_major: &[f32], rows: usize, n: usize) -> Vec<f32> {
    let strip = crate::quant::PRODUCT_STRIP_ROWS;
    let mut out = Vec::with_capacity(rows * n);
    for first in (0..rows).step_by(strip) {
        let here = strip.min(rows - first);
        for t in 0..n {
            out.extend((first..first + here).map(|r| row_major[r * n + t]));
        }
    }
    out
}

/// The SIMD transpositions against the scalar loop, value for value: shapes with and without
/// whole 8 x 8 squares, strides longer than the rows, and nothing written outside the matrix.
#[test]
fn transpose_kernels_equal_the_scalar_loop() {
    let mut rng = Rng(47);
    for isa in Isa::ALL.into_iter().filter(|isa| isa.transpose_kernel().is_some()) {
        for (rows, cols, src_stride, dst_stride) in
            [(8, 8, 8, 8), (16, 24, 30, 17), (7, 9, 9, 7), (33, 128, 128, 40), (1, 5, 5, 1)]
        {
            let src = rng.vec((rows - 1) * src_stride + cols, 10.0);
            let len = (cols - 1) * dst_stride + rows;
            let mut got = vec![f32::NAN; len + 3];
            isa.transpose_kernel().unwrap().call(&src, src_stride, rows, cols, &mut got, dst_stride);
            let mut want = vec![f32::NAN; len + 3];
            for r in 0..rows {
                for c in 0..cols {
                    want[c * dst_stride + r] = src[r * src_stride + c];
                }
            }
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "{isa:?} {rows}x{cols}, strides {src_stride}, {dst_stride}");
        }
    }
}
