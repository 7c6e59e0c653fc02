"""Q4_K and Q5_K: 256-element super-blocks of eight affine 32-element sub-blocks.

Each sub-block has a 6-bit scale and a 6-bit min under fp16 super-scales d
and dmin; a weight decodes to d·sc·q − dmin·m with 4-bit (Q4_K) or 5-bit
(Q5_K) q.

Without an imatrix (``quantize_row_q{4,5}_K_ref``): weights √(mean x² of the
sub-block) + |x|, make_qkx2_quants(nmax 15/31, rmin −1/−0.5, rdelta 0.1,
20/15 steps, SSE); sub-scales and mins mapped linearly to 0…63 from their
maxima. With an imatrix (``_impl``): w = qw·√(σ² + x²), σ² = 2Σx²/256 over the
super-block, make_qkx3_quants(−0.9, 0.05, 36, SSE), then make_qp_quants(63)
on sub-scales and mins weighted by Σw. Both end by re-quantizing with the
stored fp16 scales (sub-blocks whose effective scale is 0 keep fitted codes).
"""

from __future__ import annotations

import numpy as np

from . import _layout as lay
from ._numeric import F, fp16_bits_to_f32, fp16_round, max_from_zero, nearest_int, seq_sum, to_fp16_bits
from .fitting import make_qkx_quants, make_qp_quants
from .types import QK_K, block_weights

# (rmin, rdelta, nstep) of the no-imatrix fit, per nmax
_REF_SEARCH = {15: (-1.0, 0.1, 20), 31: (-0.5, 0.1, 15)}


def _fit(rows: np.ndarray, imatrix: np.ndarray | None, nmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit sub-blocks and super-scales; returns (L [NB, 256], ls, lm [NB, 8] ints, d, dmin [NB])."""
    xs = rows.reshape(-1, QK_K)
    nb = xs.shape[0]
    sub = xs.reshape(-1, 32)
    if imatrix is None:
        av_x = np.sqrt(seq_sum(sub * sub) / F(32))
        weights = av_x[:, None] + np.abs(sub)
        rmin, rdelta, nstep = _REF_SEARCH[nmax]
        scales, mins, L = make_qkx_quants(sub, weights, nmax, rmin, rdelta, nstep, use_mad=False)
        scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
        max_scale = max_from_zero(scales)
        max_min = max_from_zero(mins)
        with np.errstate(divide="ignore"):
            inv_scale = np.where(max_scale > 0, F(63) / max_scale, F(0.0))
            inv_min = np.where(max_min > 0, F(63) / max_min, F(0.0))
        # uint8_t ls = nearest_int(...); ls = MIN(63, ls)
        ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xFF, 63)
        lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xFF, 63)
        d, dmin = max_scale / F(63), max_min / F(63)
    else:
        sigma2 = F(2) * seq_sum(xs * xs) / F(QK_K)
        qw = block_weights(imatrix, rows.shape[0], QK_K)
        weights = (qw * np.sqrt(sigma2[:, None] + xs * xs)).reshape(-1, 32)
        sw = seq_sum(weights).reshape(nb, 8)
        scales, mins, L = make_qkx_quants(sub, weights, nmax, -0.9, 0.05, 36, use_mad=False)
        d, ls = make_qp_quants(scales.reshape(nb, 8), 63, sw)
        dmin, lm = make_qp_quants(mins.reshape(nb, 8), 63, sw)
        if nmax == 31:  # only the Q5_K _impl caps the (uint8) codes again
            ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    return L.reshape(nb, QK_K), ls, lm, d, dmin


def _requantize(rows: np.ndarray, L: np.ndarray, packed: np.ndarray, d: np.ndarray,
                dmin: np.ndarray, nmax: int) -> np.ndarray:
    """Final pass: l = clamp(nint((x + dmin·m)/(d·sc)), 0, nmax) with the stored scales."""
    nb = L.shape[0]
    sc, m = lay.unpack_k_scales(packed)
    dd = fp16_round(d)[:, None] * sc.astype(np.float32)
    dm = fp16_round(dmin)[:, None] * m.astype(np.float32)
    x = rows.reshape(nb, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(nearest_int((x + dm[..., None]) / dd[..., None]), 0, nmax)
    return np.where((dd != 0)[..., None], requant, L.reshape(nb, 8, 32)).reshape(nb, QK_K)


def _header(d: np.ndarray, dmin: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """fp16 d, fp16 dmin, scales[12] → [NB, 16] bytes."""
    dh = np.stack([to_fp16_bits(d), to_fp16_bits(dmin)], axis=1).view(np.uint8)
    return np.concatenate([dh, packed], axis=1)


def encode_q4_k(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q4_K super-blocks [NB, 144]: fp16 d, fp16 dmin, scales[12], qs[128]."""
    L, ls, lm, d, dmin = _fit(rows, imatrix, 15)
    packed = lay.pack_k_scales(ls, lm)
    L = _requantize(rows, L, packed, d, dmin, 15)
    return np.concatenate([_header(d, dmin, packed), lay.pack_nibbles_k(L)], axis=1)


def encode_q5_k(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q5_K super-blocks [NB, 176]: fp16 d, fp16 dmin, scales[12], qh[32], qs[128]."""
    L, ls, lm, d, dmin = _fit(rows, imatrix, 31)
    packed = lay.pack_k_scales(ls, lm)
    L = _requantize(rows, L, packed, d, dmin, 31)
    return np.concatenate([_header(d, dmin, packed), lay.pack_q5k_high(L), lay.pack_nibbles_k(L)], axis=1)


def _scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sub-block (d·sc, dmin·m) as float32 [NB, 8, 1]."""
    nb = blocks.shape[0]
    d = fp16_bits_to_f32(blocks[:, 0:2]).reshape(nb, 1)
    dmin = fp16_bits_to_f32(blocks[:, 2:4]).reshape(nb, 1)
    sc, m = lay.unpack_k_scales(blocks[:, 4:16])
    dl = (d * sc.astype(np.float32)).reshape(nb, 8, 1)
    ml = (dmin * m.astype(np.float32)).reshape(nb, 8, 1)
    return dl, ml


def decode_q4_k(blocks: np.ndarray) -> np.ndarray:
    """Q4_K super-blocks → [NB, 256] float32."""
    dl, ml = _scales(blocks)
    q = lay.unpack_nibbles_k(blocks[:, 16:144]).reshape(-1, 8, 32).astype(np.float32)
    return (dl * q - ml).reshape(-1, QK_K)


def decode_q5_k(blocks: np.ndarray) -> np.ndarray:
    """Q5_K super-blocks → [NB, 256] float32."""
    dl, ml = _scales(blocks)
    high = lay.unpack_hmask(blocks[:, 16:48])
    q = (lay.unpack_nibbles_k(blocks[:, 48:176]) | (high << np.uint8(4))).reshape(-1, 8, 32).astype(np.float32)
    return (dl * q - ml).reshape(-1, QK_K)
