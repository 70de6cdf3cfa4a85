//! Weight layouts the SIMD kernels read faster than the file's (`WeightLayout::Interleaved8`):
//! the blocks of eight rows interleaved, so that a kernel taking eight rows at once reads one
//! sequential stream, finds the rows' scales side by side and their quants already transposed.
//! Rearranging is a permutation of the bytes of each group of eight rows: the bytes and the
//! arithmetic are those of the file's layout, so results are bit-identical.
//!
//! Q4_K, per block index `i` of a group (8 x 144 = 1152 bytes, the rows' block `i` each):
//! - bytes `16 r..16 r + 16`: row `r`'s `d`, `dmin` and 12 bytes of packed scales and mins;
//! - bytes `128 + 256 c + 32 j + 4 r..+ 4`: row `r`'s quant bytes `32 c + 4 j..+ 4` (`c` in 0..4,
//!   `j` in 0..8), which is what the file layout's kernel gets by transposing eight 32-byte loads.

use crate::tensor::GgmlType;

/// Rows per interleaved group.
pub const GROUP_ROWS: usize = 8;

const Q4_K_BYTES: usize = 144;
/// Bytes of a Q4_K block before its quants: `d`, `dmin`, 12 bytes of scales and mins.
const Q4_K_HEAD: usize = 16;

/// Whether `ty` has an interleaved layout.
pub fn has_layout(ty: GgmlType) -> bool {
    ty == GgmlType::Q4_K
}

/// Where byte `k` of row `r`'s block lands among the interleaved bytes of that block index.
fn q4_k_position(r: usize, k: usize) -> usize {
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
}
