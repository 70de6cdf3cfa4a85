//! ggml's non-linear 4-bit formats: IQ4_NL (32-value blocks, multiplied with Q8_0 activations)
//! and IQ4_XS (256-value super-blocks with 6-bit group scales, multiplied with Q8_K).
//!
//! Both store 4-bit indices into the same 16-entry table of signed levels, `kvalues_iq4nl`,
//! which is denser near zero than a uniform grid; a value is `scale * KVALUES[index]`. The nibble
//! order within 16 bytes is the legacy formats' (low nibbles are values 0..16, high 16..32).
//!
//! The kernels follow ggml's reference C code (ggml-quants.c `dequantize_row_iq4_*`,
//! ggml-cpu/quants.c `ggml_vec_dot_iq4_nl_q8_0_generic` / `ggml_vec_dot_iq4_xs_q8_K_generic`),
//! including the order of the float operations. The table lookups do not vectorize on baseline
//! x86-64 (no byte shuffle), so the dot products are scalar loops, as ggml's generic ones are;
//! materializing the levels for a vectorized integer dot measured slower.

use super::block::{block_bytes, block_values, field, DotAcc, F16Le, QuantBlock, WeightBlock};
use super::kquants::{BlockQ8K, QK_K};
use super::legacy::BlockQ8_0;
use crate::tensor::GgmlType;

/// ggml's `kvalues_iq4nl`: the level of each 4-bit index.
const KVALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Values per IQ4_NL block, and per IQ4_XS group.
const QK: usize = 32;

/// The levels of 32 values stored as nibbles in 16 bytes.
#[inline(always)]
fn levels(qs: &[u8; QK / 2]) -> [i8; QK] {
    let mut v = [0i8; QK];
    let (lo, hi) = v.split_at_mut(QK / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
        *l = KVALUES[(q & 0x0F) as usize];
        *h = KVALUES[(q >> 4) as usize];
    }
    v
}

/// Integer dot product of the levels of 32 nibbles with 32 signed bytes (exact in i32), without
/// materializing the levels: storing them bytewise and reloading them as vectors stalls store
/// forwarding, which costs more than the vectorized products save.
#[inline(always)]
fn dot_levels(qs: &[u8; QK / 2], q8: &[i8; QK]) -> i32 {
    let (lo, hi) = q8.split_at(QK / 2);
    let mut sumi = 0i32;
    for ((&q, &l), &h) in qs.iter().zip(lo).zip(hi) {
        sumi += l as i32 * KVALUES[(q & 0x0F) as usize] as i32 + h as i32 * KVALUES[(q >> 4) as usize] as i32;
    }
    sumi
}

/// Non-linear 4-bit weights with one scale: `x = d * KVALUES[q]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockIq4Nl {
    pub d: F16Le,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockIq4Nl>() == 18);

impl QuantBlock for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const LEN: usize = QK;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockIq4Nl>() }>(bytes);
        BlockIq4Nl { d: F16Le(field(b, 0)), qs: field(b, 2) }
    }

    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &v) in block_values::<QK>(out).iter_mut().zip(&levels(&self.qs)) {
            *o = d * v as f32;
        }
    }
}

impl WeightBlock for BlockIq4Nl {
    type Act = BlockQ8_0;

    #[inline(always)]
    fn dot(&self, act: &BlockQ8_0, acc: &mut DotAcc) {
        let d = act.d.to_f32() * self.d.to_f32();
        acc.sum += d * dot_levels(&self.qs, &act.qs) as f32;
    }
}

/// Non-linear 4-bit weights in 8 groups of 32: `x = d * (ls - 32) * KVALUES[q]`, with the 6-bit
/// group scale `ls` split into a low nibble in `scales_l` and two high bits in `scales_h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockIq4Xs {
    pub d: F16Le,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockIq4Xs>() == 136);

impl BlockIq4Xs {
    /// The 8 group scales minus 32: group `ib` takes nibble `ib % 2` of `scales_l[ib / 2]` and bits
    /// `2 * ib` of the little-endian u16 `scales_h`.
    #[inline(always)]
    fn scales(&self) -> [i32; QK_K / QK] {
        let h = u16::from_le_bytes(self.scales_h);
        std::array::from_fn(|ib| {
            let low = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
            let high = ((h >> (2 * ib)) & 3) as u8;
            (low | (high << 4)) as i32 - 32
        })
    }

    /// The 8 groups' bytes of nibbles.
    #[inline(always)]
    fn groups(&self) -> &[[u8; QK / 2]; QK_K / QK] {
        let (groups, _) = self.qs.as_chunks::<{ QK / 2 }>();
        groups.try_into().expect("IQ4_XS has 8 groups")
    }
}

impl QuantBlock for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const LEN: usize = QK_K;
    const BYTES: usize = size_of::<Self>();

    #[inline(always)]
    fn read(bytes: &[u8]) -> Self {
        let b = block_bytes::<{ size_of::<BlockIq4Xs>() }>(bytes);
        BlockIq4Xs { d: F16Le(field(b, 0)), scales_h: field(b, 2), scales_l: field(b, 4), qs: field(b, 8) }
    }

    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let (out, _) = block_values::<QK_K>(out).as_chunks_mut::<QK>();
        for ((o, qs), ls) in out.iter_mut().zip(self.groups()).zip(self.scales()) {
            let dl = d * ls as f32;
            for (o, &v) in o.iter_mut().zip(&levels(qs)) {
                *o = dl * v as f32;
            }
        }
    }
}

impl WeightBlock for BlockIq4Xs {
    type Act = BlockQ8K;

    /// ggml adds each group's `d * (ls - 32) * sumi` to the running sum separately.
    #[inline(always)]
    fn dot(&self, act: &BlockQ8K, acc: &mut DotAcc) {
        let d4d8 = self.d.to_f32() * act.d;
        let (q8, _) = act.qs.as_chunks::<QK>();
        for ((qs, ls), q8) in self.groups().iter().zip(self.scales()).zip(q8) {
            let dl = d4d8 * ls as f32;
            acc.sum += dl * dot_levels(qs, q8) as f32;
        }
    }
}
