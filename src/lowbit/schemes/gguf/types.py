"""Per-type constants of the GGUF block formats handled here.

Block sizes and byte counts are ggml's (``ggml-common.h``); ``type_id`` is the
``ggml_type`` enum value written into GGUF tensor infos.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

QK_K = 256
"""Elements per k-quant super-block."""


@dataclass(frozen=True)
class GGUFType:
    """One GGUF block quantization type."""

    name: str
    """Canonical ggml name, e.g. ``"Q4_K"``."""
    type_id: int
    """``ggml_type`` enum value (GGUF tensor-info field)."""
    block_size: int
    """Weights per block (elements)."""
    type_size: int
    """Bytes per block."""

    @property
    def bits_per_weight(self) -> float:
        """Storage cost in bits per weight, exact (scales included)."""
        return float(Fraction(8 * self.type_size, self.block_size))

    def row_bytes(self, n_per_row: int) -> int:
        """Bytes for one row of ``n_per_row`` weights (must be a multiple of block_size)."""
        return n_per_row // self.block_size * self.type_size


TYPES: dict[str, GGUFType] = {
    t.name: t
    for t in (
        GGUFType("Q4_0", 2, 32, 18),
        GGUFType("Q4_1", 3, 32, 20),
        GGUFType("Q5_0", 6, 32, 22),
        GGUFType("Q5_1", 7, 32, 24),
        GGUFType("Q8_0", 8, 32, 34),
        GGUFType("Q2_K", 10, QK_K, 84),
        GGUFType("Q3_K", 11, QK_K, 110),
        GGUFType("Q4_K", 12, QK_K, 144),
        GGUFType("Q5_K", 13, QK_K, 176),
        GGUFType("Q6_K", 14, QK_K, 210),
        GGUFType("IQ4_NL", 20, 32, 18),
        GGUFType("IQ4_XS", 23, QK_K, 136),
    )
}
"""Supported types by canonical name."""


def get_type(qtype: str) -> GGUFType:
    """Look a type up by name (case-insensitive, e.g. ``"q4_k"``); ValueError if unknown."""
    key = qtype.upper()
    if key not in TYPES:
        raise ValueError(f"unsupported GGUF type {qtype!r}; supported: {', '.join(TYPES)}")
    return TYPES[key]


def bits_per_weight(qtype: str) -> float:
    """Exact bits per weight of ``qtype`` (Q4_K → 4.5, Q6_K → 6.5625, Q8_0 → 8.5)."""
    return get_type(qtype).bits_per_weight


def block_weights(imatrix: np.ndarray | None, n_rows: int, block: int) -> np.ndarray | None:
    """Broadcast a per-column importance vector [n_per_row] to [n_rows·n_per_row/block, block].

    ggml indexes ``quant_weights`` by column inside each row, so every row
    sees the same vector.
    """
    if imatrix is None:
        return None
    qw = np.asarray(imatrix, dtype=np.float32).reshape(1, -1, block)
    return np.broadcast_to(qw, (n_rows, qw.shape[1], block)).reshape(-1, block)
