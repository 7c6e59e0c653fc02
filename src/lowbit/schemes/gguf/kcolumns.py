"""Column-wise interface for the k-quants Q2_K … Q6_K: a grid fitted per super-block, then held fixed.

A k-quant stores, per 256-column super-block, fp16 super-scales and 4- to
8-bit sub-block scales (and mins) quantized relative to them, so the grid of
one column depends on every column of its super-block. GPTQ can still choose
the codes if the grid is fitted first and then frozen (its "static groups"):

* :func:`fit_static` runs llama.cpp's own encoder (bit-exact, with the
  importance matrix when given) once over the whole matrix of original
  weights, and keeps each super-block's bytes, its stored codes, and per
  column the sub-block's effective scale ``dd`` and offset ``dm`` that ggml
  decodes with: value = dd·(L − offset) − dm;
* :func:`quantize_with` rounds columns the way every k-quant encoder's last
  pass does with those stored scales, L = clamp(nearest_int((x + dm)/dd) +
  offset, 0, nmax); where dd = 0 every code decodes to −dm and the encoder's
  own code is kept, as the encoder does;
* :func:`assemble` writes the chosen codes into the code fields of the fitted
  blocks; scales, mins and super-scales stay as fitted.

On unmodified weights (GPTQ without error feedback) the bytes are therefore
the encoder's (tested). ggml's ``nearest_int`` rounds half to even below
2²², as ``torch.round`` does; beyond that C's result is undefined garbage
while here it is the clamped nearest code (only error-fed weights get there).

Parameters are stored per column (``dd``, ``dm``, ``codes`` ``[O, 256]``) so
one column's grid is a slice (:func:`column_grid`) and a whole group can be
quantized at once (QAT's frozen-grid fake quantizer does that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lowbit.errors import LowbitError

from . import _layout as lay
from ._numeric import fp16_bits_to_f32
from .codec import quantize as encode
from .types import QK_K, TYPES

#: (byte offset, bytes [NB, n]) pairs: where a super-block's code fields go.
CodeFields = list[tuple[int, np.ndarray]]


def _fp16(blocks: np.ndarray, at: int) -> np.ndarray:
    """The fp16 field at byte ``at`` of every block → float32 [NB, 1]."""
    return fp16_bits_to_f32(blocks[:, at:at + 2]).reshape(-1, 1)


def _k_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K: (d·sc, dmin·m) per 32-column sub-block."""
    sc, m = lay.unpack_k_scales(blocks[:, 4:16])
    return _fp16(blocks, 0) * sc.astype(np.float32), _fp16(blocks, 2) * m.astype(np.float32)


def _q6_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q6_K: (d·sc, 0) per 16-column sub-block (int8 sub-scales)."""
    dd = _fp16(blocks, 208) * np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
    return dd, np.zeros_like(dd)


def _q3_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q3_K: (d·(sc − 32), 0) per 16-column sub-block."""
    dd = _fp16(blocks, 108) * (lay.unpack_q3_scales(blocks[:, 96:108]) - 32).astype(np.float32)
    return dd, np.zeros_like(dd)


def _q2_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q2_K: (d·(sc & 15), dmin·(sc >> 4)) per 16-column sub-block."""
    sc = blocks[:, :16]
    return _fp16(blocks, 80) * (sc & 0xF).astype(np.float32), _fp16(blocks, 82) * (sc >> 4).astype(np.float32)


def _q5_codes(blocks: np.ndarray) -> np.ndarray:
    return lay.unpack_nibbles_k(blocks[:, 48:176]) | (lay.unpack_hmask(blocks[:, 16:48]) << np.uint8(4))


def _q3_codes(blocks: np.ndarray) -> np.ndarray:
    # stored L = low | high·4: the encoder keeps L − 4 in the low bits when L > 3
    return lay.unpack_2bit(blocks[:, 32:96]) | (lay.unpack_hmask(blocks[:, :32]) << np.uint8(2))


def _q6_fields(L: np.ndarray) -> CodeFields:
    ql, qh = lay.pack_q6k(L)
    return [(0, ql), (128, qh)]


@dataclass(frozen=True)
class KGrid:
    """How one k-quant type's blocks hold their grid and codes.

    Attributes:
        sub: columns per sub-block (one scale, and min, each).
        nmax: largest stored code (codes are 0 … nmax).
        offset: stored code = signed level + offset (0 for the affine types).
        scales: blocks [NB, type_size] → (dd, dm) float32 [NB, 256/sub], as ggml decodes them.
        codes: blocks → stored codes [NB, 256] (uint8).
        fields: codes [NB, 256] → the code fields' bytes and where they go.
    """

    sub: int
    nmax: int
    offset: int
    scales: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    codes: Callable[[np.ndarray], np.ndarray]
    fields: Callable[[np.ndarray], CodeFields]


GRIDS: dict[str, KGrid] = {
    "Q2_K": KGrid(16, 3, 0, _q2_scales, lambda b: lay.unpack_2bit(b[:, 16:80]),
                  lambda L: [(16, lay.pack_2bit(L))]),
    "Q3_K": KGrid(16, 7, 4, _q3_scales, _q3_codes,
                  lambda L: [(0, lay.pack_hmask(L > 3)), (32, lay.pack_2bit(L & 3))]),
    "Q4_K": KGrid(32, 15, 0, _k_scales, lambda b: lay.unpack_nibbles_k(b[:, 16:144]),
                  lambda L: [(16, lay.pack_nibbles_k(L))]),
    "Q5_K": KGrid(32, 31, 0, _k_scales, _q5_codes,
                  lambda L: [(16, lay.pack_q5k_high(L)), (48, lay.pack_nibbles_k(L))]),
    "Q6_K": KGrid(16, 63, 32, _q6_scales, lambda b: lay.unpack_q6k(b[:, :128], b[:, 128:192]), _q6_fields),
}
"""The k-quants with a column-wise interface (IQ4_XS, a non-uniform grid, has none)."""

#: Per-column parameters: what quantize_with reads.
_COLUMN_KEYS = ("dd", "dm", "codes")


def fit_static(qtype: str, w: torch.Tensor, importance: np.ndarray | None) -> list[dict[str, torch.Tensor]]:
    """Every super-block's grid of ``w`` ``[O, 256·G]``, fitted by llama.cpp's encoder; one dict per group.

    Each dict holds ``blocks`` (uint8 ``[O, type_size]``, the fitted bytes),
    ``dd`` and ``dm`` (float32 ``[O, 256]``: each column's sub-block scale and
    offset) and ``codes`` (uint8 ``[O, 256]``: the encoder's codes).
    """
    kg = GRIDS[qtype]
    o, n = (int(s) for s in w.shape)
    if n % QK_K:
        raise LowbitError(f"gguf:{qtype}: column groups are super-blocks of {QK_K} columns, got {n} columns")
    g, ts = n // QK_K, TYPES[qtype].type_size
    x = np.ascontiguousarray(w.detach().to("cpu", torch.float32).numpy())
    blocks = encode(x, qtype, importance).reshape(o * g, ts)
    dd, dm = kg.scales(blocks)
    per_col = {
        "blocks": blocks.reshape(o, g, ts),
        "dd": np.repeat(dd, kg.sub, axis=1).reshape(o, g, QK_K),
        "dm": np.repeat(dm, kg.sub, axis=1).reshape(o, g, QK_K),
        "codes": kg.codes(blocks).astype(np.uint8).reshape(o, g, QK_K),
    }
    return [{k: torch.from_numpy(np.ascontiguousarray(v[:, j])).to(w.device) for k, v in per_col.items()}
            for j in range(g)]


def column_grid(params: dict[str, torch.Tensor], column: int) -> dict[str, torch.Tensor]:
    """The grid of column ``column`` (0 … 255) of a fitted super-block group."""
    return {k: params[k][:, column:column + 1] for k in _COLUMN_KEYS}


def quantize_with(qtype: str, w: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (uint8) and dequantized values of columns ``w`` ``[O, c]`` on their fixed grid (``[O, c]`` each)."""
    kg = GRIDS[qtype]
    dd, dm, fitted = (params[k] for k in _COLUMN_KEYS)
    if dd.shape != w.shape:
        raise LowbitError(f"gguf:{qtype}: the grid given covers {list(dd.shape)} weights but the columns are "
                          f"{list(w.shape)}; take one column's grid with column_grid")
    x = w.detach().float()
    live = dd != 0
    # the encoders' last pass: nearest_int((x + dm) / dd), clamped, with the stored (fp16-derived) scales
    level = torch.round((x + dm) / torch.where(live, dd, torch.ones_like(dd)))
    codes = torch.where(live, (level + kg.offset).clamp(0, kg.nmax), fitted.float())
    values = dd * (codes - kg.offset) - dm  # ggml's dequantize_row_*, in the same float32 order
    return codes.to(torch.uint8), values


def assemble(qtype: str, shape: tuple[int, ...], codes: torch.Tensor,
             group_params: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """ggml block bytes ``[O, row_bytes]``: the fitted blocks, code fields replaced by ``codes`` ``[O, I]``."""
    kg = GRIDS[qtype]
    o, n = shape
    g, ts = n // QK_K, TYPES[qtype].type_size
    if len(group_params) != g:
        raise LowbitError(f"gguf:{qtype}: {len(group_params)} parameter groups for {g} super-blocks per row")
    blocks = torch.stack([p["blocks"] for p in group_params], dim=1).cpu().numpy().reshape(o * g, ts).copy()
    for at, field in kg.fields(codes.detach().cpu().numpy().reshape(o * g, QK_K)):
        blocks[:, at:at + field.shape[1]] = field
    return torch.from_numpy(blocks.reshape(o, g * ts))


__all__ = ["GRIDS", "KGrid", "assemble", "column_grid", "fit_static", "quantize_with"]
