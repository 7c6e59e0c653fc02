"""Legacy 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Without an importance matrix ggml uses the closed-form ``quantize_row_*_ref``
(one scale from the extreme value, truncating conversions). With one it uses
``quantize_row_*_impl``: weights qw·√(σ² + x²) with σ² the mean x² of the
**whole row**, then make_qx_quants (Q4_0/Q5_0) or make_qkx3_quants
(Q4_1/Q5_1), without a final requantization. Q8_0 ignores the imatrix.

Encoders take rows [R, N] (float32) and return blocks [R·N/32, type_size]
(uint8); decoders take blocks and return [B, 32] float32.
"""

from __future__ import annotations

import numpy as np

from . import _layout as lay
from ._numeric import F, c_max_macro, c_roundf, c_scan_extremes, c_trunc_to_int, first_argmax_abs, fp16_bits_to_f32, safe_recip, seq_sum, to_fp16_bits
from .fitting import make_qkx_quants, make_qx_quants
from .types import block_weights

QK = 32


def _as_int8(v: np.ndarray) -> np.ndarray:
    """C's (int8_t) narrowing of an int (modulo 256), as int64."""
    return np.asarray(v).astype(np.int64).astype(np.int8).astype(np.int64)


def _d_bytes(d: np.ndarray) -> np.ndarray:
    """fp16 field bytes [B, 2] from float32 [B]."""
    return to_fp16_bits(d).reshape(-1, 1).view(np.uint8)


def _row_weights(rows: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
    """qw·√(σ² + x²) per element, σ² = row mean of x² (sequential float32 sum)."""
    n_rows, n = rows.shape
    sigma2 = seq_sum(rows * rows, axis=1) / F(n)
    xb = rows.reshape(n_rows, -1, QK)
    qw = block_weights(imatrix, n_rows, QK).reshape(xb.shape)
    return (qw * np.sqrt(sigma2[:, None, None] + xb * xb)).reshape(-1, QK)


def _symmetric_ref(xb: np.ndarray, half_range: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0/Q5_0 ``_ref``: d = max/−half_range, q = min(2·hr−1, (int8)(x/d + hr + 0.5))."""
    d = first_argmax_abs(xb) / F(-half_range)
    x0 = xb * safe_recip(d)[:, None]
    q = _as_int8(c_trunc_to_int(x0 + F(half_range + 0.5)))
    return d, np.minimum(2 * half_range - 1, q)


def _affine_ref(xb: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1/Q5_1 ``_ref``: d = (max−min)/nmax, m = min, q = trunc((x−min)/d + 0.5)."""
    # scanned like C (FLT_MAX seeds): -0.0/+0.0 ties reach the fp16 d and m signs
    mn, mx = c_scan_extremes(xb, first=False)
    d = (mx - mn) / F(nmax)
    x0 = (xb - mn[:, None]) * safe_recip(d)[:, None]
    return d, mn, c_trunc_to_int(x0 + F(0.5))


def encode_q4_0(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q4_0 blocks: fp16 d, 16 bytes of nibbles; value = (q − 8)·d."""
    xb = rows.reshape(-1, QK)
    if imatrix is None:
        d, q = _symmetric_ref(xb, 8)
    else:
        d, q = make_qx_quants(xb, 8, _row_weights(rows, imatrix))
    return np.concatenate([_d_bytes(d), lay.pack_nibbles_half(q)], axis=1)


def encode_q5_0(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q5_0 blocks: fp16 d, u32 qh (bit 4 of each code), 16 nibble bytes; value = (q − 16)·d."""
    xb = rows.reshape(-1, QK)
    if imatrix is None:
        d, q = _symmetric_ref(xb, 16)
    else:
        d, q = make_qx_quants(xb, 16, _row_weights(rows, imatrix))
    return np.concatenate([_d_bytes(d), lay.pack_bit4_u32(q), lay.pack_nibbles_half(q)], axis=1)


def _affine_imatrix(rows: np.ndarray, imatrix: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1/Q5_1 ``_impl``: make_qkx3_quants(nmax, −0.9, 0.05, 36, SSE); m = −the_min."""
    xb = rows.reshape(-1, QK)
    d, the_min, q = make_qkx_quants(xb, _row_weights(rows, imatrix), nmax, -0.9, 0.05, 36, use_mad=False)
    return d, -the_min, q


def encode_q4_1(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q4_1 blocks: fp16 d, fp16 m, 16 nibble bytes; value = q·d + m."""
    if imatrix is None:
        d, m, q = _affine_ref(rows.reshape(-1, QK), 15)
        q = np.minimum(15, _as_int8(q))
    else:
        d, m, q = _affine_imatrix(rows, imatrix, 15)
    return np.concatenate([_d_bytes(d), _d_bytes(m), lay.pack_nibbles_half(q)], axis=1)


def encode_q5_1(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q5_1 blocks: fp16 d, fp16 m, u32 qh, 16 nibble bytes; value = q·d + m."""
    if imatrix is None:
        d, m, q = _affine_ref(rows.reshape(-1, QK), 31)
        q = q & 0xFF  # the C ref stores (uint8_t) without capping at 31
    else:
        d, m, q = _affine_imatrix(rows, imatrix, 31)
    return np.concatenate([_d_bytes(d), _d_bytes(m), lay.pack_bit4_u32(q), lay.pack_nibbles_half(q)], axis=1)


def encode_q8_0(rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Q8_0 blocks: fp16 d = amax/127, int8 q = roundf(x/d). The imatrix is ignored, as in ggml."""
    del imatrix  # quantize_q8_0 never reads it
    xb = rows.reshape(-1, QK)
    d = c_max_macro(np.abs(xb)) / F(127)
    q = c_roundf(xb * safe_recip(d)[:, None])
    return np.concatenate([_d_bytes(d), (q & 0xFF).astype(np.uint8)], axis=1)


def _d(blocks: np.ndarray, at: int) -> np.ndarray:
    """fp16 field at byte offset ``at`` → float32 [B, 1]."""
    return fp16_bits_to_f32(blocks[:, at:at + 2]).reshape(-1, 1)


def decode_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks → [B, 32] float32."""
    q = lay.unpack_nibbles_half(blocks[:, 2:]).astype(np.int8) - np.int8(8)
    return _d(blocks, 0) * q.astype(np.float32)


def decode_q4_1(blocks: np.ndarray) -> np.ndarray:
    """Q4_1 blocks → [B, 32] float32."""
    q = lay.unpack_nibbles_half(blocks[:, 4:]).astype(np.float32)
    return (_d(blocks, 0) * q) + _d(blocks, 2)


def decode_q5_0(blocks: np.ndarray) -> np.ndarray:
    """Q5_0 blocks → [B, 32] float32."""
    q = lay.unpack_nibbles_half(blocks[:, 6:]) | lay.unpack_bit4_u32(blocks[:, 2:6])
    return _d(blocks, 0) * (q.astype(np.int8) - np.int8(16)).astype(np.float32)


def decode_q5_1(blocks: np.ndarray) -> np.ndarray:
    """Q5_1 blocks → [B, 32] float32."""
    q = lay.unpack_nibbles_half(blocks[:, 8:]) | lay.unpack_bit4_u32(blocks[:, 4:8])
    return (_d(blocks, 0) * q.astype(np.float32)) + _d(blocks, 2)


def decode_q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q8_0 blocks → [B, 32] float32."""
    return np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32) * _d(blocks, 0)
