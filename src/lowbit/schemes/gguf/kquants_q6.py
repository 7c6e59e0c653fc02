"""Q6_K: 256-element super-blocks of sixteen symmetric 16-element sub-blocks.

6-bit codes (stored +32), int8 sub-scales, one fp16 d; a weight decodes to
d·sc·(q − 32). Each sub-block is fitted with make_qx_quants(16, 32) with x²
weights (``quantize_row_q6_K_ref``, no imatrix) or with the raw imatrix
values as weights (``_impl``; unlike the other k-quants no σ² term). The
signed sub-scale of largest magnitude maps to −128; codes are then
re-quantized with the stored scales. An all-zero super-block is all zero bytes.
"""

from __future__ import annotations

import numpy as np

from . import _layout as lay
from ._numeric import GROUP_MAX_EPS, F, first_argmax_abs, fp16_bits_to_f32, fp16_round, nearest_int, to_fp16_bits
from .fitting import make_qx_quants
from .types import QK_K, block_weights


def encode_q6_k(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q6_K super-blocks [NB, 210]: ql[128], qh[64], int8 scales[16], fp16 d."""
    xs = rows.reshape(-1, QK_K)
    nb = xs.shape[0]
    sub = xs.reshape(-1, 16)
    scales, L = make_qx_quants(sub, 32, block_weights(imatrix, rows.shape[0], 16))
    scales = scales.reshape(nb, 16)
    max_scale = first_argmax_abs(scales)
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F(-128) / max_scale
        d = F(1) / iscale
        # int8_t scales[] = MIN(127, nearest_int(...)): narrowing keeps the low byte
        sc = np.minimum(127, nearest_int(iscale[:, None] * scales)).astype(np.int8)
        dd = fp16_round(d)[:, None] * sc.astype(np.float32)
        requant = np.clip(nearest_int(sub.reshape(nb, 16, 16) / dd[..., None]), -32, 31) + 32
    L = np.where((dd != 0)[..., None], requant, L.reshape(nb, 16, 16)).reshape(nb, QK_K)
    ql, qh = lay.pack_q6k(L)
    out = np.concatenate([ql, qh, sc.view(np.uint8), to_fp16_bits(d).reshape(-1, 1).view(np.uint8)], axis=1)
    out[zero] = 0
    return out


def decode_q6_k(blocks: np.ndarray) -> np.ndarray:
    """Q6_K super-blocks → [NB, 256] float32."""
    nb = blocks.shape[0]
    d = fp16_bits_to_f32(blocks[:, 208:210]).reshape(nb, 1)
    sc = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
    dl = (d * sc).reshape(nb, 16, 1)
    q = lay.unpack_q6k(blocks[:, :128], blocks[:, 128:192]).astype(np.int8) - np.int8(32)
    return (dl * q.reshape(nb, 16, 16).astype(np.float32)).reshape(nb, QK_K)
