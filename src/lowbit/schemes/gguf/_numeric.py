"""float32 arithmetic that reproduces ggml-quants.c bit for bit.

ggml's reference quantizers are scalar C in float32 (SSE, FLT_EVAL_METHOD 0,
no FMA: libggml-base is compiled without ``-march``). Everything here keeps
values in float32 and performs the same rounding steps in the same order.
Constants are spelled ``F(...)`` so that numpy never promotes to float64,
whatever its promotion rules (numpy 1.x value-based casting or NEP 50).
"""

from __future__ import annotations

import numpy as np

F = np.float32
"""Shorthand for the float32 scalar constructor used for every constant."""

GROUP_MAX_EPS = F(1e-15)
"""ggml's GROUP_MAX_EPS: a group whose max |x| is below it counts as all zero."""

_MAGIC = F(12582912.0)  # 1.5 * 2**23


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: add 1.5·2²³ in float32, read the low mantissa.

    Round-half-to-even for |v| < 2²², and the same garbage as C beyond that
    (C only asserts the range in debug builds), so it is emulated through the
    bit pattern rather than with ``np.rint``. Returns int32.
    """
    bits = (np.asarray(v, dtype=np.float32) + _MAGIC).view(np.int32)
    return (bits & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def seq_sum(terms: np.ndarray, axis: int = -1) -> np.ndarray:
    """float32 sum in index order, starting from +0 like ``float s = 0; s += t``.

    ``np.sum`` is pairwise and would round differently. ``add.accumulate`` is
    strictly sequential; the trailing ``+ 0`` turns an all-(-0) sum into +0 as
    C's zero-initialised accumulator does.
    """
    acc = np.add.accumulate(np.asarray(terms, dtype=np.float32), axis=axis, dtype=np.float32)
    return np.take(acc, -1, axis=axis) + F(0.0)


def seq_sum_from_first(terms: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sequential float32 sum seeded with the first term (``s = t[0]; s += t[i]``)."""
    acc = np.add.accumulate(np.asarray(terms, dtype=np.float32), axis=axis, dtype=np.float32)
    return np.take(acc, -1, axis=axis)


def seq_sum_rows(t: np.ndarray) -> np.ndarray:
    """:func:`seq_sum` over axis 0 of a group-major ``[n, G]`` array.

    n in-place vector adds over contiguous rows: about 15x faster than
    ``add.accumulate`` along a short last axis, which is why the fitting
    routines keep their data transposed.
    """
    s = t[0] + F(0.0)
    for i in range(1, t.shape[0]):
        s += t[i]
    return s


def seq_sum_rows_from_first(t: np.ndarray) -> np.ndarray:
    """:func:`seq_sum_from_first` over axis 0 of a group-major ``[n, G]`` array."""
    s = t[0].copy()
    for i in range(1, t.shape[0]):
        s += t[i]
    return s


def first_argmax_abs(x: np.ndarray) -> np.ndarray:
    """Signed element of largest magnitude along the last axis (first on ties).

    Matches ``if (fabsf(v) > amax) { amax = fabsf(v); max = v; }`` from
    amax = max = 0: an all-zero (or all ±0) group yields +0.0.
    C's ``>`` never selects a NaN, so NaNs are ranked as 0 here.
    """
    a = np.abs(x)
    a = np.where(a > 0, a, np.float32(0.0))
    idx = np.argmax(a, axis=-1)[..., None]
    m = np.take_along_axis(x, idx, axis=-1)[..., 0]
    return np.where(np.take_along_axis(a, idx, axis=-1)[..., 0] > 0, m, np.float32(0.0)).astype(np.float32)


def max_from_zero(x: np.ndarray) -> np.ndarray:
    """``float m = 0; if (v > m) m = v;`` along the last axis: max(0, x), NaN-blind, +0 if none."""
    return np.max(np.where(x > 0, x, np.float32(0.0)), axis=-1).astype(np.float32)


def c_max_macro(x: np.ndarray) -> np.ndarray:
    """``m = 0; m = MAX(m, v)`` with ggml's ``MAX(a, b) = a > b ? a : b``, along the last axis.

    Differs from :func:`max_from_zero` only for NaN inputs (MAX can pick up a
    NaN and drop it again), which a sequential scan over the short axis reproduces.
    """
    m = np.zeros(x.shape[:-1], dtype=np.float32)
    for i in range(x.shape[-1]):
        v = x[..., i]
        m = np.where(m > v, m, v)
    return m


def c_scan_extremes(x: np.ndarray, first: bool) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) along the last axis by C's ``if (v < min) min = v; if (v > max) max = v;``.

    Seeded with x[..., 0] (``first``) or with ±FLT_MAX. A sequential scan keeps
    C's choices exactly: the first of equal extremes (±0 signs) and NaNs skipped
    unless they are the seed.
    """
    if first:
        mn, mx = x[..., 0].copy(), x[..., 0].copy()
    else:
        big = np.finfo(np.float32).max
        mn = np.full(x.shape[:-1], big, dtype=np.float32)
        mx = np.full(x.shape[:-1], -big, dtype=np.float32)
    for i in range(1 if first else 0, x.shape[-1]):
        v = x[..., i]
        mn = np.where(v < mn, v, mn)
        mx = np.where(v > mx, v, mx)
    return mn, mx


def to_fp16_bits(v: np.ndarray) -> np.ndarray:
    """GGML_FP32_TO_FP16: IEEE round-to-nearest-even, as uint16 bit patterns."""
    return np.asarray(v, dtype=np.float32).astype(np.float16).view(np.uint16)


def fp16_round(v: np.ndarray) -> np.ndarray:
    """float32 → fp16 → float32, i.e. GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))."""
    return np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)


def fp16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 fp16 bit patterns → float32 (exact)."""
    return np.ascontiguousarray(bits).view(np.float16).astype(np.float32)


def safe_recip(v: np.ndarray) -> np.ndarray:
    """``v ? 1.0f/v : 0.0f`` in float32."""
    v = np.asarray(v, dtype=np.float32)
    with np.errstate(divide="ignore"):
        return np.where(v != 0, F(1.0) / v, F(0.0)).astype(np.float32)


def c_trunc_to_int(v: np.ndarray) -> np.ndarray:
    """C float → int conversion (truncation toward zero) as int64."""
    return np.trunc(np.asarray(v, dtype=np.float32)).astype(np.int64)


def c_roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf`` (halves away from zero) as int64.

    Done in float64, where ``|v| + 0.5`` is exact for every float32 ``v`` of
    magnitude below 2**29; in float32 0.49999997 + 0.5 would round up to 1.
    """
    d = np.asarray(v, dtype=np.float32).astype(np.float64)
    return np.trunc(d + np.copysign(0.5, d)).astype(np.int64)
