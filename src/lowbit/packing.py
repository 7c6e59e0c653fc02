"""The one bit-packing module: 1–8-bit codes to bytes and back.

Codes are packed as a continuous little-endian bitstream along the last axis:
code k occupies bits ``k*b … k*b+b-1`` counting from the least significant bit
of byte 0. Viewed as little-endian int32 words, that is exactly the layout of
GPTQ's ``qweight`` (3-bit values straddle word boundaries the same way) and of
compressed-tensors' ``weight_packed``, so every format reuses these two
functions instead of carrying a ``pack()`` of its own.
"""

from __future__ import annotations

import numpy as np
import torch

from lowbit.errors import LowbitError


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise LowbitError(f"bit width must be between 1 and 8, got {bits}")


def packed_length(n: int, bits: int) -> int:
    """Bytes needed for ``n`` codes of ``bits`` bits."""
    _check_bits(bits)
    return (n * bits + 7) // 8


def pack_bits(codes: torch.Tensor | np.ndarray, bits: int) -> torch.Tensor:
    """Pack unsigned codes (< 2**bits) along the last axis into uint8 bytes.

    Returns a uint8 tensor of shape ``[..., ceil(n*bits/8)]``.
    """
    _check_bits(bits)
    arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if arr.size and (arr.min() < 0 or arr.max() >= (1 << bits)):
        raise LowbitError(f"codes out of range for {bits}-bit packing: [{arr.min()}, {arr.max()}]")
    lead, n = arr.shape[:-1], arr.shape[-1]
    if bits == 8:
        return torch.from_numpy(arr.astype(np.uint8, copy=True))
    pad = (-n) % 8
    a = arr.astype(np.uint64)
    if pad:
        a = np.concatenate([a, np.zeros(lead + (pad,), dtype=np.uint64)], axis=-1)
    # Eight codes of b bits fill exactly b bytes: build one 64-bit word per
    # eight codes, then cut it into its low b bytes.
    groups = a.reshape(lead + (-1, 8))
    shifts = (np.arange(8, dtype=np.uint64) * np.uint64(bits))
    words = np.bitwise_or.reduce(groups << shifts, axis=-1)
    byte_shifts = np.arange(bits, dtype=np.uint64) * np.uint64(8)
    out = ((words[..., None] >> byte_shifts) & np.uint64(0xFF)).astype(np.uint8)
    out = out.reshape(lead + (-1,))[..., : packed_length(n, bits)]
    return torch.from_numpy(np.ascontiguousarray(out))


def unpack_bits(packed: torch.Tensor | np.ndarray, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``n`` uint8 codes per row of the last axis."""
    _check_bits(bits)
    arr = packed.detach().cpu().numpy() if isinstance(packed, torch.Tensor) else np.asarray(packed)
    arr = arr.astype(np.uint8, copy=False)
    lead = arr.shape[:-1]
    if arr.shape[-1] != packed_length(n, bits):
        raise LowbitError(
            f"packed row has {arr.shape[-1]} bytes, expected {packed_length(n, bits)} for {n} {bits}-bit codes"
        )
    if bits == 8:
        return torch.from_numpy(arr.copy())
    n_groups = (n + 7) // 8
    full = n_groups * bits
    if arr.shape[-1] < full:
        arr = np.concatenate([arr, np.zeros(lead + (full - arr.shape[-1],), dtype=np.uint8)], axis=-1)
    b = arr.reshape(lead + (n_groups, bits)).astype(np.uint64)
    byte_shifts = np.arange(bits, dtype=np.uint64) * np.uint64(8)
    words = np.bitwise_or.reduce(b << byte_shifts, axis=-1)
    shifts = np.arange(8, dtype=np.uint64) * np.uint64(bits)
    mask = np.uint64((1 << bits) - 1)
    codes = ((words[..., None] >> shifts) & mask).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(codes.reshape(lead + (-1,))[..., :n]))


def pack_int32(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes along the last axis into int32 words, LSB first.

    The same continuous bitstream as :func:`pack_bits`, cut into little-endian
    32-bit words: GPTQ's ``qweight``/``qzeros`` and compressed-tensors'
    ``weight_packed`` layout (3-bit values straddle words). The row is padded
    with zero codes to a multiple of 32; ``ceil(n·bits/32)`` words are kept.
    """
    n = codes.shape[-1]
    pad = (-n) % 32
    if pad:
        codes = torch.nn.functional.pad(codes.to(torch.uint8), (0, pad))
    packed = pack_bits(codes, bits)  # [..., (n+pad)·bits/8] bytes, a multiple of 4
    words = packed.contiguous().view(torch.int32)
    return words[..., : (n * bits + 31) // 32].contiguous()


def unpack_int32(words: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_int32`: ``n`` uint8 codes per row of the last axis."""
    if words.dtype != torch.int32:
        raise LowbitError(f"packed words must be int32, got {words.dtype}")
    full = ((n + 31) // 32) * bits  # words holding the zero-padded row
    if words.shape[-1] < full:
        words = torch.nn.functional.pad(words, (0, full - words.shape[-1]))
    raw = words.contiguous().view(torch.uint8)
    return unpack_bits(raw, bits, raw.shape[-1] * 8 // bits)[..., :n].contiguous()
