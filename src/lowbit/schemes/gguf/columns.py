"""Group-wise interface (fit / quantize_with / assemble) for the legacy 32-blocks.

GPTQ chooses codes one column at a time on a grid fitted per group of
columns. For Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 a group is one 32-weight block
per row, and the grid is the block's scale (and min), so these types offer the
interface: ``fit`` computes the block parameters exactly as
``quantize_row_*_ref`` does, ``quantize_with`` applies the reference's code
formula (truncating conversions included) and clamps to the code range, and
``assemble`` packs codes and parameters into ggml blocks. On unmodified
weights the three together reproduce ``ggml_quantize_chunk`` byte for byte
(tested).

Codes are unsigned: Q4_x 0…15, Q5_x 0…31, Q8_0 stored as ``q + 128``.

The k-quants have their own version in :mod:`.kcolumns`: a 256-wide
super-block stores sub-scales of 16/32 columns relative to one fp16
super-scale fitted over all of them, so their grid is fitted up front per
super-block and held fixed (GPTQ's static groups). IQ4_NL / IQ4_XS (a
non-uniform grid) have no column-wise interface.
"""

from __future__ import annotations

import numpy as np
import torch

from lowbit.errors import LowbitError

from . import _layout as lay
from ._numeric import F, c_max_macro, c_roundf, c_scan_extremes, c_trunc_to_int, first_argmax_abs, safe_recip

QK = 32
#: type → (code max, affine?) for the types with a column-wise interface.
LEGACY: dict[str, tuple[int, bool]] = {"Q4_0": (15, False), "Q5_0": (31, False), "Q4_1": (15, True),
                                       "Q5_1": (31, True), "Q8_0": (255, False)}


def require_legacy(qtype: str) -> None:
    """Raise unless ``qtype`` has the column-wise interface."""
    if qtype not in LEGACY:
        raise LowbitError(
            f"gguf:{qtype} does not support column-wise methods (GPTQ): only the 32-blocks "
            f"{', '.join(LEGACY)} and the k-quants Q2_K … Q6_K do"
        )


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


def _as_int8(v: np.ndarray) -> np.ndarray:
    """C's (int8_t) narrowing, as int64."""
    return v.astype(np.int64).astype(np.int8).astype(np.int64)


def fit(qtype: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Block parameters of the columns ``w`` ``[O, 32]`` (one block per row).

    Returns ``d`` (and ``m``) as stored (fp16) plus the float32 values the
    reference derives codes from (``id`` = 1/d before fp16 rounding, ``min``).
    """
    require_legacy(qtype)
    x = _np(w)
    if x.shape[1] != QK:
        raise LowbitError(f"gguf:{qtype}: a column group is {QK} columns, got {x.shape[1]}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if qtype in ("Q4_0", "Q5_0"):
            d = first_argmax_abs(x) / F(-8 if qtype == "Q4_0" else -16)
            out = {"d": d, "id": safe_recip(d)}
        elif qtype == "Q8_0":
            d = c_max_macro(np.abs(x)) / F(127)
            out = {"d": d, "id": safe_recip(d)}
        else:
            mn, mx = c_scan_extremes(x, first=False)
            d = (mx - mn) / F(LEGACY[qtype][0])
            out = {"d": d, "id": safe_recip(d), "min": mn, "m": mn}
    dev = w.device
    res = {k: torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(-1, 1).copy()).to(dev) for k, v in out.items()}
    res["d"] = res["d"].half()
    if "m" in res:
        res["m"] = res["m"].half()
    return res


def quantize_with(qtype: str, w: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (uint8) and dequantized values of columns ``w`` ``[O, c]`` on a fitted block grid."""
    require_legacy(qtype)
    x = _np(w)
    idv = _np(params["id"]).reshape(-1, 1)
    d16 = params["d"].detach().to("cpu", torch.float32).numpy().reshape(-1, 1)
    nmax, affine = LEGACY[qtype]
    with np.errstate(invalid="ignore", over="ignore"):
        if qtype == "Q8_0":
            q = np.clip(c_roundf(x * idv), -127, 127)
            values = q.astype(np.float32) * d16
            codes = q + 128
        elif affine:
            mn = _np(params["min"]).reshape(-1, 1)
            m16 = params["m"].detach().to("cpu", torch.float32).numpy().reshape(-1, 1)
            # C: (int8_t)((x - min)*id + 0.5f), capped at nmax; clamped below for GPTQ's error-fed columns
            q = np.clip(_as_int8(c_trunc_to_int((x - mn) * idv + F(0.5))), 0, nmax)
            values = (d16 * q.astype(np.float32)) + m16
            codes = q
        else:
            half = (nmax + 1) // 2
            q = np.clip(_as_int8(c_trunc_to_int(x * idv + F(half + 0.5))), 0, nmax)
            values = d16 * (q - half).astype(np.float32)
            codes = q
    dev = w.device
    return (torch.from_numpy(codes.astype(np.uint8)).to(dev),
            torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(dev))


def _fp16_bytes(v: torch.Tensor) -> np.ndarray:
    """[B] fp16 tensor → [B, 2] little-endian bytes."""
    return np.ascontiguousarray(v.detach().cpu().to(torch.float16).numpy().reshape(-1)).view(np.uint8).reshape(-1, 2)


def assemble(qtype: str, shape: tuple[int, ...], codes: torch.Tensor,
             group_params: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """ggml block bytes ``[O, row_bytes]`` from codes ``[O, I]`` and per-group parameters (in column order)."""
    require_legacy(qtype)
    o, n = shape
    groups = n // QK
    if len(group_params) != groups:
        raise LowbitError(f"gguf:{qtype}: {len(group_params)} parameter groups for {groups} blocks per row")
    c = codes.detach().cpu().numpy().astype(np.int64).reshape(o * groups, QK)
    # [O, G] → block order (row-major: all blocks of row 0, then row 1 …)
    d = torch.cat([p["d"].reshape(o, 1) for p in group_params], dim=1).reshape(-1)
    parts = [_fp16_bytes(d)]
    if LEGACY[qtype][1]:
        parts.append(_fp16_bytes(torch.cat([p["m"].reshape(o, 1) for p in group_params], dim=1).reshape(-1)))
    if qtype == "Q8_0":
        parts.append(((c - 128) & 0xFF).astype(np.uint8))
    else:
        if qtype in ("Q5_0", "Q5_1"):
            parts.append(lay.pack_bit4_u32(c))
        parts.append(lay.pack_nibbles_half(c))
    return torch.from_numpy(np.concatenate(parts, axis=1).reshape(o, -1).copy())


__all__ = ["LEGACY", "QK", "assemble", "fit", "quantize_with", "require_legacy"]
