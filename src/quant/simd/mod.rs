//! Run-time choice of the instruction set for row dot products.
//!
//! The scalar kernels (the rest of `quant`) are the reference; the SIMD kernels here are tested
//! against them on random blocks (`quant::tests`). The best set the CPU supports is picked once,
//! on first use; `CHORD_LLM_SIMD=scalar|avx2|avx512vnni|neon|neondot` overrides it (for measurements and
//! tests; a set the CPU lacks falls back to the detected one with a warning on stderr).
//!
//! A set's kernels are `#[target_feature]` functions, undefined behaviour to run on a CPU
//! without the set. They leave this module only as [`Checked`] values, which only [`Isa`]
//! makes, after checking `available()`: the one argument for their safety, made here once.

#[cfg(target_arch = "x86_64")]
mod x86;

/// bf16 matrix products on AMX tiles, where the CPU has them (see `quant::bf16_tiles`).
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::amx;
/// Integer matrix products on AMX tiles, bit-identical to the AVX-512 VNNI kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::amx_int8;

#[cfg(target_arch = "aarch64")]
mod arm;

#[cfg(test)]
mod tests;

use crate::quant::GELU_TABLE_LEN;
use crate::tensor::GgmlType;
use std::sync::OnceLock;

/// An instruction set the row kernels can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, auto-vectorized for the build target: the reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 VNNI (with AVX-512VL, on 256-bit vectors).
    Avx512Vnni,
    /// aarch64 NEON (Advanced SIMD), which every aarch64 CPU has.
    Neon,
    /// aarch64 NEON with the dot-product extension (`sdot`, Armv8.2 and later).
    NeonDot,
}

impl Isa {
    /// Every set, in order of preference (best last).
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDot];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDot => "neondot",
        }
    }

    /// Whether this is one of the aarch64 sets (whose Q8_0/Q8_1 activations round as ggml's
    /// NEON quantizers do).
    pub fn is_arm(self) -> bool {
        matches!(self, Isa::Neon | Isa::NeonDot)
    }

    /// Whether the running CPU can execute this set's kernels.
    pub fn available(self) -> bool {
        // Asked on every kernel dispatch (tens of thousands of times per token for attention),
        // so the CPU is probed once per set.
        static PROBED: [OnceLock<bool>; Isa::ALL.len()] = [const { OnceLock::new() }; Isa::ALL.len()];
        *PROBED[self as usize].get_or_init(|| match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::avx2::available(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::avx512vnni::available(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => arm::neon::available(),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => arm::neondot::available(),
            #[allow(unreachable_patterns)]
            _ => false,
        })
    }

    /// This set's kernels, or None for the scalar set and for a set the CPU lacks.
    ///
    /// The one place that decides a set's `#[target_feature]` kernels may run: everything
    /// reaches them through [`Checked`] values made from what this returns.
    fn set(self) -> Option<&'static KernelSet> {
        if !self.available() {
            return None;
        }
        match self {
            Isa::Scalar => None,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(&x86::avx2::SET),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => Some(&x86::avx512vnni::SET),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Some(&arm::neon::SET),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => Some(&arm::neondot::SET),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The set's kernels for weight type `ty`, one row at a time and batched, or None where it
    /// has none (the scalar kernels are used then).
    pub(super) fn kernels(self, ty: GgmlType) -> Option<(Checked<RowsKernel>, Checked<BatchKernel>)> {
        let (rows, batch) = (self.set()?.row_kernels)(ty)?;
        Some((Checked(rows), Checked(batch)))
    }

    /// The set's kernel for weight type `ty` in the interleaved layout
    /// (`quant::interleave_rows8`), or None where it has none.
    pub(super) fn interleaved_kernel(self, ty: GgmlType) -> Option<Checked<BatchKernel>> {
        self.set()?.interleaved_kernel.and_then(|kernel| kernel(ty)).map(Checked)
    }

    /// The set's quantizer of f32 activations to Q8_0 or Q8_1 blocks, or None (scalar code then).
    pub(super) fn q8_quantizer(self) -> Option<Checked<Q8Quantizer>> {
        self.set()?.quantize_q8.map(Checked)
    }

    /// The set's quantizer of f32 activations to Q8_K blocks, or None (scalar code then).
    pub(super) fn q8_k_quantizer(self) -> Option<Checked<Q8KQuantizer>> {
        self.set()?.quantize_q8_k.map(Checked)
    }

    /// The set's `gate = silu(gate) * up` kernel, or None (scalar code then).
    pub(super) fn silu_mul_kernel(self) -> Option<Checked<SiluMulKernel>> {
        self.set()?.silu_mul.map(Checked)
    }

    /// The set's `gate = gelu(gate) * up` kernel, or None (scalar code then).
    pub(super) fn gelu_mul_kernel(self) -> Option<Checked<GeluMulKernel>> {
        self.set()?.gelu_mul.map(Checked)
    }

    /// The set's transposition kernel, or None (scalar code then).
    pub(super) fn transpose_kernel(self) -> Option<Checked<TransposeKernel>> {
        self.set()?.transpose.map(Checked)
    }

    /// The set's softmax kernel, or None (scalar code then).
    pub(super) fn softmax_kernel(self) -> Option<Checked<SoftmaxKernel>> {
        self.set()?.softmax.map(Checked)
    }

    /// The set's f16 vector kernels (dot product with an f32 vector, `out += p * v`), or None
    /// (scalar code then).
    pub(super) fn f16_kernels(self) -> Option<(Checked<F16DotKernel>, Checked<F16AxpyKernel>)> {
        self.set().map(|s| (Checked(s.dot_f16_f32), Checked(s.axpy_f16)))
    }
}

/// `out[r] = row r . act` for `out.len()` consecutive weight rows (see `quant::dot_rows`).
pub(crate) type RowsKernel = unsafe fn(cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]);
/// `out[r * n_tokens + t] = row r . act t` (see `quant::dot_rows_batch`).
pub(crate) type BatchKernel = unsafe fn(cols: usize, weights: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]);
/// `out[h * len + t] = row t . b_h` for f16 vectors at byte `at` of rows of `row_bytes` and the
/// query vectors `b_h` of `n` values in `b` (see `quant::dot_f16_f32_heads`).
pub(crate) type F16DotKernel =
    unsafe fn(rows: &[u8], row_bytes: usize, at: usize, b: &[f32], n: usize, out: &mut [f32]);
/// `out_h += p_h[t] * row t` for each head h's `n` outputs and weights, for f16 vectors at byte
/// `at` of rows of `row_bytes` (see `quant::axpy_f16_heads`).
pub(crate) type F16AxpyKernel =
    unsafe fn(out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize, n: usize);

/// Q8_0 blocks (`with_sum` false) or Q8_1 blocks of `x` into `out`, as the scalar
/// `BlockQ8_0/Q8_1::quantize_like_simd` make them (see `quant::quantize_activations_with`).
pub(crate) type Q8Quantizer = unsafe fn(x: &[f32], with_sum: bool, out: &mut [u8]);

/// Q8_K blocks of `x` into `out`, as the scalar `BlockQ8K::quantize` makes them (see
/// `quant::quantize_activations_with`).
pub(crate) type Q8KQuantizer = unsafe fn(x: &[f32], out: &mut [u8]);

/// `gate[i] = silu(gate[i]) * up[i]` (see `quant::silu_mul`).
pub(crate) type SiluMulKernel = unsafe fn(gate: &mut [f32], up: &[f32]);

/// `gate[i] = gelu(gate[i]) * up[i]` with the GELU from `table` (see `quant::gelu_mul`).
pub(crate) type GeluMulKernel = unsafe fn(gate: &mut [f32], up: &[f32], table: &[u16; GELU_TABLE_LEN]);

/// `x = softmax(x)` in place (see `quant::softmax`).
pub(crate) type SoftmaxKernel = unsafe fn(x: &mut [f32]);

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` for `rows` x `cols` values (see
/// `quant::transpose`, which checks the bounds).
pub(crate) type TransposeKernel =
    unsafe fn(src: &[f32], src_stride: usize, rows: usize, cols: usize, dst: &mut [f32], dst_stride: usize);

/// What one SIMD instruction set provides: its `#[target_feature]` functions, unsafe to call
/// unless the CPU has the set, so only [`Isa::set`] hands them out (wrapped in [`Checked`]).
pub(crate) struct KernelSet {
    /// Row kernels (one row at a time, batched) for a weight type, if the set has them.
    pub row_kernels: fn(GgmlType) -> Option<(RowsKernel, BatchKernel)>,
    /// The batched kernel for a weight type in the interleaved layout, if the set has any.
    pub interleaved_kernel: Option<fn(GgmlType) -> Option<BatchKernel>>,
    pub dot_f16_f32: F16DotKernel,
    pub axpy_f16: F16AxpyKernel,
    pub quantize_q8: Option<Q8Quantizer>,
    pub quantize_q8_k: Option<Q8KQuantizer>,
    pub silu_mul: Option<SiluMulKernel>,
    pub gelu_mul: Option<GeluMulKernel>,
    pub softmax: Option<SoftmaxKernel>,
    pub transpose: Option<TransposeKernel>,
}

/// A kernel of an instruction set the running CPU has. Its field is private to this module and
/// only [`Isa`]'s methods fill it, from [`Isa::set`], which checks `available()` first: that is
/// the whole case for calling the kernels' `#[target_feature]` code, made once here.
#[derive(Clone, Copy)]
pub(crate) struct Checked<K>(K);

impl Checked<RowsKernel> {
    pub(crate) fn call(self, cols: usize, weights: &[u8], act: &[u8], out: &mut [f32]) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(cols, weights, act, out) }
    }
}

impl Checked<BatchKernel> {
    pub(crate) fn call(self, cols: usize, weights: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(cols, weights, acts, n_tokens, out) }
    }
}

impl Checked<F16DotKernel> {
    pub(crate) fn call(self, rows: &[u8], row_bytes: usize, at: usize, b: &[f32], n: usize, out: &mut [f32]) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(rows, row_bytes, at, b, n, out) }
    }
}

impl Checked<Q8Quantizer> {
    pub(crate) fn call(self, x: &[f32], with_sum: bool, out: &mut [u8]) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(x, with_sum, out) }
    }
}

impl Checked<Q8KQuantizer> {
    pub(crate) fn call(self, x: &[f32], out: &mut [u8]) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(x, out) }
    }
}

impl Checked<SiluMulKernel> {
    pub(crate) fn call(self, gate: &mut [f32], up: &[f32]) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(gate, up) }
    }
}

impl Checked<GeluMulKernel> {
    pub(crate) fn call(self, gate: &mut [f32], up: &[f32], table: &[u16; GELU_TABLE_LEN]) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(gate, up, table) }
    }
}

impl Checked<TransposeKernel> {
    pub(crate) fn call(
        self,
        src: &[f32],
        src_stride: usize,
        rows: usize,
        cols: usize,
        dst: &mut [f32],
        dst_stride: usize,
    ) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(src, src_stride, rows, cols, dst, dst_stride) }
    }
}

impl Checked<SoftmaxKernel> {
    pub(crate) fn call(self, x: &mut [f32]) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(x) }
    }
}

impl Checked<F16AxpyKernel> {
    pub(crate) fn call(self, out: &mut [f32], p: &[f32], rows: &[u8], row_bytes: usize, at: usize, n: usize) {
        // SAFETY: a `Checked` kernel's set is available on this CPU (see `Checked`).
        unsafe { (self.0)(out, p, rows, row_bytes, at, n) }
    }
}

/// `0x1.<frac>p<exp>` as an f32: the hexadecimal constants of ggml's vector `exp` (six hex
/// digits after the point, all exactly representable in f32).
const fn hex_f32(frac: u32, exp: i32) -> f32 {
    let mut v = 1.0 + frac as f64 / 16_777_216.0;
    let mut e = exp;
    while e > 0 {
        v *= 2.0;
        e -= 1;
    }
    while e < 0 {
        v /= 2.0;
        e += 1;
    }
    v as f32
}

/// The constants of the vector `exp` that ggml's AVX2 and NEON builds use in SiLU (from Arm's
/// optimized routines): `exp(x) = 2^n (1 + p(b))` with `n = round(x log2 e)`, `b = x - n ln 2`
/// (ln 2 split in a high and a low part) and `p(b) = C0 b + (C1 + C2 b) b^2 + (C3 + C4 b) b^4`.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) mod vexp {
    use super::hex_f32;
    /// 1.5 * 2^23: adding it rounds an f32 below 2^22 to an integer, left in the low mantissa bits.
    pub const SHIFT: f32 = 12_582_912.0;
    pub const LOG2E: f32 = hex_f32(0x715476, 0);
    pub const LN2_HI: f32 = hex_f32(0x62e400, -1);
    pub const LN2_LO: f32 = hex_f32(0x7f7d1c, -20);
    pub const C0: f32 = hex_f32(0xffffec, -1);
    pub const C1: f32 = hex_f32(0xfffdb6, -2);
    pub const C2: f32 = hex_f32(0x555e66, -3);
    pub const C3: f32 = hex_f32(0x573e2e, -5);
    pub const C4: f32 = hex_f32(0x0e4020, -7);

    /// One lane of the SIMD SwiGLU kernels, `g / (1 + exp(-g)) * u` with [`exp_lane`]: their
    /// tail, and the reference their tests compare with bit for bit.
    pub fn silu_mul_lane(g: f32, u: f32) -> f32 {
        g / (1.0 + exp_lane(-g)) * u
    }

    /// One lane of the vector `exp`, operation for operation (fused where it fuses): the SIMD
    /// kernels' tail, and the reference their tests compare with bit for bit.
    pub fn exp_lane(x: f32) -> f32 {
        let z = x.mul_add(LOG2E, SHIFT);
        let n = z - SHIFT;
        let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
        let e = z.to_bits() << 23;
        let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
        let u = b * b;
        let p = C4.mul_add(b, C3).mul_add(u, C2.mul_add(b, C1)).mul_add(u, C0 * b);
        if n.abs() <= 126.0 {
            return p.mul_add(k, k);
        }
        let bias: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
        let s1 = f32::from_bits(bias.wrapping_add(0x7f00_0000));
        let s2 = f32::from_bits(e.wrapping_sub(bias));
        if n.abs() > 192.0 {
            s1 * s1
        } else {
            s2.mul_add(p, s2) * s1
        }
    }
}

/// `e^x` for f32 as glibc's `expf` computes it (the algorithm of Arm's optimized routines,
/// glibc 2.27 on): `x N / ln 2 = k + r` in f64, `2^(k/N)` from a table of `N = 32` entries and
/// `2^(r/N)` from a cubic, rounded to f32 once (error under 0.502 ulp). With its operations
/// fused as glibc's x86-64 FMA build fuses them, it equals the C library's `expf` on x86-64
/// glibc 2.36 for every f32 in [-104, 88] (checked exhaustively, see the tests). Attention's
/// softmax takes it eight values at a time ([`expf::lane`] is the reference), so its
/// probabilities stay those of libm `expf` one score at a time, which llama.cpp's flash
/// attention uses: Gemma-3's logits move by up to 2 when those probabilities move by a few ulp.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) mod expf {
    use std::sync::OnceLock;

    /// `N / ln 2`.
    pub const INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652B_82FE);
    /// `1.5 * 2^52`: adding it rounds an f64 below 2^51 to an integer in the low mantissa bits.
    pub const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
    /// The cubic's coefficients, for `r` scaled by `N`.
    pub const C: [f64; 3] = [
        f64::from_bits(0x3EBC_6AF8_4B91_2394),
        f64::from_bits(0x3F2E_BFCE_50FA_C4F3),
        f64::from_bits(0x3F96_2E42_FF0C_52D6),
    ];
    /// `-0x1.9fe368p6`: below it `e^x` rounds to 0 in f32 (glibc returns 0 there, with underflow).
    pub const UNDERFLOW: f32 = -103.972_08;

    /// `2^(i/N)`'s bits less `i << 47`, so that adding `k << 47` gives `2^(k/N)`'s (from libm's
    /// `exp2`; the exhaustive test would see an entry unlike glibc's table).
    pub fn table() -> &'static [u64; 32] {
        static TABLE: OnceLock<[u64; 32]> = OnceLock::new();
        TABLE.get_or_init(|| {
            std::array::from_fn(|i| ((i as f64) / 32.0).exp2().to_bits().wrapping_sub((i as u64) << 47))
        })
    }

    /// One value, operation for operation as the vector kernels: for `x` from [`UNDERFLOW`] to
    /// 0; 0 below, NaN for NaN.
    pub fn lane(x: f32) -> f32 {
        if x.is_nan() {
            return x + x;
        }
        if x < UNDERFLOW {
            return 0.0;
        }
        let xd = x as f64;
        let z = INV_LN2_N * xd;
        let kd = z + SHIFT;
        let ki = kd.to_bits();
        // Fused, as glibc's x86-64 build (its FMA variant) computes it: unfused, 2 of the
        // 2.24e9 inputs in [-104, 88] came out one ulp apart from the C library's.
        let r = INV_LN2_N.mul_add(xd, -(kd - SHIFT));
        let s = f64::from_bits(table()[(ki % 32) as usize].wrapping_add(ki << 47));
        let y = C[0].mul_add(r, C[1]).mul_add(r * r, C[2].mul_add(r, 1.0));
        (y * s) as f32
    }
}

/// The instruction set row products use in this process.
pub fn active_isa() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = Isa::ALL.into_iter().rev().find(|isa| isa.available()).unwrap_or(Isa::Scalar);
        let Ok(wanted) = std::env::var("CHORD_LLM_SIMD") else { return best };
        match Isa::ALL.into_iter().find(|isa| isa.name() == wanted) {
            Some(isa) if isa.available() => isa,
            _ => {
                eprintln!("chord-llm: CHORD_LLM_SIMD={wanted} is not available here; using {}", best.name());
                best
            }
        }
    })
}
