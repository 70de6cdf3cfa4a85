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
  scale         f64 per row: sum of the |terms| of `dot` (for error bounds): |d*sc*q| + |dmin*m|
                times |activation| per value, + |m*s| per block for Q4_1 and Q5_1
  dot_generic   f32 per row: ggml's ggml_vec_dot_*_generic emulated in f32 (quantized types only;
                for the committed data this emulation was checked bit for bit against those C
                functions of the llama.cpp release we compare with, built -ffp-contract=off)
Cases that only check dequantization omit the activation keys.

Weight bytes: gguf quantizes F32..Q8_0, Q5_0 and Q5_1 itself. It cannot quantize the K-quants
(Q2_K..Q6_K) or IQ4_NL / IQ4_XS, so for those the weights are random *valid* blocks: random
payload bytes with the f16 scale fields set to small random values (|d| in [1e-3, 1e-1], either
sign), plus one all-0x00 and one all-0xFF payload block; gguf's dequantization of them is the
reference. Activations for the K-quants and IQ4_XS are Q8_K, which gguf cannot produce either:
`q8_k_ref` below is written against ggml's `quantize_row_q8_K_ref`.

`dot` is evaluated from the decoded block fields (scales, quants, mins) in f64; the decoding here is
checked against gguf's dequantization (evaluated in f32 it must reproduce gguf bit for bit), so the
formula does not rest on our own reading of the formats alone.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, np_roundf, quantize

SEED = 0x5EED_0A17
ROWS, COLS = 4, 256
QK = 32
QK_K = 256
# Shape of the random-block cases: three super-blocks per row, so the dot products accumulate
# across blocks (and over ggml's eight f32 lanes for Q3_K..Q6_K).
ROWS_R, COLS_R = 4, 3 * QK_K

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "quant", "testdata", "gguf_refs.txt")

DOT_TYPE = {
    T.F32: T.F32,
    T.F16: T.F16,
    T.BF16: T.BF16,
    T.Q4_0: T.Q8_0,
    T.Q4_1: T.Q8_1,
    T.Q8_0: T.Q8_0,
    T.Q5_0: T.Q8_0,
    T.Q5_1: T.Q8_1,
    T.Q2_K: T.Q8_K,
    T.Q3_K: T.Q8_K,
    T.Q4_K: T.Q8_K,
    T.Q5_K: T.Q8_K,
    T.Q6_K: T.Q8_K,
    T.IQ4_NL: T.Q8_0,
    T.IQ4_XS: T.Q8_K,
}

# Block bytes and the offsets of the f16 fields of the types we make random blocks of.
RANDOM_BLOCKS = {
    T.Q2_K: (84, (80, 82)),
    T.Q3_K: (110, (108,)),
    T.Q4_K: (144, (0, 2)),
    T.Q5_K: (176, (0, 2)),
    T.Q6_K: (210, (208,)),
    T.IQ4_NL: (18, (0,)),
    T.IQ4_XS: (136, (0,)),
}

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int64)


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


def q8_k_ref(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_K_ref (gguf has no Q8_K quantizer): per 256 values, `max` is the
    first value of largest magnitude, with its sign; iscale = -127/max, q = nearest_int(iscale*x)
    (round half to even) clamped to <= 127, d = 1/iscale as f32, bsums = sums of 16 quants. An
    all-zero block is d = 0 and zero quants (ggml leaves its bsums unwritten; we write zeros)."""
    out = []
    for blk in x.astype(np.float32).reshape(-1, QK_K):
        ax = np.abs(blk)
        amax = ax.max()
        if amax == 0:
            d = np.float32(0)
            qs = np.zeros(QK_K, dtype=np.int8)
        else:
            mx = blk[int(np.argmax(ax))]  # argmax: first occurrence, as ggml's strict `ax > amax`
            iscale = np.float32(-127) / mx
            qs = np.minimum(np.rint(iscale * blk), 127).astype(np.int8)  # products rounded in f32
            d = np.float32(1) / iscale
        bsums = qs.astype(np.int16).reshape(16, 16).sum(axis=1).astype("<i2")
        out.append(np.concatenate([np.array([d], dtype="<f4").view(np.uint8), qs.view(np.uint8), bsums.view(np.uint8)]))
    return np.concatenate(out)


def q8_k_dequant(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 292)
    d = b[:, 0:4].copy().view("<f4")
    return (d * b[:, 4:260].copy().view(np.int8).astype(np.float32)).reshape(-1)


def to_bytes(qtype: T, data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(quantize(data, qtype)).view(np.uint8)


def act_convert(qtype: T, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if qtype == T.Q8_1:
        raw = q8_1_ref(x)
        return raw, q8_1_dequant(raw)
    if qtype == T.Q8_K:
        raw = q8_k_ref(x)
        return raw, q8_k_dequant(raw)
    raw = to_bytes(qtype, x).reshape(-1)
    return raw, dequantize(raw, qtype).reshape(-1).astype(np.float32)


# ---------------------------------------------------------------- decoding block fields
#
# `decode` takes raw blocks (n_blocks, block_bytes) and returns, per value, the fields ggml's
# formulas are made of: super-block scale `d` and min scale `dmin` (f64, from f16), and the
# integers `sc` (group scale), `q` (quant or level) and `m` (group min), such that ggml's
# dequantized value is f32(f32(d*sc) * q) - f32(dmin*m) (d*sc and dmin*m are exact in f64).


class Fields:
    def __init__(self, d, sc, q, dmin, m):
        n = q.shape
        self.d = np.broadcast_to(d, n).astype(np.float64)
        self.sc = np.broadcast_to(sc, n).astype(np.int64)
        self.q = q.astype(np.int64)
        self.dmin = np.broadcast_to(dmin, n).astype(np.float64)
        self.m = np.broadcast_to(m, n).astype(np.int64)

    def reshape(self, *shape):
        return Fields(*(a.reshape(*shape) for a in (self.d, self.sc, self.q, self.dmin, self.m)))


def f16s(b: np.ndarray, at: int) -> np.ndarray:
    """The f16 at byte `at` of each block, as an (n_blocks, 1) f64 column."""
    return b[:, at : at + 2].copy().view("<f2").astype(np.float64)


def per_value(a: np.ndarray, group: int) -> np.ndarray:
    """(n_blocks, n_groups) -> (n_blocks, n_groups * group), each entry repeated `group` times."""
    return np.repeat(a, group, axis=1)


def nibbles_lo_hi(qs: np.ndarray) -> np.ndarray:
    """(n, 16*k) bytes -> (n, 32*k) nibbles: per 16 bytes, the low nibbles then the high ones."""
    n = qs.shape[0]
    g = qs.reshape(n, -1, 1, 16) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    return (g & 0x0F).reshape(n, -1).astype(np.int64)


def two_bit_layout(qs: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K low bits: value e is bits 2*(e%128//32) of byte e//128*32 + e%32."""
    e = np.arange(QK_K)
    return (qs[:, e // 128 * 32 + e % 32].astype(np.int64) >> (2 * (e % 128 // 32))) & 3


def k4_scales_mins(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4 for j in 0..8, written from the C."""
    sc = sc.astype(np.int64)
    s = np.zeros((sc.shape[0], 8), dtype=np.int64)
    m = np.zeros((sc.shape[0], 8), dtype=np.int64)
    for j in range(8):
        if j < 4:
            s[:, j] = sc[:, j] & 63
            m[:, j] = sc[:, j + 4] & 63
        else:
            s[:, j] = (sc[:, j + 4] & 0xF) | ((sc[:, j - 4] >> 6) << 4)
            m[:, j] = (sc[:, j + 4] >> 4) | ((sc[:, j] >> 6) << 4)
    return s, m


def decode(qtype: T, b: np.ndarray) -> Fields:
    e = np.arange(QK_K)
    if qtype == T.Q8_0:
        return Fields(f16s(b, 0), 1, b[:, 2:].copy().view(np.int8), 0.0, 0)
    if qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        off = 4 if qtype in (T.Q4_1, T.Q5_1) else 2
        if qtype in (T.Q5_0, T.Q5_1):
            qh = b[:, off : off + 4].copy().view("<u4").astype(np.int64)
            q = nibbles_lo_hi(b[:, off + 4 :]) | (((qh >> np.arange(32)) & 1) << 4)
        else:
            q = nibbles_lo_hi(b[:, off:])
        if off == 4:  # x = q*d + m: dmin = -m, group min 1
            return Fields(f16s(b, 0), 1, q, -f16s(b, 2), 1)
        return Fields(f16s(b, 0), 1, q - (8 if qtype == T.Q4_0 else 16), 0.0, 0)
    if qtype == T.Q2_K:
        sc = b[:, 0:16].astype(np.int64)
        return Fields(f16s(b, 80), per_value(sc & 0xF, 16), two_bit_layout(b[:, 16:80]), f16s(b, 82), per_value(sc >> 4, 16))
    if qtype == T.Q3_K:
        hm, sc = b[:, 0:32], b[:, 96:108].astype(np.int64)
        high = (hm[:, e % 32].astype(np.int64) >> (e // 32)) & 1
        j = np.arange(16)
        low = np.where(j < 8, sc[:, j % 8] & 0xF, sc[:, j % 8] >> 4)
        scales = (low | (((sc[:, 8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32
        return Fields(f16s(b, 108), per_value(scales, 16), two_bit_layout(b[:, 32:96]) - 4 * (1 - high), 0.0, 0)
    if qtype in (T.Q4_K, T.Q5_K):
        s, m = k4_scales_mins(b[:, 4:16])
        qs = b[:, 48:] if qtype == T.Q5_K else b[:, 16:]
        q = (qs[:, e // 64 * 32 + e % 32].astype(np.int64) >> (4 * (e % 64 // 32))) & 0xF
        if qtype == T.Q5_K:
            q = q | (((b[:, 16:48][:, e % 32].astype(np.int64) >> (e // 32)) & 1) << 4)
        return Fields(f16s(b, 0), per_value(s, 32), q, f16s(b, 2), per_value(m, 32))
    if qtype == T.Q6_K:
        ql, qh, sc = b[:, 0:128], b[:, 128:192], b[:, 192:208].copy().view(np.int8).astype(np.int64)
        half, k, l = e // 128, e % 128 // 32, e % 32
        low = (ql[:, half * 64 + 32 * (k % 2) + l].astype(np.int64) >> (4 * (k // 2))) & 0xF
        high = (qh[:, half * 32 + l].astype(np.int64) >> (2 * k)) & 3
        return Fields(f16s(b, 208), per_value(sc, 16), (low | (high << 4)) - 32, 0.0, 0)
    if qtype == T.IQ4_NL:
        return Fields(f16s(b, 0), 1, KVALUES_IQ4NL[nibbles_lo_hi(b[:, 2:])], 0.0, 0)
    if qtype == T.IQ4_XS:
        h = b[:, 2:4].copy().view("<u2").astype(np.int64)
        ib = np.arange(8)
        ls = ((b[:, 4 + ib // 2].astype(np.int64) >> (4 * (ib % 2))) & 0xF) | (((h >> (2 * ib)) & 3) << 4)
        return Fields(f16s(b, 0), per_value(ls - 32, 32), KVALUES_IQ4NL[nibbles_lo_hi(b[:, 8:])], 0.0, 0)
    raise ValueError(qtype)


def check_decode(qtype: T, raw_rows: np.ndarray, deq: np.ndarray) -> None:
    """Our decoding, evaluated in f32 the way ggml's dequantize_row_* does, must be gguf's."""
    f = decode(qtype, raw_rows.reshape(-1, GGML_QUANT_SIZES[qtype][1]))
    with np.errstate(over="ignore", invalid="ignore"):
        mine = ((f.d * f.sc).astype(np.float32) * f.q.astype(np.float32)) - (f.dmin * f.m).astype(np.float32)
    if not np.array_equal(mine.reshape(-1).view(np.uint32), deq.reshape(-1).view(np.uint32)):
        raise SystemExit(f"{qtype.name}: decoded fields do not reproduce gguf's dequantization")


class Acts:
    """Activation blocks: per value scale `d` (f64) and quant `q`; for Q8_1 the per-block f16 `s`,
    for Q8_K the per-16 `bsums`."""

    def __init__(self, dot_type: T, raw: np.ndarray):
        if dot_type == T.Q8_K:
            ab = raw.reshape(-1, 292)
            self.d_block = ab[:, 0:4].copy().view("<f4")[:, 0]
            self.q = ab[:, 4:260].copy().view(np.int8).astype(np.int64)
            self.bsums = ab[:, 260:].copy().view("<i2").astype(np.int64)
            group = QK_K
        else:
            width = 34 if dot_type == T.Q8_0 else 36
            ab = raw.reshape(-1, width)
            self.d_block = ab[:, 0:2].copy().view("<f2")[:, 0].astype(np.float32)
            self.s_block = ab[:, 2:4].copy().view("<f2")[:, 0].astype(np.float32) if width == 36 else None
            self.q = ab[:, width - 32 :].copy().view(np.int8).astype(np.int64)
            group = QK
        self.d = np.repeat(self.d_block.astype(np.float64), group)
        self.q_flat = self.q.reshape(-1)


def ggml_generic_dot(qtype: T, f: Fields, acts: Acts) -> np.ndarray:
    """Per row, the f32 result of ggml's ggml_vec_dot_*_generic, emulated operation by operation
    in numpy float32 (one rounding per C operation, no FMA), written from the C sources."""
    F = np.float32
    rows = f.q.shape[0]
    out = np.zeros(rows, dtype=np.float32)
    for r in range(rows):
        if qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL):
            sumf = F(0)
            for ib in range(f.q.shape[1] // QK):
                sl = slice(ib * QK, (ib + 1) * QK)
                sumi = int((f.q[r, sl] * acts.q[ib]).sum())
                dx, dy = F(f.d[r, ib * QK]), acts.d_block[ib]
                if qtype == T.Q4_0:
                    sumf = F(sumf + F(F(F(sumi) * dx) * dy))
                elif qtype in (T.Q4_1, T.Q5_1):
                    mx = F(-f.dmin[r, ib * QK])
                    sumf = F(sumf + F(F(F(dx * dy) * F(sumi)) + F(mx * acts.s_block[ib])))
                elif qtype == T.Q5_0:
                    sumf = F(sumf + F(F(dx * dy) * F(sumi)))
                elif qtype == T.Q8_0:
                    sumf = F(sumf + F(F(sumi) * F(dx * dy)))
                else:  # IQ4_NL: d = y.d * x.d
                    sumf = F(sumf + F(F(dy * dx) * F(sumi)))
            out[r] = sumf
            continue
        sumf = F(0)
        sums = np.zeros(8, dtype=np.float32)
        for ib in range(f.q.shape[1] // QK_K):
            sl = slice(ib * QK_K, (ib + 1) * QK_K)
            q, sc, m, q8 = f.q[r, sl], f.sc[r, sl], f.m[r, sl], acts.q[ib]
            dx, dmx, dy = F(f.d[r, ib * QK_K]), F(f.dmin[r, ib * QK_K]), acts.d_block[ib]
            if qtype == T.Q2_K:
                summs = int((acts.bsums[ib] * m[::16]).sum())
                isum = int((sc * q * q8).sum())
                dall, dmin = F(dy * dx), F(dy * dmx)
                sumf = F(sumf + F(F(dall * F(isum)) - F(dmin * F(summs))))
            elif qtype == T.IQ4_XS:
                d4d8 = F(dx * dy)
                for g in range(8):
                    gs = slice(g * 32, (g + 1) * 32)
                    dl = F(d4d8 * F(int(sc[g * 32])))
                    sumf = F(sumf + F(dl * F(int((q[gs] * q8[gs]).sum()))))
            else:  # Q3_K..Q6_K: eight lanes, element e in lane e % 8
                aux32 = (sc * q * q8).reshape(-1, 8).sum(axis=0)
                d = F(dx * dy)
                for l in range(8):
                    sums[l] = F(sums[l] + F(d * F(int(aux32[l]))))
                if qtype in (T.Q4_K, T.Q5_K):
                    sumi = int((acts.bsums[ib] * m[::16]).sum())
                    sumf = F(sumf - F(F(dmx * dy) * F(sumi)))
        for l in range(8):
            sumf = F(sumf + sums[l])
        out[r] = sumf
    return out


def block_dots(qtype: T, raw_w: np.ndarray, deq: np.ndarray, raw_a: np.ndarray, deq_a: np.ndarray):
    """Per row: (ggml-formula dot in f64, plain dot in f64, error scale in f64, ggml generic f32
    result or None)."""
    rows, cols = deq.shape
    prods = deq.astype(np.float64) * deq_a.astype(np.float64)[None, :]
    plain = prods.sum(axis=1)
    if qtype in (T.F32, T.F16, T.BF16):
        return plain, plain, np.abs(prods).sum(axis=1), None
    dot_type = DOT_TYPE[qtype]
    f = decode(qtype, raw_w.reshape(-1, GGML_QUANT_SIZES[qtype][1])).reshape(rows, cols)
    acts = Acts(dot_type, raw_a)
    a = (acts.d * acts.q_flat)[None, :]
    wq = f.d * f.sc * f.q  # (f64 rounding only) what the integer formulas multiply out
    ml = f.dmin * f.m
    scale = ((np.abs(wq) + np.abs(ml)) * np.abs(a)).sum(axis=1)
    if dot_type == T.Q8_1:
        # Q4_1/Q5_1 . Q8_1: sum_b d_w*d_a*sum(q_w*q_a) + m_w*s_a, with s_a the f16 "d*sum(q_a)"
        # the activation block carries, so it is not the plain dot of the dequantized values.
        mw = -f.dmin[:, ::QK]
        sa = acts.s_block.astype(np.float64)[None, :]
        dot = (wq * a).sum(axis=1) + (mw * sa).sum(axis=1)
        scale = scale + np.abs(mw * sa).sum(axis=1)
    else:
        # The Q8_K formulas take the min terms through bsums (exact integer sums of the quants),
        # so in exact arithmetic they equal the dot of the unrounded weights with the activations.
        dot = ((wq - ml) * a).sum(axis=1)
    return dot, plain, scale, ggml_generic_dot(qtype, f, acts)


def emit_raw_case(out: list[str], name: str, qtype: T, raw: np.ndarray, x: np.ndarray | None) -> None:
    rows = raw.shape[0]
    deq = dequantize(raw, qtype).reshape(rows, -1).astype(np.float32)
    cols = deq.shape[1]
    if qtype not in (T.F32, T.F16, T.BF16):
        check_decode(qtype, raw, deq)
    out += [f"case {name}", f"type {qtype.name}", f"rows {rows}", f"cols {cols}"]
    out.append("weights " + raw.tobytes().hex())
    out.append("dequant " + hexf32(deq))
    if x is not None:
        dot_type = DOT_TYPE[qtype]
        raw_a, deq_a = act_convert(dot_type, x)
        dot, plain, scale, generic = block_dots(qtype, raw.reshape(-1), deq, raw_a, deq_a)
        out.append(f"dot_type {dot_type.name}")
        out.append("acts " + hexf32(x))
        out.append("acts_q " + raw_a.tobytes().hex())
        out.append("acts_dequant " + hexf32(deq_a))
        out.append("dot " + hexf64(dot))
        out.append("dot_plain " + hexf64(plain))
        out.append("scale " + hexf64(scale))
        if generic is not None:
            out.append("dot_generic " + hexf32(generic))
    out += ["end", ""]


def emit_case(out: list[str], name: str, qtype: T, w: np.ndarray, x: np.ndarray | None) -> None:
    rows = w.shape[0]
    emit_raw_case(out, name, qtype, to_bytes(qtype, w).reshape(rows, -1), x)


def random_blocks(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """ROWS_R rows of COLS_R values of random valid blocks (see the module docstring)."""
    block_len = GGML_QUANT_SIZES[qtype][0]
    nbytes, f16_at = RANDOM_BLOCKS[qtype]
    nb = ROWS_R * COLS_R // block_len
    b = rng.integers(0, 256, size=(nb, nbytes), dtype=np.uint8)
    b[0, :] = 0x00  # all-zero payload (its f16 fields are set below)
    b[COLS_R // block_len + 1, :] = 0xFF  # all-ones payload: largest scales, mins and quants
    for at in f16_at:
        mag = 10.0 ** rng.uniform(-3.0, -1.0, size=nb)
        sign = rng.choice([-1.0, 1.0], size=nb)
        b[:, at : at + 2] = (sign * mag).astype("<f2").view(np.uint8).reshape(nb, 2)
    return b.reshape(ROWS_R, -1)


def make_acts_k(rng: np.random.Generator) -> np.ndarray:
    x = (rng.standard_normal(COLS_R) * 2.0).astype(np.float32)
    # Super-block 1: the value of largest magnitude is negative and comes first (its positive
    # twin must not win), -127 makes iscale = 1 exactly, so x*iscale hits exact .5 ties, which
    # Q8_K rounds half to even (Q8_0 away from zero).
    blk = np.zeros(QK_K, dtype=np.float32)
    blk[:2] = [-127.0, 127.0]
    ties = np.array([s * (k + 0.5) for k in range(40) for s in (1.0, -1.0)], dtype=np.float32)
    blk[2 : 2 + len(ties)] = ties
    blk[2 + len(ties) :] = rng.uniform(-126.0, 126.0, size=QK_K - 2 - len(ties)).astype(np.float32)
    x[QK_K : 2 * QK_K] = blk
    x[2 * QK_K + 64 : 2 * QK_K + 96] = 0.0  # a zero Q8_0 block inside a non-zero Q8_K block
    return x


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
    # Added after the original cases so that their random numbers stay the same.
    for qtype in (T.Q5_0, T.Q5_1):
        emit_case(out, qtype.name, qtype, w, x)
    xk = make_acts_k(rng)
    for qtype in RANDOM_BLOCKS:
        emit_raw_case(out, qtype.name, qtype, random_blocks(rng, qtype), xk)
    text = "\n".join(out)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {os.path.normpath(OUT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
