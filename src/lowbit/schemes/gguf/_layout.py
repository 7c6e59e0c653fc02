"""GGUF's interleaved code and scale layouts, packed and unpacked in one place.

These are not the continuous little-endian bitstream of ``lowbit.packing``:
ggml interleaves elements that are 16, 32 or 64 apart inside a byte, splits
high bits into separate masks and packs 6-bit sub-scales in two different
12-byte schemes. Every function works on ``[B, …]`` arrays of B blocks; codes
come in as integer arrays (any int dtype) and bytes go out as uint8.
"""

from __future__ import annotations

import numpy as np


def _u8(v: np.ndarray) -> np.ndarray:
    """Store into a uint8 field the way C does: keep the low 8 bits."""
    return (np.asarray(v).astype(np.int64) & 0xFF).astype(np.uint8)


# ---- 32-element blocks (legacy types, IQ4_NL, the 32-sub-blocks of IQ4_XS) ----

def pack_nibbles_half(L: np.ndarray) -> np.ndarray:
    """[B, 32k] codes → [B, 16k] bytes; per 32 codes, byte j = L[j] | L[j+16] << 4."""
    L = np.asarray(L).astype(np.int64)
    g = L.reshape(L.shape[0], -1, 2, 16)
    return _u8((g[:, :, 0] & 0xF) | ((g[:, :, 1] & 0xF) << 4)).reshape(L.shape[0], -1)


def unpack_nibbles_half(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_nibbles_half`: [B, 16k] bytes → [B, 32k] codes (uint8)."""
    g = qs.reshape(qs.shape[0], -1, 1, 16)
    return ((g >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & 0xF).reshape(qs.shape[0], -1)


def pack_bit4_u32(L: np.ndarray) -> np.ndarray:
    """[B, 32] 5-bit codes → [B, 4] bytes of the little-endian u32 ``qh`` (bit j = bit 4 of L[j])."""
    bits = ((np.asarray(L).astype(np.int64) >> 4) & 1).astype(np.uint8)
    return np.packbits(bits, axis=-1, bitorder="little")


def unpack_bit4_u32(qh: np.ndarray) -> np.ndarray:
    """[B, 4] ``qh`` bytes → [B, 32] values of 0 or 16."""
    return np.unpackbits(qh, axis=-1, bitorder="little") << 4


# ---- 256-element super-blocks ----

def pack_2bit(L: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K codes [B, 256] (0…3) → [B, 64]; byte 32h+l holds 128h+l+{0,32,64,96} at shifts 0,2,4,6."""
    g = np.asarray(L).astype(np.int64).reshape(L.shape[0], 2, 4, 32)
    out = g[:, :, 0] | (g[:, :, 1] << 2) | (g[:, :, 2] << 4) | (g[:, :, 3] << 6)
    return _u8(out).reshape(L.shape[0], 64)


def unpack_2bit(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_2bit`: [B, 64] → [B, 256] codes (uint8)."""
    g = qs.reshape(qs.shape[0], 2, 1, 32)
    sh = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    return ((g >> sh) & 3).reshape(qs.shape[0], 256)


def pack_hmask(high: np.ndarray) -> np.ndarray:
    """Q3_K high bits [B, 256] (0/1) → hmask [B, 32]: element e sets bit e//32 of byte e%32."""
    h = np.asarray(high).astype(np.int64).reshape(high.shape[0], 8, 32)
    return _u8(np.bitwise_or.reduce(h << np.arange(8).reshape(1, 8, 1), axis=1))


def unpack_hmask(hmask: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_hmask`: [B, 32] → [B, 256] bits (uint8)."""
    g = hmask.reshape(hmask.shape[0], 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    return (g & 1).reshape(hmask.shape[0], 256)


def pack_q3_scales(l: np.ndarray) -> np.ndarray:
    """Q3_K 6-bit scales [B, 16] → 12 bytes: low nibbles in bytes 0–7, high pairs in 8–11."""
    l = np.asarray(l).astype(np.int64)
    low = (l[:, :8] & 0xF) | ((l[:, 8:] & 0xF) << 4)
    hi = (l >> 4).reshape(l.shape[0], 4, 4)  # [B, j//4, j%4]
    high = np.bitwise_or.reduce(hi << (2 * np.arange(4)).reshape(1, 4, 1), axis=1)
    return _u8(np.concatenate([low, high], axis=1))


def unpack_q3_scales(sc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_q3_scales`: [B, 12] → [B, 16] unsigned 6-bit scales (int64)."""
    sc = sc.astype(np.int64)
    low = np.concatenate([sc[:, :8] & 0xF, sc[:, :8] >> 4], axis=1)
    high = (sc[:, 8:12].reshape(-1, 1, 4) >> (2 * np.arange(4)).reshape(1, 4, 1)) & 3
    return low | (high.reshape(-1, 16) << 4)


def pack_k_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K 6-bit scales and mins [B, 8] each → 12 bytes (``get_scale_min_k4`` layout).

    Written exactly as ggml's bitwise expression, so out-of-range uint8 inputs
    (which the C can produce in degenerate cases) land where C puts them.
    """
    ls = np.asarray(ls).astype(np.int64)
    lm = np.asarray(lm).astype(np.int64)
    a = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    b = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    c = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return _u8(np.concatenate([a, b, c], axis=1))


def unpack_k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_k_scales`: [B, 12] → (scales, mins), each [B, 8] int64."""
    s = s.astype(np.int64)
    a, b, c = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([a & 63, (c & 0xF) | ((a >> 6) << 4)], axis=1)
    mn = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc, mn


def pack_nibbles_k(L: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K low nibbles [B, 256] → [B, 128]; byte 32c+l = L[64c+l] | L[64c+32+l] << 4."""
    g = np.asarray(L).astype(np.int64).reshape(L.shape[0], 4, 2, 32)
    return _u8((g[:, :, 0] & 0xF) | ((g[:, :, 1] & 0xF) << 4)).reshape(L.shape[0], 128)


def unpack_nibbles_k(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_nibbles_k`: [B, 128] → [B, 256] (uint8)."""
    g = qs.reshape(qs.shape[0], 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    return (g & 0xF).reshape(qs.shape[0], 256)


def pack_q5k_high(L: np.ndarray) -> np.ndarray:
    """Q5_K bit 4 of [B, 256] codes → qh [B, 32]: element 32k+l sets bit k of byte l."""
    return pack_hmask((np.asarray(L).astype(np.int64) >> 4) & 1)


def pack_q6k(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q6_K 6-bit codes [B, 256] → (ql [B, 128], qh [B, 64])."""
    g = np.asarray(L).astype(np.int64).reshape(L.shape[0], 2, 4, 32)
    lo, hi = g & 0xF, g >> 4
    ql = np.stack([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2)
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)
    return _u8(ql).reshape(L.shape[0], 128), _u8(qh).reshape(L.shape[0], 64)


def unpack_q6k(ql: np.ndarray, qh: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_q6k`: → [B, 256] unsigned 6-bit codes (uint8)."""
    B = ql.shape[0]
    lo = ql.reshape(B, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    lo = (lo & 0xF).reshape(B, 2, 4, 32)
    hi = qh.reshape(B, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    hi = (hi & 3).reshape(B, 2, 4, 32)
    return (lo | (hi << 4)).reshape(B, 256)


def pack_iq4xs_scales(l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IQ4_XS 6-bit sub-scales [B, 8] → (scales_h as 2 bytes of a u16, scales_l [B, 4])."""
    l = np.asarray(l).astype(np.int64)
    sl = (l[:, 0::2] & 0xF) | ((l[:, 1::2] & 0xF) << 4)
    sh = np.bitwise_or.reduce((l >> 4) << (2 * np.arange(8)).reshape(1, 8), axis=1) & 0xFFFF
    return sh.astype("<u2").view(np.uint8).reshape(-1, 2), _u8(sl)


def unpack_iq4xs_scales(sh: np.ndarray, sl: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_iq4xs_scales`: → [B, 8] unsigned 6-bit scales (int64)."""
    h = np.ascontiguousarray(sh).view("<u2").astype(np.int64).reshape(-1, 1)
    high = (h >> (2 * np.arange(8)).reshape(1, 8)) & 3
    s = sl.astype(np.int64)
    low = np.stack([s & 0xF, s >> 4], axis=2).reshape(-1, 8)
    return low | (high << 4)
