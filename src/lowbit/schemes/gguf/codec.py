"""Entry points: quantize rows to GGUF block bytes and back.

The per-type modules only see float32 rows and uint8 blocks; this module
validates shapes, groups rows, and picks the codec by type name.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import iq4, kquants_low, kquants_mid, kquants_q6, legacy
from .types import get_type

Encoder = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
Decoder = Callable[[np.ndarray], np.ndarray]

_CODECS: dict[str, tuple[Encoder, Decoder]] = {
    "Q4_0": (legacy.encode_q4_0, legacy.decode_q4_0),
    "Q4_1": (legacy.encode_q4_1, legacy.decode_q4_1),
    "Q5_0": (legacy.encode_q5_0, legacy.decode_q5_0),
    "Q5_1": (legacy.encode_q5_1, legacy.decode_q5_1),
    "Q8_0": (legacy.encode_q8_0, legacy.decode_q8_0),
    "Q2_K": (kquants_low.encode_q2_k, kquants_low.decode_q2_k),
    "Q3_K": (kquants_low.encode_q3_k, kquants_low.decode_q3_k),
    "Q4_K": (kquants_mid.encode_q4_k, kquants_mid.decode_q4_k),
    "Q5_K": (kquants_mid.encode_q5_k, kquants_mid.decode_q5_k),
    "Q6_K": (kquants_q6.encode_q6_k, kquants_q6.decode_q6_k),
    "IQ4_NL": (iq4.encode_iq4_nl, iq4.decode_iq4_nl),
    "IQ4_XS": (iq4.encode_iq4_xs, iq4.decode_iq4_xs),
}

# Rows per encoder call: bounds the [G, n] temporaries of the fitting loops
# (tens of MB) without changing results, since every row is independent.
_ROW_CHUNK_ELEMS = 1 << 20


def quantize(x: np.ndarray, qtype: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize float32 rows to GGUF ``qtype`` blocks, byte-identical to ggml_quantize_chunk.

    Args:
        x: float32 [n_rows, n_per_row] weights; n_per_row a multiple of the block size
            (32 for Q4_0…Q8_0 and IQ4_NL, 256 for the k-quants and IQ4_XS).
        qtype: type name, e.g. ``"Q4_K"`` (case-insensitive).
        imatrix: optional float32 [n_per_row] importance weights (mean squared
            activation per input column, as llama-imatrix writes them). Q8_0 ignores it.
    Returns:
        uint8 [n_rows, row_bytes], row_bytes = n_per_row / block_size · type_size.
    """
    t = get_type(qtype)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected [n_rows, n_per_row] weights, got shape {x.shape}")
    n_rows, n_per_row = x.shape
    if n_per_row % t.block_size:
        raise ValueError(f"{t.name} needs n_per_row divisible by {t.block_size}, got {n_per_row}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
        if imatrix.shape[0] != n_per_row:
            raise ValueError(f"imatrix has {imatrix.shape[0]} entries, expected n_per_row = {n_per_row}")
    encode = _CODECS[t.name][0]
    out = np.empty((n_rows, t.row_bytes(n_per_row)), dtype=np.uint8)
    if out.size == 0:
        return out
    step = max(1, _ROW_CHUNK_ELEMS // max(1, n_per_row))
    # inf/nan intermediates are expected in masked-out lanes (all-zero groups)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for r in range(0, n_rows, step):
            rows = x[r:r + step]
            out[r:r + step] = encode(rows, imatrix).reshape(rows.shape[0], -1)
    return out


def dequantize(raw: np.ndarray, qtype: str, n_per_row: int) -> np.ndarray:
    """Decode GGUF ``qtype`` bytes to float32, matching ggml's ``dequantize_row_*``.

    Args:
        raw: uint8 [n_rows, row_bytes] (or anything reshapeable to it).
        qtype: type name, e.g. ``"Q6_K"``.
        n_per_row: weights per row.
    Returns:
        float32 [n_rows, n_per_row].
    """
    t = get_type(qtype)
    if n_per_row % t.block_size:
        raise ValueError(f"{t.name} needs n_per_row divisible by {t.block_size}, got {n_per_row}")
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    row_bytes = t.row_bytes(n_per_row)
    if raw.size % row_bytes:
        raise ValueError(f"{raw.size} bytes is not a whole number of {t.name} rows of {row_bytes} bytes")
    blocks = raw.reshape(-1, t.type_size)
    return _CODECS[t.name][1](blocks).astype(np.float32, copy=False).reshape(-1, n_per_row)
