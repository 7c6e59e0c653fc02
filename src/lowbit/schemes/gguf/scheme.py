"""GGUF block types as lowbit schemes: ``gguf:Q4_K``, ``gguf:Q8_0``, ``gguf:F16`` …

Representation
--------------
A :class:`~lowbit.schemes.base.QuantizedTensor` of a GGUF scheme holds the
tensor exactly as a GGUF file stores it: ``codes`` is uint8 ``[O, row_bytes]``,
the concatenated blocks of each row (scales, mins and packed codes
interleaved the way ggml lays them out), and ``params`` is empty. So

* ``storage_bits`` is exact by construction (``O · row_bytes · 8``);
* the GGUF writer copies the bytes unchanged, and they are the bytes
  ``llama-quantize`` writes for the same input (the codecs are bit-exact with
  ``ggml_quantize_chunk``);
* dequantizing is ggml's ``dequantize_row_*``.

Splitting the blocks into codes + scale tensors would gain nothing: every
consumer (reference runtime, GGUF writer, bit-exact tests) wants the block
bytes, and the k-quants' 6-bit sub-scales only exist packed.

Rows must be a whole number of blocks (32 weights for Q4_0 … Q8_0 and IQ4_NL,
256 for the k-quants and IQ4_XS); :meth:`GGUFScheme.check_shape` says so with
the tensor's name. Method ``gguf`` applies llama.cpp's fallback instead.

``F32``, ``F16`` and ``BF16`` are the unquantized GGUF types, stored the same
way (little-endian element bytes per row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme

from . import columns, kcolumns
from .codec import dequantize as _dequantize
from .codec import quantize as _quantize
from .types import QK_K, TYPES

#: Unquantized GGUF types: ggml type id and bytes per weight.
FLOAT_TYPES: dict[str, tuple[int, int]] = {"F32": (0, 4), "F16": (1, 2), "BF16": (30, 2)}

#: Nominal code width of each type (the row's ``weight_bits``); exact cost is storage_bits.
_CODE_BITS = {"Q4_0": 4, "Q4_1": 4, "Q5_0": 5, "Q5_1": 5, "Q8_0": 8, "Q2_K": 2, "Q3_K": 3, "Q4_K": 4,
              "Q5_K": 5, "Q6_K": 6, "IQ4_NL": 4, "IQ4_XS": 4, "F32": 32, "F16": 16, "BF16": 16}


def canonical_type(name: str) -> str | None:
    """``"q4_k"`` → ``"Q4_K"``; None when ``name`` is no GGUF type lowbit handles."""
    key = name.strip().upper()
    return key if key in TYPES or key in FLOAT_TYPES else None


def type_id(qtype: str) -> int:
    """The ``ggml_type`` id written into GGUF tensor infos."""
    return FLOAT_TYPES[qtype][0] if qtype in FLOAT_TYPES else TYPES[qtype].type_id


def block_size(qtype: str) -> int:
    """Weights per block (1 for the float types)."""
    return 1 if qtype in FLOAT_TYPES else TYPES[qtype].block_size


def row_bytes(qtype: str, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` weights (a whole number of blocks)."""
    if qtype in FLOAT_TYPES:
        return n_per_row * FLOAT_TYPES[qtype][1]
    return TYPES[qtype].row_bytes(n_per_row)


def _to_numpy(w: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(w.detach().to("cpu", torch.float32).numpy())


@dataclass(frozen=True)
class GGUFScheme(Scheme):
    """One GGUF tensor type, every row stored as ggml blocks.

    Attributes:
        qtype: canonical ggml type name (``Q4_K``, ``Q8_0``, ``F16`` …).
    """

    qtype: str = "Q4_K"
    family = "gguf"

    def __post_init__(self) -> None:
        if canonical_type(self.qtype) != self.qtype:
            known = ", ".join([*TYPES, *FLOAT_TYPES])
            raise LowbitError(f"unknown GGUF type '{self.qtype}'; supported: {known}")

    @classmethod
    def parse(cls, text: str) -> Scheme | None:
        """``Q4_K`` → this scheme; a llama.cpp file type (``Q4_K_M``) → its mixture; else None."""
        qtype = canonical_type(text)
        if qtype is not None:
            return cls(qtype)
        from .mixture import GGUFMixture

        return GGUFMixture.parse(text)

    def spec(self) -> str:
        return f"gguf:{self.qtype}"

    @property
    def weight_bits(self) -> int:
        return _CODE_BITS[self.qtype]

    @property
    def granularity(self) -> str:
        # Float types have no grid parameters at all; "tensor" is the nearest label.
        return "tensor" if self.is_float else "block"

    @property
    def group_size(self) -> int | None:
        return None if self.is_float else TYPES[self.qtype].block_size

    @property
    def is_float(self) -> bool:
        """True for F32/F16/BF16 (no quantization grid)."""
        return self.qtype in FLOAT_TYPES

    def check_shape(self, shape: tuple[int, ...], name: str = "weight") -> None:
        super().check_shape(shape, name)
        bs = block_size(self.qtype)
        if shape[1] % bs:
            raise LowbitError(
                f"tensor '{name}' has rows of {shape[1]} weights, not a multiple of {self.qtype}'s block of {bs}; "
                f"use method gguf (e.g. gguf:Q4_K_M), which falls back to a fitting type as llama.cpp does"
            )

    def storage_bits(self, shape: tuple[int, ...]) -> int:
        self.check_shape(shape)
        return shape[0] * row_bytes(self.qtype, shape[1]) * 8

    # --- quantize / dequantize ------------------------------------------------------

    def _importance(self, importance: torch.Tensor | None, n: int) -> np.ndarray | None:
        if importance is None or self.is_float:
            return None
        imp = _to_numpy(importance).reshape(-1)
        if imp.shape[0] != n:
            raise LowbitError(f"{self.spec()}: importance has {imp.shape[0]} entries, expected one per input column ({n})")
        if not np.isfinite(imp).all() or (imp < 0).any():
            raise LowbitError(f"{self.spec()}: importance values must be finite and non-negative")
        return imp

    def quantize(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> QuantizedTensor:
        shape = tuple(int(s) for s in w.shape)
        self.check_shape(shape)
        x = _to_numpy(w)
        if self.qtype == "F32":
            raw = x.view(np.uint8)
        elif self.qtype == "F16":
            raw = x.astype(np.float16).view(np.uint8)
        elif self.qtype == "BF16":
            # torch rounds to nearest even like ggml_compute_fp32_to_bf16 (NaN is refused earlier).
            raw = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
        else:
            raw = _quantize(x, self.qtype, self._importance(importance, shape[1]))
        codes = torch.from_numpy(np.ascontiguousarray(raw).reshape(shape[0], -1).copy()).to(w.device)
        return QuantizedTensor(self.spec(), shape, codes, {}, {})

    def dequantize(self, q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if "g_idx" in q.params:
            raise LowbitError(f"{self.spec()}: GGUF blocks are contiguous columns; act-order groups (g_idx) "
                              "cannot be stored in them (use static groups)")
        o, n = q.shape
        raw = np.ascontiguousarray(q.codes.detach().cpu().numpy())
        if raw.shape != (o, row_bytes(self.qtype, n)):
            raise LowbitError(f"{self.spec()}: stored bytes have shape {list(raw.shape)}, "
                              f"expected [{o}, {row_bytes(self.qtype, n)}] for a [{o}, {n}] tensor")
        if self.qtype == "F32":
            x = raw.view(np.float32)
        elif self.qtype == "F16":
            x = raw.view(np.float16).astype(np.float32)
        elif self.qtype == "BF16":
            x = torch.from_numpy(raw.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
        else:
            x = _dequantize(raw, self.qtype, n)
        return torch.from_numpy(np.ascontiguousarray(x).reshape(o, n)).to(device=q.codes.device, dtype=dtype)

    # Block bytes are already the packed form: formats store them as they are.
    def pack_codes(self, q: QuantizedTensor) -> torch.Tensor:
        return q.codes.to(torch.uint8)

    def unpack_codes(self, packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return packed.reshape(shape[0], row_bytes(self.qtype, shape[1]))

    # --- group-wise interface (GPTQ): legacy 32-blocks, and k-quants on static grids ---------

    @property
    def has_column_grid(self) -> bool:
        """Whether column-wise methods (GPTQ) can choose this type's codes."""
        return self.qtype in kcolumns.GRIDS or self.qtype in columns.LEGACY

    @property
    def needs_static_groups(self) -> bool:
        # a k-quant's sub-scales hang off a super-scale fitted over all 256 columns
        return self.qtype in kcolumns.GRIDS

    def column_group_size(self, in_features: int) -> int:
        if self.qtype in kcolumns.GRIDS:
            return QK_K
        columns.require_legacy(self.qtype)
        return columns.QK

    def fit(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.qtype not in kcolumns.GRIDS:
            return columns.fit(self.qtype, w)
        if w.shape[1] != QK_K:
            raise LowbitError(f"{self.spec()}: a column group is one super-block of {QK_K} columns, got {w.shape[1]}")
        return kcolumns.fit_static(self.qtype, w, None)[0]

    def fit_static(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
        if self.qtype not in kcolumns.GRIDS:
            return super().fit_static(w, importance)
        return kcolumns.fit_static(self.qtype, w, self._importance(importance, int(w.shape[1])))

    @property
    def column_grid_varies(self) -> bool:
        return self.qtype in kcolumns.GRIDS  # a k-quant's sub-block scales change every 16 or 32 columns

    def column_grid(self, params: dict[str, torch.Tensor], column: int) -> dict[str, torch.Tensor]:
        return kcolumns.column_grid(params, column) if self.qtype in kcolumns.GRIDS else params

    def quantize_with(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.qtype in kcolumns.GRIDS:
            return kcolumns.quantize_with(self.qtype, w, params)
        return columns.quantize_with(self.qtype, w, params)

    def assemble(self, shape: tuple[int, ...], codes: torch.Tensor,
                 group_params: list[dict[str, torch.Tensor]]) -> QuantizedTensor:
        shape = tuple(int(s) for s in shape)
        self.check_shape(shape)
        pack = kcolumns.assemble if self.qtype in kcolumns.GRIDS else columns.assemble
        raw = pack(self.qtype, shape, codes, group_params)
        return QuantizedTensor(self.spec(), shape, raw.to(codes.device), {}, {})
