"""llama.cpp's own quantizer, through ctypes: the reference lowbit's codecs are tested and timed against.

``ggml_quantize_chunk`` and ``dequantize_row_*`` live in libggml-base, which
llama-cpp-python bundles (the approach of gguf-py's ``tests/test_quants.py``).
``LOWBIT_LIBGGML_BASE`` may point at any other libggml-base build.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

from lowbit.errors import MissingExtraError

from .types import TYPES

_F32P = ctypes.POINTER(ctypes.c_float)


def find_libggml_base() -> str:
    """Path of libggml-base: ``$LOWBIT_LIBGGML_BASE`` or the one inside llama-cpp-python."""
    override = os.environ.get("LOWBIT_LIBGGML_BASE")
    if override:
        return override
    try:
        import llama_cpp
    except ImportError:
        raise MissingExtraError("llama-cpp-python", "llama", "comparing with llama.cpp's quantizer") from None
    found = sorted(glob.glob(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.*")))
    if not found:
        raise MissingExtraError("llama-cpp-python", "llama", "comparing with llama.cpp's quantizer (no libggml-base)")
    return found[0]


class GGML:
    """ctypes view of libggml-base's reference quantize/dequantize entry points."""

    def __init__(self, path: str | None = None) -> None:
        lib = ctypes.CDLL(path or find_libggml_base())
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = (ctypes.c_int, _F32P, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, _F32P)
        self.lib = lib

    def quantize(self, x: np.ndarray, qtype: str, imatrix: np.ndarray | None = None) -> np.ndarray:
        """``ggml_quantize_chunk`` on float32 rows → uint8 ``[rows, row_bytes]`` (one thread)."""
        t = TYPES[qtype]
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((x.shape[0], t.row_bytes(x.shape[1])), dtype=np.uint8)
        im = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
        qw = ctypes.cast(0, _F32P) if im is None else im.ctypes.data_as(_F32P)
        n = self.lib.ggml_quantize_chunk(t.type_id, x.ctypes.data_as(_F32P), out.ctypes.data_as(ctypes.c_void_p),
                                         0, x.shape[0], x.shape[1], qw)
        if n != out.size:
            raise RuntimeError(f"ggml_quantize_chunk wrote {n} bytes, expected {out.size}")
        return out

    def dequantize(self, raw: np.ndarray, qtype: str, n_per_row: int) -> np.ndarray:
        """``dequantize_row_<type>`` → float32 ``[rows, n_per_row]``."""
        name = qtype.lower()
        name = name[:-1] + "K" if name.endswith("_k") else name
        fn = getattr(self.lib, "dequantize_row_" + name)
        fn.restype = None
        fn.argtypes = (ctypes.c_void_p, _F32P, ctypes.c_int64)
        raw = np.ascontiguousarray(raw)
        out = np.zeros((raw.shape[0], n_per_row), dtype=np.float32)
        fn(raw.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(_F32P), out.size)
        return out


__all__ = ["GGML", "find_libggml_base"]
