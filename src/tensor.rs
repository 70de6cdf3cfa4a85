//! GGML tensor element types and borrowed views of tensor data.
//!
//! A `TensorView` is what the compute code sees: a type, a shape and the raw bytes, wherever they
//! live (the memory-mapped file or a buffer the pager filled). This module owns no data.

use std::fmt;

/// GGML tensor types as numbered in the GGUF format (ggml.h `enum ggml_type`).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

impl GgmlType {
    pub fn from_u32(id: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    /// Elements per block.
    pub fn block_len(self) -> u64 {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 | I8 | I16 | I32 | I64 | F64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL | MXFP4 => 32,
            _ => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        use GgmlType::*;
        match self {
            F32 | I32 => 4,
            F16 | BF16 | I16 => 2,
            I8 => 1,
            I64 | F64 => 8,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
            IQ2_XXS => 66,
            IQ2_XS => 74,
            IQ3_XXS => 98,
            IQ1_S => 50,
            IQ4_NL => 18,
            IQ3_S => 110,
            IQ2_S => 82,
            IQ4_XS => 136,
            IQ1_M => 56,
            TQ1_0 => 54,
            TQ2_0 => 66,
            MXFP4 => 17,
        }
    }

    /// Bytes taken by `elements` values, or None when `elements` is not a whole number of blocks
    /// or the size overflows.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        if !elements.is_multiple_of(self.block_len()) {
            return None;
        }
        (elements / self.block_len()).checked_mul(self.block_bytes())
    }

    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a matrix's rows are arranged in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightLayout {
    /// As GGUF stores them: one row after another.
    #[default]
    Gguf,
    /// Groups of eight rows, their blocks interleaved as the SIMD kernels read them
    /// (`quant::interleave_rows8`): the same bytes per group of rows, in another order. Only the
    /// kernels read such a matrix; rows cannot be taken out of it one by one.
    Interleaved8,
}

/// A matrix whose rows are read from two places, the first rows from one and the rest from the
/// other (an output head whose copy is being made: the rows made so far from the copy, the
/// others from the file), or from one. Rows are multiplied independently, so the products are
/// the whole matrix's.
#[derive(Clone, Copy, Debug)]
pub struct SplitMatrix<'a> {
    pub first: TensorView<'a>,
    pub rest: Option<TensorView<'a>>,
}

impl<'a> SplitMatrix<'a> {
    pub fn whole(view: TensorView<'a>) -> Self {
        SplitMatrix { first: view, rest: None }
    }

    pub fn rows(&self) -> usize {
        self.first.rows() + self.rest.map_or(0, |r| r.rows())
    }
}

/// Borrowed tensor data. `dims[0]` is the innermost (contiguous) dimension, as in GGUF:
/// a weight matrix of `rows` outputs by `cols` inputs has `dims == [cols, rows]`.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub ty: GgmlType,
    pub layout: WeightLayout,
    pub dims: [u64; 4],
    pub n_dims: usize,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Length of one row (the innermost dimension).
    pub fn cols(&self) -> usize {
        self.dims[0] as usize
    }

    /// Number of rows: the product of all dimensions but the innermost.
    pub fn rows(&self) -> usize {
        self.dims[1..self.n_dims.max(1)].iter().product::<u64>() as usize
    }

    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows().max(1)
    }

    /// The raw bytes of row `i` (of a matrix in the file's layout).
    pub fn row(&self, i: usize) -> &'a [u8] {
        assert_eq!(
            self.layout,
            WeightLayout::Gguf,
            "TensorView::row: rows of an interleaved matrix are not contiguous"
        );
        let n = self.row_bytes();
        &self.data[i * n..(i + 1) * n]
    }
}
