//! Integer matrix products on AMX tiles (AMX-INT8, Intel Xeon since Sapphire Rapids) with the
//! AVX-512 VNNI kernels' arithmetic, so that their results are bit-identical: a prompt's
//! products here and the same tokens' products one at a time in decode give the same logits.
//!
//! What makes that possible is how the VNNI kernels compute (see `x86`'s module docs): each
//! run of 32 values of the inner dimension (a 32-value block, or a Q4_K group) has its integer
//! dot product taken whole, then scaled and added in f32 into one of eight accumulator lanes,
//! run `r` into lane `r % 8`, and the lanes are summed at the end in `hsum`'s order. A tile
//! product `tdpbssd`/`tdpbsud` with an inner dimension of 32 bytes gives exactly those
//! integers, for 16 tokens by 16 weight rows at once; the scaling then takes the same f32
//! operations, in the same order, vectorized over 16 weight rows instead of 8 lanes.
//!
//! Layout: the activation tile is 16 tokens' 32 quants of a run, read straight from the Q8 rows
//! (a stride of one activation row); the weight tile is 16 weight rows' 32 quants of that run as
//! `tdpb*d` reads its second operand (row `k`: four quants `4k..4k + 4` of each weight row),
//! which [`fill_strip`] lays out once per strip of 32 rows by gathering from the rows. Products
//! come out as 16 tokens by 16 rows of i32 and are scaled by the vector of 16 rows' scales.

use super::amx::{cpu_has_amx, tile_data_granted, with_tile_config, TileConfig, AMX_INT8, NO_CONFIG};
use crate::quant::interleave::GroupLayout;
use crate::quant::kquants::scales_mins_k4;
use crate::tensor::GgmlType;
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Tokens per activation tile and weight rows per weight tile.
const TILE_ROWS: usize = 16;
/// Values of the inner dimension per product: a 32-value block, or a Q4_K group.
const RUN: usize = 32;
/// Weight rows per strip: two weight tiles, each product of an activation tile making two.
const STRIP_ROWS: usize = 2 * TILE_ROWS;
/// Bytes of one weight tile of one run: 8 rows of 16 weight rows' four quants.
const WEIGHT_TILE_BYTES: usize = TILE_ROWS * RUN;
/// The VNNI kernels' accumulator lanes: run `r` adds into lane `r % LANES`.
const LANES: usize = 8;
/// f32 fields per weight row and run in a strip's scales (see [`Finish`]).
const FIELDS: usize = 4;

/// Fewest tokens worth a tile product: a smaller batch would leave most of the 16 activation
/// rows empty.
pub(crate) const MIN_TOKENS: usize = TILE_ROWS;

/// tmm0-3: products, 16 tokens x 16 rows of i32 (64 bytes a row); tmm4, tmm5: activations, 16
/// tokens x 32 bytes; tmm6, tmm7: weights, 8 rows of 16 weight rows x 4 bytes (64 bytes).
const CONFIG: TileConfig = {
    let mut c = TileConfig { palette: 1, ..NO_CONFIG };
    let mut t = 0;
    while t < 8 {
        let (rows, bytes) = match t {
            4 | 5 => (TILE_ROWS, RUN),
            6 | 7 => (RUN / 4, 4 * TILE_ROWS),
            _ => (TILE_ROWS, 4 * TILE_ROWS),
        };
        c.rows[t] = rows as u8;
        c.bytes_per_row[t] = bytes as u16;
        t += 1;
    }
    c
};

/// Proof that the CPU has AMX-TILE and AMX-INT8 (and the AVX-512 the scaling takes), that the
/// kernel granted the tile state, and that `CHORD_LLM_INT8_TILES=0` did not turn the tiles off:
/// made only by [`Int8Tiles::get`].
#[derive(Clone, Copy)]
pub(crate) struct Int8Tiles(());

impl Int8Tiles {
    pub(crate) fn get() -> Option<Int8Tiles> {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        let available = *AVAILABLE.get_or_init(|| {
            let wanted = std::env::var("CHORD_LLM_INT8_TILES").map_or(true, |v| v != "0");
            wanted && Self::hardware()
        });
        available.then_some(Int8Tiles(()))
    }

    /// Whether the CPU and the system can run the products, whatever the environment asks.
    pub(crate) fn hardware() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("f16c")
            && cpu_has_amx(AMX_INT8)
            && tile_data_granted()
    }

    /// The proof, for tests that compare the tiles with the kernels whatever the environment.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Option<Int8Tiles> {
        Self::hardware().then_some(Int8Tiles(()))
    }
}

/// How a run's integer products are scaled and added, as the VNNI kernels do it; `d_w`, `m_w`,
/// `sc`, `m` are the strip's per-row fields 0-3, `f0`, `f1` the token's (see [`TokenScalars`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// Q4_0, Q5_0, Q8_0: `acc += (d_w * d_a) * dot`.
    Scale,
    /// Q4_1, Q5_1: then `acc += m_w * s_a` (`s_a`: the Q8_1 block's `d * sum`).
    ScaleAndMin,
    /// Q4_K: `acc += (d * a_d) * (dot * sc)`, then `acc -= (dmin * a_d) * (sum_a * m)`, where
    /// `sum_a` is the group's sum of activation quants.
    KQuant,
}

/// A weight format the tiles take, and how.
#[derive(Clone, Copy)]
struct Format {
    ty: GgmlType,
    block_len: usize,
    block_bytes: usize,
    act_ty: GgmlType,
    act_block_bytes: usize,
    /// Weights as signed bytes, against `tdpbssd` (Q4_0 and Q5_0 with their offset taken off,
    /// which gives the integers the VNNI kernels get by subtracting `offset * sum(a)`; Q8_0),
    /// or unsigned, against `tdpbsud`.
    signed: bool,
    /// Subtracted from each quant: Q4_0's 8, Q5_0's 16.
    offset: i8,
    finish: Finish,
}

impl Format {
    fn of(ty: GgmlType) -> Option<Format> {
        use GgmlType::*;
        let (act_ty, act_block_bytes, signed, offset, finish) = match ty {
            Q4_0 => (Q8_0, 34, true, 8, Finish::Scale),
            Q5_0 => (Q8_0, 34, true, 16, Finish::Scale),
            Q8_0 => (Q8_0, 34, true, 0, Finish::Scale),
            Q4_1 | Q5_1 => (Q8_1, 36, false, 0, Finish::ScaleAndMin),
            Q4_K => (Q8_K, 292, false, 0, Finish::KQuant),
            _ => return None,
        };
        let (block_len, block_bytes) = (ty.block_len() as usize, ty.block_bytes() as usize);
        Some(Format { ty, block_len, block_bytes, act_ty, act_block_bytes, signed, offset, finish })
    }

    /// Where run `run`'s 32 quants start in an activation row.
    fn act_quants_at(self, run: usize) -> usize {
        match self.finish {
            // Q8_K: `d` (f32), then 256 quants.
            Finish::KQuant => (run / 8) * self.act_block_bytes + 4 + RUN * (run % 8),
            // Q8_0, Q8_1: the quants end the block.
            _ => run * self.act_block_bytes + self.act_block_bytes - RUN,
        }
    }
}

/// Whether the tiles multiply `ty` weights.
pub(crate) fn supports(ty: GgmlType) -> bool {
    Format::of(ty).is_some()
}

/// Per token tile, run and field, 16 tokens' f32 scalars: field 0 the activations' `d` (Q8_0
/// and Q8_1: the table's column 0; Q8_K: the block's `d`); field 1 Q8_1's `s` (column 1) or
/// Q8_K's group sum.
#[derive(Default)]
struct TokenScalars(Vec<f32>);

impl TokenScalars {
    const PER_RUN: usize = 2 * TILE_ROWS;

    fn fill(&mut self, format: Format, nb: usize, runs: usize, tiles: &[&[u8]], act_bytes: usize) {
        self.0.clear();
        self.0.resize(tiles.len() * runs * Self::PER_RUN, 0.0);
        let f32_at = |row: &[u8], at: usize| f32::from_le_bytes(row[at..at + 4].try_into().expect("4 bytes"));
        let i16_at = |row: &[u8], at: usize| i16::from_le_bytes([row[at], row[at + 1]]) as i32;
        let columns = match format.finish {
            Finish::KQuant => [0, 0],
            _ => [0, 1].map(|c| crate::quant::simd_column_at(format.act_ty, nb, c)),
        };
        for (tile, out) in tiles.iter().zip(self.0.chunks_exact_mut(runs * Self::PER_RUN)) {
            for (m, row) in tile.chunks_exact(act_bytes).enumerate() {
                for (run, out) in out.chunks_exact_mut(Self::PER_RUN).enumerate() {
                    let (f0, f1) = match format.finish {
                        Finish::KQuant => {
                            let block = (run / 8) * format.act_block_bytes;
                            let sums = block + 4 + 256 + 4 * (run % 8);
                            (f32_at(row, block), (i16_at(row, sums) + i16_at(row, sums + 2)) as f32)
                        }
                        Finish::ScaleAndMin => (f32_at(row, columns[0] + 4 * run), f32_at(row, columns[1] + 4 * run)),
                        Finish::Scale => (f32_at(row, columns[0] + 4 * run), 0.0),
                    };
                    out[m] = f0;
                    out[TILE_ROWS + m] = f1;
                }
            }
        }
    }

    fn of_tile(&self, tile: usize, runs: usize) -> &[f32] {
        &self.0[tile * runs * Self::PER_RUN..][..runs * Self::PER_RUN]
    }
}

/// Each thread's buffers, kept between calls (a strip of Qwen2.5-1.5B's down projection is
/// 280 KiB of quants).
#[derive(Default)]
struct Scratch {
    /// The strip's weights: per run, two weight tiles ([`WEIGHT_TILE_BYTES`] each).
    quants: Vec<u8>,
    /// The strip's scales: per run, [`FIELDS`] fields of [`STRIP_ROWS`] f32.
    scales: Vec<f32>,
    /// Interleaved weight rows put back in the file's layout, one strip at a time.
    file_rows: Vec<u8>,
    file_row: Vec<u8>,
    /// The last token tile's activation rows where fewer than 16 are left, zeros after them.
    padded: Vec<u8>,
    tokens: TokenScalars,
    /// Per token of two tiles, per weight tile, the eight lanes' accumulators for 16 rows.
    acc: Vec<__m512>,
}

thread_local!(static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default()));

/// `out[r * n_tokens + t]` = weight row `r` · activation row `t`, bit-identical to the AVX-512
/// VNNI batch kernel of `ty` (`interleaved`: weights rearranged by `quant::interleave_rows8`),
/// with activation rows as that set's quantizer makes them (`acts`, `n_tokens` rows). Returns
/// false (and writes nothing) for a type the tiles do not take.
///
/// Panics where the lengths do not fit together.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_rows_batch(
    _tiles: Int8Tiles,
    ty: GgmlType,
    cols: usize,
    weights: &[u8],
    interleaved: bool,
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) -> bool {
    let Some(format) = Format::of(ty) else { return false };
    assert!(cols > 0 && cols.is_multiple_of(format.block_len), "amx: {cols} columns are not whole {ty} blocks");
    let (nb, runs) = (cols / format.block_len, cols / RUN);
    let row_bytes = nb * format.block_bytes;
    let act_bytes = crate::quant::simd_act_row_bytes(format.act_ty, format.act_block_bytes, nb);
    assert!(weights.len().is_multiple_of(row_bytes), "amx: weights are not whole rows");
    let rows = weights.len() / row_bytes;
    assert_eq!(acts.len(), n_tokens * act_bytes, "amx: activations are not {n_tokens} rows");
    assert_eq!(out.len(), rows * n_tokens, "amx: out holds rows x tokens");
    // The gathers index rows by i32 offsets.
    assert!(TILE_ROWS * row_bytes < i32::MAX as usize, "amx: rows of {row_bytes} bytes are too long");
    if rows == 0 || n_tokens == 0 {
        return true;
    }
    SCRATCH.with_borrow_mut(|s| {
        let Scratch { quants, scales, file_rows, file_row, padded, tokens, acc } = s;
        let whole = n_tokens / TILE_ROWS;
        let mut tiles: Vec<&[u8]> = acts.chunks_exact(TILE_ROWS * act_bytes).collect();
        if n_tokens > whole * TILE_ROWS {
            padded.clear();
            padded.extend_from_slice(&acts[whole * TILE_ROWS * act_bytes..]);
            padded.resize(TILE_ROWS * act_bytes, 0);
            tiles.push(padded);
        }
        tokens.fill(format, nb, runs, &tiles, act_bytes);
        quants.resize(runs * 2 * WEIGHT_TILE_BYTES, 0);
        scales.resize(runs * FIELDS * STRIP_ROWS, 0.0);
        // SAFETY: `Int8Tiles` says the CPU has AVX-512F.
        acc.resize(2 * TILE_ROWS * 2 * LANES, unsafe { _mm512_setzero_ps() });
        for first_row in (0..rows).step_by(STRIP_ROWS) {
            let strip_rows = STRIP_ROWS.min(rows - first_row);
            let strip: &[u8] = if interleaved {
                file_rows.clear();
                for r in first_row..first_row + strip_rows {
                    crate::quant::file_layout_row(ty, cols, weights, r, file_row);
                    file_rows.extend_from_slice(file_row);
                }
                file_rows
            } else {
                &weights[first_row * row_bytes..(first_row + strip_rows) * row_bytes]
            };
            // SAFETY: `Int8Tiles` says the CPU has AVX-512F, BW and VL and F16C.
            unsafe { fill_strip(format, strip, row_bytes, strip_rows, nb, quants, scales) };
            for (pair, tiles) in tiles.chunks(2).enumerate() {
                let first_token = 2 * TILE_ROWS * pair;
                let token_scalars: Vec<&[f32]> = (0..tiles.len()).map(|k| tokens.of_tile(2 * pair + k, runs)).collect();
                let unit = Unit { format, runs, act_bytes, quants, scales };
                // SAFETY: `Int8Tiles` says the CPU has AMX-TILE and AMX-INT8, the tile state is
                // granted, and AVX-512F, BW and VL and F16C; `CONFIG` is a valid configuration,
                // loaded while the products run.
                unsafe {
                    with_tile_config(&CONFIG, || match (tiles, &token_scalars[..]) {
                        (&[a0, a1], &[t0, t1]) => unit.multiply::<2>([a0, a1], [t0, t1], acc),
                        (&[a0], &[t0]) => unit.multiply::<1>([a0], [t0], acc),
                        _ => unreachable!("pairs of token tiles"),
                    })
                };
                let tokens_here = (n_tokens - first_token).min(tiles.len() * TILE_ROWS);
                // SAFETY: as for `fill_strip`.
                unsafe { write_sums(acc, first_row, strip_rows, first_token, tokens_here, n_tokens, out) };
            }
        }
    });
    true
}

/// One strip's weights (quants and scales, as [`fill_strip`] laid them out) against up to two
/// token tiles.
struct Unit<'a> {
    format: Format,
    runs: usize,
    act_bytes: usize,
    quants: &'a [u8],
    scales: &'a [f32],
}

/// The four product tiles of a run: (token tile, weight tile) = (0, 0), (0, 1), (1, 0), (1, 1),
/// each 16 tokens x 16 rows of i32.
#[repr(C, align(64))]
struct Dots([[i32; TILE_ROWS * TILE_ROWS]; 4]);

impl Unit<'_> {
    /// `acc[((tt * 16 + m) * 2 + wt) * 8 + lane]`: lane `lane` of token `m` of token tile `tt`
    /// against the 16 rows of weight tile `wt`, over every run.
    ///
    /// # Safety
    /// Runs inside `with_tile_config(&CONFIG)` on a CPU with AMX-INT8, AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn multiply<const NT: usize>(&self, acts: [&[u8]; NT], token_scalars: [&[f32]; NT], acc: &mut [__m512]) {
        let acc = &mut acc[..NT * TILE_ROWS * 2 * LANES];
        acc.fill(_mm512_setzero_ps());
        let mut dots = Dots([[0; TILE_ROWS * TILE_ROWS]; 4]);
        let stride = self.act_bytes;
        for run in 0..self.runs {
            let weights = &self.quants[run * 2 * WEIGHT_TILE_BYTES..][..2 * WEIGHT_TILE_BYTES];
            let at = self.format.act_quants_at(run);
            // The 16th activation row read ends at 15 * stride + at + 32 <= 16 * stride.
            let a: [&[u8]; NT] = acts.map(|tile| &tile[at..(TILE_ROWS - 1) * stride + at + RUN]);
            // SAFETY: the function's promise (tiles 0-7 configured as `CONFIG`); tmm6 and tmm7
            // read 8 rows of 64 bytes at a stride of 64: the two weight tiles of `weights`.
            unsafe {
                asm!(
                    "tileloadd tmm6, [{w} + {s64} * 1]",
                    "tileloadd tmm7, [{w1} + {s64} * 1]",
                    w = in(reg) weights.as_ptr(),
                    w1 = in(reg) weights[WEIGHT_TILE_BYTES..].as_ptr(),
                    s64 = in(reg) 64usize,
                    options(nostack, readonly),
                )
            };
            macro_rules! token_tile {
                ($tdp:literal, $c0:literal, $c1:literal, $a:literal, $act:expr, $out:expr) => {
                    // SAFETY: the function's promise; the activation tile reads 16 rows of 32
                    // bytes at a stride of one activation row, inside `$act`; the stores write
                    // two tiles of 16 rows of 64 bytes at a stride of 64, into `$out`
                    // (2 x 1 KiB).
                    unsafe {
                        asm!(
                            concat!("tilezero ", $c0),
                            concat!("tilezero ", $c1),
                            concat!("tileloadd ", $a, ", [{a} + {sa} * 1]"),
                            concat!($tdp, " ", $c0, ", ", $a, ", tmm6"),
                            concat!($tdp, " ", $c1, ", ", $a, ", tmm7"),
                            concat!("tilestored [{o} + {s64} * 1], ", $c0),
                            concat!("tilestored [{o1} + {s64} * 1], ", $c1),
                            a = in(reg) $act.as_ptr(),
                            sa = in(reg) stride,
                            o = in(reg) $out.as_mut_ptr(),
                            o1 = in(reg) $out[1..].as_mut_ptr(),
                            s64 = in(reg) 64usize,
                            options(nostack),
                        )
                    }
                };
            }
            let (first, second) = dots.0.split_at_mut(2);
            match self.format.signed {
                true => token_tile!("tdpbssd", "tmm0", "tmm1", "tmm4", a[0], first),
                false => token_tile!("tdpbsud", "tmm0", "tmm1", "tmm4", a[0], first),
            }
            if NT == 2 {
                match self.format.signed {
                    true => token_tile!("tdpbssd", "tmm2", "tmm3", "tmm5", a[1], second),
                    false => token_tile!("tdpbsud", "tmm2", "tmm3", "tmm5", a[1], second),
                }
            }
            self.finish_run(run, &dots, token_scalars, acc);
        }
    }

    /// Adds run `run`'s products to its lane of every accumulator, as the VNNI kernels'
    /// `finish_lanes` (32-value formats) and `q4_k_finish` (Q4_K) do for one row and token.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn finish_run<const NT: usize>(&self, run: usize, dots: &Dots, token_scalars: [&[f32]; NT], acc: &mut [__m512]) {
        let lane = run % LANES;
        let scales: &[f32; FIELDS * STRIP_ROWS] =
            self.scales[run * FIELDS * STRIP_ROWS..][..FIELDS * STRIP_ROWS].try_into().expect("a run's scales");
        let field = |f: usize, wt: usize| load16(&scales[f * STRIP_ROWS + TILE_ROWS * wt..]);
        for (tt, scalars) in token_scalars.iter().enumerate() {
            let scalars = &scalars[run * TokenScalars::PER_RUN..][..TokenScalars::PER_RUN];
            for m in 0..TILE_ROWS {
                let (f0, f1) = (_mm512_set1_ps(scalars[m]), _mm512_set1_ps(scalars[TILE_ROWS + m]));
                for wt in 0..2 {
                    let products = &dots.0[2 * tt + wt][TILE_ROWS * m..][..TILE_ROWS];
                    // SAFETY: 16 i32, the length of `products`.
                    let products = _mm512_cvtepi32_ps(unsafe { _mm512_loadu_si512(products.as_ptr().cast()) });
                    let acc = &mut acc[((tt * TILE_ROWS + m) * 2 + wt) * LANES + lane];
                    match self.format.finish {
                        Finish::Scale => *acc = _mm512_fmadd_ps(_mm512_mul_ps(field(0, wt), f0), products, *acc),
                        Finish::ScaleAndMin => {
                            *acc = _mm512_fmadd_ps(_mm512_mul_ps(field(0, wt), f0), products, *acc);
                            *acc = _mm512_fmadd_ps(field(1, wt), f1, *acc);
                        }
                        Finish::KQuant => {
                            // dot * sc and sum_a * m are integers below 2^24, exact in f32 as
                            // the kernels' i32 products converted are.
                            let main = _mm512_mul_ps(products, field(2, wt));
                            let min = _mm512_mul_ps(f1, field(3, wt));
                            *acc = _mm512_fmadd_ps(_mm512_mul_ps(field(0, wt), f0), main, *acc);
                            *acc = _mm512_fnmadd_ps(_mm512_mul_ps(field(1, wt), f0), min, *acc);
                        }
                    }
                }
            }
        }
    }
}

/// 16 f32 from the start of `v`.
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(v: &[f32]) -> __m512 {
    let v = &v[..16];
    // SAFETY: 16 f32, the length of `v`.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// Each accumulator's eight lanes summed in `hsum`'s order, into `out` (rows x `n_tokens`):
/// strip rows `..strip_rows` (weight rows `first_row..`), tokens `first_token..` (`tokens` of
/// them).
#[target_feature(enable = "avx512f")]
fn write_sums(
    acc: &[__m512],
    first_row: usize,
    strip_rows: usize,
    first_token: usize,
    tokens: usize,
    n_tokens: usize,
    out: &mut [f32],
) {
    for m in 0..tokens {
        for wt in 0..2 {
            let v: &[__m512; LANES] = acc[(m * 2 + wt) * LANES..][..LANES].try_into().expect("eight lanes");
            let pairs: [__m512; 4] = std::array::from_fn(|k| _mm512_add_ps(v[k], v[k + 4]));
            let sum = _mm512_add_ps(_mm512_add_ps(pairs[0], pairs[2]), _mm512_add_ps(pairs[1], pairs[3]));
            let mut lanes = [0.0f32; TILE_ROWS];
            // SAFETY: 16 f32, the length of `lanes`.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
            for (i, &v) in lanes.iter().enumerate().take(strip_rows.saturating_sub(TILE_ROWS * wt)) {
                out[(first_row + TILE_ROWS * wt + i) * n_tokens + first_token + m] = v;
            }
        }
    }
}

/// Lays out a strip's weights (`strip`: `strip_rows` rows of `row_bytes`, in the file's
/// layout) for the tiles: per run, two weight tiles of 8 rows x 64 bytes, row `k` holding four
/// quants `4k..4k + 4` of each of 16 weight rows (as bytes: signed with the format's offset
/// taken off, or unsigned), and the rows' scales; rows past `strip_rows` are zeros.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn fill_strip(
    format: Format,
    strip: &[u8],
    row_bytes: usize,
    strip_rows: usize,
    nb: usize,
    quants: &mut [u8],
    scales: &mut [f32],
) {
    scales.fill(0.0);
    let runs = nb * format.block_len / RUN;
    let offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(row_bytes as i32),
    );
    let low4 = _mm512_set1_epi8(0x0f);
    let offset = _mm512_set1_epi8(format.offset);
    for wt in 0..2 {
        let live = strip_rows.saturating_sub(TILE_ROWS * wt).min(TILE_ROWS);
        let store_tile = |quants: &mut [u8], run: usize, k: usize, v: __m512i| {
            let at = &mut quants[(2 * run + wt) * WEIGHT_TILE_BYTES + 64 * k..][..64];
            // SAFETY: 64 bytes, the length of `at`.
            unsafe { _mm512_storeu_si512(at.as_mut_ptr().cast(), v) };
        };
        let store_scales = |scales: &mut [f32], run: usize, field: usize, v: __m512| {
            let at = &mut scales[(run * FIELDS + field) * STRIP_ROWS + TILE_ROWS * wt..][..TILE_ROWS];
            // SAFETY: 16 f32, the length of `at`.
            unsafe { _mm512_storeu_ps(at.as_mut_ptr(), v) };
        };
        if live == 0 {
            for run in 0..runs {
                for k in 0..RUN / 4 {
                    store_tile(quants, run, k, _mm512_setzero_si512());
                }
            }
            continue;
        }
        let mask: __mmask16 = ((1u32 << live) - 1) as __mmask16;
        let rows = &strip[TILE_ROWS * wt * row_bytes..][..live * row_bytes];
        // Four bytes at `at` of each of the tile's rows (zeros past `live`).
        let gather = |at: usize| -> __m512i {
            assert!(at + 4 <= row_bytes);
            let from = &rows[at..];
            // SAFETY: the lanes read (those of `mask`, rows 0..live) read 4 bytes at
            // `r * row_bytes` from `from` for r < live, inside `rows` as `at + 4 <= row_bytes`.
            unsafe { _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, offsets, from.as_ptr().cast()) }
        };
        let f16_pair = |at: usize| {
            let words = gather(at);
            let first = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words));
            let second = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(words)));
            (first, second)
        };
        if format.finish == Finish::KQuant {
            for i in 0..nb {
                let block = i * format.block_bytes;
                let (d, dmin) = f16_pair(block);
                for g in 0..8 {
                    store_scales(scales, 8 * i + g, 0, d);
                    store_scales(scales, 8 * i + g, 1, dmin);
                }
                for r in 0..live {
                    let head = &rows[r * row_bytes + block + 4..][..12];
                    let (sc, m) = scales_mins_k4(head.try_into().expect("12 bytes"));
                    for g in 0..8 {
                        let at = ((8 * i + g) * FIELDS) * STRIP_ROWS + TILE_ROWS * wt + r;
                        scales[at + 2 * STRIP_ROWS] = sc[g] as f32;
                        scales[at + 3 * STRIP_ROWS] = m[g] as f32;
                    }
                }
                for c in 0..4 {
                    for k in 0..RUN / 4 {
                        let q = gather(block + 16 + 32 * c + 4 * k);
                        store_tile(quants, 8 * i + 2 * c, k, _mm512_and_si512(q, low4));
                        store_tile(quants, 8 * i + 2 * c + 1, k, _mm512_and_si512(_mm512_srli_epi32::<4>(q), low4));
                    }
                }
            }
            continue;
        }
        let layout = GroupLayout::of(format.ty);
        let quants_at = 2 * layout.fields + if layout.five_bit { 4 } else { 0 };
        // Fifth bits x (four of them, bits 0..4) spread to bit 4 of four bytes.
        let spread = _mm512_setr_epi32(
            0x0000_0000,
            0x0000_0010,
            0x0000_1000,
            0x0000_1010,
            0x0010_0000,
            0x0010_0010,
            0x0010_1000,
            0x0010_1010,
            0x1000_0000,
            0x1000_0010,
            0x1000_1000,
            0x1000_1010,
            0x1010_0000,
            0x1010_0010,
            0x1010_1000,
            0x1010_1010,
        );
        let fifth = |bits: __m512i, shift: u32| {
            _mm512_permutexvar_epi32(
                _mm512_and_si512(_mm512_srlv_epi32(bits, _mm512_set1_epi32(shift as i32)), _mm512_set1_epi32(0xf)),
                spread,
            )
        };
        for b in 0..nb {
            let block = b * format.block_bytes;
            let (d, m) = f16_pair(block);
            store_scales(scales, b, 0, d);
            store_scales(scales, b, 1, m);
            if layout.quant_bytes == 32 {
                for k in 0..RUN / 4 {
                    store_tile(quants, b, k, gather(block + quants_at + 4 * k));
                }
                continue;
            }
            let high_bits = if layout.five_bit { gather(block + 2 * layout.fields) } else { _mm512_setzero_si512() };
            for k in 0..4 {
                let q = gather(block + quants_at + 4 * k);
                let mut low = _mm512_and_si512(q, low4);
                let mut high = _mm512_and_si512(_mm512_srli_epi32::<4>(q), low4);
                if layout.five_bit {
                    low = _mm512_or_si512(low, fifth(high_bits, 4 * k as u32));
                    high = _mm512_or_si512(high, fifth(high_bits, 16 + 4 * k as u32));
                }
                store_tile(quants, b, k, _mm512_sub_epi8(low, offset));
                store_tile(quants, b, 4 + k, _mm512_sub_epi8(high, offset));
            }
        }
    }
}
