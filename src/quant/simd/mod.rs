//! Run-time choice of the instruction set for row dot products.
//!
//! The scalar kernels (the rest of `quant`) are the reference; the SIMD kernels here are tested
//! against them on random blocks (`quant::tests`). The best set the CPU supports is picked once,
//! on first use; `CHORD_LLM_SIMD=scalar|avx2|avx512vnni|neon|neondot` overrides it (for measurements and
//! tests; a set the CPU lacks falls back to the detected one with a warning on stderr).

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod arm;

#[cfg(test)]
mod tests;

use super::{DotBatchFn, DotRowsFn};
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
    pub(super) fn kernels(self, ty: GgmlType) -> Option<(DotRowsFn, DotBatchFn)> {
        (self.set()?.row_kernels)(ty)
    }

    /// The set's kernel for weight type `ty` in the interleaved layout
    /// (`quant::interleave_rows8`), or None where it has none.
    pub(super) fn interleaved_kernel(self, ty: GgmlType) -> Option<DotBatchFn> {
        if !self.available() {
            return None;
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::avx2::interleaved_kernel(ty),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::avx512vnni::interleaved_kernel(ty),
            // The NEON sets have none (yet): their one-row kernels read the file's layout.
            _ => {
                let _ = ty;
                None
            }
        }
    }

    /// The set's f16 vector kernels (dot product with an f32 vector, `out += p * v`), or None
    /// (scalar code then).
    pub(super) fn f16_kernels(self) -> Option<(F16DotFn, F16AxpyFn)> {
        self.set().map(|s| (s.dot_f16_f32, s.axpy_f16))
    }
}

/// `out[t] = row t . b` for f16 vectors at byte `at` of rows of `row_bytes` (see `quant::dot_f16_f32_rows`).
pub(super) type F16DotFn = fn(&[u8], usize, usize, &[f32], &mut [f32]);
/// `out += p[t] * row t` for f16 vectors at byte `at` of rows of `row_bytes` (see `quant::axpy_f16_rows`).
pub(super) type F16AxpyFn = fn(&mut [f32], &[f32], &[u8], usize, usize);

/// What one SIMD instruction set provides.
pub(crate) struct KernelSet {
    /// Row kernels (one row at a time, batched) for a weight type, if the set has them.
    pub row_kernels: fn(GgmlType) -> Option<(DotRowsFn, DotBatchFn)>,
    pub dot_f16_f32: F16DotFn,
    pub axpy_f16: F16AxpyFn,
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
