"""IQ4_NL and IQ4_XS: 4-bit codes into the non-linear table ``KVALUES``.

Both go through ggml's ``quantize_row_iq4_nl_impl`` with 7 scale trials,
with or without an imatrix (ggml_quantize_chunk always calls
``quantize_iq4_{nl,xs}``; the ``ntry = −1`` path is only used by the
standalone ``quantize_row_iq4_nl_ref``). Error weights are qw·√(σ² + x²)
with σ² = 2Σx²/super_block_size, or x² without an imatrix.

IQ4_NL: one fp16 scale per 32 weights. IQ4_XS: 256-weight super-blocks with
an fp16 d and eight 6-bit signed sub-scales (−32…31) relative to it.
"""

from __future__ import annotations

import numpy as np

from . import _layout as lay
from ._numeric import GROUP_MAX_EPS, F, first_argmax_abs, fp16_bits_to_f32, nearest_int, safe_recip, seq_sum, seq_sum_rows, to_fp16_bits
from .types import QK_K, block_weights

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
"""ggml's ``kvalues_iq4nl`` code book."""
_KV = KVALUES.astype(np.float32)
_NTRY = 7


def _closer_to_upper(v: np.float32, k: int) -> bool:
    """C's tie-break between KVALUES[k−1] and KVALUES[k]: not (v − lo < hi − v), in float32."""
    return not (v - _KV[k - 1]) < (_KV[k] - v)


def _thresholds() -> np.ndarray:
    """Smallest float32 v for which best_index_int8 picks entry k over k−1, for k = 1…15.

    The test ``v − lo < hi − v`` is monotone in v (float32 rounding is monotone),
    so each tie-break is a threshold within a few ulps of the midpoint.
    """
    out = np.empty(15, dtype=np.float32)
    for k in range(1, 16):
        v = (_KV[k - 1] + _KV[k]) / F(2)
        while _closer_to_upper(np.nextafter(v, F(-np.inf)), k):
            v = np.nextafter(v, F(-np.inf))
        while not _closer_to_upper(v, k):
            v = np.nextafter(v, F(np.inf))
        out[k - 1] = v
    return out


_THRESH = _thresholds()


def best_index(v: np.ndarray) -> np.ndarray:
    """ggml's ``best_index_int8`` over KVALUES: index of the nearest entry, ties upward.

    Equals counting the precomputed float32 thresholds ≤ v (see _thresholds);
    NaN, which the C binary search sends to 15, is mapped there explicitly.
    Returns uint8 indices.
    """
    v = np.asarray(v, dtype=np.float32)
    idx = (v >= _THRESH[0]).astype(np.uint8)
    for t in _THRESH[1:]:
        idx += v >= t
    return np.where(np.isnan(v), np.uint8(15), idx)


def best_index_reference(v: float) -> int:
    """Scalar transcription of ``best_index_int8`` (binary search), for tests."""
    x = np.float32(v)
    if x <= _KV[0]:
        return 0
    if x >= _KV[15]:
        return 15
    ml, mu = 0, 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < _KV[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if (x - _KV[mu - 1]) < (_KV[mu] - x) else mu


def _fit_blocks(xb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-32-block scale search of quantize_row_iq4_nl_impl; returns float32 scales [G].

    Works group-major ([32, G]) so the sequential sums are contiguous vector adds.
    """
    mx = first_argmax_abs(xb)
    zero = np.abs(mx) < GROUP_MAX_EPS
    xt = np.ascontiguousarray(xb.T)
    wt = np.ascontiguousarray(w.T)

    def sums(idv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = _KV[best_index(idv * xt)]
        wq = wt * q
        return seq_sum_rows(wq * xt), seq_sum_rows(wq * q)

    d = -mx / F(KVALUES[0])
    sumqx, sumq2 = sums(F(1) / d)
    d = np.where(sumq2 > 0, sumqx / sumq2, F(0.0)).astype(np.float32)
    best = d * sumqx
    for itry in range(-_NTRY, _NTRY + 1):
        sumqx, sumq2 = sums(F(itry + int(KVALUES[0])) / mx)
        take = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(take, sumqx / sumq2, d).astype(np.float32)
        best = np.where(take, d * sumqx, best)
    return np.where(zero, F(0.0), d).astype(np.float32)


def _weights(xs: np.ndarray, imatrix: np.ndarray | None, n_rows: int) -> np.ndarray:
    """Error weights [S, super] for super-blocks xs [S, super]."""
    if imatrix is None:
        return xs * xs
    sigma2 = seq_sum(xs * xs) * (F(2) / F(xs.shape[1]))
    qw = block_weights(imatrix, n_rows, xs.shape[1])
    return qw * np.sqrt(sigma2[:, None] + xs * xs)


def encode_iq4_nl(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """IQ4_NL blocks [B, 18]: fp16 d, 16 nibble bytes; value = d·KVALUES[q]."""
    xb = rows.reshape(-1, 32)
    d = _fit_blocks(xb, _weights(xb, imatrix, rows.shape[0]))
    L = best_index(safe_recip(d)[:, None] * xb)
    return np.concatenate([to_fp16_bits(d).reshape(-1, 1).view(np.uint8), lay.pack_nibbles_half(L)], axis=1)


def encode_iq4_xs(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """IQ4_XS super-blocks [NB, 136]: fp16 d, u16 scales_h, scales_l[4], qs[128]."""
    xs = rows.reshape(-1, QK_K)
    nb = xs.shape[0]
    w = _weights(xs, imatrix, rows.shape[0]).reshape(-1, 32)
    xb = xs.reshape(-1, 32)
    scales = _fit_blocks(xb, w).reshape(nb, 8)
    d = -first_argmax_abs(scales) / F(32)  # −0.0 for an all-zero super-block, as in C
    l = np.clip(nearest_int(safe_recip(d)[:, None] * scales), -32, 31)
    dl = d[:, None] * l.astype(np.float32)
    L = best_index(safe_recip(dl).reshape(-1, 1) * xb)
    sh, sl = lay.pack_iq4xs_scales(l + 32)
    head = to_fp16_bits(d).reshape(-1, 1).view(np.uint8)
    return np.concatenate([head, sh, sl, lay.pack_nibbles_half(L.reshape(nb, QK_K))], axis=1)


def decode_iq4_nl(blocks: np.ndarray) -> np.ndarray:
    """IQ4_NL blocks → [B, 32] float32."""
    d = fp16_bits_to_f32(blocks[:, :2]).reshape(-1, 1)
    q = KVALUES[lay.unpack_nibbles_half(blocks[:, 2:])].astype(np.float32)
    return d * q


def decode_iq4_xs(blocks: np.ndarray) -> np.ndarray:
    """IQ4_XS super-blocks → [NB, 256] float32."""
    nb = blocks.shape[0]
    d = fp16_bits_to_f32(blocks[:, :2]).reshape(nb, 1)
    ls = lay.unpack_iq4xs_scales(blocks[:, 2:4], blocks[:, 4:8])
    dl = (d * (ls.astype(np.int8) - np.int8(32)).astype(np.float32)).reshape(nb, 8, 1)
    q = KVALUES[lay.unpack_nibbles_half(blocks[:, 8:])].astype(np.float32).reshape(nb, 8, 32)
    return (dl * q).reshape(nb, QK_K)
