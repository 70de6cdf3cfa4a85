#!/usr/bin/env python3
"""Write reference data for the `crate::quant` tests to src/quant/testdata/gguf_refs.txt.

The numbers come from the PyPI `gguf` package (llama.cpp's own Python quantizers, which mirror
ggml's reference C code), so the Rust kernels are checked against an implementation that is not
ours. Dev tool only: the generated file is committed and the tests need no Python.

    pip install gguf numpy
    python3 scripts/gen-quant-refs.py

Output format: line based so the Rust side needs no JSON crate. Blank lines and lines starting
with '#' are ignored; `case NAME` opens a record, `end` closes it, and every other line is
`key value`. Numeric arrays are hex of their little-endian bytes (f32 or f64), which keeps every
value exact.

Keys of a case:
  type          weight tensor type (GGUF name)
  rows, cols    weight matrix shape; cols is the dot-product length
  weights       raw GGUF bytes of the rows
  dequant       f32: gguf.quants.dequantize of `weights`
  dot_type      ggml's vec_dot_type for `type`
  acts          f32 activations (one vector of `cols` values)
  acts_q        the activations converted to dot_type
  acts_dequant  f32: acts_q converted back
  dot           f64 per row: what ggml's block formula gives, evaluated exactly
  dot_plain     f64 per row: plain dot of dequant and acts_dequant
  scale         f64 per row: sum of |products| (+ |m*s| terms for Q4_1), for error bounds
Cases that only check dequantization omit the activation keys.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, np_roundf, quantize

SEED = 0x5EED_0A17
ROWS, COLS = 4, 256
QK = 32

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "quant", "testdata", "gguf_refs.txt")

DOT_TYPE = {
    T.F32: T.F32,
    T.F16: T.F16,
    T.BF16: T.BF16,
    T.Q4_0: T.Q8_0,
    T.Q4_1: T.Q8_1,
    T.Q8_0: T.Q8_0,
}


def hexf32(a: np.ndarray) -> str:
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def hexf64(a: np.ndarray) -> str:
    return np.ascontiguousarray(a, dtype="<f8").tobytes().hex()


def make_weights(rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    # One scale per 32-block over five decades, so block scales are not all alike.
    scales = (10.0 ** rng.uniform(-3.0, 2.0, size=(ROWS, COLS // QK, 1))).astype(np.float32)
    w = (w.reshape(ROWS, COLS // QK, QK) * scales).reshape(ROWS, COLS).astype(np.float32)
    w[0, 0:32] = 0.0  # all-zero block: d == 0 must not make NaN
    w[1, 32:64] = -np.abs(w[1, 32:64])  # all negative
    w[2, 64:96] = np.abs(w[2, 64:96])  # all positive
    w[3, 96:128] = 3.0  # constant block: Q4_1 gets d == 0 with m != 0
    w[3, 128:160] = rng.uniform(-60000.0, 60000.0, size=32).astype(np.float32)  # large, near f16 max
    return w


def make_acts(rng: np.random.Generator) -> np.ndarray:
    x = (rng.standard_normal(COLS) * 2.0).astype(np.float32)
    # Block 1: amax 127 makes d == 1 exactly, so x*id hits exact .5 ties (roundf rounds away
    # from zero; round-half-even SIMD paths would differ here).
    ties = np.array([127.0, -127.0] + [s * (k + 0.5) for k in range(15) for s in (1.0, -1.0)], dtype=np.float32)
    x[32:64] = ties
    x[64:96] = 0.0  # all-zero activation block
    # bf16 rounding ties (exactly halfway between two bf16 values) and an f16-subnormal value.
    x[96:104] = np.array([1.00390625, 1.01171875, -1.00390625, 3.0234375, 1e-6, -1e-7, 65504.0, 0.1], dtype=np.float32)
    return x


def q8_1_ref(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_1_ref; gguf has no Q8_1 quantizer (its size table still lists the
    old 40-byte f32 layout), so this is written here against the C reference."""
    blocks = x.astype(np.float32).reshape(-1, QK)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    qs = np_roundf((blocks * idv).astype(np.float32)).astype(np.int8)
    sums = qs.astype(np.int32).sum(axis=1, keepdims=True)
    s = (sums.astype(np.float32) * d).astype(np.float32)
    out = np.concatenate(
        [d.astype(np.float16).view(np.uint8), s.astype(np.float16).view(np.uint8), qs.view(np.uint8)], axis=1
    )
    return out.reshape(-1)


def q8_1_dequant(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 36)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    return (d * b[:, 4:].copy().view(np.int8).astype(np.float32)).reshape(-1)


def to_bytes(qtype: T, data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(quantize(data, qtype)).view(np.uint8)


def act_convert(qtype: T, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if qtype == T.Q8_1:
        raw = q8_1_ref(x)
        return raw, q8_1_dequant(raw)
    raw = to_bytes(qtype, x).reshape(-1)
    return raw, dequantize(raw, qtype).reshape(-1).astype(np.float32)


def block_dots(qtype: T, raw_w: np.ndarray, deq: np.ndarray, raw_a: np.ndarray, deq_a: np.ndarray):
    """Per row: (ggml-formula dot, plain dot, error scale), all in f64."""
    prods = deq.astype(np.float64) * deq_a.astype(np.float64)[None, :]
    plain = prods.sum(axis=1)
    scale = np.abs(prods).sum(axis=1)
    if qtype != T.Q4_1:
        # For these types ggml's dot is exactly sum(dequant(w) * dequant(a)) up to rounding.
        return plain, plain, scale
    # Q4_1 . Q8_1: sum_b d_w*d_a*sum(q_w*q_a) + m_w*s_a, with s_a the f16 "d*sum(q_a)" the
    # activation block carries, so it is not the plain dot of the dequantized values.
    wb = raw_w.reshape(ROWS, COLS // QK, 20)
    ab = raw_a.reshape(COLS // QK, 36)
    dw = wb[:, :, 0:2].copy().view(np.float16).astype(np.float64)[..., 0]
    mw = wb[:, :, 2:4].copy().view(np.float16).astype(np.float64)[..., 0]
    nib = wb[:, :, 4:]
    qw = np.concatenate([nib & 0x0F, nib >> 4], axis=2).astype(np.int64)
    da = ab[:, 0:2].copy().view(np.float16).astype(np.float64)[:, 0]
    sa = ab[:, 2:4].copy().view(np.float16).astype(np.float64)[:, 0]
    qa = ab[:, 4:].copy().view(np.int8).astype(np.int64)
    sumi = (qw * qa[None, :, :]).sum(axis=2)
    dot = (dw * da[None, :] * sumi + mw * sa[None, :]).sum(axis=1)
    scale = scale + np.abs(mw * sa[None, :]).sum(axis=1)
    return dot, plain, scale


def emit_case(out: list[str], name: str, qtype: T, w: np.ndarray, x: np.ndarray | None) -> None:
    rows, cols = w.shape
    raw = to_bytes(qtype, w).reshape(rows, -1)
    deq = dequantize(raw, qtype).reshape(rows, cols).astype(np.float32)
    out += [f"case {name}", f"type {qtype.name}", f"rows {rows}", f"cols {cols}"]
    out.append("weights " + raw.tobytes().hex())
    out.append("dequant " + hexf32(deq))
    if x is not None:
        dot_type = DOT_TYPE[qtype]
        raw_a, deq_a = act_convert(dot_type, x)
        dot, plain, scale = block_dots(qtype, raw.reshape(-1), deq, raw_a, deq_a)
        out.append(f"dot_type {dot_type.name}")
        out.append("acts " + hexf32(x))
        out.append("acts_q " + raw_a.tobytes().hex())
        out.append("acts_dequant " + hexf32(deq_a))
        out.append("dot " + hexf64(dot))
        out.append("dot_plain " + hexf64(plain))
        out.append("scale " + hexf64(scale))
    out += ["end", ""]


def special_values() -> np.ndarray:
    """Values whose float conversions have edge cases: signed zero, f16/bf16 subnormals, limits,
    infinities, a quiet NaN, and exact rounding ties."""
    v = [
        0.0, -0.0, 1.0, -2.0, 65504.0, -65504.0, 65520.0, 6.103515625e-05,
        5.960464477539063e-08, 1e-6, -3e-7, 2.98e-08, float("inf"), float("-inf"), float("nan"), 1e-40,
        1.00390625, 1.01171875, -1.00390625, 1.0009765625, 1.0029296875, 3.4e38, -1e-45, 0.1,
        0.2, 0.3, -0.7, 123.456, 1e5, -1e-5, 2049.0, 2051.0,
    ]
    return np.array(v, dtype=np.float32).reshape(1, 32)


def main() -> int:
    rng = np.random.default_rng(SEED)
    w = make_weights(rng)
    x = make_acts(rng)
    out = [
        "# Generated by scripts/gen-quant-refs.py with the PyPI gguf package. Do not edit by hand.",
        f"# seed {SEED:#x}, rows {ROWS}, cols {COLS}",
        "",
    ]
    for qtype in (T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0):
        emit_case(out, qtype.name, qtype, w, x)
    with np.errstate(over="ignore", invalid="ignore"):
        for qtype in (T.F32, T.F16, T.BF16):
            emit_case(out, f"{qtype.name}_special", qtype, special_values(), None)
    text = "\n".join(out)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {os.path.normpath(OUT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
