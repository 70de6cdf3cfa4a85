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
//! operations, in the same order, vectorized over 16 weight rows instead of 8 lanes. Q6_K,
//! whose 16-value groups have scales of their own, takes products 16 bytes deep (a tile
//! configuration of its own) and sums each block's groups times their scales in i32 before it
//! scales the block, as its VNNI kernel does.
//!
//! Layout: the activation tile is 16 tokens' 32 quants of a run, read straight from the Q8 rows
//! (a stride of one activation row); the weight tile is 16 weight rows' 32 quants of that run as
//! `tdpb*d` reads its second operand (row `k`: four quants `4k..4k + 4` of each weight row),
//! which [`fill_strip`] lays out once per strip of 32 rows by gathering from the rows. Products
//! come out as 16 tokens by 16 rows of i32 and are scaled by the vector of 16 rows' scales.
//!
//! On a CPU with AVX-512 VNNI and no AMX, the same tile products are taken with 512-bit
//! `vpdpbusd` ([`Unit::vnni_products`]), the same integers; everything else is shared.

use super::amx::{cpu_has_amx, tile_data_granted, with_tile_config, TileConfig, AMX_INT8, NO_CONFIG};
use super::avx2::prefetch_lines;
use crate::quant::interleave::{q4_k_position, GroupLayout};
use crate::quant::{ProductLayout, PRODUCT_STRIP_ROWS};
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
const _: () = assert!(STRIP_ROWS == PRODUCT_STRIP_ROWS, "the strips of `ProductLayout::Strips` are the tiles'");
/// Bytes of one weight tile of one run: 8 rows of 16 weight rows' four quants.
const WEIGHT_TILE_BYTES: usize = TILE_ROWS * RUN;
/// The VNNI kernels' accumulator lanes: run `r` adds into lane `r % LANES`.
const LANES: usize = 8;
/// f32 fields per weight row and run in a strip's scales (see [`Finish`]).
const FIELDS: usize = 4;
/// Q6_K's groups: 16 values, each with its own scale, so its products take 16 bytes of the
/// inner dimension at a time and its weight tiles are 4 rows of 64 bytes.
const Q6_K_GROUP: usize = 16;
const Q6_K_WEIGHT_TILE_BYTES: usize = TILE_ROWS * Q6_K_GROUP;

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

/// [`CONFIG`] for Q6_K: activation tiles of 16 bytes a row, weight tiles of 4 rows.
const CONFIG_Q6_K: TileConfig = {
    let mut c = CONFIG;
    c.bytes_per_row[4] = Q6_K_GROUP as u16;
    c.bytes_per_row[5] = Q6_K_GROUP as u16;
    c.rows[6] = (Q6_K_GROUP / 4) as u8;
    c.rows[7] = (Q6_K_GROUP / 4) as u8;
    c
};

/// How the tile products ([`Unit::products`]) are taken: by AMX tiles (`tdpbssd`, `tdpbsud`),
/// or, on a CPU without them, by AVX-512 VNNI with the same integers (see
/// [`Unit::vnni_products`]). Everything else, the strips, the scaling and the sums, is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileProducts {
    Amx,
    Vnni,
}

/// Proof that the CPU can take the tile products as [`TileProducts`] says (AMX-TILE and
/// AMX-INT8 with the tile state granted, or AVX-512 VNNI), has the AVX-512 the scaling takes,
/// and that `CHORD_LLM_INT8_TILES=0` did not turn the tiles off: made only by
/// [`Int8Tiles::get`] and, for tests, [`Int8Tiles::for_tests`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Int8Tiles(TileProducts);

impl Int8Tiles {
    /// AMX tiles where the CPU has them. Elsewhere VNNI products on Intel CPUs with AVX-512
    /// VNNI: on an Intel Xeon without AMX (family 6 model 207, a 2-vCPU KVM guest), a 128-token
    /// prompt at one thread against the rows-in-lanes kernels, medians of 3 alternated runs:
    /// Qwen2.5-1.5B 44.9 -> 66.3 tok/s, Qwen2.5-0.5B 147 -> 264, Gemma-3-270M 451 -> 740,
    /// SmolLM2 448 -> 691 (see [`Unit::vnni_products`]). Not on AMD, where it was not measured
    /// (Zen 4 splits 512-bit operations in two).
    pub(crate) fn get() -> Option<Int8Tiles> {
        static CHOSEN: OnceLock<Option<TileProducts>> = OnceLock::new();
        let chosen = *CHOSEN.get_or_init(|| {
            let wanted = std::env::var("CHORD_LLM_INT8_TILES").map_or(true, |v| v != "0");
            if !wanted {
                None
            } else if Self::amx() {
                Some(TileProducts::Amx)
            } else if Self::vnni() && !super::cpu_vendor_is_amd() {
                Some(TileProducts::Vnni)
            } else {
                None
            }
        });
        chosen.map(Int8Tiles)
    }

    /// Whether the CPU and the system can run the products on AMX tiles, whatever the
    /// environment asks.
    fn amx() -> bool {
        Self::vnni() && cpu_has_amx(AMX_INT8) && tile_data_granted()
    }

    /// Whether the CPU can run the products with AVX-512 VNNI (and the scaling).
    fn vnni() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("f16c")
    }

    /// Every way this CPU can take the products, for tests that compare them with the kernels
    /// whatever the environment and the vendor.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Vec<Int8Tiles> {
        let amx = Self::amx().then_some(Int8Tiles(TileProducts::Amx));
        let vnni = Self::vnni().then_some(Int8Tiles(TileProducts::Vnni));
        amx.into_iter().chain(vnni).collect()
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
    /// Q6_K: per block, `total = sum_g sc[g] * ((q - 32) . a)` over its 16-value groups in
    /// integers, then `acc += (d_w * a_d) * total`.
    Q6K,
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
        let (signed, offset, finish) = match ty {
            Q4_0 => (true, 8, Finish::Scale),
            Q5_0 => (true, 16, Finish::Scale),
            Q8_0 => (true, 0, Finish::Scale),
            Q4_1 | Q5_1 => (false, 0, Finish::ScaleAndMin),
            Q4_K => (false, 0, Finish::KQuant),
            Q6_K => (true, 32, Finish::Q6K),
            _ => return None,
        };
        let (block_len, block_bytes) = (ty.block_len() as usize, ty.block_bytes() as usize);
        let act_ty = crate::quant::vec_dot_type(ty);
        let act_block_bytes = act_ty.block_bytes() as usize;
        Some(Format { ty, block_len, block_bytes, act_ty, act_block_bytes, signed, offset, finish })
    }

    /// Product steps of a row of `runs` runs: the runs, or Q6_K's groups of 16 (two a run).
    fn product_steps(self, runs: usize) -> usize {
        if self.finish == Finish::Q6K {
            runs * RUN / Q6_K_GROUP
        } else {
            runs
        }
    }

    /// Where run `run`'s 32 quants start in an activation row (Q6_K: group `run`'s 16).
    fn act_quants_at(self, run: usize) -> usize {
        match self.finish {
            // Q8_K: `d` (f32), then 256 quants.
            Finish::KQuant => (run / 8) * self.act_block_bytes + 4 + RUN * (run % 8),
            Finish::Q6K => (run / 16) * self.act_block_bytes + 4 + Q6_K_GROUP * (run % 16),
            // Q8_0, Q8_1: the quants end the block.
            _ => run * self.act_block_bytes + self.act_block_bytes - RUN,
        }
    }
}

/// Whether the tiles multiply `ty` weights.
pub(crate) fn supports(ty: GgmlType) -> bool {
    Format::of(ty).is_some()
}

/// Per token tile, run (Q6_K: block) and field, 16 tokens' f32 scalars: field 0 the
/// activations' `d` (Q8_0 and Q8_1: the table's column 0; Q8_K: the block's `d`); field 1
/// Q8_1's `s` (column 1) or, for Q4_K, Q8_K's group sum.
#[derive(Default)]
struct TokenScalars(Vec<f32>);

impl TokenScalars {
    const PER_RUN: usize = 2 * TILE_ROWS;

    /// Each value is gathered from the tile's 16 rows at once: one at a time, at a stride of an
    /// activation row, this took 2.8% of SmolLM2's prompts at 2 threads, done again for every
    /// chunk of rows a thread takes.
    #[target_feature(enable = "avx512f")]
    fn fill(&mut self, format: Format, nb: usize, runs: usize, tiles: &[&[u8]], act_bytes: usize) {
        // Every entry is written below: resized without clearing, it is not zeroed first.
        self.0.resize(tiles.len() * runs * Self::PER_RUN, 0.0);
        let columns = match format.finish {
            Finish::KQuant | Finish::Q6K => [0, 0],
            _ => [0, 1].map(|c| crate::quant::simd_column_at(format.act_ty, nb, c)),
        };
        let rows = WeightTile::stride_index(act_bytes);
        for (tile, out) in tiles.iter().zip(self.0.chunks_exact_mut(runs * Self::PER_RUN)) {
            // The four bytes at `at` of each of the tile's 16 rows.
            let words = |at: usize| {
                assert!(15 * act_bytes + at + 4 <= tile.len(), "amx: a token scalar past the tile");
                // SAFETY: lane `m` reads the 4 bytes at `m * act_bytes + at`, inside `tile`
                // (checked above).
                unsafe { _mm512_i32gather_epi32::<1>(rows, tile[at..].as_ptr().cast()) }
            };
            let f32s = |at: usize| _mm512_castsi512_ps(words(at));
            for (run, out) in out.chunks_exact_mut(Self::PER_RUN).enumerate() {
                let (f0, f1) = match format.finish {
                    Finish::KQuant => {
                        let block = (run / 8) * format.act_block_bytes;
                        // The group's two i16 sums of 16 quants, sign-extended and added.
                        let sums = words(block + 4 + 256 + 4 * (run % 8));
                        let low = _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(sums));
                        (f32s(block), _mm512_cvtepi32_ps(_mm512_add_epi32(low, _mm512_srai_epi32::<16>(sums))))
                    }
                    Finish::ScaleAndMin => (f32s(columns[0] + 4 * run), f32s(columns[1] + 4 * run)),
                    Finish::Scale => (f32s(columns[0] + 4 * run), _mm512_setzero_ps()),
                    // Q6_K's runs here are its blocks.
                    Finish::Q6K => (f32s(run * format.act_block_bytes), _mm512_setzero_ps()),
                };
                let (first, second) = out.split_at_mut(TILE_ROWS);
                // SAFETY: 16 f32 each, the lengths of `first` and `second`.
                unsafe {
                    _mm512_storeu_ps(first.as_mut_ptr(), f0);
                    _mm512_storeu_ps(second.as_mut_ptr(), f1);
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
    /// The strip's scales: per run (Q6_K: block), [`FIELDS`] fields of [`STRIP_ROWS`] f32.
    scales: Vec<f32>,
    /// Q6_K's: per group, [`STRIP_ROWS`] 8-bit scales as i32.
    group_scales: Vec<i32>,
    /// The last token tile's activation rows where fewer than 16 are left, zeros after them.
    padded: Vec<u8>,
    tokens: TokenScalars,
    /// For VNNI products of signed weights, [`fill_quant_sums`]'s sums.
    quant_sums: Vec<i32>,
    /// Per token of two tiles, per weight tile, the eight lanes' accumulators for 16 rows.
    acc: Vec<__m512>,
}

thread_local!(static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default()));

/// Weight row `r` · activation row `t` for every pair, into `out` laid out as `layout` (row-major
/// `out[r * n_tokens + t]`, or strips as `quant::ProductLayout::Strips` says), bit-identical to
/// the AVX-512 VNNI batch kernel of `ty` (`interleaved`: weights rearranged by
/// `quant::interleave_rows8`), with activation rows as that set's quantizer makes them (`acts`,
/// `n_tokens` rows). Returns false (and writes nothing) for a type the tiles do not take.
///
/// Panics where the lengths do not fit together.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_rows_batch(
    tiles: Int8Tiles,
    ty: GgmlType,
    cols: usize,
    weights: &[u8],
    interleaved: bool,
    acts: &[u8],
    n_tokens: usize,
    layout: ProductLayout,
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
        let Scratch { quants, scales, group_scales, padded, tokens, quant_sums, acc } = s;
        let whole = n_tokens / TILE_ROWS;
        let products = tiles.0;
        let mut tiles: Vec<&[u8]> = acts.chunks_exact(TILE_ROWS * act_bytes).collect();
        if n_tokens > whole * TILE_ROWS {
            padded.clear();
            padded.extend_from_slice(&acts[whole * TILE_ROWS * act_bytes..]);
            padded.resize(TILE_ROWS * act_bytes, 0);
            tiles.push(padded);
        }
        let steps = format.product_steps(runs);
        quant_sums.clear();
        if products == TileProducts::Vnni && format.signed {
            fill_quant_sums(format, nb, steps, &tiles, act_bytes, quant_sums);
        }
        // Q6_K's scalars, and its integer sums, are per block.
        let scalar_runs = if format.finish == Finish::Q6K { nb } else { runs };
        // SAFETY: `Int8Tiles` says the CPU has AVX-512F.
        unsafe { tokens.fill(format, nb, scalar_runs, &tiles, act_bytes) };
        // As many bytes for Q6_K's groups of 16 as for the runs of 32.
        quants.resize(runs * 2 * WEIGHT_TILE_BYTES, 0);
        scales.resize(runs * FIELDS * STRIP_ROWS, 0.0);
        group_scales.resize(cols / Q6_K_GROUP * STRIP_ROWS, 0);
        // SAFETY: `Int8Tiles` says the CPU has AVX-512F.
        acc.resize(2 * TILE_ROWS * 2 * LANES, unsafe { _mm512_setzero_ps() });
        let config = if format.finish == Finish::Q6K { &CONFIG_Q6_K } else { &CONFIG };
        // SAFETY: `Int8Tiles` says the CPU takes `products` as they are asked for (for AMX: it
        // has AMX-TILE and AMX-INT8, and the tile state is granted), and has AVX-512F, BW, VL
        // and VNNI and F16C; with AMX products, `config` is a valid configuration (the one
        // `Unit::multiply` asks for this format), loaded while they run.
        unsafe {
            let mut run_strips = || {
                for first_row in (0..rows).step_by(STRIP_ROWS) {
                    let strip_rows = STRIP_ROWS.min(rows - first_row);
                    let strip = &weights[first_row * row_bytes..(first_row + strip_rows) * row_bytes];
                    fill_strip(format, interleaved, strip, row_bytes, strip_rows, nb, quants, scales, group_scales);
                    let next_strip = &weights[(first_row + strip_rows) * row_bytes..];
                    let next_strip = &next_strip[..next_strip.len().min(STRIP_ROWS * row_bytes)];
                    for (pair, tiles) in tiles.chunks(2).enumerate() {
                        let ahead = if pair == 0 { next_strip } else { &[] };
                        let pair_sums = quant_sums.get(2 * pair * steps * TILE_ROWS..).unwrap_or(&[]);
                        let unit = Unit {
                            format,
                            products,
                            runs,
                            act_bytes,
                            quants,
                            scales,
                            group_scales,
                            quant_sums: pair_sums,
                            ahead,
                        };
                        let scalars = |k: usize| tokens.of_tile(2 * pair + k, scalar_runs);
                        match *tiles {
                            [a0, a1] => unit.multiply::<2>([a0, a1], [scalars(0), scalars(1)], acc),
                            [a0] => unit.multiply::<1>([a0], [scalars(0)], acc),
                            _ => unreachable!("pairs of token tiles"),
                        }
                        let first_token = 2 * TILE_ROWS * pair;
                        let tokens_here = (n_tokens - first_token).min(tiles.len() * TILE_ROWS);
                        let strip = &mut out[first_row * n_tokens..][..strip_rows * n_tokens];
                        write_sums(acc, strip_rows, first_token, tokens_here, n_tokens, layout, strip);
                    }
                }
            };
            match products {
                TileProducts::Amx => with_tile_config(config, run_strips),
                TileProducts::Vnni => run_strips(),
            }
        }
    });
    true
}

/// Per token tile, product step and token, the sum of the step's activation quants (at
/// `quant_sums[(tile * steps + step) * 16 + m]`): VNNI products of signed weights start from
/// -128 times it (see [`Unit::vnni_products`]). The activation rows carry these sums: Q8_0 rows
/// (against Q4_0, Q5_0, Q8_0) in their table's column of quant sums, one i32 per block, and
/// Q8_K rows (against Q6_K) as `bsums`, one i16 per 16 quants, a Q6_K group.
fn fill_quant_sums(
    format: Format,
    nb: usize,
    steps: usize,
    tiles: &[&[u8]],
    act_bytes: usize,
    quant_sums: &mut Vec<i32>,
) {
    let sum = |row: &[u8], step: usize| -> i32 {
        match format.act_ty {
            GgmlType::Q8_K => {
                let groups = 256 / Q6_K_GROUP;
                let at = (step / groups) * format.act_block_bytes + 4 + 256 + 2 * (step % groups);
                i16::from_le_bytes(row[at..at + 2].try_into().expect("2 bytes")) as i32
            }
            GgmlType::Q8_0 => {
                let at = crate::quant::simd_column_at(format.act_ty, nb, 1) + 4 * step;
                i32::from_le_bytes(row[at..at + 4].try_into().expect("4 bytes"))
            }
            other => unreachable!("amx: signed weights against {other} activations"),
        }
    };
    for tile in tiles {
        for step in 0..steps {
            quant_sums.extend((0..TILE_ROWS).map(|m| sum(&tile[m * act_bytes..][..act_bytes], step)));
        }
    }
}

/// One strip's weights (quants and scales, as [`fill_strip`] laid them out) against up to two
/// token tiles.
struct Unit<'a> {
    format: Format,
    products: TileProducts,
    runs: usize,
    act_bytes: usize,
    quants: &'a [u8],
    scales: &'a [f32],
    group_scales: &'a [i32],
    /// For VNNI products of signed weights: per token tile (of the unit's), step and token, the
    /// sum of the step's activation quants ([`fill_quant_sums`]); empty otherwise.
    quant_sums: &'a [i32],
    /// The next strip's weights, fetched into L2 while this one is multiplied (see
    /// [`Unit::fetch_ahead`]); empty where there is none or another unit fetches it.
    ahead: &'a [u8],
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
    /// On a CPU with AVX-512F, BW, VL and VNNI; with AMX products, one with AMX-INT8, inside
    /// `with_tile_config` with [`CONFIG`] (Q6_K: [`CONFIG_Q6_K`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn multiply<const NT: usize>(&self, acts: [&[u8]; NT], token_scalars: [&[f32]; NT], acc: &mut [__m512]) {
        let acc = &mut acc[..NT * TILE_ROWS * 2 * LANES];
        if self.format.finish == Finish::Q6K {
            // SAFETY: the function's promise, with `CONFIG_Q6_K`.
            return unsafe { self.multiply_q6_k(acts, token_scalars, acc) };
        }
        let each_lane_has_a_run = start_lanes(acc, self.runs);
        let mut dots = Dots([[0; TILE_ROWS * TILE_ROWS]; 4]);
        let mut block_scales = [_mm512_setzero_ps(); 2 * TILE_ROWS * 2 * 2];
        let stride = self.act_bytes;
        for run in 0..self.runs {
            self.fetch_ahead(run, self.runs);
            let weights = &self.quants[run * 2 * WEIGHT_TILE_BYTES..][..2 * WEIGHT_TILE_BYTES];
            let at = self.format.act_quants_at(run);
            // The 16th activation row read ends at 15 * stride + at + 32 <= 16 * stride.
            let a = from_row_byte(acts, at, stride, RUN);
            // SAFETY: the function's promise.
            unsafe { self.products::<NT, { RUN / 4 }>(run, weights, a, &mut dots) };
            if self.format.finish == Finish::KQuant && run % LANES == 0 {
                self.q4_k_block_scales(run, token_scalars, &mut block_scales);
            }
            match each_lane_has_a_run && run < LANES {
                true => self.finish_run::<NT, true>(run, &dots, token_scalars, &block_scales, acc),
                false => self.finish_run::<NT, false>(run, &dots, token_scalars, &block_scales, acc),
            }
        }
    }

    /// Q4_K: for the block that starts at run `run` (its eight groups, one per lane), each
    /// token's and weight tile's `d * a_d` and `dmin * a_d`, at `block_scales[v * 2 + {0, 1}]`
    /// for `v = (tt * 16 + m) * 2 + wt`. They are the same for all eight groups: computed once a
    /// block, they spare [`Unit::finish_run`] two of its seven operations per group (the same
    /// products, so the same values).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn q4_k_block_scales<const NT: usize>(&self, run: usize, token_scalars: [&[f32]; NT], block_scales: &mut [__m512]) {
        let scales = &self.scales[run * FIELDS * STRIP_ROWS..][..FIELDS * STRIP_ROWS];
        for (tt, scalars) in token_scalars.iter().enumerate() {
            let a_d = &scalars[run * TokenScalars::PER_RUN..][..TILE_ROWS];
            for (m, &a_d) in a_d.iter().enumerate() {
                let a_d = _mm512_set1_ps(a_d);
                for wt in 0..2 {
                    let v = (tt * TILE_ROWS + m) * 2 + wt;
                    block_scales[2 * v] = _mm512_mul_ps(load16(&scales[TILE_ROWS * wt..]), a_d);
                    block_scales[2 * v + 1] = _mm512_mul_ps(load16(&scales[STRIP_ROWS + TILE_ROWS * wt..]), a_d);
                }
            }
        }
    }

    /// The products of product step `step`, one run (Q6_K: one group), into `dots`: `weights`
    /// is its two weight tiles, one after the other, each `a[tt]` the 16 activation rows'
    /// quants of token tile `tt` (from the run's first byte, at a stride of one activation
    /// row). `DEPTH`: the tile's rows of four quants (8, Q6_K: 4).
    ///
    /// # Safety
    /// As for [`Unit::multiply`]; with AMX products, inside `with_tile_config` with the format's
    /// configuration, which sets the tiles' shapes: weight tiles of `DEPTH` rows of 64 bytes,
    /// filling `weights` (2 x 512 or 2 x 256 bytes), activation tiles of 16 rows of `4 * DEPTH`
    /// bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn products<const NT: usize, const DEPTH: usize>(
        &self,
        step: usize,
        weights: &[u8],
        a: [&[u8]; NT],
        dots: &mut Dots,
    ) {
        if self.products == TileProducts::Vnni {
            return self.vnni_products::<NT, DEPTH>(step, weights, a, dots);
        }
        let half = weights.len() / 2;
        // SAFETY: the function's promise; tmm6 and tmm7 read their rows of 64 bytes at a
        // stride of 64, each inside its half of `weights`.
        unsafe {
            asm!(
                "tileloadd tmm6, [{w} + {s64} * 1]",
                "tileloadd tmm7, [{w1} + {s64} * 1]",
                w = in(reg) weights.as_ptr(),
                w1 = in(reg) weights[half..].as_ptr(),
                s64 = in(reg) 64usize,
                options(nostack, readonly),
            )
        };
        let stride = self.act_bytes;
        macro_rules! token_tile {
            ($tdp:literal, $c0:literal, $c1:literal, $a:literal, $act:expr, $out:expr) => {
                // SAFETY: the function's promise; the activation tile reads 16 rows at a stride
                // of one activation row, inside `$act`; the stores write two tiles of 16 rows
                // of 64 bytes at a stride of 64, into `$out` (2 x 1 KiB).
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
                true => token_tile!("tdpbssd", "tmm2", "tmm3", "tmm5", a[NT - 1], second),
                false => token_tile!("tdpbsud", "tmm2", "tmm3", "tmm5", a[NT - 1], second),
            }
        }
    }

    /// [`Unit::products`] with AVX-512 VNNI, the same integers: per token, the 16 rows of a
    /// weight tile are the lanes of one vector, and `vpdpbusd` adds each row `k` of the tile
    /// (four quants of each weight row) times the token's quants `4k..4k + 4`, broadcast from
    /// memory. Per run of 32 and 16 tokens, 16 x 2 x 8 `vpdpbusd`, each on 64 bytes of a
    /// weight tile held in a register for all the tokens; the rows-in-lanes kernels take
    /// twice as many operations on 256-bit vectors for the same products, and decode their
    /// blocks once per pass of 8 or 16 tokens instead of once per strip.
    ///
    /// `vpdpbusd` multiplies unsigned by signed bytes: unsigned weights (`tdpbsud`'s case) go
    /// in as they are; signed ones (`tdpbssd`'s) go in offset to unsigned (`w + 128`, a flip
    /// of the top bit), and each token's sum starts from -128 times its quants' sum
    /// (`quant_sums`) instead of zero, which takes the offset back off exactly.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn vnni_products<const NT: usize, const DEPTH: usize>(
        &self,
        step: usize,
        weights: &[u8],
        a: [&[u8]; NT],
        dots: &mut Dots,
    ) {
        let tile_bytes = 64 * DEPTH;
        let offset = if self.format.signed { _mm512_set1_epi8(-128) } else { _mm512_setzero_si512() };
        let mut w = [[_mm512_setzero_si512(); DEPTH]; 2];
        for (wt, tile) in w.iter_mut().enumerate() {
            for (k, v) in tile.iter_mut().enumerate() {
                let bytes: &[u8; 64] = weights[wt * tile_bytes + 64 * k..][..64].try_into().expect("a tile row");
                // SAFETY: `bytes` is 64 bytes; loadu has no alignment requirement.
                *v = _mm512_xor_si512(unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }, offset);
            }
        }
        let stride = self.act_bytes;
        for (tt, acts) in a.iter().enumerate() {
            let sums = match self.format.signed {
                true => &self.quant_sums[(tt * self.format.product_steps(self.runs) + step) * TILE_ROWS..][..TILE_ROWS],
                false => &[0; TILE_ROWS][..],
            };
            for (m, &sum) in sums.iter().enumerate() {
                let quants: &[u8] = &acts[m * stride..][..4 * DEPTH];
                let start = _mm512_set1_epi32(-128 * sum);
                let (mut first, mut second) = (start, start);
                for k in 0..DEPTH {
                    let four =
                        _mm512_set1_epi32(i32::from_le_bytes(quants[4 * k..4 * k + 4].try_into().expect("4 quants")));
                    first = _mm512_dpbusd_epi32(first, w[0][k], four);
                    second = _mm512_dpbusd_epi32(second, w[1][k], four);
                }
                for (wt, sums) in [first, second].into_iter().enumerate() {
                    let out = &mut dots.0[2 * tt + wt][TILE_ROWS * m..][..TILE_ROWS];
                    // SAFETY: 16 i32, the length of `out`; storeu has no alignment requirement.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), sums) };
                }
            }
        }
    }

    /// Fetches share `step` of `steps` of the next strip's weights into L2, for `fill_strip` to
    /// find there: reading them from memory itself, it waited on its loads (Qwen2.5-1.5B, a
    /// 128-token prompt, one thread: 11% of the time in `fill_strip`, 7.6-9% with this).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn fetch_ahead(&self, step: usize, steps: usize) {
        let len = self.ahead.len();
        if len == 0 {
            return;
        }
        let share = len.div_ceil(steps).next_multiple_of(64);
        let from = (step * share).min(len);
        prefetch_lines::<_MM_HINT_T1>(self.ahead[from..].as_ptr(), share.min(len - from));
    }

    /// Adds run `run`'s products to its lane of every accumulator, as the VNNI kernels'
    /// `finish_lanes` (32-value formats) and `q4_k_finish` (Q4_K) do for one row and token; with
    /// `FIRST`, to zero instead of to what the accumulators held (the same sums: `+0.0` added
    /// either way).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn finish_run<const NT: usize, const FIRST: bool>(
        &self,
        run: usize,
        dots: &Dots,
        token_scalars: [&[f32]; NT],
        block_scales: &[__m512],
        acc: &mut [__m512],
    ) {
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
                    let v = (tt * TILE_ROWS + m) * 2 + wt;
                    let acc = &mut acc[v * LANES + lane];
                    let held = if FIRST { _mm512_setzero_ps() } else { *acc };
                    match self.format.finish {
                        Finish::Scale => *acc = _mm512_fmadd_ps(_mm512_mul_ps(field(0, wt), f0), products, held),
                        Finish::ScaleAndMin => {
                            *acc = _mm512_fmadd_ps(_mm512_mul_ps(field(0, wt), f0), products, held);
                            *acc = _mm512_fmadd_ps(field(1, wt), f1, *acc);
                        }
                        Finish::KQuant => {
                            // dot * sc and sum_a * m are integers below 2^24, exact in f32 as
                            // the kernels' i32 products converted are.
                            let main = _mm512_mul_ps(products, field(2, wt));
                            let min = _mm512_mul_ps(f1, field(3, wt));
                            *acc = _mm512_fmadd_ps(block_scales[2 * v], main, held);
                            *acc = _mm512_fnmadd_ps(block_scales[2 * v + 1], min, *acc);
                        }
                        Finish::Q6K => unreachable!("Q6_K is finished per block"),
                    }
                }
            }
        }
    }
}

impl Unit<'_> {
    /// [`Unit::multiply`] for Q6_K: per block, each group's 16 x 16 products times the rows'
    /// group scales summed in i32 (exact, as the VNNI kernel's block sums), then the block's
    /// total scaled into lane `block % 8`.
    ///
    /// # Safety
    /// As for [`Unit::multiply`], with [`CONFIG_Q6_K`] for AMX products.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn multiply_q6_k<const NT: usize>(
        &self,
        acts: [&[u8]; NT],
        token_scalars: [&[f32]; NT],
        acc: &mut [__m512],
    ) {
        const GROUPS: usize = 256 / Q6_K_GROUP;
        let mut dots = Dots([[0; TILE_ROWS * TILE_ROWS]; 4]);
        let mut totals = [[_mm512_setzero_si512(); 2]; 2 * TILE_ROWS];
        let stride = self.act_bytes;
        let nb = self.runs * RUN / 256;
        let each_lane_has_a_block = start_lanes(acc, nb);
        for block in 0..nb {
            totals.iter_mut().for_each(|t| *t = [_mm512_setzero_si512(); 2]);
            for g in 0..GROUPS {
                let group = GROUPS * block + g;
                self.fetch_ahead(group, GROUPS * nb);
                let weights = &self.quants[group * 2 * Q6_K_WEIGHT_TILE_BYTES..][..2 * Q6_K_WEIGHT_TILE_BYTES];
                let at = self.format.act_quants_at(group);
                let a = from_row_byte(acts, at, stride, Q6_K_GROUP);
                // SAFETY: the function's promise.
                unsafe { self.products::<NT, { Q6_K_GROUP / 4 }>(group, weights, a, &mut dots) };
                let scales = &self.group_scales[group * STRIP_ROWS..][..STRIP_ROWS];
                // SAFETY: 16 i32 each, inside `scales`.
                // (Not `[0, 1].map(..)`: `map` is not compiled with AVX-512, so it calls the
                // closure instead of inlining it; written out, each load is one instruction.)
                let sc = unsafe {
                    [
                        _mm512_loadu_si512(scales.as_ptr().cast()),
                        _mm512_loadu_si512(scales[TILE_ROWS..].as_ptr().cast()),
                    ]
                };
                for (v, total) in totals.iter_mut().enumerate().take(NT * TILE_ROWS) {
                    let (tt, m) = (v / TILE_ROWS, v % TILE_ROWS);
                    for wt in 0..2 {
                        let products = &dots.0[2 * tt + wt][TILE_ROWS * m..][..TILE_ROWS];
                        // SAFETY: 16 i32, the length of `products`.
                        let products = unsafe { _mm512_loadu_si512(products.as_ptr().cast()) };
                        total[wt] = _mm512_add_epi32(total[wt], _mm512_mullo_epi32(products, sc[wt]));
                    }
                }
            }
            let lane = block % LANES;
            let d_w = &self.scales[block * FIELDS * STRIP_ROWS..][..STRIP_ROWS];
            for (v, total) in totals.iter().enumerate().take(NT * TILE_ROWS) {
                let (tt, m) = (v / TILE_ROWS, v % TILE_ROWS);
                let a_d = _mm512_set1_ps(token_scalars[tt][block * TokenScalars::PER_RUN + m]);
                for wt in 0..2 {
                    let acc = &mut acc[(v * 2 + wt) * LANES + lane];
                    let d = _mm512_mul_ps(load16(&d_w[TILE_ROWS * wt..]), a_d);
                    let held = if each_lane_has_a_block && block < LANES { _mm512_setzero_ps() } else { *acc };
                    *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(total[wt]), held);
                }
            }
        }
    }
}

/// Readies the accumulators for a product of `steps` steps (runs, or Q6_K's blocks), step `s`
/// adding into lane `s % LANES`: true where every lane has a step, whose first step then starts
/// the lane from zero itself, as zeroing all of them first took 3-5% of a prompt's time (32 KiB
/// per strip and pair of token tiles); otherwise they are zeroed here and false.
#[inline]
#[target_feature(enable = "avx512f")]
fn start_lanes(acc: &mut [__m512], steps: usize) -> bool {
    if steps < LANES {
        acc.fill(_mm512_setzero_ps());
    }
    steps >= LANES
}

/// Each token tile of `tiles` (16 activation rows at a stride of `stride`) from byte `at` of its
/// first row to byte `at + len` of its 16th. (Not `tiles.map(..)`: `map` is not compiled with
/// AVX-512, and called its closure on every run, 2.6% of a prompt's time.)
#[inline(always)]
fn from_row_byte<const NT: usize>(mut tiles: [&[u8]; NT], at: usize, stride: usize, len: usize) -> [&[u8]; NT] {
    for tile in &mut tiles {
        *tile = &tile[at..(TILE_ROWS - 1) * stride + at + len];
    }
    tiles
}

/// 16 f32 from the start of `v`.
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(v: &[f32]) -> __m512 {
    let v = &v[..16];
    // SAFETY: 16 f32, the length of `v`.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// Each accumulator's eight lanes summed in `hsum`'s order, into `strip`, a strip's products
/// (`strip_rows` weight rows by `n_tokens`) laid out as `layout`: tokens `first_token..`
/// (`tokens` of them). A token's sums are a vector of 16 weight rows, which strips store as
/// they are; row-major, 16 tokens' are transposed in registers so that each row's 16 tokens
/// take one store (one value at a time, 5.7% of Qwen2.5-1.5B's prompts at one thread).
#[target_feature(enable = "avx512f")]
fn write_sums(
    acc: &[__m512],
    strip_rows: usize,
    first_token: usize,
    tokens: usize,
    n_tokens: usize,
    layout: ProductLayout,
    strip: &mut [f32],
) {
    let mask = |lanes: usize| -> __mmask16 {
        if lanes == TILE_ROWS {
            !0
        } else {
            (1 << lanes) - 1
        }
    };
    for tile_first in (0..tokens).step_by(TILE_ROWS) {
        let tile_tokens = (tokens - tile_first).min(TILE_ROWS);
        for wt in 0..2 {
            let rows = strip_rows.saturating_sub(TILE_ROWS * wt).min(TILE_ROWS);
            if rows == 0 {
                continue;
            }
            let mut sums = [_mm512_setzero_ps(); TILE_ROWS];
            for (k, sum) in sums.iter_mut().enumerate().take(tile_tokens) {
                let m = tile_first + k;
                let v: &[__m512; LANES] = acc[(m * 2 + wt) * LANES..][..LANES].try_into().expect("eight lanes");
                // `hsum`'s order: lanes k and k + 4, then those pairs 0 and 2, 1 and 3.
                let pair = |k: usize| _mm512_add_ps(v[k], v[k + 4]);
                *sum = _mm512_add_ps(_mm512_add_ps(pair(0), pair(2)), _mm512_add_ps(pair(1), pair(3)));
            }
            let token = first_token + tile_first;
            match layout {
                ProductLayout::Strips => {
                    for (k, by_row) in sums.iter().enumerate().take(tile_tokens) {
                        let dst = &mut strip[(token + k) * strip_rows + TILE_ROWS * wt..][..rows];
                        // SAFETY: the mask stores the first `rows` lanes only, the length of
                        // `dst`; masked-off lanes are not accessed.
                        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask(rows), *by_row) };
                    }
                }
                ProductLayout::RowMajor => {
                    for (i, by_token) in transpose16(&sums).iter().enumerate().take(rows) {
                        let dst = &mut strip[(TILE_ROWS * wt + i) * n_tokens + token..][..tile_tokens];
                        // SAFETY: the mask stores the first `tile_tokens` lanes only, the length
                        // of `dst`; masked-off lanes are not accessed.
                        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask(tile_tokens), *by_token) };
                    }
                }
            }
        }
    }
}

/// The 16 x 16 matrix of `v` (vector `i` its row `i`) transposed: pairs of rows interleaved,
/// then fours, then 128-bit lanes in two steps.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(v: &[__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]);
    }
    // u[4g + c]: in 128-bit lane l, rows 4g..4g + 4 of column 4l + c.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (lo, hi) = (t[4 * g], t[4 * g + 1]);
        let (lo2, hi2) = (t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_shuffle_ps::<0x44>(lo, lo2);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(lo, lo2);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(hi, hi2);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(hi, hi2);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        // Rows 0-7 and 8-15 of columns c, 4 + c (low half) and 8 + c, 12 + c (high half).
        let (a, b) = (u[c], u[4 + c]);
        let (x, y) = (u[8 + c], u[12 + c]);
        let (low_ab, high_ab) = (_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b));
        let (low_xy, high_xy) = (_mm512_shuffle_f32x4::<0x44>(x, y), _mm512_shuffle_f32x4::<0xEE>(x, y));
        out[c] = _mm512_shuffle_f32x4::<0x88>(low_ab, low_xy);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(low_ab, low_xy);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(high_ab, high_xy);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(high_ab, high_xy);
    }
    out
}

/// Lays out a strip's weights (`strip`: `strip_rows` rows of `row_bytes`, in the file's layout
/// or with `interleaved` as `quant::interleave_rows8` rearranged them, read as they are) for the
/// tiles: per run, two weight tiles of 8 rows x 64 bytes, row `k` holding four quants
/// `4k..4k + 4` of each of 16 weight rows (as bytes: signed with the format's offset taken off,
/// or unsigned), and the rows' scales; rows past `strip_rows` keep what they held. Each four bytes
/// come from 16 rows at once by one gather (interleaved Q4_K's, by two loads of 32 bytes).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn fill_strip(
    format: Format,
    interleaved: bool,
    strip: &[u8],
    row_bytes: usize,
    strip_rows: usize,
    nb: usize,
    quants: &mut [u8],
    scales: &mut [f32],
    group_scales: &mut [i32],
) {
    // Rows past `strip_rows` keep what the last strip left in their quants and scales: their
    // products are never written out, and each row's are its own lane's.
    let runs = nb * format.block_len / RUN;
    for wt in 0..2 {
        let live = strip_rows.saturating_sub(TILE_ROWS * wt).min(TILE_ROWS);
        if live == 0 {
            continue;
        }
        let tile = WeightTile {
            rows: &strip[TILE_ROWS * wt * row_bytes..][..live * row_bytes],
            row_bytes,
            mask: ((1u32 << live) - 1) as __mmask16,
            wt,
        };
        if format.finish == Finish::KQuant {
            tile.fill_q4_k(interleaved, nb, quants, scales);
        } else if format.finish == Finish::Q6K {
            tile.fill_q6_k(nb, quants, scales, group_scales);
        } else {
            tile.fill_32(format, interleaved, nb, quants, scales);
        }
    }
    debug_assert_eq!(quants.len(), runs * 2 * WEIGHT_TILE_BYTES);
}

/// Up to 16 rows of a strip (`mask`: the rows there are), weight tile `wt` of its two.
struct WeightTile<'a> {
    rows: &'a [u8],
    row_bytes: usize,
    mask: __mmask16,
    wt: usize,
}

impl WeightTile<'_> {
    /// Four bytes of each row, at `at + index[n]` for row `n` (zeros past the rows there are).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gather(&self, index: __m512i, at: usize, last_row_at: usize) -> __m512i {
        // The last row there is reads at `last_row_at + at`; the others at smaller offsets.
        assert!(last_row_at + at + 4 <= self.rows.len(), "amx: a gather past the strip");
        let from = &self.rows[at..];
        // SAFETY: only the lanes of `mask` read, each 4 bytes at `index[n]` from `from`, no
        // further than the last row's, inside `rows` (checked above).
        unsafe { _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), self.mask, index, from.as_ptr().cast()) }
    }

    /// 16 i32 lanes `n * step` for rows at a stride of `step`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn stride_index(step: usize) -> __m512i {
        _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(step as i32),
        )
    }

    fn last_row(&self) -> usize {
        15 - self.mask.leading_zeros() as usize
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store_quants(&self, quants: &mut [u8], run: usize, k: usize, v: __m512i) {
        let at = &mut quants[(2 * run + self.wt) * WEIGHT_TILE_BYTES + 64 * k..][..64];
        // SAFETY: 64 bytes, the length of `at`.
        unsafe { _mm512_storeu_si512(at.as_mut_ptr().cast(), v) };
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store_scales(&self, scales: &mut [f32], run: usize, field: usize, v: __m512) {
        let at = &mut scales[(run * FIELDS + field) * STRIP_ROWS + TILE_ROWS * self.wt..][..TILE_ROWS];
        // SAFETY: 16 f32, the length of `at`.
        unsafe { _mm512_storeu_ps(at.as_mut_ptr(), v) };
    }

    /// The f16 in the low half of each i32 lane, as f32.
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    fn low_f16(words: __m512i) -> __m512 {
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words))
    }

    /// The 32-value formats: per block, `d` (and `m`) as fields 0 and 1, the quants as bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    fn fill_32(&self, format: Format, interleaved: bool, nb: usize, quants: &mut [u8], scales: &mut [f32]) {
        let layout = GroupLayout::of(format.ty);
        let (low4, offset) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(format.offset));
        let rows = Self::stride_index(self.row_bytes);
        let last = self.last_row() * self.row_bytes;
        let gather = |at: usize| self.gather(rows, at, last);
        let grouped = if interleaved { nb - nb % 8 } else { 0 };
        let block_bytes = layout.block_bytes;
        let one_bits = _mm512_set1_epi32(0x0101_0101);
        let spread = Self::lanes(SPREAD_TO_BIT4);
        for b in 0..nb {
            // Where block b's fields are: in a group of eight (interleaved), or a block of its own.
            let (d_at, m_at, bits_at, quants_at, quant_step) = if b < grouped {
                let (group, l) = (b / 8 * 8 * block_bytes, b % 8);
                let bits = group + layout.fifth_bits_at() + 4 * l;
                (group + 2 * l, group + 16 + 2 * l, bits, group + layout.quants_at() + 4 * l, 32)
            } else {
                let block = b * block_bytes;
                let bits = block + 2 * layout.fields;
                (block, block + 2, bits, bits + if layout.five_bit { 4 } else { 0 }, 4)
            };
            self.store_scales(scales, b, 0, Self::low_f16(gather(d_at)));
            if layout.fields == 2 {
                self.store_scales(scales, b, 1, Self::low_f16(gather(m_at)));
            }
            if layout.quant_bytes == 32 {
                for k in 0..RUN / 4 {
                    self.store_quants(quants, b, k, gather(quants_at + quant_step * k));
                }
                continue;
            }
            let bits = if layout.five_bit { gather(bits_at) } else { _mm512_setzero_si512() };
            // Fifth bits `first..first + 4` (of the block's 32, in the file's order) at bit 4 of
            // four bytes. The file keeps them in one 32-bit word; an interleaved group keeps
            // byte `b` of each four at bit `j` for the block's fifth bit `4j + b`.
            let fifth = |first: usize| {
                if b < grouped {
                    let shifted = _mm512_srlv_epi32(bits, _mm512_set1_epi32((first / 4) as i32));
                    _mm512_slli_epi32::<4>(_mm512_and_si512(shifted, one_bits))
                } else {
                    let nibble = _mm512_and_si512(
                        _mm512_srlv_epi32(bits, _mm512_set1_epi32(first as i32)),
                        _mm512_set1_epi32(0xf),
                    );
                    _mm512_permutexvar_epi32(nibble, spread)
                }
            };
            for k in 0..4 {
                let q = gather(quants_at + quant_step * k);
                let mut low = _mm512_and_si512(q, low4);
                let mut high = _mm512_and_si512(_mm512_srli_epi32::<4>(q), low4);
                if layout.five_bit {
                    low = _mm512_or_si512(low, fifth(4 * k));
                    high = _mm512_or_si512(high, fifth(16 + 4 * k));
                }
                self.store_quants(quants, b, k, _mm512_sub_epi8(low, offset));
                self.store_quants(quants, b, 4 + k, _mm512_sub_epi8(high, offset));
            }
        }
    }

    /// Q4_K: per group, the 6-bit scale and min as fields 2 and 3, and per block, at its first
    /// group, `d` and `dmin` as fields 0 and 1; the quants as bytes.
    /// Interleaved, a tile's 16 rows are two groups of eight whose block `i` is one piece of
    /// 8 x 144 bytes (`quant::interleave::q4_k_position`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    fn fill_q4_k(&self, interleaved: bool, nb: usize, quants: &mut [u8], scales: &mut [f32]) {
        const BLOCK: usize = 144;
        let low4 = _mm512_set1_epi8(0x0f);
        // Per row n: where its head and its quants are, from those of row 0.
        let (heads, quant_rows, block_step) = if interleaved {
            let group_bytes = 8 * self.row_bytes;
            let lanes: [i32; 16] = std::array::from_fn(|n| (n / 8 * group_bytes + q4_k_position(n % 8, 0)) as i32);
            let quant_lanes: [i32; 16] =
                std::array::from_fn(|n| (n / 8 * group_bytes + q4_k_position(n % 8, 16) - q4_k_position(0, 16)) as i32);
            (Self::lanes(lanes), Self::lanes(quant_lanes), 8 * BLOCK)
        } else {
            let rows = Self::stride_index(self.row_bytes);
            (rows, rows, BLOCK)
        };
        let last = self.last_row();
        let last_head = match interleaved {
            true => last / 8 * 8 * self.row_bytes + q4_k_position(last % 8, 0),
            false => last * self.row_bytes,
        };
        let last_quants = match interleaved {
            true => last / 8 * 8 * self.row_bytes + q4_k_position(last % 8, 16) - q4_k_position(0, 16),
            false => last * self.row_bytes,
        };
        // Interleaved with all 16 rows there: where the second group of eight rows starts.
        let whole_groups = (interleaved && self.mask == u16::MAX).then_some(8 * self.row_bytes);
        for i in 0..nb {
            let d_dmin = self.gather(heads, i * block_step, last_head);
            let d = Self::low_f16(d_dmin);
            let dmin = Self::low_f16(_mm512_srli_epi32::<16>(d_dmin));
            // Read at the block's first group only (`Unit::q4_k_block_scales`): stores are what
            // this function is bound by.
            self.store_scales(scales, 8 * i, 0, d);
            self.store_scales(scales, 8 * i, 1, dmin);
            // The 6-bit scales and mins of 16 rows at once, as `scales_mins_k4` unpacks them
            // from the head's 12 bytes `q`: words 0, 1, 2 are q[0..4], q[4..8], q[8..12].
            let word = |w: usize| self.gather(heads, i * block_step + 4 + 4 * w, last_head);
            let words = [word(0), word(1), word(2)];
            let byte = |v: __m512i, j: usize| {
                _mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(8 * j as i32)), _mm512_set1_epi32(0xff))
            };
            let six_bits = _mm512_set1_epi32(63);
            for j in 0..4 {
                let (b0, b1, b2) = (byte(words[0], j), byte(words[1], j), byte(words[2], j));
                let high = |b: __m512i| _mm512_slli_epi32::<4>(_mm512_srli_epi32::<6>(b));
                let low = |b: __m512i| _mm512_and_si512(b, six_bits);
                let sc_high = _mm512_or_si512(_mm512_and_si512(b2, _mm512_set1_epi32(0xf)), high(b0));
                let m_high = _mm512_or_si512(_mm512_srli_epi32::<4>(b2), high(b1));
                for (g, sc, m) in [(j, low(b0), low(b1)), (j + 4, sc_high, m_high)] {
                    self.store_scales(scales, 8 * i + g, 2, _mm512_cvtepi32_ps(sc));
                    self.store_scales(scales, 8 * i + g, 3, _mm512_cvtepi32_ps(m));
                }
            }
            for c in 0..4 {
                for k in 0..RUN / 4 {
                    let at = match interleaved {
                        true => i * block_step + q4_k_position(0, 16 + 32 * c + 4 * k),
                        false => i * BLOCK + 16 + 32 * c + 4 * k,
                    };
                    // Interleaved, these four bytes of a group's eight rows are 32 bytes in a
                    // row: two loads take a whole tile's, where a gather takes 16 reads.
                    let q = match whole_groups {
                        Some(second) => {
                            let group =
                                |from: usize| -> &[u8; 32] { self.rows[from..][..32].try_into().expect("32 bytes") };
                            // SAFETY: 32 bytes each, the lengths of the arrays.
                            let (low, high) = unsafe {
                                (
                                    _mm256_loadu_si256(group(at).as_ptr().cast()),
                                    _mm256_loadu_si256(group(second + at).as_ptr().cast()),
                                )
                            };
                            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
                        }
                        None => self.gather(quant_rows, at, last_quants),
                    };
                    self.store_quants(quants, 8 * i + 2 * c, k, _mm512_and_si512(q, low4));
                    self.store_quants(quants, 8 * i + 2 * c + 1, k, _mm512_and_si512(_mm512_srli_epi32::<4>(q), low4));
                }
            }
        }
    }

    /// Q6_K (the file's layout; it has no other): per block, `d` as field 0; per group of 16
    /// values, the rows' 8-bit scales (`group_scales`) and the quants as signed bytes (`q - 32`),
    /// in weight tiles of 4 rows of 64 bytes. Value `128h + 32k + l` of a block is a nibble of
    /// `ql[64h + 32(k % 2) + l]` (low for k < 2) and bits `2k, 2k + 1` of `qh[32h + l]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    fn fill_q6_k(&self, nb: usize, quants: &mut [u8], scales: &mut [f32], group_scales: &mut [i32]) {
        const BLOCK: usize = 210;
        let (low4, two_bits, offset) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x03), _mm512_set1_epi8(32));
        let rows = Self::stride_index(self.row_bytes);
        let last = self.last_row() * self.row_bytes;
        let gather = |at: usize| self.gather(rows, at, last);
        for i in 0..nb {
            let block = i * BLOCK;
            // `d` ends the block: its f16 is the high half of the word at 206.
            self.store_scales(scales, i, 0, Self::low_f16(_mm512_srli_epi32::<16>(gather(block + 206))));
            for q in 0..4 {
                let words = gather(block + 192 + 4 * q);
                for b in 0..4 {
                    // Byte b of each word, sign-extended.
                    let sc = _mm512_srai_epi32::<24>(_mm512_sllv_epi32(words, _mm512_set1_epi32(24 - 8 * b as i32)));
                    let at = &mut group_scales[(16 * i + 4 * q + b) * STRIP_ROWS + TILE_ROWS * self.wt..][..TILE_ROWS];
                    // SAFETY: 16 i32, the length of `at`.
                    unsafe { _mm512_storeu_si512(at.as_mut_ptr().cast(), sc) };
                }
            }
            for h in 0..2 {
                for l in (0..32).step_by(4) {
                    let high = gather(block + 128 + 32 * h + l);
                    for half in 0..2 {
                        let low = gather(block + 64 * h + 32 * half + l);
                        for (k, nibbles) in [
                            (half, _mm512_and_si512(low, low4)),
                            (half + 2, _mm512_and_si512(_mm512_srli_epi32::<4>(low), low4)),
                        ] {
                            let bits =
                                _mm512_and_si512(_mm512_srlv_epi32(high, _mm512_set1_epi32(2 * k as i32)), two_bits);
                            let q = _mm512_sub_epi8(_mm512_or_si512(nibbles, _mm512_slli_epi32::<4>(bits)), offset);
                            let value = 128 * h + 32 * k + l;
                            let (group, row) = (16 * i + value / Q6_K_GROUP, value % Q6_K_GROUP / 4);
                            let at = &mut quants[(2 * group + self.wt) * Q6_K_WEIGHT_TILE_BYTES + 64 * row..][..64];
                            // SAFETY: 64 bytes, the length of `at`.
                            unsafe { _mm512_storeu_si512(at.as_mut_ptr().cast(), q) };
                        }
                    }
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes(v: [i32; 16]) -> __m512i {
        // SAFETY: 16 i32, 64 bytes.
        unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
    }
}

/// Four fifth bits (bits 0..4 of the index) spread to bit 4 of four bytes: a table for `vpermd`.
const SPREAD_TO_BIT4: [i32; 16] = {
    let mut table = [0i32; 16];
    let mut x = 0;
    while x < 16 {
        let mut i = 0;
        while i < 4 {
            table[x] |= (((x >> i) & 1) << (8 * i + 4)) as i32;
            i += 1;
        }
        x += 1;
    }
    table
};
