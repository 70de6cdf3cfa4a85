//! Matrix products on AMX tiles in bf16 (Intel's Advanced Matrix Extensions, Sapphire Rapids and
//! later): weights dequantized to bf16 strips of 32 rows, activations rounded to bf16 and laid
//! out as the tiles read them, products accumulated in f32 by `tdpbf16ps`, which multiplies a
//! 16x32 tile by a 32x16 one in one instruction (~1.1 TMAC/s on one core of the Xeon measured,
//! against ~0.1 for the AVX-512 VNNI integer kernels).
//!
//! This is not ggml's arithmetic: no Q8 activations, no per-block integer sums. Its results
//! differ from the integer kernels' by about what llama.cpp's own builds differ by, so a product
//! made here is not bit-identical to the same token's product made by the integer kernels; see
//! `quant::bf16_tiles` for who may use it.
//!
//! The tile registers are not registers Rust or LLVM know of: nothing but this module's `asm!`
//! blocks touches them, and every product loads its own tile configuration first, so the state
//! one call leaves cannot matter to the next.

use crate::quant::block::QuantBlock;
use crate::quant::float::f32_to_bf16;
use crate::quant::interleave::{q4_k_position, GroupLayout};
use crate::quant::kquants::{scales_mins_k4, BlockQ5K, BlockQ6K};
use crate::tensor::GgmlType;
use std::arch::asm;
use std::sync::OnceLock;

use crate::quant::bf16_tiles::{TILE_TOKENS as TILE_ROWS, TILE_VALUES, TOKEN_GROUP};

/// Weight rows per strip: two tiles, so that each pair of weight tiles and pair of token tiles
/// loaded makes four products.
pub const STRIP_ROWS: usize = 2 * TILE_ROWS;

/// The operand of `ldtilecfg`: per tile register, its rows and bytes per row.
#[repr(C, align(64))]
pub(super) struct TileConfig {
    pub(super) palette: u8,
    pub(super) start_row: u8,
    pub(super) reserved: [u8; 14],
    pub(super) bytes_per_row: [u16; 16],
    pub(super) rows: [u8; 16],
}

/// No configuration: what `sttilecfg` stores where none is loaded.
pub(super) const NO_CONFIG: TileConfig =
    TileConfig { palette: 0, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };

/// Palette 1, every tile used 16 rows of 64 bytes.
const CONFIG: TileConfig = {
    let mut c = TileConfig { palette: 1, ..NO_CONFIG };
    let mut t = 0;
    while t < 8 {
        c.bytes_per_row[t] = (TILE_VALUES * 2) as u16;
        c.rows[t] = TILE_ROWS as u8;
        t += 1;
    }
    c
};

/// Whether this CPU has AMX-TILE and AMX-BF16 and the kernel lets this process use the tile
/// registers (Linux asks each process to request them: `arch_prctl(ARCH_REQ_XCOMP_PERM)`, which
/// this makes once, for every thread of the process).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bf16")
            && is_x86_feature_detected!("bmi2");
        avx512 && cpu_has_amx(AMX_BF16) && tile_data_granted()
    })
}

/// CPUID.(EAX=7,ECX=0):EDX bits of the AMX extensions.
pub(super) const AMX_BF16: u32 = 1 << 22;
pub(super) const AMX_INT8: u32 = 1 << 25;

/// Whether the CPU has AMX-TILE and the AMX extension `bit` (of CPUID leaf 7's EDX).
pub(super) fn cpu_has_amx(bit: u32) -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    const AMX_TILE: u32 = 1 << 24;
    if __cpuid(0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    edx & bit != 0 && edx & AMX_TILE != 0
}

/// Whether this process may use the tile registers: asked of the kernel once.
pub(super) fn tile_data_granted() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(request_tile_data)
}

#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) reads and writes no memory of ours; it
    // only widens the state the kernel saves for this process's threads (or fails, -EINVAL on a
    // kernel or CPU without AMX, -ENOSPC where a signal stack is too small for the tile state).
    // The `syscall` instruction clobbers rcx and r11 and returns in rax.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        )
    };
    ret == 0
}

/// Other systems are not asked: their rules for the tile state are not known here.
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// `out[r * tokens + t]` = weight row `r` · token `t`, for `rows` weight rows and `tokens`
/// tokens packed as `quant::Bf16Tokens` lays them out (16-row tiles of 64 bytes are the largest
/// palette 1 allows). `fill_strip(first_row, strip)` writes rows
/// `first_row..` as bf16 into `strip` (`strip.len() / cols` rows of `cols` values, at most
/// [`STRIP_ROWS`]); each row is asked for once.
///
/// Panics where the lengths do not fit together.
pub(crate) fn multiply(
    _available: Available,
    cols: usize,
    rows: usize,
    tokens: usize,
    packed: &[u16],
    fill_strip: &mut dyn FnMut(usize, &mut [u16]),
    out: &mut [f32],
) {
    assert!(cols.is_multiple_of(TILE_VALUES) && cols > 0, "amx: {cols} columns are not whole tiles");
    assert_eq!(packed.len(), tokens.div_ceil(TOKEN_GROUP) * TOKEN_GROUP * cols, "amx: packed tokens");
    assert_eq!(out.len(), rows * tokens, "amx: out holds rows x tokens");
    // Each thread's own, kept: the down projection's strip of Qwen2.5-1.5B is 573 KiB, which a
    // fresh allocation per task maps, faults in and unmaps again.
    thread_local!(static STRIP: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) });
    STRIP.with_borrow_mut(|strip| {
        strip.resize(STRIP_ROWS * cols, 0);
        // SAFETY: `multiply` holds an `Available`: the CPU has AMX-TILE and the kernel granted
        // the tile state; `CONFIG` is a valid palette-1 configuration, loaded while
        // `multiply_tiles` runs.
        unsafe { with_tile_config(&CONFIG, || multiply_tiles(cols, rows, tokens, packed, fill_strip, strip, out)) }
    });
}

/// Runs `f` with `config` loaded, and puts back the configuration found.
///
/// Other code on this thread may use the tiles too, and keep its configuration loaded between
/// calls: llama.cpp's AMX kernels do, and node-llama-cpp runs them on the libuv threads our
/// calls run on. A tile instruction of theirs after a `tilerelease` of ours raised SIGILL (and
/// after a configuration of ours would multiply other shapes), so the configuration found is
/// loaded again at the end; where there was none, the tiles are released.
///
/// # Safety
/// The CPU has AMX-TILE, the kernel granted this process the tile state, and `config` is a
/// configuration the CPU accepts.
pub(super) unsafe fn with_tile_config<R>(config: &TileConfig, f: impl FnOnce() -> R) -> R {
    let mut found = NO_CONFIG;
    // SAFETY: the caller's promise; `sttilecfg` writes 64 bytes (zeros where no configuration
    // is loaded) into `found`, a `TileConfig` of 64 bytes.
    unsafe {
        asm!("sttilecfg [{}]", in(reg) &mut found, options(nostack));
        asm!("ldtilecfg [{}]", in(reg) config, options(nostack, readonly));
    }
    let result = f();
    // SAFETY: `found` is what `sttilecfg` stored, a configuration the CPU accepted. Releasing
    // (where there was none) returns the tiles to their initial state, which the kernel need
    // not save on a context switch.
    unsafe {
        if found.palette != 0 {
            asm!("ldtilecfg [{}]", in(reg) &found, options(nostack, readonly));
        } else {
            asm!("tilerelease", options(nostack, nomem));
        }
    }
    result
}

/// [`multiply`]'s loops, with the thread's `strip`.
///
/// # Safety
/// Runs inside [`with_tile_config`] with [`CONFIG`].
unsafe fn multiply_tiles(
    cols: usize,
    rows: usize,
    tokens: usize,
    packed: &[u16],
    fill_strip: &mut dyn FnMut(usize, &mut [u16]),
    strip: &mut [u16],
    out: &mut [f32],
) {
    let tile_bytes = cols * TILE_ROWS; // u16 values of one token tile
    let mut products = Products([[0.0; TILE_ROWS * TILE_ROWS]; 4]);
    for first_row in (0..rows).step_by(STRIP_ROWS) {
        let strip_rows = STRIP_ROWS.min(rows - first_row);
        fill_strip(first_row, &mut strip[..strip_rows * cols]);
        strip[strip_rows * cols..].fill(0);
        for (group, tiles) in packed.chunks_exact(2 * tile_bytes).enumerate() {
            // SAFETY: the CPU has AMX-TILE and tiles 0-3 are configured (the function's promise).
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem))
            };
            for k in (0..cols).step_by(TILE_VALUES) {
                let (a0, a1) = (&strip[k..], &strip[TILE_ROWS * cols + k..]);
                let (b0, b1) = (&tiles[k * TILE_ROWS..], &tiles[tile_bytes + k * TILE_ROWS..]);
                // SAFETY: the tile loads read 16 rows of 64 bytes: from `a0` and `a1` at a stride
                // of one strip row (`cols` values, so the 16th row ends at
                // `(TILE_ROWS - 1) * cols + k + TILE_VALUES <= STRIP_ROWS * cols` values into the
                // strip), from `b0` and `b1` at a stride of 64 bytes (a token tile's 32 values
                // of the inner dimension, 512 values, inside `tiles` as `k + TILE_VALUES <= cols`).
                unsafe {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa} * 1]",
                        "tileloadd tmm5, [{a1} + {sa} * 1]",
                        "tileloadd tmm6, [{b0} + {sb} * 1]",
                        "tileloadd tmm7, [{b1} + {sb} * 1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.as_ptr(),
                        a1 = in(reg) a1.as_ptr(),
                        b0 = in(reg) b0.as_ptr(),
                        b1 = in(reg) b1.as_ptr(),
                        sa = in(reg) cols * 2,
                        sb = in(reg) TILE_VALUES * 2,
                        options(nostack, readonly),
                    )
                };
            }
            products.store();
            products.copy_out(first_row, strip_rows, group * TOKEN_GROUP, tokens, out);
        }
    }
}

/// The four accumulator tiles of a strip and token group: (rows 0-15, tokens 0-15), (rows 0-15,
/// tokens 16-31), (rows 16-31, tokens 0-15), (rows 16-31, tokens 16-31), each 16 rows of 16 f32.
#[repr(C, align(64))]
struct Products([[f32; TILE_ROWS * TILE_ROWS]; 4]);

impl Products {
    fn store(&mut self) {
        let p = self.0.as_mut_ptr();
        // SAFETY: each store writes 16 rows of 64 bytes at a stride of 64: one [f32; 256] of
        // `self`; tiles 0-3 are configured (`multiply`).
        unsafe {
            asm!(
                "tilestored [{p0} + {s} * 1], tmm0",
                "tilestored [{p1} + {s} * 1], tmm1",
                "tilestored [{p2} + {s} * 1], tmm2",
                "tilestored [{p3} + {s} * 1], tmm3",
                p0 = in(reg) p,
                p1 = in(reg) p.add(1),
                p2 = in(reg) p.add(2),
                p3 = in(reg) p.add(3),
                s = in(reg) TILE_ROWS * 4,
                options(nostack),
            )
        };
    }

    /// The products of strip rows `..rows` (weight rows `first_row..`) and tokens
    /// `first_token..tokens` into `out` (rows x tokens).
    fn copy_out(&self, first_row: usize, rows: usize, first_token: usize, tokens: usize, out: &mut [f32]) {
        for (tile, p) in self.0.iter().enumerate() {
            let (row0, token0) = ((tile / 2) * TILE_ROWS, first_token + (tile % 2) * TILE_ROWS);
            let n = TILE_ROWS.min(tokens.saturating_sub(token0));
            if n == 0 {
                continue;
            }
            for (r, p) in p.chunks_exact(TILE_ROWS).enumerate().take(rows.saturating_sub(row0)) {
                let at = (first_row + row0 + r) * tokens + token0;
                out[at..at + n].copy_from_slice(&p[..n]);
            }
        }
    }
}

/// `dst.len()` values of type `ty` from the start of `src`, dequantized and rounded to bf16 as
/// `quant::float::f32_to_bf16` does; false (and nothing written) for a type not listed here.
pub(crate) fn dequantize_bf16(_available: Available, ty: GgmlType, src: &[u8], dst: &mut [u16]) -> bool {
    // SAFETY: `Available` says the CPU has AVX-512F and BW (checked with the tiles).
    unsafe {
        match ty {
            GgmlType::Q4_K => dequantize_bf16_q4_k(src, dst),
            GgmlType::Q5_K => dequantize_bf16_blocks::<BlockQ5K>(src, dst),
            GgmlType::Q6_K => dequantize_bf16_blocks::<BlockQ6K>(src, dst),
            _ => return false,
        }
    }
    true
}

/// The blocks' own (scalar) dequantization, compiled with AVX-512 so that the rounding (and
/// where the compiler manages, the dequantization) vectorizes: Q5_K and Q6_K (~0.29 ns per
/// value for Q6_K). Q4_K took 1.03 ns this way, hence its own code below.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dequantize_bf16_blocks<B: QuantBlock>(src: &[u8], dst: &mut [u16]) {
    let mut values = [0.0f32; 256];
    let values = &mut values[..B::LEN];
    for (s, d) in src.chunks_exact(B::BYTES).zip(dst.chunks_exact_mut(B::LEN)) {
        B::read(s).dequantize(values);
        for (o, &v) in d.iter_mut().zip(values.iter()) {
            *o = f32_to_bf16(v);
        }
    }
}

/// Q4_K blocks dequantized as `BlockQ4K::dequantize` does (`d * scale * q - dmin * min`, a
/// product then a difference) and rounded to bf16: 1.03 ns per value where the compiler was left
/// to vectorize the blocks' own code, 0.2-0.25 here (a 1536 x 1024 matrix into a 3 MiB buffer).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn dequantize_bf16_q4_k(src: &[u8], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    for (block, out) in src.chunks_exact(Q4_K_BYTES).zip(dst.chunks_exact_mut(256)) {
        let block: &[u8; Q4_K_BYTES] = block.try_into().expect("a whole block");
        // SAFETY: 32 bytes at 16 + 32 * chunk <= 112 of the 144-byte block.
        let quants =
            std::array::from_fn(|chunk| unsafe { _mm256_loadu_si256(block[16 + 32 * chunk..].as_ptr().cast()) });
        q4_k_block_bf16(block[..16].try_into().expect("16 bytes"), quants, out);
    }
}

const Q4_K_BYTES: usize = 144;

/// Row `row` of Q4_K `rows` rearranged by `quant::interleave_rows8` (whole groups of eight rows
/// of `dst.len()` values), dequantized to bf16 as [`dequantize_bf16`] does the file's layout,
/// straight from the rearranged bytes (un-interleaving each row first took a fifth of a prompt's
/// time).
pub(crate) fn dequantize_bf16_q4_k_interleaved(_available: Available, rows: &[u8], row: usize, dst: &mut [u16]) {
    const GROUP: usize = 8 * Q4_K_BYTES;
    assert!(dst.len().is_multiple_of(256), "amx: Q4_K rows are whole blocks");
    let group_bytes = dst.len() / 256 * GROUP;
    let group = &rows[row / 8 * group_bytes..][..group_bytes];
    // SAFETY: `Available` says the CPU has AVX-512F, BW, VL and BF16 (checked with the tiles).
    unsafe { q4_k_interleaved_bf16(group, row % 8, dst) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn q4_k_interleaved_bf16(group: &[u8], r: usize, dst: &mut [u16]) {
    use std::arch::x86_64::*;
    // Row r's quant bytes 32 c + 4 j..+ 4 lie 32 bytes apart from one j to the next.
    let runs = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
    const HEAD: usize = 16;
    for (blocks, out) in group.chunks_exact(8 * Q4_K_BYTES).zip(dst.chunks_exact_mut(256)) {
        let blocks: &[u8; 8 * Q4_K_BYTES] = blocks.try_into().expect("eight blocks");
        let quants = std::array::from_fn(|chunk| {
            let first = &blocks[q4_k_position(r, HEAD + 32 * chunk)..];
            // SAFETY: the first run is at 128 + 256 c + 4 r (`q4_k_position`), so the last one
            // read ends at 128 + 256 * 3 + 4 * 7 + 224 + 4 = 1152 bytes, the length of `blocks`.
            unsafe { _mm256_i32gather_epi32::<1>(first.as_ptr().cast(), runs) }
        });
        q4_k_block_bf16(blocks[q4_k_position(r, 0)..][..HEAD].try_into().expect("16 bytes"), quants, out);
    }
}

/// One Q4_K block, given its 16 bytes of `d`, `dmin`, scales and mins and its quants as four
/// 32-byte chunks, dequantized as `BlockQ4K::dequantize` does into 256 bf16 values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
fn q4_k_block_bf16(head: &[u8; 16], quants: [std::arch::x86_64::__m256i; 4], out: &mut [u16]) {
    use std::arch::x86_64::*;
    let low_nibbles = _mm256_set1_epi8(0x0f);
    let d = half::f16::from_le_bytes([head[0], head[1]]).to_f32();
    let dmin = half::f16::from_le_bytes([head[2], head[3]]).to_f32();
    let (scales, mins) = scales_mins_k4(head[4..16].try_into().expect("12 scale bytes"));
    for (chunk, q) in quants.into_iter().enumerate() {
        let groups = [_mm256_and_si256(q, low_nibbles), _mm256_and_si256(_mm256_srli_epi16::<4>(q), low_nibbles)];
        for (g, quants) in groups.into_iter().enumerate() {
            let group = 2 * chunk + g;
            let scale = _mm512_set1_ps(d * scales[group] as f32);
            let min = _mm512_set1_ps(dmin * mins[group] as f32);
            let halves = [_mm256_castsi256_si128(quants), _mm256_extracti128_si256::<1>(quants)]
                .map(|q| _mm512_sub_ps(_mm512_mul_ps(scale, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q))), min));
            let at = &mut out[32 * group..][..32];
            // SAFETY: 32 u16 values, the length of `at`.
            unsafe { _mm512_storeu_si512(at.as_mut_ptr().cast(), round_bf16(halves[0], halves[1])) };
        }
    }
}

/// A 32-value format: where its fields lie, in a block and in an interleaved group
/// (`quant::interleave`'s one description of both), and what each quant is offset by.
#[derive(Clone, Copy)]
struct Format32 {
    layout: GroupLayout,
    /// Subtracted from each quant: Q4_0's 8, Q5_0's 16.
    offset: i8,
}

impl Format32 {
    fn of(ty: GgmlType) -> Option<Format32> {
        let offset = match ty {
            GgmlType::Q4_0 => 8,
            GgmlType::Q5_0 => 16,
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_0 => 0,
            _ => return None,
        };
        Some(Format32 { layout: GroupLayout::of(ty), offset })
    }

    fn with_min(self) -> bool {
        self.layout.fields == 2
    }

    fn eight_bit(self) -> bool {
        self.layout.quant_bytes == 32
    }
}

/// Row `row` of `rows` of a 32-value format `ty` (the file's layout, or with `interleaved`
/// rearranged by `quant::interleave_rows8`: each row's whole groups of eight blocks on their
/// own), dequantized to bf16 as the blocks' `dequantize` does (`(q - offset) * d`, plus `m`);
/// false (and nothing written) for another type.
pub(crate) fn dequantize_bf16_row32(
    _available: Available,
    ty: GgmlType,
    interleaved: bool,
    rows: &[u8],
    row: usize,
    dst: &mut [u16],
) -> bool {
    let Some(format) = Format32::of(ty) else { return false };
    assert!(dst.len().is_multiple_of(32), "amx: rows of whole 32-value blocks");
    let blocks = dst.len() / 32;
    let block_bytes = format.layout.block_bytes;
    let src = &rows[row * blocks * block_bytes..][..blocks * block_bytes];
    let grouped = if interleaved { blocks - blocks % 8 } else { 0 };
    let (src_groups, src_rest) = src.split_at(grouped * block_bytes);
    let (dst_groups, dst_rest) = dst.split_at_mut(grouped * 32);
    // SAFETY: `Available` says the CPU has AVX-512F, BW, VL and BF16 (checked with the tiles),
    // and BMI2, which every CPU with AMX has.
    unsafe { row32_bf16(format, src_groups, dst_groups, src_rest, dst_rest) };
    true
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,bmi2")]
unsafe fn row32_bf16(
    format: Format32,
    src_groups: &[u8],
    dst_groups: &mut [u16],
    src_rest: &[u8],
    dst_rest: &mut [u16],
) {
    use std::arch::x86_64::*;
    let f16_at = |bytes: &[u8], at: usize| half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32();
    let layout = format.layout;
    let (fifth_bits_at, quants_at) = (layout.fifth_bits_at(), layout.quants_at());
    let nibble_runs = _mm_setr_epi32(0, 32, 64, 96);
    let byte_runs = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
    for (group, out) in src_groups.chunks_exact(8 * layout.block_bytes).zip(dst_groups.chunks_exact_mut(256)) {
        for (l, out) in out.chunks_exact_mut(32).enumerate() {
            let d = f16_at(group, 2 * l);
            let m = if format.with_min() { f16_at(group, 16 + 2 * l) } else { 0.0 };
            let first = &group[quants_at + 4 * l..];
            // SAFETY: the runs read end at quants_at + 4 * 7 + 96 + 4 (nibbles) or + 224 + 4
            // (Q8_0), the group's length.
            let quants = unsafe {
                if format.eight_bit() {
                    _mm256_i32gather_epi32::<1>(first.as_ptr().cast(), byte_runs)
                } else {
                    nibbles_to_bytes(_mm_i32gather_epi32::<1>(first.as_ptr().cast(), nibble_runs))
                }
            };
            let fifth_bits = if layout.five_bit {
                // Byte 4 l + b holds at bit j this block's fifth bit 4 j + b.
                let word = u32::from_le_bytes(group[fifth_bits_at + 4 * l..][..4].try_into().expect("4 bytes"));
                (0..4).fold(0, |bits, b| bits | _pdep_u32((word >> (8 * b)) & 0xff, 0x1111_1111 << b))
            } else {
                0
            };
            block32_bf16(format, quants, fifth_bits, d, m, out);
        }
    }
    // A block in the file's layout: its f16 fields, its 32-bit word of fifth bits, its quants.
    let fifth_bits_at = 2 * layout.fields;
    let quants_at = fifth_bits_at + if layout.five_bit { 4 } else { 0 };
    for (block, out) in src_rest.chunks_exact(layout.block_bytes).zip(dst_rest.chunks_exact_mut(32)) {
        let d = f16_at(block, 0);
        let m = if format.with_min() { f16_at(block, 2) } else { 0.0 };
        let quants = &block[quants_at..];
        // SAFETY: 32 (Q8_0) or 16 bytes at `quants_at`, the rest of the block.
        let quants = unsafe {
            if format.eight_bit() {
                _mm256_loadu_si256(quants.as_ptr().cast())
            } else {
                nibbles_to_bytes(_mm_loadu_si128(quants.as_ptr().cast()))
            }
        };
        let fifth_bits = if layout.five_bit {
            u32::from_le_bytes(block[fifth_bits_at..][..4].try_into().expect("4 bytes"))
        } else {
            0
        };
        block32_bf16(format, quants, fifth_bits, d, m, out);
    }
}

/// A block's 16 bytes of nibbles as its 32 quants in order: low nibbles first, then high.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn nibbles_to_bytes(nibbles: std::arch::x86_64::__m128i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0f);
    _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(nibbles), low), _mm_and_si128(nibbles, low))
}

/// One block's 32 quants (bytes, with their fifth bits apart) as `(q - offset) * d + m` in bf16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
fn block32_bf16(
    format: Format32,
    quants: std::arch::x86_64::__m256i,
    fifth_bits: u32,
    d: f32,
    m: f32,
    out: &mut [u16],
) {
    use std::arch::x86_64::*;
    let mut q = quants;
    if format.layout.five_bit {
        q = _mm256_or_si256(q, _mm256_and_si256(_mm256_movm_epi8(fifth_bits), _mm256_set1_epi8(0x10)));
    }
    q = _mm256_sub_epi8(q, _mm256_set1_epi8(format.offset));
    let (scale, min) = (_mm512_set1_ps(d), _mm512_set1_ps(m));
    let halves = [_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q)].map(|q| {
        let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), scale);
        if format.with_min() {
            _mm512_add_ps(v, min)
        } else {
            v
        }
    });
    let out = &mut out[..32];
    // SAFETY: 32 u16 values, the length of `out`.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), round_bf16(halves[0], halves[1])) };
}

/// 32 f32 values (`low`, then `high`) rounded to bf16 by `vcvtne2ps2bf16`: to nearest, ties to
/// even, as `quant::float::f32_to_bf16` rounds, but with subnormals flushed to zero (which
/// dequantized weights, multiples of an f16 scale, are not).
#[target_feature(enable = "avx512f,avx512bf16")]
fn round_bf16(low: std::arch::x86_64::__m512, high: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: a bit-for-bit reinterpretation of one 512-bit vector as another.
    unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low)) }
}

/// Proof that [`available`] returned true: made only by [`Available::get`].
#[derive(Clone, Copy)]
pub(crate) struct Available(());

impl Available {
    pub(crate) fn get() -> Option<Available> {
        available().then_some(Available(()))
    }
}
