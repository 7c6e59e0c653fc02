"""The bitsandbytes code tables and the two rounding rules that use them.

Everything here reproduces bitsandbytes 0.50 on CPU bit for bit (the tests
compare against the library wherever it is installed):

* :func:`nearest_4bit` — the 4-bit code of values already scaled to [-1, 1]:
  ``torch.bucketize`` against the midpoints of the *sorted* table (a value on a
  midpoint goes to the lower entry), mapped back to table order for FP4.
  This is bitsandbytes' CPU ``quantize_4bit`` (the pure-torch default kernel).
* :func:`quantize_blockwise_8bit` — the 8-bit blockwise quantizer that double
  quantization applies to the absmax values. On CPU bitsandbytes runs it in
  its native library (``quantize_cpu_impl``), which does *not* pick the exact
  nearest entry: it maps ``x/absmax`` onto a 65,536-bin lookup table. The
  port follows the x86-64 build instruction for instruction, including the
  fused multiply-add the compiler emits in the bin index
  (``vfmadd213ss``: ``trunc(fma((t + 1)·0.5, 65535, 0.5))``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

#: NF4 in index order: quantiles of N(0, 1) with equal mass, 0 exact (QLoRA).
NF4_VALUES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
#: bitsandbytes FP4 (E2M1, exponent bias 2) in bit-pattern order, before dividing by 12.
FP4_RAW = (0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0)

#: Values per block of the nested (double) quantization of absmax values.
NESTED_BLOCKSIZE = 256
_LUT_SIZE = 65536


@functools.cache
def table_4bit(quant_type: str) -> torch.Tensor:
    """The 16-entry float32 table (``quant_map`` in bitsandbytes files), index order."""
    if quant_type == "nf4":
        return torch.tensor(NF4_VALUES, dtype=torch.float32)
    if quant_type == "fp4":
        raw = torch.tensor(FP4_RAW, dtype=torch.float32)
        return raw / raw.abs().max()  # float32 division, as bitsandbytes normalises it
    raise ValueError(f"unknown 4-bit type {quant_type!r}")


@functools.cache
def _bounds_4bit(quant_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    code = table_4bit(quant_type)
    # Unstable argsort, like bitsandbytes: FP4's +0/-0 tie is broken the same way.
    order = torch.argsort(code)
    srt = code[order]
    return (srt[:-1] + srt[1:]) / 2, order


def nearest_4bit(scaled: torch.Tensor, quant_type: str) -> torch.Tensor:
    """uint8 codes (table order) of float32 values in [-1, 1]."""
    bounds, order = _bounds_4bit(quant_type)
    idx = torch.bucketize(scaled, bounds.to(scaled.device), out_int32=True)
    if quant_type != "nf4":
        idx = order.to(scaled.device)[idx]
    return idx.to(torch.uint8)


def zero_code_4bit(quant_type: str) -> int:
    """The code bitsandbytes writes for 0.0 (the pad nibble of an odd-length tensor)."""
    return int(nearest_4bit(torch.zeros(1), quant_type)[0])


@functools.cache
def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (``create_dynamic_map()``), 256 sorted float32 values.

    For exponent e = 0…6 it holds the ±midpoints of 2**e + 1 evenly spaced
    points in [0.1, 1], scaled by 10**(e-6); plus 0 and 1. The arithmetic is
    float32 in torch, as in the library, so the values agree to the bit.
    """
    values: list[float] = []
    for e in range(7):
        edges = torch.linspace(0.1, 1, 2**e + 1, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2.0
        scale = 10.0 ** (e - 6)
        values += (scale * mids).tolist()
        values += (-scale * mids).tolist()
    values += [0.0, 1.0]
    return torch.tensor(sorted(values), dtype=torch.float32)


@functools.cache
def _lut(code_bytes: bytes) -> np.ndarray:
    """bitsandbytes' ``build_quantize_lut``: bin i of [-1, 1] → entry whose midpoint interval holds it."""
    code = np.frombuffer(code_bytes, dtype=np.float32)
    mids = (code[:-1] + code[1:]) * np.float32(0.5)
    i = np.arange(_LUT_SIZE, dtype=np.float32)
    val = np.float32(-1.0) + (np.float32(2.0) * i) / np.float32(_LUT_SIZE - 1)
    # The C loop advances while midpoint < val: the count of midpoints strictly below val.
    return np.searchsorted(mids, val, side="left").astype(np.uint8)


def quantize_blockwise_8bit(x: torch.Tensor, code: torch.Tensor,
                            blocksize: int = NESTED_BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit codes (uint8, one per value) and float32 per-block absmax of a 1-D float32 tensor.

    A block whose values are all zero stores absmax 0 and code 0 (index 0,
    not the entry for 0.0: the library's quirk, kept so the bytes match).
    """
    flat = x.detach().reshape(-1).to(torch.float32).cpu().numpy()
    n = flat.size
    nb = math.ceil(n / blocksize)
    blocks = np.zeros(nb * blocksize, dtype=np.float32)
    blocks[:n] = flat  # zero padding changes no block's absmax
    blocks = blocks.reshape(nb, blocksize)
    absmax = np.abs(blocks).max(axis=1)
    zero = absmax == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(1.0) / np.where(zero, np.float32(1.0), absmax)
        t = np.clip(blocks * inv[:, None], np.float32(-1.0), np.float32(1.0))
    u = (t + np.float32(1.0)) * np.float32(0.5)
    # fma(u, 65535, 0.5) rounded once to float32: u·65535 is exact in float64, and
    # wherever adding 0.5 is inexact in float64 (u < 2**-30) the bin is 0 either way.
    fused = (u.astype(np.float64) * float(_LUT_SIZE - 1) + 0.5).astype(np.float32)
    idx = np.trunc(fused).astype(np.int64)
    codes = _lut(code.detach().cpu().to(torch.float32).numpy().tobytes())[idx]
    codes[zero] = 0
    return (torch.from_numpy(codes.reshape(-1)[:n].copy()).to(x.device),
            torch.from_numpy(absmax.astype(np.float32)).to(x.device))


def dequantize_blockwise_8bit(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor,
                              blocksize: int = NESTED_BLOCKSIZE) -> torch.Tensor:
    """Inverse of :func:`quantize_blockwise_8bit`: ``code[q] · absmax[block]`` in float32."""
    n = codes.numel()
    scale = absmax.to(torch.float32).repeat_interleave(blocksize)[:n]
    return code.to(codes.device)[codes.reshape(-1).long()] * scale
