//! Weight layouts the SIMD kernels read faster than the file's (`WeightLayout::Interleaved8`),
//! where the scales of eight blocks lie side by side and their quants come already transposed
//! (lane `l` of a vector: block `l`'s), as the kernels would otherwise rearrange them:
//! - Q4_K: the blocks of eight rows interleaved, for a kernel taking eight rows at once, which
//!   then reads one sequential stream;
//! - Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: each row's whole groups of eight blocks on their own (rows
//!   stay whole and in order; a row's last `nb % 8` blocks stay as they are), so that one row's
//!   product finishes eight blocks in the lanes of one accumulator instead of summing each
//!   block's lanes.
//!
//! Rearranging is a permutation of the bytes of each group: the bytes and the arithmetic are
//! those of the file's layout, so results are bit-identical.
//!
//! Q4_K, per block index `i` of a group (8 x 144 = 1152 bytes, the rows' block `i` each):
//! - bytes `16 r..16 r + 16`: row `r`'s `d`, `dmin` and 12 bytes of packed scales and mins;
//! - bytes `128 + 256 c + 32 j + 4 r..+ 4`: row `r`'s quant bytes `32 c + 4 j..+ 4` (`c` in 0..4,
//!   `j` in 0..8), which is what the file layout's kernel gets by transposing eight 32-byte loads.
//!
//! The 32-value formats, per group of eight blocks of a row (8 x 18, 20, 22 or 24 bytes):
//! - bytes `2 l..2 l + 2`: block `l`'s `d`; for Q4_1 and Q5_1 then bytes `16 + 2 l..`: its `m`;
//! - for Q5_0 and Q5_1 then 32 bytes of fifth bits, byte `4 l + b` holding at bit `j` block
//!   `l`'s fifth bit `4 j + b`, the one of byte `4 l + b` of quant vector `j` below (a kernel
//!   moves bit `j` to bit 4 with one shift, where a word per vector took five operations to
//!   spread over its bytes);
//! - then 128 bytes, `32 c + 4 l..+ 4`: block `l`'s quant bytes `4 c..4 c + 4` (`c` in 0..4),
//!   whose low nibbles are its quants `4 c..` (vector `j = c`) and high nibbles its quants
//!   `16 + 4 c..` (vector `j = 4 + c`); Q8_0's 32 quant bytes a block take 256 bytes the same
//!   way (`c` in 0..8), vector `j = c` holding its quants `4 j..4 j + 4`, as an activation row's
//!   interleaved quants do (`quant::SimdTable`).

use crate::tensor::GgmlType;

/// Rows per interleaved group.
pub const GROUP_ROWS: usize = 8;

const Q4_K_BYTES: usize = 144;
/// Bytes of a Q4_K block before its quants: `d`, `dmin`, 12 bytes of scales and mins.
const Q4_K_HEAD: usize = 16;

/// Whether `ty` has an interleaved layout.
pub fn has_layout(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_K | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
}

/// Blocks per group of a row in the 32-value formats' layout.
const GROUP_BLOCKS: usize = 8;

/// Where a Q5_0 (`with_min` false) or Q5_1 group's 32 bytes of fifth bits start: after the
/// eight blocks' f16 fields. The kernels read them there.
pub(crate) const fn fifth_bits_at(with_min: bool) -> usize {
    2 * GROUP_BLOCKS * if with_min { 2 } else { 1 }
}

/// Where a 32-value format's fields lie in a block and in an interleaved group (module docs):
/// the one description both directions of the rearrangement follow, and the AMX dequantizer
/// that reads the rearranged groups directly.
#[derive(Clone, Copy)]
pub(crate) struct GroupLayout {
    pub(crate) block_bytes: usize,
    /// The f16 fields that start a block: `d`, and Q4_1's and Q5_1's `m`.
    pub(crate) fields: usize,
    /// Q5_0 and Q5_1: a block's 32-bit word of fifth bits follows its f16 fields, and the
    /// group's 32 bytes of them follow the group's f16 fields.
    pub(crate) five_bit: bool,
    /// Quant bytes that end a block: 16 of nibbles, Q8_0's 32.
    pub(crate) quant_bytes: usize,
}

impl GroupLayout {
    pub(crate) fn of(ty: GgmlType) -> Self {
        use GgmlType::*;
        GroupLayout {
            block_bytes: ty.block_bytes() as usize,
            fields: if matches!(ty, Q4_1 | Q5_1) { 2 } else { 1 },
            five_bit: matches!(ty, Q5_0 | Q5_1),
            quant_bytes: if ty == Q8_0 { 32 } else { 16 },
        }
    }

    /// Where the group's fifth bits start.
    pub(crate) fn fifth_bits_at(&self) -> usize {
        fifth_bits_at(self.fields == 2)
    }

    /// Where fifth bit `bit` of block `l` lies among the group's 32 bytes of them: (byte, bit).
    fn fifth_bit_place(l: usize, bit: usize) -> (usize, usize) {
        (4 * l + bit % 4, bit / 4)
    }

    /// Where the group's quant bytes start.
    pub(crate) fn quants_at(&self) -> usize {
        self.fifth_bits_at() + if self.five_bit { 32 } else { 0 }
    }
}

/// Where byte `k` of row `r`'s block lands among the interleaved bytes of that block index.
pub(crate) fn q4_k_position(r: usize, k: usize) -> usize {
    if k < Q4_K_HEAD {
        Q4_K_HEAD * r + k
    } else {
        let q = k - Q4_K_HEAD;
        let (c, j) = (q / 32, q % 32 / 4);
        GROUP_ROWS * Q4_K_HEAD + 256 * c + 32 * j + 4 * r + q % 4
    }
}

/// Rearranges `rows` (whole groups of eight rows of `cols` values of `ty`, in the file's layout)
/// into the interleaved layout, in place; `scratch` is reused between calls.
///
/// Panics if `ty` has no interleaved layout or `rows` is not whole groups of rows.
pub fn interleave_rows8(ty: GgmlType, cols: usize, rows: &mut [u8], scratch: &mut Vec<u8>) {
    assert!(has_layout(ty), "quant: {ty} has no interleaved layout");
    let row_bytes = super::row_bytes(ty, cols);
    let group_bytes = GROUP_ROWS * row_bytes;
    assert!(group_bytes > 0 && rows.len().is_multiple_of(group_bytes), "quant: not whole groups of eight rows");
    let nb = cols / ty.block_len() as usize;
    if ty != GgmlType::Q4_K {
        let block_bytes = ty.block_bytes() as usize;
        for row in rows.chunks_exact_mut(row_bytes) {
            let whole = nb - nb % GROUP_BLOCKS;
            for group in row[..whole * block_bytes].chunks_exact_mut(GROUP_BLOCKS * block_bytes) {
                scratch.clear();
                scratch.extend_from_slice(group);
                interleave_blocks8(ty, scratch, group);
            }
        }
        return;
    }
    for group in rows.chunks_exact_mut(group_bytes) {
        scratch.clear();
        scratch.extend_from_slice(group);
        for r in 0..GROUP_ROWS {
            for i in 0..nb {
                let block = &scratch[r * row_bytes + i * Q4_K_BYTES..][..Q4_K_BYTES];
                let out = &mut group[i * GROUP_ROWS * Q4_K_BYTES..][..GROUP_ROWS * Q4_K_BYTES];
                // Four bytes at a time: every run of four stays together.
                for k in (0..Q4_K_BYTES).step_by(4) {
                    let at = q4_k_position(r, k);
                    out[at..at + 4].copy_from_slice(&block[k..k + 4]);
                }
            }
        }
    }
}

/// Row `row` of `rows` (whole groups of eight rows of `cols` values of `ty`, rearranged by
/// [`interleave_rows8`]) as the file lays it out, into `out`: what an embedding lookup in a
/// rearranged tied output head dequantizes. Reads only the row's own bytes, or for Q4_K its
/// group's.
///
/// Panics if `ty` has no interleaved layout or the row is not inside `rows`' whole groups.
pub fn file_layout_row(ty: GgmlType, cols: usize, rows: &[u8], row: usize, out: &mut Vec<u8>) {
    assert!(has_layout(ty), "quant: {ty} has no interleaved layout");
    let row_bytes = super::row_bytes(ty, cols);
    let group_bytes = GROUP_ROWS * row_bytes;
    let group_start = row / GROUP_ROWS * group_bytes;
    assert!(group_start + group_bytes <= rows.len(), "quant: row {row} is not inside whole groups of eight rows");
    let nb = cols / ty.block_len() as usize;
    out.clear();
    out.resize(row_bytes, 0);
    if ty == GgmlType::Q4_K {
        let (group, r) = (&rows[group_start..][..group_bytes], row % GROUP_ROWS);
        for (i, block) in out.chunks_exact_mut(Q4_K_BYTES).enumerate() {
            let from = &group[i * GROUP_ROWS * Q4_K_BYTES..][..GROUP_ROWS * Q4_K_BYTES];
            for k in (0..Q4_K_BYTES).step_by(4) {
                let at = q4_k_position(r, k);
                block[k..k + 4].copy_from_slice(&from[at..at + 4]);
            }
        }
        return;
    }
    let block_bytes = ty.block_bytes() as usize;
    let whole = (nb - nb % GROUP_BLOCKS) * block_bytes;
    let src = &rows[row * row_bytes..][..row_bytes];
    for (group, dst) in
        src[..whole].chunks_exact(GROUP_BLOCKS * block_bytes).zip(out.chunks_exact_mut(GROUP_BLOCKS * block_bytes))
    {
        file_layout_blocks8(ty, group, dst);
    }
    out[whole..].copy_from_slice(&src[whole..]);
}

/// The inverse of [`interleave_blocks8`]: one interleaved group back into eight blocks.
fn file_layout_blocks8(ty: GgmlType, group: &[u8], blocks: &mut [u8]) {
    let g = GroupLayout::of(ty);
    for (l, block) in blocks.chunks_exact_mut(g.block_bytes).enumerate() {
        for f in 0..g.fields {
            let at = 2 * GROUP_BLOCKS * f + 2 * l;
            block[2 * f..2 * f + 2].copy_from_slice(&group[at..at + 2]);
        }
        if g.five_bit {
            let mut qh = 0u32;
            for bit in 0..32 {
                let (byte, j) = GroupLayout::fifth_bit_place(l, bit);
                qh |= u32::from(group[g.fifth_bits_at() + byte] >> j & 1) << bit;
            }
            block[2 * g.fields..2 * g.fields + 4].copy_from_slice(&qh.to_le_bytes());
        }
        let quants = g.block_bytes - g.quant_bytes;
        for c in 0..g.quant_bytes / 4 {
            let at = g.quants_at() + 32 * c + 4 * l;
            block[quants + 4 * c..quants + 4 * c + 4].copy_from_slice(&group[at..at + 4]);
        }
    }
}

/// One group of eight 32-value blocks (`ty`'s) from `blocks` into `out` in the layout of the
/// module docs.
fn interleave_blocks8(ty: GgmlType, blocks: &[u8], out: &mut [u8]) {
    let g = GroupLayout::of(ty);
    let mut fifth_bits = [0u8; 32];
    for (l, block) in blocks.chunks_exact(g.block_bytes).enumerate() {
        for f in 0..g.fields {
            let at = 2 * GROUP_BLOCKS * f + 2 * l;
            out[at..at + 2].copy_from_slice(&block[2 * f..2 * f + 2]);
        }
        if g.five_bit {
            let qh = u32::from_le_bytes(block[2 * g.fields..2 * g.fields + 4].try_into().expect("4 bytes"));
            for bit in 0..32 {
                let (byte, j) = GroupLayout::fifth_bit_place(l, bit);
                fifth_bits[byte] |= ((qh >> bit & 1) as u8) << j;
            }
        }
        let quants = &block[g.block_bytes - g.quant_bytes..];
        for c in 0..g.quant_bytes / 4 {
            let at = g.quants_at() + 32 * c + 4 * l;
            out[at..at + 4].copy_from_slice(&quants[4 * c..4 * c + 4]);
        }
    }
    if g.five_bit {
        out[g.fifth_bits_at()..][..32].copy_from_slice(&fifth_bits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout is a permutation of each block index's bytes that keeps runs of four together.
    #[test]
    fn q4_k_positions_are_a_permutation_of_four_byte_runs() {
        let mut seen = [false; GROUP_ROWS * Q4_K_BYTES];
        for r in 0..GROUP_ROWS {
            for k in 0..Q4_K_BYTES {
                let at = q4_k_position(r, k);
                assert!(!seen[at], "byte {k} of row {r} lands where another did");
                seen[at] = true;
                if k % 4 != 0 {
                    assert_eq!(at, q4_k_position(r, k - 1) + 1);
                }
            }
        }
    }

    #[test]
    fn interleaving_moves_each_byte_where_the_layout_says() {
        let (cols, groups) = (3 * 256, 2);
        let row_bytes = 3 * Q4_K_BYTES;
        let original: Vec<u8> = (0..groups * GROUP_ROWS * row_bytes).map(|i| (i * 31 % 251) as u8).collect();
        let mut rows = original.clone();
        interleave_rows8(GgmlType::Q4_K, cols, &mut rows, &mut Vec::new());
        for g in 0..groups {
            for r in 0..GROUP_ROWS {
                for i in 0..3 {
                    for k in 0..Q4_K_BYTES {
                        let from = (g * GROUP_ROWS + r) * row_bytes + i * Q4_K_BYTES + k;
                        let to = g * GROUP_ROWS * row_bytes + i * GROUP_ROWS * Q4_K_BYTES + q4_k_position(r, k);
                        assert_eq!(rows[to], original[from], "group {g} row {r} block {i} byte {k}");
                    }
                }
            }
        }
    }

    /// Each row of every rearranged format comes back as the file had it, whole groups of
    /// blocks and a row's last few alike.
    #[test]
    fn file_layout_rows_undo_the_interleaving() {
        use GgmlType::*;
        for ty in [Q4_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
            let cols = if ty == Q4_K { 3 * 256 } else { 11 * 32 };
            let row_bytes = crate::quant::row_bytes(ty, cols);
            let rows = 2 * GROUP_ROWS;
            let original: Vec<u8> = (0..rows * row_bytes).map(|i| (i * 37 % 253) as u8).collect();
            let mut data = original.clone();
            interleave_rows8(ty, cols, &mut data, &mut Vec::new());
            assert_ne!(data, original, "{ty}: rearranged");
            let mut row = Vec::new();
            for r in 0..rows {
                file_layout_row(ty, cols, &data, r, &mut row);
                assert_eq!(row, original[r * row_bytes..][..row_bytes], "{ty}: row {r}");
            }
        }
    }

    /// Q5_1 has every part of the 32-value layout: `d`, `m`, fifth bits and nibbles. Each
    /// whole group's fields land where the module docs say; a row's last blocks stay put.
    #[test]
    fn a_q5_1_group_holds_its_blocks_fields_as_documented() {
        let (nb, rows) = (10, 8);
        let block_bytes = 24;
        let original: Vec<u8> = (0..rows * nb * block_bytes).map(|i| (i * 37 % 253) as u8).collect();
        let mut data = original.clone();
        interleave_rows8(GgmlType::Q5_1, nb * 32, &mut data, &mut Vec::new());
        for r in 0..rows {
            let (row, got) = (&original[r * nb * block_bytes..][..nb * block_bytes], &data[r * nb * block_bytes..]);
            for l in 0..GROUP_BLOCKS {
                let block = &row[l * block_bytes..][..block_bytes];
                assert_eq!(got[2 * l..2 * l + 2], block[0..2], "row {r} block {l}: d");
                assert_eq!(got[16 + 2 * l..16 + 2 * l + 2], block[2..4], "row {r} block {l}: m");
                let qh = u32::from_le_bytes(block[4..8].try_into().unwrap());
                for bit in 0..32 {
                    let (j, b) = (bit / 4, bit % 4);
                    assert_eq!(
                        u32::from(got[32 + 4 * l + b] >> j & 1),
                        qh >> bit & 1,
                        "row {r} block {l}: fifth bit {bit}"
                    );
                }
                for k in 0..16 {
                    assert_eq!(
                        got[64 + 32 * (k / 4) + 4 * l + k % 4],
                        block[8 + k],
                        "row {r} block {l}: quant byte {k}"
                    );
                }
            }
            let tail = GROUP_BLOCKS * block_bytes;
            assert_eq!(got[tail..nb * block_bytes], row[tail..], "row {r}: the last blocks");
        }
    }
}
