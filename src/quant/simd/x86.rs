//! x86-64 row dot products for the weight formats real models use: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
//! (32-value blocks) and Q4_K, Q6_K (256-value super-blocks), each against its activation format.
//!
//! One source, two instruction sets: [`x86_kernels!`] expands the kernels once with AVX2 and once
//! with AVX-512 VNNI, which differ only in a few integer primitives: the u8 x i8 four-product sum
//! (`vpmaddubsw` + `vpmaddwd` with ones on AVX2, one `vpdpbusd` with VNNI), the i16 x i16 pair
//! sum accumulated into i32 (`vpmaddwd` + `vpaddd`, or one `vpdpwssd`), Q5's fifth bits
//! added to a block's 32 quants in the file's layout (bits spread to bytes by a shuffle, an `and`
//! and a `vpsignb`, or a zero-masked move joined to the nibbles by one `vpternlogd`; the
//! rearranged layout's take one shift on both), the Q8_0 weights' product (their sign moved
//! onto the activations, or the weights offset to unsigned), the sums of 4- and 5-bit quants'
//! products (`narrow_dot`: in i16 lanes, widened once per run, Q4_K's by a `vpmaddwd` with its
//! scales; or in i32 lanes) and the gathering of eight blocks' f16 scales (through general
//! registers, or a word permute). The VNNI variant keeps 256-bit vectors (EVEX-encoded through
//! AVX-512VL): decode is bound by memory bandwidth, not by vector width, and 256-bit operations
//! avoid the frequency penalty some CPUs apply to 512-bit ones. Attention's f16 kernels are not
//! in the macro: the sets have their own, `attention256` and `attention512` (which is bound by
//! instructions where the cache holds the keys and values).
//!
//! Every kernel works on tiles of weight rows by activation rows: decode on one by one, prefill on
//! ROWS_PER_TILE by TILE_TOKENS (Q6_K: one row by TOKENS_PER_PASS). A tile takes each 32-value
//! run's (a block's, or a K-quant group's) integer dot product whole and scales it in an f32 lane
//! of its own: one by one with a horizontal sum of eight runs at once ([`lane_sums`]; Q4_K's two
//! groups per vector against the activation rows' paired quants, [`pair_lane_sums`]), larger
//! tiles with the weights transposed against the activation rows' interleaved copy of their
//! quants (`quant::SimdTable`). Both give the same integers and then the same f32 operations, so
//! prefill and decode results are bit-identical.
//!
//! Q6_K's 16-value groups have scales of their own: each block's integer sum is taken whole
//! (its groups' products times their scales, exactly, in i32) and scaled in lane `block % 8`.
//! That is what AMX int8 tiles compute too (`amx_int8`, which repeats every format's arithmetic
//! here bit for bit for batches of 16 tokens and more).
//!
//! Q4_K's prefill takes eight weight rows at a time with rows in the lanes ([`q4_k_rows8`]):
//! each block's scales and transposed quants then serve eight tokens, and each group's products
//! are scaled and added exactly as decode's one-row kernel ([`q4_k`]) does in that group's lane,
//! with one accumulator per group, summed at the end in [`hsum`]'s order.
//!
//! Integer sums are exact, as in the scalar kernels; the f32 accumulation order differs (eight
//! lanes summed at the end), so results agree with the scalar reference to f32 rounding, not bit
//! for bit. Within one instruction set they are deterministic, which keeps paged and resident
//! logits identical. Every block is read through a fixed-size array reference, so each vector load
//! is checked against the block's length where the offset is a constant.

pub(crate) mod amx;
pub(crate) mod amx_int8;
mod attention256;
mod attention512;

/// Bytes per block of each format handled here.
pub(super) mod sizes {
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

/// Activation rows (tokens) one Q6_K weight block meets per pass in batched products (prefill):
/// enough to amortize decoding the block, few enough that the accumulators stay in registers.
const TOKENS_PER_PASS: usize = 8;

/// Gives the calling function a frame aligned to 32 bytes, so that the vectors the compiler
/// spills in it land in aligned slots. Without it, a function that finds it needs a spill only
/// during register allocation has its frame pointer in use as a general register and cannot
/// realign: its spill slots are 16-byte aligned, and where the thread's stack puts a 32-byte
/// slot across a cache line (a quarter of positions) or a page boundary, every store to it and
/// load back stalls. Which kernels lose depends on the build and the thread; one measured case,
/// Zen 3, in L2, the Q5_0 decode kernel at 512 columns with a slot across a page: 3.0 ns per
/// block against 1.45 aligned. (Frame pointers forced for the whole crate align every frame too,
/// but cost Gemma-3's decode 20%.) Costs a realignment per call, so it is in functions called
/// once per matrix or head (decode's row loops, softmax, attention's value sums), not in the
/// prefill tiles' `tile_group`, called per group of blocks, which it made 8-15% slower. To find
/// the functions that need it: `objdump -d -M intel` shows `vmovups`/`vmovdqu` of a `ymm` to
/// `[rsp+..]` in a function whose prologue has no `and rsp, ..e0`.
#[inline(always)]
fn align_spills() {
    #[repr(align(32))]
    struct Aligned([u8; 0]);
    // `&mut` of a local: a shared reference to a constant would point into a static instead.
    std::hint::black_box(&mut Aligned([]));
}

/// Activation rows (tokens) a Q4_K prefill call multiplies with its eight weight rows at once:
/// eight measured 11% faster prefill than four on Qwen2.5-1.5B (one thread, with an earlier form
/// of the kernel's scaling); sixteen in two halves of eight was slower.
const Q4_K_TOKENS_PER_PASS: usize = 8;

/// The two entry points of one kernel: `$rows` for decode (`quant::dot_rows`), `$batch` for
/// prefill (`quant::dot_rows_batch`). Activation rows of format `$a_ty` are `$a_bytes` per block
/// plus what `quant::SimdTable` or the Q8_K pairs add (`quant::act_row_bytes_with`).
macro_rules! kernel_entries {
    // `$kernel::<N>`: one weight row against N activation rows.
    ($features:literal; $rows:ident, $batch:ident, $kernel:ident, $block_len:expr, $w_bytes:expr, $a_bytes:expr, $a_ty:expr) => {
        #[target_feature(enable = $features)]
        fn $rows(cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]) {
            super::align_spills();
            let nb = cols / $block_len;
            let act = &act[..crate::quant::simd_act_row_bytes($a_ty, $a_bytes, nb)];
            let mut pending = None;
            for (o, w) in out.iter_mut().zip(weights.chunks_exact(nb * $w_bytes)) {
                let [acc] = $kernel::<1>(nb, w, [act]);
                sum_later(&mut pending, Some((o, acc)));
            }
            sum_later(&mut pending, None);
        }

        #[target_feature(enable = $features)]
        fn $batch(cols: usize, weights: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
            const PASS: usize = super::TOKENS_PER_PASS;
            let nb = cols / $block_len;
            let act_bytes = crate::quant::simd_act_row_bytes($a_ty, $a_bytes, nb);
            let act = |t: usize| &acts[t * act_bytes..(t + 1) * act_bytes];
            // Passes of tokens outside, rows inside: a pass's activation rows stay in L1 while
            // every weight row meets them (the other way round, a wide matrix's activations
            // stream from L2 or L3 once per weight row).
            let mut t = 0;
            while t + PASS <= n_tokens {
                for (o, w) in out.chunks_exact_mut(n_tokens).zip(weights.chunks_exact(nb * $w_bytes)) {
                    let dots = $kernel::<PASS>(nb, w, std::array::from_fn(|k| act(t + k)));
                    for (o, acc) in o[t..t + PASS].iter_mut().zip(dots) {
                        *o = hsum(acc);
                    }
                }
                t += PASS;
            }
            // Smaller passes for what is left: several sequences decoding a token each share
            // each weight block decoded instead of decoding it once per token.
            macro_rules! small_pass {
                ($n:literal) => {
                    if t + $n <= n_tokens {
                        for (o, w) in out.chunks_exact_mut(n_tokens).zip(weights.chunks_exact(nb * $w_bytes)) {
                            let dots = $kernel::<$n>(nb, w, std::array::from_fn(|k| act(t + k)));
                            for (o, acc) in o[t..t + $n].iter_mut().zip(dots) {
                                *o = hsum(acc);
                            }
                        }
                        t += $n;
                    }
                };
            }
            small_pass!(4);
            small_pass!(2);
            for (o, w) in out.chunks_exact_mut(n_tokens).zip(weights.chunks_exact(nb * $w_bytes)) {
                for (t, o) in o.iter_mut().enumerate().skip(t) {
                    let [acc] = $kernel::<1>(nb, w, [act(t)]);
                    *o = hsum(acc);
                }
            }
        }
    };
    // Kernels by tiles: `$tile::<R, N>` multiplies R weight rows with N activation rows; decode
    // takes tiles of one by one, prefill larger ones, where each activation block loaded serves
    // R rows. Every result is bit-identical to the one-by-one tile's.
    // `$one_by_one` is the one-by-one tile over every row, in one function.
    ($features:literal; $rows:ident, $batch:ident, tile $tile:ident, $one_by_one:ident, $block_len:expr, $w_bytes:expr, $a_bytes:expr, $a_ty:expr) => {
        #[target_feature(enable = $features)]
        fn $rows(cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]) {
            let nb = cols / $block_len;
            let act = &act[..crate::quant::simd_act_row_bytes($a_ty, $a_bytes, nb)];
            $one_by_one(nb, weights, act, out, 1);
        }

        kernel_entries!($features; $batch, tile $tile, $one_by_one, $block_len, $w_bytes, $a_bytes, $a_ty);
    };
    // The batch entry alone (weights in an interleaved layout, which decode reaches through it).
    ($features:literal; $batch:ident, tile $tile:ident, $one_by_one:ident, $block_len:expr, $w_bytes:expr, $a_bytes:expr, $a_ty:expr) => {
        #[target_feature(enable = $features)]
        fn $batch(cols: usize, weights: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
            /// Tokens `t..t + P` against every row: tiles of ROWS_PER_TILE rows, then single rows.
            #[target_feature(enable = $features)]
            fn pass<const P: usize>(
                nb: usize,
                weights: &[u8],
                acts: &[u8],
                n_tokens: usize,
                t: usize,
                out: &mut [f32],
            ) {
                const ROWS: usize = super::ROWS_PER_TILE;
                let row_bytes = nb * $w_bytes;
                let act_bytes = crate::quant::simd_act_row_bytes($a_ty, $a_bytes, nb);
                let act = |k: usize| &acts[(t + k) * act_bytes..(t + k + 1) * act_bytes];
                let rows = out.len() / n_tokens;
                let w = |r: usize| &weights[r * row_bytes..(r + 1) * row_bytes];
                let mut r = 0;
                while r + ROWS <= rows {
                    let tile_rows = std::array::from_fn(|k| w(r + k));
                    let dots = $tile::<ROWS, P>(nb, tile_rows, std::array::from_fn(act));
                    for (k, dots) in dots.iter().enumerate() {
                        out[(r + k) * n_tokens + t..][..P].copy_from_slice(dots);
                    }
                    r += ROWS;
                }
                for r in r..rows {
                    let [dots] = $tile::<1, P>(nb, [w(r)], std::array::from_fn(act));
                    out[r * n_tokens + t..][..P].copy_from_slice(&dots);
                }
            }
            let nb = cols / $block_len;
            let act_bytes = crate::quant::simd_act_row_bytes($a_ty, $a_bytes, nb);
            let act = |t: usize| &acts[t * act_bytes..(t + 1) * act_bytes];
            let [wide, narrow] = super::TILE_TOKENS;
            let mut t = 0;
            while t + wide <= n_tokens {
                pass::<{ super::TILE_TOKENS[0] }>(nb, weights, acts, n_tokens, t, out);
                t += wide;
            }
            if t + narrow <= n_tokens {
                pass::<{ super::TILE_TOKENS[1] }>(nb, weights, acts, n_tokens, t, out);
                t += narrow;
            }
            // Smaller passes for what is left: several sequences decoding a token each share
            // each weight block decoded instead of decoding it once per token.
            if t + 4 <= n_tokens {
                pass::<4>(nb, weights, acts, n_tokens, t, out);
                t += 4;
            }
            if t + 2 <= n_tokens {
                pass::<2>(nb, weights, acts, n_tokens, t, out);
                t += 2;
            }
            for t in t..n_tokens {
                $one_by_one(nb, weights, act(t), &mut out[t..], n_tokens);
            }
        }
    };
}

/// Weight rows a prefill tile multiplies at once (see [`kernel_entries`]): each activation
/// block loaded then serves this many rows, which keeps prefill from waiting on the L2 cache
/// where activation rows outgrow L1.
const ROWS_PER_TILE: usize = 4;

/// How far ahead of the block being multiplied the one-row (decode) kernels ask for weights
/// (`_mm_prefetch`). The hardware prefetcher alone leaves a core waiting on DRAM: over 64 MiB
/// of weights on Zen 3 (AVX2, one thread), 2048-8192 bytes ahead took Q4_1 from 1.6-1.7 to
/// 1.1-1.2 ns per block, Q8_0 2.5-2.7 to 1.6-1.8, Q4_K 11.5-13.4 to 8.7-10.0 and Q6_K
/// 15-18 to 11-12.5; decode of SmolLM2 and Qwen2.5-1.5B gained 13-24%. On an Intel Xeon with
/// AVX-512 VNNI (a 2-vCPU guest), 4096 was the best of 1024-8192 too. Past a row's end the
/// address runs into the next rows, which the kernel reads next.
const DECODE_PREFETCH_BYTES: usize = 4096;

/// Which cache levels decode's weight prefetches fill: see [`decode_prefetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecodePrefetch {
    /// `prefetchnta`: into L1 only, kept out of the outer levels where the CPU allows.
    NonTemporal,
    /// `prefetcht2`: into the outer levels (L2 and L3 on the Intel Xeon measured, where it
    /// was as fast as `prefetcht1`).
    Outer,
    /// `prefetcht0`: into every level, L1 included.
    Every,
}

/// The prefetch kind decode's kernels use on this CPU: non-temporal on AMD, into the outer levels
/// elsewhere; `CHORD_LLM_DECODE_PREFETCH=nta|t2` overrides it (for measurements).
///
/// The two CPUs measured disagree by far. On Zen 3, non-temporal weights stopped pushing the KV
/// cache and activations out of L2 and L3: SmolLM2 at one thread, 192 cached positions,
/// attention went from 11.3% to 8.8% of the time (perf) and the token 3-7% faster. On an Intel
/// Xeon (family 6 model 167, a KVM guest with 2 MiB of L2 per core), `prefetchnta` made every
/// decode about twice as slow as `prefetcht2`, and slower than no prefetch at all: per token at
/// one thread, SmolLM2 18.3-18.8 ms against 9.1-9.4 (no prefetch 10.8-11.2), Gemma-3-270M 44.7
/// against 21.9-22.4, Qwen2.5-1.5B 167 against 126-127 (no prefetch 154); `prefetcht0` was in
/// between. Probably because Intel's server cores fill L1 alone on `prefetchnta`, and the L2
/// streamer that keeps a sequential read going then sees none of it; measured, not traced.
fn decode_prefetch() -> DecodePrefetch {
    static CHOSEN: std::sync::OnceLock<DecodePrefetch> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let detected = if cpu_vendor_is_amd() { DecodePrefetch::NonTemporal } else { DecodePrefetch::Outer };
        match std::env::var("CHORD_LLM_DECODE_PREFETCH").as_deref() {
            Ok("nta") => DecodePrefetch::NonTemporal,
            Ok("t2") => DecodePrefetch::Outer,
            Ok(other) => {
                eprintln!("chord-llm: CHORD_LLM_DECODE_PREFETCH={other} is not nta or t2; using the default");
                detected
            }
            Err(_) => detected,
        }
    })
}

/// How decode prefetches Q4_K rows in the interleaved layout (`q4_k_rows8`, whose eight rows
/// are one stream through memory): into which levels, and how many blocks of the eight rows
/// (`8 * 144` bytes each) ahead of the one being multiplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StreamPrefetch {
    hint: DecodePrefetch,
    blocks_ahead: usize,
}

/// How many blocks of eight interleaved rows ahead a prefill's passes fetch (into every level:
/// `q4_k_rows8` chooses the level by its pass's tokens).
const PREFILL_BLOCKS_AHEAD: usize = 4;

/// The 64 bytes of `b` at `at`, for the AVX-512 set's hooks in [`x86_kernels!`] (the kernels'
/// own loads, `load32` and `load16`, are compiled for both sets).
#[inline]
#[target_feature(enable = "avx512f")]
fn load64(b: &[u8], at: usize) -> std::arch::x86_64::__m512i {
    let bytes: &[u8; 64] = b[at..at + 64].try_into().expect("64 bytes");
    // SAFETY: `bytes` is 64 bytes; loadu has no alignment requirement.
    unsafe { std::arch::x86_64::_mm512_loadu_si512(bytes.as_ptr().cast()) }
}

/// [`StreamPrefetch`] for decode on this CPU. On Intel, `prefetcht2` four blocks ahead (measured
/// on an Intel Xeon, see `q4_k_rows8`). On AMD with AVX-512 (Zen 4 and later), `prefetcht2`
/// eight blocks ahead; on older AMD cores, `prefetcht0` four blocks ahead, which had been the
/// rule on every AMD CPU and was not measured again. `CHORD_LLM_DECODE_PREFETCH` does not
/// change this one.
///
/// On Zen 4 (EPYC family 25 model 17, a 2-vCPU KVM guest, one thread), `prefetcht0` four
/// blocks ahead was the slowest choice. Over 128 MiB of weights in `kernel_throughput`, 8960
/// columns (Qwen2.5-1.5B's `ffn_down`) read at 15-17 GB/s, against 26-29 with `prefetcht2`
/// eight or sixteen blocks ahead and 15-23 with no prefetch; 1536 columns at 24-26 against
/// 20-28 (this host varies by a fifth from one run to the next). Qwen2.5-1.5B decoded at a
/// median 18.6 tok/s against 20.5, 20 alternated runs each. The row kernels keep
/// `prefetchnta` there: `prefetcht2` halved them at 640 columns (Q8_0 and Q5_0: 11 and 9
/// GB/s against 25 and 19), and Gemma-3-270M's decode with them (48 against 87 tok/s).
fn stream_decode_prefetch() -> StreamPrefetch {
    static CHOSEN: std::sync::OnceLock<StreamPrefetch> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        if !cpu_vendor_is_amd() {
            StreamPrefetch { hint: DecodePrefetch::Outer, blocks_ahead: 4 }
        } else if std::arch::is_x86_feature_detected!("avx512f") {
            StreamPrefetch { hint: DecodePrefetch::Outer, blocks_ahead: 8 }
        } else {
            StreamPrefetch { hint: DecodePrefetch::Every, blocks_ahead: 4 }
        }
    })
}

/// Whether Q4_K's interleaved kernels unpack a group's eight heads with the AVX-512 set's
/// 512-bit permutes (`q4_k_heads8`) rather than row by row: on AMD, not on Intel.
///
/// On Zen 4 (EPYC family 25 model 17, a 2-vCPU KVM guest) the permutes made the interleaved
/// kernel about 15% faster in L2. On an Intel Xeon (family 6 model 207, a 2-vCPU KVM guest)
/// they made it slower: 1536 columns in L2, decode 7.9-9.6 against 6.3-6.6 ns per block and a
/// pass of 8 tokens 3.5-5.2 against 3.0 ns per block and token, three alternated rounds.
/// Probably because Intel cores give up port 1's vector unit while 512-bit operations are in
/// flight, and the kernel's 256-bit work needs it; measured, not traced (no counters in the
/// guest). The 32-value formats' `group_words`, 512-bit too, made no difference there either
/// way, and stays.
fn eight_head_unpack_pays() -> bool {
    static CHOSEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(cpu_vendor_is_amd)
}

/// Whether CPUID names the vendor "AuthenticAMD" (Hygon's Zen cores say "HygonGenuine").
fn cpu_vendor_is_amd() -> bool {
    let id = std::arch::x86_64::__cpuid(0);
    let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
    vendor == b"AuthenticAMD" || vendor == b"HygonGenuine"
}

/// Up to how many activation rows (sequences decoding together) a product prefetches as decode
/// does; prefill's tiles of 8 and 16 tokens spend long enough per block without.
const SEQUENCES_PREFETCHED: usize = 4;

/// Activation rows a prefill tile multiplies at once (see [`kernel_entries`]): passes of the
/// first count, then one of the second if enough tokens remain, then one by one. Each weight
/// group decoded (and transposed) serves this many tokens; 16 measured ~6% faster prefill than
/// 8 on Gemma-3 and Qwen2.5-0.5B, 32 no better than 16 and slower on Qwen2.5-1.5B.
const TILE_TOKENS: [usize; 2] = [16, 8];

/// Runs `$body` with `$c` a constant equal to `$count` (0..8), so that a row's last partial
/// group of blocks gets code compiled for its size: loops over its blocks unroll as the whole
/// groups' do, and their accumulators stay in registers.
macro_rules! with_count {
    ($count:expr, $c:ident => $body:expr) => {
        match $count {
            1 => {
                const $c: usize = 1;
                $body
            }
            2 => {
                const $c: usize = 2;
                $body
            }
            3 => {
                const $c: usize = 3;
                $body
            }
            4 => {
                const $c: usize = 4;
                $body
            }
            5 => {
                const $c: usize = 5;
                $body
            }
            6 => {
                const $c: usize = 6;
                $body
            }
            7 => {
                const $c: usize = 7;
                $body
            }
            _ => {}
        }
    };
}

/// A 32-value format's kernels ([`unsigned_blocks`] with `|$w| $quants` decoding a block):
/// `$tile::<R, N>` and `$one_by_one`, the one-by-one tile over every row of a matrix, which
/// decode takes (through `dot_rows` and as a batch of one token). The row loop is inside the one
/// function: called per row, the tile's prologue, constants and epilogue were a fifth of a
/// narrow row's instructions (576 columns: 18 blocks).
macro_rules! unsigned_format {
    // A format with an interleaved layout too: both kernels from the one block decoder.
    ($features:literal; $tile:ident, $one_by_one:ident, interleaved $i_tile:ident, $i_one_by_one:ident, $wb:expr, $ab:expr, $offset:expr, $q8:literal, |$w:ident| $quants:expr) => {
        unsigned_format!($features; $tile, $one_by_one, $wb, $ab, $offset, $q8, |$w| $quants);
        unsigned_format!($features; interleaved $i_tile, $i_one_by_one, $wb, $ab, $offset, $q8, |$w| $quants);
    };
    // 32-value weights in the interleaved layout ([`unsigned_interleaved`]).
    ($features:literal; interleaved $tile:ident, $one_by_one:ident, $wb:expr, $ab:expr, $offset:expr, $q8:literal, |$w:ident| $quants:expr) => {
        #[target_feature(enable = $features)]
        fn $tile<const R: usize, const N: usize>(nb: usize, w: [&[u8]; R], a: [&[u8]; N]) -> [[f32; N]; R] {
            unsigned_interleaved::<{ $wb }, { $ab }, R, N, { $offset }, $q8>(nb, w, a, |$w: &[u8; $wb]| $quants)
        }

        /// Row `r`'s result goes to `out[r * stride]` (a batch's leftover token: its column).
        #[target_feature(enable = $features)]
        fn $one_by_one(nb: usize, weights: &[u8], act: &[u8], out: &mut [f32], stride: usize) {
            super::align_spills();
            let mut pending = None;
            for (o, w) in out.iter_mut().step_by(stride).zip(weights.chunks_exact(nb * $wb)) {
                let acc = one_row_interleaved::<{ $wb }, { $ab }, { $offset }, $q8>(nb, w, act, &|$w: &[u8; $wb]| $quants);
                sum_later(&mut pending, Some((o, acc)));
            }
            sum_later(&mut pending, None);
        }
    };
    ($features:literal; $tile:ident, $one_by_one:ident, $wb:expr, $ab:expr, $offset:expr, $q8:literal, |$w:ident| $quants:expr) => {
        #[target_feature(enable = $features)]
        fn $tile<const R: usize, const N: usize>(nb: usize, w: [&[u8]; R], a: [&[u8]; N]) -> [[f32; N]; R] {
            unsigned_blocks::<{ $wb }, { $ab }, R, N, { $offset }, $q8>(nb, w, a, |$w: &[u8; $wb]| $quants)
        }

        /// Row `r`'s result goes to `out[r * stride]` (a batch's leftover token: its column).
        #[target_feature(enable = $features)]
        fn $one_by_one(nb: usize, weights: &[u8], act: &[u8], out: &mut [f32], stride: usize) {
            super::align_spills();
            let mut pending = None;
            for (o, w) in out.iter_mut().step_by(stride).zip(weights.chunks_exact(nb * $wb)) {
                let acc = one_row::<{ $wb }, { $ab }, { $offset }, $q8>(nb, w, act, &|$w: &[u8; $wb]| $quants);
                sum_later(&mut pending, Some((o, acc)));
            }
            sum_later(&mut pending, None);
        }
    };
}

macro_rules! x86_kernels {
    (
        $isa:ident, $features:literal, attention = $attention:ident,
        dot_u8_i8($acc:ident, $u:ident, $s:ident) $dot_u8_i8:block,
        madd_i16($acc2:ident, $a:ident, $b:ident) $madd_i16:block,
        quants5($raw:ident, $bits:ident) $quants5:block,
        q8_0_weights($w8:ident) $q8_0_weights:block,
        q8_0_dot($acc3:ident, $wq:ident, $aq:ident) $q8_0_dot:block,
        q8_0_offset = $q8_0_offset:literal,
        q4_k_pair_nibbles($qn:ident) $q4_k_pair_nibbles:block,
        q4_k_pair_unscale($qu:ident) $q4_k_pair_unscale:block,
        narrow_dot($nacc:ident, $nu:ident, $ns:ident) $narrow_dot:block,
        narrow_add($nx:ident, $ny:ident) $narrow_add:block,
        narrow_scales($np:ident) $narrow_scales:block,
        narrow_scale($nsums:ident, $nsc:ident) $narrow_scale:block,
        narrow_widen($nw:ident) $narrow_widen:block,
        narrow_i16 = $narrow_i16:literal,
        group_words<$gb:ident, $gj:ident>($gw:ident) $group_words:block,
        q4_k_heads8($qh:ident) $q4_k_heads8:block
    ) => {
        pub(crate) mod $isa {
            use super::sizes;
            use crate::quant::simd::{BatchKernel, KernelSet, RowsKernel};

            /// This instruction set's kernels, for `Isa` to hand out once `available()` holds.
            pub(crate) static SET: KernelSet =
                KernelSet {
                row_kernels: kernels,
                interleaved_kernel: Some(interleaved_kernel),
                dot_f16_f32: super::$attention::dot_f16_f32,
                axpy_f16: super::$attention::axpy_f16,
                quantize_q8: Some(quantize_q8),
                quantize_q8_k: Some(quantize_q8_k),
                silu_mul: Some(silu_mul),
                gelu_mul: Some(gelu_mul),
                softmax: Some(softmax),
                transpose: Some(transpose),
            };
            use crate::tensor::GgmlType;
            use core::arch::x86_64::*;

            /// Q8_0 blocks (`with_sum` false: `d`, then 32 quants) or Q8_1 blocks (`d`, `s`, then
            /// the quants) of `x` into `out`, value for value as the scalar
            /// `BlockQ8_0/Q8_1::quantize_like_simd` make them: the largest magnitude by `max` (in
            /// any order the same), the same scalar `127 / amax` and `amax / 127`, products
            /// rounded to nearest even, and `s` from the exact integer sum of the quants.
            #[target_feature(enable = $features)]
            fn quantize_q8(x: &[f32], with_sum: bool, out: &mut [u8]) {
                let quants_at = if with_sum { 4 } else { 2 };
                let magnitude = _mm256_set1_ps(f32::from_bits(0x7FFF_FFFF));
                for (xs, block) in x.chunks_exact(32).zip(out.chunks_exact_mut(quants_at + 32)) {
                    let xs: &[f32; 32] = xs.try_into().expect("32 values");
                    let v: [__m256; 4] = core::array::from_fn(|i| {
                        // SAFETY: values 8i..8i + 8 lie inside the 32 of `xs`; loadu has no
                        // alignment requirement.
                        unsafe { _mm256_loadu_ps(xs.as_ptr().add(8 * i)) }
                    });
                    let abs = |v: __m256| _mm256_and_ps(v, magnitude);
                    let m = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
                    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
                    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
                    let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
                    let q: [__m256i; 4] = core::array::from_fn(|i| {
                        let scaled = _mm256_mul_ps(v[i], id);
                        _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(scaled))
                    });
                    // Packing works within 128-bit halves: the dwords come out as values 0-3,
                    // 8-11, 16-19, 24-27, 4-7, 12-15, 20-23, 28-31, put back in order.
                    let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
                    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                    let quants: &mut [u8; 32] = (&mut block[quants_at..]).try_into().expect("32 quants");
                    // SAFETY: `quants` is 32 bytes; storeu has no alignment requirement.
                    unsafe { _mm256_storeu_si256(quants.as_mut_ptr().cast(), bytes) };
                    let d = amax / 127.0;
                    block[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
                    if with_sum {
                        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                        let sum = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256::<1>(sum));
                        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b01_00_11_10>(sum));
                        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32::<0b10_11_00_01>(sum)));
                        block[2..4].copy_from_slice(&f16_bits(sum as f32 * d).to_le_bytes());
                    }
                }
            }

            /// Q8_K blocks of `x` into `out` (292 bytes each: `d` as f32, 256 quants, then the
            /// i16 sums of each 16), bit for bit as the scalar `BlockQ8K::quantize` makes them:
            /// the largest magnitude by `max` (the same in any order), the first value of that
            /// magnitude for the sign, the same scalar `-127 / max`, products rounded to nearest
            /// even (as `nearest_int` rounds the values these take), the same clamp at 127. A
            /// block with a NaN, or whose largest magnitude is 0, under 1e-30 or infinite, goes
            /// through the scalar code, which defines those.
            #[target_feature(enable = $features)]
            fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
                use crate::quant::kquants::BlockQ8K;
                use crate::quant::block::ActBlock;
                let magnitude = _mm256_set1_ps(f32::from_bits(0x7FFF_FFFF));
                for (xs, block) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
                    let xs: &[f32; 256] = xs.try_into().expect("256 values");
                    let block: &mut [u8; 292] = block.try_into().expect("292 bytes");
                    let load = |i: usize| {
                        let run: &[f32; 8] = xs[8 * i..8 * i + 8].try_into().expect("8");
                        // SAFETY: `run` is 8 f32; loadu has no alignment requirement.
                        unsafe { _mm256_loadu_ps(run.as_ptr()) }
                    };
                    let (mut amax, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                    for i in 0..32 {
                        let v = load(i);
                        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                        amax = _mm256_max_ps(_mm256_and_ps(v, magnitude), amax);
                    }
                    let m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps::<1>(amax));
                    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
                    if _mm256_movemask_ps(nan) != 0 || !(1e-30..=f32::MAX).contains(&amax) {
                        BlockQ8K::quantize(xs).write(block);
                        continue;
                    }
                    let max = *xs.iter().find(|v| v.abs() == amax).expect("the largest magnitude is a value's");
                    let iscale = -127.0 / max;
                    let (scale, top) = (_mm256_set1_ps(iscale), _mm256_set1_epi32(127));
                    let (quants, sums) = block[4..].split_at_mut(256);
                    for run in 0..8 {
                        let q: [__m256i; 4] = core::array::from_fn(|k| {
                            let scaled = _mm256_mul_ps(load(4 * run + k), scale);
                            _mm256_min_epi32(_mm256_cvtps_epi32(scaled), top)
                        });
                        // Packing works within 128-bit halves (see `quantize_q8`).
                        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
                        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                        let out: &mut [u8; 32] = (&mut quants[32 * run..32 * run + 32]).try_into().expect("32");
                        // SAFETY: `out` is 32 bytes; storeu has no alignment requirement.
                        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes) };
                        for half in 0..2 {
                            let sum = _mm256_add_epi32(q[2 * half], q[2 * half + 1]);
                            let sum = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256::<1>(sum));
                            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b01_00_11_10>(sum));
                            let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32::<0b10_11_00_01>(sum)));
                            let at = 2 * (2 * run + half);
                            sums[at..at + 2].copy_from_slice(&(sum as i16).to_le_bytes());
                        }
                    }
                    block[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
                }
            }

            /// `dst[c * dst_stride + r] = src[r * src_stride + c]` (see `quant::transpose`):
            /// squares of 8 x 8 values through registers (eight loads, 24 shuffles, eight
            /// stores), the rows and columns past the whole squares one value at a time.
            #[target_feature(enable = $features)]
            fn transpose(src: &[f32], src_stride: usize, rows: usize, cols: usize, dst: &mut [f32], dst_stride: usize) {
                let (whole_rows, whole_cols) = (rows / 8 * 8, cols / 8 * 8);
                for r in (0..whole_rows).step_by(8) {
                    for c in (0..whole_cols).step_by(8) {
                        let mut v = [_mm256_setzero_ps(); 8];
                        for (i, v) in v.iter_mut().enumerate() {
                            let run: &[f32; 8] = src[(r + i) * src_stride + c..][..8].try_into().expect("8");
                            // SAFETY: `run` is 8 f32; loadu has no alignment requirement.
                            *v = unsafe { _mm256_loadu_ps(run.as_ptr()) };
                        }
                        // Pairs of rows interleaved, then fours, then 128-bit halves: out[j] is
                        // column c + j of the eight rows.
                        let mut t = [_mm256_setzero_ps(); 8];
                        for k in 0..4 {
                            t[2 * k] = _mm256_unpacklo_ps(v[2 * k], v[2 * k + 1]);
                            t[2 * k + 1] = _mm256_unpackhi_ps(v[2 * k], v[2 * k + 1]);
                        }
                        // q[4g + k]: rows 4g..4g + 4 of columns k (low half) and 4 + k (high).
                        let mut q = [_mm256_setzero_ps(); 8];
                        for g in 0..2 {
                            let (lo, hi, lo2, hi2) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
                            q[4 * g] = _mm256_shuffle_ps::<0x44>(lo, lo2);
                            q[4 * g + 1] = _mm256_shuffle_ps::<0xEE>(lo, lo2);
                            q[4 * g + 2] = _mm256_shuffle_ps::<0x44>(hi, hi2);
                            q[4 * g + 3] = _mm256_shuffle_ps::<0xEE>(hi, hi2);
                        }
                        let mut out = [_mm256_setzero_ps(); 8];
                        for k in 0..4 {
                            out[k] = _mm256_permute2f128_ps::<0x20>(q[k], q[4 + k]);
                            out[4 + k] = _mm256_permute2f128_ps::<0x31>(q[k], q[4 + k]);
                        }
                        for (j, column) in out.iter().enumerate() {
                            let run: &mut [f32; 8] = (&mut dst[(c + j) * dst_stride + r..][..8]).try_into().expect("8");
                            // SAFETY: `run` is 8 f32; storeu has no alignment requirement.
                            unsafe { _mm256_storeu_ps(run.as_mut_ptr(), *column) };
                        }
                    }
                }
                for r in 0..rows {
                    let from = if r < whole_rows { whole_cols } else { 0 };
                    for c in from..cols {
                        dst[c * dst_stride + r] = src[r * src_stride + c];
                    }
                }
            }

            /// `gate[i] = silu(gate[i]) * up[i]` as ggml's AVX2 builds compute SwiGLU: eight
            /// values at a time as `x / (1 + exp(-x)) * up` with the vector [`exp`]. The last
            /// `len % 8` take the same `exp` one lane at a time (ggml's take `expf`), so that
            /// every value's result is the same wherever a split of the work puts it.
            #[target_feature(enable = $features)]
            fn silu_mul(gate: &mut [f32], up: &[f32]) {
                let body = gate.len() / 8 * 8;
                let (one, zero) = (_mm256_set1_ps(1.0), _mm256_setzero_ps());
                for (g, u) in gate[..body].chunks_exact_mut(8).zip(up[..body].chunks_exact(8)) {
                    let (g, u): (&mut [f32; 8], &[f32; 8]) = (g.try_into().expect("8"), u.try_into().expect("8"));
                    // SAFETY: `g` and `u` are 8 f32 each; loadu has no alignment requirement.
                    let (x, up) = unsafe { (_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(u.as_ptr())) };
                    let silu = _mm256_div_ps(x, _mm256_add_ps(one, exp(_mm256_sub_ps(zero, x))));
                    // SAFETY: as above; storeu has no alignment requirement.
                    unsafe { _mm256_storeu_ps(g.as_mut_ptr(), _mm256_mul_ps(silu, up)) };
                }
                for (g, &u) in gate[body..].iter_mut().zip(&up[body..]) {
                    *g = crate::quant::simd::vexp::silu_mul_lane(*g, u);
                }
            }

            /// `gate[i] = gelu(gate[i]) * up[i]` (see `quant::gelu_mul`) eight values at a time:
            /// each rounded to f16 to nearest even (`vcvtps2ph`, as the scalar `f16::from_f32`),
            /// its table entry gathered and widened, the saturation outside [-10, 10] by compare
            /// and blend. The last `len % 8` go through the scalar lane.
            #[target_feature(enable = $features)]
            fn gelu_mul(gate: &mut [f32], up: &[f32], table: &[u16; crate::quant::GELU_TABLE_LEN]) {
                let body = gate.len() / 8 * 8;
                let (low, high) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
                for (g, u) in gate[..body].chunks_exact_mut(8).zip(up[..body].chunks_exact(8)) {
                    let (g, u): (&mut [f32; 8], &[f32; 8]) = (g.try_into().expect("8"), u.try_into().expect("8"));
                    // SAFETY: `g` and `u` are 8 f32 each; loadu has no alignment requirement.
                    let (x, up) = unsafe { (_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(u.as_ptr())) };
                    let index = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
                    // SAFETY: lane i reads the 4 bytes of entries index[i] and index[i] + 1 of
                    // `table`: index[i] < 2^16, and the table has 2^16 + 1 entries.
                    let entries = unsafe { _mm256_i32gather_epi32::<2>(table.as_ptr().cast(), index) };
                    let entries = _mm256_and_si256(entries, _mm256_set1_epi32(0xFFFF));
                    let f16s = _mm_packus_epi32(_mm256_castsi256_si128(entries), _mm256_extracti128_si256::<1>(entries));
                    let y = _mm256_blendv_ps(_mm256_cvtph_ps(f16s), x, _mm256_cmp_ps::<_CMP_GE_OQ>(x, high));
                    let y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, low), y);
                    // SAFETY: as above; storeu has no alignment requirement.
                    unsafe { _mm256_storeu_ps(g.as_mut_ptr(), _mm256_mul_ps(y, up)) };
                }
                for (g, &u) in gate[body..].iter_mut().zip(&up[body..]) {
                    *g = crate::quant::gelu_lane(*g, table) * u;
                }
            }

            /// Softmax of `x` in place with the arithmetic of the scalar one (`quant::softmax`):
            /// `e^(x - max)` as glibc's `expf` gives it (`simd::expf`), eight values at a time,
            /// added to an f64 sum one by one in order, then every value times `1 / sum` rounded
            /// to f32. (libm's `expf` one value at a time had been two fifths of attention.)
            #[target_feature(enable = $features)]
            fn softmax(x: &mut [f32]) {
                super::align_spills();
                let body = x.len() / 8 * 8;
                let mut lanes_max = _mm256_set1_ps(f32::NEG_INFINITY);
                for c in x[..body].chunks_exact(8) {
                    // SAFETY: `c` is 8 f32; loadu has no alignment requirement.
                    lanes_max = _mm256_max_ps(lanes_max, unsafe { _mm256_loadu_ps(c.as_ptr()) });
                }
                // The maximum is exact, so its order does not matter; a NaN fails every
                // comparison of the vector path and goes through `lane`.
                let max = f32_lanes(lanes_max).into_iter().chain(x[body..].iter().copied()).fold(f32::NEG_INFINITY, f32::max);
                let table = crate::quant::simd::expf::table();
                let mut sum = 0.0f64;
                for c in x[..body].chunks_exact_mut(8) {
                    let c: &mut [f32; 8] = c.try_into().expect("8");
                    // SAFETY: `c` is 8 f32; loadu has no alignment requirement.
                    let v = _mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, _mm256_set1_ps(max));
                    let in_range = _mm256_cmp_ps::<_CMP_GE_OQ>(v, _mm256_set1_ps(crate::quant::simd::expf::UNDERFLOW));
                    if _mm256_movemask_ps(in_range) == 0xFF {
                        let e = _mm256_set_m128(
                            expf4(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)), table),
                            expf4(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), table),
                        );
                        // SAFETY: as above; storeu has no alignment requirement.
                        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
                    } else {
                        let lanes = f32_lanes(v);
                        c.iter_mut().zip(lanes).for_each(|(o, v)| *o = crate::quant::simd::expf::lane(v));
                    }
                    for &e in c.iter() {
                        sum += e as f64;
                    }
                }
                for v in &mut x[body..] {
                    *v = crate::quant::simd::expf::lane(*v - max);
                    sum += *v as f64;
                }
                let inv = (1.0 / sum) as f32;
                x.iter_mut().for_each(|v| *v *= inv);
            }

            /// `simd::expf::lane` of four values in [`UNDERFLOW`, 0] widened to f64.
            #[inline]
            #[target_feature(enable = $features)]
            fn expf4(xd: __m256d, table: &[u64; 32]) -> __m128 {
                use crate::quant::simd::expf::{C, INV_LN2_N, SHIFT};
                let set = _mm256_set1_pd;
                let z = _mm256_mul_pd(set(INV_LN2_N), xd);
                let kd = _mm256_add_pd(z, set(SHIFT));
                let ki = _mm256_castpd_si256(kd);
                let r = _mm256_fmsub_pd(set(INV_LN2_N), xd, _mm256_sub_pd(kd, set(SHIFT)));
                let index = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
                // SAFETY: every index is in 0..32, an entry of the 32-entry table.
                let t = unsafe { _mm256_i64gather_epi64::<8>(table.as_ptr().cast(), index) };
                let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
                let y = _mm256_fmadd_pd(
                    _mm256_fmadd_pd(set(C[0]), r, set(C[1])),
                    _mm256_mul_pd(r, r),
                    _mm256_fmadd_pd(set(C[2]), r, set(1.0)),
                );
                _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
            }

            /// `e^x` per lane, as ggml's vector `expf` (see `simd::vexp`): within 1.5 ulp,
            /// infinite above 88.38, zero below -103.97. Where `|n| > 126`, `2^n` alone would
            /// overflow or flush, so the scale is applied in two factors.
            #[inline]
            #[target_feature(enable = $features)]
            fn exp(x: __m256) -> __m256 {
                use crate::quant::simd::vexp::*;
                let set = _mm256_set1_ps;
                let z = _mm256_fmadd_ps(x, set(LOG2E), set(SHIFT));
                let n = _mm256_sub_ps(z, set(SHIFT));
                let b = _mm256_fnmadd_ps(n, set(LN2_LO), _mm256_fnmadd_ps(n, set(LN2_HI), x));
                // n in the exponent field: 2^n once 1.0's bits are added.
                let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
                let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(set(1.0))));
                let abs_n = _mm256_andnot_ps(set(-0.0), n);
                let scaled_twice = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, set(126.0));
                let u = _mm256_mul_ps(b, b);
                let p = _mm256_fmadd_ps(
                    _mm256_fmadd_ps(_mm256_fmadd_ps(set(C4), b, set(C3)), u, _mm256_fmadd_ps(set(C2), b, set(C1))),
                    u,
                    _mm256_mul_ps(set(C0), b),
                );
                if _mm256_movemask_ps(scaled_twice) == 0 {
                    return _mm256_fmadd_ps(p, k, k);
                }
                let bias = _mm256_and_si256(
                    _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
                    _mm256_set1_epi32(0x8200_0000u32 as i32),
                );
                let s1 = _mm256_castsi256_ps(_mm256_add_epi32(bias, _mm256_set1_epi32(0x7f00_0000)));
                let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, bias));
                let out_of_range = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, set(192.0));
                let two_step = _mm256_mul_ps(_mm256_fmadd_ps(s2, p, s2), s1);
                let in_range = _mm256_blendv_ps(_mm256_fmadd_ps(k, p, k), two_step, scaled_twice);
                _mm256_blendv_ps(in_range, _mm256_mul_ps(s1, s1), out_of_range)
            }

            /// `x` rounded to f16 (to nearest even, as `half`'s conversion).
            #[inline]
            #[target_feature(enable = $features)]
            fn f16_bits(x: f32) -> u16 {
                _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16
            }

            /// Asks for the `len` weight bytes [`super::DECODE_PREFETCH_BYTES`] after `at`, into
            /// the cache levels [`super::decode_prefetch`] chose for this CPU.
            #[inline]
            #[target_feature(enable = $features)]
            fn prefetch_ahead(at: *const u8, len: usize) {
                prefetch_into(super::decode_prefetch(), at.wrapping_add(super::DECODE_PREFETCH_BYTES), len);
            }

            /// [`prefetch_lines`] with the hint of `levels`.
            #[inline]
            #[target_feature(enable = $features)]
            fn prefetch_into(levels: super::DecodePrefetch, at: *const u8, len: usize) {
                match levels {
                    super::DecodePrefetch::NonTemporal => prefetch_lines::<_MM_HINT_NTA>(at, len),
                    super::DecodePrefetch::Outer => prefetch_lines::<_MM_HINT_T2>(at, len),
                    super::DecodePrefetch::Every => prefetch_lines::<_MM_HINT_T0>(at, len),
                }
            }

            /// Asks for the cache lines of the `len` bytes at `at` (one prefetch per 64 bytes),
            /// with `HINT` (`_MM_HINT_T0`, into every level; `_MM_HINT_NTA`, non-temporal).
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) fn prefetch_lines<const HINT: i32>(at: *const u8, len: usize) {
                for line in (0..len).step_by(64) {
                    // A prefetch does not fault, whatever the address.
                    _mm_prefetch::<HINT>(at.wrapping_add(line).cast());
                }
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

            /// Whether the running CPU has every feature these kernels are compiled for.
            pub(crate) fn available() -> bool {
                $features.split(',').all(|f| match f {
                    "avx2" => is_x86_feature_detected!("avx2"),
                    "fma" => is_x86_feature_detected!("fma"),
                    "f16c" => is_x86_feature_detected!("f16c"),
                    "avx512f" => is_x86_feature_detected!("avx512f"),
                    "avx512bw" => is_x86_feature_detected!("avx512bw"),
                    "avx512vl" => is_x86_feature_detected!("avx512vl"),
                    "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
                    _ => false,
                })
            }

            /// Per i32 lane: `acc + sum of the four products u[i] * s[i]` (u unsigned, s signed).
            #[inline]
            #[target_feature(enable = $features)]
            fn dot_u8_i8($acc: __m256i, $u: __m256i, $s: __m256i) -> __m256i $dot_u8_i8

            /// Per i32 lane: `acc + a[2i] * b[2i] + a[2i+1] * b[2i+1]` over i16 lanes.
            #[inline]
            #[target_feature(enable = $features)]
            fn madd_i16($acc2: __m256i, $a: __m256i, $b: __m256i) -> __m256i $madd_i16

            #[inline]
            #[target_feature(enable = $features)]
            pub(super) fn hsum(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }

            /// Stores the horizontal sum of the row before, `pending`, which `next` replaces (None
            /// after the last row). Decode kernels leave each row's sum until the next row's
            /// products are issued: in program order it then follows work that does not depend
            /// on it, instead of holding up retirement behind the row's last multiply-adds. On
            /// Zen 3, in cache, ns per block: Q4_1 at 576 columns 1.51 -> 1.24, Q5_0 2.02 -> 1.72,
            /// Q8_0 1.48 -> 1.28, Q4_K at 1536 8.25 -> 7.44, Q6_K 10.85 -> 9.93.
            #[inline]
            #[target_feature(enable = $features)]
            fn sum_later<'o>(pending: &mut Option<(&'o mut f32, __m256)>, next: Option<(&'o mut f32, __m256)>) {
                if let Some((o, acc)) = std::mem::replace(pending, next) {
                    *o = hsum(acc);
                }
            }

            /// 32 bytes of a block starting at `at`.
            #[inline]
            #[target_feature(enable = $features)]
            fn load32<const N: usize>(b: &[u8; N], at: usize) -> __m256i {
                assert!(at + 32 <= N);
                // SAFETY: the 32 bytes at `at` lie inside `b` (asserted); loadu has no alignment
                // requirement.
                unsafe { _mm256_loadu_si256(b.as_ptr().add(at).cast()) }
            }

            /// 16 bytes of a block starting at `at`.
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) fn load16<const N: usize>(b: &[u8; N], at: usize) -> __m128i {
                assert!(at + 16 <= N);
                // SAFETY: the 16 bytes at `at` lie inside `b` (asserted); loadu has no alignment
                // requirement.
                unsafe { _mm_loadu_si128(b.as_ptr().add(at).cast()) }
            }

            /// Blocks `i..i + COUNT` of `data` as fixed-size arrays, behind one bounds check (a
            /// check per block, with its compare and branch, was a third of a decode kernel's
            /// instructions).
            #[inline(always)]
            fn blocks<const N: usize, const COUNT: usize>(data: &[u8], i: usize) -> &[[u8; N]; COUNT] {
                data.as_chunks::<N>().0[i..i + COUNT].try_into().expect("COUNT blocks")
            }

            /// Block `i` of `data` as a fixed-size array.
            #[inline(always)]
            fn block<const N: usize>(data: &[u8], i: usize) -> &[u8; N] {
                data[i * N..(i + 1) * N].try_into().expect("block in range")
            }

            /// The 32 nibbles of 16 bytes as bytes 0..16: low nibbles are elements 0..16, high
            /// nibbles 16..32 (the order of the 32-value formats).
            #[inline]
            #[target_feature(enable = $features)]
            fn nibbles32(qs: __m128i) -> __m256i {
                _mm256_and_si256(nibbles32_unmasked(qs), _mm256_set1_epi8(0x0F))
            }

            /// The 32 nibbles of 16 bytes in [`nibbles32`]'s order, the high ones left in place
            /// (16 times their value) so that no shift is needed: for products summed in 32 bits
            /// ([`dot_u8_i8`] without a 16-bit step, as AVX-512 VNNI's `vpdpbusd`), whose upper
            /// halves [`lane_sums_high16`] divides by 16. On Zen 4 the per-block shift ran on
            /// the two pipes the horizontal sums need too.
            #[inline]
            #[target_feature(enable = $features)]
            fn nibbles32_high16(qs: __m128i) -> __m256i {
                let masks = _mm256_set_m128i(_mm_set1_epi8(0xF0u8 as i8), _mm_set1_epi8(0x0F));
                _mm256_and_si256(_mm256_broadcastsi128_si256(qs), masks)
            }

            /// [`nibbles32`] before the upper four bits of each byte are cleared.
            #[inline]
            #[target_feature(enable = $features)]
            fn nibbles32_unmasked(qs: __m128i) -> __m256i {
                // The 16 bytes in both halves (a broadcast load, where `qs` was just loaded),
                // the upper half shifted down a nibble: one shift where splitting and inserting
                // took two instructions, one of them on the single port lane crossings use.
                let both = _mm256_broadcastsi128_si256(qs);
                _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0))
            }

            /// Q5_0/Q5_1's 32 quants: the nibbles of `raw` ([`nibbles32_unmasked`]), with 16
            /// added to byte `j` where bit `j` of `bits` (the fifth bits) is set.
            #[inline]
            #[target_feature(enable = $features)]
            fn quants5($raw: __m256i, $bits: u32) -> __m256i $quants5

            /// 32 Q8_0 weights (signed bytes) as [`q8_0_dot`] takes them.
            #[inline]
            #[target_feature(enable = $features)]
            fn q8_0_weights($w8: __m256i) -> __m256i $q8_0_weights

            /// Per i32 lane: `acc + sum of the four products w[i] * a[i]` for weights from
            /// [`q8_0_weights`] and signed activations, less `Q8_0_OFFSET * sum(a)`.
            #[inline]
            #[target_feature(enable = $features)]
            fn q8_0_dot($acc3: __m256i, $wq: __m256i, $aq: __m256i) -> __m256i $q8_0_dot

            /// What [`q8_0_dot`] adds per activation (taken off from the row's quant sums).
            const Q8_0_OFFSET: i32 = $q8_0_offset;

            /// [`nibble_pairs`]' split of one vector: even lanes' low nibbles, odd lanes' high.
            #[inline]
            #[target_feature(enable = $features)]
            fn q4_k_pair_nibbles($qn: __m256i) -> __m256i $q4_k_pair_nibbles

            /// Undoes whatever scale [`q4_k_pair_nibbles`] left on odd lanes' sums.
            #[inline]
            #[target_feature(enable = $features)]
            fn q4_k_pair_unscale($qu: __m256i) -> __m256i $q4_k_pair_unscale

            /// Integer sums of narrow quants' products, per 32-bit lane: `acc` plus the four
            /// products of unsigned quants `u` (4-bit; or 5-bit, see [`NARROW_I16`]) and
            /// activations `s` (|s| <= 128), in whatever integer lanes this instruction set
            /// accumulates them in. A lane takes at most 32 products of 4-bit quants (8 steps)
            /// before [`narrow_scale`] or [`narrow_widen`].
            #[inline]
            #[target_feature(enable = $features)]
            fn narrow_dot($nacc: __m256i, $nu: __m256i, $ns: __m256i) -> __m256i $narrow_dot

            /// Adds two of [`narrow_dot`]'s sums.
            #[inline]
            #[target_feature(enable = $features)]
            fn narrow_add($nx: __m256i, $ny: __m256i) -> __m256i $narrow_add

            /// Eight 6-bit scales (bytes 0..8 of `packed`, scale `l` for 32-bit lane `l`) as
            /// [`narrow_scale`] takes them.
            #[inline]
            #[target_feature(enable = $features)]
            fn narrow_scales($np: __m128i) -> __m256i $narrow_scales

            /// Per 32-bit lane, [`narrow_dot`]'s sum times the lane's scale
            /// ([`narrow_scales`]): an exact i32.
            #[inline]
            #[target_feature(enable = $features)]
            fn narrow_scale($nsums: __m256i, $nsc: __m256i) -> __m256i $narrow_scale

            /// Per 32-bit lane, [`narrow_dot`]'s sum as an i32.
            #[inline]
            #[target_feature(enable = $features)]
            fn narrow_widen($nw: __m256i) -> __m256i $narrow_widen

            /// Whether [`narrow_dot`] sums in i16 lanes: then a lane takes at most 16 products
            /// of 5-bit quants (4 steps) before it is widened.
            const NARROW_I16: bool = $narrow_i16;

            /// The words at bytes `0..2 * J` of each of the eight `B`-byte blocks of `group`
            /// (word `j` of block `k` in word lane `8 * j + k`), where this instruction set
            /// moves them with a vector permute (a block's scales: see [`weight_scales`]).
            #[inline]
            #[target_feature(enable = $features)]
            fn group_words<const $gb: usize, const $gj: usize>($gw: &[u8]) -> Option<__m256i> $group_words

            /// [`q4_k_rows8_scales`] of an interleaved Q4_K group's eight heads (its first 128
            /// bytes, `quant::interleave`), where this instruction set unpacks them with vector
            /// permutes of the whole 128 bytes (which [`q4_k_rows8`] takes where
            /// `eight_head_unpack_pays`).
            #[inline]
            #[target_feature(enable = $features)]
            fn q4_k_heads8($qh: &[u8; 128]) -> Option<Q4KRows8Scales> $q4_k_heads8

            /// Whether [`q4_k_heads8`] gives [`q4_k_rows8_scales`]'s values, bit for bit, for the
            /// group of interleaved Q4_K rows `group` (None: this set has no such unpack). A test
            /// hook: the kernels take it only where `eight_head_unpack_pays`, and the tests
            /// check it on every CPU with the set.
            #[cfg(test)]
            pub(crate) fn eight_head_unpack_agrees(group: &[u8; 8 * sizes::Q4_K]) -> Option<bool> {
                #[target_feature(enable = $features)]
                fn agrees(group: &[u8; 8 * sizes::Q4_K]) -> Option<bool> {
                    let ([d, dmin], scales, mins) = q4_k_heads8(group[..128].try_into().expect("128 bytes"))?;
                    let heads: [&[u8; 20]; 8] = std::array::from_fn(|r| group[16 * r..16 * r + 20].try_into().expect("20 bytes"));
                    let ([d_rows, dmin_rows], scales_rows, mins_rows) = q4_k_rows8_scales(heads);
                    let bytes = |v: __m128i| {
                        let mut b = [0u8; 16];
                        // SAFETY: `b` is 16 bytes; storeu has no alignment requirement.
                        unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) };
                        b
                    };
                    let bits = |v: __m256| f32_lanes(v).map(f32::to_bits);
                    Some(
                        bits(d) == bits(d_rows)
                            && bits(dmin) == bits(dmin_rows)
                            && (0..4).all(|k| bytes(scales[k]) == bytes(scales_rows[k]) && bytes(mins[k]) == bytes(mins_rows[k])),
                    )
                }
                assert!(available(), "the CPU has the set's features");
                // SAFETY: the CPU has every feature `agrees` is compiled for (asserted).
                unsafe { agrees(group) }
            }

            kernel_entries!($features; dot_rows_q8_0, dot_batch_q8_0, tile q8_0, q8_0_rows, 32, sizes::Q8_0, sizes::Q8_0, GgmlType::Q8_0);
            kernel_entries!($features; dot_rows_q4_0, dot_batch_q4_0, tile q4_0, q4_0_rows, 32, sizes::Q4_0, sizes::Q8_0, GgmlType::Q8_0);
            kernel_entries!($features; dot_rows_q4_1, dot_batch_q4_1, tile q4_1, q4_1_rows, 32, sizes::Q4_1, sizes::Q8_1, GgmlType::Q8_1);
            kernel_entries!($features; dot_rows_q5_0, dot_batch_q5_0, tile q5_0, q5_0_rows, 32, sizes::Q5_0, sizes::Q8_0, GgmlType::Q8_0);
            kernel_entries!($features; dot_rows_q5_1, dot_batch_q5_1, tile q5_1, q5_1_rows, 32, sizes::Q5_1, sizes::Q8_1, GgmlType::Q8_1);

            #[target_feature(enable = $features)]
            fn dot_rows_q4_k(cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]) {
                super::align_spills();
                let nb = cols / 256;
                let mut pending = None;
                for (o, w) in out.iter_mut().zip(weights.chunks_exact(nb * sizes::Q4_K)) {
                    sum_later(&mut pending, Some((o, q4_k(nb, w, act))));
                }
                sum_later(&mut pending, None);
            }

            /// Q4_K by groups of eight weight rows (a last smaller group repeats its last row in
            /// the spare lanes), each against passes of tokens ([`q4_k_rows8_passes`]); a last
            /// single token goes through the one-row kernel, which is faster on the file's layout.
            #[target_feature(enable = $features)]
            fn dot_batch_q4_k(cols: usize, weights: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
                let nb = cols / 256;
                let row_bytes = nb * sizes::Q4_K;
                let act_bytes = crate::quant::simd_act_row_bytes(GgmlType::Q8_K, sizes::Q8_K, nb);
                let act = |t: usize| &acts[t * act_bytes..(t + 1) * act_bytes];
                let rows = out.len() / n_tokens;
                // Decode fetches the next eight rows into the outer levels where it does so for
                // one row, and into every level elsewhere.
                let decode_levels = match super::decode_prefetch() {
                    super::DecodePrefetch::Outer => super::DecodePrefetch::Outer,
                    _ => super::DecodePrefetch::Every,
                };
                for first in (0..rows).step_by(8) {
                    let w: [&[u8]; 8] = std::array::from_fn(|k| {
                        let r = (first + k).min(rows - 1);
                        &weights[r * row_bytes..(r + 1) * row_bytes]
                    });
                    let live = (rows - first).min(8);
                    let ahead = weights.as_ptr().wrapping_add((first + 8) * row_bytes);
                    let done = q4_k_rows8_passes::<false>(nb, w, (ahead, decode_levels), act, n_tokens, |t, lanes| {
                        for (k, &v) in lanes[..live].iter().enumerate() {
                            out[(first + k) * n_tokens + t] = v;
                        }
                    });
                    for t in done..n_tokens {
                        let mut pending = None;
                        let column = out[first * n_tokens + t..].iter_mut().step_by(n_tokens);
                        for (o, w) in column.zip(&w[..live]) {
                            sum_later(&mut pending, Some((o, q4_k(nb, w, act(t)))));
                        }
                        sum_later(&mut pending, None);
                    }
                }
            }

            /// [`dot_batch_q4_k`] for groups of eight rows interleaved by
            /// `quant::interleave_rows8`, with the same results. Every token, a single one
            /// (decode) included, goes through [`q4_k_rows8`]: the interleaved layout has no
            /// row of its own for the one-row kernel, and needs none (its quants come
            /// transposed).
            #[target_feature(enable = $features)]
            fn dot_batch_q4_k_interleaved(cols: usize, weights: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
                let nb = cols / 256;
                let act_bytes = crate::quant::simd_act_row_bytes(GgmlType::Q8_K, sizes::Q8_K, nb);
                let act = |t: usize| &acts[t * act_bytes..(t + 1) * act_bytes];
                let decode = super::stream_decode_prefetch();
                let blocks_ahead =
                    if n_tokens <= super::SEQUENCES_PREFETCHED { decode.blocks_ahead } else { super::PREFILL_BLOCKS_AHEAD };
                for (g, group) in weights.chunks_exact(8 * nb * sizes::Q4_K).enumerate() {
                    let ahead = group.as_ptr().wrapping_add(blocks_ahead * 8 * sizes::Q4_K);
                    let done = q4_k_rows8_passes::<true>(nb, [group; 8], (ahead, decode.hint), act, n_tokens, |t, lanes| {
                        for (r, &v) in lanes.iter().enumerate() {
                            out[(8 * g + r) * n_tokens + t] = v;
                        }
                    });
                    debug_assert_eq!(done, n_tokens);
                }
            }

            /// Eight rows (as [`q4_k_rows8`] takes them) against tokens `0..n_tokens` in passes
            /// of [`Q4_K_TOKENS_PER_PASS`], then 4 and 2 tokens, and for the interleaved layout
            /// one: `store(t, lanes)` gets token t's products of the eight rows. Returns how
            /// many tokens it took (all but a last single one on the file's layout).
            #[inline]
            #[target_feature(enable = $features)]
            // Every pass tests `t + n <= n_tokens`, a pass of one included, so that they read alike.
            #[allow(clippy::int_plus_one)]
            fn q4_k_rows8_passes<'a, const INTERLEAVED: bool>(
                nb: usize,
                w: [&[u8]; 8],
                ahead: (*const u8, super::DecodePrefetch),
                act: impl Fn(usize) -> &'a [u8],
                n_tokens: usize,
                mut store: impl FnMut(usize, &[f32; 8]),
            ) -> usize {
                let mut t = 0;
                macro_rules! passes_of {
                    ($n:expr) => {
                        while t + $n <= n_tokens {
                            let dots = q4_k_rows8::<{ $n }, INTERLEAVED>(nb, w, ahead, std::array::from_fn(|k| act(t + k)));
                            for (k, lanes) in dots.iter().enumerate() {
                                store(t + k, lanes);
                            }
                            t += $n;
                        }
                    };
                }
                passes_of!(super::Q4_K_TOKENS_PER_PASS);
                // Smaller passes for what is left (several sequences decoding a token each).
                passes_of!(4);
                passes_of!(2);
                if INTERLEAVED {
                    passes_of!(1);
                }
                t
            }

            /// This instruction set's kernel for weight type `ty` in the interleaved layout
            /// (`quant::interleave_rows8`), if it has one.
            fn interleaved_kernel(ty: GgmlType) -> Option<BatchKernel> {
                match ty {
                    GgmlType::Q4_K => Some(dot_batch_q4_k_interleaved as BatchKernel),
                    GgmlType::Q4_0 => Some(dot_batch_q4_0_interleaved as BatchKernel),
                    GgmlType::Q4_1 => Some(dot_batch_q4_1_interleaved as BatchKernel),
                    GgmlType::Q5_0 => Some(dot_batch_q5_0_interleaved as BatchKernel),
                    GgmlType::Q5_1 => Some(dot_batch_q5_1_interleaved as BatchKernel),
                    GgmlType::Q8_0 => Some(dot_batch_q8_0_interleaved as BatchKernel),
                    _ => None,
                }
            }

            kernel_entries!($features; dot_batch_q4_0_interleaved, tile q4_0_interleaved, q4_0_interleaved_rows, 32, sizes::Q4_0, sizes::Q8_0, GgmlType::Q8_0);
            kernel_entries!($features; dot_batch_q4_1_interleaved, tile q4_1_interleaved, q4_1_interleaved_rows, 32, sizes::Q4_1, sizes::Q8_1, GgmlType::Q8_1);
            kernel_entries!($features; dot_batch_q5_0_interleaved, tile q5_0_interleaved, q5_0_interleaved_rows, 32, sizes::Q5_0, sizes::Q8_0, GgmlType::Q8_0);
            kernel_entries!($features; dot_batch_q5_1_interleaved, tile q5_1_interleaved, q5_1_interleaved_rows, 32, sizes::Q5_1, sizes::Q8_1, GgmlType::Q8_1);
            kernel_entries!($features; dot_batch_q8_0_interleaved, tile q8_0_interleaved, q8_0_interleaved_rows, 32, sizes::Q8_0, sizes::Q8_0, GgmlType::Q8_0);

            kernel_entries!($features; dot_rows_q6_k, dot_batch_q6_k, q6_k, 256, sizes::Q6_K, sizes::Q8_K, GgmlType::Q8_K);

            // Each kernel takes a tile of R weight rows and N activation rows (1 x 1 in decode):
            // a weight block is decoded once and meets the N activation blocks while it is in
            // registers, an activation block loaded meets the R rows. Every (row, token) has its
            // own accumulator and the same f32 operations in the same order whatever the tile,
            // so batched and one-token results are bit-identical.

            /// The f16 at byte `at` of blocks `i..i + count` of a row of `B`-byte blocks
            /// (`count <= 8`, a constant in callers), as eight f32 (0 past `count`) by one F16C
            /// conversion. The bit patterns are packed into two 64-bit integers in general
            /// registers (idle while the vector units work) and moved in together: a gather
            /// measured ~0.45 ns per block on Zen 4, a third of a decode kernel's time.
            /// (Converting each block's scale where it is used needs its bits in a vector
            /// register, which LLVM does with `vpinsrw` into whatever register it picks; when that
            /// was an accumulator, every block waited for the previous block's sum. A partial
            /// group written to memory a value at a time and loaded as a vector stalls on the
            /// failed store forwarding, every row.)
            #[inline]
            #[target_feature(enable = $features)]
            fn f16x8_of<const B: usize>(row: &[u8], i: usize, count: usize, at: usize) -> __m256 {
                let group: &[u8] = &row[i * B..(i + count) * B];
                let bits = |k: usize| {
                    if k < count { u16::from_le_bytes(group[k * B + at..][..2].try_into().expect("2 bytes")) as u64 } else { 0 }
                };
                let lo = bits(0) | bits(1) << 16 | bits(2) << 32 | bits(3) << 48;
                let hi = bits(4) | bits(5) << 16 | bits(6) << 32 | bits(7) << 48;
                _mm256_cvtph_ps(_mm_set_epi64x(hi as i64, lo as i64))
            }

            /// `count` (at most 8, a constant in callers) four-byte entries at byte `at` of an
            /// activation row's table, as eight lanes (0 past `count`). Replaces a gather (and
            /// a conversion) per activation row and group of blocks. A partial group is a masked
            /// load (see [`f16x8_of`] on going through memory).
            #[inline]
            #[target_feature(enable = $features)]
            fn table8_of(row: &[u8], at: usize, count: usize) -> __m256i {
                if count == 8 {
                    return load32::<32>(row[at..at + 32].try_into().expect("8 entries"), 0);
                }
                let entries = &row[at..at + 4 * count];
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lanes);
                // SAFETY: the mask enables lanes 0..count only, whose 4 * count bytes `entries`
                // holds (masked-off lanes are neither read nor faulted on); no alignment needed.
                unsafe { _mm256_maskload_epi32(entries.as_ptr().cast(), mask) }
            }

            /// [`table8_of`] of an f32 column.
            #[inline]
            #[target_feature(enable = $features)]
            fn f32x8_of(row: &[u8], at: usize, count: usize) -> __m256 {
                _mm256_castsi256_ps(table8_of(row, at, count))
            }

            /// Lane `k`: the sum of the eight i32 lanes of `v[k]`: the integer dot products of
            /// eight blocks finished together, so that each block then costs one lane of a
            /// conversion and of a multiply-add.
            #[inline]
            #[target_feature(enable = $features)]
            fn lane_sums(v: [__m256i; 8]) -> __m256i {
                let [low, high] = half_sums(v);
                add_halves(low, high)
            }

            /// The first two levels of [`lane_sums`]: per 128-bit half, the lanes of the first
            /// result hold [v0, v1, v2, v3] summed over that half's four lanes, the second's
            /// [v4..v7].
            #[inline]
            #[target_feature(enable = $features)]
            fn half_sums(v: [__m256i; 8]) -> [__m256i; 2] {
                [
                    _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3])),
                    _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7])),
                ]
            }

            /// `[low's half 0 + low's half 1, high's half 0 + high's half 1]`, i32 lanes: the last
            /// level of [`lane_sums`] and [`narrow_lane_sums`].
            #[inline]
            #[target_feature(enable = $features)]
            fn add_halves(low: __m256i, high: __m256i) -> __m256i {
                _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(low, high), _mm256_permute2x128_si256::<0x31>(low, high))
            }

            /// Whether blocks of `WB` bytes hold 4-bit quants (Q4_0, Q4_1).
            const fn is_four_bit<const WB: usize>() -> bool {
                WB == sizes::Q4_0 || WB == sizes::Q4_1
            }

            /// [`lane_sums`] of eight blocks' products with [`nibbles32_high16`]'s quants, whose
            /// upper 128-bit halves hold 16 times the high nibbles' products: those halves'
            /// sums are divided by 16 (exactly: each is a multiple of 16) as the halves are
            /// added. One shift per eight blocks where [`nibbles32`] took one per block.
            #[inline]
            #[target_feature(enable = $features)]
            fn lane_sums_high16(v: [__m256i; 8]) -> __m256i {
                let [low, high] = half_sums(v);
                let low_nibbles = _mm256_permute2x128_si256::<0x20>(low, high);
                let high_nibbles16 = _mm256_permute2x128_si256::<0x31>(low, high);
                _mm256_add_epi32(low_nibbles, _mm256_srai_epi32::<4>(high_nibbles16))
            }

            /// Whether blocks of `WB` bytes hold 5-bit quants (Q5_0, Q5_1).
            const fn is_five_bit<const WB: usize>() -> bool {
                WB == sizes::Q5_0 || WB == sizes::Q5_1
            }

            /// [`lane_sums`] of eight blocks' [`narrow_dot`] sums in i16 lanes (each two
            /// products of a quant of at most 5 bits), for [`NARROW_I16`]: two levels of
            /// `vphaddw` (eight products per lane, at most 8 * 31 * 128 = 31744 < 2^15), one
            /// widening, and the halves added as there: seven fewer operations per eight blocks
            /// than widening each block.
            #[inline]
            #[target_feature(enable = $features)]
            fn narrow_lane_sums(v: [__m256i; 8]) -> __m256i {
                // Per 128-bit half, lanes hold [v0, v1, v2, v3] (and [v4..v7]) summed over the
                // half, as in [`lane_sums`] after its first two levels.
                let low = _mm256_hadd_epi16(_mm256_hadd_epi16(v[0], v[1]), _mm256_hadd_epi16(v[2], v[3]));
                let high = _mm256_hadd_epi16(_mm256_hadd_epi16(v[4], v[5]), _mm256_hadd_epi16(v[6], v[7]));
                add_halves(narrow_widen(low), narrow_widen(high))
            }

            /// The 8 x 8 transpose of four-byte lanes: lane `l` of result `j` is lane `j` of
            /// `v[l]`. Eight blocks' quants transposed this way line up with an activation row's
            /// interleaved quants (`quant::SimdTable`), so that one accumulator's lane `l`
            /// collects block `l`'s whole dot product.
            #[inline]
            #[target_feature(enable = $features)]
            fn transpose8(v: [__m256i; 8]) -> [__m256i; 8] {
                let quads = transpose_quads::<8>(v);
                std::array::from_fn(|j| {
                    if j < 4 {
                        _mm256_permute2x128_si256::<0x20>(quads[j], quads[4 + j])
                    } else {
                        _mm256_permute2x128_si256::<0x31>(quads[j - 4], quads[j])
                    }
                })
            }

            /// The first two stages of [`transpose8`] for rows `0..ROWS` (4 or 8): `quads[4h + c]`
            /// holds lane `c` (low half) and lane `c + 4` (high half) of rows `4h..4h + 4`, in
            /// lanes `0..4` and `4..8`. For four rows, `quads[0..4]` is [`transpose8`]'s result
            /// for rows 0..4 with vectors `j` and `j + 4` packed into one (see [`tile_group`]).
            #[inline]
            #[target_feature(enable = $features)]
            fn transpose_quads<const ROWS: usize>(v: [__m256i; 8]) -> [__m256i; 8] {
                let pairs: [__m256i; 8] = std::array::from_fn(|k| {
                    let (a, b) = (v[2 * (k / 2)], v[2 * (k / 2) + 1]);
                    match (2 * (k / 2) < ROWS, k % 2 == 0) {
                        (false, _) => _mm256_setzero_si256(),
                        (true, true) => _mm256_unpacklo_epi32(a, b),
                        (true, false) => _mm256_unpackhi_epi32(a, b),
                    }
                });
                std::array::from_fn(|k| {
                    let (h, c) = (k / 4, k % 4);
                    let (a, b) = (pairs[4 * h + c / 2], pairs[4 * h + 2 + c / 2]);
                    match (4 * h < ROWS, c % 2 == 0) {
                        (false, _) => _mm256_setzero_si256(),
                        (true, true) => _mm256_unpacklo_epi64(a, b),
                        (true, false) => _mm256_unpackhi_epi64(a, b),
                    }
                })
            }

            /// The activation format whose blocks are `AB` bytes (Q8_0, Q8_1 or Q8_K).
            #[inline(always)]
            const fn act_type<const AB: usize>() -> GgmlType {
                match AB {
                    sizes::Q8_0 => GgmlType::Q8_0,
                    sizes::Q8_1 => GgmlType::Q8_1,
                    _ => GgmlType::Q8_K,
                }
            }

            /// The f16 scales (`d`, and for formats with a min, against Q8_1 activations, `m`)
            /// of weight blocks `i..i + COUNT`, as f32 lanes. With `WORDS`, whole groups take the
            /// set's [`group_words`] where it has one: decode asks for it, prefill's tiles do
            /// not. (On Zen 4, AVX-512 VNNI, one thread, 896 columns: without it decode's Q4_1
            /// took 0.92 instead of 0.88 ns per block from DRAM; with it a 16-token tile took
            /// 0.41 instead of 0.39 ns per block and token for Q4_1, 0.41 instead of 0.40 for
            /// Q5_0, 0.38 instead of 0.37 for Q8_0, in cache.)
            #[inline]
            #[target_feature(enable = $features)]
            fn weight_scales<const WB: usize, const AB: usize, const COUNT: usize, const WORDS: bool>(w: &[u8], i: usize) -> [__m256; 2] {
                if WORDS && COUNT == 8 {
                    let group = &w[i * WB..(i + 8) * WB];
                    let words = if AB == sizes::Q8_1 { group_words::<WB, 2>(group) } else { group_words::<WB, 1>(group) };
                    if let Some(words) = words {
                        let d_w = _mm256_cvtph_ps(_mm256_castsi256_si128(words));
                        let m_w = if AB == sizes::Q8_1 { _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(words)) } else { _mm256_setzero_ps() };
                        return [d_w, m_w];
                    }
                }
                match AB == sizes::Q8_1 {
                    true if COUNT == 8 => f16_pairs_x8_at::<WB>(w, i),
                    true => [f16x8_of::<WB>(w, i, COUNT, 0), f16x8_of::<WB>(w, i, COUNT, 2)],
                    false => [f16x8_of::<WB>(w, i, COUNT, 0), _mm256_setzero_ps()],
                }
            }

            /// [`f16x8_at`] of the f16 pairs at bytes 0..4 of blocks `i..i + 8` (`d` and `m` of
            /// Q4_1 and Q5_1): each block's pair moves as one 32-bit word, the sixteen are
            /// converted by two F16C conversions and sorted into `d` and `m` lanes (a third of
            /// the general-register work of converting the two fields apart).
            #[inline]
            #[target_feature(enable = $features)]
            fn f16_pairs_x8_at<const B: usize>(row: &[u8], i: usize) -> [__m256; 2] {
                let group: &[u8] = &row[i * B..(i + 8) * B];
                // Each word from a four-byte slice: from four indexed bytes, LLVM assembled two
                // of the eight words a byte at a time (ten instructions each, Q4_1's decode loop
                // 101 instructions per group instead of 73).
                f16_pairs_lanes(|k| u32::from_le_bytes(group[k * B..][..4].try_into().expect("4 bytes")) as u64)
            }

            /// Eight 32-bit words of two f16 each (`word(k)`, k in 0..8), as lanes of their first
            /// halves and lanes of their second halves (see [`f16_pairs_x8_at`]).
            #[inline]
            #[target_feature(enable = $features)]
            fn f16_pairs_lanes(word: impl Fn(usize) -> u64) -> [__m256; 2] {
                // Lanes 0..4: both halves of words `low`, `low + 1`; lanes 4..8: of `high`,
                // `high + 1`. (The closures stay scalar: closures do not inherit the target
                // features, and an intrinsic in one is called, not inlined.)
                let two = |k: usize| (word(k) | word(k + 1) << 32) as i64;
                let first = _mm256_cvtph_ps(_mm_set_epi64x(two(4), two(0)));
                let second = _mm256_cvtph_ps(_mm_set_epi64x(two(6), two(2)));
                // Each 128-bit half takes two words' halves from each: words 0..4, then 4..8.
                [_mm256_shuffle_ps::<0b10_00_10_00>(first, second), _mm256_shuffle_ps::<0b11_01_11_01>(first, second)]
            }

            /// The low and the high nibbles of 32 bytes, as bytes.
            #[inline]
            #[target_feature(enable = $features)]
            fn low_high_nibbles(q: __m256i) -> [__m256i; 2] {
                let low4 = _mm256_set1_epi8(0x0F);
                [_mm256_and_si256(q, low4), _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4)]
            }

            /// Four bytes of `b` at `at`, in every i32 lane.
            #[inline]
            #[target_feature(enable = $features)]
            fn broadcast4<const N: usize>(b: &[u8; N], at: usize) -> __m256i {
                // One range check and one 4-byte load (`vpbroadcastd` from memory): four indexed
                // bytes were assembled in general registers where LLVM could not prove `at`.
                _mm256_set1_epi32(i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")))
            }

            /// The eight lanes of `v`.
            #[inline]
            #[target_feature(enable = $features)]
            fn f32_lanes(v: __m256) -> [f32; 8] {
                let mut lanes = [0.0f32; 8];
                // SAFETY: `lanes` is 8 f32 (32 bytes); storeu has no alignment requirement.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
                lanes
            }

            /// Adds to `acc` the blocks `i..i + COUNT` of one activation row whose integer dot
            /// products with the weights are `dots` (lane `k`: block `i + k`): see
            /// [`finish_lanes`], with the row's table columns at those blocks.
            #[inline]
            #[target_feature(enable = $features)]
            fn finish_group<const AB: usize, const COUNT: usize, const OFFSET: i32>(
                nb: usize,
                i: usize,
                scales: [__m256; 2],
                a: &[u8],
                dots: __m256i,
                acc: &mut __m256,
            ) {
                // Column 0: each block's d; column 1: Q8_0's quant sums, Q8_1's s.
                // (Not a closure over the columns: closures do not inherit the target features,
                // and one here was called, not inlined, and took prefill's time fourfold.)
                let d_a = &a[crate::quant::simd_column_at(act_type::<AB>(), nb, 0) + 4 * i..];
                let second = &a[crate::quant::simd_column_at(act_type::<AB>(), nb, 1) + 4 * i..];
                finish_lanes::<AB, COUNT, OFFSET>(scales, d_a, second, dots, acc);
            }

            /// Adds to `acc` `COUNT` blocks whose integer dot products with the weights are
            /// `dots` (a lane each): `d_w * d_a * (dot - OFFSET * sum(a))`, and for Q8_1
            /// activations `m_w * s_a` (the weights' min; `s_a` the activations' stored
            /// `d * sum(a)`). `[d_w, m_w]` are from [`weight_scales`]; `d_a` and `second` start at
            /// the blocks' entries in the activation row's table columns 0 (d) and 1 (Q8_0's quant
            /// sums, Q8_1's s). Decode and prefill finish every group here, with the same integer
            /// sums, so their results are bit-identical.
            #[inline]
            #[target_feature(enable = $features)]
            fn finish_lanes<const AB: usize, const COUNT: usize, const OFFSET: i32>(
                [d_w, m_w]: [__m256; 2],
                d_a: &[u8],
                second: &[u8],
                dots: __m256i,
                acc: &mut __m256,
            ) {
                let dots = if OFFSET != 0 {
                    let a_sums = table8_of(second, 0, COUNT);
                    _mm256_sub_epi32(dots, _mm256_mullo_epi32(a_sums, _mm256_set1_epi32(OFFSET)))
                } else {
                    dots
                };
                let d = _mm256_mul_ps(d_w, f32x8_of(d_a, 0, COUNT));
                *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dots), *acc);
                if AB == sizes::Q8_1 {
                    *acc = _mm256_fmadd_ps(m_w, f32x8_of(second, 0, COUNT), *acc);
                }
            }

            /// 32-value blocks of unsigned weights `q` (0..=31, from `quants`; Q8_0's offset to
            /// unsigned or not, with `Q8`, see [`q8_0_dot`]) minus `OFFSET`,
            /// against Q8_0 (`AB` = 34) or, for formats with a min, Q8_1 (`AB` = 36)
            /// activations (see [`finish_group`]), R weight rows by N activation rows. The
            /// offset is taken off in integers, `OFFSET * sum(a)` from the Q8_0 row's table.
            /// Blocks go in groups of eight, a row's last `nb % 8` blocks a smaller one.
            ///
            /// One row by one (decode) multiplies each block on its own and finishes eight
            /// blocks' sums together ([`lane_sums`]). Larger tiles (prefill) take the weights'
            /// blocks transposed ([`transpose8`]) against the activation rows' interleaved
            /// quants: eight dot products fill one accumulator's lanes with no horizontal sums,
            /// each transpose serves N activation rows and each activation load R weight rows.
            #[inline]
            #[target_feature(enable = $features)]
            fn unsigned_blocks<const WB: usize, const AB: usize, const R: usize, const N: usize, const OFFSET: i32, const Q8: bool>(
                nb: usize,
                w: [&[u8]; R],
                a: [&[u8]; N],
                quants: impl Fn(&[u8; WB]) -> __m256i,
            ) -> [[f32; N]; R] {
                let whole = nb - nb % 8;
                if R == 1 && N == 1 {
                    let sum = hsum(one_row::<WB, AB, OFFSET, Q8>(nb, w[0], a[0], &quants));
                    return [[sum; N]; R];
                }
                let mut acc = [[_mm256_setzero_ps(); N]; R];
                for i in (0..whole).step_by(8) {
                    // Sequences decoding together (a few tokens) wait on DRAM as one does.
                    if N <= super::SEQUENCES_PREFETCHED {
                        w.iter().for_each(|w| prefetch_ahead(w[i * WB..].as_ptr(), 8 * WB));
                    }
                    unsigned_group::<WB, AB, R, N, 8, OFFSET, Q8>(nb, w, a, i, &quants, &mut acc);
                }
                with_count!(nb - whole, C => unsigned_group::<WB, AB, R, N, C, OFFSET, Q8>(nb, w, a, whole, &quants, &mut acc));
                acc.map(|row| row.map(|v| hsum(v)))
            }

            /// Blocks `i..i + COUNT` of [`unsigned_blocks`], added to its accumulators.
            #[inline]
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            fn unsigned_group<
                const WB: usize,
                const AB: usize,
                const R: usize,
                const N: usize,
                const COUNT: usize,
                const OFFSET: i32,
                const Q8: bool,
            >(
                nb: usize,
                w: [&[u8]; R],
                a: [&[u8]; N],
                i: usize,
                quants: &impl Fn(&[u8; WB]) -> __m256i,
                acc: &mut [[__m256; N]; R],
            ) {
                let q: [[__m256i; 8]; R] = std::array::from_fn(|r| {
                    let w = blocks::<WB, COUNT>(w[r], i);
                    std::array::from_fn(|k| if k < COUNT { quants(&w[k]) } else { _mm256_setzero_si256() })
                });
                let scales: [[__m256; 2]; R] = std::array::from_fn(|r| weight_scales::<WB, AB, COUNT, false>(w[r], i));
                // Up to four blocks: their vectors j and j + 4 packed into one ([`tile_group`]).
                let q = q.map(|q| if COUNT <= 4 { transpose_quads::<4>(q) } else { transpose8(q) });
                tile_group::<WB, AB, R, N, COUNT, OFFSET, Q8>(nb, a, i, &q, &scales, acc);
            }

            /// The products of R weight rows' blocks `i..i + COUNT`, whose quants `q[r]` come
            /// transposed ([`transpose8`]) and scales as [`weight_scales`] gives them, with N
            /// activation rows' interleaved quants, added to `acc`.
            #[inline]
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            fn tile_group<
                const WB: usize,
                const AB: usize,
                const R: usize,
                const N: usize,
                const COUNT: usize,
                const OFFSET: i32,
                const Q8: bool,
            >(
                nb: usize,
                a: [&[u8]; N],
                i: usize,
                q: &[[__m256i; 8]; R],
                scales: &[[__m256; 2]; R],
                acc: &mut [[__m256; N]; R],
            ) {
                let at = crate::quant::simd_interleaved_at(act_type::<AB>(), nb) + 32 * i;
                for t in 0..N {
                    let group: &[u8; 256] = a[t][at..at + 256].try_into().expect("an interleaved group");
                    let act: [__m256i; 8] = std::array::from_fn(|j| load32(group, 32 * j));
                    if COUNT <= 4 {
                        // Lanes 4..8 of every vector would multiply zeros: vector j carries
                        // vector j + 4's lanes 0..4 there instead (the weights' packed by
                        // [`transpose_quads`]), and the two halves of the four products' sums
                        // are added. The same integers in half the products: a row's last
                        // blocks of Gemma-3's 640 columns (20 blocks) and Qwen2.5-0.5B's 896.
                        let act: [__m256i; 8] = std::array::from_fn(|j| {
                            if j < 4 { _mm256_permute2x128_si256::<0x20>(act[j], act[j + 4]) } else { _mm256_setzero_si256() }
                        });
                        for r in 0..R {
                            let halves = tile_dots::<WB, Q8, 4>(&q[r], &act);
                            let sum = _mm_add_epi32(_mm256_castsi256_si128(halves), _mm256_extracti128_si256::<1>(halves));
                            finish_group::<AB, COUNT, OFFSET>(nb, i, scales[r], a[t], _mm256_zextsi128_si256(sum), &mut acc[r][t]);
                        }
                        continue;
                    }
                    for r in 0..R {
                        let dots = tile_dots::<WB, Q8, 8>(&q[r], &act);
                        finish_group::<AB, COUNT, OFFSET>(nb, i, scales[r], a[t], dots, &mut acc[r][t]);
                    }
                }
            }

            /// [`unsigned_blocks`] of one weight row by one activation row (decode): each block
            /// multiplied on its own, eight blocks' sums finished together ([`lane_sums`]). The
            /// groups are walked as zipped fixed-size chunks of the weights, the activations and
            /// the activation table's two columns, so no access inside a group is bounds-checked
            /// (the checks were a fifth of the loop's instructions). Returns the row's eight
            /// lanes, whose [`hsum`] is the product (see [`sum_later`]).
            #[inline]
            #[target_feature(enable = $features)]
            fn one_row<const WB: usize, const AB: usize, const OFFSET: i32, const Q8: bool>(
                nb: usize,
                w: &[u8],
                a: &[u8],
                quants: &impl Fn(&[u8; WB]) -> __m256i,
            ) -> __m256 {
                let whole = nb - nb % 8;
                let d_a = &a[crate::quant::simd_column_at(act_type::<AB>(), nb, 0)..][..4 * nb];
                let second = &a[crate::quant::simd_column_at(act_type::<AB>(), nb, 1)..][..4 * nb];
                let mut acc = _mm256_setzero_ps();
                let groups = w[..whole * WB].chunks_exact(8 * WB).zip(a[..whole * AB].chunks_exact(8 * AB));
                for ((w, a), (d_a, second)) in groups.zip(d_a.chunks_exact(32).zip(second.chunks_exact(32))) {
                    prefetch_ahead(w.as_ptr(), 8 * WB);
                    one_row_group::<WB, AB, 8, OFFSET, Q8>(w, a, d_a, second, quants, &mut acc);
                }
                let (w, a) = (&w[whole * WB..nb * WB], &a[whole * AB..nb * AB]);
                let (d_a, second) = (&d_a[4 * whole..], &second[4 * whole..]);
                with_count!(nb - whole, C => one_row_group::<WB, AB, C, OFFSET, Q8>(w, a, d_a, second, quants, &mut acc));
                acc
            }

            /// `COUNT` blocks of [`one_row`], from the start of each slice.
            #[inline]
            #[target_feature(enable = $features)]
            fn one_row_group<const WB: usize, const AB: usize, const COUNT: usize, const OFFSET: i32, const Q8: bool>(
                w: &[u8],
                a: &[u8],
                d_a: &[u8],
                second: &[u8],
                quants: &impl Fn(&[u8; WB]) -> __m256i,
                acc: &mut __m256,
            ) {
                let (wb, ab) = (blocks::<WB, COUNT>(w, 0), blocks::<AB, COUNT>(a, 0));
                // 5-bit quants too since their fifth bits take one constant fewer ([`quants5`]):
                // before, the shorter reduction made the compiler spill three vectors per group
                // (Zen 3: 1.5 -> 3.0 ns per block); now it is 3% faster than widening each block.
                let narrow = NARROW_I16 && !Q8;
                let high16 = !NARROW_I16 && is_four_bit::<WB>();
                let blocks: [__m256i; 8] = std::array::from_fn(|k| {
                    if k >= COUNT {
                        return _mm256_setzero_si256();
                    }
                    let a = load32(&ab[k], AB - 32);
                    if narrow {
                        narrow_dot(_mm256_setzero_si256(), quants(&wb[k]), a)
                    } else if high16 {
                        // Q4_0's and Q4_1's 16 quant bytes end the block (after d, and m).
                        dot_u8_i8(_mm256_setzero_si256(), nibbles32_high16(load16(&wb[k], WB - 16)), a)
                    } else {
                        weights_dot::<Q8>(_mm256_setzero_si256(), quants(&wb[k]), a)
                    }
                });
                let dots = if narrow {
                    narrow_lane_sums(blocks)
                } else if high16 {
                    lane_sums_high16(blocks)
                } else {
                    lane_sums(blocks)
                };
                finish_lanes::<AB, COUNT, OFFSET>(weight_scales::<WB, AB, COUNT, true>(w, 0), d_a, second, dots, acc);
            }

            /// [`unsigned_blocks`] for 32-value weights in the interleaved layout
            /// (`quant::interleave_rows8`): a whole group's quants come transposed, with no
            /// [`transpose8`], and its scales side by side; a row's last `nb % 8` blocks, in the
            /// file's layout, go as there. Bit-identical to the file layout's products: the same
            /// integer sums, finished alike.
            #[inline]
            #[target_feature(enable = $features)]
            fn unsigned_interleaved<const WB: usize, const AB: usize, const R: usize, const N: usize, const OFFSET: i32, const Q8: bool>(
                nb: usize,
                w: [&[u8]; R],
                a: [&[u8]; N],
                quants: impl Fn(&[u8; WB]) -> __m256i,
            ) -> [[f32; N]; R] {
                let whole = nb - nb % 8;
                if R == 1 && N == 1 {
                    let sum = hsum(one_row_interleaved::<WB, AB, OFFSET, Q8>(nb, w[0], a[0], &quants));
                    return [[sum; N]; R];
                }
                let mut acc = [[_mm256_setzero_ps(); N]; R];
                for i in (0..whole).step_by(8) {
                    let groups: [&[u8]; R] = std::array::from_fn(|r| &w[r][i * WB..(i + 8) * WB]);
                    if N <= super::SEQUENCES_PREFETCHED {
                        groups.iter().for_each(|g| prefetch_ahead(g.as_ptr(), 8 * WB));
                    }
                    let q = groups.map(|g| interleaved_quants::<WB>(g));
                    let scales = groups.map(|g| interleaved_scales::<AB>(g));
                    tile_group::<WB, AB, R, N, 8, OFFSET, Q8>(nb, a, i, &q, &scales, &mut acc);
                }
                with_count!(nb - whole, C => unsigned_group::<WB, AB, R, N, C, OFFSET, Q8>(nb, w, a, whole, &quants, &mut acc));
                acc.map(|row| row.map(|v| hsum(v)))
            }

            /// [`one_row`] for 32-value weights in the interleaved layout: each whole group's
            /// eight dot products land in the lanes of one vector with no horizontal sums, against
            /// the activation row's interleaved quants.
            #[inline]
            #[target_feature(enable = $features)]
            fn one_row_interleaved<const WB: usize, const AB: usize, const OFFSET: i32, const Q8: bool>(
                nb: usize,
                w: &[u8],
                a: &[u8],
                quants: &impl Fn(&[u8; WB]) -> __m256i,
            ) -> __m256 {
                let whole = nb - nb % 8;
                let d_a = &a[crate::quant::simd_column_at(act_type::<AB>(), nb, 0)..][..4 * nb];
                let second = &a[crate::quant::simd_column_at(act_type::<AB>(), nb, 1)..][..4 * nb];
                let interleaved = &a[crate::quant::simd_interleaved_at(act_type::<AB>(), nb)..][..32 * whole];
                let mut acc = _mm256_setzero_ps();
                let groups = w[..whole * WB].chunks_exact(8 * WB).zip(interleaved.as_chunks::<256>().0);
                for ((group, act), (d_a, second)) in groups.zip(d_a.chunks_exact(32).zip(second.chunks_exact(32))) {
                    prefetch_ahead(group.as_ptr(), 8 * WB);
                    let dots = if !NARROW_I16 && is_four_bit::<WB>() {
                        interleaved_dots_high16(group, act)
                    } else {
                        let act: [__m256i; 8] = std::array::from_fn(|j| load32(act, 32 * j));
                        tile_dots::<WB, Q8, 8>(&interleaved_quants::<WB>(group), &act)
                    };
                    finish_lanes::<AB, 8, OFFSET>(interleaved_scales::<AB>(group), d_a, second, dots, &mut acc);
                }
                let (w, a) = (&w[whole * WB..nb * WB], &a[whole * AB..nb * AB]);
                let (d_a, second) = (&d_a[4 * whole..], &second[4 * whole..]);
                with_count!(nb - whole, C => one_row_group::<WB, AB, C, OFFSET, Q8>(w, a, d_a, second, quants, &mut acc));
                acc
            }

            /// The 128 quant bytes that end an interleaved group.
            #[inline(always)]
            fn interleaved_nibbles(group: &[u8]) -> &[u8; 128] {
                group[group.len() - 128..].try_into().expect("a group's 128 quant bytes")
            }

            /// An interleaved group's quants as [`transpose8`] leaves a file group's: vector `j`
            /// holds quants `4 j..4 j + 4` of block `l` in lane `l` (low nibbles for `j < 4`),
            /// with 5-bit formats' fifth bits from the group's vector of them (bit `j` of each
            /// byte: vector `j`'s), and Q8_0's as [`q8_0_weights`] makes them.
            #[inline]
            #[target_feature(enable = $features)]
            fn interleaved_quants<const WB: usize>(group: &[u8]) -> [__m256i; 8] {
                if WB == sizes::Q8_0 {
                    let quants: &[u8; 256] = group[group.len() - 256..].try_into().expect("a group's 256 quant bytes");
                    return std::array::from_fn(|j| q8_0_weights(load32(quants, 32 * j)));
                }
                let nibbles = interleaved_nibbles(group);
                let low4 = _mm256_set1_epi8(0x0F);
                let quants: [__m256i; 8] = std::array::from_fn(|j| {
                    let v = load32(nibbles, 32 * (j % 4));
                    _mm256_and_si256(if j < 4 { v } else { _mm256_srli_epi16::<4>(v) }, low4)
                });
                if !is_five_bit::<WB>() {
                    return quants;
                }
                // The fifth bits follow the f16 fields (`d`, 16 bytes; Q5_1's `m`): bit `j` of
                // a byte moved to bit 4, where it adds 16 to vector `j`'s quant. Shifts of 16-bit
                // lanes by at most 4 leave each byte's bit 4 from the same byte.
                let bits_at = crate::quant::interleave::fifth_bits_at(WB == sizes::Q5_1);
                let fifth = load32::<32>(group[bits_at..bits_at + 32].try_into().expect("32 bytes of fifth bits"), 0);
                let at_bit4 = [
                    _mm256_slli_epi16::<4>(fifth),
                    _mm256_slli_epi16::<3>(fifth),
                    _mm256_slli_epi16::<2>(fifth),
                    _mm256_slli_epi16::<1>(fifth),
                    fifth,
                    _mm256_srli_epi16::<1>(fifth),
                    _mm256_srli_epi16::<2>(fifth),
                    _mm256_srli_epi16::<3>(fifth),
                ];
                let bit4 = _mm256_set1_epi8(0x10);
                std::array::from_fn(|j| _mm256_or_si256(quants[j], _mm256_and_si256(at_bit4[j], bit4)))
            }

            /// The eight blocks' integer dot products of an interleaved group with the
            /// activations' interleaved quants `act`, for sets whose [`dot_u8_i8`] sums in 32
            /// bits: the high nibbles multiply in place (16 times their value, no shift per
            /// vector) and their sums are divided by 16 once, exactly, as in
            /// [`lane_sums_high16`].
            #[inline]
            #[target_feature(enable = $features)]
            fn interleaved_dots_high16(group: &[u8], act: &[u8; 256]) -> __m256i {
                let nibbles = interleaved_nibbles(group);
                let (low4, high4) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0xF0u8 as i8));
                let (mut low, mut high) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for c in 0..4 {
                    let v = load32(nibbles, 32 * c);
                    low = dot_u8_i8(low, _mm256_and_si256(v, low4), load32(act, 32 * c));
                    high = dot_u8_i8(high, _mm256_and_si256(v, high4), load32(act, 128 + 32 * c));
                }
                _mm256_add_epi32(low, _mm256_srai_epi32::<4>(high))
            }

            /// An interleaved group's `d` (and against Q8_1 activations `m`) as f32 lanes, as
            /// [`weight_scales`] gives a file group's.
            #[inline]
            #[target_feature(enable = $features)]
            fn interleaved_scales<const AB: usize>(group: &[u8]) -> [__m256; 2] {
                let f16s = |at: usize| _mm256_cvtph_ps(load16::<16>(group[at..at + 16].try_into().expect("eight f16"), 0));
                [f16s(0), if AB == sizes::Q8_1 { f16s(16) } else { _mm256_setzero_ps() }]
            }

            /// Per i32 lane, the sum of [`weights_dot`] over the first `J` (8, or 4 packed, see
            /// [`tile_group`]) pairs of vectors `q[j]` and `a[j]` (a prefill tile's eight
            /// transposed blocks against eight interleaved activation vectors). Narrow quants
            /// add in [`narrow_dot`]'s lanes, widened once (4-bit) or twice (5-bit, where its
            /// lanes are i16): a third fewer operations on AVX2 than widening every step.
            #[inline]
            #[target_feature(enable = $features)]
            fn tile_dots<const WB: usize, const Q8: bool, const J: usize>(q: &[__m256i; 8], a: &[__m256i; 8]) -> __m256i {
                // Where every step adds into i32 lanes (Q8_0; VNNI's `vpdpbusd`), even and odd
                // steps go to two sums: one chain of eight `vpdpbusd` waits out each one's
                // latency, and a prefill tile's four chains at a time left Zen 4 issuing about
                // one a cycle of the two it can.
                if Q8 || !NARROW_I16 {
                    let mut sums = [_mm256_setzero_si256(); 2];
                    for j in 0..J {
                        sums[j % 2] = if Q8 { q8_0_dot(sums[j % 2], q[j], a[j]) } else { narrow_dot(sums[j % 2], q[j], a[j]) };
                    }
                    return _mm256_add_epi32(sums[0], sums[1]);
                }
                let mut dots = _mm256_setzero_si256();
                let run = if is_five_bit::<WB>() { 4 } else { 8 }.min(J);
                for start in (0..J).step_by(run) {
                    let mut sums = _mm256_setzero_si256();
                    for j in start..start + run {
                        sums = narrow_dot(sums, q[j], a[j]);
                    }
                    dots = _mm256_add_epi32(dots, narrow_widen(sums));
                }
                dots
            }

            /// Per i32 lane: `acc +` the four-product sums of 32 weights (unsigned 4- or 5-bit
            /// quants, or Q8_0's from [`q8_0_weights`] when `Q8`) with 32 activations.
            #[inline]
            #[target_feature(enable = $features)]
            fn weights_dot<const Q8: bool>(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
                if Q8 { q8_0_dot(acc, w, a) } else { dot_u8_i8(acc, w, a) }
            }

            // Q8_0 weights are signed bytes of the full range; each instruction set multiplies
            // them its own way ([`q8_0_dot`], with [`Q8_0_OFFSET`] taken off as a weight offset).
            unsigned_format!($features; q8_0, q8_0_rows, interleaved q8_0_interleaved, q8_0_interleaved_rows, sizes::Q8_0, sizes::Q8_0, Q8_0_OFFSET, true, |wb| q8_0_weights(load32(wb, 2)));
            unsigned_format!($features; q4_0, q4_0_rows, interleaved q4_0_interleaved, q4_0_interleaved_rows, sizes::Q4_0, sizes::Q8_0, 8, false, |wb| nibbles32(load16(wb, 2)));
            unsigned_format!($features; q5_0, q5_0_rows, interleaved q5_0_interleaved, q5_0_interleaved_rows, sizes::Q5_0, sizes::Q8_0, 16, false, |wb| {
                let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
                quants5(nibbles32_unmasked(load16(wb, 6)), qh)
            });
            unsigned_format!($features; q4_1, q4_1_rows, interleaved q4_1_interleaved, q4_1_interleaved_rows, sizes::Q4_1, sizes::Q8_1, 0, false, |wb| nibbles32(load16(wb, 4)));
            unsigned_format!($features; q5_1, q5_1_rows, interleaved q5_1_interleaved, q5_1_interleaved_rows, sizes::Q5_1, sizes::Q8_1, 0, false, |wb| {
                let qh = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]);
                quants5(nibbles32_unmasked(load16(wb, 8)), qh)
            });

            /// Eight rows' Q4_K blocks ready to multiply with rows in i32 lanes: `d` and `dmin` as
            /// f32 lanes, and the 6-bit scales and mins transposed so that register `k` holds
            /// group `2k`'s eight rows in bytes 0..8 and group `2k + 1`'s in bytes 8..16.
            type Q4KRows8Scales = ([__m256; 2], [__m128i; 4], [__m128i; 4]);

            /// [`Q4KRows8Scales`] of eight blocks, from their first 20 bytes each.
            #[inline]
            #[target_feature(enable = $features)]
            fn q4_k_rows8_scales(b: [&[u8; 20]; 8]) -> Q4KRows8Scales {
                let v: [__m128i; 8] = std::array::from_fn(|r| q4_k_scales_mins_vec(b[r]));
                // Per pair of rows, u16 lanes g: (row 2k, row 2k + 1) of group g, scales and mins.
                let scales2: [__m128i; 4] = std::array::from_fn(|k| _mm_unpacklo_epi8(v[2 * k], v[2 * k + 1]));
                let mins2: [__m128i; 4] = std::array::from_fn(|k| _mm_unpackhi_epi8(v[2 * k], v[2 * k + 1]));
                // Then four rows per u32 lane, then all eight rows per u64 lane.
                let by_group = |p: [__m128i; 4]| -> [__m128i; 4] {
                    let (low01, high01) = (_mm_unpacklo_epi16(p[0], p[1]), _mm_unpackhi_epi16(p[0], p[1]));
                    let (low23, high23) = (_mm_unpacklo_epi16(p[2], p[3]), _mm_unpackhi_epi16(p[2], p[3]));
                    [
                        _mm_unpacklo_epi32(low01, low23),
                        _mm_unpackhi_epi32(low01, low23),
                        _mm_unpacklo_epi32(high01, high23),
                        _mm_unpackhi_epi32(high01, high23),
                    ]
                };
                let d_dmin = f16_pairs_lanes(|r| u32::from_le_bytes([b[r][0], b[r][1], b[r][2], b[r][3]]) as u64);
                (d_dmin, by_group(scales2), by_group(mins2))
            }

            /// The eight 6-bit scales (bytes 0..8) and mins (bytes 8..16) of a Q4_K block, from
            /// its 12 packed bytes: the first four of each are the low 6 bits of bytes 0..4 and
            /// 4..8; the last four take their low nibble from bytes 8..12 and their top 2 bits
            /// from the top of bytes 0..8 (ggml's `get_scale_min_k4`, four at a time, in vector
            /// registers: unpacking in general registers and moving the words over measured
            /// ~1 ns per block more in decode).
            #[inline]
            #[target_feature(enable = $features)]
            fn q4_k_scales_mins_vec<const M: usize>(wb: &[u8; M]) -> __m128i {
                // Lanes (u32): the packed words w0, w1, w2 (and four bytes of quants).
                let words = load16(wb, 4);
                let low = _mm_and_si128(words, _mm_set1_epi32(0x3F3F_3F3F)); // [scales_lo, mins_lo, ..]
                // w2's low nibbles for the scales, its high ones for the mins.
                let w2 = _mm_srlv_epi32(_mm_shuffle_epi32::<0b1010_1010>(words), _mm_set_epi32(0, 0, 4, 0));
                let top2 = _mm_slli_epi32::<4>(_mm_and_si128(_mm_srli_epi32::<6>(words), _mm_set1_epi32(0x0303_0303)));
                let high = _mm_or_si128(_mm_and_si128(w2, _mm_set1_epi32(0x0F0F_0F0F)), top2); // [scales_hi, mins_hi, ..]
                _mm_unpacklo_epi32(low, high)
            }

            /// A Q8_K block's eight sums of 32 quants (the group sums K-quants' mins multiply), as
            /// i32 lanes, from its `bsums` (one i16 per 16 quants).
            #[inline]
            #[target_feature(enable = $features)]
            fn q8_k_group_sums(ab: &[u8; sizes::Q8_K]) -> __m256i {
                _mm256_madd_epi16(load32(ab, 4 + 256), _mm256_set1_epi16(1))
            }

            /// A Q8_K block's `d`, as eight lanes.
            #[inline]
            #[target_feature(enable = $features)]
            fn q8_k_d(ab: &[u8; sizes::Q8_K]) -> __m256 {
                _mm256_set1_ps(f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]))
            }

            /// A Q4_K block's scales ready to use: per 32-value group (group `2j` the low nibbles
            /// of quant bytes `32j..32j + 32`, group `2j + 1` the high) its scale as byte `g` of
            /// `scales` and its min as an i32 lane, and `d` and `dmin` in every lane.
            struct Q4K {
                scales: __m128i,
                mins: __m256i,
                d: __m256,
                dmin: __m256,
            }

            #[inline]
            #[target_feature(enable = $features)]
            fn q4_k_block_scales(wb: &[u8; sizes::Q4_K]) -> Q4K {
                let packed = q4_k_scales_mins_vec(wb);
                // d and dmin, the block's first two f16, converted together.
                let d = _mm_cvtph_ps(load16(wb, 0));
                Q4K {
                    scales: packed,
                    mins: _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(packed, packed)),
                    d: _mm256_broadcastss_ps(d),
                    dmin: _mm256_broadcastss_ps(_mm_movehdup_ps(d)),
                }
            }

            /// Adds one block's `d * a.d * scale[g] * dots[g] - dmin * a.d * min[g] * sums[g]`
            /// to `acc`, lane `g` for group `g`, from its groups' integer dot products times
            /// their scales (`scaled_dots`, [`narrow_scale`]), the activations' `d` and their
            /// group sums ([`q8_k_group_sums`]). The products with the 6-bit scales and mins are
            /// exact integers, scaled by `d * a.d` and `dmin * a.d` as ggml scales its integer sums.
            #[inline]
            #[target_feature(enable = $features)]
            fn q4_k_finish(w: &Q4K, scaled_dots: __m256i, a_d: __m256, group_sums: __m256i, acc: &mut __m256) {
                let main = _mm256_cvtepi32_ps(scaled_dots);
                let mins = _mm256_cvtepi32_ps(_mm256_mullo_epi32(group_sums, w.mins));
                *acc = _mm256_fmadd_ps(_mm256_mul_ps(w.d, a_d), main, *acc);
                *acc = _mm256_fnmadd_ps(_mm256_mul_ps(w.dmin, a_d), mins, *acc);
            }

            /// `d * a.d * sum_g sc[g] * (q_g . a_g) - dmin * a.d * sum_g m[g] * (a_g's sum)`
            /// over the eight 32-value groups `g` of each block, for one activation row. Each
            /// 32 bytes of quants (groups 2c and 2c + 1, low and high nibbles) are split so
            /// that even lanes take group 2c's nibbles and odd lanes group 2c + 1's, against the
            /// activation row's paired quants (`quant::append_q8_k_pairs`): one accumulator per
            /// two groups, and four vectors to reduce per block ([`pair_lane_sums`]). Returns the
            /// eight lanes whose [`hsum`] is the product (see [`sum_later`]).
            #[target_feature(enable = $features)]
            fn q4_k(nb: usize, w: &[u8], a: &[u8]) -> __m256 {
                const AB: usize = sizes::Q8_K;
                const PB: usize = crate::quant::Q8_K_PAIRS_BYTES;
                let pairs = &a[nb * AB..];
                let mut acc = _mm256_setzero_ps();
                for i in 0..nb {
                    let wb = block::<{ sizes::Q4_K }>(w, i);
                    prefetch_ahead(wb.as_ptr(), sizes::Q4_K);
                    let ab = block::<AB>(a, i);
                    let pb = block::<PB>(pairs, i);
                    let wq = q4_k_block_scales(wb);
                    let dots = pair_lane_sums(std::array::from_fn(|c| {
                        let bytes = load32(wb, 16 + 32 * c);
                        let [own, partner] = nibble_pairs(bytes);
                        narrow_dot(narrow_dot(_mm256_setzero_si256(), own, load32(pb, 64 * c)), partner, load32(pb, 64 * c + 32))
                    }));
                    let scaled = narrow_scale(q4_k_pair_unscale(dots), narrow_scales(wq.scales));
                    q4_k_finish(&wq, scaled, q8_k_d(ab), q8_k_group_sums(ab), &mut acc);
                }
                acc
            }

            /// Per lane pair, both halves of 32 bytes of Q4_K quants: `own` has lane `l`'s low
            /// nibbles (even `l`) or high nibbles (odd `l`), `partner` lane `l ^ 1`'s low
            /// nibbles for even `l` and high for odd, so that even lanes hold group 2c and odd
            /// lanes group 2c + 1.
            #[inline]
            #[target_feature(enable = $features)]
            fn nibble_pairs(bytes: __m256i) -> [__m256i; 2] {
                let swapped = _mm256_shuffle_epi32::<0b1011_0001>(bytes);
                [q4_k_pair_nibbles(bytes), q4_k_pair_nibbles(swapped)]
            }

            /// Per block, the eight group sums from [`q4_k`]'s four vectors of [`narrow_dot`]
            /// sums (even lanes of `v[c]`: group 2c, odd lanes: group 2c + 1), lane `g` for
            /// group `g`, still in [`narrow_dot`]'s integer lanes.
            #[inline]
            #[target_feature(enable = $features)]
            fn pair_lane_sums(v: [__m256i; 4]) -> __m256i {
                // Per 128-bit half, [2c, 2c + 1, 2c + 2, 2c + 3] summed over the half. (Not a
                // closure: one calling intrinsics may be called, not inlined.)
                #[inline]
                #[target_feature(enable = $features)]
                fn quad(a: __m256i, b: __m256i) -> __m256i {
                    let kept = _mm256_blend_epi32::<0xCC>(a, b);
                    let moved = _mm256_shuffle_epi32::<0x4E>(_mm256_blend_epi32::<0x33>(a, b));
                    narrow_add(kept, moved)
                }
                let low = quad(v[0], v[1]);
                let high = quad(v[2], v[3]);
                narrow_add(_mm256_blend_epi32::<0xF0>(low, high), _mm256_permute2x128_si256::<0x21>(low, high))
            }

            /// [`q4_k`] for eight weight rows at once (lane `r`: row `r`) and N activation rows,
            /// bit-identical to it: lane `r` of `acc[t][g]` takes, block after block, the same
            /// products and the same fused multiply-adds as lane `g` of [`q4_k`]'s accumulator for
            /// row `r` and token `t`, and the eight are summed in [`hsum`]'s order. The quants are
            /// transposed from the rows' blocks ([`transpose8`]) so that four bytes of eight rows
            /// meet four activations broadcast to every lane; each block's scales and mins, and
            /// its transposed quants, serve all N tokens.
            ///
            /// `INTERLEAVED`: `w[0]` is a group of eight rows in `quant::interleave_rows8`'s
            /// layout (the other seven are not read), whose quants are already transposed and
            /// whose blocks come in one stream; otherwise `w` are the eight rows as in the file.
            #[target_feature(enable = $features)]
            fn q4_k_rows8<const N: usize, const INTERLEAVED: bool>(
                nb: usize,
                w: [&[u8]; 8],
                (ahead, decode_levels): (*const u8, super::DecodePrefetch),
                a: [&[u8]; N],
            ) -> [[f32; 8]; N] {
                const AB: usize = sizes::Q8_K;
                const GROUP: usize = 8 * sizes::Q4_K;
                // Per token and group, [`q4_k`]'s accumulator lane for that group, of eight rows.
                let mut acc = [[_mm256_setzero_ps(); 8]; N];
                let unpack_heads8 = INTERLEAVED && super::eight_head_unpack_pays();
                for i in 0..nb {
                    // Block i of the eight rows: heads (d, dmin, scales) and quants.
                    let rows: [&[u8; sizes::Q4_K]; 8] = std::array::from_fn(|r| block(w[if INTERLEAVED { 0 } else { r }], i));
                    let interleaved: Option<&[u8; GROUP]> = INTERLEAVED.then(|| block(w[0], i));
                    let heads: [&[u8; 20]; 8] = std::array::from_fn(|r| {
                        let head = match interleaved {
                            Some(group) => &group[16 * r..],
                            None => &rows[r][..],
                        };
                        head[..20].try_into().expect("20 bytes")
                    });
                    // Eight rows are eight short streams through memory, which the hardware
                    // prefetcher does not follow at full speed: while this group's block i is
                    // multiplied, the matching eighth of the next group (`ahead`, rows 8..16
                    // from here) is fetched, one sequential stream. Interleaved rows are one
                    // stream already, and `ahead` a few block indices further along it: with
                    // four tokens' work per block, the hardware prefetcher alone fell behind
                    // (3.6-4.9 against 2.4-2.6 ns per block-token, 4096 columns). Into every
                    // level for prefill: its passes of `Q4_K_TOKENS_PER_PASS` tokens read the
                    // group again. Decode's few tokens do not, and take the caller's
                    // `decode_levels`: the outer levels on the Intel Xeon measured, where
                    // Qwen2.5-1.5B's token (copied, rearranged) took 100 ms against 109 at one
                    // thread, 53.8 against 60.9 at two (`prefetchnta`: 157 and 85); for the
                    // interleaved layout, see `stream_decode_prefetch`.
                    let levels = if N <= super::SEQUENCES_PREFETCHED { decode_levels } else { super::DecodePrefetch::Every };
                    prefetch_into(levels, ahead.wrapping_add(i * GROUP), GROUP);
                    let ab: [&[u8; AB]; N] = std::array::from_fn(|t| block(a[t], i));
                    let unpacked = match interleaved {
                        Some(group) if unpack_heads8 => q4_k_heads8(group[..128].try_into().expect("128 bytes")),
                        _ => None,
                    };
                    let ([d, dmin], scales, mins) = match unpacked {
                        Some(scales) => scales,
                        None => q4_k_rows8_scales(heads),
                    };
                    let scale_d: [[__m256; 2]; N] = std::array::from_fn(|t| {
                        let a_d = q8_k_d(ab[t]);
                        [_mm256_mul_ps(d, a_d), _mm256_mul_ps(dmin, a_d)]
                    });
                    // Block i's group sums as f32: their products with the 6-bit mins stay below
                    // 2^24, exact in f32 as in i32.
                    let group_sums: [[f32; 8]; N] =
                        std::array::from_fn(|t| f32_lanes(_mm256_cvtepi32_ps(q8_k_group_sums(ab[t]))));
                    // Quarter c of the block (groups 2c and 2c + 1). Decode writes it out four
                    // times with constant `c`: as a loop, LLVM kept it rolled, and
                    // `acc[t][2c + h]` indexed by a variable went through the stack (a store and
                    // a forwarded load per group and block, a fifth of a decode kernel's samples
                    // on Zen 4). Prefill's passes keep the loop: their 8 x N accumulators do not
                    // fit in registers either way, and written out, Qwen2.5-1.5B's prompt was a
                    // fifth slower (the same Zen 4, one thread).
                    macro_rules! quarter {
                        ($c:expr) => {{
                            let c: usize = $c;
                            // Lane r of quant vector j: bytes 32c + 4j..+4 of row r, low nibbles in
                            // group 2c, high nibbles in group 2c + 1. Interleaved vectors are loaded
                            // where they are used: gathered into an array first, they went through
                            // the stack on AVX2, whose 16 registers the accumulators mostly fill.
                            let transposed = match interleaved {
                                Some(_) => [_mm256_setzero_si256(); 8],
                                None => transpose8(std::array::from_fn(|r| load32(rows[r], 16 + 32 * c))),
                            };
                            // Each token's activations of groups 2c and 2c + 1, as fixed-size
                            // arrays: the loop below then indexes them with no bounds checks (with
                            // them, LLVM kept it rolled, four compares and branches a step).
                            let acts: [[&[u8; 32]; 2]; N] = std::array::from_fn(|t| {
                                std::array::from_fn(|h| ab[t][4 + 64 * c + 32 * h..][..32].try_into().expect("32 quants"))
                            });
                            // Per token, groups 2c and 2c + 1.
                            let mut dots = [[_mm256_setzero_si256(); 2]; N];
                            for j in 0..8 {
                                let q = match interleaved {
                                    Some(group) => load32(group, 128 + 256 * c + 32 * j),
                                    None => transposed[j],
                                };
                                let [low, high] = low_high_nibbles(q);
                                for (t, [d0, d1]) in dots.iter_mut().enumerate() {
                                    *d0 = narrow_dot(*d0, low, broadcast4(acts[t][0], 4 * j));
                                    *d1 = narrow_dot(*d1, high, broadcast4(acts[t][1], 4 * j));
                                }
                            }
                            let sc = [narrow_scales(scales[c]), narrow_scales(_mm_unpackhi_epi64(scales[c], scales[c]))];
                            let m = [
                                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mins[c])),
                                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(mins[c], mins[c]))),
                            ];
                            for t in 0..N {
                                for h in 0..2 {
                                    let g = 2 * c + h;
                                    // As [`q4_k_finish`] does for lane g.
                                    let main = _mm256_cvtepi32_ps(narrow_scale(dots[t][h], sc[h]));
                                    let min = _mm256_mul_ps(_mm256_set1_ps(group_sums[t][g]), m[h]);
                                    acc[t][g] = _mm256_fmadd_ps(scale_d[t][0], main, acc[t][g]);
                                    acc[t][g] = _mm256_fnmadd_ps(scale_d[t][1], min, acc[t][g]);
                                }
                            }
                        }};
                    }
                    if N <= super::SEQUENCES_PREFETCHED {
                        quarter!(0);
                        quarter!(1);
                        quarter!(2);
                        quarter!(3);
                    } else {
                        for c in 0..4 {
                            quarter!(c);
                        }
                    }
                }
                // The groups summed in the order of [`hsum`] over [`q4_k`]'s lanes.
                std::array::from_fn(|t| {
                    let v = acc[t];
                    let pairs: [__m256; 4] = std::array::from_fn(|k| _mm256_add_ps(v[k], v[k + 4]));
                    f32_lanes(_mm256_add_ps(_mm256_add_ps(pairs[0], pairs[2]), _mm256_add_ps(pairs[1], pairs[3])))
                })
            }

            /// Dword `k` (0..4) of each 128-bit half of `v`, in all four lanes of that half.
            #[inline]
            #[target_feature(enable = $features)]
            fn broadcast_dword(v: __m256i, k: usize) -> __m256i {
                match k {
                    0 => _mm256_shuffle_epi32::<0x00>(v),
                    1 => _mm256_shuffle_epi32::<0x55>(v),
                    2 => _mm256_shuffle_epi32::<0xAA>(v),
                    _ => _mm256_shuffle_epi32::<0xFF>(v),
                }
            }

            /// Q6_K scales `H..H + 8` (of the block's sixteen, `scales`) doubled to 32 bits, as
            /// i16 pairs, even groups' in the low 128 bits and odd groups' in the high: groups
            /// `H + 2k` and `H + 2k + 1` are then dword k of each 128-bit half, which one dword
            /// shuffle broadcasts ([`broadcast_dword`]). The bytes are doubled before they are
            /// widened: widened first and doubled by an i16 unpack, LLVM folded the unpack into
            /// each quarter's broadcast as a word shuffle and a dword shuffle, two shuffles per
            /// quarter instead of one (Zen 3, AVX2, one row in cache: 9.06-9.09 against
            /// 8.67-8.70 ns per block; from DRAM no difference, 9.5-11.3 either way).
            #[inline]
            #[target_feature(enable = $features)]
            fn q6_k_doubled_scales<const H: i8>(scales: __m128i) -> __m256i {
                let pairs = _mm_setr_epi8(H, H, H + 2, H + 2, H + 4, H + 4, H + 6, H + 6, H + 1, H + 1, H + 3, H + 3, H + 5, H + 5, H + 7, H + 7);
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pairs))
            }

            /// `d * a.d * sum_g sc[g] * ((q_g - 32) . a_g)` over the 16-value groups `g`. The
            /// quants are multiplied unsigned (0..64) and the offset taken off once per block as
            /// `32 * sum_g sc[g] * (a_g's sum)`, from Q8_K's `bsums`. Each block's sum is
            /// finished whole: block `i` is scaled by `d * a.d` in lane `i % 8`. Returns, per
            /// activation row, the eight lanes whose [`hsum`] is the product (see [`sum_later`]).
            #[target_feature(enable = $features)]
            fn q6_k<const N: usize>(nb: usize, w: &[u8], a: [&[u8]; N]) -> [__m256; N] {
                let mut acc = [_mm256_setzero_ps(); N];
                let mut pending = [[_mm256_setzero_si256(); 8]; N];
                let low4 = _mm256_set1_epi8(0x0F);
                let bits45 = _mm256_set1_epi8(0x30);
                for i in 0..nb {
                    let wb = block::<{ sizes::Q6_K }>(w, i);
                    // Decode only (one sequence or a few together): a prefill's tokens give the
                    // hardware prefetcher time enough.
                    if N <= super::SEQUENCES_PREFETCHED {
                        prefetch_ahead(wb.as_ptr(), sizes::Q6_K);
                    }
                    let ab: [&[u8; sizes::Q8_K]; N] = std::array::from_fn(|t| block(a[t], i));
                    let scales = load16(wb, 192);
                    let scales16 = _mm256_cvtepi8_epi16(scales);
                    let doubled = [q6_k_doubled_scales::<0>(scales), q6_k_doubled_scales::<8>(scales)];
                    let mut sum: [__m256i; N] = std::array::from_fn(|t| {
                        let offset = _mm256_madd_epi16(scales16, load32(ab[t], 4 + 256));
                        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset))
                    });
                    for half in 0..2 {
                        let ql0 = load32(wb, 64 * half);
                        let ql1 = load32(wb, 64 * half + 32);
                        let qh = load32(wb, 128 + 32 * half);
                        // Value 32k + l of the half: a nibble of ql (low for k < 2) and bits 2k, 2k+1
                        // of qh[l], moved to bits 4 and 5.
                        let quarters = [
                            (_mm256_and_si256(ql0, low4), _mm256_slli_epi16::<4>(qh)),
                            (_mm256_and_si256(ql1, low4), _mm256_slli_epi16::<2>(qh)),
                            (_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4), qh),
                            (_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4), _mm256_srli_epi16::<2>(qh)),
                        ];
                        for (k, (low, high)) in quarters.into_iter().enumerate() {
                            let q = _mm256_or_si256(low, _mm256_and_si256(high, bits45));
                            // Groups 8 * half + 2k and the next one cover this quarter's two halves.
                            let sc = broadcast_dword(doubled[half], k);
                            for t in 0..N {
                                let p = _mm256_maddubs_epi16(q, load32(ab[t], 4 + 128 * half + 32 * k));
                                sum[t] = madd_i16(sum[t], p, sc);
                            }
                        }
                    }
                    // Each block's integer sum whole (its eight lanes summed, exactly), then
                    // scaled in lane `i % 8`, eight blocks at a time: as the 32-value formats
                    // finish their blocks, and as AMX tiles can (`amx_int8`).
                    for t in 0..N {
                        pending[t][i % 8] = sum[t];
                    }
                    if i % 8 == 7 || i + 1 == nb {
                        let (first, count) = (i - i % 8, i % 8 + 1);
                        let d_w = f16x8_of::<{ sizes::Q6_K }>(w, first, count, 208);
                        for t in 0..N {
                            pending[t][count..].fill(_mm256_setzero_si256());
                            let a_d: [f32; 8] = std::array::from_fn(|k| {
                                if k < count { f32::from_le_bytes(a[t][(first + k) * sizes::Q8_K..][..4].try_into().expect("4 bytes")) } else { 0.0 }
                            });
                            // SAFETY: `a_d` is 8 f32; loadu has no alignment requirement.
                            let a_d = unsafe { _mm256_loadu_ps(a_d.as_ptr()) };
                            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d_w, a_d), _mm256_cvtepi32_ps(lane_sums(pending[t])), acc[t]);
                        }
                    }
                }
                acc
            }
        }
    };
}

x86_kernels!(
    avx2, "avx2,fma,f16c", attention = attention256,
    dot_u8_i8(acc, u, s) { _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))) },
    madd_i16(acc, a, b) { _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)) },
    quants5(raw, bits) {
        let q = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
        // Byte j receives byte j / 8 of `bits`, masked to bit j % 8: 0 where bit j is clear,
        // positive (or -128 for bit 7) where set. `vpsignb` then gives 0x10 or 0 (0x10 at
        // bytes testing bit 7 is stored negated, which the sign of -128 turns back): one
        // operation fewer than comparing and masking.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0),
        );
        let bit = _mm256_and_si256(spread, _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64));
        let sixteen = _mm256_set1_epi64x(0xF010_1010_1010_1010u64 as i64);
        _mm256_or_si256(q, _mm256_sign_epi8(sixteen, bit))
    },
    // `vpmaddubsw` adds two products in 16 bits, which (w + 128) * a could overflow, so the
    // sign of each weight moves onto its activation instead. Activations are never -128 (our
    // quantizer gives [-127, 127]), so negating them cannot overflow.
    q8_0_weights(w) { w },
    q8_0_dot(acc, w, a) {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w)), _mm256_set1_epi16(1)))
    },
    q8_0_offset = 0,
    // High nibbles shifted down: `vpmaddubsw` adds two products in 16 bits, which 16 times a
    // high nibble's product could overflow.
    q4_k_pair_nibbles(bytes) {
        _mm256_and_si256(_mm256_srlv_epi32(bytes, _mm256_set_epi32(4, 0, 4, 0, 4, 0, 4, 0)), _mm256_set1_epi8(0x0F))
    },
    q4_k_pair_unscale(sums) { sums },
    // Sums in i16 lanes, each 32-bit lane's two halves its own: at most 16 products of a nibble
    // (<= 15) and an activation each, 16 * 15 * 128 = 30720 < 2^15 (5-bit quants: at most 8,
    // 31744), so nothing saturates or wraps. Our quantizers give activations in [-127, 127];
    // the bound holds for -128 too, whatever a non-finite input quantizes to. Widening once
    // (Q4_K: by the scales) replaces a widening per step (and Q4_K's 32-bit multiply).
    narrow_dot(acc, u, s) { _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, s)) },
    narrow_add(x, y) { _mm256_add_epi16(x, y) },
    // Scale l in both halves of lane l: `vpmaddwd` adds the halves' products.
    narrow_scales(packed) { _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(packed, packed)) },
    narrow_scale(sums, scales) { _mm256_madd_epi16(sums, scales) },
    narrow_widen(sums) { _mm256_madd_epi16(sums, _mm256_set1_epi16(1)) },
    narrow_i16 = true,
    // No word permute: the scales go through general registers ([`f16x8_of`]), on integer
    // ports the kernels leave idle. (Moving them with vector inserts and a shuffle measured
    // slower on Zen 3: Q4_0 and Q8_0 by 10%, Q5_0 from 1.5 to 4.6 ns per block, where the
    // compiler then spilled vectors in the loop.)
    group_words<B, J>(_group) { None },
    q4_k_heads8(_heads) { None }
);

x86_kernels!(
    avx512vnni, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", attention = attention512,
    dot_u8_i8(acc, u, s) { _mm256_dpbusd_epi32(acc, u, s) },
    madd_i16(acc, a, b) { _mm256_dpwssd_epi32(acc, a, b) },
    // `bits` is the mask of a zero-masked move of 0x10 bytes; one `vpternlogd` then takes
    // (raw & 0x0F) | fifth. (A masked byte add on the nibbles compiles to an `and`, an `or` and
    // a masked move: one operation more per block.)
    quants5(raw, bits) {
        let fifth = _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(0x10));
        _mm256_ternarylogic_epi32::<0xEA>(raw, _mm256_set1_epi8(0x0F), fifth)
    },
    // `vpdpbusd` has no 16-bit intermediate to saturate, so the weights go in offset to
    // unsigned (w + 128) and 128 * sum(a) comes off per block.
    q8_0_weights(w) { _mm256_xor_si256(w, _mm256_set1_epi8(-128)) },
    q8_0_dot(acc, w, a) { _mm256_dpbusd_epi32(acc, w, a) },
    q8_0_offset = 128,
    // High nibbles kept in place, 16 times their value (one `and`, no shift): `vpdpbusd` sums
    // in 32 bits, and every odd lane's sum is a multiple of 16, divided exactly at the end.
    q4_k_pair_nibbles(bytes) {
        _mm256_and_si256(bytes, _mm256_set1_epi64x(0xF0F0_F0F0_0F0F_0F0Fu64 as i64))
    },
    q4_k_pair_unscale(sums) { _mm256_srav_epi32(sums, _mm256_set_epi32(4, 0, 4, 0, 4, 0, 4, 0)) },
    narrow_dot(acc, u, s) { _mm256_dpbusd_epi32(acc, u, s) },
    narrow_add(x, y) { _mm256_add_epi32(x, y) },
    narrow_scales(packed) { _mm256_cvtepu8_epi32(packed) },
    narrow_scale(sums, scales) { _mm256_mullo_epi32(sums, scales) },
    narrow_widen(sums) { sums },
    narrow_i16 = false,
    // Two 128-byte windows of the group, one per four blocks (the second ending at the group's
    // end), each a `vpermt2w` of two 64-byte loads; the halves' lanes are then blended. Moving
    // the 8 or 16 words through general registers was a quarter of a decode kernel's time.
    group_words<B, J>(group) {
        let group: &[u8] = &group[..8 * B];
        let load64 = |at: usize| super::load64(group, at);
        // The window of blocks `4h..4h + 4`: its words span 3B + 2J <= 128 bytes (B <= 34).
        let window = |h: usize| (4 * h * B).min(8 * B - 128);
        let (first, second) = (window(0), window(1));
        let index = |h: usize| -> __m512i {
            let mut words = [0i16; 32];
            for j in 0..J {
                for k in 4 * h..4 * h + 4 {
                    words[8 * j + k] = ((k * B + 2 * j - [first, second][h]) / 2) as i16;
                }
            }
            // SAFETY: `words` is 32 i16 (64 bytes); loadu has no alignment requirement.
            unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
        };
        let low = _mm512_permutex2var_epi16(load64(first), index(0), load64(first + 64));
        let high = _mm512_permutex2var_epi16(load64(second), index(1), load64(second + 64));
        // Lanes of blocks 4..8: 0xF0 in each group of eight word lanes.
        Some(_mm512_castsi512_si256(_mm512_mask_blend_epi16(0xF0F0, low, high)))
    },
    // The eight heads (16 bytes each: d, dmin, words w0, w1, w2 of packed scales and mins) are
    // first gathered word by word across rows, so that every 6-bit field of the eight rows is
    // unpacked by one pass of shifts and masks over [w0 | w1] and [w2 | w2]; two byte shuffles
    // and two dword permutes then transpose rows x groups into groups x rows. Unpacking row by
    // row ([`q4_k_scales_mins_vec`] eight times and 24 unpacks) was about a quarter of the
    // interleaved Q4_K kernel's time where its weights sit in L2.
    q4_k_heads8(heads) {
        let (rows0_3, rows4_7) = (super::load64(heads, 0), super::load64(heads, 64));
        // Dword k of row r is dword 4r + k of the two loads together.
        let w0_w1 = _mm512_permutex2var_epi32(
            rows0_3,
            _mm512_setr_epi32(1, 5, 9, 13, 17, 21, 25, 29, 2, 6, 10, 14, 18, 22, 26, 30),
            rows4_7,
        );
        let w2_w2 = _mm512_permutex2var_epi32(
            rows0_3,
            _mm512_setr_epi32(3, 7, 11, 15, 19, 23, 27, 31, 3, 7, 11, 15, 19, 23, 27, 31),
            rows4_7,
        );
        // Per row lane, byte g: scales 0..4 (from w0) and mins 0..4 (from w1) are the low 6 bits;
        // scales 4..8 and mins 4..8 take their low nibble from w2's low and high nibbles, their
        // top two bits from bits 6, 7 of w0 and w1 (moved to bits 4, 5 by one shift; what the
        // shift brings in from the next byte is masked off).
        let low = _mm512_and_si512(w0_w1, _mm512_set1_epi8(0x3F));
        let nibbles = _mm512_and_si512(
            _mm512_srlv_epi32(w2_w2, _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4)),
            _mm512_set1_epi8(0x0F),
        );
        let high = _mm512_or_si512(nibbles, _mm512_and_si512(_mm512_srli_epi32::<2>(w0_w1), _mm512_set1_epi8(0x30)));
        // 128-bit lanes of `low` and `high`: scales of rows 0..4, of rows 4..8, mins of rows
        // 0..4, of rows 4..8, byte 4r + g. Each to byte 4g + r, then dword g of the two
        // halves side by side: lane 0 is groups 0 and 1 of the eight rows, lane 1 groups 2 and
        // 3 (of `low`; `high` has groups 4..8), lanes 2 and 3 the same of the mins.
        let by_group = |v: __m512i| {
            let within = _mm512_shuffle_epi8(v, _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)));
            _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15), within)
        };
        let (low, high) = (by_group(low), by_group(high));
        let scales = [
            _mm512_castsi512_si128(low),
            _mm512_extracti32x4_epi32::<1>(low),
            _mm512_castsi512_si128(high),
            _mm512_extracti32x4_epi32::<1>(high),
        ];
        let mins = [
            _mm512_extracti32x4_epi32::<2>(low),
            _mm512_extracti32x4_epi32::<3>(low),
            _mm512_extracti32x4_epi32::<2>(high),
            _mm512_extracti32x4_epi32::<3>(high),
        ];
        // Words 0..8: the rows' d (word 8r of the two loads), words 8..16: their dmin.
        let d_dmin = _mm512_castsi512_si256(_mm512_permutex2var_epi16(
            rows0_3,
            _mm512_setr_epi32(8 << 16, 16 | 24 << 16, 32 | 40 << 16, 48 | 56 << 16, 1 | 9 << 16, 17 | 25 << 16, 33 | 41 << 16, 49 | 57 << 16, 0, 0, 0, 0, 0, 0, 0, 0),
            rows4_7,
        ));
        let d = _mm256_cvtph_ps(_mm256_castsi256_si128(d_dmin));
        let dmin = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(d_dmin));
        Some(([d, dmin], scales, mins))
    }
);
