"""Q2_K and Q3_K: 256-element super-blocks of sixteen 16-element sub-blocks.

Q2_K is affine (2-bit codes, 4-bit sub-scales and sub-mins, fp16 d and dmin);
Q3_K is symmetric (3-bit codes, 6-bit signed sub-scales, fp16 d).

Without an imatrix (``quantize_row_q{2,3}_K_ref``):
  * Q2_K fits each sub-block with make_qkx2_quants(nmax 3, w = |x|, rmin −0.5,
    rdelta 0.1, 15 steps, MAD) and maps sub-scales/mins linearly to 0…15.
  * Q3_K fits each sub-block with make_q3_quants(nmax 4) and maps the signed
    sub-scales to −32…31 from the one of largest magnitude.
With an imatrix (``_impl``), w = qw·√(σ² + x²) where σ² is Σx²/256 (Q2_K) or
2Σx²/256 (Q3_K) over the super-block:
  * Q2_K: make_qkx3_quants(3, −0.9, 0.05, 36, SSE), then make_qp_quants(15)
    on the sub-scales and on the sub-mins, weighted by Σw per sub-block.
  * Q3_K: make_qx_quants(16, 4) per sub-block, then make_qx_quants(16, 32)
    over the sub-scales weighted by Σw.
Both paths end by re-quantizing every element with the stored fp16-rounded
scales; sub-blocks whose effective scale is 0 keep their fitted codes.
"""

from __future__ import annotations

import numpy as np

from . import _layout as lay
from ._numeric import F, first_argmax_abs, fp16_bits_to_f32, fp16_round, max_from_zero, nearest_int, seq_sum, to_fp16_bits
from .fitting import make_q3_quants, make_qkx_quants, make_qp_quants, make_qx_quants
from .types import QK_K, block_weights


def _superblock_weights(rows: np.ndarray, imatrix: np.ndarray, sigma_scale: int) -> np.ndarray:
    """qw·√(σ² + x²) with σ² = sigma_scale·Σx²/256 per super-block → [NB, 256]."""
    xs = rows.reshape(-1, QK_K)
    sigma2 = F(sigma_scale) * seq_sum(xs * xs) / F(QK_K)
    qw = block_weights(imatrix, rows.shape[0], QK_K)
    return qw * np.sqrt(sigma2[:, None] + xs * xs)


def _fp16_field(v: np.ndarray) -> np.ndarray:
    """float32 [NB] → fp16 bytes [NB, 2]."""
    return to_fp16_bits(v).reshape(-1, 1).view(np.uint8)


# ---------------------------------------------------------------- Q2_K

def encode_q2_k(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q2_K super-blocks [NB, 84]: scales[16], qs[64], fp16 d, fp16 dmin."""
    xs = rows.reshape(-1, QK_K)
    nb = xs.shape[0]
    sub = xs.reshape(-1, 16)
    if imatrix is None:
        scales, mins, L = make_qkx_quants(sub, np.abs(sub), 3, -0.5, 0.1, 15, use_mad=True)
        scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
        max_scale = max_from_zero(scales)
        max_min = max_from_zero(mins)
        has_s, has_m = max_scale > 0, max_min > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ls = nearest_int((F(15) / max_scale)[:, None] * scales)
            lm = nearest_int((F(15) / max_min)[:, None] * mins)
        ls = np.where(has_s[:, None], ls & 0xFF, 0)
        lm = np.where(has_m[:, None], lm << 4, 0)
        packed = ((ls | lm) & 0xFF).astype(np.int64)
        d = np.where(has_s, max_scale / F(15), F(0.0))
        dmin = np.where(has_m, max_min / F(15), F(0.0))
    else:
        weight = _superblock_weights(rows, imatrix, 1).reshape(-1, 16)
        sw = seq_sum(weight).reshape(nb, 16)
        scales, mins, L = make_qkx_quants(sub, weight, 3, -0.9, 0.05, 36, use_mad=False)
        d, Ls = make_qp_quants(scales.reshape(nb, 16), 15, sw)
        dmin, Lm = make_qp_quants(mins.reshape(nb, 16), 15, sw)
        packed = (Ls | (Lm << 4)) & 0xFF
    d16, dmin16 = fp16_round(d), fp16_round(dmin)
    dd = d16[:, None] * (packed & 0xF).astype(np.float32)
    dm = dmin16[:, None] * (packed >> 4).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(nearest_int((sub.reshape(nb, 16, 16) + dm[..., None]) / dd[..., None]), 0, 3)
    L = np.where((dd != 0)[..., None], requant, L.reshape(nb, 16, 16)).reshape(nb, QK_K)
    return np.concatenate([packed.astype(np.uint8), lay.pack_2bit(L), _fp16_field(d), _fp16_field(dmin)], axis=1)


def decode_q2_k(blocks: np.ndarray) -> np.ndarray:
    """Q2_K super-blocks → [NB, 256] float32: d·sc·q − dmin·m."""
    nb = blocks.shape[0]
    sc = blocks[:, :16]
    d = fp16_bits_to_f32(blocks[:, 80:82]).reshape(nb, 1)
    dmin = fp16_bits_to_f32(blocks[:, 82:84]).reshape(nb, 1)
    dl = (d * (sc & 0xF).astype(np.float32)).reshape(nb, 16, 1)
    ml = (dmin * (sc >> 4).astype(np.float32)).reshape(nb, 16, 1)
    q = lay.unpack_2bit(blocks[:, 16:80]).reshape(nb, 16, 16).astype(np.float32)
    return (dl * q - ml).reshape(nb, QK_K)


# ---------------------------------------------------------------- Q3_K

def encode_q3_k(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q3_K super-blocks [NB, 110]: hmask[32], qs[64], scales[12], fp16 d."""
    xs = rows.reshape(-1, QK_K)
    nb = xs.shape[0]
    sub = xs.reshape(-1, 16)
    if imatrix is None:
        scales, L = make_q3_quants(sub, 4)
        scales = scales.reshape(nb, 16)
        max_scale = first_argmax_abs(scales)
        nz = max_scale != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            iscale = F(-32) / max_scale
            l = nearest_int(iscale[:, None] * scales).astype(np.int8).astype(np.int64)  # int8_t l
            d = np.where(nz, F(1) / iscale, F(0.0))
        l = np.where(nz[:, None], np.clip(l, -32, 31) + 32, 0)
    else:
        weight = _superblock_weights(rows, imatrix, 2).reshape(-1, 16)
        sw = seq_sum(weight).reshape(nb, 16)
        scales, L = make_qx_quants(sub, 4, weight)
        d, l = make_qx_quants(scales.reshape(nb, 16), 32, sw)
    packed = lay.pack_q3_scales(l)
    sc = lay.unpack_q3_scales(packed) - 32
    dd = fp16_round(d)[:, None] * sc.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(nearest_int(sub.reshape(nb, 16, 16) / dd[..., None]), -4, 3) + 4
    L = np.where((dd != 0)[..., None], requant, L.reshape(nb, 16, 16)).reshape(nb, QK_K)
    high = L > 3
    low = np.where(high, L - 4, L)
    return np.concatenate([lay.pack_hmask(high), lay.pack_2bit(low), packed, _fp16_field(d)], axis=1)


def decode_q3_k(blocks: np.ndarray) -> np.ndarray:
    """Q3_K super-blocks → [NB, 256] float32: d·(sc − 32)·q with q = low2 − (hbit ? 0 : 4)."""
    nb = blocks.shape[0]
    d = fp16_bits_to_f32(blocks[:, 108:110]).reshape(nb, 1)
    sc = (lay.unpack_q3_scales(blocks[:, 96:108]).astype(np.int8) - np.int8(32)).astype(np.float32)
    dl = (d * sc).reshape(nb, 16, 1)
    low = lay.unpack_2bit(blocks[:, 32:96]).astype(np.int8)
    high = lay.unpack_hmask(blocks[:, :32]) ^ np.uint8(1)
    q = (low - (high << np.uint8(2)).astype(np.int8)).astype(np.float32)
    return (dl * q.reshape(nb, 16, 16)).reshape(nb, QK_K)
