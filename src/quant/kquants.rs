//! ggml's 256-value super-block formats ("K-quants"): Q2_K, Q3_K, Q4_K, Q5_K and Q6_K weights,
//! and the Q8_K activation format they are all multiplied with.
//!
//! A super-block holds 16 groups of 16 values (Q2_K, Q3_K, Q6_K) or 8 groups of 32 (Q4_K, Q5_K),
//! each group with a small integer scale (and for Q2_K/Q4_K/Q5_K an integer min) that multiplies
//! the super-block's f16 scale(s). Q8_K activations carry an f32 scale and the sums of their quants
//! per 16 values (`bsums`), so a weight format's min term costs one short integer dot per block.
//!
//! Every kernel follows ggml's reference C code (ggml-quants.c `dequantize_row_*` and
//! `quantize_row_q8_K_ref`, ggml-cpu/quants.c `ggml_vec_dot_*_q8_K_generic`), including the order
//! of the float operations: Q2_K adds one `dall * isum - dmin * summs` per block; Q3_K..Q6_K keep
//! ggml's eight per-lane integer sums `aux32[l]` (element `e` of the block goes to lane `e % 8`)
//! and accumulate `d * aux32[l]` into eight f32 lanes across the row (see [`DotAcc`]), with the
//! min term of Q4_K/Q5_K subtracted from the running sum per block. So the scalar results are
//! bit-identical to a non-SIMD ggml build (absent FMA contraction by the C compiler); ggml's SIMD
//! builds sum the same exact integers in another order, which differs in the last bits.
//!
//! Quants are unpacked into an `[i8; 256]` first, so the integer work is plain loops over
//! fixed-size arrays that LLVM vectorizes; all integer sums are exact.

use super::block::{block_bytes, block_values, field, field_i8, ActBlock, DotAcc, F16Le, QuantBlock, WeightBlock};
use crate::tensor::GgmlType;

/// Values per super-block (ggml's QK_K).
pub(super) const QK_K: usize = 256;

/// Bytes of the packed 6-bit scales and mins of Q4_K / Q5_K (ggml's K_SCALE_SIZE).
const K_SCALE_SIZE: usize = 12;

/// ggml's `aux32`: for each lane `l` in 0..8, the sum over the `NG` groups of `G` consecutive
/// values of `scales[g] * sum(a[e] * q8[e])` over the group's elements `e` with `e % 8 == l`.
/// Integer sums are exact, so only the lane assignment matters for the f32 result, not the order
/// in which we add (ggml scales each 8 products, we each group's lane sums).
#[inline(always)]
fn lane_sums<const NG: usize, const G: usize>(a: &[i8; QK_K], q8: &[i8; QK_K], scales: &[i32; NG]) -> [i32; 8] {
    const { assert!(NG * G == QK_K && G.is_multiple_of(8) && G <= 32) };
    let aux16 = group_lane_sums::<NG, G>(a, q8);
    let mut aux32 = [0i32; 8];
    for (s16, &scale) in aux16.iter().zip(scales) {
        for l in 0..8 {
            aux32[l] += scale * s16[l] as i32;
        }
    }
    aux32
}

/// Per group of `G` values, the eight lane sums of `a[e] * q8[e]`, in i16 like ggml's `aux16`: at
/// most 4 products of a quant (|a| <= 32) and an i8 per lane, so no format here can overflow it.
/// A function of its own (out of line, see `legacy::dot_nibbles`) so that LLVM vectorizes it at
/// the full i16 width; inlined, it chose half-width i32 vectors and ran about 1.4x slower.
#[inline(never)]
fn group_lane_sums<const NG: usize, const G: usize>(a: &[i8; QK_K], q8: &[i8; QK_K]) -> [[i16; 8]; NG] {
    let (a, _) = a.as_chunks::<8>();
    let (q8, _) = q8.as_chunks::<8>();
    let mut out = [[0i16; 8]; NG];
    for (o, (ag, qg)) in out.iter_mut().zip(a.chunks_exact(G / 8).zip(q8.chunks_exact(G / 8))) {
        for (a8, q8) in ag.iter().zip(qg) {
            for l in 0..8 {
                o[l] += a8[l] as i16 * q8[l] as i16;
            }
        }
    }
    out
}

/// Accumulate one block's `d * aux32[l]` into the row's eight f32 lanes (ggml's `sums[l]`).
#[inline(always)]
fn add_lanes(acc: &mut DotAcc, d: f32, aux32: &[i32; 8]) {
    for (s, &v) in acc.lanes.iter_mut().zip(aux32) {
        *s += d * v as f32;
    }
}

/// Sum over the 16 groups of 16 activations of `bsums[j] * mins[j]`: the integer part of a
/// block's min term.
#[inline(always)]
fn bsums_dot(bsums: &[i16; QK_K / 16], mins: &[i32; QK_K / 16]) -> i32 {
    bsums.iter().zip(mins).map(|(&b, &m)| b as i32 * m).sum()
}

/// The 2-bit fields of 64 bytes as 256 values, in the order of Q2_K and Q3_K: value `e` is bits
/// `2 * (e % 128 / 32)` of byte `e / 128 * 32 + e % 32`.
#[inline(always)]
fn unpack_2bit(qs: &[u8; QK_K / 4]) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    let (halves, _) = a.as_chunks_mut::<128>();
    let (src, _) = qs.as_chunks::<32>();
    for (half, q) in halves.iter_mut().zip(src) {
        let (quarters, _) = half.as_chunks_mut::<32>();
        for (j, out) in quarters.iter_mut().enumerate() {
            for (o, &b) in out.iter_mut().zip(q) {
                *o = ((b >> (2 * j)) & 3) as i8;
            }
        }
    }
    a
}

/// The nibbles of 128 bytes as 256 values, in the order of Q4_K and Q5_K: each 32 bytes give 64
/// values, the low nibbles first.
#[inline(always)]
fn unpack_nibbles_k(qs: &[u8; QK_K / 2]) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    let (chunks, _) = a.as_chunks_mut::<64>();
    let (src, _) = qs.as_chunks::<32>();
    for (out, q) in chunks.iter_mut().zip(src) {
        let (lo, hi) = out.split_at_mut(32);
        for ((l, h), &b) in lo.iter_mut().zip(hi).zip(q) {
            *l = (b & 0x0F) as i8;
            *h = (b >> 4) as i8;
        }
    }
    a
}

/// Q4_K / Q5_K scales and mins: ggml's `get_scale_min_k4` for j in 0..8. The first four of each
/// are the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); the last four take their low 4 bits
/// from a nibble of bytes 8..12 and their high 2 bits from the top of bytes 0..8.
#[inline(always)]
pub(crate) fn scales_mins_k4(q: &[u8; K_SCALE_SIZE]) -> ([i32; 8], [i32; 8]) {
    let mut sc = [0i32; 8];
    let mut m = [0i32; 8];
    for j in 0..4 {
        sc[j] = (q[j] & 63) as i32;
        m[j] = (q[j + 4] & 63) as i32;
        sc[j + 4] = ((q[j + 8] & 0xF) | ((q[j] >> 6) << 4)) as i32;
        m[j + 4] = ((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4)) as i32;
    }
    (sc, m)
}

/// Dequantize groups of `G` values of a format with mins (Q2_K, Q4_K, Q5_K):
/// `out = dl[g] * q - ml[g]`, as ggml computes them.
#[inline(always)]
fn dequantize_groups<const G: usize>(out: &mut [f32; QK_K], a: &[i8; QK_K], dl: &[f32], ml: &[f32]) {
    let (out, _) = out.as_chunks_mut::<G>();
    let (a, _) = a.as_chunks::<G>();
    for (((o, q), &dl), &ml) in out.iter_mut().zip(a).zip(dl).zip(ml) {
        for (o, &q) in o.iter_mut().zip(q) {
            *o = dl * q as f32 - ml;
        }
    }
}

/// Dequantize groups of `G` values without a min: `out = dl[g] * q`.
#[inline(always)]
fn scale_groups<const G: usize>(out: &mut [f32; QK_K], a: &[i8; QK_K], dl: &[f32]) {
    let (out, _) = out.as_chunks_mut::<G>();
    let (a, _) = a.as_chunks::<G>();
    for ((o, q), &dl) in out.iter_mut().zip(a).zip(dl) {
        for (o, &q) in o.iter_mut().zip(q) {
            *o = dl * q as f32;
        }
    }
}

// ---------------------------------------------------------------- Q8_K

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5 * 2^23 so the integer lands
/// in the f32's low mantissa bits. Exact for |x| < 2^22, and bit-for-bit ggml's for every input
/// (NaN and infinities included). Also much faster than `round_ties_even` on baseline x86-64,
/// which has no rounding instruction before SSE4.1 and calls libm.
#[inline(always)]
pub(super) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

/// 8-bit activations for the K-quants (and IQ4_XS): `x = q * d` with an f32 `d`, plus the sum of
/// each 16 consecutive quants. Only ever produced by [`ActBlock::quantize`] in memory, so it has
/// native (4-byte) alignment; its 292 bytes have no padding.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub(crate) struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

impl QuantBlock for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const LEN: usize = QK_K;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ8K>() }>(bytes);
        let sums: [u8; 2 * QK_K / 16] = field(b, 4 + QK_K);
        let (sums, _) = sums.as_chunks::<2>();
        let mut bsums = [0i16; QK_K / 16];
        for (s, &c) in bsums.iter_mut().zip(sums) {
            *s = i16::from_le_bytes(c);
        }
        BlockQ8K { d: f32::from_le_bytes(field(b, 0)), qs: field_i8(b, 4), bsums }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        for (o, &q) in block_values::<QK_K>(out).iter_mut().zip(&self.qs) {
            *o = self.d * q as f32;
        }
    }
}

impl ActBlock for BlockQ8K {
    /// ggml's `quantize_row_q8_K_ref`. Unlike Q8_0 the scale comes from the value of largest
    /// magnitude *with its sign* (the first such value), as `iscale = -127 / max`, and is stored
    /// as the f32 `d = 1 / iscale`: so `d` has the opposite sign of `max`, and `max` itself
    /// quantizes to -127. Quants are rounded half to even ([`nearest_int`]), not away from zero
    /// as in Q8_0, and clamped to at most 127. An all-zero block gets `d = 0` and zero
    /// quants (ggml leaves that block's `bsums` unwritten; we write zeros).
    #[inline]
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = x.try_into().expect("quant: Q8_K block needs 256 values");
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            return BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] };
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; QK_K];
        for (q, &v) in qs.iter_mut().zip(x) {
            // |iscale * v| <= 127 up to rounding for finite values; the truncating cast is C's
            // conversion to int8_t, which matters only for ggml's results on NaN or on infinite
            // iscale (amax below 127 / f32::MAX), where we match them too.
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        let mut bsums = [0i16; QK_K / 16];
        let (groups, _) = qs.as_chunks::<16>();
        for (s, g) in bsums.iter_mut().zip(groups) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        BlockQ8K { d: 1.0 / iscale, qs, bsums }
    }

    #[inline]
    fn write(&self, out: &mut [u8]) {
        let out: &mut [u8; 292] = out.try_into().expect("quant: Q8_K block is 292 bytes");
        out[..4].copy_from_slice(&self.d.to_le_bytes());
        for (o, &q) in out[4..4 + QK_K].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
        let (sums, _) = out[4 + QK_K..].as_chunks_mut::<2>();
        for (o, &s) in sums.iter_mut().zip(&self.bsums) {
            *o = s.to_le_bytes();
        }
    }
}

// ---------------------------------------------------------------- Q2_K

/// 2-bit weights in 16 groups of 16: `x = d * sc * q - dmin * m`, q in 0..4, with the group's 4-bit
/// scale `sc` in the low and 4-bit min `m` in the high nibble of `scales[g]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: F16Le,
    pub dmin: F16Le,
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

impl QuantBlock for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const LEN: usize = QK_K;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ2K>() }>(bytes);
        BlockQ2K { scales: field(b, 0), qs: field(b, 16), d: F16Le(field(b, 80)), dmin: F16Le(field(b, 82)) }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let dl = self.scales.map(|s| d * (s & 0xF) as f32);
        let ml = self.scales.map(|s| min * (s >> 4) as f32);
        dequantize_groups::<16>(block_values::<QK_K>(out), &unpack_2bit(&self.qs), &dl, &ml);
    }
}

impl WeightBlock for BlockQ2K {
    type Act = BlockQ8K;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8K, acc: &mut DotAcc) {
        let summs = bsums_dot(&act.bsums, &self.scales.map(|s| (s >> 4) as i32));
        // ggml sums `d * isuml` per group into one isum; the lanes of lane_sums add up to it.
        let lanes = lane_sums::<16, 16>(&unpack_2bit(&self.qs), &act.qs, &self.scales.map(|s| (s & 0xF) as i32));
        let isum: i32 = lanes.iter().sum();
        let dall = act.d * self.d.to_f32();
        let dmin = act.d * self.dmin.to_f32();
        acc.sum += dall * isum as f32 - dmin * summs as f32;
    }
}

// ---------------------------------------------------------------- Q3_K

/// 3-bit weights in 16 groups of 16: `x = d * (sc - 32) * q`, q in -4..4 from two low bits in `qs`
/// (laid out as Q2_K's) and a high bit in `hmask` that, when *clear*, subtracts 4. The 16 6-bit
/// scales are packed into 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: F16Le,
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

impl BlockQ3K {
    /// The 256 quants in -4..4: value `e` has its high bit at bit `e / 32` of `hmask[e % 32]`.
    #[inline(always)]
    fn quants(&self) -> [i8; QK_K] {
        let mut a = unpack_2bit(&self.qs);
        let (chunks, _) = a.as_chunks_mut::<32>();
        for (bit, chunk) in chunks.iter_mut().enumerate() {
            for (q, &h) in chunk.iter_mut().zip(&self.hmask) {
                *q -= ((!h >> bit) & 1) as i8 * 4;
            }
        }
        a
    }

    /// The 16 group scales minus 32: low 4 bits from the nibbles of bytes 0..8 (low nibbles for
    /// groups 0..8), high 2 bits from bytes 8..12 (bits `2 * (j / 4)` of byte `8 + j % 4`).
    #[inline(always)]
    fn scales(&self) -> [i32; 16] {
        let b = &self.scales;
        std::array::from_fn(|j| {
            let low = if j < 8 { b[j] & 0xF } else { b[j - 8] >> 4 };
            let high = (b[8 + j % 4] >> (2 * (j / 4))) & 3;
            (low | (high << 4)) as i32 - 32
        })
    }
}

impl QuantBlock for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const LEN: usize = QK_K;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ3K>() }>(bytes);
        BlockQ3K { hmask: field(b, 0), qs: field(b, 32), scales: field(b, 96), d: F16Le(field(b, 108)) }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let dl = self.scales().map(|s| d * s as f32);
        scale_groups::<16>(block_values::<QK_K>(out), &self.quants(), &dl);
    }
}

impl WeightBlock for BlockQ3K {
    type Act = BlockQ8K;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8K, acc: &mut DotAcc) {
        let aux32 = lane_sums::<16, 16>(&self.quants(), &act.qs, &self.scales());
        add_lanes(acc, self.d.to_f32() * act.d, &aux32);
    }
}

// ---------------------------------------------------------------- Q4_K

/// 4-bit weights in 8 groups of 32: `x = d * sc * q - dmin * m`, q in 0..16, with 6-bit group
/// scales `sc` and mins `m` packed into 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ4K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

impl QuantBlock for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const LEN: usize = QK_K;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ4K>() }>(bytes);
        BlockQ4K { d: F16Le(field(b, 0)), dmin: F16Le(field(b, 2)), scales: field(b, 4), qs: field(b, 16) }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let (sc, m) = scales_mins_k4(&self.scales);
        let dl = sc.map(|s| d * s as f32);
        let ml = m.map(|m| min * m as f32);
        dequantize_groups::<32>(block_values::<QK_K>(out), &unpack_nibbles_k(&self.qs), &dl, &ml);
    }
}

/// The Q4_K / Q5_K dot product of one block, given its unpacked quants.
#[inline(always)]
fn dot_k4(d: F16Le, dmin: F16Le, scales: &[u8; K_SCALE_SIZE], a: &[i8; QK_K], act: &BlockQ8K, acc: &mut DotAcc) {
    let (sc, m) = scales_mins_k4(scales);
    // Each min covers a group of 32, i.e. two of the 16-value bsums.
    let sumi = bsums_dot(&act.bsums, &std::array::from_fn(|j| m[j / 2]));
    let aux32 = lane_sums::<8, 32>(a, &act.qs, &sc);
    add_lanes(acc, d.to_f32() * act.d, &aux32);
    let dmin = dmin.to_f32() * act.d;
    acc.sum -= dmin * sumi as f32;
}

impl WeightBlock for BlockQ4K {
    type Act = BlockQ8K;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8K, acc: &mut DotAcc) {
        dot_k4(self.d, self.dmin, &self.scales, &unpack_nibbles_k(&self.qs), act, acc);
    }
}

// ---------------------------------------------------------------- Q5_K

/// 5-bit weights in 8 groups of 32: Q4_K plus a fifth bit per value in `qh` (bit `e / 32` of
/// `qh[e % 32]`), so q is in 0..32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ5K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

impl BlockQ5K {
    #[inline(always)]
    fn quants(&self) -> [i8; QK_K] {
        let mut a = unpack_nibbles_k(&self.qs);
        let (chunks, _) = a.as_chunks_mut::<32>();
        for (bit, chunk) in chunks.iter_mut().enumerate() {
            for (q, &h) in chunk.iter_mut().zip(&self.qh) {
                *q += ((h >> bit) & 1) as i8 * 16;
            }
        }
        a
    }
}

impl QuantBlock for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const LEN: usize = QK_K;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ5K>() }>(bytes);
        BlockQ5K {
            d: F16Le(field(b, 0)),
            dmin: F16Le(field(b, 2)),
            scales: field(b, 4),
            qh: field(b, 16),
            qs: field(b, 48),
        }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let (sc, m) = scales_mins_k4(&self.scales);
        let dl = sc.map(|s| d * s as f32);
        let ml = m.map(|m| min * m as f32);
        dequantize_groups::<32>(block_values::<QK_K>(out), &self.quants(), &dl, &ml);
    }
}

impl WeightBlock for BlockQ5K {
    type Act = BlockQ8K;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8K, acc: &mut DotAcc) {
        dot_k4(self.d, self.dmin, &self.scales, &self.quants(), act, acc);
    }
}

// ---------------------------------------------------------------- Q6_K

/// 6-bit weights in 16 groups of 16: `x = d * sc * (q - 32)`, q in 0..64 from a nibble in `ql` and
/// two high bits in `qh`, with signed 8-bit group scales `sc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: F16Le,
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// The 256 quants minus 32. Each half of 128 values uses 64 bytes of `ql` and 32 of `qh`:
    /// value `32 * k + l` of the half (k in 0..4) takes the low (k < 2) or high nibble of
    /// `ql[32 * (k % 2) + l]` and bits `2 * k` of `qh[l]`.
    #[inline(always)]
    fn quants(&self) -> [i8; QK_K] {
        let mut a = [0i8; QK_K];
        let (halves, _) = a.as_chunks_mut::<128>();
        let (ql, _) = self.ql.as_chunks::<64>();
        let (qh, _) = self.qh.as_chunks::<32>();
        for ((out, ql), qh) in halves.iter_mut().zip(ql).zip(qh) {
            let (quarters, _) = out.as_chunks_mut::<32>();
            for (k, quarter) in quarters.iter_mut().enumerate() {
                let low = &ql[32 * (k % 2)..][..32];
                let shift = 4 * (k / 2);
                for ((q, &l), &h) in quarter.iter_mut().zip(low).zip(qh) {
                    *q = (((l >> shift) & 0xF) | (((h >> (2 * k)) & 3) << 4)) as i8 - 32;
                }
            }
        }
        a
    }
}

impl QuantBlock for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const LEN: usize = QK_K;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockQ6K>() }>(bytes);
        BlockQ6K { ql: field(b, 0), qh: field(b, 128), scales: field_i8(b, 192), d: F16Le(field(b, 208)) }
    }

    /// ggml: `d * sc * q`, evaluated left to right.
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let dl = self.scales.map(|s| d * s as f32);
        scale_groups::<16>(block_values::<QK_K>(out), &self.quants(), &dl);
    }
}

impl WeightBlock for BlockQ6K {
    type Act = BlockQ8K;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8K, acc: &mut DotAcc) {
        let aux32 = lane_sums::<16, 16>(&self.quants(), &act.qs, &self.scales.map(|s| s as i32));
        add_lanes(acc, self.d.to_f32() * act.d, &aux32);
    }
}
